//! The two OMEMO versions this crate speaks, and how one session core serves both.
//!
//! OMEMO 2 (`urn:xmpp:omemo:2`) and legacy OMEMO (XEP-0384 0.3,
//! `eu.siacs.conversations.axolotl`) run the same X3DH and the same Double Ratchet; they differ
//! in constants and wire formats only (LEGACY-NOTES §9): HKDF infos, the key encoding
//! (32 raw bytes vs `0x05 ‖ u`), the identity key's form in the associated data, the MAC
//! (16 bytes over a fixed `AD` vs 8 bytes over `sender ‖ receiver`), the protobuf layouts and
//! the version byte.
//!
//! # Design: a sealed trait over one core, plus a runtime tag
//!
//! [`GenericSession<V>`](crate::GenericSession) is the one session type; `V` is a zero-sized
//! marker, [`Omemo2`] or [`Legacy`], implementing the sealed trait [`Version`]. The trait
//! supplies what is different at the *type* level: the bundle, identity key, key exchange and
//! message types of that version, so a legacy `PreKeyWhisperMessage` can never be handed to
//! an OMEMO 2 session, and a caller that is generic over `V` (the engine) gets the right
//! wire types from `V` without matching on a namespace. Inside, the ratchet and X3DH hold the
//! runtime tag [`ProtocolVersion`] (`V::VERSION`) and branch on it in the few places the
//! constants differ; the chain logic, skipped keys, replay protection and snapshots exist
//! once. A trait alone would have made the ratchet generic too and monomorphised it twice
//! for a handful of constants; an enum alone would have put both versions' message types
//! behind one type and moved the "wrong version" check to run time. The runtime tag is also
//! what storage needs to tell stored sessions apart, and it is public for that reason.
//!
//! [`Session`](crate::Session) (OMEMO 2) and [`crate::legacy::Session`] are
//! aliases of the two instantiations, so code written before legacy existed still compiles.

use core::fmt::Debug;

use rand_core::CryptoRngCore;

use crate::error::DecodeError;
use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::keys::{
    Bundle, BundleError, IdentityKeyPair, IdentityPublicKey, PreKey, SignedPreKey, X25519PublicKey,
};
use crate::legacy;
use crate::wire::{AuthenticatedMessage, KeyExchange, KeyMessage};

pub(crate) use internal::{KeyExchangeHeader, RatchetMessage};

/// The protocol version as a value: what a stored session, a device's namespace or a
/// received element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// OMEMO 2, XEP-0384 0.8+ (`urn:xmpp:omemo:2`).
    Omemo2,
    /// Legacy OMEMO, XEP-0384 0.3 as deployed (`eu.siacs.conversations.axolotl`).
    Legacy,
}

impl ProtocolVersion {
    /// Both versions, OMEMO 2 first (the order in which to prefer them).
    pub const ALL: [Self; 2] = [Self::Omemo2, Self::Legacy];

    /// The XML namespace of the version's `<encrypted>` element.
    pub const fn namespace(self) -> &'static str {
        match self {
            Self::Omemo2 => "urn:xmpp:omemo:2",
            Self::Legacy => "eu.siacs.conversations.axolotl",
        }
    }

    /// The version whose namespace this is.
    pub fn from_namespace(namespace: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.namespace() == namespace)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A protocol version at the type level; implemented by [`Omemo2`] and [`Legacy`] only.
///
/// The associated types are that version's wire and key types. The `#[doc(hidden)]` functions
/// are the crate's internal plumbing between those types and the shared session core; they
/// are not part of the API.
pub trait Version: sealed::Sealed + Copy + Debug + Send + Sync + 'static {
    /// The value of this version.
    const VERSION: ProtocolVersion;
    /// A verified bundle of this version.
    type Bundle: Clone + Debug;
    /// The identity key as this version's key exchange carries it: the Ed25519 key for
    /// OMEMO 2, the Curve25519 (Montgomery) key for legacy, which has no sign bit.
    type IdentityKey: Copy + Eq + Debug;
    /// The key-exchange message (`OMEMOKeyExchange` / `PreKeyWhisperMessage`).
    type KeyExchange: Clone + Debug;
    /// The ratchet message (`OMEMOAuthenticatedMessage` / `WhisperMessage`).
    type Message: Clone + Debug;
    /// The content of one `<key>`: a key exchange or a ratchet message.
    type KeyMessage: Clone + Debug;

    /// Parses the bytes of a `<key>` element of this version.
    fn parse_key_message(bytes: &[u8]) -> Result<Self::KeyMessage, DecodeError>;
    /// Serializes a `<key>` content.
    fn key_message_bytes(message: &Self::KeyMessage) -> Vec<u8>;
    /// Whether a `<key>` content is a key exchange (`kex='true'` / `prekey='true'`).
    fn is_key_exchange(message: &Self::KeyMessage) -> bool;
    /// Whether the identity key a key exchange carries is the device identity `identity`
    /// (for legacy: the same Montgomery u; the sign bit is not carried).
    fn identity_matches(key: &Self::IdentityKey, identity: &IdentityPublicKey) -> bool;
    /// The identity key of a key exchange.
    fn key_exchange_identity(key_exchange: &Self::KeyExchange) -> Self::IdentityKey;
    /// The device identity (Ed25519 form) of a verified bundle; for legacy it is recovered
    /// with the sign bit carried in the signature.
    fn bundle_identity(bundle: &Self::Bundle) -> IdentityPublicKey;
    /// The key exchange inside a `<key>` content, if it is one.
    fn as_key_exchange(message: &Self::KeyMessage) -> Option<&Self::KeyExchange>;
    /// The one-time pre-key a key exchange used (to look up our private half).
    fn key_exchange_pre_key_id(key_exchange: &Self::KeyExchange) -> PreKeyId;
    /// The signed pre-key a key exchange used.
    fn key_exchange_signed_pre_key_id(key_exchange: &Self::KeyExchange) -> SignedPreKeyId;
    /// Picks one of a bundle's pre-keys uniformly at random.
    fn choose_pre_key(bundle: &Self::Bundle, rng: &mut impl CryptoRngCore) -> PreKeyId;
    /// Generates a signed pre-key signed the way this version's bundles are verified (each
    /// version has its own signed pre-key; they are not interchangeable).
    fn generate_signed_pre_key(
        id: SignedPreKeyId,
        identity: &IdentityKeyPair,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> SignedPreKey;
    /// Our own bundle of this version.
    fn own_bundle<'a>(
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_keys: impl IntoIterator<Item = &'a PreKey>,
    ) -> Result<Self::Bundle, BundleError>;

    #[doc(hidden)]
    fn bundle_core(bundle: &Self::Bundle) -> &Bundle;
    #[doc(hidden)]
    fn own_identity(own: &IdentityKeyPair) -> Self::IdentityKey;
    #[doc(hidden)]
    fn identity_from_public(public: IdentityPublicKey) -> Self::IdentityKey;
    #[doc(hidden)]
    fn identity_x25519(key: &Self::IdentityKey) -> X25519PublicKey;
    #[doc(hidden)]
    fn identity_bytes(key: &Self::IdentityKey) -> Vec<u8>;
    #[doc(hidden)]
    fn identity_from_bytes(bytes: &[u8]) -> Option<Self::IdentityKey>;
    /// What a session snapshot keeps beside [`Version::identity_bytes`] so that a restore
    /// need not decode the key again: nothing where decoding is cheap.
    #[doc(hidden)]
    fn identity_derived(_key: &Self::IdentityKey) -> Option<Vec<u8>> {
        None
    }
    /// Restores an identity key from a snapshot: its encoding and what
    /// [`Version::identity_derived`] kept, if the snapshot has it.
    #[doc(hidden)]
    fn identity_from_snapshot(bytes: &[u8], _derived: Option<&[u8]>) -> Option<Self::IdentityKey> {
        Self::identity_from_bytes(bytes)
    }
    #[doc(hidden)]
    fn wrap_message(message: RatchetMessage) -> Self::Message;
    #[doc(hidden)]
    fn message_core(message: &Self::Message) -> &RatchetMessage;
    #[doc(hidden)]
    fn wrap_key_exchange(
        header: &KeyExchangeHeader<Self::IdentityKey>,
        message: Self::Message,
    ) -> Self::KeyExchange;
    #[doc(hidden)]
    fn key_exchange_header(
        key_exchange: &Self::KeyExchange,
    ) -> KeyExchangeHeader<Self::IdentityKey>;
    #[doc(hidden)]
    fn key_exchange_message(key_exchange: &Self::KeyExchange) -> &Self::Message;
    #[doc(hidden)]
    fn key_message_of_exchange(key_exchange: Self::KeyExchange) -> Self::KeyMessage;
    #[doc(hidden)]
    fn key_message_of_message(message: Self::Message) -> Self::KeyMessage;
    #[doc(hidden)]
    fn key_message_parts(
        message: &Self::KeyMessage,
    ) -> (Option<&Self::KeyExchange>, &Self::Message);
}

/// OMEMO 2 (`urn:xmpp:omemo:2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Omemo2;

/// Legacy OMEMO (`eu.siacs.conversations.axolotl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Legacy;

impl sealed::Sealed for Omemo2 {}
impl sealed::Sealed for Legacy {}

impl Version for Omemo2 {
    const VERSION: ProtocolVersion = ProtocolVersion::Omemo2;
    type Bundle = Bundle;
    type IdentityKey = IdentityPublicKey;
    type KeyExchange = KeyExchange;
    type Message = AuthenticatedMessage;
    type KeyMessage = KeyMessage;

    fn parse_key_message(bytes: &[u8]) -> Result<KeyMessage, DecodeError> {
        KeyMessage::from_bytes(bytes)
    }
    fn key_message_bytes(message: &KeyMessage) -> Vec<u8> {
        message.to_bytes()
    }
    fn is_key_exchange(message: &KeyMessage) -> bool {
        message.is_key_exchange()
    }
    fn identity_matches(key: &IdentityPublicKey, identity: &IdentityPublicKey) -> bool {
        key == identity
    }
    fn key_exchange_identity(key_exchange: &KeyExchange) -> IdentityPublicKey {
        key_exchange.identity_key()
    }
    fn bundle_identity(bundle: &Bundle) -> IdentityPublicKey {
        bundle.identity_key()
    }
    fn as_key_exchange(message: &KeyMessage) -> Option<&KeyExchange> {
        match message {
            KeyMessage::KeyExchange(kex) => Some(kex),
            KeyMessage::Message(_) => None,
        }
    }
    fn key_exchange_pre_key_id(key_exchange: &KeyExchange) -> PreKeyId {
        key_exchange.pre_key_id()
    }
    fn key_exchange_signed_pre_key_id(key_exchange: &KeyExchange) -> SignedPreKeyId {
        key_exchange.signed_pre_key_id()
    }
    fn choose_pre_key(bundle: &Bundle, rng: &mut impl CryptoRngCore) -> PreKeyId {
        bundle.choose_pre_key(rng)
    }
    fn generate_signed_pre_key(
        id: SignedPreKeyId,
        identity: &IdentityKeyPair,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> SignedPreKey {
        SignedPreKey::generate(id, identity, now, rng)
    }
    fn own_bundle<'a>(
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_keys: impl IntoIterator<Item = &'a PreKey>,
    ) -> Result<Bundle, BundleError> {
        Bundle::from_own_keys(identity, signed_pre_key, pre_keys)
    }
    fn bundle_core(bundle: &Bundle) -> &Bundle {
        bundle
    }
    fn own_identity(own: &IdentityKeyPair) -> IdentityPublicKey {
        own.public_key()
    }
    fn identity_from_public(public: IdentityPublicKey) -> IdentityPublicKey {
        public
    }
    fn identity_x25519(key: &IdentityPublicKey) -> X25519PublicKey {
        key.to_x25519()
    }
    fn identity_bytes(key: &IdentityPublicKey) -> Vec<u8> {
        key.to_bytes().to_vec()
    }
    fn identity_from_bytes(bytes: &[u8]) -> Option<IdentityPublicKey> {
        IdentityPublicKey::from_bytes(bytes).ok()
    }
    fn identity_derived(key: &IdentityPublicKey) -> Option<Vec<u8>> {
        Some(key.to_x25519_bytes().to_vec())
    }
    fn identity_from_snapshot(bytes: &[u8], derived: Option<&[u8]>) -> Option<IdentityPublicKey> {
        match derived {
            Some(x25519) => IdentityPublicKey::from_snapshot_parts(bytes, x25519).ok(),
            None => IdentityPublicKey::from_bytes(bytes).ok(),
        }
    }
    fn wrap_message(message: RatchetMessage) -> AuthenticatedMessage {
        AuthenticatedMessage::from_core(message)
    }
    fn message_core(message: &AuthenticatedMessage) -> &RatchetMessage {
        message.core()
    }
    fn wrap_key_exchange(
        header: &KeyExchangeHeader<IdentityPublicKey>,
        message: AuthenticatedMessage,
    ) -> KeyExchange {
        KeyExchange::new(header, message)
    }
    fn key_exchange_header(key_exchange: &KeyExchange) -> KeyExchangeHeader<IdentityPublicKey> {
        key_exchange.header()
    }
    fn key_exchange_message(key_exchange: &KeyExchange) -> &AuthenticatedMessage {
        key_exchange.message()
    }
    fn key_message_of_exchange(key_exchange: KeyExchange) -> KeyMessage {
        KeyMessage::KeyExchange(key_exchange)
    }
    fn key_message_of_message(message: AuthenticatedMessage) -> KeyMessage {
        KeyMessage::Message(message)
    }
    fn key_message_parts(message: &KeyMessage) -> (Option<&KeyExchange>, &AuthenticatedMessage) {
        match message {
            KeyMessage::KeyExchange(kex) => (Some(kex), kex.message()),
            KeyMessage::Message(message) => (None, message),
        }
    }
}

impl Version for Legacy {
    const VERSION: ProtocolVersion = ProtocolVersion::Legacy;
    type Bundle = legacy::Bundle;
    type IdentityKey = legacy::IdentityKey;
    type KeyExchange = legacy::PreKeyWhisperMessage;
    type Message = legacy::WhisperMessage;
    type KeyMessage = legacy::KeyMessage;

    fn parse_key_message(bytes: &[u8]) -> Result<legacy::KeyMessage, DecodeError> {
        legacy::KeyMessage::from_bytes(bytes)
    }
    fn key_message_bytes(message: &legacy::KeyMessage) -> Vec<u8> {
        message.to_bytes()
    }
    fn is_key_exchange(message: &legacy::KeyMessage) -> bool {
        message.is_key_exchange()
    }
    fn identity_matches(key: &legacy::IdentityKey, identity: &IdentityPublicKey) -> bool {
        key.matches(identity)
    }
    fn key_exchange_identity(key_exchange: &legacy::PreKeyWhisperMessage) -> legacy::IdentityKey {
        key_exchange.identity_key()
    }
    fn bundle_identity(bundle: &legacy::Bundle) -> IdentityPublicKey {
        bundle.identity_key()
    }
    fn as_key_exchange(message: &legacy::KeyMessage) -> Option<&legacy::PreKeyWhisperMessage> {
        match message {
            legacy::KeyMessage::KeyExchange(kex) => Some(kex),
            legacy::KeyMessage::Message(_) => None,
        }
    }
    fn key_exchange_pre_key_id(key_exchange: &legacy::PreKeyWhisperMessage) -> PreKeyId {
        key_exchange.pre_key_id()
    }
    fn key_exchange_signed_pre_key_id(
        key_exchange: &legacy::PreKeyWhisperMessage,
    ) -> SignedPreKeyId {
        key_exchange.signed_pre_key_id()
    }
    fn choose_pre_key(bundle: &legacy::Bundle, rng: &mut impl CryptoRngCore) -> PreKeyId {
        bundle.choose_pre_key(rng)
    }
    fn generate_signed_pre_key(
        id: SignedPreKeyId,
        identity: &IdentityKeyPair,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> SignedPreKey {
        SignedPreKey::generate_legacy(id, identity, now, rng)
    }
    fn own_bundle<'a>(
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_keys: impl IntoIterator<Item = &'a PreKey>,
    ) -> Result<legacy::Bundle, BundleError> {
        legacy::Bundle::from_own_keys(identity, signed_pre_key, pre_keys)
    }
    fn bundle_core(bundle: &legacy::Bundle) -> &Bundle {
        bundle.core()
    }
    fn own_identity(own: &IdentityKeyPair) -> legacy::IdentityKey {
        legacy::IdentityKey::from(own.public_key())
    }
    fn identity_from_public(public: IdentityPublicKey) -> legacy::IdentityKey {
        legacy::IdentityKey::from(public)
    }
    fn identity_x25519(key: &legacy::IdentityKey) -> X25519PublicKey {
        key.to_x25519()
    }
    fn identity_bytes(key: &legacy::IdentityKey) -> Vec<u8> {
        key.to_bytes().to_vec()
    }
    fn identity_from_bytes(bytes: &[u8]) -> Option<legacy::IdentityKey> {
        legacy::IdentityKey::from_bytes(bytes).ok()
    }
    fn wrap_message(message: RatchetMessage) -> legacy::WhisperMessage {
        legacy::WhisperMessage::from_core(message)
    }
    fn message_core(message: &legacy::WhisperMessage) -> &RatchetMessage {
        message.core()
    }
    fn wrap_key_exchange(
        header: &KeyExchangeHeader<legacy::IdentityKey>,
        message: legacy::WhisperMessage,
    ) -> legacy::PreKeyWhisperMessage {
        legacy::PreKeyWhisperMessage::new(header, message)
    }
    fn key_exchange_header(
        key_exchange: &legacy::PreKeyWhisperMessage,
    ) -> KeyExchangeHeader<legacy::IdentityKey> {
        key_exchange.header()
    }
    fn key_exchange_message(
        key_exchange: &legacy::PreKeyWhisperMessage,
    ) -> &legacy::WhisperMessage {
        key_exchange.message()
    }
    fn key_message_of_exchange(key_exchange: legacy::PreKeyWhisperMessage) -> legacy::KeyMessage {
        legacy::KeyMessage::KeyExchange(key_exchange)
    }
    fn key_message_of_message(message: legacy::WhisperMessage) -> legacy::KeyMessage {
        legacy::KeyMessage::Message(message)
    }
    fn key_message_parts(
        message: &legacy::KeyMessage,
    ) -> (
        Option<&legacy::PreKeyWhisperMessage>,
        &legacy::WhisperMessage,
    ) {
        match message {
            legacy::KeyMessage::KeyExchange(kex) => (Some(kex), kex.message()),
            legacy::KeyMessage::Message(message) => (None, message),
        }
    }
}

/// Types shared by both versions' wire formats and the session core. They are `pub` only so
/// the hidden functions of [`Version`] can name them; nothing outside the crate can build or
/// read them.
mod internal {
    use crate::ids::{PreKeyId, SignedPreKeyId};
    use crate::keys::X25519PublicKey;

    /// The Double Ratchet header and ciphertext, the same fields in both versions
    /// (`OMEMOMessage` / `WhisperMessage`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct RatchetHeader {
        /// `Ns` of the sender: the index in its current sending chain.
        pub(crate) n: u32,
        /// `PN`: the sender's previous sending chain (its length in OMEMO 2 and python;
        /// libsignal sends the index of its last message).
        pub(crate) pn: u32,
        /// The sender's current ratchet public key.
        pub(crate) dh_pub: X25519PublicKey,
        /// AES-256-CBC ciphertext of the key material.
        pub(crate) ciphertext: Vec<u8>,
    }

    /// A ratchet message as the core sees it: the parsed header, the exact bytes the MAC
    /// covers after the associated data (never re-encoded), and the MAC.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RatchetMessage {
        pub(crate) header: RatchetHeader,
        pub(crate) authenticated: Vec<u8>,
        pub(crate) mac: Vec<u8>,
    }

    /// The X3DH values of a key exchange, kept by a session for its whole life.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KeyExchangeHeader<I> {
        pub(crate) pre_key_id: PreKeyId,
        pub(crate) signed_pre_key_id: SignedPreKeyId,
        pub(crate) identity_key: I,
        pub(crate) ephemeral_key: X25519PublicKey,
    }
}

pub(crate) use internal::RatchetHeader;
