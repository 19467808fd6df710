//! Helpers shared by the sync tests: trees written as Firefox backups (which carry GUIDs).

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bookmarks::sync::{self, materialize, record, ReplicaId, State};
use bookmarks::{Bookmark, BookmarkTree, Extra, Folder, FolderRole, Format, Node, Separator};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// A short name as a 12-character Firefox GUID (`a` → `a___________`).
pub fn pad(name: &str) -> String {
    format!("{name:_<12}")
}

pub fn guid_extra(guid: &str) -> Extra {
    let mut extra = Extra::new();
    extra.insert("guid".to_owned(), Value::String(pad(guid)));
    extra
}

pub fn b(guid: &str, title: &str, url: &str) -> Node {
    Node::Bookmark(Bookmark {
        title: title.to_owned(),
        url: url.to_owned(),
        extra: guid_extra(guid),
        ..Bookmark::default()
    })
}

pub fn f(guid: &str, title: &str, children: Vec<Node>) -> Node {
    Node::Folder(Folder {
        title: title.to_owned(),
        children,
        extra: guid_extra(guid),
        ..Folder::default()
    })
}

pub fn sep(guid: &str) -> Node {
    Node::Separator(Separator {
        extra: guid_extra(guid),
    })
}

/// A Firefox-like tree with everything in the toolbar.
pub fn toolbar(children: Vec<Node>) -> BookmarkTree {
    BookmarkTree {
        roots: vec![Node::Folder(Folder {
            title: "toolbar".to_owned(),
            role: Some(FolderRole::Toolbar),
            children,
            ..Folder::default()
        })],
        extra: Extra::new(),
    }
}

pub fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// Records a Firefox-style tree (nodes carry their GUIDs).
pub fn rec(base: &State, tree: BookmarkTree, replica: ReplicaId) -> State {
    record(base, &tree, Format::FirefoxJson, replica, &mut rng()).unwrap()
}

/// The toolbar as text: `guid:title` for bookmarks, `guid(…)` for folders, `|` for separators.
pub fn outline(state: &State) -> String {
    let tree = materialize(state, Format::FirefoxJson);
    let toolbar = tree.roots.iter().find_map(|n| match n {
        Node::Folder(f) if f.role == Some(FolderRole::Toolbar) => Some(f),
        _ => None,
    });
    toolbar.map(|t| render(&t.children)).unwrap_or_default()
}

fn render(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| match n {
            Node::Bookmark(b) => format!("{}:{}", guid_of(&b.extra), b.title),
            Node::Folder(f) => format!("{}({})", guid_of(&f.extra), render(&f.children)),
            Node::Separator(s) => format!("|{}", guid_of(&s.extra)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn guid_of(extra: &Extra) -> String {
    extra
        .get("guid")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .trim_end_matches('_')
        .to_owned()
}

/// Merge with the rails off.
pub fn merge_forced(base: &State, local: &State, remote: &State) -> sync::Merged {
    sync::merge(
        base,
        local,
        remote,
        &sync::MergeOptions {
            force: true,
            ..sync::MergeOptions::default()
        },
    )
    .unwrap()
}
