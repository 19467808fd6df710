//! Helpers for the end-to-end tests: a throwaway Prosody with the accounts `bot` and `alice`,
//! the echo-bot process, `sync-client` runs as `alice`, and a generated bookmark file.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Prosody with the accounts `bot` (password `bot-password`) and `alice`
/// (`alice-password`).
pub(crate) fn server() -> TestServer {
    let server = TestServer::start().unwrap();
    server.create_account("bot", "bot-password").unwrap();
    server.create_account("alice", "alice-password").unwrap();
    server
}

/// The echo-bot binary next to ours; built on demand when this package is tested alone.
pub(crate) fn echo_bot_binary() -> PathBuf {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_sync-client"));
    let bot = ours.with_file_name("echo-bot");
    if !bot.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // A benchmark runs the optimised build of ours (the bench profile, in `release/`):
        // the bot is built with the same profile, so it shares the compiled dependencies.
        let release = ours.parent().is_some_and(|d| d.ends_with("release"));
        let profile: &[&str] = if release {
            &["--profile", "bench"]
        } else {
            &[]
        };
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "echo-bot"])
            .args(profile)
            .current_dir(workspace_root())
            .status()
            .unwrap();
        assert!(status.success(), "building echo-bot failed");
    }
    bot
}

/// A running echo-bot process; killed when dropped.
pub(crate) struct EchoBot {
    pub(crate) child: Child,
    /// The device id it printed when it was ready.
    pub(crate) device: u32,
    /// Its log (standard error, `warn` and above).
    pub(crate) log: PathBuf,
}

impl EchoBot {
    /// Everything the bot logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the echo bot as `bot` with the database `db` and waits until it is ready. Its log
/// goes to `<db>.log`.
pub(crate) async fn start_echo_bot(server: &TestServer, db: &Path) -> EchoBot {
    let log = db.with_extension("log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = Command::new(echo_bot_binary())
        .args(["--jid", server.jid("bot").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(db)
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        // A file, not inherited: an orphan must not hold the test runner's output pipe open.
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("echo-bot ready") {
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
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no device id in the ready line {ready:?}"));
    EchoBot { child, device, log }
}

/// The database of `alice` in `dir`.
pub(crate) fn alice_db(dir: &Path) -> PathBuf {
    dir.join("alice.sqlite3")
}

/// `sync-client <command> <account flags for alice, database in dir> <args>`, with
/// `RUST_LOG=warn`; the caller adds the rest.
pub(crate) fn sync_client_base(server: &TestServer, dir: &Path, command: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sync-client"));
    cmd.arg(command)
        .args(["--jid", server.jid("alice").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(alice_db(dir))
        .env("XMPP_PASSWORD", "alice-password")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// `sync-client send --json` of `file` to the bot as alice; `extra` replaces the default
/// `--timeout 15`.
pub(crate) fn send_command(
    server: &TestServer,
    dir: &Path,
    file: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = sync_client_base(server, dir, "send");
    cmd.args(["--to", server.jid("bot").unwrap().as_str()])
        .arg("--file")
        .arg(file)
        .arg("--json")
        .args(if extra.is_empty() {
            &["--timeout", "15"][..]
        } else {
            extra
        });
    cmd
}

/// Runs [`send_command`] to the end.
pub(crate) async fn sync_client(
    server: &TestServer,
    dir: &Path,
    file: &Path,
    extra: &[&str],
) -> Output {
    send_command(server, dir, file, extra)
        .output()
        .await
        .unwrap()
}

/// Runs another `sync-client` command as alice to the end: `args[0]` is the command.
pub(crate) async fn sync_client_command(server: &TestServer, dir: &Path, args: &[&str]) -> Output {
    let (command, rest) = args.split_first().unwrap();
    sync_client_base(server, dir, command)
        .args(rest)
        .output()
        .await
        .unwrap()
}

/// The JSON summary `send --json` prints last.
pub(crate) fn report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "no JSON summary; stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A Netscape bookmark file with `count` bookmarks (unique URLs) in folders of 100.
pub(crate) fn write_bookmarks(path: &Path, count: usize) {
    let mut html = String::from(
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<TITLE>Bookmarks</TITLE>\n<H1>Bookmarks</H1>\n<DL><p>\n",
    );
    for folder in 0..count.div_ceil(100) {
        html.push_str(&format!(
            "<DT><H3>Folder {folder} &amp; Ünïcödé</H3>\n<DL><p>\n"
        ));
        for i in folder * 100..((folder + 1) * 100).min(count) {
            html.push_str(&format!(
                "<DT><A HREF=\"https://example.org/{folder}/page-{i}?id={}\" ADD_DATE=\"{}\" TAGS=\"t{},news\">Page {i} 🔖</A>\n<DD>Description of page {i}\n",
                i * 7919,
                1_600_000_000 + i,
                i % 17
            ));
        }
        html.push_str("</DL><p>\n<HR>\n");
    }
    html.push_str("</DL><p>\n");
    std::fs::write(path, html).unwrap();
}

/// The library-client settings of `user` (password `<user>-password`) on the test server,
/// with its OMEMO state in `db`.
pub(crate) fn client_settings(
    server: &TestServer,
    user: &str,
    db: PathBuf,
    label: &str,
) -> xmpp_core::settings::AccountSettings {
    use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};
    AccountSettings {
        jid: server.jid(user).unwrap(),
        password: Password::new(format!("{user}-password")),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
        }),
        ca_file: Some(server.ca_file().to_owned()),
        insecure_plaintext: false,
        db,
        label: label.to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    }
}

/// Sends `body` to the bot unencrypted, as `user` from a new device, and waits until the
/// server's stanza log shows it: the positive control of the "never in plaintext" checks.
pub(crate) async fn plaintext_to_the_bot(server: &TestServer, dir: &Path, user: &str, body: &str) {
    let db = dir.join(format!("{user}-control.sqlite3"));
    let settings = client_settings(server, user, db, "positive control");
    let (client, _events) = xmpp_core::client::Client::start(&settings).await.unwrap();
    let bot = xmpp_core::jid::Jid::from(server.jid("bot").unwrap());
    client.send_plaintext(bot, body).await.unwrap();
    server
        .wait_for_stanza_log(body, Duration::from_secs(20))
        .await
        .unwrap();
    client.close().await;
}
