//! The account settings of both programs from command-line flags, environment variables and
//! a TOML file, merged as flag > environment > file (the README's "Configuration" table lists
//! them), into `xmpp-core`'s [`AccountSettings`].
//!
//! Passwords never come from the command line: `--password-file`, the `XMPP_PASSWORD`
//! environment variable, or `password_file` / `password` in the configuration file.

use std::path::{Path, PathBuf};

use omemo_crypto::DeviceId;
use serde::Deserialize;
use xmpp_core::identity::{reset_identity, RESET_WARNING};
use xmpp_core::jid::BareJid;
use xmpp_core::omemo::OmemoError;
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

/// Why the settings could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A required setting is missing everywhere.
    #[error(
        "missing setting `{0}` (give it as a flag, an environment variable or in the config file)"
    )]
    Missing(&'static str),
    /// A setting has an invalid value.
    #[error("invalid value for `{name}`: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// Account flags, identical for every program.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccountArgs {
    /// TOML configuration file.
    #[arg(long, env = "XMPP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Account JID (user@domain).
    #[arg(long, env = "XMPP_JID")]
    pub jid: Option<String>,
    /// File holding the account password (alternatively set XMPP_PASSWORD).
    #[arg(long, env = "XMPP_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Connect to HOST:PORT instead of looking up the domain's SRV records.
    #[arg(long, env = "XMPP_SERVER", value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Extra CA certificate (PEM) to trust, for self-hosted servers.
    #[arg(long, env = "XMPP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Use plain TCP without TLS; only allowed to a loopback address.
    #[arg(long, env = "XMPP_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// SQLite database with the OMEMO state (default: under the user's data directory).
    #[arg(long, env = "XMPP_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Device label published with our OMEMO device.
    #[arg(long, env = "XMPP_LABEL")]
    pub label: Option<String>,
    /// Trust policy for new keys: toakafa (blind trust before verification) or manual.
    #[arg(long, env = "XMPP_TRUST_POLICY", value_name = "POLICY")]
    pub trust_policy: Option<TrustPolicySetting>,
    /// Start over with a new OMEMO identity and device id (for an identity that a client
    /// cannot use, see the README). Contacts see a new device and must trust it again;
    /// messages encrypted for the old device can no longer be read. A flag only: never read
    /// from the environment or the config file.
    #[arg(long)]
    pub reset_identity: bool,
    /// More logging (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The `[account]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    /// See [`AccountArgs::jid`].
    pub jid: Option<String>,
    /// The password itself (keep the file private) …
    pub password: Option<String>,
    /// … or a file holding it.
    pub password_file: Option<PathBuf>,
    /// See [`AccountArgs::server`].
    pub server: Option<String>,
    /// See [`AccountArgs::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// See [`AccountArgs::insecure_plaintext`].
    pub insecure_plaintext: Option<bool>,
    /// See [`AccountArgs::db`].
    pub db: Option<PathBuf>,
    /// See [`AccountArgs::label`].
    pub label: Option<String>,
    /// See [`AccountArgs::trust_policy`].
    pub trust_policy: Option<TrustPolicySetting>,
}

/// Reads a TOML configuration file into `T` (`None` when no file was named).
pub fn read_config_file<T: for<'de> Deserialize<'de> + Default>(
    path: Option<&Path>,
) -> Result<T, SettingsError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        // One line, with the position: `line L, column C: what is wrong`.
        let position = e.span().map(|span| {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .count()
                + 1;
            format!("line {line}, column {column}: ")
        });
        SettingsError::Parse {
            path: path.to_owned(),
            message: format!("{}{}", position.unwrap_or_default(), e.message().trim_end()),
        }
    })
}

fn read_password_file(path: &Path) -> Result<Password, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(SettingsError::Invalid {
            name: "password_file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(Password::new(password))
}

/// The account settings: flags (which clap already merged with the environment) over the
/// file.
///
/// `env_password` is the value of `XMPP_PASSWORD`, passed in so tests need not touch the
/// process environment. `app` names the default database directory.
pub fn resolve(
    args: &AccountArgs,
    file: &AccountFile,
    env_password: Option<String>,
    app: &str,
) -> Result<AccountSettings, SettingsError> {
    let jid_text = args
        .jid
        .clone()
        .or_else(|| file.jid.clone())
        .ok_or(SettingsError::Missing("jid"))?;
    let jid = BareJid::new(&jid_text).map_err(|e| SettingsError::Invalid {
        name: "jid",
        reason: e.to_string(),
    })?;
    if jid.node().is_none() {
        return Err(SettingsError::Invalid {
            name: "jid",
            reason: format!("`{jid}` has no user part"),
        });
    }

    let password = if let Some(path) = &args.password_file {
        read_password_file(path)?
    } else if let Some(password) = env_password.filter(|p| !p.is_empty()) {
        Password::new(password)
    } else if let Some(path) = &file.password_file {
        read_password_file(path)?
    } else if let Some(password) = file.password.clone() {
        Password::new(password)
    } else {
        return Err(SettingsError::Missing(
            "password (--password-file or XMPP_PASSWORD)",
        ));
    };

    let server = args
        .server
        .clone()
        .or_else(|| file.server.clone())
        .map(|s| {
            s.parse::<ServerAddress>()
                .map_err(|reason| SettingsError::Invalid {
                    name: "server",
                    reason,
                })
        })
        .transpose()?;

    let insecure_plaintext = args.insecure_plaintext || file.insecure_plaintext.unwrap_or(false);
    if insecure_plaintext {
        let loopback = server.as_ref().is_some_and(ServerAddress::is_loopback);
        if !loopback {
            return Err(SettingsError::Invalid {
                name: "insecure_plaintext",
                reason: "plain TCP is only allowed with --server pointing to a loopback address"
                    .to_owned(),
            });
        }
    }

    let label = args
        .label
        .clone()
        .or_else(|| file.label.clone())
        .unwrap_or_else(|| app.to_owned());
    if label.chars().count() > 53 {
        return Err(SettingsError::Invalid {
            name: "label",
            reason: "labels are limited to 53 characters".to_owned(),
        });
    }

    let db = match args.db.clone().or_else(|| file.db.clone()) {
        Some(db) => db,
        None => default_db_path(app, &jid)?,
    };

    Ok(AccountSettings {
        jid,
        password,
        server,
        ca_file: args.ca_file.clone().or_else(|| file.ca_file.clone()),
        insecure_plaintext,
        db,
        label,
        trust_policy: args.trust_policy.or(file.trust_policy).unwrap_or_default(),
    })
}

/// `$XDG_DATA_HOME/<app>/<jid>.sqlite3`, or `~/.local/share/<app>/<jid>.sqlite3`.
fn default_db_path(app: &str, jid: &BareJid) -> Result<PathBuf, SettingsError> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or(SettingsError::Missing(
            "db (no HOME to place the default database in)",
        ))?;
    Ok(base.join(app).join(format!("{jid}.sqlite3")))
}

/// Resets the identity when the account flags ask for it (`--reset-identity`), logging
/// [`RESET_WARNING`] at warn level. Returns the device id given up. Blocking; call it before
/// the program opens the database for anything else.
pub fn reset_if_asked(
    args: &AccountArgs,
    settings: &AccountSettings,
) -> Result<Option<DeviceId>, OmemoError> {
    if !args.reset_identity {
        return Ok(None);
    }
    let retired = reset_identity(&settings.db, &settings.jid)?;
    match retired {
        Some(old) => tracing::warn!(old_device = %old, "{RESET_WARNING}"),
        None => tracing::info!("--reset-identity: there was no identity yet; one is created"),
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AccountArgs {
        AccountArgs::default()
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("app-common-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: AccountFile = toml::from_str(
            "jid = 'file@example.org'\npassword = 'from-file'\nserver = '127.0.0.1:5222'\nlabel = 'file'\ndb = '/tmp/file.db'\ntrust_policy = 'manual'",
        )
        .unwrap();
        let mut a = args();
        a.jid = Some("flag@example.org".into());
        a.label = Some("flag".into());
        let s = resolve(&a, &file, None, "echo-bot").unwrap();
        assert_eq!(s.jid.as_str(), "flag@example.org");
        assert_eq!(s.label, "flag");
        assert_eq!(s.password.expose(), "from-file");
        assert_eq!(s.db, PathBuf::from("/tmp/file.db"));
        assert_eq!(s.trust_policy, TrustPolicySetting::Manual);
        assert_eq!(
            s.server,
            Some(ServerAddress {
                host: "127.0.0.1".into(),
                port: 5222
            })
        );
    }

    #[test]
    fn password_sources_in_order() {
        let file: AccountFile =
            toml::from_str("jid = 'a@example.org'\npassword = 'file'\ndb = '/tmp/x'").unwrap();
        let s = resolve(&args(), &file, Some("env".into()), "x").unwrap();
        assert_eq!(s.password.expose(), "env");
        let mut a = args();
        a.password_file = Some(temp_file("pw", "from-password-file\n"));
        let s = resolve(&a, &file, Some("env".into()), "x").unwrap();
        assert_eq!(s.password.expose(), "from-password-file");
        assert!(!format!("{s:?}").contains("from-password-file"));
        let empty = AccountFile {
            jid: Some("a@example.org".into()),
            ..AccountFile::default()
        };
        assert!(matches!(
            resolve(&args(), &empty, None, "x"),
            Err(SettingsError::Missing(_))
        ));
    }

    #[test]
    fn plaintext_only_to_loopback() {
        let base = AccountFile {
            jid: Some("a@example.org".into()),
            password: Some("p".into()),
            db: Some("/tmp/x".into()),
            ..AccountFile::default()
        };
        let mut a = args();
        a.insecure_plaintext = true;
        assert!(resolve(&a, &base, None, "x").is_err());
        a.server = Some("192.0.2.1:5222".into());
        assert!(resolve(&a, &base, None, "x").is_err());
        a.server = Some("127.0.0.1:5222".into());
        assert!(resolve(&a, &base, None, "x").is_ok());
        a.server = Some("[::1]:5222".into());
        assert!(resolve(&a, &base, None, "x").is_ok());
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let path = temp_file("bad.toml", "jid = 'a@example.org'\nunknown_key = 1\n");
        let err = read_config_file::<AccountFile>(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("unknown_key"), "{err}");
        let path = temp_file("broken.toml", "jid = \n");
        assert!(matches!(
            read_config_file::<AccountFile>(Some(&path)),
            Err(SettingsError::Parse { .. })
        ));
        assert!(matches!(
            read_config_file::<AccountFile>(Some(Path::new("/nonexistent/x.toml"))),
            Err(SettingsError::Read { .. })
        ));
        let file = AccountFile {
            jid: Some("no-user-part.example".into()),
            password: Some("p".into()),
            ..AccountFile::default()
        };
        assert!(matches!(
            resolve(&args(), &file, None, "x"),
            Err(SettingsError::Invalid { name: "jid", .. })
        ));
        assert!("host".parse::<ServerAddress>().is_err());
        assert!("host:99999".parse::<ServerAddress>().is_err());
    }
}
