//! The operator's side of the bot against a real Prosody: the trust commands on the bot's
//! database with `--trust-policy manual` (bot stopped and bot running), and a SIGTERM while
//! the server is down that must end the bot at once with its state committed.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use test_prosody::TestServer;
use xmpp_core::client::{Client, ClientEvents};
use xmpp_core::jid::BareJid;

mod common;

use common::{
    echo_round, next_encrypted, settings, start_bot_logging, stop_bot, Bot, Scene, TIMEOUT,
};

/// The bot's log filter here: its own decisions ("not answering") and connection warnings.
const BOT_LOG: &str = "warn,echo_bot=info,xmpp_core::client=info";

/// Waits until `needle` occurs `count` times in the bot's log.
async fn wait_for_log(bot: &Bot, needle: &str, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while bot.log_text().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {count} time(s) within {TIMEOUT:?}; log:\n{}",
            bot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `echo-bot --jid bot@… --db DB <args>` (no password, no server: database only).
async fn bot_command(server: &TestServer, db: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(common::bot_exe())
        .args(["--jid", server.jid("bot").unwrap().as_str()])
        .args(["--db", db.to_str().unwrap()])
        .args(args)
        .env_remove("XMPP_PASSWORD")
        .env_remove("XMPP_CONFIG")
        .output()
        .await
        .unwrap()
}

/// `echo-bot trust|distrust JID KEY` on the database; its standard output.
async fn set_trust(server: &TestServer, db: &Path, verb: &str, jid: &BareJid, key: &str) -> String {
    stdout(&bot_command(server, db, &[verb, jid.as_str(), key]).await)
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The next echo alice receives, as its text after "Your message: ".
async fn next_echo(events: &mut ClientEvents) -> String {
    let reply = next_encrypted(events, TIMEOUT)
        .await
        .expect("no encrypted answer");
    reply
        .body
        .as_deref()
        .and_then(|b| b.strip_prefix("Your message: "))
        .unwrap_or_else(|| panic!("not an echo: {:?}", reply.body))
        .to_owned()
}

async fn send(alice: &Client, bot: &BareJid, text: &str) {
    alice.send_body(bot, text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_trust_with_the_bot_stopped_and_running() {
    let manual = ["--trust-policy", "manual"];
    let Scene {
        server,
        dir: _dir,
        bot_db: db,
        bot_jid,
        bot,
        client: alice,
        mut events,
    } = Scene::start("alice", &manual, BOT_LOG).await;
    let alice_jid = server.jid("alice").unwrap();
    let alice_device = alice.manager().own().device_id.to_string();
    let alice_fingerprint = alice.manager().own().identity.public_key().fingerprint();

    // The bot's own fingerprint, from its database while it runs.
    let text = stdout(&bot_command(&server, &db, &["fingerprint"]).await);
    assert!(
        text.contains(&format!("Device id:    {}", bot.device)),
        "{text}"
    );

    // Untrusted under the manual policy: decrypted, not answered.
    send(&alice, &bot_jid, "m1").await;
    wait_for_log(&bot, "sender device is not trusted", 1).await;
    let text = stdout(&bot_command(&server, &db, &["devices", alice_jid.as_str()]).await);
    let line = text
        .lines()
        .find(|l| l.contains(&alice_device))
        .unwrap_or_else(|| panic!("alice's device {alice_device} not listed:\n{text}"));
    assert!(line.contains("AutomaticallyDistrusted"), "{line}");
    // The bot knows Alice's device from her OMEMO 2 list only: it answers in the version a
    // message came in and never needed her legacy list.
    assert!(line.contains("[OMEMO 2]"), "{line}");
    assert!(text.contains(&alice_fingerprint), "{text}");

    // Trusted with the bot stopped; the restarted bot answers the same device.
    stop_bot(bot).await;
    let text = set_trust(&server, &db, "trust", &alice_jid, &alice_fingerprint).await;
    assert!(
        text.contains("Some(AutomaticallyDistrusted) -> Authenticated"),
        "{text}"
    );
    let bot = start_bot_logging(&server, "bot", &db, &manual, BOT_LOG).await;
    send(&alice, &bot_jid, "m2").await;
    // The first echo is m2's: m1 was never answered (answers go out in order).
    assert_eq!(next_echo(&mut events).await, "m2");

    // Distrusted while the bot runs: no answer from the next message on.
    let text = set_trust(&server, &db, "distrust", &alice_jid, &alice_fingerprint).await;
    assert!(
        text.contains("Some(Authenticated) -> ManuallyDistrusted"),
        "{text}"
    );
    send(&alice, &bot_jid, "m3").await;
    wait_for_log(&bot, "sender device is not trusted", 2).await;

    // Trusted again while it runs (the key id form works too): answered again.
    let key_id = alice.manager().own().identity.public_key().key_id_hex();
    let text = set_trust(&server, &db, "trust", &alice_jid, &key_id).await;
    assert!(
        text.contains("Some(ManuallyDistrusted) -> Authenticated"),
        "{text}"
    );
    send(&alice, &bot_jid, "m4").await;
    assert_eq!(next_echo(&mut events).await, "m4");
    echo_round(&alice, &mut events, &bot_jid, "m5").await;

    // An unknown fingerprint is refused with a clear message, and changes nothing.
    let output = bot_command(&server, &db, &["distrust", alice_jid.as_str(), "00ff"]).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("fingerprint") || error.contains("key"),
        "{error}"
    );
    echo_round(&alice, &mut events, &bot_jid, "m6").await;

    stop_bot(bot).await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_to_reconnect_stops_at_once_with_state_committed() {
    let Scene {
        mut server,
        dir,
        bot_db: db,
        bot_jid,
        mut bot,
        client: alice,
        mut events,
    } = Scene::start("alice", &[], BOT_LOG).await;
    let alice_db = dir.path().join("alice.sqlite3");
    echo_round(&alice, &mut events, &bot_jid, "before the outage").await;
    alice.close().await;

    let stopped_at = atm_trust::Store::open(&db)
        .unwrap()
        .caught_up_until()
        .unwrap();
    tokio::task::block_in_place(|| server.stop()).unwrap();
    // Waiting to reconnect: one attempt has failed, the next is some seconds away.
    wait_for_log(&bot, "reconnect failed", 1).await;

    let pid = bot.child.id().unwrap();
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), bot.child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within 10 s of SIGTERM; log:\n{}", bot.log_text()))
        .unwrap();
    let took = signalled.elapsed();
    eprintln!("SIGTERM while waiting to reconnect: exited in {took:?}");
    assert!(status.success(), "exit {status}; log:\n{}", bot.log_text());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Later attempts would have logged more failures; none came after the signal.
    assert!(bot.log_text().contains("SIGTERM"), "{}", bot.log_text());

    // Committed: the clean stop is recorded (a killed bot records nothing), nothing is left
    // in the inbox, and the database is intact.
    let store = atm_trust::Store::open(&db).unwrap();
    let recorded = store.caught_up_until().unwrap();
    assert!(
        recorded.is_some() && recorded > stopped_at,
        "clean stop not recorded: {stopped_at:?} -> {recorded:?}"
    );
    drop(store);
    let connection = rusqlite::Connection::open(&db).unwrap();
    let inbox: i64 = connection
        .query_row("SELECT count(*) FROM inbox", [], |row| row.get(0))
        .unwrap();
    assert_eq!(inbox, 0);
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(connection);

    // And it starts again from there: the same sessions answer.
    tokio::task::block_in_place(|| server.restart()).unwrap();
    let bot = start_bot_logging(&server, "bot", &db, &[], BOT_LOG).await;
    let (alice, mut events) = Client::start(&settings(&server, "alice", &alice_db))
        .await
        .unwrap();
    echo_round(&alice, &mut events, &bot_jid, "after the outage").await;
    stop_bot(bot).await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_connecting_stops_at_once() {
    // A "server" that accepts the connection and never says anything: the bot's first
    // attempt waits for the stream header.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bot.log");
    let mut child = tokio::process::Command::new(common::bot_exe())
        .args([
            "--jid",
            "bot@localhost",
            "--server",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--db")
        .arg(dir.path().join("bot.sqlite3"))
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", BOT_LOG)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (_held, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the bot did not connect")
        .unwrap();

    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("no exit within 10 s of SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    eprintln!("SIGTERM while connecting: exited in {took:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}: {text}");
    assert!(text.contains("stop requested while connecting"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Runs the bot until it gives up at start and returns its error line (the last line of
/// standard error).
async fn start_error(args: &[&str], password: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(common::bot_exe())
            .args(args)
            .env("XMPP_PASSWORD", password)
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("the bot did not give up within 60 s")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().last().unwrap_or_default().to_owned()
}

/// What an operator sees when the bot cannot start: one line naming the cause, no
/// library structures (the default log level, as a service would run it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_one_clear_line() {
    let server = TestServer::start().unwrap();
    server.create_account("bot", "bot-password").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let db = db.to_str().unwrap();
    let at_server = format!("127.0.0.1:{}", server.port());
    let ca = server.ca_file().to_str().unwrap().to_owned();

    // Positive control: these settings start the bot.
    let bot = start_bot_logging(&server, "bot", Path::new(db), &[], BOT_LOG).await;
    stop_bot(bot).await;

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = silent.local_addr().unwrap().port();
    drop(silent);
    let ssh = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ssh_port = ssh.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in ssh.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = std::io::Write::write_all(&mut stream, b"SSH-2.0-OpenSSH_9.6\r\n");
        }
    });

    let cases: [(Vec<String>, &str, String); 5] = [
        (
            vec!["--jid".into(), "bot@nowhere.invalid".into()],
            "bot-password",
            "echo-bot: cannot start as bot@nowhere.invalid: cannot find the XMPP server for \
             nowhere.invalid: DNS has no SRV record"
                .to_owned(),
        ),
        (
            vec![
                "--jid".into(),
                "bot@localhost".into(),
                "--server".into(),
                format!("127.0.0.1:{free_port}"),
            ],
            "bot-password",
            format!("echo-bot: cannot start as bot@localhost: connection refused at 127.0.0.1:{free_port}"),
        ),
        (
            vec![
                "--jid".into(),
                "bot@localhost".into(),
                "--server".into(),
                format!("127.0.0.1:{ssh_port}"),
            ],
            "bot-password",
            format!(
                "echo-bot: cannot start as bot@localhost: 127.0.0.1:{ssh_port} did not answer \
                 as an XMPP server"
            ),
        ),
        (
            vec![
                "--jid".into(),
                "bot@localhost".into(),
                "--server".into(),
                at_server.clone(),
            ],
            "bot-password",
            "echo-bot: cannot start as bot@localhost: the TLS certificate of localhost is not \
             trusted: it is not signed by a CA this machine trusts; if the server uses a \
             private CA, give its certificate (PEM) with --ca-file FILE"
                .to_owned(),
        ),
        (
            vec![
                "--jid".into(),
                "bot@localhost".into(),
                "--server".into(),
                at_server.clone(),
                "--ca-file".into(),
                ca.clone(),
            ],
            "wrong-password",
            "echo-bot: cannot start as bot@localhost: the server refused the password for \
             bot@localhost (wrong password, or no such account)"
                .to_owned(),
        ),
    ];
    for (i, (args, password, expected)) in cases.into_iter().enumerate() {
        // Each case its own database (the first is another account).
        let db = dir.path().join(format!("case-{i}.sqlite3"));
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--db", db.to_str().unwrap()]);
        let line = start_error(&args, password).await;
        eprintln!("{line}");
        assert!(
            line.starts_with(&expected),
            "expected {expected:?}\n     got {line:?}"
        );
        for dump in ["{ ", "Query", "NoRecords", "Custom", "kind:"] {
            assert!(!line.contains(dump), "debug output ({dump:?}) in {line:?}");
        }
    }
}

/// A TCP proxy to `target` whose bot-to-server direction can be frozen: bytes the bot
/// writes then stay in the socket buffers, as on a connection that stalls mid-send.
async fn freezable_proxy(target: u16) -> (u16, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (freeze, frozen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let mut frozen = frozen.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    if frozen.wait_for(|frozen| !*frozen).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        read = client_read.read(&mut buffer) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if server_write.write_all(&buffer[..n]).await.is_err() {
                                    return;
                                }
                            }
                        },
                        _ = frozen.changed() => {}
                    }
                }
            });
        }
    });
    (port, freeze)
}

/// SIGTERM while an answer is written but not acknowledged (the connection stalls): the
/// bot stops within seconds, and the committed answer goes out from the outbox at the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_send_stops_within_seconds_and_the_answer_comes_later() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let server = TestServer::start().unwrap();
    for user in ["bot", "alice"] {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let log = dir.path().join("bot.log");
    let (proxy_port, freeze) = freezable_proxy(server.port()).await;
    let mut child = tokio::process::Command::new(common::bot_exe())
        .args(["--jid", "bot@localhost"])
        .args(["--server", &format!("127.0.0.1:{proxy_port}")])
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(&db)
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", BOT_LOG)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("echo-bot ready") {
                return;
            }
        }
        panic!("the bot exited before it was ready");
    })
    .await
    .expect("the bot did not get ready");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let bot_jid = server.jid("bot").unwrap();
    let alice_db = dir.path().join("alice.sqlite3");
    let (alice, mut events) = Client::start(&settings(&server, "alice", &alice_db))
        .await
        .unwrap();
    echo_round(&alice, &mut events, &bot_jid, "before the stall").await;

    // The bot's writes stop reaching the server; the next answer is committed and written,
    // never acknowledged.
    freeze.send_replace(true);
    send(&alice, &bot_jid, "in flight").await;
    let deadline = Instant::now() + TIMEOUT;
    while log_text().matches("answered an encrypted message").count() < 2 {
        assert!(Instant::now() < deadline, "not answered:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within 15 s of SIGTERM:\n{}", log_text()))
        .unwrap();
    let took = signalled.elapsed();
    eprintln!("SIGTERM mid-send (stalled connection): exited in {took:?}");
    assert!(status.success(), "exit {status}:\n{}", log_text());
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Restarted without the stall, the bot sends the committed answer from its outbox.
    let bot = start_bot_logging(&server, "bot", &db, &[], BOT_LOG).await;
    assert_eq!(next_echo(&mut events).await, "in flight");
    echo_round(&alice, &mut events, &bot_jid, "after the restart").await;
    stop_bot(bot).await;
    alice.close().await;
}
