//! import → export → import: exact through the canonical JSON, the fields HTML carries
//! through Netscape HTML; and a generated 10,000-bookmark file.
// Test helpers and proptest bodies: a failed unwrap is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, html_view};
use serde_json::json;
use sync_client::bookmarks::{self, compress_mozlz4, BookmarkTree, Format};

const FIXTURES: [(&str, Format); 8] = [
    ("falkon-bookmarks.json", Format::Falkon),
    ("firefox-backup.json", Format::FirefoxJson),
    ("chromium-Bookmarks.json", Format::Chromium),
    ("firefox-export.html", Format::NetscapeHtml),
    ("chromium-export.html", Format::NetscapeHtml),
    ("lenient-export.html", Format::NetscapeHtml),
    ("bookmarks.xbel", Format::Xbel),
    ("firefox-backup.json", Format::FirefoxJsonLz4),
];

fn load(name: &str, format: Format) -> BookmarkTree {
    let mut bytes = fixture(name);
    if format == Format::FirefoxJsonLz4 {
        bytes = compress_mozlz4(&bytes);
    }
    bookmarks::import(&bytes, format).unwrap()
}

#[test]
fn canonical_json_is_exact_and_deterministic() {
    for (name, format) in FIXTURES {
        let tree = load(name, format);
        let json = tree.to_canonical_json().unwrap();
        let back = BookmarkTree::from_canonical_json(&json).unwrap();
        assert_eq!(back, tree, "{name}");
        assert_eq!(
            back.to_canonical_json().unwrap(),
            json,
            "{name}: bytes differ"
        );
        // Auto-detection finds it too.
        assert_eq!(
            bookmarks::import_auto(&json, None).unwrap().1,
            tree,
            "{name}"
        );
    }
}

#[test]
fn netscape_html_keeps_what_html_carries() {
    for (name, format) in FIXTURES {
        let tree = load(name, format);
        let html = tree.to_netscape_html();
        let back = bookmarks::import(html.as_bytes(), Format::NetscapeHtml).unwrap();
        assert_eq!(html_view(&back), html_view(&tree), "{name}\n{html}");
        assert_eq!(back.stats(), tree.stats(), "{name}");
        // And HTML → HTML is exact (upper-case attribute extras and the title included).
        let again =
            bookmarks::import(back.to_netscape_html().as_bytes(), Format::NetscapeHtml).unwrap();
        assert_eq!(again, back, "{name}");
    }
}

#[test]
fn html_export_escapes() {
    let tree = load("firefox-backup.json", Format::FirefoxJson);
    let html = tree.to_netscape_html();
    assert!(html.starts_with("<!DOCTYPE NETSCAPE-Bookmark-file-1>"));
    assert!(html.contains(
        "<A HREF=\"https://example.org/search?q=a&amp;b=c\" ADD_DATE=\"1700000110\" \
         LAST_MODIFIED=\"1700000110\">Ünïcödé 日本語 🔖 &quot;quoted&quot; &lt;tag&gt; &amp; amp</A>"
    ));
    assert!(html.contains("<DD>An old-style description\n"));
    assert!(html.contains(
        "<A HREF=\"https://support.mozilla.org/products/firefox\" ADD_DATE=\"1700000100\" \
         LAST_MODIFIED=\"1700000200\" SHORTCUTURL=\"help\" TAGS=\"help,mozilla\">Get Help</A>"
    ));
    assert!(html.contains("<H3 ADD_DATE=\"1700000000\" LAST_MODIFIED=\"1700000300\" PERSONAL_TOOLBAR_FOLDER=\"true\">toolbar</H3>"));
    assert!(html.contains("        <HR>\n"));
    // Lower-case JSON extras are not written as attributes.
    assert!(!html.contains("iconUri") && !html.contains("guid"));
}

#[test]
fn canonical_json_shape() {
    let tree = load("falkon-bookmarks.json", Format::Falkon);
    let value: serde_json::Value =
        serde_json::from_slice(&tree.to_canonical_json().unwrap()).unwrap();
    assert_eq!(value["format"], "omemo-bookmarks");
    assert_eq!(value["version"], 1);
    assert_eq!(value["extra"], json!({"version": 1}));
    let toolbar = &value["roots"][0];
    assert_eq!(toolbar["type"], "folder");
    assert_eq!(toolbar["role"], "toolbar");
    assert_eq!(toolbar["children"][1], json!({"type": "separator"}));
    assert_eq!(
        toolbar["children"][0],
        json!({
            "type": "bookmark",
            "title": "Falkon",
            "url": "https://www.falkon.org/",
            "description": "The Falkon web browser",
            "keyword": "fk",
            "extra": {"visit_count": 12}
        })
    );
}

/// 10,000 bookmarks in 100 folders (nested four deep in places), with separators, unicode
/// and characters that need escaping.
fn generated_html() -> String {
    let mut html = String::from(
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<TITLE>Big</TITLE>\n<H1>Big</H1>\n<DL><p>\n",
    );
    let mut count = 0;
    for f in 0..100 {
        let depth = 1 + f % 4;
        for d in 0..depth {
            html.push_str(&format!(
                "<DT><H3 ADD_DATE=\"{}\">Folder {f}.{d} &amp; 🔖</H3>\n<DL><p>\n",
                1_600_000_000 + f
            ));
        }
        for b in 0..100 {
            html.push_str(&format!(
                "<DT><A HREF=\"https://example.com/{f}/{b}?x=1&amp;y=&quot;2&quot;\" ADD_DATE=\"{}\" TAGS=\"t{},all\">Bookmark {count} Ünïcödé &lt;{b}&gt;</A>\n",
                1_600_000_000 + count,
                b % 7
            ));
            if b % 10 == 0 {
                html.push_str(&format!("<DD>Description {count}\n"));
            }
            if b % 25 == 24 {
                html.push_str("<HR>\n");
            }
            count += 1;
        }
        for _ in 0..depth {
            html.push_str("</DL><p>\n");
        }
    }
    html.push_str("</DL><p>\n");
    html
}

#[test]
fn ten_thousand_bookmarks() {
    let html = generated_html();
    let tree = bookmarks::import(html.as_bytes(), Format::NetscapeHtml).unwrap();
    let stats = tree.stats();
    assert_eq!(stats.bookmarks, 10_000);
    assert_eq!(stats.folders, (0..100).map(|f| 1 + f % 4).sum::<usize>());
    assert_eq!(stats.separators, 400);
    assert_eq!(tree.depth(), 4);

    let json = tree.to_canonical_json().unwrap();
    assert_eq!(BookmarkTree::from_canonical_json(&json).unwrap(), tree);
    let html_again = tree.to_netscape_html();
    assert_eq!(
        bookmarks::import(html_again.as_bytes(), Format::NetscapeHtml).unwrap(),
        tree
    );

    // The same collection as a Firefox backup, plain and compressed.
    let firefox = firefox_backup(&tree);
    let from_json = bookmarks::import(&firefox, Format::FirefoxJson).unwrap();
    let json_stats = from_json.stats();
    assert_eq!(json_stats.bookmarks, stats.bookmarks);
    assert_eq!(json_stats.separators, stats.separators);
    assert_eq!(json_stats.folders, stats.folders + 1, "plus the menu root");
    let lz4 = compress_mozlz4(&firefox);
    assert!(lz4.len() < firefox.len());
    assert_eq!(bookmarks::import_auto(&lz4, None).unwrap().1, from_json);
}

fn firefox_backup(tree: &BookmarkTree) -> Vec<u8> {
    use sync_client::bookmarks::Node;
    fn node(n: &Node) -> serde_json::Value {
        match n {
            Node::Folder(f) => json!({
                "type": "text/x-moz-place-container", "typeCode": 2, "title": f.title,
                "dateAdded": f.added, "children": f.children.iter().map(node).collect::<Vec<_>>()
            }),
            Node::Bookmark(b) => json!({
                "type": "text/x-moz-place", "typeCode": 1, "title": b.title, "uri": b.url,
                "dateAdded": b.added, "tags": b.tags.join(",")
            }),
            Node::Separator(_) => json!({"type": "text/x-moz-place-separator", "typeCode": 3}),
        }
    }
    serde_json::to_vec(&json!({
        "guid": "root________", "root": "placesRoot", "type": "text/x-moz-place-container",
        "children": [{
            "guid": "menu________", "root": "bookmarksMenuFolder",
            "type": "text/x-moz-place-container",
            "children": tree.roots.iter().map(node).collect::<Vec<_>>()
        }]
    }))
    .unwrap()
}
