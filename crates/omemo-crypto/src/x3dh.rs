//! X3DH as OMEMO 2 specifies it (XEP-0384 §protocol-key_exchange).
//!
//! `SK = HKDF-SHA-256(salt = 0³², IKM = 0xFF³² ‖ DH1 ‖ DH2 ‖ DH3 ‖ DH4, "OMEMO X3DH", 32)` with
//! `DH1 = DH(IK_A, SPK_B)`, `DH2 = DH(EK_A, IK_B)`, `DH3 = DH(EK_A, SPK_B)`,
//! `DH4 = DH(EK_A, OPK_B)`; the one-time pre-key is mandatory. The associated data is
//! `AD = IK_A ‖ IK_B` (Ed25519 forms, initiator first) for the whole life of the session.
//!
//! Legacy OMEMO runs the same agreement with the info `"WhisperText"` and
//! `AD = 0x05‖IK_A ‖ 0x05‖IK_B` in Curve25519 form (LEGACY-NOTES §4); the public functions
//! here are OMEMO 2's; [`GenericSession`](crate::GenericSession) reaches both versions through
//! crate-internal functions generic over [`crate::Version`].

use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::SessionCreationError;
use crate::ids::PreKeyId;
use crate::kdf::{hkdf_zero_salt, Key32, INFO_X3DH, LEGACY_INFO_X3DH};
use crate::keys::{
    Bundle, IdentityKeyPair, IdentityPublicKey, PreKey, SignedPreKey, X25519PublicKey,
};
use crate::version::{KeyExchangeHeader, Omemo2, ProtocolVersion, Version};

/// The outcome of an X3DH key agreement: the shared secret `SK` (the first root key) and the
/// associated data `AD`. The secret never leaves the crate.
pub struct X3dhOutput {
    // Read by the vector tests; sessions take the secret from the internal `Agreement`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) shared_secret: Key32,
    pub(crate) associated_data: [u8; 64],
}

impl X3dhOutput {
    /// `AD = IK_A ‖ IK_B`.
    pub fn associated_data(&self) -> &[u8; 64] {
        &self.associated_data
    }
}

impl core::fmt::Debug for X3dhOutput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("X3dhOutput").finish_non_exhaustive()
    }
}

fn dh(secret: &StaticSecret, public: &X25519PublicKey) -> Result<[u8; 32], SessionCreationError> {
    let shared = secret.diffie_hellman(&public.to_dalek());
    if !shared.was_contributory() {
        return Err(SessionCreationError::NonContributory);
    }
    Ok(shared.to_bytes())
}

/// `SK` and `AD` of either version.
pub(crate) struct Agreement {
    pub(crate) shared_secret: Key32,
    pub(crate) associated_data: Vec<u8>,
}

fn derive_with<V: Version>(
    dhs: [[u8; 32]; 4],
    ik_a: &V::IdentityKey,
    ik_b: &V::IdentityKey,
) -> Agreement {
    let info = match V::VERSION {
        ProtocolVersion::Omemo2 => INFO_X3DH,
        ProtocolVersion::Legacy => LEGACY_INFO_X3DH,
    };
    let mut ikm = Zeroizing::new([0xffu8; 32 * 5]);
    for (chunk, value) in ikm.chunks_exact_mut(32).skip(1).zip(dhs.iter()) {
        chunk.copy_from_slice(value);
    }
    let mut dhs = dhs;
    zeroize::Zeroize::zeroize(&mut dhs);
    let mut sk = [0u8; 32];
    hkdf_zero_salt(ikm.as_ref(), info, &mut sk);
    let mut associated_data = V::identity_bytes(ik_a);
    associated_data.extend_from_slice(&V::identity_bytes(ik_b));
    Agreement {
        shared_secret: Key32::new(sk),
        associated_data,
    }
}

/// The initiator's side for either version, with a given ephemeral key.
pub(crate) fn agree_active<V: Version>(
    own: &IdentityKeyPair,
    bundle: &V::Bundle,
    pre_key: PreKeyId,
    ephemeral: &StaticSecret,
) -> Result<(Agreement, KeyExchangeHeader<V::IdentityKey>), SessionCreationError> {
    let core = V::bundle_core(bundle);
    let opk = core
        .pre_key(pre_key)
        .ok_or(SessionCreationError::UnknownPreKey(pre_key))?;
    let spk = core.signed_pre_key();
    let ik_b = core.identity_key();
    let dhs = [
        dh(own.dh_secret(), &spk)?,
        dh(ephemeral, &ik_b.to_x25519())?,
        dh(ephemeral, &spk)?,
        dh(ephemeral, &opk)?,
    ];
    let own_key = V::own_identity(own);
    let agreement = derive_with::<V>(dhs, &own_key, &V::identity_from_public(ik_b));
    let header = KeyExchangeHeader {
        pre_key_id: pre_key,
        signed_pre_key_id: core.signed_pre_key_id(),
        identity_key: own_key,
        ephemeral_key: X25519PublicKey::from_secret(ephemeral),
    };
    Ok((agreement, header))
}

/// The responder's side for either version.
pub(crate) fn agree_passive<V: Version>(
    own: &IdentityKeyPair,
    signed_pre_key: &SignedPreKey,
    pre_key: &PreKey,
    their_identity: &V::IdentityKey,
    their_ephemeral: &X25519PublicKey,
) -> Result<Agreement, SessionCreationError> {
    let dhs = [
        dh(signed_pre_key.secret(), &V::identity_x25519(their_identity))?,
        dh(own.dh_secret(), their_ephemeral)?,
        dh(signed_pre_key.secret(), their_ephemeral)?,
        dh(pre_key.secret(), their_ephemeral)?,
    ];
    Ok(derive_with::<V>(dhs, their_identity, &V::own_identity(own)))
}

fn output_of(agreement: Agreement) -> X3dhOutput {
    // Two 32-byte Ed25519 keys: always 64 bytes.
    let mut associated_data = [0u8; 64];
    if let Some(ad) = agreement.associated_data.get(..64) {
        associated_data.copy_from_slice(ad);
    }
    X3dhOutput {
        shared_secret: agreement.shared_secret,
        associated_data,
    }
}

/// The initiator's side (Alice): agrees on `SK` with the owner of `bundle`, using the
/// one-time pre-key `pre_key` from it and a fresh ephemeral key drawn from `rng`.
///
/// Returns the output and the key-exchange header (`pk_id`, `spk_id`, `ik`, `ek`) to send.
pub fn active(
    own: &IdentityKeyPair,
    bundle: &Bundle,
    pre_key: PreKeyId,
    rng: &mut impl CryptoRngCore,
) -> Result<(X3dhOutput, KeyExchangeParameters), SessionCreationError> {
    let ephemeral = StaticSecret::random_from_rng(rng);
    active_with_ephemeral(own, bundle, pre_key, &ephemeral)
}

pub(crate) fn active_with_ephemeral(
    own: &IdentityKeyPair,
    bundle: &Bundle,
    pre_key: PreKeyId,
    ephemeral: &StaticSecret,
) -> Result<(X3dhOutput, KeyExchangeParameters), SessionCreationError> {
    let (agreement, header) = agree_active::<Omemo2>(own, bundle, pre_key, ephemeral)?;
    Ok((output_of(agreement), KeyExchangeParameters(header)))
}

/// The responder's side (Bob): agrees on `SK` from the initiator's identity and ephemeral
/// keys, with our signed pre-key and the one-time pre-key the initiator chose.
pub fn passive(
    own: &IdentityKeyPair,
    signed_pre_key: &SignedPreKey,
    pre_key: &PreKey,
    their_identity: &IdentityPublicKey,
    their_ephemeral: &X25519PublicKey,
) -> Result<X3dhOutput, SessionCreationError> {
    agree_passive::<Omemo2>(
        own,
        signed_pre_key,
        pre_key,
        their_identity,
        their_ephemeral,
    )
    .map(output_of)
}

/// The public values of an active key agreement that go into `OMEMOKeyExchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyExchangeParameters(pub(crate) KeyExchangeHeader<IdentityPublicKey>);

impl KeyExchangeParameters {
    /// The ephemeral key `EK_A`.
    pub fn ephemeral_key(&self) -> X25519PublicKey {
        self.0.ephemeral_key
    }
}
