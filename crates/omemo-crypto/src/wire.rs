//! The protobuf messages of XEP-0384 §protobuf-schema (proto2, package `twomemo`).
//!
//! The prost types are private; the public wrappers check what prost does not: every
//! `required` field present, key lengths, the MAC length and the ciphertext shape. Encoding
//! emits `n`/`pn` even when zero (proto2 `required`), matching python-omemo and protobuf-c.

use prost::Message;

use crate::error::DecodeError;
use crate::ids::{PreKeyId, SignedPreKeyId};
use crate::kdf::MAC_LEN;
use crate::keys::{IdentityPublicKey, X25519PublicKey};
use crate::version::{KeyExchangeHeader, RatchetHeader, RatchetMessage};

/// Largest protobuf we accept for one `<key>` (a key exchange is ~200 bytes).
pub const MAX_KEY_MESSAGE_LEN: usize = 1024;

#[derive(Clone, PartialEq, Message)]
struct OmemoMessageProto {
    #[prost(uint32, required, tag = "1")]
    n: u32,
    #[prost(uint32, required, tag = "2")]
    pn: u32,
    #[prost(bytes = "vec", required, tag = "3")]
    dh_pub: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "4")]
    ciphertext: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct AuthenticatedMessageProto {
    #[prost(bytes = "vec", required, tag = "1")]
    mac: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    message: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyExchangeProto {
    #[prost(uint32, required, tag = "1")]
    pk_id: u32,
    #[prost(uint32, required, tag = "2")]
    spk_id: u32,
    #[prost(bytes = "vec", required, tag = "3")]
    ik: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "4")]
    ek: Vec<u8>,
    #[prost(message, required, tag = "5")]
    message: AuthenticatedMessageProto,
}

/// The OMEMO 2 encoding of the ratchet header (`OMEMOMessage`).
pub(crate) fn encode_omemo_message(header: &RatchetHeader) -> Vec<u8> {
    OmemoMessageProto {
        n: header.n,
        pn: header.pn,
        dh_pub: header.dh_pub.to_bytes().to_vec(),
        ciphertext: Some(header.ciphertext.clone()),
    }
    .encode_to_vec()
}

fn decode_omemo_message(bytes: &[u8]) -> Result<RatchetHeader, DecodeError> {
    // prost fills an absent `required` integer with 0 instead of failing; a header
    // without its counters is malformed, not "message 0".
    if !has_fields(bytes, &[1, 2]) {
        return Err(DecodeError::Protobuf);
    }
    let proto = OmemoMessageProto::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
    let dh_pub =
        X25519PublicKey::from_bytes(&proto.dh_pub).map_err(|e| DecodeError::Key("dh_pub", e))?;
    let ciphertext = proto.ciphertext.ok_or(DecodeError::MissingCiphertext)?;
    check_ciphertext(&ciphertext)?;
    Ok(RatchetHeader {
        n: proto.n,
        pn: proto.pn,
        dh_pub,
        ciphertext,
    })
}

/// An AES-256-CBC ciphertext is a non-empty whole number of blocks.
pub(crate) fn check_ciphertext(ciphertext: &[u8]) -> Result<(), DecodeError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(DecodeError::BadCiphertextLength(ciphertext.len()));
    }
    Ok(())
}

/// Whether the top level of the protobuf message `bytes` holds every field of `tags` (each
/// below 32); false for bytes that are not a well-formed sequence of fields.
pub(crate) fn has_fields(mut bytes: &[u8], tags: &[u32]) -> bool {
    let mut seen = 0u32;
    while !bytes.is_empty() {
        let Ok((tag, wire_type)) = prost::encoding::decode_key(&mut bytes) else {
            return false;
        };
        if tag < 32 {
            seen |= 1 << tag;
        }
        let context = prost::encoding::DecodeContext::default();
        if prost::encoding::skip_field(wire_type, tag, &mut bytes, context).is_err() {
            return false;
        }
    }
    tags.iter().all(|&tag| seen & (1 << tag) != 0)
}

/// An `OMEMOAuthenticatedMessage`: a 16-byte MAC and the serialized `OMEMOMessage` it covers.
///
/// The serialized message bytes are kept exactly as received, because the MAC is computed
/// over them; they are never re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedMessage {
    core: RatchetMessage,
}

impl AuthenticatedMessage {
    pub(crate) fn from_core(core: RatchetMessage) -> Self {
        Self { core }
    }

    pub(crate) fn core(&self) -> &RatchetMessage {
        &self.core
    }

    /// Parses and checks an `OMEMOAuthenticatedMessage`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        let proto = AuthenticatedMessageProto::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
        Self::from_proto(proto)
    }

    fn from_proto(proto: AuthenticatedMessageProto) -> Result<Self, DecodeError> {
        if proto.mac.len() != MAC_LEN {
            return Err(DecodeError::InvalidLength {
                field: "mac",
                expected: MAC_LEN,
                actual: proto.mac.len(),
            });
        }
        let header = decode_omemo_message(&proto.message)?;
        Ok(Self {
            core: RatchetMessage {
                header,
                authenticated: proto.message,
                mac: proto.mac,
            },
        })
    }

    fn to_proto(&self) -> AuthenticatedMessageProto {
        AuthenticatedMessageProto {
            mac: self.core.mac.clone(),
            message: self.core.authenticated.clone(),
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The counter `n` of the header.
    pub fn counter(&self) -> u32 {
        self.core.header.n
    }

    /// The previous-chain length `pn` of the header.
    pub fn previous_counter(&self) -> u32 {
        self.core.header.pn
    }

    /// The sender's ratchet public key.
    pub fn ratchet_key(&self) -> X25519PublicKey {
        self.core.header.dh_pub
    }
}

/// An `OMEMOKeyExchange`: the X3DH header (`pk_id`, `spk_id`, `ik`, `ek`) and the first
/// ratchet message. Sent with `kex='true'` until the session is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    pre_key_id: PreKeyId,
    signed_pre_key_id: SignedPreKeyId,
    identity_key: IdentityPublicKey,
    ephemeral_key: X25519PublicKey,
    message: AuthenticatedMessage,
}

impl KeyExchange {
    pub(crate) fn new(
        header: &KeyExchangeHeader<IdentityPublicKey>,
        message: AuthenticatedMessage,
    ) -> Self {
        Self {
            pre_key_id: header.pre_key_id,
            signed_pre_key_id: header.signed_pre_key_id,
            identity_key: header.identity_key,
            ephemeral_key: header.ephemeral_key,
            message,
        }
    }

    /// Parses and checks an `OMEMOKeyExchange`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        let proto = KeyExchangeProto::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
        Ok(Self {
            pre_key_id: PreKeyId::new(proto.pk_id).map_err(DecodeError::Id)?,
            signed_pre_key_id: SignedPreKeyId::new(proto.spk_id).map_err(DecodeError::Id)?,
            identity_key: IdentityPublicKey::from_bytes(&proto.ik)
                .map_err(|e| DecodeError::Key("ik", e))?,
            ephemeral_key: X25519PublicKey::from_bytes(&proto.ek)
                .map_err(|e| DecodeError::Key("ek", e))?,
            message: AuthenticatedMessage::from_proto(proto.message)?,
        })
    }

    /// Serializes the key exchange.
    pub fn to_bytes(&self) -> Vec<u8> {
        KeyExchangeProto {
            pk_id: self.pre_key_id.get(),
            spk_id: self.signed_pre_key_id.get(),
            ik: self.identity_key.to_bytes().to_vec(),
            ek: self.ephemeral_key.to_bytes().to_vec(),
            message: self.message.to_proto(),
        }
        .encode_to_vec()
    }

    /// The id of the one-time pre-key the initiator used.
    pub fn pre_key_id(&self) -> PreKeyId {
        self.pre_key_id
    }

    /// The id of the signed pre-key the initiator used.
    pub fn signed_pre_key_id(&self) -> SignedPreKeyId {
        self.signed_pre_key_id
    }

    /// The initiator's identity key.
    pub fn identity_key(&self) -> IdentityPublicKey {
        self.identity_key
    }

    /// The initiator's ephemeral key `EK`.
    pub fn ephemeral_key(&self) -> X25519PublicKey {
        self.ephemeral_key
    }

    /// The ratchet message inside.
    pub fn message(&self) -> &AuthenticatedMessage {
        &self.message
    }

    pub(crate) fn header(&self) -> KeyExchangeHeader<IdentityPublicKey> {
        KeyExchangeHeader {
            pre_key_id: self.pre_key_id,
            signed_pre_key_id: self.signed_pre_key_id,
            identity_key: self.identity_key,
            ephemeral_key: self.ephemeral_key,
        }
    }
}

/// The content of one `<key>` element: a key exchange or a plain ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMessage {
    /// `OMEMOKeyExchange` (`kex='true'`).
    KeyExchange(KeyExchange),
    /// `OMEMOAuthenticatedMessage`.
    Message(AuthenticatedMessage),
}

impl KeyMessage {
    /// Parses the bytes of a `<key>` element.
    ///
    /// The first byte tells the two types apart (`0x08`: field 1 as varint, `pk_id` of an
    /// `OMEMOKeyExchange`; `0x0a`: field 1 as bytes, `mac` of an `OMEMOAuthenticatedMessage`).
    /// The `kex` attribute is therefore not needed; QXmpp is known to send key exchanges
    /// without it (OMEMO2-NOTES §11.2).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(0x08) => KeyExchange::from_bytes(bytes).map(Self::KeyExchange),
            Some(0x0a) => AuthenticatedMessage::from_bytes(bytes).map(Self::Message),
            Some(_) => Err(DecodeError::Protobuf),
            None => Err(DecodeError::Empty),
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::KeyExchange(kex) => kex.to_bytes(),
            Self::Message(message) => message.to_bytes(),
        }
    }

    /// Whether this is a key exchange (the value of the `kex` attribute).
    pub fn is_key_exchange(&self) -> bool {
        matches!(self, Self::KeyExchange(_))
    }

    /// The ratchet message, inside a key exchange or not.
    pub fn message(&self) -> &AuthenticatedMessage {
        match self {
            Self::KeyExchange(kex) => kex.message(),
            Self::Message(message) => message,
        }
    }
}

pub(crate) fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_KEY_MESSAGE_LEN {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn encode_header_only(n: u32, pn: u32, dh_pub: &X25519PublicKey) -> Vec<u8> {
    OmemoMessageProto {
        n,
        pn,
        dh_pub: dh_pub.to_bytes().to_vec(),
        ciphertext: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthenticatedMessage {
        let mut raw = [0u8; 32];
        raw[0] = 9; // the X25519 base point, a valid key
        let header = RatchetHeader {
            n: 0,
            pn: 0,
            dh_pub: X25519PublicKey::from_bytes(&raw).unwrap(),
            ciphertext: vec![0xab; 64],
        };
        let message = encode_omemo_message(&header);
        AuthenticatedMessage::from_core(RatchetMessage {
            header,
            authenticated: message,
            mac: vec![7; MAC_LEN],
        })
    }

    #[test]
    fn a_header_without_its_counters_is_malformed() {
        let full = encode_omemo_message(&sample().core().header);
        assert!(decode_omemo_message(&full).is_ok());
        // Drop `n` (bytes 0..2) or `pn` (bytes 2..4); prost alone would read them as 0.
        for range in [0..2, 2..4] {
            let mut cut = full.clone();
            cut.drain(range.clone());
            assert!(
                matches!(decode_omemo_message(&cut), Err(DecodeError::Protobuf)),
                "{range:?}"
            );
        }
        assert!(
            !has_fields(&[0x08], &[1]),
            "a truncated varint is not a field"
        );
    }

    #[test]
    fn zero_counters_are_emitted() {
        let bytes = encode_omemo_message(&sample().core().header);
        assert_eq!(&bytes[..6], &[0x08, 0x00, 0x10, 0x00, 0x1a, 0x20]);
    }

    #[test]
    fn round_trip_and_dispatch() {
        let message = sample();
        let bytes = message.to_bytes();
        assert_eq!(bytes[0], 0x0a);
        let parsed = KeyMessage::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, KeyMessage::Message(message));
        assert!(!parsed.is_key_exchange());
    }

    #[test]
    fn missing_fields_are_rejected() {
        // mac only, no message: prost accepts it, we must not.
        let proto = AuthenticatedMessageProto {
            mac: vec![0; 16],
            message: Vec::new(),
        };
        assert!(AuthenticatedMessage::from_bytes(&proto.encode_to_vec()).is_err());
        // short MAC
        let mut message = sample().to_proto();
        message.mac.truncate(8);
        assert!(matches!(
            AuthenticatedMessage::from_bytes(&message.encode_to_vec()),
            Err(DecodeError::InvalidLength { field: "mac", .. })
        ));
        // ciphertext missing or not a block multiple
        for ciphertext in [None, Some(vec![]), Some(vec![1; 17])] {
            let inner = OmemoMessageProto {
                n: 1,
                pn: 0,
                dh_pub: sample().ratchet_key().to_bytes().to_vec(),
                ciphertext,
            };
            let outer = AuthenticatedMessageProto {
                mac: vec![0; 16],
                message: inner.encode_to_vec(),
            };
            assert!(AuthenticatedMessage::from_bytes(&outer.encode_to_vec()).is_err());
        }
        assert_eq!(KeyMessage::from_bytes(&[]), Err(DecodeError::Empty));
        assert!(KeyMessage::from_bytes(&[0x08]).is_err());
        assert!(KeyMessage::from_bytes(&[0xff; 40]).is_err());
        assert!(matches!(
            KeyMessage::from_bytes(&[0x0a; 5000]),
            Err(DecodeError::TooLong(5000))
        ));
    }
}
