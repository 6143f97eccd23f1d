//! The device registry's listing and last-seen times, and each device's durable operator
//! commands: the [`DeviceStore`] part of the store contract and its types.
//!
//! A registered device is a [`StoredDevice`] (written at login by [`AccountStore::put_device`]);
//! this part lists them with filters, records when they were last seen in batches, and keeps
//! a bounded queue of commands per device (lock, unlock, wipe, logout, resync), each moving
//! from pending to delivered to acknowledged.
//!
//! [`StoredDevice`]: super::StoredDevice
//! [`AccountStore::put_device`]: super::AccountStore::put_device

use super::{DeviceState, PartitionName, StoreResult, StoredDevice};

/// Most devices one [`DeviceStore::list_devices`] call returns: bounds one read.
pub const MAX_DEVICE_PAGE: usize = 1_000;

/// Commands kept per device: the oldest acknowledged ones are dropped past this, so that a
/// device an operator resyncs every day does not grow the store forever. Unacknowledged
/// commands are never dropped, so a device can hold more while offline.
pub const MAX_COMMANDS_PER_DEVICE: usize = 100;

/// What an operator asks of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceCommandKind {
    /// Lock the device: its Hellos are refused until unlocked; the device locks the app.
    Lock,
    /// Unlock the device (done by the server alone, never sent to the device).
    Unlock,
    /// The device deletes its local data and logs out.
    Wipe,
    /// The device forgets its session token and logs out.
    Logout,
    /// The device drops its partitions and syncs them again from cursor 0.
    Resync,
}

impl DeviceCommandKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [DeviceCommandKind; 5] = [
        DeviceCommandKind::Lock,
        DeviceCommandKind::Unlock,
        DeviceCommandKind::Wipe,
        DeviceCommandKind::Logout,
        DeviceCommandKind::Resync,
    ];

    /// Returns the kind's name, as stored and in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceCommandKind::Lock => "lock",
            DeviceCommandKind::Unlock => "unlock",
            DeviceCommandKind::Wipe => "wipe",
            DeviceCommandKind::Logout => "logout",
            DeviceCommandKind::Resync => "resync",
        }
    }

    /// Returns the kind named `name` ([`DeviceCommandKind::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Returns true for the kinds sent to the device as a `Command` frame (all but unlock).
    pub fn is_sent_to_device(self) -> bool {
        match self {
            DeviceCommandKind::Lock
            | DeviceCommandKind::Wipe
            | DeviceCommandKind::Logout
            | DeviceCommandKind::Resync => true,
            DeviceCommandKind::Unlock => false,
        }
    }
}

impl std::fmt::Display for DeviceCommandKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Stored, not yet written to a connection of the device.
    Pending,
    /// Written to a connection of the device, not acknowledged yet.
    Delivered,
    /// The device said it acted on it (or, for unlock, the server did).
    Acknowledged,
}

impl CommandState {
    /// Returns the state's name, as stored and in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Pending => "pending",
            CommandState::Delivered => "delivered",
            CommandState::Acknowledged => "acknowledged",
        }
    }

    /// Returns the state named `name` ([`CommandState::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [CommandState::Pending, CommandState::Delivered, CommandState::Acknowledged]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

impl std::fmt::Display for CommandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's command to one device, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCommand {
    /// The device it is for.
    pub client_id: String,
    /// Unique on the server; the device echoes it in `CommandAck`.
    pub command_id: String,
    /// Position in the device's command queue (assigned by the store, from 1).
    pub seq: u64,
    pub kind: DeviceCommandKind,
    /// The operator's reason, shown to the user.
    pub reason: String,
    /// When it was stored, in Unix milliseconds.
    pub created_ms: i64,
    pub state: CommandState,
    /// When it was first written to a connection of the device.
    pub delivered_ms: Option<i64>,
    /// When the device acknowledged it.
    pub acknowledged_ms: Option<i64>,
}

/// What storing a command does to its device's registry entry, in the same commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandEffect {
    /// The device's new state, when the command changes it (lock, unlock).
    pub set_state: Option<DeviceState>,
    /// Revokes every session token issued to the device so far (wipe, logout).
    pub revoke_tokens: bool,
}

/// Which devices [`DeviceStore::list_devices`] returns; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub user_id: Option<String>,
    pub state: Option<DeviceState>,
    pub platform: Option<String>,
    /// Only devices last seen strictly before this Unix millisecond.
    pub last_seen_before_ms: Option<i64>,
    /// Only devices last seen strictly after this Unix millisecond.
    pub last_seen_after_ms: Option<i64>,
}

impl DeviceFilter {
    /// Returns true when `device` passes every filter that is set.
    pub fn matches(&self, device: &StoredDevice) -> bool {
        self.user_id.as_ref().is_none_or(|user| *user == device.user_id)
            && self.state.is_none_or(|state| state == device.state)
            && self.platform.as_ref().is_none_or(|platform| *platform == device.platform)
            && self.last_seen_before_ms.is_none_or(|before| device.last_seen_ms < before)
            && self.last_seen_after_ms.is_none_or(|after| device.last_seen_ms > after)
    }
}

/// What a device said about itself in a Hello (`DeviceInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedDevice {
    pub platform: String,
    pub app_version: String,
    pub model: String,
}

/// That a device was seen, for [`DeviceStore::record_last_seen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDevice {
    pub client_id: String,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// What it reported about itself in a Hello since the last record, if it did.
    pub reported: Option<ReportedDevice>,
}

/// One page of [`DeviceStore::list_devices`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePage {
    /// Matching devices, by client id.
    pub devices: Vec<StoredDevice>,
    /// The client id to continue after, when more devices may match.
    pub next_after: Option<String>,
}

/// The device registry's listing and last-seen times, and devices' operator commands.
pub trait DeviceStore: Send + Sync + 'static {
    /// Returns up to `limit` (at most [`MAX_DEVICE_PAGE`]) devices matching `filter` whose
    /// client id sorts after `after`, by client id.
    fn list_devices(&self, filter: &DeviceFilter, after: Option<&str>, limit: usize) -> StoreResult<DevicePage>;

    /// Returns the cursors recorded for the device (see [`super::CursorStore`]), by partition.
    fn device_cursors(&self, client_id: &str) -> StoreResult<Vec<(PartitionName, u64)>>;

    /// Records when devices were last seen, and what they reported about themselves (an app
    /// updated since its login), in one transaction; a time older than the stored one is not
    /// recorded, and unknown devices are skipped. Last-seen times are advisory, so this may
    /// use a cheaper durability than a command.
    fn record_last_seen(&self, seen: &[SeenDevice]) -> StoreResult<()>;

    /// Stores `command` at the end of its device's queue (its `seq` is assigned) and applies
    /// `effect` to the device in the same durable commit; drops the device's oldest
    /// acknowledged commands past [`MAX_COMMANDS_PER_DEVICE`]. Returns the stored command,
    /// or `None` when the device is not registered (nothing is written).
    fn add_command(&self, command: &StoredCommand, effect: CommandEffect) -> StoreResult<Option<StoredCommand>>;

    /// Returns the device's commands, oldest first.
    fn commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>>;

    /// Returns the device's commands still to send (pending or delivered, of kinds sent to
    /// devices), oldest first.
    fn unacknowledged_commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>>;

    /// Marks the device's commands `command_ids` delivered at `at_ms` (those still pending;
    /// others are left as they are).
    fn mark_commands_delivered(&self, client_id: &str, command_ids: &[String], at_ms: i64) -> StoreResult<()>;

    /// Marks a command of the device acknowledged at `at_ms`; returns it as it is now, or
    /// `None` when the device has no command with that id. Acknowledging again changes
    /// nothing.
    fn acknowledge_command(&self, client_id: &str, command_id: &str, at_ms: i64) -> StoreResult<Option<StoredCommand>>;
}
