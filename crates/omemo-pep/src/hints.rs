//! Outgoing message hints: EME (XEP-0380) naming OMEMO 2 or legacy OMEMO and the store hint
//! (XEP-0334), plus wrapping and finding `<encrypted>` in a `<message>`.

use xmpp_parsers::eme::ExplicitMessageEncryption;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Message, MessagePayload, MessageType};
use xso::{AsXml, FromXml};

use crate::omemo2::EncryptedMessage;
use crate::{legacy, ns, Error};

/// The fallback `<body>` we put next to a legacy `<encrypted>` with a payload, for clients
/// without OMEMO (the text Conversations sends, with a plain apostrophe). Receivers ignore it
/// when they can decrypt; it is never a message to act on.
pub const LEGACY_FALLBACK_BODY: &str =
    "I sent you an OMEMO encrypted message but your client doesn't seem to support that.";

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

/// `<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'
/// name='OMEMO'/>`, as Conversations and Gajim send it.
pub fn legacy_eme() -> ExplicitMessageEncryption {
    ExplicitMessageEncryption {
        namespace: ns::LEGACY.to_owned(),
        name: Some(ns::LEGACY_EME_NAME.to_owned()),
    }
}

/// Builds the `<message>` that carries a legacy `encrypted`: the fallback body
/// ([`LEGACY_FALLBACK_BODY`]) when it has a payload (legacy has no SCE, and clients without
/// OMEMO show the body), then `<encrypted>`, EME and the store hint. A key-transport message
/// gets no body. The caller sets the stanza `id`.
pub fn legacy_encrypted_message(
    to: Jid,
    type_: MessageType,
    encrypted: &legacy::EncryptedMessage,
) -> Message {
    let message = Message::new_with_type(type_, Some(to));
    let message = if encrypted.is_empty_message() {
        message
    } else {
        message.with_body(
            xmpp_parsers::message::Lang(String::new()),
            LEGACY_FALLBACK_BODY.to_owned(),
        )
    };
    message.with_payloads(vec![
        encrypted.to_element(),
        legacy_eme().into(),
        Store.into(),
    ])
}

/// Finds and checks the legacy `<encrypted>` element of an incoming message. The fallback
/// `<body>`, EME, hints and an OMEMO 2 element are ignored. `None` if the message has no
/// legacy element.
pub fn find_legacy_encrypted(message: &Message) -> Option<Result<legacy::EncryptedMessage, Error>> {
    message
        .payloads
        .iter()
        .find(|p| p.is("encrypted", ns::LEGACY))
        .map(|elem| legacy::EncryptedMessage::try_from(elem.clone()))
}
