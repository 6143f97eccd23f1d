use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;

use super::*;
use crate::storage::{
    CapturePosition, CommittedBatch, CompactionReport, LogPage, PartitionState, PartitionWrite, SnapshotPage,
    StoreResult,
};
use crate::test_util::fixtures::{record, temp_store};

fn partition() -> PartitionName {
    PartitionName::new("Account", "*")
}

fn seed(store: &dyn PartitionStore, ids: std::ops::Range<u32>) {
    let records: Vec<Record> = ids.map(|i| record(&format!("r{i:06}"), i64::from(i))).collect();
    for chunk in records.chunks(5_000) {
        store.apply_batch(&partition(), chunk.to_vec(), Vec::new()).expect("seed");
    }
}

/// The file's records as (id, version, n).
fn file_records(path: &Path) -> Vec<(String, u64, i64)> {
    let connection = Connection::open(path).expect("open");
    let mut statement = connection.prepare("SELECT id, version, fields FROM records ORDER BY id").expect("prepare");
    statement
        .query_map([], |row| {
            let fields: Vec<u8> = row.get(2)?;
            let fields = bulk_file::decode_fields(&fields).expect("protobuf fields");
            let n = match fields["n"].kind {
                Some(syncline_proto::v1::value::Kind::IntValue(n)) => n,
                ref other => panic!("n is {other:?}"),
            };
            Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, n))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn a_partition_is_written_whole_with_its_meta_and_the_stores_checksum() {
    let (dir, store) = temp_store();
    seed(store.as_ref(), 0..4_500);
    store.apply_batch(&partition(), Vec::new(), vec!["r000007".into()]).expect("delete");
    let path = dir.path().join("f.sqlite");
    let written = write_partition(store.as_ref(), &partition(), &path, 42).expect("write");
    let state = store.partition_state(&partition()).expect("state");
    assert_eq!((written.sequence, written.record_count, written.checksum), (state.head, state.total, state.checksum));
    assert_eq!(written.bytes, std::fs::metadata(&path).expect("file").len());
    assert!(!path.with_extension("tmp").exists(), "the temporary file is renamed");
    let rows = file_records(&path);
    assert_eq!(rows.len(), 4_499);
    assert!(rows.iter().all(|(id, _, n)| *id == format!("r{n:06}")), "fields keep their types and values");
    let file = crate::bulk::read_file_meta(&path).expect("meta");
    assert_eq!(
        (file.sequence, file.checksum, file.record_count, file.created_ms),
        (state.head, state.checksum, 4_499, 42)
    );
    assert_eq!(file.partition, partition());
}

#[test]
fn an_empty_partition_makes_an_empty_file_at_sequence_0() {
    let (dir, store) = temp_store();
    let path = dir.path().join("empty.sqlite");
    let written = write_partition(store.as_ref(), &partition(), &path, 1).expect("write");
    assert_eq!((written.sequence, written.record_count, written.checksum), (0, 0, 0));
    assert!(file_records(&path).is_empty());
}

/// The embedded store, with a batch committed right after the first snapshot page is read:
/// the partition moves while the writer reads it.
struct MovingStore {
    inner: Arc<dyn crate::storage::Store>,
    moved: AtomicBool,
}

impl PartitionStore for MovingStore {
    fn apply_batch(
        &self,
        partition: &PartitionName,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> StoreResult<CommittedBatch> {
        self.inner.apply_batch(partition, upserts, deletes)
    }
    fn apply_capture(
        &self,
        writes: Vec<PartitionWrite>,
        position: CapturePosition,
    ) -> StoreResult<Vec<CommittedBatch>> {
        self.inner.apply_capture(writes, position)
    }
    fn capture_position(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.capture_position(name)
    }
    fn record(&self, partition: &PartitionName, id: &str) -> StoreResult<Option<Record>> {
        self.inner.record(partition, id)
    }
    fn partition_state(&self, partition: &PartitionName) -> StoreResult<PartitionState> {
        self.inner.partition_state(partition)
    }
    fn read_log(&self, partition: &PartitionName, after: u64, limit: PageLimit) -> StoreResult<LogPage> {
        self.inner.read_log(partition, after, limit)
    }
    fn read_snapshot(
        &self,
        partition: &PartitionName,
        after_id: Option<&str>,
        limit: PageLimit,
    ) -> StoreResult<SnapshotPage> {
        let page = self.inner.read_snapshot(partition, after_id, limit)?;
        if !self.moved.swap(true, Ordering::SeqCst) {
            // Changes both behind the reader (r000001, already read) and ahead of it.
            let upserts = vec![record("r000001", -1), record("r004000", -2), record("zz-new", -3)];
            let deletes = vec!["r000002".to_owned(), "r003999".to_owned()];
            self.inner.apply_batch(partition, upserts, deletes)?;
        }
        Ok(page)
    }
    fn compact(&self, partition: &PartitionName, keep_recent: u64) -> StoreResult<CompactionReport> {
        self.inner.compact(partition, keep_recent)
    }
    fn partitions(&self) -> StoreResult<Vec<PartitionName>> {
        self.inner.partitions()
    }
}

#[test]
fn changes_committed_while_the_snapshot_is_read_end_up_in_the_file_at_the_head() {
    let (dir, store) = temp_store();
    seed(store.as_ref(), 0..4_500);
    let before = store.partition_state(&partition()).expect("state").head;
    let moving = MovingStore { inner: store.clone(), moved: AtomicBool::new(false) };
    let path = dir.path().join("moving.sqlite");
    let written = write_partition(&moving, &partition(), &path, 1).expect("write");
    let state = store.partition_state(&partition()).expect("state");
    assert!(written.sequence > before, "the file is at the head after the concurrent batch");
    assert_eq!((written.sequence, written.record_count, written.checksum), (state.head, state.total, state.checksum));
    let rows = file_records(&path);
    let n_of = |id: &str| rows.iter().find(|(row, _, _)| row == id).map(|(_, _, n)| *n);
    assert_eq!(n_of("r000001"), Some(-1), "an update behind the reader is applied from the log");
    assert_eq!(n_of("r004000"), Some(-2));
    assert_eq!(n_of("zz-new"), Some(-3));
    assert_eq!(n_of("r000002"), None, "a delete behind the reader is applied");
    assert_eq!(n_of("r003999"), None, "a delete ahead of the reader is applied");
}

#[test]
fn a_failed_write_leaves_no_file_behind() {
    let (dir, store) = temp_store();
    seed(store.as_ref(), 0..10);
    let path = dir.path().join("missing-dir").join("f.sqlite");
    assert!(write_partition(store.as_ref(), &partition(), &path, 1).is_err());
    assert!(!path.exists() && !path.with_extension("tmp").exists());
}

#[test]
fn ids_and_versions_are_read_from_the_covering_index_of_large_pages() {
    let (dir, store) = temp_store();
    seed(store.as_ref(), 0..100);
    let path = dir.path().join("f.sqlite");
    write_partition(store.as_ref(), &partition(), &path, 1).expect("write");
    let connection = Connection::open(&path).expect("open");
    let plan: String = connection
        .query_row(&format!("EXPLAIN QUERY PLAN {}", bulk_file::SELECT_IDS_AND_VERSIONS), [], |row| row.get(3))
        .expect("a plan");
    assert!(plan.contains("COVERING INDEX records_check"), "{plan}");
    let page_size: u32 = connection.query_row("PRAGMA page_size", [], |row| row.get(0)).expect("page size");
    assert_eq!(page_size, bulk_file::PAGE_SIZE);
}
