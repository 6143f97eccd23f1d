//! One session per connection, written against `Sink`/`Stream` of WebSocket messages.
//!
//! A session runs two futures in one task: the *reader* decodes device frames and hands them
//! to the [`SessionHandler`] (which the server implements), and the *writer* drains the
//! connection's bounded outbound queue, coalescing everything already queued into one write
//! per wakeup. Pings, the idle timeout, the handshake deadline and the close at server
//! shutdown come from the listener's shared sweeper ([`crate::heartbeat`]): the reader stamps
//! the connection when anything arrives, and pings are queued like frames. A handler that has
//! not marked its handshake done ([`Outbox::handshake_done`]) by the deadline gets
//! [`SessionHandler::on_handshake_timeout`] to say why, and the session closes. The handler
//! talks back only through its [`Outbox`].
//!
//! The connection's queue and shared state are its [`Outbox`] ([`crate::outbox`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use parking_lot::Mutex;
use syncline_proto::close_code;
use syncline_proto::v1::ClientFrame;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::codec::{self, CodecError, FrameFormat};
use crate::heartbeat::{self, Heartbeats};
use crate::outbox::{ConnectionShared, Outbox, Outgoing};
use crate::stats::WireStats;

/// Most frames written per wakeup before flushing: bounds the time one busy connection holds
/// the writer between flushes.
pub const MAX_COALESCED_FRAMES: usize = 256;

/// Limits and timers of sessions.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Bound of each connection's outbound queue, in frames. A live subscriber whose queue
    /// is full is demoted to catch-up from the log.
    pub outbound_queue: usize,
    /// Bound of the encoded bytes queued on each connection for live push: a live frame
    /// that would take the queue past it demotes its subscriber, like a full queue, so a
    /// stalled device holds at most about this much (the frame count alone would let 128
    /// large frames pile up). A frame is always queued when nothing else is.
    pub outbound_queue_bytes: usize,
    /// Interval between server pings (sent by the listener's [`Heartbeats`] sweeper).
    pub heartbeat: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed (4408).
    pub idle_timeout: Duration,
    /// A connection whose handler has not called [`Outbox::handshake_done`] this long after
    /// it opened is told ([`SessionHandler::on_handshake_timeout`]) and closed (4408), so a
    /// socket that answers pings but never starts a session does not stay open.
    pub handshake_timeout: Duration,
}

impl SessionConfig {
    /// Returns the timers the listener's [`Heartbeats`] sweeper keeps.
    pub fn timers(&self) -> heartbeat::Timers {
        heartbeat::Timers {
            heartbeat: self.heartbeat,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// What the server does with a connection's frames. One value per connection; its methods
/// are never called concurrently.
pub trait SessionHandler: Send + 'static {
    /// Handles one decoded device frame.
    fn on_frame(&mut self, frame: ClientFrame, outbox: &Outbox) -> impl Future<Output = ()> + Send;

    /// Handles a frame that could not be decoded.
    fn on_bad_frame(&mut self, error: CodecError, outbox: &Outbox) -> impl Future<Output = ()> + Send;

    /// Does pending work after [`Outbox::wake`] (e.g. a demoted subscription catching up).
    fn on_wake(&mut self, outbox: &Outbox) -> impl Future<Output = ()> + Send;

    /// Called once when [`SessionConfig::handshake_timeout`] passed before the handler called
    /// [`Outbox::handshake_done`]. Queues what the device should read before the close (e.g.
    /// a fatal error) and may close with a code and reason of its own; the session then closes
    /// with 4408 ([`close_code::HELLO_TIMEOUT`]) if the handler did not.
    fn on_handshake_timeout(&mut self, outbox: &Outbox) -> impl Future<Output = ()> + Send;

    /// Called once when the connection has ended, with why.
    fn on_closed(&mut self, end: &SessionEnd);
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server closed it with this close code.
    ClosedByServer { code: u16, reason: String },
    /// The device sent a close frame or the socket ended.
    ClosedByPeer,
    /// The socket failed.
    TransportError(String),
    /// The device sent a frame over the size limit (closed with 1009).
    FrameTooLarge,
    /// Nothing arrived for the idle timeout (closed with 4408).
    IdleTimeout,
    /// The handshake was not done within the handshake timeout (closed with 4408 unless the
    /// handler chose another code).
    HandshakeTimeout,
    /// The server is shutting down (closed with 1012).
    Shutdown,
}

/// Runs one connection's session to its end. `heartbeats` pings the connection, closes it
/// (4408) when the device stays silent, and closes it with "reconnect now" (1012) when the
/// server shuts down. Frames read and written are counted in `stats`.
pub async fn run_session<S, H>(
    socket: S,
    mut handler: H,
    outbox: Outbox,
    queue: mpsc::Receiver<Outgoing>,
    heartbeats: &Heartbeats,
    stats: &WireStats,
) -> SessionEnd
where
    S: Sink<Message, Error = tungstenite::Error> + Stream<Item = Result<Message, tungstenite::Error>> + Send + Unpin,
    H: SessionHandler,
{
    let (sink, mut stream) = socket.split();
    let shared = outbox.shared.clone();
    let _registration = heartbeats.register(&outbox);
    let ended: Mutex<Option<SessionEnd>> = Mutex::new(None);
    let finish = |end: SessionEnd| {
        let mut slot = ended.lock();
        if slot.is_none() {
            *slot = Some(end);
        }
    };

    let reader = async {
        while !shared.is_closed() {
            let next = tokio::select! {
                biased;
                () = shared.reader_wake.notified() => {
                    if shared.is_closed() {
                        continue;
                    }
                    if shared.take_handshake_expired() {
                        finish(SessionEnd::HandshakeTimeout);
                        Box::pin(handler.on_handshake_timeout(&outbox)).await;
                        outbox.close(close_code::HELLO_TIMEOUT, "handshake timeout");
                        break;
                    }
                    Box::pin(handler.on_wake(&outbox)).await;
                    continue;
                }
                next = stream.next() => next,
            };
            let message = match next {
                None | Some(Ok(Message::Close(_))) => {
                    finish(SessionEnd::ClosedByPeer);
                    shared.shut();
                    break;
                }
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    finish(SessionEnd::FrameTooLarge);
                    outbox.close(close_code::MESSAGE_TOO_BIG, "frame too large");
                    break;
                }
                Some(Err(error)) => {
                    finish(SessionEnd::TransportError(error.to_string()));
                    shared.shut();
                    break;
                }
                Some(Ok(message)) => message,
            };
            outbox.touch(heartbeats.now_ms());
            match codec::decode_client(&message) {
                Ok(Some(decoded)) => {
                    stats.frame_in(decoded.frame.msg.as_ref(), message.len());
                    let _ = shared.format.set(decoded.format);
                    // Boxed: the handler's futures are large and short-lived; inline, every
                    // idle connection would carry room for them.
                    Box::pin(handler.on_frame(decoded.frame, &outbox)).await;
                }
                Ok(None) => {}
                Err(error) => {
                    stats.frame_in(None, message.len());
                    if let Message::Text(_) = message {
                        let _ = shared.format.set(FrameFormat::Json);
                    }
                    Box::pin(handler.on_bad_frame(error, &outbox)).await;
                }
            }
        }
    };

    let writer = write_loop(sink, queue, &shared, stats);
    let ((), write_error) = futures_util::future::join(reader, writer).await;
    if let Some(error) = write_error {
        finish(SessionEnd::TransportError(error));
    }
    let close = shared.close.lock().clone();
    let end = ended.into_inner().unwrap_or(match close {
        Some((close_code::IDLE_TIMEOUT, _)) => SessionEnd::IdleTimeout,
        Some((close_code::SERVICE_RESTART, _)) => SessionEnd::Shutdown,
        Some((code, reason)) => SessionEnd::ClosedByServer { code, reason },
        None => SessionEnd::ClosedByPeer,
    });
    handler.on_closed(&end);
    end
}

/// Writes queued frames and pings, coalescing what is already queued into one flush; once
/// the connection is closing writes what is still queued, then the close frame. Returns a
/// transport error if one ended it.
async fn write_loop<W>(
    mut sink: W,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: &ConnectionShared,
    stats: &WireStats,
) -> Option<String>
where
    W: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    while !shared.is_closed() {
        let first = tokio::select! {
            biased;
            () = shared.writer_wake.notified() => continue,
            item = queue.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let format = shared.format.get().copied().unwrap_or(FrameFormat::Binary);
        if let Err(error) = sink.feed(message_of(first, format, shared, stats)).await {
            shared.shut();
            return Some(error.to_string());
        }
        let mut written = 1;
        while written < MAX_COALESCED_FRAMES {
            let Ok(next) = queue.try_recv() else { break };
            if let Err(error) = sink.feed(message_of(next, format, shared, stats)).await {
                shared.shut();
                return Some(error.to_string());
            }
            written += 1;
        }
        if let Err(error) = sink.flush().await {
            shared.shut();
            return Some(error.to_string());
        }
    }
    // Closing: send what was queued before the close request (e.g. a fatal Error frame),
    // then the close frame, if the server asked for one.
    let close = shared.close.lock().clone();
    if let Some((code, reason)) = close {
        let format = shared.format.get().copied().unwrap_or(FrameFormat::Binary);
        while let Ok(item) = queue.try_recv() {
            if let Outgoing::Frame(frame) = item {
                stats.frame_out(&frame);
                if sink.feed(frame.message(format)).await.is_err() {
                    return None;
                }
            }
        }
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
    None
}

/// Returns the WebSocket message of an item taken from the queue, takes its bytes off the
/// queue's count and counts the frame as written.
fn message_of(item: Outgoing, format: FrameFormat, shared: &ConnectionShared, stats: &WireStats) -> Message {
    match item {
        Outgoing::Frame(frame) => {
            shared.queued_bytes.fetch_sub(frame.encoded_len(), Ordering::AcqRel);
            stats.frame_out(&frame);
            frame.message(format)
        }
        Outgoing::Ping => Message::Ping(bytes::Bytes::new()),
    }
}

/// Creates a connection's outbox and queue. Server shutdown reaches the session through the
/// [`Heartbeats`] registry, which closes it with 1012.
pub fn open_outbox(config: &SessionConfig) -> (Outbox, mpsc::Receiver<Outgoing>) {
    Outbox::new(config.outbound_queue, config.outbound_queue_bytes)
}

#[cfg(test)]
mod tests;
