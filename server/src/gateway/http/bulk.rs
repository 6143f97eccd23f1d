//! `GET /v1/bulk/{file}`: downloads a bulk file with the bearer token of its BulkReady.
//!
//! Authenticated by the token alone (HMAC-signed, scoped to the file and its user, short
//! lived; see `crate::bulk::tokens`): the device may download from a plain HTTP client
//! without its socket's session. The file streams from disk through tower-http's
//! `ServeFile`, which answers `Range` requests with 206 (a cut download resumes where it
//! stopped), `If-Range`/`If-Modified-Since`, and `HEAD`; the server never holds a file in
//! memory. Refusals carry no byte of any file: 401 (no token, or a forged or expired one),
//! 403 (a token of another file or user), 404 (no such file, or collected).
//!
//! With `[blob.s3]`, a file not on this node's disk (another node wrote it) streams from the
//! bucket after the same checks, with `Range` passed through: a device whose node died
//! mid-download resumes on any other.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::admin::ApiError;
use crate::bulk::{BulkError, BulkFile, DOWNLOAD_PATH, FileLocation, SharedFiles};
use crate::error::ErrorClass;
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
    let token = bearer_token(&request).map(str::to_owned);
    let (file, location) = match services.bulk.locate(&file_id, token.as_deref()).await {
        Ok(found) => found,
        Err(error) => return refusal(&error),
    };
    let served = match location {
        FileLocation::Local(path) => {
            ServeFile::new(&path).oneshot(request).await.map(|response| response.map(Body::new))
        }
        FileLocation::Shared(shared) => {
            let range = request.headers().get(header::RANGE).map(|range| range.to_str().map(str::to_owned));
            let head = request.method() == Method::HEAD;
            Ok(serve_shared(&shared, &file, range, head).await)
        }
    };
    match served {
        Ok(mut response) => {
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

/// Serves a file another node wrote from the bucket: the whole file, or the one range of
/// `Range: bytes=first-[last]` (206 with `Content-Range`; 416 past the end), streamed as
/// the bucket sends it. A file never changes under its id, so `If-Range` always holds.
async fn serve_shared(
    shared: &SharedFiles,
    file: &BulkFile,
    range: Option<Result<String, header::ToStrError>>,
    head: bool,
) -> Response {
    let size = file.bytes;
    let range = match range {
        None => None,
        Some(Ok(range)) => match super::blobs::parse_range(&range, size) {
            Ok(range) => Some(range),
            Err(error) => return error.into_response(),
        },
        Some(Err(_)) => return ApiError::bad_request("the Range header is not text").into_response(),
    };
    let (start, len) = range.unwrap_or((0, size));
    let body = if head {
        Body::empty()
    } else {
        match shared.stream(&file.id, start, len).await {
            Ok(stream) => Body::from_stream(stream),
            Err(error) => {
                tracing::warn!(file = %file.id, %error, "cannot read a bulk file from the bucket");
                return ApiError::of_class(ErrorClass::Unavailable, "the bulk file cannot be read now; retry")
                    .into_response();
            }
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.sqlite3"));
    if range.is_some() {
        let content_range = format!("bytes {start}-{}/{size}", (start + len).saturating_sub(1));
        if let Ok(value) = HeaderValue::try_from(content_range) {
            headers.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
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
