//! The XMPP client connection: one always-online session for one account.
//!
//! [`Connection::connect`] logs in (StartTLS with the native roots plus an optional private CA,
//! or plain TCP to loopback when asked explicitly; SASL SCRAM), binds a resource and returns a
//! cloneable [`Connection`] handle plus an [`Events`] receiver. A background task drives the
//! tokio-xmpp [`StanzaStream`], which does resource binding and XEP-0198 stream management
//! (resumption) when the server offers it. When the connection is lost and cannot be
//! resumed, the task reconnects by itself with exponential backoff and jitter
//! ([`ReconnectPolicy`]).
//!
//! On every fresh session (not on a resumption) the task enables message carbons (XEP-0280)
//! and sends an initial presence with entity capabilities (XEP-0115) for the configured
//! [`Capabilities`]. It answers disco#info queries (XEP-0030) and pings (XEP-0199) itself and
//! replies `service-unavailable` to every other IQ request (RFC 6120 §8.4), since nothing
//! above this layer handles IQ requests yet.
//!
//! [`Connection::send_iq`] tracks IQ requests by id and checks that the response comes from the
//! addressee (RFC 6120 §8.2.3).

mod backoff;
mod caps;
mod inbound;
mod quickack;
mod transport;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::carbons;
use tokio_xmpp::parsers::disco::DiscoInfoQuery;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{
    self, StanzaStage, StanzaState, StanzaStream, StanzaToken, StreamEvent,
};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Stanza;
use zeroize::Zeroizing;

pub use self::backoff::ReconnectPolicy;
pub use self::caps::{Capabilities, LEGACY_DEVICE_LIST_NOTIFY, OMEMO_DEVICES_NOTIFY};
use self::inbound::Refusals;
pub use self::transport::{BoxedStream, XmppConnector};

/// Stanzas buffered towards and from the server by the `StanzaStream`.
const QUEUE_DEPTH: usize = 64;
/// How long [`Connection::connect`] waits for resource binding after login.
const BIND_TIMEOUT: Duration = Duration::new(30, 0);
/// How long [`Connection::close`] waits for the server to acknowledge the end of the stream
/// (and for the background task to get to the close at all).
const CLOSE_TIMEOUT: Duration = Duration::new(3, 0);

/// A password or other secret: never printed, wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

/// Everything needed to connect one account.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The account (must have a local part).
    pub jid: BareJid,
    /// Its password.
    pub password: Secret,
    /// Connect to this host and port instead of looking up the domain's SRV records.
    pub server: Option<(String, u16)>,
    /// A PEM file with CA certificates to trust in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Plain TCP without TLS. Only allowed when the server address (or the domain, without
    /// `server`) resolves to loopback addresses only; otherwise connecting fails with
    /// [`ConnectError::PlaintextNotLoopback`].
    pub insecure_plaintext: bool,
    /// The resource to request (the server may assign another); `None` lets the server choose.
    pub resource: Option<String>,
    /// What we advertise through disco#info and entity capabilities.
    pub capabilities: Capabilities,
    /// How long [`Connection::send_iq`] waits for a response.
    pub iq_timeout: Duration,
    /// Reconnect delays after the connection is lost.
    pub reconnect: ReconnectPolicy,
}

impl ConnectionConfig {
    /// A configuration with defaults: SRV lookup, StartTLS with the system roots, a
    /// server-assigned resource, [`Capabilities::default`], 30 s IQ timeout,
    /// [`ReconnectPolicy::default`].
    pub fn new(jid: BareJid, password: Secret) -> Self {
        Self {
            jid,
            password,
            server: None,
            ca_file: None,
            insecure_plaintext: false,
            resource: None,
            capabilities: Capabilities::default(),
            iq_timeout: Duration::from_secs(30),
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// The connection part of resolved account settings.
    pub fn from_settings(settings: &crate::settings::AccountSettings) -> Self {
        let mut config = Self::new(
            settings.jid.clone(),
            Secret::new(settings.password.expose().to_owned()),
        );
        config.server = settings.server.as_ref().map(|s| (s.host.clone(), s.port));
        config.ca_file = settings.ca_file.clone();
        config.insecure_plaintext = settings.insecure_plaintext;
        config
    }
}

/// Why connecting or logging in failed. The messages name what failed and, where there is
/// one, what the operator can do about it; none prints a library's internal structures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The account JID has no local part to log in with.
    #[error("the JID {0} has no user part")]
    JidWithoutLocalpart(String),
    /// The configured resource is not a valid JID resource.
    #[error("invalid resource: {0}")]
    InvalidResource(String),
    /// Plain TCP was requested for a server that is not (only) a loopback address.
    #[error("refusing plain TCP to {host}: it is not a loopback address")]
    PlaintextNotLoopback {
        /// The refused host.
        host: String,
    },
    /// The CA file could not be read or holds no usable certificate.
    #[error("cannot use CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// DNS gave no address to connect to: the JID's domain has neither an SRV record
    /// (`_xmpp-client._tcp`) nor an address record, or the configured host name does not
    /// resolve.
    #[error("cannot find the XMPP server for {name}: {reason}")]
    Dns {
        /// The domain or host name that was looked up.
        name: String,
        /// What the lookup gave, with a hint.
        reason: String,
    },
    /// Nothing listens at the address (TCP connection refused).
    #[error(
        "connection refused at {address}: no server listens there (is the XMPP server running, \
         and is the port right?)"
    )]
    Refused {
        /// `HOST:PORT`.
        address: String,
    },
    /// The TCP connection could not be opened for another reason (no route, timeout, ...).
    #[error("cannot connect to {address}: {reason}")]
    Unreachable {
        /// `HOST:PORT`, or a description of the addresses tried.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// Something accepted the TCP connection but did not speak XMPP (another service on
    /// the port, or a server that closed the connection at once).
    #[error("{address} did not answer as an XMPP server ({reason}); check the host and port")]
    NotXmpp {
        /// `HOST:PORT` (the peer's address when it came from an SRV lookup).
        address: String,
        /// What came back instead.
        reason: String,
    },
    /// The server's TLS certificate was rejected.
    #[error("the TLS certificate of {domain} is not trusted: {reason}")]
    CertificateNotTrusted {
        /// The domain the certificate had to be valid for.
        domain: String,
        /// Why it was rejected, and what to do.
        reason: String,
    },
    /// The server rejected the credentials (SASL `not-authorized`).
    #[error("the server refused the password for {jid} (wrong password, or no such account)")]
    WrongPassword {
        /// The account.
        jid: String,
    },
    /// A socket or stream I/O error after the connection was established (reset, ...).
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The server did not offer StartTLS, and plain TCP was not requested.
    #[error("the server does not offer StartTLS")]
    StartTlsUnavailable,
    /// The domain is not a valid TLS server name.
    #[error("invalid TLS server name {0}")]
    InvalidServerName(String),
    /// The TLS handshake failed for another reason than the certificate.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// SASL authentication failed for another reason than the password (no common
    /// mechanism, account disabled, ...).
    #[error("authentication failed: {}", auth_text(.0))]
    Auth(#[source] tokio_xmpp::error::AuthError),
    /// Any other XMPP-level failure (stream error, protocol violation).
    #[error("XMPP error: {}", xmpp_text(.0))]
    Xmpp(#[source] tokio_xmpp::Error),
    /// The connection attempt or resource binding took too long.
    #[error("no session within {} s (the server accepted the connection but did not finish the login)", .0.as_secs())]
    Timeout(Duration),
}

/// SASL failures in words; the server's condition as its XML name.
fn auth_text(error: &tokio_xmpp::error::AuthError) -> String {
    use tokio_xmpp::error::AuthError;
    match error {
        AuthError::Fail(condition) => {
            let name = format!("{condition:?}");
            // `AccountDisabled` -> `account-disabled`, as RFC 6120 §6.5 spells it.
            let mut xml = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    xml.push('-');
                }
                xml.push(c.to_ascii_lowercase());
            }
            format!("the server answered {xml}")
        }
        AuthError::NoMechanism => {
            "the server offers no SASL mechanism we support (SCRAM-SHA-1/256, PLAIN)".to_owned()
        }
        other => other.to_string(),
    }
}

/// tokio-xmpp errors in words (its DNS variants print the resolver's structures).
fn xmpp_text(error: &tokio_xmpp::Error) -> String {
    match error {
        tokio_xmpp::Error::DnsNet(_) | tokio_xmpp::Error::DnsProto(_) => {
            "DNS lookup failed".to_owned()
        }
        tokio_xmpp::Error::Disconnected => "the server closed the connection".to_owned(),
        other => other.to_string(),
    }
}

/// Why an IQ request got no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IqError {
    /// No response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error.
    #[error("error response: {:?} ({:?})", .0.defined_condition, .0.type_)]
    Stanza(Box<StanzaError>),
    /// The session ended (connection lost without resumption, or closed) before a response.
    #[error("disconnected before the response arrived")]
    Disconnected,
    /// Only `get` and `set` IQs can be sent as requests.
    #[error("only get and set IQs are requests")]
    NotARequest,
}

/// The connection to the XMPP server has gone for good ([`Connection::close`] was called or the
/// background task ended).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

/// Whether a carbon copy is of a message we received or sent on another resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarbonDirection {
    /// `<received/>`: a message to another of our resources.
    Received,
    /// `<sent/>`: a message another of our resources sent.
    Sent,
}

/// What the connection reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A session is up. `resumed: false` means a fresh session (the first one, or after a
    /// reconnect that could not resume): carbons and presence have been sent again, and IQs
    /// in flight were failed with [`IqError::Disconnected`].
    Online {
        /// Our full JID for this session.
        bound_jid: FullJid,
        /// Whether XEP-0198 resumed the previous session without loss.
        resumed: bool,
    },
    /// The connection was lost; reconnecting in the background.
    Offline,
    /// A message stanza, as received: chats, errors, and PEP/pubsub notifications (headline
    /// messages with an `<event/>`, e.g. OMEMO device-list updates). Carbons are not in here:
    /// see [`Event::Carbon`].
    Message(Box<Message>),
    /// A message carbon (XEP-0280), unwrapped: `message` is the forwarded message. Only
    /// carbons from our own bare JID get here (XEP-0280 §11); others are dropped.
    Carbon {
        /// Received or sent by another resource.
        direction: CarbonDirection,
        /// The forwarded message.
        message: Box<Message>,
    },
    /// A presence stanza, as received.
    Presence(Box<Presence>),
}

/// The receiving side of a connection: [`Event`]s in order, `None` after [`Connection::close`].
///
/// The channel is unbounded so that a caller awaiting [`Connection::send_iq`] inside its event
/// handler cannot deadlock the connection; read it continuously.
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Events {
    /// The next event; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

impl futures::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.poll_recv(cx)
    }
}

enum Command {
    Send(Box<Stanza>),
    SendTracked {
        stanza: Box<Stanza>,
        reply: oneshot::Sender<Delivery>,
    },
    Iq {
        iq: Box<Iq>,
        reply: oneshot::Sender<Result<Iq, IqError>>,
    },
    Close(oneshot::Sender<()>),
}

/// What became of a stanza sent with [`Connection::send_tracked`].
pub struct Delivery {
    token: StanzaToken,
    /// The connection's refused resumptions now, and when the stanza was queued.
    refusals: Refusals,
    queued: u64,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("state", &self.token.state())
            .field("refusals_when_queued", &self.queued)
            .finish()
    }
}

impl Delivery {
    /// Waits until the server acknowledged the stanza (true) or it was lost with its stream
    /// or dropped (false). Without stream management nothing is ever acknowledged: false once
    /// the connection is gone.
    ///
    /// The counter in a refused resumption (`<failed h=…/>`) is not taken as the server's
    /// word: Prosody counts an incoming stanza before it handles it, and one that arrives
    /// while it shuts down can be counted and then dropped. So a stanza counts as
    /// acknowledged only if the server refused no resumption since it was queued. This is
    /// cautious: a stanza acknowledged in the normal way around a refusal counts as lost too.
    /// Sending a message once too often is harmless (the recipient's ratchet drops the copy,
    /// and clients drop a second stanza with the same id); losing one is not.
    pub async fn acknowledged(mut self) -> bool {
        let acked = matches!(
            self.token.wait_for(StanzaStage::Acked).await,
            Some(StanzaState::Acked { .. })
        );
        // The refusal is counted before tokio-xmpp reads it, so before it releases a stanza.
        let refused = self.refusals.count() != self.queued;
        if acked && refused {
            tracing::debug!("a stanza queued before a refused resumption counts as unacknowledged");
        }
        acked && !refused
    }
}

/// A handle to the connection; cheap to clone. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Connection {
    commands: mpsc::Sender<Command>,
    first_jid: FullJid,
    bound_jid: Arc<Mutex<Option<FullJid>>>,
    iq_timeout: Duration,
    /// Set once [`Connection::close`] was called: reconnect attempts stop at once.
    closing: Arc<watch::Sender<bool>>,
}

impl Connection {
    /// Connects and logs in, returning once a resource is bound.
    ///
    /// Errors of this first attempt (TLS, authentication, refused plaintext) are returned;
    /// later reconnects retry in the background and are only logged.
    pub async fn connect(config: ConnectionConfig) -> Result<(Connection, Events), ConnectError> {
        if config.jid.node().is_none() {
            return Err(ConnectError::JidWithoutLocalpart(config.jid.to_string()));
        }
        let identity: Jid = match &config.resource {
            Some(resource) => config
                .jid
                .with_resource_str(resource)
                .map_err(|e| ConnectError::InvalidResource(e.to_string()))?
                .into(),
            None => config.jid.clone().into(),
        };
        let connector = XmppConnector::new(&config).await?;
        let refusals = connector.refusals();
        let timeouts = Timeouts::tight();
        tracing::info!(jid = %config.jid, tls = connector.is_tls(), "connecting");
        let first =
            transport::open_session(&connector, &identity, config.password.expose(), timeouts)
                .await?;
        let closing = Arc::new(watch::channel(false).0);
        let reconnector = reconnector(
            closing.subscribe(),
            first,
            connector,
            identity,
            config.password.clone(),
            timeouts,
            config.reconnect,
        );
        let stream = StanzaStream::new(reconnector, QUEUE_DEPTH);

        let (command_tx, command_rx) = mpsc::channel(QUEUE_DEPTH);
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared_jid = Arc::new(Mutex::new(None));
        let driver = Driver {
            stream,
            commands: command_rx,
            events: event_tx,
            capabilities: config.capabilities,
            own_jid: config.jid,
            bound: None,
            shared_jid: shared_jid.clone(),
            ready: Some(ready_tx),
            online: false,
            refusals,
            closing: Arc::clone(&closing),
            pending: HashMap::new(),
            next_id: rand::random::<u32>().into(),
        };
        tokio::spawn(driver.run());
        // On timeout or failure, dropping the command sender makes the driver close the stream.
        let bound_jid = match tokio::time::timeout(BIND_TIMEOUT, ready_rx).await {
            Ok(Ok(jid)) => jid,
            Ok(Err(_)) => return Err(ConnectError::Xmpp(tokio_xmpp::Error::Disconnected)),
            Err(_) => return Err(ConnectError::Timeout(BIND_TIMEOUT)),
        };
        tracing::info!(%bound_jid, "online");
        let connection = Connection {
            commands: command_tx,
            first_jid: bound_jid,
            bound_jid: shared_jid,
            iq_timeout: config.iq_timeout,
            closing,
        };
        Ok((connection, Events(event_rx)))
    }

    /// Our full JID in the current (or last) session.
    pub fn bound_jid(&self) -> FullJid {
        let current = match self.bound_jid.lock() {
            Ok(jid) => jid.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        current.unwrap_or_else(|| self.first_jid.clone())
    }

    /// Queues a stanza for sending (kept and sent after a reconnect if the connection is down).
    pub async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), Closed> {
        self.commands
            .send(Command::Send(Box::new(stanza.into())))
            .await
            .map_err(|_| Closed)
    }

    /// Sends a stanza and returns a [`Delivery`] that tells whether the server acknowledged
    /// it (XEP-0198).
    pub async fn send_tracked(&self, stanza: impl Into<Stanza>) -> Result<Delivery, Closed> {
        let (reply, token) = oneshot::channel();
        self.commands
            .send(Command::SendTracked {
                stanza: Box::new(stanza.into()),
                reply,
            })
            .await
            .map_err(|_| Closed)?;
        token.await.map_err(|_| Closed)
    }

    /// Sends an IQ `get` or `set` and waits for its `result` (the returned IQ), with the
    /// configured timeout. The IQ gets a fresh id; a response only counts if it comes from the
    /// addressee (for requests without `to`: from our server or our bare JID).
    pub async fn send_iq(&self, iq: Iq) -> Result<Iq, IqError> {
        self.send_iq_with_timeout(iq, self.iq_timeout).await
    }

    /// [`Self::send_iq`] with an explicit timeout.
    pub async fn send_iq_with_timeout(&self, iq: Iq, timeout: Duration) -> Result<Iq, IqError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Iq {
                iq: Box::new(iq),
                reply,
            })
            .await
            .map_err(|_| IqError::Disconnected)?;
        match tokio::time::timeout(timeout, response).await {
            Err(_) => Err(IqError::Timeout(timeout)),
            Ok(Err(_)) => Err(IqError::Disconnected),
            Ok(Ok(result)) => result,
        }
    }

    /// Stops reconnecting and closes the stream; [`Events`] then ends. Returns within a few
    /// seconds in every state: while connected the server gets a clean end of stream (if it
    /// answers within 3 s); while the connection is down, a reconnect attempt
    /// under way or waiting is abandoned and nothing waits for the server. Stanzas still
    /// queued for sending are dropped.
    pub async fn close(&self) {
        self.closing.send_replace(true);
        let closed = async {
            let (ack, done) = oneshot::channel();
            if self.commands.send(Command::Close(ack)).await.is_ok() {
                // An error means the driver is already gone, which is what we want.
                let _ = done.await;
            }
        };
        // The driver answers at once unless it is stuck handing a stanza to a full send
        // queue while the connection is down.
        if tokio::time::timeout(CLOSE_TIMEOUT * 2, closed)
            .await
            .is_err()
        {
            tracing::warn!("the connection task did not confirm the close; leaving it");
        }
    }
}

type Reconnector = Box<dyn FnMut(Option<String>, oneshot::Sender<stanzastream::Connection>) + Send>;

/// A session that ends sooner than this after it was established counts as a failed attempt,
/// so a server that accepts and then drops us at once is retried with growing delays.
const STABLE_SESSION: Duration = Duration::new(60, 0);

/// The `StanzaStream` connector: hands over the already established first session, then
/// reconnects in a task with jittered exponential backoff until it succeeds or the stream is
/// gone. It never drops the slot while the stream wants a connection (the `StanzaStream`
/// treats that as fatal).
fn reconnector(
    closing: watch::Receiver<bool>,
    first: stanzastream::Connection,
    connector: XmppConnector,
    identity: Jid,
    password: Secret,
    timeouts: Timeouts,
    policy: ReconnectPolicy,
) -> Reconnector {
    let mut first = Some(first);
    // When the current session was established, and how many short sessions came before it.
    let connected_at = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let mut short_sessions = 0u32;
    Box::new(move |_preferred_location, mut slot| {
        if let Some(connection) = first.take() {
            if slot.send(connection).is_err() {
                tracing::debug!("stream gone before the first session was handed over");
            }
            return;
        }
        let lasted = match connected_at.lock() {
            Ok(at) => at.elapsed(),
            Err(poisoned) => poisoned.into_inner().elapsed(),
        };
        short_sessions = if lasted < STABLE_SESSION {
            short_sessions.saturating_add(1)
        } else {
            0
        };
        // A normal loss starts at attempt 0; each short session in a row starts one later.
        let first_attempt = short_sessions.saturating_sub(1);
        let connector = connector.clone();
        let identity = identity.clone();
        let password = password.clone();
        let connected_at = connected_at.clone();
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            for attempt in first_attempt.. {
                let delay = policy.delay(attempt, &mut rand::rng());
                if *closing.borrow() {
                    break;
                }
                tracing::info!(attempt, ?delay, "reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = slot.closed() => return,
                    _ = closing.wait_for(|closing| *closing) => break,
                }
                let attempt_result = tokio::select! {
                    result = transport::open_session(&connector, &identity, password.expose(), timeouts) => result,
                    _ = slot.closed() => return,
                    _ = closing.wait_for(|closing| *closing) => break,
                };
                match attempt_result {
                    Ok(connection) => {
                        tracing::info!(attempt, elapsed = ?started.elapsed(), "reconnected");
                        match connected_at.lock() {
                            Ok(mut at) => *at = tokio::time::Instant::now(),
                            Err(poisoned) => *poisoned.into_inner() = tokio::time::Instant::now(),
                        }
                        if slot.send(connection).is_err() {
                            tracing::debug!("stream closed while reconnecting");
                        }
                        return;
                    }
                    Err(error) => tracing::warn!(attempt, %error, "reconnect failed"),
                }
            }
            // Closing: no more attempts. Dropping the slot would make the stream's worker
            // treat the connection as impossible (it panics), so the slot is held until the
            // worker is gone.
            tracing::debug!("closing: reconnecting stopped");
            slot.closed().await;
        });
    })
}

/// Who asked for an IQ response.
enum Waiter {
    Caller(oneshot::Sender<Result<Iq, IqError>>),
    /// Requests the driver sends itself; the name is for the log.
    Internal(&'static str),
}

struct PendingIq {
    to: Option<Jid>,
    waiter: Waiter,
}

struct Driver {
    stream: StanzaStream,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    capabilities: Capabilities,
    own_jid: BareJid,
    bound: Option<FullJid>,
    /// The bound JID as seen by the [`Connection`] handles.
    shared_jid: Arc<Mutex<Option<FullJid>>>,
    ready: Option<oneshot::Sender<FullJid>>,
    pending: HashMap<String, PendingIq>,
    next_id: u64,
    /// Whether a session is up (between a reset or resumption and the next suspension).
    online: bool,
    /// The refused resumptions on the connection's streams; see [`Delivery`].
    refusals: Refusals,
    /// Tells the reconnector to stop.
    closing: Arc<watch::Sender<bool>>,
}

impl Driver {
    async fn run(mut self) {
        let close_ack = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break None,
                    Some(Command::Close(ack)) => break Some(ack),
                    Some(Command::Send(stanza)) => self.send(stanza).await,
                    Some(Command::SendTracked { stanza, reply }) => {
                        let queued = self.refusals.count();
                        let delivery = Delivery {
                            token: self.stream.send(stanza).await,
                            refusals: self.refusals.clone(),
                            queued,
                        };
                        // The caller may have stopped waiting; the stanza goes out anyway.
                        let _ = reply.send(delivery);
                    }
                    Some(Command::Iq { iq, reply }) => self.request(*iq, Waiter::Caller(reply)).await,
                },
                event = self.stream.next() => match event {
                    None => {
                        tracing::warn!("stanza stream ended");
                        self.emit(Event::Offline);
                        break None;
                    }
                    Some(stanzastream::Event::Stream(event)) => self.stream_event(event).await,
                    Some(stanzastream::Event::Stanza(stanza)) => self.stanza(stanza).await,
                },
            }
        };
        self.fail_pending();
        self.closing.send_replace(true);
        if self.online {
            tracing::info!("closing the connection");
            if tokio::time::timeout(CLOSE_TIMEOUT, self.stream.close())
                .await
                .is_err()
            {
                tracing::info!("the server did not confirm the end of the stream in time");
            }
        } else {
            // Nothing to say goodbye to: the stream waits for a connection that will not
            // come. Dropping it abandons the wait.
            tracing::info!("closing while disconnected");
            drop(self.stream);
        }
        if let Some(ack) = close_ack {
            // The caller may have stopped waiting; nothing to do then.
            let _ = ack.send(());
        }
    }

    fn emit(&self, event: Event) {
        if self.events.send(event).is_err() {
            tracing::trace!("event receiver dropped");
        }
    }

    async fn send(&mut self, stanza: Box<Stanza>) {
        // The token reports transmission progress; nobody needs it here.
        let _token = self.stream.send(stanza).await;
    }

    fn fresh_id(&mut self) -> String {
        self.next_id = self.next_id.wrapping_add(1);
        format!("xc-{:x}", self.next_id)
    }

    async fn request(&mut self, mut iq: Iq, waiter: Waiter) {
        if !matches!(iq, Iq::Get { .. } | Iq::Set { .. }) {
            if let Waiter::Caller(reply) = waiter {
                let _ = reply.send(Err(IqError::NotARequest));
            }
            return;
        }
        // Forget callers that gave up (timed out).
        self.pending.retain(|_, p| match &p.waiter {
            Waiter::Caller(reply) => !reply.is_closed(),
            Waiter::Internal(_) => true,
        });
        let id = self.fresh_id();
        *iq.id_mut() = id.clone();
        let to = iq.to().cloned();
        self.pending.insert(id, PendingIq { to, waiter });
        self.send(Box::new(iq.into())).await;
    }

    fn fail_pending(&mut self) {
        for (_, pending) in self.pending.drain() {
            if let Waiter::Caller(reply) = pending.waiter {
                let _ = reply.send(Err(IqError::Disconnected));
            }
        }
    }

    async fn stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Reset { bound_jid, .. } => {
                let bound_jid = match bound_jid.try_into_full() {
                    Ok(full) => full,
                    Err(bare) => {
                        tracing::error!(%bare, "server bound a bare JID; ignoring the session");
                        return;
                    }
                };
                tracing::info!(%bound_jid, "new session");
                self.online = true;
                self.fail_pending();
                self.bound = Some(bound_jid.clone());
                match self.shared_jid.lock() {
                    Ok(mut shared) => *shared = Some(bound_jid.clone()),
                    Err(poisoned) => *poisoned.into_inner() = Some(bound_jid.clone()),
                }
                self.start_session().await;
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(bound_jid.clone());
                }
                self.emit(Event::Online {
                    bound_jid,
                    resumed: false,
                });
            }
            StreamEvent::Resumed => {
                tracing::info!("session resumed");
                self.online = true;
                if let Some(bound_jid) = self.bound.clone() {
                    self.emit(Event::Online {
                        bound_jid,
                        resumed: true,
                    });
                }
            }
            StreamEvent::Suspended => {
                tracing::info!("connection lost");
                self.online = false;
                self.emit(Event::Offline);
            }
        }
    }

    /// Carbons and initial presence with caps, on every fresh session.
    async fn start_session(&mut self) {
        let enable = Iq::from_set(String::new(), carbons::Enable);
        self.request(enable, Waiter::Internal("enable carbons"))
            .await;
        let mut presence = Presence::available();
        if let Some(caps) = self.capabilities.caps() {
            presence.add_payload(caps);
        }
        self.send(Box::new(presence.into())).await;
    }

    async fn stanza(&mut self, stanza: Stanza) {
        match stanza {
            Stanza::Iq(iq) => self.iq(iq).await,
            Stanza::Message(message) => self.message(message),
            Stanza::Presence(presence) => {
                tracing::debug!(from = ?presence.from, type_ = ?presence.type_, "presence");
                self.emit(Event::Presence(Box::new(presence)));
            }
        }
    }

    fn message(&mut self, message: Message) {
        tracing::debug!(from = ?message.from, type_ = ?message.type_, "message");
        let carbon = message.payloads.iter().find_map(|p| {
            if p.is("received", ns::CARBONS) {
                Some(CarbonDirection::Received)
            } else if p.is("sent", ns::CARBONS) {
                Some(CarbonDirection::Sent)
            } else {
                None
            }
        });
        let Some(direction) = carbon else {
            self.emit(Event::Message(Box::new(message)));
            return;
        };
        // XEP-0280 §11: only our own server may send us carbons, from our bare JID.
        let from_us = match &message.from {
            None => true,
            Some(from) => from.is_bare() && from.to_bare() == self.own_jid,
        };
        if !from_us {
            tracing::warn!(from = ?message.from, "dropping a forged carbon");
            return;
        }
        let forwarded = message.payloads.into_iter().find_map(|p| match direction {
            CarbonDirection::Received => carbons::Received::try_from(p).ok().map(|r| r.forwarded),
            CarbonDirection::Sent => carbons::Sent::try_from(p).ok().map(|s| s.forwarded),
        });
        match forwarded {
            Some(forwarded) => self.emit(Event::Carbon {
                direction,
                message: Box::new(forwarded.message),
            }),
            None => tracing::warn!("dropping a malformed carbon"),
        }
    }

    async fn iq(&mut self, iq: Iq) {
        match iq {
            Iq::Get {
                from, id, payload, ..
            } => self.iq_request(from, id, payload, true).await,
            Iq::Set {
                from, id, payload, ..
            } => self.iq_request(from, id, payload, false).await,
            Iq::Result {
                ref from, ref id, ..
            }
            | Iq::Error {
                ref from, ref id, ..
            } => {
                let (from, id) = (from.clone(), id.clone());
                self.iq_response(from, id, iq);
            }
        }
    }

    fn iq_response(&mut self, from: Option<Jid>, id: String, iq: Iq) {
        let Some(pending) = self.pending.get(&id) else {
            tracing::debug!(%id, "IQ response for no request");
            return;
        };
        if !response_from_matches(
            pending.to.as_ref(),
            from.as_ref(),
            &self.own_jid,
            self.bound.as_ref(),
        ) {
            tracing::warn!(%id, ?from, "IQ response from the wrong sender; ignored");
            return;
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let result = match iq {
            Iq::Error { error, .. } => Err(IqError::Stanza(Box::new(error))),
            other => Ok(other),
        };
        match pending.waiter {
            Waiter::Caller(reply) => {
                let _ = reply.send(result);
            }
            Waiter::Internal(what) => match result {
                Ok(_) => tracing::debug!(what, "done"),
                Err(error) => tracing::warn!(what, %error, "failed"),
            },
        }
    }

    async fn iq_request(&mut self, from: Option<Jid>, id: String, payload: Element, get: bool) {
        tracing::debug!(?from, %id, name = payload.name(), ns = payload.ns(), get, "IQ request");
        let response = if get && payload.is("query", ns::DISCO_INFO) {
            match DiscoInfoQuery::try_from(payload) {
                Ok(query) if self.capabilities.answers(&query) => {
                    let info = self.capabilities.disco_info(query.node);
                    Iq::Result {
                        from: None,
                        to: from,
                        id,
                        payload: Some(info.into()),
                    }
                }
                Ok(_) => error_iq(from, id, ErrorType::Cancel, DefinedCondition::ItemNotFound),
                Err(_) => error_iq(from, id, ErrorType::Modify, DefinedCondition::BadRequest),
            }
        } else if get && payload.is("ping", ns::PING) {
            Iq::Result {
                from: None,
                to: from,
                id,
                payload: None,
            }
        } else {
            error_iq(
                from,
                id,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
            )
        };
        self.send(Box::new(response.into())).await;
    }
}

fn error_iq(to: Option<Jid>, id: String, type_: ErrorType, condition: DefinedCondition) -> Iq {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError {
            type_,
            by: None,
            defined_condition: condition,
            texts: Default::default(),
            other: None,
        },
        payload: None,
    }
}

/// RFC 6120 §8.2.3 / §10.3.3: a response counts only if it comes from the entity the request
/// was addressed to. A request without `to` (or to our bare JID) is answered by our server on
/// behalf of the account: without `from`, from our bare JID, or from our server's domain.
fn response_from_matches(
    request_to: Option<&Jid>,
    response_from: Option<&Jid>,
    own: &BareJid,
    bound: Option<&FullJid>,
) -> bool {
    let own_bare: Jid = own.clone().into();
    let own_domain = Jid::from(BareJid::from_parts(None, own.domain()));
    let own_full: Option<Jid> = bound.cloned().map(Into::into);
    let to_account = match request_to {
        None => true,
        Some(to) => *to == own_bare || Some(to) == own_full.as_ref(),
    };
    match response_from {
        None => to_account,
        Some(from) if to_account => {
            *from == own_bare || *from == own_domain || Some(from) == own_full.as_ref()
        }
        Some(from) => Some(from) == request_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn responses_must_come_from_the_addressee() {
        let own = BareJid::new("me@example.org").unwrap();
        let bound = FullJid::new("me@example.org/bot").unwrap();
        let peer = jid("peer@example.org/phone");
        let m = |to: Option<&Jid>, from: Option<&Jid>| {
            response_from_matches(to, from, &own, Some(&bound))
        };
        assert!(m(Some(&peer), Some(&peer)));
        assert!(!m(Some(&peer), Some(&jid("evil@example.org/x"))));
        assert!(!m(Some(&peer), None));
        assert!(!m(Some(&peer), Some(&jid("peer@example.org"))));
        // Requests to our own account are answered by the server.
        assert!(m(None, None));
        assert!(m(None, Some(&jid("me@example.org"))));
        assert!(m(None, Some(&jid("example.org"))));
        assert!(!m(None, Some(&jid("peer@example.org/phone"))));
        assert!(m(Some(&jid("me@example.org")), None));
        assert!(m(
            Some(&jid("me@example.org")),
            Some(&jid("me@example.org"))
        ));
        // A pubsub service answers for itself.
        let pubsub = jid("pubsub.example.org");
        assert!(m(Some(&pubsub), Some(&pubsub)));
        assert!(!m(Some(&pubsub), None));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let config = ConnectionConfig::new(
            BareJid::new("me@example.org").unwrap(),
            Secret::new("hunter2".into()),
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"));
        assert!(printed.contains("Secret(..)"));
    }

    #[test]
    fn error_responses_are_well_formed() {
        let iq = error_iq(
            Some(jid("peer@example.org/x")),
            "a1".into(),
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
        );
        let element: Element = iq.into();
        assert_eq!(element.attr("type"), Some("error"));
        assert_eq!(element.attr("id"), Some("a1"));
        let error = element.get_child("error", ns::DEFAULT_NS).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.has_child("service-unavailable", ns::XMPP_STANZAS));
    }
}
