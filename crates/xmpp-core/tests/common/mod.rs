//! What the client tests share.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::path::Path;
use std::time::Duration;

use test_prosody::TestServer;
use xmpp_core::client::{ClientEvent, ClientEvents};
use xmpp_core::omemo::DecryptedMessage;
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

/// An account `user` (password `<user>-password`) on the test server, TOAKAFA.
pub(crate) fn settings(server: &TestServer, user: &str, db: &Path, label: &str) -> AccountSettings {
    AccountSettings {
        jid: server.jid(user).unwrap(),
        password: Password::new(format!("{user}-password")),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
        }),
        ca_file: Some(server.ca_file().to_owned()),
        insecure_plaintext: false,
        db: db.to_owned(),
        label: label.to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    }
}

/// Creates the accounts `users`, each with the password `<user>-password`.
pub(crate) fn create_accounts<'a>(server: &TestServer, users: impl IntoIterator<Item = &'a str>) {
    for user in users {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
}

/// Starts `user`'s client with its database `<user>.db` in `dir`.
pub(crate) async fn start_client(
    server: &TestServer,
    dir: &Path,
    user: &str,
) -> (xmpp_core::client::Client, ClientEvents) {
    let settings = settings(server, user, &dir.join(format!("{user}.db")), user);
    xmpp_core::client::Client::start(&settings).await.unwrap()
}

/// The next event that is not a connection change.
pub(crate) async fn next_message(events: &mut ClientEvents) -> Box<DecryptedMessage> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("no event within 20 s")
            .expect("the client stopped");
        match event {
            ClientEvent::Encrypted(message) => return message,
            ClientEvent::Online { .. } | ClientEvent::Offline => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
}
