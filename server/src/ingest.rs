//! The `syncline.v1.Ingest` gRPC service: backends push upserts and deletes into partitions.
//! The only file that maps store outcomes to tonic types for ingest.

use std::collections::BTreeMap;
use std::sync::Arc;

use syncline_proto::v1::ingest_server::{Ingest, IngestServer};
use syncline_proto::v1::{PushRequest, PushResponse};
use tonic::{Request, Response, Status};

use crate::config::SourceSettings;
use crate::model::AccessError;
use crate::storage::{PartitionName, Store, StoreError};

/// The Ingest service.
pub struct IngestService {
    store: Arc<dyn Store>,
    sources: BTreeMap<String, SourceSettings>,
    token: Option<String>,
}

impl IngestService {
    /// Returns the tonic server of the service; `token`, when set, is required as
    /// `authorization: Bearer <token>`.
    pub fn server(
        store: Arc<dyn Store>,
        sources: BTreeMap<String, SourceSettings>,
        token: Option<String>,
    ) -> IngestServer<Self> {
        IngestServer::new(Self { store, sources, token })
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
            Some(_) => Err(Status::unauthenticated("the ingest token is wrong")),
            None => Err(Status::unauthenticated("send authorization: Bearer <ingest token>")),
        }
    }

    fn partition(&self, source: &str, key: &str) -> Result<PartitionName, Status> {
        crate::model::backend_partition(&self.sources, source, key).map_err(|error| match error {
            AccessError::UnknownSource => Status::invalid_argument(format!("unknown source {source:?}")),
            AccessError::Forbidden(message) => Status::invalid_argument(message),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Maps a store error to a gRPC status, once.
pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::InvalidRecord(_) | StoreError::DuplicateId { .. } | StoreError::BatchTooLarge { .. } => {
            Status::invalid_argument(error.to_string())
        }
        StoreError::UserExists { .. } => Status::already_exists(error.to_string()),
        StoreError::QueueFull { .. } => Status::resource_exhausted(error.to_string()),
        StoreError::Locked { .. } | StoreError::Io(_) | StoreError::Closed => {
            tracing::error!(%error, "store unavailable");
            Status::unavailable("the store is unavailable; the batch was not applied")
        }
        StoreError::Corrupt(_) => {
            tracing::error!(%error, "store corrupt");
            Status::internal("internal error")
        }
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
        self.check_token(&request)?;
        let push = request.into_inner();
        let partition = self.partition(&push.source, &push.key)?;
        let store = self.store.clone();
        let batch = tokio::task::spawn_blocking(move || store.apply_batch(&partition, push.upserts, push.deletes))
            .await
            .map_err(|_| Status::internal("internal error"))?
            .map_err(store_status)?;
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
