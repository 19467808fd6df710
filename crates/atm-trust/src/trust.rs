//! Trust levels per (JID, identity key), QXmpp's policies and the recorded trust events
//! (XEP-0450 §security, QXmpp `QXmppTrustLevel`, `QXmppTrustSecurityPolicy`).

use omemo_crypto::{DeviceId, IdentityPublicKey};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::devices::Namespace;
use crate::error::{Result, StoreError};
use crate::sql::{identity_key_from_sql, time_from_sql, time_to_sql};
use crate::Store;

/// How far a key is trusted, with QXmpp's bit values (`QXmpp::TrustLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustLevel {
    /// No decision yet.
    Undecided = 1,
    /// Distrusted by the policy (a new key under TOAKAFA after an authentication, or under
    /// the manual policy).
    AutomaticallyDistrusted = 2,
    /// Distrusted by the user or by an ATM distrust decision.
    ManuallyDistrusted = 4,
    /// Trusted by the policy (TOAKAFA before the owner's first authenticated key).
    AutomaticallyTrusted = 8,
    /// Trusted by the user without verification.
    ManuallyTrusted = 16,
    /// Verified: out of band (fingerprint, QR code) or by an ATM trust decision.
    Authenticated = 32,
}

impl TrustLevel {
    /// Every level, in QXmpp's order.
    pub const ALL: [TrustLevel; 6] = [
        Self::Undecided,
        Self::AutomaticallyDistrusted,
        Self::ManuallyDistrusted,
        Self::AutomaticallyTrusted,
        Self::ManuallyTrusted,
        Self::Authenticated,
    ];

    /// QXmpp's bit value.
    pub const fn bits(self) -> i64 {
        self as i64
    }

    /// Parses QXmpp's bit value.
    pub fn from_bits(bits: i64) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|level| level.bits() == bits)
            .ok_or(StoreError::UnknownTrustLevel(bits))
    }

    /// Whether messages are encrypted for keys at this level (QXmpp's default
    /// `ACCEPTED_TRUST_LEVELS`: AutomaticallyTrusted, ManuallyTrusted, Authenticated).
    pub const fn is_accepted(self) -> bool {
        matches!(
            self,
            Self::AutomaticallyTrusted | Self::ManuallyTrusted | Self::Authenticated
        )
    }
}

/// The security policy that decides the level of a key seen for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrustPolicy {
    /// "Trust only authenticated keys after first authentication" (XEP-0450 §security):
    /// a new key is AutomaticallyTrusted while its owner has no Authenticated key, else
    /// AutomaticallyDistrusted.
    #[default]
    Toakafa,
    /// Every new key is AutomaticallyDistrusted until the user decides (QXmpp's
    /// `NoSecurityPolicy`).
    Manual,
}

/// How a key got its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustSource {
    /// The security policy: a new key's first level, or a TOAKAFA demotion.
    Policy,
    /// The user.
    Manual,
    /// An ATM trust message (XEP-0450) from an authenticated device.
    Atm,
}

impl TrustSource {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Manual => "manual",
            Self::Atm => "atm",
        }
    }

    fn from_sql(value: &str) -> Result<Self> {
        match value {
            "policy" => Ok(Self::Policy),
            "manual" => Ok(Self::Manual),
            "atm" => Ok(Self::Atm),
            other => Err(StoreError::corrupt(
                "trust",
                format!("unknown trust source {other:?}"),
            )),
        }
    }
}

/// A recorded change of a key's trust level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustEvent {
    /// Position in the event log (increasing).
    pub id: i64,
    /// The key owner's bare JID.
    pub jid: String,
    /// The key.
    pub identity_key: IdentityPublicKey,
    /// The level before; `None` when the key was first recorded.
    pub old_level: Option<TrustLevel>,
    /// The level after.
    pub new_level: TrustLevel,
    /// What caused the change.
    pub source: TrustSource,
    /// The key behind the change: the sender of the ATM message for [`TrustSource::Atm`],
    /// the newly authenticated key for a TOAKAFA demotion; `None` otherwise.
    pub via: Option<(String, IdentityPublicKey)>,
    /// When (Unix seconds).
    pub at: u64,
}

/// The result of [`Store::record_identity_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    /// The key's level now.
    pub level: TrustLevel,
    /// The event recording the key's first level, if the key was new.
    pub event: Option<TrustEvent>,
}

/// Who caused a level change, for the event log.
#[derive(Clone, Copy)]
pub(crate) struct Cause<'a> {
    pub(crate) source: TrustSource,
    pub(crate) via: Option<(&'a str, &'a IdentityPublicKey)>,
}

pub(crate) fn level_in(
    tx: &rusqlite::Connection,
    jid: &str,
    key: &IdentityPublicKey,
) -> Result<Option<TrustLevel>> {
    let bits: Option<i64> = tx
        .prepare_cached("SELECT level FROM trust WHERE jid = ?1 AND identity_key = ?2")?
        .query_row(params![jid, &key.as_bytes()[..]], |row| row.get(0))
        .optional()?;
    bits.map(TrustLevel::from_bits).transpose()
}

/// The identity key stored for a device: `None` for an unknown device, `Some(None)` for a
/// device whose key is not known yet.
fn stored_identity_key(
    conn: &rusqlite::Connection,
    ns: &str,
    jid: &str,
    device_id: DeviceId,
) -> Result<Option<Option<Vec<u8>>>> {
    Ok(conn
        .prepare_cached(
            "SELECT identity_key FROM devices
             WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
        )?
        .query_row(params![ns, jid, device_id.get()], |row| row.get(0))
        .optional()?)
}

fn has_authenticated_key(tx: &Connection, jid: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM trust WHERE jid = ?1 AND level = ?2)")?
        .query_row(params![jid, TrustLevel::Authenticated.bits()], |row| {
            row.get(0)
        })?)
}

fn insert_event(
    tx: &Connection,
    jid: &str,
    key: &IdentityPublicKey,
    old: Option<TrustLevel>,
    new: TrustLevel,
    cause: Cause<'_>,
    now: u64,
) -> Result<TrustEvent> {
    let (via_jid, via_key) = match cause.via {
        Some((jid, key)) => (Some(jid), Some(&key.as_bytes()[..])),
        None => (None, None),
    };
    tx.prepare_cached(
        "INSERT INTO trust_events
             (jid, identity_key, old_level, new_level, source, via_jid, via_key, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        jid,
        &key.as_bytes()[..],
        old.map(TrustLevel::bits),
        new.bits(),
        cause.source.as_str(),
        via_jid,
        via_key,
        time_to_sql(now),
    ])?;
    Ok(TrustEvent {
        id: tx.last_insert_rowid(),
        jid: jid.to_owned(),
        identity_key: *key,
        old_level: old,
        new_level: new,
        source: cause.source,
        via: cause.via.map(|(jid, key)| (jid.to_owned(), *key)),
        at: now,
    })
}

/// Sets a key's level inside a transaction, recording the event. A change to the same level
/// records nothing. Returns true if the key became Authenticated just now (the caller then
/// runs [`settle_authentications`]).
fn change_level(
    tx: &Connection,
    jid: &str,
    key: &IdentityPublicKey,
    new: TrustLevel,
    cause: Cause<'_>,
    now: u64,
    events: &mut Vec<TrustEvent>,
) -> Result<bool> {
    let old = level_in(tx, jid, key)?;
    if old == Some(new) {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO trust (jid, identity_key, level, source, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (jid, identity_key) DO UPDATE SET
             level = excluded.level, source = excluded.source, changed_at = excluded.changed_at",
    )?
    .execute(params![
        jid,
        &key.as_bytes()[..],
        new.bits(),
        cause.source.as_str(),
        time_to_sql(now)
    ])?;
    events.push(insert_event(tx, jid, key, old, new, cause, now)?);
    Ok(new == TrustLevel::Authenticated)
}

/// Sets a key's level and then carries out what every new authentication implies, all in
/// the caller's transaction.
pub(crate) fn set_level_and_settle(
    tx: &Connection,
    jid: &str,
    key: &IdentityPublicKey,
    new: TrustLevel,
    cause: Cause<'_>,
    now: u64,
    events: &mut Vec<TrustEvent>,
) -> Result<()> {
    if change_level(tx, jid, key, new, cause, now, events)? {
        settle_authentications(tx, vec![(jid.to_owned(), *key)], now, events)?;
    }
    Ok(())
}

/// For each newly Authenticated key: demote its owner's AutomaticallyTrusted keys to
/// AutomaticallyDistrusted (TOAKAFA), then apply the ATM decisions that were waiting for
/// this key. Decisions that authenticate further keys are handled the same way, until
/// nothing is left. Every pending row is deleted when applied, so this terminates.
pub(crate) fn settle_authentications(
    tx: &Connection,
    mut newly_authenticated: Vec<(String, IdentityPublicKey)>,
    now: u64,
    events: &mut Vec<TrustEvent>,
) -> Result<()> {
    while let Some((jid, key)) = newly_authenticated.pop() {
        let demote = Cause {
            source: TrustSource::Policy,
            via: Some((&jid, &key)),
        };
        for other in keys_at_level(tx, &jid, TrustLevel::AutomaticallyTrusted)? {
            change_level(
                tx,
                &jid,
                &other,
                TrustLevel::AutomaticallyDistrusted,
                demote,
                now,
                events,
            )?;
        }
        let pending = crate::atm::take_pending(tx, &jid, &key)?;
        let atm = Cause {
            source: TrustSource::Atm,
            via: Some((&jid, &key)),
        };
        for decision in pending {
            let level = if decision.trust {
                TrustLevel::Authenticated
            } else {
                TrustLevel::ManuallyDistrusted
            };
            if change_level(tx, &decision.jid, &decision.key, level, atm, now, events)? {
                newly_authenticated.push((decision.jid, decision.key));
            }
        }
    }
    Ok(())
}

fn keys_at_level(tx: &Connection, jid: &str, level: TrustLevel) -> Result<Vec<IdentityPublicKey>> {
    let mut stmt = tx.prepare_cached(
        "SELECT identity_key FROM trust WHERE jid = ?1 AND level = ?2 ORDER BY identity_key",
    )?;
    let mut rows = stmt.query(params![jid, level.bits()])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(identity_key_from_sql("trust", row.get_ref(0)?.as_blob()?)?);
    }
    Ok(keys)
}

fn event_from_row(row: &Row<'_>) -> Result<TrustEvent> {
    const TABLE: &str = "trust_events";
    let old_level: Option<i64> = row.get(3)?;
    let via_jid: Option<String> = row.get(6)?;
    let via_key = row
        .get_ref(7)?
        .as_blob_or_null()?
        .map(|bytes| identity_key_from_sql(TABLE, bytes))
        .transpose()?;
    let via = match (via_jid, via_key) {
        (Some(jid), Some(key)) => Some((jid, key)),
        (None, None) => None,
        _ => return Err(StoreError::corrupt(TABLE, "half of the cause is missing")),
    };
    Ok(TrustEvent {
        id: row.get(0)?,
        jid: row.get(1)?,
        identity_key: identity_key_from_sql(TABLE, row.get_ref(2)?.as_blob()?)?,
        old_level: old_level.map(TrustLevel::from_bits).transpose()?,
        new_level: TrustLevel::from_bits(row.get(4)?)?,
        source: TrustSource::from_sql(row.get_ref(5)?.as_str()?)?,
        via,
        at: time_from_sql(TABLE, row.get(8)?)?,
    })
}

const EVENT_COLUMNS: &str =
    "id, jid, identity_key, old_level, new_level, source, via_jid, via_key, at";

impl Store {
    /// Records the identity key of a device (from its bundle or a key exchange) and returns
    /// the key's trust level.
    ///
    /// A key seen for the first time gets its level from `policy`, recorded as an event. A
    /// key already known (for example through an ATM decision, or under another device id)
    /// keeps its level. If the device already has a *different* key, nothing changes and
    /// [`StoreError::IdentityKeyChanged`] is returned: a device's identity key is never
    /// replaced silently.
    ///
    /// The same device id in the other namespace must have the same key (one device, one
    /// identity in both OMEMO versions); a different one gives
    /// [`StoreError::IdentityKeyDiffersBetweenVersions`] and changes nothing.
    pub fn record_identity_key(
        &mut self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
        key: &IdentityPublicKey,
        policy: TrustPolicy,
        now: u64,
    ) -> Result<RecordedKey> {
        let ns = namespace.as_str();
        let now_sql = time_to_sql(now);
        // The common case, a key already recorded for this device, changes nothing: it is
        // answered by reads alone, without taking the write lock.
        Store::check_key_across_versions(&self.conn, namespace, jid, device_id, key)?;
        match stored_identity_key(&self.conn, ns, jid, device_id)? {
            Some(Some(bytes)) if bytes.as_slice() != key.as_bytes() => {
                return Err(StoreError::IdentityKeyChanged {
                    jid: jid.to_owned(),
                    device_id,
                });
            }
            Some(Some(_)) => {
                if let Some(level) = level_in(&self.conn, jid, key)? {
                    return Ok(RecordedKey { level, event: None });
                }
            }
            _ => {}
        }
        let tx = self.write()?;
        Store::check_key_across_versions(&tx, namespace, jid, device_id, key)?;
        let stored = stored_identity_key(&tx, ns, jid, device_id)?;
        match stored {
            Some(Some(bytes)) if bytes.as_slice() != key.as_bytes() => {
                return Err(StoreError::IdentityKeyChanged {
                    jid: jid.to_owned(),
                    device_id,
                });
            }
            Some(Some(_)) => {}
            Some(None) => {
                tx.prepare_cached(
                    "UPDATE devices SET identity_key = ?4
                     WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
                )?
                .execute(params![
                    ns,
                    jid,
                    device_id.get(),
                    &key.as_bytes()[..]
                ])?;
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO devices (namespace, jid, device_id, identity_key, first_seen,
                                          last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )?
                .execute(params![
                    ns,
                    jid,
                    device_id.get(),
                    &key.as_bytes()[..],
                    now_sql
                ])?;
                // Devices seen only in messages count towards the per-JID bound too.
                crate::devices::trim_devices(&tx, namespace, jid, Some(device_id))?;
            }
        }
        let recorded = match level_in(&tx, jid, key)? {
            Some(level) => RecordedKey { level, event: None },
            None => {
                let level = match policy {
                    TrustPolicy::Toakafa if !has_authenticated_key(&tx, jid)? => {
                        TrustLevel::AutomaticallyTrusted
                    }
                    TrustPolicy::Toakafa | TrustPolicy::Manual => {
                        TrustLevel::AutomaticallyDistrusted
                    }
                };
                let cause = Cause {
                    source: TrustSource::Policy,
                    via: None,
                };
                let mut events = Vec::with_capacity(1);
                change_level(&tx, jid, key, level, cause, now, &mut events)?;
                RecordedKey {
                    level,
                    event: events.pop(),
                }
            }
        };
        tx.commit()?;
        Ok(recorded)
    }

    /// The trust level of a key, or `None` if the key is unknown (QXmpp treats that as
    /// Undecided).
    pub fn trust_level(&self, jid: &str, key: &IdentityPublicKey) -> Result<Option<TrustLevel>> {
        level_in(&self.conn, jid, key)
    }

    /// Every key of `jid` with its level, ordered by key bytes.
    pub fn identity_keys(&self, jid: &str) -> Result<Vec<(IdentityPublicKey, TrustLevel)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT identity_key, level FROM trust WHERE jid = ?1 ORDER BY identity_key",
        )?;
        let mut rows = stmt.query([jid])?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next()? {
            let key = identity_key_from_sql("trust", row.get_ref(0)?.as_blob()?)?;
            keys.push((key, TrustLevel::from_bits(row.get(1)?)?));
        }
        Ok(keys)
    }

    /// Sets a key's level by the user's decision and returns every resulting event, in order.
    ///
    /// Authenticating a key also demotes its owner's AutomaticallyTrusted keys to
    /// AutomaticallyDistrusted (TOAKAFA) and applies the ATM decisions this key sent while
    /// it was not authenticated, transitively, all in the same transaction. Setting the
    /// level a key already has records nothing. An unknown key is recorded.
    pub fn set_trust_level(
        &mut self,
        jid: &str,
        key: &IdentityPublicKey,
        level: TrustLevel,
        now: u64,
    ) -> Result<Vec<TrustEvent>> {
        let tx = self.write()?;
        let mut events = Vec::new();
        let cause = Cause {
            source: TrustSource::Manual,
            via: None,
        };
        set_level_and_settle(&tx, jid, key, level, cause, now, &mut events)?;
        tx.commit()?;
        Ok(events)
    }

    /// The recorded trust events about `jid`'s keys, oldest first.
    pub fn trust_events(&self, jid: &str) -> Result<Vec<TrustEvent>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM trust_events WHERE jid = ?1 ORDER BY id"
        ))?;
        let mut rows = stmt.query([jid])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }

    /// Up to `limit` trust events with an id greater than `after_id`, oldest first (to page
    /// through the whole log, or to pick up where a UI left off).
    pub fn trust_events_since(&self, after_id: i64, limit: usize) -> Result<Vec<TrustEvent>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM trust_events WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after_id, limit])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }
}
