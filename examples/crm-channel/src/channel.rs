//! [`CrmChannel`]: the [`ChannelBackend`] over [`CrmDb`]. It checks requests (partition,
//! caller) and leaves storage to the database handle.

use std::sync::Arc;

use syncline_proto::APP_PARTITION_KEY;
use syncline_proto::sdk::{ChangeStream, ChannelBackend, ChannelError, RecordStream, Result, WriteOutcome};
use syncline_proto::v1::value::Kind;
use syncline_proto::v1::{
    AuthenticateRequest, AuthenticateResponse, Caller, DescribeResponse, PartitionKey, QueryRequest, Record,
    SearchRequest, SearchResponse, WatchRequest, WriteRequest,
};

use crate::db::CrmDb;
use crate::feed;
use crate::schema::{self, Partitioning, SOURCES, SourceSchema};

/// Matches returned by a `Search` that asks for no limit.
const DEFAULT_SEARCH_LIMIT: u32 = 50;

/// The most matches one `Search` returns, whatever it asks for.
const MAX_SEARCH_LIMIT: u32 = 500;

/// The one search parameter: a substring of the record's name.
const SEARCH_PARAM_NAME: &str = "name";

/// The CRM channel: sources `Account` (app partition) and `Contact` (one partition per user).
#[derive(Clone)]
pub struct CrmChannel {
    db: CrmDb,
}

impl CrmChannel {
    /// Returns the channel serving `db`.
    pub fn new(db: CrmDb) -> Self {
        Self { db }
    }
}

/// Returns the source and key of a request's partition.
fn partition(partition: Option<&PartitionKey>) -> Result<(&'static SourceSchema, &str)> {
    let partition = partition.ok_or_else(|| ChannelError::InvalidArgument("the request names no partition".into()))?;
    let source = schema::source(&partition.source)?;
    source.check_partition_key(&partition.key)?;
    Ok((source, &partition.key))
}

/// Refuses a write to another user's partition. Writes without a caller come from Syncline
/// itself (admin or ingest paths) and are allowed.
fn check_caller_may_write(source: &SourceSchema, key: &str, caller: Option<&Caller>) -> Result<()> {
    match (&source.partitioning, caller) {
        (Partitioning::User { .. }, Some(caller)) if !caller.user_id.is_empty() && caller.user_id != key => {
            Err(ChannelError::PermissionDenied(format!(
                "user {:?} may not write {} records of user {key:?}",
                caller.user_id, source.name
            )))
        }
        (Partitioning::User { .. } | Partitioning::App, _) => Ok(()),
    }
}

/// Returns the source, key and record of a write request, after checking the caller.
fn write_target(request: &WriteRequest) -> Result<(&'static SourceSchema, &str, &Record)> {
    let (source, key) = partition(request.partition.as_ref())?;
    check_caller_may_write(source, key, request.caller.as_ref())?;
    let record =
        request.record.as_ref().ok_or_else(|| ChannelError::InvalidArgument("the write has no record".into()))?;
    Ok((source, key, record))
}

fn record_id(record: &Record) -> Result<&str> {
    if record.id.is_empty() {
        return Err(ChannelError::InvalidArgument("the record has no id".into()));
    }
    Ok(&record.id)
}

#[tonic::async_trait]
impl ChannelBackend for CrmChannel {
    async fn describe(&self) -> Result<DescribeResponse> {
        Ok(DescribeResponse { sources: SOURCES.iter().map(|source| source.description()).collect() })
    }

    async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse> {
        let user_id = self.db.check_password(&request.username, &request.password).await?;
        Ok(match user_id {
            Some(user_id) => AuthenticateResponse { ok: true, user_id, ..AuthenticateResponse::default() },
            None => AuthenticateResponse {
                ok: false,
                message: "unknown user or wrong password".to_owned(),
                ..AuthenticateResponse::default()
            },
        })
    }

    async fn query(&self, request: QueryRequest) -> Result<RecordStream> {
        let (source, key) = partition(request.partition.as_ref())?;
        Ok(feed::query(self.db.clone(), source, key.to_owned()))
    }

    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        for name in &request.sources {
            schema::source(name)?;
        }
        let sources = (!request.sources.is_empty()).then(|| Arc::from(request.sources));
        // Fixed before answering, so a change committed after the answer is never missed.
        let start = feed::watch_start(&self.db, &request.resume_token).await?;
        Ok(feed::watch(self.db.clone(), start, sources))
    }

    async fn create(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let (source, key, record) = write_target(&request)?;
        let created = self.db.create(source.name, key, record.fields.clone(), &request.mutation_id).await?;
        Ok(WriteOutcome::Written(created))
    }

    async fn update(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let (source, key, record) = write_target(&request)?;
        self.db.update(source.name, key, record_id(record)?, record.fields.clone(), request.base_version).await
    }

    async fn delete(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let (source, key, record) = write_target(&request)?;
        self.db.delete(source.name, key, record_id(record)?, request.base_version).await
    }

    /// Matches records whose name contains the `name` parameter (all records without it):
    /// accounts for anyone, contacts of the calling user only.
    async fn search(&self, request: SearchRequest) -> Result<SearchResponse> {
        let source = schema::source(&request.source)?;
        let key = match source.partitioning {
            Partitioning::App => APP_PARTITION_KEY.to_owned(),
            Partitioning::User { .. } => match &request.caller {
                Some(caller) if !caller.user_id.is_empty() => caller.user_id.clone(),
                _ => {
                    return Err(ChannelError::InvalidArgument(format!(
                        "searching {} needs the caller's user id",
                        source.name
                    )));
                }
            },
        };
        let mut name_contains = None;
        for (name, value) in &request.params {
            match (name.as_str(), &value.kind) {
                (SEARCH_PARAM_NAME, Some(Kind::StringValue(text))) => name_contains = Some(text.clone()),
                (SEARCH_PARAM_NAME, _) => {
                    return Err(ChannelError::InvalidArgument("search parameter \"name\" must be a string".into()));
                }
                (other, _) => {
                    return Err(ChannelError::InvalidArgument(format!(
                        "unknown search parameter {other:?} (only \"name\" is supported)"
                    )));
                }
            }
        }
        let limit = match request.limit {
            0 => DEFAULT_SEARCH_LIMIT,
            limit => limit.min(MAX_SEARCH_LIMIT),
        };
        let (records, total) = self.db.search(source.name, &key, name_contains, request.offset, limit).await?;
        Ok(SearchResponse { records, total, partition: Some(PartitionKey { source: source.name.to_owned(), key }) })
    }
}
