//! Per-format import tests on realistic fixtures, and format detection.
// Test helpers and proptest bodies: a failed unwrap is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{bookmark, fixture, folder, is_separator, string};
use serde_json::json;
use sync_client::bookmarks::{self, compress_mozlz4, FolderRole, Format, ImportError};

const UNICODE: &str = "Ünïcödé 日本語 🔖";

#[test]
fn falkon() {
    let bytes = fixture("falkon-bookmarks.json");
    assert_eq!(bookmarks::detect(&bytes, None).unwrap(), Format::Falkon);
    let tree = bookmarks::import(&bytes, Format::Falkon).unwrap();
    assert_eq!(tree.extra.get("version"), Some(&json!(1)));
    assert_eq!(tree.roots.len(), 3);

    let toolbar = folder(&tree.roots[0]);
    assert_eq!(toolbar.title, "Bookmarks Toolbar");
    assert_eq!(toolbar.role, Some(FolderRole::Toolbar));
    assert_eq!(toolbar.extra.get("expanded_sidebar"), Some(&json!(true)));
    assert_eq!(toolbar.children.len(), 3);
    let falkon = bookmark(&toolbar.children[0]);
    assert_eq!(falkon.title, "Falkon");
    assert_eq!(falkon.url, "https://www.falkon.org/");
    assert_eq!(
        falkon.description.as_deref(),
        Some("The Falkon web browser")
    );
    assert_eq!(falkon.keyword.as_deref(), Some("fk"));
    assert_eq!(falkon.extra.get("visit_count"), Some(&json!(12)));
    assert!(is_separator(&toolbar.children[1]));
    let kde = folder(&toolbar.children[2]);
    assert_eq!(kde.title, "KDE & Qt");
    let unicode = bookmark(&kde.children[0]);
    assert_eq!(unicode.title, UNICODE);
    assert_eq!(unicode.url, "https://例え.jp/パス?q=1&r=2");
    assert_eq!(
        unicode.description, None,
        "empty description reads as absent"
    );
    assert_eq!(unicode.keyword, None);
    assert!(folder(&kde.children[1]).children.is_empty());

    let menu = folder(&tree.roots[1]);
    assert_eq!(menu.role, Some(FolderRole::Menu));
    let plain = bookmark(&menu.children[0]);
    assert_eq!((plain.description.as_ref(), plain.added), (None, None));
    assert_eq!(folder(&tree.roots[2]).role, Some(FolderRole::Other));

    let stats = tree.stats();
    assert_eq!(
        (stats.bookmarks, stats.folders, stats.separators),
        (3, 5, 1)
    );
}

fn check_firefox(tree: &bookmarks::BookmarkTree) {
    assert_eq!(string(tree.extra.get("guid")), "root________");
    assert_eq!(string(tree.extra.get("root")), "placesRoot");
    let roles: Vec<_> = tree.roots.iter().map(|n| folder(n).role).collect();
    assert_eq!(
        roles,
        [
            Some(FolderRole::Menu),
            Some(FolderRole::Toolbar),
            Some(FolderRole::Other),
            Some(FolderRole::Mobile)
        ]
    );
    let menu = folder(&tree.roots[0]);
    assert_eq!(string(menu.extra.get("guid")), "menu________");
    let mozilla = folder(&menu.children[0]);
    assert_eq!(mozilla.title, "Mozilla Firefox");
    assert_eq!(mozilla.added, Some(1_700_000_100_000_000));
    let help = bookmark(&mozilla.children[0]);
    assert_eq!(help.url, "https://support.mozilla.org/products/firefox");
    assert_eq!(help.tags, ["help", "mozilla"]);
    assert_eq!(help.keyword.as_deref(), Some("help"));
    assert_eq!(help.added, Some(1_700_000_100_123_456));
    assert_eq!(help.modified, Some(1_700_000_200_654_321));
    assert_eq!(
        string(help.extra.get("iconUri")),
        "https://www.mozilla.org/favicon.ico"
    );
    assert_eq!(help.extra.get("postData"), Some(&json!(null)));
    assert!(!help.extra.contains_key("type") && !help.extra.contains_key("typeCode"));
    assert!(is_separator(&mozilla.children[1]));
    let unicode = bookmark(&mozilla.children[2]);
    assert_eq!(unicode.title, format!("{UNICODE} \"quoted\" <tag> & amp"));
    assert_eq!(
        unicode.description.as_deref(),
        Some("An old-style description")
    );
    assert_eq!(
        unicode.extra.get("annos"),
        Some(&json!([{"name":"custom/anno","flags":0,"expires":4,"value":42}]))
    );
    let toolbar = folder(&tree.roots[1]);
    let untitled = bookmark(&toolbar.children[1]);
    assert_eq!((untitled.title.as_str(), untitled.added), ("", None));
    assert_eq!(untitled.url, "place:sort=8&maxResults=10");
    assert!(
        folder(&tree.roots[2]).children.is_empty(),
        "missing children"
    );
    assert_eq!(tree.stats().bookmarks, 4);
}

#[test]
fn firefox_json() {
    let bytes = fixture("firefox-backup.json");
    assert_eq!(
        bookmarks::detect(&bytes, None).unwrap(),
        Format::FirefoxJson
    );
    check_firefox(&bookmarks::import(&bytes, Format::FirefoxJson).unwrap());
}

#[test]
fn firefox_jsonlz4() {
    let bytes = compress_mozlz4(&fixture("firefox-backup.json"));
    assert!(bytes.starts_with(b"mozLz40\0"));
    assert_eq!(
        bookmarks::detect(&bytes, None).unwrap(),
        Format::FirefoxJsonLz4
    );
    check_firefox(&bookmarks::import(&bytes, Format::FirefoxJsonLz4).unwrap());
}

#[test]
fn chromium() {
    let bytes = fixture("chromium-Bookmarks.json");
    assert_eq!(bookmarks::detect(&bytes, None).unwrap(), Format::Chromium);
    let tree = bookmarks::import(&bytes, Format::Chromium).unwrap();
    assert_eq!(
        string(tree.extra.get("checksum")),
        "6c4b5bd7d1f3c3b2cd2a6b1fd0f0b0a1"
    );
    assert_eq!(string(tree.extra.get("sync_metadata")), "CgIIAQ==");
    let roles: Vec<_> = tree.roots.iter().map(|n| folder(n).role).collect();
    assert_eq!(
        roles,
        [
            Some(FolderRole::Toolbar),
            Some(FolderRole::Other),
            Some(FolderRole::Mobile)
        ]
    );
    let bar = folder(&tree.roots[0]);
    assert_eq!(bar.title, "Bookmarks bar");
    let chromium = bookmark(&bar.children[0]);
    // 13345678901234567 µs since 1601 = 1701205301234567 µs since 1970.
    assert_eq!(chromium.added, Some(1_701_205_301_234_567));
    assert_eq!(chromium.visited, Some(1_701_206_301_234_567));
    assert_eq!(
        chromium.extra.get("meta_info"),
        Some(&json!({"power_bookmark_meta": ""}))
    );
    assert_eq!(string(chromium.extra.get("id")), "5");
    let dev = folder(&bar.children[1]);
    assert_eq!(dev.title, "Dev \"tools\"");
    let deeper = folder(&dev.children[0]);
    let unicode = bookmark(&deeper.children[0]);
    assert_eq!(unicode.title, UNICODE);
    assert_eq!(unicode.url, "https://example.com/a?b=1&c=<2>");
    assert_eq!(unicode.visited, None, "\"0\" means never");
    let other = folder(&tree.roots[1]);
    assert_eq!(other.modified, None);
    let no_dates = bookmark(&other.children[0]);
    assert_eq!((no_dates.added, no_dates.visited), (None, None));
}

#[test]
fn firefox_html() {
    let bytes = fixture("firefox-export.html");
    assert_eq!(
        bookmarks::detect(&bytes, None).unwrap(),
        Format::NetscapeHtml
    );
    let tree = bookmarks::import(&bytes, Format::NetscapeHtml).unwrap();
    assert_eq!(string(tree.extra.get("title")), "Bookmarks Menu");
    assert_eq!(tree.roots.len(), 3);
    let mozilla = folder(&tree.roots[0]);
    assert_eq!(mozilla.title, "Mozilla Firefox");
    assert_eq!(
        mozilla.description.as_deref(),
        Some("Folder description & more")
    );
    assert_eq!(mozilla.added, Some(1_700_000_100_000_000));
    assert_eq!(mozilla.modified, Some(1_700_000_200_000_000));
    let help = bookmark(&mozilla.children[0]);
    assert_eq!(help.title, "Get Help");
    assert_eq!(help.keyword.as_deref(), Some("help"));
    assert_eq!(help.tags, ["help", "mozilla"]);
    assert_eq!(
        help.description.as_deref(),
        Some("Help & support for Firefox")
    );
    assert_eq!(
        string(help.extra.get("ICON_URI")),
        "https://www.mozilla.org/favicon.ico"
    );
    assert_eq!(
        string(help.extra.get("ICON")),
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert!(is_separator(&mozilla.children[1]));
    let unicode = bookmark(&mozilla.children[2]);
    assert_eq!(unicode.url, "https://example.org/search?q=a&b=c");
    assert_eq!(
        unicode.title,
        format!("{UNICODE} \"quoted\" <tag> & 'apos' 😀")
    );
    let toolbar = folder(&tree.roots[1]);
    assert_eq!(toolbar.role, Some(FolderRole::Toolbar));
    assert_eq!(
        string(bookmark(&toolbar.children[0]).extra.get("LAST_CHARSET")),
        "UTF-8"
    );
    let other = folder(&tree.roots[2]);
    assert_eq!(other.role, Some(FolderRole::Other));
    assert!(other.children.is_empty());
}

#[test]
fn chromium_html() {
    let bytes = fixture("chromium-export.html");
    let tree = bookmarks::import(&bytes, Format::NetscapeHtml).unwrap();
    assert_eq!(tree.roots.len(), 2);
    let bar = folder(&tree.roots[0]);
    assert_eq!(bar.role, Some(FolderRole::Toolbar));
    let dev = folder(&bar.children[1]);
    assert_eq!(dev.title, "Dev \"tools\"");
    let unicode = bookmark(&dev.children[0]);
    assert_eq!(unicode.title, UNICODE);
    assert_eq!(unicode.url, "https://example.com/a?b=1&c=<2>");
    assert_eq!(unicode.added, Some(1_701_205_320_000_000));
    assert_eq!(
        bookmark(&tree.roots[1]).title,
        "Other bookmark at top level"
    );
}

#[test]
fn lenient_html() {
    let bytes = fixture("lenient-export.html");
    assert_eq!(
        bookmarks::detect(&bytes, None).unwrap(),
        Format::NetscapeHtml
    );
    let tree = bookmarks::import(&bytes, Format::NetscapeHtml).unwrap();
    assert_eq!(string(tree.extra.get("title")), "Falkon Bookmarks");
    assert_eq!(tree.roots.len(), 3, "{tree:#?}");
    let toolbar = folder(&tree.roots[0]);
    assert_eq!(toolbar.title, "Bookmarks Toolbar");
    assert_eq!(string(toolbar.extra.get("FOLDED")), "");
    let falkon = bookmark(&toolbar.children[0]);
    assert_eq!(falkon.title, "Falkon", "unclosed <a> text is trimmed");
    assert_eq!(falkon.url, "https://www.falkon.org/");
    assert_eq!(falkon.added, Some(1_701_000_000_000_000));
    assert_eq!(falkon.description.as_deref(), Some("Browser — by KDE"));
    let quotes = bookmark(&toolbar.children[1]);
    assert_eq!(quotes.title, "Single 'quotes'");
    assert_eq!(quotes.url, "https://example.com/?a=1&b=2");
    assert_eq!(quotes.keyword.as_deref(), Some("ex"));
    assert!(is_separator(&toolbar.children[2]));
    let empty = folder(&toolbar.children[3]);
    assert_eq!(empty.title, "Empty folder without list");
    assert!(empty.children.is_empty());
    let nested = folder(&toolbar.children[4]);
    let inner = bookmark(&nested.children[0]);
    assert_eq!(inner.title, "Nested &amp; &unknown; © 5 < 6");
    assert_eq!(inner.tags, ["a", "b", "c"]);
    assert_eq!(bookmark(&tree.roots[1]).title, "After the toolbar");
    assert_eq!(folder(&tree.roots[2]).title, "Truncated");
}

#[test]
fn xbel() {
    let bytes = fixture("bookmarks.xbel");
    assert_eq!(bookmarks::detect(&bytes, None).unwrap(), Format::Xbel);
    let tree = bookmarks::import(&bytes, Format::Xbel).unwrap();
    assert_eq!(string(tree.extra.get("title")), "My XBEL bookmarks");
    assert_eq!(string(tree.extra.get("version")), "1.0");
    assert_eq!(tree.roots.len(), 2);
    let programming = folder(&tree.roots[0]);
    assert_eq!(programming.title, "Programming & Languages");
    assert_eq!(programming.description.as_deref(), Some("Things I read"));
    assert_eq!(programming.added, Some(1_700_000_000_000_000));
    assert_eq!(string(programming.extra.get("id")), "f1");
    assert_eq!(string(programming.extra.get("folded")), "no");
    assert_eq!(programming.children.len(), 3, "the alias is skipped");
    let rust = bookmark(&programming.children[0]);
    assert_eq!(rust.title, "Rust");
    assert_eq!(rust.url, "https://www.rust-lang.org/");
    assert_eq!(
        rust.description.as_deref(),
        Some("A language empowering everyone")
    );
    assert_eq!(rust.added, Some(1_700_000_100_000_000));
    assert_eq!(rust.modified, Some(1_700_031_600_000_000));
    assert_eq!(rust.visited, Some(1_704_067_200_000_000));
    assert!(string(rust.extra.get("info")).contains("<bookmark:icon name=\"text-html\"/>"));
    assert!(is_separator(&programming.children[1]));
    let unicode = folder(&programming.children[2]);
    assert_eq!(unicode.title, format!("{UNICODE} 'quoted' <x>"));
    let cdata = bookmark(&unicode.children[0]);
    assert_eq!(cdata.title, "CDATA <title> & stuff");
    assert_eq!(cdata.url, "https://example.org/?a=1&b=2");
    let untitled = bookmark(&unicode.children[1]);
    assert_eq!(
        (untitled.title.as_str(), untitled.url.as_str()),
        ("", "https://no-title.example/")
    );
    let top = bookmark(&tree.roots[1]);
    assert_eq!(top.added, None);
    assert_eq!(
        string(top.extra.get("added")),
        "not a date",
        "unreadable dates are kept"
    );
}

#[test]
fn canonical_detects() {
    let tree = bookmarks::import(&fixture("bookmarks.xbel"), Format::Xbel).unwrap();
    let json = tree.to_canonical_json().unwrap();
    assert!(json.starts_with(br#"{"format":"omemo-bookmarks","version":1,"#));
    assert_eq!(bookmarks::detect(&json, None).unwrap(), Format::Canonical);
}

#[test]
fn detection_edge_cases() {
    // Neither Falkon nor Chromium markers: the file name decides.
    let bare = br#"{"roots":{"bookmark_bar":{"type":"folder","name":"x","children":[]}}}"#;
    assert_eq!(
        bookmarks::detect(
            bare,
            Some(Path::new(
                "/home/u/.config/falkon/profiles/default/bookmarks.json"
            ))
        )
        .unwrap(),
        Format::Falkon
    );
    assert_eq!(
        bookmarks::detect(bare, Some(Path::new("Bookmarks"))).unwrap(),
        Format::Chromium
    );
    assert!(matches!(
        bookmarks::detect(b"  \n ", None),
        Err(ImportError::Empty)
    ));
    assert!(matches!(
        bookmarks::detect(b"[1,2]", None),
        Err(ImportError::UnknownFormat)
    ));
    assert!(matches!(
        bookmarks::detect(b"<html><p>hi</p></html>", None),
        Err(ImportError::UnknownFormat)
    ));
    assert!(matches!(
        bookmarks::detect(b"\x00\x01\x02", None),
        Err(ImportError::UnknownFormat)
    ));
    // A BOM is skipped.
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(&fixture("chromium-export.html"));
    assert_eq!(
        bookmarks::detect(&with_bom, None).unwrap(),
        Format::NetscapeHtml
    );
    assert_eq!(
        bookmarks::import(&with_bom, Format::NetscapeHtml)
            .unwrap()
            .stats()
            .bookmarks,
        3
    );
}

#[test]
fn format_names_parse() {
    for format in Format::ALL {
        assert_eq!(format.name().parse::<Format>().unwrap(), format);
    }
    assert_eq!("HTML".parse::<Format>().unwrap(), Format::NetscapeHtml);
    let error = "auto".parse::<Format>().unwrap_err();
    assert!(error.to_string().contains("unknown bookmark format `auto`"));
}

#[test]
fn import_file_auto() {
    let (format, tree) =
        bookmarks::import_file(&common::fixture_path("bookmarks.xbel"), None).unwrap();
    assert_eq!(format, Format::Xbel);
    assert_eq!(tree.stats().bookmarks, 4);
    let (format, _) = bookmarks::import_file(
        &common::fixture_path("firefox-export.html"),
        Some(Format::NetscapeHtml),
    )
    .unwrap();
    assert_eq!(format, Format::NetscapeHtml);
}
