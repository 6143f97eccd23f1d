//! Connection lifecycle limits: the shared heartbeat sweeper closes silent devices (4408) and
//! keeps answering ones open, and the per-user connection cap refuses the extra session with a
//! typed error (RESOURCE_EXHAUSTED, close 4429) and frees its slot when a session ends.

use futures_util::StreamExt;
use syncline_client_sim::{Connection, Incoming};
use syncline_proto::close_code;
use syncline_proto::v1::{ClientFrame, ErrorCode, Hello, Login, ServerFrame, client_frame, hello, server_frame};
use syncline_tests::{DEADLINE, TestServer, eventually, raw_login};
use tokio_tungstenite::tungstenite::Message;

/// A frame or a close within the test deadline.
async fn next(connection: &mut Connection) -> Incoming {
    tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a frame in time").expect("a frame or a close")
}

async fn expect_welcome(connection: &mut Connection) {
    match next(connection).await {
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(_)) }) => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
}

fn user_sessions(server: &TestServer, user: &str) -> usize {
    server.server.engine.user_sessions.count(user)
}

async fn server_with_short_heartbeats() -> TestServer {
    let server = TestServer::start_with(|config| {
        config.device.heartbeat_secs = 1;
        config.device.idle_timeout_secs = 2;
    })
    .await;
    server.add_user("ann", "ann-pw");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_pings_is_closed_for_idleness() {
    let server = server_with_short_heartbeats().await;
    let mut silent = raw_login(&server.url(), "ann", "ann-pw").await;
    expect_welcome(&mut silent).await;
    // From here on the device reads nothing, so it answers no ping: the server must give up on
    // it by itself.
    eventually(DEADLINE, "the server to drop the silent session", || async {
        (user_sessions(&server, "ann") == 0).then_some(())
    })
    .await;
    // What it finds when it reads again: the pings it ignored, then the idle close.
    match next(&mut silent).await {
        Incoming::Closed { code, .. } => assert_eq!(code, close_code::IDLE_TIMEOUT),
        other => panic!("expected close {}, got {other:?}", close_code::IDLE_TIMEOUT),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_pings_outlives_the_idle_timeout() {
    let server = server_with_short_heartbeats().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url()).await.expect("connects");
    let hello = ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: syncline_proto::PROTOCOL_VERSION,
            credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
            ..Hello::default()
        })),
    };
    let hello = Message::Binary(prost::Message::encode_to_vec(&hello).into());
    futures_util::SinkExt::send(&mut socket, hello).await.expect("sends Hello");
    // Reading answers each ping with a pong (tungstenite does it); nothing else is sent. Three
    // pings a second apart span more than the 2 s idle timeout.
    let mut pings = 0;
    while pings < 3 {
        let message = tokio::time::timeout(DEADLINE, socket.next()).await.expect("a message in time");
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(frame))) => panic!("closed while answering pings: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    assert_eq!(user_sessions(&server, "ann"), 1, "the session is still open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_cap_refuses_the_extra_session_and_frees_slots() {
    let server = TestServer::start_with(|config| config.device.max_connections_per_user = 2).await;
    server.add_user("ann", "ann-pw");
    server.add_user("bob", "bob-pw");
    let url = server.url();
    let mut first = raw_login(&url, "ann", "ann-pw").await;
    expect_welcome(&mut first).await;
    let mut second = raw_login(&url, "ann", "ann-pw").await;
    expect_welcome(&mut second).await;

    let mut third = raw_login(&url, "ann", "ann-pw").await;
    match next(&mut third).await {
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
            assert_eq!(error.code, ErrorCode::ResourceExhausted as i32, "{error:?}");
            assert!(error.fatal);
            assert!(error.message.contains("limit 2"), "{}", error.message);
        }
        other => panic!("expected a RESOURCE_EXHAUSTED error, got {other:?}"),
    }
    match next(&mut third).await {
        Incoming::Closed { code, .. } => assert_eq!(code, close_code::TOO_MANY_CONNECTIONS),
        other => panic!("expected close {}, got {other:?}", close_code::TOO_MANY_CONNECTIONS),
    }
    // The cap is per user: another user is not affected.
    let mut other_user = raw_login(&url, "bob", "bob-pw").await;
    expect_welcome(&mut other_user).await;
    assert_eq!(user_sessions(&server, "ann"), 2, "the refused session holds no slot");

    // A session that ends gives its slot back.
    first.close(close_code::NORMAL, "done").await.unwrap();
    eventually(DEADLINE, "ann's first session to end", || async { (user_sessions(&server, "ann") == 1).then_some(()) })
        .await;
    let mut again = raw_login(&url, "ann", "ann-pw").await;
    expect_welcome(&mut again).await;
    assert_eq!(user_sessions(&server, "ann"), 2);
    drop(second);
    server.stop().await;
}
