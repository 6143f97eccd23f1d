//! Bulk sync files end to end (issue 18): a real server, real sockets and real HTTP
//! downloads from the device listener.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RANGE};
use syncline_client_sim::bulk::{load_file, resolve_url};
use syncline_client_sim::{
    BulkStatus, Connection, Device, DeviceConfig, Incoming, Notification, PartitionId, SubscriptionConfig,
};
use syncline_proto::v1::{BulkReady, BulkRequest, ClientFrame, Record, Value, client_frame, server_frame};
use syncline_server::bulk::TokenClaims;
use syncline_server::storage::{AdminRole, PartitionName};
use syncline_tests::admin::AdminClient;
use syncline_tests::{DEADLINE, TestServer, assert_converges, push, raw_login, record};

/// The first bytes of every SQLite file.
pub(crate) const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// Commits `count` records to `source`/`key` straight into the server's store.
pub(crate) fn seed(server: &TestServer, source: &str, key: &str, count: u32, record: impl Fn(u32) -> Record) {
    let partition = PartitionName::new(source, key);
    let records: Vec<Record> = (0..count).map(record).collect();
    for batch in records.chunks(5_000) {
        server.server.store().apply_batch(&partition, batch.to_vec(), Vec::new()).expect("seed batch");
    }
}

/// Sends a BulkRequest on a raw session and returns its BulkReady.
pub(crate) async fn ask_bulk(connection: &mut Connection, request_id: &str, source: &str) -> BulkReady {
    let request = BulkRequest { request_id: request_id.to_owned(), sources: vec![source.to_owned()], min_records: 0 };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::BulkRequest(request)) }).await.expect("sends");
    loop {
        let incoming = tokio::time::timeout(DEADLINE, connection.recv()).await.expect("BulkReady in time");
        match incoming.expect("a frame") {
            Incoming::Frame(frame) => match frame.msg {
                Some(server_frame::Msg::BulkReady(ready)) if ready.request_id == request_id => return ready,
                Some(server_frame::Msg::Error(error)) => panic!("refused: {error:?}"),
                _ => {}
            },
            Incoming::Closed { code, reason } => panic!("closed: {code} {reason}"),
        }
    }
}

/// GETs `url` with `token` (and a range start when given): the status and the whole body.
pub(crate) async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    from: Option<u64>,
) -> (StatusCode, Vec<u8>) {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(from) = from {
        request = request.header(RANGE, format!("bytes={from}-"));
    }
    let response = request.send().await.expect("the device listener answers");
    let status = response.status();
    (status, response.bytes().await.expect("a body").to_vec())
}

/// Returns the device's next notification.
async fn next(notifications: &mut tokio::sync::mpsc::Receiver<Notification>) -> Notification {
    let received = tokio::time::timeout(DEADLINE, notifications.recv()).await.expect("a notification in time");
    received.expect("the device is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_partition_arrives_by_bulk_file_and_a_change_made_meanwhile_through_the_log() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    seed(&server, "Account", "*", 100_000, |i| record(&format!("acc-{i:06}"), i64::from(i)));
    let bulk_dir = tempfile::tempdir().expect("temp dir");
    let config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Account").with_bulk(1_000).with_page_size(500))
        .with_bulk_dir(bulk_dir.path())
        .with_notifications(4);
    let mut device = Device::start(config);
    let mut notifications = device.take_notifications().expect("notifications on");

    // The file is announced: it holds the partition at a sequence already written.
    let mut statuses = Vec::new();
    loop {
        if let Notification::Bulk(bulk) = next(&mut notifications).await {
            statuses.push(bulk.status);
            if bulk.status == BulkStatus::Start {
                assert!(bulk.total_bytes > 0);
                break;
            }
        }
    }
    // Then the backend changes the partition: after the file's sequence, while the device
    // downloads or reads the file (or right after), so the change can only come through the
    // log the device follows from the file's sequence.
    let mut ingest = server.ingest_client().await;
    let changed = vec![record("acc-000001", -1), record("acc-new", -2)];
    push(&mut ingest, "Account", "*", changed, vec!["acc-000002".to_owned()]).await.expect("durable");
    loop {
        match next(&mut notifications).await {
            Notification::Bulk(bulk) => {
                if statuses.last() != Some(&bulk.status) {
                    statuses.push(bulk.status);
                }
                assert_ne!(bulk.status, BulkStatus::Error, "{bulk:?}");
                if bulk.status == BulkStatus::Complete {
                    break;
                }
            }
            Notification::Sync(_) | Notification::Changed(_) | Notification::Mutation(_) => {}
        }
    }
    assert_eq!(
        statuses,
        [BulkStatus::Start, BulkStatus::Download, BulkStatus::ChangeDb, BulkStatus::Ok, BulkStatus::Complete]
    );
    let forward = tokio::spawn(async move { while notifications.recv().await.is_some() {} });

    assert_converges(&device, &server, "Account", "*", DEADLINE).await;
    let view = device.synced_view("Account", "*").expect("held");
    assert_eq!(view.records.len(), 100_000, "100,000 + 1 new - 1 deleted");
    assert_eq!(view.records["acc-000001"].fields["n"], Value::int(-1), "the update came through the log");
    assert!(view.records.contains_key("acc-new") && !view.records.contains_key("acc-000002"));
    let stats = device.stats();
    assert_eq!(stats.bulk_syncs, 1);
    assert_eq!(stats.checksum_mismatches, 0);
    assert!(stats.pages <= 2, "no snapshot pages, only the log after the file: {} pages", stats.pages);
    device.stop().await;
    forward.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_at_10_random_offsets_resumes_with_range_each_time() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    seed(&server, "Account", "*", 20_000, |i| record(&format!("acc-{i:05}"), i64::from(i)));
    let mut connection = raw_login(&server.url(), "ann", "ann-pw").await;
    let ready = ask_bulk(&mut connection, "cut", "Account").await;
    assert!(ready.error.is_none(), "{ready:?}");
    let file = ready.files[0].clone();
    let url = resolve_url(&server.url(), &file.url);
    let http = reqwest::Client::new();

    let mut rng = StdRng::seed_from_u64(18);
    let mut cuts: Vec<u64> = (0..10).map(|_| rng.random_range(1..file.bytes)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut received: Vec<u8> = Vec::new();
    for cut in cuts.iter().copied().chain(std::iter::once(file.bytes)) {
        let have = received.len() as u64;
        let mut request = http.get(&url).header(AUTHORIZATION, format!("Bearer {}", file.token));
        if have > 0 {
            request = request.header(RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().await.expect("answers");
        let expected = if have > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        assert_eq!(response.status(), expected, "resuming at {have}");
        // Read until the cut, then drop the response mid-body: the connection is cut.
        while (received.len() as u64) < cut {
            let chunk = response.chunk().await.expect("bytes").expect("more bytes before the end");
            received.extend_from_slice(&chunk);
        }
        received.truncate(cut as usize);
        drop(response);
    }
    let on_disk = std::fs::read(server.data_dir.join("bulk").join(format!("{}.sqlite", url_file_id(&file.url))))
        .expect("the server's file");
    assert_eq!(received.len(), on_disk.len());
    assert!(received == on_disk, "the resumed download equals the file");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("resumed.sqlite");
    std::fs::write(&path, &received).expect("written");
    let view = load_file(&path, &PartitionId::new("Account", "*"), &file).expect("a valid file, checksum verified");
    let state = server.server.store().partition_state(&PartitionName::new("Account", "*")).expect("state");
    assert_eq!((view.cursor, view.total, view.checksum), (state.head, state.total, state.checksum));
}

pub(crate) fn url_file_id(url: &str) -> &str {
    url.rsplit('/').next().expect("a path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_expired_and_forged_tokens_get_401_or_403_and_no_bytes() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    server.add_user("bob", "bob-pw");
    seed(&server, "Contact", "ann", 50, |i| record(&format!("ann-{i}"), i64::from(i)));
    seed(&server, "Contact", "bob", 50, |i| record(&format!("bob-{i}"), i64::from(i)));
    let mut ann = raw_login(&server.url(), "ann", "ann-pw").await;
    let mut bob = raw_login(&server.url(), "bob", "bob-pw").await;
    let ann_file = ask_bulk(&mut ann, "a", "Contact").await.files.remove(0);
    let bob_file = ask_bulk(&mut bob, "b", "Contact").await.files.remove(0);
    assert_eq!((ann_file.key.as_str(), bob_file.key.as_str()), ("ann", "bob"));
    let http = reqwest::Client::new();
    let ann_url = resolve_url(&server.url(), &ann_file.url);
    let bob_url = resolve_url(&server.url(), &bob_file.url);

    let (status, body) = get(&http, &ann_url, Some(&ann_file.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(SQLITE_HEADER), "ann gets her file");

    let bulk = &server.server.services.bulk;
    let expired = TokenClaims { file_id: url_file_id(&ann_file.url).to_owned(), user_id: "ann".into(), expires_ms: 1 };
    let mut forged = ann_file.token.clone();
    let last = forged.pop().expect("a token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refusals = [
        (
            "ann's token on bob's file",
            bob_url.clone(),
            Some(ann_file.token.clone()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "an expired token",
            ann_url.clone(),
            Some(bulk.signer().issue(&expired)),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        ("a forged token", ann_url.clone(), Some(forged), StatusCode::UNAUTHORIZED, "unauthenticated"),
        ("no token", ann_url.clone(), None, StatusCode::UNAUTHORIZED, "unauthenticated"),
        ("an unknown file", format!("{}0", ann_url), Some(ann_file.token.clone()), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (what, url, token, status, code) in refusals {
        for from in [None, Some(0), Some(100)] {
            let (got, body) = get(&http, &url, token.as_deref(), from).await;
            assert_eq!(got, status, "{what}");
            assert!(!body.windows(SQLITE_HEADER.len()).any(|window| window == SQLITE_HEADER), "{what}: no file bytes");
            let error: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
            assert_eq!(error["code"], code, "{what}: {error}");
            assert!(error["message"].as_str().is_some_and(|message| !message.is_empty()), "{what}");
        }
    }
}

/// Returns this process's resident memory in KiB.
fn rss_kb() -> u64 {
    syncline_procfs::Process::Current.memory().expect("/proc/self/status").rss_kb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_a_200mb_file_to_20_devices_at_once_keeps_rss_flat() {
    const RECORDS: u32 = 800;
    const PAD: usize = 256 * 1024;
    const DEVICES: usize = 20;
    let server = TestServer::start_with(|config| config.store.cache_mb = 16).await;
    server.add_user("ann", "ann-pw");
    let pad = "x".repeat(PAD);
    for batch in 0..RECORDS / 20 {
        let records = (batch * 20..(batch + 1) * 20)
            .map(|i| {
                let fields = BTreeMap::from([("pad".to_owned(), Value::string(pad.clone()))]);
                Record { id: format!("big-{i:04}"), fields, version: 0 }
            })
            .collect();
        let partition = PartitionName::new("Account", "*");
        server.server.store().apply_batch(&partition, records, Vec::new()).expect("seed batch");
    }
    let mut connection = raw_login(&server.url(), "ann", "ann-pw").await;
    let file = ask_bulk(&mut connection, "big", "Account").await.files.remove(0);
    assert!(file.bytes > 200_000_000, "a file of {} bytes", file.bytes);
    let url = resolve_url(&server.url(), &file.url);

    let before = rss_kb();
    // Samples the resident memory while the downloads run (a measurement, not a wait).
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = rss_kb();
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak.max(rss_kb())
        })
    };
    let http = reqwest::Client::new();
    let downloads = (0..DEVICES).map(|_| {
        let (http, url, token) = (http.clone(), url.clone(), file.token.clone());
        tokio::spawn(async move {
            let mut response = http.get(&url).bearer_auth(&token).send().await.expect("answers");
            assert_eq!(response.status(), StatusCode::OK);
            let mut bytes = 0u64;
            while let Some(chunk) = response.chunk().await.expect("bytes") {
                bytes += chunk.len() as u64;
            }
            bytes
        })
    });
    let mut total = 0u64;
    for download in downloads.collect::<Vec<_>>() {
        total += download.await.expect("download task");
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    assert_eq!(total, file.bytes * DEVICES as u64, "every device got the whole file");
    let grown_mb = peak.saturating_sub(before) / 1024;
    // 20 downloads of a 200 MB file would be 4 GB held in memory, one alone 200 MB; streaming
    // holds a few buffers per download.
    assert!(grown_mb < 40, "RSS grew by {grown_mb} MB while serving {} MB", total / (1024 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_schedules_a_bulk_job_and_lists_its_file() {
    let server = TestServer::start().await;
    seed(&server, "Contact", "carol", 30, |i| record(&format!("c-{i}"), i64::from(i)));
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let (status, job) =
        admin.post("/v1/admin/bulk", serde_json::json!({"user_id": "carol", "sources": ["Contact"]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["partitions"], serde_json::json!(["Contact/carol"]));
    let files = syncline_tests::eventually(DEADLINE, "the job's file", || {
        let admin = admin.clone();
        async move {
            let (_, files) = admin.get("/v1/admin/bulk/files").await;
            files.as_array().filter(|files| !files.is_empty()).cloned()
        }
    })
    .await;
    assert_eq!((files[0]["key"].as_str(), files[0]["records"].as_u64()), (Some("carol"), Some(30)));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let (status, _) =
        viewer.post("/v1/admin/bulk", serde_json::json!({"user_id": "carol", "sources": ["Contact"]})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.post("/v1/admin/bulk", serde_json::json!({"user_id": "carol", "sources": ["Nope"]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Runs `syncline-sim initial-sync` against `server` with `args`; returns its report.
async fn initial_sync(server: &TestServer, dir: &std::path::Path, name: &str, args: &[&str]) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncline-sim-under-test"))
        .args(["initial-sync", "--url", &server.url(), "--user", "ann", "--password", "ann-pw", "--source", "Account"])
        .args(args)
        .args(["--max-secs", "60", "--json-out"])
        .arg(&json)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE * 2, run).await.expect("the run ends in time").expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {}\n{stderr}", output.status);
    serde_json::from_str(&std::fs::read_to_string(&json).expect("the report")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_by_bulk_file_reports_verified_runs_beside_the_paged_one() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    seed(&server, "Account", "*", 5_000, |i| record(&format!("acc-{i:05}"), i64::from(i)));
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, args) in [
        ("paged", &["--repeat", "1"][..]),
        ("bulk", &["--bulk", "--repeat", "2"][..]),
        ("parsed", &["--bulk", "--parse-fields", "--repeat", "1"][..]),
        ("fleet", &["--bulk", "--devices", "3", "--repeat", "1"][..]),
    ] {
        let report = initial_sync(&server, dir.path(), name, args).await;
        let runs = report["runs"].as_array().expect("runs");
        // After the first bulk arm the partition moves (below the reuse threshold): later
        // arms get the same file and these changes from the log after it, applied on top of
        // the file's records (a version looked up in the file, a new record, a delete).
        let logged = if matches!(name, "parsed" | "fleet") { 2 } else { 0 };
        for run in runs {
            assert_eq!(run["verified"], true, "{name}: {run}");
            let devices = if name == "fleet" { 3 } else { 1 };
            assert_eq!(run["records"], (5_000 + logged) * devices, "{name}: {run}");
            assert_eq!(run["bulk_file_bytes"].is_u64(), name != "paged", "{name}: {run}");
        }
        if name == "bulk" {
            let mut ingest = server.ingest_client().await;
            let changed = vec![record("acc-00001", -1), record("acc-new", -2)];
            push(&mut ingest, "Account", "*", changed, vec!["acc-00002".to_owned()]).await.expect("durable");
        }
    }
    assert_eq!(server.server.services.bulk.catalog().files().len(), 1, "every bulk run reused the first file");
}
