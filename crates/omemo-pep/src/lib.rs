//! Sans-IO OMEMO XML and PEP logic: OMEMO 2 (XEP-0384 0.9, `urn:xmpp:omemo:2`) and legacy
//! OMEMO (XEP-0384 0.3, `eu.siacs.conversations.axolotl`).
//!
//! Everything OMEMO puts on the wire as XML, and the PEP requests around it, without I/O:
//!
//! - [`omemo2`]: the `<encrypted>`, `<devices>` and `<bundle>` elements as xso types, and
//!   their checked forms ([`omemo2::EncryptedMessage`], [`omemo2::DeviceList`] with signed
//!   labels, [`omemo_crypto::Bundle`]);
//! - [`legacy`]: the same for legacy OMEMO ([`legacy::EncryptedMessage`],
//!   [`legacy::DeviceList`], [`omemo_crypto::legacy::Bundle`]);
//! - [`sce`]: the XEP-0420 envelope that `<payload>` encrypts, with random padding and
//!   affix verification;
//! - [`hints`]: EME (XEP-0380) and store (XEP-0334) hints, wrapping and finding
//!   `<encrypted>` in a `<message>`;
//! - [`tm`]: XEP-0434 trust messages as XEP-0450 (ATM) uses them;
//! - [`pep`]: device-list and bundle requests, the publish-options fallbacks, and the
//!   interpretation of answers and notifications.
//!
//! Randomness is a parameter (`&mut impl CryptoRngCore`), as is time; nothing here opens a
//! socket, reads a file or a clock. Input from the network is checked against [`limits`]
//! and never panics; all failures are one [`Error`] type.
//!
//! ```
//! use omemo_crypto::{DeviceId, IdentityKeyPair};
//! use omemo_pep::omemo2::{DeviceEntry, DeviceList, Label};
//! use omemo_pep::pep::{self, Fetched, Publication};
//! use xmpp_parsers::iq::Iq;
//! use xmpp_parsers::jid::BareJid;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = BareJid::new("bot@example.org")?;
//! let identity = omemo_crypto::hazmat::identity_from_seed(&[7; 32]);
//! let device = DeviceId::new(4223)?;
//!
//! // 1. Ask for our own device list …
//! let _request: Iq = pep::fetch_device_list(&me, "q1");
//! // … and suppose the server says the node does not exist yet.
//! let answer: Iq = r#"<iq xmlns='jabber:client' type='error' id='q1'>
//!     <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
//!   </iq>"#
//!     .parse::<xmpp_parsers::minidom::Element>()?
//!     .try_into()?;
//! let fetched = match pep::parse_device_list_response(&answer) {
//!     Fetched::Found(list) => Some(list),
//!     Fetched::NotFound => None,
//!     other => panic!("cannot continue: {other:?}"),
//! };
//!
//! // 2. Add our device with a signed label and publish the list.
//! let own = DeviceEntry::with_signed_label(device, "echo-bot", &identity)?;
//! let list: DeviceList = pep::add_own_device(fetched.as_ref(), own)?.expect("changed");
//! assert_eq!(list.get(device).map(|d| d.label()), Some(Label::Verified("echo-bot")));
//! let mut publication = Publication::device_list(&list);
//! let _publish: Iq = publication.request("q2");
//! let ok: Iq = "<iq xmlns='jabber:client' type='result' id='q2'/>"
//!     .parse::<xmpp_parsers::minidom::Element>()?
//!     .try_into()?;
//! assert!(matches!(publication.handle_response(&ok), pep::PublishProgress::Done));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod codec;
mod error;
pub mod hints;
pub mod legacy;
pub mod limits;
pub mod ns;
pub mod omemo2;
pub mod pep;
pub mod sce;
pub mod tm;

pub use error::Error;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
