//! `sync-client send` end to end through a real Prosody: against the real echo bot (a small
//! set and 5,000 bookmarks in several chunks), against the Python reference echo peer, and
//! against a peer that answers in plaintext; bad files are refused before anything is sent.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

use common::e2e::{
    plaintext_to_the_bot, report, server, start_echo_bot, sync_client, sync_client_command,
    workspace_root, write_bookmarks,
};

fn python() -> PathBuf {
    let python = std::env::var_os("OMEMO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "the Python venv is missing: run `just venv`"
    );
    python
}

async fn start_python_peer(server: &TestServer, mode: &str) -> Child {
    let mut child = Command::new(python())
        .arg(workspace_root().join("interop/xmpp_peer.py"))
        .args(["--mode", mode, "--jid", server.jid("bot").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .args(["--timeout", "30"])
        .env("XMPP_PASSWORD", "bot-password")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Not inherited: an orphan must not hold the test runner's output pipe open.
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("\"ready\"") {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return;
            }
        }
        panic!("the Python peer exited before it was ready");
    })
    .await
    .unwrap();
    child
}

fn messages_bytes(log: &str) -> (usize, usize) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("<message") && l.contains("urn:xmpp:omemo:2"))
        .collect();
    (lines.len(), lines.iter().map(|l| l.len()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_a_small_set_and_5000_bookmarks_to_the_echo_bot() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_echo_bot(&server, &dir.path().join("bot.sqlite3")).await;

    let small = workspace_root().join("apps/sync-client/tests/fixtures/firefox-export.html");
    let output = sync_client(&server, dir.path(), &small, &[]).await;
    let summary = report(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["verified_chunks"], summary["chunks"]);
    assert!(summary["bookmarks"].as_u64().unwrap() > 0);
    assert!(summary["bot_devices"][0]["device"].as_u64().unwrap() > 0);
    assert_eq!(summary["bot_devices"][0]["trust"], "AutomaticallyTrusted");

    let big = dir.path().join("big.html");
    write_bookmarks(&big, 5000);
    let before = messages_bytes(&server.stanza_log());
    let started = Instant::now();
    let output = sync_client(&server, dir.path(), &big, &[]).await;
    let elapsed = started.elapsed();
    let summary = report(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(summary["bookmarks"], 5000);
    let chunks = summary["chunks"].as_u64().unwrap();
    assert!(chunks > 1, "5,000 bookmarks need several chunks");
    assert_eq!(summary["verified_chunks"], chunks);
    // What came back, reassembled, is the document that was sent.
    assert_eq!(summary["echoed"]["matches"], true, "{summary}");
    assert_eq!(summary["echoed"]["bookmarks"], 5000);
    assert_eq!(
        summary["echoed"]["document_sha256"],
        summary["document_sha256"]
    );
    assert_eq!(summary["stale_echoes"], 0);
    assert_eq!(summary["key_exchange_answers"], 0);
    let after = messages_bytes(&server.stanza_log());
    eprintln!(
        "5,000 bookmarks: {chunks} chunks, {} document bytes, {} compressed, send {:.2} s (process {:.2?}), {} encrypted stanzas / {} bytes through the server (as logged, both directions)",
        summary["document_bytes"],
        summary["compressed_bytes"],
        summary["seconds"].as_f64().unwrap(),
        elapsed,
        after.0 - before.0,
        after.1 - before.1,
    );

    // What the server saw. The bookmarks themselves cannot be looked for (a chunk's data is
    // compressed), but every chunk body starts with a clear header: the chunk prefix, the
    // transfer id and the chunk's place. The header of an encrypted chunk is inside the
    // OMEMO payload; a chunk (or an echo of it) sent in plaintext would show it in the log.
    let header = format!(
        "{} {} 1/{chunks} ",
        sync_client::transfer::CHUNK_PREFIX,
        summary["transfer_id"].as_str().unwrap()
    );
    let log = server.stanza_log();
    assert!(
        messages_bytes(&log).0 - before.0 >= 2 * chunks as usize,
        "the chunks and their echoes went as OMEMO messages"
    );
    assert!(
        !log.contains(sync_client::transfer::CHUNK_PREFIX),
        "a chunk reached the server in plaintext"
    );
    // The positive control: the same header sent as a plaintext body is in the log.
    plaintext_to_the_bot(&server, dir.path(), "alice", &header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_before_anything_is_sent() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "truncated.json",
            &b"{\"roots\": {\"bookmark_bar\": {\"children\": [{\"name\""[..],
        ),
        ("garbage.bin", &[0u8, 159, 146, 150, 255, 0, 1, 2][..]),
        ("empty.html", &b""[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let output = sync_client(&server, dir.path(), &path, &[]).await;
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot import"), "{name}: {stderr}");
    }
    let missing = sync_client(&server, dir.path(), &dir.path().join("nope.json"), &[]).await;
    assert!(!missing.status.success());
    // Nothing logged in: the input is checked before connecting.
    assert!(!server.stanza_log().contains("alice@localhost"));
    // The positive control: a login as alice does show in the log.
    plaintext_to_the_bot(&server, dir.path(), "alice", "a login as alice").await;
    assert!(server.stanza_log().contains("alice@localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn sends_to_the_python_echo_peer() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let _peer = start_python_peer(&server, "echo").await;
    let big = dir.path().join("big.html");
    write_bookmarks(&big, 2000);
    let output = sync_client(&server, dir.path(), &big, &[]).await;
    let summary = report(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(summary["verified_chunks"], summary["chunks"]);
    assert!(summary["chunks"].as_u64().unwrap() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn a_plaintext_answer_fails_the_send() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let _peer = start_python_peer(&server, "plaintext-echo").await;
    let small = workspace_root().join("apps/sync-client/tests/fixtures/falkon-bookmarks.json");
    let output = sync_client(&server, dir.path(), &small, &["--timeout", "5"]).await;
    assert!(!output.status.success(), "a plaintext answer was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unencrypted message received, ignoring"),
        "{stderr}"
    );
    let summary = report(&output);
    assert_eq!(summary["ok"], false);
    assert!(summary["unencrypted_replies"].as_u64().unwrap() >= 1);
    assert_eq!(summary["verified_chunks"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_trust_and_fingerprint_commands() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_echo_bot(&server, &dir.path().join("bot.sqlite3")).await;

    let output = sync_client_command(&server, dir.path(), &["fingerprint"]).await;
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("xmpp:alice@localhost?trust-message;encryption=urn:xmpp:omemo:2;trust="));
    assert!(text.contains('█') || text.contains('▀'), "no QR code drawn");
    // Both fingerprint forms, labelled: clients show one or the other.
    assert!(
        text.contains("Fingerprint, Ed25519 form") && text.contains("Fingerprint, Curve25519 form"),
        "{text}"
    );

    let output =
        sync_client_command(&server, dir.path(), &["devices", "bot@localhost", "--json"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let devices: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let bot = &devices[0];
    assert_eq!(bot["active"], true);
    assert_eq!(bot["label_verified"], true);
    assert_eq!(bot["trust"], "AutomaticallyTrusted");
    // One device, listed in both versions.
    assert_eq!(bot["versions"], serde_json::json!(["omemo2", "legacy"]));
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    let fingerprint = bot["fingerprint"].as_str().unwrap().to_owned();

    // Authenticate the bot's key by its fingerprint; the next send reports that level.
    let output = sync_client_command(
        &server,
        dir.path(),
        &["trust", "bot@localhost", &fingerprint],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Authenticated"));
    let small = workspace_root().join("apps/sync-client/tests/fixtures/chromium-Bookmarks.json");
    let output = sync_client(&server, dir.path(), &small, &[]).await;
    let summary = report(&output);
    assert!(output.status.success(), "{summary}");
    assert_eq!(summary["bot_devices"][0]["trust"], "Authenticated");

    // Distrusted, the bot's device gets nothing: the send fails without sending.
    let output = sync_client_command(
        &server,
        dir.path(),
        &["distrust", "bot@localhost", &fingerprint],
    )
    .await;
    assert!(output.status.success());
    let output = sync_client(&server, dir.path(), &small, &[]).await;
    assert!(!output.status.success());
    assert_eq!(report(&output)["verified_chunks"], 0);

    // An unknown fingerprint is a clear error.
    let output =
        sync_client_command(&server, dir.path(), &["trust", "bot@localhost", "00ff"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("fingerprint"));
}
