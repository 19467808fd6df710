//! An OMEMO 2 session with one remote device: X3DH to start it, the Double Ratchet to run it,
//! and the key-exchange bookkeeping around them (XEP-0384 §protocol, §usecases).

use std::collections::VecDeque;

use prost::Message;
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecryptionError, EncryptionError, SessionCreationError, SnapshotError};
use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::kdf::Key32;
use crate::keys::{
    Bundle, IdentityKeyPair, IdentityPublicKey, PreKey, SignedPreKey, X25519PublicKey,
};
use crate::ratchet::{
    Chain, Decrypted, Ratchet, RatchetKeyPair, SkippedKey, MAX_SKIPPED_KEYS, RETIRED_KEYS,
};
use crate::wire::{KeyExchange, KeyExchangeHeader, KeyMessage};
use crate::x3dh;

/// Which side started the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We fetched the peer's bundle and sent the key exchange.
    Initiator,
    /// The peer's key exchange built the session.
    Responder,
}

/// A session with one remote device.
///
/// The state is opaque; it leaves the crate only as versioned bytes through
/// [`Session::snapshot`] and comes back through [`Session::restore`]. Every operation that
/// fails leaves the session exactly as it was.
#[derive(Clone)]
pub struct Session {
    pub(crate) ratchet: Ratchet,
    role: Role,
    /// The X3DH header that built the session (ours if we initiated, the peer's otherwise).
    key_exchange: KeyExchangeHeader,
    /// For an initiator: whether the peer has answered, so the key exchange need not be
    /// repeated. Always true for a responder.
    confirmed: bool,
    peer_identity: IdentityPublicKey,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("confirmed", &self.confirmed)
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session with the owner of `bundle` (active X3DH), using the pre-key
    /// `pre_key` (see [`Bundle::choose_pre_key`]). Draws the ephemeral key and then the first
    /// ratchet key from `rng`.
    pub fn initiate(
        own: &IdentityKeyPair,
        bundle: &Bundle,
        pre_key: PreKeyId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SessionCreationError> {
        let (agreement, parameters) = x3dh::active(own, bundle, pre_key, rng)?;
        let ratchet = Ratchet::new_active(
            agreement.shared_secret.clone(),
            agreement.associated_data,
            bundle.signed_pre_key(),
            RatchetKeyPair::generate(rng),
        )
        .map_err(|_| SessionCreationError::NonContributory)?;
        Ok(Self {
            ratchet,
            role: Role::Initiator,
            key_exchange: parameters.0,
            confirmed: false,
            peer_identity: bundle.identity_key(),
        })
    }

    /// Builds a session from a peer's key exchange (passive X3DH) and decrypts the message in
    /// it. `signed_pre_key` and `pre_key` must be our keys with the ids the key exchange names.
    ///
    /// The caller checks, before this, that the sender's identity key is the one it expects
    /// for that device, and afterwards retires the used pre-key and answers with an empty
    /// message so the peer stops sending key exchanges.
    pub fn respond(
        own: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_key: &PreKey,
        key_exchange: &KeyExchange,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Decrypted), SessionCreationError> {
        if key_exchange.signed_pre_key_id() != signed_pre_key.id() {
            return Err(SessionCreationError::SignedPreKeyMismatch(
                key_exchange.signed_pre_key_id(),
            ));
        }
        if key_exchange.pre_key_id() != pre_key.id() {
            return Err(SessionCreationError::PreKeyMismatch(
                key_exchange.pre_key_id(),
            ));
        }
        let agreement = x3dh::passive(
            own,
            signed_pre_key,
            pre_key,
            &key_exchange.identity_key(),
            &key_exchange.ephemeral_key(),
        )?;
        let own_ratchet = RatchetKeyPair::from_secret(signed_pre_key.secret().clone());
        let mut ratchet = Ratchet::new_passive(
            agreement.shared_secret.clone(),
            agreement.associated_data,
            own_ratchet,
        );
        let decrypted = ratchet.decrypt(key_exchange.message(), rng)?;
        let session = Self {
            ratchet,
            role: Role::Responder,
            key_exchange: key_exchange.header(),
            confirmed: true,
            peer_identity: key_exchange.identity_key(),
        };
        Ok((session, decrypted))
    }

    /// Encrypts one ratchet plaintext (key material). While an initiated session is not
    /// confirmed, the result is wrapped in the key exchange (`kex='true'`).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<KeyMessage, EncryptionError> {
        let message = self.ratchet.encrypt(plaintext)?;
        if self.role == Role::Initiator && !self.confirmed {
            Ok(KeyMessage::KeyExchange(KeyExchange::new(
                &self.key_exchange,
                message,
            )))
        } else {
            Ok(KeyMessage::Message(message))
        }
    }

    /// Decrypts a message that arrived on this session.
    ///
    /// A key exchange is accepted only if it is the one that built this session (a repeat
    /// of the initiator's header); any other key exchange yields
    /// [`DecryptionError::ForeignKeyExchange`], and the caller builds a new session with
    /// [`Session::respond`] that replaces this one. On error the session is unchanged.
    pub fn decrypt(
        &mut self,
        message: &KeyMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        if let KeyMessage::KeyExchange(kex) = message {
            if !self.was_built_by(kex) {
                return Err(DecryptionError::ForeignKeyExchange);
            }
        }
        let decrypted = self.ratchet.decrypt(message.message(), rng)?;
        self.confirmed = true;
        Ok(decrypted)
    }

    /// True if `key_exchange` is the one this (responder) session was built from.
    pub fn was_built_by(&self, key_exchange: &KeyExchange) -> bool {
        self.role == Role::Responder && self.key_exchange == key_exchange.header()
    }

    /// The remote device's identity key.
    pub fn peer_identity_key(&self) -> IdentityPublicKey {
        self.peer_identity
    }

    /// Which side started the session.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the peer has answered an initiated session (always true for responders).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// The pre-key id the key exchange used.
    pub fn pre_key_id(&self) -> PreKeyId {
        self.key_exchange.pre_key_id
    }

    /// The signed pre-key id the key exchange used.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.key_exchange.signed_pre_key_id
    }

    /// How many messages we have sent on the current sending chain.
    pub fn sending_chain_length(&self) -> u32 {
        self.ratchet.sending.as_ref().map_or(0, |c| c.n)
    }

    /// How many messages we have received on the current receiving chain.
    pub fn receiving_chain_length(&self) -> u32 {
        self.ratchet.receiving.as_ref().map_or(0, |c| c.n)
    }

    /// The associated data `AD = IK_initiator ‖ IK_responder`.
    pub fn associated_data(&self) -> &[u8; 64] {
        &self.ratchet.associated_data
    }

    /// Serializes the whole state: a version byte followed by a protobuf. Holds secrets;
    /// the buffer is wiped on drop.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let r = &self.ratchet;
        let mut state = SessionState {
            role_initiator: self.role == Role::Initiator,
            confirmed: self.confirmed,
            peer_identity: self.peer_identity.to_bytes().to_vec(),
            kex_pre_key_id: self.key_exchange.pre_key_id.get(),
            kex_signed_pre_key_id: self.key_exchange.signed_pre_key_id.get(),
            kex_identity_key: self.key_exchange.identity_key.to_bytes().to_vec(),
            kex_ephemeral_key: self.key_exchange.ephemeral_key.to_bytes().to_vec(),
            associated_data: r.associated_data.to_vec(),
            root_key: r.root_key.as_bytes().to_vec(),
            own_ratchet_secret: r.own.secret.to_bytes().to_vec(),
            their_ratchet_key: r.their.map(|k| k.to_bytes().to_vec()),
            sending: r.sending.as_ref().map(ChainState::from_chain),
            receiving: r.receiving.as_ref().map(ChainState::from_chain),
            previous_sending_length: r.previous_sending_length,
            skipped: r
                .skipped
                .iter()
                .map(|k| SkippedState {
                    ratchet_key: k.ratchet_key.to_bytes().to_vec(),
                    n: k.n,
                    message_key: k.message_key.as_bytes().to_vec(),
                })
                .collect(),
            retired: r.retired.iter().map(|k| k.to_bytes().to_vec()).collect(),
            answered: r.answered,
        };
        let mut out = Zeroizing::new(Vec::with_capacity(1 + state.encoded_len()));
        out.push(SNAPSHOT_VERSION);
        // Encoding into a Vec only fails for lack of capacity, which Vec grows on demand.
        let _ = state.encode(&mut *out);
        state.wipe();
        out
    }

    /// Restores a state written by [`Session::snapshot`], checking every field.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (&version, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let mut state =
            SessionState::decode(body).map_err(|_| SnapshotError::Corrupt("protobuf"))?;
        let session = state.to_session();
        state.wipe();
        session
    }
}

const SNAPSHOT_VERSION: u8 = 1;

#[derive(Clone, PartialEq, Message)]
struct ChainState {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    n: u32,
}

impl ChainState {
    fn from_chain(chain: &Chain) -> Self {
        Self {
            key: chain.key.as_bytes().to_vec(),
            n: chain.n,
        }
    }

    fn to_chain(&self) -> Result<Chain, SnapshotError> {
        Ok(Chain {
            key: Key32::from_slice(&self.key).ok_or(SnapshotError::Corrupt("chain key"))?,
            n: self.n,
        })
    }
}

#[derive(Clone, PartialEq, Message)]
struct SkippedState {
    #[prost(bytes = "vec", tag = "1")]
    ratchet_key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    n: u32,
    #[prost(bytes = "vec", tag = "3")]
    message_key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct SessionState {
    #[prost(bool, tag = "1")]
    role_initiator: bool,
    #[prost(bool, tag = "2")]
    confirmed: bool,
    #[prost(bytes = "vec", tag = "3")]
    peer_identity: Vec<u8>,
    #[prost(uint32, tag = "4")]
    kex_pre_key_id: u32,
    #[prost(uint32, tag = "5")]
    kex_signed_pre_key_id: u32,
    #[prost(bytes = "vec", tag = "6")]
    kex_identity_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    kex_ephemeral_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "8")]
    associated_data: Vec<u8>,
    #[prost(bytes = "vec", tag = "9")]
    root_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    own_ratchet_secret: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "11")]
    their_ratchet_key: Option<Vec<u8>>,
    #[prost(message, optional, tag = "12")]
    sending: Option<ChainState>,
    #[prost(message, optional, tag = "13")]
    receiving: Option<ChainState>,
    #[prost(uint32, tag = "14")]
    previous_sending_length: u32,
    #[prost(message, repeated, tag = "15")]
    skipped: Vec<SkippedState>,
    #[prost(bytes = "vec", repeated, tag = "16")]
    retired: Vec<Vec<u8>>,
    #[prost(bool, tag = "17")]
    answered: bool,
}

impl SessionState {
    fn wipe(&mut self) {
        self.root_key.zeroize();
        self.own_ratchet_secret.zeroize();
        for chain in self.sending.iter_mut().chain(self.receiving.iter_mut()) {
            chain.key.zeroize();
        }
        for skipped in &mut self.skipped {
            skipped.message_key.zeroize();
        }
    }

    fn to_session(&self) -> Result<Session, SnapshotError> {
        let corrupt = SnapshotError::Corrupt;
        let x25519 =
            |bytes: &[u8], what| X25519PublicKey::from_bytes(bytes).map_err(|_| corrupt(what));
        let peer_identity = IdentityPublicKey::from_bytes(&self.peer_identity)
            .map_err(|_| corrupt("peer identity"))?;
        let key_exchange = KeyExchangeHeader {
            pre_key_id: PreKeyId::new(self.kex_pre_key_id).map_err(|_| corrupt("pre-key id"))?,
            signed_pre_key_id: SignedPreKeyId::new(self.kex_signed_pre_key_id)
                .map_err(|_| corrupt("signed pre-key id"))?,
            identity_key: IdentityPublicKey::from_bytes(&self.kex_identity_key)
                .map_err(|_| corrupt("key exchange identity"))?,
            ephemeral_key: x25519(&self.kex_ephemeral_key, "ephemeral key")?,
        };
        let associated_data: [u8; 64] = self
            .associated_data
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("associated data"))?;
        let own_secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            self.own_ratchet_secret
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("ratchet secret"))?,
        );
        let own = RatchetKeyPair::from_secret(StaticSecret::from(*own_secret));
        let their = self
            .their_ratchet_key
            .as_deref()
            .map(|k| x25519(k, "peer ratchet key"))
            .transpose()?;
        if self.skipped.len() > MAX_SKIPPED_KEYS || self.retired.len() > RETIRED_KEYS {
            return Err(corrupt("too many stored keys"));
        }
        let skipped = self
            .skipped
            .iter()
            .map(|k| {
                Ok(SkippedKey {
                    ratchet_key: x25519(&k.ratchet_key, "skipped key")?,
                    n: k.n,
                    message_key: Key32::from_slice(&k.message_key)
                        .ok_or(corrupt("skipped message key"))?,
                })
            })
            .collect::<Result<VecDeque<_>, SnapshotError>>()?;
        let retired = self
            .retired
            .iter()
            .map(|k| x25519(k, "retired key"))
            .collect::<Result<VecDeque<_>, SnapshotError>>()?;
        let ratchet = Ratchet {
            root_key: Key32::from_slice(&self.root_key).ok_or(corrupt("root key"))?,
            own,
            their,
            sending: self
                .sending
                .as_ref()
                .map(ChainState::to_chain)
                .transpose()?,
            receiving: self
                .receiving
                .as_ref()
                .map(ChainState::to_chain)
                .transpose()?,
            previous_sending_length: self.previous_sending_length,
            skipped,
            retired,
            answered: self.answered,
            associated_data,
        };
        Ok(Session {
            ratchet,
            role: if self.role_initiator {
                Role::Initiator
            } else {
                Role::Responder
            },
            key_exchange,
            confirmed: self.confirmed,
            peer_identity,
        })
    }
}
