//! Helpers shared by the integration tests.
// Test helpers: a failed fixture read or a wrong node kind is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use sync_client::bookmarks::{Bookmark, BookmarkTree, Folder, FolderRole, Node};

pub(crate) mod e2e;
pub(crate) mod vault;

pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

pub(crate) fn folder(node: &Node) -> &Folder {
    match node {
        Node::Folder(folder) => folder,
        other => panic!("expected a folder, got {other:?}"),
    }
}

pub(crate) fn bookmark(node: &Node) -> &Bookmark {
    match node {
        Node::Bookmark(bookmark) => bookmark,
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

pub(crate) fn is_separator(node: &Node) -> bool {
    matches!(node, Node::Separator(_))
}

/// What Netscape HTML can carry of a tree: dates in whole seconds, no lower-case extras (JSON
/// and XBEL fields), no file-level extras, only the toolbar and unfiled roles.
pub(crate) fn html_view(tree: &BookmarkTree) -> BookmarkTree {
    BookmarkTree {
        roots: tree.roots.iter().map(html_node).collect(),
        extra: Default::default(),
    }
}

fn seconds(date: Option<i64>) -> Option<i64> {
    date.map(|d| d.div_euclid(1_000_000) * 1_000_000)
}

fn html_extra(extra: &sync_client::bookmarks::Extra) -> sync_client::bookmarks::Extra {
    extra
        .iter()
        .filter(|(k, v)| {
            v.is_string()
                && k.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn html_node(node: &Node) -> Node {
    match node {
        Node::Folder(f) => Node::Folder(Folder {
            title: f.title.clone(),
            role: f
                .role
                .filter(|r| matches!(r, FolderRole::Toolbar | FolderRole::Other)),
            description: f.description.clone(),
            children: f.children.iter().map(html_node).collect(),
            added: seconds(f.added),
            modified: seconds(f.modified),
            extra: html_extra(&f.extra),
        }),
        Node::Bookmark(b) => Node::Bookmark(Bookmark {
            title: b.title.clone(),
            url: b.url.clone(),
            description: b.description.clone(),
            tags: b.tags.clone(),
            keyword: b.keyword.clone(),
            added: seconds(b.added),
            modified: seconds(b.modified),
            visited: seconds(b.visited),
            extra: html_extra(&b.extra),
        }),
        Node::Separator(s) => Node::Separator(sync_client::bookmarks::Separator {
            extra: html_extra(&s.extra),
        }),
    }
}

pub(crate) fn string(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap()
}
