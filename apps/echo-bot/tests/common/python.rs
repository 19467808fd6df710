//! The Python reference peer (`interop/xmpp_peer.py`) as the interop tests start it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use test_prosody::TestServer;
use tokio::process::Command;

/// The workspace's root directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's Python (`OMEMO_PYTHON`, or `.venv` in the workspace); fails when it is missing.
pub(crate) fn python() -> PathBuf {
    let python = std::env::var_os("OMEMO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "the Python reference venv is missing ({}): run `just venv`",
        python.display()
    );
    python
}

/// The peer in `mode` as `user` of `server` (StartTLS with the test CA, a 30 s timeout, the
/// password in the environment), stdin closed, stdout piped, killed when dropped. Callers
/// add their own arguments and decide what happens to stderr.
pub(crate) fn peer_command(server: &TestServer, user: &str, password: &str, mode: &str) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("interop/xmpp_peer.py"))
        .args(["--mode", mode, "--jid", server.jid(user).unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .args(["--timeout", "30"])
        .env("XMPP_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}
