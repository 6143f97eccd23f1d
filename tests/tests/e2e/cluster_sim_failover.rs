//! Issue 16's failover measurement, end to end at test size: `syncline-sim fanout` with its
//! devices spread over three `syncline serve` nodes on one Redis (`--url a,b,c`), a steady
//! ingest at node 0, and node 2 killed with SIGKILL by the simulator mid-run (`--kill-pid`).
//! Every device of node 2 moves to the next node, as behind a load balancer, resumes from its
//! cursor and catches up: the report counts each of them connected and caught up again, and
//! no delivery is lost or repeated.

use std::process::Stdio;

use syncline_server::storage::redis::{RedisOptions, RedisStore};
use syncline_server::test_util::redis_server::RedisServer;
use syncline_tests::DEADLINE;
use syncline_tests::process::ServerProcess;

/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_syncline-under-test");
/// Devices, a third of them on the node that is killed.
const DEVICES: u64 = 30;
const NODES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_a_killed_node_resume_on_the_next_one_and_lose_nothing() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let text = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n[sources.Account]\npartitioning = \"app\"\n",
        redis.url()
    );
    std::fs::write(&config, text).unwrap();
    let store = RedisStore::open(&RedisOptions::single(redis.url()), None).expect("the store opens");
    syncline_server::auth::add_user(&store, "fleet", "fleet-pw").expect("user added");
    let nodes: Vec<ServerProcess> = (0..NODES)
        .map(|index| {
            let data = dir.path().join(format!("node-{index}"));
            std::fs::create_dir_all(&data).unwrap();
            ServerProcess::start_with(SERVER, &data, 0, 0, Some(&config))
        })
        .collect();
    let urls = nodes.iter().map(|node| node.device_url.clone()).collect::<Vec<_>>().join(",");
    let json = dir.path().join("failover.json");
    let (devices, victim) = (DEVICES.to_string(), nodes[2].pid().to_string());
    let args = [
        "fanout",
        "--url",
        &urls,
        "--user",
        "fleet",
        "--password",
        "fleet-pw",
        "--devices",
        &devices,
        "--changes",
        "100",
        "--rate",
        "20",
        "--grpc",
        &nodes[0].grpc_url,
        "--kill-pid",
        &victim,
        "--kill-after-secs",
        "1",
        "--source-addrs",
        "0",
        "--max-secs",
        "60",
        "--drain-secs",
        "30",
    ];
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_syncline-sim-under-test"))
        .args(args)
        .arg("--json-out")
        .arg(&json)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE * 6, run).await.expect("the run ends in time").expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fanout failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    assert_eq!(report["ramp_up"]["caught_up"], DEVICES, "{report:#}");
    assert_eq!(report["pushed"], 100, "{report:#}");
    assert_eq!((report["lost"].as_u64(), report["extra"].as_u64()), (Some(0), Some(0)), "{report:#}");
    let fleet = &report["fleet"];
    assert_eq!((fleet["duplicate_seqs"].as_u64(), fleet["missing_seqs"].as_u64()), (Some(0), Some(0)), "{report:#}");
    let failover = &report["failover"];
    assert_eq!(failover["origin"], "kill", "{report:#}");
    // Device i starts on node i mod 3: a third were on the killed node.
    let moved = DEVICES / NODES as u64;
    assert_eq!(failover["devices_dropped"], moved, "{report:#}");
    assert_eq!(failover["devices_reconnected"], moved, "{report:#}");
    assert_eq!(failover["devices_caught_up"], moved, "{report:#}");
    let caught_up_max = failover["caught_up"]["max_ms"].as_f64().expect("a time");
    assert!(caught_up_max >= failover["reconnected"]["max_ms"].as_f64().unwrap(), "{report:#}");
    drop(nodes);
}
