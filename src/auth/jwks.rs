//! JWKS: the user-token keys an identity provider publishes (`auth.jwks_url`, or discovered from
//! `auth.oidc_issuer`), fetched and kept fresh by one background task; verification reads a snapshot.
//!
//! Invariants:
//! - **Verification never touches the network or waits.** It clones an `Arc` of the decoded key set under a
//!   lock held for nothing else ([`Jwks::select`]); REST, the WebSocket handshake and an in-session refresh stay
//!   synchronous. A token whose `kid` the set lacks is refused at once (`401 invalid_credentials`, "unknown key
//!   id … retry") and asks the task for a refresh, which runs at most once per `auth.jwks_min_refresh_secs`;
//!   the client's retry finds the new key. Failing fast was chosen over waiting so that no request or handshake
//!   ever holds a task on the identity provider, and a flood of made-up `kid`s costs one fetch per interval.
//! - **No algorithm confusion.** A key is chosen by the token header's `kid` *and* `alg`. A key's algorithm comes
//!   from its type (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA); a JWK whose own `alg` says otherwise, whose
//!   `use` is not `sig`, whose algorithm is not in `auth.jwks_algorithms`, or which is symmetric (`oct`: a
//!   published secret) is skipped. A token's `alg` must be in `auth.jwks_algorithms` (so never `none` or HS*) and
//!   be its key's. A token without `kid` is taken only when the set holds exactly one key.
//! - **The last good set is kept.** A fetch that fails, a body that is not a key set, or a set without one usable
//!   key changes nothing; a bad key (bad encoding, off its curve, RSA under 2048 bits) is skipped alone, logged
//!   with its `kid`. Keys go only when a successful fetch no longer lists them.
//! - **Bounded freshness.** The set is refetched at 90 % of the response's `Cache-Control: max-age`, bounded to
//!   [`MIN_MAX_AGE`]..=[`MAX_MAX_AGE`] ([`DEFAULT_MAX_AGE`] without one); after a failure, with backoff from 1 s
//!   to 60 s. Each fetch has a [`FETCH_TIMEOUT`] and a [`MAX_BODY_BYTES`] cap; a redirect never leaves https.
//! - **Readiness.** `/readyz` reports `jwks` not ready until a set has loaded (tokens are refused meanwhile);
//!   once loaded, an outage keeps it ready, serving the last good set, with the failure in its detail.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AuthError;
use crate::config::{check_key_url, AuthSettings, JwksAlgorithm, Profile};
use crate::redact_url;
use crate::telemetry::Health;

/// Shortest cache lifetime honoured: a `max-age=0` or `no-cache` must not mean a fetch per token.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// Longest cache lifetime honoured: a removed (compromised) key is dropped within a day at worst.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Cache lifetime of a response without `max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// How many key ids a log line or the health detail names, and how many skipped keys are logged one by one (a
/// key set may list thousands).
const LOGGED_KIDS: usize = 10;
const LOGGED_SKIPPED: usize = 10;

/// The first [`LOGGED_KIDS`] of `kids`, shown, and how many more there are.
fn listed(kids: &[String]) -> String {
    let mut named = kids.iter().take(LOGGED_KIDS).map(|k| shown(k)).collect::<Vec<_>>().join(", ");
    if kids.len() > LOGGED_KIDS {
        named.push_str(&format!(", and {} more", kids.len() - LOGGED_KIDS));
    }
    named
}

/// One fetch (discovery or key set), connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set or discovery document larger than this is refused.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a discovered `jwks_uri` is used before the discovery document is read again (a failed key-set fetch
/// from it also sends the next attempt back to discovery).
pub const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
const MIN_RSA_BITS: usize = 2048;
/// The component's name on the health board (`/readyz`, `herald_component_ready`).
const COMPONENT: &str = "jwks";

/// The key set in force and the task that refreshes it. Cheap to clone.
#[derive(Clone)]
pub struct Jwks {
    shared: Arc<Shared>,
}

struct Shared {
    source: Source,
    allowed: Vec<Algorithm>,
    min_refresh: Duration,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// A token asked for a key the set lacks (or the set has not loaded): refresh, rate-limited.
    wake: Notify,
}

enum Source {
    Jwks(url::Url),
    /// `issuer` exactly as configured: the discovery document must name the same. The `jwks_uri` it names must
    /// meet what a configured `auth.jwks_url` does under `profile` (`config::check_key_url`).
    Oidc {
        issuer: String,
        discovery: url::Url,
        profile: Profile,
    },
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    loaded: bool,
}

/// One usable verification key from the set.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// A key the set listed but Herald will not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub kid: Option<String>,
    pub reason: String,
}

impl Jwks {
    /// The key source `s` configures, if any. Opens nothing: [`Jwks::spawn`] starts fetching.
    pub fn new(s: &AuthSettings) -> Result<Option<Jwks>, String> {
        if !s.jwks_enabled() {
            return Ok(None);
        }
        let source = if !s.jwks_url.is_empty() {
            Source::Jwks(url::Url::parse(&s.jwks_url).map_err(|e| format!("auth.jwks_url: {e}"))?)
        } else {
            let discovery = format!("{}/.well-known/openid-configuration", s.oidc_issuer.trim_end_matches('/'));
            let discovery = url::Url::parse(&discovery).map_err(|e| format!("auth.oidc_issuer: {e}"))?;
            Source::Oidc { issuer: s.oidc_issuer.clone(), discovery, profile: s.profile }
        };
        let allowed = s
            .jwks_algorithms
            .iter()
            .map(|a| match a {
                JwksAlgorithm::RS256 => Algorithm::RS256,
                JwksAlgorithm::ES256 => Algorithm::ES256,
                JwksAlgorithm::EdDSA => Algorithm::EdDSA,
            })
            .collect();
        Ok(Some(Jwks {
            shared: Arc::new(Shared {
                source,
                allowed,
                min_refresh: Duration::from_secs(s.jwks_min_refresh_secs.max(1)),
                client: http_client()?,
                keys: RwLock::new(Arc::new(KeySet::default())),
                wake: Notify::new(),
            }),
        }))
    }

    /// Start the refresh task: the first fetch at once, then per the cache lifetime, on an unknown `kid`
    /// (rate-limited), until `shutdown`. Registers `jwks` on the health board, not ready until a set loads.
    pub fn spawn(&self, health: Health, shutdown: CancellationToken) {
        health.set(COMPONENT, false, "not loaded yet");
        tokio::spawn(self.clone().refresh_loop(health, shutdown));
    }

    /// The key that may verify `token`, chosen by its header's `kid` and `alg`. Reads the header only; the caller
    /// verifies the signature and claims with the key, pinned to `key.alg`.
    pub fn select(&self, token: &str) -> Result<Arc<Key>, AuthError> {
        // Said for people, as a static key's refusals are, not in the library's words ("Base64 error: …").
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid(super::malformed(token)))?;
        let alg = header.alg;
        if !self.shared.allowed.contains(&alg) {
            return Err(AuthError::Invalid(format!("algorithm {alg:?} is not accepted (auth.jwks_algorithms)")));
        }
        let set = self.snapshot();
        if !set.loaded {
            self.shared.wake.notify_one();
            return Err(AuthError::Invalid(
                "the identity provider's signing keys (JWKS) have not loaded yet; retry shortly".into(),
            ));
        }
        let Some(kid) = header.kid else {
            return match set.keys.as_slice() {
                [only] if only.alg == alg => Ok(only.clone()),
                [only] => Err(mismatch(only, alg)),
                keys => Err(AuthError::Invalid(format!(
                    "the token has no `kid` and the key set holds {} keys: its key cannot be chosen",
                    keys.len()
                ))),
            };
        };
        let mut same_kid = set.keys.iter().filter(|k| k.kid.as_deref() == Some(kid.as_str())).peekable();
        let first = same_kid.peek().cloned().cloned();
        if let Some(key) = same_kid.find(|k| k.alg == alg) {
            return Ok(key.clone());
        }
        match first {
            Some(other) => Err(mismatch(&other, alg)),
            None => {
                self.shared.wake.notify_one();
                Err(AuthError::Invalid(format!(
                    "unknown key id {}: not in the identity provider's key set (a refresh is under way; retry)",
                    shown(&kid)
                )))
            }
        }
    }

    /// Ask the refresh task for a fetch (a signature the chosen key did not verify): it runs at most once per
    /// `auth.jwks_min_refresh_secs`, as one an unknown `kid` asks for.
    pub fn request_refresh(&self) {
        self.shared.wake.notify_one();
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.shared.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, keys: Vec<Arc<Key>>) {
        *self.shared.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(KeySet { keys, loaded: true });
    }

    async fn refresh_loop(self, health: Health, shutdown: CancellationToken) {
        let mut retry = RETRY_MIN;
        // What the last successful fetch held, so an unchanged set is not logged again at every refresh.
        let mut kids = Vec::new();
        let mut skipped = Vec::new();
        let mut discovered = None;
        loop {
            let attempted = Instant::now();
            let fetched = tokio::select! {
                () = shutdown.cancelled() => return,
                fetched = self.fetch(&mut discovered) => fetched,
            };
            let next = match fetched {
                Ok(f) => {
                    retry = RETRY_MIN;
                    metrics::counter!("herald_jwks_refreshes_total", "outcome" => "ok").increment(1);
                    metrics::gauge!("herald_jwks_keys").set(f.keys.len() as f64);
                    let now: Vec<String> = f.keys.iter().map(|k| k.kid.clone().unwrap_or_else(|| "-".into())).collect();
                    let url = redact_url(f.url.as_str());
                    if now != kids || f.skipped != skipped {
                        // What the set holds bounds neither line count nor line length: the first few are named.
                        let named = listed(&now);
                        tracing::info!(%url, keys = now.len(), kids = %named, skipped = f.skipped.len(), "JWKS loaded");
                        for s in f.skipped.iter().take(LOGGED_SKIPPED) {
                            let kid = s.kid.as_deref().map(shown).unwrap_or_else(|| "(none)".into());
                            tracing::warn!(%kid, reason = %s.reason, "JWKS key skipped");
                        }
                        if let Some(more) = f.skipped.len().checked_sub(LOGGED_SKIPPED).filter(|n| *n > 0) {
                            tracing::warn!(more, "JWKS keys skipped beyond those logged");
                        }
                        kids = now;
                        skipped = f.skipped.clone();
                    }
                    let detail = format!(
                        "{} keys ({}) from {}{}; cached {} s",
                        f.keys.len(),
                        listed(&kids),
                        url,
                        if f.skipped.is_empty() { String::new() } else { format!(", {} skipped", f.skipped.len()) },
                        f.max_age.as_secs()
                    );
                    self.install(f.keys);
                    health.set(COMPONENT, true, detail);
                    f.max_age - f.max_age / 10
                }
                Err(e) => {
                    metrics::counter!("herald_jwks_refreshes_total", "outcome" => "error").increment(1);
                    let set = self.snapshot();
                    if set.loaded {
                        tracing::warn!(error = %e, keys = set.keys.len(), "JWKS refresh failed; keeping the last good key set");
                        let detail = format!(
                            "serving the last good set ({} keys); the last refresh failed: {e}",
                            set.keys.len()
                        );
                        health.set(COMPONENT, true, detail);
                    } else {
                        tracing::warn!(error = %e, "JWKS not loaded; user tokens are refused until it is");
                        health.set(COMPONENT, false, format!("never loaded: {e}"));
                    }
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(next) => {}
                () = self.shared.wake.notified() => {
                    // Asked for by a token: at most once per `auth.jwks_min_refresh_secs`.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(attempted + self.shared.min_refresh) => {}
                    }
                }
            }
        }
    }

    /// One refresh. With OIDC, the `jwks_uri` discovered earlier (`discovered`) is reused for
    /// [`DISCOVERY_MAX_AGE`]; a key-set fetch that fails forgets it, so the next attempt discovers again.
    async fn fetch(&self, discovered: &mut Option<(url::Url, Instant)>) -> Result<Fetched, String> {
        let client = &self.shared.client;
        let url = match &self.shared.source {
            Source::Jwks(url) => url.clone(),
            Source::Oidc { issuer, discovery, profile } => match discovered {
                Some((url, at)) if at.elapsed() < DISCOVERY_MAX_AGE => url.clone(),
                _ => {
                    let url = discover(client, issuer, discovery, *profile).await?;
                    *discovered = Some((url.clone(), Instant::now()));
                    url
                }
            },
        };
        let fetched = get(client, &url)
            .await
            .and_then(|(body, max_age)| {
                let (keys, skipped) = parse_key_set(&body, &self.shared.allowed)
                    .map_err(|e| format!("{}: {e}", redact_url(url.as_str())))?;
                Ok((keys, skipped, max_age))
            })
            .inspect_err(|_| *discovered = None)?;
        let (keys, skipped, max_age) = fetched;
        Ok(Fetched { keys, skipped, max_age, url })
    }
}

struct Fetched {
    keys: Vec<Arc<Key>>,
    skipped: Vec<Skipped>,
    max_age: Duration,
    url: url::Url,
}

fn mismatch(key: &Key, alg: Algorithm) -> AuthError {
    AuthError::Invalid(format!(
        "key {} verifies {:?}, not the token's {alg:?}",
        shown(key.kid.as_deref().unwrap_or("(without kid)")),
        key.alg
    ))
}

/// A `kid` or other foreign string fit for a message: quoted, escaped, at most 64 characters.
fn shown(s: &str) -> String {
    let clipped: String = s.chars().take(64).collect();
    let more = if clipped.len() < s.len() { "…" } else { "" };
    format!("{clipped:?}{more}")
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().scheme() != "https" && attempt.previous().iter().any(|u| u.scheme() == "https") {
                attempt.error("a redirect from https:// to http:// is refused")
            } else {
                attempt.follow()
            }
        }))
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("the JWKS HTTP client: {e}"))
}

/// OpenID Connect discovery: the `jwks_uri` of the configuration at `discovery`, whose `issuer` must be `issuer`
/// exactly (OpenID Connect Discovery 1.0, §4.3); the `jwks_uri` must be an address `auth.jwks_url` could be under
/// `profile` (no credentials; https, or http in development or to a loopback host), and may not step down from
/// https.
async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    discovery: &url::Url,
    profile: Profile,
) -> Result<url::Url, String> {
    #[derive(Deserialize)]
    struct Configuration {
        issuer: String,
        jwks_uri: String,
    }
    let (body, _) = get(client, discovery).await?;
    let discovery = redact_url(discovery.as_str());
    let doc: Configuration =
        serde_json::from_slice(&body).map_err(|e| format!("{discovery}: not an OpenID provider configuration: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!("{discovery} names issuer {}, not auth.oidc_issuer {}", shown(&doc.issuer), shown(issuer)));
    }
    let jwks = check_key_url(&doc.jwks_uri, profile).map_err(|e| format!("{discovery}: jwks_uri {e}"))?;
    if jwks.scheme() != "https" && discovery.starts_with("https:") {
        return Err(format!("{discovery}: jwks_uri `{}` steps down from https://", redact_url(&doc.jwks_uri)));
    }
    Ok(jwks)
}

/// GET `url`: its body (at most [`MAX_BODY_BYTES`]) and how long it may be cached.
async fn get(client: &reqwest::Client, url: &url::Url) -> Result<(Vec<u8>, Duration), String> {
    use reqwest::header::{ACCEPT, CACHE_CONTROL};
    // Messages reach logs and `/readyz`: the address as `redact_url` shows it, and reqwest's errors without theirs.
    let shown = redact_url(url.as_str());
    let mut resp = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {shown}: {}", chain(&e.without_url())))?;
    if !resp.status().is_success() {
        return Err(format!("GET {shown}: HTTP {}", resp.status()));
    }
    let cache_control: Vec<&str> =
        resp.headers().get_all(CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).collect();
    let max_age = cache_lifetime(&cache_control.join(","));
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {shown}: {}", chain(&e.without_url())))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("GET {shown}: the body is over {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// An error and its causes on one line (reqwest's own message stops at "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long a response with this `Cache-Control` keeps: its `max-age` (`no-cache`/`no-store`: the least),
/// bounded to [`MIN_MAX_AGE`]..=[`MAX_MAX_AGE`], [`DEFAULT_MAX_AGE`] without one.
pub fn cache_lifetime(cache_control: &str) -> Duration {
    let mut max_age = None;
    for directive in cache_control.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-cache" || directive == "no-store" {
            return MIN_MAX_AGE;
        }
        if let Some(v) = directive.strip_prefix("max-age=") {
            max_age = Some(v.trim_matches('"').parse::<u64>().map_or(MIN_MAX_AGE, Duration::from_secs));
        }
    }
    max_age.unwrap_or(DEFAULT_MAX_AGE).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// The usable keys of a JWK set document, and those skipped, with why (the refresh task logs them with their
/// `kid`). A body that is not a set, or a set without one usable key, is an error: the caller keeps what it has.
pub fn parse_key_set(body: &[u8], allowed: &[Algorithm]) -> Result<(Vec<Arc<Key>>, Vec<Skipped>), String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for value in raw.keys {
        let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
        match key(value, allowed) {
            Ok(k) => keys.push(Arc::new(k)),
            Err(reason) => {
                skipped.push(Skipped { kid, reason });
            }
        }
    }
    if keys.is_empty() {
        return Err(format!("no usable key in the set ({} skipped)", skipped.len()));
    }
    Ok((keys, skipped))
}

/// One JWK as a usable key, or why not.
fn key(value: Value, allowed: &[Algorithm]) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    let c = &jwk.common;
    if matches!(&c.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("its `use` is not `sig`".into());
    }
    if matches!(&c.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
        return Err("its `key_ops` lack `verify`".into());
    }
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        return Err("a symmetric (`oct`) key is never taken from a published key set".into());
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key material: {e}"))?;
    let (alg, declared) = match (&jwk.algorithm, decoding.kind()) {
        (AlgorithmParameters::RSA(_), DecodingKeyKind::RsaModulusExponent { n, e }) => {
            check_rsa(n, e)?;
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
        (AlgorithmParameters::EllipticCurve(p), DecodingKeyKind::SecretOrDer(point)) => {
            if p.curve != EllipticCurve::P256 {
                return Err(format!("curve {:?} is not supported (ES256 is P-256)", p.curve));
            }
            if point.len() != 65 {
                return Err("a P-256 key's x and y must be 32 bytes each".into());
            }
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        (AlgorithmParameters::OctetKeyPair(p), DecodingKeyKind::SecretOrDer(x)) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(format!("curve {:?} is not supported (EdDSA is Ed25519)", p.curve));
            }
            if x.len() != 32 {
                return Err("an Ed25519 key's x must be 32 bytes".into());
            }
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return Err("unsupported key type".into()),
    };
    if let Some(stated) = c.key_algorithm {
        if stated != declared {
            return Err(format!("its `alg` {stated:?} is not {alg:?}, the algorithm of its key type"));
        }
    }
    if !allowed.contains(&alg) {
        return Err(format!("{alg:?} is not in auth.jwks_algorithms"));
    }
    // Parse the key as verification will (a point off its curve fails here, once, not at every token).
    (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&alg, &decoding)
        .map_err(|e| format!("not a valid {alg:?} public key: {e}"))?;
    Ok(Key { kid: c.key_id.clone(), alg, decoding })
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e))
        .map_err(|err| format!("not a valid RSA public key: {err}"))?;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!("a {bits}-bit RSA key is too small (at least {MIN_RSA_BITS} bits)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const PUBLIC: &str = include_str!("../../tests/fixtures/jwks/public.json");
    const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    fn jwk(kid: &str) -> Value {
        let set: Value = serde_json::from_str(PUBLIC).unwrap();
        set["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap().clone()
    }

    fn with(kid: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut k = jwk(kid);
        f(k.as_object_mut().unwrap());
        k
    }

    fn parse(keys: Vec<Value>) -> Result<(Vec<Arc<Key>>, Vec<Skipped>), String> {
        parse_key_set(serde_json::json!({ "keys": keys }).to_string().as_bytes(), &ALL)
    }

    fn loaded(keys: Vec<Value>) -> Jwks {
        let mut s = crate::config::Settings::defaults().auth;
        s.jwks_url = "http://127.0.0.1:9/jwks".into();
        let jwks = Jwks::new(&s).unwrap().unwrap();
        jwks.install(parse(keys).unwrap().0);
        jwks
    }

    fn signed(alg: Algorithm, kid: Option<&str>, pem: &str) -> String {
        let path = format!("{}/tests/fixtures/jwks/{pem}.pem", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(path).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let exp = chrono::Utc::now().timestamp() + 600;
        encode(&header, &serde_json::json!({"sub": "u", "exp": exp}), &key).unwrap()
    }

    fn invalid(r: Result<Arc<Key>, AuthError>) -> String {
        match r {
            Err(AuthError::Invalid(m)) => m,
            Err(other) => panic!("expected an invalid-token reason, got {other:?}"),
            Ok(k) => panic!("a key was chosen: {:?}", k.kid),
        }
    }

    #[test]
    fn rsa_ec_and_ed25519_keys_load_with_the_algorithm_of_their_type() {
        let (keys, skipped) = parse(vec![jwk("rsa-1"), jwk("ec-1"), jwk("ed-1")]).unwrap();
        let got: Vec<(Option<&str>, Algorithm)> = keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        assert_eq!(
            got,
            vec![(Some("rsa-1"), Algorithm::RS256), (Some("ec-1"), Algorithm::ES256), (Some("ed-1"), Algorithm::EdDSA)]
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        // Without `alg`, `use` or `kid`, a key still loads: its type says what it verifies.
        let bare = with("ec-1", |k| {
            k.remove("alg");
            k.remove("use");
            k.remove("kid");
        });
        assert_eq!(parse(vec![bare]).unwrap().0[0].alg, Algorithm::ES256);
    }

    #[test]
    fn bad_keys_are_skipped_one_by_one_and_the_rest_load() {
        let bad = vec![
            (
                with("ec-1", |k| {
                    k.insert("kid".into(), "off-curve".into());
                    let x = k["x"].clone();
                    k.insert("y".into(), x);
                }),
                "off-curve",
                "valid",
            ),
            (with("rsa-weak", |_| {}), "rsa-weak", "too small"),
            (serde_json::json!({"kty": "oct", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}), "hs", "symmetric"),
            (
                with("ec-1", |k| {
                    k.insert("kid".into(), "p384".into());
                    k.insert("crv".into(), "P-384".into());
                }),
                "p384",
                "curve",
            ),
            (
                with("ed-1", |k| {
                    k.insert("kid".into(), "short-ed".into());
                    k.insert("x".into(), "AAAA".into());
                }),
                "short-ed",
                "32 bytes",
            ),
            (
                with("rsa-2", |k| {
                    k.insert("kid".into(), "enc".into());
                    k.insert("use".into(), "enc".into());
                }),
                "enc",
                "`use`",
            ),
            (
                with("rsa-2", |k| {
                    k.insert("kid".into(), "says-es256".into());
                    k.insert("alg".into(), "ES256".into());
                }),
                "says-es256",
                "`alg`",
            ),
            (
                with("rsa-2", |k| {
                    k.insert("kid".into(), "garbage".into());
                    k.insert("n".into(), "!!not base64!!".into());
                }),
                "garbage",
                "bad key material",
            ),
            (serde_json::json!({"kid": "no-kty"}), "no-kty", "not a JWK"),
        ];
        let mut keys: Vec<Value> = bad.iter().map(|(k, _, _)| k.clone()).collect();
        keys.push(jwk("rsa-1"));
        let (loaded, skipped) = parse(keys).unwrap();
        assert_eq!(loaded.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), vec![Some("rsa-1")]);
        for (_, kid, why) in &bad {
            let s = skipped.iter().find(|s| s.kid.as_deref() == Some(*kid)).unwrap_or_else(|| panic!("{kid} kept"));
            assert!(s.reason.contains(why), "{kid}: {}", s.reason);
        }
        // Nothing usable at all, or not a set: an error (the last good set stays).
        assert!(parse(vec![bad[0].0.clone()]).unwrap_err().contains("no usable key"));
        assert!(parse_key_set(b"<html>", &ALL).unwrap_err().contains("not a JWK set"));
        assert!(parse_key_set(b"{\"keys\": {}}", &ALL).is_err());
    }

    #[test]
    fn algorithms_outside_the_allowed_list_are_skipped() {
        let body = serde_json::json!({ "keys": [jwk("rsa-1"), jwk("ed-1")] }).to_string();
        let (keys, skipped) = parse_key_set(body.as_bytes(), &[Algorithm::EdDSA]).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(skipped[0].reason.contains("auth.jwks_algorithms"), "{:?}", skipped[0]);
    }

    #[test]
    fn each_key_type_verifies_only_its_own_algorithm_by_kid() {
        let jwks = loaded(vec![jwk("rsa-1"), jwk("ec-1"), jwk("ed-1")]);
        for (alg, kid) in [(Algorithm::RS256, "rsa-1"), (Algorithm::ES256, "ec-1"), (Algorithm::EdDSA, "ed-1")] {
            let k = jwks.select(&signed(alg, Some(kid), kid)).unwrap();
            assert_eq!((k.kid.as_deref(), k.alg), (Some(kid), alg));
        }
        // The header claims another algorithm than the key's: refused before any verification.
        let lying = signed(Algorithm::ES256, Some("rsa-1"), "ec-1");
        assert!(invalid(jwks.select(&lying)).contains("verifies RS256, not the token's ES256"));
        // HS256 with the RSA key's public modulus as the "secret": the classic confusion. Refused by algorithm.
        let n = jwk("rsa-1")["n"].as_str().unwrap().to_owned();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let hs = encode(
            &header,
            &serde_json::json!({"sub": "u", "exp": 4102444800u64}),
            &EncodingKey::from_secret(n.as_bytes()),
        )
        .unwrap();
        assert!(invalid(jwks.select(&hs)).contains("HS256 is not accepted"));
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicnNhLTEifQ.eyJzdWIiOiJ1In0.";
        invalid(jwks.select(none));
    }

    #[test]
    fn a_token_without_kid_takes_the_only_key_and_nothing_else() {
        let one = loaded(vec![jwk("ed-1")]);
        assert_eq!(one.select(&signed(Algorithm::EdDSA, None, "ed-1")).unwrap().alg, Algorithm::EdDSA);
        assert!(invalid(one.select(&signed(Algorithm::ES256, None, "ec-1"))).contains("not the token's ES256"));
        let two = loaded(vec![jwk("ed-1"), jwk("ec-1")]);
        assert!(invalid(two.select(&signed(Algorithm::EdDSA, None, "ed-1"))).contains("no `kid`"));
    }

    #[test]
    fn an_unknown_kid_is_refused_at_once_and_asks_for_a_refresh() {
        let jwks = loaded(vec![jwk("rsa-1")]);
        let m = invalid(jwks.select(&signed(Algorithm::RS256, Some("rsa-2"), "rsa-2")));
        assert!(m.contains("unknown key id \"rsa-2\""), "{m}");
        // The refresh task's wake-up was stored (a permit), so the task runs once it is free.
        let woken = jwks.shared.wake.notified();
        tokio::pin!(woken);
        assert!(futures_util::FutureExt::now_or_never(woken).is_some(), "no refresh was asked for");
        // A kid fit for a message: clipped and escaped.
        let long = "k\n".repeat(100);
        let m = invalid(jwks.select(&signed(Algorithm::RS256, Some(&long), "rsa-1")));
        assert!(m.contains("\\n") && !m.contains('\n') && m.len() < 300, "{m}");
    }

    #[test]
    fn nothing_verifies_before_the_set_has_loaded() {
        let mut s = crate::config::Settings::defaults().auth;
        s.jwks_url = "http://127.0.0.1:9/jwks".into();
        let jwks = Jwks::new(&s).unwrap().unwrap();
        let m = invalid(jwks.select(&signed(Algorithm::RS256, Some("rsa-1"), "rsa-1")));
        assert!(m.contains("not loaded yet"), "{m}");
    }

    #[test]
    fn a_large_key_set_is_named_by_its_first_ids_and_a_count_of_the_rest() {
        let kids: Vec<String> = (0..1500).map(|i| format!("kid-{i}")).collect();
        let named = listed(&kids);
        assert!(named.starts_with(r#""kid-0", "kid-1","#), "{named}");
        assert!(named.ends_with(r#""kid-9", and 1490 more"#), "{named}");
        assert!(!named.contains("kid-10"), "{named}");
        assert_eq!(listed(&kids[..3]), r#""kid-0", "kid-1", "kid-2""#);
    }

    #[test]
    fn cache_lifetime_follows_max_age_within_bounds() {
        assert_eq!(cache_lifetime(""), DEFAULT_MAX_AGE);
        assert_eq!(cache_lifetime("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(cache_lifetime("max-age=\"900\", must-revalidate"), Duration::from_secs(900));
        assert_eq!(cache_lifetime("Max-Age=0"), MIN_MAX_AGE);
        assert_eq!(cache_lifetime("max-age=10"), MIN_MAX_AGE);
        assert_eq!(cache_lifetime("max-age=99999999"), MAX_MAX_AGE);
        assert_eq!(cache_lifetime("max-age=soon"), MIN_MAX_AGE);
        assert_eq!(cache_lifetime("no-cache, max-age=3600"), MIN_MAX_AGE);
        assert_eq!(cache_lifetime("private"), DEFAULT_MAX_AGE);
    }
}
