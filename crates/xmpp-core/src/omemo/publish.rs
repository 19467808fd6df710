//! Publishing our own device: the device-list entry and the bundle (XEP-0384 §devices,
//! §bundles), with republication after key exchanges used our pre-keys.

use omemo_crypto::Legacy;

use super::*;

impl OmemoManager {
    /// Publishes our device in our device lists of both versions (keeping every other
    /// device) and our bundles: the same device id and identity key in OMEMO 2 and legacy.
    /// A server that refuses the legacy nodes costs legacy only (logged), not OMEMO 2.
    pub async fn set_up(&self) -> Result<(), OmemoError> {
        self.publish_device_list_in::<Omemo2>().await?;
        self.publish_bundle_if_changed::<Omemo2>().await?;
        let legacy = async {
            self.publish_device_list_in::<Legacy>().await?;
            self.publish_bundle_if_changed::<Legacy>().await
        };
        if let Err(e) = legacy.await {
            tracing::warn!(error = %e, "publishing our legacy OMEMO device failed; legacy clients cannot reach us");
        }
        Ok(())
    }

    /// Fetches our device lists (OMEMO 2 and legacy) and republishes each one our device is
    /// missing from.
    pub async fn publish_device_list(&self) -> Result<(), OmemoError> {
        self.publish_device_list_in::<Omemo2>().await?;
        self.publish_device_list_in::<Legacy>().await
    }

    /// [`OmemoManager::publish_device_list`] in version `V`.
    async fn publish_device_list_in<V: Pep>(&self) -> Result<(), OmemoError> {
        let answer = self
            .request(V::fetch_device_list(
                &self.own.jid,
                &self.iq_id("own-devices"),
            ))
            .await?;
        let current = match V::parse_device_list(&answer) {
            Fetched::Found(list) => Some(list),
            Fetched::NotFound => None,
            Fetched::Malformed(e) => {
                tracing::warn!(error = %e, node = V::LIST_NODE, "our own device list is malformed; replacing it");
                None
            }
            other => {
                return Err(OmemoError::Publish {
                    what: V::LIST_NODE,
                    reason: format!("fetching it failed: {other:?}"),
                })
            }
        };
        if let Some(list) = &current {
            self.record_device_list::<V>(self.own.jid.clone(), list)
                .await?;
        }
        self.publish_own_entry::<V>(current.as_ref()).await
    }

    pub(super) async fn publish_own_entry<V: Pep>(
        &self,
        current: Option<&V::DeviceList>,
    ) -> Result<(), OmemoError> {
        // Device ids given up by an identity reset leave the list (also when a stale copy of
        // the list brings them back), and their bundles go.
        let retired = self
            .with_store(|store| store.retired_own_devices())
            .await??;
        let listed_retired: Vec<DeviceId> = retired
            .iter()
            .copied()
            .filter(|id| current.is_some_and(|list| V::lists(list, *id)))
            .collect();
        if let Some(list) = V::own_list(current, &self.own, &retired)? {
            tracing::info!(device = %self.own.device_id, devices = V::list_len(&list), node = V::LIST_NODE, "publishing our device list");
            self.publish(V::list_publication(&list), V::LIST_NODE)
                .await?;
            self.record_device_list::<V>(self.own.jid.clone(), &list)
                .await?;
        }
        for device in listed_retired {
            let answer = self
                .request(V::retract_bundle(device, &self.iq_id("retract")))
                .await?;
            tracing::info!(%device, node = V::BUNDLE_NODE, ok = matches!(answer, Iq::Result { .. }), "retracted the bundle of our old device");
        }
        Ok(())
    }

    /// Publishes our bundles (signed pre-key and unused pre-keys) of both versions.
    pub async fn publish_bundle(&self) -> Result<(), OmemoError> {
        self.publish_bundle_in::<Omemo2>().await?;
        self.publish_bundle_in::<Legacy>().await
    }

    /// Publishes our bundle of version `V`.
    pub(super) async fn publish_bundle_in<V: Pep>(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle::<V>().await?;
        self.publish_own_bundle::<V>(bundle, ids).await
    }

    /// Publishes our bundle of version `V` unless the server holds exactly this one already
    /// (a restart with the same database changes nothing, and republishing would only cost a
    /// round trip and a notification to every contact).
    pub(super) async fn publish_bundle_if_changed<V: Pep>(&self) -> Result<(), OmemoError> {
        let _guard = self.publishing.lock().await;
        let (bundle, ids) = self.own_bundle::<V>().await?;
        let device = self.own.device_id;
        let answer = self
            .request(V::fetch_bundle(
                &self.own.jid,
                device,
                &self.iq_id("own-bundle"),
            ))
            .await?;
        if let Fetched::Found(published) = V::parse_bundle(&answer, device) {
            if same_bundle(V::bundle_core(&published), V::bundle_core(&bundle)) {
                tracing::info!(%device, node = V::BUNDLE_NODE, "our bundle on the server is current");
                self.with_store(move |store| store.mark_bundle_published_for(V::NS, &ids))
                    .await??;
                return Ok(());
            }
        }
        self.publish_own_bundle::<V>(bundle, ids).await
    }

    /// Our bundle of version `V` as the store has it now (topping up the pre-keys first, and
    /// creating the version's signed pre-key if it has none), with the ids of its pre-keys.
    pub(super) async fn own_bundle<V: Pep>(
        &self,
    ) -> Result<(V::Bundle, Vec<omemo_crypto::PreKeyId>), OmemoError> {
        let own = Arc::clone(&self.own);
        self.with_store(move |store| -> Result<_, OmemoError> {
            let t = now();
            store.ensure_pre_keys_for(V::NS, PRE_KEY_TARGET, &mut OsRng, t)?;
            let spk = store.ensure_signed_pre_key(V::NS, &mut OsRng, t)?;
            let pre_keys = store.unused_pre_keys_for(V::NS)?;
            let ids: Vec<_> = pre_keys.iter().map(|pk| pk.id()).collect();
            let bundle =
                V::own_bundle(&own.identity, &spk, &pre_keys).map_err(|e| OmemoError::Publish {
                    what: V::BUNDLE_NODE,
                    reason: e.to_string(),
                })?;
            Ok((bundle, ids))
        })
        .await?
    }

    pub(super) async fn publish_own_bundle<V: Pep>(
        &self,
        bundle: V::Bundle,
        ids: Vec<omemo_crypto::PreKeyId>,
    ) -> Result<(), OmemoError> {
        tracing::info!(device = %self.own.device_id, pre_keys = ids.len(), node = V::BUNDLE_NODE, "publishing our bundle");
        self.publish(
            V::bundle_publication(self.own.device_id, &bundle),
            V::BUNDLE_NODE,
        )
        .await?;
        self.with_store(move |store| store.mark_bundle_published_for(V::NS, &ids))
            .await??;
        Ok(())
    }

    /// Republishes our bundle of version `V` once a burst of key exchanges in that version
    /// is over: when none came for [`REPUBLISH_QUIET`], or [`REPUBLISH_MAX_DELAY`] after the
    /// first one. Until then the bundle on the server still offers the used pre-keys, which
    /// we keep for a day anyway.
    pub(super) fn republish_bundle_soon<V: Pep>(self: &Arc<Self>) {
        let now = Instant::now();
        {
            let mut due = self
                .republish
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, last)) = due.get_mut(&V::NS) {
                *last = now;
                return;
            }
            due.insert(V::NS, (now, now));
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wake = {
                    let mut due = manager
                        .republish
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let Some(&(first, last)) = due.get(&V::NS) else {
                        return;
                    };
                    let wake = (last + REPUBLISH_QUIET).min(first + REPUBLISH_MAX_DELAY);
                    if Instant::now() >= wake {
                        due.remove(&V::NS);
                        break;
                    }
                    wake
                };
                tokio::time::sleep_until(wake.into()).await;
            }
            if let Err(e) = manager.publish_bundle_in::<V>().await {
                tracing::warn!(error = %e, node = V::BUNDLE_NODE, "republishing the bundle after key exchanges failed");
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
