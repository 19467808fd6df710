//! Several contacts' messages are decrypted at once, through a real Prosody: while the bot's
//! store is busy, one message of each of three senders is in flight and waits for the store
//! thread, where calls that wait together share one commit (the store thread's unit tests
//! show that). One sender's messages are still decrypted one after another, in order.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use test_prosody::TestServer;

mod common;
use common::{create_accounts, next_message, start_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_senders_messages_are_decrypted_at_once_and_wait_for_the_store_together() {
    let server = TestServer::start().unwrap();
    let senders = ["s0", "s1", "s2"];
    create_accounts(&server, std::iter::once("bot").chain(senders));
    let dir = tempfile::tempdir().unwrap();
    let (bot, mut bot_events) = start_client(&server, dir.path(), "bot").await;
    let bot_jid = bot.jid().clone();
    let mut clients = Vec::new();
    for user in senders {
        clients.push(start_client(&server, dir.path(), user).await);
    }
    // Sessions first: each sender's key exchange, and a second message, in order.
    for (client, _) in &clients {
        client.send_body(&bot_jid, "hello").await.unwrap();
        client.send_body(&bot_jid, "again").await.unwrap();
    }
    // Each sender's two messages arrive in order, whatever the order between senders.
    let mut received: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..2 * clients.len() {
        let message = next_message(&mut bot_events).await;
        received
            .entry(message.from.to_bare().to_string())
            .or_default()
            .push(message.body.unwrap());
    }
    assert_eq!(received.len(), senders.len());
    for bodies in received.values() {
        assert_eq!(bodies, &["hello", "again"]);
    }

    // A call holds the bot's store thread.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let held = bot.manager().with_store(move |_store| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    let burst = async {
        started_rx.await.unwrap();
        for (n, (client, _)) in clients.iter().enumerate() {
            client
                .send_body(&bot_jid, &format!("burst {n}"))
                .await
                .unwrap();
        }
        // The three senders' messages are decrypted at once, not one after another: all
        // three wait for the store behind the held call.
        let deadline = Instant::now() + Duration::from_secs(20);
        while bot.decrypting() < senders.len()
            || bot.manager().store_calls_waiting() < senders.len()
        {
            assert!(
                Instant::now() < deadline,
                "{} messages being decrypted, {} store calls waiting, for {} senders' messages",
                bot.decrypting(),
                bot.manager().store_calls_waiting(),
                senders.len()
            );
            tokio::task::yield_now().await;
        }
        release_tx.send(()).unwrap();
    };
    let (held, ()) = tokio::join!(held, burst);
    held.unwrap();
    let mut bodies = Vec::new();
    for _ in &clients {
        bodies.push(next_message(&mut bot_events).await.body.unwrap());
    }
    bodies.sort();
    assert_eq!(bodies, ["burst 0", "burst 1", "burst 2"]);
    for (client, _) in clients {
        client.close().await;
    }
    bot.close().await;
}
