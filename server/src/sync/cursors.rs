//! Device cursors reported by acks, batched into the store.
//!
//! A device's own cursor is the truth (it resubscribes with it); the server records the last
//! acked cursor per device and partition for operators and for the device registry. Acks
//! only update a map in memory; a flush writes everything dirty in one transaction.

use std::sync::Arc;

use dashmap::DashMap;

use crate::storage::{PartitionName, Store, StoreResult};

/// Collects acked cursors until the next flush.
#[derive(Default)]
pub struct CursorRecorder {
    dirty: DashMap<(String, PartitionName), u64>,
}

impl CursorRecorder {
    /// Records that `client_id` holds `partition` at `cursor`.
    pub fn record(&self, client_id: &str, partition: &PartitionName, cursor: u64) {
        self.dirty
            .entry((client_id.to_owned(), partition.clone()))
            .and_modify(|known| *known = (*known).max(cursor))
            .or_insert(cursor);
    }

    /// Writes every recorded cursor to the store; returns how many.
    pub fn flush(&self, store: &Arc<dyn Store>) -> StoreResult<usize> {
        let keys: Vec<(String, PartitionName)> = self.dirty.iter().map(|entry| entry.key().clone()).collect();
        let mut batch = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(((client_id, partition), cursor)) = self.dirty.remove(&key) {
                batch.push((client_id, partition, cursor));
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(error) = store.save_cursors(&batch) {
            // Put them back for the next flush, keeping any newer value.
            for (client_id, partition, cursor) in batch {
                self.record(&client_id, &partition, cursor);
            }
            return Err(error);
        }
        Ok(batch.len())
    }

    /// Returns the cursors of `client_id` recorded and not flushed yet.
    pub fn unflushed_of(&self, client_id: &str) -> Vec<(PartitionName, u64)> {
        self.dirty
            .iter()
            .filter(|entry| entry.key().0 == client_id)
            .map(|entry| (entry.key().1.clone(), *entry.value()))
            .collect()
    }

    /// Returns the number of cursors waiting for a flush.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }
}
