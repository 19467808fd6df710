//! Fault injection for `sync-client send`, against a real Prosody and the real echo bot: the
//! client is SIGKILLed in the middle of a multi-chunk send, at several points (after the first
//! chunk was answered, between two chunks in the middle, with the last chunk in flight). After
//! each kill the database must pass SQLite's integrity check and still hold the session with
//! the bot, and the next `send` of the same file on the same database must complete: every
//! chunk verified, the echoed bookmarks exactly the file's (none lost, none duplicated), no
//! new OMEMO key exchange. The bot's answer to the chunk a killed run had in flight reaches a
//! later run (from the server's offline storage, or from the archive the client replays when
//! it connects); it must be recognised as the echo of the killed transfer and ignored, and it
//! must arrive exactly once. Each kill prints one summary line (for the README's reliability
//! table).

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use atm_trust::{Namespace, Store, TrustLevel};
use sync_client::bookmarks::{self, BookmarkTree, Node};
use sync_client::send::ECHO_PREFIX;
use sync_client::transfer::{sha256_hex, Chunk, Transfer};
use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use xmpp_core::client::{Client, ClientEvent};

mod common;

use common::e2e::{
    alice_db, client_settings, report, send_command, server, start_echo_bot, write_bookmarks,
};

/// Bookmarks in the file: enough for a couple of dozen chunks.
const BOOKMARKS: usize = 15_000;
/// Safety net for every wait (never an assertion about speed).
const PATIENCE: Duration = Duration::from_secs(120);
/// The client's log filter: its per-chunk lines and every warning.
const CLIENT_LOG: &str = "warn,sync_client=info,xmpp_core::client=info";

/// Where a run is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Chunk `k` is in flight: alice's message reached the server and the bot's echo left
    /// the bot, but alice has not read it (she is stopped with SIGSTOP as soon as she logs
    /// that she sent chunk `k`, and SIGKILLed once the echo passed the server).
    InFlight(usize),
    /// Right after chunk `k` was verified, while the next one is being encrypted and sent.
    AfterVerified(usize),
}

/// Reads what Prosody appended to its debug log since the last call, whole lines only.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(server: &TestServer) -> Self {
        let path = server.log_file();
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            offset,
            partial: String::new(),
        }
    }

    fn lines(&mut self) -> Vec<String> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: Vec<String> = self.partial[..end].lines().map(str::to_owned).collect();
        self.partial.drain(..=end);
        complete
    }
}

/// An encrypted message as one client handed it to the server (`RECV:`), addressed to
/// `to_attribute` (`to='…'`).
fn is_message_to(line: &str, to_attribute: &str) -> bool {
    line.contains("RECV: <message")
        && line.contains(to_attribute)
        && line.contains("id='omemo-msg-")
}

/// The Prosody session a log line is about (`c2s…` before the first tab).
fn log_session(line: &str) -> Option<&str> {
    line.split('\t').next()?.split_whitespace().last()
}

/// The stanza id of a logged message.
fn stanza_id(line: &str) -> Option<&str> {
    let start = line.find("id='omemo-msg-")? + "id='".len();
    let len = line[start..].find('\'')?;
    Some(&line[start..start + len])
}

/// The per-process part of a stanza id (`omemo-msg-<tag>-<n>`). A client started again sends
/// its outbox with the ids an earlier process gave.
fn id_tag(id: &str) -> Option<&str> {
    id.strip_prefix("omemo-msg-")?.split('-').next()
}

/// Counts what the server receives: alice's messages to the bot and the bot's to alice.
/// Messages whose id the server had seen before this count started are copies sent again
/// from a client's outbox (at least once delivery after a kill); they are counted apart.
/// So are alice's messages with an id of an earlier process that the server never saw: a
/// killed run had committed them to its outbox but died before they left (the bot answers
/// those, as any message it had not had).
struct Traffic {
    log: LogTail,
    earlier: BTreeSet<String>,
    /// The id tags of the processes that sent `earlier`.
    earlier_tags: BTreeSet<String>,
    to_bot: usize,
    to_alice: usize,
    resent: usize,
    /// Alice's messages sent again that the server had not seen before.
    resent_unseen: usize,
    /// The server's session of the client that sent to the bot.
    alice_session: Option<String>,
    /// Sessions whose connection the server saw close.
    disconnected: BTreeSet<String>,
}

impl Traffic {
    fn new(server: &TestServer) -> Self {
        let earlier: BTreeSet<String> = server
            .stanza_log()
            .lines()
            .filter_map(stanza_id)
            .map(str::to_owned)
            .collect();
        let earlier_tags = earlier
            .iter()
            .filter_map(|id| id_tag(id))
            .map(str::to_owned)
            .collect();
        Self {
            log: LogTail::new(server),
            earlier,
            earlier_tags,
            to_bot: 0,
            to_alice: 0,
            resent: 0,
            resent_unseen: 0,
            alice_session: None,
            disconnected: BTreeSet::new(),
        }
    }

    fn poll(&mut self) {
        for line in self.log.lines() {
            let resent = (is_message_to(&line, "to='bot@localhost'")
                || is_message_to(&line, "to='alice@localhost'"))
                && stanza_id(&line).is_some_and(|id| self.earlier.contains(id));
            let resent_unseen = !resent
                && is_message_to(&line, "to='bot@localhost'")
                && stanza_id(&line)
                    .and_then(id_tag)
                    .is_some_and(|tag| self.earlier_tags.contains(tag));
            if resent {
                self.resent += 1;
            } else if resent_unseen {
                self.resent_unseen += 1;
            } else if is_message_to(&line, "to='bot@localhost'") {
                self.to_bot += 1;
                self.alice_session = log_session(&line).map(str::to_owned);
            } else if is_message_to(&line, "to='alice@localhost'") {
                self.to_alice += 1;
            } else if line.contains("Client disconnected") {
                if let Some(session) = log_session(&line) {
                    self.disconnected.insert(session.to_owned());
                }
            }
        }
    }

    /// True once the server saw alice's connection close: it has read everything she sent.
    fn alice_gone(&self) -> bool {
        self.alice_session
            .as_ref()
            .is_some_and(|s| self.disconnected.contains(s))
    }

    /// Whether `done` holds within `within` (polling every millisecond).
    async fn reached(&mut self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until `done` holds (the patience is a safety net).
    async fn wait_for(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        assert!(
            self.reached(PATIENCE, done).await,
            "gave up waiting for {what}"
        );
    }
}

/// The value of `key=` in a `tracing` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn chunk_field(line: &str) -> usize {
    field(line, "chunk").unwrap().parse().unwrap()
}

/// What a killed run logged.
#[derive(Debug, Default)]
struct KilledRun {
    transfer_id: String,
    last_sent: usize,
    last_verified: usize,
    /// Killed while stopped, with the bot's echo of its last chunk already past the server.
    echo_in_flight: bool,
    /// Its chunks that reached the server (and the bot, which answered each).
    chunks_at_server: usize,
    log: String,
}

impl KilledRun {
    /// Where it was killed, as its log and the server saw it.
    fn describe(&self, count: usize) -> String {
        if self.last_sent > self.last_verified {
            format!(
                "with chunk {}/{count} in flight ({})",
                self.last_sent,
                if self.echo_in_flight {
                    "its echo on the way"
                } else {
                    "no echo yet"
                }
            )
        } else {
            format!(
                "between chunks, after chunk {}/{count} was verified",
                self.last_verified
            )
        }
    }

    fn note(&mut self, line: &str) {
        if line.contains("bookmarks imported") {
            self.transfer_id = field(line, "transfer").unwrap().to_owned();
        } else if line.contains("chunk sent") {
            self.last_sent = chunk_field(line);
        } else if line.contains("chunk verified") {
            self.last_verified = chunk_field(line);
        }
        self.log.push_str(line);
        self.log.push('\n');
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Starts `send` and SIGKILLs it at `at`. Returns what it logged.
async fn send_and_kill(
    server: &TestServer,
    dir: &Path,
    file: &Path,
    at: KillAt,
    count: usize,
) -> KilledRun {
    let mut traffic = Traffic::new(server);
    let mut child = send_command(server, dir, file, &[])
        .env("RUST_LOG", CLIENT_LOG)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut run = KilledRun::default();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Keep up with the server's log, so that little is left to read at the trigger.
        traffic.poll();
        let line = tokio::time::timeout_at(deadline.into(), lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no trigger for {at:?} in time; log:\n{}", run.log))
            .unwrap_or_else(|| {
                panic!(
                    "sync-client ended before it could be killed at {at:?}; log:\n{}",
                    run.log
                )
            });
        run.note(&line);
        match at {
            KillAt::AfterVerified(k)
                if line.contains("chunk verified") && chunk_field(&line) == k =>
            {
                child.start_kill().unwrap();
                break;
            }
            KillAt::InFlight(k) if line.contains("chunk sent") && chunk_field(&line) == k => {
                // Freeze alice at once, so that she cannot read the echo. If her chunk had
                // not left the process yet, let it go and freeze her as soon as the server
                // has it (the 2 s only choose between the two ways, nothing is asserted). Let
                // go, she may read the echo and commit her next chunk before she is frozen
                // again; if she dies before it leaves, the next run sends it (see `Traffic`).
                signal(pid, "STOP");
                if !traffic
                    .reached(Duration::from_secs(2), |t| t.to_bot >= k)
                    .await
                {
                    signal(pid, "CONT");
                    traffic
                        .wait_for("alice's chunk at the server", |t| t.to_bot >= k)
                        .await;
                    signal(pid, "STOP");
                }
                // Kill her once the bot's echo is on its way to her.
                traffic
                    .wait_for("the bot's echo at the server", |t| t.to_alice >= k)
                    .await;
                child.start_kill().unwrap();
                run.echo_in_flight = true;
                break;
            }
            _ => {}
        }
    }
    let status: ExitStatus = child.wait().await.unwrap();
    assert!(!status.success(), "sync-client was not killed: {status}");
    reader.await.unwrap();
    while let Ok(line) = lines.try_recv() {
        run.note(&line);
    }
    // Once the server has read everything the killed run sent, let the bot answer what
    // reached it, so that the next run starts on a quiet server.
    traffic
        .wait_for("the server to notice the kill", Traffic::alice_gone)
        .await;
    traffic
        .wait_for("the bot's answers to the killed run", |t| {
            t.to_alice >= t.to_bot
        })
        .await;
    assert_eq!(traffic.to_alice, traffic.to_bot, "the bot answered twice");
    run.chunks_at_server = traffic.to_bot;
    assert!(
        !run.transfer_id.is_empty(),
        "no transfer id in:\n{}",
        run.log
    );
    assert!(
        run.last_verified < count,
        "the killed run finished before the kill:\n{}",
        run.log
    );
    run
}

/// `PRAGMA integrity_check` of alice's database.
fn integrity_check(db: &Path) -> String {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// What alice's store knows about the bot: its device, identity key (fingerprint), trust
/// level, and whether there is a session.
#[derive(Debug, PartialEq, Eq)]
struct BotState {
    device: u32,
    fingerprint: String,
    trust: TrustLevel,
    session: bool,
}

fn bot_state(db: &Path) -> BotState {
    let store = Store::open(db).unwrap();
    let devices = store.devices(Namespace::Omemo2, "bot@localhost").unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    let device = &devices[0];
    let key = device.identity_key.unwrap();
    BotState {
        device: device.device_id.get(),
        fingerprint: key.fingerprint(),
        trust: store.trust_level("bot@localhost", &key).unwrap().unwrap(),
        session: store
            .load_session(Namespace::Omemo2, "bot@localhost", device.device_id)
            .unwrap()
            .is_some(),
    }
}

/// Every (URL, title) pair of a tree with its number of occurrences.
fn bookmark_pairs(tree: &BookmarkTree) -> BTreeMap<(String, String), usize> {
    let mut pairs = BTreeMap::new();
    let mut pending: Vec<&Node> = tree.roots.iter().collect();
    while let Some(node) = pending.pop() {
        match node {
            Node::Folder(folder) => pending.extend(folder.children.iter()),
            Node::Bookmark(b) => *pairs.entry((b.url.clone(), b.title.clone())).or_insert(0) += 1,
            Node::Separator(_) => {}
        }
    }
    pairs
}

/// The payloads of every OMEMO key exchange (`<key … kex='true'>payload</key>`) in
/// stanza-log lines. The same message shows up several times (received from the sender, sent
/// to the recipient, replayed from the archive); distinct payloads are distinct messages.
fn key_exchanges(log: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in log.lines() {
        // Prosody writes attributes in no fixed order: look at each whole <key> tag.
        for key in line.split("<key ").skip(1) {
            let Some((tag, rest)) = key.split_once('>') else {
                continue;
            };
            if tag.contains("kex='true'") || tag.contains("kex=\"true\"") {
                let payload = rest.split_once("</key>").map_or(rest, |(p, _)| p);
                found.insert(payload.to_owned());
            }
        }
    }
    found
}

/// Reads alice's messages as a plain client on her database until the echoes `wanted`
/// (transfer id, chunk) have arrived; returns every echo of a killed transfer that arrived.
async fn drain_late_echoes(
    server: &TestServer,
    db: &Path,
    killed: &[KilledRun],
    wanted: &BTreeSet<(String, usize)>,
) -> Vec<(String, usize)> {
    if wanted.is_empty() {
        return Vec::new();
    }
    // The label sync-client publishes by default.
    let settings = client_settings(server, "alice", db.to_owned(), "sync-client");
    let (client, mut events) = Client::start(&settings).await.unwrap();
    let mut arrived = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !wanted.iter().all(|w| arrived.contains(w)) {
        let event = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .unwrap_or_else(|_| panic!("late echoes never arrived: {wanted:?}, got {arrived:?}"))
            .unwrap();
        match event {
            ClientEvent::Encrypted(message) => {
                let body = message.body.unwrap_or_default();
                let Some(chunk) = body
                    .strip_prefix(ECHO_PREFIX)
                    .and_then(|c| Chunk::parse(c).ok())
                else {
                    continue;
                };
                if killed.iter().any(|r| r.transfer_id == chunk.transfer_id) {
                    arrived.push((chunk.transfer_id.to_owned(), chunk.index));
                }
            }
            ClientEvent::Undecryptable { from, reason, .. } => {
                panic!("undecryptable message from {from}: {reason}")
            }
            _ => {}
        }
    }
    client.close().await;
    arrived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_client_mid_send_loses_and_duplicates_nothing() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let bot = start_echo_bot(&server, &dir.path().join("bot.sqlite3")).await;
    let db = alice_db(dir.path());

    // A first, complete send sets up the session with the bot (alice's key exchange).
    let small = common::fixture_path("firefox-export.html");
    let output = send_command(&server, dir.path(), &small, &[])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", report(&output));
    let first_key_exchanges = key_exchanges(&server.stanza_log());
    assert!(
        !first_key_exchanges.is_empty(),
        "the key exchange check sees nothing: no kex in the first session's log"
    );
    let settled = bot_state(&db);
    assert_eq!(settled.device, bot.device);
    assert!(settled.session);

    // The file, what it must come back as, and how many chunks it makes.
    let file = dir.path().join("bookmarks.html");
    write_bookmarks(&file, BOOKMARKS);
    let (_, input) = bookmarks::import_file(&file, None).unwrap();
    let input_pairs = bookmark_pairs(&input);
    assert_eq!(
        input_pairs.len(),
        BOOKMARKS,
        "the input has duplicate bookmarks"
    );
    let input_sha256 = sha256_hex(&input.to_canonical_json().unwrap());
    let count = Transfer::new(&input, "probe").unwrap().chunks.len();
    assert!(
        count >= 8,
        "only {count} chunks: too few to kill in between"
    );
    println!(
        "sync-client kill test: {BOOKMARKS} bookmarks, {count} chunks of {} base64 characters",
        sync_client::transfer::CHUNK_DATA_CHARS
    );

    let plan = [
        KillAt::InFlight(2),
        KillAt::AfterVerified(count / 2),
        KillAt::InFlight(count / 2 + 2),
        KillAt::InFlight(count),
    ];
    let mut killed_runs: Vec<KilledRun> = Vec::new();
    // (transfer id, chunk) of the late echoes seen, and of those that must turn up.
    let mut late_echoes: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut expected_late: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut stale_in_runs = 0;
    for (i, at) in plan.into_iter().enumerate() {
        let killed = send_and_kill(&server, dir.path(), &file, at, count).await;
        assert!(
            killed.last_verified >= 1,
            "killed before any chunk was answered:\n{}",
            killed.log
        );
        assert_eq!(integrity_check(&db), "ok", "after kill {}", i + 1);
        assert_eq!(
            bot_state(&db),
            settled,
            "the session with the bot changed or vanished"
        );

        // The next send, on the same database and file, goes through completely.
        let echo_file = dir.path().join(format!("echo-{i}.json"));
        let mut traffic = Traffic::new(&server);
        let started = Instant::now();
        let output = send_command(&server, dir.path(), &file, &[])
            .arg("--save-echo")
            .arg(&echo_file)
            .env("RUST_LOG", CLIENT_LOG)
            .output()
            .await
            .unwrap();
        let took = started.elapsed();
        let summary = report(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the send after kill {} failed: {summary}\n{stderr}",
            i + 1
        );
        assert_eq!(summary["ok"], true);
        assert_eq!(summary["chunks"], count);
        assert_eq!(summary["verified_chunks"], count);
        assert_ne!(summary["transfer_id"], killed.transfer_id.as_str());

        // Each chunk went out once and was echoed once (besides copies of the killed run's
        // unacknowledged message sent again from the outbox, which the ratchet drops, and the
        // bot's answer to a message the killed run committed but never got out).
        traffic.poll();
        assert_eq!(
            traffic.to_bot,
            count,
            "alice's messages to the bot ({} sent again, {} of them new to the server)",
            traffic.resent + traffic.resent_unseen,
            traffic.resent_unseen
        );
        assert_eq!(
            traffic.to_alice,
            count + traffic.resent_unseen,
            "the bot's messages to alice"
        );

        // What came back is the file: same bookmarks, none lost, none twice.
        assert_eq!(summary["bookmarks"], BOOKMARKS);
        assert_eq!(summary["echoed"]["bookmarks"], BOOKMARKS);
        assert_eq!(summary["echoed"]["matches"], true);
        assert_eq!(summary["echoed"]["document_sha256"], input_sha256.as_str());
        let echoed =
            BookmarkTree::from_canonical_json(&std::fs::read(&echo_file).unwrap()).unwrap();
        assert_eq!(bookmark_pairs(&echoed), input_pairs);
        assert_eq!(echoed, input);

        // The OMEMO session survived: no key exchange either way, nothing undecryptable.
        assert_eq!(summary["key_exchange_answers"], 0);
        let new_key_exchanges: Vec<String> = key_exchanges(&server.stanza_log())
            .difference(&first_key_exchanges)
            .cloned()
            .collect();
        assert!(
            new_key_exchanges.is_empty(),
            "{} new key exchange(s) after kill {}",
            new_key_exchanges.len(),
            i + 1
        );
        for bad in ["undecryptable", "cannot decrypt", "built a new session"] {
            assert!(
                !stderr.contains(bad),
                "{bad} after kill {}:\n{stderr}",
                i + 1
            );
            assert!(
                !killed.log.contains(bad),
                "{bad} in the killed run:\n{}",
                killed.log
            );
        }
        assert_eq!(integrity_check(&db), "ok");
        assert_eq!(bot_state(&db), settled);

        // Late echoes of killed transfers were recognised, logged and ignored. Each is the
        // echo of the one chunk a killed run had in flight (one chunk at a time), and none
        // comes twice. They arrive while the server's archive is replayed, which may still be
        // under way when a short send is done; those arrive at a later run.
        let stale = summary["stale_echo_chunks"].as_array().unwrap();
        assert_eq!(summary["stale_echoes"], stale.len());
        killed_runs.push(killed);
        for echo in stale {
            let transfer = echo["transfer_id"].as_str().unwrap();
            let index = echo["index"].as_u64().unwrap() as usize;
            let run = killed_runs
                .iter()
                .find(|r| r.transfer_id == transfer)
                .unwrap_or_else(|| panic!("a late echo of no killed transfer: {echo}"));
            assert_eq!(echo["count"], count);
            assert_eq!(
                index,
                run.last_verified + 1,
                "not the chunk the killed run had in flight: {echo}"
            );
            assert!(
                late_echoes.insert((transfer.to_owned(), index)),
                "a late echo came twice: {echo}"
            );
        }
        let logged = stderr
            .lines()
            .filter(|l| l.contains("late echo of an earlier, interrupted transfer"))
            .count();
        assert_eq!(logged, stale.len(), "{stderr}");
        let killed = killed_runs.last().unwrap();
        let of_this_kill = stale
            .iter()
            .filter(|e| e["transfer_id"] == killed.transfer_id.as_str())
            .count();
        // One chunk at a time: at most the one after the last verified one was unanswered
        // when the run died, and if it had reached the bot, its echo must turn up.
        assert!(
            (killed.last_verified..=killed.last_verified + 1).contains(&killed.chunks_at_server),
            "{} chunks reached the server, {} were verified",
            killed.chunks_at_server,
            killed.last_verified
        );
        if killed.chunks_at_server > killed.last_verified {
            expected_late.insert((killed.transfer_id.clone(), killed.chunks_at_server));
        }
        if let KillAt::InFlight(k) = at {
            assert!(
                killed.last_verified >= k
                    || expected_late.contains(&(killed.transfer_id.clone(), k)),
                "the in-flight chunk {k} did not reach the bot"
            );
        }
        stale_in_runs += stale.len();
        let catch_up = stderr
            .lines()
            .find(|l| l.contains("caught up from the archive"))
            .and_then(|l| field(l, "replayed"))
            .map_or_else(
                || "still replaying the archive at exit".to_owned(),
                |n| format!("archive replay of {n} done"),
            );

        println!(
            "kill {}: killed {}; next send {:.2} s ({:.2} s sending), \
             {} late echo(es) of the killed transfer seen and ignored ({} of earlier kills; {}); \
             {} unacknowledged message(s) sent again from the outbox ({} the server had not had)",
            i + 1,
            killed.describe(count),
            took.as_secs_f64(),
            summary["seconds"].as_f64().unwrap(),
            of_this_kill,
            stale.len() - of_this_kill,
            catch_up,
            traffic.resent + traffic.resent_unseen,
            traffic.resent_unseen,
        );
    }
    assert!(
        stale_in_runs > 0,
        "no echo of a killed transfer reached a later run: the case was not exercised"
    );

    // Every echo a killed run had in flight arrives once: what the sends did not see yet
    // comes when alice reads her messages to the end.
    let missing: BTreeSet<(String, usize)> =
        expected_late.difference(&late_echoes).cloned().collect();
    let drained = drain_late_echoes(&server, &db, &killed_runs, &missing).await;
    for echo in &drained {
        assert!(
            late_echoes.insert(echo.clone()),
            "a late echo came twice: {echo:?}"
        );
    }
    assert!(
        expected_late.is_subset(&late_echoes),
        "late echoes lost: {:?}",
        expected_late.difference(&late_echoes).collect::<Vec<_>>()
    );
    println!(
        "late echoes: {} expected (chunks answered by the bot after a kill), {} seen and ignored \
         by the next sends, {} delivered only afterwards, none twice",
        expected_late.len(),
        stale_in_runs,
        drained.len()
    );
    assert_eq!(integrity_check(&db), "ok");
    let bot_log = bot.log_text();
    assert!(
        !bot_log.contains("cannot decrypt") && !bot_log.contains("undecryptable"),
        "the bot failed to decrypt:\n{bot_log}"
    );
}
