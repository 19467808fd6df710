//! Two devices that start a session with each other at the same moment, through a real
//! Prosody. Each builds a session from its own key exchange, then one from the other's, which
//! replaces the first; each side then sends on a session the other side replaced. With the
//! replaced session kept as the previous one, every message still decrypts.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use atm_trust::Namespace;
use test_prosody::TestServer;
use xmpp_core::client::Client;
use xmpp_core::jid::BareJid;

mod common;
use common::{create_accounts, next_message, start_client};

/// Whether `client` has a session with `jid`'s device `device`.
async fn has_session(client: &Client, jid: &BareJid, device: omemo_crypto::DeviceId) -> bool {
    let jid = jid.clone();
    client
        .manager()
        .with_store(move |store| store.load_sessions(Namespace::Omemo2, jid.as_str(), device))
        .await
        .unwrap()
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_started_at_the_same_moment_both_keep_working() {
    let server = TestServer::start().unwrap();
    create_accounts(&server, ["alice", "bob", "carol"]);
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut alice_events) = start_client(&server, dir.path(), "alice").await;
    let (bob, mut bob_events) = start_client(&server, dir.path(), "bob").await;
    let (carol, _carol_events) = start_client(&server, dir.path(), "carol").await;
    let alice_jid = alice.jid().clone();
    let bob_jid = bob.jid().clone();
    let carol_device = carol.manager().own().device_id;

    // Neither alice nor bob reads events yet. Carol's messages fill their event channel and
    // hold their worker (once one of them is decrypted, the worker waits for the program to
    // take it), so what arrives next waits undecrypted.
    for to in [&alice_jid, &bob_jid] {
        carol.send_body(to, "one").await.unwrap();
        carol.send_body(to, "two").await.unwrap();
    }
    let carol_jid = carol.jid().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(has_session(&alice, &carol_jid, carol_device).await
        && has_session(&bob, &carol_jid, carol_device).await)
    {
        assert!(Instant::now() < deadline, "carol's messages did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The precondition of the race: neither has a session with the other yet.
    let alice_device = alice.manager().own().device_id;
    let bob_device = bob.manager().own().device_id;
    assert!(!has_session(&alice, &bob_jid, bob_device).await);
    assert!(!has_session(&bob, &alice_jid, alice_device).await);

    // Both start a session with the other: neither has seen the other's key exchange.
    let (a1, b1) = tokio::join!(
        alice.send_body(&bob_jid, "a1"),
        bob.send_body(&alice_jid, "b1")
    );
    a1.unwrap();
    b1.unwrap();
    for events in [&mut alice_events, &mut bob_events] {
        for expected in ["one", "two"] {
            assert_eq!(next_message(events).await.body.as_deref(), Some(expected));
        }
    }
    // The race happened: each message is a key exchange, so each side built its session
    // from its own key exchange before it decrypted the other's (a side that had decrypted
    // the other's first would have answered on that session, without a key exchange).
    let b1 = next_message(&mut alice_events).await;
    assert_eq!(b1.body.as_deref(), Some("b1"));
    assert!(
        b1.e2ee.key_exchange,
        "bob sent b1 on a session from alice's key exchange"
    );
    let a1 = next_message(&mut bob_events).await;
    assert_eq!(a1.body.as_deref(), Some("a1"));
    assert!(
        a1.e2ee.key_exchange,
        "alice sent a1 on a session from bob's key exchange"
    );

    // Each now holds two sessions with the other; whichever each sends on, the other
    // decrypts (next_message fails on an undecryptable message).
    for round in 2..6 {
        let text = format!("a{round}");
        alice.send_body(&bob_jid, &text).await.unwrap();
        assert_eq!(
            next_message(&mut bob_events).await.body.as_deref(),
            Some(text.as_str())
        );
        let text = format!("b{round}");
        bob.send_body(&alice_jid, &text).await.unwrap();
        assert_eq!(
            next_message(&mut alice_events).await.body.as_deref(),
            Some(text.as_str())
        );
    }
    // And at the same moment again.
    let (a, b) = tokio::join!(
        alice.send_body(&bob_jid, "a6"),
        bob.send_body(&alice_jid, "b6")
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(
        next_message(&mut bob_events).await.body.as_deref(),
        Some("a6")
    );
    assert_eq!(
        next_message(&mut alice_events).await.body.as_deref(),
        Some("b6")
    );
    for client in [alice, bob, carol] {
        client.close().await;
    }
}
