//! Limits against hostile input. Everything a peer or server sends is checked against these
//! before it is stored or handed on; exceeding one gives [`crate::Error::TooMany`],
//! [`crate::Error::TooLarge`] or [`crate::Error::LabelTooLong`].

/// Devices per device list. XEP-0384 sets no limit; real accounts have a handful, and every
/// device costs a session and a bundle fetch.
pub const MAX_DEVICES: usize = 1000;

/// `<key>` elements per `<encrypted>` header, over all recipients (a large group chat).
pub const MAX_KEYS_PER_MESSAGE: usize = 5000;

/// Decoded bytes of one `<key>`. An `OMEMOKeyExchange` is about 200 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Decoded bytes of a `<payload>` (Prosody's default client stanza limit is 256 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// One-time pre-keys per bundle (XEP-0384 recommends about 100).
pub const MAX_PRE_KEYS: usize = 1000;

/// Decoded bytes of one bundle key or signature. The real sizes are 32 and 64; the cap is
/// larger so that a wrong length is reported as such.
pub const MAX_PUBLIC_KEY_BYTES: usize = 256;

/// Legacy: decoded bytes of `<iv>` we read (the accepted lengths are 12 and 16; the cap
/// is larger so that a wrong length is reported as such).
pub const MAX_IV_BYTES: usize = 256;

/// Code points of a label we publish (XEP-0384 §devices: "under 53").
pub const MAX_LABEL_CHARS: usize = 53;

/// Bytes of a label we accept from others (longer labels reject the whole list as oversize).
pub const MAX_INCOMING_LABEL_BYTES: usize = 1024;

/// Decoded bytes of the SCE envelope we accept for parsing.
pub const MAX_ENVELOPE_BYTES: usize = MAX_PAYLOAD_BYTES;
