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

use super::depth::DepthLimit;
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
        Ok(Self { target, security })
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
        let tcp = match (&self.target, &self.security) {
            (_, Security::Plaintext(addrs)) => TcpStream::connect(&addrs[..])
                .await
                .map_err(ConnectError::Io)?,
            (Target::Host(host, port), _) => TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(ConnectError::Io)?,
            (Target::Srv, _) => DnsConfig::srv_default_client(domain)
                .resolve()
                .await
                .map_err(ConnectError::Xmpp)?,
        };
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
                let stream: BoxedStream = Box::new(BufStream::new(DepthLimit::new(tcp)));
                let pending = initiate_stream(stream, ns::JABBER_CLIENT, header(), timeouts)
                    .await
                    .map_err(ConnectError::Io)?;
                Ok((pending, ChannelBinding::None))
            }
            Security::StartTls(tls) => {
                // The plaintext part before TLS is limited too: whoever is on the path could
                // send the deep XML there.
                let pending = initiate_stream(
                    BufStream::new(DepthLimit::new(tcp)),
                    ns::JABBER_CLIENT,
                    header(),
                    timeouts,
                )
                .await
                .map_err(ConnectError::Io)?;
                let (features, stream) = pending
                    .recv_features()
                    .await
                    .map_err(|e| ConnectError::Xmpp(e.into()))?;
                if !features.can_starttls() {
                    return Err(ConnectError::StartTlsUnavailable);
                }
                let tcp = negotiate_starttls(stream).await?;
                let name = ServerName::try_from(domain.to_owned())
                    .map_err(|_| ConnectError::InvalidServerName(domain.to_owned()))?;
                let tls_stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                let channel_binding = channel_binding(tls_stream.get_ref().1);
                let stream: BoxedStream = Box::new(BufStream::new(DepthLimit::new(tls_stream)));
                let pending = initiate_stream(stream, ns::JABBER_CLIENT, header(), timeouts)
                    .await
                    .map_err(ConnectError::Io)?;
                Ok((pending, channel_binding))
            }
        }
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
    mut stream: XmppStream<BufStream<DepthLimit<TcpStream>>>,
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
                return Err(ConnectError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )))
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
