//! `echo-bot`: logs into an XMPP account, publishes its OMEMO 2 device and answers every
//! OMEMO-encrypted message with an encrypted `Your message: <body>`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use serde::Deserialize;
use xmpp_core::client::{Answers, Client, ClientEvent};
use xmpp_core::jid::BareJid;
use xmpp_core::omemo::{OmemoError, Receipt, SendReport};
use xmpp_core::settings::{read_config_file, AccountArgs, AccountFile, AccountSettings};

mod echo;

use echo::{decide, Action, PlaintextReply, PLAINTEXT_NOTICE};

/// OMEMO 2 echo bot: answers every encrypted message with an encrypted "Your message: <body>".
#[derive(Debug, Parser)]
#[command(name = "echo-bot", version)]
struct Cli {
    #[command(flatten)]
    account: AccountArgs,
    /// What to do with unencrypted messages: ignore them, or answer with a short plaintext
    /// notice (they are never echoed).
    #[arg(long, env = "ECHO_PLAINTEXT_REPLY", value_enum)]
    plaintext_reply: Option<PlaintextReply>,
}

/// The configuration file: `[account]` and `[echo]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    account: AccountFile,
    #[serde(default)]
    echo: EchoSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoSection {
    plaintext_reply: Option<PlaintextReply>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    xmpp_core::logging::init(cli.account.verbose, "info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("echo-bot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-bot: {}", xmpp_core::logging::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file: ConfigFile = read_config_file(cli.account.config.as_deref())?;
    let settings = AccountSettings::resolve(
        &cli.account,
        &file.account,
        std::env::var("XMPP_PASSWORD").ok(),
        "echo-bot",
    )?;
    let plaintext = cli
        .plaintext_reply
        .or(file.echo.plaintext_reply)
        .unwrap_or_default();

    let (client, mut events) = Client::start(&settings)
        .await
        .with_context(|| format!("cannot start as {}", settings.jid))?;
    // Installed before the ready line, so that a SIGTERM right after it is a clean stop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let own = client.manager().own();
    println!(
        "echo-bot ready: jid={} device={} fingerprint={}",
        own.jid,
        own.device_id,
        own.identity.public_key().fingerprint()
    );

    let answers = client.answers();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); None }
            _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); None }
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
        match decide(&event, client.jid(), plaintext) {
            Action::EncryptedReply { to, body } => {
                tracing::debug!(%to, %body, "echoing");
                // The answer's commit also takes the message out of the inbox (at-least-once
                // handling across crashes, never answered twice).
                let answering = match &event {
                    ClientEvent::Encrypted(message) => message.receipt.clone(),
                    _ => None,
                };
                // Answers go out in the background, in order per contact: a contact whose
                // answer is slow to build never delays the others.
                let sent = answers.send_body(to.clone(), &body, answering.clone());
                tokio::spawn(report_answer(answers.clone(), to, sent, answering));
            }
            Action::PlaintextNotice { to } => {
                tracing::info!(%to, "plaintext message: sending the OMEMO-only notice");
                if let Err(e) = client.send_plaintext(to, PLAINTEXT_NOTICE).await {
                    tracing::warn!(error = %e, "cannot send the notice");
                }
            }
            Action::Ignore(reason) => match &event {
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
    if !answers.flush(ANSWERS_AT_STOP).await {
        tracing::warn!(
            "stopping with answers still queued; their messages are answered after the next start"
        );
    }
    client.close().await;
    Ok(())
}

/// How long a stopping bot waits for its queued answers.
const ANSWERS_AT_STOP: std::time::Duration = std::time::Duration::from_secs(5);

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
        Ok(report) => tracing::info!(
            %to,
            devices = report.encrypted_for.len(),
            skipped = report.skipped.len(),
            over_limit = report.over_limit,
            "answered an encrypted message"
        ),
        Err(e) => tracing::warn!(%to, error = %e, "cannot answer"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
