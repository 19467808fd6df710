//! The primitives every part is made of: HKDF, HMAC, AES-256-CBC and the ratchet KDFs.
//!
//! OMEMO 2 constants are from XEP-0384 §protocol-double_ratchet and
//! §protocol-message_encryption; the legacy ones (`WhisperText`, `WhisperRatchet`,
//! `WhisperMessageKeys`, 8-byte MAC) from libsignal and python-oldmemo (LEGACY-NOTES §1).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// HKDF info of the X3DH key agreement.
pub(crate) const INFO_X3DH: &[u8] = b"OMEMO X3DH";
/// HKDF info of `KDF_RK`.
pub(crate) const INFO_ROOT_CHAIN: &[u8] = b"OMEMO Root Chain";
/// HKDF info of the per-message key material.
pub(crate) const INFO_MESSAGE_KEY: &[u8] = b"OMEMO Message Key Material";
/// HKDF info of the payload key material.
pub(crate) const INFO_PAYLOAD: &[u8] = b"OMEMO Payload";
/// Length of the truncated HMAC tags.
pub(crate) const MAC_LEN: usize = 16;
/// Legacy: HKDF info of the X3DH key agreement.
pub(crate) const LEGACY_INFO_X3DH: &[u8] = b"WhisperText";
/// Legacy: HKDF info of `KDF_RK`.
pub(crate) const LEGACY_INFO_ROOT_CHAIN: &[u8] = b"WhisperRatchet";
/// Legacy: HKDF info of the per-message key material.
pub(crate) const LEGACY_INFO_MESSAGE_KEY: &[u8] = b"WhisperMessageKeys";
/// Legacy: length of the truncated ratchet MAC (libsignal `SignalMessage.MAC_LENGTH`).
pub(crate) const LEGACY_MAC_LEN: usize = 8;

/// A 32-byte secret (root key `RK`, chain key `CKs`/`CKr`, message key `mk`, …), boxed so
/// moves don't leave copies behind, and wiped on drop. No `Debug`, no `Copy`; equality is
/// constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32(Box<[u8; 32]>);

impl PartialEq for Key32 {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&*other.0))
    }
}

impl Eq for Key32 {}

impl Key32 {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Self(Box::new([0u8; 32]));
        if bytes.len() != 32 {
            return None;
        }
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// AES key ‖ HMAC key ‖ IV, the 80-byte HKDF output used for both ratchet messages and
/// payloads.
pub(crate) struct CipherKeys {
    okm: Zeroizing<[u8; 80]>,
}

impl CipherKeys {
    /// HKDF-SHA-256 with a zero salt over `ikm`, 80 bytes.
    pub(crate) fn derive(ikm: &[u8], info: &[u8]) -> Self {
        let mut okm = Zeroizing::new([0u8; 80]);
        hkdf_zero_salt(ikm, info, okm.as_mut());
        Self { okm }
    }

    fn aes_key(&self) -> &[u8] {
        &self.okm[..32]
    }

    fn hmac_key(&self) -> &[u8] {
        &self.okm[32..64]
    }

    fn iv(&self) -> &[u8] {
        &self.okm[64..]
    }

    /// AES-256-CBC with PKCS#7 padding.
    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        Aes256CbcEnc::new(self.aes_key().into(), self.iv().into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext)
    }

    /// AES-256-CBC decryption; `None` on bad length or padding.
    pub(crate) fn decrypt(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        Aes256CbcDec::new(self.aes_key().into(), self.iv().into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .ok()
            .map(Zeroizing::new)
    }

    /// HMAC-SHA-256 over the concatenation of `parts`, truncated to 16 bytes.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        truncated_mac(self.hmac_key(), parts)
    }

    /// HMAC-SHA-256 over the concatenation of `parts`, truncated to `len` (≤ 32) bytes.
    pub(crate) fn mac_vec(&self, parts: &[&[u8]], len: usize) -> Vec<u8> {
        let mut full = hmac_parts(self.hmac_key(), parts).to_vec();
        full.truncate(len);
        full
    }

    /// Constant-time check of a tag of `len` bytes over the concatenation of `parts`.
    pub(crate) fn verify_mac_len(&self, parts: &[&[u8]], tag: &[u8], len: usize) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(self.hmac_key()) else {
            return false;
        };
        for part in parts {
            mac.update(part);
        }
        len > 0 && tag.len() == len && mac.verify_truncated_left(tag).is_ok()
    }

    /// Constant-time check of a 16-byte tag over the concatenation of `parts`.
    pub(crate) fn verify_mac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(self.hmac_key()) else {
            return false;
        };
        for part in parts {
            mac.update(part);
        }
        tag.len() == MAC_LEN && mac.verify_truncated_left(tag).is_ok()
    }

    #[cfg(test)]
    pub(crate) fn okm(&self) -> &[u8; 80] {
        &self.okm
    }
}

fn hmac_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC accepts keys of any length, so this cannot fail.
    if let Ok(mut mac) = HmacSha256::new_from_slice(key) {
        for part in parts {
            mac.update(part);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn truncated_mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let full = Zeroizing::new(hmac_parts(key, parts));
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// HKDF-SHA-256 with salt = 32 zero bytes (identical to an absent salt, RFC 5869 §2.2).
pub(crate) fn hkdf_zero_salt(ikm: &[u8], info: &[u8], okm: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), ikm);
    // Output lengths used here (32, 64, 80) are far below the 255·32 byte limit.
    let _ = hk.expand(info, okm);
}

/// `KDF_RK(rk, dh_out)`: HKDF-SHA-256(salt = rk, ikm = dh_out, "OMEMO Root Chain", 64) split
/// into the new root key and a chain key.
#[cfg(test)]
pub(crate) fn kdf_rk(root_key: &Key32, dh_out: &[u8; 32]) -> (Key32, Key32) {
    kdf_rk_with(root_key, dh_out, INFO_ROOT_CHAIN)
}

/// `KDF_RK` with the HKDF info of a protocol version.
pub(crate) fn kdf_rk_with(root_key: &Key32, dh_out: &[u8; 32], info: &[u8]) -> (Key32, Key32) {
    let hk = Hkdf::<Sha256>::new(Some(root_key.as_bytes()), dh_out);
    let mut okm = Zeroizing::new([0u8; 64]);
    let _ = hk.expand(info, okm.as_mut());
    let mut rk = [0u8; 32];
    let mut ck = [0u8; 32];
    rk.copy_from_slice(&okm[..32]);
    ck.copy_from_slice(&okm[32..]);
    (Key32::new(rk), Key32::new(ck))
}

/// `KDF_CK(ck)`: message key = HMAC(ck, 0x01), next chain key = HMAC(ck, 0x02).
pub(crate) fn kdf_ck(chain_key: &Key32) -> (Key32, Key32) {
    (
        Key32::new(hmac_full(chain_key.as_bytes(), &[0x02])),
        Key32::new(hmac_full(chain_key.as_bytes(), &[0x01])),
    )
}

fn hmac_full(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = HmacSha256::new_from_slice(key) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

#[cfg(test)]
mod key32_tests {
    use super::Key32;

    #[test]
    fn key32_equality_compares_every_byte() {
        let base = [7u8; 32];
        assert!(Key32::new(base) == Key32::new(base));
        for index in [0, 15, 31] {
            let mut other = base;
            other[index] ^= 1;
            assert!(
                Key32::new(base) != Key32::new(other),
                "byte {index} ignored"
            );
        }
    }
}
