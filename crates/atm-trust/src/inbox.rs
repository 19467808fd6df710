//! Decrypted messages kept until the program has handled them (schema 4).
//!
//! [`Store::commit_decryption_kept`] writes the message in the transaction that commits its
//! ratchet step; [`Store::inbox_remove`] or an answer's
//! [`Store::commit_encryption_queued`] deletes it. Whatever is left at start-up was decrypted
//! by a process that died before it was handled.

use omemo_crypto::{DeviceId, IdentityPublicKey};
use rusqlite::{params, Connection, Row};
use zeroize::Zeroizing;

use crate::devices::Namespace;
use crate::error::{Result, StoreError};
use crate::sessions::{decryption_in, DecryptionCommit, DeviceCounters};
use crate::sql::{device_id_from_sql, identity_key_from_sql, time_from_sql, time_to_sql};
use crate::Store;

const TABLE: &str = "inbox";

/// What is kept of a decrypted message besides the commit's sender, device and time.
#[derive(Debug, Clone, Copy)]
pub struct NewInboxMessage<'a> {
    /// The sender device's identity key.
    pub identity_key: &'a IdentityPublicKey,
    /// The stanza's `from` (a full JID).
    pub from: &'a str,
    /// The stanza's `id`.
    pub stanza_id: Option<&'a str>,
    /// The stanza's type (`chat`, `normal`, ...).
    pub message_type: &'a str,
    /// The decrypted SCE envelope.
    pub envelope: &'a [u8],
    /// Whether the message was a key exchange.
    pub key_exchange: bool,
}

/// A decrypted message not yet handled, as read back.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    /// Its inbox id, for [`Store::inbox_remove`].
    pub id: i64,
    /// The OMEMO namespace it came in.
    pub namespace: Namespace,
    /// The sender's bare JID.
    pub sender: String,
    /// The sender's device id.
    pub device_id: DeviceId,
    /// The sender device's identity key.
    pub identity_key: IdentityPublicKey,
    /// The stanza's `from`.
    pub from: String,
    /// The stanza's `id`.
    pub stanza_id: Option<String>,
    /// The stanza's type.
    pub message_type: String,
    /// The decrypted SCE envelope.
    pub envelope: Zeroizing<Vec<u8>>,
    /// Whether the message was a key exchange.
    pub key_exchange: bool,
    /// When it was decrypted (Unix seconds).
    pub received_at: u64,
}

fn message_from_row(row: &Row<'_>) -> Result<InboxMessage> {
    let namespace: String = row.get(1)?;
    let namespace = Namespace::from_sql(&namespace)
        .ok_or_else(|| StoreError::corrupt(TABLE, format!("unknown namespace {namespace:?}")))?;
    Ok(InboxMessage {
        id: row.get(0)?,
        namespace,
        sender: row.get(2)?,
        device_id: device_id_from_sql(TABLE, row.get(3)?)?,
        identity_key: identity_key_from_sql(TABLE, row.get_ref(4)?.as_blob()?)?,
        from: row.get(5)?,
        stanza_id: row.get(6)?,
        message_type: row.get(7)?,
        envelope: Zeroizing::new(row.get_ref(8)?.as_blob()?.to_vec()),
        key_exchange: row.get(9)?,
        received_at: time_from_sql(TABLE, row.get(10)?)?,
    })
}

pub(crate) fn remove_in(tx: &Connection, ids: &[i64]) -> Result<()> {
    for id in ids {
        tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?
            .execute(params![id])?;
    }
    Ok(())
}

impl Store {
    /// [`Store::commit_decryption`], and in the same transaction keeps the decrypted message
    /// in the inbox until [`Store::inbox_remove`]. Returns the counters and its inbox id.
    pub fn commit_decryption_kept(
        &mut self,
        commit: &DecryptionCommit<'_>,
        message: &NewInboxMessage<'_>,
    ) -> Result<(DeviceCounters, i64)> {
        let tx = self.write()?;
        let counters = decryption_in(&tx, commit)?;
        tx.prepare_cached(
            "INSERT INTO inbox (namespace, sender, device_id, identity_key, from_jid, stanza_id,
                                message_type, envelope, key_exchange, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            commit.namespace.as_str(),
            commit.jid,
            commit.device_id.get(),
            message.identity_key.as_bytes(),
            message.from,
            message.stanza_id,
            message.message_type,
            message.envelope,
            message.key_exchange,
            time_to_sql(commit.now),
        ])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((counters, id))
    }

    /// The decrypted messages not yet handled, oldest first.
    pub fn inbox(&self) -> Result<Vec<InboxMessage>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, namespace, sender, device_id, identity_key, from_jid, stanza_id,
                    message_type, envelope, key_exchange, received_at
             FROM inbox ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        let mut messages = Vec::new();
        while let Some(row) = rows.next()? {
            messages.push(message_from_row(row)?);
        }
        Ok(messages)
    }

    /// Forgets handled messages (ids not in the inbox are ignored).
    pub fn inbox_remove(&mut self, ids: &[i64]) -> Result<()> {
        let tx = self.write()?;
        remove_in(&tx, ids)?;
        tx.commit()?;
        Ok(())
    }
}
