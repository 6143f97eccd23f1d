//! Devices' last-seen times, batched into the store: a frame only updates a map in memory,
//! and a periodic flush (with the cursors') writes everything noted in one transaction, so
//! that seeing a device never costs a store write per frame.

use dashmap::DashMap;

use crate::storage::{DeviceStore, StoreResult};

/// Collects last-seen times until the next flush.
#[derive(Default)]
pub struct LastSeenRecorder {
    dirty: DashMap<String, i64>,
}

impl LastSeenRecorder {
    /// Notes that `client_id` was seen at `at_ms` (Unix ms); an earlier time is ignored.
    pub fn record(&self, client_id: &str, at_ms: i64) {
        // The common case (a device already noted since the last flush) allocates nothing.
        if let Some(mut known) = self.dirty.get_mut(client_id) {
            *known = (*known).max(at_ms);
            return;
        }
        self.dirty.entry(client_id.to_owned()).and_modify(|known| *known = (*known).max(at_ms)).or_insert(at_ms);
    }

    /// Returns the time noted for `client_id` and not flushed yet.
    pub fn unflushed(&self, client_id: &str) -> Option<i64> {
        self.dirty.get(client_id).map(|at| *at)
    }

    /// Writes every noted time to the store; returns how many. On failure they are kept for
    /// the next flush.
    pub fn flush(&self, store: &dyn DeviceStore) -> StoreResult<usize> {
        let keys: Vec<String> = self.dirty.iter().map(|entry| entry.key().clone()).collect();
        let batch: Vec<(String, i64)> = keys.into_iter().filter_map(|key| self.dirty.remove(&key)).collect();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(error) = store.record_last_seen(&batch) {
            for (client_id, at_ms) in batch {
                self.record(&client_id, at_ms);
            }
            return Err(error);
        }
        Ok(batch.len())
    }

    /// Returns the number of devices waiting for a flush.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }
}
