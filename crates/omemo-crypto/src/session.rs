//! A session with one remote device, in either OMEMO version: X3DH to start it, the Double
//! Ratchet to run it, and the key-exchange bookkeeping around them (XEP-0384 §protocol,
//! §usecases; legacy: XEP-0384 0.3 §5, LEGACY-NOTES §11). One generic type,
//! [`GenericSession<V>`]; [`Session`] is the OMEMO 2 instantiation (see [`crate::version`]).

use std::collections::VecDeque;

use prost::Message;
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecryptionError, EncryptionError, SessionCreationError, SnapshotError};
use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::kdf::Key32;
use crate::keys::{IdentityKeyPair, PreKey, SignedPreKey, X25519PublicKey};
use crate::ratchet::{
    Chain, Decrypted, Ratchet, RatchetKeyPair, SkippedKey, MAX_SKIPPED_KEYS, RETIRED_KEYS,
};
use crate::version::{KeyExchangeHeader, Omemo2, ProtocolVersion, Version};
use crate::x3dh;

/// Which side started the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We fetched the peer's bundle and sent the key exchange.
    Initiator,
    /// The peer's key exchange built the session.
    Responder,
}

/// An OMEMO 2 session (the name code written before legacy existed uses).
pub type Session = GenericSession<Omemo2>;

/// A session with one remote device, in the OMEMO version `V`.
///
/// The state is opaque; it leaves the crate only as versioned bytes through
/// [`GenericSession::snapshot`] and comes back through [`GenericSession::restore`]. Every
/// operation that fails leaves the session exactly as it was.
pub struct GenericSession<V: Version> {
    pub(crate) ratchet: Ratchet,
    role: Role,
    /// The X3DH header that built the session (ours if we initiated, the peer's otherwise).
    key_exchange: KeyExchangeHeader<V::IdentityKey>,
    /// For an initiator: whether the peer has answered, so the key exchange need not be
    /// repeated. Always true for a responder.
    confirmed: bool,
    peer_identity: V::IdentityKey,
}

impl<V: Version> Clone for GenericSession<V> {
    fn clone(&self) -> Self {
        Self {
            ratchet: self.ratchet.clone(),
            role: self.role,
            key_exchange: self.key_exchange,
            confirmed: self.confirmed,
            peer_identity: self.peer_identity,
        }
    }
}

impl<V: Version> core::fmt::Debug for GenericSession<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("version", &V::VERSION)
            .field("role", &self.role)
            .field("confirmed", &self.confirmed)
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

impl<V: Version> GenericSession<V> {
    /// Starts a session with the owner of `bundle` (active X3DH), using the pre-key
    /// `pre_key` (see [`crate::Bundle::choose_pre_key`]). Draws the ephemeral key and then
    /// the first ratchet key from `rng`.
    pub fn initiate(
        own: &IdentityKeyPair,
        bundle: &V::Bundle,
        pre_key: PreKeyId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SessionCreationError> {
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let (agreement, header) = x3dh::agree_active::<V>(own, bundle, pre_key, &ephemeral)?;
        let core = V::bundle_core(bundle);
        let ratchet = Ratchet::new_active(
            V::VERSION,
            agreement.shared_secret,
            agreement.associated_data,
            core.signed_pre_key(),
            RatchetKeyPair::generate(rng),
        )
        .map_err(|_| SessionCreationError::NonContributory)?;
        Ok(Self {
            ratchet,
            role: Role::Initiator,
            key_exchange: header,
            confirmed: false,
            peer_identity: V::identity_from_public(core.identity_key()),
        })
    }

    /// Builds a session from a peer's key exchange (passive X3DH) and decrypts the message in
    /// it. `signed_pre_key` and `pre_key` must be our keys with the ids the key exchange names.
    ///
    /// The caller checks, before this, that the sender's identity key is the one it expects
    /// for that device, and afterwards retires the used pre-key and answers with an empty
    /// message so the peer stops sending key exchanges.
    ///
    /// For legacy the key exchange carries the sender's identity in Curve25519 form only;
    /// compare it with the device's known identity through [`Version::identity_matches`].
    pub fn respond(
        own: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_key: &PreKey,
        key_exchange: &V::KeyExchange,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Decrypted), SessionCreationError> {
        let header = V::key_exchange_header(key_exchange);
        if header.signed_pre_key_id != signed_pre_key.id() {
            return Err(SessionCreationError::SignedPreKeyMismatch(
                header.signed_pre_key_id,
            ));
        }
        if header.pre_key_id != pre_key.id() {
            return Err(SessionCreationError::PreKeyMismatch(header.pre_key_id));
        }
        let agreement = x3dh::agree_passive::<V>(
            own,
            signed_pre_key,
            pre_key,
            &header.identity_key,
            &header.ephemeral_key,
        )?;
        let own_ratchet = RatchetKeyPair::from_secret(signed_pre_key.secret().clone());
        let mut ratchet = Ratchet::new_passive(
            V::VERSION,
            agreement.shared_secret,
            agreement.associated_data,
            own_ratchet,
        );
        let message = V::message_core(V::key_exchange_message(key_exchange));
        let decrypted = ratchet.decrypt(message, rng)?;
        let session = Self {
            ratchet,
            role: Role::Responder,
            key_exchange: header,
            confirmed: true,
            peer_identity: header.identity_key,
        };
        Ok((session, decrypted))
    }

    /// Encrypts one ratchet plaintext (key material). While an initiated session is not
    /// confirmed, the result is wrapped in the key exchange (`kex='true'`,
    /// `prekey='true'`).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<V::KeyMessage, EncryptionError> {
        let message = V::wrap_message(self.ratchet.encrypt(plaintext)?);
        if self.role == Role::Initiator && !self.confirmed {
            Ok(V::key_message_of_exchange(V::wrap_key_exchange(
                &self.key_exchange,
                message,
            )))
        } else {
            Ok(V::key_message_of_message(message))
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
        message: &V::KeyMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        let (key_exchange, inner) = V::key_message_parts(message);
        if let Some(kex) = key_exchange {
            if !self.was_built_by(kex) {
                return Err(DecryptionError::ForeignKeyExchange);
            }
        }
        let decrypted = self.ratchet.decrypt(V::message_core(inner), rng)?;
        self.confirmed = true;
        Ok(decrypted)
    }

    /// True if `key_exchange` is the one this (responder) session was built from.
    pub fn was_built_by(&self, key_exchange: &V::KeyExchange) -> bool {
        self.role == Role::Responder && self.key_exchange == V::key_exchange_header(key_exchange)
    }

    /// The remote device's identity key, in the form this version's key exchange carries
    /// (legacy: Curve25519, see [`Version::identity_matches`]).
    pub fn peer_identity_key(&self) -> V::IdentityKey {
        self.peer_identity
    }

    /// The OMEMO version of this session.
    pub fn version(&self) -> ProtocolVersion {
        V::VERSION
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

    /// The associated data `AD = IK_initiator ‖ IK_responder` (64 bytes in OMEMO 2; 66 in
    /// legacy, whose MAC orders the halves by direction).
    pub fn associated_data(&self) -> &[u8] {
        &self.ratchet.associated_data
    }

    /// Serializes the whole state: a version byte followed by a protobuf. Holds secrets;
    /// the buffer is wiped on drop.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let r = &self.ratchet;
        let mut state = SessionState {
            role_initiator: self.role == Role::Initiator,
            confirmed: self.confirmed,
            peer_identity: V::identity_bytes(&self.peer_identity),
            kex_pre_key_id: self.key_exchange.pre_key_id.get(),
            kex_signed_pre_key_id: self.key_exchange.signed_pre_key_id.get(),
            kex_identity_key: V::identity_bytes(&self.key_exchange.identity_key),
            kex_ephemeral_key: self.key_exchange.ephemeral_key.to_bytes().to_vec(),
            associated_data: r.associated_data.to_vec(),
            root_key: r.root_key.as_bytes().to_vec(),
            own_ratchet_secret: r.own.secret.to_bytes().to_vec(),
            own_ratchet_public: Some(r.own.public.to_bytes().to_vec()),
            peer_identity_derived: V::identity_derived(&self.peer_identity),
            kex_identity_derived: V::identity_derived(&self.key_exchange.identity_key),
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
            version: snapshot_version_tag(V::VERSION),
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
        let session = state.to_session::<V>();
        state.wipe();
        session
    }
}

/// The snapshot field that tells the versions apart; OMEMO 2 writes the default 0, which
/// protobuf leaves out, so its snapshots are the bytes they were before legacy existed.
fn snapshot_version_tag(version: ProtocolVersion) -> u32 {
    match version {
        ProtocolVersion::Omemo2 => 0,
        ProtocolVersion::Legacy => 1,
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
    #[prost(uint32, tag = "18")]
    version: u32,
    /// The public half of `own_ratchet_secret`, kept so that a restore need not derive it (an
    /// X25519 base-point multiplication, twice per echo). Snapshots written before it have
    /// none and derive it.
    #[prost(bytes = "vec", optional, tag = "19")]
    own_ratchet_public: Option<Vec<u8>>,
    /// What restoring `peer_identity` would derive (OMEMO 2: its X25519 form, which takes a
    /// point decompression and an inversion), kept for the same reason; none in legacy and in
    /// older snapshots.
    #[prost(bytes = "vec", optional, tag = "20")]
    peer_identity_derived: Option<Vec<u8>>,
    /// The same for `kex_identity_key`.
    #[prost(bytes = "vec", optional, tag = "21")]
    kex_identity_derived: Option<Vec<u8>>,
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

    fn to_session<V: Version>(&self) -> Result<GenericSession<V>, SnapshotError> {
        let corrupt = SnapshotError::Corrupt;
        if self.version != snapshot_version_tag(V::VERSION) {
            let other = ProtocolVersion::ALL
                .into_iter()
                .find(|v| snapshot_version_tag(*v) == self.version)
                .ok_or(corrupt("version"))?;
            return Err(SnapshotError::WrongVersion(other));
        }
        let x25519 =
            |bytes: &[u8], what| X25519PublicKey::from_bytes(bytes).map_err(|_| corrupt(what));
        let peer_identity =
            V::identity_from_snapshot(&self.peer_identity, self.peer_identity_derived.as_deref())
                .ok_or(corrupt("peer identity"))?;
        let key_exchange = KeyExchangeHeader {
            pre_key_id: PreKeyId::new(self.kex_pre_key_id).map_err(|_| corrupt("pre-key id"))?,
            signed_pre_key_id: SignedPreKeyId::new(self.kex_signed_pre_key_id)
                .map_err(|_| corrupt("signed pre-key id"))?,
            identity_key: V::identity_from_snapshot(
                &self.kex_identity_key,
                self.kex_identity_derived.as_deref(),
            )
            .ok_or(corrupt("key exchange identity"))?,
            ephemeral_key: x25519(&self.kex_ephemeral_key, "ephemeral key")?,
        };
        let identity_len = V::identity_bytes(&peer_identity).len();
        if self.associated_data.len() != 2 * identity_len {
            return Err(corrupt("associated data"));
        }
        let associated_data = self.associated_data.clone();
        let own_secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            self.own_ratchet_secret
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("ratchet secret"))?,
        );
        let own = match self.own_ratchet_public.as_deref() {
            Some(public) => RatchetKeyPair {
                secret: StaticSecret::from(*own_secret),
                public: x25519(public, "own ratchet public key")?,
            },
            None => RatchetKeyPair::from_secret(StaticSecret::from(*own_secret)),
        };
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
            version: V::VERSION,
            initiator: self.role_initiator,
        };
        Ok(GenericSession {
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

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::{Bundle, IdentityPublicKey};

    /// The state of a fresh session (initiator side), as a snapshot would store it.
    fn state() -> SessionState {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(SignedPreKeyId::new(1).unwrap(), &bob, 0, &mut rng);
        let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut rng);
        let bundle = Bundle::from_own_keys(&bob, &spk, [&pk]).unwrap();
        let session = Session::initiate(&alice, &bundle, pk.id(), &mut rng).unwrap();
        SessionState::decode(&session.snapshot()[1..]).unwrap()
    }

    fn snapshot_of(state: &SessionState) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_VERSION];
        state.encode(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_ratchet_public_key_is_stored_and_matches_the_secret() {
        let state = state();
        let secret: [u8; 32] = state.own_ratchet_secret.as_slice().try_into().unwrap();
        let derived = X25519PublicKey::from_secret(&StaticSecret::from(secret));
        assert_eq!(
            state.own_ratchet_public.as_deref(),
            Some(&derived.to_bytes()[..])
        );
    }

    /// Restores the snapshot of `state` written without what `strip` removes (as an older
    /// version wrote it), checks that it is the same session and that its next snapshot is
    /// the current one again, and returns it.
    fn restored_from_older(state: &SessionState, strip: fn(&mut SessionState)) -> Session {
        let current = snapshot_of(state);
        let mut older = state.clone();
        strip(&mut older);
        let older = snapshot_of(&older);
        assert_ne!(older, current);
        let restored = Session::restore(&older).unwrap();
        assert_eq!(&restored.snapshot()[..], &current[..]);
        restored
    }

    #[test]
    fn a_snapshot_without_the_public_key_derives_it() {
        restored_from_older(&state(), |older| older.own_ratchet_public = None);
    }

    #[test]
    fn the_identities_x25519_forms_are_stored_and_match_their_keys() {
        let state = state();
        for (encoded, derived) in [
            (&state.peer_identity, &state.peer_identity_derived),
            (&state.kex_identity_key, &state.kex_identity_derived),
        ] {
            let key = IdentityPublicKey::from_bytes(encoded).unwrap();
            assert_eq!(derived.as_deref(), Some(&key.to_x25519_bytes()[..]));
        }
    }

    #[test]
    fn a_snapshot_without_the_identities_x25519_forms_derives_them() {
        let state = state();
        let restored = restored_from_older(&state, |older| {
            older.peer_identity_derived = None;
            older.kex_identity_derived = None;
        });
        // The restored key is the one decoded from its encoding.
        let decoded = IdentityPublicKey::from_bytes(&state.peer_identity).unwrap();
        assert_eq!(restored.peer_identity_key(), decoded);
        assert_eq!(
            restored.peer_identity_key().fingerprint(),
            decoded.fingerprint()
        );
    }

    #[test]
    fn legacy_snapshots_keep_no_derived_identity_form() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate_legacy(SignedPreKeyId::new(1).unwrap(), &bob, 0, &mut rng);
        let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut rng);
        let bundle = crate::legacy::Bundle::from_own_keys(&bob, &spk, [&pk]).unwrap();
        let session =
            GenericSession::<crate::Legacy>::initiate(&alice, &bundle, pk.id(), &mut rng).unwrap();
        let state = SessionState::decode(&session.snapshot()[1..]).unwrap();
        assert_eq!(state.peer_identity_derived, None);
        assert_eq!(state.kex_identity_derived, None);
        let restored = GenericSession::<crate::Legacy>::restore(&session.snapshot()).unwrap();
        assert_eq!(&restored.snapshot()[..], &session.snapshot()[..]);
    }

    #[test]
    fn malformed_stored_derived_keys_are_refused() {
        type Spoil = fn(&mut SessionState);
        let cases: [(Spoil, &str); 3] = [
            (
                |state| state.own_ratchet_public = Some(vec![9; 31]),
                "own ratchet public key",
            ),
            (
                |state| state.peer_identity_derived = Some(vec![9; 31]),
                "peer identity",
            ),
            (
                |state| state.kex_identity_derived = Some(vec![9; 33]),
                "key exchange identity",
            ),
        ];
        // Positive control: the untouched state restores.
        assert!(Session::restore(&snapshot_of(&state())).is_ok());
        for (spoil, field) in cases {
            let mut state = state();
            spoil(&mut state);
            assert_eq!(
                Session::restore(&snapshot_of(&state)).unwrap_err(),
                SnapshotError::Corrupt(field)
            );
        }
    }
}
