//! Sources, partitions, records, changes, mutations, RPC and stats through the admin API on a
//! running server (issue 15): changes posted as JSON commit like Ingest.Push and answer with
//! the committed range; every read pages; viewers cannot write; unknown names are 404.

use reqwest::{Method, StatusCode};
use serde_json::json;
use syncline_server::storage::AdminRole;
use syncline_tests::admin::{AdminClient, assert_error};
use syncline_tests::{TestServer, server_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_posted_as_json_commit_durably_and_read_back_by_id() {
    let server = TestServer::start().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let changes = json!({"upserts": [
        {"id": "a", "fields": {"name": "Acme", "employees": 12, "rating": 4.5, "active": true, "note": null}},
        {"id": "b", "fields": {"name": "Bolt"}},
        {"id": "c", "fields": {"name": "Core"}},
    ]});
    let (status, committed) = admin.post("/v1/admin/partitions/Account/*/changes", changes.clone()).await;
    assert_eq!(status, StatusCode::OK, "{committed}");
    assert_eq!((committed["first_seq"].as_u64(), committed["last_seq"].as_u64()), (Some(1), Some(3)));
    assert_eq!(server_view(&server, "Account", "*").0.len(), 3, "durable in the store when answered");
    let (_, again) = admin.post("/v1/admin/partitions/Account/*/changes", changes).await;
    assert_eq!(again["applied"], 0, "unchanged records take no sequence: {again}");
    let (status, deleted) = admin.post("/v1/admin/partitions/Account/*/changes", json!({"deletes": ["c"]})).await;
    assert_eq!((status, deleted["last_seq"].as_u64(), deleted["records"].as_u64()), (StatusCode::OK, Some(4), Some(2)));

    let (status, partition) = viewer.get("/v1/admin/partitions/Account/*").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((partition["head"].as_u64(), partition["records"].as_u64()), (Some(4), Some(2)), "{partition}");
    let (_, page) = viewer.get("/v1/admin/partitions/Account/*/records?limit=1").await;
    assert_eq!(page["items"][0]["id"], "a");
    assert_eq!(page["items"][0]["fields"]["employees"], 12);
    assert_eq!(page["items"][0]["fields"]["rating"], 4.5);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = viewer.get(&format!("/v1/admin/partitions/Account/*/records?limit=1&cursor={cursor}")).await;
    assert_eq!(page["items"][0]["id"], "b");
    assert!(page["next_cursor"].is_null());
    let (status, record) = viewer.get("/v1/admin/partitions/Account/*/records/b").await;
    assert_eq!((status, record["fields"]["name"].as_str()), (StatusCode::OK, Some("Bolt")));
    let (_, list) = viewer.get("/v1/admin/partitions?source=Account").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    assert_error(&viewer.get("/v1/admin/partitions/Account/*/records/zzz").await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&viewer.get("/v1/admin/partitions/Nope/*").await, StatusCode::NOT_FOUND, "unknown_source");
    assert_error(&viewer.get("/v1/admin/partitions/Contact/nobody").await, StatusCode::NOT_FOUND, "not_found");
    let nested = admin
        .post("/v1/admin/partitions/Account/*/changes", json!({"upserts": [{"id": "x", "fields": {"n": [1]}}]}))
        .await;
    assert_error(&nested, StatusCode::BAD_REQUEST, "bad_request");
    let empty_id = admin.post("/v1/admin/partitions/Account/*/changes", json!({"upserts": [{"id": ""}]})).await;
    assert_error(&empty_id, StatusCode::BAD_REQUEST, "bad_request");
    let wrong_type = admin.post("/v1/admin/partitions/Account/*/changes", json!({"deletes": "c"})).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "bad_request");
    for path in [
        "/v1/admin/partitions/Account/*/changes",
        "/v1/admin/partitions/Account/*/compact",
        "/v1/admin/partitions/Account/*/reset",
    ] {
        assert_error(&viewer.post(path, json!({})).await, StatusCode::FORBIDDEN, "forbidden");
    }
    let reset = admin.post("/v1/admin/partitions/Account/*/reset", json!({})).await;
    assert_error(&reset, StatusCode::CONFLICT, "conflict");
    let (status, compacted) = admin.post("/v1/admin/partitions/Account/*/compact", json!({})).await;
    assert_eq!((status, compacted["partition"]["head"].as_u64()), (StatusCode::OK, Some(4)), "{compacted}");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_stats_rpc_and_mutation_queues_are_readable_by_viewers() {
    let server = TestServer::start().await;
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let anonymous = AdminClient::new(&server.server, None);
    let (status, sources) = viewer.get("/v1/admin/sources").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        sources["items"].as_array().unwrap().iter().map(|source| source["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Account", "Contact"]);
    assert_eq!(sources["items"][0]["capture"], "ingest");
    assert_eq!(sources["items"][0]["health"]["connected"], true);
    assert_error(&viewer.get("/v1/admin/sources/Nope").await, StatusCode::NOT_FOUND, "not_found");

    let (status, stats) = viewer.get("/v1/admin/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert!(stats["store_bytes"].as_u64().unwrap() > 0, "{stats}");
    let (status, rpc) = viewer.get("/v1/admin/rpc").await;
    assert_eq!((status, rpc["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, queues) = viewer.get("/v1/admin/mutations/queues").await;
    assert_eq!((status, queues["total"].as_u64()), (StatusCode::OK, Some(0)), "{queues}");
    let (status, _) = viewer.get("/v1/admin/mutations/pending?client_id=x").await;
    assert_eq!(status, StatusCode::OK);
    for path in
        ["/v1/admin/sources", "/v1/admin/stats", "/v1/admin/rpc", "/v1/admin/mutations/queues", "/v1/admin/partitions"]
    {
        assert_error(&anonymous.get(path).await, StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let wrong_method = viewer.call(Method::PATCH, "/v1/admin/stats", None).await;
    assert_eq!(wrong_method.0, StatusCode::METHOD_NOT_ALLOWED, "{wrong_method:?}");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_waiting_for_an_unavailable_channel_show_its_error_and_retry_on_demand() {
    use syncline_proto::v1::{ClientFrame, Mutate, MutationOp, client_frame};
    use syncline_server::config::{Partitioning, SourceSection};
    let dead_channel = format!("http://127.0.0.1:{}", syncline_tests::process::free_port());
    let server = TestServer::start_with(|config| {
        let mut tasks = SourceSection::new(Partitioning::User);
        tasks.channel = Some(dead_channel);
        config.sources.insert("Task".into(), tasks);
    })
    .await;
    server.add_user("ann", "pw-ann");
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let mut connection = syncline_tests::raw_login(&server.url(), "ann", "pw-ann").await;
    let client_id = syncline_tests::welcome_client_id(&mut connection).await;
    let mutate = Mutate {
        mutation_id: "m1".into(),
        source: "Task".into(),
        key: "ann".into(),
        op: MutationOp::Create as i32,
        id: "t1".into(),
        ..Mutate::default()
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Mutate(mutate)) }).await.unwrap();

    let path = format!("/v1/admin/mutations/pending?client_id={client_id}");
    let parked = syncline_tests::eventually(syncline_tests::DEADLINE, "the mutation is parked", || {
        let admin = admin.clone();
        let path = path.clone();
        async move {
            let (_, page) = admin.get(&path).await;
            page["items"][0]["last_error"].is_string().then_some(page)
        }
    })
    .await;
    assert_eq!(parked["items"][0]["mutation_id"], "m1", "{parked}");
    let attempts = parked["items"][0]["attempts"].as_u64().unwrap();
    let (_, queues) = admin.get("/v1/admin/mutations/queues").await;
    assert_eq!(queues["by_source"]["Task"], 1, "{queues}");
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    assert_error(&viewer.post("/v1/admin/mutations/retry", json!({})).await, StatusCode::FORBIDDEN, "forbidden");
    let (status, retried) = admin.post("/v1/admin/mutations/retry", json!({})).await;
    assert_eq!((status, retried["retried"].as_u64()), (StatusCode::OK, Some(1)), "{retried}");
    syncline_tests::eventually(syncline_tests::DEADLINE, "another attempt", || {
        let admin = admin.clone();
        let path = path.clone();
        async move {
            let (_, page) = admin.get(&path).await;
            (page["items"][0]["attempts"].as_u64() > Some(attempts)).then_some(())
        }
    })
    .await;

    let discard = format!("/v1/admin/mutations/{client_id}/m1");
    assert_error(&viewer.call(Method::DELETE, &discard, None).await, StatusCode::FORBIDDEN, "forbidden");
    let unknown = admin.call(Method::DELETE, &format!("/v1/admin/mutations/{client_id}/nope"), None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = admin.call(Method::DELETE, &discard, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let result = loop {
        let incoming = tokio::time::timeout(syncline_tests::DEADLINE, connection.recv()).await.unwrap().unwrap();
        if let syncline_client_sim::Incoming::Frame(frame) = incoming
            && let Some(syncline_proto::v1::server_frame::Msg::MutationResult(result)) = frame.msg
        {
            break result;
        }
    };
    assert_eq!(result.mutation_id, "m1");
    assert!(!result.ok, "{result:?}");
    let (_, queues) = admin.get("/v1/admin/mutations/queues").await;
    assert_eq!(queues["total"], 0, "the discarded mutation left the queue: {queues}");
    server.server.stop().await.unwrap();
}

/// A channel whose writes are refused for good (a business rule) until `open` is set, as a
/// backend whose bug is fixed; it counts the writes it gets.
#[derive(Default)]
struct Gatekeeper {
    open: std::sync::atomic::AtomicBool,
    writes: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl syncline_proto::sdk::ChannelBackend for Gatekeeper {
    async fn describe(&self) -> syncline_proto::sdk::Result<syncline_proto::v1::DescribeResponse> {
        Ok(syncline_proto::v1::DescribeResponse::default())
    }

    async fn query(
        &self,
        _request: syncline_proto::v1::QueryRequest,
    ) -> syncline_proto::sdk::Result<syncline_proto::sdk::RecordStream> {
        Ok(Box::pin(futures_util::stream::empty()))
    }

    async fn create(
        &self,
        request: syncline_proto::v1::WriteRequest,
    ) -> syncline_proto::sdk::Result<syncline_proto::sdk::WriteOutcome> {
        use std::sync::atomic::Ordering;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if !self.open.load(Ordering::SeqCst) {
            return Err(syncline_proto::sdk::ChannelError::FailedPrecondition("tasks need a due date".into()));
        }
        let record = request.record.unwrap_or_default();
        Ok(syncline_proto::sdk::WriteOutcome::Written(syncline_proto::v1::Record {
            id: format!("task-{}", record.id),
            ..record
        }))
    }

    async fn update(
        &self,
        _request: syncline_proto::v1::WriteRequest,
    ) -> syncline_proto::sdk::Result<syncline_proto::sdk::WriteOutcome> {
        Err(syncline_proto::sdk::ChannelError::Unimplemented("creates only".into()))
    }

    async fn delete(
        &self,
        _request: syncline_proto::v1::WriteRequest,
    ) -> syncline_proto::sdk::Result<syncline_proto::sdk::WriteOutcome> {
        Err(syncline_proto::sdk::ChannelError::Unimplemented("creates only".into()))
    }
}

/// Reads frames until the next `MutationResult`.
async fn next_mutation_result(connection: &mut syncline_client_sim::Connection) -> syncline_proto::v1::MutationResult {
    loop {
        let incoming = tokio::time::timeout(syncline_tests::DEADLINE, connection.recv()).await.unwrap().unwrap();
        if let syncline_client_sim::Incoming::Frame(frame) = incoming
            && let Some(syncline_proto::v1::server_frame::Msg::MutationResult(result)) = frame.msg
        {
            return result;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_their_channel_refuses_are_kept_as_failed_for_an_operator_to_retry_or_dismiss() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use syncline_proto::v1::{ClientFrame, Mutate, MutationOp, Value, client_frame};
    use syncline_server::config::{Partitioning, SourceSection};
    let channel = Arc::new(Gatekeeper::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving =
        tokio::spawn(syncline_proto::sdk::serve_shared(Arc::clone(&channel), listener, stop.clone().cancelled_owned()));
    let server = TestServer::start_with(move |config| {
        let mut tasks = SourceSection::new(Partitioning::User);
        tasks.channel = Some(url);
        config.sources.insert("Task".into(), tasks);
    })
    .await;
    server.add_user("ann", "pw-ann");
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let mut connection = syncline_tests::raw_login(&server.url(), "ann", "pw-ann").await;
    let client_id = syncline_tests::welcome_client_id(&mut connection).await;
    for (mutation_id, title) in [("m1", "call back"), ("m2", "send quote")] {
        let mutate = Mutate {
            mutation_id: mutation_id.into(),
            source: "Task".into(),
            key: "ann".into(),
            op: MutationOp::Create as i32,
            id: format!("tmp-{mutation_id}"),
            fields: [("title".to_owned(), Value::string(title))].into(),
            ..Mutate::default()
        };
        connection.send(&ClientFrame { msg: Some(client_frame::Msg::Mutate(mutate)) }).await.unwrap();
        let refused = next_mutation_result(&mut connection).await;
        assert!(!refused.ok && refused.mutation_id == mutation_id, "{refused:?}");
    }

    let (status, failed) = viewer.get(&format!("/v1/admin/mutations/failed?client_id={client_id}")).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{failed}");
    assert_eq!(items[0]["mutation_id"], "m1");
    assert_eq!(items[0]["code"], "CONFLICT", "{failed}");
    assert!(items[0]["message"].as_str().unwrap().contains("due date"), "{failed}");
    assert_eq!(items[0]["fields"]["title"], "call back", "{failed}");
    assert_eq!((items[0]["op"].as_str(), items[0]["source"].as_str()), (Some("create"), Some("Task")));

    // The backend is fixed: retried, m1 is written once more and its device told at once.
    channel.open.store(true, Ordering::SeqCst);
    let retry = format!("/v1/admin/mutations/failed/{client_id}/m1/retry");
    assert_error(&viewer.post(&retry, json!({})).await, StatusCode::FORBIDDEN, "forbidden");
    let (status, requeued) = admin.post(&retry, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{requeued}");
    let result = next_mutation_result(&mut connection).await;
    assert!(result.ok && result.mutation_id == "m1", "{result:?}");
    assert_eq!(result.record.as_ref().map(|record| record.id.as_str()), Some("task-tmp-m1"));
    assert_eq!(channel.writes.load(Ordering::SeqCst), 3, "m1 twice, m2 once");
    let unknown = admin.post(&retry, json!({})).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");

    // The device's own resend of m1 gets the new outcome, without another write.
    let resend = Mutate {
        mutation_id: "m1".into(),
        source: "Task".into(),
        key: "ann".into(),
        op: MutationOp::Create as i32,
        id: "tmp-m1".into(),
        ..Mutate::default()
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Mutate(resend)) }).await.unwrap();
    assert!(next_mutation_result(&mut connection).await.ok);
    assert_eq!(channel.writes.load(Ordering::SeqCst), 3);

    // m2 is dismissed: no longer listed.
    let dismiss = format!("/v1/admin/mutations/failed/{client_id}/m2");
    assert_error(&viewer.call(Method::DELETE, &dismiss, None).await, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(admin.call(Method::DELETE, &dismiss, None).await.0, StatusCode::NO_CONTENT);
    assert_error(&admin.call(Method::DELETE, &dismiss, None).await, StatusCode::NOT_FOUND, "not_found");
    let (_, failed) = viewer.get("/v1/admin/mutations/failed").await;
    assert_eq!(failed["items"], json!([]), "{failed}");
    server.server.stop().await.unwrap();
    stop.cancel();
    let _ = serving.await;
}
