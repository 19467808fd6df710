//! Hostile peers against the real echo bot on a real Prosody: a raw peer (mallory) built
//! directly on `omemo-crypto` and `omemo-pep` sends what an attacker would. Each attempt must
//! leave the bot's stored session with mallory unchanged, and the bot must keep answering a
//! well-behaved client (alice).

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use omemo_crypto::{payload, DeviceId, IdentityKeyPair, KeyMessage, Session};
use omemo_pep::omemo2::{EncryptedKey, EncryptedMessage, RecipientKeys};
use omemo_pep::pep::{self, Fetched};
use omemo_pep::{hints, sce};
use rand_core::OsRng;
use test_prosody::TestServer;
use xmpp_core::client::Client;
use xmpp_core::connection::{Connection, ConnectionConfig, Events, Secret};
use xmpp_core::jid::{BareJid, Jid};
use xmpp_core::message::MessageType;

mod common;

use common::{echo_round, settings, start_bot};

/// The attacker: a raw connection plus a hand-driven OMEMO session with the bot.
struct Mallory {
    connection: Connection,
    _events: Events,
    jid: BareJid,
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
        let answer = connection
            .send_iq(pep::fetch_bundle(&bot, bot_device, "b1"))
            .await
            .unwrap();
        let Fetched::Found(bundle) = pep::parse_bundle_response(&answer, bot_device) else {
            panic!("no bundle for the bot");
        };
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let session = Session::initiate(
            &identity,
            &bundle,
            bundle.choose_pre_key(&mut OsRng),
            &mut OsRng,
        )
        .unwrap();
        Mallory {
            connection,
            _events: events,
            jid,
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

    /// Encrypts `envelope` on the session and hands the key bytes to `tamper` before sending.
    async fn send(
        &mut self,
        envelope: Option<Vec<u8>>,
        tamper: impl FnOnce(&mut Vec<u8>),
    ) -> (bool, Vec<u8>, Option<Vec<u8>>) {
        let (ciphertext, material) = match &envelope {
            Some(bytes) => {
                let (c, m) = payload::encrypt(bytes, &mut OsRng);
                (Some(c), m)
            }
            None => (None, omemo_crypto::KeyMaterial::empty()),
        };
        let key = self.session.encrypt(material.as_bytes()).unwrap();
        let mut data = key.to_bytes();
        tamper(&mut data);
        self.send_raw(key.is_key_exchange(), data.clone(), ciphertext.clone())
            .await;
        (key.is_key_exchange(), data, ciphertext)
    }

    async fn send_raw(&self, kex: bool, data: Vec<u8>, payload: Option<Vec<u8>>) {
        let encrypted = EncryptedMessage {
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
        };
        let message =
            hints::encrypted_message(Jid::from(self.bot.clone()), MessageType::Chat, &encrypted);
        self.connection.send(message).await.unwrap();
    }
}

/// A named attack: the envelope to encrypt and how to damage the key bytes.
type Attempt<'a> = (&'a str, Option<Vec<u8>>, &'a dyn Fn(&mut Vec<u8>));

fn stored_session(db: &Path, jid: &BareJid, device: DeviceId) -> Option<Vec<u8>> {
    let store = atm_trust::Store::open(db).unwrap();
    store
        .load_session(atm_trust::Namespace::Omemo2, jid.as_str(), device)
        .unwrap()
        .map(|blob| blob.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_change_nothing_and_the_bot_keeps_answering() {
    let server = TestServer::start().unwrap();
    for user in ["bot", "alice", "mallory"] {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let bot_process = start_bot(&server, "bot", &db, &[]).await;
    let bot_device = DeviceId::new(bot_process.device.parse().unwrap()).unwrap();
    let bot = server.jid("bot").unwrap();
    let alice_settings = settings(&server, "alice", &dir.path().join("alice.sqlite3"));
    let (alice, mut alice_events) = Client::start(&alice_settings).await.unwrap();
    echo_round(&alice, &mut alice_events, &bot, "hello before the attack").await;

    // Mallory builds a real session with a valid first message.
    let mut mallory = Mallory::connect(&server, bot_device).await;
    let ok = mallory.envelope("valid", &mallory.jid.clone(), &bot);
    mallory.send(Some(ok), |_| {}).await;
    echo_round(
        &alice,
        &mut alice_events,
        &bot,
        "after mallory's first message",
    )
    .await;
    let mallory_jid = mallory.jid.clone();
    let baseline = stored_session(&db, &mallory_jid, mallory.device)
        .expect("the bot stored no session for mallory's valid key exchange");

    let other = BareJid::new("ceo@localhost").unwrap();
    let flip_mac = |d: &mut Vec<u8>| {
        let i = d.len() - 1;
        d[i] ^= 0x01;
    };
    let truncate = |d: &mut Vec<u8>| d.truncate(d.len() / 2);
    let attempts: [Attempt<'_>; 5] = [
        (
            "SCE from another JID",
            Some(mallory.envelope("spoofed", &other, &bot)),
            &|_| {},
        ),
        (
            "SCE to someone else",
            Some(mallory.envelope("misdirected", &mallory_jid, &mallory_jid)),
            &|_| {},
        ),
        (
            "flipped MAC byte",
            Some(mallory.envelope("x", &mallory_jid, &bot)),
            &flip_mac,
        ),
        (
            "truncated protobuf",
            Some(mallory.envelope("x", &mallory_jid, &bot)),
            &truncate,
        ),
        ("invalid envelope XML", Some(b"<not-xml".to_vec()), &|_| {}),
    ];
    for (name, envelope, tamper) in attempts {
        // Each attempt uses the next ratchet step, which the bot never commits.
        mallory.send(envelope, tamper).await;
        echo_round(&alice, &mut alice_events, &bot, &format!("after: {name}")).await;
        assert_eq!(
            stored_session(&db, &mallory_jid, mallory.device).as_deref(),
            Some(&baseline[..]),
            "{name} changed the stored session"
        );
    }

    // A message beyond the skip bound (1,002 steps ahead in the chain).
    let mut far = mallory.session.clone();
    let mut last = None;
    for _ in 0..1_002 {
        last = Some(far.encrypt(&[0u8; 48]).unwrap());
    }
    let KeyMessage::KeyExchange(kex) = last.unwrap() else {
        panic!("an unconfirmed session sends key exchanges")
    };
    mallory.send_raw(true, kex.to_bytes(), None).await;
    echo_round(&alice, &mut alice_events, &bot, "after: far ahead").await;
    assert_eq!(
        stored_session(&db, &mallory_jid, mallory.device).as_deref(),
        Some(&baseline[..]),
        "a message beyond the skip bound changed the stored session"
    );

    // A byte-identical replay of a valid message is ignored as a duplicate.
    let valid = mallory.envelope("replayed", &mallory_jid, &bot);
    let (kex, data, ciphertext) = mallory.send(Some(valid), |_| {}).await;
    echo_round(&alice, &mut alice_events, &bot, "after the original").await;
    let after_original = stored_session(&db, &mallory_jid, mallory.device);
    assert_ne!(
        after_original.as_deref(),
        Some(&baseline[..]),
        "the valid message was not committed"
    );
    mallory.send_raw(kex, data, ciphertext).await;
    echo_round(&alice, &mut alice_events, &bot, "after the replay").await;
    assert_eq!(
        stored_session(&db, &mallory_jid, mallory.device),
        after_original,
        "a replay changed the stored session"
    );

    alice.close().await;
}
