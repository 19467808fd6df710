//! `demo-server`: the Prosody that `just up` runs when no Docker engine is available.
//!
//! Starts Prosody with a generated CA and certificate, creates the demo accounts `bot`,
//! `alice` and `bob` with random passwords, writes everything a client needs to
//! `<state-dir>/demo.env` (shell syntax) plus `ca.pem` and one `<user>.password` file per
//! account, and keeps the server running until SIGINT or SIGTERM.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::distr::Alphanumeric;
use rand::RngExt as _;
use test_prosody::TestServer;

const USERS: [&str; 3] = ["bot", "alice", "bob"];

struct Args {
    state_dir: PathBuf,
    port: Option<u16>,
    interface: String,
    domain: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        state_dir: PathBuf::from(".run/up"),
        port: None,
        interface: "127.0.0.1".to_owned(),
        domain: "localhost".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--state-dir" => args.state_dir = PathBuf::from(value()?),
            "--port" => args.port = Some(value()?.parse().context("--port")?),
            "--interface" => args.interface = value()?,
            "--domain" => args.domain = value()?,
            "-h" | "--help" => {
                println!(
                    "usage: demo-server [--state-dir DIR] [--port PORT] [--interface ADDR] [--domain DOMAIN]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(args)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    fs::create_dir_all(&args.state_dir).context("creating the state directory")?;
    let mut builder = TestServer::builder()
        .domain(args.domain.clone())
        .interface(args.interface.clone());
    if let Some(port) = args.port {
        builder = builder.port(port);
    }
    let server = builder.start()?;

    let ca = args.state_dir.join("ca.pem");
    fs::copy(server.ca_file(), &ca).context("copying ca.pem")?;
    let mut env = format!(
        "DEMO_DOMAIN={}\nDEMO_PORT={}\nDEMO_CA_FILE={}\nDEMO_PROSODY_LOG={}\n",
        server.domain(),
        server.port(),
        fs::canonicalize(&ca)?.display(),
        server.log_file().display()
    );
    for user in USERS {
        let password: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(20)
            .map(char::from)
            .collect();
        server.create_account(user, &password)?;
        let file = args.state_dir.join(format!("{user}.password"));
        write_private(&file, &password)?;
        let upper = user.to_uppercase();
        env.push_str(&format!(
            "DEMO_{upper}_JID={}\nDEMO_{upper}_PASSWORD_FILE={}\n",
            server.jid(user)?,
            fs::canonicalize(&file)?.display()
        ));
    }
    // Written last, so its presence means "ready".
    let env_path = args.state_dir.join("demo.env");
    write_private(&args.state_dir.join("demo.env.tmp"), &env)?;
    fs::rename(args.state_dir.join("demo.env.tmp"), &env_path)?;
    println!(
        "demo-server: Prosody for {} on {}:{} (accounts {}), details in {}",
        server.domain(),
        args.interface,
        server.port(),
        USERS.join(", "),
        env_path.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    let _ = fs::remove_file(&env_path);
    drop(server);
    println!("demo-server: stopped");
    Ok(())
}
