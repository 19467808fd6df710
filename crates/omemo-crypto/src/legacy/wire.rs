//! The legacy message formats (libsignal `WhisperTextProtocol.proto`, python-oldmemo
//! `oldmemo.proto`): `0x33 ‖ WhisperMessage ‖ MAC₈` and `0x33 ‖ PreKeyWhisperMessage`.
//!
//! As for OMEMO 2, the prost types are private and the wrappers check what prost does not:
//! the version byte, every field python-oldmemo requires, 33-byte `0x05` keys, the MAC length
//! and the ciphertext shape. `registrationId` (libsignal fills it) is accepted and kept, never
//! required; we do not write it.

use prost::Message;

use crate::error::DecodeError;
use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::kdf::LEGACY_MAC_LEN;
use crate::keys::X25519PublicKey;
use crate::legacy::keys::{parse_public_key, serialize_public_key, IdentityKey};
use crate::version::{KeyExchangeHeader, RatchetHeader, RatchetMessage};
use crate::wire::{check_ciphertext, check_size};

/// The byte in front of both message types: message version 3 (high nibble) and current
/// version 3 (low nibble).
pub const VERSION_BYTE: u8 = 0x33;

#[derive(Clone, PartialEq, Message)]
struct WhisperMessageProto {
    #[prost(bytes = "vec", optional, tag = "1")]
    ratchet_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    counter: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    previous_counter: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    ciphertext: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct PreKeyWhisperMessageProto {
    #[prost(uint32, optional, tag = "1")]
    pre_key_id: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    base_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    identity_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    message: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "5")]
    registration_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    signed_pre_key_id: Option<u32>,
}

/// `0x33 ‖ WhisperMessage` for a header: the bytes the legacy MAC covers after the
/// associated data. Zero counters are emitted (proto2 presence), as python and libsignal do.
pub(crate) fn encode_versioned_message(header: &RatchetHeader) -> Vec<u8> {
    let proto = WhisperMessageProto {
        ratchet_key: Some(serialize_public_key(&header.dh_pub).to_vec()),
        counter: Some(header.n),
        previous_counter: Some(header.pn),
        ciphertext: Some(header.ciphertext.clone()),
    };
    let mut out = Vec::with_capacity(1 + proto.encoded_len() + LEGACY_MAC_LEN);
    out.push(VERSION_BYTE);
    // Encoding into a Vec only fails for lack of capacity, which Vec grows on demand.
    let _ = proto.encode(&mut out);
    out
}

fn split_version(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&VERSION_BYTE, rest)) => Ok(rest),
        Some((&other, _)) => Err(DecodeError::UnsupportedVersion(other)),
    }
}

/// A legacy ratchet message (libsignal `SignalMessage`): `0x33 ‖ WhisperMessage ‖ MAC₈`,
/// the content of a `<key>` without `prekey`.
///
/// The versioned bytes are kept exactly as received, because the MAC covers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperMessage {
    core: RatchetMessage,
}

impl WhisperMessage {
    pub(crate) fn from_core(core: RatchetMessage) -> Self {
        Self { core }
    }

    pub(crate) fn core(&self) -> &RatchetMessage {
        &self.core
    }

    /// Parses and checks a `WhisperMessage`: version byte `0x33`, the 8-byte MAC at the end,
    /// a 33-byte `0x05` ratchet key, both counters, and a ciphertext of whole AES blocks.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        split_version(bytes)?;
        if bytes.len() < 1 + LEGACY_MAC_LEN {
            return Err(DecodeError::Protobuf);
        }
        let (versioned, mac) = bytes.split_at(bytes.len() - LEGACY_MAC_LEN);
        let body = versioned.get(1..).ok_or(DecodeError::Protobuf)?;
        let proto = WhisperMessageProto::decode(body).map_err(|_| DecodeError::Protobuf)?;
        let (Some(ratchet_key), Some(n), Some(pn)) =
            (proto.ratchet_key, proto.counter, proto.previous_counter)
        else {
            return Err(DecodeError::Protobuf);
        };
        let dh_pub =
            parse_public_key(&ratchet_key).map_err(|e| DecodeError::Key("ratchetKey", e))?;
        let ciphertext = proto.ciphertext.ok_or(DecodeError::MissingCiphertext)?;
        check_ciphertext(&ciphertext)?;
        Ok(Self {
            core: RatchetMessage {
                header: RatchetHeader {
                    n,
                    pn,
                    dh_pub,
                    ciphertext,
                },
                authenticated: versioned.to_vec(),
                mac: mac.to_vec(),
            },
        })
    }

    /// Serializes the message (`0x33 ‖ WhisperMessage ‖ MAC₈`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.core.authenticated.len() + self.core.mac.len());
        out.extend_from_slice(&self.core.authenticated);
        out.extend_from_slice(&self.core.mac);
        out
    }

    /// `counter`: the index in the sender's sending chain.
    pub fn counter(&self) -> u32 {
        self.core.header.n
    }

    /// `previousCounter`: python sends the length of its previous sending chain, libsignal
    /// the index of that chain's last message.
    pub fn previous_counter(&self) -> u32 {
        self.core.header.pn
    }

    /// `ratchetKey`: the sender's ratchet public key.
    pub fn ratchet_key(&self) -> X25519PublicKey {
        self.core.header.dh_pub
    }
}

/// A legacy key exchange (libsignal `PreKeySignalMessage`): `0x33 ‖ PreKeyWhisperMessage`,
/// the content of `<key prekey='true'>`, with the first [`WhisperMessage`] inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyWhisperMessage {
    header: KeyExchangeHeader<IdentityKey>,
    registration_id: Option<u32>,
    message: WhisperMessage,
}

impl PreKeyWhisperMessage {
    pub(crate) fn new(header: &KeyExchangeHeader<IdentityKey>, message: WhisperMessage) -> Self {
        Self {
            header: *header,
            registration_id: None,
            message,
        }
    }

    /// Parses and checks a `PreKeyWhisperMessage`. `preKeyId`, `signedPreKeyId`, `baseKey`,
    /// `identityKey` and `message` are required (python-oldmemo requires the one-time
    /// pre-key too); `registrationId` is optional and ignored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        let body = split_version(bytes)?;
        let proto = PreKeyWhisperMessageProto::decode(body).map_err(|_| DecodeError::Protobuf)?;
        let (Some(pk_id), Some(spk_id), Some(base_key), Some(identity_key), Some(message)) = (
            proto.pre_key_id,
            proto.signed_pre_key_id,
            proto.base_key,
            proto.identity_key,
            proto.message,
        ) else {
            return Err(DecodeError::Protobuf);
        };
        Ok(Self {
            header: KeyExchangeHeader {
                pre_key_id: PreKeyId::new(pk_id).map_err(DecodeError::Id)?,
                signed_pre_key_id: SignedPreKeyId::new(spk_id).map_err(DecodeError::Id)?,
                identity_key: IdentityKey::from_bytes(&identity_key)
                    .map_err(|e| DecodeError::Key("identityKey", e))?,
                ephemeral_key: parse_public_key(&base_key)
                    .map_err(|e| DecodeError::Key("baseKey", e))?,
            },
            registration_id: proto.registration_id,
            message: WhisperMessage::from_bytes(&message)?,
        })
    }

    /// Serializes the key exchange (`0x33 ‖ PreKeyWhisperMessage`, fields in number order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let proto = PreKeyWhisperMessageProto {
            pre_key_id: Some(self.header.pre_key_id.get()),
            base_key: Some(serialize_public_key(&self.header.ephemeral_key).to_vec()),
            identity_key: Some(self.header.identity_key.to_bytes().to_vec()),
            message: Some(self.message.to_bytes()),
            registration_id: self.registration_id,
            signed_pre_key_id: Some(self.header.signed_pre_key_id.get()),
        };
        let mut out = Vec::with_capacity(1 + proto.encoded_len());
        out.push(VERSION_BYTE);
        let _ = proto.encode(&mut out);
        out
    }

    /// `preKeyId`: the one-time pre-key the initiator used.
    pub fn pre_key_id(&self) -> PreKeyId {
        self.header.pre_key_id
    }

    /// `signedPreKeyId`.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.header.signed_pre_key_id
    }

    /// `identityKey`: the initiator's identity (Curve25519 form, no sign bit).
    pub fn identity_key(&self) -> IdentityKey {
        self.header.identity_key
    }

    /// `baseKey`: the initiator's ephemeral key `EK`.
    pub fn base_key(&self) -> X25519PublicKey {
        self.header.ephemeral_key
    }

    /// `registrationId`, if the sender (a libsignal client) set it.
    pub fn registration_id(&self) -> Option<u32> {
        self.registration_id
    }

    /// The ratchet message inside.
    pub fn message(&self) -> &WhisperMessage {
        &self.message
    }

    pub(crate) fn header(&self) -> KeyExchangeHeader<IdentityKey> {
        self.header
    }
}

/// The content of one legacy `<key>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMessage {
    /// `PreKeyWhisperMessage` (`prekey='true'`).
    KeyExchange(PreKeyWhisperMessage),
    /// `WhisperMessage`.
    Message(WhisperMessage),
}

impl KeyMessage {
    /// Parses the bytes of a `<key>` element. After the version byte, `0x0a` (field 1 as
    /// bytes: `ratchetKey`) starts a `WhisperMessage`; anything else is read as a
    /// `PreKeyWhisperMessage` (field 1 as varint: `preKeyId`). The `prekey` attribute is
    /// therefore not needed, which spares us its spellings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body = split_version(bytes)?;
        match body.first() {
            Some(0x0a) => WhisperMessage::from_bytes(bytes).map(Self::Message),
            Some(_) => PreKeyWhisperMessage::from_bytes(bytes).map(Self::KeyExchange),
            None => Err(DecodeError::Protobuf),
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::KeyExchange(kex) => kex.to_bytes(),
            Self::Message(message) => message.to_bytes(),
        }
    }

    /// Whether this is a key exchange (`prekey='true'`).
    pub fn is_key_exchange(&self) -> bool {
        matches!(self, Self::KeyExchange(_))
    }

    /// The ratchet message, inside a key exchange or not.
    pub fn message(&self) -> &WhisperMessage {
        match self {
            Self::KeyExchange(kex) => kex.message(),
            Self::Message(message) => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut raw = [0u8; 32];
        raw[0] = 9;
        let header = RatchetHeader {
            n: 0,
            pn: 0,
            dh_pub: X25519PublicKey::from_bytes(&raw).unwrap(),
            ciphertext: vec![0xab; 48],
        };
        let mut bytes = encode_versioned_message(&header);
        bytes.extend_from_slice(&[7; LEGACY_MAC_LEN]);
        bytes
    }

    #[test]
    fn round_trip_and_zero_counters() {
        let bytes = sample();
        // 1 + (2 + 33) + 2 + 2 + (2 + 48) + 8
        assert_eq!(bytes.len(), 98);
        assert_eq!(&bytes[..3], &[0x33, 0x0a, 0x21]);
        assert_eq!(&bytes[36..40], &[0x10, 0x00, 0x18, 0x00]);
        let parsed = KeyMessage::from_bytes(&bytes).unwrap();
        assert!(!parsed.is_key_exchange());
        assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let bytes = sample();
        // Wrong version byte (libsignal's pre-3 and unknown versions alike).
        for version in [0x22, 0x34, 0x00] {
            let mut other = bytes.clone();
            other[0] = version;
            assert_eq!(
                WhisperMessage::from_bytes(&other),
                Err(DecodeError::UnsupportedVersion(version))
            );
        }
        // A 32-byte ratchet key (OMEMO 2 form) or a wrong type byte.
        let mut wrong_type = bytes.clone();
        wrong_type[3] = 0x06;
        assert!(matches!(
            WhisperMessage::from_bytes(&wrong_type),
            Err(DecodeError::Key(
                "ratchetKey",
                crate::KeyError::UnknownKeyType(0x06)
            ))
        ));
        // Counters missing: drop `counter` (bytes 36..38).
        let mut no_counter = bytes.clone();
        no_counter.drain(36..38);
        assert_eq!(
            WhisperMessage::from_bytes(&no_counter),
            Err(DecodeError::Protobuf)
        );
        // Truncations never panic and never parse.
        for len in 0..bytes.len() {
            assert!(KeyMessage::from_bytes(&bytes[..len]).is_err(), "{len}");
        }
        assert_eq!(KeyMessage::from_bytes(&[]), Err(DecodeError::Empty));
        assert_eq!(KeyMessage::from_bytes(&[0x33]), Err(DecodeError::Protobuf));
    }
}
