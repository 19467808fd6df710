//! `TCP_QUICKACK` after every read, so that what the server sends us is acknowledged at once.
//!
//! After we answer a message, the server's next write to us is usually a small
//! stream-management record (`<a/>`, the answer to the `<r/>` tokio-xmpp sends after our
//! stanzas). Linux delays the TCP acknowledgement of such a segment by up to 40 ms, hoping to
//! piggyback it on data of ours; but we have nothing to send. A server with Nagle's algorithm
//! on (Prosody's default) will not put its next small write, the next message for us, on the
//! wire before that acknowledgement arrives: every answer is followed by a ~40 ms stall.
//! Setting `TCP_QUICKACK` after each read acknowledges what was read right away (the kernel
//! sends a pending delayed acknowledgement when the option is set) and keeps the next segment
//! from being delayed, whatever the server's settings. Elsewhere than Linux the wrapper
//! passes the bytes through unchanged.
//!
//! `XMPP_TCP_QUICKACK=off` in the environment turns it off (a diagnostic switch: the e2e
//! bench runs the bot both ways to show the stall and its removal in one run).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The environment variable that turns the option off when set to `off`.
const DISABLE_VARIABLE: &str = "XMPP_TCP_QUICKACK";

/// A TCP stream that re-arms `TCP_QUICKACK` after every read that returned data.
#[derive(Debug)]
pub(crate) struct QuickAck {
    inner: TcpStream,
    /// False once setting the option failed: it is not tried again.
    enabled: bool,
}

impl QuickAck {
    /// Wraps `inner`.
    pub(crate) fn new(inner: TcpStream) -> Self {
        let enabled = std::env::var_os(DISABLE_VARIABLE).is_none_or(|value| value != "off");
        let mut stream = Self { inner, enabled };
        stream.arm();
        stream
    }

    /// Asks the kernel to acknowledge received data immediately (until it next decides
    /// otherwise, which is why this is repeated after every read).
    #[cfg(target_os = "linux")]
    fn arm(&mut self) {
        if self.enabled {
            if let Err(error) = socket2::SockRef::from(&self.inner).set_tcp_quickack(true) {
                tracing::debug!(%error, "TCP_QUICKACK not available");
                self.enabled = false;
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn arm(&mut self) {
        self.enabled = false;
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.arm();
        }
        result
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A client stream whose quick-ACK mode the test can read.
    trait Probe: AsyncRead + AsyncWrite + Unpin {
        fn quickack_mode(&self) -> bool;
    }

    impl Probe for QuickAck {
        fn quickack_mode(&self) -> bool {
            socket2::SockRef::from(&self.inner).tcp_quickack().unwrap()
        }
    }

    impl Probe for TcpStream {
        fn quickack_mode(&self) -> bool {
            socket2::SockRef::from(self).tcp_quickack().unwrap()
        }
    }

    /// The exchange after which Linux delays ACKs: we receive, answer at once (which puts the
    /// socket in "ping-pong" mode), then receive again. Returns whether the socket is in
    /// quick-ACK mode at the end, and the bytes the client read.
    async fn exchange(wrap: bool) -> (bool, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client: Box<dyn Probe> = if wrap {
            Box::new(QuickAck::new(client))
        } else {
            Box::new(client)
        };
        let mut received = Vec::new();
        let mut buf = [0u8; 16];
        for (request, answer) in [(b"one", b"ack1"), (b"two", b"ack2")] {
            server.write_all(request).await.unwrap();
            let n = client.read(&mut buf).await.unwrap();
            received.extend_from_slice(&buf[..n]);
            client.write_all(answer).await.unwrap();
            let mut echoed = [0u8; 4];
            server.read_exact(&mut echoed).await.unwrap();
            assert_eq!(&echoed, answer);
        }
        server.write_all(b"three").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        received.extend_from_slice(&buf[..n]);
        let quick = client.quickack_mode();
        (quick, received)
    }

    #[tokio::test]
    async fn reads_leave_the_socket_in_quickack_mode() {
        let (quick, received) = exchange(true).await;
        assert_eq!(received, b"onetwothree");
        assert!(quick, "after a read the socket must acknowledge at once");
        // Control: the same exchange on a bare socket leaves it delaying ACKs.
        let (quick, received) = exchange(false).await;
        assert_eq!(received, b"onetwothree");
        assert!(!quick, "a bare socket delays ACKs after this exchange");
    }
}
