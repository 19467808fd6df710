//! Payload encryption (XEP-0384 §protocol-message_encryption): the SCE envelope is encrypted
//! once with a fresh 32-byte key, and `key ‖ tag` (48 bytes) is what each device's ratchet
//! carries. An empty OMEMO message has no payload; its ratchet plaintext is 32 zero bytes.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::PayloadError;
use crate::kdf::{CipherKeys, INFO_PAYLOAD, MAC_LEN};

/// Length of the key material of a message with payload: 32-byte key ‖ 16-byte tag.
pub const KEY_MATERIAL_LEN: usize = 32 + MAC_LEN;
/// Length of the key material of an empty OMEMO message.
pub const EMPTY_KEY_MATERIAL_LEN: usize = 32;

/// The plaintext one ratchet message carries: `key ‖ tag`, or 32 zero bytes for an empty
/// OMEMO message (legacy: 16-byte key ‖ 16-byte tag, or a bare 16-byte key, see
/// [`crate::legacy::payload`]). Wiped on drop.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    /// The key material of an empty OMEMO message (32 zero bytes).
    pub fn empty() -> Self {
        Self(Zeroizing::new(vec![0u8; EMPTY_KEY_MATERIAL_LEN]))
    }

    /// Wraps decrypted ratchet plaintext.
    pub fn from_plaintext(plaintext: Zeroizing<Vec<u8>>) -> Self {
        Self(plaintext)
    }

    /// The bytes to encrypt with each device's ratchet.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

/// Encrypts a serialized SCE envelope with a fresh key from `rng`. Returns the `<payload>`
/// ciphertext and the key material to wrap for every recipient device.
pub fn encrypt(plaintext: &[u8], rng: &mut impl CryptoRngCore) -> (Vec<u8>, KeyMaterial) {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    encrypt_with_key(&key, plaintext)
}

pub(crate) fn encrypt_with_key(key: &[u8; 32], plaintext: &[u8]) -> (Vec<u8>, KeyMaterial) {
    let keys = CipherKeys::derive(key, INFO_PAYLOAD);
    let ciphertext = keys.encrypt(plaintext);
    let tag = keys.mac(&[&ciphertext]);
    let mut material = Zeroizing::new(Vec::with_capacity(KEY_MATERIAL_LEN));
    material.extend_from_slice(key);
    material.extend_from_slice(&tag);
    (ciphertext, KeyMaterial(material))
}

/// Verifies the tag and decrypts a `<payload>` with the key material a ratchet message
/// carried. The tag covers only the ciphertext.
pub fn decrypt(ciphertext: &[u8], key_material: &[u8]) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
    if key_material.len() != KEY_MATERIAL_LEN {
        return Err(PayloadError::KeyMaterialLength(key_material.len()));
    }
    let (key, tag) = key_material.split_at(32);
    let keys = CipherKeys::derive(key, INFO_PAYLOAD);
    if !keys.verify_mac(&[ciphertext], tag) {
        return Err(PayloadError::BadMac);
    }
    keys.decrypt(ciphertext).ok_or(PayloadError::BadCiphertext)
}
