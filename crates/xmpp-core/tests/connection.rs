//! The connection layer against a real Prosody (test-prosody): TLS trust, plaintext policy,
//! messages, carbons, disco#info with caps, IQ errors, reconnecting after a restart, resuming
//! after a dropped connection, and a fresh session when the server refuses to resume.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use test_prosody::TestServer;
use xmpp_core::connection::{
    CarbonDirection, ConnectError, Connection, ConnectionConfig, Event, Events, IqError, Secret,
    OMEMO_DEVICES_NOTIFY,
};
use xmpp_parsers::caps;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Lang, Message};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::DefinedCondition;

const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "xmpp_core=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(server: &TestServer, user: &str, resource: &str) -> anyhow::Result<ConnectionConfig> {
    let mut config = ConnectionConfig::new(server.jid(user)?, Secret::new(format!("{user}-pw")));
    config.server = Some(("127.0.0.1".to_owned(), server.port()));
    config.ca_file = Some(server.ca_file().to_owned());
    config.resource = Some(resource.to_owned());
    Ok(config)
}

async fn connect(
    server: &TestServer,
    user: &str,
    resource: &str,
) -> anyhow::Result<(Connection, Events)> {
    let (connection, mut events) = Connection::connect(config(server, user, resource)?)
        .await
        .with_context(|| format!("connecting {user}/{resource}"))?;
    match next_event(&mut events, |e| matches!(e, Event::Online { .. })).await? {
        Event::Online { resumed: false, .. } => {}
        other => bail!("expected a fresh session, got {other:?}"),
    }
    // A round trip through the server: carbons are enabled and presence is out once the
    // server has answered a later request on the same stream.
    connection
        .send_iq(Iq::from_get("", Ping).with_to(Jid::new(server.domain())?))
        .await
        .context("ping")?;
    Ok((connection, events))
}

async fn next_event(events: &mut Events, wanted: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => bail!("timed out waiting for an event"),
            Ok(None) => bail!("event stream ended"),
            Ok(Some(event)) if wanted(&event) => return Ok(event),
            Ok(Some(_)) => {}
        }
    }
}

/// Waits for the next `Online` event; whether the session was resumed.
async fn next_online(events: &mut Events) -> anyhow::Result<bool> {
    match next_event(events, |e| matches!(e, Event::Online { .. })).await? {
        Event::Online { resumed, .. } => Ok(resumed),
        _ => unreachable!(),
    }
}

fn body(message: &Message) -> Option<String> {
    message.get_best_body_cloned(vec![]).map(|(_, body)| body)
}

fn chat(to: impl Into<Jid>, text: &str) -> Message {
    Message::chat(Some(to.into())).with_body(Lang::new(), text.to_owned())
}

#[tokio::test]
async fn starttls_login_with_the_ca_file_succeeds() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    let (alice, _events) = connect(&server, "alice", "bot").await?;
    assert_eq!(alice.bound_jid().to_string(), "alice@localhost/bot");
    // The server requires encryption, so getting here means StartTLS worked.
    let log = std::fs::read_to_string(server.log_file())?;
    assert!(
        log.contains("Stream encrypted (TLSv1.3"),
        "no TLS 1.3 in the server log"
    );
    alice.close().await;
    Ok(())
}

#[tokio::test]
async fn login_without_the_ca_fails_with_a_tls_error() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    let mut config = config(&server, "alice", "bot")?;
    config.ca_file = None;
    match Connection::connect(config).await {
        Err(error @ ConnectError::CertificateNotTrusted { .. }) => {
            let text = error.to_string();
            assert!(
                text.starts_with("the TLS certificate of localhost is not trusted"),
                "{text}"
            );
            assert!(text.contains("--ca-file"), "no hint at --ca-file: {text}");
        }
        Err(other) => bail!("expected a certificate error, got {other}"),
        Ok(_) => bail!("login must fail without the CA"),
    }
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_named_as_such() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    server.create_account("alice", "something-else")?;
    match Connection::connect(config(&server, "alice", "bot")?).await {
        Err(error @ ConnectError::WrongPassword { .. }) => assert_eq!(
            error.to_string(),
            "the server refused the password for alice@localhost (wrong password, or no such \
             account)"
        ),
        Err(other) => bail!("expected a wrong-password error, got {other}"),
        Ok(_) => bail!("login must fail with the wrong password"),
    }
    Ok(())
}

#[tokio::test]
async fn plaintext_only_to_loopback() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::builder().allow_plaintext(true).start()?;
    server.create_account("alice", "alice-pw")?;
    let mut plain = config(&server, "alice", "bot")?;
    plain.ca_file = None;
    plain.insecure_plaintext = true;
    let (alice, _events) = Connection::connect(plain.clone()).await?;
    alice.close().await;

    plain.server = Some(("192.0.2.1".to_owned(), server.port()));
    let result = Connection::connect(plain).await;
    assert!(
        matches!(result, Err(ConnectError::PlaintextNotLoopback { .. })),
        "{:?}",
        result.err()
    );
    Ok(())
}

#[tokio::test]
async fn messages_carbons_disco_and_iq_errors() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    server.create_account("bob", "bob-pw")?;
    let (alice, mut alice_events) = connect(&server, "alice", "bot").await?;
    let (alice_phone, mut phone_events) = connect(&server, "alice", "phone").await?;
    let (bob, mut bob_events) = connect(&server, "bob", "laptop").await?;

    // Bob writes to alice/bot: alice/bot gets it, alice/phone gets a received carbon.
    bob.send(chat(alice.bound_jid(), "hello alice")).await?;
    let Event::Message(message) =
        next_event(&mut alice_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some("hello alice"));
    assert_eq!(message.from, Some(bob.bound_jid().into()));
    let Event::Carbon { direction, message } =
        next_event(&mut phone_events, |e| matches!(e, Event::Carbon { .. })).await?
    else {
        unreachable!()
    };
    assert_eq!(direction, CarbonDirection::Received);
    assert_eq!(body(&message).as_deref(), Some("hello alice"));

    // Alice answers from bot: bob gets it, alice/phone gets a sent carbon.
    alice.send(chat(bob.bound_jid(), "hello bob")).await?;
    let Event::Message(message) =
        next_event(&mut bob_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some("hello bob"));
    let Event::Carbon { direction, message } =
        next_event(&mut phone_events, |e| matches!(e, Event::Carbon { .. })).await?
    else {
        unreachable!()
    };
    assert_eq!(direction, CarbonDirection::Sent);
    assert_eq!(body(&message).as_deref(), Some("hello bob"));

    // Bob asks alice/bot what it supports.
    let response = bob
        .send_iq(Iq::from_get("", DiscoInfoQuery { node: None }).with_to(alice.bound_jid().into()))
        .await?;
    let Iq::Result {
        payload: Some(payload),
        ..
    } = response
    else {
        bail!("disco#info result without payload: {response:?}");
    };
    let info = DiscoInfoResult::try_from(payload)?;
    assert!(info.features.contains(OMEMO_DEVICES_NOTIFY), "{info:?}");
    // The caps hash alice sent in her presence is the hash of this disco#info result.
    let ver =
        caps::hash_caps(&caps::compute_disco(&info), Algo::Sha_1).map_err(anyhow::Error::msg)?;
    let ver = xmpp_parsers::caps::Caps::new("x", ver);
    let ver_attr = Element::from(ver).attr("ver").map(str::to_owned);
    let ver_attr = ver_attr.context("caps without ver")?;
    let log = server.stanza_log();
    assert!(
        log.contains(&format!("ver='{ver_attr}'")) || log.contains(&format!("ver=\"{ver_attr}\"")),
        "presence with ver={ver_attr} not in the stanza log"
    );
    assert!(
        log.contains("urn:xmpp:carbons:2"),
        "carbons enable not in the log"
    );

    // An IQ nobody handles gets service-unavailable (RFC 6120 §8.4).
    let unknown = Element::builder("query", "urn:example:unknown").build();
    let result = bob
        .send_iq(Iq::Get {
            from: None,
            to: Some(alice.bound_jid().into()),
            id: String::new(),
            payload: unknown,
        })
        .await;
    match result {
        Err(IqError::Stanza(error)) => {
            assert_eq!(
                error.defined_condition,
                DefinedCondition::ServiceUnavailable
            )
        }
        other => bail!("expected service-unavailable, got {other:?}"),
    }

    // A timeout is reported as such (nobody answers an IQ to a vanished resource... Prosody
    // does, so use a tiny timeout instead). On a loaded machine the answer can be in before
    // the timeout is first looked at, which counts as an answer: try until one times out.
    let mut timed_out = false;
    for _ in 0..50 {
        let result = bob
            .send_iq_with_timeout(
                Iq::from_get("", Ping).with_to(alice.bound_jid().into()),
                Duration::from_nanos(1),
            )
            .await;
        match result {
            Err(IqError::Timeout(_)) => {
                timed_out = true;
                break;
            }
            Ok(_) => {}
            other => bail!("expected a timeout or the answer, got {other:?}"),
        }
    }
    assert!(
        timed_out,
        "no IQ with a 1 ns timeout was reported as timed out"
    );

    for connection in [alice, alice_phone, bob] {
        connection.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_server_restart() -> anyhow::Result<()> {
    init_tracing();
    let mut server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    server.create_account("bob", "bob-pw")?;
    let (alice, mut alice_events) = connect(&server, "alice", "bot").await?;
    let (bob, mut bob_events) = connect(&server, "bob", "laptop").await?;

    let started = Instant::now();
    tokio::task::block_in_place(|| server.restart())?;
    let server_up = started.elapsed();
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    let offline = started.elapsed();
    let Event::Online { bound_jid, resumed } =
        next_event(&mut alice_events, |e| matches!(e, Event::Online { .. })).await?
    else {
        unreachable!()
    };
    let online = started.elapsed();
    assert!(!resumed, "a restarted Prosody cannot resume the session");
    assert_eq!(bound_jid, alice.bound_jid());
    next_event(&mut bob_events, |e| matches!(e, Event::Online { .. })).await?;
    eprintln!(
        "restart: Prosody back after {server_up:?}; alice Offline seen at {offline:?}, \
         Online again at {online:?} ({:?} after the server was up)",
        online.saturating_sub(server_up)
    );

    // Both can talk again.
    bob.send(chat(alice.bound_jid(), "still there?")).await?;
    let Event::Message(message) =
        next_event(&mut alice_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some("still there?"));
    let pong = alice
        .send_iq(Iq::from_get("", Ping).with_to(Jid::new(server.domain())?))
        .await;
    assert!(pong.is_ok(), "{pong:?}");

    alice.close().await;
    // After close, the remaining events drain and the stream ends.
    tokio::time::timeout(WAIT, async { while alice_events.recv().await.is_some() {} })
        .await
        .context("events must end after close")?;
    bob.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_while_the_server_is_down() -> anyhow::Result<()> {
    init_tracing();
    let mut server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    let (alice, mut alice_events) = connect(&server, "alice", "bot").await?;

    let started = Instant::now();
    tokio::task::block_in_place(|| server.stop())?;
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    // Wait for a reconnect attempt while the server is down and make it fail: stand in for
    // the server on its port, accept the client's connection and close it at once.
    let stand_in = tokio::net::TcpListener::bind(("127.0.0.1", server.port()))
        .await
        .context("cannot listen on the stopped server's port")?;
    let (attempt, _) = tokio::time::timeout(WAIT, stand_in.accept())
        .await
        .context("no reconnect attempt while the server was down")??;
    drop(attempt);
    drop(stand_in);
    tokio::task::block_in_place(|| server.restart())?;
    let server_up = started.elapsed();
    next_event(&mut alice_events, |e| {
        matches!(e, Event::Online { resumed: false, .. })
    })
    .await?;
    let online = started.elapsed();
    eprintln!(
        "outage: server down for {server_up:?}; alice Online again at {online:?} \
         ({:?} after the server was up)",
        online.saturating_sub(server_up)
    );
    let pong = alice
        .send_iq(Iq::from_get("", Ping).with_to(Jid::new(server.domain())?))
        .await;
    assert!(pong.is_ok(), "{pong:?}");
    alice.close().await;
    Ok(())
}

/// `close` while the connection is down returns at once and ends the events, both while
/// the reconnector waits for its next attempt and while an attempt hangs on a peer that
/// accepts the TCP connection but never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_prompt_while_the_server_is_down() -> anyhow::Result<()> {
    init_tracing();
    let mut server = TestServer::start()?;
    server.create_account("alice", "alice-pw")?;
    server.create_account("bob", "bob-pw")?;
    let (alice, mut alice_events) = connect(&server, "alice", "waiting").await?;
    let (bob, mut bob_events) = connect(&server, "bob", "connecting").await?;
    let port = server.port();

    tokio::task::block_in_place(|| server.stop())?;
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    next_event(&mut bob_events, |e| matches!(e, Event::Offline)).await?;

    // Waiting to reconnect (the first attempt comes after about a second).
    let started = Instant::now();
    alice.close().await;
    let alice_closed = started.elapsed();
    tokio::time::timeout(Duration::from_secs(2), async {
        while alice_events.recv().await.is_some() {}
    })
    .await
    .context("alice's events did not end after close")?;

    // An attempt under way: a silent listener takes the server's port, and bob's next
    // attempt connects to it and waits for a stream header that never comes.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .context("taking over the stopped server's port")?;
    let (_held, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .context("bob made no reconnect attempt")??;
    let started = Instant::now();
    bob.close().await;
    let bob_closed = started.elapsed();
    tokio::time::timeout(Duration::from_secs(2), async {
        while bob_events.recv().await.is_some() {}
    })
    .await
    .context("bob's events did not end after close")?;

    eprintln!("close while waiting: {alice_closed:?}; while an attempt hangs: {bob_closed:?}");
    assert!(alice_closed < Duration::from_secs(2), "{alice_closed:?}");
    assert!(bob_closed < Duration::from_secs(2), "{bob_closed:?}");
    Ok(())
}

/// A TCP proxy in front of Prosody whose connections can be cut, to lose the connection
/// without losing the server's session state.
struct Proxy {
    port: u16,
    /// Cuts every connection open now.
    cut: tokio::sync::broadcast::Sender<()>,
    /// While false, new connections are accepted but held before they reach Prosody.
    open: tokio::sync::watch::Sender<bool>,
    /// While true, what Prosody sends is held back from the client (until the cut drops it).
    hold_replies: tokio::sync::watch::Sender<bool>,
}

async fn cuttable_proxy(target_port: u16) -> anyhow::Result<Proxy> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let (cut, _) = tokio::sync::broadcast::channel::<()>(4);
    let (open, _) = tokio::sync::watch::channel(true);
    let (hold_replies, _) = tokio::sync::watch::channel(false);
    let (cut_tx, open_rx, hold_rx) = (cut.clone(), open.subscribe(), hold_replies.subscribe());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let mut cut_rx = cut_tx.subscribe();
            let (mut open_rx, mut hold_rx) = (open_rx.clone(), hold_rx.clone());
            tokio::spawn(async move {
                if open_rx.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    return;
                };
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = upstream.into_split();
                let requests = tokio::io::copy(&mut client_in, &mut server_out);
                let replies = async {
                    let mut buf = vec![0; 16 * 1024];
                    loop {
                        let n = server_in.read(&mut buf).await?;
                        if n == 0 || hold_rx.wait_for(|hold| !*hold).await.is_err() {
                            return Ok::<_, std::io::Error>(());
                        }
                        client_out.write_all(&buf[..n]).await?;
                    }
                };
                tokio::select! {
                    _ = requests => {}
                    _ = replies => {}
                    _ = cut_rx.recv() => {}
                }
            });
        }
    });
    Ok(Proxy {
        port,
        cut,
        open,
        hold_replies,
    })
}

/// Sends a tracked chat message from `from` to `to` while the proxy holds back the server's
/// replies, so the server's acknowledgement does not reach `from`; returns once `to` has
/// the message (so the server counted it).
async fn send_unacknowledged(
    proxy: &Proxy,
    from: &Connection,
    to: &Connection,
    to_events: &mut Events,
) -> anyhow::Result<xmpp_core::connection::Delivery> {
    let text = "in flight at the cut";
    proxy.hold_replies.send_replace(true);
    let delivery = from.send_tracked(chat(to.bound_jid(), text)).await?;
    let Event::Message(message) = next_event(to_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some(text));
    Ok(delivery)
}

/// Alice (resource "bot") online through a [`cuttable_proxy`], and bob online directly.
async fn alice_behind_a_proxy(
    server: &TestServer,
) -> anyhow::Result<(Proxy, Connection, Events, Connection, Events)> {
    server.create_account("alice", "alice-pw")?;
    server.create_account("bob", "bob-pw")?;
    let proxy = cuttable_proxy(server.port()).await?;
    let mut alice_config = config(server, "alice", "bot")?;
    alice_config.server = Some(("127.0.0.1".to_owned(), proxy.port));
    let (alice, mut alice_events) = Connection::connect(alice_config).await?;
    next_event(&mut alice_events, |e| matches!(e, Event::Online { .. })).await?;
    let (bob, bob_events) = connect(server, "bob", "laptop").await?;
    Ok((proxy, alice, alice_events, bob, bob_events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_the_session_after_a_dropped_connection() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    let (proxy, alice, mut alice_events, bob, mut bob_events) =
        alice_behind_a_proxy(&server).await?;
    assert!(
        server.stanza_log().contains("urn:xmpp:sm:3"),
        "stream management was not enabled"
    );
    let delivery = send_unacknowledged(&proxy, &alice, &bob, &mut bob_events).await?;

    let started = Instant::now();
    proxy.cut.send(())?;
    proxy.hold_replies.send_replace(false);
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    // Sent while alice is away: Prosody keeps it for the hibernating session.
    bob.send(chat(alice.bound_jid(), "while you were away"))
        .await?;
    let resumed = next_online(&mut alice_events).await?;
    eprintln!("resume: Online again after {:?}", started.elapsed());
    assert!(resumed, "the session should have been resumed");
    let Event::Message(message) =
        next_event(&mut alice_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some("while you were away"));
    // The resumption's counter acknowledged the message sent before the cut.
    assert!(
        delivery.acknowledged().await,
        "the resumed session's counter did not count"
    );
    alice.close().await;
    bob.close().await;
    Ok(())
}

/// The server ended the session while the connection was down (here another login with the
/// same resource replaced it), so it refuses the resumption with a `<failed/>` that carries no
/// counter, as XEP-0198 allows and Prosody does for a session it closed. tokio-xmpp's parser
/// requires the counter; without the mend in the connection's inbound filter the client
/// retried the same resumption forever and never came back online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resumption_without_a_counter_gets_a_fresh_session() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::start()?;
    let (proxy, alice, mut alice_events, bob, _bob_events) = alice_behind_a_proxy(&server).await?;

    // Alice's reconnects wait at the proxy while another login takes her resource.
    proxy.open.send_replace(false);
    proxy.cut.send(())?;
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    let (intruder, _intruder_events) = connect(&server, "alice", "bot").await?;
    intruder.close().await;
    // Prosody's debug line for the refusal without a counter.
    let refusal = "Tried to resume non-existent session";
    let refusals_before = server.log_count(refusal);
    proxy.open.send_replace(true);

    let resumed = next_online(&mut alice_events).await?;
    assert!(!resumed, "the replaced session cannot have been resumed");
    assert!(
        server.log_count(refusal) > refusals_before,
        "Prosody did not refuse a resumption: the test did not test the refusal"
    );
    bob.send(chat(alice.bound_jid(), "after the refusal"))
        .await?;
    let Event::Message(message) =
        next_event(&mut alice_events, |e| matches!(e, Event::Message(_))).await?
    else {
        unreachable!()
    };
    assert_eq!(body(&message).as_deref(), Some("after the refusal"));
    alice.close().await;
    bob.close().await;
    Ok(())
}

/// A session that hibernated too long is gone; Prosody refuses its resumption with the
/// counter of what it had received (`<failed h=…/>`), which covers a message whose
/// acknowledgement never reached the client. Such a counter is not taken as an
/// acknowledgement: Prosody also counts a stanza it drops while it shuts down, and the outbox
/// would drop the message for good. The copy the outbox then sends is dropped by the
/// recipient (same id, and a used ratchet key for OMEMO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_from_a_refused_resumption_acknowledges_nothing() -> anyhow::Result<()> {
    init_tracing();
    let server = TestServer::builder()
        .option("smacks_hibernation_time = 1")
        .start()?;
    let (proxy, alice, mut alice_events, bob, mut bob_events) =
        alice_behind_a_proxy(&server).await?;
    let delivery = send_unacknowledged(&proxy, &alice, &bob, &mut bob_events).await?;

    // Alice's reconnects wait at the proxy until her session hibernated too long.
    let expired = "Destroying session for hibernating too long";
    let expired_before = server.log_count(expired);
    proxy.open.send_replace(false);
    proxy.cut.send(())?;
    proxy.hold_replies.send_replace(false);
    next_event(&mut alice_events, |e| matches!(e, Event::Offline)).await?;
    server
        .wait_for_log(expired, expired_before + 1, WAIT)
        .await?;
    proxy.open.send_replace(true);

    let resumed = next_online(&mut alice_events).await?;
    assert!(!resumed, "the expired session cannot have been resumed");
    // The positive control: the refusal carried a counter.
    assert!(
        server
            .stanza_log()
            .lines()
            .any(|line| line.contains("<failed") && line.contains(" h='")),
        "Prosody refused the resumption without a counter: the test did not test one"
    );
    // And tokio-xmpp released the stanza on that counter, as if acknowledged: what the
    // delivery says next is its own judgement, not a stanza never released.
    let state = format!("{delivery:?}");
    assert!(
        state.contains("Acked"),
        "the refusal's counter did not release the stanza: {state}"
    );
    assert!(
        !delivery.acknowledged().await,
        "a refused resumption's counter counted as an acknowledgement"
    );
    // A message sent on the fresh session is acknowledged as usual.
    let after = alice.send_tracked(chat(bob.bound_jid(), "after")).await?;
    assert!(after.acknowledged().await);
    alice.close().await;
    bob.close().await;
    Ok(())
}

/// A "server" (anyone on the path before TLS) that answers the stream header with stream
/// features nested 100,000 levels deep. The client must fail to connect, not overflow its
/// stack.
#[tokio::test]
async fn deeply_nested_features_before_starttls_do_not_crash_the_client() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    init_tracing();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let hostile = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut header = [0u8; 512];
        let _ = socket.read(&mut header).await?;
        let depth = 100_000;
        let features = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' \
             version='1.0'><stream:features>{}{}<starttls \
             xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        socket.write_all(features.as_bytes()).await?;
        // Whatever the client says next, the "server" hangs up.
        let mut rest = [0u8; 512];
        let _ = socket.read(&mut rest).await;
        anyhow::Ok(())
    });
    let mut config = ConnectionConfig::new(
        xmpp_parsers::jid::BareJid::new("alice@localhost")?,
        Secret::new("pw".into()),
    );
    config.server = Some(("127.0.0.1".to_owned(), port));
    let result = tokio::time::timeout(WAIT, Connection::connect(config)).await?;
    assert!(result.is_err(), "connected to a hostile fake server");
    hostile.await??;
    Ok(())
}
