//! Group commit of single-partition writes (`apply_batch`: Ingest and admin pushes), the Redis
//! store's counterpart of the embedded writer's group commit.
//!
//! Writes of one partition on one node are serialized by the partition's stripe lock. A write
//! joins its stripe's queue, then takes the lock; whoever holds it (the leader) takes every
//! write queued meanwhile and commits each partition's writes as **one** write script: the
//! writes are planned one after the other against a single read of the partition (each sees
//! the ones before it, so sequences, versions, the total and the checksum come out exactly as
//! if they had been written one by one), their log entries are all written, and each id gets
//! its final value. One round trip and one AOF fsync then acknowledge many writes, and the
//! listener sees them together, so live push sends one frame for the group instead of one per
//! write. A follower whose write the leader committed finds its answer when it gets the lock.
//!
//! Writes under a lease (capture, mutation outcomes) are never grouped: each has its own fence.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::RedisStore;
use super::keys::{self, PartitionKeys};
use super::partitions::{Plan, WriteScript, committed_batch, parse_state, plan_batch, read_fields, read_state};
use crate::storage::embedded::tables::encode_fields;
use crate::storage::{CommittedBatch, PartitionName, PartitionState, PartitionWrite, StoreError, StoreResult};

/// Most changes one grouped write script carries; a leader with more queued commits them in
/// several groups (bounds one script's size and the time it holds Redis).
const MAX_GROUP_CHANGES: usize = 10_000;

/// Times a group is recomputed after another node moved the partition's head first.
const MAX_GROUP_ATTEMPTS: usize = 64;

/// The writes of one lock stripe: the lock, and the writes waiting for it.
#[derive(Default)]
pub(super) struct WriteStripe {
    pub(super) lock: Mutex<()>,
    queue: Mutex<Vec<Arc<Queued>>>,
}

/// A write waiting in a stripe's queue, and its answer once a leader committed it.
struct Queued {
    write: Mutex<Option<PartitionWrite>>,
    answer: Mutex<Option<StoreResult<CommittedBatch>>>,
}

impl RedisStore {
    /// Commits `write` (validated, unfenced), grouped with the writes of its stripe queued
    /// while the stripe's lock was held.
    pub(super) fn write_grouped(&self, write: PartitionWrite) -> StoreResult<CommittedBatch> {
        let stripe = self.stripe(&write.partition);
        let queued = Arc::new(Queued { write: Mutex::new(Some(write)), answer: Mutex::new(None) });
        stripe.queue.lock().push(queued.clone());
        let _lock = stripe.lock.lock();
        if let Some(answer) = queued.answer.lock().take() {
            return answer;
        }
        // Leader: everything queued in the stripe, this write included (no one else could
        // have taken it without the lock, and whoever took it would have answered it).
        let taken = std::mem::take(&mut *stripe.queue.lock());
        for (writes, waiting) in groups(&taken) {
            let answers = self.commit_group(writes);
            for (answer, queued) in answers.into_iter().zip(waiting) {
                *queued.answer.lock() = Some(answer);
            }
        }
        let answer = queued.answer.lock().take();
        answer.unwrap_or_else(|| Err(StoreError::Io("a grouped write was left without an answer".to_owned())))
    }

    /// Commits the writes of one partition, in order, as one write script (a single write as
    /// it always is); returns each write's answer.
    fn commit_group(&self, writes: Vec<PartitionWrite>) -> Vec<StoreResult<CommittedBatch>> {
        if writes.len() == 1 {
            return writes.into_iter().map(|write| self.write_locked(write, None)).collect();
        }
        let count = writes.len();
        match self.commit_merged(writes) {
            Ok(batches) => batches.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error); count],
        }
    }

    fn commit_merged(&self, mut writes: Vec<PartitionWrite>) -> StoreResult<Vec<CommittedBatch>> {
        let partition = writes[0].partition.clone();
        let keys = PartitionKeys::new(&partition);
        let fields: Vec<Vec<Vec<u8>>> =
            writes.iter_mut().map(|write| write.upserts.iter_mut().map(encode_fields).collect()).collect();
        let mut ids: Vec<&str> = Vec::new();
        for write in &writes {
            ids.extend(write.deletes.iter().map(String::as_str));
            ids.extend(write.upserts.iter().map(|record| record.id.as_str()));
        }
        ids.sort_unstable();
        ids.dedup();
        for _ in 0..MAX_GROUP_ATTEMPTS {
            let (state, stored) = self.run(|connection| {
                let state = read_state(connection, &keys)?;
                let stored = if ids.is_empty() { Vec::new() } else { read_fields(connection, &keys.records, &ids)? };
                Ok((state, stored))
            })?;
            let state = parse_state(&state)?;
            let mut view: HashMap<&str, Option<Vec<u8>>> = ids.iter().copied().zip(stored).collect();
            let (plans, touched) = plan_in_order(&writes, &fields, state, &mut view)?;
            let last = plans.last().map_or(state, |plan| plan.state);
            if last.head == state.head {
                // Nothing in the group changed anything.
                return Ok(writes.into_iter().zip(plans).map(|(write, plan)| committed_batch(write, plan)).collect());
            }
            if state.head == 0 {
                // Listed before its first write, as a single write does.
                let member = keys::partition_member(&partition);
                self.run(|connection| redis::cmd("SADD").arg(keys::PARTITIONS).arg(member).query::<()>(connection))?;
            }
            let script = merged_script(&touched, &view, &plans, state.head, last);
            let started = Instant::now();
            if self.apply_write_script(&keys, &script, None)? > 0 {
                self.record_commit(started);
                let batches: Vec<CommittedBatch> =
                    writes.into_iter().zip(plans).map(|(write, plan)| committed_batch(write, plan)).collect();
                if let Some(listener) = &self.listener {
                    let changed: Vec<&CommittedBatch> = batches.iter().filter(|batch| batch.first_seq > 0).collect();
                    listener.committed(&changed);
                }
                return Ok(batches);
            }
        }
        Err(StoreError::Contention { subject: format!("partition {partition}") })
    }
}

/// The writes of one partition a leader commits together, and whose answers they are.
struct Group<'q> {
    partition: PartitionName,
    changes: usize,
    writes: Vec<PartitionWrite>,
    waiting: Vec<&'q Arc<Queued>>,
}

/// Splits a leader's queued writes into groups of one partition each, in the order their
/// partitions were first queued and each partition's writes in queue order, at most
/// [`MAX_GROUP_CHANGES`] changes a group (a single larger write goes alone).
fn groups(taken: &[Arc<Queued>]) -> Vec<(Vec<PartitionWrite>, Vec<&Arc<Queued>>)> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for queued in taken {
        let Some(write) = queued.write.lock().take() else { continue };
        let changes = write.upserts.len() + write.deletes.len();
        let open = groups.iter_mut().rev().find(|group| group.partition == write.partition);
        match open {
            Some(group) if group.changes + changes <= MAX_GROUP_CHANGES => {
                group.changes += changes;
                group.writes.push(write);
                group.waiting.push(queued);
            }
            _ => groups.push(Group {
                partition: write.partition.clone(),
                changes,
                writes: vec![write],
                waiting: vec![queued],
            }),
        }
    }
    groups.into_iter().map(|group| (group.writes, group.waiting)).collect()
}

/// Plans each write against the partition as the writes before it left it: `view` holds the
/// stored value of every id of the group and is updated write by write. Returns the plans
/// and the ids they changed, in id order.
fn plan_in_order<'a>(
    writes: &'a [PartitionWrite],
    fields: &[Vec<Vec<u8>>],
    mut state: PartitionState,
    view: &mut HashMap<&'a str, Option<Vec<u8>>>,
) -> StoreResult<(Vec<Plan>, BTreeSet<&'a str>)> {
    let mut plans = Vec::with_capacity(writes.len());
    let mut touched = BTreeSet::new();
    for (write, fields) in writes.iter().zip(fields) {
        let stored: Vec<Option<Vec<u8>>> = write
            .deletes
            .iter()
            .map(String::as_str)
            .chain(write.upserts.iter().map(|record| record.id.as_str()))
            .map(|id| view.get(id).cloned().flatten())
            .collect();
        let plan = plan_batch(write, fields, state, &stored)?;
        for &index in &plan.deleted {
            let id = write.deletes[index].as_str();
            view.insert(id, None);
            touched.insert(id);
        }
        for (index, value) in &plan.sets {
            let id = write.upserts[*index].id.as_str();
            view.insert(id, Some(value.clone()));
            touched.insert(id);
        }
        state = plan.state;
        plans.push(plan);
    }
    Ok((plans, touched))
}

/// The group's write script: each id a plan changed at its final value (deleted when the last
/// write that changed it deleted it), every log entry, and the state after the last write.
fn merged_script<'a>(
    touched: &BTreeSet<&'a str>,
    view: &'a HashMap<&'a str, Option<Vec<u8>>>,
    plans: &'a [Plan],
    expected_head: u64,
    last: PartitionState,
) -> WriteScript<'a> {
    let mut script = WriteScript::new(expected_head, last);
    for &id in touched {
        match view.get(id) {
            Some(Some(value)) => script.sets.push((id, value.as_slice())),
            Some(None) => script.deletes.push(id),
            None => {}
        }
    }
    for plan in plans {
        script.log.extend(plan.log.iter().map(|(seq, member)| (*seq, member.as_slice())));
    }
    script
}

#[cfg(test)]
impl RedisStore {
    /// Writes waiting in `partition`'s stripe queue.
    pub(super) fn queued_writes(&self, partition: &PartitionName) -> usize {
        self.stripe(partition).queue.lock().len()
    }
}
