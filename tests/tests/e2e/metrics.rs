//! Prometheus metrics end to end (issue 15): a real server with the CRM example channel,
//! devices over real WebSockets, changes over real gRPC Ingest; the exposition is read with
//! a real Prometheus text-format parser (`prometheus-parse`) and must show exactly the
//! workload that ran, under names and labels that follow the conventions.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sampled};
use syncline_client_sim::rpc::call_frame;
use syncline_client_sim::{Connection, Device, DeviceConfig, DeviceHandle, Incoming, SubscriptionConfig};
use syncline_proto::v1::{ClientFrame, Mutate, MutationOp, Value, client_frame, rpc_reply, server_frame};
use syncline_server::config::{CaptureMode, Partitioning, RpcServiceSection, SourceSection};
use syncline_server::metrics::counters::GRPC_CODES;
use syncline_server::storage::AdminRole;
use syncline_tests::admin::token_for;
use syncline_tests::{DEADLINE, TestServer, eventually, push, raw_login, record};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Devices connected and subscribed to `Account`.
const DEVICES: usize = 3;
/// Changes ingested through gRPC, in one Push.
const INGESTED: usize = 5;
/// Account creates sent as device mutations.
const MUTATIONS: usize = 2;

/// The CRM example channel on a loopback port, until dropped.
struct Crm {
    url: String,
    _channel: syncline_example_crm::RunningCrmChannel,
    _dir: tempfile::TempDir,
    _stop: DropGuard,
}

async fn crm() -> Crm {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let channel =
        syncline_example_crm::start(dir.path().join("crm.db"), listener, async move { shutdown.cancelled().await })
            .await
            .expect("crm channel starts");
    let url = format!("http://{}", channel.local_addr());
    Crm { url, _channel: channel, _dir: dir, _stop: stop.drop_guard() }
}

/// A server whose `Account` source (app partition) takes Ingest pushes and writes device
/// mutations to the CRM channel, which also serves the RPC service `crm`.
async fn server(crm: &Crm) -> TestServer {
    let url = crm.url.clone();
    let server = TestServer::start_with(move |config| {
        config.sources.clear();
        let mut account = SourceSection::new(Partitioning::App);
        account.channel = Some(url.clone());
        config.sources.insert("Account".into(), account);
        config.rpc.services.insert("crm".into(), RpcServiceSection::new(&url));
    })
    .await;
    for user in ["ann", "bob", "cid", "dee"] {
        server.add_user(user, "secret");
    }
    server
}

/// Parses an exposition with the Prometheus text-format parser.
fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("a valid Prometheus exposition")
}

/// Returns the value of the counter or gauge `name` whose labels include `labels`; fails
/// when no sample or several match.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)))
        .map(|sample| match &sample.value {
            Sampled::Counter(value) | Sampled::Gauge(value) | Sampled::Untyped(value) => *value,
            other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .collect();
    assert_eq!(matching.len(), 1, "one sample of {name} {labels:?}, got {matching:?}");
    matching[0]
}

/// Returns the observation count of histogram `name` (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    let sample = scrape.samples.iter().find(|sample| sample.metric == name).unwrap_or_else(|| panic!("no {name}"));
    match &sample.value {
        Sampled::Histogram(buckets) => {
            buckets.iter().find(|bucket| bucket.less_than.is_infinite()).map(|bucket| bucket.count).unwrap_or(0.0)
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

async fn subscribed_device(server: &TestServer, user: &str) -> DeviceHandle {
    let device =
        Device::start(DeviceConfig::new(server.url(), user, "secret").subscribe(SubscriptionConfig::new("Account")));
    device
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
            state.partition("Account", "*").is_some_and(|partition| partition.caught_up)
        })
        .await
        .expect("the device is caught up");
    device
}

/// Reads frames until the RPC reply of `call_id`; returns its error code (0: success).
async fn rpc_reply_code(connection: &mut Connection, call_id: &str) -> i32 {
    loop {
        let incoming =
            tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a reply in time").expect("a frame");
        if let Incoming::Frame(frame) = incoming
            && let Some(server_frame::Msg::RpcReply(reply)) = frame.msg
            && reply.call_id == call_id
        {
            return match reply.result {
                Some(rpc_reply::Result::Error(error)) => error.code,
                Some(rpc_reply::Result::Payload(_)) | None => 0,
            };
        }
    }
}

fn create(mutation_id: &str, name: &str) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: mutation_id.into(),
            source: "Account".into(),
            op: MutationOp::Create as i32,
            id: format!("tmp-{mutation_id}"),
            fields: BTreeMap::from([("name".to_owned(), Value::string(name))]),
            ..Mutate::default()
        })),
    }
}

/// Runs the known workload: `DEVICES` subscribed devices, one raw session that sends
/// `MUTATIONS` creates and one RPC call to a method the backend does not have, and one
/// Ingest push of `INGESTED` records plus one refused push. Returns once every device holds
/// every change.
async fn run_workload(server: &TestServer) -> Workload {
    let mut devices = Vec::new();
    for user in ["ann", "bob", "cid"].into_iter().take(DEVICES) {
        devices.push(subscribed_device(server, user).await);
    }
    let mut ingest = server.ingest_client().await;
    let records = (0..INGESTED).map(|n| record(&format!("ing-{n}"), n as i64)).collect();
    push(&mut ingest, "Account", "*", records, Vec::new()).await.expect("the push is applied");
    let refused = push(&mut ingest, "Nowhere", "*", vec![record("x", 1)], Vec::new()).await;
    let refused_code = refused.expect_err("an unknown source is refused").code();

    let mut session = raw_login(&server.url(), "dee", "secret").await;
    for number in 0..MUTATIONS {
        let result = syncline_tests::mutation_outcome(&mut session, create(&format!("m{number}"), "Globex")).await;
        assert!(result.ok, "{result:?}");
    }
    session.send(&call_frame("c1", "crm", "Teleport", Vec::new(), Duration::from_secs(10))).await.unwrap();
    assert_ne!(rpc_reply_code(&mut session, "c1").await, 0, "an unknown method is an error");

    let all = (INGESTED + MUTATIONS) as u64;
    for device in &devices {
        device
            .wait_for(tokio::time::Instant::now() + DEADLINE, |state| {
                state.partition("Account", "*").is_some_and(|partition| partition.caught_up && partition.total == all)
            })
            .await
            .expect("every device gets every change");
    }
    Workload { devices, _session: session, refused_code }
}

/// What ran, kept until the scrape.
struct Workload {
    /// The subscribed devices, still connected.
    devices: Vec<DeviceHandle>,
    /// The raw session that mutated and called, still connected.
    _session: Connection,
    /// The status of the refused Ingest push.
    refused_code: tonic::Code,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_shows_exactly_its_counts() {
    let crm = crm().await;
    let server = server(&crm).await;
    let workload = run_workload(&server).await;
    // The live frames were queued before the devices applied them; their write was counted
    // before the devices read them, so one scrape sees it all.
    let token = token_for(&server.server, AdminRole::Viewer);
    let (status, _, body) = scrape_over_http(&server, Some(&token)).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let scrape = parse(&body);
    let connected = (DEVICES + 1) as f64;
    assert_eq!(value(&scrape, "syncline_connections", &[]), connected);
    assert_eq!(value(&scrape, "syncline_handshakes_total", &[("result", "ok")]), connected);
    assert_eq!(value(&scrape, "syncline_handshakes_total", &[("result", "refused")]), 0.0);
    // Process-wide counters (other tests of this binary may share the process).
    assert!(value(&scrape, "syncline_connections_opened_total", &[]) >= connected);
    assert_eq!(value(&scrape, "syncline_idle_disconnects_total", &[]), 0.0);
    assert_eq!(value(&scrape, "syncline_frames_received_total", &[("type", "hello")]), connected);
    assert_eq!(value(&scrape, "syncline_frames_received_total", &[("type", "mutate")]), MUTATIONS as f64);
    assert_eq!(value(&scrape, "syncline_frames_received_total", &[("type", "rpc_call")]), 1.0);
    assert_eq!(value(&scrape, "syncline_frames_sent_total", &[("type", "welcome")]), connected);
    assert_eq!(value(&scrape, "syncline_frames_sent_total", &[("type", "mutation_result")]), MUTATIONS as f64);
    assert_eq!(value(&scrape, "syncline_ingest_records_total", &[("source", "Account")]), INGESTED as f64);
    assert_eq!(value(&scrape, "syncline_ingest_requests_total", &[("code", "ok")]), 1.0);
    let refused = GRPC_CODES[workload.refused_code as usize];
    assert_eq!(value(&scrape, "syncline_ingest_requests_total", &[("code", refused)]), 1.0);
    assert_eq!(value(&scrape, "syncline_mutations_total", &[("op", "create"), ("outcome", "ok")]), MUTATIONS as f64);
    assert_eq!(value(&scrape, "syncline_mutation_queue_depth", &[]), 0.0);
    let rpc_error = [("service", "crm"), ("method", "Teleport"), ("code", "not_found")];
    assert_eq!(value(&scrape, "syncline_rpc_calls_total", &rpc_error), 1.0);
    assert_eq!(histogram_count(&scrape, "syncline_rpc_duration_seconds"), 1.0);
    // One live frame per commit (the push, then each mutation's outcome) to each device.
    let live = (DEVICES * (1 + MUTATIONS)) as f64;
    assert_eq!(value(&scrape, "syncline_live_frames_published_total", &[]), (1 + MUTATIONS) as f64);
    assert_eq!(value(&scrape, "syncline_deliveries_total", &[]), live);
    assert_eq!(histogram_count(&scrape, "syncline_push_lag_seconds"), live, "every delivery's write is observed");
    assert_eq!(value(&scrape, "syncline_demotions_total", &[]), 0.0);
    assert_eq!(value(&scrape, "syncline_subscriptions", &[]), DEVICES as f64);
    assert_eq!(value(&scrape, "syncline_subscriptions_behind", &[]), 0.0);
    let commits = value(&scrape, "syncline_commits_total", &[]);
    assert!(commits >= (1 + MUTATIONS) as f64, "{commits} commits");
    assert_eq!(histogram_count(&scrape, "syncline_commit_duration_seconds"), commits);
    assert!(value(&scrape, "syncline_sent_bytes_total", &[]) > 0.0);
    assert!(value(&scrape, "syncline_process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&scrape, "syncline_process_open_fds", &[]) >= connected, "each connection holds a socket");
    assert!(value(&scrape, "syncline_process_cpu_seconds_total", &[]) > 0.0);
    drop(workload);
    server.stop().await;
}

/// Label names a metric may carry: each takes values from a fixed set or from configuration.
const BOUNDED_LABELS: [&str; 10] =
    ["type", "result", "source", "kind", "code", "op", "outcome", "service", "method", "le"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_follows_the_naming_rules_and_no_label_names_a_device_or_user() {
    let crm = crm().await;
    let server = server(&crm).await;
    let workload = run_workload(&server).await;
    let devices = &workload.devices;
    let text = server.server.metrics_text();
    if let Some(path) = std::env::var_os("SYNCLINE_METRICS_DUMP") {
        std::fs::write(path, &text).unwrap();
    }
    let scrape = parse(&text);
    let mut identities: Vec<String> = devices.iter().filter_map(|device| device.state().client_id).collect();
    identities.extend(["ann", "bob", "cid", "dee"].map(String::from));
    assert_eq!(identities.len(), DEVICES + 4);
    let mut families = 0;
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        let mut words = line["# TYPE ".len()..].split(' ');
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        families += 1;
        assert!(name.starts_with("syncline_"), "{name}: the syncline_ prefix");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}: snake case");
        assert!(scrape.docs.get(name).is_some_and(|help| !help.is_empty()), "{name} has help");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}: counters end in _total"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}: histograms measure seconds"),
            "gauge" => assert!(!name.ends_with("_total"), "{name}: a gauge is not a total"),
            other => panic!("{name}: unexpected type {other}"),
        }
        for unit in ["_ms", "_millis", "_micros", "_kb", "_kib", "_mb"] {
            assert!(!name.contains(unit), "{name}: base units only");
        }
    }
    assert!(families >= 25, "{families} families");
    for sample in &scrape.samples {
        for (label, value) in sample.labels.iter() {
            assert!(BOUNDED_LABELS.contains(&label.as_str()), "{}: label {label} is not a bounded one", sample.metric);
            for identity in &identities {
                assert!(
                    !value.contains(identity.as_str()),
                    "{}: {label}={value} names a device or user",
                    sample.metric
                );
            }
            assert!(
                !value.starts_with("tmp-") && !value.starts_with("ing-"),
                "{}: {value} names a record",
                sample.metric
            );
        }
    }
    drop(workload);
    server.stop().await;
}

/// Scrapes `/metrics` on the admin listener with an optional bearer token; returns the
/// status, the content type and the body.
async fn scrape_over_http(server: &TestServer, token: Option<&str>) -> (reqwest::StatusCode, String, String) {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", server.server.admin_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the admin listener answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_unless_public() {
    let server = TestServer::start().await;
    let (status, _, body) = scrape_over_http(&server, None).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = scrape_over_http(&server, Some("sla_0000_forged")).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    for role in [AdminRole::Viewer, AdminRole::Admin] {
        let token = token_for(&server.server, role);
        let (status, content_type, body) = scrape_over_http(&server, Some(&token)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{role:?}: {body}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        assert_eq!(value(&parse(&body), "syncline_connections", &[]), 0.0);
    }
    server.stop().await;

    let open = TestServer::start_with(|config| config.admin.metrics_public = true).await;
    let (status, _, body) = scrape_over_http(&open, None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(value(&parse(&body), "syncline_handshakes_total", &[("result", "ok")]), 0.0);
    let tokens = reqwest::get(format!("{}/v1/admin/tokens", open.server.admin_url())).await.unwrap();
    assert_eq!(tokens.status(), reqwest::StatusCode::UNAUTHORIZED, "metrics_public opens /metrics only");
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_lag_and_errors_are_reported_per_source() {
    let crm = crm().await;
    let url = crm.url.clone();
    let server = TestServer::start_with(move |config| {
        config.sources.clear();
        let mut contact = SourceSection::new(Partitioning::User);
        contact.channel = Some(url);
        contact.capture = CaptureMode::Poll;
        contact.poll_interval_secs = 1;
        config.sources.insert("Contact".into(), contact);
    })
    .await;
    server.add_user("ann", "secret");
    let device =
        Device::start(DeviceConfig::new(server.url(), "ann", "secret").subscribe(SubscriptionConfig::new("Contact")));
    let sample = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let text = server.server.metrics_text();
        async move { value(&parse(&text), name, labels) }
    };
    eventually(DEADLINE, "a poll succeeds", || async {
        (sample("syncline_capture_lag_seconds", &[("source", "Contact")]).await < 1.5).then_some(())
    })
    .await;
    assert_eq!(sample("syncline_capture_errors_total", &[("source", "Contact"), ("kind", "channel")]).await, 0.0);
    // The channel goes away: polls fail, the lag grows past the interval.
    drop(crm);
    eventually(DEADLINE, "failed polls are counted", || async {
        (sample("syncline_capture_errors_total", &[("source", "Contact"), ("kind", "channel")]).await >= 1.0)
            .then_some(())
    })
    .await;
    eventually(DEADLINE, "the lag grows while polls fail", || async {
        (sample("syncline_capture_lag_seconds", &[("source", "Contact")]).await >= 2.0).then_some(())
    })
    .await;
    drop(device);
    server.stop().await;
}
