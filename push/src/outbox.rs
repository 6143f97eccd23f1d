//! A connection's sending side: its bounded outbound queue and the state shared by the
//! session's two halves, the heartbeat sweeper and the hub.
//!
//! Whoever writes to a device (the server's handler, the hub's fan-out, the sweeper's pings
//! and closes) goes through the connection's [`Outbox`]; the session
//! ([`crate::session`]) drains its queue. A connection's shared state is one allocation with
//! no timers and nothing shared with other connections, so that a wakeup of one session
//! touches only its own memory.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use syncline_proto::close_code;
use syncline_proto::v1::ServerFrame;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::codec::{EncodedFrame, FrameFormat};

/// An item of a connection's outbound queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A server frame, encoded once and possibly shared with other connections.
    Frame(Arc<EncodedFrame>),
    /// A heartbeat ping (queued by the sweeper).
    Ping,
}

/// What the session's reader and writer, the sweeper and the senders share about one
/// connection.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    /// Wakes the reader: for [`Outbox::wake`] and when the connection is closing.
    pub(crate) reader_wake: Notify,
    /// Wakes the writer when the connection is closing.
    pub(crate) writer_wake: Notify,
    /// Set once the connection is closing or closed.
    closed: AtomicBool,
    /// Encoded bytes of the frames in the queue (see
    /// [`SessionConfig::outbound_queue_bytes`](crate::session::SessionConfig::outbound_queue_bytes)).
    pub(crate) queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    /// Set by [`Outbox::close`]: the close frame to send after what is already queued.
    pub(crate) close: Mutex<Option<(u16, String)>>,
    /// The frame format the device chose with its first frame (binary until then).
    pub(crate) format: OnceLock<FrameFormat>,
    /// When something last arrived from the device, on the heartbeat sweeper's clock.
    last_seen_ms: AtomicU64,
    /// Set by [`Outbox::handshake_done`]: the handshake deadline no longer applies.
    handshake_done: AtomicBool,
    /// Set by the sweeper when the handshake deadline passed first; taken by the reader.
    handshake_expired: AtomicBool,
}

impl ConnectionShared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the connection closing and wakes both halves of its session.
    pub(crate) fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        // notify_one keeps a permit when the half is not waiting yet, so neither misses it.
        self.reader_wake.notify_one();
        self.writer_wake.notify_one();
    }

    /// Returns true (once) when the handshake deadline passed before the handshake was done.
    pub(crate) fn take_handshake_expired(&self) -> bool {
        self.handshake_expired.swap(false, Ordering::AcqRel) && !self.handshake_done.load(Ordering::Acquire)
    }
}

/// The sending side of one connection: bounded queue, wakeups and close requests.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    pub(crate) shared: Arc<ConnectionShared>,
}

/// The connection is closed; nothing more can be sent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct ConnectionClosed;

impl Outbox {
    /// Returns an outbox holding at most `capacity` frames and (past the first)
    /// `max_queued_bytes` encoded bytes, and its queue's receiving end.
    pub(crate) fn new(capacity: usize, max_queued_bytes: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(ConnectionShared {
            reader_wake: Notify::new(),
            writer_wake: Notify::new(),
            closed: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            close: Mutex::new(None),
            format: OnceLock::new(),
            last_seen_ms: AtomicU64::new(0),
            handshake_done: AtomicBool::new(false),
            handshake_expired: AtomicBool::new(false),
        });
        (Self { tx, shared }, rx)
    }

    /// Returns an outbox and its queue's receiving end, for tests of code that sends.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test(capacity: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        Self::new(capacity, usize::MAX)
    }

    /// Like [`Outbox::for_test`], with a bound on queued bytes too.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test_with_bytes(capacity: usize, max_queued_bytes: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        Self::new(capacity, max_queued_bytes)
    }

    /// Queues a frame, waiting for room: use for the session's own replies and pages, whose
    /// number the session bounds (flow-control window).
    pub async fn send(&self, frame: Arc<EncodedFrame>) -> Result<(), ConnectionClosed> {
        if self.is_closed() {
            return Err(ConnectionClosed);
        }
        let bytes = frame.encoded_len();
        self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        self.tx.send(Outgoing::Frame(frame)).await.map_err(|_| {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            ConnectionClosed
        })
    }

    /// Encodes and queues a frame (see [`Outbox::send`]).
    pub async fn send_frame(&self, frame: ServerFrame) -> Result<(), ConnectionClosed> {
        self.send(EncodedFrame::new(frame)).await
    }

    /// Queues without waiting; fails (`Full`) when the queue holds its bound of frames, or
    /// when a frame would take it past its bound of bytes while it holds something already,
    /// and (`Closed`) when the session is gone.
    pub(crate) fn try_push(&self, item: Outgoing) -> Result<(), TrySendError<Outgoing>> {
        let bytes = match &item {
            Outgoing::Frame(frame) => frame.encoded_len(),
            Outgoing::Ping => 0,
        };
        let queued = self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let over = queued > 0 && queued.saturating_add(bytes) > self.shared.max_queued_bytes;
        let result = if over { Err(TrySendError::Full(item)) } else { self.tx.try_send(item) };
        if result.is_err() {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
        result
    }

    /// Returns the encoded bytes of the frames queued and not yet written.
    #[cfg(any(test, feature = "test-util"))]
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// Wakes the session's handler
    /// ([`SessionHandler::on_wake`](crate::session::SessionHandler::on_wake)).
    pub fn wake(&self) {
        self.shared.reader_wake.notify_one();
    }

    /// Closes the connection with `code` after sending what is already queued. The first
    /// request wins. `reason` is cut to what a close frame can carry
    /// ([`close_code::truncate_reason`]): send a longer explanation in a frame before.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut slot = self.shared.close.lock();
        if slot.is_none() {
            let mut reason = reason.into();
            reason.truncate(close_code::truncate_reason(&reason).len());
            *slot = Some((code, reason));
        }
        drop(slot);
        self.shared.shut();
    }

    /// Returns the close code and reason requested with [`Outbox::close`], if any.
    #[cfg(any(test, feature = "test-util"))]
    pub fn close_request(&self) -> Option<(u16, String)> {
        self.shared.close.lock().clone()
    }

    /// Marks the connection's handshake done (for the server: a Hello succeeded): the
    /// handshake deadline
    /// ([`SessionConfig::handshake_timeout`](crate::session::SessionConfig::handshake_timeout))
    /// no longer applies to it.
    pub fn handshake_done(&self) {
        self.shared.handshake_done.store(true, Ordering::Release);
    }

    /// Returns true once [`Outbox::handshake_done`] was called.
    pub fn is_handshake_done(&self) -> bool {
        self.shared.handshake_done.load(Ordering::Acquire)
    }

    /// Tells the session that the handshake deadline passed (the sweeper calls it when the
    /// handshake is not done by then): the reader calls
    /// [`SessionHandler::on_handshake_timeout`](crate::session::SessionHandler::on_handshake_timeout)
    /// and closes the connection.
    pub(crate) fn expire_handshake(&self) {
        self.shared.handshake_expired.store(true, Ordering::Release);
        self.shared.reader_wake.notify_one();
    }

    /// Returns true when `other` is an outbox of the same connection.
    pub fn same_connection(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Records that something arrived from the device at `now_ms` (the sweeper's clock).
    pub(crate) fn touch(&self, now_ms: u64) {
        self.shared.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Returns when something last arrived from the device (the sweeper's clock).
    pub(crate) fn last_seen_ms(&self) -> u64 {
        self.shared.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Returns true once the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_requests_are_cut_to_what_a_close_frame_carries() {
        let (outbox, _queue) = Outbox::for_test(1);
        outbox.close(close_code::PROTOCOL_ERROR, "€".repeat(60));
        outbox.close(close_code::INTERNAL, "the first request wins");
        let (code, reason) = outbox.close_request().expect("a close request");
        assert_eq!(code, close_code::PROTOCOL_ERROR);
        assert_eq!(reason, "€".repeat(41), "123 bytes: 41 whole three-byte characters");
    }
}
