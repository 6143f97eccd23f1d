//! Syncline's transport: it moves encoded frames between devices and the server and knows
//! nothing of records, cursors or channels.
//!
//! Modules, each above the ones it uses (no module imports one that imports it back):
//!
//! - [`codec`]: WebSocket messages ⇄ `ClientFrame`/`ServerFrame` (protobuf or canonical
//!   JSON), encode-once shared frames. Pure functions, no I/O.
//! - [`outbox`]: a connection's sending side, the [`Outbox`]: its bounded outbound queue
//!   (frames and bytes), wakeups, close requests and the state the session, the sweeper and
//!   the hub share about the connection.
//! - [`heartbeat`]: the one sweeper per listener that pings every connection, closes silent
//!   ones (4408), expires late handshakes and closes everything at shutdown (1012).
//! - [`session`]: one session per connection (reader + coalescing writer) over any
//!   `Sink`/`Stream` of WebSocket messages, the [`SessionHandler`] trait the server
//!   implements, why a session ended ([`SessionEnd`]) and its limits ([`SessionConfig`]).
//! - [`hub`]: partition → subscribers, encode-once fan-out into the outboxes' bounded
//!   queues (inline or by tracked sweeper tasks with bounded queues), demotion of slow
//!   consumers to catch-up.
//! - [`bus`]: the node bus, fan-out of committed frames across nodes ([`NodeBus`]): the
//!   hub itself on a single node, Redis pub/sub ([`RedisBus`]) in a cluster; gaps, lost
//!   connections and unconfirmed subscriptions make subscribers catch up from the log.
//! - [`listener`]: TCP/TLS accept, WebSocket upgrade (path, subprotocol, connection cap)
//!   with tuned buffers, one session task per connection on the server's tracker.
//! - [`events`]: connection lifecycle logging and counters.
//! - [`stats`]: the wire counters of a listener ([`WireStats`]): frames in and out by type,
//!   bytes pushed, push lag from commit to socket write; lock-free, striped per thread.
//!
//! The `test-util` feature adds what tests and benches of other crates need to drive the
//! hub without sessions (`Outbox::for_test` and friends); production builds leave it off.

pub mod bus;
pub mod codec;
pub mod events;
pub mod heartbeat;
pub mod hub;
pub mod listener;
pub mod outbox;
pub mod session;
pub mod stats;

pub use bus::{BusKey, NodeBus, RedisBus, RedisBusConfig};
pub use codec::{CodecError, EncodedFrame, FrameFormat};
pub use heartbeat::Heartbeats;
pub use hub::{Hub, KeyInterest, LagCensus, PublishOutcome, Subscription};
pub use listener::handoff::{HttpConnections, HttpHandoff, HttpStream};
pub use listener::{ConnectionCount, ListenerConfig, SessionFactory};
pub use outbox::{ConnectionClosed, Outbox};
pub use session::{SessionConfig, SessionEnd, SessionHandler};
pub use stats::{WireSnapshot, WireStats};
