//! Who may call the admin API: API tokens (`Authorization: Bearer sla_<id>_<secret>`, stored
//! as a SHA-256 of the secret, each with a role) and console sessions (an admin user's argon2
//! password exchanged at `POST /v1/admin/session` for an HttpOnly, SameSite=Strict cookie and
//! a CSRF token that every state-changing request made with the cookie must echo in the
//! `X-CSRF-Token` header).
//!
//! Handlers say what they need with an extractor: [`ViewerAccess`] (any role: reads) or
//! [`AdminAccess`] (role `admin`: writes; a viewer gets 403). Both run before the body is
//! read, so an unauthenticated request is a 401 whatever its body. [`authorize_viewer`]
//! offers the same check to routes outside the API (e.g. `/metrics`).
//!
//! Failed console logins are limited per user name and per address by the same
//! [`FailedLogins`] rules as device logins (`[auth]` failed-login settings); console sessions
//! live in memory, so they end when the server restarts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use syncline_proto::sdk::passwords::{PasswordPool, PoolConfig};

use super::AdminState;
use super::error::{ApiError, ApiResult, blocking};
use super::listener::PeerAddr;
use crate::auth::login_limits::FailedLogins;
use crate::auth::now_ms;
use crate::config::{FailedLoginPolicy, MIN_ADMIN_PASSWORD_CHARS};
use crate::error::ErrorClass;
use crate::storage::{AdminRole, Store, StoredAdminUser, StoredApiToken};

/// Name of the console session cookie.
pub const SESSION_COOKIE: &str = "syncline_admin_session";
/// Header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of API tokens: says what a leaked string is.
pub const TOKEN_PREFIX: &str = "sla_";
/// How long a console session lasts: a working day.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most console sessions held at once; the oldest are dropped beyond it, so logins cannot
/// grow memory without bound.
pub(super) const MAX_CONSOLE_SESSIONS: usize = 1_000;
/// Name of the admin user that `admin.password` (`SYNCLINE_ADMIN_PASSWORD`) and the demo create.
pub const DEFAULT_ADMIN_NAME: &str = "admin";
/// Longest admin user or token name.
pub(super) const MAX_ADMIN_NAME_BYTES: usize = 128;
/// Password checks of console logins waiting at once; more are refused as busy.
const LOGIN_QUEUE: usize = 16;

/// How an admin API request proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API token, by id.
    Token { id: String },
    /// A console session cookie.
    Session,
}

/// The authenticated caller of an admin API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The admin user's name, or the API token's name.
    pub name: String,
    pub role: AdminRole,
    pub credential: Credential,
}

/// A console session.
#[derive(Clone, Debug)]
struct ConsoleSession {
    user: String,
    role: AdminRole,
    csrf: String,
    expires: Instant,
}

/// What a console login hands out.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The cookie's value.
    pub session_id: String,
    /// The token state-changing requests echo in `X-CSRF-Token`.
    pub csrf_token: String,
    pub caller: Caller,
}

/// A newly created API token: the only time its secret is known.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: String,
    pub stored: StoredApiToken,
}

/// Checks admin credentials: API tokens, console logins and sessions.
pub struct AdminAuth {
    store: Arc<dyn Store>,
    /// Console sessions by the SHA-256 (hex) of their id.
    sessions: DashMap<String, ConsoleSession>,
    failed_logins: FailedLogins,
    passwords: PasswordPool,
}

/// Returns `bytes` random bytes, base64url.
fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Returns true when `name` is an acceptable admin user or token name.
pub(super) fn valid_admin_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ADMIN_NAME_BYTES && !name.chars().any(char::is_control)
}

/// Returns why `password` is not acceptable for an admin user, if it is not.
pub fn admin_password_problem(password: &str) -> Option<String> {
    (password.chars().count() < MIN_ADMIN_PASSWORD_CHARS)
        .then(|| format!("admin passwords are at least {MIN_ADMIN_PASSWORD_CHARS} characters"))
}

impl AdminAuth {
    /// Returns the admin authenticator over `store`, limiting failed console logins by
    /// `failed`.
    pub fn new(store: Arc<dyn Store>, failed: FailedLoginPolicy) -> anyhow::Result<Self> {
        let passwords = PasswordPool::new(PoolConfig { threads: 1, queue: LOGIN_QUEUE, ..PoolConfig::default() })?;
        Ok(Self { store, sessions: DashMap::new(), failed_logins: FailedLogins::new(failed), passwords })
    }

    /// Returns an argon2 hash of `password` (on the pool's thread).
    pub async fn hash_password(&self, password: &str) -> ApiResult<String> {
        self.passwords
            .hash(password)
            .await
            .map_err(|error| ApiError::of_class(ErrorClass::Unavailable, error.to_string()))
    }

    /// Creates the admin user `name` with `password` and `role`, or replaces its password and
    /// role.
    pub async fn put_admin_user(&self, name: &str, password: &str, role: AdminRole) -> ApiResult<()> {
        if !valid_admin_name(name) {
            return Err(ApiError::invalid(format!("admin names are 1 to {MAX_ADMIN_NAME_BYTES} bytes")));
        }
        if let Some(problem) = admin_password_problem(password) {
            return Err(ApiError::invalid(problem));
        }
        let password_hash = self.hash_password(password).await?;
        let store = self.store.clone();
        let name = name.to_owned();
        blocking(move || {
            let created_ms = store.admin_user(&name)?.map_or_else(now_ms, |user| user.created_ms);
            store.put_admin_user(&StoredAdminUser { name, password_hash, role, created_ms })
        })
        .await
    }

    /// Creates an API token named `name` with `role`.
    pub async fn create_token(&self, name: &str, role: AdminRole) -> ApiResult<NewToken> {
        if !valid_admin_name(name) {
            return Err(ApiError::invalid(format!("token names are 1 to {MAX_ADMIN_NAME_BYTES} bytes")));
        }
        let (token, stored) = new_token(name, role);
        let store = self.store.clone();
        let put = stored.clone();
        blocking(move || store.put_api_token(&put)).await?;
        Ok(NewToken { token, stored })
    }

    /// Returns the caller an API token belongs to (401 when it is unknown or wrong).
    pub async fn check_token(&self, token: &str) -> ApiResult<Caller> {
        let refused = || ApiError::unauthenticated("the API token is not valid (or was revoked)");
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or_else(refused)?;
        let (id, secret) = rest.split_once('_').ok_or_else(refused)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let store = self.store.clone();
        let lookup = id.to_owned();
        let stored = blocking(move || store.api_token(&lookup)).await?.ok_or_else(refused)?;
        if !constant_time_eq(&sha256(secret), &stored.secret_hash) {
            return Err(refused());
        }
        Ok(Caller { name: stored.name, role: stored.role, credential: Credential::Token { id: stored.id } })
    }

    /// Checks an admin user's password from `from` and opens a console session. Refused
    /// (429) while the name or the address is blocked for failed logins.
    pub async fn login(&self, name: &str, password: &str, from: IpAddr) -> ApiResult<NewSession> {
        let limited = |blocked: crate::auth::login_limits::LoginBlocked| {
            ApiError::of_class(ErrorClass::ResourceExhausted, blocked.to_string())
        };
        let wrong = || ApiError::unauthenticated("wrong name or password");
        if !valid_admin_name(name) {
            return Err(wrong());
        }
        self.failed_logins.check(name, from, Instant::now()).map_err(limited)?;
        let running = self.failed_logins.begin(name, from, Instant::now()).map_err(limited)?;
        let store = self.store.clone();
        let lookup = name.to_owned();
        let user = blocking(move || store.admin_user(&lookup)).await?;
        let hash = user.as_ref().map(|user| user.password_hash.as_str());
        let matches = self
            .passwords
            .verify(password, hash)
            .await
            .map_err(|error| ApiError::of_class(ErrorClass::Unavailable, error.to_string()))?;
        let Some(user) = user.filter(|_| matches) else {
            running.failed(Instant::now());
            return Err(wrong());
        };
        running.succeeded();
        Ok(self.open_session(user.name, user.role))
    }

    fn open_session(&self, user: String, role: AdminRole) -> NewSession {
        let now = Instant::now();
        if self.sessions.len() >= MAX_CONSOLE_SESSIONS {
            self.sessions.retain(|_, session| session.expires > now);
            if self.sessions.len() >= MAX_CONSOLE_SESSIONS {
                let oldest = self.sessions.iter().min_by_key(|entry| entry.expires).map(|entry| entry.key().clone());
                if let Some(oldest) = oldest {
                    self.sessions.remove(&oldest);
                }
            }
        }
        let session_id = random_text(32);
        let csrf_token = random_text(32);
        let session = ConsoleSession { user: user.clone(), role, csrf: csrf_token.clone(), expires: now + SESSION_TTL };
        self.sessions.insert(hex(&sha256(&session_id)), session);
        NewSession { session_id, csrf_token, caller: Caller { name: user, role, credential: Credential::Session } }
    }

    /// Ends a console session.
    pub fn close_session(&self, session_id: &str) {
        self.sessions.remove(&hex(&sha256(session_id)));
    }

    /// Returns the session's caller and its CSRF token, while it lasts.
    fn session(&self, session_id: &str) -> Option<(Caller, String)> {
        let key = hex(&sha256(session_id));
        let session = self.sessions.get(&key)?.clone();
        if session.expires <= Instant::now() {
            self.sessions.remove(&key);
            return None;
        }
        let caller = Caller { name: session.user, role: session.role, credential: Credential::Session };
        Some((caller, session.csrf))
    }

    /// Returns the CSRF token of the console session a request's cookie names, if it is live:
    /// a console tab opened after the login reads it from `GET /v1/admin/session` (a page
    /// of another origin cannot read that answer).
    pub fn csrf_token_of(&self, parts: &Parts) -> Option<String> {
        self.session(&session_cookie(parts)?).map(|(_, csrf)| csrf)
    }

    /// Authenticates a request: its bearer token, else its session cookie (whose
    /// state-changing requests must carry the session's CSRF token).
    pub async fn authenticate(&self, parts: &Parts) -> ApiResult<Caller> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer <API token>"))?;
            return self.check_token(token.trim()).await;
        }
        let Some(session_id) = session_cookie(parts) else {
            return Err(ApiError::unauthenticated(
                "sign in: send Authorization: Bearer <API token>, or log in at POST /v1/admin/session",
            ));
        };
        let (caller, csrf) = self
            .session(&session_id)
            .ok_or_else(|| ApiError::unauthenticated("the console session has ended; log in again"))?;
        if !safe_method(&parts.method) {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
                return Err(ApiError::forbidden(format!(
                    "the {CSRF_HEADER} header is missing or wrong (send the csrf_token the login returned)"
                )));
            }
        }
        Ok(caller)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns a new token's text and its stored form.
fn new_token(name: &str, role: AdminRole) -> (String, StoredApiToken) {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let id = hex(&id);
    let secret = random_text(32);
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    let stored = StoredApiToken { id, name: name.to_owned(), role, secret_hash: sha256(&secret), created_ms: now_ms() };
    (token, stored)
}

/// Creates an API token directly in a store (the CLI on a stopped server's data directory).
pub fn create_token_in(store: &dyn Store, name: &str, role: AdminRole) -> anyhow::Result<String> {
    anyhow::ensure!(valid_admin_name(name), "token names are 1 to {MAX_ADMIN_NAME_BYTES} bytes");
    let (token, stored) = new_token(name, role);
    store.put_api_token(&stored)?;
    Ok(token)
}

/// Returns true for methods that change nothing (no CSRF token needed).
fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Returns the console session cookie of a request.
fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Returns the address a request came from (loopback when unknown, e.g. in unit tests).
pub(super) fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |info| info.0.0.ip())
}

/// Authorizes a request for reading (any role): for routes outside the API, such as
/// `/metrics`, that want the API's credentials.
pub async fn authorize_viewer(state: &AdminState, parts: &Parts) -> ApiResult<Caller> {
    state.auth.authenticate(parts).await
}

/// A caller of any role: for reads.
#[derive(Clone, Debug)]
pub struct ViewerAccess(pub Caller);

/// A caller with the `admin` role: for writes (a viewer gets 403).
#[derive(Clone, Debug)]
pub struct AdminAccess(pub Caller);

impl FromRequestParts<AdminState> for ViewerAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        Ok(Self(authorize_viewer(state, parts).await?))
    }
}

impl FromRequestParts<AdminState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let caller = state.auth.authenticate(parts).await?;
        match caller.role {
            AdminRole::Admin => Ok(Self(caller)),
            AdminRole::Viewer => Err(ApiError::forbidden("this needs the admin role; the caller is a viewer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_a_hex_id_and_hash_their_secret() {
        let (token, stored) = new_token("ci", AdminRole::Viewer);
        let rest = token.strip_prefix(TOKEN_PREFIX).unwrap();
        let (id, secret) = rest.split_once('_').unwrap();
        assert_eq!(id, stored.id);
        assert_eq!(sha256(secret), stored.secret_hash);
        assert!(!token.contains(&hex(&stored.secret_hash)));
    }

    #[test]
    fn session_cookies_are_found_among_others() {
        let request = axum::http::Request::builder()
            .header(header::COOKIE, format!("a=b; {SESSION_COOKIE}=xyz; c=d"))
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        assert_eq!(session_cookie(&parts).as_deref(), Some("xyz"));
    }
}
