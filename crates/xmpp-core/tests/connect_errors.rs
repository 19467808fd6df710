//! Connection failures that are not the server's fault, each named in words an operator can
//! act on: no DNS record, nothing listening, something that is not XMPP. (A rejected
//! certificate and a wrong password are in `connection.rs`, against a real Prosody, next to
//! the successful login that is their positive control.)

use std::io::Write as _;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::bail;
use xmpp_core::connection::{ConnectError, Connection, ConnectionConfig, Secret};
use xmpp_parsers::jid::BareJid;

fn config(jid: &str, server: Option<(&str, u16)>) -> anyhow::Result<ConnectionConfig> {
    let mut config = ConnectionConfig::new(BareJid::new(jid)?, Secret::new("pw".to_owned()));
    config.server = server.map(|(host, port)| (host.to_owned(), port));
    Ok(config)
}

/// The text must be one line and carry no `Debug` rendering of a library structure.
fn assert_readable(text: &str) {
    assert!(!text.contains('\n'), "more than one line: {text}");
    for dump in ["{ ", "Query", "NoRecords", "Some(", "Custom {", "kind:"] {
        assert!(!text.contains(dump), "debug output ({dump:?}) in: {text}");
    }
}

async fn connect_error(config: ConnectionConfig) -> anyhow::Result<ConnectError> {
    match tokio::time::timeout(Duration::from_secs(60), Connection::connect(config)).await {
        Err(_) => bail!("no answer within 60 s"),
        Ok(Ok(_)) => bail!("connecting must fail"),
        Ok(Err(error)) => Ok(error),
    }
}

#[tokio::test]
async fn a_domain_without_dns_records_is_named() -> anyhow::Result<()> {
    // `.invalid` never resolves (RFC 2606): neither the SRV record nor an address exists.
    let error = connect_error(config("bot@nowhere.invalid", None)?).await?;
    let text = error.to_string();
    assert!(matches!(error, ConnectError::Dns { .. }), "{text}");
    assert!(
        text.starts_with("cannot find the XMPP server for nowhere.invalid: "),
        "{text}"
    );
    assert!(text.contains("--server HOST:PORT"), "no hint: {text}");
    assert_readable(&text);
    Ok(())
}

#[tokio::test]
async fn a_server_host_that_does_not_resolve_is_named() -> anyhow::Result<()> {
    let error = connect_error(config(
        "bot@localhost",
        Some(("xmpp.nowhere.invalid", 5222)),
    )?)
    .await?;
    let text = error.to_string();
    assert!(matches!(error, ConnectError::Dns { .. }), "{text}");
    assert!(
        text.starts_with("cannot find the XMPP server for xmpp.nowhere.invalid: "),
        "{text}"
    );
    assert_readable(&text);
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_connection_refused_at_host_port() -> anyhow::Result<()> {
    // A port that was just free: bind it, note it, release it.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let error = connect_error(config("bot@localhost", Some(("127.0.0.1", port)))?).await?;
    let text = error.to_string();
    assert!(matches!(error, ConnectError::Refused { .. }), "{text}");
    assert!(
        text.starts_with(&format!("connection refused at 127.0.0.1:{port}: ")),
        "{text}"
    );
    assert_readable(&text);
    Ok(())
}

/// A TCP listener on loopback that answers every connection with `greeting` and then
/// closes it (or, with an empty greeting, closes it at once).
fn plain_listener(greeting: &'static [u8]) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if !greeting.is_empty() {
                let _ = stream.write_all(greeting);
                // Hold the connection a moment, like a service waiting for its protocol.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 1024]);
            }
        }
    });
    Ok(port)
}

#[tokio::test]
async fn a_service_that_is_not_xmpp_is_named() -> anyhow::Result<()> {
    for greeting in [
        &b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n"[..],
        &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
        &b"<!-- not a stream"[..],
    ] {
        let port = plain_listener(greeting)?;
        let error = connect_error(config("bot@localhost", Some(("127.0.0.1", port)))?).await?;
        let text = error.to_string();
        assert!(matches!(error, ConnectError::NotXmpp { .. }), "{text}");
        assert!(
            text.starts_with(&format!(
                "127.0.0.1:{port} did not answer as an XMPP server ("
            )),
            "{text}"
        );
        assert_readable(&text);
    }
    Ok(())
}

#[tokio::test]
async fn a_service_that_hangs_up_at_once_is_named() -> anyhow::Result<()> {
    let port = plain_listener(b"")?;
    let error = connect_error(config("bot@localhost", Some(("127.0.0.1", port)))?).await?;
    let text = error.to_string();
    assert!(matches!(error, ConnectError::NotXmpp { .. }), "{text}");
    assert!(text.contains("closed the connection"), "{text}");
    assert_readable(&text);
    Ok(())
}
