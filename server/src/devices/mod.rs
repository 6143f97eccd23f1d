//! Device management: the registry as operators see it, and operator commands to devices
//! (lock, unlock, wipe, logout, resync). The only owner of this logic: the gateway and the
//! admin API call [`DeviceManagement`], never the store's command tables.
//!
//! A command is stored first, with its effect on the device's registry entry in the same
//! commit (lock and unlock set the device's state; wipe and logout revoke its session
//! tokens), then sent as a `Command` frame to the device's open connections on this node
//! through the gateway ([`CommandDelivery`]). A device that is offline gets it at its next
//! Hello (the gateway asks [`DeviceManagement::unacknowledged`] right after Welcome, or before
//! refusing a locked device). A command is *delivered* once written to a connection and
//! *acknowledged* when the device says so (`CommandAck`); until then it is sent again after
//! each Welcome (devices act on a command id once). Unlock is the server's alone: it is
//! stored acknowledged and never sent.
//!
//! - `last_seen.rs`: [`LastSeenRecorder`], devices' last-seen times batched into the store.
//! - `commit_times.rs`: [`CommitTimes`], when each partition's recent commits happened (a
//!   device's lag in milliseconds).

mod commit_times;
mod last_seen;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use syncline_proto::v1::{self, CommandKind, ServerFrame, server_frame};

pub use self::commit_times::{COMMITS_REMEMBERED, CommitTimes, LagTime};
pub use self::last_seen::LastSeenRecorder;
use crate::auth::now_ms;
use crate::error::ErrorClass;
use crate::storage::{
    CommandEffect, CommandState, DeviceCommandKind, DeviceFilter, DevicePage, DeviceState, PartitionName,
    ReportedDevice, Store, StoreError, StoredCommand, StoredDevice,
};

/// Longest command reason accepted, in bytes: shown to a user, not a document.
pub const MAX_REASON_BYTES: usize = 1_024;

/// Most devices one listing returns when the caller does not say.
pub const DEFAULT_DEVICE_PAGE: usize = 100;

/// What sending frames to a device's connections returns: how many connections took it.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = usize> + Send + 'a>>;

/// The gateway's side of command delivery: writes a frame to every open connection of a
/// device on this node.
pub trait CommandDelivery: Send + Sync + 'static {
    /// Writes `frame` to each open connection of `client_id`; returns how many took it
    /// (0: the device is not connected here).
    fn deliver<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> DeliveryFuture<'a>;

    /// Returns how many connections `client_id` has open on this node.
    fn connections_of(&self, client_id: &str) -> usize;
}

/// Delivery where no device is connected: device management over a data directory that no
/// server runs on (the CLI). Commands stay pending until the device's next connection.
pub struct NoConnections;

impl CommandDelivery for NoConnections {
    fn deliver<'a>(&'a self, _client_id: &'a str, _frame: ServerFrame) -> DeliveryFuture<'a> {
        Box::pin(std::future::ready(0))
    }

    fn connections_of(&self, _client_id: &str) -> usize {
        0
    }
}

/// Why a device management call failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No device is registered under this client id.
    #[error("no device has client id {client_id:?}")]
    UnknownDevice { client_id: String },
    /// The command's reason is longer than [`MAX_REASON_BYTES`].
    #[error("a command's reason is at most {MAX_REASON_BYTES} bytes (got {bytes})")]
    ReasonTooLong { bytes: usize },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeviceError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            DeviceError::UnknownDevice { .. } => ErrorClass::NotFound,
            DeviceError::ReasonTooLong { .. } => ErrorClass::BadRequest,
            DeviceError::Store(error) => error.class(),
        }
    }
}

/// The registry's operator view and operator commands (see the module docs).
pub struct DeviceManagement {
    store: Arc<dyn Store>,
    delivery: Arc<dyn CommandDelivery>,
    last_seen: LastSeenRecorder,
    /// Recent commit times of partitions (fed by the store's commits).
    commit_times: Arc<CommitTimes>,
    /// Commands sent so far by this node: a session that read a device's commands before it
    /// could receive new ones compares it to know whether to read again.
    sent: AtomicU64,
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))?
}

/// Returns a new random command id (128 bits, hex).
fn new_command_id() -> String {
    crate::auth::new_client_id()
}

impl DeviceManagement {
    /// Returns the service over `store`, delivering commands through `delivery`.
    pub fn new(store: Arc<dyn Store>, delivery: Arc<dyn CommandDelivery>, commit_times: Arc<CommitTimes>) -> Self {
        Self { store, delivery, last_seen: LastSeenRecorder::default(), commit_times, sent: AtomicU64::new(0) }
    }

    /// Returns how long ago the first change of `partition` after `cursor` committed.
    pub fn lag_time(&self, partition: &PartitionName, cursor: u64) -> Option<LagTime> {
        self.commit_times.lag(partition, cursor, now_ms())
    }

    /// Stores a command for `client_id` with its effect, then sends it to the device's open
    /// connections on this node (unlock is never sent). Returns the command as it stands
    /// after that (delivered when a connection took it).
    pub async fn send(
        &self,
        client_id: &str,
        kind: DeviceCommandKind,
        reason: &str,
    ) -> Result<StoredCommand, DeviceError> {
        if reason.len() > MAX_REASON_BYTES {
            return Err(DeviceError::ReasonTooLong { bytes: reason.len() });
        }
        let now = now_ms();
        let (state, effect) = match kind {
            DeviceCommandKind::Lock => {
                (CommandState::Pending, CommandEffect { set_state: Some(DeviceState::Locked), revoke_tokens: false })
            }
            DeviceCommandKind::Unlock => (
                CommandState::Acknowledged,
                CommandEffect { set_state: Some(DeviceState::Active), revoke_tokens: false },
            ),
            DeviceCommandKind::Wipe | DeviceCommandKind::Logout => {
                (CommandState::Pending, CommandEffect { set_state: None, revoke_tokens: true })
            }
            DeviceCommandKind::Resync => (CommandState::Pending, CommandEffect::default()),
        };
        let command = StoredCommand {
            client_id: client_id.to_owned(),
            command_id: new_command_id(),
            seq: 0,
            kind,
            reason: reason.to_owned(),
            created_ms: now,
            state,
            delivered_ms: None,
            acknowledged_ms: (state == CommandState::Acknowledged).then_some(now),
        };
        let store = self.store.clone();
        let stored = blocking(move || store.add_command(&command, effect)).await?;
        let stored = stored.ok_or_else(|| DeviceError::UnknownDevice { client_id: client_id.to_owned() })?;
        tracing::info!(client_id, command_id = %stored.command_id, kind = %kind, "device command stored");
        self.sent.fetch_add(1, Ordering::AcqRel);
        let Some(frame) = command_frame(&stored) else { return Ok(stored) };
        if self.delivery.deliver(client_id, frame).await == 0 {
            return Ok(stored);
        }
        let delivered_at = now_ms();
        self.mark_delivered(client_id, std::slice::from_ref(&stored.command_id)).await?;
        Ok(StoredCommand { state: CommandState::Delivered, delivered_ms: Some(delivered_at), ..stored })
    }

    /// Returns the number of commands sent so far (see [`DeviceManagement::unacknowledged`]).
    pub fn sent_so_far(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Returns the commands `client_id` has not acknowledged, oldest first, as frames to
    /// send, with their ids (but a lock of a device no longer locked).
    pub async fn unacknowledged(&self, client_id: &str) -> Result<Vec<(String, ServerFrame)>, DeviceError> {
        let store = self.store.clone();
        let client = client_id.to_owned();
        let commands = blocking(move || {
            let mut commands = store.unacknowledged_commands(&client)?;
            // A later unlock supersedes a lock the device has not acknowledged: sending it
            // now would lock an app the server lets in.
            if commands.iter().any(|command| command.kind == DeviceCommandKind::Lock)
                && store.device(&client)?.is_none_or(|device| device.state != DeviceState::Locked)
            {
                commands.retain(|command| command.kind != DeviceCommandKind::Lock);
            }
            Ok(commands)
        })
        .await?;
        Ok(commands
            .iter()
            .filter_map(|command| command_frame(command).map(|frame| (command.command_id.clone(), frame)))
            .collect())
    }

    /// Records that commands of `client_id` were written to one of its connections.
    pub async fn mark_delivered(&self, client_id: &str, command_ids: &[String]) -> Result<(), DeviceError> {
        if command_ids.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let (client, ids) = (client_id.to_owned(), command_ids.to_vec());
        Ok(blocking(move || store.mark_commands_delivered(&client, &ids, now_ms())).await?)
    }

    /// Records the device's acknowledgement of a command; returns the command, or `None`
    /// when the device has none with that id (ignored, as device.proto says).
    pub async fn acknowledge(&self, client_id: &str, command_id: &str) -> Result<Option<StoredCommand>, DeviceError> {
        let store = self.store.clone();
        let (client, id) = (client_id.to_owned(), command_id.to_owned());
        let acknowledged = blocking(move || store.acknowledge_command(&client, &id, now_ms())).await?;
        if let Some(command) = &acknowledged {
            tracing::info!(client_id, command_id, kind = %command.kind, "device command acknowledged");
        }
        Ok(acknowledged)
    }

    /// Returns the device's commands, oldest first.
    pub async fn commands(&self, client_id: &str) -> Result<Vec<StoredCommand>, DeviceError> {
        self.device(client_id).await?;
        let store = self.store.clone();
        let client = client_id.to_owned();
        Ok(blocking(move || store.commands(&client)).await?)
    }

    /// Returns a registered device, with its last-seen time as this node knows it.
    pub async fn device(&self, client_id: &str) -> Result<StoredDevice, DeviceError> {
        let store = self.store.clone();
        let client = client_id.to_owned();
        let device = blocking(move || store.device(&client)).await?;
        let mut device = device.ok_or_else(|| DeviceError::UnknownDevice { client_id: client_id.to_owned() })?;
        if let Some(seen) = self.last_seen.unflushed(client_id) {
            device.last_seen_ms = device.last_seen_ms.max(seen);
        }
        Ok(device)
    }

    /// Returns how many connections the device has open on this node.
    pub fn live_connections(&self, client_id: &str) -> usize {
        self.delivery.connections_of(client_id)
    }

    /// Lists devices matching `filter`, `limit` at a time (0: [`DEFAULT_DEVICE_PAGE`]),
    /// continuing after client id `after`.
    pub async fn list(
        &self,
        filter: DeviceFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DevicePage, DeviceError> {
        let limit = if limit == 0 { DEFAULT_DEVICE_PAGE } else { limit };
        let store = self.store.clone();
        Ok(blocking(move || store.list_devices(&filter, after.as_deref(), limit)).await?)
    }

    /// Returns the partitions the device has acked, with the cursor it holds each at (the
    /// last acked, flushed or not), by partition.
    pub async fn cursors(
        &self,
        client_id: &str,
        unflushed: Vec<(PartitionName, u64)>,
    ) -> Result<Vec<(PartitionName, u64)>, DeviceError> {
        let store = self.store.clone();
        let client = client_id.to_owned();
        let stored = blocking(move || store.device_cursors(&client)).await?;
        let mut cursors: std::collections::BTreeMap<PartitionName, u64> = stored.into_iter().collect();
        for (partition, cursor) in unflushed {
            let known = cursors.entry(partition).or_insert(cursor);
            *known = (*known).max(cursor);
        }
        Ok(cursors.into_iter().collect())
    }

    /// Notes that `client_id` was seen now (a Hello or any frame); written by
    /// [`DeviceManagement::flush_last_seen`], never per frame.
    pub fn seen(&self, client_id: &str) {
        self.last_seen.record(client_id, now_ms());
    }

    /// Notes that `client_id` resumed a session now reporting `reported` about itself (a
    /// login stores it at once; a resumed session through the next flush).
    pub fn seen_reporting(&self, client_id: &str, reported: ReportedDevice) {
        self.last_seen.report(client_id, now_ms(), reported);
    }

    /// Writes the last-seen times noted since the previous flush; returns how many.
    pub fn flush_last_seen(&self) -> Result<usize, StoreError> {
        self.last_seen.flush(self.store.as_ref())
    }
}

/// Returns the `Command` frame of a command sent to devices (`None` for unlock).
pub fn command_frame(command: &StoredCommand) -> Option<ServerFrame> {
    let kind = match command.kind {
        DeviceCommandKind::Lock => CommandKind::Lock,
        DeviceCommandKind::Wipe => CommandKind::Wipe,
        DeviceCommandKind::Logout => CommandKind::Logout,
        DeviceCommandKind::Resync => CommandKind::Resync,
        DeviceCommandKind::Unlock => return None,
    };
    Some(ServerFrame {
        msg: Some(server_frame::Msg::Command(v1::Command {
            kind: kind as i32,
            reason: command.reason.clone(),
            command_id: command.command_id.clone(),
        })),
    })
}
