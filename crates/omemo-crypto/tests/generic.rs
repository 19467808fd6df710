//! The session API used generically over the protocol version, the way an engine that does
//! not branch on the namespace uses it: one function, run for OMEMO 2 and for legacy.

// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

use omemo_crypto::{
    GenericSession, IdentityKeyPair, Legacy, Omemo2, PreKey, PreKeyId, ProtocolVersion,
    SignedPreKeyId, SnapshotError, Version,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Key exchange, answer, a few messages each way and a snapshot, written once for any `V`.
/// Returns the snapshot of the responder's session.
fn conversation<V: Version>(seed: u64) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let spk = V::generate_signed_pre_key(SignedPreKeyId::new(1).unwrap(), &bob, 0, &mut rng);
    let pre_keys: Vec<PreKey> = (1..=5)
        .map(|id| PreKey::generate(PreKeyId::new(id).unwrap(), &mut rng))
        .collect();
    let bundle = V::own_bundle(&bob, &spk, &pre_keys).unwrap();
    assert_eq!(V::bundle_identity(&bundle), bob.public_key());

    let chosen = V::choose_pre_key(&bundle, &mut rng);
    let mut to_bob = GenericSession::<V>::initiate(&alice, &bundle, chosen, &mut rng).unwrap();
    assert_eq!(to_bob.version(), V::VERSION);
    let wire = V::key_message_bytes(&to_bob.encrypt(&[7u8; 32]).unwrap());

    // Bob's side: parse, find the key exchange and its pre-key, check the sender identity.
    let received = V::parse_key_message(&wire).unwrap();
    assert!(V::is_key_exchange(&received));
    let kex = V::as_key_exchange(&received).unwrap();
    assert_eq!(V::key_exchange_pre_key_id(kex), chosen);
    assert_eq!(V::key_exchange_signed_pre_key_id(kex), spk.id());
    assert!(V::identity_matches(
        &V::key_exchange_identity(kex),
        &alice.public_key()
    ));
    assert!(!V::identity_matches(
        &V::key_exchange_identity(kex),
        &bob.public_key()
    ));
    let pk = pre_keys.iter().find(|pk| pk.id() == chosen).unwrap();
    let (mut to_alice, first) =
        GenericSession::<V>::respond(&bob, &spk, pk, kex, &mut rng).unwrap();
    assert_eq!(first.plaintext(), &[7u8; 32]);
    assert!(to_alice.was_built_by(kex));

    for round in 0..5u8 {
        let answer = V::key_message_bytes(&to_alice.encrypt(&[round; 16]).unwrap());
        let answer = V::parse_key_message(&answer).unwrap();
        assert!(!V::is_key_exchange(&answer));
        assert_eq!(
            to_bob.decrypt(&answer, &mut rng).unwrap().plaintext(),
            &[round; 16]
        );
        let next = to_bob.encrypt(&[round; 32]).unwrap();
        assert!(
            V::as_key_exchange(&next).is_none(),
            "confirmed: no more key exchanges"
        );
        assert_eq!(
            to_alice.decrypt(&next, &mut rng).unwrap().plaintext(),
            &[round; 32]
        );
    }
    let snapshot = to_alice.snapshot().to_vec();
    let restored = GenericSession::<V>::restore(&snapshot).unwrap();
    assert_eq!(&restored.snapshot()[..], &snapshot[..]);
    snapshot
}

#[test]
fn one_generic_conversation_runs_in_both_versions() {
    let omemo2 = conversation::<Omemo2>(1);
    let legacy = conversation::<Legacy>(1);
    // Same seed, different protocol: different sessions, each refused by the other type.
    assert_ne!(omemo2, legacy);
    assert_eq!(
        GenericSession::<Legacy>::restore(&omemo2).unwrap_err(),
        SnapshotError::WrongVersion(ProtocolVersion::Omemo2)
    );
    assert_eq!(
        GenericSession::<Omemo2>::restore(&legacy).unwrap_err(),
        SnapshotError::WrongVersion(ProtocolVersion::Legacy)
    );
}

#[test]
fn versions_and_namespaces() {
    assert_eq!(Omemo2::VERSION.namespace(), "urn:xmpp:omemo:2");
    assert_eq!(
        Legacy::VERSION.namespace(),
        "eu.siacs.conversations.axolotl"
    );
    for version in ProtocolVersion::ALL {
        assert_eq!(
            ProtocolVersion::from_namespace(version.namespace()),
            Some(version)
        );
    }
    assert_eq!(ProtocolVersion::from_namespace("urn:xmpp:omemo:1"), None);
    // A legacy key message is not an OMEMO 2 one and vice versa.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let bob = IdentityKeyPair::generate(&mut rng);
    let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut rng);
    let spk = Legacy::generate_signed_pre_key(SignedPreKeyId::new(1).unwrap(), &bob, 0, &mut rng);
    let bundle = Legacy::own_bundle(&bob, &spk, [&pk]).unwrap();
    // An OMEMO 2 bundle cannot be made from a legacy-signed pre-key.
    assert!(Omemo2::own_bundle(&bob, &spk, [&pk]).is_err());
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut session =
        GenericSession::<Legacy>::initiate(&alice, &bundle, pk.id(), &mut rng).unwrap();
    let wire = Legacy::key_message_bytes(&session.encrypt(&[1u8; 32]).unwrap());
    assert!(Legacy::parse_key_message(&wire).is_ok());
    assert!(Omemo2::parse_key_message(&wire).is_err());
}
