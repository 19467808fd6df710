//! The inbox through a real Prosody: a decrypted message the program had not finished with
//! when its process stopped is handed over again at the next start; one it answered, marked
//! handled or dropped is not.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use atm_trust::{DecryptionCommit, Namespace, NewInboxMessage, Store};
use omemo_pep::sce::Envelope;
use test_prosody::TestServer;
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::TrustLevel;

mod common;
use common::{next_message, settings};

/// The first event after a start: a message handed over again, or `Online`.
async fn first_event(events: &mut ClientEvents) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("no event within 20 s")
        .expect("the client stopped")
}

async fn inbox_len(client: &Client) -> usize {
    client
        .manager()
        .with_store(|store| store.inbox().map(|rows| rows.len()))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhandled_message_is_handed_over_again_after_a_restart() {
    let server = TestServer::start().unwrap();
    server.create_account("alice", "alice-password").unwrap();
    server.create_account("bob", "bob-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bob_db = dir.path().join("bob.db");
    let bob_jid = server.jid("bob").unwrap();
    let alice_jid = server.jid("alice").unwrap();

    let (alice, mut alice_events) = Client::start(&settings(
        &server,
        "alice",
        &dir.path().join("alice.db"),
        "alice",
    ))
    .await
    .unwrap();
    let (bob, mut bob_events) = Client::start(&settings(&server, "bob", &bob_db, "bob"))
        .await
        .unwrap();

    alice.send_body(&bob_jid, "first").await.unwrap();
    alice.send_body(&bob_jid, "second").await.unwrap();
    let first = next_message(&mut bob_events).await;
    assert_eq!(first.body.as_deref(), Some("first"));
    assert!(first.receipt.is_some(), "a received message must be kept");
    // The program "dies" before it is done with the first message: its receipt never drops.
    std::mem::forget(first);
    let second = next_message(&mut bob_events).await;
    assert_eq!(second.body.as_deref(), Some("second"));
    assert_eq!(inbox_len(&bob).await, 2);
    // The answer's commit takes the second message out of the inbox, before it is dropped.
    bob.send_body_answering(
        &alice_jid,
        "answer to second",
        Some(second.receipt.as_ref().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(inbox_len(&bob).await, 1);
    drop(second);
    let answer = next_message(&mut alice_events).await;
    assert_eq!(answer.body.as_deref(), Some("answer to second"));
    bob.close().await;
    drop(bob_events);

    // The restart hands over the first message, with its sender and current trust, and
    // nothing else: the second was answered.
    let (bob, mut bob_events) = Client::start(&settings(&server, "bob", &bob_db, "bob"))
        .await
        .unwrap();
    let ClientEvent::Encrypted(again) = first_event(&mut bob_events).await else {
        panic!("the unhandled message was not handed over first");
    };
    assert_eq!(again.body.as_deref(), Some("first"));
    assert_eq!(again.e2ee.sender, alice_jid);
    assert_eq!(again.e2ee.device, alice.manager().own().device_id);
    assert_eq!(again.e2ee.trust, TrustLevel::AutomaticallyTrusted);
    assert_eq!(again.from.to_bare(), alice_jid);
    let next = first_event(&mut bob_events).await;
    assert!(
        matches!(next, ClientEvent::Online { .. }),
        "only the unhandled message is handed over again, got {next:?}"
    );
    // Handled now, at once.
    assert_eq!(inbox_len(&bob).await, 1);
    bob.handled(&again).await.unwrap();
    assert_eq!(inbox_len(&bob).await, 0);
    drop(again);
    // A message handled by dropping it leaves the inbox a moment later, or at a clean stop.
    alice.send_body(&bob_jid, "third").await.unwrap();
    let third = next_message(&mut bob_events).await;
    assert_eq!(third.body.as_deref(), Some("third"));
    drop(third);
    bob.close().await;
    drop(bob_events);

    let (bob, mut bob_events) = Client::start(&settings(&server, "bob", &bob_db, "bob"))
        .await
        .unwrap();
    assert_eq!(inbox_len(&bob).await, 0);
    let next = first_event(&mut bob_events).await;
    assert!(
        matches!(next, ClientEvent::Online { .. }),
        "a handled message must not come back, got {next:?}"
    );
    bob.close().await;
    drop(bob_events);

    // Rows that no longer read (a damaged database) are dropped with a warning at the next
    // start, never handed over, and the client starts as usual.
    {
        let mut store = Store::open(&bob_db).unwrap();
        let device = alice.manager().own().device_id;
        let (state, previous) = store
            .load_sessions(Namespace::Omemo2, alice_jid.as_str(), device)
            .unwrap()
            .unwrap();
        let key = alice.manager().own().identity.public_key();
        let good_envelope = Envelope::new(
            vec![Envelope::body_element("damaged")],
            alice_jid.clone(),
            bob_jid.clone(),
            None,
            &mut rand_core::OsRng,
        )
        .to_bytes()
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let rows: [(&str, &str, &[u8]); 3] = [
            ("alice@localhost/a", "chat", b"not an envelope"),
            ("not a jid@@", "chat", &good_envelope),
            ("alice@localhost/a", "no such type", &good_envelope),
        ];
        for (from, message_type, envelope) in rows {
            let commit = DecryptionCommit {
                namespace: Namespace::Omemo2,
                jid: alice_jid.as_str(),
                device_id: device,
                session_state: &state,
                previous_state: previous.as_deref().map(Vec::as_slice),
                used_pre_key: None,
                now,
            };
            let kept = NewInboxMessage {
                identity_key: &key,
                from,
                stanza_id: None,
                message_type,
                envelope,
                key_exchange: false,
            };
            store.commit_decryption_kept(&commit, &kept).unwrap();
        }
    }
    let (bob, mut bob_events) = Client::start(&settings(&server, "bob", &bob_db, "bob"))
        .await
        .unwrap();
    let next = first_event(&mut bob_events).await;
    assert!(
        matches!(next, ClientEvent::Online { .. }),
        "an unreadable inbox row was handed over: {next:?}"
    );
    bob.close().await;
    assert!(Store::open(&bob_db).unwrap().inbox().unwrap().is_empty());
    alice.close().await;
}
