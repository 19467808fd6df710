//! OMEMO 2 bookmark-sync client library.
//!
//! The bookmark model, importers, exporters and the transfer format live in the sans-IO crate
//! [`bookmarks`] (re-exported here under the same paths as before); this crate adds the
//! network side ([`send`], [`sync`]), the client's sync database ([`store`]) and the safe
//! write-back of bookmark files ([`write_back`]).

pub use ::bookmarks;
pub use ::bookmarks::transfer;
pub mod send;
pub mod store;
pub mod sync;
pub mod write_back;
