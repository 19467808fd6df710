//! Fuzz targets for the OMEMO stack (OMEMO 2 and legacy), as plain functions.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the properties
//! that hold for every input (round trips, "on error the session is unchanged", "a tampered
//! message never decrypts"). The same functions are called by the libFuzzer binaries in
//! `fuzz_targets/` (feature `libfuzzer`, nightly or `RUSTC_BOOTSTRAP=1`) and by
//! `tests/replay.rs`, which replays `corpus/<target>/` and `artifacts/regressions/<target>/`
//! on stable.
//!
//! - [`protobuf`]: `KeyMessage`, `AuthenticatedMessage`, `KeyExchange` and session snapshots,
//!   and the legacy `WhisperMessage` / `PreKeyWhisperMessage` and legacy snapshots.
//! - [`decrypt`]: arbitrary bytes, or a script of encrypt/deliver/tamper steps, against a live
//!   session pair built from a fixed seed.
//! - [`pep_xml`]: `<encrypted>`, `<devices>`, `<bundle>` and the SCE `<envelope>`, and the
//!   legacy `<encrypted>`, `<list>` and `<bundle>`.
//! - [`bookmarks`]: `detect` and `import` for every bookmark [`Format`], and every exporter.
//! - [`sync`]: the merge inputs: two sync states from a peer, or a bookmark file recorded by
//!   two replicas, merged both ways, materialized and exported in every format.

#![forbid(unsafe_code)]
// A fuzz target reports a broken property by panicking; that is its whole job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use bookmarks::{BookmarkTree, Format};
use omemo_crypto::{
    legacy, payload, AuthenticatedMessage, Bundle, IdentityKeyPair, KeyExchange, KeyMessage,
    PreKey, PreKeyId, Session, SignedPreKey, SignedPreKeyId,
};
use omemo_pep::omemo2::{bundle_element, parse_bundle, DeviceList, EncryptedMessage};
use omemo_pep::sce::Envelope;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xmpp_parsers::minidom::Element;

/// The fuzz targets by name, as used for the corpus directories.
pub const TARGETS: [(&str, fn(&[u8])); 5] = [
    ("protobuf", protobuf),
    ("decrypt", decrypt),
    ("pep_xml", pep_xml),
    ("bookmarks", bookmarks),
    ("sync", sync),
];

// ---------------------------------------------------------------------------------------
// protobuf

/// Parses `data` as every protobuf message and checks that whatever parses re-encodes to
/// something that parses back to the same value; also fuzzes [`Session::restore`].
pub fn protobuf(data: &[u8]) {
    if let Ok(message) = KeyMessage::from_bytes(data) {
        let encoded = message.to_bytes();
        // prost fills a missing proto2 `required` integer with 0 and re-encoding writes it, so
        // the canonical form can be longer than the input (and then over the size limit).
        if encoded.len() <= omemo_crypto::MAX_KEY_MESSAGE_LEN {
            let again = KeyMessage::from_bytes(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded KeyMessage does not parse: {e}"));
            assert_eq!(again, message, "KeyMessage round trip changed the value");
            assert_eq!(
                again.to_bytes(),
                encoded,
                "KeyMessage encoding is not stable"
            );
        }
    }
    if let Ok(message) = AuthenticatedMessage::from_bytes(data) {
        let encoded = message.to_bytes();
        if encoded.len() <= omemo_crypto::MAX_KEY_MESSAGE_LEN {
            let again = AuthenticatedMessage::from_bytes(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded AuthenticatedMessage does not parse: {e}"));
            assert_eq!(
                again, message,
                "AuthenticatedMessage round trip changed the value"
            );
        }
    }
    if let Ok(kex) = KeyExchange::from_bytes(data) {
        let encoded = kex.to_bytes();
        if encoded.len() <= omemo_crypto::MAX_KEY_MESSAGE_LEN {
            let again = KeyExchange::from_bytes(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded KeyExchange does not parse: {e}"));
            assert_eq!(again, kex, "KeyExchange round trip changed the value");
        }
    }
    if let Ok(session) = Session::restore(data) {
        let snapshot = session.snapshot();
        let again = Session::restore(&snapshot)
            .unwrap_or_else(|e| panic!("a fresh snapshot does not restore: {e}"));
        assert_eq!(
            *again.snapshot(),
            *snapshot,
            "snapshot round trip is not stable"
        );
    }
    legacy_protobuf(data);
}

/// The legacy half of [`protobuf`]: the same round-trip properties for
/// `0x33 ‖ WhisperMessage ‖ MAC` and `0x33 ‖ PreKeyWhisperMessage`, and legacy snapshots.
fn legacy_protobuf(data: &[u8]) {
    if let Ok(message) = legacy::KeyMessage::from_bytes(data) {
        let encoded = message.to_bytes();
        if encoded.len() <= omemo_crypto::MAX_KEY_MESSAGE_LEN {
            let again = legacy::KeyMessage::from_bytes(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded legacy KeyMessage does not parse: {e}"));
            assert_eq!(
                again, message,
                "legacy KeyMessage round trip changed the value"
            );
            assert_eq!(again.to_bytes(), encoded, "legacy encoding is not stable");
        }
    }
    if let Ok(message) = legacy::WhisperMessage::from_bytes(data) {
        // The bytes are kept as received (the MAC covers them): the round trip is exact.
        assert_eq!(
            message.to_bytes(),
            data,
            "WhisperMessage did not keep its bytes"
        );
    }
    if let Ok(kex) = legacy::PreKeyWhisperMessage::from_bytes(data) {
        let encoded = kex.to_bytes();
        if encoded.len() <= omemo_crypto::MAX_KEY_MESSAGE_LEN {
            let again = legacy::PreKeyWhisperMessage::from_bytes(&encoded)
                .unwrap_or_else(|e| panic!("re-encoded PreKeyWhisperMessage does not parse: {e}"));
            assert_eq!(
                again, kex,
                "PreKeyWhisperMessage round trip changed the value"
            );
        }
    }
    if let Ok(session) = legacy::Session::restore(data) {
        assert!(
            Session::restore(data).is_err(),
            "one snapshot restores as both versions"
        );
        let snapshot = session.snapshot();
        let again = legacy::Session::restore(&snapshot)
            .unwrap_or_else(|e| panic!("a fresh legacy snapshot does not restore: {e}"));
        assert_eq!(
            *again.snapshot(),
            *snapshot,
            "legacy snapshot round trip is not stable"
        );
    }
}

// ---------------------------------------------------------------------------------------
// decrypt

/// The live session pair every [`decrypt`] input starts from.
struct LivePair {
    alice: Vec<u8>,
    bob: Vec<u8>,
    /// The key exchange Alice sent first (already consumed by Bob).
    first_key_exchange: Vec<u8>,
}

/// Alice initiates, Bob answers the key exchange, Alice reads the answer: both sessions are
/// established and confirmed. Deterministic (fixed ChaCha20 seed), as in
/// `crates/omemo-crypto/tests/properties.rs`.
fn live_pair() -> &'static LivePair {
    static PAIR: OnceLock<LivePair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(0x0e0e_0002);
        let alice_id = IdentityKeyPair::generate(&mut rng);
        let bob_id = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(SignedPreKeyId::new(1).unwrap(), &bob_id, 0, &mut rng);
        let pk = PreKey::generate(PreKeyId::new(7).unwrap(), &mut rng);
        let bundle = Bundle::from_own_keys(&bob_id, &spk, [&pk]).unwrap();
        let mut alice = Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
        let first = alice.encrypt(&[1u8; 48]).unwrap();
        let KeyMessage::KeyExchange(kex) = &first else {
            panic!("the first message must be a key exchange")
        };
        let (mut bob, _) = Session::respond(&bob_id, &spk, &pk, kex, &mut rng).unwrap();
        let answer = bob.encrypt(&[0u8; 32]).unwrap();
        alice.decrypt(&answer, &mut rng).unwrap();
        assert!(alice.is_confirmed());
        LivePair {
            alice: alice.snapshot().to_vec(),
            bob: bob.snapshot().to_vec(),
            first_key_exchange: first.to_bytes(),
        }
    })
}

/// Who a script step acts on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Alice,
    Bob,
}

struct Live {
    alice: Session,
    bob: Session,
    rng: ChaCha20Rng,
    /// Messages encrypted during the script: sender, plaintext, wire bytes.
    sent: Vec<(Side, Vec<u8>, Vec<u8>)>,
}

impl Live {
    fn new() -> Self {
        let pair = live_pair();
        Self {
            alice: Session::restore(&pair.alice).unwrap(),
            bob: Session::restore(&pair.bob).unwrap(),
            rng: ChaCha20Rng::seed_from_u64(7),
            sent: Vec::new(),
        }
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::Alice => &mut self.alice,
            Side::Bob => &mut self.bob,
        }
    }

    /// Parses and decrypts `bytes` on `side`; on any error the session must be unchanged.
    /// Returns the parsed message and the plaintext on success.
    fn receive(&mut self, side: Side, bytes: &[u8]) -> Option<(KeyMessage, Vec<u8>)> {
        let message = KeyMessage::from_bytes(bytes).ok()?;
        let rng = &mut self.rng;
        let session = match side {
            Side::Alice => &mut self.alice,
            Side::Bob => &mut self.bob,
        };
        let before = session.snapshot();
        match session.decrypt(&message, rng) {
            Ok(decrypted) => Some((message, decrypted.plaintext().to_vec())),
            Err(_) => {
                assert!(
                    *session.snapshot() == *before,
                    "Session::decrypt failed but changed the session"
                );
                None
            }
        }
    }
}

/// First byte of a [`decrypt`] script (no `KeyMessage` starts with it).
pub const SCRIPT_MAGIC: u8 = b'S';

/// Script step: Alice encrypts (the next byte is the plaintext length / 4).
pub const OP_ALICE_ENCRYPT: u8 = 0;
/// Script step: Bob encrypts (the next byte is the plaintext length / 4).
pub const OP_BOB_ENCRYPT: u8 = 1;
/// Script step: deliver sent message `#index` (next byte, modulo the count) to its peer.
pub const OP_DELIVER: u8 = 2;
/// Script step: deliver sent message `#index` with byte `pos` XOR `mask` (next three bytes).
pub const OP_DELIVER_TAMPERED: u8 = 3;
/// Script step: raw bytes (next byte: length, then the bytes) to Bob.
pub const OP_RAW_TO_BOB: u8 = 4;
/// Script step: raw bytes (next byte: length, then the bytes) to Alice.
pub const OP_RAW_TO_ALICE: u8 = 5;
/// Script step: snapshot and restore both sessions.
pub const OP_RESTORE: u8 = 6;

/// Decrypts arbitrary bytes against a live session pair.
///
/// Input not starting with [`SCRIPT_MAGIC`] is parsed as one `<key>` and decrypted by Bob
/// and by Alice; it is also given to `payload::decrypt` as a payload ciphertext. Input
/// starting with [`SCRIPT_MAGIC`] is a script of `OP_*` steps, so that the fuzzer can reach
/// deep ratchet states with valid MACs (out-of-order delivery, replays, DH ratchet steps,
/// tampering). Properties: no panic; on error a session is unchanged; a tampered message
/// decrypts only if its authenticated part is unchanged, and then to the original plaintext.
pub fn decrypt(data: &[u8]) {
    let mut live = Live::new();
    let Some((&SCRIPT_MAGIC, mut script)) = data.split_first() else {
        live.receive(Side::Bob, data);
        live.receive(Side::Alice, data);
        let _ = payload::decrypt(data, &[0x42; 48]);
        if let Some(key_material) = data.get(..48) {
            let _ = payload::decrypt(data.get(48..).unwrap_or_default(), key_material);
        }
        return;
    };
    let mut steps = 0;
    while let Some((&op, rest)) = script.split_first() {
        script = rest;
        steps += 1;
        if steps > 64 {
            break;
        }
        let mut next = || {
            let (&b, rest) = script.split_first().unwrap_or((&0, &[]));
            script = rest;
            b
        };
        match op % 7 {
            OP_ALICE_ENCRYPT | OP_BOB_ENCRYPT => {
                let side = if op % 7 == OP_ALICE_ENCRYPT {
                    Side::Alice
                } else {
                    Side::Bob
                };
                let len = usize::from(next()) * 4;
                let tag = u8::try_from(live.sent.len() % 256).unwrap_or(0);
                let plaintext = vec![tag; len];
                if let Ok(message) = live.session(side).encrypt(&plaintext) {
                    live.sent.push((side, plaintext, message.to_bytes()));
                }
            }
            OP_DELIVER | OP_DELIVER_TAMPERED => {
                let index = usize::from(next());
                let tamper = (op % 7 == OP_DELIVER_TAMPERED).then(|| (next(), next()));
                if live.sent.is_empty() {
                    continue;
                }
                let (from, plaintext, wire) = live.sent[index % live.sent.len()].clone();
                let to = if from == Side::Alice {
                    Side::Bob
                } else {
                    Side::Alice
                };
                let mut bytes = wire.clone();
                if let Some((pos, mask)) = tamper {
                    let pos = usize::from(pos) % bytes.len();
                    bytes[pos] ^= mask;
                }
                if let Some((message, got)) = live.receive(to, &bytes) {
                    let original = KeyMessage::from_bytes(&wire).unwrap();
                    assert_eq!(
                        message.message(),
                        original.message(),
                        "a message with a changed MAC or header decrypted"
                    );
                    assert_eq!(got, plaintext, "decrypted to a different plaintext");
                }
            }
            OP_RAW_TO_BOB | OP_RAW_TO_ALICE => {
                let len = usize::from(next());
                let (bytes, rest) = script.split_at(len.min(script.len()));
                script = rest;
                let side = if op % 7 == OP_RAW_TO_BOB {
                    Side::Bob
                } else {
                    Side::Alice
                };
                live.receive(side, bytes);
            }
            _ => {
                for side in [Side::Alice, Side::Bob] {
                    let snapshot = live.session(side).snapshot();
                    let restored = Session::restore(&snapshot)
                        .unwrap_or_else(|e| panic!("a live snapshot does not restore: {e}"));
                    assert!(*restored.snapshot() == *snapshot, "snapshot not stable");
                    *live.session(side) = restored;
                }
            }
        }
    }
}

/// Seed inputs for [`decrypt`]: messages that decrypt against the live pair, the consumed
/// key exchange, and a few scripts. Used to build `corpus/decrypt/`.
pub fn decrypt_seeds() -> Vec<(String, Vec<u8>)> {
    let pair = live_pair();
    let mut seeds = vec![(
        "first-key-exchange-replayed".to_owned(),
        pair.first_key_exchange.clone(),
    )];
    let mut alice = Session::restore(&pair.alice).unwrap();
    let mut bob = Session::restore(&pair.bob).unwrap();
    for i in 0..3u8 {
        let m = alice.encrypt(&[i; 48]).unwrap();
        seeds.push((format!("alice-to-bob-{i}"), m.to_bytes()));
        let m = bob.encrypt(&[i; 32]).unwrap();
        seeds.push((format!("bob-to-alice-{i}"), m.to_bytes()));
    }
    let scripts: [(&str, &[u8]); 4] = [
        // Alice sends three, Bob reads them out of order and twice.
        (
            "script-out-of-order",
            &[SCRIPT_MAGIC, 0, 12, 0, 12, 0, 12, 2, 2, 2, 0, 2, 1, 2, 0],
        ),
        // Ping-pong with DH ratchet steps, a snapshot/restore in the middle.
        (
            "script-ping-pong",
            &[
                SCRIPT_MAGIC,
                0,
                8,
                2,
                0,
                1,
                8,
                2,
                1,
                6,
                0,
                8,
                2,
                2,
                1,
                0,
                2,
                3,
            ],
        ),
        // A tampered delivery, then the real one.
        (
            "script-tamper",
            &[SCRIPT_MAGIC, 0, 12, 3, 0, 40, 1, 3, 0, 2, 0x80, 2, 0],
        ),
        // Raw bytes to both sides.
        (
            "script-raw",
            &[SCRIPT_MAGIC, 4, 3, 0x0a, 0x01, 0x00, 5, 2, 0x08, 0x07],
        ),
    ];
    for (name, script) in scripts {
        seeds.push((name.to_owned(), script.to_vec()));
    }
    seeds
}

/// Bob's side of the live pair, as a snapshot (a seed for [`protobuf`]).
pub fn live_snapshot() -> Vec<u8> {
    live_pair().bob.clone()
}

/// A snapshot of an established legacy session (Bob's side), as a corpus seed for the
/// legacy half of [`protobuf`].
pub fn legacy_live_snapshot() -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0e0e_0013);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKey::generate_legacy(SignedPreKeyId::new(1).unwrap(), &bob_id, 0, &mut rng);
    let pk = PreKey::generate(PreKeyId::new(7).unwrap(), &mut rng);
    let bundle = legacy::Bundle::from_own_keys(&bob_id, &spk, [&pk]).unwrap();
    let mut alice = legacy::Session::initiate(&alice_id, &bundle, pk.id(), &mut rng).unwrap();
    let legacy::KeyMessage::KeyExchange(kex) = alice.encrypt(&[1u8; 32]).unwrap() else {
        panic!("the first message must be a key exchange")
    };
    let (mut bob, _) = legacy::Session::respond(&bob_id, &spk, &pk, &kex, &mut rng).unwrap();
    let answer = bob.encrypt(&[0u8; 16]).unwrap();
    alice.decrypt(&answer, &mut rng).unwrap();
    bob.snapshot().to_vec()
}

/// True if `bytes` decrypts on one side of a fresh live pair (used by the replay tests to
/// check that the seed messages reach the success path).
pub fn decrypts_once(bytes: &[u8]) -> bool {
    let mut live = Live::new();
    live.receive(Side::Bob, bytes).is_some() || live.receive(Side::Alice, bytes).is_some()
}

// ---------------------------------------------------------------------------------------
// pep_xml

/// Parses `data` as XML and tries every `omemo-pep` element on it; also parses it as an SCE
/// envelope. Whatever parses must serialize back to an element that parses to the same value
/// (for the envelope: the same text and affixes, and a serialization that is a fixed point).
pub fn pep_xml(data: &[u8]) {
    if let Ok(envelope) = Envelope::from_bytes(data) {
        if let Ok(bytes) = envelope.to_bytes() {
            let again = Envelope::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("a serialized envelope does not parse: {e}"));
            // Not `again == envelope`: the content is raw minidom, and the parser may split
            // one text node in two (e.g. at a literal `>`), which serialization merges again.
            // Same text, same serialization: that is the property.
            assert_eq!(
                again.body(),
                envelope.body(),
                "envelope round trip changed the body"
            );
            assert_eq!(
                again.to_bytes().ok().as_deref(),
                Some(&bytes[..]),
                "envelope serialization is not a fixed point"
            );
            assert_eq!(
                (&again.rpad, &again.time, &again.to, &again.from),
                (&envelope.rpad, &envelope.time, &envelope.to, &envelope.from),
                "envelope round trip changed an affix"
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(elem) = text.parse::<Element>() else {
        return;
    };
    if let Ok(message) = EncryptedMessage::try_from(elem.clone()) {
        let again = EncryptedMessage::try_from(message.to_element())
            .unwrap_or_else(|e| panic!("a serialized <encrypted> does not parse: {e}"));
        assert_eq!(again, message, "<encrypted> round trip changed the value");
        for key in message.keys.iter().flat_map(|r| r.keys.iter()) {
            let _ = KeyMessage::from_bytes(&key.data);
        }
    }
    if let Ok(list) = DeviceList::try_from(elem.clone()) {
        let again = DeviceList::try_from(list.to_element())
            .unwrap_or_else(|e| panic!("a serialized <devices> does not parse: {e}"));
        assert_eq!(again, list, "<devices> round trip changed the value");
    }
    if let Ok(bundle) = parse_bundle(elem.clone()) {
        let again = parse_bundle(bundle_element(&bundle))
            .unwrap_or_else(|e| panic!("a serialized <bundle> does not parse: {e}"));
        assert_eq!(again, bundle, "<bundle> round trip changed the value");
    }
    legacy_xml(elem);
}

/// The legacy half of [`pep_xml`]: `<encrypted>`, `<list>` and `<bundle>` in
/// `eu.siacs.conversations.axolotl` round trip through their checked forms.
fn legacy_xml(elem: Element) {
    use omemo_pep::legacy as xml;
    if let Ok(message) = xml::EncryptedMessage::try_from(elem.clone()) {
        assert!(
            message.iv.len() == 12 || message.iv.len() == 16,
            "an <iv> of another length was accepted"
        );
        let again = xml::EncryptedMessage::try_from(message.to_element())
            .unwrap_or_else(|e| panic!("a serialized legacy <encrypted> does not parse: {e}"));
        assert_eq!(
            again, message,
            "legacy <encrypted> round trip changed the value"
        );
        for key in &message.keys {
            let _ = legacy::KeyMessage::from_bytes(&key.data);
        }
    }
    if let Ok(list) = xml::DeviceList::try_from(elem.clone()) {
        let again = xml::DeviceList::try_from(list.to_element())
            .unwrap_or_else(|e| panic!("a serialized <list> does not parse: {e}"));
        assert_eq!(again, list, "<list> round trip changed the value");
    }
    if let Ok(bundle) = xml::parse_bundle(elem) {
        let again = xml::parse_bundle(xml::bundle_element(&bundle))
            .unwrap_or_else(|e| panic!("a serialized legacy <bundle> does not parse: {e}"));
        assert_eq!(
            again, bundle,
            "legacy <bundle> round trip changed the value"
        );
    }
}

// ---------------------------------------------------------------------------------------
// bookmarks

/// Runs `detect` and `import` for every format on `data`. A tree that imports must survive
/// the canonical JSON round trip unchanged, and its Netscape HTML export must import again.
pub fn bookmarks(data: &[u8]) {
    let detected = bookmarks::detect(data, None);
    let _ = bookmarks::detect(data, Some(Path::new("bookmarks.json")));
    for format in Format::ALL {
        let Ok(tree) = bookmarks::import(data, format) else {
            continue;
        };
        check_tree(&tree);
        if detected.as_ref().is_ok_and(|d| *d == format) {
            let (auto_format, auto_tree) = bookmarks::import_auto(data, None)
                .unwrap_or_else(|e| panic!("import_auto fails where import succeeds: {e}"));
            assert_eq!(auto_format, format);
            assert_eq!(auto_tree, tree);
        }
    }
}

fn check_tree(tree: &BookmarkTree) {
    let json = tree
        .to_canonical_json()
        .unwrap_or_else(|e| panic!("an imported tree does not serialize: {e}"));
    let again = BookmarkTree::from_canonical_json(&json)
        .unwrap_or_else(|e| panic!("canonical JSON does not read back: {e}"));
    assert_eq!(&again, tree, "canonical JSON round trip changed the tree");
    assert_eq!(
        again.to_canonical_json().ok().as_deref(),
        Some(&json[..]),
        "canonical JSON is not deterministic"
    );
    let html = tree.to_netscape_html();
    let _ = bookmarks::import(html.as_bytes(), Format::NetscapeHtml);
    check_exports(tree);
}

/// Every exporter's output imports again in its format.
fn check_exports(tree: &BookmarkTree) {
    for format in Format::ALL {
        let bytes = bookmarks::export(tree, format)
            .unwrap_or_else(|e| panic!("{format} export of an imported tree fails: {e}"));
        if let Err(e) = bookmarks::import(&bytes, format) {
            // Only the nesting limit may refuse what an exporter wrote (a deep tree from a
            // format that counts depth differently).
            assert!(
                matches!(e, bookmarks::ImportError::TooDeep { .. }),
                "{format} export does not import again: {e}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// sync

/// The merge inputs. First byte even: the rest is two sync states as JSON, separated by a NUL
/// byte, as a peer would send them; both must be refused or merge the same way in both
/// directions. First byte odd: the rest is a bookmark file, recorded by two replicas (with a
/// common base when the byte is 1 mod 4), merged both ways, and the merged state materialized
/// and exported in every format.
pub fn sync(data: &[u8]) {
    use bookmarks::sync::{materialize, merge, record, MergeOptions, State};

    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let forced = MergeOptions {
        force: true,
        ..MergeOptions::default()
    };
    let merged = if mode % 2 == 0 {
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let (a, b) = rest.split_at(cut);
        let b = b.get(1..).unwrap_or_default();
        let (Ok(a), Ok(b)) = (State::from_json(a), State::from_json(b)) else {
            return;
        };
        let ab = merge(&a, &a, &b, &forced).unwrap_or_else(|e| panic!("valid states refused: {e}"));
        let ba = merge(&b, &b, &a, &forced).unwrap_or_else(|e| panic!("valid states refused: {e}"));
        assert_eq!(ab.state, ba.state, "the merge depends on the order");
        ab.state
    } else {
        let Ok((format, tree)) = bookmarks::import_auto(rest, None) else {
            return;
        };
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(*mode));
        let base = if mode % 4 == 1 {
            record(&State::default(), &tree, format, 9, &mut rng).expect("record")
        } else {
            State::default()
        };
        let local = record(&base, &tree, format, 1, &mut rng).expect("record");
        // The remote drops the first top-level node and renames what it can.
        let mut other = tree.clone();
        if !other.roots.is_empty() {
            other.roots.remove(0);
        }
        let remote = record(&base, &other, format, 2, &mut rng).expect("record");
        let ab = merge(&base, &local, &remote, &forced)
            .unwrap_or_else(|e| panic!("recorded states refused: {e}"));
        let ba = merge(&base, &remote, &local, &forced)
            .unwrap_or_else(|e| panic!("recorded states refused: {e}"));
        assert_eq!(ab.state, ba.state, "the merge depends on the order");
        ab.state
    };
    let again = merge(&merged, &merged, &merged, &forced).expect("self merge");
    assert_eq!(
        again.state, merged,
        "merging a state with itself changed it"
    );
    assert!(
        again.diff.is_empty(),
        "merging a state with itself reports changes"
    );
    for format in Format::ALL {
        let tree = materialize(&merged, format);
        let bytes = bookmarks::export(&tree, format)
            .unwrap_or_else(|e| panic!("{format} export of a merged state fails: {e}"));
        if let Err(e) = bookmarks::import(&bytes, format) {
            assert!(
                matches!(e, bookmarks::ImportError::TooDeep { .. }),
                "{format} export of a merged state does not import: {e}"
            );
        }
    }
}
