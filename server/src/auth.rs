//! Sessions: password checks (argon2), session tokens, device registration.
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
use prost::Message;
use rand::RngCore;
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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The channel that checks logins could not be reached.
    #[error("logins cannot be checked right now; try again later")]
    Unavailable(#[source] ChannelError),
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
        Ok(Self { store, secret, token_ttl, hashing: Semaphore::new(permits), channel })
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
        let store = self.store.clone();
        let wanted = client_id.to_owned();
        let owner = user_id.clone();
        let device = blocking(move || -> Result<StoredDevice, AuthError> {
            let now = now_ms();
            let existing = if wanted.is_empty() { None } else { store.device(&wanted)? };
            let device = match existing {
                Some(mut device) if device.user_id == owner => {
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
                    user_id: owner,
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
        let entitlements = answer
            .entitlements
            .into_iter()
            .flat_map(|(source, keys)| keys.keys.into_iter().map(move |key| (source.clone(), key)))
            .filter(|(_, key)| !key.is_empty() && key != syncline_proto::APP_PARTITION_KEY)
            .take(MAX_ENTITLEMENTS)
            .collect();
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
