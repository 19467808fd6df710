//! Outgoing message hints: EME (XEP-0380) naming OMEMO 2 and the store hint (XEP-0334), plus
//! wrapping and finding `<encrypted>` in a `<message>`.

use xmpp_parsers::eme::ExplicitMessageEncryption;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessagePayload, MessageType};
use xso::{AsXml, FromXml};

use crate::omemo2::EncryptedMessage;
use crate::{ns, Error};

/// `<store xmlns='urn:xmpp:hints'/>` (XEP-0334 §store): ask the server to archive the message
/// even though it has no `<body>`.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = ns::HINTS, name = "store")]
pub struct Store;

impl MessagePayload for Store {}

/// `<encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:omemo:2' name='OMEMO 2'/>`
/// (XEP-0380 §4).
pub fn omemo2_eme() -> ExplicitMessageEncryption {
    ExplicitMessageEncryption {
        namespace: ns::OMEMO2.to_owned(),
        name: Some(ns::OMEMO2_EME_NAME.to_owned()),
    }
}

/// Builds the `<message>` that carries `encrypted`, with the EME and store hints and no
/// fallback `<body>` (XEP-0420 0.5). The caller sets the stanza `id`.
pub fn encrypted_message(to: Jid, type_: MessageType, encrypted: &EncryptedMessage) -> Message {
    Message::new_with_type(type_, Some(to)).with_payloads(vec![
        encrypted.to_element(),
        omemo2_eme().into(),
        Store.into(),
    ])
}

/// Finds and checks the OMEMO 2 `<encrypted>` element of an incoming message. Everything
/// else (a fallback `<body>`, EME, hints, a legacy OMEMO element) is ignored. `None` if the
/// message has no OMEMO 2 element.
pub fn find_encrypted(message: &Message) -> Option<Result<EncryptedMessage, Error>> {
    message
        .payloads
        .iter()
        .find(|p| p.is("encrypted", ns::OMEMO2))
        .map(|elem| EncryptedMessage::try_from(elem.clone()))
}
