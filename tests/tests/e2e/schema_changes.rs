//! Issue 18: a channel that changes its schema makes the devices syncing its source sync it
//! again: the server describes its channels at start and every `grpc.describe_interval_secs`,
//! stores each source's schema hash, and on a change sends `SyncState{SCHEMA_CHANGED}`; the
//! device library drops what it holds of the partition, subscribes from cursor 0, tells
//! the app, and converges on the same records. Devices of other sources are left alone.
//! In cluster mode (issue 16) the node that notices the change tells the others, so devices
//! connected to any node get the status.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use futures_util::stream;
use syncline_client_sim::{Device, DeviceConfig, Notification, SubscriptionConfig, SyncNotificationStatus};
use syncline_proto::sdk::{self, ChangeStream, ChannelBackend, RecordStream, WriteOutcome};
use syncline_proto::v1::{
    ChangeBatch, DescribeResponse, FieldSchema, QueryRequest, SourceDescription, WatchRequest, WriteRequest,
};
use syncline_server::config::{CaptureMode, Config, Partitioning, SourceSection, StoreBackend};
use syncline_server::test_util::redis_server::RedisServer;
use syncline_tests::{DEADLINE, TestServer, eventually, push, record, serve_channel};
use tokio_util::sync::DropGuard;

/// A channel whose description of source `Note` the test changes.
struct SchemaChannel {
    fields: Mutex<Vec<FieldSchema>>,
}

impl SchemaChannel {
    fn describe_with(&self, fields: Vec<FieldSchema>) {
        *self.fields.lock().unwrap() = fields;
    }
}

fn field(name: &str, ty: &str) -> FieldSchema {
    FieldSchema { name: name.into(), r#type: ty.into(), required: false }
}

#[tonic::async_trait]
impl ChannelBackend for SchemaChannel {
    async fn describe(&self) -> sdk::Result<DescribeResponse> {
        Ok(DescribeResponse {
            sources: vec![SourceDescription {
                name: "Note".into(),
                partitioning: "user".into(),
                capabilities: vec![],
                fields: self.fields.lock().unwrap().clone(),
            }],
        })
    }

    async fn query(&self, _request: QueryRequest) -> sdk::Result<RecordStream> {
        Ok(Box::pin(stream::empty()))
    }

    /// A feed with nothing to say: its position, then silence until the channel stops.
    async fn watch(&self, _request: WatchRequest) -> sdk::Result<ChangeStream> {
        let start = ChangeBatch { partitions: Vec::new(), resume_token: b"0".to_vec() };
        Ok(Box::pin(stream::iter([Ok(start)]).chain(stream::pending())))
    }

    async fn create(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }

    async fn update(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }

    async fn delete(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }
}

struct Setup {
    server: TestServer,
    channel: Arc<SchemaChannel>,
    _stop: DropGuard,
}

async fn setup() -> Setup {
    let channel = Arc::new(SchemaChannel { fields: Mutex::new(vec![field("text", "string")]) });
    let (url, stop) = serve_channel(channel.clone()).await;
    let server = TestServer::start_with(move |config| {
        let mut note = SourceSection::new(Partitioning::User);
        note.channel = Some(url);
        config.sources.insert("Note".into(), note);
        config.grpc.describe_interval_secs = 1;
    })
    .await;
    server.add_user("ann", "ann-pw");
    Setup { server, channel, _stop: stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_changes_its_schema_makes_subscribed_devices_resync_the_source() {
    let setup = setup().await;
    let mut ingest = setup.server.ingest_client().await;
    let notes: Vec<_> = (1..=20).map(|n| record(&format!("note-{n}"), n)).collect();
    push(&mut ingest, "Note", "ann", notes, Vec::new()).await.unwrap();
    push(&mut ingest, "Account", "*", vec![record("acc-1", 1)], Vec::new()).await.unwrap();

    let config = DeviceConfig::new(setup.server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Note"))
        .with_notifications(4096);
    let mut notes_device = Device::start(config);
    let mut notifications = notes_device.take_notifications().expect("notifications on");
    let accounts_device = Device::start(
        DeviceConfig::new(setup.server.url(), "ann", "ann-pw").subscribe(SubscriptionConfig::new("Account")),
    );
    for device in [&notes_device, &accounts_device] {
        device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    }
    assert_eq!(notes_device.stats().schema_changes, 0, "the first description is no change");

    // The backend's release adds a field.
    setup.channel.describe_with(vec![field("text", "string"), field("photo", "blob")]);
    let resynced = tokio::time::timeout(DEADLINE, async {
        while let Some(notification) = notifications.recv().await {
            if let Notification::Sync(sync) = notification
                && sync.status == SyncNotificationStatus::SchemaChanged
            {
                return sync;
            }
        }
        panic!("the notifications ended");
    })
    .await
    .expect("the app is told in time");
    assert_eq!((resynced.source.as_str(), resynced.key.as_str()), ("Note", "ann"));
    // The notification comes after the partition was dropped: caught up again means resynced.
    notes_device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    let stats = notes_device.stats();
    assert_eq!(stats.schema_changes, 1, "told once");
    assert!(stats.resyncs >= 1);
    let view = notes_device.view("Note", "ann").expect("subscribed");
    assert_eq!(view.records.len(), 20, "the same records after the resync");
    assert_eq!(accounts_device.stats().resyncs, 0, "a device of another source is left alone");

    // The new schema is stored: a restarted server does not take it for a change.
    let stored = setup.server.server.store().capture_position("schema:Note").unwrap();
    assert!(stored.is_some_and(|hash| hash.len() == 32));
    notes_device.stop().await;
    accounts_device.stop().await;
}

/// Serves `channel` on `addr` until the guard is dropped (which ends its streams).
async fn serve_on(channel: Arc<SchemaChannel>, addr: std::net::SocketAddr) -> DropGuard {
    let listener = eventually(DEADLINE, "the channel's port is free again", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(sdk::serve_shared(channel, listener, async move { shutdown.cancelled().await }));
    stop.drop_guard()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_channel_that_comes_back_with_another_schema_is_noticed_at_its_reconnect() {
    let channel = Arc::new(SchemaChannel { fields: Mutex::new(vec![field("text", "string")]) });
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let serving = serve_on(channel.clone(), addr).await;
    let server = TestServer::start_with(move |config| {
        let mut note = SourceSection::new(Partitioning::User);
        note.channel = Some(format!("http://{addr}"));
        note.capture = CaptureMode::Watch;
        config.sources.insert("Note".into(), note);
        // Only the reconnect can notice the change within the test.
        config.grpc.describe_interval_secs = 3600;
    })
    .await;
    server.add_user("ann", "ann-pw");
    let device =
        Device::start(DeviceConfig::new(server.url(), "ann", "ann-pw").subscribe(SubscriptionConfig::new("Note")));
    device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    let health = || server.server.capture.health("Note");
    eventually(DEADLINE, "the watch stream is open", || async { health().connected.then_some(()) }).await;

    // The channel goes away and comes back as a new release.
    drop(serving);
    eventually(DEADLINE, "the watch stream is down", || async { (!health().connected).then_some(()) }).await;
    channel.describe_with(vec![field("text", "string"), field("done", "bool")]);
    let _serving = serve_on(channel.clone(), addr).await;
    eventually(DEADLINE, "the device resyncs for the new schema", || async {
        (device.stats().schema_changes == 1).then_some(())
    })
    .await;
    device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_noticed_by_the_capture_node_reaches_devices_on_another_node() {
    let redis = RedisServer::start();
    let channel = Arc::new(SchemaChannel { fields: Mutex::new(vec![field("text", "string")]) });
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let serving = serve_on(channel.clone(), addr).await;
    let url = redis.url();
    let configure = |config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
        let mut note = SourceSection::new(Partitioning::User);
        note.channel = Some(format!("http://{addr}"));
        note.capture = CaptureMode::Watch;
        config.sources.insert("Note".into(), note);
        // Only the capture node's stream reconnect can notice the change within the test.
        config.grpc.describe_interval_secs = 3600;
    };
    let nodes = [TestServer::start_with(configure).await, TestServer::start_with(configure).await];
    nodes[0].add_user("ann", "ann-pw");
    let following = |node: &TestServer| node.server.capture.health("Note").connected;
    let holder = eventually(DEADLINE, "one node follows the feed", || async { nodes.iter().position(following) }).await;
    let other = &nodes[1 - holder];
    let device =
        Device::start(DeviceConfig::new(other.url(), "ann", "ann-pw").subscribe(SubscriptionConfig::new("Note")));
    device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    assert_eq!(device.stats().schema_changes, 0);

    // The channel comes back as a new release: only the capture lease holder's stream sees it.
    drop(serving);
    eventually(DEADLINE, "the watch stream is down", || async { (!following(&nodes[holder])).then_some(()) }).await;
    channel.describe_with(vec![field("text", "string"), field("done", "bool")]);
    let _serving = serve_on(channel.clone(), addr).await;
    eventually(DEADLINE, "the device on the other node resyncs for the new schema", || async {
        (device.stats().schema_changes == 1).then_some(())
    })
    .await;
    device.wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.is_caught_up()).await.unwrap();
    assert!(!following(other), "the device's node does not follow the feed: it was told by the other");
    let stats = device.stats();
    assert_eq!((stats.schema_changes, stats.checksum_mismatches), (1, 0), "told once ({stats:?})");
    assert!(stats.resyncs >= 1, "the partition was synced again ({stats:?})");
    device.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
