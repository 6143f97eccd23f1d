//! The device mutation queue and the outcomes of finished mutations, in the embedded store.
//!
//! A device's unfinished mutations wait in `mutations` by queue position, with their ids in
//! `mutation_ids`. When one finishes, its outcome is written to `mutation_results` (and
//! indexed by age in `mutation_result_ages`) in the same transaction that removes it from the
//! queue and commits the record change it caused, so a mutation is always either queued or
//! finished, never both or neither. Outcomes are kept for the configured retention
//! ([`Store::prune_mutation_outcomes`](super::super::Store::prune_mutation_outcomes)): a
//! device that resends a mutation id within it gets the stored outcome back; after it, the
//! id is unknown again.
//!
//! A mutation its channel refused is also kept in `failed_mutations` (written in the same
//! transaction as its outcome, pruned with it): an operator retries it (one transaction
//! forgets outcome and failed entry and queues it again) or dismisses it.

use std::collections::BTreeMap;

use prost::Message as _;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::EmbeddedStore;
use super::tables::{corrupt, store_error};
use super::writer::CommitMarker;
use crate::storage::{
    CommittedBatch, Enqueued, FailedMutation, MutationOp, MutationOutcome, MutationQueue, PartitionName,
    PartitionWrite, QueuedMutation, StoreError, StoreResult,
};

/// Device mutation queue: (client id, position) → encoded [`MutationValue`]. Holds only
/// unfinished mutations.
pub(super) const MUTATIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mutations");
/// Ids of queued mutations: (client id, mutation id) → position.
pub(super) const MUTATION_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("mutation_ids");
/// Outcomes of finished mutations: (client id, mutation id) → finished at (Unix ms, 8 bytes
/// LE) ++ encoded `MutationResult`.
pub(super) const MUTATION_RESULTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("mutation_results");
/// The same outcomes by age, for retention: (finished at, client id, mutation id) → ().
pub(super) const MUTATION_RESULT_AGES: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("mutation_result_ages");

/// Failed mutations: (client id, mutation id) → finished at (Unix ms, 8 bytes LE) ++ encoded
/// [`MutationValue`] (see [`MutationOutcome::failed`]).
pub(super) const FAILED_MUTATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("failed_mutations");

/// Outcomes removed per write transaction while pruning, so that pruning a large backlog
/// never holds the write lock for long.
const PRUNE_STEP: usize = 10_000;

/// A queued device mutation as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(in crate::storage) struct MutationValue {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    mutation_id: String,
    #[prost(string, tag = "3")]
    source: String,
    #[prost(string, tag = "4")]
    key: String,
    /// The operation as the protocol numbers it (`syncline.v1.MutationOp`).
    #[prost(int32, tag = "5")]
    op: i32,
    #[prost(string, tag = "6")]
    id: String,
    #[prost(btree_map = "string, message", tag = "7")]
    fields: BTreeMap<String, syncline_proto::v1::Value>,
    #[prost(uint64, tag = "8")]
    base_version: u64,
}

impl MutationValue {
    pub(in crate::storage) fn from_queued(mutation: &QueuedMutation) -> Self {
        Self {
            user_id: mutation.user_id.clone(),
            mutation_id: mutation.mutation_id.clone(),
            source: mutation.partition.source.clone(),
            key: mutation.partition.key.clone(),
            op: mutation.op.to_wire() as i32,
            id: mutation.id.clone(),
            fields: mutation.fields.clone(),
            base_version: mutation.base_version,
        }
    }

    pub(in crate::storage) fn into_queued(self, client_id: &str, seq: u64) -> StoreResult<QueuedMutation> {
        let op = MutationOp::from_wire(self.op).ok_or_else(|| {
            StoreError::Corrupt(format!("queued mutation {client_id}/{seq} has an unknown operation {}", self.op))
        })?;
        Ok(QueuedMutation {
            client_id: client_id.to_owned(),
            user_id: self.user_id,
            seq,
            mutation_id: self.mutation_id,
            partition: PartitionName::new(self.source, self.key),
            op,
            id: self.id,
            fields: self.fields,
            base_version: self.base_version,
        })
    }
}

/// Returns the stored form of an outcome finished at `finished_ms`.
pub(in crate::storage) fn result_value(finished_ms: u64, result: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + result.len());
    value.extend_from_slice(&finished_ms.to_le_bytes());
    value.extend_from_slice(result);
    value
}

/// Splits a stored outcome into when it finished and the encoded `MutationResult`.
pub(in crate::storage) fn split_result_value(value: &[u8]) -> StoreResult<(u64, &[u8])> {
    let (time, result) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("a mutation outcome is shorter than its timestamp".into()))?;
    Ok((u64::from_le_bytes(*time), result))
}

/// Queues `mutation` in `txn` unless its id is known (see
/// [`Store::enqueue_mutation`](crate::storage::Store::enqueue_mutation)).
pub(super) fn enqueue(txn: &WriteTransaction, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued> {
    let client = mutation.client_id.as_str();
    let id_key = (client, mutation.mutation_id.as_str());
    let results = txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
    if let Some(stored) = results.get(id_key).map_err(store_error)? {
        let (_, result) = split_result_value(stored.value())?;
        return Ok(Enqueued::Done { result: result.to_vec() });
    }
    let mut ids = txn.open_table(MUTATION_IDS).map_err(store_error)?;
    if let Some(seq) = ids.get(id_key).map_err(store_error)? {
        return Ok(Enqueued::Pending { seq: seq.value() });
    }
    let mut queue = txn.open_table(MUTATIONS).map_err(store_error)?;
    let range = (client, 0)..=(client, u64::MAX);
    // The queue holds only unfinished mutations, at most `max_pending` of a device.
    let pending = queue.range(range.clone()).map_err(store_error)?.count() as u64;
    if pending >= max_pending {
        return Err(StoreError::QueueFull { pending });
    }
    let last = queue.range(range).map_err(store_error)?.next_back().transpose().map_err(store_error)?;
    let seq = last.map_or(0, |(key, _)| key.value().1) + 1;
    let value = MutationValue::from_queued(mutation).encode_to_vec();
    queue.insert((client, seq), value.as_slice()).map_err(store_error)?;
    ids.insert(id_key, seq).map_err(store_error)?;
    Ok(Enqueued::Queued { seq })
}

/// Returns every unfinished mutation, by client and queue position.
pub(super) fn pending(
    queue: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
) -> StoreResult<Vec<QueuedMutation>> {
    let mut pending = Vec::new();
    for entry in queue.iter().map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let (client, seq) = key.value();
        let stored = MutationValue::decode(value.value()).map_err(|e| corrupt("mutation", &e))?;
        pending.push(stored.into_queued(client, seq)?);
    }
    Ok(pending)
}

/// The mutation tables, open in the writer's transaction.
pub(super) struct MutationTables<'txn> {
    queue: Table<'txn, (&'static str, u64), &'static [u8]>,
    ids: Table<'txn, (&'static str, &'static str), u64>,
    results: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    ages: Table<'txn, (u64, &'static str, &'static str), ()>,
    failed: Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl<'txn> MutationTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            queue: txn.open_table(MUTATIONS).map_err(store_error)?,
            ids: txn.open_table(MUTATION_IDS).map_err(store_error)?,
            results: txn.open_table(MUTATION_RESULTS).map_err(store_error)?,
            ages: txn.open_table(MUTATION_RESULT_AGES).map_err(store_error)?,
            failed: txn.open_table(FAILED_MUTATIONS).map_err(store_error)?,
        })
    }

    /// Stores a mutation's outcome, finished at `finished_ms`, and takes it off its device's
    /// queue.
    pub(super) fn finish(&mut self, outcome: &MutationOutcome, finished_ms: u64) -> StoreResult<()> {
        let key = (outcome.client_id.as_str(), outcome.mutation_id.as_str());
        let value = result_value(finished_ms, &outcome.result);
        let replaced = self.results.insert(key, value.as_slice()).map_err(store_error)?;
        if let Some(old) = replaced {
            let (old_ms, _) = split_result_value(old.value())?;
            self.ages.remove((old_ms, key.0, key.1)).map_err(store_error)?;
        }
        self.ages.insert((finished_ms, key.0, key.1), ()).map_err(store_error)?;
        let queued = self.ids.remove(key).map_err(store_error)?.map(|seq| seq.value());
        if let Some(seq) = queued {
            self.queue.remove((key.0, seq)).map_err(store_error)?;
        }
        match &outcome.failed {
            Some(mutation) => {
                let value = result_value(finished_ms, &MutationValue::from_queued(mutation).encode_to_vec());
                self.failed.insert(key, value.as_slice()).map_err(store_error)?;
            }
            None => {
                self.failed.remove(key).map_err(store_error)?;
            }
        }
        Ok(())
    }
}

/// Returns every kept failed mutation with its outcome.
fn failed(txn: &redb::ReadTransaction) -> StoreResult<Vec<FailedMutation>> {
    let table = txn.open_table(FAILED_MUTATIONS).map_err(store_error)?;
    let results = txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
    let mut failed = Vec::new();
    for entry in table.iter().map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let (client, mutation_id) = key.value();
        let (failed_ms, stored) = split_result_value(value.value())?;
        let stored = MutationValue::decode(stored).map_err(|e| corrupt("failed mutation", &e))?;
        let result = match results.get((client, mutation_id)).map_err(store_error)? {
            Some(value) => split_result_value(value.value())?.1.to_vec(),
            None => Vec::new(),
        };
        failed.push(FailedMutation { mutation: stored.into_queued(client, 0)?, result, failed_ms });
    }
    Ok(failed)
}

/// Queues a failed mutation again in `txn`, forgetting its outcome and failed entry.
fn requeue_failed(txn: &WriteTransaction, client_id: &str, mutation_id: &str) -> StoreResult<Option<QueuedMutation>> {
    let key = (client_id, mutation_id);
    let stored = {
        let mut table = txn.open_table(FAILED_MUTATIONS).map_err(store_error)?;
        let Some(value) = table.remove(key).map_err(store_error)? else { return Ok(None) };
        let (_, stored) = split_result_value(value.value())?;
        MutationValue::decode(stored).map_err(|e| corrupt("failed mutation", &e))?
    };
    {
        let mut results = txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
        let mut ages = txn.open_table(MUTATION_RESULT_AGES).map_err(store_error)?;
        if let Some(old) = results.remove(key).map_err(store_error)? {
            let (old_ms, _) = split_result_value(old.value())?;
            ages.remove((old_ms, client_id, mutation_id)).map_err(store_error)?;
        }
    }
    let mutation = stored.into_queued(client_id, 0)?;
    // An operator's retry is not held back by the device's queue bound.
    match enqueue(txn, &mutation, u64::MAX)? {
        Enqueued::Queued { seq } | Enqueued::Pending { seq } => Ok(Some(QueuedMutation { seq, ..mutation })),
        Enqueued::Done { .. } => Err(StoreError::Corrupt(format!(
            "failed mutation {client_id}/{mutation_id} still has an outcome after it was forgotten"
        ))),
    }
}

/// Removes up to [`PRUNE_STEP`] outcomes that finished before `before_ms`; returns how many,
/// and whether more may remain.
pub(super) fn prune_step(txn: &WriteTransaction, before_ms: u64) -> StoreResult<(u64, bool)> {
    let mut ages = txn.open_table(MUTATION_RESULT_AGES).map_err(store_error)?;
    let mut results = txn.open_table(MUTATION_RESULTS).map_err(store_error)?;
    let mut failed = txn.open_table(FAILED_MUTATIONS).map_err(store_error)?;
    let mut expired = Vec::new();
    for entry in ages.range((0, "", "")..(before_ms, "", "")).map_err(store_error)?.take(PRUNE_STEP) {
        let (key, _) = entry.map_err(store_error)?;
        let (finished_ms, client, mutation_id) = key.value();
        expired.push((finished_ms, client.to_owned(), mutation_id.to_owned()));
    }
    for (finished_ms, client, mutation_id) in &expired {
        ages.remove((*finished_ms, client.as_str(), mutation_id.as_str())).map_err(store_error)?;
        results.remove((client.as_str(), mutation_id.as_str())).map_err(store_error)?;
        failed.remove((client.as_str(), mutation_id.as_str())).map_err(store_error)?;
    }
    Ok((expired.len() as u64, expired.len() == PRUNE_STEP))
}

/// Format 1 kept outcomes in `capture_positions` under `mutation:<client>\0<mutation id>` and
/// left finished mutations in the queue. Moves them to the outcome tables (finished "now":
/// their real age is unknown, so they get a full retention period) and empties the queue of
/// finished mutations. Returns how many outcomes moved.
pub(super) fn migrate_from_format_1(
    txn: &WriteTransaction,
    positions: TableDefinition<&str, &[u8]>,
    now_ms: u64,
) -> StoreResult<u64> {
    const LEGACY_PREFIX: &str = "mutation:";
    let mut legacy = txn.open_table(positions).map_err(store_error)?;
    let mut moved = Vec::new();
    for entry in legacy.range(LEGACY_PREFIX..).map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let Some(rest) = key.value().strip_prefix(LEGACY_PREFIX) else { break };
        let (client, mutation_id) = rest
            .split_once('\0')
            .ok_or_else(|| StoreError::Corrupt(format!("a legacy mutation outcome key is malformed: {rest:?}")))?;
        moved.push((key.value().to_owned(), client.to_owned(), mutation_id.to_owned(), value.value().to_vec()));
    }
    let mut tables = MutationTables::open(txn)?;
    for (legacy_key, client, mutation_id, result) in &moved {
        legacy.remove(legacy_key.as_str()).map_err(store_error)?;
        let outcome = MutationOutcome {
            client_id: client.clone(),
            mutation_id: mutation_id.clone(),
            result: result.clone(),
            failed: None,
            fence: None,
        };
        tables.finish(&outcome, now_ms)?;
    }
    Ok(moved.len() as u64)
}

impl MutationQueue for EmbeddedStore {
    fn enqueue_mutation(&self, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued> {
        let txn = self.begin_write()?;
        let outcome = enqueue(&txn, mutation, max_pending)?;
        if matches!(outcome, Enqueued::Queued { .. }) {
            txn.commit().map_err(store_error)?;
        }
        Ok(outcome)
    }

    fn pending_mutations(&self) -> StoreResult<Vec<QueuedMutation>> {
        let txn = self.begin_read()?;
        pending(&txn.open_table(MUTATIONS).map_err(store_error)?)
    }

    fn finish_mutation(
        &self,
        writes: Vec<PartitionWrite>,
        outcome: MutationOutcome,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(writes, Some(CommitMarker::MutationFinished(Box::new(outcome))))
    }

    fn prune_mutation_outcomes(&self, finished_before_ms: u64) -> StoreResult<u64> {
        let mut removed = 0;
        loop {
            let txn = self.begin_write()?;
            let (step, more) = prune_step(&txn, finished_before_ms)?;
            txn.commit().map_err(store_error)?;
            removed += step;
            if !more {
                return Ok(removed);
            }
        }
    }

    fn failed_mutations(&self) -> StoreResult<Vec<FailedMutation>> {
        failed(&self.begin_read()?)
    }

    fn retry_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<Option<QueuedMutation>> {
        let txn = self.begin_write()?;
        let queued = requeue_failed(&txn, client_id, mutation_id)?;
        if queued.is_some() {
            txn.commit().map_err(store_error)?;
        }
        Ok(queued)
    }

    fn dismiss_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        let removed = txn
            .open_table(FAILED_MUTATIONS)
            .map_err(store_error)?
            .remove((client_id, mutation_id))
            .map_err(store_error)?
            .is_some();
        if removed {
            txn.commit().map_err(store_error)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
