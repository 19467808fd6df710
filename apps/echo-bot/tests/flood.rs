//! A flood against the real echo bot on a real Prosody: one JID sends 1,000 OMEMO messages a
//! second for 10 seconds while another keeps talking to the bot. The other JID must keep
//! getting its answers, and the bot's memory must stay bounded (also after the bot was frozen
//! for 1.5 s in the middle, so that the flood arrives as one backlog). Prints the answer times
//! and the bot's memory.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use omemo_crypto::{payload, DeviceId, IdentityKeyPair, Session};
use omemo_pep::omemo2::{EncryptedKey, EncryptedMessage, RecipientKeys};
use omemo_pep::pep::{self, Fetched};
use omemo_pep::{hints, sce};
use rand_core::OsRng;
use test_prosody::TestServer;
use xmpp_core::client::Client;
use xmpp_core::connection::{Connection, ConnectionConfig, Secret};
use xmpp_core::jid::Jid;
use xmpp_core::message::{Message, MessageType};

mod common;

use common::{echo_round, settings, start_bot, stop_bot};

/// Messages per second from the flooding JID, and for how long.
const RATE: u64 = 1_000;
const SECONDS: u64 = 10;
/// The bot's resident memory may not grow beyond this during the flood.
const MAX_RSS_KIB: u64 = 256 * 1024;

fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `count` valid OMEMO messages from a fresh device of `from` to the bot's device, encrypted
/// ahead of time so that sending them costs nothing.
async fn flood_messages(
    connection: &Connection,
    from: &xmpp_core::jid::BareJid,
    bot: &xmpp_core::jid::BareJid,
    bot_device: DeviceId,
    count: usize,
) -> Vec<Message> {
    let answer = connection
        .send_iq(pep::fetch_bundle(bot, bot_device, "flood-bundle"))
        .await
        .unwrap();
    let Fetched::Found(bundle) = pep::parse_bundle_response(&answer, bot_device) else {
        panic!("no bundle for the bot");
    };
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let mut session = Session::initiate(
        &identity,
        &bundle,
        bundle.choose_pre_key(&mut OsRng),
        &mut OsRng,
    )
    .unwrap();
    let device = DeviceId::random(&mut OsRng);
    (0..count)
        .map(|i| {
            let envelope = sce::Envelope::new(
                vec![sce::Envelope::body_element(&format!("flood {i}"))],
                from.clone(),
                bot.clone(),
                None,
                &mut OsRng,
            )
            .to_bytes()
            .unwrap();
            let (ciphertext, material) = payload::encrypt(&envelope, &mut OsRng);
            let key = session.encrypt(material.as_bytes()).unwrap();
            let encrypted = EncryptedMessage {
                sid: device,
                keys: vec![RecipientKeys {
                    jid: bot.clone(),
                    keys: vec![EncryptedKey {
                        rid: bot_device,
                        kex: key.is_key_exchange(),
                        data: key.to_bytes(),
                    }],
                }],
                payload: Some(ciphertext),
            };
            hints::encrypted_message(Jid::from(bot.clone()), MessageType::Chat, &encrypted)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_jid_does_not_starve_another_or_grow_memory() {
    // Prosody's debug log writes every stanza twice; at 1,000 messages a second that, not
    // routing, would be the bottleneck.
    let server = TestServer::builder()
        .option(r#"log = { warn = "*stderr" }"#)
        .start()
        .unwrap();
    for user in ["bot", "alice", "mallory"] {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.sqlite3");
    let bot = start_bot(&server, "bot", &db, &[]).await;
    let pid = bot.child.id().unwrap();
    let bot_jid = server.jid("bot").unwrap();
    let bot_device = DeviceId::new(bot.device.parse().unwrap()).unwrap();
    let (alice, mut alice_events) = Client::start(&settings(
        &server,
        "alice",
        &dir.path().join("alice.sqlite3"),
    ))
    .await
    .unwrap();
    echo_round(&alice, &mut alice_events, &bot_jid, "before the flood").await;

    let mallory = server.jid("mallory").unwrap();
    let mut config = ConnectionConfig::new(mallory.clone(), Secret::new("mallory-password".into()));
    config.server = Some(("127.0.0.1".to_owned(), server.port()));
    config.ca_file = Some(server.ca_file().to_owned());
    let (connection, mut mallory_events) = Connection::connect(config).await.unwrap();
    // Whatever comes back to mallory is read and thrown away.
    tokio::spawn(async move { while mallory_events.recv().await.is_some() {} });
    let total = usize::try_from(RATE * SECONDS).unwrap();
    let messages = flood_messages(&connection, &mallory, &bot_jid, bot_device, total).await;
    let (rss_before, _) = memory_kib(pid);

    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        for message in messages {
            ticks.tick().await;
            connection.send(message).await.unwrap();
        }
        started.elapsed()
    });
    // A bot on an idle machine may keep up with the flood. To be sure the backlog case is
    // exercised, the bot is frozen for a moment (as by a slow disk or swap): the flood piles
    // up and arrives at once when it wakes.
    let freeze = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(pid, "-STOP");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        signal(pid, "-CONT");
    });

    // Alice keeps talking during the flood and a little after it.
    let mut answer_times = Vec::new();
    let mut peak_rss = rss_before;
    let mut round = 0;
    while !flood.is_finished() || round < 5 {
        let asked = Instant::now();
        echo_round(
            &alice,
            &mut alice_events,
            &bot_jid,
            &format!("during the flood {round}"),
        )
        .await;
        answer_times.push(asked.elapsed());
        peak_rss = peak_rss.max(memory_kib(pid).0);
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let flood_time = flood.await.unwrap();
    freeze.await.unwrap();
    // The bot reports each flood episode when the sender's queue has drained.
    let episodes = |log: &str| {
        (
            log.matches("inbound flood: this sender's queue is full")
                .count(),
            log.matches("inbound flood over").count(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (started, over) = episodes(&bot.log_text());
        if started == over {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss_after, hwm) = memory_kib(pid);
    echo_round(&alice, &mut alice_events, &bot_jid, "after the flood").await;
    alice.close().await;
    let log = bot.log_text();
    stop_bot(bot).await;
    let dropped: u64 = log
        .lines()
        .filter(|l| l.contains("inbound flood over"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    answer_times.sort();
    let median = answer_times[answer_times.len() / 2];
    let worst = answer_times[answer_times.len() - 1];
    println!(
        "flood: {total} messages in {:.1} s ({:.0}/s); bot dropped {dropped}; alice's {} answers: \
         median {:.0} ms, worst {:.0} ms; bot RSS {} MiB before, {} MiB peak sampled, {} MiB \
         after, high-water mark {} MiB",
        flood_time.as_secs_f64(),
        total as f64 / flood_time.as_secs_f64(),
        answer_times.len(),
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        rss_before / 1024,
        peak_rss / 1024,
        rss_after / 1024,
        hwm / 1024,
    );
    assert!(
        hwm < MAX_RSS_KIB,
        "the bot's memory grew to {hwm} KiB during the flood"
    );
    let (started, over) = episodes(&log);
    assert!(
        started > 0,
        "the flood never filled the sender's queue: it did not test anything"
    );
    assert_eq!(started, over, "a flood episode never ended");
    assert!(dropped > 0, "the bot reported no dropped message");
}
