//! The legacy test-vector runner: every file in `tests/legacy-vectors/` (computed with
//! python-oldmemo 2.1.0 and cross-checked there) is reproduced byte for byte, including the
//! internal root, chain and message keys the vectors list.

use base64::Engine as _;
use serde_json::Value;
use x25519_dalek::StaticSecret;

use crate::kdf::{
    hkdf_zero_salt, kdf_ck, kdf_rk_with, CipherKeys, Key32, LEGACY_INFO_MESSAGE_KEY,
    LEGACY_INFO_ROOT_CHAIN, LEGACY_MAC_LEN,
};
use crate::keys::{IdentityKeyPair, IdentityPublicKey, PreKey, Signature, SignedPreKey};
use crate::legacy::{self, payload, IdentityKey, KeyMessage, PreKeyWhisperMessage, WhisperMessage};
use crate::vectors::{array32, bytes, QueueRng};
use crate::version::{Legacy, RatchetHeader};
use crate::{x3dh, BundleError, DecryptionError, PreKeyId, SignedPreKeyId, X25519PublicKey};

fn load(name: &str) -> Value {
    let text = match name {
        "keys" => include_str!("../tests/legacy-vectors/keys.json"),
        "x3dh" => include_str!("../tests/legacy-vectors/x3dh.json"),
        "payload" => include_str!("../tests/legacy-vectors/payload.json"),
        "ratchet" => include_str!("../tests/legacy-vectors/ratchet.json"),
        other => panic!("unknown vector file {other}"),
    };
    let file: Value = serde_json::from_str(text).unwrap();
    assert_eq!(file["namespace"], "eu.siacs.conversations.axolotl");
    file["vectors"].clone()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn id32(v: &Value) -> u32 {
    u32::try_from(v.as_u64().unwrap()).unwrap()
}

fn identity(v: &Value) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&array32(&v["seed"]))
}

fn signed_pre_key(v: &Value) -> SignedPreKey {
    SignedPreKey::from_parts(
        SignedPreKeyId::new(id32(&v["id"])).unwrap(),
        &array32(&v["x25519_private"]),
        Signature::from_bytes(&bytes(&v["signature_wire"])).unwrap(),
        0,
    )
}

fn bob_keys(keys: &Value) -> (IdentityKeyPair, SignedPreKey, PreKey) {
    let pk_v = &keys["bob_pre_key"];
    (
        identity(&keys["bob_identity"]),
        signed_pre_key(&keys["bob_signed_pre_key"]),
        PreKey::from_secret(
            PreKeyId::new(id32(&pk_v["id"])).unwrap(),
            &array32(&pk_v["x25519_private"]),
        ),
    )
}

fn bob_bundle(keys: &Value) -> legacy::Bundle {
    let (bob, spk, pk) = bob_keys(keys);
    legacy::Bundle::from_own_keys(&bob, &spk, [&pk]).unwrap()
}

#[test]
fn legacy_keys_json() {
    let keys = load("keys");
    assert!(keys["omemo2_crosscheck"]
        .as_str()
        .unwrap()
        .starts_with("ok"));
    let omemo2: Value = serde_json::from_str(include_str!("../tests/vectors/keys.json")).unwrap();
    for (name, spk_name) in [
        ("alice_identity", "alice_signed_pre_key"),
        ("bob_identity", "bob_signed_pre_key"),
    ] {
        let v = &keys[name];
        let pair = identity(v);
        let public = pair.public_key();
        // The same identity as the OMEMO 2 vectors, in both forms.
        assert_eq!(
            bytes(&omemo2["vectors"][name]["ed25519_public"]),
            public.as_bytes().to_vec()
        );
        assert_eq!(public.as_bytes().to_vec(), bytes(&v["ed25519_public"]));
        assert_eq!(
            b64(public.as_bytes()),
            v["omemo2_ik_base64"].as_str().unwrap()
        );
        let sign_bit = public.as_bytes()[31] >> 7;
        assert_eq!(
            u64::from(sign_bit),
            v["ed25519_public_sign_bit"].as_u64().unwrap()
        );
        assert_eq!(
            public.to_x25519_bytes().to_vec(),
            bytes(&v["x25519_public"])
        );
        let serialized = public.to_legacy_bytes();
        assert_eq!(serialized.to_vec(), bytes(&v["legacy_serialized"]));
        assert_eq!(
            b64(&serialized),
            v["legacy_identity_key_base64"].as_str().unwrap()
        );
        assert_eq!(
            crate::keys::hex_lower(&serialized),
            v["fingerprint_conversations_stored_hex"].as_str().unwrap()
        );
        let mut scalar = pair.dh_secret().to_bytes();
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        assert_eq!(scalar.to_vec(), bytes(&v["x25519_private_scalar"]));

        // One fingerprint string in both versions.
        let legacy_key = IdentityKey::from_bytes(&serialized).unwrap();
        assert_eq!(legacy_key, IdentityKey::from(public));
        assert_eq!(
            legacy_key.fingerprint(),
            v["fingerprint_grouped"].as_str().unwrap()
        );
        assert_eq!(public.fingerprint(), legacy_key.fingerprint());
        assert!(legacy_key.matches(&public));
        assert_eq!(legacy_key.to_bytes(), serialized);
        // Montgomery → Edwards with the sign bit gives the Ed25519 key back; the other sign
        // gives a different key.
        assert_eq!(
            IdentityPublicKey::from_montgomery(&public.to_x25519_bytes(), sign_bit),
            Ok(public)
        );
        assert_ne!(
            IdentityPublicKey::from_montgomery(&public.to_x25519_bytes(), sign_bit ^ 1),
            Ok(public)
        );

        // The signed pre-key: the signed message is the 33-byte key, the wire signature is
        // python's raw one with the identity's sign bit folded into bit 7 of byte 63.
        let s = &keys[spk_name];
        let spk = signed_pre_key(s);
        assert_eq!(
            spk.public_key().as_bytes().to_vec(),
            bytes(&s["x25519_public"])
        );
        let spk33 = legacy::serialize_public_key(&spk.public_key());
        assert_eq!(spk33.to_vec(), bytes(&s["legacy_serialized"]));
        assert_eq!(spk33.to_vec(), bytes(&s["signed_message"]));
        assert_eq!(legacy::parse_public_key(&spk33), Ok(spk.public_key()));
        let raw = bytes(&s["signature_raw"]);
        let mut folded = raw.clone();
        folded[63] |= sign_bit << 7;
        assert_eq!(folded, bytes(&s["signature_wire"]));
        assert_eq!(
            u64::from(sign_bit),
            s["identity_sign_bit_folded_into_sig63"].as_u64().unwrap()
        );
        assert_eq!(b64(&folded), s["signature_wire_base64"].as_str().unwrap());
        // python's signature verifies the libsignal way and yields the Ed25519 identity
        // (for Alice only because the sign bit is restored from byte 63).
        let pk = PreKey::from_secret(PreKeyId::new(1).unwrap(), &[7u8; 32]);
        let bundle = legacy::Bundle::from_own_keys(&pair, &spk, [&pk]).unwrap();
        assert_eq!(bundle.identity_key(), public);
        assert_eq!(bundle.legacy_identity_key(), legacy_key);
        // Flipping the sign bit breaks it, for either sign.
        let mut flipped = folded.clone();
        flipped[63] ^= 0x80;
        assert!(matches!(
            legacy::Bundle::new(
                legacy_key,
                spk.id(),
                spk.public_key(),
                Signature::from_bytes(&flipped).unwrap(),
                vec![(pk.id(), pk.public_key())],
            ),
            Err(BundleError::BadSignature)
        ));
        // Our own legacy signature (deterministic nonce) verifies the same way and carries
        // the sign bit; an OMEMO 2 signature (over the 32 raw bytes) does not.
        let ours = SignedPreKey::from_parts(
            spk.id(),
            &array32(&s["x25519_private"]),
            pair.sign_legacy(&spk33),
            0,
        );
        assert_eq!(ours.signature().as_bytes()[63] >> 7, sign_bit);
        assert!(legacy::Bundle::from_own_keys(&pair, &ours, [&pk]).is_ok());
        let omemo2_signed = SignedPreKey::from_parts(
            spk.id(),
            &array32(&s["x25519_private"]),
            pair.sign(spk.public_key().as_bytes()),
            0,
        );
        assert_eq!(
            legacy::Bundle::from_own_keys(&pair, &omemo2_signed, [&pk]).unwrap_err(),
            BundleError::BadSignature
        );
    }
    for name in ["bob_pre_key", "alice_base_key"] {
        let v = &keys[name];
        let public =
            X25519PublicKey::from_secret(&StaticSecret::from(array32(&v["x25519_private"])));
        assert_eq!(public.as_bytes().to_vec(), bytes(&v["x25519_public"]));
        assert_eq!(
            legacy::serialize_public_key(&public).to_vec(),
            bytes(&v["legacy_serialized"])
        );
    }
    // Wire keys other than 33 bytes with 0x05 are refused.
    let good = bytes(&keys["bob_pre_key"]["legacy_serialized"]);
    assert!(legacy::parse_public_key(&good).is_ok());
    assert!(legacy::parse_public_key(&good[1..]).is_err());
    let mut wrong_type = good.clone();
    wrong_type[0] = 0x06;
    assert_eq!(
        legacy::parse_public_key(&wrong_type),
        Err(crate::KeyError::UnknownKeyType(0x06))
    );
}

#[test]
fn legacy_x3dh_json() {
    let keys = load("keys");
    let v = load("x3dh");
    let alice = identity(&keys["alice_identity"]);
    let (bob, spk, pk) = bob_keys(&keys);
    let bundle = bob_bundle(&keys);
    assert_eq!(
        bundle.signed_pre_key_signature().as_bytes().to_vec(),
        bytes(&v["bob_spk_signature_wire"])
    );
    let ek = StaticSecret::from(array32(&v["alice_base_key_private"]));
    assert_eq!(
        X25519PublicKey::from_secret(&ek).as_bytes().to_vec(),
        bytes(&v["alice_base_key_public"])
    );

    // The four DH values and the IKM, computed independently of the X3DH code.
    let dh = |secret: &StaticSecret, public: &[u8]| {
        let public: [u8; 32] = public.try_into().unwrap();
        secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(public))
            .to_bytes()
            .to_vec()
    };
    let spk_b = bytes(&v["bob_spk_public"]);
    let dhs = [
        dh(alice.dh_secret(), &spk_b),
        dh(&ek, &bytes(&v["bob_identity_x25519_public"])),
        dh(&ek, &spk_b),
        dh(&ek, &bytes(&v["bob_pk_public"])),
    ];
    let mut ikm = vec![0xffu8; 32];
    for (value, name) in
        dhs.iter()
            .zip(["dh1_ikA_spkB", "dh2_ekA_ikB", "dh3_ekA_spkB", "dh4_ekA_pkB"])
    {
        assert_eq!(value, &bytes(&v[name]), "{name}");
        ikm.extend_from_slice(value);
    }
    assert_eq!(ikm, bytes(&v["hkdf_ikm"]));
    assert_eq!(v["hkdf_info_ascii"], "WhisperText");
    assert_eq!(bytes(&v["hkdf_salt"]), vec![0u8; 32]);
    let mut sk64 = [0u8; 64];
    hkdf_zero_salt(&ikm, b"WhisperText", &mut sk64);
    assert_eq!(sk64.to_vec(), bytes(&v["hkdf_64_bytes_libsignal"]));
    assert_eq!(
        sk64[32..].to_vec(),
        bytes(&v["libsignal_initial_chain_key_unused"])
    );

    // The agreement through the crate's code, both sides.
    let (active, header) =
        x3dh::agree_active::<Legacy>(&alice, &bundle, PreKeyId::new(42).unwrap(), &ek).unwrap();
    assert_eq!(
        active.shared_secret.as_bytes().to_vec(),
        bytes(&v["shared_secret"])
    );
    assert_eq!(&sk64[..32], active.shared_secret.as_bytes());
    assert_eq!(active.associated_data, bytes(&v["session_associated_data"]));
    assert_eq!(header.identity_key, IdentityKey::from(alice.public_key()));
    let passive =
        x3dh::agree_passive::<Legacy>(&bob, &spk, &pk, &header.identity_key, &header.ephemeral_key)
            .unwrap();
    assert_eq!(
        passive.shared_secret.as_bytes().to_vec(),
        bytes(&v["shared_secret"])
    );
    assert_eq!(passive.associated_data, active.associated_data);
    // The MAC's AD per direction is sender ‖ receiver: the session AD, halves swapped for Bob.
    let ad = bytes(&v["session_associated_data"]);
    assert_eq!(ad, bytes(&v["mac_associated_data_alice_to_bob"]));
    let mut swapped = ad[33..].to_vec();
    swapped.extend_from_slice(&ad[..33]);
    assert_eq!(swapped, bytes(&v["mac_associated_data_bob_to_alice"]));
}

#[test]
fn legacy_payload_json() {
    let v = load("payload");
    let plaintext = bytes(&v["plaintext"]);
    assert_eq!(plaintext, v["plaintext_utf8"].as_str().unwrap().as_bytes());
    let key: [u8; 16] = bytes(&v["key"]).try_into().unwrap();
    let iv: [u8; 12] = bytes(&v["iv"]).try_into().unwrap();
    assert_eq!(b64(&iv), v["iv_base64"].as_str().unwrap());
    let sealed = payload::encrypt_with(&key, &iv, &plaintext);
    assert_eq!(sealed.ciphertext, bytes(&v["ciphertext"]));
    assert_eq!(
        b64(&sealed.ciphertext),
        v["ciphertext_base64"].as_str().unwrap()
    );
    assert_eq!(&sealed.key_material.as_bytes()[16..], &bytes(&v["tag"])[..]);
    assert_eq!(
        sealed.key_material.as_bytes().to_vec(),
        bytes(&v["key_material"])
    );
    // The same draw order as python: key, then IV.
    let mut rng = QueueRng::new(&[&v["key"], &v["iv"]]);
    let drawn = payload::encrypt(&plaintext, &mut rng);
    assert_eq!(drawn.ciphertext, sealed.ciphertext);
    let opened = payload::decrypt(&sealed.ciphertext, &iv, &bytes(&v["key_material"])).unwrap();
    assert_eq!(&opened[..], &plaintext[..]);
    // The 16-byte IV variant of old clients decrypts; with the 12-byte IV's tag it does not.
    let long = &v["iv16_variant"];
    assert_eq!(bytes(&long["iv"]).len(), 16);
    assert_eq!(
        b64(&bytes(&long["iv"])),
        long["iv_base64"].as_str().unwrap()
    );
    let mut material = key.to_vec();
    material.extend(bytes(&long["tag"]));
    assert_eq!(material, bytes(&long["key_material"]));
    let opened =
        payload::decrypt(&bytes(&long["ciphertext"]), &bytes(&long["iv"]), &material).unwrap();
    assert_eq!(&opened[..], &plaintext[..]);
    assert_eq!(
        payload::decrypt(
            &bytes(&long["ciphertext"]),
            &bytes(&long["iv"]),
            &bytes(&v["key_material"])
        ),
        Err(crate::PayloadError::BadMac)
    );
}

/// One message's key schedule and bytes, independently of the session code: chain key →
/// message key seed → AES/HMAC/IV → ciphertext → versioned protobuf → MAC.
fn check_message_schedule(m: &Value, chain_key: &[u8; 32]) {
    let (next, seed) = kdf_ck(&Key32::new(*chain_key));
    assert_eq!(seed.as_bytes().to_vec(), bytes(&m["message_key_seed"]));
    if !m["next_chain_key"].is_null() {
        assert_eq!(next.as_bytes().to_vec(), bytes(&m["next_chain_key"]));
    }
    let keys = CipherKeys::derive(seed.as_bytes(), LEGACY_INFO_MESSAGE_KEY);
    let okm = keys.okm();
    assert_eq!(okm.to_vec(), bytes(&m["hkdf_okm"]));
    assert_eq!(okm[..32].to_vec(), bytes(&m["aes_key"]));
    assert_eq!(okm[32..64].to_vec(), bytes(&m["hmac_key"]));
    assert_eq!(okm[64..].to_vec(), bytes(&m["iv"]));
    let ciphertext = keys.encrypt(&bytes(&m["plaintext"]));
    assert_eq!(ciphertext, bytes(&m["aes_cbc_ciphertext"]));
    let dh_pub = legacy::parse_public_key(&bytes(&m["sender_ratchet_serialized"])).unwrap();
    assert_eq!(
        dh_pub.as_bytes().to_vec(),
        bytes(&m["sender_ratchet_public"])
    );
    let header = RatchetHeader {
        n: id32(&m["counter"]),
        pn: id32(&m["previous_counter"]),
        dh_pub,
        ciphertext,
    };
    let versioned = legacy::wire::encode_versioned_message(&header);
    assert_eq!(versioned, bytes(&m["versioned_message"]));
    assert_eq!(
        versioned[1..].to_vec(),
        bytes(&m["whisper_message_protobuf"])
    );
    let ad = bytes(&m["mac_associated_data"]);
    let mut hmac_input = ad.clone();
    hmac_input.extend_from_slice(&versioned);
    assert_eq!(hmac_input, bytes(&m["hmac_input"]));
    assert_eq!(keys.mac_vec(&[&ad, &versioned], 32), bytes(&m["hmac_full"]));
    let mac = keys.mac_vec(&[&ad, &versioned], LEGACY_MAC_LEN);
    assert_eq!(mac, bytes(&m["mac"]));
    // The MAC over the other direction's AD does not verify (the classic porting bug).
    let mut swapped = ad[33..].to_vec();
    swapped.extend_from_slice(&ad[..33]);
    assert!(keys.verify_mac_len(&[&ad, &versioned], &mac, LEGACY_MAC_LEN));
    assert!(!keys.verify_mac_len(&[&swapped, &versioned], &mac, LEGACY_MAC_LEN));
    let mut wire = versioned;
    wire.extend_from_slice(&mac);
    assert_eq!(wire, bytes(&m["whisper_message"]));
    assert_eq!(b64(&wire), m["whisper_message_base64"].as_str().unwrap());
    let parsed = WhisperMessage::from_bytes(&wire).unwrap();
    assert_eq!(parsed.counter(), header.n);
    assert_eq!(parsed.previous_counter(), header.pn);
    assert_eq!(parsed.ratchet_key(), dh_pub);
    assert_eq!(parsed.to_bytes(), wire);
}

#[test]
fn legacy_ratchet_json() {
    let keys = load("keys");
    let x = load("x3dh");
    let v = load("ratchet");
    let m: Vec<&Value> = (1..=5).map(|i| &v[format!("message_{i}")]).collect();
    assert_eq!(v["message_chain_kdf_inputs"]["message_key_constant"], "01");
    assert_eq!(v["message_chain_kdf_inputs"]["chain_key_constant"], "02");

    // The root chain, independently of the session code.
    let sk = Key32::new(array32(&v["x3dh_shared_secret"]));
    let (rk1, ck_a1) = kdf_rk_with(
        &sk,
        &array32(&m[0]["root_dh_output"]),
        LEGACY_INFO_ROOT_CHAIN,
    );
    assert_eq!(rk1.as_bytes().to_vec(), bytes(&m[0]["root_key_after"]));
    assert_eq!(ck_a1.as_bytes().to_vec(), bytes(&m[0]["sending_chain_key"]));
    // Each DH step's receiving half repeats the peer's previous sending half; the sending
    // half moves the root key on.
    let mut root = rk1;
    let mut previous_dh = bytes(&m[0]["root_dh_output"]);
    for (msg, side) in [(m[2], "bob"), (m[3], "alice"), (m[4], "bob")] {
        assert_eq!(
            bytes(&msg[format!("{side}_receiving_root_dh_output")]),
            previous_dh
        );
        let dh = array32(&msg[format!("{side}_sending_root_dh_output")]);
        let (rk, sending) = kdf_rk_with(&root, &dh, LEGACY_INFO_ROOT_CHAIN);
        assert_eq!(rk.as_bytes().to_vec(), bytes(&msg["root_key_after"]));
        assert_eq!(
            sending.as_bytes().to_vec(),
            bytes(&msg["sending_chain_key"])
        );
        root = rk;
        previous_dh = dh.to_vec();
    }
    check_message_schedule(m[0], &array32(&m[0]["sending_chain_key"]));
    check_message_schedule(m[1], &array32(&m[1]["chain_key_used"]));
    for msg in &m[2..] {
        check_message_schedule(msg, &array32(&msg["sending_chain_key"]));
    }

    // The same five messages through the public session API.
    let alice = identity(&keys["alice_identity"]);
    let (bob, spk, pk) = bob_keys(&keys);
    let bundle = bob_bundle(&keys);
    let mut rng = QueueRng::new(&[
        &x["alice_base_key_private"],
        &m[0]["sender_ratchet_private"],
    ]);
    let mut alice_session =
        legacy::Session::initiate(&alice, &bundle, PreKeyId::new(42).unwrap(), &mut rng).unwrap();
    assert_eq!(
        alice_session.associated_data(),
        &bytes(&x["session_associated_data"])[..]
    );
    assert_eq!(
        alice_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m[0]["root_key_after"])
    );
    let out1 = alice_session.encrypt(&bytes(&m[0]["plaintext"])).unwrap();
    assert!(out1.is_key_exchange());
    assert_eq!(out1.to_bytes(), bytes(&m[0]["pre_key_whisper_message"]));
    assert_eq!(
        b64(&out1.to_bytes()),
        m[0]["pre_key_whisper_message_base64"].as_str().unwrap()
    );
    let out2 = alice_session.encrypt(&bytes(&m[1]["plaintext"])).unwrap();
    assert!(
        out2.is_key_exchange(),
        "the key exchange repeats until confirmed"
    );
    assert_eq!(out2.to_bytes(), bytes(&m[1]["pre_key_whisper_message"]));

    // libsignal's form with registrationId parses to the same key exchange.
    let with_reg = bytes(&m[0]["pre_key_whisper_message_with_registration_id"]);
    let parsed_reg = PreKeyWhisperMessage::from_bytes(&with_reg).unwrap();
    assert_eq!(
        u64::from(parsed_reg.registration_id().unwrap()),
        m[0]["registration_id_used_in_variant"].as_u64().unwrap()
    );
    assert_eq!(parsed_reg.to_bytes(), with_reg);
    let kex1 = PreKeyWhisperMessage::from_bytes(&bytes(&m[0]["pre_key_whisper_message"])).unwrap();
    assert_eq!(kex1.registration_id(), None);
    assert_eq!(kex1.message(), parsed_reg.message());
    assert_eq!(kex1.identity_key(), parsed_reg.identity_key());
    assert!(kex1.identity_key().matches(&alice.public_key()));
    assert_eq!(kex1.pre_key_id().get(), 42);
    assert_eq!(kex1.signed_pre_key_id().get(), 1);
    assert_eq!(
        legacy::serialize_public_key(&kex1.base_key()).to_vec(),
        bytes(&keys["alice_base_key"]["legacy_serialized"])
    );

    // Bob builds his side from the libsignal variant (registrationId ignored).
    let mut rng = QueueRng::new(&[&m[2]["sender_ratchet_private"]]);
    let (mut bob_session, first) =
        legacy::Session::respond(&bob, &spk, &pk, &parsed_reg, &mut rng).unwrap();
    assert_eq!(first.plaintext(), &bytes(&m[0]["plaintext"])[..]);
    assert!(bob_session.peer_identity_key().matches(&alice.public_key()));
    assert!(
        bob_session.was_built_by(&kex1),
        "the same key exchange without registrationId"
    );
    let mut no_rng = QueueRng::new(&[]);
    let second = KeyMessage::from_bytes(&bytes(&m[1]["pre_key_whisper_message"])).unwrap();
    let decrypted = bob_session.decrypt(&second, &mut no_rng).unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m[1]["plaintext"])[..]);

    // Bob's empty message (16-byte key) answers the key exchange.
    let out3 = bob_session.encrypt(&bytes(&m[2]["plaintext"])).unwrap();
    assert!(!out3.is_key_exchange());
    assert_eq!(out3.to_bytes(), bytes(&m[2]["whisper_message"]));
    assert_eq!(
        bob_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m[2]["root_key_after"])
    );

    let mut rng = QueueRng::new(&[&m[3]["sender_ratchet_private"]]);
    let decrypted = alice_session
        .decrypt(&KeyMessage::from_bytes(&out3.to_bytes()).unwrap(), &mut rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m[2]["plaintext"])[..]);
    assert!(alice_session.is_confirmed());
    assert_eq!(
        alice_session.ratchet.root_key.as_bytes().to_vec(),
        bytes(&m[3]["root_key_after"])
    );
    let out4 = alice_session.encrypt(&bytes(&m[3]["plaintext"])).unwrap();
    assert!(
        !out4.is_key_exchange(),
        "no key exchange after the peer answered"
    );
    assert_eq!(
        out4.to_bytes(),
        bytes(&m[3]["whisper_message"]),
        "pn = 2 (python)"
    );

    let mut rng = QueueRng::new(&[&m[4]["sender_ratchet_private"]]);
    let decrypted = bob_session
        .decrypt(&KeyMessage::from_bytes(&out4.to_bytes()).unwrap(), &mut rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m[3]["plaintext"])[..]);
    let out5 = bob_session.encrypt(&bytes(&m[4]["plaintext"])).unwrap();
    assert_eq!(
        out5.to_bytes(),
        bytes(&m[4]["whisper_message"]),
        "pn = 1 (python)"
    );
    let mut rng = QueueRng(vec![vec![0x42; 32]]);
    let decrypted = alice_session
        .decrypt(&KeyMessage::from_bytes(&out5.to_bytes()).unwrap(), &mut rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &bytes(&m[4]["plaintext"])[..]);

    // Both sessions survive a snapshot, and a legacy snapshot is not an OMEMO 2 session.
    let restored = legacy::Session::restore(&alice_session.snapshot()).unwrap();
    assert_eq!(&restored.snapshot()[..], &alice_session.snapshot()[..]);
    assert_eq!(
        crate::Session::restore(&alice_session.snapshot()).unwrap_err(),
        crate::SnapshotError::WrongVersion(crate::ProtocolVersion::Legacy)
    );

    // A tampered MAC fails and leaves the session as it was; the original then decrypts.
    let fresh = bob_session.encrypt(&[5u8; 32]).unwrap().to_bytes();
    let mut tampered = fresh.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let before = alice_session.snapshot();
    assert_eq!(
        alice_session
            .decrypt(&KeyMessage::from_bytes(&tampered).unwrap(), &mut no_rng)
            .unwrap_err(),
        DecryptionError::BadMac
    );
    assert_eq!(&alice_session.snapshot()[..], &before[..]);
    let decrypted = alice_session
        .decrypt(&KeyMessage::from_bytes(&fresh).unwrap(), &mut no_rng)
        .unwrap();
    assert_eq!(decrypted.plaintext(), &[5u8; 32]);
}

/// A libsignal sender puts the index of its previous chain's last message into `pn`
/// (python: the chain's length). The legacy receiver keeps the keys through `pn` inclusive,
/// so that last message still decrypts when it arrives after the sender's next chain began.
#[test]
fn a_libsignal_previous_counter_keeps_the_last_message_of_the_old_chain() {
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(9);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKey::generate_legacy(SignedPreKeyId::new(1).unwrap(), &bob, 0, &mut rng);
    let pk = PreKey::generate(PreKeyId::new(5).unwrap(), &mut rng);
    let bundle = legacy::Bundle::from_own_keys(&bob, &spk, [&pk]).unwrap();
    let mut a = legacy::Session::initiate(&alice, &bundle, pk.id(), &mut rng).unwrap();
    let KeyMessage::KeyExchange(kex) = a.encrypt(&[0u8; 32]).unwrap() else {
        panic!("first message is a key exchange")
    };
    let (mut b, _) = legacy::Session::respond(&bob, &spk, &pk, &kex, &mut rng).unwrap();
    let answer = b.encrypt(&[0u8; 16]).unwrap();
    a.decrypt(&answer, &mut rng).unwrap();
    // Bob sends n = 1, 2, 3 on his chain; only n = 1 arrives for now.
    let late: Vec<KeyMessage> = (1..=3u8).map(|i| b.encrypt(&[i; 32]).unwrap()).collect();
    a.decrypt(&late[0], &mut rng).unwrap();
    // Alice answers; Bob's next chain begins.
    let reply = a.encrypt(&[9u8; 32]).unwrap();
    b.decrypt(&reply, &mut rng).unwrap();
    // python (and we) send pn = 4, the old chain's length; libsignal sends 3, the index of
    // its last message.
    assert_eq!(
        b.clone()
            .encrypt(&[4u8; 32])
            .unwrap()
            .message()
            .previous_counter(),
        4
    );
    b.ratchet.previous_sending_length = 3;
    let next = b.encrypt(&[4u8; 32]).unwrap();
    assert_eq!(next.message().previous_counter(), 3);
    assert_eq!(a.decrypt(&next, &mut rng).unwrap().plaintext(), &[4u8; 32]);
    // n = 3, the last message of the old chain, is still decryptable; so is n = 2.
    assert_eq!(
        a.decrypt(&late[2], &mut rng).unwrap().plaintext(),
        &[3u8; 32]
    );
    assert_eq!(
        a.decrypt(&late[1], &mut rng).unwrap().plaintext(),
        &[2u8; 32]
    );
}
