//! Backend tokens: JWTs signed with HS256 by the app's backend, which has already
//! authenticated the user (see [`BackendTokenVerifier`]).

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{MAX_TOKEN_BYTES, MAX_USER_NAME_BYTES, entitlement_set, valid_user_name};

/// Clock skew tolerated on a backend token's `exp`, `nbf` and `iat`: the app's backend and
/// Syncline run on different machines, and NTP keeps them within a second or two; 30 s is
/// generous without keeping an expired token alive for long.
pub const BACKEND_TOKEN_LEEWAY_SECS: u64 = 30;

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
    /// [`MIN_BACKEND_TOKEN_SECRET_BYTES`](crate::config::MIN_BACKEND_TOKEN_SECRET_BYTES); the
    /// config checks that) and, when given, meant for `audience`.
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::{MAX_ENTITLEMENTS, now_ms};

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
