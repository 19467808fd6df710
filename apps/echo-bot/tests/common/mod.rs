//! Helpers shared by the echo-bot integration tests: the bot process, a test client's
//! settings, and one verified echo round trip.

// Not every test file uses every helper; failures should fail loudly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::jid::BareJid;
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

pub(crate) mod legacy_pep;
pub(crate) mod python;
pub(crate) mod raw;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// A running echo-bot process; killed when dropped.
pub(crate) struct Bot {
    pub(crate) child: Child,
    /// The device id the bot printed when it was ready.
    pub(crate) device: String,
    /// The bot's log (stderr: warnings, and the client layer's info lines), appended to across
    /// restarts.
    pub(crate) log: PathBuf,
}

impl Bot {
    /// Everything the bot (and earlier bots on the same database) logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The echo-bot binary under test: Cargo's build of it, or the one `ECHO_BOT_BIN` names
/// (for a target directory that other builds share, where the binary may be replaced while
/// the tests run).
pub(crate) fn bot_exe() -> PathBuf {
    std::env::var_os("ECHO_BOT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_echo-bot")))
}

/// Starts the echo-bot binary and waits for its "ready" line. Its log goes to `<db>.log`.
pub(crate) async fn start_bot(server: &TestServer, user: &str, db: &Path, extra: &[&str]) -> Bot {
    start_bot_logging(server, user, db, extra, DEFAULT_BOT_LOG).await
}

/// [`start_bot`] with the log filter `rust_log`.
pub(crate) async fn start_bot_logging(
    server: &TestServer,
    user: &str,
    db: &Path,
    extra: &[&str],
    rust_log: &str,
) -> Bot {
    let log = db.with_extension("log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = Command::new(bot_exe())
        .args([
            "--jid",
            server.jid(user).unwrap().as_str(),
            "--server",
            &format!("127.0.0.1:{}", server.port()),
            "--ca-file",
            server.ca_file().to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--label",
            "echo-bot under test",
        ])
        .args(extra)
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("echo-bot ready: ") {
                return rest.to_owned();
            }
        }
        panic!("echo-bot exited before it was ready");
    })
    .await
    .expect("echo-bot did not get ready in time");
    let device = ready
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("device="))
        .unwrap()
        .to_owned();
    Bot { child, device, log }
}

pub(crate) async fn stop_bot(mut bot: Bot) {
    let pid = bot.child.id().unwrap();
    // SIGTERM: the bot shuts down cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(TIMEOUT, bot.child.wait())
        .await
        .expect("echo-bot did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "echo-bot exited with {status}");
}

pub(crate) fn settings(server: &TestServer, user: &str, db: &Path) -> AccountSettings {
    AccountSettings {
        jid: server.jid(user).unwrap(),
        password: Password::new(format!("{user}-password")),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
        }),
        ca_file: Some(server.ca_file().to_owned()),
        insecure_plaintext: false,
        db: db.to_owned(),
        label: format!("{user} test client"),
        trust_policy: TrustPolicySetting::Toakafa,
    }
}

/// Waits for the next decrypted message; other events are skipped.
pub(crate) async fn next_encrypted(
    events: &mut ClientEvents,
    within: Duration,
) -> Option<Box<xmpp_core::omemo::DecryptedMessage>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(ClientEvent::Encrypted(message))) => return Some(message),
            Ok(Some(ClientEvent::Plaintext { from, body, .. })) => {
                panic!("unexpected plaintext from {from}: {body}")
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

pub(crate) async fn echo_round(
    client: &Client,
    events: &mut ClientEvents,
    bot: &BareJid,
    text: &str,
) {
    client.send_body(bot, text).await.unwrap();
    let reply = next_encrypted(events, TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no encrypted answer to {text:?}"));
    assert_eq!(reply.e2ee.sender, *bot);
    assert_eq!(
        reply.body.as_deref(),
        Some(format!("Your message: {text}").as_str())
    );
    assert!(reply.e2ee.trust.is_accepted(), "{:?}", reply.e2ee.trust);
}

/// A fresh server with a running bot (account `bot`) and one contact's client: the start of
/// most tests.
pub(crate) struct Scene {
    pub(crate) server: TestServer,
    /// Holds the databases and logs.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) bot_db: PathBuf,
    pub(crate) bot_jid: BareJid,
    pub(crate) bot: Bot,
    /// The contact's client and its events.
    pub(crate) client: Client,
    pub(crate) events: ClientEvents,
}

impl Scene {
    /// Creates the accounts `bot` and `contact`, starts the bot with `bot_args` and the
    /// log filter `bot_log`, and the contact's client.
    pub(crate) async fn start(contact: &str, bot_args: &[&str], bot_log: &str) -> Self {
        let server = TestServer::start().unwrap();
        for user in ["bot", contact] {
            server
                .create_account(user, &format!("{user}-password"))
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let bot_db = dir.path().join("bot.sqlite3");
        let bot = start_bot_logging(&server, "bot", &bot_db, bot_args, bot_log).await;
        let bot_jid = server.jid("bot").unwrap();
        let contact_db = dir.path().join(format!("{contact}.sqlite3"));
        let (client, events) = Client::start(&settings(&server, contact, &contact_db))
            .await
            .unwrap();
        Scene {
            server,
            dir,
            bot_db,
            bot_jid,
            bot,
            client,
            events,
        }
    }
}

/// The log filter [`start_bot`] uses.
pub(crate) const DEFAULT_BOT_LOG: &str = "warn,xmpp_core::client=info";
