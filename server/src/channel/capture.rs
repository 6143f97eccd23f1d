//! Change capture from channels.
//!
//! - **watch**: one task per channel endpoint follows `Watch` for the endpoint's watched
//!   sources. Each `ChangeBatch` is committed with [`PartitionStore::apply_capture`](crate::storage::PartitionStore::apply_capture) together with its
//!   resume token, so after a crash or a channel restart capture resumes exactly after the
//!   last committed batch: no batch is applied twice and none is skipped. A partition's data
//!   from before the watch began is loaded once with `Query`, by the same task between two
//!   batches, when a device first subscribes to it: the stream then carries every later
//!   change in order, so the partition converges on the backend's state.
//! - **poll**: one task per polled source re-queries the partitions that have subscribers
//!   every interval (and at once when a device subscribes), diffs against the stored
//!   partition and logs only real upserts and deletes (unchanged records are no-ops in the
//!   store).
//!
//! In cluster mode each watcher and poller runs on one node at a time, under a lease
//! (`wiring.rs`); its writes carry the lease's fence ([`Fence`]), so a node that lost the
//! lease cannot move the stored position or overwrite what the next holder wrote. The next
//! holder resumes from the stored position: a batch whose partitions were written but whose
//! position was not is applied again, which changes nothing (unchanged upserts and deletes
//! of absent records take no sequence).
//!
//! Records from a channel are checked like every written record ([`Record::validate`]): one
//! outside the record limits is skipped with a warning and counted in [`CaptureCounters`],
//! and the rest of its batch or partition is applied (there is no caller to answer). Its
//! stored copy, if any, stays as it was: a poll does not take a refused record for a deleted
//! one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use syncline_proto::record::validate_record_id;

pub use super::capture_counters::{CaptureCounters, CaptureError};
use syncline_proto::v1::{ChangeBatch, Record};
use syncline_push::Hub;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ChannelCallError;
use super::grpc::ChannelConnection;
use crate::config::Partitioning;
use crate::storage::{
    CapturePosition, Fence, MAX_BATCH_CHANGES, PageLimit, PartitionName, PartitionWrite, Store, StoreError,
};

/// First pause after a failed channel call; doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between attempts to reach a channel.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Poll requests queued by subscribing devices; more are dropped (the next tick polls anyway).
pub const POLL_REQUEST_QUEUE: usize = 1024;

/// Tells change capture which partitions devices follow: a poller polls only those.
pub trait SubscribedPartitions: Send + Sync + 'static {
    /// Returns the partitions of `source` with at least one subscriber.
    fn subscribed(&self, source: &str) -> Vec<PartitionName>;
}

impl SubscribedPartitions for Hub<PartitionName> {
    fn subscribed(&self, source: &str) -> Vec<PartitionName> {
        self.keys().into_iter().filter(|partition| partition.source == source).collect()
    }
}

/// Where captured changes go: the store, and the counters of what was refused on the way.
#[derive(Clone)]
pub struct CaptureSink {
    pub store: Arc<dyn Store>,
    pub counters: Arc<CaptureCounters>,
}

/// Returns the name under which a watch's resume token is stored: named by the watched
/// sources, not the endpoint URL, so that moving a channel to another address keeps its
/// position.
pub fn watch_position_name(sources: &BTreeMap<String, Partitioning>) -> String {
    let names: Vec<&str> = sources.keys().map(String::as_str).collect();
    format!("watch:{}", names.join(","))
}

/// Exponential backoff for reconnecting to a channel.
struct Retry {
    pause: Duration,
}

impl Retry {
    fn new() -> Self {
        Self { pause: FIRST_RETRY_PAUSE }
    }

    fn reset(&mut self) {
        self.pause = FIRST_RETRY_PAUSE;
    }

    /// Waits before the next attempt; returns false when shutting down.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(MAX_RETRY_PAUSE);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

/// Turns a channel's change batch into validated partition writes for the watched
/// `sources`. Changes to unknown sources or invalid keys are dropped with a warning, and
/// records outside the record limits (or deleted ids that are no record id) are refused
/// through `counters` (they can never be applied); a record that appears twice in a partition
/// keeps its last version; writes larger than one store batch are split.
pub fn batch_writes(
    batch: ChangeBatch,
    sources: &BTreeMap<String, Partitioning>,
    endpoint: &str,
    counters: &CaptureCounters,
) -> Vec<PartitionWrite> {
    let mut writes = Vec::new();
    for changes in batch.partitions {
        let Some(partition) = changes.partition else {
            tracing::warn!(endpoint, "watch batch names no partition; skipped");
            continue;
        };
        let Some(partitioning) = sources.get(&partition.source) else {
            tracing::warn!(endpoint, source = %partition.source, "watch batch for a source not watched here; skipped");
            continue;
        };
        let key = match partitioning {
            Partitioning::App => syncline_proto::APP_PARTITION_KEY.to_owned(),
            Partitioning::User | Partitioning::Custom => {
                if partition.key.is_empty() || partition.key == syncline_proto::APP_PARTITION_KEY {
                    tracing::warn!(endpoint, source = %partition.source, "watch batch without a partition key; skipped");
                    continue;
                }
                partition.key
            }
        };
        let name = PartitionName::new(partition.source, key);
        // Last change of each id wins; deletes and upserts of one id cannot both stay.
        let mut upserts: BTreeMap<String, Record> = BTreeMap::new();
        let mut deletes: BTreeSet<String> = BTreeSet::new();
        for id in changes.deletes {
            match validate_record_id(&id) {
                Ok(()) => {
                    upserts.remove(&id);
                    deletes.insert(id);
                }
                Err(error) => counters.record_refused(endpoint, &name, &error),
            }
        }
        for record in changes.upserts {
            match record.validate() {
                Ok(()) => {
                    deletes.remove(&record.id);
                    upserts.insert(record.id.clone(), record);
                }
                Err(error) => counters.record_refused(endpoint, &name, &error),
            }
        }
        let deletes: Vec<String> = deletes.into_iter().collect();
        let upserts: Vec<Record> = upserts.into_values().collect();
        for chunk in deletes.chunks(MAX_BATCH_CHANGES) {
            writes.push(PartitionWrite { partition: name.clone(), upserts: Vec::new(), deletes: chunk.to_vec() });
        }
        for chunk in upserts.chunks(MAX_BATCH_CHANGES) {
            writes.push(PartitionWrite { partition: name.clone(), upserts: chunk.to_vec(), deletes: Vec::new() });
        }
    }
    writes
}

/// Returns the name of the marker that says a partition's initial Query load is done.
pub fn loaded_marker_name(partition: &PartitionName) -> String {
    format!("loaded:{}\0{}", partition.source, partition.key)
}

/// Follows a channel's Watch stream for `sources` until shutdown, reconnecting with backoff;
/// loads partitions named on `loads` once with Query. Writes carry `fence` (cluster mode).
/// Returns `loads` at shutdown.
pub async fn run_watch(
    sink: CaptureSink,
    connection: ChannelConnection,
    sources: BTreeMap<String, Partitioning>,
    mut loads: mpsc::Receiver<PartitionName>,
    fence: Option<Fence>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<PartitionName> {
    let endpoint = connection.endpoint().to_owned();
    let position_name = watch_position_name(&sources);
    let mut retry = Retry::new();
    tracing::info!(endpoint, sources = ?sources.keys().collect::<Vec<_>>(), "watching channel");
    loop {
        let watch = Watch { sink: &sink, connection: &connection, sources: &sources, fence: fence.as_ref() };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return loads,
            outcome = watch.follow_once(&position_name, &mut retry, &mut loads) => outcome,
        };
        let names = sources.keys().map(String::as_str);
        sink.counters.streaming(names.clone(), false);
        match outcome {
            Ok(()) => tracing::info!(endpoint, "channel ended its watch stream; resuming"),
            Err(WatchFailure::Channel(error)) => {
                sink.counters.failed(names.clone(), CaptureError::Channel);
                sink.counters.capture_failed(names, &error.to_string());
                tracing::warn!(endpoint, %error, "watch interrupted; retrying");
            }
            Err(WatchFailure::Store(error)) => {
                sink.counters.failed(names.clone(), CaptureError::Store);
                sink.counters.capture_failed(names, &error.to_string());
                tracing::error!(endpoint, %error, "cannot store watched changes; retrying")
            }
        }
        if !retry.wait(&shutdown).await {
            return loads;
        }
    }
}

enum WatchFailure {
    Channel(ChannelCallError),
    Store(StoreError),
}

/// One watcher's parts, borrowed for one stream.
struct Watch<'a> {
    sink: &'a CaptureSink,
    connection: &'a ChannelConnection,
    sources: &'a BTreeMap<String, Partitioning>,
    fence: Option<&'a Fence>,
}

impl Watch<'_> {
    async fn follow_once(
        &self,
        position_name: &str,
        retry: &mut Retry,
        loads: &mut mpsc::Receiver<PartitionName>,
    ) -> Result<(), WatchFailure> {
        let Self { sink, connection, sources, fence } = *self;
        let token = {
            let store = sink.store.clone();
            let name = position_name.to_owned();
            blocking(move || store.capture_position(&name)).await.map_err(WatchFailure::Store)?.unwrap_or_default()
        };
        let names: Vec<String> = sources.keys().cloned().collect();
        let stream = connection.watch(names, token).await.map_err(WatchFailure::Channel)?;
        sink.counters.capture_connected(sources.keys().map(String::as_str));
        sink.counters.streaming(sources.keys().map(String::as_str), true);
        let mut stream = std::pin::pin!(stream);
        // App partitions are known up front: load them now rather than at the first subscribe.
        for (source, partitioning) in sources {
            if *partitioning == Partitioning::App {
                self.load_once(&PartitionName::new(source.clone(), syncline_proto::APP_PARTITION_KEY)).await?;
            }
        }
        loop {
            let batch = tokio::select! {
                batch = stream.next() => batch,
                Some(partition) = loads.recv() => {
                    self.load_once(&partition).await?;
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            let batch = batch.map_err(WatchFailure::Channel)?;
            let received = std::time::Instant::now();
            retry.reset();
            let position = CapturePosition {
                name: position_name.to_owned(),
                token: batch.resume_token.clone(),
                fence: fence.cloned(),
            };
            let writes = batch_writes(batch, sources, connection.endpoint(), &sink.counters);
            let store = sink.store.clone();
            blocking(move || store.apply_capture(writes, position)).await.map_err(WatchFailure::Store)?;
            sink.counters.capture_committed(sources.keys().map(String::as_str), received.elapsed());
        }
        Ok(())
    }

    /// Loads a partition with Query unless that was done before (the marker says so).
    async fn load_once(&self, partition: &PartitionName) -> Result<(), WatchFailure> {
        let Self { sink, connection, fence, .. } = *self;
        let marker = loaded_marker_name(partition);
        let loaded = {
            let store = sink.store.clone();
            let marker = marker.clone();
            blocking(move || store.capture_position(&marker)).await.map_err(WatchFailure::Store)?
        };
        if loaded.is_some() {
            return Ok(());
        }
        let logged = poll_partition_under(sink, connection, partition, Missing::Keep, fence).await.map_err(
            |error| match error {
                PollError::Channel(error) => WatchFailure::Channel(error),
                PollError::Store(error) => WatchFailure::Store(error),
            },
        )?;
        let store = sink.store.clone();
        let marker = CapturePosition { name: marker, token: vec![1], fence: fence.cloned() };
        blocking(move || store.apply_capture(Vec::new(), marker)).await.map_err(WatchFailure::Store)?;
        tracing::debug!(endpoint = connection.endpoint(), %partition, logged, "partition loaded from the channel");
        Ok(())
    }
}

/// What a poller polls: a source's partitions (those `subscribed` says devices follow)
/// through its channel, every `interval`.
#[derive(Clone)]
pub struct PollTarget {
    pub subscribed: Arc<dyn SubscribedPartitions>,
    pub connection: ChannelConnection,
    pub source: String,
    pub interval: Duration,
}

/// Polls one source's partitions that have subscribers every `interval`, and any partition
/// named on `requests` at once, until shutdown. Writes carry `fence` (cluster mode).
/// Returns `requests` at shutdown.
pub async fn run_poll(
    sink: CaptureSink,
    target: PollTarget,
    mut requests: mpsc::Receiver<PartitionName>,
    fence: Option<Fence>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<PartitionName> {
    let PollTarget { subscribed, connection, source, interval } = target;
    let endpoint = connection.endpoint().to_owned();
    tracing::info!(endpoint, source, interval_ms = interval.as_millis() as u64, "polling channel");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let partitions: Vec<PartitionName> = tokio::select! {
            () = shutdown.cancelled() => return requests,
            _ = ticker.tick() => subscribed.subscribed(&source),
            Some(partition) = requests.recv() => vec![partition],
        };
        for partition in partitions {
            let started = std::time::Instant::now();
            // Stops mid-poll too: a poller that lost its lease must stop at once.
            let polled = tokio::select! {
                () = shutdown.cancelled() => return requests,
                polled = poll_partition_under(&sink, &connection, &partition, Missing::Delete, fence.as_ref()) => polled,
            };
            match polled {
                Ok(changes) => {
                    sink.counters.polled(&source, started);
                    sink.counters.capture_connected([source.as_str()]);
                    if changes > 0 {
                        sink.counters.capture_committed([source.as_str()], started.elapsed());
                        tracing::debug!(endpoint, %partition, changes, "poll found changes");
                    }
                }
                Err(error) => {
                    let kind = match &error {
                        PollError::Channel(_) => CaptureError::Channel,
                        PollError::Store(_) => CaptureError::Store,
                    };
                    sink.counters.failed([source.as_str()], kind);
                    sink.counters.capture_failed([source.as_str()], &error.to_string());
                    tracing::warn!(endpoint, %partition, %error, "poll failed; will retry next interval");
                }
            }
        }
    }
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Channel(#[from] ChannelCallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a partition query also deletes stored records the channel no longer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Poll: the channel's answer is the whole partition; what it lacks was deleted.
    Delete,
    /// A watched partition's first load: import what the channel has; deletions come through
    /// the feed (and records ingested into the source stay).
    Keep,
}

/// Queries one partition from the channel and applies the difference to the store; returns
/// the number of changes logged.
pub async fn poll_partition(
    sink: &CaptureSink,
    connection: &ChannelConnection,
    partition: &PartitionName,
    missing: Missing,
) -> Result<u64, PollError> {
    poll_partition_under(sink, connection, partition, missing, None).await
}

/// [`poll_partition`], with the writes made under `fence` when given (cluster mode).
async fn poll_partition_under(
    sink: &CaptureSink,
    connection: &ChannelConnection,
    partition: &PartitionName,
    missing: Missing,
    fence: Option<&Fence>,
) -> Result<u64, PollError> {
    let fence = fence.cloned();
    let records = connection.query(&partition.source, &partition.key).await?;
    let CaptureSink { store, counters } = sink.clone();
    let endpoint = connection.endpoint().to_owned();
    let partition = partition.clone();
    let changes = blocking(move || -> Result<u64, StoreError> {
        let stored = store.read_snapshot(&partition, None, PageLimit::unbounded())?;
        let (upserts, refused) = checked_records(records, &endpoint, &partition, &counters);
        let deletes: Vec<String> = match missing {
            Missing::Delete => stored
                .records
                .iter()
                .map(|record| &record.id)
                .filter(|id| !upserts.contains_key(*id) && !refused.contains(*id))
                .cloned()
                .collect(),
            Missing::Keep => Vec::new(),
        };
        // Only records that differ from the stored copy are sent to the store (which would
        // also treat unchanged ones as no-ops, but after encoding each).
        let stored: BTreeMap<&str, &Record> =
            stored.records.iter().map(|record| (record.id.as_str(), record)).collect();
        let upserts: Vec<Record> = upserts
            .into_values()
            .filter(|record| stored.get(record.id.as_str()).is_none_or(|old| old.fields != record.fields))
            .collect();
        let deletes = deletes.chunks(MAX_BATCH_CHANGES).map(|chunk| PartitionWrite {
            partition: partition.clone(),
            upserts: Vec::new(),
            deletes: chunk.to_vec(),
        });
        let upserts = upserts.chunks(MAX_BATCH_CHANGES).map(|chunk| PartitionWrite {
            partition: partition.clone(),
            upserts: chunk.to_vec(),
            deletes: Vec::new(),
        });
        let mut logged = 0;
        for write in deletes.chain(upserts) {
            let batches = match &fence {
                Some(fence) => store.apply_fenced(vec![write], fence)?,
                None => vec![store.apply_batch(&write.partition, write.upserts, write.deletes)?],
            };
            logged += batches.iter().map(|batch| batch.changes.len() as u64).sum::<u64>();
        }
        Ok(logged)
    })
    .await?;
    Ok(changes)
}

/// Returns a partition's records from a channel that are within the record limits, by id (the
/// last of an id wins), and the ids of those refused through `counters`.
fn checked_records(
    records: Vec<Record>,
    endpoint: &str,
    partition: &PartitionName,
    counters: &CaptureCounters,
) -> (BTreeMap<String, Record>, BTreeSet<String>) {
    let mut valid = BTreeMap::new();
    let mut refused = BTreeSet::new();
    for record in records {
        match record.validate() {
            Ok(()) => {
                refused.remove(&record.id);
                valid.insert(record.id.clone(), record);
            }
            Err(error) => {
                counters.record_refused(endpoint, partition, &error);
                valid.remove(&record.id);
                refused.insert(record.id);
            }
        }
    }
    (valid, refused)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::v1::{PartitionChanges, PartitionKey, Value};

    fn changes(source: &str, key: &str, upserts: &[&str], deletes: &[&str]) -> PartitionChanges {
        PartitionChanges {
            partition: Some(PartitionKey { source: source.into(), key: key.into() }),
            upserts: upserts.iter().map(|id| Record { id: (*id).into(), ..Record::default() }).collect(),
            deletes: deletes.iter().map(|id| (*id).to_string()).collect(),
        }
    }

    #[test]
    fn batches_are_validated_and_normalised() {
        let sources: BTreeMap<String, Partitioning> =
            [("Account".to_owned(), Partitioning::App), ("Contact".to_owned(), Partitioning::User)].into();
        let batch = ChangeBatch {
            partitions: vec![
                changes("Account", "ignored", &["a", "b", ""], &["b", "c"]),
                changes("Contact", "", &["x"], &[]),
                changes("Contact", "ann", &["x"], &["x"]),
                changes("Unknown", "*", &["u"], &[]),
            ],
            resume_token: vec![1],
        };
        let counters = CaptureCounters::default();
        let writes = batch_writes(batch, &sources, "test", &counters);
        assert_eq!(counters.refused_records(), 1, "the empty id");
        let summary: Vec<(String, Vec<String>, Vec<String>)> = writes
            .into_iter()
            .map(|w| (w.partition.to_string(), w.upserts.into_iter().map(|r| r.id).collect(), w.deletes))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Account/*".into(), vec![], vec!["c".into()]),
                ("Account/*".into(), vec!["a".into(), "b".into()], vec![]),
                ("Contact/ann".into(), vec!["x".into()], vec![]),
            ]
        );
    }

    fn with_field(id: &str, name: &str, value: Value) -> Record {
        Record { id: id.into(), fields: [(name.to_owned(), value)].into(), version: 0 }
    }

    /// Issue 13: a channel's record outside the record limits is refused and counted; the
    /// rest of its batch is applied.
    #[test]
    fn records_outside_the_limits_are_refused_and_counted() {
        let sources: BTreeMap<String, Partitioning> = [("Account".to_owned(), Partitioning::App)].into();
        let mut account = changes("Account", "*", &["ok"], &["gone", ""]);
        account.upserts.push(with_field("unnamed", "", Value::int(1)));
        account.upserts.push(with_field("hollow", "n", Value { kind: None }));
        account.upserts.push(with_field("ok2", "n", Value::int(2)));
        let batch = ChangeBatch { partitions: vec![account], resume_token: vec![1] };
        let counters = CaptureCounters::default();
        let writes = batch_writes(batch, &sources, "test", &counters);
        let upserts: Vec<&str> = writes.iter().flat_map(|w| &w.upserts).map(|r| r.id.as_str()).collect();
        let deletes: Vec<&str> = writes.iter().flat_map(|w| &w.deletes).map(String::as_str).collect();
        assert_eq!((upserts, deletes), (vec!["ok", "ok2"], vec!["gone"]));
        assert_eq!(counters.refused_records(), 3, "the unnamed field, the value without a kind, the empty id");
    }

    #[test]
    fn a_polled_record_outside_the_limits_is_refused_not_deleted() {
        let partition = PartitionName::new("Account", "*");
        let counters = CaptureCounters::default();
        let records = vec![
            with_field("a", "n", Value::int(1)),
            with_field("b", "", Value::int(1)),
            with_field("c", "n", Value::int(1)),
            with_field("c", "n", Value { kind: None }),
            with_field("d", "n", Value { kind: None }),
            with_field("d", "n", Value::int(4)),
        ];
        let (valid, refused) = checked_records(records, "test", &partition, &counters);
        assert_eq!(valid.keys().collect::<Vec<_>>(), ["a", "d"], "the last record of an id wins");
        assert_eq!(refused.iter().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(counters.refused_records(), 3);
    }
}
