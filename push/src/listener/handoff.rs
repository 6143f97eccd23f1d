//! Plain HTTP beside the device socket: a connection whose first request is not for the sync
//! path is handed to the server (file downloads and uploads live on the device listener, at
//! the same address and with the same TLS as the socket), with the bytes already read.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// Longest request line read to route a connection; a longer one is refused (414 is the
/// HTTP server's to give: it gets the bytes).
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// A device-listener connection after its TLS handshake, plain or TLS.
pub trait DeviceIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> DeviceIo for T {}

/// A connection handed over for plain HTTP, from its first byte.
pub type HttpStream = Box<dyn DeviceIo>;

/// Where the listener hands plain HTTP connections: the receiving end serves them (e.g. an
/// axum server over [`HttpConnections`]).
#[derive(Clone, Debug)]
pub struct HttpHandoff(mpsc::Sender<(HttpStream, SocketAddr)>);

/// The receiving end of an [`HttpHandoff`].
pub struct HttpConnections(mpsc::Receiver<(HttpStream, SocketAddr)>);

/// Returns a handoff whose connections wait in a queue of `capacity` (the listener's task
/// waits when it is full).
pub fn handoff(capacity: usize) -> (HttpHandoff, HttpConnections) {
    let (sender, receiver) = mpsc::channel(capacity);
    (HttpHandoff(sender), HttpConnections(receiver))
}

impl HttpHandoff {
    /// Hands `stream` over; false when nobody serves plain HTTP any more (shutting down).
    pub(crate) async fn hand(&self, stream: HttpStream, peer: SocketAddr) -> bool {
        self.0.send((stream, peer)).await.is_ok()
    }
}

impl HttpConnections {
    /// Returns the next connection, or `None` once every handoff is gone.
    pub async fn next(&mut self) -> Option<(HttpStream, SocketAddr)> {
        self.0.recv().await
    }
}

/// A stream that yields `prefix` (bytes already read from `inner`) before reading `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, position: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.prefix.len() {
            let rest = &this.prefix[this.position..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.position += n;
            if this.position == this.prefix.len() {
                // Drained: the buffer is not kept for the connection's life.
                this.prefix = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where a connection's first request goes.
pub(crate) enum Route {
    /// The sync path (or anything when no plain HTTP is served): the WebSocket upgrade.
    Socket,
    /// Another path: plain HTTP.
    Http,
}

/// Reads `stream` up to the end of its request line (or [`MAX_REQUEST_LINE`] bytes, or the
/// end of the stream) and says where it goes; the returned stream yields those bytes again.
pub(crate) async fn route<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(Route, Prefixed<S>)> {
    let mut read = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !read.contains(&b'\n') && read.len() < MAX_REQUEST_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        read.extend_from_slice(&chunk[..n]);
    }
    let route = if is_sync_request(&read) { Route::Socket } else { Route::Http };
    Ok((route, Prefixed::new(read, stream)))
}

/// Whether the request line in `head` asks for the sync path (with or without a query).
fn is_sync_request(head: &[u8]) -> bool {
    let line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|byte| *byte == b' ');
    let (_method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split(|byte| *byte == b'?').next().unwrap_or_default();
    path == syncline_proto::SYNC_PATH.as_bytes()
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[test]
    fn only_the_sync_path_is_the_socket() {
        assert!(is_sync_request(b"GET /v1/sync HTTP/1.1\r\nHost: x\r\n"));
        assert!(is_sync_request(b"GET /v1/sync?format=json HTTP/1.1\r\n"));
        assert!(!is_sync_request(b"GET /v1/sync/x HTTP/1.1\r\n"));
        assert!(!is_sync_request(b"GET /v1/files/a HTTP/1.1\r\n"));
        assert!(!is_sync_request(b""));
        assert!(!is_sync_request(b"\xff\xfe garbage"));
    }

    #[tokio::test]
    async fn the_routed_stream_yields_every_byte_in_order() {
        let request = b"GET /v1/files/a HTTP/1.1\r\nHost: x\r\n\r\nbody".repeat(50);
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &request).await.unwrap();
            request
        });
        let (route, mut stream) = route(server).await.unwrap();
        assert!(matches!(route, Route::Http));
        let mut read = Vec::new();
        stream.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_stream_without_a_line_end_is_routed_at_its_end_or_bound() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[b'a'; MAX_REQUEST_LINE + 10]).await.unwrap();
        drop(client);
        let (route, mut stream) = route(server).await.unwrap();
        assert!(matches!(route, Route::Http));
        let mut read = Vec::new();
        stream.read_to_end(&mut read).await.unwrap();
        assert_eq!(read.len(), MAX_REQUEST_LINE + 10);
    }
}
