//! The vault's answers: a synchronous function over a store.

use std::collections::{BTreeMap, BTreeSet};

use bookmarks::sync::{Guid, State};
use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Everything that changed after revision `since` (0: the whole vault).
    Pull {
        /// The client's revision.
        since: u64,
    },
    /// Join `delta` into the vault, if the vault is still at revision `base`
    /// (compare-and-swap).
    Push {
        /// The revision the client merged against.
        base: u64,
        /// The items and tombstones the client has that the vault at `base` does not.
        delta: State,
    },
}

/// One request: an id (unique per sender; a repeat gets the same answer), a vault, an op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The request id.
    pub id: String,
    /// The vault's name.
    pub vault: String,
    /// What to do.
    pub op: Op,
}

/// What the vault answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Answer {
    /// The answer to a pull.
    State {
        /// The vault's revision.
        revision: u64,
        /// True if `state` is the whole vault; otherwise only the items and tombstones changed
        /// after the requested revision (join it into the state of that revision).
        full: bool,
        /// The state or the delta.
        state: State,
    },
    /// The push is in: the vault's new revision.
    Ok {
        /// The new revision.
        revision: u64,
    },
    /// The push was based on an old revision: pull, merge and push again.
    Conflict {
        /// The vault's current revision.
        revision: u64,
    },
    /// The sender may not use this vault (or it does not exist: the two are not told apart).
    Refused {
        /// Why.
        reason: String,
    },
    /// The request is malformed; nothing changed.
    Error {
        /// Why.
        reason: String,
    },
}

/// Which accounts may use which vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    vaults: BTreeMap<String, BTreeSet<String>>,
}

impl Policy {
    /// Allows the bare JIDs `allow` to use `vault`.
    pub fn add(&mut self, vault: &str, allow: impl IntoIterator<Item = String>) {
        self.vaults
            .entry(vault.to_owned())
            .or_default()
            .extend(allow);
    }

    /// Whether there is any vault (the role is on).
    pub fn is_empty(&self) -> bool {
        self.vaults.is_empty()
    }

    /// Whether `sender` (a bare JID) may use `vault`.
    pub fn allows(&self, vault: &str, sender: &str) -> bool {
        self.vaults.get(vault).is_some_and(|a| a.contains(sender))
    }
}

/// A vault as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The revision (0: empty, never pushed to).
    pub revision: u64,
    /// The merged state.
    pub state: State,
    /// Per GUID, the revision that last changed the item or its tombstone.
    pub revisions: BTreeMap<Guid, u64>,
}

impl Stored {
    /// The items and tombstones changed after revision `since`, with the current clock.
    pub fn delta(&self, since: u64) -> State {
        let changed = |guid: &Guid| self.revisions.get(guid).is_some_and(|r| *r > since);
        State {
            clock: self.state.clock,
            items: self
                .state
                .items
                .iter()
                .filter(|(g, _)| changed(g))
                .map(|(g, i)| (g.clone(), i.clone()))
                .collect(),
            tombstones: self
                .state
                .tombstones
                .iter()
                .filter(|(g, _)| changed(g))
                .map(|(g, t)| (g.clone(), t.clone()))
                .collect(),
        }
    }
}

/// Where the vaults and the answers already given live.
pub trait Store {
    /// The store's error.
    type Error;
    /// The answer already given to `sender`'s request `id`, if any.
    fn answer(&self, sender: &str, id: &str) -> Result<Option<Answer>, Self::Error>;
    /// A vault (`None`: never pushed to).
    fn load(&self, vault: &str) -> Result<Option<Stored>, Self::Error>;
    /// Stores `stored` as `vault` (when given) and `answer` as the answer to `sender`'s request
    /// `id`, both or neither.
    fn commit(
        &mut self,
        vault: &str,
        stored: Option<&Stored>,
        sender: &str,
        id: &str,
        answer: &Answer,
    ) -> Result<(), Self::Error>;
}

/// The vault's answer to `request` from `sender` (a bare JID whose device's trust the caller
/// has already checked).
///
/// - A sender not allowed to the vault is [`Answer::Refused`] (nothing is stored).
/// - A push whose id this sender used before gets the stored answer again, whatever the vault
///   is now; so does a repeated push after a crash of either side.
/// - A push based on another revision than the current one is an [`Answer::Conflict`].
/// - A push whose join with the vault is not a valid state is an [`Answer::Error`], and the
///   vault is unchanged.
/// - A pull is read-only and answered from the current vault: the state at revision
///   `since` joined with the answer is the current state.
///
/// # Errors
/// Only the store's.
pub fn handle<S: Store>(
    store: &mut S,
    policy: &Policy,
    sender: &str,
    request: &Request,
) -> Result<Answer, S::Error> {
    if !policy.allows(&request.vault, sender) {
        return Ok(Answer::Refused {
            reason: format!("{sender} may not use vault {:?}", request.vault),
        });
    }
    match &request.op {
        Op::Pull { since } => {
            let stored = store.load(&request.vault)?.unwrap_or_default();
            let full = *since == 0 || *since > stored.revision;
            Ok(Answer::State {
                revision: stored.revision,
                full,
                state: if full {
                    stored.state
                } else {
                    stored.delta(*since)
                },
            })
        }
        Op::Push { base, delta } => {
            if let Some(answer) = store.answer(sender, &request.id)? {
                return Ok(answer);
            }
            let stored = store.load(&request.vault)?.unwrap_or_default();
            if *base != stored.revision {
                let answer = Answer::Conflict {
                    revision: stored.revision,
                };
                store.commit(&request.vault, None, sender, &request.id, &answer)?;
                return Ok(answer);
            }
            let joined = stored.state.join(delta);
            if let Err(e) = joined.validate() {
                return Ok(Answer::Error {
                    reason: format!("the pushed state is invalid: {e}"),
                });
            }
            if joined == stored.state {
                let answer = Answer::Ok {
                    revision: stored.revision,
                };
                store.commit(&request.vault, None, sender, &request.id, &answer)?;
                return Ok(answer);
            }
            let revision = stored.revision + 1;
            let mut revisions = stored.revisions;
            for guid in joined.items.keys() {
                if stored.state.items.get(guid) != joined.items.get(guid)
                    || stored.state.tombstones.get(guid) != joined.tombstones.get(guid)
                {
                    revisions.insert(guid.clone(), revision);
                }
            }
            let next = Stored {
                revision,
                state: joined,
                revisions,
            };
            let answer = Answer::Ok { revision };
            store.commit(&request.vault, Some(&next), sender, &request.id, &answer)?;
            Ok(answer)
        }
    }
}

/// What a client pushes: the items and tombstones of `merged` that `remote` (the vault's state
/// at the base revision) does not have as they are, with `merged`'s clock.
pub fn push_delta(remote: &State, merged: &State) -> State {
    State {
        clock: merged.clock,
        items: merged
            .items
            .iter()
            .filter(|(g, i)| remote.items.get(*g) != Some(i))
            .map(|(g, i)| (g.clone(), i.clone()))
            .collect(),
        tombstones: merged
            .tombstones
            .iter()
            .filter(|(g, t)| remote.tombstones.get(*g) != Some(t))
            .map(|(g, t)| (g.clone(), t.clone()))
            .collect(),
    }
}

/// The vault's state as a client sees it after a pull answered with `state`: the whole state,
/// or `base` (the state at the requested revision) joined with the delta.
pub fn apply_pull(base: &State, full: bool, state: State) -> State {
    if full {
        state
    } else {
        base.join(&state)
    }
}

/// A store in memory (tests, and a bot that keeps nothing).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    /// The vaults.
    pub vaults: BTreeMap<String, Stored>,
    /// The answers given, by (sender, request id).
    pub answers: BTreeMap<(String, String), Answer>,
}

impl Store for MemoryStore {
    type Error = std::convert::Infallible;

    fn answer(&self, sender: &str, id: &str) -> Result<Option<Answer>, Self::Error> {
        Ok(self
            .answers
            .get(&(sender.to_owned(), id.to_owned()))
            .cloned())
    }

    fn load(&self, vault: &str) -> Result<Option<Stored>, Self::Error> {
        Ok(self.vaults.get(vault).cloned())
    }

    fn commit(
        &mut self,
        vault: &str,
        stored: Option<&Stored>,
        sender: &str,
        id: &str,
        answer: &Answer,
    ) -> Result<(), Self::Error> {
        if let Some(stored) = stored {
            self.vaults.insert(vault.to_owned(), stored.clone());
        }
        self.answers
            .insert((sender.to_owned(), id.to_owned()), answer.clone());
        Ok(())
    }
}
