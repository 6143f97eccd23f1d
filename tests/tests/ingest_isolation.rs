//! The gRPC endpoint runs on a runtime of its own: a backend's Ingest call is read, committed
//! and answered even while every worker of the device connections' runtime is busy (as when a
//! sweep writes to thousands of sockets), instead of queueing behind device tasks.

use syncline_proto::v1::ingest_client::IngestClient;
use syncline_server::storage::PartitionName;
use syncline_tests::{DEADLINE, TestServer, push, record};

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
    let stored = server.server.engine.store.record(&PartitionName::new("Account", "*"), "b").expect("store read");
    assert_eq!(stored.map(|record| record.id), Some("b".to_owned()));
    server.stop().await;
}
