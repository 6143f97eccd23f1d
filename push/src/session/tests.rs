//! Session tests: the generic loop driven through an in-memory WebSocket (a tungstenite
//! client on the other end of a `tokio::io::duplex`), on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prost::Message as _;
use syncline_proto::v1::{self, ClientFrame, ServerFrame, client_frame, server_frame};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::*;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages a test client reads before giving up: pings a second apart over the test's
/// span, and the few frames the handler sends.
const MAX_MESSAGES: usize = 200;

fn config() -> SessionConfig {
    SessionConfig {
        outbound_queue: 16,
        outbound_queue_bytes: usize::MAX,
        heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3600),
        handshake_timeout: HANDSHAKE_TIMEOUT,
    }
}

/// What the test handler does.
#[derive(Clone, Default)]
struct Script {
    /// Marks the handshake done on the first decoded frame.
    handshake_on_first_frame: bool,
    /// At the handshake deadline: an error frame with this message, then a close with this
    /// code and reason, each when set.
    error_on_timeout: Option<String>,
    close_on_timeout: Option<(u16, String)>,
}

struct ScriptedHandler {
    script: Script,
    log: Arc<Mutex<Vec<String>>>,
}

impl SessionHandler for ScriptedHandler {
    async fn on_frame(&mut self, _frame: ClientFrame, outbox: &Outbox) {
        self.log.lock().push("frame".into());
        if self.script.handshake_on_first_frame {
            outbox.handshake_done();
        }
    }

    async fn on_bad_frame(&mut self, _error: CodecError, _outbox: &Outbox) {
        self.log.lock().push("bad frame".into());
    }

    async fn on_wake(&mut self, _outbox: &Outbox) {
        self.log.lock().push("wake".into());
    }

    async fn on_handshake_timeout(&mut self, outbox: &Outbox) {
        self.log.lock().push("handshake timeout".into());
        if let Some(message) = &self.script.error_on_timeout {
            let error = v1::Error {
                code: v1::ErrorCode::Timeout as i32,
                message: message.clone(),
                fatal: true,
                ..v1::Error::default()
            };
            let frame = ServerFrame { msg: Some(server_frame::Msg::Error(error)) };
            outbox.send_frame(frame).await.expect("queued before the close");
        }
        if let Some((code, reason)) = &self.script.close_on_timeout {
            outbox.close(*code, reason.clone());
        }
    }

    fn on_closed(&mut self, end: &SessionEnd) {
        self.log.lock().push(format!("closed: {end:?}"));
    }
}

/// A session running against an in-memory client.
struct Running {
    client: WebSocketStream<DuplexStream>,
    session: JoinHandle<SessionEnd>,
    sweeper: JoinHandle<()>,
    shutdown: CancellationToken,
    log: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

async fn start(script: Script) -> Running {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let socket = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let config = config();
    let heartbeats = Heartbeats::new(&config);
    let shutdown = CancellationToken::new();
    let sweeper = tokio::spawn(heartbeats.clone().run(shutdown.clone()));
    let (outbox, queue) = open_outbox(&config);
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = ScriptedHandler { script, log: log.clone() };
    let session = tokio::spawn(async move { run_session(socket, handler, outbox, queue, &heartbeats).await });
    Running { client, session, sweeper, shutdown, log, started: Instant::now() }
}

impl Running {
    /// Reads (answering pings, as a device's WebSocket does) until the server's close frame;
    /// returns the data messages before it and the close frame. Fails on a transport error,
    /// e.g. a close frame no compliant client accepts.
    async fn read_to_close(&mut self, within: Duration) -> (Vec<Message>, CloseFrame) {
        let mut data = Vec::new();
        for _ in 0..MAX_MESSAGES {
            let next = tokio::time::timeout(within, self.client.next()).await.expect("the server closes in time");
            match next {
                Some(Ok(Message::Close(frame))) => return (data, frame.expect("a close code")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => data.push(message),
                other => panic!("the connection failed instead of closing: {other:?}"),
            }
        }
        panic!("no close within {MAX_MESSAGES} messages");
    }

    /// Stops the sweeper and returns how the session ended.
    async fn finish(self) -> (SessionEnd, Vec<String>) {
        self.shutdown.cancel();
        self.sweeper.await.expect("the sweeper stops");
        let end = self.session.await.expect("the session ends");
        let log = self.log.lock().clone();
        (end, log)
    }
}

fn encoded(frame: &ClientFrame) -> Message {
    Message::Binary(frame.encode_to_vec().into())
}

fn logout() -> ClientFrame {
    ClientFrame { msg: Some(client_frame::Msg::Logout(v1::Logout {})) }
}

#[tokio::test(start_paused = true)]
async fn a_session_without_a_handshake_hears_why_and_is_closed_at_the_deadline() {
    // A reason far over what a close frame carries, with multi-byte characters across the cut.
    let reason = "délai dépassé ".repeat(20);
    let script = Script {
        error_on_timeout: Some("no Hello in time".into()),
        close_on_timeout: Some((close_code::HELLO_TIMEOUT, reason.clone())),
        ..Script::default()
    };
    let mut running = start(script).await;
    // Frames that do not complete the handshake do not hold the deadline off.
    running.client.send(encoded(&logout())).await.unwrap();
    let (data, close) = running.read_to_close(HANDSHAKE_TIMEOUT * 2).await;
    let elapsed = running.started.elapsed();
    assert!(elapsed >= HANDSHAKE_TIMEOUT, "closed after {elapsed:?}, before the deadline");
    assert!(elapsed <= HANDSHAKE_TIMEOUT + Duration::from_secs(1), "closed {elapsed:?} in, a tick late at most");
    let [Message::Binary(error)] = &data[..] else { panic!("expected the error frame alone, got {data:?}") };
    let error = ServerFrame::decode(error.as_ref()).unwrap();
    assert!(matches!(error.msg, Some(server_frame::Msg::Error(v1::Error { fatal: true, .. }))), "{error:?}");
    assert_eq!(u16::from(close.code), close_code::HELLO_TIMEOUT);
    assert!(close.reason.len() <= close_code::MAX_REASON_BYTES, "{} bytes", close.reason.len());
    assert!(close.reason.len() >= close_code::MAX_REASON_BYTES - 3, "cut at the limit, not before");
    assert!(reason.starts_with(close.reason.as_str()));
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::HandshakeTimeout);
    assert_eq!(log, ["frame", "handshake timeout", "closed: HandshakeTimeout"]);
}

#[tokio::test(start_paused = true)]
async fn the_session_closes_a_late_handshake_when_the_handler_does_not() {
    let mut running = start(Script::default()).await;
    let (data, close) = running.read_to_close(HANDSHAKE_TIMEOUT * 2).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!(u16::from(close.code), close_code::HELLO_TIMEOUT);
    assert_eq!(close.reason.as_str(), "handshake timeout");
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::HandshakeTimeout);
    assert_eq!(log, ["handshake timeout", "closed: HandshakeTimeout"]);
}

#[tokio::test(start_paused = true)]
async fn a_done_handshake_lifts_the_deadline() {
    let script = Script { handshake_on_first_frame: true, ..Script::default() };
    let mut running = start(script).await;
    running.client.send(encoded(&logout())).await.unwrap();
    // Three deadlines' worth of pings answered and nothing else: the session stays open.
    let until = running.started + HANDSHAKE_TIMEOUT * 3;
    let mut pings = 0;
    while let Ok(next) = tokio::time::timeout_at(until, running.client.next()).await {
        match next {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
        assert!(pings < MAX_MESSAGES, "a ping a second at most");
    }
    assert!(pings >= 20, "pings kept coming: {pings}");
    // Server shutdown ends it as usual.
    running.shutdown.cancel();
    let (_, close) = running.read_to_close(Duration::from_secs(5)).await;
    assert_eq!(u16::from(close.code), close_code::SERVICE_RESTART);
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::Shutdown);
    assert_eq!(log, ["frame", "closed: Shutdown"]);
}

#[test]
fn close_requests_are_cut_to_what_a_close_frame_carries() {
    let (outbox, _queue) = Outbox::for_test(1);
    outbox.close(close_code::PROTOCOL_ERROR, "€".repeat(60));
    outbox.close(close_code::INTERNAL, "the first request wins");
    let (code, reason) = outbox.close_request().expect("a close request");
    assert_eq!(code, close_code::PROTOCOL_ERROR);
    assert_eq!(reason, "€".repeat(41), "123 bytes: 41 whole three-byte characters");
}
