//! Legacy OMEMO XML (`eu.siacs.conversations.axolotl`): every element of the legacy
//! `xml.json` (written by python-oldmemo's `etree`) parsed, checked, rebuilt from our own
//! values and compared, and message 1 decrypted from its XML with Bob's vector keys.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{field, hex_field, legacy_vectors, xml};
use omemo_crypto::legacy::{self as crypto_legacy, KeyMessage};
use omemo_crypto::{
    DeviceId, IdentityKeyPair, PreKey, PreKeyId, Signature, SignedPreKey, SignedPreKeyId,
};
use omemo_pep::legacy::{self, DeviceList, EncryptedKey, EncryptedMessage};
use omemo_pep::{hints, ns};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::minidom::Element;

fn id(value: u32) -> DeviceId {
    DeviceId::new(value).unwrap()
}

fn identity(keys: &serde_json::Value, who: &str) -> IdentityKeyPair {
    let seed: [u8; 32] = hex_field(keys, &[who, "seed"]).try_into().unwrap();
    omemo_crypto::hazmat::identity_from_seed(&seed)
}

fn signed_pre_key(keys: &serde_json::Value, who: &str) -> SignedPreKey {
    let node = format!("{who}_signed_pre_key");
    let secret: [u8; 32] = hex_field(keys, &[&node, "x25519_private"])
        .try_into()
        .unwrap();
    SignedPreKey::from_parts(
        SignedPreKeyId::new(1).unwrap(),
        &secret,
        Signature::from_bytes(&hex_field(keys, &[&node, "signature_wire"])).unwrap(),
        0,
    )
}

fn bob_pre_key(keys: &serde_json::Value) -> PreKey {
    let secret: [u8; 32] = hex_field(keys, &["bob_pre_key", "x25519_private"])
        .try_into()
        .unwrap();
    PreKey::from_secret(PreKeyId::new(42).unwrap(), &secret)
}

#[test]
fn device_list_vector() {
    let v = legacy_vectors("xml.json");
    assert_eq!(field(&v, &["devicelist_node"]), ns::LEGACY_DEVICE_LIST);
    assert_eq!(
        field(&v, &["devicelist_item_id"]),
        omemo_pep::pep::LEGACY_ITEM
    );
    let elem: Element = field(&v, &["devicelist_bob"]).parse().unwrap();
    let list = DeviceList::try_from(elem.clone()).unwrap();
    assert_eq!(list.ids().collect::<Vec<_>>(), vec![id(31415), id(4223)]);
    assert_eq!(list.to_element(), elem);
    // Built from scratch, the same element.
    let mut built = DeviceList::new();
    assert!(built.insert(id(31415)).unwrap());
    assert!(built.insert(id(4223)).unwrap());
    assert!(!built.insert(id(4223)).unwrap(), "already listed");
    assert_eq!(built.to_element(), elem);
    assert!(
        DeviceList::try_from(xml("<list xmlns='eu.siacs.conversations.axolotl'/>"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bundle_vectors_parse_and_rebuild_from_the_vector_keys() {
    let v = legacy_vectors("xml.json");
    let keys = legacy_vectors("keys.json");
    assert_eq!(field(&v, &["bundle_item_id"]), "current");
    for (who, device) in [("bob", 31415), ("alice", 1111)] {
        assert_eq!(
            field(&v, &[&format!("bundle_{who}_node")]),
            ns::legacy_bundle_node(id(device))
        );
        let elem: Element = field(&v, &[&format!("bundle_{who}")]).parse().unwrap();
        let bundle = legacy::parse_bundle(elem.clone()).unwrap();
        let pair = identity(&keys, &format!("{who}_identity"));
        // The Ed25519 identity is rebuilt with the sign bit of the signature (Alice's is 1).
        assert_eq!(bundle.identity_key(), pair.public_key(), "{who}");
        assert_eq!(
            bundle.legacy_identity_key().to_bytes().to_vec(),
            hex_field(&keys, &[&format!("{who}_identity"), "legacy_serialized"])
        );
        assert_eq!(bundle.signed_pre_key_id().get(), 1);
        assert_eq!(legacy::bundle_element(&bundle), elem);

        // The same element from the private keys: identity seed, signed pre-key secret with
        // python's signature, and the pre-key.
        let spk = signed_pre_key(&keys, who);
        let rebuilt = if who == "bob" {
            crypto_legacy::Bundle::from_own_keys(&pair, &spk, [&bob_pre_key(&keys)]).unwrap()
        } else {
            // Alice's vector bundle has a pre-key whose secret keys.json does not list; take
            // its public half from the element.
            crypto_legacy::Bundle::new(
                crypto_legacy::IdentityKey::from(pair.public_key()),
                spk.id(),
                spk.public_key(),
                spk.signature(),
                bundle.pre_keys().to_vec(),
            )
            .unwrap()
        };
        assert_eq!(legacy::bundle_element(&rebuilt), elem, "{who}");
    }
}

/// Bob receives message 1 as XML and decrypts it with his vector keys.
#[test]
fn encrypted_message_1_vector_decrypts() {
    let v = legacy_vectors("xml.json");
    let keys = legacy_vectors("keys.json");
    let elem: Element = field(&v, &["encrypted_message_1"]).parse().unwrap();
    let message = EncryptedMessage::try_from(elem.clone()).unwrap();
    assert_eq!(message.sid, id(1111));
    assert_eq!(message.iv.len(), 12);
    assert!(!message.is_empty_message());
    let keys_for_bob: Vec<&EncryptedKey> = message.keys_for(id(31415)).collect();
    assert_eq!(keys_for_bob.len(), 1);
    assert!(keys_for_bob[0].prekey);
    assert_eq!(message.to_element(), elem);

    let bob = identity(&keys, "bob_identity");
    let alice = identity(&keys, "alice_identity");
    let KeyMessage::KeyExchange(kex) = KeyMessage::from_bytes(&keys_for_bob[0].data).unwrap()
    else {
        panic!("prekey='true' carries a key exchange")
    };
    assert!(kex.identity_key().matches(&alice.public_key()));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let (_session, decrypted) = crypto_legacy::Session::respond(
        &bob,
        &signed_pre_key(&keys, "bob"),
        &bob_pre_key(&keys),
        &kex,
        &mut rng,
    )
    .unwrap();
    let body = crypto_legacy::payload::decrypt(
        message.payload.as_deref().unwrap(),
        &message.iv,
        decrypted.plaintext(),
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "Hello Bob! Grüße aus dem Legacy-Stack."
    );

    // prekey='1' (old Monal) reads the same and is written back as 'true'.
    let variant: Element = field(&v, &["encrypted_message_1_prekey_1_variant"])
        .parse()
        .unwrap();
    assert_ne!(variant, elem);
    let parsed = EncryptedMessage::try_from(variant).unwrap();
    assert_eq!(parsed, message);
    assert_eq!(parsed.to_element(), elem);
}

use rand_core::SeedableRng;

#[test]
fn key_transport_message_3_vector() {
    let v = legacy_vectors("xml.json");
    let elem: Element = field(&v, &["encrypted_empty_message_3"]).parse().unwrap();
    let message = EncryptedMessage::try_from(elem.clone()).unwrap();
    assert!(message.is_empty_message());
    assert_eq!(message.sid, id(31415));
    assert_eq!(message.iv.len(), 12, "<iv> is present without a payload");
    let key = message.keys_for(id(1111)).next().unwrap();
    assert!(!key.prekey);
    assert!(matches!(
        KeyMessage::from_bytes(&key.data),
        Ok(KeyMessage::Message(_))
    ));
    assert_eq!(message.to_element(), elem);
    // Built from its values, the same element.
    let built = EncryptedMessage {
        sid: id(31415),
        keys: vec![EncryptedKey {
            rid: id(1111),
            prekey: false,
            data: key.data.clone(),
        }],
        iv: message.iv.clone(),
        payload: None,
    };
    assert_eq!(built.to_element(), elem);
}

#[test]
fn full_stanza_vector_is_what_we_send_and_read() {
    let v = legacy_vectors("xml.json");
    let stanza: Element = field(&v, &["full_stanza_message_1"]).parse().unwrap();
    let encrypted: Element = field(&v, &["encrypted_message_1"]).parse().unwrap();
    let encrypted = EncryptedMessage::try_from(encrypted).unwrap();
    let mut built = hints::legacy_encrypted_message(
        Jid::new("bob@example.net").unwrap(),
        MessageType::Chat,
        &encrypted,
    );
    built.id = Some(xmpp_parsers::message::Id("legacy-vec-1".to_owned()));
    assert_eq!(Element::from(built), stanza);

    let received = Message::try_from(stanza).unwrap();
    assert_eq!(
        hints::find_legacy_encrypted(&received).unwrap().unwrap(),
        encrypted
    );
    // It is not an OMEMO 2 message, and its body is the fallback text.
    assert!(hints::find_encrypted(&received).is_none());
    assert_eq!(
        received
            .get_best_body(vec![])
            .map(|(_, body)| body.as_str()),
        Some(hints::LEGACY_FALLBACK_BODY)
    );
    // A key-transport message gets no fallback body.
    let empty: Element = field(&v, &["encrypted_empty_message_3"]).parse().unwrap();
    let empty = EncryptedMessage::try_from(empty).unwrap();
    let sent = hints::legacy_encrypted_message(
        Jid::new("alice@example.org").unwrap(),
        MessageType::Chat,
        &empty,
    );
    assert!(sent.bodies.is_empty());
    assert!(sent.payloads.iter().any(|p| p.is("store", ns::HINTS)));
}

#[test]
fn real_world_variants_are_read() {
    let v = legacy_vectors("xml.json");
    let reference = EncryptedMessage::try_from(
        field(&v, &["encrypted_message_1"])
            .parse::<Element>()
            .unwrap(),
    )
    .unwrap();
    let key_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&reference.keys[0].data)
    };
    // Line-wrapped base64 (Conversations logs), an unknown header child, and a 16-byte IV.
    let wrapped: String = key_b64
        .as_bytes()
        .chunks(40)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n ");
    let elem = xml(&format!(
        "<encrypted xmlns='eu.siacs.conversations.axolotl'>
           <header sid='1111'>
             <key rid='31415' prekey='true'>{wrapped}</key>
             <something-new xmlns='urn:example:future'/>
             <iv>w1rU53g4LVv/LqstyxwHNg==</iv>
           </header>
           <payload>AAAA</payload>
         </encrypted>"
    ));
    let parsed = EncryptedMessage::try_from(elem).unwrap();
    assert_eq!(parsed.keys, reference.keys);
    assert_eq!(parsed.iv.len(), 16);
    // Unknown children are dropped when writing.
    assert!(!String::from(&parsed.to_element()).contains("something-new"));

    // Our own device's key and a contact device's key may share a rid: both are kept;
    // an exact repeat is dropped.
    let elem = xml("<encrypted xmlns='eu.siacs.conversations.axolotl'>
           <header sid='7'>
             <key rid='5'>AAEC</key><key rid='5'>AwQF</key><key rid='5'>AAEC</key>
             <iv>AAAAAAAAAAAAAAAA</iv>
           </header>
         </encrypted>");
    let parsed = EncryptedMessage::try_from(elem).unwrap();
    let data: Vec<&[u8]> = parsed.keys_for(id(5)).map(|k| &k.data[..]).collect();
    assert_eq!(data, vec![&[0u8, 1, 2][..], &[3u8, 4, 5][..]]);
    assert_eq!(parsed.keys_for(id(6)).count(), 0);
}

#[test]
fn a_stanza_with_both_versions_yields_each_to_its_parser() {
    let v = legacy_vectors("xml.json");
    let legacy_elem: String = field(&v, &["encrypted_message_1"]).to_owned();
    let stanza = xml(&format!(
        "<message xmlns='jabber:client' from='alice@example.org/phone' type='chat'>
           <body>This message is OMEMO encrypted.</body>
           <encrypted xmlns='urn:xmpp:omemo:2'>
             <header sid='1111'><keys jid='bob@example.net'><key rid='31415'>AAEC</key></keys></header>
           </encrypted>
           {legacy_elem}
         </message>"
    ));
    let message = Message::try_from(stanza).unwrap();
    let omemo2 = hints::find_encrypted(&message).unwrap().unwrap();
    assert_eq!(omemo2.sid, id(1111));
    let legacy = hints::find_legacy_encrypted(&message).unwrap().unwrap();
    assert_eq!(legacy.keys_for(id(31415)).count(), 1);
    assert!(hints::find_legacy_encrypted(&Message::new(None)).is_none());
}
