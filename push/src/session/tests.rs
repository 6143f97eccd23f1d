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
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::outbox::ConnectionClosed;

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
    async fn on_frame(&mut self, frame: ClientFrame, outbox: &Outbox) {
        let entry = match frame.msg {
            Some(client_frame::Msg::Ack(ack)) => format!("ack {}", ack.cursor),
            _ => "frame".into(),
        };
        self.log.lock().push(entry);
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
    /// The session's outbox, for the test to send and close through, as a handler would.
    outbox: Outbox,
    /// Returns the server's socket with the session's end: dropped only then, so that the
    /// client's late pongs do not fail on a closed pipe.
    session: JoinHandle<(SessionEnd, WebSocketStream<DuplexStream>)>,
    sweeper: JoinHandle<()>,
    shutdown: CancellationToken,
    log: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

async fn start(script: Script) -> Running {
    start_with(script, config(), None).await
}

/// Starts a session with `config`, its socket with `websocket` (tungstenite's defaults when
/// `None`).
async fn start_with(script: Script, config: SessionConfig, websocket: Option<WebSocketConfig>) -> Running {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let mut socket = WebSocketStream::from_raw_socket(server_io, Role::Server, websocket).await;
    let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let heartbeats = Heartbeats::new(config.timers());
    let shutdown = CancellationToken::new();
    let sweeper = tokio::spawn(heartbeats.clone().run(shutdown.clone()));
    let (outbox, queue) = open_outbox(&config);
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = ScriptedHandler { script, log: log.clone() };
    let session = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let end =
                run_session(&mut socket, handler, outbox, queue, &heartbeats, &crate::stats::WireStats::default())
                    .await;
            (end, socket)
        })
    };
    Running { client, outbox, session, sweeper, shutdown, log, started: Instant::now() }
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

    /// Waits until the handler has logged `entries` entries.
    async fn wait_for_log(&self, entries: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log.lock().len() < entries {
            assert!(Instant::now() < deadline, "the handler logged {:?}", self.log.lock());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the sweeper and returns how the session ended.
    async fn finish(self) -> (SessionEnd, Vec<String>) {
        self.shutdown.cancel();
        self.sweeper.await.expect("the sweeper stops");
        let (end, _socket) = self.session.await.expect("the session ends");
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

fn ack(cursor: u64) -> ClientFrame {
    ClientFrame { msg: Some(client_frame::Msg::Ack(v1::Ack { cursor, ..v1::Ack::default() })) }
}

/// A server frame that says `n`.
fn numbered(n: u64) -> ServerFrame {
    let error = v1::Error { message: n.to_string(), ..v1::Error::default() };
    ServerFrame { msg: Some(server_frame::Msg::Error(error)) }
}

/// Returns the number of a [`numbered`] frame read in binary.
fn number_of(message: &Message) -> u64 {
    let Message::Binary(bytes) = message else { panic!("expected a binary frame, got {message:?}") };
    match ServerFrame::decode(bytes.as_ref()).unwrap().msg {
        Some(server_frame::Msg::Error(error)) => error.message.parse().unwrap(),
        other => panic!("expected a numbered frame, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn device_frames_reach_the_handler_in_order_and_queued_frames_go_out_in_order() {
    const FRAMES: u64 = 300;
    let mut running = start(Script::default()).await;
    for cursor in 1..=FRAMES {
        running.client.feed(encoded(&ack(cursor))).await.unwrap();
    }
    running.client.flush().await.unwrap();
    // More than the queue holds and than one write coalesces: the writer drains as they come.
    let outbox = running.outbox.clone();
    let sender = tokio::spawn(async move {
        for n in 1..=FRAMES {
            outbox.send_frame(numbered(n)).await.unwrap();
        }
    });
    let mut received = Vec::new();
    while received.len() < FRAMES as usize {
        match tokio::time::timeout(Duration::from_secs(5), running.client.next()).await.expect("frames arrive") {
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(message)) => received.push(number_of(&message)),
            other => panic!("the connection failed: {other:?}"),
        }
    }
    sender.await.unwrap();
    assert_eq!(received, (1..=FRAMES).collect::<Vec<_>>());
    running.outbox.wake();
    running.wait_for_log(FRAMES as usize + 1).await;
    running.outbox.close(close_code::NORMAL, "done");
    running.read_to_close(Duration::from_secs(5)).await;
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::ClosedByServer { code: close_code::NORMAL, reason: "done".into() });
    let acks: Vec<String> = (1..=FRAMES).map(|cursor| format!("ack {cursor}")).collect();
    assert_eq!(log[..FRAMES as usize], acks[..], "in the order sent");
    assert_eq!(log[FRAMES as usize..], ["wake", "closed: ClosedByServer { code: 1000, reason: \"done\" }"]);
}

#[tokio::test(start_paused = true)]
async fn a_close_request_sends_what_is_queued_then_the_close_frame() {
    let mut running = start(Script::default()).await;
    // Queued and closed without yielding: all three are still queued when the close comes.
    for n in 1..=3 {
        running.outbox.send_frame(numbered(n)).await.unwrap();
    }
    running.outbox.close(close_code::INTERNAL, "bye");
    assert_eq!(running.outbox.send_frame(numbered(4)).await, Err(ConnectionClosed), "nothing after the close");
    let (data, close) = running.read_to_close(Duration::from_secs(5)).await;
    assert_eq!(data.iter().map(number_of).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!((u16::from(close.code), close.reason.as_str()), (close_code::INTERNAL, "bye"));
    let (end, _) = running.finish().await;
    assert_eq!(end, SessionEnd::ClosedByServer { code: close_code::INTERNAL, reason: "bye".into() });
}

#[tokio::test(start_paused = true)]
async fn a_close_from_the_device_ends_the_session() {
    let mut running = start(Script::default()).await;
    running.client.send(encoded(&logout())).await.unwrap();
    running.client.close(None).await.unwrap();
    // The client reads until its side is done (the server's close reply, or the end).
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), running.client.next()).await {}
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::ClosedByPeer);
    assert_eq!(log, ["frame", "closed: ClosedByPeer"]);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_frame_closes_with_1009() {
    const MAX_FRAME_BYTES: usize = 1024;
    let websocket =
        WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
    let mut running = start_with(Script::default(), config(), Some(websocket)).await;
    running.client.send(encoded(&logout())).await.unwrap();
    running.client.send(Message::Binary(vec![0; MAX_FRAME_BYTES * 2].into())).await.unwrap();
    let (data, close) = running.read_to_close(Duration::from_secs(5)).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (close_code::MESSAGE_TOO_BIG, "frame too large"));
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::FrameTooLarge);
    assert_eq!(log, ["frame", "closed: FrameTooLarge"], "the oversized frame never reaches the handler");
}

#[tokio::test(start_paused = true)]
async fn pongs_keep_a_connection_open_and_silence_closes_it_with_4408() {
    const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
    let config = SessionConfig { idle_timeout: IDLE_TIMEOUT, ..config() };
    let script = Script { handshake_on_first_frame: true, ..Script::default() };
    let mut running = start_with(script, config, None).await;
    running.client.send(encoded(&logout())).await.unwrap();
    // Reading answers the pings (tungstenite sends the pongs): three idle timeouts pass.
    let until = running.started + IDLE_TIMEOUT * 3;
    while let Ok(next) = tokio::time::timeout_at(until, running.client.next()).await {
        assert!(matches!(next, Some(Ok(Message::Ping(_)))), "expected only pings, got {next:?}");
    }
    // Silent from here: not reading, the client sends no pongs.
    let silent_from = Instant::now();
    tokio::time::sleep(IDLE_TIMEOUT * 2).await;
    let (data, close) = running.read_to_close(Duration::from_secs(5)).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (close_code::IDLE_TIMEOUT, "idle timeout"));
    let (end, log) = running.finish().await;
    assert_eq!(end, SessionEnd::IdleTimeout);
    assert_eq!(log, ["frame", "closed: IdleTimeout"]);
    assert!(silent_from.elapsed() >= IDLE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_device_that_speaks_json_is_written_json() {
    let mut running = start(Script::default()).await;
    let json = serde_json::to_string(&logout()).unwrap();
    running.client.send(Message::Text(json.into())).await.unwrap();
    // The frame's format is fixed once the reader has decoded it.
    running.wait_for_log(1).await;
    running.outbox.send_frame(numbered(7)).await.unwrap();
    running.outbox.close(close_code::NORMAL, "done");
    let (data, _) = running.read_to_close(Duration::from_secs(5)).await;
    let [Message::Text(text)] = &data[..] else { panic!("expected one text frame, got {data:?}") };
    let frame: ServerFrame = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(frame, numbered(7));
    running.finish().await;
}
