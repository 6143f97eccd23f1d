//! CORS on the device listener's HTTP routes (issue 18): a browser app on another origin
//! downloads bulk files and uploads and downloads blobs with its bearer token. Preflights are
//! answered for the allowed origins only, with the headers a resumed download and a resumed
//! upload need; real answers (a 206 of a bulk file, a 401 of a forged token) carry the origin
//! and expose `Content-Range`, `Content-Length` and `ETag`; credentials are never allowed.

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, HeaderMap, ORIGIN, RANGE,
};
use reqwest::{Method, StatusCode};
use syncline_client_sim::bulk::resolve_url;
use syncline_client_sim::{Connection, Incoming};
use syncline_proto::v1::{BulkReady, BulkRequest, ClientFrame, client_frame, server_frame};
use syncline_server::storage::PartitionName;
use syncline_tests::{DEADLINE, TestServer, raw_login, record};

/// The origin the browser app is served from in these tests.
const APP_ORIGIN: &str = "https://app.example.com";

/// The device listener's HTTP base URL.
fn http_base(server: &TestServer) -> String {
    server.url().replace("ws://", "http://").replace(syncline_proto::SYNC_PATH, "")
}

/// Returns a header as text ("" when absent).
fn text(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> String {
    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_ascii_lowercase()
}

/// Sends a preflight for `method` with `headers` from `origin` to `url`.
async fn preflight(url: &str, origin: &str, method: &str, headers: &str) -> (StatusCode, HeaderMap) {
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, url)
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .send()
        .await
        .expect("the device listener answers");
    (response.status(), response.headers().clone())
}

/// Asks for a bulk file of `Account` on a raw session.
async fn bulk_file(connection: &mut Connection) -> BulkReady {
    let request = BulkRequest { request_id: "cors".into(), sources: vec!["Account".into()], min_records: 0 };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::BulkRequest(request)) }).await.expect("sends");
    loop {
        let incoming = tokio::time::timeout(DEADLINE, connection.recv()).await.expect("BulkReady in time");
        match incoming.expect("a frame") {
            Incoming::Frame(frame) => {
                if let Some(server_frame::Msg::BulkReady(ready)) = frame.msg {
                    return ready;
                }
            }
            Incoming::Closed { code, reason } => panic!("closed: {code} {reason}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_answers_let_an_allowed_origin_download_bulk_files_and_blobs() {
    let server = TestServer::start_with(|config| config.device.cors_origins = vec![APP_ORIGIN.into()]).await;
    server.add_user("ann", "ann-pw");
    let records = (0..100).map(|i| record(&format!("acc-{i:03}"), i)).collect();
    server.server.store().apply_batch(&PartitionName::new("Account", "*"), records, Vec::new()).expect("seed");
    let base = http_base(&server);

    // Preflight of a resumed bulk download: allowed for the app's origin, with its headers.
    let bulk_url = format!("{base}/v1/bulk/some-file");
    let (status, headers) = preflight(&bulk_url, APP_ORIGIN, "GET", "authorization,range").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(text(&headers, ACCESS_CONTROL_ALLOW_ORIGIN), APP_ORIGIN);
    let methods = text(&headers, ACCESS_CONTROL_ALLOW_METHODS);
    assert!(["get", "head", "put"].iter().all(|method| methods.contains(method)), "{methods}");
    let allowed = text(&headers, ACCESS_CONTROL_ALLOW_HEADERS);
    for header in ["authorization", "range", "content-type", "content-range"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    assert_eq!(text(&headers, ACCESS_CONTROL_MAX_AGE), "600");
    assert!(headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "never with credentials");

    // Preflight of a blob upload piece.
    let blob_url = format!("{base}{}/{}", syncline_proto::BLOBS_PATH, "0".repeat(64));
    let (status, headers) = preflight(&blob_url, APP_ORIGIN, "PUT", "authorization,content-type,content-range").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(text(&headers, ACCESS_CONTROL_ALLOW_ORIGIN), APP_ORIGIN);

    // Another origin is not allowed: no Access-Control-Allow-Origin, so the browser refuses.
    let (_, headers) = preflight(&bulk_url, "https://evil.example.net", "GET", "authorization").await;
    assert!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{headers:?}");

    // A real resumed download from the app's origin: 206, readable headers exposed.
    let mut connection = raw_login(&server.url(), "ann", "ann-pw").await;
    let file = bulk_file(&mut connection).await.files.remove(0);
    let url = resolve_url(&server.url(), &file.url);
    let http = reqwest::Client::new();
    let response = http
        .get(&url)
        .header(ORIGIN, APP_ORIGIN)
        .header(AUTHORIZATION, format!("Bearer {}", file.token))
        .header(RANGE, "bytes=100-")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    let headers = response.headers().clone();
    assert_eq!(text(&headers, ACCESS_CONTROL_ALLOW_ORIGIN), APP_ORIGIN);
    let exposed = text(&headers, ACCESS_CONTROL_EXPOSE_HEADERS);
    for header in ["content-range", "content-length", "etag", "syncline-sequence", "syncline-checksum", "upload-offset"]
    {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
    assert!(headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    let body = response.bytes().await.expect("a body");
    assert_eq!(body.len() as u64, file.bytes - 100);

    // A forged token's refusal is readable by the page too (its typed error).
    let response =
        http.get(&url).header(ORIGIN, APP_ORIGIN).header(AUTHORIZATION, "Bearer forged").send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(text(response.headers(), ACCESS_CONTROL_ALLOW_ORIGIN), APP_ORIGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_any_origin_by_default_without_credentials() {
    let server = TestServer::start().await;
    let url = format!("{}/v1/bulk/some-file", http_base(&server));
    let (status, headers) = preflight(&url, "http://localhost:5173", "GET", "authorization,range").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(text(&headers, ACCESS_CONTROL_ALLOW_ORIGIN), "*");
    assert!(headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
}
