//! The SQLite store for OMEMO state and trust: one database file per account holding our
//! identity and pre-keys, remote device lists, Double Ratchet sessions, trust levels
//! (QXmpp's six levels, TOAKAFA and manual policies) and pending Automatic Trust Management
//! decisions (XEP-0450).
//!
//! The store is built like a database, not a cache:
//! - the schema lives in SQL migrations (`migrations/` at the repository root, linked from
//!   the crate, embedded at build time and applied by refinery on open); a database from a
//!   newer version is refused;
//! - the file is created with mode 0600, runs in WAL mode with foreign keys on, and commits
//!   with `synchronous=FULL` by default (see [`Durability`]);
//! - every method is one transaction; the per-message ones ([`Store::commit_decryption`],
//!   [`Store::commit_encryption`]) change session states, pre-keys and counters together;
//! - no trust level changes silently: each change is a [`TrustEvent`] in a log;
//! - bad data gives a [`StoreError`], never a panic.
//!
//! The API is synchronous; time (Unix seconds) and randomness are parameters. Session
//! states are the opaque versioned bytes `omemo-crypto` produces.
//!
//! One device speaks OMEMO 2 and legacy OMEMO (`eu.siacs.conversations.axolotl`) with one
//! device id and one identity key. Device lists, sessions and message counters are kept per
//! [`Namespace`]; signed pre-keys and pre-keys too (each version has its own bundle: the
//! `*_for` methods such as [`Store::ensure_pre_keys_for`] take the namespace, the methods
//! without it are the OMEMO 2 case); trust is per identity key whichever namespace a message
//! used. [`Store::device_versions`] and [`Store::recipients_by_version`] tell which versions a
//! contact's devices speak.
//!
//! # Example
//!
//! ```
//! use atm_trust::{
//!     DecryptionCommit, Namespace, SessionUpdate, Store, TrustLevel, TrustPolicy,
//! };
//! use omemo_crypto::{DeviceId, IdentityKeyPair};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand_core::OsRng;
//! let now = 1_700_000_000;
//! let mut store = Store::open_in_memory()?;
//!
//! // Our device: identity, device id and first signed pre-key, then 100 pre-keys.
//! let own = store.load_or_create_own_device("alice@example.org", Some("laptop"), &mut rng, now)?;
//! store.ensure_pre_keys(100, &mut rng, now)?;
//! assert_eq!(store.unused_pre_keys()?.len(), 100);
//!
//! // Bob's device shows up; under TOAKAFA its key is trusted until Bob authenticates one.
//! let bob = "bob@example.org";
//! let bob_device = DeviceId::new(4711)?;
//! let bob_key = IdentityKeyPair::generate(&mut rng).public_key();
//! let recorded = store.record_identity_key(
//!     Namespace::Omemo2, bob, bob_device, &bob_key, TrustPolicy::Toakafa, now,
//! )?;
//! assert_eq!(recorded.level, TrustLevel::AutomaticallyTrusted);
//! assert!(recorded.level.is_accepted());
//!
//! // After encrypting: the new session state, in one transaction with the counters.
//! let state = b"session state bytes from omemo-crypto";
//! store.commit_encryption(
//!     Namespace::Omemo2,
//!     &[SessionUpdate { jid: bob, device_id: bob_device, session_state: state }],
//!     now,
//! )?;
//!
//! // After decrypting Bob's answer.
//! let counters = store.commit_decryption(&DecryptionCommit {
//!     namespace: Namespace::Omemo2,
//!     jid: bob,
//!     device_id: bob_device,
//!     session_state: b"next state",
//!     previous_state: None,
//!     used_pre_key: None,
//!     now: now + 5,
//! })?;
//! assert_eq!(counters.received_without_reply, 1);
//! let loaded = store.load_session(Namespace::Omemo2, bob, bob_device)?;
//! assert_eq!(loaded.as_deref().map(Vec::as_slice), Some(&b"next state"[..]));
//!
//! // The user compares fingerprints and authenticates the key; every change is an event.
//! let events = store.set_trust_level(bob, &bob_key, TrustLevel::Authenticated, now + 60)?;
//! assert_eq!(events.len(), 1);
//! assert_eq!(store.trust_events(bob)?.len(), 2);
//! # let _ = own;
//! # Ok(())
//! # }
//! ```

mod atm;
mod devices;
mod error;
mod inbox;
mod own;
mod sessions;
mod sql;
mod store;
mod trust;
mod versions;

pub use atm::{KeyOwnerDecisions, TrustMessageOutcome, MAX_PENDING_PER_SENDER};
pub use devices::{DeviceListChanges, ListedDevice, Namespace, RemoteDevice, MAX_DEVICES_PER_JID};
pub use error::{Result, StoreError};
pub use inbox::{InboxMessage, NewInboxMessage};
pub use own::OwnDevice;
pub use sessions::{DecryptionCommit, DeviceCounters, SessionUpdate};
pub use store::{Durability, Store};
pub use trust::{RecordedKey, TrustEvent, TrustLevel, TrustPolicy, TrustSource};
pub use versions::DeviceVersions;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
