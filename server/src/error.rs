//! The one error-class seam: every server error enum says which [`ErrorClass`] it is
//! (`class()`), and this file alone maps a class to what a peer sees: the gRPC status code of
//! a backend-facing service, the device protocol's [`ErrorCode`], and the WebSocket close code
//! of an error that ends a device's connection.
//!
//! The set is small and closed, and grouped by what the caller should do. Besides the classes
//! every service has, it keeps the three the device protocol tells apart with codes of their
//! own: [`ErrorClass::UnknownSource`] (the source is not configured: stop syncing it),
//! [`ErrorClass::Unimplemented`] (the feature is not on this server yet) and
//! [`ErrorClass::UnsupportedVersion`] (update the app).

use syncline_proto::close_code;
use syncline_proto::v1::ErrorCode;

/// What kind of failure an error is, in terms of what its caller should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is malformed or breaks a limit of the protocol: do not retry it as is.
    BadRequest,
    /// The request names a source that is not configured.
    UnknownSource,
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the current state (a changed record, an existing user).
    Conflict,
    /// The caller's credentials or token are missing, wrong or expired: log in again.
    Unauthenticated,
    /// The caller may not do this (another user's partition, a locked device).
    Forbidden,
    /// A limit was hit (queue length, concurrency, connections): retry later.
    ResourceExhausted,
    /// A backend or the store cannot serve right now: retry later.
    Unavailable,
    /// A deadline passed.
    Timeout,
    /// The server (or a backend) failed; callers get a generic message, the details are logged.
    Internal,
    /// The feature is declared but not available on this server (or backend) yet.
    Unimplemented,
    /// The device speaks a protocol version this server does not: update the app.
    UnsupportedVersion,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 12] = [
        ErrorClass::BadRequest,
        ErrorClass::UnknownSource,
        ErrorClass::NotFound,
        ErrorClass::Conflict,
        ErrorClass::Unauthenticated,
        ErrorClass::Forbidden,
        ErrorClass::ResourceExhausted,
        ErrorClass::Unavailable,
        ErrorClass::Timeout,
        ErrorClass::Internal,
        ErrorClass::Unimplemented,
        ErrorClass::UnsupportedVersion,
    ];

    /// Returns the class whose device protocol code is `code` (see [`ErrorClass::error_code`]).
    pub fn from_error_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.error_code() as i32 == code)
    }

    /// Returns the device protocol's code of this class.
    pub fn error_code(self) -> ErrorCode {
        match self {
            ErrorClass::BadRequest => ErrorCode::BadRequest,
            ErrorClass::UnknownSource => ErrorCode::UnknownSource,
            ErrorClass::NotFound => ErrorCode::NotFound,
            ErrorClass::Conflict => ErrorCode::Conflict,
            ErrorClass::Unauthenticated => ErrorCode::Unauthenticated,
            ErrorClass::Forbidden => ErrorCode::Forbidden,
            ErrorClass::ResourceExhausted => ErrorCode::ResourceExhausted,
            ErrorClass::Unavailable => ErrorCode::Unavailable,
            ErrorClass::Timeout => ErrorCode::Timeout,
            ErrorClass::Internal => ErrorCode::Internal,
            ErrorClass::Unimplemented => ErrorCode::Unimplemented,
            ErrorClass::UnsupportedVersion => ErrorCode::UnsupportedVersion,
        }
    }

    /// Returns the gRPC status code of this class (Ingest's answers to backends).
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            // A backend naming an unknown source sent a bad argument.
            ErrorClass::BadRequest | ErrorClass::UnknownSource => tonic::Code::InvalidArgument,
            ErrorClass::NotFound => tonic::Code::NotFound,
            ErrorClass::Conflict => tonic::Code::AlreadyExists,
            ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorClass::Forbidden => tonic::Code::PermissionDenied,
            ErrorClass::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorClass::Unavailable => tonic::Code::Unavailable,
            ErrorClass::Timeout => tonic::Code::DeadlineExceeded,
            ErrorClass::Internal => tonic::Code::Internal,
            ErrorClass::Unimplemented => tonic::Code::Unimplemented,
            ErrorClass::UnsupportedVersion => tonic::Code::FailedPrecondition,
        }
    }

    /// Returns a gRPC status of this class with `message` (already generic for
    /// [`ErrorClass::Internal`]).
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }

    /// Returns the class of a gRPC status code a backend (a channel) answered with.
    pub fn of_grpc(code: tonic::Code) -> ErrorClass {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorClass::BadRequest,
            tonic::Code::NotFound => ErrorClass::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => ErrorClass::Conflict,
            tonic::Code::Unauthenticated => ErrorClass::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorClass::Forbidden,
            tonic::Code::ResourceExhausted => ErrorClass::ResourceExhausted,
            tonic::Code::Unavailable | tonic::Code::Aborted => ErrorClass::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorClass::Timeout,
            tonic::Code::Unimplemented => ErrorClass::Unimplemented,
            tonic::Code::Ok
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DataLoss => ErrorClass::Internal,
        }
    }

    /// Returns the HTTP status of this class (the admin API's answers).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::BadRequest | ErrorClass::UnsupportedVersion => 400,
            ErrorClass::Unauthenticated => 401,
            ErrorClass::Forbidden => 403,
            ErrorClass::NotFound | ErrorClass::UnknownSource => 404,
            ErrorClass::Conflict => 409,
            ErrorClass::ResourceExhausted => 429,
            ErrorClass::Internal => 500,
            ErrorClass::Unimplemented => 501,
            ErrorClass::Unavailable => 503,
            ErrorClass::Timeout => 504,
        }
    }

    /// Returns the admin API's error code of this class (the `code` of its JSON error bodies).
    pub fn api_code(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::UnknownSource => "unknown_source",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::ResourceExhausted => "resource_exhausted",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Internal => "internal",
            ErrorClass::Unimplemented => "unimplemented",
            ErrorClass::UnsupportedVersion => "unsupported_version",
        }
    }

    /// Returns the WebSocket close code that ends a device's connection for an error of this
    /// class, by what the device should do (see `close_code` and `device.proto`).
    pub fn close_code(self) -> u16 {
        match self {
            // Do not reconnect until something changes.
            ErrorClass::Unauthenticated => close_code::UNAUTHENTICATED,
            ErrorClass::Forbidden => close_code::FORBIDDEN,
            ErrorClass::UnsupportedVersion => close_code::UPGRADE_REQUIRED,
            // Reconnect with backoff: a client bug, a limit, a timeout or a server failure.
            ErrorClass::BadRequest
            | ErrorClass::UnknownSource
            | ErrorClass::NotFound
            | ErrorClass::Conflict
            | ErrorClass::Unimplemented => close_code::PROTOCOL_ERROR,
            ErrorClass::ResourceExhausted => close_code::TOO_MANY_CONNECTIONS,
            ErrorClass::Timeout => close_code::HELLO_TIMEOUT,
            ErrorClass::Unavailable | ErrorClass::Internal => close_code::INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_device_code_grpc_code_and_close_code() {
        use tonic::Code;
        let expected = [
            (ErrorClass::BadRequest, ErrorCode::BadRequest, Code::InvalidArgument, close_code::PROTOCOL_ERROR),
            (ErrorClass::UnknownSource, ErrorCode::UnknownSource, Code::InvalidArgument, close_code::PROTOCOL_ERROR),
            (ErrorClass::NotFound, ErrorCode::NotFound, Code::NotFound, close_code::PROTOCOL_ERROR),
            (ErrorClass::Conflict, ErrorCode::Conflict, Code::AlreadyExists, close_code::PROTOCOL_ERROR),
            (
                ErrorClass::Unauthenticated,
                ErrorCode::Unauthenticated,
                Code::Unauthenticated,
                close_code::UNAUTHENTICATED,
            ),
            (ErrorClass::Forbidden, ErrorCode::Forbidden, Code::PermissionDenied, close_code::FORBIDDEN),
            (
                ErrorClass::ResourceExhausted,
                ErrorCode::ResourceExhausted,
                Code::ResourceExhausted,
                close_code::TOO_MANY_CONNECTIONS,
            ),
            (ErrorClass::Unavailable, ErrorCode::Unavailable, Code::Unavailable, close_code::INTERNAL),
            (ErrorClass::Timeout, ErrorCode::Timeout, Code::DeadlineExceeded, close_code::HELLO_TIMEOUT),
            (ErrorClass::Internal, ErrorCode::Internal, Code::Internal, close_code::INTERNAL),
            (ErrorClass::Unimplemented, ErrorCode::Unimplemented, Code::Unimplemented, close_code::PROTOCOL_ERROR),
            (
                ErrorClass::UnsupportedVersion,
                ErrorCode::UnsupportedVersion,
                Code::FailedPrecondition,
                close_code::UPGRADE_REQUIRED,
            ),
        ];
        assert_eq!(expected.map(|(class, ..)| class), ErrorClass::ALL, "every class is checked once");
        for (class, error_code, grpc_code, close) in expected {
            assert_eq!(class.error_code(), error_code, "{class:?}");
            assert_eq!(class.grpc_code(), grpc_code, "{class:?}");
            assert_eq!(class.close_code(), close, "{class:?}");
            let status = class.status("why");
            assert_eq!((status.code(), status.message()), (grpc_code, "why"), "{class:?}");
        }
    }

    #[test]
    fn api_codes_are_distinct_and_statuses_are_errors() {
        let mut codes: Vec<&str> = ErrorClass::ALL.iter().map(|class| class.api_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorClass::ALL.len());
        assert!(ErrorClass::ALL.iter().all(|class| (400..600).contains(&class.http_status())));
        assert_eq!(ErrorClass::Forbidden.http_status(), 403);
        assert_eq!(ErrorClass::Unauthenticated.http_status(), 401);
    }

    #[test]
    fn device_codes_are_distinct_per_class() {
        let mut codes: Vec<i32> = ErrorClass::ALL.iter().map(|class| class.error_code() as i32).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorClass::ALL.len());
        assert!(!codes.contains(&(ErrorCode::Unspecified as i32)));
    }

    #[test]
    fn grpc_codes_map_back_to_their_class() {
        for class in ErrorClass::ALL {
            let back = ErrorClass::of_grpc(class.grpc_code());
            match class {
                // A backend naming an unknown source sent a bad argument.
                ErrorClass::UnknownSource => assert_eq!(back, ErrorClass::BadRequest),
                // Only devices have protocol versions; gRPC has no closer code.
                ErrorClass::UnsupportedVersion => assert_eq!(back, ErrorClass::Conflict),
                ErrorClass::BadRequest
                | ErrorClass::NotFound
                | ErrorClass::Conflict
                | ErrorClass::Unauthenticated
                | ErrorClass::Forbidden
                | ErrorClass::ResourceExhausted
                | ErrorClass::Unavailable
                | ErrorClass::Timeout
                | ErrorClass::Internal
                | ErrorClass::Unimplemented => assert_eq!(back, class),
            }
        }
    }

    /// How the device hears of each kind of refused login: the Error code and the close code
    /// of the fatal Error that ends the session.
    #[test]
    fn refused_logins_end_the_session_with_their_class() {
        use std::time::Duration;

        use syncline_proto::sdk::passwords::PasswordError;

        use crate::auth::AuthError;
        use crate::auth::login_limits::{BlockReason, LimitedBy, LoginBlocked};
        use crate::storage::{DeviceState, StoreError};

        let blocked =
            LoginBlocked { by: LimitedBy::User, reason: BlockReason::Failures, retry_after: Duration::from_secs(5) };
        let channel_down = crate::channel::ChannelCallError::Unavailable {
            endpoint: "http://login".into(),
            code: tonic::Code::Unavailable,
            message: "down".into(),
        };
        let cases = [
            (AuthError::BadCredentials, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED),
            (AuthError::ExpiredToken, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED),
            (AuthError::BackendTokensDisabled, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED),
            (
                AuthError::DeviceDisabled { client_id: "c1".into(), state: DeviceState::Wiped },
                ErrorCode::Forbidden,
                close_code::FORBIDDEN,
            ),
            (
                AuthError::LoginsBusy(PasswordError::QueueFull { queued: 3 }),
                ErrorCode::ResourceExhausted,
                close_code::TOO_MANY_CONNECTIONS,
            ),
            (AuthError::LoginsLimited(blocked), ErrorCode::ResourceExhausted, close_code::TOO_MANY_CONNECTIONS),
            (AuthError::Unavailable(channel_down), ErrorCode::Unavailable, close_code::INTERNAL),
            (AuthError::Store(StoreError::Io("disk".into())), ErrorCode::Unavailable, close_code::INTERNAL),
            (AuthError::Store(StoreError::Corrupt("bits".into())), ErrorCode::Unavailable, close_code::INTERNAL),
            (AuthError::PasswordCheck(PasswordError::Stopped), ErrorCode::Unavailable, close_code::INTERNAL),
        ];
        for (error, code, close) in cases {
            assert_eq!((error.class().error_code(), error.class().close_code()), (code, close), "{error:?}");
        }
        assert_eq!(
            AuthError::DeviceDisabled { client_id: "c1".into(), state: DeviceState::Locked }.to_string(),
            "this device is locked"
        );
    }

    #[test]
    fn store_errors_have_their_class() {
        use crate::storage::StoreError;

        let cases = [
            (StoreError::DuplicateId { id: "a".into() }, ErrorClass::BadRequest),
            (StoreError::BatchTooLarge { changes: 10_001 }, ErrorClass::BadRequest),
            (StoreError::UserExists { name: "ann".into() }, ErrorClass::Conflict),
            (StoreError::QueueFull { pending: 100 }, ErrorClass::ResourceExhausted),
            (StoreError::Locked { path: "data".into() }, ErrorClass::Unavailable),
            (StoreError::Io("disk".into()), ErrorClass::Unavailable),
            (StoreError::Closed, ErrorClass::Unavailable),
            (StoreError::NotDurable { detail: "appendfsync".into() }, ErrorClass::Unavailable),
            (StoreError::Contention { subject: "partition Account/ann".into() }, ErrorClass::Unavailable),
            (StoreError::Corrupt("bits".into()), ErrorClass::Internal),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error:?}");
        }
        assert_eq!(StoreError::DuplicateId { id: "a".into() }.class().grpc_code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn access_errors_reach_devices_and_backends_with_their_class() {
        use crate::model::AccessError;

        let unknown = AccessError::UnknownSource("Nope".into());
        assert_eq!(unknown.to_string(), "unknown source \"Nope\"");
        assert_eq!(unknown.class().error_code(), ErrorCode::UnknownSource);
        assert_eq!(unknown.class().grpc_code(), tonic::Code::InvalidArgument);
        let forbidden = AccessError::Forbidden("another user's".into());
        assert_eq!(forbidden.class().error_code(), ErrorCode::Forbidden);
        let invalid_key = AccessError::InvalidKey("give the partition key".into());
        assert_eq!(invalid_key.class().grpc_code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn rpc_errors_have_the_codes_rpc_proto_documents() {
        use std::time::Duration;

        use syncline_proto::mobile_sdk::MobileError;

        use crate::rpc::RpcError;

        let cases = [
            (RpcError::InvalidCall("empty call id".into()), ErrorCode::BadRequest),
            (RpcError::PayloadTooLarge { bytes: 2, max: 1 }, ErrorCode::BadRequest),
            (RpcError::UnknownService("crm".into()), ErrorCode::NotFound),
            (RpcError::DeviceBusy { limit: 1 }, ErrorCode::ResourceExhausted),
            (RpcError::ServiceBusy { service: "crm".into(), limit: 1 }, ErrorCode::ResourceExhausted),
            (RpcError::DeadlineExceeded { deadline: Duration::from_secs(1) }, ErrorCode::Timeout),
            (RpcError::ReplyTooLarge { bytes: 2, max: 1 }, ErrorCode::Internal),
            (RpcError::Backend(MobileError::NotFound("m".into())), ErrorCode::NotFound),
            (RpcError::Backend(MobileError::InvalidArgument("m".into())), ErrorCode::BadRequest),
            (RpcError::Backend(MobileError::PermissionDenied("m".into())), ErrorCode::Forbidden),
            (RpcError::Backend(MobileError::Unavailable("m".into())), ErrorCode::Unavailable),
            (RpcError::Backend(MobileError::DeadlineExceeded("m".into())), ErrorCode::Timeout),
            (RpcError::Backend(MobileError::ResourceExhausted("m".into())), ErrorCode::ResourceExhausted),
            (RpcError::Backend(MobileError::Internal("m".into())), ErrorCode::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.class().error_code(), code, "{error:?}");
        }
    }
}
