//! The canonical JSON: what the client compresses, encrypts and sends.

use serde::{Deserialize, Serialize};

use super::error::{json_syntax, ImportError};
use super::model::{BookmarkTree, Extra, Node};
use super::Format;

/// Value of the `format` field of the canonical JSON.
pub const CANONICAL_FORMAT: &str = "omemo-bookmarks";

/// Version of the canonical JSON this build writes and reads.
pub const CANONICAL_VERSION: u64 = 1;

#[derive(Serialize)]
struct Out<'a> {
    format: &'static str,
    version: u64,
    roots: &'a [Node],
    #[serde(skip_serializing_if = "Extra::is_empty")]
    extra: &'a Extra,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
}

#[derive(Deserialize)]
struct In {
    #[serde(default)]
    roots: Vec<Node>,
    #[serde(default)]
    extra: Extra,
}

pub(crate) fn to_json(tree: &BookmarkTree) -> Result<Vec<u8>, ImportError> {
    // serde_json's `Map` is a `BTreeMap` (no `preserve_order` in this workspace) and `Extra` is
    // one too, so keys come out sorted and the bytes depend on the tree only.
    serde_json::to_vec(&Out {
        format: CANONICAL_FORMAT,
        version: CANONICAL_VERSION,
        roots: &tree.roots,
        extra: &tree.extra,
    })
    .map_err(|e| ImportError::Serialize(e.to_string()))
}

pub(crate) fn from_json(bytes: &[u8]) -> Result<BookmarkTree, ImportError> {
    let format = Format::Canonical;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // Check the header first so a newer version gets a version error, not a field error.
    let header: Header = serde_json::from_slice(bytes).map_err(|e| json_syntax(format, &e))?;
    if header.format != CANONICAL_FORMAT {
        return Err(ImportError::Structure {
            format,
            path: "/format".to_owned(),
            message: format!("expected \"{CANONICAL_FORMAT}\""),
        });
    }
    if header.version != CANONICAL_VERSION {
        return Err(ImportError::UnsupportedVersion {
            found: header.version,
            supported: CANONICAL_VERSION,
        });
    }
    let body: In = serde_json::from_slice(bytes).map_err(|e| json_syntax(format, &e))?;
    Ok(BookmarkTree {
        roots: body.roots,
        extra: body.extra,
    })
}
