//! Remote device lists (XEP-0384 §devices) and the per-device message counters used for
//! heartbeats and stale-device handling (XEP-0384 §rules).

use std::collections::{BTreeMap, BTreeSet};

use omemo_crypto::{DeviceId, IdentityPublicKey};
use rusqlite::{params, Row};

use crate::error::{Result, StoreError};
use crate::sql::{
    device_id_from_sql, identity_key_from_sql, opt_time_from_sql, time_from_sql, time_to_sql,
};
use crate::Store;

/// The OMEMO version a device list or session belongs to.
///
/// Legacy OMEMO will be spoken from the same identity later; keeping the namespace in the key
/// of device and session rows lets both live side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Namespace {
    /// OMEMO 2 (XEP-0384 0.8+), `urn:xmpp:omemo:2`.
    Omemo2,
    /// Legacy OMEMO 0.3, `eu.siacs.conversations.axolotl`.
    Legacy,
}

impl Namespace {
    /// The XML namespace, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Omemo2 => "urn:xmpp:omemo:2",
            Self::Legacy => "eu.siacs.conversations.axolotl",
        }
    }

    /// The namespace stored as `value`, if it is one.
    pub(crate) fn from_sql(value: &str) -> Option<Self> {
        [Self::Omemo2, Self::Legacy]
            .into_iter()
            .find(|ns| ns.as_str() == value)
    }
}

/// The most devices the store keeps per JID and namespace. A longer device list is recorded
/// up to this many entries (in list order); beyond it, the devices that are not in the list
/// go first, those that left it longest ago before those only seen in messages. No honest
/// account has this many devices; a hostile one cannot grow the database without bound.
pub const MAX_DEVICES_PER_JID: usize = 500;

/// One `<device>` entry of a fetched device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDevice {
    /// `<device id>`.
    pub device_id: DeviceId,
    /// `<device label>`, if any.
    pub label: Option<String>,
    /// Whether `labelsig` verified under the device's identity key.
    pub label_verified: bool,
}

/// What a device-list update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceListChanges {
    /// Devices seen for the first time.
    pub added: Vec<DeviceId>,
    /// Devices that had been removed from the list and are back.
    pub reactivated: Vec<DeviceId>,
    /// Devices no longer in the list (kept, marked removed).
    pub removed: Vec<DeviceId>,
    /// Listed devices whose label or label verification changed.
    pub relabelled: Vec<DeviceId>,
    /// Listed devices beyond [`MAX_DEVICES_PER_JID`], not recorded.
    pub ignored: usize,
    /// Unlisted devices deleted (with their sessions) to stay within [`MAX_DEVICES_PER_JID`].
    pub pruned: Vec<DeviceId>,
}

impl DeviceListChanges {
    /// True if the update changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.reactivated.is_empty()
            && self.removed.is_empty()
            && self.relabelled.is_empty()
            && self.ignored == 0
            && self.pruned.is_empty()
    }
}

/// What the store knows about a remote device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDevice {
    /// The OMEMO namespace of the device list.
    pub namespace: Namespace,
    /// The owner's bare JID.
    pub jid: String,
    /// The device id.
    pub device_id: DeviceId,
    /// The label from the device list.
    pub label: Option<String>,
    /// Whether the label's signature verified.
    pub label_verified: bool,
    /// The identity key, once a bundle or key exchange told us.
    pub identity_key: Option<IdentityPublicKey>,
    /// True while the device is in the owner's device list. A device known only from a
    /// message is not active.
    pub active: bool,
    /// When the device left the list.
    pub removed_at: Option<u64>,
    /// When the device was first seen (in a list or a message).
    pub first_seen: u64,
    /// When the device was last seen in a list update or a decrypted message.
    pub last_seen: u64,
    /// Messages sent to the device since it last sent us one.
    pub sent_without_reply: u64,
    /// Messages received from the device since we last sent it one.
    pub received_without_reply: u64,
}

pub(crate) const DEVICE_COLUMNS: &str = "device_id, label, label_verified, identity_key, active, \
     removed_at, first_seen, last_seen, sent_without_reply, received_without_reply";

pub(crate) fn device_from_row(
    namespace: Namespace,
    jid: &str,
    row: &Row<'_>,
) -> Result<RemoteDevice> {
    const TABLE: &str = "devices";
    let identity_key = match row.get_ref(3)?.as_blob_or_null()? {
        Some(bytes) => Some(identity_key_from_sql(TABLE, bytes)?),
        None => None,
    };
    let counter = |index: usize| -> Result<u64> {
        let value: i64 = row.get(index)?;
        u64::try_from(value).map_err(|_| StoreError::corrupt(TABLE, "negative counter"))
    };
    Ok(RemoteDevice {
        namespace,
        jid: jid.to_owned(),
        device_id: device_id_from_sql(TABLE, row.get(0)?)?,
        label: row.get(1)?,
        label_verified: row.get(2)?,
        identity_key,
        active: row.get(4)?,
        removed_at: opt_time_from_sql(TABLE, row.get(5)?)?,
        first_seen: time_from_sql(TABLE, row.get(6)?)?,
        last_seen: time_from_sql(TABLE, row.get(7)?)?,
        sent_without_reply: counter(8)?,
        received_without_reply: counter(9)?,
    })
}

/// Deletes `jid`'s unlisted devices beyond [`MAX_DEVICES_PER_JID`] (never `keep`): first
/// those that left the list longest ago, then those only seen in messages, least recently
/// seen first. Their sessions go with them. Returns the deleted ids.
pub(crate) fn trim_devices(
    tx: &rusqlite::Connection,
    namespace: Namespace,
    jid: &str,
    keep: Option<DeviceId>,
) -> Result<Vec<DeviceId>> {
    let ns = namespace.as_str();
    let rows: i64 = tx
        .prepare_cached("SELECT count(*) FROM devices WHERE namespace = ?1 AND jid = ?2")?
        .query_row(params![ns, jid], |row| row.get(0))?;
    let excess = usize::try_from(rows)
        .unwrap_or(0)
        .saturating_sub(MAX_DEVICES_PER_JID);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let mut victims = Vec::with_capacity(excess);
    {
        let mut stmt = tx.prepare_cached(
            "SELECT device_id FROM devices
             WHERE namespace = ?1 AND jid = ?2 AND active = 0 AND device_id IS NOT ?3
             ORDER BY removed_at IS NULL, removed_at, last_seen, device_id
             LIMIT ?4",
        )?;
        let excess_sql = i64::try_from(excess).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![ns, jid, keep.map(DeviceId::get), excess_sql])?;
        while let Some(row) = rows.next()? {
            victims.push(device_id_from_sql("devices", row.get(0)?)?);
        }
    }
    let mut delete = tx.prepare_cached(
        "DELETE FROM devices WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
    )?;
    for id in &victims {
        delete.execute(params![ns, jid, id.get()])?;
    }
    Ok(victims)
}

/// The device query, one statement text per filter, without `ORDER BY` (the caller sorts).
/// The bundled SQLite (built with STAT4) marks such a statement as depending on its bound
/// values, and rusqlite clears the bindings of a cached statement after each use, which made
/// SQLite recompile the former text (`(active = 1 OR ?3 = 0) ORDER BY device_id`) on every
/// call.
fn devices_sql(only_active: bool) -> String {
    let filter = if only_active { " AND active = 1" } else { "" };
    format!(
        "SELECT {DEVICE_COLUMNS} FROM devices
         WHERE namespace = ?1 AND jid = ?2{filter}"
    )
}

struct KnownDevice {
    active: bool,
    label: Option<String>,
    label_verified: bool,
}

impl Store {
    /// Records a fetched device list of `jid` (ours included).
    ///
    /// Listed devices are added or reactivated and their labels updated; known devices
    /// missing from the list are marked removed with the time, keeping their sessions and
    /// keys. Duplicate ids in `devices` count once (the first entry wins).
    pub fn update_device_list(
        &mut self,
        namespace: Namespace,
        jid: &str,
        devices: &[ListedDevice],
        now: u64,
    ) -> Result<DeviceListChanges> {
        let ns = namespace.as_str();
        let now_sql = time_to_sql(now);
        let tx = self.write()?;
        let mut known = BTreeMap::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT device_id, active, label, label_verified FROM devices
                 WHERE namespace = ?1 AND jid = ?2",
            )?;
            let mut rows = stmt.query(params![ns, jid])?;
            while let Some(row) = rows.next()? {
                let id = device_id_from_sql("devices", row.get(0)?)?;
                known.insert(
                    id,
                    KnownDevice {
                        active: row.get(1)?,
                        label: row.get(2)?,
                        label_verified: row.get(3)?,
                    },
                );
            }
        }
        let mut changes = DeviceListChanges::default();
        let mut listed = BTreeSet::new();
        for device in devices {
            if listed.contains(&device.device_id) {
                continue;
            }
            if listed.len() >= MAX_DEVICES_PER_JID {
                changes.ignored += 1;
                continue;
            }
            listed.insert(device.device_id);
            let id = device.device_id.get();
            match known.get(&device.device_id) {
                None => {
                    tx.prepare_cached(
                        "INSERT INTO devices (namespace, jid, device_id, label, label_verified,
                                              active, first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
                    )?
                    .execute(params![
                        ns,
                        jid,
                        id,
                        device.label,
                        device.label_verified,
                        now_sql
                    ])?;
                    changes.added.push(device.device_id);
                }
                Some(old) => {
                    if !old.active {
                        changes.reactivated.push(device.device_id);
                    }
                    if old.label != device.label || old.label_verified != device.label_verified {
                        changes.relabelled.push(device.device_id);
                    }
                    tx.prepare_cached(
                        "UPDATE devices SET active = 1, removed_at = NULL, label = ?4,
                                            label_verified = ?5, last_seen = ?6
                         WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
                    )?
                    .execute(params![
                        ns,
                        jid,
                        id,
                        device.label,
                        device.label_verified,
                        now_sql
                    ])?;
                }
            }
        }
        for (id, old) in &known {
            if old.active && !listed.contains(id) {
                tx.prepare_cached(
                    "UPDATE devices SET active = 0, removed_at = ?4
                     WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
                )?
                .execute(params![ns, jid, id.get(), now_sql])?;
                changes.removed.push(*id);
            }
        }
        changes.pruned = trim_devices(&tx, namespace, jid, None)?;
        tx.commit()?;
        Ok(changes)
    }

    /// One device of `jid`, active or not.
    pub fn device(
        &self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<Option<RemoteDevice>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3"
        ))?;
        let mut rows = stmt.query(params![namespace.as_str(), jid, device_id.get()])?;
        rows.next()?
            .map(|row| device_from_row(namespace, jid, row))
            .transpose()
    }

    /// The devices currently in `jid`'s device list, by id. For our own JID this includes
    /// our own device if the list does.
    pub fn active_devices(&self, namespace: Namespace, jid: &str) -> Result<Vec<RemoteDevice>> {
        self.query_devices(namespace, jid, true)
    }

    /// Every device known for `jid`, including removed ones and ones only seen in messages.
    pub fn devices(&self, namespace: Namespace, jid: &str) -> Result<Vec<RemoteDevice>> {
        self.query_devices(namespace, jid, false)
    }

    fn query_devices(
        &self,
        namespace: Namespace,
        jid: &str,
        only_active: bool,
    ) -> Result<Vec<RemoteDevice>> {
        let mut stmt = self.conn.prepare_cached(&devices_sql(only_active))?;
        let mut rows = stmt.query(params![namespace.as_str(), jid])?;
        let mut devices = Vec::new();
        while let Some(row) = rows.next()? {
            devices.push(device_from_row(namespace, jid, row)?);
        }
        devices.sort_unstable_by_key(|device| device.device_id);
        Ok(devices)
    }

    /// Forgets a device and its session (for a manual reset, or before accepting a new
    /// identity key under a reused device id). Trust decisions about keys stay. Returns
    /// whether the device was known.
    pub fn forget_device(
        &mut self,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<bool> {
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM devices WHERE namespace = ?1 AND jid = ?2 AND device_id = ?3",
            params![namespace.as_str(), jid, device_id.get()],
        )?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    /// Deletes devices (and their sessions) that left their list at least `grace` seconds
    /// before `now`. Returns how many.
    pub fn purge_removed_devices(&mut self, grace: u64, now: u64) -> Result<usize> {
        let cutoff = time_to_sql(now.saturating_sub(grace));
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM devices WHERE active = 0 AND removed_at IS NOT NULL AND removed_at <= ?1",
            [cutoff],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    fn listed(id: u32) -> ListedDevice {
        ListedDevice {
            device_id: DeviceId::new(id).unwrap(),
            label: None,
            label_verified: false,
        }
    }

    #[test]
    fn the_device_queries_are_not_recompiled_per_call() {
        let mut store = Store::open_in_memory().unwrap();
        let ns = Namespace::Omemo2;
        store
            .update_device_list(ns, "a@example.org", &[listed(1), listed(2)], 10)
            .unwrap();
        store
            .update_device_list(ns, "a@example.org", &[listed(2)], 20)
            .unwrap();
        store
            .update_device_list(ns, "b@example.org", &[listed(3)], 20)
            .unwrap();
        for _ in 0..5 {
            for jid in ["a@example.org", "b@example.org", "c@example.org"] {
                let active = store.active_devices(ns, jid).unwrap();
                let all = store.devices(ns, jid).unwrap();
                if jid == "a@example.org" {
                    let ids = |d: &[RemoteDevice]| {
                        d.iter().map(|d| d.device_id.get()).collect::<Vec<_>>()
                    };
                    assert_eq!(ids(&active), [2]);
                    assert_eq!(ids(&all), [1, 2]);
                }
            }
        }
        for only_active in [true, false] {
            let stmt = store
                .conn
                .prepare_cached(&devices_sql(only_active))
                .unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
            // The cached statement is the one the calls above used.
            assert!(stmt.get_status(StatementStatus::VmStep) > 0);
        }

        // Control: the former text, used the same way (through the statement cache), is
        // recompiled on every call, and the counter sees it.
        let former = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE namespace = ?1 AND jid = ?2 AND (active = 1 OR ?3 = 0)
             ORDER BY device_id"
        );
        for round in 0..6 {
            let mut stmt = store.conn.prepare_cached(&former).unwrap();
            let mut rows = stmt
                .query(params![ns.as_str(), "a@example.org", round % 2 == 0])
                .unwrap();
            while rows.next().unwrap().is_some() {}
        }
        let stmt = store.conn.prepare_cached(&former).unwrap();
        assert!(stmt.get_status(StatementStatus::RePrepare) >= 5);
    }
}
