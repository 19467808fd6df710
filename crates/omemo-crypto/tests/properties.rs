//! Property tests of the Double Ratchet through the public API, for both protocol versions
//! (OMEMO 2 and legacy `eu.siacs.conversations.axolotl` share one ratchet): out-of-order
//! delivery within the skip bound, the bound itself, replays, single-byte tampering (for
//! legacy: the 8-byte MAC and the version byte), snapshot/restore at any point, the heartbeat
//! rule, repeated key exchanges; and payload tampering, which differs between the versions.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use omemo_crypto::{
    DecryptionError, IdentityKeyPair, PreKey, PreKeyId, SignedPreKey, SignedPreKeyId,
    HEARTBEAT_THRESHOLD, MAX_SKIP,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The ratchet properties, written once and instantiated for each version below: the module
/// path of its `Session`, `Bundle` and `KeyMessage`, how its signed pre-key is signed, the
/// length of the key material a message carries, and how it builds an empty message.
macro_rules! ratchet_properties {
    (
        $flavour:ident: $($version:ident)::+,
        signed_pre_key: $signed_pre_key:ident,
        key_len: $key_len:expr,
        answer_len: $answer_len:expr,
        empty_message: $empty_message:expr $(,)?
    ) => {
        mod $flavour {
            use super::*;
            use $($version)::+::{Bundle, KeyMessage, Session};

            struct Pair {
                alice: Session,
                bob: Session,
                rng: ChaCha20Rng,
            }

            /// Alice initiates, Bob answers the key exchange; both sessions are then established.
            fn established(seed: u64) -> Pair {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let alice_id = IdentityKeyPair::generate(&mut rng);
                let bob_id = IdentityKeyPair::generate(&mut rng);
                let spk = SignedPreKey::$signed_pre_key(SignedPreKeyId::new(1).unwrap(), &bob_id, 0, &mut rng);
                let pk = PreKey::generate(PreKeyId::new(7).unwrap(), &mut rng);
                let bundle = Bundle::from_own_keys(&bob_id, &spk, [&pk]).unwrap();
                let mut alice = Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
                let first = alice.encrypt(&[1u8; $key_len]).unwrap();
                let KeyMessage::KeyExchange(kex) = first else {
                    panic!("the first message must be a key exchange")
                };
                let (mut bob, decrypted) = Session::respond(&bob_id, &spk, &pk, &kex, &mut rng).unwrap();
                assert_eq!(decrypted.plaintext(), &[1u8; $key_len]);
                let answer = bob.encrypt(&[0u8; $answer_len]).unwrap();
                alice.decrypt(&answer, &mut rng).unwrap();
                assert!(alice.is_confirmed());
                Pair { alice, bob, rng }
            }

            fn plaintext(tag: u32) -> Vec<u8> {
                let mut p = vec![0u8; $key_len];
                p[..4].copy_from_slice(&tag.to_le_bytes());
                p
            }

            /// A delivery plan: burst sizes per side (alternating, starting with Alice) and, for each
            /// burst, a permutation seed and how many messages get dropped.
            #[derive(Debug, Clone)]
            struct Burst {
                count: usize,
                shuffle: u64,
                drop_every: usize,
            }

            fn bursts() -> impl Strategy<Value = Vec<Burst>> {
                prop::collection::vec(
                    (1usize..40, any::<u64>(), 0usize..6).prop_map(|(count, shuffle, drop_every)| Burst {
                        count,
                        shuffle,
                        drop_every,
                    }),
                    1..8,
                )
            }

            fn permute<T>(items: &mut [T], seed: u64) {
                // Fisher-Yates with a small LCG, deterministic per seed.
                let mut state = seed | 1;
                for i in (1..items.len()).rev() {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let j = usize::try_from(state >> 33).unwrap() % (i + 1);
                    items.swap(i, j);
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

                /// Random bursts in alternating directions, delivered in random order with some messages
                /// dropped: every delivered message decrypts to what was sent.
                #[test]
                fn interleavings_within_the_bound_decrypt(seed in any::<u64>(), plan in bursts(),
                                                           snapshot_at in prop::option::of(0usize..8)) {
                    let mut pair = established(seed);
                    let mut tag = 0u32;
                    for (index, burst) in plan.iter().enumerate() {
                        let alice_sends = index % 2 == 0;
                        let mut sent = Vec::new();
                        for _ in 0..burst.count {
                            tag += 1;
                            let sender = if alice_sends { &mut pair.alice } else { &mut pair.bob };
                            let wire = sender.encrypt(&plaintext(tag)).unwrap().to_bytes();
                            sent.push((tag, wire));
                        }
                        permute(&mut sent, burst.shuffle);
                        for (i, (tag, wire)) in sent.iter().enumerate() {
                            if burst.drop_every > 0 && i % (burst.drop_every + 1) == burst.drop_every {
                                continue; // dropped on the way
                            }
                            let receiver = if alice_sends { &mut pair.bob } else { &mut pair.alice };
                            let message = KeyMessage::from_bytes(wire).unwrap();
                            let decrypted = receiver.decrypt(&message, &mut pair.rng).unwrap();
                            prop_assert_eq!(decrypted.plaintext(), &plaintext(*tag)[..]);
                            // A second delivery is a duplicate and changes nothing.
                            let before = receiver.snapshot();
                            prop_assert_eq!(receiver.decrypt(&message, &mut pair.rng).unwrap_err(),
                                            DecryptionError::Duplicate);
                            prop_assert_eq!(&receiver.snapshot()[..], &before[..]);
                        }
                        if snapshot_at == Some(index) {
                            pair.alice = Session::restore(&pair.alice.snapshot()).unwrap();
                            pair.bob = Session::restore(&pair.bob.snapshot()).unwrap();
                        }
                    }
                }

                /// Flipping any single byte of a message makes it fail without changing the session.
                #[test]
                fn single_byte_tampering_is_rejected(seed in any::<u64>(), flip in 1u8..=255) {
                    let mut pair = established(seed);
                    let wire = pair.alice.encrypt(&plaintext(9)).unwrap().to_bytes();
                    let before = pair.bob.snapshot();
                    for position in 0..wire.len() {
                        let mut tampered = wire.clone();
                        tampered[position] ^= flip;
                        if let Ok(message) = KeyMessage::from_bytes(&tampered) {
                            prop_assert!(pair.bob.decrypt(&message, &mut pair.rng).is_err(),
                                         "byte {} accepted", position);
                        }
                        prop_assert_eq!(&pair.bob.snapshot()[..], &before[..]);
                    }
                    // The untampered message still decrypts afterwards.
                    let message = KeyMessage::from_bytes(&wire).unwrap();
                    let decrypted = pair.bob.decrypt(&message, &mut pair.rng).unwrap();
                    prop_assert_eq!(decrypted.plaintext(), &plaintext(9)[..]);
                }

                /// Truncations and arbitrary bytes never panic and never change the session.
                #[test]
                fn garbage_is_rejected(seed in 0u64..4, garbage in prop::collection::vec(any::<u8>(), 0..300)) {
                    let mut pair = established(seed);
                    let before = pair.bob.snapshot();
                    if let Ok(message) = KeyMessage::from_bytes(&garbage) {
                        prop_assert!(pair.bob.decrypt(&message, &mut pair.rng).is_err());
                    }
                    prop_assert_eq!(&pair.bob.snapshot()[..], &before[..]);
                    prop_assert!(Session::restore(&garbage).is_err());
                }
            }

            #[test]
            fn key_exchange_truncations_are_rejected() {
                let mut rng = ChaCha20Rng::seed_from_u64(5);
                let bob_id = IdentityKeyPair::generate(&mut rng);
                let spk = SignedPreKey::$signed_pre_key(SignedPreKeyId::new(3).unwrap(), &bob_id, 0, &mut rng);
                let pk = PreKey::generate(PreKeyId::new(8).unwrap(), &mut rng);
                let bundle = Bundle::from_own_keys(&bob_id, &spk, [&pk]).unwrap();
                let alice_id = IdentityKeyPair::generate(&mut rng);
                let mut alice = Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
                let wire = alice.encrypt(&plaintext(1)).unwrap().to_bytes();
                for len in 0..wire.len() {
                    assert!(
                        KeyMessage::from_bytes(&wire[..len]).is_err(),
                        "prefix {len} parsed"
                    );
                }
                for position in 0..wire.len() {
                    let mut tampered = wire.clone();
                    tampered[position] ^= 0x20;
                    if let Ok(KeyMessage::KeyExchange(kex)) = KeyMessage::from_bytes(&tampered) {
                        assert!(
                            Session::respond(&bob_id, &spk, &pk, &kex, &mut rng).is_err(),
                            "tampered byte {position} accepted"
                        );
                    }
                }
            }

            #[test]
            fn skip_bound_holds_and_leaves_the_session_unchanged() {
                let mut pair = established(11);
                let mut last = None;
                for i in 0..=MAX_SKIP + 1 {
                    last = Some(pair.alice.encrypt(&plaintext(i)).unwrap());
                }
                let too_far = last.unwrap();
                let before = pair.bob.snapshot();
                assert_eq!(
                    pair.bob.decrypt(&too_far, &mut pair.rng).unwrap_err(),
                    DecryptionError::TooManySkipped {
                        skipped: u64::from(MAX_SKIP) + 1,
                        limit: MAX_SKIP
                    }
                );
                assert_eq!(&pair.bob.snapshot()[..], &before[..]);
                // Exactly at the bound it still works.
                let mut pair = established(12);
                let mut last = None;
                for i in 0..=MAX_SKIP {
                    last = Some(pair.alice.encrypt(&plaintext(i)).unwrap());
                }
                let decrypted = pair.bob.decrypt(&last.unwrap(), &mut pair.rng).unwrap();
                assert_eq!(decrypted.plaintext(), &plaintext(MAX_SKIP)[..]);
            }

            #[test]
            fn heartbeat_is_due_at_53_unanswered_messages() {
                let mut pair = established(21);
                // A new receiving chain for Bob starts with Alice's next message after his answer.
                let mut due = Vec::new();
                for i in 0..60 {
                    let message = pair.alice.encrypt(&plaintext(i)).unwrap();
                    due.push(
                        pair.bob
                            .decrypt(&message, &mut pair.rng)
                            .unwrap()
                            .heartbeat_due(),
                    );
                }
                let first_due = due.iter().position(|d| *d).unwrap();
                assert_eq!(first_due, HEARTBEAT_THRESHOLD as usize);
                // Bob answers with an empty message: no more heartbeats on this chain.
                let empty: Vec<u8> = $empty_message(&mut pair.rng);
                let heartbeat = pair.bob.encrypt(&empty).unwrap();
                pair.alice.decrypt(&heartbeat, &mut pair.rng).unwrap();
                let message = pair.alice.encrypt(&plaintext(99)).unwrap();
                assert!(!pair
                    .bob
                    .decrypt(&message, &mut pair.rng)
                    .unwrap()
                    .heartbeat_due());
            }

            #[test]
            fn unconfirmed_initiator_repeats_the_key_exchange() {
                let mut rng = ChaCha20Rng::seed_from_u64(8);
                let bob_id = IdentityKeyPair::generate(&mut rng);
                let spk = SignedPreKey::$signed_pre_key(SignedPreKeyId::new(3).unwrap(), &bob_id, 0, &mut rng);
                let pk = PreKey::generate(PreKeyId::new(8).unwrap(), &mut rng);
                let bundle = Bundle::from_own_keys(&bob_id, &spk, [&pk]).unwrap();
                let alice_id = IdentityKeyPair::generate(&mut rng);
                let mut alice = Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
                let messages: Vec<KeyMessage> = (0..3)
                    .map(|i| alice.encrypt(&plaintext(i)).unwrap())
                    .collect();
                assert!(messages.iter().all(KeyMessage::is_key_exchange));
                // Bob gets the last one first, then the earlier ones on the same session.
                let KeyMessage::KeyExchange(last) = &messages[2] else {
                    unreachable!()
                };
                let (mut bob, first) = Session::respond(&bob_id, &spk, &pk, last, &mut rng).unwrap();
                assert_eq!(first.plaintext(), &plaintext(2)[..]);
                for (i, message) in messages.iter().enumerate().take(2) {
                    let KeyMessage::KeyExchange(kex) = message else {
                        unreachable!()
                    };
                    assert!(bob.was_built_by(kex));
                    let tag = u32::try_from(i).unwrap();
                    assert_eq!(
                        bob.decrypt(message, &mut rng).unwrap().plaintext(),
                        &plaintext(tag)[..]
                    );
                }
                // A key exchange from another session is refused, not silently accepted.
                let mut other = Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
                let foreign = other.encrypt(&plaintext(5)).unwrap();
                assert_eq!(
                    bob.decrypt(&foreign, &mut rng).unwrap_err(),
                    DecryptionError::ForeignKeyExchange
                );
            }
        }
    };
}

ratchet_properties!(
    omemo2: omemo_crypto,
    signed_pre_key: generate,
    key_len: 48,
    answer_len: 32,
    empty_message: |_: &mut ChaCha20Rng| omemo_crypto::KeyMaterial::empty().as_bytes().to_vec(),
);

ratchet_properties!(
    legacy: omemo_crypto::legacy,
    signed_pre_key: generate_legacy,
    key_len: 32,
    answer_len: 16,
    empty_message: |rng: &mut ChaCha20Rng| {
        omemo_crypto::legacy::payload::empty(rng).0.as_bytes().to_vec()
    },
);

#[test]
fn omemo2_payload_tampering_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (ciphertext, material) =
        omemo_crypto::payload::encrypt(b"<envelope xmlns='urn:xmpp:sce:1'/>", &mut rng);
    for position in 0..ciphertext.len() {
        let mut tampered = ciphertext.clone();
        tampered[position] ^= 1;
        assert!(omemo_crypto::payload::decrypt(&tampered, material.as_bytes()).is_err());
    }
    for position in 0..material.as_bytes().len() {
        let mut tampered = material.as_bytes().to_vec();
        tampered[position] ^= 1;
        assert!(omemo_crypto::payload::decrypt(&ciphertext, &tampered).is_err());
    }
    assert!(omemo_crypto::payload::decrypt(&ciphertext, &material.as_bytes()[..32]).is_err());
    assert!(omemo_crypto::payload::decrypt(&ciphertext, material.as_bytes()).is_ok());
}

#[test]
fn legacy_payload_tampering_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sealed =
        omemo_crypto::legacy::payload::encrypt("Hallo Welt, grüß dich".as_bytes(), &mut rng);
    let material = sealed.key_material.as_bytes();
    for position in 0..sealed.ciphertext.len() {
        let mut tampered = sealed.ciphertext.clone();
        tampered[position] ^= 1;
        assert!(omemo_crypto::legacy::payload::decrypt(&tampered, &sealed.iv, material).is_err());
    }
    for position in 0..material.len() {
        let mut tampered = material.to_vec();
        tampered[position] ^= 1;
        assert!(
            omemo_crypto::legacy::payload::decrypt(&sealed.ciphertext, &sealed.iv, &tampered)
                .is_err()
        );
    }
    for position in 0..sealed.iv.len() {
        let mut tampered = sealed.iv;
        tampered[position] ^= 1;
        assert!(
            omemo_crypto::legacy::payload::decrypt(&sealed.ciphertext, &tampered, material)
                .is_err()
        );
    }
    // A bare 16-byte key (an empty message's key material) is not a payload key.
    assert!(omemo_crypto::legacy::payload::decrypt(
        &sealed.ciphertext,
        &sealed.iv,
        &material[..16]
    )
    .is_err());
    assert!(
        omemo_crypto::legacy::payload::decrypt(&sealed.ciphertext, &sealed.iv, material).is_ok()
    );
}
