//! Recording a browser's file into the state: identities, then every difference from the last
//! synced tree as a stamped register write or a tombstone.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand_core::RngCore;
use serde_json::Value;

use super::identity::{new_guid, own_form, reverse_table, MatchKeys, Matcher};
use super::view::{format_key, has_native_guids, scope, shows, View};
use super::{
    guid_role, position, role_guid, Dates, Guid, Item, Kind, Place, Reg, ReplicaId, Stamp, State,
    Tombstone, ROOT_GUID,
};
use crate::model::{BookmarkTree, Extra, FolderRole, Node};
use crate::Format;

/// Why a file could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The logical clock cannot advance any more (a state from a hostile peer).
    #[error("the logical clock is exhausted")]
    Clock,
}

/// Which fields a format carries; the others are left as they are in the state.
struct Carries {
    description: bool,
    tags: bool,
    keyword: bool,
    dates: bool,
}

fn carries(format: Format) -> Carries {
    let (description, tags, keyword, dates) = match format {
        Format::Chromium => (false, false, false, true),
        Format::Falkon => (true, false, true, false),
        Format::FirefoxJson | Format::FirefoxJsonLz4 => (true, true, true, true),
        Format::Xbel => (true, false, false, true),
        Format::NetscapeHtml | Format::Canonical => (true, true, true, true),
    };
    Carries {
        description,
        tags,
        keyword,
        dates,
    }
}

/// Key length above which a folder's children get fresh keys (well below
/// [`position::MAX_KEY_LEN`], which a peer's state may not exceed).
const REBALANCE_KEY_LEN: usize = 128;

/// Position keys of the browser roots under the top.
fn role_key(role: FolderRole) -> &'static str {
    match role {
        FolderRole::Toolbar => "1",
        FolderRole::Menu => "2",
        FolderRole::Other => "3",
        FolderRole::Mobile => "4",
    }
}

/// One node of the file, flattened.
struct Flat<'a> {
    node: &'a Node,
    /// Index of the parent folder in the flat list; `None` at the top.
    parent: Option<usize>,
    role: Option<FolderRole>,
    keys: MatchKeys,
}

fn kind_of(node: &Node) -> Kind {
    match node {
        Node::Folder(_) => Kind::Folder,
        Node::Bookmark(_) => Kind::Bookmark,
        Node::Separator(_) => Kind::Separator,
    }
}

fn kind_tag(kind: Kind) -> &'static str {
    match kind {
        Kind::Folder => "f",
        Kind::Bookmark => "b",
        Kind::Separator => "s",
    }
}

fn label(role: Option<FolderRole>, title: &str) -> String {
    match role {
        Some(role) => format!("\u{0}{}", role_guid(role)),
        None => title.to_owned(),
    }
}

fn keys(path: &str, kind: Kind, url: &str, title: &str, separator_index: usize) -> MatchKeys {
    let tag = kind_tag(kind);
    MatchKeys {
        exact: match kind {
            Kind::Separator => format!("{path}\u{1f}{tag}\u{1f}{separator_index}"),
            _ => format!("{path}\u{1f}{tag}\u{1f}{url}\u{1f}{title}"),
        },
        url: (kind == Kind::Bookmark && !url.is_empty()).then(|| format!("{tag}\u{1f}{url}")),
        title: (kind != Kind::Separator && !title.is_empty())
            .then(|| format!("{tag}\u{1f}{title}")),
    }
}

fn flatten(tree: &BookmarkTree) -> Vec<Flat<'_>> {
    let mut flat: Vec<Flat<'_>> = Vec::new();
    // (node, parent index, parent path, index among the parent's separators)
    let mut pending: Vec<(&Node, Option<usize>, String, usize)> = Vec::new();
    let mut separators = 0;
    for node in &tree.roots {
        pending.push((node, None, String::new(), separators));
        if matches!(node, Node::Separator(_)) {
            separators += 1;
        }
    }
    pending.reverse();
    while let Some((node, parent, path, separator_index)) = pending.pop() {
        let role = match (node, parent) {
            (Node::Folder(folder), None) => folder.role,
            _ => None,
        };
        let (url, title) = match node {
            Node::Folder(f) => ("", f.title.as_str()),
            Node::Bookmark(b) => (b.url.as_str(), b.title.as_str()),
            Node::Separator(_) => ("", ""),
        };
        let index = flat.len();
        flat.push(Flat {
            node,
            parent,
            role,
            keys: keys(&path, kind_of(node), url, title, separator_index),
        });
        if let Node::Folder(folder) = node {
            let child_path = format!("{path}\u{1e}{}", label(role, &folder.title));
            let mut separators = 0;
            let mut children = Vec::with_capacity(folder.children.len());
            for child in &folder.children {
                children.push((child, Some(index), child_path.clone(), separators));
                if matches!(child, Node::Separator(_)) {
                    separators += 1;
                }
            }
            pending.extend(children.into_iter().rev());
        }
    }
    flat
}

/// Records `tree` (imported from a file in `format`) on top of `base`, the state of the last
/// sync: every node gets its GUID (the browser's own, or matched against `base`'s tree, or new
/// from `rng`), every difference from `base`'s tree becomes a register write stamped
/// `(base.clock + 1, replica)`, and every item of `base`'s tree missing from the file becomes a
/// tombstone. Only what the format can show is compared: fields it does not carry, roots it
/// does not have and (Chromium) separators are left alone.
///
/// # Errors
/// [`RecordError::Clock`] if `base`'s clock cannot advance.
pub fn record(
    base: &State,
    tree: &BookmarkTree,
    format: Format,
    replica: ReplicaId,
    rng: &mut impl RngCore,
) -> Result<State, RecordError> {
    let clock = base.clock.checked_add(1).ok_or(RecordError::Clock)?;
    let stamp = Stamp { clock, replica };
    let view = View::of(base);
    let scope = scope(format);
    let carries = carries(format);
    let flat = flatten(tree);

    // Roots the file has: only their content is compared.
    let present: HashSet<&str> = flat.iter().filter_map(|f| f.role.map(role_guid)).collect();
    let in_scope = |guid: &str, item: &Item| {
        if guid_role(guid).is_some() {
            return false;
        }
        if !shows(format, scope, item) {
            return false;
        }
        let top = view.top_of(guid);
        if top == ROOT_GUID {
            scope.free_top
        } else {
            present.contains(top)
        }
    };

    // 1. Identities.
    let mut matcher = Matcher::default();
    {
        // Candidates: the live items of the base tree the format shows, in tree order, with
        // the same keys as the file's nodes.
        let mut pending: Vec<(&Guid, String)> = view
            .children_of(ROOT_GUID)
            .iter()
            .rev()
            .map(|g| (g, String::new()))
            .collect();
        let mut separator_counts: HashMap<String, usize> = HashMap::new();
        while let Some((guid, path)) = pending.pop() {
            let Some(item) = base.items.get(guid) else {
                continue;
            };
            let role = guid_role(guid);
            if in_scope(guid, item) {
                let counter = separator_counts.entry(path.clone()).or_default();
                let index = *counter;
                if item.kind == Kind::Separator {
                    *counter += 1;
                }
                let k = keys(&path, item.kind, &item.url.value, &item.title.value, index);
                matcher.add(guid, &k);
            }
            if item.kind == Kind::Folder {
                let child_path = format!("{path}\u{1e}{}", label(role, &item.title.value));
                pending.extend(
                    view.children_of(guid)
                        .iter()
                        .rev()
                        .map(|g| (g, child_path.clone())),
                );
            }
        }
    }
    let mut guids: Vec<Option<Guid>> = vec![None; flat.len()];
    let reverse = if has_native_guids(format) {
        reverse_table(format, base.items.keys())
    } else {
        HashMap::new()
    };
    for (i, f) in flat.iter().enumerate() {
        if let Some(role) = f.role {
            guids[i] = Some(role_guid(role).to_owned());
            continue;
        }
        if !has_native_guids(format) {
            continue;
        }
        let native = node_extra(f.node).get("guid").and_then(Value::as_str);
        let Some(native) = native else { continue };
        let guid = reverse
            .get(native)
            .or_else(|| reverse.get(&native.to_ascii_lowercase()))
            .cloned()
            .or_else(|| own_form(format, native));
        let Some(guid) = guid else { continue };
        let kind_ok = base
            .items
            .get(&guid)
            .is_none_or(|item| item.kind == kind_of(f.node));
        if kind_ok && guid_role(&guid).is_none() && !matcher.is_taken(&guid) {
            matcher.take(&guid);
            guids[i] = Some(guid);
        }
    }
    for pass in 0..3 {
        for (i, f) in flat.iter().enumerate() {
            if guids[i].is_some() {
                continue;
            }
            guids[i] = match pass {
                0 => matcher.exact(&f.keys),
                1 => matcher.by_url(&f.keys),
                _ => matcher.by_title(&f.keys),
            };
        }
    }
    for guid in &mut guids {
        if guid.is_none() {
            let mut fresh = new_guid(rng);
            while base.items.contains_key(&fresh) || matcher.is_taken(&fresh) {
                fresh = new_guid(rng);
            }
            matcher.take(&fresh);
            *guid = Some(fresh);
        }
    }
    let guids: Vec<Guid> = guids.into_iter().map(Option::unwrap_or_default).collect();

    // 2. Fields.
    let mut state = base.clone();
    state.clock = clock;
    let extras_key = format_key(format);
    for (i, f) in flat.iter().enumerate() {
        let guid = &guids[i];
        let kind = kind_of(f.node);
        let mut extra = node_extra(f.node).clone();
        if has_native_guids(format) {
            extra.remove("guid");
        }
        if matches!(format, Format::FirefoxJson | Format::FirefoxJsonLz4) {
            // Written from the position on export.
            extra.remove("index");
        }
        let (title, url, description, tags, keyword, dates) = fields(f.node);
        let item = state.items.entry(guid.clone()).or_insert_with(|| {
            let place = match f.role {
                Some(role) => Place {
                    parent: ROOT_GUID.to_owned(),
                    key: role_key(role).to_owned(),
                },
                // Set below with the positions.
                None => Place {
                    parent: ROOT_GUID.to_owned(),
                    key: "V".to_owned(),
                },
            };
            Item {
                kind,
                title: Reg::new(title.clone(), stamp),
                url: Reg::new(url.clone(), stamp),
                description: Reg::new(description.clone(), stamp),
                tags: Reg::new(tags.clone(), stamp),
                keyword: Reg::new(keyword.clone(), stamp),
                place: Reg::new(place, stamp),
                dates: Reg::new(dates.clone(), stamp),
                extras: BTreeMap::new(),
            }
        });
        match item.extras.get_mut(extras_key) {
            Some(reg) => set(reg, extra, stamp),
            None => {
                item.extras
                    .insert(extras_key.to_owned(), Reg::new(extra, stamp));
            }
        }
        if f.role.is_some() {
            // Browser roots: fixed place, and localised titles are not synced.
            continue;
        }
        set(&mut item.title, title, stamp);
        set(&mut item.url, url, stamp);
        if carries.description {
            set(&mut item.description, description, stamp);
        }
        if carries.tags && kind == Kind::Bookmark {
            set(&mut item.tags, tags, stamp);
        }
        if carries.keyword && kind == Kind::Bookmark {
            set(&mut item.keyword, keyword, stamp);
        }
        if carries.dates {
            set(&mut item.dates, dates, stamp);
        }
    }

    // 3. Positions, folder by folder.
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, f) in flat.iter().enumerate() {
        if f.role.is_some() {
            continue;
        }
        let parent = match f.parent {
            Some(p) => guids[p].as_str(),
            None => ROOT_GUID,
        };
        children.entry(parent).or_default().push(i);
    }
    for (parent, list) in children {
        let seq: Vec<&Guid> = list.iter().map(|&i| &guids[i]).collect();
        let old: Vec<Option<&str>> = seq
            .iter()
            .map(|g| {
                // Only an item that sits where its register says keeps its key (an orphan shown
                // under a surviving ancestor gets a real place there).
                let item = base.items.get(*g)?;
                let shown = view.parent.get(*g).map(String::as_str) == Some(parent);
                (shown && item.place.value.parent == parent)
                    .then_some(item.place.value.key.as_str())
            })
            .collect();
        // Siblings sort by (key, GUID): equal keys (two replicas inserting at one place) are
        // in order when their GUIDs are.
        let sort_keys: Vec<Option<(&str, &str)>> = old
            .iter()
            .zip(&seq)
            .map(|(key, guid)| key.map(|k| (k, guid.as_str())))
            .collect();
        let mut keep = longest_increasing(&sort_keys);
        // New keys go strictly between kept neighbours, so two kept neighbours with equal keys
        // must not have anything new between them: the later one gets a new key too.
        let mut previous_kept: Option<usize> = None;
        for i in 0..seq.len() {
            if !keep[i] {
                continue;
            }
            if let Some(p) = previous_kept {
                if old[p] == old[i] && p + 1 < i {
                    keep[i] = false;
                    continue;
                }
            }
            previous_kept = Some(i);
        }
        let mut next_kept: Vec<Option<&str>> = vec![None; seq.len()];
        let mut upcoming = None;
        for i in (0..seq.len()).rev() {
            next_kept[i] = upcoming;
            if keep[i] {
                upcoming = old[i];
            }
        }
        // Each run of items without a kept key gets keys spread between the kept neighbours.
        let mut previous: Option<&str> = None;
        let mut i = 0;
        while i < seq.len() {
            if keep[i] {
                previous = old[i];
                i += 1;
                continue;
            }
            let end = (i..seq.len()).find(|&j| keep[j]).unwrap_or(seq.len());
            let keys = position::spread(previous, next_kept[i], end - i);
            for (guid, key) in seq[i..end].iter().zip(keys) {
                if let Some(item) = state.items.get_mut(*guid) {
                    item.place = Reg::new(
                        Place {
                            parent: parent.to_owned(),
                            key,
                        },
                        stamp,
                    );
                }
            }
            i = end;
        }
        // Keys grow when items keep being put at one place; before they get long, the folder
        // gets fresh, short keys (one move per child, in the same order).
        let too_long = seq.iter().any(|g| {
            state
                .items
                .get(*g)
                .is_some_and(|i| i.place.value.key.len() > REBALANCE_KEY_LEN)
        });
        if too_long {
            let keys = position::spread(None, None, seq.len());
            for (guid, key) in seq.iter().zip(keys) {
                if let Some(item) = state.items.get_mut(*guid) {
                    item.place = Reg::new(
                        Place {
                            parent: parent.to_owned(),
                            key,
                        },
                        stamp,
                    );
                }
            }
        }
    }

    // 4. Deletions: what the base tree showed in the format's scope and the file lacks.
    let present_guids: HashSet<&Guid> = guids.iter().collect();
    for guid in view.preorder() {
        let Some(item) = base.items.get(&guid) else {
            continue;
        };
        if present_guids.contains(&guid) || !in_scope(&guid, item) {
            continue;
        }
        let tombstone = Tombstone {
            stamp,
            seen: item.stamps(),
        };
        let joined = match state.tombstones.get(&guid) {
            Some(old) => old.join(&tombstone),
            None => tombstone,
        };
        state.tombstones.insert(guid, joined);
    }
    Ok(state)
}

fn set<T: PartialEq>(reg: &mut Reg<T>, value: T, stamp: Stamp) {
    if reg.value != value {
        reg.value = value;
        reg.stamp = stamp;
    }
}

fn node_extra(node: &Node) -> &Extra {
    match node {
        Node::Folder(f) => &f.extra,
        Node::Bookmark(b) => &b.extra,
        Node::Separator(s) => &s.extra,
    }
}

type Fields = (
    String,
    String,
    Option<String>,
    Vec<String>,
    Option<String>,
    Dates,
);

fn fields(node: &Node) -> Fields {
    match node {
        Node::Folder(f) => (
            f.title.clone(),
            String::new(),
            f.description.clone(),
            Vec::new(),
            None,
            Dates {
                added: f.added,
                modified: f.modified,
                visited: None,
            },
        ),
        Node::Bookmark(b) => (
            b.title.clone(),
            b.url.clone(),
            b.description.clone(),
            b.tags.clone(),
            b.keyword.clone(),
            Dates {
                added: b.added,
                modified: b.modified,
                visited: b.visited,
            },
        ),
        Node::Separator(_) => (
            String::new(),
            String::new(),
            None,
            Vec::new(),
            None,
            Dates::default(),
        ),
    }
}

/// Marks a longest strictly increasing subsequence of the known keys: those items keep their
/// keys, the others get new ones between their kept neighbours.
fn longest_increasing<K: Ord + Copy>(keys: &[Option<K>]) -> Vec<bool> {
    // Patience sorting: tails[l] = index of the smallest tail of an increasing run of length l+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; keys.len()];
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key else { continue };
        let at = tails.partition_point(|&t| keys[t].is_some_and(|k| k < *key));
        previous[i] = at.checked_sub(1).and_then(|p| tails.get(p).copied());
        if at == tails.len() {
            tails.push(i);
        } else {
            tails[at] = i;
        }
    }
    let mut keep = vec![false; keys.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        keep[i] = true;
        at = previous[i];
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::longest_increasing;

    #[test]
    fn longest_increasing_keeps_the_most_keys() {
        let keys = [Some("B"), Some("A"), None, Some("C"), Some("D"), Some("C")];
        let keep = longest_increasing(&keys);
        assert_eq!(keep.iter().filter(|k| **k).count(), 3);
        let kept: Vec<&str> = keys
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .filter_map(|(key, _)| *key)
            .collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert!(!keep[2]);
    }
}
