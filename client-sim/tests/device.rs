//! Drives `Device` and `Connection` over real sockets against a scripted fake server on
//! 127.0.0.1, so the task loop, the wire and TLS are tested without the real server.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use syncline_client_sim::{
    BackoffConfig, ConnectOptions, Connection, Device, DeviceConfig, FrameFormat, Incoming,
    Notification, StopReason, SubscriptionConfig, SyncNotificationStatus, WaitError,
};
use syncline_proto::{
    SUBPROTOCOL,
    checksum::Checksum,
    close_code,
    v1::{
        Changes, ClientFrame, Error as ErrorFrame, ErrorCode, Record, ServerFrame, SourceInfo,
        SyncState, SyncStatus, Value, Welcome, client_frame, hello, server_frame,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    time::{Instant, timeout},
};
use tokio_tungstenite::{
    WebSocketStream, accept_hdr_async,
    tungstenite::{
        Message,
        handshake::server::{Request, Response},
        http::HeaderValue,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

/// Longest wait for any single step; generous for a loaded 2-core CI machine.
const STEP: Duration = Duration::from_secs(10);
const SOURCE: &str = "Account";
const USER: &str = "u1";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A listener that plays the server's side of the device protocol as each test scripts it.
struct FakeServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl FakeServer {
    async fn start() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tls: None,
        }
    }

    /// Starts a TLS server for `localhost`; returns it and the PEM of its self-signed
    /// certificate.
    async fn start_tls() -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let mut server = Self::start().await;
        server.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        (server, certified.cert.pem())
    }

    fn url(&self) -> String {
        let port = self.listener.local_addr().unwrap().port();
        match self.tls {
            Some(_) => format!("wss://localhost:{port}/v1/sync"),
            None => format!("ws://127.0.0.1:{port}/v1/sync"),
        }
    }

    /// Accepts the next device, agreeing to the `syncline.v1` subprotocol it must ask for.
    // The callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
    #[allow(clippy::result_large_err)]
    async fn accept(&self) -> Peer {
        let (tcp, _) = timeout(STEP, self.listener.accept())
            .await
            .expect("a device connects")
            .unwrap();
        let stream: Box<dyn Io> = match &self.tls {
            Some(acceptor) => Box::new(acceptor.accept(tcp).await.unwrap()),
            None => Box::new(tcp),
        };
        let socket = accept_hdr_async(stream, |request: &Request, mut response: Response| {
            let asked = request
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|value| value.to_str().ok());
            assert_eq!(asked, Some(SUBPROTOCOL));
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(response)
        })
        .await
        .unwrap();
        Peer {
            socket,
            json: false,
        }
    }
}

/// The server's end of one device connection.
struct Peer {
    socket: WebSocketStream<Box<dyn Io>>,
    /// Whether the device spoke JSON; the server then answers in JSON.
    json: bool,
}

impl Peer {
    async fn recv(&mut self) -> ClientFrame {
        loop {
            let message = timeout(STEP, self.socket.next())
                .await
                .expect("a client frame in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => return ClientFrame::decode(bytes).unwrap(),
                Some(Ok(Message::Text(text))) => {
                    self.json = true;
                    return serde_json::from_str(text.as_str()).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a client frame, got {other:?}"),
            }
        }
    }

    async fn recv_hello(&mut self) -> (hello::Credentials, String) {
        match self.recv().await.msg {
            Some(client_frame::Msg::Hello(hello)) => (hello.credentials.unwrap(), hello.client_id),
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Returns the next frame that is not an ack (live acks are debounced and may come in
    /// between).
    async fn recv_non_ack(&mut self) -> client_frame::Msg {
        loop {
            match self.recv().await.msg.unwrap() {
                client_frame::Msg::Ack(_) => {}
                other => return other,
            }
        }
    }

    /// Returns the next ack as (cursor, page).
    async fn recv_ack(&mut self) -> (u64, u64) {
        match self.recv().await.msg {
            Some(client_frame::Msg::Ack(ack)) => {
                assert_eq!((ack.source.as_str(), ack.key.as_str()), (SOURCE, USER));
                (ack.cursor, ack.page)
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Returns the close frame the device sent, or `None` when the connection just ended.
    async fn recv_end(&mut self) -> Option<CloseFrame> {
        loop {
            match timeout(STEP, self.socket.next())
                .await
                .expect("the connection ends in time")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(
                    Message::Binary(_) | Message::Text(_) | Message::Ping(_) | Message::Pong(_),
                )) => {}
                Some(Ok(Message::Frame(_))) | Some(Err(_)) | None => return None,
            }
        }
    }

    async fn send(&mut self, msg: server_frame::Msg) {
        let frame = ServerFrame { msg: Some(msg) };
        let message = if self.json {
            Message::text(serde_json::to_string(&frame).unwrap())
        } else {
            Message::binary(frame.encode_to_vec())
        };
        self.socket.send(message).await.unwrap();
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.socket.close(Some(frame)).await;
    }

    async fn welcome(&mut self, token: &str) {
        self.send(server_frame::Msg::Welcome(Welcome {
            client_id: "c1".into(),
            session_token: token.into(),
            user_id: USER.into(),
            sources: vec![SourceInfo {
                name: SOURCE.into(),
                partitioning: "user".into(),
                keys: vec![USER.into()],
            }],
            ..Welcome::default()
        }))
        .await;
    }

    /// Expects a Subscribe to the test partition and returns its cursor.
    async fn recv_subscribe(&mut self) -> u64 {
        match self.recv_non_ack().await {
            client_frame::Msg::Subscribe(subscribe) => {
                assert_eq!(
                    (subscribe.source.as_str(), subscribe.key.as_str()),
                    (SOURCE, USER)
                );
                subscribe.cursor
            }
            other => panic!("expected subscribe, got {other:?}"),
        }
    }

    async fn send_caught_up(&mut self, cursor: u64, records: &[Record]) {
        let mut checksum = Checksum::default();
        for record in records {
            checksum.add(&record.id, record.version);
        }
        self.send(server_frame::Msg::SyncState(SyncState {
            source: SOURCE.into(),
            key: USER.into(),
            status: SyncStatus::CaughtUp as i32,
            cursor,
            total: records.len() as u64,
            checksum: checksum.0,
            error: None,
        }))
        .await;
    }
}

fn record(id: &str, version: u64) -> Record {
    Record {
        id: id.to_owned(),
        fields: [("name".to_owned(), Value::string(format!("{id}@{version}")))].into(),
        version,
    }
}

fn snapshot(page: u64, to: u64, upserts: &[Record], reset: bool, done: bool) -> server_frame::Msg {
    server_frame::Msg::Changes(Changes {
        source: SOURCE.into(),
        key: USER.into(),
        from: 0,
        to,
        upserts: upserts.to_vec(),
        page,
        snapshot: true,
        reset,
        snapshot_done: done,
        ..Changes::default()
    })
}

fn live(from: u64, to: u64, upserts: &[Record], deletes: &[&str]) -> server_frame::Msg {
    server_frame::Msg::Changes(Changes {
        source: SOURCE.into(),
        key: USER.into(),
        from,
        to,
        upserts: upserts.to_vec(),
        deletes: deletes.iter().map(|id| (*id).to_owned()).collect(),
        ..Changes::default()
    })
}

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

async fn next_notification(
    receiver: &mut tokio::sync::mpsc::Receiver<Notification>,
) -> Notification {
    timeout(STEP, receiver.recv())
        .await
        .expect("a notification in time")
        .expect("the device runs")
}

async fn next_status(
    receiver: &mut tokio::sync::mpsc::Receiver<Notification>,
) -> (SyncNotificationStatus, u64, u64) {
    match next_notification(receiver).await {
        Notification::Sync(sync) => (sync.status, sync.processed, sync.cumulative),
        other => panic!("expected a sync notification, got {other:?}"),
    }
}

/// Runs a session from Hello to caught up at cursor 2 holding a and b.
async fn catch_up(peer: &mut Peer) -> Vec<Record> {
    let records = vec![record("a", 1), record("b", 2)];
    peer.welcome("t1").await;
    assert_eq!(peer.recv_subscribe().await, 0);
    peer.send(snapshot(1, 2, &records[..1], true, false)).await;
    peer.send(snapshot(2, 2, &records[1..], false, true)).await;
    assert_eq!(peer.recv_ack().await, (0, 1));
    assert_eq!(peer.recv_ack().await, (2, 2));
    peer.send_caught_up(2, &records).await;
    records
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
    device
        .wait_for(deadline(), |state| state.is_caught_up())
        .await
        .unwrap();
    let view = device.view(SOURCE, USER).unwrap();
    assert_eq!(view.cursor, 2);
    assert_eq!(view.records.values().cloned().collect::<Vec<_>>(), records);
    assert_eq!(device.client_id().as_deref(), Some("c1"));
    assert_eq!(
        next_status(&mut notifications).await,
        (SyncNotificationStatus::InProgress, 1, 1)
    );
    assert_eq!(
        next_status(&mut notifications).await,
        (SyncNotificationStatus::InProgress, 1, 2)
    );
    assert_eq!(
        next_status(&mut notifications).await,
        (SyncNotificationStatus::Ok, 0, 2)
    );
    assert_eq!(
        next_status(&mut notifications).await,
        (SyncNotificationStatus::Complete, 0, 2)
    );

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
    assert_eq!(
        device
            .view(SOURCE, USER)
            .unwrap()
            .records
            .keys()
            .collect::<Vec<_>>(),
        ["b", "c"]
    );

    // Network loss: no close frame reaches the server; the device comes back with its token
    // and client id and resumes from its cursor.
    device.cut();
    assert!(
        peer.recv_end().await.is_none(),
        "a cut sends no close frame"
    );
    let mut peer = server.accept().await;
    let (credentials, client_id) = peer.recv_hello().await;
    assert_eq!(credentials, hello::Credentials::SessionToken("t1".into()));
    assert_eq!(client_id, "c1");
    peer.welcome("t2").await;
    assert_eq!(peer.recv_subscribe().await, 3);
    peer.send(live(4, 4, &[record("d", 4)], &[])).await;
    // Still catching up (no SyncState yet): the push applies all the same.
    device
        .wait_for(deadline(), |state| {
            state.partition(SOURCE, USER).is_some_and(|p| p.cursor == 4)
        })
        .await
        .unwrap();
    peer.send_caught_up(4, &[record("b", 2), record("c", 3), record("d", 4)])
        .await;
    let state = device
        .wait_for(deadline(), |state| state.is_caught_up())
        .await
        .unwrap();
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
    assert!(matches!(
        peer.recv_hello().await.0,
        hello::Credentials::Login(_)
    ));
    peer.welcome("t1").await;
    peer.recv_subscribe().await;
    peer.close(close_code::SERVICE_RESTART, "restarting").await;

    let mut peer = server.accept().await;
    assert_eq!(
        peer.recv_hello().await.0,
        hello::Credentials::SessionToken("t1".into())
    );
    peer.send(server_frame::Msg::Error(ErrorFrame {
        code: ErrorCode::Unauthenticated as i32,
        message: "token expired".into(),
        fatal: true,
        ..ErrorFrame::default()
    }))
    .await;
    peer.close(close_code::UNAUTHENTICATED, "token expired")
        .await;

    let mut peer = server.accept().await;
    assert!(matches!(
        peer.recv_hello().await.0,
        hello::Credentials::Login(_)
    ));
    peer.close(close_code::UNAUTHENTICATED, "bad password")
        .await;

    let error = device.wait_for(deadline(), |_| false).await.unwrap_err();
    assert!(
        matches!(&error, WaitError::Stopped(StopReason::Unauthenticated { reason }) if reason == "bad password"),
        "{error:?}"
    );
    assert!(device.stop().await.is_error());
}

#[tokio::test]
async fn a_locked_device_stops() {
    let server = FakeServer::start().await;
    let device = Device::start(config(server.url()));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    peer.close(close_code::FORBIDDEN, "locked").await;
    let error = device
        .wait_for(deadline(), |state| state.is_caught_up())
        .await
        .unwrap_err();
    assert!(
        matches!(error, WaitError::Stopped(StopReason::Forbidden { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn json_frames_work_both_ways() {
    let server = FakeServer::start().await;
    let device = Device::start(config(server.url()).with_format(FrameFormat::Json));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    assert!(peer.json, "the device sent text frames");
    let records = catch_up(&mut peer).await;
    let state = device
        .wait_for(deadline(), |state| state.is_caught_up())
        .await
        .unwrap();
    assert_eq!(
        state.partition(SOURCE, USER).unwrap().total,
        records.len() as u64
    );
}

#[tokio::test]
async fn wss_trusts_the_given_ca() {
    let (server, ca_pem) = FakeServer::start_tls().await;
    let device = Device::start(config(server.url()).with_ca_cert_pem(ca_pem));
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    catch_up(&mut peer).await;
    device
        .wait_for(deadline(), |state| state.is_caught_up())
        .await
        .unwrap();
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
        });
    }
    assert_eq!(
        seen,
        [
            "InProgress",
            "InProgress",
            "Ok",
            "Complete",
            "+x",
            "+y",
            "+z"
        ]
    );
    device
        .wait_for(deadline(), |state| {
            state.partition(SOURCE, USER).is_some_and(|p| p.cursor == 5)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connection_reports_the_servers_close_code() {
    let server = FakeServer::start().await;
    let url = server.url();
    let client = tokio::spawn(async move {
        let mut connection = Connection::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        assert_eq!(connection.subprotocol(), Some(SUBPROTOCOL));
        connection
            .send_raw(Message::binary(vec![0xff, 0x00, 0x13]))
            .await
            .unwrap();
        connection.recv().await.unwrap()
    });
    let mut peer = server.accept().await;
    let garbage = timeout(STEP, peer.socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(garbage, Message::binary(vec![0xff, 0x00, 0x13]));
    peer.close(close_code::PROTOCOL_ERROR, "undecodable frame")
        .await;
    let incoming = timeout(STEP, client).await.unwrap().unwrap();
    assert_eq!(
        incoming,
        Incoming::Closed {
            code: close_code::PROTOCOL_ERROR,
            reason: "undecodable frame".into()
        }
    );
}
