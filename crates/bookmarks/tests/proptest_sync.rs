//! Property test: replicas make random edits (add, edit, move, reorder, delete, folders
//! included) in their browser, record them, and sync pairwise in random order through the
//! merge. At the end every replica holds the same tree, with no duplicate GUID, no item lost
//! that no replica deleted, and every replica's last edit of a title or URL present unless a
//! later edit (higher stamp) replaced it: the conflict rule, the only rule that overrides an
//! edit (deletions lose against edits).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bookmarks::sync::{live_items, materialize, Stamp, State};
use bookmarks::{BookmarkTree, Folder, FolderRole, Format, Node};
use common::*;
use proptest::prelude::*;

const REPLICAS: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    /// (replica, operation, three random numbers)
    Edit(usize, u8, u16, u16, u16),
    /// Sync two replicas.
    Sync(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..REPLICAS, 0u8..7, any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(r, op, a, b, c)| Step::Edit(r, op, a, b, c)),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| Step::Sync(a, b)),
    ]
}

/// Paths (child indices from the roots) of every node, in pre-order.
fn paths(tree: &BookmarkTree) -> Vec<Vec<usize>> {
    fn walk(nodes: &[Node], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        for (i, node) in nodes.iter().enumerate() {
            prefix.push(i);
            out.push(prefix.clone());
            if let Node::Folder(f) = node {
                walk(&f.children, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    let mut prefix = Vec::new();
    walk(&tree.roots, &mut prefix, &mut out);
    out
}

fn children_at<'a>(tree: &'a mut BookmarkTree, path: &[usize]) -> Option<&'a mut Vec<Node>> {
    let mut nodes = &mut tree.roots;
    for &i in path {
        match nodes.get_mut(i)? {
            Node::Folder(f) => nodes = &mut f.children,
            _ => return None,
        }
    }
    Some(nodes)
}

fn node_at<'a>(tree: &'a mut BookmarkTree, path: &[usize]) -> Option<&'a mut Node> {
    let (last, parent) = path.split_last()?;
    children_at(tree, parent)?.get_mut(*last)
}

fn guids_in(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Bookmark(b) => out.push(guid_of(&b.extra)),
        Node::Separator(s) => out.push(guid_of(&s.extra)),
        Node::Folder(f) => {
            if f.role.is_none() {
                out.push(guid_of(&f.extra));
            }
            for child in &f.children {
                guids_in(child, out);
            }
        }
    }
}

fn all_guids(tree: &BookmarkTree) -> Vec<String> {
    let mut out = Vec::new();
    for root in &tree.roots {
        guids_in(root, &mut out);
    }
    out
}

/// The parent GUID each node is shown under (roots: their role GUID).
fn parents(tree: &BookmarkTree) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut pending: Vec<(&Node, String)> = Vec::new();
    for root in &tree.roots {
        if let Node::Folder(f) = root {
            let guid = f
                .extra
                .get("guid")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            for child in &f.children {
                pending.push((child, guid.to_owned()));
            }
        }
    }
    while let Some((node, parent)) = pending.pop() {
        let extra = match node {
            Node::Bookmark(b) => &b.extra,
            Node::Separator(s) => &s.extra,
            Node::Folder(f) => &f.extra,
        };
        let guid = extra
            .get("guid")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        if let Node::Folder(f) = node {
            for child in &f.children {
                pending.push((child, guid.clone()));
            }
        }
        out.insert(guid, parent);
    }
    out
}

fn initial() -> State {
    let mut tree = toolbar(vec![
        b("i1", "One", "https://one.example/"),
        f(
            "i2",
            "Dir",
            vec![b("i3", "Three", "https://three.example/")],
        ),
        sep("i4"),
    ]);
    tree.roots.push(Node::Folder(Folder {
        title: "menu".into(),
        role: Some(FolderRole::Menu),
        children: vec![b("i5", "Five", "https://five.example/")],
        ..Folder::default()
    }));
    rec(&State::default(), tree, 100)
}

/// (item, field) → (value, stamp) of a replica's last edit.
type LastEdits = BTreeMap<(String, &'static str), (String, Stamp)>;

struct World {
    states: Vec<State>,
    bases: HashMap<(usize, usize), State>,
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
    /// Each replica's last title and URL edits: (item, field) → (value, stamp).
    last_edits: Vec<LastEdits>,
    counter: usize,
}

impl World {
    fn edit(&mut self, replica: usize, op: u8, a: u16, b: u16, c: u16) {
        let state = &self.states[replica];
        let mut tree = materialize(state, Format::FirefoxJson);
        let all = paths(&tree);
        // Non-root nodes.
        let items: Vec<&Vec<usize>> = all.iter().filter(|p| p.len() > 1).collect();
        let folders: Vec<&Vec<usize>> = all
            .iter()
            .filter(|p| {
                let mut t = tree.clone();
                matches!(node_at(&mut t, p), Some(Node::Folder(_)))
            })
            .collect();
        let pick = |list: &[&Vec<usize>], n: u16| -> Option<Vec<usize>> {
            (!list.is_empty()).then(|| list[n as usize % list.len()].clone())
        };
        let mut edited: Option<(String, &'static str, String)> = None;
        match op {
            // Add a bookmark or a folder.
            0 | 1 => {
                let Some(folder) = pick(&folders, a) else {
                    return;
                };
                self.counter += 1;
                let name = format!("r{replica}n{}", self.counter);
                let node = if op == 0 {
                    common::b(
                        &name,
                        &format!("B{}", self.counter),
                        &format!("https://{name}.example/"),
                    )
                } else {
                    common::f(&name, &format!("F{}", self.counter), vec![])
                };
                self.created.insert(name);
                let Some(children) = children_at(&mut tree, &folder) else {
                    return;
                };
                let at = b as usize % (children.len() + 1);
                children.insert(at, node);
            }
            // Edit a title.
            2 => {
                let Some(path) = pick(&items, a) else { return };
                let title = format!("T{b}");
                match node_at(&mut tree, &path) {
                    Some(Node::Bookmark(bm)) => {
                        bm.title = title.clone();
                        edited = Some((guid_of(&bm.extra), "title", title));
                    }
                    Some(Node::Folder(f)) => {
                        f.title = title.clone();
                        edited = Some((guid_of(&f.extra), "title", title));
                    }
                    _ => return,
                }
            }
            // Edit a URL.
            3 => {
                let Some(path) = pick(&items, a) else { return };
                if let Some(Node::Bookmark(bm)) = node_at(&mut tree, &path) {
                    bm.url = format!("https://u{b}.example/");
                    edited = Some((guid_of(&bm.extra), "url", bm.url.clone()));
                }
            }
            // Move (to any folder not inside the node) or reorder.
            4 | 5 => {
                let Some(path) = pick(&items, a) else { return };
                let target = if op == 4 {
                    match pick(&folders, b) {
                        Some(t) if !t.starts_with(&path) => t,
                        _ => return,
                    }
                } else {
                    path[..path.len() - 1].to_vec()
                };
                let (last, parent) = path.split_last().unwrap_or((&0, &[]));
                let Some(siblings) = children_at(&mut tree, parent) else {
                    return;
                };
                let node = siblings.remove(*last);
                // Removing the node may shift the target's path.
                let mut target = target;
                if target.len() > parent.len()
                    && target[..parent.len()] == *parent
                    && target[parent.len()] > *last
                {
                    target[parent.len()] -= 1;
                }
                let Some(children) = children_at(&mut tree, &target) else {
                    return;
                };
                let at = c as usize % (children.len() + 1);
                children.insert(at, node);
            }
            // Delete (a folder with everything in it).
            _ => {
                let Some(path) = pick(&items, a) else { return };
                let (last, parent) = path.split_last().unwrap_or((&0, &[]));
                let Some(siblings) = children_at(&mut tree, parent) else {
                    return;
                };
                let node = siblings.remove(*last);
                let mut gone = Vec::new();
                guids_in(&node, &mut gone);
                self.deleted.extend(gone);
            }
        }
        let new_state = rec(&self.states[replica], tree.clone(), replica as u64 + 1);
        // Recording is faithful: the state shows exactly the edited tree.
        assert_eq!(
            strip(&materialize(&new_state, Format::FirefoxJson)),
            strip(&tree),
            "recorded state differs from the edited tree"
        );
        if let Some((guid, field, value)) = edited {
            let item = &new_state.items[&pad(&guid)];
            let stamp = if field == "title" {
                item.title.stamp
            } else {
                item.url.stamp
            };
            self.last_edits[replica].insert((pad(&guid), field), (value, stamp));
        }
        self.states[replica] = new_state;
    }

    fn sync(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        let key = (a.min(b), a.max(b));
        let base = self.bases.get(&key).cloned().unwrap_or_else(initial);
        let merged = merge_forced(&base, &self.states[a], &self.states[b]).state;
        self.states[a] = merged.clone();
        self.states[b] = merged.clone();
        self.bases.insert(key, merged);
    }
}

/// The tree without dates (the state adds none) for comparison.
fn strip(tree: &BookmarkTree) -> String {
    let mut roots: Vec<String> = Vec::new();
    for root in &tree.roots {
        if let Node::Folder(f) = root {
            roots.push(format!("{:?}:{}", f.role, render(&f.children)));
        }
    }
    roots.join(" / ")
}

fn render(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| match n {
            Node::Bookmark(b) => format!("{}:{}:{}", guid_of(&b.extra), b.title, b.url),
            Node::Folder(f) => {
                format!("{}:{}({})", guid_of(&f.extra), f.title, render(&f.children))
            }
            Node::Separator(s) => format!("|{}", guid_of(&s.extra)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replicas_syncing_pairwise_in_random_order_converge(steps in prop::collection::vec(step(), 1..60)) {
        let start = initial();
        let mut world = World {
            states: vec![start.clone(); REPLICAS],
            bases: HashMap::new(),
            created: ["i1", "i2", "i3", "i4", "i5"].iter().map(|s| (*s).to_owned()).collect(),
            deleted: BTreeSet::new(),
            last_edits: vec![BTreeMap::new(); REPLICAS],
            counter: 0,
        };
        for step in steps {
            match step {
                Step::Edit(r, op, a, b, c) => world.edit(r, op, a, b, c),
                Step::Sync(a, b) => world.sync(a, b),
            }
        }
        // Sync along a chain and back: everyone has everything.
        for k in 0..REPLICAS - 1 {
            world.sync(k, k + 1);
        }
        for k in (0..REPLICAS - 1).rev() {
            world.sync(k, k + 1);
        }
        let first = world.states[0].clone();
        for state in &world.states {
            prop_assert_eq!(state, &first);
        }
        let tree = materialize(&first, Format::FirefoxJson);
        let guids = all_guids(&tree);
        let unique: BTreeSet<&String> = guids.iter().collect();
        prop_assert_eq!(unique.len(), guids.len(), "duplicate GUIDs in {:?}", guids);
        prop_assert_eq!(guids.len(), live_items(&first).len(), "every live item is shown");
        for name in world.created.difference(&world.deleted) {
            prop_assert!(unique.contains(name), "{} was lost (no replica deleted it)", name);
        }
        // Reading back what the sync wrote changes nothing that shows, and records nothing but
        // the new place of items rescued from a deleted folder (their register still names
        // it); a second read-back records nothing at all.
        let shown = strip(&materialize(&first, Format::FirefoxJson));
        let reread = rec(&first, materialize(&first, Format::FirefoxJson), 1);
        prop_assert_eq!(&reread.tombstones, &first.tombstones);
        prop_assert_eq!(strip(&materialize(&reread, Format::FirefoxJson)), shown.clone());
        let shown_parents = parents(&materialize(&first, Format::FirefoxJson));
        for (guid, item) in &reread.items {
            let before = &first.items[guid];
            if item != before {
                let rescued = shown_parents.get(guid.as_str()) != Some(&before.place.value.parent);
                let mut same = item.clone();
                same.place = before.place.clone();
                prop_assert!(rescued && same == *before, "read-back changed {}", guid);
            }
        }
        let again = rec(&reread, materialize(&reread, Format::FirefoxJson), 1);
        prop_assert_eq!(&again.items, &reread.items);
        let live = live_items(&first);
        for edits in &world.last_edits {
            for ((guid, field), (value, stamp)) in edits {
                let Some(item) = first.items.get(guid) else { continue };
                if !live.contains(guid) {
                    continue;
                }
                let (now, now_stamp) = if *field == "title" {
                    (&item.title.value, item.title.stamp)
                } else {
                    (&item.url.value, item.url.stamp)
                };
                prop_assert!(
                    now == value || now_stamp > *stamp,
                    "the last {} edit of {} ({:?}) is gone without a later edit", field, guid, value
                );
            }
        }
    }
}
