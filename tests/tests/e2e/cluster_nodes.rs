//! Three Syncline nodes sharing one Redis (issue 16), and the same three nodes on a Redis
//! Cluster of three primaries: devices spread over every node; changes ingested at any node
//! reach every device on every node, in order and exactly once, and their checksums match.
//! Users and per-user partitions are shared: a device of a user on one node sees what another
//! node ingested for that user, and nothing of another user's. On the Redis Cluster the node
//! bus is sharded pub/sub: each partition's channel is followed with `SSUBSCRIBE` on the
//! primary owning its slot, never with classic `SUBSCRIBE`, and subscriber connections
//! killed mid-run are made again with every device still converging exactly once.

use std::process::Command;

use syncline_client_sim::{Device, DeviceConfig, DeviceHandle, SubscriptionConfig};
use syncline_push::bus::{DEFAULT_CHANNEL_PREFIX, channel_name};
use syncline_server::config::{Config, StoreBackend};
use syncline_server::storage::PartitionName;
use syncline_server::test_util::redis_server::{RedisCluster, RedisServer};
use syncline_tests::{DEADLINE, TestServer, assert_converges, eventually, push, record};

/// Nodes in the cluster.
const NODES: usize = 3;
/// Users, each with a device on every node.
const USERS: [&str; 2] = ["ann", "bob"];
/// Rounds of ingest; each round pushes at every node in turn.
const ROUNDS: usize = 6;

/// Starts `NODES` nodes configured by `configure`.
async fn start_nodes(configure: impl Fn(&mut Config) + Copy) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(TestServer::start_with(configure).await);
    }
    nodes
}

/// Runs the scenario on `nodes`: one device per user per node, ingest at every node, live
/// and catch-up (`between_rounds` runs after each round of ingest), then the checks.
/// Returns the devices, still running.
async fn changes_reach_every_device_on_every_node(
    nodes: &[TestServer],
    between_rounds: &dyn Fn(usize),
) -> Vec<(usize, &'static str, DeviceHandle)> {
    // Users added on one node log in on every node: the store is shared.
    for user in USERS {
        nodes[0].add_user(user, &format!("pw-{user}"));
    }
    let mut ingests = Vec::new();
    for node in nodes {
        ingests.push(node.ingest_client().await);
    }
    // Records before any device connects: the devices' catch-up reads them from Redis.
    let before: Vec<_> = (0..40).map(|n| record(&format!("early{n}"), n)).collect();
    push(&mut ingests[1], "Account", "*", before, Vec::new()).await.expect("push");

    let mut devices: Vec<(usize, &'static str, DeviceHandle)> = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for user in USERS {
            let config = DeviceConfig::new(node.url(), user, format!("pw-{user}"))
                .subscribe(SubscriptionConfig::new("Account"))
                .subscribe(SubscriptionConfig::new("Contact"));
            devices.push((index, user, Device::start(config)));
        }
    }
    for (index, _, device) in &devices {
        assert_converges(device, &nodes[*index], "Account", "*", DEADLINE).await;
    }

    // Live: every node ingests in turn, app-wide and per user; updates of the same records
    // too, so that an out-of-order apply would leave an older version behind.
    for round in 0..ROUNDS {
        for (index, ingest) in ingests.iter_mut().enumerate() {
            let n = (round * NODES + index) as i64;
            let upserts = vec![record(&format!("live{round}-{index}"), n), record("shared", n)];
            push(ingest, "Account", "*", upserts, Vec::new()).await.expect("push");
            for user in USERS {
                let contact = vec![record(&format!("{user}-c{round}"), n), record(&format!("{user}-shared"), n)];
                push(ingest, "Contact", user, contact, Vec::new()).await.expect("push");
            }
        }
        if round == ROUNDS / 2 {
            // A delete at one node reaches devices on the others too.
            push(&mut ingests[2], "Account", "*", Vec::new(), vec!["early0".into()]).await.expect("delete");
        }
        between_rounds(round);
    }

    for (index, user, device) in &devices {
        let node = &nodes[*index];
        assert_converges(device, node, "Account", "*", DEADLINE).await;
        assert_converges(device, node, "Contact", user, DEADLINE).await;
        let stats = device.stats();
        assert_eq!(
            (stats.checksum_mismatches, stats.gaps, stats.duplicates, stats.resyncs),
            (0, 0, 0, 0),
            "{user} on node {index}: in order and exactly once ({stats:?})"
        );
        assert!(stats.live_pushes > 0, "{user} on node {index} got changes pushed live ({stats:?})");
        let foreign = USERS.iter().filter(|other| *other != user).collect::<Vec<_>>();
        assert!(
            stats.partitions_seen.iter().all(|partition| !foreign.iter().any(|other| partition.key == **other)),
            "{user} on node {index} saw another user's partition: {:?}",
            stats.partitions_seen
        );
    }
    devices
}

async fn stop_devices(devices: Vec<(usize, &'static str, DeviceHandle)>) {
    for (_, _, device) in devices {
        device.stop().await;
    }
}

async fn stop_all(nodes: Vec<TestServer>) {
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_deliver_every_change_to_every_device_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes = start_nodes(|config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
    })
    .await;
    let devices = changes_reach_every_device_on_every_node(&nodes, &|_| {}).await;
    stop_devices(devices).await;
    stop_all(nodes).await;
}

/// Runs `redis-cli` against the primary on `port`; returns what it printed (one value a
/// line; an error reply, such as `MOVED`, is printed too and parses as no count).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The ports of a cluster's primaries.
fn ports(cluster: &RedisCluster) -> Vec<u16> {
    let port = |url: &String| url.trim_end_matches('/').rsplit(':').next().and_then(|port| port.parse().ok());
    cluster.urls().iter().map(|url| port(url).expect("a port in the URL")).collect()
}

/// The node bus's channel of a partition.
fn bus_channel(source: &str, key: &str) -> String {
    let channel = channel_name(DEFAULT_CHANNEL_PREFIX.as_bytes(), &PartitionName::new(source, key));
    String::from_utf8(channel).expect("channel names are text")
}

/// Per primary: subscribers of `channel` by sharded pub/sub and by classic pub/sub. A
/// primary that does not own the channel's slot may refuse the sharded count (`MOVED`):
/// counted as none.
fn subscriptions_per_primary(cluster: &RedisCluster, channel: &str) -> Vec<(u64, u64)> {
    let count = |reply: String| reply.lines().nth(1).and_then(|line| line.trim().parse().ok()).unwrap_or(0);
    ports(cluster)
        .into_iter()
        .map(|port| {
            let sharded = count(redis_cli(port, &["PUBSUB", "SHARDNUMSUB", channel]));
            let classic = count(redis_cli(port, &["PUBSUB", "NUMSUB", channel]));
            (sharded, classic)
        })
        .collect()
}

/// Asserts that every node follows `channel` by sharded pub/sub on one primary, and nobody
/// by classic pub/sub.
fn assert_followed_by_sharded_pubsub_only(cluster: &RedisCluster, channel: &str) {
    let counts = subscriptions_per_primary(cluster, channel);
    let owners: Vec<_> = counts.iter().filter(|(sharded, _)| *sharded > 0).collect();
    assert_eq!(owners.len(), 1, "{channel} is followed on exactly one primary: {counts:?}");
    assert_eq!(owners[0].0, NODES as u64, "every node SSUBSCRIBEs {channel}: {counts:?}");
    assert!(counts.iter().all(|(_, classic)| *classic == 0), "no classic SUBSCRIBE of {channel}: {counts:?}");
}

/// Kills, on every primary, the connections that follow sharded channels (the nodes' bus
/// subscribers); returns how many.
fn kill_shard_subscribers(cluster: &RedisCluster) -> usize {
    let mut killed = 0;
    for port in ports(cluster) {
        for line in redis_cli(port, &["CLIENT", "LIST"]).lines() {
            let field = |name: &str| {
                line.split(' ').find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            };
            if field("ssub").and_then(|count| count.parse::<u64>().ok()).unwrap_or(0) > 0
                && let Some(id) = field("id")
            {
                redis_cli(port, &["CLIENT", "KILL", "ID", id]);
                killed += 1;
            }
        }
    }
    killed
}

async fn cluster_nodes(cluster: &RedisCluster) -> Vec<TestServer> {
    let urls = cluster.urls();
    start_nodes(|config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_cluster_urls = urls.clone();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_of_three_primaries_deliver_every_change_once() {
    let cluster = RedisCluster::start(3);
    let nodes = cluster_nodes(&cluster).await;
    let devices = changes_reach_every_device_on_every_node(&nodes, &|_| {}).await;
    // The changes crossed the nodes by SPUBLISH/SSUBSCRIBE, on the primary of each
    // partition's slot (the test fails if any went by classic pub/sub: nobody subscribed).
    assert_followed_by_sharded_pubsub_only(&cluster, &bus_channel("Account", "*"));
    for user in USERS {
        assert_followed_by_sharded_pubsub_only(&cluster, &bus_channel("Contact", user));
    }
    stop_devices(devices).await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shard_subscriber_connections_are_made_again_and_every_device_converges_once() {
    let cluster = RedisCluster::start(3);
    let nodes = cluster_nodes(&cluster).await;
    let killed = std::sync::atomic::AtomicUsize::new(0);
    // Twice mid-run: the nodes' sharded subscriptions are cut while ingest goes on.
    let devices = changes_reach_every_device_on_every_node(&nodes, &|round| {
        if round == 1 || round == ROUNDS / 2 + 1 {
            killed.fetch_add(kill_shard_subscribers(&cluster), std::sync::atomic::Ordering::Relaxed);
        }
    })
    .await;
    assert!(killed.into_inner() >= NODES, "each node's subscriber connection was killed");
    let channel = bus_channel("Account", "*");
    eventually(DEADLINE, "every node follows the partition again", || async {
        let counts = subscriptions_per_primary(&cluster, &channel);
        counts.iter().any(|(sharded, _)| *sharded == NODES as u64).then_some(())
    })
    .await;
    assert_followed_by_sharded_pubsub_only(&cluster, &channel);
    stop_devices(devices).await;
    stop_all(nodes).await;
}

/// Moves the slot of `channel` (and of its partition's keys: the same hash tag) from the
/// primary that owns it to another, as `redis-cli --cluster reshard` does for one slot;
/// returns the new owner's port.
fn migrate_slot_of(cluster: &RedisCluster, channel: &str) -> u16 {
    let ports = ports(cluster);
    let slot = redis_cli(ports[0], &["CLUSTER", "KEYSLOT", channel]).trim().to_owned();
    let keys_in =
        |port: u16| redis_cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim().parse::<u64>().unwrap_or(0);
    let source = *ports.iter().find(|port| keys_in(**port) > 0).expect("the partition's keys are on one primary");
    let target = *ports.iter().find(|port| **port != source).expect("another primary");
    let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
    let (source_id, target_id) = (id(source), id(target));
    redis_cli(target, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]);
    redis_cli(source, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]);
    loop {
        let listed = redis_cli(source, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
        let keys: Vec<&str> = listed.lines().map(str::trim).filter(|key| !key.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let target_port = target.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &target_port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        let migrated = redis_cli(source, &args);
        assert!(migrated.trim() == "OK", "MIGRATE: {migrated}");
    }
    for port in
        [target, source].into_iter().chain(ports.iter().copied().filter(|port| *port != source && *port != target))
    {
        redis_cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    assert_eq!(keys_in(source), 0, "the keys left the old primary");
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_slot_moves_to_another_primary_is_followed_there_and_devices_converge_once() {
    let cluster = RedisCluster::start(3);
    let nodes = cluster_nodes(&cluster).await;
    let channel = bus_channel("Account", "*");
    let moved_to = std::sync::Mutex::new(None);
    // Mid-run, between two rounds of ingest: the old primary ends the nodes' subscriptions
    // of the channel on its own, the nodes subscribe again on the new one.
    let devices = changes_reach_every_device_on_every_node(&nodes, &|round| {
        if round == 1 {
            *moved_to.lock().unwrap() = Some(migrate_slot_of(&cluster, &channel));
        }
    })
    .await;
    let new_owner = moved_to.into_inner().unwrap().expect("the slot moved");
    let owner_index = ports(&cluster).iter().position(|port| *port == new_owner).expect("a primary");
    eventually(DEADLINE, "every node follows the partition on its new primary", || async {
        (subscriptions_per_primary(&cluster, &channel)[owner_index].0 == NODES as u64).then_some(())
    })
    .await;
    assert_followed_by_sharded_pubsub_only(&cluster, &channel);
    stop_devices(devices).await;
    stop_all(nodes).await;
}
