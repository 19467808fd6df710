//! SIGTERM during a send: `sync-client` stops at once, with a one-line reason and exit code
//! 1 (not killed by the signal), in the state where it waits for an echo while the server is
//! gone and it tries to reconnect.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::e2e::{alice_db, send_command, server, start_echo_bot, write_bookmarks};

/// Waits until `needle` is in the file at `path`.
async fn wait_for(path: &std::path::Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_reconnecting_mid_send_stops_at_once() {
    let mut server = server();
    let dir = tempfile::tempdir().unwrap();
    // The bot publishes its device, then goes away: the send waits for echoes that do not
    // come.
    let mut bot = start_echo_bot(&server, &dir.path().join("bot.sqlite3")).await;
    bot.child.kill().await.unwrap();
    let file = dir.path().join("bookmarks.html");
    write_bookmarks(&file, 50);
    let log = dir.path().join("sync-client.log");
    let mut send = send_command(&server, dir.path(), &file, &["--timeout", "120"])
        .env("RUST_LOG", "warn,xmpp_core::connection=info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(&log, "online").await;
    tokio::task::block_in_place(|| server.stop()).unwrap();
    wait_for(&log, "reconnect failed").await;

    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &send.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), send.wait())
        .await
        .expect("sync-client did not exit within 10 s of SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    eprintln!("sync-client stopped {took:?} after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.signal(), None, "killed by the signal: {text}");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("sync-client: stopped by SIGTERM"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let connection = rusqlite::Connection::open(alice_db(dir.path())).unwrap();
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
