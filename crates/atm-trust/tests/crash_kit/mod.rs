//! What the SIGKILL tests share: session states that show tearing, the child process that
//! prints each commit's number and is killed, the integrity check, and a `main` that stands
//! in for libtest (these targets have `harness = false`, because the same executable is the
//! parent test and, with the child variable set, the child that gets killed).

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A session state of `len` bytes after its sequence number, every byte derived from it, so
/// that a state torn between two commits fails [`seq_of`].
pub(crate) fn state_for(seq: u64, len: u64) -> Vec<u8> {
    let mut state = seq.to_le_bytes().to_vec();
    state.extend((0..len).map(|i| (seq.wrapping_mul(31).wrapping_add(i) % 251) as u8));
    state
}

/// The sequence number a state was made from; panics on a torn state.
pub(crate) fn seq_of(state: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(state[..8].try_into().unwrap());
    let len = u64::try_from(state.len() - 8).unwrap();
    assert_eq!(state, state_for(seq, len), "torn session state");
    seq
}

/// The child's side: prints a committed sequence number on its own line, at once.
pub(crate) fn report_commit(seq: u64) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{seq}").unwrap();
    out.flush().unwrap();
}

/// `PRAGMA integrity_check` of a database the child left behind.
pub(crate) fn integrity_check(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// A random source seeded from the clock; the seed is printed so a failure can be replayed.
pub(crate) fn seeded_rng(test: &str) -> ChaCha20Rng {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("{test}: seed {seed}");
    ChaCha20Rng::seed_from_u64(seed)
}

/// Starts this executable as the child on `db` (`child_env` set to its path), lets `wait`
/// decide when to kill it from the commit numbers the child printed so far, SIGKILLs it and
/// returns the last number it printed (the kill may still land after a later commit, before
/// its print).
pub(crate) fn run_child_and_kill(
    child_env: &str,
    db: &Path,
    round: usize,
    wait: impl FnOnce(&mpsc::Receiver<u64>) -> u64,
) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(child_env, db)
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
    let waited_for = wait(&rx);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let last = rx.try_iter().last().unwrap_or(waited_for);
    assert_eq!(integrity_check(db), "ok", "round {round}");
    last
}

/// The next commit number the child prints, within 20 s.
pub(crate) fn next_commit(rx: &mpsc::Receiver<u64>, round: usize) -> u64 {
    let seq = rx.recv_timeout(Duration::from_secs(20));
    assert!(seq.is_ok(), "round {round}: the child stopped committing");
    seq.unwrap()
}

/// The harness-less `main`: the child when `child_env` is set, otherwise the one test named
/// `name`, with libtest's lines (and nothing to run under `--ignored`).
pub(crate) fn main(child_env: &str, child: fn(&str), name: &str, test: fn()) {
    if let Ok(path) = std::env::var(child_env) {
        child(&path);
        return;
    }
    if std::env::args().any(|a| a == "--ignored") {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return;
    }
    println!("running 1 test");
    test();
    println!("test {name} ... ok");
    println!();
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
