//! The send path: encrypting a message for every trusted device of its recipients, and
//! the empty messages (session confirmations, heartbeats) that follow key exchanges.

use super::*;

impl OmemoManager {
    /// Encrypts `content` (stanza children such as `<body>`) in an SCE envelope for every
    /// accepted device of `to` and our own other devices, commits the new session states,
    /// then sends one `<message type='chat'>`.
    pub async fn send_sensitive(
        &self,
        to: &BareJid,
        content: Vec<Element>,
    ) -> Result<SendReport, OmemoError> {
        self.send_encrypted(to, content, TrustLevel::is_accepted)
            .await
    }

    /// Like [`OmemoManager::send_sensitive`], encrypting only for devices whose trust level
    /// passes `accept` (ATM trust messages go to Authenticated devices only).
    pub async fn send_encrypted(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        accept: fn(TrustLevel) -> bool,
    ) -> Result<SendReport, OmemoError> {
        self.encrypt_and_send(to, content, accept, Vec::new(), &Namespace::ALL, None)
            .await
    }

    /// Like [`OmemoManager::send_sensitive`], as the answer to the received message whose
    /// receipt is `answering`: that message leaves the inbox in the transaction that commits
    /// the answer, so a crash can lose neither and the answer is not sent twice. The answer
    /// goes out in the OMEMO version the message came in, to the devices (of `to` and ours)
    /// listed in that version (and, in legacy, to the device that asked even if unlisted: see
    /// `Pep::ANSWER_UNLISTED`): a conversation stays in one version, as python-omemo answers.
    pub async fn send_answer(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        answering: Option<&Receipt>,
    ) -> Result<SendReport, OmemoError> {
        let answers = answering.map(|receipt| receipt.0.id).into_iter().collect();
        let (priority, asked_by) = match answering {
            Some(receipt) => {
                let ns = receipt.0.namespace;
                let unlisted_too = in_version!(ns, V => V::ANSWER_UNLISTED);
                (vec![ns], unlisted_too.then_some((receipt.0.device, ns)))
            }
            None => (Namespace::ALL.to_vec(), None),
        };
        self.encrypt_and_send(
            to,
            content,
            TrustLevel::is_accepted,
            answers,
            &priority,
            asked_by,
        )
        .await
    }

    /// Encrypts for every device of `to` and our own other devices, each exactly once, in
    /// the first version of `priority` whose device list lists it (LEGACY-NOTES §10): one
    /// stanza per version used. The stanzas of the versions that reach `to` go first; one
    /// that reaches only our own devices follows them. `asked_by` is the device of `to`
    /// (and its version) whose message this answers.
    pub(super) async fn encrypt_and_send(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        accept: fn(TrustLevel) -> bool,
        answers: Vec<i64>,
        priority: &[Namespace],
        asked_by: Option<(DeviceId, Namespace)>,
    ) -> Result<SendReport, OmemoError> {
        let mut listed = false;
        for ns in priority {
            listed |= in_version!(*ns, V => self.refresh_device_list::<V>(to, false).await?);
        }
        // An answer may still reach the device that asked without any list.
        if !listed && asked_by.is_none() {
            return Err(OmemoError::NoOmemo(to.clone()));
        }
        if to != &self.own.jid {
            for ns in priority {
                in_version!(*ns, V => self.refresh_device_list::<V>(&self.own.jid, false).await?);
            }
        }

        let own = Arc::clone(&self.own);
        let to_owned = to.clone();
        let priority_owned = priority.to_vec();
        let (chosen, over_limit) = self
            .with_store(move |store| {
                message_devices(store, &own, &to_owned, &priority_owned, asked_by)
            })
            .await??;
        // One group per version, in priority order; those that reach `to` first.
        let mut groups: Vec<(Namespace, Vec<ChosenDevice>)> = priority
            .iter()
            .map(|ns| {
                let devices: Vec<_> = chosen
                    .iter()
                    .filter(|(_, c)| c.namespace == *ns)
                    .map(|(jid, c)| (jid.clone(), c.device, c.has_session))
                    .collect();
                (*ns, devices)
            })
            .filter(|(_, devices)| !devices.is_empty())
            .collect();
        groups.sort_by_key(|(_, devices)| !devices.iter().any(|(jid, _, _)| jid == to));

        let envelope_bytes = sealed_envelope(content.clone(), &self.own.jid, to)?;
        let mut report = SendReport {
            over_limit,
            ..SendReport::default()
        };
        let mut answers = answers;
        let mut stanza_id = None;
        for (ns, devices) in groups {
            let reaches_to = devices.iter().any(|(jid, _, _)| jid == to);
            if !reaches_to && stanza_id.is_none() {
                // Nothing reached `to`: our own devices get nothing either.
                break;
            }
            let part = SendPart {
                to,
                content: &content,
                envelope: &envelope_bytes,
                devices,
                accept,
                answers: &answers,
                to_required: reaches_to,
            };
            let sent = in_version!(ns, V => self.send_in::<V>(part, &mut report).await?);
            if let Some(id) = sent {
                // The answered messages left the inbox with the first commit.
                answers.clear();
                stanza_id.get_or_insert(id);
            }
        }
        let Some(stanza_id) = stanza_id else {
            return Err(OmemoError::NoTrustedDevice(to.clone()));
        };
        Ok(SendReport {
            stanza_id,
            ..report
        })
    }

    /// Encrypts and sends one version's stanza of a message to the devices chosen for that
    /// version (fetching the bundles of those without a session first). Adds to `report`;
    /// returns the stanza id, or `None` if no device could be encrypted for.
    async fn send_in<V: Pep>(
        &self,
        part: SendPart<'_>,
        report: &mut SendReport,
    ) -> Result<Option<String>, OmemoError> {
        let SendPart {
            to,
            content,
            envelope,
            devices,
            accept,
            answers,
            to_required,
        } = part;
        let Some(plaintext) = V::plaintext(content, envelope) else {
            for (jid, device, _) in devices {
                report.skipped.push((
                    jid,
                    device,
                    "this OMEMO version carries only a <body>".to_owned(),
                ));
            }
            return Ok(None);
        };
        // Bundles for devices that have no session yet (fetched outside the store lock): not
        // those backing off after a failure; a bounded number per JID; a few at a time: a
        // contact with many new devices costs a few round trips, not one per device.
        let mut per_jid: HashMap<BareJid, usize> = HashMap::new();
        let missing: Vec<(BareJid, DeviceId)> = devices
            .iter()
            .filter(|(_, _, has_session)| !has_session)
            .filter(|(jid, device, _)| !self.backing_off(V::NS, jid, *device))
            .filter(|(jid, _, _)| {
                let count = per_jid.entry(jid.clone()).or_default();
                *count += 1;
                *count <= MAX_BUNDLE_FETCHES_PER_MESSAGE
            })
            .map(|(jid, device, _)| (jid.clone(), *device))
            .collect();
        let fetched: Vec<Result<Option<FetchedBundle<V>>, OmemoError>> =
            futures::stream::iter(missing)
                .map(|(jid, device)| async move {
                    let bundle = self.fetch_bundle::<V>(&jid, device).await?;
                    Ok(bundle.map(|bundle| (jid, device, bundle)))
                })
                .buffer_unordered(CONCURRENT_BUNDLE_FETCHES)
                .collect()
                .await;
        let mut bundles = Vec::new();
        for result in fetched {
            bundles.extend(result?);
        }
        let to_owned = to.clone();
        let devices: Vec<(BareJid, DeviceId)> = devices
            .into_iter()
            .map(|(jid, device, _)| (jid, device))
            .collect();
        let answers = answers.to_vec();
        let stanza_id = self.iq_id("msg");
        let id_for_store = stanza_id.clone();
        let encrypted = self
            .with_engine(move |engine| {
                engine.encrypt::<V>(Outgoing {
                    accept,
                    devices: &devices,
                    to_required,
                    bundles,
                    plaintext: &plaintext,
                    to: &to_owned,
                    stanza_id: &id_for_store,
                    answers: &answers,
                    held: None,
                })
            })
            .await?;
        match encrypted {
            Ok((message, part, outbox_id)) => {
                self.send_queued(outbox_id, message).await?;
                report.encrypted_for.extend(part.encrypted_for);
                report.skipped.extend(part.skipped);
                Ok(Some(stanza_id))
            }
            Err(OmemoError::NoTrustedDevice(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends an empty message to a device that needs one from us (a new session to confirm,
    /// a heartbeat) after [`CONFIRM_DELAY`], unless something was sent to it by then: an
    /// answer confirms the session just as well.
    /// One is pending per device at a time: a flood of messages that each ask for one (every
    /// message past the heartbeat threshold does) costs one.
    pub(super) fn confirm_soon<V: Pep>(self: &Arc<Self>, jid: BareJid, device: DeviceId) {
        let key = (V::NS, jid.clone(), device);
        let newly_pending = self
            .confirming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone());
        if !newly_pending {
            return;
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(CONFIRM_DELAY).await;
            manager
                .confirming
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
            let jid_owned = jid.clone();
            let unanswered = manager
                .with_store(move |store| store.device(V::NS, jid_owned.as_str(), device))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .is_none_or(|d| d.received_without_reply > 0);
            if !unanswered {
                tracing::debug!(%jid, %device, "answered meanwhile; no empty message needed");
                return;
            }
            if let Err(e) = manager.send_empty::<V>(&jid, device).await {
                tracing::warn!(error = %e, "sending an empty OMEMO message failed");
            }
        });
    }

    /// Sends an empty OMEMO message of version `V` to one device (session confirmation,
    /// heartbeat; legacy's key-transport message).
    pub(super) async fn send_empty<V: Pep>(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        let jid_owned = jid.clone();
        let stanza_id = self.iq_id("empty");
        let queued = self
            .with_engine(move |engine| engine.empty_message::<V>(&jid_owned, device, &stanza_id))
            .await??;
        if let Some((outbox_id, message)) = queued {
            self.send_queued(outbox_id, message).await?;
            tracing::debug!(%jid, %device, node = V::LIST_NODE, "sent empty OMEMO message");
        }
        Ok(())
    }
}

/// A device of a JID a message goes to, with whether a session with it exists.
type ChosenDevice = (BareJid, DeviceId, bool);

/// One version's share of a message, as [`OmemoManager::send_in`] takes it.
struct SendPart<'a> {
    to: &'a BareJid,
    content: &'a [Element],
    envelope: &'a [u8],
    /// The devices that get it in this version.
    devices: Vec<ChosenDevice>,
    accept: fn(TrustLevel) -> bool,
    answers: &'a [i64],
    to_required: bool,
}
