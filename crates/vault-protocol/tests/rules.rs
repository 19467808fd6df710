//! One test per rule of the vault and of the wire format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bookmarks::sync::{merge, record, MergeOptions, State};
use bookmarks::{import, Format};
use rand_chacha::rand_core::SeedableRng as _;
use vault_protocol::sqlite::SqliteStore;
use vault_protocol::vault::{apply_pull, push_delta, MemoryStore};
use vault_protocol::wire::{encode_answer, encode_request, Assembler, WireError, PART_CHARS};
use vault_protocol::{handle, Answer, Op, Policy, Request, Store};
use xmpp_parsers::minidom::Element;

const ALICE: &str = "alice@example.org";
const ALICE_WORK: &str = "alice@work.example";

fn policy() -> Policy {
    let mut policy = Policy::default();
    policy.add("alice", [ALICE.to_owned(), ALICE_WORK.to_owned()]);
    policy
}

fn html(urls: &[&str]) -> Vec<u8> {
    let mut html = String::from("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n");
    for url in urls {
        html.push_str(&format!("<DT><A HREF=\"{url}\">{url}</A>\n"));
    }
    html.push_str("</DL><p>\n");
    html.into_bytes()
}

/// A replica's state after recording a file with `urls` on top of `base`.
fn edit(base: &State, urls: &[&str], replica: u64) -> State {
    let tree = import(&html(urls), Format::NetscapeHtml).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(replica);
    record(base, &tree, Format::NetscapeHtml, replica, &mut rng).unwrap()
}

fn push(id: &str, base: u64, delta: State) -> Request {
    Request {
        id: id.to_owned(),
        vault: "alice".to_owned(),
        op: Op::Push { base, delta },
    }
}

fn pull(id: &str, since: u64) -> Request {
    Request {
        id: id.to_owned(),
        vault: "alice".to_owned(),
        op: Op::Pull { since },
    }
}

fn urls(state: &State) -> Vec<String> {
    let mut urls: Vec<String> = bookmarks::sync::live_items(state)
        .iter()
        .map(|g| state.items[g].url.value.clone())
        .filter(|u| !u.is_empty())
        .collect();
    urls.sort();
    urls
}

#[test]
fn a_push_on_the_current_revision_is_taken_and_a_pull_returns_it() {
    let mut store = MemoryStore::default();
    let local = edit(&State::default(), &["https://a.example/"], 1);
    let answer = handle(&mut store, &policy(), ALICE, &push("p1", 0, local.clone())).unwrap();
    assert_eq!(answer, Answer::Ok { revision: 1 });
    let Answer::State {
        revision,
        full,
        state,
    } = handle(&mut store, &policy(), ALICE_WORK, &pull("q1", 0)).unwrap()
    else {
        panic!("a pull answers a state");
    };
    assert_eq!((revision, full), (1, true));
    assert_eq!(state, local);
}

#[test]
fn compare_and_swap_refuses_a_push_on_an_old_revision() {
    let mut store = MemoryStore::default();
    let first = edit(&State::default(), &["https://a.example/"], 1);
    handle(&mut store, &policy(), ALICE, &push("p1", 0, first.clone())).unwrap();
    // Another device, still at revision 0.
    let other = edit(&State::default(), &["https://b.example/"], 2);
    let answer = handle(&mut store, &policy(), ALICE, &push("p2", 0, other.clone())).unwrap();
    assert_eq!(answer, Answer::Conflict { revision: 1 });
    assert_eq!(store.vaults["alice"].state, first, "the vault is unchanged");
    // It pulls, merges and pushes on revision 1: both bookmarks are in.
    let Answer::State { state, .. } = handle(&mut store, &policy(), ALICE, &pull("q", 0)).unwrap()
    else {
        panic!()
    };
    let merged = merge(&State::default(), &other, &state, &MergeOptions::default()).unwrap();
    let answer = handle(
        &mut store,
        &policy(),
        ALICE,
        &push("p3", 1, push_delta(&state, &merged.state)),
    )
    .unwrap();
    assert_eq!(answer, Answer::Ok { revision: 2 });
    assert_eq!(
        urls(&store.vaults["alice"].state),
        ["https://a.example/", "https://b.example/"]
    );
}

#[test]
fn a_repeated_push_gets_the_same_answer_and_changes_nothing() {
    let mut store = MemoryStore::default();
    let local = edit(&State::default(), &["https://a.example/"], 1);
    let request = push("p1", 0, local.clone());
    let first = handle(&mut store, &policy(), ALICE, &request).unwrap();
    let vault = store.vaults["alice"].clone();
    // The vault moves on meanwhile (another device).
    let other = edit(&local, &["https://a.example/", "https://c.example/"], 2);
    handle(
        &mut store,
        &policy(),
        ALICE_WORK,
        &push("w1", 1, push_delta(&local, &other)),
    )
    .unwrap();
    assert_eq!(store.vaults["alice"].revision, 2);
    let again = handle(&mut store, &policy(), ALICE, &request).unwrap();
    assert_eq!(again, first, "a repeat is answered as the first time");
    assert_eq!(again, Answer::Ok { revision: 1 });
    assert_eq!(store.vaults["alice"].revision, 2, "and not applied twice");
    assert_ne!(store.vaults["alice"], vault);
    // The same id from another sender is another request.
    let other_sender = handle(&mut store, &policy(), ALICE_WORK, &request).unwrap();
    assert_eq!(other_sender, Answer::Conflict { revision: 2 });
}

#[test]
fn only_allowed_accounts_may_use_a_vault() {
    let mut store = MemoryStore::default();
    let local = edit(&State::default(), &["https://a.example/"], 1);
    for (sender, vault) in [
        ("eve@example.org", "alice"),
        ("alice@example.org/phone", "alice"),
        (ALICE, "bob"),
    ] {
        let mut request = push("p1", 0, local.clone());
        request.vault = vault.to_owned();
        let answer = handle(&mut store, &policy(), sender, &request).unwrap();
        assert!(matches!(answer, Answer::Refused { .. }), "{sender} {vault}");
        request.op = Op::Pull { since: 0 };
        let answer = handle(&mut store, &policy(), sender, &request).unwrap();
        assert!(matches!(answer, Answer::Refused { .. }), "{sender} {vault}");
    }
    assert!(store.vaults.is_empty() && store.answers.is_empty());
    // The positive control: the allowed account gets in with the same request.
    let answer = handle(&mut store, &policy(), ALICE, &push("p1", 0, local)).unwrap();
    assert_eq!(answer, Answer::Ok { revision: 1 });
}

#[test]
fn a_pull_since_a_revision_sends_only_what_changed() {
    let mut store = MemoryStore::default();
    let many: Vec<String> = (0..50).map(|i| format!("https://x.example/{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let first = edit(&State::default(), &many, 1);
    handle(&mut store, &policy(), ALICE, &push("p1", 0, first.clone())).unwrap();
    let mut more = many.clone();
    more.push("https://new.example/");
    let second = edit(&first, &more, 1);
    handle(
        &mut store,
        &policy(),
        ALICE,
        &push("p2", 1, push_delta(&first, &second)),
    )
    .unwrap();
    let Answer::State {
        revision,
        full,
        state,
    } = handle(&mut store, &policy(), ALICE_WORK, &pull("q", 1)).unwrap()
    else {
        panic!()
    };
    assert_eq!((revision, full), (2, false));
    assert!(
        state.items.len() <= 3,
        "only the new item (and its changed parent), not {} items",
        state.items.len()
    );
    assert_eq!(apply_pull(&first, full, state), second);
    // Ahead of the vault (it was reset): the whole state.
    let Answer::State { full, .. } = handle(&mut store, &policy(), ALICE, &pull("q2", 7)).unwrap()
    else {
        panic!()
    };
    assert!(full);
}

#[test]
fn an_invalid_push_is_an_error_and_changes_nothing() {
    let mut store = MemoryStore::default();
    let mut bad = edit(&State::default(), &["https://a.example/"], 1);
    bad.clock = 0; // stamps ahead of the clock
    let answer = handle(&mut store, &policy(), ALICE, &push("p1", 0, bad)).unwrap();
    assert!(matches!(answer, Answer::Error { .. }), "{answer:?}");
    assert!(store.vaults.is_empty());
}

#[test]
fn requests_and_answers_round_trip_through_parts() {
    let many: Vec<String> = (0..20_000)
        .map(|i| format!("https://example.org/{i}/{}", i * 7919))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let state = edit(&State::default(), &many, 3);
    let request = push("big-1", 0, state.clone());
    let elements = encode_request(&request).unwrap();
    assert!(elements.len() > 1, "20,000 bookmarks take several parts");
    for element in &elements {
        assert!(element.text().len() <= PART_CHARS);
        assert!(String::from(element).len() < PART_CHARS + 512);
    }
    // In reverse order, with a duplicate and another sender's part in between.
    let mut assembler = Assembler::default();
    let mut done = None;
    let answer_elements = encode_answer("x", &Answer::Ok { revision: 3 }).unwrap();
    assert!(assembler
        .add("bob@example.org", &elements[0])
        .unwrap()
        .is_none());
    assert!(assembler.add(ALICE, &elements[1]).unwrap().is_none());
    for element in elements.iter().rev() {
        if let Some(complete) = assembler.add(ALICE, element).unwrap() {
            done = Some(complete);
        }
    }
    assert_eq!(done.unwrap().request().unwrap(), request);
    let answer = assembler.add(ALICE, &answer_elements[0]).unwrap().unwrap();
    assert_eq!(answer.answer().unwrap(), Answer::Ok { revision: 3 });
    assert!(answer.request().is_err());
}

fn build(version: &str, id: &str, part: &str, parts: &str, text: &str) -> Element {
    use xmpp_parsers::minidom::rxml::xml_ncname;
    Element::builder("request", vault_protocol::NS)
        .attr(xml_ncname!("version").into(), version)
        .attr(xml_ncname!("id").into(), id)
        .attr(xml_ncname!("part").into(), part)
        .attr(xml_ncname!("parts").into(), parts)
        .append(text)
        .build()
}

#[test]
fn foreign_versions_and_malformed_parts_are_refused() {
    let element = &encode_request(&pull("q1", 0)).unwrap()[0];
    let mut assembler = Assembler::default();
    let with = |name: &str, value: &str| {
        let attr = |n: &str| {
            if n == name {
                value.to_owned()
            } else {
                element.attr(n).unwrap().to_owned()
            }
        };
        build(
            &attr("version"),
            &attr("id"),
            &attr("part"),
            &attr("parts"),
            &element.text(),
        )
    };
    assert!(matches!(
        assembler.add(ALICE, &with("version", "2")),
        Err(WireError::Version(v)) if v == "2"
    ));
    for (name, value) in [
        ("id", ""),
        ("id", "a b"),
        ("part", "0"),
        ("part", "2"),
        ("parts", "0"),
        ("parts", "99999"),
    ] {
        assert!(
            matches!(
                assembler.add(ALICE, &with(name, value)),
                Err(WireError::Attribute(_))
            ),
            "{name}={value}"
        );
    }
    let body: Element = "<body xmlns='jabber:client'>hi</body>".parse().unwrap();
    assert_eq!(assembler.add(ALICE, &body), Err(WireError::NotVault));
    let garbage = build("1", "g", "1", "1", "not base64!");
    assert!(matches!(
        assembler.add(ALICE, &garbage),
        Err(WireError::Payload(_))
    ));
    // The positive control: the unmodified element goes through.
    let complete = assembler.add(ALICE, element).unwrap().unwrap();
    assert_eq!(complete.request().unwrap(), pull("q1", 0));
}

#[test]
fn the_sqlite_store_keeps_vaults_and_answers_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.sqlite3");
    let local = edit(&State::default(), &["https://a.example/"], 1);
    {
        let mut store = SqliteStore::open(&path).unwrap();
        let answer = handle(&mut store, &policy(), ALICE, &push("p1", 0, local.clone())).unwrap();
        assert_eq!(answer, Answer::Ok { revision: 1 });
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let stored = store.load("alice").unwrap().unwrap();
    assert_eq!((stored.revision, &stored.state), (1, &local));
    assert_eq!(
        store.answer(ALICE, "p1").unwrap(),
        Some(Answer::Ok { revision: 1 })
    );
    let again = handle(
        &mut store,
        &policy(),
        ALICE,
        &push("p1", 5, State::default()),
    )
    .unwrap();
    assert_eq!(again, Answer::Ok { revision: 1 });
    assert_eq!(store.load("nope").unwrap(), None);
}
