//! `GET /v1/bulk/{file}`: downloads a bulk file with the bearer token of its BulkReady.
//!
//! Authenticated by the token alone (HMAC-signed, scoped to the file and its user, short
//! lived; see `crate::bulk::tokens`): the device may download from a plain HTTP client
//! without its socket's session. The file streams from disk through tower-http's
//! `ServeFile`, which answers `Range` requests with 206 (a cut download resumes where it
//! stopped), `If-Range`/`If-Modified-Since`, and `HEAD`; the server never holds a file in
//! memory. Refusals carry no byte of any file: 401 (no token, or a forged or expired one),
//! 403 (a token of another file or user), 404 (no such file, or collected).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::admin::ApiError;
use crate::bulk::{BulkError, DOWNLOAD_PATH};
use crate::gateway::GatewayServices;

/// The bulk download routes.
pub(super) fn routes() -> Router<Arc<GatewayServices>> {
    Router::new().route(&format!("{DOWNLOAD_PATH}/{{file}}"), get(download))
}

async fn download(
    State(services): State<Arc<GatewayServices>>,
    Path(file_id): Path<String>,
    request: Request,
) -> Response {
    let token = bearer_token(&request);
    let (file, path) = match services.bulk.authorize(&file_id, token) {
        Ok(found) => found,
        Err(error) => return refusal(&error),
    };
    let served = ServeFile::new(&path).oneshot(request).await;
    match served {
        Ok(response) => {
            let mut response = response.map(axum::body::Body::new);
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            if headers.contains_key(header::CONTENT_TYPE) {
                // The media type of SQLite files, as registered with IANA.
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.sqlite3"));
            }
            if let Ok(checksum) = HeaderValue::from_str(&file.checksum.to_string()) {
                headers.insert("syncline-checksum", checksum);
            }
            if let Ok(sequence) = HeaderValue::from_str(&file.sequence.to_string()) {
                headers.insert("syncline-sequence", sequence);
            }
            response
        }
        Err(error) => ApiError::internal(format!("cannot serve bulk file {file_id}: {error}")).into_response(),
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header.
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// Answers a refused download with its JSON error; a 401 names the scheme to use.
fn refusal(error: &BulkError) -> Response {
    let mut response = ApiError::of_class(error.class(), error.to_string()).into_response();
    if error.class() == crate::error::ErrorClass::Unauthenticated {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
