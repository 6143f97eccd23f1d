//! The write side of a device connection: one ordered stream of whole WebSocket frames that
//! any thread may drain straight into the socket.
//!
//! Why: with one socket write per delivered frame, a push's cost is the kernel's send plus
//! whatever it takes to get to that send. Waking the connection's task for every frame (and
//! going through a WebSocket sink that copies the payload into its own buffer) cost about a
//! fifth of the server's time per delivery. Here the thread that queues a frame (a hub
//! sweeper, the session itself, the heartbeat sweeper) also writes it: it takes the
//! connection's wire lock without waiting, and writes what is queued with one non-blocking
//! (vectored) write from the frame's shared buffer, whose WebSocket header was encoded with
//! the frame. Only when that cannot finish does the connection's writer task get involved:
//!
//! - the socket would block, or the inline write budget is spent: the wire is marked
//!   *blocked*, and from then on only the writer task writes (it waits for the socket to be
//!   writable with its own waker) until it has drained everything;
//! - the lock is held by someone else: the writer task is woken to drain after them, so no
//!   frame is left queued with nobody to write it.
//!
//! Frames stay whole and in order: every drain takes whole frames off the queue into the
//! pending list in queue order, and writes the pending list front to back under the lock.
//! The WebSocket layer (tungstenite, which reads device frames and answers pings and closes)
//! writes through [`DeviceStream`], whose writes are queued as whole control frames; control
//! frames go out between data frames, never inside one.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};

use bytes::{BufMut, Bytes};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::sync::mpsc;

use crate::codec::FrameFormat;
use crate::session::Outgoing;

/// WebSocket opcode of a text frame.
pub(crate) const OPCODE_TEXT: u8 = 0x1;
/// WebSocket opcode of a binary frame.
pub(crate) const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
/// An empty server ping (FIN, opcode 9, unmasked, length 0).
const PING: &[u8] = &[0x89, 0x00];
/// Longest WebSocket frame header: 2 bytes and a 64-bit length (server frames are unmasked).
pub(crate) const MAX_HEADER_BYTES: usize = 10;
/// Longest close reason: a control frame's payload is at most 125 bytes, 2 of them the code.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Bytes an inline drain writes before leaving the rest to the connection's writer task, so a
/// sweeper that meets one connection with a long queue moves on to the next.
const INLINE_WRITE_BUDGET: usize = 64 * 1024;
/// Bytes the writer task writes before yielding to other tasks.
const TASK_WRITE_BUDGET: usize = 1024 * 1024;
/// Frames per vectored write.
const MAX_IOVECS: usize = 64;

/// Appends the header of an unmasked final WebSocket frame of `len` payload bytes.
pub(crate) fn put_header(buf: &mut impl BufMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    match len {
        0..=125 => buf.put_u8(len as u8),
        126..=0xffff => {
            buf.put_u8(126);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(127);
            buf.put_u64(len as u64);
        }
    }
}

/// Returns a whole WebSocket frame: header and `payload`.
pub(crate) fn framed(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER_BYTES + payload.len());
    put_header(&mut buf, opcode, payload.len());
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

/// Returns a close frame with `code` and `reason` (cut to fit a control frame, at a character
/// boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.put_u16(code);
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    framed(OPCODE_CLOSE, &payload)
}

/// The socket's write half, boxed: plain TCP and TLS connections share one wire type.
pub(crate) type BoxedWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// What a drain needs to take frames off the connection's queue.
#[derive(Clone, Copy)]
pub(crate) struct Refill<'a> {
    /// The connection's frame format.
    pub(crate) format: FrameFormat,
    /// The queue's byte count, which a frame leaves when it is taken off the queue.
    pub(crate) queued_bytes: &'a AtomicUsize,
}

/// A connection's write side (see the module documentation).
pub(crate) struct Wire {
    state: Mutex<WireState>,
    /// Wakes the connection's writer task: output left for it, or the connection closing.
    pub(crate) writer_wake: Notify,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

struct WireState {
    /// The socket's write half; `None` once the session has ended (the socket is released
    /// then, whoever still holds the connection's outbox).
    writer: Option<BoxedWrite>,
    /// Whole frames from the WebSocket layer (handshake response, pongs, close replies),
    /// written before the next frames of the queue.
    control: VecDeque<Bytes>,
    /// Whole frames being written, in order; `offset` bytes of the first are written.
    pending: VecDeque<Bytes>,
    offset: usize,
    /// The connection's outbound queue, once the session has started.
    queue: Option<mpsc::Receiver<Outgoing>>,
    /// Only the writer task writes until it has drained everything (see the module doc).
    blocked: bool,
    /// Why a write failed; nothing more is written after one.
    failed: Option<String>,
}

/// How a drain ended.
enum Drained {
    /// Nothing is left to write.
    All,
    /// The byte budget is spent and there is more.
    Budget,
}

impl WireState {
    /// Writes pending frames, taking more from `control` and (with `refill`) the queue, until
    /// nothing is left, `budget` bytes are written, or the socket would block.
    fn drain(
        &mut self,
        refill: Option<Refill<'_>>,
        mut budget: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Drained>> {
        let Self { writer, control, pending, offset, queue, .. } = self;
        let Some(writer) = writer.as_mut() else {
            // The session has ended: nothing can be written any more.
            control.clear();
            pending.clear();
            return Poll::Ready(Ok(Drained::All));
        };
        loop {
            while pending.len() < MAX_IOVECS {
                if let Some(frame) = control.pop_front() {
                    pending.push_back(frame);
                    continue;
                }
                let (Some(refill), Some(queue)) = (refill, queue.as_mut()) else { break };
                let Ok(item) = queue.try_recv() else { break };
                pending.push_back(wire_bytes(item, refill));
            }
            if pending.is_empty() {
                ready!(writer.as_mut().poll_flush(cx))?;
                return Poll::Ready(Ok(Drained::All));
            }
            if budget == 0 {
                return Poll::Ready(Ok(Drained::Budget));
            }
            let written = if pending.len() == 1 {
                ready!(writer.as_mut().poll_write(cx, &pending[0][*offset..]))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                for (slot, (index, frame)) in slices.iter_mut().zip(pending.iter().enumerate()) {
                    *slot = IoSlice::new(if index == 0 { &frame[*offset..] } else { frame });
                }
                ready!(writer.as_mut().poll_write_vectored(cx, &slices[..pending.len()]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            budget = budget.saturating_sub(written);
            advance(pending, offset, written);
        }
    }
}

/// Takes `written` bytes off the front of `pending`.
fn advance(pending: &mut VecDeque<Bytes>, offset: &mut usize, mut written: usize) {
    while written > 0 {
        let Some(front) = pending.front() else { return };
        let left = front.len() - *offset;
        if written < left {
            *offset += written;
            return;
        }
        written -= left;
        *offset = 0;
        pending.pop_front();
    }
}

/// Returns the wire bytes of a queued item, and takes a frame's bytes off the queue's count.
fn wire_bytes(item: Outgoing, refill: Refill<'_>) -> Bytes {
    match item {
        Outgoing::Frame(frame) => {
            refill.queued_bytes.fetch_sub(frame.encoded_len(), Ordering::AcqRel);
            frame.wire_bytes(refill.format)
        }
        Outgoing::Ping => Bytes::from_static(PING),
    }
}

impl Wire {
    /// A wire over `writer`; frames come only from control writes until [`Wire::attach`].
    pub(crate) fn new(writer: BoxedWrite) -> Self {
        Self {
            state: Mutex::new(WireState {
                writer: Some(writer),
                control: VecDeque::new(),
                pending: VecDeque::new(),
                offset: 0,
                queue: None,
                blocked: false,
                failed: None,
            }),
            writer_wake: Notify::new(),
        }
    }

    /// Hands the wire the connection's outbound queue.
    pub(crate) fn attach(&self, queue: mpsc::Receiver<Outgoing>) {
        self.state.lock().queue = Some(queue);
    }

    /// Writes what can be written now, on the calling thread, without waiting for anything;
    /// leaves the rest to the writer task (see the module documentation).
    pub(crate) fn flush(&self, refill: Option<Refill<'_>>) {
        let Some(mut state) = self.state.try_lock() else {
            // Whoever holds it may have taken its last look at the queue already.
            self.writer_wake.notify_one();
            return;
        };
        if state.blocked || state.failed.is_some() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match state.drain(refill, INLINE_WRITE_BUDGET, &mut cx) {
            Poll::Ready(Ok(Drained::All)) => return,
            Poll::Ready(Ok(Drained::Budget)) | Poll::Pending => state.blocked = true,
            Poll::Ready(Err(error)) => state.failed = Some(error.to_string()),
        }
        drop(state);
        self.writer_wake.notify_one();
    }

    /// The writer task's drain: writes until nothing is left (`Ready(Ok)`), waiting for the
    /// socket with `cx`'s waker and yielding after each budget of bytes.
    pub(crate) fn poll_drain(&self, refill: Option<Refill<'_>>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        let mut state = self.state.lock();
        if let Some(error) = &state.failed {
            return Poll::Ready(Err(error.clone()));
        }
        match state.drain(refill, TASK_WRITE_BUDGET, cx) {
            Poll::Ready(Ok(Drained::All)) => {
                state.blocked = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(Drained::Budget)) => {
                state.blocked = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => {
                state.blocked = true;
                Poll::Pending
            }
            Poll::Ready(Err(error)) => {
                let error = error.to_string();
                state.failed = Some(error.clone());
                Poll::Ready(Err(error))
            }
        }
    }

    /// Queues a whole control frame (written before the next queued frames).
    pub(crate) fn push_control(&self, frame: Bytes) {
        self.state.lock().control.push_back(frame);
    }

    /// Stops the queue taking frames; those already queued can still be drained.
    pub(crate) fn close_queue(&self) {
        if let Some(queue) = self.state.lock().queue.as_mut() {
            queue.close();
        }
    }

    /// Shuts the socket's write half down (TLS close_notify, TCP FIN).
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.state.lock().writer.as_mut() {
            Some(writer) => writer.as_mut().poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Drops the socket's write half and the queue: the session has ended.
    pub(crate) fn release(&self) {
        let mut state = self.state.lock();
        state.writer = None;
        state.queue = None;
        state.control.clear();
        state.pending.clear();
    }
}

/// The byte stream the WebSocket layer runs on: reads from the socket's read half, and
/// writes (the handshake response, pongs, close replies: whole frames, as tungstenite writes
/// them) into the connection's [`Wire`] as control frames.
pub(crate) struct DeviceStream<R> {
    read: R,
    wire: std::sync::Arc<Wire>,
}

impl<R> DeviceStream<R> {
    pub(crate) fn new(read: R, wire: std::sync::Arc<Wire>) -> Self {
        Self { read, wire }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DeviceStream<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for DeviceStream<R> {
    /// Takes all of `buf` (tungstenite hands over whole frames, and a partial write could let
    /// a data frame in between) and writes it now if the wire is free.
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.wire.push_control(Bytes::copy_from_slice(buf));
        self.wire.flush(None);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The session's writer shuts the socket down after the last frame.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        put_header(&mut buf, OPCODE_BINARY, len);
        buf
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(header(0), [0x82, 0]);
        assert_eq!(header(125), [0x82, 125]);
        assert_eq!(header(126), [0x82, 126, 0, 126]);
        assert_eq!(header(0xffff), [0x82, 126, 0xff, 0xff]);
        assert_eq!(header(0x10000), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_frames_cut_long_reasons_at_a_character_boundary() {
        let frame = close_frame(4408, "idle timeout");
        assert_eq!(&frame[..4], &[0x88, 14, 0x11, 0x38]);
        assert_eq!(&frame[4..], b"idle timeout");
        let long = "é".repeat(100);
        let frame = close_frame(1000, &long);
        let payload = &frame[2..];
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn advance_crosses_frame_boundaries() {
        let mut pending: VecDeque<Bytes> =
            [Bytes::from_static(b"abc"), Bytes::from_static(b"de"), Bytes::from_static(b"fgh")].into();
        let mut offset = 0;
        advance(&mut pending, &mut offset, 2);
        assert_eq!((pending.len(), offset), (3, 2));
        advance(&mut pending, &mut offset, 2);
        assert_eq!((pending.len(), offset), (2, 1));
        advance(&mut pending, &mut offset, 4);
        assert!(pending.is_empty());
        assert_eq!(offset, 0);
    }
}
