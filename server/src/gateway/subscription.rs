//! Subscribe, Ack, Pull and Unsubscribe: per subscription, credit-based catch-up paging and
//! the switch to live push.
//!
//! Per subscription the session is in one of three phases: *snapshot* (pages of live records
//! by id at a fixed sequence S, then the log from S), *log* (pages of the change log after the
//! device's cursor) or *live* (the hub queues each committed batch to the connection). A live
//! subscription that the hub demotes (its queue was full) goes back to the log phase from the
//! last sequence queued to it.

use syncline_proto::v1::{self, SyncStatus, server_frame};
use syncline_push::{EncodedFrame, Outbox, Subscription};

use super::replies::{frame, partition_error, sync_state, wire_error};
use super::{DeviceSession, blocking};
use crate::error::ErrorClass;
use crate::storage::{EncodedSnapshotPage, LogPage, PageLimit, PartitionName, PartitionState, StoreError};
use crate::sync::pages;

/// Where a subscription is in its sync.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Sending live records with ids after `after_id`, at sequence `at`, `sent` of them
    /// already.
    Snapshot { at: u64, after_id: Option<String>, first: bool, sent: u64 },
    /// Sending the log after sequence `after`.
    Log { after: u64 },
    /// Caught up; the hub pushes new batches.
    Live,
}

pub(super) struct PartitionSync {
    subscription: Subscription<PartitionName>,
    /// Bounds each catch-up page in records or changes and in encoded bytes.
    page_limit: PageLimit,
    /// Unacked pages allowed in flight; 0 = pull mode.
    window: u64,
    /// Pages requested with Pull and not yet sent (pull mode).
    pulled: u64,
    sent_page: u64,
    acked_page: u64,
    phase: Phase,
}

impl PartitionSync {
    fn may_send(&self) -> bool {
        match self.phase {
            Phase::Live => false,
            Phase::Snapshot { .. } | Phase::Log { .. } => {
                if self.window == 0 {
                    self.pulled > 0
                } else {
                    self.sent_page - self.acked_page < self.window
                }
            }
        }
    }

    /// Counts a page sent that told the device `remaining` pages follow; returns its number.
    fn page_sent(&mut self, remaining: u64) -> u64 {
        self.sent_page += 1;
        self.pulled = self.pulled.saturating_sub(1);
        if remaining == 0 {
            // A pull-mode device does not pull after a page that says nothing remains: the
            // next step (going live, or what committed since the page was read) is sent
            // unasked, or the subscription would never reach the live phase.
            self.grant_unasked_page();
        }
        self.sent_page
    }

    /// In pull mode, lets the server send one page the device did not ask for: when the
    /// device cannot know that it should (see `page_sent` and demotion).
    fn grant_unasked_page(&mut self) {
        if self.window == 0 {
            self.pulled = self.pulled.max(1);
        }
    }
}

/// A session's subscriptions by partition: a few at most (see `max_subscriptions`), so a
/// vector searched in order, sized exactly (a hash map's smallest table holds four entries,
/// which every idle connection would carry).
#[derive(Default)]
pub(super) struct Subscriptions(Vec<(PartitionName, PartitionSync)>);

impl Subscriptions {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn contains_key(&self, partition: &PartitionName) -> bool {
        self.0.iter().any(|(name, _)| name == partition)
    }

    fn get_mut(&mut self, partition: &PartitionName) -> Option<&mut PartitionSync> {
        self.0.iter_mut().find(|(name, _)| name == partition).map(|(_, sync)| sync)
    }

    fn insert(&mut self, partition: PartitionName, sync: PartitionSync) {
        match self.get_mut(&partition) {
            Some(existing) => *existing = sync,
            None => {
                self.0.reserve_exact(1);
                self.0.push((partition, sync));
            }
        }
    }

    fn remove(&mut self, partition: &PartitionName) -> Option<PartitionSync> {
        let index = self.0.iter().position(|(name, _)| name == partition)?;
        Some(self.0.swap_remove(index).1)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&PartitionName, &mut PartitionSync)> {
        self.0.iter_mut().map(|(name, sync)| (&*name, sync))
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// Changes behind the head this node knows below which a log page is read without one of the
/// node's catch-up reads (`device.catch_up_reads`): a few tens of kilobytes even for every
/// device of a node at once.
const TAIL_READ_CHANGES: u64 = 256;

/// Tries of a catch-up page read that fails for a passing reason (UNAVAILABLE: a dropped
/// connection, a timeout) before the partition is reported unreadable to its device.
const READ_TRIES: u32 = 3;

/// Pause before the second try of a failed page read; doubled before each later one.
const READ_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs a catch-up page read off the async workers, trying it again after a pause when the
/// store was unavailable: reads change nothing, so a read whose connection broke is simply
/// made again on a fresh one.
async fn read_retrying<T: Send + 'static>(
    peer: &std::net::SocketAddr,
    partition: &PartitionName,
    read: impl Fn() -> Result<T, StoreError> + Send + Sync + 'static,
) -> Result<T, StoreError> {
    let read = std::sync::Arc::new(read);
    let mut pause = READ_RETRY_PAUSE;
    for _ in 1..READ_TRIES {
        let attempt = read.clone();
        match blocking(move || attempt()).await {
            Err(error) if error.class() == ErrorClass::Unavailable => {
                tracing::warn!(%peer, %partition, %error, "catch-up read failed; trying again");
                // A pause before the next try, not a wait for anything.
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    blocking(move || read()).await
}

/// A failure that ends a step of the session.
enum StepError {
    /// The connection is gone; stop quietly.
    Closed,
    /// The store failed; the partition reports an error.
    Store(StoreError),
}

/// What a device is told when its partition could not be read: whatever failed in the store
/// (the details are logged), it may resubscribe later.
const UNREADABLE_PARTITION: (ErrorClass, &str) =
    (ErrorClass::Unavailable, "the server could not read this partition; resubscribe later");

impl From<syncline_push::ConnectionClosed> for StepError {
    fn from(_: syncline_push::ConnectionClosed) -> Self {
        StepError::Closed
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Store(error)
    }
}

impl DeviceSession {
    /// Starts a subscription; a store failure reports an error for the partition.
    pub(super) async fn on_subscribe_reporting(&mut self, subscribe: v1::Subscribe, outbox: &Outbox) {
        let partition = self.partition_of(&subscribe.source, &subscribe.key);
        match self.on_subscribe(subscribe, outbox).await {
            Ok(()) | Err(StepError::Closed) => {}
            Err(StepError::Store(error)) => {
                if let Some(partition) = partition {
                    tracing::error!(peer = %self.peer, %partition, %error, "subscribe failed");
                    self.subscriptions.remove(&partition);
                    let (class, message) = UNREADABLE_PARTITION;
                    let _ = outbox.send_frame(partition_error(&partition.source, &partition.key, class, message)).await;
                }
            }
        }
    }

    /// Frees window credit up to the acked page, records the cursor, and sends more pages.
    pub(super) async fn on_ack(&mut self, ack: v1::Ack, outbox: &Outbox) {
        let Some(partition) = self.partition_of(&ack.source, &ack.key) else {
            return self.not_subscribed(&ack.source, &ack.key, outbox).await;
        };
        let Some(sync) = self.subscriptions.get_mut(&partition) else {
            return self.not_subscribed(&ack.source, &ack.key, outbox).await;
        };
        sync.acked_page = sync.acked_page.max(ack.page.min(sync.sent_page));
        sync.subscription.acked(ack.cursor);
        if let Some(identity) = &self.identity {
            self.services.cursors.record(&identity.client_id, &partition, ack.cursor);
        }
        self.pump_reporting(&partition, outbox).await;
    }

    /// Grants pull-mode pages and sends them.
    pub(super) async fn on_pull(&mut self, pull: v1::Pull, outbox: &Outbox) {
        let Some(partition) = self.partition_of(&pull.source, &pull.key) else {
            return self.not_subscribed(&pull.source, &pull.key, outbox).await;
        };
        let Some(sync) = self.subscriptions.get_mut(&partition) else {
            return self.not_subscribed(&pull.source, &pull.key, outbox).await;
        };
        sync.pulled = sync.pulled.saturating_add(u64::from(pull.pages.max(1)));
        self.pump_reporting(&partition, outbox).await;
    }

    /// Ends a subscription.
    pub(super) fn on_unsubscribe(&mut self, unsubscribe: &v1::Unsubscribe) {
        if let Some(partition) = self.partition_of(&unsubscribe.source, &unsubscribe.key) {
            self.subscriptions.remove(&partition);
        }
    }

    /// Switches live subscriptions the hub demoted (their queue was full) back to catch-up.
    pub(super) async fn catch_up_demoted(&mut self, outbox: &Outbox) {
        let mut demoted = Vec::new();
        for (partition, sync) in self.subscriptions.iter_mut() {
            if let Some(queued_to) = sync.subscription.take_demoted() {
                sync.phase = Phase::Log { after: queued_to };
                // A pull-mode device learns of the demotion only from a page.
                sync.grant_unasked_page();
                demoted.push(partition.clone());
            }
        }
        for partition in demoted {
            tracing::debug!(peer = %self.peer, %partition, "slow consumer switched to catch-up");
            self.pump_reporting(&partition, outbox).await;
        }
    }

    async fn on_subscribe(&mut self, subscribe: v1::Subscribe, outbox: &Outbox) -> Result<(), StepError> {
        let identity = self.identity.clone().unwrap_or_default();
        let partition = match self.services.resolve_partition(&identity, &subscribe.source, &subscribe.key) {
            Ok(partition) => partition,
            Err(error) => {
                let refused = partition_error(&subscribe.source, &subscribe.key, error.class(), error.to_string());
                outbox.send_frame(refused).await?;
                return Ok(());
            }
        };
        let limits = &self.services.limits;
        if !self.subscriptions.contains_key(&partition) && self.subscriptions.len() >= limits.max_subscriptions {
            let message = format!("at most {} subscriptions per connection", limits.max_subscriptions);
            outbox
                .send_frame(partition_error(&partition.source, &partition.key, ErrorClass::ResourceExhausted, message))
                .await?;
            return Ok(());
        }
        // A resubscription replaces the old one (and leaves the hub) first.
        self.subscriptions.remove(&partition);
        let source_page_size = self.services.sources.get(&partition.source).and_then(|source| source.page_size);
        let page_size = match subscribe.page_size {
            0 => source_page_size.unwrap_or(limits.default_page_size),
            asked => asked.min(limits.max_page_size),
        } as usize;
        let page_limit = pages::page_limit(&partition, page_size, limits.max_page_bytes);
        let window = u64::from(subscribe.window.min(limits.max_window));
        // A polled source refreshes the partition now rather than at the next interval, and
        // a watched one loads it from the channel if it never did; a full queue only means
        // such a request is already pending.
        self.services.capture_requests.request(&partition);
        // Join the hub before reading, so nothing committed from now on can be missed.
        let subscription = self.services.hub.subscribe(partition.clone(), outbox.clone());
        let store = self.services.store.clone();
        let name = partition.clone();
        let state = blocking(move || store.partition_state(&name)).await?;
        let cursor = subscribe.cursor;
        subscription.head_read(state.head);
        subscription.acked(cursor);
        let phase = if cursor == 0 {
            Phase::Snapshot { at: state.head, after_id: None, first: true, sent: 0 }
        } else if cursor < state.horizon || cursor > state.head {
            outbox.send_frame(sync_state(&partition, SyncStatus::Reset, cursor, &state)).await?;
            Phase::Snapshot { at: state.head, after_id: None, first: true, sent: 0 }
        } else {
            Phase::Log { after: cursor }
        };
        self.subscriptions.insert(
            partition.clone(),
            PartitionSync { subscription, page_limit, window, pulled: 0, sent_page: 0, acked_page: 0, phase },
        );
        self.pump(&partition, outbox).await
    }

    /// Sends catch-up pages of `partition` while its window allows, and switches it to live
    /// push when it has reached the head.
    async fn pump(&mut self, partition: &PartitionName, outbox: &Outbox) -> Result<(), StepError> {
        loop {
            let Some(sync) = self.subscriptions.get_mut(partition) else {
                return Ok(());
            };
            if !sync.may_send() {
                return Ok(());
            }
            let store = self.services.store.clone();
            let name = partition.clone();
            let limit = sync.page_limit;
            match sync.phase.clone() {
                Phase::Live => return Ok(()),
                Phase::Snapshot { at, after_id, first, sent } => {
                    // The read and the frame's encoding take one of the node's catch-up reads;
                    // the send, which waits on this device, does not.
                    let read = self.services.catch_up_reads.acquire().await.ok();
                    let page: EncodedSnapshotPage = read_retrying(&self.peer, partition, move || {
                        store.read_snapshot_encoded(&name, after_id.as_deref(), limit)
                    })
                    .await?;
                    let next_after = page.last_id.clone();
                    let done = page.done;
                    let sent = sent + page.count as u64;
                    let remaining = if done {
                        0
                    } else {
                        pages::pages_remaining(page.state.total.saturating_sub(sent), page.count)
                    };
                    let number = sync.page_sent(remaining);
                    sync.phase = if done {
                        Phase::Log { after: at }
                    } else {
                        Phase::Snapshot { at, after_id: next_after, first: false, sent }
                    };
                    let encoded = pages::snapshot_frame(partition, at, &page, number, first, remaining);
                    drop((page, read));
                    outbox.send(encoded).await?;
                }
                Phase::Log { after } => {
                    // The tail of a catch-up is read at once, without a turn: it is small,
                    // and a device that queued behind a herd for every step could never find
                    // the head while changes keep coming.
                    let behind = sync.subscription.head().saturating_sub(after);
                    let read = if behind <= TAIL_READ_CHANGES {
                        None
                    } else {
                        self.services.catch_up_reads.acquire().await.ok()
                    };
                    let page: LogPage =
                        read_retrying(&self.peer, partition, move || store.read_log(&name, after, limit)).await?;
                    sync.subscription.head_read(page.state.head);
                    if after < page.state.horizon {
                        drop(read);
                        // Compaction passed this cursor (a long snapshot, or a demoted device far
                        // behind): start over with a snapshot.
                        outbox.send_frame(sync_state(partition, SyncStatus::Reset, after, &page.state)).await?;
                        sync.phase = Phase::Snapshot { at: page.state.head, after_id: None, first: true, sent: 0 };
                        continue;
                    }
                    if page.covered_to == after {
                        drop(read);
                        // At the head: go live unless something was published meanwhile.
                        if sync.subscription.go_live(after) {
                            sync.phase = Phase::Live;
                            outbox.send_frame(sync_state(partition, SyncStatus::CaughtUp, after, &page.state)).await?;
                            return Ok(());
                        }
                        continue;
                    }
                    let remaining = if page.covered_to == page.state.head {
                        0
                    } else {
                        pages::pages_remaining(page.state.head - page.covered_to, page.changes.len())
                    };
                    let number = sync.page_sent(remaining);
                    sync.phase = Phase::Log { after: page.covered_to };
                    let changes = pages::log_changes(partition, after, &page, number, remaining);
                    drop(page);
                    let encoded = EncodedFrame::new(frame(server_frame::Msg::Changes(changes)));
                    drop(read);
                    outbox.send(encoded).await?;
                }
            }
        }
    }

    async fn pump_reporting(&mut self, partition: &PartitionName, outbox: &Outbox) {
        match self.pump(partition, outbox).await {
            Ok(()) | Err(StepError::Closed) => {}
            Err(StepError::Store(error)) => {
                tracing::error!(peer = %self.peer, %partition, %error, "catch-up read failed");
                self.subscriptions.remove(partition);
                let state = PartitionState::default();
                let mut failed = sync_state(partition, SyncStatus::Error, 0, &state);
                if let Some(server_frame::Msg::SyncState(sync)) = &mut failed.msg {
                    let (class, message) = UNREADABLE_PARTITION;
                    sync.error = Some(wire_error(class, message, &partition.source, &partition.key));
                }
                let _ = outbox.send_frame(failed).await;
            }
        }
    }

    pub(super) fn partition_of(&self, source: &str, key: &str) -> Option<PartitionName> {
        self.services.resolve_partition(self.identity.as_ref()?, source, key).ok()
    }

    async fn not_subscribed(&self, source: &str, key: &str, outbox: &Outbox) {
        let message = format!("not subscribed to {source}/{key}");
        let _ = outbox.send_frame(partition_error(source, key, ErrorClass::BadRequest, message)).await;
    }
}
