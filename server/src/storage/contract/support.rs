//! What the contract tests share: records, batches, page readers and a listener recorder.

use std::collections::BTreeMap;
use std::sync::Mutex;

use syncline_proto::checksum::Checksum;
use syncline_proto::v1::{Record, Value};

use crate::storage::{Change, CommitListener, CommittedBatch, PageLimit, PartitionName, Store};

pub(crate) fn partition(key: &str) -> PartitionName {
    PartitionName::new("Account", key)
}

pub(crate) fn record(id: &str, value: i64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(value))]), version: 0 }
}

pub(crate) fn upsert(store: &dyn Store, name: &PartitionName, records: Vec<Record>) -> CommittedBatch {
    store.apply_batch(name, records, Vec::new()).expect("apply upserts")
}

pub(crate) fn delete(store: &dyn Store, name: &PartitionName, ids: &[&str]) -> CommittedBatch {
    let ids = ids.iter().map(|id| (*id).to_owned()).collect();
    store.apply_batch(name, Vec::new(), ids).expect("apply deletes")
}

pub(crate) fn seqs(batch: &CommittedBatch) -> Vec<u64> {
    batch.changes.iter().map(Change::seq).collect()
}

/// Reads every live record through snapshot pages of `page` records.
pub(crate) fn snapshot(store: &dyn Store, name: &PartitionName, page: usize) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    loop {
        let after = records.last().map(|r| r.id.clone());
        let page = store.read_snapshot(name, after.as_deref(), PageLimit::items(page)).expect("snapshot page");
        records.extend(page.records);
        if page.done {
            return records;
        }
    }
}

/// Recomputes total and checksum from the live records.
pub(crate) fn recomputed(records: &[Record]) -> (u64, u64) {
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record.id, record.version);
    }
    (records.len() as u64, checksum.0)
}

/// Applies log pages of `page` changes from `cursor` onto `device` until the head; returns
/// the final cursor.
pub(crate) fn replay(
    store: &dyn Store,
    name: &PartitionName,
    device: &mut BTreeMap<String, Record>,
    mut cursor: u64,
    page: usize,
) -> u64 {
    loop {
        let log = store.read_log(name, cursor, PageLimit::items(page)).expect("log page");
        assert!(log.changes.len() <= page);
        for change in log.changes {
            assert!(cursor < change.seq() && change.seq() <= log.covered_to, "{change:?} outside the page");
            match change {
                Change::Upsert(record) => {
                    device.insert(record.id.clone(), record);
                }
                Change::Delete { id, .. } => {
                    device.remove(&id);
                }
            }
        }
        if log.covered_to == log.state.head {
            return log.covered_to;
        }
        assert!(log.covered_to > cursor, "a page must make progress");
        cursor = log.covered_to;
    }
}

/// Records what a commit listener saw: (partition, first, last, changes) per batch.
#[derive(Default)]
pub(crate) struct RecordingListener {
    pub(crate) batches: Mutex<Vec<(PartitionName, u64, u64, usize)>>,
}

impl CommitListener for RecordingListener {
    fn committed(&self, batches: &[&CommittedBatch]) {
        let mut seen = self.batches.lock().expect("listener lock");
        for batch in batches {
            seen.push((batch.partition.clone(), batch.first_seq, batch.last_seq, batch.changes.len()));
        }
    }
}
