//! The one error type of bookmark import and export.

use super::Format;

/// Why a bookmark file could not be read.
///
/// Messages are meant for end users; they name the format and, where the format has them, a
/// line and column (text formats) or a JSON path, but never bookmark contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the file failed.
    #[error("could not read the bookmark file: {0}")]
    Io(#[from] std::io::Error),

    /// The file (or the decompressed content of a `.jsonlz4` file) is above the import limit.
    #[error("the bookmark file is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Size of the file or declared decompressed size, in bytes.
        size: u64,
        /// The limit, [`MAX_IMPORT_SIZE`](super::MAX_IMPORT_SIZE).
        limit: u64,
    },

    /// The file is empty (or only whitespace).
    #[error("the bookmark file is empty")]
    Empty,

    /// Automatic detection recognised none of the supported formats.
    #[error(
        "unrecognised bookmark file format (supported: Falkon, Firefox JSON and .jsonlz4, \
         Chromium, Netscape bookmark HTML, XBEL, canonical JSON)"
    )]
    UnknownFormat,

    /// The file is not valid UTF-8.
    #[error("{format} file is not valid UTF-8 at line {line}, column {column}")]
    InvalidUtf8 {
        /// The format being read.
        format: Format,
        /// 1-based line.
        line: u64,
        /// 1-based column, in bytes.
        column: u64,
    },

    /// A syntax error in the underlying JSON, XML or HTML, with its position.
    #[error("invalid {format} file at line {line}, column {column}: {message}")]
    Syntax {
        /// The format being read.
        format: Format,
        /// 1-based line.
        line: u64,
        /// 1-based column (characters for JSON, bytes for XML and HTML).
        column: u64,
        /// What is wrong.
        message: String,
    },

    /// The file is syntactically fine but does not have the structure of the format.
    #[error("invalid {format} file at {path}: {message}")]
    Structure {
        /// The format being read.
        format: Format,
        /// Where: a JSON pointer (`/roots/bookmark_bar/children/3`) or `top level`.
        path: String,
        /// What is wrong.
        message: String,
    },

    /// A `.jsonlz4` file is damaged.
    #[error("invalid Firefox .jsonlz4 file: {0}")]
    InvalidLz4(String),

    /// Folders are nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("{format} file has folders nested deeper than {limit} levels")]
    TooDeep {
        /// The format being read.
        format: Format,
        /// The limit.
        limit: usize,
    },

    /// A canonical JSON file of a version this build does not know.
    #[error("canonical bookmark JSON version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },

    /// Serializing the canonical JSON failed (only possible for trees built by hand whose
    /// extras cannot be represented).
    #[error("could not serialize the bookmarks: {0}")]
    Serialize(String),
}

/// 1-based line and byte column of `offset` in `text`.
pub(crate) fn line_column(text: &[u8], offset: usize) -> (u64, u64) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line as u64, (offset - line_start + 1) as u64)
}

/// Converts a serde_json error into [`ImportError::Syntax`] without repeating the position.
pub(crate) fn json_syntax(format: Format, error: &serde_json::Error) -> ImportError {
    let message = match error.classify() {
        serde_json::error::Category::Eof => {
            "the file ends unexpectedly (it looks truncated)".to_owned()
        }
        _ => {
            let text = error.to_string();
            match text.rfind(" at line ") {
                Some(cut) => text.get(..cut).unwrap_or(&text).to_owned(),
                None => text,
            }
        }
    };
    ImportError::Syntax {
        format,
        line: error.line() as u64,
        column: error.column() as u64,
        message,
    }
}

/// Checks UTF-8 and strips a byte-order mark.
pub(crate) fn utf8(format: Format, bytes: &[u8]) -> Result<&str, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
        ImportError::InvalidUtf8 {
            format,
            line,
            column,
        }
    })
}
