//! The engine's part of device-side writes: queuing creates, updates and deletes, sending
//! them as `Mutate` (in the order and under the rules of [`crate::outbox`]), and handling
//! `MutationAck`, `MutationResult` and the `links` of `Changes`.
//!
//! Results are not pushed after a reconnect: after each `Welcome` the device resends every
//! mutation the server may know and has not answered, with the same `mutation_id`, and the
//! server answers from its records. What the app sees is layered (see the engine's docs):
//! replica, then [`ConfirmedRecords`], then the queue.

use std::collections::BTreeMap;

use syncline_proto::{
    checksum::Checksum,
    v1::{
        Changes, ClientFrame, ErrorCode, Link, Mutate, MutationAck, MutationOp, MutationResult, Record, Value,
        client_frame, value,
    },
};
use tracing::{debug, warn};

use super::{Reaction, SyncEngine, error_code, frame};
use crate::{
    notification::{MutationNotification, MutationOutcome, Notification},
    outbox::{
        self, MutationFailure, MutationState, NewMutation, OutboxError, QueuedMutation, Resolution, Resolved,
        apply_optimistically, random_id, temp_id,
    },
    replica::{PartitionId, PartitionReplica, PartitionView},
};

/// What the device learned about a record from a mutation's result, ahead of the log.
#[derive(Clone, Debug, PartialEq)]
enum Confirmed {
    /// The backend's record (a create's or update's result, or a conflict's current record).
    Record(Record),
    /// The backend deleted the record.
    Deleted,
}

impl Confirmed {
    /// Returns true once the replica knows as much: it holds the record at this version or
    /// later, or its cursor reached the record's version (the partition sequence of its last
    /// change, so a later delete is in the replica too); a delete once the replica no longer
    /// holds the record.
    fn is_superseded(&self, id: &str, replica: Option<&PartitionReplica>) -> bool {
        let Some(replica) = replica else { return false };
        match self {
            Confirmed::Record(record) => {
                replica.records().get(id).is_some_and(|held| held.version >= record.version)
                    || (record.version > 0 && replica.cursor() >= record.version)
            }
            Confirmed::Deleted => !replica.records().contains_key(id),
        }
    }
}

/// Records learned from mutation results that the partitions' logs have not brought yet, so
/// that a succeeded mutation does not flicker back to the old version (or a created record
/// vanish) between its result and the `Changes` carrying it, and so that a discarded
/// conflicting change rolls back to the conflict's current record.
#[derive(Debug, Default)]
pub(super) struct ConfirmedRecords {
    by_partition: BTreeMap<PartitionId, BTreeMap<String, Confirmed>>,
}

impl ConfirmedRecords {
    fn insert(&mut self, partition: &PartitionId, id: &str, confirmed: Confirmed) {
        let records = self.by_partition.entry(partition.clone()).or_default();
        let newer = match (records.get(id), &confirmed) {
            (Some(Confirmed::Record(known)), Confirmed::Record(record)) => record.version >= known.version,
            (Some(_) | None, _) => true,
        };
        if newer {
            records.insert(id.to_owned(), confirmed);
        }
    }

    fn is_empty_for(&self, partition: &PartitionId) -> bool {
        self.by_partition.get(partition).is_none_or(BTreeMap::is_empty)
    }

    /// Returns the version of the record as the backend last reported it, if known here.
    fn version(&self, partition: &PartitionId, id: &str, replica: Option<&PartitionReplica>) -> Option<u64> {
        match self.by_partition.get(partition)?.get(id)? {
            confirmed if confirmed.is_superseded(id, replica) => None,
            Confirmed::Record(record) => Some(record.version),
            Confirmed::Deleted => None,
        }
    }

    /// Forgets what the replica now knows as well.
    pub(super) fn prune(&mut self, partition: &PartitionId, replica: &PartitionReplica) {
        if let Some(records) = self.by_partition.get_mut(partition) {
            records.retain(|id, confirmed| !confirmed.is_superseded(id, Some(replica)));
            if records.is_empty() {
                self.by_partition.remove(partition);
            }
        }
    }

    /// Lays what is not superseded over `records` (the replica's).
    fn apply(
        &self,
        partition: &PartitionId,
        replica: Option<&PartitionReplica>,
        records: &mut BTreeMap<String, Record>,
    ) {
        let Some(confirmed) = self.by_partition.get(partition) else { return };
        for (id, confirmed) in confirmed {
            if confirmed.is_superseded(id, replica) {
                continue;
            }
            match confirmed {
                Confirmed::Record(record) => {
                    records.insert(id.clone(), record.clone());
                }
                Confirmed::Deleted => {
                    records.remove(id);
                }
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_partition.clear();
    }
}

impl SyncEngine {
    /// Queues a create of a record with `fields` in partition `key` of `source` (`None`: the
    /// natural key) under a new temporary id, which it returns; the record shows in
    /// [`SyncEngine::view`] at once (with the natural key, once a `Welcome` named it).
    pub(crate) fn create(
        &mut self,
        source: &str,
        key: Option<&str>,
        fields: BTreeMap<String, Value>,
    ) -> outbox::Result<String> {
        let id = temp_id();
        self.queue_mutation(source, key, MutationOp::Create, id.clone(), fields, Some(0))?;
        Ok(id)
    }

    /// Queues an update of record `id` setting `fields`; returns the mutation id. Without a
    /// `base_version`, the change is based on the version of the record the device last got
    /// from the server (0 if it has none).
    pub(crate) fn update(
        &mut self,
        source: &str,
        key: Option<&str>,
        id: &str,
        fields: BTreeMap<String, Value>,
        base_version: Option<u64>,
    ) -> outbox::Result<String> {
        self.queue_mutation(source, key, MutationOp::Update, id.to_owned(), fields, base_version)
    }

    /// Queues a delete of record `id`; returns the mutation id.
    pub(crate) fn delete(&mut self, source: &str, key: Option<&str>, id: &str) -> outbox::Result<String> {
        self.queue_mutation(source, key, MutationOp::Delete, id.to_owned(), BTreeMap::new(), None)
    }

    /// Applies the app's decision about a failed mutation (see [`crate::outbox`]).
    pub(crate) fn resolve(&mut self, mutation_id: &str, resolution: Resolution) -> outbox::Result<Resolved> {
        match resolution {
            Resolution::Retry => {
                let new_id = random_id();
                self.mutations.retry(mutation_id, new_id.clone())?;
                debug!(mutation_id, new_mutation_id = %new_id, "failed mutation retried");
                Ok(Resolved::Retried { mutation_id: new_id })
            }
            Resolution::Discard => {
                let dropped = self.mutations.discard(mutation_id)?;
                debug!(mutation_id, dropped = dropped.len(), "failed mutation discarded");
                Ok(Resolved::Discarded { mutation_ids: dropped.into_iter().map(|row| row.mutation_id).collect() })
            }
        }
    }

    /// Returns the queued mutations in order.
    pub(crate) fn queued_mutations(&self) -> Vec<QueuedMutation> {
        self.mutations.mutations().to_vec()
    }

    /// Returns the `Mutate` frames to send now (none before `Welcome`) and counts them as
    /// sent on this connection.
    pub(crate) fn mutation_frames(&mut self) -> Vec<ClientFrame> {
        if !self.welcomed {
            return Vec::new();
        }
        let (in_flight, uploaded) = (&self.mutations_in_flight, &self.uploaded_blobs);
        let next: Vec<ClientFrame> = self
            .mutations
            .next_to_send_with(|id| in_flight.contains(id), |hash| uploaded.contains(hash))
            .into_iter()
            .map(mutate)
            .collect();
        for frame in &next {
            let Some(client_frame::Msg::Mutate(mutate)) = &frame.msg else { continue };
            let resent = match self.mutations.mark_sent(&mutate.mutation_id) {
                Ok(resent) => resent,
                Err(error) => {
                    // Sent anyway: the flag only keeps the mutation's place behind a failure
                    // after a restart.
                    warn!(%error, mutation_id = %mutate.mutation_id, "recording a sent mutation failed");
                    false
                }
            };
            self.stats.mutations_sent += 1;
            if resent {
                self.stats.mutations_resent += 1;
            }
            self.mutations_in_flight.insert(mutate.mutation_id.clone());
        }
        next
    }

    /// Returns a partition's records as the app sees them: the replica, records merged from
    /// searches, the records learned from mutation results, and the queued mutations in
    /// order.
    pub(crate) fn view(&self, id: &PartitionId) -> Option<PartitionView> {
        let replica = self.partitions.get(id).map(|partition| &partition.replica);
        let mutations: Vec<&QueuedMutation> = self
            .mutations
            .mutations()
            .iter()
            .filter(|mutation| self.partition_of(mutation).as_ref() == Some(id))
            .collect();
        if mutations.is_empty() && self.confirmed.is_empty_for(id) && self.searches.is_empty_for(id) {
            return replica.map(PartitionReplica::view);
        }
        let mut records = replica.map(|replica| replica.records().clone()).unwrap_or_default();
        self.searches.apply(id, replica, &mut records);
        self.confirmed.apply(id, replica, &mut records);
        for mutation in mutations {
            apply_optimistically(&mut records, mutation);
        }
        let mut checksum = Checksum::default();
        for record in records.values() {
            checksum.add(&record.id, record.version);
        }
        Some(PartitionView {
            cursor: replica.map_or(0, PartitionReplica::cursor),
            total: records.len() as u64,
            checksum: checksum.0,
            records,
        })
    }

    pub(super) fn on_mutation_ack(&mut self, ack: &MutationAck, reaction: &mut Reaction) {
        match self.mutations.mark_acked(&ack.mutation_id) {
            Ok(true) => {
                self.stats.mutations_acked += 1;
                debug!(mutation_id = %ack.mutation_id, queued = ack.queued, "mutation queued by the server");
                if let Some(mutation) = self.mutations.get(&ack.mutation_id) {
                    self.notify_mutation(mutation, MutationOutcome::Queued, reaction);
                }
            }
            // The ack of a resend, or of a mutation that failed meanwhile.
            Ok(false) => {}
            Err(OutboxError::UnknownMutation(_)) => {
                debug!(mutation_id = %ack.mutation_id, "ack for a mutation not queued");
                self.stats.unexpected_frames += 1;
            }
            Err(error) => warn!(%error, mutation_id = %ack.mutation_id, "recording a mutation ack failed"),
        }
    }

    pub(super) fn on_mutation_result(&mut self, result: MutationResult, reaction: &mut Reaction) {
        let Some(mutation) = self.mutations.get(&result.mutation_id).cloned() else {
            debug!(mutation_id = %result.mutation_id, "result for a mutation not queued");
            self.stats.unexpected_frames += 1;
            return;
        };
        if mutation.state == MutationState::Failed && !result.ok {
            // A second refusal of a mutation already failed (its resend): nothing new.
            self.mutations_in_flight.remove(&mutation.mutation_id);
            return;
        }
        // A success for a failed mutation: an operator retried it on the server and it went
        // through; it completes like any success (and releases what waited behind it).
        if result.ok {
            self.on_mutation_succeeded(mutation, result, reaction);
        } else {
            self.on_mutation_failed(mutation, result, reaction);
        }
    }

    fn on_mutation_succeeded(&mut self, mutation: QueuedMutation, result: MutationResult, reaction: &mut Reaction) {
        let link = match mutation.op {
            MutationOp::Create => result
                .link
                .as_ref()
                .map(|link| link.id.clone())
                .filter(|id| !id.is_empty())
                .or_else(|| result.record.as_ref().map(|record| record.id.clone()))
                .filter(|id| *id != mutation.id)
                .map(|id| Link { temp_id: mutation.id.clone(), id }),
            MutationOp::Update | MutationOp::Delete | MutationOp::Unspecified => None,
        };
        if let Some(link) = &link {
            let version = result.record.as_ref().map(|record| record.version);
            if let Err(error) = self.mutations.apply_link(link, version) {
                // The mutation stays queued; its resend after the next reconnect is answered
                // with this result again.
                warn!(%error, mutation_id = %mutation.mutation_id, "recording a link failed");
                return;
            }
        }
        let completed = match self.mutations.complete(&mutation.mutation_id) {
            Ok(completed) => completed,
            Err(error) => {
                warn!(%error, mutation_id = %mutation.mutation_id, "removing a succeeded mutation failed");
                return;
            }
        };
        self.mutations_in_flight.remove(&completed.mutation_id);
        self.stats.mutations_succeeded += 1;
        debug!(mutation_id = %completed.mutation_id, ?link, "mutation succeeded");
        if let Some(partition) = self.partition_of(&completed) {
            match (completed.op, &result.record) {
                (MutationOp::Create | MutationOp::Update, Some(record)) => {
                    self.confirmed.insert(&partition, &record.id, Confirmed::Record(record.clone()));
                }
                (MutationOp::Create, None) => {
                    // No record in the result: show the created fields under the real id
                    // until the log brings the record (version 0: any copy supersedes it).
                    let id = completed.local_id().to_owned();
                    let record = Record { id: id.clone(), fields: completed.fields.clone(), version: 0 };
                    self.confirmed.insert(&partition, &id, Confirmed::Record(record));
                }
                (MutationOp::Delete, _) => {
                    self.confirmed.insert(&partition, completed.local_id(), Confirmed::Deleted);
                }
                (MutationOp::Update | MutationOp::Unspecified, None) | (MutationOp::Unspecified, Some(_)) => {}
            }
            self.prune_confirmed(&partition);
        }
        self.notify_mutation(&completed, MutationOutcome::Ok { record: result.record, link }, reaction);
        // A link may let mutations that waited for it go.
        reaction.frames.extend(self.mutation_frames());
    }

    fn on_mutation_failed(&mut self, mutation: QueuedMutation, result: MutationResult, reaction: &mut Reaction) {
        let error = result.error.unwrap_or_default();
        if self.blob_missing_on_server(&mutation, &error) {
            return;
        }
        let failure = MutationFailure {
            op: MutationOp::try_from(error.op).ok().filter(|op| *op != MutationOp::Unspecified).unwrap_or(mutation.op),
            code: error_code(error.code),
            message: error.message,
            current: error.current,
        };
        if let Err(error) = self.mutations.mark_failed(&mutation.mutation_id, failure.clone()) {
            warn!(%error, mutation_id = %mutation.mutation_id, "recording a failed mutation failed");
            return;
        }
        self.mutations_in_flight.remove(&mutation.mutation_id);
        self.stats.mutations_failed += 1;
        warn!(
            mutation_id = %mutation.mutation_id,
            source = %mutation.source,
            id = %mutation.id,
            code = ?failure.code,
            message = %failure.message,
            "mutation failed; later mutations of its source wait for the app"
        );
        if let (Some(partition), Some(current)) = (self.partition_of(&mutation), &failure.current)
            && failure.code == ErrorCode::Conflict
        {
            self.confirmed.insert(&partition, &current.id, Confirmed::Record(current.clone()));
            self.prune_confirmed(&partition);
        }
        let outcome = MutationOutcome::Error { code: failure.code, message: failure.message, current: failure.current };
        self.notify_mutation(&mutation, outcome, reaction);
    }

    /// Applies the links a `Changes` frame carries for the device's own creates (they may
    /// come before the creates' results); returns true when one linked a queued create.
    pub(super) fn apply_change_links(&mut self, changes: &Changes) -> bool {
        let mut linked = false;
        for link in &changes.links {
            let version = changes.upserts.iter().find(|record| record.id == link.id).map(|record| record.version);
            match self.mutations.apply_link(link, version) {
                Ok(true) => {
                    debug!(temp_id = %link.temp_id, id = %link.id, "create linked by a page");
                    linked = true;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, temp_id = %link.temp_id, "recording a link failed"),
            }
        }
        linked
    }

    fn queue_mutation(
        &mut self,
        source: &str,
        key: Option<&str>,
        op: MutationOp,
        id: String,
        mut fields: BTreeMap<String, Value>,
        base_version: Option<u64>,
    ) -> outbox::Result<String> {
        if source.is_empty() {
            return Err(OutboxError::Invalid("the source is empty"));
        }
        if id.is_empty() {
            return Err(OutboxError::Invalid("the record id is empty"));
        }
        // The app may still name a record by the temporary id of a create that was linked
        // already.
        let id = self.linked_id(source, &id).unwrap_or(id);
        for value in fields.values_mut() {
            let linked = match &value.kind {
                Some(value::Kind::StringValue(text)) => self.linked_id_any_source(text),
                _ => None,
            };
            if let Some(linked) = linked {
                *value = Value::string(linked);
            }
        }
        let key = key.unwrap_or_default().to_owned();
        let base_version = match base_version {
            Some(version) => version,
            None => self.server_version(source, &key, &id).unwrap_or(0),
        };
        let mutation_id = random_id();
        let queued = self.mutations.push(NewMutation {
            mutation_id: mutation_id.clone(),
            source: source.to_owned(),
            key,
            op,
            id,
            fields,
            base_version,
        })?;
        debug!(mutation_id, source, id = %queued.id, ?op, "mutation queued");
        Ok(mutation_id)
    }

    /// Returns the backend id of a queued, linked create of `source` whose temporary id is
    /// `id`.
    fn linked_id(&self, source: &str, id: &str) -> Option<String> {
        self.mutations
            .mutations()
            .iter()
            .find(|row| row.source == source && row.op == MutationOp::Create && row.id == id)
            .and_then(|row| row.linked_id.clone())
    }

    fn linked_id_any_source(&self, id: &str) -> Option<String> {
        self.mutations
            .mutations()
            .iter()
            .find(|row| row.op == MutationOp::Create && row.id == id)
            .and_then(|row| row.linked_id.clone())
    }

    /// Returns the version of record `id` as the device last got it from the server.
    fn server_version(&self, source: &str, key: &str, id: &str) -> Option<u64> {
        let partition = self.resolve_partition(source, key)?;
        let replica = self.partitions.get(&partition).map(|partition| &partition.replica);
        self.confirmed
            .version(&partition, id, replica)
            .or_else(|| replica.and_then(|replica| replica.records().get(id)).map(|record| record.version))
    }

    /// Returns the partition a mutation applies to, once the natural key is known.
    fn partition_of(&self, mutation: &QueuedMutation) -> Option<PartitionId> {
        self.resolve_partition(&mutation.source, &mutation.key)
    }

    fn resolve_partition(&self, source: &str, key: &str) -> Option<PartitionId> {
        if !key.is_empty() {
            return Some(PartitionId::new(source, key));
        }
        self.natural_keys.get(source).map(|natural| PartitionId::new(source, natural))
    }

    fn prune_confirmed(&mut self, partition: &PartitionId) {
        if let Some(synced) = self.partitions.get(partition) {
            self.confirmed.prune(partition, &synced.replica);
        }
    }

    pub(super) fn notify_mutation(&self, mutation: &QueuedMutation, outcome: MutationOutcome, reaction: &mut Reaction) {
        if self.notifications_enabled {
            reaction.notifications.push(Notification::Mutation(MutationNotification {
                mutation_id: mutation.mutation_id.clone(),
                source: mutation.source.clone(),
                key: mutation.key.clone(),
                op: mutation.op,
                outcome,
            }));
        }
    }
}

fn mutate(mutation: &QueuedMutation) -> ClientFrame {
    frame(client_frame::Msg::Mutate(Mutate {
        mutation_id: mutation.mutation_id.clone(),
        source: mutation.source.clone(),
        key: mutation.key.clone(),
        op: mutation.op as i32,
        id: mutation.id.clone(),
        fields: mutation.fields.clone(),
        base_version: mutation.base_version,
    }))
}

#[cfg(test)]
mod tests;
