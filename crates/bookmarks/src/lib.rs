//! Bookmarks without a provider: one model for every browser format, and the sans-IO heart
//! of bookmark sync.
//!
//! - Import and export: every importer produces one [`BookmarkTree`]; see [`Format`] for what
//!   each source keeps. Unknown source fields land in `extra` maps so the canonical JSON
//!   ([`BookmarkTree::to_canonical_json`]) and the exporters round-trip them.
//! - [`transfer`]: the tree as a compressed, chunked, hash-checked document.
//!
//! Nothing here does network I/O, reads a clock or uses a global random number generator:
//! times, ids and randomness are passed in. The one exception is [`import_file`], which reads
//! a file (the size check has to happen before the read).
//!
//! Limits, all checked before the work they bound:
//! - files above [`MAX_IMPORT_SIZE`] are refused by [`import_file`] from their metadata,
//!   before any byte is read, and by [`import`] for in-memory input; the same limit bounds the
//!   declared decompressed size of a `.jsonlz4` file;
//! - folders nested deeper than [`MAX_DEPTH`] are refused (this keeps every recursive walk,
//!   serde_json's own recursion limit and `Drop` far from the stack limit).
//!
//! Untrusted input never panics: every malformed file is an [`ImportError`].
//!
//! ```
//! use bookmarks::Format;
//!
//! let html = br#"<!DOCTYPE NETSCAPE-Bookmark-file-1>
//! <DL><p>
//!     <DT><H3 ADD_DATE="1700000000">Rust &amp; friends</H3>
//!     <DL><p>
//!         <DT><A HREF="https://www.rust-lang.org/" TAGS="lang,rust">Rust</A>
//!         <HR>
//!     </DL><p>
//! </DL><p>"#;
//!
//! let format = bookmarks::detect(html, None)?;
//! assert_eq!(format, Format::NetscapeHtml);
//! let tree = bookmarks::import(html, format)?;
//! let stats = tree.stats();
//! assert_eq!((stats.folders, stats.bookmarks, stats.separators), (1, 1, 1));
//!
//! // The canonical JSON is deterministic and reads back to the same tree, extras included.
//! let json = tree.to_canonical_json()?;
//! assert_eq!(bookmarks::BookmarkTree::from_canonical_json(&json)?, tree);
//!
//! // Netscape HTML is the export every browser can import.
//! let exported = tree.to_netscape_html();
//! assert!(exported.contains("Rust &amp; friends"));
//! # Ok::<(), bookmarks::ImportError>(())
//! ```

mod canonical;
mod chromium;
mod error;
mod firefox;
mod json_source;
mod model;
mod netscape;
mod xbel;

pub mod sync;
pub mod transfer;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

pub use canonical::{CANONICAL_FORMAT, CANONICAL_VERSION};
pub use error::ImportError;
pub use firefox::compress_mozlz4;
pub use model::{Bookmark, BookmarkTree, Extra, Folder, FolderRole, Node, Separator, Stats};

/// Largest bookmark file accepted, in bytes (64 MiB). A large real profile (tens of thousands
/// of bookmarks with favicons in HTML) is a few MiB.
pub const MAX_IMPORT_SIZE: u64 = 64 * 1024 * 1024;

/// Deepest folder nesting accepted. Real trees rarely exceed ten levels.
pub const MAX_DEPTH: usize = 40;

/// A bookmark file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Falkon `bookmarks.json` (`roots` `bookmark_bar`/`bookmark_menu`/`other`): titles,
    /// URLs, descriptions, keywords, separators; no dates. `visit_count`, `expanded`, … kept as
    /// extras.
    Falkon,
    /// Firefox JSON backup (`bookmarks-*.json`): titles, URLs, tags, keywords, `dateAdded`,
    /// `lastModified`, separators, roots; descriptions from old `annos`; `guid`, `iconUri`,
    /// `postData`, … kept as extras.
    FirefoxJson,
    /// Firefox compressed backup (`.jsonlz4`, `.baklz4`): mozLz4 (`mozLz40\0`, 4-byte LE
    /// decompressed size, one LZ4 block) around [`Format::FirefoxJson`].
    FirefoxJsonLz4,
    /// Chromium-family `Bookmarks` (Chrome, Chromium, Edge, Brave, Vivaldi): titles, URLs,
    /// `date_added`, `date_modified`, `date_last_used` (WebKit epoch, converted), roots;
    /// `guid`, `id`, `meta_info`, `checksum`, … kept as extras. Chromium has no separators.
    Chromium,
    /// Netscape bookmark HTML, the export format of every browser. Read leniently (unclosed
    /// `<DT>`/`<p>`, any case, named and numeric entities, truncated files): titles, URLs,
    /// `<DD>` descriptions, `TAGS`, `SHORTCUTURL`, `ADD_DATE`, `LAST_MODIFIED`, `LAST_VISIT`
    /// (seconds), `<HR>` separators, `PERSONAL_TOOLBAR_FOLDER`/`UNFILED_BOOKMARKS_FOLDER`;
    /// other attributes (`ICON`, `ICON_URI`, …) kept as upper-case extras.
    NetscapeHtml,
    /// XBEL 1.0: folders, bookmarks, separators, titles, `<desc>`, `added`/`modified`/
    /// `visited` (ISO 8601); `id`, `folded`, other attributes and the raw XML of `<info>` kept
    /// as extras. `<alias>` and unknown elements are skipped.
    Xbel,
    /// This crate's canonical JSON (`{"format":"omemo-bookmarks","version":1,…}`): everything.
    Canonical,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 7] = [
        Format::Falkon,
        Format::FirefoxJson,
        Format::FirefoxJsonLz4,
        Format::Chromium,
        Format::NetscapeHtml,
        Format::Xbel,
        Format::Canonical,
    ];

    /// The command-line name (`--format NAME`), accepted back by [`Format::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            Format::Falkon => "falkon",
            Format::FirefoxJson => "firefox-json",
            Format::FirefoxJsonLz4 => "firefox-jsonlz4",
            Format::Chromium => "chromium",
            Format::NetscapeHtml => "html",
            Format::Xbel => "xbel",
            Format::Canonical => "canonical",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Falkon => "Falkon bookmarks.json",
            Format::FirefoxJson => "Firefox JSON backup",
            Format::FirefoxJsonLz4 => "Firefox .jsonlz4 backup",
            Format::Chromium => "Chromium Bookmarks",
            Format::NetscapeHtml => "Netscape bookmark HTML",
            Format::Xbel => "XBEL",
            Format::Canonical => "canonical bookmark JSON",
        })
    }
}

/// An unknown `--format` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bookmark format `{0}` (expected auto, falkon, firefox-json, firefox-jsonlz4, chromium, html, xbel or canonical)")]
pub struct UnknownFormatName(pub String);

impl FromStr for Format {
    type Err = UnknownFormatName;

    /// Parses a [`Format::name`] (case-insensitive; `netscape` and `netscape-html` are accepted
    /// for `html`, `firefox` for `firefox-json`). `auto` is not a format: map it to `None` for
    /// [`import_file`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "netscape" | "netscape-html" => return Ok(Format::NetscapeHtml),
            "firefox" => return Ok(Format::FirefoxJson),
            "jsonlz4" => return Ok(Format::FirefoxJsonLz4),
            _ => {}
        }
        Format::ALL
            .into_iter()
            .find(|f| f.name() == lower)
            .ok_or_else(|| UnknownFormatName(s.to_owned()))
    }
}

/// Guesses the format of `bytes` from its content; `path` (the file name) only breaks the
/// tie between Chromium and Falkon when the content has no marker of either.
///
/// # Errors
/// [`ImportError::Empty`] for empty or blank input, [`ImportError::UnknownFormat`] otherwise
/// when nothing matches.
pub fn detect(bytes: &[u8], path: Option<&Path>) -> Result<Format, ImportError> {
    if bytes.starts_with(firefox::MOZLZ4_MAGIC) {
        return Ok(Format::FirefoxJsonLz4);
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(ImportError::Empty);
    };
    let text = text.get(start..).unwrap_or_default();
    let head = text.get(..64 * 1024).unwrap_or(text);
    match text.first() {
        Some(b'{') => {
            if contains(head, b"\"omemo-bookmarks\"") {
                return Ok(Format::Canonical);
            }
            if contains(head, b"\"text/x-moz-place") || contains(head, b"\"typeCode\"") {
                return Ok(Format::FirefoxJson);
            }
            if !contains(text, b"\"roots\"") {
                return Err(ImportError::UnknownFormat);
            }
            if contains(text, b"\"bookmark_menu\"")
                || contains(text, b"\"expanded_sidebar\"")
                || contains(text, b"\"visit_count\"")
            {
                return Ok(Format::Falkon);
            }
            if contains(text, b"\"checksum\"")
                || contains(text, b"\"date_added\"")
                || contains(text, b"\"guid\"")
                || contains(text, b"\"synced\"")
            {
                return Ok(Format::Chromium);
            }
            let name = path
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("bookmarks.json") {
                Ok(Format::Falkon)
            } else {
                Ok(Format::Chromium)
            }
        }
        Some(b'<') => {
            let lower = head.to_ascii_lowercase();
            if contains(&lower, b"<!doctype netscape-bookmark-file") {
                Ok(Format::NetscapeHtml)
            } else if contains(&lower, b"<xbel") {
                Ok(Format::Xbel)
            } else if contains(&lower, b"<dl")
                && (contains(&lower, b"<dt") || contains(&lower, b"<a "))
            {
                Ok(Format::NetscapeHtml)
            } else {
                Err(ImportError::UnknownFormat)
            }
        }
        _ => Err(ImportError::UnknownFormat),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Imports `bytes` in `format`.
///
/// # Errors
/// Any [`ImportError`] but `Io`; input above [`MAX_IMPORT_SIZE`] is `TooLarge`.
pub fn import(bytes: &[u8], format: Format) -> Result<BookmarkTree, ImportError> {
    let size = bytes.len() as u64;
    if size > MAX_IMPORT_SIZE {
        return Err(ImportError::TooLarge {
            size,
            limit: MAX_IMPORT_SIZE,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty);
    }
    let tree = match format {
        Format::Falkon => chromium::import(bytes, chromium::Dialect::Falkon)?,
        Format::Chromium => chromium::import(bytes, chromium::Dialect::Chromium)?,
        Format::FirefoxJson => firefox::import_json(bytes)?,
        Format::FirefoxJsonLz4 => firefox::import_jsonlz4(bytes)?,
        Format::NetscapeHtml => netscape::import(bytes)?,
        Format::Xbel => xbel::import(bytes)?,
        Format::Canonical => canonical::from_json(bytes)?,
    };
    if tree.depth() > MAX_DEPTH {
        return Err(ImportError::TooDeep {
            format,
            limit: MAX_DEPTH,
        });
    }
    Ok(tree)
}

/// [`detect`]s the format, then [`import`]s; returns the format found too.
///
/// # Errors
/// As [`detect`] and [`import`].
pub fn import_auto(
    bytes: &[u8],
    path: Option<&Path>,
) -> Result<(Format, BookmarkTree), ImportError> {
    let format = detect(bytes, path)?;
    Ok((format, import(bytes, format)?))
}

/// Reads and imports a file; `format: None` means `--format auto` (see [`detect`]).
///
/// The size is checked from the file's metadata before anything is read, so a huge file is
/// refused at once, and the read itself stops at the limit in case the file grows meanwhile.
///
/// # Errors
/// [`ImportError::Io`] when the file cannot be opened or read, [`ImportError::TooLarge`] above
/// [`MAX_IMPORT_SIZE`], otherwise as [`import`].
pub fn import_file(
    path: &Path,
    format: Option<Format>,
) -> Result<(Format, BookmarkTree), ImportError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_IMPORT_SIZE {
        return Err(ImportError::TooLarge {
            size,
            limit: MAX_IMPORT_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_IMPORT_SIZE + 1).read_to_end(&mut bytes)?;
    let format = match format {
        Some(format) => format,
        None => detect(&bytes, Some(path))?,
    };
    Ok((format, import(&bytes, format)?))
}

/// Exports `tree` as a file of `format`, ready to be written back.
///
/// - [`Format::Chromium`]: `Bookmarks` with the checksum Chromium computes, formatted as
///   Chromium writes it (an unchanged import exports byte for byte the same file). Only the
///   three permanent folders (always written); no menu, separators, descriptions, tags or
///   keywords (Chromium has none).
/// - [`Format::Falkon`]: `bookmarks.json` (toolbar, menu, other).
/// - [`Format::NetscapeHtml`]: see [`BookmarkTree::to_netscape_html`].
/// - [`Format::Canonical`]: see [`BookmarkTree::to_canonical_json`].
/// - [`Format::FirefoxJson`] and [`Format::FirefoxJsonLz4`]: a backup Firefox restores (never
///   `places.sqlite`).
/// - [`Format::Xbel`]: XBEL 1.0.
///
/// Every format keeps the unknown fields its importer put in the `extra` maps.
///
/// # Errors
/// [`ImportError::Serialize`] for extras that cannot be represented.
pub fn export(tree: &BookmarkTree, format: Format) -> Result<Vec<u8>, ImportError> {
    match format {
        Format::Chromium => Ok(chromium::export(tree, chromium::Dialect::Chromium)),
        Format::Falkon => Ok(chromium::export(tree, chromium::Dialect::Falkon)),
        Format::NetscapeHtml => Ok(netscape::export(tree).into_bytes()),
        Format::Canonical => canonical::to_json(tree),
        Format::FirefoxJson => firefox::export_json(tree),
        Format::FirefoxJsonLz4 => Ok(compress_mozlz4(&firefox::export_json(tree)?)),
        Format::Xbel => Ok(xbel::export(tree).into_bytes()),
    }
}

impl BookmarkTree {
    /// Netscape bookmark HTML, the format every browser imports. See [`Format::NetscapeHtml`]
    /// for what it carries; dates are written in seconds (rounded down).
    pub fn to_netscape_html(&self) -> String {
        netscape::export(self)
    }

    /// The canonical JSON (`{"format":"omemo-bookmarks","version":1,"roots":[…]}`), compact
    /// and deterministic: the same tree always gives the same bytes (object keys sorted).
    ///
    /// # Errors
    /// [`ImportError::Serialize`] only for hand-built trees with unrepresentable extras.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, ImportError> {
        canonical::to_json(self)
    }

    /// Reads the canonical JSON back.
    ///
    /// # Errors
    /// As [`import`] with [`Format::Canonical`].
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Self, ImportError> {
        import(bytes, Format::Canonical)
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
