//! The checked legacy device list (XEP-0384 0.3 §4.2): device ids only.

use std::collections::HashSet;

use omemo_crypto::DeviceId;
use xmpp_parsers::minidom::Element;

use super::elements::{Device, List};
use crate::limits::MAX_DEVICES;
use crate::{ns, Error};

/// A checked legacy device list (`<list>`): at most [`MAX_DEVICES`] ids, all distinct and in
/// range, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceList {
    ids: Vec<DeviceId>,
}

impl DeviceList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The device ids, in list order.
    pub fn ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.ids.iter().copied()
    }

    /// How many devices the list has.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if the list has no devices.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: DeviceId) -> bool {
        self.ids.contains(&id)
    }

    /// Adds `id` at the end; `Ok(false)` if it is already listed.
    pub fn insert(&mut self, id: DeviceId) -> Result<bool, Error> {
        if self.contains(id) {
            return Ok(false);
        }
        if self.ids.len() >= MAX_DEVICES {
            return Err(Error::TooMany {
                what: "devices",
                limit: MAX_DEVICES,
            });
        }
        self.ids.push(id);
        Ok(true)
    }

    /// Removes `id`; `false` if it was not listed.
    pub fn remove(&mut self, id: DeviceId) -> bool {
        let before = self.ids.len();
        self.ids.retain(|&d| d != id);
        self.ids.len() != before
    }

    /// Serializes to the wire element.
    pub fn to_element(&self) -> Element {
        Element::from(List::from(self))
    }
}

impl TryFrom<List> for DeviceList {
    type Error = Error;

    fn try_from(wire: List) -> Result<Self, Error> {
        if wire.devices.len() > MAX_DEVICES {
            return Err(Error::TooMany {
                what: "devices",
                limit: MAX_DEVICES,
            });
        }
        let mut seen = HashSet::with_capacity(wire.devices.len());
        let mut ids = Vec::with_capacity(wire.devices.len());
        for device in wire.devices {
            let id = DeviceId::new(device.id)?;
            if !seen.insert(id) {
                return Err(Error::DuplicateId {
                    kind: "device id",
                    id: id.get(),
                });
            }
            ids.push(id);
        }
        Ok(Self { ids })
    }
}

impl TryFrom<Element> for DeviceList {
    type Error = Error;

    fn try_from(elem: Element) -> Result<Self, Error> {
        let wire = List::try_from(elem).map_err(|e| Error::from_xso("list", ns::LEGACY, e))?;
        Self::try_from(wire)
    }
}

impl From<&DeviceList> for List {
    fn from(list: &DeviceList) -> Self {
        List {
            devices: list.ids().map(|id| Device { id: id.get() }).collect(),
        }
    }
}

impl From<&DeviceList> for Element {
    fn from(list: &DeviceList) -> Self {
        list.to_element()
    }
}
