//! Crash safety: a child process commits numbered session states in a loop and is killed
//! with SIGKILL at random moments. After every kill the database must pass
//! `PRAGMA integrity_check` and hold exactly one committed state, consistent across all rows
//! of the transaction.
//!
//! The child alternates a commit of its own with a group of two (`Store::begin_group`): a
//! state in the middle of a group must never be found, however the kill falls.
//!
//! This test target has no libtest harness (`harness = false`): the same executable is the
//! parent test and, with `ATM_TRUST_CRASH_CHILD_DB` set, the child that gets killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atm_trust::{Namespace, SessionUpdate, Store};
use omemo_crypto::DeviceId;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Set in the child's environment to the database path.
const CHILD_ENV: &str = "ATM_TRUST_CRASH_CHILD_DB";
const KILLS: usize = 60;
const DEVICES: u32 = 3;
const JID: &str = "bob@example.org";
const NS: Namespace = Namespace::Omemo2;

/// A ~1 KiB session state that encodes its sequence number and can be checked for tearing.
fn state_for(seq: u64) -> Vec<u8> {
    let mut state = seq.to_le_bytes().to_vec();
    state.extend((0..1024u64).map(|i| (seq.wrapping_mul(31).wrapping_add(i) % 251) as u8));
    state
}

fn seq_of(state: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(state[..8].try_into().unwrap());
    assert_eq!(state, state_for(seq), "torn session state");
    seq
}

fn dev(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

/// The committed sequence number: every row written by one transaction must agree.
fn committed_seq(store: &Store) -> u64 {
    let mut seqs = Vec::new();
    for n in 1..=DEVICES {
        let seq = store
            .load_session(NS, JID, dev(n))
            .unwrap()
            .map_or(0, |state| seq_of(&state));
        let sent = store
            .device(NS, JID, dev(n))
            .unwrap()
            .map_or(0, |d| d.sent_without_reply);
        assert_eq!(
            sent, seq,
            "counter and session state from different commits"
        );
        seqs.push(seq);
    }
    assert!(seqs.iter().all(|&s| s == seqs[0]), "mixed states {seqs:?}");
    seqs[0]
}

/// The state numbers a group ends on: the child commits states ≡ 1 (mod 3) alone and the two
/// after them together, so a state ≡ 2 (mod 3) exists only inside a group.
fn ends_a_group(seq: u64) -> bool {
    seq.is_multiple_of(3)
}

/// The commit that follows the committed state `seq`.
fn next_commit(seq: u64) -> u64 {
    if ends_a_group(seq) {
        seq + 1
    } else {
        seq + 2
    }
}

/// The child: commits states seq+1, seq+2, … forever (see [`ends_a_group`]), printing the
/// number of each commit after it.
fn crash_child(path: &str) {
    let mut store = Store::open(path).unwrap();
    let mut seq = committed_seq(&store);
    let mut out = std::io::stdout().lock();
    let commit = |store: &mut Store, seq: u64| {
        let state = state_for(seq);
        let updates: Vec<SessionUpdate<'_>> = (1..=DEVICES)
            .map(|n| SessionUpdate {
                jid: JID,
                device_id: dev(n),
                session_state: &state,
            })
            .collect();
        store.commit_encryption(NS, &updates, seq).unwrap();
    };
    loop {
        if ends_a_group(seq) {
            seq += 1;
            commit(&mut store, seq);
        } else {
            store.begin_group().unwrap();
            commit(&mut store, seq + 1);
            commit(&mut store, seq + 2);
            store.commit_group().unwrap();
            seq += 2;
        }
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

fn integrity_check(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

fn sigkill_during_commits_leaves_exactly_a_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    drop(Store::open(&path).unwrap());
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let started = Instant::now();
    let mut previous = 0u64;
    let mut landed_after_print = 0;

    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(seq) = line.trim().parse::<u64>() {
                    if tx.send(seq).is_err() {
                        break;
                    }
                }
            }
        });
        // Wait for the first commit, so the kill lands in the commit loop, then a random
        // 0–20 ms more.
        let first = rx.recv_timeout(Duration::from_secs(20));
        assert!(first.is_ok(), "round {round}: the child committed nothing");
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 20_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let last_printed = rx.try_iter().last().or(first.ok()).unwrap();

        assert_eq!(integrity_check(&path), "ok", "round {round}");
        let store = Store::open(&path).unwrap();
        let seq = committed_seq(&store);
        drop(store);
        // The kill can land between a commit and its print, never before a printed commit,
        // and never leaves half a group.
        assert!(
            seq == last_printed || seq == next_commit(last_printed),
            "round {round}: stored {seq}, last printed {last_printed}"
        );
        assert!(
            seq % 3 != 2,
            "round {round}: state {seq}, from the middle of a group"
        );
        assert!(
            seq > previous,
            "round {round}: went back from {previous} to {seq}"
        );
        if seq != last_printed {
            landed_after_print += 1;
        }
        previous = seq;
    }
    eprintln!(
        "{KILLS} kills in {:?}, {previous} commits, {landed_after_print} kills between commit and print",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        crash_child(&path);
        return;
    }
    // `cargo test -- --ignored` runs only ignored tests; this one is not ignored.
    if std::env::args().any(|a| a == "--ignored") {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return;
    }
    let name = "sigkill_during_commits_leaves_exactly_a_committed_state";
    println!("running 1 test");
    sigkill_during_commits_leaves_exactly_a_committed_state();
    println!("test {name} ... ok");
    println!();
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
