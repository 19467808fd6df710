//! The checked form of `<encrypted>` (XEP-0384 §message-structure-description).

use std::collections::HashSet;

use omemo_crypto::DeviceId;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::minidom::Element;

use super::elements::{Encrypted, Header, Key, Keys, Payload};
use crate::limits::MAX_KEYS_PER_MESSAGE;
use crate::{ns, Error};

/// One device's copy of the message key (`<key rid kex>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedKey {
    /// The recipient device.
    pub rid: DeviceId,
    /// True if `data` is an `OMEMOKeyExchange`, false for an `OMEMOAuthenticatedMessage`.
    pub kex: bool,
    /// The decoded `<key>` content, handed to `omemo-crypto` as is.
    pub data: Vec<u8>,
}

/// The keys for all devices of one bare JID (`<keys jid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKeys {
    /// The recipient account.
    pub jid: BareJid,
    /// One key per device, with distinct `rid`s.
    pub keys: Vec<EncryptedKey>,
}

/// A checked OMEMO 2 `<encrypted>` element: ids in range, no JID or `rid` repeated within
/// its `<keys>`, sizes within the [`crate::limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The sender device (`<header sid>`).
    pub sid: DeviceId,
    /// The per-recipient key lists, in document order.
    pub keys: Vec<RecipientKeys>,
    /// The encrypted SCE envelope; `None` for an empty OMEMO message.
    pub payload: Option<Vec<u8>>,
}

impl EncryptedMessage {
    /// The key addressed to device `rid` of `jid`, if the message has one.
    pub fn key_for(&self, jid: &BareJid, rid: DeviceId) -> Option<&EncryptedKey> {
        self.keys
            .iter()
            .filter(|r| &r.jid == jid)
            .flat_map(|r| r.keys.iter())
            .find(|k| k.rid == rid)
    }

    /// True for an empty OMEMO message (no `<payload>`), which only moves the ratchet.
    pub fn is_empty_message(&self) -> bool {
        self.payload.is_none()
    }

    /// Serializes to the wire element.
    pub fn to_element(&self) -> Element {
        Element::from(Encrypted::from(self))
    }
}

impl TryFrom<Encrypted> for EncryptedMessage {
    type Error = Error;

    fn try_from(wire: Encrypted) -> Result<Self, Error> {
        let sid = DeviceId::new(wire.header.sid)?;
        let total: usize = wire.header.keys.iter().map(|k| k.keys.len()).sum();
        if total > MAX_KEYS_PER_MESSAGE {
            return Err(Error::TooMany {
                what: "keys in one message",
                limit: MAX_KEYS_PER_MESSAGE,
            });
        }
        let mut jids = HashSet::new();
        let mut keys = Vec::with_capacity(wire.header.keys.len());
        for recipient in wire.header.keys {
            if !jids.insert(recipient.jid.clone()) {
                return Err(Error::DuplicateJid(recipient.jid));
            }
            let mut rids = HashSet::new();
            let mut device_keys = Vec::with_capacity(recipient.keys.len());
            for key in recipient.keys {
                let rid = DeviceId::new(key.rid)?;
                if !rids.insert(rid) {
                    return Err(Error::DuplicateId {
                        kind: "rid",
                        id: rid.get(),
                    });
                }
                device_keys.push(EncryptedKey {
                    rid,
                    kex: key.kex,
                    data: key.data,
                });
            }
            keys.push(RecipientKeys {
                jid: recipient.jid,
                keys: device_keys,
            });
        }
        Ok(Self {
            sid,
            keys,
            payload: wire.payload.map(|p| p.data),
        })
    }
}

impl TryFrom<Element> for EncryptedMessage {
    type Error = Error;

    fn try_from(elem: Element) -> Result<Self, Error> {
        let wire =
            Encrypted::try_from(elem).map_err(|e| Error::from_xso("encrypted", ns::OMEMO2, e))?;
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
                    .map(|r| Keys {
                        jid: r.jid.clone(),
                        keys: r
                            .keys
                            .iter()
                            .map(|k| Key {
                                rid: k.rid.get(),
                                kex: k.kex,
                                data: k.data.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
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
