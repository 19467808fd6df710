//! Bad files give clear errors (with a position where it makes sense) and never panic.
// Test helpers and proptest bodies: a failed unwrap is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use common::fixture;
use proptest::prelude::*;
use sync_client::bookmarks::{
    self, compress_mozlz4, BookmarkTree, Format, ImportError, MAX_DEPTH, MAX_IMPORT_SIZE,
};

#[test]
fn truncated_json_has_a_position() {
    for (name, format) in [
        ("falkon-bookmarks.json", Format::Falkon),
        ("firefox-backup.json", Format::FirefoxJson),
        ("chromium-Bookmarks.json", Format::Chromium),
    ] {
        let bytes = fixture(name);
        let cut = &bytes[..bytes.len() / 2];
        let error = bookmarks::import(cut, format).unwrap_err();
        let ImportError::Syntax { line, column, .. } = &error else {
            panic!("{name}: {error:?}");
        };
        assert!(*line >= 1 && *column >= 1);
        let message = error.to_string();
        assert!(
            message.contains(&format!("line {line}, column {column}")),
            "{message}"
        );
        assert!(message.contains("truncated"), "{message}");
    }
    let canonical = bookmarks::import(&fixture("bookmarks.xbel"), Format::Xbel)
        .unwrap()
        .to_canonical_json()
        .unwrap();
    let error = BookmarkTree::from_canonical_json(&canonical[..canonical.len() - 3]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid canonical bookmark JSON file at line 1"),
        "{error}"
    );
}

#[test]
fn json_syntax_error_position() {
    let error = bookmarks::import(b"{\n  \"roots\": {,}\n}", Format::Chromium).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid Chromium Bookmarks file at line 2, column 13: key must be a string"
    );
}

#[test]
fn truncated_xml_and_lz4() {
    let xbel = fixture("bookmarks.xbel");
    let error = bookmarks::import(&xbel[..xbel.len() - 40], Format::Xbel).unwrap_err();
    assert!(matches!(error, ImportError::Syntax { .. }), "{error:?}");
    assert!(error.to_string().contains("truncated"), "{error}");

    let mismatched = b"<xbel>\n  <folder><title>x</title>\n  </bookmark>\n</xbel>";
    let error = bookmarks::import(mismatched, Format::Xbel).unwrap_err();
    let ImportError::Syntax { line, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(line, 3);

    let lz4 = compress_mozlz4(&fixture("firefox-backup.json"));
    for cut in [4, 10, lz4.len() / 2] {
        let error = bookmarks::import(&lz4[..cut], Format::FirefoxJsonLz4).unwrap_err();
        assert!(
            matches!(error, ImportError::InvalidLz4(_)),
            "{cut}: {error:?}"
        );
    }
    // A header that announces 4 GiB is refused before allocating.
    let mut huge = b"mozLz40\0".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 16]);
    assert!(matches!(
        bookmarks::import(&huge, Format::FirefoxJsonLz4),
        Err(ImportError::TooLarge {
            size: 4_294_967_295,
            ..
        })
    ));
}

#[test]
fn wrong_format() {
    let cases: [(&str, Format); 7] = [
        ("firefox-backup.json", Format::Chromium),
        ("chromium-Bookmarks.json", Format::FirefoxJson),
        ("bookmarks.xbel", Format::NetscapeHtml),
        ("firefox-export.html", Format::Xbel),
        ("firefox-export.html", Format::Falkon),
        ("falkon-bookmarks.json", Format::Canonical),
        ("falkon-bookmarks.json", Format::FirefoxJsonLz4),
    ];
    for (name, format) in cases {
        let error = bookmarks::import(&fixture(name), format).unwrap_err();
        let message = error.to_string();
        assert!(!message.is_empty(), "{name} as {format}");
        match error {
            ImportError::Structure { .. }
            | ImportError::Syntax { .. }
            | ImportError::InvalidLz4(_) => {}
            other => panic!("{name} as {format}: {other:?}"),
        }
    }
    let error = bookmarks::import(&fixture("firefox-backup.json"), Format::Chromium).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid Chromium Bookmarks file at top level: no \"roots\" object"
    );
    let error = bookmarks::import(&fixture("firefox-export.html"), Format::Xbel).unwrap_err();
    assert!(error.to_string().contains("not <xbel>"), "{error}");
}

#[test]
fn binary_garbage_and_empty() {
    let mut garbage = vec![0xFFu8, 0xFE, 0x00, 0x80, 0x9F];
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    assert!(matches!(
        bookmarks::detect(&garbage, None),
        Err(ImportError::UnknownFormat)
    ));
    for format in Format::ALL {
        assert!(bookmarks::import(&garbage, format).is_err(), "{format}");
        assert!(
            matches!(bookmarks::import(b"", format), Err(ImportError::Empty)),
            "{format}"
        );
        assert!(matches!(
            bookmarks::import(b" \n\t", format),
            Err(ImportError::Empty)
        ));
    }
    let error =
        bookmarks::import(b"<DL>\n<DT><A HREF=\"x\">\xFF</A>", Format::NetscapeHtml).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Netscape bookmark HTML file is not valid UTF-8 at line 2, column 17"
    );
}

#[test]
fn empty_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bookmarks.html");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        bookmarks::import_file(&path, None),
        Err(ImportError::Empty)
    ));
    let missing = dir.path().join("missing.json");
    assert!(matches!(
        bookmarks::import_file(&missing, None),
        Err(ImportError::Io(_))
    ));
}

#[test]
fn one_gigabyte_file_is_refused_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    let start = Instant::now();
    let error = bookmarks::import_file(&path, None).unwrap_err();
    assert!(start.elapsed().as_secs() < 2, "took {:?}", start.elapsed());
    assert!(
        matches!(error, ImportError::TooLarge { size, limit } if size == 1 << 30 && limit == MAX_IMPORT_SIZE),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the bookmark file is too large: 1073741824 bytes, the limit is 67108864 bytes"
    );
    // In memory too.
    let big = vec![b' '; (MAX_IMPORT_SIZE + 1) as usize];
    assert!(matches!(
        bookmarks::import(&big, Format::NetscapeHtml),
        Err(ImportError::TooLarge { .. })
    ));
}

#[test]
fn deep_nesting_is_refused() {
    let depth = MAX_DEPTH + 5;
    let html = format!(
        "<DL>{}<DT><A HREF=\"x\">x</A>",
        "<DT><H3>f</H3><DL>".repeat(depth)
    );
    assert!(matches!(
        bookmarks::import(html.as_bytes(), Format::NetscapeHtml),
        Err(ImportError::TooDeep { .. })
    ));
    let html = format!("<DL>{}", "<DL>".repeat(100_000));
    assert!(bookmarks::import(html.as_bytes(), Format::NetscapeHtml).is_err());

    let xbel = format!("<xbel>{}</xbel>", "<folder>".repeat(depth));
    assert!(matches!(
        bookmarks::import(xbel.as_bytes(), Format::Xbel),
        Err(ImportError::TooDeep { .. })
    ));

    let mut chromium = String::from(r#"{"roots":{"bookmark_bar":"#);
    for _ in 0..depth {
        chromium.push_str(r#"{"type":"folder","children":["#);
    }
    chromium.push_str(&"]}".repeat(depth));
    chromium.push_str("}}");
    assert!(matches!(
        bookmarks::import(chromium.as_bytes(), Format::Chromium),
        Err(ImportError::TooDeep { .. })
    ));
    // Much deeper JSON hits serde_json's recursion limit first: still an error, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for format in [
        Format::Chromium,
        Format::Falkon,
        Format::FirefoxJson,
        Format::Canonical,
    ] {
        assert!(bookmarks::import(deep.as_bytes(), format).is_err());
    }
    // Exactly at the limit is fine and survives the canonical JSON.
    let ok = format!(
        "<DL>{}<DT><A HREF=\"x\">x</A>",
        "<DT><H3>f</H3><DL>".repeat(MAX_DEPTH - 1)
    );
    let tree = bookmarks::import(ok.as_bytes(), Format::NetscapeHtml).unwrap();
    assert_eq!(tree.depth(), MAX_DEPTH - 1);
    let json = tree.to_canonical_json().unwrap();
    assert_eq!(BookmarkTree::from_canonical_json(&json).unwrap(), tree);
}

#[test]
fn canonical_version_is_checked() {
    let error = BookmarkTree::from_canonical_json(
        br#"{"format":"omemo-bookmarks","version":2,"roots":[]}"#,
    )
    .unwrap_err();
    assert!(matches!(
        error,
        ImportError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    let error =
        BookmarkTree::from_canonical_json(br#"{"format":"other","version":1}"#).unwrap_err();
    assert!(matches!(error, ImportError::Structure { .. }), "{error:?}");
}

fn all_importers(bytes: &[u8]) {
    let _ = bookmarks::detect(bytes, None);
    let _ = bookmarks::import_auto(bytes, None);
    for format in Format::ALL {
        if let Ok(tree) = bookmarks::import(bytes, format) {
            let _ = tree.to_netscape_html();
            let _ = tree.to_canonical_json();
        }
    }
}

/// Fragments of every format, to get the fuzzer past the first byte.
const FRAGMENTS: &[&str] = &[
    "<DL><p>",
    "</DL><p>",
    "<DT>",
    "<H3 ADD_DATE=\"1\">",
    "</H3>",
    "<A HREF=\"",
    "\">",
    "</A>",
    "<DD>",
    "<HR>",
    "&amp;",
    "&#x1F516;",
    "&#",
    "<!--",
    "-->",
    "<xbel>",
    "</xbel>",
    "<folder>",
    "</folder>",
    "<bookmark href='x'>",
    "</bookmark>",
    "<title>",
    "</title>",
    "<separator/>",
    "<info>",
    "</info>",
    "<![CDATA[",
    "]]>",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"roots\"",
    "\"bookmark_bar\"",
    "\"children\"",
    "\"type\"",
    "\"folder\"",
    "\"url\"",
    "\"separator\"",
    "\"typeCode\"",
    "\"text/x-moz-place\"",
    "\"omemo-bookmarks\"",
    "\"version\"",
    "1",
    "\"x\"",
    "null",
    "mozLz40\0",
    "Ünïcödé 🔖",
    " ",
    "\n",
    "'",
    "\"",
    "<",
    ">",
    "=",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_importers(&bytes);
    }

    #[test]
    fn random_strings_never_panic(text in "\\PC{0,256}") {
        all_importers(text.as_bytes());
    }

    #[test]
    fn fragment_soup_never_panics(
        parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..64)
    ) {
        all_importers(parts.concat().as_bytes());
    }

    #[test]
    fn mozlz4_with_random_payload_never_panics(
        size in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        let mut bytes = b"mozLz40\0".to_vec();
        bytes.extend_from_slice(&(size % (1 << 20)).to_le_bytes());
        bytes.extend_from_slice(&payload);
        all_importers(&bytes);
    }
}
