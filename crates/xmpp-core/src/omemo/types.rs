//! The public types the OMEMO manager hands out: decrypted messages, their receipts, send
//! reports, device information and our own identity.

use super::*;

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
    /// The OMEMO version the message came in. Legacy OMEMO has no SCE: nothing inside the
    /// encryption names the sender or the addressee (see the README), and its content is
    /// the body text alone.
    pub version: ProtocolVersion,
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
    /// The answer the manager's [`Responder`] gave, when it was encrypted and committed in the
    /// decryption's own transaction and queued for sending before the message was handed
    /// over; the message then has no receipt (it never enters the inbox: one commit stores
    /// it together with its answer).
    pub answered: Option<SendReport>,
}

/// The program's answer to a decrypted message, given on the store's thread before the
/// decryption commits (see [`OmemoManager::with_responder`]): the content to send back to
/// the sender's account, encrypted like [`OmemoManager::send_answer`] does, or `None` to hand
/// the message over unanswered. It must decide from the message alone and act on nothing:
/// when the commit fails, the message and its answer are gone together and the message is
/// decrypted (and answered) again when it comes again.
pub type Responder = Arc<dyn Fn(&DecryptedMessage) -> Option<Vec<Element>> + Send + Sync>;

/// Keeps a decrypted message in the store's inbox until the program is done with it. The
/// message leaves the inbox when the last clone of its receipt is dropped, or with the
/// commit of an answer sent with [`OmemoManager::send_answer`]. A process that dies before
/// either hands the message to the program again after its restart (at least once).
#[derive(Clone)]
pub struct Receipt(pub(super) Arc<ReceiptInner>);

pub(super) struct ReceiptInner {
    pub(super) id: i64,
    /// The namespace the message came in: its answer goes out in the same one.
    pub(super) namespace: Namespace,
    /// The device that sent it: the answer reaches it even if no device list lists it.
    pub(super) device: DeviceId,
    pub(super) handled: Arc<Removals>,
    /// Counts the message as being with the program, for its sender.
    pub(super) _with_program: WithProgram,
}

/// Counts, per sender, the messages handed to the program and not yet handled: while one
/// is, that sender's next messages are not answered by the [`Responder`], so that its
/// answers leave in the order of the messages (an answer from the program's path could still
/// be on its way).
#[derive(Default)]
pub(super) struct ProgramLoad(Mutex<HashMap<BareJid, usize>>);

impl ProgramLoad {
    /// Counts one message of `sender` until the returned guard is dropped.
    pub(super) fn hold(self: &Arc<Self>, sender: BareJid) -> WithProgram {
        *self.lock().entry(sender.clone()).or_insert(0) += 1;
        WithProgram {
            load: Arc::clone(self),
            sender,
        }
    }

    /// Whether a message of `sender` is with the program.
    pub(super) fn holds(&self, sender: &BareJid) -> bool {
        self.lock().contains_key(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, usize>> {
        // Every update is a single insert, increment or removal.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One message of a sender with the program (see [`ProgramLoad`]).
pub(super) struct WithProgram {
    load: Arc<ProgramLoad>,
    sender: BareJid,
}

impl Drop for WithProgram {
    fn drop(&mut self) {
        let mut counts = self.load.lock();
        if let Some(count) = counts.get_mut(&self.sender) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.sender);
            }
        }
    }
}

impl Drop for ReceiptInner {
    fn drop(&mut self) {
        self.handled.push(self.id);
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receipt({}, {})", self.0.id, self.0.namespace.as_str())
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
    /// Whether the device is in a current device list (of either version).
    pub active: bool,
    /// Its identity key, once known from its bundle or a message.
    pub identity_key: Option<IdentityPublicKey>,
    /// The key's trust level (`None` for our own device or an unknown key).
    pub trust: Option<TrustLevel>,
    /// True for this program's own device.
    pub own: bool,
    /// The OMEMO versions whose device list lists the device (the versions it speaks now),
    /// OMEMO 2 first.
    pub versions: Vec<ProtocolVersion>,
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
