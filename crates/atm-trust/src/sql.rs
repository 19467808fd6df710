//! Conversions between SQLite column values and the crate's checked types.

use std::cell::RefCell;
use std::collections::HashMap;

use omemo_crypto::{DeviceId, IdentityPublicKey, PreKeyId, SignedPreKeyId};
use rusqlite::Row;

use crate::error::{Result, StoreError};

/// Unix seconds as stored (SQLite integers are signed; times past 2^63 are clamped).
pub(crate) fn time_to_sql(time: u64) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

/// Reads a stored time; a negative value means the row was tampered with.
pub(crate) fn time_from_sql(table: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::corrupt(table, format!("negative time {value}")))
}

pub(crate) fn opt_time_from_sql(table: &'static str, value: Option<i64>) -> Result<Option<u64>> {
    value.map(|v| time_from_sql(table, v)).transpose()
}

fn id_from_sql<T: TryFrom<u64>>(table: &'static str, what: &str, value: i64) -> Result<T> {
    u64::try_from(value)
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| StoreError::corrupt(table, format!("{what} {value} out of range")))
}

pub(crate) fn device_id_from_sql(table: &'static str, value: i64) -> Result<DeviceId> {
    id_from_sql(table, "device id", value)
}

pub(crate) fn pre_key_id_from_sql(table: &'static str, value: i64) -> Result<PreKeyId> {
    id_from_sql(table, "pre-key id", value)
}

pub(crate) fn signed_pre_key_id_from_sql(
    table: &'static str,
    value: i64,
) -> Result<SignedPreKeyId> {
    id_from_sql(table, "signed pre-key id", value)
}

/// How many decoded identity keys each thread keeps (about 100 bytes each); when full, the
/// memo starts over.
const DECODED_KEYS: usize = 1024;

thread_local! {
    /// Identity keys already decoded on this thread, by their stored bytes. Decoding is a
    /// point decompression and an inversion (~15 µs), and the same few keys are read for
    /// every message of a conversation; the result depends on the bytes alone.
    static DECODED: RefCell<HashMap<[u8; 32], IdentityPublicKey>> = RefCell::new(HashMap::new());
}

/// Parses a stored Ed25519 identity key.
pub(crate) fn identity_key_from_sql(
    table: &'static str,
    bytes: &[u8],
) -> Result<IdentityPublicKey> {
    let corrupt = |err| StoreError::corrupt(table, format!("invalid identity key: {err}"));
    let Ok(raw) = <[u8; 32]>::try_from(bytes) else {
        return IdentityPublicKey::from_bytes(bytes).map_err(corrupt);
    };
    if let Some(key) = DECODED.with_borrow(|decoded| decoded.get(&raw).copied()) {
        return Ok(key);
    }
    let key = IdentityPublicKey::from_bytes(&raw).map_err(corrupt)?;
    DECODED.with_borrow_mut(|decoded| {
        if decoded.len() >= DECODED_KEYS {
            decoded.clear();
        }
        decoded.insert(raw, key);
    });
    Ok(key)
}

/// Copies a 32-byte secret column straight into a zeroizing buffer.
pub(crate) fn secret_from_row(
    row: &Row<'_>,
    index: usize,
    table: &'static str,
) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let blob = row.get_ref(index)?.as_blob()?;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    if blob.len() != secret.len() {
        return Err(StoreError::corrupt(
            table,
            format!("secret has {} bytes", blob.len()),
        ));
    }
    secret.copy_from_slice(blob);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omemo_crypto::IdentityKeyPair;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn a_decoded_key_is_remembered_and_the_memo_stays_bounded() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let key = IdentityKeyPair::generate(&mut rng).public_key();
        let first = identity_key_from_sql("devices", key.as_bytes()).unwrap();
        assert_eq!(first, key);
        assert_eq!(first.to_x25519_bytes(), key.to_x25519_bytes());
        assert!(DECODED.with_borrow(|decoded| decoded.contains_key(key.as_bytes())));
        // Read again: the remembered key, with its X25519 form.
        let again = identity_key_from_sql("devices", key.as_bytes()).unwrap();
        assert_eq!(again.to_x25519_bytes(), key.to_x25519_bytes());

        // Invalid bytes are refused every time, also after valid ones were remembered: the
        // memo only ever holds keys that decoded.
        // y = p, a non-canonical encoding.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xed;
        non_canonical[31] = 0x7f;
        for _ in 0..2 {
            assert!(matches!(
                identity_key_from_sql("devices", &non_canonical),
                Err(StoreError::CorruptRow { .. })
            ));
        }
        assert!(identity_key_from_sql("devices", &[1u8; 31]).is_err());

        for _ in 0..DECODED_KEYS + 10 {
            let other = IdentityKeyPair::generate(&mut rng).public_key();
            assert_eq!(
                identity_key_from_sql("trust", other.as_bytes()).unwrap(),
                other
            );
        }
        assert!(DECODED.with_borrow(|decoded| decoded.len()) <= DECODED_KEYS);
    }
}
