//! One device, two OMEMO versions on the network side: what the manager needs of a version
//! beyond the engine's [`Flavour`] — its device-list and bundle nodes (XEP-0384 §devices,
//! §bundles for OMEMO 2; `eu.siacs.conversations.axolotl.devicelist` and one
//! `…axolotl.bundles:<id>` node per device for legacy, LEGACY-NOTES §8).
//!
//! The manager's steps are written once, generic over [`Pep`]; a version known only at run
//! time (a stored namespace, an incoming element) picks the type with [`in_version!`].

use omemo_crypto::Legacy;

use super::*;

/// The PEP side of a protocol version.
pub(crate) trait Pep:
    Flavour<Bundle: Send + 'static, Encrypted: Send + Sync + 'static>
{
    /// This version's device list.
    type DeviceList: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// The device-list node, for logs and errors.
    const LIST_NODE: &'static str;
    /// The bundle node (family), for logs and errors.
    const BUNDLE_NODE: &'static str;
    /// Whether an answer also goes to the device that asked when no device list lists it.
    /// Legacy only: a fresh Profanity account publishes no legacy device list at all
    /// (LEGACY-NOTES §12), while an OMEMO 2 client publishes its list before it writes, so
    /// an unlisted OMEMO 2 sender is not answered (and a flood from made-up devices costs no
    /// encryption).
    const ANSWER_UNLISTED: bool;

    /// Asks for `jid`'s device list.
    fn fetch_device_list(jid: &BareJid, iq_id: &str) -> Iq;
    /// Reads the answer to [`Pep::fetch_device_list`].
    fn parse_device_list(answer: &Iq) -> Fetched<Self::DeviceList>;
    /// The devices a list names, as the store records them; `keys` are the identity keys
    /// known for them (OMEMO 2 labels are verified with them).
    fn listed(
        list: &Self::DeviceList,
        keys: &HashMap<DeviceId, IdentityPublicKey>,
    ) -> Vec<ListedDevice>;
    /// Whether the list names `device`.
    fn lists(list: &Self::DeviceList, device: DeviceId) -> bool;
    /// How many devices the list names.
    fn list_len(list: &Self::DeviceList) -> usize;
    /// Our list to publish: `current` (if any) with our device added and `retired` ids
    /// taken out; `None` if nothing changed.
    fn own_list(
        current: Option<&Self::DeviceList>,
        own: &OwnIdentity,
        retired: &[DeviceId],
    ) -> Result<Option<Self::DeviceList>, OmemoError>;
    /// Publishes a device list of ours.
    fn list_publication(list: &Self::DeviceList) -> Publication;

    /// Asks for a device's bundle.
    fn fetch_bundle(jid: &BareJid, device: DeviceId, iq_id: &str) -> Iq;
    /// Reads the answer to [`Pep::fetch_bundle`].
    fn parse_bundle(answer: &Iq, device: DeviceId) -> Fetched<Self::Bundle>;
    /// Publishes our bundle.
    fn bundle_publication(device: DeviceId, bundle: &Self::Bundle) -> Publication;
    /// Removes the bundle of a device of ours (an id given up by an identity reset).
    fn retract_bundle(device: DeviceId, iq_id: &str) -> Iq;
    /// The plaintext this version encrypts for a message with `content`, whose SCE envelope
    /// is `envelope`: the envelope for OMEMO 2, the `<body>` text for legacy (which has no
    /// SCE); `None` if the version cannot carry the content.
    fn plaintext(content: &[Element], envelope: &[u8]) -> Option<Vec<u8>>;
}

impl Pep for Omemo2 {
    type DeviceList = DeviceList;
    const LIST_NODE: &'static str = "device list";
    const BUNDLE_NODE: &'static str = "bundle";
    const ANSWER_UNLISTED: bool = false;

    fn fetch_device_list(jid: &BareJid, iq_id: &str) -> Iq {
        pep::fetch_device_list(jid, iq_id)
    }

    fn parse_device_list(answer: &Iq) -> Fetched<DeviceList> {
        pep::parse_device_list_response(answer)
    }

    fn listed(list: &DeviceList, keys: &HashMap<DeviceId, IdentityPublicKey>) -> Vec<ListedDevice> {
        let mut list = list.clone();
        list.verify_labels(|id| keys.get(&id).copied());
        list.devices()
            .iter()
            .map(|d| ListedDevice {
                device_id: d.id(),
                label: match d.label() {
                    omemo_pep::omemo2::Label::Verified(l)
                    | omemo_pep::omemo2::Label::Unverified(l) => Some(l.to_owned()),
                    _ => None,
                },
                label_verified: d.label().verified().is_some(),
            })
            .collect()
    }

    fn lists(list: &DeviceList, device: DeviceId) -> bool {
        list.contains(device)
    }

    fn list_len(list: &DeviceList) -> usize {
        list.len()
    }

    fn own_list(
        current: Option<&DeviceList>,
        own: &OwnIdentity,
        retired: &[DeviceId],
    ) -> Result<Option<DeviceList>, OmemoError> {
        let entry = DeviceEntry::with_signed_label(own.device_id, &own.label, &own.identity)?;
        Ok(pep::own_device_list(current, entry, retired)?)
    }

    fn list_publication(list: &DeviceList) -> Publication {
        Publication::device_list(list)
    }

    fn fetch_bundle(jid: &BareJid, device: DeviceId, iq_id: &str) -> Iq {
        pep::fetch_bundle(jid, device, iq_id)
    }

    fn parse_bundle(answer: &Iq, device: DeviceId) -> Fetched<Bundle> {
        pep::parse_bundle_response(answer, device)
    }

    fn bundle_publication(device: DeviceId, bundle: &Bundle) -> Publication {
        Publication::bundle(device, bundle)
    }

    fn retract_bundle(device: DeviceId, iq_id: &str) -> Iq {
        pep::retract_bundle(device, iq_id)
    }

    fn plaintext(_content: &[Element], envelope: &[u8]) -> Option<Vec<u8>> {
        Some(envelope.to_vec())
    }
}

impl Pep for Legacy {
    type DeviceList = omemo_pep::legacy::DeviceList;
    const LIST_NODE: &'static str = "legacy device list";
    const BUNDLE_NODE: &'static str = "legacy bundle";
    const ANSWER_UNLISTED: bool = true;

    fn fetch_device_list(jid: &BareJid, iq_id: &str) -> Iq {
        pep::fetch_legacy_device_list(jid, iq_id)
    }

    fn parse_device_list(answer: &Iq) -> Fetched<Self::DeviceList> {
        pep::parse_legacy_device_list_response(answer)
    }

    fn listed(
        list: &Self::DeviceList,
        _keys: &HashMap<DeviceId, IdentityPublicKey>,
    ) -> Vec<ListedDevice> {
        // Legacy lists carry no labels.
        list.ids()
            .map(|device_id| ListedDevice {
                device_id,
                label: None,
                label_verified: false,
            })
            .collect()
    }

    fn lists(list: &Self::DeviceList, device: DeviceId) -> bool {
        list.contains(device)
    }

    fn list_len(list: &Self::DeviceList) -> usize {
        list.len()
    }

    fn own_list(
        current: Option<&Self::DeviceList>,
        own: &OwnIdentity,
        retired: &[DeviceId],
    ) -> Result<Option<Self::DeviceList>, OmemoError> {
        let mut list = current.cloned().unwrap_or_default();
        let mut changed = false;
        for id in retired.iter().filter(|id| **id != own.device_id) {
            changed |= list.remove(*id);
        }
        changed |= list.insert(own.device_id)?;
        Ok(changed.then_some(list))
    }

    fn list_publication(list: &Self::DeviceList) -> Publication {
        Publication::legacy_device_list(list)
    }

    fn fetch_bundle(jid: &BareJid, device: DeviceId, iq_id: &str) -> Iq {
        pep::fetch_legacy_bundle(jid, device, iq_id)
    }

    fn parse_bundle(answer: &Iq, device: DeviceId) -> Fetched<Self::Bundle> {
        pep::parse_legacy_bundle_response(answer, device)
    }

    fn bundle_publication(device: DeviceId, bundle: &Self::Bundle) -> Publication {
        Publication::legacy_bundle(device, bundle)
    }

    fn retract_bundle(device: DeviceId, iq_id: &str) -> Iq {
        pep::delete_legacy_bundle(device, iq_id)
    }

    fn plaintext(content: &[Element], _envelope: &[u8]) -> Option<Vec<u8>> {
        // Legacy encrypts the body text alone; other content has no place in it.
        content
            .iter()
            .find(|e| e.is("body", omemo_pep::ns::JABBER_CLIENT))
            .map(|body| body.text().into_bytes())
    }
}

/// Runs `$body` with the type alias `$v` set to the version of the namespace `$ns`
/// (`Omemo2` or `Legacy`): the one place a run-time namespace becomes a type.
macro_rules! in_version {
    ($ns:expr, $v:ident => $body:expr) => {
        match ::atm_trust::Namespace::version($ns) {
            ::omemo_crypto::ProtocolVersion::Omemo2 => {
                type $v = ::omemo_crypto::Omemo2;
                $body
            }
            ::omemo_crypto::ProtocolVersion::Legacy => {
                type $v = ::omemo_crypto::Legacy;
                $body
            }
        }
    };
}
pub(crate) use in_version;

#[cfg(test)]
mod tests {
    use super::*;

    fn own(device: u32) -> OwnIdentity {
        OwnIdentity {
            jid: BareJid::new("bot@example.org").unwrap(),
            device_id: DeviceId::new(device).unwrap(),
            identity: omemo_crypto::hazmat::identity_from_seed(&[9; 32]),
            label: "bot".to_owned(),
        }
    }

    #[test]
    fn our_legacy_list_gains_our_device_and_loses_retired_ones_and_is_kept_when_current() {
        let id = |n: u32| DeviceId::new(n).unwrap();
        let me = own(7);
        // No list yet: one with our device.
        let created = Legacy::own_list(None, &me, &[]).unwrap().unwrap();
        assert_eq!(created.ids().collect::<Vec<_>>(), vec![id(7)]);
        // Already listed, nothing retired: nothing to publish.
        assert!(Legacy::own_list(Some(&created), &me, &[])
            .unwrap()
            .is_none());
        // Others kept, a retired id of ours removed, ours added.
        let mut current = omemo_pep::legacy::DeviceList::new();
        current.insert(id(1)).unwrap();
        current.insert(id(3)).unwrap();
        let updated = Legacy::own_list(Some(&current), &me, &[id(3), id(7)])
            .unwrap()
            .unwrap();
        let mut ids: Vec<DeviceId> = updated.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![id(1), id(7)]);
    }

    #[test]
    fn legacy_carries_the_body_text_alone_and_omemo2_the_envelope() {
        let body = sce::Envelope::body_element("hello <there>");
        let other = Element::builder("x", "urn:example").build();
        assert_eq!(
            Legacy::plaintext(&[other.clone(), body], b"envelope"),
            Some(b"hello <there>".to_vec())
        );
        assert_eq!(
            Legacy::plaintext(std::slice::from_ref(&other), b"envelope"),
            None
        );
        assert_eq!(
            Omemo2::plaintext(&[other], b"envelope"),
            Some(b"envelope".to_vec())
        );
    }
}
