//! Hub tests: inline fan-out, sweeper tasks (on tokio's paused clock where timing matters)
//! and a proptest of what a device sees across demotions and catch-ups.

use futures_util::FutureExt as _;
use syncline_proto::v1::ServerFrame;

use super::*;

fn frame() -> Arc<EncodedFrame> {
    EncodedFrame::new(ServerFrame::default())
}

#[test]
fn live_subscribers_get_frames_in_order_and_catching_up_ones_do_not() {
    let hub = Hub::<u64>::new();
    let (live_box, mut live_rx) = Outbox::for_test(8);
    let (slow_box, mut slow_rx) = Outbox::for_test(8);
    let live = hub.subscribe(1, live_box);
    let _catching_up = hub.subscribe(1, slow_box);
    assert!(live.go_live(0));
    assert_eq!(hub.publish(&1, 1, 2, &frame()).delivered, 1);
    assert_eq!(hub.publish(&1, 3, 3, &frame()).delivered, 1);
    assert_eq!(live_rx.len(), 2);
    assert_eq!(slow_rx.len(), 0);
    drop(live_rx.try_recv());
    drop(slow_rx.try_recv());
}

#[test]
fn go_live_fails_when_something_was_published_past_the_read_point() {
    let hub = Hub::<u64>::new();
    let (outbox, _rx) = Outbox::for_test(8);
    let sub = hub.subscribe(7, outbox);
    hub.publish(&7, 1, 5, &frame());
    assert!(!sub.go_live(4), "sequence 5 was published but not read");
    assert!(sub.go_live(5));
    assert_eq!(hub.publish(&7, 6, 6, &frame()).delivered, 1);
}

#[test]
fn full_queue_demotes_and_flags_the_subscription() {
    let hub = Hub::<u64>::new();
    let (outbox, rx) = Outbox::for_test(2);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    hub.publish(&1, 1, 1, &frame());
    hub.publish(&1, 2, 2, &frame());
    let third = hub.publish(&1, 3, 3, &frame());
    assert_eq!(third.demoted, 1);
    assert_eq!(sub.take_demoted(), Some(2), "frames up to 2 were queued");
    assert_eq!(sub.take_demoted(), None, "the flag is taken once");
    // Demoted: later frames are not queued until the session goes live again.
    assert_eq!(hub.publish(&1, 4, 4, &frame()).delivered, 0);
    assert_eq!(rx.len(), 2);
}

#[test]
fn the_lag_census_counts_subscriptions_behind_their_head_by_acked_cursor() {
    let hub = Hub::<u64>::new();
    let (a_box, _a_rx) = Outbox::for_test(8);
    let (b_box, _b_rx) = Outbox::for_test(8);
    let (c_box, _c_rx) = Outbox::for_test(8);
    let a = hub.subscribe(1, a_box);
    let b = hub.subscribe(1, b_box);
    let c = hub.subscribe(2, c_box);
    // Partition 1's head as read from the store at subscribe; partition 2's from a publish.
    a.head_read(500);
    b.head_read(400);
    a.acked(450);
    b.acked(100);
    hub.publish(&2, 1, 300, &frame());
    c.acked(250);
    assert_eq!(hub.lag_census(100), LagCensus { subscriptions: 3, behind: 1 }, "b is 400 behind");
    assert_eq!(hub.lag_census(10), LagCensus { subscriptions: 3, behind: 3 });
    b.acked(50);
    b.acked(495);
    assert_eq!(hub.lag_census(10), LagCensus { subscriptions: 3, behind: 2 }, "acks only move forward: a and c");
    drop(c);
    assert_eq!(hub.lag_census(0), LagCensus { subscriptions: 2, behind: 2 });
}

#[test]
fn a_queue_past_its_byte_bound_demotes() {
    use syncline_proto::v1::{Changes, Record, server_frame};
    let large = |seq: u64| {
        EncodedFrame::new(ServerFrame {
            msg: Some(server_frame::Msg::Changes(Changes {
                from: seq,
                to: seq,
                upserts: vec![Record { id: "x".repeat(1000), ..Default::default() }],
                ..Default::default()
            })),
        })
    };
    let frame_bytes = large(1).encoded_len();
    let hub = Hub::<u64>::new();
    // Room for two of them by bytes, far more by count.
    let (outbox, rx) = Outbox::for_test_with_bytes(64, frame_bytes * 2 + frame_bytes / 2);
    let sub = hub.subscribe(1, outbox.clone());
    assert!(sub.go_live(0));
    assert_eq!(hub.publish(&1, 1, 1, &large(1)).delivered, 1);
    assert_eq!(hub.publish(&1, 2, 2, &large(2)).delivered, 1);
    assert_eq!(outbox.queued_bytes(), frame_bytes * 2);
    assert_eq!(hub.publish(&1, 3, 3, &large(3)).demoted, 1, "a third would pass the byte bound");
    assert_eq!(sub.take_demoted(), Some(2));
    assert_eq!(rx.len(), 2);
    assert_eq!(outbox.queued_bytes(), frame_bytes * 2, "the refused frame is not counted");
}

#[test]
fn one_frame_larger_than_the_byte_bound_is_queued_when_nothing_else_is() {
    let hub = Hub::<u64>::new();
    let (outbox, rx) = Outbox::for_test_with_bytes(8, 1);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    assert_eq!(hub.publish(&1, 1, 1, &changes_frame(1, 1)).delivered, 1);
    assert_eq!(hub.publish(&1, 2, 2, &changes_frame(2, 2)).demoted, 1);
    assert_eq!(rx.len(), 1);
}

#[test]
fn a_gap_demotes_instead_of_delivering_out_of_order() {
    let hub = Hub::<u64>::new();
    let (outbox, rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    assert_eq!(hub.publish(&1, 2, 2, &frame()).demoted, 1);
    assert_eq!(sub.take_demoted(), Some(0));
    assert_eq!(rx.len(), 0);
}

#[test]
fn dropping_the_subscription_unsubscribes() {
    let hub = Hub::<u64>::new();
    let (outbox, _rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert_eq!(hub.subscriber_count(&1), 1);
    drop(sub);
    assert_eq!(hub.subscriber_count(&1), 0);
}

fn changes_frame(from: u64, to: u64) -> Arc<EncodedFrame> {
    use syncline_proto::v1::{Changes, server_frame};
    EncodedFrame::new(ServerFrame { msg: Some(server_frame::Msg::Changes(Changes { from, to, ..Default::default() })) })
}

fn range_of(outgoing: Outgoing) -> (u64, u64) {
    use syncline_proto::v1::server_frame;
    let Outgoing::Frame(frame) = outgoing else { panic!("only frames are published") };
    match &frame.frame().msg {
        Some(server_frame::Msg::Changes(changes)) => (changes.from, changes.to),
        other => panic!("unexpected frame {other:?}"),
    }
}

/// What runs and stops a test hub's sweeper tasks.
struct Sweepers {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Sweepers {
    /// Fires the shutdown token and waits until every sweeper has ended.
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Returns a hub with `shards` sweeper tasks whose queues hold `queue_frames`.
fn sweeping(shards: usize, push_interval: Duration, queue_frames: usize) -> (Arc<Hub<u64>>, Sweepers) {
    let sweepers = Sweepers { tracker: TaskTracker::new(), shutdown: CancellationToken::new() };
    let hub =
        Hub::with_sweeper_queues(shards, push_interval, queue_frames, &sweepers.tracker, sweepers.shutdown.clone());
    (hub, sweepers)
}

/// Returns true (once) if `outbox`'s session was woken and has not handled it yet.
fn was_woken(outbox: &Outbox) -> bool {
    outbox.shared.reader_wake.notified().now_or_never().is_some()
}

/// The current-thread runtime runs a sweeper only when the test awaits: everything published
/// before that sits in its queue.
#[tokio::test]
async fn a_full_sweeper_queue_demotes_the_live_subscribers_that_expect_the_frame() {
    let (hub, sweepers) = sweeping(1, Duration::ZERO, 2);
    let (expecting, mut expecting_rx) = Outbox::for_test(8);
    let (ahead, mut ahead_rx) = Outbox::for_test(8);
    let (catching_up, catching_up_rx) = Outbox::for_test(8);
    let expecting_sub = hub.subscribe(1, expecting.clone());
    let ahead_sub = hub.subscribe(1, ahead.clone());
    let _catching_up_sub = hub.subscribe(1, catching_up.clone());
    assert!(expecting_sub.go_live(0));
    // Read 1..=3 from the store before the hub saw them: live from 4.
    assert!(ahead_sub.go_live(3));

    assert_eq!(hub.publish(&1, 1, 1, &changes_frame(1, 1)).dispatched, 1);
    assert_eq!(hub.publish(&1, 2, 2, &changes_frame(2, 2)).dispatched, 1);
    let refused = hub.publish(&1, 3, 3, &changes_frame(3, 3));
    assert_eq!(refused, PublishOutcome { delivered: 0, demoted: 1, dispatched: 0 }, "the queue holds two");
    assert_eq!(hub.stats().sweeps_refused.load(Ordering::Relaxed), 1);
    assert_eq!(expecting_sub.take_demoted(), Some(0), "nothing was queued to it yet");
    assert!(was_woken(&expecting), "its session is told to catch up");
    assert_eq!(ahead_sub.take_demoted(), None, "it does not need the frame");
    assert!(!was_woken(&ahead) && !was_woken(&catching_up));

    // The sweeper sweeps what it holds: the demoted subscriber gets none of it, the one
    // ahead none either (it has all three).
    tokio::task::yield_now().await;
    assert!(expecting_rx.try_recv().is_err() && ahead_rx.try_recv().is_err() && catching_up_rx.is_empty());
    // Caught up from the log, it goes live again and gets what follows.
    assert!(expecting_sub.go_live(3));
    assert_eq!(hub.publish(&1, 4, 4, &changes_frame(4, 4)).dispatched, 1, "the queue has room again");
    tokio::task::yield_now().await;
    assert_eq!(range_of(expecting_rx.try_recv().unwrap()), (4, 4));
    assert_eq!(range_of(ahead_rx.try_recv().unwrap()), (4, 4));
    sweepers.stop().await;
}

#[tokio::test]
async fn shutdown_stops_the_sweepers_after_they_sweep_what_they_were_handed() {
    let (hub, sweepers) = sweeping(2, Duration::ZERO, SWEEP_QUEUE_FRAMES);
    let (outbox, mut rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    hub.publish(&1, 1, 1, &changes_frame(1, 1));
    sweepers.stop().await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (1, 1), "queued before shutdown, swept before the end");
    assert_eq!(hub.publish(&1, 2, 2, &changes_frame(2, 2)).dispatched, 0, "nobody sweeps after shutdown");
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn shutdown_sweeps_what_a_push_interval_holds() {
    let (hub, sweepers) = sweeping(1, Duration::from_secs(3600), SWEEP_QUEUE_FRAMES);
    let (outbox, mut rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    hub.publish(&1, 1, 1, &changes_frame(1, 1));
    tokio::task::yield_now().await;
    hub.publish(&1, 2, 2, &changes_frame(2, 2));
    tokio::task::yield_now().await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (1, 1));
    assert!(rx.try_recv().is_err(), "the second is held for the interval");
    sweepers.stop().await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (2, 2), "delivered at shutdown");
}

#[tokio::test]
async fn sweepers_end_when_the_hub_is_dropped() {
    let (hub, sweepers) = sweeping(2, Duration::from_millis(10), SWEEP_QUEUE_FRAMES);
    drop(hub);
    sweepers.tracker.close();
    tokio::time::timeout(Duration::from_secs(10), sweepers.tracker.wait()).await.expect("the sweepers end");
}

/// A push interval holds at most a queue's bound of frames: with that many held, the sweeper
/// sweeps them at once instead of letting its queue fill.
#[tokio::test(start_paused = true)]
async fn a_push_interval_holds_no_more_than_the_queue_bound() {
    const BOUND: u64 = 4;
    let (hub, sweepers) = sweeping(1, Duration::from_secs(3600), BOUND as usize);
    let (outbox, mut rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(0));
    hub.publish(&1, 1, 1, &changes_frame(1, 1));
    tokio::task::yield_now().await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (1, 1), "a lone frame goes at once");
    for seq in 2..=BOUND + 1 {
        assert_eq!(hub.publish(&1, seq, seq, &changes_frame(seq, seq)).dispatched, 1);
    }
    tokio::task::yield_now().await;
    let received: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(range_of).collect();
    assert_eq!(received, (2..=BOUND + 1).map(|seq| (seq, seq)).collect::<Vec<_>>(), "swept long before the interval");
    assert_eq!(hub.stats().sweeps_refused.load(Ordering::Relaxed), 0);
    sweepers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_deliver_every_frame_in_order_to_every_shard() {
    const SUBSCRIBERS: usize = 50;
    const FRAMES: u64 = 40;
    let (hub, _sweepers) = sweeping(2, Duration::ZERO, SWEEP_QUEUE_FRAMES);
    let mut queues = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (outbox, rx) = Outbox::for_test(FRAMES as usize);
        let subscription = hub.subscribe(1, outbox);
        assert!(subscription.go_live(0));
        subscriptions.push(subscription);
        queues.push(rx);
    }
    for seq in 1..=FRAMES {
        let outcome = hub.publish(&1, seq, seq, &changes_frame(seq, seq));
        assert_eq!(outcome.dispatched, 2, "both shards have subscribers");
    }
    for rx in &mut queues {
        for expected in 1..=FRAMES {
            let received = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("every frame is swept")
                .expect("the queue stays open");
            assert_eq!(range_of(received), (expected, expected));
        }
    }
    let delivered = hub.stats().delivered.load(Ordering::Relaxed);
    assert_eq!(delivered, SUBSCRIBERS as u64 * FRAMES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_live_is_refused_after_a_publish_that_sweepers_have_not_handled_yet() {
    let (hub, _sweepers) = sweeping(2, Duration::ZERO, SWEEP_QUEUE_FRAMES);
    let (outbox, mut rx) = Outbox::for_test(8);
    let sub = hub.subscribe(3, outbox);
    // The head is recorded at publish, before any sweeper runs.
    hub.publish(&3, 1, 4, &changes_frame(1, 4));
    assert!(!sub.go_live(3), "sequence 4 was published but not read");
    assert!(sub.go_live(4));
    hub.publish(&3, 5, 5, &changes_frame(5, 5));
    let received = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(range_of(received), (5, 5), "the catching-up subscriber got nothing of 1..=4");
}

/// Paused time: the runtime's clock moves only when every task waits on a timer.
#[tokio::test(start_paused = true)]
async fn a_push_interval_holds_what_follows_a_sweep_and_queues_it_at_once() {
    let interval = Duration::from_millis(50);
    let step = Duration::from_millis(1);
    let (hub, _sweepers) = sweeping(1, interval, SWEEP_QUEUE_FRAMES);
    let (outbox, mut rx) = Outbox::for_test(8);
    let (other_box, mut other_rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    let other = hub.subscribe(2, other_box);
    assert!(sub.go_live(0) && other.go_live(0));

    // A lone frame goes at once.
    hub.publish(&1, 1, 1, &changes_frame(1, 1));
    tokio::time::sleep(step).await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (1, 1));

    // What follows within the interval is held, and goes together when it has passed.
    hub.publish(&1, 2, 2, &changes_frame(2, 2));
    tokio::time::sleep(interval / 2).await;
    hub.publish(&1, 3, 4, &changes_frame(3, 4));
    // Another partition is not held by this one's interval.
    hub.publish(&2, 1, 1, &changes_frame(1, 1));
    tokio::time::sleep(step).await;
    assert_eq!(range_of(other_rx.try_recv().unwrap()), (1, 1));
    assert_eq!(rx.len(), 0, "held until the interval since the first sweep has passed");
    tokio::time::sleep(interval / 2).await;
    assert_eq!(rx.len(), 2, "both held frames are queued by one sweep");
    assert_eq!(range_of(rx.try_recv().unwrap()), (2, 2));
    assert_eq!(range_of(rx.try_recv().unwrap()), (3, 4));
    assert_eq!(hub.stats().delivered.load(Ordering::Relaxed), 4);

    // After a quiet interval the next frame goes at once again.
    tokio::time::sleep(interval * 2).await;
    hub.publish(&1, 5, 5, &changes_frame(5, 5));
    tokio::time::sleep(step).await;
    assert_eq!(range_of(rx.try_recv().unwrap()), (5, 5));
}

/// A sweep of several held frames applies the slow-consumer and order rules frame by
/// frame, to each subscriber.
#[tokio::test(start_paused = true)]
async fn a_held_sweep_demotes_where_a_queue_fills_and_skips_what_a_subscriber_has() {
    let interval = Duration::from_millis(10);
    let (hub, _sweepers) = sweeping(1, interval, SWEEP_QUEUE_FRAMES);
    let (small, mut small_rx) = Outbox::for_test(2);
    let (roomy, mut roomy_rx) = Outbox::for_test(8);
    let (late, mut late_rx) = Outbox::for_test(8);
    let (catching_up, catching_up_rx) = Outbox::for_test(8);
    let small_sub = hub.subscribe(1, small);
    let roomy_sub = hub.subscribe(1, roomy);
    let late_sub = hub.subscribe(1, late);
    let _catching_up_sub = hub.subscribe(1, catching_up);
    assert!(small_sub.go_live(0) && roomy_sub.go_live(0));
    hub.publish(&1, 1, 1, &changes_frame(1, 1));
    hub.publish(&1, 2, 2, &changes_frame(2, 2));
    // Read 1..=2 from the log before the sweep ran: live from 3.
    assert!(late_sub.go_live(2));
    hub.publish(&1, 3, 3, &changes_frame(3, 3));
    tokio::time::sleep(interval * 2).await;

    let ranges =
        |rx: &mut mpsc::Receiver<Outgoing>| std::iter::from_fn(|| rx.try_recv().ok()).map(range_of).collect::<Vec<_>>();
    assert_eq!(ranges(&mut roomy_rx), vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(ranges(&mut small_rx), vec![(1, 1), (2, 2)], "the third did not fit");
    assert_eq!(small_sub.take_demoted(), Some(2));
    assert_eq!(roomy_sub.take_demoted(), None);
    assert_eq!(ranges(&mut late_rx), vec![(3, 3)], "live from 3: only the third");
    assert_eq!(catching_up_rx.len(), 0);
    assert_eq!(hub.stats().demoted.load(Ordering::Relaxed), 1);
}

#[test]
fn an_emptied_partition_is_forgotten_and_a_new_subscriber_starts_afresh() {
    let hub = Hub::<u64>::new();
    let (outbox, _rx) = Outbox::for_test(8);
    let sub = hub.subscribe(9, outbox);
    hub.publish(&9, 1, 3, &frame());
    drop(sub);
    assert!(hub.keys().is_empty());
    let (outbox, _rx) = Outbox::for_test(8);
    let sub = hub.subscribe(9, outbox);
    assert_eq!(hub.keys(), vec![9]);
    // It read the store (up to 3) before going live.
    assert!(sub.go_live(3));
    assert_eq!(hub.publish(&9, 4, 4, &frame()).delivered, 1);
}

proptest::proptest! {
    /// Whatever the interleaving of publishes, queue drains, demotions and catch-ups, the
    /// device's view (frames received, plus log catch-up after a demotion) is gap-free
    /// and never repeats a sequence.
    #[test]
    fn delivered_ranges_are_contiguous(
        steps in proptest::collection::vec((1u64..4, proptest::bool::ANY, proptest::bool::ANY), 1..80),
    ) {
        let hub = Hub::<u64>::new();
        let (outbox, mut rx) = Outbox::for_test(4);
        let sub = hub.subscribe(1, outbox);
        let mut head = 0u64;
        let mut device_cursor = 0u64;
        proptest::prop_assert!(sub.go_live(0));
        for (len, drain, catch_up) in steps {
            let from = head + 1;
            head += len;
            hub.publish(&1, from, head, &changes_frame(from, head));
            if drain {
                while let Ok(outgoing) = rx.try_recv() {
                    let (from, to) = range_of(outgoing);
                    proptest::prop_assert_eq!(from, device_cursor + 1);
                    device_cursor = to;
                }
            }
            if sub.take_demoted().is_some() || catch_up {
                // The session pauses, delivers what is queued, reads the log up to the
                // head and goes live from there.
                sub.pause();
                while let Ok(outgoing) = rx.try_recv() {
                    let (from, to) = range_of(outgoing);
                    proptest::prop_assert_eq!(from, device_cursor + 1);
                    device_cursor = to;
                }
                device_cursor = head;
                proptest::prop_assert!(sub.go_live(device_cursor));
            }
        }
        while let Ok(outgoing) = rx.try_recv() {
            let (from, to) = range_of(outgoing);
            proptest::prop_assert_eq!(from, device_cursor + 1);
            device_cursor = to;
        }
        proptest::prop_assert!(device_cursor <= head);
    }
}

/// Records what a hub tells its key interest, in order.
#[derive(Default)]
struct RecordedInterest {
    events: Mutex<Vec<(u64, bool)>>,
}

impl KeyInterest<u64> for RecordedInterest {
    fn followed(&self, key: &u64) {
        self.events.lock().push((*key, true));
    }

    fn unfollowed(&self, key: &u64) {
        self.events.lock().push((*key, false));
    }
}

#[test]
fn the_key_interest_hears_of_first_and_last_subscribers_only() {
    let hub = Hub::<u64>::new();
    let interest = Arc::new(RecordedInterest::default());
    hub.set_key_interest(interest.clone()).unwrap();
    assert!(hub.set_key_interest(interest.clone()).is_err(), "once per hub");
    let (a, _a_rx) = Outbox::for_test(8);
    let (b, _b_rx) = Outbox::for_test(8);
    let first = hub.subscribe(1, a.clone());
    let second = hub.subscribe(1, b);
    let other = hub.subscribe(2, a.clone());
    drop(first);
    assert_eq!(*interest.events.lock(), vec![(1, true), (2, true)], "key 1 still has a subscriber");
    drop(second);
    drop(other);
    let again = hub.subscribe(1, a);
    assert_eq!(*interest.events.lock(), vec![(1, true), (2, true), (1, false), (2, false), (1, true)]);
    drop(again);
}

#[test]
fn a_confirmed_bus_subscription_demotes_live_subscribers_and_makes_catching_up_ones_read_again() {
    let hub = Hub::<u64>::new();
    let (live_box, _live_rx) = Outbox::for_test(8);
    let (reading_box, mut reading_rx) = Outbox::for_test(8);
    let live = hub.subscribe(1, live_box);
    let reading = hub.subscribe(1, reading_box);
    assert!(live.go_live(4), "went live before the bus confirmed the key");
    assert_eq!(hub.bus_followed(&1), 1);
    assert_eq!(live.take_demoted(), Some(4), "catches up from what it had");
    assert!(!reading.go_live(4), "its read may predate the subscription: once more");
    assert!(reading.go_live(4), "a read after the confirmation goes live");
    assert_eq!(hub.publish(&1, 5, 5, &changes_frame(5, 5)).delivered, 1);
    assert_eq!(range_of(reading_rx.try_recv().unwrap()), (5, 5));
    assert_eq!(hub.bus_followed(&9), 0, "a key without subscribers has nothing to do");
}

/// Frames a subscriber already read from the log (a bus message slower than the log) are
/// skipped, not a gap.
#[test]
fn frames_a_live_subscriber_already_has_are_skipped_without_demotion() {
    let hub = Hub::<u64>::new();
    let (outbox, mut rx) = Outbox::for_test(8);
    let sub = hub.subscribe(1, outbox);
    assert!(sub.go_live(6), "read 1..=6 from the log");
    let stale = hub.publish(&1, 3, 6, &changes_frame(3, 6));
    assert_eq!((stale.delivered, stale.demoted), (0, 0));
    assert_eq!(sub.take_demoted(), None);
    assert_eq!(hub.publish(&1, 7, 8, &changes_frame(7, 8)).delivered, 1);
    assert_eq!(range_of(rx.try_recv().unwrap()), (7, 8));
    assert!(rx.try_recv().is_err());
}

#[test]
fn demote_expecting_demotes_only_live_subscribers_without_the_sequence() {
    let hub = Hub::<u64>::new();
    let (behind_box, _behind_rx) = Outbox::for_test(8);
    let (ahead_box, _ahead_rx) = Outbox::for_test(8);
    let behind = hub.subscribe(1, behind_box);
    let ahead = hub.subscribe(1, ahead_box);
    assert!(behind.go_live(3) && ahead.go_live(9));
    assert_eq!(hub.demote_expecting(&1, 5), 1);
    assert_eq!(behind.take_demoted(), Some(3));
    assert_eq!(ahead.take_demoted(), None);
    assert_eq!(hub.demote_expecting(&2, 5), 0);
}
