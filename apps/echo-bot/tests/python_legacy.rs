//! The legacy OMEMO (`eu.siacs.conversations.axolotl`) harness on the Python reference
//! (`oldmemo` 2.1.0 through `interop/xmpp_peer.py --versions ...`), proven against itself over
//! a real Prosody before the bot speaks legacy:
//!
//! - a Python legacy sender and a Python legacy echo exchange 50 messages, every answer in
//!   legacy;
//! - one account with one OMEMO 2 device and one legacy device talks to a dual-stack Python
//!   echo (one device, one identity, both namespaces) at the same time, each device answered
//!   in its own version; our own PEP parsers read the echo's device in both namespaces and
//!   find the same identity key.
//!
//! And the Rust echo bot speaking legacy:
//!
//! - a Python legacy sender talks to the bot: 50 messages, every answer in legacy (checked by
//!   the peer and in the server's stanza log), the sender's plaintext fallback body never
//!   echoed;
//! - one account with one OMEMO 2 device and one legacy device talks to the bot at the same
//!   time, each device answered in its own version;
//! - our client library sends to a Python legacy echo (a contact listing only legacy devices
//!   gets legacy) and reads its legacy answers: 50 messages;
//! - a legacy session the bot lost is rebuilt from the sender's legacy bundle with a
//!   key-transport message, after which the same Python device is answered again.
//!
//! Needs the venv that `just venv` creates; `just test` runs these with `--ignored`.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use omemo_crypto::DeviceId;
use omemo_pep::pep::Fetched;
use serde_json::Value;
use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

use common::raw::RawClient;
use common::{
    legacy_pep, next_encrypted, python, settings, start_bot, start_bot_logging, stop_bot,
};

const MESSAGES: usize = 50;

fn password(user: &str) -> String {
    format!("{user}-password")
}

/// A server the peers reach over StartTLS and the raw PEP reader over plain TCP.
fn server(users: &[&str]) -> TestServer {
    let server = TestServer::builder()
        .allow_plaintext(true)
        .option("allow_unencrypted_plain_auth = true")
        .start()
        .unwrap();
    for user in users {
        server.create_account(user, &password(user)).unwrap();
    }
    server
}

fn peer(server: &TestServer, user: &str, mode: &str, extra: &[&str]) -> Command {
    let mut command = python::peer_command(server, user, &password(user), mode);
    command.args(extra).stderr(Stdio::piped());
    command
}

/// Runs a peer to completion; returns its exit status, JSON lines and stderr.
async fn run_peer(mut command: Command) -> (std::process::ExitStatus, Vec<Value>, String) {
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("the Python peer did not finish in time")
        .unwrap();
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, lines, stderr)
}

/// Starts a long-running peer and waits for its `ready` event. Its later events are
/// collected and returned by the join handle once the peer's stdout closes.
async fn start_peer(mut command: Command) -> (Child, Value, tokio::task::JoinHandle<Vec<Value>>) {
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[python peer] {line}");
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if value["event"] == "ready" {
                    return value;
                }
            }
        }
        panic!("the Python peer exited before it was ready");
    })
    .await
    .expect("the Python peer did not get ready");
    let rest = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                events.push(value);
            }
        }
        events
    });
    (child, ready, rest)
}

/// Starts the Python echo as `pybot` speaking `versions` (e.g. `legacy`, `omemo2,legacy`),
/// its state under `dir`, and waits until it is ready.
async fn start_python_echo(
    server: &TestServer,
    dir: &std::path::Path,
    versions: &str,
) -> (Child, Value, tokio::task::JoinHandle<Vec<Value>>) {
    let data = dir.join("pybot");
    let data = data.to_str().unwrap();
    start_peer(peer(
        server,
        "pybot",
        "echo",
        &["--versions", versions, "--data-dir", data],
    ))
    .await
}

fn summary_of(lines: &[Value]) -> Value {
    lines
        .iter()
        .find(|l| l["event"] == "summary")
        .cloned()
        .unwrap_or_default()
}

/// Checks a client peer's run: it succeeded, every one of its `MESSAGES` messages was
/// answered, and it sent them in `version`. Prints and returns its summary; `context` adds to
/// the failure message (the bot's log, for our bot).
fn all_answered(
    who: &str,
    (status, lines, stderr): (std::process::ExitStatus, Vec<Value>, String),
    version: &str,
    started: Instant,
    context: impl FnOnce() -> String,
) -> Value {
    let summary = summary_of(&lines);
    eprintln!("{who}: {summary} in {:?}", started.elapsed());
    assert!(
        status.success(),
        "{who} failed: {summary}\n{stderr}{}",
        context()
    );
    assert_eq!(summary["answered"], MESSAGES);
    assert_eq!(summary["send_version"], version);
    summary
}

/// The bot's log, as failure context.
fn with_log(bot: &common::Bot) -> impl FnOnce() -> String + '_ {
    || format!("\nbot log:\n{}", bot.log_text())
}

/// Stops a long-running peer (SIGTERM via closing nothing: kill) and returns its events.
async fn stop_peer(mut child: Child, events: tokio::task::JoinHandle<Vec<Value>>) -> Vec<Value> {
    child.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the peer's output did not close")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn python_legacy_sender_talks_to_python_legacy_echo() {
    let server = server(&["pybot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let (echo, ready, echo_events) = start_python_echo(&server, dir.path(), "legacy").await;
    assert_eq!(ready["versions"], serde_json::json!(["legacy"]));
    let echo_device = ready["device_id"].as_u64().unwrap();

    let started = Instant::now();
    let count = MESSAGES.to_string();
    let run = run_peer(peer(
        &server,
        "alice",
        "client",
        &[
            "--versions",
            "legacy",
            "--to",
            "pybot@localhost",
            "--count",
            &count,
            "--expect-device-id",
            &echo_device.to_string(),
        ],
    ))
    .await;
    all_answered("legacy → legacy", run, "legacy", started, String::new);

    let events = stop_peer(echo, echo_events).await;
    let echoed: Vec<&Value> = events.iter().filter(|e| e["event"] == "echoed").collect();
    assert_eq!(echoed.len(), MESSAGES, "{events:?}");
    assert!(
        echoed.iter().all(|e| e["version"] == "legacy"),
        "{echoed:?}"
    );

    // What went over the wire was legacy OMEMO with the fallback body, never a plaintext body.
    let log = server.stanza_log();
    assert!(log.contains("eu.siacs.conversations.axolotl"));
    // Positive control: plaintext bodies are visible in this log.
    assert!(log.contains("I sent you an OMEMO encrypted message"));
    assert!(
        !log.contains("Your message: interop"),
        "a body travelled in plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn one_account_with_an_omemo2_and_a_legacy_device_talks_to_a_dual_stack_echo() {
    let server = server(&["pybot", "alice", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let (echo, ready, echo_events) = start_python_echo(&server, dir.path(), "omemo2,legacy").await;
    let echo_device =
        DeviceId::new(u32::try_from(ready["device_id"].as_u64().unwrap()).unwrap()).unwrap();

    // Our own parsers read the dual-stack device in both namespaces: one id, one identity.
    let pybot = server.jid("pybot").unwrap();
    let mut raw = RawClient::login(&server, "carol", &password("carol")).await;
    legacy_pep::assert_one_device_in_both_versions(&mut raw, &pybot, echo_device).await;

    // One account, two devices, two versions, at the same time.
    let count = MESSAGES.to_string();
    let client = |version: &'static str| {
        peer(
            &server,
            "alice",
            "client",
            &[
                "--versions",
                version,
                "--to",
                "pybot@localhost",
                "--count",
                &count,
                "--expect-device-id",
                &echo_device.to_string(),
            ],
        )
    };
    let started = Instant::now();
    let (omemo2, legacy) = tokio::join!(run_peer(client("omemo2")), run_peer(client("legacy")));
    for (run, version) in [(omemo2, "omemo2"), (legacy, "legacy")] {
        let who = format!("{version} device → dual echo");
        let summary = all_answered(&who, run, version, started, String::new);
        assert_eq!(
            summary["bot_device_ids"],
            serde_json::json!([echo_device.get()])
        );
    }

    let events = stop_peer(echo, echo_events).await;
    for version in ["omemo2", "legacy"] {
        let answered = events
            .iter()
            .filter(|e| e["event"] == "echoed" && e["version"] == version)
            .count();
        assert_eq!(answered, MESSAGES, "{version} answers: {events:?}");
    }
}

/// The `<message>` stanzas the server received addressed to `to` (in these tests only the bot
/// writes to Alice), split into those with a legacy `<encrypted>` and those with an OMEMO 2
/// one.
fn bot_messages_to(server: &TestServer, to: &str) -> (Vec<String>, Vec<String>) {
    let sent: Vec<String> = server
        .stanza_log()
        .lines()
        .filter(|l| l.contains("RECV: <message") && l.contains(&format!("to='{to}'")))
        .map(str::to_owned)
        .collect();
    let legacy = sent
        .iter()
        .filter(|l| l.contains("<encrypted xmlns='eu.siacs.conversations.axolotl'"))
        .cloned()
        .collect();
    let omemo2 = sent
        .iter()
        .filter(|l| l.contains("<encrypted xmlns='urn:xmpp:omemo:2'"))
        .cloned()
        .collect();
    (legacy, omemo2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn python_legacy_sender_talks_to_the_rust_echo_bot() {
    let server = server(&["bot", "alice", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let bot = start_bot(&server, "bot", &dir.path().join("bot.sqlite3"), &[]).await;

    // The bot's one device, read with our own parsers: listed in both namespaces under one
    // id, with one identity (the same fingerprint), and a bundle per version.
    let bot_jid = server.jid("bot").unwrap();
    let bot_device = DeviceId::new(bot.device.parse().unwrap()).unwrap();
    let mut raw = RawClient::login(&server, "carol", &password("carol")).await;
    let (omemo2_bundle, legacy_before) =
        legacy_pep::assert_one_device_in_both_versions(&mut raw, &bot_jid, bot_device).await;
    assert_eq!(legacy_before.pre_keys().len(), 100);

    let started = Instant::now();
    let count = MESSAGES.to_string();
    let run = run_peer(peer(
        &server,
        "alice",
        "client",
        &[
            "--versions",
            "legacy",
            "--to",
            "bot@localhost",
            "--count",
            &count,
            "--expect-device-id",
            &bot.device,
        ],
    ))
    .await;
    // The peer checks every answer: decrypted in legacy, from the bot's listed device, with
    // exactly "Your message: <what it sent>" (an echo of its fallback body would differ).
    all_answered(
        "Python legacy → Rust bot",
        run,
        "legacy",
        started,
        with_log(&bot),
    );

    // On the wire: the answers are legacy stanzas (with the fallback body legacy senders
    // attach), and nothing the bot sent to Alice is OMEMO 2 or a plaintext echo.
    let (legacy, omemo2) = bot_messages_to(&server, "alice@localhost");
    assert!(
        legacy.len() >= MESSAGES,
        "{} legacy stanzas from the bot",
        legacy.len()
    );
    assert!(omemo2.is_empty(), "OMEMO 2 from the bot: {omemo2:?}");
    let log = server.stanza_log();
    // Positive control: plaintext bodies are visible in this log (Alice's fallback bodies).
    assert!(log.contains("I sent you an OMEMO encrypted message"));
    assert!(
        !log.contains("Your message: interop") && !log.contains("Your message: I sent you"),
        "an echo travelled in plaintext"
    );

    // Alice's key exchange used one of the bot's legacy pre-keys: the bot republished its
    // legacy bundle with a fresh one in its place (and its OMEMO 2 bundle did not change).
    let deadline = Instant::now() + Duration::from_secs(30);
    let legacy_after = loop {
        match legacy_pep::legacy_bundle(&mut raw, &bot_jid, bot_device).await {
            Fetched::Found(bundle) if bundle.pre_keys() != legacy_before.pre_keys() => {
                break bundle
            }
            other => assert!(
                Instant::now() < deadline,
                "the legacy bundle was not republished: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(legacy_after.pre_keys().len(), 100);
    let gone: Vec<_> = legacy_before
        .pre_keys()
        .iter()
        .filter(|k| !legacy_after.pre_keys().contains(k))
        .collect();
    assert_eq!(gone.len(), 1, "one pre-key used and replaced");
    assert_eq!(
        legacy_pep::omemo2_bundle(&mut raw, &bot_jid, bot_device)
            .await
            .pre_keys(),
        omemo2_bundle.pre_keys()
    );
    stop_bot(bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn one_account_with_an_omemo2_and_a_legacy_device_talks_to_the_rust_echo_bot() {
    let server = server(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let bot = start_bot(&server, "bot", &dir.path().join("bot.sqlite3"), &[]).await;
    let bot_device: u64 = bot.device.parse().unwrap();

    let count = MESSAGES.to_string();
    let client = |version: &'static str| {
        peer(
            &server,
            "alice",
            "client",
            &[
                "--versions",
                version,
                "--to",
                "bot@localhost",
                "--count",
                &count,
                "--expect-device-id",
                &bot.device,
            ],
        )
    };
    let started = Instant::now();
    let (omemo2, legacy) = tokio::join!(run_peer(client("omemo2")), run_peer(client("legacy")));
    for (run, version) in [(omemo2, "omemo2"), (legacy, "legacy")] {
        // Each device's peer checks that every answer came in its own version, and that no
        // answer to the other device's messages reached it.
        let who = format!("{version} device → Rust bot");
        let summary = all_answered(&who, run, version, started, with_log(&bot));
        assert_eq!(summary["bot_device_ids"], serde_json::json!([bot_device]));
    }
    let (legacy, omemo2) = bot_messages_to(&server, "alice@localhost");
    assert!(legacy.len() >= MESSAGES, "{} legacy stanzas", legacy.len());
    assert!(omemo2.len() >= MESSAGES, "{} OMEMO 2 stanzas", omemo2.len());
    stop_bot(bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn rust_client_talks_legacy_to_the_python_legacy_echo() {
    let server = server(&["pybot", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let (echo, ready, echo_events) = start_python_echo(&server, dir.path(), "legacy").await;
    let echo_device = ready["device_id"].as_u64().unwrap();

    let settings = settings(&server, "carol", &dir.path().join("carol.sqlite3"));
    let (client, mut events) = xmpp_core::client::Client::start(&settings).await.unwrap();
    let pybot = server.jid("pybot").unwrap();
    let started = Instant::now();
    for i in 0..MESSAGES {
        let body = format!("Rust → Python legacy #{i}: Ünïcödé & <xml>");
        let report = client.send_body(&pybot, &body).await.unwrap();
        assert_eq!(
            report
                .encrypted_for
                .iter()
                .filter(|(jid, _)| jid == &pybot)
                .count(),
            1,
            "{report:?}"
        );
        let reply = next_encrypted(&mut events, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no answer to message {i}"));
        assert_eq!(
            reply.body.as_deref(),
            Some(format!("Your message: {body}").as_str())
        );
        assert_eq!(reply.e2ee.sender, pybot);
        assert_eq!(u64::from(reply.e2ee.device.get()), echo_device);
        assert_eq!(reply.e2ee.version, omemo_crypto::ProtocolVersion::Legacy);
    }
    eprintln!(
        "Rust → Python legacy: {MESSAGES} echoes in {:?}",
        started.elapsed()
    );
    // What the client sent to the echo was legacy, never OMEMO 2 or a plaintext body.
    let log = server.stanza_log();
    let to_echo: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RECV: <message") && l.contains("to='pybot@localhost'"))
        .collect();
    assert!(
        to_echo
            .iter()
            .filter(|l| l.contains("<encrypted xmlns='eu.siacs.conversations.axolotl'"))
            .count()
            >= MESSAGES
    );
    assert!(to_echo
        .iter()
        .all(|l| !l.contains("<encrypted xmlns='urn:xmpp:omemo:2'")));
    // Positive control: plaintext bodies show in this log (our legacy fallback body).
    assert!(log.contains("I sent you an OMEMO encrypted message"));
    assert!(
        !log.contains("Rust → Python legacy #"),
        "a body travelled in plaintext"
    );
    client.close().await;
    let events = stop_peer(echo, echo_events).await;
    let echoed = events.iter().filter(|e| e["event"] == "echoed").count();
    assert_eq!(echoed, MESSAGES, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python reference venv; `just test` runs it"]
async fn a_lost_legacy_session_is_rebuilt_with_a_key_transport_message() {
    // The rebuild is logged at info by the OMEMO layer.
    const LOG: &str = "warn,xmpp_core=info";
    let server = server(&["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let data = dir.path().join("alice");
    let client = |count: &str, timeout: &str| {
        let bot_device = bot_device_of(&db);
        peer(
            &server,
            "alice",
            "client",
            &[
                "--versions",
                "legacy",
                "--data-dir",
                data.to_str().unwrap(),
                "--to",
                "bot@localhost",
                "--count",
                count,
                "--timeout",
                timeout,
                "--expect-device-id",
                &bot_device,
            ],
        )
    };
    let bot = start_bot_logging(&server, "bot", &db, &[], LOG).await;
    let (status, lines, stderr) = run_peer(client("3", "30")).await;
    let summary = summary_of(&lines);
    assert!(status.success(), "{summary}\n{stderr}");
    let alice_device =
        DeviceId::new(u32::try_from(summary["device_id"].as_u64().unwrap()).unwrap()).unwrap();
    stop_bot(bot).await;

    // The bot loses its legacy session with Alice's device (say, a restore from an old backup).
    let alice = server.jid("alice").unwrap();
    let deleted = atm_trust::Store::open(&db)
        .unwrap()
        .delete_session(atm_trust::Namespace::Legacy, alice.as_str(), alice_device)
        .unwrap();
    assert!(deleted);
    let bot = start_bot_logging(&server, "bot", &db, &[], LOG).await;

    // Alice's next message is not a key exchange: the bot cannot read it, rebuilds the
    // session from her legacy bundle and sends her a key-transport message on it.
    let (status, lines, _) = run_peer(client("1", "5")).await;
    assert!(!status.success(), "the bot answered without a session");
    assert_eq!(summary_of(&lines)["answered"], 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bot
        .log_text()
        .contains("built a new session after a message without one")
    {
        assert!(
            Instant::now() < deadline,
            "no session rebuilt; bot log:\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rebuilt = atm_trust::Store::open(&db)
        .unwrap()
        .load_session(atm_trust::Namespace::Legacy, alice.as_str(), alice_device)
        .unwrap();
    assert!(rebuilt.is_some());

    // On the session the key transport started, Alice is answered again.
    let (status, lines, stderr) = run_peer(client("3", "30")).await;
    let summary = summary_of(&lines);
    assert!(
        status.success(),
        "{summary}\n{stderr}\nbot log:\n{}",
        bot.log_text()
    );
    assert_eq!(summary["answered"], 3);
    assert_eq!(summary["device_id"], alice_device.get());
    stop_bot(bot).await;
}

/// The bot's device id, from its database.
fn bot_device_of(db: &std::path::Path) -> String {
    atm_trust::Store::open(db)
        .unwrap()
        .own_device()
        .unwrap()
        .map(|own| own.device_id().to_string())
        .unwrap_or_default()
}
