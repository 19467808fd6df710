//! The per-message transaction: load a session, store its new state (`commit_decryption`),
//! with 10,000 sessions in a file database, at both durability settings.
//!
//! Criterion reports the mean and median; a manual loop of 10,000 individually timed
//! iterations prints the median and p99.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code: criterion generates undocumented items; a failed step should abort"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use atm_trust::{DecryptionCommit, Durability, Namespace, SessionUpdate, Store};
use criterion::{criterion_group, criterion_main, Criterion};
use omemo_crypto::DeviceId;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const SESSIONS: u32 = 10_000;
const STATE_LEN: usize = 1536;
const TIMED_ITERATIONS: usize = 10_000;
const NS: Namespace = Namespace::Omemo2;

fn jid(i: u32) -> String {
    format!("contact{}@example.org", i % 500)
}

fn device(i: u32) -> DeviceId {
    DeviceId::new(i + 1).unwrap()
}

fn populate(path: &Path, durability: Durability) -> Store {
    let mut store = Store::open_with(path, durability).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut state = vec![0u8; STATE_LEN];
    rng.fill_bytes(&mut state);
    let jids: Vec<String> = (0..SESSIONS).map(jid).collect();
    for chunk in (0..SESSIONS).collect::<Vec<_>>().chunks(1000) {
        let updates: Vec<SessionUpdate<'_>> = chunk
            .iter()
            .map(|&i| SessionUpdate {
                jid: &jids[i as usize],
                device_id: device(i),
                session_state: &state,
            })
            .collect();
        store
            .commit_encryption(NS, &updates, 1_700_000_000)
            .unwrap();
    }
    store
}

/// One received message: load the session, "advance" it, commit the new state.
fn one_message(store: &mut Store, jids: &[String], rng: &mut ChaCha20Rng, now: u64) {
    let i = (rng.next_u32()) % SESSIONS;
    let jid = &jids[i as usize];
    let mut state = store.load_session(NS, jid, device(i)).unwrap().unwrap();
    state[(now as usize) % STATE_LEN] ^= 0x5a;
    let counters = store
        .commit_decryption(&DecryptionCommit {
            namespace: NS,
            jid,
            device_id: device(i),
            session_state: &state,
            previous_state: None,
            used_pre_key: None,
            now,
        })
        .unwrap();
    black_box(counters);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn manual_timing(name: &str, store: &mut Store, jids: &[String]) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut times = Vec::with_capacity(TIMED_ITERATIONS);
    for n in 0..TIMED_ITERATIONS {
        let start = Instant::now();
        one_message(store, jids, &mut rng, 1_800_000_000 + n as u64);
        times.push(start.elapsed());
    }
    times.sort_unstable();
    println!(
        "{name}: {TIMED_ITERATIONS} messages, median {:?}, p99 {:?}, max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
}

fn bench(c: &mut Criterion) {
    let jids: Vec<String> = (0..SESSIONS).map(jid).collect();
    for (name, durability) in [
        ("synchronous=FULL", Durability::Full),
        ("synchronous=NORMAL", Durability::Normal),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = populate(&dir.path().join("bench.sqlite"), durability);
        manual_timing(name, &mut store, &jids);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut now = 1_900_000_000u64;
        c.bench_function(
            &format!("load+commit_decryption 10k sessions {name}"),
            |b| {
                b.iter(|| {
                    now += 1;
                    one_message(&mut store, &jids, &mut rng, now);
                })
            },
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
