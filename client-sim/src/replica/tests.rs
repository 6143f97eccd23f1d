use std::collections::BTreeMap;

use proptest::prelude::*;
use syncline_proto::v1::Value;

use super::*;

fn record(id: &str, version: u64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(version as i64))]), version }
}

fn checksum_of<'a>(records: impl IntoIterator<Item = &'a Record>) -> u64 {
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record.id, record.version);
    }
    checksum.0
}

fn snapshot_page(to: u64, records: &[Record], reset: bool, done: bool, page: u64) -> Changes {
    Changes {
        source: "Account".into(),
        key: "u1".into(),
        from: 0,
        to,
        upserts: records.to_vec(),
        snapshot: true,
        reset,
        snapshot_done: done,
        page,
        ..Changes::default()
    }
}

fn log_page(from: u64, to: u64, upserts: &[Record], deletes: &[&str]) -> Changes {
    Changes {
        source: "Account".into(),
        key: "u1".into(),
        from,
        to,
        upserts: upserts.to_vec(),
        deletes: deletes.iter().map(|id| (*id).to_owned()).collect(),
        ..Changes::default()
    }
}

/// Returns a replica at cursor `to` holding `records`, built from a one-page snapshot.
fn replica_with(to: u64, records: &[Record]) -> PartitionReplica {
    let mut replica = PartitionReplica::new();
    let outcome = replica.apply(&snapshot_page(to, records, true, true, 1));
    assert!(matches!(outcome, ApplyOutcome::Applied { .. }));
    replica
}

#[test]
fn snapshot_pages_reset_first_and_move_the_cursor_only_when_done() {
    let mut replica = replica_with(3, &[record("stale", 2)]);
    let first = [record("a", 5), record("b", 7)];
    let second = [record("c", 9)];

    let outcome = replica.apply(&snapshot_page(10, &first, true, false, 1));
    assert_eq!(outcome, ApplyOutcome::Applied { changes: 2, verified: false });
    assert_eq!(replica.cursor(), 0, "the cursor stays at 0 until snapshot_done");
    assert!(replica.is_receiving_snapshot());
    assert_eq!(replica.records().keys().collect::<Vec<_>>(), ["a", "b"], "reset dropped the stale record");

    let outcome = replica.apply(&snapshot_page(10, &second, false, true, 2));
    assert_eq!(outcome, ApplyOutcome::Applied { changes: 1, verified: false });
    assert_eq!(replica.cursor(), 10);
    assert!(!replica.is_receiving_snapshot());
    assert_eq!(replica.total(), 3);
    assert_eq!(replica.checksum(), checksum_of(first.iter().chain(&second)));
}

#[test]
fn an_empty_snapshot_leaves_an_empty_replica_at_its_sequence() {
    let mut replica = replica_with(3, &[record("stale", 2)]);
    let outcome = replica.apply(&snapshot_page(4, &[], true, true, 1));
    assert_eq!(outcome, ApplyOutcome::Applied { changes: 0, verified: false });
    assert_eq!((replica.cursor(), replica.total(), replica.checksum()), (4, 0, 0));
}

#[test]
fn snapshot_pages_out_of_order_are_refused_without_changes() {
    let mut replica = PartitionReplica::new();
    assert_eq!(
        replica.apply(&snapshot_page(10, &[record("a", 1)], false, false, 2)),
        ApplyOutcome::Unexpected(UnexpectedPage::SnapshotWithoutReset)
    );
    replica.apply(&snapshot_page(10, &[record("a", 1)], true, false, 1));
    assert_eq!(
        replica.apply(&snapshot_page(11, &[record("b", 1)], false, true, 2)),
        ApplyOutcome::Unexpected(UnexpectedPage::SnapshotSequenceChanged { expected: 10, got: 11 })
    );
    assert_eq!(
        replica.apply(&log_page(11, 11, &[record("c", 11)], &[])),
        ApplyOutcome::Unexpected(UnexpectedPage::LogDuringSnapshot)
    );
    assert_eq!(replica.records().keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(replica.cursor(), 0);
}

#[test]
fn duplicates_are_skipped_without_changes() {
    let mut replica = replica_with(5, &[record("a", 5)]);
    let before = replica.view();
    assert_eq!(replica.apply(&log_page(5, 5, &[record("a", 99)], &[])), ApplyOutcome::Duplicate);
    assert_eq!(replica.view(), before);
}

#[test]
fn pages_overlapping_the_cursor_bring_the_replica_to_their_end() {
    // The page covers 3..=6; the replica has 3..=5 already. Its net effect is the state at 6.
    let mut replica = replica_with(5, &[record("a", 5)]);
    assert!(matches!(replica.apply(&log_page(3, 6, &[record("b", 6)], &["a"])), ApplyOutcome::Applied { .. }));
    assert_eq!(replica.cursor(), 6);
    assert_eq!(replica.records().keys().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn gaps_are_reported_without_changes() {
    let mut replica = replica_with(5, &[record("a", 5)]);
    let before = replica.view();
    assert_eq!(replica.apply(&log_page(7, 8, &[record("b", 8)], &[])), ApplyOutcome::Gap { expected_from: 6, from: 7 });
    assert_eq!(replica.view(), before);
    assert_eq!(replica.apply(&log_page(6, 5, &[], &[])), ApplyOutcome::Unexpected(UnexpectedPage::EmptyRange));
}

#[test]
fn log_pages_apply_deletes_before_upserts() {
    let mut replica = replica_with(5, &[record("a", 4), record("b", 5)]);
    // "a" was deleted and created again within 6..=7; "b" was deleted.
    let mut page = log_page(6, 7, &[record("a", 7)], &["a", "b"]);
    page.total = 1;
    page.checksum = checksum_of([&record("a", 7)]);
    assert_eq!(replica.apply(&page), ApplyOutcome::Applied { changes: 3, verified: true });
    assert_eq!(replica.cursor(), 7);
    assert_eq!(replica.records().values().cloned().collect::<Vec<_>>(), [record("a", 7)]);
}

#[test]
fn checksum_and_total_mismatches_are_detected() {
    let mut replica = replica_with(5, &[record("a", 5)]);
    let mut page = log_page(6, 6, &[record("b", 6)], &[]);
    page.total = 2;
    page.checksum = checksum_of([&record("a", 5), &record("b", 999)]);
    let ApplyOutcome::ChecksumMismatch(mismatch) = replica.apply(&page) else {
        panic!("a wrong checksum must be reported");
    };
    assert_eq!(mismatch.cursor, 6);
    assert_eq!(mismatch.local_total, 2);
    assert_eq!(mismatch.local_checksum, checksum_of([&record("a", 5), &record("b", 6)]));

    let mut page = log_page(7, 7, &[record("c", 7)], &[]);
    page.total = 4;
    page.checksum = checksum_of([&record("a", 5), &record("b", 6), &record("c", 7)]);
    assert!(matches!(replica.apply(&page), ApplyOutcome::ChecksumMismatch(m) if m.expected_total == 4));
    assert!(replica.verify(3, page.checksum).is_ok());
}

#[test]
fn upserts_replace_records_and_keep_the_checksum_in_step() {
    let mut replica = replica_with(1, &[record("a", 1)]);
    replica.apply(&log_page(2, 2, &[record("a", 2)], &[]));
    replica.apply(&log_page(3, 3, &[], &["missing"]));
    assert_eq!(replica.total(), 1);
    assert_eq!(replica.checksum(), checksum_of([&record("a", 2)]));
    replica.clear();
    assert_eq!(replica.view(), PartitionView::default());
}

/// One change of a partition's log.
#[derive(Clone, Debug)]
enum Op {
    Upsert(u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => (0u8..8).prop_map(Op::Upsert), 1 => (0u8..8).prop_map(Op::Delete)]
}

/// The live set after each prefix of `ops` (index `s` = state at sequence `s`).
fn states(ops: &[Op]) -> Vec<BTreeMap<String, Record>> {
    let mut state = BTreeMap::new();
    let mut states = vec![state.clone()];
    for (index, op) in ops.iter().enumerate() {
        let seq = index as u64 + 1;
        match op {
            Op::Upsert(id) => {
                state.insert(format!("r{id}"), record(&format!("r{id}"), seq));
            }
            Op::Delete(id) => {
                state.remove(&format!("r{id}"));
            }
        }
        states.push(state.clone());
    }
    states
}

/// Builds the page for sequences `from..=to`. Compacted pages keep only each id's last change;
/// full pages also delete ids that were deleted and then created again, which is only right
/// because deletes are applied before upserts.
fn page_of(ops: &[Op], states: &[BTreeMap<String, Record>], from: u64, to: u64, compacted: bool) -> Changes {
    let mut last: BTreeMap<String, Option<Record>> = BTreeMap::new();
    let mut deleted = Vec::new();
    for seq in from..=to {
        match &ops[seq as usize - 1] {
            Op::Upsert(id) => {
                last.insert(format!("r{id}"), Some(record(&format!("r{id}"), seq)));
            }
            Op::Delete(id) => {
                last.insert(format!("r{id}"), None);
                deleted.push(format!("r{id}"));
            }
        }
    }
    let upserts: Vec<Record> = last.values().flatten().cloned().collect();
    let deletes: Vec<String> = if compacted {
        last.iter().filter(|(_, record)| record.is_none()).map(|(id, _)| id.clone()).collect()
    } else {
        deleted.sort();
        deleted.dedup();
        deleted
    };
    let state = &states[to as usize];
    Changes {
        from,
        to,
        upserts,
        deletes,
        total: state.len() as u64,
        checksum: checksum_of(state.values()),
        ..Changes::default()
    }
}

/// Splits `1..=last` into consecutive ranges of the given sizes (cycling).
fn ranges(first: u64, last: u64, sizes: &[u64]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut from = first;
    let mut index = 0;
    while from <= last {
        let size = sizes[index % sizes.len()];
        let to = (from + size - 1).min(last);
        ranges.push((from, to));
        from = to + 1;
        index += 1;
    }
    ranges
}

proptest! {
    #[test]
    fn any_split_of_the_log_into_pages_gives_the_same_replica(
        ops in prop::collection::vec(op(), 1..60),
        sizes in prop::collection::vec(1u64..8, 1..10),
        compacted in prop::collection::vec(any::<bool>(), 1..10),
    ) {
        let states = states(&ops);
        let last = ops.len() as u64;
        let mut replica = PartitionReplica::new();
        let mut pages = Vec::new();
        for (index, (from, to)) in ranges(1, last, &sizes).into_iter().enumerate() {
            let page = page_of(&ops, &states, from, to, compacted[index % compacted.len()]);
            let outcome = replica.apply(&page);
            prop_assert!(matches!(outcome, ApplyOutcome::Applied { .. }), "{:?}", outcome);
            prop_assert_eq!(replica.records(), &states[to as usize]);
            pages.push(page);
        }
        prop_assert_eq!(replica.cursor(), last);
        prop_assert_eq!(replica.checksum(), checksum_of(states[last as usize].values()));
        // Replaying any page is a duplicate and changes nothing.
        for page in &pages {
            prop_assert_eq!(replica.apply(page), ApplyOutcome::Duplicate);
        }
        prop_assert_eq!(replica.records(), &states[last as usize]);
    }

    #[test]
    fn a_snapshot_at_any_sequence_then_the_log_gives_the_same_replica(
        ops in prop::collection::vec(op(), 1..60),
        snapshot_at in any::<prop::sample::Index>(),
        snapshot_sizes in prop::collection::vec(1usize..5, 1..5),
        log_sizes in prop::collection::vec(1u64..8, 1..10),
    ) {
        let states = states(&ops);
        let last = ops.len() as u64;
        let snapshot_seq = snapshot_at.index(ops.len() + 1) as u64;
        // The device held something else before: the reset must drop it.
        let mut replica = replica_with(2, &[record("stale", 1), record("r1", 1)]);

        let snapshot: Vec<Record> = states[snapshot_seq as usize].values().cloned().collect();
        let mut chunks = Vec::new();
        let mut rest = snapshot.as_slice();
        let mut index = 0;
        loop {
            let size = snapshot_sizes[index % snapshot_sizes.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk.to_vec());
            rest = tail;
            index += 1;
            if rest.is_empty() {
                break;
            }
        }
        let pages = chunks.len();
        for (index, chunk) in chunks.iter().enumerate() {
            let page = snapshot_page(snapshot_seq, chunk, index == 0, index + 1 == pages, index as u64 + 1);
            let outcome = replica.apply(&page);
            prop_assert!(matches!(outcome, ApplyOutcome::Applied { .. }), "{:?}", outcome);
        }
        prop_assert_eq!(replica.cursor(), snapshot_seq);
        prop_assert_eq!(replica.records(), &states[snapshot_seq as usize]);

        for (from, to) in ranges(snapshot_seq + 1, last, &log_sizes) {
            let outcome = replica.apply(&page_of(&ops, &states, from, to, true));
            prop_assert!(matches!(outcome, ApplyOutcome::Applied { .. }), "{:?}", outcome);
        }
        prop_assert_eq!(replica.cursor(), last);
        prop_assert_eq!(replica.records(), &states[last as usize]);
        prop_assert!(replica.verify(states[last as usize].len() as u64, checksum_of(states[last as usize].values())).is_ok());
    }
}
