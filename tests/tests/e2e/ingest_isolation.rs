//! The gRPC endpoint and change capture run on a runtime of their own: a backend's Ingest call
//! is read, committed and answered, and a backend change on a watched channel's feed is
//! committed, even while every worker of the device connections' runtime is busy (as when a
//! sweep writes to thousands of sockets), instead of queueing behind device tasks.

use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::v1::Value;
use syncline_proto::v1::ingest_client::IngestClient;
use syncline_server::config::{CaptureMode, Partitioning, SourceSection};
use syncline_server::storage::PartitionName;
use syncline_tests::{DEADLINE, TestServer, push, record};
use tokio_util::sync::CancellationToken;

/// The test's runtime is the server's device runtime, with its one worker. The test blocks that
/// worker until a backend on a thread of its own has had its push answered (or the deadline
/// passes), so the answer can only come from somewhere else.
#[tokio::test(flavor = "current_thread")]
async fn ingest_is_answered_while_the_device_runtime_is_blocked() {
    let server = TestServer::start().await;
    let url = server.server.grpc_url();
    let (answered, answer) = std::sync::mpsc::channel();
    let backend = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("backend runtime");
        let call = async {
            let mut client = IngestClient::connect(url).await.map_err(|error| error.to_string())?;
            push(&mut client, "Account", "*", vec![record("a", 1), record("b", 2)], Vec::new())
                .await
                .map_err(|status| status.to_string())
        };
        // Bounded, so this thread ends by itself whatever the server does.
        let outcome = runtime
            .block_on(async { tokio::time::timeout(DEADLINE, call).await })
            .unwrap_or_else(|_| Err("no answer within the deadline".to_owned()));
        let _ = answered.send(outcome);
    });

    // Blocks the device runtime's only worker: nothing spawned on it runs meanwhile.
    let outcome = answer.recv_timeout(DEADLINE * 2).expect("the backend thread reports in time");
    let response = outcome.expect("the push is answered while the device runtime is blocked");
    backend.join().expect("the backend thread ends");
    assert_eq!((response.applied, response.head), (2, 2));

    // Committed: the store has it, and the server still stops cleanly once its runtime runs.
    let stored = server.server.store().record(&PartitionName::new("Account", "*"), "b").expect("store read");
    assert_eq!(stored.map(|record| record.id), Some("b".to_owned()));
    server.stop().await;
}

/// The CRM example channel on a thread and runtime of its own (the test blocks its own
/// runtime, which is the server's device runtime).
struct CrmThread {
    url: String,
    db: syncline_example_crm::CrmDb,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl CrmThread {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db_path = dir.path().join("crm.db");
        let stop = CancellationToken::new();
        let (started, start) = std::sync::mpsc::channel();
        let shutdown = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("crm runtime");
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("crm listens");
                let stopped = shutdown.clone();
                let channel = syncline_example_crm::start(&db_path, listener, async move { stopped.cancelled().await })
                    .await
                    .expect("crm channel starts");
                channel.db().seed(0).await.expect("the demo user");
                let url = format!("http://{}", channel.local_addr());
                started.send((url, channel.db().clone(), tokio::runtime::Handle::current())).expect("test waits");
                shutdown.cancelled().await;
            });
        });
        let (url, db, runtime) = start.recv_timeout(DEADLINE).expect("the crm channel starts in time");
        Self { url, db, runtime, stop, thread: Some(thread), _dir: dir }
    }
}

impl Drop for CrmThread {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The same for change capture: a contact created in the backend while the device runtime is
/// blocked is read from the channel's feed and committed meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn watched_backend_changes_are_committed_while_the_device_runtime_is_blocked() {
    let crm = CrmThread::start();
    let url = crm.url.clone();
    let server = TestServer::start_with(move |config| {
        config.sources.clear();
        let mut contact = SourceSection::new(Partitioning::User);
        contact.channel = Some(url.clone());
        contact.capture = CaptureMode::Watch;
        config.sources.insert("Contact".into(), contact);
        config.auth.channel = Some(url);
    })
    .await;
    // A device's subscription makes the server load the partition and follow its feed.
    let phone =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Contact")));
    phone
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            state.partition("Contact", "demo").is_some_and(|partition| partition.caught_up)
        })
        .await
        .expect("the device catches up on its contacts");

    // From here on this thread (the device runtime's only worker) is blocked until the store
    // has the contact or the deadline passes.
    let (db, crm_runtime) = (crm.db.clone(), crm.runtime.clone());
    let backend = std::thread::spawn(move || {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("name".to_owned(), Value::string("Ada"));
        crm_runtime.block_on(db.create("Contact", "demo", fields, "")).map(|created| created.id)
    });
    let created = backend.join().expect("the backend thread ends").expect("backend create");
    let partition = PartitionName::new("Contact", "demo");
    let deadline = std::time::Instant::now() + DEADLINE;
    let committed = loop {
        let stored = server.server.store().record(&partition, &created).expect("store read");
        if stored.is_some() || std::time::Instant::now() > deadline {
            break stored.is_some();
        }
        std::thread::yield_now();
    };
    assert!(committed, "the backend's contact is committed while the device runtime is blocked");

    phone
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            state.partition("Contact", "demo").is_some_and(|partition| partition.total == 1)
        })
        .await
        .expect("and reaches the device once its runtime runs");
    phone.stop().await;
    server.stop().await;
}
