//! A responder answers messages in the transaction that decrypts them, through a real
//! Prosody: the answer reaches the sender and the program gets the message already answered,
//! out of the inbox. Messages it declines, and messages that arrive while an earlier one of
//! the same sender is still with the program, are handed over unanswered, so that the
//! sender's answers leave in the order of its messages.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use test_prosody::TestServer;
use xmpp_core::client::Client;
use xmpp_core::omemo::{DecryptedMessage, Responder};

mod common;
use common::{create_accounts, next_message, settings, start_client};

/// Answers every message except those starting with "hold".
fn responder() -> Responder {
    Arc::new(|message: &DecryptedMessage| {
        let body = message.body.as_deref()?;
        if body.starts_with("hold") {
            return None;
        }
        Some(vec![omemo_pep::sce::Envelope::body_element(&format!(
            "at once: {body}"
        ))])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responder_answers_in_the_decryptions_commit_and_keeps_each_senders_order() {
    let server = TestServer::start().unwrap();
    create_accounts(&server, ["bot", "alice"]);
    let dir = tempfile::tempdir().unwrap();
    let bot_settings = settings(&server, "bot", &dir.path().join("bot.db"), "bot");
    let (bot, mut bot_events) = Client::start_with_responder(&bot_settings, responder())
        .await
        .unwrap();
    let bot_jid = bot.jid().clone();
    let (alice, mut alice_events) = start_client(&server, dir.path(), "alice").await;
    let alice_jid = alice.jid().clone();

    // The first message: the bot has never fetched alice's device list, so the program
    // gets it unanswered, and its answer (the program's) fetches the lists.
    alice.send_body(&bot_jid, "hello").await.unwrap();
    let first = next_message(&mut bot_events).await;
    assert!(first.answered.is_none());
    assert!(first.receipt.is_some());
    bot.send_body_answering(&alice_jid, "by the program: hello", first.receipt.as_ref())
        .await
        .unwrap();
    drop(first);
    let answer = next_message(&mut alice_events).await;
    assert_eq!(answer.body.as_deref(), Some("by the program: hello"));

    // Now the responder answers: the program gets the message answered, not in the inbox.
    alice.send_body(&bot_jid, "ping 1").await.unwrap();
    let answered = next_message(&mut bot_events).await;
    assert_eq!(answered.body.as_deref(), Some("ping 1"));
    let report = answered.answered.as_ref().expect("answered at once");
    assert!(answered.receipt.is_none());
    assert_eq!(report.encrypted_for.len(), 1);
    assert_eq!(report.encrypted_for[0].0, alice_jid);
    let answer = next_message(&mut alice_events).await;
    assert_eq!(answer.body.as_deref(), Some("at once: ping 1"));
    assert_eq!(answer.id.as_deref(), Some(report.stanza_id.as_str()));
    let inbox = bot
        .manager()
        .with_store(|store| store.inbox().unwrap().len())
        .await
        .unwrap();
    assert_eq!(
        inbox, 0,
        "the answer's commit took the message out of the inbox"
    );

    // A message the responder declines goes to the program, which holds it; the next one of
    // the same sender is then not answered at once either, though the responder would.
    alice.send_body(&bot_jid, "hold 2").await.unwrap();
    let held = next_message(&mut bot_events).await;
    assert!(held.answered.is_none());
    alice.send_body(&bot_jid, "ping 3").await.unwrap();
    let behind = next_message(&mut bot_events).await;
    assert_eq!(behind.body.as_deref(), Some("ping 3"));
    assert!(
        behind.answered.is_none(),
        "answered at once while an earlier message was with the program"
    );
    for message in [held, behind] {
        let body = format!("by the program: {}", message.body.as_deref().unwrap());
        bot.send_body_answering(&alice_jid, &body, message.receipt.as_ref())
            .await
            .unwrap();
    }
    let answers = [
        next_message(&mut alice_events).await,
        next_message(&mut alice_events).await,
    ];
    let answers: Vec<_> = answers.iter().map(|m| m.body.as_deref().unwrap()).collect();
    assert_eq!(
        answers,
        ["by the program: hold 2", "by the program: ping 3"]
    );

    // Handled: the responder answers again.
    alice.send_body(&bot_jid, "ping 4").await.unwrap();
    assert!(next_message(&mut bot_events).await.answered.is_some());
    let answer = next_message(&mut alice_events).await;
    assert_eq!(answer.body.as_deref(), Some("at once: ping 4"));

    alice.close().await;
    bot.close().await;
}
