//! Double Ratchet sessions, stored as the opaque versioned bytes `omemo-crypto` produces,
//! and the per-message transactions that keep them consistent with pre-keys and counters.

use omemo_crypto::{DeviceId, PreKeyId};
use rusqlite::{params, Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::devices::Namespace;
use crate::error::{Result, StoreError};
use crate::own::mark_pre_key_used_in;
use crate::sql::{time_from_sql, time_to_sql};
use crate::Store;

/// Everything that changes after one message was decrypted, committed together by
/// [`Store::commit_decryption`].
#[derive(Debug, Clone, Copy)]
pub struct DecryptionCommit<'a> {
    /// The OMEMO namespace of the message.
    pub namespace: Namespace,
    /// The sender's bare JID.
    pub jid: &'a str,
    /// The sender's device id (`sid`).
    pub device_id: DeviceId,
    /// The session state after decryption (`Session::snapshot` bytes).
    pub session_state: &'a [u8],
    /// The session kept besides it (see [`Store::load_sessions`]); `None` keeps none.
    pub previous_state: Option<&'a [u8]>,
    /// The one-time pre-key a key exchange consumed, if the message was one.
    pub used_pre_key: Option<PreKeyId>,
    /// The time of decryption (Unix seconds).
    pub now: u64,
}

/// One recipient device's new session state after encrypting a message.
#[derive(Debug, Clone, Copy)]
pub struct SessionUpdate<'a> {
    /// The recipient's bare JID.
    pub jid: &'a str,
    /// The recipient device id (`rid`).
    pub device_id: DeviceId,
    /// The session state after encryption.
    pub session_state: &'a [u8],
}

/// A device's message counters after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Messages sent to the device since it last sent us one (QXmpp stops encrypting for a
    /// device at 106).
    pub sent_without_reply: u64,
    /// Messages received from the device since we last sent it one (a heartbeat is due
    /// after 53, XEP-0384 §rules).
    pub received_without_reply: u64,
}

fn upsert_session(
    tx: &Connection,
    namespace: Namespace,
    jid: &str,
    device_id: DeviceId,
    state: &[u8],
    now: i64,
) -> Result<()> {
    if state.is_empty() {
        return Err(StoreError::EmptySessionState);
    }
    tx.prepare_cached(
        "INSERT INTO sessions (namespace, jid, device_id, state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (namespace, jid, device_id)
         DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![
        namespace.as_str(),
        jid,
        device_id.get(),
        state,
        now
    ])?;
    Ok(())
}

impl Store {
    /// The session state for a device, if there is a session.
    pub fn load_session(
        &self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state FROM sessions WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
        )?;
        let state = stmt
            .query_row(params![namespace.as_str(), jid, device_id.get()], |row| {
                Ok(Zeroizing::new(row.get_ref(0)?.as_blob()?.to_vec()))
            })
            .optional()?;
        Ok(state)
    }

    /// The current session state for a device and the one it replaced, if any: a message
    /// that fails on the current session may belong to the previous one (both devices
    /// started a session at the same moment). [`Store::commit_decryption`] sets both.
    #[allow(clippy::type_complexity)] // two optional secrets; a struct would only name them
    pub fn load_sessions(
        &self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<Option<(Zeroizing<Vec<u8>>, Option<Zeroizing<Vec<u8>>>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, previous_state FROM sessions
             WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
        )?;
        let states = stmt
            .query_row(params![namespace.as_str(), jid, device_id.get()], |row| {
                let current = Zeroizing::new(row.get_ref(0)?.as_blob()?.to_vec());
                let previous = row
                    .get_ref(1)?
                    .as_blob_or_null()?
                    .map(|blob| Zeroizing::new(blob.to_vec()));
                Ok((current, previous))
            })
            .optional()?;
        Ok(states)
    }

    /// When the session with a device last changed (Unix seconds).
    pub fn session_updated_at(
        &self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<Option<u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT updated_at FROM sessions
             WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
        )?;
        let value: Option<i64> = stmt
            .query_row(params![namespace.as_str(), jid, device_id.get()], |row| {
                row.get(0)
            })
            .optional()?;
        value.map(|v| time_from_sql("sessions", v)).transpose()
    }

    /// When any session of `namespace` last changed (Unix seconds): roughly when this account
    /// last decrypted or encrypted a message. `None` before the first session.
    pub fn last_session_activity(&self, namespace: Namespace) -> Result<Option<u64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT max(updated_at) FROM sessions WHERE namespace = ?1")?;
        let value: Option<i64> = stmt.query_row(params![namespace.as_str()], |row| row.get(0))?;
        value.map(|v| time_from_sql("sessions", v)).transpose()
    }

    /// Commits everything a decrypted message changes, in one transaction: the new session
    /// state, the consumed pre-key marked used, the device's last-seen time and counters
    /// (received-without-reply + 1, sent-without-reply reset to 0).
    ///
    /// Hand the message to the application only after this returned `Ok`. A device not yet
    /// known (a sender missing from its list) is recorded as inactive.
    pub fn commit_decryption(&mut self, commit: &DecryptionCommit<'_>) -> Result<DeviceCounters> {
        let tx = self.write()?;
        let counters = decryption_in(&tx, commit)?;
        tx.commit()?;
        Ok(counters)
    }

    /// Commits the new session states of all recipient devices of one encrypted message, in
    /// one transaction, and counts the message (sent-without-reply + 1,
    /// received-without-reply reset to 0). Send the message only after this returned `Ok`.
    pub fn commit_encryption(
        &mut self,
        namespace: Namespace,
        updates: &[SessionUpdate<'_>],
        now: u64,
    ) -> Result<()> {
        let tx = self.write()?;
        encryption_updates(&tx, namespace, updates, now)?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::commit_encryption`], and in the same transaction keeps `stanza` (the message
    /// that carries these ratchet steps) in the outbox until [`Store::outbox_remove`] and
    /// removes the inbox messages it `answers` (see [`Store::inbox_remove`]). Returns its
    /// outbox id.
    pub fn commit_encryption_queued(
        &mut self,
        namespace: Namespace,
        updates: &[SessionUpdate<'_>],
        now: u64,
        stanza: &str,
        answers: &[i64],
    ) -> Result<i64> {
        let tx = self.write()?;
        encryption_updates(&tx, namespace, updates, now)?;
        crate::inbox::remove_in(&tx, answers)?;
        let id = queue_in(&tx, stanza, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// A decrypted message and its answer, committed together in one transaction:
    /// [`Store::commit_decryption`] of the message, then [`Store::commit_encryption_queued`]
    /// of the answer (whose `updates` may step the same session again). The message never
    /// enters the inbox: once this returned `Ok`, both the message's ratchet step and its
    /// answer are durable. Returns the answer's outbox id.
    pub fn commit_decryption_answered(
        &mut self,
        commit: &DecryptionCommit<'_>,
        updates: &[SessionUpdate<'_>],
        stanza: &str,
    ) -> Result<i64> {
        let tx = self.write()?;
        decryption_in(&tx, commit)?;
        encryption_updates(&tx, commit.namespace, updates, commit.now)?;
        let id = queue_in(&tx, stanza, commit.now)?;
        tx.commit()?;
        Ok(id)
    }

    /// The messages not yet acknowledged by the server, oldest first, with their ids.
    pub fn outbox(&self) -> Result<Vec<(i64, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, stanza FROM outbox ORDER BY id")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets messages committed before `before` (Unix seconds) that were never
    /// acknowledged; returns how many.
    pub fn outbox_expire(&mut self, before: u64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM outbox WHERE created_at < ?1",
            params![time_to_sql(before)],
        )?)
    }

    /// Counts one more send of the outbox message `id` (its first send is counted when it is
    /// queued) and returns how often it has been sent now, or `None` if it is no longer in
    /// the outbox (acknowledged or expired meanwhile).
    pub fn outbox_count_send(&mut self, id: i64) -> Result<Option<u32>> {
        let tx = self.write()?;
        let sends: Option<i64> = tx
            .prepare_cached("UPDATE outbox SET sends = sends + 1 WHERE id = ?1 RETURNING sends")?
            .query_row(params![id], |row| row.get(0))
            .optional()?;
        tx.commit()?;
        Ok(sends.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Forgets acknowledged messages.
    pub fn outbox_remove(&mut self, ids: &[i64]) -> Result<()> {
        let tx = self.write()?;
        for id in ids {
            tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute(params![id])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The session, pre-key and device updates of a decryption, inside a write transaction.
pub(crate) fn decryption_in(
    tx: &Connection,
    commit: &DecryptionCommit<'_>,
) -> Result<DeviceCounters> {
    let now = time_to_sql(commit.now);
    let ns = commit.namespace.as_str();
    let (sent, received): (i64, i64) = tx
        .prepare_cached(
            "INSERT INTO devices (namespace, jid, device_id, first_seen, last_seen,
                                  received_without_reply)
             VALUES (?1, ?2, ?3, ?4, ?4, 1)
             ON CONFLICT (namespace, jid, device_id) DO UPDATE SET
                 last_seen = excluded.last_seen,
                 sent_without_reply = 0,
                 received_without_reply = received_without_reply + 1
             RETURNING sent_without_reply, received_without_reply",
        )?
        .query_row(
            params![ns, commit.jid, commit.device_id.get(), now],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
    if commit.session_state.is_empty() || commit.previous_state.is_some_and(<[u8]>::is_empty) {
        return Err(StoreError::EmptySessionState);
    }
    tx.prepare_cached(
        "INSERT INTO sessions (namespace, jid, device_id, state, previous_state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (namespace, jid, device_id)
         DO UPDATE SET state = excluded.state, previous_state = excluded.previous_state,
                       updated_at = excluded.updated_at",
    )?
    .execute(params![
        ns,
        commit.jid,
        commit.device_id.get(),
        commit.session_state,
        commit.previous_state,
        now
    ])?;
    if let Some(pre_key) = commit.used_pre_key {
        mark_pre_key_used_in(tx, commit.namespace, pre_key, commit.now)?;
    }
    counters(sent, received)
}

/// Keeps `stanza` in the outbox, inside a write transaction; returns its id.
fn queue_in(tx: &Connection, stanza: &str, now: u64) -> Result<i64> {
    tx.prepare_cached("INSERT INTO outbox (stanza, created_at) VALUES (?1, ?2)")?
        .execute(params![stanza, time_to_sql(now)])?;
    Ok(tx.last_insert_rowid())
}

/// The session and device updates of an encryption, inside a write transaction.
fn encryption_updates(
    tx: &rusqlite::Connection,
    namespace: Namespace,
    updates: &[SessionUpdate<'_>],
    now: u64,
) -> Result<()> {
    let now = time_to_sql(now);
    let ns = namespace.as_str();
    for update in updates {
        tx.prepare_cached(
            "INSERT INTO devices (namespace, jid, device_id, first_seen, last_seen,
                                      sent_without_reply)
                 VALUES (?1, ?2, ?3, ?4, ?4, 1)
                 ON CONFLICT (namespace, jid, device_id) DO UPDATE SET
                     sent_without_reply = sent_without_reply + 1,
                     received_without_reply = 0",
        )?
        .execute(params![ns, update.jid, update.device_id.get(), now])?;
        upsert_session(
            tx,
            namespace,
            update.jid,
            update.device_id,
            update.session_state,
            now,
        )?;
    }
    Ok(())
}

impl Store {
    /// Stores one session state on its own (for example a session built from a bundle
    /// before its first message); counters are left alone.
    pub fn store_session(
        &mut self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
        session_state: &[u8],
        now: u64,
    ) -> Result<()> {
        let now = time_to_sql(now);
        let tx = self.write()?;
        tx.prepare_cached(
            "INSERT INTO devices (namespace, jid, device_id, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (namespace, jid, device_id) DO NOTHING",
        )?
        .execute(params![namespace.as_str(), jid, device_id.get(), now])?;
        upsert_session(&tx, namespace, jid, device_id, session_state, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the session with a device (manual session reset). Returns whether there was one.
    pub fn delete_session(
        &mut self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<bool> {
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM sessions WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
            params![namespace.as_str(), jid, device_id.get()],
        )?;
        tx.commit()?;
        Ok(deleted > 0)
    }
}

fn counters(sent: i64, received: i64) -> Result<DeviceCounters> {
    let convert =
        |v: i64| u64::try_from(v).map_err(|_| StoreError::corrupt("devices", "negative counter"));
    Ok(DeviceCounters {
        sent_without_reply: convert(sent)?,
        received_without_reply: convert(received)?,
    })
}
