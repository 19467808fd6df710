//! The OMEMO manager: drives `omemo-crypto`, `omemo-pep` and the `atm-trust` store over a
//! [`Connection`] (XEP-0384 §usecases), in OMEMO 2 and legacy OMEMO
//! (`eu.siacs.conversations.axolotl`) from one device: one device id and one identity key
//! in both namespaces, with pre-keys, signed pre-keys and sessions per namespace.
//!
//! The protocol core is the `engine` (crate-private): synchronous steps on
//! the store that take the time and a random source as arguments. Every ratchet step and its
//! persistence happen in one such step, under the store lock, ending with one SQLite
//! transaction; a message reaches the application only after that commit, and a stanza goes
//! out only after the sending states are committed. The other files are the network side:
//!
//! - `errors`, `types`: what the manager returns;
//! - `publish`: our device-list entry and bundle;
//! - `devices`: contacts' device lists and bundles;
//! - `send`, `receive`: the two message paths, with empty messages and session rebuilds;
//! - `outbox`, `inbox`: what waits for the server's acknowledgement or the program;
//! - `trust`: device listings, trust decisions and trust messages (XEP-0450);
//! - `versions`: each version's PEP nodes, so that the steps above are written once.

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
    Omemo2, ProtocolVersion,
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

/// The window in which messages from devices missing from their sender's list trigger at
/// most [`UNLISTED_DEVICES_PER_WINDOW`] fetches of that list, one per device id.
const UNLISTED_SENDER_REFRESH: Duration = Duration::from_secs(30);
/// Distinct unlisted device ids of one JID that may each trigger a fetch within
/// [`UNLISTED_SENDER_REFRESH`]: a new device of a known contact is seen at once, a sender
/// inventing device ids gets no more fetches than this.
const UNLISTED_DEVICES_PER_WINDOW: usize = 4;

mod devices;
mod engine;
mod errors;
mod inbox;
mod outbox;
mod publish;
mod receive;
mod send;
mod store_thread;
mod trust;
mod types;
mod versions;

pub use errors::{OmemoError, ReceiveError};
pub use trust::{device_infos, set_trust_by_fingerprint};
pub(crate) use types::Received;
pub use types::{
    DecryptedMessage, DeviceInfo, E2eeMetadata, OwnIdentity, Receipt, Responder, SendReport,
};

use devices::*;
pub(crate) use engine::check_size;
use engine::*;
pub(crate) use receive::find_encrypted;
use types::{ProgramLoad, ReceiptInner};
pub(crate) use versions::in_version;
use versions::Pep;

/// A device of a JID in one namespace.
type VersionedDevice = (Namespace, BareJid, DeviceId);

/// The OMEMO manager. Cheap to share behind an `Arc`.
pub struct OmemoManager {
    connection: Connection,
    store: Arc<Mutex<Store>>,
    /// Runs [`OmemoManager::with_store`] calls, grouping their commits under load (`None`
    /// if the thread could not be started: then each call runs on a blocking thread).
    store_thread: Option<store_thread::StoreThread>,
    own: Arc<OwnIdentity>,
    policy: TrustPolicy,
    device_lists_fetched: AsyncMutex<HashMap<(Namespace, BareJid), Instant>>,
    /// Per JID, the window's start and the unlisted device ids that triggered a fetch in it.
    unlisted_senders: Mutex<HashMap<BareJid, (Instant, Vec<DeviceId>)>>,
    /// Devices whose bundle could not be fetched: failures so far and when to try again.
    bundle_failures: Mutex<HashMap<VersionedDevice, (u32, Instant)>>,
    /// Serialises bundle republication.
    publishing: AsyncMutex<()>,
    /// Devices with an empty message (confirmation, heartbeat) pending, per namespace.
    confirming: Mutex<std::collections::HashSet<VersionedDevice>>,
    /// Pending republications after key exchanges, per namespace: the first and the latest
    /// of them.
    republish: Mutex<HashMap<Namespace, (Instant, Instant)>>,
    /// Serialises outbox resends.
    resending: AsyncMutex<()>,
    next_id: std::sync::atomic::AtomicU64,
    /// Distinguishes this process's stanza ids from an earlier one's (outbox resends).
    id_tag: u32,
    /// Outbox messages the server acknowledged, to delete.
    acknowledged: Arc<Removals>,
    /// Inbox messages the program has handled, to delete.
    handled: Arc<Removals>,
    /// Answers messages in their decryption's transaction (see [`Responder`]).
    responder: Option<Responder>,
    /// Messages with the program, per sender.
    with_program: Arc<ProgramLoad>,
    /// The queue of answers given at once, sent in order by a task of their own (see
    /// [`OmemoManager::send_answered`]).
    answered: std::sync::OnceLock<tokio::sync::mpsc::Sender<(i64, Message)>>,
}

/// Answers given at once waiting for the connection; while it is full, decryption waits.
const ANSWERED_QUEUE: usize = 256;

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

/// Notes that a device list (`jid`'s, in one namespace) was fetched now, keeping the map
/// bounded.
fn note_fetched<K: std::hash::Hash + Eq + Clone>(fetched: &mut HashMap<K, Instant>, jid: K) {
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
        // Each namespace has its own signed pre-key and pre-keys under the one identity
        // (LEGACY-NOTES §2); a device created before legacy existed gets its legacy keys here.
        for ns in Namespace::ALL {
            let needs_rotation = store.current_signed_pre_key_for(ns)?.is_none_or(|spk| {
                t.saturating_sub(spk.created_at()) > SIGNED_PRE_KEY_ROTATION.as_secs()
            });
            if needs_rotation {
                store.rotate_signed_pre_key_for(ns, &mut OsRng, t)?;
            }
            store.prune_signed_pre_keys_for(ns, SIGNED_PRE_KEY_GRACE.as_secs(), t)?;
            store.remove_used_pre_keys_for(ns, USED_PRE_KEY_GRACE.as_secs(), t)?;
            store.ensure_pre_keys_for(ns, PRE_KEY_TARGET, &mut OsRng, t)?;
        }
        prune_removed_devices(&mut store)?;
        let own = OwnIdentity {
            jid: jid.clone(),
            device_id: device.device_id(),
            identity: omemo_crypto::hazmat::identity_from_seed(
                &omemo_crypto::hazmat::identity_seed(device.identity()),
            ),
            label: label.to_owned(),
        };
        Ok((store, own))
    }

    /// Wraps an opened store and a connection, and starts the store's thread.
    pub fn new(
        connection: Connection,
        store: Store,
        own: OwnIdentity,
        policy: TrustPolicy,
    ) -> Self {
        let store = Arc::new(Mutex::new(store));
        let acknowledged = Arc::new(Removals::new(
            Arc::clone(&store),
            Store::outbox_remove,
            "acknowledged messages from the outbox",
        ));
        let handled = Arc::new(Removals::new(
            Arc::clone(&store),
            Store::inbox_remove,
            "handled messages from the inbox",
        ));
        let store_thread = match store_thread::StoreThread::start(
            Arc::downgrade(&store),
            vec![Arc::clone(&acknowledged), Arc::clone(&handled)],
        ) {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the store thread; using blocking tasks");
                None
            }
        };
        Self {
            connection,
            store_thread,
            acknowledged,
            handled,
            store,
            own: Arc::new(own),
            policy,
            device_lists_fetched: AsyncMutex::new(HashMap::new()),
            unlisted_senders: Mutex::new(HashMap::new()),
            bundle_failures: Mutex::new(HashMap::new()),
            publishing: AsyncMutex::new(()),
            republish: Mutex::new(HashMap::new()),
            confirming: Mutex::new(std::collections::HashSet::new()),
            resending: AsyncMutex::new(()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            id_tag: OsRng.next_u32(),
            responder: None,
            with_program: Arc::default(),
            answered: std::sync::OnceLock::new(),
        }
    }

    /// Lets `responder` answer decrypted messages in the transaction that commits their
    /// decryption: one commit, one sync and one trip to the store's thread for the message
    /// and its answer, instead of three trips and two syncs when the program answers with
    /// [`OmemoManager::send_answer`]. After that commit the answer is queued for the
    /// connection (in order with the other answers given this way) and the message handed
    /// over with [`DecryptedMessage::answered`] set.
    ///
    /// It answers only where that needs nothing from the network and changes nothing the
    /// program's own answer would not: a live message to us from another account, with
    /// content and no trust messages, both accounts' device lists of its version fresh, a
    /// session with every device the answer goes to, and none of the sender's earlier
    /// messages still with the program. Any other message is handed over as before, for the
    /// program to answer.
    #[must_use]
    pub fn with_responder(mut self, responder: Responder) -> Self {
        self.responder = Some(responder);
        self
    }

    /// Our device.
    pub fn own(&self) -> &OwnIdentity {
        &self.own
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Runs one [`Engine`] step on the store (see [`OmemoManager::with_store`]) with our
    /// device, the trust policy, the current time and the operating system's random source.
    async fn with_engine<T, F>(&self, f: F) -> Result<T, OmemoError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(Engine<'a, OsRng>) -> T + Send + 'static,
    {
        let own = Arc::clone(&self.own);
        let policy = self.policy;
        self.with_store(move |store| {
            f(Engine {
                store,
                own: &own,
                policy,
                now: now(),
                rng: &mut OsRng,
            })
        })
        .await
    }

    /// Runs `f` with the store on the store's thread. The result comes back once what `f`
    /// changed is committed: calls that queue up while the thread is busy share one commit
    /// (see [`Store::begin_group`]); if that commit fails, they all get an error.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, OmemoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        if let Some(thread) = &self.store_thread {
            return thread.call(f).await;
        }
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|_| OmemoError::Task)
    }

    /// Store calls queued behind the one running (a measure of load: under a burst of
    /// several senders' messages, the calls waiting at one moment share one commit).
    pub fn store_calls_waiting(&self) -> usize {
        self.store_thread
            .as_ref()
            .map_or(0, store_thread::StoreThread::waiting)
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
}
