//! `syncline user ...` and `syncline admin ...` (issue 15): on a stopped data directory they
//! work on its store; while a server runs on it they refuse without a token and, with one,
//! go through the server's admin API, whose changes take effect at once.

use std::path::Path;
use std::process::{Command, Output};

use syncline_client_sim::Incoming;
use syncline_proto::v1::server_frame;
use syncline_tests::DEADLINE;
use syncline_tests::process::ServerProcess;

/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_syncline-under-test");

fn syncline(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(SERVER);
    command.args(args).arg("--config").arg(config);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn login_answer(url: &str, user: &str, password: &str) -> server_frame::Msg {
    login_as_answer(url, user, password, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_token_commands_work_on_a_stopped_store_and_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("syncline.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n[sources.Contact]\npartitioning = \"user\"\n", data)).unwrap();

    // Stopped: straight into the store.
    let token = stdout(&syncline(&["admin", "token", "create", "--name", "ci", "--role", "admin"], &config, &[]));
    let token = token.trim().to_owned();
    assert!(token.starts_with("sla_"), "{token}");
    stdout(&syncline(&["user", "add", "ann", "--password", "pw-ann"], &config, &[]));
    stdout(&syncline(&["admin", "create", "--password", "console-pw-1"], &config, &[]));
    assert!(stdout(&syncline(&["user", "list"], &config, &[])).contains("ann"));

    let server = ServerProcess::start_with(SERVER, &data, 0, 0, Some(&config));
    let addr = server.admin_url.trim_start_matches("http://").to_owned();
    // Running, without a token: refused, saying what to do.
    let refused = syncline(&["user", "add", "nina", "--password", "pw-nina"], &config, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token"), "{refused:?}");

    let env = [("SYNCLINE_ADMIN_TOKEN", token.as_str()), ("SYNCLINE_ADMIN_ADDR", addr.as_str())];
    stdout(&syncline(&["user", "add", "nina", "--password", "pw-nina"], &config, &env));
    let welcome = login_answer(&server.device_url, "nina", "pw-nina").await;
    assert!(matches!(welcome, server_frame::Msg::Welcome(_)), "nina logs in at once: {welcome:?}");
    let listed = stdout(&syncline(&["user", "list"], &config, &env));
    assert!(listed.contains("ann") && listed.contains("nina"), "{listed}");

    stdout(&syncline(&["user", "disable", "nina"], &config, &env));
    let refused = login_answer(&server.device_url, "nina", "pw-nina").await;
    let server_frame::Msg::Error(error) = refused else { panic!("expected a refusal, got {refused:?}") };
    assert_eq!(error.code, syncline_proto::v1::ErrorCode::Forbidden as i32);
    assert!(stdout(&syncline(&["user", "list"], &config, &env)).contains("nina  (disabled)"));
    stdout(&syncline(&["user", "enable", "nina"], &config, &env));
    stdout(&syncline(&["user", "passwd", "nina", "--password", "pw-new"], &config, &env));
    let welcome = login_answer(&server.device_url, "nina", "pw-new").await;
    assert!(matches!(welcome, server_frame::Msg::Welcome(_)), "{welcome:?}");

    let viewer = stdout(&syncline(&["admin", "token", "create", "--name", "grafana"], &config, &env));
    let tokens = stdout(&syncline(&["admin", "token", "list"], &config, &env));
    assert!(tokens.contains("grafana") && tokens.contains("ci"), "{tokens}");
    let id =
        tokens.lines().find(|line| line.ends_with("grafana")).unwrap().split_whitespace().next().unwrap().to_owned();
    stdout(&syncline(&["admin", "token", "revoke", &id], &config, &env));
    let with_revoked = [("SYNCLINE_ADMIN_TOKEN", viewer.trim()), ("SYNCLINE_ADMIN_ADDR", addr.as_str())];
    let refused = syncline(&["user", "list"], &config, &with_revoked);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");

    stdout(&syncline(&["user", "delete", "nina", "--purge"], &config, &env));
    let gone = login_answer(&server.device_url, "nina", "pw-new").await;
    assert!(matches!(gone, server_frame::Msg::Error(_)), "{gone:?}");
    server.stop();

    // Stopped again: the changes made through the API are in the store.
    let listed = stdout(&syncline(&["user", "list"], &config, &[]));
    assert!(listed.contains("ann") && !listed.contains("nina"), "{listed}");
    stdout(&syncline(&["user", "delete", "ann"], &config, &[]));
    assert!(!stdout(&syncline(&["user", "list"], &config, &[])).contains("ann"));
}

/// Logs in as the device `client_id`; returns the Welcome or the refusal, past the commands
/// a locked device is sent before it is refused.
async fn login_as_answer(url: &str, user: &str, password: &str, client_id: &str) -> server_frame::Msg {
    let mut connection = syncline_tests::raw_login_as(url, user, password, client_id).await;
    loop {
        match tokio::time::timeout(DEADLINE, connection.recv()).await.expect("an answer in time").expect("a frame") {
            Incoming::Frame(frame) => match frame.msg.expect("a message") {
                server_frame::Msg::Command(_) => continue,
                answer => return answer,
            },
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_commands_work_through_a_running_server_and_on_a_stopped_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("syncline.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n[sources.Contact]\npartitioning = \"user\"\n", data)).unwrap();
    let token = stdout(&syncline(&["admin", "token", "create", "--name", "ci", "--role", "admin"], &config, &[]));
    stdout(&syncline(&["user", "add", "ann", "--password", "pw-ann"], &config, &[]));

    let server = ServerProcess::start_with(SERVER, &data, 0, 0, Some(&config));
    let addr = server.admin_url.trim_start_matches("http://").to_owned();
    let env = [("SYNCLINE_ADMIN_TOKEN", token.trim()), ("SYNCLINE_ADMIN_ADDR", addr.as_str())];
    let welcome = login_answer(&server.device_url, "ann", "pw-ann").await;
    let server_frame::Msg::Welcome(welcome) = welcome else { panic!("expected a welcome, got {welcome:?}") };
    let client_id = welcome.client_id;

    let listed = stdout(&syncline(&["device", "list", "--user", "ann"], &config, &env));
    assert!(listed.contains(&client_id) && listed.contains("state=active"), "{listed}");
    assert!(stdout(&syncline(&["device", "list", "--state", "locked"], &config, &env)).is_empty());
    let sent = stdout(&syncline(&["device", "lock", &client_id, "--reason", "reported lost"], &config, &env));
    assert!(sent.contains("command lock") && sent.contains("reported lost"), "{sent}");
    let refused = login_as_answer(&server.device_url, "ann", "pw-ann", &client_id).await;
    let server_frame::Msg::Error(error) = refused else { panic!("a locked device is refused, got {refused:?}") };
    assert_eq!(error.code, syncline_proto::v1::ErrorCode::Forbidden as i32);
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(&syncline(&["device", "show", &client_id, "--json"], &config, &env))).unwrap();
    assert_eq!(shown["state"], "locked", "{shown}");
    assert_eq!(shown["user_id"], "ann", "{shown}");
    assert_eq!(shown["commands"][0]["kind"], "lock", "{shown}");
    let unknown = syncline(&["device", "wipe", "no-such-device"], &config, &env);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("404"), "{unknown:?}");
    server.stop();

    // Stopped: the same commands on the store; unlock takes effect at once, resync waits
    // for the device's next connection.
    let listed = stdout(&syncline(&["device", "list", "--state", "locked"], &config, &[]));
    assert!(listed.contains(&client_id), "{listed}");
    stdout(&syncline(&["device", "unlock", &client_id], &config, &[]));
    let sent = stdout(&syncline(&["device", "resync", &client_id], &config, &[]));
    assert!(sent.contains("command resync pending"), "{sent}");
    let shown = stdout(&syncline(&["device", "show", &client_id], &config, &[]));
    assert!(shown.contains("state=active") && shown.contains("command resync pending"), "{shown}");
    let unknown = syncline(&["device", "lock", "no-such-device"], &config, &[]);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no-such-device"));

    let server = ServerProcess::start_with(SERVER, &data, 0, 0, Some(&config));
    let welcome = login_as_answer(&server.device_url, "ann", "pw-ann", &client_id).await;
    assert!(matches!(welcome, server_frame::Msg::Welcome(_)), "unlocked while stopped: {welcome:?}");
    server.stop();
}

/// Reads the server's stdout until the line with the demo admin's password; returns it.
fn printed_password(stdout: std::process::ChildStdout) -> Option<String> {
    use std::io::BufRead as _;
    let lines = std::io::BufReader::new(stdout).lines();
    lines.map_while(Result::ok).find_map(|line| line.split("password: ").nth(1).map(|rest| rest.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_working_admin_password_once_at_its_first_start() {
    let dir = tempfile::tempdir().unwrap();
    // Every listener on a port the server picks; the admin URL is read from its log.
    let start = || {
        let mut child = Command::new(SERVER)
            .arg("serve")
            .env("SYNCLINE_DATA_DIR", dir.path())
            .env("SYNCLINE_DEVICE_ADDR", "127.0.0.1:0")
            .env("SYNCLINE_GRPC_ADDR", "127.0.0.1:0")
            .env("SYNCLINE_ADMIN_ADDR", "127.0.0.1:0")
            .env("SYNCLINE_DEMO_RECORDS", "10")
            .env("SYNCLINE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let log = child.stderr.take().unwrap();
        let admin = tokio::task::spawn_blocking(move || syncline_tests::process::admin_url_from_log(log));
        (child, admin)
    };
    let (mut first, admin) = start();
    let stdout = first.stdout.take().unwrap();
    let password =
        tokio::task::spawn_blocking(move || printed_password(stdout)).await.unwrap().expect("a password line");
    let base = admin.await.unwrap().expect("the admin endpoint listens");
    let http = reqwest::Client::new();
    let login = |base: &str, password: String| {
        let http = http.clone();
        let url = format!("{base}/v1/admin/session");
        async move { http.post(url).json(&serde_json::json!({"name": "admin", "password": password})).send().await }
    };
    let answer = syncline_tests::eventually(DEADLINE, "the admin endpoint answers", || {
        let attempt = login(&base, password.clone());
        async move { attempt.await.ok() }
    })
    .await;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    // The demo's users live in its CRM database; the admin API lists them too.
    let cookie = answer.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let users: serde_json::Value = http
        .get(format!("{base}/v1/admin/users?prefix=de"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = users["items"].as_array().unwrap().iter().filter_map(|user| user["name"].as_str()).collect();
    assert_eq!(names, ["demo"], "{users}");
    first.kill().unwrap();
    first.wait().unwrap();

    // Second start: nothing printed (stdout ends when the process is killed after it is up).
    let (mut second, admin) = start();
    let stdout = second.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || printed_password(stdout));
    let base = admin.await.unwrap().expect("the admin endpoint listens again");
    let answer = syncline_tests::eventually(DEADLINE, "the admin endpoint answers again", || {
        let attempt = login(&base, password.clone());
        async move { attempt.await.ok() }
    })
    .await;
    assert_eq!(answer.status(), reqwest::StatusCode::OK, "the first password still works");
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(printed.await.unwrap(), None, "the password is printed only at the first start");
}
