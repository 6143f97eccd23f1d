//! The device's protocol logic as a pure state machine: frames in, frames and notifications
//! out, no I/O and no clock of its own (callers pass `now`).
//!
//! [`SyncEngine`] owns the replicas and everything that outlives a connection (session token,
//! client id, counters); per connection it tracks each partition's sync phase, the pages to
//! ack and the live pushes whose ack is being debounced. The device task in `device.rs` is a
//! thin loop around it.
//!
//! The device's own creates, updates and deletes live in `mutations.rs` (the flow of
//! `Mutate`, `MutationAck` and `MutationResult`) over the queue of `crate::outbox`. Their
//! optimistic effect is never written into a [`PartitionReplica`]: a replica holds exactly
//! what the server's log says, so its checksum keeps verifying. What the app sees
//! ([`SyncEngine::view`]) is layered: the replica, then records the device learned from
//! mutation results ahead of the log (until the log catches up with them), then the queued
//! mutations replayed in order. Dropping a mutation from the queue therefore rolls its change
//! back to the server's version.

use std::collections::{BTreeMap, BTreeSet};

use syncline_proto::{
    APP_PARTITION_KEY, PROTOCOL_VERSION, close_code,
    v1::{
        Ack, Changes, ClientFrame, DeviceInfo, Error as ErrorFrame, ErrorCode, Hello, Login, Pull, ServerFrame,
        Subscribe, Welcome, client_frame, hello, server_frame,
    },
};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::{
    config::{DeviceConfig, LiveAckPolicy, SubscriptionConfig},
    engine::mutations::ConfirmedRecords,
    notification::{ChangedNotification, Notification, SyncNotification, SyncNotificationStatus},
    outbox::MutationQueue,
    replica::{ApplyOutcome, PartitionId, PartitionReplica, PartitionView},
    state::{ConnectionPhase, DeviceState, DeviceStats, PartitionStatus, StopReason},
};

/// What the engine wants done after a frame.
#[derive(Debug, Default)]
pub(crate) struct Reaction {
    /// Frames to send, in order.
    pub(crate) frames: Vec<ClientFrame>,
    /// Notifications for the app, in order.
    pub(crate) notifications: Vec<Notification>,
    /// Set when the device must stop (after sending `frames`).
    pub(crate) stop: Option<StopReason>,
    /// Answers to searches, by search id.
    pub(crate) search_results: Vec<(String, Result<SearchResults, SearchError>)>,
    /// Bulk files for the device task to download and hand back (`on_bulk_loaded`).
    pub(crate) bulk_downloads: Vec<crate::bulk::BulkDownload>,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// The server sent a close frame.
    Closed { code: u16, reason: String },
    /// The connection broke (I/O error, undecodable frame, end of stream).
    Lost,
    /// The app cut the connection to simulate network loss.
    Cut,
}

/// When to reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReconnectDelay {
    /// At once (the session token was refused; log in with the password).
    Immediately,
    /// After a short random delay (the server is restarting: "reconnect now", but not all
    /// devices in the same millisecond).
    Jitter,
    /// After the next exponential backoff delay.
    Backoff,
}

/// What to do after a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AfterDisconnect {
    Reconnect(ReconnectDelay),
    Stop(StopReason),
}

/// A partition's progress on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not subscribed on this connection (yet).
    Idle,
    /// Subscribed; catch-up pages are arriving.
    CatchingUp,
    /// The server reported it caught up and the checksum matched; live pushes follow.
    CaughtUp,
    /// The subscription failed (`SyncState` ERROR or an `Error` naming it).
    Failed,
    /// Not subscribed: a bulk file was asked for or is being downloaded (`bulk.rs`).
    Bulk,
}

/// Live pushes applied but not acked yet.
#[derive(Clone, Copy, Debug)]
struct PendingLiveAck {
    changes: u64,
    since: Instant,
}

/// One partition: the replica plus its per-connection sync state.
#[derive(Debug)]
struct PartitionSync {
    replica: PartitionReplica,
    page_size: u32,
    window: u32,
    phase: Phase,
    /// Set by each Subscribe until a frame shows the new subscription has started (page 1,
    /// a snapshot reset, or a `SyncState` at the device's cursor). Frames still in flight from
    /// the previous subscription may arrive meanwhile: gaps among them are counted but do not
    /// trigger another resubscribe, and their page numbers are not acked (they belong to the
    /// old subscription's window).
    awaiting_restart: bool,
    /// Changes applied in this sync run (since the last Subscribe).
    cumulative: u64,
    /// The partition's total as the server last reported it.
    server_total: u64,
    error: Option<(ErrorCode, String)>,
    pending_live_ack: Option<PendingLiveAck>,
    /// Bulk sync from this many records (`None`: never).
    bulk_min_records: Option<u64>,
    /// Where its bulk sync stands.
    bulk: bulk::BulkPhase,
    /// Bulk sync failed or the server said "page instead": the partition pages from now on.
    bulk_declined: bool,
}

impl PartitionSync {
    fn new(subscription: &SubscriptionConfig) -> Self {
        Self {
            replica: PartitionReplica::new(),
            page_size: subscription.page_size,
            window: subscription.window,
            phase: Phase::Idle,
            awaiting_restart: false,
            cumulative: 0,
            server_total: 0,
            error: None,
            pending_live_ack: None,
            // Bulk files hold a source's natural partition only.
            bulk_min_records: subscription.bulk_min_records.filter(|_| subscription.key.is_none()),
            bulk: bulk::BulkPhase::Idle,
            bulk_declined: false,
        }
    }

    /// Starts a sync run from the replica's cursor and returns the frames that ask for it.
    fn subscribe(&mut self, id: &PartitionId) -> Vec<ClientFrame> {
        if self.replica.is_receiving_snapshot() {
            // A half-received snapshot is useless: the server restarts it from cursor 0.
            self.replica.clear();
        }
        self.phase = Phase::CatchingUp;
        self.awaiting_restart = true;
        self.cumulative = 0;
        self.error = None;
        self.pending_live_ack = None;
        let mut frames = vec![frame(client_frame::Msg::Subscribe(Subscribe {
            source: id.source.clone(),
            key: id.key.clone(),
            cursor: self.replica.cursor(),
            page_size: self.page_size,
            window: self.window,
        }))];
        if self.window == 0 {
            frames.push(pull(id));
        }
        frames
    }
}

/// The device's protocol state machine.
#[derive(Debug)]
pub(crate) struct SyncEngine {
    username: String,
    password: String,
    /// Logs in with this instead of the password, when set.
    backend_token: Option<String>,
    session_token: Option<String>,
    client_id: Option<String>,
    user_id: Option<String>,
    device_info: DeviceInfo,
    subscriptions: Vec<SubscriptionConfig>,
    /// Persisted partitions to resume, taken when the partition is first subscribed.
    restored: BTreeMap<PartitionId, PartitionView>,
    partitions: BTreeMap<PartitionId, PartitionSync>,
    live_ack: LiveAckPolicy,
    notifications_enabled: bool,
    /// Whether this connection's Hello carried the session token (else the password or the
    /// backend token).
    hello_used_token: bool,
    /// The last fatal `Error` of this connection; explains a close that follows (or a
    /// connection that drops before its close frame arrives).
    fatal_error: Option<ErrorFrame>,
    welcomed: bool,
    /// `Complete` was reported and no partition has left its final phase since.
    complete_reported: bool,
    /// This connection reached `Complete` at least once (a healthy session).
    reached_complete: bool,
    stats: DeviceStats,
    /// The device's unfinished mutations, persisted.
    mutations: MutationQueue,
    /// Mutations sent on this connection and not answered with a result yet.
    mutations_in_flight: BTreeSet<String>,
    /// Records learned from mutation results that the partitions' logs have not brought yet.
    confirmed: ConfirmedRecords,
    /// Searches in flight and records merged from search results.
    searches: Searches,
    /// Each source's natural partition key from the last `Welcome` (for mutations made with
    /// an empty key).
    natural_keys: BTreeMap<String, String>,
    /// Blobs the server holds (uploaded, or found stored), by hash: mutations referencing
    /// other blobs wait (see `engine/blobs.rs`).
    uploaded_blobs: BTreeSet<String>,
    /// BulkRequests sent (their ids count up).
    bulk_requests: u64,
}

impl SyncEngine {
    /// Returns an engine for a device that holds nothing yet but what `mutations` holds.
    pub(crate) fn with_queue(config: &DeviceConfig, mutations: MutationQueue) -> Self {
        Self {
            username: config.username.clone(),
            password: config.password.clone(),
            backend_token: config.backend_token.clone(),
            session_token: None,
            client_id: config.client_id.clone(),
            user_id: None,
            device_info: config.device_info.clone(),
            subscriptions: config.subscriptions.clone(),
            restored: config.restored.iter().cloned().collect(),
            partitions: BTreeMap::new(),
            live_ack: config.live_ack,
            notifications_enabled: config.notification_capacity.is_some(),
            hello_used_token: false,
            fatal_error: None,
            welcomed: false,
            complete_reported: false,
            reached_complete: false,
            stats: DeviceStats::default(),
            mutations,
            mutations_in_flight: BTreeSet::new(),
            confirmed: ConfirmedRecords::default(),
            searches: Searches::default(),
            natural_keys: BTreeMap::new(),
            uploaded_blobs: BTreeSet::new(),
            bulk_requests: 0,
        }
    }

    /// Returns an engine with an in-memory mutation queue.
    #[cfg(test)]
    pub(crate) fn new(config: &DeviceConfig) -> Self {
        let queue = MutationQueue::open(None, config.max_queued_mutations).expect("an in-memory store opens");
        Self::with_queue(config, queue)
    }

    /// Starts a connection: forgets the previous connection's state and returns the Hello.
    pub(crate) fn hello(&mut self) -> ClientFrame {
        self.welcomed = false;
        self.fatal_error = None;
        self.complete_reported = false;
        self.reached_complete = false;
        self.mutations_in_flight.clear();
        for partition in self.partitions.values_mut() {
            partition.phase = Phase::Idle;
            partition.awaiting_restart = false;
            partition.pending_live_ack = None;
        }
        let credentials = match &self.session_token {
            Some(token) => {
                self.hello_used_token = true;
                hello::Credentials::SessionToken(token.clone())
            }
            None => {
                self.hello_used_token = false;
                match &self.backend_token {
                    Some(token) => hello::Credentials::BackendToken(token.clone()),
                    None => hello::Credentials::Login(Login {
                        username: self.username.clone(),
                        password: self.password.clone(),
                    }),
                }
            }
        };
        frame(client_frame::Msg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            credentials: Some(credentials),
            client_id: self.client_id.clone().unwrap_or_default(),
            device: Some(self.device_info.clone()),
        }))
    }

    /// Handles one server frame.
    pub(crate) fn on_frame(&mut self, frame: ServerFrame, now: Instant) -> Reaction {
        self.stats.frames_received += 1;
        let mut reaction = Reaction::default();
        match frame.msg {
            Some(server_frame::Msg::Welcome(welcome)) => self.on_welcome(welcome, &mut reaction),
            Some(server_frame::Msg::Changes(changes)) => self.on_changes(changes, now, &mut reaction),
            Some(server_frame::Msg::SyncState(state)) => self.on_sync_state(state, &mut reaction),
            Some(server_frame::Msg::Error(error)) => self.on_error(error, &mut reaction),
            Some(server_frame::Msg::Command(command)) => self.on_command(command, &mut reaction),
            Some(server_frame::Msg::MutationAck(ack)) => self.on_mutation_ack(&ack, &mut reaction),
            Some(server_frame::Msg::MutationResult(result)) => self.on_mutation_result(result, &mut reaction),
            Some(server_frame::Msg::SearchResult(result)) => self.on_search_result(result, &mut reaction),
            Some(server_frame::Msg::BulkReady(ready)) => self.on_bulk_ready(ready, &mut reaction),
            // RPC replies go to their callers in the device task; only counted here.
            Some(server_frame::Msg::RpcReply(_)) | None => {}
        }
        reaction
    }

    /// Returns when the earliest debounced live ack is due.
    pub(crate) fn live_ack_deadline(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(|partition| partition.pending_live_ack)
            .map(|pending| pending.since + self.live_ack.interval)
            .min()
    }

    /// Returns the live acks due at `now`.
    pub(crate) fn due_live_acks(&mut self, now: Instant) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for (id, partition) in &mut self.partitions {
            let due = partition.pending_live_ack.is_some_and(|pending| pending.since + self.live_ack.interval <= now);
            if due {
                partition.pending_live_ack = None;
                self.stats.acks_sent += 1;
                frames.push(ack(id, partition.replica.cursor(), 0));
            }
        }
        frames
    }

    /// Ends the connection's state (no partition is caught up without a connection) and
    /// decides what follows.
    pub(crate) fn on_disconnect(&mut self, disconnect: &Disconnect) -> AfterDisconnect {
        self.welcomed = false;
        self.mutations_in_flight.clear();
        for partition in self.partitions.values_mut() {
            partition.phase = Phase::Idle;
            partition.pending_live_ack = None;
        }
        let fatal_code = self.fatal_error.as_ref().map(|error| error_code(error.code));
        let fatal_message = self.fatal_error.as_ref().map(|error| error.message.clone()).unwrap_or_default();
        let (code, reason) = match disconnect {
            Disconnect::Closed { code, reason } => {
                (Some(*code), if reason.is_empty() { fatal_message } else { reason.clone() })
            }
            Disconnect::Lost => (None, fatal_message),
            // The app cut the connection: whatever the server said last does not matter.
            Disconnect::Cut => return AfterDisconnect::Reconnect(ReconnectDelay::Backoff),
        };
        let unauthenticated = code == Some(close_code::UNAUTHENTICATED)
            || (code.is_none() && fatal_code == Some(ErrorCode::Unauthenticated));
        let forbidden =
            code == Some(close_code::FORBIDDEN) || (code.is_none() && fatal_code == Some(ErrorCode::Forbidden));
        let upgrade_required = code == Some(close_code::UPGRADE_REQUIRED)
            || (code.is_none() && fatal_code == Some(ErrorCode::UnsupportedVersion));
        if unauthenticated {
            if self.hello_used_token {
                debug!("session token refused; logging in again");
                self.session_token = None;
                return AfterDisconnect::Reconnect(ReconnectDelay::Immediately);
            }
            return AfterDisconnect::Stop(StopReason::Unauthenticated { reason });
        }
        if forbidden {
            return AfterDisconnect::Stop(StopReason::Forbidden { reason });
        }
        if upgrade_required {
            return AfterDisconnect::Stop(StopReason::UpgradeRequired { reason });
        }
        match code {
            Some(close_code::NORMAL) => AfterDisconnect::Stop(StopReason::ClosedByServer { reason }),
            Some(close_code::SERVICE_RESTART) => AfterDisconnect::Reconnect(ReconnectDelay::Jitter),
            Some(_) | None => AfterDisconnect::Reconnect(ReconnectDelay::Backoff),
        }
    }

    /// Returns true once this connection's session is open.
    pub(crate) fn is_welcomed(&self) -> bool {
        self.welcomed
    }

    /// Returns true when this connection caught up with every partition at least once.
    pub(crate) fn reached_complete(&self) -> bool {
        self.reached_complete
    }

    /// Returns a copy of a partition's records as the server's log has them (no pending
    /// mutations applied).
    pub(crate) fn synced_view(&self, id: &PartitionId) -> Option<PartitionView> {
        self.partitions.get(id).map(|partition| partition.replica.view())
    }

    /// Counts a connection attempt that failed before the WebSocket was open.
    pub(crate) fn record_connect_failure(&mut self) {
        self.stats.connect_failures += 1;
    }

    /// Counts a connection opened after the first.
    pub(crate) fn record_reconnect(&mut self) {
        self.stats.reconnects += 1;
    }

    /// Returns the counters.
    pub(crate) fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Copies the engine's part of the observable state into `state`.
    pub(crate) fn publish(&self, state: &mut DeviceState) {
        if self.client_id != state.client_id {
            state.client_id.clone_from(&self.client_id);
        }
        if self.user_id != state.user_id {
            state.user_id.clone_from(&self.user_id);
        }
        if self.welcomed && state.connection == ConnectionPhase::Handshaking {
            state.connection = ConnectionPhase::Ready;
        }
        state.pending_mutations = self.mutations.unresolved_count();
        state.failed_mutations = self.mutations.failed_count();
        for (id, partition) in &self.partitions {
            let status = PartitionStatus {
                cursor: partition.replica.cursor(),
                total: partition.replica.total(),
                checksum: partition.replica.checksum(),
                caught_up: partition.phase == Phase::CaughtUp,
                error: partition.error.clone(),
            };
            match state.partitions.get_mut(id) {
                Some(published) => *published = status,
                None => {
                    state.partitions.insert(id.clone(), status);
                }
            }
        }
        state.stats.clone_from(&self.stats);
    }

    fn on_welcome(&mut self, welcome: Welcome, reaction: &mut Reaction) {
        self.welcomed = true;
        if !welcome.session_token.is_empty() {
            self.session_token = Some(welcome.session_token.clone());
        }
        if !welcome.client_id.is_empty() {
            self.client_id = Some(welcome.client_id.clone());
        }
        self.user_id = Some(welcome.user_id.clone());
        self.natural_keys = welcome
            .sources
            .iter()
            .map(|source| (source.name.clone(), natural_key_of_source(&source.name, &welcome)))
            .collect();
        // Mutations before Subscribes: the server answers the ones it knows from its records,
        // so the links of the device's own creates arrive before catch-up pages bring the
        // created records (no temporary record shown beside its real copy), and writes made
        // offline reach the server's durable queue before a long catch-up fills the socket.
        // Acks of commands acted on without a session (or whose ack was not sent) come first.
        reaction.frames.extend(self.unsent_command_acks());
        reaction.frames.extend(self.mutation_frames());
        let mut ids = Vec::with_capacity(self.subscriptions.len());
        for subscription in &self.subscriptions {
            let id = PartitionId::new(&subscription.source, natural_key(subscription, &welcome));
            let restored = &mut self.restored;
            self.partitions.entry(id.clone()).or_insert_with(|| {
                let mut partition = PartitionSync::new(subscription);
                if let Some(view) = restored.remove(&id) {
                    partition.replica = PartitionReplica::restore(view);
                }
                partition
            });
            ids.push(id);
        }
        for id in ids {
            self.start_sync(&id, reaction);
        }
        self.complete_reported = false;
    }

    fn on_changes(&mut self, changes: Changes, now: Instant, reaction: &mut Reaction) {
        let id = PartitionId::new(&changes.source, &changes.key);
        let linked = self.apply_change_links(&changes);
        self.apply_changes(changes, now, reaction);
        if let Some(partition) = self.partitions.get(&id) {
            self.confirmed.prune(&id, &partition.replica);
        }
        if linked {
            // Mutations that waited for these links may go.
            reaction.frames.extend(self.mutation_frames());
        }
    }

    fn apply_changes(&mut self, changes: Changes, now: Instant, reaction: &mut Reaction) {
        let id = PartitionId::new(&changes.source, &changes.key);
        let Some(partition) = subscribed_partition(&mut self.partitions, &mut self.stats, &id, "changes") else {
            return;
        };
        if changes.page == 1 || changes.reset {
            partition.awaiting_restart = false;
        }
        match partition.replica.apply(&changes) {
            ApplyOutcome::Applied { changes: applied, verified: _ } => {
                partition.server_total = changes.total;
                if changes.page > 0 {
                    self.stats.pages += 1;
                    if partition.phase == Phase::CaughtUp {
                        // The server demoted the device to catch-up.
                        self.complete_reported = false;
                    }
                    partition.phase = Phase::CatchingUp;
                    partition.cumulative += applied;
                    // Pages of a previous subscription are acked without a page number: they
                    // hold no credit in the current one, but the cursor is worth recording.
                    let page = if partition.awaiting_restart { 0 } else { changes.page };
                    partition.pending_live_ack = None;
                    self.stats.acks_sent += 1;
                    reaction.frames.push(ack(&id, partition.replica.cursor(), page));
                    if partition.window == 0 && changes.remaining > 0 {
                        reaction.frames.push(pull(&id));
                    }
                    if self.notifications_enabled {
                        reaction.notifications.push(sync_notification(
                            &id,
                            SyncNotificationStatus::InProgress,
                            changes.total,
                            applied,
                            partition.cumulative,
                        ));
                    }
                } else {
                    self.stats.live_pushes += 1;
                    let pending = partition.pending_live_ack.get_or_insert(PendingLiveAck { changes: 0, since: now });
                    pending.changes += applied;
                    if pending.changes >= self.live_ack.max_changes {
                        partition.pending_live_ack = None;
                        self.stats.acks_sent += 1;
                        reaction.frames.push(ack(&id, partition.replica.cursor(), 0));
                    }
                    if self.notifications_enabled {
                        reaction.notifications.push(Notification::Changed(ChangedNotification {
                            source: changes.source,
                            key: changes.key,
                            upserts: changes.upserts,
                            deletes: changes.deletes,
                        }));
                    }
                }
            }
            ApplyOutcome::Duplicate => {
                self.stats.duplicates += 1;
                debug!(partition = %id, from = changes.from, cursor = partition.replica.cursor(), "duplicate page skipped");
                if changes.page > 0 && !partition.awaiting_restart {
                    // Free the window credit: the device holds everything in the page.
                    self.stats.acks_sent += 1;
                    reaction.frames.push(ack(&id, partition.replica.cursor(), changes.page));
                }
            }
            outcome @ (ApplyOutcome::Gap { .. } | ApplyOutcome::Unexpected(_)) => {
                self.stats.gaps += 1;
                if partition.awaiting_restart {
                    debug!(partition = %id, ?outcome, "page of a previous subscription skipped");
                } else {
                    warn!(partition = %id, ?outcome, cursor = partition.replica.cursor(), "gap; resubscribing from the cursor");
                    self.stats.resubscribes += 1;
                    self.complete_reported = false;
                    reaction.frames.extend(partition.subscribe(&id));
                }
            }
            ApplyOutcome::ChecksumMismatch(mismatch) => {
                warn!(partition = %id, ?mismatch, "checksum mismatch; resyncing from cursor 0");
                self.stats.checksum_mismatches += 1;
                self.stats.resyncs += 1;
                self.complete_reported = false;
                partition.replica.clear();
                reaction.frames.extend(partition.subscribe(&id));
            }
        }
    }

    /// Reports `Complete` when every subscribed partition is caught up or failed.
    fn check_complete(&mut self, reaction: &mut Reaction) {
        if self.complete_reported {
            return;
        }
        let mut subscribed = self.partitions.values().filter(|partition| partition.phase != Phase::Idle).peekable();
        if subscribed.peek().is_none() {
            return;
        }
        let mut total = 0;
        let mut cumulative = 0;
        for partition in subscribed {
            match partition.phase {
                Phase::CaughtUp | Phase::Failed => {
                    total += partition.server_total;
                    cumulative += partition.cumulative;
                }
                Phase::CatchingUp | Phase::Idle | Phase::Bulk => return,
            }
        }
        self.complete_reported = true;
        self.reached_complete = true;
        if self.notifications_enabled {
            reaction.notifications.push(Notification::Sync(SyncNotification {
                source: String::new(),
                key: String::new(),
                status: SyncNotificationStatus::Complete,
                total,
                processed: 0,
                cumulative,
                error: None,
            }));
        }
    }
}

/// Returns partition `id` when it is subscribed on this connection (counting it as seen);
/// a frame about another is unexpected (counted, logged with `what` it was).
fn subscribed_partition<'p>(
    partitions: &'p mut BTreeMap<PartitionId, PartitionSync>,
    stats: &mut DeviceStats,
    id: &PartitionId,
    what: &str,
) -> Option<&'p mut PartitionSync> {
    stats.partitions_seen.insert(id.clone());
    let partition = partitions.get_mut(id).filter(|partition| !matches!(partition.phase, Phase::Idle | Phase::Bulk));
    if partition.is_none() {
        warn!(partition = %id, what, "a frame for a partition not subscribed");
        stats.unexpected_frames += 1;
    }
    partition
}

/// Returns the partition key a subscription means once the server named the user's
/// partitions in `Welcome`.
fn natural_key(subscription: &SubscriptionConfig, welcome: &Welcome) -> String {
    match &subscription.key {
        Some(key) => key.clone(),
        None => natural_key_of_source(&subscription.source, welcome),
    }
}

/// Returns the partition key the server means by an empty key for `source`.
fn natural_key_of_source(source: &str, welcome: &Welcome) -> String {
    match welcome.sources.iter().find(|info| info.name == source) {
        Some(source) if source.keys.len() == 1 => source.keys[0].clone(),
        Some(source) if source.partitioning == "app" => APP_PARTITION_KEY.to_owned(),
        // `user` partitioning, or a source the server did not list (it will answer the
        // Subscribe with an error naming the source).
        Some(_) | None => welcome.user_id.clone(),
    }
}

fn frame(msg: client_frame::Msg) -> ClientFrame {
    ClientFrame { msg: Some(msg) }
}

fn ack(id: &PartitionId, cursor: u64, page: u64) -> ClientFrame {
    frame(client_frame::Msg::Ack(Ack { source: id.source.clone(), key: id.key.clone(), cursor, page }))
}

fn pull(id: &PartitionId) -> ClientFrame {
    frame(client_frame::Msg::Pull(Pull { source: id.source.clone(), key: id.key.clone(), pages: 1 }))
}

fn error_code(code: i32) -> ErrorCode {
    ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified)
}

fn sync_notification(
    id: &PartitionId,
    status: SyncNotificationStatus,
    total: u64,
    processed: u64,
    cumulative: u64,
) -> Notification {
    Notification::Sync(SyncNotification {
        source: id.source.clone(),
        key: id.key.clone(),
        status,
        total,
        processed,
        cumulative,
        error: None,
    })
}

mod blobs;
mod bulk;
mod commands;
mod mutations;
mod search;
mod sync_state;

use search::Searches;
pub use search::{SearchError, SearchQuery, SearchResults};

#[cfg(test)]
mod tests;
