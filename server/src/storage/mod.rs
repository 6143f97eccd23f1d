//! The durable store: partitions (live records, change log, checksum, compaction horizon),
//! device cursors, users, devices and server secrets.
//!
//! One contract, [`Store`], made of seven narrow traits — [`PartitionStore`] (records, logs,
//! checksums, compaction, capture positions), [`MutationQueue`] (device mutation queues and
//! outcomes), [`AccountStore`] (users, devices, secrets), [`CursorStore`] (device cursors),
//! [`AdminStore`] (admin API tokens and users, and operators' controls over device users),
//! [`DeviceStore`] (the device registry's listing and last-seen times, and each device's
//! durable operator commands) and [`BlobStore`] (blob metadata; the bytes are files) —
//! with the embedded backend ([`embedded::EmbeddedStore`], redb, one file, fsync on commit)
//! as the default, and the Redis backend ([`redis::RedisStore`], one server or a cluster,
//! shared by several nodes) when configured. Both run the one test suite of the contract
//! (`contract/`). Every method is synchronous and may block on disk or the network: async
//! callers run them in `spawn_blocking`. Writes that change partitions go through
//! [`PartitionStore::apply_batch`] (or `apply_capture`, `finish_mutation`), which return only
//! after the batch is durable and call the backend's [`CommitListener`], given when it is
//! opened, in commit order (so live push sees changes in sequence order).
//!
//! No gRPC or WebSocket types are allowed here: records are the protocol's `Record` message
//! because that is the stored format, not because of any transport.

mod blobs;
#[cfg(test)]
mod contract;
pub mod embedded;
mod error;
mod page;
pub mod redis;

pub use self::blobs::{BlobMeta, BlobStore, MAX_BLOB_PARTITIONS};
pub use self::error::{StoreError, StoreResult};
pub use self::page::{PageFill, PageLimit, delete_item_bytes, record_item_bytes, record_parts_item_bytes};

use syncline_proto::v1::Record;

use crate::metrics::histogram::HistogramSnapshot;

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

/// Longest record id accepted, in bytes (a protocol limit, see `syncline_proto::record`).
pub use syncline_proto::record::MAX_RECORD_ID_BYTES;

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
    /// The capture's lease, in cluster mode: the write is refused once another node may
    /// have taken the capture over.
    pub fence: Option<Fence>,
}

/// Proof that a writer holds a cluster lease (`cluster::lease`). The Redis store refuses a
/// write that carries a fence whose lease has expired or been granted again since
/// ([`StoreError::LeaseLost`]), so a node that lost its lease (paused, cut off from Redis)
/// can never overwrite what the new holder wrote. The embedded store has a single writer
/// process and ignores fences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name (e.g. `capture:watch:Task`).
    pub lease: String,
    /// The Redis key that holds the lease's current holder.
    pub key: String,
    /// What this grant wrote there: its token and node.
    pub holder: String,
    /// The grant's fencing token (greater for each new grant of the lease).
    pub token: u64,
}

/// What a device mutation does to its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MutationOp {
    Create,
    Update,
    Delete,
}

impl MutationOp {
    /// Returns the operation a device sent, or `None` for `MUTATION_OP_UNSPECIFIED` and
    /// numbers this server does not know.
    pub fn from_wire(op: i32) -> Option<Self> {
        match syncline_proto::v1::MutationOp::try_from(op).ok()? {
            syncline_proto::v1::MutationOp::Create => Some(MutationOp::Create),
            syncline_proto::v1::MutationOp::Update => Some(MutationOp::Update),
            syncline_proto::v1::MutationOp::Delete => Some(MutationOp::Delete),
            syncline_proto::v1::MutationOp::Unspecified => None,
        }
    }

    /// Returns the operation as the protocol (and the store's queue) numbers it.
    pub fn to_wire(self) -> syncline_proto::v1::MutationOp {
        match self {
            MutationOp::Create => syncline_proto::v1::MutationOp::Create,
            MutationOp::Update => syncline_proto::v1::MutationOp::Update,
            MutationOp::Delete => syncline_proto::v1::MutationOp::Delete,
        }
    }
}

/// A device mutation waiting in (or taken from) the durable per-device queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedMutation {
    pub client_id: String,
    pub user_id: String,
    /// Position in the device's queue (assigned by the store, from 1).
    pub seq: u64,
    pub mutation_id: String,
    pub partition: PartitionName,
    pub op: MutationOp,
    /// The record id (for creates, the device's temporary id).
    pub id: String,
    pub fields: std::collections::BTreeMap<String, syncline_proto::v1::Value>,
    pub base_version: u64,
}

/// What [`MutationQueue::enqueue_mutation`] found.
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
/// [`MutationQueue::finish_mutation`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MutationOutcome {
    pub client_id: String,
    pub mutation_id: String,
    /// The encoded `MutationResult` a device that sends the mutation id again gets back.
    pub result: Vec<u8>,
    /// The mutation, when its channel refused it (a typed error or a conflict): kept beside
    /// the outcome as a *failed* mutation an operator can retry or dismiss
    /// ([`MutationQueue::failed_mutations`]). `None` for successes and discards.
    pub failed: Option<QueuedMutation>,
    /// The lease of the mutation's lane, in cluster mode: the outcome is refused once another
    /// node may have taken the lane over.
    pub fence: Option<Fence>,
}

/// A mutation its channel refused, kept for an operator (see [`MutationOutcome::failed`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FailedMutation {
    /// The mutation as it was queued (`seq` is its old queue position).
    pub mutation: QueuedMutation,
    /// Its outcome: the encoded `MutationResult` with the channel's error.
    pub result: Vec<u8>,
    /// When it failed, in Unix milliseconds.
    pub failed_ms: u64,
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

/// A batch committed to one partition, as handed to the [`CommitListener`] and returned by
/// [`PartitionStore::apply_batch`].
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

/// A page of a partition's live records like [`SnapshotPage`], the records already encoded
/// as items of `Changes.upserts` ([`EncodedSnapshotPage::push_record`]): a catch-up page is
/// spliced from them with no record decoded and encoded again.
#[derive(Clone, Debug, Default)]
pub struct EncodedSnapshotPage {
    /// The records in id order, each one `Changes.upserts` element (key, length, `Record`),
    /// byte for byte what prost encodes for the same records.
    pub upserts: Vec<u8>,
    /// How many records `upserts` holds.
    pub count: usize,
    /// The id of the last record (`None` for an empty page).
    pub last_id: Option<String>,
    /// True when no live record follows the last one.
    pub done: bool,
    /// The partition's state when the page was read.
    pub state: PartitionState,
}

impl EncodedSnapshotPage {
    /// Encodes a page of decoded records.
    pub fn from_page(page: SnapshotPage) -> Self {
        let mut encoded = Self { done: page.done, state: page.state, ..Self::default() };
        for record in &page.records {
            encoded.push_record(record);
        }
        encoded.last_id = page.records.last().map(|record| record.id.clone());
        encoded
    }

    /// Appends a record.
    pub fn push_record(&mut self, record: &Record) {
        self.upserts.push(page::UPSERTS_KEY);
        prost::encoding::encode_varint(prost::Message::encoded_len(record) as u64, &mut self.upserts);
        prost::Message::encode_raw(record, &mut self.upserts);
        self.count += 1;
    }

    /// Appends a record from its stored parts: its id, version, and the encoding of the
    /// record with id and version cleared (its fields alone), in prost's field order (id 1,
    /// fields 2, version 3) so that the bytes are those of [`EncodedSnapshotPage::push_record`].
    pub fn push_parts(&mut self, id: &str, version: u64, fields: &[u8]) {
        use prost::encoding::encode_varint;
        let buf = &mut self.upserts;
        buf.push(page::UPSERTS_KEY);
        encode_varint(page::record_parts_len(id, version, fields.len()) as u64, buf);
        if !id.is_empty() {
            buf.push((1 << 3) | 2);
            encode_varint(id.len() as u64, buf);
            buf.extend_from_slice(id.as_bytes());
        }
        buf.extend_from_slice(fields);
        if version != 0 {
            buf.push(3 << 3);
            encode_varint(version, buf);
        }
        self.count += 1;
    }
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
    /// Whether the device may sync.
    pub state: DeviceState,
    /// Session tokens carry the generation they were issued in; logging out raises it, which
    /// revokes every earlier token of the device.
    pub token_generation: u64,
}

/// Whether a registered device may sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceState {
    /// The device may log in and sync.
    #[default]
    Active,
    /// Locked by an operator: refused until unlocked.
    Locked,
    /// Wiped by an operator: refused for good.
    Wiped,
}

impl DeviceState {
    /// Returns the state's name, as stored and as shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Locked => "locked",
            DeviceState::Wiped => "wiped",
        }
    }

    /// Returns the state named `name` ([`DeviceState::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [DeviceState::Active, DeviceState::Locked, DeviceState::Wiped].into_iter().find(|state| state.as_str() == name)
    }
}

impl std::fmt::Display for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Partitions: their records, change logs, checksums and compaction, and the positions of
/// change capture committed with them.
pub trait PartitionStore: Send + Sync + 'static {
    /// Applies upserts and deletes to one partition as one atomic batch and returns after
    /// it is durable. Upserts equal to the stored record (same encoded fields) and deletes
    /// of absent records take no sequence number. Validates the upserts ([`Record::validate`]),
    /// the deleted ids (non-empty, at most [`MAX_RECORD_ID_BYTES`]), that ids are unique within
    /// the batch, and the batch size before writing anything. Within a batch, deletes take
    /// sequences first, then upserts, each in the order given (ids are unique within a batch,
    /// so order only decides the numbering).
    /// Concurrent callers are group-committed (one fsync for many batches).
    fn apply_batch(
        &self,
        partition: &PartitionName,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> StoreResult<CommittedBatch>;

    /// Applies writes to several partitions and records a capture position, all in one
    /// atomic, durable commit (the same validation and no-op rules as [`PartitionStore::apply_batch`]).
    /// Returns one committed batch per write, in order.
    fn apply_capture(&self, writes: Vec<PartitionWrite>, position: CapturePosition)
    -> StoreResult<Vec<CommittedBatch>>;

    /// Applies writes (each like [`PartitionStore::apply_batch`], one after the other) made
    /// under a cluster lease: refused with [`StoreError::LeaseLost`] where a later grant of
    /// the lease has written the partition. A single-node store ignores the fence.
    fn apply_fenced(&self, writes: Vec<PartitionWrite>, fence: &Fence) -> StoreResult<Vec<CommittedBatch>> {
        let _ = fence;
        writes.into_iter().map(|write| self.apply_batch(&write.partition, write.upserts, write.deletes)).collect()
    }

    /// Returns the last capture position stored under `name`.
    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;

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

    /// Reads like [`PartitionStore::read_snapshot`], the records encoded
    /// ([`EncodedSnapshotPage`]): the same records, pages and `done`, as bytes. The default
    /// encodes the decoded page; a backend that stores records encoded splices its bytes.
    fn read_snapshot_encoded(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
    ) -> StoreResult<EncodedSnapshotPage> {
        self.read_snapshot(partition, after_id, limit).map(EncodedSnapshotPage::from_page)
    }

    /// Compacts a partition's log: removes every entry at or below `head - keep_recent` that
    /// a later entry for the same id supersedes, purges delete tombstones at or below that
    /// point, and raises the horizon to it (the horizon never goes down). A no-op when
    /// `head <= keep_recent`.
    fn compact(&self, partition: &PartitionName, keep_recent: u64) -> StoreResult<CompactionReport>;

    /// Lists every partition that has been written.
    fn partitions(&self) -> StoreResult<Vec<PartitionName>>;
}

/// Devices' durable mutation queues and the outcomes of finished mutations.
pub trait MutationQueue: Send + Sync + 'static {
    /// Queues a device mutation durably unless its `mutation_id` is known for that client
    /// (queued, or finished with a stored outcome); fails with [`StoreError::QueueFull`] when
    /// the device already has `max_pending` unfinished mutations.
    fn enqueue_mutation(&self, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued>;

    /// Returns every unfinished mutation, by client and queue position.
    fn pending_mutations(&self) -> StoreResult<Vec<QueuedMutation>>;

    /// Returns the unfinished mutations of one device, by queue position (cluster lanes read
    /// their work from here, not from memory, so that a lane taken over never sends a
    /// mutation another node finished).
    fn pending_mutations_of(&self, client_id: &str) -> StoreResult<Vec<QueuedMutation>> {
        let mut pending = self.pending_mutations()?;
        pending.retain(|mutation| mutation.client_id == client_id);
        Ok(pending)
    }

    /// Applies writes like [`PartitionStore::apply_capture`] and, in the same atomic, durable commit,
    /// takes a mutation off its device's queue and stores its outcome (which then answers the
    /// mutation id until [`MutationQueue::prune_mutation_outcomes`] removes it).
    fn finish_mutation(
        &self,
        writes: Vec<PartitionWrite>,
        outcome: MutationOutcome,
    ) -> StoreResult<Vec<CommittedBatch>>;

    /// Removes the outcomes of mutations that finished before `finished_before_ms` (Unix
    /// milliseconds); returns how many. A device that sends one of those mutation ids again
    /// has it queued and dispatched anew.
    fn prune_mutation_outcomes(&self, finished_before_ms: u64) -> StoreResult<u64>;

    /// Returns the failed mutations still kept (not retried, dismissed or pruned with their
    /// outcome), by client and mutation id.
    fn failed_mutations(&self) -> StoreResult<Vec<FailedMutation>>;

    /// Puts a failed mutation back at the end of its device's queue, in one atomic commit
    /// that forgets its outcome and its failed entry; returns it as queued (its new position),
    /// or `None` when no such failed mutation is kept. The caller dispatches it.
    fn retry_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<Option<QueuedMutation>>;

    /// Forgets a failed mutation (its outcome stays and still answers its id); returns false
    /// when none was kept.
    fn dismiss_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<bool>;
}

/// Users, devices and server secrets.
pub trait AccountStore: Send + Sync + 'static {
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
}

/// Devices' recorded cursors (advisory: a device's own cursor is the truth).
pub trait CursorStore: Send + Sync + 'static {
    /// Records device cursors (client id, partition, cursor) in one transaction. Cursors are
    /// advisory (the device's own cursor is the truth), so this may use a cheaper durability
    /// than `apply_batch`.
    fn save_cursors(&self, cursors: &[(String, PartitionName, u64)]) -> StoreResult<()>;

    /// Returns a device's recorded cursor for a partition.
    fn cursor(&self, client_id: &str, partition: &PartitionName) -> StoreResult<Option<u64>>;
}

/// What an admin API caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminRole {
    /// Everything.
    Admin,
    /// Read only.
    Viewer,
}

impl AdminRole {
    /// Returns the role's name, as stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Viewer => "viewer",
        }
    }

    /// Returns the role named `name` ([`AdminRole::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [AdminRole::Admin, AdminRole::Viewer].into_iter().find(|role| role.as_str() == name)
    }
}

/// A stored admin API token: only a hash of its secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredApiToken {
    /// Public id of the token (the part of the token before its secret).
    pub id: String,
    /// What the operator called it.
    pub name: String,
    pub role: AdminRole,
    /// SHA-256 of the token's secret part.
    pub secret_hash: Vec<u8>,
    /// When it was created, in Unix milliseconds.
    pub created_ms: i64,
}

/// A stored admin (console) user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAdminUser {
    pub name: String,
    /// PHC-format argon2 hash of the password.
    pub password_hash: String,
    pub role: AdminRole,
    /// When it was created, in Unix milliseconds.
    pub created_ms: i64,
}

/// What an operator decided about a device user (whoever checks the user's logins: local
/// users, a login channel or backend tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserControls {
    /// The user is refused at Hello (FORBIDDEN, close 4003) until enabled again.
    pub disabled: bool,
    /// Session tokens issued before this time (Unix milliseconds) are revoked; 0: none.
    pub sessions_revoked_ms: i64,
}

/// The admin plane's part of the store: admin API tokens, admin users, operators' controls
/// over device users, and the operator actions that have no other home (listing and deleting
/// local users, purging partitions).
pub trait AdminStore: Send + Sync + 'static {
    /// Inserts or replaces an API token.
    fn put_api_token(&self, token: &StoredApiToken) -> StoreResult<()>;

    /// Returns an API token by id.
    fn api_token(&self, id: &str) -> StoreResult<Option<StoredApiToken>>;

    /// Returns every API token, by id.
    fn api_tokens(&self) -> StoreResult<Vec<StoredApiToken>>;

    /// Deletes an API token; returns false if there was none.
    fn delete_api_token(&self, id: &str) -> StoreResult<bool>;

    /// Inserts or replaces an admin user.
    fn put_admin_user(&self, user: &StoredAdminUser) -> StoreResult<()>;

    /// Returns an admin user by name.
    fn admin_user(&self, name: &str) -> StoreResult<Option<StoredAdminUser>>;

    /// Counts admin users.
    fn admin_user_count(&self) -> StoreResult<u64>;

    /// Returns up to `limit` local device users whose names start with `prefix` and come
    /// after `after` (from the first when `None`), by name.
    fn users_page(&self, after: Option<&str>, prefix: &str, limit: usize) -> StoreResult<Vec<StoredUser>>;

    /// Deletes a local device user; returns false if there was none.
    fn delete_user(&self, name: &str) -> StoreResult<bool>;

    /// Returns an operator's controls over a device user (the defaults when none were set).
    fn user_controls(&self, user_id: &str) -> StoreResult<UserControls>;

    /// Returns the users with controls set (disabled or revoked), by user id.
    fn controlled_users(&self) -> StoreResult<Vec<(String, UserControls)>>;

    /// Sets an operator's controls over a device user.
    fn set_user_controls(&self, user_id: &str, controls: &UserControls) -> StoreResult<()>;

    /// Deletes a partition with its records, log and state; returns false if it was never
    /// written. Devices that sync it again start from nothing.
    fn purge_partition(&self, partition: &PartitionName) -> StoreResult<bool>;
}

/// Counters of a store's writes, for metrics, the admin API and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Batches handed to the store.
    pub submitted_batches: u64,
    /// Batches the store has answered (committed, unchanged or failed).
    pub answered_batches: u64,
    /// Durable commits (one fsync, or one acknowledged write, each).
    pub commits: u64,
    /// Commits that took at least the slow-commit threshold (each also logged as a warning).
    pub slow_commits: u64,
    /// The longest commit so far, in microseconds.
    pub slowest_commit_micros: u64,
    /// The time all commits took together, in microseconds (with `commits`, the mean).
    pub commit_micros_total: u64,
}

/// What a store reports about itself: write counters, commit latency and size.
pub trait StoreStats: Send + Sync + 'static {
    /// Returns the write counters so far.
    fn write_stats(&self) -> WriteStats;

    /// Returns the commit latency histogram so far (see [`HistogramSnapshot::since`] for
    /// an interval's share).
    fn commit_latency(&self) -> HistogramSnapshot;

    /// Returns the bytes the store holds on disk, when the backend knows it.
    fn size_bytes(&self) -> Option<u64>;
}

/// The durable store: every part of the contract, which each backend implements. Code that
/// needs one part names that trait (`&dyn AccountStore`, ...); code that needs several takes
/// a `Store`.
pub trait Store:
    PartitionStore + MutationQueue + AccountStore + CursorStore + AdminStore + DeviceStore + BlobStore + StoreStats
{
}

impl<T: PartitionStore + MutationQueue + AccountStore + CursorStore + AdminStore + DeviceStore + BlobStore + StoreStats>
    Store for T
{
}

mod devices;
pub use self::devices::{
    CommandEffect, CommandState, DeviceCommandKind, DeviceFilter, DevicePage, DeviceStore, MAX_COMMANDS_PER_DEVICE,
    MAX_DEVICE_PAGE, ReportedDevice, SeenDevice, StoredCommand,
};
