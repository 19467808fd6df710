//! Acceptance: a real OMEMO 2 client reaches the bot. Converse.js 14 runs in Debian's
//! Chromium (headless, driven by puppeteer-core through `interop/converse/drive.mjs`), logs
//! in over WebSocket to a local Prosody with OMEMO on, sends messages to the bot and reads
//! its encrypted answers from the page.
//!
//! Run twice: with a bot identity whose Ed25519 sign bit is 0 (what the bot creates now),
//! and with a database made before that rule, whose identity has sign bit 1: Converse.js
//! (libomemo.js) refuses that bundle, as the README says.
//!
//! Needs `chromium` and `npm ci` in `interop/converse` (`just converse`, part of `just test`).

// Test code: a failed step should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_trust::Store;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use test_prosody::TestServer;

mod common;

use common::{start_bot, stop_bot, Bot};

/// The whole browser run: page load, login, OMEMO set-up, sessions, answers.
const BROWSER_DEADLINE: Duration = Duration::from_secs(50);

fn converse_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/converse")
}

/// A bot database as an older version left it: its own device exists; with `sign_bit_1`
/// its identity key has Ed25519 sign bit 1 (about half of those created before new ones had
/// to have sign bit 0). Returns the identity's public key.
fn prepare_bot_db(db: &Path, jid: &str, sign_bit_1: bool) -> omemo_crypto::IdentityPublicKey {
    {
        let mut store = Store::open(db).unwrap();
        store
            .load_or_create_own_device(jid, Some("echo-bot under test"), &mut OsRng, 1)
            .unwrap();
    }
    if sign_bit_1 {
        let seed = loop {
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            if omemo_crypto::hazmat::identity_from_seed(&seed)
                .public_key()
                .ed25519_sign_bit()
            {
                break seed;
            }
        };
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute(
            "UPDATE own_device SET identity_seed = ?1 WHERE id = 1",
            [&seed[..]],
        )
        .unwrap();
        // The signed pre-key was signed by the replaced key; the bot signs a new one at start.
        conn.execute("DELETE FROM signed_pre_keys", []).unwrap();
    }
    let store = Store::open(db).unwrap();
    let own = store.own_device().unwrap().unwrap();
    own.identity().public_key()
}

/// Runs the browser driver and returns its report (the JSON object on its last stdout line)
/// and whether it saw what it waited for.
async fn drive(server: &TestServer, case: &str, messages: &[&str], expect: &str) -> (Value, bool) {
    let dir = converse_dir();
    assert!(
        dir.join("node_modules/converse.js/dist/converse.min.js")
            .is_file()
            && dir.join("node_modules/puppeteer-core").is_dir(),
        "Converse.js and puppeteer-core are not installed in {}: run `just converse`",
        dir.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "Chromium is not installed: run `just converse`"
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("converse-{case}.png"));
    let _ = std::fs::remove_file(&screenshot);
    let input = json!({
        "websocket_url": server.websocket_url().unwrap(),
        "jid": server.jid("alice").unwrap().to_string(),
        "password": "alice-password",
        "bot": server.jid("bot").unwrap().to_string(),
        "messages": messages,
        "expect": expect,
        "timeout_ms": BROWSER_DEADLINE.as_millis(),
        "screenshot": screenshot,
    });
    let output = tokio::process::Command::new("node")
        .arg(dir.join("drive.mjs"))
        .env("CONVERSE_TEST", input.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| {
            serde_json::from_str(line)
                .map_err(|e| eprintln!("the driver's report does not parse: {e}"))
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "the driver printed no report (exit {}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    if !output.status.success() {
        eprintln!(
            "driver failed; screenshot: {}\nstderr:\n{}\nconsole:\n{}",
            screenshot.display(),
            String::from_utf8_lossy(&output.stderr),
            report["console"]
                .as_array()
                .map(|lines| lines
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_default()
        );
    }
    (report, output.status.success())
}

/// Prosody with WebSocket, accounts for the bot and alice, and the bot running on a database
/// whose identity has the given sign bit.
async fn scene(
    sign_bit_1: bool,
) -> (
    TestServer,
    tempfile::TempDir,
    Bot,
    omemo_crypto::IdentityPublicKey,
) {
    let server = TestServer::builder().websocket(true).start().unwrap();
    server.create_account("bot", "bot-password").unwrap();
    server.create_account("alice", "alice-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let key = prepare_bot_db(&db, server.jid("bot").unwrap().as_str(), sign_bit_1);
    assert_eq!(key.ed25519_sign_bit(), sign_bit_1);
    let bot = start_bot(&server, "bot", &db, &[]).await;
    // The bot kept the identity it found.
    let reopened = Store::open(&db).unwrap().own_device().unwrap().unwrap();
    assert_eq!(reopened.identity().public_key(), key);
    (server, dir, bot, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_gets_encrypted_answers_from_a_bot_whose_identity_has_sign_bit_0() {
    let (server, _dir, bot, key) = scene(false).await;
    let messages = [
        "Hello from Converse",
        "Zweite Nachricht: äöü €",
        "third <&> one",
    ];
    let (report, ok) = drive(&server, "sign-bit-0", &messages, "answers").await;
    assert!(
        ok,
        "Converse did not get every answer: {}\npage: {}\nbot log:\n{}",
        report["error"],
        report["messages"],
        bot.log_text()
    );
    let page = report["messages"].as_array().unwrap();
    for body in messages {
        let sent = page
            .iter()
            .find(|m| m["text"] == body)
            .unwrap_or_else(|| panic!("{body:?} is not on the page: {page:?}"));
        assert_eq!(sent["encrypted"], true, "{body:?} was sent unencrypted");
        let answer = format!("Your message: {body}");
        let answers: Vec<&Value> = page.iter().filter(|m| m["text"] == answer).collect();
        assert_eq!(answers.len(), 1, "{answer:?} on the page: {page:?}");
        assert_eq!(
            answers[0]["encrypted"], true,
            "{answer:?} is not marked encrypted"
        );
        assert!(
            answers[0]["from"]
                .as_str()
                .unwrap()
                .starts_with(server.jid("bot").unwrap().as_str()),
            "{answer:?} does not come from the bot: {}",
            answers[0]
        );
    }
    // Converse 14 speaks both versions and lists the bot's one device once per namespace:
    // for OMEMO 2 in the Ed25519 form and for legacy in the Curve25519 form, the two forms the
    // bot prints (`IdentityPublicKey::fingerprint_lines`) of the same key.
    let mut shown: Vec<String> = report["fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    shown.sort();
    let mut expected = vec![key.ed25519_fingerprint(), key.fingerprint()];
    expected.sort();
    assert_eq!(shown, expected);
    assert!(
        !bot.log_text().contains("cannot decrypt"),
        "{}",
        bot.log_text()
    );
    stop_bot(bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_refuses_the_bundle_of_a_bot_whose_identity_has_sign_bit_1() {
    let (server, _dir, bot, _) = scene(true).await;
    let (report, ok) = drive(&server, "sign-bit-1", &["Hello, old bot"], "refusal").await;
    assert!(
        ok,
        "Converse did not report the refusal: {}\nbot log:\n{}",
        report["error"],
        bot.log_text()
    );
    assert_eq!(report["refused"], true);
    // Converse could not build a session with the bot's device: libomemo.js rejects the
    // signed pre-key signature of a sign-bit-1 identity.
    let console = report["console"].to_string();
    assert!(
        console.contains(&format!(
            "Could not build an OMEMO session for device {}",
            bot.device
        )),
        "{console}"
    );
    assert!(console.contains("Invalid signature"), "{console}");
    // Nothing went out encrypted for the bot, so nothing came back.
    let page = report["messages"].as_array().unwrap();
    assert!(
        page.iter()
            .all(|m| !m["text"].as_str().unwrap().starts_with("Your message: ")),
        "{page:?}"
    );
    assert!(
        !bot.log_text().contains("answered an encrypted message"),
        "{}",
        bot.log_text()
    );
    stop_bot(bot).await;
}
