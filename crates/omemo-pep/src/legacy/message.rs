//! The checked form of the legacy `<encrypted>` (XEP-0384 0.3 §4.5–4.6).

use std::collections::HashSet;

use omemo_crypto::DeviceId;
use xmpp_parsers::minidom::Element;

use super::elements::{Encrypted, Header, Iv, Key, Payload};
use crate::limits::MAX_KEYS_PER_MESSAGE;
use crate::{ns, Error};

/// One device's copy of the message key (`<key rid prekey>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedKey {
    /// The recipient device.
    pub rid: DeviceId,
    /// True if `data` is a `PreKeyWhisperMessage`.
    pub prekey: bool,
    /// The decoded `<key>` content, handed to `omemo_crypto::legacy` as is.
    pub data: Vec<u8>,
}

/// A checked legacy `<encrypted>` element: ids in range, an IV of 12 or 16 bytes, sizes
/// within the [`crate::limits`], unknown header children dropped.
///
/// Legacy keys carry no JID, so a contact's device and one of our own devices may share a
/// `rid`; several keys with one `rid` are therefore kept (only exact repeats are dropped),
/// and [`EncryptedMessage::keys_for`] yields all of them for the receiver to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The sender device (`<header sid>`).
    pub sid: DeviceId,
    /// The per-device keys, in document order.
    pub keys: Vec<EncryptedKey>,
    /// The payload IV (`<iv>`): 12 bytes, or 16 from old clients.
    pub iv: Vec<u8>,
    /// The AES-128-GCM ciphertext of the body, without tag; `None` for a key-transport
    /// (empty) message.
    pub payload: Option<Vec<u8>>,
}

impl EncryptedMessage {
    /// The keys addressed to device `rid`.
    pub fn keys_for(&self, rid: DeviceId) -> impl Iterator<Item = &EncryptedKey> + '_ {
        self.keys.iter().filter(move |k| k.rid == rid)
    }

    /// True for a key-transport (empty) message: no `<payload>`; its ratchet plaintext is a
    /// bare 16-byte key and must not be used to decrypt anything.
    pub fn is_empty_message(&self) -> bool {
        self.payload.is_none()
    }

    /// Serializes to the wire element (`prekey='true'` where set).
    pub fn to_element(&self) -> Element {
        Element::from(Encrypted::from(self))
    }
}

impl TryFrom<Encrypted> for EncryptedMessage {
    type Error = Error;

    fn try_from(wire: Encrypted) -> Result<Self, Error> {
        let sid = DeviceId::new(wire.header.sid)?;
        if wire.header.keys.len() > MAX_KEYS_PER_MESSAGE {
            return Err(Error::TooMany {
                what: "keys in one message",
                limit: MAX_KEYS_PER_MESSAGE,
            });
        }
        let iv = wire.header.iv.data;
        if iv.len() != 12 && iv.len() != 16 {
            return Err(Error::InvalidIvLength(iv.len()));
        }
        let mut seen = HashSet::with_capacity(wire.header.keys.len());
        let mut keys = Vec::with_capacity(wire.header.keys.len());
        for key in wire.header.keys {
            let rid = DeviceId::new(key.rid)?;
            if !seen.insert((rid, key.data.clone())) {
                continue;
            }
            keys.push(EncryptedKey {
                rid,
                prekey: key.prekey,
                data: key.data,
            });
        }
        Ok(Self {
            sid,
            keys,
            iv,
            payload: wire.payload.map(|p| p.data),
        })
    }
}

impl TryFrom<Element> for EncryptedMessage {
    type Error = Error;

    fn try_from(elem: Element) -> Result<Self, Error> {
        let wire =
            Encrypted::try_from(elem).map_err(|e| Error::from_xso("encrypted", ns::LEGACY, e))?;
        Self::try_from(wire)
    }
}

impl From<&EncryptedMessage> for Encrypted {
    fn from(msg: &EncryptedMessage) -> Self {
        Encrypted {
            header: Header {
                sid: msg.sid.get(),
                keys: msg
                    .keys
                    .iter()
                    .map(|k| Key {
                        rid: k.rid.get(),
                        prekey: k.prekey,
                        data: k.data.clone(),
                    })
                    .collect(),
                iv: Iv {
                    data: msg.iv.clone(),
                },
                unknown: Vec::new(),
            },
            payload: msg
                .payload
                .as_ref()
                .map(|data| Payload { data: data.clone() }),
        }
    }
}

impl From<&EncryptedMessage> for Element {
    fn from(msg: &EncryptedMessage) -> Self {
        msg.to_element()
    }
}
