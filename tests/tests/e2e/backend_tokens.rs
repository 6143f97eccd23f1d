//! Backend tokens: a device logs in with a JWT its app's backend signed (HS256, shared
//! secret) instead of a Syncline password, gets a normal session, and syncs its user's
//! partition and the custom partitions the token grants. Bad tokens, and backend tokens on a
//! server without a secret, get a typed UNAUTHENTICATED error and close 4001.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use syncline_client_sim::backend_token::unix_now_secs;
use syncline_client_sim::wire::{ConnectOptions, Connection, Incoming};
use syncline_client_sim::{BackendTokenClaims, Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::close_code;
use syncline_proto::v1::{ClientFrame, ErrorCode, Hello, ServerFrame, Welcome, client_frame, hello, server_frame};
use syncline_server::config::{Partitioning, SourceSection};
use syncline_tests::{DEADLINE, TestServer, assert_converges, push, record};

const SECRET: &str = "backend-token-secret-for-tests-0123456789";
const AUDIENCE: &str = "syncline-tests";
/// A custom-partitioned source whose partitions only entitled users see.
const TEAMS: &str = "Team";

async fn server_with_tokens(audience: Option<&str>) -> TestServer {
    TestServer::start_with(|config| {
        config.auth.backend_token_secret = Some(SECRET.into());
        config.auth.backend_token_audience = audience.map(str::to_owned);
        config.sources.insert(TEAMS.into(), SourceSection::new(Partitioning::Custom));
    })
    .await
}

fn token_for(user: &str) -> BackendTokenClaims {
    BackendTokenClaims::for_user(user, Duration::from_secs(300))
}

fn sign(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("signs")
}

fn hello(credentials: hello::Credentials) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: syncline_proto::PROTOCOL_VERSION,
            credentials: Some(credentials),
            client_id: String::new(),
            device: None,
        })),
    }
}

async fn next(connection: &mut Connection) -> Incoming {
    tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a reply in time").expect("a frame or a close")
}

/// Sends a Hello with `credentials` on a new connection and returns the Welcome, or the
/// fatal Error's code and message and the close code that followed it.
async fn say_hello(server: &TestServer, credentials: hello::Credentials) -> Result<Welcome, (i32, String, u16)> {
    let mut connection = Connection::connect(&server.url(), &ConnectOptions::default()).await.expect("connects");
    connection.send(&hello(credentials)).await.expect("sends Hello");
    match next(&mut connection).await {
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }) => Ok(welcome),
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
            assert!(error.fatal, "a refused Hello is fatal: {error:?}");
            let close = match next(&mut connection).await {
                Incoming::Closed { code, .. } => code,
                other => panic!("expected a close after {error:?}, got {other:?}"),
            };
            Err((error.code, error.message, close))
        }
        other => panic!("expected Welcome or Error, got {other:?}"),
    }
}

/// Expects `credentials` to be refused with UNAUTHENTICATED and close 4001; returns the
/// message.
async fn refused(server: &TestServer, credentials: hello::Credentials) -> String {
    match say_hello(server, credentials).await {
        Ok(welcome) => panic!("expected a refusal, got {welcome:?}"),
        Err((code, message, close)) => {
            assert_eq!(code, ErrorCode::Unauthenticated as i32, "{message}");
            assert_eq!(close, close_code::UNAUTHENTICATED, "{message}");
            message
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_token_logs_in_and_syncs_the_users_partition_and_its_entitlements() {
    let server = server_with_tokens(None).await;
    let mut ingest = server.ingest_client().await;
    let contacts: Vec<_> = (0..20).map(|n| record(&format!("c{n}"), n)).collect();
    push(&mut ingest, "Contact", "zoe", contacts, Vec::new()).await.expect("push");
    push(&mut ingest, "Contact", "yann", vec![record("other", 1)], Vec::new()).await.expect("push");
    push(&mut ingest, TEAMS, "t1", vec![record("team-doc", 1)], Vec::new()).await.expect("push");

    // No password exists for "zoe": the token is the only credential.
    let token = token_for("zoe").with_entitlement(TEAMS, "t1").sign(SECRET.as_bytes()).expect("signs");
    let device = Device::start(
        DeviceConfig::new(server.url(), "zoe", "")
            .with_backend_token(token)
            .subscribe(SubscriptionConfig::new("Contact"))
            .subscribe(SubscriptionConfig::new(TEAMS).with_key("t1")),
    );
    assert_converges(&device, &server, "Contact", "zoe", DEADLINE).await;
    assert_converges(&device, &server, TEAMS, "t1", DEADLINE).await;
    assert_eq!(device.state().user_id.as_deref(), Some("zoe"));
    // Live changes arrive too.
    push(&mut ingest, "Contact", "zoe", vec![record("live", 7)], Vec::new()).await.expect("push");
    assert_converges(&device, &server, "Contact", "zoe", DEADLINE).await;
    assert!(device.view("Contact", "yann").is_none(), "another user's partition is not synced");
    device.stop().await;

    // Without the entitlement, the custom partition is forbidden.
    let token = token_for("zoe").sign(SECRET.as_bytes()).expect("signs");
    let welcome = say_hello(&server, hello::Credentials::BackendToken(token)).await.expect("welcome");
    let teams = welcome.sources.iter().find(|source| source.name == TEAMS).expect("the Team source");
    assert!(teams.keys.is_empty(), "no entitlement, no keys: {teams:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_token_from_a_backend_token_login_resumes() {
    let server = server_with_tokens(Some(AUDIENCE)).await;
    let token = token_for("zoe").with_audience(AUDIENCE).sign(SECRET.as_bytes()).expect("signs");
    let first = say_hello(&server, hello::Credentials::BackendToken(token)).await.expect("welcome");
    assert_eq!(first.user_id, "zoe");
    assert!(!first.session_token.is_empty() && !first.client_id.is_empty());
    let resumed = say_hello(&server, hello::Credentials::SessionToken(first.session_token.clone()))
        .await
        .expect("the session token resumes");
    assert_eq!(resumed.user_id, "zoe");
    assert_eq!(resumed.client_id, first.client_id, "the same device");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backend_tokens_are_refused_with_a_typed_error() {
    let server = server_with_tokens(Some(AUDIENCE)).await;
    let now = unix_now_secs();
    let cases = [
        ("expired", sign(&json!({"sub": "zoe", "exp": now - 3600, "aud": AUDIENCE}), SECRET), "expired"),
        (
            "wrong secret",
            sign(
                &json!({"sub": "zoe", "exp": now + 300, "aud": AUDIENCE}),
                "another-secret-of-enough-length-0123456789",
            ),
            "signature",
        ),
        ("wrong audience", sign(&json!({"sub": "zoe", "exp": now + 300, "aud": "someone-else"}), SECRET), "audience"),
        ("no audience", sign(&json!({"sub": "zoe", "exp": now + 300}), SECRET), "\"aud\""),
        ("missing sub", sign(&json!({"exp": now + 300, "aud": AUDIENCE}), SECRET), "\"sub\""),
        ("bad sub", sign(&json!({"sub": "", "exp": now + 300, "aud": AUDIENCE}), SECRET), "subject"),
        ("not a JWT", "not-a-jwt".to_owned(), "well-formed"),
    ];
    for (case, token, says) in cases {
        let message = refused(&server, hello::Credentials::BackendToken(token)).await;
        assert!(message.contains(says), "{case}: {message:?} should mention {says:?}");
    }
    // The server keeps serving good tokens.
    let token = token_for("zoe").with_audience(AUDIENCE).sign(SECRET.as_bytes()).expect("signs");
    say_hello(&server, hello::Credentials::BackendToken(token)).await.expect("welcome");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tokens_are_refused_when_not_configured() {
    let server = TestServer::start().await;
    let token = token_for("zoe").sign(SECRET.as_bytes()).expect("signs");
    let message = refused(&server, hello::Credentials::BackendToken(token)).await;
    assert!(message.contains("backend tokens are not enabled"), "{message}");
    server.stop().await;
}
