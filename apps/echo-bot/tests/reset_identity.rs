//! `echo-bot --reset-identity`: the bot starts over with a new identity and device id, takes
//! its old device out of its published device list (retracting the old bundle), and a
//! contact talks to the new device.

// Test code: a failed step should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atm_trust::Store;

mod common;

use common::{echo_round, next_encrypted, start_bot, stop_bot, Scene, DEFAULT_BOT_LOG, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_gives_the_bot_a_new_device_and_retires_the_old_one() {
    let Scene {
        server,
        dir: _dir,
        bot_db,
        bot_jid,
        bot,
        client,
        mut events,
    } = Scene::start("alice", &[], DEFAULT_BOT_LOG).await;
    let old_device = bot.device.clone();
    echo_round(&client, &mut events, &bot_jid, "before the reset").await;
    stop_bot(bot).await;
    let old_key = Store::open(&bot_db)
        .unwrap()
        .own_device()
        .unwrap()
        .unwrap()
        .identity()
        .public_key();

    let bot = start_bot(&server, "bot", &bot_db, &["--reset-identity"]).await;
    assert_ne!(bot.device, old_device);
    assert!(
        bot.log_text().contains("the OMEMO identity was reset"),
        "no warning logged:\n{}",
        bot.log_text()
    );
    // The server's list has the new device and no longer the old one.
    let devices = client.manager().devices(&bot_jid).await.unwrap();
    let active: Vec<String> = devices
        .iter()
        .filter(|d| d.active)
        .map(|d| d.device.to_string())
        .collect();
    assert_eq!(
        active,
        vec![bot.device.clone()],
        "{devices:?}\n{}\n{}",
        bot.log_text(),
        server.stanza_log()
    );
    // Its bundle was retracted.
    let retracted = server
        .stanza_log()
        .lines()
        .any(|l| l.contains("<retract") && l.contains(&format!("id='{old_device}'")));
    assert!(
        retracted,
        "no retraction of {old_device}:\n{}",
        server.stanza_log()
    );

    // Alice talks to the new device, which has a new key with sign bit 0.
    client.send_body(&bot_jid, "after the reset").await.unwrap();
    let reply = next_encrypted(&mut events, TIMEOUT)
        .await
        .expect("no answer from the new device");
    assert_eq!(reply.body.as_deref(), Some("Your message: after the reset"));
    assert_eq!(reply.e2ee.device.to_string(), bot.device);
    stop_bot(bot).await;
    let store = Store::open(&bot_db).unwrap();
    let new_key = store.own_device().unwrap().unwrap().identity().public_key();
    assert_ne!(new_key, old_key);
    assert!(!new_key.ed25519_sign_bit());
    assert_eq!(
        store
            .retired_own_devices()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![old_device]
    );
    client.close().await;
}
