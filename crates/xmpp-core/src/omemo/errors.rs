//! The errors of the OMEMO manager.

use super::*;

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
    /// The recipient has no device list in any OMEMO version we send in.
    #[error("{0} does not use OMEMO (no device list)")]
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
    /// A legacy message from a device whose identity (Ed25519 form) we have not yet learned
    /// from one of its bundles.
    #[error("the device's identity key is not known yet (fetch its bundle)")]
    UnknownIdentity,
    /// A legacy body that is not UTF-8 text.
    #[error("the decrypted body is not text")]
    NotText,
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
