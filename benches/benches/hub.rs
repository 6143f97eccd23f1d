//! Subscription hub: encode-once fan-out of one published frame to many live subscribers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use syncline_proto::v1::{Changes, ServerFrame, server_frame};
use syncline_push::codec::EncodedFrame;
use syncline_push::hub::{Hub, Subscription};
use syncline_push::outbox::{Outbox, Outgoing};
use syncline_server::config::DEFAULT_OUTBOUND_QUEUE;
use syncline_server::storage::PartitionName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fixtures;

/// Live subscribers of the one partition published to: a busy shared (`app`) partition.
const SUBSCRIBERS: [u64; 2] = [1_000, 10_000];

/// A live `Changes` frame of one record in `key`.
fn one_record_frame(key: &PartitionName) -> Arc<EncodedFrame> {
    EncodedFrame::new(ServerFrame {
        msg: Some(server_frame::Msg::Changes(Changes {
            source: key.source.clone(),
            key: key.key.clone(),
            upserts: vec![fixtures::record(1)],
            ..Changes::default()
        })),
    })
}

/// Subscribes `count` live subscribers to `key`; returns their subscriptions and queues.
fn live_subscribers(
    hub: &Arc<Hub<PartitionName>>,
    key: &PartitionName,
    count: u64,
) -> (Vec<Subscription<PartitionName>>, Vec<mpsc::Receiver<Outgoing>>) {
    let mut subscriptions = Vec::new();
    let mut queues = Vec::new();
    for _ in 0..count {
        let (outbox, queue) = Outbox::for_test(DEFAULT_OUTBOUND_QUEUE);
        let subscription = hub.subscribe(key.clone(), outbox);
        assert!(subscription.go_live(0));
        subscriptions.push(subscription);
        queues.push(queue);
    }
    (subscriptions, queues)
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub/publish");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let key: PartitionName = fixtures::partition();
    let frame = one_record_frame(&key);
    for subscribers in SUBSCRIBERS {
        let hub = Hub::<PartitionName>::new();
        let (subscriptions, mut queues) = live_subscribers(&hub, &key, subscribers);
        // Each publish covers the next sequence, as committed batches do.
        let mut seq = 0u64;
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    seq += 1;
                    let start = Instant::now();
                    let outcome = hub.publish(black_box(&key), seq, seq, &frame);
                    measured += start.elapsed();
                    assert_eq!(outcome.delivered as u64, subscribers, "every subscriber stays live");
                    // Sessions drain their queues between publishes; not measured.
                    for queue in &mut queues {
                        while queue.try_recv().is_ok() {}
                    }
                }
                measured
            });
        });
        drop(subscriptions);
    }
    group.finish();
}

/// The same fan-out with the server's setup: one sweeper task per runtime worker (two
/// here), measured from `publish` until every subscriber's queue holds the frame.
fn publish_with_sweepers(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub/publish_sweepers");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let key: PartitionName = fixtures::partition();
    let frame = one_record_frame(&key);
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    for subscribers in SUBSCRIBERS {
        let hub = runtime
            .block_on(async { Hub::<PartitionName>::with_sweepers(2, Duration::ZERO, &tracker, shutdown.clone()) });
        let (subscriptions, mut queues) = live_subscribers(&hub, &key, subscribers);
        let mut seq = 0u64;
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    seq += 1;
                    let target = hub.stats().delivered.load(std::sync::atomic::Ordering::Acquire) + subscribers;
                    let start = Instant::now();
                    hub.publish(black_box(&key), seq, seq, &frame);
                    // Bounded: the sweepers queue to every subscriber or the run is broken.
                    let deadline = start + Duration::from_secs(10);
                    while hub.stats().delivered.load(std::sync::atomic::Ordering::Acquire) < target {
                        assert!(Instant::now() < deadline, "the sweepers did not deliver within 10 s");
                        std::thread::yield_now();
                    }
                    measured += start.elapsed();
                    for queue in &mut queues {
                        while queue.try_recv().is_ok() {}
                    }
                }
                measured
            });
        });
        drop(subscriptions);
    }
    shutdown.cancel();
    group.finish();
}

criterion_group!(benches, publish, publish_with_sweepers);
