//! Mobile RPC statistics: calls, errors by kind and latency, per service and method.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiQuery, ApiResult, ErrorBody};
use super::page::{Page, PageQuery};
use super::{AdminState, ViewerAccess};
use crate::rpc::metrics::Outcome;

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_rpc_methods))
}

/// The counters of one RPC method since the server started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct MethodStats {
    service: String,
    method: String,
    /// Calls finished, any outcome.
    calls: u64,
    /// Calls that did not succeed (cancelled ones included).
    errors: u64,
    /// Calls per error kind (`bad_request`, `timeout`, `unavailable`, `cancelled`, ...).
    #[schema(value_type = Object)]
    errors_by_kind: std::collections::BTreeMap<String, u64>,
    /// Latency in milliseconds: the upper bound of the bucket holding the median and the
    /// 99th percentile, and the mean.
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_mean_ms: f64,
}

/// Lists RPC methods that were called, by service and method.
#[utoipa::path(get, path = "/v1/admin/rpc", tag = "rpc", params(PageQuery),
    responses(
        (status = 200, description = "A page of methods", body = Page<MethodStats>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_rpc_methods(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<MethodStats>>> {
    let request = page.request()?;
    let methods: Vec<MethodStats> = state
        .services
        .rpc
        .metrics()
        .snapshot_all()
        .into_iter()
        .map(|((service, method), snapshot)| MethodStats {
            errors: snapshot.errors(),
            errors_by_kind: snapshot
                .outcomes
                .iter()
                .filter(|(outcome, _)| **outcome != Outcome::Ok)
                .map(|(outcome, count)| (outcome.as_str().to_owned(), *count))
                .collect(),
            calls: snapshot.calls,
            latency_p50_ms: snapshot.p50.as_secs_f64() * 1000.0,
            latency_p99_ms: snapshot.p99.as_secs_f64() * 1000.0,
            latency_mean_ms: snapshot.mean.as_secs_f64() * 1000.0,
            service,
            method,
        })
        .collect();
    Ok(axum::Json(Page::from_sorted(methods, &request, |method| format!("{}\0{}", method.service, method.method))))
}
