//! Embedded store (redb): durable ingest through `apply_batch` (fsync per group commit) and
//! catch-up reads of the log and of the live records; the same reads from the Redis store.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, measurement::WallTime,
};
use syncline_server::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use syncline_server::storage::redis::{RedisOptions, RedisStore};
use syncline_server::storage::{PageLimit, PartitionName, PartitionStore, StoreStats};
use syncline_server::test_util::redis_server::RedisServer;
use tempfile::TempDir;

use crate::fixtures;

/// Records per `apply_batch` call: one interactive change, a typical backend batch, a bulk load.
const BATCH_SIZES: [u64; 3] = [1, 100, 1_000];

/// Threads ingesting single-record batches at once; their batches share fsyncs (group commit).
const CONCURRENT_WRITERS: u64 = 8;

/// Records per catch-up page read.
const PAGE_ITEMS: usize = 500;

/// Records in the partition the read benches page through (so a page is not the whole log).
const READ_PARTITION_RECORDS: u64 = 2_000;

/// Returns a fresh store in its own temporary directory (removed when the `TempDir` drops).
fn open_store() -> (EmbeddedStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), EmbeddedOptions::default()).expect("store opens");
    (store, dir)
}

/// Fsync-bound benches: few samples and a short measurement so the whole run stays short.
fn configure_durable(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/apply_batch");
    configure_durable(&mut group);
    let partition = fixtures::partition();
    for batch in BATCH_SIZES {
        let (store, _dir) = open_store();
        // Fresh ids every batch, so every upsert takes a sequence number (none is a no-op).
        let mut next_id = 0u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_batched(
                || {
                    next_id += batch;
                    fixtures::records(next_id - batch, batch)
                },
                |upserts| store.apply_batch(&partition, upserts, Vec::new()).expect("batch commits"),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn concurrent_ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/apply_batch_concurrent");
    configure_durable(&mut group);
    let (store, _dir) = open_store();
    let partitions: Vec<PartitionName> =
        (0..CONCURRENT_WRITERS).map(|writer| PartitionName::new("Account", format!("user-{writer}"))).collect();
    let mut next_id = 0u64;
    let before = store.write_stats();
    // One iteration: each writer thread commits one single-record batch.
    group.throughput(Throughput::Elements(CONCURRENT_WRITERS));
    group.bench_function(BenchmarkId::new("threads_x_batch_1", CONCURRENT_WRITERS), |b| {
        b.iter_custom(|iters| {
            let start_line = Barrier::new(CONCURRENT_WRITERS as usize + 1);
            std::thread::scope(|scope| {
                let writers: Vec<_> = partitions
                    .iter()
                    .map(|partition| {
                        let upserts = fixtures::records(next_id, iters);
                        next_id += iters;
                        let (store, start_line) = (&store, &start_line);
                        scope.spawn(move || {
                            start_line.wait();
                            for record in upserts {
                                store.apply_batch(partition, vec![record], Vec::new()).expect("batch commits");
                            }
                        })
                    })
                    .collect();
                start_line.wait();
                let start = Instant::now();
                for writer in writers {
                    writer.join().expect("writer thread");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    let after = store.write_stats();
    let batches = after.answered_batches - before.answered_batches;
    let commits = after.commits - before.commits;
    eprintln!(
        "store/apply_batch_concurrent: {batches} batches in {commits} commits ({:.2} batches per fsync)",
        batches as f64 / commits.max(1) as f64
    );
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/read");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    let (store, _dir) = open_store();
    read_pages(&mut group, &store);
    group.finish();
}

/// The same pages from the Redis store, on a private `redis-server` (AOF, `appendfsync
/// always`, as the store requires) on a loopback port: each page is a script call or more.
fn redis_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/read_redis");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let server = RedisServer::start();
    let store = RedisStore::open(&RedisOptions::single(server.url()), None).expect("the Redis store opens");
    read_pages(&mut group, &store);
    group.finish();
}

/// Seeds a partition of [`READ_PARTITION_RECORDS`] and benches reading one page of its log,
/// of its records decoded, and of its records as the bytes catch-up frames are spliced from.
fn read_pages(group: &mut BenchmarkGroup<'_, WallTime>, store: &impl PartitionStore) {
    let partition = fixtures::partition();
    for first in (0..READ_PARTITION_RECORDS).step_by(1_000) {
        store.apply_batch(&partition, fixtures::records(first, 1_000), Vec::new()).expect("seed batch commits");
    }
    // Pages from the middle of the partition, as a device catching up mid-way reads them.
    let after_seq = READ_PARTITION_RECORDS / 2;
    let after_id = fixtures::record(READ_PARTITION_RECORDS / 2).id;
    group.throughput(Throughput::Elements(PAGE_ITEMS as u64));
    group.bench_function(BenchmarkId::new("read_log", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| {
            let page =
                store.read_log(&partition, black_box(after_seq), PageLimit::items(PAGE_ITEMS)).expect("log page");
            assert_eq!(page.changes.len(), PAGE_ITEMS);
            page
        });
    });
    group.bench_function(BenchmarkId::new("read_snapshot", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| {
            let page = store
                .read_snapshot(&partition, Some(black_box(&after_id)), PageLimit::items(PAGE_ITEMS))
                .expect("snapshot page");
            assert_eq!(page.records.len(), PAGE_ITEMS);
            page
        });
    });
    group.bench_function(BenchmarkId::new("read_snapshot_encoded", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| {
            let page = store
                .read_snapshot_encoded(&partition, Some(black_box(&after_id)), PageLimit::items(PAGE_ITEMS))
                .expect("snapshot page");
            assert_eq!(page.count, PAGE_ITEMS);
            page
        });
    });
}

criterion_group!(benches, ingest, concurrent_ingest, reads, redis_reads);
