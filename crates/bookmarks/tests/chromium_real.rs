//! The real client: Chromium loads a `Bookmarks` file written back by the sync (bookmarks
//! from another browser included) and saves its own model; its file must hold the same
//! bookmarks with the same GUIDs, and our exporter must reproduce Chromium's bytes, checksum
//! included.
//!
//! Needs Chromium (Debian's `chromium` package, or `BOOKMARKS_CHROMIUM=/path/to/chromium`), so
//! it is ignored by default: `cargo test -p bookmarks --test chromium_real -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookmarks::sync::{materialize, merge, record, MergeOptions, State};
use bookmarks::{export, import, BookmarkTree, Format, Node};
use common::rng;
use serde_json::Value;

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("BOOKMARKS_CHROMIUM") {
        return path.into();
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            let path = dir.join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!("Chromium not found: install Debian's chromium package or set BOOKMARKS_CHROMIUM");
}

/// Chromium in its own process group, stopped (the whole group) on drop.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

fn start(profile: &Path) -> Browser {
    let child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start Chromium");
    Browser(child)
}

/// Rows (GUID, title, URL or "folder") in pre-order of the three roots.
fn rows(tree: &BookmarkTree) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut pending: Vec<&Node> = tree.roots.iter().rev().collect();
    while let Some(node) = pending.pop() {
        let guid = |extra: &bookmarks::Extra| {
            extra
                .get("guid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match node {
            Node::Bookmark(b) => out.push((guid(&b.extra), b.title.clone(), b.url.clone())),
            Node::Folder(f) => {
                if f.role.is_none() {
                    out.push((guid(&f.extra), f.title.clone(), "folder".to_owned()));
                }
                pending.extend(f.children.iter().rev());
            }
            Node::Separator(_) => {}
        }
    }
    out
}

#[test]
#[ignore = "needs Chromium; run with --ignored"]
fn chromium_loads_the_written_back_file_and_saves_the_same_bookmarks() {
    // The desktop's real file merged with bookmarks from a Falkon laptop.
    let falkon = r#"{"roots":{"bookmark_bar":{"type":"folder","name":"Bar","children":[
        {"type":"url","name":"Rust <lang> & \"co\"","url":"https://www.rust-lang.org/"},
        {"type":"folder","name":"Ünïcödé 📁","children":[
          {"type":"url","name":"BBC","url":"https://www.bbc.co.uk/news"}]}]},
        "bookmark_menu":{"type":"folder","name":"Menu","children":[]},
        "other":{"type":"folder","name":"Other","children":[
          {"type":"url","name":"Wiki","url":"https://en.wikipedia.org/wiki/XMPP"}]}},"version":1}"#;
    let chromium_file = include_bytes!("fixtures/small.Bookmarks");
    let laptop = record(
        &State::default(),
        &import(falkon.as_bytes(), Format::Falkon).unwrap(),
        Format::Falkon,
        1,
        &mut rng(),
    )
    .unwrap();
    let desktop_tree = import(chromium_file, Format::Chromium).unwrap();
    let desktop = record(
        &State::default(),
        &desktop_tree,
        Format::Chromium,
        2,
        &mut rng(),
    )
    .unwrap();
    let merged = merge(
        &State::default(),
        &desktop,
        &laptop,
        &MergeOptions::default(),
    )
    .unwrap()
    .state;
    let mut tree = materialize(&merged, Format::Chromium);
    tree.extra = desktop_tree.extra.clone();
    let ours = export(&tree, Format::Chromium).unwrap();
    let expected = rows(&import(&ours, Format::Chromium).unwrap());
    assert!(
        expected.len() > 12,
        "the laptop's bookmarks are in: {expected:?}"
    );

    let profile = tempfile::tempdir().unwrap();
    let default = profile.path().join("Default");
    std::fs::create_dir_all(&default).unwrap();
    let path = default.join("Bookmarks");
    // Chromium only writes its model back when loading needed a repair; a node without an id
    // is such a repair (it gets the next free id, nothing else changes). Take the id of the
    // first bookmark of the bar away.
    let mut without_id: Value = serde_json::from_slice(&ours).unwrap();
    without_id["roots"]["bookmark_bar"]["children"][0]
        .as_object_mut()
        .unwrap()
        .remove("id");
    std::fs::write(&path, serde_json::to_vec(&without_id).unwrap()).unwrap();

    let _browser = start(profile.path());
    let backup = default.join("Bookmarks.bak");
    let deadline = Instant::now() + Duration::from_secs(60);
    let saved = loop {
        if backup.exists() {
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                    if value["roots"]["bookmark_bar"]["children"][0]["id"].is_string() {
                        break bytes;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Chromium did not save its bookmarks within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(_browser);

    let theirs = import(&saved, Format::Chromium).unwrap();
    assert_eq!(
        rows(&theirs),
        expected,
        "Chromium kept every bookmark, GUID, title and URL"
    );
    // Our writer produces Chromium's bytes for Chromium's model, checksum included.
    assert!(
        export(&theirs, Format::Chromium).unwrap() == saved,
        "our export of Chromium's saved model differs from Chromium's file"
    );
    // And the sync sees no change in it (apart from the dates Chromium filled in).
    let next = record(&merged, &theirs, Format::Chromium, 2, &mut rng()).unwrap();
    assert!(next.tombstones.is_empty());
    for (guid, item) in &next.items {
        let before = &merged.items[guid];
        assert_eq!(
            (&item.title, &item.url, &item.place),
            (&before.title, &before.url, &before.place),
            "{guid}"
        );
    }
}
