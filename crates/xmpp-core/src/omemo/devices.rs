//! Contacts' device lists and bundles: recording, refreshing and fetching them.

use super::*;

impl OmemoManager {
    pub(super) async fn record_device_list<V: Pep>(
        &self,
        jid: BareJid,
        list: &V::DeviceList,
    ) -> Result<(), OmemoError> {
        // OMEMO 2 labels can be verified for devices whose identity key we already know.
        let jid_for_keys = jid.clone();
        let mut keys: HashMap<DeviceId, IdentityPublicKey> = self
            .with_store(move |store| store.devices(V::NS, jid_for_keys.as_str()))
            .await??
            .into_iter()
            .filter_map(|d| d.identity_key.map(|k| (d.device_id, k)))
            .collect();
        if jid == self.own.jid {
            keys.insert(self.own.device_id, self.own.identity.public_key());
        }
        let listed = V::listed(list, &keys);
        let jid_for_log = jid.clone();
        let changes = self
            .with_store(move |store| store.update_device_list(V::NS, jid.as_str(), &listed, now()))
            .await??;
        if changes.ignored > 0 || !changes.pruned.is_empty() {
            tracing::warn!(
                jid = %jid_for_log,
                node = V::LIST_NODE,
                ignored = changes.ignored,
                pruned = changes.pruned.len(),
                limit = atm_trust::MAX_DEVICES_PER_JID,
                "device list over the per-contact bound: extra devices ignored, the oldest unlisted ones forgotten"
            );
        }
        if !changes.is_empty() {
            tracing::debug!(?changes, node = V::LIST_NODE, "device list changed");
        }
        Ok(())
    }

    /// Handles an OMEMO 2 device-list notification; republishes ours if our device is
    /// missing.
    pub async fn handle_device_list_notification(
        &self,
        jid: BareJid,
        list: DeviceList,
    ) -> Result<(), OmemoError> {
        self.handle_list_notification::<Omemo2>(jid, list).await
    }

    /// Handles a legacy device-list notification (`eu.siacs.conversations.axolotl.devicelist`);
    /// republishes ours if our device is missing.
    pub async fn handle_legacy_device_list_notification(
        &self,
        jid: BareJid,
        list: omemo_pep::legacy::DeviceList,
    ) -> Result<(), OmemoError> {
        self.handle_list_notification::<omemo_crypto::Legacy>(jid, list)
            .await
    }

    async fn handle_list_notification<V: Pep>(
        &self,
        jid: BareJid,
        list: V::DeviceList,
    ) -> Result<(), OmemoError> {
        self.record_device_list::<V>(jid.clone(), &list).await?;
        note_fetched(
            &mut *self.device_lists_fetched.lock().await,
            (V::NS, jid.clone()),
        );
        if jid == self.own.jid && !V::lists(&list, self.own.device_id) {
            tracing::warn!(
                node = V::LIST_NODE,
                "our device vanished from our device list; re-adding it"
            );
            self.publish_own_entry::<V>(Some(&list)).await?;
        }
        Ok(())
    }

    /// Fetches `jid`'s device list of version `V` unless a fresh one is known. Returns false
    /// if the JID has no device list of that version.
    pub(super) async fn refresh_device_list<V: Pep>(
        &self,
        jid: &BareJid,
        force: bool,
    ) -> Result<bool, OmemoError> {
        let key = (V::NS, jid.clone());
        if !force && self.device_list_fresh(V::NS, jid).await {
            return Ok(true);
        }
        let answer = self
            .request(V::fetch_device_list(jid, &self.iq_id("devices")))
            .await?;
        let found = match V::parse_device_list(&answer) {
            Fetched::Found(list) => {
                self.record_device_list::<V>(jid.clone(), &list).await?;
                true
            }
            Fetched::NotFound => false,
            other => {
                tracing::warn!(%jid, node = V::LIST_NODE, outcome = ?other, "cannot fetch device list");
                false
            }
        };
        note_fetched(&mut *self.device_lists_fetched.lock().await, key);
        Ok(found)
    }

    /// Whether `jid`'s device list of `namespace` was fetched less than
    /// [`DEVICE_LIST_MAX_AGE`] ago (sending to `jid` would not fetch it first).
    pub(super) async fn device_list_fresh(&self, namespace: Namespace, jid: &BareJid) -> bool {
        self.device_lists_fetched
            .lock()
            .await
            .get(&(namespace, jid.clone()))
            .is_some_and(|t| t.elapsed() < DEVICE_LIST_MAX_AGE)
    }

    /// Whether an earlier bundle fetch for this device failed and its back-off has not ended.
    pub(super) fn backing_off(&self, ns: Namespace, jid: &BareJid, device: DeviceId) -> bool {
        self.bundle_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(ns, jid.clone(), device))
            .is_some_and(|(_, retry_at)| Instant::now() < *retry_at)
    }

    /// Fetches a device's bundle, unless an earlier fetch failed and its back-off has not
    /// ended; a failure starts or doubles the back-off.
    pub(super) async fn fetch_bundle<V: Pep>(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<Option<V::Bundle>, OmemoError> {
        let key = (V::NS, jid.clone(), device);
        if self.backing_off(V::NS, jid, device) {
            tracing::debug!(%jid, %device, "bundle fetch failed before; not asking again yet");
            return Ok(None);
        }
        let answer = self
            .request(V::fetch_bundle(jid, device, &self.iq_id("bundle")))
            .await?;
        let mut failures = self
            .bundle_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(match V::parse_bundle(&answer, device) {
            Fetched::Found(bundle) => {
                failures.remove(&key);
                Some(bundle)
            }
            other => {
                let failed = failures.get(&key).map_or(1, |(n, _)| n.saturating_add(1));
                let wait = BUNDLE_RETRY_FIRST
                    .saturating_mul(1 << failed.saturating_sub(1).min(16))
                    .min(BUNDLE_RETRY_MAX);
                tracing::warn!(%jid, %device, node = V::BUNDLE_NODE, outcome = ?other, failed, retry_in = ?wait, "no usable bundle");
                if failures.len() >= BUNDLE_FAILURES_KEPT && !failures.contains_key(&key) {
                    let first = failures
                        .iter()
                        .min_by_key(|(_, (_, retry_at))| *retry_at)
                        .map(|(k, _)| k.clone());
                    if let Some(first) = first {
                        failures.remove(&first);
                    }
                }
                failures.insert(key, (failed, Instant::now() + wait));
                None
            }
        })
    }

    /// Refreshes a device list of version `V` after a message in that version from a
    /// device it does not contain.
    pub(crate) async fn note_sender_device<V: Pep>(&self, jid: &BareJid, device: DeviceId) {
        let jid_owned = jid.clone();
        let known = self
            .with_store(move |store| {
                store
                    .device(V::NS, jid_owned.as_str(), device)
                    .map(|d| d.is_some_and(|d| d.active))
            })
            .await;
        if !matches!(known, Ok(Ok(true))) {
            // A sender that keeps writing from an unlisted device (or has no list at all)
            // must not turn every message into a PEP request; a device id not tried yet in
            // this window may (a new device of the contact), within a small budget.
            let allowed = unlisted_refresh_allowed(
                &mut self
                    .unlisted_senders
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                jid,
                device,
                Instant::now(),
            );
            if !allowed {
                return;
            }
            if let Err(e) = self.refresh_device_list::<V>(jid, true).await {
                tracing::debug!(error = %e, "device list refresh failed");
            }
        }
    }
}

/// Whether a message from `device`, missing from `jid`'s list, may trigger a fetch of that
/// list at `now`: once per device id per [`UNLISTED_SENDER_REFRESH`] window, at most
/// [`UNLISTED_DEVICES_PER_WINDOW`] device ids per JID and window, windows of at most
/// [`FETCH_TIMES_KEPT`] JIDs at once (beyond it, no fetch until windows end).
fn unlisted_refresh_allowed(
    tried: &mut HashMap<BareJid, (Instant, Vec<DeviceId>)>,
    jid: &BareJid,
    device: DeviceId,
    now: Instant,
) -> bool {
    let open = |start: &Instant| now.saturating_duration_since(*start) < UNLISTED_SENDER_REFRESH;
    if !tried.contains_key(jid) && tried.len() >= FETCH_TIMES_KEPT {
        tried.retain(|_, (start, _)| open(start));
        if tried.len() >= FETCH_TIMES_KEPT {
            return false;
        }
    }
    let entry = tried.entry(jid.clone()).or_insert((now, Vec::new()));
    if !open(&entry.0) {
        *entry = (now, Vec::new());
    }
    if entry.1.contains(&device) || entry.1.len() >= UNLISTED_DEVICES_PER_WINDOW {
        return false;
    }
    entry.1.push(device);
    true
}

/// A device's bundle of version `V`, fetched for a message.
pub(super) type FetchedBundle<V> = (BareJid, DeviceId, <V as omemo_crypto::Version>::Bundle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_new_device_may_refresh_once_per_window_within_a_budget() {
        let mut tried = HashMap::new();
        let alice = BareJid::new("alice@example.org").unwrap();
        let t0 = Instant::now();
        let d = |n: u32| DeviceId::new(n).unwrap();
        // A new device: one fetch, not one per message.
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(1), t0));
        assert!(!unlisted_refresh_allowed(&mut tried, &alice, d(1), t0));
        // Another new device of the same contact, at once (was: wait for the window).
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(2), t0));
        // A sender inventing device ids runs out of budget...
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(3), t0));
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(4), t0));
        assert!(!unlisted_refresh_allowed(&mut tried, &alice, d(5), t0));
        // ...until the window ends.
        let later = t0 + UNLISTED_SENDER_REFRESH;
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(5), later));
        assert!(unlisted_refresh_allowed(&mut tried, &alice, d(1), later));
        // The map of windows is bounded.
        for n in 0..FETCH_TIMES_KEPT {
            let jid = BareJid::new(&format!("u{n}@example.org")).unwrap();
            unlisted_refresh_allowed(&mut tried, &jid, d(1), later);
        }
        assert!(tried.len() <= FETCH_TIMES_KEPT);
        let stranger = BareJid::new("stranger@example.org").unwrap();
        assert!(!unlisted_refresh_allowed(
            &mut tried,
            &stranger,
            d(1),
            later
        ));
        // Expired windows make room.
        let much_later = later + UNLISTED_SENDER_REFRESH;
        assert!(unlisted_refresh_allowed(
            &mut tried,
            &stranger,
            d(1),
            much_later
        ));
    }
}
