//! `syncline-sim personal` against a real server: a handful of users, each logged in with a
//! backend token the simulator mints, each receiving exactly the changes pushed to its own
//! partition.

use std::time::Duration;

use syncline_server::config::{Partitioning, SourceSection};
use syncline_tests::{TestServer, server_view};
use tokio::process::Command;

const SECRET: &str = "personal-scenario-secret-0123456789abcdef";
const USERS: u64 = 5;
const CHANGES: u64 = 60;
/// The whole run, bounded by the simulator's own --max-secs well inside this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_delivers_each_users_changes_to_its_own_device() {
    let server = TestServer::start_with(|config| {
        config.auth.backend_token_secret = Some(SECRET.into());
        config.sources.insert("Personal".into(), SourceSection::new(Partitioning::User));
    })
    .await;
    let out = tempfile::tempdir().expect("temporary directory");
    let json = out.path().join("personal.json");
    let run = Command::new(env!("CARGO_BIN_EXE_syncline-sim-under-test"))
        .arg("personal")
        .args(["--url", &server.url(), "--grpc", &server.server.grpc_url()])
        .args(["--token-secret", SECRET, "--users", &USERS.to_string(), "--user-prefix", "p-"])
        .args(["--changes", &CHANGES.to_string(), "--rate", "200", "--source-addrs", "4"])
        .args(["--max-secs", "90", "--drain-secs", "30", "--json-out"])
        .arg(&json)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, run).await.expect("the scenario ends by itself").expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("personal: 5 users"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report")).expect("valid JSON");
    assert_eq!(report["scenario"], "personal");
    assert_eq!(report["ramp_up"]["caught_up"], USERS, "{report:#}");
    assert_eq!(report["pushed"], CHANGES, "{report:#}");
    assert_eq!(report["delivered"], CHANGES, "{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["extra"], 0, "{report:#}");
    assert_eq!(report["latency"]["count"], CHANGES, "{report:#}");
    // Round-robin: each user's partition got its share, as distinct records.
    for user in 0..USERS {
        let (records, _) = server_view(&server, "Personal", &format!("p-{user:06}"));
        assert_eq!(records.len() as u64, CHANGES / USERS, "user {user}");
    }
    server.stop().await;
}
