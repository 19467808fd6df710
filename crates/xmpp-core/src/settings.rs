//! What the library needs to know about an account: [`AccountSettings`] (the JID, password,
//! server, CA, database, device label and trust policy), built by the program however it
//! likes. The two programs read it from flags, the environment and a TOML file with
//! `app-common`'s `config` module; a bot of your own can fill it in directly.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use xmpp_parsers::jid::BareJid;

/// The trust policy named in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrustPolicySetting {
    /// XEP-0450's "trust only authenticated keys after first authentication".
    #[default]
    Toakafa,
    /// Every new key must be trusted by hand.
    Manual,
}

impl FromStr for TrustPolicySetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "toakafa" | "btbv" => Ok(Self::Toakafa),
            "manual" => Ok(Self::Manual),
            other => Err(format!(
                "unknown trust policy `{other}` (toakafa or manual)"
            )),
        }
    }
}

/// A password; never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Self(password)
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddress {
    /// True if every address the host resolves to is a loopback address.
    pub fn is_loopback(&self) -> bool {
        if let Ok(ip) = self.host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return ip.is_loopback();
        }
        match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
            }
            Err(_) => false,
        }
    }
}

impl FromStr for ServerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() || port == 0 {
            return Err(format!("`{s}` is not HOST:PORT"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// The resolved account settings.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// The account.
    pub jid: BareJid,
    /// Its password.
    pub password: Password,
    /// A fixed server address, or `None` for SRV lookup.
    pub server: Option<ServerAddress>,
    /// An extra CA to trust.
    pub ca_file: Option<PathBuf>,
    /// Plain TCP (loopback only).
    pub insecure_plaintext: bool,
    /// The SQLite database.
    pub db: PathBuf,
    /// The device label.
    pub label: String,
    /// The trust policy.
    pub trust_policy: TrustPolicySetting,
}
