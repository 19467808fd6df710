//! The three-way merge, its safety rails and the diff it reports.

use std::collections::HashSet;
use std::fmt;

use super::view::View;
use super::{Field, Guid, Item, State, StateError};

/// Limits of a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOptions {
    /// Merge even when the rails below would refuse it.
    pub force: bool,
    /// Refuse when a side would lose more than this percentage of its items (default 20).
    pub max_delete_percent: u32,
    /// Refuse when a side would lose more than this many items (default 1,000, Floccus'
    /// failsafe).
    pub max_delete_count: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            force: false,
            max_delete_percent: 20,
            max_delete_count: 1_000,
        }
    }
}

/// One side of a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// This replica (the browser's file).
    Local,
    /// The other replica (the vault).
    Remote,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

/// One change the merge makes to a side's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An item appears.
    Added {
        /// The item.
        guid: Guid,
        /// Its title.
        title: String,
        /// Its URL (empty for folders and separators).
        url: String,
    },
    /// An item disappears.
    Removed {
        /// The item.
        guid: Guid,
        /// Its title.
        title: String,
        /// Its URL.
        url: String,
    },
    /// An item goes to another folder.
    Moved {
        /// The item.
        guid: Guid,
        /// The old parent.
        from: Guid,
        /// The new parent.
        to: Guid,
    },
    /// An item changes its position among its siblings.
    Reordered {
        /// The item.
        guid: Guid,
    },
    /// A field changes.
    Edited {
        /// The item.
        guid: Guid,
        /// The field.
        field: Field,
        /// Old value, as text.
        old: String,
        /// New value, as text.
        new: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { guid, title, url } => write!(f, "+ {guid} {title:?} {url}"),
            Change::Removed { guid, title, url } => write!(f, "- {guid} {title:?} {url}"),
            Change::Moved { guid, from, to } => write!(f, "> {guid} moved from {from} to {to}"),
            Change::Reordered { guid } => write!(f, "> {guid} reordered"),
            Change::Edited {
                guid,
                field,
                old,
                new,
            } => write!(f, "~ {guid} {field:?}: {old:?} -> {new:?}"),
        }
    }
}

/// What a merge changes on each side, and the fields both sides changed differently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changes to the local tree.
    pub local: Vec<Change>,
    /// Changes to the remote tree.
    pub remote: Vec<Change>,
    /// Fields edited on both sides to different values: (item, field, the side whose edit won).
    pub conflicts: Vec<(Guid, Field, Side)>,
    /// Live items of the local tree before the merge.
    pub local_items: usize,
    /// Live items of the remote tree before the merge.
    pub remote_items: usize,
}

impl Diff {
    /// Items the merge removes from `side`.
    pub fn removed(&self, side: Side) -> usize {
        let changes = match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        };
        changes
            .iter()
            .filter(|c| matches!(c, Change::Removed { .. }))
            .count()
    }

    /// Whether nothing changes on either side.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// The dry-run listing: one line per change, grouped by side, then the conflicts.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (side, changes) in [(Side::Local, &self.local), (Side::Remote, &self.remote)] {
            out.push_str(&format!("{side}: {} change(s)\n", changes.len()));
            for change in changes {
                out.push_str(&format!("  {change}\n"));
            }
        }
        for (guid, field, winner) in &self.conflicts {
            out.push_str(&format!(
                "conflict: {guid} {field:?} (the {winner} edit wins)\n"
            ));
        }
        out
    }
}

/// A merge result: the state both sides should hold, and the diff.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged state.
    pub state: State,
    /// What changes.
    pub diff: Diff,
}

/// Why a merge did not happen.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// A state is malformed.
    #[error("invalid {side} state: {error}")]
    Invalid {
        /// Which.
        side: Side,
        /// What is wrong.
        error: StateError,
    },
    /// The merge would delete more than the rails allow; nothing was merged.
    #[error(
        "refused: the merge would delete {deleted} of the {total} {side} items \
         (more than {percent} % or {count}); check the diff, then force it if it is right"
    )]
    TooManyDeletions {
        /// The side that would lose them.
        side: Side,
        /// How many.
        deleted: usize,
        /// Of how many.
        total: usize,
        /// The percentage limit.
        percent: u32,
        /// The count limit.
        count: usize,
        /// The whole diff, for the dry-run listing.
        diff: Box<Diff>,
    },
}

/// Merges `local` and `remote`, both descendants of `base` (the state of their last sync; an
/// empty state for a first sync).
///
/// Per register, a side that did not change it since `base` (same stamp) takes the other
/// side's; both changed to different values is a conflict that the higher stamp wins (reported
/// in [`Diff::conflicts`]). Since edits always carry a higher stamp than what they replace,
/// this is the join of the two states ([`State::join`]), so merges commute and replicas that
/// sync in any order converge. Deletions are united; see the [module documentation](super) for
/// revivals and orphans.
///
/// Nothing is merged when more than `options.max_delete_percent` % or
/// `options.max_delete_count` items would disappear from either side, unless `options.force`.
///
/// # Errors
/// [`MergeError::Invalid`] for a malformed state, [`MergeError::TooManyDeletions`] from the
/// rails.
pub fn merge(
    base: &State,
    local: &State,
    remote: &State,
    options: &MergeOptions,
) -> Result<Merged, MergeError> {
    local.validate().map_err(|error| MergeError::Invalid {
        side: Side::Local,
        error,
    })?;
    remote.validate().map_err(|error| MergeError::Invalid {
        side: Side::Remote,
        error,
    })?;
    let state = local.join(remote);
    let merged_view = View::of(&state);
    let local_view = View::of(local);
    let remote_view = View::of(remote);
    let mut diff = Diff {
        local: changes(local, &local_view, &state, &merged_view),
        remote: changes(remote, &remote_view, &state, &merged_view),
        conflicts: conflicts(base, local, remote),
        local_items: local_view.preorder().len(),
        remote_items: remote_view.preorder().len(),
    };
    diff.conflicts.sort();
    if !options.force {
        for (side, total) in [
            (Side::Local, diff.local_items),
            (Side::Remote, diff.remote_items),
        ] {
            let deleted = diff.removed(side);
            let over_percent =
                deleted as u128 * 100 > u128::from(options.max_delete_percent) * total as u128;
            if deleted > 0 && (over_percent || deleted > options.max_delete_count) {
                return Err(MergeError::TooManyDeletions {
                    side,
                    deleted,
                    total,
                    percent: options.max_delete_percent,
                    count: options.max_delete_count,
                    diff: Box::new(diff),
                });
            }
        }
    }
    Ok(Merged { state, diff })
}

fn conflicts(base: &State, local: &State, remote: &State) -> Vec<(Guid, Field, Side)> {
    let mut out = Vec::new();
    for (guid, mine) in &local.items {
        let Some(theirs) = remote.items.get(guid) else {
            continue;
        };
        let old = base.items.get(guid);
        for field in Field::ALL {
            let (a, b) = (mine.stamp(field), theirs.stamp(field));
            let base_stamp = old.map(|o| o.stamp(field));
            if a == b || Some(a) == base_stamp || Some(b) == base_stamp {
                continue;
            }
            if text(mine, field) != text(theirs, field) {
                let winner = if a > b { Side::Local } else { Side::Remote };
                out.push((guid.clone(), field, winner));
            }
        }
    }
    out
}

fn text(item: &Item, field: Field) -> String {
    match field {
        Field::Title => item.title.value.clone(),
        Field::Url => item.url.value.clone(),
        Field::Description => item.description.value.clone().unwrap_or_default(),
        Field::Tags => item.tags.value.join(","),
        Field::Keyword => item.keyword.value.clone().unwrap_or_default(),
        Field::Place => format!("{}@{}", item.place.value.parent, item.place.value.key),
    }
}

/// What turns `before` (with its view) into `after`.
fn changes(before: &State, before_view: &View, after: &State, after_view: &View) -> Vec<Change> {
    let mut out = Vec::new();
    let old: HashSet<&Guid> = before_view.parent.keys().collect();
    for guid in after_view.preorder() {
        let Some(item) = after.items.get(&guid) else {
            continue;
        };
        if !old.contains(&guid) {
            out.push(Change::Added {
                guid: guid.clone(),
                title: item.title.value.clone(),
                url: item.url.value.clone(),
            });
            continue;
        }
        let Some(previous) = before.items.get(&guid) else {
            continue;
        };
        for field in Field::ALL {
            if field == Field::Place {
                continue;
            }
            let (a, b) = (text(previous, field), text(item, field));
            if a != b {
                out.push(Change::Edited {
                    guid: guid.clone(),
                    field,
                    old: a,
                    new: b,
                });
            }
        }
        let from = before_view.parent.get(&guid);
        let to = after_view.parent.get(&guid);
        if from != to {
            out.push(Change::Moved {
                guid: guid.clone(),
                from: from.cloned().unwrap_or_default(),
                to: to.cloned().unwrap_or_default(),
            });
        } else if previous.place.value.key != item.place.value.key {
            out.push(Change::Reordered { guid: guid.clone() });
        }
    }
    for guid in before_view.preorder() {
        if !after_view.parent.contains_key(&guid) {
            let (title, url) = before
                .items
                .get(&guid)
                .map(|i| (i.title.value.clone(), i.url.value.clone()))
                .unwrap_or_default();
            out.push(Change::Removed { guid, title, url });
        }
    }
    out
}
