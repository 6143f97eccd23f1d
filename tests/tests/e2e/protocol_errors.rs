//! Bad input from devices: each case gets a typed `Error` frame and/or a documented close
//! code, nothing panics, and the server keeps serving a well-behaved device throughout.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use syncline_client_sim::wire::{ConnectOptions, Connection, FrameFormat, Incoming};
use syncline_proto::close_code;
use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{
    ClientFrame, ErrorCode, Hello, Login, ServerFrame, Subscribe, SyncStatus, client_frame, hello, server_frame,
};
use syncline_tests::{TestServer, push, record};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

const STEP: Duration = Duration::from_secs(30);

async fn connect(server: &TestServer, format: FrameFormat) -> Connection {
    let options = ConnectOptions { format, ..ConnectOptions::default() };
    Connection::connect(&server.url(), &options).await.expect("connects")
}

fn hello_login(user: &str, password: &str) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: syncline_proto::PROTOCOL_VERSION,
            credentials: Some(hello::Credentials::Login(Login { username: user.into(), password: password.into() })),
            client_id: String::new(),
            device: None,
        })),
    }
}

fn hello_token(token: &str) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: syncline_proto::PROTOCOL_VERSION,
            credentials: Some(hello::Credentials::SessionToken(token.into())),
            client_id: String::new(),
            device: None,
        })),
    }
}

fn subscribe(source: &str, key: &str, cursor: u64) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Subscribe(Subscribe {
            source: source.into(),
            key: key.into(),
            cursor,
            page_size: 100,
            window: 4,
        })),
    }
}

async fn next(connection: &mut Connection) -> Incoming {
    tokio::time::timeout(STEP, connection.recv()).await.expect("a reply in time").expect("a frame or a close")
}

async fn next_frame(connection: &mut Connection) -> server_frame::Msg {
    match next(connection).await {
        Incoming::Frame(ServerFrame { msg: Some(msg) }) => msg,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Expects an Error frame with `code` and `fatal`, and returns its message.
async fn expect_error(connection: &mut Connection, code: ErrorCode, fatal: bool) -> String {
    match next_frame(connection).await {
        server_frame::Msg::Error(error) => {
            assert_eq!(error.code, code as i32, "error code of {error:?}");
            assert_eq!(error.fatal, fatal, "fatal flag of {error:?}");
            error.message
        }
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
}

async fn expect_close(connection: &mut Connection, expected: u16) {
    match next(connection).await {
        Incoming::Closed { code, .. } => assert_eq!(code, expected),
        other => panic!("expected close {expected}, got {other:?}"),
    }
}

async fn welcome(connection: &mut Connection, user: &str, password: &str) -> syncline_proto::v1::Welcome {
    connection.send(&hello_login(user, password)).await.unwrap();
    match next_frame(connection).await {
        server_frame::Msg::Welcome(welcome) => welcome,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A device that stays subscribed to the app partition through all the abuse and must keep
/// receiving live changes.
async fn bystander(server: &TestServer) -> Connection {
    let mut connection = connect(server, FrameFormat::Binary).await;
    welcome(&mut connection, "ann", "ann-pw").await;
    connection.send(&subscribe("Account", "", 0)).await.unwrap();
    loop {
        match next_frame(&mut connection).await {
            server_frame::Msg::SyncState(state) if state.status == SyncStatus::CaughtUp as i32 => return connection,
            server_frame::Msg::Changes(changes) => {
                let ack = syncline_proto::v1::Ack {
                    source: changes.source,
                    key: changes.key,
                    cursor: changes.to,
                    page: changes.page,
                };
                connection.send(&ClientFrame { msg: Some(client_frame::Msg::Ack(ack)) }).await.unwrap();
            }
            _ => {}
        }
    }
}

/// A server abused by one test: users ann and bob, a record in the app partition, and a
/// bystander device subscribed to it, which must keep being served through the abuse.
struct Abused {
    server: TestServer,
    ingest: IngestClient<Channel>,
    bystander: Connection,
}

impl Abused {
    /// Starts the server (frames up to 64 KiB) and subscribes the bystander.
    async fn start() -> Self {
        let server = TestServer::start_with(|config| config.device.max_frame_bytes = 64 * 1024).await;
        server.add_user("ann", "ann-pw");
        server.add_user("bob", "bob-pw");
        let mut ingest = server.ingest_client().await;
        push(&mut ingest, "Account", "", vec![record("a1", 1)], vec![]).await.unwrap();
        let bystander = bystander(&server).await;
        Self { server, ingest, bystander }
    }

    /// Checks that the bystander kept its subscription through the abuse (a new change
    /// reaches it live), then stops the server.
    async fn assert_bystander_served_and_stop(mut self) {
        push(&mut self.ingest, "Account", "", vec![record("a2", 2)], vec![]).await.unwrap();
        loop {
            if let server_frame::Msg::Changes(changes) = next_frame(&mut self.bystander).await {
                assert_eq!(changes.page, 0, "a live push");
                assert_eq!(changes.upserts[0].id, "a2");
                break;
            }
        }
        self.server.stop().await;
    }
}

/// Sends `frame` on a new connection and expects a fatal Error with `code`, then the close
/// code `close`; returns the error's message.
async fn expect_refused(server: &TestServer, frame: &ClientFrame, code: ErrorCode, close: u16) -> String {
    let mut c = connect(server, FrameFormat::Binary).await;
    c.send(frame).await.unwrap();
    let message = expect_error(&mut c, code, true).await;
    expect_close(&mut c, close).await;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_hello_first_is_a_fatal_protocol_error() {
    let abused = Abused::start().await;
    let server = &abused.server;

    // A frame before Hello.
    expect_refused(server, &subscribe("Account", "", 0), ErrorCode::Unauthenticated, close_code::PROTOCOL_ERROR).await;

    // Malformed protobuf before Hello.
    let mut c = connect(server, FrameFormat::Binary).await;
    c.send_raw(Message::Binary(Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff]))).await.unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, true).await;
    expect_close(&mut c, close_code::PROTOCOL_ERROR).await;

    // Text garbage before Hello.
    let mut c = connect(server, FrameFormat::Json).await;
    c.send_raw(Message::Text("{not json".into())).await.unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, true).await;
    expect_close(&mut c, close_code::PROTOCOL_ERROR).await;

    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_are_refused_alike() {
    let abused = Abused::start().await;
    let server = &abused.server;

    // Wrong password.
    let wrong = hello_login("ann", "wrong");
    expect_refused(server, &wrong, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;

    // Unknown user looks the same as a wrong password.
    let unknown = hello_login("nobody", "x");
    let message = expect_refused(server, &unknown, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    assert_eq!(message, "wrong username or password");

    abused.assert_bystander_served_and_stop().await;
}

/// Logs ann in on a new connection and returns her Welcome (client id and session token).
async fn ann_session(server: &TestServer) -> syncline_proto::v1::Welcome {
    let mut c = connect(server, FrameFormat::Binary).await;
    welcome(&mut c, "ann", "ann-pw").await
}

/// Resumes the session of `real` with its token on a new connection, and checks that it names
/// the same device.
async fn resume(server: &TestServer, real: &syncline_proto::v1::Welcome) -> Connection {
    let mut c = connect(server, FrameFormat::Binary).await;
    c.send(&hello_token(&real.session_token)).await.unwrap();
    match next_frame(&mut c).await {
        server_frame::Msg::Welcome(again) => assert_eq!(again.client_id, real.client_id),
        other => panic!("expected Welcome, got {other:?}"),
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_session_tokens_are_refused_and_the_real_one_resumes() {
    let abused = Abused::start().await;
    let server = &abused.server;
    let real = ann_session(server).await;

    // Forged session tokens: garbage, and a real token with its signature altered.
    let (claims, signature) = real.session_token.split_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{claims}.{flipped}{}", &signature[1..]);
    for token in ["garbage", "a.b", forged.as_str()] {
        expect_refused(server, &hello_token(token), ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    }

    // An expired token.
    let identity = syncline_server::auth::Identity {
        user_id: "ann".into(),
        client_id: real.client_id.clone(),
        ..Default::default()
    };
    let expired = server.server.expired_session_token(&identity, Duration::from_secs(60));
    let message =
        expect_refused(server, &hello_token(&expired), ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    assert!(message.contains("expired"), "{message}");

    // The real token still works, and names the same device.
    resume(server, &real).await;

    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_device_tokens() {
    let abused = Abused::start().await;
    let server = &abused.server;
    let real = ann_session(server).await;
    let mut c = resume(server, &real).await;

    // Logout revokes the device's tokens: the token that worked a moment ago is refused.
    c.send(&ClientFrame { msg: Some(client_frame::Msg::Logout(syncline_proto::v1::Logout {})) }).await.unwrap();
    expect_close(&mut c, close_code::NORMAL).await;
    let message = expect_refused(
        server,
        &hello_token(&real.session_token),
        ErrorCode::Unauthenticated,
        close_code::UNAUTHENTICATED,
    )
    .await;
    assert!(message.contains("revoked"), "{message}");

    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_protocol_version_is_told_to_upgrade() {
    let abused = Abused::start().await;
    let mut hello = hello_login("ann", "ann-pw");
    if let Some(client_frame::Msg::Hello(h)) = &mut hello.msg {
        h.protocol_version = 99;
    }
    expect_refused(&abused.server, &hello, ErrorCode::UnsupportedVersion, close_code::UPGRADE_REQUIRED).await;
    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hello_bad_frames_and_subscriptions_are_not_fatal() {
    let abused = Abused::start().await;
    let mut c = connect(&abused.server, FrameFormat::Binary).await;
    welcome(&mut c, "bob", "bob-pw").await;
    c.send_raw(Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff]))).await.unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, false).await;
    c.send_raw(Message::Text("hello?".into())).await.unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, false).await;
    c.send(&subscribe("Contact", "ann", 0)).await.unwrap();
    expect_error(&mut c, ErrorCode::Forbidden, false).await;
    c.send(&subscribe("Nope", "", 0)).await.unwrap();
    expect_error(&mut c, ErrorCode::UnknownSource, false).await;
    c.send(&subscribe("Account", "not-star", 0)).await.unwrap();
    expect_error(&mut c, ErrorCode::Forbidden, false).await;
    c.send(&hello_login("bob", "bob-pw")).await.unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, false).await;
    // ...and the same connection still syncs.
    c.send(&subscribe("Contact", "", 0)).await.unwrap();
    match next_frame(&mut c).await {
        server_frame::Msg::Changes(changes) => {
            assert!(changes.snapshot && changes.reset && changes.snapshot_done);
            assert_eq!(changes.key, "bob");
        }
        other => panic!("expected a snapshot page, got {other:?}"),
    }
    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_with_message_too_big() {
    let abused = Abused::start().await;
    let mut c = connect(&abused.server, FrameFormat::Binary).await;
    welcome(&mut c, "bob", "bob-pw").await;
    let big = ClientFrame {
        msg: Some(client_frame::Msg::Subscribe(Subscribe { source: "x".repeat(100 * 1024), ..Subscribe::default() })),
    };
    c.send_raw(Message::Binary(Bytes::from(big.encode_to_vec()))).await.unwrap();
    expect_close(&mut c, close_code::MESSAGE_TOO_BIG).await;
    abused.assert_bystander_served_and_stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_text_frames_are_answered_in_json() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    push(&mut ingest, "Account", "*", vec![record("a1", 1), record("a2", 2)], vec![]).await.unwrap();

    // Speak the protocol as a browser would: hand-written canonical JSON text frames.
    let mut c = connect(&server, FrameFormat::Json).await;
    let hello = r#"{"hello":{"protocolVersion":1,"login":{"username":"ann","password":"ann-pw"}}}"#;
    c.send_raw(Message::Text(hello.into())).await.unwrap();
    match next_frame(&mut c).await {
        server_frame::Msg::Welcome(welcome) => assert_eq!(welcome.user_id, "ann"),
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(c.format(), FrameFormat::Json);
    let subscribe = r#"{"subscribe":{"source":"Account","cursor":"0","pageSize":10,"window":2}}"#;
    c.send_raw(Message::Text(subscribe.into())).await.unwrap();
    match next_frame(&mut c).await {
        server_frame::Msg::Changes(changes) => {
            assert_eq!(changes.upserts.len(), 2);
            assert!(changes.upserts[0].fields.contains_key("ratio"));
        }
        other => panic!("expected Changes, got {other:?}"),
    }
    server.stop().await;
}

/// Opens a plain tokio-tungstenite client (no device library), which, as every compliant
/// client, fails the connection on a close frame longer than RFC 6455 allows.
async fn plain_socket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(server.url()).await.expect("connects").0
}

/// Reads a plain socket until the server's close frame, within the step deadline; returns
/// the data messages before it and the close code. A transport error (1006 for the app)
/// fails the test.
async fn plain_read_to_close(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> (Vec<Message>, u16) {
    use futures_util::StreamExt as _;
    let mut data = Vec::new();
    // Bounded: a fatal error and the close, plus a few pings at most.
    for _ in 0..32 {
        match tokio::time::timeout(STEP, socket.next()).await.expect("the server answers in time") {
            Some(Ok(Message::Close(Some(frame)))) => return (data, u16::from(frame.code)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => data.push(message),
            other => panic!("expected a close frame, the connection failed instead: {other:?}"),
        }
    }
    panic!("no close frame among 32 messages");
}

/// Issue 13: a Hello whose username is not UTF-8 gets an error text longer than a close frame
/// can carry; the close reason is cut to fit, so a compliant client sees 4400, not 1006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_a_username_that_is_not_utf8_gets_the_full_error_and_a_valid_close() {
    let server = TestServer::start().await;
    let mut bytes = hello_login("@@@@", "pw").encode_to_vec();
    let at = bytes.windows(4).position(|window| window == b"@@@@").expect("the username is in the frame");
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    let mut socket = plain_socket(&server).await;
    futures_util::SinkExt::send(&mut socket, Message::Binary(bytes.into())).await.expect("sends the Hello");
    let (data, code) = plain_read_to_close(&mut socket).await;
    assert_eq!(code, close_code::PROTOCOL_ERROR);
    let [Message::Binary(error)] = &data[..] else { panic!("expected one Error frame before the close: {data:?}") };
    match ServerFrame::decode(error.as_ref()).expect("a ServerFrame").msg {
        Some(server_frame::Msg::Error(error)) => {
            assert_eq!(error.code, ErrorCode::BadRequest as i32);
            assert!(error.fatal);
            assert!(error.message.contains("UTF-8"), "{}", error.message);
            assert!(error.message.len() > close_code::MAX_REASON_BYTES, "the full text: {}", error.message);
        }
        other => panic!("expected Error, got {other:?}"),
    }
    server.stop().await;
}

/// Issue 13: each way a session fails to start has its documented close code (see the table
/// in device.proto), after a fatal Error frame with its ErrorCode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_start_failures_close_with_their_documented_codes() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let with_version = |version: u32| {
        let mut hello = hello_login("ann", "ann-pw");
        if let Some(client_frame::Msg::Hello(h)) = &mut hello.msg {
            h.protocol_version = version;
        }
        hello
    };
    let cases = [
        ("a Subscribe first", subscribe("Account", "", 0), ErrorCode::Unauthenticated, close_code::PROTOCOL_ERROR),
        (
            "a Logout first",
            ClientFrame { msg: Some(client_frame::Msg::Logout(syncline_proto::v1::Logout {})) },
            ErrorCode::Unauthenticated,
            close_code::PROTOCOL_ERROR,
        ),
        ("protocol version 0", with_version(0), ErrorCode::UnsupportedVersion, close_code::UPGRADE_REQUIRED),
        ("protocol version 2", with_version(2), ErrorCode::UnsupportedVersion, close_code::UPGRADE_REQUIRED),
        ("a wrong password", hello_login("ann", "wrong"), ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED),
    ];
    for (what, first, error_code, close) in cases {
        for format in [FrameFormat::Binary, FrameFormat::Json] {
            let mut c = connect(&server, format).await;
            c.send(&first).await.unwrap();
            let message = expect_error(&mut c, error_code, true).await;
            match next(&mut c).await {
                Incoming::Closed { code, .. } => assert_eq!(code, close, "{what} ({format:?}): {message}"),
                other => panic!("{what} ({format:?}): expected close {close}, got {other:?}"),
            }
        }
    }
    server.stop().await;
}
