//! Mobile RPC: routes a device's `RpcCall` to the backend `MobileService` configured for its
//! service name, with the authenticated caller and a capped deadline, and sends the
//! `RpcReply` back on the device's socket.
//!
//! - [`RpcRouter`]: the services (lazily connected clients and their concurrency limits),
//!   the limits and the [`metrics::RpcMetrics`]; one per server.
//! - [`RpcCalls`]: one device connection's calls in flight. Each call runs on a task of its
//!   own, so a slow backend never holds up the session's sync traffic; dropping or
//!   [`RpcCalls::cancel_all`] (the device disconnected) cancels them all toward their
//!   backends.
//! - [`RpcError`]: why a call failed, and its class.
//! - `grpc`: the tonic client, the only file here that touches tonic.
//! - [`metrics`]: calls, outcomes and latency per service and method.
//!
//! Limits answer at once rather than queue: a payload above `rpc.max_payload_bytes` is
//! BAD_REQUEST; a device with `rpc.max_in_flight_per_device` calls running, or a service with
//! its `max_in_flight`, gets RESOURCE_EXHAUSTED.

pub mod grpc;
pub mod metrics;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use syncline_proto::mobile_sdk::MobileError;
use syncline_proto::v1::{self, InvokeRequest, RpcCaller, ServerFrame, rpc_reply, server_frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use self::grpc::MobileConnection;
use self::metrics::{Outcome, RpcMetrics, UNKNOWN_SERVICE};
use crate::auth::Identity;
use crate::config::RpcSettings;
use crate::error::ErrorClass;
use crate::reply::ConnectionReply;

/// Longest call id, service name and method name accepted (bytes).
pub const MAX_RPC_NAME_BYTES: usize = 128;

/// The message sent to a device in place of an internal error's details.
const INTERNAL_ERROR_MESSAGE: &str = "the backend service failed; the details are in its logs";

/// Why a device's call failed. Each variant has one class ([`RpcError::class`]), which gives
/// its device `ErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The call id, service or method name is empty or too long, or the call id is already
    /// in flight on this connection.
    #[error("{0}")]
    InvalidCall(String),
    /// The request payload is larger than `rpc.max_payload_bytes`.
    #[error("the payload is {bytes} bytes; at most {max} are accepted")]
    PayloadTooLarge { bytes: usize, max: usize },
    /// No backend is configured for the service name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The device has `rpc.max_in_flight_per_device` calls running.
    #[error("at most {limit} calls may be in flight per device; wait for a reply")]
    DeviceBusy { limit: usize },
    /// The service has its `max_in_flight` calls running.
    #[error("service {service:?} has {limit} calls in flight; retry later")]
    ServiceBusy { service: String, limit: usize },
    /// The deadline passed before the backend answered.
    #[error("no reply within {}ms", deadline.as_millis())]
    DeadlineExceeded { deadline: Duration },
    /// The backend's reply payload is larger than `rpc.max_payload_bytes`.
    #[error("the backend's reply is {bytes} bytes; at most {max} are relayed")]
    ReplyTooLarge { bytes: usize, max: usize },
    /// The backend answered with an error (or could not be reached: `Unavailable`).
    #[error("{0}")]
    Backend(MobileError),
}

impl RpcError {
    /// Returns the class of this error (its device code is the one `rpc.proto` documents).
    pub fn class(&self) -> ErrorClass {
        match self {
            RpcError::InvalidCall(_) | RpcError::PayloadTooLarge { .. } => ErrorClass::BadRequest,
            RpcError::UnknownService(_) => ErrorClass::NotFound,
            RpcError::DeviceBusy { .. } | RpcError::ServiceBusy { .. } => ErrorClass::ResourceExhausted,
            RpcError::DeadlineExceeded { .. } => ErrorClass::Timeout,
            RpcError::ReplyTooLarge { .. } => ErrorClass::Internal,
            RpcError::Backend(error) => match error {
                MobileError::NotFound(_) => ErrorClass::NotFound,
                MobileError::InvalidArgument(_) => ErrorClass::BadRequest,
                MobileError::PermissionDenied(_) => ErrorClass::Forbidden,
                MobileError::Unavailable(_) => ErrorClass::Unavailable,
                MobileError::DeadlineExceeded(_) => ErrorClass::Timeout,
                MobileError::ResourceExhausted(_) => ErrorClass::ResourceExhausted,
                MobileError::Internal(_) => ErrorClass::Internal,
            },
        }
    }

    /// Returns the message for the device: the backend's own message for its errors, a
    /// generic one for internal failures.
    pub fn device_message(&self) -> String {
        match self {
            RpcError::Backend(MobileError::Internal(_)) => INTERNAL_ERROR_MESSAGE.to_owned(),
            RpcError::Backend(error) => error.message().to_owned(),
            RpcError::InvalidCall(_)
            | RpcError::PayloadTooLarge { .. }
            | RpcError::UnknownService(_)
            | RpcError::DeviceBusy { .. }
            | RpcError::ServiceBusy { .. }
            | RpcError::DeadlineExceeded { .. }
            | RpcError::ReplyTooLarge { .. } => self.to_string(),
        }
    }

    /// Returns the metrics outcome of this error (a label per class a call can end with).
    fn outcome(&self) -> Outcome {
        match self.class() {
            ErrorClass::BadRequest => Outcome::BadRequest,
            ErrorClass::NotFound => Outcome::NotFound,
            ErrorClass::Forbidden => Outcome::Forbidden,
            ErrorClass::Unavailable => Outcome::Unavailable,
            ErrorClass::Timeout => Outcome::Timeout,
            ErrorClass::ResourceExhausted => Outcome::ResourceExhausted,
            ErrorClass::Internal
            | ErrorClass::UnknownSource
            | ErrorClass::Conflict
            | ErrorClass::Unauthenticated
            | ErrorClass::Unimplemented
            | ErrorClass::UnsupportedVersion => Outcome::Internal,
        }
    }
}

/// One configured backend service.
struct RoutedService {
    connection: MobileConnection,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

/// Routes device calls to backend services; one per server.
pub struct RpcRouter {
    settings: RpcSettings,
    services: BTreeMap<String, RoutedService>,
    metrics: RpcMetrics,
    tracker: TaskTracker,
}

impl RpcRouter {
    /// Returns a router for the configured services (clients connect on first use); call
    /// tasks are spawned on `tracker`.
    pub fn new(settings: &RpcSettings, tracker: TaskTracker) -> anyhow::Result<Arc<Self>> {
        let mut services = BTreeMap::new();
        for (name, service) in &settings.services {
            let connection =
                MobileConnection::lazy(&service.endpoint, settings.max_payload_bytes).map_err(|error| {
                    anyhow::anyhow!("rpc.services.{name}.endpoint {:?} is not usable: {error}", service.endpoint)
                })?;
            tracing::info!(service = %name, endpoint = %service.endpoint, "rpc service routed");
            services.insert(
                name.clone(),
                RoutedService {
                    connection,
                    in_flight: Arc::new(Semaphore::new(service.max_in_flight)),
                    max_in_flight: service.max_in_flight,
                },
            );
        }
        Ok(Arc::new(Self { settings: settings.clone(), services, metrics: RpcMetrics::default(), tracker }))
    }

    /// Returns the call counters.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    /// Returns the calls of a new device connection, whose replies go to `reply`.
    pub fn connection_calls(self: &Arc<Self>, reply: Arc<dyn ConnectionReply>) -> RpcCalls {
        let cancel = CancellationToken::new();
        RpcCalls {
            router: self.clone(),
            in_flight: Arc::new(Semaphore::new(self.settings.max_in_flight_per_device)),
            call_ids: Arc::new(Mutex::new(HashSet::new())),
            reply,
            cancel: cancel.clone(),
            _cancel_on_drop: cancel.drop_guard(),
        }
    }

    /// Returns the deadline of a call that asked for `deadline_ms` (0: the default).
    fn deadline(&self, deadline_ms: u32) -> Duration {
        match deadline_ms {
            0 => self.settings.default_deadline,
            asked => Duration::from_millis(u64::from(asked)).min(self.settings.max_deadline),
        }
    }
}

/// One device connection's RPC calls in flight. Dropping it cancels them.
pub struct RpcCalls {
    router: Arc<RpcRouter>,
    /// Permits of this connection's calls in flight.
    in_flight: Arc<Semaphore>,
    /// Call ids in flight, so that replies are unambiguous.
    call_ids: Arc<Mutex<HashSet<String>>>,
    /// The connection the replies go to.
    reply: Arc<dyn ConnectionReply>,
    cancel: CancellationToken,
    _cancel_on_drop: DropGuard,
}

/// A call that passed the checks and holds its concurrency permits.
struct AdmittedCall {
    connection: MobileConnection,
    request: InvokeRequest,
    deadline: Duration,
    _device_permit: OwnedSemaphorePermit,
    _service_permit: OwnedSemaphorePermit,
}

impl RpcCalls {
    /// Starts `call` for `caller`: checks it, then runs it on a task of its own that sends
    /// the `RpcReply` to the connection. A call refused by the checks is answered before
    /// this returns.
    pub async fn start(&self, call: v1::RpcCall, caller: &Identity) {
        let started = Instant::now();
        let router = &self.router;
        let admitted = self.admit(&call, caller);
        let (service, method, call_id) = (call.service, call.method, call.call_id);
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                let counted_service =
                    if router.services.contains_key(&service) { service.as_str() } else { UNKNOWN_SERVICE };
                router.metrics.record(counted_service, &method, &call_id, error.outcome(), started.elapsed());
                self.reply.reply(reply_frame(&call_id, Err(&error))).await;
                return;
            }
        };
        let router = router.clone();
        let reply = self.reply.clone();
        let cancel = self.cancel.clone();
        let call_ids = self.call_ids.clone();
        let span = tracing::debug_span!("rpc", service = %service, method = %method, call_id = %call_id);
        self.router.tracker.spawn(
            async move {
                let max_reply = router.settings.max_payload_bytes;
                let deadline = admitted.deadline;
                let invoke = admitted.connection.invoke(admitted.request, deadline);
                let result = tokio::select! {
                    // The device is gone: dropping the call cancels it on the backend.
                    () = cancel.cancelled() => None,
                    outcome = tokio::time::timeout(deadline, invoke) => Some(match outcome {
                        Err(_elapsed) => Err(RpcError::DeadlineExceeded { deadline }),
                        // The gRPC client enforces the same deadline and may fail the call
                        // (as cancelled) a moment before the timer here fires.
                        Ok(Err(_)) if started.elapsed() >= deadline => Err(RpcError::DeadlineExceeded { deadline }),
                        Ok(Err(error)) => Err(RpcError::Backend(error)),
                        Ok(Ok(payload)) if payload.len() > max_reply => {
                            Err(RpcError::ReplyTooLarge { bytes: payload.len(), max: max_reply })
                        }
                        Ok(Ok(payload)) => Ok(payload),
                    }),
                };
                drop((admitted._device_permit, admitted._service_permit));
                call_ids.lock().remove(&call_id);
                let latency = started.elapsed();
                match result {
                    None => router.metrics.record(&service, &method, &call_id, Outcome::Cancelled, latency),
                    Some(result) => {
                        let outcome = result.as_ref().map_or_else(RpcError::outcome, |_| Outcome::Ok);
                        router.metrics.record(&service, &method, &call_id, outcome, latency);
                        reply.reply(reply_frame(&call_id, result.as_ref().map(Vec::as_slice))).await;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Cancels every call in flight (their devices get no reply).
    pub fn cancel_all(&self) {
        self.cancel.cancel();
    }

    /// Checks a call against the limits and takes its permits.
    fn admit(&self, call: &v1::RpcCall, caller: &Identity) -> Result<AdmittedCall, RpcError> {
        let router = &self.router;
        let name_ok = |name: &str| !name.is_empty() && name.len() <= MAX_RPC_NAME_BYTES;
        if !name_ok(&call.call_id) {
            return Err(RpcError::InvalidCall(format!("call_id must be 1 to {MAX_RPC_NAME_BYTES} bytes")));
        }
        let max_payload = router.settings.max_payload_bytes;
        if call.payload.len() > max_payload {
            return Err(RpcError::PayloadTooLarge { bytes: call.payload.len(), max: max_payload });
        }
        let Some(service) = router.services.get(&call.service) else {
            return Err(RpcError::UnknownService(call.service.clone()));
        };
        if !name_ok(&call.method) {
            return Err(RpcError::InvalidCall(format!("method must be 1 to {MAX_RPC_NAME_BYTES} bytes")));
        }
        let device_permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RpcError::DeviceBusy { limit: router.settings.max_in_flight_per_device })?;
        let service_permit = service
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RpcError::ServiceBusy { service: call.service.clone(), limit: service.max_in_flight })?;
        if !self.call_ids.lock().insert(call.call_id.clone()) {
            return Err(RpcError::InvalidCall(format!("call {:?} is already in flight", call.call_id)));
        }
        let deadline = router.deadline(call.deadline_ms);
        let deadline_unix_ms = SystemTime::now()
            .checked_add(deadline)
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        let request = InvokeRequest {
            service: call.service.clone(),
            method: call.method.clone(),
            payload: call.payload.clone(),
            caller: Some(RpcCaller {
                user_id: caller.user_id.clone(),
                client_id: caller.client_id.clone(),
                entitlements: caller.entitlements.iter().map(|(source, key)| format!("{source}:{key}")).collect(),
            }),
            deadline_unix_ms,
            call_id: call.call_id.clone(),
        };
        Ok(AdmittedCall {
            connection: service.connection.clone(),
            request,
            deadline,
            _device_permit: device_permit,
            _service_permit: service_permit,
        })
    }
}

/// Returns the `RpcReply` frame of a call's result.
fn reply_frame(call_id: &str, result: Result<&[u8], &RpcError>) -> ServerFrame {
    let result = match result {
        Ok(payload) => rpc_reply::Result::Payload(payload.to_vec()),
        Err(error) => rpc_reply::Result::Error(v1::Error {
            code: error.class().error_code() as i32,
            message: error.device_message(),
            fatal: false,
            source: String::new(),
            key: String::new(),
        }),
    };
    ServerFrame {
        msg: Some(server_frame::Msg::RpcReply(v1::RpcReply { call_id: call_id.to_owned(), result: Some(result) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RpcServiceSettings;

    fn router(max_per_device: usize, max_per_service: usize) -> Arc<RpcRouter> {
        let mut settings = RpcSettings { max_in_flight_per_device: max_per_device, ..RpcSettings::default() };
        settings.services.insert(
            "crm".into(),
            RpcServiceSettings { endpoint: "http://127.0.0.1:9".into(), max_in_flight: max_per_service },
        );
        RpcRouter::new(&settings, TaskTracker::new()).unwrap()
    }

    fn call(call_id: &str, service: &str, method: &str) -> v1::RpcCall {
        v1::RpcCall {
            call_id: call_id.into(),
            service: service.into(),
            method: method.into(),
            payload: vec![],
            deadline_ms: 0,
        }
    }

    /// A connection whose replies go nowhere (these tests check admission only).
    struct NoReplies;

    impl ConnectionReply for NoReplies {
        fn reply(&self, _frame: v1::ServerFrame) -> crate::reply::ReplyFuture<'_> {
            Box::pin(async {})
        }
    }

    fn caller() -> Identity {
        Identity { user_id: "u1".into(), client_id: "c1".into(), entitlements: [("Team".into(), "t1".into())].into() }
    }

    #[tokio::test]
    async fn checks_come_in_order_and_limits_hold_permits() {
        let router = router(2, 3);
        let calls = router.connection_calls(Arc::new(NoReplies));
        let error = |result: Result<AdmittedCall, RpcError>| result.err().map(|error| error.class());
        assert_eq!(error(calls.admit(&call("", "crm", "M"), &caller())), Some(ErrorClass::BadRequest));
        assert_eq!(error(calls.admit(&call("1", "nope", "M"), &caller())), Some(ErrorClass::NotFound));
        assert_eq!(error(calls.admit(&call("1", "crm", ""), &caller())), Some(ErrorClass::BadRequest));
        let mut big = call("1", "crm", "M");
        big.payload = vec![0; router.settings.max_payload_bytes + 1];
        assert_eq!(error(calls.admit(&big, &caller())), Some(ErrorClass::BadRequest));

        let first = calls.admit(&call("1", "crm", "M"), &caller()).unwrap();
        assert_eq!(first.request.caller.as_ref().unwrap().entitlements, vec!["Team:t1".to_owned()]);
        assert_eq!(first.deadline, router.settings.default_deadline);
        let _second = calls.admit(&call("2", "crm", "M"), &caller()).unwrap();
        assert_eq!(error(calls.admit(&call("3", "crm", "M"), &caller())), Some(ErrorClass::ResourceExhausted));
        let other_device = router.connection_calls(Arc::new(NoReplies));
        let _third = other_device.admit(&call("1", "crm", "M"), &caller()).unwrap();
        let error_of_fourth = other_device.admit(&call("2", "crm", "M"), &caller()).err().unwrap();
        assert!(matches!(error_of_fourth, RpcError::ServiceBusy { limit: 3, .. }), "{error_of_fourth:?}");
        drop(first);
        calls.call_ids.lock().remove("1");
        assert!(calls.admit(&call("1", "crm", "M"), &caller()).is_ok());
    }

    #[tokio::test]
    async fn deadlines_default_and_are_capped() {
        let router = router(1, 1);
        assert_eq!(router.deadline(0), router.settings.default_deadline);
        assert_eq!(router.deadline(5), Duration::from_millis(5));
        assert_eq!(router.deadline(u32::MAX), router.settings.max_deadline);
    }

    #[test]
    fn backend_errors_keep_their_kind_and_hide_internal_details() {
        let internal = RpcError::Backend(MobileError::Internal("stack trace".into()));
        assert_eq!(internal.class(), ErrorClass::Internal);
        assert!(!internal.device_message().contains("stack trace"));
        let denied = RpcError::Backend(MobileError::PermissionDenied("not your deal".into()));
        assert_eq!(denied.class(), ErrorClass::Forbidden);
        assert_eq!(denied.device_message(), "not your deal");
    }
}
