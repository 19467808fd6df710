//! The async layer of the OMEMO bots: the XMPP connection, the OMEMO manager (OMEMO 2 and
//! legacy OMEMO from one device) and the small client API the programs use.
//!
//! # A bot on this crate
//!
//! `examples/dice_bot.rs` is a complete OMEMO 2 bot: it logs in, publishes its device and
//! answers each encrypted `NdM` with an encrypted roll of N dice with M sides, on the public
//! API alone ([`settings`] for the account, [`client::Client`] for everything else). Run it
//! with `cargo run -p xmpp-core --example dice_bot -- --help`.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/dice_bot.rs"), "```")]
//!
//! [`client::Client::start`] opens the account's store (creating the OMEMO identity on
//! first use), logs in and publishes the device lists and bundles of both versions. Its
//! events are the decrypted messages, with the sender device, its trust level and the OMEMO
//! version, in order. An answer sent with the message's [`omemo::Receipt`] goes out in that
//! version and commits the message as handled together with the answer, so a crash in
//! between hands the message over again at the next start.
//!
//! # The parts
//!
//! - [`connection`]: log in over StartTLS (native roots plus an optional private CA) or, to
//!   loopback only, plain TCP; keep the session up with XEP-0198 and jittered reconnects;
//!   carbons, entity capabilities, disco#info; tracked IQ requests; events for the app.
//! - [`settings`]: the account to log in with (the programs read it from flags, the
//!   environment and a TOML file with their shared `app-common` crate).
//! - [`omemo`]: the OMEMO manager (device lists, bundles, sessions, trust, send and receive,
//!   in OMEMO 2 and legacy OMEMO) over the sans-IO crates and the `atm-trust` store.
//! - [`client`]: [`client::Client`], which ties them together for the programs.
//! - [`identity`]: starting over with a new identity, and showing one to a person.
//!
//! The connection alone, without OMEMO:
//!
//! ```no_run
//! use xmpp_core::connection::{Connection, ConnectionConfig, Event, Secret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ConnectionConfig::new("bot@example.org".parse()?, Secret::new("pw".into()));
//! config.ca_file = Some("/etc/ssl/private-ca.pem".into());
//! let (connection, mut events) = Connection::connect(config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Online { bound_jid, resumed } => println!("online as {bound_jid} ({resumed})"),
//!         Event::Message(message) => println!("message from {:?}", message.from),
//!         _ => {}
//!     }
//! }
//! connection.close().await;
//! # Ok(())
//! # }
//! ```

mod archive;
pub mod client;
pub mod connection;
mod fair;
pub mod identity;
pub mod omemo;
mod removal;
pub mod settings;

pub use atm_trust::{TrustLevel, TrustPolicy};
pub use xmpp_parsers::{jid, message, minidom};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
