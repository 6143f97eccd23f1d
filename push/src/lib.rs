//! Syncline's transport: it moves encoded frames between devices and the server and knows
//! nothing of records, cursors or channels.
//!
//! - [`codec`]: WebSocket messages ⇄ `ClientFrame`/`ServerFrame` (protobuf or canonical
//!   JSON), encode-once shared frames.
//! - [`session`]: one session per connection (reader + coalescing writer), heartbeats, idle
//!   timeout, handshake deadline, the [`SessionHandler`] trait the server implements and its
//!   [`Outbox`].
//! - [`heartbeat`]: one shared sweeper for every connection's pings, idle timeout and
//!   handshake deadline.
//! - [`hub`]: partition → subscribers, encode-once fan-out into bounded queues, demotion
//!   of slow consumers to catch-up.
//! - [`listener`]: TCP/TLS accept, WebSocket upgrade with tuned buffers, connection caps.
//! - [`events`]: connection lifecycle logging and counters.

pub mod codec;
pub mod events;
pub mod heartbeat;
pub mod hub;
pub mod listener;
pub mod session;

pub use codec::{CodecError, EncodedFrame, FrameFormat};
pub use heartbeat::Heartbeats;
pub use hub::{Hub, PublishOutcome, Subscription};
pub use listener::{ConnectionCount, ListenerConfig, SessionFactory};
pub use session::{ConnectionClosed, Outbox, SessionConfig, SessionEnd, SessionHandler};
