//! Bulk sync files: `POST /v1/admin/bulk` schedules a job that writes (or reuses) a file per
//! partition for a user, as a device's BulkRequest does (e.g. to warm the cache before a
//! fleet of new devices syncs), and `GET /v1/admin/bulk/files` lists the files there are.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::auth::Identity;
use crate::bulk::{BulkFile, MAX_SOURCES_PER_REQUEST};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(schedule_bulk)).routes(routes!(list_bulk_files))
}

/// What to write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkJobRequest {
    /// The user whose partitions to write (their own for `user` sources, `*` for `app` ones).
    user_id: String,
    /// Source names, 1 to 64.
    sources: Vec<String>,
}

/// A scheduled job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct BulkJob {
    job_id: String,
    /// The partitions it writes, as `source/key`.
    partitions: Vec<String>,
}

/// A bulk file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct BulkFileInfo {
    id: String,
    source: String,
    key: String,
    /// The sequence it holds the partition at.
    sequence: u64,
    records: u64,
    /// Checksum of its records (decimal, as it is a 64-bit number).
    checksum: String,
    bytes: u64,
    /// When it was written, in Unix milliseconds.
    created_ms: i64,
}

impl From<&BulkFile> for BulkFileInfo {
    fn from(file: &BulkFile) -> Self {
        Self {
            id: file.id.clone(),
            source: file.partition.source.clone(),
            key: file.partition.key.clone(),
            sequence: file.sequence,
            records: file.record_count,
            checksum: file.checksum.to_string(),
            bytes: file.bytes,
            created_ms: file.created_ms,
        }
    }
}

/// Schedules a bulk job for a user's partitions; the job runs in the background (and
/// resumes after a restart).
#[utoipa::path(post, path = "/v1/admin/bulk", tag = "bulk",
    request_body = BulkJobRequest,
    responses(
        (status = 202, description = "Scheduled", body = BulkJob),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin, or a partition the user may not read", body = ErrorBody),
        (status = 404, description = "Unknown source", body = ErrorBody),
        (status = 422, description = "No sources, too many, or an empty user id", body = ErrorBody),
        (status = 429, description = "Too many bulk jobs queued", body = ErrorBody),
    ))]
async fn schedule_bulk(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiJson(request): ApiJson<BulkJobRequest>,
) -> ApiResult<(StatusCode, axum::Json<BulkJob>)> {
    if request.user_id.is_empty() {
        return Err(ApiError::invalid("user_id must not be empty"));
    }
    if request.sources.is_empty() || request.sources.len() > MAX_SOURCES_PER_REQUEST {
        return Err(ApiError::invalid(format!("sources must name 1 to {MAX_SOURCES_PER_REQUEST} sources")));
    }
    let identity = Identity { user_id: request.user_id.clone(), ..Identity::default() };
    let partitions = request
        .sources
        .iter()
        .map(|source| state.services.resolve_partition(&identity, source, ""))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::of_class(error.class(), error.to_string()))?;
    let bulk = state.services.bulk.clone();
    let job = bulk
        .accept(&request.user_id, "admin", &partitions, 0)
        .await
        .map_err(|error| ApiError::of_class(error.class(), error.to_string()))?;
    let answer =
        BulkJob { job_id: job.job_id.clone(), partitions: partitions.iter().map(ToString::to_string).collect() };
    state.services.tracker.spawn(async move {
        if let Err(error) = bulk.run(&job).await {
            tracing::warn!(job = %job.job_id, %error, "bulk job scheduled through the admin API failed");
        }
    });
    Ok((StatusCode::ACCEPTED, axum::Json(answer)))
}

/// Lists the bulk files, newest first.
#[utoipa::path(get, path = "/v1/admin/bulk/files", tag = "bulk",
    responses(
        (status = 200, description = "The files", body = Vec<BulkFileInfo>),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_bulk_files(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
) -> ApiResult<axum::Json<Vec<BulkFileInfo>>> {
    let files = state.services.bulk.catalog().files();
    Ok(axum::Json(files.iter().map(|file| BulkFileInfo::from(file.as_ref())).collect()))
}
