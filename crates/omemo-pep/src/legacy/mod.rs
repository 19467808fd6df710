//! Legacy OMEMO (XEP-0384 0.3 as deployed, `eu.siacs.conversations.axolotl`): the wire
//! elements and their checked forms, byte-compatible with python-oldmemo's `etree` and the
//! libsignal-based clients (Conversations, Gajim, Dino, Monal, Profanity).
//!
//! What differs from [`crate::omemo2`] (LEGACY-NOTES §8):
//!
//! - the device list is `<list><device id/></list>` on
//!   [`ns::LEGACY_DEVICE_LIST`](crate::ns::LEGACY_DEVICE_LIST), without labels;
//! - every device has its own bundle node `eu.siacs.conversations.axolotl.bundles:<id>`
//!   ([`ns::legacy_bundle_node`](crate::ns::legacy_bundle_node)), item `current`, holding
//!   33-byte `0x05` keys and a signature that carries the identity's sign bit;
//! - `<encrypted>` has a flat list of `<key rid prekey>` (no JIDs: our own devices' keys and
//!   the contact's sit side by side), an `<iv>` in the header, and a `<payload>` with the
//!   AES-128-GCM ciphertext of the body alone (no SCE).
//!
//! The PEP requests for these nodes are in [`crate::pep`] (`*_legacy_*` functions and
//! [`Publication::legacy_device_list`](crate::pep::Publication::legacy_device_list),
//! [`Publication::legacy_bundle`](crate::pep::Publication::legacy_bundle)); the message hints
//! and the fallback body in [`crate::hints`].

mod bundle;
mod devices;
mod elements;
mod message;

pub use bundle::{bundle_element, parse_bundle};
pub use devices::DeviceList;
pub use elements::{
    Bundle, Device, Encrypted, Header, IdentityKey, Iv, Key, List, Payload, PreKeyPublic, PreKeys,
    SignedPreKeyPublic, SignedPreKeySignature,
};
pub use message::{EncryptedKey, EncryptedMessage};
