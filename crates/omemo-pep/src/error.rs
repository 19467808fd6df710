//! The crate's error type.

use omemo_crypto::{BundleError, IdRangeError, KeyError};
use xmpp_parsers::jid::BareJid;
use xso::error::FromElementError;

use crate::codec::CodecError;

/// Everything that can go wrong while reading, checking or building OMEMO XML (OMEMO 2 and
/// legacy).
///
/// Display strings never contain key material, message content or JIDs; the JIDs of an
/// affix mismatch are in the variant's fields for the caller to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The element has a different name or namespace than the type expects (for example a
    /// legacy `eu.siacs.conversations.axolotl` element given to an OMEMO 2 parser).
    #[error("expected <{expected_name} xmlns='{expected_ns}'>, got a different element")]
    UnexpectedElement {
        /// The element name the parser wanted.
        expected_name: &'static str,
        /// The namespace the parser wanted.
        expected_ns: &'static str,
        /// The name of the element that was given.
        found_name: String,
        /// The namespace of the element that was given.
        found_ns: String,
    },
    /// The element's structure is wrong: a required attribute or child is missing, a
    /// single child appears twice, or text appears where none is allowed.
    #[error("malformed <{element}>: {reason}")]
    Malformed {
        /// The top-level element being parsed.
        element: &'static str,
        /// What the XML parser reported (no user data).
        reason: String,
    },
    /// The bytes are not well-formed XML (for example a decrypted SCE envelope).
    #[error("not well-formed XML: {0}")]
    InvalidXml(String),
    /// A base64 text node does not decode (XEP-0384 uses standard base64 with padding).
    #[error("<{field}> is not valid base64")]
    InvalidBase64 {
        /// The element or attribute that held the text.
        field: &'static str,
    },
    /// An attribute that must be a number is not a decimal `u32`.
    #[error("attribute value is not a valid number")]
    InvalidNumber,
    /// An attribute that must be an `xs:boolean` is something else.
    #[error("attribute value is not a valid boolean")]
    InvalidBoolean,
    /// A JID attribute does not parse as a bare JID.
    #[error("invalid or non-bare JID")]
    InvalidJid,
    /// A device, pre-key or signed pre-key id lies outside `1..=2³¹−1`.
    #[error(transparent)]
    IdOutOfRange(#[from] IdRangeError),
    /// Legacy: `<iv>` is neither 12 nor 16 bytes long.
    #[error("an <iv> of {0} bytes; 12 or 16 expected")]
    InvalidIvLength(usize),
    /// A public key or signature has the wrong length or is not a valid curve point.
    #[error("invalid <{field}>: {source}")]
    InvalidKey {
        /// Which element held the key (`ik`, `spk`, `spks`, `pk`, `labelsig`; legacy:
        /// `identityKey`, `signedPreKeyPublic`, `signedPreKeySignature`, `preKeyPublic`).
        field: &'static str,
        /// Why the key was refused.
        source: KeyError,
    },
    /// The bundle is inconsistent (bad signed pre-key signature, no pre-keys).
    #[error(transparent)]
    InvalidBundle(#[from] BundleError),
    /// The same id appears twice where ids must be unique.
    #[error("{kind} {id} appears more than once")]
    DuplicateId {
        /// Which kind of id (`device id`, `pre-key id`, `rid`).
        kind: &'static str,
        /// The repeated value.
        id: u32,
    },
    /// Two `<keys>` elements of one `<header>` name the same JID.
    #[error("two <keys> elements name the same JID")]
    DuplicateJid(BareJid),
    /// A list is longer than this crate accepts (see the `MAX_*` constants).
    #[error("too many {what}: the limit is {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A value is larger than this crate accepts (see the `MAX_*` constants).
    #[error("<{field}> is too large: the limit is {limit} bytes")]
    TooLarge {
        /// The element or attribute that was too large.
        field: &'static str,
        /// The limit in bytes (decoded bytes for base64 values).
        limit: usize,
    },
    /// A label we were asked to publish is longer than XEP-0384 allows.
    #[error("the device label has more than {limit} characters")]
    LabelTooLong {
        /// The limit in Unicode code points.
        limit: usize,
    },
    /// The SCE `<from>` affix does not name the stanza's sender (XEP-0420 §affix_elements).
    #[error("the SCE <from> affix does not match the stanza sender")]
    SenderMismatch {
        /// The bare JID the stanza came from.
        expected: BareJid,
        /// The bare JID the envelope claims.
        found: BareJid,
    },
    /// The SCE `<to>` affix does not name us (or the room, in a group chat).
    #[error("the SCE <to> affix does not match the intended recipient")]
    RecipientMismatch {
        /// The bare JID the caller expected.
        expected: BareJid,
        /// The bare JID the envelope names.
        found: BareJid,
    },
    /// A PEP answer does not have the shape of the request it answers (wrong IQ type, wrong
    /// node, missing `<pubsub>`, an item with another id).
    #[error("unexpected PEP response: {0}")]
    UnexpectedResponse(&'static str),
}

impl Error {
    /// Converts an xso parse error for the element `element` (namespace `ns`).
    pub(crate) fn from_xso(element: &'static str, ns: &'static str, err: FromElementError) -> Self {
        match err {
            FromElementError::Mismatch(elem) => Self::UnexpectedElement {
                expected_name: element,
                expected_ns: ns,
                found_name: elem.name().to_owned(),
                found_ns: elem.ns(),
            },
            FromElementError::Invalid(err) => Self::from_xso_inner(element, err),
        }
    }

    /// Converts an xso error raised while parsing the element `element`.
    pub(crate) fn from_xso_inner(element: &'static str, err: xso::error::Error) -> Self {
        use xso::error::Error as X;
        match err {
            X::TextParseError(inner) => {
                let inner = match inner.downcast::<CodecError>() {
                    Ok(codec) => return (*codec).into(),
                    Err(other) => other,
                };
                if inner.is::<core::num::ParseIntError>() {
                    Self::InvalidNumber
                } else if inner.is::<core::str::ParseBoolError>() {
                    Self::InvalidBoolean
                } else if inner.is::<xmpp_parsers::jid::Error>() {
                    Self::InvalidJid
                } else {
                    Self::Malformed {
                        element,
                        reason: inner.to_string(),
                    }
                }
            }
            X::XmlError(e) => Self::InvalidXml(e.to_string()),
            X::TypeMismatch => Self::Malformed {
                element,
                reason: "unexpected element".to_owned(),
            },
            other => Self::Malformed {
                element,
                reason: other.to_string(),
            },
        }
    }
}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Self {
        match err {
            CodecError::InvalidBase64 { field } => Self::InvalidBase64 { field },
            CodecError::TooLarge { field, limit } => Self::TooLarge { field, limit },
        }
    }
}
