//! `sync-client send`: ship a [`Transfer`] to the bot over OMEMO 2 and verify every answer.
//!
//! Each chunk goes out with `send_sensitive`; the answer must be OMEMO-encrypted, come from
//! a device of the bot whose trust level is accepted, and be exactly `Your message: <chunk>`.
//! Unencrypted replies are dropped with a warning and count as missing.

use std::time::{Duration, Instant};

use serde::Serialize;
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::jid::BareJid;

use crate::transfer::Transfer;

/// The prefix the echo bot puts before the body it echoes.
pub const ECHO_PREFIX: &str = "Your message: ";

/// What happened to one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ChunkOutcome {
    /// Answered correctly, encrypted, by an accepted device.
    Verified {
        /// The answering device.
        device: u32,
        /// Its trust level.
        trust: String,
    },
    /// No valid answer within the timeout.
    Missing {
        /// Why the answers that did arrive were not accepted, if any did.
        rejected: Vec<String>,
    },
    /// Sending failed.
    SendFailed {
        /// The error.
        error: String,
    },
}

/// The result of a send.
#[derive(Debug, Clone, Serialize)]
pub struct SendSummary {
    /// Per chunk, in order.
    pub chunks: Vec<ChunkOutcome>,
    /// Time from the first send to the last answer.
    pub elapsed: Duration,
    /// Unencrypted replies that were dropped.
    pub unencrypted_replies: usize,
}

impl SendSummary {
    /// True if every chunk came back verified.
    pub fn all_verified(&self) -> bool {
        self.chunks
            .iter()
            .all(|c| matches!(c, ChunkOutcome::Verified { .. }))
    }

    /// The bot devices and trust levels that answered.
    pub fn answering_devices(&self) -> Vec<(u32, String)> {
        let mut devices: Vec<(u32, String)> = self
            .chunks
            .iter()
            .filter_map(|c| match c {
                ChunkOutcome::Verified { device, trust } => Some((*device, trust.clone())),
                _ => None,
            })
            .collect();
        devices.sort();
        devices.dedup();
        devices
    }
}

/// Sends every chunk and waits for its verified echo, one chunk at a time. Stops at the
/// first chunk that is not verified (the rest count as not sent). `progress` is called after
/// each chunk with the number done.
pub async fn send_transfer(
    client: &Client,
    events: &mut ClientEvents,
    bot: &BareJid,
    transfer: &Transfer,
    timeout: Duration,
    mut progress: impl FnMut(usize),
) -> SendSummary {
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(transfer.chunks.len());
    let mut unencrypted_replies = 0;
    for (index, chunk) in transfer.chunks.iter().enumerate() {
        if let Err(e) = client.send_body(bot, chunk).await {
            outcomes.push(ChunkOutcome::SendFailed {
                error: e.to_string(),
            });
            break;
        }
        let expected = format!("{ECHO_PREFIX}{chunk}");
        let outcome =
            wait_for_echo(events, bot, &expected, timeout, &mut unencrypted_replies).await;
        let verified = matches!(outcome, ChunkOutcome::Verified { .. });
        outcomes.push(outcome);
        progress(index + 1);
        if !verified {
            break;
        }
    }
    SendSummary {
        chunks: outcomes,
        elapsed: started.elapsed(),
        unencrypted_replies,
    }
}

async fn wait_for_echo(
    events: &mut ClientEvents,
    bot: &BareJid,
    expected: &str,
    timeout: Duration,
    unencrypted_replies: &mut usize,
) -> ChunkOutcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rejected = Vec::new();
    loop {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => return ChunkOutcome::Missing { rejected },
        };
        match event {
            ClientEvent::Plaintext { from, .. } => {
                tracing::warn!(%from, "unencrypted message received, ignoring");
                *unencrypted_replies += 1;
                rejected.push(format!("unencrypted message from {from}"));
            }
            ClientEvent::Encrypted(message) => {
                let e2ee = &message.e2ee;
                if &e2ee.sender != bot {
                    tracing::debug!(from = %message.from, "encrypted message from someone else");
                    continue;
                }
                if !e2ee.trust.is_accepted() {
                    tracing::warn!(device = %e2ee.device, trust = ?e2ee.trust, "answer from an untrusted bot device, ignoring");
                    rejected.push(format!(
                        "device {} has trust level {:?}",
                        e2ee.device, e2ee.trust
                    ));
                    continue;
                }
                if message.body.as_deref() != Some(expected) {
                    tracing::warn!(device = %e2ee.device, "answer does not match the chunk, ignoring");
                    rejected.push(format!("device {} answered something else", e2ee.device));
                    continue;
                }
                return ChunkOutcome::Verified {
                    device: e2ee.device.get(),
                    trust: format!("{:?}", e2ee.trust),
                };
            }
            ClientEvent::Undecryptable { from, reason, .. } => {
                tracing::warn!(%from, %reason, "undecryptable message");
                rejected.push(format!("undecryptable message from {from}"));
            }
            _ => {}
        }
    }
}
