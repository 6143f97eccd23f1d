//! Builds `Changes` frames from store pages. Pure functions.

use std::collections::BTreeMap;

use syncline_proto::v1::{Changes, Record};

use crate::storage::{Change, CommittedBatch, LogPage, PartitionName, SnapshotPage};

/// Collapses a run of log changes to its net effect: the last change of each id wins, so a
/// device can apply all deletes and then all upserts of the page in any order.
pub fn net_effect<'a>(changes: impl IntoIterator<Item = &'a Change>) -> (Vec<Record>, Vec<String>) {
    let mut last: BTreeMap<&str, &Change> = BTreeMap::new();
    for change in changes {
        last.insert(change.id(), change);
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for change in last.into_values() {
        match change {
            Change::Upsert(record) => upserts.push(record.clone()),
            Change::Delete { id, .. } => deletes.push(id.clone()),
        }
    }
    (upserts, deletes)
}

/// Returns the live push of consecutive committed batches of one partition (`batches` is
/// not empty, each starts where the one before ended): one frame for the whole run, with
/// the partition's state after the last.
pub fn live_changes(batches: &[&CommittedBatch]) -> Changes {
    let (first, last) = match batches {
        [first, .., last] => (first, last),
        [only] => (only, only),
        [] => return Changes::default(),
    };
    debug_assert!(batches.windows(2).all(|pair| pair[1].first_seq == pair[0].last_seq + 1));
    let (upserts, deletes) = net_effect(batches.iter().flat_map(|batch| &batch.changes));
    Changes {
        source: first.partition.source.clone(),
        key: first.partition.key.clone(),
        from: first.first_seq,
        to: last.last_seq,
        upserts,
        deletes,
        total: last.state.total,
        checksum: last.state.checksum,
        ..Changes::default()
    }
}

/// Returns a catch-up page of log changes after `after`, numbered `page`.
pub fn log_changes(partition: &PartitionName, after: u64, log: &LogPage, page: u64, remaining: u64) -> Changes {
    let (upserts, deletes) = net_effect(&log.changes);
    let at_head = log.covered_to == log.state.head;
    Changes {
        source: partition.source.clone(),
        key: partition.key.clone(),
        from: after + 1,
        to: log.covered_to,
        upserts,
        deletes,
        total: log.state.total,
        remaining,
        page,
        // The checksum is known only for the state at the head.
        checksum: if at_head { log.state.checksum } else { 0 },
        ..Changes::default()
    }
}

/// Returns a snapshot page at sequence `at`, numbered `page`.
pub fn snapshot_changes(
    partition: &PartitionName,
    at: u64,
    snapshot: SnapshotPage,
    page: u64,
    first: bool,
    remaining: u64,
) -> Changes {
    Changes {
        source: partition.source.clone(),
        key: partition.key.clone(),
        from: 0,
        to: at,
        total: snapshot.state.total,
        remaining,
        page,
        snapshot: true,
        reset: first,
        snapshot_done: snapshot.done,
        upserts: snapshot.records,
        ..Changes::default()
    }
}

/// Estimates the pages still to come after one of `page_size` items, given the items left.
pub fn pages_remaining(items_left: u64, page_size: usize) -> u64 {
    items_left.div_ceil(page_size.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(id: &str, version: u64) -> Change {
        Change::Upsert(Record { id: id.into(), version, ..Record::default() })
    }

    #[test]
    fn the_last_change_of_an_id_wins() {
        let changes = vec![
            upsert("a", 1),
            Change::Delete { id: "a".into(), seq: 2 },
            upsert("b", 3),
            upsert("b", 4),
            Change::Delete { id: "c".into(), seq: 5 },
            upsert("c", 6),
        ];
        let (upserts, deletes) = net_effect(&changes);
        assert_eq!(deletes, vec!["a".to_owned()]);
        let versions: Vec<(String, u64)> = upserts.into_iter().map(|r| (r.id, r.version)).collect();
        assert_eq!(versions, vec![("b".into(), 4), ("c".into(), 6)]);
    }

    proptest::proptest! {
        /// Applying a page's net effect (deletes, then upserts) gives the same state as
        /// applying its changes one by one.
        #[test]
        fn net_effect_equals_sequential_application(
            ops in proptest::collection::vec((0u8..6, proptest::bool::ANY), 0..40),
        ) {
            let mut sequential = BTreeMap::new();
            let mut changes = Vec::new();
            for (seq, (id, is_delete)) in ops.into_iter().enumerate() {
                let id = format!("r{id}");
                let seq = seq as u64 + 1;
                if is_delete {
                    sequential.remove(&id);
                    changes.push(Change::Delete { id, seq });
                } else {
                    sequential.insert(id.clone(), seq);
                    changes.push(upsert(&id, seq));
                }
            }
            let (upserts, deletes) = net_effect(&changes);
            let mut netted: BTreeMap<String, u64> = BTreeMap::new();
            for id in deletes {
                netted.remove(&id);
            }
            for record in upserts {
                netted.insert(record.id, record.version);
            }
            proptest::prop_assert_eq!(netted, sequential);
        }
    }
}
