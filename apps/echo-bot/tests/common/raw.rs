//! A raw XMPP client for hostile-input tests: plain TCP to the loopback test server, SASL
//! PLAIN, resource binding, and then whatever bytes a test writes, untouched by any XML
//! library. The server must be started with `allow_plaintext(true)` and
//! `.option("allow_unencrypted_plain_auth = true")`.

use base64::Engine as _;
use test_prosody::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TIMEOUT;

pub(crate) struct RawClient {
    stream: TcpStream,
    /// What the server sent that no `expect` consumed yet.
    unread: String,
}

impl RawClient {
    /// Opens a stream, logs in as `user` and binds a resource.
    pub(crate) async fn login(server: &TestServer, user: &str, password: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        let mut client = Self {
            stream,
            unread: String::new(),
        };
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
            server.domain()
        );
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        client.send(&header).await;
        client.expect("</stream:features>").await;
        client
            .send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
            ))
            .await;
        client.expect("<success").await;
        client.send(&header).await;
        client.expect("</stream:features>").await;
        client
            .send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
            .await;
        client.expect("</iq>").await;
        client
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
    }

    /// Pings the server and waits for the answer: the server has handled everything sent
    /// before (it serves one stream in order).
    pub(crate) async fn ping(&mut self, id: &str) {
        self.send(format!(
            "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        self.expect(&format!("id='{id}'")).await;
    }

    /// Reads until the server has sent `marker` and returns everything read up to and
    /// including it (consumed).
    pub(crate) async fn read_until(&mut self, marker: &str) -> String {
        let read = async {
            loop {
                if let Some(at) = self.unread.find(marker) {
                    return self.unread.drain(..at + marker.len()).collect::<String>();
                }
                let mut buf = [0u8; 4096];
                let n = self.stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the server closed the stream: {}", self.unread);
                self.unread.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} from the server: {}", self.unread))
    }

    /// Reads until the server has sent `marker`; everything up to it is consumed.
    pub(crate) async fn expect(&mut self, marker: &str) {
        let read = async {
            loop {
                if let Some(at) = self.unread.find(marker) {
                    self.unread.drain(..at + marker.len());
                    return;
                }
                let mut buf = [0u8; 4096];
                let n = self.stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the server closed the stream: {}", self.unread);
                self.unread.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} from the server: {}", self.unread));
    }
}
