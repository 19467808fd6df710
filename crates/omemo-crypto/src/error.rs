//! One error type per operation. None of them carries key material or plaintext.

use crate::ids::{IdRangeError, PreKeyId, SignedPreKeyId};
use crate::keys::{BundleError, KeyError};

/// A protobuf message could not be decoded or failed a check prost does not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// More bytes than any valid message of this kind has.
    #[error("message of {0} bytes is too long")]
    TooLong(usize),
    /// Not a protobuf message of the expected type, or a required field is missing.
    #[error("malformed protobuf")]
    Protobuf,
    /// A byte field has the wrong length.
    #[error("field {field}: expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// The protobuf field name.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The received length.
        actual: usize,
    },
    /// A public key field holds an invalid key.
    #[error("field {0}: {1}")]
    Key(&'static str, KeyError),
    /// An id field is outside 1..=2³¹−1.
    #[error(transparent)]
    Id(IdRangeError),
    /// `OMEMOMessage.ciphertext` is absent.
    #[error("the ciphertext is missing")]
    MissingCiphertext,
    /// `OMEMOMessage.ciphertext` is empty or not a whole number of AES blocks.
    #[error("a ciphertext of {0} bytes is not a whole number of AES blocks")]
    BadCiphertextLength(usize),
    /// Legacy: the version byte is not `0x33`.
    #[error("unsupported message version byte {0:#04x}")]
    UnsupportedVersion(u8),
}

/// A ratchet message could not be decrypted. The session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptionError {
    /// The message key was already used: the message is a duplicate or a replay. XEP-0384
    /// says duplicates are to be ignored silently.
    #[error("duplicate message (its key was already used)")]
    Duplicate,
    /// The message is further ahead in its chain than the skipped-key bound allows.
    #[error("message skips {skipped} keys, more than the limit of {limit}")]
    TooManySkipped {
        /// How many keys the message would skip.
        skipped: u64,
        /// The limit (`MAX_SKIP`).
        limit: u32,
    },
    /// The MAC does not verify: the message was tampered with, or belongs to another session.
    #[error("message authentication failed")]
    BadMac,
    /// The MAC verified but the ciphertext did not decrypt (bad padding).
    #[error("the ciphertext does not decrypt")]
    BadCiphertext,
    /// The session has no sending or receiving chain for this operation.
    #[error("the session cannot receive on this chain yet")]
    NoChain,
    /// A Diffie-Hellman output was all zeros (a non-contributory peer key).
    #[error("non-contributory Diffie-Hellman result")]
    NonContributory,
    /// This key exchange belongs to another session; build a new one from it instead.
    #[error("the key exchange does not belong to this session")]
    ForeignKeyExchange,
    /// A counter overflowed.
    #[error("a message counter overflowed")]
    CounterOverflow,
}

/// A message could not be encrypted. The session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The session has received nothing yet and was not started by us, so it has no sending
    /// chain (only possible for a restored, never-used passive state).
    #[error("the session has no sending chain")]
    NoSendingChain,
    /// The sending counter would overflow.
    #[error("the sending counter overflowed")]
    CounterOverflow,
}

/// A session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionCreationError {
    /// The bundle failed verification.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The chosen pre-key is not in the bundle.
    #[error("pre-key {0} is not in the bundle")]
    UnknownPreKey(PreKeyId),
    /// The key exchange names a signed pre-key other than the one given.
    #[error("the key exchange uses signed pre-key {0}, not the one supplied")]
    SignedPreKeyMismatch(SignedPreKeyId),
    /// The key exchange names a pre-key other than the one given.
    #[error("the key exchange uses pre-key {0}, not the one supplied")]
    PreKeyMismatch(PreKeyId),
    /// A Diffie-Hellman output was all zeros.
    #[error("non-contributory Diffie-Hellman result")]
    NonContributory,
    /// The ratchet message inside the key exchange failed to decrypt.
    #[error("the first message does not decrypt: {0}")]
    Decryption(#[from] DecryptionError),
}

/// The SCE payload could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The key material is not `key ‖ tag` of the version's length (48 bytes in OMEMO 2,
    /// 32 in legacy).
    #[error("key material of {0} bytes has the wrong length")]
    KeyMaterialLength(usize),
    /// Legacy: the `<iv>` is neither 12 nor 16 bytes.
    #[error("an IV of {0} bytes, expected 12 or 16")]
    IvLength(usize),
    /// The payload tag does not verify.
    #[error("payload authentication failed")]
    BadMac,
    /// The tag verified but the ciphertext did not decrypt.
    #[error("the payload does not decrypt")]
    BadCiphertext,
}

/// A session snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No bytes.
    #[error("empty snapshot")]
    Empty,
    /// A format version this code does not know.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u8),
    /// The bytes do not form a valid session state.
    #[error("corrupt snapshot: {0}")]
    Corrupt(&'static str),
    /// The snapshot is a session of the other OMEMO version.
    #[error("the snapshot is a {0:?} session")]
    WrongVersion(crate::ProtocolVersion),
}
