//! `sync-client`: sends a browser's bookmarks end-to-end encrypted (OMEMO 2) to the echo bot
//! and verifies the encrypted answers; shows and manages the trust in devices.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use app_common::config::{self, read_config_file, AccountArgs, AccountFile};
use app_common::shutdown::{Shutdown, GRACE};
use app_common::trust::{self, Reach, TrustCommand};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use sync_client::bookmarks::{self, Format};
use sync_client::send::{send_transfer, ChunkOutcome};
use sync_client::store::SyncStore;
use sync_client::sync::{exit_status, ExitStatus, Mode, SyncError, EXIT_CODES_HELP};
use sync_client::transfer::Transfer;
use xmpp_core::client::Client;
use xmpp_core::jid::BareJid;
use xmpp_core::settings::AccountSettings;

/// End-to-end encrypted bookmark sync over XMPP (OMEMO 2).
#[derive(Debug, Parser)]
#[command(name = "sync-client", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send bookmarks to the bot, encrypted, and verify every encrypted answer.
    Send(SendArgs),
    /// Merge the browser's bookmarks with the bot's vault, push, and write the result back.
    #[command(after_help = EXIT_CODES_HELP)]
    Sync(SyncArgs),
    /// Merge the vault into the browser's file; push nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Pull(SyncArgs),
    /// Push the browser's changes to the vault; leave the browser's file as it is.
    #[command(after_help = EXIT_CODES_HELP)]
    Push(SyncArgs),
    /// What a sync would change on each side, the revisions and the last sync; writes nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(TargetArgs),
    /// Put back the browser's file as it was before the last sync wrote it.
    #[command(after_help = EXIT_CODES_HELP)]
    Undo(UndoArgs),
    /// Fingerprint, devices, trust and distrust (shared with echo-bot).
    #[command(flatten)]
    Trust(TrustCommand),
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    #[command(flatten)]
    account: AccountArgs,
    /// The bot's JID.
    #[arg(long, env = "SYNC_TO")]
    to: Option<String>,
    /// Bookmarks file (default: the Falkon profile's bookmarks.json, if found).
    #[arg(long, env = "SYNC_FILE")]
    file: Option<PathBuf>,
    /// Input format: auto, falkon, firefox-json, firefox-jsonlz4, chromium, netscape-html, xbel, canonical.
    #[arg(long, env = "SYNC_FORMAT", default_value = "auto")]
    format: String,
    /// Seconds to wait for each answer.
    #[arg(long, env = "SYNC_TIMEOUT")]
    timeout: Option<u64>,
    /// Print the summary as JSON (no progress bar).
    #[arg(long)]
    json: bool,
    /// Write the bookmarks as they came back from the bot (reassembled from the echoes) to
    /// FILE, as canonical JSON, once every chunk is verified.
    #[arg(long, value_name = "FILE")]
    save_echo: Option<PathBuf>,
}

/// The account, the vault and the browser's file.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    #[command(flatten)]
    account: AccountArgs,
    /// The bot's JID.
    #[arg(long, env = "SYNC_TO")]
    to: Option<String>,
    /// The vault's name (as in the bot's `[sync.vault.NAME]`).
    #[arg(long, env = "SYNC_VAULT")]
    vault: Option<String>,
    /// Bookmarks file (default: the Falkon profile's bookmarks.json, if found).
    #[arg(long, env = "SYNC_FILE")]
    file: Option<PathBuf>,
    /// Format of the file: auto, falkon, firefox-json, firefox-jsonlz4, chromium, netscape-html, xbel, canonical.
    #[arg(long, env = "SYNC_FORMAT", default_value = "auto")]
    format: String,
    /// Seconds to wait for each answer of the vault.
    #[arg(long, env = "SYNC_TIMEOUT")]
    timeout: Option<u64>,
    /// Print the summary as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SyncArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Show what would change on each side; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Merge even when the failsafe refuses (more than 20 % or 1,000 deletions on a side).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct UndoArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Restore even though the file changed after the last sync (those changes are lost).
    #[arg(long)]
    force: bool,
}

/// The configuration file: `[account]` and `[sync]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    account: AccountFile,
    #[serde(default)]
    sync: SyncSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncSection {
    to: Option<String>,
    vault: Option<String>,
    file: Option<PathBuf>,
    format: Option<String>,
    timeout: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Command::Send(a) => a.account.verbose,
        Command::Sync(a) | Command::Pull(a) | Command::Push(a) => a.target.account.verbose,
        Command::Status(a) => a.account.verbose,
        Command::Undo(a) => a.target.account.verbose,
        Command::Trust(command) => command.account().verbose,
    };
    app_common::logging::init(verbose, "warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sync-client: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut shutdown = Shutdown::install().context("cannot install the signal handlers")?;
        // A stop request drops the command where it is: every store update is one
        // transaction, and a transfer that was cut short can be sent again.
        tokio::select! {
            result = run(cli) => result,
            signal = shutdown.requested() => bail!("stopped by {signal}"),
        }
    });
    // A database transaction in flight gets a moment to commit.
    runtime.shutdown_timeout(GRACE);
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("sync-client: {}", app_common::logging::one_line(e.as_ref()));
            ExitCode::from(exit_status(&e) as u8)
        }
    }
}

fn settings(account: &AccountArgs) -> anyhow::Result<(AccountSettings, ConfigFile)> {
    let file: ConfigFile = read_config_file(account.config.as_deref())?;
    let settings = config::resolve(
        account,
        &file.account,
        std::env::var("XMPP_PASSWORD").ok(),
        "sync-client",
    )?;
    config::reset_if_asked(account, &settings)?;
    Ok((settings, file))
}

fn parse_jid(jid: &str) -> anyhow::Result<BareJid> {
    BareJid::new(jid).with_context(|| format!("invalid JID {jid:?}"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Send(args) => send(args).await.map(|_| ExitStatus::Ok),
        Command::Sync(args) => {
            let mode = if args.dry_run {
                Mode::Preview
            } else {
                Mode::Sync
            };
            sync(args, mode, "sync").await
        }
        Command::Pull(args) => {
            let mode = if args.dry_run {
                Mode::Preview
            } else {
                Mode::Pull
            };
            sync(args, mode, "pull").await
        }
        Command::Push(args) => {
            let mode = if args.dry_run {
                Mode::Preview
            } else {
                Mode::Push
            };
            sync(args, mode, "push").await
        }
        Command::Status(target) => status(target).await,
        Command::Undo(args) => undo(args),
        Command::Trust(command) => {
            let (settings, _) = settings(command.account())?;
            trust::run(&command, &settings, Reach::Connect).await?;
            Ok(ExitStatus::Ok)
        }
    }
}

fn default_bookmarks_file() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    let candidate = config.join("falkon/profiles/default/bookmarks.json");
    candidate.is_file().then_some(candidate)
}

async fn send(args: SendArgs) -> anyhow::Result<bool> {
    let (settings, file) = settings(&args.account)?;
    let to = args
        .to
        .or(file.sync.to)
        .context("no bot JID: give --to (or `to` under [sync])")?;
    let bot = parse_jid(&to)?;
    let path = args
        .file
        .or(file.sync.file)
        .or_else(default_bookmarks_file)
        .context("no bookmarks file: give --file (no Falkon profile was found)")?;
    let format_name = if args.format == "auto" {
        file.sync.format.unwrap_or_else(|| "auto".to_owned())
    } else {
        args.format
    };
    let format = match format_name.as_str() {
        "auto" => None,
        name => Some(
            name.parse::<Format>()
                .with_context(|| format!("--format {name}"))?,
        ),
    };
    let timeout = Duration::from_secs(args.timeout.or(file.sync.timeout).unwrap_or(30));

    // Everything that can fail on the input fails here, before anything is sent.
    let (format, tree) = bookmarks::import_file(&path, format)
        .with_context(|| format!("cannot import {}", path.display()))?;
    let stats = tree.stats();
    let transfer_id = format!("{:08x}", rand_id());
    let transfer = Transfer::new(&tree, &transfer_id)?;
    tracing::info!(
        %format,
        bookmarks = stats.bookmarks,
        chunks = transfer.chunks.len(),
        transfer = %transfer.transfer_id,
        "bookmarks imported"
    );

    let (client, mut events) = Client::start(&settings)
        .await
        .with_context(|| format!("cannot start as {}", settings.jid))?;
    let bar = (!args.json && transfer.chunks.len() > 1).then(|| {
        let bar = indicatif::ProgressBar::new(transfer.chunks.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chunks {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let summary = send_transfer(&client, &mut events, &bot, &transfer, timeout, |done| {
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    client.close().await;

    let verified = summary
        .chunks
        .iter()
        .filter(|c| matches!(c, ChunkOutcome::Verified { .. }))
        .count();
    let echoed = match &summary.echoed {
        Some(Ok(echoed)) => Some(echoed),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the echoes do not reassemble");
            None
        }
        None => None,
    };
    if let (Some(echoed), Some(path)) = (echoed, &args.save_echo) {
        let json = echoed.tree.to_canonical_json()?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let echo_matches = echoed.is_some_and(|e| e.matches);
    let ok =
        summary.all_verified() && summary.chunks.len() == transfer.chunks.len() && echo_matches;
    if args.json {
        let report = serde_json::json!({
            "ok": ok,
            "to": bot.as_str(),
            "format": format.name(),
            "bookmarks": stats.bookmarks,
            "folders": stats.folders,
            "separators": stats.separators,
            "document_bytes": transfer.document_bytes,
            "compressed_bytes": transfer.compressed_bytes,
            "chunks": transfer.chunks.len(),
            "transfer_id": transfer.transfer_id,
            "document_sha256": transfer.document_sha256,
            "verified_chunks": verified,
            "echoed": echoed.map(|e| serde_json::json!({
                "bookmarks": e.stats.bookmarks,
                "folders": e.stats.folders,
                "separators": e.stats.separators,
                "document_sha256": e.document_sha256,
                "matches": e.matches,
            })),
            "stale_echoes": summary.stale_echoes.len(),
            "stale_echo_chunks": summary.stale_echoes,
            "key_exchange_answers": summary.key_exchange_answers,
            "unencrypted_replies": summary.unencrypted_replies,
            "seconds": summary.elapsed.as_secs_f64(),
            "bot_devices": summary.answering_devices().iter()
                .map(|(d, t)| serde_json::json!({"device": d, "trust": t}))
                .collect::<Vec<_>>(),
            "outcomes": summary.chunks,
        });
        println!("{report}");
    } else {
        println!(
            "{} bookmarks in {} folders ({}): {} bytes, {} compressed, {} chunk(s)",
            stats.bookmarks,
            stats.folders,
            format,
            transfer.document_bytes,
            transfer.compressed_bytes,
            transfer.chunks.len()
        );
        println!(
            "{verified}/{} chunks verified in {:.2?}",
            transfer.chunks.len(),
            summary.elapsed
        );
        for (device, trust) in summary.answering_devices() {
            println!("answered by {bot} device {device}, trust level {trust}");
        }
        if summary.unencrypted_replies > 0 {
            println!(
                "{} unencrypted repl{} dropped",
                summary.unencrypted_replies,
                if summary.unencrypted_replies == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
        }
        if let Some(echoed) = echoed {
            println!(
                "the echoes reassemble to {} bookmarks in {} folders, {} the sent document",
                echoed.stats.bookmarks,
                echoed.stats.folders,
                if echoed.matches {
                    "identical to"
                } else {
                    "DIFFERENT from"
                }
            );
        }
        if !summary.stale_echoes.is_empty() {
            let mut transfers: Vec<&str> = summary
                .stale_echoes
                .iter()
                .map(|s| s.transfer_id.as_str())
                .collect();
            transfers.sort_unstable();
            transfers.dedup();
            println!(
                "{} late echo(es) of earlier, interrupted transfer(s) {} ignored",
                summary.stale_echoes.len(),
                transfers.join(", ")
            );
        }
        if let Some(failure) = summary
            .chunks
            .iter()
            .find(|c| !matches!(c, ChunkOutcome::Verified { .. }))
        {
            println!("failed: {failure:?}");
        }
    }
    if !ok {
        if verified == transfer.chunks.len() {
            bail!("the echoed chunks do not reassemble to the sent document");
        }
        bail!(
            "only {verified} of {} chunks came back verified",
            transfer.chunks.len()
        );
    }
    Ok(true)
}

fn resolve_format(
    args_format: String,
    configured: Option<String>,
) -> anyhow::Result<Option<Format>> {
    let name = if args_format == "auto" {
        configured.unwrap_or_else(|| "auto".to_owned())
    } else {
        args_format
    };
    match name.as_str() {
        "auto" => Ok(None),
        name => Ok(Some(
            name.parse::<Format>()
                .with_context(|| format!("--format {name}"))?,
        )),
    }
}

/// A target resolved from flags, environment and configuration.
struct Target {
    settings: AccountSettings,
    bot: BareJid,
    vault: String,
    file: PathBuf,
    format: Option<Format>,
    timeout: Duration,
    json: bool,
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    SyncError::Usage(e.to_string()).into()
}

fn target(args: TargetArgs) -> anyhow::Result<Target> {
    let (settings, file) = settings(&args.account).map_err(|e| usage(format!("{e:#}")))?;
    let to = args
        .to
        .or(file.sync.to)
        .ok_or_else(|| usage("no bot JID: give --to (or `to` under [sync])"))?;
    let bot = parse_jid(&to).map_err(|e| usage(format!("{e:#}")))?;
    let vault = args
        .vault
        .or(file.sync.vault)
        .ok_or_else(|| usage("no vault: give --vault (or `vault` under [sync])"))?;
    let path = args
        .file
        .or(file.sync.file)
        .or_else(default_bookmarks_file)
        .ok_or_else(|| usage("no bookmarks file: give --file (no Falkon profile was found)"))?;
    let format =
        resolve_format(args.format, file.sync.format).map_err(|e| usage(format!("{e:#}")))?;
    Ok(Target {
        settings,
        bot,
        vault,
        file: path,
        format,
        timeout: Duration::from_secs(args.timeout.or(file.sync.timeout).unwrap_or(60)),
        json: args.json,
    })
}

fn progress_wanted(json: bool) -> bool {
    use std::io::IsTerminal as _;
    !json && std::io::stderr().is_terminal()
}

/// Connects, runs `mode` and closes.
async fn run_job(
    target: &Target,
    mode: Mode,
    force: bool,
) -> anyhow::Result<(Format, sync_client::sync::Outcome)> {
    use sync_client::sync::browser_lock;
    if mode != Mode::Preview {
        if let Some(lock) = browser_lock(&target.file) {
            return Err(SyncError::BrowserRunning(lock).into());
        }
    }
    // The file is read (and its format detected) before connecting.
    let (format, _) = bookmarks::import_file(&target.file, target.format)
        .with_context(|| format!("cannot import {}", target.file.display()))?;
    let mut store = SyncStore::open(&SyncStore::path_for(&target.settings.db))?;
    let (client, mut events) = Client::start(&target.settings).await.map_err(|e| {
        SyncError::Unreachable(format!(
            "cannot start as {}: {}",
            target.settings.jid,
            app_common::logging::one_line(&e)
        ))
    })?;
    let job = sync_client::sync::SyncJob {
        bot: &target.bot,
        vault: &target.vault,
        file: &target.file,
        format,
        mode,
        force,
        timeout: target.timeout,
        progress: progress_wanted(target.json),
    };
    let outcome = sync_client::sync::run(&client, &mut events, &mut store, &job).await;
    client.close().await;
    Ok((format, outcome?))
}

async fn sync(args: SyncArgs, mode: Mode, command: &str) -> anyhow::Result<ExitStatus> {
    let target = target(args.target)?;
    let (_, outcome) = run_job(&target, mode, args.force).await?;
    let dry_run = mode == Mode::Preview;
    if target.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": outcome.failsafe.is_none(),
                "command": command,
                "dry_run": dry_run,
                "base_revision": outcome.base_revision,
                "revision": outcome.revision,
                "local_changes": outcome.diff.local.len(),
                "remote_changes": outcome.diff.remote.len(),
                "conflicts": outcome.diff.conflicts.len(),
                "cas_retries": outcome.conflicts,
                "pushed": outcome.pushed,
                "wrote_file": outcome.wrote_file,
                "snapshot": outcome.snapshot,
                "recovered": outcome.recovered.map(|r| r.name()),
                "failsafe": outcome.failsafe,
            })
        );
    } else {
        if let Some(recovery) = outcome.recovered {
            println!("an interrupted sync was {}", recovery.name());
        }
        print!("{}", outcome.diff.to_text());
        if dry_run {
            if let Some(failsafe) = &outcome.failsafe {
                println!("{failsafe}");
            }
            println!(
                "dry run: nothing changed (vault revision {})",
                outcome.revision
            );
        } else {
            println!(
                "{command}: {} vault {:?} at revision {}{}{}",
                target.bot,
                target.vault,
                outcome.revision,
                if outcome.pushed { ", pushed" } else { "" },
                if outcome.wrote_file {
                    format!(", {} written", target.file.display())
                } else {
                    String::new()
                }
            );
        }
    }
    // A dry run the failsafe would refuse says so in its exit code too.
    if outcome.failsafe.is_some() {
        return Ok(ExitStatus::NeedsForce);
    }
    Ok(ExitStatus::Ok)
}

async fn status(args: TargetArgs) -> anyhow::Result<ExitStatus> {
    let target = target(args)?;
    let (format, outcome) = run_job(&target, Mode::Preview, false).await?;
    let store = SyncStore::open(&SyncStore::path_for(&target.settings.db))?;
    let base = store.load(target.bot.as_str(), &target.vault)?;
    let last_write = store.last_write(target.bot.as_str(), &target.vault)?;
    let pending = store.pending(target.bot.as_str(), &target.vault)?.is_some();
    if target.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "command": "status",
                "file": target.file,
                "format": format.name(),
                "base_revision": base.revision,
                "vault_revision": outcome.revision,
                "last_sync": base.synced,
                "interrupted_sync": pending,
                "local_changes": outcome.diff.local.len(),
                "remote_changes": outcome.diff.remote.len(),
                "conflicts": outcome.diff.conflicts.len(),
                "failsafe": outcome.failsafe,
                "last_write": last_write.as_ref().map(|w| serde_json::json!({
                    "written": w.written,
                    "snapshot": w.snapshot,
                    "undone": w.undone,
                })),
            })
        );
    } else {
        println!("{} ({format})", target.file.display());
        println!(
            "vault {:?} of {}: revision {}; this machine last synced revision {}{}",
            target.vault,
            target.bot,
            outcome.revision,
            base.revision,
            base.synced
                .map(|t| format!(" at {t} (Unix time)"))
                .unwrap_or_default()
        );
        if pending {
            println!("an interrupted sync will be finished by the next sync");
        }
        print!("{}", outcome.diff.to_text());
        if let Some(failsafe) = &outcome.failsafe {
            println!("{failsafe}");
        }
        if let Some(w) = last_write {
            println!(
                "last write {} (snapshot {}){}",
                w.written,
                w.snapshot.display(),
                if w.undone.is_some() { ", undone" } else { "" }
            );
        }
    }
    Ok(ExitStatus::Ok)
}

fn undo(args: UndoArgs) -> anyhow::Result<ExitStatus> {
    let json = args.target.json;
    let target = target(args.target)?;
    let store = SyncStore::open(&SyncStore::path_for(&target.settings.db))?;
    let undone = sync_client::sync::undo(
        &store,
        target.bot.as_str(),
        &target.vault,
        &target.file,
        args.force,
    )?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "command": "undo",
                "restored": undone.restored,
                "snapshot": undone.snapshot,
            })
        );
    } else {
        println!(
            "{} restored from {}; the next sync sends this as your change",
            target.file.display(),
            undone.restored.display()
        );
    }
    Ok(ExitStatus::Ok)
}

fn rand_id() -> u32 {
    use rand_core::RngCore as _;
    rand_core::OsRng.next_u32()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let mut cli = super::Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(help.contains("Exit codes: 0 ok"), "{help}");
        for command in ["sync", "pull", "push", "status", "undo"] {
            let help = cli
                .find_subcommand_mut(command)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(help.contains("3 the browser runs"), "{command}: {help}");
        }
    }
}
