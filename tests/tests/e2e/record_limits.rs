//! Issue 13: records outside the record limits (common.proto) never reach devices or the log,
//! whatever path they take in: a channel's Query and Watch (skipped, counted, the rest of the
//! batch applied), a device's Mutate (BAD_REQUEST, never sent to the channel), and a
//! channel's answer to a write (the mutation fails with INTERNAL). Ingest is covered by
//! `ingest_validation.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;
use futures_util::stream;
use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::record::{MAX_FIELD_NAME_BYTES, MAX_RECORD_FIELDS, MAX_RECORD_ID_BYTES};
use syncline_proto::sdk::{self, ChangeStream, ChannelBackend, RecordStream, WriteOutcome};
use syncline_proto::v1::{
    ChangeBatch, ClientFrame, DescribeResponse, ErrorCode, Mutate, MutationOp, MutationResult, PartitionChanges,
    PartitionKey, QueryRequest, Record, Value, WatchRequest, WriteRequest, client_frame,
};
use syncline_server::config::{CaptureMode, Partitioning, SourceSection};
use syncline_tests::{DEADLINE, TestServer, assert_converges, raw_login, server_view};
use tokio_util::sync::{CancellationToken, DropGuard};

fn with_field(id: &str, name: &str, value: Value) -> Record {
    Record { id: id.to_owned(), fields: [(name.to_owned(), value)].into(), version: 1 }
}

fn valid(id: &str) -> Record {
    with_field(id, "name", Value::string(id))
}

/// A channel serving `Polled` (poll capture), `Watched` (watch capture) and `Written` (device
/// writes), each with records outside the limits among valid ones; its creates answer with a
/// record that has an unnamed field.
#[derive(Default)]
struct LimitsChannel {
    writes: AtomicU64,
}

#[tonic::async_trait]
impl ChannelBackend for LimitsChannel {
    async fn describe(&self) -> sdk::Result<DescribeResponse> {
        Ok(DescribeResponse::default())
    }

    async fn query(&self, request: QueryRequest) -> sdk::Result<RecordStream> {
        let records = match request.partition.unwrap_or_default().source.as_str() {
            "Polled" => vec![valid("p1"), with_field("p-unnamed", "", Value::int(1)), valid("p2")],
            "Watched" => vec![valid("w0")],
            _ => Vec::new(),
        };
        Ok(Box::pin(stream::iter(records.into_iter().map(Ok))))
    }

    async fn watch(&self, request: WatchRequest) -> sdk::Result<ChangeStream> {
        let start = ChangeBatch { partitions: Vec::new(), resume_token: b"0".to_vec() };
        let changes = ChangeBatch {
            partitions: vec![PartitionChanges {
                partition: Some(PartitionKey { source: "Watched".into(), key: "*".into() }),
                upserts: vec![valid("w1"), with_field("w-hollow", "score", Value { kind: None }), valid("w2")],
                deletes: vec![String::new()],
            }],
            resume_token: b"1".to_vec(),
        };
        let batches = match request.resume_token.as_slice() {
            b"" => vec![start, changes],
            b"0" => vec![changes],
            _ => Vec::new(),
        };
        Ok(Box::pin(stream::iter(batches.into_iter().map(Ok)).chain(stream::pending())))
    }

    async fn create(&self, _request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(WriteOutcome::Written(with_field("created-1", "", Value::int(1))))
    }

    async fn update(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }

    async fn delete(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }
}

/// The channel serving on a loopback port until dropped, and a server using it.
struct Setup {
    server: TestServer,
    channel: Arc<LimitsChannel>,
    _stop: DropGuard,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let channel = Arc::new(LimitsChannel::default());
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(sdk::serve_shared(channel.clone(), listener, async move { shutdown.cancelled().await }));
    let server = TestServer::start_with(move |config| {
        let source = |capture: CaptureMode| {
            let mut source = SourceSection::new(Partitioning::App);
            source.channel = Some(url.clone());
            source.capture = capture;
            source.poll_interval_secs = 1;
            source
        };
        config.sources.insert("Polled".into(), source(CaptureMode::Poll));
        config.sources.insert("Watched".into(), source(CaptureMode::Watch));
        config.sources.insert("Written".into(), source(CaptureMode::Ingest));
    })
    .await;
    server.add_user("ann", "ann-pw");
    Setup { server, channel, _stop: stop.drop_guard() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_skips_and_counts_channel_records_outside_the_limits() {
    let Setup { server, channel: _channel, _stop } = setup().await;
    let phone = Device::start(
        DeviceConfig::new(server.url(), "ann", "ann-pw")
            .subscribe(SubscriptionConfig::new("Polled"))
            .subscribe(SubscriptionConfig::new("Watched")),
    );
    let has = |source: &str, ids: &[&str]| {
        phone.view(source, "*").is_some_and(|view| ids.iter().all(|id| view.records.contains_key(*id)))
    };
    phone
        .wait_for(tokio::time::Instant::now() + DEADLINE, |_| {
            has("Polled", &["p1", "p2"]) && has("Watched", &["w0", "w1", "w2"])
        })
        .await
        .expect("the valid records of the poll and of the watch batch arrive");
    // Each refused record was refused in the same store write as the valid ones beside it.
    assert_converges(&phone, &server, "Polled", "*", DEADLINE).await;
    assert_converges(&phone, &server, "Watched", "*", DEADLINE).await;
    let ids = |source: &str| server_view(&server, source, "*").0.into_keys().collect::<Vec<_>>();
    assert_eq!(ids("Polled"), ["p1", "p2"]);
    assert_eq!(ids("Watched"), ["w0", "w1", "w2"]);
    let refused = server.server.capture.refused_records();
    assert!(refused >= 3, "the unnamed field, the value without a kind and the empty deleted id: {refused}");
    phone.stop().await;
    server.stop().await;
}

async fn outcome(connection: &mut syncline_client_sim::Connection, mutate: Mutate) -> MutationResult {
    syncline_tests::mutation_outcome(connection, ClientFrame { msg: Some(client_frame::Msg::Mutate(mutate)) }).await
}

fn mutate(mutation_id: &str, op: MutationOp, id: &str, fields: BTreeMap<String, Value>) -> Mutate {
    Mutate {
        mutation_id: mutation_id.into(),
        source: "Written".into(),
        op: op as i32,
        id: id.into(),
        fields,
        ..Mutate::default()
    }
}

fn one_field(name: &str, value: Value) -> BTreeMap<String, Value> {
    [(name.to_owned(), value)].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_writes_outside_the_limits_are_bad_requests_that_never_reach_the_channel() {
    let Setup { server, channel, _stop } = setup().await;
    let mut phone = raw_login(&server.url(), "ann", "ann-pw").await;
    let many: BTreeMap<String, Value> = (0..=MAX_RECORD_FIELDS).map(|n| (format!("f{n}"), Value::int(1))).collect();
    let cases = [
        (mutate("m1", MutationOp::Create, "t1", one_field("", Value::int(1))), "empty name"),
        (mutate("m2", MutationOp::Update, "t2", one_field("score", Value { kind: None })), "\"score\""),
        (
            mutate("m3", MutationOp::Create, "t3", one_field(&"n".repeat(MAX_FIELD_NAME_BYTES + 1), Value::null())),
            "257 bytes",
        ),
        (mutate("m4", MutationOp::Create, "t4", many), "1001 fields"),
        (mutate("m6", MutationOp::Create, "", BTreeMap::new()), "invalid record id"),
        (mutate("m7", MutationOp::Delete, &"x".repeat(MAX_RECORD_ID_BYTES + 1), BTreeMap::new()), "513 bytes"),
    ];
    for (mutate, expected) in cases {
        let mutation_id = mutate.mutation_id.clone();
        let result = outcome(&mut phone, mutate).await;
        let error = result.error.unwrap_or_else(|| panic!("{mutation_id}: accepted"));
        assert!(!result.ok);
        assert_eq!(error.code, ErrorCode::BadRequest as i32, "{mutation_id}: {error:?}");
        assert!(error.message.contains(expected), "{mutation_id}: {:?} does not mention {expected}", error.message);
    }
    assert_eq!(channel.writes.load(Ordering::SeqCst), 0, "no refused write reached the channel");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_with_a_record_outside_the_limits_fails_with_internal() {
    let Setup { server, channel, _stop } = setup().await;
    let mut phone = raw_login(&server.url(), "ann", "ann-pw").await;
    let result =
        outcome(&mut phone, mutate("m1", MutationOp::Create, "tmp-1", one_field("name", Value::string("x")))).await;
    assert_eq!(channel.writes.load(Ordering::SeqCst), 1, "the valid create reached the channel");
    assert!(!result.ok && result.record.is_none(), "{result:?}");
    let error = result.error.expect("an error");
    assert_eq!(error.code, ErrorCode::Internal as i32, "{error:?}");
    assert_eq!(error.message, "the backend returned an invalid record");
    let (records, state) = server_view(&server, "Written", "*");
    assert!(records.is_empty() && state.head == 0, "the channel's record was not logged: {records:?}");
    server.stop().await;
}
