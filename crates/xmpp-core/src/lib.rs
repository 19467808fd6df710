//! The async layer of the OMEMO bots: the XMPP connection, the OMEMO 2 manager and the
//! small client API the programs use.
//!
//! - [`connection`]: log in over StartTLS (native roots plus an optional private CA) or, to
//!   loopback only, plain TCP; keep the session up with XEP-0198 and jittered reconnects;
//!   carbons, entity capabilities, disco#info; tracked IQ requests; events for the app.
//! - [`settings`]: the shared account flags, environment variables and config file.
//! - [`omemo`]: the OMEMO 2 manager (device list, bundle, sessions, trust, send and receive)
//!   over the sans-IO crates and the `atm-trust` store.
//! - [`client`]: [`client::Client`], which ties them together for the programs.
//! - [`identity`]: starting over with a new identity, and showing one to a person.
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
pub mod logging;
pub mod omemo;
mod removal;
pub mod settings;

pub use atm_trust::{TrustLevel, TrustPolicy};
pub use xmpp_parsers::{jid, message, minidom};
