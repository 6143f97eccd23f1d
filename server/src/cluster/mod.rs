//! Cluster mode's control channel: what one node does to devices connected to another.
//!
//! Partition changes reach every node through push's node bus; everything else addressed to
//! a device or a user goes through this channel, one Redis pub/sub channel all nodes follow:
//!
//! - an operator disables or deletes a user: every node closes that user's connections
//!   ([`ControlMessage::CloseUser`]);
//! - a mutation's outcome is decided on a node the device is not connected to: the node it
//!   is connected to queues the `MutationResult` ([`ControlMessage::ToDevice`]);
//! - an operator's command is stored on a node the device is not connected to: the node it is
//!   connected to sends the device's unacknowledged commands and records them delivered
//!   ([`ControlMessage::DeliverCommands`]);
//! - a node notices that a channel changed a source's schema: every node tells its devices
//!   of the source to sync it again ([`ControlMessage::SchemaChanged`]).
//!
//! Per-user connection caps hold across the nodes too ([`ClusterSessions`]).
//!
//! Work that one node at a time must do (follow a channel's feed, dispatch a device's
//! mutations, compact) is done under a [`lease`] with a fencing token, and moves to another
//! node within the lease's TTL when its holder dies; which partitions devices follow
//! anywhere in the cluster is shared for capture by [`subscriptions`].
//!
//! [`DeviceRelay`] is what the services hold instead of the node's `DeviceConnections`: it
//! acts here first and, in cluster mode, tells the other nodes when the device or user is
//! not (only) here. [`follow`] runs the receiving side on each node.
//!
//! Delivery is at most once, like the pub/sub it rides on. Nothing is lost for good when a
//! message is: a device resends its unanswered mutations after each Welcome and is answered
//! from the stored outcome, gets its unacknowledged commands after each Welcome, and a
//! disabled or deleted user is refused at their next Hello on every node (the store is
//! shared), and each node's own schema check notices a change within
//! `grpc.describe_interval_secs`. The channel only makes these take effect at once.

pub mod lease;
mod link;
mod message;
mod redis;
mod sessions;
pub mod subscriptions;

use std::sync::Arc;

use syncline_proto::v1::ServerFrame;

pub use self::lease::{Lease, Leases};
pub use self::link::{RedisLink, pubsub_url};
pub use self::message::{ControlMessage, ControlMessageError};
pub use self::redis::{ControlPublisher, ControlTargets, apply, follow};
pub use self::sessions::{BEAT_INTERVAL, ClusterSessions, NODE_TIMEOUT};
use crate::devices::{CommandDelivery, DeliveryFuture};
use crate::error::ErrorClass;
use crate::gateway::DeviceConnections;
use crate::reply::{DeviceReplies, ReplyFuture};

/// Acts on devices and users: on this node's connections, and, in cluster mode, on every
/// other node's through the control channel.
pub struct DeviceRelay {
    connections: Arc<DeviceConnections>,
    /// `None` on a single node.
    peers: Option<Arc<ControlPublisher>>,
}

impl DeviceRelay {
    /// Returns the relay of a single node: this node's connections only.
    pub fn local(connections: Arc<DeviceConnections>) -> Self {
        Self { connections, peers: None }
    }

    /// Returns the relay of a cluster node: this node's connections, then the other nodes'.
    pub fn clustered(connections: Arc<DeviceConnections>, peers: Arc<ControlPublisher>) -> Self {
        Self { connections, peers: Some(peers) }
    }

    /// Ends every connection of `user_id`'s devices, here and on every other node (a fatal
    /// Error of `class` with `message`, then its close code). Returns how many connections
    /// were closed on this node.
    pub async fn close_user(&self, user_id: &str, class: ErrorClass, message: &str) -> usize {
        let closed = self.connections.close_user(user_id, class, message).await;
        if let Some(peers) = &self.peers {
            let message = ControlMessage::CloseUser { user_id: user_id.to_owned(), class, message: message.to_owned() };
            peers.publish(&message).await;
        }
        closed
    }
}

impl DeviceReplies for DeviceRelay {
    fn to_device<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> ReplyFuture<'a> {
        Box::pin(async move {
            match &self.peers {
                Some(peers) if self.connections.connections_of(client_id) == 0 => {
                    peers.publish(&ControlMessage::ToDevice { client_id: client_id.to_owned(), frame }).await;
                }
                _ => self.connections.to_device(client_id, frame).await,
            }
        })
    }
}

impl CommandDelivery for DeviceRelay {
    fn deliver<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let delivered = self.connections.deliver(client_id, frame).await;
            if delivered == 0
                && let Some(peers) = &self.peers
            {
                // The node the device is connected to sends it and records it delivered.
                peers.publish(&ControlMessage::DeliverCommands { client_id: client_id.to_owned() }).await;
            }
            delivered
        })
    }

    fn connections_of(&self, client_id: &str) -> usize {
        self.connections.connections_of(client_id)
    }
}

#[cfg(test)]
mod tests;
