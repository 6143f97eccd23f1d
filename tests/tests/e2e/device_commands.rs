//! Device management end to end (issue 15): operator commands sent over the admin API reach
//! devices (client-sim, real WebSockets) at once when connected and at their next Hello when
//! not, right after Welcome; the device acts on each and acknowledges it; a locked device is
//! refused (FORBIDDEN, 4003) until unlocked; commands survive a restart; the registry lists,
//! filters and pages devices and their last-seen times advance.

use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use syncline_client_sim::wire::{ConnectOptions, Connection, Incoming};
use syncline_client_sim::{
    ConnectionPhase, Device, DeviceConfig, DeviceHandle, DeviceState, StopCommand, StopReason, SubscriptionConfig,
};
use syncline_proto::close_code;
use syncline_proto::v1::{
    ClientFrame, CommandKind, DeviceInfo, ErrorCode, Hello, Login, Subscribe, Value, client_frame, hello, server_frame,
};
use syncline_server::storage::AdminRole;
use syncline_tests::admin::{AdminClient, assert_error};
use syncline_tests::{DEADLINE, TestServer, assert_converges, eventually, push, record};
use tokio::time::Instant;

const RECORDS: i64 = 30;

/// Starts a server with user ann and `RECORDS` records in the app partition `Account/*`.
async fn seeded_server() -> TestServer {
    let server = TestServer::start_with(|config| config.store.cursor_flush_millis = 50).await;
    seed(&server).await;
    server
}

async fn seed(server: &TestServer) {
    server.add_user("ann", "ann-pw");
    server.add_user("bob", "bob-pw");
    let mut ingest = server.ingest_client().await;
    let records = (0..RECORDS).map(|n| record(&format!("acc-{n:03}"), n)).collect();
    push(&mut ingest, "Account", "*", records, Vec::new()).await.expect("seeded");
}

fn config(server: &TestServer, outbox: &std::path::Path) -> DeviceConfig {
    let mut config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Account").with_page_size(7))
        .with_mutation_store(outbox);
    config.device_info = DeviceInfo { platform: "ios".into(), app_version: "2.1.0".into(), model: "sim".into() };
    config
}

fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

async fn caught_up(device: &DeviceHandle) -> DeviceState {
    device.wait_for(deadline(), DeviceState::is_caught_up).await.expect("caught up")
}

async fn signed_out(device: &DeviceHandle) -> StopReason {
    let state = device
        .wait_for(deadline(), |state| matches!(state.connection, ConnectionPhase::SignedOut(_)))
        .await
        .expect("signed out");
    state.stop_reason().cloned().expect("a reason")
}

/// Sends a command over the admin API; returns its id.
async fn send(admin: &AdminClient, client_id: &str, kind: &str, reason: &str) -> String {
    let (status, command) =
        admin.post(&format!("/v1/admin/devices/{client_id}/commands"), json!({"kind": kind, "reason": reason})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{command}");
    assert_eq!(command["kind"], kind);
    command["command_id"].as_str().expect("an id").to_owned()
}

/// Returns the command's state as the admin API shows it.
async fn command_state(admin: &AdminClient, client_id: &str, command_id: &str) -> Json {
    let (status, page) = admin.get(&format!("/v1/admin/devices/{client_id}/commands?limit=500")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    items.iter().find(|command| command["command_id"] == command_id).cloned().expect("listed")
}

/// Waits until the admin API shows the command acknowledged (after delivery).
async fn acknowledged(admin: &AdminClient, client_id: &str, command_id: &str) {
    let command = eventually(DEADLINE, "the command acknowledged", || async {
        let command = command_state(admin, client_id, command_id).await;
        (command["state"] == "acknowledged").then_some(command)
    })
    .await;
    let (delivered, acked) = (command["delivered_ms"].as_i64().unwrap(), command["acknowledged_ms"].as_i64().unwrap());
    assert!(delivered <= acked && delivered >= command["created_ms"].as_i64().unwrap(), "{command}");
}

fn device_state(admin_device: &Json) -> &str {
    admin_device["state"].as_str().expect("a state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_reaches_a_connected_device_at_once_and_is_acknowledged() {
    let server = seeded_server().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(config(&server, &dir.path().join("outbox.sqlite")));
    let state = caught_up(&device).await;
    let client_id = state.client_id.clone().unwrap();

    // Resync: dropped and downloaded again from cursor 0, checksum verified.
    let resyncs = device.stats().resyncs;
    let resync = send(&admin, &client_id, "resync", "fresh copy").await;
    acknowledged(&admin, &client_id, &resync).await;
    device.wait_for(deadline(), |state| state.stats.resyncs > resyncs && state.is_caught_up()).await.unwrap();
    assert_converges(&device, &server, "Account", "*", DEADLINE).await;
    assert_eq!(device.stats().checksum_mismatches, 0);

    // Lock: the device stops syncing and reports locked; its logins are refused until unlock.
    let lock = send(&admin, &client_id, "lock", "reported stolen").await;
    let reason = signed_out(&device).await;
    assert_eq!(reason, StopReason::Command { kind: StopCommand::Lock, reason: "reported stolen".into() });
    assert!(device.state().is_locked());
    acknowledged(&admin, &client_id, &lock).await;
    let (_, shown) = admin.get(&format!("/v1/admin/devices/{client_id}")).await;
    assert_eq!(device_state(&shown), "locked", "{shown}");
    assert!(device.synced_view("Account", "*").is_some_and(|view| view.total == RECORDS as u64), "data kept");
    device.login("ann", "ann-pw").unwrap();
    let refused = device
        .wait_for(deadline(), |state| matches!(state.stop_reason(), Some(StopReason::Forbidden { .. })))
        .await
        .expect("refused while locked");
    assert!(refused.is_locked());
    send(&admin, &client_id, "unlock", "found it").await;
    device.login("ann", "ann-pw").unwrap();
    caught_up(&device).await;

    // Logout: the session token is forgotten (and revoked on the server).
    let logout = send(&admin, &client_id, "logout", "").await;
    assert_eq!(signed_out(&device).await, StopReason::Command { kind: StopCommand::Logout, reason: String::new() });
    acknowledged(&admin, &client_id, &logout).await;
    device.login("ann", "ann-pw").unwrap();
    caught_up(&device).await;

    // Wipe: local records and the offline queue are erased, then the device logs out.
    let fields = BTreeMap::from([("name".to_owned(), Value::string("local draft"))]);
    device.create("Account", None, fields).unwrap();
    assert_eq!(device.mutations().len(), 1);
    let wipe = send(&admin, &client_id, "wipe", "left the company").await;
    assert!(matches!(signed_out(&device).await, StopReason::Command { kind: StopCommand::Wipe, .. }));
    assert!(device.mutations().is_empty(), "the outbox is empty");
    assert_eq!(device.view("Account", "*"), None, "the local store is empty");
    acknowledged(&admin, &client_id, &wipe).await;
    // The wiped outbox is empty on disk too: a device started on it has nothing to send.
    device.stop().await;
    let restarted = Device::start(config(&server, &dir.path().join("outbox.sqlite")));
    assert!(restarted.mutations().is_empty());
    restarted.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_its_commands_at_its_next_hello_right_after_welcome() {
    let server = seeded_server().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    let device = Device::start(config(&server, &outbox));
    let client_id = caught_up(&device).await.client_id.unwrap();
    device.stop().await;

    let resync = send(&admin, &client_id, "resync", "offline resync").await;
    assert_eq!(command_state(&admin, &client_id, &resync).await["state"], "pending");

    // A raw connection pipelines Hello and Subscribe: Welcome, then the command, then sync.
    let mut connection = Connection::connect(&server.url(), &ConnectOptions::default()).await.unwrap();
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
        client_id: client_id.clone(),
        device: None,
    };
    let subscribe = Subscribe { source: "Account".into(), key: "*".into(), cursor: 0, page_size: 100, window: 4 };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.unwrap();
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Subscribe(subscribe)) }).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match tokio::time::timeout(DEADLINE, connection.recv()).await.expect("in time").expect("a frame") {
            Incoming::Frame(frame) => kinds.push(match frame.msg.expect("a message") {
                server_frame::Msg::Welcome(_) => "welcome".to_owned(),
                server_frame::Msg::Command(command) => {
                    assert_eq!(
                        (command.kind, command.command_id.as_str()),
                        (CommandKind::Resync as i32, resync.as_str())
                    );
                    "command".to_owned()
                }
                server_frame::Msg::Changes(_) | server_frame::Msg::SyncState(_) => "sync".to_owned(),
                other => panic!("unexpected frame {other:?}"),
            }),
            Incoming::Closed { code, reason } => panic!("closed {code}: {reason}"),
        }
    }
    assert_eq!(kinds, ["welcome", "command", "sync"]);
    assert_eq!(command_state(&admin, &client_id, &resync).await["state"], "delivered", "not acknowledged by it");
    drop(connection);

    // The device library, started again as the same install, acts on it and acknowledges.
    let mut again = config(&server, &outbox);
    again.client_id = Some(client_id.clone());
    let device = Device::start(again);
    acknowledged(&admin, &client_id, &resync).await;
    assert_converges(&device, &server, "Account", "*", DEADLINE).await;
    assert!(device.stats().resyncs >= 1);
    assert_eq!(device.client_id().as_deref(), Some(client_id.as_str()));
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_locked_at_its_next_login_and_wiped_after_unlock() {
    let server = seeded_server().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    let device = Device::start(config(&server, &outbox));
    let client_id = caught_up(&device).await.client_id.unwrap();
    device.stop().await;

    let lock = send(&admin, &client_id, "lock", "lost on a train").await;
    // A raw login of the locked device: the lock, then a typed refusal and close 4003.
    let mut connection = Connection::connect(&server.url(), &ConnectOptions::default()).await.unwrap();
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
        client_id: client_id.clone(),
        device: None,
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.unwrap();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, connection.recv()).await.expect("in time").expect("a frame") {
            Incoming::Frame(frame) => match frame.msg.expect("a message") {
                server_frame::Msg::Command(command) => {
                    assert_eq!(command.kind, CommandKind::Lock as i32);
                    seen.push("command");
                }
                server_frame::Msg::Error(error) => {
                    assert_eq!((error.code, error.fatal), (ErrorCode::Forbidden as i32, true), "{error:?}");
                    seen.push("error");
                }
                other => panic!("a locked device got {other:?}"),
            },
            Incoming::Closed { code, .. } => {
                assert_eq!(code, close_code::FORBIDDEN);
                break;
            }
        }
    }
    assert_eq!(seen, ["command", "error"]);

    // The device library: refused, reports locked.
    let mut again = config(&server, &outbox);
    again.client_id = Some(client_id.clone());
    let device = Device::start(again);
    let state = device.wait_for(deadline(), DeviceState::is_locked).await.expect("locked");
    assert!(matches!(state.stop_reason(), Some(StopReason::Forbidden { .. })), "{state:?}");
    assert_eq!(command_state(&admin, &client_id, &lock).await["state"], "delivered");

    // A wipe while locked waits too; after unlock the device logs in, acknowledges both and
    // wipes.
    let fields = BTreeMap::from([("name".to_owned(), Value::string("offline draft"))]);
    device.create("Account", None, fields).unwrap();
    let wipe = send(&admin, &client_id, "wipe", "wipe it").await;
    send(&admin, &client_id, "unlock", "").await;
    device.login("ann", "ann-pw").unwrap();
    acknowledged(&admin, &client_id, &lock).await;
    acknowledged(&admin, &client_id, &wipe).await;
    let state = device
        .wait_for(deadline(), |state| {
            matches!(state.stop_reason(), Some(StopReason::Command { kind: StopCommand::Wipe, .. }))
        })
        .await
        .expect("wiped");
    assert!(!state.is_locked());
    assert!(device.mutations().is_empty());
    assert_eq!(device.view("Account", "*"), None);
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_survive_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data.path(), |_| {}).await;
    seed(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    let device = Device::start(config(&server, &outbox));
    let client_id = caught_up(&device).await.client_id.unwrap();
    device.stop().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let logout = send(&admin, &client_id, "logout", "restart me").await;
    server.stop().await;

    let server = TestServer::start_in(data.path(), |_| {}).await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    assert_eq!(command_state(&admin, &client_id, &logout).await["state"], "pending");
    let mut again = config(&server, &outbox);
    again.client_id = Some(client_id.clone());
    let device = Device::start(again);
    assert!(matches!(signed_out(&device).await, StopReason::Command { kind: StopCommand::Logout, .. }));
    acknowledged(&admin, &client_id, &logout).await;
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_filters_and_pages_devices_and_last_seen_advances() {
    let server = seeded_server().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let dir = tempfile::tempdir().unwrap();
    let mut devices = Vec::new();
    for (n, (user, platform)) in [("ann", "ios"), ("ann", "web"), ("bob", "ios")].into_iter().enumerate() {
        let mut config = config(&server, &dir.path().join(format!("outbox-{n}.sqlite")));
        config.username = user.into();
        config.password = format!("{user}-pw");
        config.device_info.platform = platform.into();
        let device = Device::start(config);
        caught_up(&device).await;
        devices.push(device);
    }

    let (status, all) = viewer.get("/v1/admin/devices?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let cursor = all["next_cursor"].as_str().expect("a second page");
    let (_, rest) = viewer.get(&format!("/v1/admin/devices?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let (_, ann) = viewer.get("/v1/admin/devices?user=ann").await;
    assert_eq!(ann["items"].as_array().unwrap().len(), 2);
    let (_, ann_ios) = viewer.get("/v1/admin/devices?user=ann&platform=ios&state=active").await;
    let items = ann_ios["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{ann_ios}");
    assert_eq!((items[0]["app_version"].as_str(), items[0]["user_id"].as_str()), (Some("2.1.0"), Some("ann")));
    let (_, none) = viewer.get("/v1/admin/devices?state=locked").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let (_, future) = viewer.get("/v1/admin/devices?last_seen_after=99999999999999").await;
    assert!(future["items"].as_array().unwrap().is_empty());
    let (_, past) = viewer.get("/v1/admin/devices?last_seen_before=99999999999999").await;
    assert_eq!(past["items"].as_array().unwrap().len(), 3);
    assert_error(&viewer.get("/v1/admin/devices?state=frozen").await, StatusCode::BAD_REQUEST, "bad_request");

    // One device in detail: caught up on Account/*, live, and seen again as it acks.
    let client_id = devices[0].client_id().unwrap();
    let (status, detail) = viewer.get(&format!("/v1/admin/devices/{client_id}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["live_connections"], 1, "{detail}");
    let first_seen = detail["last_seen_ms"].as_i64().unwrap();
    let partition = eventually(DEADLINE, "the device's cursor recorded", || async {
        let (_, detail) = viewer.get(&format!("/v1/admin/devices/{client_id}")).await;
        let partition = detail["partitions"].as_array()?.iter().find(|p| p["source"] == "Account")?.clone();
        (partition["head"] == partition["cursor"]).then_some(partition)
    })
    .await;
    assert_eq!((partition["lag_changes"].as_u64(), partition["lag_ms"].as_u64()), (Some(0), Some(0)), "{partition}");
    let ingest = server.ingest_client().await;
    let mut n = 1_000;
    eventually(DEADLINE, "last seen advances", || {
        n += 1;
        let (viewer, mut ingest, client_id) = (viewer.clone(), ingest.clone(), client_id.clone());
        async move {
            push(&mut ingest, "Account", "*", vec![record("acc-live", n)], Vec::new()).await.unwrap();
            let (_, detail) = viewer.get(&format!("/v1/admin/devices/{client_id}")).await;
            (detail["last_seen_ms"].as_i64()? > first_seen).then_some(())
        }
    })
    .await;

    // Roles and bad input.
    let viewer_send = viewer.post(&format!("/v1/admin/devices/{client_id}/commands"), json!({"kind": "lock"})).await;
    assert_error(&viewer_send, StatusCode::FORBIDDEN, "forbidden");
    let bad_kind = admin.post(&format!("/v1/admin/devices/{client_id}/commands"), json!({"kind": "explode"})).await;
    assert_error(&bad_kind, StatusCode::BAD_REQUEST, "bad_request");
    let long = admin
        .post(&format!("/v1/admin/devices/{client_id}/commands"), json!({"kind": "lock", "reason": "x".repeat(2000)}))
        .await;
    assert_error(&long, StatusCode::BAD_REQUEST, "bad_request");
    let unknown = admin.post("/v1/admin/devices/nobody/commands", json!({"kind": "lock"})).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_error(&viewer.get("/v1/admin/devices/nobody").await, StatusCode::NOT_FOUND, "not_found");
    let (_, document) = viewer.get("/v1/admin/openapi.json").await;
    assert!(document["paths"]["/v1/admin/devices/{client_id}/commands"]["post"].is_object());
    for device in devices {
        device.stop().await;
    }
    server.stop().await;
}
