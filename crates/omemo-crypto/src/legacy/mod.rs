//! Legacy OMEMO (XEP-0384 0.3, `eu.siacs.conversations.axolotl`), the version Conversations,
//! Gajim, Dino, Monal and Profanity speak, byte-compatible with python-oldmemo 2.1.0 and the
//! libsignal-based clients.
//!
//! The same device identity serves both versions: [`IdentityKey`] is the Curve25519 form of
//! an [`IdentityPublicKey`](crate::IdentityPublicKey) (`0x05 ‖ u`), and its
//! [`fingerprint`](IdentityKey::fingerprint) is the same string. What differs from OMEMO 2
//! (LEGACY-NOTES §9):
//!
//! - every public key on the wire is 33 bytes `0x05 ‖ u` ([`serialize_public_key`],
//!   [`parse_public_key`]);
//! - the signed pre-key signature covers the 33-byte key and carries the identity's Ed25519
//!   sign bit in bit 7 of byte 63 ([`SignedPreKey::generate_legacy`](crate::SignedPreKey),
//!   [`Bundle::new`]);
//! - X3DH uses the info `"WhisperText"`, the ratchet `"WhisperRatchet"` and
//!   `"WhisperMessageKeys"`; the associated data is made of the 33-byte identity keys;
//! - a ratchet message is `0x33 ‖ WhisperMessage ‖ MAC₈`, the MAC covering
//!   `IK_sender ‖ IK_receiver ‖ 0x33 ‖ WhisperMessage` ([`WhisperMessage`]); a key exchange
//!   is `0x33 ‖ PreKeyWhisperMessage` ([`PreKeyWhisperMessage`]);
//! - the body is encrypted with AES-128-GCM and `key ‖ tag` travels in the ratchet
//!   ([`payload`]).
//!
//! Sessions are [`Session`] = [`GenericSession<Legacy>`](crate::GenericSession): the same
//! ratchet core as OMEMO 2 (see [`crate::version`]).
//!
//! ```
//! use omemo_crypto::{legacy, IdentityKeyPair, PreKey, PreKeyId, SignedPreKey, SignedPreKeyId};
//! use rand_core::OsRng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = OsRng;
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let spk = SignedPreKey::generate_legacy(SignedPreKeyId::new(1)?, &bob, 0, &mut rng);
//! let pk = PreKey::generate(PreKeyId::new(42)?, &mut rng);
//! let bundle = legacy::Bundle::from_own_keys(&bob, &spk, [&pk])?;
//!
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let mut to_bob = legacy::Session::initiate(&alice, &bundle, pk.id(), &mut rng)?;
//! let encrypted = legacy::payload::encrypt("Hi Bob".as_bytes(), &mut rng);
//! let wire = to_bob.encrypt(encrypted.key_material.as_bytes())?.to_bytes();
//!
//! let legacy::KeyMessage::KeyExchange(kex) = legacy::KeyMessage::from_bytes(&wire)? else {
//!     unreachable!()
//! };
//! assert!(kex.identity_key().matches(&alice.public_key()));
//! let (_from_alice, decrypted) = legacy::Session::respond(&bob, &spk, &pk, &kex, &mut rng)?;
//! let body = legacy::payload::decrypt(&encrypted.ciphertext, &encrypted.iv, decrypted.plaintext())?;
//! assert_eq!(&body[..], b"Hi Bob");
//! # Ok(()) }
//! ```

mod keys;
pub mod payload;
pub(crate) mod wire;

pub use keys::{parse_public_key, serialize_public_key, Bundle, IdentityKey, KEY_TYPE_DJB};
pub use wire::{KeyMessage, PreKeyWhisperMessage, WhisperMessage, VERSION_BYTE};

/// A legacy session: the shared session core with legacy parameters.
pub type Session = crate::GenericSession<crate::Legacy>;

/// The XML namespace of legacy OMEMO.
pub const NAMESPACE: &str = "eu.siacs.conversations.axolotl";
