//! Live interoperability test against the Python reference implementation (python-omemo's
//! `twomemo` backend on top of `x3dh`, `doubleratchet` and `xeddsa`).
//!
//! The Python side is `interop/crypto_peer.py`, driven over stdin/stdout with one JSON object
//! per line. Each test builds a session (from either side), then runs a long scripted
//! conversation with alternating bursts (so both sides perform many Double Ratchet steps),
//! out-of-order delivery within a chain and across ratchet steps, dropped messages, empty
//! OMEMO messages, heartbeats, payload (SCE envelope) encryption in both directions, replays
//! that must be rejected, and snapshot/restore of the Rust session. Every decrypted plaintext
//! is compared with what was sent.
//!
//! The legacy tests at the end do the same for legacy OMEMO against python-oldmemo (`oldmemo`
//! backend of the same peer): 33-byte keys and the sign bit in both directions, key-transport
//! messages, AES-128-GCM bodies, replays, reordering across ratchet steps, re-initiation.
//!
//! The tests are `#[ignore]`d because they need the Python venv: `just venv` creates it and
//! `just test` runs them with `--ignored`. The interpreter is `$OMEMO_PYTHON`, or
//! `<workspace>/.venv/bin/python`.

// Helpers outside `#[test]` functions panic on purpose: a failed check is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use omemo_crypto::{
    legacy, payload, Bundle, IdentityKeyPair, IdentityPublicKey, KeyMaterial, KeyMessage, PreKey,
    PreKeyId, Session, Signature, SignedPreKey, SignedPreKeyId, X25519PublicKey,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value};

/// How the Python peer addresses the Rust device.
const RUST_JID: &str = "rust@example.org";
const RUST_DEVICE: u32 = 1;
/// Messages each direction must deliver (and verify) per test.
const TARGET_PER_DIRECTION: usize = 1000;

// ------------------------------------------------------------------------------------------
// The Python peer process
// ------------------------------------------------------------------------------------------

struct PythonPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

impl PythonPeer {
    fn spawn() -> Self {
        let python = match std::env::var_os("OMEMO_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => workspace_root().join(".venv/bin/python"),
        };
        let script = workspace_root().join("interop/crypto_peer.py");
        assert!(
            python.exists(),
            "Python reference venv not found: {} does not exist.\n\
             Create it with `just venv` (python3 -m venv .venv && \
             .venv/bin/pip install -r interop/requirements.txt) in the workspace root, \
             or point OMEMO_PYTHON at an interpreter that has the packages of \
             interop/requirements.txt.",
            python.display()
        );
        assert!(script.exists(), "missing {}", script.display());
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut peer = Self {
            child,
            stdin,
            stdout,
            next_id: 0,
        };
        // Fails clearly if the reference packages cannot be imported.
        let versions = peer.call(json!({"cmd": "versions"}));
        eprintln!("python reference: {versions}");
        peer
    }

    /// Sends one request; returns the response, or the peer's error text.
    fn try_call(&mut self, mut request: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        request["id"] = json!(id);
        let line = format!("{request}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("python peer is gone (write failed: {e}); see stderr"));
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .unwrap_or_else(|e| panic!("reading from the python peer failed: {e}"));
        assert!(
            n > 0,
            "python peer exited unexpectedly (see its stderr above)"
        );
        let response: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("python peer sent invalid JSON ({e}): {answer}"));
        assert_eq!(response["id"], json!(id), "response out of sequence");
        match response.get("error") {
            Some(error) => Err(error.as_str().unwrap_or("?").to_owned()),
            None => Ok(response),
        }
    }

    fn call(&mut self, request: Value) -> Value {
        let cmd = request["cmd"].clone();
        self.try_call(request)
            .unwrap_or_else(|e| panic!("python peer failed on {cmd}: {e}"))
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\": \"quit\"}\n");
        let _ = self.stdin.flush();
        let mut rest = String::new();
        let _ = self.stdout.read_line(&mut rest);
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

fn hex_field(value: &Value, field: &str) -> Vec<u8> {
    let text = value[field]
        .as_str()
        .unwrap_or_else(|| panic!("missing hex field {field} in {value}"));
    hex::decode(text).unwrap_or_else(|e| panic!("field {field} is not hex ({e}): {value}"))
}

// ------------------------------------------------------------------------------------------
// Messages, schedule and statistics
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    RustToPython,
    PythonToRust,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::RustToPython => 0,
            Dir::PythonToRust => 1,
        }
    }

    fn other(self) -> Self {
        match self {
            Dir::RustToPython => Dir::PythonToRust,
            Dir::PythonToRust => Dir::RustToPython,
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// 48 random bytes, like the key material of a real message.
    Material,
    /// An empty OMEMO message: 32 zero bytes, no payload.
    Empty,
    /// A real SCE envelope encrypted with the payload scheme; the ratchet carries its key.
    Payload,
    /// Ratchet plaintext of an unusual length (padding edge cases).
    Raw(usize),
}

/// One message on the wire.
#[derive(Clone)]
struct Wire {
    dir: Dir,
    seq: usize,
    bytes: Vec<u8>,
    kex: bool,
    ratchet_key: [u8; 32],
    plaintext: Vec<u8>,
    /// `<payload>` ciphertext and the envelope it must decrypt to.
    payload: Option<(Vec<u8>, Vec<u8>)>,
}

impl Wire {
    fn describe(&self) -> String {
        format!(
            "{:?} message #{} (kex={}, ratchet key {}):\n  wire bytes: {}\n  expected plaintext: {}",
            self.dir,
            self.seq,
            self.kex,
            hex::encode(self.ratchet_key),
            hex::encode(&self.bytes),
            hex::encode(&self.plaintext)
        )
    }
}

#[derive(Debug, Default)]
struct DirStats {
    sent: usize,
    delivered: usize,
    dropped: usize,
    out_of_order: usize,
    held_across_ratchet: usize,
    empty: usize,
    payload: usize,
    raw: usize,
    kex: usize,
    heartbeats: usize,
    replays_rejected: usize,
    chains: HashSet<[u8; 32]>,
    highest_seq: Option<usize>,
    last_ratchet_key: Option<[u8; 32]>,
}

// ------------------------------------------------------------------------------------------
// The harness: one Rust device, one Python device
// ------------------------------------------------------------------------------------------

struct Harness {
    py: PythonPeer,
    rng: ChaCha20Rng,
    own: IdentityKeyPair,
    signed_pre_key: Option<SignedPreKey>,
    pre_keys: Vec<PreKey>,
    session: Option<Session>,
    python_ik: Option<IdentityPublicKey>,
    stats: [DirStats; 2],
    next_seq: usize,
    rust_heartbeat_due: bool,
    python_heartbeat_due: bool,
    snapshots: usize,
    last_delivered: [Option<Wire>; 2],
}

impl Harness {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let own = IdentityKeyPair::generate(&mut rng);
        Self {
            py: PythonPeer::spawn(),
            rng,
            own,
            signed_pre_key: None,
            pre_keys: Vec::new(),
            session: None,
            python_ik: None,
            stats: Default::default(),
            next_seq: 0,
            rust_heartbeat_due: false,
            python_heartbeat_due: false,
            snapshots: 0,
            last_delivered: [None, None],
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.rng.fill_bytes(&mut out);
        out
    }

    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("no Rust session yet")
    }

    /// Creates the Python identity (from a fixed seed) and returns its bundle as Rust sees it.
    fn python_identity_and_bundle(&mut self, seed: [u8; 32]) -> Bundle {
        let id = self
            .py
            .call(json!({"cmd": "identity", "seed": hex::encode(seed)}));
        // Python's seed-based identity must map to the same public key in Rust.
        let expected = omemo_crypto::hazmat::identity_from_seed(&seed).public_key();
        assert_eq!(hex_field(&id, "ik"), expected.as_bytes().to_vec());
        assert_eq!(
            hex_field(&id, "ik_x25519"),
            expected.to_x25519_bytes().to_vec()
        );
        self.python_ik = Some(expected);
        self.python_bundle()
    }

    /// Fetches the Python bundle and checks it (including python-xeddsa's SPK signature).
    fn python_bundle(&mut self) -> Bundle {
        let b = self.py.call(json!({"cmd": "bundle", "min_pre_keys": 20}));
        let pre_keys = b["pre_keys"]
            .as_array()
            .expect("pre_keys array")
            .iter()
            .map(|pk| {
                let id = pk["id"].as_u64().expect("pre-key id");
                (
                    PreKeyId::new(u32::try_from(id).expect("id fits u32")).expect("pre-key id"),
                    X25519PublicKey::from_bytes(&hex_field(pk, "pub")).expect("pre-key"),
                )
            })
            .collect();
        let spk_id = u32::try_from(b["spk_id"].as_u64().expect("spk id")).expect("u32");
        Bundle::new(
            IdentityPublicKey::from_bytes(&hex_field(&b, "ik")).expect("ik"),
            SignedPreKeyId::new(spk_id).expect("spk id"),
            X25519PublicKey::from_bytes(&hex_field(&b, "spk")).expect("spk"),
            Signature::from_bytes(&hex_field(&b, "spks")).expect("spks"),
            pre_keys,
        )
        .expect("the Python bundle must verify in Rust")
    }

    /// The Rust bundle in the peer's JSON format, leaving out the given pre-key ids.
    fn rust_bundle_json(&self, skip: &[PreKeyId]) -> Value {
        let spk = self.signed_pre_key.as_ref().expect("Rust signed pre-key");
        let bundle = Bundle::from_own_keys(
            &self.own,
            spk,
            self.pre_keys.iter().filter(|pk| !skip.contains(&pk.id())),
        )
        .expect("own bundle");
        json!({
            "ik": hex::encode(bundle.identity_key().as_bytes()),
            "spk_id": bundle.signed_pre_key_id().get(),
            "spk": hex::encode(bundle.signed_pre_key().as_bytes()),
            "spks": hex::encode(bundle.signed_pre_key_signature().as_bytes()),
            "pre_keys": bundle.pre_keys().iter().map(|(id, key)| json!({
                "id": id.get(),
                "pub": hex::encode(key.as_bytes()),
            })).collect::<Vec<_>>(),
        })
    }

    fn envelope(&mut self, dir: Dir, seq: usize) -> Vec<u8> {
        let pad_len = 1 + self.below(40) as usize;
        let pad = hex::encode(self.random_bytes(pad_len));
        format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>\
             {dir:?} #{seq} ünïcödé ✓</body></content><rpad>{pad}</rpad>\
             <time stamp='2024-01-01T12:00:00Z'/><from jid='{RUST_JID}'/></envelope>"
        )
        .into_bytes()
    }

    fn pick_kind(&mut self) -> Kind {
        match self.below(100) {
            0..=11 => Kind::Empty,
            12..=26 => Kind::Payload,
            27..=29 => {
                const LENGTHS: [usize; 9] = [0, 1, 15, 16, 17, 31, 33, 64, 200];
                Kind::Raw(LENGTHS[self.below(LENGTHS.len() as u64) as usize])
            }
            _ => Kind::Material,
        }
    }

    fn plaintext_for(&mut self, dir: Dir, seq: usize, kind: Kind) -> (Vec<u8>, Option<Vec<u8>>) {
        match kind {
            Kind::Material => (self.random_bytes(48), None),
            Kind::Empty => (vec![0u8; 32], None),
            Kind::Raw(n) => (self.random_bytes(n), None),
            Kind::Payload => (Vec::new(), Some(self.envelope(dir, seq))),
        }
    }

    fn record_sent(&mut self, wire: &Wire, kind: Kind) {
        let s = &mut self.stats[wire.dir.index()];
        s.sent += 1;
        match kind {
            Kind::Empty => s.empty += 1,
            Kind::Payload => s.payload += 1,
            Kind::Raw(_) => s.raw += 1,
            Kind::Material => {}
        }
        if wire.kex {
            s.kex += 1;
        }
    }

    fn ratchet_key_of(bytes: &[u8]) -> [u8; 32] {
        KeyMessage::from_bytes(bytes)
            .expect("parse own wire bytes")
            .message()
            .ratchet_key()
            .to_bytes()
    }

    /// Rust encrypts one message (a key exchange while the session is unconfirmed).
    fn rust_send(&mut self, kind: Kind) -> Wire {
        let seq = self.next_seq;
        self.next_seq += 1;
        let dir = Dir::RustToPython;
        let (plaintext, envelope) = self.plaintext_for(dir, seq, kind);
        let (plaintext, payload) = match (envelope, kind) {
            (Some(envelope), _) => {
                let (ciphertext, material) = payload::encrypt(&envelope, &mut self.rng);
                (material.as_bytes().to_vec(), Some((ciphertext, envelope)))
            }
            (None, Kind::Empty) => (KeyMaterial::empty().as_bytes().to_vec(), None),
            (None, _) => (plaintext, None),
        };
        let message = self
            .session()
            .encrypt(&plaintext)
            .unwrap_or_else(|e| panic!("Rust encrypt failed: {e}"));
        let wire = Wire {
            dir,
            seq,
            kex: message.is_key_exchange(),
            ratchet_key: message.message().ratchet_key().to_bytes(),
            bytes: message.to_bytes(),
            plaintext,
            payload,
        };
        self.record_sent(&wire, kind);
        wire
    }

    /// Python encrypts one message; `initiate` carries a bundle for a new active session.
    fn python_send(&mut self, kind: Kind, initiate: Option<Value>) -> Wire {
        let seq = self.next_seq;
        self.next_seq += 1;
        let dir = Dir::PythonToRust;
        let (plaintext, envelope) = self.plaintext_for(dir, seq, kind);
        let mut request = json!({"jid": RUST_JID, "device": RUST_DEVICE});
        let (plaintext, payload) = match (envelope, kind) {
            (Some(envelope), _) => {
                let p = self
                    .py
                    .call(json!({"cmd": "payload_encrypt", "plaintext": hex::encode(&envelope)}));
                let material = hex_field(&p, "key_material");
                assert_eq!(
                    material.len(),
                    48,
                    "twomemo key material is key ‖ 16-byte tag"
                );
                request["plaintext"] = json!(hex::encode(&material));
                (material, Some((hex_field(&p, "ciphertext"), envelope)))
            }
            (None, Kind::Empty) => {
                request["empty"] = json!(true);
                (plaintext, None)
            }
            (None, _) => {
                request["plaintext"] = json!(hex::encode(&plaintext));
                (plaintext, None)
            }
        };
        match initiate {
            Some(bundle) => {
                request["cmd"] = json!("initiate");
                request["bundle"] = bundle;
            }
            None => request["cmd"] = json!("encrypt"),
        }
        let response = self.py.call(request);
        let bytes = hex_field(&response, "message");
        let wire = Wire {
            dir,
            seq,
            kex: response["kex"].as_bool().expect("kex flag"),
            ratchet_key: Self::ratchet_key_of(&bytes),
            bytes,
            plaintext,
            payload,
        };
        self.record_sent(&wire, kind);
        wire
    }

    fn send(&mut self, dir: Dir, kind: Kind) -> Wire {
        match dir {
            Dir::RustToPython => self.rust_send(kind),
            Dir::PythonToRust => self.python_send(kind, None),
        }
    }

    fn record_delivered(&mut self, wire: &Wire) {
        let s = &mut self.stats[wire.dir.index()];
        s.delivered += 1;
        if s.highest_seq.is_some_and(|h| h > wire.seq) {
            s.out_of_order += 1;
        }
        s.highest_seq = Some(s.highest_seq.map_or(wire.seq, |h| h.max(wire.seq)));
        s.chains.insert(wire.ratchet_key);
        s.last_ratchet_key = Some(wire.ratchet_key);
        self.last_delivered[wire.dir.index()] = Some(wire.clone());
    }

    /// Python decrypts a Rust message; returns whether it built a new session.
    fn deliver_to_python(&mut self, wire: &Wire) -> bool {
        let mut request = json!({
            "cmd": "decrypt",
            "jid": RUST_JID,
            "device": RUST_DEVICE,
            "message": hex::encode(&wire.bytes),
            "kex": wire.kex,
        });
        if wire.kex {
            request["identity_key"] = json!(hex::encode(self.own.public_key().as_bytes()));
        }
        if let Some((ciphertext, _)) = &wire.payload {
            request["payload"] = json!(hex::encode(ciphertext));
        }
        let response = match self.py.try_call(request) {
            Ok(r) => r,
            Err(e) => panic!("Python could not decrypt {}\n  error: {e}", wire.describe()),
        };
        assert_eq!(
            hex_field(&response, "plaintext"),
            wire.plaintext,
            "Python decrypted something else from {}",
            wire.describe()
        );
        if let Some((_, envelope)) = &wire.payload {
            assert_eq!(
                &hex_field(&response, "payload"),
                envelope,
                "payload mismatch"
            );
        }
        // python-omemo's SessionManager answers long receiving chains with an empty message.
        if response["receiving_chain_length"].as_u64().unwrap_or(0) > 53 {
            self.python_heartbeat_due = true;
        }
        self.record_delivered(wire);
        response["new_session"].as_bool().expect("new_session flag")
    }

    /// Rust decrypts a Python message, building the session from a key exchange if needed.
    fn deliver_to_rust(&mut self, wire: &Wire) {
        let message = KeyMessage::from_bytes(&wire.bytes)
            .unwrap_or_else(|e| panic!("Rust cannot parse {}\n  error: {e}", wire.describe()));
        assert_eq!(
            message.is_key_exchange(),
            wire.kex,
            "kex flag of {}",
            wire.describe()
        );
        let needs_new_session = match (&message, &self.session) {
            (KeyMessage::KeyExchange(kex), Some(session)) => !session.was_built_by(kex),
            (KeyMessage::KeyExchange(_), None) => true,
            (KeyMessage::Message(_), _) => false,
        };
        let decrypted = if needs_new_session {
            let KeyMessage::KeyExchange(kex) = &message else {
                unreachable!()
            };
            assert_eq!(Some(kex.identity_key()), self.python_ik, "kex identity key");
            let spk = self.signed_pre_key.as_ref().expect("Rust signed pre-key");
            let pk = self
                .pre_keys
                .iter()
                .find(|pk| pk.id() == kex.pre_key_id())
                .unwrap_or_else(|| panic!("unknown pre-key id {}", kex.pre_key_id()));
            let (session, decrypted) = Session::respond(&self.own, spk, pk, kex, &mut self.rng)
                .unwrap_or_else(|e| {
                    panic!(
                        "Rust could not respond to {}\n  error: {e}",
                        wire.describe()
                    )
                });
            self.session = Some(session);
            decrypted
        } else {
            let session = self.session.as_mut().expect("session");
            session
                .decrypt(&message, &mut self.rng)
                .unwrap_or_else(|e| {
                    panic!("Rust could not decrypt {}\n  error: {e:?}", wire.describe())
                })
        };
        assert_eq!(
            decrypted.plaintext(),
            &wire.plaintext[..],
            "Rust decrypted something else from {}",
            wire.describe()
        );
        if let Some((ciphertext, envelope)) = &wire.payload {
            let opened = payload::decrypt(ciphertext, decrypted.plaintext())
                .unwrap_or_else(|e| panic!("payload of {}: {e}", wire.describe()));
            assert_eq!(&opened[..], &envelope[..], "payload mismatch");
        }
        if decrypted.heartbeat_due() {
            self.rust_heartbeat_due = true;
        }
        self.record_delivered(wire);
    }

    fn deliver(&mut self, wire: &Wire) {
        match wire.dir {
            Dir::RustToPython => {
                let new_session = self.deliver_to_python(wire);
                assert!(
                    !new_session,
                    "unexpected new Python session from {}",
                    wire.describe()
                );
            }
            Dir::PythonToRust => self.deliver_to_rust(wire),
        }
    }

    /// Re-delivers the last delivered message of each direction; both sides must refuse it
    /// and keep working.
    fn check_replays(&mut self) {
        if let Some(wire) = self.last_delivered[0].clone() {
            let mut request = json!({
                "cmd": "decrypt", "jid": RUST_JID, "device": RUST_DEVICE,
                "message": hex::encode(&wire.bytes), "kex": wire.kex,
            });
            if let Some((ciphertext, _)) = &wire.payload {
                request["payload"] = json!(hex::encode(ciphertext));
            }
            assert!(
                self.py.try_call(request).is_err(),
                "Python accepted a replay of {}",
                wire.describe()
            );
            self.stats[0].replays_rejected += 1;
        }
        if let Some(wire) = self.last_delivered[1].clone() {
            let message = KeyMessage::from_bytes(&wire.bytes).expect("parse");
            let mut rng = self.rng.clone();
            assert!(
                self.session().decrypt(&message, &mut rng).is_err(),
                "Rust accepted a replay of {}",
                wire.describe()
            );
            self.stats[1].replays_rejected += 1;
        }
    }

    fn snapshot_restore(&mut self) {
        let snapshot = self.session().snapshot();
        let restored = Session::restore(&snapshot).expect("restore own snapshot");
        assert_eq!(
            &restored.snapshot()[..],
            &snapshot[..],
            "snapshot is stable"
        );
        self.session = Some(restored);
        self.snapshots += 1;
    }

    fn send_heartbeats(&mut self) {
        if std::mem::take(&mut self.rust_heartbeat_due) {
            let wire = self.rust_send(Kind::Empty);
            self.stats[0].heartbeats += 1;
            self.deliver(&wire);
        }
        if std::mem::take(&mut self.python_heartbeat_due) {
            let wire = self.python_send(Kind::Empty, None);
            self.stats[1].heartbeats += 1;
            self.deliver(&wire);
        }
    }

    /// Checks that both sides agree on the associated data and confirmation state.
    fn check_session_agreement(&mut self) {
        let info = self
            .py
            .call(json!({"cmd": "session_info", "jid": RUST_JID, "device": RUST_DEVICE}));
        assert_eq!(info["exists"], json!(true));
        assert_eq!(
            info["confirmed"],
            json!(true),
            "Python session not confirmed"
        );
        let ad = self.session().associated_data().to_vec();
        assert_eq!(
            hex_field(&info, "associated_data"),
            ad,
            "associated data differs"
        );
        assert!(self.session().is_confirmed(), "Rust session not confirmed");
    }

    /// The long conversation: bursts in alternating directions (sometimes the same direction
    /// twice), shuffled, with drops and messages held back until after the next burst of the
    /// same direction (so across the sender's next ratchet step).
    fn converse(&mut self, first: Dir) {
        let mut dir = first;
        let mut held: [Vec<Wire>; 2] = [Vec::new(), Vec::new()];
        let mut round = 0usize;
        while self.stats[0].delivered < TARGET_PER_DIRECTION
            || self.stats[1].delivered < TARGET_PER_DIRECTION
        {
            round += 1;
            assert!(round < 1000, "conversation does not make progress");
            let len = if self.chance(7) {
                54 + self.below(16) as usize // long chain: heartbeat territory
            } else {
                1 + self.below(20) as usize
            };
            let mut now = Vec::with_capacity(len);
            let mut later = Vec::new();
            for _ in 0..len {
                let kind = self.pick_kind();
                let wire = self.send(dir, kind);
                assert!(
                    !wire.kex,
                    "key exchange after confirmation: {}",
                    wire.describe()
                );
                match self.below(100) {
                    0..=4 => self.stats[dir.index()].dropped += 1,
                    5..=9 => later.push(wire),
                    _ => now.push(wire),
                }
            }
            match self.below(3) {
                0 => {}
                1 => now.reverse(),
                _ => {
                    for i in (1..now.len()).rev() {
                        let j = self.below(i as u64 + 1) as usize;
                        now.swap(i, j);
                    }
                }
            }
            for wire in &now {
                self.deliver(wire);
            }
            // Messages held back from the previous burst in this direction arrive now.
            for wire in std::mem::take(&mut held[dir.index()]) {
                let current = self.stats[dir.index()].last_ratchet_key;
                if current.is_some_and(|k| k != wire.ratchet_key) {
                    self.stats[dir.index()].held_across_ratchet += 1;
                }
                self.deliver(&wire);
            }
            held[dir.index()] = later;
            self.send_heartbeats();
            if round.is_multiple_of(7) {
                self.snapshot_restore();
            }
            if round.is_multiple_of(23) {
                self.check_replays();
            }
            dir = if self.chance(20) { dir } else { dir.other() };
        }
        for wire in held.into_iter().flatten() {
            self.deliver(&wire);
        }
        self.check_replays();
        self.check_session_agreement();
    }

    fn report(&self, name: &str, started: Instant) {
        for (label, s) in ["Rust -> Python", "Python -> Rust"].iter().zip(&self.stats) {
            eprintln!(
                "[{name}] {label}: sent {}, delivered+verified {}, dropped {}, out of order {}, \
                 held across a ratchet step {}, empty {}, payload {}, odd-length {}, kex {}, \
                 heartbeats {}, sending chains {}, replays rejected {}",
                s.sent,
                s.delivered,
                s.dropped,
                s.out_of_order,
                s.held_across_ratchet,
                s.empty,
                s.payload,
                s.raw,
                s.kex,
                s.heartbeats,
                s.chains.len(),
                s.replays_rejected
            );
        }
        eprintln!(
            "[{name}] snapshots/restores {}, {:.1} s",
            self.snapshots,
            started.elapsed().as_secs_f64()
        );
    }

    /// Guards against a schedule that silently stopped exercising something.
    fn assert_coverage(&self) {
        for s in &self.stats {
            assert!(s.delivered >= TARGET_PER_DIRECTION, "{s:?}");
            assert!(s.dropped >= 10, "too few drops: {s:?}");
            assert!(s.out_of_order >= 50, "too little reordering: {s:?}");
            assert!(
                s.held_across_ratchet >= 10,
                "too few cross-ratchet deliveries: {s:?}"
            );
            assert!(s.empty >= 50 && s.payload >= 50 && s.raw >= 5, "{s:?}");
            assert!(s.chains.len() >= 40, "too few ratchet steps: {s:?}");
            assert!(s.replays_rejected >= 3, "{s:?}");
        }
        assert!(self.stats.iter().any(|s| s.heartbeats > 0), "no heartbeat");
        assert!(self.snapshots >= 10);
    }
}

// ------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn rust_initiates_with_python_reference() {
    let started = Instant::now();
    let mut h = Harness::new(0x0e0e_2001);
    let bundle = h.python_identity_and_bundle([0x5a; 32]);

    let pre_key = bundle.choose_pre_key(&mut h.rng);
    h.session = Some(Session::initiate(&h.own, &bundle, pre_key, &mut h.rng).expect("initiate"));

    // Several key exchanges before any answer, delivered out of order: the second one builds
    // the Python session (skipping the first message), the others reuse it.
    let kex: Vec<Wire> = [Kind::Payload, Kind::Material, Kind::Empty, Kind::Material]
        .into_iter()
        .map(|kind| h.rust_send(kind))
        .collect();
    assert!(
        kex.iter().all(|w| w.kex),
        "unconfirmed session must send key exchanges"
    );
    for (i, index) in [1usize, 0, 3, 2].into_iter().enumerate() {
        let new_session = h.deliver_to_python(&kex[index]);
        assert_eq!(
            new_session,
            i == 0,
            "only the first key exchange builds a session"
        );
    }
    // python-omemo deleted the used pre-key.
    let fresh = h.python_bundle();
    assert!(
        fresh.pre_key(pre_key).is_none(),
        "used pre-key still published"
    );

    // Python's answer (an empty message, as python-omemo sends) confirms the session.
    let answer = h.python_send(Kind::Empty, None);
    assert!(!answer.kex, "a passive session never sends key exchanges");
    h.deliver(&answer);
    assert!(h.session().is_confirmed());
    let after = h.rust_send(Kind::Material);
    assert!(
        !after.kex,
        "confirmed session must stop sending key exchanges"
    );
    h.deliver(&after);
    h.check_session_agreement();

    h.converse(Dir::PythonToRust);

    // A new key exchange from Rust replaces the Python session.
    let new_pre_key = fresh.choose_pre_key(&mut h.rng);
    h.session = Some(Session::initiate(&h.own, &fresh, new_pre_key, &mut h.rng).expect("re-init"));
    let first = h.rust_send(Kind::Payload);
    assert!(first.kex);
    assert!(
        h.deliver_to_python(&first),
        "a new key exchange must replace the session"
    );
    for _ in 0..3 {
        let wire = h.python_send(Kind::Payload, None);
        h.deliver(&wire);
        let wire = h.rust_send(Kind::Material);
        assert!(!wire.kex);
        h.deliver(&wire);
    }
    h.check_session_agreement();

    h.report("rust initiates", started);
    h.assert_coverage();
}

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn python_initiates_with_python_reference() {
    let started = Instant::now();
    let mut h = Harness::new(0x0e0e_2002);
    let python_seed = [0xa5; 32];
    h.py.call(json!({"cmd": "identity", "seed": hex::encode(python_seed)}));
    h.python_ik = Some(omemo_crypto::hazmat::identity_from_seed(&python_seed).public_key());
    let spk = SignedPreKey::generate(
        SignedPreKeyId::new(7).expect("id"),
        &h.own,
        1_700_000_000,
        &mut h.rng,
    );
    h.signed_pre_key = Some(spk);
    h.pre_keys = (100..120)
        .map(|id| PreKey::generate(PreKeyId::new(id).expect("id"), &mut h.rng))
        .collect();

    // Python builds the session from the Rust bundle and sends three key exchanges before
    // any answer; Rust sees them out of order.
    let bundle = h.rust_bundle_json(&[]);
    let kex = [
        h.python_send(Kind::Material, Some(bundle)),
        h.python_send(Kind::Payload, None),
        h.python_send(Kind::Empty, None),
    ];
    assert!(
        kex.iter().all(|w| w.kex),
        "unconfirmed session must send key exchanges"
    );
    for index in [1usize, 0, 2] {
        h.deliver(&kex[index]);
    }
    let used = h.session().pre_key_id();

    // Rust answers with an empty message, which confirms the Python session.
    let answer = h.rust_send(Kind::Empty);
    assert!(!answer.kex);
    h.deliver(&answer);
    let after = h.python_send(Kind::Material, None);
    assert!(
        !after.kex,
        "confirmed session must stop sending key exchanges"
    );
    h.deliver(&after);
    h.check_session_agreement();

    h.converse(Dir::RustToPython);

    // Python re-initiates (bundle without the used pre-key): Rust must see a foreign key
    // exchange and build a new session from it.
    let bundle = h.rust_bundle_json(&[used]);
    let first = h.python_send(Kind::Payload, Some(bundle));
    let KeyMessage::KeyExchange(kex) = KeyMessage::from_bytes(&first.bytes).expect("parse") else {
        panic!("re-initiation must be a key exchange")
    };
    assert!(!h.session().was_built_by(&kex));
    h.deliver(&first);
    assert_ne!(h.session().pre_key_id(), used);
    for _ in 0..3 {
        let wire = h.rust_send(Kind::Payload);
        h.deliver(&wire);
        let wire = h.python_send(Kind::Material, None);
        assert!(!wire.kex);
        h.deliver(&wire);
    }
    h.check_session_agreement();

    h.report("python initiates", started);
    h.assert_coverage();
}

// ------------------------------------------------------------------------------------------
// Legacy OMEMO (`eu.siacs.conversations.axolotl`) against python-oldmemo
// ------------------------------------------------------------------------------------------

/// Messages each direction must deliver (and verify) per legacy test.
const LEGACY_TARGET_PER_DIRECTION: usize = 400;

/// What a legacy message carries.
#[derive(Debug, Clone, Copy)]
enum LegacyKind {
    /// A chat body: AES-128-GCM payload, the ratchet carries key ‖ tag (32 bytes).
    Body,
    /// A key-transport (empty) message: a bare 16-byte key, no payload.
    KeyTransport,
}

#[derive(Clone)]
struct LegacyWire {
    dir: Dir,
    seq: usize,
    bytes: Vec<u8>,
    kex: bool,
    plaintext: Vec<u8>,
    /// `<payload>`, `<iv>` and the body they must decrypt to.
    payload: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl LegacyWire {
    fn describe(&self) -> String {
        format!(
            "legacy {:?} message #{} (prekey={}):\n  wire bytes: {}\n  expected plaintext: {}",
            self.dir,
            self.seq,
            self.kex,
            hex::encode(&self.bytes),
            hex::encode(&self.plaintext)
        )
    }
}

/// One Rust device and one python-oldmemo device.
struct LegacyHarness {
    py: PythonPeer,
    rng: ChaCha20Rng,
    own: IdentityKeyPair,
    signed_pre_key: Option<SignedPreKey>,
    pre_keys: Vec<PreKey>,
    session: Option<legacy::Session>,
    python_ik: Option<IdentityPublicKey>,
    next_seq: usize,
    delivered: [usize; 2],
    dropped: [usize; 2],
    out_of_order: [usize; 2],
    held_across: [usize; 2],
    key_transport: [usize; 2],
    bodies: [usize; 2],
    replays_rejected: [usize; 2],
    heartbeats: [usize; 2],
    snapshots: usize,
    highest_seq: [Option<usize>; 2],
    last_delivered: [Option<LegacyWire>; 2],
    rust_heartbeat_due: bool,
    python_heartbeat_due: bool,
}

/// The first seed `[i; 32]` whose Ed25519 public key has the wanted sign bit (legacy keys
/// lose it, so both values must be exercised).
fn seed_with_sign_bit(sign_bit: u8) -> [u8; 32] {
    (1u8..=255)
        .map(|i| [i; 32])
        .find(|seed| {
            omemo_crypto::hazmat::identity_from_seed(seed)
                .public_key()
                .as_bytes()[31]
                >> 7
                == sign_bit
        })
        .expect("some seed has each sign bit")
}

impl LegacyHarness {
    fn new(own_seed: [u8; 32], rng_seed: u64) -> Self {
        Self {
            py: PythonPeer::spawn(),
            rng: ChaCha20Rng::seed_from_u64(rng_seed),
            own: omemo_crypto::hazmat::identity_from_seed(&own_seed),
            signed_pre_key: None,
            pre_keys: Vec::new(),
            session: None,
            python_ik: None,
            next_seq: 0,
            delivered: [0; 2],
            dropped: [0; 2],
            out_of_order: [0; 2],
            held_across: [0; 2],
            key_transport: [0; 2],
            bodies: [0; 2],
            replays_rejected: [0; 2],
            heartbeats: [0; 2],
            snapshots: 0,
            highest_seq: [None; 2],
            last_delivered: [None, None],
            rust_heartbeat_due: false,
            python_heartbeat_due: false,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.rng.fill_bytes(&mut out);
        out
    }

    fn session(&mut self) -> &mut legacy::Session {
        self.session.as_mut().expect("no Rust legacy session yet")
    }

    fn python_identity(&mut self, seed: [u8; 32]) {
        let id = self
            .py
            .call(json!({"cmd": "identity", "seed": hex::encode(seed), "legacy": true}));
        let expected = omemo_crypto::hazmat::identity_from_seed(&seed).public_key();
        assert_eq!(hex_field(&id, "ik"), expected.as_bytes().to_vec());
        self.python_ik = Some(expected);
    }

    /// The python-oldmemo bundle in its wire form, checked the libsignal way: the Ed25519
    /// identity rebuilt from the signature's sign bit must be python's identity.
    fn python_bundle(&mut self) -> legacy::Bundle {
        let b = self.py.call(json!({"cmd": "bundle", "min_pre_keys": 20}));
        assert_eq!(hex_field(&b, "ik").len(), 33, "legacy keys are 0x05 ‖ u");
        let pre_keys = b["pre_keys"]
            .as_array()
            .expect("pre_keys array")
            .iter()
            .map(|pk| {
                let id = u32::try_from(pk["id"].as_u64().expect("id")).expect("u32");
                (
                    PreKeyId::new(id).expect("pre-key id"),
                    legacy::parse_public_key(&hex_field(pk, "pub")).expect("pre-key"),
                )
            })
            .collect();
        let spk_id = u32::try_from(b["spk_id"].as_u64().expect("spk id")).expect("u32");
        let bundle = legacy::Bundle::new(
            legacy::IdentityKey::from_bytes(&hex_field(&b, "ik")).expect("ik"),
            SignedPreKeyId::new(spk_id).expect("spk id"),
            legacy::parse_public_key(&hex_field(&b, "spk")).expect("spk"),
            Signature::from_bytes(&hex_field(&b, "spks")).expect("spks"),
            pre_keys,
        )
        .expect("the python-oldmemo bundle must verify in Rust");
        assert_eq!(
            Some(bundle.identity_key()),
            self.python_ik,
            "sign bit restored"
        );
        bundle
    }

    /// Our legacy bundle in the peer's JSON (wire) form, leaving out the given pre-key ids.
    fn rust_bundle_json(&self, skip: &[PreKeyId]) -> Value {
        let spk = self.signed_pre_key.as_ref().expect("Rust signed pre-key");
        let bundle = legacy::Bundle::from_own_keys(
            &self.own,
            spk,
            self.pre_keys.iter().filter(|pk| !skip.contains(&pk.id())),
        )
        .expect("own legacy bundle");
        json!({
            "ik": hex::encode(bundle.legacy_identity_key().to_bytes()),
            "spk_id": bundle.signed_pre_key_id().get(),
            "spk": hex::encode(legacy::serialize_public_key(&bundle.signed_pre_key())),
            "spks": hex::encode(bundle.signed_pre_key_signature().as_bytes()),
            "pre_keys": bundle.pre_keys().iter().map(|(id, key)| json!({
                "id": id.get(),
                "pub": hex::encode(legacy::serialize_public_key(key)),
            })).collect::<Vec<_>>(),
        })
    }

    fn body(&mut self, dir: Dir, seq: usize) -> Vec<u8> {
        let len = 1 + self.below(30) as usize;
        let extra = hex::encode(self.random_bytes(len));
        format!("{dir:?} #{seq} ünïcödé ✓ {extra}").into_bytes()
    }

    fn pick_kind(&mut self) -> LegacyKind {
        if self.below(100) < 15 {
            LegacyKind::KeyTransport
        } else {
            LegacyKind::Body
        }
    }

    fn rust_send(&mut self, kind: LegacyKind) -> LegacyWire {
        let seq = self.next_seq;
        self.next_seq += 1;
        let dir = Dir::RustToPython;
        let (plaintext, payload) = match kind {
            LegacyKind::Body => {
                let body = self.body(dir, seq);
                let sealed = legacy::payload::encrypt(&body, &mut self.rng);
                (
                    sealed.key_material.as_bytes().to_vec(),
                    Some((sealed.ciphertext, sealed.iv.to_vec(), body)),
                )
            }
            LegacyKind::KeyTransport => {
                let (key, _iv) = legacy::payload::empty(&mut self.rng);
                (key.as_bytes().to_vec(), None)
            }
        };
        let message = self
            .session()
            .encrypt(&plaintext)
            .unwrap_or_else(|e| panic!("Rust legacy encrypt failed: {e}"));
        self.count_kind(dir, kind);
        LegacyWire {
            dir,
            seq,
            kex: message.is_key_exchange(),
            bytes: message.to_bytes(),
            plaintext,
            payload,
        }
    }

    fn python_send(&mut self, kind: LegacyKind, initiate: Option<Value>) -> LegacyWire {
        let seq = self.next_seq;
        self.next_seq += 1;
        let dir = Dir::PythonToRust;
        let mut request = json!({"jid": RUST_JID, "device": RUST_DEVICE});
        let (plaintext, payload) = match kind {
            LegacyKind::Body => {
                let body = self.body(dir, seq);
                let p = self
                    .py
                    .call(json!({"cmd": "payload_encrypt", "plaintext": hex::encode(&body)}));
                let material = hex_field(&p, "key_material");
                assert_eq!(material.len(), 32, "oldmemo key material is key ‖ tag");
                let iv = hex_field(&p, "iv");
                assert_eq!(iv.len(), 12, "oldmemo sends 12-byte IVs");
                (material, Some((hex_field(&p, "ciphertext"), iv, body)))
            }
            // A key-transport key; given explicitly so that it can be compared.
            LegacyKind::KeyTransport => (self.random_bytes(16), None),
        };
        request["plaintext"] = json!(hex::encode(&plaintext));
        match initiate {
            Some(bundle) => {
                request["cmd"] = json!("initiate");
                request["bundle"] = bundle;
            }
            None => request["cmd"] = json!("encrypt"),
        }
        let response = self.py.call(request);
        self.count_kind(dir, kind);
        LegacyWire {
            dir,
            seq,
            kex: response["kex"].as_bool().expect("kex flag"),
            bytes: hex_field(&response, "message"),
            plaintext,
            payload,
        }
    }

    fn count_kind(&mut self, dir: Dir, kind: LegacyKind) {
        match kind {
            LegacyKind::Body => self.bodies[dir.index()] += 1,
            LegacyKind::KeyTransport => self.key_transport[dir.index()] += 1,
        }
    }

    fn send(&mut self, dir: Dir, kind: LegacyKind) -> LegacyWire {
        match dir {
            Dir::RustToPython => self.rust_send(kind),
            Dir::PythonToRust => self.python_send(kind, None),
        }
    }

    fn record_delivered(&mut self, wire: &LegacyWire) {
        let i = wire.dir.index();
        self.delivered[i] += 1;
        if self.highest_seq[i].is_some_and(|h| h > wire.seq) {
            self.out_of_order[i] += 1;
        }
        self.highest_seq[i] = Some(self.highest_seq[i].map_or(wire.seq, |h| h.max(wire.seq)));
        self.last_delivered[i] = Some(wire.clone());
    }

    fn python_request(&self, wire: &LegacyWire) -> Value {
        let mut request = json!({
            "cmd": "decrypt", "jid": RUST_JID, "device": RUST_DEVICE,
            "message": hex::encode(&wire.bytes), "kex": wire.kex,
            // python-omemo knows the sender's Ed25519 identity from its bundle; the key
            // exchange carries only the Curve25519 form.
            "identity_key": hex::encode(self.own.public_key().as_bytes()),
        });
        if let Some((ciphertext, iv, _)) = &wire.payload {
            request["payload"] = json!(hex::encode(ciphertext));
            request["iv"] = json!(hex::encode(iv));
        }
        request
    }

    /// python-oldmemo decrypts a Rust message; returns whether it built a new session.
    fn deliver_to_python(&mut self, wire: &LegacyWire) -> bool {
        let request = self.python_request(wire);
        let response = match self.py.try_call(request) {
            Ok(r) => r,
            Err(e) => panic!(
                "python-oldmemo could not decrypt {}\n  error: {e}",
                wire.describe()
            ),
        };
        assert_eq!(
            hex_field(&response, "plaintext"),
            wire.plaintext,
            "python-oldmemo decrypted something else from {}",
            wire.describe()
        );
        if let Some((_, _, body)) = &wire.payload {
            assert_eq!(&hex_field(&response, "payload"), body, "body mismatch");
        }
        if response["receiving_chain_length"].as_u64().unwrap_or(0) > 53 {
            self.python_heartbeat_due = true;
        }
        self.record_delivered(wire);
        response["new_session"].as_bool().expect("new_session flag")
    }

    /// Rust decrypts a python-oldmemo message, building the session from a key exchange.
    fn deliver_to_rust(&mut self, wire: &LegacyWire) {
        let message = legacy::KeyMessage::from_bytes(&wire.bytes)
            .unwrap_or_else(|e| panic!("Rust cannot parse {}\n  error: {e}", wire.describe()));
        assert_eq!(
            message.is_key_exchange(),
            wire.kex,
            "prekey flag of {}",
            wire.describe()
        );
        let needs_new_session = match (&message, &self.session) {
            (legacy::KeyMessage::KeyExchange(kex), Some(session)) => !session.was_built_by(kex),
            (legacy::KeyMessage::KeyExchange(_), None) => true,
            (legacy::KeyMessage::Message(_), _) => false,
        };
        let decrypted = if needs_new_session {
            let legacy::KeyMessage::KeyExchange(kex) = &message else {
                unreachable!()
            };
            let python_ik = self.python_ik.expect("python identity");
            assert!(kex.identity_key().matches(&python_ik), "kex identity key");
            let spk = self.signed_pre_key.as_ref().expect("Rust signed pre-key");
            let pk = self
                .pre_keys
                .iter()
                .find(|pk| pk.id() == kex.pre_key_id())
                .unwrap_or_else(|| panic!("unknown pre-key id {}", kex.pre_key_id()));
            let (session, decrypted) =
                legacy::Session::respond(&self.own, spk, pk, kex, &mut self.rng).unwrap_or_else(
                    |e| {
                        panic!(
                            "Rust could not respond to {}\n  error: {e}",
                            wire.describe()
                        )
                    },
                );
            self.session = Some(session);
            decrypted
        } else {
            let rng = &mut self.rng;
            let session = self.session.as_mut().expect("session");
            session.decrypt(&message, rng).unwrap_or_else(|e| {
                panic!("Rust could not decrypt {}\n  error: {e:?}", wire.describe())
            })
        };
        assert_eq!(
            decrypted.plaintext(),
            &wire.plaintext[..],
            "Rust decrypted something else from {}",
            wire.describe()
        );
        if let Some((ciphertext, iv, body)) = &wire.payload {
            let opened = legacy::payload::decrypt(ciphertext, iv, decrypted.plaintext())
                .unwrap_or_else(|e| panic!("payload of {}: {e}", wire.describe()));
            assert_eq!(&opened[..], &body[..], "body mismatch");
        }
        if decrypted.heartbeat_due() {
            self.rust_heartbeat_due = true;
        }
        self.record_delivered(wire);
    }

    fn deliver(&mut self, wire: &LegacyWire) {
        match wire.dir {
            Dir::RustToPython => {
                let new_session = self.deliver_to_python(wire);
                assert!(
                    !new_session,
                    "unexpected new python session from {}",
                    wire.describe()
                );
            }
            Dir::PythonToRust => self.deliver_to_rust(wire),
        }
    }

    fn check_replays(&mut self) {
        if let Some(wire) = self.last_delivered[0].clone() {
            let request = self.python_request(&wire);
            assert!(
                self.py.try_call(request).is_err(),
                "python-oldmemo accepted a replay of {}",
                wire.describe()
            );
            self.replays_rejected[0] += 1;
        }
        if let Some(wire) = self.last_delivered[1].clone() {
            let message = legacy::KeyMessage::from_bytes(&wire.bytes).expect("parse");
            let mut rng = self.rng.clone();
            let before = self.session().snapshot();
            assert!(
                self.session().decrypt(&message, &mut rng).is_err(),
                "Rust accepted a replay of {}",
                wire.describe()
            );
            assert_eq!(&self.session().snapshot()[..], &before[..]);
            self.replays_rejected[1] += 1;
        }
    }

    fn snapshot_restore(&mut self) {
        let snapshot = self.session().snapshot();
        let restored = legacy::Session::restore(&snapshot).expect("restore own snapshot");
        assert_eq!(&restored.snapshot()[..], &snapshot[..]);
        self.session = Some(restored);
        self.snapshots += 1;
    }

    fn send_heartbeats(&mut self) {
        if std::mem::take(&mut self.rust_heartbeat_due) {
            let wire = self.rust_send(LegacyKind::KeyTransport);
            self.heartbeats[0] += 1;
            self.deliver(&wire);
        }
        if std::mem::take(&mut self.python_heartbeat_due) {
            let wire = self.python_send(LegacyKind::KeyTransport, None);
            self.heartbeats[1] += 1;
            self.deliver(&wire);
        }
    }

    /// Both sides hold the same 66-byte associated data (`0x05‖IK_initiator ‖
    /// 0x05‖IK_responder`) and consider the session confirmed.
    fn check_session_agreement(&mut self) {
        let info = self
            .py
            .call(json!({"cmd": "session_info", "jid": RUST_JID, "device": RUST_DEVICE}));
        assert_eq!(
            info["confirmed"],
            json!(true),
            "python session not confirmed"
        );
        let ad = self.session().associated_data().to_vec();
        assert_eq!(ad.len(), 66);
        assert_eq!(
            hex_field(&info, "associated_data"),
            ad,
            "associated data differs"
        );
        assert!(self.session().is_confirmed(), "Rust session not confirmed");
    }

    /// Bursts in alternating directions, shuffled, with drops and messages held back until
    /// after the sender's next burst (across its next ratchet step).
    fn converse(&mut self, first: Dir) {
        let mut dir = first;
        let mut held: [Vec<LegacyWire>; 2] = [Vec::new(), Vec::new()];
        let mut round = 0usize;
        while self
            .delivered
            .iter()
            .any(|&d| d < LEGACY_TARGET_PER_DIRECTION)
        {
            round += 1;
            assert!(round < 1000, "conversation does not make progress");
            let len = if self.below(100) < 7 {
                54 + self.below(10) as usize
            } else {
                1 + self.below(15) as usize
            };
            let mut now = Vec::with_capacity(len);
            let mut later = Vec::new();
            for _ in 0..len {
                let kind = self.pick_kind();
                let wire = self.send(dir, kind);
                assert!(
                    !wire.kex,
                    "key exchange after confirmation: {}",
                    wire.describe()
                );
                match self.below(100) {
                    0..=4 => self.dropped[dir.index()] += 1,
                    5..=9 => later.push(wire),
                    _ => now.push(wire),
                }
            }
            if self.below(2) == 0 {
                for i in (1..now.len()).rev() {
                    let j = self.below(i as u64 + 1) as usize;
                    now.swap(i, j);
                }
            } else {
                now.reverse();
            }
            for wire in &now {
                self.deliver(wire);
            }
            for wire in std::mem::take(&mut held[dir.index()]) {
                self.held_across[dir.index()] += 1;
                self.deliver(&wire);
            }
            held[dir.index()] = later;
            self.send_heartbeats();
            if round.is_multiple_of(7) {
                self.snapshot_restore();
            }
            if round.is_multiple_of(11) {
                self.check_replays();
            }
            dir = if self.below(100) < 20 {
                dir
            } else {
                dir.other()
            };
        }
        for wire in held.into_iter().flatten() {
            self.deliver(&wire);
        }
        self.check_replays();
        self.check_session_agreement();
    }

    fn report_and_check(&self, name: &str, started: Instant) {
        for (i, label) in ["Rust -> python-oldmemo", "python-oldmemo -> Rust"]
            .iter()
            .enumerate()
        {
            eprintln!(
                "[{name}] {label}: delivered+verified {}, bodies {}, key transports {}, dropped {}, \
                 out of order {}, held until the sender's next burst {}, heartbeats {}, \
                 replays rejected {}",
                self.delivered[i],
                self.bodies[i],
                self.key_transport[i],
                self.dropped[i],
                self.out_of_order[i],
                self.held_across[i],
                self.heartbeats[i],
                self.replays_rejected[i],
            );
        }
        eprintln!(
            "[{name}] snapshots/restores {}, {:.1} s",
            self.snapshots,
            started.elapsed().as_secs_f64()
        );
        for i in 0..2 {
            assert!(self.delivered[i] >= LEGACY_TARGET_PER_DIRECTION);
            assert!(
                self.dropped[i] >= 5 && self.out_of_order[i] >= 20,
                "too regular"
            );
            assert!(self.held_across[i] >= 5, "too few late deliveries");
            assert!(self.bodies[i] >= 50 && self.key_transport[i] >= 10);
            assert!(self.replays_rejected[i] >= 3);
        }
        assert!(self.snapshots >= 5);
    }
}

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn legacy_rust_initiates_with_python_oldmemo() {
    let started = Instant::now();
    // Our identity has sign bit 1, python's 0: python must restore our sign bit.
    let mut h = LegacyHarness::new(seed_with_sign_bit(1), 0x0e0e_1301);
    h.python_identity(seed_with_sign_bit(0));
    let bundle = h.python_bundle();
    let pre_key = bundle.choose_pre_key(&mut h.rng);
    h.session =
        Some(legacy::Session::initiate(&h.own, &bundle, pre_key, &mut h.rng).expect("initiate"));

    // Three PreKeyWhisperMessages before any answer, delivered out of order.
    let kex: Vec<LegacyWire> = [LegacyKind::Body, LegacyKind::KeyTransport, LegacyKind::Body]
        .into_iter()
        .map(|kind| h.rust_send(kind))
        .collect();
    assert!(
        kex.iter().all(|w| w.kex),
        "unconfirmed sessions send key exchanges"
    );
    for (i, index) in [1usize, 0, 2].into_iter().enumerate() {
        assert_eq!(
            h.deliver_to_python(&kex[index]),
            i == 0,
            "only the first builds"
        );
    }
    let fresh = h.python_bundle();
    assert!(
        fresh.pre_key(pre_key).is_none(),
        "used pre-key still published"
    );

    let answer = h.python_send(LegacyKind::KeyTransport, None);
    assert!(!answer.kex);
    h.deliver(&answer);
    assert!(h.session().is_confirmed());
    let after = h.rust_send(LegacyKind::Body);
    assert!(!after.kex, "confirmed sessions stop sending key exchanges");
    h.deliver(&after);
    h.check_session_agreement();

    h.converse(Dir::PythonToRust);

    // A new key exchange from Rust replaces the python session.
    let new_pre_key = fresh.choose_pre_key(&mut h.rng);
    h.session =
        Some(legacy::Session::initiate(&h.own, &fresh, new_pre_key, &mut h.rng).expect("re-init"));
    let first = h.rust_send(LegacyKind::Body);
    assert!(first.kex);
    assert!(
        h.deliver_to_python(&first),
        "a new key exchange replaces the session"
    );
    for _ in 0..3 {
        let wire = h.python_send(LegacyKind::Body, None);
        h.deliver(&wire);
        let wire = h.rust_send(LegacyKind::Body);
        assert!(!wire.kex);
        h.deliver(&wire);
    }
    h.check_session_agreement();
    h.report_and_check("legacy, rust initiates", started);
}

#[test]
#[ignore = "needs the Python reference venv; `just test` runs it"]
fn legacy_python_oldmemo_initiates() {
    let started = Instant::now();
    // Python's identity has sign bit 1: Rust must restore it from the bundle signature.
    let mut h = LegacyHarness::new(seed_with_sign_bit(0), 0x0e0e_1302);
    h.python_identity(seed_with_sign_bit(1));
    let spk = SignedPreKey::generate_legacy(
        SignedPreKeyId::new(3).expect("id"),
        &h.own,
        1_700_000_000,
        &mut h.rng,
    );
    h.signed_pre_key = Some(spk);
    h.pre_keys = (200..220)
        .map(|id| PreKey::generate(PreKeyId::new(id).expect("id"), &mut h.rng))
        .collect();
    // The python bundle check verifies python's own signature and sign bit too.
    let _ = h.python_bundle();

    let bundle = h.rust_bundle_json(&[]);
    let kex = [
        h.python_send(LegacyKind::Body, Some(bundle)),
        h.python_send(LegacyKind::KeyTransport, None),
        h.python_send(LegacyKind::Body, None),
    ];
    assert!(kex.iter().all(|w| w.kex));
    for index in [1usize, 0, 2] {
        h.deliver(&kex[index]);
    }
    let used = h.session().pre_key_id();

    let answer = h.rust_send(LegacyKind::KeyTransport);
    assert!(!answer.kex);
    h.deliver(&answer);
    let after = h.python_send(LegacyKind::Body, None);
    assert!(!after.kex, "confirmed sessions stop sending key exchanges");
    h.deliver(&after);
    h.check_session_agreement();

    h.converse(Dir::RustToPython);

    // python-oldmemo re-initiates from a bundle without the used pre-key.
    let bundle = h.rust_bundle_json(&[used]);
    let first = h.python_send(LegacyKind::Body, Some(bundle));
    let legacy::KeyMessage::KeyExchange(kex) =
        legacy::KeyMessage::from_bytes(&first.bytes).expect("parse")
    else {
        panic!("re-initiation must be a key exchange")
    };
    assert!(!h.session().was_built_by(&kex));
    h.deliver(&first);
    assert_ne!(h.session().pre_key_id(), used);
    for _ in 0..3 {
        let wire = h.rust_send(LegacyKind::Body);
        h.deliver(&wire);
        let wire = h.python_send(LegacyKind::Body, None);
        assert!(!wire.kex);
        h.deliver(&wire);
    }
    h.check_session_agreement();
    h.report_and_check("legacy, python initiates", started);
}
