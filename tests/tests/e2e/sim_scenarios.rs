//! Runs the `syncline-sim` load scenarios `storm` and `slow` with a handful of devices
//! against a real in-process server and checks their JSON reports: every device back and
//! caught up at the head, nothing lost.

use std::path::Path;
use std::process::Stdio;

use syncline_tests::{DEADLINE, TestServer, push, record};

/// Devices of each run: enough for a herd, few enough for a shared CI machine.
const DEVICES: &str = "20";

/// Starts a server with the `demo` user and a few records in the `Account` partition.
async fn server_with_records() -> TestServer {
    let server = TestServer::start().await;
    server.add_user("demo", "demo");
    let mut ingest = server.ingest_client().await;
    let records = (0..5).map(|n| record(&format!("seed-{n}"), n)).collect();
    push(&mut ingest, "Account", "*", records, Vec::new()).await.expect("seeding pushes");
    server
}

/// Runs `syncline-sim-under-test` with `args` (and a JSON report into `dir`), bounded by the
/// test deadline; returns the report.
async fn run_sim(dir: &Path, scenario: &str, args: &[&str]) -> serde_json::Value {
    let json = dir.join(format!("{scenario}.json"));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncline-sim-under-test"))
        .arg(scenario)
        .args(args)
        .args(["--source-addrs", "0", "--max-secs", "60", "--json-out"])
        .arg(&json)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE * 2, run).await.expect("the scenario ends in time").expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{scenario} failed: {}\n{stdout}\n{stderr}", output.status);
    let text = std::fs::read_to_string(&json).expect("the report is written");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_resumes_every_device_at_the_head_without_loss() {
    let server = server_with_records().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, grpc) = (server.url(), server.server.grpc_url());
    let args = ["--url", &url, "--grpc", &grpc, "--devices", DEVICES, "--changes-during", "50", "--drain-secs", "30"];
    let report = run_sim(dir.path(), "storm", &args).await;
    assert_eq!(report["ramp_up"]["caught_up"], 20, "{report:#}");
    assert_eq!(report["pushed"], 50, "{report:#}");
    assert_eq!(report["all_back"], true, "{report:#}");
    assert_eq!(report["devices_back"], 20, "{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicates"], 0, "{report:#}");
    assert_eq!(report["expected_records"], report["delivered_records"], "{report:#}");
    assert!(report["reconnects"].as_u64().unwrap() >= 20, "{report:#}");
    assert_eq!(report["head"], 55, "5 seeded + 50 during the outage: {report:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_devices_catch_up_without_loss_once_they_read_again() {
    // A short outbound queue, so that the stalled devices are demoted even at this size.
    let server = TestServer::start_with(|config| config.device.outbound_queue = 4).await;
    server.add_user("demo", "demo");
    let dir = tempfile::tempdir().unwrap();
    let (url, grpc) = (server.url(), server.server.grpc_url());
    let args = [
        "--url",
        &url,
        "--grpc",
        &grpc,
        "--devices",
        DEVICES,
        "--stalled-percent",
        "10",
        "--rate",
        "100",
        "--phase-secs",
        "1",
        "--drain-secs",
        "30",
        "--sample-ms",
        "100",
    ];
    let report = run_sim(dir.path(), "slow", &args).await;
    assert_eq!(report["ramp_up"]["caught_up"], 20, "{report:#}");
    assert_eq!(report["stalled"]["devices"], 2, "{report:#}");
    assert_eq!(report["stalled"]["caught_up_without_loss"], true, "{report:#}");
    assert_eq!(report["others"]["lost"], 0, "{report:#}");
    assert!(report["all_caught_up_secs"].is_number(), "{report:#}");
    assert!(report["others"]["before"]["count"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["others"]["during"]["count"].as_u64().unwrap() > 0, "{report:#}");
    server.stop().await;
}
