//! A server on the Redis store (issue 16): what Ingest commits lands in Redis, and a server
//! started again on the same Redis (with a fresh data directory) continues from it.

use syncline_server::config::{Config, StoreBackend};
use syncline_server::storage::PartitionName;
use syncline_server::test_util::redis_server::RedisServer;
use syncline_tests::{TestServer, push, record};

#[tokio::test]
async fn a_server_on_redis_keeps_its_partitions_there() {
    let redis = RedisServer::start();
    let url = redis.url();
    let configure = |config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
    };
    let server = TestServer::start_with(configure).await;
    let mut client = server.ingest_client().await;
    let response =
        push(&mut client, "Account", "*", vec![record("a", 1), record("b", 2)], Vec::new()).await.expect("push");
    assert_eq!((response.first_seq, response.last_seq, response.head), (1, 2, 2));
    server.stop().await;

    let server = TestServer::start_with(configure).await;
    let store = server.server.store().clone();
    let state = tokio::task::spawn_blocking(move || store.partition_state(&PartitionName::new("Account", "*")))
        .await
        .expect("read")
        .expect("state");
    assert_eq!((state.head, state.total), (2, 2));
    let mut client = server.ingest_client().await;
    let response = push(&mut client, "Account", "*", vec![record("c", 3)], Vec::new()).await.expect("push");
    assert_eq!((response.first_seq, response.head), (3, 3), "sequences continue where they stopped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_ingested_at_one_node_reach_devices_on_another_and_users_are_shared() {
    use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
    use syncline_tests::{DEADLINE, assert_converges};
    let redis = RedisServer::start();
    let url = redis.url();
    let configure = |config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
    };
    let node_a = TestServer::start_with(configure).await;
    let node_b = TestServer::start_with(configure).await;
    // A user added on one node logs in on the other: the store is shared.
    node_a.add_user("ann", "pw-ann");
    let mut ingest = node_a.ingest_client().await;
    push(&mut ingest, "Account", "*", (0..50).map(|n| record(&format!("a{n}"), n)).collect(), Vec::new())
        .await
        .expect("push");
    let device =
        Device::start(DeviceConfig::new(node_b.url(), "ann", "pw-ann").subscribe(SubscriptionConfig::new("Account")));
    assert_converges(&device, &node_b, "Account", "*", DEADLINE).await;
    // Live: later changes at node A are pushed to the device on node B.
    for round in 0..5 {
        push(&mut ingest, "Account", "*", vec![record(&format!("live{round}"), round)], Vec::new())
            .await
            .expect("push");
    }
    assert_converges(&device, &node_b, "Account", "*", DEADLINE).await;
    let stats = device.stats();
    assert_eq!(stats.checksum_mismatches, 0, "{stats:?}");
    device.stop().await;
    node_b.stop().await;
    node_a.stop().await;
}
