//! Blob uploads and downloads on the device listener (`/v1/blobs/{hash}`; the protocol is
//! described under "Blobs" in device.proto): `HEAD` says how much of a blob the server
//! holds, `PUT` uploads a piece (resumable with `Content-Range`), `GET` downloads (with
//! `Range`). Every request is authenticated with the device's session token
//! (`Authorization: Bearer`), checked as a Hello's is.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::admin::ApiError;
use crate::auth::Identity;
use crate::blobs::{BlobError, Held, RecordHint, UploadOutcome, UploadPiece};
use crate::gateway::GatewayServices;

/// Header telling how many bytes of an upload the server holds (as in tus).
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// Header of a `HEAD` answer for a stored blob: its size (the upload is done).
pub const UPLOAD_LENGTH: &str = "upload-length";

/// Code of an upload larger than `blob.max_bytes` (413).
pub const TOO_LARGE_CODE: &str = "blob_too_large";

/// Code of an upload whose bytes do not hash to its name (422).
pub const HASH_MISMATCH_CODE: &str = "hash_mismatch";

/// The blob routes.
pub fn routes() -> Router<Arc<GatewayServices>> {
    let path = format!("{}/{{hash}}", syncline_proto::BLOBS_PATH);
    Router::new()
        .route(&path, get(download).head(held).put(upload))
        // Bodies are streamed to disk and bounded by `blob.max_bytes`, not buffered.
        .layer(DefaultBodyLimit::disable())
}

/// `HEAD`: how much of the blob the server holds for this device.
async fn held(
    State(services): State<Arc<GatewayServices>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = authenticate(&services, &headers).await?;
    match services.blobs.held(&identity, &hash).await.map_err(blob_error)? {
        Held::Stored { size } => Ok(([(UPLOAD_OFFSET, size), (UPLOAD_LENGTH, size)], StatusCode::OK).into_response()),
        Held::Partial { held } => Ok(([(UPLOAD_OFFSET, held)], StatusCode::OK).into_response()),
    }
}

/// `PUT`: one piece of an upload.
async fn upload(
    State(services): State<Arc<GatewayServices>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = authenticate(&services, &headers).await?;
    let content_range = header_text(&headers, header::CONTENT_RANGE)?;
    let content_length = header_text(&headers, header::CONTENT_LENGTH)?
        .map(|length| length.parse::<u64>().map_err(|_| ApiError::bad_request("Content-Length is not a number")))
        .transpose()?;
    let media_type = header_text(&headers, header::CONTENT_TYPE)?;
    let piece = UploadPiece::parse(content_range, content_length).map_err(blob_error)?;
    let outcome = match services.blobs.upload(&identity, &hash, media_type, piece, body.into_data_stream()).await {
        Ok(outcome) => outcome,
        Err(error @ BlobError::WrongOffset { held, .. }) => {
            let mut response = blob_error(error).into_response();
            response.headers_mut().insert(UPLOAD_OFFSET, HeaderValue::from(held));
            return Ok(response);
        }
        Err(error) => return Err(blob_error(error)),
    };
    Ok(match outcome {
        UploadOutcome::AlreadyStored { size } => ([(UPLOAD_OFFSET, size)], StatusCode::OK).into_response(),
        UploadOutcome::Stored { size } => ([(UPLOAD_OFFSET, size)], StatusCode::CREATED).into_response(),
        UploadOutcome::Partial { held } => ([(UPLOAD_OFFSET, held)], StatusCode::ACCEPTED).into_response(),
    })
}

/// The record a download names as its reason to read the blob.
#[derive(Debug, Default, serde::Deserialize)]
struct HintQuery {
    source: Option<String>,
    key: Option<String>,
    id: Option<String>,
}

/// `GET`: the blob's bytes, or the range asked for, streamed from disk.
async fn download(
    State(services): State<Arc<GatewayServices>>,
    Path(hash): Path<String>,
    Query(query): Query<HintQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = authenticate(&services, &headers).await?;
    let hint = match (query.source, query.id) {
        (Some(source), Some(id)) => Some(RecordHint { source, key: query.key.unwrap_or_default(), id }),
        _ => None,
    };
    let reader = services.blobs.open_for(&identity, &hash, hint).await.map_err(blob_error)?;
    let size = reader.size;
    let range = match header_text(&headers, header::RANGE)? {
        Some(range) => Some(parse_range(range, size)?),
        None => None,
    };
    let (start, len) = range.unwrap_or((0, size));
    let stream = reader.stream(start, len).await.map_err(|error| blob_error(BlobError::Io(error)))?;
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if range.is_some() {
        let content_range = format!("bytes {start}-{}/{size}", (start + len).saturating_sub(1));
        let content_range =
            HeaderValue::try_from(content_range).map_err(|_| ApiError::internal("bad Content-Range"))?;
        headers.insert(header::CONTENT_RANGE, content_range);
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// Reads `Range: bytes=first-[last]` against a blob of `size` bytes; returns (start, len).
/// Several ranges, suffix ranges and ranges past the end are 416.
pub(super) fn parse_range(range: &str, size: u64) -> Result<(u64, u64), ApiError> {
    let unsatisfiable = || ApiError {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        code: "range_not_satisfiable",
        message: format!("Range {range:?} is not `bytes=first-` or `bytes=first-last` within {size} bytes"),
    };
    let spec = range.trim().strip_prefix("bytes=").ok_or_else(unsatisfiable)?;
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let first: u64 = first.trim().parse().map_err(|_| unsatisfiable())?;
    let last: u64 = match last.trim() {
        "" => size.checked_sub(1).ok_or_else(unsatisfiable)?,
        last => last.parse::<u64>().map_err(|_| unsatisfiable())?.min(size.saturating_sub(1)),
    };
    if first >= size || first > last {
        return Err(unsatisfiable());
    }
    Ok((first, last - first + 1))
}

/// Checks the request's session token (`Authorization: Bearer`), as Hello does.
async fn authenticate(services: &GatewayServices, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = header_text(headers, header::AUTHORIZATION)?
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthenticated("send the session token as `Authorization: Bearer <token>`"))?;
    match services.auth.resume(token).await {
        Ok((identity, _)) => Ok(identity),
        Err(error) => Err(ApiError::of_class(error.class(), error.to_string())),
    }
}

/// Returns a header's text, if present; a header that is not text is a bad request.
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    headers
        .get(&name)
        .map(|value| value.to_str().map_err(|_| ApiError::bad_request(format!("the {name} header is not text"))))
        .transpose()
}

/// Maps a blob error to its response: 413 and 422 for the two upload refusals a device acts
/// on, `Upload-Offset` on a wrong offset, the class's status otherwise.
fn blob_error(error: BlobError) -> ApiError {
    match &error {
        BlobError::TooLarge { .. } => {
            ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, code: TOO_LARGE_CODE, message: error.to_string() }
        }
        BlobError::HashMismatch { .. } => {
            ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: HASH_MISMATCH_CODE, message: error.to_string() }
        }
        BlobError::InvalidHash(_)
        | BlobError::BadRange(_)
        | BlobError::WrongOffset { .. }
        | BlobError::BodyTooLong { .. }
        | BlobError::NotFound(_)
        | BlobError::Forbidden(_)
        | BlobError::SizeMismatch { .. }
        | BlobError::NotUploaded(_)
        | BlobError::Io(_)
        | BlobError::Store(_) => ApiError::of_class(error.class(), error.to_string()),
    }
}
