//! Connection lifecycle limits: the shared heartbeat sweeper closes silent devices (4408) and
//! keeps answering ones open, closes sockets that never complete a Hello (TIMEOUT, 4408), and
//! the per-user connection cap refuses the extra session with a typed error
//! (RESOURCE_EXHAUSTED, close 4429) and frees its slot when a session ends.

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
    server.server.open_sessions_of(user)
}

async fn server_with_short_heartbeats() -> TestServer {
    let server = TestServer::start_with(|config| {
        config.device.heartbeat_secs = 1;
        config.device.idle_timeout_secs = 2;
        // Far shorter than the tests' spans: a session that said Hello must outlive it.
        config.device.hello_timeout_ms = 500;
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
    // it by itself, for idleness.
    let idle_closes = || syncline_push::events::EVENTS.idle_timeouts.load(std::sync::atomic::Ordering::Relaxed);
    let before = idle_closes();
    eventually(DEADLINE, "the server to drop the silent session", || async {
        (user_sessions(&server, "ann") == 0).then_some(())
    })
    .await;
    assert_eq!(idle_closes(), before + 1, "closed as idle");
    // What it finds when it reads again: the pings it ignored, then the idle close (unless
    // answering those pings already failed on the closed socket).
    match tokio::time::timeout(DEADLINE, silent.recv()).await.expect("an answer in time") {
        Ok(Incoming::Closed { code, .. }) => assert_eq!(code, close_code::IDLE_TIMEOUT),
        Ok(Incoming::Frame(frame)) => panic!("expected the idle close, got {frame:?}"),
        Err(_closed_socket) => {}
    }
    server.stop().await;
}

/// A plain WebSocket (no device library) that has sent ann's Hello.
async fn plain_socket_logged_in_as_ann(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
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
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_pings_outlives_the_idle_timeout() {
    let server = server_with_short_heartbeats().await;
    let mut socket = plain_socket_logged_in_as_ann(&server).await;
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

/// Issue 13: a socket that answers pings but never says Hello is closed at the hello
/// deadline, after a fatal TIMEOUT error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_answers_pings_but_never_says_hello_is_closed_at_the_hello_deadline() {
    const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);
    let server = TestServer::start_with(|config| {
        config.device.heartbeat_secs = 1;
        config.device.idle_timeout_secs = 30;
        config.device.hello_timeout_ms = HELLO_TIMEOUT.as_millis() as u64;
    })
    .await;
    let timeouts = || syncline_push::events::EVENTS.handshake_timeouts.load(std::sync::atomic::Ordering::Relaxed);
    let before = timeouts();
    let opened = tokio::time::Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url()).await.expect("connects");
    // Reading answers pings; the socket sends nothing else.
    let error = read_until(&mut socket, |message| matches!(message, Message::Binary(_))).await;
    let Message::Binary(error) = error else { unreachable!() };
    match prost::Message::decode(error).map(|frame: ServerFrame| frame.msg) {
        Ok(Some(server_frame::Msg::Error(error))) => {
            assert_eq!(error.code, ErrorCode::Timeout as i32, "{error:?}");
            assert!(error.fatal);
            assert!(error.message.contains("300 ms"), "{}", error.message);
        }
        other => panic!("expected a TIMEOUT error, got {other:?}"),
    }
    let close = read_until(&mut socket, |message| matches!(message, Message::Close(_))).await;
    let Message::Close(Some(close)) = close else { panic!("expected a close code, got {close:?}") };
    assert_eq!(u16::from(close.code), close_code::HELLO_TIMEOUT);
    assert!(opened.elapsed() >= HELLO_TIMEOUT, "closed after {:?}, before the deadline", opened.elapsed());
    eventually(DEADLINE, "the handshake timeout to be counted", || async { (timeouts() > before).then_some(()) }).await;
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

/// Reads until a message `want` accepts, failing on the connection's end or the deadline.
async fn read_until<S>(socket: &mut S, mut want: impl FnMut(&Message) -> bool) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    // Bounded: the messages tests wait for come among the first few (pings aside).
    for _ in 0..1000 {
        match tokio::time::timeout(DEADLINE, socket.next()).await.expect("a message in time") {
            Some(Ok(message)) if want(&message) => return message,
            Some(Ok(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    panic!("no wanted message among 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_a_devices_ping_and_close_between_its_frames() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let mut socket = plain_socket_logged_in_as_ann(&server).await;
    let welcome = read_until(&mut socket, |message| matches!(message, Message::Binary(_))).await;
    let Message::Binary(welcome) = welcome else { unreachable!() };
    let welcome: ServerFrame = prost::Message::decode(welcome).expect("a protobuf frame");
    assert!(matches!(welcome.msg, Some(server_frame::Msg::Welcome(_))), "{welcome:?}");

    // Pongs are written by the WebSocket layer into the same ordered output as frames.
    for round in 0..3u8 {
        let payload = bytes::Bytes::from(vec![round; 16]);
        futures_util::SinkExt::send(&mut socket, Message::Ping(payload.clone())).await.expect("sends a ping");
        let pong = read_until(&mut socket, |message| matches!(message, Message::Pong(_))).await;
        assert_eq!(pong, Message::Pong(payload), "the pong echoes its ping");
    }
    // A close from the device is answered with the server's close, and the session ends.
    futures_util::SinkExt::send(&mut socket, Message::Close(None)).await.expect("sends a close");
    let reply = tokio::time::timeout(DEADLINE, socket.next()).await.expect("an answer in time");
    assert!(matches!(reply, Some(Ok(Message::Close(_))) | None), "expected the close reply, got {reply:?}");
    eventually(DEADLINE, "the session to end", || async { (user_sessions(&server, "ann") == 0).then_some(()) }).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_get_their_http_status() {
    let server = TestServer::start_with(|config| config.device.max_connections = 1).await;
    server.add_user("ann", "ann-pw");
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, got a WebSocket"),
    };
    let wrong_path = server.url().replace("/v1/sync", "/v1/elsewhere");
    assert_eq!(status(tokio_tungstenite::connect_async(wrong_path).await), 404);
    let mut first = raw_login(&server.url(), "ann", "ann-pw").await;
    expect_welcome(&mut first).await;
    assert_eq!(status(tokio_tungstenite::connect_async(server.url()).await), 503, "over the connection cap");
    drop(first);
    server.stop().await;
}

/// The device listener serves plain HTTP beside the socket, on the same port: a request for
/// another path gets a JSON 404 (not a failed upgrade), and the socket still works after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_device_port_is_served_beside_the_socket() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let base = server.url().replacen("ws://", "http://", 1).replace(syncline_proto::SYNC_PATH, "");
    let response = reqwest::get(format!("{base}/v1/nothing-here")).await.expect("an HTTP answer");
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["code"], "not_found", "{body}");
    let mut device = raw_login(&server.url(), "ann", "ann-pw").await;
    expect_welcome(&mut device).await;
}
