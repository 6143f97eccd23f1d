//! The low-level device connection: one WebSocket to `/v1/sync` that sends `ClientFrame`s
//! and receives `ServerFrame`s, in protobuf binary frames or canonical-JSON text frames.
//!
//! [`Connection`] knows nothing of sessions, cursors or retries; [`crate::Device`] builds
//! those on top, and end-to-end tests drive it directly (including sending garbage with
//! [`Connection::send_raw`]).

use std::{fmt, io, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use syncline_proto::{
    SUBPROTOCOL,
    v1::{ClientFrame, ServerFrame},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::{HeaderValue, header::SEC_WEBSOCKET_PROTOCOL},
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::lean_frame::LeanFrame;

/// Read buffer per connection: 8 KiB holds a typical page frame's worth of socket reads and
/// keeps thousands of simulated devices in a load run cheap (tungstenite's default is 128 KiB).
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Bytes buffered before a write goes to the socket. Devices send small frames (acks,
/// subscribes) and flush each one, so a small buffer loses nothing.
pub const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Largest incoming message accepted: above the server's frame limit (`Welcome.max_frame_bytes`)
/// so that the server's own limit, not ours, is what tests observe.
pub const MAX_INCOMING_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long opening a connection (TCP, TLS and WebSocket handshakes) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code reported when the server's close frame carried no status (RFC 6455 1005).
pub const CLOSE_NO_STATUS: u16 = 1005;

/// How frames are encoded on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameFormat {
    /// Binary frames, each one encoded protobuf message.
    #[default]
    Binary,
    /// Text frames carrying the canonical protobuf JSON mapping.
    Json,
}

/// How to open a [`Connection`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The frame format this side sends. The server answers in the format of the first frame,
    /// and [`Connection::recv`] decodes either.
    pub format: FrameFormat,
    /// PEM of the CA certificate(s) that sign the server's certificate; required for
    /// `wss://` URLs (there is no built-in root store).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Limit on TCP connect + TLS + WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Local address to bind the socket to before connecting (the port is chosen by the
    /// kernel); `None` lets the kernel choose. Load runs spread thousands of connections over
    /// several loopback source addresses this way.
    pub local_addr: Option<IpAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            format: FrameFormat::Binary,
            ca_cert_pem: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            local_addr: None,
        }
    }
}

/// What [`Connection::recv`] returns (and [`Connection::recv_lean`], with `F` a [`LeanFrame`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming<F = ServerFrame> {
    /// A decoded server frame.
    Frame(F),
    /// The server sent a close frame (`code` is [`CLOSE_NO_STATUS`] when it carried none).
    Closed {
        /// The close code, e.g. `syncline_proto::close_code::UNAUTHENTICATED`.
        code: u16,
        /// The close reason text.
        reason: String,
    },
}

/// Errors of the device connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `wss://` URL was given without a CA certificate.
    #[error("a wss:// url needs a CA certificate")]
    MissingCaCertificate,
    /// The CA certificate PEM holds no usable certificate.
    #[error("invalid CA certificate PEM: {reason}")]
    InvalidCaCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}")]
    Connect {
        /// `host:port` that was dialled.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {host} failed")]
    Tls {
        /// The server name that was verified.
        host: String,
        /// The I/O error carrying the TLS failure.
        #[source]
        source: io::Error,
    },
    /// The WebSocket upgrade failed (including a missing or different subprotocol).
    #[error("WebSocket handshake failed")]
    Handshake(#[source] Box<tungstenite::Error>),
    /// Opening the connection took longer than the connect timeout.
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The connection broke without a close frame, or was already closed.
    #[error("connection lost")]
    ConnectionLost(#[source] Option<Box<tungstenite::Error>>),
    /// Writing a frame failed.
    #[error("sending a frame failed")]
    Send(#[source] Box<tungstenite::Error>),
    /// A binary frame is not a valid `ServerFrame`.
    #[error("undecodable binary frame")]
    DecodeBinary(#[source] prost::DecodeError),
    /// A text frame is not a valid canonical-JSON `ServerFrame`.
    #[error("undecodable text frame")]
    DecodeJson(#[source] serde_json::Error),
    /// A frame could not be encoded as JSON.
    #[error("encoding a JSON frame failed")]
    EncodeJson(#[source] serde_json::Error),
}

impl WireError {
    /// Returns true when retrying cannot help: the URL or TLS settings are wrong.
    pub fn is_permanent(&self) -> bool {
        match self {
            WireError::InvalidUrl { .. } | WireError::MissingCaCertificate | WireError::InvalidCaCertificate { .. } => {
                true
            }
            WireError::Connect { .. }
            | WireError::Tls { .. }
            | WireError::Handshake(_)
            | WireError::ConnectTimeout(_)
            | WireError::ConnectionLost(_)
            | WireError::Send(_)
            | WireError::DecodeBinary(_)
            | WireError::DecodeJson(_)
            | WireError::EncodeJson(_) => false,
        }
    }
}

/// A `Result` with [`WireError`].
pub type Result<T, E = WireError> = std::result::Result<T, E>;

/// The byte stream under the WebSocket: plain TCP or TLS over TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One open device WebSocket.
pub struct Connection {
    socket: WebSocketStream<Box<dyn Transport>>,
    format: FrameFormat,
    subprotocol: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("format", &self.format)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a connection to a `ws://` or `wss://` URL (e.g. `ws://127.0.0.1:7700/v1/sync`),
    /// asking for the `syncline.v1` subprotocol; the handshake fails if the server does not
    /// agree to it.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let timeout = options.connect_timeout;
        tokio::time::timeout(timeout, Self::connect_inner(url, options))
            .await
            .map_err(|_| WireError::ConnectTimeout(timeout))?
    }

    async fn connect_inner(url: &str, options: &ConnectOptions) -> Result<Self> {
        let invalid = |reason: &str| WireError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let mut request = url.into_client_request().map_err(|error| invalid(&error.to_string()))?;
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws or wss")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // IPv6 literals come bracketed in URIs; sockets and server names want them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        // Build the TLS settings before dialling so that configuration errors are reported
        // as such, not as network failures.
        let tls = if secure {
            let pem = options.ca_cert_pem.as_deref().ok_or(WireError::MissingCaCertificate)?;
            Some(tls_connector(pem)?)
        } else {
            None
        };

        let addr = format!("{host}:{port}");
        let tcp = match options.local_addr {
            None => TcpStream::connect((host.as_str(), port)).await,
            Some(local) => connect_from(local, &host, port).await,
        }
        .map_err(|source| WireError::Connect { addr: addr.clone(), source })?;
        // Acks and subscribes are tiny; do not let Nagle delay them.
        tcp.set_nodelay(true).map_err(|source| WireError::Connect { addr, source })?;
        let transport: Box<dyn Transport> = match tls {
            None => Box::new(tcp),
            Some(connector) => {
                let server_name = ServerName::try_from(host.clone())
                    .map_err(|_| invalid("the host is not a valid TLS server name"))?;
                let stream = connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|source| WireError::Tls { host: host.clone(), source })?;
                Box::new(stream)
            }
        };

        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_BYTES * 64)
            .max_message_size(Some(MAX_INCOMING_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_INCOMING_MESSAGE_BYTES));
        let (socket, response) = client_async_with_config(request, transport, Some(config))
            .await
            .map_err(|error| WireError::Handshake(Box::new(error)))?;
        let subprotocol =
            response.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|value| value.to_str().ok()).map(str::to_owned);
        Ok(Self { socket, format: options.format, subprotocol })
    }

    /// Returns the frame format this side sends.
    pub fn format(&self) -> FrameFormat {
        self.format
    }

    /// Returns the subprotocol the server agreed to.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Sends one frame in this connection's format and flushes it.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        let message = encode_client_frame(frame, self.format)?;
        self.send_raw(message).await
    }

    /// Sends any WebSocket message as given (tests use it to send garbage) and flushes it.
    pub async fn send_raw(&mut self, message: Message) -> Result<()> {
        self.socket.send(message).await.map_err(|error| WireError::Send(Box::new(error)))
    }

    /// Receives the next server frame or the server's close.
    ///
    /// Pings are answered by the WebSocket layer while reading and are not returned.
    /// Cancel-safe: dropping the future before it completes loses no frame, so it can be a
    /// `tokio::select!` branch.
    pub async fn recv(&mut self) -> Result<Incoming> {
        self.recv_with(ServerFrame::decode, |frame| frame).await
    }

    /// Receives the next server frame, reduced to what a load run accounts for (see
    /// [`LeanFrame::decode`]), or the server's close. Like [`Connection::recv`] otherwise; text
    /// frames are decoded in full, then reduced.
    pub async fn recv_lean(&mut self) -> Result<Incoming<LeanFrame>> {
        self.recv_with(|bytes| LeanFrame::decode(&bytes), LeanFrame::from_frame).await
    }

    /// Receives the next frame and decodes it with `binary` or, from JSON, with `text`.
    async fn recv_with<F>(
        &mut self,
        binary: impl FnOnce(Bytes) -> std::result::Result<F, prost::DecodeError>,
        text: impl FnOnce(ServerFrame) -> F,
    ) -> Result<Incoming<F>> {
        loop {
            let message = match self.socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(WireError::ConnectionLost(Some(Box::new(error)))),
                None => return Err(WireError::ConnectionLost(None)),
            };
            match message {
                Message::Binary(bytes) => {
                    return binary(bytes).map(Incoming::Frame).map_err(WireError::DecodeBinary);
                }
                Message::Text(json) => {
                    return serde_json::from_str(json.as_str())
                        .map(|frame| Incoming::Frame(text(frame)))
                        .map_err(WireError::DecodeJson);
                }
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
                        None => (CLOSE_NO_STATUS, String::new()),
                    };
                    return Ok(Incoming::Closed { code, reason });
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Starts the closing handshake with `code` and `reason` and flushes the close frame.
    /// The server's answering close frame can still be read with [`Connection::recv`].
    /// A reason longer than a close frame carries is cut to fit
    /// ([`syncline_proto::close_code::truncate_reason`]).
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<()> {
        let reason = syncline_proto::close_code::truncate_reason(reason);
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        self.socket.close(Some(frame)).await.map_err(|error| WireError::Send(Box::new(error)))
    }

    /// Drops the socket without a close frame, as a lost network would.
    pub fn cut(self) {
        drop(self);
    }
}

/// Opens a TCP connection to `host:port` from `local` (port chosen by the kernel), dialling
/// the first resolved address of `local`'s family.
async fn connect_from(local: IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let remote = tokio::net::lookup_host((host, port))
        .await?
        .find(|remote| remote.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{host} has no address of the family of {local}"))
        })?;
    let socket = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind((local, 0).into())?;
    socket.connect(remote).await
}

/// Encodes a client frame as one WebSocket message of the given format.
pub fn encode_client_frame(frame: &ClientFrame, format: FrameFormat) -> Result<Message> {
    match format {
        FrameFormat::Binary => Ok(Message::Binary(frame.encode_to_vec().into())),
        FrameFormat::Json => serde_json::to_string(frame).map(Message::text).map_err(WireError::EncodeJson),
    }
}

/// Builds a TLS connector that trusts exactly the certificates in `pem`.
fn tls_connector(pem: &[u8]) -> Result<tokio_rustls::TlsConnector> {
    let invalid = |reason: String| WireError::InvalidCaCertificate { reason };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|error| invalid(error.to_string()))?;
        roots.add(certificate).map_err(|error| invalid(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate found".to_owned()));
    }
    // Name the provider explicitly: other crates in a build may enable a second one, and then
    // rustls cannot pick a process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::{Ack, client_frame::Msg};

    use super::*;

    fn ack() -> ClientFrame {
        ClientFrame { msg: Some(Msg::Ack(Ack { source: "Account".into(), key: "u1".into(), cursor: 7, page: 2 })) }
    }

    #[test]
    fn json_frames_use_the_canonical_mapping() {
        let Message::Text(text) = encode_client_frame(&ack(), FrameFormat::Json).unwrap() else {
            panic!("json frames are text");
        };
        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        // Canonical JSON: camelCase-free short names here, 64-bit integers as strings.
        assert_eq!(value["ack"]["cursor"], "7");
        assert_eq!(value["ack"]["source"], "Account");
    }

    #[test]
    fn binary_frames_are_protobuf() {
        let Message::Binary(bytes) = encode_client_frame(&ack(), FrameFormat::Binary).unwrap() else {
            panic!("binary frames are binary");
        };
        assert_eq!(ClientFrame::decode(bytes).unwrap(), ack());
    }

    #[tokio::test]
    async fn urls_and_tls_settings_are_checked_before_dialling() {
        let options = ConnectOptions::default();
        let error = Connection::connect("http://127.0.0.1:1/v1/sync", &options).await.unwrap_err();
        assert!(matches!(error, WireError::InvalidUrl { .. }), "{error:?}");
        let error = Connection::connect("wss://127.0.0.1:1/v1/sync", &options).await.unwrap_err();
        assert!(matches!(error, WireError::MissingCaCertificate), "{error:?}");
        assert!(error.is_permanent());
        let options = ConnectOptions { ca_cert_pem: Some(b"not a pem".to_vec()), ..ConnectOptions::default() };
        let error = Connection::connect("wss://127.0.0.1:1/v1/sync", &options).await.unwrap_err();
        assert!(matches!(error, WireError::InvalidCaCertificate { .. }), "{error:?}");
    }
}
