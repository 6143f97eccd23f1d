//! Device mutation queues and outcomes in Redis: one hash tag per device (`keys.rs`), the
//! dedupe of mutation ids and the queue bound checked by one script.

use std::time::Instant;

use prost::Message as _;

use super::keys::{self, MutationKeys};
use super::{RedisStore, now_ms, parse_u64};
use crate::storage::embedded::mutation_queue::{MutationValue, result_value, split_result_value};
use crate::storage::embedded::tables::corrupt;
use crate::storage::{
    CommittedBatch, Enqueued, FailedMutation, Fence, MutationOutcome, MutationQueue, PartitionWrite, QueuedMutation,
    StoreError, StoreResult,
};

/// Outcomes examined per step while pruning.
const PRUNE_STEP: usize = 1_000;

impl MutationQueue for RedisStore {
    fn enqueue_mutation(&self, mutation: &QueuedMutation, max_pending: u64) -> StoreResult<Enqueued> {
        let client = mutation.client_id.as_str();
        // Listed before anything is queued, so `pending_mutations` never misses a device.
        self.run(|connection| redis::cmd("SADD").arg(keys::MUTATION_CLIENTS).arg(client).query::<()>(connection))?;
        let keys = MutationKeys::new(client);
        let value = MutationValue::from_queued(mutation).encode_to_vec();
        let (kind, detail): (String, Vec<u8>) = self.run_durable(|connection| {
            let answer: (String, Vec<u8>) = self
                .scripts
                .enqueue_mutation
                .key(&keys.results)
                .key(&keys.ids)
                .key(&keys.queue)
                .key(&keys.values)
                .arg(&mutation.mutation_id)
                .arg(max_pending)
                .arg(value.as_slice())
                .invoke(connection)?;
            let wrote = answer.0 == "queued";
            Ok((answer, wrote))
        })?;
        let number = |bytes: &[u8]| parse_u64(&String::from_utf8_lossy(bytes), "queue position");
        match kind.as_str() {
            "done" => Ok(Enqueued::Done { result: split_result_value(&detail)?.1.to_vec() }),
            "pending" => Ok(Enqueued::Pending { seq: number(&detail)? }),
            "full" => Err(StoreError::QueueFull { pending: number(&detail)? }),
            "queued" => Ok(Enqueued::Queued { seq: number(&detail)? }),
            other => Err(StoreError::Corrupt(format!("the enqueue script answered {other:?}"))),
        }
    }

    fn pending_mutations(&self) -> StoreResult<Vec<QueuedMutation>> {
        let mut clients: Vec<String> =
            self.run(|connection| redis::cmd("SMEMBERS").arg(keys::MUTATION_CLIENTS).query(connection))?;
        clients.sort();
        let mut pending = Vec::new();
        for client in clients {
            pending.extend(self.pending_mutations_of(&client)?);
        }
        Ok(pending)
    }

    fn finish_mutation(
        &self,
        writes: Vec<PartitionWrite>,
        outcome: MutationOutcome,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.submit(&writes)?;
        // Under a lane's lease, a holder that lost it writes nothing at all: checked first
        // here, and again atomically with the outcome.
        if let Some(fence) = &outcome.fence {
            self.check_fence(fence)?;
        }
        let result = self.write_partitions(writes, None).and_then(|batches| {
            self.store_outcome(&outcome)?;
            Ok(batches)
        });
        self.answered(result)
    }

    fn pending_mutations_of(&self, client_id: &str) -> StoreResult<Vec<QueuedMutation>> {
        let keys = MutationKeys::new(client_id);
        let entries: Vec<(String, Vec<u8>)> =
            self.run(|connection| redis::cmd("HGETALL").arg(&keys.values).query(connection))?;
        let mut queued = entries
            .into_iter()
            .map(|(seq, value)| {
                let seq = parse_u64(&seq, "queue position")?;
                let value = MutationValue::decode(value.as_slice()).map_err(|e| corrupt("mutation", &e))?;
                value.into_queued(client_id, seq)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        queued.sort_by_key(|mutation| mutation.seq);
        Ok(queued)
    }

    fn prune_mutation_outcomes(&self, finished_before_ms: u64) -> StoreResult<u64> {
        let mut removed = 0;
        loop {
            let members: Vec<String> = self.run(|connection| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(keys::MUTATION_AGES)
                    .arg("-inf")
                    .arg(format!("({finished_before_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PRUNE_STEP)
                    .query(connection)
            })?;
            for member in &members {
                removed += self.prune_outcome(member, finished_before_ms)?;
            }
            if members.len() < PRUNE_STEP {
                return Ok(removed);
            }
        }
    }

    fn failed_mutations(&self) -> StoreResult<Vec<FailedMutation>> {
        let mut clients: Vec<String> =
            self.run(|connection| redis::cmd("SMEMBERS").arg(keys::MUTATION_CLIENTS).query(connection))?;
        clients.sort();
        let mut failed = Vec::new();
        for client in clients {
            let keys = MutationKeys::new(&client);
            let mut entries: Vec<(String, Vec<u8>)> =
                self.run(|connection| redis::cmd("HGETALL").arg(&keys.failed).query(connection))?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (mutation_id, stored) in entries {
                let (failed_ms, value) = split_result_value(&stored)?;
                let value = MutationValue::decode(value).map_err(|e| corrupt("failed mutation", &e))?;
                let outcome: Option<Vec<u8>> =
                    self.run(|connection| redis::cmd("HGET").arg(&keys.results).arg(&mutation_id).query(connection))?;
                let result = match outcome {
                    Some(stored) => split_result_value(&stored)?.1.to_vec(),
                    None => Vec::new(),
                };
                failed.push(FailedMutation { mutation: value.into_queued(&client, 0)?, result, failed_ms });
            }
        }
        Ok(failed)
    }

    fn retry_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<Option<QueuedMutation>> {
        let keys = MutationKeys::new(client_id);
        let requeued: Option<(String, Vec<u8>)> = self.run_durable(|connection| {
            let requeued: Option<(String, Vec<u8>)> = self
                .scripts
                .retry_failed_mutation
                .key(&keys.results)
                .key(&keys.ids)
                .key(&keys.queue)
                .key(&keys.values)
                .key(&keys.failed)
                .arg(mutation_id)
                .invoke(connection)?;
            let wrote = requeued.is_some();
            Ok((requeued, wrote))
        })?;
        let Some((position, value)) = requeued else { return Ok(None) };
        let seq = parse_u64(&position, "queue position")?;
        let value = MutationValue::decode(value.as_slice()).map_err(|e| corrupt("failed mutation", &e))?;
        Ok(Some(value.into_queued(client_id, seq)?))
    }

    fn dismiss_failed_mutation(&self, client_id: &str, mutation_id: &str) -> StoreResult<bool> {
        let keys = MutationKeys::new(client_id);
        let removed: u64 = self.run_durable(|connection| {
            let removed: u64 = redis::cmd("HDEL").arg(&keys.failed).arg(mutation_id).query(connection)?;
            Ok((removed, removed > 0))
        })?;
        Ok(removed > 0)
    }
}

impl RedisStore {
    /// Stores a finished mutation's outcome and takes it off its queue: indexed by age
    /// first, so that a crash in between leaves an age without an outcome (pruned as
    /// nothing), never an outcome that is never pruned.
    fn store_outcome(&self, outcome: &MutationOutcome) -> StoreResult<()> {
        let finished_ms = now_ms();
        let member = keys::pair_member(&outcome.client_id, &outcome.mutation_id);
        self.run(|connection| {
            redis::cmd("ZADD").arg(keys::MUTATION_AGES).arg(finished_ms).arg(&member).query::<()>(connection)
        })?;
        let keys = MutationKeys::new(&outcome.client_id);
        let value = result_value(finished_ms, &outcome.result);
        let failed = outcome.failed.as_ref().map_or_else(Vec::new, |mutation| {
            result_value(finished_ms, &MutationValue::from_queued(mutation).encode_to_vec())
        });
        let started = Instant::now();
        let fence = outcome.fence.as_ref();
        let stored: bool = self.run_durable(|connection| {
            let stored: bool = self
                .scripts
                .finish_mutation
                .key(&keys.results)
                .key(&keys.ids)
                .key(&keys.queue)
                .key(&keys.values)
                .key(&keys.failed)
                .key(fence.map_or(keys.results.as_str(), |fence| fence.key.as_str()))
                .arg(&outcome.mutation_id)
                .arg(value.as_slice())
                .arg(failed.as_slice())
                .arg(fence.map_or("", |fence| fence.holder.as_str()))
                .invoke(connection)?;
            Ok((stored, stored))
        })?;
        if !stored {
            return Err(StoreError::LeaseLost { lease: fence.map_or_else(String::new, |fence| fence.lease.clone()) });
        }
        self.record_commit(started);
        Ok(())
    }

    /// Fails with [`StoreError::LeaseLost`] unless `fence`'s grant still holds its lease.
    pub(super) fn check_fence(&self, fence: &Fence) -> StoreResult<()> {
        let holder: Option<String> = self.run(|connection| redis::cmd("GET").arg(&fence.key).query(connection))?;
        if holder.as_deref() == Some(fence.holder.as_str()) {
            Ok(())
        } else {
            Err(StoreError::LeaseLost { lease: fence.lease.clone() })
        }
    }

    /// Removes one aged outcome if it finished before `before_ms`; returns 1 if it did.
    fn prune_outcome(&self, member: &str, before_ms: u64) -> StoreResult<u64> {
        let (client, mutation_id) = keys::parse_pair_member(member)
            .ok_or_else(|| StoreError::Corrupt(format!("a mutation age entry is malformed: {member:?}")))?;
        let keys = MutationKeys::new(&client);
        let stored: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(&keys.results).arg(&mutation_id).query(connection))?;
        let mut removed = 0;
        if let Some(stored) = stored {
            let (finished_ms, _) = split_result_value(&stored)?;
            if finished_ms < before_ms {
                removed = self.run(|connection| {
                    let removed = redis::cmd("HDEL").arg(&keys.results).arg(&mutation_id).query::<u64>(connection)?;
                    redis::cmd("HDEL").arg(&keys.failed).arg(&mutation_id).query::<()>(connection)?;
                    Ok(removed)
                })?;
            }
        }
        self.run(|connection| redis::cmd("ZREM").arg(keys::MUTATION_AGES).arg(member).query::<()>(connection))?;
        Ok(removed)
    }
}
