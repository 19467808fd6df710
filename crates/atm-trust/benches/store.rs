//! The per-message transaction: load a session, store its new state (`commit_decryption`),
//! with 10,000 sessions in a file database, at both durability settings.
//!
//! Criterion reports the mean and median; a manual loop of 10,000 individually timed
//! iterations prints the median and p99.
//!
//! Then the store's part of one echo (check the sender's key, load and commit the received
//! ratchet step, check the key, load and commit the answer's, with its outbox row) at the
//! default durability with 100 and with 10,000 stored sessions, each answered two ways: by the
//! program (the decryption and the answer commit apart) and at once (both in one transaction,
//! as `xmpp-core`'s responder does), all measured in turn in this run: the medians and their
//! ratios, and the commits per echo the store counted.

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

use atm_trust::{DecryptionCommit, Durability, Namespace, SessionUpdate, Store, TrustPolicy};
use criterion::{criterion_group, criterion_main, Criterion};
use omemo_crypto::{DeviceId, IdentityKeyPair, IdentityPublicKey};
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
    scale();
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

/// A file store with `sessions` sessions and their devices' identity keys, filled without
/// waiting for the disk and reopened at the default durability.
fn populate_scale(path: &Path, sessions: u32) -> (Store, Vec<IdentityPublicKey>) {
    let mut store = Store::open_with(path, Durability::Normal).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut state = vec![0u8; STATE_LEN];
    rng.fill_bytes(&mut state);
    let keys: Vec<IdentityPublicKey> = (0..100)
        .map(|_| IdentityKeyPair::generate(&mut rng).public_key())
        .collect();
    for i in 0..sessions {
        let jid = jid(i);
        store
            .record_identity_key(
                NS,
                &jid,
                device(i),
                &keys[(i % 100) as usize],
                TrustPolicy::Toakafa,
                1,
            )
            .unwrap();
        store.store_session(NS, &jid, device(i), &state, 1).unwrap();
    }
    drop(store);
    (Store::open(path).unwrap(), keys)
}

/// How the bot answers: the program's answer commits apart from the decryption, an answer
/// given at once (`xmpp-core`'s responder) in the decryption's transaction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    ByProgram,
    AtOnce,
}

/// The store's part of one echo with the device `i`: returns the commits it made.
fn echo(store: &mut Store, keys: &[IdentityPublicKey], i: u32, now: u64, answer: Answer) -> u64 {
    let before = store.commits();
    let jid = jid(i);
    let key = &keys[(i % 100) as usize];
    store
        .record_identity_key(NS, &jid, device(i), key, TrustPolicy::Toakafa, now)
        .unwrap();
    let (mut state, _) = store.load_sessions(NS, &jid, device(i)).unwrap().unwrap();
    state[(now as usize) % STATE_LEN] ^= 0x5a;
    let decryption = DecryptionCommit {
        namespace: NS,
        jid: &jid,
        device_id: device(i),
        session_state: &state,
        previous_state: None,
        used_pre_key: None,
        now,
    };
    // The answer steps the session again.
    let mut answered = state.clone();
    answered[(now as usize + 1) % STATE_LEN] ^= 0xa5;
    let update = [SessionUpdate {
        jid: &jid,
        device_id: device(i),
        session_state: &answered,
    }];
    let id = match answer {
        // The message is committed, then the answer, which reloads the session and records
        // the key again.
        Answer::ByProgram => {
            store.commit_decryption(&decryption).unwrap();
            store
                .record_identity_key(NS, &jid, device(i), key, TrustPolicy::Toakafa, now)
                .unwrap();
            black_box(store.load_session(NS, &jid, device(i)).unwrap());
            store
                .commit_encryption_queued(NS, &update, now, "<message/>", &[])
                .unwrap()
        }
        // Both in one commit, on the session in hand.
        Answer::AtOnce => store
            .commit_decryption_answered(&decryption, &update, "<message/>")
            .unwrap(),
    };
    black_box(id);
    store.commits() - before
}

/// Per-echo store cost with 100 and with 10,000 sessions, each answered by the program and
/// at once, all four measured in turn.
fn scale() {
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    // (sessions, store, identity keys, per-echo times and commits for each way of answering)
    type Scaled = (
        u32,
        Store,
        Vec<IdentityPublicKey>,
        [(Vec<Duration>, u64); 2],
    );
    let answers = [Answer::ByProgram, Answer::AtOnce];
    let mut stores: Vec<Scaled> = [100, SESSIONS]
        .into_iter()
        .map(|n| {
            let (store, keys) = populate_scale(&dir.path().join(format!("scale{n}.sqlite")), n);
            (n, store, keys, Default::default())
        })
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut now = 2_000_000_000u64;
    for _ in 0..ROUNDS {
        for (n, store, keys, measured) in &mut stores {
            for (answer, (times, commits)) in answers.iter().zip(measured.iter_mut()) {
                for _ in 0..PER_ROUND {
                    now += 1;
                    let i = rng.next_u32() % *n;
                    let start = Instant::now();
                    *commits += echo(store, keys, i, now, *answer);
                    times.push(start.elapsed());
                }
            }
        }
    }
    // medians[sessions][answer]
    let mut medians = Vec::new();
    for (n, _, _, measured) in &mut stores {
        let mut row = Vec::new();
        for (answer, (times, commits)) in answers.iter().zip(measured.iter_mut()) {
            times.sort_unstable();
            let median = percentile(times, 0.5);
            println!(
                "store part of one echo, {n} sessions, answered {answer:?}, synchronous=FULL: median {median:?}, p99 {:?}, {:.2} commits per echo",
                percentile(times, 0.99),
                *commits as f64 / times.len() as f64,
            );
            row.push(median);
        }
        medians.push(row);
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "store part of one echo answered at once, {SESSIONS} / 100 sessions: {:.2}× (target within ±20 %)",
        ratio(medians[1][1], medians[0][1])
    );
    println!(
        "store part of one echo, answered at once / by the program: {:.2}× (100 sessions), {:.2}× ({SESSIONS})",
        ratio(medians[0][1], medians[0][0]),
        ratio(medians[1][1], medians[1][0])
    );
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
