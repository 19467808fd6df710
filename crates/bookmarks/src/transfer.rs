//! The transfer format: a bookmark tree as a versioned document, compressed and cut into chunks
//! that fit in one message each (sans-IO).
//!
//! Each chunk is one message body:
//!
//! ```text
//! omemo-bookmarks/1 <transfer id> <index>/<count> <sha-256 of the whole document, hex> <base64 data>
//! ```
//!
//! The document is the canonical JSON of [`BookmarkTree`], compressed with DEFLATE (RFC 1951).
//! Every chunk carries the document hash, so a receiver can check the reassembled document
//! and tell chunks of different transfers apart even when the transfer id repeats.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{BookmarkTree, ImportError};

/// The prefix and version of every chunk.
pub const CHUNK_PREFIX: &str = "omemo-bookmarks/1";
/// Base64 characters of data per chunk. With the envelope, the encryption and the bot's
/// `Your message: ` prefix, a chunk stays well under 64 KiB per stanza, the smallest stanza
/// limit common servers use (Prosody's default is 256 KiB).
pub const CHUNK_DATA_CHARS: usize = 16 * 1024;
/// The largest decompressed document a receiver accepts (the importers' limit).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// The most chunks one transfer may have.
pub const MAX_CHUNKS: usize = 10_000;

/// Why a transfer could not be built or reassembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The tree could not be serialized.
    #[error("cannot serialize the bookmarks: {0}")]
    Serialize(#[from] ImportError),
    /// A chunk does not have the expected shape.
    #[error("malformed chunk: {0}")]
    Malformed(&'static str),
    /// Chunks of different transfers, or a chunk missing or repeated.
    #[error("inconsistent chunks: {0}")]
    Inconsistent(&'static str),
    /// The reassembled document does not match its hash.
    #[error("the reassembled document does not match its hash")]
    HashMismatch,
    /// The document does not decompress (or is larger than the limit).
    #[error("the document does not decompress")]
    Decompress,
    /// More chunks than [`MAX_CHUNKS`].
    #[error("the document needs {0} chunks, more than the limit of {MAX_CHUNKS}")]
    TooLarge(usize),
}

/// A document ready to send: its chunks and sizes.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The transfer id every chunk carries.
    pub transfer_id: String,
    /// The message bodies, in order.
    pub chunks: Vec<String>,
    /// Size of the canonical JSON.
    pub document_bytes: usize,
    /// Size after compression.
    pub compressed_bytes: usize,
    /// SHA-256 of the compressed document, hex.
    pub sha256: String,
    /// SHA-256 of the canonical JSON (before compression), hex: what the document a receiver
    /// reassembles must hash to.
    pub document_sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl Transfer {
    /// Serializes, compresses and cuts `tree`. `transfer_id` names the transfer (letters,
    /// digits, `-`).
    pub fn new(tree: &BookmarkTree, transfer_id: &str) -> Result<Self, TransferError> {
        let document = tree.to_canonical_json()?;
        Self::from_document(&document, transfer_id)
    }

    fn from_document(document: &[u8], transfer_id: &str) -> Result<Self, TransferError> {
        if transfer_id.is_empty()
            || !transfer_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(TransferError::Malformed("transfer id"));
        }
        let compressed = miniz_oxide::deflate::compress_to_vec(document, 9);
        let sha256 = hex(&Sha256::digest(&compressed));
        let data = base64::engine::general_purpose::STANDARD.encode(&compressed);
        let pieces: Vec<&str> = data
            .as_bytes()
            .chunks(CHUNK_DATA_CHARS)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        let count = pieces.len().max(1);
        if count > MAX_CHUNKS {
            return Err(TransferError::TooLarge(count));
        }
        let chunks = if pieces.is_empty() {
            vec![format!("{CHUNK_PREFIX} {transfer_id} 1/1 {sha256} ")]
        } else {
            pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| {
                    format!(
                        "{CHUNK_PREFIX} {transfer_id} {}/{count} {sha256} {piece}",
                        i + 1
                    )
                })
                .collect()
        };
        Ok(Self {
            transfer_id: transfer_id.to_owned(),
            chunks,
            document_bytes: document.len(),
            compressed_bytes: compressed.len(),
            sha256,
            document_sha256: sha256_hex(document),
        })
    }
}

/// One parsed chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The transfer id.
    pub transfer_id: &'a str,
    /// 1-based index.
    pub index: usize,
    /// Number of chunks.
    pub count: usize,
    /// Document hash, hex.
    pub sha256: &'a str,
    /// Base64 data.
    pub data: &'a str,
}

impl<'a> Chunk<'a> {
    /// Parses a message body.
    pub fn parse(body: &'a str) -> Result<Self, TransferError> {
        let mut parts = body.splitn(5, ' ');
        if parts.next() != Some(CHUNK_PREFIX) {
            return Err(TransferError::Malformed("prefix"));
        }
        let transfer_id = parts
            .next()
            .ok_or(TransferError::Malformed("transfer id"))?;
        let (index, count) = parts
            .next()
            .and_then(|p| p.split_once('/'))
            .ok_or(TransferError::Malformed("index"))?;
        let index: usize = index
            .parse()
            .map_err(|_| TransferError::Malformed("index"))?;
        let count: usize = count
            .parse()
            .map_err(|_| TransferError::Malformed("count"))?;
        if index == 0 || index > count || count > MAX_CHUNKS {
            return Err(TransferError::Malformed("index out of range"));
        }
        let sha256 = parts.next().ok_or(TransferError::Malformed("hash"))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TransferError::Malformed("hash"));
        }
        let data = parts.next().ok_or(TransferError::Malformed("data"))?;
        Ok(Self {
            transfer_id,
            index,
            count,
            sha256,
            data,
        })
    }
}

/// Puts a document back together from its chunks (in any order) and checks it.
pub fn reassemble<'a>(
    bodies: impl IntoIterator<Item = &'a str>,
) -> Result<BookmarkTree, TransferError> {
    Ok(BookmarkTree::from_canonical_json(&reassemble_document(
        bodies,
    )?)?)
}

/// Like [`reassemble`], but returns the document itself (the canonical JSON, decompressed and
/// checked against its hash) without parsing it.
pub fn reassemble_document<'a>(
    bodies: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<u8>, TransferError> {
    let mut chunks: Vec<Chunk<'a>> = bodies
        .into_iter()
        .map(Chunk::parse)
        .collect::<Result<_, _>>()?;
    let first = chunks
        .first()
        .ok_or(TransferError::Inconsistent("no chunks"))?
        .clone();
    if chunks.iter().any(|c| {
        c.transfer_id != first.transfer_id || c.count != first.count || c.sha256 != first.sha256
    }) {
        return Err(TransferError::Inconsistent("chunks of different transfers"));
    }
    chunks.sort_by_key(|c| c.index);
    if chunks.len() != first.count || chunks.iter().enumerate().any(|(i, c)| c.index != i + 1) {
        return Err(TransferError::Inconsistent("missing or repeated chunks"));
    }
    let data: String = chunks.iter().map(|c| c.data).collect();
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| TransferError::Malformed("base64"))?;
    if hex(&Sha256::digest(&compressed)) != first.sha256 {
        return Err(TransferError::HashMismatch);
    }
    miniz_oxide::inflate::decompress_to_vec_with_limit(&compressed, MAX_DOCUMENT_BYTES)
        .map_err(|_| TransferError::Decompress)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate as bookmarks;
    use crate::Format;

    /// `count` bookmarks with distinct URLs, dates and non-ASCII titles (also used by the
    /// send tests).
    pub(crate) fn sample(count: usize) -> BookmarkTree {
        let mut html = String::from("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n");
        for i in 0..count {
            html.push_str(&format!(
                "<DT><A HREF=\"https://example.org/page/{i}?q={}\" ADD_DATE=\"{}\">Page {i} — Ünïcödé</A>\n",
                i * 7919 % 1000,
                1_600_000_000 + i
            ));
        }
        html.push_str("</DL><p>\n");
        bookmarks::import(html.as_bytes(), Format::NetscapeHtml).unwrap()
    }

    #[test]
    fn chunks_reassemble_to_the_same_tree_in_any_order() {
        let tree = sample(5000);
        let transfer = Transfer::new(&tree, "t-1").unwrap();
        assert!(
            transfer.chunks.len() > 1,
            "5,000 bookmarks need several chunks"
        );
        assert!(transfer.compressed_bytes < transfer.document_bytes);
        for chunk in &transfer.chunks {
            assert!(chunk.len() <= CHUNK_DATA_CHARS + 200);
        }
        let mut reversed: Vec<&str> = transfer.chunks.iter().map(String::as_str).collect();
        reversed.reverse();
        assert_eq!(reassemble(reversed).unwrap(), tree);
    }

    #[test]
    fn missing_foreign_and_tampered_chunks_are_refused() {
        let tree = sample(3000);
        let transfer = Transfer::new(&tree, "t-2").unwrap();
        let all: Vec<&str> = transfer.chunks.iter().map(String::as_str).collect();
        assert!(matches!(
            reassemble(all[1..].iter().copied()),
            Err(TransferError::Inconsistent(_))
        ));
        let other = Transfer::new(&sample(10), "t-3").unwrap();
        let mut mixed = all.clone();
        mixed[0] = &other.chunks[0];
        assert!(reassemble(mixed).is_err());
        let tampered = all[0].replacen('A', "B", 1);
        let mut with_tampered = all.clone();
        with_tampered[0] = &tampered;
        assert!(reassemble(with_tampered).is_err());
        for bad in [
            "",
            "hello",
            "omemo-bookmarks/1 x 0/1 00 data",
            "omemo-bookmarks/1 x 2/1 ab d",
        ] {
            assert!(Chunk::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Transfer::new(&tree, "bad id").is_err());
    }

    #[test]
    fn an_empty_tree_is_one_chunk() {
        let tree = BookmarkTree::default();
        let transfer = Transfer::new(&tree, "empty").unwrap();
        assert_eq!(transfer.chunks.len(), 1);
        assert_eq!(
            reassemble(transfer.chunks.iter().map(String::as_str)).unwrap(),
            tree
        );
    }
}
