//! What the gateway sends devices: frame builders, and the open connections of each device,
//! through which mutation outcomes reach it (the domain's [`DeviceReplies`] port) and RPC
//! replies reach the connection that called ([`ConnectionReply`]).

use dashmap::DashMap;
use syncline_proto::v1::{self, ServerFrame, SyncStatus, server_frame};
use syncline_push::{EncodedFrame, Outbox};
use tokio::sync::broadcast;

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

/// The open connections of each device (by client id), and the user each connected device
/// belongs to. A device may briefly have several connections (a new one before the server
/// noticed the old one is gone, in any order): frames go to each, so the live one always gets
/// them. Each attach and detach is also announced to [`DeviceConnections::events`]
/// subscribers (the console's live stream).
pub struct DeviceConnections(DashMap<String, Vec<Outbox>>, DashMap<String, String>, broadcast::Sender<DeviceEvent>);

/// Connection events kept for slow subscribers of [`DeviceConnections::events`]; one that
/// falls further behind skips the oldest.
const DEVICE_EVENTS_BUFFER: usize = 256;

/// A device connection opened or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEvent {
    pub kind: DeviceEventKind,
    pub client_id: String,
    pub user_id: String,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

/// What happened to a device's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEventKind {
    Connected,
    Disconnected,
}

impl Default for DeviceConnections {
    fn default() -> Self {
        Self(DashMap::new(), DashMap::new(), broadcast::channel(DEVICE_EVENTS_BUFFER).0)
    }
}

impl DeviceConnections {
    /// Registers a connection of `client_id`, a device of `user_id` (after Welcome).
    pub(crate) fn attach(&self, client_id: &str, user_id: &str, outbox: &Outbox) {
        // Each connection detaches itself when it ends.
        self.0.entry(client_id.to_owned()).or_default().push(outbox.clone());
        self.1.insert(client_id.to_owned(), user_id.to_owned());
        self.announce(DeviceEventKind::Connected, client_id, user_id);
    }

    /// Forgets a connection of `client_id` (it closed).
    pub(super) fn detach(&self, client_id: &str, outbox: &Outbox) {
        if let Some(mut connections) = self.0.get_mut(client_id) {
            connections.retain(|connection| !connection.same_connection(outbox));
        }
        let user_id = self.1.get(client_id).map(|user| user.value().clone()).unwrap_or_default();
        if self.0.remove_if(client_id, |_, connections| connections.is_empty()).is_some() {
            self.1.remove(client_id);
        }
        self.announce(DeviceEventKind::Disconnected, client_id, &user_id);
    }

    fn announce(&self, kind: DeviceEventKind, client_id: &str, user_id: &str) {
        if self.2.receiver_count() > 0 {
            let at_ms = crate::auth::now_ms();
            // Nobody listening is not an error.
            let _ =
                self.2.send(DeviceEvent { kind, client_id: client_id.to_owned(), user_id: user_id.to_owned(), at_ms });
        }
    }

    /// Returns a receiver of every later connection opened or closed.
    pub fn events(&self) -> broadcast::Receiver<DeviceEvent> {
        self.2.subscribe()
    }

    /// Returns every device connected to this node, as (client id, user id).
    pub fn devices(&self) -> Vec<(String, String)> {
        self.1.iter().map(|entry| (entry.key().clone(), entry.value().clone())).collect()
    }

    /// Returns the connected devices of `user_id`.
    pub fn clients_of_user(&self, user_id: &str) -> Vec<String> {
        self.1.iter().filter(|entry| entry.value() == user_id).map(|entry| entry.key().clone()).collect()
    }

    /// Returns how many connections `client_id` has open.
    pub fn connections_of(&self, client_id: &str) -> usize {
        self.0.get(client_id).map_or(0, |connections| connections.len())
    }

    /// Ends every connection of `user_id`'s devices at once: a fatal Error of `class` with
    /// `message`, then the class's close code (an operator disabled or deleted the user).
    /// Returns how many connections were closed.
    pub async fn close_user(&self, user_id: &str, class: ErrorClass, message: &str) -> usize {
        let mut closed = 0;
        for client_id in self.clients_of_user(user_id) {
            let connections = self.0.get(&client_id).map(|entry| entry.value().clone()).unwrap_or_default();
            for outbox in connections {
                let _ = outbox.send_frame(error_frame(class, message, true)).await;
                outbox.close(class.close_code(), message.to_owned());
                closed += 1;
            }
        }
        closed
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
