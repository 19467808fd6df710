//! `sync-client sync`, `pull`, `push` and `status`: merge a browser's bookmarks with the bot's
//! vault.
//!
//! One sync: [`record`] the browser's file against the base stored at the last sync, pull what
//! changed in the vault since the base's revision, [`merge`], store the result as the pending
//! base ([`crate::store`]), push what the vault lacks with compare-and-swap on the revision (on
//! a conflict: pull again, merge again), write the browser's file back atomically (with a
//! snapshot for `undo`), and make the pending base the base. A run that finds a pending base
//! (the last one was killed) finishes it first ([`recover`]).
//!
//! `pull` writes the file and pushes nothing; its base is the vault's state, so what the file
//! has that the vault lacks is recorded again, as the local change it still is, at the next
//! sync. `push` pushes and does not write the file; its base is the file's state, at the
//! revision the vault was at before, so the next pull brings what the file still lacks.
//! `status` (and `--dry-run`) stop after the merge.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bookmarks::sync::{materialize, merge, record, Diff, MergeError, MergeOptions};
use bookmarks::Format;
use vault_protocol::vault::{apply_pull, push_delta};
use vault_protocol::wire::{encode_request, is_vault_element, Assembler, Kind, Part};
use vault_protocol::{Answer, Op, Request};
use xmpp_core::client::{Client, ClientEvent, ClientEvents};
use xmpp_core::jid::BareJid;

use crate::store::{sha256, unix_now, Base, LastWrite, Pending, PendingMode, SyncStore};

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

/// The exit codes of `sync-client` (also in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Ok = 0,
    /// 1: any other error (a file that does not import, the disk, the database).
    Error = 1,
    /// 2: the command line or the configuration is wrong.
    Usage = 2,
    /// 3: the browser runs (its lock file exists); nothing was written.
    BrowserRunning = 3,
    /// 4: a safety rail refused (the failsafe on deletions, `undo` over a file changed since
    /// the sync); run again with `--force` if the change is right.
    NeedsForce = 4,
    /// 5: the bot or the vault could not be reached, did not answer in time, or refused.
    Vault = 5,
}

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 ok; 1 error; 2 usage or configuration; \
3 the browser runs (close it); 4 a safety rail refused (failsafe, or undo over a changed \
file: check, then --force); 5 the bot or vault is unreachable, silent or refused.";

/// A failure with its own exit code (any other error exits with 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The command line or the configuration.
    #[error("{0}")]
    Usage(String),
    /// The browser holds its profile.
    #[error("the browser seems to be running ({} exists): close it and try again", .0.display())]
    BrowserRunning(PathBuf),
    /// The failsafe refused the merge.
    #[error(transparent)]
    Failsafe(MergeError),
    /// `undo` would throw away changes made after the sync.
    #[error("{0}")]
    Changed(String),
    /// The vault refused the request.
    #[error("the vault refused: {0}")]
    Refused(String),
    /// No answer, or no connection.
    #[error("{0}")]
    Unreachable(String),
}

impl SyncError {
    /// The exit status for this failure.
    pub fn status(&self) -> ExitStatus {
        match self {
            SyncError::Usage(_) => ExitStatus::Usage,
            SyncError::BrowserRunning(_) => ExitStatus::BrowserRunning,
            SyncError::Failsafe(_) | SyncError::Changed(_) => ExitStatus::NeedsForce,
            SyncError::Refused(_) | SyncError::Unreachable(_) => ExitStatus::Vault,
        }
    }
}

/// The exit status for an error: the first [`SyncError`] in its chain decides, else 1.
pub fn exit_status(error: &anyhow::Error) -> ExitStatus {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<SyncError>())
        .map_or(ExitStatus::Error, SyncError::status)
}

/// The environment variable naming a step at which the client stops, for the crash tests
/// (`pulled`, `pending`, `pushed`, `renaming`, `written`): it prints
/// `sync-client: test pause at STEP` on stderr and waits until the file named by
/// [`TEST_RESUME`] exists (forever without it), so a test can kill it there or let it go on.
pub const TEST_PAUSE_AT: &str = "SYNC_CLIENT_TEST_PAUSE_AT";

/// See [`TEST_PAUSE_AT`].
pub const TEST_RESUME: &str = "SYNC_CLIENT_TEST_RESUME";

/// The crash tests' pause point named `step` (nothing unless [`TEST_PAUSE_AT`] names it).
pub fn pause_point(step: &str) {
    if std::env::var(TEST_PAUSE_AT).ok().as_deref() != Some(step) {
        return;
    }
    eprintln!("sync-client: test pause at {step}");
    let resume = std::env::var_os(TEST_RESUME).map(PathBuf::from);
    loop {
        if resume.as_deref().is_some_and(Path::exists) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh request id.
pub fn request_id() -> String {
    use rand_core::RngCore as _;
    format!("r{:016x}", rand_core::OsRng.next_u64())
}

/// How long to wait for an answer before sending the same request again.
pub const RESEND_AFTER: Duration = Duration::from_secs(5);

/// A progress bar on stderr for requests and answers of more than one part.
#[derive(Debug, Default)]
pub struct Progress {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A progress indicator that shows only if `enabled` (the caller checks that stderr is a
    /// terminal and that no JSON was asked for).
    pub fn new(enabled: bool) -> Self {
        Self { enabled, bar: None }
    }

    fn show(&mut self, what: &str, done: usize, total: usize) {
        if !self.enabled || total < 2 {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(0),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:8} {bar:40} {pos}/{len} parts")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        bar.set_message(what.to_owned());
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Sends `request` to `bot` and waits for its answer (from a trusted device of the bot).
/// Without an answer after [`RESEND_AFTER`], the same request (same id) goes again: the vault
/// answers a repeat as the first time, and the bot may not have known this device yet when it
/// answered (its answer was then encrypted for our other devices only).
///
/// # Errors
/// Sending failed, or no answer within `timeout` ([`SyncError::Unreachable`]).
pub async fn exchange(
    client: &Client,
    events: &mut ClientEvents,
    bot: &BareJid,
    request: &Request,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<Answer> {
    let parts = encode_request(request)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut assembler = Assembler::default();
    let mut received = std::collections::BTreeSet::new();
    let mut resend_at = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            progress.clear();
            return Err(SyncError::Unreachable(format!(
                "no answer from the vault within {timeout:?}"
            ))
            .into());
        }
        if now >= resend_at {
            if resend_at != now {
                tracing::info!(id = %request.id, "no answer yet; sending the request again");
            }
            for (i, part) in parts.iter().enumerate() {
                client
                    .send_sensitive(bot, vec![part.clone()])
                    .await
                    .context("cannot send a vault request")
                    .map_err(|e| SyncError::Unreachable(format!("{e:#}")))?;
                progress.show("sending", i + 1, parts.len());
            }
            resend_at = tokio::time::Instant::now() + RESEND_AFTER;
        }
        let event = match tokio::time::timeout_at(resend_at.min(deadline), events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                progress.clear();
                return Err(SyncError::Unreachable(
                    "the connection closed while waiting for the vault".into(),
                )
                .into());
            }
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
            if let Ok(part) = Part::parse(element) {
                if part.kind == Kind::Answer && part.id == request.id {
                    received.insert(part.part);
                    progress.show("receiving", received.len(), part.parts);
                }
            }
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
            progress.clear();
            return Ok(answer);
        }
    }
}

/// Which command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pull, merge, push, write the file.
    Sync,
    /// Pull, merge, write the file; push nothing.
    Pull,
    /// Pull, merge, push; leave the file as it is.
    Push,
    /// Pull and merge; change nothing (`status`, `--dry-run`).
    Preview,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The merge's diff: `local` is what changes in the file, `remote` in the vault.
    pub diff: Diff,
    /// The base's revision before the run.
    pub base_revision: u64,
    /// The vault's revision afterwards (for a preview: the one merged with).
    pub revision: u64,
    /// Pushes that met a conflict and were merged again.
    pub conflicts: usize,
    /// Whether something was pushed and taken.
    pub pushed: bool,
    /// Whether the browser's file was written.
    pub wrote_file: bool,
    /// The snapshot of the replaced file.
    pub snapshot: Option<PathBuf>,
    /// What was done about an interrupted earlier run.
    pub recovered: Option<Recovery>,
    /// A preview only: the failsafe would refuse this merge (without `--force`).
    pub failsafe: Option<String>,
}

/// The parameters of one run.
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
    /// What to do.
    pub mode: Mode,
    /// Merge past the failsafe.
    pub force: bool,
    /// Per answer.
    pub timeout: Duration,
    /// Show a progress bar for requests and answers of several parts.
    pub progress: bool,
}

/// What [`recover`] did with an interrupted run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The file had been written: the pending base became the base.
    Finished,
    /// The file had not been written yet: it was written, and the pending base became the
    /// base.
    Completed,
    /// Nothing of the interrupted run needs keeping (a pull that wrote nothing), or the file
    /// changed since in a way that matches neither side: the old base stays.
    Dropped,
}

impl Recovery {
    /// A word for the summary.
    pub fn name(self) -> &'static str {
        match self {
            Recovery::Finished => "finished",
            Recovery::Completed => "completed",
            Recovery::Dropped => "dropped",
        }
    }
}

/// What to do with a pending run, given the file's current digest.
fn plan(pending: &Pending, current: Option<[u8; 32]>) -> Recovery {
    if current == Some(pending.after) {
        Recovery::Finished
    } else if current == Some(pending.before) && pending.mode != PendingMode::Pull {
        Recovery::Completed
    } else {
        Recovery::Dropped
    }
}

fn digest_of(file: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(sha256(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn snapshot_label(what: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{what}-{}{:09}", now.as_secs(), now.subsec_nanos())
}

/// Finishes a run of (bot, vault) that was interrupted (killed, or cut off while waiting for
/// the vault), before anything else reads the base:
///
/// - the file is as the run would have written it: the pending base becomes the base;
/// - the file is as it was before the run (the run was killed before its write; a `pull`
///   excepted, which pushed nothing): the file is written now from the pending state, then
///   the pending base becomes the base. The run may already have pushed that state, so
///   dropping it could bring back, under new ids, items it gave ids to (duplicates);
/// - the file is neither (a browser ran in between): the pending base is dropped and the old
///   one stays. The next sync then sees at worst an item twice, never one less.
///
/// A revision of 0 stored with the base (a push whose answer never came) makes the next pull
/// fetch the whole vault, so nothing the pending state holds is taken as already pushed.
///
/// # Errors
/// [`SyncError::BrowserRunning`] when the file must be written and the browser runs; I/O and
/// database errors. The pending run is then kept.
pub fn recover(store: &mut SyncStore, bot: &str, vault: &str) -> anyhow::Result<Option<Recovery>> {
    let Some(pending) = store.pending(bot, vault)? else {
        return Ok(None);
    };
    remove_leftovers(&pending.file);
    let decision = plan(&pending, digest_of(&pending.file)?);
    tracing::warn!(
        file = %pending.file.display(),
        decision = decision.name(),
        "an earlier sync was interrupted"
    );
    match decision {
        Recovery::Finished => {
            let write = (pending.after != pending.before)
                .then(|| {
                    pending.snapshot.clone().map(|snapshot| LastWrite {
                        file: pending.file.clone(),
                        snapshot,
                        after: pending.after,
                        written: unix_now(),
                        undone: None,
                    })
                })
                .flatten()
                .filter(|w| w.snapshot.exists());
            store.finish(bot, vault, write.as_ref())?;
        }
        Recovery::Completed => {
            if let Some(lock) = browser_lock(&pending.file) {
                return Err(SyncError::BrowserRunning(lock).into());
            }
            let format: Format = pending
                .format
                .parse()
                .map_err(|e| anyhow::anyhow!("the interrupted sync's format: {e}"))?;
            let bytes = bookmarks::export(&materialize(&pending.state, format), format)?;
            let written = crate::write_back::write_atomic(
                &pending.file,
                &bytes,
                &snapshot_label("before-sync"),
            )
            .with_context(|| format!("cannot write {}", pending.file.display()))?;
            let write = written.snapshot.map(|snapshot| LastWrite {
                file: pending.file.clone(),
                snapshot,
                after: sha256(&bytes),
                written: unix_now(),
                undone: None,
            });
            store.finish(bot, vault, write.as_ref())?;
        }
        Recovery::Dropped => store.abandon(bot, vault)?,
    }
    Ok(Some(decision))
}

/// Removes the temporary files a write killed before its rename left next to `file`.
fn remove_leftovers(file: &Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(error = %e, "cannot remove a leftover temporary file");
            }
        }
    }
}

/// Runs `job` (see the module documentation).
///
/// # Errors
/// A running browser, a failed import, the failsafe, no answer, a refusal ([`SyncError`] for
/// those with their own exit code). The browser's file and the stored base are then as they
/// were, or (killed or cut off after the push) finished by the next run.
pub async fn run(
    client: &Client,
    events: &mut ClientEvents,
    store: &mut SyncStore,
    job: &SyncJob<'_>,
) -> anyhow::Result<Outcome> {
    let (bot, vault) = (job.bot.as_str(), job.vault);
    let preview = job.mode == Mode::Preview;
    if !preview {
        if let Some(lock) = browser_lock(job.file) {
            return Err(SyncError::BrowserRunning(lock).into());
        }
    }
    let before_bytes =
        std::fs::read(job.file).with_context(|| format!("cannot read {}", job.file.display()))?;
    let (recovered, base, bytes) = if preview {
        // What recovery would do, in memory.
        let base = store.load(bot, vault)?;
        let pending = store.pending(bot, vault)?;
        match pending.map(|p| {
            let decision = plan(&p, Some(sha256(&before_bytes)));
            (p, decision)
        }) {
            Some((p, decision @ (Recovery::Completed | Recovery::Finished))) => {
                let bytes = if decision == Recovery::Completed {
                    bookmarks::export(&materialize(&p.state, job.format), job.format)?
                } else {
                    before_bytes
                };
                let base = Base {
                    revision: p.revision,
                    state: p.state,
                    synced: None,
                };
                (Some(decision), base, bytes)
            }
            Some((_, decision)) => (Some(decision), base, before_bytes),
            None => (None, base, before_bytes),
        }
    } else {
        let recovered = recover(store, bot, vault)?;
        let bytes = if recovered == Some(Recovery::Completed) {
            std::fs::read(job.file)
                .with_context(|| format!("cannot read {}", job.file.display()))?
        } else {
            before_bytes
        };
        (recovered, store.load(bot, vault)?, bytes)
    };
    let tree = bookmarks::import(&bytes, job.format)
        .with_context(|| format!("cannot import {}", job.file.display()))?;
    let before = sha256(&bytes);
    let replica = u64::from(client.manager().own().device_id.get());
    let local = record(
        &base.state,
        &tree,
        job.format,
        replica,
        &mut rand_core::OsRng,
    )?;
    let options = MergeOptions {
        force: job.force || preview,
        ..MergeOptions::default()
    };
    let strict = MergeOptions {
        force: job.force,
        ..MergeOptions::default()
    };
    let mut progress = Progress::new(job.progress);
    let mut conflicts = 0;
    loop {
        let answer = exchange(
            client,
            events,
            job.bot,
            &Request {
                id: request_id(),
                vault: vault.to_owned(),
                op: Op::Pull {
                    since: base.revision,
                },
            },
            job.timeout,
            &mut progress,
        )
        .await?;
        tracing::info!(answer = %describe(&answer), "pull answered");
        let (revision, remote) = match answer {
            Answer::State {
                revision,
                full,
                state,
            } => (revision, apply_pull(&base.state, full, state)),
            other => return Err(refusal(&other, "pull")),
        };
        pause_point("pulled");
        if preview {
            let merged =
                merge(&base.state, &local, &remote, &options).map_err(|e| anyhow::anyhow!(e))?;
            let failsafe = merge(&base.state, &local, &remote, &strict)
                .err()
                .map(|e| e.to_string());
            return Ok(Outcome {
                diff: merged.diff,
                base_revision: base.revision,
                revision,
                conflicts,
                pushed: false,
                wrote_file: false,
                snapshot: None,
                recovered,
                failsafe,
            });
        }
        let merged = merge(&base.state, &local, &remote, &options).map_err(|e| match e {
            e @ MergeError::TooManyDeletions { .. } => anyhow::Error::from(SyncError::Failsafe(e)),
            e => anyhow::anyhow!(e),
        })?;
        let write = job.mode != Mode::Push && !merged.diff.local.is_empty();
        let after_bytes = if write {
            Some(bookmarks::export(
                &materialize(&merged.state, job.format),
                job.format,
            )?)
        } else {
            None
        };
        let label = snapshot_label("before-sync");
        let snapshot = write
            .then(|| crate::write_back::snapshot_path(job.file, &label))
            .transpose()?;
        // A clock that moved with no item changed is no change: pushing it would make a new
        // revision out of nothing.
        let push = job.mode != Mode::Pull
            && (merged.state.items != remote.items || merged.state.tombstones != remote.tombstones);
        // The base this run ends with, and its revision while a push is unanswered.
        let (mode, state, settled_revision) = match job.mode {
            Mode::Pull => (PendingMode::Pull, remote.clone(), revision),
            Mode::Push => {
                let mut state = local.clone();
                // What was seen advances the clock, even if the file does not show it yet.
                state.clock = state.clock.max(merged.state.clock);
                (PendingMode::Push, state, base.revision)
            }
            _ => (PendingMode::Sync, merged.state.clone(), revision),
        };
        store.begin(
            bot,
            vault,
            &Pending {
                mode,
                file: job.file.to_owned(),
                format: job.format.name().to_owned(),
                state,
                revision: if push { 0 } else { settled_revision },
                before,
                after: after_bytes.as_deref().map_or(before, sha256),
                snapshot: snapshot.clone(),
            },
        )?;
        pause_point("pending");
        let mut new_revision = revision;
        if push {
            let answer = exchange(
                client,
                events,
                job.bot,
                &Request {
                    id: request_id(),
                    vault: vault.to_owned(),
                    op: Op::Push {
                        base: revision,
                        delta: push_delta(&remote, &merged.state),
                    },
                },
                job.timeout,
                &mut progress,
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
                other => {
                    // A refused push changed nothing in the vault: nothing to finish.
                    store.abandon(bot, vault)?;
                    return Err(refusal(&other, "push"));
                }
            }
            store.pushed(
                bot,
                vault,
                if job.mode == Mode::Push {
                    settled_revision
                } else {
                    new_revision
                },
            )?;
            pause_point("pushed");
        }
        let mut written_snapshot = None;
        if let Some(bytes) = &after_bytes {
            if let Some(lock) = browser_lock(job.file) {
                // The pending base stays: the next run writes the file.
                return Err(SyncError::BrowserRunning(lock).into());
            }
            let written = crate::write_back::write_atomic_with(job.file, bytes, &label, || {
                pause_point("renaming")
            })
            .with_context(|| format!("cannot write {}", job.file.display()))?;
            pause_point("written");
            written_snapshot = written.snapshot;
        }
        let last_write = written_snapshot.as_ref().map(|snapshot| LastWrite {
            file: job.file.to_owned(),
            snapshot: snapshot.clone(),
            after: after_bytes.as_deref().map_or(before, sha256),
            written: unix_now(),
            undone: None,
        });
        store.finish(bot, vault, last_write.as_ref())?;
        return Ok(Outcome {
            diff: merged.diff,
            base_revision: base.revision,
            revision: new_revision,
            conflicts,
            pushed: push,
            wrote_file: write,
            snapshot: written_snapshot,
            recovered,
            failsafe: None,
        });
    }
}

fn refusal(answer: &Answer, what: &str) -> anyhow::Error {
    match answer {
        Answer::Refused { reason } => SyncError::Refused(reason.clone()).into(),
        other => anyhow::anyhow!("the vault did not answer the {what}: {}", describe(other)),
    }
}

/// What `undo` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undone {
    /// The snapshot restored.
    pub restored: PathBuf,
    /// The copy of the file it replaced.
    pub snapshot: Option<PathBuf>,
}

/// `undo`: puts back the copy of the browser's file taken before the last write of (bot,
/// vault), and records that it did.
///
/// The base stays the state of the sync being undone. So the next sync sees the file's return
/// to its earlier content as local edits, newer than everything of that sync: what the sync
/// brought in is deleted again, what it changed is changed back, what it deleted comes back
/// (as new items where the format has no ids), and these go to the vault like any edit, the
/// failsafe included. Changes the file had pushed in that sync stay. Keeping the older base
/// instead would make the next sync bring everything back and give the file's own new items
/// new ids (duplicates in the vault).
///
/// # Errors
/// [`SyncError::BrowserRunning`]; nothing to undo; an interrupted sync not finished yet;
/// [`SyncError::Changed`] when the file changed since the write (unless `force`).
pub fn undo(
    store: &SyncStore,
    bot: &str,
    vault: &str,
    file: &Path,
    force: bool,
) -> anyhow::Result<Undone> {
    if let Some(lock) = browser_lock(file) {
        return Err(SyncError::BrowserRunning(lock).into());
    }
    if store.pending(bot, vault)?.is_some() {
        anyhow::bail!("an interrupted sync is not finished yet: run `sync-client sync` first");
    }
    let last = match store.last_write(bot, vault)? {
        Some(last) if last.undone.is_none() => last,
        Some(_) => anyhow::bail!("the last write was already undone"),
        None => anyhow::bail!("nothing to undo: no sync wrote {} yet", file.display()),
    };
    if last.file != file {
        anyhow::bail!(
            "the last sync of this vault wrote {}, not {}",
            last.file.display(),
            file.display()
        );
    }
    if !force && digest_of(file)? != Some(last.after) {
        return Err(SyncError::Changed(format!(
            "{} changed after the last sync; undo would lose those changes (--force to undo anyway)",
            file.display()
        ))
        .into());
    }
    let bytes = std::fs::read(&last.snapshot)
        .with_context(|| format!("cannot read the snapshot {}", last.snapshot.display()))?;
    let written = crate::write_back::write_atomic(file, &bytes, &snapshot_label("before-undo"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    store.undone(bot, vault, unix_now())?;
    Ok(Undone {
        restored: last.snapshot,
        snapshot: written.snapshot,
    })
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
    use bookmarks::sync::State;

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

    fn pending(mode: PendingMode) -> Pending {
        Pending {
            mode,
            file: PathBuf::from("b.html"),
            format: "netscape-html".into(),
            state: State::default(),
            revision: 0,
            before: sha256(b"old"),
            after: sha256(b"new"),
            snapshot: None,
        }
    }

    #[test]
    fn recovery_follows_the_file() {
        let sync = pending(PendingMode::Sync);
        assert_eq!(plan(&sync, Some(sha256(b"new"))), Recovery::Finished);
        assert_eq!(plan(&sync, Some(sha256(b"old"))), Recovery::Completed);
        assert_eq!(plan(&sync, Some(sha256(b"edited"))), Recovery::Dropped);
        assert_eq!(plan(&sync, None), Recovery::Dropped);
        // A pull pushed nothing: unwritten, it is dropped.
        let pull = pending(PendingMode::Pull);
        assert_eq!(plan(&pull, Some(sha256(b"old"))), Recovery::Dropped);
        assert_eq!(plan(&pull, Some(sha256(b"new"))), Recovery::Finished);
    }

    #[test]
    fn the_progress_bar_shows_only_when_asked_and_for_several_parts() {
        let mut off = Progress::new(false);
        off.show("sending", 1, 10);
        assert!(off.bar.is_none());
        let mut on = Progress::new(true);
        on.show("sending", 1, 1);
        assert!(on.bar.is_none(), "a one-part message needs no bar");
        on.show("receiving", 3, 10);
        let bar = on.bar.as_ref().unwrap();
        assert_eq!((bar.position(), bar.length()), (3, Some(10)));
        on.clear();
        assert!(on.bar.is_none());
    }

    #[test]
    fn errors_map_to_their_exit_codes() {
        let cases: [(anyhow::Error, ExitStatus); 6] = [
            (anyhow::anyhow!("disk full"), ExitStatus::Error),
            (SyncError::Usage("no --to".into()).into(), ExitStatus::Usage),
            (
                SyncError::BrowserRunning(PathBuf::from("lock")).into(),
                ExitStatus::BrowserRunning,
            ),
            (
                SyncError::Changed("x".into()).into(),
                ExitStatus::NeedsForce,
            ),
            (SyncError::Refused("no".into()).into(), ExitStatus::Vault),
            (
                anyhow::Error::from(SyncError::Unreachable("silent".into()))
                    .context("while syncing"),
                ExitStatus::Vault,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(exit_status(&error), status, "{error:#}");
        }
    }
}
