//! `sync-client send`: ship a [`Transfer`] to the bot over OMEMO 2 and verify every answer.
//!
//! Each chunk goes out with `send_sensitive`; the answer must be OMEMO-encrypted, come from
//! a device of the bot whose trust level is accepted, and be exactly `Your message: <chunk>`.
//! Unencrypted replies are dropped with a warning and count as missing.
//!
//! Echoes of *another* transfer are expected after a run was interrupted (killed, or the
//! connection died): the bot answered a chunk that run never read, the server kept the answer
//! (in offline storage, or in the archive the client replays when it connects), and it
//! arrives during a later run. It carries another transfer id, so it is told apart, logged,
//! counted in [`SendSummary::stale_echoes`] and otherwise ignored: it never counts as the
//! answer to a chunk of this transfer.
//!
//! Once every chunk is verified, the echoed chunks are put back together with
//! [`crate::transfer::reassemble_document`], so the summary also shows what came back as a
//! whole ([`EchoedDocument`]).

use std::time::{Duration, Instant};

use serde::Serialize;
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::jid::BareJid;

use crate::bookmarks::{BookmarkTree, Stats};
use crate::transfer::{reassemble_document, sha256_hex, Chunk, Transfer};

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

/// An echo of a chunk of another transfer (an earlier run that did not read all its answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleEcho {
    /// The other transfer's id.
    pub transfer_id: String,
    /// The chunk's 1-based index in that transfer.
    pub index: usize,
    /// That transfer's number of chunks.
    pub count: usize,
}

/// How one answer of the bot relates to the chunk being waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Exactly `Your message: <the chunk>`.
    Matches,
    /// The echo of a chunk of another transfer: ignored, not an answer to this chunk.
    Stale(StaleEcho),
    /// Anything else.
    Other,
}

/// Classifies the body of an answer while `chunk` of `transfer` waits for its echo.
pub fn classify_answer(body: Option<&str>, transfer: &Transfer, chunk: &str) -> Answer {
    let Some(echoed) = body.and_then(|b| b.strip_prefix(ECHO_PREFIX)) else {
        return Answer::Other;
    };
    if echoed == chunk {
        return Answer::Matches;
    }
    match Chunk::parse(echoed) {
        Ok(other)
            if other.transfer_id != transfer.transfer_id || other.sha256 != transfer.sha256 =>
        {
            Answer::Stale(StaleEcho {
                transfer_id: other.transfer_id.to_owned(),
                index: other.index,
                count: other.count,
            })
        }
        _ => Answer::Other,
    }
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
    /// Echoes of other transfers that arrived meanwhile and were ignored.
    pub stale_echoes: Vec<StaleEcho>,
    /// Verified answers that were OMEMO key exchanges (the bot built a new session).
    pub key_exchange_answers: usize,
    /// The document put back together from the verified echoes, once every chunk was
    /// verified, or why it could not be reassembled.
    pub echoed: Option<Result<EchoedDocument, String>>,
}

/// The document reassembled from the bot's echoes.
#[derive(Debug, Clone, Serialize)]
pub struct EchoedDocument {
    /// The tree.
    #[serde(skip)]
    pub tree: BookmarkTree,
    /// Its counts.
    #[serde(skip)]
    pub stats: Stats,
    /// SHA-256 of the reassembled document (its canonical JSON), hex.
    pub document_sha256: String,
    /// True if that is the hash of the document that was sent.
    pub matches: bool,
}

impl EchoedDocument {
    fn reassemble(echoes: &[String], transfer: &Transfer) -> Result<Self, String> {
        let document =
            reassemble_document(echoes.iter().map(String::as_str)).map_err(|e| e.to_string())?;
        let tree = BookmarkTree::from_canonical_json(&document).map_err(|e| e.to_string())?;
        let document_sha256 = sha256_hex(&document);
        Ok(Self {
            stats: tree.stats(),
            tree,
            matches: document_sha256 == transfer.document_sha256,
            document_sha256,
        })
    }
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
    let count = transfer.chunks.len();
    let mut outcomes = Vec::with_capacity(count);
    let mut waiting = Waiting {
        unencrypted_replies: 0,
        stale_echoes: Vec::new(),
        key_exchange_answers: 0,
    };
    let mut echoes: Vec<String> = Vec::with_capacity(count);
    for (index, chunk) in transfer.chunks.iter().enumerate() {
        if let Err(e) = client.send_body(bot, chunk).await {
            outcomes.push(ChunkOutcome::SendFailed {
                error: e.to_string(),
            });
            break;
        }
        tracing::info!(transfer = %transfer.transfer_id, chunk = index + 1, of = count, "chunk sent");
        let outcome =
            wait_for_echo(client, events, bot, transfer, chunk, timeout, &mut waiting).await;
        let verified = matches!(outcome, ChunkOutcome::Verified { .. });
        if verified {
            tracing::info!(transfer = %transfer.transfer_id, chunk = index + 1, of = count, "chunk verified");
            echoes.push(chunk.clone());
        }
        outcomes.push(outcome);
        progress(index + 1);
        if !verified {
            break;
        }
    }
    let echoed =
        (echoes.len() == count && count > 0).then(|| EchoedDocument::reassemble(&echoes, transfer));
    SendSummary {
        chunks: outcomes,
        elapsed: started.elapsed(),
        unencrypted_replies: waiting.unencrypted_replies,
        stale_echoes: waiting.stale_echoes,
        key_exchange_answers: waiting.key_exchange_answers,
        echoed,
    }
}

/// What the waits for answers collect across chunks.
struct Waiting {
    unencrypted_replies: usize,
    stale_echoes: Vec<StaleEcho>,
    key_exchange_answers: usize,
}

async fn wait_for_echo(
    client: &Client,
    events: &mut ClientEvents,
    bot: &BareJid,
    transfer: &Transfer,
    chunk: &str,
    timeout: Duration,
    waiting: &mut Waiting,
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
                waiting.unencrypted_replies += 1;
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
                match classify_answer(message.body.as_deref(), transfer, chunk) {
                    Answer::Matches => {
                        if e2ee.key_exchange {
                            waiting.key_exchange_answers += 1;
                        }
                        // Out of the inbox before the chunk counts as verified: a run killed
                        // after this point does not see the echo again at its next start.
                        if let Err(e) = client.handled(&message).await {
                            tracing::warn!(error = %e, "cannot mark the echo as handled");
                        }
                        return ChunkOutcome::Verified {
                            device: e2ee.device.get(),
                            trust: format!("{:?}", e2ee.trust),
                        };
                    }
                    Answer::Stale(stale) => {
                        tracing::warn!(
                            device = %e2ee.device,
                            transfer = %stale.transfer_id,
                            chunk = stale.index,
                            of = stale.count,
                            "late echo of an earlier, interrupted transfer, ignoring"
                        );
                        waiting.stale_echoes.push(stale);
                    }
                    Answer::Other => {
                        tracing::warn!(device = %e2ee.device, "answer does not match the chunk, ignoring");
                        rejected.push(format!("device {} answered something else", e2ee.device));
                    }
                }
            }
            ClientEvent::Undecryptable { from, reason, .. } => {
                tracing::warn!(%from, %reason, "undecryptable message");
                rejected.push(format!("undecryptable message from {from}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookmarks::{self, Format};

    /// `count` bookmarks with distinct URLs, dates and non-ASCII titles.
    fn tree(count: usize) -> BookmarkTree {
        let mut html = String::from("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n");
        for i in 0..count {
            html.push_str(&format!(
                "<DT><A HREF=\"https://example.org/page/{i}?q={}\" ADD_DATE=\"{}\">Page {i} — Ünïcödé</A>\n",
                i * 7919 % 1000,
                1_600_000_000 + i
            ));
        }
        html.push_str("</DL><p>\n");
        bookmarks::import(html.as_bytes(), Format::NetscapeHtml).unwrap()
    }

    fn echo(chunk: &str) -> String {
        format!("{ECHO_PREFIX}{chunk}")
    }

    /// After an interrupted run, the bot's answers to it arrive at the next run (from the
    /// server's offline storage). They must be recognised as such, even when the earlier run
    /// sent the very same document, and never be taken for the answer to a chunk.
    #[test]
    fn a_late_echo_of_an_earlier_transfer_is_told_apart() {
        let current = Transfer::new(&tree(3000), "cafe0001").unwrap();
        let earlier = Transfer::new(&tree(3000), "dead0002").unwrap();
        assert!(current.chunks.len() > 1);
        assert_eq!(current.sha256, earlier.sha256, "same document, other id");
        let chunk = &current.chunks[0];

        assert_eq!(
            classify_answer(Some(&echo(chunk)), &current, chunk),
            Answer::Matches
        );
        assert_eq!(
            classify_answer(Some(&echo(&earlier.chunks[1])), &current, chunk),
            Answer::Stale(StaleEcho {
                transfer_id: "dead0002".to_owned(),
                index: 2,
                count: earlier.chunks.len(),
            })
        );
        // The first chunk of the earlier run is not this chunk either, though only the id
        // differs.
        assert!(matches!(
            classify_answer(Some(&echo(&earlier.chunks[0])), &current, chunk),
            Answer::Stale(StaleEcho { index: 1, .. })
        ));
        // Another chunk of this transfer, an unprefixed chunk, garbage: not stale, just wrong.
        for other in [
            Some(echo(&current.chunks[1])),
            Some(chunk.clone()),
            Some(echo("hello")),
            Some(String::new()),
            None,
        ] {
            assert_eq!(
                classify_answer(other.as_deref(), &current, chunk),
                Answer::Other,
                "{:?}",
                other.map(|o| o.chars().take(60).collect::<String>())
            );
        }
    }

    #[test]
    fn the_echoes_reassemble_to_the_sent_document() {
        let sent = tree(3000);
        let transfer = Transfer::new(&sent, "t-9").unwrap();
        let echoed = EchoedDocument::reassemble(&transfer.chunks, &transfer).unwrap();
        assert!(echoed.matches);
        assert_eq!(echoed.tree, sent);
        assert_eq!(echoed.stats.bookmarks, 3000);
        assert_eq!(echoed.document_sha256, transfer.document_sha256);
        assert!(EchoedDocument::reassemble(&transfer.chunks[1..], &transfer).is_err());
        let mut twice = transfer.chunks.clone();
        twice.push(transfer.chunks[0].clone());
        assert!(EchoedDocument::reassemble(&twice, &transfer).is_err());
    }
}
