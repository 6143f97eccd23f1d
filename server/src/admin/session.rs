//! Console sessions: `POST /v1/admin/session` (an admin user's name and password → an
//! HttpOnly, SameSite=Strict session cookie and the CSRF token to echo), `GET` (who is
//! signed in), `DELETE` (sign out).

use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SESSION_COOKIE, SESSION_TTL, peer_ip};
use super::error::{ApiJson, ApiResult, ErrorBody};
use super::{AdminState, Caller, Credential, ViewerAccess};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(login, whoami, logout))
}

/// A console login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    name: String,
    password: String,
}

/// The signed-in caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct SessionInfo {
    /// Admin user (or API token) name.
    name: String,
    /// `admin` or `viewer`.
    role: String,
    /// Send in `X-CSRF-Token` with every state-changing request made with the session cookie
    /// (returned at login, and by `GET` to a caller signed in with the cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
}

impl SessionInfo {
    fn of(caller: &Caller, csrf_token: Option<String>) -> Self {
        Self { name: caller.name.clone(), role: caller.role.as_str().to_owned(), csrf_token }
    }
}

/// Returns the `Set-Cookie` value of a session (or of its removal, with an empty value).
fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Logs in to the console.
#[utoipa::path(post, path = "/v1/admin/session", tag = "session", request_body = LoginRequest, security(()),
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Wrong name or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this name or address", body = ErrorBody),
    ))]
async fn login(
    axum::extract::State(state): axum::extract::State<AdminState>,
    parts: Parts,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let from = peer_ip(&parts);
    let session = state.auth.login(&request.name, &request.password, from).await?;
    let secure = state.settings.tls.is_some();
    let cookie = session_cookie(&session.session_id, SESSION_TTL.as_secs(), secure);
    let body = SessionInfo::of(&session.caller, Some(session.csrf_token));
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(body)).into_response())
}

/// Returns the signed-in caller.
#[utoipa::path(get, path = "/v1/admin/session", tag = "session",
    responses(
        (status = 200, description = "The caller", body = SessionInfo),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn whoami(
    axum::extract::State(state): axum::extract::State<AdminState>,
    ViewerAccess(caller): ViewerAccess,
    parts: Parts,
) -> axum::Json<SessionInfo> {
    let csrf_token = match caller.credential {
        Credential::Session => state.auth.csrf_token_of(&parts),
        Credential::Token { .. } => None,
    };
    axum::Json(SessionInfo::of(&caller, csrf_token))
}

/// Signs out of the console (ends the session, clears the cookie).
#[utoipa::path(delete, path = "/v1/admin/session", tag = "session",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token", body = ErrorBody),
    ))]
async fn logout(
    axum::extract::State(state): axum::extract::State<AdminState>,
    ViewerAccess(_caller): ViewerAccess,
    headers: axum::http::HeaderMap,
) -> Response {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned());
    if let Some(session) = session {
        state.auth.close_session(&session);
    }
    let cookie = session_cookie("", 0, state.settings.tls.is_some());
    (axum::http::StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}
