//! Backend tokens as an app's backend issues them: HS256 JWTs that let a device log in as a
//! user the backend has already authenticated (`Hello.backend_token`, see
//! `proto/syncline/v1/device.proto`). A real app gets its token from its backend; tests and
//! load runs ([`DeviceConfig::with_backend_token`](crate::DeviceConfig::with_backend_token),
//! `syncline-sim personal`) mint their own with the server's secret.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The claims of a backend token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendTokenClaims {
    /// The user id the device logs in as.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The audience, when the server checks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Custom partitions the user may sync: source → partition keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub entitlements: BTreeMap<String, Vec<String>>,
}

impl BackendTokenClaims {
    /// Returns claims for `user`, issued now and valid for `ttl`.
    pub fn for_user(user: impl Into<String>, ttl: Duration) -> Self {
        let now = unix_now_secs();
        Self { sub: user.into(), exp: now.saturating_add(ttl.as_secs()), iat: Some(now), ..Self::default() }
    }

    /// Returns these claims with audience `aud`.
    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.aud = Some(aud.into());
        self
    }

    /// Returns these claims granting partition `key` of custom source `source`.
    pub fn with_entitlement(mut self, source: impl Into<String>, key: impl Into<String>) -> Self {
        self.entitlements.entry(source.into()).or_default().push(key.into());
        self
    }

    /// Returns the token: these claims signed with HS256 and `secret`.
    pub fn sign(&self, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), self, &EncodingKey::from_secret(secret))
    }
}

/// Returns the current Unix time in seconds.
pub fn unix_now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_claims_signed_with_hs256() {
        let claims = BackendTokenClaims::for_user("ann", Duration::from_secs(60))
            .with_audience("sync")
            .with_entitlement("O", "k");
        let token = claims.sign(b"0123456789abcdef0123456789abcdef").unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&["sync"]);
        let key = jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap().claims;
        assert_eq!(decoded["sub"], "ann");
        assert_eq!(decoded["aud"], "sync");
        assert_eq!(decoded["entitlements"]["O"][0], "k");
        assert!(decoded.get("nbf").is_none());
        assert!(decoded["exp"].as_u64().unwrap() >= unix_now_secs() + 59);
    }
}
