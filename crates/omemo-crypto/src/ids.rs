//! Checked identifiers: device ids, pre-key ids and signed pre-key ids.
//!
//! XEP-0384 §devices and §bundles restrict all three to `1..=2³¹−1`. Device ids, signed
//! pre-key ids and pre-key ids live in separate number spaces, so each has its own type.

use core::fmt;

use rand_core::RngCore;

/// The largest id XEP-0384 allows (2³¹−1).
pub const MAX_ID: u32 = 0x7fff_ffff;

/// An id outside `1..=2³¹−1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value} is outside 1..=2147483647")]
pub struct IdRangeError {
    /// Which kind of id was rejected.
    pub kind: &'static str,
    /// The rejected value.
    pub value: u64,
}

macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl $name {
            /// Checks that `value` lies in `1..=2³¹−1`.
            pub const fn new(value: u32) -> Result<Self, IdRangeError> {
                if value == 0 || value > MAX_ID {
                    Err(IdRangeError { kind: $kind, value: value as u64 })
                } else {
                    Ok(Self(value))
                }
            }

            /// Draws a uniformly random id in `1..=2³¹−1`.
            pub fn random(rng: &mut impl RngCore) -> Self {
                loop {
                    let value = rng.next_u32() & MAX_ID;
                    if value != 0 {
                        return Self(value);
                    }
                }
            }

            /// The numeric value.
            pub const fn get(self) -> u32 {
                self.0
            }
        }

        impl TryFrom<u32> for $name {
            type Error = IdRangeError;
            fn try_from(value: u32) -> Result<Self, IdRangeError> {
                Self::new(value)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdRangeError;
            fn try_from(value: u64) -> Result<Self, IdRangeError> {
                u32::try_from(value)
                    .ok()
                    .and_then(|v| Self::new(v).ok())
                    .ok_or(IdRangeError { kind: $kind, value })
            }
        }

        impl From<$name> for u32 {
            fn from(id: $name) -> u32 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

checked_id!(
    /// An OMEMO device id (XEP-0384 §devices, `<device id>`, `sid`, `rid`).
    DeviceId,
    "device id"
);
checked_id!(
    /// The id of a one-time pre-key (XEP-0384 §bundles, `<pk id>`, `OMEMOKeyExchange.pk_id`).
    PreKeyId,
    "pre-key id"
);
checked_id!(
    /// The id of a signed pre-key (XEP-0384 §bundles, `<spk id>`, `OMEMOKeyExchange.spk_id`).
    SignedPreKeyId,
    "signed pre-key id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_enforced() {
        assert!(DeviceId::new(0).is_err());
        assert_eq!(DeviceId::new(1).map(DeviceId::get), Ok(1));
        assert_eq!(DeviceId::new(MAX_ID).map(DeviceId::get), Ok(MAX_ID));
        assert!(DeviceId::new(MAX_ID + 1).is_err());
        assert!(PreKeyId::try_from(u64::from(u32::MAX) + 1).is_err());
        assert!(SignedPreKeyId::try_from(7u64).is_ok());
    }

    #[test]
    fn random_ids_are_in_range() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for _ in 0..1000 {
            let id = DeviceId::random(&mut rng).get();
            assert!((1..=MAX_ID).contains(&id));
        }
    }

    use rand_core::SeedableRng;
}
