//! Conversions between SQLite column values and the crate's checked types.

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

/// Parses a stored Ed25519 identity key.
pub(crate) fn identity_key_from_sql(
    table: &'static str,
    bytes: &[u8],
) -> Result<IdentityPublicKey> {
    IdentityPublicKey::from_bytes(bytes)
        .map_err(|err| StoreError::corrupt(table, format!("invalid identity key: {err}")))
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
