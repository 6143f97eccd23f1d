//! Drives `Device` and `Connection` over real sockets against a scripted fake server on
//! 127.0.0.1, so the task loop, the wire and TLS are tested without the real server.

use std::time::Duration;

use futures_util::StreamExt;
use syncline_client_sim::fake_server::{FakeServer, SOURCE, STEP, USER, catch_up, live, record};
use syncline_client_sim::{
    BackoffConfig, ConnectOptions, Connection, Device, DeviceConfig, DeviceState, FrameFormat, Incoming, Notification,
    StopReason, SubscriptionConfig, SyncNotificationStatus, WaitError,
};
use syncline_proto::{
    SUBPROTOCOL, close_code,
    v1::{Error as ErrorFrame, ErrorCode, hello, server_frame},
};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

fn config(url: String) -> DeviceConfig {
    let mut config = DeviceConfig::new(url, "alice", "secret")
        .subscribe(SubscriptionConfig::new(SOURCE).with_window(4))
        .with_notifications(64);
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        healthy_after: Duration::from_secs(1),
    };
    config.live_ack.interval = Duration::from_millis(20);
    config.seed = Some(1);
    config
}

fn deadline() -> Instant {
    Instant::now() + STEP
}

async fn next_notification(receiver: &mut tokio::sync::mpsc::Receiver<Notification>) -> Notification {
    timeout(STEP, receiver.recv()).await.expect("a notification in time").expect("the device runs")
}

async fn next_status(receiver: &mut tokio::sync::mpsc::Receiver<Notification>) -> (SyncNotificationStatus, u64, u64) {
    match next_notification(receiver).await {
        Notification::Sync(sync) => (sync.status, sync.processed, sync.cumulative),
        other => panic!("expected a sync notification, got {other:?}"),
    }
}

#[tokio::test]
async fn a_device_syncs_takes_live_changes_and_resumes_after_a_cut() {
    let server = FakeServer::start().await;
    let mut device = Device::start(config(server.url()));
    let mut notifications = device.take_notifications().unwrap();

    let mut peer = server.accept().await;
    let (credentials, client_id) = peer.recv_hello().await;
    assert!(matches!(credentials, hello::Credentials::Login(login) if login.username == "alice"));
    assert_eq!(client_id, "");
    let records = catch_up(&mut peer).await;
    device.wait_for(deadline(), |state| state.is_caught_up()).await.unwrap();
    let view = device.view(SOURCE, USER).unwrap();
    assert_eq!(view.cursor, 2);
    assert_eq!(view.records.values().cloned().collect::<Vec<_>>(), records);
    assert_eq!(device.client_id().as_deref(), Some("c1"));
    assert_eq!(next_status(&mut notifications).await, (SyncNotificationStatus::InProgress, 1, 1));
    assert_eq!(next_status(&mut notifications).await, (SyncNotificationStatus::InProgress, 1, 2));
    assert_eq!(next_status(&mut notifications).await, (SyncNotificationStatus::Ok, 0, 2));
    assert_eq!(next_status(&mut notifications).await, (SyncNotificationStatus::Complete, 0, 2));

    // A live push: applied, notified, and acked after the debounce interval.
    peer.send(live(3, 3, &[record("c", 3)], &["a"])).await;
    match next_notification(&mut notifications).await {
        Notification::Changed(changed) => {
            assert_eq!(changed.deletes, ["a"]);
            assert_eq!(changed.upserts, [record("c", 3)]);
        }
        other => panic!("expected a change notification, got {other:?}"),
    }
    assert_eq!(peer.recv_ack().await, (3, 0));
    assert_eq!(device.view(SOURCE, USER).unwrap().records.keys().collect::<Vec<_>>(), ["b", "c"]);

    // Network loss: no close frame reaches the server; the device comes back with its token
    // and client id and resumes from its cursor.
    device.cut();
    assert!(peer.recv_end().await.is_none(), "a cut sends no close frame");
    let mut peer = server.accept().await;
    let (credentials, client_id) = peer.recv_hello().await;
    assert_eq!(credentials, hello::Credentials::SessionToken("t1".into()));
    assert_eq!(client_id, "c1");
    peer.welcome("t2").await;
    assert_eq!(peer.recv_subscribe().await, 3);
    peer.send(live(4, 4, &[record("d", 4)], &[])).await;
    // Still catching up (no SyncState yet): the push applies all the same.
    device.wait_for(deadline(), |state| state.partition(SOURCE, USER).is_some_and(|p| p.cursor == 4)).await.unwrap();
    peer.send_caught_up(4, &[record("b", 2), record("c", 3), record("d", 4)]).await;
    let state = device.wait_for(deadline(), |state| state.is_caught_up()).await.unwrap();
    assert_eq!(state.stats.reconnects, 1);
    assert_eq!(state.stats.checksum_mismatches, 0);
    assert_eq!(state.stats.partitions_seen.len(), 1);

    // Stopping closes with 1000.
    assert_eq!(device.stop().await, StopReason::Requested);
    let close = peer.recv_end().await.expect("a close frame");
    assert_eq!(u16::from(close.code), close_code::NORMAL);
}

#[tokio::test]
async fn a_refused_token_falls_back_to_the_password_and_a_refused_password_stops() {
    let server = FakeServer::start().await;
    let device = Device::start(config(server.url()));

    let mut peer = server.accept().await;
    assert!(matches!(peer.recv_hello().await.0, hello::Credentials::Login(_)));
    peer.welcome("t1").await;
    peer.recv_subscribe().await;
    peer.close(close_code::SERVICE_RESTART, "restarting").await;

    let mut peer = server.accept().await;
    assert_eq!(peer.recv_hello().await.0, hello::Credentials::SessionToken("t1".into()));
    peer.send(server_frame::Msg::Error(ErrorFrame {
        code: ErrorCode::Unauthenticated as i32,
        message: "token expired".into(),
        fatal: true,
        ..ErrorFrame::default()
    }))
    .await;
    peer.close(close_code::UNAUTHENTICATED, "token expired").await;

    let mut peer = server.accept().await;
    assert!(matches!(peer.recv_hello().await.0, hello::Credentials::Login(_)));
    peer.close(close_code::UNAUTHENTICATED, "bad password").await;

    let error = device.wait_for(deadline(), |_| false).await.unwrap_err();
    assert!(
        matches!(&error, WaitError::Stopped(StopReason::Unauthenticated { reason }) if reason == "bad password"),
        "{error:?}"
    );
    assert!(device.stop().await.is_error());
}

#[tokio::test]
async fn a_locked_device_signs_out_until_the_app_logs_in_again() {
    let server = FakeServer::start().await;
    let device = Device::start(config(server.url()));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    peer.close(close_code::FORBIDDEN, "locked").await;
    let state = device.wait_for(deadline(), DeviceState::is_locked).await.unwrap();
    assert!(matches!(state.stop_reason(), Some(StopReason::Forbidden { .. })), "{state:?}");
    // It connects again only when the app logs in, with the password.
    device.login("alice", "new-secret").unwrap();
    let mut peer = server.accept().await;
    let (credentials, _) = peer.recv_hello().await;
    assert!(
        matches!(&credentials, hello::Credentials::Login(login) if login.password == "new-secret"),
        "{credentials:?}"
    );
    assert_eq!(device.stop().await, StopReason::Requested);
}

#[tokio::test]
async fn json_frames_work_both_ways() {
    let server = FakeServer::start().await;
    let device = Device::start(config(server.url()).with_format(FrameFormat::Json));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    assert!(peer.json, "the device sent text frames");
    let records = catch_up(&mut peer).await;
    let state = device.wait_for(deadline(), |state| state.is_caught_up()).await.unwrap();
    assert_eq!(state.partition(SOURCE, USER).unwrap().total, records.len() as u64);
}

#[tokio::test]
async fn wss_trusts_the_given_ca() {
    let (server, ca_pem) = FakeServer::start_tls().await;
    let device = Device::start(config(server.url()).with_ca_cert_pem(ca_pem));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    catch_up(&mut peer).await;
    device.wait_for(deadline(), |state| state.is_caught_up()).await.unwrap();
}

#[tokio::test]
async fn a_slow_app_loses_no_notification() {
    let server = FakeServer::start().await;
    let mut device = Device::start(config(server.url()).with_notifications(1));
    let mut notifications = device.take_notifications().unwrap();
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    // The app reads nothing while the catch-up and three live pushes are sent: the device
    // waits for it instead of dropping anything.
    catch_up(&mut peer).await;
    for (seq, id) in [(3, "x"), (4, "y"), (5, "z")] {
        peer.send(live(seq, seq, &[record(id, seq)], &[])).await;
    }
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(match next_notification(&mut notifications).await {
            Notification::Sync(sync) => format!("{:?}", sync.status),
            Notification::Changed(changed) => format!("+{}", changed.upserts[0].id),
            Notification::Mutation(mutation) => panic!("no mutation was made: {mutation:?}"),
            Notification::Bulk(bulk) => panic!("no bulk sync was asked for: {bulk:?}"),
        });
    }
    assert_eq!(seen, ["InProgress", "InProgress", "Ok", "Complete", "+x", "+y", "+z"]);
    device.wait_for(deadline(), |state| state.partition(SOURCE, USER).is_some_and(|p| p.cursor == 5)).await.unwrap();
}

#[tokio::test]
async fn a_connection_reports_the_servers_close_code() {
    let server = FakeServer::start().await;
    let url = server.url();
    let client = tokio::spawn(async move {
        let mut connection = Connection::connect(&url, &ConnectOptions::default()).await.unwrap();
        assert_eq!(connection.subprotocol(), Some(SUBPROTOCOL));
        connection.send_raw(Message::binary(vec![0xff, 0x00, 0x13])).await.unwrap();
        connection.recv().await.unwrap()
    });
    let mut peer = server.accept().await;
    let garbage = timeout(STEP, peer.socket.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(garbage, Message::binary(vec![0xff, 0x00, 0x13]));
    peer.close(close_code::PROTOCOL_ERROR, "undecodable frame").await;
    let incoming = timeout(STEP, client).await.unwrap().unwrap();
    assert_eq!(incoming, Incoming::Closed { code: close_code::PROTOCOL_ERROR, reason: "undecodable frame".into() });
}
