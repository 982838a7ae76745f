//! Auth: who is calling, and what they may do. User JWTs (sessions, REST: their own inbox) and scoped service
//! API keys (`publish`, `inbox:read`, `inbox:write`, `admin`; `publish` optionally limited to exchanges and
//! routing keys).
//!
//! User tokens are verified with one configured key (`auth.algorithm`: an HS256 secret or an RS256 PEM) or, when
//! `auth.jwks_url` / `auth.oidc_issuer` is set, with the identity provider's published keys ([`jwks`]: RS256,
//! ES256 or EdDSA, chosen by `kid`, refreshed in the background; verification itself never waits on the network).
//!
//! Invariants: one algorithm is accepted, the configured one, or with a key set the one of the key the token's
//! `kid` names, from `auth.jwks_algorithms` (so `alg: none` and algorithm confusion fail);
//! `exp` is required, `nbf` is honoured, and `iss` / `aud` are required when configured (an `iss` is one string, never an array); a refresh token
//! (`token_type` or `typ` "refresh") is refused; the user claim is
//! taken exactly as issued (never trimmed: it must equal the path it opens); keys live in this handle, not in
//! statics; tokens and service keys never reach logs ([`redact_query`] is what request logging uses: it shows
//! only the values of the parameters Herald reads that hold no credential) — a service key is named by its id
//! ([`Principal::Service`]), and a refusal names the missing scope or the pattern, never the key. A service key is compared in constant time, as SHA-256 digests against every
//! configured key, so neither its content nor its length shows in the timing. A bare key from the old list
//! form has every scope (and a warning at start).
//!
//! `exp` rule (RFC 7519 NumericDate): an integer or a fraction of seconds since the epoch; a fraction is
//! floored (a token is never valid later than it says); a value after 9999-12-31T23:59:59Z ([`MAX_EXP`]),
//! which includes anything above `i64::MAX`, is refused as invalid. REST, the WebSocket handshake and an
//! in-session refresh all go through [`Authenticator::verify_user`], so they agree.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

pub use crate::config::Scope;
use crate::config::{AuthSettings, JwtAlgorithm, ServiceKeyConfig, UserClaim};
use crate::rules::Pattern;
use crate::telemetry::Health;

pub mod jwks;
use jwks::Jwks;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token or key>` (a WebSocket handshake also takes ?token= or Sec-WebSocket-Protocol)")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("this credential may not access user `{0}`")]
    WrongUser(String),
    /// A service key without the scope the request needs (403 `insufficient_scope`).
    #[error("this service key lacks the `{0}` scope")]
    MissingScope(Scope),
    /// `publish` outside the key's exchanges or routing keys (403 `insufficient_scope`); names the patterns.
    #[error("{0}")]
    OutOfScope(String),
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        id: String,
        expires_at: i64,
    },
    /// `key_id` names the caller without revealing the key: the configured `id`, or for a bare key of the old
    /// list form its fingerprint (the first 8 bytes of its SHA-256, in hex). It scopes `Idempotency-Key`s and
    /// is the `key` of logs and metrics.
    Service {
        key_id: String,
        grant: Arc<Grant>,
    },
}

/// What a service key may do: its scopes, and where `publish` may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    scopes: Vec<Scope>,
    /// `None`: any exchange. Each pattern with its text, for the refusal's message.
    exchanges: Option<Vec<(String, Pattern)>>,
    routing_keys: Option<Vec<(String, Pattern)>>,
}

impl Grant {
    /// Every scope, no limits: a bare key of the old list form.
    pub fn all() -> Grant {
        Grant { scopes: Scope::ALL.to_vec(), exchanges: None, routing_keys: None }
    }

    fn of(entry: &ServiceKeyConfig) -> Result<Grant, String> {
        let ServiceKeyConfig::Scoped(s) = entry else { return Ok(Grant::all()) };
        let compile = |patterns: &Option<Vec<String>>| -> Result<_, String> {
            patterns
                .as_ref()
                .map(|ps| ps.iter().map(|p| Ok((p.clone(), Pattern::parse(p)?))).collect::<Result<Vec<_>, String>>())
                .transpose()
        };
        Ok(Grant {
            scopes: s.scopes.clone(),
            exchanges: compile(&s.exchanges)?,
            routing_keys: compile(&s.routing_keys)?,
        })
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }

    /// `publish` to this exchange with this routing key. The refusal names the patterns and what the event
    /// carried, not the key.
    pub fn may_publish(&self, exchange: &str, routing_key: &str) -> Result<(), AuthError> {
        self.require(Scope::Publish)?;
        for (what, limits, value) in
            [("exchanges", &self.exchanges, exchange), ("routing keys", &self.routing_keys, routing_key)]
        {
            let Some(limits) = limits else { continue };
            if !limits.iter().any(|(_, p)| p.matches(value)) {
                let allowed = limits.iter().map(|(text, _)| format!("`{text}`")).collect::<Vec<_>>().join(", ");
                return Err(AuthError::OutOfScope(format!(
                    "this service key may publish only to {what} matching {allowed}; `{value}` is not one"
                )));
            }
        }
        Ok(())
    }
}

impl Principal {
    /// Users reach only their own inbox; a service key reaches any inbox with `scope` (`inbox:read` to read,
    /// `inbox:write` to change).
    pub fn may_access(&self, user: &str, scope: Scope) -> Result<(), AuthError> {
        match self {
            Principal::Service { grant, .. } => grant.require(scope),
            Principal::User { id, .. } if id == user => Ok(()),
            Principal::User { .. } => Err(AuthError::WrongUser(user.to_owned())),
        }
    }
}

/// A configured service key, as this handle keeps it: the key's digest, never the key.
struct ServiceKey {
    digest: [u8; 32],
    id: String,
    grant: Arc<Grant>,
}

pub struct Authenticator {
    keys: Keys,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    validation: Validation,
    /// With a key set: `validation` for each algorithm a key may verify, built once (not per token).
    by_algorithm: Vec<(Algorithm, Validation)>,
    user_claim: UserClaim,
    service_keys: Vec<ServiceKey>,
}

/// What verifies a user token's signature.
enum Keys {
    /// `auth.algorithm`'s secret or public key.
    Static(DecodingKey),
    /// The identity provider's key set (`auth.jwks_url`, `auth.oidc_issuer`).
    Jwks(Jwks),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match self.keys {
            Keys::Static(_) => format!("{:?}", self.algorithm),
            Keys::Jwks(_) => "JWKS".to_owned(),
        };
        f.debug_struct("Authenticator").field("keys", &keys).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(s: &AuthSettings) -> Result<Authenticator, String> {
        let (algorithm, keys, encoding) = match (Jwks::new(s)?, s.algorithm) {
            // The header's algorithm, checked against the chosen key, replaces this one per token.
            (Some(jwks), _) => (Algorithm::RS256, Keys::Jwks(jwks), None),
            (None, JwtAlgorithm::HS256) => {
                let secret = s.jwt_secret.expose().as_bytes();
                (
                    Algorithm::HS256,
                    Keys::Static(DecodingKey::from_secret(secret)),
                    Some(EncodingKey::from_secret(secret)),
                )
            }
            (None, JwtAlgorithm::RS256) => {
                let pem = std::fs::read(&s.jwt_public_key_path).map_err(|e| {
                    format!("auth.jwt_public_key_path: cannot read {}: {e}", s.jwt_public_key_path.display())
                })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| format!("auth.jwt_public_key_path: not an RSA public key PEM: {e}"))?;
                (Algorithm::RS256, Keys::Static(key), None)
            }
        };
        // An OIDC issuer is the required `iss` unless `auth.issuer` says otherwise.
        let issuer = if s.issuer.is_empty() { s.oidc_issuer.as_str() } else { s.issuer.as_str() };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        let mut required = vec!["exp"];
        if !issuer.is_empty() {
            required.push("iss");
        }
        if !s.audience.is_empty() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = s.leeway_secs;
        if issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[issuer]);
        }
        if s.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&s.audience]);
        }
        let service_keys = s
            .service_keys
            .iter()
            .map(|entry| {
                Ok(ServiceKey {
                    digest: digest(entry.key().expose()),
                    id: entry.id(),
                    grant: Arc::new(Grant::of(entry).map_err(|m| format!("auth.service_keys: {m}"))?),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let plain = s.plain_service_keys();
        if plain > 0 {
            tracing::warn!(
                keys = plain,
                "auth.service_keys holds bare keys (the old list form): each has every scope (publish, inbox:read, \
                 inbox:write, admin); give each service a [[auth.service_keys]] table with an id and only the \
                 scopes it needs"
            );
        }
        let by_algorithm = match keys {
            Keys::Static(_) => Vec::new(),
            Keys::Jwks(_) => [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
                .into_iter()
                .map(|alg| {
                    let mut v = validation.clone();
                    v.algorithms = vec![alg];
                    (alg, v)
                })
                .collect(),
        };
        Ok(Authenticator {
            keys,
            encoding,
            algorithm,
            validation,
            by_algorithm,
            user_claim: s.user_claim,
            service_keys,
        })
    }

    /// Verify a user token and return its user.
    pub fn verify_user(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let decoded = match &self.keys {
            Keys::Static(key) => decode::<HashMap<String, Value>>(token, key, &self.validation),
            Keys::Jwks(jwks) => {
                let key = jwks.select(token)?;
                let Some((_, validation)) = self.by_algorithm.iter().find(|(alg, _)| *alg == key.alg) else {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", key.alg)));
                };
                let decoded = decode::<HashMap<String, Value>>(token, &key.decoding, validation);
                if decoded.as_ref().is_err_and(|e| *e.kind() == ErrorKind::InvalidSignature) {
                    // The provider may have replaced a key under the same `kid` (or its only key, tokens naming
                    // none): refetch, at most once per `auth.jwks_min_refresh_secs` as for an unknown `kid`, rather
                    // than refuse its users until the cached set expires.
                    jwks.request_refresh();
                }
                decoded
            }
        };
        let data = decoded.map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet (`nbf`)".into()),
            // The library also says "missing" for a time claim that is there but not a number it reads.
            // And for an `aud` or `iss` that is there but of another type than it reads.
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::Invalid(bad_time_claim(token, &[c.as_str()]).unwrap_or_else(|| {
                    match token_part(token, 1).is_some_and(|claims| claims.contains_key(c.as_str())) {
                        true => format!("the `{c}` claim is not in the form a JWT holds"),
                        false => format!("no `{c}` claim"),
                    }
                }))
            }
            ErrorKind::InvalidClaimFormat(c) => AuthError::Invalid(
                bad_time_claim(token, &[c.as_str()])
                    .unwrap_or_else(|| format!("the `{c}` claim is not in the form a JWT holds")),
            ),
            // Said for people, not in the library's words ("InvalidToken", "Base64 error: ...").
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                AuthError::Invalid(malformed(token))
            }
            ErrorKind::InvalidSignature => AuthError::Invalid("the signature does not match".into()),
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("the token's algorithm is not the one accepted".into()),
            ErrorKind::InvalidAudience => AuthError::Invalid("the audience (`aud`) is not the one accepted".into()),
            ErrorKind::InvalidIssuer => AuthError::Invalid("the issuer (`iss`) is not the one accepted".into()),
            _ => AuthError::Invalid(e.to_string()),
        })?;
        // RFC 7515 §4.1.11: a token naming critical extensions must be refused by a recipient that implements
        // none of them (an issuer may use one to restrict the token); the library does not look.
        if names_critical_extensions(token) {
            return Err(AuthError::Invalid(
                "the token names critical extensions (`crit`), which Herald implements none of".into(),
            ));
        }
        // RFC 7519 §4.1.1: `iss` is one StringOrURI. The library also takes an array and accepts it when any
        // element is the configured issuer; a token naming several issuers is not one the issuer signed as such.
        if data.claims.get("iss").is_some_and(|iss| !iss.is_string()) {
            return Err(AuthError::Invalid("the `iss` claim is not in the form a JWT holds".into()));
        }
        // A refresh token is signed with the same key as the access tokens by some issuers (Django SimpleJWT's
        // `token_type: "refresh"`, Keycloak's `typ: "Refresh"` with a realm's HS key); it lives far longer and is
        // kept for the refresh endpoint alone, so it never opens a session or reads an inbox.
        for name in ["token_type", "typ"] {
            if data.claims.get(name).and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("refresh")) {
                return Err(AuthError::Invalid(format!(
                    "a refresh token (`{name}` is \"refresh\") is not an access token: send the access token"
                )));
            }
        }
        let claim = self.user_claim.name();
        let id = user_claim(claim, data.claims.get(claim))?;
        let expires_at = data
            .claims
            .get("exp")
            .and_then(numeric_date)
            .filter(|exp| *exp <= MAX_EXP)
            .ok_or_else(|| AuthError::Invalid("`exp` is not a NumericDate up to 9999-12-31".into()))?;
        // The library rounds a fractional `exp`; floored, it may have passed.
        if expires_at.saturating_add(self.validation.leeway as i64) < chrono::Utc::now().timestamp() {
            return Err(AuthError::Expired);
        }
        Ok(Principal::User { id, expires_at })
    }

    /// The configured service key `candidate` is, if any. Every key is compared, each in constant time over
    /// fixed-size digests: the timing tells neither which key nor how much of one matched, nor its length.
    fn service_key(&self, candidate: &str) -> Option<&ServiceKey> {
        let candidate = digest(candidate);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, k) in self.service_keys.iter().enumerate() {
            let eq = k.digest.ct_eq(&candidate);
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| &self.service_keys[index as usize])
    }

    /// Start what keeps the keys fresh: with a key set, its refresh task (reported as `jwks` on `health`, not
    /// ready until a set has loaded); with a static key, nothing.
    pub fn start_key_refresh(&self, health: &Health, shutdown: &tokio_util::sync::CancellationToken) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.spawn(health.clone(), shutdown.clone());
        }
    }

    pub fn is_service_key(&self, candidate: &str) -> bool {
        self.service_key(candidate).is_some()
    }

    /// A service key or a user token.
    pub fn verify_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        match self.service_key(token) {
            Some(k) => Ok(Principal::Service { key_id: k.id.clone(), grant: k.grant.clone() }),
            // Not a JWT at all: most likely a service key this gateway does not have (a typo, another
            // environment's key), which the JWT's own wording would hide.
            None if token.split('.').count() != 3 => Err(AuthError::Invalid(
                "not a service key this gateway knows, nor a user token (a JWT: header.claims.signature)".into(),
            )),
            None => self.verify_user(token),
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

fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// The latest `exp` accepted: 9999-12-31T23:59:59Z. Later is not a real expiry, and past `i64::MAX` the value
/// cannot be a deadline at all.
pub const MAX_EXP: i64 = 253_402_300_799;

/// A NumericDate as whole seconds: an integer as it is, a fraction floored; `None` for anything else or for a
/// value outside `i64`.
fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if v.is_u64() {
        return None; // above i64::MAX
    }
    let f = v.as_f64()?.floor();
    // `as` saturates; the bounds keep a saturated value out.
    (f.is_finite() && f > i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// The user id in the user claim, exactly as issued: a non-empty string without leading or trailing whitespace
/// and without control characters, or an integer. Nothing is trimmed: `" alice"` is not `alice`.
fn user_claim(claim: &str, value: Option<&Value>) -> Result<String, AuthError> {
    match value {
        None | Some(Value::Null) => Err(AuthError::Invalid(format!("no `{claim}` claim"))),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(Value::String(s)) => {
            if s.is_empty() {
                Err(AuthError::Invalid(format!("the `{claim}` claim is empty")))
            } else if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
                Err(AuthError::Invalid(format!("the `{claim}` claim has leading or trailing whitespace")))
            } else if !crate::event::user_id_is_readable(s) {
                Err(AuthError::Invalid(format!("the `{claim}` claim holds a control character")))
            } else {
                Ok(s.clone())
            }
        }
        Some(_) => Err(AuthError::Invalid(format!("the `{claim}` claim is neither a string nor an integer"))),
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

/// The query parameters Herald reads whose values are not credentials (`api`'s query types: the WebSocket's,
/// the inbox list's, ingest's, the trace's and the dead letters'): the only values request logs show.
const LOGGED_QUERY_KEYS: &[&str] = &[
    "since",
    "since_broadcast",
    "format",
    "limit",
    "before",
    "unread",
    "archived",
    "type",
    "related_type",
    "related_id",
    "exchange",
    "routing_key",
];

/// A query string fit for logs: every value is replaced by `[redacted]` except those of the parameters Herald
/// reads that hold no credential ([`LOGGED_QUERY_KEYS`]). A client may put a token or key under any name
/// (`?token=`, `?jwt=`, `?key=`, `?auth=`…), so the names shown are listed, not the ones hidden. Keys are
/// compared after form-decoding, as the query extractor decodes them, so `tok%65n=` is redacted as `token=` is
/// and `%6Cimit=5` shows as `limit=5` does.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if !is_logged_key(k) => format!("{k}=[redacted]"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_logged_key(raw: &str) -> bool {
    let decoded: String = form_urlencoded::parse(raw.as_bytes()).map(|(k, v)| format!("{k}{v}")).collect();
    LOGGED_QUERY_KEYS.contains(&decoded.as_str())
}

/// Why the library could not read `token` (it says "JSON error" for a JWT whose algorithm or claims it cannot
/// take as much as for garbage), in words that point at the fix. Echoes nothing the token holds but a short
/// algorithm name.
fn malformed(token: &str) -> String {
    const NOT_A_JWT: &str = "not a JWT (three base64url parts: header, claims, signature)";
    let (Some(header), Some(_), 3) = (token_part(token, 0), token_part(token, 1), token.split('.').count()) else {
        return NOT_A_JWT.into();
    };
    match header.get("alg") {
        Some(Value::String(alg)) if alg.parse::<Algorithm>().is_err() => {
            let shown = alg.len() <= 16 && alg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            return match shown {
                true => format!("the token's algorithm `{alg}` is not accepted"),
                false => "the token's algorithm is not one Herald knows".into(),
            };
        }
        Some(Value::String(_)) => {}
        _ => return "the token's header has no algorithm (`alg`)".into(),
    }
    if let Some(m) = bad_time_claim(token, &["exp", "nbf", "iat"]) {
        return m;
    }
    if decoded_part(token, 2).is_none() {
        // A changed last character can leave bits a base64url encoder never sets: a tampered signature too.
        return "the token's signature is not base64url as a signer writes it (changed or cut?)".into();
    }
    "the token's header or claims are not what a JWT holds".into()
}

/// The first of the time claims `names` (`exp`, `nbf`, `iat`) that `token` has but not as a number of seconds the
/// library reads.
fn bad_time_claim(token: &str, names: &[&str]) -> Option<String> {
    let claims = token_part(token, 1)?;
    let claim = names.iter().find(|c| claims.get(**c).is_some_and(|v| !v.is_u64()))?;
    Some(format!("the `{claim}` claim is not a whole number of seconds since 1970"))
}

/// Whether a JWT's header (already verified as base64url JSON by the decode) holds `crit`.
fn names_critical_extensions(token: &str) -> bool {
    token_part(token, 0).is_some_and(|h| h.contains_key("crit"))
}

/// Part `n` of a JWT (0: the header, 1: the claims) as the JSON object it should be, unverified.
fn token_part(token: &str, n: usize) -> Option<serde_json::Map<String, Value>> {
    serde_json::from_slice(&decoded_part(token, n)?).ok()
}

/// Part `n` of a JWT (2: the signature) decoded from base64url, as a signer writes it.
fn decoded_part(token: &str, n: usize) -> Option<Vec<u8>> {
    use base64::Engine;
    let part = token.split('.').nth(n)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
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

    /// A JWT refused for its algorithm or a claim says so, not "not a JWT" (the library reports both as a JSON
    /// error).
    #[test]
    fn a_refusal_names_what_is_wrong_with_the_token() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = |claims: Value| {
            let message = format!("{}.{}", b64(serde_json::json!({"alg": "HS256", "typ": "JWT"})), b64(claims));
            let key = EncodingKey::from_secret(&secret());
            format!("{message}.{}", jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap())
        };
        let a = auth();
        let refusal = |t: &str| match a.verify_user(t) {
            Err(AuthError::Invalid(m)) => m,
            other => panic!("{t}: {other:?}"),
        };
        let none = format!("{}.{}.", b64(serde_json::json!({"alg": "none"})), b64(serde_json::json!({"sub": "u"})));
        assert_eq!(refusal(&none), "the token's algorithm `none` is not accepted");
        let m = refusal(&signed(serde_json::json!({"sub": "u", "exp": 1e30})));
        assert!(m.contains("`exp`") && m.contains("seconds"), "{m}");
        let m = refusal(&signed(serde_json::json!({"sub": "u", "exp": future(), "nbf": "tomorrow"})));
        assert!(m.contains("`nbf`"), "{m}");
        // No `exp` at all, and an `iat` the library does not check: the missing `exp` is what is said.
        let m = refusal(&signed(serde_json::json!({"sub": "u", "iat": 1.5})));
        assert_eq!(m, "no `exp` claim");
        for garbage in ["garbage", "a.b.c", "a.b"] {
            assert!(refusal(garbage).starts_with("not a JWT"), "{garbage}: {}", refusal(garbage));
        }
        // The signature's last character changed to one that leaves stray bits: said to be the signature (it
        // was "the token's header or claims are not what a JWT holds").
        let good = signed(serde_json::json!({"sub": "u", "exp": future()}));
        let stray = ['B', 'C', 'D', 'F'].iter().find_map(|c| {
            let t = format!("{}{c}", &good[..good.len() - 1]);
            let sig = t.rsplit('.').next().unwrap();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).is_err().then_some(t)
        });
        let m = refusal(&stray.expect("one of them leaves stray bits"));
        assert!(m.contains("signature"), "{m}");
    }

    #[test]
    fn a_token_naming_critical_extensions_is_refused() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = |header: Value| {
            let message = format!("{}.{}", b64(header), b64(serde_json::json!({"sub": "u", "exp": future()})));
            let key = EncodingKey::from_secret(&secret());
            format!("{message}.{}", jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap())
        };
        let a = auth();
        let plain = signed(serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        assert!(a.verify_user(&plain).is_ok(), "the same token without `crit` is accepted");
        let crit = signed(serde_json::json!({"alg": "HS256", "crit": ["foo"], "foo": "bar"}));
        assert!(matches!(a.verify_user(&crit), Err(AuthError::Invalid(m)) if m.contains("crit")));
    }

    #[test]
    fn service_keys_and_access_rules() {
        let a = auth();
        assert!(a.is_service_key("herald-dev-service-key"));
        assert!(!a.is_service_key("herald-dev-service-kez"));
        assert!(!a.is_service_key("herald-dev-service-key "));
        assert!(!a.is_service_key(""));
        match a.verify_bearer("herald-dev-service-key") {
            Ok(Principal::Service { key_id, grant }) => {
                assert_eq!(key_id, "dev", "the shipped key is a table with id `dev`");
                assert!(Scope::ALL.iter().all(|s| grant.has(*s)));
            }
            other => panic!("{other:?}"),
        }
        let user = Principal::User { id: "a".into(), expires_at: 0 };
        assert!(user.may_access("a", Scope::InboxWrite).is_ok());
        assert_eq!(user.may_access("b", Scope::InboxRead), Err(AuthError::WrongUser("b".into())));
        let service = Principal::Service { key_id: "k".into(), grant: Arc::new(Grant::all()) };
        assert!(service.may_access("b", Scope::InboxRead).is_ok());
    }

    /// An authenticator from the defaults with `toml` layered over them.
    fn keyed(toml: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, toml).unwrap();
        let loaded = crate::config::Settings::load(Some(&file), std::iter::empty::<(String, String)>()).unwrap();
        Authenticator::new(&loaded.auth).unwrap()
    }

    fn service(a: &Authenticator, key: &str) -> (String, Arc<Grant>) {
        match a.verify_bearer(key) {
            Ok(Principal::Service { key_id, grant }) => (key_id, grant),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_scoped_key_has_its_id_and_only_its_scopes() {
        let a = keyed(
            r#"
            [[auth.service_keys]]
            id = "billing"
            key = "billing-key-0123456789"
            scopes = ["publish"]
            exchanges = ["billing.*"]
            routing_keys = ["invoice.#"]

            [[auth.service_keys]]
            id = "support"
            key = "support-key-0123456789"
            scopes = ["inbox:read"]
            "#,
        );
        let (id, billing) = service(&a, "billing-key-0123456789");
        assert_eq!(id, "billing");
        assert!(billing.has(Scope::Publish) && !billing.has(Scope::InboxRead) && !billing.has(Scope::Admin));
        assert_eq!(billing.require(Scope::InboxRead), Err(AuthError::MissingScope(Scope::InboxRead)));
        assert!(billing.may_publish("billing.events", "invoice.paid").is_ok());
        assert!(billing.may_publish("billing.events", "invoice").is_ok(), "`#` matches zero words");
        match billing.may_publish("sgad.notifications", "invoice.paid") {
            Err(AuthError::OutOfScope(m)) => {
                assert!(m.contains("`billing.*`") && m.contains("sgad.notifications"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match billing.may_publish("billing.events", "user.created") {
            Err(AuthError::OutOfScope(m)) => assert!(m.contains("`invoice.#`") && m.contains("user.created"), "{m}"),
            other => panic!("{other:?}"),
        }
        match billing.may_publish("", "invoice.paid") {
            Err(AuthError::OutOfScope(m)) => assert!(!m.contains("billing-key"), "never the key: {m}"),
            other => panic!("no exchange is not `billing.*`: {other:?}"),
        }
        let (id, support) = service(&a, "support-key-0123456789");
        assert_eq!(id, "support");
        assert_eq!(support.may_publish("x", "y"), Err(AuthError::MissingScope(Scope::Publish)));
        let p = Principal::Service { key_id: id, grant: support };
        assert!(p.may_access("anyone", Scope::InboxRead).is_ok());
        assert_eq!(p.may_access("anyone", Scope::InboxWrite), Err(AuthError::MissingScope(Scope::InboxWrite)));
        assert!(matches!(a.verify_bearer("herald-dev-service-key"), Err(AuthError::Invalid(_))), "replaced, not added");
    }

    #[test]
    fn bare_keys_of_the_old_list_form_keep_every_scope_and_their_fingerprint() {
        let a = keyed("[auth]\nservice_keys = [\"old-key-one-0123456789\", \"old-key-two-0123456789\"]\n");
        for key in ["old-key-one-0123456789", "old-key-two-0123456789"] {
            let (id, grant) = service(&a, key);
            assert_eq!(id, hex::encode(&digest(key)[..8]), "the id scoping its Idempotency-Keys is unchanged");
            assert!(Scope::ALL.iter().all(|s| grant.has(*s)));
            assert!(grant.may_publish("any.exchange", "any.key").is_ok());
        }
    }

    #[test]
    fn the_matching_key_is_found_among_many_whatever_its_position() {
        let keys: Vec<String> = (0..5).map(|i| format!("key-number-{i}-0123456789")).collect();
        let a = keyed(&format!("[auth]\nservice_keys = {keys:?}\n"));
        for key in &keys {
            assert_eq!(service(&a, key).0, hex::encode(&digest(key)[..8]));
        }
        assert!(!a.is_service_key("key-number-9-0123456789"));
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
        assert_eq!(redact_query("routing_key=a.b&exchange=x"), "routing_key=a.b&exchange=x");
    }

    #[test]
    fn a_credential_under_any_name_the_gateway_does_not_read_is_redacted() {
        // What clients and proxies use for tokens and keys: none of them is a parameter Herald reads.
        for name in ["jwt", "key", "api-key", "auth", "authorization", "bearer", "access_token", "sig", "x"] {
            assert_eq!(redact_query(&format!("{name}=eyJhbGciOi.x.y&limit=5")), format!("{name}=[redacted]&limit=5"));
        }
        let shown = "since=4&since_broadcast=2&format=json&limit=5&before=9&unread=true&archived=false&type=t\
                     &related_type=order&related_id=7&exchange=x&routing_key=a.b";
        assert_eq!(redact_query(shown), shown, "every parameter Herald reads that is not a credential");
        assert_eq!(
            redact_query("%6Cimit=5&Limit=5"),
            "%6Cimit=5&Limit=[redacted]",
            "names as the extractor reads them"
        );
    }

    #[test]
    fn percent_encoded_token_keys_are_redacted_after_decoding() {
        // `tok%65n` decodes to `token`, which the query extractor authenticates with.
        assert_eq!(redact_query("tok%65n=abc.def.ghi&since=4"), "tok%65n=[redacted]&since=4");
        assert_eq!(redact_query("%74%6F%6B%65%6E=x"), "%74%6F%6B%65%6E=[redacted]");
        assert_eq!(redact_query("TOKEN=x"), "TOKEN=[redacted]");
        assert_eq!(redact_query("access%5Ftoken=x"), "access%5Ftoken=[redacted]");
        assert_eq!(redact_query("+token+=x"), "+token+=[redacted]");
        assert_eq!(redact_query("client_secret=s&password=p"), "client_secret=[redacted]&password=[redacted]");
        assert_eq!(redact_query("since=4&tok%65n"), "since=4&tok%65n", "no value, nothing to hide");
    }

    fn configured(f: impl FnOnce(&mut crate::config::AuthSettings)) -> Authenticator {
        let mut s = Settings::defaults().auth;
        f(&mut s);
        Authenticator::new(&s).unwrap()
    }

    #[test]
    fn user_claims_are_taken_exactly_never_trimmed() {
        let a = auth();
        for claim in [" alice", "alice ", "alice\u{a0}", "\talice\n", "\u{2003}alice", "ali\u{0}ce", "alice\u{7f}", ""]
        {
            let t = token(serde_json::json!({"sub": claim, "exp": future()}), Algorithm::HS256, &secret());
            match a.verify_user(&t) {
                Err(AuthError::Invalid(m)) => assert!(m.contains("`sub`"), "{claim:?}: {m}"),
                other => panic!("{claim:?} was not refused: {other:?}"),
            }
        }
        for claim in [serde_json::json!(true), serde_json::json!(1.5), serde_json::json!(["alice"]), Value::Null] {
            let t = token(serde_json::json!({"sub": claim, "exp": future()}), Algorithm::HS256, &secret());
            assert!(matches!(a.verify_user(&t), Err(AuthError::Invalid(_))), "{claim}");
        }
        // Inner spaces and non-ASCII letters are a user id like any other.
        let t = token(serde_json::json!({"sub": "Zoë van Dijk", "exp": future()}), Algorithm::HS256, &secret());
        assert!(matches!(a.verify_user(&t), Ok(Principal::User { id, .. }) if id == "Zoë van Dijk"));
    }

    #[test]
    fn configured_issuer_and_audience_are_required_not_only_checked_when_present() {
        let a = configured(|s| {
            s.issuer = "https://id.example".into();
            s.audience = "herald".into();
        });
        let base = serde_json::json!({"sub": "u", "exp": future()});
        let with = |extra: Value| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            token(c, Algorithm::HS256, &secret())
        };
        assert!(a.verify_user(&with(serde_json::json!({"iss": "https://id.example", "aud": "herald"}))).is_ok());
        assert!(a.verify_user(&with(serde_json::json!({"iss": "https://id.example", "aud": ["x", "herald"]}))).is_ok());
        for (claims, missing) in [
            (serde_json::json!({"aud": "herald"}), "iss"),
            (serde_json::json!({"iss": "https://id.example"}), "aud"),
            (serde_json::json!({}), ""),
        ] {
            match a.verify_user(&with(claims.clone())) {
                Err(AuthError::Invalid(m)) => assert!(m.contains(missing), "{claims}: {m}"),
                other => panic!("{claims} accepted: {other:?}"),
            }
        }
        for claims in [
            serde_json::json!({"iss": "https://evil.example", "aud": "herald"}),
            serde_json::json!({"iss": "https://id.example", "aud": "other"}),
        ] {
            assert!(matches!(a.verify_user(&with(claims.clone())), Err(AuthError::Invalid(_))), "{claims}");
        }
        // Not configured: not required.
        assert!(auth().verify_user(&token(base.clone(), Algorithm::HS256, &secret())).is_ok());
        // There, but of a type the library does not read (it says "missing"): said as what it is.
        for (claims, said) in [
            (
                serde_json::json!({"iss": "https://id.example", "aud": 7}),
                "the `aud` claim is not in the form a JWT holds",
            ),
            (serde_json::json!({"iss": 7, "aud": "herald"}), "the `iss` claim is not in the form a JWT holds"),
            (
                serde_json::json!({"iss": ["https://evil.example", "https://id.example"], "aud": "herald"}),
                "the `iss` claim is not in the form a JWT holds",
            ),
        ] {
            match a.verify_user(&with(claims.clone())) {
                Err(AuthError::Invalid(m)) => assert!(m.contains(said), "{claims}: {m}"),
                other => panic!("{claims} accepted: {other:?}"),
            }
        }
    }

    /// Django SimpleJWT signs its day-long refresh tokens with the same key as its access tokens, told apart by
    /// `token_type`; Keycloak's say `typ: "Refresh"`. Neither opens a session or reads an inbox.
    #[test]
    fn a_refresh_token_signed_with_the_same_key_is_not_an_access_token() {
        let a = auth();
        let with = |extra: Value| {
            let mut c = serde_json::json!({"sub": "u", "exp": future()});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            token(c, Algorithm::HS256, &secret())
        };
        for claims in [
            serde_json::json!({"token_type": "refresh", "jti": "j"}),
            serde_json::json!({"typ": "Refresh"}),
            serde_json::json!({"token_type": "REFRESH"}),
        ] {
            match a.verify_user(&with(claims.clone())) {
                Err(AuthError::Invalid(m)) => assert!(m.contains("refresh token"), "{claims}: {m}"),
                other => panic!("{claims} accepted: {other:?}"),
            }
        }
        for claims in [
            serde_json::json!({"token_type": "access", "jti": "j"}),
            serde_json::json!({"typ": "Bearer"}),
            serde_json::json!({"token_type": "sliding"}),
            serde_json::json!({}),
        ] {
            assert!(a.verify_user(&with(claims.clone())).is_ok(), "{claims}");
        }
    }

    #[test]
    fn nbf_is_honoured_with_the_leeway() {
        let a = auth(); // leeway 5 s
        let now = chrono::Utc::now().timestamp();
        let with_nbf = |nbf: Value| {
            token(serde_json::json!({"sub": "u", "exp": future(), "nbf": nbf}), Algorithm::HS256, &secret())
        };
        match a.verify_user(&with_nbf(serde_json::json!(now + 120))) {
            Err(AuthError::Invalid(m)) => assert!(m.contains("nbf"), "{m}"),
            other => panic!("a token not valid for two minutes was accepted: {other:?}"),
        }
        assert!(a.verify_user(&with_nbf(serde_json::json!(now + 2))).is_ok(), "within the leeway");
        assert!(a.verify_user(&with_nbf(serde_json::json!(now - 60))).is_ok());
        assert!(matches!(a.verify_user(&with_nbf(serde_json::json!("soon"))), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn exp_is_floored_when_fractional_and_refused_when_absurd() {
        let a = auth();
        let exp = future();
        let t = token(serde_json::json!({"sub": "u", "exp": exp as f64 + 0.9}), Algorithm::HS256, &secret());
        assert_eq!(a.verify_user(&t), Ok(Principal::User { id: "u".into(), expires_at: exp }));
        let t = token(serde_json::json!({"sub": "u", "exp": MAX_EXP}), Algorithm::HS256, &secret());
        assert_eq!(a.verify_user(&t), Ok(Principal::User { id: "u".into(), expires_at: MAX_EXP }));
        for absurd in [
            serde_json::json!(MAX_EXP + 1),
            serde_json::json!(i64::MAX),
            serde_json::json!(u64::MAX),
            serde_json::json!(9.3e18),
            serde_json::json!(1e300),
            serde_json::json!(-1),
            serde_json::json!("4102444800"),
        ] {
            let t = token(serde_json::json!({"sub": "u", "exp": absurd}), Algorithm::HS256, &secret());
            assert!(matches!(a.verify_user(&t), Err(AuthError::Invalid(_))), "exp {absurd}");
        }
        // Past once floored: the library would round it up into the leeway; floored it is expired.
        let now = chrono::Utc::now().timestamp() as f64;
        let t = token(serde_json::json!({"sub": "u", "exp": now - 5.4}), Algorithm::HS256, &secret());
        assert_eq!(a.verify_user(&t), Err(AuthError::Expired));
    }
}
