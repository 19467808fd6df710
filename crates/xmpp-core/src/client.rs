//! The small API the programs use: connect an account with OMEMO (OMEMO 2 and legacy) set
//! up, send encrypted content, and receive a stream of [`ClientEvent`]s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use atm_trust::TrustPolicy;
use omemo_crypto::DeviceId;
use omemo_pep::pep;
use rand_core::{OsRng, RngCore as _};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Lang, Message, MessageType};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{Presence, Type as PresenceType};

use crate::archive;
use crate::connection::{
    Capabilities, CarbonDirection, ConnectError, Connection, ConnectionConfig, Event, Events,
    LEGACY_DEVICE_LIST_NOTIFY, OMEMO_DEVICES_NOTIFY,
};
use crate::fair::{FairQueue, Full};
use crate::omemo::{
    DecryptedMessage, OmemoError, OmemoManager, Receipt, ReceiveError, Received, Responder,
    SendReport,
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
    /// An OMEMO message was decrypted and its state committed. It stays in the store's
    /// inbox until the event (its [`Receipt`]) is dropped or answered, and is handed over
    /// again, first thing, by the next start if the process died before that.
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

/// A connected account with OMEMO (OMEMO 2 and legacy OMEMO, one device).
pub struct Client {
    manager: Arc<OmemoManager>,
    /// The dispatcher (connection events into the fair queue) and the worker (decryption).
    tasks: [JoinHandle<()>; 2],
    /// The inbound queues, to tell at close whether anything was left unhandled.
    inbound: Arc<Queues>,
    /// The outbound answer queues.
    answers: Answers,
}

/// The program's end of a client: events, each sender's in order, `None` once the client
/// stopped. Read it continuously; while it is full, inbound messages wait in bounded
/// per-sender queues and what does not fit there is dropped.
pub type ClientEvents = mpsc::Receiver<ClientEvent>;

/// Events decrypted ahead of the program. What is decrypted but not yet handled survives a
/// crash in the store's inbox (see [`Receipt`]) and comes back at the next start; one event
/// ahead (plus at most one finished message per sender decrypted at the same time, see
/// [`CONCURRENT_SENDERS`]) keeps that backlog, and the replay after a crash, small while
/// decryption still overlaps the program's work.
const APP_QUEUE: usize = 1;
/// Inbound messages one sender may have waiting for decryption.
const PER_SENDER_QUEUE: usize = 128;
/// Inbound messages waiting for decryption, all senders together.
const INBOUND_QUEUE: usize = 2048;

/// Connection events waiting for the worker.
struct Queues {
    state: Mutex<InboundState>,
    ready: Notify,
    /// Messages being decrypted now, kept by [`Decrypting`].
    decrypting: Arc<AtomicUsize>,
}

/// One queued message.
enum Inbound {
    /// As the connection delivered it.
    Live(Event),
    /// Replayed from our archive after a fresh session (see [`crate::archive`]).
    Archived(Box<Message>),
}

struct InboundState {
    /// Online/offline changes, served before any message.
    control: VecDeque<Event>,
    /// Messages (and carbons, under our own JID), served round-robin by sender.
    messages: FairQueue<BareJid, Inbound>,
    /// Senders whose queue is full, with the number of messages dropped since it filled.
    flooding: HashMap<BareJid, u64>,
    /// Messages dropped because all queues together were full.
    overflow: u64,
    /// The connection's event stream ended.
    closed: bool,
    /// The id of the latest archive query; only its results are accepted.
    archive_query: Option<String>,
    /// Archive results accepted for that query.
    archived: usize,
}

impl Queues {
    fn new() -> Self {
        Self {
            state: Mutex::new(InboundState {
                control: VecDeque::new(),
                messages: FairQueue::new(PER_SENDER_QUEUE, INBOUND_QUEUE),
                flooding: HashMap::new(),
                overflow: 0,
                closed: false,
                archive_query: None,
                archived: 0,
            }),
            ready: Notify::new(),
            decrypting: Arc::new(AtomicUsize::new(0)),
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
async fn dispatch(mut events: Events, inbound: Arc<Queues>, own: BareJid, connection: Connection) {
    while let Some(event) = events.recv().await {
        let (sender, item) = match event {
            Event::Message(message) if archive::is_result(&message) => {
                let mut state = inbound.lock();
                let unwrapped = state
                    .archive_query
                    .as_deref()
                    .and_then(|queryid| archive::unwrap_result(&message, &own, queryid));
                let Some(archived) = unwrapped else {
                    tracing::warn!(from = ?message.from, "dropping an archive result we did not ask for");
                    continue;
                };
                state.archived += 1;
                let sender = archived
                    .from
                    .as_ref()
                    .map_or_else(|| own.clone(), Jid::to_bare);
                (sender, Inbound::Archived(Box::new(archived)))
            }
            Event::Message(message) => {
                let sender = message
                    .from
                    .as_ref()
                    .map_or_else(|| own.clone(), Jid::to_bare);
                (sender, Inbound::Live(Event::Message(message)))
            }
            event @ Event::Carbon { .. } => (own.clone(), Inbound::Live(event)),
            Event::Online { .. } | Event::Offline => {
                inbound.lock().control.push_back(event);
                inbound.ready.notify_one();
                continue;
            }
            Event::Presence(presence) => {
                answer_subscription(&connection, &own, &presence);
                continue;
            }
        };
        let mut state = inbound.lock();
        match state.messages.push(sender.clone(), item) {
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

/// Accepts a contact's presence subscription request and asks for theirs in return (RFC 6121
/// §3): legacy clients such as Profanity publish their OMEMO bundle with the `presence`
/// access model, readable only to subscribers of their presence (LEGACY-NOTES §12). The bot
/// answers anyone, as it answers anyone's messages; its own presence tells nothing.
fn answer_subscription(connection: &Connection, own: &BareJid, presence: &Presence) {
    if presence.type_ != PresenceType::Subscribe {
        return;
    }
    let Some(from) = presence.from.as_ref().map(Jid::to_bare) else {
        return;
    };
    if &from == own {
        return;
    }
    tracing::info!(%from, "accepting a presence subscription and subscribing back");
    let connection = connection.clone();
    tokio::spawn(async move {
        for type_ in [PresenceType::Subscribed, PresenceType::Subscribe] {
            let mut answer = Presence::new(type_);
            answer.to = Some(Jid::from(from.clone()));
            if connection.send(answer).await.is_err() {
                return;
            }
        }
    });
}

/// Takes events from the inbound queues (control first, then senders in turn), decrypts and
/// hands them to the program; waits while the program's queue is full. Messages of different
/// senders are decrypted at the same time (see [`CONCURRENT_SENDERS`]) and handed over as
/// they finish; a sender's messages one after another, in order.
async fn work(manager: Arc<OmemoManager>, inbound: Arc<Queues>, tx: mpsc::Sender<ClientEvent>) {
    // First what a previous process decrypted but did not finish handling.
    for message in manager.take_inbox().await {
        tracing::info!(from = %message.from, device = %message.e2ee.device, id = ?message.id,
            "handing over again a message decrypted before the restart");
        if tx
            .send(ClientEvent::Encrypted(Box::new(message)))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut first_online = true;
    let mut decrypting = Decrypting::new(Arc::clone(&inbound.decrypting));
    loop {
        let next = {
            let mut state = inbound.lock();
            if !state.control.is_empty() {
                // Served before any message not yet started, after those already started.
                if decrypting.is_empty() {
                    match state.control.pop_front() {
                        Some(event) => {
                            if let Event::Online { resumed: false, .. } = event {
                                tokio::spawn(catch_up(Arc::clone(&manager), Arc::clone(&inbound)));
                            }
                            Next::Control(event)
                        }
                        None => Next::Wait,
                    }
                } else {
                    Next::Finish
                }
            } else if let Some((sender, item)) = decrypting
                .has_room()
                .then(|| state.messages.pop_where(|sender| !decrypting.busy(sender)))
                .flatten()
            {
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
                Next::Start(sender, item)
            } else if !decrypting.is_empty() {
                Next::FinishOrArrive
            } else if state.closed {
                break;
            } else {
                Next::Wait
            }
        };
        let keep_going = match next {
            Next::Control(event) => handle_event(&manager, event, &tx, &mut first_online).await,
            Next::Start(sender, item) => {
                decrypting.start(sender, handle_inbound(Arc::clone(&manager), item));
                true
            }
            Next::Finish => match decrypting.next().await {
                Some(out) => hand_over(out, &tx).await,
                None => true,
            },
            Next::FinishOrArrive => tokio::select! {
                out = decrypting.next() => match out {
                    Some(out) => hand_over(out, &tx).await,
                    None => true,
                },
                () = inbound.ready.notified() => true,
            },
            Next::Wait => {
                inbound.ready.notified().await;
                true
            }
        };
        if !keep_going {
            break;
        }
    }
}

/// What the worker does next.
enum Next {
    /// Handles a connection event (online, offline), with no message in flight.
    Control(Event),
    /// Starts decrypting a sender's message.
    Start(BareJid, Inbound),
    /// Waits for a message in flight and hands it over.
    Finish,
    /// Waits for a message in flight or for a new arrival, whichever comes first.
    FinishOrArrive,
    /// Waits for a new arrival.
    Wait,
}

/// Senders whose messages are decrypted at the same time, one message each. Their ratchet
/// steps reach the store thread together and share one commit (see
/// [`crate::omemo::store_thread`]), where one at a time would cost each message a sync of its
/// own; a sender's next message waits for its previous one, so each sender's order holds.
const CONCURRENT_SENDERS: usize = 8;

/// One message's decryption, yielding its sender and the event for the program.
type Decryption =
    std::pin::Pin<Box<dyn std::future::Future<Output = (BareJid, Option<ClientEvent>)> + Send>>;

/// The messages being decrypted: at most one per sender, at most [`CONCURRENT_SENDERS`].
struct Decrypting {
    running: futures::stream::FuturesUnordered<Decryption>,
    senders: std::collections::HashSet<BareJid>,
    /// How many are running, for [`Client::decrypting`].
    count: Arc<AtomicUsize>,
}

impl Decrypting {
    fn new(count: Arc<AtomicUsize>) -> Self {
        Self {
            running: futures::stream::FuturesUnordered::new(),
            senders: std::collections::HashSet::new(),
            count,
        }
    }

    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    fn has_room(&self) -> bool {
        self.running.len() < CONCURRENT_SENDERS
    }

    /// Whether a message of `sender` is being decrypted.
    fn busy(&self, sender: &BareJid) -> bool {
        self.senders.contains(sender)
    }

    fn start(
        &mut self,
        sender: BareJid,
        handling: impl std::future::Future<Output = Option<ClientEvent>> + Send + 'static,
    ) {
        self.senders.insert(sender.clone());
        self.running
            .push(Box::pin(async move { (sender, handling.await) }));
        self.count.store(self.running.len(), Ordering::SeqCst);
    }

    /// The next message finished (in any order between senders); `None` if none is running.
    async fn next(&mut self) -> Option<Option<ClientEvent>> {
        use futures::StreamExt as _;
        let (sender, out) = self.running.next().await?;
        self.senders.remove(&sender);
        self.count.store(self.running.len(), Ordering::SeqCst);
        Some(out)
    }
}

/// Decrypts one queued message.
async fn handle_inbound(manager: Arc<OmemoManager>, item: Inbound) -> Option<ClientEvent> {
    match item {
        Inbound::Live(Event::Message(message)) => {
            handle_message(&manager, &message, Origin::Live).await
        }
        Inbound::Live(Event::Carbon { direction, message }) => {
            let origin = match direction {
                CarbonDirection::Sent => Origin::SentCarbon,
                CarbonDirection::Received => Origin::Live,
            };
            handle_message(&manager, &message, origin).await
        }
        // The dispatcher queues only messages and carbons by sender.
        Inbound::Live(_) => None,
        Inbound::Archived(message) => handle_message(&manager, &message, Origin::Archive).await,
    }
}

/// Hands a finished message's event to the program; false when the program is gone.
async fn hand_over(out: Option<ClientEvent>, tx: &mpsc::Sender<ClientEvent>) -> bool {
    match out {
        Some(event) => tx.send(event).await.is_ok(),
        None => !tx.is_closed(),
    }
}

/// Replays our archive from shortly before the last ratchet activity (see [`crate::archive`]).
async fn catch_up(manager: Arc<OmemoManager>, inbound: Arc<Queues>) {
    let marks = manager
        .with_store(|store| {
            let mut last = None;
            for ns in atm_trust::Namespace::ALL {
                last = last.max(store.last_session_activity(ns)?);
            }
            Ok::<_, atm_trust::StoreError>((last, store.caught_up_until()?))
        })
        .await
        .and_then(|read| read.map_err(OmemoError::from));
    let start = match marks {
        // Shortly before the last ratchet activity, but not before a clean stop.
        Ok((Some(last), caught_up)) => last
            .saturating_sub(archive::MARGIN_SECS)
            .max(caught_up.unwrap_or(0)),
        Ok((None, _)) => return, // no session yet: nothing we could have missed
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last activity; not catching up");
            return;
        }
    };
    let queryid = format!("catch-up-{:016x}", OsRng.next_u64());
    {
        let mut state = inbound.lock();
        state.archive_query = Some(queryid.clone());
        state.archived = 0;
    }
    let mut after = None;
    let mut pages = 0usize;
    loop {
        let iq = archive::query(&format!("{queryid}-{pages}"), &queryid, start, after.take());
        let response = match manager.connection().send_iq(iq).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(error = %e, "the server's archive is not available; not catching up");
                return;
            }
        };
        pages += 1;
        match archive::parse_fin(response) {
            Some((false, Some(last_id))) if pages * archive::PAGE < archive::MAX_MESSAGES => {
                after = Some(last_id);
            }
            Some((complete, _)) => {
                if !complete {
                    tracing::warn!(
                        max = archive::MAX_MESSAGES,
                        "catch-up stopped at its limit; older messages are not replayed"
                    );
                }
                break;
            }
            None => {
                tracing::warn!("malformed answer from the archive; catch-up stopped");
                break;
            }
        }
        // Let the worker drain the page before asking for the next one, so that a long
        // backlog does not overflow the per-sender queues.
        while inbound.lock().messages.len() > archive::PAGE / 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let replayed = inbound.lock().archived;
    tracing::info!(replayed, since = start, "caught up from the archive");
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
        Self::start_with(settings, None).await
    }

    /// Like [`Client::start`], with `responder` answering messages in the transaction that
    /// commits their decryption (see [`OmemoManager::with_responder`]): the events of those
    /// come with [`DecryptedMessage::answered`] set.
    pub async fn start_with_responder(
        settings: &AccountSettings,
        responder: Responder,
    ) -> Result<(Client, ClientEvents), ClientError> {
        Self::start_with(settings, Some(responder)).await
    }

    async fn start_with(
        settings: &AccountSettings,
        responder: Option<Responder>,
    ) -> Result<(Client, ClientEvents), ClientError> {
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
            ed25519_fingerprint = %own.identity.public_key().ed25519_fingerprint(),
            "OMEMO device loaded"
        );

        let mut config = ConnectionConfig::from_settings(settings);
        config.capabilities = Capabilities::default()
            .with_feature(OMEMO_DEVICES_NOTIFY)
            .with_feature(LEGACY_DEVICE_LIST_NOTIFY);
        // One resource per OMEMO device, the same after a restart: when the process died
        // without closing its stream, binding the same resource replaces the stale session
        // at once, and the server moves the messages it could not deliver there to offline
        // storage for us (a random resource would leave them to bounce when it times out).
        config.resource = Some(format!("omemo-{}", own.device_id));
        let (connection, events) = Connection::connect(config).await?;
        let mut manager = OmemoManager::new(connection, store, own, policy(settings.trust_policy));
        if let Some(responder) = responder {
            manager = manager.with_responder(responder);
        }
        let manager = Arc::new(manager);
        manager.set_up().await?;

        let (tx, rx) = mpsc::channel(APP_QUEUE);
        let inbound = Arc::new(Queues::new());
        let dispatcher = tokio::spawn(dispatch(
            events,
            Arc::clone(&inbound),
            manager.own().jid.clone(),
            manager.connection().clone(),
        ));
        let worker = tokio::spawn(work(Arc::clone(&manager), Arc::clone(&inbound), tx));
        let answers = Answers {
            manager: Arc::clone(&manager),
            queues: Arc::new(Mutex::new(HashMap::new())),
        };
        Ok((
            Client {
                manager,
                answers,
                inbound,
                tasks: [dispatcher, worker],
            },
            rx,
        ))
    }

    /// The OMEMO manager (device, trust and store access).
    pub fn manager(&self) -> &OmemoManager {
        &self.manager
    }

    /// Inbound messages being decrypted right now: at most one per sender, several senders'
    /// at once (for monitoring and tests).
    pub fn decrypting(&self) -> usize {
        self.inbound.decrypting.load(Ordering::SeqCst)
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
        self.send_body_answering(to, body, None).await
    }

    /// Sends an encrypted `<body>`, as the answer to a received message when `answering` is
    /// its receipt: the received message leaves the inbox with the answer's commit (see
    /// [`Receipt`]), so that after a crash it is handed over again if and only if its answer
    /// was not committed.
    pub async fn send_body_answering(
        &self,
        to: &BareJid,
        body: &str,
        answering: Option<&Receipt>,
    ) -> Result<SendReport, OmemoError> {
        let content = vec![omemo_pep::sce::Envelope::body_element(body)];
        self.manager.send_answer(to, content, answering).await
    }

    /// A handle that sends answers in the background, in order per recipient (see
    /// [`Answers`]). Every handle of one client shares the same queues.
    pub fn answers(&self) -> Answers {
        self.answers.clone()
    }

    /// Takes a handled message out of the inbox at once. Dropping the event does that a
    /// moment later; a program that reports progress calls this first, so that a crash after
    /// the report cannot hand the message over again.
    pub async fn handled(&self, message: &DecryptedMessage) -> Result<(), OmemoError> {
        match &message.receipt {
            Some(receipt) => self.manager.mark_handled(receipt).await,
            None => Ok(()),
        }
    }

    /// Sends an unencrypted chat message (for notices only; never for content that arrived
    /// encrypted).
    pub async fn send_plaintext(&self, to: Jid, body: &str) -> Result<(), OmemoError> {
        let mut message = Message::new_with_type(MessageType::Chat, Some(to));
        message.bodies.insert(Lang::default(), body.to_owned());
        crate::omemo::check_size(String::from(&Element::from(message.clone())).len())?;
        self.manager
            .connection()
            .send(message)
            .await
            .map_err(|_| OmemoError::Closed)
    }

    /// Closes the connection and stops the event task.
    ///
    /// Messages decrypted but not yet handed over, or handed over but not yet handled when
    /// this is called, stay in the store's inbox and come again at the next start.
    pub async fn close(self) {
        self.manager.connection().close().await;
        // Before the tasks go: the events they drop were never handled.
        self.manager.flush_removals();
        for task in &self.tasks {
            task.abort();
        }
        // Nothing left unhandled: the next start need not replay what came before now
        // (minus a little for a message that was being handled when the worker stopped).
        if self.inbound.lock().messages.len() == 0 {
            let until = crate::omemo::now().saturating_sub(archive::CLOSE_SLACK_SECS);
            let recorded = self
                .manager
                .with_store(move |store| store.set_caught_up_until(until))
                .await
                .and_then(|result| result.map_err(OmemoError::from));
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record the clean stop");
            }
        }
    }
}

/// Handles a control event (online, offline); false when the receiver is gone.
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
                // A long-running program forgets departed devices without a restart.
                let pruned = manager
                    .with_store(crate::omemo::prune_removed_devices)
                    .await
                    .and_then(|result| result.map_err(OmemoError::from));
                if let Err(e) = pruned {
                    tracing::warn!(error = %e, "cannot forget departed devices");
                }
            }
            if !resumed {
                // What a dead process or connection may not have delivered goes out again,
                // one message at a time (see `resend_outbox`), without holding up the inbound
                // messages.
                let manager = Arc::clone(manager);
                tokio::spawn(async move {
                    if let Err(e) = manager.resend_outbox().await {
                        tracing::warn!(error = %e, "sending the outbox again failed");
                    }
                });
            }
            *first_online = false;
            Some(ClientEvent::Online { resumed })
        }
        Event::Offline => Some(ClientEvent::Offline),
        // Messages and carbons go through the per-sender queues (see `handle_inbound`).
        Event::Message(_) | Event::Carbon { .. } | Event::Presence(_) => None,
    };
    hand_over(out, tx).await
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Addressed to us (directly or as a received carbon).
    Live,
    /// A carbon of a message another of our devices sent.
    SentCarbon,
    /// Replayed from our archive: already-handled messages are expected, so failures are
    /// only logged at debug level and never trigger a session rebuild.
    Archive,
}

async fn handle_message(
    manager: &Arc<OmemoManager>,
    message: &Message,
    origin: Origin,
) -> Option<ClientEvent> {
    let sent_carbon = origin == Origin::SentCarbon;
    let archived = origin == Origin::Archive;
    if archived
        && (message.type_ == MessageType::Error
            || message
                .from
                .as_ref()
                .is_some_and(|f| f.to_bare() == manager.own().jid))
    {
        return None; // our own sent messages and errors are not replayed
    }
    if let Some(notification) = pep::parse_device_list_event(message) {
        if archived {
            return None;
        }
        // A device list lives in its owner's PEP node, and the PEP service sends its
        // notifications from the owner's bare JID. A client's stanzas always carry its full
        // JID (the server stamps it), so one from a full JID is a client's forgery.
        if !message.from.as_ref().is_some_and(Jid::is_bare) {
            tracing::warn!(from = ?message.from, "ignoring a device-list notification that does not come from a PEP service (a bare JID)");
            return None;
        }
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
    if let Some(notification) = pep::parse_legacy_device_list_event(message) {
        if archived {
            return None;
        }
        // As for OMEMO 2: only the owner's PEP service (a bare JID) sends these.
        if !message.from.as_ref().is_some_and(Jid::is_bare) {
            tracing::warn!(from = ?message.from, "ignoring a legacy device-list notification that does not come from a PEP service (a bare JID)");
            return None;
        }
        match notification {
            Ok(n) => {
                if let Err(e) = manager
                    .handle_legacy_device_list_notification(n.jid, n.devices)
                    .await
                {
                    tracing::warn!(error = %e, "handling a legacy device-list update failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed legacy device-list notification"),
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
    match crate::omemo::find_encrypted(message, manager.own()) {
        None => {
            let body = message.bodies.values().next()?.clone();
            if sent_carbon || archived {
                return None;
            }
            Some(ClientEvent::Plaintext {
                from,
                type_: message.type_.clone(),
                body,
            })
        }
        Some(Err(e)) if archived => {
            tracing::debug!(%from, error = %e, "malformed OMEMO message in the archive");
            None
        }
        Some(Err(e)) => {
            tracing::warn!(%from, error = %e, "malformed OMEMO message");
            Some(ClientEvent::Undecryptable {
                from,
                device: None,
                reason: ReceiveError::Malformed(e).to_string(),
            })
        }
        Some(Ok(_))
            if matches!(
                message.type_,
                MessageType::Groupchat | MessageType::Headline
            ) =>
        {
            // Group chats are not supported yet: such a message must not be decrypted and
            // answered as if it were a one-to-one chat.
            if archived || sent_carbon {
                return None;
            }
            tracing::warn!(%from, type_ = ?message.type_, "ignoring an OMEMO message that is not a one-to-one chat");
            Some(ClientEvent::Undecryptable {
                from,
                device: None,
                reason: format!(
                    "OMEMO in {} messages is not supported",
                    if message.type_ == MessageType::Groupchat {
                        "group chat"
                    } else {
                        "headline"
                    }
                ),
            })
        }
        Some(Ok(encrypted)) => {
            let device = encrypted.sender_device();
            let namespace = encrypted.namespace();
            match manager
                .receive(message, encrypted, sender.clone(), recipient, sent_carbon)
                .await
            {
                Ok(received) => {
                    let worker = Arc::clone(manager);
                    tokio::spawn(async move {
                        crate::omemo::in_version!(namespace, V => worker.note_sender_device::<V>(&sender, device).await)
                    });
                    match received {
                        Received::Message(decrypted) if !sent_carbon => {
                            if archived {
                                tracing::info!(%from, %device, id = ?message.id, "recovered a message from the archive");
                            }
                            tracing::debug!(%from, %device, trust = ?decrypted.e2ee.trust, "decrypted message");
                            Some(ClientEvent::Encrypted(decrypted))
                        }
                        _ => None,
                    }
                }
                Err(e) if archived => {
                    tracing::debug!(%from, %device, id = ?message.id, error = %e, "archived message not replayed");
                    None
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
                            if let Err(e) = worker.rebuild_session(namespace, &sender, device).await
                            {
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

/// Answers waiting per recipient in [`Answers`]; more are refused with [`OmemoError::Busy`].
const ANSWERS_PER_RECIPIENT: usize = 128;

/// Sends answers in the background: one queue and one task per recipient, so that answers to
/// one JID leave in the order they were queued, and a recipient whose answers are slow to
/// build (bundles to fetch for many new devices, a slow server) never holds up the answers to
/// anybody else. Each queue is bounded; cheap to clone.
#[derive(Clone)]
pub struct Answers {
    manager: Arc<OmemoManager>,
    queues: Arc<Mutex<HashMap<BareJid, AnswerQueue>>>,
}

struct AnswerQueue {
    jobs: mpsc::Sender<AnswerJob>,
    /// Whether a refusal was already logged for this queue (it lives until it is empty, so
    /// that is once per backlog).
    full: bool,
}

struct AnswerJob {
    content: Vec<Element>,
    answering: Option<Receipt>,
    done: oneshot::Sender<Result<SendReport, OmemoError>>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").finish_non_exhaustive()
    }
}

impl Answers {
    /// Queues an encrypted `<body>` for `to`, as the answer to the message whose receipt is
    /// `answering` (see [`Client::send_body_answering`]), and returns its outcome as a future.
    /// The answer is queued by this call, so answers to one recipient go out in call order;
    /// the future need not be awaited for the answer to be sent.
    pub fn send_body(
        &self,
        to: BareJid,
        body: &str,
        answering: Option<Receipt>,
    ) -> impl std::future::Future<Output = Result<SendReport, OmemoError>> + Send + 'static {
        let (done, outcome) = oneshot::channel();
        let job = AnswerJob {
            content: vec![omemo_pep::sce::Envelope::body_element(body)],
            answering,
            done,
        };
        let refused = self.enqueue(to, job).err();
        async move {
            match refused {
                Some(e) => Err(e),
                None => outcome.await.unwrap_or(Err(OmemoError::Task)),
            }
        }
    }

    /// Waits until every queued answer was sent (or failed), at most `within`; true if none
    /// is left. Call it before [`Client::close`], which would make queued answers fail.
    pub async fn flush(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self
                .queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn enqueue(&self, to: BareJid, job: AnswerJob) -> Result<(), OmemoError> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match queues.get_mut(&to) {
            Some(queue) => match queue.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !queue.full {
                        queue.full = true;
                        tracing::warn!(%to, queued = ANSWERS_PER_RECIPIENT, "too many answers waiting for this recipient; refusing new ones");
                    }
                    return Err(OmemoError::Busy(to));
                }
                // Its task has ended (it removes the queue first, so this is unexpected).
                Err(mpsc::error::TrySendError::Closed(job)) => job,
            },
            None => job,
        };
        let (jobs, rx) = mpsc::channel(ANSWERS_PER_RECIPIENT);
        // A fresh channel has room.
        let _ = jobs.try_send(job);
        queues.insert(to.clone(), AnswerQueue { jobs, full: false });
        tokio::spawn(serve_answers(
            Arc::clone(&self.manager),
            Arc::clone(&self.queues),
            to,
            rx,
        ));
        Ok(())
    }
}

/// Sends one recipient's queued answers in order; ends when its queue is empty.
async fn serve_answers(
    manager: Arc<OmemoManager>,
    queues: Arc<Mutex<HashMap<BareJid, AnswerQueue>>>,
    to: BareJid,
    mut rx: mpsc::Receiver<AnswerJob>,
) {
    loop {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(_) => {
                // Jobs are queued under the map's lock: an empty queue seen under it stays
                // empty, and the next answer starts a new task.
                let mut map = queues.lock().unwrap_or_else(PoisonError::into_inner);
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        map.remove(&to);
                        return;
                    }
                }
            }
        };
        let sent = manager
            .send_answer(&to, job.content, job.answering.as_ref())
            .await;
        let _ = job.done.send(sent);
    }
}
