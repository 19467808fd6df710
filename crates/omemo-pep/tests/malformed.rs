//! Hostile and malformed input gives typed errors, never panics.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{field, vectors, xml};
use omemo_pep::limits::{MAX_DEVICES, MAX_PAYLOAD_BYTES, MAX_PRE_KEYS};
use omemo_pep::omemo2::{self, DeviceList, EncryptedMessage};
use omemo_pep::Error;

fn encrypted(inner: &str) -> Result<EncryptedMessage, Error> {
    EncryptedMessage::try_from(xml(&format!(
        "<encrypted xmlns='urn:xmpp:omemo:2'>{inner}</encrypted>"
    )))
}

fn devices(inner: &str) -> Result<DeviceList, Error> {
    DeviceList::try_from(xml(&format!(
        "<devices xmlns='urn:xmpp:omemo:2'>{inner}</devices>"
    )))
}

#[test]
fn wrong_namespace_is_a_mismatch() {
    let legacy =
        xml("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>");
    assert!(matches!(
        EncryptedMessage::try_from(legacy),
        Err(Error::UnexpectedElement { found_ns, .. }) if found_ns == "eu.siacs.conversations.axolotl"
    ));
    let list = xml("<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>");
    assert!(matches!(
        DeviceList::try_from(list),
        Err(Error::UnexpectedElement { .. })
    ));
    // A child in the wrong namespace is not an OMEMO 2 <key>; a header in the wrong one is
    // missing.
    assert!(matches!(
        encrypted("<header xmlns='urn:xmpp:omemo:1' sid='1'/>"),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn missing_attributes_and_children() {
    assert!(matches!(
        encrypted("<header/>"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(encrypted(""), Err(Error::Malformed { .. })));
    assert!(matches!(
        encrypted("<header sid='1'><keys><key rid='2'>AA==</key></keys></header>"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='a@b'><key>AA==</key></keys></header>"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(devices("<device/>"), Err(Error::Malformed { .. })));
    let no_ik = xml(
        "<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>AA==</spk><spks>AA==</spks>\
         <prekeys/></bundle>",
    );
    assert!(matches!(
        omemo2::parse_bundle(no_ik),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn bad_numbers_booleans_and_jids() {
    assert!(matches!(
        encrypted("<header sid='x'/>"),
        Err(Error::InvalidNumber)
    ));
    assert!(matches!(
        encrypted("<header sid='-1'/>"),
        Err(Error::InvalidNumber)
    ));
    assert!(matches!(
        encrypted("<header sid='4294967296'/>"),
        Err(Error::InvalidNumber)
    ));
    assert!(matches!(
        encrypted(
            "<header sid='1'><keys jid='a@b'><key rid='2' kex='yes'>AA==</key></keys></header>"
        ),
        Err(Error::InvalidBoolean)
    ));
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='a@b/resource'/></header>"),
        Err(Error::InvalidJid)
    ));
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='@@'/></header>"),
        Err(Error::InvalidJid)
    ));
}

#[test]
fn ids_out_of_range() {
    assert!(matches!(
        encrypted("<header sid='0'/>"),
        Err(Error::IdOutOfRange(_))
    ));
    assert!(matches!(
        encrypted("<header sid='2147483648'/>"),
        Err(Error::IdOutOfRange(_))
    ));
    assert!(encrypted("<header sid='2147483647'/>").is_ok());
    assert!(matches!(
        devices("<device id='0'/>"),
        Err(Error::IdOutOfRange(_))
    ));
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='a@b'><key rid='0'>AA==</key></keys></header>"),
        Err(Error::IdOutOfRange(_))
    ));
}

#[test]
fn bad_base64() {
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='a@b'><key rid='2'>!!!</key></keys></header>"),
        Err(Error::InvalidBase64 { field: "key" })
    ));
    assert!(matches!(
        encrypted("<header sid='1'/><payload>A</payload>"),
        Err(Error::InvalidBase64 { field: "payload" })
    ));
}

#[test]
fn oversize_values() {
    let payload = "A".repeat((MAX_PAYLOAD_BYTES / 3 + 2) * 4);
    assert!(matches!(
        encrypted(&format!("<header sid='1'/><payload>{payload}</payload>")),
        Err(Error::TooLarge {
            field: "payload",
            ..
        })
    ));
    let key = "A".repeat(4000);
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'><keys jid='a@b'><key rid='2'>{key}</key></keys></header>"
        )),
        Err(Error::TooLarge { field: "key", .. })
    ));
    let label = "x".repeat(5000);
    assert!(matches!(
        devices(&format!("<device id='1' label='{label}'/>")),
        Err(Error::TooLarge { field: "label", .. })
    ));
}

#[test]
fn duplicate_ids() {
    assert!(matches!(
        devices("<device id='7'/><device id='8'/><device id='7'/>"),
        Err(Error::DuplicateId {
            kind: "device id",
            id: 7
        })
    ));
    assert!(matches!(
        encrypted(
            "<header sid='1'><keys jid='a@b'><key rid='2'>AA==</key><key rid='2'>AA==</key></keys></header>"
        ),
        Err(Error::DuplicateId { kind: "rid", id: 2 })
    ));
    assert!(matches!(
        encrypted("<header sid='1'><keys jid='a@b'/><keys jid='a@b'/></header>"),
        Err(Error::DuplicateJid(_))
    ));
    // The same rid under two JIDs is fine (device ids are per account).
    assert!(encrypted(
        "<header sid='1'><keys jid='a@b'><key rid='2'>AA==</key></keys>\
         <keys jid='c@d'><key rid='2'>AA==</key></keys></header>"
    )
    .is_ok());

    let v = vectors("xml.json");
    let bundle = field(&v, &["bundle_bob"]).replace(
        "</prekeys>",
        "<pk id=\"42\">OWQyVs1fJ6Bla1XiSIp96sdj/9KMCj7D4KEI3pRg8Bg=</pk></prekeys>",
    );
    assert!(matches!(
        omemo2::parse_bundle(xml(&bundle)),
        Err(Error::DuplicateId {
            kind: "pre-key id",
            id: 42
        })
    ));
}

#[test]
fn ten_thousand_devices_are_refused() {
    let many: String = (1..=10_000)
        .map(|i| format!("<device id='{i}'/>"))
        .collect();
    assert!(matches!(
        devices(&many),
        Err(Error::TooMany { what: "devices", limit }) if limit == MAX_DEVICES
    ));
    let enough: String = (1..=MAX_DEVICES)
        .map(|i| format!("<device id='{i}'/>"))
        .collect();
    assert_eq!(devices(&enough).unwrap().len(), MAX_DEVICES);
}

#[test]
fn bundle_key_checks() {
    let v = vectors("xml.json");
    let good = field(&v, &["bundle_bob"]);
    let ik = "lp04hsBk44o0ON7jPin+jIU4EtaewTYhvG987WRY1gc=";
    let cases = [
        // 31-byte identity key.
        (
            good.replace(ik, "lp04hsBk44o0ON7jPin+jIU4EtaewTYhvG987WRY1g=="),
            "ik",
        ),
        // Small-order identity key (the Ed25519 neutral element).
        (
            good.replace(ik, "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            "ik",
        ),
        // 33-byte signed pre-key with a 0x05 type byte (legacy encoding).
        (
            good.replace(
                "Y/INDqASA93xqJFBOSB/DX45W1F4ULNDun8j1ywObz4=",
                "BWPyDQ6gEgPd8aiRQTkgfw1+OVtReFCzQ7p/I9csDm8+",
            ),
            "spk",
        ),
        // Signature of the wrong length.
        (good.replace("<spks>oCUU", "<spks>oCU"), "spks"),
    ];
    for (xml_text, expected_field) in cases {
        match omemo2::parse_bundle(xml(&xml_text)) {
            Err(Error::InvalidKey { field, .. }) => assert_eq!(field, expected_field),
            Err(Error::InvalidBase64 { field }) => assert_eq!(field, expected_field),
            other => panic!("{expected_field}: {other:?}"),
        }
    }
    // A signature that does not verify.
    let forged = good.replace("<spks>oCUU", "<spks>oCUV");
    assert!(matches!(
        omemo2::parse_bundle(xml(&forged)),
        Err(Error::InvalidBundle(
            omemo_crypto::BundleError::BadSignature
        ))
    ));
    // No pre-keys.
    let empty = good
        .split("<prekeys>")
        .next()
        .map(|head| format!("{head}<prekeys/></bundle>"))
        .unwrap();
    assert!(matches!(
        omemo2::parse_bundle(xml(&empty)),
        Err(Error::InvalidBundle(omemo_crypto::BundleError::NoPreKeys))
    ));
    // Too many pre-keys.
    let many: String = (1..=MAX_PRE_KEYS + 1)
        .map(|i| format!("<pk id='{i}'>OWQyVs1fJ6Bla1XiSIp96sdj/9KMCj7D4KEI3pRg8Bg=</pk>"))
        .collect();
    let big = good.replace(
        "<pk id=\"42\">OWQyVs1fJ6Bla1XiSIp96sdj/9KMCj7D4KEI3pRg8Bg=</pk>",
        &many,
    );
    assert!(matches!(
        omemo2::parse_bundle(xml(&big)),
        Err(Error::TooMany {
            what: "pre-keys",
            ..
        })
    ));
}
