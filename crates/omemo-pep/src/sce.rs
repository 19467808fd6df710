//! The Stanza Content Encryption envelope (XEP-0420 0.5) as OMEMO 2 uses it
//! (XEP-0384 §sce): the plaintext that `<payload>` encrypts.
//!
//! Outgoing: [`Envelope::new`] fills `<rpad>` with random padding from the caller's RNG;
//! [`Envelope::to_bytes`] gives the bytes to encrypt. Incoming: [`Envelope::from_bytes`]
//! parses the decrypted bytes, [`Envelope::verify_affixes`] checks `<from>` and `<to>` as
//! XEP-0384 §sce asks for one-to-one chats (XEP-0420 §affix_elements) and [`Envelope::sensitive_content`] yields the content minus
//! elements only a server may set.

use rand_core::CryptoRngCore;
use xmpp_parsers::date::DateTime;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xso::{AsXml, FromXml};

use crate::limits::MAX_ENVELOPE_BYTES;
use crate::{ns, Error};

/// Longest random padding we write, in characters (QXmpp pads with up to 200 random bytes).
pub const MAX_RPAD_CHARS: usize = 200;

/// `<content>` (XEP-0420 §envelope): the sensitive stanza children, each with an explicit
/// namespace.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::SCE, name = "content")]
pub struct Content {
    /// The children, in order.
    #[xml(element(n = ..))]
    pub children: Vec<Element>,
}

/// `<envelope xmlns='urn:xmpp:sce:1'>` (XEP-0420 §envelope, §affix_elements).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::SCE, name = "envelope")]
pub struct Envelope {
    /// The encrypted stanza children.
    #[xml(child)]
    pub content: Content,

    /// `<rpad>`: random padding that hides the content length (XEP-0384: MUST).
    #[xml(extract(default, name = "rpad", fields(text(type_ = String))))]
    pub rpad: Option<String>,

    /// `<time stamp>`: when the sender built the envelope (XEP-0384: MAY).
    #[xml(extract(default, name = "time", fields(attribute(name = "stamp", type_ = DateTime))))]
    pub time: Option<DateTime>,

    /// `<to jid>`: the intended recipient (the room in a group chat).
    #[xml(extract(default, name = "to", fields(attribute(name = "jid", type_ = Jid))))]
    pub to: Option<Jid>,

    /// `<from jid>`: the sender.
    #[xml(extract(default, name = "from", fields(attribute(name = "jid", type_ = Jid))))]
    pub from: Option<Jid>,
}

/// Namespaces of elements that only servers add; they are dropped from decrypted content
/// (XEP-0420 §server-processed: hints, stanza ids, addressing, EME).
const SERVER_PROCESSED: &[&str] = &[ns::HINTS, ns::STANZA_ID, ns::ADDRESS, ns::EME];

impl Envelope {
    /// Builds an envelope with `from`, `to`, optional `time` and random padding of
    /// 0..=[`MAX_RPAD_CHARS`] base64 characters drawn from `rng`.
    pub fn new(
        content: Vec<Element>,
        from: BareJid,
        to: BareJid,
        time: Option<DateTime>,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        Self {
            content: Content { children: content },
            rpad: Some(random_padding(rng)),
            time,
            to: Some(Jid::from(to)),
            from: Some(Jid::from(from)),
        }
    }

    /// A `<body xmlns='jabber:client'>` element for the content.
    pub fn body_element(text: &str) -> Element {
        Element::builder("body", ns::JABBER_CLIENT)
            .append(text)
            .build()
    }

    /// The text of the first `<body xmlns='jabber:client'>` in the content.
    pub fn body(&self) -> Option<String> {
        self.content
            .children
            .iter()
            .find(|e| e.is("body", ns::JABBER_CLIENT))
            .map(Element::text)
    }

    /// The content children minus those only a server may set (XEP-0420 §server-processed).
    pub fn sensitive_content(&self) -> impl Iterator<Item = &Element> {
        self.content
            .children
            .iter()
            .filter(|e| !SERVER_PROCESSED.iter().any(|n| e.has_ns(*n)))
    }

    /// Checks the affixes of an envelope received in a one-to-one chat from `sender`,
    /// addressed to `recipient` (our bare JID), as XEP-0384 §sce sets them:
    ///
    /// - `<from>` (the sender SHOULD add it): when present, its bare JID must be `sender`
    ///   ([`Error::SenderMismatch`]); a missing one is accepted. Who sent the message is
    ///   established by the Double Ratchet session, which belongs to the sender's JID and
    ///   device and decrypts nothing from anyone else; `<from>` is a second statement of it.
    /// - `<to>` (required only in group chats, to stop a server from turning a group message
    ///   into a private one): when present, its bare JID must be `recipient`
    ///   ([`Error::RecipientMismatch`]); a missing one is accepted (Converse.js writes it
    ///   only in group chats, and the spec's own example has none).
    /// - `<time>` (MAY) and `<rpad>` (protects the sender's message length) are not checked.
    ///
    /// Group chats need their own rules (`<to>` naming the room is then required); they are
    /// not implemented, and this check must not be used for them.
    pub fn verify_affixes(&self, sender: &BareJid, recipient: &BareJid) -> Result<(), Error> {
        if let Some(from) = &self.from {
            if &from.to_bare() != sender {
                return Err(Error::SenderMismatch {
                    expected: sender.clone(),
                    found: from.to_bare(),
                });
            }
        }
        if let Some(to) = &self.to {
            if &to.to_bare() != recipient {
                return Err(Error::RecipientMismatch {
                    expected: recipient.clone(),
                    found: to.to_bare(),
                });
            }
        }
        Ok(())
    }

    /// Serializes the envelope to the UTF-8 bytes that get encrypted into `<payload>`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        xso::to_vec(self).map_err(|e| Error::from_xso_inner("envelope", e))
    }

    /// Parses decrypted bytes. Invalid XML is rejected (XEP-0420 §rules), and so is anything
    /// over [`MAX_ENVELOPE_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLarge {
                field: "envelope",
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        xso::from_bytes(bytes).map_err(|e| match e {
            xso::error::Error::TypeMismatch => Error::UnexpectedElement {
                expected_name: "envelope",
                expected_ns: ns::SCE,
                found_name: String::new(),
                found_ns: String::new(),
            },
            other => Error::from_xso_inner("envelope", other),
        })
    }
}

/// Draws a padding length uniformly from 0..=MAX_RPAD_CHARS and fills it with base64
/// alphabet characters.
fn random_padding(rng: &mut impl CryptoRngCore) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let range = u32::try_from(MAX_RPAD_CHARS + 1).unwrap_or(u32::MAX);
    // Rejection sampling: accept only values below the largest multiple of `range`.
    let zone = u32::MAX - (u32::MAX % range);
    let len = loop {
        let r = rng.next_u32();
        if r < zone {
            break usize::try_from(r % range).unwrap_or(0);
        }
    };
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 0x3f)]))
        .collect()
}
