//! `just bench-e2e`: N concurrent clients × M messages through a local Prosody, against a
//! plaintext echo over the same connection stack and against the real OMEMO echo bot.
//!
//! Prints throughput, round-trip p50/p99, the bot's CPU time per message and its peak RSS,
//! the server's CPU time per message and how busy its one thread was, the clients' (this
//! process's) CPU per message and how busy the three kept the machine, and the
//! OMEMO/plaintext ratios. The plaintext echo runs first and last; the ratios take the mean
//! of its two runs (a machine whose speed drifts during the bench shows as a difference
//! between them). The OMEMO run happens twice: with 100 extra
//! stored sessions (with generated peers) in the bot's database, then, with other client
//! accounts, after the database was filled up to 10,000 extra sessions; the bench prints the
//! bot's CPU per message of both runs side by side and its peak RSS in the second.
//! `BENCH_CLIENTS` (default 4) and `BENCH_MESSAGES` (default 100) set N and M. `BENCH_BOT`
//! names another echo-bot executable to measure (to compare two builds on one machine).
//!
//! Where `strace` is installed, each OMEMO run is repeated (with other client accounts) with
//! the bot under it, tracing only `fsync` and `fdatasync` (a seccomp filter: the other system
//! calls run untraced; the untraced runs give the CPU figures), and the bench prints
//! the syncs per echo during the timed part: under the burst of the N senders, and for one
//! sender (the sequential sender against the bot without `TCP_QUICKACK`, so the traced run is
//! not the one compared with the Python reference). `BENCH_NO_STRACE` turns the tracing off.
//!
//! The plaintext echo is this same executable, re-run with `BENCH_PLAINTEXT_ECHO` set: a
//! bench-only baseline, never part of the bot.
//!
//! Then a sequential sender: the Python reference client (`interop/xmpp_peer.py --mode
//! client`, from `OMEMO_PYTHON` or the workspace's `.venv`) sends `BENCH_SEQUENTIAL` (default
//! 100) messages one after another, each after the previous answer, to our bot, to our bot
//! with `TCP_QUICKACK` off, and to the Python reference echo (`--mode echo`), all through one
//! Prosody with its default network settings (Nagle on). The round-trip p50s are printed side
//! by side. `BENCH_ONLY_SEQUENTIAL` runs only this part.

// A benchmark driver: failures should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omemo_crypto::{
    payload, Bundle, DeviceId, IdentityKeyPair, KeyMessage, PreKey, PreKeyId, Session,
    SignedPreKey, SignedPreKeyId,
};
use rand_core::OsRng;
use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Barrier;
use xmpp_core::client::{Client, ClientEvent};
use xmpp_core::connection::{Connection, ConnectionConfig, Event, Secret};
use xmpp_core::jid::{BareJid, Jid};
use xmpp_core::message::{Lang, Message, MessageType};
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

/// Extra stored sessions in the first OMEMO run.
const FEW_SESSIONS: u32 = 100;
/// Extra stored sessions in the second OMEMO run.
const MANY_SESSIONS: u32 = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var_os("BENCH_PLAINTEXT_ECHO").is_some() {
        // The same runtime as the echo bot's: one thread for the connection.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(plaintext_echo());
    } else if std::env::args().any(|a| a == "--bench") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(bench());
    } else {
        // `cargo test --benches` runs benches without `--bench`: nothing to do then.
        println!("e2e bench: run with `cargo bench -p echo-bot --bench e2e` (or `just bench-e2e`)");
    }
}

fn connection_config(jid: &str, password: &str) -> ConnectionConfig {
    let mut config =
        ConnectionConfig::new(BareJid::new(jid).unwrap(), Secret::new(password.to_owned()));
    config.server = Some((
        "127.0.0.1".to_owned(),
        std::env::var("BENCH_PORT").unwrap().parse().unwrap(),
    ));
    config.ca_file = Some(std::env::var("BENCH_CA").unwrap().into());
    config
}

fn text_message(to: Jid, body: &str) -> Message {
    let mut message = Message::new_with_type(MessageType::Chat, Some(to));
    message.bodies.insert(Lang::default(), body.to_owned());
    message
}

/// The baseline bot: the same connection stack, echoing plaintext.
async fn plaintext_echo() {
    let jid = std::env::var("BENCH_JID").unwrap();
    let (connection, mut events) = Connection::connect(connection_config(&jid, "bot-password"))
        .await
        .unwrap();
    println!("plaintext echo ready");
    // Stopped with SIGTERM, it closes its stream as the echo bot does: a stream left open
    // would stay on the server (stream management keeps it for resumption) and get copies
    // of the later runs' messages, raising the server's cost per message run after run.
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = terminate.recv() => None,
        };
        let Some(event) = event else {
            break;
        };
        if let Event::Message(message) = event {
            let (Some(from), Some(body)) = (message.from.clone(), message.bodies.values().next())
            else {
                continue;
            };
            let reply = text_message(Jid::from(from.to_bare()), &format!("Your message: {body}"));
            if connection.send(reply).await.is_err() {
                break;
            }
        }
    }
    connection.close().await;
}

struct Bot {
    child: Child,
    /// The bot's process id (the child of `strace` when traced).
    pid: u32,
    /// Where `strace` writes the bot's syncs, when traced.
    trace: Option<PathBuf>,
}

/// Whether `strace` can be run here (and `BENCH_NO_STRACE` is not set, for profiling the
/// bots with other tools).
fn have_strace() -> bool {
    if std::env::var_os("BENCH_NO_STRACE").is_some() {
        return false;
    }
    std::process::Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `command` run under `strace`, tracing only the syncs into `trace`.
fn traced(command: &Command, trace: &Path) -> Command {
    let std = command.as_std();
    let mut wrapped = Command::new("strace");
    wrapped
        .args([
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
        ])
        .arg(trace)
        .arg(std.get_program())
        .args(std.get_args());
    for (key, value) in std.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

impl Bot {
    async fn spawn(command: Command, ready: &str) -> Self {
        Self::spawn_traced(command, ready, None).await
    }

    /// Spawns the bot, under `strace` writing to `trace` if given.
    async fn spawn_traced(command: Command, ready: &str, trace: Option<PathBuf>) -> Self {
        let mut command = match &trace {
            Some(path) => traced(&command, path),
            None => command,
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(ready) {
                // Keep draining stdout so the bot never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                let outer = child.id().unwrap();
                let pid = if trace.is_some() {
                    let children =
                        std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                            .unwrap();
                    children.split_whitespace().next().unwrap().parse().unwrap()
                } else {
                    outer
                };
                return Self { child, pid, trace };
            }
        }
        panic!("bot exited before it was ready");
    }

    /// The syncs traced so far, if traced (strace writes each call's line when it returns).
    fn syncs(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.trace.as_ref()?).unwrap();
        Some(
            text.lines()
                .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
                .count(),
        )
    }

    /// The CPU time each of the bot's live threads has run so far, in nanoseconds, by thread
    /// id (`/proc/<pid>/task/<tid>/schedstat`: nanosecond resolution, where `/proc/<pid>/stat`
    /// counts 10 ms ticks, too coarse for a plaintext echo's few tens of microseconds).
    fn thread_cpu(&self) -> std::collections::HashMap<u32, u64> {
        thread_cpu(self.pid)
    }

    /// The bot's peak RSS in KiB, from /proc.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        let pid = self.pid;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

struct RunResult {
    rtts: Vec<Duration>,
    wall: Duration,
    cpu: f64,
    /// The server's CPU seconds in the same time (Prosody runs its work on one thread).
    server_cpu: f64,
    /// This process's CPU seconds in the same time: the clients'.
    clients_cpu: f64,
    rss_kib: u64,
    /// The bot's syncs (`fsync`, `fdatasync`) during the timed part, when traced.
    syncs: Option<usize>,
}

impl RunResult {
    /// The CPU seconds of the bot, the server and the clients together.
    fn all_cpu(&self) -> f64 {
        self.cpu + self.server_cpu + self.clients_cpu
    }
}

/// The machine's cores, as this process may use them.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// The CPU time each live thread of process `pid` has run so far, in nanoseconds, by thread
/// id (`/proc/<pid>/task/<tid>/schedstat`).
fn thread_cpu(pid: u32) -> std::collections::HashMap<u32, u64> {
    let mut threads = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };

    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) {
            threads.insert(tid, ns);
        }
    }
    threads
}

/// The CPU seconds a process ran between two [`thread_cpu`] readings. A thread that exited
/// in between is not counted; the bot's threads (runtime workers, the store thread) and the
/// server's live as long as they do.
fn cpu_between(
    before: &std::collections::HashMap<u32, u64>,
    after: &std::collections::HashMap<u32, u64>,
) -> f64 {
    let ns: u64 = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    ns as f64 / 1e9
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, run: &RunResult) -> f64 {
    let mut rtts = run.rtts.clone();
    rtts.sort();
    let n = rtts.len() as f64;
    let throughput = n / run.wall.as_secs_f64();
    println!(
        "{name:<15} {:>7} msgs  {throughput:>8.1} msg/s  p50 {:>8.2?}  p99 {:>8.2?}  bot CPU/msg {:>8.1} µs  bot peak RSS {:>6.1} MB  server CPU/msg {:>7.1} µs (busy {:>3.0} %)  clients CPU/msg {:>7.1} µs  all three busy {:>3.0} % of the machine",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        run.cpu / n * 1e6,
        run.rss_kib as f64 / 1024.0,
        run.server_cpu / n * 1e6,
        run.server_cpu / run.wall.as_secs_f64() * 100.0,
        run.clients_cpu / n * 1e6,
        run.all_cpu() / run.wall.as_secs_f64() / cores() * 100.0,
    );
    throughput
}

async fn plaintext_client(
    user: String,
    bot: BareJid,
    messages: usize,
    start: Arc<Barrier>,
) -> Vec<Duration> {
    let (connection, mut events) = Connection::connect(connection_config(&user, "client-password"))
        .await
        .unwrap();
    start.wait().await;
    let mut rtts = Vec::with_capacity(messages);
    for i in 0..messages {
        let body = format!("{user} {i}");
        let started = Instant::now();
        connection
            .send(text_message(Jid::from(bot.clone()), &body))
            .await
            .unwrap();
        loop {
            match events.recv().await.unwrap() {
                Event::Message(m) if m.bodies.values().any(|b| b.ends_with(&body)) => break,
                _ => {}
            }
        }
        rtts.push(started.elapsed());
    }
    connection.close().await;
    rtts
}

fn settings(server: &TestServer, user: &str, db: &Path) -> AccountSettings {
    AccountSettings {
        jid: server.jid(user).unwrap(),
        password: Password::new("client-password".to_owned()),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
        }),
        ca_file: Some(server.ca_file().to_owned()),
        insecure_plaintext: false,
        db: db.to_owned(),
        label: user.to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    }
}

async fn omemo_client(
    settings: AccountSettings,
    bot: BareJid,
    messages: usize,
    start: Arc<Barrier>,
) -> Vec<Duration> {
    let (client, mut events) = Client::start(&settings).await.unwrap();
    let mut rtts = Vec::with_capacity(messages);
    // One warm-up round builds the session; it is not counted.
    for i in 0..=messages {
        let body = format!("{} {i}", settings.jid);
        let started = Instant::now();
        client.send_body(&bot, &body).await.unwrap();
        loop {
            match events.recv().await.unwrap() {
                ClientEvent::Encrypted(m)
                    if m.body.as_deref().is_some_and(|b| b.ends_with(&body)) =>
                {
                    break
                }
                _ => {}
            }
        }
        if i == 0 {
            start.wait().await;
        } else {
            rtts.push(started.elapsed());
        }
    }
    client.close().await;
    rtts
}

/// Fills the bot's store up to `total` extra sessions with generated peers (`peer0`, ...), as
/// a long-running bot would have. The filling commits without waiting for the disk (it is
/// set-up, not what is measured); the bot reopens the file at the default durability.
fn add_sessions(db: &Path, bot_jid: &BareJid, from: u32, total: u32) {
    // Creates the bot's device on the first call.
    drop(xmpp_core::omemo::OmemoManager::open_store(db, bot_jid, "echo-bot").unwrap());
    let mut store = atm_trust::Store::open_with(db, atm_trust::Durability::Normal).unwrap();
    let own = store
        .load_or_create_own_device(bot_jid.as_str(), Some("echo-bot"), &mut OsRng, 0)
        .unwrap();
    let identity = omemo_crypto::hazmat::identity_from_seed(&omemo_crypto::hazmat::identity_seed(
        own.identity(),
    ));
    let mut rng = OsRng;
    for i in from..total {
        let peer = IdentityKeyPair::generate(&mut rng);
        let spk = SignedPreKey::generate(SignedPreKeyId::new(1).unwrap(), &peer, 0, &mut rng);
        let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut rng);
        let bundle = Bundle::from_own_keys(&peer, &spk, [&pk]).unwrap();
        let session = Session::initiate(&identity, &bundle, pk.id(), &mut rng).unwrap();
        store
            .store_session(
                atm_trust::Namespace::Omemo2,
                &format!("peer{i}@example.org"),
                DeviceId::new(i + 1).unwrap(),
                &session.snapshot(),
                0,
            )
            .unwrap();
    }
    drop(store);
    // A long-running bot's write-ahead log is checkpointed as it goes; without this the bot
    // would copy the whole filling into the database file during the measured run.
    let conn = rusqlite::Connection::open(db).unwrap();
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        busy, 0,
        "the checkpoint after filling the store did not complete"
    );
}

/// The echo bot to measure: `BENCH_BOT`, to compare two builds on the same machine, else this
/// workspace's.
fn bot_executable() -> PathBuf {
    std::env::var_os("BENCH_BOT").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_echo-bot")),
        PathBuf::from,
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python reference interpreter (`OMEMO_PYTHON`, else the workspace's `.venv`), if present.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("OMEMO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    python.exists().then_some(python)
}

fn python_peer(python: &Path, server: &TestServer, user: &str, mode: &str) -> Command {
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("interop/xmpp_peer.py"))
        .args(["--mode", mode, "--jid", server.jid(user).unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .args(["--timeout", "30"])
        .env("XMPP_PASSWORD", format!("{user}-password"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The Python reference client sends `messages` OMEMO messages to `to` one after another,
/// each after the previous answer. Returns the round trips of all but the first (key
/// exchange) message and their sum.
async fn sequential_sender(
    python: &Path,
    server: &TestServer,
    user: &str,
    to: &str,
    messages: usize,
) -> (Vec<Duration>, f64) {
    let mut command = python_peer(python, server, user, "client");
    command
        .args(["--to", to, "--bodies", "simple", "--count"])
        .arg((messages + 1).to_string())
        .stdout(Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the Python sender did not finish in time")
        .unwrap();
    let mut rtts = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if value["event"] == "answer" && value["n"].as_u64() != Some(1) {
            assert_eq!(value["ok"], true, "wrong answer: {value}");
            rtts.push(Duration::from_secs_f64(
                value["rtt_ms"].as_f64().unwrap() / 1000.0,
            ));
        }
    }
    assert!(
        output.status.success() && rtts.len() == messages,
        "the Python sender failed ({}): {} answers",
        output.status,
        rtts.len()
    );
    let total: f64 = rtts.iter().map(Duration::as_secs_f64).sum();
    (rtts, total)
}

/// A sequential sender against our bot and against the Python reference echo, both through
/// one Prosody with its default network settings (Nagle on), in this run.
async fn sequential(messages: usize) {
    let Some(python) = python() else {
        println!(
            "sequential sender: NOT RUN (no Python reference venv: run `just venv` or set OMEMO_PYTHON)"
        );
        return;
    };
    // test-prosody turns Nagle off for its tests; users run Prosody's default, which is on,
    // and log at info.
    let server = TestServer::builder()
        .option("network_settings = { nagle = true }")
        .debug_log(false)
        .start()
        .unwrap();
    // One account per bot and per sender, so no bot sees another run's devices.
    for user in ["bot", "bot2", "pybot", "seq1", "seq2", "seq3"] {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // The bot as shipped, then with TCP_QUICKACK turned off (fresh store and sender each), to
    // show what the option does in this run.
    let mut ours = Vec::new();
    let mut one_sender_syncs = None;
    for (name, quickack, user, sender) in [
        ("echo-bot", "on", "bot", "seq1"),
        ("echo-bot, no QUICKACK", "off", "bot2", "seq3"),
    ] {
        let mut command = Command::new(bot_executable());
        command
            .args(["--jid", server.jid(user).unwrap().as_str(), "--server"])
            .arg(format!("127.0.0.1:{}", server.port()))
            .arg("--ca-file")
            .arg(server.ca_file())
            .arg("--db")
            .arg(dir.path().join(format!("seq-{user}.sqlite3")))
            .env("XMPP_PASSWORD", format!("{user}-password"))
            .env("XMPP_TCP_QUICKACK", quickack)
            .env("RUST_LOG", "warn");
        // The syncs of one sender are counted on the second bot, so that the bot compared
        // with the Python reference runs untraced.
        let trace = (quickack == "off" && have_strace())
            .then(|| dir.path().join(format!("seq-{user}.strace")));
        let bot = Bot::spawn_traced(command, "echo-bot ready", trace).await;
        let to = format!("{user}@localhost");
        let syncs0 = bot.syncs();
        ours.push((
            name,
            sequential_sender(&python, &server, sender, &to, messages).await,
        ));
        if let (Some(after), Some(before)) = (bot.syncs(), syncs0) {
            // Every message of the sender, the first (key exchange) included.
            one_sender_syncs = Some((after - before) as f64 / (messages + 1) as f64);
        }
        bot.stop().await;
    }

    let mut command = python_peer(&python, &server, "pybot", "echo");
    command.stdout(Stdio::piped());
    let reference = Bot::spawn(command, "\"ready\"").await;
    let theirs = sequential_sender(&python, &server, "seq2", "pybot@localhost", messages).await;
    reference.stop().await;

    let line = |name: &str, (rtts, total): &(Vec<Duration>, f64)| {
        let mut sorted = rtts.clone();
        sorted.sort();
        let p50 = percentile(&sorted, 0.5);
        println!(
            "{name:<22} {:>5} msgs  1/mean RTT {:>6.1}/s  p50 {:>8.2?}  p99 {:>8.2?}",
            sorted.len(),
            sorted.len() as f64 / total,
            p50,
            percentile(&sorted, 0.99),
        );
        p50
    };
    println!(
        "\nsequential sender (Python reference client), Prosody with default network settings:"
    );
    let ours_p50 = line(ours[0].0, &ours[0].1);
    line(ours[1].0, &ours[1].1);
    let theirs_p50 = line("python-omemo echo", &theirs);
    println!(
        "round trip p50, echo-bot vs python-omemo echo: {:.2}× ({})",
        ours_p50.as_secs_f64() / theirs_p50.as_secs_f64(),
        if ours_p50 < theirs_p50 {
            "ours is lower"
        } else {
            "ours is NOT lower"
        }
    );
    match one_sender_syncs {
        Some(syncs) => println!(
            "bot fsyncs, one sequential sender: {syncs:.2} per echo, {:.2} per message (an echo is two; target ≤ 1 per message)",
            syncs / 2.0
        ),
        None => println!("bot fsyncs per echo, one sender: NOT MEASURED (strace is not installed)"),
    }
}

/// The cryptography of one echo alone, as the bot does it, averaged over `echoes`: decrypting
/// a message whose ratchet key is new (its sender read our previous answer: a Diffie-Hellman
/// ratchet step), opening its payload, sealing the answer's payload and encrypting its key
/// (the answer's own step). No OMEMO 2 echo can cost less; the sender's side is not timed.
fn crypto_per_echo(echoes: usize) -> Duration {
    let mut rng = OsRng;
    let alice_identity = IdentityKeyPair::generate(&mut rng);
    let bot_identity = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKey::generate(SignedPreKeyId::new(1).unwrap(), &bot_identity, 0, &mut rng);
    let pk = PreKey::generate(PreKeyId::new(1).unwrap(), &mut rng);
    let bundle = Bundle::from_own_keys(&bot_identity, &spk, [&pk]).unwrap();
    let mut alice = Session::initiate(&alice_identity, &bundle, pk.id(), &mut rng).unwrap();
    let (_, material) = payload::encrypt(b"hello", &mut rng);
    let wire = alice.encrypt(material.as_bytes()).unwrap().to_bytes();
    let KeyMessage::KeyExchange(kex) = KeyMessage::from_bytes(&wire).unwrap() else {
        panic!("a new session's first message is a key exchange");
    };
    let (mut bot, _) = Session::respond(&bot_identity, &spk, &pk, &kex, &mut rng).unwrap();
    // About the size of a short message's SCE envelope.
    let envelope = vec![b'x'; 300];
    let mut spent = Duration::ZERO;
    for _ in 0..echoes {
        let (ciphertext, material) = payload::encrypt(&envelope, &mut rng);
        let wire = alice.encrypt(material.as_bytes()).unwrap().to_bytes();
        let start = Instant::now();
        let message = KeyMessage::from_bytes(&wire).unwrap();
        let decrypted = bot.decrypt(&message, &mut rng).unwrap();
        let opened = payload::decrypt(&ciphertext, decrypted.plaintext()).unwrap();
        let (answer, material) = payload::encrypt(&opened, &mut rng);
        let key = bot.encrypt(material.as_bytes()).unwrap().to_bytes();
        spent += start.elapsed();
        std::hint::black_box(answer);
        // Alice reads the answer, so that her next message brings a new ratchet key.
        let decrypted = alice
            .decrypt(&KeyMessage::from_bytes(&key).unwrap(), &mut rng)
            .unwrap();
        std::hint::black_box(decrypted);
    }
    spent / u32::try_from(echoes.max(1)).unwrap()
}

async fn bench() {
    let sequential_messages = env_usize("BENCH_SEQUENTIAL", 100);
    if std::env::var_os("BENCH_ONLY_SEQUENTIAL").is_some() {
        sequential(sequential_messages).await;
        return;
    }
    let clients = env_usize("BENCH_CLIENTS", 4);
    let messages = env_usize("BENCH_MESSAGES", 100);
    // Logging at info, as a production server does: the test servers' debug log of every
    // stanza costs Prosody more CPU than routing it, more for OMEMO's larger stanzas. No
    // message is archived (MAM answers, but keeps nothing unless an account asks it to):
    // Prosody's archive costs more per message the longer an account's archive grows, on
    // disk and in memory alike (measured: its CPU per message doubled from the first OMEMO
    // run to the second with the file store, and from the first plaintext run to the last
    // with the memory store), which would make each run's figures depend on the runs before.
    let server = TestServer::builder()
        .debug_log(false)
        .option(r#"storage = { archive = "memory" }"#)
        .option("default_archive_policy = false")
        .start()
        .unwrap();
    server.create_account("bot", "bot-password").unwrap();
    for c in 0..clients {
        server
            .create_account(&format!("client{c}"), "client-password")
            .unwrap();
    }
    let bot_jid = server.jid("bot").unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "e2e bench: {clients} clients × {messages} messages, Prosody on 127.0.0.1:{}",
        server.port()
    );

    // The plaintext baseline, before and after the OMEMO runs: the figures compared with the
    // OMEMO run's are the means of the two, so that a machine slowing down or speeding up
    // during the bench shows as a difference between them instead of skewing the ratios.
    // The driver's own plaintext clients use the same variables as the plaintext echo.
    std::env::set_var("BENCH_PORT", server.port().to_string());
    std::env::set_var("BENCH_CA", server.ca_file());
    let plain = plaintext_run(&server, clients, messages).await;
    // The OMEMO echo bot: with 100 extra stored sessions, then (other client accounts, so
    // that no client has a second device) with 10,000.
    let bot_db = dir.path().join("bot.sqlite3");
    // Each size is run twice: untraced for the CPU, memory and timing figures, then (where
    // strace is installed) under strace for the syncs, since the tracing stops the bot at
    // every sync and would raise its CPU figures.
    let trace = have_strace();
    add_sessions(&bot_db, &bot_jid, 0, FEW_SESSIONS);
    let run = |prefix: &'static str, traced: bool| {
        omemo_run(
            &server,
            &bot_db,
            dir.path(),
            prefix,
            clients,
            messages,
            traced,
        )
    };
    let few = run("omemo", false).await;
    let few_traced = if trace {
        Some(run("syncf", true).await)
    } else {
        None
    };
    add_sessions(&bot_db, &bot_jid, FEW_SESSIONS, MANY_SESSIONS);
    let many = run("manyc", false).await;
    let many_traced = if trace {
        Some(run("syncm", true).await)
    } else {
        None
    };

    let plain_after = plaintext_run(&server, clients, messages).await;

    println!();
    let plain_tp = (report("plaintext", &plain) + report("plaintext after", &plain_after)) / 2.0;
    let few_tp = report("omemo", &few);
    report("omemo 10k", &many);
    let per_message = |run: &RunResult| run.cpu / run.rtts.len() as f64;
    let server_per_message = |run: &RunResult| run.server_cpu / run.rtts.len() as f64;
    // A plaintext figure: the mean of the runs before and after.
    let plain_mean =
        |figure: &dyn Fn(&RunResult) -> f64| (figure(&plain) + figure(&plain_after)) / 2.0;
    let plain_cpu = plain_mean(&per_message);
    let plain_server_cpu = plain_mean(&server_per_message);
    println!(
        "bot CPU per OMEMO echo / per plaintext echo: {:.1}× ({:.0} µs / {:.0} µs, the mean of the plaintext runs before and after; target ≤ 3×)",
        per_message(&few) / plain_cpu,
        per_message(&few) * 1e6,
        plain_cpu * 1e6,
    );
    let crypto = crypto_per_echo(clients * messages).as_secs_f64();
    println!(
        "an echo's cryptography alone (two ratchet steps, the first with the Diffie-Hellman step each new turn of a conversation takes, and two payloads, in this process): {:.0} µs, {:.1}× the plaintext echo (no echo costs less: a floor for the ratio above), {:.0} % of the OMEMO echo",
        crypto * 1e6,
        crypto / plain_cpu,
        100.0 * crypto / per_message(&few),
    );
    println!(
        "OMEMO/plaintext throughput: {:.0} % (target ≥ 80 %); the server's CPU per message: {:.1}× the plaintext one's (where the plaintext run keeps the server's one thread busy, the ratio cannot pass {:.0} % whatever the bot does), its one thread busy {:.0} % of the OMEMO run",
        few_tp / plain_tp * 100.0,
        server_per_message(&few) / plain_server_cpu,
        100.0 * plain_server_cpu / server_per_message(&few),
        few.server_cpu / few.wall.as_secs_f64() * 100.0,
    );
    let all_per_message = |run: &RunResult| run.all_cpu() / run.rtts.len() as f64;
    let plain_all = plain_mean(&all_per_message);
    println!(
        "CPU per message of the bot, the server and the clients together: OMEMO / plaintext {:.1}× ({:.0} µs / {:.0} µs); in the OMEMO run they kept {:.0} % of this machine's {} cores busy",
        all_per_message(&few) / plain_all,
        all_per_message(&few) * 1e6,
        plain_all * 1e6,
        few.all_cpu() / few.wall.as_secs_f64() / cores() * 100.0,
        cores(),
    );
    println!(
        "bot CPU per OMEMO echo with {MANY_SESSIONS} / with {FEW_SESSIONS} extra stored sessions: {:.2}× ({:.0} µs / {:.0} µs; target within ±20 %)",
        per_message(&many) / per_message(&few),
        per_message(&many) * 1e6,
        per_message(&few) * 1e6,
    );
    println!(
        "bot peak RSS with {MANY_SESSIONS}+ stored sessions: {:.1} MB (target ≤ 50 MB)",
        many.rss_kib as f64 / 1024.0
    );
    let syncs_per_echo = |run: &Option<RunResult>| {
        run.as_ref()
            .and_then(|r| Some(r.syncs? as f64 / r.rtts.len() as f64))
    };
    match (syncs_per_echo(&few_traced), syncs_per_echo(&many_traced)) {
        (Some(a), Some(b)) => {
            println!(
                "bot fsyncs per echo, burst of {clients} senders: {a:.2} ({FEW_SESSIONS} sessions), {b:.2} ({MANY_SESSIONS} sessions); per message (an echo is two): {:.2}, {:.2} (target < 0.5 per message)",
                a / 2.0,
                b / 2.0,
            );
        }
        _ => println!("bot fsyncs per echo: NOT MEASURED (strace is not installed)"),
    }
    sequential(sequential_messages).await;
}

/// One plaintext run: the plaintext echo (this executable, re-run with
/// `BENCH_PLAINTEXT_ECHO`), `clients` client accounts `client{c}` each sending `messages`.
async fn plaintext_run(server: &TestServer, clients: usize, messages: usize) -> RunResult {
    let bot_jid = server.jid("bot").unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env("BENCH_PLAINTEXT_ECHO", "1")
        .env("BENCH_JID", bot_jid.as_str())
        .env("BENCH_PORT", server.port().to_string())
        .env("BENCH_CA", server.ca_file());
    let bot = Bot::spawn(command, "plaintext echo ready").await;
    let start = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(plaintext_client(
                format!("client{c}@localhost"),
                bot_jid.clone(),
                messages,
                Arc::clone(&start),
            ))
        })
        .collect();
    timed_run(bot, server, &start, tasks).await
}

/// One OMEMO run: the bot on `bot_db`, `clients` new client accounts named `prefix{c}`, each
/// sending `messages` messages after one untimed key-exchange round.
async fn omemo_run(
    server: &TestServer,
    bot_db: &Path,
    dir: &Path,
    prefix: &str,
    clients: usize,
    messages: usize,
    trace: bool,
) -> RunResult {
    let bot_jid = server.jid("bot").unwrap();
    for c in 0..clients {
        server
            .create_account(&format!("{prefix}{c}"), "client-password")
            .unwrap();
    }
    let mut command = Command::new(bot_executable());
    command
        .args(["--jid", bot_jid.as_str(), "--server"])
        .arg(format!("127.0.0.1:{}", server.port()))
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(bot_db)
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", "warn");
    let trace = trace.then(|| dir.join(format!("{prefix}-syncs.strace")));
    let bot = Bot::spawn_traced(command, "echo-bot ready", trace).await;
    // Log-in and the first (key-exchange) round happen before the barrier; only the rounds
    // after it are timed and counted, in both runs.
    let start = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let s = settings(
                server,
                &format!("{prefix}{c}"),
                &dir.join(format!("{prefix}{c}.sqlite3")),
            );
            tokio::spawn(omemo_client(
                s,
                bot_jid.clone(),
                messages,
                Arc::clone(&start),
            ))
        })
        .collect();
    timed_run(bot, server, &start, tasks).await
}

/// The timed part of a run: lets the clients' `tasks` go at `start` and measures the bot
/// (CPU, peak RSS, syncs when traced) and the server (CPU) over exactly the time until the
/// last of them is done; then stops the bot.
async fn timed_run(
    bot: Bot,
    server: &TestServer,
    start: &Barrier,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> RunResult {
    start.wait().await;
    let server_pid = server.pid().unwrap();
    let cpu0 = bot.thread_cpu();
    let server0 = thread_cpu(server_pid);
    let clients0 = thread_cpu(std::process::id());
    let syncs0 = bot.syncs();
    let started = Instant::now();
    let mut rtts = Vec::new();
    for task in tasks {
        rtts.extend(task.await.unwrap());
    }
    let wall = started.elapsed();
    let cpu1 = bot.thread_cpu();
    let server1 = thread_cpu(server_pid);
    let clients1 = thread_cpu(std::process::id());
    let rss = bot.peak_rss_kib();
    let syncs = bot.syncs().zip(syncs0).map(|(b, a)| b - a);
    bot.stop().await;
    RunResult {
        rtts,
        wall,
        cpu: cpu_between(&cpu0, &cpu1),
        server_cpu: cpu_between(&server0, &server1),
        clients_cpu: cpu_between(&clients0, &clients1),
        rss_kib: rss,
        syncs,
    }
}
