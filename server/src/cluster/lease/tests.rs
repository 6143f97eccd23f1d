//! Leases against a real `redis-server`: one holder at a time, greater tokens for each grant,
//! expiry, stale fences refused by the store, and a holder that stops before its TTL ends.

use std::sync::Arc;
use std::time::Duration;

use syncline_proto::v1::Record;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Grant, Held, Lease, Leases};
use crate::cluster::RedisLink;
use crate::storage::redis::{RedisEndpoint, RedisOptions, RedisStore};
use crate::storage::{
    CapturePosition, Fence, MutationOp, MutationOutcome, MutationQueue as _, PartitionName, PartitionStore as _,
    PartitionWrite, QueuedMutation, StoreError,
};
use crate::test_util::redis_server::{RedisCluster, RedisServer};

const DEADLINE: Duration = Duration::from_secs(10);

async fn leases(redis: &RedisServer, node: &str, ttl: Duration) -> Arc<Leases> {
    let link = RedisLink::connect(&RedisEndpoint::Single(redis.url())).await.expect("connects");
    Leases::new(link, node, ttl)
}

/// Takes `lease` for `leases`' node, waiting (bounded) while another grant holds it.
async fn take(leases: &Leases, lease: &Lease) -> Grant {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(grant) = leases.acquire(lease).await.expect("redis answers") {
            return grant;
        }
        assert!(Instant::now() < deadline, "the lease {} was never free", lease.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lease_has_one_holder_and_each_grant_a_greater_token() {
    let redis = RedisServer::start();
    let a = leases(&redis, "node-a", Duration::from_secs(30)).await;
    let b = leases(&redis, "node-b", Duration::from_secs(30)).await;
    let lease = Lease::app("capture:watch:Task");
    let first = a.acquire(&lease).await.unwrap().expect("free at first");
    assert_eq!(b.acquire(&lease).await.unwrap(), None, "held by node A");
    assert_eq!(a.acquire(&lease).await.unwrap(), None, "a lease is not granted twice, even to its holder");
    assert_eq!(a.holder(&lease).await.unwrap().as_deref(), Some(format!("{}/node-a", first.token).as_str()));
    assert!(a.renew(&first).await.unwrap());
    assert!(!b.release(&Grant { holder: "9/node-b".into(), ..first.clone() }).await.unwrap(), "not the holder");
    assert!(a.release(&first).await.unwrap());
    let second = b.acquire(&lease).await.unwrap().expect("released");
    assert!(second.token > first.token, "{} after {}", second.token, first.token);
    assert!(!a.renew(&first).await.unwrap(), "an old grant cannot be renewed");
    assert!(!a.release(&first).await.unwrap(), "nor release the new one");
    assert_eq!(b.holder(&lease).await.unwrap().as_deref(), Some(format!("{}/node-b", second.token).as_str()));
    // Leases of lanes are separate leases.
    let lane = a.acquire(&Lease::lane("c1", "Task")).await.unwrap().expect("another lease");
    assert!(b.acquire(&Lease::lane("c2", "Task")).await.unwrap().is_some());
    assert_eq!(b.acquire(&Lease::lane("c1", "Task")).await.unwrap(), None);
    assert!(a.release(&lane).await.unwrap());
}

/// The outcome of device c1's mutation m1, decided under `fence`.
fn outcome(result: &[u8], fence: Fence) -> MutationOutcome {
    MutationOutcome {
        client_id: "c1".into(),
        mutation_id: "m1".into(),
        result: result.to_vec(),
        failed: None,
        fence: Some(fence),
    }
}

fn task(id: &str) -> Record {
    Record { id: id.into(), fields: [("n".to_owned(), syncline_proto::v1::Value::int(1))].into(), version: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_another_node_and_writes_under_the_old_grant_are_refused() {
    let redis = RedisServer::start();
    stale_grants_are_refused(RedisEndpoint::Single(redis.url())).await;
}

/// On a Redis Cluster too: each script that checks a lease touches keys of one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_writes_under_an_old_grant_are_refused() {
    let cluster = RedisCluster::start(3);
    stale_grants_are_refused(RedisEndpoint::Cluster(cluster.urls())).await;
}

async fn stale_grants_are_refused(endpoint: RedisEndpoint) {
    let ttl = Duration::from_millis(300);
    let link = RedisLink::connect(&endpoint).await.expect("connects");
    let a = Leases::new(link.clone(), "node-a", ttl);
    let b = Leases::new(link, "node-b", ttl);
    let options = RedisOptions { endpoint, ..RedisOptions::single("") };
    let store = RedisStore::open(&options, None).expect("open");
    let lease = Lease::app("capture:watch:Task");
    let old = a.acquire(&lease).await.unwrap().expect("free");
    // Node A stops renewing (it died): the lease expires and node B takes it.
    let new = take(&b, &lease).await;
    assert!(new.token > old.token);

    // The capture position: only the current grant writes it.
    let partition = PartitionName::new("Task", "ann");
    let position = |token: &[u8], grant: &Grant| CapturePosition {
        name: "watch:Task".into(),
        token: token.to_vec(),
        fence: Some(grant.fence()),
    };
    let write =
        |id: &str| PartitionWrite { partition: partition.clone(), upserts: vec![task(id)], deletes: Vec::new() };
    store.apply_capture(vec![write("b1")], position(b"new", &new)).expect("the holder writes");
    let stale = store.apply_capture(Vec::new(), position(b"old", &old));
    assert!(matches!(stale, Err(StoreError::LeaseLost { ref lease }) if lease == "capture:watch:Task"), "{stale:?}");
    assert_eq!(store.capture_position("watch:Task").unwrap().as_deref(), Some(&b"new"[..]));
    // A partition the new holder wrote refuses the old grant's writes too, even where the
    // write would come before its position.
    let stale = store.apply_fenced(vec![write("a1")], &old.fence());
    assert!(matches!(stale, Err(StoreError::LeaseLost { .. })), "{stale:?}");
    assert!(store.record(&partition, "a1").unwrap().is_none(), "nothing of the stale write landed");
    store.apply_fenced(vec![write("b2")], &new.fence()).expect("the holder writes");
    assert_eq!(store.partition_state(&partition).unwrap().head, 2);

    // A mutation lane: the outcome decided under an old grant is refused and the mutation
    // stays queued for the new holder.
    let lane = Lease::lane("c1", "Task");
    let old_lane = a.acquire(&lane).await.unwrap().expect("free");
    let new_lane = take(&b, &lane).await;
    let mutation = QueuedMutation {
        client_id: "c1".into(),
        user_id: "ann".into(),
        seq: 0,
        mutation_id: "m1".into(),
        partition: partition.clone(),
        op: MutationOp::Create,
        id: "t1".into(),
        fields: Default::default(),
        base_version: 0,
    };
    store.enqueue_mutation(&mutation, 10).expect("queued");
    let stale = store.finish_mutation(vec![write("a2")], outcome(b"old", old_lane.fence()));
    assert!(matches!(stale, Err(StoreError::LeaseLost { .. })), "{stale:?}");
    assert!(store.record(&partition, "a2").unwrap().is_none(), "a lost lane writes nothing");
    assert_eq!(store.pending_mutations_of("c1").unwrap().len(), 1, "still queued");
    store.finish_mutation(Vec::new(), outcome(b"new", new_lane.fence())).expect("the holder finishes it");
    assert!(store.pending_mutations_of("c1").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_redis_stops_its_work_before_the_lease_can_expire() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(1_500);
    let a = leases(&redis, "node-a", ttl).await;
    let lease = Lease::app("jobs:compaction");
    let grant = a.acquire(&lease).await.unwrap().expect("free");
    let granted = grant.sent;
    let stop = CancellationToken::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let work = {
        let stop = stop.clone();
        async move {
            let _ = started_tx.send(());
            stop.cancelled().await;
            Instant::now()
        }
    };
    let holding = {
        let a = a.clone();
        tokio::spawn(async move { a.hold(grant, &stop, work).await })
    };
    started_rx.await.expect("the work starts");
    // Renewals keep it well past one TTL while Redis answers.
    let renewed_past = Instant::now() + ttl + ttl / 2;
    while Instant::now() < renewed_past {
        assert!(!holding.is_finished(), "the lease was lost while Redis answered");
        assert!(a.holder(&lease).await.unwrap().is_some());
        tokio::time::sleep(ttl / 10).await;
    }
    // Redis stops answering this node (every client paused, expiry too): the holder cannot
    // renew and stops before the TTL of its last renewal ends.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let paused_at = Instant::now();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("ALL").query_async(&mut admin).await.unwrap();
    let held = tokio::time::timeout(DEADLINE, holding).await.expect("the work stops in time").expect("joins");
    let Held::Lost(stopped_at) = held else { panic!("the lease cannot have been kept: {held:?}") };
    assert!(stopped_at > granted);
    // Its last renewal was sent at most a third of the TTL before the pause.
    assert!(
        stopped_at.duration_since(paused_at) < ttl,
        "stopped {:?} after Redis stopped answering, TTL {ttl:?}",
        stopped_at.duration_since(paused_at)
    );
    let _: redis::RedisResult<()> = redis::cmd("CLIENT").arg("UNPAUSE").query_async(&mut admin).await;
}
