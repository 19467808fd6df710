//! Our identity key: new ones have Ed25519 sign bit 0, old ones are kept, and a reset starts
//! over with a new identity and device id.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use atm_trust::{DecryptionCommit, ListedDevice, Namespace, Store, StoreError};
use omemo_crypto::{DeviceId, IdentityKeyPair};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const NOW: u64 = 1_700_000_000;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const NS: Namespace = Namespace::Omemo2;

/// A seed whose Ed25519 public key has sign bit 1, as about half of the identities created
/// before sign bit 0 was required.
fn sign_bit_1_seed() -> [u8; 32] {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    loop {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        if omemo_crypto::hazmat::identity_from_seed(&seed)
            .public_key()
            .ed25519_sign_bit()
        {
            return seed;
        }
    }
}

#[test]
fn new_own_devices_get_identities_with_sign_bit_0() {
    for n in 0..64 {
        let mut store = Store::open_in_memory().unwrap();
        let device = store
            .load_or_create_own_device(ALICE, None, &mut ChaCha20Rng::seed_from_u64(n), NOW)
            .unwrap();
        assert!(
            !device.identity().public_key().ed25519_sign_bit(),
            "seed {n}"
        );
    }
}

#[test]
fn an_old_identity_with_sign_bit_1_is_kept_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    let device_id = {
        let mut store = Store::open(&path).unwrap();
        let device = store
            .load_or_create_own_device(ALICE, None, &mut ChaCha20Rng::seed_from_u64(1), NOW)
            .unwrap();
        device.device_id()
    };
    // Turn the database into one made before identities had to have sign bit 0.
    let seed = sign_bit_1_seed();
    let old_key = omemo_crypto::hazmat::identity_from_seed(&seed).public_key();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE own_device SET identity_seed = ?1 WHERE id = 1",
            [&seed[..]],
        )
        .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    let device = store
        .load_or_create_own_device(ALICE, Some("desk"), &mut ChaCha20Rng::seed_from_u64(2), NOW)
        .unwrap();
    assert_eq!(device.identity().public_key(), old_key);
    assert!(device.identity().public_key().ed25519_sign_bit());
    assert_eq!(device.device_id(), device_id);
    assert!(store.retired_own_devices().unwrap().is_empty());
}

#[test]
fn a_reset_gives_a_new_identity_and_device_and_drops_what_belonged_to_the_old_one() {
    let mut store = Store::open_in_memory().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    assert_eq!(store.reset_own_device(ALICE, &mut rng, NOW).unwrap(), None);
    let old = store
        .load_or_create_own_device(ALICE, Some("laptop"), &mut rng, NOW)
        .unwrap();
    store.ensure_pre_keys(10, &mut rng, NOW).unwrap();
    // Our own device as the server lists it, bob's device, and a session with it.
    store
        .update_device_list(
            NS,
            ALICE,
            &[ListedDevice {
                device_id: old.device_id(),
                label: None,
                label_verified: false,
            }],
            NOW,
        )
        .unwrap();
    let bob_device = DeviceId::new(9).unwrap();
    let bob_key = IdentityKeyPair::generate(&mut rng).public_key();
    store
        .commit_decryption(&DecryptionCommit {
            namespace: NS,
            jid: BOB,
            device_id: bob_device,
            session_state: b"session with the old identity",
            previous_state: None,
            used_pre_key: None,
            now: NOW,
        })
        .unwrap();
    store
        .record_identity_key(
            NS,
            BOB,
            bob_device,
            &bob_key,
            atm_trust::TrustPolicy::Toakafa,
            NOW,
        )
        .unwrap();
    assert!(store.load_session(NS, BOB, bob_device).unwrap().is_some());

    // Another account's database is refused and left as it was.
    assert!(matches!(
        store.reset_own_device(BOB, &mut rng, NOW),
        Err(StoreError::AccountMismatch)
    ));
    assert!(store.load_session(NS, BOB, bob_device).unwrap().is_some());

    let retired = store.reset_own_device(ALICE, &mut rng, NOW + 10).unwrap();
    assert_eq!(retired, Some(old.device_id()));
    let new = store.own_device().unwrap().unwrap();
    assert_ne!(new.device_id(), old.device_id());
    assert_ne!(new.identity().public_key(), old.identity().public_key());
    assert!(!new.identity().public_key().ed25519_sign_bit());
    assert_eq!(new.label(), Some("laptop"));
    assert_eq!(store.retired_own_devices().unwrap(), vec![old.device_id()]);
    // The old sessions and pre-keys are gone; a signed pre-key of the new identity is there.
    assert!(store.load_session(NS, BOB, bob_device).unwrap().is_none());
    assert!(store.unused_pre_keys().unwrap().is_empty());
    let spk = store.current_signed_pre_key().unwrap().unwrap();
    assert!(new
        .identity()
        .public_key()
        .verify(spk.public_key().as_bytes(), &spk.signature()));
    // Bob's device and key stay known; our old device no longer counts as listed.
    let bob = store.device(NS, BOB, bob_device).unwrap().unwrap();
    assert_eq!(bob.identity_key, Some(bob_key));
    assert!(
        !store
            .device(NS, ALICE, old.device_id())
            .unwrap()
            .unwrap()
            .active
    );
    // Reopening keeps the new identity; a second reset retires the second id too.
    let again = store
        .load_or_create_own_device(ALICE, None, &mut rng, NOW + 20)
        .unwrap();
    assert_eq!(again.identity().public_key(), new.identity().public_key());
    let second = store.reset_own_device(ALICE, &mut rng, NOW + 30).unwrap();
    assert_eq!(second, Some(new.device_id()));
    let mut retired = vec![old.device_id(), new.device_id()];
    retired.sort();
    assert_eq!(store.retired_own_devices().unwrap(), retired);
}
