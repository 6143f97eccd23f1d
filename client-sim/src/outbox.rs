//! The device's offline mutation queue: creates, updates and deletes the app made, persisted
//! in SQLite in the order they were made, until the server reports their outcome.
//!
//! `MutationQueue` keeps one row per mutation (auto-increment `position`, unique
//! `mutation_id`, source, partition key, op, record id, fields encoded with prost, base
//! version, state `pending` / `acked` / `failed`) and an in-memory copy of the rows for
//! reads. Every change is written to SQLite first and mirrored only once committed, so a
//! failed write leaves both as they were. A device restarted on the same file replays what it
//! had not finished. The file runs in WAL mode with `synchronous = NORMAL`: a mutation
//! survives the app crashing as soon as the call that queued it returned; surviving power
//! loss as well would take an fsync per mutation.
//!
//! # Policy
//!
//! - **Identity.** The device chooses each `mutation_id` (random 128-bit hex) and, for a
//!   create, a temporary record id `tmp-<random 128-bit hex>`. A mutation is sent with the
//!   same `mutation_id` until it has a result: the server answers a known id from its first
//!   outcome and never hands it to the backend twice.
//! - **Order.** Mutations go out in queue order. A mutation the server may already know (it
//!   was sent before, on this connection or an earlier one) is always resent after a
//!   reconnect: its place in the server's queue is taken, and resending is the only way to
//!   learn its outcome. A mutation never sent waits while
//!   - an earlier mutation of the **same source** has failed and the app has not resolved it
//!     (RhoConnect: "create-error has to be handled ... otherwise sync will stop on this
//!     model"; other sources keep flowing), or
//!   - its record id, or any string field value, is the temporary id of a create that has no
//!     link yet (the server would otherwise receive an id it cannot know, as RhoConnect's
//!     client held back changes to objects with a pending create), or
//!   - it references a blob the device has not uploaded yet (the device uploads it first,
//!     see `crate::blob_uploads`; this holds back a mutation sent before too, which the
//!     server refused for its missing blob). Once one mutation of a
//!     source waits, the later ones of that source wait behind it, so a source's mutations
//!     reach the server in the order they were made.
//! - **Links.** When a create is linked (temp id → backend id, from its result or from
//!   `Changes.links`), later queued mutations of the same source that target the temp id are
//!   rewritten to the real id (their base version 0 becomes the created record's version when
//!   known), and every string field value equal to the temp id, in mutations of any source,
//!   is rewritten too (RhoConnect's associations). The create's own row keeps the temp id:
//!   it is resent as it was first sent.
//! - **Failures.** A failed mutation stays in the queue in state `failed` with its error
//!   (op, code, message, and the backend's current record on a conflict) until the app calls
//!   [`Resolution::Retry`] or [`Resolution::Discard`]:
//!   - *Retry* gives the mutation a new `mutation_id` (the server remembers the first outcome
//!     of the old one) and the same content at the same position, so it still goes before
//!     the mutations that waited behind it. After a `CONFLICT` that carried the current
//!     record, the retried update or delete is based on that record's version: the app has
//!     seen it and chose to apply its change anyway.
//!   - *Discard* drops the mutation, which rolls back its optimistic local change: the
//!     device shows again the server's version of the record (see `crate::engine`). A
//!     discarded create also drops the queued updates and deletes of its temporary record,
//!     which can never exist; field values elsewhere that reference the temp id are left as
//!     they are for the app to fix.
//!
//! The same file keeps the operator commands the device acted on (`command_acks.rs`), so
//! that an ack survives a restart and a command is never acted on twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use prost::Message as _;
use rusqlite::{Connection, Transaction, params};
use syncline_proto::v1::{ErrorCode, Link, MutationOp, Record, Value, value};

/// Default limit on mutations held in a device's queue: far more than an app makes offline,
/// small enough that the queue's in-memory copy stays a few megabytes.
pub const DEFAULT_MAX_QUEUED_MUTATIONS: usize = 10_000;

/// Prefix of the temporary record ids the device gives its creates.
pub const TEMP_ID_PREFIX: &str = "tmp-";

/// The queue's schema version, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mutations (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    mutation_id   TEXT    NOT NULL UNIQUE,
    source        TEXT    NOT NULL,
    partition_key TEXT    NOT NULL,
    op            INTEGER NOT NULL,
    record_id     TEXT    NOT NULL,
    fields        BLOB    NOT NULL,
    base_version  INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'acked', 'failed')),
    sent          INTEGER NOT NULL DEFAULT 0,
    linked_id     TEXT,
    error_op      INTEGER,
    error_code    INTEGER,
    error_message TEXT,
    error_current BLOB
) STRICT;
CREATE TABLE IF NOT EXISTS command_acks (
    command_id TEXT    PRIMARY KEY,
    handled    INTEGER NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0
) STRICT;
";

/// Why the mutation queue refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The queue's file could not be opened or set up.
    #[error("cannot open the mutation store {path}: {source}")]
    Open {
        /// The file (`:memory:` for an in-memory store).
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The file holds a queue of a newer schema than this library knows.
    #[error("the mutation store {path} has schema version {found}; this device knows {SCHEMA_VERSION}")]
    UnknownSchema {
        /// The file.
        path: PathBuf,
        /// The schema version found.
        found: i64,
    },
    /// Reading or writing the queue failed; nothing was changed.
    #[error("mutation store failed: {0}")]
    Store(#[source] rusqlite::Error),
    /// A stored row cannot be read back.
    #[error("stored mutation {mutation_id} is unreadable: {reason}")]
    Corrupt {
        /// The row's mutation id.
        mutation_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue holds its limit of mutations already.
    #[error("the mutation queue is full ({limit} mutations)")]
    Full {
        /// The limit ([`crate::DeviceConfig::max_queued_mutations`]).
        limit: usize,
    },
    /// The mutation asked for cannot be made (empty source, or no record id for an update or
    /// delete).
    #[error("invalid mutation: {0}")]
    Invalid(&'static str),
    /// No queued mutation has this id (it succeeded, was discarded, or never existed).
    #[error("no queued mutation {0}")]
    UnknownMutation(String),
    /// Only failed mutations can be resolved.
    #[error("mutation {0} has not failed")]
    NotFailed(String),
}

impl From<rusqlite::Error> for OutboxError {
    fn from(error: rusqlite::Error) -> Self {
        OutboxError::Store(error)
    }
}

/// Result of queue operations.
pub type Result<T, E = OutboxError> = std::result::Result<T, E>;

/// Where a queued mutation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationState {
    /// Not yet durably queued by the server (maybe not yet sent).
    Pending,
    /// The server queued it durably (`MutationAck`); the result is still to come.
    Acked,
    /// The server reported an error; waits for [`Resolution`].
    Failed,
}

impl MutationState {
    fn as_str(self) -> &'static str {
        match self {
            MutationState::Pending => "pending",
            MutationState::Acked => "acked",
            MutationState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(MutationState::Pending),
            "acked" => Some(MutationState::Acked),
            "failed" => Some(MutationState::Failed),
            _ => None,
        }
    }
}

/// Why a mutation failed, as the server reported it (`MutationError`).
#[derive(Clone, Debug, PartialEq)]
pub struct MutationFailure {
    /// Which kind of mutation failed.
    pub op: MutationOp,
    /// The error code (`CONFLICT`, `NOT_FOUND`, ...).
    pub code: ErrorCode,
    /// The backend's message.
    pub message: String,
    /// On `CONFLICT`: the backend's current record.
    pub current: Option<Record>,
}

/// What the app decides about a failed mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Send it again, under a new mutation id, at its place in the queue.
    Retry,
    /// Drop it and roll back its optimistic local change.
    Discard,
}

/// What [`Resolution`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The mutation was queued again under a new mutation id.
    Retried {
        /// The new mutation id.
        mutation_id: String,
    },
    /// These mutations were dropped: the one resolved, then (for a create) the queued
    /// updates and deletes of its temporary record.
    Discarded {
        /// Their mutation ids, in queue order.
        mutation_ids: Vec<String>,
    },
}

/// One mutation in the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedMutation {
    /// Place in the queue; increases with each mutation queued.
    pub position: u64,
    /// The id the device chose; the server deduplicates by it.
    pub mutation_id: String,
    /// Source name.
    pub source: String,
    /// Partition key as given; empty means the source's natural key.
    pub key: String,
    /// Create, update or delete.
    pub op: MutationOp,
    /// The record id (for a create, its temporary id).
    pub id: String,
    /// The fields to set (creates and updates).
    pub fields: BTreeMap<String, Value>,
    /// The record version the change is based on (0 for creates).
    pub base_version: u64,
    /// Where it stands.
    pub state: MutationState,
    /// Whether it was ever sent (the server may know it).
    pub sent: bool,
    /// For a create: the backend's id once the link arrived.
    pub linked_id: Option<String>,
    /// Set in state [`MutationState::Failed`].
    pub failure: Option<MutationFailure>,
}

impl QueuedMutation {
    /// Returns the id the record has locally: the backend's id once a create is linked.
    pub fn local_id(&self) -> &str {
        self.linked_id.as_deref().unwrap_or(&self.id)
    }

    /// Returns the blobs the mutation's fields reference.
    pub fn blobs(&self) -> impl Iterator<Item = &syncline_proto::v1::Blob> {
        self.fields.values().filter_map(Value::as_blob)
    }

    /// Returns true for a create that has no link yet: its id is temporary.
    fn is_unlinked_create(&self) -> bool {
        self.op == MutationOp::Create && self.linked_id.is_none()
    }

    /// Returns true when the mutation's record id or one of its string field values is in
    /// `ids`.
    fn references_any(&self, ids: &BTreeSet<&str>) -> bool {
        ids.contains(self.id.as_str())
            || self.fields.values().any(|value| string_of(value).is_some_and(|text| ids.contains(text)))
    }
}

/// A mutation to add to the queue.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewMutation {
    pub(crate) mutation_id: String,
    pub(crate) source: String,
    pub(crate) key: String,
    pub(crate) op: MutationOp,
    pub(crate) id: String,
    pub(crate) fields: BTreeMap<String, Value>,
    pub(crate) base_version: u64,
}

/// The persisted, ordered queue of the device's unfinished mutations.
#[derive(Debug)]
pub(crate) struct MutationQueue {
    connection: Connection,
    path: PathBuf,
    /// The rows, in position order; always what SQLite holds.
    rows: Vec<QueuedMutation>,
    limit: usize,
}

impl MutationQueue {
    /// Opens the queue stored in `path` (created when missing), or an in-memory queue for
    /// `None`, holding at most `limit` mutations.
    pub(crate) fn open(path: Option<&Path>, limit: usize) -> Result<Self> {
        let display = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf);
        let opened = match path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        };
        let open_error = |source| OutboxError::Open { path: display.clone(), source };
        let connection = opened.map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| connection.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(open_error)?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open_error)?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::UnknownSchema { path: display, found: version });
        }
        connection.execute_batch(SCHEMA).map_err(open_error)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_error)?;
        let rows = load_rows(&connection)?;
        Ok(Self { connection, path: display, rows, limit })
    }

    /// Returns the file the queue lives in (`:memory:` when in memory).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the queued mutations in order.
    pub(crate) fn mutations(&self) -> &[QueuedMutation] {
        &self.rows
    }

    /// Returns the queued mutation with this id.
    pub(crate) fn get(&self, mutation_id: &str) -> Option<&QueuedMutation> {
        self.rows.iter().find(|row| row.mutation_id == mutation_id)
    }

    /// Returns how many mutations wait for a result (pending or acked).
    pub(crate) fn unresolved_count(&self) -> usize {
        self.rows.iter().filter(|row| row.state != MutationState::Failed).count()
    }

    /// Returns how many mutations failed and wait for the app.
    pub(crate) fn failed_count(&self) -> usize {
        self.rows.iter().filter(|row| row.state == MutationState::Failed).count()
    }

    /// Appends a mutation in state pending and returns it.
    pub(crate) fn push(&mut self, new: NewMutation) -> Result<&QueuedMutation> {
        if self.rows.len() >= self.limit {
            return Err(OutboxError::Full { limit: self.limit });
        }
        let fields = encode_fields(&new.fields);
        self.connection.execute(
            "INSERT INTO mutations (mutation_id, source, partition_key, op, record_id, fields, base_version, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                new.mutation_id,
                new.source,
                new.key,
                new.op as i32,
                new.id,
                fields,
                to_sql_u64(new.base_version),
                MutationState::Pending.as_str()
            ],
        )?;
        let position = from_sql_u64(self.connection.last_insert_rowid());
        self.rows.push(QueuedMutation {
            position,
            mutation_id: new.mutation_id,
            source: new.source,
            key: new.key,
            op: new.op,
            id: new.id,
            fields: new.fields,
            base_version: new.base_version,
            state: MutationState::Pending,
            sent: false,
            linked_id: None,
            failure: None,
        });
        Ok(self.rows.last().expect("just pushed"))
    }

    /// Records that a mutation went out; returns whether it had been sent before.
    pub(crate) fn mark_sent(&mut self, mutation_id: &str) -> Result<bool> {
        let index = self.index(mutation_id)?;
        if self.rows[index].sent {
            return Ok(true);
        }
        self.connection.execute("UPDATE mutations SET sent = 1 WHERE mutation_id = ?1", params![mutation_id])?;
        self.rows[index].sent = true;
        Ok(false)
    }

    /// Records the server's `MutationAck`; returns true when the mutation was pending until
    /// now (not for the acks of resends).
    pub(crate) fn mark_acked(&mut self, mutation_id: &str) -> Result<bool> {
        let index = self.index(mutation_id)?;
        if self.rows[index].state != MutationState::Pending {
            return Ok(false);
        }
        self.connection.execute(
            "UPDATE mutations SET state = ?2, sent = 1 WHERE mutation_id = ?1",
            params![mutation_id, MutationState::Acked.as_str()],
        )?;
        let row = &mut self.rows[index];
        row.state = MutationState::Acked;
        row.sent = true;
        Ok(true)
    }

    /// Records a failed result.
    pub(crate) fn mark_failed(&mut self, mutation_id: &str, failure: MutationFailure) -> Result<()> {
        let index = self.index(mutation_id)?;
        let current = failure.current.as_ref().map(|record| record.encode_to_vec());
        self.connection.execute(
            "UPDATE mutations
             SET state = ?6, sent = 1, error_op = ?2, error_code = ?3, error_message = ?4, error_current = ?5
             WHERE mutation_id = ?1",
            params![
                mutation_id,
                failure.op as i32,
                failure.code as i32,
                failure.message,
                current,
                MutationState::Failed.as_str()
            ],
        )?;
        let row = &mut self.rows[index];
        row.state = MutationState::Failed;
        row.sent = true;
        row.failure = Some(failure);
        Ok(())
    }

    /// Removes a mutation that succeeded and returns it.
    pub(crate) fn complete(&mut self, mutation_id: &str) -> Result<QueuedMutation> {
        let index = self.index(mutation_id)?;
        self.connection.execute("DELETE FROM mutations WHERE mutation_id = ?1", params![mutation_id])?;
        Ok(self.rows.remove(index))
    }

    /// Links the temporary id of a queued create to the backend's id: marks the create
    /// linked, retargets later mutations of its source at the real id (with `version` as
    /// their base when they had none), and rewrites string field values equal to the temp id
    /// in every other mutation. Returns false (and changes nothing) when no unlinked create
    /// has that temporary id.
    pub(crate) fn apply_link(&mut self, link: &Link, version: Option<u64>) -> Result<bool> {
        let Some(create) =
            self.rows.iter().position(|row| row.is_unlinked_create() && row.id == link.temp_id && row.id != link.id)
        else {
            return Ok(false);
        };
        let mut updated = self.rows.clone();
        updated[create].linked_id = Some(link.id.clone());
        let source = updated[create].source.clone();
        let mut changed = vec![create];
        for (index, row) in updated.iter_mut().enumerate() {
            if index == create {
                continue;
            }
            let mut touched = false;
            if row.source == source && row.id == link.temp_id {
                row.id.clone_from(&link.id);
                if row.base_version == 0 && row.op != MutationOp::Create {
                    row.base_version = version.unwrap_or(0);
                }
                touched = true;
            }
            for value in row.fields.values_mut() {
                if string_of(value) == Some(link.temp_id.as_str()) {
                    *value = Value::string(link.id.clone());
                    touched = true;
                }
            }
            if touched {
                changed.push(index);
            }
        }
        let transaction = self.connection.transaction()?;
        for &index in &changed {
            update_row(&transaction, &updated[index])?;
        }
        transaction.commit()?;
        self.rows = updated;
        Ok(true)
    }

    /// Queues a failed mutation again under `new_mutation_id`, at its position; see the
    /// module docs for the base version after a conflict.
    pub(crate) fn retry(&mut self, mutation_id: &str, new_mutation_id: String) -> Result<()> {
        let index = self.failed_index(mutation_id)?;
        let mut row = self.rows[index].clone();
        let rebase = row.failure.as_ref().and_then(|failure| match (failure.code, &failure.current) {
            (ErrorCode::Conflict, Some(current)) if row.op != MutationOp::Create => Some(current.version),
            _ => None,
        });
        row.mutation_id = new_mutation_id;
        row.base_version = rebase.unwrap_or(row.base_version);
        row.state = MutationState::Pending;
        row.sent = false;
        row.failure = None;
        self.connection.execute(
            "UPDATE mutations
             SET mutation_id = ?2, base_version = ?3, state = ?4, sent = 0,
                 error_op = NULL, error_code = NULL, error_message = NULL, error_current = NULL
             WHERE position = ?1",
            params![
                to_sql_u64(row.position),
                row.mutation_id,
                to_sql_u64(row.base_version),
                MutationState::Pending.as_str()
            ],
        )?;
        self.rows[index] = row;
        Ok(())
    }

    /// Drops a failed mutation (and, for a create, the queued mutations of its temporary
    /// record); returns what was dropped, in queue order.
    pub(crate) fn discard(&mut self, mutation_id: &str) -> Result<Vec<QueuedMutation>> {
        let index = self.failed_index(mutation_id)?;
        let discarded = &self.rows[index];
        let cascade = |row: &QueuedMutation| {
            discarded.op == MutationOp::Create
                && row.position > discarded.position
                && row.source == discarded.source
                && row.id == discarded.id
        };
        let (dropped, kept): (Vec<_>, Vec<_>) =
            self.rows.iter().cloned().partition(|row| row.position == discarded.position || cascade(row));
        let transaction = self.connection.transaction()?;
        for row in &dropped {
            transaction.execute("DELETE FROM mutations WHERE position = ?1", params![to_sql_u64(row.position)])?;
        }
        transaction.commit()?;
        self.rows = kept;
        Ok(dropped)
    }

    /// Drops every mutation (the device was wiped).
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.connection.execute("DELETE FROM mutations", [])?;
        self.rows.clear();
        Ok(())
    }

    /// Returns the mutations to send now, in queue order, following the ordering rules of
    /// the module docs; `in_flight(id)` says whether a mutation was already sent on this
    /// connection.
    #[cfg(test)]
    pub(crate) fn next_to_send(&self, in_flight: impl Fn(&str) -> bool) -> Vec<&QueuedMutation> {
        self.next_to_send_with(in_flight, |_| true)
    }

    /// Returns the mutations to send now as [`MutationQueue::next_to_send`] does, and holds
    /// back (with the later mutations of its source) one that references a blob for which
    /// `blob_uploaded(hash)` is false: the server refuses a mutation whose blobs it does
    /// not hold.
    pub(crate) fn next_to_send_with(
        &self,
        in_flight: impl Fn(&str) -> bool,
        blob_uploaded: impl Fn(&str) -> bool,
    ) -> Vec<&QueuedMutation> {
        let unlinked: BTreeSet<&str> =
            self.rows.iter().filter(|row| row.is_unlinked_create()).map(|row| row.id.as_str()).collect();
        let mut waiting_sources: BTreeSet<&str> = BTreeSet::new();
        let mut next = Vec::new();
        for row in &self.rows {
            if row.state == MutationState::Failed {
                waiting_sources.insert(&row.source);
                continue;
            }
            if in_flight(&row.mutation_id) {
                continue;
            }
            if row.blobs().any(|blob| !blob_uploaded(&blob.hash)) {
                waiting_sources.insert(&row.source);
                continue;
            }
            if row.sent {
                // Already in the server's queue, or possibly so: only a resend tells.
                next.push(row);
                continue;
            }
            if waiting_sources.contains(row.source.as_str()) {
                continue;
            }
            let others: BTreeSet<&str> = if row.is_unlinked_create() {
                unlinked.iter().copied().filter(|id| *id != row.id).collect()
            } else {
                unlinked.clone()
            };
            if row.references_any(&others) {
                waiting_sources.insert(&row.source);
                continue;
            }
            next.push(row);
        }
        next
    }

    fn index(&self, mutation_id: &str) -> Result<usize> {
        self.rows
            .iter()
            .position(|row| row.mutation_id == mutation_id)
            .ok_or_else(|| OutboxError::UnknownMutation(mutation_id.to_owned()))
    }

    fn failed_index(&self, mutation_id: &str) -> Result<usize> {
        let index = self.index(mutation_id)?;
        if self.rows[index].state != MutationState::Failed {
            return Err(OutboxError::NotFailed(mutation_id.to_owned()));
        }
        Ok(index)
    }
}

/// Applies a queued mutation to a partition's records as the device shows them: a create
/// inserts its record (under the backend id once linked, merged over the backend's copy if
/// that is there already), an update merges its fields into the record if the device holds
/// it, a delete removes it.
pub(crate) fn apply_optimistically(records: &mut BTreeMap<String, Record>, mutation: &QueuedMutation) {
    match mutation.op {
        MutationOp::Create => {
            let id = mutation.local_id();
            let record = records.entry(id.to_owned()).or_insert_with(|| Record {
                id: id.to_owned(),
                fields: BTreeMap::new(),
                version: 0,
            });
            record.fields.extend(mutation.fields.iter().map(|(name, value)| (name.clone(), value.clone())));
        }
        MutationOp::Update => {
            if let Some(record) = records.get_mut(mutation.local_id()) {
                record.fields.extend(mutation.fields.iter().map(|(name, value)| (name.clone(), value.clone())));
            }
        }
        MutationOp::Delete => {
            records.remove(mutation.local_id());
        }
        MutationOp::Unspecified => {}
    }
}

/// Returns a new random id: 128 bits as 32 lowercase hex digits.
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Returns a new temporary record id.
pub(crate) fn temp_id() -> String {
    format!("{TEMP_ID_PREFIX}{}", random_id())
}

fn string_of(value: &Value) -> Option<&str> {
    match &value.kind {
        Some(value::Kind::StringValue(text)) => Some(text),
        _ => None,
    }
}

/// Encodes fields as a prost `Record` with only its fields set (the protocol has no message
/// for a bare field map).
fn encode_fields(fields: &BTreeMap<String, Value>) -> Vec<u8> {
    Record { id: String::new(), fields: fields.clone(), version: 0 }.encode_to_vec()
}

fn to_sql_u64(number: u64) -> i64 {
    // SQLite integers are signed 64-bit; the bit pattern round-trips through `from_sql_u64`.
    number as i64
}

fn from_sql_u64(number: i64) -> u64 {
    number as u64
}

fn update_row(transaction: &Transaction<'_>, row: &QueuedMutation) -> rusqlite::Result<usize> {
    transaction.execute(
        "UPDATE mutations SET record_id = ?2, fields = ?3, base_version = ?4, linked_id = ?5 WHERE position = ?1",
        params![
            to_sql_u64(row.position),
            row.id,
            encode_fields(&row.fields),
            to_sql_u64(row.base_version),
            row.linked_id
        ],
    )
}

/// One row as stored, before decoding.
struct StoredRow {
    position: i64,
    mutation_id: String,
    source: String,
    key: String,
    op: i32,
    id: String,
    fields: Vec<u8>,
    base_version: i64,
    state: String,
    sent: bool,
    linked_id: Option<String>,
    error_op: Option<i32>,
    error_code: Option<i32>,
    error_message: Option<String>,
    error_current: Option<Vec<u8>>,
}

fn load_rows(connection: &Connection) -> Result<Vec<QueuedMutation>> {
    let mut statement = connection.prepare(
        "SELECT position, mutation_id, source, partition_key, op, record_id, fields, base_version, state, sent,
                linked_id, error_op, error_code, error_message, error_current
         FROM mutations ORDER BY position",
    )?;
    let stored = statement
        .query_map([], |row| {
            Ok(StoredRow {
                position: row.get(0)?,
                mutation_id: row.get(1)?,
                source: row.get(2)?,
                key: row.get(3)?,
                op: row.get(4)?,
                id: row.get(5)?,
                fields: row.get(6)?,
                base_version: row.get(7)?,
                state: row.get(8)?,
                sent: row.get(9)?,
                linked_id: row.get(10)?,
                error_op: row.get(11)?,
                error_code: row.get(12)?,
                error_message: row.get(13)?,
                error_current: row.get(14)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    stored.into_iter().map(decode_row).collect()
}

fn decode_row(stored: StoredRow) -> Result<QueuedMutation> {
    let corrupt = |reason: String| OutboxError::Corrupt { mutation_id: stored.mutation_id.clone(), reason };
    let op = MutationOp::try_from(stored.op)
        .ok()
        .filter(|op| *op != MutationOp::Unspecified)
        .ok_or_else(|| corrupt(format!("unknown op {}", stored.op)))?;
    let state =
        MutationState::parse(&stored.state).ok_or_else(|| corrupt(format!("unknown state {}", stored.state)))?;
    let fields = Record::decode(stored.fields.as_slice()).map_err(|error| corrupt(format!("fields: {error}")))?.fields;
    let failure = match state {
        MutationState::Failed => {
            let current = stored
                .error_current
                .as_deref()
                .map(Record::decode)
                .transpose()
                .map_err(|error| corrupt(format!("current record: {error}")))?;
            Some(MutationFailure {
                op: stored.error_op.and_then(|op| MutationOp::try_from(op).ok()).unwrap_or(op),
                code: stored
                    .error_code
                    .and_then(|code| ErrorCode::try_from(code).ok())
                    .unwrap_or(ErrorCode::Unspecified),
                message: stored.error_message.clone().unwrap_or_default(),
                current,
            })
        }
        MutationState::Pending | MutationState::Acked => None,
    };
    Ok(QueuedMutation {
        position: from_sql_u64(stored.position),
        mutation_id: stored.mutation_id,
        source: stored.source,
        key: stored.key,
        op,
        id: stored.id,
        fields,
        base_version: from_sql_u64(stored.base_version),
        state,
        sent: stored.sent,
        linked_id: stored.linked_id,
        failure,
    })
}

mod command_acks;
#[cfg(test)]
mod tests;
