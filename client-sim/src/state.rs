//! The observable state of a device: connection phase, partition summaries and counters,
//! published through a `tokio::sync::watch` so tests and load runs can wait for conditions
//! without polling.

use std::{collections::BTreeMap, collections::BTreeSet, fmt};

use syncline_proto::v1::ErrorCode;

use crate::replica::PartitionId;

/// Where a device's connection stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConnectionPhase {
    /// Opening a connection.
    #[default]
    Connecting,
    /// Connected; `Hello` sent, waiting for `Welcome`.
    Handshaking,
    /// The session is open (`Welcome` received).
    Ready,
    /// Disconnected; waiting before the next attempt.
    Reconnecting,
    /// Signed out: an operator's lock, wipe or logout, or a refused login of a locked device
    /// or user (close 4003). The device does not reconnect until the app logs in again
    /// ([`crate::DeviceHandle::login`]); [`DeviceState::is_locked`] tells a lock apart.
    SignedOut(StopReason),
    /// The device has stopped for good.
    Stopped(StopReason),
}

/// Why a device stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The app asked ([`crate::DeviceHandle::stop`], or the handle was dropped).
    Requested,
    /// The server closed with 1000 (logout, or the server ended the session normally).
    ClosedByServer {
        /// The close reason text.
        reason: String,
    },
    /// Credentials were refused (close 4001 after a password login).
    Unauthenticated {
        /// The server's message.
        reason: String,
    },
    /// The device or user is locked (close 4003).
    Forbidden {
        /// The server's message.
        reason: String,
    },
    /// The server does not speak this device's protocol version (close 4426): the app must
    /// be updated before it connects again.
    UpgradeRequired {
        /// The server's message (which names the version it speaks).
        reason: String,
    },
    /// An operator's command ended the session (lock, wipe or logout).
    Command {
        /// Which command.
        kind: StopCommand,
        /// The command's reason text.
        reason: String,
    },
    /// The device's configuration cannot work (bad URL or TLS settings).
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
}

/// The operator commands that stop a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCommand {
    /// `COMMAND_KIND_LOCK`: the app is locked until the user authenticates again.
    Lock,
    /// `COMMAND_KIND_WIPE`: local data was deleted.
    Wipe,
    /// `COMMAND_KIND_LOGOUT`: the session token was forgotten.
    Logout,
}

impl StopReason {
    /// Returns true for the stops after which the device waits for the app to log in again
    /// ([`ConnectionPhase::SignedOut`]) rather than ending.
    pub fn waits_for_login(&self) -> bool {
        match self {
            StopReason::Command { .. } | StopReason::Forbidden { .. } => true,
            StopReason::Requested
            | StopReason::ClosedByServer { .. }
            | StopReason::Unauthenticated { .. }
            | StopReason::UpgradeRequired { .. }
            | StopReason::InvalidConfig { .. } => false,
        }
    }

    /// Returns true for stops that are failures rather than requests.
    pub fn is_error(&self) -> bool {
        match self {
            StopReason::Requested | StopReason::ClosedByServer { .. } | StopReason::Command { .. } => false,
            StopReason::Unauthenticated { .. }
            | StopReason::Forbidden { .. }
            | StopReason::UpgradeRequired { .. }
            | StopReason::InvalidConfig { .. } => true,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Requested => write!(f, "stopped by the app"),
            StopReason::ClosedByServer { reason } => write!(f, "closed by the server: {reason}"),
            StopReason::Unauthenticated { reason } => write!(f, "unauthenticated: {reason}"),
            StopReason::Forbidden { reason } => write!(f, "forbidden: {reason}"),
            StopReason::UpgradeRequired { reason } => write!(f, "upgrade required: {reason}"),
            StopReason::Command { kind, reason } => {
                write!(f, "operator command {kind:?}: {reason}")
            }
            StopReason::InvalidConfig { reason } => write!(f, "invalid configuration: {reason}"),
        }
    }
}

/// A partition as the device currently holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The sequence the device has applied.
    pub cursor: u64,
    /// Records the device holds.
    pub total: u64,
    /// Checksum over the device's records.
    pub checksum: u64,
    /// True once the server reported the partition caught up on this connection and the
    /// checksum matched; false again while catching up after a gap or resync.
    pub caught_up: bool,
    /// The subscription's error, when it failed.
    pub error: Option<(ErrorCode, String)>,
}

/// Counters of what a device saw and did, across reconnects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Server frames received and decoded.
    pub frames_received: u64,
    /// Partitions whose data came from a bulk file (downloaded, checked and swapped in).
    pub bulk_syncs: u64,
    /// Catch-up pages (`Changes.page > 0`) applied.
    pub pages: u64,
    /// Live pushes (`Changes.page == 0`) applied.
    pub live_pushes: u64,
    /// Pages skipped because their range was already applied.
    pub duplicates: u64,
    /// Frames that did not follow the cursor: log gaps, out-of-order snapshot pages, and
    /// `SyncState`s at another cursor (including stale ones of a subscription just replaced).
    pub gaps: u64,
    /// Times the device's total or checksum disagreed with the server's.
    pub checksum_mismatches: u64,
    /// Times a partition was dropped and synced again from cursor 0.
    pub resyncs: u64,
    /// Times the server said a source's schema changed (each also counts as a resync).
    pub schema_changes: u64,
    /// Times a partition was resubscribed from its cursor after a gap.
    pub resubscribes: u64,
    /// Acks sent.
    pub acks_sent: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Connection attempts that failed before the WebSocket was open.
    pub connect_failures: u64,
    /// Frames about partitions the device did not subscribe to on that connection, and
    /// mutation answers about mutations it does not hold.
    pub unexpected_frames: u64,
    /// `Mutate` frames sent, resends included.
    pub mutations_sent: u64,
    /// `Mutate` frames of mutations sent before (on an earlier connection or run).
    pub mutations_resent: u64,
    /// Mutations the server acknowledged as durably queued (once per mutation).
    pub mutations_acked: u64,
    /// Mutations whose result was ok.
    pub mutations_succeeded: u64,
    /// Mutation results that were errors (and mutations failed because the server refused
    /// a blob they reference).
    pub mutations_failed: u64,
    /// Blobs the device uploaded (or found the server held already) for its mutations.
    pub blobs_uploaded: u64,
    /// Every partition any received frame was about (tests assert that no other user's
    /// partition ever shows up here).
    pub partitions_seen: BTreeSet<PartitionId>,
}

/// Everything observable about a device, published after every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// Where the connection stands.
    pub connection: ConnectionPhase,
    /// The client id from the last `Welcome`.
    pub client_id: Option<String>,
    /// The user id from the last `Welcome`.
    pub user_id: Option<String>,
    /// The subscribed partitions.
    pub partitions: BTreeMap<PartitionId, PartitionStatus>,
    /// Mutations waiting for their result (queued locally or by the server).
    pub pending_mutations: usize,
    /// Mutations that failed and wait for the app to retry or discard them.
    pub failed_mutations: usize,
    /// Counters.
    pub stats: DeviceStats,
}

impl DeviceState {
    /// Returns the status of partition `key` of `source`.
    pub fn partition(&self, source: &str, key: &str) -> Option<&PartitionStatus> {
        self.partitions.get(&PartitionId::new(source, key))
    }

    /// Returns true when the session is open and every subscribed partition is caught up.
    pub fn is_caught_up(&self) -> bool {
        self.connection == ConnectionPhase::Ready
            && !self.partitions.is_empty()
            && self.partitions.values().all(|partition| partition.caught_up)
    }

    /// Returns true while the device is locked: signed out by an operator's lock, or refused
    /// as locked (close 4003) at its last login, until the app logs in again.
    pub fn is_locked(&self) -> bool {
        matches!(
            &self.connection,
            ConnectionPhase::SignedOut(
                StopReason::Command { kind: StopCommand::Lock, .. } | StopReason::Forbidden { .. }
            )
        )
    }

    /// Returns why the device stopped or signed out, if it has.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        match &self.connection {
            ConnectionPhase::Stopped(reason) | ConnectionPhase::SignedOut(reason) => Some(reason),
            ConnectionPhase::Connecting
            | ConnectionPhase::Handshaking
            | ConnectionPhase::Ready
            | ConnectionPhase::Reconnecting => None,
        }
    }
}
