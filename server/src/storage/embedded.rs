//! The embedded store: redb, one file under the data directory, fsync on commit.
//!
//! All partition writes from [`Store::apply_batch`] go through one dedicated writer thread
//! (group commit): callers queue their validated batch and block until the writer has applied
//! every queued batch in one write transaction, committed it with `Durability::Immediate`
//! (one fsync for the whole group), called the [`CommitListener`] in commit order and answered
//! them. Compaction, cursors, users, devices and secrets write in their own transactions on
//! the caller's thread; redb serialises write transactions, and every write reads the state it
//! changes inside its own transaction, so the two never race. Reads are redb read
//! transactions, each a consistent snapshot, and never wait for writers.
//!
//! Stored layout (format version 2); every table is keyed so that one partition's (or one
//! device's) entries are contiguous:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `store_meta` | name | `u64` (format version, next partition id) |
//! | `partition_ids` | (source, key) | partition id |
//! | `partition_meta` | partition id | (head, horizon, total, checksum) |
//! | `records` | (partition id, record id) | version (8 bytes LE) ++ prost `Record` holding only the fields |
//! | `log` | (partition id, seq) | `1` ++ id length (2 bytes LE) ++ id ++ prost fields, or `2` ++ id (delete) |
//! | `cursors` | (client id, source, key) | cursor |
//! | `users` | name | prost `UserValue` |
//! | `devices` | client id | prost `DeviceValue` |
//! | `secrets` | name | bytes |
//! | `capture_positions` | capture name | opaque position (e.g. a Watch resume token) |
//! | `mutations` | (client id, queue position) | prost `MutationValue` (unfinished mutations only) |
//! | `mutation_ids` | (client id, mutation id) | queue position |
//! | `mutation_results` | (client id, mutation id) | finished at (Unix ms, 8 bytes LE) ++ prost `MutationResult` |
//! | `mutation_result_ages` | (finished at, client id, mutation id) | () |
//!
//! Format 1 (before mutation outcomes had tables of their own) is migrated when opened: see
//! [`mutation_queue`].
//!
//! "Prost fields" is the encoding of a `Record` whose id is empty and version 0, i.e. only its
//! fields map; maps are `BTreeMap`s, so equal fields encode to equal bytes, which is how an
//! unchanged upsert is detected (NaN payloads compare by bit pattern).

use std::collections::HashSet;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use parking_lot::RwLock;
use prost::Message;
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use syncline_proto::checksum::Checksum;
use syncline_proto::v1::Record;
use tracing::error;

use self::mutation_queue::{MUTATION_IDS, MUTATION_RESULT_AGES, MUTATION_RESULTS, MUTATIONS, MutationTables};
use super::{
    CapturePosition, Change, CommitListener, CommittedBatch, CompactionReport, Enqueued, LogPage, MAX_BATCH_CHANGES,
    MAX_RECORD_ID_BYTES, MutationOutcome, PageFill, PageLimit, PartitionName, PartitionState, PartitionWrite,
    QueuedMutation, SnapshotPage, Store, StoreError, StoreResult, StoredDevice, StoredUser, record_item_bytes,
};

mod mutation_queue;

/// Default redb page cache: 64 MiB keeps the hot part of a small or medium deployment's
/// records and logs in memory without making a single binary on a small VM memory-hungry
/// (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// Batches that may wait for the writer thread: past this, `apply_batch` callers block on
/// the queue (backpressure) instead of growing memory without bound. Large enough that a
/// burst from every connected backend fits while one group commits.
const WRITE_QUEUE_CAPACITY: usize = 1024;

/// Most batches applied in one group commit: bounds the latency a batch can add to the
/// others of its group and the memory of one group's replies.
const MAX_GROUP_BATCHES: usize = 512;

/// Most changes applied in one group commit (a batch is never split, so a single batch of
/// [`MAX_BATCH_CHANGES`] always fits): bounds the size of one write transaction.
const MAX_GROUP_CHANGES: usize = 4 * MAX_BATCH_CHANGES;

/// Log entries examined per compaction transaction: compaction holds the write lock only
/// this long at a time, so batches from the writer thread interleave with a long compaction.
const COMPACTION_STEP_ENTRIES: usize = 10_000;

/// Version of the stored layout described in the module docs; an older file is migrated, a
/// newer one is refused rather than misread.
const FORMAT_VERSION: u64 = 2;

const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
const PARTITION_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("partition_ids");
const PARTITION_META: TableDefinition<u64, (u64, u64, u64, u64)> = TableDefinition::new("partition_meta");
const RECORDS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("records");
const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
const CURSORS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("cursors");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const CAPTURE_POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("capture_positions");

const FORMAT_VERSION_KEY: &str = "format_version";
const NEXT_PARTITION_ID_KEY: &str = "next_partition_id";

const LOG_KIND_UPSERT: u8 = 1;
const LOG_KIND_DELETE: u8 = 2;

/// Tuning of the embedded store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Memory redb may use to cache pages of the file, in bytes.
    pub cache_size_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { cache_size_bytes: DEFAULT_CACHE_SIZE_BYTES }
    }
}

/// Counters of the writer thread, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Batches handed to the writer thread.
    pub submitted_batches: u64,
    /// Batches the writer has answered (committed, unchanged or failed).
    pub answered_batches: u64,
    /// Write transactions the writer has committed (one fsync each).
    pub commits: u64,
    /// Commits that took at least [`SLOW_COMMIT`] (each also logged as a warning).
    pub slow_commits: u64,
    /// The longest commit so far, in microseconds.
    pub slowest_commit_micros: u64,
}

/// A commit (making a group durable: mostly the fsync) that takes this long holds back every
/// write queued behind it and every live push of them, so it is counted and logged.
pub const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The embedded (redb) [`Store`]. See the module docs. Dropping it stops the writer thread
/// (joined) after it has answered every queued batch, then closes the file.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    /// `None` only while dropping: closing it stops the writer thread.
    requests: Option<SyncSender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by callers and the writer thread.
struct Shared {
    db: Database,
    listener: RwLock<Option<Arc<dyn CommitListener>>>,
    submitted_batches: AtomicU64,
    answered_batches: AtomicU64,
    commits: AtomicU64,
    slow_commits: AtomicU64,
    slowest_commit_micros: AtomicU64,
}

/// What a write request records beside its partition writes, in the same commit.
enum CommitMarker {
    /// How far change capture has read ([`Store::apply_capture`]).
    Capture(CapturePosition),
    /// A mutation finished with this outcome ([`Store::finish_mutation`]).
    MutationFinished(MutationOutcome),
}

/// One `apply_batch`, `apply_capture` or `finish_mutation` call waiting for the writer
/// thread: its partition writes (and marker) commit together or not at all.
struct WriteRequest {
    writes: Vec<PartitionWrite>,
    marker: Option<CommitMarker>,
    reply: SyncSender<StoreResult<Vec<CommittedBatch>>>,
}

impl WriteRequest {
    fn changes(&self) -> usize {
        self.writes.iter().map(|write| write.upserts.len() + write.deletes.len()).sum()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating its parent directories, and
    /// starts the writer thread. Fails with [`StoreError::Locked`] when another process (or
    /// another store in this process) has the file open.
    pub fn open(path: &Path, options: EmbeddedOptions) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| StoreError::Io(format!("cannot create directory {}: {source}", parent.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_size_bytes)
            .create(path)
            .map_err(|source| open_error(path, source))?;
        initialise(&db)?;

        let shared = Arc::new(Shared {
            db,
            listener: RwLock::new(None),
            submitted_batches: AtomicU64::new(0),
            answered_batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            slow_commits: AtomicU64::new(0),
            slowest_commit_micros: AtomicU64::new(0),
        });
        let (requests, queue) = sync_channel(WRITE_QUEUE_CAPACITY);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("syncline-store-writer".to_owned())
            .spawn(move || run_writer(&writer_shared, &queue))
            .map_err(|source| StoreError::Io(format!("cannot start the writer thread: {source}")))?;
        Ok(Self { shared, requests: Some(requests), writer: Some(writer) })
    }

    /// Returns the writer thread's counters.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            submitted_batches: self.shared.submitted_batches.load(Ordering::Acquire),
            answered_batches: self.shared.answered_batches.load(Ordering::Acquire),
            commits: self.shared.commits.load(Ordering::Acquire),
            slow_commits: self.shared.slow_commits.load(Ordering::Acquire),
            slowest_commit_micros: self.shared.slowest_commit_micros.load(Ordering::Acquire),
        }
    }

    /// Validates the writes, hands them to the writer thread and waits for the durable
    /// outcome.
    fn submit(&self, writes: Vec<PartitionWrite>, marker: Option<CommitMarker>) -> StoreResult<Vec<CommittedBatch>> {
        for write in &writes {
            validate_batch(&write.upserts, &write.deletes)?;
        }
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = sync_channel(1);
        requests.send(WriteRequest { writes, marker, reply }).map_err(|_| StoreError::Closed)?;
        self.shared.submitted_batches.fetch_add(1, Ordering::AcqRel);
        // The writer drops the reply sender without answering only if it died.
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn begin_read(&self) -> StoreResult<ReadTransaction> {
        self.shared.db.begin_read().map_err(store_error)
    }

    fn begin_write(&self) -> StoreResult<WriteTransaction> {
        self.shared.db.begin_write().map_err(store_error)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer loop once it has answered what is queued.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!("store writer thread panicked");
        }
    }
}

impl Store for EmbeddedStore {
    fn apply_batch(
        &self,
        partition: &PartitionName,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> StoreResult<CommittedBatch> {
        let write = PartitionWrite { partition: partition.clone(), upserts, deletes };
        let mut batches = self.submit(vec![write], None)?;
        batches.pop().ok_or_else(|| StoreError::Io("the writer answered without a batch".into()))
    }

    fn apply_capture(
        &self,
        writes: Vec<PartitionWrite>,
        position: CapturePosition,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(writes, Some(CommitMarker::Capture(position)))
    }

    fn finish_mutation(
        &self,
        writes: Vec<PartitionWrite>,
        outcome: MutationOutcome,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(writes, Some(CommitMarker::MutationFinished(outcome)))
    }

    fn prune_mutation_outcomes(&self, finished_before_ms: u64) -> StoreResult<u64> {
        let mut removed = 0;
        loop {
            let txn = self.begin_write()?;
            let (step, more) = mutation_queue::prune_step(&txn, finished_before_ms)?;
            txn.commit().map_err(store_error)?;
            removed += step;
            if !more {
                return Ok(removed);
            }
        }
    }

    fn enqueue_mutation(&self, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued> {
        let txn = self.begin_write()?;
        let outcome = mutation_queue::enqueue(&txn, mutation, max_pending)?;
        if matches!(outcome, Enqueued::Queued { .. }) {
            txn.commit().map_err(store_error)?;
        }
        Ok(outcome)
    }

    fn record(&self, partition: &PartitionName, id: &str) -> StoreResult<Option<Record>> {
        let txn = self.begin_read()?;
        let Some((partition_id, _)) = read_partition(&txn, partition)? else {
            return Ok(None);
        };
        let records = txn.open_table(RECORDS).map_err(store_error)?;
        let Some(value) = records.get((partition_id, id)).map_err(store_error)? else {
            return Ok(None);
        };
        decode_record(id, value.value()).map(Some)
    }

    fn pending_mutations(&self) -> StoreResult<Vec<QueuedMutation>> {
        let txn = self.begin_read()?;
        mutation_queue::pending(&txn.open_table(MUTATIONS).map_err(store_error)?)
    }

    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let txn = self.begin_read()?;
        let positions = txn.open_table(CAPTURE_POSITIONS).map_err(store_error)?;
        Ok(positions.get(name).map_err(store_error)?.map(|value| value.value().to_vec()))
    }

    fn partition_state(&self, partition: &PartitionName) -> StoreResult<PartitionState> {
        let txn = self.begin_read()?;
        Ok(read_partition(&txn, partition)?.map_or_else(PartitionState::default, |(_, s)| s))
    }

    fn read_log(&self, partition: &PartitionName, after: u64, limit: PageLimit) -> StoreResult<LogPage> {
        let txn = self.begin_read()?;
        let Some((id, state)) = read_partition(&txn, partition)? else {
            return Ok(LogPage { changes: Vec::new(), covered_to: after, state: Default::default() });
        };
        let log = txn.open_table(LOG).map_err(store_error)?;
        let range = log
            .range::<(u64, u64)>((Bound::Excluded((id, after)), Bound::Included((id, u64::MAX))))
            .map_err(store_error)?;
        let mut changes = Vec::new();
        let mut fill = PageFill::new(limit);
        let mut reached_end = true;
        for entry in range {
            let (key, value) = entry.map_err(store_error)?;
            let change = if fill.is_full() { None } else { Some(decode_log_entry(key.value().1, value.value())?) };
            match change {
                Some(change) if fill.admit(change.item_bytes()) => changes.push(change),
                _ => {
                    reached_end = false;
                    break;
                }
            }
        }
        let covered_to = if reached_end { after.max(state.head) } else { changes.last().map_or(after, Change::seq) };
        Ok(LogPage { changes, covered_to, state })
    }

    fn read_snapshot(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
    ) -> StoreResult<SnapshotPage> {
        let txn = self.begin_read()?;
        let Some((id, state)) = read_partition(&txn, partition)? else {
            return Ok(SnapshotPage { records: Vec::new(), done: true, state: Default::default() });
        };
        let records = txn.open_table(RECORDS).map_err(store_error)?;
        let lower = match after_id {
            Some(after_id) => Bound::Excluded((id, after_id)),
            None => Bound::Included((id, "")),
        };
        let range = records.range::<(u64, &str)>((lower, Bound::Excluded((id + 1, "")))).map_err(store_error)?;
        let mut page = Vec::new();
        let mut fill = PageFill::new(limit);
        let mut done = true;
        for entry in range {
            let (key, value) = entry.map_err(store_error)?;
            let record = if fill.is_full() { None } else { Some(decode_record(key.value().1, value.value())?) };
            match record {
                Some(record) if fill.admit(record_item_bytes(&record)) => page.push(record),
                _ => {
                    done = false;
                    break;
                }
            }
        }
        Ok(SnapshotPage { records: page, done, state })
    }

    fn compact(&self, partition: &PartitionName, keep_recent: u64) -> StoreResult<CompactionReport> {
        let mut txn = self.begin_write()?;
        let Some((id, mut state)) = read_partition(&txn, partition)? else {
            return Ok(CompactionReport::default());
        };
        if state.head <= keep_recent {
            return Ok(CompactionReport { removed: 0, horizon: state.horizon });
        }
        let point = state.head - keep_recent;
        if point > state.horizon {
            // The horizon rises in the same transaction as (and so no later than) the first
            // purged tombstone: a device below it is sent a snapshot instead of a log that
            // misses that delete.
            state.horizon = point;
            let mut meta = txn.open_table(PARTITION_META).map_err(store_error)?;
            meta.insert(id, state_value(&state)).map_err(store_error)?;
        }
        let mut removed = 0;
        let mut scanned_to = 0;
        loop {
            let step = compact_step(&txn, id, scanned_to, point)?;
            removed += step.removed;
            if step.finished {
                // The last step is durable, so `compact` returns with its work persisted;
                // the earlier steps ride on it (or on any later durable commit).
                txn.commit().map_err(store_error)?;
                break;
            }
            txn.set_durability(Durability::None).map_err(store_error)?;
            txn.commit().map_err(store_error)?;
            scanned_to = step.scanned_to;
            txn = self.begin_write()?;
        }
        Ok(CompactionReport { removed, horizon: state.horizon })
    }

    fn partitions(&self) -> StoreResult<Vec<PartitionName>> {
        let txn = self.begin_read()?;
        let ids = txn.open_table(PARTITION_IDS).map_err(store_error)?;
        let mut names = Vec::new();
        for entry in ids.iter().map_err(store_error)? {
            let (key, _) = entry.map_err(store_error)?;
            let (source, key) = key.value();
            names.push(PartitionName::new(source, key));
        }
        Ok(names)
    }

    fn save_cursors(&self, cursors: &[(String, PartitionName, u64)]) -> StoreResult<()> {
        let mut txn = self.begin_write()?;
        // Cursors are advisory: a non-durable commit is persisted by the next durable one
        // (any batch), and losing the last few on a crash only makes a device resend more.
        txn.set_durability(Durability::None).map_err(store_error)?;
        {
            let mut table = txn.open_table(CURSORS).map_err(store_error)?;
            for (client_id, partition, cursor) in cursors {
                let key = (client_id.as_str(), partition.source.as_str(), partition.key.as_str());
                table.insert(key, *cursor).map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    fn cursor(&self, client_id: &str, partition: &PartitionName) -> StoreResult<Option<u64>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(CURSORS).map_err(store_error)?;
        let key = (client_id, partition.source.as_str(), partition.key.as_str());
        Ok(table.get(key).map_err(store_error)?.map(|cursor| cursor.value()))
    }

    fn add_user(&self, user: &StoredUser) -> StoreResult<()> {
        let txn = self.begin_write()?;
        {
            let mut users = txn.open_table(USERS).map_err(store_error)?;
            if users.get(user.name.as_str()).map_err(store_error)?.is_some() {
                return Err(StoreError::UserExists { name: user.name.clone() });
            }
            let value = UserValue { password_hash: user.password_hash.clone() }.encode_to_vec();
            users.insert(user.name.as_str(), value.as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }

    fn set_user_password(&self, name: &str, password_hash: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        {
            let mut users = txn.open_table(USERS).map_err(store_error)?;
            if users.get(name).map_err(store_error)?.is_none() {
                return Ok(false);
            }
            let value = UserValue { password_hash: password_hash.to_owned() }.encode_to_vec();
            users.insert(name, value.as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        Ok(true)
    }

    fn user(&self, name: &str) -> StoreResult<Option<StoredUser>> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS).map_err(store_error)?;
        let Some(value) = users.get(name).map_err(store_error)? else {
            return Ok(None);
        };
        let value = UserValue::decode(value.value()).map_err(|e| corrupt("user", &e))?;
        Ok(Some(StoredUser { name: name.to_owned(), password_hash: value.password_hash }))
    }

    fn user_count(&self) -> StoreResult<u64> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS).map_err(store_error)?;
        users.len().map_err(store_error)
    }

    fn put_device(&self, device: &StoredDevice) -> StoreResult<()> {
        let value = DeviceValue {
            user_id: device.user_id.clone(),
            platform: device.platform.clone(),
            app_version: device.app_version.clone(),
            model: device.model.clone(),
            created_ms: device.created_ms,
            last_seen_ms: device.last_seen_ms,
            state: device.state.clone(),
            token_generation: device.token_generation,
        }
        .encode_to_vec();
        let txn = self.begin_write()?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(store_error)?;
            devices.insert(device.client_id.as_str(), value.as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }

    fn device(&self, client_id: &str) -> StoreResult<Option<StoredDevice>> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES).map_err(store_error)?;
        let Some(value) = devices.get(client_id).map_err(store_error)? else {
            return Ok(None);
        };
        let value = DeviceValue::decode(value.value()).map_err(|e| corrupt("device", &e))?;
        Ok(Some(StoredDevice {
            client_id: client_id.to_owned(),
            user_id: value.user_id,
            platform: value.platform,
            app_version: value.app_version,
            model: value.model,
            created_ms: value.created_ms,
            last_seen_ms: value.last_seen_ms,
            state: value.state,
            token_generation: value.token_generation,
        }))
    }

    fn secret(&self, name: &str, generate: &dyn Fn() -> Vec<u8>) -> StoreResult<Vec<u8>> {
        {
            let txn = self.begin_read()?;
            let secrets = txn.open_table(SECRETS).map_err(store_error)?;
            if let Some(value) = secrets.get(name).map_err(store_error)? {
                return Ok(value.value().to_vec());
            }
        }
        let txn = self.begin_write()?;
        let secret = {
            let mut secrets = txn.open_table(SECRETS).map_err(store_error)?;
            // Another caller may have created it since the read above.
            if let Some(value) = secrets.get(name).map_err(store_error)? {
                return Ok(value.value().to_vec());
            }
            let secret = generate();
            secrets.insert(name, secret.as_slice()).map_err(store_error)?;
            secret
        };
        txn.commit().map_err(store_error)?;
        Ok(secret)
    }

    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.shared.listener.write() = Some(listener);
    }
}

/// A stored user (key: name).
#[derive(Clone, PartialEq, prost::Message)]
struct UserValue {
    #[prost(string, tag = "1")]
    password_hash: String,
}

/// A stored device (key: client id).
#[derive(Clone, PartialEq, prost::Message)]
struct DeviceValue {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    platform: String,
    #[prost(string, tag = "3")]
    app_version: String,
    #[prost(string, tag = "4")]
    model: String,
    #[prost(int64, tag = "5")]
    created_ms: i64,
    #[prost(int64, tag = "6")]
    last_seen_ms: i64,
    #[prost(string, tag = "7")]
    state: String,
    #[prost(uint64, tag = "8")]
    token_generation: u64,
}

/// Creates every table and checks (or records) the format version, migrating an older
/// file, so that read transactions never meet a missing table.
fn initialise(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(store_error)?;
    {
        let mut meta = txn.open_table(STORE_META).map_err(store_error)?;
        let stored = meta.get(FORMAT_VERSION_KEY).map_err(store_error)?.map(|v| v.value());
        open_every_table(&txn)?;
        match stored {
            Some(FORMAT_VERSION) => {}
            Some(1) => {
                let moved = mutation_queue::migrate_from_format_1(&txn, CAPTURE_POSITIONS, now_ms())?;
                meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION).map_err(store_error)?;
                tracing::info!(moved, "store migrated from format 1 to 2: mutation outcomes have tables of their own");
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "the store file has format version {other}; this build reads versions 1 to \
                     {FORMAT_VERSION}"
                )));
            }
            None => {
                meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION).map_err(store_error)?;
            }
        }
    }
    txn.commit().map_err(store_error)
}

/// Opens (creating where missing) every table of the layout.
fn open_every_table(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(PARTITION_IDS).map_err(store_error)?;
    txn.open_table(PARTITION_META).map_err(store_error)?;
    txn.open_table(RECORDS).map_err(store_error)?;
    txn.open_table(LOG).map_err(store_error)?;
    txn.open_table(CURSORS).map_err(store_error)?;
    txn.open_table(USERS).map_err(store_error)?;
    txn.open_table(DEVICES).map_err(store_error)?;
    txn.open_table(SECRETS).map_err(store_error)?;
    txn.open_table(CAPTURE_POSITIONS).map_err(store_error)?;
    txn.open_table(MUTATIONS).map_err(store_error)?;
    txn.open_table(MUTATION_IDS).map_err(store_error)?;
    txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
    txn.open_table(MUTATION_RESULT_AGES).map_err(store_error)?;
    Ok(())
}

/// Returns the current Unix time in milliseconds (the finish time of mutation outcomes).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Checks a batch against the limits of [`Store::apply_batch`] without touching the store.
fn validate_batch(upserts: &[Record], deletes: &[String]) -> StoreResult<()> {
    let changes = upserts.len() + deletes.len();
    if changes > MAX_BATCH_CHANGES {
        return Err(StoreError::BatchTooLarge { changes });
    }
    let mut seen = HashSet::with_capacity(changes);
    let ids = deletes.iter().map(String::as_str).chain(upserts.iter().map(|r| r.id.as_str()));
    for id in ids {
        if id.is_empty() || id.len() > MAX_RECORD_ID_BYTES {
            return Err(StoreError::InvalidRecordId { id: id.to_owned() });
        }
        if !seen.insert(id) {
            return Err(StoreError::DuplicateId { id: id.to_owned() });
        }
    }
    Ok(())
}

/// The writer thread: takes every queued batch (within the group bounds), commits them
/// together, and repeats until the queue is closed.
fn run_writer(shared: &Shared, queue: &Receiver<WriteRequest>) {
    let mut carried: Option<WriteRequest> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match queue.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut changes = first.changes();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES {
            match queue.try_recv() {
                Ok(next) if changes + next.changes() > MAX_GROUP_CHANGES => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    changes += next.changes();
                    group.push(next);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        commit_group(shared, group);
    }
}

/// Why a group's transaction did not commit.
enum GroupFailure {
    /// Applying one batch failed: it alone gets the error, the others are retried.
    Batch { index: usize, error: StoreError },
    /// The transaction failed as a whole: every batch gets the error.
    Transaction(StoreError),
}

/// Which input a change that took a sequence came from.
#[derive(Clone, Copy)]
enum Assigned {
    Delete(usize),
    Upsert(usize),
}

/// What applying one batch inside the group's transaction did.
struct BatchOutcome {
    /// The sources of the changes that took sequences, in sequence order.
    assigned: Vec<Assigned>,
    first_seq: u64,
    state: PartitionState,
}

/// Applies a group in one transaction, then notifies the listener and answers the callers
/// in commit order.
fn commit_group(shared: &Shared, mut group: Vec<WriteRequest>) {
    loop {
        match apply_group(shared, &mut group) {
            Ok(outcomes) => {
                let answers: Vec<_> = group
                    .into_iter()
                    .zip(outcomes)
                    .map(|(request, outcomes)| {
                        let batches: Vec<CommittedBatch> = request
                            .writes
                            .into_iter()
                            .zip(outcomes)
                            .map(|(write, outcome)| {
                                committed_batch(write.partition, write.upserts, write.deletes, outcome)
                            })
                            .collect();
                        (request.reply, batches)
                    })
                    .collect();
                // The whole group at once, so that live push can send one frame per
                // partition for it; before the answers, as each caller is promised.
                if let Some(listener) = shared.listener.read().clone() {
                    let changed: Vec<&CommittedBatch> = answers
                        .iter()
                        .flat_map(|(_, batches)| batches)
                        .filter(|batch| !batch.changes.is_empty())
                        .collect();
                    if !changed.is_empty() {
                        notify(listener.as_ref(), &changed);
                    }
                }
                for (reply, batches) in answers {
                    answer(shared, &reply, Ok(batches));
                }
                return;
            }
            Err(GroupFailure::Batch { index, error }) => {
                let failed = group.remove(index);
                answer(shared, &failed.reply, Err(error));
                if group.is_empty() {
                    return;
                }
            }
            Err(GroupFailure::Transaction(error)) => {
                for request in &group {
                    answer(shared, &request.reply, Err(same_error(&error)));
                }
                return;
            }
        }
    }
}

/// Applies every batch of the group in one write transaction and commits it (only if
/// something changed: a group of unchanged batches needs no fsync).
fn apply_group(shared: &Shared, group: &mut [WriteRequest]) -> Result<Vec<Vec<BatchOutcome>>, GroupFailure> {
    let txn = shared.db.begin_write().map_err(|e| GroupFailure::Transaction(store_error(e)))?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut markers_written = false;
    {
        let mut tables = PartitionTables::open(&txn).map_err(GroupFailure::Transaction)?;
        let mut positions = txn.open_table(CAPTURE_POSITIONS).map_err(|e| GroupFailure::Transaction(store_error(e)))?;
        let mut mutations = MutationTables::open(&txn).map_err(GroupFailure::Transaction)?;
        let finished_ms = now_ms();
        for (index, request) in group.iter_mut().enumerate() {
            // A failed request leaves partial writes in the transaction, which is therefore
            // dropped (aborted) and the group retried without it.
            let mut request_outcomes = Vec::with_capacity(request.writes.len());
            for write in &mut request.writes {
                let outcome =
                    apply_batch_in(&mut tables, write).map_err(|error| GroupFailure::Batch { index, error })?;
                request_outcomes.push(outcome);
            }
            let marked = match &request.marker {
                None => Ok(()),
                Some(CommitMarker::Capture(position)) => {
                    positions.insert(position.name.as_str(), position.token.as_slice()).map(drop).map_err(store_error)
                }
                Some(CommitMarker::MutationFinished(outcome)) => mutations.finish(outcome, finished_ms),
            };
            marked.map_err(|error| GroupFailure::Batch { index, error })?;
            markers_written |= request.marker.is_some();
            outcomes.push(request_outcomes);
        }
    }
    if !markers_written && outcomes.iter().flatten().all(|outcome| outcome.assigned.is_empty()) {
        txn.abort().map_err(|e| GroupFailure::Transaction(store_error(e)))?;
    } else {
        let started = std::time::Instant::now();
        txn.commit().map_err(|e| GroupFailure::Transaction(store_error(e)))?;
        let took = started.elapsed();
        shared.commits.fetch_add(1, Ordering::AcqRel);
        shared.slowest_commit_micros.fetch_max(took.as_micros() as u64, Ordering::AcqRel);
        if took >= SLOW_COMMIT {
            shared.slow_commits.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                commit_ms = took.as_millis() as u64,
                requests = group.len(),
                "slow commit: the disk took this long to make a group of writes durable; they and their live pushes waited"
            );
        }
    }
    Ok(outcomes)
}

/// The tables a partition write touches, open in one write transaction.
struct PartitionTables<'txn> {
    store_meta: Table<'txn, &'static str, u64>,
    ids: Table<'txn, (&'static str, &'static str), u64>,
    meta: Table<'txn, u64, (u64, u64, u64, u64)>,
    records: Table<'txn, (u64, &'static str), &'static [u8]>,
    log: Table<'txn, (u64, u64), &'static [u8]>,
}

impl<'txn> PartitionTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            store_meta: txn.open_table(STORE_META).map_err(store_error)?,
            ids: txn.open_table(PARTITION_IDS).map_err(store_error)?,
            meta: txn.open_table(PARTITION_META).map_err(store_error)?,
            records: txn.open_table(RECORDS).map_err(store_error)?,
            log: txn.open_table(LOG).map_err(store_error)?,
        })
    }

    /// Returns the partition's id, allocating one if `create` and it has none yet.
    fn partition_id(&mut self, name: &PartitionName, create: bool) -> StoreResult<Option<u64>> {
        let key = (name.source.as_str(), name.key.as_str());
        if let Some(id) = self.ids.get(key).map_err(store_error)? {
            return Ok(Some(id.value()));
        }
        if !create {
            return Ok(None);
        }
        let next = self.store_meta.get(NEXT_PARTITION_ID_KEY).map_err(store_error)?;
        let id = next.map_or(1, |next| next.value());
        self.store_meta.insert(NEXT_PARTITION_ID_KEY, id + 1).map_err(store_error)?;
        self.ids.insert(key, id).map_err(store_error)?;
        Ok(Some(id))
    }
}

/// Applies one validated batch inside the group's transaction: deletes first, then upserts,
/// each in input order; unchanged upserts and deletes of absent ids take no sequence.
fn apply_batch_in(tables: &mut PartitionTables<'_>, request: &mut PartitionWrite) -> StoreResult<BatchOutcome> {
    // A batch of deletes cannot change a partition that does not exist yet.
    let create = !request.upserts.is_empty();
    let Some(id) = tables.partition_id(&request.partition, create)? else {
        return Ok(BatchOutcome { assigned: Vec::new(), first_seq: 0, state: Default::default() });
    };
    let mut state =
        tables.meta.get(id).map_err(store_error)?.map_or_else(PartitionState::default, |v| state_from(v.value()));
    let first_seq = state.head + 1;
    let mut checksum = Checksum(state.checksum);
    let mut assigned = Vec::new();

    for (index, record_id) in request.deletes.iter().enumerate() {
        let Some(old) = tables.records.remove((id, record_id.as_str())).map_err(store_error)? else {
            continue;
        };
        let (old_version, _) = split_record_value(old.value())?;
        drop(old);
        state.head += 1;
        state.total = state.total.checked_sub(1).ok_or_else(|| {
            StoreError::Corrupt(format!("partition {} counts fewer records than it holds", request.partition))
        })?;
        checksum.remove(record_id, old_version);
        let entry = delete_log_value(record_id);
        tables.log.insert((id, state.head), entry.as_slice()).map_err(store_error)?;
        assigned.push(Assigned::Delete(index));
    }

    for (index, record) in request.upserts.iter_mut().enumerate() {
        let fields = encode_fields(record);
        let key = (id, record.id.as_str());
        let old_version = match tables.records.get(key).map_err(store_error)? {
            Some(old) => {
                let (old_version, old_fields) = split_record_value(old.value())?;
                if old_fields == fields.as_slice() {
                    continue;
                }
                Some(old_version)
            }
            None => None,
        };
        state.head += 1;
        match old_version {
            Some(old_version) => checksum.remove(&record.id, old_version),
            None => state.total += 1,
        }
        checksum.add(&record.id, state.head);
        let value = record_value(state.head, &fields);
        tables.records.insert(key, value.as_slice()).map_err(store_error)?;
        let entry = upsert_log_value(&record.id, &fields);
        tables.log.insert((id, state.head), entry.as_slice()).map_err(store_error)?;
        assigned.push(Assigned::Upsert(index));
    }

    state.checksum = checksum.0;
    if !assigned.is_empty() {
        tables.meta.insert(id, state_value(&state)).map_err(store_error)?;
    }
    Ok(BatchOutcome { assigned, first_seq, state })
}

/// Builds what the caller and the listener get from a committed batch, moving the records
/// out of the request.
fn committed_batch(
    partition: PartitionName,
    mut upserts: Vec<Record>,
    mut deletes: Vec<String>,
    outcome: BatchOutcome,
) -> CommittedBatch {
    let mut changes = Vec::with_capacity(outcome.assigned.len());
    for (seq, source) in (outcome.first_seq..).zip(&outcome.assigned) {
        changes.push(match *source {
            Assigned::Delete(index) => Change::Delete { id: std::mem::take(&mut deletes[index]), seq },
            Assigned::Upsert(index) => {
                let mut record = std::mem::take(&mut upserts[index]);
                record.version = seq;
                Change::Upsert(record)
            }
        });
    }
    let (first_seq, last_seq) = match changes.last() {
        Some(last) => (outcome.first_seq, last.seq()),
        None => (0, 0),
    };
    CommittedBatch { partition, first_seq, last_seq, changes, state: outcome.state }
}

/// Calls the listener; a panicking listener is logged and does not take the writer down.
fn notify(listener: &dyn CommitListener, batches: &[&CommittedBatch]) {
    if catch_unwind(AssertUnwindSafe(|| listener.committed(batches))).is_err() {
        error!(batches = batches.len(), "commit listener panicked");
    }
}

fn answer(
    shared: &Shared,
    reply: &SyncSender<StoreResult<Vec<CommittedBatch>>>,
    result: StoreResult<Vec<CommittedBatch>>,
) {
    shared.answered_batches.fetch_add(1, Ordering::AcqRel);
    // A caller that went away no longer needs its answer.
    let _ = reply.send(result);
}

/// What one compaction step did.
struct CompactionStep {
    removed: u64,
    /// Sequence of the last log entry examined.
    scanned_to: u64,
    /// True when every entry up to the compaction point has been examined.
    finished: bool,
}

/// Examines up to [`COMPACTION_STEP_ENTRIES`] log entries in `(scanned_to, point]` and
/// removes tombstones and upserts that a later change of the same id supersedes.
fn compact_step(txn: &WriteTransaction, id: u64, scanned_to: u64, point: u64) -> StoreResult<CompactionStep> {
    let mut log = txn.open_table(LOG).map_err(store_error)?;
    let records = txn.open_table(RECORDS).map_err(store_error)?;
    let mut doomed = Vec::new();
    let mut last = scanned_to;
    let mut finished = true;
    let range = log
        .range::<(u64, u64)>((Bound::Excluded((id, scanned_to)), Bound::Included((id, point))))
        .map_err(store_error)?;
    for (examined, entry) in range.enumerate() {
        let (key, value) = entry.map_err(store_error)?;
        if examined == COMPACTION_STEP_ENTRIES {
            finished = false;
            break;
        }
        let seq = key.value().1;
        last = seq;
        let superseded = match split_log_value(value.value())? {
            LogValue::Delete { .. } => true,
            // The latest change of a live id is the upsert at its version; an absent id's
            // latest change is a later delete.
            LogValue::Upsert { id: record_id, .. } => match records.get((id, record_id)).map_err(store_error)? {
                Some(record) => split_record_value(record.value())?.0 != seq,
                None => true,
            },
        };
        if superseded {
            doomed.push(seq);
        }
    }
    for seq in &doomed {
        log.remove((id, *seq)).map_err(store_error)?;
    }
    Ok(CompactionStep { removed: doomed.len() as u64, scanned_to: last, finished })
}

/// Reads a partition's id and state in a (read or write) transaction.
fn read_partition(txn: &impl OpenTables, name: &PartitionName) -> StoreResult<Option<(u64, PartitionState)>> {
    let ids = txn.partition_ids()?;
    let Some(id) = ids.get((name.source.as_str(), name.key.as_str())).map_err(store_error)?.map(|id| id.value()) else {
        return Ok(None);
    };
    let meta = txn.partition_meta()?;
    let state = meta.get(id).map_err(store_error)?;
    Ok(Some((id, state.map_or_else(PartitionState::default, |v| state_from(v.value())))))
}

/// Opens the tables [`read_partition`] needs in either kind of transaction (redb's two
/// `open_table`s return different types).
trait OpenTables {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>>;
    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>>;
}

impl OpenTables for ReadTransaction {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>> {
        self.open_table(PARTITION_IDS).map_err(store_error)
    }

    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>> {
        self.open_table(PARTITION_META).map_err(store_error)
    }
}

impl OpenTables for WriteTransaction {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>> {
        self.open_table(PARTITION_IDS).map_err(store_error)
    }

    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>> {
        self.open_table(PARTITION_META).map_err(store_error)
    }
}

fn state_from((head, horizon, total, checksum): (u64, u64, u64, u64)) -> PartitionState {
    PartitionState { head, horizon, total, checksum }
}

fn state_value(state: &PartitionState) -> (u64, u64, u64, u64) {
    (state.head, state.horizon, state.total, state.checksum)
}

/// Returns the prost encoding of the record's fields alone (id empty, version 0).
fn encode_fields(record: &mut Record) -> Vec<u8> {
    let id = std::mem::take(&mut record.id);
    let version = std::mem::take(&mut record.version);
    let fields = record.encode_to_vec();
    record.id = id;
    record.version = version;
    fields
}

/// Returns a `records` value: version, then the encoded fields.
fn record_value(version: u64, fields: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + fields.len());
    value.extend_from_slice(&version.to_le_bytes());
    value.extend_from_slice(fields);
    value
}

/// Splits a `records` value into its version and encoded fields.
fn split_record_value(value: &[u8]) -> StoreResult<(u64, &[u8])> {
    let (version, fields) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("a stored record is shorter than its version".to_owned()))?;
    Ok((u64::from_le_bytes(*version), fields))
}

fn decode_record(id: &str, value: &[u8]) -> StoreResult<Record> {
    let (version, fields) = split_record_value(value)?;
    let mut record = Record::decode(fields).map_err(|e| corrupt("record", &e))?;
    record.id = id.to_owned();
    record.version = version;
    Ok(record)
}

fn upsert_log_value(id: &str, fields: &[u8]) -> Vec<u8> {
    let id_len = u16::try_from(id.len()).expect("validated ids are at most MAX_RECORD_ID_BYTES");
    let mut value = Vec::with_capacity(3 + id.len() + fields.len());
    value.push(LOG_KIND_UPSERT);
    value.extend_from_slice(&id_len.to_le_bytes());
    value.extend_from_slice(id.as_bytes());
    value.extend_from_slice(fields);
    value
}

fn delete_log_value(id: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + id.len());
    value.push(LOG_KIND_DELETE);
    value.extend_from_slice(id.as_bytes());
    value
}

/// A `log` value, split but not decoded.
enum LogValue<'a> {
    Upsert { id: &'a str, fields: &'a [u8] },
    Delete { id: &'a str },
}

fn split_log_value(value: &[u8]) -> StoreResult<LogValue<'_>> {
    let bad = || StoreError::Corrupt("a log entry is malformed".to_owned());
    let (kind, rest) = value.split_first().ok_or_else(bad)?;
    match *kind {
        LOG_KIND_UPSERT => {
            let (id_len, rest) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
            let id_len = usize::from(u16::from_le_bytes(*id_len));
            if rest.len() < id_len {
                return Err(bad());
            }
            let (id, fields) = rest.split_at(id_len);
            let id = std::str::from_utf8(id).map_err(|_| bad())?;
            Ok(LogValue::Upsert { id, fields })
        }
        LOG_KIND_DELETE => Ok(LogValue::Delete { id: std::str::from_utf8(rest).map_err(|_| bad())? }),
        _ => Err(bad()),
    }
}

fn decode_log_entry(seq: u64, value: &[u8]) -> StoreResult<Change> {
    match split_log_value(value)? {
        LogValue::Upsert { id, fields } => {
            let mut record = Record::decode(fields).map_err(|e| corrupt("log entry", &e))?;
            record.id = id.to_owned();
            record.version = seq;
            Ok(Change::Upsert(record))
        }
        LogValue::Delete { id } => Ok(Change::Delete { id: id.to_owned(), seq }),
    }
}

fn corrupt(what: &str, error: &prost::DecodeError) -> StoreError {
    StoreError::Corrupt(format!("cannot decode a stored {what}: {error}"))
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.display().to_string() },
        other => store_error(other),
    }
}

/// Maps a redb failure to the store's error, keeping corruption apart from I/O.
fn store_error(error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    match error {
        redb::Error::Corrupted(detail) => StoreError::Corrupt(detail),
        redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => StoreError::Corrupt(error.to_string()),
        // redb's error is non-exhaustive: anything else is a failure to use the file.
        other => StoreError::Io(other.to_string()),
    }
}

/// Returns an equal error for each batch of a failed group.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
        StoreError::InvalidRecordId { id } => StoreError::InvalidRecordId { id: id.clone() },
        StoreError::DuplicateId { id } => StoreError::DuplicateId { id: id.clone() },
        StoreError::BatchTooLarge { changes } => StoreError::BatchTooLarge { changes: *changes },
        StoreError::UserExists { name } => StoreError::UserExists { name: name.clone() },
        StoreError::Io(detail) => StoreError::Io(detail.clone()),
        StoreError::Corrupt(detail) => StoreError::Corrupt(detail.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::QueueFull { pending } => StoreError::QueueFull { pending: *pending },
    }
}

#[cfg(test)]
mod tests;
