//! Bookmark sync, sans-IO: stable identities, a replica's state, and the three-way merge.
//!
//! A replica's [`State`] is the tree as a flat map of [`Item`]s (every folder, bookmark and
//! separator ever seen, with a GUID of ours), the [`Tombstone`]s of deleted items, and a
//! logical clock. Every synced field of an item is a [`Reg`]ister: a value and the [`Stamp`]
//! (logical clock, replica id) of the edit that wrote it.
//!
//! The flow of one sync, as the client runs it:
//!
//! 1. [`record`]: import the browser's file and diff it against the state of the last sync
//!    (the *base*). Identities come from the browser's own ids where it has them (Chromium and
//!    Firefox `guid`), otherwise from matching against the base tree. Every change becomes a
//!    register write stamped with the next clock value; items missing from the file become
//!    tombstones.
//! 2. [`merge`]`(base, local, remote)`: per item and per field. A field changed on one side only
//!    takes that side's value; changed on both to the same value is one change; changed on both
//!    to different values, the higher stamp wins (clock first, then replica id: never the wall
//!    clock). The safety rails refuse a merge that deletes too much (see [`MergeOptions`]); the
//!    returned [`Diff`] lists what changes on each side, which is also the dry run.
//! 3. [`materialize`] the merged state as a [`BookmarkTree`](crate::BookmarkTree) for the
//!    browser's format and write it back.
//!
//! The merge is a join: per register the higher stamp, per tombstone the union. So replicas
//! that sync pairwise in any order end with the same state, and a field keeps the value of its
//! latest edit. On top of it, the materialized tree applies these rules:
//!
//! - **Edit beats delete.** A bookmark or separator deleted on one side and edited on the other
//!   (an edit the deleting replica had not seen) is alive.
//! - **Folders do not come back**, but whatever they hold that is alive (added, moved in or
//!   edited by a replica that had not seen the deletion) moves to the nearest surviving
//!   ancestor, keeping its position key.
//! - **Moves are moves**: parent and position are one register (a position only means something
//!   within its parent), so an item is in one place only. A cycle made by two concurrent moves
//!   is broken by putting the item of the cycle with the latest move under the *other
//!   bookmarks* root.
//! - **Roots** (toolbar, menu, other, mobile) have fixed GUIDs and are never moved or deleted.
//!   A format shows and edits only the roots it has: an import never deletes what sits in a
//!   root the format does not have (Chromium has no menu; Netscape HTML and XBEL have free
//!   top-level items, which sit in the invisible top root).

mod identity;
mod merge;
pub mod position;
mod record;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Extra, FolderRole};

pub use identity::{native_guid, new_guid};
pub use merge::{merge, Change, Diff, MergeError, MergeOptions, Merged, Side};
pub use record::{record, RecordError};
pub use view::{live_items, materialize};

/// A replica id: who made an edit (for the issue-16 client: the OMEMO device id).
pub type ReplicaId = u64;

/// Our GUID of an item. Chromium UUIDs and Firefox 12-character GUIDs are taken as they are;
/// items of formats without ids get 12 random base64url characters.
pub type Guid = String;

/// The invisible top of the tree: the parent of the browser roots and of free top-level items.
pub const ROOT_GUID: &str = "root________";

/// The fixed GUID of a browser root (Firefox's, so a Firefox backup keeps them).
pub fn role_guid(role: FolderRole) -> &'static str {
    match role {
        FolderRole::Toolbar => "toolbar_____",
        FolderRole::Menu => "menu________",
        FolderRole::Other => "unfiled_____",
        FolderRole::Mobile => "mobile______",
    }
}

/// The root a fixed GUID stands for.
pub fn guid_role(guid: &str) -> Option<FolderRole> {
    [
        FolderRole::Toolbar,
        FolderRole::Menu,
        FolderRole::Other,
        FolderRole::Mobile,
    ]
    .into_iter()
    .find(|role| role_guid(*role) == guid)
}

/// When and by whom a register was written. Ordered by clock, then replica id.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// The logical (Lamport) clock of the edit.
    pub clock: u64,
    /// The replica that made it.
    pub replica: ReplicaId,
}

/// A synced field: its value and the stamp of the edit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reg<T> {
    /// The value.
    pub value: T,
    /// Who wrote it, when.
    pub stamp: Stamp,
}

impl<T: Clone> Reg<T> {
    /// A register written at `stamp`.
    pub fn new(value: T, stamp: Stamp) -> Self {
        Self { value, stamp }
    }

    /// The register with the higher stamp (`self` on a tie).
    pub fn join(&self, other: &Self) -> Self {
        if other.stamp > self.stamp {
            other.clone()
        } else {
            self.clone()
        }
    }
}

/// What an item is; fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A folder.
    Folder,
    /// A bookmark.
    Bookmark,
    /// A separator.
    Separator,
}

/// Where an item is: its parent and its position key among the parent's children (see
/// [`position`]). One register, so a move is one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The parent folder ([`ROOT_GUID`] for the top).
    pub parent: Guid,
    /// The position key.
    pub key: String,
}

/// Dates, Unix microseconds. Synced as one register; a date change alone is not an edit that
/// revives a deleted item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dates {
    /// Creation.
    pub added: Option<i64>,
    /// Last modification.
    pub modified: Option<i64>,
    /// Last visit or use.
    pub visited: Option<i64>,
}

/// The user-visible fields, in the order of [`Tombstone::seen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// Title.
    Title,
    /// URL.
    Url,
    /// Description.
    Description,
    /// Tags.
    Tags,
    /// Keyword.
    Keyword,
    /// Parent and position.
    Place,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 6] = [
        Field::Title,
        Field::Url,
        Field::Description,
        Field::Tags,
        Field::Keyword,
        Field::Place,
    ];
}

/// One folder, bookmark or separator with its synced fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Folder, bookmark or separator.
    pub kind: Kind,
    /// Title.
    pub title: Reg<String>,
    /// URL (empty for folders and separators).
    pub url: Reg<String>,
    /// Description.
    pub description: Reg<Option<String>>,
    /// Tags.
    pub tags: Reg<Vec<String>>,
    /// Keyword.
    pub keyword: Reg<Option<String>>,
    /// Parent and position.
    pub place: Reg<Place>,
    /// Dates.
    pub dates: Reg<Dates>,
    /// Unknown fields of each source format, by [`Format::name`](crate::Format::name): an
    /// export to a format writes back only that format's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: BTreeMap<String, Reg<Extra>>,
}

impl Item {
    /// The stamp of a user-visible field.
    pub fn stamp(&self, field: Field) -> Stamp {
        match field {
            Field::Title => self.title.stamp,
            Field::Url => self.url.stamp,
            Field::Description => self.description.stamp,
            Field::Tags => self.tags.stamp,
            Field::Keyword => self.keyword.stamp,
            Field::Place => self.place.stamp,
        }
    }

    /// The stamps of the user-visible fields, in [`Field::ALL`] order.
    pub fn stamps(&self) -> [Stamp; 6] {
        Field::ALL.map(|f| self.stamp(f))
    }

    /// Per register the higher stamp. The kind is the one of the item with the earliest
    /// creation stamp (a GUID collision between kinds is refused by [`State::validate`] first,
    /// but the join stays deterministic regardless).
    pub fn join(&self, other: &Self) -> Self {
        let mut extras = self.extras.clone();
        for (format, reg) in &other.extras {
            let joined = match extras.get(format) {
                Some(mine) => mine.join(reg),
                None => reg.clone(),
            };
            extras.insert(format.clone(), joined);
        }
        Item {
            kind: if (other.dates.stamp, other.kind as u8) < (self.dates.stamp, self.kind as u8) {
                other.kind
            } else {
                self.kind
            },
            title: self.title.join(&other.title),
            url: self.url.join(&other.url),
            description: self.description.join(&other.description),
            tags: self.tags.join(&other.tags),
            keyword: self.keyword.join(&other.keyword),
            place: self.place.join(&other.place),
            dates: self.dates.join(&other.dates),
            extras,
        }
    }
}

/// A deletion: when, and which edits of the item the deleting replica had seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The stamp of the deletion.
    pub stamp: Stamp,
    /// The stamps of the item's fields ([`Field::ALL`] order) as the deleting replica knew
    /// them. An edit with a higher stamp was concurrent: the item comes back (bookmarks and
    /// separators) or its content moves up (folders).
    pub seen: [Stamp; 6],
}

impl Tombstone {
    /// The union of two deletions of one item.
    pub fn join(&self, other: &Self) -> Self {
        let mut seen = self.seen;
        for (mine, theirs) in seen.iter_mut().zip(other.seen) {
            *mine = (*mine).max(theirs);
        }
        Tombstone {
            stamp: self.stamp.max(other.stamp),
            seen,
        }
    }
}

/// A replica's sync state: every item (the deleted ones too: their last known fields decide
/// revivals and where orphans go), the tombstones, and the logical clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The highest clock value seen or used.
    pub clock: u64,
    /// Items by GUID (roots included, [`ROOT_GUID`] not).
    pub items: BTreeMap<Guid, Item>,
    /// Deletions by GUID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tombstones: BTreeMap<Guid, Tombstone>,
}

/// Why a state from a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A GUID is empty, too long or has characters outside `A-Za-z0-9-_`.
    #[error("invalid GUID {0:?}")]
    Guid(String),
    /// A position key is malformed.
    #[error("invalid position key of {0}")]
    Key(Guid),
    /// An item's parent is not a known folder.
    #[error("item {0} has a parent that is not a known folder")]
    Parent(Guid),
    /// A root is not a folder or not at the top, or the invisible top is an item.
    #[error("root {0} is not a folder at the top")]
    Root(Guid),
    /// A stamp is ahead of the state's clock, or the clock is exhausted.
    #[error("a stamp of {0} is ahead of the state's clock")]
    Clock(Guid),
    /// A tombstone for an item the state does not have.
    #[error("tombstone for unknown item {0}")]
    Tombstone(Guid),
    /// More items than [`MAX_ITEMS`].
    #[error("more than {MAX_ITEMS} items")]
    TooLarge,
}

/// The most items a state may hold (tombstoned ones included).
pub const MAX_ITEMS: usize = 1_000_000;

/// Whether `guid` is a GUID we accept: 1 to 64 characters of `A-Za-z0-9-_`.
pub fn is_valid_guid(guid: &str) -> bool {
    (1..=64).contains(&guid.len())
        && guid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl State {
    /// Checks a state received from a peer: GUIDs, keys, parents that are folders, roots at the
    /// top, stamps not ahead of the clock (so the clock can always advance).
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.items.len() > MAX_ITEMS {
            return Err(StateError::TooLarge);
        }
        if self.clock >= u64::MAX / 2 {
            return Err(StateError::Clock(String::new()));
        }
        if self.items.contains_key(ROOT_GUID) {
            return Err(StateError::Root(ROOT_GUID.to_owned()));
        }
        for (guid, item) in &self.items {
            if !is_valid_guid(guid) {
                return Err(StateError::Guid(guid.clone()));
            }
            let place = &item.place.value;
            if !position::is_valid(&place.key) {
                return Err(StateError::Key(guid.clone()));
            }
            let parent_ok = place.parent == ROOT_GUID
                || self
                    .items
                    .get(&place.parent)
                    .is_some_and(|p| p.kind == Kind::Folder);
            if !parent_ok || place.parent == *guid {
                return Err(StateError::Parent(guid.clone()));
            }
            if guid_role(guid).is_some() && (item.kind != Kind::Folder || place.parent != ROOT_GUID)
            {
                return Err(StateError::Root(guid.clone()));
            }
            let newest = item
                .stamps()
                .into_iter()
                .chain([item.dates.stamp])
                .chain(item.extras.values().map(|r| r.stamp))
                .max()
                .unwrap_or_default();
            if newest.clock > self.clock {
                return Err(StateError::Clock(guid.clone()));
            }
        }
        for (guid, tombstone) in &self.tombstones {
            if !self.items.contains_key(guid) {
                return Err(StateError::Tombstone(guid.clone()));
            }
            if tombstone.stamp.clock > self.clock {
                return Err(StateError::Clock(guid.clone()));
            }
        }
        Ok(())
    }

    /// Whether the item is alive: not deleted, or edited by a replica that had not seen the
    /// deletion (bookmarks and separators only; folders stay deleted). Roots are always alive.
    pub fn is_alive(&self, guid: &str) -> bool {
        let Some(item) = self.items.get(guid) else {
            return false;
        };
        if guid_role(guid).is_some() {
            return true;
        }
        match self.tombstones.get(guid) {
            None => true,
            Some(_) if item.kind == Kind::Folder => false,
            Some(tombstone) => item
                .stamps()
                .into_iter()
                .zip(tombstone.seen)
                .any(|(stamp, seen)| stamp > seen),
        }
    }

    /// The join of two states: per register the higher stamp, tombstones united, the higher
    /// clock. Commutative, associative and idempotent, which is why replicas converge.
    pub fn join(&self, other: &State) -> State {
        let mut items = self.items.clone();
        for (guid, item) in &other.items {
            let joined = match items.get(guid) {
                Some(mine) => mine.join(item),
                None => item.clone(),
            };
            items.insert(guid.clone(), joined);
        }
        let mut tombstones = self.tombstones.clone();
        for (guid, tombstone) in &other.tombstones {
            let joined = match tombstones.get(guid) {
                Some(mine) => mine.join(tombstone),
                None => tombstone.clone(),
            };
            tombstones.insert(guid.clone(), joined);
        }
        State {
            clock: self.clock.max(other.clock),
            items,
            tombstones,
        }
    }

    /// The canonical JSON of the state (deterministic: maps are sorted).
    ///
    /// # Errors
    /// Only for extras that cannot be represented.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a state written by [`State::to_json`] and [`validate`](State::validate)s it.
    ///
    /// # Errors
    /// A JSON error or the validation error, as text.
    pub fn from_json(bytes: &[u8]) -> Result<State, String> {
        let state: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        state.validate().map_err(|e| e.to_string())?;
        Ok(state)
    }
}
