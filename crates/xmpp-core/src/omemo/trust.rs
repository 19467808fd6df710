//! Trust: the devices of a contact with their trust levels, manual decisions and
//! automatic trust management (XEP-0450).

use super::*;

impl OmemoManager {
    /// Every known device of `jid` after a fresh fetch of its device lists (OMEMO 2 and
    /// legacy), once per device id, with label, identity key (from its bundle), trust level
    /// and the versions it is listed in.
    pub async fn devices(&self, jid: &BareJid) -> Result<Vec<DeviceInfo>, OmemoError> {
        self.learn_listed_identities::<Omemo2>(jid).await?;
        self.learn_listed_identities::<omemo_crypto::Legacy>(jid)
            .await?;
        // Now that the keys are known, a second look verifies the labels.
        self.refresh_device_list::<Omemo2>(jid, true).await?;
        let jid_owned = jid.clone();
        let own = Arc::clone(&self.own);
        let infos = self
            .with_store(move |store| device_infos(store, &own, &jid_owned))
            .await??;
        Ok(infos)
    }

    /// Fetches `jid`'s device list of version `V` and the bundles of its listed devices whose
    /// identity key is not known yet, recording their keys.
    async fn learn_listed_identities<V: Pep>(&self, jid: &BareJid) -> Result<(), OmemoError> {
        self.refresh_device_list::<V>(jid, true).await?;
        let jid_owned = jid.clone();
        let unknown: Vec<DeviceId> = self
            .with_store(move |store| {
                store.device_versions(jid_owned.as_str()).map(|devices| {
                    devices
                        .into_iter()
                        .filter(|d| d.listed_in.contains(&V::NS) && d.identity_key.is_none())
                        .map(|d| d.device_id)
                        .collect()
                })
            })
            .await??;
        for device in unknown {
            if jid == &self.own.jid && device == self.own.device_id {
                continue;
            }
            if let Some(bundle) = self.fetch_bundle::<V>(jid, device).await? {
                let jid_owned = jid.clone();
                let policy = self.policy;
                let result = self
                    .with_store(move |store| {
                        store.record_identity_key(
                            V::NS,
                            jid_owned.as_str(),
                            device,
                            &V::bundle_identity(&bundle),
                            policy,
                            now(),
                        )
                    })
                    .await?;
                if let Err(e) = result {
                    tracing::warn!(%jid, %device, error = %e, "cannot record the identity key");
                }
            }
        }
        Ok(())
    }

    /// Records a manual trust decision for the key of `jid` whose fingerprint (either form:
    /// the Curve25519 form XEP-0384 shows, or the Ed25519 key id QXmpp uses; spaces and case
    /// ignored) is `fingerprint`. Returns the resulting trust events (authenticating a key
    /// also demotes that contact's automatically trusted keys, TOAKAFA).
    pub async fn set_trust(
        &self,
        jid: &BareJid,
        fingerprint: &str,
        level: TrustLevel,
    ) -> Result<Vec<atm_trust::TrustEvent>, OmemoError> {
        let jid_owned = jid.clone();
        let fingerprint = fingerprint.to_owned();
        self.with_store(move |store| {
            set_trust_by_fingerprint(store, &jid_owned, &fingerprint, level)
                .map(|(_, events)| events)
        })
        .await?
    }

    /// Applies a received ATM trust message; problems are logged, never fatal.
    pub(super) async fn apply_trust_message(
        &self,
        sender: &BareJid,
        sender_key: &IdentityPublicKey,
        element: &Element,
    ) {
        let message = match TrustMessage::try_from(element) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%sender, error = %e, "ignoring a malformed trust message");
                return;
            }
        };
        let keys = |list: &[Vec<u8>]| -> Vec<IdentityPublicKey> {
            list.iter()
                .filter_map(|k| IdentityPublicKey::from_bytes(k).ok())
                .collect()
        };
        let decisions: Vec<KeyOwnerDecisions> = message
            .key_owners
            .iter()
            .map(|owner| KeyOwnerDecisions {
                jid: owner.jid.to_string(),
                trust: keys(&owner.trust),
                distrust: keys(&owner.distrust),
            })
            .collect();
        let own = self.own.jid.clone();
        let sender_owned = sender.clone();
        let sender_key = *sender_key;
        match self
            .with_store(move |store| {
                store.apply_trust_message(
                    own.as_str(),
                    sender_owned.as_str(),
                    &sender_key,
                    &decisions,
                    now(),
                )
            })
            .await
        {
            Ok(Ok(outcome)) => {
                for event in &outcome.events {
                    tracing::info!(jid = %event.jid, key = %event.identity_key.fingerprint(), old = ?event.old_level, new = ?event.new_level, "trust changed by an ATM trust message");
                }
                if outcome.stored > 0 || outcome.refused > 0 {
                    tracing::info!(%sender, stored = outcome.stored, refused = outcome.refused, "ATM decisions kept for later or refused");
                }
                if outcome.dropped > 0 {
                    tracing::warn!(%sender, dropped = outcome.dropped, limit = atm_trust::MAX_PENDING_PER_SENDER, "too many ATM decisions waiting for this sender: the oldest were dropped");
                }
            }
            Ok(Err(e)) => tracing::warn!(%sender, error = %e, "applying a trust message failed"),
            Err(e) => tracing::warn!(%sender, error = %e, "applying a trust message failed"),
        }
    }

    /// Records a manual decision about a key and announces it with ATM trust messages
    /// (XEP-0450 §use-cases): to our own devices whose keys are Authenticated, and, when a
    /// contact's key is authenticated, our own authenticated and distrusted keys to that
    /// contact's Authenticated devices. Returns the trust events and how many trust messages
    /// went out.
    pub async fn decide_trust(
        &self,
        jid: &BareJid,
        fingerprint: &str,
        level: TrustLevel,
    ) -> Result<(Vec<atm_trust::TrustEvent>, usize), OmemoError> {
        let jid_owned = jid.clone();
        let fingerprint = fingerprint.to_owned();
        let (key, events) = self
            .with_store(move |store| {
                set_trust_by_fingerprint(store, &jid_owned, &fingerprint, level)
            })
            .await??;
        let authenticated = level == TrustLevel::Authenticated;
        let owner = KeyOwner {
            jid: jid.clone(),
            trust: if authenticated {
                vec![key.to_bytes().to_vec()]
            } else {
                Vec::new()
            },
            distrust: if authenticated {
                Vec::new()
            } else {
                vec![key.to_bytes().to_vec()]
            },
        };
        let mut sent = 0;
        let own_jid = self.own.jid.clone();
        if self
            .send_trust_message(
                &own_jid,
                TrustMessage {
                    key_owners: vec![owner],
                },
            )
            .await?
        {
            sent += 1;
        }
        if authenticated && jid != &own_jid {
            let own_for_store = own_jid.clone();
            let own_keys = self
                .with_store(move |store| store.identity_keys(own_for_store.as_str()))
                .await??;
            let pick = |wanted: TrustLevel| -> Vec<Vec<u8>> {
                own_keys
                    .iter()
                    .filter(|(_, level)| *level == wanted)
                    .map(|(k, _)| k.to_bytes().to_vec())
                    .collect()
            };
            let owner = KeyOwner {
                jid: own_jid.clone(),
                trust: pick(TrustLevel::Authenticated),
                distrust: pick(TrustLevel::ManuallyDistrusted),
            };
            if !(owner.trust.is_empty() && owner.distrust.is_empty())
                && self
                    .send_trust_message(
                        jid,
                        TrustMessage {
                            key_owners: vec![owner],
                        },
                    )
                    .await?
            {
                sent += 1;
            }
        }
        Ok((events, sent))
    }

    /// Sends a trust message to `to`'s Authenticated devices; false if there are none.
    pub(super) async fn send_trust_message(
        &self,
        to: &BareJid,
        message: TrustMessage,
    ) -> Result<bool, OmemoError> {
        let is_authenticated: fn(TrustLevel) -> bool = |level| level == TrustLevel::Authenticated;
        match self
            .send_encrypted(to, vec![message.to_element()], is_authenticated)
            .await
        {
            Ok(report) => {
                tracing::info!(%to, devices = report.encrypted_for.len(), "sent an ATM trust message");
                Ok(true)
            }
            Err(OmemoError::NoTrustedDevice(_) | OmemoError::NoOmemo(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Records a manual trust decision for the key of `jid` whose fingerprint (either form:
/// the Curve25519 form XEP-0384 shows, or the Ed25519 key id QXmpp uses; spaces, colons and
/// case ignored) is `fingerprint`, directly in the store (no connection needed).
pub fn set_trust_by_fingerprint(
    store: &mut Store,
    jid: &BareJid,
    fingerprint: &str,
    level: TrustLevel,
) -> Result<(IdentityPublicKey, Vec<atm_trust::TrustEvent>), OmemoError> {
    let wanted: String = fingerprint
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .flat_map(char::to_lowercase)
        .collect();
    let mut keys: Vec<IdentityPublicKey> = store
        .identity_keys(jid.as_str())?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for namespace in Namespace::ALL {
        keys.extend(
            store
                .devices(namespace, jid.as_str())?
                .into_iter()
                .filter_map(|d| d.identity_key),
        );
    }
    let key = keys
        .into_iter()
        .find(|k| k.fingerprint().replace(' ', "") == wanted || k.key_id_hex() == wanted)
        .ok_or_else(|| OmemoError::UnknownKey(jid.clone()))?;
    let events = store.set_trust_level(jid.as_str(), &key, level, now())?;
    Ok((key, events))
}

/// The devices of `jid` the store knows, once per device id (one device serves both
/// versions), with the versions each is listed in and its OMEMO 2 label.
pub fn device_infos(
    store: &Store,
    own: &OwnIdentity,
    jid: &BareJid,
) -> Result<Vec<DeviceInfo>, StoreError> {
    let labels: HashMap<DeviceId, (Option<String>, bool)> = store
        .devices(Namespace::Omemo2, jid.as_str())?
        .into_iter()
        .map(|d| (d.device_id, (d.label, d.label_verified)))
        .collect();
    let mut infos = Vec::new();
    for d in store.device_versions(jid.as_str())? {
        let own_device = jid == &own.jid && d.device_id == own.device_id;
        let identity_key = if own_device {
            Some(own.identity.public_key())
        } else {
            d.identity_key
        };
        let trust = match (&identity_key, own_device) {
            (Some(key), false) => store.trust_level(jid.as_str(), key)?,
            _ => None,
        };
        let (label, label_verified) = labels.get(&d.device_id).cloned().unwrap_or_default();
        infos.push(DeviceInfo {
            device: d.device_id,
            label,
            label_verified,
            active: !d.listed_in.is_empty(),
            identity_key,
            trust,
            own: own_device,
            versions: d.listed_in.iter().map(|ns| ns.version()).collect(),
        });
    }
    Ok(infos)
}
