//! Page builders of the sync engine: net effect of a log run, log and snapshot pages.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use syncline_proto::v1::{ServerFrame, server_frame};
use syncline_push::codec::EncodedFrame;
use syncline_server::storage::{Change, EncodedSnapshotPage, LogPage, PartitionState, SnapshotPage};
use syncline_server::sync::pages::{log_changes, net_effect, snapshot_frame};

use crate::fixtures;

/// Changes or records per page: a large catch-up page.
const PAGE_ITEMS: u64 = 500;

/// Distinct ids among the changes of the net-effect run: each id changes 2.5 times on average.
const NET_EFFECT_IDS: u64 = 200;

/// Returns `PAGE_ITEMS` log changes over `NET_EFFECT_IDS` ids, every fifth a delete.
fn changes_with_repeats() -> Vec<Change> {
    (1..=PAGE_ITEMS)
        .map(|seq| {
            let n = seq % NET_EFFECT_IDS;
            if seq.is_multiple_of(5) {
                Change::Delete { id: fixtures::record(n).id, seq }
            } else {
                Change::Upsert(syncline_proto::v1::Record { version: seq, ..fixtures::record(n) })
            }
        })
        .collect()
}

fn state() -> PartitionState {
    PartitionState { head: PAGE_ITEMS, horizon: 0, total: PAGE_ITEMS, checksum: 0x1234_5678_9abc_def0 }
}

fn encode(changes: syncline_proto::v1::Changes) -> std::sync::Arc<EncodedFrame> {
    EncodedFrame::new(ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) })
}

fn pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("pages");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(PAGE_ITEMS));
    let partition = fixtures::partition();

    let repeated = changes_with_repeats();
    group.bench_function(BenchmarkId::new("net_effect", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| net_effect(black_box(&repeated)));
    });

    // Outputs are dropped outside the measurement (`iter_with_large_drop`, `iter_batched`).
    // A log page of distinct upserts: net effect keeps (and clones) every record.
    let log = LogPage {
        changes: fixtures::versioned_records(PAGE_ITEMS).into_iter().map(Change::Upsert).collect(),
        covered_to: PAGE_ITEMS,
        state: state(),
    };
    group.bench_function(BenchmarkId::new("log_page", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| log_changes(&partition, 0, black_box(&log), 1, 0));
    });
    group.bench_function(BenchmarkId::new("log_page_encoded", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| encode(log_changes(&partition, 0, black_box(&log), 1, 0)));
    });

    // A snapshot page from decoded records (what a backend without stored encodings does:
    // the records encoded into the page, then the frame spliced), and from a page the
    // embedded store returns already encoded (the frame spliced around its bytes).
    let snapshot = SnapshotPage { records: fixtures::versioned_records(PAGE_ITEMS), done: false, state: state() };
    group.bench_function(BenchmarkId::new("snapshot_page_from_records", PAGE_ITEMS), |b| {
        b.iter_batched(
            || snapshot.clone(),
            |snapshot| snapshot_frame(&partition, PAGE_ITEMS, &EncodedSnapshotPage::from_page(snapshot), 1, true, 3),
            BatchSize::SmallInput,
        );
    });
    let encoded = EncodedSnapshotPage::from_page(snapshot.clone());
    group.bench_function(BenchmarkId::new("snapshot_page_spliced", PAGE_ITEMS), |b| {
        b.iter_with_large_drop(|| snapshot_frame(&partition, PAGE_ITEMS, black_box(&encoded), 1, true, 3));
    });
    group.finish();
}

criterion_group!(benches, pages);
