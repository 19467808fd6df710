//! The harness itself: Prosody starts, takes accounts while running, restarts on the same
//! port, and stops on drop.

use std::net::TcpStream;

#[test]
fn starts_restarts_and_stops() -> anyhow::Result<()> {
    let mut server = test_prosody::TestServer::start()?;
    let port = server.port();
    assert!(server.is_running());
    assert_eq!(server.jid("alice")?.to_string(), "alice@localhost");
    server.create_account("alice", "pw")?;
    assert!(server
        .dir()
        .join("data/localhost/accounts/alice.dat")
        .is_file());
    assert!(server.create_account("bad user", "pw").is_err());
    let ca = std::fs::read_to_string(server.ca_file())?;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    server.restart()?;
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert!(server
        .dir()
        .join("data/localhost/accounts/alice.dat")
        .is_file());
    let log = std::fs::read_to_string(server.log_file())?;
    assert!(
        log.contains("Activated service 'c2s'"),
        "{}",
        server.log_tail(20)
    );
    if std::env::var_os("TEST_PROSODY_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }

    let dir = server.dir().to_owned();
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists());
    Ok(())
}
