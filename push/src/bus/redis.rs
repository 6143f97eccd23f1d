//! The node bus over Redis pub/sub (see the [bus module](super) for the rules it keeps).
//!
//! Two tasks per node, both on the caller's tracker and stopped by its shutdown token:
//!
//! - the publisher: takes the messages [`RedisBus::publish`] queued (bounded,
//!   [`PUBLISH_QUEUE_MESSAGES`]) and sends them in pipelined `PUBLISH`es on one multiplexed
//!   connection that reconnects by itself. What it cannot send (a full queue, a failed
//!   pipeline) is remembered per channel and announced with a gap message once Redis takes
//!   commands again.
//! - the subscriber: one pub/sub connection, subscribed to exactly the channels of the keys
//!   the hub reports through [`KeyInterest`]; it hands what arrives to the hub, confirms each
//!   subscription to the hub ([`Hub::bus_followed`]), pings the connection to notice a
//!   silent loss, and reconnects (with backoff) when the connection is lost, following every
//!   key again.
//!
//! On one Redis server, channels are plain pub/sub (`SUBSCRIBE`/`PUBLISH`). On a Redis
//! Cluster ([`RedisBusServers::Cluster`]) they are sharded pub/sub: a channel's name carries
//! its key's hash tag ([`channel_name`]), so `SPUBLISH` sends each message to the primary
//! owning that slot only (not to every node of the cluster), and the subscriber follows each
//! channel with `SSUBSCRIBE` on that primary ([`super::sharded`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message::BusMessage;
use super::{BusKey, NodeBus, channel_name};
use crate::codec::EncodedFrame;
use crate::hub::{Hub, InterestAlreadySet, KeyInterest};

/// Prefix of the bus's channel names unless configured otherwise.
pub const DEFAULT_CHANNEL_PREFIX: &str = "syncline:bus:";

/// Messages the publisher's queue holds. A commit queues one per partition it touched (a few
/// hundred for a large group commit) and the publisher sends them in pipelines far faster:
/// the bound is reached only when Redis is slow or unreachable, and then what does not fit is
/// announced as a gap instead (receivers catch up from the log).
pub const PUBLISH_QUEUE_MESSAGES: usize = 4096;

/// Messages sent in one pipeline.
const PUBLISH_BATCH: usize = 64;

/// How long the publisher waits before it tries again to announce gaps Redis did not take.
const GAP_RETRY: Duration = Duration::from_millis(500);

/// Channels named in one SUBSCRIBE or UNSUBSCRIBE (keeps each command a bounded size).
const SUBSCRIBE_BATCH: usize = 512;

/// How long a SUBSCRIBE, UNSUBSCRIBE or PING may take before the connection is taken as lost.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the subscriber pings its connection unless configured otherwise, to notice a
/// connection lost silently (no reset from the peer) within seconds.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// First wait before reconnecting the pub/sub connection; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(50);

/// Longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The Redis a [`RedisBus`] runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisBusServers {
    /// One server (or a primary with replicas behind one address): classic pub/sub.
    Single(String),
    /// A Redis Cluster, given by the URLs of some of its nodes: sharded pub/sub.
    Cluster(Vec<String>),
}

/// How a [`RedisBus`] connects and names its channels.
#[derive(Clone, Debug)]
pub struct RedisBusConfig {
    /// Where Redis is.
    pub servers: RedisBusServers,
    /// Prefix of every channel name ([`DEFAULT_CHANNEL_PREFIX`]).
    pub channel_prefix: Vec<u8>,
    /// This node's id on the bus: messages with this origin are its own and are ignored.
    pub node_id: u64,
    /// How often the pub/sub connection is pinged ([`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
}

impl RedisBusConfig {
    /// Returns the configuration for the server at `url` with the default prefix and a
    /// random node id.
    pub fn new(url: impl Into<String>) -> Self {
        Self::on(RedisBusServers::Single(url.into()))
    }

    /// Returns the configuration for the Redis Cluster reached through `seed_urls` (sharded
    /// pub/sub), with the default prefix and a random node id.
    pub fn cluster(seed_urls: Vec<String>) -> Self {
        Self::on(RedisBusServers::Cluster(seed_urls))
    }

    fn on(servers: RedisBusServers) -> Self {
        Self {
            servers,
            channel_prefix: DEFAULT_CHANNEL_PREFIX.as_bytes().to_vec(),
            node_id: random_node_id(),
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }
}

/// Why a [`RedisBus`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    /// The URL is invalid or Redis could not be reached.
    #[error("cannot connect the node bus to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// The hub already reports its keys to another bus.
    #[error("the hub already has a node bus")]
    HubTaken(#[from] InterestAlreadySet),
}

/// Counters of a [`RedisBus`].
#[derive(Debug, Default)]
pub struct BusStats {
    /// Messages sent to Redis.
    pub published: AtomicU64,
    /// Messages that could not be sent (queue full or Redis error), announced as gaps.
    pub publish_lost: AtomicU64,
    /// Gap messages sent.
    pub gaps_sent: AtomicU64,
    /// Messages received from other nodes and handed to the hub.
    pub received: AtomicU64,
    /// This node's own messages received back, ignored.
    pub own_skipped: AtomicU64,
    /// Malformed messages (logged; the key's live subscribers catch up from the log).
    pub malformed: AtomicU64,
    /// Messages on channels this node no longer follows.
    pub unfollowed_skipped: AtomicU64,
    /// Pub/sub reconnections.
    pub reconnects: AtomicU64,
    /// Keys whose subscription was confirmed to the hub (first or after a reconnect).
    pub follows_confirmed: AtomicU64,
    /// Pings the pub/sub connection answered.
    pub pings: AtomicU64,
    /// Redis Cluster: sharded channels subscribed again after their primary's connection was
    /// lost or their slot moved (each confirmation makes the key's subscribers catch up).
    pub shard_resubscribes: AtomicU64,
}

/// One message waiting for the publisher.
struct Outgoing {
    channel: Vec<u8>,
    /// The last sequence the message covers (for a gap if it is lost).
    to: u64,
    payload: Vec<u8>,
}

/// Per channel, the last sequence published but not sent: announced as a gap.
#[derive(Default)]
struct LostRanges {
    lost: Mutex<HashMap<Vec<u8>, u64>>,
}

impl LostRanges {
    fn record(&self, channel: Vec<u8>, to: u64) {
        let mut lost = self.lost.lock();
        let last = lost.entry(channel).or_insert(to);
        *last = (*last).max(to);
    }

    fn take(&self) -> HashMap<Vec<u8>, u64> {
        std::mem::take(&mut *self.lost.lock())
    }

    fn is_empty(&self) -> bool {
        self.lost.lock().is_empty()
    }
}

/// The keys whose interest changed since the subscriber last looked: `true` to follow.
pub(super) struct Follows<K> {
    pending: Mutex<HashMap<K, bool>>,
    pub(super) changed: Notify,
}

impl<K: BusKey> KeyInterest<K> for Follows<K> {
    fn followed(&self, key: &K) {
        self.pending.lock().insert(key.clone(), true);
        self.changed.notify_one();
    }

    fn unfollowed(&self, key: &K) {
        self.pending.lock().insert(key.clone(), false);
        self.changed.notify_one();
    }
}

impl<K: BusKey> Follows<K> {
    /// Returns an empty set of interest changes.
    pub(super) fn new() -> Self {
        Self { pending: Mutex::new(HashMap::new()), changed: Notify::new() }
    }

    /// Follows `keys` again (after a reconnect), unless they were unfollowed meanwhile.
    pub(super) fn refollow(&self, keys: impl Iterator<Item = K>) {
        let mut pending = self.pending.lock();
        for key in keys {
            pending.entry(key).or_insert(true);
        }
        drop(pending);
        self.changed.notify_one();
    }

    pub(super) fn take(&self) -> HashMap<K, bool> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// The node bus over Redis pub/sub.
pub struct RedisBus<K: BusKey> {
    node_id: u64,
    prefix: Vec<u8>,
    hub: Arc<Hub<K>>,
    queue: mpsc::Sender<Outgoing>,
    lost: Arc<LostRanges>,
    stats: Arc<BusStats>,
}

impl<K: BusKey> RedisBus<K> {
    /// Connects the bus for `hub` and starts its publisher and subscriber tasks on `tracker`;
    /// they stop when `shutdown` fires. Connect it before devices subscribe: keys the hub
    /// already has are followed too, but their sessions may have gone live unconfirmed.
    pub async fn connect(
        config: RedisBusConfig,
        hub: Arc<Hub<K>>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, RedisBusError> {
        let publisher = PublishConnection::connect(&config.servers).await.map_err(RedisBusError::Connect)?;
        let follows = Arc::new(Follows::new());
        hub.set_key_interest(follows.clone())?;
        follows.refollow(hub.keys().into_iter());
        let (queue, outgoing) = mpsc::channel(PUBLISH_QUEUE_MESSAGES);
        let lost = Arc::new(LostRanges::default());
        let stats = Arc::new(BusStats::default());
        let publishing = Publisher {
            connection: publisher,
            queue: outgoing,
            lost: lost.clone(),
            stats: stats.clone(),
            node_id: config.node_id,
        };
        tracker.spawn(publishing.run(shutdown.clone()));
        let subscriber = Subscriber {
            hub: hub.clone(),
            follows,
            prefix: config.channel_prefix.clone(),
            node_id: config.node_id,
            ping_interval: config.ping_interval,
            stats: stats.clone(),
        };
        match config.servers {
            RedisBusServers::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(RedisBusError::Connect)?;
                tracker.spawn(subscriber.run(client, shutdown));
            }
            RedisBusServers::Cluster(seeds) => {
                tracker.spawn(subscriber.run_sharded(seeds, shutdown));
            }
        }
        Ok(Arc::new(Self { node_id: config.node_id, prefix: config.channel_prefix, hub, queue, lost, stats }))
    }

    /// Returns the bus's counters.
    pub fn stats(&self) -> &BusStats {
        &self.stats
    }

    /// Returns this node's id on the bus.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }
}

impl<K: BusKey> NodeBus<K> for RedisBus<K> {
    /// Queues `frame` to this node's hub at once, and to Redis for the other nodes.
    fn publish(&self, key: &K, from: u64, to: u64, frame: &Arc<EncodedFrame>) {
        self.hub.publish(key, from, to, frame);
        let message = BusMessage::Frame {
            origin: self.node_id,
            from,
            to,
            committed_at_micros: frame.committed_at().map_or(0, wall_clock_micros),
            frame: frame.binary().clone(),
        };
        let outgoing = Outgoing { channel: channel_name(&self.prefix, key), to, payload: message.encode() };
        match self.queue.try_send(outgoing) {
            Ok(()) => {}
            Err(TrySendError::Full(outgoing) | TrySendError::Closed(outgoing)) => {
                self.stats.publish_lost.fetch_add(1, Ordering::Relaxed);
                self.lost.record(outgoing.channel, outgoing.to);
            }
        }
    }
}

/// The publisher's connection: to one server, or to a Redis Cluster (which routes each
/// `SPUBLISH` to the primary of its channel's slot, following `MOVED` redirections).
enum PublishConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl PublishConnection {
    async fn connect(servers: &RedisBusServers) -> redis::RedisResult<Self> {
        match servers {
            RedisBusServers::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                Ok(Self::Single(client.get_connection_manager_with_config(config).await?))
            }
            RedisBusServers::Cluster(seeds) => {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Sends `messages` (channel, payload), those of one channel in their order. Returns
    /// the channels whose messages may not all have been sent, with the error.
    async fn send(&mut self, messages: Vec<(&[u8], &[u8])>) -> Vec<(Vec<u8>, redis::RedisError)> {
        match self {
            Self::Single(connection) => {
                let mut pipeline = redis::pipe();
                for (channel, payload) in &messages {
                    pipeline.cmd("PUBLISH").arg(*channel).arg(*payload).ignore();
                }
                match pipeline.exec_async(connection).await {
                    Ok(()) => Vec::new(),
                    Err(error) => messages.iter().map(|(channel, _)| (channel.to_vec(), error.clone())).collect(),
                }
            }
            // A cluster pipeline must stay in one slot: one SPUBLISH per message, the
            // channels concurrently (the connection pipelines them per primary), each
            // channel's in order.
            Self::Cluster(connection) => {
                let mut by_channel: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
                let mut index: HashMap<&[u8], usize> = HashMap::new();
                for (channel, payload) in messages {
                    let at = *index.entry(channel).or_insert_with(|| {
                        by_channel.push((channel, Vec::new()));
                        by_channel.len() - 1
                    });
                    by_channel[at].1.push(payload);
                }
                let sends = by_channel.into_iter().map(|(channel, payloads)| {
                    let mut connection = connection.clone();
                    async move {
                        for payload in payloads {
                            let sent: redis::RedisResult<i64> =
                                redis::cmd("SPUBLISH").arg(channel).arg(payload).query_async(&mut connection).await;
                            if let Err(error) = sent {
                                return Some((channel.to_vec(), error));
                            }
                        }
                        None
                    }
                });
                futures_util::future::join_all(sends).await.into_iter().flatten().collect()
            }
        }
    }
}

/// The publisher task's state.
struct Publisher {
    connection: PublishConnection,
    queue: mpsc::Receiver<Outgoing>,
    lost: Arc<LostRanges>,
    stats: Arc<BusStats>,
    node_id: u64,
}

impl Publisher {
    /// Sends queued messages (and gaps) in pipelines until shutdown.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        loop {
            let retry_gaps = !self.lost.is_empty();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                taken = self.queue.recv_many(&mut batch, PUBLISH_BATCH) => if taken == 0 { return },
                () = tokio::time::sleep(GAP_RETRY), if retry_gaps => {}
            }
            let gaps = self.lost.take();
            if batch.is_empty() && gaps.is_empty() {
                continue;
            }
            let gap_messages: Vec<(&[u8], Vec<u8>)> = gaps
                .iter()
                .map(|(channel, to)| (channel.as_slice(), BusMessage::Gap { origin: self.node_id, to: *to }.encode()))
                .collect();
            let mut messages: Vec<(&[u8], &[u8])> =
                gap_messages.iter().map(|(channel, gap)| (*channel, gap.as_slice())).collect();
            messages.extend(batch.iter().map(|outgoing| (outgoing.channel.as_slice(), outgoing.payload.as_slice())));
            let failed = self.connection.send(messages).await;
            if failed.is_empty() {
                self.stats.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.stats.gaps_sent.fetch_add(gaps.len() as u64, Ordering::Relaxed);
            } else {
                let failed: HashMap<Vec<u8>, redis::RedisError> = failed.into_iter().collect();
                if let Some(error) = failed.values().next() {
                    tracing::warn!(%error, channels = failed.len(), "node bus publish failed, announcing gaps later");
                }
                for (channel, to) in &gaps {
                    if failed.contains_key(channel) {
                        self.lost.record(channel.clone(), *to);
                    } else {
                        self.stats.gaps_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for outgoing in &batch {
                    if failed.contains_key(&outgoing.channel) {
                        self.stats.publish_lost.fetch_add(1, Ordering::Relaxed);
                        self.lost.record(outgoing.channel.clone(), outgoing.to);
                    } else {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            batch.clear();
        }
    }
}

/// The subscriber task's state (one server: [`Subscriber::run`]; a Redis Cluster:
/// [`Subscriber::run_sharded`]).
pub(super) struct Subscriber<K: BusKey> {
    pub(super) hub: Arc<Hub<K>>,
    pub(super) follows: Arc<Follows<K>>,
    pub(super) prefix: Vec<u8>,
    pub(super) node_id: u64,
    pub(super) ping_interval: Duration,
    pub(super) stats: Arc<BusStats>,
}

/// Why a pub/sub connection was given up.
pub(super) enum ConnectionEnd {
    Shutdown,
    Lost,
}

impl<K: BusKey> Subscriber<K> {
    /// Keeps a pub/sub connection from `client` following the hub's keys until shutdown,
    /// reconnecting with backoff.
    async fn run(self, client: redis::Client, shutdown: CancellationToken) {
        // Channel → key, for the channels subscribed on the current connection.
        let mut subscribed: HashMap<Vec<u8>, K> = HashMap::new();
        let mut connected_before = false;
        loop {
            let Some(pubsub) = connect_until_up(|| client.get_async_pubsub(), &shutdown).await else { return };
            if connected_before {
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(keys = subscribed.len(), "node bus pub/sub reconnected, following every key again");
            }
            connected_before = true;
            // The new connection follows nothing yet: everything followed is followed and
            // confirmed again, which makes the live subscribers catch up from the log.
            self.follows.refollow(subscribed.drain().map(|(_, key)| key));
            let (mut sink, stream) = pubsub.split();
            match self.serve(&mut sink, stream, &mut subscribed, &shutdown).await {
                ConnectionEnd::Shutdown => return,
                ConnectionEnd::Lost => {}
            }
        }
    }

    /// Serves one connection: delivers messages, applies interest changes, pings.
    async fn serve(
        &self,
        sink: &mut PubSubSink,
        mut stream: redis::aio::PubSubStream,
        subscribed: &mut HashMap<Vec<u8>, K>,
        shutdown: &CancellationToken,
    ) -> ConnectionEnd {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return ConnectionEnd::Shutdown,
                () = self.follows.changed.notified() => {
                    if let Err(error) = self.reconcile(sink, subscribed).await {
                        tracing::warn!(%error, "node bus cannot change its subscriptions, reconnecting");
                        return ConnectionEnd::Lost;
                    }
                }
                message = stream.next() => match message {
                    Some(message) => self.deliver(&message, subscribed),
                    None => {
                        tracing::warn!("node bus pub/sub connection lost, reconnecting");
                        return ConnectionEnd::Lost;
                    }
                },
                _ = ping.tick() => {
                    let pinged = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pinged, Ok(Ok(_))) {
                        tracing::warn!("node bus pub/sub connection does not answer pings, reconnecting");
                        return ConnectionEnd::Lost;
                    }
                    self.stats.pings.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Subscribes to the keys followed since the last call, unsubscribes from those
    /// unfollowed, then confirms the followed ones to the hub.
    async fn reconcile(
        &self,
        sink: &mut PubSubSink,
        subscribed: &mut HashMap<Vec<u8>, K>,
    ) -> Result<(), SubscriptionFailed> {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        let mut confirm = Vec::new();
        for (key, follow) in self.follows.take() {
            let channel = channel_name(&self.prefix, &key);
            if follow {
                if let std::collections::hash_map::Entry::Vacant(entry) = subscribed.entry(channel) {
                    subscribe.push(entry.key().clone());
                    entry.insert(key.clone());
                }
                confirm.push(key);
            } else if subscribed.remove(&channel).is_some() {
                unsubscribe.push(channel);
            }
        }
        for channels in unsubscribe.chunks(SUBSCRIBE_BATCH) {
            within_timeout(sink.unsubscribe(channels)).await?;
        }
        for channels in subscribe.chunks(SUBSCRIBE_BATCH) {
            within_timeout(sink.subscribe(channels)).await?;
        }
        // Confirmed: every message published from now on reaches this connection, after
        // the confirmation.
        for key in &confirm {
            self.hub.bus_followed(key);
        }
        self.stats.follows_confirmed.fetch_add(confirm.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Hands one received message to the hub. A malformed one is logged and counted, and
    /// the key's live subscribers catch up from the log (whatever it carried is lost).
    pub(super) fn deliver(&self, message: &redis::Msg, subscribed: &HashMap<Vec<u8>, K>) {
        let channel: Vec<u8> = message.get_channel().unwrap_or_default();
        let Some(key) = subscribed.get(&channel) else {
            self.stats.unfollowed_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let decoded = BusMessage::decode(message.get_payload_bytes());
        if decoded.as_ref().is_ok_and(|decoded| decoded.origin() == self.node_id) {
            self.stats.own_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let error = match decoded {
            Ok(BusMessage::Gap { to, .. }) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                self.hub.demote_expecting(key, to);
                return;
            }
            Ok(BusMessage::Frame { from, to, committed_at_micros, frame, .. }) => {
                match received_frame(frame, committed_at_micros) {
                    Ok(frame) => {
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        self.hub.publish(key, from, to, &frame);
                        return;
                    }
                    Err(error) => error.to_string(),
                }
            }
            Err(error) => error.to_string(),
        };
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        let demoted = self.hub.demote_expecting(key, u64::MAX);
        tracing::warn!(error, demoted, "dropping a malformed node bus message, its subscribers catch up from the log");
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE that failed or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub(super) enum SubscriptionFailed {
    #[error("redis refused the command: {0}")]
    Refused(#[source] redis::RedisError),
    #[error("redis did not answer within {COMMAND_TIMEOUT:?}")]
    TimedOut,
}

pub(super) async fn within_timeout(
    command: impl Future<Output = redis::RedisResult<()>>,
) -> Result<(), SubscriptionFailed> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(SubscriptionFailed::Refused(error)),
        Err(_elapsed) => Err(SubscriptionFailed::TimedOut),
    }
}

/// Builds the received frame, with its commit time on this node's monotonic clock.
fn received_frame(frame: Bytes, committed_at_micros: u64) -> Result<Arc<EncodedFrame>, prost::DecodeError> {
    let committed_at = (committed_at_micros != 0).then(|| {
        let age = wall_clock_micros(Instant::now()).saturating_sub(committed_at_micros);
        let now = Instant::now();
        now.checked_sub(Duration::from_micros(age)).unwrap_or(now)
    });
    EncodedFrame::from_encoded(frame, committed_at)
}

/// Returns `at` on the wall clock, in microseconds since the Unix epoch.
fn wall_clock_micros(at: Instant) -> u64 {
    let wall = SystemTime::now().checked_sub(at.elapsed()).unwrap_or_else(SystemTime::now);
    wall.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Calls `connect` until it succeeds (each attempt within [`COMMAND_TIMEOUT`]), waiting
/// with backoff between failures; `None` at shutdown.
pub(super) async fn connect_until_up<T, F: Future<Output = redis::RedisResult<T>>>(
    mut connect: impl FnMut() -> F,
    shutdown: &CancellationToken,
) -> Option<T> {
    let mut backoff = RECONNECT_MIN;
    loop {
        let connected = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            connected = tokio::time::timeout(COMMAND_TIMEOUT, connect()) => connected,
        };
        match connected {
            Ok(Ok(connection)) => return Some(connection),
            Ok(Err(error)) => tracing::warn!(%error, ?backoff, "node bus cannot connect its pub/sub connection"),
            Err(_elapsed) => tracing::warn!(?backoff, "node bus pub/sub connection timed out"),
        }
        if wait_or_shutdown(backoff, shutdown).await {
            return None;
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Waits `delay`; returns true if shutdown fired first.
pub(super) async fn wait_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Returns a node id that differs between processes and between buses of one process.
fn random_node_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(CREATED.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos()));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_survive_the_wall_clock_round_trip() {
        let committed = Instant::now().checked_sub(Duration::from_millis(250)).unwrap_or_else(Instant::now);
        let micros = wall_clock_micros(committed);
        let frame = EncodedFrame::new(syncline_proto::v1::ServerFrame::default());
        let received = received_frame(frame.binary().clone(), micros).unwrap();
        let age = received.committed_at().expect("a commit time").elapsed();
        assert!(age >= Duration::from_millis(240) && age < Duration::from_secs(60), "{age:?}");
        assert!(received_frame(frame.binary().clone(), 0).unwrap().committed_at().is_none());
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(random_node_id(), random_node_id());
    }

    #[test]
    fn lost_ranges_keep_the_last_sequence_per_channel() {
        let lost = LostRanges::default();
        lost.record(b"a".to_vec(), 5);
        lost.record(b"a".to_vec(), 3);
        lost.record(b"b".to_vec(), 1);
        let taken = lost.take();
        assert_eq!(taken.get(b"a".as_slice()), Some(&5));
        assert_eq!(taken.get(b"b".as_slice()), Some(&1));
        assert!(lost.is_empty());
    }
}
