//! Merge of 20,000 bookmarks with 1 % changed on each side (edits, moves, additions and
//! deletions), and the steps around it: recording the browser's file into the state, the
//! three-way merge, and writing the merged tree back as a Chromium file. Prints the median
//! and slowest of several runs, the ratios between the steps and to a 2,000-bookmark merge
//! (linear scaling gives 10), and the peak memory of one merge.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code: a failed step should abort"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bookmarks::sync::{materialize, merge, record, MergeOptions, State};
use bookmarks::{export, Bookmark, BookmarkTree, Folder, FolderRole, Format, Node};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::Value;

const RUNS: usize = 9;

fn guid_extra(n: usize) -> bookmarks::Extra {
    let mut extra = bookmarks::Extra::new();
    extra.insert("guid".into(), Value::String(format!("g{n:0>11}")));
    extra
}

/// `count` bookmarks in folders of 100, two levels deep, in the toolbar (Firefox-style, so
/// nodes carry GUIDs).
fn tree(count: usize) -> BookmarkTree {
    let mut folders = Vec::new();
    let mut n = 0;
    for f in 0..count.div_ceil(100) {
        let mut children = Vec::new();
        for _ in 0..100.min(count - f * 100) {
            n += 1;
            children.push(Node::Bookmark(Bookmark {
                title: format!("Bookmark {n} — Ünïcödé"),
                url: format!("https://example.org/{f}/{n}"),
                added: Some(1_700_000_000_000_000 + n as i64),
                extra: guid_extra(n),
                ..Bookmark::default()
            }));
        }
        folders.push(Node::Folder(Folder {
            title: format!("Folder {f}"),
            children,
            extra: guid_extra(1_000_000 + f),
            ..Folder::default()
        }));
    }
    // Group the folders ten by ten.
    let groups: Vec<Node> = folders
        .chunks(10)
        .enumerate()
        .map(|(g, chunk)| {
            Node::Folder(Folder {
                title: format!("Group {g}"),
                children: chunk.to_vec(),
                extra: guid_extra(2_000_000 + g),
                ..Folder::default()
            })
        })
        .collect();
    BookmarkTree {
        roots: vec![Node::Folder(Folder {
            title: "toolbar".into(),
            role: Some(FolderRole::Toolbar),
            children: groups,
            ..Folder::default()
        })],
        extra: bookmarks::Extra::new(),
    }
}

/// Changes 1 % of the bookmarks: a quarter renamed, a quarter moved to another folder, a
/// quarter deleted, and as many added.
fn change(base: &BookmarkTree, seed: u64, tag: &str) -> BookmarkTree {
    let mut tree = base.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let Node::Folder(toolbar) = &mut tree.roots[0] else {
        unreachable!()
    };
    let mut folders: Vec<&mut Vec<Node>> = toolbar
        .children
        .iter_mut()
        .flat_map(|g| match g {
            Node::Folder(g) => g.children.iter_mut().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .filter_map(|f| match f {
            Node::Folder(f) => Some(&mut f.children),
            _ => None,
        })
        .collect();
    let count = base.stats().bookmarks / 100;
    let mut pick = |len: usize| (rng.next_u32() as usize) % len.max(1);
    let mut added = 0;
    for i in 0..count {
        let f = pick(folders.len());
        let len = folders[f].len();
        if len == 0 {
            continue;
        }
        let at = pick(len);
        match i % 4 {
            0 => {
                if let Node::Bookmark(b) = &mut folders[f][at] {
                    b.title = format!("{} ({tag})", b.title);
                }
            }
            1 => {
                let node = folders[f].remove(at);
                let to = pick(folders.len());
                let len = folders[to].len();
                let place = pick(len + 1);
                folders[to].insert(place, node);
            }
            2 => {
                folders[f].remove(at);
            }
            _ => {
                added += 1;
                folders[f].insert(
                    at,
                    Node::Bookmark(Bookmark {
                        title: format!("New {tag} {added}"),
                        url: format!("https://new.example/{tag}/{added}"),
                        extra: guid_extra(5_000_000 + seed as usize * 10_000 + added),
                        ..Bookmark::default()
                    }),
                );
            }
        }
    }
    tree
}

struct Setup {
    base: State,
    local_tree: BookmarkTree,
    remote: State,
}

fn setup(count: usize) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let base_tree = tree(count);
    let base = record(
        &State::default(),
        &base_tree,
        Format::FirefoxJson,
        1,
        &mut rng,
    )
    .unwrap();
    let local_tree = change(&base_tree, 1, "local");
    let remote_tree = change(&base_tree, 2, "remote");
    let remote = record(&base, &remote_tree, Format::FirefoxJson, 2, &mut rng).unwrap();
    Setup {
        base,
        local_tree,
        remote,
    }
}

fn time<T>(mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = black_box(f());
        times.push(start.elapsed());
        last = Some(out);
    }
    times.sort();
    (times, last.unwrap())
}

fn median(times: &[Duration]) -> Duration {
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident memory now and the peak since the last reset, in KiB (Linux).
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Child process for the memory figure: builds the 20,000-bookmark setup and records the
/// local file, then merges only when `merge` is set, and prints its peak resident memory.
fn child(merge_too: bool) {
    let s = setup(20_000);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let local = record(&s.base, &s.local_tree, Format::FirefoxJson, 1, &mut rng).unwrap();
    if merge_too {
        black_box(merge(&s.base, &local, &s.remote, &MergeOptions::default()).unwrap());
    }
    black_box(&local);
    println!("{}", memory().map_or(0, |(_, peak)| peak));
}

/// Peak resident memory (KiB) of a child process running [`child`].
fn peak_of(merge_too: bool) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .env(
            "BOOKMARKS_BENCH_CHILD",
            if merge_too { "merge" } else { "setup" },
        )
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&kib| kib > 0)
}

fn main() {
    if let Ok(mode) = std::env::var("BOOKMARKS_BENCH_CHILD") {
        child(mode == "merge");
        return;
    }
    let options = MergeOptions::default();
    let mut rows = Vec::new();
    let mut merges = Vec::new();
    for count in [2_000, 20_000] {
        let s = setup(count);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (record_times, local) =
            time(|| record(&s.base, &s.local_tree, Format::FirefoxJson, 1, &mut rng).unwrap());
        let (merge_times, merged) = time(|| merge(&s.base, &local, &s.remote, &options).unwrap());
        let (write_times, bytes) = time(|| {
            let tree = materialize(&merged.state, Format::Chromium);
            export(&tree, Format::Chromium).unwrap()
        });
        let diff = &merged.diff;
        println!(
            "{count} bookmarks: local {} changes, remote {} changes, {} conflicts, {} KiB Chromium file",
            diff.local.len(),
            diff.remote.len(),
            diff.conflicts.len(),
            bytes.len() / 1024
        );
        merges.push(median(&merge_times));
        rows.push((count, record_times, merge_times, write_times));
    }
    println!();
    println!("| bookmarks | step | median ms | slowest ms |");
    println!("|---|---|---|---|");
    for (count, record_times, merge_times, write_times) in &rows {
        for (step, times) in [
            ("record file (identity + diff)", record_times),
            ("merge (three-way + diff + rails)", merge_times),
            ("materialize + Chromium export", write_times),
        ] {
            println!(
                "| {count} | {step} | {:.1} | {:.1} |",
                ms(median(times)),
                ms(times[times.len() - 1])
            );
        }
    }
    match (peak_of(false), peak_of(true)) {
        (Some(setup), Some(with_merge)) => println!(
            "peak memory (separate processes): 20,000-bookmark setup {:.1} MiB, setup + merge {:.1} MiB: the merge adds {:.1} MiB",
            setup as f64 / 1024.0,
            with_merge as f64 / 1024.0,
            with_merge.saturating_sub(setup) as f64 / 1024.0
        ),
        _ => println!("peak memory: not measurable here (no /proc/self/status)"),
    }
    let (_, record_20k, merge_20k, write_20k) = &rows[1];
    println!();
    println!(
        "ratios (same run): merge 20,000 / merge 2,000 = {:.1} (linear: 10); merge / record = {:.2}; merge / write-back = {:.2}",
        ms(merges[1]) / ms(merges[0]),
        ms(median(merge_20k)) / ms(median(record_20k)),
        ms(median(merge_20k)) / ms(median(write_20k)),
    );
}
