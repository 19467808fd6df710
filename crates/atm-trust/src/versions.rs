//! One device, two OMEMO versions (LEGACY-NOTES §2, §10): what the store knows about a
//! device across the OMEMO 2 and legacy namespaces.
//!
//! Rows for devices and sessions are per namespace, so a device listed in both namespaces has
//! two device rows (each with its own list state and counters) and can have two sessions. Its
//! identity key is the same in both ([`Store::record_identity_key`] refuses a key that differs
//! from the one the other namespace recorded), and trust is per identity key, so trusting a
//! device in one namespace trusts it in the other.
//!
//! The X3DH state is per namespace too: see the `*_for` pre-key methods in [`Store`].

use std::collections::BTreeMap;

use omemo_crypto::{DeviceId, IdentityPublicKey, ProtocolVersion};
use rusqlite::params;

use crate::devices::Namespace;
use crate::error::{Result, StoreError};
use crate::sql::{device_id_from_sql, identity_key_from_sql};
use crate::Store;

impl Namespace {
    /// Both namespaces, OMEMO 2 first: the default order of preference.
    pub const ALL: [Namespace; 2] = [Namespace::Omemo2, Namespace::Legacy];

    /// The protocol version of this namespace.
    pub const fn version(self) -> ProtocolVersion {
        match self {
            Self::Omemo2 => ProtocolVersion::Omemo2,
            Self::Legacy => ProtocolVersion::Legacy,
        }
    }
}

impl From<ProtocolVersion> for Namespace {
    fn from(version: ProtocolVersion) -> Self {
        match version {
            ProtocolVersion::Omemo2 => Self::Omemo2,
            ProtocolVersion::Legacy => Self::Legacy,
        }
    }
}

impl From<Namespace> for ProtocolVersion {
    fn from(namespace: Namespace) -> Self {
        namespace.version()
    }
}

/// What the store knows about one device id of a contact across both namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceVersions {
    /// The device id (the same in every namespace).
    pub device_id: DeviceId,
    /// The namespaces whose device list currently lists the device (the versions it speaks
    /// now), OMEMO 2 first.
    pub listed_in: Vec<Namespace>,
    /// The namespaces in which the device is known at all (listed, removed, or only seen in
    /// a message), OMEMO 2 first.
    pub known_in: Vec<Namespace>,
    /// The namespaces in which we have a session with the device, OMEMO 2 first.
    pub sessions_in: Vec<Namespace>,
    /// The device's identity key, once any namespace's bundle or key exchange told us.
    pub identity_key: Option<IdentityPublicKey>,
}

impl Store {
    /// Every device id known for `jid` in any namespace, by id, with the versions it is
    /// listed in and has sessions in (for `sync-client devices` and for choosing the version
    /// to encrypt in).
    pub fn device_versions(&self, jid: &str) -> Result<Vec<DeviceVersions>> {
        let mut devices: BTreeMap<DeviceId, DeviceVersions> = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.namespace, d.device_id, d.active, d.identity_key,
                    EXISTS (SELECT 1 FROM sessions s
                            WHERE s.namespace = d.namespace AND s.jid = d.jid
                              AND s.device_id = d.device_id)
             FROM devices d WHERE d.jid = ?1",
        )?;
        let mut rows = stmt.query([jid])?;
        while let Some(row) = rows.next()? {
            let namespace_text: String = row.get(0)?;
            let Some(namespace) = Namespace::from_sql(&namespace_text) else {
                // A namespace this build does not speak: not a version of ours.
                continue;
            };
            let device_id = device_id_from_sql("devices", row.get(1)?)?;
            let active: bool = row.get(2)?;
            let key = row
                .get_ref(3)?
                .as_blob_or_null()?
                .map(|bytes| identity_key_from_sql("devices", bytes))
                .transpose()?;
            let has_session: bool = row.get(4)?;
            let entry = devices.entry(device_id).or_insert_with(|| DeviceVersions {
                device_id,
                listed_in: Vec::new(),
                known_in: Vec::new(),
                sessions_in: Vec::new(),
                identity_key: None,
            });
            entry.known_in.push(namespace);
            if active {
                entry.listed_in.push(namespace);
            }
            if has_session {
                entry.sessions_in.push(namespace);
            }
            match (entry.identity_key, key) {
                (Some(known), Some(other)) if known != other => {
                    return Err(StoreError::IdentityKeyDiffersBetweenVersions {
                        jid: jid.to_owned(),
                        device_id,
                    });
                }
                (None, Some(key)) => entry.identity_key = Some(key),
                _ => {}
            }
        }
        let mut devices: Vec<DeviceVersions> = devices.into_values().collect();
        for device in &mut devices {
            device.listed_in.sort();
            device.known_in.sort();
            device.sessions_in.sort();
        }
        Ok(devices)
    }

    /// The devices of `jid` to encrypt a message for, each exactly once, with the namespace
    /// to use: the first namespace of `priority` whose device list currently lists the
    /// device (LEGACY-NOTES §10, python-omemo's rule). Devices listed in no namespace of
    /// `priority` are left out. Pass [`Namespace::ALL`] for "OMEMO 2 where the device
    /// speaks it, legacy otherwise". Ordered by device id.
    pub fn recipients_by_version(
        &self,
        jid: &str,
        priority: &[Namespace],
    ) -> Result<Vec<(DeviceId, Namespace)>> {
        let mut chosen = Vec::new();
        for device in self.device_versions(jid)? {
            if let Some(namespace) = priority.iter().find(|ns| device.listed_in.contains(ns)) {
                chosen.push((device.device_id, *namespace));
            }
        }
        Ok(chosen)
    }

    /// The identity key recorded for a device in any namespace.
    ///
    /// A legacy key exchange carries the identity only in its Curve25519 form, without the
    /// Ed25519 sign bit; the key recorded from the device's bundle (either version) restores
    /// it. Compare with `omemo_crypto::legacy::IdentityKey::matches`.
    pub fn known_identity_key(
        &self,
        jid: &str,
        device_id: DeviceId,
    ) -> Result<Option<IdentityPublicKey>> {
        Ok(self
            .device_versions(jid)?
            .into_iter()
            .find(|device| device.device_id == device_id)
            .and_then(|device| device.identity_key))
    }

    /// Checks, inside a write transaction, that `key` agrees with the identity key any other
    /// namespace recorded for the device.
    pub(crate) fn check_key_across_versions(
        tx: &rusqlite::Connection,
        namespace: Namespace,
        jid: &str,
        device_id: DeviceId,
        key: &IdentityPublicKey,
    ) -> Result<()> {
        let mut stmt = tx.prepare_cached(
            "SELECT identity_key FROM devices
             WHERE jid = ?1 AND device_id = ?2 AND namespace <> ?3 AND identity_key IS NOT NULL",
        )?;
        let mut rows = stmt.query(params![jid, device_id.get(), namespace.as_str()])?;
        while let Some(row) = rows.next()? {
            let other = identity_key_from_sql("devices", row.get_ref(0)?.as_blob()?)?;
            if other != *key {
                return Err(StoreError::IdentityKeyDiffersBetweenVersions {
                    jid: jid.to_owned(),
                    device_id,
                });
            }
        }
        Ok(())
    }
}
