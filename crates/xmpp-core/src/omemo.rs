//! The OMEMO 2 manager: drives `omemo-crypto`, `omemo-pep` and the `atm-trust` store over a
//! [`Connection`] (XEP-0384 §usecases).
//!
//! Every ratchet step and its persistence happen in one closure that holds the store lock and
//! ends with one SQLite transaction; a message reaches the application only after that
//! commit, and a stanza goes out only after the sending states are committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atm_trust::{
    DecryptionCommit, KeyOwnerDecisions, ListedDevice, Namespace, NewInboxMessage, SessionUpdate,
    Store, StoreError, TrustLevel, TrustPolicy,
};
use futures::StreamExt as _;
use omemo_crypto::{
    payload, Bundle, DecryptionError, DeviceId, IdentityKeyPair, IdentityPublicKey, KeyMaterial,
    KeyMessage, Session,
};
use omemo_pep::omemo2::{DeviceEntry, DeviceList, EncryptedKey, EncryptedMessage, RecipientKeys};
use omemo_pep::pep::{self, Fetched, Publication, PublishProgress};
use omemo_pep::tm::{KeyOwner, TrustMessage};
use omemo_pep::{hints, sce};
use rand_core::{OsRng, RngCore as _};
use tokio::sync::Mutex as AsyncMutex;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::minidom::Element;

use crate::connection::{Connection, IqError};
use crate::removal::Removals;

pub(crate) const NS: Namespace = Namespace::Omemo2;
/// XEP-0384 asks for about 100 one-time pre-keys in a bundle.
pub const PRE_KEY_TARGET: usize = 100;
/// Rotate the signed pre-key weekly (python-omemo's default; XEP-0384: every 1–4 weeks).
pub const SIGNED_PRE_KEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Keep the previous signed pre-key this long after a rotation, for late key exchanges.
pub const SIGNED_PRE_KEY_GRACE: Duration = Duration::from_secs(4 * 7 * 24 * 3600);
/// Keep a used pre-key this long, for messages from the archive that still need it.
pub const USED_PRE_KEY_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Re-fetch a contact's device list when sending if the last fetch is older than this.
pub const DEVICE_LIST_MAX_AGE: Duration = Duration::from_secs(300);
/// Forget a device (and its session) this long after it left its device list (QXmpp's
/// period: 12 weeks).
pub const REMOVED_DEVICE_RETENTION: Duration = Duration::from_secs(12 * 7 * 24 * 3600);
/// The most JIDs whose device-list fetch time is remembered; beyond it, entries older than
/// [`DEVICE_LIST_MAX_AGE`] are forgotten (anyone can make us fetch their list).
const FETCH_TIMES_KEPT: usize = 1024;

/// How long an unacknowledged message is sent again after reconnects and restarts. Older
/// ones are dropped: a server without stream management never acknowledges anything, and a
/// message that old is stale anyway.
const OUTBOX_MAX_AGE: Duration = Duration::from_secs(3600);

/// How often a message lost with its stream is sent again at once (after that it waits in
/// the outbox for the next fresh session or start).
const LOST_RESENDS: u32 = 2;

/// How often one outbox message is sent in all (live, again after a lost stream, and by the
/// outbox resends of fresh sessions and restarts) before it is dropped. A message the server
/// refuses is never acknowledged, and one that costs the stream (Prosody closes it for an
/// oversized stanza) would otherwise do so again on every fresh session.
pub const MAX_SENDS: u32 = 5;

/// How long an outbox resend waits for the server's acknowledgement of one message before it
/// sends the next one. The resends go one at a time so that a message that costs the stream
/// is the only one whose sends are counted for it; a server without stream management never
/// acknowledges, and then the rest go out without waiting.
const RESEND_ACK_WAIT: Duration = Duration::from_secs(10);

/// The largest stanza this library sends, as serialized. Servers close the stream of a client
/// that sends a larger stanza than they accept (Prosody's default `c2s_stanza_size_limit` is
/// 256 KiB); this leaves room for the difference between our serialization and the wire.
pub const MAX_STANZA_BYTES: usize = 192 * 1024;

/// The most devices of one JID a message is encrypted for (QXmpp's limit); devices we have a
/// session with come first. A contact listing more devices gets no more work per message.
pub const MAX_DEVICES_PER_MESSAGE: usize = 200;

/// The most bundles fetched for one JID while sending one message. Devices beyond it get no
/// key this time and are fetched for later messages (those that failed are backing off by
/// then), so a contact that keeps publishing lists of new devices gets a bounded number of
/// requests per message out of us.
pub const MAX_BUNDLE_FETCHES_PER_MESSAGE: usize = 32;

/// Bundles fetched at the same time for one message.
const CONCURRENT_BUNDLE_FETCHES: usize = 4;

/// After a failed bundle fetch the device is not asked again for this long, doubling with
/// each further failure up to [`BUNDLE_RETRY_MAX`].
const BUNDLE_RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest back-off after failed bundle fetches.
const BUNDLE_RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// The most failed devices remembered; beyond it, the ones whose back-off ends first go.
const BUNDLE_FAILURES_KEPT: usize = 10_000;

/// A burst of key exchanges is over (and our bundle is republished) when none came for this
/// long.
const REPUBLISH_QUIET: Duration = Duration::from_secs(1);
/// The longest a republication waits for a burst of key exchanges to end.
const REPUBLISH_MAX_DELAY: Duration = Duration::from_secs(10);

/// How long an empty message (session confirmation, heartbeat) waits for an answer that would
/// make it unnecessary.
const CONFIRM_DELAY: Duration = Duration::from_secs(2);

/// How often a message from a device missing from its sender's list may trigger a fresh
/// fetch of that list.
const UNLISTED_SENDER_REFRESH: Duration = Duration::from_secs(30);

/// Errors of the OMEMO layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OmemoError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An IQ to the server failed.
    #[error("request failed: {0}")]
    Iq(#[from] IqError),
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
    /// Publishing our device list or bundle failed.
    #[error("publishing {what} failed: {reason}")]
    Publish {
        /// The node.
        what: &'static str,
        /// The server's answer.
        reason: String,
    },
    /// The recipient has no OMEMO 2 device list.
    #[error("{0} does not use OMEMO 2 (no device list)")]
    NoOmemo(BareJid),
    /// None of the recipient's devices can be encrypted for (no bundle, or not trusted).
    #[error("no trusted OMEMO device of {0} to encrypt for")]
    NoTrustedDevice(BareJid),
    /// An XML element could not be built or parsed.
    #[error("XML: {0}")]
    Xml(#[from] omemo_pep::Error),
    /// The stanza would be larger than [`MAX_STANZA_BYTES`]; nothing was committed or sent.
    #[error("the stanza would be {bytes} bytes, more than the {limit} a server accepts")]
    StanzaTooLarge {
        /// Its size as serialized.
        bytes: usize,
        /// [`MAX_STANZA_BYTES`].
        limit: usize,
    },
    /// No known key of this JID has that fingerprint.
    #[error("no known key of {0} has that fingerprint (run `devices` first)")]
    UnknownKey(BareJid),
    /// Too many answers to this JID are waiting to be sent (see [`crate::client::Answers`]).
    #[error("too many answers to {0} are waiting; this one was not sent")]
    Busy(BareJid),
    /// A background task panicked or was cancelled.
    #[error("internal task failed")]
    Task,
}

/// Why an incoming OMEMO message was rejected. The stored state is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The `<encrypted>` element is malformed.
    #[error("malformed <encrypted>: {0}")]
    Malformed(omemo_pep::Error),
    /// The message has no key for this device.
    #[error("not encrypted for this device")]
    NotForUs,
    /// The key bytes are not a valid OMEMO message.
    #[error("malformed key: {0}")]
    Decode(omemo_crypto::DecodeError),
    /// No session with the sender device and the message is not a key exchange.
    #[error("no session with this device")]
    NoSession,
    /// The key exchange names a pre-key we do not have (already used, or never ours).
    #[error("the key exchange uses an unknown pre-key or signed pre-key")]
    UnknownPreKey,
    /// Building the session from the key exchange failed.
    #[error("key exchange failed: {0}")]
    KeyExchange(omemo_crypto::SessionCreationError),
    /// The ratchet message did not decrypt.
    #[error("decryption failed: {0}")]
    Decryption(omemo_crypto::DecryptionError),
    /// The payload did not decrypt.
    #[error("payload: {0}")]
    Payload(omemo_crypto::PayloadError),
    /// The SCE envelope is invalid or its affixes do not match the stanza.
    #[error("envelope: {0}")]
    Envelope(omemo_pep::Error),
    /// The device's identity key differs from the one we know for it.
    #[error("the device's identity key changed")]
    IdentityChanged,
    /// The stored session is corrupt.
    #[error("stored session: {0}")]
    Snapshot(omemo_crypto::SnapshotError),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// The background task that decrypts panicked or was cancelled.
    #[error("internal task failed")]
    Internal,
}

impl ReceiveError {
    /// True for a duplicate (already decrypted) message, which XEP-0384 says to ignore
    /// silently.
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            Self::Decryption(omemo_crypto::DecryptionError::Duplicate)
        )
    }
}

/// End-to-end encryption facts about a decrypted message.
#[derive(Debug, Clone)]
pub struct E2eeMetadata {
    /// The sender's bare JID.
    pub sender: BareJid,
    /// The sender's device id.
    pub device: DeviceId,
    /// The sender device's identity key.
    pub identity_key: IdentityPublicKey,
    /// Its trust level at the time of decryption.
    pub trust: TrustLevel,
    /// Whether the message was a key exchange (it built a new session).
    pub key_exchange: bool,
}

/// A decrypted message: its SCE content and where it came from.
#[derive(Debug, Clone)]
pub struct DecryptedMessage {
    /// The stanza's `from`.
    pub from: Jid,
    /// The stanza's `id`.
    pub id: Option<String>,
    /// The stanza's type.
    pub type_: MessageType,
    /// The sensitive content of the envelope (server-processed elements removed).
    pub content: Vec<Element>,
    /// The first `<body>` of the content.
    pub body: Option<String>,
    /// Encryption metadata.
    pub e2ee: E2eeMetadata,
    /// The message's place in the store's inbox, when it has one (see [`Receipt`]).
    pub receipt: Option<Receipt>,
}

/// Keeps a decrypted message in the store's inbox until the program is done with it. The
/// message leaves the inbox when the last clone of its receipt is dropped, or with the
/// commit of an answer sent with [`OmemoManager::send_answer`]. A process that dies before
/// either hands the message to the program again after its restart (at least once).
#[derive(Clone)]
pub struct Receipt(Arc<ReceiptInner>);

struct ReceiptInner {
    id: i64,
    handled: Arc<Removals>,
}

impl Drop for ReceiptInner {
    fn drop(&mut self) {
        self.handled.push(self.id);
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receipt({})", self.0.id)
    }
}

/// Devices a message was encrypted for and devices that were left out.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// `(jid, device)` pairs that got a key.
    pub encrypted_for: Vec<(BareJid, DeviceId)>,
    /// `(jid, device, reason)` for devices left out.
    pub skipped: Vec<(BareJid, DeviceId, String)>,
    /// The id of the sent stanza.
    pub stanza_id: String,
    /// Devices left out because their JID lists more than [`MAX_DEVICES_PER_MESSAGE`].
    pub over_limit: usize,
}

/// One device of a JID, for display.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The device id.
    pub device: DeviceId,
    /// Its label, if any.
    pub label: Option<String>,
    /// Whether the label's signature verified.
    pub label_verified: bool,
    /// Whether the device is in the current device list.
    pub active: bool,
    /// Its identity key, once known from its bundle or a message.
    pub identity_key: Option<IdentityPublicKey>,
    /// The key's trust level (`None` for our own device or an unknown key).
    pub trust: Option<TrustLevel>,
    /// True for this program's own device.
    pub own: bool,
}

/// What the receive path hands back.
pub(crate) enum Received {
    /// An OMEMO message with content for the application.
    Message(Box<DecryptedMessage>),
    /// An empty OMEMO message (or one without content): state updated, nothing to show.
    Empty,
}

/// Our own device.
pub struct OwnIdentity {
    /// Our bare JID.
    pub jid: BareJid,
    /// Our device id.
    pub device_id: DeviceId,
    /// Our identity key pair.
    pub identity: IdentityKeyPair,
    /// The label we publish.
    pub label: String,
}

/// The OMEMO manager. Cheap to share behind an `Arc`.
pub struct OmemoManager {
    connection: Connection,
    store: Arc<Mutex<Store>>,
    own: Arc<OwnIdentity>,
    policy: TrustPolicy,
    device_lists_fetched: AsyncMutex<HashMap<BareJid, Instant>>,
    /// Devices whose bundle could not be fetched: failures so far and when to try again.
    bundle_failures: Mutex<HashMap<(BareJid, DeviceId), (u32, Instant)>>,
    /// Serialises bundle republication.
    publishing: AsyncMutex<()>,
    /// Devices with an empty message (confirmation, heartbeat) pending.
    confirming: Mutex<std::collections::HashSet<(BareJid, DeviceId)>>,
    /// A pending republication after key exchanges: the first and the latest of them.
    republish: Mutex<Option<(Instant, Instant)>>,
    /// Serialises outbox resends.
    resending: AsyncMutex<()>,
    next_id: std::sync::atomic::AtomicU64,
    /// Distinguishes this process's stanza ids from an earlier one's (outbox resends).
    id_tag: u32,
    /// Outbox messages the server acknowledged, to delete.
    acknowledged: Arc<Removals>,
    /// Inbox messages the program has handled, to delete.
    handled: Arc<Removals>,
}

/// Forgets devices that left their list more than [`REMOVED_DEVICE_RETENTION`] ago.
pub(crate) fn prune_removed_devices(store: &mut Store) -> Result<(), StoreError> {
    let pruned = store.purge_removed_devices(REMOVED_DEVICE_RETENTION.as_secs(), now())?;
    if pruned > 0 {
        tracing::info!(
            pruned,
            "forgot devices that left their device list more than 12 weeks ago"
        );
    }
    Ok(())
}

/// Notes that `jid`'s device list was fetched now, keeping the map bounded.
fn note_fetched(fetched: &mut HashMap<BareJid, Instant>, jid: BareJid) {
    if fetched.len() >= FETCH_TIMES_KEPT && !fetched.contains_key(&jid) {
        fetched.retain(|_, t| t.elapsed() < DEVICE_LIST_MAX_AGE);
        if fetched.len() >= FETCH_TIMES_KEPT {
            // All recent: forget the oldest.
            if let Some(oldest) = fetched
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(j, _)| j.clone())
            {
                fetched.remove(&oldest);
            }
        }
    }
    fetched.insert(jid, Instant::now());
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave SQLite half-written (transactions roll
    // back on drop), so a poisoned lock is safe to reuse.
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OmemoManager {
    /// Opens the store and loads or creates our device, signed pre-key and pre-keys.
    /// Blocking: call it before the runtime is busy, or via `spawn_blocking`.
    pub fn open_store(
        db: &std::path::Path,
        jid: &BareJid,
        label: &str,
    ) -> Result<(Store, OwnIdentity), OmemoError> {
        if let Some(dir) = db.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| OmemoError::Store(StoreError::Io(e)))?;
            }
        }
        let mut store = Store::open(db)?;
        let t = now();
        let device = store.load_or_create_own_device(jid.as_str(), Some(label), &mut OsRng, t)?;
        let needs_rotation = store.current_signed_pre_key()?.is_none_or(|spk| {
            t.saturating_sub(spk.created_at()) > SIGNED_PRE_KEY_ROTATION.as_secs()
        });
        if needs_rotation {
            store.rotate_signed_pre_key(&mut OsRng, t)?;
        }
        store.prune_signed_pre_keys(SIGNED_PRE_KEY_GRACE.as_secs(), t)?;
        store.remove_used_pre_keys(USED_PRE_KEY_GRACE.as_secs(), t)?;
        store.ensure_pre_keys(PRE_KEY_TARGET, &mut OsRng, t)?;
        prune_removed_devices(&mut store)?;
        let own = OwnIdentity {
            jid: jid.clone(),
            device_id: device.device_id(),
            identity: IdentityKeyPair::from_seed(&device.identity().seed()),
            label: label.to_owned(),
        };
        Ok((store, own))
    }

    /// Wraps an opened store and a connection.
    pub fn new(
        connection: Connection,
        store: Store,
        own: OwnIdentity,
        policy: TrustPolicy,
    ) -> Self {
        let store = Arc::new(Mutex::new(store));
        Self {
            connection,
            acknowledged: Arc::new(Removals::new(
                Arc::clone(&store),
                Store::outbox_remove,
                "acknowledged messages from the outbox",
            )),
            handled: Arc::new(Removals::new(
                Arc::clone(&store),
                Store::inbox_remove,
                "handled messages from the inbox",
            )),
            store,
            own: Arc::new(own),
            policy,
            device_lists_fetched: AsyncMutex::new(HashMap::new()),
            bundle_failures: Mutex::new(HashMap::new()),
            publishing: AsyncMutex::new(()),
            republish: Mutex::new(None),
            confirming: Mutex::new(std::collections::HashSet::new()),
            resending: AsyncMutex::new(()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            id_tag: OsRng.next_u32(),
        }
    }

    /// Our device.
    pub fn own(&self) -> &OwnIdentity {
        &self.own
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, OmemoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|_| OmemoError::Task)
    }

    fn iq_id(&self, what: &str) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("omemo-{what}-{:08x}-{n}", self.id_tag)
    }

    /// Sends a request and returns the answer as an IQ, error answers included (the PEP
    /// interpreters in `omemo-pep` read both).
    async fn request(&self, iq: Iq) -> Result<Iq, OmemoError> {
        let id = iq.id().to_owned();
        match self.connection.send_iq(iq).await {
            Ok(answer) => Ok(answer),
            Err(IqError::Stanza(error)) => Ok(Iq::from_error(id, *error)),
            Err(e) => Err(e.into()),
        }
    }

    async fn publish(
        &self,
        mut publication: Publication,
        what: &'static str,
    ) -> Result<(), OmemoError> {
        loop {
            let request = publication.request(&self.iq_id("publish"));
            check_size(String::from(&Element::from(request.clone())).len())?;
            let answer = self.request(request).await?;
            match publication.handle_response(&answer) {
                PublishProgress::Done => return Ok(()),
                PublishProgress::Continue => continue,
                PublishProgress::Failed(failure) => {
                    return Err(OmemoError::Publish {
                        what,
                        reason: format!("{failure:?}"),
                    })
                }
                _ => {
                    return Err(OmemoError::Publish {
                        what,
                        reason: "unexpected progress".to_owned(),
                    })
                }
            }
        }
    }

    /// Publishes our device in our device list (keeping every other device) and our bundle.
    pub async fn set_up(&self) -> Result<(), OmemoError> {
        self.publish_device_list().await?;
        self.publish_bundle_if_changed().await?;
        Ok(())
    }

    /// Fetches our device list and republishes it if our device is missing.
    pub async fn publish_device_list(&self) -> Result<(), OmemoError> {
        let answer = self
            .request(pep::fetch_device_list(
                &self.own.jid,
                &self.iq_id("own-devices"),
            ))
            .await?;
        let current = match pep::parse_device_list_response(&answer) {
            Fetched::Found(list) => Some(list),
            Fetched::NotFound => None,
            Fetched::Malformed(e) => {
                tracing::warn!(error = %e, "our own device list is malformed; replacing it");
                None
            }
            other => {
                return Err(OmemoError::Publish {
                    what: "device list",
                    reason: format!("fetching it failed: {other:?}"),
                })
            }
        };
        if let Some(list) = &current {
            self.record_device_list(self.own.jid.clone(), list).await?;
        }
        self.publish_own_entry(current.as_ref()).await
    }

    async fn publish_own_entry(&self, current: Option<&DeviceList>) -> Result<(), OmemoError> {
        let entry = DeviceEntry::with_signed_label(
            self.own.device_id,
            &self.own.label,
            &self.own.identity,
        )?;
        // Device ids given up by an identity reset leave the list (also when a stale copy of
        // the list brings them back), and their bundles go.
        let retired = self
            .with_store(|store| store.retired_own_devices())
            .await??;
        let listed_retired: Vec<DeviceId> = retired
            .iter()
            .copied()
            .filter(|id| current.is_some_and(|list| list.contains(*id)))
            .collect();
        if let Some(list) = pep::own_device_list(current, entry, &retired)? {
            tracing::info!(device = %self.own.device_id, devices = list.len(), "publishing our device list");
            self.publish(Publication::device_list(&list), "device list")
                .await?;
            self.record_device_list(self.own.jid.clone(), &list).await?;
        }
        for device in listed_retired {
            let answer = self
                .request(pep::retract_bundle(device, &self.iq_id("retract")))
                .await?;
            tracing::info!(%device, ok = matches!(answer, Iq::Result { .. }), "retracted the bundle of our old device");
        }
        Ok(())
    }

    /// Publishes our bundle (signed pre-key and unused pre-keys).
    pub async fn publish_bundle(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle().await?;
        self.publish_own_bundle(bundle, ids).await
    }

    /// Publishes our bundle unless the server holds exactly this one already (a restart with
    /// the same database changes nothing, and republishing would only cost a round trip and a
    /// notification to every contact).
    async fn publish_bundle_if_changed(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle().await?;
        let device = self.own.device_id;
        let answer = self
            .request(pep::fetch_bundle(
                &self.own.jid,
                device,
                &self.iq_id("own-bundle"),
            ))
            .await?;
        if let Fetched::Found(published) = pep::parse_bundle_response(&answer, device) {
            if same_bundle(&published, &bundle) {
                tracing::info!(%device, "our bundle on the server is current");
                self.with_store(move |store| store.mark_bundle_published(&ids))
                    .await??;
                return Ok(());
            }
        }
        self.publish_own_bundle(bundle, ids).await
    }

    /// Our bundle as the store has it now (topping up the pre-keys first), with the ids of
    /// its pre-keys.
    async fn own_bundle(&self) -> Result<(Bundle, Vec<omemo_crypto::PreKeyId>), OmemoError> {
        let own = Arc::clone(&self.own);
        self.with_store(move |store| -> Result<_, OmemoError> {
            let t = now();
            store.ensure_pre_keys(PRE_KEY_TARGET, &mut OsRng, t)?;
            let spk = store
                .current_signed_pre_key()?
                .ok_or(StoreError::NoOwnDevice)?;
            let pre_keys = store.unused_pre_keys()?;
            let ids: Vec<_> = pre_keys.iter().map(|pk| pk.id()).collect();
            let bundle = Bundle::from_own_keys(&own.identity, &spk, &pre_keys).map_err(|e| {
                OmemoError::Publish {
                    what: "bundle",
                    reason: e.to_string(),
                }
            })?;
            Ok((bundle, ids))
        })
        .await?
    }

    async fn publish_own_bundle(
        &self,
        bundle: Bundle,
        ids: Vec<omemo_crypto::PreKeyId>,
    ) -> Result<(), OmemoError> {
        tracing::info!(device = %self.own.device_id, pre_keys = ids.len(), "publishing our bundle");
        self.publish(Publication::bundle(self.own.device_id, &bundle), "bundle")
            .await?;
        self.with_store(move |store| store.mark_bundle_published(&ids))
            .await??;
        Ok(())
    }

    async fn record_device_list(&self, jid: BareJid, list: &DeviceList) -> Result<(), OmemoError> {
        // Labels can be verified for devices whose identity key we already know.
        let jid_for_keys = jid.clone();
        let mut keys: HashMap<DeviceId, IdentityPublicKey> = self
            .with_store(move |store| store.devices(NS, jid_for_keys.as_str()))
            .await??
            .into_iter()
            .filter_map(|d| d.identity_key.map(|k| (d.device_id, k)))
            .collect();
        if jid == self.own.jid {
            keys.insert(self.own.device_id, self.own.identity.public_key());
        }
        let mut list = list.clone();
        list.verify_labels(|id| keys.get(&id).copied());
        let listed: Vec<ListedDevice> = list
            .devices()
            .iter()
            .map(|d| ListedDevice {
                device_id: d.id(),
                label: match d.label() {
                    omemo_pep::omemo2::Label::Verified(l)
                    | omemo_pep::omemo2::Label::Unverified(l) => Some(l.to_owned()),
                    _ => None,
                },
                label_verified: d.label().verified().is_some(),
            })
            .collect();
        let jid_for_log = jid.clone();
        let changes = self
            .with_store(move |store| store.update_device_list(NS, jid.as_str(), &listed, now()))
            .await??;
        if changes.ignored > 0 || !changes.pruned.is_empty() {
            tracing::warn!(
                jid = %jid_for_log,
                ignored = changes.ignored,
                pruned = changes.pruned.len(),
                limit = atm_trust::MAX_DEVICES_PER_JID,
                "device list over the per-contact bound: extra devices ignored, the oldest unlisted ones forgotten"
            );
        }
        if !changes.is_empty() {
            tracing::debug!(?changes, "device list changed");
        }
        Ok(())
    }

    /// Handles a device-list notification; republishes ours if our device is missing.
    pub async fn handle_device_list_notification(
        &self,
        jid: BareJid,
        list: DeviceList,
    ) -> Result<(), OmemoError> {
        self.record_device_list(jid.clone(), &list).await?;
        note_fetched(&mut *self.device_lists_fetched.lock().await, jid.clone());
        if jid == self.own.jid && !list.contains(self.own.device_id) {
            tracing::warn!("our device vanished from our device list; re-adding it");
            self.publish_own_entry(Some(&list)).await?;
        }
        Ok(())
    }

    /// Fetches `jid`'s device list unless a fresh one is known. Returns false if the JID has
    /// no OMEMO 2 device list.
    async fn refresh_device_list(&self, jid: &BareJid, force: bool) -> Result<bool, OmemoError> {
        if !force {
            let fetched = self.device_lists_fetched.lock().await;
            if fetched
                .get(jid)
                .is_some_and(|t| t.elapsed() < DEVICE_LIST_MAX_AGE)
            {
                return Ok(true);
            }
        }
        let answer = self
            .request(pep::fetch_device_list(jid, &self.iq_id("devices")))
            .await?;
        let found = match pep::parse_device_list_response(&answer) {
            Fetched::Found(list) => {
                self.record_device_list(jid.clone(), &list).await?;
                true
            }
            Fetched::NotFound => false,
            other => {
                tracing::warn!(%jid, outcome = ?other, "cannot fetch device list");
                false
            }
        };
        note_fetched(&mut *self.device_lists_fetched.lock().await, jid.clone());
        Ok(found)
    }

    /// Whether an earlier bundle fetch for this device failed and its back-off has not ended.
    fn backing_off(&self, jid: &BareJid, device: DeviceId) -> bool {
        self.bundle_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(jid.clone(), device))
            .is_some_and(|(_, retry_at)| Instant::now() < *retry_at)
    }

    /// Fetches a device's bundle, unless an earlier fetch failed and its back-off has not
    /// ended; a failure starts or doubles the back-off.
    async fn fetch_bundle(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<Option<Bundle>, OmemoError> {
        let key = (jid.clone(), device);
        if self.backing_off(jid, device) {
            tracing::debug!(%jid, %device, "bundle fetch failed before; not asking again yet");
            return Ok(None);
        }
        let answer = self
            .request(pep::fetch_bundle(jid, device, &self.iq_id("bundle")))
            .await?;
        let mut failures = self
            .bundle_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(match pep::parse_bundle_response(&answer, device) {
            Fetched::Found(bundle) => {
                failures.remove(&key);
                Some(bundle)
            }
            other => {
                let failed = failures.get(&key).map_or(1, |(n, _)| n.saturating_add(1));
                let wait = BUNDLE_RETRY_FIRST
                    .saturating_mul(1 << failed.saturating_sub(1).min(16))
                    .min(BUNDLE_RETRY_MAX);
                tracing::warn!(%jid, %device, outcome = ?other, failed, retry_in = ?wait, "no usable bundle");
                if failures.len() >= BUNDLE_FAILURES_KEPT && !failures.contains_key(&key) {
                    let first = failures
                        .iter()
                        .min_by_key(|(_, (_, retry_at))| *retry_at)
                        .map(|(k, _)| k.clone());
                    if let Some(first) = first {
                        failures.remove(&first);
                    }
                }
                failures.insert(key, (failed, Instant::now() + wait));
                None
            }
        })
    }

    /// Encrypts `content` (stanza children such as `<body>`) in an SCE envelope for every
    /// accepted device of `to` and our own other devices, commits the new session states,
    /// then sends one `<message type='chat'>`.
    pub async fn send_sensitive(
        &self,
        to: &BareJid,
        content: Vec<Element>,
    ) -> Result<SendReport, OmemoError> {
        self.send_encrypted(to, content, TrustLevel::is_accepted)
            .await
    }

    /// Like [`OmemoManager::send_sensitive`], encrypting only for devices whose trust level
    /// passes `accept` (ATM trust messages go to Authenticated devices only).
    pub async fn send_encrypted(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        accept: fn(TrustLevel) -> bool,
    ) -> Result<SendReport, OmemoError> {
        self.encrypt_and_send(to, content, accept, Vec::new()).await
    }

    /// Like [`OmemoManager::send_sensitive`], as the answer to the received message whose
    /// receipt is `answering`: that message leaves the inbox in the transaction that commits
    /// the answer, so a crash can lose neither and the answer is not sent twice.
    pub async fn send_answer(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        answering: Option<&Receipt>,
    ) -> Result<SendReport, OmemoError> {
        let answers = answering.map(|receipt| receipt.0.id).into_iter().collect();
        self.encrypt_and_send(to, content, TrustLevel::is_accepted, answers)
            .await
    }

    async fn encrypt_and_send(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        accept: fn(TrustLevel) -> bool,
        answers: Vec<i64>,
    ) -> Result<SendReport, OmemoError> {
        if !self.refresh_device_list(to, false).await? {
            return Err(OmemoError::NoOmemo(to.clone()));
        }
        if to != &self.own.jid {
            self.refresh_device_list(&self.own.jid, false).await?;
        }

        // Bundles for devices that have no session yet (fetched outside the store lock).
        let mut recipients = vec![to.clone()];
        if to != &self.own.jid {
            recipients.push(self.own.jid.clone());
        }
        let own_jid = self.own.jid.clone();
        let own_device = self.own.device_id;
        let recipients_for_query = recipients.clone();
        let missing = self
            .with_store(
                move |store| -> Result<Vec<(BareJid, DeviceId)>, StoreError> {
                    let mut missing = Vec::new();
                    for jid in &recipients_for_query {
                        let skip = (jid == &own_jid).then_some(own_device);
                        let (chosen, _) = chosen_devices(store, jid, skip)?;
                        missing.extend(
                            chosen
                                .into_iter()
                                .filter(|(_, session)| session.is_none())
                                .map(|(device, _)| (jid.clone(), device)),
                        );
                    }
                    Ok(missing)
                },
            )
            .await??;
        // Not those backing off after a failure; a bounded number per JID; a few at a time: a
        // contact with many new devices costs a few round trips, not one per device.
        let mut per_jid: HashMap<BareJid, usize> = HashMap::new();
        let missing: Vec<(BareJid, DeviceId)> = missing
            .into_iter()
            .filter(|(jid, device)| !self.backing_off(jid, *device))
            .filter(|(jid, _)| {
                let count = per_jid.entry(jid.clone()).or_default();
                *count += 1;
                *count <= MAX_BUNDLE_FETCHES_PER_MESSAGE
            })
            .collect();
        let fetched: Vec<Result<Option<FetchedBundle>, OmemoError>> =
            futures::stream::iter(missing)
                .map(|(jid, device)| async move {
                    let bundle = self.fetch_bundle(&jid, device).await?;
                    Ok(bundle.map(|bundle| (jid, device, bundle)))
                })
                .buffer_unordered(CONCURRENT_BUNDLE_FETCHES)
                .collect()
                .await;
        let mut bundles = Vec::new();
        for result in fetched {
            bundles.extend(result?);
        }

        let own = Arc::clone(&self.own);
        let policy = self.policy;
        let to_owned = to.clone();
        let envelope_bytes = sce::Envelope::new(
            content,
            own.jid.clone(),
            to.clone(),
            Some(xmpp_parsers::date::DateTime(
                chrono::Utc::now().fixed_offset(),
            )),
            &mut OsRng,
        )
        .to_bytes()?;
        let stanza_id = self.iq_id("msg");
        let id_for_store = stanza_id.clone();
        let (message, report, outbox_id) = self
            .with_store(move |store| {
                encrypt_for_devices(
                    store,
                    &own,
                    policy,
                    accept,
                    &recipients,
                    bundles,
                    &envelope_bytes,
                    &to_owned,
                    &id_for_store,
                    &answers,
                )
            })
            .await??;
        self.send_queued(outbox_id, message).await?;
        Ok(SendReport {
            stanza_id,
            ..report
        })
    }

    /// Republishes our bundle once a burst of key exchanges is over: when none came for
    /// [`REPUBLISH_QUIET`], or [`REPUBLISH_MAX_DELAY`] after the first one. Until then the
    /// bundle on the server still offers the used pre-keys, which we keep for a day anyway.
    fn republish_bundle_soon(self: &Arc<Self>) {
        let now = Instant::now();
        {
            let mut due = self
                .republish
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, last)) = due.as_mut() {
                *last = now;
                return;
            }
            *due = Some((now, now));
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wake = {
                    let mut due = manager
                        .republish
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let Some((first, last)) = *due else { return };
                    let wake = (last + REPUBLISH_QUIET).min(first + REPUBLISH_MAX_DELAY);
                    if Instant::now() >= wake {
                        *due = None;
                        break;
                    }
                    wake
                };
                tokio::time::sleep_until(wake.into()).await;
            }
            if let Err(e) = manager.publish_bundle().await {
                tracing::warn!(error = %e, "republishing the bundle after key exchanges failed");
            }
        });
    }

    /// Sends an empty message to a device that needs one from us (a new session to confirm,
    /// a heartbeat) after [`CONFIRM_DELAY`], unless something was sent to it by then: an
    /// answer confirms the session just as well.
    /// One is pending per device at a time: a flood of messages that each ask for one (every
    /// message past the heartbeat threshold does) costs one.
    fn confirm_soon(self: &Arc<Self>, jid: BareJid, device: DeviceId) {
        let key = (jid.clone(), device);
        let newly_pending = self
            .confirming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone());
        if !newly_pending {
            return;
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(CONFIRM_DELAY).await;
            manager
                .confirming
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
            let jid_owned = jid.clone();
            let unanswered = manager
                .with_store(move |store| store.device(NS, jid_owned.as_str(), device))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .is_none_or(|d| d.received_without_reply > 0);
            if !unanswered {
                tracing::debug!(%jid, %device, "answered meanwhile; no empty message needed");
                return;
            }
            if let Err(e) = manager.send_empty(&jid, device).await {
                tracing::warn!(error = %e, "sending an empty OMEMO message failed");
            }
        });
    }

    /// Sends an empty OMEMO message to one device (session confirmation, heartbeat).
    async fn send_empty(&self, jid: &BareJid, device: DeviceId) -> Result<(), OmemoError> {
        let own = Arc::clone(&self.own);
        let jid_owned = jid.clone();
        let stanza_id = self.iq_id("empty");
        let queued = self
            .with_store(move |store| -> Result<Option<(i64, Message)>, OmemoError> {
                let Some(blob) = store.load_session(NS, jid_owned.as_str(), device)? else {
                    return Ok(None);
                };
                let Ok(mut session) = Session::restore(&blob) else {
                    return Ok(None);
                };
                let Ok(key) = session.encrypt(KeyMaterial::empty().as_bytes()) else {
                    return Ok(None);
                };
                let state = session.snapshot();
                let encrypted = EncryptedMessage {
                    sid: own.device_id,
                    keys: vec![RecipientKeys {
                        jid: jid_owned.clone(),
                        keys: vec![EncryptedKey {
                            rid: device,
                            kex: key.is_key_exchange(),
                            data: key.to_bytes(),
                        }],
                    }],
                    payload: None,
                };
                let message = outgoing_message(&jid_owned, &encrypted, &stanza_id);
                let text = stanza_text(&message)?;
                let outbox_id = store.commit_encryption_queued(
                    NS,
                    &[SessionUpdate {
                        jid: jid_owned.as_str(),
                        device_id: device,
                        session_state: &state,
                    }],
                    now(),
                    &text,
                    &[],
                )?;
                Ok(Some((outbox_id, message)))
            })
            .await??;
        if let Some((outbox_id, message)) = queued {
            self.send_queued(outbox_id, message).await?;
            tracing::debug!(%jid, %device, "sent empty OMEMO message");
        }
        Ok(())
    }

    /// Sends a message from the outbox; it leaves the outbox once the server acknowledged it.
    async fn send_queued(&self, outbox_id: i64, message: Message) -> Result<(), OmemoError> {
        let delivery = self
            .connection
            .send_tracked(message.clone())
            .await
            .map_err(|_| OmemoError::Closed)?;
        self.watch(outbox_id, message, delivery);
        Ok(())
    }

    /// Waits in the background for the server to acknowledge an outbox message; a message lost
    /// with a stream that could not be resumed is sent again at once, up to [`LOST_RESENDS`]
    /// times.
    fn watch(&self, outbox_id: i64, message: Message, mut delivery: crate::connection::Delivery) {
        let acknowledged = Arc::clone(&self.acknowledged);
        let connection = self.connection.clone();
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            for resent in 0.. {
                // Without stream management no acknowledgement ever comes: stop waiting at
                // some point (the entry expires from the outbox later).
                match tokio::time::timeout(OUTBOX_MAX_AGE, delivery.acknowledged()).await {
                    Ok(true) => {
                        acknowledged.push(outbox_id);
                        return;
                    }
                    // Lost with a stream that could not be resumed. The next fresh session
                    // resends the outbox, but may have done so before this message was
                    // committed: send it again now (the recipient's ratchet drops a copy that
                    // did arrive), unless it was sent too often already.
                    Ok(false) if resent < LOST_RESENDS => {
                        let counted = count_send(Arc::clone(&store), outbox_id).await;
                        if !matches!(counted, Some(sends) if sends <= MAX_SENDS) {
                            return;
                        }
                        match connection.send_tracked(message.clone()).await {
                            Ok(again) => delivery = again,
                            Err(_) => return, // the connection was closed for good
                        }
                    }
                    _ => {
                        tracing::debug!(
                            outbox_id,
                            "message not acknowledged; it stays in the outbox"
                        );
                        return;
                    }
                }
            }
        });
    }

    /// Sends again what the outbox holds, on every fresh (not resumed) session: messages a
    /// previous process committed but may not have got to the server, and messages lost with
    /// a connection that could not be resumed. A copy that did arrive is dropped by the
    /// recipient's ratchet as a duplicate, so sending one too many is harmless.
    ///
    /// The messages go one at a time, each after the previous one was acknowledged, and a
    /// lost stream ends the round: a message the server refuses (it closes the stream for it)
    /// is then the only one whose sends are counted, and after [`MAX_SENDS`] it is dropped with
    /// a warning while the messages behind it go out.
    pub async fn resend_outbox(&self) -> Result<(), OmemoError> {
        // One round at a time; a round whose stream was lost ends soon.
        let _round = self.resending.lock().await;
        let before = now().saturating_sub(OUTBOX_MAX_AGE.as_secs());
        let (expired, rows) = self
            .with_store(move |store| {
                Ok::<_, StoreError>((store.outbox_expire(before)?, store.outbox()?))
            })
            .await??;
        if expired > 0 {
            tracing::warn!(
                expired,
                "dropped outbox messages the server never acknowledged"
            );
        }
        let mut resent = 0usize;
        let mut wait_for_acks = true;
        for (outbox_id, text) in rows {
            let parsed = text
                .parse::<Element>()
                .ok()
                .and_then(|element| Message::try_from(element).ok());
            let Some(message) = parsed.filter(|_| check_size(text.len()).is_ok()) else {
                tracing::warn!(
                    outbox_id,
                    bytes = text.len(),
                    "unreadable or oversized message in the outbox; dropping it"
                );
                self.with_store(move |store| store.outbox_remove(&[outbox_id]))
                    .await??;
                continue;
            };
            match count_send(Arc::clone(&self.store), outbox_id).await {
                Some(sends) if sends <= MAX_SENDS => {}
                _ => continue, // acknowledged meanwhile, or dropped
            }
            let delivery = self
                .connection
                .send_tracked(message)
                .await
                .map_err(|_| OmemoError::Closed)?;
            resent += 1;
            // Without stream management no acknowledgement ever comes: stop waiting at some
            // point (the entry expires from the outbox later).
            let acknowledged = Arc::clone(&self.acknowledged);
            let (tell, told) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let acked = matches!(
                    tokio::time::timeout(OUTBOX_MAX_AGE, delivery.acknowledged()).await,
                    Ok(true)
                );
                if acked {
                    acknowledged.push(outbox_id);
                }
                let _ = tell.send(acked);
            });
            if !wait_for_acks {
                continue;
            }
            match tokio::time::timeout(RESEND_ACK_WAIT, told).await {
                Ok(Ok(true)) => {}
                Ok(_) => {
                    tracing::info!(
                        outbox_id,
                        "the stream was lost while resending the outbox; the next session goes on"
                    );
                    return Ok(());
                }
                // No acknowledgement in time (a server without stream management): the rest
                // goes out without waiting.
                Err(_) => wait_for_acks = false,
            }
        }
        if resent > 0 {
            tracing::info!(resent, "sent unacknowledged messages from the outbox again");
        }
        Ok(())
    }

    /// Decrypts an incoming message. `sender` is the bare JID that sent it (for a carbon of a
    /// message we sent from another device, our own JID) and `recipient` the bare JID it was
    /// addressed to (for messages to us, our own JID).
    pub(crate) async fn receive(
        self: &Arc<Self>,
        message: &Message,
        encrypted: EncryptedMessage,
        sender: BareJid,
        recipient: BareJid,
        sent_carbon: bool,
    ) -> Result<Received, ReceiveError> {
        let own = Arc::clone(&self.own);
        let policy = self.policy;
        let sid = encrypted.sid;
        let sender_for_store = sender.clone();
        // A message one of our devices sent to our own account reaches us either directly or
        // as a carbon of a sent message, whichever the server delivers first (the other copy
        // is then a duplicate): both are addressed to us.
        let to_us = recipient == self.own.jid;
        let header = Header {
            from: message
                .from
                .clone()
                .unwrap_or_else(|| Jid::from(sender.clone())),
            id: message.id.as_ref().map(|id| id.0.clone()),
            type_: message.type_.clone(),
        };
        // What the program is handed waits in the inbox until it is done with it; carbons of
        // messages we sent never reach the program.
        let keep = (!sent_carbon).then(|| header.clone());
        let outcome = self
            .with_store(move |store| {
                decrypt_message(
                    store,
                    &own,
                    policy,
                    &encrypted,
                    &sender_for_store,
                    &recipient,
                    keep.as_ref(),
                )
            })
            .await
            .map_err(|_| ReceiveError::Internal)??;
        let receipt = outcome.inbox_id.map(|id| self.receipt(id));

        if outcome.used_pre_key {
            self.republish_bundle_soon();
        }
        if outcome.e2ee.key_exchange || outcome.heartbeat_due {
            self.confirm_soon(sender.clone(), sid);
        }
        Ok(match outcome.envelope {
            // Trust messages in carbons of messages our other devices sent to someone else are
            // not for us.
            Some(envelope) => {
                self.open(
                    envelope,
                    header,
                    outcome.e2ee,
                    !sent_carbon || to_us,
                    receipt,
                )
                .await
            }
            None => Received::Empty,
        })
    }

    /// Applies the trust messages of a decrypted envelope (they are never shown, XEP-0450)
    /// and makes the rest, if any, a message for the program.
    async fn open(
        &self,
        envelope: sce::Envelope,
        header: Header,
        e2ee: E2eeMetadata,
        apply_trust: bool,
        receipt: Option<Receipt>,
    ) -> Received {
        let (trust_messages, content): (Vec<Element>, Vec<Element>) = envelope
            .sensitive_content()
            .cloned()
            .partition(TrustMessage::is_trust_message);
        if apply_trust {
            for element in &trust_messages {
                self.apply_trust_message(&e2ee.sender, &e2ee.identity_key, element)
                    .await;
            }
        }
        if content.is_empty() {
            return Received::Empty;
        }
        Received::Message(Box::new(DecryptedMessage {
            from: header.from,
            id: header.id,
            type_: header.type_,
            body: envelope.body(),
            content,
            e2ee,
            receipt,
        }))
    }

    fn receipt(&self, id: i64) -> Receipt {
        Receipt(Arc::new(ReceiptInner {
            id,
            handled: Arc::clone(&self.handled),
        }))
    }

    /// The messages a previous process decrypted but had not finished handling when it
    /// stopped, oldest first, to hand to the program again. Their trust messages are applied
    /// again (the same decisions), and the trust level is the device's current one.
    pub(crate) async fn take_inbox(&self) -> Vec<DecryptedMessage> {
        let rows = self
            .with_store(|store| store.inbox())
            .await
            .and_then(|rows| rows.map_err(OmemoError::from));
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the inbox");
                return Vec::new();
            }
        };
        let mut messages = Vec::new();
        for row in rows {
            // A row that no longer reads is dropped with its receipt.
            let receipt = self.receipt(row.id);
            let parsed = (
                BareJid::new(&row.sender),
                Jid::new(&row.from),
                message_type_from_str(&row.message_type),
                sce::Envelope::from_bytes(&row.envelope),
            );
            let (Ok(sender), Ok(from), Some(type_), Ok(envelope)) = parsed else {
                tracing::warn!(id = row.id, "unreadable message in the inbox; dropping it");
                continue;
            };
            let key = row.identity_key;
            let jid = sender.clone();
            let trust = self
                .with_store(move |store| store.trust_level(jid.as_str(), &key))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .unwrap_or(TrustLevel::Undecided);
            let e2ee = E2eeMetadata {
                sender,
                device: row.device_id,
                identity_key: key,
                trust,
                key_exchange: row.key_exchange,
            };
            let header = Header {
                from,
                id: row.stanza_id,
                type_,
            };
            if let Received::Message(message) =
                self.open(envelope, header, e2ee, true, Some(receipt)).await
            {
                messages.push(*message);
            }
        }
        messages
    }

    /// Takes a handled message out of the inbox now (dropping its receipt does it soon after).
    pub async fn mark_handled(&self, receipt: &Receipt) -> Result<(), OmemoError> {
        let id = receipt.0.id;
        self.with_store(move |store| store.inbox_remove(&[id]))
            .await??;
        Ok(())
    }

    /// Deletes what the outbox and inbox removals have queued, before a clean stop. Inbox
    /// messages whose receipts are dropped after this were not handled: they stay.
    pub(crate) fn flush_removals(&self) {
        self.acknowledged.flush();
        self.handled.stop();
    }

    /// XEP-0384 §rules: a message (not a key exchange) from a device we have no session with
    /// gets a fresh session from the device's bundle and an empty message (a key exchange)
    /// in answer, so that the sender's next messages decrypt. Nothing is lost silently: the
    /// undecryptable message itself is reported to the application.
    pub(crate) async fn rebuild_session(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        let Some(bundle) = self.fetch_bundle(jid, device).await? else {
            return Ok(());
        };
        let own = Arc::clone(&self.own);
        let policy = self.policy;
        let jid_owned = jid.clone();
        let built = self
            .with_store(move |store| -> Result<bool, OmemoError> {
                let jid = jid_owned.as_str();
                if store.load_session(NS, jid, device)?.is_some() {
                    return Ok(false);
                }
                let key = bundle.identity_key();
                match store.record_identity_key(NS, jid, device, &key, policy, now()) {
                    Ok(_) => {}
                    Err(StoreError::IdentityKeyChanged { .. }) => {
                        tracing::warn!(%jid, %device, "bundle identity key differs from the known one; not rebuilding");
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
                let Ok(session) = Session::initiate(
                    &own.identity,
                    &bundle,
                    bundle.choose_pre_key(&mut OsRng),
                    &mut OsRng,
                ) else {
                    return Ok(false);
                };
                store.store_session(NS, jid, device, &session.snapshot(), now())?;
                Ok(true)
            })
            .await??;
        if built {
            tracing::info!(%jid, %device, "built a new session after a message without one");
            self.send_empty(jid, device).await?;
        }
        Ok(())
    }

    /// Every known device of `jid` after a fresh fetch of its device list, with label,
    /// identity key (from its bundle) and trust level.
    pub async fn devices(&self, jid: &BareJid) -> Result<Vec<DeviceInfo>, OmemoError> {
        self.refresh_device_list(jid, true).await?;
        let jid_owned = jid.clone();
        let unknown: Vec<DeviceId> = self
            .with_store(move |store| store.devices(NS, jid_owned.as_str()))
            .await??
            .into_iter()
            .filter(|d| d.active && d.identity_key.is_none())
            .map(|d| d.device_id)
            .collect();
        for device in unknown {
            if jid == &self.own.jid && device == self.own.device_id {
                continue;
            }
            if let Some(bundle) = self.fetch_bundle(jid, device).await? {
                let jid_owned = jid.clone();
                let policy = self.policy;
                let result = self
                    .with_store(move |store| {
                        store.record_identity_key(
                            NS,
                            jid_owned.as_str(),
                            device,
                            &bundle.identity_key(),
                            policy,
                            now(),
                        )
                    })
                    .await?;
                if let Err(e) = result {
                    tracing::warn!(%jid, %device, error = %e, "cannot record the identity key");
                }
            }
        }
        // Now that the keys are known, a second look verifies the labels.
        self.refresh_device_list(jid, true).await?;
        let jid_owned = jid.clone();
        let own = Arc::clone(&self.own);
        let infos = self
            .with_store(move |store| -> Result<Vec<DeviceInfo>, StoreError> {
                let mut infos = Vec::new();
                for d in store.devices(NS, jid_owned.as_str())? {
                    let own_device = jid_owned == own.jid && d.device_id == own.device_id;
                    let identity_key = if own_device {
                        Some(own.identity.public_key())
                    } else {
                        d.identity_key
                    };
                    let trust = match (&identity_key, own_device) {
                        (_, true) => None,
                        (Some(key), false) => store.trust_level(jid_owned.as_str(), key)?,
                        (None, false) => None,
                    };
                    infos.push(DeviceInfo {
                        device: d.device_id,
                        label: d.label,
                        label_verified: d.label_verified,
                        active: d.active,
                        identity_key,
                        trust,
                        own: own_device,
                    });
                }
                Ok(infos)
            })
            .await??;
        Ok(infos)
    }

    /// Records a manual trust decision for the key of `jid` whose fingerprint (either form:
    /// the Curve25519 form XEP-0384 shows, or the Ed25519 key id QXmpp uses; spaces and case
    /// ignored) is `fingerprint`. Returns the resulting trust events (authenticating a key
    /// also demotes that contact's automatically trusted keys, TOAKAFA).
    pub async fn set_trust(
        &self,
        jid: &BareJid,
        fingerprint: &str,
        level: TrustLevel,
    ) -> Result<Vec<atm_trust::TrustEvent>, OmemoError> {
        let jid_owned = jid.clone();
        let fingerprint = fingerprint.to_owned();
        self.with_store(move |store| {
            set_trust_by_fingerprint(store, &jid_owned, &fingerprint, level)
                .map(|(_, events)| events)
        })
        .await?
    }

    /// Applies a received ATM trust message; problems are logged, never fatal.
    async fn apply_trust_message(
        &self,
        sender: &BareJid,
        sender_key: &IdentityPublicKey,
        element: &Element,
    ) {
        let message = match TrustMessage::try_from(element) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%sender, error = %e, "ignoring a malformed trust message");
                return;
            }
        };
        let keys = |list: &[Vec<u8>]| -> Vec<IdentityPublicKey> {
            list.iter()
                .filter_map(|k| IdentityPublicKey::from_bytes(k).ok())
                .collect()
        };
        let decisions: Vec<KeyOwnerDecisions> = message
            .key_owners
            .iter()
            .map(|owner| KeyOwnerDecisions {
                jid: owner.jid.to_string(),
                trust: keys(&owner.trust),
                distrust: keys(&owner.distrust),
            })
            .collect();
        let own = self.own.jid.clone();
        let sender_owned = sender.clone();
        let sender_key = *sender_key;
        match self
            .with_store(move |store| {
                store.apply_trust_message(
                    own.as_str(),
                    sender_owned.as_str(),
                    &sender_key,
                    &decisions,
                    now(),
                )
            })
            .await
        {
            Ok(Ok(outcome)) => {
                for event in &outcome.events {
                    tracing::info!(jid = %event.jid, key = %event.identity_key.fingerprint(), old = ?event.old_level, new = ?event.new_level, "trust changed by an ATM trust message");
                }
                if outcome.stored > 0 || outcome.refused > 0 {
                    tracing::info!(%sender, stored = outcome.stored, refused = outcome.refused, "ATM decisions kept for later or refused");
                }
                if outcome.dropped > 0 {
                    tracing::warn!(%sender, dropped = outcome.dropped, limit = atm_trust::MAX_PENDING_PER_SENDER, "too many ATM decisions waiting for this sender: the oldest were dropped");
                }
            }
            Ok(Err(e)) => tracing::warn!(%sender, error = %e, "applying a trust message failed"),
            Err(e) => tracing::warn!(%sender, error = %e, "applying a trust message failed"),
        }
    }

    /// Records a manual decision about a key and announces it with ATM trust messages
    /// (XEP-0450 §use-cases): to our own devices whose keys are Authenticated, and, when a
    /// contact's key is authenticated, our own authenticated and distrusted keys to that
    /// contact's Authenticated devices. Returns the trust events and how many trust messages
    /// went out.
    pub async fn decide_trust(
        &self,
        jid: &BareJid,
        fingerprint: &str,
        level: TrustLevel,
    ) -> Result<(Vec<atm_trust::TrustEvent>, usize), OmemoError> {
        let jid_owned = jid.clone();
        let fingerprint = fingerprint.to_owned();
        let (key, events) = self
            .with_store(move |store| {
                set_trust_by_fingerprint(store, &jid_owned, &fingerprint, level)
            })
            .await??;
        let authenticated = level == TrustLevel::Authenticated;
        let owner = KeyOwner {
            jid: jid.clone(),
            trust: if authenticated {
                vec![key.to_bytes().to_vec()]
            } else {
                Vec::new()
            },
            distrust: if authenticated {
                Vec::new()
            } else {
                vec![key.to_bytes().to_vec()]
            },
        };
        let mut sent = 0;
        let own_jid = self.own.jid.clone();
        if self
            .send_trust_message(
                &own_jid,
                TrustMessage {
                    key_owners: vec![owner],
                },
            )
            .await?
        {
            sent += 1;
        }
        if authenticated && jid != &own_jid {
            let own_for_store = own_jid.clone();
            let own_keys = self
                .with_store(move |store| store.identity_keys(own_for_store.as_str()))
                .await??;
            let pick = |wanted: TrustLevel| -> Vec<Vec<u8>> {
                own_keys
                    .iter()
                    .filter(|(_, level)| *level == wanted)
                    .map(|(k, _)| k.to_bytes().to_vec())
                    .collect()
            };
            let owner = KeyOwner {
                jid: own_jid.clone(),
                trust: pick(TrustLevel::Authenticated),
                distrust: pick(TrustLevel::ManuallyDistrusted),
            };
            if !(owner.trust.is_empty() && owner.distrust.is_empty())
                && self
                    .send_trust_message(
                        jid,
                        TrustMessage {
                            key_owners: vec![owner],
                        },
                    )
                    .await?
            {
                sent += 1;
            }
        }
        Ok((events, sent))
    }

    /// Sends a trust message to `to`'s Authenticated devices; false if there are none.
    async fn send_trust_message(
        &self,
        to: &BareJid,
        message: TrustMessage,
    ) -> Result<bool, OmemoError> {
        let is_authenticated: fn(TrustLevel) -> bool = |level| level == TrustLevel::Authenticated;
        match self
            .send_encrypted(to, vec![message.to_element()], is_authenticated)
            .await
        {
            Ok(report) => {
                tracing::info!(%to, devices = report.encrypted_for.len(), "sent an ATM trust message");
                Ok(true)
            }
            Err(OmemoError::NoTrustedDevice(_) | OmemoError::NoOmemo(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Refreshes a device list after a message from a device it does not contain.
    pub(crate) async fn note_sender_device(&self, jid: &BareJid, device: DeviceId) {
        let jid_owned = jid.clone();
        let known = self
            .with_store(move |store| {
                store
                    .device(NS, jid_owned.as_str(), device)
                    .map(|d| d.is_some_and(|d| d.active))
            })
            .await;
        if !matches!(known, Ok(Ok(true))) {
            // A sender that keeps writing from an unlisted device (or has no list at all)
            // must not turn every message into a PEP request.
            let recently = self
                .device_lists_fetched
                .lock()
                .await
                .get(jid)
                .is_some_and(|t| t.elapsed() < UNLISTED_SENDER_REFRESH);
            if recently {
                return;
            }
            if let Err(e) = self.refresh_device_list(jid, true).await {
                tracing::debug!(error = %e, "device list refresh failed");
            }
        }
    }
}

/// Records a manual trust decision for the key of `jid` whose fingerprint (either form:
/// the Curve25519 form XEP-0384 shows, or the Ed25519 key id QXmpp uses; spaces, colons and
/// case ignored) is `fingerprint`, directly in the store (no connection needed).
pub fn set_trust_by_fingerprint(
    store: &mut Store,
    jid: &BareJid,
    fingerprint: &str,
    level: TrustLevel,
) -> Result<(IdentityPublicKey, Vec<atm_trust::TrustEvent>), OmemoError> {
    let wanted: String = fingerprint
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .flat_map(char::to_lowercase)
        .collect();
    let mut keys: Vec<IdentityPublicKey> = store
        .identity_keys(jid.as_str())?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.extend(
        store
            .devices(NS, jid.as_str())?
            .into_iter()
            .filter_map(|d| d.identity_key),
    );
    let key = keys
        .into_iter()
        .find(|k| k.fingerprint().replace(' ', "") == wanted || k.key_id_hex() == wanted)
        .ok_or_else(|| OmemoError::UnknownKey(jid.clone()))?;
    let events = store.set_trust_level(jid.as_str(), &key, level, now())?;
    Ok((key, events))
}

struct DecryptOutcome {
    envelope: Option<sce::Envelope>,
    e2ee: E2eeMetadata,
    heartbeat_due: bool,
    used_pre_key: bool,
    /// The message's inbox id, when it was kept.
    inbox_id: Option<i64>,
}

/// The parts of an incoming stanza a decrypted message keeps.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    from: Jid,
    id: Option<String>,
    type_: MessageType,
}

const MESSAGE_TYPES: [(MessageType, &str); 5] = [
    (MessageType::Chat, "chat"),
    (MessageType::Normal, "normal"),
    (MessageType::Groupchat, "groupchat"),
    (MessageType::Headline, "headline"),
    (MessageType::Error, "error"),
];

fn message_type_str(type_: &MessageType) -> &'static str {
    MESSAGE_TYPES
        .iter()
        .find(|(t, _)| t == type_)
        .map_or("normal", |(_, name)| name)
}

fn message_type_from_str(name: &str) -> Option<MessageType> {
    MESSAGE_TYPES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(t, _)| t.clone())
}

/// The receive path inside the store lock: decrypt, check, then commit in one transaction;
/// with `keep`, a message with content is kept in the inbox by that same commit.
fn decrypt_message(
    store: &mut Store,
    own: &OwnIdentity,
    policy: TrustPolicy,
    encrypted: &EncryptedMessage,
    sender: &BareJid,
    recipient: &BareJid,
    keep: Option<&Header>,
) -> Result<DecryptOutcome, ReceiveError> {
    let key = encrypted
        .key_for(&own.jid, own.device_id)
        .ok_or(ReceiveError::NotForUs)?;
    let message = KeyMessage::from_bytes(&key.data).map_err(ReceiveError::Decode)?;
    let sid = encrypted.sid;
    let (current_blob, previous_blob) = match store
        .load_sessions(NS, sender.as_str(), sid)
        .map_err(ReceiveError::Store)?
    {
        Some((current, previous)) => (Some(current), previous),
        None => (None, None),
    };
    let current = current_blob
        .as_ref()
        .map(|blob| Session::restore(blob))
        .transpose()
        .map_err(ReceiveError::Snapshot)?;
    // The previous session is read only when needed; one that no longer restores only helps
    // less.
    let previous = |blob: Option<&Vec<u8>>| blob.and_then(|blob| Session::restore(blob).ok());
    let built_by = |session: &Option<Session>| match (&message, session) {
        (KeyMessage::KeyExchange(kex), Some(session)) => session.was_built_by(kex),
        _ => false,
    };

    // `kept` is the state stored as the previous session after this message.
    let (session, kept, decrypted, key_exchange, used_pre_key) = match (&message, current) {
        // A key exchange that built neither session: a new session; the current one is kept
        // as the previous, for messages the peer sent on it (both sides started a session at
        // the same moment, or messages still on their way).
        (KeyMessage::KeyExchange(kex), current)
            if !built_by(&current) && !built_by(&previous(previous_blob.as_deref())) =>
        {
            let spk = store
                .signed_pre_key(kex.signed_pre_key_id())
                .map_err(ReceiveError::Store)?
                .ok_or(ReceiveError::UnknownPreKey)?;
            let pk = store
                .pre_key(kex.pre_key_id())
                .map_err(ReceiveError::Store)?
                .ok_or(ReceiveError::UnknownPreKey)?;
            let (session, decrypted) = Session::respond(&own.identity, &spk, &pk, kex, &mut OsRng)
                .map_err(ReceiveError::KeyExchange)?;
            let kept = current_blob.or(previous_blob);
            (session, kept, decrypted, true, Some(kex.pre_key_id()))
        }
        (_, Some(mut current)) => match current.decrypt(&message, &mut OsRng) {
            Ok(decrypted) => (current, previous_blob, decrypted, false, None),
            Err(DecryptionError::Duplicate) => {
                return Err(ReceiveError::Decryption(DecryptionError::Duplicate))
            }
            Err(error) => {
                // Perhaps a message on the previous session: then that one becomes current.
                let Some(mut previous) = previous(previous_blob.as_deref()) else {
                    return Err(ReceiveError::Decryption(error));
                };
                match previous.decrypt(&message, &mut OsRng) {
                    Ok(decrypted) => {
                        tracing::info!(%sender, device = %sid, "message on the previous session; it is the current one again");
                        (previous, current_blob, decrypted, false, None)
                    }
                    Err(DecryptionError::Duplicate) => {
                        return Err(ReceiveError::Decryption(DecryptionError::Duplicate))
                    }
                    Err(_) => return Err(ReceiveError::Decryption(error)),
                }
            }
        },
        (_, None) => return Err(ReceiveError::NoSession),
    };

    // The payload and its envelope must check out before anything is stored.
    let (envelope, envelope_bytes) = match &encrypted.payload {
        Some(ciphertext) => {
            let bytes = payload::decrypt(ciphertext, decrypted.plaintext())
                .map_err(ReceiveError::Payload)?;
            let envelope = sce::Envelope::from_bytes(&bytes).map_err(ReceiveError::Envelope)?;
            envelope
                .verify_affixes(sender, recipient)
                .map_err(ReceiveError::Envelope)?;
            (Some(envelope), Some(bytes))
        }
        None => (None, None),
    };

    let identity_key = session.peer_identity_key();
    let recorded =
        match store.record_identity_key(NS, sender.as_str(), sid, &identity_key, policy, now()) {
            Ok(recorded) => recorded,
            Err(StoreError::IdentityKeyChanged { .. }) => {
                return Err(ReceiveError::IdentityChanged)
            }
            Err(e) => return Err(ReceiveError::Store(e)),
        };
    let state = session.snapshot();
    let commit = DecryptionCommit {
        namespace: NS,
        jid: sender.as_str(),
        device_id: sid,
        session_state: &state,
        previous_state: kept.as_deref().map(Vec::as_slice),
        used_pre_key,
        now: now(),
    };
    let inbox_id = match (keep, &envelope_bytes) {
        (Some(header), Some(bytes)) => {
            let from = header.from.to_string();
            let kept = NewInboxMessage {
                identity_key: &identity_key,
                from: &from,
                stanza_id: header.id.as_deref(),
                message_type: message_type_str(&header.type_),
                envelope: bytes,
                key_exchange,
            };
            let (_, id) = store
                .commit_decryption_kept(&commit, &kept)
                .map_err(ReceiveError::Store)?;
            Some(id)
        }
        _ => {
            store
                .commit_decryption(&commit)
                .map_err(ReceiveError::Store)?;
            None
        }
    };
    Ok(DecryptOutcome {
        inbox_id,
        envelope,
        e2ee: E2eeMetadata {
            sender: sender.clone(),
            device: sid,
            identity_key,
            trust: recorded.level,
            key_exchange,
        },
        heartbeat_due: decrypted.heartbeat_due(),
        used_pre_key: used_pre_key.is_some(),
    })
}

/// The send path inside the store lock: sessions for new devices, trust filter, one payload,
/// one ratchet step per device, one commit.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
fn encrypt_for_devices(
    store: &mut Store,
    own: &OwnIdentity,
    policy: TrustPolicy,
    accept: fn(TrustLevel) -> bool,
    recipients: &[BareJid],
    bundles: Vec<(BareJid, DeviceId, Bundle)>,
    envelope: &[u8],
    to: &BareJid,
    stanza_id: &str,
    answers: &[i64],
) -> Result<(Message, SendReport, i64), OmemoError> {
    let t = now();
    let mut report = SendReport::default();
    let mut sessions: Vec<(BareJid, DeviceId, Session)> = Vec::new();
    let mut bundles: HashMap<(BareJid, DeviceId), Bundle> = bundles
        .into_iter()
        .map(|(jid, device, bundle)| ((jid, device), bundle))
        .collect();

    for jid in recipients {
        let skip = (jid == &own.jid).then_some(own.device_id);
        let (chosen, over_limit) = chosen_devices(store, jid, skip)?;
        if over_limit > 0 {
            tracing::debug!(%jid, over_limit, "more devices than one message is encrypted for");
            report.over_limit += over_limit;
        }
        for (id, blob) in chosen {
            let session = match blob {
                Some(blob) => match Session::restore(&blob) {
                    Ok(session) => Some(session),
                    Err(e) => {
                        report
                            .skipped
                            .push((jid.clone(), id, format!("stored session: {e}")));
                        continue;
                    }
                },
                None => None,
            };
            let session = match session {
                Some(session) => session,
                None => {
                    let Some(bundle) = bundles.remove(&(jid.clone(), id)) else {
                        report
                            .skipped
                            .push((jid.clone(), id, "no bundle".to_owned()));
                        continue;
                    };
                    match Session::initiate(
                        &own.identity,
                        &bundle,
                        bundle.choose_pre_key(&mut OsRng),
                        &mut OsRng,
                    ) {
                        Ok(session) => session,
                        Err(e) => {
                            report
                                .skipped
                                .push((jid.clone(), id, format!("session: {e}")));
                            continue;
                        }
                    }
                }
            };
            let key = session.peer_identity_key();
            let level = match store.record_identity_key(NS, jid.as_str(), id, &key, policy, t) {
                Ok(recorded) => recorded.level,
                Err(StoreError::IdentityKeyChanged { .. }) => {
                    report
                        .skipped
                        .push((jid.clone(), id, "identity key changed".to_owned()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !accept(level) {
                report
                    .skipped
                    .push((jid.clone(), id, format!("trust level {level:?}")));
                continue;
            }
            sessions.push((jid.clone(), id, session));
        }
    }
    if !sessions.iter().any(|(jid, _, _)| jid == to) {
        return Err(OmemoError::NoTrustedDevice(to.clone()));
    }

    let (ciphertext, key_material) = payload::encrypt(envelope, &mut OsRng);
    let mut keys: Vec<RecipientKeys> = Vec::new();
    let mut states = Vec::with_capacity(sessions.len());
    for (jid, id, mut session) in sessions {
        let key = match session.encrypt(key_material.as_bytes()) {
            Ok(key) => key,
            Err(e) => {
                report
                    .skipped
                    .push((jid.clone(), id, format!("encrypt: {e}")));
                continue;
            }
        };
        let entry = EncryptedKey {
            rid: id,
            kex: key.is_key_exchange(),
            data: key.to_bytes(),
        };
        match keys.iter_mut().find(|k| k.jid == jid) {
            Some(group) => group.keys.push(entry),
            None => keys.push(RecipientKeys {
                jid: jid.clone(),
                keys: vec![entry],
            }),
        }
        report.encrypted_for.push((jid.clone(), id));
        states.push((jid, id, session.snapshot()));
    }
    let updates: Vec<SessionUpdate<'_>> = states
        .iter()
        .map(|(jid, id, state)| SessionUpdate {
            jid: jid.as_str(),
            device_id: *id,
            session_state: state,
        })
        .collect();
    let encrypted = EncryptedMessage {
        sid: own.device_id,
        keys,
        payload: Some(ciphertext),
    };
    let message = outgoing_message(to, &encrypted, stanza_id);
    let text = stanza_text(&message)?;
    let outbox_id = store.commit_encryption_queued(NS, &updates, t, &text, answers)?;
    Ok((message, report, outbox_id))
}

/// Counts one more send of an outbox message; drops it, with a warning, once it was sent more
/// than [`MAX_SENDS`] times. `None` when it is gone (acknowledged, expired, dropped) or the
/// store failed.
async fn count_send(store: Arc<Mutex<Store>>, outbox_id: i64) -> Option<u32> {
    let counted = tokio::task::spawn_blocking(move || {
        let mut store = lock(&store);
        let sends = store.outbox_count_send(outbox_id)?;
        if sends.is_some_and(|n| n > MAX_SENDS) {
            store.outbox_remove(&[outbox_id])?;
        }
        Ok::<_, StoreError>(sends)
    })
    .await;
    match counted {
        Ok(Ok(Some(sends))) if sends > MAX_SENDS => {
            tracing::warn!(
                outbox_id,
                sends = MAX_SENDS,
                "dropping an outgoing message the server never acknowledged (it may have closed \
                 the stream for it)"
            );
            None
        }
        Ok(Ok(sends)) => sends,
        Ok(Err(e)) => {
            tracing::warn!(outbox_id, error = %e, "cannot count a send of an outbox message");
            None
        }
        Err(_) => None,
    }
}

/// A device's bundle, fetched for a message.
type FetchedBundle = (BareJid, DeviceId, Bundle);

/// Whether two bundles offer the same keys (pre-keys in any order).
fn same_bundle(a: &Bundle, b: &Bundle) -> bool {
    let pre_keys = |bundle: &Bundle| {
        let mut keys: Vec<(u32, [u8; 32])> = bundle
            .pre_keys()
            .iter()
            .map(|(id, key)| (id.get(), key.to_bytes()))
            .collect();
        keys.sort_unstable();
        keys
    };
    let parts = |bundle: &Bundle| {
        (
            bundle.identity_key().to_bytes(),
            bundle.signed_pre_key_id().get(),
            bundle.signed_pre_key().to_bytes(),
            bundle.signed_pre_key_signature().to_bytes(),
        )
    };
    let same = parts(a) == parts(b) && pre_keys(a) == pre_keys(b);
    if !same {
        tracing::debug!(
            identity = a.identity_key() == b.identity_key(),
            signed_pre_key = a.signed_pre_key_id() == b.signed_pre_key_id(),
            signature =
                a.signed_pre_key_signature().to_bytes() == b.signed_pre_key_signature().to_bytes(),
            pre_keys = pre_keys(a).len(),
            published_pre_keys = pre_keys(b).len(),
            "our bundle changed"
        );
    }
    same
}

/// The listed devices of `jid` (without `skip`) a message is encrypted for, each with its
/// stored session if there is one: those with a session first, at most
/// [`MAX_DEVICES_PER_MESSAGE`]. Also returns how many were left out.
#[allow(clippy::type_complexity)] // a list of pairs, named at its one use
fn chosen_devices(
    store: &Store,
    jid: &BareJid,
    skip: Option<DeviceId>,
) -> Result<(Vec<(DeviceId, Option<zeroize::Zeroizing<Vec<u8>>>)>, usize), StoreError> {
    let mut with_session = Vec::new();
    let mut without = Vec::new();
    for device in store.active_devices(NS, jid.as_str())? {
        let id = device.device_id;
        if Some(id) == skip {
            continue;
        }
        match store.load_session(NS, jid.as_str(), id)? {
            Some(blob) => with_session.push((id, Some(blob))),
            None => without.push((id, None)),
        }
    }
    with_session.extend(without);
    let over_limit = with_session.len().saturating_sub(MAX_DEVICES_PER_MESSAGE);
    with_session.truncate(MAX_DEVICES_PER_MESSAGE);
    Ok((with_session, over_limit))
}

/// The `<message>` that carries `encrypted` to `to`.
fn outgoing_message(to: &BareJid, encrypted: &EncryptedMessage, stanza_id: &str) -> Message {
    let mut message = hints::encrypted_message(Jid::from(to.clone()), MessageType::Chat, encrypted);
    message.id = Some(xmpp_parsers::message::Id(stanza_id.to_owned()));
    message
}

/// A stanza as kept in the outbox (and sent), refused if a server would refuse it.
fn stanza_text(message: &Message) -> Result<String, OmemoError> {
    let text = String::from(&Element::from(message.clone()));
    check_size(text.len())?;
    Ok(text)
}

/// Refuses a stanza of `bytes` bytes if it is over [`MAX_STANZA_BYTES`].
pub(crate) fn check_size(bytes: usize) -> Result<(), OmemoError> {
    if bytes > MAX_STANZA_BYTES {
        return Err(OmemoError::StanzaTooLarge {
            bytes,
            limit: MAX_STANZA_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_trust::ListedDevice;

    #[test]
    fn a_message_is_encrypted_for_a_bounded_number_of_devices_sessions_first() {
        let mut store = Store::open_in_memory().unwrap();
        let bob = BareJid::new("bob@example.org").unwrap();
        let extra = 50;
        let count = u32::try_from(MAX_DEVICES_PER_MESSAGE + extra).unwrap();
        let listed: Vec<ListedDevice> = (1..=count)
            .map(|id| ListedDevice {
                device_id: DeviceId::new(id).unwrap(),
                label: None,
                label_verified: false,
            })
            .collect();
        store
            .update_device_list(NS, bob.as_str(), &listed, 0)
            .unwrap();
        // Sessions with the three highest ids, which sort last by id.
        let with_session: Vec<DeviceId> = (count - 2..=count)
            .map(|id| DeviceId::new(id).unwrap())
            .collect();
        for device in &with_session {
            store
                .store_session(NS, bob.as_str(), *device, b"state", 0)
                .unwrap();
        }
        let skip = DeviceId::new(1).unwrap();
        let (chosen, over_limit) = chosen_devices(&store, &bob, Some(skip)).unwrap();
        assert_eq!(chosen.len(), MAX_DEVICES_PER_MESSAGE);
        assert_eq!(over_limit, extra - 1);
        let first: Vec<DeviceId> = chosen.iter().take(3).map(|(id, _)| *id).collect();
        assert_eq!(first, with_session);
        assert!(chosen[..3].iter().all(|(_, session)| session.is_some()));
        assert!(chosen[3..].iter().all(|(_, session)| session.is_none()));
        assert!(chosen.iter().all(|(id, _)| *id != skip));
    }

    #[test]
    fn bundles_compare_by_their_keys_not_the_order_of_their_pre_keys() {
        let identity = IdentityKeyPair::from_seed(&[3; 32]);
        let spk = omemo_crypto::SignedPreKey::generate(
            omemo_crypto::SignedPreKeyId::new(1).unwrap(),
            &identity,
            0,
            &mut OsRng,
        );
        let keys: Vec<omemo_crypto::PreKey> = (1..=3)
            .map(|id| {
                omemo_crypto::PreKey::generate(omemo_crypto::PreKeyId::new(id).unwrap(), &mut OsRng)
            })
            .collect();
        let bundle = Bundle::from_own_keys(&identity, &spk, &keys).unwrap();
        let reversed: Vec<&omemo_crypto::PreKey> = keys.iter().rev().collect();
        let same = Bundle::from_own_keys(&identity, &spk, reversed).unwrap();
        assert!(same_bundle(&bundle, &same));
        let fewer = Bundle::from_own_keys(&identity, &spk, &keys[..2]).unwrap();
        assert!(!same_bundle(&bundle, &fewer));
    }
}
