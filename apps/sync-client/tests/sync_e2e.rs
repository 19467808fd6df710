//! `sync-client sync` end to end: a real Prosody, the real echo bot with a vault, two devices
//! of one account and a second allowed account, each with another browser's file (Falkon,
//! Chromium, a Firefox backup), syncing in turns and at the same moment; `pull`, `push`,
//! `status` and `undo`; the exit codes; a disallowed account and an untrusted device get
//! nothing; the server's stanza log holds no bookmark URL.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sync_client::bookmarks::Format;

mod common;

use common::e2e::plaintext_to_the_bot;
use common::vault::{
    bot_command, expected, server_with, start_vault_bot, start_vault_bot_with, url, urls,
    wait_for_file_text, with_filler, Device, MARKER,
};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_in_three_formats_sync_in_turns_and_end_with_the_same_tree() {
    let server = server_with(&["bot", "alice", "carol", "eve"]);
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;

    let alice1 = Device::new(dir.path(), "alice", "alice-laptop", Format::Falkon);
    let alice2 = Device::new(dir.path(), "alice", "alice-desktop", Format::Chromium);
    let carol = Device::new(dir.path(), "carol", "carol-work", Format::FirefoxJson);
    alice1.write(&with_filler(&["a", "b"]));
    alice2.write(&["c"]);
    carol.write(&["d"]);

    let first = alice1.sync_ok(&server, &[]).await;
    assert_eq!(first["revision"], 1, "{first}");
    assert_eq!(first["wrote_file"], false);

    // A dry run shows what would come in and changes nothing.
    let before = std::fs::read(&alice2.file).unwrap();
    let dry = alice2.sync_ok(&server, &["--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert!(dry["local_changes"].as_u64().unwrap() >= 2, "{dry}");
    assert_eq!(std::fs::read(&alice2.file).unwrap(), before);

    let second = alice2.sync_ok(&server, &[]).await;
    assert_eq!(second["revision"], 2, "{second}");
    assert_eq!(second["wrote_file"], true);
    assert_eq!(urls(&alice2.file), expected(&with_filler(&["a", "b", "c"])));

    // The browser runs: nothing is written, with a clear message and exit code 3.
    let lock = carol.file.parent().unwrap().join(".parentlock");
    std::fs::write(&lock, "").unwrap();
    let locked = carol.sync(&server, &[]).await;
    assert_eq!(locked.status.code(), Some(3), "{}", stderr(&locked));
    assert!(
        stderr(&locked).contains("browser seems to be running"),
        "{}",
        stderr(&locked)
    );
    assert_eq!(urls(&carol.file), expected(&["d"]));
    std::fs::remove_file(&lock).unwrap();

    let third = carol.sync_ok(&server, &[]).await;
    assert_eq!(third["revision"], 3, "{third}");
    assert_eq!(
        urls(&carol.file),
        expected(&with_filler(&["a", "b", "c", "d"]))
    );

    // Alice's laptop is two revisions behind and edits meanwhile: deletes b, adds e.
    alice1.write(&with_filler(&["a", "e"]));
    let fourth = alice1.sync_ok(&server, &[]).await;
    assert_eq!(fourth["revision"], 4, "{fourth}");
    assert_eq!(
        urls(&alice1.file),
        expected(&with_filler(&["a", "c", "d", "e"]))
    );

    for device in [&alice2, &carol, &alice1] {
        device.sync_ok(&server, &[]).await;
    }
    let all = expected(&with_filler(&["a", "c", "d", "e"]));
    for device in [&alice1, &alice2, &carol] {
        assert_eq!(urls(&device.file), all, "{}", device.file.display());
    }

    // Carol deletes nearly everything: more than the failsafe's 20 %, refused without
    // --force (exit code 4), and nothing changes anywhere.
    carol.write(&["a"]);
    let refused = carol.sync(&server, &[]).await;
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("the merge would delete"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(urls(&carol.file), expected(&["a"]));
    carol.write(&with_filler(&["a", "c", "d", "e"]));

    // A disallowed account gets an encrypted refusal (exit code 5) and nothing else.
    let eve = Device::new(dir.path(), "eve", "eve", Format::NetscapeHtml);
    eve.write(&["evil"]);
    let refused = eve.sync(&server, &[]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("refused"), "{}", stderr(&refused));
    assert_eq!(urls(&eve.file), expected(&["evil"]));
    // The vault did not take anything of eve's.
    alice1.sync_ok(&server, &[]).await;
    assert_eq!(urls(&alice1.file), all);

    // A missing setting is a usage error (exit code 2), before anything connects.
    let usage = tokio::process::Command::new(env!("CARGO_BIN_EXE_sync-client"))
        .args(["sync", "--jid", "alice@localhost", "--file"])
        .arg(&alice1.file)
        .arg("--db")
        .arg(&alice1.db)
        .env("XMPP_PASSWORD", "x")
        .env_remove("SYNC_TO")
        .env_remove("SYNC_VAULT")
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(stderr(&usage).contains("--to"), "{}", stderr(&usage));

    // The server saw no bookmark URL: the vault traffic is inside OMEMO.
    let log = server.stanza_log();
    assert!(
        log.contains("urn:xmpp:omemo:2"),
        "the sync went as OMEMO messages"
    );
    assert!(
        !log.contains(MARKER),
        "a bookmark URL reached the server in plaintext"
    );
    // The positive control: a marker URL in a plaintext message does show in the log.
    let control = url("control");
    plaintext_to_the_bot(&server, dir.path(), "eve", &control).await;
    assert!(server.stanza_log().contains(&control));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_syncing_at_the_same_moment_converge_through_cas_retries() {
    let server = server_with(&["bot", "alice", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;
    let devices = [
        Device::new(dir.path(), "alice", "alice-laptop", Format::Falkon),
        Device::new(dir.path(), "alice", "alice-desktop", Format::Chromium),
        Device::new(dir.path(), "carol", "carol-work", Format::FirefoxJson),
    ];
    devices[0].write(&with_filler(&[]));
    devices[0].sync_ok(&server, &[]).await;
    for device in &devices[1..] {
        device.write(&[]);
        device.sync_ok(&server, &[]).await;
    }
    let names = ["x0", "x1", "x2"];
    for (device, name) in devices.iter().zip(names) {
        device.write(&with_filler(&[name]));
    }
    // All three pull the same revision and stop before their pushes; then all push at once.
    let resume = dir.path().join("resume");
    let mut children = Vec::new();
    for device in &devices {
        let child = device
            .sync_paused_at(&server, "pending", Some(&resume))
            .await;
        children.push(child);
    }
    std::fs::write(&resume, "").unwrap();
    let mut retries = 0;
    for (device, child) in devices.iter().zip(children) {
        let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .expect("a concurrent sync did not end")
            .unwrap();
        let summary = device.check(&output);
        retries += summary["cas_retries"].as_u64().unwrap();
    }
    // The first push wins; each of the two others met at least one conflict.
    assert!(retries >= 2, "{retries} retries");
    for device in &devices {
        device.sync_ok(&server, &[]).await;
    }
    let all = expected(&with_filler(&names));
    for device in &devices {
        assert_eq!(urls(&device.file), all, "{}", device.file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offline_for_many_revisions_catches_up_from_a_delta() {
    let server = server_with(&["bot", "alice", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;
    let laptop = Device::new(dir.path(), "alice", "laptop", Format::NetscapeHtml);
    let work = Device::new(dir.path(), "carol", "work", Format::Chromium);
    let mut names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    laptop.write(&names.iter().map(String::as_str).collect::<Vec<_>>());
    laptop.sync_ok(&server, &[]).await;
    work.write(&[]);
    work.sync_ok(&server, &[]).await;
    // Twelve revisions while the laptop is away: each adds a bookmark, every third also
    // deletes an earlier addition.
    for round in 0..12 {
        names.push(format!("n{round}"));
        if round % 3 == 2 {
            names.retain(|n| n != &format!("n{}", round - 2));
        }
        work.write(&names.iter().map(String::as_str).collect::<Vec<_>>());
        work.sync_ok(&server, &[]).await;
    }
    let back = laptop.sync_ok(&server, &[]).await;
    assert_eq!(back["base_revision"], 1, "{back}");
    // It pulled only what changed since its revision 1 (the delta), at least twelve
    // revisions' worth.
    assert!(back["revision"].as_u64().unwrap() >= 13, "{back}");
    let mut want: Vec<String> = names.iter().map(|n| url(n)).collect();
    want.sort();
    assert_eq!(urls(&laptop.file), want);
    assert_eq!(urls(&work.file), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_push_status_and_undo() {
    let server = server_with(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;
    let laptop = Device::new(dir.path(), "alice", "laptop", Format::Falkon);
    let desktop = Device::new(dir.path(), "alice", "desktop", Format::NetscapeHtml);
    laptop.write(&with_filler(&["a"]));
    laptop.sync_ok(&server, &[]).await;

    // status: what would come in, the revisions; nothing written.
    desktop.write(&[]);
    let before = std::fs::read(&desktop.file).unwrap();
    let status = desktop.ok(&server, "status", &[]).await;
    assert_eq!(status["vault_revision"], 1, "{status}");
    assert_eq!(status["base_revision"], 0, "{status}");
    assert_eq!(status["last_sync"], serde_json::Value::Null, "{status}");
    assert_eq!(status["local_changes"], 21, "{status}");
    assert_eq!(status["remote_changes"], 0, "{status}");
    assert_eq!(std::fs::read(&desktop.file).unwrap(), before);

    // pull: the vault comes in, the desktop's own new bookmark does not go out.
    desktop.write(&["b"]);
    let pulled = desktop.ok(&server, "pull", &[]).await;
    assert_eq!(
        (&pulled["pushed"], &pulled["wrote_file"]),
        (&false.into(), &true.into()),
        "{pulled}"
    );
    assert_eq!(urls(&desktop.file), expected(&with_filler(&["a", "b"])));
    let synced = laptop.sync_ok(&server, &[]).await;
    assert_eq!(synced["revision"], 1, "{synced}");
    assert_eq!(urls(&laptop.file), expected(&with_filler(&["a"])));

    // push: b goes out, the desktop's file is not written; laptop's c does not come in.
    laptop.write(&with_filler(&["a", "c"]));
    laptop.sync_ok(&server, &[]).await;
    let after_pull = std::fs::read(&desktop.file).unwrap();
    let pushed = desktop.ok(&server, "push", &[]).await;
    assert_eq!(
        (&pushed["pushed"], &pushed["wrote_file"]),
        (&true.into(), &false.into()),
        "{pushed}"
    );
    assert_eq!(std::fs::read(&desktop.file).unwrap(), after_pull);
    laptop.sync_ok(&server, &[]).await;
    assert_eq!(urls(&laptop.file), expected(&with_filler(&["a", "b", "c"])));
    // The desktop's next sync brings c, once, and b stays once.
    let status = desktop.ok(&server, "status", &[]).await;
    assert_eq!(status["local_changes"], 1, "{status}");
    assert_eq!(status["remote_changes"], 0, "{status}");
    assert!(status["last_sync"].is_i64(), "{status}");
    desktop.sync_ok(&server, &[]).await;
    assert_eq!(
        urls(&desktop.file),
        expected(&with_filler(&["a", "b", "c"]))
    );

    // undo: the laptop adds d, the desktop's sync brings it, undo takes it out again...
    laptop.write(&with_filler(&["a", "b", "c", "d"]));
    laptop.sync_ok(&server, &[]).await;
    let synced = desktop.sync_ok(&server, &[]).await;
    assert_eq!(synced["wrote_file"], true, "{synced}");
    assert_eq!(
        urls(&desktop.file),
        expected(&with_filler(&["a", "b", "c", "d"]))
    );
    // ...not while the browser runs (exit code 3)...
    let lock = desktop.file.parent().unwrap().join("lock");
    std::fs::write(&lock, "").unwrap();
    let locked = desktop.run(&server, "undo", &[]).await;
    assert_eq!(locked.status.code(), Some(3), "{}", stderr(&locked));
    std::fs::remove_file(&lock).unwrap();
    let undone = desktop.ok(&server, "undo", &[]).await;
    assert_eq!(undone["command"], "undo", "{undone}");
    assert_eq!(
        urls(&desktop.file),
        expected(&with_filler(&["a", "b", "c"]))
    );
    // ...once...
    let again = desktop.run(&server, "undo", &[]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already undone"),
        "{}",
        stderr(&again)
    );
    // ...and the next sync sends the undo as the desktop's change: d goes everywhere, and
    // does not come back.
    let synced = desktop.sync_ok(&server, &[]).await;
    assert_eq!(synced["pushed"], true, "{synced}");
    assert_eq!(
        urls(&desktop.file),
        expected(&with_filler(&["a", "b", "c"]))
    );
    laptop.sync_ok(&server, &[]).await;
    assert_eq!(urls(&laptop.file), expected(&with_filler(&["a", "b", "c"])));

    // undo refuses to throw away an edit made after the sync (exit code 4).
    laptop.write(&with_filler(&["a", "b", "c", "e"]));
    laptop.sync_ok(&server, &[]).await;
    desktop.sync_ok(&server, &[]).await;
    desktop.write(&with_filler(&["a", "b", "c", "e", "mine"]));
    let refused = desktop.run(&server, "undo", &[]).await;
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert_eq!(
        urls(&desktop.file),
        expected(&with_filler(&["a", "b", "c", "e", "mine"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_device_gets_nothing_until_it_is_trusted() {
    let server = server_with(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    // Under the manual policy, a new device is distrusted until the operator trusts it.
    let _bot = start_vault_bot_with(&server, dir.path(), &["--trust-policy", "manual"]).await;
    let mut laptop = Device::new(dir.path(), "alice", "laptop", Format::Falkon);
    laptop.timeout = 12;
    laptop.write(&with_filler(&["a"]));
    let silent = laptop.sync(&server, &[]).await;
    assert_eq!(silent.status.code(), Some(5), "{}", stderr(&silent));
    assert!(stderr(&silent).contains("no answer"), "{}", stderr(&silent));
    wait_for_file_text(
        &laptop.bot_log,
        "vault request from an untrusted device, not answering",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !std::fs::read_to_string(&laptop.bot_log)
            .unwrap()
            .contains("vault request answered"),
        "the bot answered an untrusted device"
    );

    // The positive control: the same device, trusted by the operator, gets its answers.
    let alice = server.jid("alice").unwrap();
    let devices: serde_json::Value = serde_json::from_str(
        &bot_command(&server, dir.path(), &["devices", alice.as_str(), "--json"]).await,
    )
    .unwrap();
    let fingerprint = devices[0]["fingerprint"].as_str().unwrap().to_owned();
    bot_command(
        &server,
        dir.path(),
        &["trust", alice.as_str(), &fingerprint],
    )
    .await;
    laptop.timeout = 90;
    let synced = laptop.sync_ok(&server, &[]).await;
    assert_eq!(synced["revision"], 1, "{synced}");
}
