//! Starting over with a new OMEMO identity (`--reset-identity`) and what to tell a person
//! about an identity.
//!
//! A reset gives the account a new identity key and a new device id (contacts cache an
//! identity per device id, so the old id cannot carry a new key). Contacts see a new device
//! and have to trust it again; sessions are built anew. The old device id is taken out of the
//! published device list, and its bundle retracted, the next time the program connects.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use atm_trust::Store;
use omemo_crypto::{DeviceId, IdentityPublicKey};
use rand_core::OsRng;
use xmpp_parsers::jid::BareJid;

use crate::omemo::OmemoError;

/// What a person reads before asking for a reset, and after one.
pub const RESET_WARNING: &str = "the OMEMO identity was reset: this account now has a new \
     device with a new key; contacts see a new device and must trust it again, and messages \
     encrypted for the old device can no longer be read";

/// Replaces the identity in the database at `db` by a new one (see
/// [`Store::reset_own_device`]). Returns the device id given up, or `None` when there was
/// no identity to replace (no database yet, or no device in it): the program then creates
/// one as on any first start. Blocking.
pub fn reset_identity(db: &Path, jid: &BareJid) -> Result<Option<DeviceId>, OmemoError> {
    if !db.exists() {
        return Ok(None);
    }
    let mut store = Store::open(db)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(store.reset_own_device(jid.as_str(), &mut OsRng, now)?)
}

/// Lines describing our identity for a person: both fingerprint forms, labelled, and a
/// note when Converse.js cannot use the identity (Ed25519 sign bit 1, see
/// [`IdentityPublicKey::ed25519_sign_bit`]).
pub fn describe(key: &IdentityPublicKey) -> Vec<String> {
    let mut lines: Vec<String> = key.fingerprint_lines().into();
    if key.ed25519_sign_bit() {
        lines.push(
            "Note: this identity key has Ed25519 sign bit 1; Converse.js (libomemo.js) refuses \
             it. Start over with --reset-identity (contacts then see a new device): see the \
             README."
                .to_owned(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The public key of the first seed `0, 1, 2, …` (all 32 bytes equal) with that sign bit.
    fn key_with_sign_bit(bit: bool) -> IdentityPublicKey {
        (0u8..=255)
            .map(|b| omemo_crypto::hazmat::identity_from_seed(&[b; 32]).public_key())
            .find(|k| k.ed25519_sign_bit() == bit)
            .unwrap_or_else(|| unreachable!("about half of all keys have each sign bit"))
    }

    #[test]
    fn a_sign_bit_1_identity_gets_a_note_about_converse() {
        let ok = describe(&key_with_sign_bit(false));
        assert_eq!(ok.len(), 2);
        assert!(ok[0].contains("Ed25519") && ok[1].contains("Curve25519"));
        let noted = describe(&key_with_sign_bit(true));
        assert_eq!(noted.len(), 3);
        assert!(noted[2].contains("Converse.js") && noted[2].contains("--reset-identity"));
    }
}
