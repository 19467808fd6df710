//! Legacy payload encryption (XEP-0384 0.3 §4.5–4.6; python-oldmemo `encrypt_plaintext`,
//! `encrypt_empty`; Conversations `XmppAxolotlMessage`).
//!
//! Only the `<body>` text is encrypted, with AES-128-GCM under a fresh 16-byte key and a
//! 12-byte IV, no associated data. `<payload>` holds the ciphertext without the tag; the
//! ratchet of every recipient device carries `key ‖ tag` (32 bytes). A key-transport (empty)
//! message has no payload: its ratchet plaintext is a fresh 16-byte key alone, and `<iv>` is
//! still sent.
//!
//! Old Conversations and ChatSecure sent 16-byte IVs; [`decrypt`] accepts both lengths
//! (GCM then derives its counter block through GHASH).

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{AesGcm, Nonce};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::PayloadError;
use crate::payload::KeyMaterial;

/// Length of the AES-128 key.
pub const KEY_LEN: usize = 16;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of the IV we send.
pub const IV_LEN: usize = 12;
/// Length of the IV old clients sent, which we accept.
pub const LONG_IV_LEN: usize = 16;
/// Length of the key material of a message with payload: key ‖ tag.
pub const KEY_MATERIAL_LEN: usize = KEY_LEN + TAG_LEN;
/// Length of the key material of a key-transport (empty) message: the key alone.
pub const EMPTY_KEY_MATERIAL_LEN: usize = KEY_LEN;

type Aes128Gcm12 = AesGcm<aes::Aes128, U12>;
type Aes128Gcm16 = AesGcm<aes::Aes128, U16>;

/// An encrypted body: `<payload>`, `<iv>`, and the key material for every device.
pub struct EncryptedPayload {
    /// The GCM ciphertext without the tag (`<payload>`).
    pub ciphertext: Vec<u8>,
    /// The IV (`<iv>`).
    pub iv: [u8; IV_LEN],
    /// `key ‖ tag`, to encrypt with each device's ratchet.
    pub key_material: KeyMaterial,
}

impl core::fmt::Debug for EncryptedPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EncryptedPayload")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Encrypts a body with a fresh key and IV from `rng` (the key is drawn first, as
/// python-oldmemo does).
pub fn encrypt(plaintext: &[u8], rng: &mut impl CryptoRngCore) -> EncryptedPayload {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill_bytes(key.as_mut());
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    encrypt_with(&key, &iv, plaintext)
}

pub(crate) fn encrypt_with(
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> EncryptedPayload {
    let cipher = Aes128Gcm12::new(key.into());
    // AES-GCM fails only for plaintexts beyond 2³⁶ bytes, far above any stanza.
    let mut sealed = cipher
        .encrypt(Nonce::<U12>::from_slice(iv), plaintext)
        .unwrap_or_default();
    let tag = sealed.split_off(sealed.len().saturating_sub(TAG_LEN));
    let mut material = Zeroizing::new(Vec::with_capacity(KEY_MATERIAL_LEN));
    material.extend_from_slice(key);
    material.extend_from_slice(&tag);
    EncryptedPayload {
        ciphertext: sealed,
        iv: *iv,
        key_material: KeyMaterial::from_plaintext(material),
    }
}

/// The key material and IV of a key-transport (empty) message: a fresh 16-byte key, no tag.
/// The IV is drawn first, as python-oldmemo does.
pub fn empty(rng: &mut impl CryptoRngCore) -> (KeyMaterial, [u8; IV_LEN]) {
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    rng.fill_bytes(key.as_mut());
    (KeyMaterial::from_plaintext(key), iv)
}

/// Decrypts a `<payload>` with the `<iv>` (12 or 16 bytes) and the key material a ratchet
/// message carried (`key ‖ tag`, exactly 32 bytes as python-oldmemo requires).
pub fn decrypt(
    ciphertext: &[u8],
    iv: &[u8],
    key_material: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
    if key_material.len() != KEY_MATERIAL_LEN {
        return Err(PayloadError::KeyMaterialLength(key_material.len()));
    }
    let (key, tag) = key_material.split_at(KEY_LEN);
    let mut sealed = Vec::with_capacity(ciphertext.len() + TAG_LEN);
    sealed.extend_from_slice(ciphertext);
    sealed.extend_from_slice(tag);
    let opened = match iv.len() {
        IV_LEN => Aes128Gcm12::new(key.into()).decrypt(Nonce::<U12>::from_slice(iv), &sealed[..]),
        LONG_IV_LEN => {
            Aes128Gcm16::new(key.into()).decrypt(Nonce::<U16>::from_slice(iv), &sealed[..])
        }
        other => return Err(PayloadError::IvLength(other)),
    };
    opened.map(Zeroizing::new).map_err(|_| PayloadError::BadMac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let sealed = encrypt(b"hello", &mut rng);
        assert_eq!(sealed.key_material.as_bytes().len(), KEY_MATERIAL_LEN);
        assert_eq!(sealed.ciphertext.len(), 5);
        let opened = decrypt(
            &sealed.ciphertext,
            &sealed.iv,
            sealed.key_material.as_bytes(),
        );
        assert_eq!(opened.as_deref().map(|v| &v[..]), Ok(&b"hello"[..]));
        let mut bad = sealed.key_material.as_bytes().to_vec();
        bad[20] ^= 1;
        assert_eq!(
            decrypt(&sealed.ciphertext, &sealed.iv, &bad),
            Err(PayloadError::BadMac)
        );
        assert_eq!(
            decrypt(
                &sealed.ciphertext,
                &sealed.iv[..11],
                sealed.key_material.as_bytes()
            ),
            Err(PayloadError::IvLength(11))
        );
        assert_eq!(
            decrypt(&sealed.ciphertext, &sealed.iv, &bad[..16]),
            Err(PayloadError::KeyMaterialLength(16))
        );
        let (key, iv) = empty(&mut rng);
        assert_eq!(key.as_bytes().len(), EMPTY_KEY_MATERIAL_LEN);
        assert_ne!(iv, [0u8; IV_LEN]);
    }

    use rand_core::SeedableRng;
}
