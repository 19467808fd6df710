//! Publishing our own device: the device-list entry and the bundle (XEP-0384 §devices,
//! §bundles), with republication after key exchanges used our pre-keys.

use super::*;

impl OmemoManager {
    /// Publishes our device in our device list (keeping every other device) and our bundle.
    pub async fn set_up(&self) -> Result<(), OmemoError> {
        self.publish_device_list().await?;
        self.publish_bundle_if_changed().await?;
        Ok(())
    }

    /// Fetches our device list and republishes it if our device is missing.
    pub async fn publish_device_list(&self) -> Result<(), OmemoError> {
        let answer = self
            .request(pep::fetch_device_list(
                &self.own.jid,
                &self.iq_id("own-devices"),
            ))
            .await?;
        let current = match pep::parse_device_list_response(&answer) {
            Fetched::Found(list) => Some(list),
            Fetched::NotFound => None,
            Fetched::Malformed(e) => {
                tracing::warn!(error = %e, "our own device list is malformed; replacing it");
                None
            }
            other => {
                return Err(OmemoError::Publish {
                    what: "device list",
                    reason: format!("fetching it failed: {other:?}"),
                })
            }
        };
        if let Some(list) = &current {
            self.record_device_list(self.own.jid.clone(), list).await?;
        }
        self.publish_own_entry(current.as_ref()).await
    }

    pub(super) async fn publish_own_entry(
        &self,
        current: Option<&DeviceList>,
    ) -> Result<(), OmemoError> {
        let entry = DeviceEntry::with_signed_label(
            self.own.device_id,
            &self.own.label,
            &self.own.identity,
        )?;
        // Device ids given up by an identity reset leave the list (also when a stale copy of
        // the list brings them back), and their bundles go.
        let retired = self
            .with_store(|store| store.retired_own_devices())
            .await??;
        let listed_retired: Vec<DeviceId> = retired
            .iter()
            .copied()
            .filter(|id| current.is_some_and(|list| list.contains(*id)))
            .collect();
        if let Some(list) = pep::own_device_list(current, entry, &retired)? {
            tracing::info!(device = %self.own.device_id, devices = list.len(), "publishing our device list");
            self.publish(Publication::device_list(&list), "device list")
                .await?;
            self.record_device_list(self.own.jid.clone(), &list).await?;
        }
        for device in listed_retired {
            let answer = self
                .request(pep::retract_bundle(device, &self.iq_id("retract")))
                .await?;
            tracing::info!(%device, ok = matches!(answer, Iq::Result { .. }), "retracted the bundle of our old device");
        }
        Ok(())
    }

    /// Publishes our bundle (signed pre-key and unused pre-keys).
    pub async fn publish_bundle(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle().await?;
        self.publish_own_bundle(bundle, ids).await
    }

    /// Publishes our bundle unless the server holds exactly this one already (a restart with
    /// the same database changes nothing, and republishing would only cost a round trip and a
    /// notification to every contact).
    pub(super) async fn publish_bundle_if_changed(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle().await?;
        let device = self.own.device_id;
        let answer = self
            .request(pep::fetch_bundle(
                &self.own.jid,
                device,
                &self.iq_id("own-bundle"),
            ))
            .await?;
        if let Fetched::Found(published) = pep::parse_bundle_response(&answer, device) {
            if same_bundle(&published, &bundle) {
                tracing::info!(%device, "our bundle on the server is current");
                self.with_store(move |store| store.mark_bundle_published(&ids))
                    .await??;
                return Ok(());
            }
        }
        self.publish_own_bundle(bundle, ids).await
    }

    /// Our bundle as the store has it now (topping up the pre-keys first), with the ids of
    /// its pre-keys.
    pub(super) async fn own_bundle(
        &self,
    ) -> Result<(Bundle, Vec<omemo_crypto::PreKeyId>), OmemoError> {
        let own = Arc::clone(&self.own);
        self.with_store(move |store| -> Result<_, OmemoError> {
            let t = now();
            store.ensure_pre_keys(PRE_KEY_TARGET, &mut OsRng, t)?;
            let spk = store
                .current_signed_pre_key()?
                .ok_or(StoreError::NoOwnDevice)?;
            let pre_keys = store.unused_pre_keys()?;
            let ids: Vec<_> = pre_keys.iter().map(|pk| pk.id()).collect();
            let bundle = Bundle::from_own_keys(&own.identity, &spk, &pre_keys).map_err(|e| {
                OmemoError::Publish {
                    what: "bundle",
                    reason: e.to_string(),
                }
            })?;
            Ok((bundle, ids))
        })
        .await?
    }

    pub(super) async fn publish_own_bundle(
        &self,
        bundle: Bundle,
        ids: Vec<omemo_crypto::PreKeyId>,
    ) -> Result<(), OmemoError> {
        tracing::info!(device = %self.own.device_id, pre_keys = ids.len(), "publishing our bundle");
        self.publish(Publication::bundle(self.own.device_id, &bundle), "bundle")
            .await?;
        self.with_store(move |store| store.mark_bundle_published(&ids))
            .await??;
        Ok(())
    }

    /// Republishes our bundle once a burst of key exchanges is over: when none came for
    /// [`REPUBLISH_QUIET`], or [`REPUBLISH_MAX_DELAY`] after the first one. Until then the
    /// bundle on the server still offers the used pre-keys, which we keep for a day anyway.
    pub(super) fn republish_bundle_soon(self: &Arc<Self>) {
        let now = Instant::now();
        {
            let mut due = self
                .republish
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, last)) = due.as_mut() {
                *last = now;
                return;
            }
            *due = Some((now, now));
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wake = {
                    let mut due = manager
                        .republish
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let Some((first, last)) = *due else { return };
                    let wake = (last + REPUBLISH_QUIET).min(first + REPUBLISH_MAX_DELAY);
                    if Instant::now() >= wake {
                        *due = None;
                        break;
                    }
                    wake
                };
                tokio::time::sleep_until(wake.into()).await;
            }
            if let Err(e) = manager.publish_bundle().await {
                tracing::warn!(error = %e, "republishing the bundle after key exchanges failed");
            }
        });
    }
}

/// Whether two bundles offer the same keys (pre-keys in any order).
pub(super) fn same_bundle(a: &Bundle, b: &Bundle) -> bool {
    let pre_keys = |bundle: &Bundle| {
        let mut keys: Vec<(u32, [u8; 32])> = bundle
            .pre_keys()
            .iter()
            .map(|(id, key)| (id.get(), key.to_bytes()))
            .collect();
        keys.sort_unstable();
        keys
    };
    let parts = |bundle: &Bundle| {
        (
            bundle.identity_key().to_bytes(),
            bundle.signed_pre_key_id().get(),
            bundle.signed_pre_key().to_bytes(),
            bundle.signed_pre_key_signature().to_bytes(),
        )
    };
    let same = parts(a) == parts(b) && pre_keys(a) == pre_keys(b);
    if !same {
        tracing::debug!(
            identity = a.identity_key() == b.identity_key(),
            signed_pre_key = a.signed_pre_key_id() == b.signed_pre_key_id(),
            signature =
                a.signed_pre_key_signature().to_bytes() == b.signed_pre_key_signature().to_bytes(),
            pre_keys = pre_keys(a).len(),
            published_pre_keys = pre_keys(b).len(),
            "our bundle changed"
        );
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_compare_by_their_keys_not_the_order_of_their_pre_keys() {
        let identity = omemo_crypto::hazmat::identity_from_seed(&[3; 32]);
        let spk = omemo_crypto::SignedPreKey::generate(
            omemo_crypto::SignedPreKeyId::new(1).unwrap(),
            &identity,
            0,
            &mut OsRng,
        );
        let keys: Vec<omemo_crypto::PreKey> = (1..=3)
            .map(|id| {
                omemo_crypto::PreKey::generate(omemo_crypto::PreKeyId::new(id).unwrap(), &mut OsRng)
            })
            .collect();
        let bundle = Bundle::from_own_keys(&identity, &spk, &keys).unwrap();
        let reversed: Vec<&omemo_crypto::PreKey> = keys.iter().rev().collect();
        let same = Bundle::from_own_keys(&identity, &spk, reversed).unwrap();
        assert!(same_bundle(&bundle, &same));
        let fewer = Bundle::from_own_keys(&identity, &spk, &keys[..2]).unwrap();
        assert!(!same_bundle(&bundle, &fewer));
    }
}
