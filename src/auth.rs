//! Auth: who is calling. User JWTs (sessions, REST) and service API keys (ingest, any inbox).
//!
//! Invariants: one algorithm is accepted, the configured one (so `alg: none` and algorithm confusion fail);
//! `exp` is required; keys live in this handle, not in statics; tokens never reach logs
//! ([`redact_query`] is what request logging uses).

use std::collections::HashMap;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::config::{AuthSettings, JwtAlgorithm, Secret, UserClaim};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a token as ?token=, Authorization: Bearer, or Sec-WebSocket-Protocol")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("this credential may not access user `{0}`")]
    WrongUser(String),
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        id: String,
        expires_at: i64,
    },
    /// `key_id`: a short fingerprint of the key (the first 8 bytes of its SHA-256, in hex) that names the caller
    /// (it scopes `Idempotency-Key`s) without revealing the key.
    Service {
        key_id: String,
    },
}

impl Principal {
    /// Users reach only their own inbox; services reach any.
    pub fn may_access(&self, user: &str) -> Result<(), AuthError> {
        match self {
            Principal::Service { .. } => Ok(()),
            Principal::User { id, .. } if id == user => Ok(()),
            Principal::User { .. } => Err(AuthError::WrongUser(user.to_owned())),
        }
    }
}

pub struct Authenticator {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    validation: Validation,
    user_claim: UserClaim,
    service_keys: Vec<Secret>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(s: &AuthSettings) -> Result<Authenticator, String> {
        let (algorithm, decoding, encoding) = match s.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = s.jwt_secret.expose().as_bytes();
                (Algorithm::HS256, DecodingKey::from_secret(secret), Some(EncodingKey::from_secret(secret)))
            }
            JwtAlgorithm::RS256 => {
                let pem = std::fs::read(&s.jwt_public_key_path).map_err(|e| {
                    format!("auth.jwt_public_key_path: cannot read {}: {e}", s.jwt_public_key_path.display())
                })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| format!("auth.jwt_public_key_path: not an RSA public key PEM: {e}"))?;
                (Algorithm::RS256, key, None)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = s.leeway_secs;
        if s.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&s.issuer]);
        }
        if s.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&s.audience]);
        }
        Ok(Authenticator {
            decoding,
            encoding,
            algorithm,
            validation,
            user_claim: s.user_claim,
            service_keys: s.service_keys.clone(),
        })
    }

    /// Verify a user token and return its user.
    pub fn verify_user(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            decode::<HashMap<String, Value>>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claim = self.user_claim.name();
        let id = data
            .claims
            .get(claim)
            .and_then(crate::event::id_string)
            .ok_or_else(|| AuthError::Invalid(format!("no `{claim}` claim")))?;
        let expires_at = data.claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Principal::User { id, expires_at })
    }

    pub fn is_service_key(&self, candidate: &str) -> bool {
        // Constant time per key, so a wrong key reveals nothing about a right one.
        self.service_keys
            .iter()
            .fold(false, |found, k| found | bool::from(k.expose().as_bytes().ct_eq(candidate.as_bytes())))
    }

    /// A service key or a user token.
    pub fn verify_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if self.is_service_key(token) {
            use sha2::Digest;
            Ok(Principal::Service { key_id: hex::encode(&sha2::Sha256::digest(token.as_bytes())[..8]) })
        } else {
            self.verify_user(token)
        }
    }

    /// Mint a user token (HS256 only): the dev token endpoint and `herald token`.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> Option<String> {
        let key = self.encoding.as_ref()?;
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            self.user_claim.name(): user,
            "iat": now,
            "exp": now + ttl_secs as i64,
        });
        encode(&Header::new(self.algorithm), &claims, key).ok()
    }
}

/// The `Authorization: Bearer` value, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A JWT offered as a WebSocket sub-protocol: `Sec-WebSocket-Protocol: bearer, <jwt>`.
pub fn protocol_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| p.len() > 20 && p.split('.').count() == 3)
}

/// A query string fit for logs: the value of `token` (and `access_token`) replaced by `[redacted]`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") || k.eq_ignore_ascii_case("access_token") => {
                format!("{k}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn auth() -> Authenticator {
        Authenticator::new(&Settings::defaults().auth).unwrap()
    }

    fn token(claims: Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn secret() -> Vec<u8> {
        Settings::defaults().auth.jwt_secret.expose().as_bytes().to_vec()
    }

    fn future() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    #[test]
    fn valid_token_yields_its_user_string_or_numeric() {
        let a = auth();
        let t = token(serde_json::json!({"sub": "u1", "exp": future()}), Algorithm::HS256, &secret());
        assert!(matches!(a.verify_user(&t), Ok(Principal::User { id, .. }) if id == "u1"));
        let t = token(serde_json::json!({"sub": 42, "exp": future()}), Algorithm::HS256, &secret());
        assert!(matches!(a.verify_user(&t), Ok(Principal::User { id, .. }) if id == "42"));
    }

    #[test]
    fn expired_missing_exp_wrong_key_and_wrong_alg_are_refused() {
        let a = auth();
        let past = chrono::Utc::now().timestamp() - 600;
        let t = token(serde_json::json!({"sub": "u", "exp": past}), Algorithm::HS256, &secret());
        assert_eq!(a.verify_user(&t), Err(AuthError::Expired));
        let t = token(serde_json::json!({"sub": "u"}), Algorithm::HS256, &secret());
        assert!(matches!(a.verify_user(&t), Err(AuthError::Invalid(_))));
        let t = token(serde_json::json!({"sub": "u", "exp": future()}), Algorithm::HS256, b"another-secret-entirely");
        assert!(matches!(a.verify_user(&t), Err(AuthError::Invalid(_))));
        let t = token(serde_json::json!({"sub": "u", "exp": future()}), Algorithm::HS384, &secret());
        assert!(matches!(a.verify_user(&t), Err(AuthError::Invalid(_))));
        // alg: none, hand-built: header {"alg":"none","typ":"JWT"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        assert!(matches!(a.verify_user(none), Err(AuthError::Invalid(_))));
        assert!(matches!(a.verify_user("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn service_keys_and_access_rules() {
        let a = auth();
        assert!(a.is_service_key("herald-dev-service-key"));
        assert!(!a.is_service_key("herald-dev-service-kez"));
        assert!(!a.is_service_key(""));
        assert!(
            matches!(a.verify_bearer("herald-dev-service-key"), Ok(Principal::Service { key_id }) if key_id.len() == 16)
        );
        let user = Principal::User { id: "a".into(), expires_at: 0 };
        assert!(user.may_access("a").is_ok());
        assert_eq!(user.may_access("b"), Err(AuthError::WrongUser("b".into())));
        assert!(Principal::Service { key_id: "k".into() }.may_access("b").is_ok());
    }

    #[test]
    fn minted_tokens_verify_with_the_configured_claim() {
        let mut s = Settings::defaults().auth;
        s.user_claim = UserClaim::UserId;
        let a = Authenticator::new(&s).unwrap();
        let t = a.mint("7", 60).unwrap();
        assert!(matches!(a.verify_user(&t), Ok(Principal::User { id, .. }) if id == "7"));
    }

    #[test]
    fn tokens_in_query_strings_are_redacted() {
        assert_eq!(redact_query("token=abc.def.ghi&since=4"), "token=[redacted]&since=4");
        assert_eq!(redact_query("since=4&access_token=x"), "since=4&access_token=[redacted]");
        assert_eq!(redact_query("limit=5"), "limit=5");
    }
}
