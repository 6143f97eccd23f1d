//! `GET /metrics`: the server's Prometheus metrics ([`crate::metrics`]) in the text format.
//! It needs an API token or console session of any role, like the API's reads, unless
//! `admin.metrics_public` opens it (a scraper on a trusted network). Rendering walks every
//! subscription and reads `/proc`, a few milliseconds at tens of thousands of devices, so it
//! runs off the async workers.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AdminState, ApiError, ApiResult, authorize_viewer};

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AdminState>, request: Request) -> ApiResult<Response> {
    if !state.settings.admin.metrics_public {
        let (parts, _) = request.into_parts();
        authorize_viewer(&state, &parts).await?;
    }
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .map_err(|error| ApiError::internal(format!("rendering the metrics failed: {error}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}
