//! Arbitrary strings and attributes thrown at every parser: errors are fine, panics are not.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

use omemo_pep::omemo2::{self, DeviceList, EncryptedMessage};
use omemo_pep::pep;
use omemo_pep::sce::Envelope;
use proptest::prelude::*;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::minidom::Element;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn attr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,12}",
        "-?[0-9]{1,3}",
        "(true|false|1|0|TRUE|yes)",
        "[A-Za-z0-9+/=]{0,90}",
        "[a-z]{0,5}@?[a-z.]{0,8}/?[a-z]{0,3}",
    ]
    .prop_map(|s| escape(&s))
}

fn parse(text: &str) -> Option<Element> {
    text.parse::<Element>().ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encrypted_parser_never_panics(
        sid in attr_value(), jid in attr_value(), rid in attr_value(),
        kex in attr_value(), key in attr_value(), payload in attr_value(),
    ) {
        let text = format!(
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='{sid}'><keys jid='{jid}'>\
             <key rid='{rid}' kex='{kex}'>{key}</key></keys></header><payload>{payload}</payload></encrypted>"
        );
        if let Some(elem) = parse(&text) {
            if let Ok(msg) = EncryptedMessage::try_from(elem) {
                // Whatever parses also serializes and parses back to the same value.
                prop_assert_eq!(EncryptedMessage::try_from(msg.to_element()).ok(), Some(msg));
            }
        }
    }

    #[test]
    fn devices_parser_never_panics(
        ids in proptest::collection::vec(attr_value(), 0..8),
        label in attr_value(), labelsig in attr_value(),
    ) {
        let devices: String = ids
            .iter()
            .map(|id| format!("<device id='{id}' label='{label}' labelsig='{labelsig}'/>"))
            .collect();
        let text = format!("<devices xmlns='urn:xmpp:omemo:2'>{devices}</devices>");
        if let Some(elem) = parse(&text) {
            if let Ok(mut list) = DeviceList::try_from(elem) {
                let key = omemo_crypto::hazmat::identity_from_seed(&[1; 32]).public_key();
                list.verify_labels(|_| Some(key));
                prop_assert!(list.devices().iter().all(|d| d.label().verified().is_none()));
            }
        }
    }

    #[test]
    fn bundle_parser_never_panics(
        spk_id in attr_value(), spk in attr_value(), spks in attr_value(),
        ik in attr_value(), pk_id in attr_value(), pk in attr_value(),
    ) {
        let text = format!(
            "<bundle xmlns='urn:xmpp:omemo:2'><spk id='{spk_id}'>{spk}</spk><spks>{spks}</spks>\
             <ik>{ik}</ik><prekeys><pk id='{pk_id}'>{pk}</pk></prekeys></bundle>"
        );
        if let Some(elem) = parse(&text) {
            let _ = omemo2::parse_bundle(elem);
        }
    }

    #[test]
    fn envelope_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), text in any::<String>()) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = Envelope::from_bytes(text.as_bytes());
        let wrapped = format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content>{}</content><rpad>{}</rpad><from jid='{}'/></envelope>",
            escape(&text), escape(&text), escape(&text)
        );
        if let Ok(env) = Envelope::from_bytes(wrapped.as_bytes()) {
            let _ = env.body();
            let _ = env.to_bytes();
        }
    }

    #[test]
    fn pep_answers_never_panic(node in attr_value(), id in attr_value(), inner in attr_value()) {
        let text = format!(
            "<iq xmlns='jabber:client' type='result' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <items node='{node}'><item id='{id}'><devices xmlns='urn:xmpp:omemo:2'><device id='{inner}'/></devices></item></items>\
             </pubsub></iq>"
        );
        if let Some(iq) = parse(&text).and_then(|e| Iq::try_from(e).ok()) {
            let _ = pep::parse_device_list_response(&iq);
            let _ = pep::parse_bundle_response(&iq, omemo_crypto::DeviceId::new(1).unwrap());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The legacy `<encrypted>` parser: any attributes and texts, errors but no panics, and
    /// whatever parses round trips.
    #[test]
    fn legacy_encrypted_parser_never_panics(
        sid in attr_value(), rid in attr_value(), prekey in attr_value(),
        key in attr_value(), iv in attr_value(), payload in attr_value(),
    ) {
        let text = format!(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='{sid}'>\
             <key rid='{rid}' prekey='{prekey}'>{key}</key><iv>{iv}</iv></header>\
             <payload>{payload}</payload></encrypted>"
        );
        if let Some(elem) = parse(&text) {
            if let Ok(msg) = omemo_pep::legacy::EncryptedMessage::try_from(elem) {
                prop_assert!(msg.iv.len() == 12 || msg.iv.len() == 16);
                prop_assert_eq!(
                    omemo_pep::legacy::EncryptedMessage::try_from(msg.to_element()).ok(),
                    Some(msg)
                );
            }
        }
    }

    /// The legacy `<list>` and `<bundle>` parsers.
    #[test]
    fn legacy_list_and_bundle_parsers_never_panic(
        ids in proptest::collection::vec(attr_value(), 0..8),
        spk_id in attr_value(), pk_id in attr_value(),
        spk in attr_value(), sig in attr_value(), ik in attr_value(), pk in attr_value(),
    ) {
        let devices: String = ids.iter().map(|id| format!("<device id='{id}'/>")).collect();
        let text = format!("<list xmlns='eu.siacs.conversations.axolotl'>{devices}</list>");
        if let Some(elem) = parse(&text) {
            if let Ok(list) = omemo_pep::legacy::DeviceList::try_from(elem) {
                prop_assert_eq!(
                    omemo_pep::legacy::DeviceList::try_from(list.to_element()).ok(),
                    Some(list)
                );
            }
        }
        let text = format!(
            "<bundle xmlns='eu.siacs.conversations.axolotl'>\
             <signedPreKeyPublic signedPreKeyId='{spk_id}'>{spk}</signedPreKeyPublic>\
             <signedPreKeySignature>{sig}</signedPreKeySignature><identityKey>{ik}</identityKey>\
             <prekeys><preKeyPublic preKeyId='{pk_id}'>{pk}</preKeyPublic></prekeys></bundle>"
        );
        if let Some(elem) = parse(&text) {
            // Random keys essentially never carry a valid signature; the point is no panic.
            let _ = omemo_pep::legacy::parse_bundle(elem);
        }
    }
}
