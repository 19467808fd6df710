//! Conversion between `<bundle>` (XEP-0384 §bundles) and [`omemo_crypto::Bundle`].

use std::collections::HashSet;

use omemo_crypto::{IdentityPublicKey, PreKeyId, Signature, SignedPreKeyId, X25519PublicKey};
use xmpp_parsers::minidom::Element;

use super::elements::{Bundle, Ik, Pk, PreKeys, Spk, Spks};
use crate::limits::MAX_PRE_KEYS;
use crate::{ns, Error};

impl TryFrom<Bundle> for omemo_crypto::Bundle {
    type Error = Error;

    /// Checks ids, key lengths and curve points, duplicate pre-key ids, the pre-key count and
    /// the signed pre-key signature.
    fn try_from(wire: Bundle) -> Result<Self, Error> {
        if wire.prekeys.keys.len() > MAX_PRE_KEYS {
            return Err(Error::TooMany {
                what: "pre-keys",
                limit: MAX_PRE_KEYS,
            });
        }
        let identity_key =
            IdentityPublicKey::from_bytes(&wire.ik.data).map_err(|source| Error::InvalidKey {
                field: "ik",
                source,
            })?;
        let spk_id = SignedPreKeyId::new(wire.spk.id)?;
        let spk =
            X25519PublicKey::from_bytes(&wire.spk.data).map_err(|source| Error::InvalidKey {
                field: "spk",
                source,
            })?;
        let spks = Signature::from_bytes(&wire.spks.data).map_err(|source| Error::InvalidKey {
            field: "spks",
            source,
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
            let key =
                X25519PublicKey::from_bytes(&pk.data).map_err(|source| Error::InvalidKey {
                    field: "pk",
                    source,
                })?;
            pre_keys.push((id, key));
        }
        Ok(omemo_crypto::Bundle::new(
            identity_key,
            spk_id,
            spk,
            spks,
            pre_keys,
        )?)
    }
}

impl From<&omemo_crypto::Bundle> for Bundle {
    fn from(bundle: &omemo_crypto::Bundle) -> Self {
        Bundle {
            spk: Spk {
                id: bundle.signed_pre_key_id().get(),
                data: bundle.signed_pre_key().as_bytes().to_vec(),
            },
            spks: Spks {
                data: bundle.signed_pre_key_signature().as_bytes().to_vec(),
            },
            ik: Ik {
                data: bundle.identity_key().as_bytes().to_vec(),
            },
            prekeys: PreKeys {
                keys: bundle
                    .pre_keys()
                    .iter()
                    .map(|(id, key)| Pk {
                        id: id.get(),
                        data: key.as_bytes().to_vec(),
                    })
                    .collect(),
            },
        }
    }
}

/// Parses and checks a `<bundle>` element.
pub fn parse_bundle(elem: Element) -> Result<omemo_crypto::Bundle, Error> {
    let wire = Bundle::try_from(elem).map_err(|e| Error::from_xso("bundle", ns::OMEMO2, e))?;
    omemo_crypto::Bundle::try_from(wire)
}

/// Serializes a bundle to its `<bundle>` element.
pub fn bundle_element(bundle: &omemo_crypto::Bundle) -> Element {
    Element::from(Bundle::from(bundle))
}
