//! Partitions: list (head, horizon, record count, checksum, live subscribers), one
//! partition, its records paged by id, one record, `POST` changes (the same path as
//! `Ingest.Push`: 200 only once durable, with the committed range), reset (reload from its
//! channel, deleting what the channel no longer has) and compact now.
//!
//! Paths name a partition by source and key; an `app` partition's key is `*`. Field values
//! are plain JSON in and out: strings, numbers (integers stay integers), booleans, null; bytes
//! come out as base64 strings.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use syncline_proto::v1::Record;
use syncline_proto::v1::value::Kind;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
use super::page::{Page, PageQuery};
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::channel::capture::{self, CaptureSink, Missing, PollError};
use crate::storage::{PageLimit, PartitionName, PartitionState};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_partitions))
        .routes(routes!(get_partition))
        .routes(routes!(list_records))
        .routes(routes!(get_record))
        .routes(routes!(push_changes))
        .routes(routes!(reset_partition))
        .routes(routes!(compact_partition))
}

/// A partition and its state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct PartitionInfo {
    source: String,
    /// User id, `*` (app) or a custom key.
    key: String,
    /// Sequence of the last change.
    head: u64,
    /// Compaction horizon: devices behind it resync from a snapshot.
    horizon: u64,
    /// Live records.
    records: u64,
    /// Order-independent checksum of the live records (decimal, as it is a 64-bit number).
    checksum: String,
    /// Devices subscribed on this server now.
    subscribers: usize,
}

fn partition_info(state: &AdminState, partition: &PartitionName, partition_state: &PartitionState) -> PartitionInfo {
    PartitionInfo {
        source: partition.source.clone(),
        key: partition.key.clone(),
        head: partition_state.head,
        horizon: partition_state.horizon,
        records: partition_state.total,
        checksum: partition_state.checksum.to_string(),
        subscribers: state.services.hub.subscriber_count(partition),
    }
}

/// A record, with plain JSON field values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct RecordInfo {
    id: String,
    /// Sequence of the record's last change.
    version: u64,
    #[schema(value_type = Object)]
    fields: serde_json::Map<String, serde_json::Value>,
}

fn record_info(record: Record) -> RecordInfo {
    let fields = record.fields.into_iter().map(|(name, value)| (name, plain_json(value.kind))).collect();
    RecordInfo { id: record.id, version: record.version, fields }
}

pub(super) fn plain_json(kind: Option<Kind>) -> serde_json::Value {
    use base64::Engine as _;
    match kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::StringValue(text)) => serde_json::Value::String(text),
        Some(Kind::IntValue(number)) => serde_json::Value::from(number),
        Some(Kind::DoubleValue(number)) => serde_json::Number::from_f64(number)
            .map_or_else(|| serde_json::Value::String(number.to_string()), serde_json::Value::Number),
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(flag),
        Some(Kind::BytesValue(data)) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(data))
        }
        Some(Kind::BlobValue(blob)) => serde_json::json!({
            "hash": blob.hash,
            "size": blob.size,
            "media_type": blob.media_type,
            "name": blob.name,
        }),
    }
}

/// A record to upsert.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpsertRecord {
    id: String,
    /// Field values: strings, numbers, booleans or null.
    #[serde(default)]
    #[schema(value_type = Object)]
    fields: serde_json::Map<String, serde_json::Value>,
}

/// Changes to apply to a partition, as one atomic batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Changes {
    #[serde(default)]
    upserts: Vec<UpsertRecord>,
    /// Ids of records to delete.
    #[serde(default)]
    deletes: Vec<String>,
}

/// The committed range of a batch, once durable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Committed {
    /// Changes that took a sequence number (unchanged records take none).
    applied: u64,
    /// First and last sequence assigned (0 when nothing changed).
    first_seq: u64,
    last_seq: u64,
    /// The partition's head and record count after the batch.
    head: u64,
    records: u64,
}

/// What a reset or a compaction did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Maintenance {
    /// Changes logged (reset) or log entries removed (compact).
    changes: u64,
    /// The partition's state afterwards.
    partition: PartitionInfo,
}

/// Filters of the partition list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PartitionFilter {
    /// Only partitions of this source.
    source: Option<String>,
}

/// Returns the partition a path names (404 for an unknown source).
fn named(state: &AdminState, source: &str, key: &str) -> ApiResult<PartitionName> {
    crate::model::backend_partition(&state.settings.sources, source, key)
        .map_err(|error| ApiError::of_class(error.class(), error.to_string()))
}

async fn read_state(state: &AdminState, partition: &PartitionName) -> ApiResult<PartitionState> {
    let store = state.store().clone();
    let lookup = partition.clone();
    blocking(move || store.partition_state(&lookup)).await
}

/// Lists partitions that have been written, by source and key.
#[utoipa::path(get, path = "/v1/admin/partitions", tag = "partitions", params(PageQuery, PartitionFilter),
    responses(
        (status = 200, description = "A page of partitions", body = Page<PartitionInfo>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_partitions(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<PartitionFilter>,
) -> ApiResult<axum::Json<Page<PartitionInfo>>> {
    let request = page.request()?;
    let store = state.store().clone();
    let after = request.after.clone();
    let limit = request.limit;
    let rows = blocking(move || {
        let mut names = store.partitions()?;
        names.sort();
        let mut rows = Vec::new();
        for name in names {
            let position = format!("{}\0{}", name.source, name.key);
            let wanted = filter.source.as_deref().is_none_or(|source| source == name.source)
                && after.as_deref().is_none_or(|after| position.as_str() > after);
            if wanted && rows.len() <= limit {
                let partition_state = store.partition_state(&name)?;
                rows.push((name, partition_state));
            }
        }
        Ok(rows)
    })
    .await?;
    let items = rows.iter().map(|(name, partition_state)| partition_info(&state, name, partition_state)).collect();
    Ok(axum::Json(Page::from_overfetched(items, &request, |info: &PartitionInfo| {
        format!("{}\0{}", info.source, info.key)
    })))
}

/// Returns one partition.
#[utoipa::path(get, path = "/v1/admin/partitions/{source}/{key}", tag = "partitions",
    params(("source" = String, Path), ("key" = String, Path, description = "User id, `*` or a custom key")),
    responses(
        (status = 200, description = "The partition", body = PartitionInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "Unknown source, or a partition never written", body = ErrorBody),
    ))]
async fn get_partition(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath((source, key)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<PartitionInfo>> {
    let partition = named(&state, &source, &key)?;
    let partition_state = read_state(&state, &partition).await?;
    if partition_state.head == 0 {
        return Err(ApiError::not_found(format!("partition {partition}")));
    }
    Ok(axum::Json(partition_info(&state, &partition, &partition_state)))
}

/// Lists a partition's live records, by id.
#[utoipa::path(get, path = "/v1/admin/partitions/{source}/{key}/records", tag = "partitions",
    params(("source" = String, Path), ("key" = String, Path), PageQuery),
    responses(
        (status = 200, description = "A page of records", body = Page<RecordInfo>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "Unknown source", body = ErrorBody),
    ))]
async fn list_records(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath((source, key)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<RecordInfo>>> {
    let request = page.request()?;
    let partition = named(&state, &source, &key)?;
    let store = state.store().clone();
    let (after, limit) = (request.after.clone(), request.limit);
    let page = blocking(move || store.read_snapshot(&partition, after.as_deref(), PageLimit::items(limit + 1))).await?;
    let records = page.records.into_iter().map(record_info).collect();
    Ok(axum::Json(Page::from_overfetched(records, &request, |record: &RecordInfo| record.id.clone())))
}

/// Returns one live record.
#[utoipa::path(get, path = "/v1/admin/partitions/{source}/{key}/records/{id}", tag = "partitions",
    params(("source" = String, Path), ("key" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "The record", body = RecordInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "Unknown source or record", body = ErrorBody),
    ))]
async fn get_record(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath((source, key, id)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<RecordInfo>> {
    let partition = named(&state, &source, &key)?;
    let store = state.store().clone();
    let lookup = id.clone();
    match blocking(move || store.record(&partition, &lookup)).await? {
        Some(record) => Ok(axum::Json(record_info(record))),
        None => Err(ApiError::not_found(format!("record {id:?}"))),
    }
}

/// Applies upserts and deletes to a partition as `Ingest.Push` does: answered once durable,
/// with the committed range; unchanged records take no sequence number.
#[utoipa::path(post, path = "/v1/admin/partitions/{source}/{key}/changes", tag = "partitions", request_body = Changes,
    params(("source" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, description = "Committed durably", body = Committed),
        (status = 400, description = "Malformed request or records outside the limits", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Unknown source", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was applied", body = ErrorBody),
    ))]
async fn push_changes(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath((source, key)): ApiPath<(String, String)>,
    ApiJson(changes): ApiJson<Changes>,
) -> ApiResult<axum::Json<Committed>> {
    let mut upserts = Vec::with_capacity(changes.upserts.len());
    for upsert in changes.upserts {
        let mut fields = BTreeMap::new();
        for (name, value) in &upsert.fields {
            let value =
                crate::cli::json_to_value(name, value).map_err(|error| ApiError::bad_request(error.to_string()))?;
            fields.insert(name.clone(), value);
        }
        upserts.push(Record { id: upsert.id, fields, version: 0 });
    }
    let sources = &state.settings.sources;
    let batch = crate::ingest::apply_push(state.store(), sources, &source, &key, upserts, changes.deletes)
        .await
        .map_err(|error| ApiError::of_class(error.class(), error.to_string()))?;
    Ok(axum::Json(Committed {
        applied: batch.changes.len() as u64,
        first_seq: batch.first_seq,
        last_seq: batch.last_seq,
        head: batch.state.head,
        records: batch.state.total,
    }))
}

/// Reloads a partition from its source's channel: records the channel no longer has are
/// deleted, changed ones upserted (devices get the difference as changes).
#[utoipa::path(post, path = "/v1/admin/partitions/{source}/{key}/reset", tag = "partitions",
    params(("source" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, description = "Reloaded", body = Maintenance),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Unknown source", body = ErrorBody),
        (status = 409, description = "The source has no channel to reload from", body = ErrorBody),
        (status = 503, description = "The channel or the store is unavailable", body = ErrorBody),
    ))]
async fn reset_partition(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath((source, key)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<Maintenance>> {
    let partition = named(&state, &source, &key)?;
    let Some(connection) = state.services.channels.get(&source) else {
        return Err(ApiError::conflict(format!(
            "source {source:?} has no channel to reload from (it is fed by Ingest)"
        )));
    };
    let sink = CaptureSink { store: state.store().clone(), counters: state.capture.clone() };
    let changes =
        capture::poll_partition(&sink, connection, &partition, Missing::Delete).await.map_err(|error| match error {
            PollError::Channel(error) => ApiError::of_class(error.class(), error.to_string()),
            PollError::Store(error) => error.into(),
        })?;
    tracing::info!(%partition, changes, "partition reset from its channel through the admin API");
    let partition_state = read_state(&state, &partition).await?;
    Ok(axum::Json(Maintenance { changes, partition: partition_info(&state, &partition, &partition_state) }))
}

/// Compacts a partition's log now (keeping `store.compact_keep_recent` entries).
#[utoipa::path(post, path = "/v1/admin/partitions/{source}/{key}/compact", tag = "partitions",
    params(("source" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, description = "Compacted", body = Maintenance),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Unknown source", body = ErrorBody),
    ))]
async fn compact_partition(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath((source, key)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<Maintenance>> {
    let partition = named(&state, &source, &key)?;
    let store = state.store().clone();
    let keep_recent = state.settings.store.compact_keep_recent;
    let target = partition.clone();
    let report = blocking(move || store.compact(&target, keep_recent)).await?;
    let partition_state = read_state(&state, &partition).await?;
    Ok(axum::Json(Maintenance {
        changes: report.removed,
        partition: partition_info(&state, &partition, &partition_state),
    }))
}
