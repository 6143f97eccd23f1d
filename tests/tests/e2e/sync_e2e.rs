//! Devices converge on the server's live set through snapshots, log catch-up and live push,
//! across concurrent ingest, connection cuts and compaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_client_sim::{
    ConnectionPhase, Device, DeviceConfig, DeviceHandle, FrameFormat, PartitionId, SubscriptionConfig,
};
use syncline_proto::v1::Record;
use syncline_tests::{DEADLINE, TestServer, assert_converges, push, record};

fn device(
    server: &TestServer,
    user: &str,
    password: &str,
    sources: &[(&str, &str)],
    format: FrameFormat,
) -> DeviceHandle {
    let mut config = DeviceConfig::new(server.url(), user, password).with_format(format);
    for (source, key) in sources {
        config = config.subscribe(SubscriptionConfig::new(*source).with_key(*key).with_page_size(200).with_window(4));
    }
    Device::start(config)
}

/// Returns a random batch over `ids` existing ids: new records, updates and deletes.
fn random_batch(
    rng: &mut StdRng,
    prefix: &str,
    next_id: &mut u64,
    live: &mut BTreeSet<String>,
    size: usize,
) -> (Vec<Record>, Vec<String>) {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut touched = BTreeSet::new();
    for _ in 0..size {
        let roll: f64 = rng.random();
        if roll < 0.2 && !live.is_empty() {
            let index = rng.random_range(0..live.len());
            let id = live.iter().nth(index).cloned().expect("index in range");
            if touched.insert(id.clone()) {
                live.remove(&id);
                deletes.push(id);
            }
        } else if roll < 0.5 && !live.is_empty() {
            let index = rng.random_range(0..live.len());
            let id = live.iter().nth(index).cloned().expect("index in range");
            if touched.insert(id.clone()) {
                upserts.push(record(&id, rng.random_range(0..1_000_000)));
            }
        } else {
            *next_id += 1;
            let id = format!("{prefix}-{next_id:06}");
            touched.insert(id.clone());
            live.insert(id.clone());
            upserts.push(record(&id, rng.random_range(0..1_000_000)));
        }
    }
    (upserts, deletes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_three_devices_converge_through_20k_changes() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    server.add_user("bob", "bob-pw");
    let mut ingest = server.ingest_client().await;
    let mut rng = StdRng::seed_from_u64(2);

    // Some data before anyone connects, so the first sync starts with a snapshot.
    let partitions = [("Account", "*"), ("Contact", "ann"), ("Contact", "bob")];
    let mut live: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    let mut next_ids = [0u64; 3];
    for (index, (source, key)) in partitions.iter().enumerate() {
        let (upserts, deletes) =
            random_batch(&mut rng, &format!("{source}-{key}"), &mut next_ids[index], &mut live[index], 300);
        push(&mut ingest, source, key, upserts, deletes).await.unwrap();
    }

    let ann_phone = device(&server, "ann", "ann-pw", &[("Account", "*"), ("Contact", "ann")], FrameFormat::Binary);
    let ann_web = device(&server, "ann", "ann-pw", &[("Account", "*"), ("Contact", "ann")], FrameFormat::Json);
    let bob_phone = device(&server, "bob", "bob-pw", &[("Account", "*"), ("Contact", "bob")], FrameFormat::Binary);

    // 20,000 changes in batches of 1 to 200 over the three partitions while devices sync.
    let mut sent = 0;
    while sent < 20_000 {
        let index = rng.random_range(0..partitions.len());
        let (source, key) = partitions[index];
        let size = rng.random_range(1..=200).min(20_000 - sent);
        let (upserts, deletes) =
            random_batch(&mut rng, &format!("{source}-{key}"), &mut next_ids[index], &mut live[index], size);
        sent += upserts.len() + deletes.len();
        push(&mut ingest, source, key, upserts, deletes).await.unwrap();
    }

    for (device, user) in [(&ann_phone, "ann"), (&ann_web, "ann"), (&bob_phone, "bob")] {
        assert_converges(device, &server, "Account", "*", DEADLINE).await;
        assert_converges(device, &server, "Contact", user, DEADLINE).await;
        let stats = device.stats();
        assert_eq!(stats.duplicates, 0, "{user}: duplicated pages");
        assert_eq!(stats.gaps, 0, "{user}: gaps");
        assert_eq!(stats.checksum_mismatches, 0, "{user}: checksum mismatches");
        let allowed: BTreeSet<PartitionId> =
            [PartitionId::new("Account", "*"), PartitionId::new("Contact", user)].into_iter().collect();
        assert!(
            stats.partitions_seen.is_subset(&allowed),
            "{user} received frames of {:?}",
            stats.partitions_seen.difference(&allowed).collect::<Vec<_>>()
        );
    }
    // The server's live sets are what the test intended.
    for (index, (source, key)) in partitions.iter().enumerate() {
        let (records, _) = syncline_tests::server_view(&server, source, key);
        let ids: BTreeSet<String> = records.into_keys().collect();
        assert_eq!(ids, live[index], "{source}/{key} live set");
    }
    for device in [ann_phone, ann_web, bob_phone] {
        device.stop().await;
    }
    server.stop().await;
}

/// Cuts the device's connection and waits until the cut has taken effect.
async fn cut(phone: &DeviceHandle) {
    let reconnects = phone.stats().reconnects;
    assert_eq!(phone.state().connection, ConnectionPhase::Ready, "cutting a live connection");
    phone.cut();
    phone
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            state.stats.reconnects > reconnects || state.connection != ConnectionPhase::Ready
        })
        .await
        .expect("the cut takes effect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_during_snapshot_catch_up_and_live_push_lose_and_duplicate_nothing() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    let mut rng = StdRng::seed_from_u64(50);
    let mut live = BTreeSet::new();
    let mut next_id = 0;
    for _ in 0..4 {
        let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, 1_000);
        push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();
    }
    let mut config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Account").with_page_size(20).with_window(1));
    // Reconnect at once after each deliberate cut: the test is about what crosses the cut,
    // not about backoff.
    config.backoff.initial = Duration::from_millis(5);
    config.backoff.max = Duration::from_millis(50);
    let phone = Device::start(config);
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    let mut cuts = 0;

    // Snapshot: cut after a few snapshot pages, 15 times (each restarts the snapshot).
    for _ in 0..15 {
        let pages = phone.stats().pages + rng.random_range(1..4);
        phone.wait_for(deadline(), |state| state.stats.pages >= pages).await.expect("snapshot pages arrive");
        assert_eq!(phone.view("Account", "*").map_or(0, |view| view.cursor), 0, "still in the snapshot");
        cut(&phone).await;
        cuts += 1;
    }
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;

    // Log catch-up: cut, push a burst while the device is away, then cut again a few pages
    // into its catch-up, 15 times.
    for _ in 0..15 {
        phone
            .wait_for(deadline(), |state| state.connection == ConnectionPhase::Ready)
            .await
            .expect("connected before the cut");
        cut(&phone).await;
        cuts += 1;
        let cursor = phone.view("Account", "*").map_or(0, |view| view.cursor);
        for _ in 0..4 {
            let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, 100);
            push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();
        }
        let wanted = cursor + rng.random_range(1..60);
        phone
            .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.cursor >= wanted))
            .await
            .expect("catch-up progresses");
    }
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;

    // Live push: small batches while caught up, cut at random points, 20 times.
    for _ in 0..20 {
        let (_, state) = syncline_tests::server_view(&server, "Account", "*");
        phone
            .wait_for(deadline(), |device| {
                device.partition("Account", "*").is_some_and(|p| p.caught_up && p.cursor == state.head)
            })
            .await
            .expect("caught up before the live pushes");
        let lives = phone.stats().live_pushes + 1;
        for _ in 0..rng.random_range(1..4) {
            let size = rng.random_range(1..10);
            let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, size);
            push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();
        }
        if let Err(error) = phone.wait_for(deadline(), |state| state.stats.live_pushes >= lives).await {
            let (_, state) = syncline_tests::server_view(&server, "Account", "*");
            let subscribers = server
                .server
                .services
                .hub
                .subscriber_count(&syncline_server::storage::PartitionName::new("Account", "*"));
            panic!("no live push: server {state:?}, hub subscribers {subscribers}, device {error:?}");
        }
        cut(&phone).await;
        cuts += 1;
        let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, 5);
        push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();
    }
    assert_eq!(cuts, 50);
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;
    let stats = phone.stats();
    assert!(stats.reconnects >= 50, "the device reconnected after each cut: {stats:?}");
    assert_eq!(stats.duplicates, 0, "duplicated pages: {stats:?}");
    assert_eq!(stats.gaps, 0, "gaps: {stats:?}");
    assert_eq!(stats.checksum_mismatches, 0, "checksum mismatches: {stats:?}");
    let (records, _) = syncline_tests::server_view(&server, "Account", "*");
    assert_eq!(records.into_keys().collect::<BTreeSet<_>>(), live);
    phone.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_behind_the_compaction_horizon_gets_a_snapshot_and_converges() {
    let server = TestServer::start_with(|config| config.store.compact_keep_recent = 10).await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut live = BTreeSet::new();
    let mut next_id = 0;
    let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, 500);
    push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();

    let config = || {
        DeviceConfig::new(server.url(), "ann", "ann-pw")
            .subscribe(SubscriptionConfig::new("Account").with_page_size(50))
    };
    let first = Device::start(config());
    assert_converges(&first, &server, "Account", "*", DEADLINE).await;
    let old_view = first.view("Account", "*").unwrap();
    let old_cursor = old_view.cursor;
    first.stop().await;

    // While the device is away: many changes (updates and deletes of what it holds), then
    // compaction past its cursor.
    for _ in 0..10 {
        let (upserts, deletes) = random_batch(&mut rng, "acc", &mut next_id, &mut live, 200);
        push(&mut ingest, "Account", "*", upserts, deletes).await.unwrap();
    }
    syncline_tests::compact(&server, "Account", "*", 10).await;
    let (_, state) = syncline_tests::server_view(&server, "Account", "*");
    assert!(state.horizon > old_cursor, "compaction passed the device's cursor");

    // The device comes back with its old records and cursor: the server resets it to a
    // snapshot, and it converges.
    let restored = old_view.clone();
    let second = Device::start(config().restore(PartitionId::new("Account", "*"), restored));
    assert_converges(&second, &server, "Account", "*", DEADLINE).await;
    let stats = second.stats();
    assert!(stats.resyncs >= 1, "the device took a snapshot: {stats:?}");
    assert_eq!(stats.checksum_mismatches, 0);
    second.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_switched_to_catch_up_and_converges() {
    // A tiny outbound queue so that the stalled device overflows it quickly.
    let server = TestServer::start_with(|config| config.device.outbound_queue = 4).await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;

    // The device's app does not read its notifications: with a one-slot channel the device
    // stops reading its socket, as a frozen app would.
    let config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Account"))
        .with_notifications(1);
    let mut phone = Device::start(config);
    let mut notifications = phone.take_notifications().expect("notifications are on");
    let first = notifications.recv().await.expect("a first notification");
    drop(first);

    // Large records, many batches: far more than the queue and the socket buffers hold.
    let big = "x".repeat(16 * 1024);
    for batch in 0..300 {
        let mut upsert = record(&format!("big-{batch:04}"), batch);
        upsert.fields.insert("blob".into(), syncline_proto::v1::Value::string(big.clone()));
        push(&mut ingest, "Account", "*", vec![upsert], vec![]).await.unwrap();
    }
    let hub = server.server.hub();
    syncline_tests::eventually(DEADLINE, "the stalled device to be demoted", || async {
        (hub.stats().demoted.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    // The app wakes up: the device drains, catches up from the log and converges.
    let pages_before = phone.stats().pages;
    let drain = tokio::spawn(async move { while notifications.recv().await.is_some() {} });
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;
    let stats = phone.stats();
    assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");
    assert!(stats.pages > pages_before, "the device caught up with log pages after the demotion: {stats:?}");
    phone.stop().await;
    drain.abort();
    server.stop().await;
}

/// A node's catch-up reads (`device.catch_up_reads`) are taken only to read and encode a page,
/// never while the page waits for its device: with one read for the whole node, a device that
/// stops reading in the middle of its snapshot does not hold up another device's catch-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_stalled_in_catch_up_does_not_hold_the_nodes_catch_up_reads() {
    const RECORD_BYTES: usize = 64 * 1024;
    const RECORDS: usize = 400;
    let server = TestServer::start_with(|config| {
        config.device.catch_up_reads = 1;
        config.device.outbound_queue = 1;
        config.device.max_page_bytes = 1024 * 1024;
    })
    .await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    // 25 MiB: far more than the stalled device's window of pages leaves in socket buffers.
    let big = "x".repeat(RECORD_BYTES);
    for batch in 0..RECORDS / 10 {
        let upserts = (0..10)
            .map(|i| {
                let mut upsert = record(&format!("big-{:04}", batch * 10 + i), i as i64);
                upsert.fields.insert("blob".into(), syncline_proto::v1::Value::string(big.clone()));
                upsert
            })
            .collect();
        push(&mut ingest, "Account", "*", upserts, vec![]).await.unwrap();
    }
    let subscription = || SubscriptionConfig::new("Account").with_page_size(16).with_window(16);

    // The app of the first device does not read its notifications, so the device stops
    // reading its socket during the snapshot.
    let stalled = DeviceConfig::new(server.url(), "ann", "ann-pw").subscribe(subscription()).with_notifications(1);
    let mut stalled = Device::start(stalled);
    let mut notifications = stalled.take_notifications().expect("notifications are on");
    drop(notifications.recv().await.expect("a first notification"));

    let reader = Device::start(DeviceConfig::new(server.url(), "ann", "ann-pw").subscribe(subscription()));
    assert_converges(&reader, &server, "Account", "*", DEADLINE).await;

    // The stalled device's app wakes up: it converges too.
    let drain = tokio::spawn(async move { while notifications.recv().await.is_some() {} });
    assert_converges(&stalled, &server, "Account", "*", DEADLINE).await;
    for device in [&reader, &stalled] {
        let stats = device.stats();
        assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");
    }
    reader.stop().await;
    stalled.stop().await;
    drain.abort();
    server.stop().await;
}

/// A herd of devices catching up at once through a single catch-up read (on Redis, where each
/// page read is a round trip) all go live while changes keep coming, and converge.
///
/// What made resumed devices miss the head at scale (1,000 devices of a killed node moved to
/// another while changes kept coming: about 800 stayed in catch-up, a few changes a page, until
/// the changes stopped) needs the failover benchmark's load to show
/// (`benches/cluster.sh PARTS=failover`); the tail of a catch-up is now read without a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_catching_up_under_a_steady_stream_goes_live_before_the_stream_ends() {
    const DEVICES: usize = 100;
    /// Bounds the writer: at one change per 3 ms, longer than the test's deadline.
    const MOST_CHANGES: usize = 30_000;
    // On Redis, where each page read is a round trip: a turn costs what it does in a cluster.
    let redis = syncline_server::test_util::redis_server::RedisServer::start();
    let server = TestServer::start_with(|config| {
        config.device.catch_up_reads = 1;
        config.store.backend = syncline_server::config::StoreBackend::Redis;
        config.store.redis_url = Some(redis.url());
    })
    .await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    for batch in 0..10 {
        let records = (0..50).map(|i| record(&format!("seed-{batch}-{i}"), i)).collect();
        push(&mut ingest, "Account", "*", records, vec![]).await.unwrap();
    }
    let streaming = Arc::new(AtomicBool::new(true));
    let writer = {
        let (streaming, mut ingest) = (streaming.clone(), server.ingest_client().await);
        tokio::spawn(async move {
            // A steady rate, not a wait for anything: one change every 3 ms.
            let mut pace = tokio::time::interval(Duration::from_millis(3));
            for n in 0..MOST_CHANGES {
                if !streaming.load(Ordering::Relaxed) {
                    break;
                }
                pace.tick().await;
                push(&mut ingest, "Account", "*", vec![record(&format!("live-{n}"), 1)], vec![]).await.unwrap();
            }
        })
    };
    let devices: Vec<DeviceHandle> = (0..DEVICES)
        .map(|_| {
            let subscription = SubscriptionConfig::new("Account").with_page_size(100);
            Device::start(DeviceConfig::new(server.url(), "ann", "ann-pw").subscribe(subscription))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for device in &devices {
        device.wait_for(deadline, |state| state.is_caught_up()).await.expect("live while changes keep coming");
    }
    assert!(streaming.load(Ordering::Relaxed) && !writer.is_finished(), "the stream was still running");
    streaming.store(false, Ordering::Relaxed);
    writer.await.unwrap();
    for device in &devices {
        assert_converges(device, &server, "Account", "*", DEADLINE).await;
        let stats = device.stats();
        assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");
    }
    for device in devices {
        device.stop().await;
    }
    server.stop().await;
}

/// With `device.push_interval_ms`, a lone live change goes out at once, what follows it within
/// the interval is held until the interval has passed, and nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_interval_holds_what_follows_a_push_and_loses_nothing() {
    // The longest allowed, so that "at once" is far inside it even on a loaded machine.
    const INTERVAL: Duration = Duration::from_secs(1);
    let server = TestServer::start_with(|config| config.device.push_interval_ms = INTERVAL.as_millis() as u64).await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    let phone = device(&server, "ann", "ann-pw", &[("Account", "*")], FrameFormat::Binary);
    phone
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up())
        .await
        .expect("the device catches up on the empty partition");
    let pages_before = phone.stats().pages;
    let cursor_at = |at: u64| {
        move |state: &syncline_client_sim::DeviceState| {
            state.partition("Account", "*").is_some_and(|partition| partition.cursor >= at)
        }
    };

    let first_pushed = tokio::time::Instant::now();
    push(&mut ingest, "Account", "*", vec![record("r0", 0)], vec![]).await.unwrap();
    phone.wait_for(first_pushed + DEADLINE, cursor_at(1)).await.expect("the first change arrives");
    let first_took = first_pushed.elapsed();
    assert!(first_took < INTERVAL, "a lone change goes at once, this one took {first_took:?}");

    // Pushed after the first arrived, so after its push: held until the interval has passed.
    let mut head = 0;
    for n in 1..5 {
        head = push(&mut ingest, "Account", "*", vec![record(&format!("r{n}"), n)], vec![]).await.unwrap().head;
    }
    phone.wait_for(first_pushed + DEADLINE, cursor_at(2)).await.expect("the held changes arrive");
    let held_took = first_pushed.elapsed();
    assert!(held_took >= INTERVAL, "the second change came {held_took:?} after the first was pushed");

    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;
    let stats = phone.stats();
    assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");
    assert_eq!(stats.pages, pages_before, "the changes came as live pushes, not catch-up pages: {stats:?}");
    assert_eq!(head, 5);
    phone.stop().await;
    server.stop().await;
}
