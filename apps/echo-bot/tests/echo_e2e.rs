//! End-to-end tests of the real `echo-bot` binary on a real Prosody, talked to by a Rust
//! client built on `xmpp-core`: encrypted echoes, a restart on the same database without a
//! new key exchange, what went over the wire, plaintext and distrusted senders.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use test_prosody::TestServer;
use xmpp_core::client::{Client, ClientEvent};
use xmpp_core::jid::Jid;

mod common;

use common::{echo_round, settings, start_bot, stop_bot, Bot, Scene, DEFAULT_BOT_LOG, TIMEOUT};

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Key exchanges the server relayed, not counting archive results (the bot replays its
/// archive after each start, which shows old key exchanges again).
fn key_exchanges(log: &str) -> usize {
    log.lines()
        .filter(|line| !line.contains("urn:xmpp:mam:2"))
        .map(|line| count(line, "kex='true'") + count(line, "kex=\"true\""))
        .sum()
}

/// How many archived messages the bot's latest catch-up replayed (waits for its log line).
async fn last_catch_up(bot: &Bot) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let log = bot.log_text();
        let last = log
            .lines()
            .rfind(|l| l.contains("caught up from the archive"))
            .and_then(|l| l.split("replayed=").nth(1))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        if let Some(replayed) = last {
            return replayed;
        }
        assert!(Instant::now() < deadline, "no catch-up logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `ready` holds for the bot's database, read while the bot runs; `ready` gets
/// a function that runs a `SELECT` of one integer.
async fn wait_for_bot_state(db: &Path, what: &str, ready: impl Fn(&dyn Fn(&str) -> i64) -> bool) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let query = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
    let deadline = Instant::now() + TIMEOUT;
    while !ready(&query) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How far before a clean stop the bot's next archive catch-up starts, in seconds
/// (`CLOSE_SLACK_SECS` in xmpp-core's `archive` module).
const CLOSE_SLACK_SECS: i64 = 2;

/// Waits until a clean stop of the bot, still running, would leave nothing to replay: it has
/// handled every message it received (its inbox is empty), the server acknowledged all it
/// sent (its outbox is empty), and its last ratchet step is older than the slack its next
/// catch-up keeps before the stop (times are whole seconds, hence the strict comparison).
async fn wait_until_settled(db: &Path) {
    let query = |sql: &str| -> i64 {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    };
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let inbox = query("SELECT COUNT(*) FROM inbox");
        let outbox = query("SELECT COUNT(*) FROM outbox");
        let last_step = query("SELECT COALESCE(MAX(updated_at), 0) FROM sessions");
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        if inbox == 0 && outbox == 0 && now - CLOSE_SLACK_SECS > last_step {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the bot did not settle: {inbox} unhandled messages, {outbox} unacknowledged answers, last ratchet step {}s ago",
            now - last_step
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_100_messages_and_survives_a_restart_without_new_key_exchange() {
    let Scene {
        server,
        dir: _dir,
        bot_db,
        bot_jid,
        bot,
        client,
        mut events,
    } = Scene::start("alice", &[], DEFAULT_BOT_LOG).await;
    let first_device = bot.device.clone();

    let started = Instant::now();
    for i in 0..100 {
        echo_round(
            &client,
            &mut events,
            &bot_jid,
            &format!("message number {i}"),
        )
        .await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "100 encrypted echoes in {elapsed:?} ({:?} per round trip)",
        elapsed / 100
    );

    let log = server.stanza_log();
    let key_exchanges_before = key_exchanges(&log);
    assert!(
        key_exchanges_before >= 1,
        "the first message must be a key exchange"
    );

    // Restart the bot on the same database: same device, sessions continue. The stop is
    // clean (SIGTERM) once the bot has handled every message (its inbox is empty) and the
    // server acknowledged every answer (its outbox is empty), so the restarted bot replays
    // next to nothing from its archive.
    wait_until_settled(&bot_db).await;
    stop_bot(bot).await;
    // The server acknowledged the bot's answers, so they left its outbox.
    let unacknowledged = atm_trust::Store::open(&bot_db)
        .unwrap()
        .outbox()
        .unwrap()
        .len();
    assert!(
        unacknowledged < 5,
        "{unacknowledged} of the bot's 100+ messages are still in its outbox"
    );
    let bot = start_bot(&server, "bot", &bot_db, &[]).await;
    assert_eq!(
        bot.device, first_device,
        "the device id must survive a restart"
    );
    for i in 100..110 {
        echo_round(
            &client,
            &mut events,
            &bot_jid,
            &format!("message number {i}"),
        )
        .await;
    }
    let replayed = last_catch_up(&bot).await;
    assert!(
        replayed < 20,
        "a clean restart replayed {replayed} archived messages"
    );
    let log = server.stanza_log();
    let key_exchanges_after = key_exchanges(&log);
    assert_eq!(
        key_exchanges_before, key_exchanges_after,
        "no new key exchange after the restart"
    );

    // What the server saw: OMEMO 2 elements, never the bodies.
    assert!(
        count(&log, "<encrypted xmlns='urn:xmpp:omemo:2'>") >= 220,
        "encrypted messages in the log"
    );
    assert!(
        !log.contains("message number"),
        "a plaintext body reached the server"
    );
    assert!(
        !log.contains("Your message"),
        "a plaintext answer reached the server"
    );

    // A plaintext message gets no echo. The bot handles one sender's messages in order, so
    // once the encrypted message sent after it is answered, the plaintext one was handled:
    // had it been echoed (encrypted or not), that echo would have come first.
    client
        .send_plaintext(Jid::from(bot_jid.clone()), "plaintext secret")
        .await
        .unwrap();
    echo_round(&client, &mut events, &bot_jid, "after the plaintext").await;
    let log = server.stanza_log();
    // The positive control: the log shows plaintext bodies, as it shows this one.
    assert!(
        log.contains("plaintext secret"),
        "the stanza log does not show the plaintext message"
    );
    assert!(
        !log.contains("Your message: plaintext secret"),
        "the bot echoed a plaintext message in plaintext"
    );

    client.close().await;
    stop_bot(bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distrusted_device_gets_no_answer() {
    let server = TestServer::start().unwrap();
    server.create_account("bot", "bot-password").unwrap();
    server
        .create_account("mallory", "mallory-password")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // With the manual policy every new key is AutomaticallyDistrusted until trusted by hand.
    let bot = start_bot(
        &server,
        "bot",
        &dir.path().join("bot.sqlite3"),
        &["--trust-policy", "manual"],
    )
    .await;
    let (client, mut events) =
        Client::start(&settings(&server, "mallory", &dir.path().join("m.sqlite3")))
            .await
            .unwrap();
    let bot_jid = server.jid("bot").unwrap();
    client.send_body(&bot_jid, "please answer").await.unwrap();
    // The bot decrypted the message (it holds a session from mallory's key exchange) and is
    // done with it (its inbox is empty); an answer would have been committed to its outbox
    // with that, and the outbox empties only once the server has the answer.
    let db = dir.path().join("bot.sqlite3");
    wait_for_bot_state(&db, "the bot's decision about mallory's message", |query| {
        query("SELECT COUNT(*) FROM sessions WHERE jid = 'mallory@localhost'") == 1
            && query("SELECT COUNT(*) FROM inbox") == 0
            && query("SELECT COUNT(*) FROM outbox") == 0
    })
    .await;
    let log = server.stanza_log();
    // Messages with content (the bot may send an empty OMEMO message to complete the
    // session mallory started: that has no payload).
    let encrypted = |line: &&str| {
        line.contains("<encrypted xmlns='urn:xmpp:omemo:2'>") && line.contains("<payload>")
    };
    // The positive control: the log shows mallory's encrypted message on its way to the bot.
    assert!(
        log.lines()
            .filter(encrypted)
            .any(|l| l.contains("from='mallory@localhost/")
                || l.contains("from=\"mallory@localhost/")),
        "mallory's message is not in the stanza log:\n{log}"
    );
    assert!(
        !log.lines()
            .filter(encrypted)
            .any(|l| l.contains("from='bot@localhost/") || l.contains("from=\"bot@localhost/")),
        "the bot answered a distrusted device:\n{log}"
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                ClientEvent::Encrypted(_) | ClientEvent::Plaintext { .. }
            ),
            "mallory got an answer: {event:?}"
        );
    }
    client.close().await;
    stop_bot(bot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_rebuilt_from_a_fresh_bundle() {
    let Scene {
        server,
        dir: _dir,
        bot_db,
        bot_jid,
        bot,
        client,
        mut events,
    } = Scene::start("carol", &[], DEFAULT_BOT_LOG).await;
    echo_round(&client, &mut events, &bot_jid, "before the loss").await;

    // The bot loses its session with carol (say, a database restored from an old backup).
    stop_bot(bot).await;
    let carol_device = client.manager().own().device_id;
    let mut store = atm_trust::Store::open(&bot_db).unwrap();
    assert!(store
        .delete_session(
            atm_trust::Namespace::Omemo2,
            "carol@localhost",
            carol_device
        )
        .unwrap());
    drop(store);
    let bot = start_bot(&server, "bot", &bot_db, &[]).await;

    // Carol's next message cannot be decrypted; the bot answers it with a key exchange built
    // from carol's bundle, which replaces carol's session (the old one is kept as the
    // previous), and the message after that gets through on the new session.
    let bot_device = omemo_crypto::DeviceId::new(bot.device.parse().unwrap()).unwrap();
    let previous_session = || async {
        let bot_jid = bot_jid.clone();
        client
            .manager()
            .with_store(move |store| {
                store.load_sessions(atm_trust::Namespace::Omemo2, bot_jid.as_str(), bot_device)
            })
            .await
            .unwrap()
            .unwrap()
            .and_then(|(_, previous)| previous)
            .is_some()
    };
    assert!(
        !previous_session().await,
        "carol's session was replaced already"
    );
    client.send_body(&bot_jid, "lost in transit").await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !previous_session().await {
        assert!(
            Instant::now() < deadline,
            "the bot's key exchange did not replace carol's session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No message with content came before the echo (echo_round checks the next one).
    echo_round(&client, &mut events, &bot_jid, "after the rebuild").await;

    client.close().await;
    stop_bot(bot).await;
}
