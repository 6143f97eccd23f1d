//! Sessions: password checks (argon2), backend tokens, session tokens, device registration.
//!
//! A device proves who it is in one of three ways: a username and password (argon2 against
//! local users, or the login channel's Authenticate), a *backend token* (a JWT signed with
//! HS256 by the app's backend, which has already authenticated the user: see
//! [`BackendTokenVerifier`]), or a session token from an earlier Welcome. The first two
//! register (or refresh) the device and hand out a session token; the third resumes.
//!
//! Password checks are bounded (issue 13): local ones run on a [`PasswordPool`] (a few
//! hashing threads with reused memory, a bounded queue with a deadline), and those forwarded
//! to a login channel pass an [`Admission`] of the same size, so a login storm can neither
//! grow the server's memory nor storm the backend; the excess is refused as busy. Unknown
//! users are checked against a decoy hash, so they cost what known ones do. Failed logins
//! are counted per user name and per address ([`login_limits`]); past the limits, logins
//! are refused without a check for a backoff.
//!
//! - `backend_token`: [`BackendTokenVerifier`], the checks of backend tokens.
//! - [`login_limits`]: failed-login counts and blocks.
//!
//! Session tokens are `base64url(claims) "." base64url(HMAC-SHA256(secret, claims))`, where
//! the secret is generated once per data directory and kept in the store, so tokens survive
//! restarts and cannot be forged without it. Claims carry the client id, user id, expiry and
//! the device's token generation; logging out bumps the generation, which revokes every token
//! issued to that device before.

mod backend_token;
pub mod login_limits;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use prost::Message;
use rand::RngCore;
use sha2::Sha256;
use syncline_proto::sdk::passwords::{self, Admission, Admitted, PasswordError, PasswordPool, PoolConfig};

pub use backend_token::{BACKEND_TOKEN_LEEWAY_SECS, BackendLogin, BackendTokenRefusal, BackendTokenVerifier};
use login_limits::{FailedLogins, LoginBlocked};

pub use crate::config::LoginLimits;

use crate::channel::ChannelCallError;
use crate::channel::grpc::ChannelConnection;
use crate::error::ErrorClass;
use crate::storage::{DeviceState, Store, StoreError, StoredDevice, StoredUser};

/// Name of the token-signing secret in the store.
const TOKEN_SECRET_NAME: &str = "session-token-hmac";
/// Bytes of the token-signing secret.
const TOKEN_SECRET_BYTES: usize = 32;
/// Longest accepted token (entitlements make tokens grow): anything longer is not ours, and
/// is refused before decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most custom-partition entitlements kept per session.
pub const MAX_ENTITLEMENTS: usize = 256;
/// Longest user name.
pub const MAX_USER_NAME_BYTES: usize = 128;

/// Why a login or token was refused, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("wrong username or password")]
    BadCredentials,
    /// The token is malformed or its signature is wrong.
    #[error("the session token is not valid")]
    InvalidToken,
    /// The token was valid once but has expired or was revoked.
    #[error("the session token has expired or was revoked")]
    ExpiredToken,
    /// The device is locked or wiped by an operator (the credentials were right: the gateway
    /// sends the device its pending commands before refusing it).
    #[error("this device is {state}")]
    DeviceDisabled { client_id: String, state: DeviceState },
    /// The user is disabled by an operator.
    #[error("this user is disabled")]
    UserDisabled,
    /// The user name is empty, too long, or has control characters.
    #[error("user names are 1 to {MAX_USER_NAME_BYTES} bytes without control characters")]
    InvalidUserName,
    /// A backend token was presented but this server has no backend token secret.
    #[error("backend tokens are not enabled on this server (auth.backend_token_secret is not set)")]
    BackendTokensDisabled,
    /// The backend token was refused.
    #[error("the backend token was refused: {0}")]
    InvalidBackendToken(BackendTokenRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The channel that checks logins could not be reached.
    #[error("logins cannot be checked right now; try again later")]
    Unavailable(#[source] ChannelCallError),
    /// Too many logins are being checked at once (the queue is full, or the login waited in
    /// it too long): retry in a few seconds.
    #[error("too many logins are being checked right now; retry in a few seconds")]
    LoginsBusy(#[source] PasswordError),
    /// Too many failed logins for this user name or from this address (or checks running
    /// that could make too many): refused without a password check for a while.
    #[error("{0}")]
    LoginsLimited(LoginBlocked),
    /// A stored password hash cannot be checked (unreadable, or costlier than allowed), or
    /// the hashing threads are gone: an operator must look.
    #[error("the password could not be checked: {0}")]
    PasswordCheck(#[source] PasswordError),
}

impl AuthError {
    /// Returns the class of this error. A store failure or a password hash that cannot be
    /// checked is `Unavailable` to the device (it may retry; an operator must look at the
    /// logs), whatever the store's own class.
    pub fn class(&self) -> ErrorClass {
        match self {
            AuthError::BadCredentials
            | AuthError::InvalidToken
            | AuthError::ExpiredToken
            | AuthError::InvalidUserName
            | AuthError::BackendTokensDisabled
            | AuthError::InvalidBackendToken(_) => ErrorClass::Unauthenticated,
            AuthError::DeviceDisabled { .. } | AuthError::UserDisabled => ErrorClass::Forbidden,
            // Busy, or blocked for failed logins: retry later, as the message says.
            AuthError::LoginsBusy(_) | AuthError::LoginsLimited(_) => ErrorClass::ResourceExhausted,
            AuthError::Unavailable(_) | AuthError::Store(_) | AuthError::PasswordCheck(_) => ErrorClass::Unavailable,
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(error: PasswordError) -> Self {
        if error.is_busy() { AuthError::LoginsBusy(error) } else { AuthError::PasswordCheck(error) }
    }
}

impl From<LoginBlocked> for AuthError {
    fn from(blocked: LoginBlocked) -> Self {
        AuthError::LoginsLimited(blocked)
    }
}

/// Where passwords are checked, each behind the same concurrency limit.
enum PasswordChecks {
    /// Against local users' argon2 hashes, on a bounded pool.
    Local(PasswordPool),
    /// By the login channel's Authenticate, at most `admission`'s limit at once.
    Channel { channel: ChannelConnection, admission: Admission },
}

/// Returns the custom-partition entitlements granted by a login channel or a backend token:
/// (source, key) pairs, without empty or app (`*`) keys, at most [`MAX_ENTITLEMENTS`].
fn entitlement_set(granted: impl Iterator<Item = (String, String)>) -> BTreeSet<(String, String)> {
    granted
        .filter(|(_, key)| !key.is_empty() && key != syncline_proto::APP_PARTITION_KEY)
        .take(MAX_ENTITLEMENTS)
        .collect()
}

#[derive(Clone, PartialEq, Message)]
struct TokenClaims {
    #[prost(string, tag = "1")]
    client_id: String,
    #[prost(string, tag = "2")]
    user_id: String,
    #[prost(int64, tag = "3")]
    expires_ms: i64,
    #[prost(uint64, tag = "4")]
    generation: u64,
    /// Custom partitions granted by the channel at login, as "source\0key".
    #[prost(string, repeated, tag = "5")]
    entitlements: Vec<String>,
    /// When the token was issued (Unix ms): tokens issued before an operator revoked the
    /// user's sessions are refused. 0 in tokens from before this field (always revoked then).
    #[prost(int64, tag = "6")]
    issued_ms: i64,
}

/// An authenticated device session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub client_id: String,
    /// Custom partitions the user may sync, as (source, key), granted by the channel that
    /// checked the login.
    pub entitlements: BTreeSet<(String, String)>,
}

/// A session token and when it expires.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_ms: i64,
}

/// Device information given at login.
#[derive(Clone, Debug, Default)]
pub struct DeviceDetails {
    pub platform: String,
    pub app_version: String,
    pub model: String,
}

/// Checks credentials and tokens, registers devices.
pub struct Authenticator {
    store: Arc<dyn Store>,
    secret: Vec<u8>,
    token_ttl: Duration,
    passwords: PasswordChecks,
    failed_logins: FailedLogins,
    /// When set, devices may log in with backend tokens.
    backend_tokens: Option<BackendTokenVerifier>,
}

/// Returns the current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Returns true when `name` is an acceptable user name.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USER_NAME_BYTES && !name.chars().any(char::is_control)
}

/// Adds a user with an argon2 hash of `password`.
pub fn add_user(store: &dyn Store, name: &str, password: &str) -> Result<(), AuthError> {
    if !valid_user_name(name) {
        return Err(AuthError::InvalidUserName);
    }
    // One hash on the calling thread: a command-line action or a test's setup, not a login.
    let password_hash = passwords::hash_password_here(password, &passwords::Params::DEFAULT)?;
    store.add_user(&StoredUser { name: name.to_owned(), password_hash })?;
    Ok(())
}

/// Returns a new random client id (128 bits, hex).
pub fn new_client_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Authenticator {
    /// Loads (or creates) the token secret from the store. Logins are checked by `channel`
    /// when given, else against local users on a password pool; `limits` bound both.
    pub fn new(
        store: Arc<dyn Store>,
        token_ttl: Duration,
        channel: Option<ChannelConnection>,
        limits: &LoginLimits,
    ) -> Result<Self, AuthError> {
        let secret = store.secret(TOKEN_SECRET_NAME, &|| {
            let mut secret = vec![0u8; TOKEN_SECRET_BYTES];
            rand::rng().fill_bytes(&mut secret);
            secret
        })?;
        let passwords = match channel {
            Some(channel) => PasswordChecks::Channel {
                channel,
                admission: Admission::new(limits.concurrency, limits.queue, limits.queue_timeout),
            },
            None => PasswordChecks::Local(PasswordPool::new(PoolConfig {
                threads: limits.concurrency,
                queue: limits.queue,
                max_wait: limits.queue_timeout,
                ..PoolConfig::default()
            })?),
        };
        Ok(Self {
            store,
            secret,
            token_ttl,
            passwords,
            failed_logins: FailedLogins::new(limits.failed),
            backend_tokens: None,
        })
    }

    /// Returns this authenticator accepting backend tokens checked by `verifier`.
    pub fn with_backend_tokens(mut self, verifier: BackendTokenVerifier) -> Self {
        self.backend_tokens = Some(verifier);
        self
    }

    /// Returns what the local password pool holds and has done (`None` when a channel checks
    /// logins).
    #[cfg(any(test, feature = "test-util"))]
    pub fn password_pool_stats(&self) -> Option<passwords::PoolStats> {
        match &self.passwords {
            PasswordChecks::Local(pool) => Some(pool.stats()),
            PasswordChecks::Channel { .. } => None,
        }
    }

    /// Checks a username and password from `from` and registers (or refreshes) the device.
    /// `client_id` is reused when it is known and belongs to the same user. Refused without a
    /// check while the user name or the address is blocked for failed logins
    /// ([`login_limits`]), and as busy when too many checks are running and waiting.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        from: IpAddr,
        client_id: &str,
        details: DeviceDetails,
    ) -> Result<(Identity, IssuedToken), AuthError> {
        if !valid_user_name(username) {
            return Err(AuthError::BadCredentials);
        }
        // A blocked name or address is refused before it takes a place in the queue.
        self.failed_logins.check(username, from, Instant::now())?;
        // Once admitted, the check counts against the limits while it runs, so that
        // concurrent guesses cannot all start before the first failure is counted. A check
        // that ends without an answer (or whose caller goes away) counts for nothing.
        let checked = match &self.passwords {
            PasswordChecks::Local(pool) => {
                let admitted = pool.admit().await?;
                let running = self.failed_logins.begin(username, from, Instant::now())?;
                (self.login_locally(pool, admitted, username, password).await, running)
            }
            PasswordChecks::Channel { channel, admission } => {
                let _admitted = admission.admit().await?;
                let running = self.failed_logins.begin(username, from, Instant::now())?;
                (self.login_with_channel(channel, username, password).await, running)
            }
        };
        let (user_id, entitlements) = match checked {
            (Ok(login), running) => {
                running.succeeded();
                login
            }
            (Err(AuthError::BadCredentials), running) => {
                running.failed(Instant::now());
                return Err(AuthError::BadCredentials);
            }
            (Err(error), _abandoned) => return Err(error),
        };
        self.register_device(user_id, entitlements, client_id, details).await
    }

    /// Checks a backend token and registers (or refreshes) the device of the user it names,
    /// like [`Authenticator::login`].
    pub async fn login_with_backend_token(
        &self,
        token: &str,
        client_id: &str,
        details: DeviceDetails,
    ) -> Result<(Identity, IssuedToken), AuthError> {
        let verifier = self.backend_tokens.as_ref().ok_or(AuthError::BackendTokensDisabled)?;
        let now_secs = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let login = verifier.verify(token, now_secs).map_err(AuthError::InvalidBackendToken)?;
        self.register_device(login.user_id, login.entitlements, client_id, details).await
    }

    /// Registers the device of an authenticated user, or refreshes it when `client_id` is
    /// known and belongs to the same user (a locked or wiped device is refused), and issues
    /// its session token.
    async fn register_device(
        &self,
        user_id: String,
        entitlements: BTreeSet<(String, String)>,
        client_id: &str,
        details: DeviceDetails,
    ) -> Result<(Identity, IssuedToken), AuthError> {
        let store = self.store.clone();
        let wanted = client_id.to_owned();
        let device = blocking(move || -> Result<StoredDevice, AuthError> {
            if store.user_controls(&user_id)?.disabled {
                return Err(AuthError::UserDisabled);
            }
            let now = now_ms();
            let existing = if wanted.is_empty() { None } else { store.device(&wanted)? };
            let device = match existing {
                Some(mut device) if device.user_id == user_id => {
                    if device.state != DeviceState::Active {
                        return Err(AuthError::DeviceDisabled { client_id: device.client_id, state: device.state });
                    }
                    device.last_seen_ms = now;
                    device.platform = details.platform;
                    device.app_version = details.app_version;
                    device.model = details.model;
                    device
                }
                _ => StoredDevice {
                    client_id: new_client_id(),
                    user_id,
                    platform: details.platform,
                    app_version: details.app_version,
                    model: details.model,
                    created_ms: now,
                    last_seen_ms: now,
                    state: DeviceState::Active,
                    token_generation: 0,
                },
            };
            store.put_device(&device)?;
            Ok(device)
        })
        .await??;
        let identity = Identity { user_id: device.user_id.clone(), client_id: device.client_id.clone(), entitlements };
        let token = self.issue(&identity, device.token_generation);
        Ok((identity, token))
    }

    /// Asks the channel; returns the user id and entitlements it grants.
    async fn login_with_channel(
        &self,
        channel: &ChannelConnection,
        username: &str,
        password: &str,
    ) -> Result<(String, BTreeSet<(String, String)>), AuthError> {
        let answer = match channel.authenticate(username, password).await {
            Ok(answer) => answer,
            Err(error) if error.is_transient() => return Err(AuthError::Unavailable(error)),
            Err(error) => {
                tracing::warn!(%error, "the login channel refused an Authenticate call");
                return Err(AuthError::BadCredentials);
            }
        };
        if !answer.ok {
            return Err(AuthError::BadCredentials);
        }
        let user_id = if answer.user_id.is_empty() { username.to_owned() } else { answer.user_id };
        if !valid_user_name(&user_id) {
            return Err(AuthError::InvalidUserName);
        }
        let entitlements = entitlement_set(
            answer
                .entitlements
                .into_iter()
                .flat_map(|(source, keys)| keys.keys.into_iter().map(move |key| (source.clone(), key))),
        );
        Ok((user_id, entitlements))
    }

    /// Checks a local user's password on `pool` in the place `admitted`; returns the user
    /// id. The user is read from the store in that place, so that a storm of logins does not also spread store
    /// reads over many blocking threads. An unknown user is checked against the pool's decoy
    /// hash, so that it takes as long as a known one.
    async fn login_locally(
        &self,
        pool: &PasswordPool,
        admitted: Admitted,
        username: &str,
        password: &str,
    ) -> Result<(String, BTreeSet<(String, String)>), AuthError> {
        let store = self.store.clone();
        let name = username.to_owned();
        let user = blocking(move || store.user(&name)).await??;
        let stored = user.map(|user| user.password_hash);
        if pool.verify_admitted(admitted, password, stored.as_deref()).await? && stored.is_some() {
            Ok((username.to_owned(), BTreeSet::new()))
        } else {
            Err(AuthError::BadCredentials)
        }
    }

    /// Checks a session token; returns the identity and a fresh token.
    pub async fn resume(&self, token: &str) -> Result<(Identity, IssuedToken), AuthError> {
        let claims = self.verify(token)?;
        if claims.expires_ms <= now_ms() {
            return Err(AuthError::ExpiredToken);
        }
        let store = self.store.clone();
        let (client_id, user_id) = (claims.client_id.clone(), claims.user_id.clone());
        let (device, controls) =
            blocking(move || Ok::<_, StoreError>((store.device(&client_id)?, store.user_controls(&user_id)?)))
                .await??;
        if controls.disabled {
            return Err(AuthError::UserDisabled);
        }
        if controls.sessions_revoked_ms > 0 && claims.issued_ms <= controls.sessions_revoked_ms {
            return Err(AuthError::ExpiredToken);
        }
        let Some(device) = device else {
            return Err(AuthError::ExpiredToken);
        };
        if device.user_id != claims.user_id {
            return Err(AuthError::InvalidToken);
        }
        if claims.generation != device.token_generation {
            return Err(AuthError::ExpiredToken);
        }
        if device.state != DeviceState::Active {
            return Err(AuthError::DeviceDisabled { client_id: device.client_id, state: device.state });
        }
        let entitlements = claims
            .entitlements
            .iter()
            .filter_map(|entry| entry.split_once('\0'))
            .map(|(source, key)| (source.to_owned(), key.to_owned()))
            .collect();
        let identity = Identity { user_id: claims.user_id, client_id: claims.client_id, entitlements };
        let token = self.issue(&identity, claims.generation);
        Ok((identity, token))
    }

    /// Revokes every session token issued to `client_id` so far (logout).
    pub async fn revoke_tokens(&self, client_id: &str) -> Result<(), AuthError> {
        let store = self.store.clone();
        let client_id = client_id.to_owned();
        blocking(move || -> Result<(), AuthError> {
            if let Some(mut device) = store.device(&client_id)? {
                device.token_generation += 1;
                store.put_device(&device)?;
            }
            Ok(())
        })
        .await?
    }

    fn issue(&self, identity: &Identity, generation: u64) -> IssuedToken {
        let issued_ms = now_ms();
        let expires_ms = issued_ms.saturating_add(self.token_ttl.as_millis() as i64);
        let claims = TokenClaims {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            expires_ms,
            generation,
            entitlements: identity.entitlements.iter().map(|(source, key)| format!("{source}\0{key}")).collect(),
            issued_ms,
        }
        .encode_to_vec();
        let signature = self.sign(&claims);
        IssuedToken {
            token: format!("{}.{}", URL_SAFE_NO_PAD.encode(&claims), URL_SAFE_NO_PAD.encode(signature)),
            expires_ms,
        }
    }

    fn sign(&self, claims: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(claims);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let (claims, signature) = token.split_once('.').ok_or(AuthError::InvalidToken)?;
        let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| AuthError::InvalidToken)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthError::InvalidToken)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(&claims);
        mac.verify_slice(&signature).map_err(|_| AuthError::InvalidToken)?;
        TokenClaims::decode(claims.as_slice()).map_err(|_| AuthError::InvalidToken)
    }

    /// Returns a token for `identity` that expired `ago` before now (tests of expiry).
    #[cfg(any(test, feature = "test-util"))]
    pub fn expired_token_for_test(&self, identity: &Identity, ago: Duration) -> String {
        let claims = TokenClaims {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            expires_ms: now_ms() - ago.as_millis() as i64,
            generation: 0,
            entitlements: Vec::new(),
            issued_ms: 0,
        }
        .encode_to_vec();
        let signature = self.sign(&claims);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&claims), URL_SAFE_NO_PAD.encode(signature))
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))
}
