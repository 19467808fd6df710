//! The store's error type.

use omemo_crypto::{DeviceId, PreKeyId};

/// Everything that can go wrong in the store.
///
/// Messages carry no key material; JIDs appear only where the caller needs them to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error (I/O, a locked database, a constraint, …).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// Creating or inspecting the database file failed before SQLite opened it.
    #[error("cannot create the database file: {0}")]
    Io(#[from] std::io::Error),

    /// Applying the embedded migrations failed (the transaction was rolled back).
    #[error("migration failed: {0}")]
    Migration(String),

    /// The file is not an SQLite database, or an SQLite database that another program made.
    #[error("the file is not an atm-trust database")]
    NotOurDatabase,

    /// The database was written by a newer version of this crate; opening it could corrupt it.
    #[error("database schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// The highest migration version recorded in the database.
        found: i64,
        /// The highest migration version this build embeds.
        supported: i64,
    },

    /// SQLite could not switch the database to write-ahead logging.
    #[error("cannot enable WAL mode (journal mode is {0:?})")]
    WalUnavailable(String),

    /// A stored row holds a value the schema cannot hold (the database was edited or damaged).
    #[error("corrupt row in table {table}: {reason}")]
    CorruptRow {
        /// The table holding the row.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored or supplied trust level is not one of QXmpp's six bit values.
    #[error("unknown trust level {0}")]
    UnknownTrustLevel(i64),

    /// The database is set up for another account.
    #[error("the database belongs to another account")]
    AccountMismatch,

    /// The operation needs our own device, which has not been created yet.
    #[error("the own device has not been created yet")]
    NoOwnDevice,

    /// A key exchange named a pre-key that the store does not hold.
    #[error("unknown pre-key {0}")]
    UnknownPreKey(PreKeyId),

    /// A known device presented an identity key different from the one recorded for it.
    ///
    /// The stored key is kept. Replacing it takes an explicit [`crate::Store::forget_device`].
    #[error("device {device_id} of {jid} presented a different identity key")]
    IdentityKeyChanged {
        /// The device's bare JID.
        jid: String,
        /// The device id.
        device_id: DeviceId,
    },

    /// A device id presented an identity key in one OMEMO namespace that differs from the
    /// one recorded for the same device id in the other namespace. One device has one
    /// identity in both (LEGACY-NOTES §2), so this is a different device reusing the id, or
    /// an attack. The stored key is kept; accepting the new one takes a
    /// [`crate::Store::forget_device`] in the other namespace.
    #[error("device {device_id} of {jid} has a different identity key in the other OMEMO version")]
    IdentityKeyDiffersBetweenVersions {
        /// The device's bare JID.
        jid: String,
        /// The device id.
        device_id: DeviceId,
    },

    /// A session state to store was empty (`omemo-crypto` snapshots are never empty).
    #[error("empty session state")]
    EmptySessionState,

    /// Every pre-key id is taken (more than 2³¹−1 keys stored), which should never happen.
    #[error("no free pre-key id left")]
    PreKeyIdsExhausted,

    /// A group of transactions (see [`crate::Store::begin_group`]) was misused or lost.
    #[error("transaction group: {0}")]
    GroupState(&'static str),
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> Self {
        Self::CorruptRow {
            table,
            reason: reason.into(),
        }
    }
}

/// A column holding a value of the wrong type (text where a blob belongs, …).
impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(err: rusqlite::types::FromSqlError) -> Self {
        Self::CorruptRow {
            table: "(column type)",
            reason: err.to_string(),
        }
    }
}
