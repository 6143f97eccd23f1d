//! The admin API's errors: every one is a JSON body `{"code": "...", "message": "..."}` with
//! the status of its class ([`ErrorClass::http_status`], [`ErrorClass::api_code`]), and the
//! extractors ([`ApiJson`], [`ApiQuery`], [`ApiPath`]) that turn axum's rejections (plain
//! text by default) into such errors.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::ErrorClass;
use crate::storage::StoreError;

/// Code of a request whose values parse but are not acceptable (422).
pub(super) const INVALID_CODE: &str = "invalid";

/// What a caller is told in place of an internal failure's details (they are logged).
const INTERNAL_MESSAGE: &str = "internal error";

/// The body of every admin API error.
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What kind of error: `bad_request`, `invalid`, `unauthenticated`, `forbidden`,
    /// `not_found`, `conflict`, `resource_exhausted`, `unavailable`, `internal`, ...
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An admin API error: a status and its JSON body.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Result of admin handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Returns an error of `class` (its status and code) with `message`; an internal one is
    /// logged and answered with a generic message.
    pub fn of_class(class: ErrorClass, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match class {
            ErrorClass::Internal => {
                tracing::error!(%message, "admin request failed");
                INTERNAL_MESSAGE.to_owned()
            }
            ErrorClass::Unavailable => {
                tracing::warn!(%message, "admin request could not be served");
                message
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
            | ErrorClass::UnsupportedVersion => message,
        };
        let status = StatusCode::from_u16(class.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, code: class.api_code(), message }
    }

    /// Returns a 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::BadRequest, message)
    }

    /// Returns a 422: the request is well-formed but a value is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code: INVALID_CODE, message: message.into() }
    }

    /// Returns a 404 about `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::NotFound, format!("{} not found", what.into()))
    }

    /// Returns a 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::Unauthenticated, message)
    }

    /// Returns a 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::Forbidden, message)
    }

    /// Returns a 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::Conflict, message)
    }

    /// Returns a 500 (logged; the caller gets a generic message).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::of_class(ErrorClass::Internal, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::of_class(error.class(), error.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(format!("blocking task failed: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code.to_owned(), message: self.message };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Runs store work off the async threads and maps its failure to an [`ApiError`].
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// A JSON body whose rejections (malformed JSON, wrong types, missing content type) are
/// 400 [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let message = match rejection {
        JsonRejection::JsonDataError(error) => {
            format!("the body does not match the expected shape: {}", error.body_text())
        }
        JsonRejection::JsonSyntaxError(error) => format!("the body is not valid JSON: {}", error.body_text()),
        JsonRejection::MissingJsonContentType(_) => "send the body as JSON (content-type: application/json)".to_owned(),
        JsonRejection::BytesRejection(error) => format!("cannot read the body: {}", error.body_text()),
        other => other.body_text(),
    };
    ApiError::bad_request(message)
}

/// Query parameters whose rejections are 400 [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query parameters: {}", rejection.body_text()))
}

/// Path parameters whose rejections are 400 [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path parameters: {}", rejection.body_text()))
}
