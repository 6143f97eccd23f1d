//! The `syncline.v1.Ingest` gRPC service: backends push upserts and deletes into partitions.
//! Its errors reach backends as gRPC statuses through the error-class seam
//! ([`ErrorClass::status`]). [`apply_push`] is the one push path, shared with the admin API's
//! `POST /v1/admin/partitions/.../changes`.

use std::collections::BTreeMap;
use std::sync::Arc;

use syncline_proto::v1::ingest_server::{Ingest, IngestServer};
use syncline_proto::v1::{PushRequest, PushResponse};
use tonic::{Request, Response, Status};

use syncline_proto::v1::Record;

use crate::config::SourceSettings;
use crate::error::ErrorClass;
use crate::metrics::counters::IngestCounters;
use crate::model::AccessError;
use crate::storage::{CommittedBatch, Store, StoreError};

/// What a backend is told in place of an internal failure's details (they are logged).
const INTERNAL_ERROR_MESSAGE: &str = "internal error";

/// The Ingest service.
pub struct IngestService {
    store: Arc<dyn Store>,
    sources: BTreeMap<String, SourceSettings>,
    token: Option<String>,
    counters: Arc<IngestCounters>,
}

impl IngestService {
    /// Returns the tonic server of the service; `token`, when set, is required as
    /// `authorization: Bearer <token>`. Calls and the changes they log are counted in
    /// `counters`.
    pub fn server(
        store: Arc<dyn Store>,
        sources: BTreeMap<String, SourceSettings>,
        token: Option<String>,
        counters: Arc<IngestCounters>,
    ) -> IngestServer<Self> {
        IngestServer::new(Self { store, sources, token, counters })
    }

    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.token else { return Ok(()) };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ErrorClass::Unauthenticated.status("the ingest token is wrong")),
            None => Err(ErrorClass::Unauthenticated.status("send authorization: Bearer <ingest token>")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a push was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The source or key names no partition a backend may write.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The store refused or failed the batch.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            PushError::Access(error) => error.class(),
            PushError::Store(error) => error.class(),
        }
    }
}

/// Applies a backend's (or an operator's) upserts and deletes to the partition `source`/`key`
/// names, and returns the committed batch once it is durable.
pub async fn apply_push(
    store: &Arc<dyn Store>,
    sources: &BTreeMap<String, SourceSettings>,
    source: &str,
    key: &str,
    upserts: Vec<Record>,
    deletes: Vec<String>,
) -> Result<CommittedBatch, PushError> {
    let partition = crate::model::backend_partition(sources, source, key)?;
    let store = store.clone();
    let batch = tokio::task::spawn_blocking(move || store.apply_batch(&partition, upserts, deletes))
        .await
        .map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))??;
    Ok(batch)
}

/// Returns the status of a batch the store did not apply: the error itself when the backend
/// can act on it, a generic message (the error is logged) when the store failed.
fn store_status(error: StoreError) -> Status {
    let class = error.class();
    match class {
        ErrorClass::Unavailable => {
            tracing::error!(%error, "store unavailable");
            class.status("the store is unavailable; the batch was not applied")
        }
        ErrorClass::Internal => {
            tracing::error!(%error, "store corrupt");
            class.status(INTERNAL_ERROR_MESSAGE)
        }
        ErrorClass::BadRequest
        | ErrorClass::UnknownSource
        | ErrorClass::NotFound
        | ErrorClass::Conflict
        | ErrorClass::Unauthenticated
        | ErrorClass::Forbidden
        | ErrorClass::ResourceExhausted
        | ErrorClass::Timeout
        | ErrorClass::Unimplemented
        | ErrorClass::UnsupportedVersion => class.status(error.to_string()),
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    /// Records are checked by the store ([`PartitionStore::apply_batch`] validates every
    /// upsert and deleted id before writing anything), so a record outside the limits fails
    /// the batch with INVALID_ARGUMENT naming the record and its field.
    ///
    /// [`PartitionStore::apply_batch`]: crate::storage::PartitionStore::apply_batch
    #[tracing::instrument(skip_all, fields(source = %request.get_ref().source, key = %request.get_ref().key))]
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let pushed = self.push_batch(request).await;
        self.counters.call(pushed.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        pushed
    }
}

impl IngestService {
    /// Applies one pushed batch (see [`Ingest::push`]).
    async fn push_batch(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        self.check_token(&request)?;
        let push = request.into_inner();
        let applied = apply_push(&self.store, &self.sources, &push.source, &push.key, push.upserts, push.deletes).await;
        let batch = match applied {
            Ok(batch) => batch,
            Err(PushError::Access(error)) => return Err(error.class().status(error.to_string())),
            Err(PushError::Store(error)) => return Err(store_status(error)),
        };
        self.counters.logged(&push.source, batch.changes.len() as u64);
        Ok(Response::new(PushResponse {
            applied: batch.changes.len() as u64,
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            head: batch.state.head,
            total: batch.state.total,
        }))
    }
}

#[cfg(test)]
mod tests;
