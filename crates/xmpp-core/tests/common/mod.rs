//! What the client tests share.

use std::path::Path;

use test_prosody::TestServer;
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
