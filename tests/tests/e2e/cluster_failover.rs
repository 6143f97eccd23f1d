//! Cluster failover (issue 16, item 6): Syncline nodes on one Redis are killed with SIGKILL
//! at random moments while backends ingest, devices sync and devices' mutations are sent to
//! a channel; nodes lose their pub/sub connections or are paused. Nothing acknowledged is
//! lost, no mutation takes effect twice, every device of a dead node resumes on another
//! node and converges, and the dead node's capture and mutation dispatch move to a live
//! node within the configured lease time.
//!
//! The nodes are `syncline serve` processes (a SIGKILL must be real); Redis is a real
//! `redis-server` with AOF and `appendfsync always`; the channel is the Python example
//! channel, which counts every write call it receives (`write_calls`) and creates one task
//! per mutation id whatever the number of calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use syncline_client_sim::{Device, DeviceConfig, DeviceHandle, PartitionId, SubscriptionConfig};
use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{ClientFrame, ErrorCode, Mutate, MutationOp, PushRequest, Record, Value, client_frame};
use syncline_server::storage::redis::{RedisOptions, RedisStore};
use syncline_server::test_util::redis_server::RedisServer;
use syncline_tests::process::{ServerProcess, free_port};
use syncline_tests::{DEADLINE, PythonChannel, eventually, record};

/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_syncline-under-test");
/// Nodes of the cluster.
const NODES: usize = 3;
/// Nodes killed, one after the other, in the main test.
const KILLS: usize = 20;
/// The lease TTL the nodes run with (short, so that twenty takeovers fit in a short test).
const LEASE_TTL_MS: u64 = 1_000;
/// How often the nodes sweep for mutations no node dispatches.
const SWEEP_INTERVAL_MS: u64 = 300;
/// How long a dead node's capture and dispatch may take to move and its devices to catch up
/// elsewhere: the lease TTL, a sweep, a lane's retry, a device's reconnect, with room for a
/// debug build on a busy machine.
const TAKEOVER: Duration = Duration::from_secs(15);
/// Tasks each device creates in each round: enough that a kill often lands while some are
/// being sent to the channel.
const TASKS_PER_ROUND: usize = 5;
/// The user every device logs in as (its Task partition is keyed by it).
const USER: &str = "demo";

/// One `syncline serve` process of the cluster.
struct Node {
    process: ServerProcess,
    device_port: u16,
    grpc_port: u16,
    data_dir: PathBuf,
}

impl Node {
    fn start(config: &Path, data_dir: PathBuf, device_port: u16, grpc_port: u16) -> Self {
        std::fs::create_dir_all(&data_dir).unwrap();
        let process = ServerProcess::start_with(SERVER, &data_dir, device_port, grpc_port, Some(config));
        let (device_port, grpc_port) = (process.device_port(), process.grpc_port());
        Self { process, device_port, grpc_port, data_dir }
    }

    /// Starts the node again on its ports after it was killed.
    fn restart(config: &Path, (data_dir, device_port, grpc_port): (PathBuf, u16, u16)) -> Self {
        Self::start(config, data_dir, device_port, grpc_port)
    }

    fn device_url(&self) -> String {
        self.process.device_url.clone()
    }

    fn grpc_url(&self) -> String {
        self.process.grpc_url.clone()
    }

    /// Kills the node with SIGKILL; returns what restarts it.
    fn kill(self) -> (PathBuf, u16, u16) {
        self.process.kill();
        (self.data_dir, self.device_port, self.grpc_port)
    }
}

/// Redis, the channel, the config the nodes share, and the nodes.
struct Cluster {
    redis: Redis,
    channel: Option<PythonChannel>,
    config: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Option<Node>>,
}

/// The cluster's Redis: the test helper's, or one this test restarts on its port and files.
enum Redis {
    Helper(RedisServer),
    Restartable(RestartableRedis),
}

impl Redis {
    fn url(&self) -> String {
        match self {
            Redis::Helper(server) => server.url(),
            Redis::Restartable(server) => server.url(),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Redis::Helper(server) => server.port(),
            Redis::Restartable(server) => server.port,
        }
    }
}

impl Cluster {
    /// Starts Redis, the Task channel and `nodes` nodes; adds the device user.
    fn start(nodes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
        Self::start_on(Redis::Helper(RedisServer::start()), Some(channel), dir, nodes)
    }

    /// Starts `nodes` nodes on `redis` (with the Task source when there is a `channel`).
    fn start_on(redis: Redis, channel: Option<PythonChannel>, dir: tempfile::TempDir, nodes: usize) -> Self {
        let config = dir.path().join("cluster.toml");
        let mut text = format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n\
             [cluster]\nlease_ttl_ms = {LEASE_TTL_MS}\nsweep_interval_ms = {SWEEP_INTERVAL_MS}\n\n\
             [sources.Account]\npartitioning = \"app\"\n\n",
            redis.url()
        );
        if let Some(channel) = &channel {
            text.push_str(&format!(
                "[sources.Task]\npartitioning = \"user\"\nchannel = \"{}\"\ncapture = \"watch\"\n",
                channel.url
            ));
        }
        std::fs::write(&config, text).unwrap();
        let store = RedisStore::open(&RedisOptions::single(redis.url()), None).expect("the store opens");
        syncline_server::auth::add_user(&store, USER, USER).expect("user added");
        let nodes = (0..nodes)
            .map(|index| Some(Node::start(&config, dir.path().join(format!("node-{index}")), 0, 0)))
            .collect();
        Self { redis, channel, config, dir, nodes }
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("a live node")
    }

    fn grpc_urls(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(Node::grpc_url).collect()
    }

    fn subscriptions(&self, config: DeviceConfig) -> DeviceConfig {
        let config = config.subscribe(SubscriptionConfig::new("Account"));
        if self.channel.is_some() { config.subscribe(SubscriptionConfig::new("Task")) } else { config }
    }

    /// The partitions devices of this cluster follow.
    fn partitions(&self) -> &'static [(&'static str, &'static str)] {
        if self.channel.is_some() { &[("Account", "*"), ("Task", USER)] } else { &[("Account", "*")] }
    }
}

/// A `redis-server` with AOF and `appendfsync always` on a fixed port and directory, which
/// the test kills (SIGKILL, by its pid) and starts again on the same files.
struct RestartableRedis {
    child: Option<std::process::Child>,
    port: u16,
    dir: PathBuf,
}

impl RestartableRedis {
    async fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { child: None, port: free_port(), dir };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server on its port and files and waits until it answers.
    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--logfile", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let port = self.port;
        eventually(DEADLINE, "redis to answer", || async move {
            let answer = redis_cli_port(port, &["PING"]);
            answer.contains("PONG").then_some(())
        })
        .await;
    }

    /// Kills the server (SIGKILL): what it acknowledged is in its append-only file.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }
}

impl Drop for RestartableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device of the test: its handle, where its mutation queue is kept, and the node it is
/// connected to.
struct TestDevice {
    handle: DeviceHandle,
    queue_file: PathBuf,
    node: usize,
}

impl TestDevice {
    fn start(cluster: &Cluster, node: usize, name: &str) -> Self {
        let queue_file = cluster.dir.path().join(format!("{name}.queue"));
        let config = cluster
            .subscriptions(DeviceConfig::new(cluster.node(node).device_url(), USER, USER))
            .with_mutation_store(&queue_file);
        Self { handle: Device::start(config), queue_file, node }
    }

    /// Stops the device and starts it again on `node`, as itself, from what it holds: its
    /// cursors, its records and its unfinished mutations.
    async fn move_to(self, cluster: &Cluster, node: usize) -> Self {
        let client_id = self.handle.client_id();
        let views: Vec<(PartitionId, _)> = cluster
            .partitions()
            .iter()
            .filter_map(|(source, key)| {
                let view = self.handle.synced_view(source, key)?;
                Some((PartitionId { source: (*source).into(), key: (*key).into() }, view))
            })
            .collect();
        self.handle.stop().await;
        let mut config = cluster
            .subscriptions(DeviceConfig::new(cluster.node(node).device_url(), USER, USER))
            .with_mutation_store(&self.queue_file);
        config.client_id = client_id;
        for (partition, view) in views {
            config = config.restore(partition, view);
        }
        Self { handle: Device::start(config), queue_file: self.queue_file, node }
    }

    /// Creates a task; returns its mutation id.
    fn create_task(&self, title: &str) -> String {
        let fields: BTreeMap<String, Value> = [("title".to_owned(), Value::string(title))].into();
        let temp_id = self.handle.create("Task", None, fields).expect("queued");
        self.handle
            .mutations()
            .into_iter()
            .find(|mutation| mutation.id == temp_id)
            .map(|mutation| mutation.mutation_id)
            .expect("the create is queued")
    }

    /// Waits until the Task partition's log has given the device `count` tasks (capture
    /// brought back what the device created).
    async fn wait_for_logged_tasks(&self, count: usize, within: Duration, what: &str) {
        let what = format!("{what}: {count} tasks to come back through capture");
        eventually(within, &what, || async {
            let logged = self.handle.synced_view("Task", USER).map_or(0, |view| view.records.len());
            (logged >= count).then_some(())
        })
        .await;
    }

    /// Waits until every mutation of the device has its outcome.
    async fn wait_for_outcomes(&self, within: Duration, what: &str) {
        let what = format!("{what}: every mutation's outcome");
        eventually(within, &what, || async { self.handle.mutations().is_empty().then_some(()) }).await;
    }
}

/// Pushes batches of Account records to the live nodes in turn until stopped; keeps the
/// records whose Push returned OK.
struct Pusher {
    acked: Arc<Mutex<BTreeMap<String, Record>>>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    fn start(targets: Vec<String>) -> Self {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let targets = Arc::new(Mutex::new(targets));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(push_until_stopped(acked.clone(), targets.clone(), stop.clone()));
        Self { acked, targets, stop, task }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn finish(self) -> BTreeMap<String, Record> {
        self.stop.cancel();
        self.task.await.expect("the pusher ends");
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

async fn push_until_stopped(
    acked: Arc<Mutex<BTreeMap<String, Record>>>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut clients: BTreeMap<String, IngestClient<tonic::transport::Channel>> = BTreeMap::new();
    for batch in 0u32.. {
        if stop.is_cancelled() {
            return;
        }
        let live = targets.lock().unwrap().clone();
        if live.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let url = live[batch as usize % live.len()].clone();
        if !clients.contains_key(&url) {
            match IngestClient::connect(url.clone()).await {
                Ok(client) => {
                    clients.insert(url.clone(), client);
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let upserts: Vec<Record> = (0..5).map(|i| record(&format!("b{batch:06}-{i}"), i64::from(batch))).collect();
        let request =
            PushRequest { source: "Account".into(), key: "*".into(), upserts: upserts.clone(), deletes: vec![] };
        let Some(client) = clients.get_mut(&url) else { continue };
        match tokio::time::timeout(Duration::from_secs(5), client.push(request)).await {
            Ok(Ok(_)) => acked.lock().unwrap().extend(upserts.into_iter().map(|record| (record.id.clone(), record))),
            // Not acknowledged: the node died or Redis was away mid-call. The next attempt
            // waits a little so that an outage is not a busy loop.
            Ok(Err(_)) | Err(_) => {
                clients.remove(&url);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until `device` is caught up on Account and Task with `fresh`, and holds what it
/// holds; checks it saw no gap, duplicate or checksum mismatch.
async fn assert_same_as(cluster: &Cluster, device: &DeviceHandle, fresh: &DeviceHandle, what: &str) {
    let until = tokio::time::Instant::now() + DEADLINE;
    for &(source, key) in cluster.partitions() {
        let head = fresh.view(source, key).map_or(0, |view| view.cursor);
        device
            .wait_for(until, |state| state.partition(source, key).is_some_and(|p| p.caught_up && p.cursor >= head))
            .await
            .unwrap_or_else(|error| panic!("{what}: {source}/{key} not caught up to {head}: {error:?}"));
        let (mine, theirs) = (device.synced_view(source, key).unwrap(), fresh.synced_view(source, key).unwrap());
        assert_eq!(mine.cursor, theirs.cursor, "{what}: {source}/{key}");
        assert_eq!(mine.checksum, theirs.checksum, "{what}: {source}/{key} checksums");
        assert!(mine.records == theirs.records, "{what}: {source}/{key} records differ");
    }
    let stats = device.stats();
    assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{what}: {stats:?}");
}

/// Starts a device on `node` that syncs everything from scratch and waits until it has.
async fn fresh_device(cluster: &Cluster, node: usize) -> DeviceHandle {
    let fresh = Device::start(cluster.subscriptions(DeviceConfig::new(cluster.node(node).device_url(), USER, USER)));
    let partitions = cluster.partitions();
    fresh
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            partitions.iter().all(|(source, key)| state.partition(source, key).is_some_and(|p| p.caught_up))
        })
        .await
        .expect("a fresh device syncs");
    fresh
}

/// Checks the channel's side: every create reached it and made exactly one task, and a
/// mutation id was sent more than once only when a node died while sending it (at most one
/// per kill and lane).
fn assert_each_mutation_took_effect_once(
    channel: &PythonChannel,
    fresh: &DeviceHandle,
    creates: &[String],
    kills: usize,
) {
    let mut resent = 0;
    for mutation_id in creates {
        let calls = channel.write_calls(mutation_id);
        assert!(!calls.is_empty(), "mutation {mutation_id} never reached the channel");
        assert!(calls.iter().all(|op| op == "create"), "{mutation_id}: {calls:?}");
        if calls.len() > 1 {
            resent += 1;
        }
    }
    let lanes = 4;
    assert!(resent <= kills * lanes, "{resent} mutations sent more than once for {kills} kills");
    let tasks = fresh.synced_view("Task", USER).expect("tasks");
    assert_eq!(tasks.records.len(), creates.len(), "one task per create, whatever the number of calls");
    let titles: BTreeSet<String> =
        tasks.records.values().filter_map(|task| task.fields.get("title").map(|title| format!("{title:?}"))).collect();
    assert_eq!(titles.len(), creates.len(), "each title once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_at_random_moments_lose_nothing_and_hand_their_work_over() {
    let mut cluster = Cluster::start(NODES);
    let mut devices: Vec<TestDevice> =
        (0..NODES).map(|node| TestDevice::start(&cluster, node, &format!("device-{node}"))).collect();
    devices.push(TestDevice::start(&cluster, 0, "device-extra"));
    let pusher = Pusher::start(cluster.grpc_urls());
    let mut creates = Vec::new();
    // A new sequence of moments and victims each run; the seed is printed to replay a failure.
    let seed: u64 =
        std::env::var("FAILOVER_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("failover seed: {seed} (FAILOVER_TEST_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    for round in 0..KILLS {
        // Work in flight: mutations queued on every device, pushes going on.
        for (index, device) in devices.iter().enumerate() {
            for task in 0..TASKS_PER_ROUND {
                creates.push(device.create_task(&format!("round {round} device {index} task {task}")));
            }
        }
        let acked_before = pusher.acked_count();
        // A random moment: after some of that work went through, before all of it has.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        // The node of a device: one that is sending mutations.
        let victim = devices[rng.random_range(0..devices.len())].node;
        let restart = cluster.nodes[victim].take().expect("live").kill();
        *pusher.targets.lock().unwrap() = cluster.grpc_urls();

        // The dead node's devices resume on the next live node, from their own state.
        let survivor = (victim + 1) % NODES;
        let mut moved = Vec::new();
        for device in devices.drain(..) {
            if device.node == victim {
                moved.push(device.move_to(&cluster, survivor).await);
            } else {
                moved.push(device);
            }
        }
        devices = moved;
        // Dispatch moved: every device's mutations get their outcomes, and capture moved:
        // the tasks they created come back through the channel's feed to every device.
        for device in &devices {
            device.wait_for_outcomes(TAKEOVER, &format!("round {round}")).await;
        }
        for device in &devices {
            device.wait_for_logged_tasks(creates.len(), TAKEOVER, &format!("round {round}")).await;
        }
        assert!(pusher.acked_count() > acked_before || round == 0, "round {round}: ingest made progress");
        cluster.nodes[victim] = Some(Node::restart(&cluster.config, restart));
        *pusher.targets.lock().unwrap() = cluster.grpc_urls();
    }

    let acked = pusher.finish().await;
    let fresh = fresh_device(&cluster, 0).await;
    for (index, device) in devices.iter().enumerate() {
        assert_same_as(&cluster, &device.handle, &fresh, &format!("device {index}")).await;
    }
    let accounts = fresh.synced_view("Account", "*").unwrap();
    for (id, pushed) in &acked {
        let stored = accounts.records.get(id).unwrap_or_else(|| panic!("acknowledged record {id} was lost"));
        assert_eq!(stored.fields, pushed.fields, "record {id}");
    }
    let channel = cluster.channel.as_ref().expect("the Task channel");
    assert_each_mutation_took_effect_once(channel, &fresh, &creates, KILLS);
    for device in devices {
        device.handle.stop().await;
    }
    fresh.stop().await;
}

/// Runs one command on `redis` with `redis-cli` (installed with `redis-server`); returns its
/// answer.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    redis_cli_port(redis.port(), args)
}

/// Runs one command on the Redis at `port` with `redis-cli`; returns its answer (empty when
/// it could not connect).
fn redis_cli_port(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Sends SIGSTOP or SIGCONT to a server process (by its pid).
fn signal(process: &ServerProcess, signal: &str) {
    let status = std::process::Command::new("kill").arg(signal).arg(process.pid().to_string()).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_pubsub_or_paused_catches_its_devices_up_from_the_log() {
    let cluster = Cluster::start(2);
    let device = TestDevice::start(&cluster, 1, "listener");
    let pusher = Pusher::start(vec![cluster.node(0).grpc_url()]);
    for round in 0..3 {
        // Every pub/sub connection of every node is cut in the middle of the pushes.
        wait_for_acks(&pusher, (round + 1) * 200).await;
        let killed = redis_cli(&cluster.redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed.trim().parse::<u64>().is_ok_and(|killed| killed > 0), "the nodes follow pub/sub: {killed}");
        wait_for_acks(&pusher, (round + 1) * 200 + 100).await;
    }
    // The node the device is on is paused for a few seconds while pushes go on elsewhere.
    signal(&cluster.node(1).process, "-STOP");
    let paused_at = pusher.acked_count();
    wait_for_acks(&pusher, paused_at + 200).await;
    // Paused longer than its leases last: the other node takes its work, and the paused
    // node's writes under the old leases are refused when it wakes.
    tokio::time::sleep(Duration::from_millis(3 * LEASE_TTL_MS)).await;
    signal(&cluster.node(1).process, "-CONT");
    wait_for_acks(&pusher, pusher.acked_count() + 100).await;
    let acked = pusher.finish().await;
    let fresh = fresh_device(&cluster, 0).await;
    assert_same_as(&cluster, &device.handle, &fresh, "the device of the cut and paused node").await;
    let accounts = device.handle.synced_view("Account", "*").unwrap();
    for id in acked.keys() {
        assert!(accounts.records.contains_key(id), "acknowledged record {id} missing on the device");
    }
    device.handle.stop().await;
    fresh.stop().await;
}

/// Waits (bounded) until the pusher has `count` acknowledged records.
async fn wait_for_acks(pusher: &Pusher, count: usize) {
    let what = format!("{count} acknowledged records");
    eventually(DEADLINE, &what, || async { (pusher.acked_count() >= count).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_nothing_acknowledged_and_everything_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RestartableRedis::start(dir.path().join("redis")).await;
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    let mut cluster = Cluster::start_on(Redis::Restartable(redis), Some(channel), dir, 2);
    let device = TestDevice::start(&cluster, 1, "through-the-outage");
    device
        .handle
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            state.partition("Account", "*").is_some_and(|p| p.caught_up)
        })
        .await
        .expect("the device syncs");
    // A raw device session opened before the outage, to write through it during it.
    let mut writer = syncline_tests::raw_login(&cluster.node(1).device_url(), USER, USER).await;
    syncline_tests::welcome_client_id(&mut writer).await;
    let pusher = Pusher::start(cluster.grpc_urls());
    wait_for_acks(&pusher, 300).await;
    let reconnects = device.handle.stats().reconnects;

    let Redis::Restartable(redis) = &mut cluster.redis else { unreachable!("started restartable") };
    redis.kill();
    // While Redis is down, Ingest answers UNAVAILABLE, and the device stays connected.
    let mut ingest = IngestClient::connect(cluster.node(0).grpc_url()).await.expect("connects");
    let refused = ingest
        .push(PushRequest {
            source: "Account".into(),
            key: "*".into(),
            upserts: vec![record("down", 1)],
            deletes: vec![],
        })
        .await
        .expect_err("no store, no acknowledgement");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(device.handle.state().connection, syncline_client_sim::ConnectionPhase::Ready);
    // A device's write cannot be queued durably: it is refused UNAVAILABLE (the device may
    // send it again), not acknowledged.
    let create = ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: "during-the-outage".into(),
            source: "Task".into(),
            op: MutationOp::Create as i32,
            id: "tmp-outage".into(),
            fields: [("title".to_owned(), Value::string("outage"))].into(),
            ..Mutate::default()
        })),
    };
    let result = syncline_tests::mutation_outcome(&mut writer, create).await;
    assert!(!result.ok, "{result:?}");
    assert_eq!(result.error.as_ref().map(|error| error.code), Some(ErrorCode::Unavailable as i32), "{result:?}");
    let acked_while_down = pusher.acked_count();

    let Redis::Restartable(redis) = &mut cluster.redis else { unreachable!("started restartable") };
    redis.restart().await;
    // Everything resumes by itself: pushes are acknowledged again, the device catches up.
    wait_for_acks(&pusher, acked_while_down + 200).await;
    let acked = pusher.finish().await;
    assert_eq!(device.handle.stats().reconnects, reconnects, "the device stayed connected");
    let fresh = fresh_device(&cluster, 0).await;
    assert_same_as(&cluster, &device.handle, &fresh, "the device connected through the outage").await;
    let accounts = fresh.synced_view("Account", "*").unwrap();
    for (id, pushed) in &acked {
        let stored = accounts.records.get(id).unwrap_or_else(|| panic!("acknowledged record {id} was lost"));
        assert_eq!(stored.fields, pushed.fields, "record {id}");
    }
    device.handle.stop().await;
    fresh.stop().await;
}
