//! Devices' last-seen times (and what they report about themselves at Hello), batched into
//! the store: a frame only updates a map in memory, and a periodic flush (with the cursors')
//! writes everything noted in one transaction, so that seeing a device never costs a store
//! write per frame.

use dashmap::DashMap;

use crate::storage::{DeviceStore, ReportedDevice, SeenDevice, StoreResult};

/// Collects last-seen times until the next flush.
#[derive(Default)]
pub struct LastSeenRecorder {
    dirty: DashMap<String, (i64, Option<ReportedDevice>)>,
}

impl LastSeenRecorder {
    /// Notes that `client_id` was seen at `at_ms` (Unix ms); an earlier time is ignored.
    pub fn record(&self, client_id: &str, at_ms: i64) {
        // The common case (a device already noted since the last flush) allocates nothing.
        if let Some(mut known) = self.dirty.get_mut(client_id) {
            known.0 = known.0.max(at_ms);
            return;
        }
        self.dirty
            .entry(client_id.to_owned())
            .and_modify(|known| known.0 = known.0.max(at_ms))
            .or_insert((at_ms, None));
    }

    /// Notes that `client_id` was seen at `at_ms` and reported `reported` about itself.
    pub fn report(&self, client_id: &str, at_ms: i64, reported: ReportedDevice) {
        let mut entry = self.dirty.entry(client_id.to_owned()).or_insert((at_ms, None));
        entry.0 = entry.0.max(at_ms);
        entry.1 = Some(reported);
    }

    /// Returns the time noted for `client_id` and not flushed yet.
    pub fn unflushed(&self, client_id: &str) -> Option<i64> {
        self.dirty.get(client_id).map(|known| known.0)
    }

    /// Writes everything noted to the store; returns for how many devices. On failure it is
    /// kept for the next flush (newer notes win).
    pub fn flush(&self, store: &dyn DeviceStore) -> StoreResult<usize> {
        let keys: Vec<String> = self.dirty.iter().map(|entry| entry.key().clone()).collect();
        let batch: Vec<SeenDevice> = keys
            .into_iter()
            .filter_map(|key| self.dirty.remove(&key))
            .map(|(client_id, (at_ms, reported))| SeenDevice { client_id, at_ms, reported })
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(error) = store.record_last_seen(&batch) {
            for seen in batch {
                let mut entry = self.dirty.entry(seen.client_id).or_insert((seen.at_ms, None));
                entry.0 = entry.0.max(seen.at_ms);
                if entry.1.is_none() {
                    entry.1 = seen.reported;
                }
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
