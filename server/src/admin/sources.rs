//! Sources: each with its partitioning, channel, capture mode and capture health (connected,
//! last batch time, capture lag, last error).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::page::{Page, PageQuery};
use super::{AdminState, ViewerAccess};
use crate::config::{Capture, SourceSettings};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_sources)).routes(routes!(get_source))
}

/// A source and the health of its change capture.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct SourceInfo {
    name: String,
    /// `user`, `app` or `custom`.
    partitioning: String,
    /// The channel endpoint, when the source has one.
    channel: Option<String>,
    /// `ingest`, `watch` or `poll`.
    capture: String,
    /// Poll interval in milliseconds (poll capture only).
    poll_interval_ms: Option<u64>,
    health: SourceHealth,
}

/// The health of a source's change capture. An `ingest` source is fed by its backend and
/// reports connected.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct SourceHealth {
    connected: bool,
    /// When the last captured batch was committed (Unix ms).
    last_batch_ms: Option<i64>,
    /// Milliseconds from the channel's answer to the durable commit of the last batch.
    capture_lag_ms: Option<u64>,
    last_error: Option<String>,
}

fn source_info(state: &AdminState, name: &str, source: &SourceSettings) -> SourceInfo {
    let (capture, poll_interval_ms) = match source.capture {
        Capture::Ingest => ("ingest", None),
        Capture::Watch => ("watch", None),
        Capture::Poll { interval } => ("poll", Some(interval.as_millis() as u64)),
    };
    let health = state.capture.health(name);
    let connected = match source.capture {
        Capture::Ingest => true,
        Capture::Watch | Capture::Poll { .. } => health.connected,
    };
    SourceInfo {
        name: name.to_owned(),
        partitioning: source.partitioning.as_str().to_owned(),
        channel: source.channel.clone(),
        capture: capture.to_owned(),
        poll_interval_ms,
        health: SourceHealth {
            connected,
            last_batch_ms: health.last_batch_ms,
            capture_lag_ms: health.last_batch_lag_ms,
            last_error: health.last_error,
        },
    }
}

/// Lists sources, by name.
#[utoipa::path(get, path = "/v1/admin/sources", tag = "sources", params(PageQuery),
    responses(
        (status = 200, description = "A page of sources", body = Page<SourceInfo>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_sources(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<SourceInfo>>> {
    let request = page.request()?;
    let sources: Vec<SourceInfo> =
        state.settings.sources.iter().map(|(name, source)| source_info(&state, name, source)).collect();
    Ok(axum::Json(Page::from_sorted(sources, &request, |source| source.name.clone())))
}

/// Returns one source.
#[utoipa::path(get, path = "/v1/admin/sources/{name}", tag = "sources", params(("name" = String, Path)),
    responses(
        (status = 200, description = "The source", body = SourceInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
    ))]
async fn get_source(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<SourceInfo>> {
    match state.settings.sources.get(&name) {
        Some(source) => Ok(axum::Json(source_info(&state, &name, source))),
        None => Err(ApiError::not_found(format!("source {name:?}"))),
    }
}
