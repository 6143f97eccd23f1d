use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use proptest::prelude::*;
use syncline_proto::record::RecordError;
use syncline_proto::v1::Value;
use tempfile::TempDir;

use super::*;
use std::collections::HashSet;

use syncline_proto::checksum::Checksum;

use super::compaction::COMPACTION_STEP_ENTRIES;
use crate::storage::{
    AccountStore, CursorStore, DeviceState, MAX_BATCH_CHANGES, MAX_RECORD_ID_BYTES, StoredDevice, StoredUser,
};

fn open_temp() -> (TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&store_path(&dir), EmbeddedOptions::default()).expect("open");
    (dir, store)
}

fn open_temp_with(listener: Arc<dyn CommitListener>) -> (TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        EmbeddedStore::open_with_listener(&store_path(&dir), EmbeddedOptions::default(), Some(listener)).expect("open");
    (dir, store)
}

fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("syncline.redb")
}

fn partition(key: &str) -> PartitionName {
    PartitionName::new("Account", key)
}

fn record(id: &str, value: i64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(value))]), version: 0 }
}

fn upsert(store: &EmbeddedStore, name: &PartitionName, records: Vec<Record>) -> CommittedBatch {
    store.apply_batch(name, records, Vec::new()).expect("apply upserts")
}

fn delete(store: &EmbeddedStore, name: &PartitionName, ids: &[&str]) -> CommittedBatch {
    let ids = ids.iter().map(|id| (*id).to_owned()).collect();
    store.apply_batch(name, Vec::new(), ids).expect("apply deletes")
}

fn seqs(batch: &CommittedBatch) -> Vec<u64> {
    batch.changes.iter().map(Change::seq).collect()
}

/// Reads every live record through snapshot pages of `page` records.
fn snapshot(store: &EmbeddedStore, name: &PartitionName, page: usize) -> Vec<Record> {
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
fn recomputed(records: &[Record]) -> (u64, u64) {
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record.id, record.version);
    }
    (records.len() as u64, checksum.0)
}

/// Applies log pages of `page` changes from `cursor` onto `device` until the head; returns
/// the final cursor.
fn replay(
    store: &EmbeddedStore,
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

#[test]
fn sequences_are_gap_free_across_batches() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    let first = upsert(&store, &name, vec![record("a", 1), record("b", 1)]);
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
    let records = snapshot(&store, &name, 10);
    assert_eq!(recomputed(&records), (state.total, state.checksum));
    assert_eq!(records.iter().map(|r| (r.id.as_str(), r.version)).collect::<Vec<_>>(), [("a", 4), ("c", 5)]);
}

#[test]
fn unchanged_upsert_takes_no_sequence() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    let nan = |bits: u64| Record {
        id: "x".to_owned(),
        fields: BTreeMap::from([("f".to_owned(), Value::double(f64::from_bits(bits)))]),
        version: 0,
    };
    upsert(&store, &name, vec![record("a", 1), nan(0x7ff8_0000_0000_0001)]);
    // Same fields (the caller's version is ignored, NaN compares by bit pattern): no-op.
    let mut same = record("a", 1);
    same.version = 99;
    let unchanged = upsert(&store, &name, vec![same, nan(0x7ff8_0000_0000_0001)]);
    assert_eq!((unchanged.first_seq, unchanged.last_seq), (0, 0));
    assert!(unchanged.changes.is_empty());
    assert_eq!(unchanged.state.head, 2);
    // Another NaN payload is a change.
    let changed = upsert(&store, &name, vec![record("a", 1), nan(0x7ff8_0000_0000_0002)]);
    assert_eq!(seqs(&changed), [3]);
    assert_eq!(changed.changes[0].id(), "x");
    assert_eq!(store.write_stats().commits, 2, "a group that changes nothing is not committed");
    // Commits are timed: the longest one is recorded (slow ones are counted apart).
    let stats = store.write_stats();
    assert!(stats.slowest_commit_micros > 0, "{stats:?}");
    assert!(stats.slow_commits <= stats.commits, "{stats:?}");
}

#[test]
fn delete_of_absent_id_is_a_no_op() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    let nothing = delete(&store, &name, &["ghost"]);
    assert_eq!((nothing.first_seq, nothing.last_seq, nothing.state), (0, 0, PartitionState::default()));
    assert!(store.partitions().expect("partitions").is_empty(), "deletes alone do not create a partition");
    upsert(&store, &name, vec![record("a", 1)]);
    let batch = delete(&store, &name, &["ghost", "a"]);
    assert_eq!(seqs(&batch), [2]);
    assert_eq!(batch.changes[0].id(), "a");
    assert_eq!((batch.state.total, batch.state.checksum), (0, 0));
    let again = delete(&store, &name, &["a"]);
    assert!(again.changes.is_empty());
    assert_eq!(again.state.head, 2);
}

#[test]
fn invalid_batches_write_nothing() {
    let (_dir, store) = open_temp();
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
    let batch = upsert(&store, &name, vec![record(&longest, 1)]);
    assert_eq!(seqs(&batch), [1]);
}

#[test]
fn committed_data_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = store_path(&dir);
    let name = partition("u1");
    let other = PartitionName::new("Product", "*");
    let secret;
    {
        let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).expect("open");
        upsert(&store, &name, vec![record("a", 1), record("b", 2)]);
        delete(&store, &name, &["a"]);
        upsert(&store, &other, vec![record("p", 1)]);
        store.compact(&name, 0).expect("compact");
        store.save_cursors(&[("c1".to_owned(), name.clone(), 3)]).expect("cursors");
        store.add_user(&StoredUser { name: "ann".to_owned(), password_hash: "h1".to_owned() }).expect("user");
        let device = StoredDevice { client_id: "c1".to_owned(), user_id: "ann".to_owned(), ..Default::default() };
        store.put_device(&device).expect("device");
        secret = store.secret("token-key", &|| vec![7; 32]).expect("secret");
        // Cursors commit without fsync; the next durable commit carries them.
        upsert(&store, &other, vec![record("q", 1)]);
        // A clean close makes a pending non-durable commit durable too.
        store.save_cursors(&[("c2".to_owned(), other.clone(), 2)]).expect("cursors");
    }
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).expect("reopen");
    let mut names = store.partitions().expect("partitions");
    names.sort();
    assert_eq!(names, [name.clone(), other.clone()]);
    let state = store.partition_state(&name).expect("state");
    assert_eq!((state.head, state.horizon, state.total), (3, 3, 1));
    let records = snapshot(&store, &name, 10);
    assert_eq!(records, [Record { version: 2, ..record("b", 2) }]);
    assert_eq!(recomputed(&records), (state.total, state.checksum));
    assert_eq!(store.partition_state(&other).expect("state").head, 2);
    assert_eq!(store.cursor("c1", &name).expect("cursor"), Some(3));
    assert_eq!(store.cursor("c2", &other).expect("cursor"), Some(2));
    assert_eq!(store.user("ann").expect("user").map(|u| u.password_hash), Some("h1".to_owned()));
    assert_eq!(store.device("c1").expect("device").map(|d| d.user_id), Some("ann".to_owned()));
    assert_eq!(store.secret("token-key", &|| vec![0; 32]).expect("secret"), secret);
    // Sequences continue where they stopped.
    assert_eq!(seqs(&upsert(&store, &name, vec![record("c", 1)])), [4]);
}

#[test]
fn opening_an_open_store_reports_locked() {
    let (dir, _store) = open_temp();
    let err = EmbeddedStore::open(&store_path(&dir), EmbeddedOptions::default()).err().expect("second open fails");
    assert!(matches!(&err, StoreError::Locked { path } if path.ends_with("syncline.redb")), "{err:?}");
}

/// Records what the listener saw.
#[derive(Default)]
struct RecordingListener {
    batches: Mutex<Vec<(PartitionName, u64, u64, usize)>>,
}

impl CommitListener for RecordingListener {
    fn committed(&self, batches: &[&CommittedBatch]) {
        let mut seen = self.batches.lock().expect("listener lock");
        for batch in batches {
            seen.push((batch.partition.clone(), batch.first_seq, batch.last_seq, batch.changes.len()));
        }
    }
}

#[test]
fn concurrent_batches_are_gap_free_and_notified_in_order() {
    const THREADS: usize = 8;
    const BATCHES_PER_THREAD: usize = 25;
    let listener = Arc::new(RecordingListener::default());
    let (_dir, store) = open_temp_with(listener.clone());
    let store = Arc::new(store);
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
                        upsert(&store, &name, records)
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
        let records = snapshot(&store, name, 7);
        let state = store.partition_state(name).expect("state");
        assert_eq!(recomputed(&records), (state.total, state.checksum));
    }
    let stats = store.write_stats();
    let batches = (THREADS * BATCHES_PER_THREAD) as u64;
    assert_eq!((stats.submitted_batches, stats.answered_batches), (batches, batches));
    assert!(stats.commits >= 1 && stats.commits <= batches);
}

/// Submits each batch from its own thread while the test holds redb's write lock, so they
/// all queue behind the writer; returns the results in submission-list order.
fn submit_while_writer_blocked(
    store: &Arc<EmbeddedStore>,
    batches: Vec<(PartitionName, Vec<Record>, Vec<String>)>,
) -> Vec<StoreResult<CommittedBatch>> {
    let count = batches.len() as u64;
    let before = store.write_stats().submitted_batches;
    let lock = store.shared.db.begin_write().expect("hold the write lock");
    let handles: Vec<_> = batches
        .into_iter()
        .map(|(name, upserts, deletes)| {
            let store = Arc::clone(store);
            std::thread::spawn(move || store.apply_batch(&name, upserts, deletes))
        })
        .collect();
    // Waits on a condition (every batch queued), not on time.
    while store.write_stats().submitted_batches < before + count {
        std::thread::yield_now();
    }
    assert_eq!(store.write_stats().answered_batches, before, "the writer is blocked");
    drop(lock);
    handles.into_iter().map(|handle| handle.join().expect("thread")).collect()
}

#[test]
fn queued_batches_share_one_commit() {
    const BATCHES: usize = 16;
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let batches = (0..BATCHES)
        .map(|i| (partition(&format!("p{}", i % 4)), vec![record(&format!("r{i}"), 1)], Vec::new()))
        .collect();
    for result in submit_while_writer_blocked(&store, batches) {
        assert_eq!(result.expect("batch").changes.len(), 1);
    }
    let stats = store.write_stats();
    // The writer may have taken the first batch(es) before blocking on the lock; everything
    // queued behind it commits together.
    assert!(stats.commits <= 2, "{BATCHES} batches took {} commits", stats.commits);
    let heads: u64 = (0..4).map(|p| store.partition_state(&partition(&format!("p{p}"))).expect("state").head).sum();
    assert_eq!(heads, BATCHES as u64);
}

#[test]
fn a_failing_batch_does_not_fail_its_group() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let broken = partition("broken");
    let healthy = partition("healthy");
    upsert(&store, &broken, vec![record("a", 1)]);
    {
        // Corrupts the stored record so that comparing against it fails inside the group.
        let txn = store.shared.db.begin_write().expect("write");
        {
            let mut records = txn.open_table(RECORDS).expect("records");
            records.insert((1, "a"), [1u8, 2].as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let results = submit_while_writer_blocked(
        &store,
        vec![
            (broken.clone(), vec![record("a", 2)], Vec::new()),
            (healthy.clone(), vec![record("h", 1)], Vec::new()),
            (healthy.clone(), vec![record("i", 1)], Vec::new()),
        ],
    );
    assert!(matches!(&results[0], Err(StoreError::Corrupt(_))), "{:?}", results[0]);
    assert_eq!(results[1].as_ref().expect("healthy batch").changes.len(), 1);
    assert_eq!(results[2].as_ref().expect("healthy batch").changes.len(), 1);
    assert_eq!(store.partition_state(&healthy).expect("state").head, 2);
    assert_eq!(store.partition_state(&broken).expect("state").head, 1);
}

#[test]
fn a_panicking_listener_does_not_stop_the_writer() {
    /// Panics at its first commit, records the others.
    #[derive(Default)]
    struct PanickingOnce {
        panicked: std::sync::atomic::AtomicBool,
        recorder: RecordingListener,
    }
    impl CommitListener for PanickingOnce {
        fn committed(&self, batches: &[&CommittedBatch]) {
            if !self.panicked.swap(true, std::sync::atomic::Ordering::AcqRel) {
                panic!("listener bug");
            }
            self.recorder.committed(batches);
        }
    }
    let listener = Arc::new(PanickingOnce::default());
    let (_dir, store) = open_temp_with(listener.clone());
    let name = partition("u1");
    assert_eq!(seqs(&upsert(&store, &name, vec![record("a", 1)])), [1]);
    assert_eq!(seqs(&upsert(&store, &name, vec![record("b", 1)])), [2]);
    let listener = &listener.recorder;
    assert_eq!(listener.batches.lock().expect("lock").as_slice(), [(name, 2, 2, 1)]);
}

#[test]
fn snapshot_pages_cover_live_records_once_in_id_order() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    let neighbour = partition("u2");
    upsert(&store, &neighbour, vec![record("a", 1), record("zz", 1)]);
    // Ids of several lengths and a non-ASCII one: order is byte order, not length first.
    let ids: Vec<String> = (0..23).map(|i| format!("{}{i}", ["b", "ab", "a", "ba", "\u{e9}"][i % 5])).collect();
    upsert(&store, &name, ids.iter().map(|id| record(id, 1)).collect());
    delete(&store, &name, &[&ids[3], &ids[17]]);
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).filter(|id| *id != ids[3] && *id != ids[17]).collect();
    expected.sort_unstable();
    for page in [1, 4, 21, 100] {
        let records = snapshot(&store, &name, page);
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

#[test]
fn log_pages_report_what_they_cover() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    upsert(&store, &name, vec![record("a", 1), record("b", 1), record("c", 1)]); // 1..=3
    upsert(&store, &name, vec![record("a", 2)]); // 4
    delete(&store, &name, &["b"]); // 5
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

#[test]
fn compaction_keeps_recent_entries_and_the_latest_per_id() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    upsert(&store, &name, vec![record("a", 1), record("b", 1)]); // 1, 2
    upsert(&store, &name, vec![record("a", 2)]); // 3
    delete(&store, &name, &["b"]); // 4
    upsert(&store, &name, vec![record("a", 3)]); // 5
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

#[test]
fn compaction_spanning_several_steps_removes_everything_superseded() {
    let (_dir, store) = open_temp();
    let name = partition("u1");
    let rounds = COMPACTION_STEP_ENTRIES / 1000 + 2;
    for round in 0..rounds {
        let round = i64::try_from(round).expect("small");
        upsert(&store, &name, (0..1000).map(|i| record(&format!("r{i:04}"), round)).collect());
    }
    let head = store.partition_state(&name).expect("state").head;
    let report = store.compact(&name, 0).expect("compact");
    assert_eq!(report, CompactionReport { removed: head - 1000, horizon: head });
    let log = store.read_log(&name, 0, PageLimit::items(5000)).expect("log");
    assert_eq!(log.changes.len(), 1000);
    assert!(log.changes.iter().all(|change| change.seq() > head - 1000));
}

#[test]
fn users_devices_and_secrets() {
    let (_dir, store) = open_temp();
    let ann = StoredUser { name: "ann".to_owned(), password_hash: "h1".to_owned() };
    store.add_user(&ann).expect("add");
    assert!(matches!(store.add_user(&ann), Err(StoreError::UserExists { name }) if name == "ann"));
    assert!(store.set_user_password("ann", "h2").expect("set"));
    assert!(!store.set_user_password("bob", "h2").expect("set"));
    assert_eq!(store.user("ann").expect("user"), Some(StoredUser { password_hash: "h2".to_owned(), ..ann }));
    assert_eq!(store.user("bob").expect("user"), None);
    assert_eq!(store.user_count().expect("count"), 1);

    let mut device = StoredDevice {
        client_id: "c1".to_owned(),
        user_id: "ann".to_owned(),
        platform: "ios".to_owned(),
        app_version: "1.2".to_owned(),
        model: "phone".to_owned(),
        created_ms: -5,
        last_seen_ms: 10,
        state: DeviceState::Active,
        token_generation: 3,
    };
    store.put_device(&device).expect("put");
    assert_eq!(store.device("c1").expect("device"), Some(device.clone()));
    device.state = DeviceState::Locked;
    store.put_device(&device).expect("put");
    assert_eq!(store.device("c1").expect("device"), Some(device));
    assert_eq!(store.device("c2").expect("device"), None);

    let calls = AtomicU64::new(0);
    let generate = || {
        calls.fetch_add(1, Ordering::Relaxed);
        vec![1, 2, 3]
    };
    assert_eq!(store.secret("k", &generate).expect("secret"), [1, 2, 3]);
    assert_eq!(store.secret("k", &|| vec![9]).expect("secret"), [1, 2, 3]);
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    let name = partition("u1");
    assert_eq!(store.cursor("c1", &name).expect("cursor"), None);
    store.save_cursors(&[("c1".to_owned(), name.clone(), 4), ("c1".to_owned(), partition("u2"), 9)]).expect("save");
    store.save_cursors(&[("c1".to_owned(), name.clone(), 6)]).expect("save");
    assert_eq!(store.cursor("c1", &name).expect("cursor"), Some(6));
    assert_eq!(store.cursor("c1", &partition("u2")).expect("cursor"), Some(9));
    assert_eq!(store.cursor("c2", &name).expect("cursor"), None);
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
    store: &EmbeddedStore,
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
        prop_assert!(cursor >= state.horizon);
        let mut device = history[usize::try_from(cursor).expect("small")].clone();
        let reached = replay(store, name, &mut device, cursor, 3);
        prop_assert_eq!(reached, state.head);
        prop_assert_eq!(&device, live, "device at cursor {}", cursor);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The key invariant of compaction: a device at any cursor at or above the horizon that
    /// applies the log from its cursor ends with exactly the live set.
    #[test]
    fn compacted_log_replays_to_the_live_set(steps in prop::collection::vec(step_strategy(), 1..30)) {
        let (dir, store) = open_temp();
        let name = partition("u1");
        let mut history = vec![BTreeMap::<String, Record>::new()];
        let mut horizon = 0;
        for step in steps {
            match step {
                Step::Batch(changes) => {
                    let mut seen = HashSet::new();
                    let changes: Vec<_> = changes.into_iter().filter(|(id, _)| seen.insert(*id)).collect();
                    let deletes: Vec<String> =
                        changes.iter().filter(|(_, v)| v.is_none()).map(|(id, _)| format!("r{id}")).collect();
                    let upserts: Vec<Record> = changes
                        .iter()
                        .filter_map(|(id, v)| v.map(|v| record(&format!("r{id}"), v)))
                        .collect();
                    let live = history.last().expect("history").clone();
                    let mut expected: Vec<(String, bool)> =
                        deletes.iter().filter(|id| live.contains_key(*id)).map(|id| (id.clone(), false)).collect();
                    expected.extend(
                        upserts
                            .iter()
                            .filter(|r| live.get(&r.id).is_none_or(|old| old.fields != r.fields))
                            .map(|r| (r.id.clone(), true)),
                    );
                    let batch = store.apply_batch(&name, upserts, deletes).expect("batch");
                    let got: Vec<(String, bool)> =
                        batch.changes.iter().map(|c| (c.id().to_owned(), matches!(c, Change::Upsert(_)))).collect();
                    prop_assert_eq!(got, expected);
                    let mut live = live;
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
                    let head = history.len() as u64 - 1;
                    check_against_model(&store, &name, &history, horizon, [horizon, head])?;
                }
                Step::Compact(keep_recent) => {
                    let head = history.len() as u64 - 1;
                    let before = store.read_log(&name, 0, PageLimit::items(usize::MAX)).expect("log").changes.len() as u64;
                    let report = store.compact(&name, keep_recent).expect("compact");
                    let after = store.read_log(&name, 0, PageLimit::items(usize::MAX)).expect("log");
                    if head > keep_recent {
                        horizon = horizon.max(head - keep_recent);
                    }
                    prop_assert_eq!(report, CompactionReport { removed: before - after.changes.len() as u64, horizon });
                    let live = history.last().expect("history");
                    let point = head.saturating_sub(keep_recent);
                    for change in &after.changes {
                        if change.seq() <= point {
                            // At or below the point only the latest upsert of a live id remains.
                            let latest = matches!(change, Change::Upsert(r) if live.get(&r.id) == Some(r));
                            prop_assert!(latest, "{:?} survived compaction at {}", change, point);
                        }
                    }
                    let above = after.changes.iter().filter(|c| c.seq() > horizon).count() as u64;
                    prop_assert_eq!(above, head - horizon, "entries above the horizon are never removed");
                    check_against_model(&store, &name, &history, horizon, horizon..=head)?;
                }
            }
        }
        let head = history.len() as u64 - 1;
        check_against_model(&store, &name, &history, horizon, horizon..=head)?;
        drop(store);
        let store = EmbeddedStore::open(&store_path(&dir), EmbeddedOptions::default()).expect("reopen");
        check_against_model(&store, &name, &history, horizon, horizon..=head)?;
    }
}

#[test]
fn capture_writes_commit_atomically_with_their_position() {
    let (dir, store) = open_temp();
    let (a, b) = (partition("a"), partition("b"));
    let position = |token: &[u8]| CapturePosition { name: "watch:crm".into(), token: token.to_vec() };
    assert_eq!(store.capture_position("watch:crm").expect("read"), None);
    let writes = vec![
        PartitionWrite { partition: a.clone(), upserts: vec![record("x", 1)], deletes: vec![] },
        PartitionWrite { partition: b.clone(), upserts: vec![record("y", 2), record("z", 3)], deletes: vec![] },
    ];
    let batches = store.apply_capture(writes, position(b"t1")).expect("capture");
    assert_eq!(batches.iter().map(seqs).collect::<Vec<_>>(), vec![vec![1], vec![1, 2]]);
    // Nothing changes, but the position still moves (the channel's feed moved past no-ops).
    let same = vec![PartitionWrite { partition: a.clone(), upserts: vec![record("x", 1)], deletes: vec![] }];
    let batches = store.apply_capture(same, position(b"t2")).expect("capture");
    assert!(batches[0].changes.is_empty());
    // An invalid write refuses the whole request: neither the other write nor the position.
    let invalid = vec![
        PartitionWrite { partition: a.clone(), upserts: vec![record("w", 9)], deletes: vec![] },
        PartitionWrite { partition: b.clone(), upserts: vec![record("", 1)], deletes: vec![] },
    ];
    assert!(matches!(store.apply_capture(invalid, position(b"t3")), Err(StoreError::InvalidRecord(_))));
    drop(store);
    let store = EmbeddedStore::open(&store_path(&dir), EmbeddedOptions::default()).expect("reopen");
    assert_eq!(store.capture_position("watch:crm").expect("read"), Some(b"t2".to_vec()));
    assert_eq!(store.partition_state(&a).expect("state").head, 1);
    assert_eq!(store.partition_state(&b).expect("state").head, 2);
}

mod pages;
