//! The partition part of the contract: sequences, no-ops, validation, pages, compaction,
//! capture positions and purges.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use syncline_proto::record::RecordError;
use syncline_proto::v1::{Record, Value};

use super::Open;
use super::support::*;
use crate::storage::{
    CapturePosition, Change, CompactionReport, EncodedSnapshotPage, MAX_BATCH_CHANGES, MAX_RECORD_ID_BYTES, PageLimit,
    PartitionName, PartitionState, PartitionWrite, Store, StoreError, record_item_bytes,
};

pub(super) fn sequences_are_gap_free_across_batches(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    let first = upsert(store, &name, vec![record("a", 1), record("b", 1)]);
    assert_eq!((first.first_seq, first.last_seq), (1, 2));
    assert_eq!(seqs(&first), [1, 2]);
    let second =
        store.apply_batch(&name, vec![record("a", 2), record("c", 1)], vec!["b".to_owned()]).expect("mixed batch");
    // Deletes come first, then upserts in input order.
    assert_eq!((second.first_seq, second.last_seq), (3, 5));
    assert_eq!(seqs(&second), [3, 4, 5]);
    assert!(matches!(&second.changes[0], Change::Delete { id, seq: 3 } if id == "b"));
    assert!(matches!(&second.changes[1], Change::Upsert(r) if r.id == "a" && r.version == 4));
    assert!(matches!(&second.changes[2], Change::Upsert(r) if r.id == "c" && r.version == 5));
    let state = store.partition_state(&name).expect("state");
    assert_eq!(state, second.state);
    assert_eq!((state.head, state.horizon, state.total), (5, 0, 2));
    let records = snapshot(store, &name, 10);
    assert_eq!(recomputed(&records), (state.total, state.checksum));
    assert_eq!(records.iter().map(|r| (r.id.as_str(), r.version)).collect::<Vec<_>>(), [("a", 4), ("c", 5)]);
}

pub(super) fn unchanged_upsert_takes_no_sequence(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    let nan = |bits: u64| Record {
        id: "x".to_owned(),
        fields: BTreeMap::from([("f".to_owned(), Value::double(f64::from_bits(bits)))]),
        version: 0,
    };
    upsert(store, &name, vec![record("a", 1), nan(0x7ff8_0000_0000_0001)]);
    // Same fields (the caller's version is ignored, NaN compares by bit pattern): no-op.
    let mut same = record("a", 1);
    same.version = 99;
    let unchanged = upsert(store, &name, vec![same, nan(0x7ff8_0000_0000_0001)]);
    assert_eq!((unchanged.first_seq, unchanged.last_seq), (0, 0));
    assert!(unchanged.changes.is_empty());
    assert_eq!(unchanged.state.head, 2);
    // Another NaN payload is a change.
    let changed = upsert(store, &name, vec![record("a", 1), nan(0x7ff8_0000_0000_0002)]);
    assert_eq!(seqs(&changed), [3]);
    assert_eq!(changed.changes[0].id(), "x");
    assert_eq!(store.write_stats().commits, 2, "a group that changes nothing is not committed");
    // Commits are timed: the longest one is recorded (slow ones are counted apart).
    let stats = store.write_stats();
    assert!(stats.slowest_commit_micros > 0, "{stats:?}");
    assert!(stats.slow_commits <= stats.commits, "{stats:?}");
}

pub(super) fn delete_of_absent_id_is_a_no_op(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    let nothing = delete(store, &name, &["ghost"]);
    assert_eq!((nothing.first_seq, nothing.last_seq, nothing.state), (0, 0, PartitionState::default()));
    assert!(store.partitions().expect("partitions").is_empty(), "deletes alone do not create a partition");
    upsert(store, &name, vec![record("a", 1)]);
    let batch = delete(store, &name, &["ghost", "a"]);
    assert_eq!(seqs(&batch), [2]);
    assert_eq!(batch.changes[0].id(), "a");
    assert_eq!((batch.state.total, batch.state.checksum), (0, 0));
    let again = delete(store, &name, &["a"]);
    assert!(again.changes.is_empty());
    assert_eq!(again.state.head, 2);
}

pub(super) fn invalid_batches_write_nothing(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    let long = "x".repeat(MAX_RECORD_ID_BYTES + 1);
    let err = store.apply_batch(&name, vec![record("ok", 1), record("", 1)], Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(RecordError::InvalidId { id, .. }) if id.is_empty()));
    let err = store.apply_batch(&name, vec![record("ok", 1)], vec![long.clone()]).unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(RecordError::InvalidId { bytes, .. }) if bytes == long.len()));
    // Issue 13: every record is checked, not only its id.
    let mut unnamed = record("bad", 1);
    unnamed.fields.insert(String::new(), Value::int(1));
    let err = store.apply_batch(&name, vec![record("ok", 1), unnamed], Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(RecordError::EmptyFieldName { id }) if id == "bad"));
    let err = store.apply_batch(&name, vec![record("a", 1), record("a", 2)], Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::DuplicateId { id } if id == "a"));
    let err = store.apply_batch(&name, vec![record("a", 1)], vec!["a".to_owned()]).unwrap_err();
    assert!(matches!(err, StoreError::DuplicateId { id } if id == "a"));
    let too_many = (0..=MAX_BATCH_CHANGES).map(|i| record(&format!("r{i}"), 1)).collect();
    let err = store.apply_batch(&name, too_many, Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::BatchTooLarge { changes } if changes == MAX_BATCH_CHANGES + 1));
    // An id of exactly the limit is fine.
    let longest = "y".repeat(MAX_RECORD_ID_BYTES);

    assert!(store.partitions().expect("partitions").is_empty());
    assert_eq!(store.partition_state(&name).expect("state"), PartitionState::default());
    assert_eq!(store.write_stats().submitted_batches, 0, "nothing reached the writer");
    let batch = upsert(store, &name, vec![record(&longest, 1)]);
    assert_eq!(seqs(&batch), [1]);
}

pub(super) fn concurrent_batches_are_gap_free_and_notified_in_order(open: Open) {
    const THREADS: usize = 8;
    const BATCHES_PER_THREAD: usize = 25;
    let listener = Arc::new(RecordingListener::default());
    let fixture = open(Some(listener.clone()));
    let store = Arc::clone(&fixture.store);
    let names: Vec<PartitionName> = (0..3).map(|p| partition(&format!("p{p}"))).collect();

    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            let name = names[thread % names.len()].clone();
            std::thread::spawn(move || {
                (0..BATCHES_PER_THREAD)
                    .map(|i| {
                        let records =
                            vec![record(&format!("t{thread}-{i}-a"), 1), record(&format!("t{thread}-{i}-b"), 1)];
                        upsert(&*store, &name, records)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut returned: BTreeMap<PartitionName, Vec<(u64, u64)>> = BTreeMap::new();
    for handle in handles {
        for batch in handle.join().expect("thread") {
            assert_eq!(batch.last_seq - batch.first_seq + 1, 2);
            assert_eq!(seqs(&batch), [batch.first_seq, batch.last_seq]);
            returned.entry(batch.partition.clone()).or_default().push((batch.first_seq, batch.last_seq));
        }
    }

    let seen = listener.batches.lock().expect("listener lock").clone();
    assert_eq!(seen.len(), THREADS * BATCHES_PER_THREAD);
    for name in &names {
        let head = store.partition_state(name).expect("state").head;
        // The listener saw this partition's batches in sequence order, without gaps.
        let mut next = 1;
        for (_, first, last, changes) in seen.iter().filter(|(p, ..)| p == name) {
            assert_eq!(*first, next, "listener order for {name}");
            assert_eq!(last - first + 1, *changes as u64);
            next = last + 1;
        }
        assert_eq!(next - 1, head);
        // The callers' ranges tile 1..=head exactly.
        let ranges = returned.get_mut(name).expect("batches for partition");
        ranges.sort_unstable();
        let mut next = 1;
        for (first, last) in ranges.iter() {
            assert_eq!(*first, next);
            next = last + 1;
        }
        assert_eq!(next - 1, head);
        let records = snapshot(&*store, name, 7);
        let state = store.partition_state(name).expect("state");
        assert_eq!(recomputed(&records), (state.total, state.checksum));
    }
    let stats = store.write_stats();
    let batches = (THREADS * BATCHES_PER_THREAD) as u64;
    assert_eq!((stats.submitted_batches, stats.answered_batches), (batches, batches));
    assert!(stats.commits >= 1 && stats.commits <= batches);
}

pub(super) fn snapshot_pages_cover_live_records_once_in_id_order(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    let neighbour = partition("u2");
    upsert(store, &neighbour, vec![record("a", 1), record("zz", 1)]);
    // Ids of several lengths and a non-ASCII one: order is byte order, not length first.
    let ids: Vec<String> = (0..23).map(|i| format!("{}{i}", ["b", "ab", "a", "ba", "\u{e9}"][i % 5])).collect();
    upsert(store, &name, ids.iter().map(|id| record(id, 1)).collect());
    delete(store, &name, &[&ids[3], &ids[17]]);
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).filter(|id| *id != ids[3] && *id != ids[17]).collect();
    expected.sort_unstable();
    for page in [1, 4, 21, 100] {
        let records = snapshot(store, &name, page);
        assert_eq!(records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), expected, "page size {page}");
    }
    // A page ending exactly at the last record is done.
    let all = store.read_snapshot(&name, None, PageLimit::items(expected.len())).expect("page");
    assert!(all.done);
    let short = store.read_snapshot(&name, None, PageLimit::items(expected.len() - 1)).expect("page");
    assert!(!short.done);
    let empty = store.read_snapshot(&name, expected.last().copied(), PageLimit::items(5)).expect("page");
    assert!(empty.records.is_empty() && empty.done);
    let zero = store.read_snapshot(&name, Some(expected[expected.len() - 2]), PageLimit::items(0)).expect("page");
    assert!(zero.records.is_empty() && !zero.done);
    let unknown = store.read_snapshot(&partition("nobody"), None, PageLimit::items(5)).expect("page");
    assert!(unknown.records.is_empty() && unknown.done);
}

pub(super) fn log_pages_report_what_they_cover(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    upsert(store, &name, vec![record("a", 1), record("b", 1), record("c", 1)]); // 1..=3
    upsert(store, &name, vec![record("a", 2)]); // 4
    delete(store, &name, &["b"]); // 5
    let page = store.read_log(&name, 0, PageLimit::items(2)).expect("log");
    assert_eq!((page.changes.iter().map(Change::seq).collect::<Vec<_>>(), page.covered_to), (vec![1, 2], 2));
    let page = store.read_log(&name, 2, PageLimit::items(3)).expect("log");
    assert_eq!((page.changes.len(), page.covered_to, page.state.head), (3, 5, 5));
    let page = store.read_log(&name, 5, PageLimit::items(3)).expect("log");
    assert_eq!((page.changes.len(), page.covered_to), (0, 5));
    let page = store.read_log(&name, 1, PageLimit::items(0)).expect("log");
    assert_eq!((page.changes.len(), page.covered_to), (0, 1));

    // Compaction leaves gaps: a@1 superseded by a@4, b@2 deleted at 5 (tombstone purged).
    let report = store.compact(&name, 0).expect("compact");
    assert_eq!(report, CompactionReport { removed: 3, horizon: 5 });
    let page = store.read_log(&name, 0, PageLimit::items(2)).expect("log");
    assert_eq!((page.changes.iter().map(Change::seq).collect::<Vec<_>>(), page.covered_to), (vec![3, 4], 5));
    let page = store.read_log(&name, 0, PageLimit::items(1)).expect("log");
    assert_eq!((page.changes.iter().map(Change::seq).collect::<Vec<_>>(), page.covered_to), (vec![3], 3));
    let page = store.read_log(&name, 3, PageLimit::items(1)).expect("log");
    assert_eq!((page.changes.iter().map(Change::seq).collect::<Vec<_>>(), page.covered_to), (vec![4], 5));
    let unknown = store.read_log(&partition("nobody"), 0, PageLimit::items(5)).expect("log");
    assert_eq!((unknown.changes.len(), unknown.covered_to), (0, 0));
}

pub(super) fn compaction_keeps_recent_entries_and_the_latest_per_id(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    upsert(store, &name, vec![record("a", 1), record("b", 1)]); // 1, 2
    upsert(store, &name, vec![record("a", 2)]); // 3
    delete(store, &name, &["b"]); // 4
    upsert(store, &name, vec![record("a", 3)]); // 5
    assert_eq!(store.compact(&name, 5).expect("compact"), CompactionReport { removed: 0, horizon: 0 });
    // Point 2: only a@1 (superseded) and b@2 (deleted later) go; the tombstone at 4 stays.
    assert_eq!(store.compact(&name, 3).expect("compact"), CompactionReport { removed: 2, horizon: 2 });
    let log = store.read_log(&name, 0, PageLimit::items(100)).expect("log");
    assert_eq!(log.changes.iter().map(Change::seq).collect::<Vec<_>>(), [3, 4, 5]);
    // A larger keep_recent never lowers the horizon.
    assert_eq!(store.compact(&name, 4).expect("compact"), CompactionReport { removed: 0, horizon: 2 });
    // Point 4: a@3 superseded by a@5, tombstone at 4 purged.
    assert_eq!(store.compact(&name, 1).expect("compact"), CompactionReport { removed: 2, horizon: 4 });
    let log = store.read_log(&name, 0, PageLimit::items(100)).expect("log");
    assert_eq!(log.changes.iter().map(Change::seq).collect::<Vec<_>>(), [5]);
    assert_eq!(store.compact(&partition("nobody"), 0).expect("compact"), CompactionReport::default());
}

/// A record with a `pad` field of `pad` bytes.
fn padded(id: &str, pad: usize) -> Record {
    Record {
        id: id.to_owned(),
        fields: BTreeMap::from([("pad".to_owned(), Value::string("x".repeat(pad)))]),
        version: 0,
    }
}

/// Returns the page sizes (in items) of a whole snapshot and a whole log read under `limit`.
fn page_shapes(store: &dyn Store, name: &PartitionName, limit: PageLimit) -> (Vec<usize>, Vec<usize>) {
    let mut snapshot = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.read_snapshot(name, after.as_deref(), limit).expect("snapshot page");
        snapshot.push(page.records.len());
        after = page.records.last().map(|record| record.id.clone()).or(after);
        if page.done {
            break;
        }
    }
    let mut log = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.read_log(name, cursor, limit).expect("log page");
        log.push(page.changes.len());
        cursor = page.covered_to;
        if cursor == page.state.head {
            break;
        }
    }
    (snapshot, log)
}

/// Regression for catch-up pages bounded only by count: pages stop at their bytes, exactly
/// at the bound or before the item past it.
pub(super) fn pages_stop_at_their_bytes(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    upsert(store, &name, (0..6).map(|i| padded(&format!("r{i}"), 1000)).collect());
    let stored = store.read_snapshot(&name, None, PageLimit::unbounded()).expect("page").records;
    let size = record_item_bytes(&stored[0]);
    let shape = |bytes: usize| page_shapes(store, &name, PageLimit { items: 100, bytes });
    assert_eq!(shape(2 * size), (vec![2, 2, 2], vec![2, 2, 2]), "exactly at the bound: two a page");
    assert_eq!(shape(2 * size - 1), (vec![1; 6], vec![1; 6]), "one byte short: one a page");
    assert_eq!(shape(0), (vec![1; 6], vec![1; 6]), "every record over the bound: one a page");
    assert_eq!(shape(6 * size), (vec![6], vec![6]));
    assert_eq!(page_shapes(store, &name, PageLimit { items: 4, bytes: usize::MAX }), (vec![4, 2], vec![4, 2]));
}

pub(super) fn compaction_spanning_several_steps_removes_everything_superseded(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    // More entries than one compaction step of either backend examines.
    for round in 0..12 {
        upsert(store, &name, (0..1000).map(|i| record(&format!("r{i:04}"), round)).collect());
    }
    let head = store.partition_state(&name).expect("state").head;
    let report = store.compact(&name, 0).expect("compact");
    assert_eq!(report, CompactionReport { removed: head - 1000, horizon: head });
    let log = store.read_log(&name, 0, PageLimit::items(5000)).expect("log");
    assert_eq!(log.changes.len(), 1000);
    assert!(log.changes.iter().all(|change| change.seq() > head - 1000));
}

/// One step of the compaction property test.
#[derive(Clone, Debug)]
enum Step {
    /// (id index, Some(value) = upsert, None = delete); repeated ids keep the first.
    Batch(Vec<(u8, Option<i64>)>),
    Compact(u64),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0u8..6, prop::option::weighted(0.7, 0i64..3)), 0..5).prop_map(Step::Batch),
        1 => (0u64..8).prop_map(Step::Compact),
    ]
}

/// Checks the partition against the model: state, snapshot, checksum, and that a device at
/// each given cursor replays the log to the live set.
fn check_against_model(
    store: &dyn Store,
    name: &PartitionName,
    history: &[BTreeMap<String, Record>],
    horizon: u64,
    cursors: impl IntoIterator<Item = u64>,
) -> Result<(), TestCaseError> {
    let live = history.last().expect("history starts with the empty set");
    let state = store.partition_state(name).expect("state");
    prop_assert_eq!(state.head, history.len() as u64 - 1);
    prop_assert_eq!(state.horizon, horizon);
    let records = snapshot(store, name, 2);
    prop_assert_eq!(&records, &live.values().cloned().collect::<Vec<_>>());
    prop_assert_eq!(recomputed(&records), (state.total, state.checksum));
    for cursor in cursors {
        let mut device = history[usize::try_from(cursor).expect("small")].clone();
        prop_assert_eq!(replay(store, name, &mut device, cursor, 3), state.head);
        prop_assert_eq!(&device, live, "device at cursor {}", cursor);
    }
    Ok(())
}

/// Applies one batch step to the store and the model.
fn batch_step(
    store: &dyn Store,
    name: &PartitionName,
    history: &mut Vec<BTreeMap<String, Record>>,
    changes: Vec<(u8, Option<i64>)>,
) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    let changes: Vec<_> = changes.into_iter().filter(|(id, _)| seen.insert(*id)).collect();
    let deletes: Vec<String> = changes.iter().filter(|(_, v)| v.is_none()).map(|(id, _)| format!("r{id}")).collect();
    let upserts: Vec<Record> = changes.iter().filter_map(|(id, v)| v.map(|v| record(&format!("r{id}"), v))).collect();
    let mut live = history.last().expect("history").clone();
    // Deletes of missing ids and upserts that change nothing are not logged.
    let mut expected: Vec<(String, bool)> =
        deletes.iter().filter(|id| live.contains_key(*id)).map(|id| (id.clone(), false)).collect();
    expected.extend(
        upserts
            .iter()
            .filter(|r| live.get(&r.id).is_none_or(|old| old.fields != r.fields))
            .map(|r| (r.id.clone(), true)),
    );
    let batch = store.apply_batch(name, upserts, deletes).expect("batch");
    let got: Vec<(String, bool)> =
        batch.changes.iter().map(|c| (c.id().to_owned(), matches!(c, Change::Upsert(_)))).collect();
    prop_assert_eq!(got, expected);
    for change in batch.changes {
        prop_assert_eq!(change.seq(), history.len() as u64);
        match change {
            Change::Upsert(record) => {
                live.insert(record.id.clone(), record);
            }
            Change::Delete { id, .. } => {
                live.remove(&id);
            }
        }
        history.push(live.clone());
    }
    Ok(())
}

/// The key invariant of compaction: a device at any cursor at or above the horizon that
/// applies the log from its cursor ends with exactly the live set.
pub(super) fn compacted_log_replays_to_the_live_set(open: Open) {
    let mut runner = TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    let result = runner.run(&prop::collection::vec(step_strategy(), 1..30), |steps| {
        let fixture = open(None);
        let store = &*fixture.store;
        let name = partition("u1");
        let mut history = vec![BTreeMap::<String, Record>::new()];
        let mut horizon = 0;
        for step in steps {
            match step {
                Step::Batch(changes) => batch_step(store, &name, &mut history, changes)?,
                Step::Compact(keep_recent) => {
                    let head = history.len() as u64 - 1;
                    let before = store.read_log(&name, 0, PageLimit::unbounded()).expect("log").changes.len() as u64;
                    let report = store.compact(&name, keep_recent).expect("compact");
                    let after = store.read_log(&name, 0, PageLimit::unbounded()).expect("log").changes;
                    if head > keep_recent {
                        horizon = horizon.max(head - keep_recent);
                    }
                    prop_assert_eq!(report, CompactionReport { removed: before - after.len() as u64, horizon });
                    let live = history.last().expect("history");
                    let point = head.saturating_sub(keep_recent);
                    for change in &after {
                        if change.seq() <= point {
                            // At or below the point only the latest upsert of a live id remains.
                            let latest = matches!(change, Change::Upsert(r) if live.get(&r.id) == Some(r));
                            prop_assert!(latest, "{:?} survived compaction at {}", change, point);
                        }
                    }
                    let above = after.iter().filter(|c| c.seq() > horizon).count() as u64;
                    prop_assert_eq!(above, head - horizon, "entries above the horizon are never removed");
                }
            }
            let head = history.len() as u64 - 1;
            check_against_model(store, &name, &history, horizon, horizon..=head)?;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

pub(super) fn capture_writes_commit_with_their_position(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let (a, b) = (partition("a"), partition("b"));
    let position = |token: &[u8]| CapturePosition { name: "watch:crm".into(), token: token.to_vec(), fence: None };
    assert_eq!(store.capture_position("watch:crm").expect("read"), None);
    let writes = vec![
        PartitionWrite { partition: a.clone(), upserts: vec![record("x", 1)], deletes: vec![] },
        PartitionWrite { partition: b.clone(), upserts: vec![record("y", 2), record("z", 3)], deletes: vec![] },
    ];
    let batches = store.apply_capture(writes.clone(), position(b"t1")).expect("capture");
    assert_eq!(batches.iter().map(seqs).collect::<Vec<_>>(), vec![vec![1], vec![1, 2]]);
    assert_eq!(store.capture_position("watch:crm").expect("read"), Some(b"t1".to_vec()));
    // Applying the same writes again (as after a crash before the position was stored)
    // changes nothing, but the position still moves.
    let batches = store.apply_capture(writes, position(b"t2")).expect("capture");
    assert!(batches.iter().all(|batch| batch.changes.is_empty()));
    // An invalid write refuses the whole request: neither the other write nor the position.
    let invalid = vec![
        PartitionWrite { partition: a.clone(), upserts: vec![record("w", 9)], deletes: vec![] },
        PartitionWrite { partition: b.clone(), upserts: vec![record("", 1)], deletes: vec![] },
    ];
    assert!(matches!(store.apply_capture(invalid, position(b"t3")), Err(StoreError::InvalidRecord(_))));
    assert_eq!(store.capture_position("watch:crm").expect("read"), Some(b"t2".to_vec()));
    assert_eq!(store.partition_state(&a).expect("state").head, 1);
    assert_eq!(store.partition_state(&b).expect("state").head, 2);
}

pub(super) fn purged_partitions_are_gone_and_others_stay(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let (ann, bob) = (PartitionName::new("Contact", "ann"), PartitionName::new("Contact", "bob"));
    upsert(store, &ann, vec![record("a", 1), record("b", 1)]);
    upsert(store, &bob, vec![record("a", 1)]);
    assert!(store.purge_partition(&ann).expect("purge"));
    assert!(!store.purge_partition(&ann).expect("purge"));
    assert_eq!(store.partition_state(&ann).expect("state"), PartitionState::default());
    assert!(store.record(&ann, "a").expect("record").is_none());
    assert_eq!(store.partitions().expect("partitions"), vec![bob.clone()]);
    assert!(store.record(&bob, "a").expect("record").is_some());
    assert_eq!(store.read_log(&bob, 0, PageLimit::items(10)).expect("log").changes.len(), 1);
    // Written again, it starts from nothing.
    assert_eq!(seqs(&upsert(store, &ann, vec![record("c", 1)])), [1]);
}

/// Catch-up pages are spliced from encoded snapshot pages: every page, under every limit, is
/// byte for byte the encoding of the decoded page the same read returns.
pub(super) fn encoded_snapshot_pages_are_the_encoded_decoded_pages(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let name = partition("u1");
    // Records with no fields, long ids (two-byte length prefixes) and fields of many sizes;
    // enough batches that versions take several varint bytes.
    let mut records: Vec<Record> = (0..40).map(|i| padded(&format!("r{i:03}"), (i * 41) % 300)).collect();
    records.push(Record { id: "empty".to_owned(), ..Record::default() });
    records.push(padded(&"long-".repeat(40), 10));
    upsert(store, &name, records);
    for round in 0..150 {
        upsert(store, &name, vec![padded("r001", round)]);
    }
    delete(store, &name, &["r007"]);
    let limits = [
        PageLimit::unbounded(),
        PageLimit::items(1),
        PageLimit::items(7),
        PageLimit { items: 100, bytes: 900 },
        PageLimit { items: 100, bytes: 0 },
        PageLimit::items(0),
    ];
    for limit in limits {
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let decoded = store.read_snapshot(&name, after.as_deref(), limit).expect("snapshot page");
            let encoded = store.read_snapshot_encoded(&name, after.as_deref(), limit).expect("encoded page");
            let expected = EncodedSnapshotPage::from_page(decoded);
            assert_eq!(encoded.upserts, expected.upserts, "{limit:?} after {after:?}");
            assert_eq!(
                (encoded.count, &encoded.last_id, encoded.done, encoded.state),
                (expected.count, &expected.last_id, expected.done, expected.state),
                "{limit:?} after {after:?}"
            );
            if encoded.done || encoded.count == 0 {
                break;
            }
            after = encoded.last_id;
        }
    }
    let unknown = store.read_snapshot_encoded(&partition("nobody"), None, PageLimit::items(5)).expect("page");
    assert!(unknown.upserts.is_empty() && unknown.count == 0 && unknown.done);
}
