//! A dice bot on `xmpp-core`'s public API: it logs in, publishes its OMEMO 2 device and
//! answers every encrypted message such as `2d6` or `d20` with an encrypted roll.
//!
//! ```sh
//! XMPP_PASSWORD=secret cargo run -p xmpp-core --example dice_bot -- \
//!     --jid dice@example.org --db dice.sqlite3
//! ```
//!
//! The library takes an [`AccountSettings`]; how a program fills it in is its own business
//! (the echo bot and the sync client add a TOML file and more flags).

use std::path::PathBuf;

use clap::Parser;
use xmpp_core::client::{Client, ClientEvent};
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

/// Answers `NdM` (N dice with M sides) with an encrypted roll. The password comes from
/// `XMPP_PASSWORD`.
#[derive(Parser)]
struct Cli {
    /// The bot's account.
    #[arg(long)]
    jid: xmpp_core::jid::BareJid,
    /// The SQLite database with its OMEMO state.
    #[arg(long)]
    db: PathBuf,
    /// Connect to HOST:PORT instead of looking up the domain's SRV records.
    #[arg(long)]
    server: Option<ServerAddress>,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let settings = AccountSettings {
        jid: cli.jid,
        password: Password::new(std::env::var("XMPP_PASSWORD")?),
        server: cli.server,
        ca_file: cli.ca_file,
        insecure_plaintext: false,
        db: cli.db,
        label: "dice-bot".to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    };
    // Opens the store (creating our identity on first use), logs in and publishes the
    // device list and bundle.
    let (client, mut events) = Client::start(&settings).await?;
    let own = client.manager().own();
    println!("dice-bot ready: jid={} device={}", own.jid, own.device_id);

    while let Some(event) = events.recv().await {
        // Only decrypted messages from other accounts' trusted devices get an answer.
        let ClientEvent::Encrypted(message) = event else {
            continue;
        };
        let e2ee = &message.e2ee;
        if e2ee.sender == *client.jid() || !e2ee.trust.is_accepted() {
            continue;
        }
        let Some(body) = message.body.as_deref() else {
            continue;
        };
        let answer = match roll(body.trim()) {
            Some((dice, total)) => {
                let dice: Vec<String> = dice.iter().map(u32::to_string).collect();
                format!("{} = {total}", dice.join(" + "))
            }
            None => "Send NdM (N dice with M sides), e.g. 2d6 or d20.".to_owned(),
        };
        // Passing the receipt commits "handled" together with the answer, so a crash never
        // answers twice nor loses the question.
        let receipt = message.receipt.as_ref();
        if let Err(e) = client
            .send_body_answering(&e2ee.sender, &answer, receipt)
            .await
        {
            eprintln!("cannot answer {}: {e}", e2ee.sender);
        }
    }
    client.close().await;
    Ok(())
}

/// Rolls `NdM` (1 to 20 dice with 2 to 1000 sides): each die, and the total.
fn roll(spec: &str) -> Option<(Vec<u32>, u32)> {
    let spec = spec.to_ascii_lowercase();
    let (count, sides) = spec.split_once('d')?;
    let count: u32 = if count.is_empty() {
        1
    } else {
        count.parse().ok()?
    };
    let sides: u32 = sides.parse().ok()?;
    if !(1..=20).contains(&count) || !(2..=1000).contains(&sides) {
        return None;
    }
    let dice: Vec<u32> = (0..count).map(|_| rand::random_range(1..=sides)).collect();
    let total = dice.iter().sum();
    Some((dice, total))
}
