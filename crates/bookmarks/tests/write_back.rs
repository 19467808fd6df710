//! Sync write-back: a file recorded into the state, written back from the state and read
//! again records no change (identities, positions and fields all survive), for every format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bookmarks::sync::{live_items, materialize, record, State};
use bookmarks::{export, import, Format};
use common::rng;

fn files() -> Vec<(Format, &'static [u8])> {
    vec![
        (Format::Chromium, include_bytes!("fixtures/large.Bookmarks")),
        (Format::Chromium, include_bytes!("fixtures/small.Bookmarks")),
        (
            Format::FirefoxJson,
            include_bytes!("../../../apps/sync-client/tests/fixtures/firefox-backup.json"),
        ),
        (
            Format::Falkon,
            include_bytes!("../../../apps/sync-client/tests/fixtures/falkon-bookmarks.json"),
        ),
        (
            Format::NetscapeHtml,
            include_bytes!("../../../apps/sync-client/tests/fixtures/firefox-export.html"),
        ),
        (
            Format::Xbel,
            include_bytes!("../../../apps/sync-client/tests/fixtures/bookmarks.xbel"),
        ),
    ]
}

#[test]
fn written_back_file_records_no_change_in_every_format() {
    for (format, file) in files() {
        let tree = import(file, format).unwrap();
        let state = record(&State::default(), &tree, format, 1, &mut rng()).unwrap();
        let items = live_items(&state).len();
        assert!(items > 0, "{format}");
        let mut out_tree = materialize(&state, format);
        out_tree.extra = tree.extra.clone();
        let bytes = export(&out_tree, format).unwrap();
        let again = import(&bytes, format).unwrap();
        let next = record(&state, &again, format, 1, &mut rng()).unwrap();
        assert!(
            next.tombstones.is_empty(),
            "{format}: {:?}",
            next.tombstones
        );
        assert_eq!(
            live_items(&next),
            live_items(&state),
            "{format}: same items, same order"
        );
        let changed: Vec<&String> = next
            .items
            .iter()
            .filter(|(guid, item)| state.items.get(*guid) != Some(*item))
            .map(|(guid, _)| guid)
            .collect();
        assert!(changed.is_empty(), "{format}: items changed: {changed:?}");
        // Positive control: a title changed in the file is recorded.
        let edited = String::from_utf8_lossy(&bytes).replacen("Rust", "Rust!", 1);
        if edited.as_bytes() != &bytes[..] {
            let changed_state = record(
                &state,
                &import(edited.as_bytes(), format).unwrap(),
                format,
                1,
                &mut rng(),
            )
            .unwrap();
            assert_ne!(changed_state.items, state.items, "{format}");
        }
    }
}

#[test]
fn chromium_write_back_of_the_real_file_is_byte_identical() {
    // The state keeps ids, GUIDs, dates and meta_info, so writing an unchanged state back
    // gives Chromium the very file it wrote.
    let file = include_bytes!("fixtures/large.Bookmarks");
    let tree = import(file, Format::Chromium).unwrap();
    let state = record(&State::default(), &tree, Format::Chromium, 1, &mut rng()).unwrap();
    let mut out = materialize(&state, Format::Chromium);
    out.extra = tree.extra.clone();
    let bytes = export(&out, Format::Chromium).unwrap();
    assert!(bytes == file.as_slice(), "the written-back file differs");
}

/// Chromium's damaged-file cases (observed with Chromium 156): a duplicated GUID and an
/// upper-case GUID. The duplicate becomes a second item (Chromium gives it a new GUID too),
/// the upper-case GUID is the same item, and the written file has unique GUIDs and ids.
#[test]
fn chromium_duplicate_and_upper_case_guids_keep_identities_and_write_unique_ones() {
    let file = include_str!("fixtures/small.Bookmarks");
    let state = record(
        &State::default(),
        &import(file.as_bytes(), Format::Chromium).unwrap(),
        Format::Chromium,
        1,
        &mut rng(),
    )
    .unwrap();
    let first = "cb9dcdde-f926-4d1c-9d10-6888163ee953";
    let second = "096a03be-11d7-4c72-a4f0-a73a84294c87";
    let third = "798239c2-0ae3-4bd7-ac8b-3637f1952a3f";
    assert!(file.contains(first) && file.contains(second) && file.contains(third));
    let damaged = file
        .replace(second, first)
        .replace(third, &third.to_ascii_uppercase());
    let next = record(
        &state,
        &import(damaged.as_bytes(), Format::Chromium).unwrap(),
        Format::Chromium,
        1,
        &mut rng(),
    )
    .unwrap();
    let items = live_items(&next);
    assert_eq!(
        items.len(),
        live_items(&state).len(),
        "nothing lost or duplicated"
    );
    assert!(items.contains(&first.to_owned()));
    assert!(
        items.contains(&third.to_owned()),
        "upper case is the same item"
    );
    // The duplicate is the second bookmark; it got a GUID of its own, and the first kept its
    // fields.
    assert_eq!(next.items[first].title.value, "Example");
    let out = export(&materialize(&next, Format::Chromium), Format::Chromium).unwrap();
    let text = String::from_utf8(out).unwrap();
    let guids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"guid\": \""))
        .collect();
    let unique: std::collections::BTreeSet<&&str> = guids.iter().collect();
    assert_eq!(unique.len(), guids.len(), "{guids:?}");
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"id\": \""))
        .collect();
    let unique_ids: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "{ids:?}");
}
