//! Crash safety of the per-namespace X3DH state: a child process answers legacy key
//! exchanges in a loop (each one a new legacy session state committed together with the
//! legacy pre-key it consumed, then a refill of the legacy pre-keys) and is killed with
//! SIGKILL at random moments. After every kill the database passes `PRAGMA integrity_check`,
//! the session state and the consumed pre-keys come from the same commit, the legacy pool is
//! whole or one short of whole, and the OMEMO 2 keys were never touched.
//!
//! No libtest harness (`harness = false`): with `ATM_TRUST_CRASH_LEGACY_DB` set, the same
//! executable is the child that gets killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::path::Path;

use atm_trust::{DecryptionCommit, Namespace, Store};
use omemo_crypto::DeviceId;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

mod crash_kit;

use crash_kit::{next_commit, report_commit, run_child_and_kill, seq_of, state_for};

const CHILD_ENV: &str = "ATM_TRUST_CRASH_LEGACY_DB";
const KILLS: usize = 40;
const POOL: usize = 100;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const STATE_LEN: u64 = 512;

fn bob_device() -> DeviceId {
    DeviceId::new(7).unwrap()
}

fn used_legacy_pre_keys(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    let count: i64 = conn
        .query_row(
            "SELECT count(*) FROM pre_keys WHERE namespace = ?1 AND used_at IS NOT NULL",
            [Namespace::Legacy.as_str()],
            |row| row.get(0),
        )
        .unwrap();
    u64::try_from(count).unwrap()
}

/// The committed sequence number and whether the refill after it was still missing, after
/// checking that every row agrees with it.
fn committed_seq(path: &Path, omemo2_keys: &[u32]) -> (u64, bool) {
    let store = Store::open(path).unwrap();
    let seq = store
        .load_session(Namespace::Legacy, BOB, bob_device())
        .unwrap()
        .map_or(0, |state| seq_of(&state));
    let received = store
        .device(Namespace::Legacy, BOB, bob_device())
        .unwrap()
        .map_or(0, |d| d.received_without_reply);
    assert_eq!(received, seq, "counter and session from different commits");
    assert_eq!(
        used_legacy_pre_keys(path),
        seq,
        "consumed pre-keys and session from different commits"
    );
    let unused = store.unused_pre_keys_for(Namespace::Legacy).unwrap().len();
    assert!(
        unused == POOL || (seq > 0 && unused == POOL - 1),
        "{unused} unused legacy pre-keys after {seq} commits"
    );
    let omemo2: Vec<u32> = store
        .unused_pre_keys()
        .unwrap()
        .iter()
        .map(|k| k.id().get())
        .collect();
    assert_eq!(omemo2, omemo2_keys, "the OMEMO 2 pre-keys changed");
    assert!(store
        .load_session(Namespace::Omemo2, BOB, bob_device())
        .unwrap()
        .is_none());
    (seq, unused < POOL)
}

fn crash_child(path: &str) {
    let mut store = Store::open(path).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(std::process::id().into());
    let mut seq = store
        .load_session(Namespace::Legacy, BOB, bob_device())
        .unwrap()
        .map_or(0, |state| seq_of(&state));
    // As at every start-up: top the pool up first (the last run may have died before its
    // refill).
    store
        .ensure_pre_keys_for(Namespace::Legacy, POOL, &mut rng, seq)
        .unwrap();
    loop {
        seq += 1;
        let pre_key = store.unused_pre_keys_for(Namespace::Legacy).unwrap()[0].id();
        let state = state_for(seq, STATE_LEN);
        store
            .commit_decryption(&DecryptionCommit {
                namespace: Namespace::Legacy,
                jid: BOB,
                device_id: bob_device(),
                session_state: &state,
                previous_state: None,
                used_pre_key: Some(pre_key),
                now: seq,
            })
            .unwrap();
        report_commit(seq);
        store
            .ensure_pre_keys_for(Namespace::Legacy, POOL, &mut rng, seq)
            .unwrap();
    }
}

fn sigkill_during_legacy_key_exchanges_leaves_a_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash-legacy.sqlite");
    let omemo2_keys: Vec<u32> = {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut store = Store::open(&path).unwrap();
        store
            .load_or_create_own_device(ALICE, None, &mut rng, 0)
            .unwrap();
        store.ensure_pre_keys(POOL, &mut rng, 0).unwrap();
        store
            .ensure_signed_pre_key(Namespace::Legacy, &mut rng, 0)
            .unwrap();
        store
            .ensure_pre_keys_for(Namespace::Legacy, POOL, &mut rng, 0)
            .unwrap();
        store
            .unused_pre_keys()
            .unwrap()
            .iter()
            .map(|k| k.id().get())
            .collect()
    };
    let mut rng = crash_kit::seeded_rng("crash_legacy");
    let started = std::time::Instant::now();
    let mut previous = 0u64;
    let mut before_refill = 0;
    for round in 0..KILLS {
        // After a random number (1–5) of commits, so the kill lands at a random point of the
        // loop: in a commit, between a commit and its refill, or in a refill.
        let wanted = 1 + rng.next_u64() % 5;
        let last_printed = run_child_and_kill(CHILD_ENV, &path, round, |rx| {
            (0..wanted).fold(0, |_, _| next_commit(rx, round))
        });
        let (seq, refill_missing) = committed_seq(&path, &omemo2_keys);
        before_refill += usize::from(refill_missing);
        assert!(
            seq == last_printed || seq == last_printed + 1,
            "round {round}: stored {seq}, last printed {last_printed}"
        );
        assert!(
            seq > previous,
            "round {round}: went back from {previous} to {seq}"
        );
        previous = seq;
    }
    eprintln!(
        "{KILLS} kills in {:?}, {previous} legacy key exchanges committed, \
         {before_refill} kills between a commit and its refill",
        started.elapsed()
    );
}

fn main() {
    crash_kit::main(
        CHILD_ENV,
        crash_child,
        "sigkill_during_legacy_key_exchanges_leaves_a_committed_state",
        sigkill_during_legacy_key_exchanges_leaves_a_committed_state,
    );
}
