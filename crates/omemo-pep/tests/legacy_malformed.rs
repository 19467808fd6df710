//! Hostile and malformed legacy (`eu.siacs.conversations.axolotl`) input gives typed errors,
//! never panics; every rejection has an accepted counterpart next to it.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{field, legacy_vectors, xml};
use omemo_crypto::{BundleError, KeyError};
use omemo_pep::legacy::{self, DeviceList, EncryptedMessage};
use omemo_pep::limits::{MAX_DEVICES, MAX_KEYS_PER_MESSAGE, MAX_PAYLOAD_BYTES, MAX_PRE_KEYS};
use omemo_pep::Error;

const IV: &str = "<iv>AAAAAAAAAAAAAAAA</iv>";

fn encrypted(inner: &str) -> Result<EncryptedMessage, Error> {
    EncryptedMessage::try_from(xml(&format!(
        "<encrypted xmlns='eu.siacs.conversations.axolotl'>{inner}</encrypted>"
    )))
}

fn list(inner: &str) -> Result<DeviceList, Error> {
    DeviceList::try_from(xml(&format!(
        "<list xmlns='eu.siacs.conversations.axolotl'>{inner}</list>"
    )))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bob's vector bundle with one part replaced.
fn bundle_with(
    replace: impl FnOnce(&mut legacy::Bundle),
) -> Result<omemo_crypto::legacy::Bundle, Error> {
    let v = legacy_vectors("xml.json");
    let mut wire = legacy::Bundle::try_from(xml(field(&v, &["bundle_bob"]))).unwrap();
    replace(&mut wire);
    omemo_crypto::legacy::Bundle::try_from(wire)
}

#[test]
fn control_values_are_accepted() {
    assert!(encrypted(&format!(
        "<header sid='1'><key rid='2'>AA==</key>{IV}</header>"
    ))
    .is_ok());
    assert!(list("<device id='1'/>").is_ok());
    assert!(bundle_with(|_| {}).is_ok());
}

#[test]
fn wrong_namespace_is_a_mismatch() {
    let omemo2 = xml("<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted>");
    assert!(matches!(
        EncryptedMessage::try_from(omemo2),
        Err(Error::UnexpectedElement { found_ns, .. }) if found_ns == "urn:xmpp:omemo:2"
    ));
    let devices = xml("<devices xmlns='urn:xmpp:omemo:2'><device id='1'/></devices>");
    assert!(matches!(
        DeviceList::try_from(devices),
        Err(Error::UnexpectedElement { .. })
    ));
    let bundle = xml("<bundle xmlns='urn:xmpp:omemo:2'/>");
    assert!(matches!(
        legacy::parse_bundle(bundle),
        Err(Error::UnexpectedElement { .. })
    ));
}

#[test]
fn missing_attributes_and_children() {
    // No sid, no rid, no <iv>, no header.
    assert!(matches!(
        encrypted(&format!("<header><key rid='2'>AA==</key>{IV}</header>")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        encrypted(&format!("<header sid='1'><key>AA==</key>{IV}</header>")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        encrypted("<header sid='1'><key rid='2'>AA==</key></header>"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(encrypted(""), Err(Error::Malformed { .. })));
    // Two IVs or two payloads.
    assert!(matches!(
        encrypted(&format!("<header sid='1'>{IV}{IV}</header>")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'>{IV}</header><payload>AA==</payload><payload>AA==</payload>"
        )),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(list("<device/>"), Err(Error::Malformed { .. })));
    // A bundle without its identity key or signed pre-key id.
    assert!(matches!(
        legacy::parse_bundle(xml("<bundle xmlns='eu.siacs.conversations.axolotl'>
               <signedPreKeyPublic signedPreKeyId='1'>AA==</signedPreKeyPublic>
               <signedPreKeySignature>AA==</signedPreKeySignature><prekeys/></bundle>")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        legacy::parse_bundle(xml("<bundle xmlns='eu.siacs.conversations.axolotl'>
               <signedPreKeyPublic>AA==</signedPreKeyPublic>
               <signedPreKeySignature>AA==</signedPreKeySignature>
               <identityKey>AA==</identityKey><prekeys/></bundle>")),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn bad_numbers_booleans_ids_and_base64() {
    assert!(matches!(
        encrypted(&format!("<header sid='x'>{IV}</header>")),
        Err(Error::InvalidNumber)
    ));
    assert!(matches!(
        encrypted(&format!("<header sid='0'>{IV}</header>")),
        Err(Error::IdOutOfRange(_))
    ));
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'><key rid='2147483648'>AA==</key>{IV}</header>"
        )),
        Err(Error::IdOutOfRange(_))
    ));
    // prekey: 'true' and '1' (old Monal) are true, 'false' and '0' false, anything else an
    // error.
    for (value, expected) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        let parsed = encrypted(&format!(
            "<header sid='1'><key rid='2' prekey='{value}'>AA==</key>{IV}</header>"
        ))
        .unwrap();
        assert_eq!(parsed.keys[0].prekey, expected, "{value}");
    }
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'><key rid='2' prekey='yes'>AA==</key>{IV}</header>"
        )),
        Err(Error::InvalidBoolean)
    ));
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'><key rid='2'>!!</key>{IV}</header>"
        )),
        Err(Error::InvalidBase64 { field: "key" })
    ));
    assert!(matches!(
        encrypted("<header sid='1'><iv>***</iv></header>"),
        Err(Error::InvalidBase64 { field: "iv" })
    ));
    assert!(matches!(
        list("<device id='0'/>"),
        Err(Error::IdOutOfRange(_))
    ));
}

#[test]
fn iv_lengths() {
    for len in [12usize, 16] {
        let iv = b64(&vec![7u8; len]);
        let parsed = encrypted(&format!("<header sid='1'><iv>{iv}</iv></header>")).unwrap();
        assert_eq!(parsed.iv.len(), len);
    }
    for len in [0usize, 8, 11, 13, 15, 17, 32] {
        let iv = b64(&vec![7u8; len]);
        assert!(
            matches!(
                encrypted(&format!("<header sid='1'><iv>{iv}</iv></header>")),
                Err(Error::InvalidIvLength(l)) if l == len
            ),
            "{len}"
        );
    }
    let huge = "A".repeat(2000);
    assert!(matches!(
        encrypted(&format!("<header sid='1'><iv>{huge}</iv></header>")),
        Err(Error::TooLarge { field: "iv", .. })
    ));
}

#[test]
fn limits_are_applied() {
    let payload = "A".repeat((MAX_PAYLOAD_BYTES / 3 + 2) * 4);
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'>{IV}</header><payload>{payload}</payload>"
        )),
        Err(Error::TooLarge {
            field: "payload",
            ..
        })
    ));
    let key = "A".repeat(4000);
    assert!(matches!(
        encrypted(&format!(
            "<header sid='1'><key rid='2'>{key}</key>{IV}</header>"
        )),
        Err(Error::TooLarge { field: "key", .. })
    ));
    let keys: String = (1..=MAX_KEYS_PER_MESSAGE + 1)
        .map(|i| format!("<key rid='{i}'>AA==</key>"))
        .collect();
    assert!(matches!(
        encrypted(&format!("<header sid='1'>{keys}{IV}</header>")),
        Err(Error::TooMany { .. })
    ));
    let at_limit: String = (1..=MAX_KEYS_PER_MESSAGE)
        .map(|i| format!("<key rid='{i}'>AA==</key>"))
        .collect();
    assert!(encrypted(&format!("<header sid='1'>{at_limit}{IV}</header>")).is_ok());
    let devices: String = (1..=MAX_DEVICES + 1)
        .map(|i| format!("<device id='{i}'/>"))
        .collect();
    assert!(matches!(list(&devices), Err(Error::TooMany { .. })));
    assert!(matches!(
        list("<device id='7'/><device id='8'/><device id='7'/>"),
        Err(Error::DuplicateId {
            kind: "device id",
            id: 7
        })
    ));
    let mut full = DeviceList::new();
    for i in 1..=u32::try_from(MAX_DEVICES).unwrap() {
        full.insert(omemo_crypto::DeviceId::new(i).unwrap())
            .unwrap();
    }
    assert!(matches!(
        full.insert(omemo_crypto::DeviceId::new(999_999).unwrap()),
        Err(Error::TooMany { .. })
    ));
}

#[test]
fn bad_bundles() {
    // OMEMO 2's 32-byte keys (no type byte), a wrong type byte.
    let err = bundle_with(|b| {
        b.identity_key.data.remove(0);
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidKey {
            field: "identityKey",
            source: KeyError::InvalidLength {
                expected: 33,
                actual: 32
            }
        }
    ));
    let err = bundle_with(|b| b.signed_pre_key_public.data[0] = 0x06).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidKey {
            field: "signedPreKeyPublic",
            source: KeyError::UnknownKeyType(6)
        }
    ));
    let err = bundle_with(|b| b.prekeys.keys[0].data.push(0)).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidKey {
            field: "preKeyPublic",
            ..
        }
    ));
    // A small-order identity key.
    let err = bundle_with(|b| {
        b.identity_key.data = [&[5u8][..], &[0u8; 32][..]].concat();
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidKey {
            field: "identityKey",
            source: KeyError::SmallOrder
        }
    ));
    // A flipped signature bit, a flipped sign bit, another signed pre-key.
    let err = bundle_with(|b| b.signed_pre_key_signature.data[10] ^= 1).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidBundle(BundleError::BadSignature)
    ));
    let err = bundle_with(|b| b.signed_pre_key_signature.data[63] ^= 0x80).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidBundle(BundleError::BadSignature)
    ));
    let err = bundle_with(|b| b.signed_pre_key_public.data[5] ^= 1).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidBundle(BundleError::BadSignature)
    ));
    let err = bundle_with(|b| {
        b.signed_pre_key_signature.data.pop();
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidKey {
            field: "signedPreKeySignature",
            ..
        }
    ));
    // No pre-keys (Gajim and python refuse such bundles), duplicate and too many pre-keys.
    let err = bundle_with(|b| b.prekeys.keys.clear()).unwrap_err();
    assert!(matches!(err, Error::InvalidBundle(BundleError::NoPreKeys)));
    let err = bundle_with(|b| {
        let pk = b.prekeys.keys[0].clone();
        b.prekeys.keys.push(pk);
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::DuplicateId {
            kind: "pre-key id",
            id: 42
        }
    ));
    let err = bundle_with(|b| {
        let pk = b.prekeys.keys[0].clone();
        b.prekeys.keys = (1..=MAX_PRE_KEYS + 1)
            .map(|i| legacy::PreKeyPublic {
                id: u32::try_from(i).unwrap(),
                data: pk.data.clone(),
            })
            .collect();
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::TooMany {
            what: "pre-keys",
            ..
        }
    ));
    let err = bundle_with(|b| b.signed_pre_key_public.id = 0).unwrap_err();
    assert!(matches!(err, Error::IdOutOfRange(_)));
}
