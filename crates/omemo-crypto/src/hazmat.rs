//! Raw access to an identity's secret seed. Whoever holds the seed *is* the device: these
//! functions are for the storage layer that keeps it (in a private database) and for tests
//! with fixed keys, not for anything that shows, logs or sends keys.

use zeroize::Zeroizing;

use crate::IdentityKeyPair;

/// Rebuilds an identity key pair from the 32-byte Ed25519 seed it was stored as. Any seed is
/// accepted, including one whose public key has sign bit 1 (an identity created before new
/// ones were drawn with sign bit 0).
pub fn identity_from_seed(seed: &[u8; 32]) -> IdentityKeyPair {
    IdentityKeyPair::from_seed(seed)
}

/// The identity's seed, for storage, in a buffer that is wiped when dropped.
pub fn identity_seed(identity: &IdentityKeyPair) -> Zeroizing<[u8; 32]> {
    identity.seed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_round_trips_through_its_identity() {
        let seed = [42u8; 32];
        let identity = identity_from_seed(&seed);
        assert_eq!(*identity_seed(&identity), seed);
        assert_eq!(
            identity_from_seed(&identity_seed(&identity)).public_key(),
            identity.public_key()
        );
    }
}
