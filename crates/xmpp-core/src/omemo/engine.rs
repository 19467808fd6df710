//! The engine: the synchronous protocol core, crypto plus store, without I/O.
//!
//! Every step takes the store (locked by its caller), our device, the trust policy, the time
//! and a random source as arguments, does its ratchet steps, commits them in one SQLite
//! transaction and returns what is to be sent: a stanza already in the outbox, or what the
//! manager should do next (republish the bundle, send an empty message). The manager above
//! runs these steps on a blocking thread and does the network part. Because nothing here reads
//! the clock or the OS random source, the steps replay exactly under a seeded generator.

use omemo_crypto::{GenericSession, Legacy, PreKeyId, Version};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::*;

pub(super) struct DecryptOutcome {
    pub(super) envelope: Option<sce::Envelope>,
    pub(super) e2ee: E2eeMetadata,
    pub(super) heartbeat_due: bool,
    pub(super) used_pre_key: bool,
    /// The message's inbox id, when it was kept.
    pub(super) inbox_id: Option<i64>,
}

/// A message decrypted and checked by [`Engine::open`], its ratchet step not yet stored.
pub(crate) struct Opened<V: Version> {
    sender: BareJid,
    device: DeviceId,
    /// The session after the message: stored by the commit, or stepped again by an answer.
    session: GenericSession<V>,
    /// Its stored form.
    state: Zeroizing<Vec<u8>>,
    /// What becomes the previous session.
    kept: Option<Zeroizing<Vec<u8>>>,
    used_pre_key: Option<PreKeyId>,
    /// The envelope and its bytes, unless the message was empty.
    content: Option<(sce::Envelope, Vec<u8>)>,
    identity_key: IdentityPublicKey,
    level: TrustLevel,
    key_exchange: bool,
    heartbeat_due: bool,
    now: u64,
}

impl<V: Flavour> Opened<V> {
    /// The message's envelope, unless it was empty.
    pub(super) fn envelope(&self) -> Option<&sce::Envelope> {
        self.content.as_ref().map(|(envelope, _)| envelope)
    }

    /// What the program is told of the message's encryption.
    pub(super) fn e2ee(&self) -> E2eeMetadata {
        E2eeMetadata {
            sender: self.sender.clone(),
            device: self.device,
            identity_key: self.identity_key,
            trust: self.level,
            key_exchange: self.key_exchange,
            version: V::NS.version(),
        }
    }

    /// The session after the message, for an answer to step it again
    /// ([`Outgoing::held`]).
    pub(super) fn held(&self) -> Held<V> {
        Held {
            jid: self.sender.clone(),
            device: self.device,
            session: self.session.clone(),
            level: self.level,
        }
    }

    fn decryption_commit(&self) -> DecryptionCommit<'_> {
        DecryptionCommit {
            namespace: V::NS,
            jid: self.sender.as_str(),
            device_id: self.device,
            session_state: &self.state,
            previous_state: self.kept.as_deref().map(Vec::as_slice),
            used_pre_key: self.used_pre_key,
            now: self.now,
        }
    }

    /// Stores the message's ratchet step in one transaction; with `keep`, a message with
    /// content is kept in the inbox by that same commit.
    pub(crate) fn commit(
        self,
        store: &mut Store,
        keep: Option<&Header>,
    ) -> Result<DecryptOutcome, ReceiveError> {
        let commit = self.decryption_commit();
        let inbox_id = match (keep, &self.content) {
            (Some(header), Some((_, bytes))) => {
                let from = header.from.to_string();
                let kept = NewInboxMessage {
                    identity_key: &self.identity_key,
                    from: &from,
                    stanza_id: header.id.as_deref(),
                    message_type: message_type_str(&header.type_),
                    envelope: bytes,
                    key_exchange: self.key_exchange,
                };
                let (_, id) = store
                    .commit_decryption_kept(&commit, &kept)
                    .map_err(ReceiveError::Store)?;
                Some(id)
            }
            _ => {
                store
                    .commit_decryption(&commit)
                    .map_err(ReceiveError::Store)?;
                None
            }
        };
        Ok(self.into_outcome(inbox_id))
    }

    /// Stores the message's ratchet step together with `answer` (sealed with
    /// [`Opened::held`] among its sessions) in one transaction, the answer queued in the
    /// outbox and the message never in the inbox. Returns the answer's outbox id; on failure
    /// nothing is stored, and the message may still be committed on its own.
    pub(crate) fn commit_answered(
        &self,
        store: &mut Store,
        answer: &Sealed,
    ) -> Result<i64, StoreError> {
        store.commit_decryption_answered(&self.decryption_commit(), &answer.updates(), &answer.text)
    }

    /// What the receive path reports of the message once it is committed, with its inbox id
    /// if the commit kept it there.
    pub(crate) fn into_outcome(self, inbox_id: Option<i64>) -> DecryptOutcome {
        let e2ee = self.e2ee();
        DecryptOutcome {
            inbox_id,
            envelope: self.content.map(|(envelope, _)| envelope),
            e2ee,
            heartbeat_due: self.heartbeat_due,
            used_pre_key: self.used_pre_key.is_some(),
        }
    }
}

/// A session already in hand (the one a message just stepped) for [`Engine::seal`] to use
/// instead of the stored one, with its device's trust level.
pub(crate) struct Held<V: Version> {
    jid: BareJid,
    device: DeviceId,
    session: GenericSession<V>,
    level: TrustLevel,
}

/// A message encrypted by [`Engine::seal`], its ratchet steps not yet stored.
pub(crate) struct Sealed {
    pub(super) message: Message,
    pub(super) report: SendReport,
    /// The new session state of each device it was encrypted for.
    states: Vec<(BareJid, DeviceId, Zeroizing<Vec<u8>>)>,
    /// The stanza as the outbox keeps it.
    text: String,
}

impl Sealed {
    fn updates(&self) -> Vec<SessionUpdate<'_>> {
        self.states
            .iter()
            .map(|(jid, id, state)| SessionUpdate {
                jid: jid.as_str(),
                device_id: *id,
                session_state: state,
            })
            .collect()
    }
}

/// The parts of an incoming stanza a decrypted message keeps.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(super) from: Jid,
    pub(super) id: Option<String>,
    pub(super) type_: MessageType,
}

pub(super) const MESSAGE_TYPES: [(MessageType, &str); 5] = [
    (MessageType::Chat, "chat"),
    (MessageType::Normal, "normal"),
    (MessageType::Groupchat, "groupchat"),
    (MessageType::Headline, "headline"),
    (MessageType::Error, "error"),
];

pub(super) fn message_type_str(type_: &MessageType) -> &'static str {
    MESSAGE_TYPES
        .iter()
        .find(|(t, _)| t == type_)
        .map_or("normal", |(_, name)| name)
}

pub(super) fn message_type_from_str(name: &str) -> Option<MessageType> {
    MESSAGE_TYPES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(t, _)| t.clone())
}

/// One step of the protocol on the store, synchronous and without I/O: what it needs comes in
/// as arguments (the store, locked by the caller, our device, the trust policy, the time and a
/// random source) and what is to be sent comes back, already committed to the store.
pub(crate) struct Engine<'a, R> {
    /// The store; each step ends with one transaction.
    pub(crate) store: &'a mut Store,
    /// Our own device.
    pub(crate) own: &'a OwnIdentity,
    /// How new identity keys are trusted.
    pub(crate) policy: TrustPolicy,
    /// The time, in seconds since the Unix epoch.
    pub(crate) now: u64,
    /// The random source for key exchanges, ratchet keys and payload keys.
    pub(crate) rng: &'a mut R,
}

/// A message to encrypt in version `V`, as [`Engine::encrypt`] takes it.
pub(crate) struct Outgoing<'a, V: Version> {
    /// Which trust levels may read the message.
    pub(crate) accept: fn(TrustLevel) -> bool,
    /// The devices that get the message in this version (of the addressee and of our own
    /// account), as [`chosen_devices`] picked them.
    pub(crate) devices: &'a [(BareJid, DeviceId)],
    /// Whether a device of the addressee must get the message (the step fails with
    /// [`OmemoError::NoTrustedDevice`] otherwise); when false, at least one device must.
    pub(crate) to_required: bool,
    /// Bundles of this version fetched for devices without a session.
    pub(crate) bundles: Vec<(BareJid, DeviceId, V::Bundle)>,
    /// What this version encrypts: the SCE envelope for OMEMO 2, the body text for legacy.
    pub(crate) plaintext: &'a [u8],
    /// The addressee.
    pub(crate) to: &'a BareJid,
    /// The stanza id.
    pub(crate) stanza_id: &'a str,
    /// Inbox messages this one answers: they leave the inbox by the same commit.
    pub(crate) answers: &'a [i64],
    /// A session in hand for one of `devices`, used instead of the stored one.
    pub(crate) held: Option<Held<V>>,
}

impl<R: CryptoRngCore> Engine<'_, R> {
    /// The same engine for one step, leaving this one for another step in the same call (and
    /// so in the same group commit).
    pub(crate) fn reborrow(&mut self) -> Engine<'_, R> {
        Engine {
            store: &mut *self.store,
            own: self.own,
            policy: self.policy,
            now: self.now,
            rng: &mut *self.rng,
        }
    }

    /// [`Engine::open`] and [`Opened::commit`] in one: decrypt, check, then commit in one
    /// transaction; with `keep`, a message with content is kept in the inbox by that same
    /// commit.
    #[cfg(test)]
    pub(crate) fn decrypt<V: Flavour>(
        mut self,
        encrypted: &V::Encrypted,
        sender: &BareJid,
        recipient: &BareJid,
        keep: Option<&Header>,
    ) -> Result<DecryptOutcome, ReceiveError> {
        let opened = self.reborrow().open::<V>(encrypted, sender, recipient)?;
        opened.commit(self.store, keep)
    }

    /// Decrypts and checks a message in version `V` without storing its ratchet step: that
    /// is [`Opened::commit`], or [`Opened::commit_answered`] together with an answer. The
    /// sender's identity key is recorded (inside the caller's transaction).
    pub(crate) fn open<V: Flavour>(
        self,
        encrypted: &V::Encrypted,
        sender: &BareJid,
        recipient: &BareJid,
    ) -> Result<Opened<V>, ReceiveError> {
        let Engine {
            store,
            own,
            policy,
            now,
            rng,
        } = self;
        let key = V::key_for(encrypted, &own.jid, own.device_id).ok_or(ReceiveError::NotForUs)?;
        let message = V::parse_key_message(key).map_err(ReceiveError::Decode)?;
        let sid = V::sender_device(encrypted);
        let (current_blob, previous_blob) = match store
            .load_sessions(V::NS, sender.as_str(), sid)
            .map_err(ReceiveError::Store)?
        {
            Some((current, previous)) => (Some(current), previous),
            None => (None, None),
        };
        let current = current_blob
            .as_ref()
            .map(|blob| GenericSession::<V>::restore(blob))
            .transpose()
            .map_err(ReceiveError::Snapshot)?;
        // The previous session is read only when needed; one that no longer restores only
        // helps less.
        let previous =
            |blob: Option<&Vec<u8>>| blob.and_then(|blob| GenericSession::<V>::restore(blob).ok());
        let key_exchange = V::as_key_exchange(&message);
        let built_by = |session: &Option<GenericSession<V>>| match (key_exchange, session) {
            (Some(kex), Some(session)) => session.was_built_by(kex),
            _ => false,
        };

        // `kept` is the state stored as the previous session after this message.
        let (session, kept, decrypted, is_key_exchange, used_pre_key) = match (
            key_exchange,
            current,
        ) {
            // A key exchange that built neither session: a new session; the current one is
            // kept as the previous, for messages the peer sent on it (both sides started a
            // session at the same moment, or messages still on their way).
            (Some(kex), current)
                if !built_by(&current) && !built_by(&previous(previous_blob.as_deref())) =>
            {
                let spk = store
                    .signed_pre_key_for(V::NS, V::key_exchange_signed_pre_key_id(kex))
                    .map_err(ReceiveError::Store)?
                    .ok_or(ReceiveError::UnknownPreKey)?;
                let pre_key_id = V::key_exchange_pre_key_id(kex);
                let pk = store
                    .pre_key_for(V::NS, pre_key_id)
                    .map_err(ReceiveError::Store)?
                    .ok_or(ReceiveError::UnknownPreKey)?;
                let (session, decrypted) =
                    GenericSession::<V>::respond(&own.identity, &spk, &pk, kex, &mut *rng)
                        .map_err(ReceiveError::KeyExchange)?;
                let kept = current_blob.or(previous_blob);
                (session, kept, decrypted, true, Some(pre_key_id))
            }
            (_, Some(mut current)) => match current.decrypt(&message, &mut *rng) {
                Ok(decrypted) => (current, previous_blob, decrypted, false, None),
                Err(DecryptionError::Duplicate) => {
                    return Err(ReceiveError::Decryption(DecryptionError::Duplicate))
                }
                Err(error) => {
                    // Perhaps a message on the previous session: then that one becomes current.
                    let Some(mut previous) = previous(previous_blob.as_deref()) else {
                        return Err(ReceiveError::Decryption(error));
                    };
                    match previous.decrypt(&message, &mut *rng) {
                        Ok(decrypted) => {
                            tracing::info!(%sender, device = %sid, "message on the previous session; it is the current one again");
                            (previous, current_blob, decrypted, false, None)
                        }
                        Err(DecryptionError::Duplicate) => {
                            return Err(ReceiveError::Decryption(DecryptionError::Duplicate))
                        }
                        Err(_) => return Err(ReceiveError::Decryption(error)),
                    }
                }
            },
            (_, None) => return Err(ReceiveError::NoSession),
        };

        // The identity, the payload and its content must check out before anything is stored.
        let identity_key = V::peer_identity(store, sender, sid, &session.peer_identity_key())?;
        let content = V::open_payload(
            encrypted,
            decrypted.plaintext(),
            sender,
            recipient,
            &mut *rng,
        )?;
        let recorded = match store.record_identity_key(
            V::NS,
            sender.as_str(),
            sid,
            &identity_key,
            policy,
            now,
        ) {
            Ok(recorded) => recorded,
            Err(StoreError::IdentityKeyChanged { .. }) => {
                return Err(ReceiveError::IdentityChanged)
            }
            Err(e) => return Err(ReceiveError::Store(e)),
        };
        Ok(Opened {
            sender: sender.clone(),
            device: sid,
            state: session.snapshot(),
            session,
            kept,
            used_pre_key,
            content,
            identity_key,
            level: recorded.level,
            key_exchange: is_key_exchange,
            heartbeat_due: decrypted.heartbeat_due(),
            now,
        })
    }

    /// The send path inside the store lock, in version `V`: sessions for new devices, trust
    /// filter, one payload, one ratchet step per device, one commit.
    pub(crate) fn encrypt<V: Flavour>(
        mut self,
        outgoing: Outgoing<'_, V>,
    ) -> Result<(Message, SendReport, i64), OmemoError> {
        let answers = outgoing.answers;
        let sealed = self.reborrow().seal(outgoing)?;
        let updates = sealed.updates();
        let outbox_id = self.store.commit_encryption_queued(
            V::NS,
            &updates,
            self.now,
            &sealed.text,
            answers,
        )?;
        Ok((sealed.message, sealed.report, outbox_id))
    }

    /// [`Engine::encrypt`] without the commit: the stanza and the new session states, for the
    /// caller to store (see [`Opened::commit_answered`]). The identity keys of the devices
    /// are recorded.
    pub(crate) fn seal<V: Flavour>(self, outgoing: Outgoing<'_, V>) -> Result<Sealed, OmemoError> {
        let Engine {
            store,
            own,
            policy,
            now: t,
            rng,
        } = self;
        let Outgoing {
            accept,
            devices,
            to_required,
            bundles,
            plaintext,
            to,
            stanza_id,
            answers: _,
            mut held,
        } = outgoing;
        let mut report = SendReport::default();
        let mut sessions: Vec<(BareJid, DeviceId, GenericSession<V>)> = Vec::new();
        let mut bundles: HashMap<(BareJid, DeviceId), V::Bundle> = bundles
            .into_iter()
            .map(|(jid, device, bundle)| ((jid, device), bundle))
            .collect();

        for (jid, id) in devices {
            let id = *id;
            if let Some(held) = held.take_if(|held| &held.jid == jid && held.device == id) {
                if accept(held.level) {
                    sessions.push((held.jid, id, held.session));
                } else {
                    report
                        .skipped
                        .push((jid.clone(), id, format!("trust level {:?}", held.level)));
                }
                continue;
            }
            let blob = store.load_session(V::NS, jid.as_str(), id)?;
            let (session, key) = match blob {
                Some(blob) => match GenericSession::<V>::restore(&blob) {
                    Ok(session) => {
                        match V::peer_identity(store, jid, id, &session.peer_identity_key()) {
                            Ok(key) => (session, key),
                            Err(e) => {
                                report
                                    .skipped
                                    .push((jid.clone(), id, format!("identity: {e}")));
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        report
                            .skipped
                            .push((jid.clone(), id, format!("stored session: {e}")));
                        continue;
                    }
                },
                None => {
                    let Some(bundle) = bundles.remove(&(jid.clone(), id)) else {
                        report
                            .skipped
                            .push((jid.clone(), id, "no bundle".to_owned()));
                        continue;
                    };
                    let pre_key = V::choose_pre_key(&bundle, &mut *rng);
                    match GenericSession::<V>::initiate(&own.identity, &bundle, pre_key, &mut *rng)
                    {
                        Ok(session) => (session, V::bundle_identity(&bundle)),
                        Err(e) => {
                            report
                                .skipped
                                .push((jid.clone(), id, format!("session: {e}")));
                            continue;
                        }
                    }
                }
            };
            let level = match store.record_identity_key(V::NS, jid.as_str(), id, &key, policy, t) {
                Ok(recorded) => recorded.level,
                Err(StoreError::IdentityKeyChanged { .. }) => {
                    report
                        .skipped
                        .push((jid.clone(), id, "identity key changed".to_owned()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !accept(level) {
                report
                    .skipped
                    .push((jid.clone(), id, format!("trust level {level:?}")));
                continue;
            }
            sessions.push((jid.clone(), id, session));
        }
        let reaches_to = sessions.iter().any(|(jid, _, _)| jid == to);
        if (to_required && !reaches_to) || sessions.is_empty() {
            return Err(OmemoError::NoTrustedDevice(to.clone()));
        }

        let (payload, key_material) = V::seal(plaintext, &mut *rng);
        let mut keys: Vec<(BareJid, DeviceId, V::KeyMessage)> = Vec::new();
        let mut states = Vec::with_capacity(sessions.len());
        for (jid, id, mut session) in sessions {
            let key = match session.encrypt(key_material.as_bytes()) {
                Ok(key) => key,
                Err(e) => {
                    report
                        .skipped
                        .push((jid.clone(), id, format!("encrypt: {e}")));
                    continue;
                }
            };
            keys.push((jid.clone(), id, key));
            report.encrypted_for.push((jid.clone(), id));
            states.push((jid, id, session.snapshot()));
        }
        let mut message = V::message(own.device_id, to, &keys, payload);
        message.id = Some(xmpp_parsers::message::Id(stanza_id.to_owned()));
        let text = stanza_text(&message)?;
        Ok(Sealed {
            message,
            report,
            states,
            text,
        })
    }

    /// An empty message (session confirmation, heartbeat, key transport) in version `V` to
    /// `device` of `jid` on the stored session of that version, queued in the outbox: its
    /// outbox id and stanza. `None` when there is no usable session.
    pub(crate) fn empty_message<V: Flavour>(
        self,
        jid: &BareJid,
        device: DeviceId,
        stanza_id: &str,
    ) -> Result<Option<(i64, Message)>, OmemoError> {
        let Engine {
            store,
            own,
            now,
            rng,
            ..
        } = self;
        let Some(blob) = store.load_session(V::NS, jid.as_str(), device)? else {
            return Ok(None);
        };
        let Ok(mut session) = GenericSession::<V>::restore(&blob) else {
            return Ok(None);
        };
        let Some(mut message) = V::empty_message(own.device_id, jid, device, &mut session, rng)
        else {
            return Ok(None);
        };
        message.id = Some(xmpp_parsers::message::Id(stanza_id.to_owned()));
        let state = session.snapshot();
        let text = stanza_text(&message)?;
        let outbox_id = store.commit_encryption_queued(
            V::NS,
            &[SessionUpdate {
                jid: jid.as_str(),
                device_id: device,
                session_state: &state,
            }],
            now,
            &text,
            &[],
        )?;
        Ok(Some((outbox_id, message)))
    }

    /// Records the identity key a bundle of version `V` names for `device` of `jid` (a legacy
    /// key exchange carries the key without the Ed25519 sign bit, which only the bundle
    /// gives: LEGACY-NOTES §2). False if it differs from the key already known.
    pub(crate) fn learn_identity<V: Flavour>(
        self,
        jid: &BareJid,
        device: DeviceId,
        bundle: &V::Bundle,
    ) -> Result<bool, OmemoError> {
        let key = V::bundle_identity(bundle);
        match self.store.record_identity_key(
            V::NS,
            jid.as_str(),
            device,
            &key,
            self.policy,
            self.now,
        ) {
            Ok(_) => Ok(true),
            Err(StoreError::IdentityKeyChanged { .. })
            | Err(StoreError::IdentityKeyDiffersBetweenVersions { .. }) => {
                tracing::warn!(%jid, %device, "bundle identity key differs from the known one");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A new session in version `V` with `device` of `jid` from its bundle of that version,
    /// for a device that sent a message we have no session for. True when one was built and
    /// stored (then an empty message is to follow); false when a session exists, the
    /// bundle's identity key differs from the known one, or the bundle is unusable.
    pub(crate) fn build_session<V: Flavour>(
        self,
        jid: &BareJid,
        device: DeviceId,
        bundle: &V::Bundle,
    ) -> Result<bool, OmemoError> {
        let Engine {
            store,
            own,
            policy,
            now,
            rng,
        } = self;
        let jid = jid.as_str();
        if store.load_session(V::NS, jid, device)?.is_some() {
            return Ok(false);
        }
        let key = V::bundle_identity(bundle);
        match store.record_identity_key(V::NS, jid, device, &key, policy, now) {
            Ok(_) => {}
            Err(StoreError::IdentityKeyChanged { .. }) => {
                tracing::warn!(%jid, %device, "bundle identity key differs from the known one; not rebuilding");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        let pre_key = V::choose_pre_key(bundle, &mut *rng);
        let Ok(session) = GenericSession::<V>::initiate(&own.identity, bundle, pre_key, &mut *rng)
        else {
            return Ok(false);
        };
        store.store_session(V::NS, jid, device, &session.snapshot(), now)?;
        Ok(true)
    }
}

/// What the engine needs of a protocol version beyond its cryptography ([`Version`]): the
/// store namespace its state lives in and its wire format. Implemented by OMEMO 2 and legacy,
/// so that the steps above are written once for both.
pub(crate) trait Flavour: Version {
    /// The namespace of this version's device lists, sessions and pre-keys in the store.
    const NS: Namespace;
    /// This version's checked `<encrypted>` element.
    type Encrypted;

    /// The sending device of a message.
    fn sender_device(encrypted: &Self::Encrypted) -> DeviceId;

    /// The `<key>` content for our device `device` of `jid`, if the message has one.
    fn key_for<'a>(
        encrypted: &'a Self::Encrypted,
        jid: &BareJid,
        device: DeviceId,
    ) -> Option<&'a [u8]>;

    /// The content of a message's payload with the key material the ratchet gave, as an SCE
    /// envelope and its bytes (as kept in the inbox); `None` for an empty message.
    fn open_payload(
        encrypted: &Self::Encrypted,
        key_material: &[u8],
        sender: &BareJid,
        recipient: &BareJid,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Option<(sce::Envelope, Vec<u8>)>, ReceiveError>;

    /// The device identity (Ed25519 form, as the store records it) behind the identity key a
    /// session of this version carries.
    fn peer_identity(
        store: &Store,
        jid: &BareJid,
        device: DeviceId,
        key: &Self::IdentityKey,
    ) -> Result<IdentityPublicKey, ReceiveError>;

    /// This version's encrypted payload, before it goes into the element.
    type Payload;

    /// Encrypts a payload: the payload and the key material each device's ratchet carries.
    fn seal(plaintext: &[u8], rng: &mut impl CryptoRngCore) -> (Self::Payload, KeyMaterial);

    /// The `<message>` (without an id) carrying `payload` and one key per device.
    fn message(
        sid: DeviceId,
        to: &BareJid,
        keys: &[(BareJid, DeviceId, Self::KeyMessage)],
        payload: Self::Payload,
    ) -> Message;

    /// Encrypts an empty message's key material for `device` of `to` on `session` and wraps
    /// it in this version's `<message>` (without an id). `None` if the session cannot
    /// encrypt.
    fn empty_message(
        sid: DeviceId,
        to: &BareJid,
        device: DeviceId,
        session: &mut GenericSession<Self>,
        rng: &mut impl CryptoRngCore,
    ) -> Option<Message>;
}

impl Flavour for Omemo2 {
    const NS: Namespace = Namespace::Omemo2;
    type Encrypted = EncryptedMessage;
    type Payload = Vec<u8>;

    fn seal(plaintext: &[u8], rng: &mut impl CryptoRngCore) -> (Vec<u8>, KeyMaterial) {
        payload::encrypt(plaintext, rng)
    }

    fn message(
        sid: DeviceId,
        to: &BareJid,
        keys: &[(BareJid, DeviceId, omemo_crypto::KeyMessage)],
        payload: Vec<u8>,
    ) -> Message {
        let mut grouped: Vec<RecipientKeys> = Vec::new();
        for (jid, id, key) in keys {
            let entry = EncryptedKey {
                rid: *id,
                kex: key.is_key_exchange(),
                data: key.to_bytes(),
            };
            match grouped.iter_mut().find(|k| &k.jid == jid) {
                Some(group) => group.keys.push(entry),
                None => grouped.push(RecipientKeys {
                    jid: jid.clone(),
                    keys: vec![entry],
                }),
            }
        }
        let encrypted = EncryptedMessage {
            sid,
            keys: grouped,
            payload: Some(payload),
        };
        hints::encrypted_message(Jid::from(to.clone()), MessageType::Chat, &encrypted)
    }

    fn sender_device(encrypted: &EncryptedMessage) -> DeviceId {
        encrypted.sid
    }

    fn key_for<'a>(
        encrypted: &'a EncryptedMessage,
        jid: &BareJid,
        device: DeviceId,
    ) -> Option<&'a [u8]> {
        encrypted
            .key_for(jid, device)
            .map(|key| key.data.as_slice())
    }

    fn open_payload(
        encrypted: &EncryptedMessage,
        key_material: &[u8],
        sender: &BareJid,
        recipient: &BareJid,
        _rng: &mut impl CryptoRngCore,
    ) -> Result<Option<(sce::Envelope, Vec<u8>)>, ReceiveError> {
        let Some(ciphertext) = &encrypted.payload else {
            return Ok(None);
        };
        let bytes = payload::decrypt(ciphertext, key_material).map_err(ReceiveError::Payload)?;
        let envelope = sce::Envelope::from_bytes(&bytes).map_err(ReceiveError::Envelope)?;
        // SCE binds the sender and the addressee inside the encryption.
        envelope
            .verify_affixes(sender, recipient)
            .map_err(ReceiveError::Envelope)?;
        Ok(Some((envelope, bytes.to_vec())))
    }

    fn peer_identity(
        _store: &Store,
        _jid: &BareJid,
        _device: DeviceId,
        key: &IdentityPublicKey,
    ) -> Result<IdentityPublicKey, ReceiveError> {
        Ok(*key)
    }

    fn empty_message(
        sid: DeviceId,
        to: &BareJid,
        device: DeviceId,
        session: &mut GenericSession<Self>,
        _rng: &mut impl CryptoRngCore,
    ) -> Option<Message> {
        // OMEMO 2's empty message carries 32 zero bytes and no payload (XEP-0384 §empty).
        let key = session.encrypt(KeyMaterial::empty().as_bytes()).ok()?;
        let encrypted = EncryptedMessage {
            sid,
            keys: vec![RecipientKeys {
                jid: to.clone(),
                keys: vec![EncryptedKey {
                    rid: device,
                    kex: key.is_key_exchange(),
                    data: key.to_bytes(),
                }],
            }],
            payload: None,
        };
        Some(hints::encrypted_message(
            Jid::from(to.clone()),
            MessageType::Chat,
            &encrypted,
        ))
    }
}

impl Flavour for Legacy {
    const NS: Namespace = Namespace::Legacy;
    type Encrypted = omemo_pep::legacy::EncryptedMessage;
    type Payload = omemo_crypto::legacy::payload::EncryptedPayload;

    fn seal(plaintext: &[u8], rng: &mut impl CryptoRngCore) -> (Self::Payload, KeyMaterial) {
        let mut sealed = omemo_crypto::legacy::payload::encrypt(plaintext, rng);
        let key_material = std::mem::replace(&mut sealed.key_material, KeyMaterial::empty());
        (sealed, key_material)
    }

    fn message(
        sid: DeviceId,
        to: &BareJid,
        keys: &[(BareJid, DeviceId, omemo_crypto::legacy::KeyMessage)],
        payload: Self::Payload,
    ) -> Message {
        let encrypted = omemo_pep::legacy::EncryptedMessage {
            sid,
            keys: keys
                .iter()
                .map(|(_, id, key)| omemo_pep::legacy::EncryptedKey {
                    rid: *id,
                    prekey: key.is_key_exchange(),
                    data: key.to_bytes(),
                })
                .collect(),
            iv: payload.iv.to_vec(),
            payload: Some(payload.ciphertext),
        };
        hints::legacy_encrypted_message(Jid::from(to.clone()), MessageType::Chat, &encrypted)
    }

    fn sender_device(encrypted: &Self::Encrypted) -> DeviceId {
        encrypted.sid
    }

    fn key_for<'a>(
        encrypted: &'a Self::Encrypted,
        _jid: &BareJid,
        device: DeviceId,
    ) -> Option<&'a [u8]> {
        // Legacy keys name only the device, not the account.
        encrypted
            .keys_for(device)
            .next()
            .map(|key| key.data.as_slice())
    }

    fn open_payload(
        encrypted: &Self::Encrypted,
        key_material: &[u8],
        sender: &BareJid,
        recipient: &BareJid,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Option<(sce::Envelope, Vec<u8>)>, ReceiveError> {
        // A key-transport message's plaintext is a bare key that decrypts nothing.
        let Some(ciphertext) = &encrypted.payload else {
            return Ok(None);
        };
        let body = omemo_crypto::legacy::payload::decrypt(ciphertext, &encrypted.iv, key_material)
            .map_err(ReceiveError::Payload)?;
        let text = std::str::from_utf8(&body).map_err(|_| ReceiveError::NotText)?;
        // Legacy has no SCE: the body is the whole content and nothing inside the encryption
        // names the sender or the addressee. The envelope built here records the stanza's
        // addresses (as checked by the caller), so that the rest of the pipeline is the same.
        let envelope = sce::Envelope::new(
            vec![sce::Envelope::body_element(text)],
            sender.clone(),
            recipient.clone(),
            None,
            rng,
        );
        let bytes = envelope.to_bytes().map_err(ReceiveError::Envelope)?;
        Ok(Some((envelope, bytes)))
    }

    fn peer_identity(
        store: &Store,
        jid: &BareJid,
        device: DeviceId,
        key: &omemo_crypto::legacy::IdentityKey,
    ) -> Result<IdentityPublicKey, ReceiveError> {
        // A legacy identity key lacks the Ed25519 sign bit: the device's bundle (either
        // version) must have told us its identity first.
        match store
            .known_identity_key(jid.as_str(), device)
            .map_err(ReceiveError::Store)?
        {
            Some(known) if Legacy::identity_matches(key, &known) => Ok(known),
            Some(_) => Err(ReceiveError::IdentityChanged),
            None => Err(ReceiveError::UnknownIdentity),
        }
    }

    fn empty_message(
        sid: DeviceId,
        to: &BareJid,
        device: DeviceId,
        session: &mut GenericSession<Self>,
        rng: &mut impl CryptoRngCore,
    ) -> Option<Message> {
        // Legacy's key-transport message: a fresh 16-byte key through the ratchet, an
        // `<iv>`, no payload (LEGACY-NOTES §7).
        let (key_material, iv) = omemo_crypto::legacy::payload::empty(rng);
        let key = session.encrypt(key_material.as_bytes()).ok()?;
        let encrypted = omemo_pep::legacy::EncryptedMessage {
            sid,
            keys: vec![omemo_pep::legacy::EncryptedKey {
                rid: device,
                prekey: key.is_key_exchange(),
                data: key.to_bytes(),
            }],
            iv: iv.to_vec(),
            payload: None,
        };
        Some(hints::legacy_encrypted_message(
            Jid::from(to.clone()),
            MessageType::Chat,
            &encrypted,
        ))
    }
}

/// One device a message goes to, as [`chosen_devices`] picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// The device.
    pub(crate) device: DeviceId,
    /// The version it gets the message in.
    pub(crate) namespace: Namespace,
    /// Whether we have a session with it in that version (no bundle to fetch).
    pub(crate) has_session: bool,
}

/// The devices of `jid` (without `skip`) a message is encrypted for, each exactly once, in the
/// first namespace of `priority` whose device list lists it (LEGACY-NOTES §10: with
/// [`Namespace::ALL`], OMEMO 2 where the device speaks it and legacy otherwise): those with a
/// session first, at most [`MAX_DEVICES_PER_MESSAGE`]. Also returns how many were left out.
pub(super) fn chosen_devices(
    store: &Store,
    jid: &BareJid,
    skip: Option<DeviceId>,
    priority: &[Namespace],
) -> Result<(Vec<Chosen>, usize), StoreError> {
    let mut with_session = Vec::new();
    let mut without = Vec::new();
    for device in store.device_versions(jid.as_str())? {
        if Some(device.device_id) == skip {
            continue;
        }
        let Some(namespace) = priority
            .iter()
            .copied()
            .find(|ns| device.listed_in.contains(ns))
        else {
            continue;
        };
        let chosen = Chosen {
            device: device.device_id,
            namespace,
            has_session: device.sessions_in.contains(&namespace),
        };
        if chosen.has_session {
            with_session.push(chosen);
        } else {
            without.push(chosen);
        }
    }
    with_session.extend(without);
    let over_limit = with_session.len().saturating_sub(MAX_DEVICES_PER_MESSAGE);
    with_session.truncate(MAX_DEVICES_PER_MESSAGE);
    Ok((with_session, over_limit))
}

/// The devices a message to `to` goes to, each with its JID: those of `to` and our own other
/// devices, as [`chosen_devices`] picks them in `priority`, and with `asked_by` (an answer)
/// the device of `to` that asked, as [`include_answered`] adds it. Also how many were left out
/// over [`MAX_DEVICES_PER_MESSAGE`].
pub(super) fn message_devices(
    store: &Store,
    own: &OwnIdentity,
    to: &BareJid,
    priority: &[Namespace],
    asked_by: Option<(DeviceId, Namespace)>,
) -> Result<(Vec<(BareJid, Chosen)>, usize), StoreError> {
    let mut recipients = vec![to];
    if to != &own.jid {
        recipients.push(&own.jid);
    }
    let mut all = Vec::new();
    let mut over_limit = 0;
    for jid in recipients {
        let skip = (jid == &own.jid).then_some(own.device_id);
        let (mut chosen, over) = chosen_devices(store, jid, skip, priority)?;
        if let Some((device, namespace)) = asked_by.filter(|_| jid != &own.jid) {
            include_answered(store, jid, device, namespace, &mut chosen)?;
        }
        if over > 0 {
            tracing::debug!(%jid, over, "more devices than one message is encrypted for");
        }
        over_limit += over;
        all.extend(chosen.into_iter().map(|c| (jid.clone(), c)));
    }
    Ok((all, over_limit))
}

/// Adds `device` of `jid`, the sender of the message being answered, to `chosen` in
/// `namespace` when no device list of that version lists it but we hold a session with it
/// there: the answer reaches the device that asked (a fresh Profanity account, say, has no
/// legacy device-list node; LEGACY-NOTES §12).
pub(super) fn include_answered(
    store: &Store,
    jid: &BareJid,
    device: DeviceId,
    namespace: Namespace,
    chosen: &mut Vec<Chosen>,
) -> Result<(), StoreError> {
    if chosen.iter().any(|c| c.device == device) {
        return Ok(());
    }
    if store
        .load_session(namespace, jid.as_str(), device)?
        .is_some()
    {
        chosen.push(Chosen {
            device,
            namespace,
            has_session: true,
        });
    }
    Ok(())
}

/// The SCE envelope of a message from us (`from`) to `to` with `content`, stamped now and
/// padded at random, as bytes to encrypt.
pub(super) fn sealed_envelope(
    content: Vec<Element>,
    from: &BareJid,
    to: &BareJid,
) -> Result<Vec<u8>, omemo_pep::Error> {
    sce::Envelope::new(
        content,
        from.clone(),
        to.clone(),
        Some(xmpp_parsers::date::DateTime(
            chrono::Utc::now().fixed_offset(),
        )),
        &mut OsRng,
    )
    .to_bytes()
}

/// A stanza as kept in the outbox (and sent), refused if a server would refuse it. Written
/// from the stanza itself, without a copy of it as an element tree.
pub(super) fn stanza_text(message: &Message) -> Result<String, OmemoError> {
    let unwritable = |e: String| OmemoError::Xml(omemo_pep::Error::InvalidXml(e));
    let bytes = xso::to_vec(message).map_err(|e| unwritable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| unwritable(e.to_string()))?;
    check_size(text.len())?;
    Ok(text)
}

/// Refuses a stanza of `bytes` bytes if it is over [`MAX_STANZA_BYTES`].
pub(crate) fn check_size(bytes: usize) -> Result<(), OmemoError> {
    if bytes > MAX_STANZA_BYTES {
        return Err(OmemoError::StanzaTooLarge {
            bytes,
            limit: MAX_STANZA_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use atm_trust::ListedDevice;
    use omemo_crypto::HEARTBEAT_THRESHOLD;

    const NS: Namespace = Namespace::Omemo2;

    /// A deterministic random source (SplitMix64), so that a run replays exactly.
    struct TestRng(u64);

    impl rand_core::RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let bytes = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    // Test-only: deterministic, not secret.
    impl rand_core::CryptoRng for TestRng {}

    pub(in crate::omemo) const T0: u64 = 1_700_000_000;

    /// One account's device on an in-memory store.
    pub(in crate::omemo) struct Peer {
        pub(in crate::omemo) store: Store,
        pub(in crate::omemo) own: OwnIdentity,
        rng: TestRng,
    }

    impl Peer {
        pub(in crate::omemo) fn new(jid: &str, seed: u64) -> Self {
            let mut rng = TestRng(seed);
            let mut store = Store::open_in_memory().unwrap();
            let device = store
                .load_or_create_own_device(jid, Some("test"), &mut rng, T0)
                .unwrap();
            store.rotate_signed_pre_key(&mut rng, T0).unwrap();
            store.ensure_pre_keys(5, &mut rng, T0).unwrap();
            store
                .rotate_signed_pre_key_for(Namespace::Legacy, &mut rng, T0)
                .unwrap();
            store
                .ensure_pre_keys_for(Namespace::Legacy, 5, &mut rng, T0)
                .unwrap();
            let own = OwnIdentity {
                jid: BareJid::new(jid).unwrap(),
                device_id: device.device_id(),
                identity: omemo_crypto::hazmat::identity_from_seed(
                    &omemo_crypto::hazmat::identity_seed(device.identity()),
                ),
                label: "test".to_owned(),
            };
            Self { store, own, rng }
        }

        fn engine(&mut self, now: u64) -> Engine<'_, TestRng> {
            Engine {
                store: &mut self.store,
                own: &self.own,
                policy: TrustPolicy::Toakafa,
                now,
                rng: &mut self.rng,
            }
        }

        pub(in crate::omemo) fn bundle(&self) -> Bundle {
            let spk = self.store.current_signed_pre_key().unwrap().unwrap();
            let pre_keys = self.store.unused_pre_keys().unwrap();
            Bundle::from_own_keys(&self.own.identity, &spk, &pre_keys).unwrap()
        }

        /// Lists `other`'s device as the one device of its account.
        pub(in crate::omemo) fn lists(&mut self, other: &Peer) {
            let listed = [ListedDevice {
                device_id: other.own.device_id,
                label: None,
                label_verified: false,
            }];
            self.store
                .update_device_list(NS, other.own.jid.as_str(), &listed, T0)
                .unwrap();
        }

        /// Encrypts `text` to `to` in OMEMO 2 (inside an SCE envelope), with its bundle when
        /// given; returns the stanza.
        pub(in crate::omemo) fn send(
            &mut self,
            to: &Peer,
            text: &str,
            bundle: Option<Bundle>,
            now: u64,
        ) -> Message {
            let envelope = sce::Envelope::new(
                vec![sce::Envelope::body_element(text)],
                self.own.jid.clone(),
                to.own.jid.clone(),
                None,
                &mut self.rng,
            )
            .to_bytes()
            .unwrap();
            self.encrypt_to::<Omemo2>(to, &envelope, bundle, "s1", now)
        }

        /// Encrypts `plaintext` to `to`'s one device in version `V`, with its bundle when
        /// given; checks that exactly that device got it and that the stanza is in the outbox
        /// before anything is sent; returns the stanza.
        fn encrypt_to<V: Flavour>(
            &mut self,
            to: &Peer,
            plaintext: &[u8],
            bundle: Option<V::Bundle>,
            stanza_id: &str,
            now: u64,
        ) -> Message {
            let devices = [(to.own.jid.clone(), to.own.device_id)];
            let bundles = bundle
                .map(|b| vec![(to.own.jid.clone(), to.own.device_id, b)])
                .unwrap_or_default();
            let (message, report, outbox_id) = self
                .engine(now)
                .encrypt::<V>(Outgoing {
                    accept: |_| true,
                    devices: &devices,
                    to_required: true,
                    bundles,
                    plaintext,
                    to: &to.own.jid,
                    stanza_id,
                    answers: &[],
                    held: None,
                })
                .unwrap();
            assert_eq!(
                report.encrypted_for,
                vec![(to.own.jid.clone(), to.own.device_id)]
            );
            assert!(report.skipped.is_empty(), "{:?}", report.skipped);
            assert!(outbox_id > 0);
            message
        }

        /// Records `other`'s identity key for its device in `namespace`, as its bundle tells
        /// it (no device list named).
        pub(in crate::omemo) fn knows_identity_of(&mut self, other: &Peer, namespace: Namespace) {
            self.store
                .record_identity_key(
                    namespace,
                    other.own.jid.as_str(),
                    other.own.device_id,
                    &other.own.identity.public_key(),
                    TrustPolicy::Toakafa,
                    T0,
                )
                .unwrap();
        }

        /// Decrypts a stanza from `from`, keeping it in the inbox.
        pub(in crate::omemo) fn receive(
            &mut self,
            from: &Peer,
            message: &Message,
            now: u64,
        ) -> Result<DecryptOutcome, ReceiveError> {
            let encrypted = hints::find_encrypted(message).unwrap().unwrap();
            let header = Header {
                from: Jid::from(from.own.jid.clone()),
                id: message.id.as_ref().map(|id| id.0.clone()),
                type_: MessageType::Chat,
            };
            let me = self.own.jid.clone();
            self.engine(now)
                .decrypt::<Omemo2>(&encrypted, &from.own.jid, &me, Some(&header))
        }
    }

    /// A legacy client's session with `to`'s device, started from the legacy bundle its store
    /// publishes (with its first pre-key): the legacy crypto alone, as Profanity or
    /// Conversations would.
    pub(in crate::omemo) fn legacy_session_with(
        from: &Peer,
        to: &Peer,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> omemo_crypto::legacy::Session {
        let spk = to
            .store
            .current_signed_pre_key_for(Namespace::Legacy)
            .unwrap()
            .unwrap();
        let pre_keys = to.store.unused_pre_keys_for(Namespace::Legacy).unwrap();
        let bundle =
            omemo_crypto::legacy::Bundle::from_own_keys(&to.own.identity, &spk, &pre_keys).unwrap();
        omemo_crypto::legacy::Session::initiate(&from.own.identity, &bundle, pre_keys[0].id(), rng)
            .unwrap()
    }

    /// A legacy `<encrypted>` with `text` from `from`'s device to `to`'s, its key through
    /// `session`.
    pub(in crate::omemo) fn legacy_encrypted(
        session: &mut omemo_crypto::legacy::Session,
        from: &Peer,
        to: &Peer,
        text: &str,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> omemo_pep::legacy::EncryptedMessage {
        let payload = omemo_crypto::legacy::payload::encrypt(text.as_bytes(), rng);
        let key = session.encrypt(payload.key_material.as_bytes()).unwrap();
        omemo_pep::legacy::EncryptedMessage {
            sid: from.own.device_id,
            keys: vec![omemo_pep::legacy::EncryptedKey {
                rid: to.own.device_id,
                prekey: key.is_key_exchange(),
                data: key.to_bytes(),
            }],
            iv: payload.iv.to_vec(),
            payload: Some(payload.ciphertext),
        }
    }

    fn body(outcome: &DecryptOutcome) -> Option<String> {
        outcome.envelope.as_ref().and_then(sce::Envelope::body)
    }

    #[test]
    fn a_key_exchange_then_answers_both_ways() {
        let mut alice = Peer::new("alice@example.org", 1);
        let mut bob = Peer::new("bob@example.org", 2);
        alice.lists(&bob);
        let bundle = bob.bundle();
        let pre_keys_before = bob.store.unused_pre_keys().unwrap().len();

        let first = alice.send(&bob, "hello", Some(bundle), T0);
        let got = bob.receive(&alice, &first, T0).unwrap();
        assert_eq!(body(&got).as_deref(), Some("hello"));
        assert!(got.e2ee.key_exchange);
        assert!(got.used_pre_key, "the bundle is to be republished");
        assert_eq!(got.e2ee.identity_key, alice.own.identity.public_key());
        assert_eq!(
            bob.store.unused_pre_keys().unwrap().len(),
            pre_keys_before - 1
        );
        // Kept in the inbox by the same commit.
        let inbox = bob.store.inbox().unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(Some(inbox[0].id), got.inbox_id);

        // Bob answers on the session the key exchange built: no bundle needed.
        bob.lists(&alice);
        let answer = bob.send(&alice, "hi back", None, T0 + 1);
        let got = alice.receive(&bob, &answer, T0 + 1).unwrap();
        assert_eq!(body(&got).as_deref(), Some("hi back"));
        assert!(!got.e2ee.key_exchange);
        assert!(!got.used_pre_key);

        // Alice's next message is an ordinary one now.
        let next = alice.send(&bob, "again", None, T0 + 2);
        let got = bob.receive(&alice, &next, T0 + 2).unwrap();
        assert_eq!(body(&got).as_deref(), Some("again"));
        assert!(!got.e2ee.key_exchange);
    }

    #[test]
    fn an_answer_steps_the_session_in_hand_and_commits_with_the_message() {
        let mut alice = Peer::new("alice@example.org", 11);
        let mut bob = Peer::new("bob@example.org", 12);
        alice.lists(&bob);
        bob.lists(&alice);
        let first = alice.send(&bob, "hello", Some(bob.bundle()), T0);
        bob.receive(&alice, &first, T0).unwrap();
        let inbox_ids = |store: &Store| -> Vec<i64> {
            store.inbox().unwrap().into_iter().map(|m| m.id).collect()
        };
        let inbox_before = inbox_ids(&bob.store);
        assert_eq!(
            inbox_before.len(),
            1,
            "the first message waits in the inbox"
        );
        let outbox_before = bob.store.outbox().unwrap();

        let asked = alice.send(&bob, "echo this", None, T0 + 1);
        let encrypted = hints::find_encrypted(&asked).unwrap().unwrap();
        let (alice_jid, bob_jid) = (alice.own.jid.clone(), bob.own.jid.clone());
        let opened = bob
            .engine(T0 + 1)
            .open::<Omemo2>(&encrypted, &alice_jid, &bob_jid)
            .unwrap();
        let plaintext = sce::Envelope::new(
            vec![sce::Envelope::body_element("echoed")],
            bob_jid.clone(),
            alice_jid.clone(),
            None,
            &mut bob.rng,
        )
        .to_bytes()
        .unwrap();
        let devices = [(alice_jid.clone(), alice.own.device_id)];
        let sealed = bob
            .engine(T0 + 1)
            .seal::<Omemo2>(Outgoing {
                accept: |_| true,
                devices: &devices,
                to_required: true,
                bundles: Vec::new(),
                plaintext: &plaintext,
                to: &alice_jid,
                stanza_id: "answer",
                answers: &[],
                held: Some(opened.held()),
            })
            .unwrap();
        assert_eq!(sealed.report.encrypted_for, devices);
        // Nothing of either is stored before their commit.
        assert_eq!(bob.store.outbox().unwrap(), outbox_before);
        let outbox_id = opened.commit_answered(&mut bob.store, &sealed).unwrap();
        let outcome = opened.into_outcome(None);
        assert_eq!(body(&outcome).as_deref(), Some("echo this"));
        assert_eq!(outcome.inbox_id, None);
        assert_eq!(inbox_ids(&bob.store), inbox_before);
        let outbox = bob.store.outbox().unwrap();
        assert_eq!(outbox.last(), Some(&(outbox_id, sealed.text.clone())));
        assert_eq!(outbox.len(), outbox_before.len() + 1);

        // Bob's next message goes on from the answer's ratchet step, which the commit stored:
        // Alice reads both (a stored state without the answer's step would send the next
        // message with the answer's message key, a duplicate to Alice).
        let next = bob.send(&alice, "and more", None, T0 + 2);
        let got = alice.receive(&bob, &sealed.message, T0 + 2).unwrap();
        assert_eq!(body(&got).as_deref(), Some("echoed"));
        let got = alice.receive(&bob, &next, T0 + 2).unwrap();
        assert_eq!(body(&got).as_deref(), Some("and more"));
    }

    /// The stanzas `store`'s outbox keeps, read back from their text.
    fn outbox_stanzas(store: &Store) -> Vec<Message> {
        store
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(_, text)| Message::try_from(text.parse::<Element>().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn the_outbox_keeps_each_stanza_as_text_that_reads_back_as_the_same_stanza() {
        let mut alice = Peer::new("alice@example.org", 13);
        let bob = Peer::new("bob@example.org", 14);
        alice.lists(&bob);
        let first = alice.send(&bob, "kept <as> text & read 'back'", Some(bob.bundle()), T0);
        let second = alice.send(&bob, "and \"again\"", None, T0 + 1);
        assert_ne!(first, second);
        assert_eq!(outbox_stanzas(&alice.store), [first, second]);
    }

    #[test]
    fn a_replayed_or_misaddressed_message_is_refused_and_changes_nothing() {
        let mut alice = Peer::new("alice@example.org", 3);
        let mut bob = Peer::new("bob@example.org", 4);
        alice.lists(&bob);
        let message = alice.send(&bob, "once", Some(bob.bundle()), T0);
        bob.receive(&alice, &message, T0).unwrap();
        let state = bob
            .store
            .load_session(NS, alice.own.jid.as_str(), alice.own.device_id)
            .unwrap()
            .unwrap();

        let again = bob.receive(&alice, &message, T0 + 1);
        assert!(again.is_err(), "a replay decrypted");
        let after = bob
            .store
            .load_session(NS, alice.own.jid.as_str(), alice.own.device_id)
            .unwrap()
            .unwrap();
        assert_eq!(*state, *after);
        assert_eq!(bob.store.inbox().unwrap().len(), 1);

        // A third account is not a recipient of the stanza.
        let mut carol = Peer::new("carol@example.org", 5);
        assert!(matches!(
            carol.receive(&alice, &message, T0),
            Err(ReceiveError::NotForUs)
        ));
        // The same stanza claimed by another sender: the SCE affixes do not match (and
        // there is no session), so nothing is stored.
        let mut mallory = Peer::new("mallory@example.org", 6);
        mallory.own.device_id = alice.own.device_id;
        assert!(bob.receive(&mallory, &message, T0).is_err());
        assert_eq!(bob.store.inbox().unwrap().len(), 1);
    }

    #[test]
    fn an_empty_message_confirms_a_session_and_heartbeats_come_due() {
        let mut alice = Peer::new("alice@example.org", 7);
        let mut bob = Peer::new("bob@example.org", 8);
        alice.lists(&bob);
        let first = alice.send(&bob, "hello", Some(bob.bundle()), T0);
        bob.receive(&alice, &first, T0).unwrap();

        // Bob's confirmation: an empty message, kept in his outbox, no payload.
        let (outbox_id, empty) = bob
            .engine(T0)
            .empty_message::<Omemo2>(&alice.own.jid, alice.own.device_id, "e1")
            .unwrap()
            .unwrap();
        assert!(outbox_id > 0);
        let got = alice.receive(&bob, &empty, T0).unwrap();
        assert!(got.envelope.is_none());
        assert!(got.inbox_id.is_none(), "an empty message is not kept");
        // No session with an unknown device: nothing to send.
        let stranger = DeviceId::new(424_242).unwrap();
        assert!(bob
            .engine(T0)
            .empty_message::<Omemo2>(&alice.own.jid, stranger, "e2")
            .unwrap()
            .is_none());

        // Alice sends on without an answer: a heartbeat comes due at the threshold.
        let mut due = Vec::new();
        for i in 0..=HEARTBEAT_THRESHOLD {
            let message = alice.send(&bob, &format!("m{i}"), None, T0 + 1);
            due.push(bob.receive(&alice, &message, T0 + 1).unwrap().heartbeat_due);
        }
        let first_due = due.iter().position(|d| *d);
        assert!(first_due.is_some(), "no heartbeat came due");
        assert!(!due[0]);
    }

    #[test]
    fn a_session_is_rebuilt_from_the_bundle_after_a_message_without_one() {
        let mut alice = Peer::new("alice@example.org", 9);
        let mut bob = Peer::new("bob@example.org", 10);
        alice.lists(&bob);
        let first = alice.send(&bob, "hello", Some(bob.bundle()), T0);
        bob.receive(&alice, &first, T0).unwrap();
        // Once Bob answered, Alice's messages are no longer key exchanges.
        bob.lists(&alice);
        let answer = bob.send(&alice, "answer", None, T0);
        alice.receive(&bob, &answer, T0).unwrap();
        let second = alice.send(&bob, "lost", None, T0 + 1);
        // Bob loses the session: the next message cannot be decrypted.
        assert!(bob
            .store
            .delete_session(NS, alice.own.jid.as_str(), alice.own.device_id)
            .unwrap());
        assert!(matches!(
            bob.receive(&alice, &second, T0 + 1),
            Err(ReceiveError::NoSession)
        ));

        // Bob builds a new session from Alice's bundle, once.
        let alice_bundle = alice.bundle();
        let (jid, device) = (alice.own.jid.clone(), alice.own.device_id);
        assert!(bob
            .engine(T0 + 2)
            .build_session::<Omemo2>(&jid, device, &alice_bundle)
            .unwrap());
        assert!(!bob
            .engine(T0 + 2)
            .build_session::<Omemo2>(&jid, device, &alice_bundle)
            .unwrap());
        // The empty message that follows is a key exchange Alice accepts.
        let (_, empty) = bob
            .engine(T0 + 2)
            .empty_message::<Omemo2>(&jid, device, "e1")
            .unwrap()
            .unwrap();
        let got = alice.receive(&bob, &empty, T0 + 2).unwrap();
        assert!(got.e2ee.key_exchange);
        assert!(got.used_pre_key);
        // From then on Alice's messages decrypt again.
        let third = alice.send(&bob, "back", None, T0 + 3);
        let got = bob.receive(&alice, &third, T0 + 3).unwrap();
        assert_eq!(body(&got).as_deref(), Some("back"));

        // A bundle with another identity key for a known device is not used.
        let mut carol = Peer::new("carol@example.org", 11);
        bob.store
            .delete_session(NS, alice.own.jid.as_str(), alice.own.device_id)
            .unwrap();
        carol.own.device_id = device;
        assert!(!bob
            .engine(T0 + 4)
            .build_session::<Omemo2>(&jid, device, &carol.bundle())
            .unwrap());
        assert!(bob
            .store
            .load_session(NS, jid.as_str(), device)
            .unwrap()
            .is_none());
    }

    #[test]
    fn legacy_sessions_are_built_and_confirmed_with_key_transport_messages() {
        use omemo_crypto::legacy;
        let mut alice = Peer::new("alice@example.org", 15);
        let mut bob = Peer::new("bob@example.org", 16);
        let spk = alice
            .store
            .current_signed_pre_key_for(Namespace::Legacy)
            .unwrap()
            .unwrap();
        let pre_keys = alice.store.unused_pre_keys_for(Namespace::Legacy).unwrap();
        let bundle = legacy::Bundle::from_own_keys(&alice.own.identity, &spk, &pre_keys).unwrap();
        let (jid, device) = (alice.own.jid.clone(), alice.own.device_id);

        assert!(bob
            .engine(T0)
            .build_session::<Legacy>(&jid, device, &bundle)
            .unwrap());
        // The session is in the legacy namespace only, and the identity recorded is the
        // device's one identity (the Ed25519 form, as OMEMO 2 records it).
        assert!(bob
            .store
            .load_session(Namespace::Legacy, jid.as_str(), device)
            .unwrap()
            .is_some());
        assert!(bob
            .store
            .load_session(Namespace::Omemo2, jid.as_str(), device)
            .unwrap()
            .is_none());
        assert_eq!(
            bob.store.known_identity_key(jid.as_str(), device).unwrap(),
            Some(alice.own.identity.public_key())
        );
        // No OMEMO 2 session: no OMEMO 2 empty message.
        assert!(bob
            .engine(T0)
            .empty_message::<Omemo2>(&jid, device, "k0")
            .unwrap()
            .is_none());

        let (outbox_id, message) = bob
            .engine(T0)
            .empty_message::<Legacy>(&jid, device, "k1")
            .unwrap()
            .unwrap();
        assert!(outbox_id > 0);
        // A key-transport message: legacy element only, no fallback body, no payload.
        assert!(message.bodies.is_empty());
        assert!(hints::find_encrypted(&message).is_none());
        let encrypted = hints::find_legacy_encrypted(&message).unwrap().unwrap();
        assert_eq!(encrypted.sid, bob.own.device_id);
        assert!(encrypted.payload.is_none());
        assert_eq!(encrypted.iv.len(), 12);
        let key = encrypted.keys_for(device).next().unwrap();
        assert!(key.prekey);

        // Alice's side, with the crypto alone: the key exchange is from Bob's identity and
        // carries a bare 16-byte key.
        let legacy::KeyMessage::KeyExchange(kex) =
            legacy::KeyMessage::from_bytes(&key.data).unwrap()
        else {
            panic!("not a key exchange");
        };
        assert!(kex.identity_key().matches(&bob.own.identity.public_key()));
        let spk = alice
            .store
            .signed_pre_key_for(Namespace::Legacy, kex.signed_pre_key_id())
            .unwrap()
            .unwrap();
        let pk = alice
            .store
            .pre_key_for(Namespace::Legacy, kex.pre_key_id())
            .unwrap()
            .unwrap();
        let (_, decrypted) =
            legacy::Session::respond(&alice.own.identity, &spk, &pk, &kex, &mut alice.rng).unwrap();
        assert_eq!(decrypted.plaintext().len(), 16);
    }

    #[test]
    fn a_legacy_message_is_decrypted_once_the_senders_identity_is_known() {
        use omemo_crypto::legacy;
        let alice = Peer::new("alice@example.org", 17);
        let mut bob = Peer::new("bob@example.org", 18);
        let mut rng = TestRng(19);
        // Alice, with the legacy crypto alone, as a legacy client would.
        let mut to_bob = legacy_session_with(&alice, &bob, &mut rng);
        let pre_keys = bob.store.unused_pre_keys_for(Namespace::Legacy).unwrap();
        let first = legacy_encrypted(&mut to_bob, &alice, &bob, "hello legacy", &mut rng);
        let header = Header {
            from: Jid::from(alice.own.jid.clone()),
            id: Some("l1".to_owned()),
            type_: MessageType::Chat,
        };
        let (alice_jid, bob_jid) = (alice.own.jid.clone(), bob.own.jid.clone());
        let pre_keys_before = pre_keys.len();

        // The key exchange carries only the Curve25519 form of Alice's identity: without her
        // bundle's identity on record, nothing is decrypted and nothing stored.
        let unknown = bob
            .engine(T0)
            .decrypt::<Legacy>(&first, &alice_jid, &bob_jid, Some(&header));
        assert!(matches!(unknown, Err(ReceiveError::UnknownIdentity)));
        assert!(bob.store.inbox().unwrap().is_empty());
        assert!(bob
            .store
            .load_session(Namespace::Legacy, alice_jid.as_str(), alice.own.device_id)
            .unwrap()
            .is_none());

        // Once her bundle told us her identity, it decrypts.
        bob.knows_identity_of(&alice, Namespace::Legacy);
        let got = bob
            .engine(T0)
            .decrypt::<Legacy>(&first, &alice_jid, &bob_jid, Some(&header))
            .unwrap();
        assert_eq!(body(&got).as_deref(), Some("hello legacy"));
        assert!(got.e2ee.key_exchange);
        assert!(got.used_pre_key);
        assert_eq!(got.e2ee.identity_key, alice.own.identity.public_key());
        assert_eq!(
            bob.store
                .unused_pre_keys_for(Namespace::Legacy)
                .unwrap()
                .len(),
            pre_keys_before - 1
        );
        assert_eq!(bob.store.inbox().unwrap().len(), 1);
        // Nothing in the OMEMO 2 namespace.
        assert!(bob
            .store
            .load_session(Namespace::Omemo2, alice_jid.as_str(), alice.own.device_id)
            .unwrap()
            .is_none());

        // A tampered payload is refused and leaves the session as it was.
        let second = legacy_encrypted(&mut to_bob, &alice, &bob, "second", &mut rng);
        let state = bob
            .store
            .load_session(Namespace::Legacy, alice_jid.as_str(), alice.own.device_id)
            .unwrap()
            .unwrap();
        let mut tampered = legacy_encrypted(&mut to_bob, &alice, &bob, "third", &mut rng);
        if let Some(payload) = tampered.payload.as_mut() {
            payload[0] ^= 1;
        }
        assert!(matches!(
            bob.engine(T0)
                .decrypt::<Legacy>(&tampered, &alice_jid, &bob_jid, None),
            Err(ReceiveError::Payload(_))
        ));
        let after = bob
            .store
            .load_session(Namespace::Legacy, alice_jid.as_str(), alice.own.device_id)
            .unwrap()
            .unwrap();
        assert_eq!(*state, *after);
        // The untampered one still decrypts.
        let got = bob
            .engine(T0)
            .decrypt::<Legacy>(&second, &alice_jid, &bob_jid, None)
            .unwrap();
        assert_eq!(body(&got).as_deref(), Some("second"));

        // Bob confirms with a legacy key-transport message on the session the key exchange
        // built, and Alice's session accepts it.
        let (_, empty) = bob
            .engine(T0)
            .empty_message::<Legacy>(&alice_jid, alice.own.device_id, "k1")
            .unwrap()
            .unwrap();
        let encrypted = hints::find_legacy_encrypted(&empty).unwrap().unwrap();
        let key = encrypted.keys_for(alice.own.device_id).next().unwrap();
        assert!(!key.prekey);
        let message = legacy::KeyMessage::from_bytes(&key.data).unwrap();
        let decrypted = to_bob.decrypt(&message, &mut rng).unwrap();
        assert_eq!(decrypted.plaintext().len(), 16);
    }

    #[test]
    fn two_engines_talk_legacy_both_ways() {
        use omemo_crypto::legacy;
        let mut alice = Peer::new("alice@example.org", 20);
        let mut bob = Peer::new("bob@example.org", 21);
        let legacy_bundle = |peer: &Peer| {
            let spk = peer
                .store
                .current_signed_pre_key_for(Namespace::Legacy)
                .unwrap()
                .unwrap();
            let pre_keys = peer.store.unused_pre_keys_for(Namespace::Legacy).unwrap();
            legacy::Bundle::from_own_keys(&peer.own.identity, &spk, &pre_keys).unwrap()
        };
        let list = |store: &mut Store, peer: &Peer| {
            let listed = [ListedDevice {
                device_id: peer.own.device_id,
                label: None,
                label_verified: false,
            }];
            store
                .update_device_list(Namespace::Legacy, peer.own.jid.as_str(), &listed, T0)
                .unwrap();
            // What fetching the device's bundle would have recorded.
            store
                .record_identity_key(
                    Namespace::Legacy,
                    peer.own.jid.as_str(),
                    peer.own.device_id,
                    &peer.own.identity.public_key(),
                    TrustPolicy::Toakafa,
                    T0,
                )
                .unwrap();
        };
        list(&mut alice.store, &bob);
        list(&mut bob.store, &alice);
        let send = |from: &mut Peer, to: &Peer, text: &str, bundle: Option<legacy::Bundle>| {
            from.encrypt_to::<Legacy>(to, text.as_bytes(), bundle, "l", T0)
        };
        let receive = |to: &mut Peer, from: &Peer, message: &Message| {
            // Only a legacy element, with the fallback body legacy clients expect.
            assert!(hints::find_encrypted(message).is_none());
            assert_eq!(message.bodies.len(), 1);
            let encrypted = hints::find_legacy_encrypted(message).unwrap().unwrap();
            let me = to.own.jid.clone();
            to.engine(T0)
                .decrypt::<Legacy>(&encrypted, &from.own.jid, &me, None)
                .unwrap()
        };

        let first = send(&mut alice, &bob, "hi in legacy", Some(legacy_bundle(&bob)));
        let got = receive(&mut bob, &alice, &first);
        assert_eq!(body(&got).as_deref(), Some("hi in legacy"));
        assert!(got.e2ee.key_exchange);
        let answer = send(&mut bob, &alice, "answered in legacy", None);
        let got = receive(&mut alice, &bob, &answer);
        assert_eq!(body(&got).as_deref(), Some("answered in legacy"));
        assert!(!got.e2ee.key_exchange);
        let next = send(&mut alice, &bob, "and again", None);
        let got = receive(&mut bob, &alice, &next);
        assert_eq!(body(&got).as_deref(), Some("and again"));
        assert!(!got.e2ee.key_exchange);
        assert_eq!(outbox_stanzas(&alice.store), [first, next.clone()]);
        // A replay is refused.
        let encrypted = hints::find_legacy_encrypted(&next).unwrap().unwrap();
        let bob_jid = bob.own.jid.clone();
        assert!(matches!(
            bob.engine(T0)
                .decrypt::<Legacy>(&encrypted, &alice.own.jid, &bob_jid, None),
            Err(ReceiveError::Decryption(DecryptionError::Duplicate))
        ));
        // Without SCE nothing inside the encryption names the sender; the session is looked
        // up by the stanza's sender JID and device, so the same stanza from another JID finds
        // no session.
        let mallory = BareJid::new("mallory@example.org").unwrap();
        assert!(matches!(
            bob.engine(T0)
                .decrypt::<Legacy>(&encrypted, &mallory, &bob_jid, None),
            Err(ReceiveError::NoSession)
        ));
        // All of it in the legacy namespace.
        assert!(bob
            .store
            .load_session(
                Namespace::Omemo2,
                alice.own.jid.as_str(),
                alice.own.device_id
            )
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_same_inputs_give_the_same_stanzas() {
        let run = || {
            let mut alice = Peer::new("alice@example.org", 12);
            let bob = Peer::new("bob@example.org", 13);
            alice.lists(&bob);
            let message = alice.send(&bob, "replay", Some(bob.bundle()), T0);
            String::from(&Element::from(message))
        };
        let first = run();
        assert_eq!(first, run());
        // A different seed gives a different stanza (the comparison can fail).
        let mut alice = Peer::new("alice@example.org", 14);
        let bob = Peer::new("bob@example.org", 13);
        alice.lists(&bob);
        let other = alice.send(&bob, "replay", Some(bob.bundle()), T0);
        assert_ne!(first, String::from(&Element::from(other)));
    }

    #[test]
    fn a_message_is_encrypted_for_a_bounded_number_of_devices_sessions_first() {
        let mut store = Store::open_in_memory().unwrap();
        let bob = BareJid::new("bob@example.org").unwrap();
        let extra = 50;
        let count = u32::try_from(MAX_DEVICES_PER_MESSAGE + extra).unwrap();
        let listed: Vec<ListedDevice> = (1..=count)
            .map(|id| ListedDevice {
                device_id: DeviceId::new(id).unwrap(),
                label: None,
                label_verified: false,
            })
            .collect();
        store
            .update_device_list(NS, bob.as_str(), &listed, 0)
            .unwrap();
        // Sessions with the three highest ids, which sort last by id.
        let with_session: Vec<DeviceId> = (count - 2..=count)
            .map(|id| DeviceId::new(id).unwrap())
            .collect();
        for device in &with_session {
            store
                .store_session(NS, bob.as_str(), *device, b"state", 0)
                .unwrap();
        }
        let skip = DeviceId::new(1).unwrap();
        let (chosen, over_limit) = chosen_devices(&store, &bob, Some(skip), &[NS]).unwrap();
        assert_eq!(chosen.len(), MAX_DEVICES_PER_MESSAGE);
        assert_eq!(over_limit, extra - 1);
        let first: Vec<DeviceId> = chosen.iter().take(3).map(|c| c.device).collect();
        assert_eq!(first, with_session);
        assert!(chosen[..3].iter().all(|c| c.has_session));
        assert!(chosen[3..].iter().all(|c| !c.has_session));
        assert!(chosen.iter().all(|c| c.device != skip && c.namespace == NS));
        // Listed in no namespace of the priority: nobody.
        let (none, _) = chosen_devices(&store, &bob, None, &[Namespace::Legacy]).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn each_device_is_chosen_once_in_the_first_version_of_the_priority_that_lists_it() {
        let mut store = Store::open_in_memory().unwrap();
        let bob = BareJid::new("bob@example.org").unwrap();
        let id = |n: u32| DeviceId::new(n).unwrap();
        let listed = |ids: &[u32]| -> Vec<ListedDevice> {
            ids.iter()
                .map(|n| ListedDevice {
                    device_id: id(*n),
                    label: None,
                    label_verified: false,
                })
                .collect()
        };
        // 1 speaks both versions, 2 only OMEMO 2, 3 only legacy; 3 has a legacy session.
        store
            .update_device_list(Namespace::Omemo2, bob.as_str(), &listed(&[1, 2]), 0)
            .unwrap();
        store
            .update_device_list(Namespace::Legacy, bob.as_str(), &listed(&[1, 3]), 0)
            .unwrap();
        store
            .store_session(Namespace::Legacy, bob.as_str(), id(3), b"state", 0)
            .unwrap();
        let pick = |priority: &[Namespace]| -> Vec<(u32, Namespace, bool)> {
            let (chosen, over) = chosen_devices(&store, &bob, None, priority).unwrap();
            assert_eq!(over, 0);
            let mut picked: Vec<_> = chosen
                .iter()
                .map(|c| (c.device.get(), c.namespace, c.has_session))
                .collect();
            picked.sort_unstable_by_key(|p| p.0);
            picked
        };
        // A fresh message: OMEMO 2 where the device lists it, legacy otherwise.
        assert_eq!(
            pick(&Namespace::ALL),
            vec![
                (1, Namespace::Omemo2, false),
                (2, Namespace::Omemo2, false),
                (3, Namespace::Legacy, true),
            ]
        );
        // An answer to a legacy message stays in legacy: the OMEMO 2-only device is left out.
        assert_eq!(
            pick(&[Namespace::Legacy]),
            vec![(1, Namespace::Legacy, false), (3, Namespace::Legacy, true)]
        );
        assert_eq!(
            pick(&[Namespace::Omemo2]),
            vec![(1, Namespace::Omemo2, false), (2, Namespace::Omemo2, false)]
        );
        // Our own device is never a recipient.
        let (chosen, _) = chosen_devices(&store, &bob, Some(id(3)), &Namespace::ALL).unwrap();
        assert!(chosen.iter().all(|c| c.device != id(3)));
        assert_eq!(chosen.len(), 2);

        // An answer also reaches the unlisted device that asked, if we have a session with it
        // in the answer's version; not a device without one, and nothing twice.
        store
            .store_session(Namespace::Legacy, bob.as_str(), id(9), b"state", 0)
            .unwrap();
        let (mut chosen, _) = chosen_devices(&store, &bob, None, &[Namespace::Legacy]).unwrap();
        assert_eq!(chosen.len(), 2);
        include_answered(&store, &bob, id(9), Namespace::Legacy, &mut chosen).unwrap();
        assert_eq!(
            chosen.last(),
            Some(&Chosen {
                device: id(9),
                namespace: Namespace::Legacy,
                has_session: true
            })
        );
        for (device, namespace) in [
            (id(9), Namespace::Legacy),
            (id(8), Namespace::Legacy),
            (id(3), Namespace::Legacy),
        ] {
            include_answered(&store, &bob, device, namespace, &mut chosen).unwrap();
        }
        assert_eq!(chosen.len(), 3);
        let (mut chosen, _) = chosen_devices(&store, &bob, None, &[Namespace::Omemo2]).unwrap();
        include_answered(&store, &bob, id(9), Namespace::Omemo2, &mut chosen).unwrap();
        assert!(
            chosen.iter().all(|c| c.device != id(9)),
            "no OMEMO 2 session with 9"
        );
    }

    #[test]
    fn a_message_for_another_version_only_is_refused_unless_own_devices_may_take_it() {
        // The engine step of one version fails when the addressee has no device in it (the
        // manager then does not send that version's stanza), and succeeds for our own
        // devices alone only when asked to.
        let mut alice = Peer::new("alice@example.org", 30);
        let bob = Peer::new("bob@example.org", 31);
        alice.lists(&bob);
        let bundle = bob.bundle();
        let devices = [(bob.own.jid.clone(), bob.own.device_id)];
        let to = BareJid::new("carol@example.org").unwrap();
        for (to_required, succeeds) in [(true, false), (false, true)] {
            let outcome = alice.engine(T0).encrypt::<Omemo2>(Outgoing {
                accept: |_| true,
                devices: &devices,
                to_required,
                bundles: vec![(bob.own.jid.clone(), bob.own.device_id, bundle.clone())],
                plaintext: b"x",
                to: &to,
                stanza_id: "s",
                answers: &[],
                held: None,
            });
            match outcome {
                Ok((_, report, _)) => {
                    assert!(succeeds);
                    assert_eq!(report.encrypted_for, devices.to_vec());
                }
                Err(OmemoError::NoTrustedDevice(jid)) => {
                    assert!(!succeeds);
                    assert_eq!(jid, to);
                }
                Err(e) => panic!("{e}"),
            }
        }
        // No device at all: refused either way.
        assert!(matches!(
            alice.engine(T0).encrypt::<Omemo2>(Outgoing {
                accept: |_| true,
                devices: &[],
                to_required: false,
                bundles: Vec::new(),
                plaintext: b"x",
                to: &to,
                stanza_id: "s2",
                answers: &[],
                held: None,
            }),
            Err(OmemoError::NoTrustedDevice(_))
        ));
    }
}
