//! The Double Ratchet, one core for both versions: OMEMO 2's parameters (XEP-0384
//! §protocol-double_ratchet) and legacy's (libsignal / python-oldmemo, LEGACY-NOTES §5).
//! The [`ProtocolVersion`] tag picks the HKDF infos, the MAC (16 bytes over `AD`, or 8 bytes
//! over `IK_sender ‖ IK_receiver`) and the message encoding; everything else is shared.
//!
//! Variable names follow the Signal specification: `RK` root key, `DHs`/`DHr` own and peer
//! ratchet keys, `CKs`/`CKr` sending and receiving chain keys, `Ns`/`Nr` their counters,
//! `PN` the length of the previous sending chain, `MKSKIPPED` the skipped message keys.

use std::collections::VecDeque;

use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::{DecryptionError, EncryptionError};
use crate::kdf::{
    kdf_ck, kdf_rk_with, CipherKeys, Key32, INFO_MESSAGE_KEY, INFO_ROOT_CHAIN,
    LEGACY_INFO_MESSAGE_KEY, LEGACY_INFO_ROOT_CHAIN, LEGACY_MAC_LEN, MAC_LEN,
};
use crate::keys::X25519PublicKey;
use crate::version::{ProtocolVersion, RatchetHeader, RatchetMessage};

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
    /// The decrypted ratchet plaintext: in OMEMO 2 the 48-byte key material, or 32 bytes
    /// for an empty message; in legacy the 32-byte key ‖ tag, or a bare 16-byte key for a
    /// key-transport message.
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
    /// `AD`: the identity keys, initiator first (64 bytes in OMEMO 2, 66 in legacy).
    pub(crate) associated_data: Vec<u8>,
    pub(crate) version: ProtocolVersion,
    /// Whether we are the X3DH initiator (legacy orders the MAC's `AD` by direction).
    pub(crate) initiator: bool,
}

impl Ratchet {
    /// Alice: `DHs` fresh, `DHr = SPK_B`, `RK, CKs = KDF_RK(SK, DH(DHs, DHr))`.
    pub(crate) fn new_active(
        version: ProtocolVersion,
        shared_secret: Key32,
        associated_data: Vec<u8>,
        their_signed_pre_key: X25519PublicKey,
        own: RatchetKeyPair,
    ) -> Result<Self, DecryptionError> {
        let dh = own.dh(&their_signed_pre_key)?;
        let (root_key, sending_key) = kdf_rk_with(&shared_secret, &dh, root_info(version));
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
            version,
            initiator: true,
        })
    }

    /// Bob: `DHs = SPK_B`, no chains until the first message arrives.
    pub(crate) fn new_passive(
        version: ProtocolVersion,
        shared_secret: Key32,
        associated_data: Vec<u8>,
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
            version,
            initiator: false,
        }
    }

    /// The associated data the MAC covers in one direction. OMEMO 2: `AD` both ways.
    /// Legacy: `IK_sender ‖ IK_receiver` (libsignal `SignalMessage.getMac`), i.e. `AD` with
    /// its halves swapped when the sender is the responder.
    fn mac_associated_data(&self, sending: bool) -> [&[u8]; 2] {
        let ad = &self.associated_data[..];
        match self.version {
            ProtocolVersion::Omemo2 => [ad, &[]],
            ProtocolVersion::Legacy => {
                let (first, second) = ad.split_at(ad.len() / 2);
                if sending == self.initiator {
                    [first, second]
                } else {
                    [second, first]
                }
            }
        }
    }

    /// `RatchetEncrypt`: one step of the sending chain.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage, EncryptionError> {
        let chain = self
            .sending
            .as_mut()
            .ok_or(EncryptionError::NoSendingChain)?;
        let n = chain.n;
        let next_n = n.checked_add(1).ok_or(EncryptionError::CounterOverflow)?;
        let (next_key, message_key) = kdf_ck(&chain.key);
        chain.key = next_key;
        chain.n = next_n;

        let keys = CipherKeys::derive(message_key.as_bytes(), message_info(self.version));
        let header = RatchetHeader {
            n,
            pn: self.previous_sending_length,
            dh_pub: self.own.public,
            ciphertext: keys.encrypt(plaintext),
        };
        let [ad1, ad2] = self.mac_associated_data(true);
        let (authenticated, mac) = match self.version {
            ProtocolVersion::Omemo2 => {
                let message = crate::wire::encode_omemo_message(&header);
                let mac = keys.mac(&[ad1, &message]).to_vec();
                (message, mac)
            }
            ProtocolVersion::Legacy => {
                let message = crate::legacy::wire::encode_versioned_message(&header);
                let mac = keys.mac_vec(&[ad1, ad2, &message], LEGACY_MAC_LEN);
                (message, mac)
            }
        };
        self.answered = true;
        Ok(RatchetMessage {
            header,
            authenticated,
            mac,
        })
    }

    /// `RatchetDecrypt`. On error the state is left exactly as it was.
    pub(crate) fn decrypt(
        &mut self,
        message: &RatchetMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        let mut next = self.clone();
        let decrypted = next.decrypt_in_place(message, rng)?;
        *self = next;
        Ok(decrypted)
    }

    fn decrypt_in_place(
        &mut self,
        message: &RatchetMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, DecryptionError> {
        let header = &message.header;
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
            // libsignal senders put the index of the last message of their previous chain
            // into `pn` (python and OMEMO 2: the chain's length), so legacy keeps one key
            // more: harmless for python senders, needed for libsignal's last message.
            let keep_until = match self.version {
                ProtocolVersion::Omemo2 => header.pn,
                ProtocolVersion::Legacy => header.pn.saturating_add(1),
            };
            self.skip_rest_of_receiving_chain(keep_until);
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

        let info = root_info(self.version);
        let dh = self.own.dh(&their_new)?;
        let (root_key, receiving_key) = kdf_rk_with(&self.root_key, &dh, info);
        self.root_key = root_key;
        self.receiving = Some(Chain {
            key: receiving_key,
            n: 0,
        });

        self.own = RatchetKeyPair::generate(rng);
        let dh = self.own.dh(&their_new)?;
        let (root_key, sending_key) = kdf_rk_with(&self.root_key, &dh, info);
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
        message: &RatchetMessage,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptionError> {
        let keys = CipherKeys::derive(message_key.as_bytes(), message_info(self.version));
        let [ad1, ad2] = self.mac_associated_data(false);
        let mac_len = match self.version {
            ProtocolVersion::Omemo2 => MAC_LEN,
            ProtocolVersion::Legacy => LEGACY_MAC_LEN,
        };
        if !keys.verify_mac_len(&[ad1, ad2, &message.authenticated], &message.mac, mac_len) {
            return Err(DecryptionError::BadMac);
        }
        keys.decrypt(&message.header.ciphertext)
            .ok_or(DecryptionError::BadCiphertext)
    }
}

fn root_info(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::Omemo2 => INFO_ROOT_CHAIN,
        ProtocolVersion::Legacy => LEGACY_INFO_ROOT_CHAIN,
    }
}

fn message_info(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::Omemo2 => INFO_MESSAGE_KEY,
        ProtocolVersion::Legacy => LEGACY_INFO_MESSAGE_KEY,
    }
}
