//! The node bus: fan-out of committed frames across the nodes of a cluster.
//!
//! A node that commits a change publishes one frame per partition run through its
//! [`NodeBus`], with the gap-free sequence range `from..=to` it covers. Every node's hub then
//! queues it to that node's live subscribers of the partition. Two implementations:
//!
//! - [`in_process`]: the [`Hub`](crate::Hub) itself is the bus of a single node: a publish is
//!   a hub publish, nothing more.
//! - [`redis`]: Redis pub/sub ([`RedisBus`]). One message per partition run on a channel named
//!   after the key ([`BusKey`], [`channel_name`]), carrying a small header and the frame's
//!   protobuf encoding ([`message`]), so receiving nodes decode it once and never re-encode it.
//!   Each node subscribes to exactly the keys its hub has subscribers for, which the hub
//!   reports through [`KeyInterest`]: on one server over one pub/sub connection; on a Redis
//!   Cluster with sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, `sharded`), each channel on the
//!   primary owning its key's slot, so a message is sent once, to one primary.
//!
//! No loss, no duplicate: the log is the truth and the bus only an optimisation. Whatever
//! the bus loses is revealed, and the affected subscribers catch up from the log:
//!
//! - A frame whose `from` does not follow what a live subscriber has demotes it (the hub's
//!   rule); a frame it already has (`to` before its next sequence, read from the log by its
//!   session) is skipped.
//! - Subscription before go-live: a session joins the hub, reads the log, then goes live.
//!   A frame published after its read but before the node's SUBSCRIBE took effect would be
//!   lost with nothing to reveal it. Rule: once the subscription is confirmed, the bus calls
//!   [`Hub::bus_followed`](crate::Hub::bus_followed), which demotes the key's live
//!   subscribers and makes its catching-up ones read the log once more before `go_live` can
//!   succeed. Every subscriber therefore goes live, for good, on a read that started after
//!   the subscription was confirmed. Sessions never wait for the bus: before confirmation
//!   they go live as usual, and are demoted once (in the common case the SUBSCRIBE is
//!   confirmed before the session's first read completes, which costs one more log read).
//! - A lost pub/sub connection (a network failure, a Redis restart, or Redis dropping a slow
//!   subscriber over `client-output-buffer-limit pubsub`), on a Redis Cluster also a lost
//!   primary connection or a slot moved to another primary: the bus reconnects, subscribes to
//!   every affected key again and treats each confirmation as above, so every live
//!   subscriber catches up from the log.
//! - A publish that cannot be sent (the publisher's queue is full or Redis refused it) is
//!   remembered per key, and a *gap* message for it is published as soon as Redis takes
//!   commands again: receivers demote the live subscribers that have not received it.
//! - A node's own commits: delivered to its hub directly when published (the lowest latency
//!   for local devices, and no decode), and ignored when they come back through Redis (each
//!   message names its origin node).

pub mod in_process;
pub mod message;
pub mod redis;
mod sharded;

use std::hash::Hash;
use std::sync::Arc;

use crate::codec::EncodedFrame;

pub use self::message::{BusMessage, BusMessageError};
pub use self::redis::{
    BusStats, DEFAULT_CHANNEL_PREFIX, DEFAULT_PING_INTERVAL, RedisBus, RedisBusConfig, RedisBusError, RedisBusServers,
};
pub use crate::hub::KeyInterest;

/// Fans committed frames out to the hubs of every node (this one's included).
pub trait NodeBus<K>: Send + Sync {
    /// Publishes `frame`, covering sequences `from..=to` of `key`, committed on this node.
    /// Frames of one key are published in commit order. Never blocks: what cannot be sent is
    /// made up for by the subscribers catching up from the log.
    fn publish(&self, key: &K, from: u64, to: u64, frame: &Arc<EncodedFrame>);
}

/// A hub key that has a name on the bus: the same bytes on every node, different for
/// different keys.
pub trait BusKey: Eq + Hash + Clone + Send + Sync + 'static {
    /// Appends the key's name to `out`.
    fn write_bus_name(&self, out: &mut Vec<u8>);
}

/// Returns the channel of `key`: `prefix`, then its name in braces, a hash tag, so that on
/// Redis Cluster sharded pub/sub maps the key to the slot of its name.
pub fn channel_name<K: BusKey>(prefix: &[u8], key: &K) -> Vec<u8> {
    let mut channel = Vec::with_capacity(prefix.len() + 32);
    channel.extend_from_slice(prefix);
    channel.push(b'{');
    key.write_bus_name(&mut channel);
    channel.push(b'}');
    channel
}

#[cfg(test)]
mod tests;
