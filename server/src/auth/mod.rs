//! Sessions: password checks (argon2), backend tokens, session tokens, device registration.
//!
//! A device proves who it is in one of three ways: a username and password (argon2 against
//! local users, or the login channel's Authenticate), a *backend token* (a JWT signed with
//! HS256 by the app's backend, which has already authenticated the user: see
//! [`BackendTokenVerifier`]), or a session token from an earlier Welcome. The first two
//! register (or refresh) the device and hand out a session token; the third resumes.
//!
//! Session tokens are `base64url(claims) "." base64url(HMAC-SHA256(secret, claims))`, where
//! the secret is generated once per data directory and kept in the store, so tokens survive
//! restarts and cannot be forged without it. Claims carry the client id, user id, expiry and
//! the device's token generation; logging out bumps the generation, which revokes every token
//! issued to that device before.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prost::Message;
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::channel::ChannelError;
use crate::channel::grpc::ChannelConnection;
use crate::storage::{Store, StoreError, StoredDevice, StoredUser};

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
/// Clock skew tolerated on a backend token's `exp`, `nbf` and `iat`: the app's backend and
/// Syncline run on different machines, and NTP keeps them within a second or two; 30 s is
/// generous without keeping an expired token alive for long.
pub const BACKEND_TOKEN_LEEWAY_SECS: u64 = 30;
/// Shortest backend token secret: an HS256 key must be at least as long as the hash
/// (256 bits, RFC 7518 section 3.2), or it is guessable offline from one token.
pub const MIN_BACKEND_TOKEN_SECRET_BYTES: usize = 32;

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
    /// The device is locked or wiped by an operator.
    #[error("this device is {state}")]
    DeviceDisabled { state: String },
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
    Unavailable(#[source] ChannelError),
}

/// Why a backend token was refused, in terms the app's backend developers can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendTokenRefusal {
    /// Not a JWT at all (wrong number of parts, bad base64 or JSON, a claim of the wrong type).
    #[error("it is not a well-formed JWT")]
    Malformed,
    /// Signed with another algorithm than HS256.
    #[error("it is not signed with HS256")]
    WrongAlgorithm,
    /// The signature does not match the configured secret.
    #[error("its signature does not match")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("it has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("it is not valid yet")]
    NotYetValid,
    /// A required claim (`sub`, `exp`, or `aud` when an audience is configured) is missing.
    #[error("it has no {0:?} claim")]
    MissingClaim(String),
    /// `aud` does not name the configured audience.
    #[error("its audience is not this server's")]
    WrongAudience,
    /// `sub` is not an acceptable user name.
    #[error("its subject is not a valid user id (1 to {MAX_USER_NAME_BYTES} bytes without control characters)")]
    InvalidSubject,
    /// Longer than any token we issue would need to be.
    #[error("it is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
}

/// The claims Syncline reads from a backend token. `exp` (and `nbf`, `aud` when present) are
/// checked by `jsonwebtoken` before these are looked at.
#[derive(Debug, Deserialize)]
struct BackendTokenClaims {
    /// Optional here so that a missing `sub` is reported as such, not as malformed JSON.
    #[serde(default)]
    sub: Option<String>,
    /// Issued-at, Unix seconds: a token from the future is refused like an early `nbf`.
    #[serde(default)]
    iat: Option<u64>,
    /// Custom partitions the user may sync: source → partition keys (the same meaning as a
    /// channel's Authenticate entitlements).
    #[serde(default)]
    entitlements: std::collections::BTreeMap<String, Vec<String>>,
}

/// A backend token that passed every check: who the user is and what they may sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendLogin {
    pub user_id: String,
    pub entitlements: std::collections::BTreeSet<(String, String)>,
}

/// Checks backend tokens: JWTs signed with HS256 with a secret shared between the app's
/// backend and Syncline.
///
/// Accepted claims: `sub` (required: the user id, a valid user name), `exp` (required),
/// `nbf` and `iat` (optional; neither may be in the future), `aud` (required and checked
/// when an audience is configured, ignored otherwise) and `entitlements` (optional: an
/// object of source name → array of partition keys, filtered and capped like a channel's
/// Authenticate entitlements). Times are checked with [`BACKEND_TOKEN_LEEWAY_SECS`] of
/// leeway. Unknown claims are ignored.
pub struct BackendTokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for BackendTokenVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BackendTokenVerifier").field("audience", &self.validation.aud).finish_non_exhaustive()
    }
}

impl BackendTokenVerifier {
    /// Returns a verifier for tokens signed with `secret` (at least
    /// [`MIN_BACKEND_TOKEN_SECRET_BYTES`]; the config checks that) and, when given, meant for
    /// `audience`.
    pub fn new(secret: &[u8], audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = BACKEND_TOKEN_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience a token's `aud` names some other party's
            // expectation; nothing here can check it.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// Checks `token` against the clock `now_secs` (Unix seconds, for `iat`; `exp` and `nbf`
    /// are checked against the system clock) and returns who it names.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<BackendLogin, BackendTokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(BackendTokenRefusal::TooLong);
        }
        let claims = jsonwebtoken::decode::<BackendTokenClaims>(token, &self.key, &self.validation)
            .map_err(|error| refusal_of(error.kind()))?
            .claims;
        if claims.iat.is_some_and(|iat| iat > now_secs.saturating_add(BACKEND_TOKEN_LEEWAY_SECS)) {
            return Err(BackendTokenRefusal::NotYetValid);
        }
        let sub = claims.sub.ok_or_else(|| BackendTokenRefusal::MissingClaim("sub".into()))?;
        if !valid_user_name(&sub) {
            return Err(BackendTokenRefusal::InvalidSubject);
        }
        let entitlements = entitlement_set(
            claims
                .entitlements
                .into_iter()
                .flat_map(|(source, keys)| keys.into_iter().map(move |key| (source.clone(), key))),
        );
        Ok(BackendLogin { user_id: sub, entitlements })
    }
}

/// Maps a `jsonwebtoken` failure to what the backend developer needs to know.
fn refusal_of(kind: &JwtErrorKind) -> BackendTokenRefusal {
    match kind {
        JwtErrorKind::InvalidSignature => BackendTokenRefusal::BadSignature,
        JwtErrorKind::ExpiredSignature => BackendTokenRefusal::Expired,
        JwtErrorKind::ImmatureSignature => BackendTokenRefusal::NotYetValid,
        JwtErrorKind::InvalidAudience => BackendTokenRefusal::WrongAudience,
        JwtErrorKind::InvalidSubject => BackendTokenRefusal::InvalidSubject,
        JwtErrorKind::MissingRequiredClaim(claim) => BackendTokenRefusal::MissingClaim(claim.clone()),
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm | JwtErrorKind::InvalidAlgorithmName => {
            BackendTokenRefusal::WrongAlgorithm
        }
        // The crate's kinds are non-exhaustive; everything else is a token we cannot read.
        _ => BackendTokenRefusal::Malformed,
    }
}

/// Returns the custom-partition entitlements granted by a login channel or a backend token:
/// (source, key) pairs, without empty or app (`*`) keys, at most [`MAX_ENTITLEMENTS`].
fn entitlement_set(granted: impl Iterator<Item = (String, String)>) -> std::collections::BTreeSet<(String, String)> {
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
}

/// An authenticated device session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub client_id: String,
    /// Custom partitions the user may sync, as (source, key), granted by the channel that
    /// checked the login.
    pub entitlements: std::collections::BTreeSet<(String, String)>,
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
    /// Bounds concurrent argon2 verifications (each takes tens of milliseconds of CPU and
    /// ~19 MiB), so a login storm cannot starve the server.
    hashing: Semaphore,
    /// When set, logins are checked by this channel instead of local users.
    channel: Option<ChannelConnection>,
    /// When set, devices may log in with backend tokens.
    backend_tokens: Option<BackendTokenVerifier>,
}

/// Returns the current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Returns the PHC argon2id hash of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| AuthError::InvalidUserName)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Store(StoreError::Io(format!("password hashing failed: {error}"))))
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
    let password_hash = hash_password(password)?;
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
    /// Loads (or creates) the token secret from the store.
    pub fn new(
        store: Arc<dyn Store>,
        token_ttl: Duration,
        channel: Option<ChannelConnection>,
    ) -> Result<Self, AuthError> {
        let secret = store.secret(TOKEN_SECRET_NAME, &|| {
            let mut secret = vec![0u8; TOKEN_SECRET_BYTES];
            rand::rng().fill_bytes(&mut secret);
            secret
        })?;
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self { store, secret, token_ttl, hashing: Semaphore::new(permits), channel, backend_tokens: None })
    }

    /// Returns this authenticator accepting backend tokens checked by `verifier`.
    pub fn with_backend_tokens(mut self, verifier: BackendTokenVerifier) -> Self {
        self.backend_tokens = Some(verifier);
        self
    }

    /// Checks a username and password and registers (or refreshes) the device. `client_id`
    /// is reused when it is known and belongs to the same user.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_id: &str,
        details: DeviceDetails,
    ) -> Result<(Identity, IssuedToken), AuthError> {
        if !valid_user_name(username) {
            return Err(AuthError::BadCredentials);
        }
        let (user_id, entitlements) = match &self.channel {
            Some(channel) => self.login_with_channel(channel, username, password).await?,
            None => (self.login_locally(username, password).await?, Default::default()),
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
        entitlements: std::collections::BTreeSet<(String, String)>,
        client_id: &str,
        details: DeviceDetails,
    ) -> Result<(Identity, IssuedToken), AuthError> {
        let store = self.store.clone();
        let wanted = client_id.to_owned();
        let device = blocking(move || -> Result<StoredDevice, AuthError> {
            let now = now_ms();
            let existing = if wanted.is_empty() { None } else { store.device(&wanted)? };
            let device = match existing {
                Some(mut device) if device.user_id == user_id => {
                    if device.state != "active" {
                        return Err(AuthError::DeviceDisabled { state: device.state });
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
                    state: "active".into(),
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
    ) -> Result<(String, std::collections::BTreeSet<(String, String)>), AuthError> {
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

    /// Checks a local user's password; returns the user id.
    async fn login_locally(&self, username: &str, password: &str) -> Result<String, AuthError> {
        let store = self.store.clone();
        let name = username.to_owned();
        let user = blocking(move || store.user(&name)).await??;
        let Some(user) = user else {
            return Err(AuthError::BadCredentials);
        };
        let verified = {
            let _permit = self.hashing.acquire().await.map_err(|_| StoreError::Closed)?;
            let password = password.to_owned();
            blocking(move || {
                PasswordHash::new(&user.password_hash)
                    .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
                    .unwrap_or(false)
            })
            .await?
        };
        if !verified {
            return Err(AuthError::BadCredentials);
        }
        Ok(username.to_owned())
    }

    /// Checks a session token; returns the identity and a fresh token.
    pub async fn resume(&self, token: &str) -> Result<(Identity, IssuedToken), AuthError> {
        let claims = self.verify(token)?;
        if claims.expires_ms <= now_ms() {
            return Err(AuthError::ExpiredToken);
        }
        let store = self.store.clone();
        let client_id = claims.client_id.clone();
        let device = blocking(move || store.device(&client_id)).await??;
        let Some(device) = device else {
            return Err(AuthError::ExpiredToken);
        };
        if device.user_id != claims.user_id {
            return Err(AuthError::InvalidToken);
        }
        if claims.generation != device.token_generation {
            return Err(AuthError::ExpiredToken);
        }
        if device.state != "active" {
            return Err(AuthError::DeviceDisabled { state: device.state });
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
        let expires_ms = now_ms().saturating_add(self.token_ttl.as_millis() as i64);
        let claims = TokenClaims {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            expires_ms,
            generation,
            entitlements: identity.entitlements.iter().map(|(source, key)| format!("{source}\0{key}")).collect(),
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
    #[doc(hidden)]
    pub fn expired_token_for_test(&self, identity: &Identity, ago: Duration) -> String {
        let claims = TokenClaims {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            expires_ms: now_ms() - ago.as_millis() as i64,
            generation: 0,
            entitlements: Vec::new(),
        }
        .encode_to_vec();
        let signature = self.sign(&claims);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&claims), URL_SAFE_NO_PAD.encode(signature))
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-backend";

    fn now_secs() -> u64 {
        u64::try_from(now_ms() / 1000).unwrap()
    }

    fn mint(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn verify(claims: serde_json::Value, audience: Option<&str>) -> Result<BackendLogin, BackendTokenRefusal> {
        BackendTokenVerifier::new(SECRET, audience).verify(&mint(&claims, SECRET), now_secs())
    }

    #[test]
    fn a_valid_token_names_the_user_and_its_entitlements() {
        let now = now_secs();
        let login = verify(
            json!({
                "sub": "ann",
                "exp": now + 60,
                "iat": now,
                "nbf": now,
                "entitlements": {"Orders": ["team-1", "", "*", "team-2"], "Notes": ["n1"]},
                "role": "ignored",
            }),
            None,
        )
        .unwrap();
        assert_eq!(login.user_id, "ann");
        let expected: std::collections::BTreeSet<(String, String)> =
            [("Notes", "n1"), ("Orders", "team-1"), ("Orders", "team-2")]
                .into_iter()
                .map(|(source, key)| (source.to_owned(), key.to_owned()))
                .collect();
        assert_eq!(login.entitlements, expected, "empty and app keys are dropped");
    }

    #[test]
    fn entitlements_are_capped() {
        let keys: Vec<String> = (0..MAX_ENTITLEMENTS + 10).map(|n| format!("k{n}")).collect();
        let login =
            verify(json!({"sub": "ann", "exp": now_secs() + 60, "entitlements": {"Orders": keys}}), None).unwrap();
        assert_eq!(login.entitlements.len(), MAX_ENTITLEMENTS);
    }

    #[test]
    fn times_are_checked_with_the_leeway() {
        let now = now_secs();
        let leeway = BACKEND_TOKEN_LEEWAY_SECS;
        assert!(verify(json!({"sub": "ann", "exp": now - leeway / 2}), None).is_ok(), "within the leeway");
        assert_eq!(verify(json!({"sub": "ann", "exp": now - leeway - 5}), None), Err(BackendTokenRefusal::Expired));
        assert_eq!(
            verify(json!({"sub": "ann", "exp": now + 600, "nbf": now + leeway + 60}), None),
            Err(BackendTokenRefusal::NotYetValid)
        );
        assert_eq!(
            verify(json!({"sub": "ann", "exp": now + 600, "iat": now + leeway + 60}), None),
            Err(BackendTokenRefusal::NotYetValid)
        );
        assert!(verify(json!({"sub": "ann", "exp": now + 600, "iat": now + leeway / 2}), None).is_ok());
    }

    #[test]
    fn required_claims_and_the_subject_are_checked() {
        let exp = now_secs() + 60;
        assert_eq!(verify(json!({"exp": exp}), None), Err(BackendTokenRefusal::MissingClaim("sub".into())));
        assert_eq!(verify(json!({"sub": "ann"}), None), Err(BackendTokenRefusal::MissingClaim("exp".into())));
        assert_eq!(verify(json!({"sub": "", "exp": exp}), None), Err(BackendTokenRefusal::InvalidSubject));
        assert_eq!(verify(json!({"sub": "a\u{7}b", "exp": exp}), None), Err(BackendTokenRefusal::InvalidSubject));
        let long = "u".repeat(MAX_USER_NAME_BYTES + 1);
        assert_eq!(verify(json!({"sub": long, "exp": exp}), None), Err(BackendTokenRefusal::InvalidSubject));
        assert_eq!(verify(json!({"sub": 42, "exp": exp}), None), Err(BackendTokenRefusal::Malformed));
        assert_eq!(
            verify(json!({"sub": "ann", "exp": exp, "entitlements": ["Orders"]}), None),
            Err(BackendTokenRefusal::Malformed)
        );
    }

    #[test]
    fn the_audience_is_required_and_checked_only_when_configured() {
        let exp = now_secs() + 60;
        assert!(verify(json!({"sub": "ann", "exp": exp, "aud": "someone-else"}), None).is_ok());
        assert!(verify(json!({"sub": "ann", "exp": exp, "aud": "syncline"}), Some("syncline")).is_ok());
        assert!(verify(json!({"sub": "ann", "exp": exp, "aud": ["x", "syncline"]}), Some("syncline")).is_ok());
        assert_eq!(
            verify(json!({"sub": "ann", "exp": exp, "aud": "someone-else"}), Some("syncline")),
            Err(BackendTokenRefusal::WrongAudience)
        );
        assert_eq!(
            verify(json!({"sub": "ann", "exp": exp}), Some("syncline")),
            Err(BackendTokenRefusal::MissingClaim("aud".into()))
        );
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let verifier = BackendTokenVerifier::new(SECRET, None);
        let claims = json!({"sub": "ann", "exp": now_secs() + 60});
        let other = mint(&claims, b"another-secret-another-secret-another-secret");
        assert_eq!(verifier.verify(&other, now_secs()), Err(BackendTokenRefusal::BadSignature));
        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(verifier.verify(&hs512, now_secs()), Err(BackendTokenRefusal::WrongAlgorithm));
        // alg "none": header {"alg":"none"}, no signature.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert!(verifier.verify(&unsigned, now_secs()).is_err());
        for garbage in ["", "x", "a.b.c", "..", "\u{0}"] {
            assert_eq!(verifier.verify(garbage, now_secs()), Err(BackendTokenRefusal::Malformed), "{garbage:?}");
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verifier.verify(&huge, now_secs()), Err(BackendTokenRefusal::TooLong));
        // A valid token with its payload swapped keeps the old signature: refused.
        let valid = mint(&claims, SECRET);
        let mut parts: Vec<&str> = valid.split('.').collect();
        let forged_payload = URL_SAFE_NO_PAD.encode(json!({"sub": "root", "exp": now_secs() + 60}).to_string());
        parts[1] = &forged_payload;
        assert_eq!(verifier.verify(&parts.join("."), now_secs()), Err(BackendTokenRefusal::BadSignature));
    }
}
