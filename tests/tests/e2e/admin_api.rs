//! The admin API over real HTTP on a running server (issue 15): credentials and roles, typed
//! JSON errors, pagination and the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::json;
use syncline_server::storage::AdminRole;
use syncline_tests::TestServer;
use syncline_tests::admin::{AdminClient, assert_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_credentials_and_the_api_does() {
    let server = TestServer::start().await;
    let anonymous = AdminClient::new(&server.server, None);
    let (status, body) = anonymous.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = anonymous.get("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")), "{body}");
    assert_error(&anonymous.get("/v1/admin/tokens").await, StatusCode::UNAUTHORIZED, "unauthenticated");
    let forged = AdminClient { token: Some("sla_00_nope".into()), ..anonymous.clone() };
    assert_error(&forged.get("/v1/admin/tokens").await, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_error(&anonymous.get("/v1/admin/nothing-here").await, StatusCode::NOT_FOUND, "not_found");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_and_revoked_by_admins_only() {
    let server = TestServer::start().await;
    let admin = AdminClient::new(&server.server, Some(AdminRole::Admin));
    let viewer = AdminClient::new(&server.server, Some(AdminRole::Viewer));

    let (status, created) = admin.post("/v1/admin/tokens", json!({"name": "grafana", "role": "viewer"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let grafana = AdminClient { token: Some(token), ..admin.clone() };
    let (status, page) = grafana.get("/v1/admin/tokens?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "three tokens, one per page: {page}");
    assert!(!page.to_string().contains("secret"), "no secrets in listings: {page}");

    let viewer_write = viewer.post("/v1/admin/tokens", json!({"name": "x", "role": "admin"})).await;
    assert_error(&viewer_write, StatusCode::FORBIDDEN, "forbidden");
    let malformed = admin.call_raw(Method::POST, "/v1/admin/tokens", "application/json", "{\"name\": ").await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "bad_request");
    let wrong_type = admin.post("/v1/admin/tokens", json!({"name": 7, "role": "admin"})).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "bad_request");
    let bad_role = admin.post("/v1/admin/tokens", json!({"name": "x", "role": "root"})).await;
    assert_error(&bad_role, StatusCode::BAD_REQUEST, "bad_request");
    assert_error(&admin.get("/v1/admin/tokens?limit=0").await, StatusCode::BAD_REQUEST, "bad_request");
    assert_error(&admin.get("/v1/admin/tokens?cursor=%21").await, StatusCode::BAD_REQUEST, "bad_request");

    let (status, _) = admin.call(Method::DELETE, &format!("/v1/admin/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&grafana.get("/v1/admin/tokens").await, StatusCode::UNAUTHORIZED, "unauthenticated");
    let again = admin.call(Method::DELETE, &format!("/v1/admin/tokens/{id}"), None).await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_api() {
    let server = TestServer::start().await;
    let anonymous = AdminClient::new(&server.server, None);
    let (status, document) = anonymous.get("/v1/admin/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."), "{document}");
    assert!(document["paths"]["/v1/admin/tokens"]["post"].is_object(), "{document}");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_https_when_tls_is_configured() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls.cert = Some(cert_path.clone());
        config.tls.key = Some(key_path.clone());
        config.admin.password = Some("console-pw-1".into());
    })
    .await;
    assert!(server.server.admin_url().starts_with("https://"));
    let certificate = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder().add_root_certificate(certificate).build().unwrap();
    let admin = AdminClient { http: http.clone(), ..AdminClient::new(&server.server, Some(AdminRole::Admin)) };
    let (status, _) = admin.get("/v1/admin/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let login = http
        .post(format!("{}/v1/admin/session", server.server.admin_url()))
        .json(&json!({"name": "admin", "password": "console-pw-1"}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "session cookies are Secure over HTTPS: {cookie}");
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", server.server.admin_addr)).send().await;
    assert!(plain.map_or(true, |response| !response.status().is_success()), "no plain HTTP beside TLS");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_unreachable_channel() {
    use syncline_server::config::{Partitioning, SourceSection};
    let dead = format!("http://127.0.0.1:{}", syncline_tests::process::free_port());
    let server = TestServer::start_with(|config| {
        let mut tasks = SourceSection::new(Partitioning::User);
        tasks.channel = Some(dead.clone());
        config.sources.insert("Task".into(), tasks);
    })
    .await;
    let (status, body) = AdminClient::new(&server.server, None).get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["reasons"][0].as_str().unwrap().contains(&dead), "{body}");
    server.server.stop().await.unwrap();
}
