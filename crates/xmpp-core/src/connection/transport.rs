//! Transport and login: TCP, StartTLS (RFC 6120 §5) with our own rustls configuration, or
//! plain TCP to loopback only; then SASL (RFC 6120 §6) through tokio-xmpp.
//!
//! tokio-xmpp's own StartTLS connector builds its root store internally, so it cannot trust a
//! private CA; this connector does the StartTLS negotiation itself and hands rustls the native
//! roots plus the CA from [`ConnectionConfig::ca_file`].

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::inbound::{InboundFilter, Refusals};
use super::quickack::QuickAck;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::connect::{AsyncReadAndWrite, DnsConfig, ServerConnector, ServerConnectorError};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::{ns, starttls};
use tokio_xmpp::xmlstream::{
    initiate_stream, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement,
};

use super::{ConnectError, ConnectionConfig};

/// The boxed byte stream under every XML stream this connector produces.
pub type BoxedStream = Box<dyn AsyncReadAndWrite + Send + 'static>;

/// How long one connection attempt (TCP, StartTLS, TLS, SASL) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::new(30, 0);

/// Default client port (RFC 6120 §14.7) when there is no SRV record and no `server`.
const DEFAULT_PORT: u16 = 5222;

/// How long the peer may take to open its XML stream after the TCP connection is up. An
/// XMPP server answers at once; silence means another kind of service is listening.
const STREAM_HEADER_TIMEOUT: Duration = Duration::new(10, 0);

#[derive(Clone, Debug)]
enum Target {
    /// SRV lookup of `_xmpp-client._tcp.<domain>`.
    Srv,
    /// A fixed host and port.
    Host(String, u16),
}

#[derive(Clone)]
enum Security {
    StartTls(Arc<ClientConfig>),
    /// Plain TCP to addresses already checked to be loopback.
    Plaintext(Vec<SocketAddr>),
}

/// A [`ServerConnector`] producing StartTLS streams verified against the native roots plus an
/// optional private CA, or (explicitly, loopback only) plain TCP streams.
#[derive(Clone)]
pub struct XmppConnector {
    target: Target,
    security: Security,
    /// Whether a private CA was configured (for the hint when a certificate is rejected).
    has_ca_file: bool,
    /// Refused resumptions on every stream this connector (or a clone) opened.
    refusals: Refusals,
}

impl std::fmt::Debug for XmppConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let security = match &self.security {
            Security::StartTls(_) => "starttls",
            Security::Plaintext(_) => "plaintext",
        };
        f.debug_struct("XmppConnector")
            .field("target", &self.target)
            .field("security", &security)
            .finish()
    }
}

impl XmppConnector {
    /// Builds the connector: loads the trust roots, or checks that a plaintext server address
    /// resolves to loopback addresses only.
    pub async fn new(config: &ConnectionConfig) -> Result<Self, ConnectError> {
        let target = match &config.server {
            Some((host, port)) => Target::Host(host.clone(), *port),
            None => Target::Srv,
        };
        let security = if config.insecure_plaintext {
            let (host, port) = match &target {
                Target::Host(host, port) => (host.clone(), *port),
                Target::Srv => (config.jid.domain().as_str().to_owned(), DEFAULT_PORT),
            };
            Security::Plaintext(resolve_loopback(&host, port).await?)
        } else {
            Security::StartTls(Arc::new(tls_config(config.ca_file.as_deref())?))
        };
        Ok(Self {
            target,
            security,
            has_ca_file: config.ca_file.is_some(),
            refusals: Refusals::default(),
        })
    }

    /// The count of refused resumptions on this connector's streams.
    pub(crate) fn refusals(&self) -> Refusals {
        self.refusals.clone()
    }

    /// Whether this connector encrypts.
    pub fn is_tls(&self) -> bool {
        matches!(self.security, Security::StartTls(_))
    }

    /// Opens the transport and the XML stream, up to the point where the stream features of
    /// the (encrypted, if TLS) stream are next.
    pub async fn establish(
        &self,
        domain: &str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<BoxedStream>, ChannelBinding), ConnectError> {
        let (tcp, address) = self.connect_tcp(domain).await?;
        // XMPP is a chatty request/response protocol: without TCP_NODELAY, Nagle's algorithm
        // and delayed ACKs add ~40 ms to many round trips.
        tcp.set_nodelay(true).map_err(ConnectError::Io)?;
        let header = || StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };
        match &self.security {
            Security::Plaintext(_) => {
                tracing::warn!("using an unencrypted connection (loopback only)");
                let stream: BoxedStream = Box::new(BufStream::new(InboundFilter::new(
                    QuickAck::new(tcp),
                    self.refusals(),
                )));
                let pending = expect_xmpp(
                    &address,
                    initiate_stream(stream, ns::JABBER_CLIENT, header(), timeouts),
                )
                .await?;
                Ok((pending, ChannelBinding::None))
            }
            Security::StartTls(tls) => {
                // The plaintext part before TLS is limited too: whoever is on the path could
                // send the deep XML there.
                let pending = expect_xmpp(
                    &address,
                    initiate_stream(
                        BufStream::new(InboundFilter::new(tcp, self.refusals())),
                        ns::JABBER_CLIENT,
                        header(),
                        timeouts,
                    ),
                )
                .await?;
                let (features, stream) = pending.recv_features().await.map_err(|e| {
                    let error: tokio_xmpp::Error = e.into();
                    match error {
                        tokio_xmpp::Error::Io(io) => not_xmpp(&address, &io),
                        other => ConnectError::Xmpp(other),
                    }
                })?;
                if !features.can_starttls() {
                    return Err(ConnectError::StartTlsUnavailable);
                }
                let tcp = negotiate_starttls(stream, &address).await?;
                let name = ServerName::try_from(domain.to_owned())
                    .map_err(|_| ConnectError::InvalidServerName(domain.to_owned()))?;
                let tls_stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, QuickAck::new(tcp))
                    .await
                    .map_err(|e| self.tls_error(domain, e))?;
                let channel_binding = channel_binding(tls_stream.get_ref().1);
                let stream: BoxedStream = Box::new(BufStream::new(InboundFilter::new(
                    tls_stream,
                    self.refusals(),
                )));
                let pending = initiate_stream(stream, ns::JABBER_CLIENT, header(), timeouts)
                    .await
                    .map_err(ConnectError::Io)?;
                Ok((pending, channel_binding))
            }
        }
    }
}

impl XmppConnector {
    /// Opens the TCP connection; returns it with the `HOST:PORT` to name in errors.
    async fn connect_tcp(&self, domain: &str) -> Result<(TcpStream, String), ConnectError> {
        match (&self.target, &self.security) {
            (target, Security::Plaintext(addrs)) => {
                let address = match target {
                    Target::Host(host, port) => host_port(host, *port),
                    Target::Srv => host_port(domain, DEFAULT_PORT),
                };
                let tcp = TcpStream::connect(&addrs[..])
                    .await
                    .map_err(|e| tcp_error(&address, e))?;
                Ok((tcp, address))
            }
            (Target::Host(host, port), _) => {
                let address = host_port(host, *port);
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| ConnectError::Dns {
                        name: host.clone(),
                        reason: format!("the host name does not resolve ({e}); check the server setting (--server, or `server` in the config file)"),
                    })?
                    .collect();
                if addrs.is_empty() {
                    return Err(ConnectError::Dns {
                        name: host.clone(),
                        reason: "the host name has no address; check the server setting (--server, or `server` in the config file)".to_owned(),
                    });
                }
                let tcp = TcpStream::connect(&addrs[..])
                    .await
                    .map_err(|e| tcp_error(&address, e))?;
                Ok((tcp, address))
            }
            (Target::Srv, _) => {
                let tcp = DnsConfig::srv_default_client(domain)
                    .resolve()
                    .await
                    .map_err(|e| srv_error(domain, e))?;
                let address = match tcp.peer_addr() {
                    Ok(peer) => format!("{peer} (from DNS for {domain})"),
                    Err(_) => format!("the server of {domain}"),
                };
                Ok((tcp, address))
            }
        }
    }

    /// A failed TLS handshake in words: a rejected certificate says why and what to do.
    fn tls_error(&self, domain: &str, error: io::Error) -> ConnectError {
        let certificate = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|e| match e {
                rustls::Error::InvalidCertificate(problem) => Some(problem),
                _ => None,
            });
        let Some(problem) = certificate else {
            return ConnectError::Tls(error);
        };
        use rustls::CertificateError as C;
        let reason = match problem {
            C::UnknownIssuer | C::BadSignature if self.has_ca_file => {
                "it is not signed by a CA this machine trusts, nor by the CA in the --ca-file \
                 given; check that the file holds the CA that issued the server's certificate"
                    .to_owned()
            }
            C::UnknownIssuer | C::BadSignature => {
                "it is not signed by a CA this machine trusts; if the server uses a private \
                 CA, give its certificate (PEM) with --ca-file FILE (or ca_file in the \
                 [account] table of the config file)"
                    .to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => {
                "it has expired; the server's operator must renew it".to_owned()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "it is not valid yet (check this machine's clock)".to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "it is not issued for {domain}; the domain of the JID must be one the \
                 certificate names"
            ),
            C::Revoked => "it has been revoked".to_owned(),
            other => format!("{other}"),
        };
        ConnectError::CertificateNotTrusted {
            domain: domain.to_owned(),
            reason,
        }
    }
}

/// `HOST:PORT`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A failed TCP connect: refused (nothing listens) or something else.
fn tcp_error(address: &str, error: io::Error) -> ConnectError {
    if error.kind() == io::ErrorKind::ConnectionRefused {
        ConnectError::Refused {
            address: address.to_owned(),
        }
    } else {
        ConnectError::Unreachable {
            address: address.to_owned(),
            reason: error.to_string(),
        }
    }
}

/// A failed SRV-based connect (tokio-xmpp's resolver: SRV records, else the domain's
/// addresses on port 5222) in words.
fn srv_error(domain: &str, error: tokio_xmpp::Error) -> ConnectError {
    let fallback = host_port(domain, DEFAULT_PORT);
    match error {
        tokio_xmpp::Error::DnsNet(e) if e.is_no_records_found() => ConnectError::Dns {
            name: domain.to_owned(),
            reason: format!(
                "DNS has no SRV record _xmpp-client._tcp.{domain} and no address for \
                 {domain}; check the domain of the JID, or give the server's address with \
                 --server HOST:PORT"
            ),
        },
        tokio_xmpp::Error::DnsNet(e) => ConnectError::Dns {
            name: domain.to_owned(),
            reason: format!(
                "the DNS lookup failed ({}); check the network, or give the server's \
                 address with --server HOST:PORT",
                dns_failure_text(&e.to_string())
            ),
        },
        tokio_xmpp::Error::DnsProto(_) | tokio_xmpp::Error::Idna => ConnectError::Dns {
            name: domain.to_owned(),
            reason: "it is not a valid DNS name".to_owned(),
        },
        tokio_xmpp::Error::Io(e) => tcp_error(&fallback, e),
        tokio_xmpp::Error::Disconnected => ConnectError::Unreachable {
            address: format!("the servers DNS lists for {domain}"),
            reason: "none of them accepted a connection".to_owned(),
        },
        other => ConnectError::Xmpp(other),
    }
}

/// The resolver's message up to the first structure dump (`Query { ... }`), if any.
fn dns_failure_text(text: &str) -> String {
    let cut = text.find(['{', '(']).unwrap_or(text.len());
    let short = text[..cut].trim_end_matches([' ', ':']);
    if short.is_empty() {
        "no answer".to_owned()
    } else {
        short.to_owned()
    }
}

/// The first part of the stream (the peer's stream header and, for StartTLS, its
/// features): a failure there means the peer is not an XMPP server.
async fn expect_xmpp<T>(
    address: &str,
    opening: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(STREAM_HEADER_TIMEOUT, opening).await {
        Err(_) => Err(ConnectError::NotXmpp {
            address: address.to_owned(),
            reason: format!(
                "no XMPP stream header within {} s",
                STREAM_HEADER_TIMEOUT.as_secs()
            ),
        }),
        Ok(Err(e)) => Err(not_xmpp(address, &e)),
        Ok(Ok(value)) => Ok(value),
    }
}

/// What came back instead of an XMPP stream, in words.
fn not_xmpp(address: &str, error: &io::Error) -> ConnectError {
    let reason = match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            "it closed the connection without opening an XMPP stream".to_owned()
        }
        // The XML parser reports a connection closed before any element as an invalid end
        // of file.
        io::ErrorKind::InvalidData if error.to_string().starts_with("invalid eof") => {
            "it closed the connection without opening an XMPP stream".to_owned()
        }
        io::ErrorKind::InvalidData => "it sent something that is not XMPP's XML".to_owned(),
        io::ErrorKind::TimedOut => "it sent no XMPP stream header".to_owned(),
        _ => format!("opening the XMPP stream failed: {error}"),
    };
    ConnectError::NotXmpp {
        address: address.to_owned(),
        reason,
    }
}

impl ServerConnectorError for ConnectError {}

impl ServerConnector for XmppConnector {
    type Stream = BoxedStream;

    async fn connect(
        &self,
        jid: &Jid,
        _ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        Ok(self.establish(jid.domain().as_str(), timeouts).await?)
    }
}

/// Sends `<starttls/>`, waits for `<proceed/>` and returns the bare TCP stream.
async fn negotiate_starttls(
    mut stream: XmppStream<BufStream<InboundFilter<TcpStream>>>,
    address: &str,
) -> Result<TcpStream, ConnectError> {
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await
        .map_err(ConnectError::Io)?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|e| e.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(XmppStreamElement::StreamError(e))) => {
                return Err(ConnectError::Xmpp(tokio_xmpp::Error::StreamError(e)))
            }
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(ConnectError::Io(e)),
            Some(Err(ReadError::ParseError(e))) => {
                return Err(not_xmpp(
                    address,
                    &io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                ))
            }
            None | Some(Err(ReadError::StreamFooterReceived)) => {
                return Err(ConnectError::Xmpp(tokio_xmpp::Error::Disconnected))
            }
        }
    }
    // As with the buffer, nothing the server sent after <proceed/> is kept.
    Ok(stream.into_inner().into_inner().into_inner())
}

/// `tls-exporter` channel binding (RFC 9266) for TLS 1.3, none otherwise.
fn channel_binding(connection: &rustls::ClientConnection) -> ChannelBinding {
    if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return ChannelBinding::None;
    }
    match connection.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None) {
        Ok(data) => ChannelBinding::TlsExporter(data),
        Err(_) => ChannelBinding::None,
    }
}

/// The rustls configuration: native roots (`rustls-native-certs`, which honours
/// `SSL_CERT_FILE`) plus every certificate in `ca_file`, with the ring provider.
pub(super) fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, ConnectError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping part of the native certificate store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "native root certificates");
    if let Some(path) = ca_file {
        let ca_error = |reason: String| ConnectError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let mut count = 0usize;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            count += 1;
        }
        if count == 0 {
            return Err(ca_error("no PEM certificate in the file".to_owned()));
        }
        tracing::debug!(count, path = %path.display(), "added CA certificates");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Tls(io::Error::other(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}

/// Resolves `host` and accepts the result only if every address is a loopback address.
pub(super) async fn resolve_loopback(
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let refused = || ConnectError::PlaintextNotLoopback {
        host: host.to_owned(),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| refused())?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(refused());
    }
    Ok(addrs)
}

/// Connects, authenticates with SASL (SCRAM preferred, via tokio-xmpp) and restarts the
/// stream: the result is ready for resource binding, which the `StanzaStream` does.
pub(super) async fn open_session(
    connector: &XmppConnector,
    identity: &Jid,
    password: &str,
    timeouts: Timeouts,
) -> Result<tokio_xmpp::stanzastream::Connection, ConnectError> {
    tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        open_session_inner(connector, identity, password, timeouts),
    )
    .await
    .map_err(|_| ConnectError::Timeout(ATTEMPT_TIMEOUT))?
}

async fn open_session_inner(
    connector: &XmppConnector,
    identity: &Jid,
    password: &str,
    timeouts: Timeouts,
) -> Result<tokio_xmpp::stanzastream::Connection, ConnectError> {
    let domain = identity.domain().as_str();
    let username = identity
        .node()
        .ok_or_else(|| ConnectError::JidWithoutLocalpart(identity.to_bare().to_string()))?
        .as_str();
    let (pending, channel_binding) = connector.establish(domain, timeouts).await?;
    let (features, stream) = pending
        .recv_features()
        .await
        .map_err(|e| ConnectError::Xmpp(e.into()))?;
    let credentials = Credentials::default()
        .with_username(username)
        .with_password(password)
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials)
        .await
        .map_err(|e| match e {
            tokio_xmpp::Error::Auth(tokio_xmpp::error::AuthError::Fail(
                tokio_xmpp::parsers::sasl::DefinedCondition::NotAuthorized,
            )) => ConnectError::WrongPassword {
                jid: identity.to_bare().to_string(),
            },
            tokio_xmpp::Error::Auth(auth) => ConnectError::Auth(auth),
            other => ConnectError::Xmpp(other),
        })?;
    let stream = stream
        .send_header(StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        })
        .await
        .map_err(ConnectError::Io)?;
    let (features, stream) = stream
        .recv_features()
        .await
        .map_err(|e| ConnectError::Xmpp(e.into()))?;
    tracing::debug!(tls = connector.is_tls(), "authenticated");
    Ok(tokio_xmpp::stanzastream::Connection {
        stream: stream.box_stream(),
        features,
        identity: identity.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_is_refused_for_non_loopback_addresses() {
        for host in ["192.0.2.1", "8.8.8.8", "::ffff:10.0.0.1"] {
            assert!(
                matches!(
                    resolve_loopback(host, 5222).await,
                    Err(ConnectError::PlaintextNotLoopback { .. })
                ),
                "{host} must be refused"
            );
        }
    }

    #[tokio::test]
    async fn plaintext_is_allowed_to_loopback() {
        for host in ["127.0.0.1", "::1", "127.1.2.3"] {
            let addrs = resolve_loopback(host, 5222).await.unwrap();
            assert!(addrs.iter().all(|a| a.ip().is_loopback()));
        }
    }

    #[tokio::test]
    async fn plaintext_config_is_refused_for_a_remote_server() {
        let mut config = ConnectionConfig::new(
            "a@example.org".parse().unwrap(),
            super::super::Secret::new("pw".into()),
        );
        config.server = Some(("192.0.2.1".into(), 5222));
        config.insecure_plaintext = true;
        assert!(matches!(
            XmppConnector::new(&config).await,
            Err(ConnectError::PlaintextNotLoopback { .. })
        ));
        config.server = Some(("127.0.0.1".into(), 5222));
        assert!(!XmppConnector::new(&config).await.unwrap().is_tls());
        config.insecure_plaintext = false;
        assert!(XmppConnector::new(&config).await.unwrap().is_tls());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        assert!(matches!(
            tls_config(Some(Path::new("/nonexistent/ca.pem"))),
            Err(ConnectError::CaFile { .. })
        ));
        let dir = std::env::temp_dir().join(format!("xmpp-core-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            tls_config(Some(&empty)),
            Err(ConnectError::CaFile { .. })
        ));
    }
}
