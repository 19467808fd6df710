//! Identities: our GUIDs, the form each browser accepts, and matching the nodes of a file
//! without ids against the last synced tree.

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine as _;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::{is_valid_guid, Guid};
use crate::Format;

/// A fresh GUID: 12 random base64url characters (72 bits), the form Firefox uses, so it is
/// also a valid Firefox GUID. The randomness is the caller's.
pub fn new_guid(rng: &mut impl RngCore) -> Guid {
    let mut bytes = [0u8; 9];
    rng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn is_uuid(guid: &str) -> bool {
    let bytes = guid.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_firefox_guid(guid: &str) -> bool {
    guid.len() == 12
        && guid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The GUID written for our `guid` in `format`: Chromium needs a UUID, Firefox 12 base64url
/// characters. A GUID already in that form is kept (lower-cased for Chromium, as Chromium
/// saves it); any other is derived from it with SHA-256, so the same item always gets the
/// same browser GUID and [`record`](super::record) maps it back.
pub fn native_guid(format: Format, guid: &str) -> String {
    let digest = Sha256::digest(guid.as_bytes());
    match format {
        Format::Chromium => {
            if is_uuid(guid) {
                return guid.to_ascii_lowercase();
            }
            let mut b = [0u8; 16];
            b.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
            // Version 4 and RFC 4122 variant bits, so every UUID parser accepts it.
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                hex.get(0..8).unwrap_or_default(),
                hex.get(8..12).unwrap_or_default(),
                hex.get(12..16).unwrap_or_default(),
                hex.get(16..20).unwrap_or_default(),
                hex.get(20..32).unwrap_or_default()
            )
        }
        Format::FirefoxJson | Format::FirefoxJsonLz4 => {
            if is_firefox_guid(guid) {
                return guid.to_owned();
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(digest.get(..9).unwrap_or_default())
        }
        _ => guid.to_owned(),
    }
}

/// Maps browser GUIDs back to ours, for the GUIDs of `known`.
pub(crate) fn reverse_table<'a>(
    format: Format,
    known: impl Iterator<Item = &'a Guid>,
) -> HashMap<String, Guid> {
    known
        .map(|guid| (native_guid(format, guid), guid.clone()))
        .collect()
}

/// The browser GUID read from a node, as our GUID if it can be one.
pub(crate) fn own_form(format: Format, native: &str) -> Option<Guid> {
    let guid = if format == Format::Chromium {
        native.to_ascii_lowercase()
    } else {
        native.to_owned()
    };
    is_valid_guid(&guid).then_some(guid)
}

/// Matching keys of a node of a file without ids.
#[derive(Debug, Clone)]
pub(crate) struct MatchKeys {
    /// Parent path (titles from the top) + kind + URL + title (separators: their index among
    /// the parent's separators instead of the title).
    pub(crate) exact: String,
    /// Kind + URL (bookmarks only).
    pub(crate) url: Option<String>,
    /// Kind + title (bookmarks and folders with a title).
    pub(crate) title: Option<String>,
}

/// Candidates of the last synced tree, by key, in tree order; each GUID is given out once.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    exact: HashMap<String, VecDeque<Guid>>,
    url: HashMap<String, VecDeque<Guid>>,
    title: HashMap<String, VecDeque<Guid>>,
    taken: HashSet<Guid>,
}

impl Matcher {
    /// Adds a candidate (call in tree order).
    pub(crate) fn add(&mut self, guid: &Guid, keys: &MatchKeys) {
        self.exact
            .entry(keys.exact.clone())
            .or_default()
            .push_back(guid.clone());
        if let Some(url) = &keys.url {
            self.url
                .entry(url.clone())
                .or_default()
                .push_back(guid.clone());
        }
        if let Some(title) = &keys.title {
            self.title
                .entry(title.clone())
                .or_default()
                .push_back(guid.clone());
        }
    }

    /// Marks a GUID as given (taken by a node that carried it).
    pub(crate) fn take(&mut self, guid: &Guid) {
        self.taken.insert(guid.clone());
    }

    pub(crate) fn is_taken(&self, guid: &str) -> bool {
        self.taken.contains(guid)
    }

    fn pop(
        map: &mut HashMap<String, VecDeque<Guid>>,
        taken: &mut HashSet<Guid>,
        key: &str,
    ) -> Option<Guid> {
        let queue = map.get_mut(key)?;
        while let Some(guid) = queue.pop_front() {
            if taken.insert(guid.clone()) {
                return Some(guid);
            }
        }
        None
    }

    /// Pass 1: same parent path, URL and title.
    pub(crate) fn exact(&mut self, keys: &MatchKeys) -> Option<Guid> {
        Self::pop(&mut self.exact, &mut self.taken, &keys.exact)
    }

    /// Pass 2: same URL.
    pub(crate) fn by_url(&mut self, keys: &MatchKeys) -> Option<Guid> {
        let key = keys.url.as_deref()?;
        Self::pop(&mut self.url, &mut self.taken, key)
    }

    /// Pass 3: same title.
    pub(crate) fn by_title(&mut self, keys: &MatchKeys) -> Option<Guid> {
        let key = keys.title.as_deref()?;
        Self::pop(&mut self.title, &mut self.taken, key)
    }
}
