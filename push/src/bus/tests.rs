//! Node bus tests against a real `redis-server` each test starts on a free loopback port:
//! two hubs ("nodes") joined by two Redis buses.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use syncline_proto::v1::{Changes, ServerFrame, server_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::hub::{Hub, Subscription};
use crate::outbox::{Outbox, Outgoing};

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

impl BusKey for u64 {
    fn write_bus_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
    }
}

/// A `redis-server` of this test, stopped (by its PID) and its directory removed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server without persistence on a free loopback port and waits until it answers.
    async fn start() -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let dir = std::env::temp_dir().join(format!("syncline-bus-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self { child, port, dir };
        let started = Instant::now();
        loop {
            if let Ok(mut connection) = server.connection().await
                && ::redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
            {
                return server;
            }
            assert!(started.elapsed() < DEADLINE, "redis-server did not start within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn connection(&self) -> ::redis::RedisResult<::redis::aio::MultiplexedConnection> {
        ::redis::Client::open(self.url())?.get_multiplexed_async_connection().await
    }

    /// Returns the number of subscribers of `channel`.
    async fn subscribers(&self, channel: &[u8]) -> u64 {
        let mut connection = self.connection().await.expect("a command connection");
        let (_, count): (Vec<u8>, u64) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node: its hub and its Redis bus.
struct Node {
    hub: Arc<Hub<u64>>,
    bus: Arc<RedisBus<u64>>,
}

/// Connected nodes and what stops their tasks.
struct Cluster {
    redis: RedisServer,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Cluster {
    async fn start() -> Self {
        Self { redis: RedisServer::start().await, tracker: TaskTracker::new(), shutdown: CancellationToken::new() }
    }

    async fn node(&self) -> Node {
        let hub = Hub::new();
        let bus =
            RedisBus::connect(RedisBusConfig::new(self.redis.url()), hub.clone(), self.shutdown.clone(), &self.tracker)
                .await
                .expect("the bus connects");
        Node { hub, bus }
    }

    /// Stops every bus task and waits for them (bounded).
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(DEADLINE, self.tracker.wait()).await.expect("the bus tasks stop");
    }
}

/// Waits until `probe` holds, failing the test after [`DEADLINE`].
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let started = Instant::now();
    while !probe() {
        assert!(started.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn changes(from: u64, to: u64) -> Arc<EncodedFrame> {
    let frame = ServerFrame { msg: Some(server_frame::Msg::Changes(Changes { from, to, ..Default::default() })) };
    EncodedFrame::live(frame, std::time::Instant::now())
}

/// Receives the next frame's range, failing the test after [`DEADLINE`].
async fn next_range(rx: &mut mpsc::Receiver<Outgoing>) -> (u64, u64) {
    let received = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("a frame in time").expect("an open queue");
    let Outgoing::Frame(frame) = received else { panic!("only frames are published") };
    match &frame.frame().msg {
        Some(server_frame::Msg::Changes(changes)) => (changes.from, changes.to),
        other => panic!("unexpected frame {other:?}"),
    }
}

/// Subscribes to `key` on `node`, waits until the bus has confirmed the key if this is its
/// first subscriber, and goes live after `read` (the confirmation makes the first go_live
/// read again).
async fn live_subscriber(node: &Node, key: u64, read: u64) -> (Subscription<u64>, mpsc::Receiver<Outgoing>) {
    let first = node.hub.subscriber_count(&key) == 0;
    let confirmed = node.bus.stats().follows_confirmed.load(Ordering::Relaxed);
    let (outbox, rx) = Outbox::for_test(64);
    let subscription = node.hub.subscribe(key, outbox);
    if first {
        let stats = node.bus.stats();
        eventually("the key is followed", || stats.follows_confirmed.load(Ordering::Relaxed) > confirmed).await;
    }
    let went_live = (0..2).any(|_| subscription.go_live(read));
    assert!(went_live, "live after one more read at most");
    (subscription, rx)
}

#[tokio::test]
async fn frames_published_on_one_node_reach_the_others_in_order_exactly_once() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let (_on_b, mut b_rx) = live_subscriber(&b, 1, 0).await;
    let (_on_a, mut a_rx) = live_subscriber(&a, 1, 0).await;
    for seq in 1..=5 {
        NodeBus::publish(&*a.bus, &1, seq, seq, &changes(seq, seq));
    }
    NodeBus::publish(&*a.bus, &1, 6, 8, &changes(6, 8));
    let expected = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 8)];
    for range in expected {
        assert_eq!(next_range(&mut b_rx).await, range, "node b");
        assert_eq!(next_range(&mut a_rx).await, range, "node a, delivered directly");
    }
    // Node a's own messages come back through Redis and are ignored: nothing twice.
    eventually("node a skips its own messages", || a.bus.stats().own_skipped.load(Ordering::Relaxed) == 6).await;
    assert!(a_rx.try_recv().is_err() && b_rx.try_recv().is_err());
    assert_eq!(b.bus.stats().received.load(Ordering::Relaxed), 6);
    assert_eq!(a.hub.stats().demoted.load(Ordering::Relaxed) + b.hub.stats().demoted.load(Ordering::Relaxed), 0);
    cluster.stop().await;
}

/// The server's hub sweeps on tasks: frames from the bus reach every shard, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_the_bus_reach_a_hub_with_sweeper_tasks() {
    let cluster = Cluster::start().await;
    let a = cluster.node().await;
    let hub = Hub::with_sweepers(2, Duration::ZERO, &cluster.tracker, cluster.shutdown.clone());
    let config = RedisBusConfig::new(cluster.redis.url());
    let bus =
        RedisBus::connect(config, hub.clone(), cluster.shutdown.clone(), &cluster.tracker).await.expect("connects");
    let b = Node { hub, bus };
    let (_first, mut first_rx) = live_subscriber(&b, 2, 0).await;
    let (_second, mut second_rx) = live_subscriber(&b, 2, 0).await;
    for seq in 1..=20 {
        NodeBus::publish(&*a.bus, &2, seq, seq, &changes(seq, seq));
    }
    for seq in 1..=20 {
        assert_eq!(next_range(&mut first_rx).await, (seq, seq));
        assert_eq!(next_range(&mut second_rx).await, (seq, seq));
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_node_subscribes_to_exactly_the_keys_it_has_subscribers_for() {
    let cluster = Cluster::start().await;
    let node = cluster.node().await;
    let channel = channel_name(DEFAULT_CHANNEL_PREFIX.as_bytes(), &7u64);
    assert_eq!(cluster.redis.subscribers(&channel).await, 0);
    let (first, _first_rx) = live_subscriber(&node, 7, 0).await;
    let (second, _second_rx) = live_subscriber(&node, 7, 0).await;
    assert_eq!(cluster.redis.subscribers(&channel).await, 1, "one pub/sub subscription per node and key");
    drop(first);
    assert_eq!(cluster.redis.subscribers(&channel).await, 1, "a subscriber is left");
    drop(second);
    let started = Instant::now();
    while cluster.redis.subscribers(&channel).await != 0 {
        assert!(started.elapsed() < DEADLINE, "the node did not unsubscribe within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_lost_pubsub_connection_demotes_live_subscribers_then_frames_flow_again() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let (on_b, mut b_rx) = live_subscriber(&b, 3, 0).await;
    NodeBus::publish(&*a.bus, &3, 1, 1, &changes(1, 1));
    assert_eq!(next_range(&mut b_rx).await, (1, 1));

    let mut connection = cluster.redis.connection().await.expect("a command connection");
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut connection)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "node b's; node a follows nothing, so its connection is not in pub/sub mode");
    // Whatever was published meanwhile may be lost: after resubscribing, the live subscriber
    // is told to catch up from the log, from what it has.
    let mut demoted = None;
    eventually("the live subscriber is demoted", || {
        demoted = on_b.take_demoted();
        demoted.is_some()
    })
    .await;
    assert_eq!(demoted, Some(1));
    assert!(b.bus.stats().reconnects.load(Ordering::Relaxed) >= 1);
    // Caught up from the log (here: nothing new), it goes live and frames flow again.
    assert!(on_b.go_live(1));
    NodeBus::publish(&*a.bus, &3, 2, 2, &changes(2, 2));
    assert_eq!(next_range(&mut b_rx).await, (2, 2));
    cluster.stop().await;
}

#[tokio::test]
async fn frames_already_read_from_the_log_are_skipped_and_malformed_ones_make_subscribers_catch_up() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let (on_b, mut b_rx) = live_subscriber(&b, 4, 5).await;
    // The session read 1..=5 from the log before these arrived: skipped, not a gap.
    NodeBus::publish(&*a.bus, &4, 3, 5, &changes(3, 5));
    NodeBus::publish(&*a.bus, &4, 6, 6, &changes(6, 6));
    assert_eq!(next_range(&mut b_rx).await, (6, 6));
    assert_eq!(on_b.take_demoted(), None);

    let channel = channel_name(DEFAULT_CHANNEL_PREFIX.as_bytes(), &4u64);
    let mut connection = cluster.redis.connection().await.expect("a command connection");
    let _: u64 =
        ::redis::cmd("PUBLISH").arg(&channel).arg(b"garbage").query_async(&mut connection).await.expect("PUBLISH");
    eventually("the malformed message is counted", || b.bus.stats().malformed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(on_b.take_demoted(), Some(6), "whatever it carried is read from the log");
    assert!(b_rx.try_recv().is_err());
    cluster.stop().await;
}

/// The test's runtime has one thread: the bus's subscriber task cannot run between the
/// subscribe and the go_live, so the session goes live before the key is followed.
#[tokio::test]
async fn a_session_live_before_the_subscription_is_confirmed_catches_up_once_it_is() {
    let cluster = Cluster::start().await;
    let node = cluster.node().await;
    let (outbox, _rx) = Outbox::for_test(8);
    let early = node.hub.subscribe(8, outbox);
    assert!(early.go_live(0), "sessions never wait for the bus");
    let mut demoted = None;
    eventually("the confirmation demotes it", || {
        demoted = early.take_demoted();
        demoted.is_some()
    })
    .await;
    assert_eq!(demoted, Some(0), "it reads the log again, after the confirmation");
    assert!(early.go_live(0));
    cluster.stop().await;
}

/// Killing the publisher's connection: the next publish either reaches node b after the
/// connection manager reconnects, or fails and is announced as a gap; never lost silently.
#[tokio::test]
async fn a_publish_that_fails_is_delivered_or_announced_as_a_gap() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.node().await, cluster.node().await);
    let (on_b, mut b_rx) = live_subscriber(&b, 9, 0).await;
    let mut connection = cluster.redis.connection().await.expect("a command connection");
    let _: u64 =
        ::redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal"]).query_async(&mut connection).await.expect("KILL");
    NodeBus::publish(&*a.bus, &9, 1, 1, &changes(1, 1));
    let started = Instant::now();
    loop {
        if let Ok(outgoing) = b_rx.try_recv() {
            let Outgoing::Frame(frame) = outgoing else { panic!("only frames are published") };
            assert!(matches!(&frame.frame().msg, Some(server_frame::Msg::Changes(c)) if (c.from, c.to) == (1, 1)));
            break;
        }
        if let Some(queued_to) = on_b.take_demoted() {
            assert_eq!(queued_to, 0, "catches up from the log from what it has");
            assert!(a.bus.stats().gaps_sent.load(Ordering::Relaxed) >= 1);
            assert!(on_b.go_live(1), "read 1 from the log");
            break;
        }
        assert!(started.elapsed() < DEADLINE, "sequence 1 was neither delivered nor announced as lost");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    NodeBus::publish(&*a.bus, &9, 2, 2, &changes(2, 2));
    assert_eq!(next_range(&mut b_rx).await, (2, 2));
    cluster.stop().await;
}

#[tokio::test]
async fn pings_keep_a_healthy_connection_and_its_live_subscribers() {
    let cluster = Cluster::start().await;
    let hub = Hub::new();
    let config =
        RedisBusConfig { ping_interval: Duration::from_millis(10), ..RedisBusConfig::new(cluster.redis.url()) };
    let bus =
        RedisBus::connect(config, hub.clone(), cluster.shutdown.clone(), &cluster.tracker).await.expect("connects");
    let node = Node { hub, bus };
    let (on_node, _rx) = live_subscriber(&node, 6, 0).await;
    let pings = node.bus.stats().pings.load(Ordering::Relaxed);
    eventually("pings are answered", || node.bus.stats().pings.load(Ordering::Relaxed) >= pings + 3).await;
    assert_eq!(node.bus.stats().reconnects.load(Ordering::Relaxed), 0);
    assert_eq!(on_node.take_demoted(), None);
    cluster.stop().await;
}

#[tokio::test]
async fn a_gap_message_demotes_the_subscribers_that_miss_it() {
    let cluster = Cluster::start().await;
    let b = cluster.node().await;
    let (on_b, _b_rx) = live_subscriber(&b, 5, 2).await;
    let channel = channel_name(DEFAULT_CHANNEL_PREFIX.as_bytes(), &5u64);
    let mut connection = cluster.redis.connection().await.expect("a command connection");
    let gap = BusMessage::Gap { origin: b.bus.node_id() ^ 1, to: 3 }.encode();
    let _: u64 = ::redis::cmd("PUBLISH").arg(&channel).arg(gap).query_async(&mut connection).await.expect("PUBLISH");
    let mut demoted = None;
    eventually("the gap demotes", || {
        demoted = on_b.take_demoted();
        demoted.is_some()
    })
    .await;
    assert_eq!(demoted, Some(2));
    cluster.stop().await;
}
