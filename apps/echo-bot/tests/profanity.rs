//! A real legacy OMEMO client, not written by us: Profanity 0.13 (Debian's package, OMEMO
//! through libsignal-protocol-c) driven in tmux against a throwaway Prosody.
//!
//! The harness ([`Profanity`]) starts Profanity in a detached tmux session of its own tmux
//! server, with a temporary `HOME`/XDG directories holding its account file (StartTLS with
//! `tls.policy=force`, the test CA trusted through `SSL_CERT_FILE`), types commands with
//! `send-keys` and waits for text by polling `capture-pane` until a deadline.
//!
//! - After `/omemo gen`, Profanity's legacy device list and bundle are on the server, and our
//!   own request builders and parsers (`omemo_pep::pep`, `omemo_pep::legacy`) accept them;
//!   the identity key parsed from the bundle has the fingerprint Profanity shows.
//! - Profanity and the Python legacy peer (`oldmemo`) exchange messages both ways; the
//!   decrypted text is read from Profanity's window.
//! - Profanity talks to our echo bot: it subscribes to the bot (the bot accepts and asks for
//!   Profanity's presence in return, which opens Profanity's presence-only bundle to it), and
//!   every message comes back decrypted as `Your message: …`, in legacy on the wire.
//!
//! Real-client facts these tests found: Profanity publishes its bundle node with Prosody's
//! default access model (`presence`), so a contact must be subscribed to its presence to
//! start a session with it; the device list is readable to anyone only if an earlier
//! publisher made it open.
//!
//! Needs `profanity` and `tmux` (`just profanity`) and, for the exchange, the venv; `just test`
//! runs these with `--ignored`.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omemo_crypto::DeviceId;
use omemo_pep::pep::Fetched;
use serde_json::Value;
use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

use common::raw::RawClient;
use common::{legacy_pep, python, start_bot, stop_bot};

/// How long any one expected line may take to appear.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often the pane is read while waiting.
const POLL: Duration = Duration::from_millis(100);

fn password(user: &str) -> String {
    format!("{user}-password")
}

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

/// Profanity running in a detached tmux session; the tmux server is killed on drop.
struct Profanity {
    socket: String,
    dir: tempfile::TempDir,
}

impl Profanity {
    /// Writes Profanity's account file and starts it, connecting as `user`.
    fn start(server: &TestServer, user: &str) -> Self {
        for tool in ["tmux", "profanity"] {
            let found = StdCommand::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(found, "{tool} is not installed: run `just profanity`");
        }
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let (home, config, data) = (
            dir.path().join("home"),
            dir.path().join("config"),
            dir.path().join("data"),
        );
        for path in [&home, &config.join("profanity"), &data.join("profanity")] {
            std::fs::create_dir_all(path).unwrap();
        }
        let jid = server.jid(user).unwrap().to_string();
        std::fs::write(
            data.join("profanity/accounts"),
            format!(
                "[{jid}]\nenabled=true\njid={jid}\nserver=127.0.0.1\nport={port}\n\
                 resource=profanity\npassword={password}\ntls.policy=force\n",
                port = server.port(),
                password = password(user),
            ),
        )
        .unwrap();
        let socket = format!(
            "omemo-profanity-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let env = |name: &str, value: &Path| format!("{name}={}", value.display());
        let status = StdCommand::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "p",
            ])
            .args(["-x", "240", "-y", "60", "env"])
            .arg(env("HOME", &home))
            .arg(env("XDG_CONFIG_HOME", &config))
            .arg(env("XDG_DATA_HOME", &data))
            .arg(env("SSL_CERT_FILE", server.ca_file()))
            .args(["TERM=xterm-256color", "profanity", "-a", &jid])
            .env_remove("TMUX")
            .status()
            .unwrap();
        assert!(status.success(), "tmux could not start Profanity");
        Self { socket, dir }
    }

    fn tmux(&self) -> StdCommand {
        let mut command = StdCommand::new("tmux");
        command.args(["-L", &self.socket]).env_remove("TMUX");
        command
    }

    /// The visible window, one line per screen row.
    fn screen(&self) -> String {
        let output = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Profanity's own log (for failure reports).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/profanity/logs/profanity.log"))
            .unwrap_or_default()
    }

    /// Types `line` and presses Enter.
    fn type_line(&self, line: &str) {
        let typed = self
            .tmux()
            .args(["send-keys", "-t", "p", "-l", line])
            .status()
            .unwrap();
        let entered = self
            .tmux()
            .args(["send-keys", "-t", "p", "Enter"])
            .status()
            .unwrap();
        assert!(
            typed.success() && entered.success(),
            "tmux send-keys failed"
        );
    }

    /// Polls the window until `found` picks something out of it; panics with the window and
    /// Profanity's log at the deadline.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if let Some(value) = found(&screen) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "Profanity did not show {what} within {DEADLINE:?}; window:\n{screen}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the window shows `text`.
    async fn wait_for_text(&self, text: &str) {
        self.wait_for(&format!("{text:?}"), |s| s.contains(text).then_some(()))
            .await;
    }

    /// Logs in, generates the OMEMO keys and trusts every device (blind trust, like the
    /// Python peer). Returns Profanity's device id.
    async fn set_up_omemo(&self) -> DeviceId {
        self.wait_for_text("logged in successfully").await;
        self.type_line("/omemo gen");
        let id = self
            .wait_for("its device id", |s| {
                let rest = &s[s.find("Your Device ID is ")? + "Your Device ID is ".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().ok()
            })
            .await;
        self.type_line("/omemo trustmode blind");
        self.wait_for_text("trusted automatically").await;
        DeviceId::new(id).unwrap()
    }

    /// Profanity's own fingerprint, hex digits only.
    async fn fingerprint(&self) -> String {
        self.type_line("/omemo fingerprint");
        self.wait_for("its fingerprint", |s| {
            let rest = &s[s.find("OMEMO fingerprint: ")? + "OMEMO fingerprint: ".len()..];
            let line = rest.lines().next()?;
            let hex: String = line.chars().filter(char::is_ascii_hexdigit).collect();
            (hex.len() == 64).then_some(hex.to_ascii_lowercase())
        })
        .await
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        let _ = self
            .tmux()
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Profanity 0.13 never creates the legacy device-list node: on a fresh account it publishes
/// its bundle, asks for the list, gets `item-not-found` and stops there, so nobody can find
/// its device. An account on which any OMEMO client ran before has the node; an empty list
/// published first stands for that, and Profanity then adds itself.
async fn seed_empty_device_list(raw: &mut RawClient) {
    legacy_pep::publish_legacy_device_list(raw, &omemo_pep::legacy::DeviceList::new()).await;
}

fn hex_only(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs profanity and tmux (`just profanity`); `just test` runs it"]
async fn profanity_publishes_a_legacy_device_list_and_bundle_our_parsers_accept() {
    let server = server(&["alice", "bob"]);
    let alice = server.jid("alice").unwrap();
    let mut raw = RawClient::login(&server, "alice", &password("alice")).await;
    seed_empty_device_list(&mut raw).await;
    let profanity = Profanity::start(&server, "alice");
    let device = profanity.set_up_omemo().await;
    let fingerprint = profanity.fingerprint().await;

    // The owner can always read its nodes (Profanity leaves their access model at the
    // server's default); poll until the publish has landed.
    let deadline = Instant::now() + DEADLINE;
    let list;
    loop {
        match legacy_pep::legacy_device_list(&mut raw, &alice).await {
            Fetched::Found(found) if found.contains(device) => {
                list = found;
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "Profanity's device {device} is not in its legacy list: {other:?}\n{}",
                axolotl_stanzas(&server)
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(list.ids().collect::<Vec<_>>(), vec![device]);
    let bundle;
    loop {
        match legacy_pep::legacy_bundle(&mut raw, &alice, device).await {
            Fetched::Found(found) => {
                bundle = found;
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "no legacy bundle for Profanity's device {device}: {other:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    // A `legacy::Bundle` exists only with a verified signed pre-key signature (XEdDSA with
    // the sign bit in byte 63) and valid 0x05 keys; the identity is the one Profanity shows.
    assert_eq!(
        hex_only(&bundle.legacy_identity_key().fingerprint()),
        fingerprint
    );
    assert_eq!(
        hex_only(&bundle.identity_key().fingerprint()),
        fingerprint,
        "the Ed25519 form recovered from the signature is the same key"
    );
    assert!(
        bundle.pre_keys().len() >= 20,
        "XEP-0384 0.3 wants at least 20 pre-keys, Profanity published {}",
        bundle.pre_keys().len()
    );
    eprintln!(
        "Profanity device {device}: {} pre-keys, signed pre-key {}, fingerprint {fingerprint}",
        bundle.pre_keys().len(),
        bundle.signed_pre_key_id().get()
    );

    // Another account without a presence subscription: what a bot meets.
    let mut stranger = RawClient::login(&server, "bob", &password("bob")).await;
    eprintln!(
        "as an unsubscribed contact: device list {}, bundle {}",
        outcome(legacy_pep::legacy_device_list(&mut stranger, &alice).await),
        outcome(legacy_pep::legacy_bundle(&mut stranger, &alice, device).await),
    );
}

fn outcome<T: std::fmt::Debug>(fetched: Fetched<T>) -> String {
    match fetched {
        Fetched::Found(_) => "readable".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The Python peer as a legacy-only device of `user`, keeping its state in `data`.
fn legacy_peer(
    server: &TestServer,
    user: &str,
    mode: &str,
    data: &Path,
    extra: &[&str],
) -> Command {
    let mut command = python::peer_command(server, user, &password(user), mode);
    command
        .args(["--versions", "legacy", "--data-dir"])
        .arg(data)
        .args(extra)
        .stderr(Stdio::piped());
    command
}

/// Forwards a peer's stderr to ours, and collects its JSON events until its stdout closes.
fn collect(child: &mut Child) -> tokio::task::JoinHandle<Vec<Value>> {
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[python peer] {line}");
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[python event] {line}");
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                events.push(value);
            }
        }
        events
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs profanity, tmux and the Python venv; `just test` runs it"]
async fn profanity_and_the_python_legacy_peer_exchange_messages_both_ways() {
    const ROUNDS: usize = 5;
    let server = server(&["alice", "bob"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bob");
    let run = std::process::id();

    // Bob: the Python legacy echo.
    let mut echo = legacy_peer(&server, "bob", "echo", &data, &[])
        .spawn()
        .unwrap();
    let echo_events = collect(&mut echo);

    // Alice: Profanity, subscribed both ways with Bob (its bundle node is presence-only).
    let mut raw = RawClient::login(&server, "alice", &password("alice")).await;
    seed_empty_device_list(&mut raw).await;
    let profanity = Profanity::start(&server, "alice");
    let device = profanity.set_up_omemo().await;
    profanity.type_line("/sub request bob@localhost");
    profanity.wait_for_text("uthorization request").await; // "Received authorization request from …"
    profanity.type_line("/sub allow bob@localhost");
    let deadline = Instant::now() + DEADLINE;
    while !profanity.screen().contains("subscription status: both") {
        assert!(
            Instant::now() < deadline,
            "no mutual subscription:\n{}",
            profanity.screen()
        );
        profanity.type_line("/sub show bob@localhost");
        tokio::time::sleep(POLL * 3).await;
    }

    // Profanity → Python: each message comes back as "Your message: …", decrypted in the pane.
    profanity.type_line("/msg bob@localhost");
    profanity.type_line("/omemo start");
    profanity.wait_for_text("[OMEMO]").await;
    let mut bodies = Vec::new();
    for i in 1..=ROUNDS {
        let body = format!("profanity to python {i} of run {run}");
        profanity.type_line(&body);
        profanity
            .wait_for_text(&format!("Your message: {body}"))
            .await;
        bodies.push(body);
    }
    echo.kill().await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), echo_events)
        .await
        .unwrap()
        .unwrap();
    let echo_device = events
        .iter()
        .find(|e| e["event"] == "ready")
        .and_then(|e| e["device_id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
        .and_then(|id| DeviceId::new(id).ok())
        .expect("the echo's ready event");

    // Profanity's own <encrypted> elements, as the server received them, parse with our
    // legacy parser: sent by its device, a key for the echo's device, a key exchange first.
    let sent_by_profanity: Vec<(String, omemo_pep::legacy::EncryptedMessage)> = server
        .stanza_log()
        .lines()
        .filter(|l| l.contains("RECV: <message") && l.contains("to='bob@localhost'"))
        .filter_map(|l| {
            let start = l.find("<encrypted xmlns='eu.siacs.conversations.axolotl'")?;
            let end = l[start..].find("</encrypted>")? + start + "</encrypted>".len();
            Some(l[start..end].to_owned())
        })
        .map(|xml| {
            let element: xmpp_core::minidom::Element = xml.parse().unwrap();
            let parsed = omemo_pep::legacy::EncryptedMessage::try_from(element)
                .unwrap_or_else(|e| panic!("our parser refused Profanity's {xml}: {e}"));
            (xml, parsed)
        })
        .collect();
    assert!(
        sent_by_profanity.len() >= ROUNDS,
        "{} legacy messages from Profanity in the stanza log",
        sent_by_profanity.len()
    );
    for (_, message) in &sent_by_profanity {
        assert_eq!(message.sid, device);
        assert_eq!(message.keys_for(echo_device).count(), 1);
        assert!(matches!(message.iv.len(), 12 | 16));
    }
    let (first_xml, first) = &sent_by_profanity[0];
    assert!(
        first.keys_for(echo_device).all(|k| k.prekey),
        "Profanity's first message is not a key exchange: {first_xml}"
    );
    let spelling = if first_xml.contains("prekey='true'") || first_xml.contains("prekey=\"true\"") {
        "true"
    } else {
        "other than 'true'"
    };
    eprintln!(
        "Profanity sent {} legacy messages: IV {} bytes, prekey attribute {spelling}",
        sent_by_profanity.len(),
        first.iv.len()
    );
    let echoed: Vec<&Value> = events.iter().filter(|e| e["event"] == "echoed").collect();
    assert_eq!(echoed.len(), ROUNDS, "{events:?}");
    for event in &echoed {
        assert_eq!(event["version"], "legacy");
        assert_eq!(event["sender_device_id"], device.get());
    }

    // Python → Profanity: the same Python device sends, Profanity shows the decrypted text.
    let incoming: Vec<String> = (1..=ROUNDS)
        .map(|i| format!("python to profanity {i} of run {run}"))
        .collect();
    let mut args = vec!["--to", "alice@localhost"];
    for body in &incoming {
        args.extend(["--body", body.as_str()]);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        legacy_peer(&server, "bob", "send", &data, &args).output(),
    )
    .await
    .expect("the Python sender did not finish")
    .unwrap();
    assert!(
        output.status.success(),
        "the Python sender failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for body in &incoming {
        profanity.wait_for_text(body).await;
    }

    // Everything travelled encrypted: no body in the server's stanza log, which does show
    // the legacy elements and the plaintext fallback bodies (positive control).
    let log = server.stanza_log();
    assert!(log.contains("eu.siacs.conversations.axolotl"));
    assert!(log.contains("I sent you an OMEMO encrypted message"));
    for body in bodies.iter().chain(&incoming) {
        assert!(
            !log.contains(body.as_str()),
            "{body:?} travelled in plaintext"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs profanity and tmux (`just profanity`); `just test` runs it"]
async fn profanity_talks_to_the_echo_bot() {
    talk_to_the_bot(true, 5).await;
}

/// Profanity on a fresh account publishes no legacy device list: the bot still answers the
/// device that wrote to it (it holds a session with it), though no list names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs profanity and tmux (`just profanity`); `just test` runs it"]
async fn profanity_without_a_legacy_device_list_is_answered_by_the_echo_bot() {
    talk_to_the_bot(false, 3).await;
}

/// Profanity as Alice sends `rounds` messages to the echo bot and reads each answer from its
/// window; with `seed_list`, an empty legacy device list is published for Alice first (what
/// any earlier OMEMO client leaves behind), so that Profanity lists its device.
async fn talk_to_the_bot(seed_list: bool, rounds: usize) {
    let server = server(&["alice", "bot"]);
    let dir = tempfile::tempdir().unwrap();
    let bot = start_bot(&server, "bot", &dir.path().join("bot.sqlite3"), &[]).await;
    let run = std::process::id();

    let mut raw = RawClient::login(&server, "alice", &password("alice")).await;
    if seed_list {
        seed_empty_device_list(&mut raw).await;
    }
    let profanity = Profanity::start(&server, "alice");
    let device = profanity.set_up_omemo().await;
    // Alice asks for the bot's presence; the bot accepts and asks for hers, which she allows.
    profanity.type_line("/sub request bot@localhost");
    profanity.wait_for_text("uthorization request").await; // "Received authorization request from …"
    profanity.type_line("/sub allow bot@localhost");
    let deadline = Instant::now() + DEADLINE;
    while !profanity.screen().contains("subscription status: both") {
        assert!(
            Instant::now() < deadline,
            "no mutual subscription with the bot:\n{}\nbot log:\n{}",
            profanity.screen(),
            bot.log_text()
        );
        profanity.type_line("/sub show bot@localhost");
        tokio::time::sleep(POLL * 3).await;
    }

    profanity.type_line("/msg bot@localhost");
    profanity.type_line("/omemo start");
    profanity.wait_for_text("[OMEMO]").await;
    let mut bodies = Vec::new();
    for i in 1..=rounds {
        let body = format!("profanity to the bot {i} of run {run}");
        profanity.type_line(&body);
        let expected = format!("Your message: {body}");
        let deadline = Instant::now() + DEADLINE;
        while !profanity.screen().contains(&expected) {
            assert!(
                Instant::now() < deadline,
                "no answer {expected:?} in Profanity:\n{}\nbot log:\n{}\n{}",
                profanity.screen(),
                bot.log_text(),
                axolotl_stanzas(&server)
            );
            tokio::time::sleep(POLL).await;
        }
        bodies.push(body);
    }

    // On the wire: Profanity's messages and the bot's answers are legacy OMEMO; the bot's
    // answers come from its device, with a key for Profanity's; no body in plaintext.
    let log = server.stanza_log();
    let answers: Vec<omemo_pep::legacy::EncryptedMessage> = log
        .lines()
        .filter(|l| l.contains("RECV: <message") && l.contains("to='alice@localhost'"))
        .filter_map(|l| {
            let start = l.find("<encrypted xmlns='eu.siacs.conversations.axolotl'")?;
            let end = l[start..].find("</encrypted>")? + start + "</encrypted>".len();
            let element: xmpp_core::minidom::Element = l[start..end].parse().ok()?;
            omemo_pep::legacy::EncryptedMessage::try_from(element).ok()
        })
        .filter(|m| m.payload.is_some())
        .collect();
    assert!(answers.len() >= rounds, "{} legacy answers", answers.len());
    let bot_device: u32 = bot.device.parse().unwrap();
    for answer in &answers {
        assert_eq!(answer.sid.get(), bot_device);
        assert_eq!(answer.keys_for(device).count(), 1);
    }
    assert!(log.contains("I sent you an OMEMO encrypted message"));
    for body in &bodies {
        assert!(
            !log.contains(body.as_str()),
            "{body:?} travelled in plaintext"
        );
    }
    // Whether Alice's device list names Profanity's device decides nothing for the bot.
    let listed = matches!(
        legacy_pep::legacy_device_list(&mut raw, &server.jid("alice").unwrap()).await,
        Fetched::Found(list) if list.contains(device)
    );
    assert_eq!(listed, seed_list);
    eprintln!(
        "Profanity device {device} (listed: {listed}) ↔ echo bot: {rounds} answers read from the pane, {} legacy answers on the wire",
        answers.len()
    );
    drop(profanity);
    stop_bot(bot).await;
}

/// The stanzas of the server's log that mention legacy OMEMO (for failure reports).
fn axolotl_stanzas(server: &TestServer) -> String {
    server
        .stanza_log()
        .lines()
        .filter(|l| l.contains("axolotl"))
        .collect::<Vec<_>>()
        .join("\n")
}
