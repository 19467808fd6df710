//! The `just up` path with port 5222 taken by another program: a plain TCP listener that
//! answers like an SSH server holds 5222, `just up` starts the demo Prosody on 15222 and the
//! bot from `echo-bot.toml`, which must follow it there; a client's message is echoed; `just
//! down` stops both. Before the demo server runs, the same configuration must say so.
//!
//! The recipes run from a copy of the justfile and `echo-bot.toml` in a temporary
//! directory, with the binaries under test (`ECHO_BOT_BIN`, `DEMO_SERVER_BIN`), so the
//! test leaves the repository's own `.run/up` alone.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use xmpp_core::client::Client;
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

mod common;

use common::{bot_exe, echo_round};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The demo-server binary: `DEMO_SERVER_BIN`, or the workspace's build of it.
fn demo_server_exe() -> PathBuf {
    if let Some(path) = std::env::var_os("DEMO_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "test-prosody", "--bin", "demo-server"])
        .current_dir(REPO)
        .status()
        .unwrap();
    assert!(status.success(), "cannot build demo-server");
    Path::new(env!("CARGO_BIN_EXE_echo-bot")).with_file_name("demo-server")
}

/// Runs `just RECIPE` in `dir` with the binaries under test.
fn just(dir: &Path, recipe: &str, demo_server: &Path) -> Output {
    let output = Command::new("just")
        .arg(recipe)
        .current_dir(dir)
        .env("ECHO_BOT_BIN", bot_exe())
        .env("DEMO_SERVER_BIN", demo_server)
        .env("UP_NO_DOCKER", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `just` ({e}): this test needs it on PATH"));
    eprintln!(
        "--- just {recipe}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `KEY=value` lines.
fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `pid` is a live process (a zombie left for its reaper counts as gone).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn just_up_with_port_5222_taken_by_another_program() {
    // 5222 held by something that is not XMPP, as on a machine that runs another service
    // there. If it cannot be bound, the test cannot set up its condition: it says why.
    let squatter = TcpListener::bind("127.0.0.1:5222").unwrap_or_else(|e| {
        panic!(
            "cannot bind 127.0.0.1:5222 ({e}): this test puts its own non-XMPP listener there \
             and needs the port free (is an XMPP server or a `just up` demo running?)"
        )
    });
    if let Err(e) = TcpListener::bind("127.0.0.1:15222") {
        panic!("127.0.0.1:15222, the demo server's fallback port, is taken ({e})");
    }
    std::thread::spawn(move || {
        for stream in squatter.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n");
        }
    });

    let dir = tempfile::tempdir().unwrap();
    for file in ["justfile", "echo-bot.toml"] {
        std::fs::copy(Path::new(REPO).join(file), dir.path().join(file)).unwrap();
    }
    let demo_server = demo_server_exe();

    // Before the demo server runs, the demo configuration says what is missing.
    let output = Command::new(bot_exe())
        .args(["--config", "echo-bot.toml"])
        .current_dir(dir.path())
        .env_remove("XMPP_PASSWORD")
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        error.contains(".run/up/echo-bot.include.toml") && error.contains("just up-server"),
        "{error}"
    );

    let up = just(dir.path(), "up", &demo_server);
    let state = dir.path().join(".run/up");
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    if !up.status.success() {
        let log = std::fs::read_to_string(state.join("echo-bot.log")).unwrap_or_default();
        just(dir.path(), "down", &demo_server);
        panic!("`just up` failed; bot log:\n{log}");
    }
    assert!(
        stdout.contains("echo-bot ready: jid=bot@localhost"),
        "{stdout}"
    );
    let env = read_env(&state.join("demo.env"));
    assert_eq!(env["DEMO_PORT"], "15222", "{env:?}");
    assert!(
        stdout.contains("The echo bot is bot@localhost on 127.0.0.1:15222"),
        "{stdout}"
    );
    let pids: Vec<String> = ["echo-bot.pid", "demo-server.pid"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(state.join(f))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();

    // A client of the demo server talks to the bot.
    let settings = AccountSettings {
        jid: env["DEMO_ALICE_JID"].parse().unwrap(),
        password: Password::new(
            std::fs::read_to_string(&env["DEMO_ALICE_PASSWORD_FILE"])
                .unwrap()
                .trim()
                .to_owned(),
        ),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: 15222,
        }),
        ca_file: Some(PathBuf::from(&env["DEMO_CA_FILE"])),
        insecure_plaintext: false,
        db: dir.path().join("alice.sqlite3"),
        label: "alice (just up test)".to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    };
    let (alice, mut events) = Client::start(&settings).await.unwrap();
    let bot_jid = env["DEMO_BOT_JID"].parse().unwrap();
    echo_round(&alice, &mut events, &bot_jid, "hello through just up").await;
    alice.close().await;

    let down = just(dir.path(), "down", &demo_server);
    assert!(down.status.success());
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(said.contains("stopped echo-bot"), "{said}");
    assert!(said.contains("stopped demo-server"), "{said}");
    assert!(
        !said.contains("killing it"),
        "a process needed SIGKILL: {said}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "still running after `just down`: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect("127.0.0.1:15222").is_err(),
        "the demo server still listens"
    );
    assert!(!state.join("echo-bot.include.toml").exists());
    let log = std::fs::read_to_string(state.join("echo-bot.log")).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}
