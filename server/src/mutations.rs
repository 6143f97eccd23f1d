//! Device mutations: dispatch of the durable per-device queue to backend channels.
//!
//! A `Mutate` is written to the device's queue in the store before `MutationAck` (see
//! `gateway/mutate.rs`). The dispatcher runs one *lane* per (device, source): mutations of a
//! lane reach the channel strictly in queue order, one at a time, while lanes run
//! independently, so a failing or slow source never holds up another. Transient channel
//! failures (unavailable, deadline) are retried with backoff, forever and across restarts
//! (the queue is durable; pending mutations are resubmitted at start). Permanent failures
//! and conflicts become the mutation's outcome.
//!
//! The outcome (an encoded `MutationResult`) is committed in one transaction with the record
//! change it causes in the partition log (for `watch` sources the change arrives through the
//! channel's feed instead, which keeps the log in the backend's order), keyed by (client id,
//! mutation id): a mutation id
//! whose outcome is stored is answered from it and never dispatched again. A crash between
//! the channel's answer and that commit leaves the mutation pending, so it is sent again with
//! the same `mutation_id`; channels deduplicate writes by mutation id (channel.proto).
//!
//! In cluster mode a lane runs on one node at a time, under the lane's lease, and reads its
//! mutations from the store rather than from memory; a sweeper takes over the lanes of dead
//! nodes (see `mutations/leased.rs` for what is guaranteed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use syncline_proto::record::RecordError;
use syncline_proto::v1::{
    Caller, Link, MutationError, MutationResult, PartitionKey, Record, ServerFrame, WriteRequest, server_frame,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::ChannelRegistry;
use crate::channel::grpc::WriteOutcome;
use crate::cluster::Leases;
use crate::config::{Capture, ConflictPolicy, SourceSettings};
use crate::error::ErrorClass;
use crate::metrics::counters::MutationCounters;
use crate::reply::DeviceReplies;
use crate::storage::{Fence, MutationOp, MutationOutcome, PartitionWrite, QueuedMutation, Store, StoreError};

/// First pause before retrying a channel that was unavailable; doubles up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between retries of an unavailable channel.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

type LaneKey = (String, String);

/// A mutation whose channel is unavailable: it waits in its lane and is retried with backoff
/// (what the admin API shows as parked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedMutation {
    pub client_id: String,
    pub mutation_id: String,
    /// The channel's last error.
    pub error: String,
    /// Attempts so far.
    pub attempts: u64,
    /// When it was first parked, in Unix ms.
    pub since_ms: i64,
}

/// A mutation's outcome and the log writes it causes.
struct Decided {
    result: MutationResult,
    writes: Vec<PartitionWrite>,
}

/// Why a mutation failed before its channel answered with a record: the class its device is
/// told, and the message.
struct Refusal {
    class: ErrorClass,
    message: String,
    /// An operator discarded the mutation: it is not kept as failed.
    discarded: bool,
}

impl Refusal {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), discarded: false }
    }

    fn discarded() -> Self {
        Self { class: ErrorClass::Forbidden, message: DISCARDED_MESSAGE.to_owned(), discarded: true }
    }
}

/// Dispatches queued mutations to channels and reports outcomes to devices.
pub struct MutationDispatcher {
    store: Arc<dyn Store>,
    sources: BTreeMap<String, SourceSettings>,
    channels: Arc<ChannelRegistry>,
    lanes: Mutex<HashMap<LaneKey, mpsc::UnboundedSender<QueuedMutation>>>,
    /// Where outcomes go: the device's open connections, through the gateway.
    replies: Arc<dyn DeviceReplies>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Mutations waiting for an unavailable channel, by (client id, mutation id).
    parked: Mutex<HashMap<(String, String), ParkedMutation>>,
    /// Wakes every parked mutation for an attempt now (an operator's retry or discard).
    retry_now: tokio::sync::Notify,
    /// Mutations an operator discarded, by (client id, mutation id), until their lane ends them.
    discarded: Mutex<std::collections::HashSet<(String, String)>>,
    counters: MutationCounters,
    /// Cluster mode: lanes run under leases (`leased.rs`).
    leases: Option<Arc<Leases>>,
}

/// What a device is told about a mutation an operator discarded.
pub const DISCARDED_MESSAGE: &str = "the mutation was discarded by an operator";

impl MutationDispatcher {
    /// Returns the mutations waiting for an unavailable channel.
    pub fn parked(&self) -> Vec<ParkedMutation> {
        let mut parked: Vec<ParkedMutation> = self.parked.lock().values().cloned().collect();
        parked.sort_by(|a, b| (&a.client_id, &a.mutation_id).cmp(&(&b.client_id, &b.mutation_id)));
        parked
    }

    /// Discards a queued mutation: before its next attempt its lane ends it with a FORBIDDEN
    /// outcome ([`DISCARDED_MESSAGE`]), told to its device like any outcome. A mutation being
    /// written to its channel at that moment completes instead.
    pub fn discard(&self, client_id: &str, mutation_id: &str) {
        self.discarded.lock().insert((client_id.to_owned(), mutation_id.to_owned()));
        self.retry_now.notify_waiters();
    }

    /// Returns true (once) when an operator discarded the mutation.
    fn take_discarded(&self, key: &(String, String)) -> bool {
        self.discarded.lock().remove(key)
    }

    /// Retries every parked mutation now instead of after its backoff; returns how many.
    pub fn retry_parked(&self) -> usize {
        let parked = self.parked.lock().len();
        self.retry_now.notify_waiters();
        parked
    }

    /// Puts a failed mutation (one its channel refused) back on its device's queue and
    /// dispatches it again; its new outcome is told to the device like any outcome (and
    /// answers the device's own retry of the mutation id). Returns it as queued, or `None`
    /// when no such failed mutation is kept.
    pub async fn retry_failed(
        self: &Arc<Self>,
        client_id: &str,
        mutation_id: &str,
    ) -> Result<Option<QueuedMutation>, StoreError> {
        let store = self.store.clone();
        let (client, id) = (client_id.to_owned(), mutation_id.to_owned());
        let queued = tokio::task::spawn_blocking(move || store.retry_failed_mutation(&client, &id))
            .await
            .map_err(|error| StoreError::Io(error.to_string()))??;
        if let Some(mutation) = &queued {
            tracing::info!(client_id, mutation_id, "failed mutation queued again by an operator");
            self.submit(mutation.clone());
        }
        Ok(queued)
    }

    /// Returns a dispatcher for the sources that have a channel.
    pub fn new(
        store: Arc<dyn Store>,
        sources: &BTreeMap<String, SourceSettings>,
        channels: Arc<ChannelRegistry>,
        replies: Arc<dyn DeviceReplies>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Self::with_leases(store, sources, channels, replies, (tracker, shutdown), None)
    }

    /// Returns a dispatcher whose lanes run under `leases` when given (cluster mode; see
    /// `leased.rs`).
    pub fn with_leases(
        store: Arc<dyn Store>,
        sources: &BTreeMap<String, SourceSettings>,
        channels: Arc<ChannelRegistry>,
        replies: Arc<dyn DeviceReplies>,
        (tracker, shutdown): (TaskTracker, CancellationToken),
        leases: Option<Arc<Leases>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sources: sources.clone(),
            channels,
            lanes: Mutex::new(HashMap::new()),
            replies,
            tracker,
            shutdown,
            parked: Mutex::new(HashMap::new()),
            retry_now: tokio::sync::Notify::new(),
            discarded: Mutex::new(std::collections::HashSet::new()),
            counters: MutationCounters::default(),
            leases,
        })
    }

    /// Returns the queue depth and outcome counters.
    pub fn counters(&self) -> &MutationCounters {
        &self.counters
    }

    /// Returns true when devices may write to `source` (it has a channel).
    pub fn accepts(&self, source: &str) -> bool {
        self.channels.get(source).is_some()
    }

    /// Resubmits every mutation the store holds without an outcome (after a restart). In
    /// cluster mode, only the lanes no live node holds are taken up (`leased.rs`).
    pub async fn resume_pending(self: &Arc<Self>) -> Result<usize, StoreError> {
        if self.leases.is_some() {
            return self.sweep().await;
        }
        let store = self.store.clone();
        let pending = tokio::task::spawn_blocking(move || store.pending_mutations())
            .await
            .map_err(|error| StoreError::Io(error.to_string()))??;
        let count = pending.len();
        for mutation in pending {
            self.submit(mutation);
        }
        Ok(count)
    }

    /// Hands a durably queued mutation to its lane.
    pub fn submit(self: &Arc<Self>, mutation: QueuedMutation) {
        if self.leases.is_none() {
            // A leased lane counts the mutations it takes from the store instead.
            self.counters.submitted();
        }
        self.hand_to_lane(mutation);
    }

    /// A device resent a mutation that is still pending. In cluster mode the lane sending it
    /// may have died with another node: the lane is woken here (a leased lane reads its work
    /// from the store and waits for a live holder, so waking a running lane changes nothing).
    /// On one node the lane that queued the mutation still has it.
    pub fn resent(self: &Arc<Self>, mutation: QueuedMutation) {
        if self.leases.is_some() {
            self.hand_to_lane(mutation);
        }
    }

    /// Hands a mutation to its lane, starting the lane when it is not running.
    fn hand_to_lane(self: &Arc<Self>, mutation: QueuedMutation) {
        let key = (mutation.client_id.clone(), mutation.partition.source.clone());
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(&key)
            && lane.send(mutation.clone()).is_ok()
        {
            return;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(mutation);
        lanes.insert(key.clone(), sender);
        drop(lanes);
        let this = self.clone();
        self.tracker.spawn(async move { this.run_lane(key, receiver).await });
    }

    /// Records a failed attempt of a parked mutation.
    fn park(&self, key: &(String, String), error: String) {
        let mut parked = self.parked.lock();
        let entry = parked.entry(key.clone()).or_insert_with(|| ParkedMutation {
            client_id: key.0.clone(),
            mutation_id: key.1.clone(),
            error: String::new(),
            attempts: 0,
            since_ms: crate::auth::now_ms(),
        });
        entry.error = error;
        entry.attempts += 1;
    }

    async fn run_lane(self: Arc<Self>, key: LaneKey, mut receiver: mpsc::UnboundedReceiver<QueuedMutation>) {
        if let Some(leases) = self.leases.clone() {
            return self.run_leased_lane(leases, key, receiver).await;
        }
        loop {
            let mutation = tokio::select! {
                () = self.shutdown.cancelled() => return,
                mutation = receiver.recv() => match mutation {
                    Some(mutation) => mutation,
                    None => return,
                },
            };
            let Some(result) = self.dispatch(&mutation, None).await else {
                return; // shutting down; the mutation stays queued for the next start
            };
            self.counters.finished(mutation.op, &result);
            let frame = ServerFrame { msg: Some(server_frame::Msg::MutationResult(result)) };
            self.replies.to_device(&mutation.client_id, frame).await;
            // An idle lane ends; submit starts a new one. Checked under the lanes lock so
            // that no mutation can be sent to a lane that is ending.
            let mut lanes = self.lanes.lock();
            if receiver.is_empty() {
                lanes.remove(&key);
                return;
            }
        }
    }

    /// Runs one mutation to its outcome and commits it (under `fence`, in cluster mode);
    /// `None` when shutting down first or when the outcome cannot be stored.
    async fn dispatch(&self, mutation: &QueuedMutation, fence: Option<&Fence>) -> Option<MutationResult> {
        let (result, writes, discarded) = match self.decide(mutation).await? {
            Ok(Decided { result, writes }) => match check_backend_records(&writes) {
                Ok(()) => (result, writes, false),
                Err(error) => {
                    tracing::warn!(client_id = %mutation.client_id, mutation_id = %mutation.mutation_id,
                        partition = %mutation.partition, id = error.id(), %error,
                        "the channel answered a write with a record outside the record limits");
                    (backend_record_refused(mutation), Vec::new(), false)
                }
            },
            Err(Refusal { class, message, discarded }) => {
                (failure(mutation, class, message, None), Vec::new(), discarded)
            }
        };
        // A watched source's change feed is the one ordered writer of its partitions: the
        // change comes back through it. Writing the result here too would let a feed batch
        // from before this write land after it and briefly undo it.
        let watched =
            self.sources.get(&mutation.partition.source).is_some_and(|source| source.capture == Capture::Watch);
        let writes = if watched { Vec::new() } else { writes };
        let outcome = MutationOutcome {
            client_id: mutation.client_id.clone(),
            mutation_id: mutation.mutation_id.clone(),
            result: result.encode_to_vec(),
            // Refused (not discarded): kept for an operator to retry or dismiss.
            failed: (!result.ok && !discarded).then(|| mutation.clone()),
            fence: fence.cloned(),
        };
        let store = self.store.clone();
        let committed = {
            let outcome = outcome.clone();
            tokio::task::spawn_blocking(move || store.finish_mutation(writes, outcome)).await
        };
        match committed {
            Ok(Ok(_)) => Some(result),
            Ok(Err(StoreError::InvalidRecord(_) | StoreError::DuplicateId { .. })) => {
                // The channel answered with a record the log cannot hold: report it, keep the
                // mutation finished.
                let result = backend_record_refused(mutation);
                let outcome =
                    MutationOutcome { result: result.encode_to_vec(), failed: Some(mutation.clone()), ..outcome };
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.finish_mutation(Vec::new(), outcome)).await {
                    Ok(Ok(_)) => Some(result),
                    Ok(Err(error)) => {
                        tracing::error!(client_id = %mutation.client_id, mutation_id = %mutation.mutation_id,
                            %error, "cannot record a refused mutation's outcome; it stays queued");
                        None
                    }
                    Err(error) => {
                        tracing::error!(%error, "the outcome task failed; the mutation stays queued");
                        None
                    }
                }
            }
            Ok(Err(error @ StoreError::LeaseLost { .. })) => {
                tracing::warn!(client_id = %mutation.client_id, mutation_id = %mutation.mutation_id, %error,
                    "the lane's lease was lost: its new holder sends the mutation again");
                None
            }
            Ok(Err(error)) => {
                tracing::error!(client_id = %mutation.client_id, mutation_id = %mutation.mutation_id, %error,
                    "cannot record a mutation's outcome; it stays queued");
                None
            }
            Err(_) => None,
        }
    }

    /// Applies the conflict policy and calls the channel, retrying while it is unavailable.
    /// Returns the outcome and the log writes it causes, or why it failed; `None` when
    /// shutting down.
    async fn decide(&self, mutation: &QueuedMutation) -> Option<Result<Decided, Refusal>> {
        let op = mutation.op;
        let parked_key = (mutation.client_id.clone(), mutation.mutation_id.clone());
        if self.take_discarded(&parked_key) {
            return Some(Err(Refusal::discarded()));
        }
        let Some(source) = self.sources.get(&mutation.partition.source) else {
            let message = format!("unknown source {}", mutation.partition.source);
            return Some(Err(Refusal::new(ErrorClass::UnknownSource, message)));
        };
        let Some(channel) = self.channels.get(&mutation.partition.source) else {
            return Some(Err(Refusal::new(ErrorClass::Forbidden, "this source is read-only for devices")));
        };
        // `reject`: Syncline compares the device's base version with its own copy.
        if source.conflict == ConflictPolicy::Reject
            && matches!(op, MutationOp::Update | MutationOp::Delete)
            && mutation.base_version != 0
        {
            let store = self.store.clone();
            let partition = mutation.partition.clone();
            let id = mutation.id.clone();
            let current = tokio::task::spawn_blocking(move || store.record(&partition, &id)).await.ok()?;
            match current {
                Ok(Some(current)) if current.version != mutation.base_version => {
                    let result = failure(
                        mutation,
                        ErrorClass::Conflict,
                        format!("the record changed since version {} (now {})", mutation.base_version, current.version),
                        Some(current),
                    );
                    return Some(Ok(Decided { result, writes: Vec::new() }));
                }
                Ok(_) => {}
                // Whatever failed in the store, the device may retry the mutation later.
                Err(error) => return Some(Err(Refusal::new(ErrorClass::Unavailable, error.to_string()))),
            }
        }
        let base_version = match source.conflict {
            ConflictPolicy::Channel => mutation.base_version,
            ConflictPolicy::Reject | ConflictPolicy::LastWriteWins => 0,
        };
        let request = WriteRequest {
            partition: Some(PartitionKey {
                source: mutation.partition.source.clone(),
                key: mutation.partition.key.clone(),
            }),
            record: Some(Record { id: mutation.id.clone(), fields: mutation.fields.clone(), version: 0 }),
            base_version,
            mutation_id: mutation.mutation_id.clone(),
            caller: Some(Caller { user_id: mutation.user_id.clone(), client_id: mutation.client_id.clone() }),
        };
        let mut pause = FIRST_RETRY_PAUSE;
        let outcome = loop {
            if self.take_discarded(&parked_key) {
                self.parked.lock().remove(&parked_key);
                return Some(Err(Refusal::discarded()));
            }
            match channel.write(op, request.clone()).await {
                Ok(outcome) => break outcome,
                Err(error) if error.is_transient() => {
                    tracing::warn!(mutation_id = %mutation.mutation_id, %error, "channel unavailable; will retry");
                    self.park(&parked_key, error.to_string());
                    let retry_now = self.retry_now.notified();
                    tokio::select! {
                        () = self.shutdown.cancelled() => {
                            self.parked.lock().remove(&parked_key);
                            return None;
                        }
                        () = tokio::time::sleep(pause) => {}
                        () = retry_now => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => {
                    self.parked.lock().remove(&parked_key);
                    return Some(Err(Refusal::new(error.class(), error.device_message())));
                }
            }
        };
        self.parked.lock().remove(&parked_key);
        // Discarded while it was being written: the write stands.
        self.discarded.lock().remove(&parked_key);
        let partition = mutation.partition.clone();
        let (result, writes) = match (op, outcome) {
            (_, WriteOutcome::Conflict(current)) => {
                let writes = vec![PartitionWrite { partition, upserts: vec![current.clone()], deletes: Vec::new() }];
                let current = Record { version: 0, ..current };
                let message = "the backend's record changed; see current".to_owned();
                (failure(mutation, ErrorClass::Conflict, message, Some(current)), writes)
            }
            (MutationOp::Delete, _) => {
                let writes =
                    vec![PartitionWrite { partition, upserts: Vec::new(), deletes: vec![mutation.id.clone()] }];
                (success(mutation, None, None), writes)
            }
            (_, WriteOutcome::Stored(record)) => {
                let link = (op == MutationOp::Create && record.id != mutation.id)
                    .then(|| Link { temp_id: mutation.id.clone(), id: record.id.clone() });
                let writes = vec![PartitionWrite { partition, upserts: vec![record.clone()], deletes: Vec::new() }];
                // The backend's own version means nothing to devices, and the Syncline
                // sequence is assigned when the change is logged (for watched sources, later,
                // from the feed): devices learn it from Changes.
                let record = Record { version: 0, ..record };
                (success(mutation, Some(record), link), writes)
            }
            (_, WriteOutcome::Done) => {
                let record = Record { id: mutation.id.clone(), fields: mutation.fields.clone(), version: 0 };
                (success(mutation, Some(record), None), Vec::new())
            }
        };
        Some(Ok(Decided { result, writes }))
    }
}

/// Checks the records a channel answered a write with (the upserts of the log writes they
/// cause: the stored record, or the current one of a conflict) against the record limits.
fn check_backend_records(writes: &[PartitionWrite]) -> Result<(), RecordError> {
    writes.iter().flat_map(|write| &write.upserts).try_for_each(Record::validate)
}

/// The outcome of a mutation whose channel answered with a record that breaks the record
/// limits: a backend bug, so INTERNAL with a generic message (the details are logged).
fn backend_record_refused(mutation: &QueuedMutation) -> MutationResult {
    failure(mutation, ErrorClass::Internal, "the backend returned an invalid record".into(), None)
}

fn success(mutation: &QueuedMutation, record: Option<Record>, link: Option<Link>) -> MutationResult {
    MutationResult { mutation_id: mutation.mutation_id.clone(), ok: true, record, link, error: None }
}

/// Returns the failed outcome of a queued mutation, with the backend's `current` record of a
/// conflict.
fn failure(mutation: &QueuedMutation, class: ErrorClass, message: String, current: Option<Record>) -> MutationResult {
    let mut result = refused(&mutation.mutation_id, mutation.op.to_wire() as i32, class, message);
    if let Some(error) = &mut result.error {
        error.current = current;
    }
    result
}

/// Returns a `MutationResult` refusing a mutation; `op` is the operation as the device sent
/// it (perhaps not one this server knows).
pub fn refused(mutation_id: &str, op: i32, class: ErrorClass, message: impl Into<String>) -> MutationResult {
    MutationResult {
        mutation_id: mutation_id.to_owned(),
        ok: false,
        record: None,
        link: None,
        error: Some(MutationError { op, code: class.error_code() as i32, message: message.into(), current: None }),
    }
}

mod leased;
#[cfg(test)]
mod tests;
