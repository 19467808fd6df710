//! The `urn:xmpp:omemo:2` wire elements as xso types (XEP-0384 0.9 §message-structure,
//! §devices, §bundles).
//!
//! These types mirror the XML one to one and do only the checks XML itself needs (numbers,
//! base64, size caps). The checked types a caller works with ([`super::EncryptedMessage`],
//! [`super::DeviceList`], [`omemo_crypto::Bundle`]) are built from them with `TryFrom`.

use xmpp_parsers::jid::BareJid;
use xmpp_parsers::message::MessagePayload;
use xmpp_parsers::pubsub::PubSubPayload;
use xso::{AsXml, FromXml};

use crate::codec::{Base64Text, TrueOrAbsent};
use crate::limits::{MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, MAX_PUBLIC_KEY_BYTES};
use crate::ns;

/// `<key rid kex>` (XEP-0384 §message-structure-description): the message key, encrypted for
/// one device. The text is base64 of an `OMEMOKeyExchange` (`kex='true'`) or an
/// `OMEMOAuthenticatedMessage`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "key")]
pub struct Key {
    /// The recipient device id.
    #[xml(attribute)]
    pub rid: u32,

    /// Whether the content is a key exchange. Read as `xs:boolean`, written only when true.
    #[xml(attribute(default, codec = TrueOrAbsent))]
    pub kex: bool,

    /// The decoded content.
    #[xml(text(codec = Base64Text::new("key", MAX_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<keys jid>` (XEP-0384 §message-structure-description): the keys for the devices of one
/// bare JID.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "keys")]
pub struct Keys {
    /// The recipient's bare JID.
    #[xml(attribute)]
    pub jid: BareJid,

    /// One `<key>` per recipient device.
    #[xml(child(n = ..))]
    pub keys: Vec<Key>,
}

/// `<header sid>` (XEP-0384 §message-structure-description).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "header")]
pub struct Header {
    /// The sender device id.
    #[xml(attribute)]
    pub sid: u32,

    /// One `<keys>` per recipient bare JID.
    #[xml(child(n = ..))]
    pub keys: Vec<Keys>,
}

/// `<payload>` (XEP-0384 §message-structure-description): the AES-256-CBC ciphertext of the
/// SCE envelope.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "payload")]
pub struct Payload {
    /// The decoded ciphertext.
    #[xml(text(codec = Base64Text::new("payload", MAX_PAYLOAD_BYTES)))]
    pub data: Vec<u8>,
}

/// `<encrypted xmlns='urn:xmpp:omemo:2'>` (XEP-0384 §message-structure-description). Without a
/// `<payload>` it is an empty OMEMO message.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "encrypted")]
pub struct Encrypted {
    /// The header with the per-device keys.
    #[xml(child)]
    pub header: Header,

    /// The encrypted SCE envelope, absent in empty messages.
    #[xml(child(default))]
    pub payload: Option<Payload>,
}

impl MessagePayload for Encrypted {}

/// `<device id label labelsig>` (XEP-0384 §devices, 0.9).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "device")]
pub struct Device {
    /// The device id.
    #[xml(attribute)]
    pub id: u32,

    /// A human-readable label.
    #[xml(attribute(default))]
    pub label: Option<String>,

    /// Base64 of the identity key's Ed25519 signature over the UTF-8 label. Kept as text so
    /// that a malformed signature only invalidates the label, not the whole list.
    #[xml(attribute(default))]
    pub labelsig: Option<String>,
}

/// `<devices>` (XEP-0384 §devices): the payload of item `current` on node
/// `urn:xmpp:omemo:2:devices`. May be empty.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone, Default)]
#[xml(namespace = ns::OMEMO2, name = "devices")]
pub struct Devices {
    /// The announced devices.
    #[xml(child(n = ..))]
    pub devices: Vec<Device>,
}

impl PubSubPayload for Devices {}

/// `<spk id>` (XEP-0384 §bundles): the signed pre-key, a raw X25519 public key.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "spk")]
pub struct Spk {
    /// The signed pre-key id.
    #[xml(attribute)]
    pub id: u32,

    /// The decoded public key.
    #[xml(text(codec = Base64Text::new("spk", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<spks>` (XEP-0384 §bundles): the identity key's signature over the raw signed pre-key.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "spks")]
pub struct Spks {
    /// The decoded signature.
    #[xml(text(codec = Base64Text::new("spks", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<ik>` (XEP-0384 §bundles): the identity key in Ed25519 form.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "ik")]
pub struct Ik {
    /// The decoded public key.
    #[xml(text(codec = Base64Text::new("ik", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<pk id>` (XEP-0384 §bundles): one one-time pre-key, a raw X25519 public key.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "pk")]
pub struct Pk {
    /// The pre-key id.
    #[xml(attribute)]
    pub id: u32,

    /// The decoded public key.
    #[xml(text(codec = Base64Text::new("pk", MAX_PUBLIC_KEY_BYTES)))]
    pub data: Vec<u8>,
}

/// `<prekeys>` (XEP-0384 §bundles).
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "prekeys")]
pub struct PreKeys {
    /// The one-time pre-keys.
    #[xml(child(n = ..))]
    pub keys: Vec<Pk>,
}

/// `<bundle>` (XEP-0384 §bundles): the payload of the item with id = device id on node
/// `urn:xmpp:omemo:2:bundles`.
#[derive(FromXml, AsXml, PartialEq, Eq, Debug, Clone)]
#[xml(namespace = ns::OMEMO2, name = "bundle")]
pub struct Bundle {
    /// The signed pre-key.
    #[xml(child)]
    pub spk: Spk,

    /// Its signature.
    #[xml(child)]
    pub spks: Spks,

    /// The identity key.
    #[xml(child)]
    pub ik: Ik,

    /// The one-time pre-keys.
    #[xml(child)]
    pub prekeys: PreKeys,
}

impl PubSubPayload for Bundle {}
