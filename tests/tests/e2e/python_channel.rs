//! Syncline against the Python example channel (grpcio): logins checked by the channel's
//! Authenticate, `Task` changes captured with `watch` (across a channel restart) and with
//! `poll`, devices converging. Needs the channel's venv and stubs, which `scripts/test.sh`
//! prepares (examples/python-channel/run-tests.sh).

use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::v1::channel_client::ChannelClient;
use syncline_proto::v1::{Caller, PartitionKey, Record, Value, WriteRequest};
use syncline_server::config::{CaptureMode, ConflictPolicy, Partitioning, SourceSection};
use syncline_tests::{DEADLINE, PythonChannel, TestServer, assert_converges};

fn task(title: &str, priority: i64) -> Record {
    let mut record = Record { id: format!("tmp-{title}"), ..Record::default() };
    record.fields.insert("title".into(), Value::string(title));
    record.fields.insert("priority".into(), Value::int(priority));
    record.fields.insert("done".into(), Value::bool(false));
    record
}

async fn create_task(channel_url: &str, title: &str, priority: i64) {
    let mut client = ChannelClient::connect(channel_url.to_owned()).await.expect("channel reachable");
    client
        .create(WriteRequest {
            partition: Some(PartitionKey { source: "Task".into(), key: "demo".into() }),
            record: Some(task(title, priority)),
            base_version: 0,
            mutation_id: String::new(),
            caller: Some(Caller { user_id: "demo".into(), client_id: "backend-test".into() }),
        })
        .await
        .expect("create in the backend");
}

async fn server_with_task_source(channel_url: &str, capture: CaptureMode) -> TestServer {
    server_with_task_policy(channel_url, capture, ConflictPolicy::Reject).await
}

async fn server_with_task_policy(channel_url: &str, capture: CaptureMode, conflict: ConflictPolicy) -> TestServer {
    let channel_url = channel_url.to_owned();
    TestServer::start_with(move |config| {
        let mut task = SourceSection::new(Partitioning::User);
        task.channel = Some(channel_url.clone());
        task.capture = capture;
        task.conflict = conflict;
        task.poll_interval_secs = 1;
        config.sources.insert("Task".into(), task);
        config.auth.channel = Some(channel_url);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_channel_logins_and_watch_capture_survive_a_channel_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let channel = PythonChannel::start(&db, 0);
    let port = channel.port();
    create_task(&channel.url, "before anyone syncs", 1).await;
    let server = server_with_task_source(&channel.url, CaptureMode::Watch).await;

    // "demo" exists only in the Python backend: the login is checked there.
    let phone =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.caught_up && p.total >= 1))
        .await
        .expect("the watched record reaches the device");
    for n in 0..5 {
        create_task(&channel.url, &format!("live {n}"), n).await;
    }
    phone
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.total == 6))
        .await
        .expect("live changes reach the device");

    // The channel restarts (same database, same port): Syncline resumes its watch from the
    // stored token; nothing is lost or applied twice.
    drop(channel);
    let channel = PythonChannel::start(&db, port);
    for n in 5..8 {
        create_task(&channel.url, &format!("after restart {n}"), n).await;
    }
    phone
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.total == 9))
        .await
        .expect("changes made after the channel restart arrive");
    assert_converges(&phone, &server, "Task", "demo", DEADLINE).await;
    let (_, state) = syncline_tests::server_view(&server, "Task", "demo");
    assert_eq!(state.head, 9, "each backend change was logged exactly once");
    let stats = phone.stats();
    assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");

    // A wrong password is refused by the channel.
    let wrong =
        Device::start(DeviceConfig::new(server.url(), "demo", "nope").subscribe(SubscriptionConfig::new("Task")));
    let stopped = wrong.wait_for(deadline(), |state| state.stop_reason().is_some()).await;
    let reason = match stopped {
        Ok(state) => state.stop_reason().cloned(),
        Err(syncline_client_sim::WaitError::Stopped(reason)) => Some(reason),
        Err(other) => panic!("the device with a wrong password did not stop: {other:?}"),
    };
    assert!(matches!(reason, Some(syncline_client_sim::StopReason::Unauthenticated { .. })), "{reason:?}");
    phone.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_channel_poll_capture_logs_only_real_changes() {
    let dir = tempfile::tempdir().unwrap();
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    create_task(&channel.url, "first", 1).await;
    create_task(&channel.url, "second", 2).await;
    let server = server_with_task_source(&channel.url, CaptureMode::Poll).await;

    // Subscribing triggers a poll at once.
    let phone =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.total == 2))
        .await
        .expect("the first poll brings the backend's records");
    let head = syncline_tests::server_view(&server, "Task", "demo").1.head;
    assert_eq!(head, 2);

    // A change in the backend arrives within an interval (1 s), and polls that find nothing
    // new log nothing.
    create_task(&channel.url, "third", 3).await;
    phone
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.total == 3))
        .await
        .expect("the next poll brings the new record");
    assert_converges(&phone, &server, "Task", "demo", DEADLINE).await;
    // Polling again finds nothing new and logs nothing.
    let connection = syncline_server::channel::grpc::ChannelConnection::lazy(&channel.url).unwrap();
    let partition = syncline_server::storage::PartitionName::new("Task", "demo");
    let sink = syncline_server::channel::capture::CaptureSink {
        store: server.server.store().clone(),
        counters: server.server.capture.clone(),
    };
    for _ in 0..2 {
        let logged = syncline_server::channel::capture::poll_partition(
            &sink,
            &connection,
            &partition,
            syncline_server::channel::capture::Missing::Delete,
        )
        .await
        .expect("poll");
        assert_eq!(logged, 0, "an unchanged backend logs nothing");
    }
    assert_eq!(syncline_tests::server_view(&server, "Task", "demo").1.head, 3);
    phone.stop().await;
    server.stop().await;
    drop(channel);
}

mod mutations {
    use super::*;
    use syncline_client_sim::{Connection, Incoming};
    use syncline_proto::v1::{
        ClientFrame, ErrorCode, Mutate, MutationOp, MutationResult, QueryRequest, client_frame, server_frame,
    };

    pub(super) async fn session(server: &TestServer) -> Connection {
        let mut connection = syncline_tests::raw_login(&server.url(), "demo", "demo").await;
        match connection.recv().await.unwrap() {
            Incoming::Frame(frame) => assert!(matches!(frame.msg, Some(server_frame::Msg::Welcome(_)))),
            other => panic!("expected Welcome, got {other:?}"),
        }
        connection
    }

    pub(super) fn mutate(
        mutation_id: &str,
        op: MutationOp,
        id: &str,
        title: Option<&str>,
        base_version: u64,
    ) -> ClientFrame {
        let mut fields = std::collections::BTreeMap::new();
        if let Some(title) = title {
            fields.insert("title".to_owned(), Value::string(title));
        }
        ClientFrame {
            msg: Some(client_frame::Msg::Mutate(Mutate {
                mutation_id: mutation_id.into(),
                source: "Task".into(),
                key: String::new(),
                op: op as i32,
                id: id.into(),
                fields,
                base_version,
            })),
        }
    }

    pub(super) async fn outcome(connection: &mut Connection, frame: ClientFrame) -> MutationResult {
        syncline_tests::mutation_outcome(connection, frame).await
    }

    pub(super) async fn backend_titles(channel_url: &str) -> Vec<String> {
        let mut client = ChannelClient::connect(channel_url.to_owned()).await.unwrap();
        let request = QueryRequest { partition: Some(PartitionKey { source: "Task".into(), key: "demo".into() }) };
        let mut stream = client.query(request).await.unwrap().into_inner();
        let mut titles = Vec::new();
        while let Some(record) = stream.message().await.unwrap() {
            if let Some(syncline_proto::v1::value::Kind::StringValue(title)) =
                record.fields.get("title").and_then(|value| value.kind.clone())
            {
                titles.push(title);
            }
        }
        titles.sort();
        titles
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_writes_reach_the_backend_once_with_links_conflicts_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tasks.db");
        let channel = PythonChannel::start(&db, 0);
        let port = channel.port();
        let server = server_with_task_source(&channel.url, CaptureMode::Watch).await;
        let watcher =
            Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
        let mut phone = session(&server).await;

        // A create with a temporary id: ok, linked to the backend's id.
        let created = outcome(&mut phone, mutate("m1", MutationOp::Create, "tmp-1", Some("buy milk"), 0)).await;
        assert!(created.ok, "{created:?}");
        let link = created.link.clone().expect("a create links its temporary id");
        assert_eq!(link.temp_id, "tmp-1");
        assert!(link.id.starts_with("task-"), "{link:?}");
        // The same mutation id again (a resend after a lost connection): the stored outcome,
        // and no second record in the backend.
        let again = outcome(&mut phone, mutate("m1", MutationOp::Create, "tmp-1", Some("buy milk"), 0)).await;
        assert_eq!(again, created);
        assert_eq!(backend_titles(&channel.url).await, vec!["buy milk".to_owned()]);
        // The change flows through the channel's feed and the partition log to every device.
        syncline_tests::eventually(DEADLINE, "the created task to come back through the watch", || async {
            syncline_tests::server_view(&server, "Task", "demo").0.contains_key(&link.id).then_some(())
        })
        .await;
        assert_converges(&watcher, &server, "Task", "demo", DEADLINE).await;
        let version = watcher.view("Task", "demo").unwrap().records[&link.id].version;

        // Two updates from the same base version: one wins, the other conflicts with the current record.
        let first =
            outcome(&mut phone, mutate("m2", MutationOp::Update, &link.id, Some("buy oat milk"), version)).await;
        assert!(first.ok, "{first:?}");
        syncline_tests::eventually(DEADLINE, "the update to come back through the watch", || async {
            let (records, _) = syncline_tests::server_view(&server, "Task", "demo");
            (records[&link.id].fields["title"] == Value::string("buy oat milk")).then_some(())
        })
        .await;
        let second =
            outcome(&mut phone, mutate("m3", MutationOp::Update, &link.id, Some("buy soy milk"), version)).await;
        assert!(!second.ok);
        let error = second.error.expect("a conflict error");
        assert_eq!(error.code, ErrorCode::Conflict as i32);
        assert_eq!(error.op, MutationOp::Update as i32);
        let current = error.current.expect("the conflict carries the current record");
        assert_eq!(current.fields["title"], Value::string("buy oat milk"));

        // Search goes to the channel and comes back on the same socket.
        let search = ClientFrame {
            msg: Some(client_frame::Msg::Search(syncline_proto::v1::Search {
                search_id: "s1".into(),
                source: "Task".into(),
                params: [("title".to_owned(), Value::string("oat"))].into(),
                offset: 0,
                limit: 10,
            })),
        };
        phone.send(&search).await.unwrap();
        let found = loop {
            let incoming = tokio::time::timeout(DEADLINE, phone.recv()).await.expect("search result in time").unwrap();
            if let Incoming::Frame(frame) = incoming
                && let Some(server_frame::Msg::SearchResult(result)) = frame.msg
            {
                break result;
            }
        };
        assert_eq!(found.search_id, "s1");
        assert!(found.error.is_none(), "{found:?}");
        assert_eq!(found.records.len(), 1);
        assert_eq!(found.records[0].id, link.id);

        // A permanent error from the backend (a task needs a title) reaches the device typed,
        // with the backend's message.
        let invalid = outcome(&mut phone, mutate("m4", MutationOp::Create, "tmp-2", None, 0)).await;
        let error = invalid.error.expect("a create error");
        assert_eq!((error.op, error.code), (MutationOp::Create as i32, ErrorCode::BadRequest as i32));
        assert!(error.message.contains("title"), "{}", error.message);

        // The backend goes down: a mutation is acked (queued) and waits; it succeeds once the
        // backend is back.
        drop(channel);
        phone.send(&mutate("m5", MutationOp::Create, "tmp-3", Some("call mom"), 0)).await.unwrap();
        let channel = PythonChannel::start(&db, port);
        let later = outcome(&mut phone, mutate("m5", MutationOp::Create, "tmp-3", Some("call mom"), 0)).await;
        assert!(later.ok, "{later:?}");
        assert_eq!(backend_titles(&channel.url).await, vec!["buy oat milk".to_owned(), "call mom".to_owned()]);
        syncline_tests::eventually(DEADLINE, "both tasks in the log", || async {
            (syncline_tests::server_view(&server, "Task", "demo").0.len() == 2).then_some(())
        })
        .await;
        assert_converges(&watcher, &server, "Task", "demo", DEADLINE).await;
        watcher.stop().await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_right_after_a_mutation_never_duplicate_it_in_the_backend() {
    use syncline_proto::v1::{ClientFrame, Mutate, MutationOp, client_frame};

    let dir = tempfile::tempdir().unwrap();
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    let server = server_with_task_source(&channel.url, CaptureMode::Watch).await;
    let url = server.url();
    // One device throughout: mutation ids are unique per device, which reconnects as itself.
    let mut first = syncline_tests::raw_login(&url, "demo", "demo").await;
    let client_id = syncline_tests::welcome_client_id(&mut first).await;
    drop(first);
    let connect = || syncline_tests::raw_login_as(&url, "demo", "demo", &client_id);
    let create = |n: u32| ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: format!("cut-{n}"),
            source: "Task".into(),
            op: MutationOp::Create as i32,
            id: format!("tmp-{n}"),
            fields: [("title".to_owned(), Value::string(format!("task {n:02}")))].into(),
            ..Mutate::default()
        })),
    };
    for n in 0..50 {
        // Send, then drop the connection before reading anything: the device cannot know
        // whether the server got it.
        let mut connection = connect().await;
        connection.send(&create(n)).await.unwrap();
        connection.cut();
        // Reconnect and resend with the same mutation id until the outcome comes back.
        let mut connection = connect().await;
        let result = syncline_tests::mutation_outcome(&mut connection, create(n)).await;
        assert!(result.ok, "{result:?}");
    }
    let titles = mutations::backend_titles(&channel.url).await;
    let expected: Vec<String> = (0..50).map(|n| format!("task {n:02}")).collect();
    assert_eq!(titles, expected, "each mutation took effect in the backend exactly once");
    // Not just the channel's own dedupe: Syncline called it once per mutation id.
    for n in 0..50 {
        assert_eq!(channel.write_calls(&format!("cut-{n}")), ["create"], "calls for cut-{n}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_write_wins_converges_every_device_to_the_later_write() {
    use syncline_proto::v1::MutationOp;
    let dir = tempfile::tempdir().unwrap();
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    let server = server_with_task_policy(&channel.url, CaptureMode::Watch, ConflictPolicy::LastWriteWins).await;
    let mut phone = mutations::session(&server).await;
    let mut tablet = mutations::session(&server).await;
    let created =
        mutations::outcome(&mut phone, mutations::mutate("c", MutationOp::Create, "tmp", Some("draft"), 0)).await;
    let id = created.link.expect("linked").id;
    let watcher =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    let state = watcher
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.caught_up && p.total == 1))
        .await
        .expect("the created task syncs");
    let base = state.partition("Task", "demo").unwrap().cursor;
    // Both devices edit from the same base version; both writes are accepted, the later wins.
    let first =
        mutations::outcome(&mut phone, mutations::mutate("u1", MutationOp::Update, &id, Some("phone's"), base)).await;
    let second =
        mutations::outcome(&mut tablet, mutations::mutate("u2", MutationOp::Update, &id, Some("tablet's"), base)).await;
    assert!(first.ok && second.ok, "{first:?} {second:?}");
    watcher
        .wait_for(deadline(), |_| watcher_title(&watcher, &id).as_deref() == Some("tablet's"))
        .await
        .expect("the later write reaches the device");
    assert_converges(&watcher, &server, "Task", "demo", DEADLINE).await;
    watcher.stop().await;
    server.stop().await;
}

fn watcher_title(device: &syncline_client_sim::DeviceHandle, id: &str) -> Option<String> {
    let view = device.view("Task", "demo")?;
    match view.records.get(id)?.fields.get("title")?.kind.clone()? {
        syncline_proto::v1::value::Kind::StringValue(title) => Some(title),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_offline_writes_reach_the_backend_in_order_with_links_applied() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    // The device works offline first: its server is not up yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/v1/sync");
    let mut config = DeviceConfig::new(url, "demo", "demo")
        .subscribe(SubscriptionConfig::new("Task").with_key("demo"))
        .with_mutation_store(dir.path().join("phone-queue.db"));
    config.backoff.initial = std::time::Duration::from_millis(20);
    config.backoff.max = std::time::Duration::from_millis(200);
    let phone = Device::start(config);

    let mut rng = StdRng::seed_from_u64(100);
    let mut model: BTreeMap<String, String> = BTreeMap::new(); // local id -> title
    let title =
        |n: usize| -> BTreeMap<String, Value> { [("title".to_owned(), Value::string(format!("t{n:03}")))].into() };
    for n in 0..100 {
        let roll: f64 = rng.random();
        if model.is_empty() || roll < 0.4 {
            let id = phone.create("Task", Some("demo"), title(n)).expect("queued offline");
            model.insert(id, format!("t{n:03}"));
        } else if roll < 0.8 {
            let id = model.keys().nth(rng.random_range(0..model.len())).cloned().unwrap();
            phone.update("Task", Some("demo"), &id, title(n), None).expect("queued offline");
            model.insert(id, format!("t{n:03}"));
        } else {
            let id = model.keys().nth(rng.random_range(0..model.len())).cloned().unwrap();
            phone.delete("Task", Some("demo"), &id).expect("queued offline");
            model.remove(&id);
        }
    }
    assert_eq!(phone.mutations().len(), 100, "all hundred writes wait in the offline queue");

    // The server comes up: the device connects, sends its queue in order and converges.
    let channel_url = channel.url.clone();
    let server = TestServer::start_with(move |config| {
        config.device.addr = format!("127.0.0.1:{port}");
        let mut task = SourceSection::new(Partitioning::User);
        task.channel = Some(channel_url.clone());
        task.capture = CaptureMode::Watch;
        config.sources.insert("Task".into(), task);
        config.auth.channel = Some(channel_url);
    })
    .await;
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone
        .wait_for(deadline(), |state| state.pending_mutations == 0 && state.failed_mutations == 0)
        .await
        .expect("every offline write is resolved");
    let mut expected: Vec<String> = model.values().cloned().collect();
    expected.sort();
    assert_eq!(mutations::backend_titles(&channel.url).await, expected, "the backend has exactly those effects");
    syncline_tests::eventually(DEADLINE, "the log to hold the backend's tasks", || async {
        (syncline_tests::server_view(&server, "Task", "demo").0.len() == expected.len()).then_some(())
    })
    .await;
    assert_converges(&phone, &server, "Task", "demo", DEADLINE).await;
    let view = phone.view("Task", "demo").unwrap();
    assert!(view.records.keys().all(|id| id.starts_with("task-")), "links replaced every temporary id");
    // A second device of the same user sees the same.
    let tablet =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
    assert_converges(&tablet, &server, "Task", "demo", DEADLINE).await;
    phone.stop().await;
    tablet.stop().await;
    server.stop().await;
}
