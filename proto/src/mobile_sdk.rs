//! The Rust Mobile RPC SDK: implement [`MobileBackend`] and call [`serve`] to expose business
//! operations to devices as a `syncline.v1.MobileService` gRPC service (see `rpc.proto`).
//!
//! - [`MobileBackend`]: one async method, [`MobileBackend::invoke`], taking an
//!   [`Invocation`] (service, method, payload, caller, deadline) and returning the reply
//!   payload or a [`MobileError`].
//! - [`MobileError`]: the closed set of errors a business operation returns, and the only
//!   mapping between them and gRPC status codes ([`MobileError::code`],
//!   [`MobileError::from_status`]).
//! - [`MobileGrpcService`]: the adapter implementing the generated tonic trait for any
//!   backend; [`serve`] runs it on a `TcpListener`, and [`serve_with_channel`] runs it on the
//!   same port as a channel (one endpoint for both in Syncline's config).
//!
//! A call whose device disconnects or whose deadline passes is cancelled by Syncline; tonic
//! then drops the `invoke` future at its next `.await`, so an operation must not leave shared
//! state half-updated across an await (commit in one transaction, as the CRM example does).
//!
//! # Example
//!
//! A `greeter` service with one method, `Hello`, answering with the caller's user id:
//!
//! ```no_run
//! use syncline_proto::mobile_sdk::{self, Invocation, MobileBackend, MobileError};
//!
//! struct Greeter;
//!
//! #[tonic::async_trait]
//! impl MobileBackend for Greeter {
//!     async fn invoke(&self, call: Invocation) -> mobile_sdk::Result<Vec<u8>> {
//!         match call.method.as_str() {
//!             "Hello" => {
//!                 let name = std::str::from_utf8(&call.payload)
//!                     .map_err(|_| MobileError::InvalidArgument("the payload must be UTF-8".into()))?;
//!                 Ok(format!("hello {name}, you are {}", call.caller.user_id).into_bytes())
//!             }
//!             _ => Err(call.unknown_method()),
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:7801").await?;
//!     mobile_sdk::serve(Greeter, listener, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
//!     Ok(())
//! }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::sdk::{self, ChannelBackend, ChannelGrpcService};
use crate::v1::mobile_service_server::{MobileService, MobileServiceServer};
use crate::v1::{InvokeRequest, InvokeResponse, RpcCaller};

/// The result type of a business operation.
pub type Result<T, E = MobileError> = std::result::Result<T, E>;

/// The message sent in place of an [`MobileError::Internal`] message: internal details are
/// logged by the backend and never sent to devices.
const INTERNAL_ERROR_MESSAGE: &str = "internal error in the backend service";

/// Errors a business operation returns. Each variant is one gRPC status code; the message
/// reaches the calling device (except for `Internal`, whose message is only logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MobileError {
    /// The method, or the thing it works on, does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The payload is malformed or the operation breaks a business rule.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The backend cannot serve right now; the device may retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish in time.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The backend is overloaded or a quota is used up.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A bug or an unexpected failure inside the backend. Logged by the backend and replaced
    /// by a generic message on the wire.
    #[error("internal error: {0}")]
    Internal(String),
}

// The mapping between `MobileError` and gRPC status codes: `code` and `from_status` are the
// only two places that know it, kept side by side so that they stay inverse of each other.
impl MobileError {
    /// Returns the gRPC status code this error is sent as.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NotFound,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Returns the error a MobileService client received as `status` (the inverse of
    /// [`MobileError::code`]). Other codes fold as `rpc.proto` documents: `Unimplemented`
    /// (the endpoint does not serve MobileService) is `NotFound`; `Cancelled` and `Aborted`
    /// are `Unavailable`; `OutOfRange`, `FailedPrecondition` and `AlreadyExists` are
    /// `InvalidArgument`; `Unauthenticated` is `PermissionDenied`; `Ok`, `Unknown` and
    /// `DataLoss` are `Internal`.
    pub fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound | Code::Unimplemented => Self::NotFound(message),
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition | Code::AlreadyExists => {
                Self::InvalidArgument(message)
            }
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied(message),
            Code::Unavailable | Code::Cancelled | Code::Aborted => Self::Unavailable(message),
            Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            Code::ResourceExhausted => Self::ResourceExhausted(message),
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Ok => Self::Internal(message),
        }
    }

    /// Returns the error's message, without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::NotFound(message)
            | Self::InvalidArgument(message)
            | Self::PermissionDenied(message)
            | Self::Unavailable(message)
            | Self::DeadlineExceeded(message)
            | Self::ResourceExhausted(message)
            | Self::Internal(message) => message,
        }
    }
}

impl From<MobileError> for Status {
    /// Converts with the message unchanged; the serving adapter additionally hides
    /// `Internal` messages (see [`MobileGrpcService`]).
    fn from(error: MobileError) -> Self {
        Status::new(error.code(), error.message().to_owned())
    }
}

impl From<Status> for MobileError {
    fn from(status: Status) -> Self {
        Self::from_status(&status)
    }
}

/// One call of a business operation, as the backend receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The service name the device called.
    pub service: String,
    /// The operation within the service.
    pub method: String,
    /// The device's request payload, unchanged.
    pub payload: Vec<u8>,
    /// Who is calling, as authenticated by Syncline.
    pub caller: RpcCaller,
    /// The device's id of this call.
    pub call_id: String,
    /// When the device stops waiting, if the request said.
    pub deadline: Option<SystemTime>,
}

impl Invocation {
    /// Returns the error for a method this backend does not serve.
    pub fn unknown_method(&self) -> MobileError {
        MobileError::NotFound(format!("service {:?} has no method {:?}", self.service, self.method))
    }

    /// Returns the time left before the deadline (`None` when there is no deadline, zero
    /// when it has passed).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|deadline| deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
    }
}

impl From<InvokeRequest> for Invocation {
    fn from(request: InvokeRequest) -> Self {
        let deadline = u64::try_from(request.deadline_unix_ms)
            .ok()
            .filter(|millis| *millis > 0)
            .and_then(|millis| UNIX_EPOCH.checked_add(Duration::from_millis(millis)));
        Self {
            service: request.service,
            method: request.method,
            payload: request.payload,
            caller: request.caller.unwrap_or_default(),
            call_id: request.call_id,
            deadline,
        }
    }
}

/// A backend's business operations: one method that dispatches on service and method.
///
/// Calls run concurrently and take `&self`; blocking work (database I/O) belongs in
/// `tokio::task::spawn_blocking`.
#[tonic::async_trait]
pub trait MobileBackend: Send + Sync + 'static {
    /// Runs one operation and returns its reply payload. Answer
    /// [`Invocation::unknown_method`] for methods (and services) this backend does not serve.
    async fn invoke(&self, call: Invocation) -> Result<Vec<u8>>;
}

/// Serves any [`MobileBackend`] as the generated tonic `MobileService`, converting errors at
/// the boundary (logging each once, hiding `Internal` messages).
pub struct MobileGrpcService<B: ?Sized> {
    backend: Arc<B>,
}

impl<B: MobileBackend> MobileGrpcService<B> {
    /// Returns an adapter for `backend`.
    pub fn new(backend: B) -> Self {
        Self::shared(Arc::new(backend))
    }
}

impl<B: MobileBackend + ?Sized> MobileGrpcService<B> {
    /// Returns an adapter for a shared `backend`.
    pub fn shared(backend: Arc<B>) -> Self {
        Self { backend }
    }

    /// Returns the tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> MobileServiceServer<Self> {
        MobileServiceServer::new(self)
    }
}

/// Logs `error` once (Internal at error level, the rest at debug) and returns the status to
/// send; an Internal message is replaced by a generic one.
fn status_at_boundary(service: &str, method: &str, error: MobileError) -> Status {
    match &error {
        MobileError::Internal(message) => {
            tracing::error!(service, method, message, "business operation failed");
            Status::new(Code::Internal, INTERNAL_ERROR_MESSAGE)
        }
        MobileError::NotFound(_)
        | MobileError::InvalidArgument(_)
        | MobileError::PermissionDenied(_)
        | MobileError::Unavailable(_)
        | MobileError::DeadlineExceeded(_)
        | MobileError::ResourceExhausted(_) => {
            tracing::debug!(service, method, %error, "business operation refused");
            error.into()
        }
    }
}

#[tonic::async_trait]
impl<B: MobileBackend + ?Sized> MobileService for MobileGrpcService<B> {
    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let call = Invocation::from(request.into_inner());
        let (service, method) = (call.service.clone(), call.method.clone());
        let span = tracing::debug_span!("mobile_rpc", service, method, call_id = call.call_id);
        match self.backend.invoke(call).instrument(span).await {
            Ok(payload) => Ok(Response::new(InvokeResponse { payload })),
            Err(error) => Err(status_at_boundary(&service, &method, error)),
        }
    }
}

/// Serves `backend` on `listener` until `shutdown` completes; calls in flight at shutdown
/// are allowed to finish before this returns.
pub async fn serve<B: MobileBackend>(
    backend: B,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = MobileGrpcService::new(backend).into_server();
    let signal = async move {
        shutdown.await;
        tracing::info!("mobile service shutting down");
    };
    sdk::server_builder().add_service(service).serve_with_incoming_shutdown(sdk::incoming(listener), signal).await
}

/// Serves a channel and a mobile backend on one `listener` (so that Syncline reaches both at
/// one endpoint) until `shutdown` completes. The channel's open `Query` and `Watch` streams
/// end as with [`sdk::serve`].
pub async fn serve_with_channel<C: ChannelBackend + ?Sized, M: MobileBackend + ?Sized>(
    channel: Arc<C>,
    mobile: Arc<M>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let stop_streams = CancellationToken::new();
    let channel = ChannelGrpcService::with_shutdown(channel, stop_streams.clone()).into_server();
    let mobile = MobileGrpcService::shared(mobile).into_server();
    let signal = async move {
        shutdown.await;
        tracing::info!("channel and mobile service shutting down");
        stop_streams.cancel();
    };
    sdk::server_builder()
        .add_service(channel)
        .add_service(mobile)
        .serve_with_incoming_shutdown(sdk::incoming(listener), signal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<(MobileError, Code)> {
        vec![
            (MobileError::NotFound("no such deal".into()), Code::NotFound),
            (MobileError::InvalidArgument("bad json".into()), Code::InvalidArgument),
            (MobileError::PermissionDenied("not yours".into()), Code::PermissionDenied),
            (MobileError::Unavailable("database locked".into()), Code::Unavailable),
            (MobileError::DeadlineExceeded("too slow".into()), Code::DeadlineExceeded),
            (MobileError::ResourceExhausted("quota".into()), Code::ResourceExhausted),
            (MobileError::Internal("disk on fire".into()), Code::Internal),
        ]
    }

    #[test]
    fn every_error_maps_to_its_code_and_back() {
        for (error, code) in every_error() {
            assert_eq!(error.code(), code, "{error}");
            let status = Status::from(error.clone());
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), error.message());
            assert_eq!(MobileError::from_status(&status), error);
        }
    }

    #[test]
    fn other_codes_fold_as_documented() {
        let fold = |code| MobileError::from_status(&Status::new(code, "m"));
        assert_eq!(fold(Code::Unimplemented), MobileError::NotFound("m".into()));
        assert_eq!(fold(Code::Cancelled), MobileError::Unavailable("m".into()));
        assert_eq!(fold(Code::FailedPrecondition), MobileError::InvalidArgument("m".into()));
        assert_eq!(fold(Code::Unauthenticated), MobileError::PermissionDenied("m".into()));
        assert_eq!(fold(Code::DataLoss), MobileError::Internal("m".into()));
    }

    #[test]
    fn an_invocation_reads_the_deadline_and_defaults_the_caller() {
        let call = Invocation::from(InvokeRequest {
            service: "crm".into(),
            method: "Nope".into(),
            deadline_unix_ms: 0,
            ..InvokeRequest::default()
        });
        assert_eq!(call.deadline, None);
        assert_eq!(call.caller, RpcCaller::default());
        assert!(matches!(call.unknown_method(), MobileError::NotFound(message) if message.contains("Nope")));
        let call = Invocation::from(InvokeRequest { deadline_unix_ms: 1_000, ..InvokeRequest::default() });
        assert_eq!(call.deadline, Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!(call.time_left(), Some(Duration::ZERO));
    }
}
