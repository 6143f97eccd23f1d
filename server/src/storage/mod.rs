//! The durable store: partitions (live records, change log, checksum, compaction horizon),
//! device cursors, users, devices and server secrets.
//!
//! One trait, [`Store`], with the embedded backend ([`embedded::EmbeddedStore`], redb, one
//! file, fsync on commit) as the default. Every method is synchronous and may block on disk:
//! async callers run them in `spawn_blocking`. Writes that change partitions go through
//! [`Store::apply_batch`], which returns only after the batch is durable and calls the
//! [`CommitListener`] in commit order (so live push sees changes in sequence order).
//!
//! No gRPC or WebSocket types are allowed here: records are the protocol's `Record` message
//! because that is the stored format, not because of any transport.

pub mod embedded;

use std::sync::Arc;

use syncline_proto::v1::Record;

/// A partition's name: `(source, key)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionName {
    /// Source name, e.g. `Account`.
    pub source: String,
    /// Partition key: user id, `*`, or a custom key.
    pub key: String,
}

impl PartitionName {
    /// Returns the partition `(source, key)`.
    pub fn new(source: impl Into<String>, key: impl Into<String>) -> Self {
        Self { source: source.into(), key: key.into() }
    }
}

impl std::fmt::Display for PartitionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.source, self.key)
    }
}

/// Longest record id accepted, in bytes.
pub const MAX_RECORD_ID_BYTES: usize = 512;

/// Most changes (upserts + deletes) accepted in one batch: bounds one write transaction.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// Changes to apply to one partition.
#[derive(Clone, Debug, Default)]
pub struct PartitionWrite {
    pub partition: PartitionName,
    pub upserts: Vec<Record>,
    pub deletes: Vec<String>,
}

/// A change-capture position (e.g. a channel's Watch resume token) stored with the changes
/// it covers, so that after a crash capture resumes exactly after what was committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturePosition {
    /// Which capture this is (e.g. `watch:<channel endpoint>`).
    pub name: String,
    /// The opaque position.
    pub token: Vec<u8>,
}

/// A device mutation waiting in (or taken from) the durable per-device queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuedMutation {
    pub client_id: String,
    pub user_id: String,
    /// Position in the device's queue (assigned by the store, from 1).
    pub seq: u64,
    pub mutation_id: String,
    pub partition: PartitionName,
    /// `syncline.v1.MutationOp` as a number.
    pub op: i32,
    /// The record id (for creates, the device's temporary id).
    pub id: String,
    pub fields: std::collections::BTreeMap<String, syncline_proto::v1::Value>,
    pub base_version: u64,
}

/// What [`Store::enqueue_mutation`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Enqueued {
    /// Newly queued at this position.
    Queued { seq: u64 },
    /// Already queued and not finished.
    Pending { seq: u64 },
    /// Already finished; the stored outcome (an encoded `MutationResult`).
    Done { result: Vec<u8> },
}

/// The outcome of a finished mutation, committed with the record change it caused (see
/// [`Store::finish_mutation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationOutcome {
    pub client_id: String,
    pub mutation_id: String,
    /// The encoded `MutationResult` a device that sends the mutation id again gets back.
    pub result: Vec<u8>,
}

/// A partition's state at one sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// Sequence of the last change (0: none yet).
    pub head: u64,
    /// Compaction horizon: a device whose cursor is below it cannot catch up from the log
    /// and needs a snapshot. 0 when nothing was ever compacted away.
    pub horizon: u64,
    /// Live records.
    pub total: u64,
    /// Order-independent checksum of the live set (see `syncline_proto::checksum`).
    pub checksum: u64,
}

/// One entry of a partition's change log.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The record was created or replaced; `record.version` is the entry's sequence.
    Upsert(Record),
    /// The record was deleted at sequence `seq`.
    Delete {
        /// Id of the deleted record.
        id: String,
        /// Sequence of the delete.
        seq: u64,
    },
}

impl Change {
    /// Returns the sequence of this change.
    pub fn seq(&self) -> u64 {
        match self {
            Change::Upsert(record) => record.version,
            Change::Delete { seq, .. } => *seq,
        }
    }

    /// Returns the id of the record this change is about.
    pub fn id(&self) -> &str {
        match self {
            Change::Upsert(record) => &record.id,
            Change::Delete { id, .. } => id,
        }
    }

    /// Returns the bytes this change adds to a page: [`record_item_bytes`] of an upsert,
    /// [`delete_item_bytes`] of a delete.
    pub fn item_bytes(&self) -> usize {
        match self {
            Change::Upsert(record) => record_item_bytes(record),
            Change::Delete { id, .. } => delete_item_bytes(id),
        }
    }
}

/// Returns the bytes a record adds to an encoded page, which holds it as one element of a
/// repeated message field numbered below 16 (`Changes.upserts`): one key byte, the length
/// prefix, and the record's encoding.
pub fn record_item_bytes(record: &Record) -> usize {
    length_delimited_item_bytes(prost::Message::encoded_len(record))
}

/// Returns the bytes a deleted id adds to an encoded page, which holds it as one element of
/// a repeated string field numbered below 16 (`Changes.deletes`).
pub fn delete_item_bytes(id: &str) -> usize {
    length_delimited_item_bytes(id.len())
}

fn length_delimited_item_bytes(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Bounds one page read from a partition ([`Store::read_log`], [`Store::read_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    /// Most records (snapshot pages) or log changes (log pages).
    pub items: usize,
    /// Most bytes of items, each counted as [`record_item_bytes`] or [`Change::item_bytes`]:
    /// the page ends before the item that would take it past this, except that a page holds
    /// at least one item whatever its size, so paging always makes progress.
    pub bytes: usize,
}

impl PageLimit {
    /// Returns a limit of `items` and no bound in bytes.
    pub const fn items(items: usize) -> Self {
        Self { items, bytes: usize::MAX }
    }

    /// Returns no limit at all: everything in one page.
    pub const fn unbounded() -> Self {
        Self::items(usize::MAX)
    }
}

/// Counts the items of a page as it fills, against its [`PageLimit`].
#[derive(Clone, Copy, Debug)]
pub struct PageFill {
    limit: PageLimit,
    items: usize,
    bytes: usize,
}

impl PageFill {
    /// Returns an empty page under `limit`.
    pub fn new(limit: PageLimit) -> Self {
        Self { limit, items: 0, bytes: 0 }
    }

    /// Returns true when the page holds its most items: nothing more can join it.
    pub fn is_full(&self) -> bool {
        self.items >= self.limit.items
    }

    /// Takes an item of `bytes` into the page and returns true if it fits: the page is not
    /// full, and it is empty or stays within its bytes with the item. Returns false and
    /// takes nothing otherwise: the page ends before the item.
    pub fn admit(&mut self, bytes: usize) -> bool {
        self.admit_group(1, bytes)
    }

    /// Takes `items` items of `bytes` in all, which must stay together, into the page and
    /// returns true if they fit: the page has room for as many items, and stays within its
    /// bytes with them (or they are one item and the page is empty). Returns false and takes
    /// nothing otherwise.
    pub fn admit_group(&mut self, items: usize, bytes: usize) -> bool {
        let (count, filled) = (self.items.saturating_add(items), self.bytes.saturating_add(bytes));
        let alone = self.items == 0 && items == 1;
        if count > self.limit.items || (filled > self.limit.bytes && !alone) {
            return false;
        }
        self.items = count;
        self.bytes = filled;
        true
    }

    /// Returns the items taken.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Returns the bytes of the items taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A batch committed to one partition, as handed to the [`CommitListener`] and returned by
/// [`Store::apply_batch`].
#[derive(Clone, Debug)]
pub struct CommittedBatch {
    /// The partition the batch was applied to.
    pub partition: PartitionName,
    /// First sequence assigned (0 when nothing changed).
    pub first_seq: u64,
    /// Last sequence assigned (0 when nothing changed).
    pub last_seq: u64,
    /// The changes that took sequence numbers, in sequence order (gap-free from
    /// `first_seq` to `last_seq`).
    pub changes: Vec<Change>,
    /// The partition's state after the batch.
    pub state: PartitionState,
}

/// Called on the store's writer thread after each durable commit, in commit order, with the
/// partition batches of that commit that changed something. Must not block (it queues
/// frames, nothing more).
pub trait CommitListener: Send + Sync + 'static {
    /// Receives the batches of one commit that changed something, in sequence order within
    /// each partition (one commit may hold several batches of one partition: they follow on
    /// from each other without a gap).
    fn committed(&self, batches: &[&CommittedBatch]);
}

/// A page of a partition's change log.
#[derive(Clone, Debug)]
pub struct LogPage {
    /// Changes with `after < seq`, in sequence order, within the page's [`PageLimit`]. Superseded entries may
    /// have been compacted away, so sequences can skip; the page still covers the range up
    /// to `covered_to`.
    pub changes: Vec<Change>,
    /// The page covers sequences `after+1 ..= covered_to`: the cursor a device holds after
    /// applying it. Equals `state.head` when the page reaches the end of the log (or `after`
    /// when `after` is already at or past the head).
    pub covered_to: u64,
    /// The partition's state when the page was read.
    pub state: PartitionState,
}

/// A page of a partition's live records, by id.
#[derive(Clone, Debug)]
pub struct SnapshotPage {
    /// Live records with `id > after_id`, ascending by id, within the page's [`PageLimit`].
    pub records: Vec<Record>,
    /// True when no live record follows the last one returned.
    pub done: bool,
    /// The partition's state when the page was read.
    pub state: PartitionState,
}

/// What one compaction of a partition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Log entries removed (superseded changes and purged tombstones).
    pub removed: u64,
    /// The horizon after compaction.
    pub horizon: u64,
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUser {
    /// Login name; also the user id (the partition key of `user` sources).
    pub name: String,
    /// PHC-format argon2 hash of the password.
    pub password_hash: String,
}

/// A registered device (one app install).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StoredDevice {
    /// Server-assigned id of the install.
    pub client_id: String,
    /// The user the device belongs to.
    pub user_id: String,
    /// Platform name as the device reports it (e.g. `ios`).
    pub platform: String,
    /// App version as the device reports it.
    pub app_version: String,
    /// Device model as the device reports it.
    pub model: String,
    /// When the device registered, in Unix milliseconds.
    pub created_ms: i64,
    /// When the device was last seen, in Unix milliseconds.
    pub last_seen_ms: i64,
    /// "active", "locked" or "wiped".
    pub state: String,
    /// Session tokens carry the generation they were issued in; logging out raises it, which
    /// revokes every earlier token of the device.
    pub token_generation: u64,
}

/// Why a store operation failed, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is held by another process (usually a running server).
    #[error("the data store {path} is in use by another process (is a server running on it?)")]
    Locked { path: String },
    /// A record id is empty or longer than [`MAX_RECORD_ID_BYTES`].
    #[error("invalid record id {id:?}: ids are 1 to {MAX_RECORD_ID_BYTES} bytes")]
    InvalidRecordId { id: String },
    /// The same id appears twice in one batch.
    #[error("record id {id:?} appears more than once in the batch")]
    DuplicateId { id: String },
    /// A batch holds more than [`MAX_BATCH_CHANGES`] changes.
    #[error("batch of {changes} changes exceeds the limit of {MAX_BATCH_CHANGES}")]
    BatchTooLarge { changes: usize },
    /// A user with that name already exists.
    #[error("user {name:?} already exists")]
    UserExists { name: String },
    /// The store's files could not be read or written.
    #[error("storage failure: {0}")]
    Io(String),
    /// Stored bytes could not be decoded (corruption or an incompatible version).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// A device has too many unfinished mutations.
    #[error("the device has {pending} unfinished mutations, the most allowed")]
    QueueFull { pending: u64 },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The durable store. See the module docs.
pub trait Store: Send + Sync + 'static {
    /// Applies upserts and deletes to one partition as one atomic batch and returns after
    /// it is durable. Upserts equal to the stored record (same encoded fields) and deletes
    /// of absent records take no sequence number. Validates ids (non-empty, at most
    /// [`MAX_RECORD_ID_BYTES`], unique within the batch) and the batch size before writing
    /// anything. Within a batch, deletes take sequences first, then upserts, each in the
    /// order given (ids are unique within a batch, so order only decides the numbering).
    /// Concurrent callers are group-committed (one fsync for many batches).
    fn apply_batch(
        &self,
        partition: &PartitionName,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> StoreResult<CommittedBatch>;

    /// Applies writes to several partitions and records a capture position, all in one
    /// atomic, durable commit (the same validation and no-op rules as [`Store::apply_batch`]).
    /// Returns one committed batch per write, in order.
    fn apply_capture(&self, writes: Vec<PartitionWrite>, position: CapturePosition)
    -> StoreResult<Vec<CommittedBatch>>;

    /// Applies writes like [`Store::apply_capture`] and, in the same atomic, durable commit,
    /// takes a mutation off its device's queue and stores its outcome (which then answers the
    /// mutation id until [`Store::prune_mutation_outcomes`] removes it).
    fn finish_mutation(
        &self,
        writes: Vec<PartitionWrite>,
        outcome: MutationOutcome,
    ) -> StoreResult<Vec<CommittedBatch>>;

    /// Removes the outcomes of mutations that finished before `finished_before_ms` (Unix
    /// milliseconds); returns how many. A device that sends one of those mutation ids again
    /// has it queued and dispatched anew.
    fn prune_mutation_outcomes(&self, finished_before_ms: u64) -> StoreResult<u64>;

    /// Returns the last capture position stored under `name`.
    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Queues a device mutation durably unless its `mutation_id` is known for that client
    /// (queued, or finished with a stored outcome); fails with [`StoreError::QueueFull`] when
    /// the device already has `max_pending` unfinished mutations.
    fn enqueue_mutation(&self, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued>;

    /// Returns every unfinished mutation, by client and queue position.
    fn pending_mutations(&self) -> StoreResult<Vec<QueuedMutation>>;

    /// Returns one live record of a partition.
    fn record(&self, partition: &PartitionName, id: &str) -> StoreResult<Option<Record>>;

    /// Returns the partition's current state (all zero for a partition never written).
    fn partition_state(&self, partition: &PartitionName) -> StoreResult<PartitionState>;

    /// Reads the log changes after sequence `after`, in order, as many as `limit` allows
    /// (see [`PageLimit`]: at least one when there is one, unless `limit.items` is 0).
    fn read_log(&self, partition: &PartitionName, after: u64, limit: PageLimit) -> StoreResult<LogPage>;

    /// Reads the live records with ids greater than `after_id` (all from the start when
    /// `None`), by id, as many as `limit` allows (see [`PageLimit`]).
    fn read_snapshot(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
    ) -> StoreResult<SnapshotPage>;

    /// Compacts a partition's log: removes every entry at or below `head - keep_recent` that
    /// a later entry for the same id supersedes, purges delete tombstones at or below that
    /// point, and raises the horizon to it (the horizon never goes down). A no-op when
    /// `head <= keep_recent`.
    fn compact(&self, partition: &PartitionName, keep_recent: u64) -> StoreResult<CompactionReport>;

    /// Lists every partition that has been written.
    fn partitions(&self) -> StoreResult<Vec<PartitionName>>;

    /// Records device cursors (client id, partition, cursor) in one transaction. Cursors are
    /// advisory (the device's own cursor is the truth), so this may use a cheaper durability
    /// than `apply_batch`.
    fn save_cursors(&self, cursors: &[(String, PartitionName, u64)]) -> StoreResult<()>;

    /// Returns a device's recorded cursor for a partition.
    fn cursor(&self, client_id: &str, partition: &PartitionName) -> StoreResult<Option<u64>>;

    /// Adds a user; fails with [`StoreError::UserExists`] if the name is taken.
    fn add_user(&self, user: &StoredUser) -> StoreResult<()>;

    /// Replaces a user's password hash; returns false if there is no such user.
    fn set_user_password(&self, name: &str, password_hash: &str) -> StoreResult<bool>;

    /// Returns a user by name.
    fn user(&self, name: &str) -> StoreResult<Option<StoredUser>>;

    /// Counts users.
    fn user_count(&self) -> StoreResult<u64>;

    /// Inserts or replaces a device.
    fn put_device(&self, device: &StoredDevice) -> StoreResult<()>;

    /// Returns a device by client id.
    fn device(&self, client_id: &str) -> StoreResult<Option<StoredDevice>>;

    /// Returns the named secret, creating it from `generate` on first use (durably).
    fn secret(&self, name: &str, generate: &dyn Fn() -> Vec<u8>) -> StoreResult<Vec<u8>>;

    /// Installs the listener called after each commit; replaces any earlier one.
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(items: usize, bytes: usize) -> PageFill {
        PageFill::new(PageLimit { items, bytes })
    }

    #[test]
    fn a_page_may_end_exactly_at_its_bytes() {
        let mut page = fill(10, 30);
        assert!(page.admit(10) && page.admit(10) && page.admit(10), "30 of 30 bytes fit");
        assert!(!page.admit(1), "one byte more does not");
        assert!(page.admit(0), "an item of no bytes still fits at the bound");
        assert_eq!((page.items(), page.bytes()), (4, 30));
    }

    #[test]
    fn the_item_that_would_pass_the_bound_ends_the_page() {
        let mut page = fill(10, 30);
        assert!(page.admit(20));
        assert!(!page.admit(11), "20 + 11 is past 30");
        assert_eq!((page.items(), page.bytes()), (1, 20), "a refused item takes nothing");
        assert!(page.admit(10), "a smaller one still fits");
    }

    #[test]
    fn a_first_item_over_the_bound_goes_alone() {
        let mut page = fill(10, 30);
        assert!(page.admit(100), "an empty page takes any one item");
        assert!(!page.admit(0), "and nothing after it");
        let mut zero = fill(10, 0);
        assert!(zero.admit(5) && !zero.admit(0), "even with no bytes at all: one item a page");
    }

    #[test]
    fn the_item_count_bounds_a_page_too() {
        let mut page = fill(2, usize::MAX);
        assert!(page.admit(1) && page.admit(1));
        assert!(page.is_full() && !page.admit(0));
        let mut none = fill(0, usize::MAX);
        assert!(none.is_full() && !none.admit(0), "a limit of 0 items takes nothing");
    }

    #[test]
    fn a_group_fits_whole_or_not_at_all() {
        let mut page = fill(5, 30);
        assert!(!page.admit_group(2, 31), "two items over the bound do not go alone");
        assert!(page.admit_group(1, 31), "one item does");
        let mut page = fill(5, 30);
        assert!(page.admit_group(3, 30));
        assert!(!page.admit_group(3, 0), "six items are past five");
        assert!(!page.admit_group(1, 1), "31 bytes are past 30");
        assert_eq!((page.items(), page.bytes()), (3, 30));
    }

    #[test]
    fn item_bytes_are_the_length_delimited_encoding() {
        let record = Record { id: "r".repeat(200), version: 7, ..Record::default() };
        let len = prost::Message::encoded_len(&record);
        assert_eq!(record_item_bytes(&record), 1 + 2 + len, "a two-byte length prefix above 127 bytes");
        assert_eq!(delete_item_bytes("abc"), 5);
        assert_eq!(Change::Delete { id: "abc".into(), seq: 1 }.item_bytes(), 5);
        assert_eq!(Change::Upsert(record.clone()).item_bytes(), record_item_bytes(&record));
    }
}
