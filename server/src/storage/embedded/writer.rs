//! The writer thread: group commit of partition writes. Callers queue validated batches and
//! block until the writer has applied every queued batch in one write transaction, committed
//! it with `Durability::Immediate` (one fsync for the whole group), called the
//! [`CommitListener`] in commit order and answered them.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use redb::{ReadableTable, Table, WriteTransaction};
use syncline_proto::checksum::Checksum;
use syncline_proto::record::validate_record_id;
use syncline_proto::v1::Record;
use tracing::error;

use super::Shared;
use super::mutation_queue::MutationTables;
use super::tables::*;
use crate::storage::{
    CapturePosition, Change, CommitListener, CommittedBatch, MAX_BATCH_CHANGES, MutationOutcome, PartitionName,
    PartitionState, PartitionWrite, StoreError, StoreResult,
};

/// Batches that may wait for the writer thread: past this, `apply_batch` callers block on
/// the queue (backpressure) instead of growing memory without bound. Large enough that a
/// burst from every connected backend fits while one group commits.
pub(super) const WRITE_QUEUE_CAPACITY: usize = 1024;

/// Most batches applied in one group commit: bounds the latency a batch can add to the
/// others of its group and the memory of one group's replies.
const MAX_GROUP_BATCHES: usize = 512;

/// Most changes applied in one group commit (a batch is never split, so a single batch of
/// [`MAX_BATCH_CHANGES`] always fits): bounds the size of one write transaction.
const MAX_GROUP_CHANGES: usize = 4 * MAX_BATCH_CHANGES;

/// A commit (making a group durable: mostly the fsync) that takes this long holds back every
/// write queued behind it and every live push of them, so it is counted and logged.
pub const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What a write request records beside its partition writes, in the same commit.
pub(super) enum CommitMarker {
    /// How far change capture has read ([`Store::apply_capture`]).
    Capture(CapturePosition),
    /// A mutation finished with this outcome ([`Store::finish_mutation`]).
    MutationFinished(Box<MutationOutcome>),
}

/// One `apply_batch`, `apply_capture` or `finish_mutation` call waiting for the writer
/// thread: its partition writes (and marker) commit together or not at all.
pub(super) struct WriteRequest {
    pub(super) writes: Vec<PartitionWrite>,
    pub(super) marker: Option<CommitMarker>,
    pub(super) reply: SyncSender<StoreResult<Vec<CommittedBatch>>>,
}

impl WriteRequest {
    fn changes(&self) -> usize {
        self.writes.iter().map(|write| write.upserts.len() + write.deletes.len()).sum()
    }
}

/// Checks a batch against the limits of [`Store::apply_batch`] without touching the store.
pub(in crate::storage) fn validate_batch(upserts: &[Record], deletes: &[String]) -> StoreResult<()> {
    let changes = upserts.len() + deletes.len();
    if changes > MAX_BATCH_CHANGES {
        return Err(StoreError::BatchTooLarge { changes });
    }
    for id in deletes {
        validate_record_id(id)?;
    }
    for record in upserts {
        record.validate()?;
    }
    let mut seen = HashSet::with_capacity(changes);
    let ids = deletes.iter().map(String::as_str).chain(upserts.iter().map(|r| r.id.as_str()));
    for id in ids {
        if !seen.insert(id) {
            return Err(StoreError::DuplicateId { id: id.to_owned() });
        }
    }
    Ok(())
}

/// The writer thread: takes every queued batch (within the group bounds), commits them
/// together, and repeats until the queue is closed.
pub(super) fn run_writer(shared: &Shared, queue: &Receiver<WriteRequest>) {
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
                if let Some(listener) = &shared.listener {
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
        let finished_ms = super::now_ms();
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
        shared.commit_micros_total.fetch_add(took.as_micros() as u64, Ordering::AcqRel);
        shared.commit_latency.observe(took);
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
