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
//!
//! Sweeper tasks run on the caller's [`TaskTracker`] and stop when its shutdown token fires
//! (after sweeping what they were handed) or when the hub is dropped. Each has a bounded
//! queue ([`SWEEP_QUEUE_FRAMES`]); a sweeper that falls that far behind is a slow consumer
//! too: a publish its queue cannot take demotes, there and then, the live subscribers of that
//! shard that expect the frame, so nothing is lost (they catch up from the log) and nobody
//! waits for a wakeup that will not come.
//!
//! Key interest (for the node bus, [`crate::bus`]): a hub given a [`KeyInterest`] with
//! [`Hub::set_key_interest`] tells it when a key gets its first subscriber and when it loses
//! its last, in that order for each key (both are called under the map's lock for the key).
//! A bus that subscribes to keys asynchronously calls [`Hub::bus_followed`] once its
//! subscription is confirmed: the key's live subscribers are demoted and its catching-up
//! ones re-read the log once before going live, so no session goes live on a read that
//! predates the subscription (see the bus module's documentation for the rule).

use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::codec::EncodedFrame;
use crate::outbox::{Outbox, Outgoing};

/// Frames one sweeper's queue holds (and, with a push interval, holds back) at most. A
/// commit publishes one frame per partition it touched (a few hundred for a large group
/// commit), and a sweeper takes its queue in batches far faster than commits come: the bound
/// holds several such commits while a sweeper is busy with a large partition, and is reached
/// only by a sweeper that fell persistently behind, whose subscribers are better off
/// catching up from the log. A job is five words besides its shared frame, so a full queue
/// costs under 256 KiB of its own.
pub const SWEEP_QUEUE_FRAMES: usize = 4096;

/// What happened to one published frame. The server's publisher has no use for it (with
/// sweeper tasks the sweep happens after `publish` returns); tests and benches read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Subscribers the frame was queued to (by the time `publish` returned: with sweeper
    /// tasks the sweep happens after, and only [`HubStats`] counts it).
    pub delivered: usize,
    /// Subscribers demoted to catch-up by this publish (likewise, plus those of a shard
    /// whose sweeper's queue was full).
    pub demoted: usize,
    /// Shards whose sweeper tasks were handed the frame (0 when swept inline).
    pub dispatched: usize,
}

/// Lifetime counters of the hub, exported by the server's Prometheus metrics (tests and
/// benches read them too).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Frames published, with or without subscribers.
    pub published: AtomicU64,
    /// Frames queued to a subscriber (one per subscriber reached).
    pub delivered: AtomicU64,
    /// Subscribers demoted to catch-up from the log.
    pub demoted: AtomicU64,
    /// Frames a sweeper's full queue refused ([`SWEEP_QUEUE_FRAMES`]), one per shard: the
    /// shard's live subscribers that expected them were demoted instead.
    pub sweeps_refused: AtomicU64,
}

/// What a hub tells about its keys, for a node bus that follows exactly the keys with local
/// subscribers. Both calls run under the hub's map lock for the key: keep them short and
/// non-blocking (record the change and wake a task).
pub trait KeyInterest<K>: Send + Sync {
    /// The key got its first subscriber (its partition entry was created).
    fn followed(&self, key: &K);
    /// The key lost its last subscriber (its partition entry was removed).
    fn unfollowed(&self, key: &K);
}

struct Subscriber {
    id: u64,
    outbox: Outbox,
    live: bool,
    /// The first sequence this subscriber has not received (meaningful when live).
    next: u64,
    /// Set by [`Hub::bus_followed`] on a catching-up subscriber: what its session read may
    /// predate the bus's subscription, so its next `go_live` fails once and it reads again.
    stale_read: bool,
    shared: Arc<SubscriptionShared>,
}

/// What a subscriber's entry in the hub and its session's [`Subscription`] share.
#[derive(Debug)]
struct SubscriptionShared {
    /// The sequence up to which frames were queued when the hub demoted the subscription,
    /// until its session takes it ([`NOT_DEMOTED`] otherwise).
    demoted: AtomicU64,
    /// The cursor the device last acknowledged (or subscribed with), for
    /// [`Hub::lag_census`].
    acked: AtomicU64,
}

/// Value of a subscription's demotion slot while it is not demoted.
const NOT_DEMOTED: u64 = u64::MAX;

/// Subscriptions counted by [`Hub::lag_census`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LagCensus {
    /// Subscriptions in the hub.
    pub subscriptions: u64,
    /// Subscriptions whose device acknowledged more than the threshold fewer changes than
    /// its partition's head.
    pub behind: u64,
}

/// One partition's subscribers, split into shards that are swept independently.
struct Partition {
    /// The `to` of the last frame published for the partition.
    last_published: AtomicU64,
    /// The highest head known: published, or read by a subscribing session from the store
    /// ([`Subscription::head_read`]). Only [`Hub::lag_census`] reads it.
    known_head: AtomicU64,
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
            known_head: AtomicU64::new(0),
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

    /// Demotes the shard's live subscribers that expect the frame ending at `to` (those that
    /// have not received it), for a frame their sweeper could not take; returns how many.
    fn demote_expecting(&self, shard: usize, to: u64) -> usize {
        let mut subscribers = self.shards[shard].subscribers.lock();
        let mut demoted = 0;
        for subscriber in subscribers.iter_mut().filter(|subscriber| subscriber.live && subscriber.next <= to) {
            demote(subscriber);
            demoted += 1;
        }
        demoted
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
    /// The queue of each shard's sweeper task, when sweeping off the publishing thread.
    sweepers: Option<Box<[mpsc::Sender<SweepJob>]>>,
    next_id: AtomicU64,
    stats: Arc<HubStats>,
    /// Told when a key gets its first subscriber and loses its last (the node bus).
    interest: OnceLock<Arc<dyn KeyInterest<K>>>,
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Default for Hub<K> {
    fn default() -> Self {
        Self {
            partitions: DashMap::new(),
            shards: 1,
            sweepers: None,
            next_id: AtomicU64::new(1),
            stats: Arc::default(),
            interest: OnceLock::new(),
        }
    }
}

/// [`Hub::set_key_interest`] was called before.
#[derive(Debug, thiserror::Error)]
#[error("the hub already tells another key interest")]
pub struct InterestAlreadySet;

/// A session's subscription to one partition. Unsubscribes when dropped.
pub struct Subscription<K: Eq + Hash + Clone + Send + Sync + 'static> {
    hub: Arc<Hub<K>>,
    key: K,
    id: u64,
    partition: Arc<Partition>,
    shard: usize,
    shared: Arc<SubscriptionShared>,
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Subscription<K> {
    /// Records that the device holds the partition up to `cursor` (it subscribed with it, or
    /// acknowledged it), for [`Hub::lag_census`].
    pub fn acked(&self, cursor: u64) {
        self.shared.acked.fetch_max(cursor, Ordering::Relaxed);
    }

    /// Records the partition's head as its session read it from the store, for
    /// [`Hub::lag_census`] (the hub otherwise knows only heads published since).
    pub fn head_read(&self, head: u64) {
        self.partition.known_head.fetch_max(head, Ordering::Relaxed);
    }

    /// Returns the partition's head as this node knows it: the greatest published, or read
    /// from the store by a session.
    pub fn head(&self) -> u64 {
        let read = self.partition.known_head.load(Ordering::Relaxed);
        read.max(self.partition.last_published.load(Ordering::Acquire))
    }

    /// Returns (once) the sequence up to which frames were queued if the hub demoted this
    /// subscription since the last call: the session must catch up from the log after it and
    /// go live again.
    pub fn take_demoted(&self) -> Option<u64> {
        match self.shared.demoted.swap(NOT_DEMOTED, Ordering::AcqRel) {
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
            // Its read may predate the bus's subscription: read again (once).
            Some(subscriber) if subscriber.stale_read => {
                subscriber.stale_read = false;
                false
            }
            Some(subscriber) => {
                subscriber.live = true;
                subscriber.next = caught_up_to + 1;
                subscriber.shared.demoted.store(NOT_DEMOTED, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Stops live delivery (the session will page from the log instead). The server never
    /// needs it (a session catches up only when demoted); the proptest models a session that
    /// pauses on its own too.
    #[cfg(test)]
    fn pause(&self) {
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

    /// Returns an empty hub with `shards` sweeper tasks (at least one) spawned on `tracker`
    /// in the current tokio runtime. Use one per runtime worker thread. They end when
    /// `shutdown` fires, having swept what they were handed by then (a publish after that
    /// reaches nobody), or when the hub is dropped. A non-zero `push_interval` sweeps each
    /// partition at most once per interval (see the module's documentation).
    pub fn with_sweepers(
        shards: usize,
        push_interval: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Self::with_sweeper_queues(shards, push_interval, SWEEP_QUEUE_FRAMES, tracker, shutdown)
    }

    /// [`Hub::with_sweepers`] with sweeper queues of `queue_frames` (tests use small ones).
    fn with_sweeper_queues(
        shards: usize,
        push_interval: Duration,
        queue_frames: usize,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let shards = shards.max(1);
        let stats = Arc::new(HubStats::default());
        let sweepers = (0..shards)
            .map(|_| {
                let (tx, rx) = mpsc::channel(queue_frames);
                let queue = SweepQueue {
                    jobs: rx,
                    bound: queue_frames,
                    cancelled: Box::pin(shutdown.clone().cancelled_owned()),
                    shutdown: shutdown.clone(),
                    closing: false,
                };
                tracker.spawn(run_sweeper(queue, stats.clone(), push_interval));
                tx
            })
            .collect();
        Arc::new(Self {
            partitions: DashMap::new(),
            shards,
            sweepers: Some(sweepers),
            next_id: AtomicU64::new(1),
            stats,
            interest: OnceLock::new(),
        })
    }

    /// Registers a catching-up subscription of `outbox`'s connection to `key`.
    pub fn subscribe(self: &Arc<Self>, key: K, outbox: Outbox) -> Subscription<K> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = (id % self.shards as u64) as usize;
        let shared = Arc::new(SubscriptionShared { demoted: AtomicU64::new(NOT_DEMOTED), acked: AtomicU64::new(0) });
        // Registered while holding the map's entry, so that `remove` cannot drop the
        // partition between this lookup and the push.
        let entry = self.partitions.entry(key.clone()).or_insert_with(|| {
            if let Some(interest) = self.interest.get() {
                interest.followed(&key);
            }
            Arc::new(Partition::new(self.shards))
        });
        let partition = entry.value().clone();
        {
            let mut subscribers = partition.shards[shard].subscribers.lock();
            let subscriber = Subscriber { id, outbox, live: false, next: 0, stale_read: false, shared: shared.clone() };
            subscribers.push(subscriber);
            partition.shards[shard].len.store(subscribers.len(), Ordering::Relaxed);
        }
        partition.subscribers.fetch_add(1, Ordering::Relaxed);
        drop(entry);
        Subscription { hub: self.clone(), key, id, partition, shard, shared }
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
            self.partitions.remove_if(&subscription.key, |key, entry| {
                let remove = Arc::ptr_eq(entry, partition) && entry.subscribers.load(Ordering::Relaxed) == 0;
                // Under the map's lock, so that a later first subscriber's `followed` comes after.
                if remove && let Some(interest) = self.interest.get() {
                    interest.unfollowed(key);
                }
                remove
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
        partition.known_head.fetch_max(to, Ordering::Relaxed);
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
                    match sweepers[index].try_send(job) {
                        Ok(()) => outcome.dispatched += 1,
                        Err(TrySendError::Full(_)) => {
                            // The sweeper is a whole queue behind: a slow consumer.
                            self.stats.sweeps_refused.fetch_add(1, Ordering::Relaxed);
                            outcome.demoted += partition.demote_expecting(index, to);
                        }
                        // The sweepers have stopped (shutdown): nothing is delivered then.
                        Err(TrySendError::Closed(_)) => {}
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

    /// Makes the hub tell `interest` when a key gets its first subscriber and loses its last
    /// (once per hub). Keys that already have subscribers are not announced: the caller
    /// follows [`Hub::keys`] itself.
    pub fn set_key_interest(&self, interest: Arc<dyn KeyInterest<K>>) -> Result<(), InterestAlreadySet> {
        self.interest.set(interest).map_err(|_| InterestAlreadySet)
    }

    /// Records that the node bus now receives every frame of `key` published from now on
    /// (its subscription is confirmed, first or after a reconnect): frames published before
    /// may have been missed, so the key's live subscribers are demoted (they catch up from the
    /// log) and its catching-up ones read the log once more before they may go live. Returns
    /// how many were demoted.
    pub fn bus_followed(&self, key: &K) -> usize {
        let Some(partition) = self.partitions.get(key).map(|entry| entry.value().clone()) else {
            return 0;
        };
        let mut demoted = 0;
        for shard in partition.shards.iter() {
            let mut subscribers = shard.subscribers.lock();
            for subscriber in subscribers.iter_mut() {
                if subscriber.live {
                    demote(subscriber);
                    demoted += 1;
                } else {
                    subscriber.stale_read = true;
                }
            }
        }
        self.stats.demoted.fetch_add(demoted as u64, Ordering::Relaxed);
        demoted
    }

    /// Demotes the live subscribers of `key` that have not received sequence `to` (their
    /// next expected sequence is at most `to`): a frame up to `to` was lost on its way to this
    /// node. Returns how many.
    pub fn demote_expecting(&self, key: &K, to: u64) -> usize {
        let Some(partition) = self.partitions.get(key).map(|entry| entry.value().clone()) else {
            return 0;
        };
        let demoted = (0..partition.shards.len()).map(|shard| partition.demote_expecting(shard, to)).sum::<usize>();
        self.stats.demoted.fetch_add(demoted as u64, Ordering::Relaxed);
        demoted
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

    /// Counts the subscriptions, and those more than `threshold` changes behind their
    /// partition's head by what their device acknowledged. Walks every subscriber, taking
    /// each shard's lock briefly (a sweep of the shard waits that long): for a scrape, not
    /// for a hot path.
    pub fn lag_census(&self, threshold: u64) -> LagCensus {
        let mut census = LagCensus::default();
        let partitions: Vec<Arc<Partition>> = self.partitions.iter().map(|entry| entry.value().clone()).collect();
        for partition in partitions {
            let head = partition.known_head.load(Ordering::Relaxed);
            for shard in partition.shards.iter() {
                if shard.len.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let subscribers = shard.subscribers.lock();
                census.subscriptions += subscribers.len() as u64;
                let behind = subscribers
                    .iter()
                    .filter(|subscriber| {
                        head.saturating_sub(subscriber.shared.acked.load(Ordering::Relaxed)) > threshold
                    })
                    .count();
                census.behind += behind as u64;
            }
        }
        census
    }
}

/// Jobs a sweeper takes from its queue per wakeup.
const SWEEP_BATCH: usize = 64;

/// A sweeper's end of its queue, which closes when the hub's shutdown token fires.
struct SweepQueue {
    jobs: mpsc::Receiver<SweepJob>,
    /// The queue's bound, which also bounds the frames held back by a push interval.
    bound: usize,
    shutdown: CancellationToken,
    /// `shutdown.cancelled()`, made once: waiting on it registers with the token only when
    /// the sweeper goes idle, not for every job.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once shutdown has fired and the queue is closed.
    closing: bool,
}

impl SweepQueue {
    /// Waits for jobs and moves up to [`SWEEP_BATCH`] into `batch`; returns how many, 0 once
    /// the hub is gone or, after shutdown, once what was queued before it has been taken.
    /// Cancel-safe.
    async fn next(&mut self, batch: &mut Vec<SweepJob>) -> usize {
        // Checked before each batch too, so a steady stream of publishes does not keep a
        // shut-down sweeper going.
        if !self.closing && self.shutdown.is_cancelled() {
            self.close();
        }
        if !self.closing {
            tokio::select! {
                biased;
                taken = self.jobs.recv_many(batch, SWEEP_BATCH) => return taken,
                () = self.cancelled.as_mut() => self.close(),
            }
        }
        self.jobs.recv_many(batch, SWEEP_BATCH).await
    }

    /// Closes the queue: publishes fail from now on, and what is queued is still taken.
    fn close(&mut self) {
        self.jobs.close();
        self.closing = true;
    }
}

/// Sweeps the frames handed to one shard, in order, until the hub is dropped or shut down.
/// With a push interval, a partition swept less than an interval ago has its frames held
/// until the interval has passed, and they are then swept together (other partitions go on
/// meanwhile); a sweeper holding its queue's bound of frames sweeps them all at once.
async fn run_sweeper(mut queue: SweepQueue, stats: Arc<HubStats>, push_interval: Duration) {
    let mut batch = Vec::with_capacity(SWEEP_BATCH);
    let mut run = Vec::new();
    if push_interval.is_zero() {
        while queue.next(&mut batch).await > 0 {
            sweep_jobs(&mut batch, &mut run, &stats);
        }
        return;
    }
    let mut held: Vec<SweepJob> = Vec::new();
    loop {
        // Held frames are always of partitions swept before, so each has a time.
        let next_due = held.iter().filter_map(|job| job.shard().next_sweep(push_interval)).min();
        tokio::select! {
            taken = queue.next(&mut batch) => {
                if taken == 0 {
                    // The hub is gone or shut down: deliver what is held, then stop.
                    sweep_jobs(&mut held, &mut run, &stats);
                    return;
                }
                held.append(&mut batch);
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        let now = Instant::now();
        // Memory stays bounded under any publish rate: past the bound, nothing waits.
        let sweep_all = held.len() >= queue.bound;
        // Due or not is decided for every held frame before any is swept, so a partition's
        // frames stay together, in order.
        let (mut due, still_held): (Vec<SweepJob>, Vec<SweepJob>) = held
            .drain(..)
            .partition(|job| sweep_all || job.shard().next_sweep(push_interval).is_none_or(|due| due <= now));
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
    subscriber.shared.demoted.store(subscriber.next - 1, Ordering::Release);
    subscriber.outbox.wake();
}

#[cfg(test)]
mod tests;
