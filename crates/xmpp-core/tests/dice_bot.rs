//! The `dice_bot` example, run as a process against a real Prosody: it answers an encrypted
//! `2d6` with an encrypted roll, and anything else with its usage line.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use xmpp_core::client::Client;

mod common;
use common::{next_message, settings};

/// The example's binary: `cargo test` builds the examples next to the test binaries
/// (`target/<profile>/examples/`), before it runs any test.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join("dice_bot");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified());
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dice_bot.rs");
    match (modified(&binary), modified(source.as_ref())) {
        (Ok(built), Ok(edited)) => assert!(
            built >= edited,
            "{} is older than its source: run the whole `cargo test -p xmpp-core`, which \
             builds the examples",
            binary.display()
        ),
        (Err(e), _) => panic!(
            "{}: {e}; run the whole `cargo test -p xmpp-core`, which builds the examples",
            binary.display()
        ),
        (_, Err(e)) => panic!("{source}: {e}"),
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dice_bot_example_answers_encrypted_rolls() {
    let server = TestServer::start().unwrap();
    server.create_account("dice", "dice-password").unwrap();
    server.create_account("alice", "alice-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Command::new(example_binary())
        .args(["--jid", server.jid("dice").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .args(["--ca-file", server.ca_file().to_str().unwrap()])
        .args(["--db", dir.path().join("dice.sqlite3").to_str().unwrap()])
        .env("XMPP_PASSWORD", "dice-password")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the dice bot did not get ready in time")
        .unwrap()
        .expect("the dice bot exited before it was ready");
    assert!(ready.starts_with("dice-bot ready: "), "{ready}");

    let alice_settings = settings(&server, "alice", &dir.path().join("alice.sqlite3"), "alice");
    let (alice, mut events) = Client::start(&alice_settings).await.unwrap();
    let dice = server.jid("dice").unwrap();

    alice.send_body(&dice, "2d6").await.unwrap();
    let answer = next_message(&mut events).await;
    assert_eq!(answer.e2ee.sender, dice);
    let body = answer.body.as_deref().unwrap();
    // "a + b = total", each die from 1 to 6.
    let (dice_part, total) = body.split_once(" = ").unwrap();
    let rolled: Vec<u32> = dice_part.split(" + ").map(|d| d.parse().unwrap()).collect();
    assert_eq!(rolled.len(), 2, "{body}");
    assert!(rolled.iter().all(|d| (1..=6).contains(d)), "{body}");
    assert_eq!(rolled.iter().sum::<u32>(), total.parse::<u32>().unwrap());

    alice.send_body(&dice, "hello").await.unwrap();
    let answer = next_message(&mut events).await;
    assert!(
        answer.body.as_deref().unwrap().starts_with("Send NdM"),
        "{:?}",
        answer.body
    );

    alice.close().await;
}
