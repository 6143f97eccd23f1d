//! Three Syncline nodes sharing one Redis (issue 16), and the same three nodes on a Redis
//! Cluster of three primaries: devices spread over every node; changes ingested at any node
//! reach every device on every node, in order and exactly once, and their checksums match.
//! Users and per-user partitions are shared: a device of a user on one node sees what another
//! node ingested for that user, and nothing of another user's.

use syncline_client_sim::{Device, DeviceConfig, DeviceHandle, SubscriptionConfig};
use syncline_server::config::{Config, StoreBackend};
use syncline_server::test_util::redis_server::{RedisCluster, RedisServer};
use syncline_tests::{DEADLINE, TestServer, assert_converges, push, record};

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
/// and catch-up, then the checks.
async fn changes_reach_every_device_on_every_node(nodes: &[TestServer]) {
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

    let mut devices: Vec<(usize, &str, DeviceHandle)> = Vec::new();
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
    changes_reach_every_device_on_every_node(&nodes).await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_of_three_primaries_deliver_every_change_once() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let nodes = start_nodes(|config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_cluster_urls = urls.clone();
    })
    .await;
    changes_reach_every_device_on_every_node(&nodes).await;
    stop_all(nodes).await;
}
