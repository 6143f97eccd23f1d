//! Tests of the Redis store beyond the shared contract (`storage::contract`): several
//! stores writing one partition, equality with the embedded store, durability checks and
//! failures of the server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use syncline_proto::v1::{Record, Value};

use super::{RedisOptions, RedisStore};
use crate::error::ErrorClass;
use crate::storage::contract::support::{RecordingListener, recomputed, snapshot};
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::{CommitListener, PageLimit, PartitionName, PartitionStore, Store, StoreError, StoreStats};
use crate::test_util::redis_server::RedisServer;

fn record(id: &str, value: i64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(value))]), version: 0 }
}

fn open(server: &RedisServer, listener: Option<Arc<dyn CommitListener>>) -> RedisStore {
    RedisStore::open(&RedisOptions::single(server.url()), listener).expect("open")
}

#[test]
fn two_stores_writing_one_partition_take_unique_gap_free_sequences() {
    const THREADS_PER_STORE: usize = 3;
    const BATCHES_PER_THREAD: usize = 30;
    let server = RedisServer::start();
    let listeners = [Arc::new(RecordingListener::default()), Arc::new(RecordingListener::default())];
    let stores: Vec<Arc<RedisStore>> =
        listeners.iter().map(|listener| Arc::new(open(&server, Some(listener.clone())))).collect();
    let name = PartitionName::new("Account", "shared");
    let handles: Vec<_> = (0..THREADS_PER_STORE * stores.len())
        .map(|thread| {
            let store = Arc::clone(&stores[thread % stores.len()]);
            let name = name.clone();
            std::thread::spawn(move || {
                (0..BATCHES_PER_THREAD)
                    .map(|i| {
                        // Every thread also rewrites one shared record, so batches conflict.
                        let records =
                            vec![record(&format!("t{thread}-{i}"), 1), record("shared", (thread * 1000 + i) as i64)];
                        let batch = store.apply_batch(&name, records, Vec::new()).expect("batch");
                        (batch.first_seq, batch.last_seq, batch.changes.len())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ranges: Vec<(u64, u64, usize)> =
        handles.into_iter().flat_map(|handle| handle.join().expect("thread")).collect();
    ranges.sort_unstable();
    let mut next = 1;
    for (first, last, changes) in &ranges {
        assert_eq!(*first, next, "sequences tile 1..=head without gap or reuse: {ranges:?}");
        assert_eq!(last - first + 1, *changes as u64);
        next = last + 1;
    }
    let state = stores[0].partition_state(&name).expect("state");
    assert_eq!(state.head, next - 1);
    let records = snapshot(stores[1].as_ref(), &name, 50);
    assert_eq!(recomputed(&records), (state.total, state.checksum));
    // Each store's listener saw its own batches in sequence order.
    for listener in &listeners {
        let seen = listener.batches.lock().expect("lock");
        assert_eq!(seen.len(), THREADS_PER_STORE * BATCHES_PER_THREAD);
        assert!(seen.windows(2).all(|pair| pair[0].2 < pair[1].1), "listener order");
    }
}

#[test]
fn the_same_writes_give_the_embedded_store_state_and_log() {
    let server = RedisServer::start();
    let redis = open(&server, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).expect("open");
    let stores: [&dyn Store; 2] = [&redis, &embedded];
    // Names that would break a hash tag or a separator if they were not encoded.
    let name = PartitionName::new("Acc{ou}nt", "a:b}");
    for store in stores {
        store.apply_batch(&name, (0..20).map(|i| record(&format!("r{i}"), i)).collect(), Vec::new()).expect("batch");
        store
            .apply_batch(&name, vec![record("r3", 99), record("r4", 4)], vec!["r5".into(), "nope".into()])
            .expect("batch");
        store.apply_batch(&name, vec![record("{x}", 1)], vec!["r6".into()]).expect("batch");
        store.compact(&name, 3).expect("compact");
    }
    assert_eq!(redis.partition_state(&name).expect("state"), embedded.partition_state(&name).expect("state"));
    let log = |store: &dyn Store| store.read_log(&name, 0, PageLimit::unbounded()).expect("log").changes;
    assert_eq!(log(&redis), log(&embedded));
    assert_eq!(snapshot(&redis, &name, 7), snapshot(&embedded, &name, 7));
    assert_eq!(redis.partitions().expect("partitions"), vec![name]);
}

#[test]
fn a_server_that_may_lose_writes_is_refused_unless_volatile_is_allowed() {
    let server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let options = RedisOptions::single(server.url());
    let Err(StoreError::NotDurable { detail }) = RedisStore::open(&options, None) else {
        panic!("everysec is not durable");
    };
    assert!(detail.contains("appendfsync always") && detail.contains("store.allow_volatile"), "{detail}");
    let volatile = RedisOptions { allow_volatile: true, ..options.clone() };
    let store = RedisStore::open(&volatile, None).expect("volatile allowed");
    store.apply_batch(&PartitionName::new("A", "b"), vec![record("x", 1)], Vec::new()).expect("write");
}

#[test]
fn writes_wait_for_replicas_and_fail_unavailable_without_them() {
    let server = RedisServer::start_with(&["--appendonly", "no"]);
    let options = RedisOptions {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(50),
        ..RedisOptions::single(server.url())
    };
    let store = RedisStore::open(&options, None).expect("replicas make it durable");
    let error = store.apply_batch(&PartitionName::new("A", "b"), vec![record("x", 1)], Vec::new()).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    assert!(error.to_string().contains("0 of 1"), "{error}");
}

#[test]
fn a_server_that_goes_away_makes_the_store_unavailable_not_panic() {
    let server = RedisServer::start();
    let store = open(&server, None);
    let name = PartitionName::new("A", "b");
    store.apply_batch(&name, vec![record("x", 1)], Vec::new()).expect("write");
    let url = server.url();
    drop(server);
    let error = store.apply_batch(&name, vec![record("y", 1)], Vec::new()).unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    assert_eq!(store.partition_state(&name).unwrap_err().class(), ErrorClass::Unavailable);
    assert_eq!(store.write_stats().submitted_batches, store.write_stats().answered_batches);
    let Err(error) = RedisStore::open(&RedisOptions::single(url), None) else { panic!("nothing listens") };
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
}

#[test]
fn a_batch_of_the_most_changes_is_one_script() {
    let server = RedisServer::start();
    let store = open(&server, None);
    let name = PartitionName::new("Account", "big");
    let records: Vec<Record> = (0..crate::storage::MAX_BATCH_CHANGES).map(|i| record(&format!("r{i:05}"), 1)).collect();
    let batch = store.apply_batch(&name, records, Vec::new()).expect("upserts");
    assert_eq!(batch.last_seq, crate::storage::MAX_BATCH_CHANGES as u64);
    let ids: Vec<String> = (0..crate::storage::MAX_BATCH_CHANGES).map(|i| format!("r{i:05}")).collect();
    let batch = store.apply_batch(&name, Vec::new(), ids).expect("deletes");
    assert_eq!(batch.changes.len(), crate::storage::MAX_BATCH_CHANGES);
    let state = store.partition_state(&name).expect("state");
    assert_eq!((state.head, state.total, state.checksum), (2 * crate::storage::MAX_BATCH_CHANGES as u64, 0, 0));
    assert_eq!(store.write_stats().commits, 2);
}

/// Writes queued behind a held partition lock are committed by the next holder as one
/// script, with exactly the sequences, log, records, total and checksum that committing them
/// one by one (on the embedded store) gives, each caller answered with its own range.
#[test]
fn writes_queued_behind_the_lock_commit_as_one_script_as_if_one_by_one() {
    const WRITERS: usize = 12;
    let server = RedisServer::start();
    let listener = Arc::new(RecordingListener::default());
    let store = Arc::new(open(&server, Some(listener.clone())));
    let name = PartitionName::new("Account", "grouped");
    let seed = || (0..10).map(|i| record(&format!("r{i}"), i)).collect::<Vec<_>>();
    store.apply_batch(&name, seed(), Vec::new()).expect("seed");
    // Each writer creates its own record, rewrites a shared one, leaves r0 as it is (no
    // sequence), deletes a seeded record (some twice: the second delete takes no sequence),
    // and the later ones re-create a seeded record another writer may delete.
    let writes: Vec<(Vec<Record>, Vec<String>)> = (0..WRITERS)
        .map(|w| {
            let mut upserts = vec![record(&format!("w{w}"), w as i64), record("shared", w as i64), record("r0", 0)];
            if w >= 6 {
                upserts.push(record(&format!("r{}", (w - 6) % 9 + 1), 100 + w as i64));
            }
            (upserts, vec![format!("r{}", w % 9 + 1)])
        })
        .chain(std::iter::once((vec![record("r0", 0)], Vec::new())))
        .collect();

    let lock = store.partition_lock(&name).lock();
    let commits_before = store.write_stats().commits;
    let handles: Vec<_> = writes
        .iter()
        .cloned()
        .map(|(upserts, deletes)| {
            let (store, name) = (Arc::clone(&store), name.clone());
            std::thread::spawn(move || store.apply_batch(&name, upserts, deletes).expect("grouped write"))
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.queued_writes(&name) < writes.len() {
        assert!(std::time::Instant::now() < deadline, "the writers queue behind the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(lock);
    let answers: Vec<_> = handles.into_iter().map(|handle| handle.join().expect("writer")).collect();
    assert_eq!(store.write_stats().commits - commits_before, 1, "one script for every queued write");

    // The same writes one by one on the embedded store, in the order the group gave them.
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).expect("open");
    embedded.apply_batch(&name, seed(), Vec::new()).expect("seed");
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|&at| (answers[at].first_seq == 0, answers[at].first_seq));
    for at in order {
        let (upserts, deletes) = writes[at].clone();
        let alone = embedded.apply_batch(&name, upserts, deletes).expect("embedded write");
        let grouped = &answers[at];
        assert_eq!(
            (grouped.first_seq, grouped.last_seq, &grouped.changes),
            (alone.first_seq, alone.last_seq, &alone.changes),
            "write {at}"
        );
    }
    assert_eq!(answers[WRITERS].first_seq, 0, "the write that changed nothing took no sequence");
    assert_eq!(store.partition_state(&name).expect("state"), embedded.partition_state(&name).expect("state"));
    let log = |store: &dyn Store| store.read_log(&name, 0, PageLimit::unbounded()).expect("log").changes;
    assert_eq!(log(store.as_ref()), log(&embedded));
    assert_eq!(snapshot(store.as_ref(), &name, 7), snapshot(&embedded, &name, 7));
    let seen = listener.batches.lock().expect("lock");
    assert!(seen.windows(2).all(|pair| pair[0].2 + 1 == pair[1].1), "the listener saw gap-free order: {seen:?}");
}

/// A group whose script cannot reach Redis fails each of its writes with the store's typed
/// error (UNAVAILABLE), never a panic or a write left without an answer.
#[test]
fn a_group_that_cannot_reach_redis_fails_each_write_unavailable() {
    const WRITERS: usize = 4;
    let server = RedisServer::start();
    let store = Arc::new(open(&server, None));
    let name = PartitionName::new("Account", "grouped");
    store.apply_batch(&name, vec![record("seed", 1)], Vec::new()).expect("seed");
    let lock = store.partition_lock(&name).lock();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, name) = (Arc::clone(&store), name.clone());
            std::thread::spawn(move || store.apply_batch(&name, vec![record(&format!("w{w}"), 1)], Vec::new()))
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.queued_writes(&name) < WRITERS {
        assert!(std::time::Instant::now() < deadline, "the writers queue behind the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(server);
    drop(lock);
    for handle in handles {
        let error = handle.join().expect("writer").expect_err("Redis is gone");
        assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    }
    let stats = store.write_stats();
    assert_eq!(stats.submitted_batches, stats.answered_batches);
}
