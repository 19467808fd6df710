//! Our own device: identity, device id, label, signed pre-keys and one-time pre-keys
//! (XEP-0384 §devices, §bundles, §rules).
//!
//! The device id and identity are shared by both OMEMO versions; signed pre-keys and
//! one-time pre-keys belong to one namespace's bundle each. The `*_for` methods take the
//! namespace; the methods without it are the OMEMO 2 case, as before legacy existed.

use omemo_crypto::{
    DeviceId, IdentityKeyPair, PreKey, PreKeyId, Signature, SignedPreKey, SignedPreKeyId, MAX_ID,
};
use rand_core::CryptoRngCore;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::devices::Namespace;
use crate::error::{Result, StoreError};
use crate::sql::{
    device_id_from_sql, pre_key_id_from_sql, secret_from_row, signed_pre_key_id_from_sql,
    time_from_sql, time_to_sql,
};
use crate::Store;

/// Our own OMEMO device: the account, the device id, the identity key pair and the label.
///
/// The device id and identity never change for the life of the database.
#[derive(Debug)]
pub struct OwnDevice {
    jid: String,
    device_id: DeviceId,
    identity: IdentityKeyPair,
    label: Option<String>,
    created_at: u64,
}

impl OwnDevice {
    /// The account's bare JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Our device id (`<device id>`, `sid`).
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// Our identity key pair (`IK`).
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The device label published in the device list (`<device label>`).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// When the device was created (Unix seconds).
    pub fn created_at(&self) -> u64 {
        self.created_at
    }
}

/// The id after `id`, wrapping from 2³¹−1 back to 1.
fn next_id(id: u32) -> u32 {
    if id >= MAX_ID {
        1
    } else {
        id + 1
    }
}

fn own_device_from_row(row: &Row<'_>) -> Result<OwnDevice> {
    const TABLE: &str = "own_device";
    let seed = secret_from_row(row, 2, TABLE)?;
    Ok(OwnDevice {
        jid: row.get(0)?,
        device_id: device_id_from_sql(TABLE, row.get(1)?)?,
        identity: omemo_crypto::hazmat::identity_from_seed(&seed),
        label: row.get(3)?,
        created_at: time_from_sql(TABLE, row.get(4)?)?,
    })
}

fn load_own_device(conn: &rusqlite::Connection) -> Result<Option<OwnDevice>> {
    let mut stmt = conn.prepare_cached(
        "SELECT jid, device_id, identity_seed, label, created_at FROM own_device WHERE id = 1",
    )?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(row) => own_device_from_row(row).map(Some),
        None => Ok(None),
    }
}

fn signed_pre_key_from_row(row: &Row<'_>) -> Result<SignedPreKey> {
    const TABLE: &str = "signed_pre_keys";
    let id = signed_pre_key_id_from_sql(TABLE, row.get(0)?)?;
    let secret = secret_from_row(row, 1, TABLE)?;
    let signature_bytes = row.get_ref(2)?.as_blob()?;
    let signature = Signature::from_bytes(signature_bytes)
        .map_err(|err| StoreError::corrupt(TABLE, format!("signature: {err}")))?;
    let created_at = time_from_sql(TABLE, row.get(3)?)?;
    Ok(SignedPreKey::from_parts(id, &secret, signature, created_at))
}

fn pre_key_from_row(row: &Row<'_>) -> Result<PreKey> {
    const TABLE: &str = "pre_keys";
    let id = pre_key_id_from_sql(TABLE, row.get(0)?)?;
    let secret = secret_from_row(row, 1, TABLE)?;
    Ok(PreKey::from_secret(id, &secret))
}

/// A new signed pre-key signed the way `namespace`'s bundles are verified (OMEMO 2 signs the
/// raw key, legacy the `0x05`-prefixed key with the identity's sign bit folded in).
fn generate_signed_pre_key(
    namespace: Namespace,
    id: SignedPreKeyId,
    identity: &IdentityKeyPair,
    now: u64,
    rng: &mut impl CryptoRngCore,
) -> SignedPreKey {
    match namespace {
        Namespace::Omemo2 => SignedPreKey::generate(id, identity, now, rng),
        Namespace::Legacy => SignedPreKey::generate_legacy(id, identity, now, rng),
    }
}

/// Stores `spk` as the current OMEMO 2 signed pre-key.
fn insert_signed_pre_key(tx: &Connection, spk: &SignedPreKey) -> Result<()> {
    insert_signed_pre_key_for(tx, Namespace::Omemo2, spk)
}

/// Stores `spk` as the current signed pre-key of `namespace`.
fn insert_signed_pre_key_for(
    tx: &Connection,
    namespace: Namespace,
    spk: &SignedPreKey,
) -> Result<()> {
    tx.execute(
        "INSERT INTO signed_pre_keys (id, namespace, secret, signature, created_at, is_current)
         VALUES (?1, ?5, ?2, ?3, ?4, 1)",
        params![
            spk.id().get(),
            &spk.secret_bytes()[..],
            &spk.signature().as_bytes()[..],
            time_to_sql(spk.created_at()),
            namespace.as_str(),
        ],
    )?;
    Ok(())
}

/// Reads `next_signed_pre_key_id`, skipping ids still stored, and advances it.
fn allocate_signed_pre_key_id(tx: &Connection) -> Result<SignedPreKeyId> {
    let stored: i64 = tx.query_row(
        "SELECT next_signed_pre_key_id FROM own_device WHERE id = 1",
        [],
        |row| row.get(0),
    )?;
    let mut candidate = signed_pre_key_id_from_sql("own_device", stored)?.get();
    // At most a handful of signed pre-keys exist, so this ends after a few steps.
    loop {
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM signed_pre_keys WHERE id = ?1)",
            [candidate],
            |row| row.get(0),
        )?;
        if !taken {
            break;
        }
        candidate = next_id(candidate);
    }
    tx.execute(
        "UPDATE own_device SET next_signed_pre_key_id = ?1 WHERE id = 1",
        [next_id(candidate)],
    )?;
    SignedPreKeyId::new(candidate).map_err(|err| StoreError::corrupt("own_device", err.to_string()))
}

/// Marks a pre-key of `namespace` as consumed by a key exchange. Marking it again keeps the
/// first time. A key of the other namespace is unknown here.
pub(crate) fn mark_pre_key_used_in(
    tx: &Connection,
    namespace: Namespace,
    id: PreKeyId,
    now: u64,
) -> Result<()> {
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM pre_keys WHERE id = ?1 AND namespace = ?2)")?
        .query_row(params![id.get(), namespace.as_str()], |row| row.get(0))?;
    if !exists {
        return Err(StoreError::UnknownPreKey(id));
    }
    tx.prepare_cached("UPDATE pre_keys SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL")?
        .execute(params![id.get(), time_to_sql(now)])?;
    Ok(())
}

impl Store {
    /// Loads our device, or creates it on first use: a fresh identity key, a random device id
    /// in 1..=2³¹−1 and the first signed pre-key, all in one transaction.
    ///
    /// `label` replaces the stored label when given. A database created for another JID
    /// gives [`StoreError::AccountMismatch`].
    pub fn load_or_create_own_device(
        &mut self,
        jid: &str,
        label: Option<&str>,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<OwnDevice> {
        let tx = self.write()?;
        if let Some(mut device) = load_own_device(&tx)? {
            if device.jid != jid {
                return Err(StoreError::AccountMismatch);
            }
            if let Some(label) = label {
                if device.label.as_deref() != Some(label) {
                    tx.execute("UPDATE own_device SET label = ?1 WHERE id = 1", [label])?;
                    device.label = Some(label.to_owned());
                }
            }
            tx.commit()?;
            return Ok(device);
        }
        let identity = IdentityKeyPair::generate(rng);
        let device_id = DeviceId::random(rng);
        tx.execute(
            "INSERT INTO own_device (id, jid, device_id, identity_seed, label, created_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![
                jid,
                device_id.get(),
                &omemo_crypto::hazmat::identity_seed(&identity)[..],
                label,
                time_to_sql(now)
            ],
        )?;
        let spk_id = allocate_signed_pre_key_id(&tx)?;
        let spk = SignedPreKey::generate(spk_id, &identity, now, rng);
        insert_signed_pre_key(&tx, &spk)?;
        tx.commit()?;
        Ok(OwnDevice {
            jid: jid.to_owned(),
            device_id,
            identity,
            label: label.map(str::to_owned),
            created_at: now,
        })
    }

    /// Starts over with a new identity: a fresh identity key (see
    /// [`IdentityKeyPair::generate`]), a new device id and a new signed pre-key, in one
    /// transaction. Returns the device id given up, or `None` when there was no device yet
    /// (the next [`Store::load_or_create_own_device`] creates one as usual).
    ///
    /// What belonged to the old identity goes: its signed and one-time pre-keys and every
    /// Double Ratchet session (each was agreed with the old key; contacts build new ones with
    /// the new device). Contacts' devices, trust decisions, the label and the inbox and outbox
    /// stay. The old device id is recorded as retired (see [`Store::retired_own_devices`]),
    /// to be kept out of the published device list. Contacts see a new device that they have
    /// to trust again.
    ///
    /// A database created for another JID gives [`StoreError::AccountMismatch`] and is left
    /// as it was.
    pub fn reset_own_device(
        &mut self,
        jid: &str,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<Option<DeviceId>> {
        let tx = self.write()?;
        let Some(old) = load_own_device(&tx)? else {
            return Ok(None);
        };
        if old.jid != jid {
            return Err(StoreError::AccountMismatch);
        }
        let retired = {
            let mut stmt = tx.prepare_cached("SELECT device_id FROM retired_own_devices")?;
            let ids = stmt.query_map([], |row| row.get::<_, i64>(0))?;
            ids.collect::<std::result::Result<Vec<_>, _>>()?
        };
        let identity = IdentityKeyPair::generate(rng);
        let device_id = loop {
            let id = DeviceId::random(rng);
            if id != old.device_id && !retired.contains(&i64::from(id.get())) {
                break id;
            }
        };
        tx.execute(
            "INSERT OR REPLACE INTO retired_own_devices (device_id, retired_at) VALUES (?1, ?2)",
            params![old.device_id.get(), time_to_sql(now)],
        )?;
        tx.execute("DELETE FROM sessions", [])?;
        tx.execute("DELETE FROM pre_keys", [])?;
        tx.execute("DELETE FROM signed_pre_keys", [])?;
        tx.execute(
            "UPDATE devices SET active = 0, removed_at = ?3
             WHERE jid = ?1 AND device_id = ?2 AND active = 1",
            params![jid, old.device_id.get(), time_to_sql(now)],
        )?;
        tx.execute(
            "UPDATE own_device SET device_id = ?1, identity_seed = ?2, created_at = ?3 WHERE id = 1",
            params![device_id.get(), &omemo_crypto::hazmat::identity_seed(&identity)[..], time_to_sql(now)],
        )?;
        let spk_id = allocate_signed_pre_key_id(&tx)?;
        let spk = SignedPreKey::generate(spk_id, &identity, now, rng);
        insert_signed_pre_key(&tx, &spk)?;
        tx.commit()?;
        Ok(Some(old.device_id))
    }

    /// Device ids given up by [`Store::reset_own_device`]: they are kept out of the published
    /// device list (a late copy of an old list may still name them).
    pub fn retired_own_devices(&self) -> Result<Vec<DeviceId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device_id FROM retired_own_devices ORDER BY device_id")?;
        let mut rows = stmt.query([])?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(device_id_from_sql("retired_own_devices", row.get(0)?)?);
        }
        Ok(ids)
    }

    /// Our device, if it has been created.
    pub fn own_device(&self) -> Result<Option<OwnDevice>> {
        load_own_device(&self.conn)
    }

    /// Records that every message the server archived before `at` (Unix seconds) has been
    /// handled: call it on a clean shutdown with nothing left to handle. No-op before our
    /// device exists.
    pub fn set_caught_up_until(&mut self, at: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE own_device SET caught_up_until = ?1 WHERE id = 1",
            params![time_to_sql(at)],
        )?;
        Ok(())
    }

    /// What [`Store::set_caught_up_until`] last recorded.
    pub fn caught_up_until(&self) -> Result<Option<u64>> {
        let value: Option<i64> = self
            .conn
            .query_row(
                "SELECT caught_up_until FROM own_device WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        value.map(|v| time_from_sql("own_device", v)).transpose()
    }

    /// The signed pre-key currently in our OMEMO 2 bundle.
    pub fn current_signed_pre_key(&self) -> Result<Option<SignedPreKey>> {
        self.current_signed_pre_key_for(Namespace::Omemo2)
    }

    /// The signed pre-key currently in `namespace`'s bundle.
    pub fn current_signed_pre_key_for(&self, namespace: Namespace) -> Result<Option<SignedPreKey>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, secret, signature, created_at FROM signed_pre_keys
             WHERE is_current = 1 AND namespace = ?1",
        )?;
        let mut rows = stmt.query([namespace.as_str()])?;
        rows.next()?.map(signed_pre_key_from_row).transpose()
    }

    /// The current signed pre-key of `namespace`, created (and signed for that namespace) if
    /// the namespace has none yet: how a device created before legacy existed gets its first
    /// legacy signed pre-key. Needs the own device.
    pub fn ensure_signed_pre_key(
        &mut self,
        namespace: Namespace,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<SignedPreKey> {
        if let Some(spk) = self.current_signed_pre_key_for(namespace)? {
            return Ok(spk);
        }
        let tx = self.write()?;
        let own = load_own_device(&tx)?.ok_or(StoreError::NoOwnDevice)?;
        let id = allocate_signed_pre_key_id(&tx)?;
        let spk = generate_signed_pre_key(namespace, id, own.identity(), now, rng);
        insert_signed_pre_key_for(&tx, namespace, &spk)?;
        tx.commit()?;
        Ok(spk)
    }

    /// An OMEMO 2 signed pre-key by id: the current one or a previous one still kept for
    /// late key exchanges.
    pub fn signed_pre_key(&self, id: SignedPreKeyId) -> Result<Option<SignedPreKey>> {
        self.signed_pre_key_for(Namespace::Omemo2, id)
    }

    /// A signed pre-key of `namespace` by id (current or previous). A key exchange naming
    /// the other namespace's key finds nothing.
    pub fn signed_pre_key_for(
        &self,
        namespace: Namespace,
        id: SignedPreKeyId,
    ) -> Result<Option<SignedPreKey>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, secret, signature, created_at FROM signed_pre_keys
             WHERE id = ?1 AND namespace = ?2",
        )?;
        let mut rows = stmt.query(params![id.get(), namespace.as_str()])?;
        rows.next()?.map(signed_pre_key_from_row).transpose()
    }

    /// Replaces the current OMEMO 2 signed pre-key by a new one and returns it.
    ///
    /// The old current key becomes the previous key (kept until
    /// [`Store::prune_signed_pre_keys`] drops it); an even older one is deleted. When to
    /// rotate is the caller's decision, from [`SignedPreKey::created_at`].
    pub fn rotate_signed_pre_key(
        &mut self,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<SignedPreKey> {
        self.rotate_signed_pre_key_for(Namespace::Omemo2, rng, now)
    }

    /// [`Store::rotate_signed_pre_key`] for `namespace`; the other namespace's keys are left
    /// alone.
    pub fn rotate_signed_pre_key_for(
        &mut self,
        namespace: Namespace,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<SignedPreKey> {
        let ns = namespace.as_str();
        let tx = self.write()?;
        let own = load_own_device(&tx)?.ok_or(StoreError::NoOwnDevice)?;
        tx.execute(
            "DELETE FROM signed_pre_keys WHERE is_current IS NULL AND namespace = ?1",
            [ns],
        )?;
        tx.execute(
            "UPDATE signed_pre_keys SET is_current = NULL, retired_at = ?1
             WHERE is_current = 1 AND namespace = ?2",
            params![time_to_sql(now), ns],
        )?;
        let id = allocate_signed_pre_key_id(&tx)?;
        let spk = generate_signed_pre_key(namespace, id, own.identity(), now, rng);
        insert_signed_pre_key_for(&tx, namespace, &spk)?;
        tx.commit()?;
        Ok(spk)
    }

    /// Deletes previous OMEMO 2 signed pre-keys retired at least `grace` seconds before
    /// `now`. Returns how many were deleted.
    pub fn prune_signed_pre_keys(&mut self, grace: u64, now: u64) -> Result<usize> {
        self.prune_signed_pre_keys_for(Namespace::Omemo2, grace, now)
    }

    /// [`Store::prune_signed_pre_keys`] for `namespace`.
    pub fn prune_signed_pre_keys_for(
        &mut self,
        namespace: Namespace,
        grace: u64,
        now: u64,
    ) -> Result<usize> {
        let cutoff = time_to_sql(now.saturating_sub(grace));
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM signed_pre_keys
             WHERE is_current IS NULL AND retired_at <= ?1 AND namespace = ?2",
            params![cutoff, namespace.as_str()],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Tops the unused OMEMO 2 pre-keys up to `target` (XEP-0384 asks for about 100) and
    /// returns the ids of the new keys, which are not yet published.
    ///
    /// New ids continue a counter shared by both namespaces, so an id names one key and is
    /// not reused until the 2³¹−1 id space wraps.
    pub fn ensure_pre_keys(
        &mut self,
        target: usize,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<Vec<PreKeyId>> {
        self.ensure_pre_keys_for(Namespace::Omemo2, target, rng, now)
    }

    /// [`Store::ensure_pre_keys`] for `namespace`: only that namespace's unused keys count
    /// towards `target`.
    pub fn ensure_pre_keys_for(
        &mut self,
        namespace: Namespace,
        target: usize,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<Vec<PreKeyId>> {
        let ns = namespace.as_str();
        let tx = self.write()?;
        let next: i64 = tx
            .query_row(
                "SELECT next_pre_key_id FROM own_device WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(StoreError::NoOwnDevice)?;
        let unused: i64 = tx.query_row(
            "SELECT count(*) FROM pre_keys WHERE used_at IS NULL AND namespace = ?1",
            [ns],
            |row| row.get(0),
        )?;
        let missing = target.saturating_sub(usize::try_from(unused).unwrap_or(usize::MAX));
        let mut candidate = pre_key_id_from_sql("own_device", next)?.get();
        let mut created = Vec::with_capacity(missing);
        {
            let mut taken =
                tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM pre_keys WHERE id = ?1)")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO pre_keys (id, secret, created_at, published, namespace)
                 VALUES (?1, ?2, ?3, 0, ?4)",
            )?;
            for _ in 0..missing {
                let start = candidate;
                while taken.query_row([candidate], |row| row.get::<_, bool>(0))? {
                    candidate = next_id(candidate);
                    if candidate == start {
                        return Err(StoreError::PreKeyIdsExhausted);
                    }
                }
                let id = PreKeyId::new(candidate)
                    .map_err(|err| StoreError::corrupt("own_device", err.to_string()))?;
                let key = PreKey::generate(id, rng);
                insert.execute(params![
                    id.get(),
                    &key.secret_bytes()[..],
                    time_to_sql(now),
                    ns
                ])?;
                created.push(id);
                candidate = next_id(candidate);
            }
        }
        tx.execute(
            "UPDATE own_device SET next_pre_key_id = ?1 WHERE id = 1",
            [candidate],
        )?;
        tx.commit()?;
        Ok(created)
    }

    /// An OMEMO 2 one-time pre-key by id, used or not (a used key stays available for its
    /// grace period, for messages fetched late from the archive).
    pub fn pre_key(&self, id: PreKeyId) -> Result<Option<PreKey>> {
        self.pre_key_for(Namespace::Omemo2, id)
    }

    /// A one-time pre-key of `namespace` by id, used or not.
    pub fn pre_key_for(&self, namespace: Namespace, id: PreKeyId) -> Result<Option<PreKey>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, secret FROM pre_keys WHERE id = ?1 AND namespace = ?2")?;
        let mut rows = stmt.query(params![id.get(), namespace.as_str()])?;
        rows.next()?.map(pre_key_from_row).transpose()
    }

    /// The unused OMEMO 2 pre-keys, by id: the ones that belong in our bundle.
    pub fn unused_pre_keys(&self) -> Result<Vec<PreKey>> {
        self.unused_pre_keys_for(Namespace::Omemo2)
    }

    /// The unused pre-keys of `namespace`, by id: the ones that belong in its bundle.
    pub fn unused_pre_keys_for(&self, namespace: Namespace) -> Result<Vec<PreKey>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, secret FROM pre_keys WHERE used_at IS NULL AND namespace = ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([namespace.as_str()])?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next()? {
            keys.push(pre_key_from_row(row)?);
        }
        Ok(keys)
    }

    /// Records which pre-keys the OMEMO 2 bundle now on the server holds (after a
    /// successful publish): exactly `ids` are marked published, every other OMEMO 2 key
    /// unpublished.
    pub fn mark_bundle_published(&mut self, ids: &[PreKeyId]) -> Result<()> {
        self.mark_bundle_published_for(Namespace::Omemo2, ids)
    }

    /// [`Store::mark_bundle_published`] for `namespace`'s bundle; ids of the other
    /// namespace's keys are ignored and its keys keep their marks.
    pub fn mark_bundle_published_for(
        &mut self,
        namespace: Namespace,
        ids: &[PreKeyId],
    ) -> Result<()> {
        let ns = namespace.as_str();
        let tx = self.write()?;
        tx.execute(
            "UPDATE pre_keys SET published = 0 WHERE published = 1 AND namespace = ?1",
            [ns],
        )?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE pre_keys SET published = 1 WHERE id = ?1 AND namespace = ?2",
            )?;
            for id in ids {
                stmt.execute(params![id.get(), ns])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// True when the published OMEMO 2 bundle is out of date: an unused key is missing from
    /// it, or a used key is still in it (XEP-0384 requires republishing after a key
    /// exchange).
    pub fn bundle_needs_publishing(&self) -> Result<bool> {
        self.bundle_needs_publishing_for(Namespace::Omemo2)
    }

    /// [`Store::bundle_needs_publishing`] for `namespace`'s bundle.
    pub fn bundle_needs_publishing_for(&self, namespace: Namespace) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pre_keys
                            WHERE namespace = ?1
                              AND ((used_at IS NULL AND published = 0)
                                OR (used_at IS NOT NULL AND published = 1)))",
            [namespace.as_str()],
            |row| row.get(0),
        )?)
    }

    /// Marks an OMEMO 2 pre-key as used by a key exchange. Prefer
    /// [`Store::commit_decryption`], which does this together with the new session state.
    pub fn mark_pre_key_used(&mut self, id: PreKeyId, now: u64) -> Result<()> {
        self.mark_pre_key_used_for(Namespace::Omemo2, id, now)
    }

    /// [`Store::mark_pre_key_used`] for a key of `namespace`; a key of the other namespace
    /// gives [`StoreError::UnknownPreKey`].
    pub fn mark_pre_key_used_for(
        &mut self,
        namespace: Namespace,
        id: PreKeyId,
        now: u64,
    ) -> Result<()> {
        let tx = self.write()?;
        mark_pre_key_used_in(&tx, namespace, id, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes OMEMO 2 pre-keys used at least `grace` seconds before `now`. Returns how
    /// many.
    pub fn remove_used_pre_keys(&mut self, grace: u64, now: u64) -> Result<usize> {
        self.remove_used_pre_keys_for(Namespace::Omemo2, grace, now)
    }

    /// [`Store::remove_used_pre_keys`] for `namespace`.
    pub fn remove_used_pre_keys_for(
        &mut self,
        namespace: Namespace,
        grace: u64,
        now: u64,
    ) -> Result<usize> {
        let cutoff = time_to_sql(now.saturating_sub(grace));
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM pre_keys WHERE used_at IS NOT NULL AND used_at <= ?1 AND namespace = ?2",
            params![cutoff, namespace.as_str()],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}
