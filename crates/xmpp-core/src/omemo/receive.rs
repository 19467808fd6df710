//! The receive path: decrypting an incoming message (OMEMO 2 or legacy, whichever element
//! carries a key for our device), opening its envelope, and rebuilding a session a message
//! arrived without.
//!
//! Legacy OMEMO has no SCE: only the body text is encrypted and nothing inside the
//! encryption names the sender or the addressee; its plaintext fallback `<body>` is never
//! read. What binds a legacy message to its sender instead: the sender is the bare JID of the
//! stanza's `from` as the server stamps it (for a carbon, our own account: the connection
//! takes carbons only from our own bare JID); the session is looked up by that JID and the
//! `sid` device, so a message decrypts only on that JID's device's session; the device's
//! identity key must match the one its bundle published (fetched first for an unknown
//! sender, since a legacy key exchange lacks the Ed25519 sign bit); and only one-to-one
//! messages are decrypted (group chats and headlines are refused by the client).

use super::*;

/// An incoming `<encrypted>` element, in the version it came in.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// `<encrypted xmlns='urn:xmpp:omemo:2'>`.
    Omemo2(EncryptedMessage),
    /// `<encrypted xmlns='eu.siacs.conversations.axolotl'>`.
    Legacy(omemo_pep::legacy::EncryptedMessage),
}

impl Incoming {
    /// The sending device.
    pub(crate) fn sender_device(&self) -> DeviceId {
        match self {
            Self::Omemo2(e) => e.sid,
            Self::Legacy(e) => e.sid,
        }
    }

    /// The namespace it came in.
    pub(crate) fn namespace(&self) -> Namespace {
        match self {
            Self::Omemo2(_) => Namespace::Omemo2,
            Self::Legacy(_) => Namespace::Legacy,
        }
    }
}

/// Finds the OMEMO element of a message to decrypt: the one (OMEMO 2 first) that carries a
/// key for our device, else the first present (LEGACY-NOTES §10: a dual-stack sender may put
/// both in one stanza). The plaintext fallback `<body>` of legacy messages is never looked
/// at. `None` if the message has no OMEMO element.
pub(crate) fn find_encrypted(
    message: &Message,
    own: &OwnIdentity,
) -> Option<Result<Incoming, omemo_pep::Error>> {
    let omemo2 = hints::find_encrypted(message);
    let legacy = hints::find_legacy_encrypted(message);
    let omemo2_for_us =
        matches!(&omemo2, Some(Ok(e)) if e.key_for(&own.jid, own.device_id).is_some());
    let legacy_for_us =
        matches!(&legacy, Some(Ok(e)) if e.keys_for(own.device_id).next().is_some());
    match (omemo2, legacy) {
        (Some(Ok(e)), _) if omemo2_for_us => Some(Ok(Incoming::Omemo2(e))),
        (_, Some(Ok(e))) if legacy_for_us => Some(Ok(Incoming::Legacy(e))),
        (Some(found), _) => Some(found.map(Incoming::Omemo2)),
        (None, found) => found.map(|found| found.map(Incoming::Legacy)),
    }
}

impl OmemoManager {
    /// Decrypts an incoming message. `sender` is the bare JID that sent it (for a carbon of a
    /// message we sent from another device, our own JID) and `recipient` the bare JID it was
    /// addressed to (for messages to us, our own JID).
    pub(crate) async fn receive(
        self: &Arc<Self>,
        message: &Message,
        encrypted: Incoming,
        sender: BareJid,
        recipient: BareJid,
        sent_carbon: bool,
    ) -> Result<Received, ReceiveError> {
        match encrypted {
            Incoming::Omemo2(e) => {
                self.receive_in::<Omemo2>(message, e, sender, recipient, sent_carbon)
                    .await
            }
            Incoming::Legacy(e) => {
                self.receive_in::<omemo_crypto::Legacy>(message, e, sender, recipient, sent_carbon)
                    .await
            }
        }
    }

    /// [`OmemoManager::receive`] in version `V`.
    async fn receive_in<V: Pep>(
        self: &Arc<Self>,
        message: &Message,
        encrypted: V::Encrypted,
        sender: BareJid,
        recipient: BareJid,
        sent_carbon: bool,
    ) -> Result<Received, ReceiveError> {
        let sid = V::sender_device(&encrypted);
        let encrypted = Arc::new(encrypted);
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
        let responder = match &self.responder {
            Some(responder)
                if keep.is_some() && to_us && self.may_answer_at_once::<V>(&sender).await =>
            {
                Some((Arc::clone(responder), self.iq_id("msg")))
            }
            _ => None,
        };
        let decrypt = || {
            let encrypted = Arc::clone(&encrypted);
            let sender = sender.clone();
            let recipient = recipient.clone();
            let keep = keep.clone();
            let responder = responder.clone();
            async move {
                self.with_engine(move |engine| {
                    let arrived = Arrived {
                        encrypted: &*encrypted,
                        sender: &sender,
                        recipient: &recipient,
                        keep: keep.as_ref(),
                    };
                    decrypt_and_answer::<V>(engine, arrived, responder.as_ref())
                })
                .await
                .map_err(|_| ReceiveError::Internal)?
            }
        };
        let mut outcome = decrypt().await;
        if matches!(outcome, Err(ReceiveError::UnknownIdentity)) {
            // A legacy key exchange names the sender's identity without the Ed25519 sign bit;
            // its bundle has it. Nothing was stored, so the message is tried again.
            if self.learn_identity::<V>(&sender, sid).await {
                outcome = decrypt().await;
            }
        }
        let (outcome, answer) = outcome?;
        let receipt = match &answer {
            // The answer's commit took the message out of the inbox.
            Some(_) => None,
            None => outcome
                .inbox_id
                .map(|id| self.receipt(id, V::NS, sender.clone(), sid)),
        };
        let answered = match answer {
            Some((
                Sealed {
                    message, report, ..
                },
                outbox_id,
            )) => {
                self.send_answered(outbox_id, message).await;
                Some(report)
            }
            None => None,
        };

        if outcome.used_pre_key {
            self.republish_bundle_soon::<V>();
        }
        if outcome.e2ee.key_exchange || outcome.heartbeat_due {
            self.confirm_soon::<V>(sender.clone(), sid);
        }
        Ok(match outcome.envelope {
            // Trust messages in carbons of messages our other devices sent to someone else are
            // not for us.
            Some(envelope) => {
                let mut received = self
                    .open(
                        envelope,
                        header,
                        outcome.e2ee,
                        !sent_carbon || to_us,
                        receipt,
                    )
                    .await;
                if let Received::Message(message) = &mut received {
                    message.answered = answered;
                }
                received
            }
            None => Received::Empty,
        })
    }

    /// Sends an answer given at once, committed to the outbox as `outbox_id`, after those
    /// given before it. A task of its own sends them, so that decryption does not wait for
    /// the connection (which may be down, or stuck behind a server that closes the stream for
    /// one of them) unless [`ANSWERED_QUEUE`] answers are waiting.
    async fn send_answered(self: &Arc<Self>, outbox_id: i64, message: Message) {
        let queue = self.answered.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(i64, Message)>(ANSWERED_QUEUE);
            let manager = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some((outbox_id, message)) = rx.recv().await {
                    let Some(manager) = manager.upgrade() else {
                        return;
                    };
                    // Committed: if the connection is closed, the outbox sends it after the
                    // next start.
                    if let Err(e) = manager.send_queued(outbox_id, message).await {
                        tracing::debug!(error = %e, "the answer waits in the outbox");
                    }
                }
            });
            tx
        });
        if queue.send((outbox_id, message)).await.is_err() {
            tracing::debug!("the answer waits in the outbox");
        }
    }

    /// Whether a message of `sender` in version `V` may be answered by the [`Responder`] in
    /// its decryption's transaction, as far as that can be told before decrypting: it comes
    /// from another account, none of the sender's earlier messages is still with the program,
    /// and both accounts' device lists of this version are fresh (the program's answer would
    /// fetch them first).
    async fn may_answer_at_once<V: Pep>(&self, sender: &BareJid) -> bool {
        sender != &self.own.jid
            && !self.with_program.holds(sender)
            && self.device_list_fresh(V::NS, sender).await
            && self.device_list_fresh(V::NS, &self.own.jid).await
    }

    /// Fetches the bundle of `device` of `jid` in version `V` and records the identity key it
    /// names. True if the key is now known.
    async fn learn_identity<V: Pep>(&self, jid: &BareJid, device: DeviceId) -> bool {
        let bundle = match self.fetch_bundle::<V>(jid, device).await {
            Ok(Some(bundle)) => bundle,
            Ok(None) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "cannot fetch the bundle of an unknown sender device");
                return false;
            }
        };
        let jid = jid.clone();
        let learned = self
            .with_engine(move |engine| engine.learn_identity::<V>(&jid, device, &bundle))
            .await;
        matches!(learned, Ok(Ok(true)))
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
        let (trust_messages, content) = split_trust_messages(&envelope);
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
            answered: None,
        }))
    }

    /// XEP-0384 §rules: a message (not a key exchange) from a device we have no session with
    /// gets a fresh session from the device's bundle and an empty message (a key exchange)
    /// in answer, so that the sender's next messages decrypt. Nothing is lost silently: the
    /// undecryptable message itself is reported to the application.
    pub(crate) async fn rebuild_session(
        &self,
        namespace: Namespace,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        in_version!(namespace, V => self.rebuild_session_in::<V>(jid, device).await)
    }

    async fn rebuild_session_in<V: Pep>(
        &self,
        jid: &BareJid,
        device: DeviceId,
    ) -> Result<(), OmemoError> {
        let Some(bundle) = self.fetch_bundle::<V>(jid, device).await? else {
            return Ok(());
        };
        let jid_owned = jid.clone();
        let built = self
            .with_engine(move |engine| engine.build_session::<V>(&jid_owned, device, &bundle))
            .await??;
        if built {
            tracing::info!(%jid, %device, node = V::BUNDLE_NODE, "built a new session after a message without one");
            self.send_empty::<V>(jid, device).await?;
        }
        Ok(())
    }
}

/// An envelope's trust messages (XEP-0450) and the rest of its sensitive content.
fn split_trust_messages(envelope: &sce::Envelope) -> (Vec<Element>, Vec<Element>) {
    envelope
        .sensitive_content()
        .cloned()
        .partition(TrustMessage::is_trust_message)
}

/// A message that arrived, as [`decrypt_and_answer`] takes it.
struct Arrived<'a, V: Pep> {
    encrypted: &'a V::Encrypted,
    sender: &'a BareJid,
    recipient: &'a BareJid,
    /// Its header, when the program is to get it (it waits in the inbox until then).
    keep: Option<&'a Header>,
}

/// Decrypts a message in `engine`'s transaction and, with a `responder` (and the answer's
/// stanza id), answers it there if it can ([`answer_at_once`]): then the message and its
/// answer are committed together and the answer comes back with its outbox id. Otherwise the
/// message is committed on its own, kept in the inbox for the program.
fn decrypt_and_answer<V: Pep>(
    mut engine: Engine<'_, OsRng>,
    arrived: Arrived<'_, V>,
    responder: Option<&(Responder, String)>,
) -> Result<(DecryptOutcome, Option<(Sealed, i64)>), ReceiveError> {
    let Arrived {
        encrypted,
        sender,
        recipient,
        keep,
    } = arrived;
    let opened = engine.reborrow().open::<V>(encrypted, sender, recipient)?;
    if let (Some((responder, stanza_id)), Some(header)) = (responder, keep) {
        let asked = Asked {
            opened: &opened,
            header,
            stanza_id,
        };
        if let Some(answer) = answer_at_once::<V>(engine.reborrow(), asked, responder) {
            match opened.commit_answered(engine.store, &answer) {
                Ok(outbox_id) => return Ok((opened.into_outcome(None), Some((answer, outbox_id)))),
                // The message goes to the program on its own.
                Err(e) => tracing::debug!(error = %e, "cannot commit an answer given at once"),
            }
        }
    }
    Ok((opened.commit(engine.store, keep)?, None))
}

/// A message just decrypted (not yet committed) that the [`Responder`] may answer.
struct Asked<'a, V: Flavour> {
    opened: &'a Opened<V>,
    header: &'a Header,
    /// The answer's stanza id.
    stanza_id: &'a str,
}

/// Asks `responder` about a message just decrypted in `engine`'s transaction and, if it
/// answers, encrypts the answer there as [`OmemoManager::send_answer`] would: in the message's
/// version, to the devices of the sender's account and our other devices listed in it (and,
/// in legacy, the device that asked), stepping the session the message stepped. The caller
/// commits the message and its answer together ([`Opened::commit_answered`]). `None` when the
/// message is not one the responder answers at once or when the answer would need a bundle
/// first (a device without a session) or would not reach the sender: then the program gets
/// the message, as without a responder.
fn answer_at_once<V: Pep>(
    mut engine: Engine<'_, OsRng>,
    asked: Asked<'_, V>,
    responder: &Responder,
) -> Option<Sealed> {
    let Asked {
        opened,
        header,
        stanza_id,
    } = asked;
    let envelope = opened.envelope()?;
    let (trust_messages, content) = split_trust_messages(envelope);
    if !trust_messages.is_empty() || content.is_empty() {
        return None;
    }
    let e2ee = opened.e2ee();
    let message = DecryptedMessage {
        from: header.from.clone(),
        id: header.id.clone(),
        type_: header.type_.clone(),
        body: envelope.body(),
        content,
        e2ee,
        receipt: None,
        answered: None,
    };
    let answer = responder(&message)?;
    let to = &message.e2ee.sender;
    let own = engine.own;
    // The device that asked is added below, not by `message_devices` (which adds it only
    // with a stored session).
    let (mut devices, over_limit) = match message_devices(engine.store, own, to, &[V::NS], None) {
        Ok(chosen) => chosen,
        Err(e) => {
            tracing::debug!(error = %e, "cannot choose the devices of an answer at once");
            return None;
        }
    };
    // The device that asked has its session in hand, stored or (a key exchange) not yet: the
    // answer needs no bundle for it, and in legacy it gets the answer even when no device
    // list names it (as `include_answered` does for the program's answers).
    let asker = message.e2ee.device;
    match devices
        .iter_mut()
        .find(|(jid, c)| jid == to && c.device == asker)
    {
        Some((_, chosen)) => chosen.has_session = true,
        None if V::ANSWER_UNLISTED => devices.push((
            to.clone(),
            Chosen {
                device: asker,
                namespace: V::NS,
                has_session: true,
            },
        )),
        None => {}
    }
    if devices.iter().any(|(_, c)| !c.has_session) {
        return None; // a bundle to fetch first: the program's answer does that
    }
    let devices: Vec<(BareJid, DeviceId)> = devices
        .into_iter()
        .map(|(jid, c)| (jid, c.device))
        .collect();
    let sealed = sealed_envelope(answer.clone(), &own.jid, to).ok()?;
    let plaintext = V::plaintext(&answer, &sealed)?;
    let encrypted = engine.reborrow().seal::<V>(Outgoing {
        accept: TrustLevel::is_accepted,
        devices: &devices,
        to_required: true,
        bundles: Vec::new(),
        plaintext: &plaintext,
        to,
        stanza_id,
        answers: &[],
        held: Some(opened.held()),
    });
    match encrypted {
        Ok(mut sealed) => {
            sealed.report.stanza_id = stanza_id.to_owned();
            sealed.report.over_limit = over_limit;
            Some(sealed)
        }
        Err(e) => {
            // Too large, no trusted device: the program's answer says so.
            tracing::debug!(error = %e, "not answering at once");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::tests::{Peer, T0};
    use super::*;

    fn own() -> OwnIdentity {
        OwnIdentity {
            jid: BareJid::new("bot@example.org").unwrap(),
            device_id: DeviceId::new(7).unwrap(),
            identity: omemo_crypto::hazmat::identity_from_seed(&[9; 32]),
            label: "bot".to_owned(),
        }
    }

    fn omemo2(rid: u32) -> EncryptedMessage {
        EncryptedMessage {
            sid: DeviceId::new(1).unwrap(),
            keys: vec![RecipientKeys {
                jid: BareJid::new("bot@example.org").unwrap(),
                keys: vec![EncryptedKey {
                    rid: DeviceId::new(rid).unwrap(),
                    kex: false,
                    data: vec![1, 2, 3],
                }],
            }],
            payload: Some(vec![4]),
        }
    }

    fn legacy(rid: u32) -> omemo_pep::legacy::EncryptedMessage {
        omemo_pep::legacy::EncryptedMessage {
            sid: DeviceId::new(2).unwrap(),
            keys: vec![omemo_pep::legacy::EncryptedKey {
                rid: DeviceId::new(rid).unwrap(),
                prekey: false,
                data: vec![1, 2, 3],
            }],
            iv: vec![0; 12],
            payload: Some(vec![4]),
        }
    }

    fn stanza(
        omemo2: Option<EncryptedMessage>,
        legacy: Option<omemo_pep::legacy::EncryptedMessage>,
    ) -> Message {
        let mut message = Message::new_with_type(MessageType::Chat, None)
            .with_body(Default::default(), hints::LEGACY_FALLBACK_BODY.to_owned());
        if let Some(e) = omemo2 {
            message.payloads.push(e.to_element());
        }
        if let Some(e) = legacy {
            message.payloads.push(e.to_element());
        }
        message
    }

    fn found(message: &Message) -> Option<(Namespace, u32)> {
        find_encrypted(message, &own())
            .map(|r| r.unwrap())
            .map(|i| (i.namespace(), i.sender_device().get()))
    }

    /// Decrypts `message` (OMEMO 2) from `from` on `to`'s store as the receive path does,
    /// with a responder that answers when `answer` is true.
    fn decrypt_as_the_bot(
        to: &mut Peer,
        from: &Peer,
        message: &Message,
        answer: bool,
    ) -> (DecryptOutcome, Option<(Sealed, i64)>) {
        let encrypted = hints::find_encrypted(message).unwrap().unwrap();
        let id = message.id.as_ref().map(|id| id.0.clone());
        decrypt_in_as_the_bot::<Omemo2>(to, from, &encrypted, id, answer)
    }

    /// [`decrypt_as_the_bot`] for an `<encrypted>` of version `V`.
    fn decrypt_in_as_the_bot<V: Pep>(
        to: &mut Peer,
        from: &Peer,
        encrypted: &V::Encrypted,
        id: Option<String>,
        answer: bool,
    ) -> (DecryptOutcome, Option<(Sealed, i64)>) {
        let header = Header {
            from: Jid::from(from.own.jid.clone()),
            id,
            type_: MessageType::Chat,
        };
        let responder: Responder = Arc::new(move |m: &DecryptedMessage| {
            let body = m.body.as_deref()?;
            answer.then(|| {
                vec![sce::Envelope::body_element(&format!(
                    "Your message: {body}"
                ))]
            })
        });
        let engine = Engine {
            store: &mut to.store,
            own: &to.own,
            policy: TrustPolicy::Toakafa,
            now: T0,
            rng: &mut OsRng,
        };
        let arrived = Arrived {
            encrypted,
            sender: &from.own.jid,
            recipient: &to.own.jid,
            keep: Some(&header),
        };
        decrypt_and_answer::<V>(engine, arrived, Some(&(responder, "answer".to_owned()))).unwrap()
    }

    #[test]
    fn a_first_message_is_answered_at_once_on_the_session_it_built() {
        let mut alice = Peer::new("alice@example.org", 31);
        let mut bob = Peer::new("bob@example.org", 32);
        alice.lists(&bob);
        bob.lists(&alice);

        // The key exchange builds Bob's session with Alice's device, which is not stored
        // until the commit that also stores the answer.
        let first = alice.send(&bob, "hello", Some(bob.bundle()), T0);
        let (outcome, answer) = decrypt_as_the_bot(&mut bob, &alice, &first, true);
        assert!(outcome.e2ee.key_exchange);
        let (sealed, outbox_id) = answer.expect("the key exchange was not answered at once");
        assert_eq!(outcome.inbox_id, None);
        assert!(bob.store.inbox().unwrap().is_empty());
        assert_eq!(
            bob.store.outbox().unwrap().last().map(|(id, _)| *id),
            Some(outbox_id)
        );
        let got = alice.receive(&bob, &sealed.message, T0 + 1).unwrap();
        assert_eq!(
            got.envelope
                .as_ref()
                .and_then(sce::Envelope::body)
                .as_deref(),
            Some("Your message: hello")
        );

        // A message the responder declines waits in the inbox for the program instead.
        let second = alice.send(&bob, "again", None, T0 + 2);
        let (outcome, answer) = decrypt_as_the_bot(&mut bob, &alice, &second, false);
        assert!(answer.is_none());
        let inbox: Vec<i64> = bob.store.inbox().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(inbox, outcome.inbox_id.into_iter().collect::<Vec<_>>());
        assert_eq!(inbox.len(), 1);
    }

    #[test]
    fn a_legacy_device_no_list_names_gets_its_answer_at_once() {
        use super::super::engine::tests::{legacy_encrypted, legacy_session_with};
        use omemo_crypto::legacy;
        let alice = Peer::new("alice@example.org", 41);
        let mut bob = Peer::new("bob@example.org", 42);
        let mut rng = OsRng;
        // Alice, with the legacy crypto alone, as a legacy client would. Bob knows her
        // identity (from her bundle) but no legacy device list of hers names her device.
        let mut to_bob = legacy_session_with(&alice, &bob, &mut rng);
        bob.knows_identity_of(&alice, Namespace::Legacy);
        assert!(bob
            .store
            .active_devices(Namespace::Legacy, alice.own.jid.as_str())
            .unwrap()
            .is_empty());
        let first = legacy_encrypted(&mut to_bob, &alice, &bob, "hello legacy", &mut rng);
        let (outcome, answer) = decrypt_in_as_the_bot::<omemo_crypto::Legacy>(
            &mut bob,
            &alice,
            &first,
            Some("l1".to_owned()),
            true,
        );
        assert!(outcome.e2ee.key_exchange);
        let (sealed, _) = answer.expect("the unlisted legacy device was not answered at once");
        assert_eq!(
            sealed.report.encrypted_for,
            vec![(alice.own.jid.clone(), alice.own.device_id)]
        );
        assert!(bob.store.inbox().unwrap().is_empty());

        // Alice reads the answer on the session she started.
        let answer = hints::find_legacy_encrypted(&sealed.message)
            .unwrap()
            .unwrap();
        let for_alice = answer
            .keys
            .iter()
            .find(|k| k.rid == alice.own.device_id)
            .unwrap();
        let key = legacy::KeyMessage::from_bytes(&for_alice.data).unwrap();
        let material = to_bob.decrypt(&key, &mut rng).unwrap();
        let text = legacy::payload::decrypt(
            answer.payload.as_deref().unwrap(),
            &answer.iv,
            material.plaintext(),
        )
        .unwrap();
        assert_eq!(&text[..], b"Your message: hello legacy");
    }

    #[test]
    fn the_element_with_a_key_for_our_device_is_decrypted_omemo2_first() {
        // Both carry a key for us: OMEMO 2.
        assert_eq!(
            found(&stanza(Some(omemo2(7)), Some(legacy(7)))),
            Some((Namespace::Omemo2, 1))
        );
        // Only the legacy one does: legacy (a dual-stack sender chose legacy for us).
        assert_eq!(
            found(&stanza(Some(omemo2(8)), Some(legacy(7)))),
            Some((Namespace::Legacy, 2))
        );
        // A legacy-only message, with the fallback body beside it.
        assert_eq!(
            found(&stanza(None, Some(legacy(7)))),
            Some((Namespace::Legacy, 2))
        );
        // Neither has a key for us: the first present, which then reports "not for us".
        assert_eq!(
            found(&stanza(Some(omemo2(8)), Some(legacy(8)))),
            Some((Namespace::Omemo2, 1))
        );
        // The fallback body alone is no OMEMO message.
        assert_eq!(found(&stanza(None, None)), None);
    }
}
