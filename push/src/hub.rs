//! The subscription hub: partition → subscribers, encode-once fan-out into bounded
//! per-connection queues, and the slow-consumer policy.
//!
//! Every published frame covers a gap-free sequence range `from..=to` of its partition, and
//! frames of one partition are published in order. A subscription is either *live* (the
//! hub queues every new frame to it, expecting `next == from`) or *catching up* (its session
//! reads the partition's log and the hub skips it). A catching-up session becomes live with
//! [`Subscription::go_live`], which succeeds only if nothing was published past what the session has
//! read, so no change falls between catch-up and live push.
//!
//! Fan-out across cores: a partition's subscribers are split into shards (by subscription),
//! each behind its own lock. [`Hub::new`] sweeps every shard on the publishing thread;
//! [`Hub::with_sweepers`] gives each shard a sweeper task on the async runtime, so a publish
//! only records the partition's head and hands the frame to the sweepers of the shards that
//! have subscribers: the sweep over thousands of queues runs on every core at once, off the
//! store's writer thread, and the wakeups it causes land on the runtime's own run queues. A
//! shard's sweeper handles its frames in publish order, and a subscription lives in one
//! shard, so each subscriber still gets its partition's frames in order.
//!
//! Push interval (optional, off by default): a shard's sweeper sweeps one partition at most
//! once per interval. A frame of a partition that has not been swept within the interval is
//! swept at once; frames that follow it within the interval are held and swept together when
//! the interval has passed. Each subscriber then gets them queued at once, and its connection
//! writes them in one socket write: under a steady stream of changes, fewer writes per
//! delivered change at up to one interval of added latency; a lone change waits for nothing.
//!
//! Slow consumers: when a live subscriber's outbound queue is full (or a frame does not
//! follow on from what it has), it is *demoted*: the hub stops queueing to it, sets its
//! demoted flag and wakes its session, which then catches up from the log. Memory per
//! connection therefore never exceeds its queue bound.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use crate::codec::EncodedFrame;
use crate::session::{Outbox, Outgoing};

/// What happened to one published frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Subscribers the frame was queued to (by the time `publish` returned: with sweeper
    /// tasks the sweep happens after, and only [`HubStats`] counts it).
    pub delivered: usize,
    /// Subscribers demoted to catch-up by this publish (likewise).
    pub demoted: usize,
    /// Shards whose sweeper tasks were handed the frame (0 when swept inline).
    pub dispatched: usize,
}

/// Counters of the hub, for metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub demoted: AtomicU64,
}

struct Subscriber {
    id: u64,
    outbox: Outbox,
    live: bool,
    /// The first sequence this subscriber has not received (meaningful when live).
    next: u64,
    demoted: Arc<AtomicU64>,
}

/// Value of a subscription's demotion slot while it is not demoted.
const NOT_DEMOTED: u64 = u64::MAX;

/// One partition's subscribers, split into shards that are swept independently.
struct Partition {
    /// The `to` of the last frame published for the partition.
    last_published: AtomicU64,
    /// Subscribers in all shards.
    subscribers: AtomicUsize,
    shards: Box<[Shard]>,
}

#[derive(Default)]
struct Shard {
    /// Subscribers of this shard (a copy of the length, readable without the lock).
    len: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
    /// With a push interval: when this shard's sweeper last swept it (only that sweeper
    /// reads and writes it).
    swept_at: Mutex<Option<Instant>>,
}

impl Shard {
    /// When the shard may be swept again, given the push interval (`None`: at once).
    fn next_sweep(&self, interval: Duration) -> Option<Instant> {
        self.swept_at.lock().map(|at| at + interval)
    }
}

impl Partition {
    fn new(shards: usize) -> Self {
        Self {
            last_published: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            shards: (0..shards).map(|_| Shard::default()).collect(),
        }
    }

    /// Queues the frames, consecutive publishes of this partition in order, to the shard's
    /// live subscribers that expect them: each subscriber gets all of its frames before the
    /// sweep moves on, so its connection finds them queued together.
    fn sweep(&self, shard: usize, frames: &[Published]) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        let shard = &self.shards[shard];
        let mut subscribers = shard.subscribers.lock();
        let before = subscribers.len();
        subscribers.retain_mut(|subscriber| {
            for published in frames {
                if !subscriber.live {
                    break;
                }
                if published.to < subscriber.next {
                    continue;
                }
                if published.from != subscriber.next {
                    demote(subscriber);
                    outcome.demoted += 1;
                    break;
                }
                match subscriber.outbox.try_push(Outgoing::Frame(published.frame.clone())) {
                    Ok(()) => {
                        subscriber.next = published.to + 1;
                        outcome.delivered += 1;
                    }
                    Err(TrySendError::Full(_)) => {
                        demote(subscriber);
                        outcome.demoted += 1;
                        break;
                    }
                    // The connection is gone; its session drops the subscription soon too.
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        let removed = before - subscribers.len();
        if removed > 0 {
            shard.len.store(subscribers.len(), Ordering::Relaxed);
            self.subscribers.fetch_sub(removed, Ordering::Relaxed);
        }
        outcome
    }
}

/// One published frame, covering sequences `from..=to` of its partition.
struct Published {
    from: u64,
    to: u64,
    frame: Arc<EncodedFrame>,
}

/// A frame handed to one shard's sweeper.
struct SweepJob {
    partition: Arc<Partition>,
    shard: usize,
    published: Published,
}

/// The subscription registry, keyed by partition.
pub struct Hub<K: Eq + Hash + Clone + Send + Sync + 'static> {
    partitions: DashMap<K, Arc<Partition>>,
    /// Shards per partition.
    shards: usize,
    /// One sweeper task per shard, when sweeping off the publishing thread.
    sweepers: Option<Box<[mpsc::UnboundedSender<SweepJob>]>>,
    next_id: AtomicU64,
    stats: Arc<HubStats>,
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Default for Hub<K> {
    fn default() -> Self {
        Self {
            partitions: DashMap::new(),
            shards: 1,
            sweepers: None,
            next_id: AtomicU64::new(1),
            stats: Arc::default(),
        }
    }
}

/// A session's subscription to one partition. Unsubscribes when dropped.
pub struct Subscription<K: Eq + Hash + Clone + Send + Sync + 'static> {
    hub: Arc<Hub<K>>,
    key: K,
    id: u64,
    partition: Arc<Partition>,
    shard: usize,
    demoted: Arc<AtomicU64>,
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Subscription<K> {
    /// Returns the partition key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Returns (once) the sequence up to which frames were queued if the hub demoted this
    /// subscription since the last call: the session must catch up from the log after it and
    /// go live again.
    pub fn take_demoted(&self) -> Option<u64> {
        match self.demoted.swap(NOT_DEMOTED, Ordering::AcqRel) {
            NOT_DEMOTED => None,
            queued_to => Some(queued_to),
        }
    }

    /// Tries to make this subscription live, having delivered everything up to
    /// `caught_up_to`: succeeds if nothing past `caught_up_to` was published, and from then
    /// on frames starting at `caught_up_to + 1` are queued to it. Returns false when the
    /// session must read more of the log first.
    pub fn go_live(&self, caught_up_to: u64) -> bool {
        let mut subscribers = self.partition.shards[self.shard].subscribers.lock();
        // Under the shard's lock, which the sweep of every frame takes: a frame whose head
        // this load does not see is swept after this, and finds the subscriber live.
        if self.partition.last_published.load(Ordering::Acquire) > caught_up_to {
            return false;
        }
        match subscribers.iter_mut().find(|s| s.id == self.id) {
            Some(subscriber) => {
                subscriber.live = true;
                subscriber.next = caught_up_to + 1;
                subscriber.demoted.store(NOT_DEMOTED, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Stops live delivery (the session will page from the log instead).
    pub fn pause(&self) {
        let mut subscribers = self.partition.shards[self.shard].subscribers.lock();
        if let Some(subscriber) = subscribers.iter_mut().find(|s| s.id == self.id) {
            subscriber.live = false;
        }
    }
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Drop for Subscription<K> {
    fn drop(&mut self) {
        self.hub.remove(self);
    }
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Hub<K> {
    /// Returns an empty hub that sweeps on the publishing thread.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Returns an empty hub with `shards` sweeper tasks (at least one) spawned on the current
    /// tokio runtime; they end when the hub is dropped. Use one per runtime worker thread.
    /// A non-zero `push_interval` sweeps each partition at most once per interval (see the
    /// module's documentation).
    pub fn with_sweepers(shards: usize, push_interval: Duration) -> Arc<Self> {
        let shards = shards.max(1);
        let stats = Arc::new(HubStats::default());
        let sweepers = (0..shards)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_sweeper(rx, stats.clone(), push_interval));
                tx
            })
            .collect();
        Arc::new(Self {
            partitions: DashMap::new(),
            shards,
            sweepers: Some(sweepers),
            next_id: AtomicU64::new(1),
            stats,
        })
    }

    /// Registers a catching-up subscription of `outbox`'s connection to `key`.
    pub fn subscribe(self: &Arc<Self>, key: K, outbox: Outbox) -> Subscription<K> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = (id % self.shards as u64) as usize;
        let demoted = Arc::new(AtomicU64::new(NOT_DEMOTED));
        // Registered while holding the map's entry, so that `remove` cannot drop the
        // partition between this lookup and the push.
        let entry = self.partitions.entry(key.clone()).or_insert_with(|| Arc::new(Partition::new(self.shards)));
        let partition = entry.value().clone();
        {
            let mut subscribers = partition.shards[shard].subscribers.lock();
            subscribers.push(Subscriber { id, outbox, live: false, next: 0, demoted: demoted.clone() });
            partition.shards[shard].len.store(subscribers.len(), Ordering::Relaxed);
        }
        partition.subscribers.fetch_add(1, Ordering::Relaxed);
        drop(entry);
        Subscription { hub: self.clone(), key, id, partition, shard, demoted }
    }

    fn remove(&self, subscription: &Subscription<K>) {
        let partition = &subscription.partition;
        let shard = &partition.shards[subscription.shard];
        {
            let mut subscribers = shard.subscribers.lock();
            let before = subscribers.len();
            subscribers.retain(|s| s.id != subscription.id);
            if subscribers.len() < before {
                shard.len.store(subscribers.len(), Ordering::Relaxed);
                partition.subscribers.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if partition.subscribers.load(Ordering::Relaxed) == 0 {
            // Keep the entry if a subscriber arrived meanwhile (subscribe registers under the
            // map's lock, which this takes); an entry without subscribers only needs
            // `last_published`, and go_live of a later subscriber reads the store, which
            // already holds every published commit.
            self.partitions.remove_if(&subscription.key, |_, entry| {
                Arc::ptr_eq(entry, partition) && entry.subscribers.load(Ordering::Relaxed) == 0
            });
        }
    }

    /// Queues `frame`, covering sequences `from..=to` of `key`, to every live subscriber
    /// that expects it: here, or (with sweepers) by handing it to the sweepers of the shards
    /// that have subscribers. Never blocks: a full queue demotes its subscriber.
    pub fn publish(&self, key: &K, from: u64, to: u64, frame: &Arc<EncodedFrame>) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let Some(partition) = self.partitions.get(key).map(|entry| entry.value().clone()) else {
            // No subscribers: nobody can be live, and go_live reads the store, which already
            // holds this commit.
            return outcome;
        };
        // Before any sweep: a go_live that does not see this head is ordered before the
        // sweep by the shard's lock (see `Subscription::go_live`).
        partition.last_published.fetch_max(to, Ordering::AcqRel);
        let mut frame_taken = false;
        for (index, shard) in partition.shards.iter().enumerate() {
            if shard.len.load(Ordering::Relaxed) == 0 {
                continue;
            }
            match &self.sweepers {
                Some(sweepers) => {
                    // The first shard shares the caller's frame, the others get copies: see
                    // `EncodedFrame::duplicate`.
                    let frame =
                        if std::mem::replace(&mut frame_taken, true) { frame.duplicate() } else { frame.clone() };
                    let job = SweepJob {
                        partition: partition.clone(),
                        shard: index,
                        published: Published { from, to, frame },
                    };
                    // Fails only when the runtime is gone (shutdown): nothing is delivered then.
                    if sweepers[index].send(job).is_ok() {
                        outcome.dispatched += 1;
                    }
                }
                None => {
                    let swept = partition.sweep(index, &[Published { from, to, frame: frame.clone() }]);
                    outcome.delivered += swept.delivered;
                    outcome.demoted += swept.demoted;
                }
            }
        }
        self.stats.delivered.fetch_add(outcome.delivered as u64, Ordering::Relaxed);
        self.stats.demoted.fetch_add(outcome.demoted as u64, Ordering::Relaxed);
        outcome
    }

    /// Returns the keys that have at least one subscriber.
    pub fn keys(&self) -> Vec<K> {
        self.partitions
            .iter()
            .filter(|entry| entry.value().subscribers.load(Ordering::Relaxed) > 0)
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Returns the number of subscribers of `key`.
    pub fn subscriber_count(&self, key: &K) -> usize {
        self.partitions.get(key).map_or(0, |entry| entry.value().subscribers.load(Ordering::Relaxed))
    }

    /// Returns the hub's counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }
}

/// Sweeps the frames handed to one shard, in order, until the hub is dropped. With a push
/// interval, a partition swept less than an interval ago has its frames held until the
/// interval has passed, and they are then swept together (other partitions go on meanwhile).
async fn run_sweeper(mut jobs: mpsc::UnboundedReceiver<SweepJob>, stats: Arc<HubStats>, push_interval: Duration) {
    /// Jobs taken per wakeup.
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut run = Vec::new();
    if push_interval.is_zero() {
        while jobs.recv_many(&mut batch, BATCH).await > 0 {
            sweep_jobs(&mut batch, &mut run, &stats);
        }
        return;
    }
    let mut held: Vec<SweepJob> = Vec::new();
    loop {
        // Held frames are always of partitions swept before, so each has a time.
        let next_due = held.iter().filter_map(|job| job.shard().next_sweep(push_interval)).min();
        tokio::select! {
            taken = jobs.recv_many(&mut batch, BATCH) => {
                if taken == 0 {
                    // The hub is gone: deliver what is held, then stop.
                    sweep_jobs(&mut held, &mut run, &stats);
                    return;
                }
                held.append(&mut batch);
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        let now = Instant::now();
        // Due or not is decided for every held frame before any is swept, so a partition's
        // frames stay together, in order.
        let (mut due, still_held): (Vec<SweepJob>, Vec<SweepJob>) =
            held.drain(..).partition(|job| job.shard().next_sweep(push_interval).is_none_or(|due| due <= now));
        held = still_held;
        // Stable: each partition's frames keep their publish order, and become one run.
        due.sort_by_key(|job| (Arc::as_ptr(&job.partition) as usize, job.shard));
        for job in &due {
            *job.shard().swept_at.lock() = Some(now);
        }
        sweep_jobs(&mut due, &mut run, &stats);
    }
}

impl SweepJob {
    fn shard(&self) -> &Shard {
        &self.partition.shards[self.shard]
    }
}

/// Sweeps (and empties) `jobs` in order, each run of consecutive jobs for one partition's
/// shard at once.
fn sweep_jobs(jobs: &mut Vec<SweepJob>, run: &mut Vec<Published>, stats: &HubStats) {
    let mut target: Option<(Arc<Partition>, usize)> = None;
    for job in jobs.drain(..) {
        let same = target
            .as_ref()
            .is_some_and(|(partition, shard)| Arc::ptr_eq(partition, &job.partition) && *shard == job.shard);
        if !same {
            if let Some((partition, shard)) = target.take() {
                sweep_run(&partition, shard, run, stats);
            }
            target = Some((job.partition, job.shard));
        }
        run.push(job.published);
    }
    if let Some((partition, shard)) = target {
        sweep_run(&partition, shard, run, stats);
    }
}

fn sweep_run(partition: &Partition, shard: usize, run: &mut Vec<Published>, stats: &HubStats) {
    let outcome = partition.sweep(shard, run);
    run.clear();
    stats.delivered.fetch_add(outcome.delivered as u64, Ordering::Relaxed);
    stats.demoted.fetch_add(outcome.demoted as u64, Ordering::Relaxed);
}

fn demote(subscriber: &mut Subscriber) {
    subscriber.live = false;
    subscriber.demoted.store(subscriber.next - 1, Ordering::Release);
    subscriber.outbox.wake();
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Outbox;
    use syncline_proto::v1::ServerFrame;

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
        EncodedFrame::new(ServerFrame {
            msg: Some(server_frame::Msg::Changes(Changes { from, to, ..Default::default() })),
        })
    }

    fn range_of(outgoing: Outgoing) -> (u64, u64) {
        use syncline_proto::v1::server_frame;
        let Outgoing::Frame(frame) = outgoing else { panic!("only frames are published") };
        match &frame.frame().msg {
            Some(server_frame::Msg::Changes(changes)) => (changes.from, changes.to),
            other => panic!("unexpected frame {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sweepers_deliver_every_frame_in_order_to_every_shard() {
        const SUBSCRIBERS: usize = 50;
        const FRAMES: u64 = 40;
        let hub = Hub::<u64>::with_sweepers(2, Duration::ZERO);
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
        let hub = Hub::<u64>::with_sweepers(2, Duration::ZERO);
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
        let hub = Hub::<u64>::with_sweepers(1, interval);
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
        let hub = Hub::<u64>::with_sweepers(1, interval);
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

        let ranges = |rx: &mut mpsc::Receiver<Outgoing>| {
            std::iter::from_fn(|| rx.try_recv().ok()).map(range_of).collect::<Vec<_>>()
        };
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
}
