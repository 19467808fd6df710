//! `echo-bot`: logs into an XMPP account, publishes its OMEMO device (OMEMO 2 and legacy
//! OMEMO, one device id and identity) and answers every OMEMO-encrypted message with an
//! encrypted `Your message: <body>`, in the version the message came in. Its subcommands show
//! and change the trust in other devices, on the bot's database (also while it runs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use app_common::config::{self, read_config_file, AccountArgs, AccountFile};
use app_common::shutdown::{Shutdown, GRACE};
use app_common::trust::{self, Reach, TrustCommand};
use clap::Parser;
use serde::Deserialize;
use xmpp_core::client::{Answers, Client, ClientEvent};
use xmpp_core::jid::BareJid;
use xmpp_core::omemo::{OmemoError, Receipt, SendReport};

mod echo;
mod vault;

use echo::{decide, Action, PlaintextReply, PLAINTEXT_NOTICE};
use vault::{carries_vault, SyncSection, VaultRole};

/// OMEMO echo bot (OMEMO 2 and legacy OMEMO): answers every encrypted message with an
/// encrypted `Your message: <body>`, in the version it came in.
#[derive(Debug, Parser)]
#[command(
    name = "echo-bot",
    version,
    after_help = "Without a command the bot runs until SIGINT or SIGTERM. The commands work on \
                  the bot's database only (no connection, no password needed), also while the \
                  bot runs: it applies a trust decision from the next message on."
)]
struct Cli {
    #[command(flatten)]
    account: AccountArgs,
    /// What to do with unencrypted messages: ignore them, or answer with a short plaintext
    /// notice (they are never echoed).
    #[arg(long, env = "ECHO_PLAINTEXT_REPLY", value_enum)]
    plaintext_reply: Option<PlaintextReply>,
    #[command(subcommand)]
    command: Option<TrustCommand>,
}

/// The configuration file: `[account]` and `[echo]` tables, and optionally a file to take
/// `[account]` values from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// A TOML file whose `[account]` values replace this file's (for settings a launcher
    /// writes, such as the demo server's port). Relative paths are taken from the current
    /// directory, as every path in the file.
    include: Option<PathBuf>,
    #[serde(default)]
    account: AccountFile,
    #[serde(default)]
    echo: EchoSection,
    /// The vault role (`[sync.vault.NAME] allow = [...]`); off without a vault.
    #[serde(default)]
    sync: SyncSection,
}

/// An included file: only `[account]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludedFile {
    #[serde(default)]
    account: AccountFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoSection {
    plaintext_reply: Option<PlaintextReply>,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = &mut cli.command {
        merge_account_args(&cli.account, command.account_mut());
    }
    let verbose = match &cli.command {
        Some(command) => command.account().verbose,
        None => cli.account.verbose,
    };
    app_common::logging::init(
        verbose,
        if cli.command.is_some() {
            "warn"
        } else {
            "info"
        },
    );
    // One thread runs the connection: the OMEMO work has its own store thread, and a second
    // runtime thread only added hand-offs between the two (measured: about a tenth of the
    // bot's CPU per echo under a burst).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("echo-bot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(command) => run_command(&command).await,
            None => run(&cli.account, cli.plaintext_reply).await,
        }
    });
    // Blocking database work still under way gets a moment to commit; nothing else waits.
    runtime.shutdown_timeout(GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-bot: {}", app_common::logging::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `echo-bot --config FILE trust ...` and `echo-bot trust --config FILE ...` mean the same:
/// the command's own flags win, the ones before it fill in.
fn merge_account_args(top: &AccountArgs, command: &mut AccountArgs) {
    fn fill<T: Clone>(own: &mut Option<T>, top: &Option<T>) {
        if own.is_none() {
            own.clone_from(top);
        }
    }
    fill(&mut command.config, &top.config);
    fill(&mut command.jid, &top.jid);
    fill(&mut command.password_file, &top.password_file);
    fill(&mut command.server, &top.server);
    fill(&mut command.ca_file, &top.ca_file);
    fill(&mut command.db, &top.db);
    fill(&mut command.label, &top.label);
    if command.trust_policy.is_none() {
        command.trust_policy = top.trust_policy;
    }
    command.insecure_plaintext |= top.insecure_plaintext;
    command.verbose = command.verbose.max(top.verbose);
}

/// Reads the configuration file and the file it includes, if any.
fn read_config(path: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let mut file: ConfigFile = read_config_file(path)?;
    let (Some(path), Some(include)) = (path, file.include.clone()) else {
        return Ok(file);
    };
    if !include.exists() {
        bail!(
            "{} takes its server settings from {}, which does not exist: for the demo \
             configuration, start the demo server first (`just up-server`, or `just up`); for \
             your own server, remove the `include` line",
            path.display(),
            include.display()
        );
    }
    let included: IncludedFile = read_config_file(Some(&include))?;
    let (account, extra) = (&mut file.account, included.account);
    fn take<T>(own: &mut Option<T>, extra: Option<T>) {
        if extra.is_some() {
            *own = extra;
        }
    }
    take(&mut account.jid, extra.jid);
    take(&mut account.password, extra.password);
    take(&mut account.password_file, extra.password_file);
    take(&mut account.server, extra.server);
    take(&mut account.ca_file, extra.ca_file);
    take(&mut account.insecure_plaintext, extra.insecure_plaintext);
    take(&mut account.db, extra.db);
    take(&mut account.label, extra.label);
    take(&mut account.trust_policy, extra.trust_policy);
    Ok(file)
}

/// A trust command, on the database only: the bot may be running, and a second session of
/// its device would take messages meant for it.
async fn run_command(command: &TrustCommand) -> anyhow::Result<()> {
    let mut account = command.account().clone();
    let mut file = read_config(account.config.as_deref())?;
    // No connection, so no password: leave the configured ones unread.
    account.password_file = None;
    file.account.password_file = None;
    file.account.password = None;
    let settings = config::resolve(
        &account,
        &file.account,
        Some("not used without a connection".to_owned()),
        "echo-bot",
    )?;
    trust::run(command, &settings, Reach::DatabaseOnly).await?;
    Ok(())
}

async fn run(account: &AccountArgs, plaintext: Option<PlaintextReply>) -> anyhow::Result<()> {
    // Installed first: a stop request while connecting counts too.
    let mut shutdown = Shutdown::install().context("cannot install the signal handlers")?;
    let file = read_config(account.config.as_deref())?;
    let settings = config::resolve(
        account,
        &file.account,
        std::env::var("XMPP_PASSWORD").ok(),
        "echo-bot",
    )?;
    let plaintext = plaintext.or(file.echo.plaintext_reply).unwrap_or_default();
    let policy = file.sync.policy()?;
    let mut vault = if policy.is_empty() {
        None
    } else {
        let path = file
            .sync
            .db
            .clone()
            .unwrap_or_else(|| settings.db.with_extension("vault.sqlite3"));
        let store = vault_protocol::sqlite::SqliteStore::open(&path)
            .with_context(|| format!("cannot open the vault database {}", path.display()))?;
        tracing::info!(vaults = file.sync.vault.len(), db = %path.display(), "vault role on");
        Some(VaultRole::new(policy, store))
    };

    config::reset_if_asked(account, &settings)
        .with_context(|| format!("cannot reset the identity in {}", settings.db.display()))?;
    let started = tokio::select! {
        started = Client::start_with_responder(&settings, echo::responder(settings.jid.clone())) => started,
        signal = shutdown.requested() => {
            tracing::info!(signal, "stop requested while connecting");
            return Ok(());
        }
    };
    let (client, mut events) =
        started.with_context(|| format!("cannot start as {}", settings.jid))?;
    let own = client.manager().own();
    // One write: whoever waits for the ready line gets the fingerprints with it.
    let mut ready = format!("echo-bot ready: jid={} device={}\n", own.jid, own.device_id);
    for line in xmpp_core::identity::describe(&own.identity.public_key()) {
        ready.push_str(&format!("  {line}\n"));
    }
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(ready.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
    }

    let answers = client.answers();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            signal = shutdown.requested() => {
                tracing::info!(signal, "shutting down");
                None
            }
        };
        let Some(event) = event else { break };
        if let ClientEvent::Online { resumed } = event {
            tracing::info!(resumed, "online");
            continue;
        }
        if let ClientEvent::Offline = event {
            tracing::warn!("connection lost; reconnecting");
            continue;
        }
        let handling = handle(&client, &answers, &event, plaintext, &mut vault);
        tokio::pin!(handling);
        let signal = tokio::select! {
            () = &mut handling => continue,
            signal = shutdown.requested() => signal,
        };
        tracing::info!(signal, "shutting down after the message in hand");
        if tokio::time::timeout(GRACE, &mut handling).await.is_err() {
            // Not answered: it stays in the inbox (the close keeps what is dropped after it)
            // and is handed over again at the next start.
            tracing::warn!(
                "the message in hand was not answered in time; it comes again at the next start"
            );
        }
        break;
    }
    if !answers.flush(GRACE).await {
        tracing::warn!(
            "stopping with answers still queued; their messages are answered after the next start"
        );
    }
    client.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Answers (or not) one message. Encrypted answers are queued: they go out in the
/// background, in order per contact, so a contact whose answer is slow to build never delays
/// the others. Vault requests go to the vault role and are never echoed.
async fn handle(
    client: &Client,
    answers: &Answers,
    event: &ClientEvent,
    plaintext: PlaintextReply,
    vault: &mut Option<VaultRole>,
) {
    if let ClientEvent::Encrypted(message) = event {
        if let Some(report) = &message.answered {
            log_answer(&message.e2ee.sender, report);
            return;
        }
        if carries_vault(message) {
            handle_vault(client, message, vault).await;
            return;
        }
    }
    match decide(event, client.jid(), plaintext) {
        Action::EncryptedReply { to, body } => {
            tracing::debug!(%to, %body, "echoing");
            // The answer's commit also takes the message out of the inbox (at-least-once
            // handling across crashes, never answered twice).
            let answering = match event {
                ClientEvent::Encrypted(message) => message.receipt.clone(),
                _ => None,
            };
            let sent = answers.send_body(to.clone(), &body, answering.clone());
            tokio::spawn(report_answer(answers.clone(), to, sent, answering));
        }
        Action::PlaintextNotice { to } => {
            tracing::info!(%to, "plaintext message: sending the OMEMO-only notice");
            if let Err(e) = client.send_plaintext(to, PLAINTEXT_NOTICE).await {
                tracing::warn!(error = %e, "cannot send the notice");
            }
        }
        Action::Ignore(reason) => match event {
            ClientEvent::Encrypted(m) => tracing::info!(
                from = %m.from,
                device = %m.e2ee.device,
                trust = ?m.e2ee.trust,
                reason,
                "not answering"
            ),
            ClientEvent::Plaintext { from, .. } => {
                tracing::info!(%from, reason, "not answering")
            }
            ClientEvent::Undecryptable { from, reason, .. } => {
                tracing::warn!(%from, %reason, "undecryptable message")
            }
            _ => {}
        },
    }
}

/// Logs the outcome of one answer; an echo too large for a server is replaced by a note.
async fn report_answer(
    answers: Answers,
    to: BareJid,
    sent: impl std::future::Future<Output = Result<SendReport, OmemoError>>,
    answering: Option<Receipt>,
) {
    let mut sent = sent.await;
    if let Err(OmemoError::StanzaTooLarge { bytes, .. }) = sent {
        // Escaping and encryption make the echo larger than the message; a server would
        // close the stream for it. A short note goes instead.
        tracing::warn!(%to, bytes, "the echo would be too large to send; sending a note");
        let note = echo::too_large_note(bytes);
        sent = answers.send_body(to.clone(), &note, answering).await;
    }
    match sent {
        Ok(report) => log_answer(&to, &report),
        Err(e) => tracing::warn!(%to, error = %e, "cannot answer"),
    }
}

fn log_answer(to: &BareJid, report: &SendReport) {
    tracing::info!(
        %to,
        devices = report.encrypted_for.len(),
        skipped = report.skipped.len(),
        over_limit = report.over_limit,
        "answered an encrypted message"
    );
}

/// A message with vault elements: answered by the vault role, if it is on and the sender's
/// device is trusted; never echoed.
async fn handle_vault(
    client: &Client,
    message: &xmpp_core::omemo::DecryptedMessage,
    vault: &mut Option<VaultRole>,
) {
    let e2ee = &message.e2ee;
    let answers = match vault {
        _ if &e2ee.sender == client.jid() => Vec::new(),
        _ if !e2ee.trust.is_accepted() => {
            tracing::info!(from = %message.from, device = %e2ee.device, trust = ?e2ee.trust, "vault request from an untrusted device, not answering");
            Vec::new()
        }
        None => {
            tracing::info!(from = %message.from, "vault request, but the vault role is off");
            Vec::new()
        }
        Some(role) => role.on_message(message),
    };
    let count = answers.len();
    for (index, part) in answers.into_iter().enumerate() {
        // The last part's commit takes the request out of the inbox.
        let sent = if index + 1 == count {
            client
                .manager()
                .send_answer(&e2ee.sender, vec![part], message.receipt.as_ref())
                .await
        } else {
            client.send_sensitive(&e2ee.sender, vec![part]).await
        };
        if let Err(e) = sent {
            tracing::warn!(to = %e2ee.sender, error = %e, "cannot send a vault answer");
            return;
        }
    }
    if count == 0 {
        if let Err(e) = client.handled(message).await {
            tracing::warn!(error = %e, "cannot mark a vault message as handled");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn account_flags_before_and_after_a_command_combine() {
        let mut cli = Cli::try_parse_from([
            "echo-bot",
            "--config",
            "bot.toml",
            "--db",
            "outer.db",
            "-v",
            "devices",
            "--db",
            "inner.db",
            "alice@example.org",
        ])
        .unwrap();
        let command = cli.command.as_mut().unwrap();
        merge_account_args(&cli.account, command.account_mut());
        let account = command.account();
        assert_eq!(account.config.as_deref(), Some(Path::new("bot.toml")));
        assert_eq!(account.db.as_deref(), Some(Path::new("inner.db")));
        assert_eq!(account.verbose, 1);
    }

    #[test]
    fn an_included_file_replaces_account_values() {
        let dir = tempfile::tempdir().unwrap();
        let include = dir.path().join("include.toml");
        let config = dir.path().join("bot.toml");
        std::fs::write(
            &config,
            format!(
                "include = {:?}\n[account]\njid = \"bot@example.org\"\nserver = \"127.0.0.1:5222\"\n",
                include.display().to_string()
            ),
        )
        .unwrap();
        let missing = read_config(Some(&config)).unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        std::fs::write(&include, "[account]\nserver = \"127.0.0.1:15222\"\n").unwrap();
        let file = read_config(Some(&config)).unwrap();
        assert_eq!(file.account.server.as_deref(), Some("127.0.0.1:15222"));
        assert_eq!(file.account.jid.as_deref(), Some("bot@example.org"));
        std::fs::write(&include, "[echo]\nplaintext_reply = \"notice\"\n").unwrap();
        assert!(
            read_config(Some(&config)).is_err(),
            "only [account] may be included"
        );
    }

    #[test]
    fn the_vault_role_is_off_by_default_and_configured_per_vault() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bot.toml");
        std::fs::write(&config, "[account]\njid = \"bot@example.org\"\n").unwrap();
        assert!(read_config(Some(&config))
            .unwrap()
            .sync
            .policy()
            .unwrap()
            .is_empty());
        std::fs::write(
            &config,
            "[sync.vault.alice]\nallow = [\"alice@example.org\", \"alice@work.example\"]\n",
        )
        .unwrap();
        let policy = read_config(Some(&config)).unwrap().sync.policy().unwrap();
        assert!(policy.allows("alice", "alice@work.example"));
        assert!(!policy.allows("alice", "eve@example.org"));
        std::fs::write(&config, "[sync.vault.alice]\nallow = [\"not a jid@@\"]\n").unwrap();
        let error = read_config(Some(&config))
            .unwrap()
            .sync
            .policy()
            .unwrap_err();
        assert!(error.to_string().contains("invalid JID"), "{error}");
    }
}
