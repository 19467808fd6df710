//! The Double Ratchet with OMEMO 2's parameters (XEP-0384 §protocol-double_ratchet).
//!
//! Variable names follow the Signal specification: `RK` root key, `DHs`/`DHr` own and peer
//! ratchet keys, `CKs`/`CKr` sending and receiving chain keys, `Ns`/`Nr` their counters,
//! `PN` the length of the previous sending chain, `MKSKIPPED` the skipped message keys.

use std::collections::VecDeque;

use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{DecryptionError, EncryptionError};
use crate::kdf::{kdf_ck, kdf_rk, CipherKeys, Key32, INFO_MESSAGE_KEY};
use crate::keys::X25519PublicKey;
use crate::wire::{AuthenticatedMessage, OmemoMessage};

/// Most message keys one message may make us skip in its chain (`MAX_SKIP`); python-omemo
/// and omemo_dart use 1000, XEP-0384 recommends about that.
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys kept per session; the oldest are evicted first (XEP-0384:
/// 1000 RECOMMENDED).
pub const MAX_SKIPPED_KEYS: usize = 1000;
/// XEP-0384 §rules: the first message with `n ≥ 53` on a receiving chain that we have not
/// answered calls for an empty message (heartbeat).
pub const HEARTBEAT_THRESHOLD: u32 = 53;
/// How many earlier peer ratchet keys are remembered to recognise late duplicates.
pub(crate) const RETIRED_KEYS: usize = 8;

/// Our current ratchet key pair `DHs`.
#[derive(Clone)]
pub(crate) struct RatchetKeyPair {
    pub(crate) secret: StaticSecret,
    pub(crate) public: X25519PublicKey,
}

impl RatchetKeyPair {
    pub(crate) fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }

    pub(crate) fn from_secret(secret: StaticSecret) -> Self {
        let public = X25519PublicKey::from_secret(&secret);
        Self { secret, public }
    }

    fn dh(&self, their: &X25519PublicKey) -> Result<Zeroizing<[u8; 32]>, DecryptionError> {
        let shared = self.secret.diffie_hellman(&their.to_dalek());
        if !shared.was_contributory() {
            return Err(DecryptionError::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// A symmetric-key chain: its key and the index of the next message.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) key: Key32,
    pub(crate) n: u32,
}

/// A message key kept for a message that has not arrived yet.
#[derive(Clone)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) n: u32,
    pub(crate) message_key: Key32,
}

/// What a successful decryption yields.
pub struct Decrypted {
    plaintext: Zeroizing<Vec<u8>>,
    heartbeat_due: bool,
}

impl Decrypted {
    /// The decrypted ratchet plaintext (the 48-byte key material, or 32 bytes for an empty
    /// OMEMO message).
    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }

    /// Takes the plaintext.
    pub fn into_plaintext(self) -> Zeroizing<Vec<u8>> {
        self.plaintext
    }

    /// True if XEP-0384 asks for an empty message now: this message had `n ≥ 53` on a
    /// receiving chain we have not answered yet.
    pub fn heartbeat_due(&self) -> bool {
        self.heartbeat_due
    }
}

impl core::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decrypted")
            .field("len", &self.plaintext.len())
            .field("heartbeat_due", &self.heartbeat_due)
            .finish()
    }
}

/// The state of one Double Ratchet.
#[derive(Clone)]
pub(crate) struct Ratchet {
    pub(crate) root_key: Key32,
    pub(crate) own: RatchetKeyPair,
    pub(crate) their: Option<X25519PublicKey>,
    pub(crate) sending: Option<Chain>,
    pub(crate) receiving: Option<Chain>,
    pub(crate) previous_sending_length: u32,
    pub(crate) skipped: VecDeque<SkippedKey>,
    pub(crate) retired: VecDeque<X25519PublicKey>,
    /// Whether we sent anything since the current receiving chain started.
    pub(crate) answered: bool,
    pub(crate) associated_data: [u8; 64],
}

impl Ratchet {
    /// Alice: `DHs` fresh, `DHr = SPK_B`, `RK, CKs = KDF_RK(SK, DH(DHs, DHr))`.
    pub(crate) fn new_active(
        shared_secret: Key32,
        associated_data: [u8; 64],
        their_signed_pre_key: X25519PublicKey,
        own: RatchetKeyPair,
    ) -> Result<Self, DecryptionError> {
        let dh = own.dh(&their_signed_pre_key)?;
        let (root_key, sending_key) = kdf_rk(&shared_secret, &dh);
        Ok(Self {
            root_key,
            own,
            their: Some(their_signed_pre_key),
            sending: Some(Chain {
                key: sending_key,
                n: 0,
            }),
            receiving: None,
            previous_sending_length: 0,
            skipped: VecDeque::new(),
            retired: VecDeque::new(),
            answered: true,
            associated_data,
        })
    }

    /// Bob: `DHs = SPK_B`, no chains until the first message arrives.
    pub(crate) fn new_passive(
        shared_secret: Key32,
        associated_data: [u8; 64],
        own: RatchetKeyPair,
    ) -> Self {
        Self {
            root_key: shared_secret,
            own,
            their: None,
            sending: None,
            receiving: None,
            previous_sending_length: 0,
            skipped: VecDeque::new(),
            retired: VecDeque::new(),
            answered: true,
            associated_data,
        }
    }

    /// `RatchetEncrypt`: one step of the sending chain.
    pub(crate) fn encrypt(
        &mut self,
        plaintext: &[u8],
    ) -> Result<AuthenticatedMessage, EncryptionError> {
        let chain = self
            .sending
            .as_mut()
            .ok_or(EncryptionError::NoSendingChain)?;
        let n = chain.n;
        let next_n = n.checked_add(1).ok_or(EncryptionError::CounterOverflow)?;
        let (next_key, message_key) = kdf_ck(&chain.key);
        chain.key = next_key;
        chain.n = next_n;

        let keys = CipherKeys::derive(message_key.as_bytes(), INFO_MESSAGE_KEY);
        let header = OmemoMessage {
            n,
            pn: self.previous_sending_length,
            dh_pub: self.own.public,
            ciphertext: keys.encrypt(plaintext),
        };
        let message = header.to_bytes();
        let mac = keys.mac(&[&self.associated_data, &message]);
        self.answered = true;
        Ok(AuthenticatedMessage::new(mac, message, header))
    }

    /// `RatchetDecrypt`. On error the state is left exactly as it was.
    pub(crate) fn decrypt(
        &mut self,
        message: &AuthenticatedMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        let mut next = self.clone();
        let decrypted = next.decrypt_in_place(message, rng)?;
        *self = next;
        Ok(decrypted)
    }

    fn decrypt_in_place(
        &mut self,
        message: &AuthenticatedMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        let header = message.header();
        if let Some(position) = self
            .skipped
            .iter()
            .position(|k| k.ratchet_key == header.dh_pub && k.n == header.n)
        {
            let skipped = self
                .skipped
                .remove(position)
                .ok_or(DecryptionError::Duplicate)?;
            let plaintext = self.open(&skipped.message_key, message)?;
            return Ok(Decrypted {
                plaintext,
                heartbeat_due: false,
            });
        }

        if self.their != Some(header.dh_pub) {
            if self.retired.contains(&header.dh_pub) {
                return Err(DecryptionError::Duplicate);
            }
            self.skip_rest_of_receiving_chain(header.pn);
            self.dh_ratchet(header.dh_pub, rng)?;
        }

        let ratchet_key = header.dh_pub;
        let chain = self.receiving.as_mut().ok_or(DecryptionError::NoChain)?;
        if header.n < chain.n {
            return Err(DecryptionError::Duplicate);
        }
        let skip = header.n - chain.n;
        if skip > MAX_SKIP {
            return Err(DecryptionError::TooManySkipped {
                skipped: u64::from(skip),
                limit: MAX_SKIP,
            });
        }
        let mut new_skipped = Vec::with_capacity(skip as usize);
        while chain.n < header.n {
            let (next_key, message_key) = kdf_ck(&chain.key);
            new_skipped.push(SkippedKey {
                ratchet_key,
                n: chain.n,
                message_key,
            });
            chain.key = next_key;
            chain.n += 1;
        }
        let (next_key, message_key) = kdf_ck(&chain.key);
        chain.key = next_key;
        chain.n = header
            .n
            .checked_add(1)
            .ok_or(DecryptionError::CounterOverflow)?;
        self.remember_skipped(new_skipped);

        let plaintext = self.open(&message_key, message)?;
        Ok(Decrypted {
            plaintext,
            heartbeat_due: !self.answered && header.n >= HEARTBEAT_THRESHOLD,
        })
    }

    /// Keeps the keys of the current receiving chain up to `pn` before a DH step. Like
    /// python-omemo, a gap larger than `MAX_SKIP` is not derived at all (those messages are
    /// lost) rather than making the session unusable.
    fn skip_rest_of_receiving_chain(&mut self, pn: u32) {
        let (Some(chain), Some(ratchet_key)) = (self.receiving.as_mut(), self.their) else {
            return;
        };
        if pn <= chain.n || pn - chain.n > MAX_SKIP {
            return;
        }
        let mut new_skipped = Vec::with_capacity((pn - chain.n) as usize);
        while chain.n < pn {
            let (next_key, message_key) = kdf_ck(&chain.key);
            new_skipped.push(SkippedKey {
                ratchet_key,
                n: chain.n,
                message_key,
            });
            chain.key = next_key;
            chain.n += 1;
        }
        self.remember_skipped(new_skipped);
    }

    fn remember_skipped(&mut self, keys: Vec<SkippedKey>) {
        self.skipped.extend(keys);
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
    }

    /// `DHRatchet`: a new receiving chain from the peer's new key, then a new own key and
    /// sending chain.
    fn dh_ratchet(
        &mut self,
        their_new: X25519PublicKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), DecryptionError> {
        if let Some(old) = self.their.replace(their_new) {
            self.retired.push_back(old);
            while self.retired.len() > RETIRED_KEYS {
                self.retired.pop_front();
            }
        }
        self.previous_sending_length = self.sending.as_ref().map_or(0, |c| c.n);

        let dh = self.own.dh(&their_new)?;
        let (root_key, receiving_key) = kdf_rk(&self.root_key, &dh);
        self.root_key = root_key;
        self.receiving = Some(Chain {
            key: receiving_key,
            n: 0,
        });

        self.own = RatchetKeyPair::generate(rng);
        let dh = self.own.dh(&their_new)?;
        let (root_key, sending_key) = kdf_rk(&self.root_key, &dh);
        self.root_key = root_key;
        self.sending = Some(Chain {
            key: sending_key,
            n: 0,
        });
        self.answered = false;
        Ok(())
    }

    fn open(
        &self,
        message_key: &Key32,
        message: &AuthenticatedMessage,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptionError> {
        let keys = CipherKeys::derive(message_key.as_bytes(), INFO_MESSAGE_KEY);
        if !keys.verify_mac(
            &[&self.associated_data, message.message_bytes()],
            message.mac(),
        ) {
            return Err(DecryptionError::BadMac);
        }
        keys.decrypt(&message.header().ciphertext)
            .ok_or(DecryptionError::BadCiphertext)
    }
}
