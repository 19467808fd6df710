//! End to end through the files: a laptop with Falkon and a desktop with Chromium (its real
//! `Bookmarks` file) sync through a vault state, each reading its browser's file, merging
//! and writing the file back, as the client will once it is wired to the bot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bookmarks::sync::{materialize, merge, record, MergeOptions, ReplicaId, State};
use bookmarks::{export, import, BookmarkTree, Format, Node};
use common::rng;

struct Machine {
    format: Format,
    replica: ReplicaId,
    file: Vec<u8>,
    last: State,
}

impl Machine {
    /// One sync: read the file, record it, merge with the vault, write both back. Returns
    /// whether the merge changed anything on either side.
    fn sync(&mut self, vault: &mut State) -> bool {
        let tree = import(&self.file, self.format).unwrap();
        let local = record(&self.last, &tree, self.format, self.replica, &mut rng()).unwrap();
        let merged = merge(&self.last, &local, vault, &MergeOptions::default()).unwrap();
        let changed = !merged.diff.is_empty();
        *vault = merged.state.clone();
        self.last = merged.state;
        let mut out = materialize(&self.last, self.format);
        out.extra = tree.extra;
        self.file = export(&out, self.format).unwrap();
        changed
    }

    fn titles(&self) -> Vec<String> {
        let tree = import(&self.file, self.format).unwrap();
        let mut out = Vec::new();
        collect(&tree, &mut out);
        out
    }
}

fn collect(tree: &BookmarkTree, out: &mut Vec<String>) {
    let mut pending: Vec<&Node> = tree.roots.iter().rev().collect();
    while let Some(node) = pending.pop() {
        match node {
            Node::Bookmark(b) => out.push(b.title.clone()),
            Node::Folder(f) => {
                if f.role.is_none() {
                    out.push(format!("[{}]", f.title));
                }
                pending.extend(f.children.iter().rev());
            }
            Node::Separator(_) => {}
        }
    }
}

fn count(list: &[String], title: &str) -> usize {
    list.iter().filter(|t| *t == title).count()
}

const FALKON: &str = r#"{"roots":{
 "bookmark_bar":{"type":"folder","name":"Bookmarks Toolbar","children":[
   {"type":"url","name":"Rust","url":"https://www.rust-lang.org/","visit_count":3},
   {"type":"folder","name":"News","children":[
     {"type":"url","name":"BBC","url":"https://www.bbc.co.uk/","keyword":"bbc"}]}]},
 "bookmark_menu":{"type":"folder","name":"Bookmarks Menu","children":[
   {"type":"url","name":"Wiki","url":"https://wikipedia.org/"}]},
 "other":{"type":"folder","name":"Other Bookmarks","children":[]}},"version":1}"#;

#[test]
fn falkon_laptop_and_chromium_desktop_converge_through_the_vault() {
    let mut vault = State::default();
    let mut laptop = Machine {
        format: Format::Falkon,
        replica: 1,
        file: FALKON.as_bytes().to_vec(),
        last: State::default(),
    };
    let mut desktop = Machine {
        format: Format::Chromium,
        replica: 2,
        file: include_bytes!("fixtures/small.Bookmarks").to_vec(),
        last: State::default(),
    };
    let chromium_titles = desktop.titles();
    assert!(chromium_titles.contains(&"Example".to_owned()));

    laptop.sync(&mut vault);
    desktop.sync(&mut vault);
    laptop.sync(&mut vault);

    // Each browser has the other's bookmarks once, where its format can show them.
    let on_laptop = laptop.titles();
    let on_desktop = desktop.titles();
    for title in ["Rust", "[News]", "BBC"] {
        assert_eq!(
            count(&on_desktop, title),
            1,
            "{title} on the desktop: {on_desktop:?}"
        );
        assert_eq!(count(&on_laptop, title), 1, "{title} on the laptop");
    }
    assert_eq!(count(&on_laptop, "Wiki"), 1);
    assert_eq!(
        count(&on_desktop, "Wiki"),
        0,
        "Chromium has no bookmarks menu"
    );
    for title in &chromium_titles {
        assert!(
            on_laptop.contains(title),
            "{title} missing on the laptop: {on_laptop:?}"
        );
    }
    // Chromium still has its own bookmarks, once each, in its order (the laptop's first sync
    // interleaves with them: two first imports into one root have no order between them).
    let own: Vec<&String> = on_desktop
        .iter()
        .filter(|t| chromium_titles.contains(t))
        .collect();
    assert_eq!(own, chromium_titles.iter().collect::<Vec<_>>());

    // The laptop renames a bookmark that came from Chromium; the desktop deletes Rust.
    laptop.file = String::from_utf8(laptop.file.clone())
        .unwrap()
        .replacen("\"Example\"", "\"Example (laptop)\"", 1)
        .into_bytes();
    let mut tree = import(&desktop.file, Format::Chromium).unwrap();
    if let Node::Folder(bar) = &mut tree.roots[0] {
        bar.children
            .retain(|n| !matches!(n, Node::Bookmark(b) if b.title == "Rust"));
    }
    desktop.file = export(&tree, Format::Chromium).unwrap();

    laptop.sync(&mut vault);
    desktop.sync(&mut vault);
    laptop.sync(&mut vault);
    for machine in [&laptop, &desktop] {
        let titles = machine.titles();
        assert_eq!(
            count(&titles, "Example (laptop)"),
            1,
            "{:?}",
            machine.format
        );
        assert_eq!(count(&titles, "Example"), 0);
        assert_eq!(count(&titles, "Rust"), 0);
        assert_eq!(count(&titles, "BBC"), 1);
    }

    // Nothing left to do: another round changes neither file.
    let (laptop_file, desktop_file) = (laptop.file.clone(), desktop.file.clone());
    assert!(!laptop.sync(&mut vault));
    assert!(!desktop.sync(&mut vault));
    assert_eq!(laptop.file, laptop_file);
    assert_eq!(desktop.file, desktop_file);
    // The Chromium file Chromium will read has a correct checksum: exporting what it imports
    // gives the same bytes.
    let reread = import(&desktop.file, Format::Chromium).unwrap();
    assert_eq!(export(&reread, Format::Chromium).unwrap(), desktop.file);
}
