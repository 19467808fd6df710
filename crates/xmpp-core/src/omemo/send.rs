//! The send path: encrypting a message for every trusted device of its recipients, and
//! the empty messages (session confirmations, heartbeats) that follow key exchanges.

use super::*;

/// What the first store call of a send found: the message encrypted (every device had a
/// session), or the devices that need a bundle first.
enum Prepared {
    Encrypted(Box<(Message, SendReport, i64)>),
    Missing(Vec<(BareJid, DeviceId)>),
}

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
        self.encrypt_and_send(to, content, accept, Vec::new()).await
    }

    /// Like [`OmemoManager::send_sensitive`], as the answer to the received message whose
    /// receipt is `answering`: that message leaves the inbox in the transaction that commits
    /// the answer, so a crash can lose neither and the answer is not sent twice.
    pub async fn send_answer(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        answering: Option<&Receipt>,
    ) -> Result<SendReport, OmemoError> {
        let answers = answering.map(|receipt| receipt.0.id).into_iter().collect();
        self.encrypt_and_send(to, content, TrustLevel::is_accepted, answers)
            .await
    }

    pub(super) async fn encrypt_and_send(
        &self,
        to: &BareJid,
        content: Vec<Element>,
        accept: fn(TrustLevel) -> bool,
        answers: Vec<i64>,
    ) -> Result<SendReport, OmemoError> {
        if !self.refresh_device_list(to, false).await? {
            return Err(OmemoError::NoOmemo(to.clone()));
        }
        if to != &self.own.jid {
            self.refresh_device_list(&self.own.jid, false).await?;
        }

        // Bundles for devices that have no session yet are fetched outside the store lock. In
        // the common case there are none, and one call to the store finds that out and
        // encrypts.
        let mut recipients = vec![to.clone()];
        if to != &self.own.jid {
            recipients.push(self.own.jid.clone());
        }
        let envelope_bytes = sce::Envelope::new(
            content,
            self.own.jid.clone(),
            to.clone(),
            Some(xmpp_parsers::date::DateTime(
                chrono::Utc::now().fixed_offset(),
            )),
            &mut OsRng,
        )
        .to_bytes()?;
        let envelope_bytes = Arc::new(envelope_bytes);
        let stanza_id = self.iq_id("msg");
        let answers = Arc::new(answers);
        let encrypt = {
            let own = Arc::clone(&self.own);
            let policy = self.policy;
            let to = to.clone();
            let recipients = recipients.clone();
            let envelope_bytes = Arc::clone(&envelope_bytes);
            let stanza_id = stanza_id.clone();
            let answers = Arc::clone(&answers);
            move |store: &mut Store, bundles: Vec<FetchedBundle>| {
                Engine {
                    store,
                    own: &own,
                    policy,
                    now: now(),
                    rng: &mut OsRng,
                }
                .encrypt::<Omemo2>(Outgoing {
                    accept,
                    recipients: &recipients,
                    bundles,
                    plaintext: &envelope_bytes[..],
                    to: &to,
                    stanza_id: &stanza_id,
                    answers: &answers[..],
                })
            }
        };
        let own_jid = self.own.jid.clone();
        let own_device = self.own.device_id;
        let first_encrypt = encrypt.clone();
        let first = self
            .with_store(move |store| -> Result<Prepared, OmemoError> {
                let mut missing = Vec::new();
                for jid in &recipients {
                    let skip = (jid == &own_jid).then_some(own_device);
                    let (chosen, _) = chosen_devices(store, NS, jid, skip)?;
                    missing.extend(
                        chosen
                            .into_iter()
                            .filter(|(_, session)| session.is_none())
                            .map(|(device, _)| (jid.clone(), device)),
                    );
                }
                if missing.is_empty() {
                    return Ok(Prepared::Encrypted(Box::new(first_encrypt(
                        store,
                        Vec::new(),
                    )?)));
                }
                Ok(Prepared::Missing(missing))
            })
            .await??;
        let missing = match first {
            Prepared::Encrypted(encrypted) => {
                let (message, report, outbox_id) = *encrypted;
                self.send_queued(outbox_id, message).await?;
                return Ok(SendReport {
                    stanza_id,
                    ..report
                });
            }
            Prepared::Missing(missing) => missing,
        };
        // Not those backing off after a failure; a bounded number per JID; a few at a time: a
        // contact with many new devices costs a few round trips, not one per device.
        let mut per_jid: HashMap<BareJid, usize> = HashMap::new();
        let missing: Vec<(BareJid, DeviceId)> = missing
            .into_iter()
            .filter(|(jid, device)| !self.backing_off(jid, *device))
            .filter(|(jid, _)| {
                let count = per_jid.entry(jid.clone()).or_default();
                *count += 1;
                *count <= MAX_BUNDLE_FETCHES_PER_MESSAGE
            })
            .collect();
        let fetched: Vec<Result<Option<FetchedBundle>, OmemoError>> =
            futures::stream::iter(missing)
                .map(|(jid, device)| async move {
                    let bundle = self.fetch_bundle(&jid, device).await?;
                    Ok(bundle.map(|bundle| (jid, device, bundle)))
                })
                .buffer_unordered(CONCURRENT_BUNDLE_FETCHES)
                .collect()
                .await;
        let mut bundles = Vec::new();
        for result in fetched {
            bundles.extend(result?);
        }
        let (message, report, outbox_id) = self
            .with_store(move |store| encrypt(store, bundles))
            .await??;
        self.send_queued(outbox_id, message).await?;
        Ok(SendReport {
            stanza_id,
            ..report
        })
    }

    /// Sends an empty message to a device that needs one from us (a new session to confirm,
    /// a heartbeat) after [`CONFIRM_DELAY`], unless something was sent to it by then: an
    /// answer confirms the session just as well.
    /// One is pending per device at a time: a flood of messages that each ask for one (every
    /// message past the heartbeat threshold does) costs one.
    pub(super) fn confirm_soon(self: &Arc<Self>, jid: BareJid, device: DeviceId) {
        let key = (jid.clone(), device);
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
                .with_store(move |store| store.device(NS, jid_owned.as_str(), device))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .is_none_or(|d| d.received_without_reply > 0);
            if !unanswered {
                tracing::debug!(%jid, %device, "answered meanwhile; no empty message needed");
                return;
            }
            if let Err(e) = manager.send_empty(&jid, device).await {
                tracing::warn!(error = %e, "sending an empty OMEMO message failed");
            }
        });
    }

    /// Sends an empty OMEMO message to one device (session confirmation, heartbeat).
    pub(super) async fn send_empty(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        let policy = self.policy;
        let own = Arc::clone(&self.own);
        let jid_owned = jid.clone();
        let stanza_id = self.iq_id("empty");
        let queued = self
            .with_store(move |store| {
                Engine {
                    store,
                    own: &own,
                    policy,
                    now: now(),
                    rng: &mut OsRng,
                }
                .empty_message::<Omemo2>(&jid_owned, device, &stanza_id)
            })
            .await??;
        if let Some((outbox_id, message)) = queued {
            self.send_queued(outbox_id, message).await?;
            tracing::debug!(%jid, %device, "sent empty OMEMO message");
        }
        Ok(())
    }
}
