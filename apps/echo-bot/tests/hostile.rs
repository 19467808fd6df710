//! Hostile peers against the real echo bot on a real Prosody: a raw peer (mallory) built
//! directly on `omemo-crypto` and `omemo-pep` sends what an attacker would: forged and
//! damaged messages, hostile bundles, a changed identity key, absurd counters and sizes, and
//! (over a raw socket) deeply nested XML. Each attempt must be refused with a clear line in
//! the bot's log, leave the bot's stored session with mallory unchanged, and the bot must
//! keep answering a well-behaved client (alice).

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use atm_trust::{Namespace, Store};
use omemo_crypto::{
    payload, Bundle, DeviceId, IdentityKeyPair, IdentityPublicKey, KeyMessage, PreKey, PreKeyId,
    Session, SignedPreKey, SignedPreKeyId,
};
use omemo_pep::omemo2::{
    self, DeviceEntry, DeviceList, EncryptedKey, EncryptedMessage, RecipientKeys,
};
use omemo_pep::pep::{self, Fetched, Publication, PublishProgress};
use omemo_pep::{hints, ns, sce};
use rand_core::OsRng;
use test_prosody::TestServer;
use xmpp_core::client::{Client, ClientEvents};
use xmpp_core::connection::{Connection, ConnectionConfig, Event, Events, Secret};
use xmpp_core::jid::{BareJid, Jid};
use xmpp_core::message::MessageType;
use xmpp_core::minidom::Element;

mod common;

use common::raw::RawClient;
use common::{echo_round, settings, start_bot, Bot, TIMEOUT};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// The attacker: a raw connection plus a hand-driven OMEMO session with the bot.
struct Mallory {
    connection: Connection,
    events: Events,
    jid: BareJid,
    identity: IdentityKeyPair,
    device: DeviceId,
    bot: BareJid,
    bot_device: DeviceId,
    session: Session,
}

impl Mallory {
    async fn connect(server: &TestServer, bot_device: DeviceId) -> Self {
        let jid = server.jid("mallory").unwrap();
        let mut config = ConnectionConfig::new(jid.clone(), Secret::new("mallory-password".into()));
        config.server = Some(("127.0.0.1".to_owned(), server.port()));
        config.ca_file = Some(server.ca_file().to_owned());
        let (connection, events) = Connection::connect(config).await.unwrap();
        let bot = server.jid("bot").unwrap();
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let session = session_with(&connection, &bot, bot_device, &identity).await;
        Mallory {
            connection,
            events,
            jid,
            identity,
            device: DeviceId::random(&mut OsRng),
            bot,
            bot_device,
            session,
        }
    }

    fn envelope(&self, body: &str, from: &BareJid, to: &BareJid) -> Vec<u8> {
        sce::Envelope::new(
            vec![sce::Envelope::body_element(body)],
            from.clone(),
            to.clone(),
            None,
            &mut OsRng,
        )
        .to_bytes()
        .unwrap()
    }

    /// An `<encrypted>` from Mallory's device with one key, for the bot's device.
    fn encrypted(&self, kex: bool, data: Vec<u8>, payload: Option<Vec<u8>>) -> EncryptedMessage {
        EncryptedMessage {
            sid: self.device,
            keys: vec![RecipientKeys {
                jid: self.bot.clone(),
                keys: vec![EncryptedKey {
                    rid: self.bot_device,
                    kex,
                    data,
                }],
            }],
            payload,
        }
    }

    /// Encrypts `envelope` (or an empty message) with the next step of the session.
    fn seal(&mut self, envelope: Option<&[u8]>) -> EncryptedMessage {
        let (ciphertext, material) = match envelope {
            Some(bytes) => {
                let (c, m) = payload::encrypt(bytes, &mut OsRng);
                (Some(c), m)
            }
            None => (None, omemo_crypto::KeyMaterial::empty()),
        };
        let key = self.session.encrypt(material.as_bytes()).unwrap();
        self.encrypted(key.is_key_exchange(), key.to_bytes(), ciphertext)
    }

    async fn send(&self, encrypted: &EncryptedMessage) {
        let message =
            hints::encrypted_message(Jid::from(self.bot.clone()), MessageType::Chat, encrypted);
        self.connection.send(message).await.unwrap();
    }

    /// Sends `text` in a valid message and returns the bot's decrypted answer.
    async fn ask(&mut self, text: &str) -> Answer {
        let envelope = self.envelope(text, &self.jid, &self.bot);
        let message = self.seal(Some(&envelope));
        self.send(&message).await;
        self.receive().await
    }

    /// Decrypts what the bot sends (empty messages included) until an answer with content.
    async fn receive(&mut self) -> Answer {
        let receive = async {
            loop {
                let Event::Message(message) = self.events.recv().await.unwrap() else {
                    continue;
                };
                let Some(Ok(encrypted)) = hints::find_encrypted(&message) else {
                    continue;
                };
                let key = encrypted.key_for(&self.jid, self.device).unwrap();
                let key = KeyMessage::from_bytes(&key.data).unwrap();
                let decrypted = self.session.decrypt(&key, &mut OsRng).unwrap();
                let Some(ciphertext) = &encrypted.payload else {
                    continue;
                };
                let bytes = payload::decrypt(ciphertext, decrypted.plaintext()).unwrap();
                let envelope = sce::Envelope::from_bytes(&bytes).unwrap();
                envelope.verify_affixes(&self.bot, &self.jid).unwrap();
                let devices = encrypted.keys.iter().filter(|k| k.jid == self.jid);
                return Answer {
                    body: envelope.body().unwrap(),
                    devices: devices.flat_map(|k| k.keys.iter().map(|k| k.rid)).collect(),
                };
            }
        };
        tokio::time::timeout(TIMEOUT, receive)
            .await
            .expect("no answer from the bot")
    }

    /// Publishes with the product's publish-options (access model `open`, `max_items`); with
    /// `bundle`, that element replaces the bundle of `publication` (which must be a bundle
    /// publication) so that hostile bundles go out exactly like real ones.
    async fn publish(&self, mut publication: Publication, bundle: Option<Element>) {
        let mut iq = Element::from(publication.request("publish"));
        if let Some(bundle) = bundle {
            let item = iq
                .get_child_mut("pubsub", PUBSUB)
                .and_then(|p| p.get_child_mut("publish", PUBSUB))
                .and_then(|p| p.get_child_mut("item", PUBSUB))
                .unwrap();
            *item.get_child_mut("bundle", ns::OMEMO2).unwrap() = bundle;
        }
        let answer = self.connection.send_iq(iq.try_into().unwrap()).await;
        let progress = publication.handle_response(&answer.expect("publishing failed"));
        assert!(matches!(progress, PublishProgress::Done), "{progress:?}");
    }

    /// Publishes Mallory's real bundle and a device list with her real device plus the
    /// `extra` devices, each with the given (hostile) bundle element.
    async fn publish_devices(&self, extra: &[(DeviceId, Element)]) {
        let spk = SignedPreKey::generate(
            SignedPreKeyId::new(1).unwrap(),
            &self.identity,
            0,
            &mut OsRng,
        );
        let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut OsRng);
        let bundle = Bundle::from_own_keys(&self.identity, &spk, [&pk]).unwrap();
        self.publish(Publication::bundle(self.device, &bundle), None)
            .await;
        let own = DeviceEntry::with_signed_label(self.device, "mallory", &self.identity);
        let mut list = DeviceList::new();
        list.upsert(own.unwrap()).unwrap();
        for (device, hostile) in extra {
            self.publish(Publication::bundle(*device, &bundle), Some(hostile.clone()))
                .await;
            list.upsert(DeviceEntry::new(*device)).unwrap();
        }
        self.publish(Publication::device_list(&list), None).await;
    }
}

/// A fresh session with the bot's device, from its current bundle.
async fn session_with(
    connection: &Connection,
    bot: &BareJid,
    bot_device: DeviceId,
    identity: &IdentityKeyPair,
) -> Session {
    let answer = connection
        .send_iq(pep::fetch_bundle(bot, bot_device, "bundle"))
        .await
        .unwrap();
    let Fetched::Found(bundle) = pep::parse_bundle_response(&answer, bot_device) else {
        panic!("no bundle for the bot");
    };
    Session::initiate(
        identity,
        &bundle,
        bundle.choose_pre_key(&mut OsRng),
        &mut OsRng,
    )
    .unwrap()
}

/// The bot's answer as Mallory decrypted it.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    body: String,
    /// Mallory's devices the answer was encrypted for.
    devices: Vec<DeviceId>,
}

/// One Prosody, the bot, alice (well-behaved) and mallory.
struct Scene {
    server: TestServer,
    _dir: tempfile::TempDir,
    db: PathBuf,
    bot_process: Bot,
    bot: BareJid,
    alice: Client,
    alice_events: ClientEvents,
    mallory: Mallory,
}

impl Scene {
    async fn start(server: TestServer) -> Self {
        for user in ["bot", "alice", "mallory"] {
            server
                .create_account(user, &format!("{user}-password"))
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bot.sqlite3");
        let bot_process = start_bot(&server, "bot", &db, &[]).await;
        let bot_device = DeviceId::new(bot_process.device.parse().unwrap()).unwrap();
        let alice_settings = settings(&server, "alice", &dir.path().join("alice.sqlite3"));
        let (alice, alice_events) = Client::start(&alice_settings).await.unwrap();
        let mallory = Mallory::connect(&server, bot_device).await;
        let mut scene = Scene {
            bot: server.jid("bot").unwrap(),
            server,
            _dir: dir,
            db,
            bot_process,
            alice,
            alice_events,
            mallory,
        };
        scene.alice_round("hello before the attack").await;
        scene
    }

    async fn alice_round(&mut self, text: &str) {
        echo_round(&self.alice, &mut self.alice_events, &self.bot, text).await;
    }

    /// The bot's stored session with one of mallory's devices.
    fn session(&self, device: DeviceId) -> Option<Vec<u8>> {
        let store = Store::open(&self.db).unwrap();
        store
            .load_session(Namespace::Omemo2, self.mallory.jid.as_str(), device)
            .unwrap()
            .map(|blob| blob.to_vec())
    }

    /// The identity key the bot stored for one of mallory's devices.
    fn identity(&self, device: DeviceId) -> Option<IdentityPublicKey> {
        let store = Store::open(&self.db).unwrap();
        store
            .device(Namespace::Omemo2, self.mallory.jid.as_str(), device)
            .unwrap()
            .and_then(|d| d.identity_key)
    }

    /// Where the bot's log ends now; [`Scene::logged`] looks only after it.
    fn mark(&self) -> usize {
        self.bot_process.log_text().len()
    }

    /// Waits until the bot logs, after `mark`, a line containing all of `needles`.
    async fn logged(&self, mark: usize, needles: &[&str]) -> String {
        let find = async {
            loop {
                let log = self.bot_process.log_text();
                let new = log.get(mark..).unwrap_or_default();
                if let Some(line) = new.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, find)
            .await
            .unwrap_or_else(|_| {
                let log = self.bot_process.log_text();
                panic!("the bot never logged {needles:?}; its log:\n{log}")
            })
    }

    /// Sends an undecryptable message from an otherwise unused device of mallory and waits
    /// for the bot to log it: everything mallory sent before has been handled by then (the
    /// bot serves each sender in order).
    async fn barrier(&self) {
        let mark = self.mark();
        let marker = DeviceId::new(1).unwrap();
        let mut probe = self.mallory.encrypted(false, vec![0x0a], None);
        probe.sid = marker;
        self.mallory.send(&probe).await;
        self.logged(mark, &["malformed key", &format!("device={marker} ")])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_change_nothing_and_the_bot_keeps_answering() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    let (mallory, bot) = (s.mallory.jid.clone(), s.bot.clone());

    // Mallory builds a real session with a valid first message.
    let ok = s.mallory.envelope("valid", &mallory, &bot);
    let first = s.mallory.seal(Some(&ok));
    s.mallory.send(&first).await;
    s.barrier().await;
    let device = s.mallory.device;
    let baseline = s
        .session(device)
        .expect("the bot stored no session for mallory's valid key exchange");

    let other = BareJid::new("ceo@localhost").unwrap();
    let flip_mac = |d: &mut Vec<u8>| {
        let i = d.len() - 1;
        d[i] ^= 0x01;
    };
    let truncate = |d: &mut Vec<u8>| d.truncate(d.len() / 2);
    type Attempt<'a> = (&'a str, Vec<u8>, &'a dyn Fn(&mut Vec<u8>), &'a str);
    let attempts: [Attempt<'_>; 5] = [
        (
            "SCE from another JID",
            s.mallory.envelope("spoofed", &other, &bot),
            &|_| {},
            "SCE <from> affix does not match",
        ),
        (
            "SCE to someone else",
            s.mallory.envelope("misdirected", &mallory, &mallory),
            &|_| {},
            "SCE <to> affix does not match",
        ),
        (
            "flipped MAC byte",
            s.mallory.envelope("x", &mallory, &bot),
            &flip_mac,
            "message authentication failed",
        ),
        (
            "truncated protobuf",
            s.mallory.envelope("x", &mallory, &bot),
            &truncate,
            "malformed key",
        ),
        (
            "invalid envelope XML",
            b"<not-xml".to_vec(),
            &|_| {},
            "envelope: ",
        ),
    ];
    for (name, envelope, tamper, reason) in attempts {
        // Each attempt uses the next ratchet step, which the bot never commits.
        let mark = s.mark();
        let mut message = s.mallory.seal(Some(&envelope));
        tamper(&mut message.keys[0].keys[0].data);
        s.mallory.send(&message).await;
        s.logged(mark, &["cannot decrypt OMEMO message", reason])
            .await;
        s.alice_round(&format!("after: {name}")).await;
        assert_eq!(
            s.session(device).as_deref(),
            Some(&baseline[..]),
            "{name} changed the stored session"
        );
    }

    // A message beyond the skip bound (1,002 steps ahead in the chain).
    let mut far = s.mallory.session.clone();
    let mut last = None;
    for _ in 0..1_002 {
        last = Some(far.encrypt(&[0u8; 48]).unwrap());
    }
    let KeyMessage::KeyExchange(kex) = last.unwrap() else {
        panic!("an unconfirmed session sends key exchanges")
    };
    let mark = s.mark();
    s.mallory
        .send(&s.mallory.encrypted(true, kex.to_bytes(), None))
        .await;
    s.logged(mark, &["message skips", "more than the limit of 1000"])
        .await;
    s.alice_round("after: far ahead").await;
    assert_eq!(
        s.session(device).as_deref(),
        Some(&baseline[..]),
        "a message beyond the skip bound changed the stored session"
    );

    // A byte-identical replay of a valid message is ignored as a duplicate.
    let valid = s.mallory.envelope("replayed", &mallory, &bot);
    let original = s.mallory.seal(Some(&valid));
    s.mallory.send(&original).await;
    s.barrier().await;
    let after_original = s.session(device);
    assert_ne!(
        after_original.as_deref(),
        Some(&baseline[..]),
        "the valid message was not committed"
    );
    s.mallory.send(&original).await;
    s.barrier().await;
    s.alice_round("after the replay").await;
    assert_eq!(
        s.session(device),
        after_original,
        "a replay changed the stored session"
    );
}

/// Bundles the bot must refuse when it fetches them, each with what its log must say (the
/// `Debug` form of the parse error). Keys are re-signed where the signature would otherwise
/// be the first thing to fail.
fn hostile_bundles() -> Vec<(&'static str, Element)> {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let spk = SignedPreKey::generate(SignedPreKeyId::new(1).unwrap(), &identity, 0, &mut OsRng);
    let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut OsRng);
    let valid = omemo2::Bundle::from(&Bundle::from_own_keys(&identity, &spk, [&pk]).unwrap());
    // The field prime p = 2^255 - 19 and p + 1, little-endian: never canonical encodings.
    let mut p = [0xff; 32];
    (p[0], p[31]) = (0xed, 0x7f);
    let mut p_plus_1 = p;
    p_plus_1[0] = 0xee;
    // A point of order 8 on Curve25519 (u-coordinate) and on Ed25519 (compressed y).
    let x25519_order_8 = [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ];
    let ed25519_order_8 = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    let signed_spk = |key: [u8; 32]| {
        let mut bundle = valid.clone();
        bundle.spk.data = key.to_vec();
        bundle.spks.data = identity.sign(&key).as_bytes().to_vec();
        bundle
    };
    let with = |change: &dyn Fn(&mut omemo2::Bundle)| {
        let mut bundle = valid.clone();
        change(&mut bundle);
        bundle
    };
    [
        (
            "InvalidBundle(BadSignature)",
            with(&|b| b.spks.data[17] ^= 0x04),
        ),
        (
            "InvalidKey { field: \"spk\", source: SmallOrder }",
            signed_spk(x25519_order_8),
        ),
        (
            "InvalidKey { field: \"pk\", source: SmallOrder }",
            with(&|b| b.prekeys.keys[0].data = x25519_order_8.to_vec()),
        ),
        (
            "InvalidKey { field: \"ik\", source: SmallOrder }",
            with(&|b| b.ik.data = ed25519_order_8.to_vec()),
        ),
        (
            "InvalidKey { field: \"spk\", source: NonCanonical }",
            signed_spk(p),
        ),
        (
            "InvalidKey { field: \"pk\", source: NonCanonical }",
            with(&|b| b.prekeys.keys[0].data = p_plus_1.to_vec()),
        ),
        (
            "InvalidKey { field: \"ik\", source: NonCanonical }",
            with(&|b| b.ik.data = p_plus_1.to_vec()),
        ),
    ]
    .into_iter()
    .map(|(reason, bundle)| (reason, Element::from(bundle)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bundles_are_refused_and_the_good_device_is_still_answered() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    let hostile: Vec<(DeviceId, &str, Element)> = hostile_bundles()
        .into_iter()
        .map(|(reason, bundle)| (DeviceId::random(&mut OsRng), reason, bundle))
        .collect();
    let published: Vec<(DeviceId, Element)> = hostile
        .iter()
        .map(|(device, _, bundle)| (*device, bundle.clone()))
        .collect();
    s.mallory.publish_devices(&published).await;

    // Answering mallory makes the bot fetch every listed device's bundle.
    let mark = s.mark();
    let answer = s.mallory.ask("hello from my one real device").await;
    assert_eq!(
        answer,
        Answer {
            body: "Your message: hello from my one real device".to_owned(),
            devices: vec![s.mallory.device],
        }
    );
    for (device, reason, _) in &hostile {
        s.logged(
            mark,
            &["no usable bundle", &format!("device={device}"), reason],
        )
        .await;
        assert_eq!(s.session(*device), None, "a session for {reason}");
        assert_eq!(s.identity(*device), None, "an identity key for {reason}");
    }
    s.alice_round("after the hostile bundles").await;
    let answer = s.mallory.ask("still only one device").await;
    assert_eq!(answer.devices, vec![s.mallory.device]);
}

/// An `OMEMOAuthenticatedMessage` with the given header fields, a zero ciphertext and a zero
/// MAC, encoded by hand (XEP-0384 §protobuf-schema) so that any counter can be written.
fn forged_message(n: u32, pn: u32, ratchet_key: &[u8; 32]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut header = vec![0x08];
    varint(&mut header, n.into());
    header.push(0x10);
    varint(&mut header, pn.into());
    field(&mut header, 0x1a, ratchet_key);
    field(&mut header, 0x22, &[0; 48]);
    let mut message = Vec::new();
    field(&mut message, 0x0a, &[0; 16]);
    field(&mut message, 0x12, &header);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_key_and_absurd_counters_are_refused() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    s.mallory.publish_devices(&[]).await;
    let device = s.mallory.device;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    let known_key = s.mallory.identity.public_key();
    assert_eq!(s.identity(device), Some(known_key));
    let baseline = s.session(device).unwrap();

    // A key exchange from the same device id, built on a new identity key.
    let impostor = IdentityKeyPair::generate(&mut OsRng);
    let impostor_session = session_with(
        &s.mallory.connection,
        &s.bot,
        s.mallory.bot_device,
        &impostor,
    )
    .await;
    let honest = std::mem::replace(&mut s.mallory.session, impostor_session);
    let envelope = s
        .mallory
        .envelope("it is me, really", &s.mallory.jid, &s.bot);
    let impostor_kex = s.mallory.seal(Some(&envelope));
    s.mallory.session = honest;
    assert!(impostor_kex.keys[0].keys[0].kex);
    let mark = s.mark();
    s.mallory.send(&impostor_kex).await;
    s.logged(
        mark,
        &["cannot decrypt OMEMO message", "identity key changed"],
    )
    .await;
    assert_eq!(s.session(device), Some(baseline));
    assert_eq!(s.identity(device), Some(known_key));
    let keys = Store::open(&s.db)
        .unwrap()
        .identity_keys(s.mallory.jid.as_str())
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    s.alice_round("after the impostor").await;
    assert_eq!(s.mallory.ask("old me").await.body, "Your message: old me");

    // Counters far beyond the skip bound: refused before any key is derived (the MAC,
    // which is wrong here, can only be checked after the skipped keys are derived).
    let envelope = s
        .mallory
        .envelope("counter baseline", &s.mallory.jid, &s.bot);
    let sent = s.mallory.seal(Some(&envelope));
    s.mallory.send(&sent).await;
    s.mallory.receive().await;
    let current_key = KeyMessage::from_bytes(&sent.keys[0].keys[0].data)
        .unwrap()
        .message()
        .ratchet_key()
        .to_bytes();
    let baseline = s.session(device).unwrap();
    // Any valid X25519 public key stands in for a new ratchet key.
    let new_key = PreKey::generate(PreKeyId::new(1).unwrap(), &mut OsRng)
        .public_key()
        .to_bytes();
    let forgeries = [
        (
            "n = 1,000,000 on the current chain",
            forged_message(1_000_000, 0, &current_key),
            "more than the limit of 1000",
        ),
        (
            "n = 1,000,000 on a new ratchet key",
            forged_message(1_000_000, 0, &new_key),
            "more than the limit of 1000",
        ),
        (
            "pn = u32::MAX on a new ratchet key",
            forged_message(0, u32::MAX, &new_key),
            "message authentication failed",
        ),
    ];
    for (name, data, reason) in forgeries {
        let mark = s.mark();
        s.mallory
            .send(&s.mallory.encrypted(false, data, None))
            .await;
        let line = s.logged(mark, &["cannot decrypt OMEMO message"]).await;
        assert!(line.contains(reason), "{name}: {line}");
        assert_eq!(s.session(device).as_deref(), Some(&baseline[..]), "{name}");
        s.alice_round(&format!("after: {name}")).await;
    }
    assert_eq!(
        s.mallory.ask("still me").await.body,
        "Your message: still me"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_and_key_lists_are_refused() {
    // Raised so that the stanzas reach the bot instead of being cut by Prosody.
    let server = TestServer::builder()
        .option("c2s_stanza_size_limit = 16 * 1024 * 1024")
        .start()
        .unwrap();
    let mut s = Scene::start(server).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    let device = s.mallory.device;
    let baseline = s.session(device).unwrap();

    // A valid key with a 4 MiB payload (the limit is 256 KiB).
    let envelope = s.mallory.envelope("big", &s.mallory.jid, &s.bot);
    let mut big = s.mallory.seal(Some(&envelope));
    big.payload = Some(vec![0x5a; 4 << 20]);
    let mark = s.mark();
    s.mallory.send(&big).await;
    s.logged(mark, &["malformed OMEMO message", "<payload> is too large"])
        .await;
    assert_eq!(s.session(device).as_deref(), Some(&baseline[..]));
    s.alice_round("after the 4 MiB payload").await;

    // A valid key among 10,000 (the limit is 5,000).
    let envelope = s.mallory.envelope("crowded", &s.mallory.jid, &s.bot);
    let mut crowded = s.mallory.seal(Some(&envelope));
    let bot_device = s.mallory.bot_device.get();
    crowded.keys[0].keys.extend(
        (1..)
            .filter(|&rid| rid != bot_device)
            .take(9_999)
            .map(|rid| EncryptedKey {
                rid: DeviceId::new(rid).unwrap(),
                kex: false,
                data: vec![0x0a; 32],
            }),
    );
    let mark = s.mark();
    s.mallory.send(&crowded).await;
    s.logged(
        mark,
        &["malformed OMEMO message", "too many keys in one message"],
    )
    .await;
    assert_eq!(s.session(device).as_deref(), Some(&baseline[..]));
    s.alice_round("after 10,000 keys").await;
    assert_eq!(s.mallory.ask("normal").await.body, "Your message: normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_xml_does_not_crash_the_bot() {
    let server = TestServer::builder()
        .allow_plaintext(true)
        .option("allow_unencrypted_plain_auth = true")
        .option("c2s_stanza_size_limit = 16 * 1024 * 1024")
        .start()
        .unwrap();
    let mut s = Scene::start(server).await;
    s.mallory.publish_devices(&[]).await;
    let mut raw = RawClient::login(&s.server, "mallory", "mallory-password").await;
    // Prosody 0.12 itself fails (Lua stack overflow) somewhere between 60,000 and 80,000.
    for depth in [1_000, 10_000, 50_000] {
        let id = format!("deep-{depth}");
        let mark = s.mark();
        // Mallory's other session (an xmpp-core connection, like the bot's) gets a carbon
        // copy: both must survive it.
        raw.send(format!(
            "<message to='{}' type='chat' id='{id}'>\
             <encrypted xmlns='{}'>{}{}</encrypted></message>",
            s.bot,
            ns::OMEMO2,
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        ))
        .await;
        // Once Prosody has answered a ping it has passed the nested message on, so mallory's
        // next message reaches the bot after it and is handled after it (same sender).
        raw.ping(&format!("ping-{depth}")).await;
        let text = format!("after {depth} nested elements");
        let answer = tokio::select! {
            status = s.bot_process.child.wait() => panic!(
                "the bot died on {depth} nested elements ({status:?}); its log:\n{}",
                s.bot_process.log_text()
            ),
            answer = s.mallory.ask(&text) => answer,
        };
        assert_eq!(answer.body, format!("Your message: {text}"));
        s.logged(mark, &[" WARN ", &format!("from={}/", s.mallory.jid)])
            .await;
        let forwarded = s.server.stanza_log().lines().any(|l| {
            l.contains("SEND: <message")
                && l.contains(&format!("id='{id}'"))
                && l.contains("<a><a>")
        });
        assert!(forwarded, "Prosody did not forward {depth} nested elements");
        s.alice_round(&format!("alice after {depth}")).await;
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The size of the bot's database (with its write-ahead log), in bytes.
fn db_bytes(db: &std::path::Path) -> u64 {
    let wal = db.with_extension("sqlite3-wal");
    std::fs::metadata(db).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

impl Mallory {
    /// An SCE envelope whose body is `count` times `filler` inside a CDATA section: one byte
    /// each on the wire, but escaped (`&` as `&amp;`) when the bot serializes its echo.
    fn cdata_envelope(&self, filler: char, count: usize) -> Vec<u8> {
        let placeholder = "CDATA-PLACEHOLDER";
        let text = String::from_utf8(self.envelope(placeholder, &self.jid, &self.bot)).unwrap();
        let cdata = format!("<![CDATA[{}]]>", filler.to_string().repeat(count));
        assert!(text.contains(placeholder), "{text}");
        text.replace(placeholder, &cdata).into_bytes()
    }
}

impl Scene {
    /// How often the bot lost its stream so far.
    fn streams_lost(&self) -> usize {
        self.bot_process
            .log_text()
            .matches("connection lost; reconnecting")
            .count()
    }

    /// How often Prosody closed a stream for an oversized stanza so far.
    fn too_big_closes(&self) -> usize {
        let log = std::fs::read_to_string(self.server.log_file()).unwrap_or_default();
        log.matches("too big").count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_too_large_for_the_server_is_never_sent() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    let pid = s.bot_process.child.id().unwrap();
    let (rss_before, db_before) = (rss_kib(pid), db_bytes(&s.db));

    // 60,000 `&` in a CDATA section: about 80 KB on the wire, under the bot's 128 KiB echo
    // limit, but an echo of about 400 KB once escaped and base64-encoded.
    for round in 0..5 {
        let envelope = s.mallory.cdata_envelope('&', 60_000);
        let message = s.mallory.seal(Some(&envelope));
        s.mallory.send(&message).await;
        let answer = s.mallory.receive().await;
        assert!(
            answer
                .body
                .starts_with("Your message is too large to echo (the answer would be a "),
            "{}",
            answer.body
        );
        s.alice_round(&format!("alice after the big message {round}"))
            .await;
    }
    // Positive control for the checks below: the same escaping, small enough to be echoed.
    let envelope = s.mallory.cdata_envelope('&', 1_000);
    let message = s.mallory.seal(Some(&envelope));
    s.mallory.send(&message).await;
    assert_eq!(
        s.mallory.receive().await.body,
        format!("Your message: {}", "&".repeat(1_000))
    );

    let (rss_after, db_after) = (rss_kib(pid), db_bytes(&s.db));
    println!(
        "oversized echoes: bot RSS {rss_before} → {rss_after} KiB, database {db_before} → \
         {db_after} bytes"
    );
    assert_eq!(s.streams_lost(), 0, "the bot lost its stream");
    assert_eq!(s.too_big_closes(), 0, "Prosody closed a stream");
    let outbox = Store::open(&s.db).unwrap().outbox().unwrap();
    assert!(
        outbox
            .iter()
            .all(|(_, stanza)| stanza.len() <= xmpp_core::omemo::MAX_STANZA_BYTES),
        "an oversized stanza is in the outbox"
    );
    assert!(rss_after < 64 * 1024, "bot RSS {rss_after} KiB");
    assert!(
        db_after < db_before + 4 * 1024 * 1024,
        "database {db_after} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_costs_the_stream_is_dropped_after_bounded_tries() {
    // A server stricter than the bot's own limit (64 KiB against 192 KiB): the echo of a
    // message that fits is refused, and Prosody closes the bot's stream for it.
    let server = TestServer::builder()
        .option("c2s_stanza_size_limit = 64 * 1024")
        .start()
        .unwrap();
    let mut s = Scene::start(server).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    assert_eq!(s.streams_lost(), 0);
    let mark = s.mark();

    // 12,000 `&`: a 17 KB message, an 80 KB echo.
    let envelope = s.mallory.cdata_envelope('&', 12_000);
    let message = s.mallory.seal(Some(&envelope));
    s.mallory.send(&message).await;
    // Alice's message right behind it: its answer is queued behind the refused echo.
    s.alice
        .send_body(&s.bot, "queued behind the big echo")
        .await
        .unwrap();
    let long = Duration::from_secs(120);
    let answer = common::next_encrypted(&mut s.alice_events, long)
        .await
        .expect("alice's answer never came");
    assert_eq!(
        answer.body.as_deref(),
        Some("Your message: queued behind the big echo")
    );
    let dropped = "dropping an outgoing message the server never acknowledged";
    let found = tokio::time::timeout(long, async {
        loop {
            if s.bot_process.log_text()[mark..].contains(dropped) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let log = s.bot_process.log_text();
    assert!(found.is_ok(), "the echo was never dropped; bot log:\n{log}");
    let closes = s.too_big_closes();
    let lost = s.streams_lost();
    println!("the refused echo cost the stream {lost} times ({closes} Prosody log lines about it)");
    // The positive control of `streams_lost` in the test above.
    assert!(closes > 0 && lost > 0, "the server never refused the echo");
    assert_eq!(log[mark..].matches(dropped).count(), 1, "{log}");

    // Afterwards the stream stays up and the bot keeps answering.
    for round in 0..3 {
        s.alice_round(&format!("alice after the drop {round}"))
            .await;
    }
    assert_eq!(
        s.mallory.ask("small again").await.body,
        "Your message: small again"
    );
    // A copy counted before the drop may still have been on its way then; the sends stay
    // bounded all the same.
    let lost = s.streams_lost();
    assert!(
        lost <= xmpp_core::omemo::MAX_SENDS as usize,
        "lost the stream {lost} times in all"
    );
    let outbox = Store::open(&s.db).unwrap().outbox().unwrap();
    assert!(
        outbox.iter().all(|(_, stanza)| stanza.len() < 64 * 1024),
        "the refused echo is still in the outbox"
    );
}

/// Publishes on `connection` (with the product's publish-options) and expects success.
async fn publish_on(connection: &Connection, mut publication: Publication) {
    let answer = connection
        .send_iq(publication.request("publish"))
        .await
        .expect("publishing failed");
    let progress = publication.handle_response(&answer);
    assert!(matches!(progress, PublishProgress::Done), "{progress:?}");
}

/// A PEP notification of an OMEMO 2 device list with `devices`, as a client could write one.
fn device_list_notification(to: &BareJid, devices: &[DeviceId]) -> xmpp_core::message::Message {
    list_notification(to, devices, ns::OMEMO2_DEVICES, "devices", ns::OMEMO2)
}

/// A PEP notification of a legacy device list with `devices`, as a client could write one.
fn legacy_device_list_notification(
    to: &BareJid,
    devices: &[DeviceId],
) -> xmpp_core::message::Message {
    list_notification(to, devices, ns::LEGACY_DEVICE_LIST, "list", ns::LEGACY)
}

/// A PEP notification of `node` whose item is `<element xmlns=namespace>` listing `devices`.
fn list_notification(
    to: &BareJid,
    devices: &[DeviceId],
    node: &str,
    element: &str,
    namespace: &str,
) -> xmpp_core::message::Message {
    let devices: String = devices
        .iter()
        .map(|d| format!("<device id='{d}'/>"))
        .collect();
    let xml = format!(
        "<message xmlns='jabber:client' to='{to}' type='headline'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'>\
         <items node='{node}'><item id='current'>\
         <{element} xmlns='{namespace}'>{devices}</{element}></item>\
         </items></event></message>"
    );
    xml.parse::<Element>().unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_device_lists_and_group_messages_are_not_taken_for_one_to_one() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    let bot_device = s.mallory.bot_device;
    let device_in = |namespace: Namespace, jid: &BareJid, device: DeviceId| {
        Store::open(&s.db)
            .unwrap()
            .device(namespace, jid.as_str(), device)
            .unwrap()
    };
    let device_of = |jid: &BareJid, device: DeviceId| device_in(Namespace::Omemo2, jid, device);

    // Positive control: a real notification. Another client of the bot's own account
    // publishes the bot's device list with one more device; the PEP service notifies the bot.
    let mut config = ConnectionConfig::new(s.bot.clone(), Secret::new("bot-password".into()));
    config.server = Some(("127.0.0.1".to_owned(), s.server.port()));
    config.ca_file = Some(s.server.ca_file().to_owned());
    config.resource = Some("other-client".to_owned());
    let (other, _other_events) = Connection::connect(config).await.unwrap();
    let added = DeviceId::new(4343).unwrap();
    let mut list = DeviceList::new();
    list.upsert(DeviceEntry::new(bot_device)).unwrap();
    list.upsert(DeviceEntry::new(added)).unwrap();
    publish_on(&other, Publication::device_list(&list)).await;
    let seen = tokio::time::timeout(TIMEOUT, async {
        while !device_of(&s.bot, added).is_some_and(|d| d.active) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "the bot never took the real notification");
    // The same for the legacy device list.
    let mut legacy_list = omemo_pep::legacy::DeviceList::new();
    legacy_list.insert(bot_device).unwrap();
    legacy_list.insert(added).unwrap();
    publish_on(&other, Publication::legacy_device_list(&legacy_list)).await;
    let seen = tokio::time::timeout(TIMEOUT, async {
        while !device_in(Namespace::Legacy, &s.bot, added).is_some_and(|d| d.active) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "the bot never took the real legacy notification"
    );

    // The forgeries: the same notification sent by clients (so from full JIDs), for
    // mallory's own JID and, from the bot's other client, for the bot's JID without its
    // device (which would make it republish its list).
    let forged = DeviceId::new(4242).unwrap();
    let mark = s.mark();
    // Both go to the bot's full JID (a headline to a bare JID may reach other resources only).
    let bot_full = Jid::new(&format!("{}/omemo-{bot_device}", s.bot)).unwrap();
    let mut from_mallory = device_list_notification(&s.bot, &[s.mallory.device, forged]);
    from_mallory.to = Some(bot_full.clone());
    s.mallory.connection.send(from_mallory).await.unwrap();
    let mut from_other = device_list_notification(&s.bot, &[forged]);
    from_other.to = Some(bot_full.clone());
    other.send(from_other).await.unwrap();
    let mut legacy_from_mallory =
        legacy_device_list_notification(&s.bot, &[s.mallory.device, forged]);
    legacy_from_mallory.to = Some(bot_full.clone());
    s.mallory
        .connection
        .send(legacy_from_mallory)
        .await
        .unwrap();
    let mut legacy_from_other = legacy_device_list_notification(&s.bot, &[forged]);
    legacy_from_other.to = Some(bot_full);
    other.send(legacy_from_other).await.unwrap();
    s.barrier().await;
    let warned = "ignoring a device-list notification that does not come from a PEP service";
    s.logged(mark, &[warned, &format!("{}/", s.mallory.jid)])
        .await;
    s.logged(mark, &[warned, "other-client"]).await;
    let warned_legacy =
        "ignoring a legacy device-list notification that does not come from a PEP service";
    s.logged(mark, &[warned_legacy, &format!("{}/", s.mallory.jid)])
        .await;
    s.logged(mark, &[warned_legacy, "other-client"]).await;
    assert_eq!(device_of(&s.mallory.jid, forged), None);
    assert_eq!(device_of(&s.bot, forged), None);
    assert!(device_of(&s.bot, bot_device).is_some_and(|d| d.active));
    for jid in [&s.mallory.jid, &s.bot] {
        assert_eq!(device_in(Namespace::Legacy, jid, forged), None);
    }
    assert!(device_in(Namespace::Legacy, &s.bot, bot_device).is_some_and(|d| d.active));
    assert!(!s.bot_process.log_text()[mark..].contains("our device vanished"));

    // OMEMO in a group chat message (to the bot's full JID, as a room would send it) and in
    // a headline: neither is answered; the one-to-one message behind them is.
    let mark = s.mark();
    let bot_full = Jid::new(&format!("{}/omemo-{bot_device}", s.bot)).unwrap();
    for (to, type_) in [
        (bot_full, MessageType::Groupchat),
        (Jid::from(s.bot.clone()), MessageType::Headline),
    ] {
        let envelope = s.mallory.envelope("not a chat", &s.mallory.jid, &s.bot);
        let sealed = s.mallory.seal(Some(&envelope));
        let message = hints::encrypted_message(to, type_, &sealed);
        s.mallory.connection.send(message).await.unwrap();
    }
    assert_eq!(
        s.mallory.ask("one to one").await.body,
        "Your message: one to one"
    );
    for kind in ["Groupchat", "Headline"] {
        s.logged(
            mark,
            &[
                "ignoring an OMEMO message that is not a one-to-one chat",
                kind,
            ],
        )
        .await;
    }
    s.alice_round("after the forgeries").await;
    other.close().await;
}

/// Makes mallory and the bot mutual contacts (presence subscriptions both ways), as a contact
/// that turned hostile would be: from then on the PEP service notifies the bot of each of
/// mallory's device-list publications. Needs a server that allows the raw client.
async fn befriend(s: &Scene) {
    let mut bot_side = RawClient::login(&s.server, "bot", "bot-password").await;
    let mut mallory_side = RawClient::login(&s.server, "mallory", "mallory-password").await;
    let (bot, mallory) = (&s.bot, &s.mallory.jid);
    bot_side
        .send(format!("<presence to='{mallory}' type='subscribe'/>"))
        .await;
    bot_side.ping("befriend-1").await;
    mallory_side
        .send(format!(
            "<presence to='{bot}' type='subscribed'/><presence to='{bot}' type='subscribe'/>"
        ))
        .await;
    mallory_side.ping("befriend-2").await;
    // Approving sends the bot's available presence (with its caps) to mallory, which tells
    // her PEP service that the bot wants device-list notifications.
    bot_side
        .send(format!("<presence to='{mallory}' type='subscribed'/>"))
        .await;
    bot_side.ping("befriend-3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_cannot_grow_the_bots_storage_or_memory() {
    let server = TestServer::builder()
        .allow_plaintext(true)
        .option("allow_unencrypted_plain_auth = true")
        .start()
        .unwrap();
    let mut s = Scene::start(server).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    befriend(&s).await;
    let mallory = s.mallory.jid.clone();
    let rows = |s: &Scene| {
        let store = Store::open(&s.db).unwrap();
        (
            store.devices(Namespace::Omemo2, mallory.as_str()).unwrap(),
            store.pending_trust_decisions().unwrap(),
        )
    };
    let list_with = |devices: &[DeviceId]| {
        let mut list = DeviceList::new();
        for device in devices {
            list.upsert(DeviceEntry::new(*device)).unwrap();
        }
        list
    };

    // Positive control: a publication reaches the bot as a notification.
    let extra = DeviceId::random(&mut OsRng);
    publish_on(
        &s.mallory.connection,
        Publication::device_list(&list_with(&[s.mallory.device, extra])),
    )
    .await;
    let noticed = tokio::time::timeout(TIMEOUT, async {
        while !rows(&s).0.iter().any(|d| d.device_id == extra && d.active) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(noticed.is_ok(), "the bot never got mallory's device list");
    s.alice_round("before the storage attack").await;
    let pid = s.bot_process.child.id().unwrap();
    let (rss_before, db_before) = (rss_kib(pid), db_bytes(&s.db));
    let main_before = std::fs::metadata(&s.db).unwrap().len();

    // 60 device lists of 1,000 fresh devices each (her real device first).
    let mark = s.mark();
    for round in 0..60 {
        let mut devices = vec![s.mallory.device];
        devices.extend((1..1_000).map(|_| DeviceId::random(&mut OsRng)));
        publish_on(
            &s.mallory.connection,
            Publication::device_list(&list_with(&devices)),
        )
        .await;
        if round % 10 == 9 {
            s.alice_round(&format!("during the device lists {round}"))
                .await;
        }
    }
    s.barrier().await;
    s.logged(mark, &["device list over the per-contact bound"])
        .await;

    // 10 trust messages, each vouching for 1,000 and against 1,000 fresh keys of hers: kept
    // until she is authenticated, which she never will be.
    for round in 0..10 {
        let keys = |n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|_| {
                    IdentityKeyPair::generate(&mut OsRng)
                        .public_key()
                        .to_bytes()
                        .to_vec()
                })
                .collect()
        };
        // Two <key-owner> elements (a parser allows 1,000 keys in each).
        let owner = || omemo_pep::tm::KeyOwner {
            jid: mallory.clone(),
            trust: keys(500),
            distrust: keys(500),
        };
        let message = omemo_pep::tm::TrustMessage {
            key_owners: vec![owner(), owner()],
        };
        let envelope = sce::Envelope::new(
            vec![message.to_element()],
            mallory.clone(),
            s.bot.clone(),
            None,
            &mut OsRng,
        )
        .to_bytes()
        .unwrap();
        let sealed = s.mallory.seal(Some(&envelope));
        s.mallory.send(&sealed).await;
        if round % 2 == 1 {
            s.alice_round(&format!("during the trust messages {round}"))
                .await;
        }
    }
    s.barrier().await;
    s.logged(mark, &["too many ATM decisions waiting for this sender"])
        .await;
    assert_eq!(
        s.mallory.ask("after the attack").await.body,
        "Your message: after the attack"
    );
    s.alice_round("after the storage attack").await;

    let (devices, pending) = rows(&s);
    let (rss_after, db_after) = (rss_kib(pid), db_bytes(&s.db));
    println!(
        "60 lists of 1,000 devices and 10 trust messages of 2,000 decisions: {} device rows, \
         {pending} pending decisions; bot RSS {rss_before} → {rss_after} KiB, database \
         {db_before} → {db_after} bytes",
        devices.len()
    );
    assert!(devices.len() <= atm_trust::MAX_DEVICES_PER_JID);
    assert!(devices
        .iter()
        .any(|d| d.device_id == s.mallory.device && d.active));
    assert!(pending <= atm_trust::MAX_PENDING_PER_SENDER, "{pending}");
    assert_eq!(s.streams_lost(), 0, "the bot lost its stream");
    // The write-ahead log grows to about SQLite's checkpoint threshold (1,000 pages) under
    // any write load and is reused after that; the tables themselves must stay small.
    let main_after = std::fs::metadata(&s.db).unwrap().len();
    let wal_after = db_after - main_after;
    println!("database file {main_after} bytes, write-ahead log {wal_after} bytes");
    assert!(
        main_after < main_before + 1024 * 1024,
        "database file {main_before} → {main_after} bytes"
    );
    assert!(
        wal_after < 8 * 1024 * 1024,
        "write-ahead log {wal_after} bytes"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "bot RSS {rss_before} → {rss_after} KiB"
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_with_a_huge_device_list_does_not_slow_the_others() {
    let server = TestServer::builder()
        .allow_plaintext(true)
        .option("allow_unencrypted_plain_auth = true")
        .start()
        .unwrap();
    let mut s = Scene::start(server).await;
    s.mallory.publish_devices(&[]).await;
    assert_eq!(s.mallory.ask("first").await.body, "Your message: first");
    befriend(&s).await;
    let mallory = s.mallory.jid.clone();
    let real = s.mallory.device;

    // Six times: alice's baseline (the bot idle), then a list of 1,000 devices (her real one
    // first, 999 without a bundle) and a message from mallory, with alice asking while the bot
    // answers it. Alternating keeps the machine's other load the same for both.
    let mark = s.mark();
    let mut baseline = Vec::new();
    let mut during = Vec::new();
    for round in 0..6 {
        for alice in 0..4 {
            let asked = std::time::Instant::now();
            s.alice_round(&format!("baseline {round}.{alice}")).await;
            baseline.push(asked.elapsed());
        }
        let mut list = DeviceList::new();
        list.upsert(DeviceEntry::new(real)).unwrap();
        let fresh: Vec<DeviceId> = (1..1_000).map(|_| DeviceId::random(&mut OsRng)).collect();
        for device in &fresh {
            list.upsert(DeviceEntry::new(*device)).unwrap();
        }
        publish_on(&s.mallory.connection, Publication::device_list(&list)).await;
        let recorded = tokio::time::timeout(TIMEOUT, async {
            loop {
                let known = Store::open(&s.db)
                    .unwrap()
                    .device(Namespace::Omemo2, mallory.as_str(), fresh[0])
                    .unwrap();
                if known.is_some_and(|d| d.active) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            recorded.is_ok(),
            "the bot never took the list of round {round}"
        );
        let text = format!("from a crowd {round}");
        let envelope = s.mallory.envelope(&text, &mallory, &s.bot);
        let sealed = s.mallory.seal(Some(&envelope));
        s.mallory.send(&sealed).await;
        for alice in 0..4 {
            let asked = std::time::Instant::now();
            s.alice_round(&format!("during round {round}.{alice}"))
                .await;
            during.push(asked.elapsed());
        }
        let answer = s.mallory.receive().await;
        assert_eq!(answer.body, format!("Your message: {text}"));
        assert_eq!(answer.devices, vec![real]);
    }
    // Each failed device once, with its first failure: the back-off holds.
    let failures = |s: &Scene| -> Vec<String> {
        s.bot_process.log_text()[mark..]
            .lines()
            .filter(|l| l.contains("no usable bundle"))
            .map(|l| {
                assert!(l.contains(" failed=1 "), "{l}");
                l.split("device=")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let fetched = failures(&s).len();
    assert_eq!(s.mallory.ask("again").await.devices, vec![real]);
    let mut devices = failures(&s);
    let refetched = devices.len() - fetched;
    devices.sort();
    devices.dedup();
    assert_eq!(
        devices.len(),
        fetched + refetched,
        "a failed bundle was fetched again"
    );

    let (base, attacked) = (median(&mut baseline), median(&mut during));
    println!(
        "huge device lists: {fetched} failed bundle fetches for 6 lists of 1,000 devices, \
         {refetched} more (other devices) on the next message; alice's answer time median {:.0} ms before, {:.0} ms \
         during (worst {:.0} ms)",
        base.as_secs_f64() * 1e3,
        attacked.as_secs_f64() * 1e3,
        during.last().unwrap().as_secs_f64() * 1e3
    );
    let most = 6 * xmpp_core::omemo::MAX_BUNDLE_FETCHES_PER_MESSAGE;
    assert!(
        fetched > 0,
        "the bot fetched no bundle: the attack did not happen"
    );
    assert!(
        fetched <= most,
        "{fetched} bundle fetches failed (at most {most})"
    );
    assert!(refetched <= xmpp_core::omemo::MAX_BUNDLE_FETCHES_PER_MESSAGE);
    assert!(
        attacked <= base * 2,
        "alice's median answer time went from {base:?} to {attacked:?}"
    );
}

/// Counts from Prosody's stanza log: the bot's bundle publications and its empty OMEMO
/// messages to `to` (the ids it gives them start with `omemo-empty-`).
fn bot_stanzas(server: &TestServer, bot_device: DeviceId, to: &BareJid) -> (usize, usize) {
    let log = server.stanza_log();
    let received = log.lines().filter(|l| l.contains("RECV:"));
    let publishes = received
        .clone()
        .filter(|l| {
            l.contains(&format!("<publish node='{}'>", ns::OMEMO2_BUNDLES))
                && l.contains(&format!("<item id='{bot_device}'"))
        })
        .count();
    let empties = received
        .filter(|l| l.contains("id='omemo-empty-") && l.contains(&format!("to='{to}'")))
        .count();
    (publishes, empties)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_key_exchanges_costs_one_publish_and_no_empty_messages() {
    let mut s = Scene::start(TestServer::start().unwrap()).await;
    s.mallory.publish_devices(&[]).await;
    let (mallory, bot, bot_device) = (s.mallory.jid.clone(), s.bot.clone(), s.mallory.bot_device);
    let answer = s
        .mallory
        .connection
        .send_iq(pep::fetch_bundle(&bot, bot_device, "burst-bundle"))
        .await
        .unwrap();
    let Fetched::Found(bundle) = pep::parse_bundle_response(&answer, bot_device) else {
        panic!("no bundle for the bot");
    };
    let (publishes_before, empties_before) = bot_stanzas(&s.server, bot_device, &mallory);
    assert!(
        publishes_before >= 1,
        "the bot's first publication is not in the log"
    );

    // 50 messages at once, each a key exchange on a session of its own (as QXmpp sends when
    // it encrypts 50 messages before any session exists): 50 pre-keys used.
    let seal = |session: &mut Session, envelope: Option<&[u8]>| {
        let (ciphertext, material) = match envelope {
            Some(bytes) => {
                let (c, m) = payload::encrypt(bytes, &mut OsRng);
                (Some(c), m)
            }
            None => (None, omemo_crypto::KeyMaterial::empty()),
        };
        let key = session.encrypt(material.as_bytes()).unwrap();
        assert!(key.is_key_exchange());
        s.mallory.encrypted(true, key.to_bytes(), ciphertext)
    };
    let new_session = || {
        Session::initiate(
            &s.mallory.identity,
            &bundle,
            bundle.choose_pre_key(&mut OsRng),
            &mut OsRng,
        )
        .unwrap()
    };
    let mut burst = Vec::new();
    for i in 0..50 {
        let envelope = s.mallory.envelope(&format!("burst {i}"), &mallory, &bot);
        burst.push(seal(&mut new_session(), Some(&envelope)));
    }
    // Positive control, last: a key exchange without content from another device of hers,
    // not in her list, so that no answer goes to it: the bot must confirm it with an empty
    // message (after the same delay as the others).
    let mut unanswered = seal(&mut new_session(), None);
    unanswered.sid = DeviceId::random(&mut OsRng);
    for message in &burst {
        s.mallory.send(message).await;
    }
    s.mallory.send(&unanswered).await;

    let counted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (publishes, empties) = bot_stanzas(&s.server, bot_device, &mallory);
            if empties > empties_before && publishes > publishes_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (publishes, empties) = bot_stanzas(&s.server, bot_device, &mallory);
    assert!(
        counted.is_ok(),
        "no empty message or no publication: {publishes} publications, {empties} empty \
         messages; bot log:\n{}",
        s.bot_process.log_text()
    );
    let answers = s
        .server
        .stanza_log()
        .lines()
        .filter(|l| {
            l.contains("RECV:")
                && l.contains("id='omemo-msg-")
                && l.contains(&format!("to='{mallory}'"))
        })
        .count();
    println!(
        "burst of 51 key exchanges: {answers} answers, {} bundle publications, {} empty \
         messages",
        publishes - publishes_before,
        empties - empties_before
    );
    assert!(answers >= 50, "only {answers} answers");
    assert_eq!(
        publishes - publishes_before,
        1,
        "publications for one burst"
    );
    assert_eq!(empties - empties_before, 1, "empty messages");
    s.alice_round("after the burst").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_database_does_not_republish_the_bundle() {
    let server = TestServer::start().unwrap();
    server.create_account("bot", "bot-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let first = start_bot(&server, "bot", &db, &[]).await;
    let device = DeviceId::new(first.device.parse().unwrap()).unwrap();
    let anyone = server.jid("anyone").unwrap();
    let count = |server: &TestServer| bot_stanzas(server, device, &anyone).0;
    let legacy_node = format!("<publish node='{}'>", ns::legacy_bundle_node(device));
    let legacy_count = |server: &TestServer| {
        server
            .stanza_log()
            .lines()
            .filter(|l| l.contains("RECV:") && l.contains(&legacy_node))
            .count()
    };
    assert_eq!(
        count(&server),
        1,
        "the first start publishes the bundle once"
    );
    assert_eq!(legacy_count(&server), 1, "and the legacy bundle once");
    common::stop_bot(first).await;

    let again = start_bot(&server, "bot", &db, &[]).await;
    assert_eq!(again.device, device.to_string());
    assert_eq!(
        count(&server),
        1,
        "the restart published the bundle again; bot log:\n{}",
        again.log_text()
    );
    assert_eq!(
        legacy_count(&server),
        1,
        "the restart published the legacy bundle again"
    );
    common::stop_bot(again).await;

    // Positive control: a changed bundle (a pre-key used, say, by a key exchange whose
    // republication a crash cut short) is published at the next start.
    {
        let mut store = Store::open(&db).unwrap();
        let used = store.unused_pre_keys().unwrap()[0].id();
        store.mark_pre_key_used(used, 0).unwrap();
        let used = store.unused_pre_keys_for(Namespace::Legacy).unwrap()[0].id();
        store
            .mark_pre_key_used_for(Namespace::Legacy, used, 0)
            .unwrap();
    }
    let third = start_bot(&server, "bot", &db, &[]).await;
    assert_eq!(count(&server), 2, "the changed bundle was not published");
    assert_eq!(
        legacy_count(&server),
        2,
        "the changed legacy bundle was not published"
    );
    common::stop_bot(third).await;
}
