//! The server process is killed with SIGKILL during ingest and restarted on the same data
//! directory: every change whose Push returned OK is there, and devices resume from their
//! cursors and converge.

use std::collections::BTreeMap;
use std::process::Command;

use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{PushRequest, Record};
use syncline_tests::process::ServerProcess;
use syncline_tests::{DEADLINE, eventually, record};

/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_syncline-under-test");

async fn connect_ingest(url: &str) -> IngestClient<tonic::transport::Channel> {
    let url = url.to_owned();
    eventually(DEADLINE, "the gRPC endpoint accepts connections", || {
        let url = url.clone();
        async move { IngestClient::connect(url).await.ok() }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_and_devices_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(SERVER, dir.path(), 0, 0);
    let (device_port, grpc_port) = (server.device_port(), server.grpc_port());

    // A device syncs the demo's app partition and stays connected across the crash.
    let config =
        DeviceConfig::new(server.device_url.clone(), "demo", "demo").subscribe(SubscriptionConfig::new("Account"));
    let phone = Device::start(config);
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone
        .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.caught_up))
        .await
        .expect("initial sync");

    // Ingest from a task; record every batch whose Push returned OK.
    let mut ingest = connect_ingest(&server.grpc_url).await;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Record>>();
    let pusher = tokio::spawn(async move {
        for batch in 0u32..100_000 {
            let upserts: Vec<Record> =
                (0..20).map(|i| record(&format!("crash-{batch:05}-{i:02}"), i64::from(batch))).collect();
            let request =
                PushRequest { source: "Account".into(), key: "*".into(), upserts: upserts.clone(), deletes: vec![] };
            match ingest.push(request).await {
                Ok(_) => {
                    if acked_tx.send(upserts).is_err() {
                        return;
                    }
                }
                Err(_) => return, // the server died mid-call: not acknowledged
            }
        }
    });

    // Kill the server once a good number of batches were acknowledged.
    let mut acked: BTreeMap<String, Record> = BTreeMap::new();
    while acked.len() < 2_000 {
        let batch =
            tokio::time::timeout(DEADLINE, acked_rx.recv()).await.expect("pushes progress").expect("pusher alive");
        acked.extend(batch.into_iter().map(|record| (record.id.clone(), record)));
    }
    server.kill();
    pusher.await.unwrap();
    while let Ok(batch) = acked_rx.try_recv() {
        acked.extend(batch.into_iter().map(|record| (record.id.clone(), record)));
    }
    let cursor_before_restart = phone.view("Account", "*").map_or(0, |view| view.cursor);

    // Restart on the same data directory and ports.
    let server = ServerProcess::start(SERVER, dir.path(), device_port, grpc_port);

    // The connected device reconnects, resumes from its cursor and converges with a fresh one.
    let fresh = Device::start(
        DeviceConfig::new(server.device_url.clone(), "demo", "demo").subscribe(SubscriptionConfig::new("Account")),
    );
    let fresh_state = fresh
        .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.caught_up))
        .await
        .expect("a fresh device syncs after the restart");
    let head = fresh_state.partition("Account", "*").unwrap().cursor;
    phone
        .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.caught_up && p.cursor >= head))
        .await
        .expect("the old device catches up after the restart");
    let old_view = phone.view("Account", "*").unwrap();
    let new_view = fresh.view("Account", "*").unwrap();
    assert!(old_view.cursor >= cursor_before_restart);
    assert_eq!(old_view.checksum, new_view.checksum);
    assert!(old_view.records == new_view.records);

    // Every acknowledged record is there, with the fields it was pushed with.
    for (id, pushed) in &acked {
        let stored = new_view.records.get(id).unwrap_or_else(|| panic!("acknowledged record {id} was lost"));
        assert_eq!(stored.fields, pushed.fields, "record {id}");
    }
    let stats = phone.stats();
    assert_eq!(stats.duplicates + stats.gaps + stats.checksum_mismatches, 0, "{stats:?}");
    assert!(stats.reconnects >= 1);
    phone.stop().await;
    fresh.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_queued_before_a_sigkill_reaches_the_backend_once_after_restart() {
    use syncline_client_sim::Incoming;
    use syncline_proto::v1::channel_client::ChannelClient;
    use syncline_proto::v1::{
        ClientFrame, Mutate, MutationOp, PartitionKey, QueryRequest, Value, client_frame, server_frame,
    };

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    // The backend is down while the device writes: the mutation is queued, not dispatched.
    let channel = syncline_tests::PythonChannel::start(&db, 0);
    let channel_port = channel.port();
    drop(channel);
    let data_dir = dir.path().join("data");
    let config = dir.path().join("syncline.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.Task]\npartitioning = \"user\"\nchannel = \"http://127.0.0.1:{channel_port}\"\ncapture = \"watch\"\n"
        ),
    )
    .unwrap();
    let added = Command::new(SERVER)
        .args(["user", "add", "demo", "--password", "demo", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .status()
        .unwrap();
    assert!(added.success());
    let server = ServerProcess::start_with(SERVER, &data_dir, 0, 0, Some(&config));
    let (device_port, grpc_port) = (server.device_port(), server.grpc_port());

    let url = server.device_url.clone();
    let mut first = syncline_tests::raw_login(&url, "demo", "demo").await;
    let client_id = syncline_tests::welcome_client_id(&mut first).await;
    drop(first);
    // The device reconnects as itself (mutation ids are unique per device).
    let connect = || syncline_tests::raw_login_as(&url, "demo", "demo", &client_id);
    let create = ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: "before-the-crash".into(),
            source: "Task".into(),
            op: MutationOp::Create as i32,
            id: "tmp-1".into(),
            fields: [("title".to_owned(), Value::string("survive"))].into(),
            ..Mutate::default()
        })),
    };
    let mut phone = connect().await;
    phone.send(&create).await.unwrap();
    loop {
        let incoming = tokio::time::timeout(DEADLINE, phone.recv()).await.expect("in time").unwrap();
        if let Incoming::Frame(frame) = incoming
            && let Some(server_frame::Msg::MutationAck(ack)) = frame.msg
        {
            assert_eq!(ack.mutation_id, "before-the-crash");
            break;
        }
    }
    server.kill();

    // Backend and server come back; the queued mutation is dispatched from the store.
    let channel = syncline_tests::PythonChannel::start(&db, channel_port);
    let server = ServerProcess::start_with(SERVER, &data_dir, device_port, grpc_port, Some(&config));
    let query = || async {
        let mut client = ChannelClient::connect(channel.url.clone()).await.ok()?;
        let request = QueryRequest { partition: Some(PartitionKey { source: "Task".into(), key: "demo".into() }) };
        let mut stream = client.query(request).await.ok()?.into_inner();
        let mut count = 0;
        while let Some(_record) = stream.message().await.ok()? {
            count += 1;
        }
        Some(count)
    };
    eventually(DEADLINE, "the queued task to reach the backend", || async { query().await.filter(|count| *count > 0) })
        .await;
    // The device resends its unanswered mutation: it gets the outcome, and the backend still
    // holds exactly one task.
    let mut phone = connect().await;
    let result = syncline_tests::mutation_outcome(&mut phone, create.clone()).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(query().await, Some(1));
    // The server was killed before it dispatched the mutation: the channel got one call.
    assert_eq!(channel.write_calls("before-the-crash"), ["create"]);
    server.stop();
}
