//! Automatic Trust Management (XEP-0450): applying received trust messages (XEP-0434) and
//! keeping the decisions of not yet authenticated senders until they can be applied.

use omemo_crypto::IdentityPublicKey;
use rusqlite::{params, Connection};

use crate::error::Result;
use crate::sql::{identity_key_from_sql, time_to_sql};
use crate::trust::{level_in, set_level_and_settle, Cause, TrustEvent, TrustLevel, TrustSource};
use crate::Store;

/// The most decisions kept per sender JID until the sender is authenticated. A contact's
/// devices vouch only for that contact's own keys, so an honest sender needs a handful; the
/// oldest beyond this are dropped, so that strangers cannot grow the database without bound.
pub const MAX_PENDING_PER_SENDER: usize = 256;

/// The decisions of one `<key-owner>` element of a trust message (XEP-0434).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwnerDecisions {
    /// `<key-owner jid>`: whose keys these are (bare JID).
    pub jid: String,
    /// `<trust>` keys: to become Authenticated.
    pub trust: Vec<IdentityPublicKey>,
    /// `<distrust>` keys: to become ManuallyDistrusted.
    pub distrust: Vec<IdentityPublicKey>,
}

/// What [`Store::apply_trust_message`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustMessageOutcome {
    /// The level changes made now, in order (including TOAKAFA demotions and decisions that
    /// had been waiting for keys authenticated now).
    pub events: Vec<TrustEvent>,
    /// Decisions stored until the sender's key is authenticated.
    pub stored: usize,
    /// Decisions the sender may not make (a contact's device vouching for another JID).
    pub refused: usize,
    /// Stored decisions of this sender dropped, oldest first, to stay within
    /// [`MAX_PENDING_PER_SENDER`] (counting decisions of this message that did not fit).
    pub dropped: usize,
}

/// A stored decision, waiting for its sender to be authenticated.
pub(crate) struct PendingDecision {
    pub(crate) jid: String,
    pub(crate) key: IdentityPublicKey,
    pub(crate) trust: bool,
}

/// Removes and returns the decisions that `sender_jid`'s key `sender_key` sent, in the
/// order they should be applied (trust before distrust, so a key named in both ends
/// distrusted).
pub(crate) fn take_pending(
    tx: &Connection,
    sender_jid: &str,
    sender_key: &IdentityPublicKey,
) -> Result<Vec<PendingDecision>> {
    let mut decisions = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT target_jid, target_key, trust FROM atm_pending
             WHERE sender_jid = ?1 AND sender_key = ?2
             ORDER BY trust DESC, target_jid, target_key",
        )?;
        let mut rows = stmt.query(params![sender_jid, &sender_key.as_bytes()[..]])?;
        while let Some(row) = rows.next()? {
            decisions.push(PendingDecision {
                jid: row.get(0)?,
                key: identity_key_from_sql("atm_pending", row.get_ref(1)?.as_blob()?)?,
                trust: row.get(2)?,
            });
        }
    }
    tx.prepare_cached("DELETE FROM atm_pending WHERE sender_jid = ?1 AND sender_key = ?2")?
        .execute(params![sender_jid, &sender_key.as_bytes()[..]])?;
    Ok(decisions)
}

/// Deletes `sender_jid`'s oldest stored decisions beyond [`MAX_PENDING_PER_SENDER`]; returns
/// how many.
fn trim_pending(tx: &Connection, sender_jid: &str) -> Result<usize> {
    let limit = i64::try_from(MAX_PENDING_PER_SENDER).unwrap_or(i64::MAX);
    Ok(tx
        .prepare_cached(
            "DELETE FROM atm_pending
             WHERE sender_jid = ?1 AND (sender_key, target_jid, target_key) NOT IN (
                 SELECT sender_key, target_jid, target_key FROM atm_pending
                 WHERE sender_jid = ?1
                 ORDER BY received_at DESC, sender_key, target_jid, target_key
                 LIMIT ?2)",
        )?
        .execute(params![sender_jid, limit])?)
}

impl Store {
    /// Applies a trust message that arrived over the OMEMO session of `sender_jid`'s device
    /// with identity key `sender_key` (the key whose session decrypted it), in one
    /// transaction.
    ///
    /// Our own devices (`sender_jid == own_jid`) may vouch for any JID's keys; a contact's
    /// device only for that contact's own keys, and other decisions are refused. If the
    /// sender key is Authenticated, `trust` keys become Authenticated and `distrust` keys
    /// ManuallyDistrusted now (a key in both lists ends distrusted); each new authentication
    /// demotes its owner's AutomaticallyTrusted keys and releases the decisions that key had
    /// sent earlier. Otherwise the decisions are stored, replacing earlier ones of the same
    /// sender about the same keys, and applied when the sender key becomes Authenticated.
    /// Keys need not be known yet: a decision about an unseen key gives it its level, which
    /// it keeps when it is recorded later.
    ///
    /// Trust messages reflected back from our own full JID must be filtered by the caller.
    pub fn apply_trust_message(
        &mut self,
        own_jid: &str,
        sender_jid: &str,
        sender_key: &IdentityPublicKey,
        decisions: &[KeyOwnerDecisions],
        now: u64,
    ) -> Result<TrustMessageOutcome> {
        let tx = self.write()?;
        let mut outcome = TrustMessageOutcome::default();
        let sender_authenticated =
            level_in(&tx, sender_jid, sender_key)? == Some(TrustLevel::Authenticated);
        let cause = Cause {
            source: TrustSource::Atm,
            via: Some((sender_jid, sender_key)),
        };
        for owner in decisions {
            let count = owner.trust.len() + owner.distrust.len();
            if sender_jid != own_jid && owner.jid != sender_jid {
                outcome.refused += count;
                continue;
            }
            let ordered = owner
                .trust
                .iter()
                .map(|key| (key, true))
                .chain(owner.distrust.iter().map(|key| (key, false)));
            if sender_authenticated {
                for (key, trust) in ordered {
                    let level = if trust {
                        TrustLevel::Authenticated
                    } else {
                        TrustLevel::ManuallyDistrusted
                    };
                    set_level_and_settle(
                        &tx,
                        &owner.jid,
                        key,
                        level,
                        cause,
                        now,
                        &mut outcome.events,
                    )?;
                }
            } else {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO atm_pending
                         (sender_jid, sender_key, target_jid, target_key, trust, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (sender_jid, sender_key, target_jid, target_key)
                     DO UPDATE SET trust = excluded.trust, received_at = excluded.received_at",
                )?;
                for (key, trust) in ordered {
                    stmt.execute(params![
                        sender_jid,
                        &sender_key.as_bytes()[..],
                        owner.jid,
                        &key.as_bytes()[..],
                        trust,
                        time_to_sql(now),
                    ])?;
                }
                outcome.stored += count;
            }
        }
        if outcome.stored > 0 {
            outcome.dropped = trim_pending(&tx, sender_jid)?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// How many ATM decisions wait for their sender to be authenticated.
    pub fn pending_trust_decisions(&self) -> Result<usize> {
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM atm_pending", [], |row| row.get(0))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}
