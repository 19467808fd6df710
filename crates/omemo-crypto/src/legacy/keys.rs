//! Legacy key encodings and the legacy bundle (XEP-0384 0.3 §4.3; libsignal `Curve`,
//! `curve25519_sign`/`curve25519_verify`; python-oldmemo `etree.parse_bundle`).

use core::fmt;

use rand_core::CryptoRngCore;

use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::keys::{
    check_x25519, fingerprint_of, hex_lower, Bundle as CoreBundle, BundleError, IdentityKeyPair,
    IdentityPublicKey, KeyError, PreKey, Signature, SignedPreKey, X25519PublicKey,
};

/// The type byte in front of every legacy public key (libsignal `DJB_TYPE`).
pub const KEY_TYPE_DJB: u8 = 0x05;

/// `0x05 ‖ u`: the 33-byte form every legacy public key takes on the wire.
pub fn serialize_public_key(key: &X25519PublicKey) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = KEY_TYPE_DJB;
    out[1..].copy_from_slice(key.as_bytes());
    out
}

fn strip_type(bytes: &[u8]) -> Result<[u8; 32], KeyError> {
    let (&kind, rest) = bytes.split_first().ok_or(KeyError::InvalidLength {
        expected: 33,
        actual: 0,
    })?;
    if bytes.len() != 33 {
        return Err(KeyError::InvalidLength {
            expected: 33,
            actual: bytes.len(),
        });
    }
    if kind != KEY_TYPE_DJB {
        return Err(KeyError::UnknownKeyType(kind));
    }
    let mut u = [0u8; 32];
    u.copy_from_slice(rest);
    Ok(u)
}

/// Parses a 33-byte legacy public key (`0x05 ‖ u`) with the checks of
/// [`X25519PublicKey::from_bytes`]. Other lengths and type bytes are refused, as python-oldmemo
/// and libsignal do.
pub fn parse_public_key(bytes: &[u8]) -> Result<X25519PublicKey, KeyError> {
    X25519PublicKey::from_bytes(&strip_type(bytes)?)
}

/// A device identity key as legacy OMEMO carries it: the Curve25519 u-coordinate, serialized
/// `0x05 ‖ u` (`<identityKey>`, `PreKeyWhisperMessage.identityKey`, the associated data).
///
/// It is the Montgomery form of the device's Ed25519 [`IdentityPublicKey`] and has lost the
/// sign bit: compare it with a known identity through [`IdentityKey::matches`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey([u8; 32]);

impl IdentityKey {
    /// Parses `0x05 ‖ u` with the checks of [`X25519PublicKey::from_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let u = strip_type(bytes)?;
        check_x25519(&u)?;
        Ok(Self(u))
    }

    /// The 33-byte wire form `0x05 ‖ u`.
    pub fn to_bytes(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = KEY_TYPE_DJB;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// The u-coordinate (the X25519 public key).
    pub fn x25519_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_x25519(self) -> X25519PublicKey {
        X25519PublicKey::from_checked(self.0)
    }

    /// Whether this is the Curve25519 form of `identity` (same u-coordinate).
    pub fn matches(&self, identity: &IdentityPublicKey) -> bool {
        self.0 == identity.to_x25519_bytes()
    }

    /// The fingerprint, the same string [`IdentityPublicKey::fingerprint`] shows for the
    /// same device: lowercase hex of u in 8 groups of 8.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.0)
    }
}

impl From<IdentityPublicKey> for IdentityKey {
    fn from(key: IdentityPublicKey) -> Self {
        Self(key.to_x25519_bytes())
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "legacy::IdentityKey(05{})", hex_lower(&self.0))
    }
}

/// Verifies a legacy signed pre-key signature the libsignal way (`curve25519_verify`): the
/// Ed25519 key is rebuilt from `identity` and bit 7 of the signature's byte 63, the bit is
/// cleared, and the rest is checked as an Ed25519 signature over `0x05 ‖ SPK`. Returns the
/// rebuilt Ed25519 identity.
fn verify_signed_pre_key(
    identity: &IdentityKey,
    signed_pre_key: &X25519PublicKey,
    signature: &Signature,
) -> Result<IdentityPublicKey, BundleError> {
    let mut raw = signature.to_bytes();
    let sign_bit = raw[63] >> 7;
    raw[63] &= 0x7f;
    let ed25519 = IdentityPublicKey::from_montgomery(identity.x25519_bytes(), sign_bit)
        .map_err(|_| BundleError::BadIdentityKey)?;
    let message = serialize_public_key(signed_pre_key);
    let raw = Signature::from_bytes(&raw).map_err(|_| BundleError::BadSignature)?;
    if !ed25519.verify(&message, &raw) {
        return Err(BundleError::BadSignature);
    }
    Ok(ed25519)
}

/// A verified legacy bundle (`<bundle xmlns='eu.siacs.conversations.axolotl'>`): the signed
/// pre-key signature checks out the libsignal way, every key is valid, there is at least one
/// pre-key and no id appears twice. The device's Ed25519 identity is rebuilt on the way (the
/// form trust and OMEMO 2 use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    core: CoreBundle,
}

impl Bundle {
    /// Checks and assembles a bundle from its wire values: `<identityKey>`,
    /// `<signedPreKeyPublic signedPreKeyId>`, `<signedPreKeySignature>` (sign bit included)
    /// and `<prekeys>`.
    pub fn new(
        identity_key: IdentityKey,
        signed_pre_key_id: SignedPreKeyId,
        signed_pre_key: X25519PublicKey,
        signed_pre_key_signature: Signature,
        pre_keys: Vec<(PreKeyId, X25519PublicKey)>,
    ) -> Result<Self, BundleError> {
        let ed25519 =
            verify_signed_pre_key(&identity_key, &signed_pre_key, &signed_pre_key_signature)?;
        Ok(Self {
            core: CoreBundle::assemble(
                ed25519,
                signed_pre_key_id,
                signed_pre_key,
                signed_pre_key_signature,
                pre_keys,
            )?,
        })
    }

    /// Builds our own legacy bundle; `signed_pre_key` must come from
    /// [`SignedPreKey::generate_legacy`] (an OMEMO 2 signed pre-key fails the check).
    pub fn from_own_keys<'a>(
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_keys: impl IntoIterator<Item = &'a PreKey>,
    ) -> Result<Self, BundleError> {
        Self::new(
            IdentityKey::from(identity.public_key()),
            signed_pre_key.id(),
            signed_pre_key.public_key(),
            signed_pre_key.signature(),
            pre_keys
                .into_iter()
                .map(|pk| (pk.id(), pk.public_key()))
                .collect(),
        )
    }

    pub(crate) fn core(&self) -> &CoreBundle {
        &self.core
    }

    /// The device identity in Ed25519 form, rebuilt with the sign bit of the signature.
    pub fn identity_key(&self) -> IdentityPublicKey {
        self.core.identity_key()
    }

    /// `<identityKey>`.
    pub fn legacy_identity_key(&self) -> IdentityKey {
        IdentityKey::from(self.core.identity_key())
    }

    /// `signedPreKeyId`.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.core.signed_pre_key_id()
    }

    /// `<signedPreKeyPublic>` (without the type byte).
    pub fn signed_pre_key(&self) -> X25519PublicKey {
        self.core.signed_pre_key()
    }

    /// `<signedPreKeySignature>`, sign bit included.
    pub fn signed_pre_key_signature(&self) -> Signature {
        self.core.signed_pre_key_signature()
    }

    /// `<prekeys>`, in bundle order.
    pub fn pre_keys(&self) -> &[(PreKeyId, X25519PublicKey)] {
        self.core.pre_keys()
    }

    /// The pre-key with this id, if the bundle has it.
    pub fn pre_key(&self, id: PreKeyId) -> Option<X25519PublicKey> {
        self.core.pre_key(id)
    }

    /// Picks one pre-key uniformly at random.
    pub fn choose_pre_key(&self, rng: &mut impl CryptoRngCore) -> PreKeyId {
        self.core.choose_pre_key(rng)
    }
}
