//! `sync-client sync` of 20,000 bookmarks against a real Prosody and the real bot: the first
//! sync (everything goes to the vault) and incremental syncs of one changed bookmark. Prints
//! the wall time of each `sync-client sync` run (log-in included) and the bytes of the stanzas
//! the server received during it (the client's and the bot's, as Prosody's stanza log shows
//! them: base64 OMEMO payloads, no TLS), and the incremental-to-first ratios of this run.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code: a failed step should abort"
)]

use std::time::Instant;

use sync_client::bookmarks::{self, Bookmark, BookmarkTree, Folder, FolderRole, Format, Node};
use test_prosody::TestServer;

#[path = "../tests/common/mod.rs"]
mod common;

use common::vault::{server_with, start_vault_bot, Device};

const BOOKMARKS: usize = 20_000;
const INCREMENTAL_RUNS: usize = 3;

/// `BOOKMARKS` bookmarks in folders of 100 on the toolbar; bookmark `changed` gets another
/// title.
fn tree(changed: Option<usize>) -> BookmarkTree {
    let folders = (0..BOOKMARKS / 100)
        .map(|f| {
            Node::Folder(Folder {
                title: format!("Folder {f}"),
                children: (0..100)
                    .map(|i| {
                        let n = f * 100 + i;
                        Node::Bookmark(Bookmark {
                            title: if changed == Some(n) {
                                format!("Bookmark {n}, renamed")
                            } else {
                                format!("Bookmark {n}")
                            },
                            url: format!("https://example.org/{f}/{n}"),
                            ..Bookmark::default()
                        })
                    })
                    .collect(),
                ..Folder::default()
            })
        })
        .collect();
    BookmarkTree {
        roots: vec![Node::Folder(Folder {
            title: "Bookmarks bar".into(),
            role: Some(FolderRole::Toolbar),
            children: folders,
            ..Folder::default()
        })],
        extra: Default::default(),
    }
}

/// Bytes of the stanzas the server received so far.
fn received_bytes(server: &TestServer) -> usize {
    server
        .stanza_log()
        .lines()
        .filter(|l| l.contains("RECV:"))
        .map(str::len)
        .sum()
}

/// Runs one sync; (seconds, stanza bytes received by the server meanwhile).
async fn measured_sync(server: &TestServer, device: &Device) -> (f64, usize) {
    let bytes = received_bytes(server);
    let start = Instant::now();
    let summary = device.sync_ok(server, &[]).await;
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(summary["pushed"], true, "{summary}");
    // The log is written as the stanzas pass; the last answer is in it once the sync ended.
    (seconds, received_bytes(server) - bytes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = server_with(&["bot", "alice"]);
        let dir = tempfile::tempdir().unwrap();
        let _bot = start_vault_bot(&server, dir.path()).await;
        let mut device = Device::new(dir.path(), "alice", "laptop", Format::Falkon);
        device.timeout = 600;
        let bytes = bookmarks::export(&tree(None), Format::Falkon).unwrap();
        std::fs::write(&device.file, &bytes).unwrap();
        println!(
            "sync of {BOOKMARKS} bookmarks (Falkon file of {} bytes), one run each",
            bytes.len()
        );

        let (first_s, first_b) = measured_sync(&server, &device).await;
        println!("first sync:        {first_s:8.2} s  {first_b:>11} stanza bytes");

        let mut runs = Vec::new();
        for run in 0..INCREMENTAL_RUNS {
            let changed = bookmarks::export(&tree(Some(run * 97)), Format::Falkon).unwrap();
            std::fs::write(&device.file, changed).unwrap();
            let (s, b) = measured_sync(&server, &device).await;
            println!("incremental sync:  {s:8.2} s  {b:>11} stanza bytes  (one bookmark renamed)");
            runs.push((s, b));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (median_s, _) = runs[INCREMENTAL_RUNS / 2];
        let mut bytes: Vec<usize> = runs.iter().map(|r| r.1).collect();
        bytes.sort_unstable();
        let median_b = bytes[INCREMENTAL_RUNS / 2];
        println!(
            "incremental / first (medians of {INCREMENTAL_RUNS}): time {:.3}, bytes {:.4}",
            median_s / first_s,
            median_b as f64 / first_b as f64
        );
    });
}
