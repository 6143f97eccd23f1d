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
//! Slow consumers: when a live subscriber's outbound queue is full (or a frame does not
//! follow on from what it has), it is *demoted*: the hub stops queueing to it, sets its
//! demoted flag and wakes its session, which then catches up from the log. Memory per
//! connection therefore never exceeds its queue bound.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::mpsc::error::TrySendError;

use crate::codec::EncodedFrame;
use crate::session::{Outbox, Outgoing};

/// What happened to one published frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Subscribers the frame was queued to.
    pub delivered: usize,
    /// Subscribers demoted to catch-up by this publish.
    pub demoted: usize,
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

#[derive(Default)]
struct PartitionEntry {
    /// The `to` of the last frame published for the partition.
    last_published: u64,
    subscribers: Vec<Subscriber>,
}

/// The subscription registry, keyed by partition.
pub struct Hub<K: Eq + Hash + Clone + Send + Sync + 'static> {
    partitions: DashMap<K, PartitionEntry>,
    next_id: AtomicU64,
    stats: HubStats,
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Default for Hub<K> {
    fn default() -> Self {
        Self { partitions: DashMap::new(), next_id: AtomicU64::new(1), stats: HubStats::default() }
    }
}

/// A session's subscription to one partition. Unsubscribes when dropped.
pub struct Subscription<K: Eq + Hash + Clone + Send + Sync + 'static> {
    hub: Arc<Hub<K>>,
    key: K,
    id: u64,
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
    /// `caught_up_to`. See the module docs.
    pub fn go_live(&self, caught_up_to: u64) -> bool {
        self.hub.go_live(&self.key, self.id, caught_up_to)
    }

    /// Stops live delivery (the session will page from the log instead).
    pub fn pause(&self) {
        if let Some(mut entry) = self.hub.partitions.get_mut(&self.key)
            && let Some(subscriber) = entry.subscribers.iter_mut().find(|s| s.id == self.id)
        {
            subscriber.live = false;
        }
    }
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Drop for Subscription<K> {
    fn drop(&mut self) {
        self.hub.remove(&self.key, self.id);
    }
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Hub<K> {
    /// Returns an empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a catching-up subscription of `outbox`'s connection to `key`.
    pub fn subscribe(self: &Arc<Self>, key: K, outbox: Outbox) -> Subscription<K> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let demoted = Arc::new(AtomicU64::new(NOT_DEMOTED));
        self.partitions.entry(key.clone()).or_default().subscribers.push(Subscriber {
            id,
            outbox,
            live: false,
            next: 0,
            demoted: demoted.clone(),
        });
        Subscription { hub: self.clone(), key, id, demoted }
    }

    /// Makes subscription `id` live if nothing past `caught_up_to` was published for `key`;
    /// from then on frames starting at `caught_up_to + 1` are queued to it. Returns false when
    /// the session must read more of the log first.
    fn go_live(&self, key: &K, id: u64, caught_up_to: u64) -> bool {
        let Some(mut entry) = self.partitions.get_mut(key) else {
            return false;
        };
        if entry.last_published > caught_up_to {
            return false;
        }
        match entry.subscribers.iter_mut().find(|s| s.id == id) {
            Some(subscriber) => {
                subscriber.live = true;
                subscriber.next = caught_up_to + 1;
                subscriber.demoted.store(NOT_DEMOTED, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn remove(&self, key: &K, id: u64) {
        let now_empty = match self.partitions.get_mut(key) {
            Some(mut entry) => {
                entry.subscribers.retain(|s| s.id != id);
                entry.subscribers.is_empty()
            }
            None => false,
        };
        if now_empty {
            // Keep the entry if a subscriber arrived meanwhile; an entry without subscribers
            // only needs `last_published`, which the next publish re-creates.
            self.partitions.remove_if(key, |_, entry| entry.subscribers.is_empty());
        }
    }

    /// Queues `frame`, covering sequences `from..=to` of `key`, to every live subscriber
    /// that expects it. Never blocks: a full queue demotes its subscriber.
    pub fn publish(&self, key: &K, from: u64, to: u64, frame: &Arc<EncodedFrame>) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        let Some(mut entry) = self.partitions.get_mut(key) else {
            // No subscribers: nobody can be live, and go_live reads the store, which already
            // holds this commit.
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            return outcome;
        };
        entry.last_published = entry.last_published.max(to);
        entry.subscribers.retain_mut(|subscriber| {
            if !subscriber.live || to < subscriber.next {
                return true;
            }
            if from != subscriber.next {
                demote(subscriber);
                outcome.demoted += 1;
                return true;
            }
            match subscriber.outbox.try_push(Outgoing::Frame(frame.clone())) {
                Ok(()) => {
                    subscriber.next = to + 1;
                    outcome.delivered += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    demote(subscriber);
                    outcome.demoted += 1;
                    true
                }
                // The connection is gone; its session drops the subscription soon too.
                Err(TrySendError::Closed(_)) => false,
            }
        });
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.stats.delivered.fetch_add(outcome.delivered as u64, Ordering::Relaxed);
        self.stats.demoted.fetch_add(outcome.demoted as u64, Ordering::Relaxed);
        outcome
    }

    /// Returns the keys that have at least one subscriber.
    pub fn keys(&self) -> Vec<K> {
        self.partitions.iter().filter(|entry| !entry.subscribers.is_empty()).map(|entry| entry.key().clone()).collect()
    }

    /// Returns the number of subscribers of `key`.
    pub fn subscriber_count(&self, key: &K) -> usize {
        self.partitions.get(key).map_or(0, |entry| entry.subscribers.len())
    }

    /// Returns the hub's counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }
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
