//! OMEMO 2 (XEP-0384 0.9, `urn:xmpp:omemo:2`): the wire elements and their checked forms.
//!
//! The xso wire types ([`Encrypted`], [`Devices`], [`Bundle`], …) mirror the XML. The
//! checked types ([`EncryptedMessage`], [`DeviceList`], [`omemo_crypto::Bundle`]) are what
//! the rest of the stack uses; `TryFrom` converts and validates, `From` goes back.

mod bundle;
mod devices;
mod elements;
mod message;

pub use bundle::{bundle_element, parse_bundle};
pub use devices::{DeviceEntry, DeviceList, Label};
pub use elements::{
    Bundle, Device, Devices, Encrypted, Header, Ik, Key, Keys, Payload, Pk, PreKeys, Spk, Spks,
};
pub use message::{EncryptedKey, EncryptedMessage, RecipientKeys};
