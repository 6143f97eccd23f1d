//! Device users: list and search, create, get, change password, disable and enable, delete.
//!
//! Who checks a user's logins decides what the API can do:
//! - local users (no `auth.channel`): every endpoint works on the embedded store; a user
//!   created here logs in at once.
//! - the demo (`syncline serve` without sources): its CRM channel checks logins, and users
//!   created here go into the demo's database (as `syncline user add` does), so they too log
//!   in at once; passwords are the demo's to change.
//! - a login channel (`auth.channel`): the backend owns users and passwords, so create and
//!   change password answer 409; disable, enable and delete still work on any user id,
//!   because Syncline enforces them itself at Hello whoever checked the password.
//!
//! Disabling a user refuses their Hello (password, session token or backend token) with
//! FORBIDDEN and close 4003 until enabled, and closes their open connections at once the
//! same way. Deleting a user revokes every session token issued to them and closes their
//! connections with UNAUTHENTICATED and close 4001; `?purge=true` also deletes their `user`
//! partitions. A user deleted while a login channel checks logins can log in again through
//! it: disable them to keep them out.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
use super::page::{Page, PageQuery, PageRequest};
use super::{AdminAccess, AdminState, ViewerAccess};
use crate::auth::{MAX_USER_NAME_BYTES, now_ms, valid_user_name};
use crate::config::Partitioning;
use crate::error::ErrorClass;
use crate::storage::{PartitionName, StoredUser, UserControls};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
}

/// A device user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct UserInfo {
    /// Login name and user id (the key of the user's `user` partitions).
    name: String,
    /// The user has a password in Syncline's store (false: a login channel or the demo checks
    /// their logins).
    local: bool,
    /// Refused at Hello until enabled.
    disabled: bool,
    /// Devices of the user connected now.
    connected_devices: usize,
}

/// Filters of the user list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UserFilter {
    /// Only users whose name starts with this.
    prefix: Option<String>,
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateUser {
    name: String,
    password: String,
}

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPassword {
    password: String,
}

/// Options of a delete.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeleteOptions {
    /// Also delete the user's `user` partitions.
    purge: Option<bool>,
}

/// Where a server's user logins are checked.
enum LoginCheck {
    Local,
    Demo,
    Channel(String),
}

fn login_check(state: &AdminState) -> LoginCheck {
    if state.settings.demo.is_some() {
        LoginCheck::Demo
    } else if let Some(channel) = &state.settings.auth.channel {
        LoginCheck::Channel(channel.clone())
    } else {
        LoginCheck::Local
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("user names are 1 to {MAX_USER_NAME_BYTES} bytes without control characters")))
    }
}

/// Returns what the store knows of `name`: (has a local password, controls), or `None`.
async fn known_user(state: &AdminState, name: &str) -> ApiResult<Option<UserInfo>> {
    let store = state.store().clone();
    let lookup = name.to_owned();
    let (user, controls) = blocking(move || Ok((store.user(&lookup)?, store.user_controls(&lookup)?))).await?;
    // A deleted user keeps a revocation time, which alone does not make them known.
    let known = user.is_some() || controls.disabled;
    Ok(known.then(|| user_info(state, name, user.is_some(), controls)))
}

fn user_info(state: &AdminState, name: &str, local: bool, controls: UserControls) -> UserInfo {
    UserInfo {
        name: name.to_owned(),
        local,
        disabled: controls.disabled,
        connected_devices: state.services.connections.clients_of_user(name).len(),
    }
}

/// Returns the user, or 404 unless a login channel may know users Syncline does not (then
/// a user with no record yet).
async fn user_or_404(state: &AdminState, name: &str) -> ApiResult<UserInfo> {
    check_name(name).map_err(|_| ApiError::not_found(format!("user {name:?}")))?;
    match (known_user(state, name).await?, login_check(state)) {
        (Some(user), _) => Ok(user),
        (None, LoginCheck::Channel(_) | LoginCheck::Demo) => Ok(user_info(state, name, false, UserControls::default())),
        (None, LoginCheck::Local) => Err(ApiError::not_found(format!("user {name:?}"))),
    }
}

/// Lists device users Syncline knows (local users and users with operator controls), by name.
#[utoipa::path(get, path = "/v1/admin/users", tag = "users", params(PageQuery, UserFilter),
    responses(
        (status = 200, description = "A page of users", body = Page<UserInfo>),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn list_users(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> ApiResult<axum::Json<Page<UserInfo>>> {
    let request = page.request()?;
    let prefix = filter.prefix.unwrap_or_default();
    let filter_prefix = prefix.clone();
    let store = state.store().clone();
    let PageRequest { after, limit } = request.clone();
    let (local, controlled) = blocking(move || {
        let local = store.users_page(after.as_deref(), &prefix, limit + 1)?;
        let controlled: Vec<(String, UserControls)> = store
            .controlled_users()?
            .into_iter()
            .filter(|(name, controls)| {
                controls.disabled
                    && name.starts_with(&prefix)
                    && after.as_deref().is_none_or(|after| name.as_str() > after)
            })
            .collect();
        Ok((local, controlled))
    })
    .await?;
    let mut merged: std::collections::BTreeMap<String, (bool, UserControls)> =
        controlled.into_iter().map(|(name, controls)| (name, (false, controls))).collect();
    for user in local {
        merged.entry(user.name).or_insert((true, UserControls::default())).0 = true;
    }
    if matches!(login_check(&state), LoginCheck::Demo) {
        // The demo's users live in its CRM database (its channel checks their logins).
        let after = request.after.as_deref();
        for name in demo_user_ids(&state, after, filter_prefix.as_str(), request.limit + 1).await? {
            merged.entry(name).or_insert((false, UserControls::default()));
        }
    }
    let users: Vec<UserInfo> = merged
        .into_iter()
        .take(request.limit + 1)
        .map(|(name, (local, controls))| user_info(&state, &name, local, controls))
        .collect();
    Ok(axum::Json(Page::from_overfetched(users, &request, |user| user.name.clone())))
}

/// Creates a device user, who can log in at once.
#[utoipa::path(post, path = "/v1/admin/users", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The user exists, or a login channel owns users", body = ErrorBody),
        (status = 422, description = "Unacceptable name or password", body = ErrorBody),
    ))]
async fn create_user(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiJson(request): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<UserInfo>)> {
    check_name(&request.name)?;
    if request.password.is_empty() {
        return Err(ApiError::invalid("the password is empty"));
    }
    match login_check(&state) {
        LoginCheck::Local => {
            let password_hash = state.auth.hash_password(&request.password).await?;
            let store = state.store().clone();
            let name = request.name;
            let user = StoredUser { name: name.clone(), password_hash };
            blocking(move || store.add_user(&user)).await?;
            tracing::info!(user = %name, "user created through the admin API");
            let user = user_or_404(&state, &name).await?;
            Ok((StatusCode::CREATED, axum::Json(user)))
        }
        LoginCheck::Demo => {
            add_demo_user(&state, &request.name, &request.password).await?;
            Ok((StatusCode::CREATED, axum::Json(user_or_404(&state, &request.name).await?)))
        }
        LoginCheck::Channel(channel) => Err(ApiError::conflict(format!(
            "logins are checked by the channel at {channel} (auth.channel): add the user in that backend"
        ))),
    }
}

/// Maps an error of the demo's CRM database to the API's error of the same class.
#[cfg(feature = "demo")]
fn demo_db_error(error: syncline_proto::sdk::ChannelError) -> ApiError {
    let status = tonic::Status::from(error);
    ApiError::of_class(ErrorClass::of_grpc(status.code()), status.message().to_owned())
}

/// Adds a user to the demo's CRM database, which its channel checks logins against.
#[cfg(feature = "demo")]
async fn add_demo_user(state: &AdminState, name: &str, password: &str) -> ApiResult<()> {
    let path = state.settings.store.data_dir.join(crate::demo::DEMO_DB_FILE);
    let db = syncline_example_crm::CrmDb::open(&path).await.map_err(demo_db_error)?;
    db.add_user(name, password).await.map_err(demo_db_error)?;
    tracing::info!(user = %name, "demo user created through the admin API");
    Ok(())
}

/// Returns the demo's users from its CRM database, like the store's `users_page`.
#[cfg(feature = "demo")]
async fn demo_user_ids(state: &AdminState, after: Option<&str>, prefix: &str, limit: usize) -> ApiResult<Vec<String>> {
    let path = state.settings.store.data_dir.join(crate::demo::DEMO_DB_FILE);
    let db = syncline_example_crm::CrmDb::open(&path).await.map_err(demo_db_error)?;
    db.user_ids(after, prefix, limit).await.map_err(demo_db_error)
}

/// Returns no users: this build has no demo app.
#[cfg(not(feature = "demo"))]
async fn demo_user_ids(
    _state: &AdminState,
    _after: Option<&str>,
    _prefix: &str,
    _limit: usize,
) -> ApiResult<Vec<String>> {
    Ok(Vec::new())
}

/// Refuses: this build has no demo app (never reached: such a build never runs the demo).
#[cfg(not(feature = "demo"))]
async fn add_demo_user(_state: &AdminState, _name: &str, _password: &str) -> ApiResult<()> {
    Err(ApiError::of_class(ErrorClass::Unimplemented, "this build has no demo app"))
}

/// Returns one user.
#[utoipa::path(get, path = "/v1/admin/users/{name}", tag = "users", params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "The user", body = UserInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
async fn get_user(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserInfo>> {
    Ok(axum::Json(user_or_404(&state, &name).await?))
}

/// Changes a local user's password (their devices stay signed in).
#[utoipa::path(put, path = "/v1/admin/users/{name}/password", tag = "users", request_body = NewPassword,
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such local user", body = ErrorBody),
        (status = 409, description = "A login channel or the demo owns passwords", body = ErrorBody),
        (status = 422, description = "Unacceptable password", body = ErrorBody),
    ))]
async fn set_password(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<NewPassword>,
) -> ApiResult<StatusCode> {
    match login_check(&state) {
        LoginCheck::Local => {}
        LoginCheck::Demo | LoginCheck::Channel(_) => {
            return Err(ApiError::conflict("this server's login channel owns passwords: change it there"));
        }
    }
    if request.password.is_empty() {
        return Err(ApiError::invalid("the password is empty"));
    }
    let hash = state.auth.hash_password(&request.password).await?;
    let store = state.store().clone();
    let lookup = name.clone();
    if blocking(move || store.set_user_password(&lookup, &hash)).await? {
        tracing::info!(user = %name, "user password changed through the admin API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("user {name:?}")))
    }
}

/// Disables a user: refused at Hello (FORBIDDEN, close 4003) until enabled; open connections
/// are closed the same way at once.
#[utoipa::path(post, path = "/v1/admin/users/{name}/disable", tag = "users", params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "Disabled", body = UserInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
async fn disable_user(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserInfo>> {
    set_disabled(&state, &name, true).await
}

/// Enables a disabled user.
#[utoipa::path(post, path = "/v1/admin/users/{name}/enable", tag = "users", params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "Enabled", body = UserInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
async fn enable_user(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<UserInfo>> {
    set_disabled(&state, &name, false).await
}

async fn set_disabled(state: &AdminState, name: &str, disabled: bool) -> ApiResult<axum::Json<UserInfo>> {
    user_or_404(state, name).await?;
    let store = state.store().clone();
    let user_id = name.to_owned();
    blocking(move || {
        let controls = UserControls { disabled, ..store.user_controls(&user_id)? };
        store.set_user_controls(&user_id, &controls)
    })
    .await?;
    if disabled {
        let closed = state.services.relay.close_user(name, ErrorClass::Forbidden, "this user was disabled").await;
        tracing::info!(user = %name, closed, "user disabled through the admin API");
    } else {
        tracing::info!(user = %name, "user enabled through the admin API");
    }
    Ok(axum::Json(user_or_404(state, name).await?))
}

/// Deletes a user: revokes their session tokens and closes their connections
/// (UNAUTHENTICATED, close 4001) at once; `?purge=true` also deletes their `user` partitions.
#[utoipa::path(delete, path = "/v1/admin/users/{name}", tag = "users",
    params(("name" = String, Path, description = "User name"), DeleteOptions),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
async fn delete_user(
    State(state): State<AdminState>,
    _caller: AdminAccess,
    ApiPath(name): ApiPath<String>,
    ApiQuery(options): ApiQuery<DeleteOptions>,
) -> ApiResult<StatusCode> {
    let user = user_or_404(&state, &name).await?;
    let user_partitions: Vec<PartitionName> = state
        .settings
        .sources
        .iter()
        .filter(|(_, source)| source.partitioning == Partitioning::User)
        .map(|(source, _)| PartitionName::new(source.clone(), name.clone()))
        .collect();
    let purge = options.purge.unwrap_or(false);
    let store = state.store().clone();
    let user_id = name.clone();
    let purged = blocking(move || {
        store.delete_user(&user_id)?;
        let controls = UserControls { sessions_revoked_ms: now_ms(), ..store.user_controls(&user_id)? };
        store.set_user_controls(&user_id, &controls)?;
        let mut purged = 0;
        if purge {
            for partition in &user_partitions {
                purged += usize::from(store.purge_partition(partition)?);
            }
        }
        Ok(purged)
    })
    .await?;
    let closed = state.services.relay.close_user(&name, ErrorClass::Unauthenticated, "this user was deleted").await;
    tracing::info!(user = %name, local = user.local, closed, purged, "user deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}
