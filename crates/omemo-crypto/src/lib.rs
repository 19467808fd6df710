//! Sans-IO OMEMO cryptography: OMEMO 2 (XEP-0384 0.8+, `urn:xmpp:omemo:2`) and legacy OMEMO
//! (XEP-0384 0.3, `eu.siacs.conversations.axolotl`, module [`legacy`]).
//!
//! This crate implements what OMEMO does with keys and bytes, and nothing else: no
//! networking, no storage, no clock, no global random number generator. Randomness and time
//! are arguments, so every path can be replayed against fixed test vectors.
//!
//! - [`IdentityKeyPair`], [`SignedPreKey`], [`PreKey`], [`Bundle`]: the keys a device
//!   publishes (XEP-0384 §bundles), with strict checks on everything that comes from peers.
//! - [`x3dh`]: the key agreement (`"OMEMO X3DH"`, `0xFF` prefix, `AD = IK_A ‖ IK_B`).
//! - [`Session`]: the Double Ratchet (`"OMEMO Root Chain"`, `"OMEMO Message Key Material"`,
//!   AES-256-CBC, HMAC-SHA-256/16) with the key-exchange bookkeeping; state leaves through
//!   [`Session::snapshot`] as versioned bytes.
//! - [`payload`]: the SCE envelope encryption (`"OMEMO Payload"`) and empty messages.
//! - [`KeyMessage`]: the protobuf wire formats, parsed with the checks prost leaves out.
//! - [`legacy`]: the legacy flavour (33-byte keys, `WhisperText`, `0x33 ‖ WhisperMessage ‖
//!   MAC₈`, AES-128-GCM bodies). Both versions share one session core,
//!   [`GenericSession<V>`] with `V` = [`Omemo2`] or [`Legacy`] (see [`version`] for why).
//!
//! ```
//! use omemo_crypto::{payload, Bundle, IdentityKeyPair, KeyMessage, PreKey, PreKeyId,
//!                    Session, SignedPreKey, SignedPreKeyId};
//! use rand_core::OsRng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = OsRng;
//! // Bob publishes a bundle.
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let spk = SignedPreKey::generate(SignedPreKeyId::new(1)?, &bob, 1_700_000_000, &mut rng);
//! let pk = PreKey::generate(PreKeyId::new(42)?, &mut rng);
//! let bundle = Bundle::from_own_keys(&bob, &spk, [&pk])?;
//!
//! // Alice encrypts an envelope for him.
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let mut to_bob = Session::initiate(&alice, &bundle, bundle.choose_pre_key(&mut rng), &mut rng)?;
//! let (ciphertext, key_material) = payload::encrypt(b"<envelope/>", &mut rng);
//! let wire = to_bob.encrypt(key_material.as_bytes())?.to_bytes();
//!
//! // Bob receives the key exchange, builds his side and decrypts.
//! let KeyMessage::KeyExchange(kex) = KeyMessage::from_bytes(&wire)? else { unreachable!() };
//! let (from_alice, decrypted) = Session::respond(&bob, &spk, &pk, &kex, &mut rng)?;
//! let envelope = payload::decrypt(&ciphertext, decrypted.plaintext())?;
//! assert_eq!(&envelope[..], b"<envelope/>");
//! assert_eq!(from_alice.peer_identity_key(), alice.public_key());
//! # Ok(()) }
//! ```

mod error;
pub mod hazmat;
mod ids;
mod kdf;
mod keys;
pub mod legacy;
pub mod payload;
mod ratchet;
mod session;
pub mod version;
mod wire;
pub mod x3dh;

#[cfg(test)]
mod legacy_vectors;
#[cfg(test)]
mod vectors;

pub use error::{
    DecodeError, DecryptionError, EncryptionError, PayloadError, SessionCreationError,
    SnapshotError,
};
pub use ids::{DeviceId, IdRangeError, PreKeyId, SignedPreKeyId, MAX_ID};
pub use keys::{
    Bundle, BundleError, IdentityKeyPair, IdentityPublicKey, KeyError, PreKey, Signature,
    SignedPreKey, X25519PublicKey,
};
pub use payload::KeyMaterial;
pub use ratchet::{Decrypted, HEARTBEAT_THRESHOLD, MAX_SKIP, MAX_SKIPPED_KEYS};
pub use session::{GenericSession, Role, Session};
pub use version::{Legacy, Omemo2, ProtocolVersion, Version};
pub use wire::{AuthenticatedMessage, KeyExchange, KeyMessage, MAX_KEY_MESSAGE_LEN};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
