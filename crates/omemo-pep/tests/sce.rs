//! SCE envelope (XEP-0420) building, parsing and affix verification; message hints.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::xml;
use omemo_crypto::DeviceId;
use omemo_pep::hints::{encrypted_message, find_encrypted};
use omemo_pep::omemo2::{EncryptedKey, EncryptedMessage, RecipientKeys};
use omemo_pep::sce::{Envelope, MAX_RPAD_CHARS};
use omemo_pep::{ns, Error};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::minidom::Element;

fn alice() -> BareJid {
    BareJid::new("alice@example.org").unwrap()
}
fn bob() -> BareJid {
    BareJid::new("bob@example.net").unwrap()
}

#[test]
fn envelope_round_trips_through_bytes_and_verifies() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let time = "2024-01-01T12:00:00Z".parse().unwrap();
    let extra = xml("<reply xmlns='urn:xmpp:reply:0' id='x'/>");
    let env = Envelope::new(
        vec![Envelope::body_element("Hello <&> world"), extra.clone()],
        alice(),
        bob(),
        Some(time),
        &mut rng,
    );
    let bytes = env.to_bytes().unwrap();
    let parsed = Envelope::from_bytes(&bytes).unwrap();
    // minidom splits text at entities, so compare the serialized form.
    assert_eq!(parsed.to_bytes().unwrap(), bytes);
    assert_eq!(parsed.time, env.time);
    assert_eq!(parsed.body().as_deref(), Some("Hello <&> world"));
    assert_eq!(parsed.sensitive_content().count(), 2);
    parsed.verify_affixes(&alice(), &bob()).unwrap();
}

#[test]
fn affix_mismatches_are_errors() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let env = Envelope::new(vec![], alice(), bob(), None, &mut rng);
    let mallory = BareJid::new("mallory@evil.example").unwrap();
    assert!(matches!(
        env.verify_affixes(&mallory, &bob()),
        Err(Error::SenderMismatch { found, .. }) if found == alice()
    ));
    assert!(matches!(
        env.verify_affixes(&alice(), &mallory),
        Err(Error::RecipientMismatch { found, .. }) if found == bob()
    ));
    // Full JIDs in the affixes compare by their bare part.
    let full = xml("<envelope xmlns='urn:xmpp:sce:1'><content/><rpad/>\
         <to jid='bob@example.net/phone'/><from jid='alice@example.org/laptop'/></envelope>");
    Envelope::try_from(full)
        .unwrap()
        .verify_affixes(&alice(), &bob())
        .unwrap();
}

/// An envelope as a one-to-one chat client sends it: `<rpad>`, `<from>` and `<to>` only
/// where `affixes` says so, no `<time>`.
fn one_to_one(affixes: &str) -> Envelope {
    Envelope::try_from(xml(&format!(
        "<envelope xmlns='urn:xmpp:sce:1'><content>\
           <body xmlns='jabber:client'>hello</body></content>{affixes}</envelope>"
    )))
    .unwrap()
}

#[test]
fn one_to_one_envelope_without_to_is_accepted_and_a_wrong_to_refused() {
    // Converse.js writes <to> only in group chats (XEP-0384 §sce requires it only there).
    let without_to = one_to_one("<rpad>xyz</rpad><from jid='alice@example.org'/>");
    assert_eq!(without_to.to, None);
    without_to.verify_affixes(&alice(), &bob()).unwrap();
    // The same envelope with a <to> naming someone else is refused...
    let misdirected =
        one_to_one("<rpad>xyz</rpad><from jid='alice@example.org'/><to jid='carol@example.com'/>");
    assert!(matches!(
        misdirected.verify_affixes(&alice(), &bob()),
        Err(Error::RecipientMismatch { found, .. }) if found.as_str() == "carol@example.com"
    ));
    // ...and with one naming us (any resource) accepted.
    let to_us = one_to_one(
        "<rpad>xyz</rpad><from jid='alice@example.org'/><to jid='bob@example.net/phone'/>",
    );
    to_us.verify_affixes(&alice(), &bob()).unwrap();
}

#[test]
fn missing_from_is_accepted_and_a_wrong_from_refused() {
    // <from> is a SHOULD in XEP-0384 §sce: the session already binds the sender.
    let without_from = one_to_one("<rpad>xyz</rpad><to jid='bob@example.net'/>");
    assert_eq!(without_from.from, None);
    without_from.verify_affixes(&alice(), &bob()).unwrap();
    let spoofed = one_to_one("<rpad>xyz</rpad><from jid='mallory@evil.example'/>");
    assert!(matches!(
        spoofed.verify_affixes(&alice(), &bob()),
        Err(Error::SenderMismatch { found, .. }) if found.as_str() == "mallory@evil.example"
    ));
}

#[test]
fn missing_time_and_rpad_are_accepted() {
    // <time> is a MAY; <rpad> protects only the sender's message length. Neither is checked,
    // while the affixes that are present still are (the wrong <from> below is refused).
    let bare = one_to_one("");
    assert!(bare.time.is_none() && bare.rpad.is_none());
    bare.verify_affixes(&alice(), &bob()).unwrap();
    let wrong_from_only = one_to_one("<from jid='mallory@evil.example'/>");
    assert!(matches!(
        wrong_from_only.verify_affixes(&alice(), &bob()),
        Err(Error::SenderMismatch { .. })
    ));
}

#[test]
fn rpad_length_is_random_and_bounded() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut lengths = std::collections::HashSet::new();
    for _ in 0..500 {
        let env = Envelope::new(vec![], alice(), bob(), None, &mut rng);
        let len = env.rpad.as_ref().unwrap().len();
        assert!(len <= MAX_RPAD_CHARS);
        lengths.insert(len);
    }
    assert!(lengths.len() > 50, "padding lengths vary");
}

#[test]
fn server_processed_elements_are_dropped_and_bad_bytes_rejected() {
    let env = Envelope::try_from(xml("<envelope xmlns='urn:xmpp:sce:1'><content>\
           <body xmlns='jabber:client'>hi</body>\
           <store xmlns='urn:xmpp:hints'/>\
           <stanza-id xmlns='urn:xmpp:sid:0' id='1' by='a@b'/>\
         </content></envelope>"))
    .unwrap();
    let kept: Vec<&Element> = env.sensitive_content().collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].is("body", ns::JABBER_CLIENT));

    assert!(matches!(
        Envelope::from_bytes(b"<envelope xmlns='urn:xmpp:sce:1'><content>"),
        Err(Error::InvalidXml(_))
    ));
    assert!(Envelope::from_bytes(b"\xff\xfe garbage").is_err());
    assert!(matches!(
        Envelope::from_bytes(b"<other xmlns='urn:example'/>"),
        Err(Error::UnexpectedElement { .. })
    ));
}

fn sample_message() -> EncryptedMessage {
    EncryptedMessage {
        sid: DeviceId::new(1111).unwrap(),
        keys: vec![RecipientKeys {
            jid: bob(),
            keys: vec![EncryptedKey {
                rid: DeviceId::new(31415).unwrap(),
                kex: true,
                data: vec![8, 1, 2],
            }],
        }],
        payload: Some(vec![1, 2, 3]),
    }
}

#[test]
fn outgoing_message_has_eme_and_store_hints() {
    let msg = encrypted_message(Jid::from(bob()), MessageType::Chat, &sample_message());
    let elem = Element::from(msg.clone());
    assert!(elem.get_child("encrypted", ns::OMEMO2).is_some());
    let eme = elem.get_child("encryption", ns::EME).unwrap();
    assert_eq!(eme.attr("namespace"), Some(ns::OMEMO2));
    assert_eq!(eme.attr("name"), Some("OMEMO 2"));
    assert!(elem.get_child("store", ns::HINTS).is_some());
    assert!(elem.get_child("body", ns::JABBER_CLIENT).is_none());
    assert_eq!(find_encrypted(&msg).unwrap().unwrap(), sample_message());
}

#[test]
fn incoming_message_with_fallback_body_still_works() {
    let stanza = xml(
        "<message xmlns='jabber:client' from='alice@example.org/laptop' to='bob@example.net' type='chat' id='m1'>
           <body>This message is OMEMO encrypted.</body>
           <encrypted xmlns='urn:xmpp:omemo:2'>
             <header sid='1111'><keys jid='bob@example.net'><key rid='31415' kex='true'>CAEC</key></keys></header>
             <payload>AQID</payload>
           </encrypted>
           <encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:omemo:2' name='OMEMO 2'/>
           <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:omemo:2'/>
         </message>",
    );
    let message = Message::try_from(stanza).unwrap();
    assert_eq!(find_encrypted(&message).unwrap().unwrap(), sample_message());
    let plain = Message::new(Some(Jid::from(bob())));
    assert!(find_encrypted(&plain).is_none());
}
