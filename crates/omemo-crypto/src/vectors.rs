//! The test-vector runner: every crypto file in `tests/vectors/` (computed with the Python reference)
//! is reproduced byte for byte. It lives inside the crate so it can also compare the internal
//! root and chain keys the vectors list.

use rand_core::{CryptoRng, RngCore};
use serde_json::Value;
use x25519_dalek::StaticSecret;

use crate::kdf::{kdf_ck, kdf_rk, CipherKeys, Key32, INFO_MESSAGE_KEY, INFO_PAYLOAD};
use crate::keys::{
    Bundle, IdentityKeyPair, IdentityPublicKey, PreKey, Signature, SignedPreKey, X25519PublicKey,
};
use crate::wire::{encode_header_only, AuthenticatedMessage, KeyExchange, KeyMessage};
use crate::{payload, x3dh, PreKeyId, Session, SignedPreKeyId};

fn load(name: &str) -> Value {
    let text = match name {
        "keys" => include_str!("../tests/vectors/keys.json"),
        "x3dh" => include_str!("../tests/vectors/x3dh.json"),
        "payload" => include_str!("../tests/vectors/payload.json"),
        "ratchet" => include_str!("../tests/vectors/ratchet.json"),
        other => panic!("unknown vector file {other}"),
    };
    let file: Value = serde_json::from_str(text).unwrap();
    assert_eq!(file["namespace"], "urn:xmpp:omemo:2");
    file["vectors"].clone()
}

pub(crate) fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a string: {value}")),
    )
    .unwrap()
}

pub(crate) fn array32(value: &Value) -> [u8; 32] {
    bytes(value).try_into().unwrap()
}

/// Hands out fixed byte strings, one per `fill_bytes` call, so the keys the code draws are
/// exactly the vector's keys. Panics if asked for a length it does not have next.
pub(crate) struct QueueRng(pub(crate) Vec<Vec<u8>>);

impl QueueRng {
    pub(crate) fn new(chunks: &[&Value]) -> Self {
        Self(chunks.iter().rev().map(|v| bytes(v)).collect())
    }
}

impl RngCore for QueueRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let chunk = self
            .0
            .pop()
            .expect("the vector supplies no more random bytes");
        assert_eq!(chunk.len(), dest.len(), "random draw of unexpected size");
        dest.copy_from_slice(&chunk);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for QueueRng {}

fn clamp(mut scalar: [u8; 32]) -> [u8; 32] {
    scalar[0] &= 248;
    scalar[31] &= 127;
    scalar[31] |= 64;
    scalar
}

fn identity(v: &Value) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&array32(&v["seed"]))
}

fn bob_keys(keys: &Value) -> (IdentityKeyPair, SignedPreKey, PreKey) {
    let bob = identity(&keys["bob_identity"]);
    let spk_v = &keys["bob_signed_pre_key"];
    let spk = SignedPreKey::from_parts(
        SignedPreKeyId::new(u32::try_from(spk_v["id"].as_u64().unwrap()).unwrap()).unwrap(),
        &array32(&spk_v["x25519_private"]),
        Signature::from_bytes(&bytes(&spk_v["signature_xeddsa_style"])).unwrap(),
        0,
    );
    let pk_v = &keys["bob_pre_key"];
    let pk = PreKey::from_secret(
        PreKeyId::new(u32::try_from(pk_v["id"].as_u64().unwrap()).unwrap()).unwrap(),
        &array32(&pk_v["x25519_private"]),
    );
    (bob, spk, pk)
}

#[test]
fn keys_json() {
    let keys = load("keys");
    for name in ["alice_identity", "bob_identity"] {
        let v = &keys[name];
        let pair = identity(v);
        let public = pair.public_key();
        assert_eq!(
            public.as_bytes().to_vec(),
            bytes(&v["ed25519_public"]),
            "{name}"
        );
        assert_eq!(
            u64::from(public.as_bytes()[31] >> 7),
            v["ed25519_public_sign_bit"].as_u64().unwrap()
        );
        assert_eq!(
            public.to_x25519_bytes().to_vec(),
            bytes(&v["x25519_public"])
        );
        assert_eq!(
            clamp(pair.dh_secret().to_bytes()).to_vec(),
            bytes(&v["x25519_private_scalar"])
        );
        assert_eq!(
            public.fingerprint(),
            v["fingerprint_xep0384"].as_str().unwrap()
        );
        assert_eq!(public.key_id_hex(), v["key_id_qxmpp_hex"].as_str().unwrap());
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
            v["key_id_xep0434_base64"].as_str().unwrap()
        );
        assert_eq!(*pair.seed(), array32(&v["seed"]));
        // The public key parses back through the strict checks.
        assert_eq!(IdentityPublicKey::from_bytes(public.as_bytes()), Ok(public));
    }

    let (bob, spk, pk) = bob_keys(&keys);
    let spk_v = &keys["bob_signed_pre_key"];
    assert_eq!(
        spk.public_key().as_bytes().to_vec(),
        bytes(&spk_v["x25519_public"])
    );
    assert_eq!(
        bytes(&spk_v["signed_message"]),
        spk.public_key().as_bytes().to_vec()
    );
    let bob_public = bob.public_key();
    for field in ["signature_xeddsa_style", "signature_rfc8032"] {
        let sig = Signature::from_bytes(&bytes(&spk_v[field])).unwrap();
        assert!(
            bob_public.verify(spk.public_key().as_bytes(), &sig),
            "{field}"
        );
        // A flipped bit must not verify.
        let mut bad = sig.to_bytes();
        bad[5] ^= 1;
        assert!(!bob_public.verify(
            spk.public_key().as_bytes(),
            &Signature::from_bytes(&bad).unwrap()
        ));
    }
    assert_eq!(
        bob.sign(spk.public_key().as_bytes()).as_bytes().to_vec(),
        bytes(&spk_v["signature_rfc8032"])
    );
    assert_eq!(
        pk.public_key().as_bytes().to_vec(),
        bytes(&keys["bob_pre_key"]["x25519_public"])
    );

    let label = &keys["bob_label"];
    assert_eq!(
        bob.sign(label["label"].as_str().unwrap().as_bytes())
            .as_bytes()
            .to_vec(),
        bytes(&label["labelsig_rfc8032"])
    );

    // A libomemo-c style identity (Curve25519-native, published with sign bit 0) verifies its
    // XEdDSA signature under plain Ed25519 and maps back to its X25519 key.
    let native = &keys["curve25519_native_identity"];
    let ik = IdentityPublicKey::from_bytes(&bytes(&native["ed25519_public_sign0"])).unwrap();
    assert_eq!(
        ik.to_x25519_bytes().to_vec(),
        bytes(&native["x25519_public"])
    );
    let sig = Signature::from_bytes(&bytes(&native["signature"])).unwrap();
    assert!(ik.verify(&bytes(&native["signed_message"]), &sig));

    // Alice's ephemeral key.
    let ek = &keys["alice_ephemeral_key"];
    assert_eq!(
        X25519PublicKey::from_secret(&StaticSecret::from(array32(&ek["x25519_private"])))
            .as_bytes()
            .to_vec(),
        bytes(&ek["x25519_public"])
    );
}

fn bob_bundle(keys: &Value) -> Bundle {
    let (bob, spk, pk) = bob_keys(keys);
    let bundle = Bundle::from_own_keys(&bob, &spk, [&pk]).unwrap();
    assert_eq!(bundle.signed_pre_key_signature(), spk.signature());
    bundle
}

#[test]
fn x3dh_json() {
    let keys = load("keys");
    let v = load("x3dh");
    let alice = identity(&keys["alice_identity"]);
    let (bob, spk, pk) = bob_keys(&keys);
    let bundle = bob_bundle(&keys);
    assert_eq!(
        bundle.signed_pre_key().as_bytes().to_vec(),
        bytes(&v["bob_spk_public"])
    );
    assert_eq!(
        bundle.signed_pre_key_signature().as_bytes().to_vec(),
        bytes(&v["bob_spk_signature"])
    );
    assert_eq!(
        bundle.pre_keys()[0].1.as_bytes().to_vec(),
        bytes(&v["bob_pk_public"])
    );

    // The IKM is built as 0xFF×32 ‖ DH1..DH4.
    let mut ikm = vec![0xffu8; 32];
    for dh in ["dh1_ikA_spkB", "dh2_ekA_ikB", "dh3_ekA_spkB", "dh4_ekA_pkB"] {
        ikm.extend(bytes(&v[dh]));
    }
    assert_eq!(ikm, bytes(&v["hkdf_ikm"]));
    let mut sk64 = [0u8; 64];
    crate::kdf::hkdf_zero_salt(&ikm, b"OMEMO X3DH", &mut sk64);
    assert_eq!(sk64.to_vec(), bytes(&v["hkdf_64_bytes_libomemo_c"]));

    let mut rng = QueueRng::new(&[&v["alice_ek_private"]]);
    let (active, params) =
        x3dh::active(&alice, &bundle, PreKeyId::new(42).unwrap(), &mut rng).unwrap();
    assert_eq!(
        params.ephemeral_key().as_bytes().to_vec(),
        bytes(&v["alice_ek_public"])
    );
    assert_eq!(
        active.shared_secret.as_bytes().to_vec(),
        bytes(&v["shared_secret"])
    );
    assert_eq!(&sk64[..32], active.shared_secret.as_bytes());
    assert_eq!(
        active.associated_data().to_vec(),
        bytes(&v["associated_data"])
    );

    let passive = x3dh::passive(
        &bob,
        &spk,
        &pk,
        &alice.public_key(),
        &params.ephemeral_key(),
    )
    .unwrap();
    assert_eq!(
        passive.shared_secret.as_bytes().to_vec(),
        bytes(&v["shared_secret"])
    );
    assert_eq!(passive.associated_data, active.associated_data);
}

#[test]
fn payload_json() {
    let v = load("payload");
    let key = array32(&v["payload_key"]);
    let keys = CipherKeys::derive(&key, INFO_PAYLOAD);
    assert_eq!(keys.okm().to_vec(), bytes(&v["hkdf_okm"]));
    let plaintext = bytes(&v["plaintext"]);
    assert_eq!(plaintext, v["plaintext_utf8"].as_str().unwrap().as_bytes());
    let (ciphertext, material) = payload::encrypt_with_key(&key, &plaintext);
    assert_eq!(ciphertext, bytes(&v["ciphertext"]));
    assert_eq!(material.as_bytes().to_vec(), bytes(&v["key_material"]));
    assert_eq!(&material.as_bytes()[32..], &bytes(&v["hmac_truncated"])[..]);
    let decrypted = payload::decrypt(&bytes(&v["ciphertext"]), &bytes(&v["key_material"])).unwrap();
    assert_eq!(&decrypted[..], &plaintext[..]);
    assert_eq!(
        crate::KeyMaterial::empty().as_bytes().to_vec(),
        bytes(&v["empty_message_key_material"])
    );
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(&ciphertext),
        v["ciphertext_base64"].as_str().unwrap()
    );
}

/// Checks one message's key schedule and bytes against the vector independently of the
/// session code: chain key → message key → AES/HMAC/IV → ciphertext → MAC.
fn check_message_schedule(m: &Value, ad: &[u8], chain_key: &[u8; 32]) {
    let (next, message_key) = kdf_ck(&Key32::new(*chain_key));
    assert_eq!(message_key.as_bytes().to_vec(), bytes(&m["message_key"]));
    if !m["next_chain_key"].is_null() {
        assert_eq!(next.as_bytes().to_vec(), bytes(&m["next_chain_key"]));
    }
    let keys = CipherKeys::derive(message_key.as_bytes(), INFO_MESSAGE_KEY);
    assert_eq!(keys.okm().to_vec(), bytes(&m["hkdf_okm"]));
    assert_eq!(
        keys.encrypt(&bytes(&m["plaintext"])),
        bytes(&m["aes_cbc_ciphertext"])
    );
    let dh_pub = X25519PublicKey::from_bytes(&bytes(&m["header_dh_pub"])).unwrap();
    let n = u32::try_from(m["header_n"].as_u64().unwrap()).unwrap();
    let pn = u32::try_from(m["header_pn"].as_u64().unwrap()).unwrap();
    assert_eq!(
        encode_header_only(n, pn, &dh_pub),
        bytes(&m["omemo_message_header_only"])
    );
    let mut hmac_input = ad.to_vec();
    hmac_input.extend(bytes(&m["omemo_message"]));
    assert_eq!(hmac_input, bytes(&m["hmac_input"]));
    assert_eq!(
        keys.mac(&[ad, &bytes(&m["omemo_message"])]).to_vec(),
        bytes(&m["mac"])
    );
    // The authenticated message parses and re-serializes to the same bytes.
    let parsed =
        AuthenticatedMessage::from_bytes(&bytes(&m["omemo_authenticated_message"])).unwrap();
    assert_eq!(parsed.counter(), n);
    assert_eq!(parsed.previous_counter(), pn);
    assert_eq!(parsed.to_bytes(), bytes(&m["omemo_authenticated_message"]));
}

#[test]
fn ratchet_json() {
    let keys = load("keys");
    let x = load("x3dh");
    let v = load("ratchet");
    let ad = bytes(&v["associated_data"]);
    let (m1, m2, m3, m4) = (
        &v["message_1"],
        &v["message_2"],
        &v["message_3"],
        &v["message_4"],
    );

    // Independent check of the root-chain KDF steps.
    let sk = Key32::new(array32(&v["x3dh_shared_secret"]));
    let (rk1, ck_a) = kdf_rk(&sk, &array32(&m1["root_dh_output"]));
    assert_eq!(rk1.as_bytes().to_vec(), bytes(&m1["root_key_after"]));
    assert_eq!(ck_a.as_bytes().to_vec(), bytes(&m1["sending_chain_key"]));
    check_message_schedule(m1, &ad, &array32(&m1["sending_chain_key"]));
    check_message_schedule(m2, &ad, &array32(&m2["chain_key_used"]));
    check_message_schedule(m3, &ad, &array32(&m3["sending_chain_key"]));
    check_message_schedule(m4, &ad, &array32(&m4["sending_chain_key"]));

    // The same four messages through the public session API.
    let alice = identity(&keys["alice_identity"]);
    let (bob, spk, pk) = bob_keys(&keys);
    let bundle = bob_bundle(&keys);
    let mut rng = QueueRng::new(&[&x["alice_ek_private"], &m1["sender_ratchet_private"]]);
    let mut alice_session =
        Session::initiate(&alice, &bundle, PreKeyId::new(42).unwrap(), &mut rng).unwrap();
    assert_eq!(alice_session.associated_data().to_vec(), ad);
    assert_eq!(
        alice_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m1["root_key_after"])
    );

    let out1 = alice_session.encrypt(&bytes(&m1["plaintext"])).unwrap();
    assert!(out1.is_key_exchange());
    assert_eq!(out1.to_bytes(), bytes(&m1["omemo_key_exchange"]));
    let out2 = alice_session.encrypt(&bytes(&m2["plaintext"])).unwrap();
    assert!(
        out2.is_key_exchange(),
        "kex repeats until the session is confirmed"
    );
    assert_eq!(out2.to_bytes(), bytes(&m2["omemo_key_exchange"]));

    let kex1 = KeyExchange::from_bytes(&bytes(&m1["omemo_key_exchange"])).unwrap();
    assert_eq!(kex1.to_bytes(), bytes(&m1["omemo_key_exchange"]));
    let mut rng = QueueRng::new(&[&m3["sender_ratchet_private"]]);
    let (mut bob_session, first) = Session::respond(&bob, &spk, &pk, &kex1, &mut rng).unwrap();
    assert_eq!(first.plaintext(), &bytes(&m1["plaintext"])[..]);
    assert_eq!(bob_session.peer_identity_key(), alice.public_key());
    assert_eq!(
        bob_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m3["root_key_after"])
    );

    let second = KeyMessage::from_bytes(&bytes(&m2["omemo_key_exchange"])).unwrap();
    let mut no_rng = QueueRng::new(&[]);
    let decrypted = bob_session.decrypt(&second, &mut no_rng).unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m2["plaintext"])[..]);

    let out3 = bob_session.encrypt(&bytes(&m3["plaintext"])).unwrap();
    assert!(!out3.is_key_exchange());
    assert_eq!(out3.to_bytes(), bytes(&m3["omemo_authenticated_message"]));

    let mut rng = QueueRng::new(&[&m4["sender_ratchet_private"]]);
    let decrypted = alice_session
        .decrypt(&KeyMessage::from_bytes(&out3.to_bytes()).unwrap(), &mut rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &[0u8; 32][..]);
    assert!(alice_session.is_confirmed());
    assert_eq!(
        alice_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m4["root_key_after"])
    );

    let out4 = alice_session.encrypt(&bytes(&m4["plaintext"])).unwrap();
    assert!(!out4.is_key_exchange(), "no kex after the peer answered");
    assert_eq!(out4.to_bytes(), bytes(&m4["omemo_authenticated_message"]));
    // Bob's next ratchet key is not part of the vectors; any key will do.
    let mut rng = QueueRng(vec![vec![0x42; 32]]);
    let decrypted = bob_session
        .decrypt(&KeyMessage::from_bytes(&out4.to_bytes()).unwrap(), &mut rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m4["plaintext"])[..]);

    // Every vector ciphertext decrypts on a fresh session built from the vector bytes only.
    let mut rng = QueueRng::new(&[&m3["sender_ratchet_private"]]);
    let kex2 = KeyExchange::from_bytes(&bytes(&m2["omemo_key_exchange"])).unwrap();
    let (mut fresh_bob, first) = Session::respond(&bob, &spk, &pk, &kex2, &mut rng).unwrap();
    assert_eq!(first.plaintext(), &bytes(&m2["plaintext"])[..]);
    let late = fresh_bob
        .decrypt(&KeyMessage::KeyExchange(kex1), &mut no_rng)
        .unwrap();
    assert_eq!(late.plaintext(), &bytes(&m1["plaintext"])[..]);
}
