//! Own device, pre-keys, device lists, sessions and the database file itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use atm_trust::{
    DecryptionCommit, Durability, ListedDevice, Namespace, NewInboxMessage, SessionUpdate, Store,
    StoreError, TrustLevel, TrustPolicy,
};
use omemo_crypto::{DeviceId, PreKeyId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_700_000_000;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const NS: Namespace = Namespace::Omemo2;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(42)
}

fn dev(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

fn listed(ids: &[u32]) -> Vec<ListedDevice> {
    ids.iter()
        .map(|&id| ListedDevice {
            device_id: dev(id),
            label: Some(format!("device {id}")),
            label_verified: true,
        })
        .collect()
}

fn decryption<'a>(
    jid: &'a str,
    device: u32,
    state: &'a [u8],
    pre_key: Option<u32>,
) -> DecryptionCommit<'a> {
    DecryptionCommit {
        namespace: NS,
        jid,
        device_id: dev(device),
        session_state: state,
        previous_state: None,
        used_pre_key: pre_key.map(|id| PreKeyId::new(id).unwrap()),
        now: NOW,
    }
}

#[test]
fn own_device_is_created_once_and_reloaded() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.own_device().unwrap().is_none());
    assert!(store.current_signed_pre_key().unwrap().is_none());
    let created = store
        .load_or_create_own_device(ALICE, Some("laptop"), &mut rng(), NOW)
        .unwrap();
    let again = store
        .load_or_create_own_device(ALICE, None, &mut ChaCha20Rng::seed_from_u64(7), NOW + 1)
        .unwrap();
    assert_eq!(again.device_id(), created.device_id());
    assert_eq!(
        again.identity().public_key(),
        created.identity().public_key()
    );
    assert_eq!(again.label(), Some("laptop"));
    assert_eq!(again.created_at(), NOW);
    let relabelled = store
        .load_or_create_own_device(ALICE, Some("desk"), &mut rng(), NOW)
        .unwrap();
    assert_eq!(relabelled.label(), Some("desk"));
    assert!(matches!(
        store.load_or_create_own_device(BOB, None, &mut rng(), NOW),
        Err(StoreError::AccountMismatch)
    ));
    // The first signed pre-key was created with the device and verifies.
    let spk = store.current_signed_pre_key().unwrap().unwrap();
    assert_eq!(spk.created_at(), NOW);
    assert!(created
        .identity()
        .public_key()
        .verify(spk.public_key().as_bytes(), &spk.signature()));
}

#[test]
fn operations_needing_the_own_device_say_so() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(matches!(
        store.ensure_pre_keys(10, &mut rng(), NOW),
        Err(StoreError::NoOwnDevice)
    ));
    assert!(matches!(
        store.rotate_signed_pre_key(&mut rng(), NOW),
        Err(StoreError::NoOwnDevice)
    ));
}

#[test]
fn signed_pre_key_rotation_keeps_one_previous_key_for_a_grace_period() {
    let mut store = Store::open_in_memory().unwrap();
    let mut rng = rng();
    store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW)
        .unwrap();
    let first = store.current_signed_pre_key().unwrap().unwrap();
    let second = store.rotate_signed_pre_key(&mut rng, NOW + 100).unwrap();
    assert_ne!(first.id(), second.id());
    assert_eq!(
        store.current_signed_pre_key().unwrap().unwrap().id(),
        second.id()
    );
    assert!(store.signed_pre_key(first.id()).unwrap().is_some());
    // Nothing is old enough yet.
    assert_eq!(store.prune_signed_pre_keys(1000, NOW + 200).unwrap(), 0);
    let third = store.rotate_signed_pre_key(&mut rng, NOW + 300).unwrap();
    assert!(
        store.signed_pre_key(first.id()).unwrap().is_none(),
        "only one previous key"
    );
    assert!(store.signed_pre_key(second.id()).unwrap().is_some());
    assert_eq!(store.prune_signed_pre_keys(1000, NOW + 1300).unwrap(), 1);
    assert!(store.signed_pre_key(second.id()).unwrap().is_none());
    assert_eq!(
        store.current_signed_pre_key().unwrap().unwrap().id(),
        third.id()
    );
    // Stored keys come back byte for byte.
    let loaded = store.signed_pre_key(third.id()).unwrap().unwrap();
    assert_eq!(loaded.public_key(), third.public_key());
    assert_eq!(loaded.signature(), third.signature());
    assert_eq!(*loaded.secret_bytes(), *third.secret_bytes());
}

#[test]
fn pre_keys_are_topped_up_used_and_removed_after_grace() {
    let mut store = Store::open_in_memory().unwrap();
    let mut rng = rng();
    store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW)
        .unwrap();
    let ids = store.ensure_pre_keys(100, &mut rng, NOW).unwrap();
    assert_eq!(ids.len(), 100);
    assert!(store
        .ensure_pre_keys(100, &mut rng, NOW)
        .unwrap()
        .is_empty());
    assert!(store.bundle_needs_publishing().unwrap());
    store.mark_bundle_published(&ids).unwrap();
    assert!(!store.bundle_needs_publishing().unwrap());

    let used = ids[3];
    store.mark_pre_key_used(used, NOW + 10).unwrap();
    assert!(
        store.bundle_needs_publishing().unwrap(),
        "the used key must leave the bundle"
    );
    assert_eq!(store.unused_pre_keys().unwrap().len(), 99);
    assert!(
        store.pre_key(used).unwrap().is_some(),
        "kept during the grace period"
    );
    let refill = store.ensure_pre_keys(100, &mut rng, NOW + 10).unwrap();
    assert_eq!(refill.len(), 1);
    assert!(!ids.contains(&refill[0]), "fresh id");
    let bundle: Vec<PreKeyId> = store
        .unused_pre_keys()
        .unwrap()
        .iter()
        .map(|k| k.id())
        .collect();
    store.mark_bundle_published(&bundle).unwrap();
    assert!(!store.bundle_needs_publishing().unwrap());

    assert_eq!(store.remove_used_pre_keys(3600, NOW + 100).unwrap(), 0);
    assert_eq!(store.remove_used_pre_keys(3600, NOW + 3610).unwrap(), 1);
    assert!(store.pre_key(used).unwrap().is_none());
    // Removed ids are not handed out again.
    store.mark_pre_key_used(ids[0], NOW).unwrap();
    store.remove_used_pre_keys(0, NOW).unwrap();
    let next = store.ensure_pre_keys(100, &mut rng, NOW).unwrap();
    assert!(next
        .iter()
        .all(|id| !ids.contains(id) && !refill.contains(id)));

    assert!(matches!(
        store.mark_pre_key_used(PreKeyId::new(999_999).unwrap(), NOW),
        Err(StoreError::UnknownPreKey(_))
    ));
}

#[test]
fn device_list_updates_report_changes() {
    let mut store = Store::open_in_memory().unwrap();
    let changes = store
        .update_device_list(NS, BOB, &listed(&[1, 2, 3]), NOW)
        .unwrap();
    assert_eq!(changes.added, [dev(1), dev(2), dev(3)]);
    let mut next = listed(&[2, 3, 4, 4]);
    next[1].label = Some("renamed".into());
    let changes = store.update_device_list(NS, BOB, &next, NOW + 10).unwrap();
    assert_eq!(changes.added, [dev(4)]);
    assert_eq!(changes.removed, [dev(1)]);
    assert_eq!(changes.relabelled, [dev(3)]);
    assert!(changes.reactivated.is_empty());
    let active: Vec<_> = store
        .active_devices(NS, BOB)
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(active, [dev(2), dev(3), dev(4)]);
    let removed = store.device(NS, BOB, dev(1)).unwrap().unwrap();
    assert!(!removed.active);
    assert_eq!(removed.removed_at, Some(NOW + 10));
    assert_eq!(removed.first_seen, NOW);

    let changes = store
        .update_device_list(NS, BOB, &listed(&[1, 2, 3, 4]), NOW + 20)
        .unwrap();
    assert_eq!(changes.reactivated, [dev(1)]);
    assert_eq!(changes.relabelled, [dev(3)]);
    assert!(store
        .update_device_list(NS, BOB, &listed(&[1, 2, 3, 4]), NOW + 30)
        .unwrap()
        .is_empty());
    // Lists are per namespace.
    assert!(store
        .active_devices(Namespace::Legacy, BOB)
        .unwrap()
        .is_empty());

    store
        .update_device_list(NS, BOB, &listed(&[2]), NOW + 40)
        .unwrap();
    assert_eq!(store.purge_removed_devices(100, NOW + 100).unwrap(), 0);
    assert_eq!(store.purge_removed_devices(100, NOW + 140).unwrap(), 3);
    assert_eq!(store.devices(NS, BOB).unwrap().len(), 1);
}

#[test]
fn decryption_commit_is_all_or_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    let mut rng = rng();
    store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW)
        .unwrap();
    let ids = store.ensure_pre_keys(5, &mut rng, NOW).unwrap();

    // A key exchange consuming pre-key ids[0].
    let counters = store
        .commit_decryption(&decryption(BOB, 9, b"state 1", Some(ids[0].get())))
        .unwrap();
    assert_eq!(
        (counters.received_without_reply, counters.sent_without_reply),
        (1, 0)
    );
    assert_eq!(
        store
            .load_session(NS, BOB, dev(9))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"state 1"
    );
    assert_eq!(store.unused_pre_keys().unwrap().len(), 4);
    let device = store.device(NS, BOB, dev(9)).unwrap().unwrap();
    assert!(!device.active, "known from a message only");

    // An unknown pre-key rolls everything back: no new state, no counter change.
    let err = store
        .commit_decryption(&decryption(BOB, 9, b"state 2", Some(424_242)))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownPreKey(_)));
    assert_eq!(
        store
            .load_session(NS, BOB, dev(9))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"state 1"
    );
    assert_eq!(
        store
            .device(NS, BOB, dev(9))
            .unwrap()
            .unwrap()
            .received_without_reply,
        1
    );

    assert!(matches!(
        store.commit_decryption(&decryption(BOB, 9, b"", None)),
        Err(StoreError::EmptySessionState)
    ));
    let counters = store
        .commit_decryption(&decryption(BOB, 9, b"state 3", None))
        .unwrap();
    assert_eq!(counters.received_without_reply, 2);
    assert_eq!(
        store.session_updated_at(NS, BOB, dev(9)).unwrap(),
        Some(NOW)
    );
}

#[test]
fn a_decryption_commit_sets_the_current_and_the_previous_session() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.load_sessions(NS, BOB, dev(9)).unwrap().is_none());
    let mut commit = decryption(BOB, 9, b"ours", None);
    store.commit_decryption(&commit).unwrap();
    commit.session_state = b"theirs";
    commit.previous_state = Some(b"ours");
    store.commit_decryption(&commit).unwrap();
    let (current, previous) = store.load_sessions(NS, BOB, dev(9)).unwrap().unwrap();
    assert_eq!(
        (current.as_slice(), previous.as_deref().map(Vec::as_slice)),
        (&b"theirs"[..], Some(&b"ours"[..]))
    );
    // Encrypting moves only the current session on.
    store
        .commit_encryption(
            NS,
            &[SessionUpdate {
                jid: BOB,
                device_id: dev(9),
                session_state: b"theirs, later",
            }],
            NOW,
        )
        .unwrap();
    let (current, previous) = store.load_sessions(NS, BOB, dev(9)).unwrap().unwrap();
    assert_eq!(current.as_slice(), b"theirs, later");
    assert_eq!(previous.as_deref().map(Vec::as_slice), Some(&b"ours"[..]));
    // An empty previous state is refused like an empty current one; none clears it.
    commit.previous_state = Some(b"");
    assert!(store.commit_decryption(&commit).is_err());
    commit.previous_state = None;
    store.commit_decryption(&commit).unwrap();
    let (_, previous) = store.load_sessions(NS, BOB, dev(9)).unwrap().unwrap();
    assert!(previous.is_none());
}

#[test]
fn caught_up_until_is_kept_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    {
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.caught_up_until().unwrap(), None);
        store
            .load_or_create_own_device(ALICE, None, &mut rng(), NOW)
            .unwrap();
        assert_eq!(store.caught_up_until().unwrap(), None);
        store.set_caught_up_until(NOW + 5).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.caught_up_until().unwrap(), Some(NOW + 5));
}

#[test]
fn last_session_activity_is_the_newest_commit() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.last_session_activity(NS).unwrap(), None);
    store
        .update_device_list(NS, BOB, &listed(&[1, 2]), NOW)
        .unwrap();
    let mut commit = decryption(BOB, 1, b"a", None);
    commit.now = NOW + 50;
    store.commit_decryption(&commit).unwrap();
    let mut commit = decryption(BOB, 2, b"b", None);
    commit.now = NOW + 20;
    store.commit_decryption(&commit).unwrap();
    assert_eq!(store.last_session_activity(NS).unwrap(), Some(NOW + 50));
}

#[test]
fn the_outbox_is_written_with_the_ratchet_steps_and_emptied_on_acknowledgement() {
    let mut store = Store::open_in_memory().unwrap();
    let update = |state: &'static [u8]| SessionUpdate {
        jid: BOB,
        device_id: dev(1),
        session_state: state,
    };
    let first = store
        .commit_encryption_queued(NS, &[update(b"s1")], NOW, "<message id='1'/>", &[])
        .unwrap();
    let second = store
        .commit_encryption_queued(NS, &[update(b"s2")], NOW, "<message id='2'/>", &[])
        .unwrap();
    assert_eq!(
        store
            .load_session(NS, BOB, dev(1))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"s2"
    );
    assert_eq!(
        store.outbox().unwrap(),
        [
            (first, "<message id='1'/>".to_owned()),
            (second, "<message id='2'/>".to_owned())
        ]
    );
    // A failing commit writes neither the session nor the stanza.
    assert!(store
        .commit_encryption_queued(NS, &[update(b"")], NOW, "<message id='3'/>", &[])
        .is_err());
    assert_eq!(store.outbox().unwrap().len(), 2);
    // Sends are counted from the first one, which the commit records.
    assert_eq!(store.outbox_count_send(first).unwrap(), Some(2));
    assert_eq!(store.outbox_count_send(first).unwrap(), Some(3));
    assert_eq!(store.outbox_count_send(second).unwrap(), Some(2));
    store.outbox_remove(&[first]).unwrap();
    assert_eq!(store.outbox_count_send(first).unwrap(), None);
    assert_eq!(
        store.outbox().unwrap(),
        [(second, "<message id='2'/>".to_owned())]
    );
    assert_eq!(store.outbox_expire(NOW).unwrap(), 0);
    assert_eq!(store.outbox_expire(NOW + 1).unwrap(), 1);
    assert!(store.outbox().unwrap().is_empty());
}

#[test]
fn a_decrypted_message_stays_in_the_inbox_until_handled_or_answered() {
    let mut store = Store::open_in_memory().unwrap();
    let key = omemo_crypto::hazmat::identity_from_seed(&[3; 32]).public_key();
    let kept = |envelope: &'static [u8], stanza_id: Option<&'static str>| NewInboxMessage {
        identity_key: &key,
        from: "bob@example.org/phone",
        stanza_id,
        message_type: "chat",
        envelope,
        key_exchange: envelope == b"first",
    };
    let (_, first) = store
        .commit_decryption_kept(
            &decryption(BOB, 9, b"state 1", None),
            &kept(b"first", Some("m1")),
        )
        .unwrap();
    let (counters, second) = store
        .commit_decryption_kept(
            &decryption(BOB, 9, b"state 2", None),
            &kept(b"second", None),
        )
        .unwrap();
    assert_eq!(counters.received_without_reply, 2);
    assert_eq!(
        store
            .load_session(NS, BOB, dev(9))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"state 2"
    );
    let inbox = store.inbox().unwrap();
    assert_eq!(
        inbox.iter().map(|m| m.id).collect::<Vec<_>>(),
        [first, second]
    );
    let m = &inbox[0];
    assert_eq!(
        (m.namespace, m.sender.as_str(), m.device_id, m.identity_key),
        (NS, BOB, dev(9), key)
    );
    assert_eq!(
        (
            m.from.as_str(),
            m.stanza_id.as_deref(),
            m.message_type.as_str()
        ),
        ("bob@example.org/phone", Some("m1"), "chat")
    );
    assert_eq!(
        (m.envelope.as_slice(), m.key_exchange, m.received_at),
        (&b"first"[..], true, NOW)
    );
    assert_eq!(
        (inbox[1].stanza_id.as_deref(), inbox[1].key_exchange),
        (None, false)
    );

    // A failing commit keeps neither the ratchet step nor the message.
    assert!(store
        .commit_decryption_kept(&decryption(BOB, 9, b"", None), &kept(b"third", None))
        .is_err());
    assert_eq!(store.inbox().unwrap().len(), 2);

    // An answer removes the message it answers in its own commit; a failed answer does not.
    let update = |state: &'static [u8]| SessionUpdate {
        jid: BOB,
        device_id: dev(9),
        session_state: state,
    };
    assert!(store
        .commit_encryption_queued(NS, &[update(b"")], NOW, "<message/>", &[first])
        .is_err());
    assert_eq!(store.inbox().unwrap().len(), 2);
    store
        .commit_encryption_queued(NS, &[update(b"s")], NOW, "<message/>", &[first])
        .unwrap();
    assert_eq!(
        store
            .inbox()
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [second]
    );
    // Handled without an answer; removing twice is harmless.
    store.inbox_remove(&[second, second, first]).unwrap();
    assert!(store.inbox().unwrap().is_empty());
}

#[test]
fn a_message_and_its_answer_commit_together_and_never_enter_the_inbox() {
    let mut store = Store::open_in_memory().unwrap();
    let update = |device: u32, state: &'static [u8]| SessionUpdate {
        jid: BOB,
        device_id: dev(device),
        session_state: state,
    };
    let session = |store: &Store, device: u32| {
        store
            .load_session(NS, BOB, dev(device))
            .unwrap()
            .map(|state| state.to_vec())
    };
    // The answer steps the session the message stepped, and reaches a second device.
    let id = store
        .commit_decryption_answered(
            &decryption(BOB, 9, b"after the message", None),
            &[update(9, b"after the answer"), update(3, b"other device")],
            "<message id='a'/>",
        )
        .unwrap();
    assert_eq!(
        session(&store, 9).as_deref(),
        Some(&b"after the answer"[..])
    );
    assert_eq!(session(&store, 3).as_deref(), Some(&b"other device"[..]));
    assert_eq!(
        store.outbox().unwrap(),
        [(id, "<message id='a'/>".to_owned())]
    );
    assert!(store.inbox().unwrap().is_empty());
    // The answer counted as a reply: the next message is the first without one.
    let counters = store
        .commit_decryption(&decryption(BOB, 9, b"next message", None))
        .unwrap();
    assert_eq!(
        (counters.received_without_reply, counters.sent_without_reply),
        (1, 0)
    );

    // A failing answer stores neither the answer nor the message's ratchet step.
    assert!(store
        .commit_decryption_answered(
            &decryption(BOB, 9, b"after a lost message", None),
            &[update(9, b"")],
            "<message id='b'/>",
        )
        .is_err());
    assert_eq!(session(&store, 9).as_deref(), Some(&b"next message"[..]));
    assert_eq!(store.outbox().unwrap().len(), 1);
}

#[test]
fn encryption_commit_updates_every_recipient_and_counters() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .update_device_list(NS, BOB, &listed(&[1, 2]), NOW)
        .unwrap();
    store
        .commit_decryption(&decryption(BOB, 1, b"r", None))
        .unwrap();
    store
        .commit_decryption(&decryption(BOB, 1, b"r", None))
        .unwrap();
    let updates = [
        SessionUpdate {
            jid: BOB,
            device_id: dev(1),
            session_state: b"s1",
        },
        SessionUpdate {
            jid: BOB,
            device_id: dev(2),
            session_state: b"s2",
        },
        SessionUpdate {
            jid: ALICE,
            device_id: dev(3),
            session_state: b"s3",
        },
    ];
    store.commit_encryption(NS, &updates, NOW + 1).unwrap();
    store.commit_encryption(NS, &updates[..2], NOW + 2).unwrap();
    for (jid, id, state, sent) in [(BOB, 1, b"s1", 2), (BOB, 2, b"s2", 2), (ALICE, 3, b"s3", 1)] {
        assert_eq!(
            store
                .load_session(NS, jid, dev(id))
                .unwrap()
                .unwrap()
                .as_slice(),
            state
        );
        let device = store.device(NS, jid, dev(id)).unwrap().unwrap();
        assert_eq!(device.sent_without_reply, sent);
        assert_eq!(
            device.received_without_reply, 0,
            "sending resets the received counter"
        );
    }
    // Receiving resets the sent counter.
    let counters = store
        .commit_decryption(&decryption(BOB, 2, b"r2", None))
        .unwrap();
    assert_eq!(
        (counters.sent_without_reply, counters.received_without_reply),
        (0, 1)
    );

    // One bad state rolls back the whole message.
    let bad = [
        SessionUpdate {
            jid: BOB,
            device_id: dev(1),
            session_state: b"new",
        },
        SessionUpdate {
            jid: BOB,
            device_id: dev(2),
            session_state: b"",
        },
    ];
    assert!(store.commit_encryption(NS, &bad, NOW + 3).is_err());
    assert_eq!(
        store
            .load_session(NS, BOB, dev(1))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"s1"
    );

    assert!(store.delete_session(NS, BOB, dev(1)).unwrap());
    assert!(store.load_session(NS, BOB, dev(1)).unwrap().is_none());
    // Sessions are per namespace.
    assert!(store
        .load_session(Namespace::Legacy, BOB, dev(2))
        .unwrap()
        .is_none());
    // Forgetting a device drops its session too.
    store.forget_device(NS, BOB, dev(2)).unwrap();
    assert!(store.load_session(NS, BOB, dev(2)).unwrap().is_none());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn file_database_is_private_wal_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("account.sqlite");
    let mut rng = rng();
    let bob_key = omemo_crypto::hazmat::identity_from_seed(&[5; 32]).public_key();
    let (device_id, identity, pre_keys) = {
        let mut store = Store::open(&path).unwrap();
        let own = store
            .load_or_create_own_device(ALICE, Some("bot"), &mut rng, NOW)
            .unwrap();
        let pre_keys = store.ensure_pre_keys(100, &mut rng, NOW).unwrap();
        store
            .update_device_list(NS, BOB, &listed(&[7]), NOW)
            .unwrap();
        store
            .record_identity_key(NS, BOB, dev(7), &bob_key, TrustPolicy::Toakafa, NOW)
            .unwrap();
        store
            .set_trust_level(BOB, &bob_key, TrustLevel::Authenticated, NOW)
            .unwrap();
        store
            .commit_decryption(&decryption(BOB, 7, b"persisted", Some(pre_keys[0].get())))
            .unwrap();
        (own.device_id(), own.identity().public_key(), pre_keys)
    };
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("account.sqlite-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }

    let mut store = Store::open(&path).unwrap();
    let own = store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW + 1)
        .unwrap();
    assert_eq!(
        (own.device_id(), own.identity().public_key()),
        (device_id, identity)
    );
    assert_eq!(own.label(), Some("bot"));
    assert_eq!(store.unused_pre_keys().unwrap().len(), 99);
    assert!(store.pre_key(pre_keys[0]).unwrap().is_some());
    assert_eq!(
        store
            .load_session(NS, BOB, dev(7))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"persisted"
    );
    assert_eq!(
        store.trust_level(BOB, &bob_key).unwrap(),
        Some(TrustLevel::Authenticated)
    );
    assert_eq!(store.trust_events(BOB).unwrap().len(), 2);
    let device = store.device(NS, BOB, dev(7)).unwrap().unwrap();
    assert_eq!((device.active, device.identity_key), (true, Some(bob_key)));
    assert_eq!(
        store.schema_version().unwrap(),
        Store::supported_schema_version()
    );

    let conn = rusqlite::Connection::open(&path).unwrap();
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    drop(conn);
    drop(store);
    // synchronous is per connection: check what the store sets.
    let store = Store::open_with(&path, Durability::Normal).unwrap();
    drop(store);
}

#[test]
fn new_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite");
    Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(
        Store::open(&garbage),
        Err(StoreError::NotOurDatabase)
    ));

    let other_app = dir.path().join("other.sqlite");
    {
        let conn = rusqlite::Connection::open(&other_app).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT);")
            .unwrap();
    }
    assert!(matches!(
        Store::open(&other_app),
        Err(StoreError::NotOurDatabase)
    ));

    let other_id = dir.path().join("other-id.sqlite");
    {
        let conn = rusqlite::Connection::open(&other_id).unwrap();
        conn.execute_batch("PRAGMA application_id = 12345;")
            .unwrap();
    }
    assert!(matches!(
        Store::open(&other_id),
        Err(StoreError::NotOurDatabase)
    ));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.sqlite");
    Store::open(&path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (999, 'future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    }
    match Store::open(&path) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, 999);
            assert_eq!(supported, Store::supported_schema_version());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn damaged_rows_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.sqlite");
    let bob_key = omemo_crypto::hazmat::identity_from_seed(&[5; 32]).public_key();
    {
        let mut store = Store::open(&path).unwrap();
        store
            .set_trust_level(BOB, &bob_key, TrustLevel::ManuallyTrusted, NOW)
            .unwrap();
        store
            .update_device_list(NS, BOB, &listed(&[7]), NOW)
            .unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE trust SET level = 3;
             UPDATE devices SET identity_key = zeroblob(32), first_seen = -5;
             INSERT INTO inbox (namespace, sender, device_id, identity_key, from_jid,
                                message_type, envelope, key_exchange, received_at)
             VALUES ('urn:example:other', 'bob@example.org', 7, zeroblob(32),
                     'bob@example.org/a', 'chat', x'00', 0, 1);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(matches!(
        store.trust_level(BOB, &bob_key),
        Err(StoreError::UnknownTrustLevel(3))
    ));
    assert!(matches!(
        store.device(NS, BOB, dev(7)),
        Err(StoreError::CorruptRow {
            table: "devices",
            ..
        })
    ));
    assert!(matches!(
        store.inbox(),
        Err(StoreError::CorruptRow { table: "inbox", .. })
    ));
    drop(store);

    // A damaged migration history is an error, not a panic.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE refinery_schema_history SET applied_on = 'yesterday'",
            [],
        )
        .unwrap();
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::CorruptRow {
            table: "refinery_schema_history",
            ..
        })
    ));
}

#[test]
fn device_rows_per_jid_are_bounded() {
    let max = u32::try_from(atm_trust::MAX_DEVICES_PER_JID).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    // A list longer than the bound is recorded up to it, in list order.
    let first: Vec<u32> = (1..=max + 10).collect();
    let changes = store
        .update_device_list(NS, BOB, &listed(&first), NOW)
        .unwrap();
    assert_eq!(changes.added.len(), atm_trust::MAX_DEVICES_PER_JID);
    assert_eq!(changes.ignored, 10);
    assert!(store.device(NS, BOB, dev(max)).unwrap().is_some());
    assert!(store.device(NS, BOB, dev(max + 1)).unwrap().is_none());
    store
        .update_device_list(NS, ALICE, &listed(&[1, 2]), NOW)
        .unwrap();

    // A list of 50 new devices: the 50 that left the list first make room (with their
    // sessions); the others stay, marked removed.
    let second: Vec<u32> = (max + 100..max + 150).collect();
    let changes = store
        .update_device_list(NS, BOB, &listed(&second), NOW + 10)
        .unwrap();
    assert_eq!(changes.removed.len(), atm_trust::MAX_DEVICES_PER_JID);
    assert_eq!(changes.pruned, (1..=50).map(dev).collect::<Vec<_>>());
    assert_eq!(
        store.devices(NS, BOB).unwrap().len(),
        atm_trust::MAX_DEVICES_PER_JID
    );
    assert_eq!(store.active_devices(NS, BOB).unwrap().len(), 50);
    assert_eq!(store.devices(NS, ALICE).unwrap().len(), 2);

    // A device known only from a message counts too, and is never the one pruned for it.
    let key = omemo_crypto::hazmat::identity_from_seed(&[7; 32]).public_key();
    store
        .record_identity_key(NS, BOB, dev(9_999), &key, TrustPolicy::Toakafa, NOW + 20)
        .unwrap();
    assert!(store.device(NS, BOB, dev(9_999)).unwrap().is_some());
    assert!(store.device(NS, BOB, dev(51)).unwrap().is_none());
    assert_eq!(
        store.devices(NS, BOB).unwrap().len(),
        atm_trust::MAX_DEVICES_PER_JID
    );
}
