//! Legacy XML end to end against python-oldmemo 2.1.0 (`oldmemo.etree`, schema-validated) and
//! its crypto: bundles both ways, `<encrypted>` elements both ways (key exchanges, bodies and
//! key-transport messages), decrypted with `omemo_crypto::legacy` on our side.
//!
//! `#[ignore]`d because it needs the Python venv (`just venv`); `just test` runs it. The
//! interpreter is `$OMEMO_PYTHON` or `<workspace>/.venv/bin/python`; the peer is
//! `interop/crypto_peer.py` in its legacy mode.

// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use omemo_crypto::legacy::{self as crypto, KeyMessage};
use omemo_crypto::{
    DeviceId, IdentityKeyPair, IdentityPublicKey, PreKey, PreKeyId, SignedPreKey, SignedPreKeyId,
};
use omemo_pep::legacy::{self, EncryptedKey, EncryptedMessage};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{json, Value};
use xmpp_parsers::minidom::Element;

const RUST_JID: &str = "rust@example.org";
const RUST_DEVICE: u32 = 1;
const PYTHON_DEVICE: u32 = 2;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("OMEMO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "Python reference venv not found at {} (run `just venv`, or set OMEMO_PYTHON)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(root.join("interop/crypto_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        assert!(
            self.stdout.read_line(&mut line).unwrap() > 0,
            "python peer exited"
        );
        let response: Value = serde_json::from_str(&line).unwrap();
        if let Some(error) = response.get("error") {
            panic!("python peer failed on {}: {error}", request["cmd"]);
        }
        response
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{{\"cmd\": \"quit\"}}");
        let _ = self.stdin.flush();
        let mut rest = String::new();
        let _ = self.stdout.read_line(&mut rest);
        let _ = self.child.wait();
    }
}

fn hex_of(value: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        value[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {value}")),
    )
    .unwrap()
}

fn id(value: u32) -> DeviceId {
    DeviceId::new(value).unwrap()
}

/// The first seed `[i; 32]` whose Ed25519 key has the wanted sign bit.
fn seed_with_sign_bit(bit: u8) -> [u8; 32] {
    (1u8..=255)
        .map(|i| [i; 32])
        .find(|s| {
            omemo_crypto::hazmat::identity_from_seed(s)
                .public_key()
                .as_bytes()[31]
                >> 7
                == bit
        })
        .unwrap()
}

struct Rust {
    identity: IdentityKeyPair,
    spk: SignedPreKey,
    pre_keys: Vec<PreKey>,
    session: Option<crypto::Session>,
    rng: ChaCha20Rng,
}

impl Rust {
    fn new(seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let identity = omemo_crypto::hazmat::identity_from_seed(&seed);
        let spk =
            SignedPreKey::generate_legacy(SignedPreKeyId::new(1).unwrap(), &identity, 0, &mut rng);
        let pre_keys = (1..=20)
            .map(|i| PreKey::generate(PreKeyId::new(i).unwrap(), &mut rng))
            .collect();
        Self {
            identity,
            spk,
            pre_keys,
            session: None,
            rng,
        }
    }

    fn bundle_xml(&self) -> String {
        let bundle =
            crypto::Bundle::from_own_keys(&self.identity, &self.spk, &self.pre_keys).unwrap();
        String::from(&legacy::bundle_element(&bundle))
    }

    /// An `<encrypted>` with a body for the python device, as XML text.
    fn encrypt(&mut self, body: &[u8]) -> String {
        let sealed = crypto::payload::encrypt(body, &mut self.rng);
        let message = self
            .session
            .as_mut()
            .unwrap()
            .encrypt(sealed.key_material.as_bytes())
            .unwrap();
        let encrypted = EncryptedMessage {
            sid: id(RUST_DEVICE),
            keys: vec![EncryptedKey {
                rid: id(PYTHON_DEVICE),
                prekey: message.is_key_exchange(),
                data: message.to_bytes(),
            }],
            iv: sealed.iv.to_vec(),
            payload: Some(sealed.ciphertext),
        };
        String::from(&encrypted.to_element())
    }

    /// Parses python's `<encrypted>` and decrypts our key; returns the body (if any) and the
    /// ratchet plaintext.
    fn decrypt(&mut self, xml: &str, python_ik: &IdentityPublicKey) -> (Option<Vec<u8>>, Vec<u8>) {
        let elem: Element = xml.parse().unwrap();
        let message = EncryptedMessage::try_from(elem).unwrap();
        assert_eq!(message.sid, id(PYTHON_DEVICE));
        assert_eq!(message.iv.len(), 12);
        let key = message
            .keys_for(id(RUST_DEVICE))
            .next()
            .expect("a key for us");
        let parsed = KeyMessage::from_bytes(&key.data).unwrap();
        assert_eq!(parsed.is_key_exchange(), key.prekey, "prekey attribute");
        let decrypted = match (&parsed, &mut self.session) {
            (KeyMessage::KeyExchange(kex), session)
                if session.as_ref().is_none_or(|s| !s.was_built_by(kex)) =>
            {
                assert!(kex.identity_key().matches(python_ik));
                let pk = self
                    .pre_keys
                    .iter()
                    .find(|pk| pk.id() == kex.pre_key_id())
                    .unwrap();
                let (new, decrypted) =
                    crypto::Session::respond(&self.identity, &self.spk, pk, kex, &mut self.rng)
                        .unwrap();
                *session = Some(new);
                decrypted
            }
            (_, Some(session)) => session.decrypt(&parsed, &mut self.rng).unwrap(),
            (_, None) => panic!("a message without a session"),
        };
        let body = message.payload.as_ref().map(|payload| {
            crypto::payload::decrypt(payload, &message.iv, decrypted.plaintext())
                .unwrap()
                .to_vec()
        });
        (body, decrypted.plaintext().to_vec())
    }
}

/// Whether the (single) key of an `<encrypted>` text has `prekey` set.
fn is_prekey(xml: &str) -> bool {
    let message = EncryptedMessage::try_from(xml.parse::<Element>().unwrap()).unwrap();
    assert_eq!(message.keys.len(), 1);
    message.keys[0].prekey
}

fn python(peer: &mut Peer, seed: [u8; 32]) -> IdentityPublicKey {
    let id = peer.call(json!({"cmd": "identity", "seed": hex::encode(seed), "legacy": true}));
    let ik = IdentityPublicKey::from_bytes(&hex_of(&id, "ik")).unwrap();
    assert_eq!(
        ik,
        omemo_crypto::hazmat::identity_from_seed(&seed).public_key()
    );
    ik
}

fn python_decrypt(peer: &mut Peer, xml: &str, rust: &Rust) -> Value {
    peer.call(json!({
        "cmd": "decrypt_xml", "jid": RUST_JID, "device": RUST_DEVICE, "xml": xml,
        "identity_key": hex::encode(rust.identity.public_key().as_bytes()),
    }))
}

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn rust_initiates_from_the_python_bundle_xml() {
    let mut peer = Peer::spawn();
    let python_ik = python(&mut peer, seed_with_sign_bit(1));
    let mut rust = Rust::new(seed_with_sign_bit(0));

    // python-oldmemo's bundle XML: its identity is rebuilt with the sign bit (1).
    let xml = peer.call(json!({"cmd": "bundle_xml"}))["xml"]
        .as_str()
        .unwrap()
        .to_owned();
    let bundle = legacy::parse_bundle(xml.parse().unwrap()).unwrap();
    assert_eq!(bundle.identity_key(), python_ik);
    let pre_key = bundle.choose_pre_key(&mut rust.rng);
    rust.session =
        Some(crypto::Session::initiate(&rust.identity, &bundle, pre_key, &mut rust.rng).unwrap());

    for i in 0..20u32 {
        let body = format!("Rust #{i}: grüße").into_bytes();
        let xml = rust.encrypt(&body);
        assert_eq!(is_prekey(&xml), i == 0, "prekey until confirmed");
        let answer = python_decrypt(&mut peer, &xml, &rust);
        assert_eq!(hex_of(&answer, "body"), body);
        assert_eq!(answer["new_session"], json!(i == 0));
        if i == 0 {
            // python-oldmemo answers the key exchange with a key-transport message.
            let kt = peer.call(json!({"cmd": "encrypt_xml", "jid": RUST_JID, "device": RUST_DEVICE, "empty": true}));
            let kt = kt["xml"].as_str().unwrap();
            assert!(
                !kt.contains("payload"),
                "no <payload> in a key-transport message"
            );
            let (body, key) = rust.decrypt(kt, &python_ik);
            assert_eq!((body, key.len()), (None, 16));
        }
        let body = format!("python #{i}: ✓").into_bytes();
        let xml = peer.call(json!({"cmd": "encrypt_xml", "jid": RUST_JID, "device": RUST_DEVICE, "body": hex::encode(&body)}));
        let (got, key) = rust.decrypt(xml["xml"].as_str().unwrap(), &python_ik);
        assert_eq!(got, Some(body));
        assert_eq!(key.len(), 32, "key ‖ tag");
    }
}

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn python_initiates_from_our_bundle_xml() {
    let mut peer = Peer::spawn();
    let python_ik = python(&mut peer, seed_with_sign_bit(0));
    // Our identity has sign bit 1: python must take it from our signature.
    let mut rust = Rust::new(seed_with_sign_bit(1));

    let body = b"first words".to_vec();
    let xml = peer.call(json!({
        "cmd": "initiate_xml", "jid": RUST_JID, "device": RUST_DEVICE,
        "bundle_xml": rust.bundle_xml(), "body": hex::encode(&body),
    }));
    let xml = xml["xml"].as_str().unwrap().to_owned();
    assert!(
        xml.contains("prekey=\"true\""),
        "python writes prekey=\"true\""
    );
    let (got, _) = rust.decrypt(&xml, &python_ik);
    assert_eq!(got, Some(body));
    for i in 0..20u32 {
        let body = format!("Rust answers #{i}").into_bytes();
        let xml = rust.encrypt(&body);
        assert!(!is_prekey(&xml), "a responder never sends key exchanges");
        let answer = python_decrypt(&mut peer, &xml, &rust);
        assert_eq!(hex_of(&answer, "body"), body);
        assert_eq!(answer["new_session"], json!(false));
        let body = format!("python #{i}").into_bytes();
        let xml = peer.call(json!({"cmd": "encrypt_xml", "jid": RUST_JID, "device": RUST_DEVICE, "body": hex::encode(&body)}));
        let xml = xml["xml"].as_str().unwrap();
        assert!(!is_prekey(xml), "confirmed after our first answer");
        assert_eq!(rust.decrypt(xml, &python_ik).0, Some(body));
    }
}
