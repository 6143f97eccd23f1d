//! What a device tells its app, modelled on the RhoConnect client's sync callbacks: per
//! partition progress (`InProgress`, `Ok`, `Error`), `Complete` when a sync run is done,
//! object notifications for live changes, and the outcomes of the device's own mutations
//! (RhoConnect's create / update / delete errors, which the app answers with
//! [`crate::DeviceHandle::resolve`]).
//!
//! Delivery: when notifications are enabled ([`crate::DeviceConfig::notification_capacity`])
//! they go through a bounded `tokio::sync::mpsc` channel and none is ever dropped while the
//! receiver lives. When the channel is full the device waits: it stops reading its socket
//! until the app takes a notification, exactly as a real app that is slow to handle callbacks
//! slows its sync. The server's window and slow-consumer policy then apply (the device may be
//! demoted to catch-up or time out and reconnect; the log makes that lossless). Dropping the
//! receiver turns notifications off. When the device stops, notifications still queued inside
//! it are handed over only as far as the channel has room.

use std::collections::VecDeque;

use syncline_proto::v1::{ErrorCode, Link, MutationOp, Record};
use tokio::sync::mpsc;

/// One notification to the app.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    /// Sync progress of a partition, or of the whole run (`Complete`).
    Sync(SyncNotification),
    /// Records that changed through a live push.
    Changed(ChangedNotification),
    /// News about one of the device's mutations.
    Mutation(MutationNotification),
    /// Progress of a bulk sync (RhoConnect's `bulk_status`).
    Bulk(BulkNotification),
}

/// Where a bulk sync of a partition stands, as RhoConnect's `bulk_status` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkStatus {
    /// The server announced the file (BulkReady); the download starts.
    Start,
    /// Bytes of the file arrived (`bytes` of `total_bytes`).
    Download,
    /// The file is downloaded and checked; the partition's local data is being replaced.
    ChangeDb,
    /// The partition's data is the file's; it syncs on from the file's sequence.
    Ok,
    /// Every bulk sync asked for is done (ok or failed). `source` and `key` are empty.
    Complete,
    /// The bulk sync of the partition failed (`error` says why); it pages instead.
    Error,
}

/// Progress of a partition's bulk sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkNotification {
    /// Source name (empty for `Complete`).
    pub source: String,
    /// Partition key (empty for `Complete`).
    pub key: String,
    /// Where it stands.
    pub status: BulkStatus,
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
    /// Records in the file (from `ChangeDb` on).
    pub records: u64,
    /// For `Error`: what went wrong.
    pub error: Option<String>,
}

/// Where a sync run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncNotificationStatus {
    /// A catch-up page was applied.
    InProgress,
    /// The partition is caught up (and its checksum matched).
    Ok,
    /// The partition's subscription failed (or the server reported an error that names no
    /// partition, then `source` and `key` are empty).
    Error,
    /// Every subscribed partition is caught up or failed. `source` and `key` are empty;
    /// `total` and `cumulative` are sums over the partitions.
    Complete,
    /// The source's schema changed on the server (RhoConnect's `schema-changed`): the device
    /// dropped what it held of the partition and syncs it again from the start.
    SchemaChanged,
}

/// Progress of a partition's sync run, as RhoConnect's sync notifications reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncNotification {
    /// Source name (empty for `Complete`).
    pub source: String,
    /// Partition key (empty for `Complete`).
    pub key: String,
    /// Where the run stands.
    pub status: SyncNotificationStatus,
    /// Live records in the partition, as the server last reported.
    pub total: u64,
    /// Changes (upserts + deletes) in the page this notification is about (`InProgress`).
    pub processed: u64,
    /// Changes applied in this sync run so far (a run starts at each subscribe).
    pub cumulative: u64,
    /// For `Error`: the error code and message.
    pub error: Option<(ErrorCode, String)>,
}

/// Records changed by a live push (an object notification).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangedNotification {
    /// Source name.
    pub source: String,
    /// Partition key.
    pub key: String,
    /// Records created or replaced.
    pub upserts: Vec<Record>,
    /// Ids of deleted records.
    pub deletes: Vec<String>,
}

/// News about one of the device's creates, updates or deletes.
#[derive(Clone, Debug, PartialEq)]
pub struct MutationNotification {
    /// The mutation's id (what [`crate::DeviceHandle::resolve`] takes).
    pub mutation_id: String,
    /// Source name.
    pub source: String,
    /// Partition key as the mutation was made (empty: the source's natural key).
    pub key: String,
    /// Create, update or delete.
    pub op: MutationOp,
    /// What happened.
    pub outcome: MutationOutcome,
}

/// What happened to a mutation.
#[derive(Clone, Debug, PartialEq)]
pub enum MutationOutcome {
    /// The server queued it durably (its first `MutationAck`); the result follows.
    Queued,
    /// The backend applied it. The record arrives through the partition's log as well.
    Ok {
        /// The record as the backend stored it (creates and updates).
        record: Option<Record>,
        /// For a create: its temporary id and the backend's id. The device has renamed its
        /// record and rewritten the temporary id in its queued mutations.
        link: Option<Link>,
    },
    /// The backend refused it. The mutation stays queued, and later mutations of its source
    /// wait, until the app resolves it (retry or discard).
    Error {
        /// Why (`CONFLICT`, `NOT_FOUND`, ...).
        code: ErrorCode,
        /// The backend's message.
        message: String,
        /// On `CONFLICT`: the backend's current record.
        current: Option<Record>,
    },
}

/// Notifications produced but not yet taken by the channel. The session loop stops reading
/// the socket while any are queued, so this holds at most one frame's worth.
pub(crate) struct NotificationOutbox {
    sender: Option<mpsc::Sender<Notification>>,
    queue: VecDeque<Notification>,
}

impl NotificationOutbox {
    /// Returns an outbox handing notifications to `sender` (none: notifications are off).
    pub(crate) fn new(sender: Option<mpsc::Sender<Notification>>) -> Self {
        Self { sender, queue: VecDeque::new() }
    }

    /// Queues `notifications` (dropped when notifications are off).
    pub(crate) fn extend(&mut self, notifications: Vec<Notification>) {
        if self.sender.is_some() {
            self.queue.extend(notifications);
        }
    }

    /// Returns true while notifications wait for room in the channel.
    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Waits for room in the channel and hands over the oldest queued notification.
    /// Cancel-safe: a notification leaves the queue only when it is sent.
    pub(crate) async fn deliver_one(&mut self) {
        let Some(sender) = &self.sender else {
            self.queue.clear();
            return;
        };
        let delivered = match sender.reserve().await {
            Ok(permit) => {
                if let Some(notification) = self.queue.pop_front() {
                    permit.send(notification);
                }
                true
            }
            Err(_) => false,
        };
        if !delivered {
            // The app dropped the receiver: notifications are off from now on.
            self.sender = None;
            self.queue.clear();
        }
    }

    /// Hands over what fits without waiting (used when the device stops).
    pub(crate) fn deliver_without_waiting(&mut self) {
        let Some(sender) = &self.sender else { return };
        while let Some(notification) = self.queue.pop_front() {
            if sender.try_send(notification).is_err() {
                break;
            }
        }
        self.queue.clear();
    }
}
