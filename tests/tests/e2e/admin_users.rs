//! Device users through the admin API on a running server (issue 15): a user created over
//! HTTP logs in over the device socket at once; disabling closes their live connections with
//! FORBIDDEN (close 4003) and refuses every kind of Hello until enabled; deleting revokes
//! their session tokens, closes their connections with UNAUTHENTICATED (close 4001) and, with
//! `?purge=true`, deletes their `user` partitions. Also console sessions: cookie, CSRF and
//! failed-login limits.

use reqwest::{Method, StatusCode};
use serde_json::json;
use syncline_client_sim::{ConnectOptions, Connection, Incoming};
use syncline_proto::close_code;
use syncline_proto::v1::{ClientFrame, ErrorCode, Hello, ServerFrame, Welcome, client_frame, hello, server_frame};
use syncline_server::storage::AdminRole;
use syncline_tests::admin::{AdminClient, assert_error, read};
use syncline_tests::{DEADLINE, TestServer, push, raw_login, record, server_view};

async fn next(connection: &mut Connection) -> Incoming {
    tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a frame in time").expect("a frame or a close")
}

/// Returns the Welcome a connection gets, or panics.
async fn welcome(connection: &mut Connection) -> Welcome {
    match next(connection).await {
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }) => welcome,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Expects a fatal Error with `code`, then close `close`.
async fn refused_with(connection: &mut Connection, code: ErrorCode, close: u16) {
    match next(connection).await {
        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
            assert!(error.fatal, "{error:?}");
            assert_eq!(error.code, code as i32, "{error:?}");
        }
        other => panic!("expected a fatal Error, got {other:?}"),
    }
    match next(connection).await {
        Incoming::Closed { code, .. } => assert_eq!(code, close),
        other => panic!("expected close {close}, got {other:?}"),
    }
}

async fn resume(url: &str, token: &str) -> Connection {
    let mut connection = Connection::connect(url, &ConnectOptions::default()).await.expect("connects");
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::SessionToken(token.to_owned())),
        ..Hello::default()
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.expect("sends Hello");
    connection
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_over_http_logs_in_at_once_and_disable_closes_their_connections() {
    let server = TestServer::start().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let url = server.url();
    let mut before = raw_login(&url, "nina", "s3cret-pw").await;
    refused_with(&mut before, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;

    let (status, user) = admin.post("/v1/admin/users", json!({"name": "nina", "password": "s3cret-pw"})).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!((user["name"].as_str(), user["local"].as_bool()), (Some("nina"), Some(true)));
    let mut live = raw_login(&url, "nina", "s3cret-pw").await;
    let token = welcome(&mut live).await.session_token;
    let (_, user) = admin.get("/v1/admin/users/nina").await;
    assert_eq!(user["connected_devices"], 1, "{user}");

    let (status, user) = admin.post("/v1/admin/users/nina/disable", json!({})).await;
    assert_eq!((status, user["disabled"].as_bool()), (StatusCode::OK, Some(true)), "{user}");
    refused_with(&mut live, ErrorCode::Forbidden, close_code::FORBIDDEN).await;
    let mut again = raw_login(&url, "nina", "s3cret-pw").await;
    refused_with(&mut again, ErrorCode::Forbidden, close_code::FORBIDDEN).await;
    let mut resumed = resume(&url, &token).await;
    refused_with(&mut resumed, ErrorCode::Forbidden, close_code::FORBIDDEN).await;
    let (_, page) = admin.get("/v1/admin/users?prefix=ni").await;
    assert_eq!(page["items"][0]["disabled"], true, "{page}");

    let (status, user) = admin.post("/v1/admin/users/nina/enable", json!({})).await;
    assert_eq!((status, user["disabled"].as_bool()), (StatusCode::OK, Some(false)), "{user}");
    let mut resumed = resume(&url, &token).await;
    welcome(&mut resumed).await;
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_tokens_closes_connections_and_purges_on_request() {
    let server = TestServer::start().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let url = server.url();
    server.add_user("omar", "pw-omar");
    server.add_user("pia", "pw-pia");
    let mut ingest = server.ingest_client().await;
    push(&mut ingest, "Contact", "omar", vec![record("c1", 1)], vec![]).await.unwrap();
    push(&mut ingest, "Contact", "pia", vec![record("c1", 1)], vec![]).await.unwrap();
    let mut live = raw_login(&url, "omar", "pw-omar").await;
    let token = welcome(&mut live).await.session_token;

    let (status, _) = admin.call(Method::DELETE, "/v1/admin/users/omar?purge=true", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    refused_with(&mut live, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    let mut resumed = resume(&url, &token).await;
    refused_with(&mut resumed, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    let mut again = raw_login(&url, "omar", "pw-omar").await;
    refused_with(&mut again, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED).await;
    assert_error(&admin.get("/v1/admin/users/omar").await, StatusCode::NOT_FOUND, "not_found");
    assert!(server_view(&server, "Contact", "omar").0.is_empty(), "omar's partition is purged");
    assert_eq!(server_view(&server, "Contact", "pia").0.len(), 1, "pia's partition stays");

    let (status, _) = admin.call(Method::DELETE, "/v1/admin/users/pia", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(server_view(&server, "Contact", "pia").0.len(), 1, "no purge without ?purge=true");
    let missing = admin.call(Method::DELETE, "/v1/admin/users/nobody", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_endpoints_refuse_bad_input_and_viewers_with_typed_errors() {
    let server = TestServer::start().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));
    let anonymous = AdminClient::new(&server.server, None);
    for name in ["ann", "bob", "bobby", "carl"] {
        let (status, _) = admin.post("/v1/admin/users", json!({"name": name, "password": "pw"})).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let duplicate = admin.post("/v1/admin/users", json!({"name": "ann", "password": "pw"})).await;
    assert_error(&duplicate, StatusCode::CONFLICT, "conflict");
    let bad_name = admin.post("/v1/admin/users", json!({"name": "", "password": "pw"})).await;
    assert_error(&bad_name, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let wrong_type = admin.post("/v1/admin/users", json!({"name": "x", "password": 5})).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "bad_request");
    let malformed = admin.call_raw(Method::POST, "/v1/admin/users", "application/json", "[").await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "bad_request");
    let bad_purge = admin.call(Method::DELETE, "/v1/admin/users/ann?purge=maybe", None).await;
    assert_error(&bad_purge, StatusCode::BAD_REQUEST, "bad_request");

    let writes = [
        (Method::POST, "/v1/admin/users", Some(json!({"name": "eve", "password": "pw"}))),
        (Method::PUT, "/v1/admin/users/ann/password", Some(json!({"password": "new"}))),
        (Method::POST, "/v1/admin/users/ann/disable", Some(json!({}))),
        (Method::POST, "/v1/admin/users/ann/enable", Some(json!({}))),
        (Method::DELETE, "/v1/admin/users/ann", None),
    ];
    for (method, path, body) in writes {
        assert_error(&viewer.call(method.clone(), path, body.clone()).await, StatusCode::FORBIDDEN, "forbidden");
        assert_error(&anonymous.call(method, path, body).await, StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    assert_error(&viewer.get("/v1/admin/users/nobody").await, StatusCode::NOT_FOUND, "not_found");
    let unknown = admin.call(Method::PUT, "/v1/admin/users/nobody/password", Some(json!({"password": "x"}))).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");

    let (status, page) = viewer.get("/v1/admin/users?prefix=bob&limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["name"], "bob");
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let (_, page) = viewer.get(&format!("/v1/admin/users?prefix=bob&limit=1&cursor={cursor}")).await;
    assert_eq!(page["items"][0]["name"], "bobby");
    assert!(page["next_cursor"].is_null(), "{page}");

    let (status, _) =
        admin.call(Method::PUT, "/v1/admin/users/ann/password", Some(json!({"password": "new-pw"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut connection = raw_login(&server.url(), "ann", "new-pw").await;
    welcome(&mut connection).await;
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_need_the_csrf_token_to_write_and_failed_logins_are_limited() {
    let server = TestServer::start_with(|config| {
        config.admin.password = Some("console-pw-1".into());
        config.auth.max_failed_logins_per_user = 3;
    })
    .await;
    let base = server.server.admin_url();
    let http = reqwest::Client::new();
    let login = |password: &str| {
        http.post(format!("{base}/v1/admin/session")).json(&json!({"name": "admin", "password": password})).send()
    };
    let response = login("console-pw-1").await.unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();

    let (status, me) =
        read(http.get(format!("{base}/v1/admin/session")).header("cookie", &session).send().await.unwrap()).await;
    assert_eq!((status, me["role"].as_str()), (StatusCode::OK, Some("admin")));
    let create = |csrf: Option<&str>| {
        let mut request = http
            .post(format!("{base}/v1/admin/tokens"))
            .header("cookie", &session)
            .json(&json!({"name": "from-console", "role": "viewer"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    assert_error(&read(create(None).await.unwrap()).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&read(create(Some("wrong")).await.unwrap()).await, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(read(create(Some(&csrf)).await.unwrap()).await.0, StatusCode::CREATED);

    let logout =
        http.delete(format!("{base}/v1/admin/session")).header("cookie", &session).header("x-csrf-token", &csrf);
    assert_eq!(logout.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let after =
        read(http.get(format!("{base}/v1/admin/tokens")).header("cookie", &session).send().await.unwrap()).await;
    assert_error(&after, StatusCode::UNAUTHORIZED, "unauthenticated");

    for _ in 0..3 {
        assert_error(&read(login("wrong-password").await.unwrap()).await, StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let blocked = read(login("console-pw-1").await.unwrap()).await;
    assert_error(&blocked, StatusCode::TOO_MANY_REQUESTS, "resource_exhausted");
    server.server.stop().await.unwrap();
}
