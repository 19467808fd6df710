//! Trust messages (XEP-0434 §trust-message-structure) as Automatic Trust Management
//! (XEP-0450) uses them for OMEMO 2: carried encrypted inside the SCE `<content>`.
//!
//! ```xml
//! <trust-message xmlns='urn:xmpp:tm:1' usage='urn:xmpp:atm:1' encryption='urn:xmpp:omemo:2'>
//!   <key-owner jid='alice@example.org'>
//!     <trust>BASE64(key id)</trust>
//!     <distrust>BASE64(key id)</distrust>
//!   </key-owner>
//! </trust-message>
//! ```
//!
//! For OMEMO 2 the key id is the raw Ed25519 identity key (what QXmpp and Kaidan send).

use base64::Engine as _;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::minidom::rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

use crate::error::Error;
use crate::ns;

/// `urn:xmpp:tm:1`.
pub const NS_TM: &str = "urn:xmpp:tm:1";
/// The `usage` of ATM trust messages (XEP-0450).
pub const USAGE_ATM: &str = "urn:xmpp:atm:1";
/// Most `<key-owner>` elements accepted in one message.
pub const MAX_KEY_OWNERS: usize = 100;
/// Most keys accepted per `<key-owner>`.
pub const MAX_KEYS_PER_OWNER: usize = 1000;

/// The decisions about one JID's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// Whose keys these are.
    pub jid: BareJid,
    /// Keys to trust (authenticate).
    pub trust: Vec<Vec<u8>>,
    /// Keys to distrust.
    pub distrust: Vec<Vec<u8>>,
}

/// An ATM trust message for OMEMO 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustMessage {
    /// The decisions, per key owner.
    pub key_owners: Vec<KeyOwner>,
}

impl TrustMessage {
    /// True if `element` is a `<trust-message>` (any usage).
    pub fn is_trust_message(element: &Element) -> bool {
        element.is("trust-message", NS_TM)
    }

    /// Serializes with `usage='urn:xmpp:atm:1'` and `encryption='urn:xmpp:omemo:2'`.
    pub fn to_element(&self) -> Element {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut builder = Element::builder("trust-message", NS_TM)
            .attr(xml_ncname!("usage").into(), USAGE_ATM)
            .attr(xml_ncname!("encryption").into(), ns::OMEMO2);
        for owner in &self.key_owners {
            let mut owner_builder = Element::builder("key-owner", NS_TM)
                .attr(xml_ncname!("jid").into(), owner.jid.as_str());
            for key in &owner.trust {
                owner_builder = owner_builder.append(
                    Element::builder("trust", NS_TM)
                        .append(engine.encode(key))
                        .build(),
                );
            }
            for key in &owner.distrust {
                owner_builder = owner_builder.append(
                    Element::builder("distrust", NS_TM)
                        .append(engine.encode(key))
                        .build(),
                );
            }
            builder = builder.append(owner_builder.build());
        }
        builder.build()
    }
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed {
        element: "trust-message",
        reason: reason.to_owned(),
    }
}

impl TryFrom<&Element> for TrustMessage {
    type Error = Error;

    /// Parses an ATM trust message for OMEMO 2; other usages or encryptions are refused.
    fn try_from(element: &Element) -> Result<Self, Error> {
        if !element.is("trust-message", NS_TM) {
            return Err(malformed("not a trust message"));
        }
        if element.attr(xml_ncname!("usage")) != Some(USAGE_ATM) {
            return Err(malformed("usage is not ATM"));
        }
        if element.attr(xml_ncname!("encryption")) != Some(ns::OMEMO2) {
            return Err(malformed("encryption is not OMEMO 2"));
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let mut key_owners = Vec::new();
        for owner in element.children() {
            if !owner.is("key-owner", NS_TM) {
                continue;
            }
            if key_owners.len() == MAX_KEY_OWNERS {
                return Err(malformed("too many key owners"));
            }
            let jid = owner
                .attr(xml_ncname!("jid"))
                .and_then(|j| BareJid::new(j).ok())
                .ok_or_else(|| malformed("key-owner without a valid jid"))?;
            let mut trust = Vec::new();
            let mut distrust = Vec::new();
            for child in owner.children() {
                let list = if child.is("trust", NS_TM) {
                    &mut trust
                } else if child.is("distrust", NS_TM) {
                    &mut distrust
                } else {
                    continue;
                };
                let text = child.text();
                if text.len() > 128 {
                    return Err(malformed("key id too long"));
                }
                let key = engine
                    .decode(text.trim())
                    .map_err(|_| malformed("key id is not base64"))?;
                list.push(key);
            }
            if trust.len() + distrust.len() > MAX_KEYS_PER_OWNER {
                return Err(malformed("too many keys"));
            }
            key_owners.push(KeyOwner {
                jid,
                trust,
                distrust,
            });
        }
        Ok(Self { key_owners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "<trust-message xmlns='urn:xmpp:tm:1' usage='urn:xmpp:atm:1' encryption='urn:xmpp:omemo:2'>\
        <key-owner jid='alice@example.org'><trust>leOIjd7FjvRXreG1MZToaeo/C3fcV18nK/6piNLuW+0=</trust></key-owner>\
        <key-owner jid='bob@example.net'><trust>lp04hsBk44o0ON7jPin+jIU4EtaewTYhvG987WRY1gc=</trust>\
        <distrust>leOIjd7FjvRXreG1MZToaeo/C3fcV18nK/6piNLuW+0=</distrust></key-owner></trust-message>";

    #[test]
    fn round_trip() {
        let element: Element = EXAMPLE.parse().unwrap();
        let message = TrustMessage::try_from(&element).unwrap();
        assert_eq!(message.key_owners.len(), 2);
        assert_eq!(message.key_owners[0].jid.as_str(), "alice@example.org");
        assert_eq!(message.key_owners[0].trust[0].len(), 32);
        assert_eq!(message.key_owners[1].distrust.len(), 1);
        assert_eq!(message.to_element(), element);
    }

    #[test]
    fn other_usages_and_bad_keys_are_refused() {
        for bad in [
            "<trust-message xmlns='urn:xmpp:tm:1' usage='urn:example' encryption='urn:xmpp:omemo:2'/>",
            "<trust-message xmlns='urn:xmpp:tm:1' usage='urn:xmpp:atm:1' encryption='eu.siacs.conversations.axolotl'/>",
            "<trust-message xmlns='urn:xmpp:tm:1' usage='urn:xmpp:atm:1' encryption='urn:xmpp:omemo:2'><key-owner><trust>AA==</trust></key-owner></trust-message>",
            "<trust-message xmlns='urn:xmpp:tm:1' usage='urn:xmpp:atm:1' encryption='urn:xmpp:omemo:2'><key-owner jid='a@b'><trust>!!</trust></key-owner></trust-message>",
            "<other xmlns='urn:xmpp:tm:1'/>",
        ] {
            let element: Element = bad.parse().unwrap();
            assert!(TrustMessage::try_from(&element).is_err(), "{bad}");
        }
    }
}
