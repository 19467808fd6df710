//! Conversion between the legacy `<bundle>` (XEP-0384 0.3 §4.3) and
//! [`omemo_crypto::legacy::Bundle`].

use std::collections::HashSet;

use omemo_crypto::legacy::{parse_public_key, serialize_public_key, IdentityKey as CryptoIdentity};
use omemo_crypto::{PreKeyId, Signature, SignedPreKeyId};
use xmpp_parsers::minidom::Element;

use super::elements::{
    Bundle, IdentityKey, PreKeyPublic, PreKeys, SignedPreKeyPublic, SignedPreKeySignature,
};
use crate::limits::MAX_PRE_KEYS;
use crate::{ns, Error};

impl TryFrom<Bundle> for omemo_crypto::legacy::Bundle {
    type Error = Error;

    /// Checks ids, the 33-byte `0x05` keys and their curve points, duplicate pre-key ids, the
    /// pre-key count (at least one, as Gajim and python-oldmemo require) and the signed
    /// pre-key signature the libsignal way, which also rebuilds the Ed25519 identity.
    fn try_from(wire: Bundle) -> Result<Self, Error> {
        if wire.prekeys.keys.len() > MAX_PRE_KEYS {
            return Err(Error::TooMany {
                what: "pre-keys",
                limit: MAX_PRE_KEYS,
            });
        }
        let identity_key =
            CryptoIdentity::from_bytes(&wire.identity_key.data).map_err(|source| {
                Error::InvalidKey {
                    field: "identityKey",
                    source,
                }
            })?;
        let spk_id = SignedPreKeyId::new(wire.signed_pre_key_public.id)?;
        let spk = parse_public_key(&wire.signed_pre_key_public.data).map_err(|source| {
            Error::InvalidKey {
                field: "signedPreKeyPublic",
                source,
            }
        })?;
        let signature =
            Signature::from_bytes(&wire.signed_pre_key_signature.data).map_err(|source| {
                Error::InvalidKey {
                    field: "signedPreKeySignature",
                    source,
                }
            })?;
        let mut seen = HashSet::with_capacity(wire.prekeys.keys.len());
        let mut pre_keys = Vec::with_capacity(wire.prekeys.keys.len());
        for pk in &wire.prekeys.keys {
            let id = PreKeyId::new(pk.id)?;
            if !seen.insert(id) {
                return Err(Error::DuplicateId {
                    kind: "pre-key id",
                    id: id.get(),
                });
            }
            let key = parse_public_key(&pk.data).map_err(|source| Error::InvalidKey {
                field: "preKeyPublic",
                source,
            })?;
            pre_keys.push((id, key));
        }
        Ok(omemo_crypto::legacy::Bundle::new(
            identity_key,
            spk_id,
            spk,
            signature,
            pre_keys,
        )?)
    }
}

impl From<&omemo_crypto::legacy::Bundle> for Bundle {
    fn from(bundle: &omemo_crypto::legacy::Bundle) -> Self {
        Bundle {
            signed_pre_key_public: SignedPreKeyPublic {
                id: bundle.signed_pre_key_id().get(),
                data: serialize_public_key(&bundle.signed_pre_key()).to_vec(),
            },
            signed_pre_key_signature: SignedPreKeySignature {
                data: bundle.signed_pre_key_signature().as_bytes().to_vec(),
            },
            identity_key: IdentityKey {
                data: bundle.legacy_identity_key().to_bytes().to_vec(),
            },
            prekeys: PreKeys {
                keys: bundle
                    .pre_keys()
                    .iter()
                    .map(|(id, key)| PreKeyPublic {
                        id: id.get(),
                        data: serialize_public_key(key).to_vec(),
                    })
                    .collect(),
            },
        }
    }
}

/// Parses and checks a legacy `<bundle>` element.
pub fn parse_bundle(elem: Element) -> Result<omemo_crypto::legacy::Bundle, Error> {
    let wire = Bundle::try_from(elem).map_err(|e| Error::from_xso("bundle", ns::LEGACY, e))?;
    omemo_crypto::legacy::Bundle::try_from(wire)
}

/// Serializes a legacy bundle to its `<bundle>` element.
pub fn bundle_element(bundle: &omemo_crypto::legacy::Bundle) -> Element {
    Element::from(Bundle::from(bundle))
}
