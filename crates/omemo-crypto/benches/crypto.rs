//! Criterion benchmarks of the OMEMO 2 and legacy OMEMO operations and of the primitives they
//! are made of (issue 2 §4, issue 13), with a table of each operation's cost relative to its
//! *floor*.
//!
//! Run with `cargo bench -p omemo-crypto --bench crypto` (`just bench`). Criterion measures
//! every benchmark in three groups: `primitive/*` (the cryptography, called directly through
//! the crates the library uses: x25519-dalek, ed25519-dalek, hkdf, hmac, sha2, aes + cbc),
//! `omemo/*` (the operations as an application performs them), `legacy/*` (the same for
//! legacy OMEMO) and `part/*` (pieces of the operations, to see where time above the floor
//! goes).
//!
//! Then a short *interleaved* pass times every benchmark again, round-robin, ~1 ms each per
//! round, and prints the table: for each operation its median, its floor (the sum of the
//! primitives it inherently needs, below) and the ratio. On a shared machine the load
//! changes from second to second; criterion measures one benchmark after the other, so an
//! operation and its primitives may be timed under different load. In the interleaved pass
//! they are timed within milliseconds of each other, and the ratio is the median of the
//! per-round ratios, which stays meaningful under noise. Criterion's own median is shown
//! next to it for reference. Under `cargo test --benches` (criterion's test mode),
//! `--list` or `--profile-time`, no table is printed. Nothing here is an assertion: a slow
//! run fails nothing.
//!
//! # The floors
//!
//! Sizes are the real ones: the payload is a 300-byte SCE envelope (304 bytes of
//! ciphertext); the key material is 48 bytes (64 bytes of ciphertext, PKCS#7 adds a block);
//! the ratchet MAC covers `AD ‖ OMEMOMessage` = 64 + 104 = 168 bytes. `aes256cbc_*_N` is
//! AES-256-CBC with PKCS#7 of an `N`-byte plaintext; `hmac_sha256_N` includes the key setup.
//!
//! - `ratchet_encrypt` = 2 × HMAC(1 B) (`KDF_CK`) + HKDF(80 B) + AES-CBC-enc(48 B)
//!   + HMAC(168 B)
//! - `ratchet_decrypt` = 2 × HMAC(1 B) + HKDF(80 B) + HMAC(168 B) + AES-CBC-dec(48 B)
//! - `payload_encrypt` = HKDF(80 B) + AES-CBC-enc(300 B) + HMAC(304 B)
//! - `payload_decrypt` = HKDF(80 B) + HMAC(304 B) + AES-CBC-dec(300 B)
//! - `dh_step` = keygen + 2 × DH + 2 × HKDF-root(64 B)
//! - **encrypt, 1 device** = `payload_encrypt` + `ratchet_encrypt`
//! - **each extra device** = `ratchet_encrypt`
//! - **decrypt** (message on the current receiving chain) = `ratchet_decrypt`
//!   + `payload_decrypt`
//! - **decrypt with DH step** (first message of a new peer chain) = decrypt + `dh_step`
//! - **X3DH active** = 4 × DH + keygen (`EK`) + HKDF(32 B from a 160-byte IKM)
//! - **X3DH passive** = 4 × DH + HKDF(32 B from a 160-byte IKM)
//! - **session build + first message** (`Session::initiate` + `encrypt` + `to_bytes`)
//!   = X3DH active + keygen (`DHs`) + DH + HKDF-root + `ratchet_encrypt`
//! - **session respond** (parse the key exchange + `Session::respond`) = X3DH passive
//!   + `dh_step` + `ratchet_decrypt`
//! - **bundle check** (`Bundle::new`) = Ed25519 verify (strict)
//!
//! Legacy (`eu.siacs.conversations.axolotl`): the payload is the 62-byte chat body alone
//! (AES-128-GCM, `aes128gcm_*_62`); the key material is 32 bytes (48 bytes of CBC
//! ciphertext); the MAC covers `IK_s ‖ IK_r ‖ 0x33 ‖ WhisperMessage` = 66 + 90 = 156 bytes.
//!
//! - `legacy_ratchet_encrypt` = 2 × HMAC(1 B) + HKDF(80 B) + AES-CBC-enc(32 B)
//!   + HMAC(156 B)
//! - `legacy_ratchet_decrypt` = 2 × HMAC(1 B) + HKDF(80 B) + HMAC(156 B) + AES-CBC-dec(32 B)
//! - **legacy encrypt, 1 device** = AES-128-GCM-enc(62 B) + `legacy_ratchet_encrypt`
//! - **legacy each extra device** = `legacy_ratchet_encrypt`
//! - **legacy decrypt** (same chain) = `legacy_ratchet_decrypt` + AES-128-GCM-dec(62 B)
//!
//! Parsing and validating public keys, protobuf, allocation, copying, state clones and the
//! random generator are *not* in the floors: they are what the ratio exposes.
//!
//! Randomness is a seeded ChaCha20 generator (≈ 20 ns per 32 bytes), so no system call is
//! timed; an application passing `OsRng` pays one `getrandom` per message on top.

#![allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure is a bug and must abort the run"
)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::Aead;
use criterion::Criterion;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use omemo_crypto::{
    legacy, payload, x3dh, Bundle, IdentityKeyPair, IdentityPublicKey, KeyMaterial, KeyMessage,
    PreKey, PreKeyId, Session, SignedPreKey, SignedPreKeyId, X25519PublicKey,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// A typical serialized SCE envelope (XEP-0420) of a chat message, exactly 300 bytes.
const ENVELOPE: &[u8] = b"<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>\
Hi Bob! Still on for lunch tomorrow at noon? I booked a table.</body></content>\
<rpad>f8Kq2ZrLx0Wm7TgN4pVb1HcY9sJ</rpad><time stamp='2025-06-01T12:00:00Z'/>\
<to jid='bob@example.org'/><from jid='alice@example.org/phone'/></envelope>";
const _: () = assert!(ENVELOPE.len() == 300);

/// The chat body inside [`ENVELOPE`]: what legacy OMEMO encrypts, 62 bytes.
const BODY: &[u8] = b"Hi Bob! Still on for lunch tomorrow at noon? I booked a table.";
const _: () = assert!(BODY.len() == 62);

/// Criterion's settings: ~2 s per benchmark, ~35 benchmarks, about 80 s in all.
const SAMPLE_SIZE: usize = 40;
const WARM_UP: Duration = Duration::from_millis(400);
const MEASUREMENT: Duration = Duration::from_millis(1500);
/// Inputs prepared (untimed) per timed batch in [`batched`].
const BATCH: u64 = 256;
/// The interleaved pass: rounds, and the least time one benchmark runs per round.
const ROUNDS: usize = 60;
const MIN_BATCH_TIME: Duration = Duration::from_millis(1);

/// Runs a benchmark `iters` times and returns the time spent in what it measures.
type Timed<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// One benchmark: `group/name` and its timed routine. Each routine owns its mutable state
/// (sessions, generator), so all of them can be kept and run again in any order.
struct Bench<'a> {
    group: &'static str,
    name: String,
    run: Timed<'a>,
}

impl Bench<'_> {
    fn id(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }
}

/// Times `routine` back to back; what it returns is dropped inside the timing.
fn plain<'a, O>(group: &'static str, name: &str, mut routine: impl FnMut() -> O + 'a) -> Bench<'a> {
    Bench {
        group,
        name: name.to_owned(),
        run: Box::new(move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(routine());
            }
            start.elapsed()
        }),
    }
}

/// Like criterion's `iter_batched_ref`: `setup` (untimed) makes one input per iteration,
/// `routine` (timed) works on it; inputs and outputs are dropped outside the timing.
fn batched<'a, I, O>(
    group: &'static str,
    name: &str,
    mut setup: impl FnMut() -> I + 'a,
    mut routine: impl FnMut(&mut I) -> O + 'a,
) -> Bench<'a> {
    Bench {
        group,
        name: name.to_owned(),
        run: Box::new(move |iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let mut inputs: Vec<I> = (0..n).map(|_| setup()).collect();
                let mut outputs: Vec<O> = Vec::with_capacity(inputs.len());
                let start = Instant::now();
                for input in &mut inputs {
                    outputs.push(routine(black_box(input)));
                }
                total += start.elapsed();
                drop(black_box(outputs));
                drop(inputs);
                left -= n;
            }
            total
        }),
    }
}

/// Two devices with an established, confirmed session, plus the messages the benchmarks
/// decrypt.
struct Scenario {
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    spk: SignedPreKey,
    pk: PreKey,
    bundle: Bundle,
    /// Alice's confirmed session with Bob (she has received his answer).
    alice_session: Session,
    /// Bob's session, whose receiving chain is Alice's current sending chain.
    bob_session: Session,
    /// A message from Alice on that chain (no DH step for Bob) and its payload.
    same_chain_wire: Vec<u8>,
    same_chain_payload: Vec<u8>,
    /// Bob's session after he has answered again, so Alice's next ratchet key is new to him.
    bob_after_reply: Session,
    /// Alice's message with that new ratchet key (a DH step for Bob) and its payload.
    dh_step_wire: Vec<u8>,
    dh_step_payload: Vec<u8>,
    /// The key exchange Alice sent first, for `Session::respond`.
    kex_wire: Vec<u8>,
}

impl Scenario {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let alice = IdentityKeyPair::generate(rng);
        let bob = IdentityKeyPair::generate(rng);
        let spk = SignedPreKey::generate(
            SignedPreKeyId::new(1).expect("id"),
            &bob,
            1_700_000_000,
            rng,
        );
        let pk = PreKey::generate(PreKeyId::new(42).expect("id"), rng);
        let bundle = Bundle::from_own_keys(&bob, &spk, [&pk]).expect("bundle");

        let mut alice_session = Session::initiate(&alice, &bundle, pk.id(), rng).expect("initiate");
        let (_, material) = payload::encrypt(ENVELOPE, rng);
        let kex_wire = alice_session
            .encrypt(material.as_bytes())
            .expect("encrypt")
            .to_bytes();
        let KeyMessage::KeyExchange(kex) = KeyMessage::from_bytes(&kex_wire).expect("parse") else {
            unreachable!("an unconfirmed session sends key exchanges");
        };
        let (mut bob_session, _) = Session::respond(&bob, &spk, &pk, &kex, rng).expect("respond");

        // Bob answers with an empty message: Alice's session is confirmed and she takes a
        // DH step; her next message makes Bob take one too. After that both are steady.
        let reply = bob_session
            .encrypt(KeyMaterial::empty().as_bytes())
            .expect("reply");
        alice_session.decrypt(&reply, rng).expect("decrypt reply");
        let first = alice_session.encrypt(material.as_bytes()).expect("encrypt");
        bob_session.decrypt(&first, rng).expect("decrypt first");
        assert!(alice_session.is_confirmed() && !first.is_key_exchange());

        let (same_chain_payload, material) = payload::encrypt(ENVELOPE, rng);
        let same_chain_wire = alice_session
            .encrypt(material.as_bytes())
            .expect("encrypt")
            .to_bytes();

        // A second round trip: Bob answers, Alice ratchets, her next key is new to Bob.
        let mut bob_after_reply = bob_session.clone();
        let reply = bob_after_reply
            .encrypt(KeyMaterial::empty().as_bytes())
            .expect("reply");
        let mut alice_after = alice_session.clone();
        alice_after.decrypt(&reply, rng).expect("decrypt reply");
        let (dh_step_payload, material) = payload::encrypt(ENVELOPE, rng);
        let dh_step_wire = alice_after
            .encrypt(material.as_bytes())
            .expect("encrypt")
            .to_bytes();

        Self {
            alice,
            bob,
            spk,
            pk,
            bundle,
            alice_session,
            bob_session,
            same_chain_wire,
            same_chain_payload,
            bob_after_reply,
            dh_step_wire,
            dh_step_payload,
            kex_wire,
        }
    }
}

/// Parse + ratchet decrypt + payload decrypt: what receiving one message costs.
fn receive(session: &mut Session, wire: &[u8], payload_ct: &[u8], rng: &mut ChaCha20Rng) -> usize {
    let message = KeyMessage::from_bytes(wire).expect("parse");
    let decrypted = session.decrypt(&message, rng).expect("decrypt");
    payload::decrypt(payload_ct, decrypted.plaintext())
        .expect("payload")
        .len()
}

/// Established legacy sessions, as [`Scenario`] builds the OMEMO 2 ones.
struct LegacyScenario {
    alice_session: legacy::Session,
    bob_session: legacy::Session,
    /// A message from Alice on Bob's current receiving chain, its payload and IV.
    same_chain_wire: Vec<u8>,
    same_chain_payload: Vec<u8>,
    same_chain_iv: [u8; 12],
}

impl LegacyScenario {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let alice = IdentityKeyPair::generate(rng);
        let bob = IdentityKeyPair::generate(rng);
        let spk = SignedPreKey::generate_legacy(
            SignedPreKeyId::new(1).expect("id"),
            &bob,
            1_700_000_000,
            rng,
        );
        let pk = PreKey::generate(PreKeyId::new(42).expect("id"), rng);
        let bundle = legacy::Bundle::from_own_keys(&bob, &spk, [&pk]).expect("bundle");
        let mut alice_session =
            legacy::Session::initiate(&alice, &bundle, pk.id(), rng).expect("initiate");
        let first = legacy::payload::encrypt(BODY, rng);
        let kex_wire = alice_session
            .encrypt(first.key_material.as_bytes())
            .expect("encrypt")
            .to_bytes();
        let legacy::KeyMessage::KeyExchange(kex) =
            legacy::KeyMessage::from_bytes(&kex_wire).expect("parse")
        else {
            unreachable!("an unconfirmed session sends key exchanges");
        };
        let (mut bob_session, _) =
            legacy::Session::respond(&bob, &spk, &pk, &kex, rng).expect("respond");
        let (empty, _iv) = legacy::payload::empty(rng);
        let reply = bob_session.encrypt(empty.as_bytes()).expect("reply");
        alice_session.decrypt(&reply, rng).expect("decrypt reply");
        let next = legacy::payload::encrypt(BODY, rng);
        let wire = alice_session
            .encrypt(next.key_material.as_bytes())
            .expect("encrypt");
        bob_session.decrypt(&wire, rng).expect("decrypt first");
        assert!(alice_session.is_confirmed() && !wire.is_key_exchange());
        let sealed = legacy::payload::encrypt(BODY, rng);
        let same_chain_wire = alice_session
            .encrypt(sealed.key_material.as_bytes())
            .expect("encrypt")
            .to_bytes();
        Self {
            alice_session,
            bob_session,
            same_chain_wire,
            same_chain_payload: sealed.ciphertext,
            same_chain_iv: sealed.iv,
        }
    }
}

/// Parse + ratchet decrypt + payload decrypt of one legacy message.
fn receive_legacy(
    session: &mut legacy::Session,
    s: &LegacyScenario,
    rng: &mut ChaCha20Rng,
) -> usize {
    let message = legacy::KeyMessage::from_bytes(&s.same_chain_wire).expect("parse");
    let decrypted = session.decrypt(&message, rng).expect("decrypt");
    legacy::payload::decrypt(
        &s.same_chain_payload,
        &s.same_chain_iv,
        decrypted.plaintext(),
    )
    .expect("payload")
    .len()
}

fn legacy_operations(s: &LegacyScenario, seed: u64) -> Vec<Bench<'_>> {
    const G: &str = "legacy";
    let rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::new();

    let mut sender = s.alice_session.clone();
    let mut r = rng.clone();
    out.push(plain(G, "encrypt_1_device", move || {
        let sealed = legacy::payload::encrypt(BODY, &mut r);
        let wire = sender
            .encrypt(sealed.key_material.as_bytes())
            .expect("encrypt")
            .to_bytes();
        (sealed.ciphertext, wire)
    }));
    let material = legacy::payload::encrypt(BODY, &mut rng.clone()).key_material;
    let mut other_device = s.alice_session.clone();
    out.push(plain(G, "encrypt_extra_device", move || {
        other_device
            .encrypt(black_box(material.as_bytes()))
            .expect("encrypt")
            .to_bytes()
    }));
    let mut r = rng.clone();
    out.push(batched(
        G,
        "decrypt",
        || s.bob_session.clone(),
        move |session| receive_legacy(session, s, &mut r),
    ));
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hkdf(salt: &[u8; 32], ikm: &[u8], info: &[u8], okm: &mut [u8]) {
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, okm);
}

fn primitives(seed: u64) -> Vec<Bench<'static>> {
    const G: &str = "primitive";
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::new();

    let ours = StaticSecret::random_from_rng(&mut rng);
    let theirs = PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
    out.push(plain(G, "x25519_dh", move || {
        let shared = ours.diffie_hellman(black_box(&theirs));
        (shared.was_contributory(), shared.to_bytes())
    }));
    let mut keygen_rng = rng.clone();
    out.push(plain(G, "x25519_keygen", move || {
        let secret = StaticSecret::random_from_rng(&mut keygen_rng);
        PublicKey::from(&secret).to_bytes()
    }));

    let signing = SigningKey::from_bytes(&[7u8; 32]);
    let verifying = signing.verifying_key();
    let signed = [9u8; 32];
    let signature = signing.sign(&signed);
    out.push(plain(G, "ed25519_verify_strict", move || {
        verifying
            .verify_strict(black_box(&signed), black_box(&signature))
            .is_ok()
    }));

    let zero = [0u8; 32];
    let ikm32 = [5u8; 32];
    out.push(plain(G, "hkdf_80", move || {
        let mut okm = [0u8; 80];
        hkdf(
            &zero,
            black_box(&ikm32),
            b"OMEMO Message Key Material",
            &mut okm,
        );
        okm
    }));
    let ikm160 = [0xffu8; 160];
    out.push(plain(G, "hkdf_32_ikm160", move || {
        let mut okm = [0u8; 32];
        hkdf(&zero, black_box(&ikm160), b"OMEMO X3DH", &mut okm);
        okm
    }));
    let root = [3u8; 32];
    out.push(plain(G, "hkdf_root_64", move || {
        let mut okm = [0u8; 64];
        hkdf(
            black_box(&root),
            black_box(&ikm32),
            b"OMEMO Root Chain",
            &mut okm,
        );
        okm
    }));

    let key = [1u8; 32];
    let data = [2u8; 304];
    for len in [1usize, 32, 156, 168, 304] {
        out.push(plain(G, &format!("hmac_sha256_{len}"), move || {
            hmac(
                black_box(&key),
                black_box(data.get(..len).expect("len ≤ 304")),
            )
        }));
    }

    let iv = [4u8; 16];
    for len in [32usize, 48, 256, 300] {
        out.push(plain(G, &format!("aes256cbc_enc_{len}"), move || {
            Aes256CbcEnc::new(&key.into(), &iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(black_box(data.get(..len).expect("len ≤ 304")))
        }));
        let ciphertext = Aes256CbcEnc::new(&key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(data.get(..len).expect("len ≤ 304"));
        out.push(plain(G, &format!("aes256cbc_dec_{len}"), move || {
            Aes256CbcDec::new(&key.into(), &iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(black_box(&ciphertext))
                .expect("valid padding")
        }));
    }

    let gcm_key = [6u8; 16];
    let nonce = [8u8; 12];
    let cipher = <aes_gcm::Aes128Gcm as aes_gcm::aead::KeyInit>::new(&gcm_key.into());
    out.push(plain(G, "aes128gcm_enc_62", move || {
        cipher
            .encrypt(&nonce.into(), black_box(BODY))
            .expect("GCM encrypt")
    }));
    let cipher = <aes_gcm::Aes128Gcm as aes_gcm::aead::KeyInit>::new(&gcm_key.into());
    let sealed = cipher.encrypt(&nonce.into(), BODY).expect("GCM encrypt");
    out.push(plain(G, "aes128gcm_dec_62", move || {
        cipher
            .decrypt(&nonce.into(), black_box(&sealed[..]))
            .expect("GCM decrypt")
    }));
    out
}

fn operations(s: &Scenario, seed: u64) -> Vec<Bench<'_>> {
    const G: &str = "omemo";
    let rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::new();

    let mut sender = s.alice_session.clone();
    let mut r = rng.clone();
    out.push(plain(G, "encrypt_1_device", move || {
        let (ciphertext, material) = payload::encrypt(ENVELOPE, &mut r);
        let wire = sender
            .encrypt(material.as_bytes())
            .expect("encrypt")
            .to_bytes();
        (ciphertext, wire)
    }));

    let material = payload::encrypt(ENVELOPE, &mut rng.clone()).1;
    let mut other_device = s.alice_session.clone();
    let m = material.clone();
    out.push(plain(G, "encrypt_extra_device", move || {
        other_device
            .encrypt(black_box(m.as_bytes()))
            .expect("encrypt")
            .to_bytes()
    }));

    let mut r = rng.clone();
    out.push(batched(
        G,
        "decrypt",
        || s.bob_session.clone(),
        move |session| receive(session, &s.same_chain_wire, &s.same_chain_payload, &mut r),
    ));
    let mut r = rng.clone();
    out.push(batched(
        G,
        "decrypt_dh_step",
        || s.bob_after_reply.clone(),
        move |session| receive(session, &s.dh_step_wire, &s.dh_step_payload, &mut r),
    ));

    let mut r = rng.clone();
    out.push(plain(G, "x3dh_active", move || {
        x3dh::active(&s.alice, &s.bundle, s.pk.id(), &mut r).expect("x3dh")
    }));
    let (_, params) = x3dh::active(&s.alice, &s.bundle, s.pk.id(), &mut rng.clone()).expect("x3dh");
    let alice_ik = s.alice.public_key();
    let ek = params.ephemeral_key();
    out.push(plain(G, "x3dh_passive", move || {
        x3dh::passive(&s.bob, &s.spk, &s.pk, black_box(&alice_ik), black_box(&ek)).expect("x3dh")
    }));

    let mut r = rng.clone();
    out.push(plain(G, "session_build_first_message", move || {
        let mut session =
            Session::initiate(&s.alice, &s.bundle, s.pk.id(), &mut r).expect("initiate");
        session
            .encrypt(black_box(material.as_bytes()))
            .expect("encrypt")
            .to_bytes()
    }));
    let mut r = rng.clone();
    out.push(plain(G, "session_respond", move || {
        let KeyMessage::KeyExchange(kex) =
            KeyMessage::from_bytes(black_box(&s.kex_wire)).expect("parse")
        else {
            unreachable!("built as a key exchange");
        };
        Session::respond(&s.bob, &s.spk, &s.pk, &kex, &mut r).expect("respond")
    }));

    let b = &s.bundle;
    let pre_keys = b.pre_keys().to_vec();
    out.push(plain(G, "bundle_check", move || {
        Bundle::new(
            b.identity_key(),
            b.signed_pre_key_id(),
            b.signed_pre_key(),
            b.signed_pre_key_signature(),
            pre_keys.clone(),
        )
        .expect("bundle")
    }));
    out
}

/// The pieces of the operations, to see where the time above the floor goes.
fn parts(s: &Scenario, seed: u64) -> Vec<Bench<'_>> {
    const G: &str = "part";
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::new();

    let mut r = rng.clone();
    out.push(plain(G, "payload_encrypt", move || {
        payload::encrypt(black_box(ENVELOPE), &mut r)
    }));
    let (ciphertext, material) = payload::encrypt(ENVELOPE, &mut rng);
    let m = material.clone();
    out.push(plain(G, "payload_decrypt", move || {
        payload::decrypt(black_box(&ciphertext), m.as_bytes()).expect("payload")
    }));

    let mut sender = s.alice_session.clone();
    let message = sender.encrypt(material.as_bytes()).expect("encrypt");
    out.push(plain(G, "session_encrypt", move || {
        sender
            .encrypt(black_box(material.as_bytes()))
            .expect("encrypt")
    }));
    out.push(plain(G, "key_message_to_bytes", move || {
        black_box(&message).to_bytes()
    }));
    out.push(plain(G, "key_message_parse", || {
        KeyMessage::from_bytes(black_box(&s.same_chain_wire)).expect("parse")
    }));
    out.push(plain(G, "key_exchange_parse", || {
        KeyMessage::from_bytes(black_box(&s.kex_wire)).expect("parse")
    }));

    let parsed = KeyMessage::from_bytes(&s.same_chain_wire).expect("parse");
    let mut r = rng.clone();
    out.push(batched(
        G,
        "session_decrypt",
        || s.bob_session.clone(),
        move |session| session.decrypt(&parsed, &mut r).expect("decrypt"),
    ));
    out.push(plain(G, "session_clone", || {
        black_box(&s.bob_session).clone()
    }));

    let x_bytes = s.spk.public_key().to_bytes();
    out.push(plain(G, "x25519_public_key_parse", move || {
        X25519PublicKey::from_bytes(black_box(&x_bytes)).expect("key")
    }));
    let ik_bytes = s.alice.public_key().to_bytes();
    out.push(plain(G, "identity_key_parse", move || {
        IdentityPublicKey::from_bytes(black_box(&ik_bytes)).expect("key")
    }));
    // What the two key parsers spend their time on (curve25519-dalek, as keys.rs calls it).
    let mont = MontgomeryPoint(x_bytes);
    out.push(plain(G, "curve_montgomery_to_edwards", move || {
        black_box(mont).to_edwards(0)
    }));
    let compressed = CompressedEdwardsY(ik_bytes);
    out.push(plain(G, "curve_edwards_decompress", move || {
        black_box(compressed).decompress()
    }));
    let point = compressed.decompress().expect("valid identity key");
    out.push(plain(G, "curve_is_torsion_free", move || {
        black_box(point).is_torsion_free()
    }));
    out.push(plain(G, "curve_is_small_order", move || {
        black_box(point).is_small_order()
    }));
    out.push(plain(G, "curve_to_montgomery", move || {
        black_box(point).to_montgomery()
    }));

    let mut buf = [0u8; 32];
    out.push(plain(G, "chacha20_rng_32", move || {
        rng.fill_bytes(&mut buf);
        buf
    }));
    out
}

/// Per-iteration times (ns) of every criterion sample, keyed `group/name`.
#[derive(Default)]
struct Recorder(RefCell<BTreeMap<String, Vec<f64>>>);

impl Recorder {
    fn record(&self, id: &str, iters: u64, elapsed: Duration) {
        self.0
            .borrow_mut()
            .entry(id.to_owned())
            .or_default()
            .push(per_iter_ns(elapsed, iters));
    }

    /// Median of the last `sample_size` samples (criterion's measurement; the calls before
    /// are its warm-up).
    fn median(&self, id: &str, sample_size: usize) -> Option<f64> {
        let samples = self.0.borrow();
        let all = samples.get(id)?;
        median(all.get(all.len().checked_sub(sample_size)?..)?)
    }
}

fn per_iter_ns(elapsed: Duration, iters: u64) -> f64 {
    elapsed.as_secs_f64() * 1e9 / iters.max(1) as f64
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(mid).copied()
    } else {
        Some((sorted.get(mid.checked_sub(1)?)? + sorted.get(mid)?) / 2.0)
    }
}

/// What criterion was asked to do, from the command line it parsed.
struct Args {
    /// A full measurement (`cargo bench`), not `--test`, `--list` or `--profile-time`.
    benchmarking: bool,
    sample_size: usize,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| {
            args.iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut sample_size = SAMPLE_SIZE;
        for (i, arg) in args.iter().enumerate() {
            let value = match arg.strip_prefix("--sample-size") {
                Some("") => args.get(i + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            };
            if let Some(n) = value.and_then(|v| v.parse().ok()) {
                sample_size = n;
            }
        }
        Self {
            benchmarking: has("--bench")
                && !has("--test")
                && !has("--list")
                && !has("--profile-time"),
            sample_size,
        }
    }
}

/// Times every benchmark `ROUNDS` times, round-robin. Returns per-round ns per iteration.
fn interleaved(benches: &mut [Bench<'_>]) -> BTreeMap<String, Vec<f64>> {
    let iters: Vec<u64> = benches
        .iter_mut()
        .map(|bench| {
            let mut n = 1u64;
            while (bench.run)(n) < MIN_BATCH_TIME && n < 1 << 20 {
                n *= 2;
            }
            n
        })
        .collect();
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (bench, &n) in benches.iter_mut().zip(&iters) {
            let elapsed = (bench.run)(n);
            out.entry(bench.id())
                .or_default()
                .push(per_iter_ns(elapsed, n));
        }
    }
    out
}

/// `count × primitive` terms of a floor.
type Floor = Vec<(f64, &'static str)>;

fn floor_of(terms: &[&[(f64, &'static str)]]) -> Floor {
    terms.iter().flat_map(|t| t.iter().copied()).collect()
}

struct Row {
    label: &'static str,
    id: &'static str,
    floor: Floor,
    target: Option<f64>,
}

/// The floors documented at the top of this file.
fn rows() -> Vec<Row> {
    const RATCHET_ENCRYPT: &[(f64, &str)] = &[
        (2.0, "hmac_sha256_1"),
        (1.0, "hkdf_80"),
        (1.0, "aes256cbc_enc_48"),
        (1.0, "hmac_sha256_168"),
    ];
    const RATCHET_DECRYPT: &[(f64, &str)] = &[
        (2.0, "hmac_sha256_1"),
        (1.0, "hkdf_80"),
        (1.0, "hmac_sha256_168"),
        (1.0, "aes256cbc_dec_48"),
    ];
    const PAYLOAD_ENCRYPT: &[(f64, &str)] = &[
        (1.0, "hkdf_80"),
        (1.0, "aes256cbc_enc_300"),
        (1.0, "hmac_sha256_304"),
    ];
    const PAYLOAD_DECRYPT: &[(f64, &str)] = &[
        (1.0, "hkdf_80"),
        (1.0, "hmac_sha256_304"),
        (1.0, "aes256cbc_dec_300"),
    ];
    const DH_STEP: &[(f64, &str)] = &[
        (1.0, "x25519_keygen"),
        (2.0, "x25519_dh"),
        (2.0, "hkdf_root_64"),
    ];
    const X3DH_ACTIVE: &[(f64, &str)] = &[
        (4.0, "x25519_dh"),
        (1.0, "x25519_keygen"),
        (1.0, "hkdf_32_ikm160"),
    ];
    const X3DH_PASSIVE: &[(f64, &str)] = &[(4.0, "x25519_dh"), (1.0, "hkdf_32_ikm160")];
    const FIRST_CHAIN: &[(f64, &str)] = &[
        (1.0, "x25519_keygen"),
        (1.0, "x25519_dh"),
        (1.0, "hkdf_root_64"),
    ];
    const LEGACY_RATCHET_ENCRYPT: &[(f64, &str)] = &[
        (2.0, "hmac_sha256_1"),
        (1.0, "hkdf_80"),
        (1.0, "aes256cbc_enc_32"),
        (1.0, "hmac_sha256_156"),
    ];
    const LEGACY_RATCHET_DECRYPT: &[(f64, &str)] = &[
        (2.0, "hmac_sha256_1"),
        (1.0, "hkdf_80"),
        (1.0, "hmac_sha256_156"),
        (1.0, "aes256cbc_dec_32"),
    ];
    let row = |label, id, floor, target| Row {
        label,
        id,
        floor,
        target,
    };
    vec![
        row(
            "encrypt, 1 device",
            "omemo/encrypt_1_device",
            floor_of(&[PAYLOAD_ENCRYPT, RATCHET_ENCRYPT]),
            Some(2.5),
        ),
        row(
            "each extra device",
            "omemo/encrypt_extra_device",
            floor_of(&[RATCHET_ENCRYPT]),
            None,
        ),
        row(
            "decrypt (same chain)",
            "omemo/decrypt",
            floor_of(&[RATCHET_DECRYPT, PAYLOAD_DECRYPT]),
            Some(2.5),
        ),
        row(
            "decrypt with DH step",
            "omemo/decrypt_dh_step",
            floor_of(&[RATCHET_DECRYPT, PAYLOAD_DECRYPT, DH_STEP]),
            None,
        ),
        row(
            "X3DH active",
            "omemo/x3dh_active",
            floor_of(&[X3DH_ACTIVE]),
            Some(1.5),
        ),
        row(
            "X3DH passive",
            "omemo/x3dh_passive",
            floor_of(&[X3DH_PASSIVE]),
            Some(1.5),
        ),
        row(
            "session build + 1st message",
            "omemo/session_build_first_message",
            floor_of(&[X3DH_ACTIVE, FIRST_CHAIN, RATCHET_ENCRYPT]),
            None,
        ),
        row(
            "session respond (parse+build)",
            "omemo/session_respond",
            floor_of(&[X3DH_PASSIVE, DH_STEP, RATCHET_DECRYPT]),
            None,
        ),
        row(
            "bundle check (Bundle::new)",
            "omemo/bundle_check",
            floor_of(&[&[(1.0, "ed25519_verify_strict")]]),
            None,
        ),
        row(
            "legacy encrypt, 1 device",
            "legacy/encrypt_1_device",
            floor_of(&[&[(1.0, "aes128gcm_enc_62")], LEGACY_RATCHET_ENCRYPT]),
            Some(2.5),
        ),
        row(
            "legacy each extra device",
            "legacy/encrypt_extra_device",
            floor_of(&[LEGACY_RATCHET_ENCRYPT]),
            None,
        ),
        row(
            "legacy decrypt (same chain)",
            "legacy/decrypt",
            floor_of(&[LEGACY_RATCHET_DECRYPT, &[(1.0, "aes128gcm_dec_62")]]),
            Some(2.5),
        ),
        row(
            "  part: payload::encrypt",
            "part/payload_encrypt",
            floor_of(&[PAYLOAD_ENCRYPT]),
            None,
        ),
        row(
            "  part: payload::decrypt",
            "part/payload_decrypt",
            floor_of(&[PAYLOAD_DECRYPT]),
            None,
        ),
        row(
            "  part: Session::encrypt",
            "part/session_encrypt",
            floor_of(&[RATCHET_ENCRYPT]),
            None,
        ),
        row(
            "  part: Session::decrypt",
            "part/session_decrypt",
            floor_of(&[RATCHET_DECRYPT]),
            None,
        ),
    ]
}

fn fmt_time(ns: Option<f64>) -> String {
    match ns {
        None => "—".to_owned(),
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{ns:.0} ns"),
    }
}

fn print_report(rounds: &BTreeMap<String, Vec<f64>>, criterion: &Recorder, sample_size: usize) {
    let round_count = rounds.values().map(Vec::len).min().unwrap_or(0);
    let at = |id: &str, round: usize| rounds.get(id).and_then(|v| v.get(round).copied());
    let floor_at = |floor: &Floor, round: usize| {
        floor.iter().try_fold(0.0, |sum, (count, name)| {
            Some(sum + count * at(&format!("primitive/{name}"), round)?)
        })
    };
    let over_rounds = |f: &dyn Fn(usize) -> Option<f64>| {
        let values: Option<Vec<f64>> = (0..round_count).map(f).collect();
        values.and_then(|v| median(&v))
    };

    println!(
        "\nPrimitives — interleaved median ({round_count} rounds) | criterion median ({sample_size} samples):"
    );
    for id in rounds.keys().filter(|id| id.starts_with("primitive/")) {
        println!(
            "  {:<31} {:>10} | {:>10}",
            id.trim_start_matches("primitive/"),
            fmt_time(rounds.get(id).and_then(|v| median(v))),
            fmt_time(criterion.median(id, sample_size)),
        );
    }

    println!(
        "\n{:<30} {:>10} {:>10} {:>6} {:>6}  {:<6} {:>10}",
        "operation", "median", "floor", "ratio", "target", "", "criterion"
    );
    println!("{}", "-".repeat(86));
    for row in rows() {
        let median_ns = rounds.get(row.id).and_then(|v| median(v));
        let floor = over_rounds(&|r| floor_at(&row.floor, r));
        let ratio = over_rounds(&|r| Some(at(row.id, r)? / floor_at(&row.floor, r)?));
        let verdict = match (ratio, row.target) {
            (Some(r), Some(t)) if r <= t => "ok",
            (Some(_), Some(_)) => "MISSED",
            _ => "",
        };
        println!(
            "{:<30} {:>10} {:>10} {:>6} {:>6}  {:<6} {:>10}",
            row.label,
            fmt_time(median_ns),
            fmt_time(floor),
            ratio.map_or("—".to_owned(), |r| format!("{r:.2}×")),
            row.target.map_or("—".to_owned(), |t| format!("≤{t}×")),
            verdict,
            fmt_time(criterion.median(row.id, sample_size)),
        );
    }
    println!("\nWhere the time goes (interleaved medians):");
    for id in rounds.keys().filter(|id| id.starts_with("part/")) {
        println!(
            "  {:<31} {:>10}",
            id.trim_start_matches("part/"),
            fmt_time(rounds.get(id).and_then(|v| median(v)))
        );
    }
    println!(
        "ratio = median over rounds of (operation ÷ floor in the same round); shared \
         machines add noise, compare ratios rather than absolute times."
    );
}

fn main() {
    let args = Args::parse();
    let mut criterion = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .configure_from_args();
    let scenario = Scenario::new(&mut ChaCha20Rng::seed_from_u64(0x0e0e_0002));
    let legacy_scenario = LegacyScenario::new(&mut ChaCha20Rng::seed_from_u64(0x0e0e_0013));
    let mut benches = primitives(1);
    benches.extend(operations(&scenario, 2));
    benches.extend(legacy_operations(&legacy_scenario, 4));
    benches.extend(parts(&scenario, 3));

    let recorder = Recorder::default();
    for group in ["primitive", "omemo", "legacy", "part"] {
        let mut g = criterion.benchmark_group(group);
        for bench in benches.iter_mut().filter(|b| b.group == group) {
            let id = bench.id();
            let run = &mut bench.run;
            g.bench_function(bench.name.as_str(), |b| {
                b.iter_custom(|iters| {
                    let elapsed = run(iters);
                    recorder.record(&id, iters, elapsed);
                    elapsed
                });
            });
        }
        g.finish();
    }
    criterion.final_summary();

    if args.benchmarking {
        let rounds = interleaved(&mut benches);
        print_report(&rounds, &recorder, args.sample_size);
    }
}
