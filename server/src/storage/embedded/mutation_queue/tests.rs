use redb::{Database, ReadableDatabase};

use super::super::{CAPTURE_POSITIONS, EmbeddedOptions, EmbeddedStore, FORMAT_VERSION, FORMAT_VERSION_KEY, STORE_META};
use super::*;
use crate::storage::PartitionStore;
use crate::storage::contract::mutations::{mutation, outcome};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).expect("open")
}

#[test]
fn pruning_a_large_backlog_takes_several_steps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let count = PRUNE_STEP + 5;
    let txn = store.begin_write().unwrap();
    {
        let mut tables = MutationTables::open(&txn).unwrap();
        for n in 0..count {
            tables.finish(&outcome("c1", &format!("m{n}"), b"r"), 1_000 + n as u64).unwrap();
        }
    }
    txn.commit().unwrap();
    assert_eq!(store.prune_mutation_outcomes(1_000 + count as u64).unwrap(), count as u64);
}

/// Writes a store file in format 1: a finished mutation (outcome in `capture_positions`,
/// still in the queue), an unfinished one, and a real capture position.
fn write_format_1(path: &std::path::Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(STORE_META).unwrap();
        meta.insert(FORMAT_VERSION_KEY, 1).unwrap();
        let mut positions = txn.open_table(CAPTURE_POSITIONS).unwrap();
        positions.insert("mutation:c1\0m1", b"legacy-result".as_slice()).unwrap();
        positions.insert("watch:http://crm", b"resume".as_slice()).unwrap();
        let mut queue = txn.open_table(MUTATIONS).unwrap();
        let mut ids = txn.open_table(MUTATION_IDS).unwrap();
        for (seq, id) in [(1, "m1"), (2, "m2")] {
            let value = MutationValue::from_queued(&mutation("c1", id)).encode_to_vec();
            queue.insert(("c1", seq), value.as_slice()).unwrap();
            ids.insert(("c1", id), seq).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_format_1_store_is_migrated_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncline.redb");
    write_format_1(&path);
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).expect("migrates");
    assert_eq!(
        store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(),
        Enqueued::Done { result: b"legacy-result".to_vec() }
    );
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m2"), 10).unwrap(), Enqueued::Pending { seq: 2 });
    let pending: Vec<_> = store.pending_mutations().unwrap().into_iter().map(|m| m.mutation_id).collect();
    assert_eq!(pending, vec!["m2".to_owned()]);
    assert_eq!(store.capture_position("watch:http://crm").unwrap(), Some(b"resume".to_vec()));
    assert_eq!(store.capture_position("mutation:c1\0m1").unwrap(), None, "moved out of capture positions");
    drop(store);
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(STORE_META).unwrap().get(FORMAT_VERSION_KEY).unwrap().map(|v| v.value());
    assert_eq!(version, Some(FORMAT_VERSION));
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncline.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(STORE_META).unwrap().insert(FORMAT_VERSION_KEY, FORMAT_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(EmbeddedStore::open(&path, EmbeddedOptions::default()), Err(StoreError::Corrupt(_))));
}

#[test]
fn operations_are_stored_as_protocol_numbers_and_an_unknown_one_is_corrupt() {
    for (op, number) in [(MutationOp::Create, 1), (MutationOp::Update, 2), (MutationOp::Delete, 3)] {
        let stored = MutationValue::from_queued(&QueuedMutation { op, ..mutation("c1", "m1") });
        assert_eq!(stored.op, number, "{op:?}");
        assert_eq!(stored.into_queued("c1", 1).unwrap().op, op);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(), Enqueued::Queued { seq: 1 });
    let txn = store.begin_write().unwrap();
    {
        let mut queue = txn.open_table(MUTATIONS).unwrap();
        let value = MutationValue { op: 0, ..MutationValue::from_queued(&mutation("c1", "m1")) }.encode_to_vec();
        queue.insert(("c1", 1), value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    assert!(matches!(store.pending_mutations(), Err(StoreError::Corrupt(_))));
}
