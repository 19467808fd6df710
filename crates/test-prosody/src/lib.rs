//! A throwaway [Prosody](https://prosody.im/) XMPP server for integration tests.
//!
//! [`TestServer::start`] creates a temporary directory with its own data directory, pid file,
//! debug log and generated `prosody.cfg.lua`, generates a CA and a leaf certificate for the
//! virtual host (rustls rejects a certificate that is its own CA), picks a free loopback port
//! for client-to-server connections (no s2s; HTTP only for WebSocket, when asked for) and runs
//! `prosody -F` as a child process until the [`TestServer`] is dropped.
//!
//! `mod_stanza_debug` writes every stanza to the debug log, so a test can check what went
//! over the wire with [`TestServer::stanza_log`].
//!
//! Prosody must be installed (`just prosody` installs the Debian package without starting its
//! system service).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let server = test_prosody::TestServer::start()?;
//! server.create_account("alice", "secret")?;
//! println!(
//!     "connect {} to 127.0.0.1:{} trusting {}",
//!     server.jid("alice")?,
//!     server.port(),
//!     server.ca_file().display()
//! );
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use xmpp_parsers::jid::BareJid;

/// How long Prosody may take to open its port.
const START_TIMEOUT: Duration = Duration::new(15, 0);
/// How long Prosody may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::new(5, 0);
/// How often a port is tried again when another process grabbed it first.
const PORT_ATTEMPTS: usize = 3;

/// Options for a [`TestServer`]; start with [`TestServer::builder`].
#[derive(Debug, Clone)]
pub struct TestServerBuilder {
    domain: String,
    allow_plaintext: bool,
    port: Option<u16>,
    interface: String,
    extra: Vec<String>,
    websocket: bool,
    debug_log: bool,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        Self {
            domain: "localhost".to_owned(),
            allow_plaintext: false,
            port: None,
            interface: "127.0.0.1".to_owned(),
            extra: Vec::new(),
            websocket: false,
            debug_log: true,
        }
    }
}

impl TestServerBuilder {
    /// The virtual host (default `localhost`). Clients connect to `127.0.0.1:port` anyway.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// Allow clients to log in without StartTLS (`c2s_require_encryption = false`).
    ///
    /// By default TLS is required, so a successful login proves that TLS was used.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Listen on this port instead of a free one (for the `just up` demo server).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The address to listen on (default `127.0.0.1`; `0.0.0.0` inside a container).
    pub fn interface(mut self, interface: impl Into<String>) -> Self {
        self.interface = interface.into();
        self
    }

    /// Adds a global option to the generated configuration, as a Lua assignment such as
    /// `c2s_stanza_size_limit = 8 * 1024 * 1024` or `smacks_hibernation_time = 5`. Tests of
    /// limits and faults use it; the line is written as given.
    pub fn option(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Also serves XMPP over WebSocket (RFC 7395, `mod_websocket`) for browser clients, on a
    /// second free port of the same interface: see [`TestServer::websocket_url`]; blocking
    /// (XEP-0191, `mod_blocklist`), which browser clients expect, comes with it. The
    /// endpoint is plain HTTP on loopback and Prosody is told to count it as secure
    /// (`consider_websocket_secure`), so logins over it work while TLS stays required on the
    /// c2s port.
    pub fn websocket(mut self, enable: bool) -> Self {
        self.websocket = enable;
        self
    }

    /// Whether Prosody logs at debug level with every stanza (`mod_stanza_debug`), which
    /// [`TestServer::stanza_log`] reads; on by default. Benchmarks turn it off: writing each
    /// stanza to the log costs the server more CPU than routing it, more for larger stanzas,
    /// and a production server logs at `info`. Without it the log has `info` and above.
    pub fn debug_log(mut self, enable: bool) -> Self {
        self.debug_log = enable;
        self
    }

    /// Generates everything and starts Prosody; returns once the port accepts connections.
    pub fn start(self) -> anyhow::Result<TestServer> {
        let prosody = find_program("prosody").ok_or_else(|| {
            anyhow!("Prosody is not installed (no `prosody` in PATH): run `just prosody`")
        })?;
        let prosodyctl = find_program("prosodyctl").ok_or_else(|| {
            anyhow!("prosodyctl is not installed (no `prosodyctl` in PATH): run `just prosody`")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("test-prosody-")
            .tempdir()
            .context("creating the Prosody directory")?;
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("data")).context("creating the data directory")?;
        fs::create_dir_all(root.join("certs")).context("creating the certs directory")?;
        write_certificates(&root, &self.domain)?;

        let mut server = TestServer {
            prosody,
            prosodyctl,
            domain: self.domain,
            allow_plaintext: self.allow_plaintext,
            interface: self.interface,
            extra: self.extra,
            debug_log: self.debug_log,
            port: 0,
            http_port: None,
            child: None,
            ca_file: root.join("ca.pem"),
            dir,
        };
        let mut last_error = None;
        let attempts = if self.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for _ in 0..attempts {
            server.port = match self.port {
                Some(port) => port,
                None => free_port()?,
            };
            if self.websocket {
                server.http_port = Some(free_port()?);
            }
            server.write_config()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let in_use = server.log_tail(50).contains("already in use");
                    last_error = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("Prosody did not start")))
    }
}

/// A running Prosody on a loopback port; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct TestServer {
    prosody: PathBuf,
    prosodyctl: PathBuf,
    domain: String,
    allow_plaintext: bool,
    interface: String,
    extra: Vec<String>,
    debug_log: bool,
    port: u16,
    /// The HTTP port serving WebSocket, when enabled.
    http_port: Option<u16>,
    child: Option<Child>,
    ca_file: PathBuf,
    // Last field: dropped after `Drop for TestServer` has stopped the process.
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server for `localhost` that requires TLS (see [`TestServerBuilder`]).
    pub fn start() -> anyhow::Result<Self> {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// The client-to-server port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://localhost:PORT/xmpp-websocket` when the server was built with
    /// [`TestServerBuilder::websocket`].
    pub fn websocket_url(&self) -> Option<String> {
        self.http_port
            .map(|port| format!("ws://localhost:{port}/xmpp-websocket"))
    }

    /// The virtual host.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `user@domain`.
    pub fn jid(&self, user: &str) -> anyhow::Result<BareJid> {
        BareJid::new(&format!("{user}@{}", self.domain))
            .with_context(|| format!("`{user}` is not a valid user name"))
    }

    /// The PEM file with the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server's process id, while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding config, data, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated `prosody.cfg.lua`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    /// The debug log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    /// The stanza lines of the debug log (`mod_stanza_debug`: `SEND:` and `RECV:` lines), in
    /// order, across restarts.
    ///
    /// # Panics
    ///
    /// If the log cannot be read: an unreadable log must fail the test that looks into it,
    /// never pass for an empty one (a check that something is absent from the log would then
    /// pass whatever went over the wire).
    pub fn stanza_log(&self) -> String {
        self.whole_log()
            .lines()
            .filter(|l| l.contains("SEND:") || l.contains("RECV:"))
            .fold(String::new(), |mut out, line| {
                out.push_str(line);
                out.push('\n');
                out
            })
    }

    /// Waits until the stanza log shows `needle`, for up to `within`: the positive control of
    /// a check that something is absent from the log (send the same thing where it must show,
    /// then wait for it here).
    pub async fn wait_for_stanza_log(&self, needle: &str, within: Duration) -> anyhow::Result<()> {
        self.wait_for(within, || self.stanza_log().contains(needle))
            .await
            .with_context(|| format!("the stanza log does not show {needle:?}"))
    }

    /// Waits until the whole log (not only its stanzas) shows `needle` `count` times, for up
    /// to `within`: for what Prosody says about sessions, such as one it destroyed after it
    /// hibernated too long.
    pub async fn wait_for_log(
        &self,
        needle: &str,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.wait_for(within, || self.log_count(needle) >= count)
            .await
            .with_context(|| format!("the log does not show {needle:?} {count} times"))
    }

    /// How many times the whole log shows `needle`. Panics if the log cannot be read, like
    /// [`TestServer::stanza_log`].
    pub fn log_count(&self, needle: &str) -> usize {
        self.whole_log().matches(needle).count()
    }

    /// The whole log; panics if it cannot be read (see [`TestServer::stanza_log`]).
    #[allow(
        clippy::panic,
        reason = "a test harness: the calling test fails with the reason instead of reading an empty log"
    )]
    fn whole_log(&self) -> String {
        let path = self.log_file();
        match fs::read_to_string(&path) {
            Ok(log) => log,
            Err(e) => panic!("cannot read Prosody's log {}: {e}", path.display()),
        }
    }

    /// Polls `done` until it holds, for up to `within`.
    async fn wait_for(
        &self,
        within: Duration,
        mut done: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !done() {
            if Instant::now() >= deadline {
                anyhow::bail!("not after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The last `lines` lines of the debug log and of Prosody's stdout/stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = tail(&self.log_file(), lines);
        let console = tail(&self.dir.path().join("prosody.stdout"), lines);
        if !console.trim().is_empty() {
            out.push_str("\n--- prosody stdout/stderr ---\n");
            out.push_str(&console);
        }
        out
    }

    /// Creates an account with `prosodyctl register` (works while the server runs).
    pub fn create_account(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let output = Command::new(&self.prosodyctl)
            .arg("--config")
            .arg(self.config_file())
            .args(["register", user, &self.domain, password])
            .stdin(Stdio::null())
            .output()
            .context("running prosodyctl")?;
        if !output.status.success() {
            bail!(
                "prosodyctl register {user} {} failed ({}): {}{}",
                self.domain,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Whether the Prosody process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops Prosody: SIGTERM, then SIGKILL after 5 s. Data and port are kept.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let terminated = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|pid| {
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
            });
        let deadline = Instant::now() + STOP_TIMEOUT;
        while terminated && Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().context("killing Prosody")?;
        child.wait().context("waiting for Prosody")?;
        Ok(())
    }

    /// Stops and starts Prosody again on the same port with the same data (accounts stay,
    /// sessions and stream-management state are lost). Also starts a server after [`Self::stop`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let config = render_config(&ConfigValues {
            dir,
            domain: &self.domain,
            port: self.port,
            http_port: self.http_port,
            allow_plaintext: self.allow_plaintext,
            interface: &self.interface,
            extra: &self.extra,
            debug_log: self.debug_log,
        });
        fs::write(self.config_file(), config).context("writing prosody.cfg.lua")
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prosody.stdout"))
            .context("opening the Prosody console log")?;
        let console_err = console
            .try_clone()
            .context("opening the Prosody console log")?;
        let child = Command::new(&self.prosody)
            .arg("--config")
            .arg(self.config_file())
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .with_context(|| format!("starting {}", self.prosody.display()))?;
        self.child = Some(child);

        let addrs: Vec<SocketAddr> = std::iter::once(self.port)
            .chain(self.http_port)
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .collect();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    bail!(
                        "Prosody exited ({status}) before opening port {}; log tail:\n{}",
                        self.port,
                        self.log_tail(30)
                    );
                }
            }
            if addrs
                .iter()
                .all(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Best effort: the error below is what matters.
                let _ = self.stop();
                bail!(
                    "Prosody did not open port {} within {:?}; log tail:\n{}",
                    self.port,
                    START_TIMEOUT,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Nothing to report to in drop; `stop` kills the process in every path it can.
        let _ = self.stop();
    }
}

struct ConfigValues<'a> {
    dir: &'a Path,
    domain: &'a str,
    port: u16,
    http_port: Option<u16>,
    allow_plaintext: bool,
    interface: &'a str,
    extra: &'a [String],
    debug_log: bool,
}

fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_config(v: &ConfigValues<'_>) -> String {
    let path = |name: &str| lua_string(&v.dir.join(name).to_string_lossy());
    format!(
        r#"-- Generated by test-prosody: a throwaway server for one test run.
run_as_root = true
pidfile = {pidfile}
data_path = {data}
certificates = {certs}
log = {{ {log_level} = {log} }}

-- Interactive traffic: no Nagle delay on the server's sockets.
network_settings = {{ nagle = false }}
interfaces = {{ {interface} }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ {http_ports} }}
http_interfaces = {{ {interface} }}
https_ports = {{ }}

modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "mam"; "offline";
    "smacks"; "register"; "ping"; "time"; "version"; "posix";{stanza_debug}{websocket_module}
}}
{websocket_options}
modules_disabled = {{ "s2s" }}

allow_registration = true
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = {require_encryption}
ssl = {{ key = {key}; certificate = {cert} }}
{extra}
VirtualHost {domain}
    ssl = {{ key = {key}; certificate = {cert} }}
"#,
        pidfile = path("prosody.pid"),
        data = path("data"),
        certs = path("certs"),
        log = path("prosody.log"),
        log_level = if v.debug_log { "debug" } else { "info" },
        stanza_debug = if v.debug_log {
            " \"stanza_debug\";"
        } else {
            ""
        },
        port = v.port,
        http_ports = v.http_port.map(|p| p.to_string()).unwrap_or_default(),
        // Browser clients also expect blocking (XEP-0191): Converse.js waits for it before
        // it opens a chat. Prosody's default configuration enables it.
        websocket_module = if v.http_port.is_some() {
            " \"websocket\"; \"blocklist\";"
        } else {
            ""
        },
        // Loopback only: browsers cannot add TLS to a test server without a trusted CA.
        websocket_options = if v.http_port.is_some() {
            "consider_websocket_secure = true\n"
        } else {
            ""
        },
        require_encryption = !v.allow_plaintext,
        key = path("server.key"),
        cert = path("server.pem"),
        domain = lua_string(v.domain),
        interface = lua_string(v.interface),
        extra = v
            .extra
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
    )
}

/// Writes `ca.pem` (a self-signed CA), `server.pem` (a leaf for `domain` signed by it, with the
/// CA appended as chain) and `server.key`.
fn write_certificates(dir: &Path, domain: &str) -> anyhow::Result<()> {
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).context("CA certificate parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-prosody CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;

    let mut leaf_params =
        CertificateParams::new(vec![domain.to_owned()]).context("leaf certificate parameters")?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, domain);
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().context("generating the server key")?;
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    fs::write(dir.join("ca.pem"), ca_cert.pem()).context("writing ca.pem")?;
    fs::write(
        dir.join("server.pem"),
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
    )
    .context("writing server.pem")?;
    fs::write(dir.join("server.key"), leaf_key.serialize_pem()).context("writing server.key")?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port")?
        .port())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The last `lines` lines of a file (reads at most the last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of a server at /tmp/x on port 12345 with `http_port`, `extra` options and
    /// the debug log on or off.
    fn values<'a>(
        http_port: Option<u16>,
        extra: &'a [String],
        debug_log: bool,
    ) -> ConfigValues<'a> {
        ConfigValues {
            dir: Path::new("/tmp/x"),
            domain: "localhost",
            port: 12345,
            http_port,
            allow_plaintext: false,
            interface: "127.0.0.1",
            extra,
            debug_log,
        }
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn config_has_the_required_settings() {
        let extra = ["smacks_hibernation_time = 5".to_owned()];
        let config = render_config(&values(None, &extra, true));
        for needle in [
            "\nsmacks_hibernation_time = 5\n",
            "interfaces = { \"127.0.0.1\" }",
            "run_as_root = true",
            "c2s_ports = { 12345 }",
            "\"stanza_debug\"",
            "c2s_require_encryption = true",
            "log = { debug = \"/tmp/x/prosody.log\" }",
            "VirtualHost \"localhost\"",
        ] {
            assert!(config.contains(needle), "missing {needle}");
        }
        assert!(!config.contains("websocket"));
    }

    #[test]
    fn websocket_config_serves_http_on_the_interface() {
        let config = render_config(&values(Some(23456), &[], true));
        for needle in [
            "http_ports = { 23456 }",
            "http_interfaces = { \"127.0.0.1\" }",
            "\"stanza_debug\"; \"websocket\"; \"blocklist\";",
            "\nconsider_websocket_secure = true\n",
            "c2s_require_encryption = true",
        ] {
            assert!(config.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn without_debug_log_the_server_logs_info_and_no_stanzas() {
        let quiet = render_config(&values(None, &[], false));
        assert!(quiet.contains("log = { info = \"/tmp/x/prosody.log\" }"));
        assert!(!quiet.contains("stanza_debug"));
        assert!(!quiet.contains("debug ="));
        // The same values with the debug log: the difference is the option alone.
        let debug = render_config(&values(None, &[], true));
        assert!(debug.contains("\"stanza_debug\""));
        assert!(debug.contains("log = { debug = \"/tmp/x/prosody.log\" }"));
    }
}
