//! Random trees survive the canonical JSON exactly and Netscape HTML in what it carries.
// Test helpers and proptest bodies: a failed unwrap is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::html_view;
use proptest::prelude::*;
use sync_client::bookmarks::{
    self, Bookmark, BookmarkTree, Folder, FolderRole, Format, Node, Separator,
};

fn text() -> impl Strategy<Value = String> {
    // Any characters, including markup and entities, but no surrounding whitespace (HTML
    // descriptions and unclosed titles are trimmed).
    "[^\\s](\\PC{0,20}[^\\s])?".prop_map(|s| s)
}

fn date() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(0i64..4_000_000_000_000_000)
}

fn bookmark() -> impl Strategy<Value = Node> {
    (
        "\\PC{0,20}",
        "\\PC{0,30}",
        proptest::option::of(text()),
        proptest::collection::vec("[^,\\s]([^,]{0,8}[^,\\s])?", 0..3),
        proptest::option::of(text()),
        (date(), date(), date()),
    )
        .prop_map(
            |(title, url, description, tags, keyword, (added, modified, visited))| {
                Node::Bookmark(Bookmark {
                    title,
                    url,
                    description,
                    tags,
                    keyword,
                    added,
                    modified,
                    visited,
                    extra: Default::default(),
                })
            },
        )
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => bookmark(),
        1 => Just(Node::Separator(Separator::default())),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        (
            "\\PC{0,20}",
            proptest::option::of(text()),
            proptest::collection::vec(inner, 0..6),
            date(),
            proptest::option::of(prop_oneof![
                Just(FolderRole::Toolbar),
                Just(FolderRole::Other)
            ]),
        )
            .prop_map(|(title, description, children, added, role)| {
                Node::Folder(Folder {
                    title,
                    role,
                    description,
                    children,
                    added,
                    modified: None,
                    extra: Default::default(),
                })
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_trees_round_trip(roots in proptest::collection::vec(node(), 0..6)) {
        let tree = BookmarkTree { roots, extra: Default::default() };
        let json = tree.to_canonical_json().unwrap();
        prop_assert_eq!(&BookmarkTree::from_canonical_json(&json).unwrap(), &tree);

        let html = tree.to_netscape_html();
        let back = bookmarks::import(html.as_bytes(), Format::NetscapeHtml).unwrap();
        prop_assert_eq!(html_view(&back), html_view(&tree), "{}", html);
    }
}
