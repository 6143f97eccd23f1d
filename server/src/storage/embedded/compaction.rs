//! Compaction of a partition's log, in bounded steps so that the writer thread's batches
//! interleave with a long compaction.

use std::ops::Bound;

use redb::{Durability, ReadableTable, WriteTransaction};

use super::EmbeddedStore;
use super::tables::*;
use crate::storage::{CompactionReport, PartitionName, StoreResult};

/// Log entries examined per compaction transaction: compaction holds the write lock only
/// this long at a time, so batches from the writer thread interleave with a long compaction.
pub(super) const COMPACTION_STEP_ENTRIES: usize = 10_000;

impl EmbeddedStore {
    /// Compacts one partition (see [`PartitionStore::compact`](crate::storage::PartitionStore::compact)).
    pub(super) fn compact_partition(
        &self,
        partition: &PartitionName,
        keep_recent: u64,
    ) -> StoreResult<CompactionReport> {
        let mut txn = self.begin_write()?;
        let Some((id, mut state)) = read_partition(&txn, partition)? else {
            return Ok(CompactionReport::default());
        };
        if state.head <= keep_recent {
            return Ok(CompactionReport { removed: 0, horizon: state.horizon });
        }
        let point = state.head - keep_recent;
        if point > state.horizon {
            // The horizon rises in the same transaction as (and so no later than) the first
            // purged tombstone: a device below it is sent a snapshot instead of a log that
            // misses that delete.
            state.horizon = point;
            let mut meta = txn.open_table(PARTITION_META).map_err(store_error)?;
            meta.insert(id, state_value(&state)).map_err(store_error)?;
        }
        let mut removed = 0;
        let mut scanned_to = 0;
        loop {
            let step = compact_step(&txn, id, scanned_to, point)?;
            removed += step.removed;
            if step.finished {
                // The last step is durable, so `compact` returns with its work persisted;
                // the earlier steps ride on it (or on any later durable commit).
                txn.commit().map_err(store_error)?;
                break;
            }
            txn.set_durability(Durability::None).map_err(store_error)?;
            txn.commit().map_err(store_error)?;
            scanned_to = step.scanned_to;
            txn = self.begin_write()?;
        }
        Ok(CompactionReport { removed, horizon: state.horizon })
    }
}

/// What one compaction step did.
struct CompactionStep {
    removed: u64,
    /// Sequence of the last log entry examined.
    scanned_to: u64,
    /// True when every entry up to the compaction point has been examined.
    finished: bool,
}

/// Examines up to [`COMPACTION_STEP_ENTRIES`] log entries in `(scanned_to, point]` and
/// removes tombstones and upserts that a later change of the same id supersedes.
fn compact_step(txn: &WriteTransaction, id: u64, scanned_to: u64, point: u64) -> StoreResult<CompactionStep> {
    let mut log = txn.open_table(LOG).map_err(store_error)?;
    let records = txn.open_table(RECORDS).map_err(store_error)?;
    let mut doomed = Vec::new();
    let mut last = scanned_to;
    let mut finished = true;
    let range = log
        .range::<(u64, u64)>((Bound::Excluded((id, scanned_to)), Bound::Included((id, point))))
        .map_err(store_error)?;
    for (examined, entry) in range.enumerate() {
        let (key, value) = entry.map_err(store_error)?;
        if examined == COMPACTION_STEP_ENTRIES {
            finished = false;
            break;
        }
        let seq = key.value().1;
        last = seq;
        let superseded = match split_log_value(value.value())? {
            LogValue::Delete { .. } => true,
            // The latest change of a live id is the upsert at its version; an absent id's
            // latest change is a later delete.
            LogValue::Upsert { id: record_id, .. } => match records.get((id, record_id)).map_err(store_error)? {
                Some(record) => split_record_value(record.value())?.0 != seq,
                None => true,
            },
        };
        if superseded {
            doomed.push(seq);
        }
    }
    for seq in &doomed {
        log.remove((id, *seq)).map_err(store_error)?;
    }
    Ok(CompactionStep { removed: doomed.len() as u64, scanned_to: last, finished })
}
