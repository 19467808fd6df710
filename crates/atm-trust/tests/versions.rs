//! One device, two OMEMO versions: per-namespace X3DH state (signed pre-keys, pre-keys and
//! their refill), per-namespace sessions and device lists, one identity and shared trust,
//! and the schema 9 migration of an existing OMEMO 2 database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use atm_trust::{
    DecryptionCommit, DeviceVersions, ListedDevice, Namespace, SessionUpdate, Store, StoreError,
    TrustLevel, TrustPolicy,
};
use omemo_crypto::{legacy, Bundle, DeviceId, IdentityKeyPair, PreKeyId, ProtocolVersion};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_700_000_000;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const O2: Namespace = Namespace::Omemo2;
const LEGACY: Namespace = Namespace::Legacy;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(13)
}

fn dev(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

fn listed(ids: &[u32]) -> Vec<ListedDevice> {
    ids.iter()
        .map(|&id| ListedDevice {
            device_id: dev(id),
            label: None,
            label_verified: false,
        })
        .collect()
}

fn ids_of(keys: &[omemo_crypto::PreKey]) -> Vec<PreKeyId> {
    keys.iter().map(omemo_crypto::PreKey::id).collect()
}

fn decryption<'a>(
    namespace: Namespace,
    device: u32,
    state: &'a [u8],
    pre_key: Option<PreKeyId>,
) -> DecryptionCommit<'a> {
    DecryptionCommit {
        namespace,
        jid: BOB,
        device_id: dev(device),
        session_state: state,
        previous_state: None,
        used_pre_key: pre_key,
        now: NOW,
    }
}

/// A store with our device and 100 pre-keys plus a signed pre-key in each namespace.
fn dual_store() -> (Store, IdentityKeyPair) {
    let mut rng = rng();
    let mut store = Store::open_in_memory().unwrap();
    let own = store
        .load_or_create_own_device(ALICE, Some("bot"), &mut rng, NOW)
        .unwrap();
    store.ensure_pre_keys(100, &mut rng, NOW).unwrap();
    store.ensure_signed_pre_key(LEGACY, &mut rng, NOW).unwrap();
    store
        .ensure_pre_keys_for(LEGACY, 100, &mut rng, NOW)
        .unwrap();
    let identity = omemo_crypto::hazmat::identity_from_seed(&omemo_crypto::hazmat::identity_seed(
        own.identity(),
    ));
    (store, identity)
}

#[test]
fn namespaces_and_protocol_versions_convert_both_ways() {
    for version in ProtocolVersion::ALL {
        let namespace = Namespace::from(version);
        assert_eq!(namespace.version(), version);
        assert_eq!(namespace.as_str(), version.namespace());
        assert_eq!(ProtocolVersion::from(namespace), version);
    }
    assert_eq!(Namespace::ALL, [O2, LEGACY]);
}

#[test]
fn each_version_has_its_own_signed_pre_key_signed_its_own_way() {
    let (mut store, identity) = dual_store();
    let o2_spk = store.current_signed_pre_key().unwrap().unwrap();
    let legacy_spk = store.current_signed_pre_key_for(LEGACY).unwrap().unwrap();
    assert_ne!(
        o2_spk.id(),
        legacy_spk.id(),
        "ids are unique across namespaces"
    );
    assert_eq!(
        store
            .current_signed_pre_key_for(O2)
            .unwrap()
            .map(|k| k.id()),
        Some(o2_spk.id())
    );
    // Asking again returns the same key instead of making another.
    let again = store
        .ensure_signed_pre_key(LEGACY, &mut rng(), NOW)
        .unwrap();
    assert_eq!(again.id(), legacy_spk.id());

    let o2_keys = store.unused_pre_keys().unwrap();
    let legacy_keys = store.unused_pre_keys_for(LEGACY).unwrap();
    // Each version's bundle verifies with its own signed pre-key, and not with the other's.
    Bundle::from_own_keys(&identity, &o2_spk, &o2_keys).unwrap();
    legacy::Bundle::from_own_keys(&identity, &legacy_spk, &legacy_keys).unwrap();
    assert!(Bundle::from_own_keys(&identity, &legacy_spk, &o2_keys).is_err());
    assert!(legacy::Bundle::from_own_keys(&identity, &o2_spk, &legacy_keys).is_err());

    // Lookups by id stay inside their namespace.
    assert!(store
        .signed_pre_key_for(LEGACY, legacy_spk.id())
        .unwrap()
        .is_some());
    assert!(store.signed_pre_key(legacy_spk.id()).unwrap().is_none());
    assert!(store
        .signed_pre_key_for(LEGACY, o2_spk.id())
        .unwrap()
        .is_none());

    // Rotating the legacy key leaves the OMEMO 2 key alone; the old legacy key is kept for
    // late key exchanges until pruned, in its namespace only.
    let rotated = store
        .rotate_signed_pre_key_for(LEGACY, &mut rng(), NOW + 100)
        .unwrap();
    legacy::Bundle::from_own_keys(&identity, &rotated, &legacy_keys).unwrap();
    assert_eq!(
        store.current_signed_pre_key().unwrap().unwrap().id(),
        o2_spk.id()
    );
    assert_eq!(
        store
            .current_signed_pre_key_for(LEGACY)
            .unwrap()
            .unwrap()
            .id(),
        rotated.id()
    );
    assert!(store
        .signed_pre_key_for(LEGACY, legacy_spk.id())
        .unwrap()
        .is_some());
    store.rotate_signed_pre_key(&mut rng(), NOW + 100).unwrap();
    assert_eq!(
        store
            .prune_signed_pre_keys_for(LEGACY, 10, NOW + 200)
            .unwrap(),
        1
    );
    assert!(store
        .signed_pre_key_for(LEGACY, legacy_spk.id())
        .unwrap()
        .is_none());
    assert!(store.signed_pre_key(o2_spk.id()).unwrap().is_some());
    assert_eq!(store.prune_signed_pre_keys(10, NOW + 200).unwrap(), 1);
    assert!(store.signed_pre_key(o2_spk.id()).unwrap().is_none());
}

#[test]
fn a_signed_pre_key_needs_the_own_device() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(matches!(
        store.ensure_signed_pre_key(LEGACY, &mut rng(), NOW),
        Err(StoreError::NoOwnDevice)
    ));
    assert!(matches!(
        store.ensure_pre_keys_for(LEGACY, 10, &mut rng(), NOW),
        Err(StoreError::NoOwnDevice)
    ));
}

#[test]
fn pre_keys_are_per_namespace_and_refilled_separately() {
    let (mut store, _) = dual_store();
    let o2 = ids_of(&store.unused_pre_keys().unwrap());
    let legacy_ids = ids_of(&store.unused_pre_keys_for(LEGACY).unwrap());
    assert_eq!((o2.len(), legacy_ids.len()), (100, 100));
    assert!(o2.iter().all(|id| !legacy_ids.contains(id)), "one id space");
    // Topping up one namespace does not count the other's keys.
    assert!(store
        .ensure_pre_keys_for(LEGACY, 100, &mut rng(), NOW)
        .unwrap()
        .is_empty());
    assert!(store.pre_key_for(LEGACY, legacy_ids[0]).unwrap().is_some());
    assert!(store.pre_key(legacy_ids[0]).unwrap().is_none());
    assert!(store.pre_key_for(LEGACY, o2[0]).unwrap().is_none());

    // Publishing is tracked per bundle.
    assert!(store.bundle_needs_publishing().unwrap());
    assert!(store.bundle_needs_publishing_for(LEGACY).unwrap());
    store
        .mark_bundle_published_for(LEGACY, &legacy_ids)
        .unwrap();
    assert!(!store.bundle_needs_publishing_for(LEGACY).unwrap());
    assert!(store.bundle_needs_publishing().unwrap());
    store.mark_bundle_published(&o2).unwrap();
    assert!(!store.bundle_needs_publishing().unwrap());
    assert!(
        !store.bundle_needs_publishing_for(LEGACY).unwrap(),
        "kept its marks"
    );

    // A legacy key exchange consumes a legacy pre-key: only the legacy bundle is stale.
    store
        .commit_decryption(&decryption(LEGACY, 7, b"legacy 1", Some(legacy_ids[0])))
        .unwrap();
    assert!(store.bundle_needs_publishing_for(LEGACY).unwrap());
    assert!(!store.bundle_needs_publishing().unwrap());
    assert_eq!(store.unused_pre_keys_for(LEGACY).unwrap().len(), 99);
    assert_eq!(store.unused_pre_keys().unwrap().len(), 100);
    let refill = store
        .ensure_pre_keys_for(LEGACY, 100, &mut rng(), NOW + 1)
        .unwrap();
    assert_eq!(refill.len(), 1);
    assert!(!o2.contains(&refill[0]) && !legacy_ids.contains(&refill[0]));
    assert!(store
        .ensure_pre_keys(100, &mut rng(), NOW + 1)
        .unwrap()
        .is_empty());

    // Used keys are deleted after their grace period, per namespace.
    assert_eq!(store.remove_used_pre_keys(0, NOW + 10).unwrap(), 0);
    assert_eq!(
        store.remove_used_pre_keys_for(LEGACY, 0, NOW + 10).unwrap(),
        1
    );
    assert!(store.pre_key_for(LEGACY, legacy_ids[0]).unwrap().is_none());

    store
        .mark_pre_key_used_for(LEGACY, legacy_ids[1], NOW)
        .unwrap();
    assert!(matches!(
        store.mark_pre_key_used_for(O2, legacy_ids[2], NOW),
        Err(StoreError::UnknownPreKey(id)) if id == legacy_ids[2]
    ));
}

#[test]
fn a_key_exchange_naming_the_other_versions_pre_key_changes_nothing() {
    let (mut store, _) = dual_store();
    let o2 = ids_of(&store.unused_pre_keys().unwrap());
    // A legacy message claiming an OMEMO 2 pre-key is refused whole: no session, no device
    // row, no key marked used.
    let err = store
        .commit_decryption(&decryption(LEGACY, 7, b"legacy", Some(o2[0])))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownPreKey(id) if id == o2[0]));
    assert!(store.load_session(LEGACY, BOB, dev(7)).unwrap().is_none());
    assert!(store.device(LEGACY, BOB, dev(7)).unwrap().is_none());
    assert_eq!(store.unused_pre_keys().unwrap().len(), 100);
    // Positive control: the same commit in OMEMO 2 goes through.
    store
        .commit_decryption(&decryption(O2, 7, b"omemo 2", Some(o2[0])))
        .unwrap();
    assert_eq!(store.unused_pre_keys().unwrap().len(), 99);
    assert!(store.load_session(O2, BOB, dev(7)).unwrap().is_some());
}

#[test]
fn one_device_can_have_a_session_in_each_version() {
    let (mut store, _) = dual_store();
    store
        .update_device_list(O2, BOB, &listed(&[7]), NOW)
        .unwrap();
    store
        .update_device_list(LEGACY, BOB, &listed(&[7]), NOW)
        .unwrap();
    store
        .commit_encryption(
            O2,
            &[SessionUpdate {
                jid: BOB,
                device_id: dev(7),
                session_state: b"o2 state",
            }],
            NOW,
        )
        .unwrap();
    let counters = store
        .commit_decryption(&decryption(LEGACY, 7, b"legacy state", None))
        .unwrap();
    // Counters (heartbeats, stale devices) are per version: the OMEMO 2 send did not count
    // on the legacy row.
    assert_eq!(counters.received_without_reply, 1);
    assert_eq!(counters.sent_without_reply, 0);
    let o2_row = store.device(O2, BOB, dev(7)).unwrap().unwrap();
    assert_eq!(
        (o2_row.sent_without_reply, o2_row.received_without_reply),
        (1, 0)
    );
    assert_eq!(
        store
            .load_session(O2, BOB, dev(7))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"o2 state"
    );
    assert_eq!(
        store
            .load_session(LEGACY, BOB, dev(7))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"legacy state"
    );
    assert_eq!(
        store.device_versions(BOB).unwrap(),
        vec![DeviceVersions {
            device_id: dev(7),
            listed_in: vec![O2, LEGACY],
            known_in: vec![O2, LEGACY],
            sessions_in: vec![O2, LEGACY],
            identity_key: None,
        }]
    );
    // Resetting one version's session keeps the other.
    assert!(store.delete_session(LEGACY, BOB, dev(7)).unwrap());
    assert!(store.load_session(O2, BOB, dev(7)).unwrap().is_some());
    assert_eq!(store.device_versions(BOB).unwrap()[0].sessions_in, vec![O2]);
}

#[test]
fn each_device_is_encrypted_for_once_in_its_preferred_version() {
    let (mut store, _) = dual_store();
    // Device 1 speaks OMEMO 2 only, 2 both, 3 legacy only.
    store
        .update_device_list(O2, BOB, &listed(&[1, 2]), NOW)
        .unwrap();
    store
        .update_device_list(LEGACY, BOB, &listed(&[2, 3]), NOW)
        .unwrap();
    assert_eq!(
        store.recipients_by_version(BOB, &Namespace::ALL).unwrap(),
        vec![(dev(1), O2), (dev(2), O2), (dev(3), LEGACY)]
    );
    assert_eq!(
        store.recipients_by_version(BOB, &[LEGACY, O2]).unwrap(),
        vec![(dev(1), O2), (dev(2), LEGACY), (dev(3), LEGACY)]
    );
    assert_eq!(
        store.recipients_by_version(BOB, &[LEGACY]).unwrap(),
        vec![(dev(2), LEGACY), (dev(3), LEGACY)]
    );
    // Device 2 leaves the OMEMO 2 list: it stays reachable through legacy.
    store
        .update_device_list(O2, BOB, &listed(&[1]), NOW + 1)
        .unwrap();
    assert_eq!(
        store.recipients_by_version(BOB, &Namespace::ALL).unwrap(),
        vec![(dev(1), O2), (dev(2), LEGACY), (dev(3), LEGACY)]
    );
    let versions = store.device_versions(BOB).unwrap();
    assert_eq!(versions[1].listed_in, vec![LEGACY]);
    assert_eq!(versions[1].known_in, vec![O2, LEGACY]);
    // A device that left every list is known but gets nothing.
    store
        .update_device_list(LEGACY, BOB, &listed(&[2]), NOW + 2)
        .unwrap();
    assert_eq!(
        store.recipients_by_version(BOB, &Namespace::ALL).unwrap(),
        vec![(dev(1), O2), (dev(2), LEGACY)]
    );
    assert!(store.device_versions(BOB).unwrap()[2].listed_in.is_empty());
    assert!(store
        .recipients_by_version("nobody@example.org", &Namespace::ALL)
        .unwrap()
        .is_empty());
}

#[test]
fn trust_is_per_identity_key_whichever_version_recorded_it() {
    let (mut store, _) = dual_store();
    let bob_key = omemo_crypto::hazmat::identity_from_seed(&[7; 32]).public_key();
    let other_key = omemo_crypto::hazmat::identity_from_seed(&[8; 32]).public_key();

    let first = store
        .record_identity_key(O2, BOB, dev(2), &bob_key, TrustPolicy::Toakafa, NOW)
        .unwrap();
    assert_eq!(first.level, TrustLevel::AutomaticallyTrusted);
    assert!(first.event.is_some());
    // The same key seen through legacy keeps its level: no second decision, no event.
    let second = store
        .record_identity_key(LEGACY, BOB, dev(2), &bob_key, TrustPolicy::Toakafa, NOW + 1)
        .unwrap();
    assert_eq!(second.level, TrustLevel::AutomaticallyTrusted);
    assert!(second.event.is_none());
    assert_eq!(store.trust_events(BOB).unwrap().len(), 1);
    assert_eq!(
        store.known_identity_key(BOB, dev(2)).unwrap(),
        Some(bob_key)
    );
    assert_eq!(
        store
            .device(LEGACY, BOB, dev(2))
            .unwrap()
            .unwrap()
            .identity_key,
        Some(bob_key)
    );

    // Authenticating once covers both versions (one key, one level).
    store
        .set_trust_level(BOB, &bob_key, TrustLevel::Authenticated, NOW + 2)
        .unwrap();
    assert_eq!(
        store.trust_level(BOB, &bob_key).unwrap(),
        Some(TrustLevel::Authenticated)
    );

    // The legacy Curve25519 form of the stored key matches; another key's does not.
    let known = store.known_identity_key(BOB, dev(2)).unwrap().unwrap();
    assert!(legacy::IdentityKey::from(bob_key).matches(&known));
    assert!(!legacy::IdentityKey::from(other_key).matches(&known));
}

#[test]
fn a_device_id_with_another_key_in_the_other_version_is_refused() {
    let (mut store, _) = dual_store();
    let bob_key = omemo_crypto::hazmat::identity_from_seed(&[7; 32]).public_key();
    let other_key = omemo_crypto::hazmat::identity_from_seed(&[8; 32]).public_key();
    store
        .update_device_list(LEGACY, BOB, &listed(&[2]), NOW)
        .unwrap();
    store
        .record_identity_key(O2, BOB, dev(2), &bob_key, TrustPolicy::Toakafa, NOW)
        .unwrap();
    let err = store
        .record_identity_key(LEGACY, BOB, dev(2), &other_key, TrustPolicy::Toakafa, NOW)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::IdentityKeyDiffersBetweenVersions { jid, device_id }
            if jid == BOB && *device_id == dev(2)),
        "{err:?}"
    );
    // Nothing changed: no key on the legacy row, no trust for the other key, no event.
    assert_eq!(
        store
            .device(LEGACY, BOB, dev(2))
            .unwrap()
            .unwrap()
            .identity_key,
        None
    );
    assert_eq!(store.trust_level(BOB, &other_key).unwrap(), None);
    assert_eq!(store.trust_events(BOB).unwrap().len(), 1);
    assert_eq!(
        store.known_identity_key(BOB, dev(2)).unwrap(),
        Some(bob_key)
    );

    // Another device id may carry the other key (positive control for the check above).
    store
        .record_identity_key(LEGACY, BOB, dev(3), &other_key, TrustPolicy::Toakafa, NOW)
        .unwrap();
    // Forgetting the OMEMO 2 device lets the legacy one take the new key.
    store.forget_device(O2, BOB, dev(2)).unwrap();
    store
        .record_identity_key(LEGACY, BOB, dev(2), &other_key, TrustPolicy::Toakafa, NOW)
        .unwrap();
    assert_eq!(
        store.known_identity_key(BOB, dev(2)).unwrap(),
        Some(other_key)
    );
}

#[test]
fn dual_stack_state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dual.sqlite");
    let mut rng = rng();
    let (device_id, legacy_spk, legacy_keys) = {
        let mut store = Store::open(&path).unwrap();
        let own = store
            .load_or_create_own_device(ALICE, None, &mut rng, NOW)
            .unwrap();
        store.ensure_pre_keys(100, &mut rng, NOW).unwrap();
        let spk = store.ensure_signed_pre_key(LEGACY, &mut rng, NOW).unwrap();
        let keys = store
            .ensure_pre_keys_for(LEGACY, 100, &mut rng, NOW)
            .unwrap();
        store
            .commit_decryption(&decryption(LEGACY, 7, b"legacy state", Some(keys[0])))
            .unwrap();
        (own.device_id(), spk.id(), keys)
    };
    let mut store = Store::open(&path).unwrap();
    let own = store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW + 1)
        .unwrap();
    assert_eq!(
        own.device_id(),
        device_id,
        "one device id for both versions"
    );
    assert_eq!(
        store
            .current_signed_pre_key_for(LEGACY)
            .unwrap()
            .unwrap()
            .id(),
        legacy_spk
    );
    assert_eq!(store.unused_pre_keys_for(LEGACY).unwrap().len(), 99);
    assert_eq!(store.unused_pre_keys().unwrap().len(), 100);
    assert!(store.pre_key_for(LEGACY, legacy_keys[0]).unwrap().is_some());
    assert_eq!(
        store
            .load_session(LEGACY, BOB, dev(7))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"legacy state"
    );
    assert!(store.load_session(O2, BOB, dev(7)).unwrap().is_none());
}

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// A database written before schema 9 (OMEMO 2 only) keeps its keys as OMEMO 2 keys and
/// gets legacy keys beside them.
#[test]
fn an_omemo2_database_from_schema_5_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let mut rng = rng();
    let (spk_id, pre_key_ids) = {
        // Build the schema as version 5 left it, with keys written through a schema-9 store
        // into a scratch file and copied over row by row.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(5))
            .set_grouped(true)
            .run(&mut conn)
            .unwrap();
        let has_namespace: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('pre_keys') WHERE name = 'namespace')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(!has_namespace, "the scratch database must be at schema 5");
        let scratch_path = dir.path().join("scratch.sqlite");
        let mut scratch = Store::open(&scratch_path).unwrap();
        scratch
            .load_or_create_own_device(ALICE, None, &mut rng, NOW)
            .unwrap();
        scratch.ensure_pre_keys(3, &mut rng, NOW).unwrap();
        drop(scratch);
        conn.execute(
            "ATTACH DATABASE ?1 AS scratch",
            [scratch_path.to_str().unwrap()],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO own_device (id, jid, device_id, identity_seed, label, created_at,
                                     next_pre_key_id, next_signed_pre_key_id)
                 SELECT id, jid, device_id, identity_seed, label, created_at,
                        next_pre_key_id, next_signed_pre_key_id FROM scratch.own_device;
             INSERT INTO signed_pre_keys (id, secret, signature, created_at, is_current, retired_at)
                 SELECT id, secret, signature, created_at, is_current, retired_at
                 FROM scratch.signed_pre_keys;
             INSERT INTO pre_keys (id, secret, created_at, published, used_at)
                 SELECT id, secret, created_at, published, used_at FROM scratch.pre_keys;
             DETACH DATABASE scratch;",
        )
        .unwrap();
        let spk: i64 = conn
            .query_row("SELECT id FROM signed_pre_keys", [], |r| r.get(0))
            .unwrap();
        let mut stmt = conn.prepare("SELECT id FROM pre_keys ORDER BY id").unwrap();
        let ids: Vec<i64> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (spk, ids)
    };
    let mut store = Store::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        Store::supported_schema_version()
    );
    assert_eq!(
        i64::from(store.current_signed_pre_key().unwrap().unwrap().id().get()),
        spk_id
    );
    let ids: Vec<i64> = store
        .unused_pre_keys()
        .unwrap()
        .iter()
        .map(|k| i64::from(k.id().get()))
        .collect();
    assert_eq!(ids, pre_key_ids);
    assert!(store.current_signed_pre_key_for(LEGACY).unwrap().is_none());
    assert!(store.unused_pre_keys_for(LEGACY).unwrap().is_empty());
    // Legacy keys are added beside them with fresh ids.
    let legacy_spk = store.ensure_signed_pre_key(LEGACY, &mut rng, NOW).unwrap();
    assert_ne!(i64::from(legacy_spk.id().get()), spk_id);
    let legacy_ids = store.ensure_pre_keys_for(LEGACY, 3, &mut rng, NOW).unwrap();
    assert!(legacy_ids
        .iter()
        .all(|id| !pre_key_ids.contains(&i64::from(id.get()))));
    assert_eq!(store.unused_pre_keys().unwrap().len(), 3);
}
