//! One test per merge rule, each named after its scenario.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bookmarks::sync::{
    self, live_items, materialize, merge, native_guid, record, Change, Field, MergeError,
    MergeOptions, Side, State,
};
use bookmarks::{BookmarkTree, Format, Node};
use common::*;

const A: u64 = 1;
const B: u64 = 2;

/// The base every scenario starts from: a synced toolbar `x y F(p q G(r)) z`.
fn base() -> State {
    let tree = toolbar(vec![
        b("x", "X", "https://x.example/"),
        b("y", "Y", "https://y.example/"),
        f(
            "F",
            "Folder",
            vec![
                b("p", "P", "https://p.example/"),
                b("q", "Q", "https://q.example/"),
                f("G", "Sub", vec![b("r", "R", "https://r.example/")]),
            ],
        ),
        b("z", "Z", "https://z.example/"),
    ]);
    rec(&State::default(), tree, 9)
}

fn base_tree() -> Vec<Node> {
    match materialize(&base(), Format::FirefoxJson).roots.remove(0) {
        Node::Folder(f) => f.children,
        _ => unreachable!(),
    }
}

/// Applies `edit` to the base toolbar and records it as `replica`.
fn edited(replica: u64, edit: impl FnOnce(&mut Vec<Node>)) -> State {
    let mut children = base_tree();
    edit(&mut children);
    rec(&base(), toolbar(children), replica)
}

fn bookmark_mut<'a>(nodes: &'a mut [Node], name: &str) -> &'a mut bookmarks::Bookmark {
    for node in nodes {
        match node {
            Node::Bookmark(b) if guid_of(&b.extra) == name => return b,
            Node::Folder(f) if contains(&f.children, name) => {
                return bookmark_mut(&mut f.children, name);
            }
            _ => {}
        }
    }
    panic!("no bookmark {name}");
}

fn contains(nodes: &[Node], name: &str) -> bool {
    nodes.iter().any(|n| match n {
        Node::Bookmark(b) => guid_of(&b.extra) == name,
        Node::Separator(s) => guid_of(&s.extra) == name,
        Node::Folder(f) => guid_of(&f.extra) == name || contains(&f.children, name),
    })
}

fn folder_mut<'a>(nodes: &'a mut Vec<Node>, name: &str) -> &'a mut Vec<Node> {
    if name.is_empty() {
        return nodes;
    }
    for node in nodes.iter_mut() {
        if let Node::Folder(f) = node {
            if guid_of(&f.extra) == name {
                return &mut f.children;
            }
            if contains(&f.children, name) {
                return folder_mut(&mut f.children, name);
            }
        }
    }
    panic!("no folder {name}");
}

/// Removes a node anywhere and returns it.
fn take(nodes: &mut Vec<Node>, name: &str) -> Node {
    if let Some(i) = nodes.iter().position(|n| match n {
        Node::Bookmark(b) => guid_of(&b.extra) == name,
        Node::Folder(f) => guid_of(&f.extra) == name,
        Node::Separator(s) => guid_of(&s.extra) == name,
    }) {
        return nodes.remove(i);
    }
    for node in nodes.iter_mut() {
        if let Node::Folder(f) = node {
            if contains(&f.children, name) {
                return take(&mut f.children, name);
            }
        }
    }
    panic!("no node {name}");
}

/// Merges both ways and checks that both give the same state.
fn both_ways(local: &State, remote: &State) -> State {
    let ab = merge_forced(&base(), local, remote).state;
    let ba = merge_forced(&base(), remote, local).state;
    assert_eq!(ab, ba, "the merge must not depend on which side is local");
    assert_eq!(outline(&ab), outline(&ba));
    ab
}

const BASE_OUTLINE: &str = "x:X y:Y F(p:P q:Q G(r:R)) z:Z";

#[test]
fn base_outline_is_the_starting_point() {
    assert_eq!(outline(&base()), BASE_OUTLINE);
    // Recording the same tree again changes nothing.
    let again = rec(&base(), toolbar(base_tree()), A);
    assert_eq!(again.items, base().items);
    assert!(again.tombstones.is_empty());
}

#[test]
fn title_edited_on_one_side_wins_over_no_change() {
    let local = edited(A, |t| bookmark_mut(t, "x").title = "X2".into());
    let remote = base();
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "x:X2 y:Y F(p:P q:Q G(r:R)) z:Z");
    let diff = merge_forced(&base(), &local, &remote).diff;
    assert!(diff.local.is_empty(), "{}", diff.to_text());
    assert_eq!(diff.remote.len(), 1, "{}", diff.to_text());
    assert!(diff.conflicts.is_empty());
}

#[test]
fn same_url_edit_on_both_sides_is_one_change_without_conflict() {
    let local = edited(A, |t| {
        bookmark_mut(t, "y").url = "https://new.example/".into()
    });
    let remote = edited(B, |t| {
        bookmark_mut(t, "y").url = "https://new.example/".into()
    });
    let merged = merge_forced(&base(), &local, &remote);
    assert!(merged.diff.conflicts.is_empty());
    assert!(merged.diff.is_empty(), "{}", merged.diff.to_text());
    assert_eq!(
        merged.state.items[&pad("y")].url.value,
        "https://new.example/"
    );
    assert_eq!(live_items(&merged.state).len(), 8);
}

#[test]
fn conflicting_title_edits_at_the_same_clock_go_to_the_higher_replica_id() {
    let local = edited(A, |t| bookmark_mut(t, "x").title = "from A".into());
    let remote = edited(B, |t| bookmark_mut(t, "x").title = "from B".into());
    let merged = both_ways(&local, &remote);
    assert_eq!(merged.items[&pad("x")].title.value, "from B");
    let diff = merge_forced(&base(), &local, &remote).diff;
    assert_eq!(diff.conflicts, vec![(pad("x"), Field::Title, Side::Remote)]);
}

#[test]
fn conflicting_edits_go_to_the_later_logical_clock_before_the_replica_id() {
    // A edits twice (clock 3), B once (clock 2): A's edit is later although A's id is lower.
    let once = edited(A, |t| bookmark_mut(t, "x").title = "A first".into());
    let mut tree = materialize(&once, Format::FirefoxJson);
    if let Node::Folder(t) = &mut tree.roots[0] {
        bookmark_mut(&mut t.children, "x").title = "A second".into();
    }
    let local = rec(&once, tree, A);
    let remote = edited(B, |t| bookmark_mut(t, "x").title = "from B".into());
    assert!(local.clock > remote.clock);
    let merged = both_ways(&local, &remote);
    assert_eq!(merged.items[&pad("x")].title.value, "A second");
}

#[test]
fn different_fields_edited_on_each_side_both_apply() {
    let local = edited(A, |t| bookmark_mut(t, "p").title = "P2".into());
    let remote = edited(B, |t| {
        bookmark_mut(t, "p").url = "https://p2.example/".into()
    });
    let merged = both_ways(&local, &remote);
    let p = &merged.items[&pad("p")];
    assert_eq!(
        (p.title.value.as_str(), p.url.value.as_str()),
        ("P2", "https://p2.example/")
    );
}

#[test]
fn bookmark_edited_on_one_side_and_deleted_on_the_other_is_revived() {
    let local = edited(A, |t| bookmark_mut(t, "z").title = "Z edited".into());
    let remote = edited(B, |t| {
        take(t, "z");
    });
    assert_eq!(outline(&remote), "x:X y:Y F(p:P q:Q G(r:R))");
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "x:X y:Y F(p:P q:Q G(r:R)) z:Z edited");
}

#[test]
fn bookmark_deleted_on_one_side_and_untouched_on_the_other_stays_deleted() {
    let local = base();
    let remote = edited(B, |t| {
        take(t, "z");
    });
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "x:X y:Y F(p:P q:Q G(r:R))");
    let diff = merge_forced(&base(), &local, &remote).diff;
    assert_eq!(diff.removed(Side::Local), 1);
}

#[test]
fn folder_deleted_on_one_side_keeps_children_added_on_the_other_under_the_nearest_surviving_parent()
{
    // Remote deletes F (with p, q, G, r); local adds n into G and edits nothing else.
    let local = edited(A, |t| {
        folder_mut(t, "G").push(b("n", "New", "https://n.example/"));
    });
    let remote = edited(B, |t| {
        take(t, "F");
    });
    let merged = both_ways(&local, &remote);
    // F and G are gone; n goes to F's parent, the toolbar, where F was.
    assert_eq!(outline(&merged), "x:X y:Y n:New z:Z");
}

#[test]
fn folder_deleted_on_one_side_with_a_child_edited_on_the_other_keeps_the_edited_child() {
    let local = edited(A, |t| bookmark_mut(t, "q").title = "Q edited".into());
    let remote = edited(B, |t| {
        take(t, "F");
    });
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "x:X y:Y q:Q edited z:Z");
}

#[test]
fn new_remote_item_is_placed_where_it_was_placed_not_at_the_top() {
    let remote = edited(B, |t| {
        t.insert(2, b("n", "New", "https://n.example/"));
        folder_mut(t, "F").insert(1, b("m", "M", "https://m.example/"));
    });
    let local = edited(A, |t| bookmark_mut(t, "x").title = "X2".into());
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "x:X2 y:Y n:New F(p:P m:M q:Q G(r:R)) z:Z");
}

#[test]
fn moved_item_is_a_move_not_a_delete_and_an_add() {
    let remote = edited(B, |t| {
        let x = take(t, "x");
        folder_mut(t, "G").push(x);
    });
    let merged = merge_forced(&base(), &base(), &remote);
    assert_eq!(outline(&merged.state), "y:Y F(p:P q:Q G(r:R x:X)) z:Z");
    assert_eq!(
        merged.diff.local,
        vec![Change::Moved {
            guid: pad("x"),
            from: "toolbar_____".into(),
            to: pad("G"),
        }]
    );
}

#[test]
fn same_item_moved_to_two_folders_ends_in_one_place() {
    let local = edited(A, |t| {
        let z = take(t, "z");
        folder_mut(t, "F").push(z);
    });
    let remote = edited(B, |t| {
        let z = take(t, "z");
        folder_mut(t, "G").push(z);
    });
    let merged = both_ways(&local, &remote);
    // Same clock: replica B's move wins; z exists once.
    assert_eq!(outline(&merged), "x:X y:Y F(p:P q:Q G(r:R z:Z))");
}

#[test]
fn concurrent_moves_making_a_cycle_are_broken_without_losing_either_folder() {
    // Local moves F into H, remote moves H into F.
    let with_h = edited(A, |t| t.push(f("H", "Other folder", vec![])));
    let base = with_h.clone();
    let tree = |edit: &dyn Fn(&mut Vec<Node>)| {
        let mut tree = materialize(&base, Format::FirefoxJson);
        if let Node::Folder(t) = &mut tree.roots[0] {
            edit(&mut t.children);
        }
        tree
    };
    let local = rec(
        &base,
        tree(&|t| {
            let folder = take(t, "F");
            folder_mut(t, "H").push(folder);
        }),
        A,
    );
    let remote = rec(
        &base,
        tree(&|t| {
            let folder = take(t, "H");
            folder_mut(t, "F").push(folder);
        }),
        B,
    );
    let ab = merge_forced(&base, &local, &remote).state;
    let ba = merge_forced(&base, &remote, &local).state;
    assert_eq!(ab, ba);
    let items = live_items(&ab);
    assert_eq!(items.len(), 9, "{items:?}");
    let tree = materialize(&ab, Format::FirefoxJson);
    assert_eq!(
        tree.stats().folders,
        1 + 3,
        "the toolbar, F, G and H: {tree:?}"
    );
}

#[test]
fn reorders_of_different_items_on_each_side_both_apply() {
    let local = edited(A, |t| {
        let z = take(t, "z");
        t.insert(0, z);
    });
    let remote = edited(B, |t| {
        let f = folder_mut(t, "F");
        let q = take(f, "q");
        f.insert(0, q);
    });
    let merged = both_ways(&local, &remote);
    assert_eq!(outline(&merged), "z:Z x:X y:Y F(q:Q p:P G(r:R))");
}

#[test]
fn additions_on_both_sides_at_the_same_place_are_both_kept_in_one_order() {
    let local = edited(A, |t| t.insert(1, b("m", "M", "https://m.example/")));
    let remote = edited(B, |t| t.insert(1, b("n", "N", "https://n.example/")));
    let merged = both_ways(&local, &remote);
    let text = outline(&merged);
    assert!(
        text == "x:X m:M n:N y:Y F(p:P q:Q G(r:R)) z:Z"
            || text == "x:X n:N m:M y:Y F(p:P q:Q G(r:R)) z:Z",
        "{text}"
    );
}

#[test]
fn merging_a_state_with_itself_or_an_older_copy_changes_nothing() {
    let local = edited(A, |t| bookmark_mut(t, "x").title = "X2".into());
    let merged = merge_forced(&base(), &local, &local);
    assert_eq!(merged.state, local);
    assert!(merged.diff.is_empty());
    let merged = merge_forced(&base(), &local, &base());
    assert_eq!(merged.state, local);
    assert!(merged.diff.local.is_empty());
}

// -------------------------------------------------------------------------------------------
// Safety rails and dry run
// -------------------------------------------------------------------------------------------

fn many(count: usize) -> State {
    let children = (0..count)
        .map(|i| {
            b(
                &format!("n{i}"),
                &format!("N{i}"),
                &format!("https://n.example/{i}"),
            )
        })
        .collect();
    rec(&State::default(), toolbar(children), 9)
}

fn delete_first(base: &State, count: usize) -> State {
    let mut tree = materialize(base, Format::FirefoxJson);
    if let Node::Folder(t) = &mut tree.roots[0] {
        t.children.drain(..count);
    }
    rec(base, tree, B)
}

#[test]
fn merge_deleting_more_than_20_percent_is_refused_unless_forced() {
    let base = many(100);
    // 20 of 100: allowed (the control).
    let remote = delete_first(&base, 20);
    let merged = merge(&base, &base, &remote, &MergeOptions::default()).unwrap();
    assert_eq!(merged.diff.removed(Side::Local), 20);
    // 21 of 100: refused, with the diff for the dry-run listing.
    let remote = delete_first(&base, 21);
    match merge(&base, &base, &remote, &MergeOptions::default()) {
        Err(MergeError::TooManyDeletions {
            side: Side::Local,
            deleted: 21,
            total: 100,
            diff,
            ..
        }) => {
            assert_eq!(diff.removed(Side::Local), 21);
            assert_eq!(
                diff.to_text()
                    .lines()
                    .filter(|l| l.starts_with("  - "))
                    .count(),
                21
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let forced = merge(
        &base,
        &base,
        &remote,
        &MergeOptions {
            force: true,
            ..MergeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(live_items(&forced.state).len(), 79);
}

#[test]
fn merge_deleting_more_than_1000_items_is_refused_even_below_20_percent() {
    let base = many(6000);
    let remote = delete_first(&base, 1000);
    if let Err(e) = merge(&base, &base, &remote, &MergeOptions::default()) {
        panic!("{e}");
    }
    let remote = delete_first(&base, 1001);
    assert!(matches!(
        merge(&base, &base, &remote, &MergeOptions::default()),
        Err(MergeError::TooManyDeletions { deleted: 1001, .. })
    ));
}

#[test]
fn local_mass_deletion_is_refused_for_the_remote_side_too() {
    // A broken import that lost everything must not wipe the vault.
    let base = many(10);
    let local = delete_first(&base, 10);
    assert!(matches!(
        merge(&base, &local, &base, &MergeOptions::default()),
        Err(MergeError::TooManyDeletions {
            side: Side::Remote,
            deleted: 10,
            ..
        })
    ));
}

#[test]
fn dry_run_lists_additions_removals_edits_and_moves() {
    let remote = edited(B, |t| {
        take(t, "y");
        bookmark_mut(t, "x").title = "X2".into();
        t.push(b("n", "New", "https://n.example/"));
        let z = take(t, "z");
        folder_mut(t, "F").push(z);
    });
    let merged = merge_forced(&base(), &base(), &remote);
    let text = merged.diff.to_text();
    for expected in [
        "local: 4 change(s)",
        "~ x___________ Title: \"X\" -> \"X2\"",
        "+ n___________ \"New\" https://n.example/",
        "- y___________ \"Y\" https://y.example/",
        "> z___________ moved from toolbar_____ to F___________",
        "remote: 0 change(s)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

// -------------------------------------------------------------------------------------------
// Untrusted states
// -------------------------------------------------------------------------------------------

#[test]
fn malformed_remote_state_is_refused_and_the_local_state_is_untouched() {
    let local = base();
    let good = edited(B, |t| bookmark_mut(t, "x").title = "ok".into());
    assert!(merge(&local, &local, &good, &MergeOptions::default()).is_ok());
    let mut cases = Vec::new();
    let mut bad_key = good.clone();
    bad_key.items.get_mut(&pad("x")).unwrap().place.value.key = "A0".into();
    cases.push(bad_key);
    let mut orphan = good.clone();
    orphan.items.get_mut(&pad("x")).unwrap().place.value.parent = "nowhere".into();
    cases.push(orphan);
    let mut under_bookmark = good.clone();
    under_bookmark
        .items
        .get_mut(&pad("x"))
        .unwrap()
        .place
        .value
        .parent = pad("y");
    cases.push(under_bookmark);
    let mut future = good.clone();
    future.items.get_mut(&pad("x")).unwrap().title.stamp.clock = good.clock + 1;
    cases.push(future);
    let mut bad_guid = good.clone();
    let item = bad_guid.items.remove(&pad("z")).unwrap();
    bad_guid.items.insert("a b".into(), item);
    cases.push(bad_guid);
    let mut exhausted = good.clone();
    exhausted.clock = u64::MAX;
    cases.push(exhausted);
    for remote in cases {
        let before = local.clone();
        assert!(matches!(
            merge(&local, &local, &remote, &MergeOptions::default()),
            Err(MergeError::Invalid {
                side: Side::Remote,
                ..
            })
        ));
        assert_eq!(local, before);
    }
}

#[test]
fn state_round_trips_through_json() {
    let state = edited(A, |t| {
        take(t, "y");
    });
    let json = state.to_json().unwrap();
    assert_eq!(State::from_json(&json).unwrap(), state);
    assert!(State::from_json(b"{\"clock\":1}").is_err());
}

// -------------------------------------------------------------------------------------------
// Identity
// -------------------------------------------------------------------------------------------

fn falkon(bookmarks_bar: &str) -> BookmarkTree {
    let json = format!(
        r#"{{"roots":{{"bookmark_bar":{{"children":[{bookmarks_bar}],"type":"folder","name":"Bar"}},
        "bookmark_menu":{{"children":[],"type":"folder","name":"Menu"}},
        "other":{{"children":[],"type":"folder","name":"Other"}}}},"version":1}}"#
    );
    bookmarks::import(json.as_bytes(), Format::Falkon).unwrap()
}

fn url(title: &str, url: &str) -> String {
    format!(r#"{{"type":"url","name":"{title}","url":"{url}","visit_count":0}}"#)
}

fn folder(title: &str, children: &[String]) -> String {
    format!(
        r#"{{"type":"folder","name":"{title}","children":[{}]}}"#,
        children.join(",")
    )
}

fn guid_by_title(state: &State, title: &str) -> Vec<String> {
    live_items(state)
        .into_iter()
        .filter(|g| state.items[g].title.value == title)
        .collect()
}

#[test]
fn falkon_reimport_matches_path_url_title_then_url_then_title_and_never_two_onto_one() {
    let first = falkon(
        &[
            url("Same", "https://dup.example/"),
            url("Same", "https://dup.example/"),
            folder("Dir", &[url("Moved", "https://moved.example/")]),
            url("Renamed", "https://renamed.example/"),
            url("Retargeted", "https://old.example/"),
        ]
        .join(","),
    );
    let s1 = record(&State::default(), &first, Format::Falkon, A, &mut rng()).unwrap();
    let guid = |title: &str| guid_by_title(&s1, title).remove(0);
    let dups = guid_by_title(&s1, "Same");
    assert_eq!(dups.len(), 2);
    assert_ne!(dups[0], dups[1]);
    let (moved, renamed, retargeted) = (guid("Moved"), guid("Renamed"), guid("Retargeted"));

    // The user moves "Moved" out of Dir, renames one, changes the URL of another, adds a third
    // copy of the duplicate.
    let second = falkon(
        &[
            url("Same", "https://dup.example/"),
            url("Same", "https://dup.example/"),
            url("Same", "https://dup.example/"),
            folder("Dir", &[]),
            url("Moved", "https://moved.example/"),
            url("Renamed now", "https://renamed.example/"),
            url("Retargeted", "https://new.example/"),
        ]
        .join(","),
    );
    let s2 = record(&s1, &second, Format::Falkon, A, &mut rng()).unwrap();
    assert!(s2.tombstones.is_empty(), "nothing was deleted");
    let same = guid_by_title(&s2, "Same");
    assert_eq!(same.len(), 3);
    assert_eq!(
        &same[..2],
        &dups[..],
        "the two old copies keep their GUIDs, in order"
    );
    assert!(!dups.contains(&same[2]), "the third copy is new");
    assert_eq!(
        guid_by_title(&s2, "Moved"),
        std::slice::from_ref(&moved),
        "path changed: URL match"
    );
    assert_eq!(
        guid_by_title(&s2, "Renamed now"),
        [renamed],
        "title changed: URL match"
    );
    assert_eq!(
        guid_by_title(&s2, "Retargeted"),
        [retargeted],
        "URL changed: title match"
    );
    // The move is recorded as a move.
    assert_eq!(s2.items[&moved].place.value.parent, "toolbar_____");
}

#[test]
fn chromium_guids_map_to_ours_and_ours_map_to_valid_chromium_guids() {
    // An item made in Firefox (12-character GUID) goes to Chromium as a derived UUID and comes
    // back as the same item.
    let state = rec(
        &State::default(),
        toolbar(vec![b("x", "X", "https://x.example/")]),
        A,
    );
    let chromium = materialize(&state, Format::Chromium);
    let Node::Folder(bar) = &chromium.roots[0] else {
        panic!()
    };
    let native = guid_of(&bar.children[0].extra());
    assert_eq!(native, native_guid(Format::Chromium, &pad("x")));
    assert_eq!(native.len(), 36);
    assert_eq!(&native[14..15], "4", "version 4: {native}");
    let mut edited = chromium.clone();
    if let Node::Folder(bar) = &mut edited.roots[0] {
        if let Node::Bookmark(b) = &mut bar.children[0] {
            b.title = "X from Chromium".into();
        }
    }
    let back = record(&state, &edited, Format::Chromium, B, &mut rng()).unwrap();
    assert_eq!(live_items(&back), vec![pad("x")]);
    assert_eq!(back.items[&pad("x")].title.value, "X from Chromium");
    // A Chromium UUID is our GUID as it is.
    let uuid = "cb9dcdde-f926-4d1c-9d10-6888163ee953";
    assert_eq!(native_guid(Format::Chromium, uuid), uuid);
}

trait ExtraOf {
    fn extra(&self) -> bookmarks::Extra;
}

impl ExtraOf for Node {
    fn extra(&self) -> bookmarks::Extra {
        match self {
            Node::Bookmark(b) => b.extra.clone(),
            Node::Folder(f) => f.extra.clone(),
            Node::Separator(s) => s.extra.clone(),
        }
    }
}

#[test]
fn chromium_import_leaves_separators_and_the_menu_root_alone() {
    let mut tree = toolbar(vec![b("x", "X", "https://x.example/"), sep("s")]);
    tree.roots.push(Node::Folder(bookmarks::Folder {
        role: Some(bookmarks::FolderRole::Menu),
        children: vec![b("m", "M", "https://m.example/")],
        ..bookmarks::Folder::default()
    }));
    let state = rec(&State::default(), tree, A);
    assert_eq!(live_items(&state).len(), 3);
    let chromium = materialize(&state, Format::Chromium);
    assert_eq!(chromium.stats().separators, 0);
    assert_eq!(chromium.stats().bookmarks, 1);
    let back = record(&state, &chromium, Format::Chromium, B, &mut rng()).unwrap();
    assert!(back.tombstones.is_empty(), "{:?}", back.tombstones);
    assert_eq!(live_items(&back).len(), 3);
    // Positive control: deleting the bookmark in Chromium is a deletion.
    let mut without = chromium.clone();
    if let Node::Folder(bar) = &mut without.roots[0] {
        bar.children.clear();
    }
    let back = record(&state, &without, Format::Chromium, B, &mut rng()).unwrap();
    assert_eq!(back.tombstones.len(), 1);
    assert_eq!(live_items(&back).len(), 2);
}

#[test]
fn deleting_a_folder_tombstones_its_whole_subtree() {
    let remote = edited(B, |t| {
        take(t, "F");
    });
    assert_eq!(remote.tombstones.len(), 5);
    assert!(sync::live_items(&remote)
        .iter()
        .all(|g| !g.starts_with('F')));
}

#[test]
fn a_peer_state_nested_thousands_deep_is_shown_within_the_import_depth_limit() {
    // A chain of 5,000 folders, each inside the previous one, from a peer.
    let mut state = base();
    let template = state.items[&pad("G")].clone();
    let mut parent = pad("F");
    for i in 0..5_000 {
        let guid = format!("deep{i}");
        let mut item = template.clone();
        item.place.value.parent = parent.clone();
        item.title.value = format!("D{i}");
        state.items.insert(guid.clone(), item);
        parent = guid;
    }
    state.validate().unwrap();
    let merged = merge_forced(&base(), &base(), &state).state;
    assert_eq!(live_items(&merged).len(), 8 + 5_000, "nothing is lost");
    for format in [Format::FirefoxJson, Format::NetscapeHtml, Format::Xbel] {
        let tree = materialize(&merged, format);
        assert!(
            tree.depth() <= bookmarks::MAX_DEPTH,
            "{format}: {}",
            tree.depth()
        );
        let bytes = bookmarks::export(&tree, format).unwrap();
        let back = bookmarks::import(&bytes, format).unwrap();
        assert_eq!(back.stats().folders, tree.stats().folders, "{format}");
    }
}

#[test]
fn bookmark_with_a_url_chromium_drops_is_not_written_to_chromium_nor_deleted_by_its_import() {
    let state = rec(
        &State::default(),
        toolbar(vec![
            b("x", "X", "https://x.example/"),
            b("v", "Invalid", "not a url"),
        ]),
        A,
    );
    let chromium = materialize(&state, Format::Chromium);
    assert_eq!(
        chromium.stats().bookmarks,
        1,
        "Chromium would drop it silently"
    );
    let back = record(&state, &chromium, Format::Chromium, B, &mut rng()).unwrap();
    assert!(back.tombstones.is_empty());
    assert_eq!(live_items(&back).len(), 2);
    // Positive control: the same bookmark with a valid URL is written.
    let valid = rec(
        &State::default(),
        toolbar(vec![b("v", "Valid", "https://v.example/")]),
        A,
    );
    assert_eq!(materialize(&valid, Format::Chromium).stats().bookmarks, 1);
}

#[test]
fn reading_back_a_merged_tree_with_equal_position_keys_records_no_move() {
    // Both sides insert at the same place: their new items may get the same key.
    let local = edited(A, |t| t.insert(1, b("m", "M", "https://m.example/")));
    let remote = edited(B, |t| t.insert(1, b("n", "N", "https://n.example/")));
    let merged = merge_forced(&base(), &local, &remote).state;
    assert_eq!(
        merged.items[&pad("m")].place.value.key,
        merged.items[&pad("n")].place.value.key,
        "the scenario needs equal keys"
    );
    let again = rec(&merged, materialize(&merged, Format::FirefoxJson), A);
    assert_eq!(again.items, merged.items, "no spurious writes");
    // Positive control: moving n before m is recorded.
    let mut tree = materialize(&merged, Format::FirefoxJson);
    if let Node::Folder(t) = &mut tree.roots[0] {
        let n = take(&mut t.children, "n");
        t.children.insert(0, n);
    }
    let moved = rec(&merged, tree, A);
    assert_ne!(moved.items[&pad("n")].place, merged.items[&pad("n")].place);
}

#[test]
fn a_folder_whose_keys_grew_long_gets_short_keys_again_in_the_same_order() {
    // Items prepended thousands of times end with long keys; a state like that, built directly:
    // y's key is 200 characters, still between x's and F's.
    let mut state = base();
    let x_key = state.items[&pad("x")].place.value.key.clone();
    let long = format!("{x_key}{}V", "0".repeat(198));
    state.items.get_mut(&pad("y")).unwrap().place.value.key = long.clone();
    assert_eq!(outline(&state), BASE_OUTLINE);
    state.validate().unwrap();
    // Recording the unchanged tree re-keys the toolbar, keeping the order.
    let again = rec(&state, materialize(&state, Format::FirefoxJson), A);
    assert_eq!(outline(&again), BASE_OUTLINE);
    let keys: Vec<usize> = ["x", "y", "F", "z"]
        .iter()
        .map(|n| again.items[&pad(n)].place.value.key.len())
        .collect();
    assert!(keys.iter().all(|&len| len <= 3), "{keys:?}");
    // Positive control: below the threshold nothing is re-keyed.
    let unchanged = rec(&base(), materialize(&base(), Format::FirefoxJson), A);
    assert_eq!(unchanged.items, base().items);
}
