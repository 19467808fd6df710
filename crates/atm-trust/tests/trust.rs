//! Trust levels, policies and ATM, on in-memory stores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::sync::OnceLock;

use atm_trust::{
    KeyOwnerDecisions, Namespace, Store, StoreError, TrustEvent, TrustLevel, TrustPolicy,
    TrustSource,
};
use omemo_crypto::{DeviceId, IdentityPublicKey};

use TrustLevel::*;

const NOW: u64 = 1_700_000_000;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

/// Test key number `n` (deriving keys is slow in debug builds, so they are made once).
fn key(n: u8) -> IdentityPublicKey {
    static KEYS: OnceLock<Vec<IdentityPublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..=99u8)
            .map(|n| omemo_crypto::hazmat::identity_from_seed(&[n; 32]).public_key())
            .collect()
    })[usize::from(n)]
}

fn dev(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

fn record(
    store: &mut Store,
    jid: &str,
    device: u32,
    k: &IdentityPublicKey,
    p: TrustPolicy,
) -> TrustLevel {
    store
        .record_identity_key(Namespace::Omemo2, jid, dev(device), k, p, NOW)
        .unwrap()
        .level
}

#[test]
fn trust_level_bits_match_qxmpp() {
    let expected = [
        (Undecided, 1),
        (AutomaticallyDistrusted, 2),
        (ManuallyDistrusted, 4),
        (AutomaticallyTrusted, 8),
        (ManuallyTrusted, 16),
        (Authenticated, 32),
    ];
    for (level, bits) in expected {
        assert_eq!(level.bits(), bits);
        assert_eq!(TrustLevel::from_bits(bits).unwrap(), level);
    }
    for bad in [0, 3, 64, -1, i64::MAX] {
        assert!(matches!(
            TrustLevel::from_bits(bad),
            Err(StoreError::UnknownTrustLevel(b)) if b == bad
        ));
    }
    let accepted: Vec<_> = TrustLevel::ALL
        .into_iter()
        .filter(|l| l.is_accepted())
        .collect();
    assert_eq!(
        accepted,
        [AutomaticallyTrusted, ManuallyTrusted, Authenticated]
    );
}

/// The level a new key gets, for each policy and each state of its owner's other key.
#[test]
fn new_key_level_by_policy_and_existing_keys() {
    // (policy, level of an existing key of the same JID (None: no key), expected level)
    let mut cases = Vec::new();
    for existing in [None].into_iter().chain(TrustLevel::ALL.map(Some)) {
        let toakafa = if existing == Some(Authenticated) {
            AutomaticallyDistrusted
        } else {
            AutomaticallyTrusted
        };
        cases.push((TrustPolicy::Toakafa, existing, toakafa));
        cases.push((TrustPolicy::Manual, existing, AutomaticallyDistrusted));
    }
    assert_eq!(cases.len(), 14);
    for (policy, existing, expected) in cases {
        let mut store = Store::open_in_memory().unwrap();
        if let Some(level) = existing {
            store.set_trust_level(BOB, &key(1), level, NOW).unwrap();
        }
        // An authenticated key of another JID never matters.
        store
            .set_trust_level(CAROL, &key(9), Authenticated, NOW)
            .unwrap();
        let recorded = store
            .record_identity_key(Namespace::Omemo2, BOB, dev(2), &key(2), policy, NOW)
            .unwrap();
        assert_eq!(recorded.level, expected, "{policy:?} with {existing:?}");
        let event = recorded.event.expect("a new key is an event");
        assert_eq!(
            (event.old_level, event.new_level, event.source),
            (None, expected, TrustSource::Policy)
        );
        assert_eq!(store.trust_level(BOB, &key(2)).unwrap(), Some(expected));
        // Recording the same key again changes nothing and records nothing.
        let again = store
            .record_identity_key(Namespace::Omemo2, BOB, dev(2), &key(2), policy, NOW + 1)
            .unwrap();
        assert_eq!((again.level, again.event), (expected, None));
    }
}

/// Every manual transition from every level to every level, and what it does to another
/// key of the same JID at every level.
#[test]
fn every_manual_transition() {
    for from in TrustLevel::ALL {
        for to in TrustLevel::ALL {
            for other in TrustLevel::ALL {
                let mut store = Store::open_in_memory().unwrap();
                // Authenticate first, so that setting up does not demote the other key.
                let mut setup = [(1, from), (2, other)];
                setup.sort_by_key(|&(_, level)| level != Authenticated);
                let mut last_id = 0;
                for (n, level) in setup {
                    let events = store.set_trust_level(BOB, &key(n), level, NOW).unwrap();
                    last_id = events.last().map_or(last_id, |e| e.id);
                }
                assert_eq!(store.trust_level(BOB, &key(1)).unwrap(), Some(from));
                assert_eq!(store.trust_level(BOB, &key(2)).unwrap(), Some(other));
                let carol = store
                    .set_trust_level(CAROL, &key(3), AutomaticallyTrusted, NOW)
                    .unwrap();
                last_id = carol.last().map_or(last_id, |e| e.id);
                let events = store.set_trust_level(BOB, &key(1), to, NOW + 10).unwrap();

                let authenticates = to == Authenticated && from != Authenticated;
                let demoted = authenticates && other == AutomaticallyTrusted;
                let expected_other = if demoted {
                    AutomaticallyDistrusted
                } else {
                    other
                };
                let case = format!("{from:?} -> {to:?} with other key {other:?}");

                assert_eq!(store.trust_level(BOB, &key(1)).unwrap(), Some(to), "{case}");
                assert_eq!(
                    store.trust_level(BOB, &key(2)).unwrap(),
                    Some(expected_other),
                    "{case}"
                );
                // Other JIDs are never touched.
                assert_eq!(
                    store.trust_level(CAROL, &key(3)).unwrap(),
                    Some(AutomaticallyTrusted)
                );

                let mut expected: Vec<(IdentityPublicKey, TrustLevel, TrustLevel, TrustSource)> =
                    Vec::new();
                if from != to {
                    expected.push((key(1), from, to, TrustSource::Manual));
                }
                if demoted {
                    expected.push((
                        key(2),
                        AutomaticallyTrusted,
                        AutomaticallyDistrusted,
                        TrustSource::Policy,
                    ));
                }
                let got: Vec<_> = events
                    .iter()
                    .map(|e| (e.identity_key, e.old_level.unwrap(), e.new_level, e.source))
                    .collect();
                assert_eq!(got, expected, "{case}");
                if demoted {
                    assert_eq!(events[1].via, Some((BOB.to_owned(), key(1))), "{case}");
                }
                // The returned events are exactly the ones logged. (Reading the log parses
                // keys, which is slow in debug builds, so a third of the cases check it.)
                if matches!(other, Undecided | AutomaticallyTrusted) {
                    let logged = store.trust_events_since(last_id, 10).unwrap();
                    assert_eq!(logged, events, "{case}");
                }
            }
        }
    }
}

#[test]
fn toakafa_lifecycle_new_keys_after_authentication_are_distrusted() {
    let mut store = Store::open_in_memory().unwrap();
    let p = TrustPolicy::Toakafa;
    assert_eq!(record(&mut store, BOB, 1, &key(1), p), AutomaticallyTrusted);
    assert_eq!(record(&mut store, BOB, 2, &key(2), p), AutomaticallyTrusted);
    let events = store
        .set_trust_level(BOB, &key(1), Authenticated, NOW)
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        store.trust_level(BOB, &key(2)).unwrap(),
        Some(AutomaticallyDistrusted)
    );
    assert_eq!(
        record(&mut store, BOB, 3, &key(3), p),
        AutomaticallyDistrusted
    );
    // The same key under a second device id keeps its level.
    assert_eq!(record(&mut store, BOB, 4, &key(1), p), Authenticated);
    assert_eq!(
        store.identity_keys(BOB).unwrap().len(),
        3,
        "three distinct keys"
    );
}

#[test]
fn changed_identity_key_is_an_error_not_a_replacement() {
    let mut store = Store::open_in_memory().unwrap();
    record(&mut store, BOB, 7, &key(1), TrustPolicy::Toakafa);
    let err = store
        .record_identity_key(
            Namespace::Omemo2,
            BOB,
            dev(7),
            &key(2),
            TrustPolicy::Toakafa,
            NOW,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::IdentityKeyChanged { ref jid, device_id } if jid == BOB && device_id == dev(7)
    ));
    let device = store
        .device(Namespace::Omemo2, BOB, dev(7))
        .unwrap()
        .unwrap();
    assert_eq!(device.identity_key, Some(key(1)));
    assert_eq!(store.trust_level(BOB, &key(2)).unwrap(), None);
    // The explicit way: forget the device, then record the new key.
    assert!(store.forget_device(Namespace::Omemo2, BOB, dev(7)).unwrap());
    record(&mut store, BOB, 7, &key(2), TrustPolicy::Toakafa);
    // The old key's trust stays (trust belongs to keys, not device ids).
    assert_eq!(
        store.trust_level(BOB, &key(1)).unwrap(),
        Some(AutomaticallyTrusted)
    );
    // One device speaks both versions with one identity (issue 13): the same id in the legacy
    // namespace must carry the same key; another key is flagged, the recorded one accepted.
    let legacy = store.record_identity_key(
        Namespace::Legacy,
        BOB,
        dev(7),
        &key(3),
        TrustPolicy::Toakafa,
        NOW,
    );
    assert!(matches!(
        legacy,
        Err(StoreError::IdentityKeyDiffersBetweenVersions { .. })
    ));
    let legacy = store.record_identity_key(
        Namespace::Legacy,
        BOB,
        dev(7),
        &key(2),
        TrustPolicy::Toakafa,
        NOW,
    );
    assert!(legacy.is_ok());
}

fn decisions(jid: &str, trust: &[u8], distrust: &[u8]) -> KeyOwnerDecisions {
    KeyOwnerDecisions {
        jid: jid.to_owned(),
        trust: trust.iter().map(|&n| key(n)).collect(),
        distrust: distrust.iter().map(|&n| key(n)).collect(),
    }
}

fn summary(
    events: &[TrustEvent],
) -> Vec<(String, u8, Option<TrustLevel>, TrustLevel, TrustSource)> {
    events
        .iter()
        .map(|e| {
            let n = (1..=99u8).find(|&n| key(n) == e.identity_key).unwrap();
            (e.jid.clone(), n, e.old_level, e.new_level, e.source)
        })
        .collect()
}

#[test]
fn atm_from_authenticated_own_device_applies_at_once() {
    let mut store = Store::open_in_memory().unwrap();
    // key 10: our other device, authenticated. Bob has keys 1 (auto-trusted) and 2.
    store
        .set_trust_level(ALICE, &key(10), Authenticated, NOW)
        .unwrap();
    record(&mut store, BOB, 1, &key(1), TrustPolicy::Toakafa);
    record(&mut store, BOB, 2, &key(2), TrustPolicy::Toakafa);
    record(&mut store, CAROL, 3, &key(3), TrustPolicy::Toakafa);

    let outcome = store
        .apply_trust_message(
            ALICE,
            ALICE,
            &key(10),
            &[decisions(BOB, &[2], &[]), decisions(CAROL, &[], &[3])],
            NOW + 5,
        )
        .unwrap();
    assert_eq!((outcome.stored, outcome.refused), (0, 0));
    assert_eq!(
        summary(&outcome.events),
        vec![
            (
                BOB.into(),
                2,
                Some(AutomaticallyTrusted),
                Authenticated,
                TrustSource::Atm
            ),
            // TOAKAFA: Bob now has an authenticated key, so key 1 loses its automatic trust.
            (
                BOB.into(),
                1,
                Some(AutomaticallyTrusted),
                AutomaticallyDistrusted,
                TrustSource::Policy
            ),
            (
                CAROL.into(),
                3,
                Some(AutomaticallyTrusted),
                ManuallyDistrusted,
                TrustSource::Atm
            ),
        ]
    );
    assert_eq!(outcome.events[0].via, Some((ALICE.to_owned(), key(10))));
    assert_eq!(store.pending_trust_decisions().unwrap(), 0);
}

#[test]
fn atm_contact_devices_may_only_vouch_for_their_own_keys() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .set_trust_level(BOB, &key(1), Authenticated, NOW)
        .unwrap();
    let outcome = store
        .apply_trust_message(
            ALICE,
            BOB,
            &key(1),
            &[
                decisions(BOB, &[2], &[3]),
                decisions(CAROL, &[4], &[5, 6]),
                decisions(ALICE, &[7], &[]),
            ],
            NOW,
        )
        .unwrap();
    assert_eq!(outcome.refused, 4);
    assert_eq!(outcome.events.len(), 2);
    assert_eq!(
        store.trust_level(BOB, &key(2)).unwrap(),
        Some(Authenticated)
    );
    assert_eq!(
        store.trust_level(BOB, &key(3)).unwrap(),
        Some(ManuallyDistrusted)
    );
    assert_eq!(store.trust_level(CAROL, &key(4)).unwrap(), None);
    assert_eq!(store.trust_level(ALICE, &key(7)).unwrap(), None);
    // Refused decisions are not kept for later either.
    assert_eq!(store.pending_trust_decisions().unwrap(), 0);
}

#[test]
fn atm_decisions_of_unauthenticated_sender_wait_until_it_is_authenticated() {
    let mut store = Store::open_in_memory().unwrap();
    // Our new device (key 10) is only automatically trusted.
    assert_eq!(
        record(&mut store, ALICE, 10, &key(10), TrustPolicy::Toakafa),
        AutomaticallyTrusted
    );
    record(&mut store, BOB, 1, &key(1), TrustPolicy::Toakafa);
    let outcome = store
        .apply_trust_message(
            ALICE,
            ALICE,
            &key(10),
            &[decisions(BOB, &[1, 2], &[3])],
            NOW,
        )
        .unwrap();
    assert_eq!((outcome.stored, outcome.events.len()), (3, 0));
    assert_eq!(store.pending_trust_decisions().unwrap(), 3);
    assert_eq!(
        store.trust_level(BOB, &key(1)).unwrap(),
        Some(AutomaticallyTrusted)
    );

    // A later message from the same sender replaces its decision about key 2.
    store
        .apply_trust_message(
            ALICE,
            ALICE,
            &key(10),
            &[decisions(BOB, &[], &[2])],
            NOW + 1,
        )
        .unwrap();
    assert_eq!(store.pending_trust_decisions().unwrap(), 3);

    // The user authenticates our other device: its decisions apply in the same transaction.
    let events = store
        .set_trust_level(ALICE, &key(10), Authenticated, NOW + 60)
        .unwrap();
    assert_eq!(
        summary(&events),
        vec![
            (
                ALICE.into(),
                10,
                Some(AutomaticallyTrusted),
                Authenticated,
                TrustSource::Manual
            ),
            (
                BOB.into(),
                1,
                Some(AutomaticallyTrusted),
                Authenticated,
                TrustSource::Atm
            ),
            (BOB.into(), 2, None, ManuallyDistrusted, TrustSource::Atm),
            (BOB.into(), 3, None, ManuallyDistrusted, TrustSource::Atm),
        ]
    );
    assert!(events[1..]
        .iter()
        .all(|e| e.via == Some((ALICE.to_owned(), key(10)))));
    assert_eq!(store.pending_trust_decisions().unwrap(), 0);

    // Keys decided before they were seen keep their level when their device shows up.
    assert_eq!(
        record(&mut store, BOB, 2, &key(2), TrustPolicy::Toakafa),
        ManuallyDistrusted
    );
    // Bob has an authenticated key now, so a brand-new key is distrusted.
    assert_eq!(
        record(&mut store, BOB, 4, &key(4), TrustPolicy::Toakafa),
        AutomaticallyDistrusted
    );
}

#[test]
fn atm_pending_decisions_apply_transitively() {
    let mut store = Store::open_in_memory().unwrap();
    // Device 11 (unauthenticated) vouches for device 12; device 12 (unauthenticated) vouches
    // for Bob's key 1 and our device 13; device 13 distrusts Bob's key 2.
    store
        .apply_trust_message(ALICE, ALICE, &key(11), &[decisions(ALICE, &[12], &[])], NOW)
        .unwrap();
    store
        .apply_trust_message(
            ALICE,
            ALICE,
            &key(12),
            &[decisions(BOB, &[1], &[]), decisions(ALICE, &[13], &[])],
            NOW,
        )
        .unwrap();
    store
        .apply_trust_message(ALICE, ALICE, &key(13), &[decisions(BOB, &[], &[2])], NOW)
        .unwrap();
    record(&mut store, BOB, 2, &key(2), TrustPolicy::Toakafa);
    assert_eq!(store.pending_trust_decisions().unwrap(), 4);

    let events = store
        .set_trust_level(ALICE, &key(11), Authenticated, NOW + 9)
        .unwrap();
    let got = summary(&events);
    assert_eq!(
        got[0],
        (ALICE.into(), 11, None, Authenticated, TrustSource::Manual)
    );
    for expected in [
        (ALICE.to_owned(), 12, None, Authenticated, TrustSource::Atm),
        (ALICE.to_owned(), 13, None, Authenticated, TrustSource::Atm),
        (BOB.to_owned(), 1, None, Authenticated, TrustSource::Atm),
        // Bob's key 1 got authenticated, so TOAKAFA demotes key 2 first; then device 13's
        // distrust decision applies.
        (
            BOB.to_owned(),
            2,
            Some(AutomaticallyTrusted),
            AutomaticallyDistrusted,
            TrustSource::Policy,
        ),
        (
            BOB.to_owned(),
            2,
            Some(AutomaticallyDistrusted),
            ManuallyDistrusted,
            TrustSource::Atm,
        ),
    ] {
        assert!(got.contains(&expected), "missing {expected:?} in {got:?}");
    }
    assert_eq!(got.len(), 6);
    assert_eq!(
        store.trust_level(BOB, &key(2)).unwrap(),
        Some(ManuallyDistrusted)
    );
    assert_eq!(store.pending_trust_decisions().unwrap(), 0);
}

#[test]
fn atm_authenticating_through_atm_releases_that_keys_pending_decisions() {
    let mut store = Store::open_in_memory().unwrap();
    // Bob's device key 1 sent decisions while unauthenticated.
    store
        .apply_trust_message(ALICE, BOB, &key(1), &[decisions(BOB, &[2], &[])], NOW)
        .unwrap();
    // Our authenticated device vouches for Bob's key 1 by ATM.
    store
        .set_trust_level(ALICE, &key(10), Authenticated, NOW)
        .unwrap();
    let outcome = store
        .apply_trust_message(
            ALICE,
            ALICE,
            &key(10),
            &[decisions(BOB, &[1], &[])],
            NOW + 1,
        )
        .unwrap();
    assert_eq!(
        summary(&outcome.events),
        vec![
            (BOB.into(), 1, None, Authenticated, TrustSource::Atm),
            (BOB.into(), 2, None, Authenticated, TrustSource::Atm),
        ]
    );
    assert_eq!(outcome.events[1].via, Some((BOB.to_owned(), key(1))));
}

#[test]
fn key_in_trust_and_distrust_ends_distrusted() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .set_trust_level(ALICE, &key(10), Authenticated, NOW)
        .unwrap();
    store
        .apply_trust_message(ALICE, ALICE, &key(10), &[decisions(BOB, &[1], &[1])], NOW)
        .unwrap();
    assert_eq!(
        store.trust_level(BOB, &key(1)).unwrap(),
        Some(ManuallyDistrusted)
    );
    // The same for stored decisions.
    store
        .apply_trust_message(ALICE, ALICE, &key(11), &[decisions(BOB, &[2], &[2])], NOW)
        .unwrap();
    store
        .set_trust_level(ALICE, &key(11), Authenticated, NOW)
        .unwrap();
    assert_eq!(
        store.trust_level(BOB, &key(2)).unwrap(),
        Some(ManuallyDistrusted)
    );
}

#[test]
fn trust_events_since_pages_through_the_log() {
    let mut store = Store::open_in_memory().unwrap();
    for n in 1..=5 {
        record(&mut store, BOB, u32::from(n), &key(n), TrustPolicy::Manual);
    }
    let first = store.trust_events_since(0, 3).unwrap();
    assert_eq!(first.len(), 3);
    let rest = store.trust_events_since(first[2].id, 10).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest[0].id > first[2].id);
    assert_eq!(rest[1].at, NOW);
}

#[test]
fn pending_decisions_are_bounded_per_sender_oldest_dropped() {
    let max = atm_trust::MAX_PENDING_PER_SENDER;
    let mut store = Store::open_in_memory().unwrap();
    record(&mut store, BOB, 1, &key(1), TrustPolicy::Toakafa);
    let many: Vec<IdentityPublicKey> = (0..max + 44)
        .map(|n| {
            let mut seed = [0xa5; 32];
            seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
            omemo_crypto::hazmat::identity_from_seed(&seed).public_key()
        })
        .collect();
    let (older, newer) = many.split_at(200);
    let message = |keys: &[IdentityPublicKey]| KeyOwnerDecisions {
        jid: BOB.to_owned(),
        trust: keys.to_vec(),
        distrust: Vec::new(),
    };
    let outcome = store
        .apply_trust_message(ALICE, BOB, &key(1), &[message(older)], NOW)
        .unwrap();
    assert_eq!((outcome.stored, outcome.dropped), (200, 0));
    let outcome = store
        .apply_trust_message(ALICE, BOB, &key(1), &[message(newer)], NOW + 1)
        .unwrap();
    assert_eq!((outcome.stored, outcome.dropped), (newer.len(), 44));
    assert_eq!(store.pending_trust_decisions().unwrap(), max);
    // Another sender has its own bound.
    record(&mut store, CAROL, 1, &key(2), TrustPolicy::Toakafa);
    let outcome = store
        .apply_trust_message(
            ALICE,
            CAROL,
            &key(2),
            &[decisions(CAROL, &[3], &[])],
            NOW + 2,
        )
        .unwrap();
    assert_eq!((outcome.stored, outcome.dropped), (1, 0));
    assert_eq!(store.pending_trust_decisions().unwrap(), max + 1);

    // Authenticating bob's key applies what was kept: all of the newer message, the rest of
    // the older one.
    store
        .set_trust_level(BOB, &key(1), Authenticated, NOW + 3)
        .unwrap();
    let authenticated = |keys: &[IdentityPublicKey]| {
        keys.iter()
            .filter(|k| store.trust_level(BOB, k).unwrap() == Some(Authenticated))
            .count()
    };
    assert_eq!(authenticated(newer), newer.len());
    assert_eq!(authenticated(older), 200 - 44);
    assert_eq!(store.pending_trust_decisions().unwrap(), 1);
}
