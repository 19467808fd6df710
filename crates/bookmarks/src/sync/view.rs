//! The tree a state stands for: live items, each under its nearest live folder, siblings in
//! position-key order, cycles broken; and its export as a [`BookmarkTree`] for one format.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::identity::native_guid;
use super::{guid_role, role_guid, Guid, Item, Kind, State, ROOT_GUID};
use crate::model::{Bookmark, BookmarkTree, Folder, FolderRole, Node, Separator};
use crate::{Format, MAX_DEPTH};

/// Whether `format` can show `item` at all (apart from its root): Chromium has no separators
/// and drops bookmarks whose URL it cannot parse.
pub(crate) fn shows(format: Format, scope: Scope, item: &Item) -> bool {
    match item.kind {
        Kind::Separator => scope.separators,
        Kind::Bookmark if format == Format::Chromium => {
            crate::chromium::accepts_url(&item.url.value)
        }
        _ => true,
    }
}

/// What part of the tree a format has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope {
    /// The browser roots it has, in its own order.
    pub(crate) roots: &'static [FolderRole],
    /// Whether it has free top-level items (children of [`ROOT_GUID`] that are not roots).
    pub(crate) free_top: bool,
    /// Whether it has separators.
    pub(crate) separators: bool,
}

const ALL_ROOTS: &[FolderRole] = &[
    FolderRole::Toolbar,
    FolderRole::Menu,
    FolderRole::Other,
    FolderRole::Mobile,
];

pub(crate) fn scope(format: Format) -> Scope {
    match format {
        Format::Chromium => Scope {
            roots: &[FolderRole::Toolbar, FolderRole::Other, FolderRole::Mobile],
            free_top: false,
            separators: false,
        },
        Format::Falkon => Scope {
            roots: &[FolderRole::Toolbar, FolderRole::Menu, FolderRole::Other],
            free_top: false,
            separators: true,
        },
        Format::FirefoxJson | Format::FirefoxJsonLz4 => Scope {
            roots: &[
                FolderRole::Menu,
                FolderRole::Toolbar,
                FolderRole::Other,
                FolderRole::Mobile,
            ],
            free_top: false,
            separators: true,
        },
        Format::NetscapeHtml => Scope {
            roots: &[FolderRole::Toolbar, FolderRole::Other],
            free_top: true,
            separators: true,
        },
        Format::Xbel => Scope {
            roots: &[],
            free_top: true,
            separators: true,
        },
        Format::Canonical => Scope {
            roots: ALL_ROOTS,
            free_top: true,
            separators: true,
        },
    }
}

/// A child to sort: (key of the place it shows at, its own key), GUID.
type SortEntry<'a> = ((&'a str, &'a str), &'a str);

/// The live tree of a state.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Effective parent of every live item (roots: [`ROOT_GUID`]).
    pub(crate) parent: HashMap<Guid, Guid>,
    /// Children of every live folder and of [`ROOT_GUID`], in order.
    pub(crate) children: HashMap<Guid, Vec<Guid>>,
}

impl View {
    pub(crate) fn of(state: &State) -> View {
        let alive: HashSet<&str> = state
            .items
            .keys()
            .filter(|g| state.is_alive(g))
            .map(String::as_str)
            .collect();
        let usable = |guid: &str| {
            alive.contains(guid)
                && state
                    .items
                    .get(guid)
                    .is_some_and(|i| i.kind == Kind::Folder)
        };
        // Where the item of a broken cycle goes: the first root that exists.
        let fallback = [
            FolderRole::Other,
            FolderRole::Toolbar,
            FolderRole::Menu,
            FolderRole::Mobile,
        ]
        .into_iter()
        .map(role_guid)
        .find(|g| usable(g))
        .unwrap_or(ROOT_GUID);
        let key_of = |guid: &str| {
            state
                .items
                .get(guid)
                .map_or("", |i| i.place.value.key.as_str())
        };
        // Nearest live folder above each live item, through deleted folders.
        let mut parent: HashMap<&str, &str> = HashMap::with_capacity(alive.len());
        let mut sort_key: HashMap<&str, (&str, &str)> = HashMap::new();
        for &guid in &alive {
            let Some(item) = state.items.get(guid) else {
                continue;
            };
            if guid_role(guid).is_some() {
                parent.insert(guid, ROOT_GUID);
                continue;
            }
            let mut up = item.place.value.parent.as_str();
            let mut steps = 0;
            while up != ROOT_GUID && !usable(up) {
                steps += 1;
                match state.items.get(up) {
                    Some(dead) if steps <= state.items.len() => {
                        // The item shows where the outermost deleted folder was.
                        sort_key.insert(guid, (dead.place.value.key.as_str(), key_of(guid)));
                        up = &dead.place.value.parent;
                    }
                    _ => {
                        up = fallback;
                        break;
                    }
                }
            }
            parent.insert(guid, up);
        }
        // Break cycles among live items: the member with the latest move goes to the fallback.
        let mut done: HashSet<&str> = HashSet::with_capacity(parent.len());
        let mut guids: Vec<&str> = parent.keys().copied().collect();
        guids.sort_unstable();
        for start in guids {
            let mut path: Vec<&str> = Vec::new();
            let mut on_path: HashSet<&str> = HashSet::new();
            let mut at = start;
            loop {
                if at == ROOT_GUID || done.contains(at) {
                    break;
                }
                if !on_path.insert(at) {
                    // `at` is on a cycle: the cycle is path[from..].
                    let from = path.iter().position(|g| *g == at).unwrap_or(0);
                    let cycle = path.get(from..).unwrap_or_default();
                    let breaker = cycle
                        .iter()
                        .copied()
                        .max_by_key(|g| (state.items.get(*g).map(|i| i.place.stamp), *g));
                    if let Some(breaker) = breaker {
                        let target = if breaker == fallback {
                            ROOT_GUID
                        } else {
                            fallback
                        };
                        parent.insert(breaker, target);
                    }
                    // Walk again from the start with the cycle broken.
                    path.clear();
                    on_path.clear();
                    at = start;
                    continue;
                }
                path.push(at);
                at = parent.get(at).copied().unwrap_or(ROOT_GUID);
            }
            done.extend(path);
        }
        // Bound the nesting, so a written-back file always imports again and no walk goes
        // deep: an item nested deeper than the import limit goes to the fallback root. Depth
        // is computed top-down, so the result does not depend on the order of this loop.
        let mut depth: HashMap<&str, usize> = HashMap::with_capacity(parent.len());
        let mut keys: Vec<&str> = parent.keys().copied().collect();
        keys.sort_unstable();
        for start in keys {
            let mut path = Vec::new();
            let mut at = start;
            let mut base_depth = 0;
            while at != ROOT_GUID {
                if let Some(&d) = depth.get(at) {
                    base_depth = d;
                    break;
                }
                path.push(at);
                at = parent.get(at).copied().unwrap_or(ROOT_GUID);
            }
            let mut d = base_depth;
            for &node in path.iter().rev() {
                d += 1;
                if d > MAX_DEPTH {
                    parent.insert(node, fallback);
                    d = if fallback == ROOT_GUID { 1 } else { 2 };
                }
                depth.insert(node, d);
            }
        }
        // Siblings by (key of the place they show at, own key, GUID), each looked up once.
        let mut lists: HashMap<&str, Vec<SortEntry<'_>>> = HashMap::new();
        for (&child, &up) in &parent {
            let key = sort_key.get(child).copied().unwrap_or((key_of(child), ""));
            lists.entry(up).or_default().push((key, child));
        }
        let children: HashMap<Guid, Vec<Guid>> = lists
            .into_iter()
            .map(|(up, mut list)| {
                list.sort_unstable();
                (
                    up.to_owned(),
                    list.into_iter().map(|(_, g)| g.to_owned()).collect(),
                )
            })
            .collect();
        View {
            parent: parent
                .into_iter()
                .map(|(c, p)| (c.to_owned(), p.to_owned()))
                .collect(),
            children,
        }
    }

    pub(crate) fn children_of(&self, guid: &str) -> &[Guid] {
        self.children
            .get(guid)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The root (a role GUID or [`ROOT_GUID`] for free top-level items) an item sits in.
    pub(crate) fn top_of<'a>(&'a self, guid: &'a str) -> &'a str {
        let mut at = guid;
        for _ in 0..=self.parent.len() {
            match self.parent.get(at) {
                Some(up) if up == ROOT_GUID => {
                    return if guid_role(at).is_some() {
                        at
                    } else {
                        ROOT_GUID
                    };
                }
                Some(up) => at = up,
                None => return ROOT_GUID,
            }
        }
        ROOT_GUID
    }

    /// Live items in pre-order (roots excluded).
    pub(crate) fn preorder(&self) -> Vec<Guid> {
        let mut out = Vec::with_capacity(self.parent.len());
        let mut pending: Vec<&Guid> = self.children_of(ROOT_GUID).iter().rev().collect();
        while let Some(guid) = pending.pop() {
            if guid_role(guid).is_none() {
                out.push(guid.clone());
            }
            pending.extend(self.children_of(guid).iter().rev());
        }
        out
    }
}

/// The GUIDs of the live items of `state` in tree order (roots excluded).
pub fn live_items(state: &State) -> Vec<Guid> {
    View::of(state).preorder()
}

/// The tree `state` stands for, as `format` has it: only the roots the format has (see the
/// [module documentation](super)), each node with the format's own unknown fields and, for
/// Chromium and Firefox, its GUID in the form the browser accepts (`extra["guid"]`).
/// File-level extras are left empty: take them from the file being replaced.
pub fn materialize(state: &State, format: Format) -> BookmarkTree {
    let view = View::of(state);
    let scope = scope(format);
    let mut roots = Vec::new();
    for &role in scope.roots {
        let guid = role_guid(role);
        if let Some(item) = state.items.get(guid) {
            roots.push(node(state, &view, format, scope, guid, item, Some(role)));
        }
    }
    if scope.free_top {
        for guid in view.children_of(ROOT_GUID) {
            if guid_role(guid).is_some() {
                continue;
            }
            if let Some(item) = state.items.get(guid) {
                if !shows(format, scope, item) {
                    continue;
                }
                roots.push(node(state, &view, format, scope, guid, item, None));
            }
        }
    }
    BookmarkTree {
        roots,
        extra: BTreeMap::new(),
    }
}

fn node(
    state: &State,
    view: &View,
    format: Format,
    scope: Scope,
    guid: &str,
    item: &Item,
    role: Option<FolderRole>,
) -> Node {
    let mut extra = item
        .extras
        .get(format_key(format))
        .map(|r| r.value.clone())
        .unwrap_or_default();
    if has_native_guids(format) {
        let native = match (format, role) {
            (Format::Chromium, Some(role)) => crate::chromium::root_guid(role)
                .map_or_else(|| native_guid(format, guid), str::to_owned),
            _ => native_guid(format, guid),
        };
        extra.insert("guid".to_owned(), Value::String(native));
    }
    let dates = &item.dates.value;
    match item.kind {
        Kind::Separator => Node::Separator(Separator { extra }),
        Kind::Bookmark => Node::Bookmark(Bookmark {
            title: item.title.value.clone(),
            url: item.url.value.clone(),
            description: item.description.value.clone(),
            tags: item.tags.value.clone(),
            keyword: item.keyword.value.clone(),
            added: dates.added,
            modified: dates.modified,
            visited: dates.visited,
            extra,
        }),
        Kind::Folder => {
            let mut children = Vec::new();
            for child in view.children_of(guid) {
                let Some(child_item) = state.items.get(child) else {
                    continue;
                };
                if !shows(format, scope, child_item) {
                    continue;
                }
                children.push(node(state, view, format, scope, child, child_item, None));
            }
            Node::Folder(Folder {
                title: item.title.value.clone(),
                role,
                description: item.description.value.clone(),
                children,
                added: dates.added,
                modified: dates.modified,
                extra,
            })
        }
    }
}

/// Formats whose nodes carry the browser's GUID.
pub(crate) fn has_native_guids(format: Format) -> bool {
    matches!(
        format,
        Format::Chromium | Format::FirefoxJson | Format::FirefoxJsonLz4
    )
}

/// The key of a format's extras in [`Item::extras`] (the two Firefox forms share one).
pub(crate) fn format_key(format: Format) -> &'static str {
    match format {
        Format::FirefoxJsonLz4 => Format::FirefoxJson.name(),
        other => other.name(),
    }
}
