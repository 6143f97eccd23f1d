//! The session loop (`run_session`) fed fuzzer-chosen sequences of WebSocket events through an
//! in-memory socket, on tokio's paused clock with the heartbeat sweeper running (pings, the idle
//! timeout and the handshake deadline all fire), against a handler that follows the server's
//! session-start rules (Hello first, fatal errors with long texts, logout).
//!
//! Checked on every run: the session ends; everything it writes is a valid server frame, a
//! ping or one final close frame; a close frame's payload fits RFC 6455 (reason at most 123
//! bytes); and a close the handler asked for is sent, after what was queued before it.

#![no_main]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arbitrary::Arbitrary;
use futures_util::{Sink, Stream, StreamExt};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use syncline_proto::close_code;
use syncline_proto::v1::{self, ClientFrame, ErrorCode, ServerFrame, client_frame, server_frame};
use syncline_push::{CodecError, Heartbeats, Outbox, SessionConfig, SessionEnd, SessionHandler};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// Most events of one run: enough for every state (before and after Hello, closing) without
/// making single runs slow.
const MAX_EVENTS: usize = 64;

/// What the device side does next.
#[derive(Arbitrary, Debug)]
enum Event {
    /// A binary message with these bytes (mostly not a valid frame).
    Binary(Vec<u8>),
    /// A text message.
    Text(String),
    /// A valid frame, in binary or JSON, which random bytes seldom reach.
    Frame {
        kind: FrameKind,
        json: bool,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame from the device.
    Close,
    /// A frame over the size limit (tungstenite reports it as a capacity error).
    TooLarge,
    /// The socket fails.
    Broken,
    /// Nothing arrives for this many tenths of a second (the clock is paused: timers fire).
    Silence(u8),
    /// Something outside wakes the session (as the hub does).
    Wake,
}

#[derive(Arbitrary, Debug)]
enum FrameKind {
    Hello { protocol_version: u32, username: String },
    Subscribe { source: String, window: u32 },
    Ack { cursor: u64, page: u64 },
    Logout,
}

impl FrameKind {
    fn frame(&self) -> ClientFrame {
        let msg = match self {
            FrameKind::Hello { protocol_version, username } => client_frame::Msg::Hello(v1::Hello {
                protocol_version: *protocol_version,
                credentials: Some(v1::hello::Credentials::Login(v1::Login {
                    username: username.clone(),
                    password: "pw".into(),
                })),
                ..v1::Hello::default()
            }),
            FrameKind::Subscribe { source, window } => client_frame::Msg::Subscribe(v1::Subscribe {
                source: source.clone(),
                window: *window,
                ..v1::Subscribe::default()
            }),
            FrameKind::Ack { cursor, page } => {
                client_frame::Msg::Ack(v1::Ack { cursor: *cursor, page: *page, ..v1::Ack::default() })
            }
            FrameKind::Logout => client_frame::Msg::Logout(v1::Logout {}),
        };
        ClientFrame { msg: Some(msg) }
    }
}

/// A socket whose incoming side plays the events and whose outgoing side records what the
/// session writes.
struct ScriptedSocket {
    incoming: Pin<Box<dyn Stream<Item = Result<Message, tungstenite::Error>> + Send>>,
    written: Vec<Message>,
}

impl Stream for ScriptedSocket {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.as_mut().poll_next(cx)
    }
}

impl Sink<Message> for ScriptedSocket {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.written.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Follows the server's session-start rules with the push API: Hello first (version 1), fatal
/// errors with the decoder's full text, Logout closes normally.
struct ProtocolHandler {
    closed: Arc<AtomicBool>,
}

fn error(code: ErrorCode, message: String, fatal: bool) -> ServerFrame {
    ServerFrame {
        msg: Some(server_frame::Msg::Error(v1::Error { code: code as i32, message, fatal, ..v1::Error::default() })),
    }
}

impl ProtocolHandler {
    async fn fatal(&self, outbox: &Outbox, code: ErrorCode, message: String, close: u16) {
        let _ = outbox.send_frame(error(code, message.clone(), true)).await;
        outbox.close(close, message);
    }
}

impl SessionHandler for ProtocolHandler {
    async fn on_frame(&mut self, frame: ClientFrame, outbox: &Outbox) {
        let Some(msg) = frame.msg else { return };
        if !outbox.is_handshake_done() {
            return match msg {
                client_frame::Msg::Hello(hello) if hello.protocol_version == syncline_proto::PROTOCOL_VERSION => {
                    outbox.handshake_done();
                    let welcome = v1::Welcome {
                        user_id: hello.device.map(|d| d.model).unwrap_or_default(),
                        ..v1::Welcome::default()
                    };
                    let _ = outbox.send_frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }).await;
                }
                client_frame::Msg::Hello(hello) => {
                    let message = format!("protocol version {} is not supported", hello.protocol_version);
                    self.fatal(outbox, ErrorCode::UnsupportedVersion, message, close_code::UPGRADE_REQUIRED).await;
                }
                other => {
                    let message = format!("the first frame must be Hello, not {other:?}");
                    self.fatal(outbox, ErrorCode::Unauthenticated, message, close_code::PROTOCOL_ERROR).await;
                }
            };
        }
        match msg {
            client_frame::Msg::Logout(_) => outbox.close(close_code::NORMAL, "logged out"),
            other => {
                let _ = outbox.send_frame(error(ErrorCode::BadRequest, format!("{other:?}"), false)).await;
            }
        }
    }

    async fn on_bad_frame(&mut self, codec: CodecError, outbox: &Outbox) {
        if outbox.is_handshake_done() {
            let _ = outbox.send_frame(error(ErrorCode::BadRequest, codec.to_string(), false)).await;
        } else {
            self.fatal(outbox, ErrorCode::BadRequest, codec.to_string(), close_code::PROTOCOL_ERROR).await;
        }
    }

    async fn on_wake(&mut self, outbox: &Outbox) {
        let _ = outbox.send_frame(error(ErrorCode::Unavailable, "woken".into(), false)).await;
    }

    async fn on_handshake_timeout(&mut self, outbox: &Outbox) {
        self.fatal(outbox, ErrorCode::Timeout, "no Hello in time ".repeat(20), close_code::HELLO_TIMEOUT).await;
    }

    fn on_closed(&mut self, _end: &SessionEnd) {
        assert!(!self.closed.swap(true, Ordering::SeqCst), "on_closed is called once");
    }
}

fn incoming(events: Vec<Event>, outbox: Outbox) -> impl Stream<Item = Result<Message, tungstenite::Error>> + Send {
    futures_util::stream::iter(events).filter_map(move |event| {
        let outbox = outbox.clone();
        async move {
            match event {
                Event::Binary(bytes) => Some(Ok(Message::Binary(bytes.into()))),
                Event::Text(text) => Some(Ok(Message::Text(text.into()))),
                Event::Frame { kind, json: false } => Some(Ok(Message::Binary(kind.frame().encode_to_vec().into()))),
                Event::Frame { kind, json: true } => {
                    let json = serde_json::to_string(&kind.frame()).expect("client frames serialize");
                    Some(Ok(Message::Text(json.into())))
                }
                Event::Ping(bytes) => Some(Ok(Message::Ping(bytes.into()))),
                Event::Pong(bytes) => Some(Ok(Message::Pong(bytes.into()))),
                Event::Close => Some(Ok(Message::Close(None))),
                Event::TooLarge => {
                    Some(Err(tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
                        size: 2 << 20,
                        max_size: 1 << 20,
                    })))
                }
                Event::Broken => Some(Err(tungstenite::Error::ConnectionClosed)),
                Event::Silence(tenths) => {
                    tokio::time::sleep(Duration::from_millis(100) * u32::from(tenths)).await;
                    None
                }
                Event::Wake => {
                    outbox.wake();
                    None
                }
            }
        }
    })
}

fn config() -> SessionConfig {
    SessionConfig {
        // Small, so that replies wait for room behind the writer.
        outbound_queue: 2,
        outbound_queue_bytes: 4096,
        heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(3),
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
}

fuzz_target!(|events: Vec<Event>| {
    let mut events = events;
    events.truncate(MAX_EVENTS);
    RUNTIME.with(|runtime| runtime.block_on(run(events)));
});

async fn run(events: Vec<Event>) {
    let config = config();
    let heartbeats = Heartbeats::new(config.timers());
    let shutdown = CancellationToken::new();
    let sweeper = tokio::spawn(heartbeats.clone().run(shutdown.clone()));
    let (outbox, queue) = syncline_push::session::open_outbox(&config);
    let mut socket = ScriptedSocket { incoming: Box::pin(incoming(events, outbox.clone())), written: Vec::new() };
    let closed = Arc::new(AtomicBool::new(false));
    let handler = ProtocolHandler { closed: closed.clone() };
    // A session whose device stops sending waits for the idle timeout: bounded on the paused
    // clock by the idle timeout after the last event.
    let stats = syncline_push::WireStats::default();
    let end = syncline_push::session::run_session(&mut socket, handler, outbox.clone(), queue, &heartbeats, &stats).await;
    shutdown.cancel();
    sweeper.await.expect("the sweeper stops");
    assert!(closed.load(Ordering::SeqCst), "on_closed was called");
    check_written(&socket.written, outbox.close_request(), &end);
}

fn check_written(written: &[Message], close_request: Option<(u16, String)>, end: &SessionEnd) {
    let close_at = written.iter().position(|message| matches!(message, Message::Close(_)));
    if let Some(at) = close_at {
        assert_eq!(at, written.len() - 1, "nothing follows the close frame: {written:?}");
    }
    for message in written {
        match message {
            Message::Binary(bytes) => {
                ServerFrame::decode(bytes.as_ref()).expect("binary messages are server frames");
            }
            Message::Text(text) => {
                serde_json::from_str::<ServerFrame>(text.as_str()).expect("text messages are server frames");
            }
            Message::Ping(_) => {}
            Message::Close(frame) => {
                let frame = frame.as_ref().expect("the server's close frames carry a code");
                assert!(
                    frame.reason.len() <= close_code::MAX_REASON_BYTES,
                    "close reason of {} bytes: {:?}",
                    frame.reason.len(),
                    frame.reason
                );
                let (code, reason) = close_request.clone().expect("a close frame was asked for");
                assert_eq!(u16::from(frame.code), code);
                assert_eq!(frame.reason.as_str(), reason);
            }
            Message::Pong(_) | Message::Frame(_) => panic!("the session writes no {message:?}"),
        }
    }
    // A close the server asked for before the device left is sent.
    let device_left = matches!(end, SessionEnd::ClosedByPeer | SessionEnd::TransportError(_));
    if close_request.is_some() && !device_left {
        assert!(close_at.is_some(), "the requested close {close_request:?} was not sent ({end:?}): {written:?}");
    }
}
