//! The vault role: keeps bookmark vaults for allowed accounts (see the `vault-protocol`
//! crate). Off unless the configuration names a vault.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use vault_protocol::sqlite::SqliteStore;
use vault_protocol::wire::{encode_answer, is_vault_element, Assembler, WireError};
use vault_protocol::{handle, Answer, Policy};
use xmpp_core::jid::BareJid;
use xmpp_core::minidom::Element;
use xmpp_core::omemo::DecryptedMessage;

/// `[sync]` of the bot's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncSection {
    /// The vault database (default: next to the OMEMO database, `<name>.vault.sqlite3`).
    pub(crate) db: Option<PathBuf>,
    /// The vaults, by name.
    #[serde(default)]
    pub(crate) vault: BTreeMap<String, VaultSection>,
}

/// `[sync.vault.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultSection {
    /// The bare JIDs that share the vault.
    #[serde(default)]
    pub(crate) allow: Vec<String>,
}

impl SyncSection {
    /// The policy: which accounts may use which vault. Invalid JIDs are an error.
    pub(crate) fn policy(&self) -> anyhow::Result<Policy> {
        let mut policy = Policy::default();
        for (name, vault) in &self.vault {
            let mut allow = Vec::new();
            for jid in &vault.allow {
                let bare = BareJid::new(jid).map_err(|e| {
                    anyhow::anyhow!("[sync.vault.{name}] allow: invalid JID {jid:?}: {e}")
                })?;
                allow.push(bare.to_string());
            }
            policy.add(name, allow);
        }
        Ok(policy)
    }
}

/// The vault role of a running bot.
pub(crate) struct VaultRole {
    policy: Policy,
    store: SqliteStore,
    assembler: Assembler,
}

impl VaultRole {
    /// The role with `policy` and the vault database `store`.
    pub(crate) fn new(policy: Policy, store: SqliteStore) -> Self {
        Self {
            policy,
            store,
            assembler: Assembler::default(),
        }
    }

    /// The answer parts to send back to the sender of `message`, if it carries a complete
    /// vault request. Only for messages whose sender device's trust is accepted (the caller
    /// checks it, as for echoes).
    pub(crate) fn on_message(&mut self, message: &DecryptedMessage) -> Vec<Element> {
        let sender = message.e2ee.sender.to_string();
        let mut out = Vec::new();
        for element in message.content.iter().filter(|e| is_vault_element(e)) {
            let complete = match self.assembler.add(&sender, element) {
                Ok(Some(complete)) => complete,
                Ok(None) => continue,
                Err(WireError::Version(version)) => {
                    let reason = format!(
                        "unsupported vault protocol version {version:?}; this bot speaks {}",
                        vault_protocol::VERSION
                    );
                    if let Some(id) = element
                        .attr("id")
                        .filter(|id| vault_protocol::wire::is_valid_id(id))
                    {
                        out.extend(encode(id, &Answer::Error { reason }));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%sender, error = %e, "malformed vault element");
                    continue;
                }
            };
            let answer = match complete.request() {
                Ok(request) => match handle(&mut self.store, &self.policy, &sender, &request) {
                    Ok(answer) => answer,
                    Err(e) => {
                        // Nothing was committed; the client's retry with the same id is safe.
                        tracing::warn!(error = %e, "vault store failed");
                        Answer::Error {
                            reason: "the vault's store failed; try again".to_owned(),
                        }
                    }
                },
                Err(e) => Answer::Error {
                    reason: e.to_string(),
                },
            };
            match &answer {
                Answer::Refused { .. } => {
                    tracing::warn!(%sender, id = %complete.id, "vault request refused")
                }
                other => {
                    tracing::info!(%sender, id = %complete.id, status = status(other), "vault request answered")
                }
            }
            out.extend(encode(&complete.id, &answer));
        }
        out
    }
}

fn status(answer: &Answer) -> &'static str {
    match answer {
        Answer::State { .. } => "state",
        Answer::Ok { .. } => "ok",
        Answer::Conflict { .. } => "conflict",
        Answer::Refused { .. } => "refused",
        Answer::Error { .. } => "error",
    }
}

fn encode(id: &str, answer: &Answer) -> Vec<Element> {
    match encode_answer(id, answer) {
        Ok(elements) => elements,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a vault answer");
            Vec::new()
        }
    }
}

/// Whether `message` carries vault elements.
pub(crate) fn carries_vault(message: &DecryptedMessage) -> bool {
    message.content.iter().any(is_vault_element)
}
