use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use syncline_proto::v1::Value;
use tempfile::TempDir;

use super::*;

use syncline_proto::checksum::Checksum;

use crate::storage::{AccountStore, CursorStore, StoredDevice, StoredUser};

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
fn capture_writes_commit_atomically_with_their_position() {
    let (dir, store) = open_temp();
    let (a, b) = (partition("a"), partition("b"));
    let position = |token: &[u8]| CapturePosition { name: "watch:crm".into(), token: token.to_vec(), fence: None };
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
