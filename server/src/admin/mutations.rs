//! Device mutation queues: depth per device and per source, and the unfinished mutations
//! themselves, parked ones (waiting for an unavailable channel, retried with backoff) with the
//! channel's last error; `POST /v1/admin/mutations/retry` retries every parked one now.
//! `DELETE /v1/admin/mutations/{client_id}/{mutation_id}` discards an unfinished mutation: its
//! device gets a FORBIDDEN outcome (unless it was being written to its channel at that moment,
//! which then completes).
//!
//! A mutation the channel refuses for good (a typed error or a conflict) is not parked: its
//! error is its outcome, answered to its device, and it leaves the queue; it is also kept as
//! *failed* (`GET /v1/admin/mutations/failed`, for the outcome retention) until an operator
//! retries it (`POST .../failed/{client_id}/{mutation_id}/retry`: queued again at the end of
//! its device's queue and dispatched; the device is told the new outcome, which also answers
//! the device's own retry of that mutation id) or dismisses it (`DELETE
//! .../failed/{client_id}/{mutation_id}`).

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
use super::page::{Page, PageQuery};
use super::partitions::plain_json;
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::storage::{FailedMutation, MutationOp, QueuedMutation};
use syncline_proto::v1::MutationResult;

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(queue_depths))
        .routes(routes!(pending_mutations))
        .routes(routes!(retry_parked))
        .routes(routes!(discard_mutation))
        .routes(routes!(failed_mutations))
        .routes(routes!(retry_failed))
        .routes(routes!(dismiss_failed))
}

/// A mutation its channel refused, kept for an operator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct FailedMutationInfo {
    client_id: String,
    user_id: String,
    mutation_id: String,
    source: String,
    key: String,
    /// `create`, `update` or `delete`.
    op: String,
    id: String,
    base_version: u64,
    /// The fields the device sent, as plain JSON.
    #[schema(value_type = Object)]
    fields: serde_json::Map<String, serde_json::Value>,
    /// The error code the channel's refusal was told to the device with (e.g. `CONFLICT`).
    code: String,
    /// The channel's message.
    message: String,
    /// When it failed, Unix milliseconds.
    failed_ms: u64,
}

impl From<FailedMutation> for FailedMutationInfo {
    fn from(failed: FailedMutation) -> Self {
        use prost::Message as _;
        let error = MutationResult::decode(failed.result.as_slice()).ok().and_then(|result| result.error);
        let (code, message) = error.map_or_else(
            || ("UNKNOWN".to_owned(), String::new()),
            |error| {
                let code = syncline_proto::v1::ErrorCode::try_from(error.code).map_or_else(
                    |_| error.code.to_string(),
                    |code| {
                        let name = code.as_str_name();
                        name.strip_prefix("ERROR_CODE_").unwrap_or(name).to_owned()
                    },
                );
                (code, error.message)
            },
        );
        let mutation = failed.mutation;
        Self {
            op: op_name(mutation.op).to_owned(),
            fields: mutation.fields.into_iter().map(|(name, value)| (name, plain_json(value.kind))).collect(),
            client_id: mutation.client_id,
            user_id: mutation.user_id,
            mutation_id: mutation.mutation_id,
            source: mutation.partition.source,
            key: mutation.partition.key,
            id: mutation.id,
            base_version: mutation.base_version,
            code,
            message,
            failed_ms: failed.failed_ms,
        }
    }
}

/// What retrying a failed mutation did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Requeued {
    client_id: String,
    mutation_id: String,
    /// Its new position in the device's queue.
    seq: u64,
}

fn op_name(op: MutationOp) -> &'static str {
    match op {
        MutationOp::Create => "create",
        MutationOp::Update => "update",
        MutationOp::Delete => "delete",
    }
}

/// Lists failed mutations (refused by their channel), by device and mutation id.
#[utoipa::path(get, path = "/v1/admin/mutations/failed", tag = "mutations", params(PageQuery, MutationFilter),
    responses(
        (status = 200, description = "A page of failed mutations", body = Page<FailedMutationInfo>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn failed_mutations(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<MutationFilter>,
) -> ApiResult<axum::Json<Page<FailedMutationInfo>>> {
    let request = page.request()?;
    let store = state.store().clone();
    let failed = blocking(move || store.failed_mutations()).await?;
    let failed: Vec<FailedMutationInfo> = failed
        .into_iter()
        .filter(|failed| filter.client_id.as_deref().is_none_or(|client_id| client_id == failed.mutation.client_id))
        .map(FailedMutationInfo::from)
        .collect();
    Ok(axum::Json(Page::from_sorted(failed, &request, |failed| {
        format!("{}\0{}", failed.client_id, failed.mutation_id)
    })))
}

/// Queues a failed mutation again and dispatches it to its channel.
#[utoipa::path(post, path = "/v1/admin/mutations/failed/{client_id}/{mutation_id}/retry", tag = "mutations",
    params(("client_id" = String, Path), ("mutation_id" = String, Path)),
    responses(
        (status = 202, description = "Queued again; its device is told the new outcome", body = Requeued),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such failed mutation", body = ErrorBody),
    ))]
async fn retry_failed(
    State(state): State<AdminState>,
    AdminAccess(caller): AdminAccess,
    ApiPath((client_id, mutation_id)): ApiPath<(String, String)>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<Requeued>)> {
    let Some(queued) = state.services.mutations.retry_failed(&client_id, &mutation_id).await? else {
        return Err(ApiError::not_found(format!("failed mutation {mutation_id:?} of device {client_id:?}")));
    };
    tracing::info!(caller = %caller.name, %client_id, %mutation_id, "failed mutation retried through the admin API");
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(Requeued { client_id, mutation_id, seq: queued.seq })))
}

/// Dismisses a failed mutation: no longer listed (its outcome still answers its id).
#[utoipa::path(delete, path = "/v1/admin/mutations/failed/{client_id}/{mutation_id}", tag = "mutations",
    params(("client_id" = String, Path), ("mutation_id" = String, Path)),
    responses(
        (status = 204, description = "Dismissed"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such failed mutation", body = ErrorBody),
    ))]
async fn dismiss_failed(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath((client_id, mutation_id)): ApiPath<(String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    let store = state.store().clone();
    let (client, id) = (client_id.clone(), mutation_id.clone());
    if !blocking(move || store.dismiss_failed_mutation(&client, &id)).await? {
        return Err(ApiError::not_found(format!("failed mutation {mutation_id:?} of device {client_id:?}")));
    }
    tracing::info!(%client_id, %mutation_id, "failed mutation dismissed through the admin API");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The queue of one device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct DeviceQueue {
    client_id: String,
    user_id: String,
    /// Unfinished mutations.
    pending: u64,
    /// Unfinished mutations per source.
    #[schema(value_type = Object)]
    by_source: BTreeMap<String, u64>,
}

/// Queue depths: per device (paged) and in total per source.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct QueueDepths {
    /// Unfinished mutations of every device.
    total: u64,
    /// Unfinished mutations per source, of every device.
    #[schema(value_type = Object)]
    by_source: BTreeMap<String, u64>,
    devices: Page<DeviceQueue>,
}

/// An unfinished mutation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct PendingMutation {
    client_id: String,
    user_id: String,
    /// Position in the device's queue.
    seq: u64,
    mutation_id: String,
    source: String,
    key: String,
    /// `create`, `update` or `delete`.
    op: String,
    id: String,
    base_version: u64,
    /// When the channel is unavailable: its last error (the mutation is parked and retried).
    last_error: Option<String>,
    /// Failed attempts so far (parked mutations).
    attempts: u64,
}

/// What a retry did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Retried {
    /// Parked mutations retried now.
    retried: usize,
}

/// Discards an unfinished mutation (answered to its device as FORBIDDEN, off its queue).
#[utoipa::path(delete, path = "/v1/admin/mutations/{client_id}/{mutation_id}", tag = "mutations",
    params(("client_id" = String, Path), ("mutation_id" = String, Path)),
    responses(
        (status = 202, description = "Discarded; the device is told once its lane ends it"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such unfinished mutation", body = ErrorBody),
    ))]
async fn discard_mutation(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath((client_id, mutation_id)): ApiPath<(String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    let queued = pending(&state)
        .await?
        .iter()
        .any(|mutation| mutation.client_id == client_id && mutation.mutation_id == mutation_id);
    if !queued {
        return Err(ApiError::not_found(format!("unfinished mutation {mutation_id:?} of device {client_id:?}")));
    }
    state.services.mutations.discard(&client_id, &mutation_id);
    tracing::info!(%client_id, %mutation_id, "mutation discarded through the admin API");
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// Retries every parked mutation now instead of after its backoff.
#[utoipa::path(post, path = "/v1/admin/mutations/retry", tag = "mutations",
    responses(
        (status = 200, description = "Retried", body = Retried),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn retry_parked(State(state): State<AdminState>, _caller: AdminAccess) -> axum::Json<Retried> {
    axum::Json(Retried { retried: state.services.mutations.retry_parked() })
}

/// Filters of the pending list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MutationFilter {
    /// Only this device's mutations.
    client_id: Option<String>,
}

async fn pending(state: &AdminState) -> ApiResult<Vec<QueuedMutation>> {
    let store = state.store().clone();
    blocking(move || store.pending_mutations()).await
}

/// Returns mutation queue depths per device and per source.
#[utoipa::path(get, path = "/v1/admin/mutations/queues", tag = "mutations", params(PageQuery),
    responses(
        (status = 200, description = "Queue depths", body = QueueDepths),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn queue_depths(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<QueueDepths>> {
    let request = page.request()?;
    let mutations = pending(&state).await?;
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    let mut devices: BTreeMap<String, DeviceQueue> = BTreeMap::new();
    for mutation in &mutations {
        *by_source.entry(mutation.partition.source.clone()).or_default() += 1;
        let device = devices.entry(mutation.client_id.clone()).or_insert_with(|| DeviceQueue {
            client_id: mutation.client_id.clone(),
            user_id: mutation.user_id.clone(),
            pending: 0,
            by_source: BTreeMap::new(),
        });
        device.pending += 1;
        *device.by_source.entry(mutation.partition.source.clone()).or_default() += 1;
    }
    let devices = Page::from_sorted(devices.into_values().collect(), &request, |device| device.client_id.clone());
    Ok(axum::Json(QueueDepths { total: mutations.len() as u64, by_source, devices }))
}

/// Lists unfinished mutations, by device and queue position.
#[utoipa::path(get, path = "/v1/admin/mutations/pending", tag = "mutations", params(PageQuery, MutationFilter),
    responses(
        (status = 200, description = "A page of mutations", body = Page<PendingMutation>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn pending_mutations(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<MutationFilter>,
) -> ApiResult<axum::Json<Page<PendingMutation>>> {
    let request = page.request()?;
    let parked: std::collections::HashMap<(String, String), crate::mutations::ParkedMutation> = state
        .services
        .mutations
        .parked()
        .into_iter()
        .map(|parked| ((parked.client_id.clone(), parked.mutation_id.clone()), parked))
        .collect();
    let mutations: Vec<PendingMutation> = pending(&state)
        .await?
        .into_iter()
        .filter(|mutation| filter.client_id.as_deref().is_none_or(|client_id| client_id == mutation.client_id))
        .map(|mutation| {
            let parked = parked.get(&(mutation.client_id.clone(), mutation.mutation_id.clone()));
            (mutation, parked.map(|parked| (parked.error.clone(), parked.attempts)))
        })
        .map(|(mutation, parked)| PendingMutation {
            last_error: parked.as_ref().map(|(error, _)| error.clone()),
            attempts: parked.map_or(0, |(_, attempts)| attempts),
            op: op_name(mutation.op).to_owned(),
            client_id: mutation.client_id,
            user_id: mutation.user_id,
            seq: mutation.seq,
            mutation_id: mutation.mutation_id,
            source: mutation.partition.source,
            key: mutation.partition.key,
            id: mutation.id,
            base_version: mutation.base_version,
        })
        .collect();
    // Zero-padded positions sort as numbers within a device.
    Ok(axum::Json(Page::from_sorted(mutations, &request, |mutation| {
        format!("{}\0{:020}", mutation.client_id, mutation.seq)
    })))
}
