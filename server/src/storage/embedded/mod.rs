//! The embedded store: redb, one file under the data directory, fsync on commit.
//!
//! All partition writes from [`PartitionStore::apply_batch`] go through one dedicated writer thread
//! (group commit): callers queue their validated batch and block until the writer has applied
//! every queued batch in one write transaction, committed it with `Durability::Immediate`
//! (one fsync for the whole group), called the [`CommitListener`] in commit order and answered
//! them. Compaction, cursors, users, devices and secrets write in their own transactions on
//! the caller's thread; redb serialises write transactions, and every write reads the state it
//! changes inside its own transaction, so the two never race. Reads are redb read
//! transactions, each a consistent snapshot, and never wait for writers.
//!
//! Stored layout (format version 3); every table is keyed so that one partition's (or one
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
//! | `devices_by_user` | (user id, client id) | () |
//! | `device_commands` | (client id, queue position) | prost `CommandValue` |
//! | `secrets` | name | bytes |
//! | `capture_positions` | capture name | opaque position (e.g. a Watch resume token) |
//! | `mutations` | (client id, queue position) | prost `MutationValue` (unfinished mutations only) |
//! | `mutation_ids` | (client id, mutation id) | queue position |
//! | `mutation_results` | (client id, mutation id) | finished at (Unix ms, 8 bytes LE) ++ prost `MutationResult` |
//! | `mutation_result_ages` | (finished at, client id, mutation id) | () |
//!
//! Older files are migrated when opened: format 1 (before mutation outcomes had tables of
//! their own, see `mutation_queue.rs`) and format 2 (before devices were indexed by user and
//! had commands, see `devices.rs`).
//!
//! "Prost fields" is the encoding of a `Record` whose id is empty and version 0, i.e. only its
//! fields map; maps are `BTreeMap`s, so equal fields encode to equal bytes, which is how an
//! unchanged upsert is detected (NaN payloads compare by bit pattern).
//!
//! Where the code is: this file opens the store and reads partitions; `writer.rs` is the
//! writer thread (group commit); `tables.rs` the table definitions and value codecs;
//! `compaction.rs` log compaction; `accounts.rs` users, devices, secrets and cursors;
//! `mutation_queue.rs` device mutation queues and outcomes; `devices.rs` the device listing,
//! last-seen times and operator commands; `admin.rs` the admin plane's tables (API tokens,
//! admin users, user controls; listed there); `blobs.rs` blob metadata.

pub(in crate::storage) mod accounts;
pub(in crate::storage) mod admin;
mod blobs;
mod compaction;
pub(in crate::storage) mod devices;
pub(in crate::storage) mod mutation_queue;
pub(in crate::storage) mod tables;
pub(in crate::storage) mod writer;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use syncline_proto::v1::Record;
use tracing::error;

use self::mutation_queue::{MUTATION_IDS, MUTATION_RESULT_AGES, MUTATION_RESULTS, MUTATIONS};
use self::tables::*;
pub use self::writer::SLOW_COMMIT;
use self::writer::{CommitMarker, WRITE_QUEUE_CAPACITY, WriteRequest, run_writer, validate_batch};
use super::{
    CapturePosition, Change, CommitListener, CommittedBatch, CompactionReport, EncodedSnapshotPage, LogPage, PageFill,
    PageLimit, PartitionName, PartitionState, PartitionStore, PartitionWrite, SnapshotPage, StoreError, StoreResult,
    StoreStats, WriteStats, record_parts_item_bytes,
};
use crate::metrics::histogram::{AtomicHistogram, HistogramSnapshot};

/// Default redb page cache: 64 MiB keeps the hot part of a small or medium deployment's
/// records and logs in memory without making a single binary on a small VM memory-hungry
/// (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

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

/// The embedded (redb) [`Store`](crate::storage::Store). See the module docs. Dropping it stops the writer thread
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
    /// The store's file.
    path: std::path::PathBuf,
    /// Called after each commit that changed something (live push).
    listener: Option<Arc<dyn CommitListener>>,
    submitted_batches: AtomicU64,
    answered_batches: AtomicU64,
    commits: AtomicU64,
    slow_commits: AtomicU64,
    slowest_commit_micros: AtomicU64,
    commit_micros_total: AtomicU64,
    /// How long commits took to become durable.
    commit_latency: AtomicHistogram,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating its parent directories, and
    /// starts the writer thread. Fails with [`StoreError::Locked`] when another process (or
    /// another store in this process) has the file open.
    pub fn open(path: &Path, options: EmbeddedOptions) -> StoreResult<Self> {
        Self::open_with_listener(path, options, None)
    }

    /// Opens the store like [`EmbeddedStore::open`], with `listener` called after each
    /// commit that changed something, in commit order.
    pub fn open_with_listener(
        path: &Path,
        options: EmbeddedOptions,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> StoreResult<Self> {
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
            path: path.to_owned(),
            listener,
            submitted_batches: AtomicU64::new(0),
            answered_batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            slow_commits: AtomicU64::new(0),
            slowest_commit_micros: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            commit_latency: AtomicHistogram::new(crate::metrics::histogram::DISK_SECONDS),
        });
        let (requests, queue) = sync_channel(WRITE_QUEUE_CAPACITY);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("syncline-store-writer".to_owned())
            .spawn(move || run_writer(&writer_shared, &queue))
            .map_err(|source| StoreError::Io(format!("cannot start the writer thread: {source}")))?;
        Ok(Self { shared, requests: Some(requests), writer: Some(writer) })
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

impl EmbeddedStore {
    /// Visits the stored values (id, `records` value) of a partition's live records with ids
    /// greater than `after_id`, by id, as many as `limit` allows (each counted as
    /// [`record_parts_item_bytes`], which is what the decoded record's
    /// [`record_item_bytes`](super::record_item_bytes) is). Returns whether no live record
    /// follows the last visited, and the partition's state.
    fn scan_snapshot(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
        mut visit: impl FnMut(&str, &[u8]) -> StoreResult<()>,
    ) -> StoreResult<(bool, PartitionState)> {
        let txn = self.begin_read()?;
        let Some((id, state)) = read_partition(&txn, partition)? else {
            return Ok((true, PartitionState::default()));
        };
        let records = txn.open_table(RECORDS).map_err(store_error)?;
        let lower = match after_id {
            Some(after_id) => Bound::Excluded((id, after_id)),
            None => Bound::Included((id, "")),
        };
        let range = records.range::<(u64, &str)>((lower, Bound::Excluded((id + 1, "")))).map_err(store_error)?;
        let mut fill = PageFill::new(limit);
        for entry in range {
            let (key, value) = entry.map_err(store_error)?;
            let (record_id, value) = (key.value().1, value.value());
            let (version, fields) = split_record_value(value)?;
            if fill.is_full() || !fill.admit(record_parts_item_bytes(record_id, version, fields.len())) {
                return Ok((false, state));
            }
            visit(record_id, value)?;
        }
        Ok((true, state))
    }
}

impl StoreStats for EmbeddedStore {
    fn write_stats(&self) -> WriteStats {
        WriteStats {
            submitted_batches: self.shared.submitted_batches.load(Ordering::Acquire),
            answered_batches: self.shared.answered_batches.load(Ordering::Acquire),
            commits: self.shared.commits.load(Ordering::Acquire),
            slow_commits: self.shared.slow_commits.load(Ordering::Acquire),
            slowest_commit_micros: self.shared.slowest_commit_micros.load(Ordering::Acquire),
            commit_micros_total: self.shared.commit_micros_total.load(Ordering::Acquire),
        }
    }

    fn commit_latency(&self) -> HistogramSnapshot {
        self.shared.commit_latency.snapshot()
    }

    fn size_bytes(&self) -> Option<u64> {
        std::fs::metadata(&self.shared.path).ok().map(|metadata| metadata.len())
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

impl PartitionStore for EmbeddedStore {
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

    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let txn = self.begin_read()?;
        let positions = txn.open_table(CAPTURE_POSITIONS).map_err(store_error)?;
        Ok(positions.get(name).map_err(store_error)?.map(|value| value.value().to_vec()))
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
        decoded_snapshot(|visit| self.scan_snapshot(partition, after_id, limit, visit))
    }

    fn read_snapshot_encoded(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
    ) -> StoreResult<EncodedSnapshotPage> {
        encoded_snapshot(|visit| self.scan_snapshot(partition, after_id, limit, visit))
    }

    fn compact(&self, partition: &PartitionName, keep_recent: u64) -> StoreResult<CompactionReport> {
        self.compact_partition(partition, keep_recent)
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
            Some(old @ (1 | 2)) => {
                if old == 1 {
                    let moved = mutation_queue::migrate_from_format_1(&txn, CAPTURE_POSITIONS, now_ms())?;
                    tracing::info!(
                        moved,
                        "store migrated from format 1 to 2: mutation outcomes have tables of their own"
                    );
                }
                let indexed = devices::migrate_from_format_2(&txn)?;
                meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION).map_err(store_error)?;
                tracing::info!(
                    indexed,
                    "store migrated from format 2 to 3: devices are indexed by user and have commands"
                );
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
    txn.open_table(DEVICES_BY_USER).map_err(store_error)?;
    txn.open_table(DEVICE_COMMANDS).map_err(store_error)?;
    txn.open_table(SECRETS).map_err(store_error)?;
    txn.open_table(CAPTURE_POSITIONS).map_err(store_error)?;
    admin::open_admin_tables(txn)?;
    txn.open_table(MUTATIONS).map_err(store_error)?;
    txn.open_table(MUTATION_IDS).map_err(store_error)?;
    txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
    txn.open_table(MUTATION_RESULT_AGES).map_err(store_error)?;
    // Added within format 3: an older file gets it empty at its next open.
    txn.open_table(mutation_queue::FAILED_MUTATIONS).map_err(store_error)?;
    txn.open_table(blobs::BLOBS).map_err(store_error)?;
    Ok(())
}

/// Returns the current Unix time in milliseconds (the finish time of mutation outcomes).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests;
