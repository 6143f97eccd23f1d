//! Runs the `syncline-sim` binary against the scripted fake server and reads what it prints.

use std::process::Stdio;

use syncline_client_sim::fake_server::{FakeServer, STEP, catch_up, live, record};
use syncline_proto::close_code;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    time::timeout,
};

#[tokio::test]
async fn watch_prints_progress_records_and_live_changes_and_stops_on_ctrl_c() {
    let server = FakeServer::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncline-sim"))
        .args(["watch", "--url", &server.url(), "--user", "alice", "--password", "secret", "--source", "Account"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut peer = server.accept().await;
    peer.recv_hello().await;
    catch_up(&mut peer).await;
    peer.send(live(3, 3, &[record("c", 3)], &["a"])).await;

    let expected = [
        "[Account/u1] in progress: 1 changes (1 this run, 0 total)",
        "[Account/u1] in progress: 1 changes (2 this run, 0 total)",
        "[Account/u1] caught up: 2 records",
        r#"  a {"name":"a@1"}"#,
        r#"  b {"name":"b@2"}"#,
        "[complete] 2 records, 2 changes this run",
        "- a",
        r#"+ c {"name":"c@3"}"#,
    ];
    for line in expected {
        let printed = timeout(STEP, lines.next_line()).await.expect("output in time").unwrap();
        assert_eq!(printed.as_deref(), Some(line));
    }

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let close = peer.recv_end().await.expect("Ctrl-C closes the connection");
    assert_eq!(u16::from(close.code), close_code::NORMAL);
    let exit = timeout(STEP, child.wait()).await.expect("the CLI exits").unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The load scenarios refuse any address that is not this machine's loopback, before
/// opening a single connection.
#[tokio::test]
async fn load_scenarios_refuse_non_loopback_addresses() {
    let own_pid = std::process::id().to_string();
    let cases: [&[&str]; 4] = [
        &["latency", "--url", "ws://10.1.2.3:7700/v1/sync", "--devices", "1", "--changes", "1"],
        &["latency", "--grpc", "http://192.168.0.1:7701", "--devices", "1", "--changes", "1"],
        &["initial-sync", "--url", "ws://example.com/v1/sync"],
        &["idle", "--url", "ws://8.8.8.8:7700/v1/sync", "--devices", "1", "--server-pid", &own_pid],
    ];
    for args in cases {
        let run = Command::new(env!("CARGO_BIN_EXE_syncline-sim")).args(args).args(["--max-secs", "5"]).output();
        let output = timeout(STEP, run).await.expect("refused at once").unwrap();
        assert!(!output.status.success(), "{args:?} ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("loopback"), "{args:?}: {stderr}");
    }
}
