//! The operator's trust commands, shared by the programs: show our fingerprint, list a
//! JID's devices with their trust levels, and authenticate or distrust one of its keys.
//!
//! Each command works in one of two [`Reach`]es. [`Reach::Connect`] logs in first: device
//! lists and bundles are fetched fresh, and a trust decision is announced to our
//! authenticated devices with ATM trust messages (XEP-0450). [`Reach::DatabaseOnly`] reads
//! and changes the account's database and nothing else: it needs no password and no server,
//! and it is safe while another process runs on the same database (the store runs in WAL
//! mode and takes the write lock for each transaction, so the two take turns). That process
//! reads trust levels from the database for every message, so a decision made here counts
//! from its next message on.

use std::path::{Path, PathBuf};

use crate::config::AccountArgs;
use atm_trust::{Store, TrustEvent};
use clap::Subcommand;
use omemo_crypto::ProtocolVersion;
use xmpp_core::client::{Client, ClientError};
use xmpp_core::jid::BareJid;
use xmpp_core::omemo::{
    set_trust_by_fingerprint, DeviceInfo, OmemoError, OmemoManager, OwnIdentity,
};
use xmpp_core::settings::AccountSettings;
use xmpp_core::TrustLevel;

/// The trust subcommands; a program adds them to its own with `#[command(flatten)]`.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Show our device id, fingerprints, a verification URI and its QR code.
    Fingerprint {
        /// The account.
        #[command(flatten)]
        account: AccountArgs,
    },
    /// List every device of a JID with label, fingerprint and trust level.
    Devices {
        /// The account.
        #[command(flatten)]
        account: AccountArgs,
        /// The JID whose devices to show.
        #[arg(value_name = "JID")]
        contact: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Authenticate a key of JID (after comparing its fingerprint out of band).
    Trust {
        /// The account.
        #[command(flatten)]
        account: AccountArgs,
        /// The key's owner.
        #[arg(value_name = "JID")]
        contact: String,
        /// The fingerprint, in either form shown by `devices`.
        fingerprint: String,
    },
    /// Distrust a key of JID: nothing is encrypted for it any more.
    Distrust {
        /// The account.
        #[command(flatten)]
        account: AccountArgs,
        /// The key's owner.
        #[arg(value_name = "JID")]
        contact: String,
        /// The fingerprint, in either form shown by `devices`.
        fingerprint: String,
    },
}

impl TrustCommand {
    /// The command's account flags.
    pub fn account(&self) -> &AccountArgs {
        match self {
            Self::Fingerprint { account }
            | Self::Devices { account, .. }
            | Self::Trust { account, .. }
            | Self::Distrust { account, .. } => account,
        }
    }

    /// The command's account flags, to merge them with others.
    pub fn account_mut(&mut self) -> &mut AccountArgs {
        match self {
            Self::Fingerprint { account }
            | Self::Devices { account, .. }
            | Self::Trust { account, .. }
            | Self::Distrust { account, .. } => account,
        }
    }
}

/// How far a command goes (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Log in: fresh device lists and bundles, ATM trust messages for decisions.
    Connect,
    /// The database only: no password, no server, safe next to a running program.
    DatabaseOnly,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The JID argument is not a bare JID.
    #[error("invalid JID {jid:?}: {reason}")]
    InvalidJid {
        /// The argument.
        jid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A database-only command found no database.
    #[error(
        "no database at {}: the program has not run with this account yet (or --db / `db` \
         names another file)",
        .0.display()
    )]
    NoDatabase(PathBuf),
    /// The database holds no device of ours yet.
    #[error("the database {} holds no device of ours yet", .0.display())]
    NoOwnDevice(PathBuf),
    /// The database belongs to another account.
    #[error("the database {} belongs to {found}, not {expected}", path.display())]
    OtherAccount {
        /// The database.
        path: PathBuf,
        /// Its account.
        found: String,
        /// The configured account.
        expected: String,
    },
    /// Reading or writing the database failed.
    #[error(transparent)]
    Store(#[from] atm_trust::StoreError),
    /// An OMEMO operation failed (unknown key, network, ...).
    #[error(transparent)]
    Omemo(#[from] OmemoError),
    /// Logging in failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The QR code could not be built.
    #[error("cannot build the QR code: {0}")]
    QrCode(String),
    /// A blocking task was lost.
    #[error("a database task ended unexpectedly")]
    Task,
}

/// Runs `command` for the account in `settings`.
pub async fn run(
    command: &TrustCommand,
    settings: &AccountSettings,
    reach: Reach,
) -> Result<(), CommandError> {
    match command {
        TrustCommand::Fingerprint { .. } => fingerprint(settings).await,
        TrustCommand::Devices { contact, json, .. } => {
            devices(settings, contact, *json, reach).await
        }
        TrustCommand::Trust {
            contact,
            fingerprint,
            ..
        } => {
            trust(
                settings,
                contact,
                fingerprint,
                TrustLevel::Authenticated,
                reach,
            )
            .await
        }
        TrustCommand::Distrust {
            contact,
            fingerprint,
            ..
        } => {
            trust(
                settings,
                contact,
                fingerprint,
                TrustLevel::ManuallyDistrusted,
                reach,
            )
            .await
        }
    }
}

fn parse_jid(jid: &str) -> Result<BareJid, CommandError> {
    BareJid::new(jid).map_err(|e| CommandError::InvalidJid {
        jid: jid.to_owned(),
        reason: e.to_string(),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommandError> + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| CommandError::Task)?
}

/// Our identity: read from an existing database without changing it (a running program
/// may be using it), or created with a new database as the first start would.
async fn load_own(settings: &AccountSettings) -> Result<OwnIdentity, CommandError> {
    let (db, jid, label) = (
        settings.db.clone(),
        settings.jid.clone(),
        settings.label.clone(),
    );
    blocking(move || {
        if db.exists() {
            let store = Store::open(&db)?;
            if let Some(own) = own_identity(&store, &db, &jid)? {
                return Ok(own);
            }
        }
        Ok(OmemoManager::open_store(&db, &jid, &label)?.1)
    })
    .await
}

/// Our device as the database has it, checked to belong to `jid`.
fn own_identity(
    store: &Store,
    db: &Path,
    jid: &BareJid,
) -> Result<Option<OwnIdentity>, CommandError> {
    let Some(device) = store.own_device()? else {
        return Ok(None);
    };
    if device.jid() != jid.as_str() {
        return Err(CommandError::OtherAccount {
            path: db.to_owned(),
            found: device.jid().to_owned(),
            expected: jid.to_string(),
        });
    }
    Ok(Some(OwnIdentity {
        jid: jid.clone(),
        device_id: device.device_id(),
        identity: omemo_crypto::hazmat::identity_from_seed(&omemo_crypto::hazmat::identity_seed(
            device.identity(),
        )),
        label: device.label().unwrap_or_default().to_owned(),
    }))
}

/// Opens an existing database of the account (never creates one).
fn open_existing(settings: &AccountSettings) -> Result<(Store, OwnIdentity), CommandError> {
    let db = &settings.db;
    if !db.exists() {
        return Err(CommandError::NoDatabase(db.clone()));
    }
    let store = Store::open(db)?;
    let own = own_identity(&store, db, &settings.jid)?
        .ok_or_else(|| CommandError::NoOwnDevice(db.clone()))?;
    Ok((store, own))
}

async fn fingerprint(settings: &AccountSettings) -> Result<(), CommandError> {
    let own = load_own(settings).await?;
    print_fingerprint(&own)
}

/// Prints our JID, device id, both fingerprint forms, the verification URI and its QR code.
pub fn print_fingerprint(own: &OwnIdentity) -> Result<(), CommandError> {
    let key = own.identity.public_key();
    let uri = format!(
        "xmpp:{}?trust-message;encryption=urn:xmpp:omemo:2;trust={}",
        own.jid,
        key.key_id_hex()
    );
    println!("JID:          {}", own.jid);
    println!("Device id:    {}", own.device_id);
    // One device id and one identity key serve both versions, so the fingerprint a contact
    // compares is the same whichever their client speaks.
    println!("Versions:     OMEMO 2 + legacy (eu.siacs.conversations.axolotl)");
    for line in xmpp_core::identity::describe(&key) {
        println!("{line}");
    }
    println!("URI:          {uri}");
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| CommandError::QrCode(e.to_string()))?;
    println!(
        "{}",
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build()
    );
    Ok(())
}

async fn devices(
    settings: &AccountSettings,
    jid: &str,
    json: bool,
    reach: Reach,
) -> Result<(), CommandError> {
    let jid = parse_jid(jid)?;
    let devices = match reach {
        Reach::Connect => {
            let (client, _events) = Client::start(settings).await?;
            let devices = client.manager().devices(&jid).await;
            client.close().await;
            devices?
        }
        Reach::DatabaseOnly => {
            let settings = settings.clone();
            let jid = jid.clone();
            blocking(move || {
                let (store, own) = open_existing(&settings)?;
                known_devices(&store, &own, &jid)
            })
            .await?
        }
    };
    print_devices(&jid, &devices, json, reach);
    Ok(())
}

/// The devices of `jid` the database knows, once per device id (one device serves both
/// OMEMO versions), with the versions each is listed in.
fn known_devices(
    store: &Store,
    own: &OwnIdentity,
    jid: &BareJid,
) -> Result<Vec<DeviceInfo>, CommandError> {
    Ok(xmpp_core::omemo::device_infos(store, own, jid)?)
}

/// How a device's versions read: "OMEMO 2 + legacy", "OMEMO 2", "legacy" or "unlisted".
fn versions_text(versions: &[ProtocolVersion]) -> String {
    let names: Vec<&str> = versions
        .iter()
        .map(|v| match v {
            ProtocolVersion::Omemo2 => "OMEMO 2",
            ProtocolVersion::Legacy => "legacy",
        })
        .collect();
    if names.is_empty() {
        "unlisted".to_owned()
    } else {
        names.join(" + ")
    }
}

/// Prints a device list, as text or as a JSON array.
fn print_devices(jid: &BareJid, devices: &[DeviceInfo], json: bool, reach: Reach) {
    if json {
        let list: Vec<_> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device": d.device.get(),
                    "label": d.label,
                    "label_verified": d.label_verified,
                    "active": d.active,
                    "fingerprint": d.identity_key.map(|k| k.fingerprint()),
                    "key_id": d.identity_key.map(|k| k.key_id_hex()),
                    "trust": d.trust.map(|t| format!("{t:?}")),
                    "own": d.own,
                    "versions": d.versions.iter().map(|v| match v {
                        ProtocolVersion::Omemo2 => "omemo2",
                        ProtocolVersion::Legacy => "legacy",
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return;
    }
    if devices.is_empty() {
        match reach {
            Reach::Connect => println!("{jid} has no OMEMO devices"),
            Reach::DatabaseOnly => println!("no device of {jid} is known yet"),
        }
    }
    for d in devices {
        let label = match (&d.label, d.label_verified) {
            (Some(l), true) => format!("\"{l}\""),
            (Some(l), false) => format!("\"{l}\" (unverified label)"),
            (None, _) => "(no label)".to_owned(),
        };
        let trust = if d.own {
            "this device".to_owned()
        } else {
            d.trust.map_or("unknown".to_owned(), |t| format!("{t:?}"))
        };
        println!(
            "device {:>10}  {}  [{}]  {}{}",
            d.device,
            trust,
            versions_text(&d.versions),
            label,
            if d.active { "" } else { "  [removed]" }
        );
        if let Some(key) = d.identity_key {
            for line in key.fingerprint_lines() {
                println!("    {line}");
            }
        }
    }
}

async fn trust(
    settings: &AccountSettings,
    jid: &str,
    fingerprint: &str,
    level: TrustLevel,
    reach: Reach,
) -> Result<(), CommandError> {
    let jid = parse_jid(jid)?;
    let (events, announced) = match reach {
        Reach::Connect => {
            let (client, _events) = Client::start(settings).await?;
            let result = client
                .manager()
                .decide_trust(&jid, fingerprint, level)
                .await;
            client.close().await;
            result?
        }
        Reach::DatabaseOnly => {
            let settings = settings.clone();
            let jid = jid.clone();
            let fingerprint = fingerprint.to_owned();
            let events = blocking(move || {
                let (mut store, _) = open_existing(&settings)?;
                Ok(set_trust_by_fingerprint(&mut store, &jid, &fingerprint, level)?.1)
            })
            .await?;
            (events, 0)
        }
    };
    print_trust_outcome(&jid, &events, announced, reach);
    Ok(())
}

/// Prints what a trust decision changed.
fn print_trust_outcome(jid: &BareJid, events: &[TrustEvent], announced: usize, reach: Reach) {
    if events.is_empty() {
        println!("{jid}: the key already had that trust level");
    }
    for event in events {
        println!(
            "{}: key {} {:?} -> {:?}",
            event.jid,
            event.identity_key.fingerprint(),
            event.old_level,
            event.new_level
        );
    }
    if announced > 0 {
        println!("sent {announced} ATM trust message(s) to authenticated devices");
    }
    if reach == Reach::DatabaseOnly && !events.is_empty() {
        println!(
            "changed in the database only: a running program uses the new level from its \
             next message on; no ATM trust message was sent"
        );
    }
}
