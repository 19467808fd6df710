//! The checked device list with signed labels (XEP-0384 0.9 §devices).

use std::collections::HashSet;

use omemo_crypto::{DeviceId, IdentityKeyPair, IdentityPublicKey, Signature};
use xmpp_parsers::minidom::Element;

use super::elements::{Device, Devices};
use crate::codec::{decode_base64, encode_base64};
use crate::limits::{MAX_DEVICES, MAX_INCOMING_LABEL_BYTES, MAX_LABEL_CHARS};
use crate::{ns, Error};

/// How far a device label can be trusted.
///
/// XEP-0384 0.9: a label counts only if `labelsig` is a valid signature by the device's
/// identity key over the UTF-8 label. Since that key comes from the device's bundle, a freshly
/// parsed label is [`Label::Unverified`] until [`DeviceEntry::verify_label`] or
/// [`DeviceList::verify_labels`] checks it. Only [`Label::Verified`] may be shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label<'a> {
    /// The device has no label.
    None,
    /// The label has a signature that was not checked yet.
    Unverified(&'a str),
    /// The signature is missing, malformed or wrong: the label must be ignored.
    Rejected(&'a str),
    /// The signature verified under the device's identity key (or we signed it ourselves).
    Verified(&'a str),
}

impl<'a> Label<'a> {
    /// The label text if, and only if, it is verified.
    pub fn verified(self) -> Option<&'a str> {
        match self {
            Label::Verified(text) => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelStatus {
    Unverified,
    Rejected,
    Verified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelData {
    text: String,
    /// The `labelsig` attribute exactly as received (or as we produced it).
    labelsig: Option<String>,
    status: LabelStatus,
}

/// One `<device>` of a device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    id: DeviceId,
    label: Option<LabelData>,
}

impl DeviceEntry {
    /// A device without a label.
    pub fn new(id: DeviceId) -> Self {
        Self { id, label: None }
    }

    /// Our own device with a label signed by our identity key. The label must have at most
    /// [`MAX_LABEL_CHARS`] code points.
    pub fn with_signed_label(
        id: DeviceId,
        label: &str,
        identity: &IdentityKeyPair,
    ) -> Result<Self, Error> {
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(Error::LabelTooLong {
                limit: MAX_LABEL_CHARS,
            });
        }
        let signature = identity.sign(label.as_bytes());
        Ok(Self {
            id,
            label: Some(LabelData {
                text: label.to_owned(),
                labelsig: Some(encode_base64(signature.as_bytes())),
                status: LabelStatus::Verified,
            }),
        })
    }

    /// The device id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The label and how far it can be trusted.
    pub fn label(&self) -> Label<'_> {
        match &self.label {
            None => Label::None,
            Some(data) => match data.status {
                LabelStatus::Unverified => Label::Unverified(&data.text),
                LabelStatus::Rejected => Label::Rejected(&data.text),
                LabelStatus::Verified => Label::Verified(&data.text),
            },
        }
    }

    /// Checks the label signature under the device's identity key (from its bundle). A label
    /// that was already rejected stays rejected; a verified one is checked again.
    pub fn verify_label(&mut self, identity_key: &IdentityPublicKey) -> Label<'_> {
        if let Some(data) = &mut self.label {
            if data.status != LabelStatus::Rejected {
                let valid = data
                    .labelsig
                    .as_deref()
                    .and_then(decode_signature)
                    .is_some_and(|sig| identity_key.verify(data.text.as_bytes(), &sig));
                data.status = if valid {
                    LabelStatus::Verified
                } else {
                    LabelStatus::Rejected
                };
            }
        }
        self.label()
    }

    fn from_wire(device: Device) -> Result<Self, Error> {
        let id = DeviceId::new(device.id)?;
        let label = match device.label {
            None => None,
            Some(text) => {
                if text.len() > MAX_INCOMING_LABEL_BYTES {
                    return Err(Error::TooLarge {
                        field: "label",
                        limit: MAX_INCOMING_LABEL_BYTES,
                    });
                }
                let status = match device.labelsig.as_deref().map(decode_signature) {
                    Some(Some(_)) => LabelStatus::Unverified,
                    // Missing or undecodable signature: XEP-0384 0.9 says to ignore the label.
                    _ => LabelStatus::Rejected,
                };
                Some(LabelData {
                    text,
                    labelsig: device.labelsig,
                    status,
                })
            }
        };
        Ok(Self { id, label })
    }

    fn to_wire(&self) -> Device {
        Device {
            id: self.id.get(),
            label: self.label.as_ref().map(|l| l.text.clone()),
            labelsig: self.label.as_ref().and_then(|l| l.labelsig.clone()),
        }
    }

    /// Same id, label text and signature (verification state ignored).
    fn same_wire_form(&self, other: &Self) -> bool {
        self.to_wire() == other.to_wire()
    }
}

fn decode_signature(text: &str) -> Option<Signature> {
    let bytes = decode_base64("labelsig", 64, text).ok()?;
    Signature::from_bytes(&bytes).ok()
}

/// A checked device list (`<devices>`): at most [`MAX_DEVICES`] entries with distinct ids, in
/// document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceList {
    devices: Vec<DeviceEntry>,
}

impl DeviceList {
    /// An empty list (what a JID without a devices node has).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries in document order.
    pub fn devices(&self) -> &[DeviceEntry] {
        &self.devices
    }

    /// The device ids in document order.
    pub fn ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices.iter().map(DeviceEntry::id)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True if no device is announced.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The entry for `id`.
    pub fn get(&self, id: DeviceId) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// True if `id` is announced.
    pub fn contains(&self, id: DeviceId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `entry`, or replaces the entry with the same id in place. Returns whether the
    /// published form changed.
    pub fn upsert(&mut self, entry: DeviceEntry) -> Result<bool, Error> {
        if let Some(existing) = self.devices.iter_mut().find(|d| d.id == entry.id) {
            let changed = !existing.same_wire_form(&entry);
            *existing = entry;
            return Ok(changed);
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(Error::TooMany {
                what: "devices",
                limit: MAX_DEVICES,
            });
        }
        self.devices.push(entry);
        Ok(true)
    }

    /// Removes the entry for `id` (for example when deactivating OMEMO on this device).
    pub fn remove(&mut self, id: DeviceId) -> Option<DeviceEntry> {
        let index = self.devices.iter().position(|d| d.id == id)?;
        Some(self.devices.remove(index))
    }

    /// Verifies every label for which `identity_key` knows the device's identity key;
    /// devices it returns `None` for keep their current state.
    pub fn verify_labels(
        &mut self,
        mut identity_key: impl FnMut(DeviceId) -> Option<IdentityPublicKey>,
    ) {
        for device in &mut self.devices {
            if let Some(key) = identity_key(device.id) {
                device.verify_label(&key);
            }
        }
    }

    /// Serializes to the wire element.
    pub fn to_element(&self) -> Element {
        Element::from(Devices::from(self))
    }
}

impl TryFrom<Devices> for DeviceList {
    type Error = Error;

    fn try_from(wire: Devices) -> Result<Self, Error> {
        if wire.devices.len() > MAX_DEVICES {
            return Err(Error::TooMany {
                what: "devices",
                limit: MAX_DEVICES,
            });
        }
        let mut seen = HashSet::with_capacity(wire.devices.len());
        let mut devices = Vec::with_capacity(wire.devices.len());
        for device in wire.devices {
            let entry = DeviceEntry::from_wire(device)?;
            if !seen.insert(entry.id) {
                return Err(Error::DuplicateId {
                    kind: "device id",
                    id: entry.id.get(),
                });
            }
            devices.push(entry);
        }
        Ok(Self { devices })
    }
}

impl TryFrom<Element> for DeviceList {
    type Error = Error;

    fn try_from(elem: Element) -> Result<Self, Error> {
        let wire =
            Devices::try_from(elem).map_err(|e| Error::from_xso("devices", ns::OMEMO2, e))?;
        Self::try_from(wire)
    }
}

impl From<&DeviceList> for Devices {
    fn from(list: &DeviceList) -> Self {
        Devices {
            devices: list.devices.iter().map(DeviceEntry::to_wire).collect(),
        }
    }
}

impl From<&DeviceList> for Element {
    fn from(list: &DeviceList) -> Self {
        list.to_element()
    }
}
