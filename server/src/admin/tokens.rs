//! API tokens: `GET/POST /v1/admin/tokens`, `DELETE /v1/admin/tokens/{id}`. A token's
//! secret is shown once, when it is created; the store keeps only its hash.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
use super::page::{Page, PageQuery};
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::storage::{AdminRole, StoredApiToken};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}

/// A role, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Role {
    Admin,
    Viewer,
}

impl From<Role> for AdminRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => AdminRole::Admin,
            Role::Viewer => AdminRole::Viewer,
        }
    }
}

impl From<AdminRole> for Role {
    fn from(role: AdminRole) -> Self {
        match role {
            AdminRole::Admin => Role::Admin,
            AdminRole::Viewer => Role::Viewer,
        }
    }
}

/// An API token, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct TokenInfo {
    id: String,
    name: String,
    role: Role,
    /// Unix milliseconds.
    created_ms: i64,
}

impl From<StoredApiToken> for TokenInfo {
    fn from(token: StoredApiToken) -> Self {
        Self { id: token.id, name: token.name, role: token.role.into(), created_ms: token.created_ms }
    }
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    /// What it is for, e.g. `ci` or `grafana`.
    name: String,
    role: Role,
}

/// A created token: `token` is shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct CreatedToken {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    #[serde(flatten)]
    info: TokenInfo,
}

/// Lists API tokens.
#[utoipa::path(get, path = "/v1/admin/tokens", tag = "tokens", params(PageQuery),
    responses(
        (status = 200, description = "A page of tokens", body = Page<TokenInfo>),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_tokens(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<TokenInfo>>> {
    let request = query.request()?;
    let store = state.store().clone();
    let tokens = blocking(move || store.api_tokens()).await?;
    let infos: Vec<TokenInfo> = tokens.into_iter().map(TokenInfo::from).collect();
    Ok(axum::Json(Page::from_sorted(infos, &request, |token| token.id.clone())))
}

/// Creates an API token.
#[utoipa::path(post, path = "/v1/admin/tokens", tag = "tokens", request_body = CreateToken,
    responses(
        (status = 201, description = "Created; the token is shown this once", body = CreatedToken),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Unacceptable name", body = ErrorBody),
    ))]
async fn create_token(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiJson(request): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    let created = state.auth.create_token(&request.name, request.role.into()).await?;
    tracing::info!(id = %created.stored.id, name = %created.stored.name, "admin API token created");
    Ok((StatusCode::CREATED, axum::Json(CreatedToken { token: created.token, info: created.stored.into() })))
}

/// Revokes an API token.
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ))]
async fn revoke_token(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let store = state.store().clone();
    let lookup = id.clone();
    if blocking(move || store.delete_api_token(&lookup)).await? {
        tracing::info!(%id, "admin API token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("token {id:?}")))
    }
}
