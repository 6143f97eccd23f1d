//! Accepts device connections: TCP (optionally TLS), the WebSocket upgrade on
//! [`SYNC_PATH`](syncline_proto::SYNC_PATH) with subprotocol `syncline.v1`, connection caps,
//! then one session task per connection on the server's task tracker. Other requests are
//! handed to the server's plain HTTP when it serves any ([`handoff`]).

pub mod handoff;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events;
use crate::heartbeat::Heartbeats;
use crate::outbox::Outbox;
use crate::session::{self, SessionConfig, SessionHandler};
use crate::stats::WireStats;

/// WebSocket read buffer per connection, and the most read from the socket per call.
/// tungstenite zero-fills the whole buffer on the first read and keeps it for the
/// connection's life, so every idle connection pays for all of it: its default (128 KiB)
/// costs ~135 KB of RSS. Device frames are small (acks, subscribes, a Hello with its token
/// are well under 1 KiB); a larger frame (a big mutation) gets its full length reserved and
/// is read in 1 KiB calls, a few hundred syscalls for the largest frames allowed, which
/// are rare, against 3 KB saved on each of tens of thousands of idle connections.
pub const READ_BUFFER_BYTES: usize = 1024;

/// Bytes buffered before tungstenite writes to the socket. The session flushes after each
/// coalesced batch, so this only bounds one batch's write size.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Time allowed for the TLS and WebSocket handshakes of a new connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`):
/// the default of 128 overflows when thousands of devices reconnect at once after a restart,
/// and each overflowed SYN costs its device a retransmission delay of a second or more.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the device endpoint with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's and tokio's own `bind` do: a restarted server can take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the
/// loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Configuration of the device listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Largest device frame accepted, in bytes; larger frames close the connection (1009).
    pub max_frame_bytes: usize,
    /// Most simultaneous connections; more are refused at the upgrade with HTTP 503.
    pub max_connections: usize,
    /// Session limits and timers.
    pub session: SessionConfig,
}

/// Creates the session handler of each new connection.
pub trait SessionFactory: Send + Sync + 'static {
    /// The handler type.
    type Handler: SessionHandler;

    /// Returns the handler for a connection from `peer`.
    fn open(&self, peer: SocketAddr, outbox: Outbox) -> Self::Handler;

    /// Where connections whose first request is not for the sync path go; `None` (the
    /// default) refuses them at the upgrade with 404.
    fn http(&self) -> Option<&self::handoff::HttpHandoff> {
        None
    }
}

/// Counts live connections.
#[derive(Debug, Default)]
pub struct ConnectionCount(AtomicUsize);

impl ConnectionCount {
    /// Returns the number of open device connections.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

struct ConnectionSlot(Arc<ConnectionCount>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `shutdown` fires. Each session runs on `tracker`; one
/// [`Heartbeats`] sweeper pings them all and closes the silent ones. Upgrades and frames are
/// counted in `stats`.
#[allow(clippy::too_many_arguments, reason = "each is a separate part the server owns")]
pub async fn serve<F: SessionFactory>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    factory: Arc<F>,
    config: Arc<ListenerConfig>,
    connections: Arc<ConnectionCount>,
    stats: Arc<WireStats>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let heartbeats = Heartbeats::new(config.session.timers());
    tracker.spawn(heartbeats.clone().run(shutdown.clone()));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                events::accept_failed(&error);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let factory = factory.clone();
        let config = config.clone();
        let tls = tls.clone();
        let connections = connections.clone();
        let heartbeats = heartbeats.clone();
        let sessions = tracker.clone();
        let stats = stats.clone();
        tracker.spawn(async move {
            let context = ConnectionContext { peer, factory, config, connections, heartbeats, sessions, stats };
            handle_connection(stream, tls, context).await;
        });
    }
}

/// What a connection's task needs besides its stream.
struct ConnectionContext<F> {
    peer: SocketAddr,
    factory: Arc<F>,
    config: Arc<ListenerConfig>,
    connections: Arc<ConnectionCount>,
    heartbeats: Heartbeats,
    /// Where the session task is spawned once the handshakes are done.
    sessions: TaskTracker,
    stats: Arc<WireStats>,
}

async fn handle_connection<F: SessionFactory>(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    context: ConnectionContext<F>,
) {
    match tls {
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(stream))).await {
            Ok(Ok(stream)) => Box::pin(upgrade_and_run(stream, context)).await,
            Ok(Err(error)) => events::handshake_failed(context.peer, &error.to_string(), &context.stats),
            Err(_) => events::handshake_failed(context.peer, "tls handshake timed out", &context.stats),
        },
        None => Box::pin(upgrade_and_run(stream, context)).await,
    }
}

async fn upgrade_and_run<S, F>(stream: S, context: ConnectionContext<F>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: SessionFactory,
{
    let Some(handoff) = context.factory.http().cloned() else {
        return upgrade_and_run_socket(stream, context).await;
    };
    let routed = tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(handoff::route(stream))).await;
    match routed {
        Ok(Ok((handoff::Route::Socket, stream))) => upgrade_and_run_socket(stream, context).await,
        Ok(Ok((handoff::Route::Http, stream))) => {
            if !handoff.hand(Box::new(stream), context.peer).await {
                events::handshake_failed(context.peer, "plain HTTP is not served (shutting down)", &context.stats);
            }
        }
        Ok(Err(error)) => events::handshake_failed(context.peer, &error.to_string(), &context.stats),
        Err(_) => events::handshake_failed(context.peer, "request line timed out", &context.stats),
    }
}

async fn upgrade_and_run_socket<S, F>(stream: S, context: ConnectionContext<F>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: SessionFactory,
{
    let ConnectionContext { peer, factory, config, connections, heartbeats, sessions, stats } = context;
    // Take a connection slot before the upgrade so the cap holds under a connect storm.
    let admitted = connections.0.fetch_add(1, Ordering::Relaxed) < config.max_connections;
    let slot = ConnectionSlot(connections.clone());
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + config.max_frame_bytes.max(64 * 1024) * 2)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    #[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
    let callback = |request: &Request, response: Response| negotiate(request, response, admitted);
    let upgraded = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        Box::pin(tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config))),
    )
    .await;
    let socket = match upgraded {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return events::handshake_failed(peer, &error.to_string(), &stats),
        Err(_) => return events::handshake_failed(peer, "websocket handshake timed out", &stats),
    };
    let conn_id = events::connection_opened(peer);
    let (outbox, queue) = session::open_outbox(&config.session);
    let handler = factory.open(peer, outbox.clone());
    // A task of its own: a task is allocated for its largest state, so the handshakes'
    // task ends here and an idle connection holds only the session's (the session's own
    // handler calls are boxed for the same reason).
    sessions.spawn(async move {
        let end = session::run_session(socket, handler, outbox, queue, &heartbeats, &stats).await;
        events::connection_closed(conn_id, peer, &end);
        drop(slot);
    });
}

/// Checks the upgrade request: the sync path, the subprotocol (when the client names any),
/// and the connection cap.
#[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
fn negotiate(request: &Request, mut response: Response, admitted: bool) -> Result<Response, ErrorResponse> {
    if request.uri().path() != syncline_proto::SYNC_PATH {
        return Err(refusal(StatusCode::NOT_FOUND, "no such endpoint: use /v1/sync"));
    }
    if !admitted {
        return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "too many connections; retry later"));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(',').map(str::trim))
        .collect();
    if offered.is_empty() {
        // Tolerated so that command-line WebSocket clients work without flags.
        return Ok(response);
    }
    if !offered.contains(&syncline_proto::SUBPROTOCOL) {
        return Err(refusal(StatusCode::BAD_REQUEST, "unsupported subprotocol: use syncline.v1"));
    }
    response
        .headers_mut()
        .insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(syncline_proto::SUBPROTOCOL));
    Ok(response)
}

fn refusal(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use syncline_proto::close_code;
    use syncline_proto::v1::ClientFrame;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{self, Message};

    use super::*;
    use crate::codec::CodecError;
    use crate::session::SessionEnd;

    /// Closes the connection (1000, "bye") when the device's first frame arrives, good or bad.
    struct ClosingHandler;

    impl SessionHandler for ClosingHandler {
        async fn on_frame(&mut self, _frame: ClientFrame, outbox: &Outbox) {
            outbox.close(close_code::NORMAL, "bye");
        }

        async fn on_bad_frame(&mut self, _error: CodecError, outbox: &Outbox) {
            outbox.close(close_code::NORMAL, "bye");
        }

        async fn on_wake(&mut self, _outbox: &Outbox) {}

        async fn on_handshake_timeout(&mut self, _outbox: &Outbox) {}

        fn on_closed(&mut self, _end: &SessionEnd) {}
    }

    struct ClosingSessions;

    impl SessionFactory for ClosingSessions {
        type Handler = ClosingHandler;

        fn open(&self, _peer: SocketAddr, _outbox: Outbox) -> ClosingHandler {
            ClosingHandler
        }
    }

    fn listener_config(max_connections: usize) -> Arc<ListenerConfig> {
        Arc::new(ListenerConfig {
            max_frame_bytes: 64 * 1024,
            max_connections,
            session: SessionConfig {
                outbound_queue: 8,
                outbound_queue_bytes: usize::MAX,
                heartbeat: Duration::from_secs(25),
                idle_timeout: Duration::from_secs(60),
                handshake_timeout: Duration::from_secs(10),
            },
        })
    }

    /// A listener's state without its socket: connections are upgraded over in-memory
    /// streams, as the accept loop upgrades accepted ones.
    struct InMemoryListener {
        config: Arc<ListenerConfig>,
        connections: Arc<ConnectionCount>,
        heartbeats: Heartbeats,
        sessions: TaskTracker,
    }

    impl InMemoryListener {
        fn new(max_connections: usize) -> Self {
            let config = listener_config(max_connections);
            let heartbeats = Heartbeats::new(config.session.timers());
            Self { config, connections: Arc::default(), heartbeats, sessions: TaskTracker::new() }
        }

        /// Opens a connection asking for `path` with the `Sec-WebSocket-Protocol` header
        /// `subprotocols` (none when `None`); returns the client's end, or the upgrade's refusal.
        async fn connect(
            &self,
            path: &str,
            subprotocols: Option<&str>,
        ) -> Result<WebSocketStream<DuplexStream>, tungstenite::Error> {
            let (server_io, client_io) = tokio::io::duplex(64 * 1024);
            let context = ConnectionContext {
                peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                factory: Arc::new(ClosingSessions),
                config: self.config.clone(),
                connections: self.connections.clone(),
                heartbeats: self.heartbeats.clone(),
                sessions: self.sessions.clone(),
                stats: Arc::default(),
            };
            self.sessions.spawn(upgrade_and_run(server_io, context));
            let mut request = format!("ws://localhost{path}").into_client_request().unwrap();
            if let Some(subprotocols) = subprotocols {
                request.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, subprotocols.parse().unwrap());
            }
            let (socket, response) = tokio_tungstenite::client_async(request, client_io).await?;
            let chosen = response.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL);
            assert_eq!(chosen.is_some(), subprotocols.is_some(), "the subprotocol is named back when asked for");
            Ok(socket)
        }

        /// Waits until every connection's task has ended.
        async fn drain(&self) {
            self.sessions.close();
            self.sessions.wait().await;
            self.sessions.reopen();
        }
    }

    fn status_of(refused: Result<WebSocketStream<DuplexStream>, tungstenite::Error>) -> StatusCode {
        match refused {
            Err(tungstenite::Error::Http(response)) => response.status(),
            Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
            Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
        }
    }

    /// Sends a frame and reads until the handler's close; returns its code.
    async fn close_code_after_a_frame(mut socket: WebSocketStream<DuplexStream>) -> u16 {
        socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
        while let Some(message) = socket.next().await {
            if let Message::Close(Some(frame)) = message.unwrap() {
                return frame.code.into();
            }
        }
        panic!("the connection ended without a close frame");
    }

    #[tokio::test]
    async fn an_upgrade_on_the_sync_path_runs_a_session_from_the_factory() {
        let listener = InMemoryListener::new(10);
        for subprotocols in [Some("syncline.v1"), Some("other.v2, syncline.v1"), None] {
            let socket = listener.connect(syncline_proto::SYNC_PATH, subprotocols).await.unwrap();
            assert_eq!(listener.connections.get(), 1, "{subprotocols:?}");
            assert_eq!(close_code_after_a_frame(socket).await, close_code::NORMAL);
            listener.drain().await;
            assert_eq!(listener.connections.get(), 0, "the slot is freed when the session ends");
        }
    }

    #[tokio::test]
    async fn wrong_paths_and_subprotocols_are_refused() {
        let listener = InMemoryListener::new(10);
        assert_eq!(status_of(listener.connect("/v2/sync", None).await), StatusCode::NOT_FOUND);
        let other = listener.connect(syncline_proto::SYNC_PATH, Some("other.v2")).await;
        assert_eq!(status_of(other), StatusCode::BAD_REQUEST);
        listener.drain().await;
        assert_eq!(listener.connections.get(), 0, "a refused upgrade frees its slot");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_with_503() {
        let listener = InMemoryListener::new(1);
        let first = listener.connect(syncline_proto::SYNC_PATH, None).await.unwrap();
        let over = listener.connect(syncline_proto::SYNC_PATH, None).await;
        assert_eq!(status_of(over), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(close_code_after_a_frame(first).await, close_code::NORMAL);
        listener.drain().await;
        assert_eq!(listener.connections.get(), 0);
        let again = listener.connect(syncline_proto::SYNC_PATH, None).await.unwrap();
        assert_eq!(close_code_after_a_frame(again).await, close_code::NORMAL, "room again once the first left");
    }

    /// The accept loop over loopback TCP: it serves until shutdown, which closes open
    /// sessions with "reconnect now".
    #[tokio::test]
    async fn serve_accepts_until_shutdown_and_then_closes_sessions_with_1012() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let url = format!("ws://{}{}", listener.local_addr().unwrap(), syncline_proto::SYNC_PATH);
        let connections = Arc::new(ConnectionCount::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let serving = tokio::spawn(serve(
            listener,
            None,
            Arc::new(ClosingSessions),
            listener_config(10),
            connections.clone(),
            Arc::default(),
            shutdown.clone(),
            tracker.clone(),
        ));
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        shutdown.cancel();
        serving.await.unwrap();
        let close = loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), close_code::SERVICE_RESTART);
        drop(socket);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("every session ends");
        assert_eq!(connections.get(), 0);
        assert!(tokio_tungstenite::connect_async(url.as_str()).await.is_err(), "no longer accepting");
    }
}
