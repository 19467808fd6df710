//! `sync-client sync`: merge a browser's bookmarks with the bot's vault.
//!
//! One sync: [`record`] the browser's file against the base stored at the last sync, pull what
//! changed in the vault since the base's revision, [`merge`], push what the vault lacks with
//! compare-and-swap on the revision (on a conflict: pull again, merge again), write the
//! browser's file back atomically (with a snapshot for `undo`), store the new base.
//!
//! The base lives in a SQLite file of its own next to the OMEMO database
//! (`<db>.sync.sqlite3`), one row per (bot, vault).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bookmarks::sync::{materialize, merge, record, Diff, MergeOptions, State};
use bookmarks::Format;
use rusqlite::{params, Connection, OptionalExtension as _};
use vault_protocol::vault::{apply_pull, push_delta};
use vault_protocol::wire::{encode_request, is_vault_element, Assembler, Kind};
use vault_protocol::{Answer, Op, Request};
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::jid::BareJid;

/// How many times a push that meets a conflict is merged and tried again.
pub const MAX_ATTEMPTS: usize = 5;

/// The lock files a running browser holds, relative to the directory of its bookmark file:
/// Firefox (`.parentlock`, and `lock`, a symlink), Falkon (`lock`, via Qt), Chromium
/// (`SingletonLock`, a symlink in the user-data directory, the parent of the profile).
const LOCKS: [&str; 4] = [".parentlock", "lock", "SingletonLock", "../SingletonLock"];

/// The lock file of a browser that holds the profile `file` is in, if any. Symlinks count
/// even when dangling (Firefox's and Chromium's point to `host-pid`).
pub fn browser_lock(file: &Path) -> Option<PathBuf> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A Firefox backup sits in the profile's `bookmarkbackups/`.
    let dirs = [dir.to_path_buf(), dir.join("..")];
    dirs.iter()
        .flat_map(|d| LOCKS.iter().map(move |l| d.join(l)))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// The stored bases of the client's syncs.
#[derive(Debug)]
pub struct BaseStore {
    conn: Connection,
}

impl BaseStore {
    /// The path for the OMEMO database `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        db.with_extension("sync.sqlite3")
    }

    /// Opens (creating) the base store.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS base (
                 bot TEXT NOT NULL, vault TEXT NOT NULL, revision INTEGER NOT NULL,
                 state BLOB NOT NULL, PRIMARY KEY (bot, vault)) STRICT;",
        )?;
        Ok(Self { conn })
    }

    /// The base of (bot, vault): revision 0 and an empty state before the first sync.
    ///
    /// # Errors
    /// SQLite errors, or a stored state that does not decode.
    pub fn load(&self, bot: &str, vault: &str) -> anyhow::Result<(u64, State)> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT revision, state FROM base WHERE bot = ?1 AND vault = ?2",
                params![bot, vault],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok((0, State::default())),
            Some((revision, state)) => Ok((
                u64::try_from(revision).unwrap_or_default(),
                State::from_json(&state)
                    .map_err(|e| anyhow::anyhow!("the stored sync base is invalid: {e}"))?,
            )),
        }
    }

    /// Stores the base of (bot, vault).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save(&self, bot: &str, vault: &str, revision: u64, state: &State) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO base (bot, vault, revision, state) VALUES (?1, ?2, ?3, ?4)",
            params![
                bot,
                vault,
                i64::try_from(revision).unwrap_or(i64::MAX),
                state.to_json()?
            ],
        )?;
        Ok(())
    }
}

/// A fresh request id.
pub fn request_id() -> String {
    use rand_core::RngCore as _;
    format!("r{:016x}", rand_core::OsRng.next_u64())
}

/// How long to wait for an answer before sending the same request again.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);

/// Sends `request` to `bot` and waits for its answer (from a trusted device of the bot).
/// Without an answer after [`RESEND_AFTER`], the same request (same id) goes again: the vault
/// answers a repeat as the first time, and the bot may not have known this device yet when it
/// answered (its answer was then encrypted for our other devices only).
///
/// # Errors
/// Sending failed, or no answer within `timeout`.
pub async fn exchange(
    client: &Client,
    events: &mut ClientEvents,
    bot: &BareJid,
    request: &Request,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let parts = encode_request(request)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut assembler = Assembler::default();
    let mut resend_at = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!("no answer from the vault within {timeout:?}");
        }
        if now >= resend_at {
            if resend_at != now {
                tracing::info!(id = %request.id, "no answer yet; sending the request again");
            }
            for part in &parts {
                client
                    .send_sensitive(bot, vec![part.clone()])
                    .await
                    .context("cannot send a vault request")?;
            }
            resend_at = tokio::time::Instant::now() + RESEND_AFTER;
        }
        let event = match tokio::time::timeout_at(resend_at.min(deadline), events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the connection closed while waiting for the vault"),
            Err(_) => continue,
        };
        let ClientEvent::Encrypted(message) = event else {
            continue;
        };
        let e2ee = &message.e2ee;
        if &e2ee.sender != bot || !e2ee.trust.is_accepted() {
            tracing::warn!(from = %message.from, trust = ?e2ee.trust, "ignoring a message that is not from a trusted device of the bot");
            continue;
        }
        tracing::debug!(parts = message.content.len(), "message from the bot");
        let mut done = None;
        for element in message.content.iter().filter(|e| is_vault_element(e)) {
            match assembler.add(bot.as_str(), element) {
                Ok(Some(c)) if c.kind == Kind::Answer && c.id == request.id => {
                    done = Some(c.answer()?)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "malformed vault answer part"),
            }
        }
        // Answers to other requests (another device of this account, an earlier run) are
        // read and dropped.
        if let Err(e) = client.handled(&message).await {
            tracing::warn!(error = %e, "cannot mark a vault answer as handled");
        }
        if let Some(answer) = done {
            return Ok(answer);
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The merge's diff.
    pub diff: Diff,
    /// The vault's revision afterwards (for a dry run: the one merged with).
    pub revision: u64,
    /// Pushes that met a conflict and were merged again.
    pub conflicts: usize,
    /// Whether the browser's file was written.
    pub wrote_file: bool,
    /// The snapshot of the replaced file.
    pub snapshot: Option<PathBuf>,
}

/// The parameters of one sync.
#[derive(Debug, Clone)]
pub struct SyncJob<'a> {
    /// The bot.
    pub bot: &'a BareJid,
    /// The vault's name.
    pub vault: &'a str,
    /// The browser's file.
    pub file: &'a Path,
    /// Its format (already detected).
    pub format: Format,
    /// Show the diff only.
    pub dry_run: bool,
    /// Merge past the failsafe.
    pub force: bool,
    /// Per answer.
    pub timeout: Duration,
}

/// Runs one sync (see the module documentation).
///
/// # Errors
/// A running browser, a failed import, the failsafe, no answer, a refusal; the browser's file
/// and the stored base are then unchanged.
pub async fn sync(
    client: &Client,
    events: &mut ClientEvents,
    bases: &BaseStore,
    job: &SyncJob<'_>,
) -> anyhow::Result<Outcome> {
    if let Some(lock) = browser_lock(job.file) {
        bail!(
            "the browser seems to be running ({} exists): close it and sync again",
            lock.display()
        );
    }
    let (_, tree) = bookmarks::import_file(job.file, Some(job.format))
        .with_context(|| format!("cannot import {}", job.file.display()))?;
    let (base_revision, base) = bases.load(job.bot.as_str(), job.vault)?;
    let replica = u64::from(client.manager().own().device_id.get());
    let local = record(&base, &tree, job.format, replica, &mut rand_core::OsRng)?;
    let options = MergeOptions {
        force: job.force,
        ..MergeOptions::default()
    };
    let mut conflicts = 0;
    loop {
        let answer = exchange(
            client,
            events,
            job.bot,
            &Request {
                id: request_id(),
                vault: job.vault.to_owned(),
                op: Op::Pull {
                    since: base_revision,
                },
            },
            job.timeout,
        )
        .await?;
        tracing::info!(answer = %describe(&answer), "pull answered");
        let (revision, remote) = match answer {
            Answer::State {
                revision,
                full,
                state,
            } => (revision, apply_pull(&base, full, state)),
            other => bail!("the vault did not answer the pull: {}", describe(&other)),
        };
        let merged = merge(&base, &local, &remote, &options).map_err(|e| anyhow::anyhow!(e))?;
        if job.dry_run {
            return Ok(Outcome {
                diff: merged.diff,
                revision,
                conflicts,
                wrote_file: false,
                snapshot: None,
            });
        }
        let mut new_revision = revision;
        if merged.state != remote {
            let answer = exchange(
                client,
                events,
                job.bot,
                &Request {
                    id: request_id(),
                    vault: job.vault.to_owned(),
                    op: Op::Push {
                        base: revision,
                        delta: push_delta(&remote, &merged.state),
                    },
                },
                job.timeout,
            )
            .await?;
            tracing::info!(answer = %describe(&answer), "push answered");
            match answer {
                Answer::Ok { revision } => new_revision = revision,
                Answer::Conflict { revision } if conflicts + 1 < MAX_ATTEMPTS => {
                    tracing::info!(revision, "the vault moved on meanwhile; merging again");
                    conflicts += 1;
                    continue;
                }
                other => bail!("the vault did not take the push: {}", describe(&other)),
            }
        }
        let (mut wrote_file, mut snapshot) = (false, None);
        if !merged.diff.local.is_empty() {
            if let Some(lock) = browser_lock(job.file) {
                bail!(
                    "the browser started meanwhile ({} exists): close it and sync again",
                    lock.display()
                );
            }
            let bytes = bookmarks::export(&materialize(&merged.state, job.format), job.format)?;
            let label = format!("before-sync-{}", chrono_label());
            let written = crate::write_back::write_atomic(job.file, &bytes, &label)
                .with_context(|| format!("cannot write {}", job.file.display()))?;
            wrote_file = true;
            snapshot = written.snapshot;
        }
        bases.save(job.bot.as_str(), job.vault, new_revision, &merged.state)?;
        return Ok(Outcome {
            diff: merged.diff,
            revision: new_revision,
            conflicts,
            wrote_file,
            snapshot,
        });
    }
}

fn chrono_label() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}{:09}", now.as_secs(), now.subsec_nanos())
}

/// One line for an answer that was not the expected one.
pub fn describe(answer: &Answer) -> String {
    match answer {
        Answer::State { revision, .. } => format!("a state at revision {revision}"),
        Answer::Ok { revision } => format!("ok at revision {revision}"),
        Answer::Conflict { revision } => format!("conflict, the vault is at revision {revision}"),
        Answer::Refused { reason } => format!("refused: {reason}"),
        Answer::Error { reason } => format!("error: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_lock_file_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let file = profile.join("bookmarks.json");
        assert_eq!(browser_lock(&file), None);
        for lock in [".parentlock", "lock"] {
            std::fs::write(profile.join(lock), "").unwrap();
            assert_eq!(browser_lock(&file), Some(profile.join(lock)));
            std::fs::remove_file(profile.join(lock)).unwrap();
        }
        // Chromium: a dangling symlink in the user-data directory.
        std::os::unix::fs::symlink("host-1234", dir.path().join("SingletonLock")).unwrap();
        assert!(browser_lock(&file).is_some());
    }

    #[test]
    fn the_base_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = BaseStore::open(&dir.path().join("s.sqlite3")).unwrap();
        assert_eq!(store.load("bot@x", "v").unwrap(), (0, State::default()));
        let tree = bookmarks::import(
            b"<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><A HREF=\"https://a.example/\">a</A>\n</DL><p>\n",
            Format::NetscapeHtml,
        )
        .unwrap();
        let state = record(
            &State::default(),
            &tree,
            Format::NetscapeHtml,
            1,
            &mut rand_core::OsRng,
        )
        .unwrap();
        store.save("bot@x", "v", 3, &state).unwrap();
        assert_eq!(store.load("bot@x", "v").unwrap(), (3, state));
    }
}
