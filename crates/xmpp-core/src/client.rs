//! The small API the programs use: connect an account with OMEMO 2 set up, send encrypted
//! content, and receive a stream of [`ClientEvent`]s.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use atm_trust::TrustPolicy;
use omemo_crypto::DeviceId;
use omemo_pep::{hints, pep};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Lang, Message, MessageType};
use xmpp_parsers::minidom::Element;

use crate::connection::{
    Capabilities, CarbonDirection, ConnectError, Connection, ConnectionConfig, Event, Events,
    OMEMO_DEVICES_NOTIFY,
};
use crate::fair::{FairQueue, Full};
use crate::omemo::{
    DecryptedMessage, OmemoError, OmemoManager, ReceiveError, Received, SendReport,
};
use crate::settings::{AccountSettings, TrustPolicySetting};

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Opening the database or setting up OMEMO failed.
    #[error(transparent)]
    Omemo(#[from] OmemoError),
    /// Connecting or logging in failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// What the client reports to the program.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Connected (again). `resumed` is true when stream management resumed the session.
    Online {
        /// Whether the previous session was resumed without loss.
        resumed: bool,
    },
    /// The connection was lost; the client reconnects by itself.
    Offline,
    /// An OMEMO message was decrypted and its state committed.
    Encrypted(Box<DecryptedMessage>),
    /// A message that was not OMEMO-encrypted.
    Plaintext {
        /// The sender.
        from: Jid,
        /// The stanza type.
        type_: MessageType,
        /// The body text.
        body: String,
    },
    /// An OMEMO message that could not be decrypted (duplicates are not reported).
    Undecryptable {
        /// The sender.
        from: Jid,
        /// The sender device, when the header could be read.
        device: Option<DeviceId>,
        /// Why.
        reason: String,
    },
}

/// A connected account with OMEMO 2.
pub struct Client {
    manager: Arc<OmemoManager>,
    /// The dispatcher (connection events into the fair queue) and the worker (decryption).
    tasks: [JoinHandle<()>; 2],
}

/// The program's end of a client: events in order, `None` once the client stopped. Read it
/// continuously; while it is full, inbound messages wait in bounded per-sender queues and
/// what does not fit there is dropped.
pub type ClientEvents = mpsc::Receiver<ClientEvent>;

/// Events decrypted ahead of the program.
const APP_QUEUE: usize = 32;
/// Inbound messages one sender may have waiting for decryption.
const PER_SENDER_QUEUE: usize = 128;
/// Inbound messages waiting for decryption, all senders together.
const INBOUND_QUEUE: usize = 2048;

/// Connection events waiting for the worker.
struct Inbound {
    state: Mutex<InboundState>,
    ready: Notify,
}

struct InboundState {
    /// Online/offline changes, served before any message.
    control: VecDeque<Event>,
    /// Messages (and carbons, under our own JID), served round-robin by sender.
    messages: FairQueue<BareJid, Event>,
    /// Senders whose queue is full, with the number of messages dropped since it filled.
    flooding: HashMap<BareJid, u64>,
    /// Messages dropped because all queues together were full.
    overflow: u64,
    /// The connection's event stream ended.
    closed: bool,
}

impl Inbound {
    fn new() -> Self {
        Self {
            state: Mutex::new(InboundState {
                control: VecDeque::new(),
                messages: FairQueue::new(PER_SENDER_QUEUE, INBOUND_QUEUE),
                flooding: HashMap::new(),
                overflow: 0,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboundState> {
        // The state stays consistent across a panic in another holder: every update is a
        // single push or pop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sorts connection events into the inbound queues as fast as they arrive, so that the
/// connection never waits for decryption and a flood is cut at the queue bounds.
async fn dispatch(mut events: Events, inbound: Arc<Inbound>, own: BareJid) {
    while let Some(event) = events.recv().await {
        let sender = match &event {
            Event::Message(message) => message
                .from
                .as_ref()
                .map_or_else(|| own.clone(), Jid::to_bare),
            Event::Carbon { .. } => own.clone(),
            Event::Online { .. } | Event::Offline => {
                inbound.lock().control.push_back(event);
                inbound.ready.notify_one();
                continue;
            }
            Event::Presence(_) => continue,
        };
        let mut state = inbound.lock();
        match state.messages.push(sender.clone(), event) {
            Ok(()) => {}
            Err(Full::Sender) => {
                let dropped = state.flooding.entry(sender.clone()).or_insert(0);
                if *dropped == 0 {
                    tracing::warn!(
                        %sender,
                        queued = PER_SENDER_QUEUE,
                        "inbound flood: this sender's queue is full; dropping its new messages"
                    );
                }
                *dropped += 1;
            }
            Err(Full::Total) => {
                if state.overflow == 0 {
                    tracing::warn!(
                        queued = INBOUND_QUEUE,
                        "inbound queue full: dropping new messages"
                    );
                }
                state.overflow += 1;
            }
        }
        drop(state);
        inbound.ready.notify_one();
    }
    inbound.lock().closed = true;
    inbound.ready.notify_one();
}

/// Takes events from the inbound queues (control first, then senders in turn), decrypts and
/// hands them to the program; waits while the program's queue is full.
async fn work(manager: Arc<OmemoManager>, inbound: Arc<Inbound>, tx: mpsc::Sender<ClientEvent>) {
    let mut first_online = true;
    loop {
        let next = {
            let mut state = inbound.lock();
            if let Some(event) = state.control.pop_front() {
                Some(event)
            } else if let Some((sender, event)) = state.messages.pop() {
                if state.messages.queued(&sender) == 0 {
                    if let Some(dropped) = state.flooding.remove(&sender) {
                        tracing::warn!(%sender, dropped, "inbound flood over: messages were dropped");
                    }
                }
                if state.messages.len() == 0 && state.overflow > 0 {
                    tracing::warn!(
                        dropped = state.overflow,
                        "inbound queue drained: messages were dropped while it was full"
                    );
                    state.overflow = 0;
                }
                Some(event)
            } else if state.closed {
                break;
            } else {
                None
            }
        };
        match next {
            Some(event) => {
                if !handle_event(&manager, event, &tx, &mut first_online).await {
                    break;
                }
            }
            None => inbound.ready.notified().await,
        }
    }
}

fn policy(setting: TrustPolicySetting) -> TrustPolicy {
    match setting {
        TrustPolicySetting::Toakafa => TrustPolicy::Toakafa,
        TrustPolicySetting::Manual => TrustPolicy::Manual,
    }
}

impl Client {
    /// Opens the database, connects, publishes our device and bundle, and starts handling
    /// incoming stanzas.
    pub async fn start(settings: &AccountSettings) -> Result<(Client, ClientEvents), ClientError> {
        let db = settings.db.clone();
        let jid = settings.jid.clone();
        let label = settings.label.clone();
        let (store, own) =
            tokio::task::spawn_blocking(move || OmemoManager::open_store(&db, &jid, &label))
                .await
                .map_err(|_| OmemoError::Task)??;
        tracing::info!(
            jid = %own.jid,
            device = %own.device_id,
            fingerprint = %own.identity.public_key().fingerprint(),
            "OMEMO device loaded"
        );

        let mut config = ConnectionConfig::from_settings(settings);
        config.capabilities = Capabilities::default().with_feature(OMEMO_DEVICES_NOTIFY);
        // One resource per OMEMO device, the same after a restart: when the process died
        // without closing its stream, binding the same resource replaces the stale session
        // at once, and the server moves the messages it could not deliver there to offline
        // storage for us (a random resource would leave them to bounce when it times out).
        config.resource = Some(format!("omemo-{}", own.device_id));
        let (connection, events) = Connection::connect(config).await?;
        let manager = Arc::new(OmemoManager::new(
            connection,
            store,
            own,
            policy(settings.trust_policy),
        ));
        manager.set_up().await?;

        let (tx, rx) = mpsc::channel(APP_QUEUE);
        let inbound = Arc::new(Inbound::new());
        let dispatcher = tokio::spawn(dispatch(
            events,
            Arc::clone(&inbound),
            manager.own().jid.clone(),
        ));
        let worker = tokio::spawn(work(Arc::clone(&manager), inbound, tx));
        Ok((
            Client {
                manager,
                tasks: [dispatcher, worker],
            },
            rx,
        ))
    }

    /// The OMEMO manager (device, trust and store access).
    pub fn manager(&self) -> &OmemoManager {
        &self.manager
    }

    /// Our bare JID.
    pub fn jid(&self) -> &BareJid {
        &self.manager.own().jid
    }

    /// Encrypts `content` for `to` (and our other devices) and sends it.
    pub async fn send_sensitive(
        &self,
        to: &BareJid,
        content: Vec<Element>,
    ) -> Result<SendReport, OmemoError> {
        self.manager.send_sensitive(to, content).await
    }

    /// Sends an encrypted `<body>`.
    pub async fn send_body(&self, to: &BareJid, body: &str) -> Result<SendReport, OmemoError> {
        self.send_sensitive(to, vec![omemo_pep::sce::Envelope::body_element(body)])
            .await
    }

    /// Sends an unencrypted chat message (for notices only; never for content that arrived
    /// encrypted).
    pub async fn send_plaintext(&self, to: Jid, body: &str) -> Result<(), OmemoError> {
        let mut message = Message::new_with_type(MessageType::Chat, Some(to));
        message.bodies.insert(Lang::default(), body.to_owned());
        self.manager
            .connection()
            .send(message)
            .await
            .map_err(|_| OmemoError::Closed)
    }

    /// Closes the connection and stops the event task.
    pub async fn close(self) {
        self.manager.connection().close().await;
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Handles one connection event; false when the receiver is gone.
async fn handle_event(
    manager: &Arc<OmemoManager>,
    event: Event,
    tx: &mpsc::Sender<ClientEvent>,
    first_online: &mut bool,
) -> bool {
    let out = match event {
        Event::Online { resumed, .. } => {
            if !resumed && !*first_online {
                // A fresh session after a reconnect: make sure our device is still listed.
                if let Err(e) = manager.publish_device_list().await {
                    tracing::warn!(error = %e, "re-checking our device list failed");
                }
            }
            *first_online = false;
            Some(ClientEvent::Online { resumed })
        }
        Event::Offline => Some(ClientEvent::Offline),
        Event::Message(message) => handle_message(manager, &message, false).await,
        Event::Carbon { direction, message } => {
            handle_message(manager, &message, direction == CarbonDirection::Sent).await
        }
        Event::Presence(_) => None,
    };
    match out {
        Some(event) => tx.send(event).await.is_ok(),
        None => !tx.is_closed(),
    }
}

async fn handle_message(
    manager: &Arc<OmemoManager>,
    message: &Message,
    sent_carbon: bool,
) -> Option<ClientEvent> {
    if let Some(notification) = pep::parse_device_list_event(message) {
        match notification {
            Ok(n) => {
                if let Err(e) = manager
                    .handle_device_list_notification(n.jid, n.devices)
                    .await
                {
                    tracing::warn!(error = %e, "handling a device-list update failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed device-list notification"),
        }
        return None;
    }
    if message.type_ == MessageType::Error {
        tracing::debug!(from = ?message.from, "message error received");
        return None;
    }
    let from = message.from.clone()?;
    let own = manager.own().jid.clone();
    let (sender, recipient) = if sent_carbon {
        (own.clone(), message.to.as_ref()?.to_bare())
    } else {
        (from.to_bare(), own.clone())
    };
    match hints::find_encrypted(message) {
        None => {
            let body = message.bodies.values().next()?.clone();
            if sent_carbon {
                return None;
            }
            Some(ClientEvent::Plaintext {
                from,
                type_: message.type_.clone(),
                body,
            })
        }
        Some(Err(e)) => {
            tracing::warn!(%from, error = %e, "malformed OMEMO message");
            Some(ClientEvent::Undecryptable {
                from,
                device: None,
                reason: ReceiveError::Malformed(e).to_string(),
            })
        }
        Some(Ok(encrypted)) => {
            let device = encrypted.sid;
            match manager
                .receive(message, encrypted, sender.clone(), recipient, sent_carbon)
                .await
            {
                Ok(received) => {
                    let worker = Arc::clone(manager);
                    tokio::spawn(async move { worker.note_sender_device(&sender, device).await });
                    match received {
                        Received::Message(decrypted) if !sent_carbon => {
                            tracing::debug!(%from, %device, trust = ?decrypted.e2ee.trust, "decrypted message");
                            Some(ClientEvent::Encrypted(decrypted))
                        }
                        _ => None,
                    }
                }
                Err(e) if e.is_duplicate() => {
                    tracing::debug!(%from, %device, "duplicate OMEMO message ignored");
                    None
                }
                Err(ReceiveError::NotForUs) => {
                    tracing::debug!(%from, %device, "OMEMO message not encrypted for this device");
                    None
                }
                Err(e) => {
                    tracing::warn!(%from, %device, error = %e, "cannot decrypt OMEMO message");
                    if matches!(e, ReceiveError::NoSession) && !sent_carbon {
                        let worker = Arc::clone(manager);
                        tokio::spawn(async move {
                            if let Err(e) = worker.rebuild_session(&sender, device).await {
                                tracing::warn!(error = %e, "rebuilding the session failed");
                            }
                        });
                    }
                    Some(ClientEvent::Undecryptable {
                        from,
                        device: Some(device),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}
