//! The `eu.siacs.conversations.axolotl` wire elements as xso types (XEP-0384 0.3 §4;
//! python-oldmemo `etree` schemas; xmpp-parsers `legacy_omemo`).
//!
//! As for OMEMO 2, these mirror the XML one to one with only the checks XML needs (numbers,
//! base64 with whitespace tolerated, size caps). The checked forms
//! ([`super::EncryptedMessage`], [`super::DeviceList`], [`omemo_crypto::legacy::Bundle`]) are
//! built from them with `TryFrom`.

use xmpp_parsers::message::MessagePayload;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::pubsub::PubSubPayload;
use xso::{AsXml, FromXml};

use crate::codec::{Base64Text, TrueOrAbsent};
use crate::limits::{MAX_IV_BYTES, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, MAX_PUBLIC_KEY_BYTES};
use crate::ns;

/// `<key rid prekey>`: the message key encrypted for one device. The text is base64 of
/// `0x33 ‖ PreKeyWhisperMessage` (`prekey='true'`) or `0x33 ‖ WhisperMessage ‖ MAC`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "key")]
pub struct Key {
    /// The recipient device id. Legacy keys carry no JID.
    #[xml(attribute)]
    pub rid: u32,

    /// Whether the content is a key exchange. Read as `xs:boolean` (`true` and `1`, as
    /// python-oldmemo; old Monal sent `1`), written `true` and only when true.
    #[xml(attribute(default, codec = TrueOrAbsent))]
    pub prekey: bool,

    /// The decoded content.
    #[xml(text(codec = Base64Text::new("key", MAX_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<iv>`: the AES-GCM IV of the payload (12 bytes; old clients sent 16).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "iv")]
pub struct Iv {
    /// The decoded IV.
    #[xml(text(codec = Base64Text::new("iv", MAX_IV_BYTES)))]
    pub data: Vec<u8>,
}

/// `<header sid>`: the keys for every recipient device (contacts' and our own, side by
/// side) and the IV.
#[derive(FromXml, AsXml, PartialEq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "header")]
pub struct Header {
    /// The sender device id.
    #[xml(attribute)]
    pub sid: u32,

    /// One `<key>` per recipient device.
    #[xml(child(n = ..))]
    pub keys: Vec<Key>,

    /// The payload IV (present in key-transport messages too).
    #[xml(child)]
    pub iv: Iv,

    /// Children this crate does not know; Conversations and others skip them, and so do we
    /// (they are dropped by the checked form and never written).
    #[xml(element(n = ..))]
    pub unknown: Vec<Element>,
}

/// `<payload>`: the AES-128-GCM ciphertext of the body, without the tag.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "payload")]
pub struct Payload {
    /// The decoded ciphertext.
    #[xml(text(codec = Base64Text::new("payload", MAX_PAYLOAD_BYTES)))]
    pub data: Vec<u8>,
}

/// `<encrypted xmlns='eu.siacs.conversations.axolotl'>`. Without a `<payload>` it is a
/// key-transport (empty) message.
#[derive(FromXml, AsXml, PartialEq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "encrypted")]
pub struct Encrypted {
    /// The header with the per-device keys and the IV.
    #[xml(child)]
    pub header: Header,

    /// The encrypted body, absent in key-transport messages.
    #[xml(child(default))]
    pub payload: Option<Payload>,
}

impl MessagePayload for Encrypted {}

/// `<device id>` of a legacy device list (no labels).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "device")]
pub struct Device {
    /// The device id.
    #[xml(attribute)]
    pub id: u32,
}

/// `<list>`: the payload of item `current` on `eu.siacs.conversations.axolotl.devicelist`.
/// May be empty.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone, Default)]
#[xml(namespace = ns::LEGACY, name = "list")]
pub struct List {
    /// The announced devices.
    #[xml(child(n = ..))]
    pub devices: Vec<Device>,
}

impl PubSubPayload for List {}

/// `<signedPreKeyPublic signedPreKeyId>`: `0x05 ‖ SPK`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "signedPreKeyPublic")]
pub struct SignedPreKeyPublic {
    /// The signed pre-key id.
    #[xml(attribute(name = "signedPreKeyId"))]
    pub id: u32,

    /// The decoded key.
    #[xml(text(codec = Base64Text::new("signedPreKeyPublic", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<signedPreKeySignature>`: the identity's signature over `0x05 ‖ SPK`, with the Ed25519
/// sign bit in bit 7 of byte 63.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "signedPreKeySignature")]
pub struct SignedPreKeySignature {
    /// The decoded signature.
    #[xml(text(codec = Base64Text::new("signedPreKeySignature", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<identityKey>`: `0x05 ‖ u`, the Curve25519 form of the identity key.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "identityKey")]
pub struct IdentityKey {
    /// The decoded key.
    #[xml(text(codec = Base64Text::new("identityKey", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<preKeyPublic preKeyId>`: one one-time pre-key, `0x05 ‖ OPK`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "preKeyPublic")]
pub struct PreKeyPublic {
    /// The pre-key id.
    #[xml(attribute(name = "preKeyId"))]
    pub id: u32,

    /// The decoded key.
    #[xml(text(codec = Base64Text::new("preKeyPublic", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<prekeys>`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "prekeys")]
pub struct PreKeys {
    /// The one-time pre-keys.
    #[xml(child(n = ..))]
    pub keys: Vec<PreKeyPublic>,
}

/// `<bundle>`: the payload of item `current` on `eu.siacs.conversations.axolotl.bundles:<id>`.
/// The children may come in any order.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::LEGACY, name = "bundle")]
pub struct Bundle {
    /// The signed pre-key.
    #[xml(child)]
    pub signed_pre_key_public: SignedPreKeyPublic,

    /// Its signature.
    #[xml(child)]
    pub signed_pre_key_signature: SignedPreKeySignature,

    /// The identity key.
    #[xml(child)]
    pub identity_key: IdentityKey,

    /// The one-time pre-keys.
    #[xml(child)]
    pub prekeys: PreKeys,
}

impl PubSubPayload for Bundle {}
