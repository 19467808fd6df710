//! The bookmark vault protocol, sans-IO.
//!
//! A person's bot keeps *vaults*: named, merged bookmark states ([`bookmarks::sync::State`])
//! with a revision number, each shared by a list of that person's accounts. Clients talk to it
//! with [`Request`]s and get [`Answer`]s. Both travel as XML elements of their own namespace
//! ([`NS`], `<request/>` and `<answer/>`) inside the OMEMO 2 SCE envelope, never as a `<body>`,
//! so the server only sees ciphertext and chat clients show nothing.
//!
//! - [`wire`]: the versioned elements, split into parts under a stated stanza budget
//!   ([`wire::PART_CHARS`]) and put back together by an [`wire::Assembler`].
//! - [`vault`]: what the bot answers, as one synchronous function over a [`vault::Store`]:
//!   per-vault allow-lists, compare-and-swap on the revision, idempotent pushes, pulls that
//!   send only what changed since the client's revision.
//! - [`sqlite`]: the bot's store, a SQLite database of its own (not the OMEMO store).
//!
//! Why a crate of its own: `bookmarks` is a published format and merge library with no XMPP
//! in it; this protocol needs XML elements and SQLite, and both apps (the bot and the client)
//! share it.

pub mod sqlite;
pub mod vault;
pub mod wire;

pub use vault::{handle, Answer, Op, Policy, Request, Store, Stored};

/// The namespace of the vault elements (the `1` is the protocol's major version; the
/// `version` attribute carries it too).
pub const NS: &str = "urn:omemo-bookmarks:vault:1";

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;
