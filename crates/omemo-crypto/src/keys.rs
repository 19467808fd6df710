//! Identity keys, signed pre-keys, one-time pre-keys and bundles (XEP-0384 §protocol-key_exchange,
//! §bundles).
//!
//! The identity key is an Ed25519 key derived from a 32-byte seed (the form python-omemo
//! stores). It signs natively with Ed25519 and takes part in X25519 Diffie-Hellman through the
//! birational map (`IK` in the X3DH description). All other keys (`SPK`, `OPK`, `EK`, ratchet
//! keys) are X25519 keys, encoded as the raw 32-byte Montgomery u-coordinate without a type byte.

use core::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::ids::{PreKeyId, SignedPreKeyId};

/// Why a public key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The encoding has the wrong number of bytes.
    #[error("expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// The required length.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// The bytes do not encode a point on Curve25519 / Ed25519.
    #[error("the key is not a point on the curve")]
    NotOnCurve,
    /// The encoding is not the canonical one (a coordinate ≥ p or a stray sign bit).
    #[error("the key is not canonically encoded")]
    NonCanonical,
    /// The point has small order or a torsion component, so DH with it leaks or fixes the result.
    #[error("the key is a small-order or torsion point")]
    SmallOrder,
    /// A legacy key does not start with the type byte `0x05` (libsignal `DJB_TYPE`).
    #[error("unknown key type byte {0:#04x}")]
    UnknownKeyType(u8),
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The signed pre-key signature does not verify under the identity key.
    #[error("the signed pre-key signature is invalid")]
    BadSignature,
    /// The bundle has no one-time pre-key; OMEMO 2 key exchanges require one.
    #[error("the bundle contains no pre-keys")]
    NoPreKeys,
    /// Two pre-keys share one id.
    #[error("pre-key id {0} appears twice")]
    DuplicatePreKeyId(PreKeyId),
    /// A legacy identity key has no Ed25519 form (not a usable point).
    #[error("the identity key is invalid")]
    BadIdentityKey,
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], KeyError> {
    bytes.try_into().map_err(|_| KeyError::InvalidLength {
        expected: N,
        actual: bytes.len(),
    })
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// An Ed25519 signature (`R ‖ s`, 64 bytes), as in `<spks>` and `labelsig`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps 64 bytes; anything else is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        fixed::<64>(bytes).map(Self)
    }

    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex_lower(&self.0))
    }
}

/// A peer's X25519 public key (`SPK`, `OPK`, `EK` or a ratchet key): the raw 32-byte
/// u-coordinate (RFC 7748), checked to be canonical, on the curve and not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X25519PublicKey([u8; 32]);

impl X25519PublicKey {
    /// Parses and checks a 32-byte X25519 public key: canonical (u < p, top bit clear) and
    /// not one of the points of small order.
    ///
    /// Like libsodium, this compares against the list of small-order u-coordinates instead of
    /// decompressing the point (which costs ~10 µs, more than the rest of a decryption).
    /// Points on the quadratic twist are not rejected: X25519 is twist-secure, the twist's
    /// small-order points are in the list, and every DH result is additionally checked to be
    /// non-zero (`was_contributory`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw = fixed::<32>(bytes)?;
        if !is_canonical_field_element(&raw) {
            return Err(KeyError::NonCanonical);
        }
        if SMALL_ORDER_U.contains(&raw) {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self(raw))
    }

    /// The 32 encoded bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_dalek(self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }

    /// Only for bytes that passed [`check_x25519`].
    pub(crate) fn from_checked(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Only for keys we computed ourselves from a secret (always valid).
    pub(crate) fn from_secret(secret: &StaticSecret) -> Self {
        Self(x25519_dalek::PublicKey::from(secret).to_bytes())
    }
}

impl fmt::Debug for X25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519PublicKey({})", hex_lower(&self.0))
    }
}

/// The canonical u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519 and its
/// twist: 0, 1, the two order-8 points, and p − 1.
const SMALL_ORDER_U: [[u8; 32]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// True if the little-endian 255-bit value is below p = 2²⁵⁵ − 19 and the top bit is clear.
fn is_canonical_field_element(bytes: &[u8; 32]) -> bool {
    // p = 0x7fff…ffed in little-endian: ed ff … ff 7f.
    if bytes[31] & 0x80 != 0 {
        return false;
    }
    if bytes[31] != 0x7f || bytes[1..31].iter().any(|&b| b != 0xff) {
        return true;
    }
    bytes[0] < 0xed
}

/// A public identity key (`IK`) in its wire form: a canonical Ed25519 point (RFC 8032), as
/// published in `<ik>` and carried in `OMEMOKeyExchange.ik`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublicKey {
    ed25519: [u8; 32],
    x25519: [u8; 32],
}

impl IdentityPublicKey {
    /// Parses and checks a 32-byte Ed25519 public key: canonical (y < p), on the curve and not
    /// of small order.
    ///
    /// A torsion component (a point that is not in the prime-order subgroup but not of small
    /// order either) is not rejected: it cannot influence X25519, whose clamped scalars are
    /// multiples of the cofactor, and signatures are checked with `verify_strict`. Skipping
    /// that check (a full scalar multiplication) makes parsing ~4× cheaper.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw = fixed::<32>(bytes)?;
        let mut y = raw;
        y[31] &= 0x7f;
        if !is_canonical_field_element(&y) {
            return Err(KeyError::NonCanonical);
        }
        let point = CompressedEdwardsY(raw)
            .decompress()
            .ok_or(KeyError::NotOnCurve)?;
        // x = 0 with the sign bit set is the other non-canonical encoding; x = 0 only occurs
        // for y = ±1, which are of order 1 and 2 and rejected here.
        if point.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self {
            ed25519: raw,
            x25519: point.to_montgomery().to_bytes(),
        })
    }

    /// A key [`IdentityPublicKey::from_bytes`] accepted before, from its Ed25519 encoding and
    /// the X25519 form it derived then, without decoding the point again (a decompression and
    /// an inversion, the dearest part of restoring a session). For session snapshots only:
    /// they keep both forms, and whoever can write a snapshot holds the session's secrets
    /// anyway, so nothing here is checked beyond the lengths.
    pub(crate) fn from_snapshot_parts(ed25519: &[u8], x25519: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            ed25519: fixed::<32>(ed25519)?,
            x25519: fixed::<32>(x25519)?,
        })
    }

    /// The Ed25519 encoding (what goes on the wire and into the associated data).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.ed25519
    }

    /// The Ed25519 encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.ed25519
    }

    /// The same key as an X25519 public key (Montgomery u = (1+y)/(1−y)).
    pub fn to_x25519_bytes(&self) -> [u8; 32] {
        self.x25519
    }

    pub(crate) fn to_x25519(self) -> X25519PublicKey {
        X25519PublicKey(self.x25519)
    }

    /// Verifies an Ed25519 signature (RFC 8032, strict: no small-order `R`, canonical `s`).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.ed25519) else {
            return false;
        };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0))
            .is_ok()
    }

    /// The fingerprint as XEP-0384 §security and python-omemo show it: lowercase hex of the
    /// Curve25519 form, in 8 groups of 8 digits separated by spaces.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.x25519)
    }

    /// The same key in legacy form: `0x05 ‖ u`, as `<identityKey>` and
    /// `PreKeyWhisperMessage.identityKey` carry it. The Ed25519 sign bit is lost.
    pub fn to_legacy_bytes(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = crate::legacy::KEY_TYPE_DJB;
        out[1..].copy_from_slice(&self.x25519);
        out
    }

    /// Rebuilds the Ed25519 form of a Curve25519 (Montgomery) identity key from its
    /// u-coordinate and the sign of x (legacy bundles carry it in bit 7 of the signature's
    /// last byte), then applies the checks of [`IdentityPublicKey::from_bytes`].
    pub fn from_montgomery(u: &[u8], sign_bit: u8) -> Result<Self, KeyError> {
        let raw = fixed::<32>(u)?;
        if !is_canonical_field_element(&raw) {
            return Err(KeyError::NonCanonical);
        }
        if SMALL_ORDER_U.contains(&raw) {
            return Err(KeyError::SmallOrder);
        }
        let point = curve25519_dalek::montgomery::MontgomeryPoint(raw)
            .to_edwards(sign_bit & 1)
            .ok_or(KeyError::NotOnCurve)?;
        Self::from_bytes(point.compress().as_bytes())
    }

    /// The key id QXmpp, Kaidan and XEP-0434/0450 trust messages use: lowercase hex of the
    /// Ed25519 form, without separators.
    pub fn key_id_hex(&self) -> String {
        hex_lower(&self.ed25519)
    }

    /// The fingerprint as Converse.js, Kaidan and QXmpp show it: lowercase hex of the Ed25519
    /// form, in 8 groups of 8 digits separated by spaces.
    pub fn ed25519_fingerprint(&self) -> String {
        grouped(&hex_lower(&self.ed25519))
    }

    /// Both fingerprint forms, labelled, one line each, for showing to a person: clients
    /// differ in which form they display, so a user must be able to find the one theirs
    /// shows.
    pub fn fingerprint_lines(&self) -> [String; 2] {
        [
            format!(
                "Fingerprint, Ed25519 form    (Converse.js, Kaidan, QXmpp): {}",
                self.ed25519_fingerprint()
            ),
            format!(
                "Fingerprint, Curve25519 form (XEP-0384, python-omemo):     {}",
                self.fingerprint()
            ),
        ]
    }

    /// The sign bit of the Ed25519 encoding (the top bit of its last byte: the parity of the
    /// point's x coordinate). A Curve25519 key loses it, so libraries that keep identities in
    /// that form (libomemo.js in Converse.js) can only verify signatures of keys where it is
    /// 0; [`IdentityKeyPair::generate`] creates only those.
    pub fn ed25519_sign_bit(&self) -> bool {
        self.ed25519[31] & 0x80 != 0
    }
}

/// 64 hex digits in 8 groups of 8, separated by spaces.
fn grouped(hex: &str) -> String {
    let groups: Vec<&str> = (0..8).filter_map(|i| hex.get(i * 8..i * 8 + 8)).collect();
    groups.join(" ")
}

/// Lowercase hex of a Curve25519 key in 8 groups of 8 digits (python-omemo's
/// `format_identity_key`; the same string in both OMEMO versions).
pub(crate) fn fingerprint_of(u: &[u8; 32]) -> String {
    grouped(&hex_lower(u))
}

/// Whether `bytes` is a canonical u-coordinate that is not of small order.
pub(crate) fn check_x25519(bytes: &[u8; 32]) -> Result<(), KeyError> {
    if !is_canonical_field_element(bytes) {
        return Err(KeyError::NonCanonical);
    }
    if SMALL_ORDER_U.contains(bytes) {
        return Err(KeyError::SmallOrder);
    }
    Ok(())
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublicKey({})", hex_lower(&self.ed25519))
    }
}

/// Our own identity key pair (`IK`), derived from a 32-byte Ed25519 seed.
///
/// The seed is the only secret that needs storing; [`crate::hazmat::identity_seed`] exports it in a
/// zeroizing buffer. The private X25519 scalar is `clamp(SHA-512(seed)[..32])`.
pub struct IdentityKeyPair {
    signing: Box<SigningKey>,
    dh: Box<StaticSecret>,
    public: IdentityPublicKey,
}

impl IdentityKeyPair {
    /// Rebuilds the key pair from its seed ([`crate::hazmat::identity_from_seed`] outside
    /// this crate).
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = Box::new(SigningKey::from_bytes(seed));
        // Unclamped SHA-512(seed)[..32]; X25519 clamps it, giving the libsodium conversion.
        let scalar = Zeroizing::new(signing.to_scalar_bytes());
        let dh = Box::new(StaticSecret::from(*scalar));
        let verifying = signing.verifying_key();
        let public = IdentityPublicKey {
            ed25519: verifying.to_bytes(),
            x25519: verifying.to_montgomery().to_bytes(),
        };
        Self {
            signing,
            dh,
            public,
        }
    }

    /// Creates a fresh identity whose Ed25519 public key has sign bit 0 (see
    /// [`IdentityPublicKey::ed25519_sign_bit`]): seeds of 32 random bytes are drawn until
    /// one gives such a key, two draws on average.
    ///
    /// Both kinds of key are valid OMEMO 2 identities, but libraries that keep the identity
    /// in Curve25519 form and check signatures XEdDSA-style (libomemo.js in Converse.js,
    /// libsignal) assume sign bit 0 and refuse the bundle of the others.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        loop {
            rng.fill_bytes(seed.as_mut());
            let pair = Self::from_seed(&seed);
            if !pair.public.ed25519_sign_bit() {
                return pair;
            }
        }
    }

    /// The seed, for storage ([`crate::hazmat::identity_seed`] outside this crate).
    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public identity key.
    pub fn public_key(&self) -> IdentityPublicKey {
        self.public
    }

    /// Signs a message with Ed25519 (deterministic RFC 8032 signature). Used for the signed
    /// pre-key and the device label (`labelsig`).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// Signs like libsignal's `curve25519_sign` for a legacy bundle: an Ed25519 signature
    /// (deterministic nonce) with the identity's Ed25519 sign bit OR-ed into bit 7 of byte
    /// 63, so a verifier holding only the Curve25519 key can rebuild the Ed25519 key.
    pub fn sign_legacy(&self, message: &[u8]) -> Signature {
        let mut signature = self.sign(message).to_bytes();
        signature[63] |= self.public.ed25519[31] & 0x80;
        Signature(signature)
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }
}

/// A signed pre-key (`SPK`): an X25519 key pair, its id, the identity's signature over the raw
/// public key, and when it was created (Unix seconds, for the caller's rotation policy).
pub struct SignedPreKey {
    id: SignedPreKeyId,
    secret: Box<StaticSecret>,
    public: X25519PublicKey,
    signature: Signature,
    created_at: u64,
}

impl SignedPreKey {
    /// Generates and signs a new signed pre-key.
    pub fn generate(
        id: SignedPreKeyId,
        identity: &IdentityKeyPair,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from_secret(&secret);
        let signature = identity.sign(public.as_bytes());
        Self {
            id,
            secret,
            public,
            signature,
            created_at: now,
        }
    }

    /// Generates a signed pre-key for a legacy bundle: the signature covers the 33-byte
    /// `0x05 ‖ SPK` and carries the identity's sign bit (see
    /// [`IdentityKeyPair::sign_legacy`]).
    pub fn generate_legacy(
        id: SignedPreKeyId,
        identity: &IdentityKeyPair,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from_secret(&secret);
        let signature = identity.sign_legacy(&crate::legacy::serialize_public_key(&public));
        Self {
            id,
            secret,
            public,
            signature,
            created_at: now,
        }
    }

    /// Restores a stored signed pre-key.
    pub fn from_parts(
        id: SignedPreKeyId,
        secret: &[u8; 32],
        signature: Signature,
        created_at: u64,
    ) -> Self {
        let secret = Box::new(StaticSecret::from(*secret));
        let public = X25519PublicKey::from_secret(&secret);
        Self {
            id,
            secret,
            public,
            signature,
            created_at,
        }
    }

    /// The id.
    pub fn id(&self) -> SignedPreKeyId {
        self.id
    }

    /// The public key.
    pub fn public_key(&self) -> X25519PublicKey {
        self.public
    }

    /// The signature over the public key.
    pub fn signature(&self) -> Signature {
        self.signature
    }

    /// Creation time in Unix seconds.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// The private key, for storage.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

/// A one-time pre-key (`OPK`): an X25519 key pair and its id.
pub struct PreKey {
    id: PreKeyId,
    secret: Box<StaticSecret>,
    public: X25519PublicKey,
}

impl PreKey {
    /// Generates a new pre-key.
    pub fn generate(id: PreKeyId, rng: &mut impl CryptoRngCore) -> Self {
        let secret = Box::new(StaticSecret::random_from_rng(rng));
        let public = X25519PublicKey::from_secret(&secret);
        Self { id, secret, public }
    }

    /// Restores a stored pre-key.
    pub fn from_secret(id: PreKeyId, secret: &[u8; 32]) -> Self {
        let secret = Box::new(StaticSecret::from(*secret));
        let public = X25519PublicKey::from_secret(&secret);
        Self { id, secret, public }
    }

    /// The id.
    pub fn id(&self) -> PreKeyId {
        self.id
    }

    /// The public key.
    pub fn public_key(&self) -> X25519PublicKey {
        self.public
    }

    /// The private key, for storage.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .field("public", &self.public)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKey")
            .field("id", &self.id)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A device's published bundle (XEP-0384 §bundles), verified: the signed pre-key signature
/// checks out under the identity key, every key is valid, and there is at least one pre-key
/// with no duplicate ids. A `Bundle` value therefore never holds unchecked data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    identity_key: IdentityPublicKey,
    signed_pre_key_id: SignedPreKeyId,
    signed_pre_key: X25519PublicKey,
    signed_pre_key_signature: Signature,
    pre_keys: Vec<(PreKeyId, X25519PublicKey)>,
}

impl Bundle {
    /// Checks and assembles a bundle.
    pub fn new(
        identity_key: IdentityPublicKey,
        signed_pre_key_id: SignedPreKeyId,
        signed_pre_key: X25519PublicKey,
        signed_pre_key_signature: Signature,
        pre_keys: Vec<(PreKeyId, X25519PublicKey)>,
    ) -> Result<Self, BundleError> {
        if !identity_key.verify(signed_pre_key.as_bytes(), &signed_pre_key_signature) {
            return Err(BundleError::BadSignature);
        }
        Self::assemble(
            identity_key,
            signed_pre_key_id,
            signed_pre_key,
            signed_pre_key_signature,
            pre_keys,
        )
    }

    /// The checks other than the signature (which the caller made in its version's way).
    pub(crate) fn assemble(
        identity_key: IdentityPublicKey,
        signed_pre_key_id: SignedPreKeyId,
        signed_pre_key: X25519PublicKey,
        signed_pre_key_signature: Signature,
        pre_keys: Vec<(PreKeyId, X25519PublicKey)>,
    ) -> Result<Self, BundleError> {
        if pre_keys.is_empty() {
            return Err(BundleError::NoPreKeys);
        }
        let mut ids: Vec<PreKeyId> = pre_keys.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w.first() == w.get(1)) {
            if let Some(&dup) = pair.first() {
                return Err(BundleError::DuplicatePreKeyId(dup));
            }
        }
        Ok(Self {
            identity_key,
            signed_pre_key_id,
            signed_pre_key,
            signed_pre_key_signature,
            pre_keys,
        })
    }

    /// Builds our own bundle from our keys.
    pub fn from_own_keys<'a>(
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_keys: impl IntoIterator<Item = &'a PreKey>,
    ) -> Result<Self, BundleError> {
        Self::new(
            identity.public_key(),
            signed_pre_key.id(),
            signed_pre_key.public_key(),
            signed_pre_key.signature(),
            pre_keys
                .into_iter()
                .map(|pk| (pk.id(), pk.public_key()))
                .collect(),
        )
    }

    /// `<ik>`.
    pub fn identity_key(&self) -> IdentityPublicKey {
        self.identity_key
    }

    /// `<spk id>`.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.signed_pre_key_id
    }

    /// `<spk>`.
    pub fn signed_pre_key(&self) -> X25519PublicKey {
        self.signed_pre_key
    }

    /// `<spks>`.
    pub fn signed_pre_key_signature(&self) -> Signature {
        self.signed_pre_key_signature
    }

    /// `<prekeys>`, in bundle order.
    pub fn pre_keys(&self) -> &[(PreKeyId, X25519PublicKey)] {
        &self.pre_keys
    }

    /// The pre-key with this id, if the bundle has it.
    pub fn pre_key(&self, id: PreKeyId) -> Option<X25519PublicKey> {
        self.pre_keys
            .iter()
            .find(|(pk_id, _)| *pk_id == id)
            .map(|(_, key)| *key)
    }

    /// Picks one pre-key uniformly at random (XEP-0384: the initiator chooses one at random).
    pub fn choose_pre_key(&self, rng: &mut impl CryptoRngCore) -> PreKeyId {
        let len = self.pre_keys.len() as u64; // ≥ 1 by construction
                                              // Rejection sampling keeps the choice unbiased.
        let zone = u64::MAX - (u64::MAX % len);
        loop {
            let r = rng.next_u64();
            if r < zone {
                let index = usize::try_from(r % len).unwrap_or(0);
                if let Some((id, _)) = self.pre_keys.get(index) {
                    return *id;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_field_element_boundary() {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!is_canonical_field_element(&p));
        let mut below = p;
        below[0] = 0xec;
        assert!(is_canonical_field_element(&below));
        let mut high_bit = [0u8; 32];
        high_bit[31] = 0x80;
        assert!(!is_canonical_field_element(&high_bit));
    }

    #[test]
    fn small_order_x25519_keys_are_rejected() {
        // u = 0 (order 4 point), u = 1 (order 1 identity maps to y = 0 … order 2).
        assert_eq!(
            X25519PublicKey::from_bytes(&[0u8; 32]),
            Err(KeyError::SmallOrder)
        );
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(X25519PublicKey::from_bytes(&one).is_err());
        // A point of order 8 from the well-known blacklist.
        let order8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        assert_eq!(
            X25519PublicKey::from_bytes(&order8),
            Err(KeyError::SmallOrder)
        );
        assert!(matches!(
            X25519PublicKey::from_bytes(&[1u8; 31]),
            Err(KeyError::InvalidLength { .. })
        ));
    }

    #[test]
    fn the_small_order_list_is_exactly_the_small_order_points() {
        use curve25519_dalek::montgomery::MontgomeryPoint;
        for u in SMALL_ORDER_U {
            // Each listed point, multiplied by the cofactor 8, is the identity (u = 0 or
            // no Edwards image for u = −1).
            let eight = curve25519_dalek::Scalar::from(8u8);
            let product = MontgomeryPoint(u) * eight;
            assert_eq!(product.to_bytes(), [0u8; 32], "{u:?}");
            assert_eq!(X25519PublicKey::from_bytes(&u), Err(KeyError::SmallOrder));
        }
        // A random valid public key times 8 is not the identity.
        let key = X25519PublicKey::from_secret(&StaticSecret::from([3u8; 32]));
        let product = MontgomeryPoint(key.to_bytes()) * curve25519_dalek::Scalar::from(8u8);
        assert_ne!(product.to_bytes(), [0u8; 32]);
    }

    #[test]
    fn small_order_and_noncanonical_identity_keys_are_rejected() {
        // The Ed25519 identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            IdentityPublicKey::from_bytes(&identity),
            Err(KeyError::SmallOrder)
        );
        // y = 1 + p encoded non-canonically: 0xee ff … ff 7f.
        let mut noncanonical = [0xffu8; 32];
        noncanonical[0] = 0xee;
        noncanonical[31] = 0x7f;
        assert!(IdentityPublicKey::from_bytes(&noncanonical).is_err());
        // x = 0 with the sign bit set is non-canonical.
        let mut signed_identity = identity;
        signed_identity[31] |= 0x80;
        assert!(IdentityPublicKey::from_bytes(&signed_identity).is_err());
    }

    #[test]
    fn generated_identities_have_sign_bit_0() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        for _ in 0..500 {
            let key = IdentityKeyPair::generate(&mut rng).public_key();
            assert!(!key.ed25519_sign_bit(), "{key:?}");
            assert_eq!(key.as_bytes()[31] & 0x80, 0);
        }
        // Positive control: the same stream of plain seeds gives keys of both kinds, so the
        // loop above is what kept the sign bit clear.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let mut set = 0;
        for _ in 0..500 {
            let mut seed = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rng, &mut seed);
            if IdentityKeyPair::from_seed(&seed)
                .public_key()
                .ed25519_sign_bit()
            {
                set += 1;
            }
        }
        assert!(
            (150..350).contains(&set),
            "{set} of 500 plain seeds had sign bit 1"
        );
    }

    #[test]
    fn both_fingerprint_forms_are_grouped_and_labelled() {
        let key = IdentityKeyPair::from_seed(&[7u8; 32]).public_key();
        let ed = key.ed25519_fingerprint();
        assert_eq!(ed.replace(' ', ""), key.key_id_hex());
        assert_eq!(ed.split(' ').count(), 8);
        assert_eq!(
            key.fingerprint().replace(' ', ""),
            hex_lower(&key.to_x25519_bytes())
        );
        assert_ne!(ed, key.fingerprint());
        let [first, second] = key.fingerprint_lines();
        assert!(first.contains("Ed25519") && first.ends_with(&ed), "{first}");
        assert!(second.contains("Curve25519") && second.ends_with(&key.fingerprint()));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let identity = IdentityKeyPair::from_seed(&[7u8; 32]);
        let seed_hex = hex_lower(&[7u8; 32]);
        let debug = format!("{identity:?}");
        assert!(!debug.contains(&seed_hex));
        let spk = SignedPreKey::from_parts(
            SignedPreKeyId::new(1).unwrap(),
            &[9u8; 32],
            identity.sign(b"x"),
            0,
        );
        assert!(!format!("{spk:?}").contains(&hex_lower(&[9u8; 32])));
    }
}
