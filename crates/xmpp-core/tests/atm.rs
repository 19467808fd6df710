//! Automatic Trust Management (XEP-0450) between two devices of one account, through a real
//! Prosody: once alice's two devices have authenticated each other, authenticating bob's
//! key on one of them makes it Authenticated on the other, by an encrypted trust message.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use test_prosody::TestServer;
use xmpp_core::client::Client;
use xmpp_core::jid::{BareJid, Jid};
use xmpp_core::omemo::DeviceInfo;
use xmpp_core::TrustLevel;

mod common;
use common::settings;

fn fingerprint_of(devices: &[DeviceInfo], device: u32) -> String {
    devices
        .iter()
        .find(|d| d.device.get() == device)
        .and_then(|d| d.identity_key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|| panic!("device {device} unknown: {devices:?}"))
}

async fn trust_of(client: &Client, jid: &BareJid, device: u32) -> Option<TrustLevel> {
    client
        .manager()
        .devices(jid)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.device.get() == device)
        .and_then(|d| d.trust)
}

fn drain(mut events: xmpp_core::client::ClientEvents) {
    tokio::spawn(async move { while events.recv().await.is_some() {} });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticating_a_contact_key_reaches_our_other_authenticated_device() {
    let server = TestServer::start().unwrap();
    server.create_account("alice", "alice-password").unwrap();
    server.create_account("bob", "bob-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = server.jid("alice").unwrap();
    let bob = server.jid("bob").unwrap();

    let (phone, phone_events) = Client::start(&settings(
        &server,
        "alice",
        &dir.path().join("phone.db"),
        "phone",
    ))
    .await
    .unwrap();
    let (laptop, laptop_events) = Client::start(&settings(
        &server,
        "alice",
        &dir.path().join("laptop.db"),
        "laptop",
    ))
    .await
    .unwrap();
    let (bob_client, bob_events) =
        Client::start(&settings(&server, "bob", &dir.path().join("bob.db"), "bob"))
            .await
            .unwrap();
    // Clients must be read continuously (their event channel is bounded): nobody here looks
    // at the events, so they are drained.
    for events in [phone_events, laptop_events, bob_events] {
        drain(events);
    }
    let phone_id = phone.manager().own().device_id.get();
    let laptop_id = laptop.manager().own().device_id.get();
    let bob_id = bob_client.manager().own().device_id.get();

    // The two devices authenticate each other (as after scanning each other's QR code).
    let laptop_fp = fingerprint_of(&phone.manager().devices(&alice).await.unwrap(), laptop_id);
    let phone_fp = fingerprint_of(&laptop.manager().devices(&alice).await.unwrap(), phone_id);
    phone
        .manager()
        .decide_trust(&alice, &laptop_fp, TrustLevel::Authenticated)
        .await
        .unwrap();
    // The laptop answers at once, on a session of its own: both devices may start a session
    // with each other at the same moment (see tests/simultaneous.rs).
    laptop
        .manager()
        .decide_trust(&alice, &phone_fp, TrustLevel::Authenticated)
        .await
        .unwrap();

    // The laptop knows bob's key only from his bundle, trusted blindly (TOAKAFA).
    assert_eq!(
        trust_of(&laptop, &bob, bob_id).await,
        Some(TrustLevel::AutomaticallyTrusted)
    );

    // The phone authenticates bob's key and tells the laptop.
    let bob_fp = fingerprint_of(&phone.manager().devices(&bob).await.unwrap(), bob_id);
    let (events, announced) = phone
        .manager()
        .decide_trust(&bob, &bob_fp, TrustLevel::Authenticated)
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.new_level == TrustLevel::Authenticated));
    assert!(announced >= 1, "no trust message was sent");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if trust_of(&laptop, &bob, bob_id).await == Some(TrustLevel::Authenticated) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the laptop never learned that bob's key is authenticated"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The trust message went over the wire encrypted, like everything else.
    let log = server.stanza_log();
    assert!(
        !log.contains("urn:xmpp:tm:1"),
        "a trust message reached the server in plaintext"
    );
    // The positive control: the namespace sent in plaintext does show in the log.
    phone
        .send_plaintext(Jid::from(bob.clone()), "urn:xmpp:tm:1 in plaintext")
        .await
        .unwrap();
    server
        .wait_for_stanza_log("urn:xmpp:tm:1 in plaintext", Duration::from_secs(20))
        .await
        .unwrap();

    phone.close().await;
    laptop.close().await;
    bob_client.close().await;
}
