//! What the gateway sends devices: frame builders, and the open connections of each device,
//! through which mutation outcomes reach it (the domain's [`DeviceReplies`] port) and RPC
//! replies reach the connection that called ([`ConnectionReply`]).

use dashmap::DashMap;
use syncline_proto::v1::{self, ServerFrame, SyncStatus, server_frame};
use syncline_push::{EncodedFrame, Outbox};

use crate::devices::{CommandDelivery, DeliveryFuture};
use crate::error::ErrorClass;
use crate::reply::{ConnectionReply, DeviceReplies, ReplyFuture};
use crate::storage::{PartitionName, PartitionState};

pub(super) fn frame(msg: server_frame::Msg) -> ServerFrame {
    ServerFrame { msg: Some(msg) }
}

pub(super) fn sync_state(
    partition: &PartitionName,
    status: SyncStatus,
    cursor: u64,
    state: &PartitionState,
) -> ServerFrame {
    frame(server_frame::Msg::SyncState(v1::SyncState {
        source: partition.source.clone(),
        key: partition.key.clone(),
        status: status as i32,
        cursor,
        total: state.total,
        checksum: state.checksum,
        error: None,
    }))
}

/// Returns a non-fatal `Error` of `class` about partition `source`/`key` (empty when it is
/// about none).
pub(super) fn wire_error(class: ErrorClass, message: impl Into<String>, source: &str, key: &str) -> v1::Error {
    v1::Error {
        code: class.error_code() as i32,
        message: message.into(),
        fatal: false,
        source: source.to_owned(),
        key: key.to_owned(),
    }
}

/// Returns an `Error` frame about partition `source`/`key`.
pub(super) fn partition_error(source: &str, key: &str, class: ErrorClass, message: impl Into<String>) -> ServerFrame {
    frame(server_frame::Msg::Error(wire_error(class, message, source, key)))
}

/// Returns an `Error` frame about the session.
pub(super) fn error_frame(class: ErrorClass, message: impl Into<String>, fatal: bool) -> ServerFrame {
    frame(server_frame::Msg::Error(v1::Error { fatal, ..wire_error(class, message, "", "") }))
}

/// The open connections of each device. A device may briefly have several (a new one before
/// the server noticed the old one is gone, in any order): frames go to each, so the live one
/// always gets them.
#[derive(Default)]
pub struct DeviceConnections(DashMap<String, Vec<Outbox>>);

impl DeviceConnections {
    /// Registers a connection of `client_id` (after Welcome).
    pub(super) fn attach(&self, client_id: &str, outbox: &Outbox) {
        // Each connection detaches itself when it ends.
        self.0.entry(client_id.to_owned()).or_default().push(outbox.clone());
    }

    /// Forgets a connection of `client_id` (it closed).
    pub(super) fn detach(&self, client_id: &str, outbox: &Outbox) {
        if let Some(mut connections) = self.0.get_mut(client_id) {
            connections.retain(|connection| !connection.same_connection(outbox));
        }
        self.0.remove_if(client_id, |_, connections| connections.is_empty());
    }
}

impl DeviceReplies for DeviceConnections {
    fn to_device<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> ReplyFuture<'a> {
        Box::pin(async move {
            let connections = self.0.get(client_id).map(|entry| entry.value().clone());
            if let Some(connections) = connections {
                let frame = EncodedFrame::new(frame);
                for outbox in connections {
                    let _ = outbox.send(frame.clone()).await;
                }
            }
        })
    }
}

impl CommandDelivery for DeviceConnections {
    fn deliver<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let connections = self.0.get(client_id).map(|entry| entry.value().clone());
            let mut delivered = 0;
            if let Some(connections) = connections {
                let frame = EncodedFrame::new(frame);
                for outbox in connections {
                    if outbox.send(frame.clone()).await.is_ok() {
                        delivered += 1;
                    }
                }
            }
            delivered
        })
    }

    fn connections_of(&self, client_id: &str) -> usize {
        self.0.get(client_id).map_or(0, |entry| entry.len())
    }
}

/// One connection, as the RPC router's reply port.
pub(super) struct ConnectionReplies(pub(super) Outbox);

impl ConnectionReply for ConnectionReplies {
    fn reply(&self, frame: ServerFrame) -> ReplyFuture<'_> {
        Box::pin(async move {
            let _ = self.0.send_frame(frame).await;
        })
    }
}
