//! What the two programs share above `xmpp-core`:
//!
//! - [`config`]: the account flags (clap), environment variables and TOML file, merged into
//!   `xmpp-core`'s account settings, and `--reset-identity`;
//! - [`logging`]: the `tracing` subscriber (`-v`, `RUST_LOG`) and one-line error messages;
//! - [`trust`]: the operator's commands on an account's OMEMO trust — `fingerprint`,
//!   `devices JID`, `trust JID FINGERPRINT`, `distrust JID FINGERPRINT` — either through a
//!   connection (fresh device lists, ATM trust messages to our authenticated devices) or on
//!   the database alone, which is safe while another process (a running bot) uses it;
//! - [`shutdown`]: waiting for SIGINT or SIGTERM, and how long a program may finish the
//!   work in hand after one.
//!
//! ```no_run
//! use app_common::trust::{self, Reach, TrustCommand};
//! # async fn run(command: TrustCommand, settings: xmpp_core::settings::AccountSettings)
//! #     -> Result<(), app_common::trust::CommandError> {
//! // `command` comes from clap (`#[command(flatten)]` in the program's subcommands).
//! trust::run(&command, &settings, Reach::DatabaseOnly).await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod logging;
pub mod shutdown;
pub mod trust;
