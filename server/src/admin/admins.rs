//! Admin (console) users: `PUT /v1/admin/admins/{name}` creates one or sets its password and
//! role (what `syncline admin create` calls on a running server).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use super::tokens::Role;
use super::{AdminAccess, AdminState};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(put_admin))
}

/// An admin user's password and role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminUserRequest {
    /// At least 8 characters.
    password: String,
    role: Role,
}

/// An admin user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct AdminUserInfo {
    name: String,
    role: Role,
}

/// Creates an admin user, or sets its password and role.
#[utoipa::path(put, path = "/v1/admin/admins/{name}", tag = "admins", request_body = AdminUserRequest,
    params(("name" = String, Path, description = "Admin user name")),
    responses(
        (status = 200, description = "Created or updated", body = AdminUserInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Unacceptable name or password", body = ErrorBody),
    ))]
async fn put_admin(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<AdminUserRequest>,
) -> ApiResult<axum::Json<AdminUserInfo>> {
    state.auth.put_admin_user(&name, &request.password, request.role.into()).await?;
    tracing::info!(admin = %name, "admin user set through the admin API");
    Ok(axum::Json(AdminUserInfo { name, role: request.role }))
}
