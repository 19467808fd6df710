//! The receive path: decrypting an incoming message, opening its envelope, and rebuilding
//! a session a message arrived without.

use super::*;

impl OmemoManager {
    /// Decrypts an incoming message. `sender` is the bare JID that sent it (for a carbon of a
    /// message we sent from another device, our own JID) and `recipient` the bare JID it was
    /// addressed to (for messages to us, our own JID).
    pub(crate) async fn receive(
        self: &Arc<Self>,
        message: &Message,
        encrypted: EncryptedMessage,
        sender: BareJid,
        recipient: BareJid,
        sent_carbon: bool,
    ) -> Result<Received, ReceiveError> {
        let own = Arc::clone(&self.own);
        let policy = self.policy;
        let sid = encrypted.sid;
        let sender_for_store = sender.clone();
        // A message one of our devices sent to our own account reaches us either directly or
        // as a carbon of a sent message, whichever the server delivers first (the other copy
        // is then a duplicate): both are addressed to us.
        let to_us = recipient == self.own.jid;
        let header = Header {
            from: message
                .from
                .clone()
                .unwrap_or_else(|| Jid::from(sender.clone())),
            id: message.id.as_ref().map(|id| id.0.clone()),
            type_: message.type_.clone(),
        };
        // What the program is handed waits in the inbox until it is done with it; carbons of
        // messages we sent never reach the program.
        let keep = (!sent_carbon).then(|| header.clone());
        let outcome = self
            .with_store(move |store| {
                Engine {
                    store,
                    own: &own,
                    policy,
                    now: now(),
                    rng: &mut OsRng,
                }
                .decrypt::<Omemo2>(
                    &encrypted,
                    &sender_for_store,
                    &recipient,
                    keep.as_ref(),
                )
            })
            .await
            .map_err(|_| ReceiveError::Internal)??;
        let receipt = outcome.inbox_id.map(|id| self.receipt(id));

        if outcome.used_pre_key {
            self.republish_bundle_soon();
        }
        if outcome.e2ee.key_exchange || outcome.heartbeat_due {
            self.confirm_soon(sender.clone(), sid);
        }
        Ok(match outcome.envelope {
            // Trust messages in carbons of messages our other devices sent to someone else are
            // not for us.
            Some(envelope) => {
                self.open(
                    envelope,
                    header,
                    outcome.e2ee,
                    !sent_carbon || to_us,
                    receipt,
                )
                .await
            }
            None => Received::Empty,
        })
    }

    /// Applies the trust messages of a decrypted envelope (they are never shown, XEP-0450)
    /// and makes the rest, if any, a message for the program.
    pub(super) async fn open(
        &self,
        envelope: sce::Envelope,
        header: Header,
        e2ee: E2eeMetadata,
        apply_trust: bool,
        receipt: Option<Receipt>,
    ) -> Received {
        let (trust_messages, content): (Vec<Element>, Vec<Element>) = envelope
            .sensitive_content()
            .cloned()
            .partition(TrustMessage::is_trust_message);
        if apply_trust {
            for element in &trust_messages {
                self.apply_trust_message(&e2ee.sender, &e2ee.identity_key, element)
                    .await;
            }
        }
        if content.is_empty() {
            return Received::Empty;
        }
        Received::Message(Box::new(DecryptedMessage {
            from: header.from,
            id: header.id,
            type_: header.type_,
            body: envelope.body(),
            content,
            e2ee,
            receipt,
        }))
    }

    /// XEP-0384 §rules: a message (not a key exchange) from a device we have no session with
    /// gets a fresh session from the device's bundle and an empty message (a key exchange)
    /// in answer, so that the sender's next messages decrypt. Nothing is lost silently: the
    /// undecryptable message itself is reported to the application.
    pub(crate) async fn rebuild_session(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        let Some(bundle) = self.fetch_bundle(jid, device).await? else {
            return Ok(());
        };
        let own = Arc::clone(&self.own);
        let policy = self.policy;
        let jid_owned = jid.clone();
        let built = self
            .with_store(move |store| {
                Engine {
                    store,
                    own: &own,
                    policy,
                    now: now(),
                    rng: &mut OsRng,
                }
                .build_session::<Omemo2>(&jid_owned, device, &bundle)
            })
            .await??;
        if built {
            tracing::info!(%jid, %device, "built a new session after a message without one");
            self.send_empty(jid, device).await?;
        }
        Ok(())
    }
}
