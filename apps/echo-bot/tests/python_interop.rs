//! Interop with the independent Python OMEMO 2 reference (`omemo` + `twomemo` + `slixmpp`,
//! driven by `interop/xmpp_peer.py`) through a real Prosody:
//! Python client → Rust echo bot, Rust client → Python echo peer, and the Python side
//! validating the bot's published device list and bundle.
//!
//! Needs the venv that `just venv` creates; `just test` runs these with `--ignored`.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use xmpp_core::client::{Client, ClientEvent};
use xmpp_core::jid::Jid;

mod common;

use common::{python, settings, start_bot};

const MESSAGES: usize = 50;

fn peer(server: &TestServer, user: &str, mode: &str, extra: &[&str]) -> Command {
    let mut command = python::peer_command(server, user, &format!("{user}-password"), mode);
    command.args(extra).stderr(Stdio::null());
    command
}

/// Runs a peer to completion and returns its exit status and JSON lines.
async fn run_peer(mut command: Command) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the Python peer did not finish in time")
        .unwrap();
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (output.status, lines)
}

/// Starts a long-running peer and waits for its `ready` event.
async fn start_peer(mut command: Command) -> (Child, serde_json::Value) {
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                if value["event"] == "ready" {
                    return value;
                }
            }
        }
        panic!("the Python peer exited before it was ready");
    })
    .await
    .expect("the Python peer did not get ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, ready)
}

fn accounts(server: &TestServer, users: &[&str]) {
    for user in users {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn python_client_talks_to_the_rust_echo_bot() {
    let server = TestServer::start().unwrap();
    accounts(&server, &["bot", "alice", "bob"]);
    let dir = tempfile::tempdir().unwrap();
    let bot = start_bot(&server, "bot", &dir.path().join("bot.sqlite3"), &[]).await;
    let device = bot.device.clone();

    // The reference validates the published device list and bundle.
    let (status, report) = run_peer(peer(
        &server,
        "bob",
        "check-bot",
        &[
            "--to",
            "bot@localhost",
            "--expect-device-id",
            &device,
            "--min-pre-keys",
            "100",
        ],
    ))
    .await;
    assert!(status.success(), "check-bot failed: {report:?}");

    let started = Instant::now();
    let count = MESSAGES.to_string();
    let (status, lines) = run_peer(peer(
        &server,
        "alice",
        "client",
        &[
            "--to",
            "bot@localhost",
            "--count",
            &count,
            "--expect-device-id",
            &device,
        ],
    ))
    .await;
    let summary = lines
        .iter()
        .find(|l| l["event"] == "summary")
        .cloned()
        .unwrap_or_default();
    eprintln!("Python → Rust: {summary} in {:?}", started.elapsed());
    assert!(
        status.success(),
        "the Python client reported failures: {summary}"
    );
    assert_eq!(summary["answered"], MESSAGES);
    assert_eq!(summary["sent"], MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn rust_client_talks_to_the_python_echo_peer() {
    let server = TestServer::start().unwrap();
    accounts(&server, &["pybot", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pybot");
    let (_peer, ready) = start_peer(peer(
        &server,
        "pybot",
        "echo",
        &["--data-dir", data.to_str().unwrap()],
    ))
    .await;
    let peer_device = ready["device_id"].as_u64().unwrap();

    let settings = settings(&server, "carol", &dir.path().join("carol.sqlite3"));
    let (client, mut events) = Client::start(&settings).await.unwrap();
    let pybot = server.jid("pybot").unwrap();
    let started = Instant::now();
    for i in 0..MESSAGES {
        let body = format!("Rust → Python #{i}: Ünïcödé & <xml>");
        client.send_body(&pybot, &body).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await.unwrap() {
                    ClientEvent::Encrypted(m) => return m,
                    ClientEvent::Plaintext { body, .. } => panic!("plaintext answer: {body}"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to message {i}"));
        assert_eq!(
            reply.body.as_deref(),
            Some(format!("Your message: {body}").as_str())
        );
        assert_eq!(reply.e2ee.sender, pybot);
        assert_eq!(u64::from(reply.e2ee.device.get()), peer_device);
        assert!(reply.e2ee.trust.is_accepted());
    }
    eprintln!(
        "Rust → Python: {MESSAGES} echoes in {:?}",
        started.elapsed()
    );
    let log = server.stanza_log();
    assert!(
        !log.contains("Rust → Python #"),
        "a plaintext body reached the server"
    );
    // The positive control: such a body sent in plaintext (to our own account) shows in the log.
    client
        .send_plaintext(
            Jid::from(client.jid().clone()),
            "Rust → Python # in plaintext",
        )
        .await
        .unwrap();
    server
        .wait_for_stanza_log("Rust → Python # in plaintext", Duration::from_secs(20))
        .await
        .unwrap();
    client.close().await;
}
