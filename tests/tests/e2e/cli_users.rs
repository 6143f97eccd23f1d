//! `syncline user add` does what its user expects on every kind of server: on the demo it
//! adds a user the demo's login channel accepts at once, even while the server runs (issue
//! 13: it used to write a local user the demo never looked at); on a server whose logins a
//! configured channel checks it refuses and says where users live.

use std::process::Command;

use syncline_client_sim::Incoming;
use syncline_proto::v1::server_frame;
use syncline_tests::DEADLINE;
use syncline_tests::process::ServerProcess;

/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_syncline-under-test");

/// Returns the first frame the server answers a login with: Welcome or the Error.
async fn login_answer(url: &str, user: &str, password: &str) -> server_frame::Msg {
    let mut connection = syncline_tests::raw_login(url, user, password).await;
    match tokio::time::timeout(DEADLINE, connection.recv()).await.expect("an answer in time").expect("a frame") {
        Incoming::Frame(frame) => frame.msg.expect("a message"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_a_running_demo_can_log_in_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(SERVER, dir.path(), 0, 0);
    let before = login_answer(&server.device_url, "nina", "s3cret-pw").await;
    assert!(matches!(before, server_frame::Msg::Error(_)), "unknown before: {before:?}");

    let added = Command::new(SERVER)
        .args(["user", "add", "nina", "--password", "s3cret-pw", "--data-dir"])
        .arg(dir.path())
        .env("SYNCLINE_DEMO_RECORDS", "100")
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(String::from_utf8_lossy(&added.stdout).contains("demo app"));

    let welcome = login_answer(&server.device_url, "nina", "s3cret-pw").await;
    let server_frame::Msg::Welcome(welcome) = welcome else { panic!("expected Welcome, got {welcome:?}") };
    assert_eq!(welcome.user_id, "nina");
    let wrong = login_answer(&server.device_url, "nina", "wrong").await;
    assert!(matches!(wrong, server_frame::Msg::Error(_)), "{wrong:?}");
    server.stop();
}

#[test]
fn user_add_refuses_when_a_channel_checks_logins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncline.toml");
    std::fs::write(
        &config,
        "[auth]\nchannel = \"http://127.0.0.1:9\"\n[sources.Task]\npartitioning = \"user\"\nchannel = \"http://127.0.0.1:9\"\ncapture = \"watch\"\n",
    )
    .unwrap();
    let added = Command::new(SERVER)
        .args(["user", "add", "nina", "--password", "pw", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!added.status.success());
    let error = String::from_utf8_lossy(&added.stderr);
    assert!(error.contains("auth.channel") && error.contains("add the user in that backend"), "{error}");
    assert!(!dir.path().join(syncline_server::app::STORE_FILE_NAME).exists(), "no local user was written");
}

/// On the Redis store (cluster mode) `syncline user add` writes to Redis, where every node
/// reads users: a node that runs on it lets the user in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_on_the_redis_store_reaches_every_node() {
    use syncline_server::config::{Config, StoreBackend};
    use syncline_server::test_util::redis_server::RedisServer;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let toml = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n[sources.Account]\npartitioning = \"app\"\ncapture = \"ingest\"\n",
        redis.url()
    );
    std::fs::write(&config, toml).unwrap();
    let added = Command::new(SERVER)
        .args(["user", "add", "rita", "--password", "rita-pw", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let url = redis.url();
    let node = syncline_tests::TestServer::start_with(|config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
    })
    .await;
    let welcome = login_answer(&node.url(), "rita", "rita-pw").await;
    assert!(matches!(welcome, server_frame::Msg::Welcome(_)), "{welcome:?}");
    let listed = Command::new(SERVER).args(["user", "list", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("rita"), "{}", String::from_utf8_lossy(&listed.stdout));
    node.stop().await;
}
