//! The Rust Channel SDK: implement [`ChannelBackend`] and call [`serve`] to expose a source of
//! backend data to Syncline as a `syncline.v1.Channel` gRPC service.
//!
//! This module (with its sibling `mobile_sdk`) is the one place in `syncline-proto` that does
//! I/O: [`serve`] binds a tonic server to a listener and runs it until a shutdown future
//! completes. Everything else in the crate stays pure. It lives here (rather than in a crate of its own) so that a backend team
//! depends on one crate for the wire types and the server glue.
//!
//! The pieces:
//! - [`ChannelBackend`]: one async method per RPC, taking the plain request messages and
//!   returning `Result<_, ChannelError>`. `authenticate`, `search` and `watch` are optional
//!   (they answer [`ChannelError::Unimplemented`] unless overridden).
//! - [`ChannelError`]: the closed set of errors a backend returns, and the only mapping
//!   between them and gRPC status codes ([`ChannelError::code`], [`ChannelError::from_status`]).
//! - [`WriteOutcome`]: what a write did (written, or refused with the current record).
//! - [`ChannelGrpcService`]: the adapter that implements the generated tonic trait for any
//!   backend; [`serve`] runs it on a `TcpListener`.
//! - [`passwords`]: a bounded argon2 pool for backends and Syncline, for `authenticate`:
//!   password checks on a few dedicated threads with reused memory, behind a bounded queue.
//!
//! # Example
//!
//! An in-memory `Note` source, partitioned per user:
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//!
//! use syncline_proto::sdk::{self, ChannelBackend, ChannelError, RecordStream, WriteOutcome};
//! use syncline_proto::v1::{DescribeResponse, QueryRequest, Record, SourceDescription, WriteRequest};
//!
//! #[derive(Default)]
//! struct Notes {
//!     // (user id, note id) -> record
//!     notes: Mutex<BTreeMap<(String, String), Record>>,
//! }
//!
//! #[tonic::async_trait]
//! impl ChannelBackend for Notes {
//!     async fn describe(&self) -> sdk::Result<DescribeResponse> {
//!         let source = SourceDescription {
//!             name: "Note".into(),
//!             partitioning: "user".into(),
//!             capabilities: vec!["create".into(), "update".into(), "delete".into()],
//!             fields: vec![],
//!         };
//!         Ok(DescribeResponse { sources: vec![source] })
//!     }
//!
//!     async fn query(&self, request: QueryRequest) -> sdk::Result<RecordStream> {
//!         let user = request.partition.unwrap_or_default().key;
//!         let notes = self.notes.lock().unwrap();
//!         let records: Vec<_> =
//!             notes.iter().filter(|((owner, _), _)| *owner == user).map(|(_, record)| Ok(record.clone())).collect();
//!         Ok(Box::pin(tokio_stream::iter(records)))
//!     }
//!
//!     async fn create(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
//!         let user = request.partition.unwrap_or_default().key;
//!         let mut notes = self.notes.lock().unwrap();
//!         let record = Record {
//!             id: format!("note-{}", notes.len() + 1),
//!             fields: request.record.unwrap_or_default().fields,
//!             version: 1,
//!         };
//!         notes.insert((user, record.id.clone()), record.clone());
//!         Ok(WriteOutcome::Written(record))
//!     }
//!
//!     async fn update(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
//!         let user = request.partition.unwrap_or_default().key;
//!         let change = request.record.unwrap_or_default();
//!         let mut notes = self.notes.lock().unwrap();
//!         let Some(current) = notes.get_mut(&(user, change.id.clone())) else {
//!             return Err(ChannelError::NotFound(format!("no note {}", change.id)));
//!         };
//!         if request.base_version != 0 && request.base_version != current.version {
//!             return Ok(WriteOutcome::Conflict(current.clone()));
//!         }
//!         current.fields.extend(change.fields);
//!         current.version += 1;
//!         Ok(WriteOutcome::Written(current.clone()))
//!     }
//!
//!     async fn delete(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
//!         let user = request.partition.unwrap_or_default().key;
//!         let id = request.record.unwrap_or_default().id;
//!         self.notes.lock().unwrap().remove(&(user, id.clone()));
//!         Ok(WriteOutcome::Written(Record { id, ..Record::default() }))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:7801").await?;
//!     sdk::serve(Notes::default(), listener, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
//!     Ok(())
//! }
//! ```

pub mod passwords;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::v1::channel_server::{Channel, ChannelServer};
use crate::v1::{
    AuthenticateRequest, AuthenticateResponse, BlobChunk, BlobRequest, ChangeBatch, DescribeRequest, DescribeResponse,
    QueryRequest, Record, SearchRequest, SearchResponse, WatchRequest, WriteRequest, WriteResponse, write_response,
};

/// The result type of every backend operation.
pub type Result<T, E = ChannelError> = std::result::Result<T, E>;

/// The records of a `Query`, in any order. An `Err` item ends the call with that error.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<Record>> + Send + 'static>>;

/// The change batches of a `Watch`, in commit order. An `Err` item ends the call with that
/// error; Syncline resumes from the last batch's `resume_token`.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<ChangeBatch>> + Send + 'static>>;

/// The bytes of a blob a channel keeps itself (`ReadBlob`), in order. An `Err` item ends the
/// call with that error.
pub type BlobChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk>> + Send + 'static>>;

/// Most bytes in one [`BlobChunk`] (channel.proto): a chunk stays far below gRPC's message
/// limit.
pub const MAX_BLOB_CHUNK_BYTES: usize = 1024 * 1024;

/// How often the HTTP/2 server pings an idle connection, so that a `Watch` whose client
/// vanished (no FIN, e.g. a dropped NAT entry) is noticed and its stream dropped.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a keepalive ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The message sent in place of an [`ChannelError::Internal`] message: internal details are
/// logged by the channel and never sent to its caller.
const INTERNAL_ERROR_MESSAGE: &str = "internal error in the channel backend";

/// Errors a channel backend returns. Each variant is one gRPC status code; the message is
/// sent to Syncline (except for `Internal`, whose message is only logged) and, for write
/// errors, shown to the device that made the change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The request is malformed or names an unknown source, field or partition (permanent).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The record to update does not exist (permanent).
    #[error("not found: {0}")]
    NotFound(String),
    /// The record to create already exists (permanent).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The caller may not do this (permanent).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller's identity is missing or not accepted (permanent until it logs in again).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The backend's state does not allow the operation, e.g. a business rule refuses the
    /// write or a resume token is no longer usable (permanent).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The backend cannot serve right now (transient: Syncline retries with backoff).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend did not finish in time (transient: Syncline retries with backoff).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The channel does not implement this operation.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// A bug or an unexpected failure inside the backend. The message is logged by the
    /// channel and replaced by a generic one on the wire.
    #[error("internal error: {0}")]
    Internal(String),
}

// The mapping between `ChannelError` and gRPC status codes: `code` and `from_status` are the
// only two places that know it, kept side by side so that they stay inverse of each other.
impl ChannelError {
    /// Returns the gRPC status code this error is sent as.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Returns the error a channel client received as `status` (the inverse of
    /// [`ChannelError::code`]). Codes a channel is not expected to send are folded into the
    /// nearest variant by what the caller should do: `Cancelled`, `Aborted` and
    /// `ResourceExhausted` are retryable (`Unavailable`), `OutOfRange` is a bad request
    /// (`InvalidArgument`), and `Ok`, `Unknown` and `DataLoss` are `Internal`.
    pub fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(message),
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::Unavailable | Code::Cancelled | Code::Aborted | Code::ResourceExhausted => Self::Unavailable(message),
            Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            Code::Unimplemented => Self::Unimplemented(message),
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Ok => Self::Internal(message),
        }
    }

    /// Returns the error's message, without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidArgument(message)
            | Self::NotFound(message)
            | Self::AlreadyExists(message)
            | Self::PermissionDenied(message)
            | Self::Unauthenticated(message)
            | Self::FailedPrecondition(message)
            | Self::Unavailable(message)
            | Self::DeadlineExceeded(message)
            | Self::Unimplemented(message)
            | Self::Internal(message) => message,
        }
    }

    /// Returns true when retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::DeadlineExceeded(_))
    }
}

impl From<ChannelError> for Status {
    /// Converts with the message unchanged; the serving adapter additionally hides
    /// `Internal` messages (see [`ChannelGrpcService`]).
    fn from(error: ChannelError) -> Self {
        Status::new(error.code(), error.message().to_owned())
    }
}

impl From<Status> for ChannelError {
    fn from(status: Status) -> Self {
        Self::from_status(&status)
    }
}

/// What a `Create`, `Update` or `Delete` did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The write was applied; the record as stored (for `Create`, with the backend's id; for
    /// `Delete`, at least the id).
    Written(Record),
    /// The write was refused because the device based it on a stale version; the backend's
    /// current record.
    Conflict(Record),
}

impl From<WriteOutcome> for WriteResponse {
    fn from(outcome: WriteOutcome) -> Self {
        let result = match outcome {
            WriteOutcome::Written(record) => write_response::Result::Record(record),
            WriteOutcome::Conflict(record) => write_response::Result::Conflict(record),
        };
        WriteResponse { result: Some(result) }
    }
}

impl TryFrom<WriteResponse> for WriteOutcome {
    type Error = ChannelError;

    /// Reads a channel's answer on the client side; an answer with neither `record` nor
    /// `conflict` is a channel bug.
    fn try_from(response: WriteResponse) -> Result<Self> {
        match response.result {
            Some(write_response::Result::Record(record)) => Ok(Self::Written(record)),
            Some(write_response::Result::Conflict(record)) => Ok(Self::Conflict(record)),
            None => Err(ChannelError::Internal("write response has neither record nor conflict".to_owned())),
        }
    }
}

/// A backend's implementation of a channel: one method per `syncline.v1.Channel` RPC.
///
/// Methods take `&self` and may run concurrently; work that blocks (database I/O) belongs in
/// `tokio::task::spawn_blocking`. A call whose client goes away is dropped at its next
/// `.await`, so methods must not leave shared state half-updated across an await.
///
/// See `channel.proto` for the meaning of every request and response field.
#[tonic::async_trait]
pub trait ChannelBackend: Send + Sync + 'static {
    /// Describes the sources this channel serves.
    async fn describe(&self) -> Result<DescribeResponse>;

    /// Checks a device user's credentials. A wrong password is `Ok` with `ok = false`, not an
    /// error.
    async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse> {
        let _ = request;
        Err(ChannelError::Unimplemented("this channel does not authenticate users".to_owned()))
    }

    /// Streams every current record of `request.partition`. An error returned here fails
    /// the call before any record is sent.
    async fn query(&self, request: QueryRequest) -> Result<RecordStream>;

    /// Streams change batches after `request.resume_token`, then follows new changes until
    /// the call is dropped. Return only once the starting position is fixed, so that a
    /// change committed after the call has been answered is never missed.
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        let _ = request;
        Err(ChannelError::Unimplemented("this channel has no change feed".to_owned()))
    }

    /// Creates a record; the device's temporary id is in `request.record.id`.
    async fn create(&self, request: WriteRequest) -> Result<WriteOutcome>;

    /// Updates the given fields of a record, unless `request.base_version` is stale.
    async fn update(&self, request: WriteRequest) -> Result<WriteOutcome>;

    /// Deletes a record.
    async fn delete(&self, request: WriteRequest) -> Result<WriteOutcome>;

    /// Searches a source.
    async fn search(&self, request: SearchRequest) -> Result<SearchResponse> {
        let _ = request;
        Err(ChannelError::Unimplemented("this channel does not support search".to_owned()))
    }

    /// Streams the bytes of a blob this channel keeps itself, from `request.offset`, in
    /// chunks of at most [`MAX_BLOB_CHUNK_BYTES`]. The default, `Unimplemented`, says that
    /// Syncline's blob store holds every blob of this channel's records.
    async fn read_blob(&self, request: BlobRequest) -> Result<BlobChunkStream> {
        let _ = request;
        Err(ChannelError::Unimplemented("this channel keeps no blobs: Syncline's blob store has them".to_owned()))
    }
}

/// Serves any [`ChannelBackend`] as the generated tonic `Channel` service.
///
/// It converts errors at the boundary (logging each once, hiding `Internal` messages) and ends
/// open `Query` and `Watch` streams with `UNAVAILABLE` when its shutdown token is cancelled,
/// since a graceful server stop otherwise waits for never-ending `Watch` calls.
pub struct ChannelGrpcService<B: ?Sized> {
    backend: Arc<B>,
    shutdown: CancellationToken,
}

impl<B: ChannelBackend> ChannelGrpcService<B> {
    /// Returns an adapter for `backend` that is never told to shut down.
    pub fn new(backend: B) -> Self {
        Self::with_shutdown(Arc::new(backend), CancellationToken::new())
    }
}

impl<B: ChannelBackend + ?Sized> ChannelGrpcService<B> {
    /// Returns an adapter for a shared `backend` whose streams end when `shutdown` is
    /// cancelled.
    pub fn with_shutdown(backend: Arc<B>, shutdown: CancellationToken) -> Self {
        Self { backend, shutdown }
    }

    /// Returns the tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> ChannelServer<Self> {
        ChannelServer::new(self)
    }

    /// Runs one unary call inside a span and converts its error.
    async fn unary<T, U>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<Response<U>, Status>
    where
        U: From<T>,
    {
        let span = tracing::debug_span!("channel_rpc", op);
        match call.instrument(span).await {
            Ok(reply) => Ok(Response::new(reply.into())),
            Err(error) => Err(status_at_boundary(op, error)),
        }
    }

    /// Converts a backend stream into a tonic stream that ends at shutdown.
    fn stream<T: Send + 'static>(
        &self,
        op: &'static str,
        items: Pin<Box<dyn Stream<Item = Result<T>> + Send + 'static>>,
    ) -> BoxedStatusStream<T> {
        let items = items.map(move |item| item.map_err(|error| status_at_boundary(op, error)));
        end_at_shutdown(Box::pin(items), self.shutdown.clone())
    }
}

/// A stream of replies as tonic sends them.
pub type BoxedStatusStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Logs `error` once (Internal at error level, the rest at debug) and returns the status to
/// send; an Internal message is replaced by a generic one.
fn status_at_boundary(op: &'static str, error: ChannelError) -> Status {
    match &error {
        ChannelError::Internal(message) => {
            tracing::error!(op, message, "channel backend failed");
            Status::new(Code::Internal, INTERNAL_ERROR_MESSAGE)
        }
        ChannelError::InvalidArgument(_)
        | ChannelError::NotFound(_)
        | ChannelError::AlreadyExists(_)
        | ChannelError::PermissionDenied(_)
        | ChannelError::Unauthenticated(_)
        | ChannelError::FailedPrecondition(_)
        | ChannelError::Unavailable(_)
        | ChannelError::DeadlineExceeded(_)
        | ChannelError::Unimplemented(_) => {
            tracing::debug!(op, %error, "channel call refused");
            error.into()
        }
    }
}

/// Passes `items` through until `shutdown` is cancelled, then yields one `UNAVAILABLE` and
/// ends, so that the client resumes elsewhere or later.
fn end_at_shutdown<T: Send + 'static>(
    items: BoxedStatusStream<T>,
    shutdown: CancellationToken,
) -> BoxedStatusStream<T> {
    let state = Some((items, shutdown));
    Box::pin(stream::unfold(state, |state| async move {
        let (mut items, shutdown) = state?;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                Some((Err(Status::unavailable("channel is shutting down")), None))
            }
            item = items.next() => item.map(|item| (item, Some((items, shutdown)))),
        }
    }))
}

#[tonic::async_trait]
impl<B: ChannelBackend + ?Sized> Channel for ChannelGrpcService<B> {
    type QueryStream = BoxedStatusStream<Record>;
    type WatchStream = BoxedStatusStream<ChangeBatch>;
    type ReadBlobStream = BoxedStatusStream<BlobChunk>;

    async fn describe(&self, _request: Request<DescribeRequest>) -> Result<Response<DescribeResponse>, Status> {
        self.unary("describe", self.backend.describe()).await
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        self.unary("authenticate", self.backend.authenticate(request.into_inner())).await
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let records: Response<RecordStream> = self.unary("query", self.backend.query(request.into_inner())).await?;
        Ok(Response::new(self.stream("query", records.into_inner())))
    }

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let batches: Response<ChangeStream> = self.unary("watch", self.backend.watch(request.into_inner())).await?;
        Ok(Response::new(self.stream("watch", batches.into_inner())))
    }

    async fn create(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        self.unary("create", self.backend.create(request.into_inner())).await
    }

    async fn update(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        self.unary("update", self.backend.update(request.into_inner())).await
    }

    async fn delete(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        self.unary("delete", self.backend.delete(request.into_inner())).await
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        self.unary("search", self.backend.search(request.into_inner())).await
    }

    async fn read_blob(&self, request: Request<BlobRequest>) -> Result<Response<Self::ReadBlobStream>, Status> {
        let chunks: Response<BlobChunkStream> =
            self.unary("read_blob", self.backend.read_blob(request.into_inner())).await?;
        Ok(Response::new(self.stream("read_blob", chunks.into_inner())))
    }
}

/// Serves `backend` on `listener` until `shutdown` completes.
///
/// At shutdown the listener is closed, open `Query`/`Watch` streams end with `UNAVAILABLE`
/// (Syncline resumes from its stored token), and in-flight unary calls are allowed to
/// finish before this returns.
pub async fn serve<B: ChannelBackend>(
    backend: B,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_shared(Arc::new(backend), listener, shutdown).await
}

/// Like [`serve`], for a backend that is also used elsewhere (or a `dyn ChannelBackend`).
pub async fn serve_shared<B: ChannelBackend + ?Sized>(
    backend: Arc<B>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let stop_streams = CancellationToken::new();
    let service = ChannelGrpcService::with_shutdown(backend, stop_streams.clone()).into_server();
    let signal = async move {
        shutdown.await;
        tracing::info!("channel shutting down");
        stop_streams.cancel();
    };
    server_builder().add_service(service).serve_with_incoming_shutdown(incoming(listener), signal).await
}

/// Returns a gRPC server builder with the SDK's HTTP/2 keepalive settings.
pub(crate) fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
}

/// Returns the accepted connections of `listener`, with Nagle's algorithm off.
pub(crate) fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|connection| {
        // Change batches and replies are small and latency-sensitive; do not let Nagle hold
        // them back.
        connection.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        })
    })
}

#[cfg(test)]
mod tests;
