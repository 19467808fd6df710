//! Crash safety of `sync-client sync` against a real Prosody and the real bot: the client is
//! killed (SIGKILL) at each step of a sync, the bot is killed while a client waits for it.
//! Nothing is lost, nothing shows twice, the browser's file is never half-written, and the
//! next sync converges.
//!
//! The client stops at a named step when `SYNC_CLIENT_TEST_PAUSE_AT` says so
//! (`sync_client::sync::TEST_PAUSE_AT`); the test waits for it to say so on stderr, then kills
//! it or lets it go on.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use sync_client::bookmarks::Format;

mod common;

use common::vault::{server_with, start_vault_bot, url, urls, Device};

fn sorted(names: &[String]) -> Vec<String> {
    let mut urls: Vec<String> = names.iter().map(|n| url(n)).collect();
    urls.sort();
    urls
}

fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

fn temporaries(file: &Path) -> Vec<String> {
    let name = file.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.tmp-")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_at_any_step_of_a_sync_loses_nothing_and_duplicates_nothing() {
    let server = server_with(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;
    // Falkon and Netscape HTML have no ids of their own: a base out of step with the file
    // would show as duplicates.
    let laptop = Device::new(dir.path(), "alice", "laptop", Format::Falkon);
    let desktop = Device::new(dir.path(), "alice", "desktop", Format::NetscapeHtml);
    let mut all: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    laptop.write(&refs(&all));
    laptop.sync_ok(&server, &[]).await;
    desktop.write(&[]);
    desktop.sync_ok(&server, &[]).await;
    assert_eq!(urls(&desktop.file), sorted(&all));

    // (step, whether the file holds the merge when the client dies there, what the next
    // run reports about the interrupted one)
    let steps = [
        ("pulled", false, serde_json::Value::Null),
        ("pending", false, "completed".into()),
        ("pushed", false, "completed".into()),
        ("renaming", false, "completed".into()),
        ("written", true, "finished".into()),
    ];
    for (step, written, recovered) in steps {
        let remote = format!("remote-{step}");
        let local = format!("local-{step}");
        // The vault has something new, and so has the laptop's file: the killed sync both
        // pushes and writes.
        let mut desktop_names = all.clone();
        desktop_names.push(remote.clone());
        desktop.write(&refs(&desktop_names));
        desktop.sync_ok(&server, &[]).await;
        let mut laptop_names = all.clone();
        laptop_names.push(local.clone());
        laptop.write(&refs(&laptop_names));

        let mut child = laptop.sync_paused_at(&server, step, None).await;
        child.kill().await.unwrap();

        // Never a half-written file: the old one, or the merged one.
        let mut merged = laptop_names.clone();
        merged.push(remote.clone());
        let expected_now = if written { &merged } else { &laptop_names };
        assert_eq!(urls(&laptop.file), sorted(expected_now), "killed at {step}");
        // Killed between writing the new content and the rename: the new content sits in a
        // temporary file (the positive control that the kill came mid-write).
        assert_eq!(
            !temporaries(&laptop.file).is_empty(),
            step == "renaming",
            "killed at {step}"
        );

        let next = laptop.sync_ok(&server, &[]).await;
        assert_eq!(
            next["recovered"], recovered,
            "after a kill at {step}: {next}"
        );
        assert_eq!(
            urls(&laptop.file),
            sorted(&merged),
            "after a kill at {step}: nothing lost, nothing twice"
        );
        assert!(temporaries(&laptop.file).is_empty(), "after {step}");
        desktop.sync_ok(&server, &[]).await;
        assert_eq!(urls(&desktop.file), sorted(&merged), "desktop after {step}");
        all = merged;
    }
    // Both keep the same tree on further syncs.
    let last = laptop.sync_ok(&server, &[]).await;
    assert_eq!(last["recovered"], serde_json::Value::Null);
    assert_eq!(urls(&laptop.file), sorted(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_killed_during_a_sync_loses_nothing() {
    let server = server_with(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let mut bot = start_vault_bot(&server, dir.path()).await;
    let laptop = Device::new(dir.path(), "alice", "laptop", Format::Falkon);
    let desktop = Device::new(dir.path(), "alice", "desktop", Format::Chromium);
    let mut names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    laptop.write(&refs(&names));
    laptop.sync_ok(&server, &[]).await;
    desktop.write(&["d"]);
    desktop.sync_ok(&server, &[]).await;
    names.push("d".into());
    assert_eq!(urls(&desktop.file), sorted(&names));

    // The laptop adds a bookmark and stops right before its push; the bot dies there.
    // The laptop has not seen d yet.
    let mut laptop_names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    laptop_names.push("during-crash".into());
    laptop.write(&refs(&laptop_names));
    names.push("during-crash".into());
    let resume = dir.path().join("resume");
    let child = laptop
        .sync_paused_at(&server, "pending", Some(&resume))
        .await;
    bot.kill().await.unwrap();
    // The push goes out while the bot is down; the client sends it again until the bot is
    // back, and the bot answers the repeat.
    std::fs::write(&resume, "").unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the sync did not end after the bot came back")
        .unwrap();
    let summary = laptop.check(&output);
    assert_eq!(summary["pushed"], true, "{summary}");
    assert_eq!(urls(&laptop.file), sorted(&names));
    desktop.sync_ok(&server, &[]).await;
    assert_eq!(urls(&desktop.file), sorted(&names));
}
