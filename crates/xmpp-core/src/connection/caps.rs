//! What we tell others about ourselves: Service Discovery (XEP-0030) identity and features,
//! and Entity Capabilities (XEP-0115) in the initial presence.

use std::collections::BTreeSet;

use tokio_xmpp::parsers::caps::{self, Caps};
use tokio_xmpp::parsers::disco::{DiscoInfoQuery, DiscoInfoResult, Identity};
use tokio_xmpp::parsers::hashes::Algo;
use tokio_xmpp::parsers::ns;

/// `urn:xmpp:omemo:2:devices+notify`: subscribe to OMEMO 2 device lists (XEP-0384 §5.3.1).
pub const OMEMO_DEVICES_NOTIFY: &str = "urn:xmpp:omemo:2:devices+notify";

/// `eu.siacs.conversations.axolotl.devicelist+notify`: subscribe to legacy OMEMO device lists
/// (LEGACY-NOTES §1).
pub const LEGACY_DEVICE_LIST_NOTIFY: &str = omemo_pep::ns::LEGACY_DEVICE_LIST_NOTIFY;

/// Our disco#info identity and features, advertised with a XEP-0115 hash in every initial
/// presence and returned to every disco#info query.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Capabilities {
    /// The caps `node`: a URI naming the software (XEP-0115 §4).
    pub node: String,
    /// The identity (default: category `client`, type `bot`).
    pub identity: Identity,
    /// The features. The defaults cover what the connection layer itself answers (disco#info,
    /// caps, ping, carbons) plus [`OMEMO_DEVICES_NOTIFY`] and [`LEGACY_DEVICE_LIST_NOTIFY`].
    pub features: BTreeSet<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        let features = [
            ns::DISCO_INFO,
            ns::CAPS,
            ns::PING,
            ns::CARBONS,
            OMEMO_DEVICES_NOTIFY,
            LEGACY_DEVICE_LIST_NOTIFY,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        Self {
            node: "urn:xmpp-core:omemo-bot".to_owned(),
            identity: Identity::new("client", "bot", "en", "OMEMO bot"),
            features,
        }
    }
}

impl Capabilities {
    /// Advertise one more feature.
    pub fn with_feature(mut self, feature: impl Into<String>) -> Self {
        self.features.insert(feature.into());
        self
    }

    /// Stop advertising a feature.
    pub fn without_feature(mut self, feature: &str) -> Self {
        self.features.remove(feature);
        self
    }

    /// The disco#info result, for `node` (echoed back as XEP-0115 §6.2 requires).
    pub fn disco_info(&self, node: Option<String>) -> DiscoInfoResult {
        DiscoInfoResult {
            node,
            identities: vec![self.identity.clone()],
            features: self.features.clone(),
            extensions: Vec::new(),
        }
    }

    /// The `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1'/>` element with the
    /// verification string of [`Self::disco_info`] (XEP-0115 §5).
    pub fn caps(&self) -> Option<Caps> {
        let input = caps::compute_disco(&self.disco_info(None));
        caps::hash_caps(&input, Algo::Sha_1)
            .ok()
            .map(|hash| Caps::new(self.node.clone(), hash))
    }

    /// Whether a disco#info query is for us: no node, or `node#ver` of our caps.
    pub(super) fn answers(&self, query: &DiscoInfoQuery) -> bool {
        match &query.node {
            None => true,
            Some(node) => self
                .caps()
                .map(|c| caps::query_caps(c).node.as_deref() == Some(node.as_str()))
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::Element;

    #[test]
    fn defaults_advertise_omemo_device_notifications() {
        let caps = Capabilities::default();
        assert!(caps.features.contains(OMEMO_DEVICES_NOTIFY));
        assert!(caps.features.contains(LEGACY_DEVICE_LIST_NOTIFY));
        assert!(caps.disco_info(None).features.contains(ns::DISCO_INFO));
    }

    #[test]
    fn ver_matches_the_disco_result() {
        let capabilities = Capabilities::default();
        let c = capabilities.caps().unwrap();
        assert_eq!(c.hash, Algo::Sha_1);
        let expected = caps::hash_caps(
            &caps::compute_disco(&capabilities.disco_info(None)),
            Algo::Sha_1,
        )
        .unwrap();
        assert_eq!(c.ver, expected.hash);
        // Changing the features changes the hash.
        let other = capabilities
            .clone()
            .with_feature("urn:example:x")
            .caps()
            .unwrap();
        assert_ne!(c.ver, other.ver);
    }

    #[test]
    fn xep_0115_simple_example() {
        // XEP-0115 §5.2: "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<..." hashes
        // to QgayPKawpkPSDYmwT/WM94uAlu0=.
        let capabilities = Capabilities {
            node: "http://code.google.com/p/exodus".to_owned(),
            identity: Identity {
                category: "client".to_owned(),
                type_: "pc".to_owned(),
                lang: None,
                name: Some("Exodus 0.9.1".to_owned()),
            },
            features: BTreeSet::new(),
        }
        .with_feature(ns::CAPS)
        .with_feature(ns::DISCO_INFO)
        .with_feature("http://jabber.org/protocol/disco#items")
        .with_feature("http://jabber.org/protocol/muc");
        let element: Element = capabilities.caps().unwrap().into();
        assert_eq!(element.attr("ver"), Some("QgayPKawpkPSDYmwT/WM94uAlu0="));
    }

    #[test]
    fn answers_only_our_node() {
        let capabilities = Capabilities::default();
        let ours = caps::query_caps(capabilities.caps().unwrap());
        assert!(capabilities.answers(&ours));
        assert!(capabilities.answers(&DiscoInfoQuery { node: None }));
        assert!(!capabilities.answers(&DiscoInfoQuery {
            node: Some("urn:other#abc".into())
        }));
    }
}
