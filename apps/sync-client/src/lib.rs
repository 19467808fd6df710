//! OMEMO 2 bookmark-sync client library.
//!
//! For now this holds [`bookmarks`]: importers for every common browser bookmark format, one
//! canonical model, and the exporters (Netscape bookmark HTML and the canonical JSON that the
//! client compresses, encrypts and sends). Nothing in this crate touches the network.
//!
//! ```
//! use sync_client::bookmarks::{self, Format};
//!
//! let html = br#"<!DOCTYPE NETSCAPE-Bookmark-file-1>
//! <DL><p>
//!     <DT><H3 ADD_DATE="1700000000">Rust &amp; friends</H3>
//!     <DL><p>
//!         <DT><A HREF="https://www.rust-lang.org/" TAGS="lang,rust">Rust</A>
//!         <HR>
//!     </DL><p>
//! </DL><p>"#;
//!
//! let format = bookmarks::detect(html, None)?;
//! assert_eq!(format, Format::NetscapeHtml);
//! let tree = bookmarks::import(html, format)?;
//! let stats = tree.stats();
//! assert_eq!((stats.folders, stats.bookmarks, stats.separators), (1, 1, 1));
//!
//! // The canonical JSON is deterministic and reads back to the same tree, extras included.
//! let json = tree.to_canonical_json()?;
//! assert_eq!(bookmarks::BookmarkTree::from_canonical_json(&json)?, tree);
//!
//! // Netscape HTML is the export every browser can import.
//! let exported = tree.to_netscape_html();
//! assert!(exported.contains("Rust &amp; friends"));
//! # Ok::<(), bookmarks::ImportError>(())
//! ```

pub mod bookmarks;
pub mod send;
pub mod transfer;
