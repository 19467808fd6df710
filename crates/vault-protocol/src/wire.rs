//! The elements on the wire: `<request/>` and `<answer/>` in [`NS`], one per
//! message, inside the OMEMO 2 SCE `<content>`.
//!
//! ```xml
//! <request xmlns="urn:omemo-bookmarks:vault:1" version="1" id="r-1f2e" part="1" parts="3">
//!   base64 of part 1 of the DEFLATE-compressed JSON of the Request
//! </request>
//! ```
//!
//! Prosody closes a stream on a stanza above 256 KiB. A part carries at most [`PART_CHARS`]
//! characters of base64; OMEMO 2 encrypts the SCE envelope and base64-encodes it again (×4/3),
//! and adds a key element per recipient device, so a part's message stays near 64 KiB:
//! a quarter of the limit, with room for many devices.

use std::collections::BTreeMap;

use base64::Engine as _;
use xmpp_parsers::minidom::rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

use crate::vault::{Answer, Request};
use crate::{NS, VERSION};

/// Base64 characters per part.
pub const PART_CHARS: usize = 48 * 1024;

/// The most parts of one request or answer (with [`PART_CHARS`]: about 190 MB of base64).
pub const MAX_PARTS: usize = 4096;

/// The largest decompressed payload accepted.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// Incomplete messages kept at once; the oldest is dropped beyond.
pub const MAX_PENDING: usize = 64;

/// Why an element is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a vault element.
    #[error("not a vault element")]
    NotVault,
    /// Another protocol version.
    #[error("unsupported vault protocol version {0:?} (this side speaks {VERSION})")]
    Version(String),
    /// A missing or malformed attribute.
    #[error("bad or missing attribute {0}")]
    Attribute(&'static str),
    /// The payload does not decode.
    #[error("the payload does not decode: {0}")]
    Payload(String),
}

/// Which element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `<request/>`.
    Request,
    /// `<answer/>`.
    Answer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Answer => "answer",
        }
    }
}

/// Whether `element` is one of ours (of any version).
pub fn is_vault_element(element: &Element) -> bool {
    element.ns() == NS && (element.name() == "request" || element.name() == "answer")
}

fn encode(kind: Kind, id: &str, payload: &[u8]) -> Vec<Element> {
    let compressed = miniz_oxide::deflate::compress_to_vec(payload, 6);
    let text = base64::engine::general_purpose::STANDARD.encode(compressed);
    // Base64 is ASCII, so any byte offset is a character boundary.
    let pieces: Vec<&str> = if text.is_empty() {
        vec![""]
    } else {
        text.as_bytes()
            .chunks(PART_CHARS)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect()
    };
    let parts = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            Element::builder(kind.name(), NS)
                .attr(xml_ncname!("version").into(), VERSION.to_string())
                .attr(xml_ncname!("id").into(), id)
                .attr(xml_ncname!("part").into(), (i + 1).to_string())
                .attr(xml_ncname!("parts").into(), parts.to_string())
                .append(piece)
                .build()
        })
        .collect()
}

/// The elements of a request, one per message.
///
/// # Errors
/// Only if the state holds values JSON cannot represent.
pub fn encode_request(request: &Request) -> Result<Vec<Element>, serde_json::Error> {
    Ok(encode(
        Kind::Request,
        &request.id,
        &serde_json::to_vec(request)?,
    ))
}

/// The elements of the answer to request `id`, one per message.
///
/// # Errors
/// Only if the state holds values JSON cannot represent.
pub fn encode_answer(id: &str, answer: &Answer) -> Result<Vec<Element>, serde_json::Error> {
    Ok(encode(Kind::Answer, id, &serde_json::to_vec(answer)?))
}

/// Whether a request or answer id is acceptable: 1 to 64 characters of `A-Za-z0-9-_`.
pub fn is_valid_id(id: &str) -> bool {
    bookmarks::sync::is_valid_guid(id)
}

/// One part, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Request or answer.
    pub kind: Kind,
    /// The request id.
    pub id: String,
    /// 1-based.
    pub part: usize,
    /// How many.
    pub parts: usize,
    /// This part's base64.
    pub data: String,
}

impl Part {
    /// Parses an element.
    ///
    /// # Errors
    /// [`WireError`].
    pub fn parse(element: &Element) -> Result<Part, WireError> {
        if !is_vault_element(element) {
            return Err(WireError::NotVault);
        }
        let kind = if element.name() == "request" {
            Kind::Request
        } else {
            Kind::Answer
        };
        let version = element.attr("version").unwrap_or_default();
        if version != VERSION.to_string() {
            return Err(WireError::Version(version.to_owned()));
        }
        let id = element
            .attr("id")
            .filter(|id| is_valid_id(id))
            .ok_or(WireError::Attribute("id"))?;
        let number = |name: &'static str| {
            element
                .attr(name)
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(WireError::Attribute(name))
        };
        let (part, parts) = (number("part")?, number("parts")?);
        if !(1..=MAX_PARTS).contains(&parts) {
            return Err(WireError::Attribute("parts"));
        }
        if !(1..=parts).contains(&part) {
            return Err(WireError::Attribute("part"));
        }
        let data = element.text();
        if data.len() > PART_CHARS {
            return Err(WireError::Payload("a part is larger than allowed".into()));
        }
        Ok(Part {
            kind,
            id: id.to_owned(),
            part,
            parts,
            data,
        })
    }
}

/// A request or answer put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// Request or answer.
    pub kind: Kind,
    /// The request id.
    pub id: String,
    /// The decompressed JSON.
    pub payload: Vec<u8>,
}

impl Complete {
    /// The request it carries.
    ///
    /// # Errors
    /// [`WireError::Payload`] for another kind, bad JSON or an id that differs from the
    /// element's.
    pub fn request(&self) -> Result<Request, WireError> {
        if self.kind != Kind::Request {
            return Err(WireError::Payload("not a request".into()));
        }
        let request: Request =
            serde_json::from_slice(&self.payload).map_err(|e| WireError::Payload(e.to_string()))?;
        if request.id != self.id {
            return Err(WireError::Payload("the request id does not match".into()));
        }
        Ok(request)
    }

    /// The answer it carries.
    ///
    /// # Errors
    /// [`WireError::Payload`] for another kind or bad JSON.
    pub fn answer(&self) -> Result<Answer, WireError> {
        if self.kind != Kind::Answer {
            return Err(WireError::Payload("not an answer".into()));
        }
        serde_json::from_slice(&self.payload).map_err(|e| WireError::Payload(e.to_string()))
    }
}

/// Sender, kind, id.
type PendingKey = (String, Kind, String);

/// Puts parts back together, per sender and id. Parts may come in any order; a repeated part
/// replaces the earlier copy.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: BTreeMap<PendingKey, (u64, Vec<Option<String>>)>,
    counter: u64,
}

impl Assembler {
    /// Adds a part from `sender`; the whole request or answer once its last part is in.
    ///
    /// # Errors
    /// [`WireError`] for a malformed part (dropped, the others kept) or a payload that does
    /// not decode (its parts are dropped).
    pub fn add(&mut self, sender: &str, element: &Element) -> Result<Option<Complete>, WireError> {
        let part = Part::parse(element)?;
        let key = (sender.to_owned(), part.kind, part.id.clone());
        self.counter += 1;
        let counter = self.counter;
        let entry = self
            .pending
            .entry(key.clone())
            .or_insert_with(|| (counter, vec![None; part.parts]));
        if entry.1.len() != part.parts {
            // Another message with the same id: start over with this one.
            *entry = (counter, vec![None; part.parts]);
        }
        entry.0 = counter;
        entry.1[part.part - 1] = Some(part.data);
        if entry.1.iter().any(Option::is_none) {
            while self.pending.len() > MAX_PENDING {
                let oldest = self
                    .pending
                    .iter()
                    .min_by_key(|(_, (c, _))| *c)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.pending.remove(&k),
                    None => break,
                };
            }
            return Ok(None);
        }
        let Some((_, pieces)) = self.pending.remove(&key) else {
            return Ok(None);
        };
        let text: String = pieces.into_iter().flatten().collect();
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| WireError::Payload(e.to_string()))?;
        let payload = miniz_oxide::inflate::decompress_to_vec_with_limit(&compressed, MAX_PAYLOAD)
            .map_err(|e| WireError::Payload(format!("{e:?}")))?;
        Ok(Some(Complete {
            kind: key.1,
            id: key.2,
            payload,
        }))
    }
}
