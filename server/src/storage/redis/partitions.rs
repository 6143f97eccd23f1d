//! Partitions in Redis: compare-and-set batch writes, log and snapshot pages, compaction.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::ConnectionLike;
use syncline_proto::checksum::Checksum;
use syncline_proto::v1::Record;

use super::keys::{self, PartitionKeys};
use super::{RedisStore, parse_u64};
use crate::storage::embedded::tables::{
    LogValue, decode_log_entry, decode_record, decoded_snapshot, delete_log_value, encode_fields, encoded_snapshot,
    record_value, split_log_value, split_record_value, upsert_log_value,
};
use crate::storage::embedded::writer::validate_batch;
use crate::storage::{
    CapturePosition, Change, CommittedBatch, CompactionReport, EncodedSnapshotPage, Fence, LogPage, PageFill,
    PageLimit, PartitionName, PartitionState, PartitionStore, PartitionWrite, SnapshotPage, StoreError, StoreResult,
    record_parts_item_bytes,
};

/// Times a partition write is recomputed after losing the compare-and-set to another
/// writer before it gives up ([`StoreError::Contention`]): each loss means another writer
/// committed, so this many in a row means the partition is written faster than one node
/// can read it.
const MAX_WRITE_ATTEMPTS: usize = 64;

/// Log entries or records read per script call while filling a page: bounds one call's
/// reply (and the time it holds the server).
const READ_CHUNK: usize = 512;

/// Log entries examined per compaction step.
const COMPACTION_STEP_ENTRIES: usize = 1_000;

/// Fields asked for per `HMGET`.
const FIELDS_PER_READ: usize = 1_000;

/// What one `read_snapshot.lua` call answers: the state's fields, the ids and their values.
type SnapshotChunk = (Vec<Option<String>>, Vec<String>, Vec<Option<Vec<u8>>>);

/// Which input a change that took a sequence came from.
#[derive(Clone, Copy)]
enum Assigned {
    Delete(usize),
    Upsert(usize),
}

/// A batch computed against one read of its partition, ready for the write script.
pub(super) struct Plan {
    assigned: Vec<Assigned>,
    first_seq: u64,
    expected_head: u64,
    pub(super) state: PartitionState,
    /// Indexes of the deleted ids that took a sequence.
    pub(super) deleted: Vec<usize>,
    /// (upsert index, stored value).
    pub(super) sets: Vec<(usize, Vec<u8>)>,
    /// (sequence, log member).
    pub(super) log: Vec<(u64, Vec<u8>)>,
}

/// What one write script applies (`write_partition.lua`): the ids to delete, the records to
/// set, the log entries to add, if the head is still `expected_head`, leaving `state`.
pub(super) struct WriteScript<'a> {
    expected_head: u64,
    state: PartitionState,
    pub(super) deletes: Vec<&'a str>,
    pub(super) sets: Vec<(&'a str, &'a [u8])>,
    pub(super) log: Vec<(u64, &'a [u8])>,
}

impl<'a> WriteScript<'a> {
    pub(super) fn new(expected_head: u64, state: PartitionState) -> Self {
        Self { expected_head, state, deletes: Vec::new(), sets: Vec::new(), log: Vec::new() }
    }

    /// The script of one write's plan.
    fn of_plan(write: &'a PartitionWrite, plan: &'a Plan) -> Self {
        let mut script = Self::new(plan.expected_head, plan.state);
        script.deletes = plan.deleted.iter().map(|&index| write.deletes[index].as_str()).collect();
        script.sets =
            plan.sets.iter().map(|(index, value)| (write.upserts[*index].id.as_str(), value.as_slice())).collect();
        script.log = plan.log.iter().map(|(seq, member)| (*seq, member.as_slice())).collect();
        script
    }
}

/// Returns a log member: the sequence (8 bytes BE, so equal entries at two sequences stay
/// two members) and the embedded store's log value.
fn log_member(seq: u64, value: &[u8]) -> Vec<u8> {
    let mut member = Vec::with_capacity(8 + value.len());
    member.extend_from_slice(&seq.to_be_bytes());
    member.extend_from_slice(value);
    member
}

/// Splits a log member into its sequence and log value.
fn split_log_member(member: &[u8]) -> StoreResult<(u64, &[u8])> {
    let (seq, value) = member
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("a log entry is shorter than its sequence".to_owned()))?;
    Ok((u64::from_be_bytes(*seq), value))
}

/// Parses the state hash's `head`, `horizon`, `total`, `checksum` (absent: 0).
pub(super) fn parse_state(fields: &[Option<String>]) -> StoreResult<PartitionState> {
    let field = |at: usize, what: &str| -> StoreResult<u64> {
        fields.get(at).and_then(Option::as_deref).map_or(Ok(0), |value| parse_u64(value, what))
    };
    Ok(PartitionState {
        head: field(0, "partition head")?,
        horizon: field(1, "partition horizon")?,
        total: field(2, "record count")?,
        checksum: field(3, "checksum")?,
    })
}

/// Computes a batch like the embedded writer: deletes first, then upserts, each in input
/// order; unchanged upserts and deletes of absent ids take no sequence. `stored` holds the
/// stored values of the deleted ids, then of the upserted ids.
pub(super) fn plan_batch(
    write: &PartitionWrite,
    fields: &[Vec<u8>],
    mut state: PartitionState,
    stored: &[Option<Vec<u8>>],
) -> StoreResult<Plan> {
    let expected_head = state.head;
    let first_seq = state.head + 1;
    let mut checksum = Checksum(state.checksum);
    let mut plan = Plan {
        assigned: Vec::new(),
        first_seq,
        expected_head,
        state,
        deleted: Vec::new(),
        sets: Vec::new(),
        log: Vec::new(),
    };
    let (stored_deletes, stored_upserts) = stored.split_at(write.deletes.len());
    for (index, (id, old)) in write.deletes.iter().zip(stored_deletes).enumerate() {
        let Some(old) = old else { continue };
        let (old_version, _) = split_record_value(old)?;
        state.head += 1;
        state.total = state.total.checked_sub(1).ok_or_else(|| {
            StoreError::Corrupt(format!("partition {} counts fewer records than it holds", write.partition))
        })?;
        checksum.remove(id, old_version);
        plan.log.push((state.head, log_member(state.head, &delete_log_value(id))));
        plan.deleted.push(index);
        plan.assigned.push(Assigned::Delete(index));
    }
    for (index, ((record, fields), old)) in write.upserts.iter().zip(fields).zip(stored_upserts).enumerate() {
        let old_version = match old {
            Some(old) => {
                let (old_version, old_fields) = split_record_value(old)?;
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
        plan.sets.push((index, record_value(state.head, fields)));
        plan.log.push((state.head, log_member(state.head, &upsert_log_value(&record.id, fields))));
        plan.assigned.push(Assigned::Upsert(index));
    }
    state.checksum = checksum.0;
    plan.state = state;
    Ok(plan)
}

/// Reads `fields` of `hash` (any number, in bounded `HMGET`s).
pub(super) fn read_fields(
    connection: &mut dyn ConnectionLike,
    hash: &str,
    fields: &[&str],
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    let mut values = Vec::with_capacity(fields.len());
    for chunk in fields.chunks(FIELDS_PER_READ) {
        let read: Vec<Option<Vec<u8>>> = redis::cmd("HMGET").arg(hash).arg(chunk).query(connection)?;
        values.extend(read);
    }
    Ok(values)
}

pub(super) fn read_state(
    connection: &mut dyn ConnectionLike,
    keys: &PartitionKeys,
) -> redis::RedisResult<Vec<Option<String>>> {
    redis::cmd("HMGET").arg(&keys.state).arg(&["head", "horizon", "total", "checksum"]).query(connection)
}

impl RedisStore {
    /// Writes the partitions of a validated request one after the other (see the module
    /// docs for why not atomically across partitions), under `fence` when given.
    pub(super) fn write_partitions(
        &self,
        writes: Vec<PartitionWrite>,
        fence: Option<&Fence>,
    ) -> StoreResult<Vec<CommittedBatch>> {
        writes.into_iter().map(|write| self.write_partition(write, fence)).collect()
    }

    /// Applies one validated partition write: compare-and-set against the head read,
    /// recomputed when another writer moved it. Under a `fence`, refused when a later grant
    /// of its lease has written the partition (see `write_partition.lua`).
    fn write_partition(&self, write: PartitionWrite, fence: Option<&Fence>) -> StoreResult<CommittedBatch> {
        let _local = self.partition_lock(&write.partition).lock();
        self.write_locked(write, fence)
    }

    /// [`RedisStore::write_partition`] with the partition's stripe lock held.
    pub(super) fn write_locked(&self, mut write: PartitionWrite, fence: Option<&Fence>) -> StoreResult<CommittedBatch> {
        let keys = PartitionKeys::new(&write.partition);
        let fields: Vec<Vec<u8>> = write.upserts.iter_mut().map(encode_fields).collect();
        let ids: Vec<&str> =
            write.deletes.iter().map(String::as_str).chain(write.upserts.iter().map(|r| r.id.as_str())).collect();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (state, stored) = self.run(|connection| {
                let state = read_state(connection, &keys)?;
                let stored = if ids.is_empty() { Vec::new() } else { read_fields(connection, &keys.records, &ids)? };
                Ok((state, stored))
            })?;
            let plan = plan_batch(&write, &fields, parse_state(&state)?, &stored)?;
            if plan.assigned.is_empty() {
                return Ok(CommittedBatch {
                    partition: write.partition,
                    first_seq: 0,
                    last_seq: 0,
                    changes: Vec::new(),
                    state: plan.state,
                });
            }
            if plan.expected_head == 0 {
                // A new (or purged) partition is listed before its first write: a crash in
                // between lists an empty partition, never hides a written one.
                let member = keys::partition_member(&write.partition);
                self.run(|connection| redis::cmd("SADD").arg(keys::PARTITIONS).arg(member).query::<()>(connection))?;
            }
            let started = Instant::now();
            let applied = self.apply_write_script(&keys, &WriteScript::of_plan(&write, &plan), fence)?;
            if applied < 0 {
                let lease = fence.map_or_else(String::new, |fence| fence.lease.clone());
                return Err(StoreError::LeaseLost { lease });
            }
            if applied > 0 {
                self.record_commit(started);
                let batch = committed_batch(write, plan);
                if let Some(listener) = &self.listener {
                    listener.committed(&[&batch]);
                }
                return Ok(batch);
            }
        }
        Err(StoreError::Contention { subject: format!("partition {}", write.partition) })
    }

    /// Runs the write script; returns 1 when applied, 0 when the head moved, -1 when `fence`
    /// is stale.
    pub(super) fn apply_write_script(
        &self,
        keys: &PartitionKeys,
        script: &WriteScript<'_>,
        fence: Option<&Fence>,
    ) -> StoreResult<i64> {
        let mut invocation = self.scripts.write_partition.prepare_invoke();
        invocation.key(&keys.state).key(&keys.records).key(&keys.ids).key(&keys.log);
        invocation
            .arg(script.expected_head)
            .arg(script.state.head)
            .arg(script.state.total)
            .arg(script.state.checksum.to_string())
            .arg(script.deletes.len())
            .arg(script.sets.len())
            .arg(script.log.len());
        match fence {
            Some(fence) => invocation.arg(keys::partition_fence_field(&fence.lease)).arg(fence.token),
            None => invocation.arg("").arg(0),
        };
        for id in &script.deletes {
            invocation.arg(*id);
        }
        for (id, value) in &script.sets {
            invocation.arg(*id).arg(*value);
        }
        for (seq, member) in &script.log {
            invocation.arg(*seq).arg(*member);
        }
        self.run_durable(|connection| {
            let applied: i64 = invocation.invoke(connection)?;
            Ok((applied, applied > 0))
        })
    }

    /// Validates a request's writes and counts it as submitted.
    pub(super) fn submit(&self, writes: &[PartitionWrite]) -> StoreResult<()> {
        for write in writes {
            validate_batch(&write.upserts, &write.deletes)?;
        }
        self.submitted_batches.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Counts a submitted request as answered and passes its result on.
    pub(super) fn answered<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        self.answered_batches.fetch_add(1, Ordering::AcqRel);
        result
    }
}

/// Builds what the caller and the listener get from a written plan.
pub(super) fn committed_batch(write: PartitionWrite, plan: Plan) -> CommittedBatch {
    let PartitionWrite { partition, mut upserts, mut deletes } = write;
    let changes: Vec<Change> = (plan.first_seq..)
        .zip(&plan.assigned)
        .map(|(seq, source)| match *source {
            Assigned::Delete(index) => Change::Delete { id: std::mem::take(&mut deletes[index]), seq },
            Assigned::Upsert(index) => {
                let mut record = std::mem::take(&mut upserts[index]);
                record.version = seq;
                Change::Upsert(record)
            }
        })
        .collect();
    // A batch that changed nothing took no sequence: 0..0, as the embedded store answers.
    let (first_seq, last_seq) = changes.last().map_or((0, 0), |last| (plan.first_seq, last.seq()));
    CommittedBatch { partition, first_seq, last_seq, changes, state: plan.state }
}

impl PartitionStore for RedisStore {
    fn apply_batch(
        &self,
        partition: &PartitionName,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> StoreResult<CommittedBatch> {
        let write = PartitionWrite { partition: partition.clone(), upserts, deletes };
        self.submit(std::slice::from_ref(&write))?;
        self.answered(self.write_grouped(write))
    }

    fn apply_fenced(&self, writes: Vec<PartitionWrite>, fence: &Fence) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(&writes)?;
        self.answered(self.write_partitions(writes, Some(fence)))
    }

    fn apply_capture(
        &self,
        writes: Vec<PartitionWrite>,
        position: CapturePosition,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(&writes)?;
        let fence = position.fence.as_ref();
        let result = self.write_partitions(writes, fence).and_then(|batches| {
            let started = Instant::now();
            let stored: bool = self.run_durable(|connection| {
                let stored: bool = self
                    .scripts
                    .fenced_capture_position
                    .key(keys::CAPTURE_POSITIONS)
                    .key(fence.map_or(keys::CAPTURE_POSITIONS, |fence| fence.key.as_str()))
                    .arg(&position.name)
                    .arg(position.token.as_slice())
                    .arg(fence.map_or("", |fence| fence.holder.as_str()))
                    .invoke(connection)?;
                Ok((stored, stored))
            })?;
            if !stored {
                return Err(StoreError::LeaseLost {
                    lease: fence.map_or_else(String::new, |fence| fence.lease.clone()),
                });
            }
            self.record_commit(started);
            Ok(batches)
        });
        self.answered(result)
    }

    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.run(|connection| redis::cmd("HGET").arg(keys::CAPTURE_POSITIONS).arg(name).query(connection))
    }

    fn record(&self, partition: &PartitionName, id: &str) -> StoreResult<Option<Record>> {
        let keys = PartitionKeys::new(partition);
        let value: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(&keys.records).arg(id).query(connection))?;
        value.map(|value| decode_record(id, &value)).transpose()
    }

    fn partition_state(&self, partition: &PartitionName) -> StoreResult<PartitionState> {
        let keys = PartitionKeys::new(partition);
        parse_state(&self.run(|connection| read_state(connection, &keys))?)
    }

    fn read_log(&self, partition: &PartitionName, after: u64, limit: PageLimit) -> StoreResult<LogPage> {
        let keys = PartitionKeys::new(partition);
        let mut fill = PageFill::new(limit);
        let mut changes = Vec::new();
        let mut state: Option<PartitionState> = None;
        let mut cursor = after;
        let reached_end = 'pages: loop {
            let want = limit.items.saturating_sub(changes.len()).saturating_add(1).min(READ_CHUNK);
            let bound = state.map_or_else(String::new, |state| state.head.to_string());
            let (fields, entries): (Vec<Option<String>>, Vec<Vec<u8>>) = self.run(|connection| {
                self.scripts
                    .read_log
                    .key(&keys.state)
                    .key(&keys.log)
                    .arg(cursor)
                    .arg(bound)
                    .arg(want)
                    .invoke(connection)
            })?;
            if state.is_none() {
                state = Some(parse_state(&fields)?);
            }
            let read = entries.len();
            for member in entries {
                let (seq, value) = split_log_member(&member)?;
                let change = decode_log_entry(seq, value)?;
                if fill.is_full() || !fill.admit(change.item_bytes()) {
                    break 'pages false;
                }
                changes.push(change);
                cursor = seq;
            }
            if read < want {
                break true;
            }
        };
        let state = state.unwrap_or_default();
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
        let keys = PartitionKeys::new(partition);
        let state = parse_state(&self.run(|connection| read_state(connection, &keys))?)?;
        if state.head == 0 {
            return Ok(CompactionReport::default());
        }
        if state.head <= keep_recent {
            return Ok(CompactionReport { removed: 0, horizon: state.horizon });
        }
        let point = state.head - keep_recent;
        let mut report = CompactionReport { removed: 0, horizon: state.horizon };
        let mut scanned_to = 0;
        loop {
            let entries: Vec<Vec<u8>> = self.run(|connection| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&keys.log)
                    .arg(format!("({scanned_to}"))
                    .arg(point)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(COMPACTION_STEP_ENTRIES)
                    .query(connection)
            })?;
            let doomed = self.superseded(&keys, &entries)?;
            let (removed, horizon): (u64, u64) = self.run_durable(|connection| {
                let mut invocation = self.scripts.compact.prepare_invoke();
                invocation.key(&keys.state).key(&keys.log).arg(point);
                for member in &doomed {
                    invocation.arg(member.as_slice());
                }
                Ok((invocation.invoke(connection)?, true))
            })?;
            report.removed += removed;
            report.horizon = report.horizon.max(horizon);
            match entries.last() {
                Some(last) if entries.len() == COMPACTION_STEP_ENTRIES => scanned_to = split_log_member(last)?.0,
                _ => return Ok(report),
            }
        }
    }

    fn partitions(&self) -> StoreResult<Vec<PartitionName>> {
        let members: Vec<String> =
            self.run(|connection| redis::cmd("SMEMBERS").arg(keys::PARTITIONS).query(connection))?;
        let mut names = members
            .iter()
            .map(|member| {
                keys::parse_pair_member(member)
                    .map(|(source, key)| PartitionName::new(source, key))
                    .ok_or_else(|| StoreError::Corrupt(format!("a listed partition is malformed: {member:?}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }
}

impl RedisStore {
    /// Returns the log members among `entries` that a later change supersedes: deletes
    /// (tombstones at or below the compaction point) and upserts whose record is now at
    /// another version or gone.
    fn superseded(&self, keys: &PartitionKeys, entries: &[Vec<u8>]) -> StoreResult<Vec<Vec<u8>>> {
        let mut doomed = Vec::new();
        let mut upserts: Vec<(&Vec<u8>, u64, &str)> = Vec::new();
        for member in entries {
            let (seq, value) = split_log_member(member)?;
            match split_log_value(value)? {
                LogValue::Delete { .. } => doomed.push(member.clone()),
                LogValue::Upsert { id, .. } => upserts.push((member, seq, id)),
            }
        }
        let ids: Vec<&str> = upserts.iter().map(|(_, _, id)| *id).collect();
        let stored = if ids.is_empty() {
            Vec::new()
        } else {
            self.run(|connection| read_fields(connection, &keys.records, &ids))?
        };
        for ((member, seq, _), value) in upserts.into_iter().zip(stored) {
            let current = value.as_deref().map(split_record_value).transpose()?.map(|(version, _)| version);
            if current != Some(seq) {
                doomed.push(member.clone());
            }
        }
        Ok(doomed)
    }
}

impl RedisStore {
    /// Visits the stored value (version and encoded fields) of each record of `partition`
    /// after `after_id`, in id order, while the page has room; returns whether the snapshot
    /// is complete and the partition's state as of the first chunk read. The one scan behind
    /// [`PartitionStore::read_snapshot`] and [`PartitionStore::read_snapshot_encoded`].
    fn scan_snapshot(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
        mut visit: impl FnMut(&str, &[u8]) -> StoreResult<()>,
    ) -> StoreResult<(bool, PartitionState)> {
        let keys = PartitionKeys::new(partition);
        let mut fill = PageFill::new(limit);
        let (mut admitted, mut last_id) = (0usize, None::<String>);
        let mut state: Option<PartitionState> = None;
        let done = 'pages: loop {
            let want = limit.items.saturating_sub(admitted).saturating_add(1).min(READ_CHUNK);
            let after = last_id.as_deref().or(after_id);
            let (fields, ids, values): SnapshotChunk = self.run(|connection| {
                self.scripts
                    .read_snapshot
                    .key(&keys.state)
                    .key(&keys.ids)
                    .key(&keys.records)
                    .arg(if after.is_some() { "1" } else { "0" })
                    .arg(after.unwrap_or_default())
                    .arg(want)
                    .invoke(connection)
            })?;
            if state.is_none() {
                state = Some(parse_state(&fields)?);
            }
            let read = ids.len();
            for (id, value) in ids.into_iter().zip(values) {
                let value = value.ok_or_else(|| {
                    StoreError::Corrupt(format!("record {id:?} of {partition} is listed without a value"))
                })?;
                let (version, encoded_fields) = split_record_value(&value)?;
                if fill.is_full() || !fill.admit(record_parts_item_bytes(&id, version, encoded_fields.len())) {
                    break 'pages false;
                }
                visit(&id, &value)?;
                admitted += 1;
                last_id = Some(id);
            }
            if read < want {
                break true;
            }
        };
        Ok((done, state.unwrap_or_default()))
    }
}
