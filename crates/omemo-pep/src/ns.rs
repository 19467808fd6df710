//! XML namespaces and PEP node names used by this crate, in one place.
//!
//! The OMEMO 2 names carry the version in their constant names; the legacy
//! (`eu.siacs.conversations.axolotl`, XEP-0384 0.3) names live beside them.

/// XEP-0384 (OMEMO 2) element namespace: `<encrypted>`, `<devices>`, `<bundle>`.
pub const OMEMO2: &str = "urn:xmpp:omemo:2";

/// XEP-0384 §devices: the PEP node holding the device list (single item `current`).
pub const OMEMO2_DEVICES: &str = "urn:xmpp:omemo:2:devices";

/// XEP-0163 §4: the disco/caps feature asking for device-list notifications.
pub const OMEMO2_DEVICES_NOTIFY: &str = "urn:xmpp:omemo:2:devices+notify";

/// XEP-0384 §bundles: the PEP node holding one bundle item per device (item id = device id).
pub const OMEMO2_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";

/// Legacy OMEMO (XEP-0384 0.3 as deployed) element namespace: `<encrypted>`, `<list>`,
/// `<bundle>`.
pub const LEGACY: &str = "eu.siacs.conversations.axolotl";

/// Legacy: the PEP node holding the device list (single item `current`).
pub const LEGACY_DEVICE_LIST: &str = "eu.siacs.conversations.axolotl.devicelist";

/// Legacy: the disco/caps feature asking for device-list notifications.
pub const LEGACY_DEVICE_LIST_NOTIFY: &str = "eu.siacs.conversations.axolotl.devicelist+notify";

/// Legacy: the prefix of the per-device bundle nodes; the node of device 31415 is
/// `eu.siacs.conversations.axolotl.bundles:31415` (single item `current`).
pub const LEGACY_BUNDLES_PREFIX: &str = "eu.siacs.conversations.axolotl.bundles:";

/// Legacy: the bundle node of one device.
pub fn legacy_bundle_node(device: omemo_crypto::DeviceId) -> String {
    format!("{LEGACY_BUNDLES_PREFIX}{device}")
}

/// The EME `name` Conversations and Gajim put next to a legacy `<encrypted>`.
pub const LEGACY_EME_NAME: &str = "OMEMO";

/// XEP-0420 (Stanza Content Encryption) envelope namespace.
pub const SCE: &str = "urn:xmpp:sce:1";

/// XEP-0380 (Explicit Message Encryption).
pub const EME: &str = "urn:xmpp:eme:0";

/// XEP-0334 (Message Processing Hints).
pub const HINTS: &str = "urn:xmpp:hints";

/// RFC 6120 client namespace, used for `<body>` inside the SCE `<content>`.
pub const JABBER_CLIENT: &str = "jabber:client";

/// XEP-0359 (Unique and Stable Stanza IDs), dropped from decrypted `<content>`.
pub const STANZA_ID: &str = "urn:xmpp:sid:0";

/// XEP-0033 (Extended Stanza Addressing), dropped from decrypted `<content>`.
pub const ADDRESS: &str = "http://jabber.org/protocol/address";

/// XEP-0060 application-specific error conditions (`precondition-not-met`, …).
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// XEP-0060 §7.1.5 publish-options form type.
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// XEP-0060 §8.2 node configuration form type.
pub const PUBSUB_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// The EME `name` XEP-0380 registers for OMEMO 2.
pub const OMEMO2_EME_NAME: &str = "OMEMO 2";
