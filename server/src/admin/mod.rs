//! The admin plane: an HTTP listener of its own (`admin.addr`) serving `/healthz`, `/readyz`
//! and the admin API under `/v1/admin/` (JSON in and out, every error a JSON
//! `{"code", "message"}`), with its OpenAPI 3 document at `/v1/admin/openapi.json`,
//! generated from the handlers by utoipa.
//!
//! - `listener`: binding, TLS and serving.
//! - `error`: [`ApiError`] and the extractors that turn axum's rejections into it.
//! - `auth`: API tokens, console sessions and CSRF, and the [`ViewerAccess`] /
//!   [`AdminAccess`] extractors handlers name their role with.
//! - `page`: the one pagination helper ([`PageQuery`], [`Page`]).
//! - `metrics`: `GET /metrics`, the Prometheus exposition (a viewer token, unless
//!   `admin.metrics_public`).
//! - one file per resource, each with `pub(super) fn routes() -> OpenApiRouter<AdminState>`,
//!   merged in `api_routes`: `health`, `session`, `tokens`, `admins`, `users`, `devices`, `sources`,
//!   `partitions`, `mutations`, `rpc`, `stats`, `bulk`.
//!
//! Every handler takes [`AdminState`]: the store, the hub, the device connections and the
//! rest of what device sessions share ([`GatewayServices`]), the settings, and the admin
//! authenticator.

mod admins;
mod auth;
mod bulk;
mod console;
pub(crate) mod devices;
mod error;
mod events;
mod health;
mod listener;
mod metrics;
mod mutations;
mod page;
mod partitions;
mod rpc;
mod session;
mod sources;
mod stats;
mod tokens;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use syncline_push::ConnectionCount;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use self::auth::{
    AdminAccess, AdminAuth, CSRF_HEADER, Caller, Credential, DEFAULT_ADMIN_NAME, SESSION_COOKIE, TOKEN_PREFIX,
    ViewerAccess, admin_password_problem, authorize_viewer, create_token_in,
};
pub use self::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, blocking};
pub use self::events::LiveSources;
pub use self::listener::{AdminListener, PeerAddr, serve};
pub use self::page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageQuery, PageRequest};
use crate::channel::capture::CaptureCounters;
use crate::config::Settings;
use crate::gateway::GatewayServices;
use crate::storage::Store;

/// What every admin handler shares.
#[derive(Clone)]
pub struct AdminState {
    /// What device sessions share: store, hub, auth, sources, channels, device connections,
    /// mutations, RPC.
    pub services: Arc<GatewayServices>,
    /// The validated settings the server runs with.
    pub settings: Arc<Settings>,
    /// Admin credentials: tokens and console sessions.
    pub auth: Arc<AdminAuth>,
    /// Change capture's counters and per-source health.
    pub capture: Arc<CaptureCounters>,
    /// Open device connections.
    pub connections: Arc<ConnectionCount>,
    /// What `/readyz` reports besides the store and channels.
    pub readiness: Arc<Readiness>,
    /// When the server started.
    pub started: Instant,
    /// The last sample of delivered frames, for deliveries per second.
    pub deliveries: Arc<stats::DeliverySamples>,
    /// The server's Prometheus metrics, rendered by `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What the console's live stream samples.
    pub live: Arc<LiveSources>,
}

impl AdminState {
    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.services.store
    }
}

/// Whether the server has bound every listener (set once at start).
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
}

impl Readiness {
    /// Records that every listener is bound and serving.
    pub fn listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Returns true once every listener is bound.
    pub fn are_listeners_bound(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire)
    }
}

/// The OpenAPI document's fixed parts; paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Syncline admin API", description = "Manage a Syncline server: users, sources, partitions, mutations, RPC and stats. Authenticate with `Authorization: Bearer <API token>`, or a console session cookie plus `X-CSRF-Token` on state-changing requests."),
    components(schemas(ErrorBody, events::LiveStats, events::LiveDevice)),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("session" = [])),
)]
struct ApiDoc;

/// Declares the two ways to authenticate in the document.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components
            .add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))));
    }
}

/// The API's routes, one `routes()` per resource file: the registration point of new
/// resources (add the file's `mod` line above and one `.merge(...)` here).
fn api_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(session::routes())
        .merge(tokens::routes())
        .merge(admins::routes())
        .merge(users::routes())
        .merge(devices::routes())
        .merge(sources::routes())
        .merge(partitions::routes())
        .merge(mutations::routes())
        .merge(rpc::routes())
        .merge(stats::routes())
        .merge(events::routes())
        .merge(bulk::routes())
}

/// Returns the OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// Builds the admin listener's router: health probes, the API, its OpenAPI document, and
/// JSON errors for unknown paths and methods.
pub fn router(state: AdminState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    let document = Arc::new(document);
    Router::new()
        .merge(health::routes())
        .merge(console::routes())
        .merge(metrics::routes())
        .merge(api)
        .route("/v1/admin/openapi.json", get(move || async move { axum::Json(document.as_ref().clone()) }))
        .fallback(|| async { ApiError::not_found("this path") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this method is not allowed here".to_owned(),
            }
        })
        .with_state(state)
}
