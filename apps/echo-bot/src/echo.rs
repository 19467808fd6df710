//! What the bot does with each event: the whole policy, free of I/O so it can be tested.

use std::sync::Arc;

use serde::Deserialize;
use xmpp_core::client::ClientEvent;
use xmpp_core::omemo::{DecryptedMessage, Responder};

use crate::vault::carries_vault;
use xmpp_core::jid::{BareJid, Jid};
use xmpp_core::message::MessageType;

/// What to do with a plaintext (unencrypted) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PlaintextReply {
    /// Ignore it (the default).
    #[default]
    Ignore,
    /// Answer with a short plaintext notice that the bot only talks OMEMO. The message
    /// itself is never echoed.
    Notice,
}

/// The notice sent to plaintext messages when `--plaintext-reply notice` is set.
pub(crate) const PLAINTEXT_NOTICE: &str =
    "This bot only answers OMEMO encrypted messages. Please enable OMEMO in your client.";

/// The longest body (in bytes) that is echoed. An echo is a little larger than the message it
/// answers (the prefix, keys for more devices), so echoing a message that barely fit under the
/// server's stanza limit (Prosody: 256 KiB) would get the bot's own stream closed for an
/// oversized stanza. Longer messages get a short encrypted note instead; the bookmark client's
/// chunks are far below this.
pub(crate) const MAX_ECHO_BYTES: usize = 128 * 1024;

/// The note sent instead of an echo whose stanza would have been `bytes` bytes, more than a
/// server accepts (escaping and encryption can make an echo several times larger than the
/// message it answers).
pub(crate) fn too_large_note(bytes: usize) -> String {
    format!(
        "Your message is too large to echo (the answer would be a {bytes}-byte stanza; the \
         limit is {}).",
        xmpp_core::omemo::MAX_STANZA_BYTES
    )
}

/// The bot's reaction to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this body, encrypted, to this JID.
    EncryptedReply { to: BareJid, body: String },
    /// Send the plaintext notice to this JID.
    PlaintextNotice { to: Jid },
    /// Do nothing; the reason is logged.
    Ignore(&'static str),
}

/// Decides the reaction to an event.
pub(crate) fn decide(event: &ClientEvent, own: &BareJid, plaintext: PlaintextReply) -> Action {
    match event {
        ClientEvent::Encrypted(message) => decide_encrypted(message, own),
        ClientEvent::Plaintext { from, type_, .. } => {
            if from.to_bare() == *own {
                return Action::Ignore("plaintext from our own account");
            }
            match (plaintext, type_) {
                (PlaintextReply::Notice, MessageType::Chat | MessageType::Normal) => {
                    Action::PlaintextNotice { to: from.clone() }
                }
                _ => Action::Ignore("plaintext message"),
            }
        }
        ClientEvent::Undecryptable { .. } => Action::Ignore("undecryptable message"),
        _ => Action::Ignore("not a message"),
    }
}

/// Decides the reaction to an encrypted message (vault requests aside: see `carries_vault`).
fn decide_encrypted(message: &DecryptedMessage, own: &BareJid) -> Action {
    let e2ee = &message.e2ee;
    if &e2ee.sender == own {
        return Action::Ignore("message from one of our own devices");
    }
    if !e2ee.trust.is_accepted() {
        return Action::Ignore("sender device is not trusted");
    }
    match &message.body {
        Some(body) if body.len() > MAX_ECHO_BYTES => Action::EncryptedReply {
            to: e2ee.sender.clone(),
            body: format!(
                "Your message is too long to echo ({} bytes; the limit is {MAX_ECHO_BYTES}).",
                body.len()
            ),
        },
        Some(body) => Action::EncryptedReply {
            to: e2ee.sender.clone(),
            body: format!("Your message: {body}"),
        },
        None => Action::Ignore("encrypted message without a body"),
    }
}

/// The echo as the client's responder gives it, in the transaction that decrypts the message
/// (see `Client::start_with_responder`): the answer [`decide`] gives an encrypted message to
/// its sender, except for vault requests, which the vault role answers. What it does not
/// answer (or the client cannot answer at once) reaches [`decide`] as an event.
pub(crate) fn responder(own: BareJid) -> Responder {
    Arc::new(move |message: &DecryptedMessage| {
        if carries_vault(message) {
            return None;
        }
        match decide_encrypted(message, &own) {
            Action::EncryptedReply { to, body } if to == message.e2ee.sender => {
                Some(vec![omemo_pep::sce::Envelope::body_element(&body)])
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use omemo_crypto::DeviceId;
    use xmpp_core::omemo::{DecryptedMessage, E2eeMetadata};
    use xmpp_core::TrustLevel;

    fn bot() -> BareJid {
        BareJid::new("bot@example.org").unwrap()
    }

    fn encrypted(from: &str, trust: TrustLevel, body: Option<&str>) -> ClientEvent {
        let sender = BareJid::new(from).unwrap();
        ClientEvent::Encrypted(Box::new(DecryptedMessage {
            from: Jid::from(sender.clone()),
            id: None,
            type_: MessageType::Chat,
            content: Vec::new(),
            body: body.map(str::to_owned),
            e2ee: E2eeMetadata {
                sender,
                device: DeviceId::new(7).unwrap(),
                identity_key: omemo_crypto::hazmat::identity_from_seed(&[1; 32]).public_key(),
                trust,
                key_exchange: false,
                version: omemo_crypto::ProtocolVersion::Omemo2,
            },
            receipt: None,
            answered: None,
        }))
    }

    #[test]
    fn trusted_encrypted_messages_are_echoed_encrypted() {
        for trust in [
            TrustLevel::AutomaticallyTrusted,
            TrustLevel::ManuallyTrusted,
            TrustLevel::Authenticated,
        ] {
            assert_eq!(
                decide(
                    &encrypted("alice@example.org", trust, Some("hi")),
                    &bot(),
                    PlaintextReply::Ignore
                ),
                Action::EncryptedReply {
                    to: BareJid::new("alice@example.org").unwrap(),
                    body: "Your message: hi".to_owned()
                }
            );
        }
    }

    #[test]
    fn overlong_messages_get_an_encrypted_note_instead_of_an_echo() {
        let alice = BareJid::new("alice@example.org").unwrap();
        let at_limit = "a".repeat(MAX_ECHO_BYTES);
        let event = encrypted(alice.as_str(), TrustLevel::ManuallyTrusted, Some(&at_limit));
        assert_eq!(
            decide(&event, &bot(), PlaintextReply::Ignore),
            Action::EncryptedReply {
                to: alice.clone(),
                body: format!("Your message: {at_limit}")
            }
        );
        let over = "é".repeat(MAX_ECHO_BYTES / 2 + 1);
        let event = encrypted(alice.as_str(), TrustLevel::ManuallyTrusted, Some(&over));
        let Action::EncryptedReply { to, body } = decide(&event, &bot(), PlaintextReply::Ignore)
        else {
            panic!("an overlong message must still get an encrypted answer");
        };
        assert_eq!(to, alice);
        assert!(
            body.starts_with("Your message is too long to echo (131074 bytes"),
            "{body}"
        );
    }

    #[test]
    fn untrusted_own_and_empty_messages_are_not_answered() {
        for trust in [
            TrustLevel::Undecided,
            TrustLevel::AutomaticallyDistrusted,
            TrustLevel::ManuallyDistrusted,
        ] {
            assert!(matches!(
                decide(
                    &encrypted("alice@example.org", trust, Some("hi")),
                    &bot(),
                    PlaintextReply::Notice
                ),
                Action::Ignore(_)
            ));
        }
        assert!(matches!(
            decide(
                &encrypted("bot@example.org", TrustLevel::Authenticated, Some("hi")),
                &bot(),
                PlaintextReply::Ignore
            ),
            Action::Ignore(_)
        ));
        assert!(matches!(
            decide(
                &encrypted("alice@example.org", TrustLevel::Authenticated, None),
                &bot(),
                PlaintextReply::Ignore
            ),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn plaintext_is_never_echoed() {
        let event = ClientEvent::Plaintext {
            from: Jid::new("eve@example.org/phone").unwrap(),
            type_: MessageType::Chat,
            body: "secret".to_owned(),
        };
        assert!(matches!(
            decide(&event, &bot(), PlaintextReply::Ignore),
            Action::Ignore(_)
        ));
        assert_eq!(
            decide(&event, &bot(), PlaintextReply::Notice),
            Action::PlaintextNotice {
                to: Jid::new("eve@example.org/phone").unwrap()
            }
        );
        assert!(!PLAINTEXT_NOTICE.contains("secret"));
        let groupchat = ClientEvent::Plaintext {
            from: Jid::new("room@muc.example.org/eve").unwrap(),
            type_: MessageType::Groupchat,
            body: "x".to_owned(),
        };
        assert!(matches!(
            decide(&groupchat, &bot(), PlaintextReply::Notice),
            Action::Ignore(_)
        ));
    }
}
