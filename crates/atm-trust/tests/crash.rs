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

use std::time::Duration;

use atm_trust::{Namespace, SessionUpdate, Store};
use omemo_crypto::DeviceId;
use rand_core::RngCore;

mod crash_kit;

use crash_kit::{next_commit, report_commit, run_child_and_kill, seq_of, state_for};

/// Set in the child's environment to the database path.
const CHILD_ENV: &str = "ATM_TRUST_CRASH_CHILD_DB";
const KILLS: usize = 60;
const DEVICES: u32 = 3;
const JID: &str = "bob@example.org";
const NS: Namespace = Namespace::Omemo2;
/// About 1 KiB of session state per device.
const STATE_LEN: u64 = 1024;

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
fn commit_after(seq: u64) -> u64 {
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
    let commit = |store: &mut Store, seq: u64| {
        let state = state_for(seq, STATE_LEN);
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
        report_commit(seq);
    }
}

fn sigkill_during_commits_leaves_exactly_a_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    drop(Store::open(&path).unwrap());
    let mut rng = crash_kit::seeded_rng("crash");
    let started = std::time::Instant::now();
    let mut previous = 0u64;
    let mut landed_after_print = 0;

    for round in 0..KILLS {
        // After the first commit, so the kill lands in the commit loop, and a random
        // 0–20 ms more.
        let last_printed = run_child_and_kill(CHILD_ENV, &path, round, |rx| {
            let first = next_commit(rx, round);
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 20_000));
            first
        });
        let store = Store::open(&path).unwrap();
        let seq = committed_seq(&store);
        drop(store);
        // The kill can land between a commit and its print, never before a printed commit,
        // and never leaves half a group.
        assert!(
            seq == last_printed || seq == commit_after(last_printed),
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
}

fn main() {
    crash_kit::main(
        CHILD_ENV,
        crash_child,
        "sigkill_during_commits_leaves_exactly_a_committed_state",
        sigkill_during_commits_leaves_exactly_a_committed_state,
    );
}
