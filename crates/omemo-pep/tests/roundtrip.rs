//! XML round-trips: literal → type → same XML, for every element (vectors from
//! `xml.json` produced by twomemo, and the XEP-0384/XEP-0420 examples).
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{field, vectors, xml};
use omemo_crypto::{DeviceId, IdentityPublicKey};
use omemo_pep::omemo2::{self, DeviceList, EncryptedMessage, Label};
use omemo_pep::sce::Envelope;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::minidom::Element;

fn bob_identity() -> IdentityPublicKey {
    let keys = vectors("keys.json");
    let bytes = hex::decode(field(&keys, &["bob_identity", "ed25519_public"])).unwrap();
    IdentityPublicKey::from_bytes(&bytes).unwrap()
}

#[test]
fn encrypted_message_1_vector() {
    let v = vectors("xml.json");
    let elem = xml(field(&v, &["encrypted_message_1"]));
    let wire = omemo2::Encrypted::try_from(elem.clone()).unwrap();
    assert_eq!(Element::from(wire.clone()), elem);

    let msg = EncryptedMessage::try_from(elem.clone()).unwrap();
    assert_eq!(msg.sid.get(), 1111);
    assert!(!msg.is_empty_message());
    let bob = BareJid::new("bob@example.net").unwrap();
    let key = msg.key_for(&bob, DeviceId::new(31415).unwrap()).unwrap();
    assert!(key.kex);
    // The key content is the OMEMOKeyExchange of ratchet.json message_1.
    assert_eq!(key.data.first(), Some(&0x08));
    assert_eq!(msg.to_element(), elem);
}

#[test]
fn encrypted_empty_message_3_vector() {
    let v = vectors("xml.json");
    let elem = xml(field(&v, &["encrypted_empty_message_3"]));
    let msg = EncryptedMessage::try_from(elem.clone()).unwrap();
    assert!(msg.is_empty_message());
    assert_eq!(msg.sid.get(), 31415);
    assert_eq!(msg.keys.len(), 1);
    assert!(!msg.keys[0].keys[0].kex);
    // kex is omitted when false, as twomemo writes it.
    assert_eq!(msg.to_element(), elem);
}

#[test]
fn bundle_vector_converts_to_crypto_bundle_and_back() {
    let v = vectors("xml.json");
    let keys = vectors("keys.json");
    let elem = xml(field(&v, &["bundle_bob"]));
    let wire = omemo2::Bundle::try_from(elem.clone()).unwrap();
    assert_eq!(Element::from(wire.clone()), elem);

    let bundle = omemo_crypto::Bundle::try_from(wire).unwrap();
    assert_eq!(bundle.identity_key(), bob_identity());
    assert_eq!(bundle.signed_pre_key_id().get(), 1);
    assert_eq!(
        hex::encode(bundle.signed_pre_key().as_bytes()),
        field(&keys, &["bob_signed_pre_key", "x25519_public"])
    );
    assert_eq!(bundle.pre_keys().len(), 1);
    assert_eq!(bundle.pre_keys()[0].0.get(), 42);
    assert_eq!(omemo2::bundle_element(&bundle), elem);
    assert_eq!(omemo2::parse_bundle(elem).unwrap(), bundle);
}

#[test]
fn devices_vector_round_trips_and_labels_verify() {
    let v = vectors("xml.json");
    let keys = vectors("keys.json");
    let elem = xml(field(&v, &["devices_bob"]));
    let wire = omemo2::Devices::try_from(elem.clone()).unwrap();
    assert_eq!(Element::from(wire), elem);
    assert_eq!(
        field(&keys, &["bob_label", "labelsig_base64"]),
        elem.children().next().unwrap().attr("labelsig").unwrap()
    );

    let mut list = DeviceList::try_from(elem.clone()).unwrap();
    let bob = DeviceId::new(31415).unwrap();
    let other = DeviceId::new(4223).unwrap();
    assert_eq!(list.ids().collect::<Vec<_>>(), vec![bob, other]);
    // Before verification the label must not count.
    assert_eq!(
        list.get(bob).unwrap().label(),
        Label::Unverified("Rust client on laptop")
    );
    assert_eq!(list.get(bob).unwrap().label().verified(), None);
    assert_eq!(list.get(other).unwrap().label(), Label::None);

    let ik = bob_identity();
    list.verify_labels(|id| (id == bob).then_some(ik));
    assert_eq!(
        list.get(bob).unwrap().label().verified(),
        Some(field(&keys, &["bob_label", "label"]))
    );
    // Verification does not change the wire form.
    assert_eq!(list.to_element(), elem);
}

#[test]
fn label_under_the_wrong_key_is_rejected() {
    let v = vectors("xml.json");
    let keys = vectors("keys.json");
    let alice = IdentityPublicKey::from_bytes(
        &hex::decode(field(&keys, &["alice_identity", "ed25519_public"])).unwrap(),
    )
    .unwrap();
    let mut list = DeviceList::try_from(xml(field(&v, &["devices_bob"]))).unwrap();
    list.verify_labels(|_| Some(alice));
    let bob = DeviceId::new(31415).unwrap();
    assert_eq!(
        list.get(bob).unwrap().label(),
        Label::Rejected("Rust client on laptop")
    );
    // Once rejected, the right key does not resurrect it silently… it is simply re-checked
    // only for labels that were not rejected.
    list.verify_labels(|_| Some(bob_identity()));
    assert_eq!(list.get(bob).unwrap().label().verified(), None);
}

#[test]
fn unsigned_and_badly_signed_labels_are_never_verified() {
    let elem = xml(
        "<devices xmlns='urn:xmpp:omemo:2'>
           <device id='1' label='no signature'/>
           <device id='2' label='garbage' labelsig='not base64!'/>
           <device id='3' label='short' labelsig='AAAA'/>
           <device id='4' label='tampered' labelsig='xrmMhvxq/0ZcxGOUUa+lNIuXTLUu7oobFNd1lAkY1E58C/Rn6r9U6TdJiozDTN/3yHE5KRD0+q7RigR8v0LjAA=='/>
         </devices>",
    );
    let mut list = DeviceList::try_from(elem.clone()).unwrap();
    let ik = bob_identity();
    list.verify_labels(|_| Some(ik));
    for entry in list.devices() {
        assert!(matches!(entry.label(), Label::Rejected(_)), "{entry:?}");
    }
    // Other devices' data survives unchanged when we republish.
    assert_eq!(list.to_element(), elem);
}

#[test]
fn xep0384_devices_example() {
    // XEP-0384 §devices example (label without signature, as in 0.8).
    let elem = xml("<devices xmlns='urn:xmpp:omemo:2'>
           <device id='12345' />
           <device id='4223' label='Gajim on Ubuntu Linux' />
         </devices>");
    let wire = omemo2::Devices::try_from(elem.clone()).unwrap();
    assert_eq!(wire.devices.len(), 2);
    assert_eq!(Element::from(wire), elem);
    let list = DeviceList::try_from(elem.clone()).unwrap();
    assert_eq!(
        list.get(DeviceId::new(4223).unwrap()).unwrap().label(),
        Label::Rejected("Gajim on Ubuntu Linux")
    );
    assert_eq!(list.to_element(), elem);
    // An empty list is allowed (0.9).
    let empty = xml("<devices xmlns='urn:xmpp:omemo:2'/>");
    assert!(DeviceList::try_from(empty.clone()).unwrap().is_empty());
    assert_eq!(DeviceList::new().to_element(), empty);
}

#[test]
fn xep0384_message_example() {
    // XEP-0384 §message-structure-description example; the placeholders are replaced by
    // valid base64.
    let elem = xml("<encrypted xmlns='urn:xmpp:omemo:2'>
           <header sid='27183'>
             <keys jid='juliet@capulet.lit'>
               <key rid='31415'>AQID</key>
             </keys>
             <keys jid='romeo@montague.lit'>
               <key rid='1337'>BAUG</key>
               <key kex='true' rid='12321'>BwgJ</key>
             </keys>
           </header>
           <payload>CgsM</payload>
         </encrypted>");
    let msg = EncryptedMessage::try_from(elem.clone()).unwrap();
    assert_eq!(msg.keys.len(), 2);
    assert_eq!(msg.keys[1].keys[1].data, vec![7, 8, 9]);
    assert_eq!(msg.payload, Some(vec![10, 11, 12]));
    assert_eq!(msg.to_element(), elem);
}

#[test]
fn kex_accepts_xs_boolean_forms() {
    for (value, expected) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        let elem = xml(&format!(
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='a@b'>\
             <key rid='2' kex='{value}'>AA==</key></keys></header></encrypted>"
        ));
        let msg = EncryptedMessage::try_from(elem).unwrap();
        assert_eq!(msg.keys[0].keys[0].kex, expected, "{value}");
        let out = msg.to_element();
        let key = out
            .get_child("header", "urn:xmpp:omemo:2")
            .and_then(|h| h.get_child("keys", "urn:xmpp:omemo:2"))
            .and_then(|k| k.get_child("key", "urn:xmpp:omemo:2"))
            .unwrap();
        assert_eq!(key.attr("kex"), expected.then_some("true"));
    }
}

#[test]
fn xep0420_envelope_example() {
    let literal = "<envelope xmlns='urn:xmpp:sce:1'>
           <content>
             <body xmlns='jabber:client'>Hello</body>
           </content>
           <rpad>randompadding</rpad>
           <time stamp='2024-01-01T12:00:00+00:00'/>
           <to jid='bob@example.net'/>
           <from jid='alice@example.org'/>
         </envelope>";
    let elem = xml(literal);
    let envelope = Envelope::try_from(elem.clone()).unwrap();
    assert_eq!(envelope.body().as_deref(), Some("Hello"));
    assert_eq!(envelope.rpad.as_deref(), Some("randompadding"));
    assert_eq!(Element::from(envelope.clone()), elem);
    // xmpp-parsers writes the UTC offset as `+00:00`; `Z` reads as the same instant.
    let zulu = xml(&literal.replace("+00:00", "Z"));
    assert_eq!(Envelope::try_from(zulu).unwrap(), envelope);
    // Through bytes, as the payload carries it.
    let bytes = envelope.to_bytes().unwrap();
    assert_eq!(Envelope::from_bytes(&bytes).unwrap(), envelope);
}

#[test]
fn hints_round_trip() {
    let store = xml("<store xmlns='urn:xmpp:hints'/>");
    assert_eq!(
        Element::from(omemo_pep::hints::Store::try_from(store.clone()).unwrap()),
        store
    );
    let eme =
        xml("<encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:omemo:2' name='OMEMO 2'/>");
    assert_eq!(Element::from(omemo_pep::hints::omemo2_eme()), eme);
}
