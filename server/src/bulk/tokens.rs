//! Download tokens: short-lived bearer credentials, each scoped to one bulk file and one
//! user, signed with HMAC-SHA256 under a server secret kept in the store (so every node of a
//! cluster, and a restarted server, accepts the tokens the others issued).
//!
//! A token is `base64url(claims) "." base64url(mac)`, the claims being
//! `file_id "\n" user_id "\n" expires_ms`. Nothing is stored per token: the signature proves
//! the server issued it, the claims say for which file, whom and until when.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the store secret tokens are signed with.
pub const TOKEN_SECRET_NAME: &str = "bulk-download-key";

/// Longest token accepted: a file id, a user id of at most a few hundred bytes, a time and
/// a MAC, base64 encoded, fit far below it; longer input is refused before any decoding.
const MAX_TOKEN_BYTES: usize = 4096;

/// What a valid token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// The bulk file the token opens.
    pub file_id: String,
    /// The user it was issued to.
    pub user_id: String,
    /// When it stops being accepted, in Unix milliseconds.
    pub expires_ms: i64,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server could have issued (bad shape, bad encoding or bad signature).
    #[error("the download token is not valid")]
    Invalid,
    /// A genuine token whose time is over.
    #[error("the download token has expired; ask for the bulk file again")]
    Expired,
}

/// Signs and checks download tokens.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenSigner(<redacted>)")
    }
}

impl TokenSigner {
    /// Returns a signer using `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    /// Returns a token for `claims`.
    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = format!("{}\n{}\n{}", claims.file_id, claims.user_id, claims.expires_ms);
        let mac = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(mac))
    }

    /// Returns the claims of `token` if this server signed it and it has not expired at
    /// `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let (payload, mac) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Invalid)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Invalid)?;
        self.mac(&payload).verify_slice(&mac).map_err(|_| TokenError::Invalid)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Invalid)?;
        let mut parts = payload.splitn(3, '\n');
        let (Some(file_id), Some(user_id), Some(expires)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Invalid);
        };
        let expires_ms: i64 = expires.parse().map_err(|_| TokenError::Invalid)?;
        if expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(TokenClaims { file_id: file_id.to_owned(), user_id: user_id.to_owned(), expires_ms })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(payload);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_ms: i64) -> TokenClaims {
        TokenClaims { file_id: "f1".into(), user_id: "ann".into(), expires_ms }
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let signer = TokenSigner::new(vec![7; 32]);
        let token = signer.issue(&claims(1_000));
        assert_eq!(signer.verify(&token, 999), Ok(claims(1_000)));
        assert_eq!(signer.verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn another_secret_or_a_changed_claim_is_refused() {
        let signer = TokenSigner::new(vec![7; 32]);
        let token = signer.issue(&claims(1_000));
        assert_eq!(TokenSigner::new(vec![8; 32]).verify(&token, 0), Err(TokenError::Invalid));
        let (_, mac) = token.split_once('.').expect("two parts");
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode("f1\nbob\n1000"));
        assert_eq!(signer.verify(&forged, 0), Err(TokenError::Invalid), "the user cannot be swapped");
        for garbage in ["", ".", "abc", "a.b", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert_eq!(signer.verify(garbage, 0), Err(TokenError::Invalid), "{garbage:.20}");
        }
    }

    #[test]
    fn user_ids_with_separators_stay_in_their_claim() {
        let signer = TokenSigner::new(vec![1; 32]);
        let odd = TokenClaims { file_id: "f".into(), user_id: "a.b\nc".into(), expires_ms: 5 };
        // A newline in the user id moves the split: the token then fails to parse its time
        // rather than granting another user anything.
        assert!(signer.verify(&signer.issue(&odd), 0).is_err());
        let dotted = TokenClaims { user_id: "a.b@example.org".into(), ..odd };
        assert_eq!(signer.verify(&signer.issue(&dotted), 0), Ok(dotted));
    }
}
