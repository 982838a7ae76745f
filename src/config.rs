//! Settings: one typed, validated struct built from layered sources.
//!
//! Layers, later wins: `config/default.toml` (compiled in, so the binary runs anywhere) → the file
//! `HERALD_BASE_CONFIG` names (a platform's defaults: the container image's) → `config/{profile}.toml` when
//! present → the `--config` file → `HERALD__SECTION__KEY` environment variables (strings as written: a secret of
//! digits stays the same digits; a number or a boolean is read from the string where the key wants one).
//!
//! Invariants: an unknown key or a bad value refuses to start with an error naming the key; secrets are
//! [`Secret`]s, which never print; the production profile refuses development secrets.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::rules::MAX_TYPE_LEN;

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const DEV_JWT_SECRET: &str = "herald-dev-secret-change-me";
const DEV_SERVICE_KEY: &str = "herald-dev-service-key";
/// What the example Secret's values start with: production refuses a secret or key that holds it.
const PLACEHOLDER: &str = "replace-me";
/// The environment variable naming a file of defaults layered under every other file (see the module's doc).
pub const BASE_CONFIG_VAR: &str = "HERALD_BASE_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A configuration file that cannot be read, named by where it was given (`--config`, `HERALD_BASE_CONFIG`).
    #[error("{given}: {message}")]
    File { given: String, message: String },
}

fn file_error(given: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::File { given: given.to_owned(), message: message.into() }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message: message.into() }
}

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub profile: Profile,
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub websocket: WebSocketSettings,
    pub store: StoreSettings,
    pub rules: RulesSettings,
    pub amqp: AmqpSettings,
    pub cluster: ClusterSettings,
    pub trace: TraceSettings,
    pub preferences: PreferencesSettings,
}

/// Notification preferences: what a user who set nothing for a type gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesSettings {
    /// Notification types muted for every user who did not turn them on (stored, listed, not pushed, not counted).
    pub muted_by_default: Vec<String>,
}

impl PreferencesSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for kind in &self.muted_by_default {
            if kind.trim().is_empty() || kind.len() > MAX_TYPE_LEN {
                return Err(invalid(
                    "preferences.muted_by_default",
                    format!("each type must be a non-blank string of at most {MAX_TYPE_LEN} bytes"),
                ));
            }
            if !seen.insert(kind) {
                return Err(invalid("preferences.muted_by_default", format!("{kind:?} is listed twice")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Development,
    /// The default only of a field not read from the configuration ([`AuthSettings::profile`], set by
    /// [`Settings::load`]): the stricter one.
    #[default]
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// A second listener for operators: `/healthz`, `/readyz` and `/metrics` only, outside `max_connections`
    /// (a node at its cap still answers its probes and scrapes). Absent: those are served on `bind` alone.
    #[serde(default)]
    pub ops_bind: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub demo_dir: PathBuf,
    /// The built admin console (`admin-console/dist`), served at `/admin` when it holds an `index.html`; empty
    /// disables it. Validated: an existing path must be such a directory (see [`ServerSettings::admin_console`]).
    pub admin_dir: PathBuf,
    /// A connection that has not sent a whole request head this long after connecting (or after its previous
    /// response, when kept alive) is closed: slow-header and half-open sockets cannot hold a descriptor.
    pub header_read_timeout_secs: u64,
    /// The most a request head (request line and headers) may take; over it, `431` (hyper's read buffer, at least
    /// 8,192). It is what each connection may buffer before its head is whole, so it bounds what clients that never
    /// finish a head hold (with `max_connections`), not only the head's size.
    pub max_head_bytes: usize,
    /// The JSON body of a request other than ingest (preferences, aliases, the admin endpoints) must arrive whole
    /// within this long once its caller is authorized (`408 body_timeout`); ingest is bounded by
    /// `ingest_timeout_secs`. Bodies are read only after the credentials are checked.
    pub body_read_timeout_secs: u64,
    /// A connection whose peer takes no byte of what Herald writes for this long (a response, or a session's
    /// frames) is closed: a client that never reads cannot hold a descriptor and the buffers behind it.
    pub write_stall_timeout_secs: u64,
    /// Open connections (HTTP and WebSocket) at most; one more is closed at once. 0: the process's descriptor
    /// limit less a reserve for the store, broker and Redis (see [`ServerSettings::connection_cap`]).
    pub max_connections: usize,
    /// Open connections from one source address (an IPv6 /64 counts as one) at most; 0: no per-address cap
    /// (the default, since behind a proxy or NAT every client shares one address).
    pub max_connections_per_ip: usize,
    /// `POST /api/v1/events`: a request (body read, validation, commit) that takes longer answers 503.
    pub ingest_timeout_secs: u64,
    /// `POST /api/v1/events`: requests handled at once; one more answers 503 with `Retry-After` at once.
    pub ingest_max_concurrency: usize,
    /// Of those, at most this many from one service key (or one signed-in user on the dev route), so one
    /// publisher, slow or hostile, cannot hold every slot; 0: no cap of its own (`ingest_max_concurrency`).
    pub ingest_max_concurrency_per_key: usize,
    /// Changes a user token may make to its inbox and preferences per second, on average (`api::rate`); 0: no
    /// limit. Over it: `429 rate_limited` with `Retry-After`. Service keys are not limited.
    pub user_writes_per_second: u32,
    /// How many such changes may come at once before the rate applies.
    pub user_writes_burst: u32,
    /// Reads of its inbox a user token may make per second, on average (`api::rate`); a filtered list counts as
    /// [`FILTERED_LIST_READS`](crate::api::inbox::FILTERED_LIST_READS). 0: no limit. Over it: `429 rate_limited`
    /// with `Retry-After`. Service keys are not limited.
    pub user_reads_per_second: u32,
    /// How many such reads may come at once before the rate applies.
    pub user_reads_burst: u32,
    /// Browser origins the REST API answers with CORS headers (`api::cors`). Absent: the WebSocket's
    /// `websocket.allowed_origins` (see [`Settings::cors_origins`]); `[]`: none.
    #[serde(default)]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// How long a browser may cache a CORS preflight answer (`Access-Control-Max-Age`).
    pub cors_max_age_secs: u64,
    /// Whether this process may use transparent huge pages; `false` (the default) turns them off for it at start
    /// (`huge_pages`): their first-touch faults zero 2 MiB at once, a stall of milliseconds on the request path.
    pub transparent_huge_pages: bool,
}

/// Descriptors kept back from `max_connections = 0` (the automatic cap): store files and connections, the
/// broker, Redis, logs, the listener.
const RESERVED_DESCRIPTORS: u64 = 128;
/// The least `server.max_head_bytes` hyper takes.
const MIN_HEAD_BYTES: usize = 8192;

impl ServerSettings {
    /// The admin console's directory when it is enabled and built (it holds `index.html`); `None` when
    /// `admin_dir` is empty or does not exist yet (`/admin` then answers a JSON 404 saying so).
    pub fn admin_console(&self) -> Option<&std::path::Path> {
        let dir = self.admin_dir.as_path();
        (!dir.as_os_str().is_empty() && dir.join("index.html").is_file()).then_some(dir)
    }

    fn validate_admin_dir(&self) -> Result<(), ConfigError> {
        let dir = &self.admin_dir;
        if dir.as_os_str().is_empty() || !dir.exists() {
            return Ok(());
        }
        if !dir.join("index.html").is_file() {
            return Err(invalid(
                "server.admin_dir",
                format!(
                    "{} has no index.html: build the console (`cd admin-console && npm ci && npm run build`), \
                     or set it to \"\" to disable /admin",
                    dir.display()
                ),
            ));
        }
        if !self.demo_dir.as_os_str().is_empty() && dir == &self.demo_dir {
            return Err(invalid("server.admin_dir", "must differ from server.demo_dir (the demo is served at /)"));
        }
        Ok(())
    }

    /// The connection cap in force: `max_connections`, or with 0 the soft `RLIMIT_NOFILE` less
    /// [`RESERVED_DESCRIPTORS`] (half of it when the limit is under twice the reserve).
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        auto_connection_cap(nofile_limit())
    }
}

fn auto_connection_cap(nofile: u64) -> usize {
    let cap = if nofile >= 2 * RESERVED_DESCRIPTORS { nofile - RESERVED_DESCRIPTORS } else { nofile / 2 };
    usize::try_from(cap.max(1)).unwrap_or(usize::MAX)
}

/// The soft descriptor limit of this process (a large number when unlimited or unknown).
fn nofile_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 && rl.rlim_cur != libc::RLIM_INFINITY {
            #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
            return rl.rlim_cur as u64;
        }
    }
    1 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    pub jwt_secret: Secret,
    pub jwt_public_key_path: PathBuf,
    pub user_claim: UserClaim,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub service_keys: Vec<ServiceKeyConfig>,
    pub dev_token_endpoint: bool,
    /// Verify user tokens with the keys an identity provider publishes here (a JWK set), chosen by `kid`,
    /// instead of `algorithm`'s secret or PEM (`auth::jwks`). Empty: off.
    pub jwks_url: String,
    /// OpenID Connect issuer: the JWK set's address is discovered from
    /// `{oidc_issuer}/.well-known/openid-configuration`, and with `issuer` empty it is the required `iss`.
    pub oidc_issuer: String,
    /// The algorithms a JWKS key may verify (RS256, ES256, EdDSA); a token whose header names another is refused.
    pub jwks_algorithms: Vec<JwksAlgorithm>,
    /// Least time between two key-set refreshes asked for by a token with an unknown `kid`.
    pub jwks_min_refresh_secs: u64,
    /// [`Settings::profile`], copied by [`Settings::load`]: what a key-set address discovered from
    /// `oidc_issuer` must meet at run time ([`check_key_url`]), as a configured one does at start.
    #[serde(skip)]
    pub profile: Profile,
}

impl AuthSettings {
    /// Whether user tokens are verified with keys fetched from `jwks_url` or discovered from `oidc_issuer`.
    pub fn jwks_enabled(&self) -> bool {
        !self.jwks_url.is_empty() || !self.oidc_issuer.is_empty()
    }

    fn validate_jwks(&self, profile: Profile) -> Result<(), ConfigError> {
        if !self.jwks_url.is_empty() && !self.oidc_issuer.is_empty() {
            return Err(invalid(
                "auth.oidc_issuer",
                "set auth.jwks_url or auth.oidc_issuer, not both (the issuer's discovery names its key set)",
            ));
        }
        for (key, url) in [("auth.jwks_url", &self.jwks_url), ("auth.oidc_issuer", &self.oidc_issuer)] {
            if !url.is_empty() {
                check_key_url(url, profile).map_err(|m| invalid(key, m))?;
            }
        }
        if self.jwks_enabled() && self.dev_token_endpoint {
            return Err(invalid(
                "auth.dev_token_endpoint",
                "cannot mint tokens when they are verified with a key set (auth.jwks_url / auth.oidc_issuer): the identity provider signs them",
            ));
        }
        if self.jwks_algorithms.is_empty() {
            return Err(invalid("auth.jwks_algorithms", "name at least one of RS256, ES256, EdDSA"));
        }
        if !(1..=3600).contains(&self.jwks_min_refresh_secs) {
            return Err(invalid("auth.jwks_min_refresh_secs", "must be 1 to 3600"));
        }
        Ok(())
    }
}

/// What a JWKS key may verify. Symmetric algorithms are absent on purpose: a published key set is public, so
/// an HS256 "key" from it would let anyone sign.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum JwksAlgorithm {
    RS256,
    ES256,
    EdDSA,
}

/// Where keys are fetched from (`auth.jwks_url`, `auth.oidc_issuer`): `https://`, or `http://` in development
/// or to a loopback host (a sidecar, a test); never with credentials in it.
pub fn check_key_url(raw: &str, profile: Profile) -> Result<url::Url, String> {
    let shown = crate::redact_url(raw);
    let url = url::Url::parse(raw).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{shown}` holds credentials: key sets are public, none are sent"));
    }
    match url.scheme() {
        "https" => {}
        "http" if profile == Profile::Development || is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "`{shown}`: keys must come over https:// in production (http:// only to a loopback host)"
            ))
        }
        other => return Err(format!("`{shown}`: scheme `{other}` is not https:// (or http://)")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(url)
}

/// `localhost`, 127.0.0.0/8 or `::1`: a host on this machine.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One `auth.service_keys` entry: a table `{ id, key, scopes, exchanges?, routing_keys? }`, or (the old form,
/// still read, with a warning at start) a bare key, which has every scope and is named by its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKeyConfig {
    Plain(Secret),
    Scoped(ScopedServiceKey),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopedServiceKey {
    /// Names the key in logs, metrics and `Idempotency-Key` scopes; the key itself never appears.
    pub id: String,
    pub key: Secret,
    pub scopes: Vec<Scope>,
    /// `publish` only to these exchanges (AMQP topic patterns over the exchange name); absent: any.
    #[serde(default)]
    pub exchanges: Option<Vec<String>>,
    /// `publish` only with these routing keys (AMQP topic patterns); absent: any.
    #[serde(default)]
    pub routing_keys: Option<Vec<String>>,
}

/// What a service key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `POST /api/v1/events` (within the key's exchanges and routing keys).
    Publish,
    /// Read any user's inbox and unread count; look an alias up.
    InboxRead,
    /// Mark read, read all and delete in any user's inbox; teach an alias.
    InboxWrite,
    /// `/api/v1/admin/*`: presence, rules reload.
    Admin,
}

/// By name, with an error that lists the names (the config crate's own enum error does not).
impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Scope::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scope `{name}`: the scopes are \"publish\", \"inbox:read\", \"inbox:write\" and \"admin\""
            ))
        })
    }
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Publish, Scope::InboxRead, Scope::InboxWrite, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::InboxRead => "inbox:read",
            Scope::InboxWrite => "inbox:write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ServiceKeyConfig {
    pub fn key(&self) -> &Secret {
        match self {
            ServiceKeyConfig::Plain(k) => k,
            ServiceKeyConfig::Scoped(s) => &s.key,
        }
    }

    /// The configured id, or for a bare key its fingerprint: the first 8 bytes of the key's SHA-256, in hex
    /// (what every key was named before ids existed, so bare keys keep their `Idempotency-Key` scope).
    pub fn id(&self) -> String {
        match self {
            ServiceKeyConfig::Plain(k) => {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(k.expose().as_bytes())[..8])
            }
            ServiceKeyConfig::Scoped(s) => s.id.clone(),
        }
    }
}

/// A string is a bare key; a table is a scoped key, read strictly (an unknown field is named).
impl<'de> Deserialize<'de> for ServiceKeyConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ServiceKeyConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key (a string) or a table { id, key, scopes, exchanges, routing_keys }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ServiceKeyConfig::Plain(Secret::new(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ScopedServiceKey::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ServiceKeyConfig::Scoped)
            }
        }
        d.deserialize_any(Entry)
    }
}

impl AuthSettings {
    /// Every key at least 16 characters, ids that fit a log field and a metric label, no id or key twice,
    /// at least one scope, and exchange / routing-key limits only on a `publish` key, as valid topic patterns.
    fn validate_service_keys(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::HashMap::new();
        for (i, entry) in self.service_keys.iter().enumerate() {
            let at = format!("auth.service_keys[{i}]");
            if entry.key().expose().len() < 16 {
                let key = if matches!(entry, ServiceKeyConfig::Scoped(_)) { format!("{at}.key") } else { at };
                return Err(invalid(&key, "every key must be at least 16 characters"));
            }
            if let Some(j) = self.service_keys[..i].iter().position(|k| k.key() == entry.key()) {
                return Err(invalid(&at, format!("the same key as auth.service_keys[{j}]: give each service its own")));
            }
            let id = entry.id();
            if let Some(j) = ids.insert(id.clone(), i) {
                return Err(invalid(&format!("{at}.id"), format!("`{id}` is also the id of auth.service_keys[{j}]")));
            }
            let ServiceKeyConfig::Scoped(s) = entry else { continue };
            let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
            if s.id.is_empty() || s.id.len() > 64 || !s.id.chars().all(ok_char) {
                return Err(invalid(
                    &format!("{at}.id"),
                    format!("`{}`: 1 to 64 characters among letters, digits, `-`, `_`, `.` and `:`", s.id),
                ));
            }
            if s.scopes.is_empty() {
                return Err(invalid(
                    &format!("{at}.scopes"),
                    "at least one of \"publish\", \"inbox:read\", \"inbox:write\", \"admin\"",
                ));
            }
            for (field, patterns) in [("exchanges", &s.exchanges), ("routing_keys", &s.routing_keys)] {
                let Some(patterns) = patterns else { continue };
                let key = format!("{at}.{field}");
                if !s.scopes.contains(&Scope::Publish) {
                    return Err(invalid(&key, "limits `publish`, which this key does not have"));
                }
                if patterns.is_empty() {
                    return Err(invalid(&key, "an empty list allows nothing: leave it out to allow any"));
                }
                for p in patterns {
                    crate::rules::Pattern::parse(p).map_err(|m| invalid(&key, m))?;
                }
            }
        }
        Ok(())
    }

    /// Keys in the old list form (every scope, no id).
    pub fn plain_service_keys(&self) -> usize {
        self.service_keys.iter().filter(|k| matches!(k, ServiceKeyConfig::Plain(_))).count()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserClaim {
    Sub,
    UserId,
}

impl UserClaim {
    pub fn name(self) -> &'static str {
        match self {
            UserClaim::Sub => "sub",
            UserClaim::UserId => "user_id",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    pub allowed_origins: Vec<String>,
    pub allow_missing_origin: bool,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub outbound_queue: usize,
    /// The outbound queue's bound in bytes (frames are bounded in count and in size).
    pub outbound_queue_bytes: usize,
    pub queue_full_policy: QueueFullPolicy,
    /// Sessions one user may have open on this node; the next is closed with 4029.
    pub max_sessions_per_user: usize,
    /// Bound on each store read a session waits for (replay, catch-up, opening); past it the session closes
    /// with 1013 and the client resumes elsewhere or later.
    pub store_timeout_secs: u64,
    pub max_resyncs_per_minute: u32,
    pub write_timeout_secs: u64,
    pub token_refresh_window_secs: u64,
    pub max_inbound_bytes: usize,
    /// Largest inbound message the socket takes at all: an in-session `{"type":"auth"}` refresh carries a
    /// token, which may be as large as one that connects. Other messages stay bound by `max_inbound_bytes`.
    pub max_auth_message_bytes: usize,
    pub replay_page_size: u32,
    /// A replay page ends with the notification that brings it to this many bytes (bodies and texts; one
    /// notification always fits): what a session holds in memory while its socket takes a page.
    pub replay_page_bytes: usize,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub max_write_buffer_bytes: usize,
}

impl WebSocketSettings {
    /// The largest frame a session can carry: one over `outbound_queue_bytes` never fits the session's queue, and
    /// one over what the socket's write buffer takes (`max_write_buffer_bytes`, less the `write_buffer_bytes` it
    /// may already hold and a WebSocket frame header) fails the socket. Ingest refuses a notification whose frame
    /// could be larger (`notification_too_large`), so every stored notification can be delivered.
    pub fn max_frame_bytes(&self) -> usize {
        const FRAME_HEADER: usize = 16;
        self.outbound_queue_bytes
            .min(self.max_write_buffer_bytes.saturating_sub(self.write_buffer_bytes))
            .saturating_sub(FRAME_HEADER)
    }
}

/// What a session does when its bounded outbound queue is full. Neither blocks the publisher or other
/// sessions, and neither drops silently.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    /// Drop the queued frames, send a `resync` marker and replay from the inbox after the last id sent,
    /// on the same socket. After `max_resyncs_per_minute`, close with 4008 instead.
    Resync,
    /// Close with 4008; the client reconnects and resumes with `since`.
    Close,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// May hold a password (postgres://user:secret@...): its Debug form is redacted.
    pub url: String,
    pub synchronous: SqliteSync,
    pub batch_max: usize,
    pub read_connections: usize,
    pub sqlite_cache_mib: usize,
    /// Notifications older than this many days are pruned (0: kept forever).
    pub retention_days: u32,
    /// A user's targeted notifications beyond this many are pruned, oldest first (0: no cap).
    pub max_per_user: u64,
    /// Days an event id is remembered for deduplication.
    pub dedupe_window_days: u32,
    pub prune_interval_secs: u64,
    /// Most rows one pruning transaction touches.
    pub prune_batch: usize,
    /// PostgreSQL: the server's bound on any one statement and on a transaction left idle.
    pub statement_timeout_secs: u64,
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &crate::redact_url(&self.url))
            .field("synchronous", &self.synchronous)
            .field("batch_max", &self.batch_max)
            .field("read_connections", &self.read_connections)
            .field("sqlite_cache_mib", &self.sqlite_cache_mib)
            .field("retention_days", &self.retention_days)
            .field("max_per_user", &self.max_per_user)
            .field("dedupe_window_days", &self.dedupe_window_days)
            .field("prune_interval_secs", &self.prune_interval_secs)
            .field("prune_batch", &self.prune_batch)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .finish()
    }
}

impl StoreSettings {
    /// `statement_timeout_secs` as the PostgreSQL pools set it (validation keeps it at 1 s at least).
    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.statement_timeout_secs.max(1))
    }

    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 6] = [
            ("store.retention_days", u64::from(self.retention_days), 0, 36_500),
            ("store.max_per_user", self.max_per_user, 0, 100_000_000),
            ("store.dedupe_window_days", u64::from(self.dedupe_window_days), 1, 3_650),
            ("store.prune_interval_secs", self.prune_interval_secs, 1, 86_400),
            ("store.prune_batch", self.prune_batch as u64, 1, 100_000),
            ("store.statement_timeout_secs", self.statement_timeout_secs, 1, 3_600),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(invalid(key, format!("{value} is outside {min}..={max}")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    pub path: PathBuf,
}

/// RabbitMQ ingest (`ingest::amqp`): the connection, the consumer, and the whole topology it declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub enabled: bool,
    /// `amqp://` or `amqps://`, with credentials and the URL-encoded vhost.
    pub url: Secret,
    /// A PEM file of CA certificates trusted for `amqps://` besides the system's trust store; empty: none.
    pub ca_file: String,
    /// `amqps://` only, both or neither: the client certificate (PEM, then any intermediates) and its private
    /// key that Herald presents to a broker that asks for one (mutual TLS; with `?auth_mechanism=external` the
    /// certificate is also the login). Empty: none.
    pub cert_file: String,
    pub key_file: String,
    pub connection_name: String,
    /// Unacknowledged deliveries per consumer (`basic.qos`).
    pub prefetch: u16,
    /// Most deliveries committed to the inbox together (at most `prefetch`).
    pub batch_max: usize,
    /// How long to wait for more deliveries after the first of a batch; 0 takes what has arrived.
    pub batch_linger_ms: u64,
    /// Bigger bodies are dead-lettered (`oversized`).
    pub max_message_bytes: usize,
    pub unmatched: UnmatchedPolicy,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// How often the queue depth (consumer lag) is read; 0 disables it.
    pub lag_interval_secs: u64,
    /// Times an event whose recipient alias is unknown is routed again before it is dead-lettered; 0: at once.
    pub unresolved_retries: u32,
    /// How long it waits in the retry queue between tries.
    pub unresolved_retry_delay_secs: u64,
    pub queue: AmqpQueueSettings,
    pub exchanges: Vec<AmqpExchangeSettings>,
}

/// The one durable queue every Herald node consumes (competing consumers), and where poison goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpQueueSettings {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AmqpQueueKind,
    /// Quorum queues: deliveries after which the broker dead-letters a message (`x-delivery-limit`); 0 = none.
    pub delivery_limit: u32,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Where an event with an unresolved recipient waits for its next try (expired back into `name`); empty:
    /// [`AmqpQueueSettings::retry_queue_name`].
    pub retry_queue: String,
}

impl AmqpQueueSettings {
    /// The retry queue: `retry_queue`, or `<name>.retry` when that is empty. Its arguments name the shared queue
    /// and its type, so a new queue name (what a new type or delivery limit needs) brings a new retry queue rather
    /// than a declaration the broker refuses.
    pub fn retry_queue_name(&self) -> std::borrow::Cow<'_, str> {
        match self.retry_queue.as_str() {
            "" => format!("{}.retry", self.name).into(),
            name => name.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AmqpQueueKind {
    /// Replicated, durable, with a delivery limit: RabbitMQ's recommended queue for data that matters.
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpExchangeSettings {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AmqpExchangeKind,
    pub durable: bool,
    /// Binding keys from this exchange to the queue (topic patterns, direct keys); a fanout binds once.
    #[serde(default)]
    pub bindings: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AmqpExchangeKind {
    Topic,
    Fanout,
    Direct,
}

/// What the consumer does with an event that no rule matches.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedPolicy {
    /// To the dead-letter queue with reason `unmatched`, so a missing rule is visible and replayable.
    DeadLetter,
    /// Acknowledge and drop it (counted in `herald_events_unmatched_total`).
    Ack,
}

impl AmqpSettings {
    /// The files of an `amqps://` connection, read at each connect.
    pub fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles { ca_file: &self.ca_file, cert_file: &self.cert_file, key_file: &self.key_file }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        crate::ingest::amqp::check_url(self.url.expose()).map_err(|m| invalid("amqp.url", m))?;
        if let Some(file) = self.tls_files().first_set() {
            if !self.url.expose().starts_with("amqps://") {
                let key = format!("amqp.{}", file.setting());
                return Err(invalid(&key, "is for an amqps:// URL (TLS); amqp.url is plain amqp://"));
            }
            // The consumer's own reading (lapin takes the chain as text: the file must be UTF-8 as well).
            crate::ingest::amqp::tls(self.tls_files())
                .map_err(|(file, m)| invalid(&format!("amqp.{}", file.setting()), m))?;
        }
        if crate::ingest::amqp::logs_in_by_certificate(self.url.expose()) && self.cert_file.is_empty() {
            return Err(invalid(
                "amqp.cert_file",
                "is needed with ?auth_mechanism=external in amqp.url: the broker logs Herald in by its client \
                 certificate (with amqp.key_file)",
            ));
        }
        let positive = [
            ("amqp.prefetch", self.prefetch as u64),
            ("amqp.batch_max", self.batch_max as u64),
            ("amqp.max_message_bytes", self.max_message_bytes as u64),
            ("amqp.reconnect_min_ms", self.reconnect_min_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.batch_max > self.prefetch as usize {
            return Err(invalid(
                "amqp.batch_max",
                "cannot exceed amqp.prefetch (a batch is made of prefetched deliveries)",
            ));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(invalid("amqp.reconnect_max_ms", "must be at least amqp.reconnect_min_ms"));
        }
        let q = &self.queue;
        let retry_queue = q.retry_queue_name().into_owned();
        for (key, name) in [
            ("amqp.queue.name", &q.name),
            ("amqp.queue.dead_letter_exchange", &q.dead_letter_exchange),
            ("amqp.queue.dead_letter_queue", &q.dead_letter_queue),
            ("amqp.queue.retry_queue", &retry_queue),
        ] {
            check_amqp_name(key, name)?;
        }
        if q.dead_letter_queue == q.name {
            return Err(invalid("amqp.queue.dead_letter_queue", "must differ from amqp.queue.name"));
        }
        if [&q.name, &q.dead_letter_queue].contains(&&retry_queue) {
            return Err(invalid("amqp.queue.retry_queue", "must differ from amqp.queue.name and dead_letter_queue"));
        }
        if self.unresolved_retries > 0 && self.unresolved_retry_delay_secs == 0 {
            return Err(invalid("amqp.unresolved_retry_delay_secs", "must be at least 1 when unresolved_retries > 0"));
        }
        // A wait for an alias, not a schedule (the broker itself takes up to 2^32 - 1 ms).
        if self.unresolved_retry_delay_secs > 86_400 {
            return Err(invalid("amqp.unresolved_retry_delay_secs", "must be at most 86400 (a day)"));
        }
        if self.exchanges.is_empty() {
            return Err(invalid("amqp.exchanges", "at least one exchange is needed to consume anything"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, x) in self.exchanges.iter().enumerate() {
            let key = |field: &str| format!("amqp.exchanges[{i}].{field}");
            check_amqp_name(&key("name"), &x.name)?;
            if !names.insert(x.name.as_str()) || x.name == q.dead_letter_exchange {
                return Err(invalid(&key("name"), format!("`{}` is declared twice", x.name)));
            }
            match x.kind {
                AmqpExchangeKind::Fanout => {}
                AmqpExchangeKind::Topic | AmqpExchangeKind::Direct if x.bindings.is_empty() => {
                    return Err(invalid(&key("bindings"), "a topic or direct exchange needs at least one binding key"));
                }
                AmqpExchangeKind::Topic => {
                    for b in &x.bindings {
                        crate::rules::Pattern::parse(b).map_err(|m| invalid(&key("bindings"), m))?;
                    }
                }
                AmqpExchangeKind::Direct => {}
            }
        }
        Ok(())
    }
}

/// The contents of a PEM file of CA certificates for a TLS connection, once it is known to hold at least one
/// certificate, every one of which parses as an X.509 trust anchor (the TLS verifiers refuse the whole store for
/// one unparseable root, which would fail every connect after a clean start). Read at start (validation) and at
/// each connect (a renewed CA is picked up on the next reconnect).
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("{path}: certificate {} is not a parseable X.509 certificate: {e}", n + 1))?;
    }
    Ok(pem)
}

/// The files of a TLS connection to a broker or Redis, as configured (empty: not set). Read at start to check
/// them and again at each connect, so renewed certificates are taken without a restart.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub ca_file: &'a str,
    pub cert_file: &'a str,
    pub key_file: &'a str,
}

impl TlsFiles<'_> {
    /// The first file set (CA, certificate, key), if any: the connection is then meant to be TLS.
    pub fn first_set(&self) -> Option<TlsFile> {
        [(TlsFile::Ca, self.ca_file), (TlsFile::Cert, self.cert_file), (TlsFile::Key, self.key_file)]
            .into_iter()
            .find_map(|(file, path)| (!path.is_empty()).then_some(file))
    }
}

/// Which of [`TlsFiles`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
}

impl TlsFile {
    /// The setting's name after its section's prefix (`ca_file`, `cert_file`, `key_file`).
    pub fn setting(self) -> &'static str {
        match self {
            TlsFile::Ca => "ca_file",
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
        }
    }
}

/// A client certificate chain and its private key, as PEM, for a server that asks the client to prove who it
/// is (mutual TLS). Never printed: the key is a secret.
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

/// The client identity named by `files`, or `None` when neither `cert_file` nor `key_file` is set: both read,
/// the certificate file holding at least one parseable X.509 certificate (the client's first, then any
/// intermediates), the key file one private key (PKCS#8, PKCS#1 or SEC1, unencrypted) that the crypto provider
/// loads and that is the first certificate's. Errors say which file and why, never what the key holds.
pub fn read_client_identity(files: TlsFiles<'_>) -> Result<Option<ClientIdentity>, (TlsFile, String)> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    match (files.cert_file, files.key_file) {
        ("", "") => return Ok(None),
        (_, "") => return Err((TlsFile::Key, "is needed too: the client certificate's private key".into())),
        ("", _) => return Err((TlsFile::Cert, "is needed too: the private key's client certificate".into())),
        _ => {}
    }
    let (cert_path, key_path) = (files.cert_file, files.key_file);
    let cert_pem = std::fs::read(cert_path).map_err(|e| (TlsFile::Cert, format!("cannot read {cert_path}: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (TlsFile::Cert, format!("{cert_path} is not a PEM file of certificates: {}", pem_problem(&e))))?;
    if chain.is_empty() {
        return Err((TlsFile::Cert, format!("{cert_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    let key_pem = std::fs::read(key_path).map_err(|e| (TlsFile::Key, format!("cannot read {key_path}: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = pem_problem(&e);
        (TlsFile::Key, format!("{key_path} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): {why}"))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            (TlsFile::Key, format!("{key_path} is not the private key of the certificate in {cert_path}"))
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            (TlsFile::Cert, format!("{cert_path}: its first certificate is not a parseable X.509 certificate: {e}"))
        }
        e => (TlsFile::Key, format!("{key_path}: the key cannot be used: {e}")),
    })?;
    Ok(Some(ClientIdentity { cert_pem, key_pem }))
}

/// What is wrong with a PEM file, in fixed words: the parser's own messages quote the lines they stopped at, which
/// in a key file are the key (a file whose line breaks a secret store turned into spaces is one long line).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no matching -----END line",
        Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed (is the file's text on one line?)",
        Error::Base64Decode(_) => "a section's body is not valid base64",
        Error::NoItemsFound => "no section of the expected kind",
        Error::SectionTooLarge => "a section is larger than 256 MiB",
        _ => "it cannot be read as PEM",
    }
}

/// Exchange and queue names: 1–255 bytes, and not the broker's reserved `amq.` prefix.
fn check_amqp_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(key, "must be 1 to 255 bytes"));
    }
    if name.starts_with("amq.") {
        return Err(invalid(key, format!("`{name}`: names starting with `amq.` are reserved by the broker")));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// One URL (standalone), or comma-separated seed URLs of a Redis Cluster (`redis_mode = "cluster"`).
    pub redis_url: Secret,
    /// A PEM file of CA certificates trusted for `rediss://` instead of the system's trust store; empty: the
    /// system's.
    pub redis_ca_file: String,
    /// `rediss://` only, both or neither: the client certificate (PEM, then any intermediates) and its private
    /// key that Herald presents to a Redis that asks for one (`tls-auth-clients yes`). Empty: none.
    pub redis_cert_file: String,
    pub redis_key_file: String,
    pub redis_mode: RedisMode,
    pub pubsub: PubSubMode,
    pub channel_prefix: String,
    pub node_id: String,
    pub publish_queue: usize,
    pub presence_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PubSubMode {
    /// PUBLISH / SUBSCRIBE.
    Classic,
    /// SPUBLISH / SSUBSCRIBE (Redis 7+; what Redis Cluster shards).
    Sharded,
}

/// What `cluster.redis_url` points at.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (or a proxy in front of several).
    Standalone,
    /// A Redis Cluster: a cluster-aware client that routes each channel to the shard owning its slot.
    Cluster,
}

impl ClusterSettings {
    /// The files of a `rediss://` connection, read at each (re)connect.
    pub fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles { ca_file: &self.redis_ca_file, cert_file: &self.redis_cert_file, key_file: &self.redis_key_file }
    }

    /// This node's name in presence, traces and logs: `node_id`, or `hostname-pid` when it is empty.
    pub fn node_name(&self) -> String {
        if self.node_id.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id()).trim_start_matches('-').to_owned()
        } else {
            self.node_id.clone()
        }
    }

    pub fn enabled(&self) -> bool {
        !self.redis_url.expose().is_empty()
    }

    /// The URLs in `redis_url`: one in standalone mode, the seed nodes in cluster mode.
    pub fn redis_urls(&self) -> Vec<&str> {
        self.redis_url.expose().split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }
}

/// `[trace]`: the per-event trace (`crate::trace`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// Record traces (`false`: nothing is recorded and the trace endpoints answer 409 `trace_disabled`).
    pub enabled: bool,
    /// Steps older than this many days are pruned.
    pub retention_days: u32,
    /// Steps waiting for the trace writer; beyond it a step is dropped and counted (`herald_trace_dropped_total`).
    pub buffer: usize,
    /// The share of steps kept, 0.0 to 1.0; the rest are counted (`herald_trace_sampled_out_total`).
    pub sample_rate: f64,
    /// SQLite only: the trace database file. Empty: beside the inbox, `<inbox stem>.trace.db`.
    pub sqlite_path: PathBuf,
}

impl TraceSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3_650).contains(&self.retention_days) {
            return Err(invalid("trace.retention_days", format!("{} is outside 1..=3650", self.retention_days)));
        }
        if !(1..=10_000_000).contains(&self.buffer) {
            return Err(invalid("trace.buffer", format!("{} is outside 1..=10000000", self.buffer)));
        }
        if !(self.sample_rate.is_finite() && (0.0..=1.0).contains(&self.sample_rate)) {
            return Err(invalid("trace.sample_rate", format!("{} is outside 0.0..=1.0", self.sample_rate)));
        }
        Ok(())
    }
}

/// A PostgreSQL URL that asks for TLS, or names a CA, without having the driver check the server's certificate:
/// sqlx, like libpq, checks it only for `sslmode=verify-ca` or `verify-full`, so `require` (and `prefer`) with an
/// `sslrootcert` encrypts to whoever answers. Said at start in production rather than refused: it is what many
/// guides write.
fn unverified_postgres_tls(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let mode = param("sslmode").unwrap_or_default().to_ascii_lowercase();
    if mode.starts_with("verify") {
        return None;
    }
    let why = match (mode.as_str(), param("sslrootcert")) {
        (_, Some(_)) => "names a CA (sslrootcert) that is not used",
        ("require" | "prefer", None) => "asks for TLS without checking the server's certificate",
        _ => return None,
    };
    Some(format!(
        "store.url {why} (sslmode={}): only sslmode=verify-full or verify-ca check PostgreSQL's certificate; \
         without it anyone on the path can read and change the inbox",
        if mode.is_empty() { "prefer, the default" } else { &mode }
    ))
}

/// Where the inbox lives, parsed from `store.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

const SERVICE_KEYS_VAR: &str = "HERALD__AUTH__SERVICE_KEYS";

/// The keys whose variable is a comma-separated list.
const LIST_KEYS: [&str; 5] = [
    "auth.service_keys",
    "auth.jwks_algorithms",
    "websocket.allowed_origins",
    "server.cors_allowed_origins",
    "preferences.muted_by_default",
];

/// The list variables in `env`, taken out of it, as one TOML document of string arrays: the items as written
/// (trimmed; a blank one kept, for the key's check to refuse), never parsed as numbers; an empty variable is an
/// empty list.
fn list_vars_toml(env: &mut std::collections::HashMap<String, String>) -> Option<String> {
    let mut doc = toml::Table::new();
    for key in LIST_KEYS {
        let Some(raw) = env.remove(&format!("HERALD__{}", key.replace('.', "__").to_uppercase())) else { continue };
        let items: Vec<toml::Value> = match raw.trim().is_empty() {
            true => Vec::new(),
            false => raw.split(',').map(|s| s.trim().into()).collect(),
        };
        let (section, name) = key.split_once('.').expect("section.key");
        let table = doc.entry(section).or_insert_with(|| toml::Table::new().into());
        if let toml::Value::Table(t) = table {
            t.insert(name.into(), toml::Value::Array(items));
        }
    }
    (!doc.is_empty()).then(|| doc.to_string())
}

/// `HERALD__AUTH__SERVICE_KEYS` in its TOML form, as a one-key TOML document. A syntax error is reported by
/// position only: the value holds keys, and a parser's message quotes the text around the error.
fn service_keys_toml(raw: &str) -> Result<String, ConfigError> {
    let doc = format!("[auth]\nservice_keys = {raw}\n");
    match doc.parse::<toml::Table>() {
        Ok(_) => Ok(doc),
        Err(e) => {
            let at = e.span().map(|r| r.start.saturating_sub(doc.find('=').unwrap_or(0) + 2)).unwrap_or(0);
            Err(invalid(
                SERVICE_KEYS_VAR,
                format!(
                    "not a TOML array (error near character {at}): write `[{{ id = \"billing\", key = \"...\", \
                     scopes = [\"publish\"] }}, ...]`, or bare keys separated by commas"
                ),
            ))
        }
    }
}

/// A configuration file's text, its TOML syntax checked here: the `config` crate's parse error quotes the
/// offending line, and a configuration file holds passwords and keys, so an error says where (line and column)
/// and what the parser expected, never the text.
fn toml_file(given: &str, path: &Path) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(given, format!("cannot read {}: {e}", path.display())))?;
    if let Err(e) = text.parse::<toml::Table>() {
        let at = e.span().map_or(0, |r| r.start).min(text.len());
        let before = &text[..text.floor_char_boundary(at)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let what = e.message().lines().next().unwrap_or("invalid TOML");
        return Err(file_error(
            given,
            format!(
                "{} is not valid TOML: {what} at line {line}, column {column} (the line is not shown: it may hold \
                 a secret)",
                path.display()
            ),
        ));
    }
    Ok(text)
}

/// A variable that names a section of the settings after `HERALD_` with one underscore (`HERALD_STORE_URL`,
/// `HERALD_AUTH_JWT_SECRET`): a setting's variable misspelt. Herald's own single-underscore variables
/// (`HERALD_CONFIG`, `HERALD_PROFILE`, `HERALD_BASE_CONFIG`) name no section.
fn one_underscore_setting(var: &str) -> bool {
    const SECTIONS: [&str; 10] =
        ["SERVER", "LOG", "AUTH", "WEBSOCKET", "STORE", "RULES", "AMQP", "CLUSTER", "TRACE", "PREFERENCES"];
    let Some(rest) = var.strip_prefix("HERALD_").filter(|r| !r.starts_with('_')) else { return false };
    SECTIONS.iter().any(|s| rest.strip_prefix(s).is_some_and(|k| k.starts_with('_') && k.len() > 1))
}

impl Settings {
    /// Load every layer. `file` is the `--config` path; `env` is the environment to read (tests pass their own).
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        // `RUST_LOG` replaces `log.filter` (telemetry::init_tracing): checked the same way, so a typo (`inf`, a
        // target filter with no level) is refused rather than a node that logs nothing.
        if let Some((_, filter)) = env.iter().find(|(k, v)| k == "RUST_LOG" && !v.trim().is_empty()) {
            check_log_filter(filter).map_err(|m| invalid("RUST_LOG", m))?;
        }
        let settings = Settings::layered(file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every layer read and typed, but not checked as a whole: what `herald healthcheck` needs to find the port to
    /// probe, which a setting it does not use (the production profile's refusal of the development secret, when
    /// the secrets are in a `--config` file the probe is not given) must not make it report a healthy node
    /// unhealthy.
    pub fn layered(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("HERALD")).collect();
        // `HERALD_STORE_URL` for `HERALD__STORE__URL`: read by no one, the node would run on the default (an
        // SQLite file where a PostgreSQL URL was meant). Refused like an unknown key, naming the variable.
        let mut misspelt: Vec<&String> = env.keys().filter(|k| one_underscore_setting(k)).collect();
        misspelt.sort();
        if let Some(var) = misspelt.first() {
            let meant = format!("HERALD__{}", var["HERALD_".len()..].replacen('_', "__", 1));
            return Err(invalid(
                var,
                format!("this variable is not read: a setting's is HERALD__SECTION__KEY, two underscores around each part (`{meant}`?)"),
            ));
        }
        let mut env = env;
        // `HERALD_PROFILE` is an alias of `HERALD__PROFILE`: it selects `config/{profile}.toml` *and* is the
        // profile (one name, one meaning), so `HERALD_PROFILE=production` gets production's checks.
        let profile = match (env.get("HERALD__PROFILE"), env.get("HERALD_PROFILE")) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid("profile", format!("HERALD__PROFILE=`{a}` and HERALD_PROFILE=`{b}` disagree")))
            }
            (Some(p), _) | (None, Some(p)) => Some(p.clone()),
            (None, None) => None,
        };
        if let Some(profile) = &profile {
            if !matches!(profile.as_str(), "development" | "production") {
                return Err(invalid("profile", format!("`{profile}` is neither \"development\" nor \"production\"")));
            }
            env.insert("HERALD__PROFILE".into(), profile.clone());
        }
        let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        // A platform's defaults under every file an operator gives (the image's paths and bind address): unlike
        // variables, they do not override the operator's `--config` file.
        if let Some(base) = env.get(BASE_CONFIG_VAR) {
            if !Path::new(base).is_file() {
                return Err(invalid(BASE_CONFIG_VAR, format!("file {base} does not exist")));
            }
            builder =
                builder.add_source(File::from_str(&toml_file(BASE_CONFIG_VAR, Path::new(base))?, FileFormat::Toml));
        }
        if let Some(profile) = profile {
            let path = PathBuf::from(format!("config/{profile}.toml"));
            if path.is_file() {
                builder = builder.add_source(File::from_str(&toml_file("profile", &path)?, FileFormat::Toml));
            }
        }
        if let Some(file) = file {
            if !file.exists() {
                return Err(file_error("--config", format!("file {} does not exist", file.display())));
            }
            builder = builder.add_source(File::from_str(&toml_file("--config", file)?, FileFormat::Toml));
        }
        // Scoped service keys from the environment (a Kubernetes Secret, a compose file): the variable holds a TOML
        // array of tables, `[{ id = "billing", key = "...", scopes = ["publish"] }]`, read as if it were in a file
        // (after the --config file, so it wins, as every variable does). A value not starting with `[` is the
        // old comma-separated list of bare keys.
        if let Some(raw) = env.get(SERVICE_KEYS_VAR).filter(|v| v.trim_start().starts_with('[')).cloned() {
            env.remove(SERVICE_KEYS_VAR);
            builder = builder.add_source(File::from_str(&service_keys_toml(&raw)?, FileFormat::Toml));
        }
        if let Some(lists) = list_vars_toml(&mut env) {
            builder = builder.add_source(File::from_str(&lists, FileFormat::Toml));
        }
        let env_source = Environment::with_prefix("HERALD")
            .prefix_separator("__")
            .separator("__")
            // Every value stays the string it is: typed keys parse their own (config's deserializer reads numbers
            // and booleans from strings), and a secret or key of digits is not turned into a number first
            // (`00001234…` became `1234…`, a 40-digit one a float).
            .try_parsing(false)
            .source(Some(env.into_iter().filter(|(k, _)| k.starts_with("HERALD__")).collect()));
        let merged = builder.add_source(env_source).build()?;
        let mut settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            // The config crate wraps the error with the table it was in (" for key `server`"): the key named first
            // says it already; where the value came from is kept.
            let message = match e.into_inner() {
                config::ConfigError::At { error, origin: Some(origin), .. } => format!("{error} in {origin}"),
                config::ConfigError::At { error, origin: None, .. } => error.to_string(),
                other => other.to_string(),
            };
            invalid(&key, message)
        })?;
        settings.auth.profile = settings.profile;
        Ok(settings)
    }

    /// What starts but most likely is not meant, said at start and by `check-config`: in production, what was left
    /// at a development default that is not refused (a sidecar broker may well take `guest` on loopback) and a key
    /// set trusted without issuer or audience; in development, its public credentials on a reachable address.
    pub fn warnings(&self) -> Vec<String> {
        if self.profile == Profile::Development {
            return self.development_warnings();
        }
        let defaults = Settings::defaults();
        let mut said = Vec::new();
        if self.amqp.enabled && self.amqp.url.expose() == defaults.amqp.url.expose() {
            said.push("amqp.url is the default (guest@127.0.0.1): set HERALD__AMQP__URL to your broker".to_owned());
        }
        if self.websocket.allowed_origins == defaults.websocket.allowed_origins {
            said.push(
                "websocket.allowed_origins is the development default (localhost pages only): name your site's \
                 origin, or browsers on it are refused"
                    .to_owned(),
            );
        }
        let any = |origins: &[String]| origins.iter().any(|o| o == "*");
        if any(&self.websocket.allowed_origins) || any(self.cors_origins()) {
            said.push(
                "an allowed origin is `*`: any site's page holding a user's token may open sessions and read the \
                 inbox"
                    .to_owned(),
            );
        }
        if let StoreLocation::Postgres(url) = self.store_location() {
            said.extend(unverified_postgres_tls(&url));
        }
        if self.auth.jwks_enabled() {
            let issuer = !self.auth.issuer.is_empty() || !self.auth.oidc_issuer.is_empty();
            let mut unchecked = Vec::new();
            if !issuer {
                unchecked.push("auth.issuer (`iss`)");
            }
            if self.auth.audience.is_empty() {
                unchecked.push("auth.audience (`aud`)");
            }
            if !unchecked.is_empty() {
                said.push(format!(
                    "user tokens are verified against a key set without {}: any token that provider signs is \
                     accepted, also one it issued to another application or tenant (key sets are often shared)",
                    unchecked.join(" or ")
                ));
            }
        }
        said
    }

    /// Development's public credentials on an address others can reach: each lets anyone act as any user or
    /// service, so this is said at start (the compose demo publishes its port on purpose; a test on loopback
    /// hears nothing).
    fn development_warnings(&self) -> Vec<String> {
        if self.server.bind.ip().to_canonical().is_loopback() {
            return Vec::new();
        }
        let mut public = Vec::new();
        if self.auth.algorithm == JwtAlgorithm::HS256
            && !self.auth.jwks_enabled()
            && self.auth.jwt_secret.expose() == DEV_JWT_SECRET
        {
            public.push("the repository's development JWT secret (anyone can sign a token for any user)");
        }
        if self.auth.service_keys.iter().any(|k| k.key().expose() == DEV_SERVICE_KEY) {
            public.push("the repository's development service key (anyone can publish and read any inbox)");
        }
        if self.auth.dev_token_endpoint {
            public.push("the dev token endpoint (anyone can get a token for any user)");
        }
        if public.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "server.bind {} is not a loopback address and the development profile uses {}: whoever reaches this \
             port is trusted; set HERALD__PROFILE=production (which refuses these) before exposing it",
            self.server.bind,
            public.join(", ")
        )]
    }

    /// Load from the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    /// The compiled-in defaults (tests start from these).
    pub fn defaults() -> Settings {
        Settings::load(None, std::iter::empty()).expect("the shipped defaults are valid")
    }

    /// Whether `origin` (as a browser sends it) is one of `allowed`: `*`, or equal ignoring ASCII case. The one
    /// rule for the WebSocket handshake (`websocket.allowed_origins`) and CORS ([`Settings::cors_origins`]).
    pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
        allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    }

    /// The origins the REST API allows (CORS): `server.cors_allowed_origins`, by default the WebSocket's.
    pub fn cors_origins(&self) -> &[String] {
        self.server.cors_allowed_origins.as_deref().unwrap_or(&self.websocket.allowed_origins)
    }

    pub fn store_location(&self) -> StoreLocation {
        parse_store_url(&self.store.url).expect("validated at load")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        parse_store_url(&self.store.url).map_err(|m| invalid("store.url", m))?;
        self.server.validate_admin_dir()?;
        if self.cluster.enabled() {
            let urls = self.cluster.redis_urls();
            if urls.is_empty() || urls.iter().any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://"))) {
                return Err(invalid("cluster.redis_url", "must be redis://... or rediss://... (or empty: one node)"));
            }
            match self.cluster.redis_mode {
                RedisMode::Standalone if urls.len() > 1 => {
                    return Err(invalid(
                        "cluster.redis_url",
                        "several URLs are the seeds of a Redis Cluster: set cluster.redis_mode = \"cluster\" too",
                    ));
                }
                RedisMode::Cluster if self.cluster.pubsub != PubSubMode::Sharded => {
                    return Err(invalid(
                        "cluster.pubsub",
                        "cluster.redis_mode = \"cluster\" needs pubsub = \"sharded\" (SSUBSCRIBE on the shard owning \
                         each channel)",
                    ));
                }
                _ => {}
            }
            if let Some(file) = self.cluster.tls_files().first_set() {
                if urls.iter().any(|u| !u.starts_with("rediss://")) {
                    return Err(invalid(
                        &format!("cluster.redis_{}", file.setting()),
                        "is for rediss:// URLs (TLS); cluster.redis_url has a plain redis:// one",
                    ));
                }
            }
            // The link's own reading of the URLs and the TLS files; its errors start with the key they are about.
            if let Err(e) = crate::fanout::redis::check_urls(&self.cluster) {
                let (key, message) = e.split_once(": ").unwrap_or(("cluster.redis_url", &e));
                return Err(invalid(key, message));
            }
            if matches!(self.store_location(), StoreLocation::Sqlite(_)) {
                return Err(invalid(
                    "cluster.redis_url",
                    "several nodes need a shared inbox: set store.url = \"postgres://...\" too",
                ));
            }
            if self.cluster.channel_prefix.is_empty() || self.cluster.channel_prefix.contains(char::is_whitespace) {
                return Err(invalid("cluster.channel_prefix", "must be a non-empty word"));
            }
            // Both separate fields in what nodes tell each other (a message's origin, a presence line).
            if self.cluster.node_id.contains(|c: char| c == '|' || c.is_whitespace() || c.is_control()) {
                return Err(invalid("cluster.node_id", "may not contain `|`, spaces or control characters"));
            }
        }
        self.amqp.validate()?;
        // With a key set, `algorithm`'s secret or PEM verifies nothing and need not be there.
        match self.auth.algorithm {
            _ if self.auth.jwks_enabled() => {}
            JwtAlgorithm::HS256 if self.auth.jwt_secret.expose().len() < 16 => {
                return Err(invalid("auth.jwt_secret", "must be at least 16 bytes for HS256"));
            }
            JwtAlgorithm::RS256 if self.auth.jwt_public_key_path.as_os_str().is_empty() => {
                return Err(invalid("auth.jwt_public_key_path", "required when auth.algorithm = \"RS256\""));
            }
            _ => {}
        }
        self.auth.validate_jwks(self.profile)?;
        self.auth.validate_service_keys()?;
        let positive = [
            ("websocket.ping_interval_secs", self.websocket.ping_interval_secs as usize),
            ("websocket.idle_timeout_secs", self.websocket.idle_timeout_secs as usize),
            ("websocket.write_timeout_secs", self.websocket.write_timeout_secs as usize),
            ("websocket.outbound_queue", self.websocket.outbound_queue),
            ("websocket.outbound_queue_bytes", self.websocket.outbound_queue_bytes),
            ("websocket.max_sessions_per_user", self.websocket.max_sessions_per_user),
            ("websocket.store_timeout_secs", self.websocket.store_timeout_secs as usize),
            ("websocket.max_inbound_bytes", self.websocket.max_inbound_bytes),
            ("server.header_read_timeout_secs", self.server.header_read_timeout_secs as usize),
            ("server.body_read_timeout_secs", self.server.body_read_timeout_secs as usize),
            ("server.write_stall_timeout_secs", self.server.write_stall_timeout_secs as usize),
            ("server.ingest_timeout_secs", self.server.ingest_timeout_secs as usize),
            ("server.ingest_max_concurrency", self.server.ingest_max_concurrency),
            ("websocket.replay_page_size", self.websocket.replay_page_size as usize),
            ("websocket.replay_page_bytes", self.websocket.replay_page_bytes),
            ("websocket.read_buffer_bytes", self.websocket.read_buffer_bytes),
            ("store.batch_max", self.store.batch_max),
            ("cluster.publish_queue", self.cluster.publish_queue),
            ("cluster.presence_interval_secs", self.cluster.presence_interval_secs as usize),
            ("store.read_connections", self.store.read_connections),
            ("store.sqlite_cache_mib", self.store.sqlite_cache_mib),
            ("server.max_body_bytes", self.server.max_body_bytes),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        self.store.validate_ranges()?;
        self.trace.validate()?;
        self.preferences.validate()?;
        if self.server.max_head_bytes < MIN_HEAD_BYTES {
            return Err(invalid("server.max_head_bytes", "must be at least 8192 (the least hyper reads a head with)"));
        }
        if self.websocket.max_auth_message_bytes < self.websocket.max_inbound_bytes {
            return Err(invalid(
                "websocket.max_auth_message_bytes",
                "must be at least websocket.max_inbound_bytes (it is the socket's message limit)",
            ));
        }
        if self.websocket.max_write_buffer_bytes <= self.websocket.write_buffer_bytes {
            return Err(invalid(
                "websocket.max_write_buffer_bytes",
                "must be greater than websocket.write_buffer_bytes, or every WebSocket upgrade fails",
            ));
        }
        if self.store.sqlite_cache_mib > MAX_SQLITE_CACHE_MIB {
            return Err(invalid("store.sqlite_cache_mib", format!("at most {MAX_SQLITE_CACHE_MIB} (64 GiB)")));
        }
        check_log_filter(&self.log.filter).map_err(|m| invalid("log.filter", m))?;
        if self.server.write_stall_timeout_secs <= self.websocket.write_timeout_secs {
            return Err(invalid(
                "server.write_stall_timeout_secs",
                "must be longer than websocket.write_timeout_secs, or a stuck session's connection is cut before the \
                 session can close it with its code",
            ));
        }
        if self.websocket.idle_timeout_secs <= self.websocket.ping_interval_secs {
            return Err(invalid(
                "websocket.idle_timeout_secs",
                "must be longer than websocket.ping_interval_secs, or every session times out between pings",
            ));
        }
        for origin in &self.websocket.allowed_origins {
            check_origin(origin).map_err(|m| invalid("websocket.allowed_origins", m))?;
        }
        for origin in self.server.cors_allowed_origins.iter().flatten() {
            check_origin(origin).map_err(|m| invalid("server.cors_allowed_origins", m))?;
        }
        if let Some(ops) = self.server.ops_bind {
            let (main, ops_port) = (self.server.bind, ops.port());
            let overlap = main.port() == ops_port
                && (main.ip() == ops.ip() || main.ip().is_unspecified() || ops.ip().is_unspecified());
            if ops_port != 0 && overlap {
                return Err(invalid("server.ops_bind", format!("must be another address than server.bind ({main})")));
            }
        }
        if self.server.cors_max_age_secs > 86_400 {
            return Err(invalid("server.cors_max_age_secs", "at most 86400 (browsers cap it lower anyway)"));
        }
        if self.profile == Profile::Production {
            // With a key set the secret verifies nothing, so it may stay at its default.
            if self.auth.algorithm == JwtAlgorithm::HS256
                && !self.auth.jwks_enabled()
                && self.auth.jwt_secret.expose() == DEV_JWT_SECRET
            {
                return Err(invalid("auth.jwt_secret", "the development secret is refused in production"));
            }
            if self.auth.service_keys.iter().any(|k| k.key().expose() == DEV_SERVICE_KEY) {
                return Err(invalid("auth.service_keys", "the development key is refused in production"));
            }
            // The example Secret's values (`deploy/k8s/secret.example.yaml`), applied as they are.
            let placeholder = |s: &Secret| s.expose().contains(PLACEHOLDER);
            if self.auth.algorithm == JwtAlgorithm::HS256 && placeholder(&self.auth.jwt_secret) {
                return Err(invalid(
                    "auth.jwt_secret",
                    format!("a `{PLACEHOLDER}` placeholder is refused in production"),
                ));
            }
            if self.auth.service_keys.iter().any(|k| placeholder(k.key())) {
                return Err(invalid(
                    "auth.service_keys",
                    format!("a `{PLACEHOLDER}` placeholder is refused in production"),
                ));
            }
            if self.auth.dev_token_endpoint {
                return Err(invalid("auth.dev_token_endpoint", "must be false in production"));
            }
        }
        Ok(())
    }
}

/// An allowed origin is `*` or exactly what a browser sends in `Origin`: `http(s)://host[:port]`, without a
/// path, a trailing `/`, a query or credentials (any of those would never match, silently).
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("`{origin}` is not \"*\" or an http(s)://host[:port] origin: {why}"));
    let Ok(uri) = origin.parse::<axum::http::Uri>() else { return bad("it does not parse") };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad("the scheme must be http or https");
    }
    match uri.authority() {
        None => return bad("no host"),
        Some(a) if a.as_str().contains('@') => return bad("an origin holds no credentials"),
        Some(a) if a.host().is_empty() => return bad("no host"),
        Some(_) => {}
    }
    // `http::Uri` reads `https://a.example` with the path `/`: a `/` written out is caught by `ends_with`.
    if uri.path_and_query().is_some_and(|p| !matches!(p.as_str(), "" | "/")) || origin.ends_with('/') {
        return bad("an origin has no path, not even a trailing `/`");
    }
    Ok(())
}

/// The SQLite writer's page cache is a memory budget: more than this is a typo, not a plan.
const MAX_SQLITE_CACHE_MIB: usize = 65_536;

/// A `log.filter` must parse as tracing directives, each a level (a name, or `0`–`5`), a target (a Rust path or a
/// crate name: all its events) or `target=level`. tracing reads any other bare word as a target, so a mistyped
/// level (`inf`, `wran`, `debg`, `warning`, `6`) would silently log nothing but that "crate": a bare number
/// above 5, or a word one edit (a swap counts as one) from a level, or that a level begins or that begins a
/// level, is refused as a typo. A crate so named (`warp`) is written `warp=trace`.
fn check_log_filter(filter: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder().parse(filter).map_err(|e| format!("`{filter}`: {e}"))?;
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    const NAMES: &str = "levels: off, error, warn, info, debug, trace, or 0 to 5";
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains(['=', '[', ':']) {
            continue;
        }
        if directive.bytes().all(|b| b.is_ascii_digit()) {
            if directive.parse::<u8>().is_ok_and(|n| n <= 5) {
                continue;
            }
            return Err(format!("`{directive}` is no level ({NAMES})"));
        }
        let word = directive.to_ascii_lowercase();
        if LEVELS.contains(&word.as_str()) {
            continue;
        }
        if let Some(level) = LEVELS.iter().find(|l| {
            edit_distance(&word, l) <= 1 || word.starts_with(**l) || (word.len() >= 3 && l.starts_with(&word))
        }) {
            return Err(format!(
                "`{directive}` looks like the level `{level}` mistyped ({NAMES}); a target of that name is written \
                 `{directive}=trace`"
            ));
        }
    }
    Ok(())
}

/// Edit distance between two short ASCII words (optimal string alignment: an insertion, a deletion, a
/// substitution or a swap of two neighbours each count one).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The query parameters sqlx's PostgreSQL URL parser reads. It ignores any other with a WARN that prints the
/// value (a mistyped `sslpassword=...` would reach the log), so Herald refuses them at load instead.
const POSTGRES_URL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A PostgreSQL URL the driver reads as written: every parameter known, every value it parses (a port, an
/// `sslmode`). Errors never repeat the URL's password.
fn check_postgres_url(raw: &str) -> Result<(), String> {
    let parsed = url::Url::parse(raw).map_err(|e| format!("`{}` is not a URL: {e}", crate::redact_url(raw)))?;
    for (key, _) in parsed.query_pairs() {
        if !POSTGRES_URL_PARAMS.contains(&&*key) && !key.starts_with("options[") {
            return Err(format!(
                "unknown PostgreSQL URL parameter `{key}`: Herald's driver (sqlx) would ignore it (libpq-only \
                 parameters such as connect_timeout do nothing here; known: {}, options[NAME])",
                POSTGRES_URL_PARAMS.join(", ")
            ));
        }
    }
    <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(raw)
        .map_err(|e| format!("`{}` is not a usable PostgreSQL URL: {e}", crate::redact_url(raw)))?;
    Ok(())
}

fn parse_store_url(url: &str) -> Result<StoreLocation, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://data/herald.db".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        check_postgres_url(url)?;
        Ok(StoreLocation::Postgres(url.to_owned()))
    } else {
        // Redacted: a mistyped scheme still carries the password after it.
        Err(format!("`{}` is neither sqlite://PATH nor postgres://...", crate::redact_url(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        Settings::load(None, env(pairs)).unwrap_err().to_string()
    }

    /// A store URL that is not in URL form (a libpq connection string, a scheme missing its slashes) is refused
    /// without printing its password (it did: the error quoted the value whole).
    #[test]
    fn a_store_url_that_is_not_a_url_is_refused_without_its_password() {
        for url in ["host=db user=herald password=s3cret dbname=herald", "postgres:/herald:s3cret@db/herald"] {
            let e = err(&[("HERALD__STORE__URL", url)]);
            assert!(e.contains("neither sqlite://PATH nor postgres://") && !e.contains("s3cret"), "{e}");
        }
    }

    /// `HERALD_STORE_URL` (one underscore) was read by no one and the node ran on the default SQLite file: a
    /// variable naming a section that way is refused, saying which was meant. Herald's own single-underscore
    /// variables, and others' that name no section, are not.
    #[test]
    fn a_setting_variable_with_one_underscore_is_refused_naming_the_one_meant() {
        let e = err(&[("HERALD_STORE_URL", "postgres://h/db")]);
        assert!(e.contains("HERALD_STORE_URL") && e.contains("`HERALD__STORE__URL`?"), "{e}");
        assert!(!e.contains("postgres://"), "the value may hold a password: {e}");
        let e = err(&[("HERALD_AUTH_JWT_SECRET", "s")]);
        assert!(e.contains("`HERALD__AUTH__JWT_SECRET`?"), "{e}");
        for fine in [
            ("HERALD_PROFILE", "development"),
            ("HERALD_CONFIG", "x"),
            ("HERALD_TEST_POSTGRES_URL", "postgres://h/db"),
            ("HERALD_BIN", "target/release/herald"),
            ("HERALD_SERVICES_DIR", "/tmp/s"),
            ("HERALD_STORE", "x"),
        ] {
            assert!(Settings::load(None, env(&[fine])).is_ok(), "{fine:?}");
        }
    }

    /// A node id is a field of what nodes tell each other through Redis (a presence line splits on spaces, a
    /// message on `|`): one holding either would make every node misread the others, so it is refused at start.
    #[test]
    fn a_node_id_with_a_space_or_a_bar_is_refused() {
        let cluster = |id: &'static str| {
            [
                ("HERALD__STORE__URL", "postgres://h/db"),
                ("HERALD__CLUSTER__REDIS_URL", "redis://127.0.0.1:6379"),
                ("HERALD__CLUSTER__NODE_ID", id),
            ]
        };
        for bad in ["web 1", "web|1", "web\t1"] {
            let e = err(&cluster(bad));
            assert!(e.contains("cluster.node_id") && e.contains("spaces"), "{bad:?}: {e}");
        }
        assert!(Settings::load(None, env(&cluster("web-1.eu_west"))).is_ok());
    }

    /// Production defaults an operator most likely forgot: warned of, not refused.
    #[test]
    fn production_warns_of_the_default_broker_development_origins_and_an_unchecked_key_set() {
        let prod = [
            ("HERALD__PROFILE", "production"),
            ("HERALD__AUTH__JWT_SECRET", "a-real-secret-of-some-length"),
            ("HERALD__AUTH__SERVICE_KEYS", "a-real-service-key-of-some-length"),
        ];
        let with = |more: &[(&str, &str)]| {
            let mut pairs = prod.to_vec();
            pairs.extend_from_slice(more);
            Settings::load(None, env(&pairs)).unwrap().warnings()
        };
        let said = with(&[("HERALD__AMQP__ENABLED", "true")]);
        assert!(said.iter().any(|w| w.starts_with("amqp.url")), "{said:?}");
        assert!(said.iter().any(|w| w.starts_with("websocket.allowed_origins")), "{said:?}");
        let set = [
            ("HERALD__AMQP__ENABLED", "true"),
            ("HERALD__AMQP__URL", "amqp://herald:pw@rabbit:5672/%2f"),
            ("HERALD__WEBSOCKET__ALLOWED_ORIGINS", "https://app.example.com"),
        ];
        assert_eq!(with(&set), Vec::<String>::new());
        let said = with(&[("HERALD__WEBSOCKET__ALLOWED_ORIGINS", "*")]);
        assert!(said.iter().any(|w| w.contains("`*`")), "{said:?}");
        assert_eq!(Settings::defaults().warnings(), Vec::<String>::new(), "development on loopback says nothing");
        let jwks = [("HERALD__AUTH__JWKS_URL", "https://idp.example.com/jwks"), set[2]];
        let said = with(&jwks);
        assert!(said.iter().any(|w| w.contains("auth.issuer") && w.contains("auth.audience")), "{said:?}");
        let checked = [jwks[0], jwks[1], ("HERALD__AUTH__ISSUER", "https://idp"), ("HERALD__AUTH__AUDIENCE", "herald")];
        assert_eq!(with(&checked), Vec::<String>::new());
        // PostgreSQL's TLS asked for, or its CA named, without the certificate being checked.
        for (query, says) in [
            ("?sslmode=require", "without checking the server's certificate (sslmode=require)"),
            ("?sslmode=prefer", "(sslmode=prefer)"),
            ("?sslrootcert=/ca.pem", "names a CA (sslrootcert) that is not used (sslmode=prefer, the default)"),
            ("?sslmode=require&sslrootcert=/ca.pem", "names a CA (sslrootcert) that is not used (sslmode=require)"),
        ] {
            let url = format!("postgres://h:pw@db.example.com/h{query}");
            let said = with(&[set[2], ("HERALD__STORE__URL", &url)]);
            assert!(said.len() == 1 && said[0].starts_with("store.url") && said[0].contains(says), "{query}: {said:?}");
            assert!(!said[0].contains("pw"), "no password: {said:?}");
        }
        for query in ["", "?sslmode=disable", "?sslmode=verify-full&sslrootcert=/ca.pem", "?sslmode=verify-ca"] {
            let url = format!("postgres://h@db.example.com/h{query}");
            assert_eq!(with(&[set[2], ("HERALD__STORE__URL", &url)]), Vec::<String>::new(), "{query}");
        }
    }

    /// The development profile's public secret, key and token endpoint on an address others reach: said at start
    /// (not refused: the compose demo publishes its port on purpose).
    #[test]
    fn development_credentials_on_a_public_address_are_warned_of() {
        let said = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs)).unwrap().warnings();
        let public = said(&[("HERALD__SERVER__BIND", "0.0.0.0:8080"), ("HERALD__AUTH__DEV_TOKEN_ENDPOINT", "true")]);
        assert_eq!(public.len(), 1, "{public:?}");
        for named in ["0.0.0.0:8080", "JWT secret", "service key", "dev token endpoint", "HERALD__PROFILE=production"] {
            assert!(public[0].contains(named), "{named}: {public:?}");
        }
        let own = said(&[
            ("HERALD__SERVER__BIND", "[::]:8080"),
            ("HERALD__AUTH__JWT_SECRET", "a-secret-of-our-own"),
            ("HERALD__AUTH__SERVICE_KEYS", "a-key-of-our-own"),
        ]);
        assert_eq!(own, Vec::<String>::new(), "its own credentials: nothing public to warn of");
        assert_eq!(said(&[("HERALD__SERVER__BIND", "[::1]:8080")]), Vec::<String>::new(), "loopback");
        assert_eq!(said(&[("HERALD__SERVER__BIND", "[::ffff:127.0.0.1]:8080")]), Vec::<String>::new(), "mapped");
    }

    #[test]
    fn trace_is_on_by_default_and_one_variable_turns_it_off() {
        let t = Settings::defaults().trace;
        assert!(t.enabled);
        assert_eq!((t.retention_days, t.buffer, t.sample_rate), (7, 65536, 1.0));
        let off = Settings::load(None, env(&[("HERALD__TRACE__ENABLED", "false")])).unwrap();
        assert!(!off.trace.enabled, "the bench's trace-off runs set HERALD__TRACE__ENABLED=false");
        let s = Settings::load(None, env(&[("HERALD__TRACE__SAMPLE_RATE", "0.25")])).unwrap();
        assert_eq!(s.trace.sample_rate, 0.25);
    }

    #[test]
    fn trace_settings_out_of_range_are_refused_by_name() {
        for (var, value, key) in [
            ("HERALD__TRACE__RETENTION_DAYS", "0", "trace.retention_days"),
            ("HERALD__TRACE__BUFFER", "0", "trace.buffer"),
            ("HERALD__TRACE__SAMPLE_RATE", "1.5", "trace.sample_rate"),
            ("HERALD__TRACE__SAMPLE_RATE", "-0.1", "trace.sample_rate"),
        ] {
            let e = err(&[(var, value)]);
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn shipped_defaults_load() {
        let s = Settings::defaults();
        assert_eq!(s.profile, Profile::Development);
        assert_eq!(s.store_location(), StoreLocation::Sqlite("data/herald.db".into()));
        assert_eq!(s.auth.user_claim, UserClaim::Sub);
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let s = Settings::load(
            None,
            env(&[
                ("HERALD__SERVER__BIND", "0.0.0.0:9000"),
                ("HERALD__AUTH__SERVICE_KEYS", "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb"),
                ("HERALD__AUTH__USER_CLAIM", "user_id"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert_eq!(s.auth.service_keys.len(), 2);
        assert_eq!(s.auth.user_claim, UserClaim::UserId);
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let e = err(&[("HERALD__SERVER__BINDD", "x")]);
        assert!(e.contains("server.bindd") && e.contains("unknown field `bindd`"), "{e}");
        assert!(!e.contains("for key"), "the key is named once: {e}");
    }

    #[test]
    fn bad_value_is_refused_and_named() {
        let e = err(&[("HERALD__SERVER__BIND", "not-an-address")]);
        assert!(e.contains("server.bind"), "{e}");
        let e = err(&[("HERALD__STORE__URL", "mysql://x")]);
        assert!(e.contains("store.url"), "{e}");
        let e = err(&[("HERALD__WEBSOCKET__OUTBOUND_QUEUE", "0")]);
        assert!(e.contains("websocket.outbound_queue"), "{e}");
    }

    #[test]
    fn retention_keys_outside_their_ranges_are_refused_and_named() {
        for (var, value, key) in [
            ("HERALD__STORE__DEDUPE_WINDOW_DAYS", "0", "store.dedupe_window_days"),
            ("HERALD__STORE__PRUNE_BATCH", "0", "store.prune_batch"),
            ("HERALD__STORE__PRUNE_INTERVAL_SECS", "0", "store.prune_interval_secs"),
            ("HERALD__STORE__RETENTION_DAYS", "100000", "store.retention_days"),
            ("HERALD__STORE__STATEMENT_TIMEOUT_SECS", "0", "store.statement_timeout_secs"),
        ] {
            let e = err(&[(var, value)]);
            assert!(e.contains(key), "{var}={value}: {e}");
        }
        let s = Settings::defaults().store;
        assert_eq!((s.retention_days, s.max_per_user, s.dedupe_window_days), (90, 0, 7));
        assert_eq!((s.prune_interval_secs, s.prune_batch, s.statement_timeout_secs), (60, 1000, 30));
    }

    #[test]
    fn production_refuses_development_secrets() {
        let e = err(&[("HERALD__PROFILE", "production")]);
        assert!(e.contains("auth.jwt_secret"), "{e}");
    }

    #[test]
    fn herald_profile_is_the_profile_not_only_a_file_name() {
        // Before, HERALD_PROFILE=production selected config/production.toml and left the profile at
        // development, so the development secret, key and token endpoint were accepted.
        let e = err(&[("HERALD_PROFILE", "production")]);
        assert!(e.contains("auth.jwt_secret"), "{e}");
        let prod = [
            ("HERALD_PROFILE", "production"),
            ("HERALD__AUTH__JWT_SECRET", "a-production-secret-of-some-length"),
            ("HERALD__AUTH__SERVICE_KEYS", "a-production-service-key"),
        ];
        assert_eq!(Settings::load(None, env(&prod)).unwrap().profile, Profile::Production);
        let mut with_dev_key = prod.to_vec();
        with_dev_key[2].1 = DEV_SERVICE_KEY;
        assert!(Settings::load(None, env(&with_dev_key)).unwrap_err().to_string().contains("auth.service_keys"));
        let mut with_dev_endpoint = prod.to_vec();
        with_dev_endpoint.push(("HERALD__AUTH__DEV_TOKEN_ENDPOINT", "true"));
        let e = Settings::load(None, env(&with_dev_endpoint)).unwrap_err().to_string();
        assert!(e.contains("auth.dev_token_endpoint"), "{e}");
        // The example Secret's placeholders, applied unchanged, are refused too.
        for (i, placeholder, key) in [
            (1, "replace-me-with-a-long-random-secret", "auth.jwt_secret"),
            (2, "replace-me-orders-service-key", "auth.service_keys"),
        ] {
            let mut with_placeholder = prod.to_vec();
            with_placeholder[i].1 = placeholder;
            let e = Settings::load(None, env(&with_placeholder)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("placeholder") && !e.contains(placeholder), "{e}");
        }
        // A file saying development does not undo the environment's production.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, "profile = \"development\"\n").unwrap();
        assert_eq!(Settings::load(Some(&file), env(&prod)).unwrap().profile, Profile::Production);
        // Two spellings that disagree, or a profile that does not exist, are refused.
        let e = err(&[("HERALD_PROFILE", "production"), ("HERALD__PROFILE", "development")]);
        assert!(e.contains("`profile`") && e.contains("disagree"), "{e}");
        let e = err(&[("HERALD_PROFILE", "staging")]);
        assert!(e.contains("`profile`"), "{e}");
        assert_eq!(
            Settings::load(None, env(&[("HERALD_PROFILE", "development")])).unwrap().profile,
            Profile::Development
        );
    }

    #[test]
    fn inconsistent_or_absurd_limits_refuse_to_start_naming_the_key() {
        for (pairs, named) in [
            // Every upgrade died: tungstenite asserts max_write_buffer_size > write_buffer_size.
            (
                vec![
                    ("HERALD__WEBSOCKET__WRITE_BUFFER_BYTES", "2048"),
                    ("HERALD__WEBSOCKET__MAX_WRITE_BUFFER_BYTES", "1024"),
                ],
                "websocket.max_write_buffer_bytes",
            ),
            (vec![("HERALD__WEBSOCKET__MAX_WRITE_BUFFER_BYTES", "0")], "websocket.max_write_buffer_bytes"),
            (vec![("HERALD__LOG__FILTER", "lapin=loud")], "log.filter"),
            (vec![("RUST_LOG", "inf")], "RUST_LOG"),
            (vec![("RUST_LOG", "herald=verbose")], "RUST_LOG"),
            (vec![("HERALD__LOG__FILTER", "inf")], "log.filter"),
            (vec![("HERALD__LOG__FILTER", "info,wran")], "log.filter"),
            (vec![("RUST_LOG", "debg")], "RUST_LOG"),
            (vec![("RUST_LOG", "warning")], "RUST_LOG"),
            (vec![("RUST_LOG", "Infoo")], "RUST_LOG"),
            (vec![("RUST_LOG", "tarce")], "RUST_LOG"),
            (vec![("RUST_LOG", "info,9")], "RUST_LOG"),
            (vec![("HERALD__LOG__FILTER", "info,,herald=[")], "log.filter"),
            (vec![("HERALD__STORE__SQLITE_CACHE_MIB", "18446744073709551615")], "store.sqlite_cache_mib"),
            (vec![("HERALD__STORE__SQLITE_CACHE_MIB", "1000000")], "store.sqlite_cache_mib"),
            (vec![("HERALD__WEBSOCKET__MAX_AUTH_MESSAGE_BYTES", "1024")], "websocket.max_auth_message_bytes"),
            (vec![("HERALD__SERVER__HEADER_READ_TIMEOUT_SECS", "0")], "server.header_read_timeout_secs"),
            (vec![("HERALD__SERVER__MAX_HEAD_BYTES", "4096")], "server.max_head_bytes"),
            (vec![("HERALD__SERVER__INGEST_TIMEOUT_SECS", "0")], "server.ingest_timeout_secs"),
            (vec![("HERALD__SERVER__INGEST_MAX_CONCURRENCY", "0")], "server.ingest_max_concurrency"),
        ] {
            let e = err(&pairs);
            assert!(e.contains(named), "{pairs:?}: {e}");
        }
        // A bare crate name (all its events) is a target, as tracing reads it, for RUST_LOG as for log.filter.
        for filter in [
            "info",
            "WARN",
            "warn,herald=debug",
            "herald::api=trace,info",
            "info,lapin=warn,tower_http=debug",
            "herald",
            "info,hyper",
            "tracing,tokio,3",
            "info,want,wasi,errno,h2,hyper,tower_http,sqlx,lapin,redis,axum,rustls,mio,reqwest",
            "",
        ] {
            assert!(Settings::load(None, env(&[("HERALD__LOG__FILTER", filter)])).is_ok(), "{filter}");
            assert!(Settings::load(None, env(&[("RUST_LOG", filter)])).is_ok(), "RUST_LOG={filter}");
        }
    }

    /// Settings from the defaults with `toml` layered over them as the `--config` file.
    fn with_file(toml: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, toml).unwrap();
        Settings::load(Some(&file), env(&[]))
    }

    #[test]
    fn an_admin_dir_that_exists_without_index_html_refuses_to_start_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let toml = |d: &std::path::Path| format!("[server]\nadmin_dir = {:?}\n", d.display().to_string());
        let e = with_file(&toml(dir.path())).unwrap_err().to_string();
        assert!(e.contains("server.admin_dir") && e.contains("no index.html"), "{e}");
        // Not built yet: starts, /admin disabled; built: served.
        let s = with_file(&toml(&dir.path().join("missing"))).unwrap();
        assert_eq!(s.server.admin_console(), None);
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        let s = with_file(&toml(dir.path())).unwrap();
        assert_eq!(s.server.admin_console(), Some(dir.path()));
        let same = format!("[server]\nadmin_dir = {0:?}\ndemo_dir = {0:?}\n", dir.path().display().to_string());
        assert!(with_file(&same).unwrap_err().to_string().contains("must differ from server.demo_dir"));
        assert_eq!(with_file("[server]\nadmin_dir = \"\"\n").unwrap().server.admin_console(), None);
    }

    #[test]
    fn the_ops_listener_is_off_by_default_and_must_not_share_the_clients_address() {
        assert_eq!(Settings::defaults().server.ops_bind, None);
        let s = Settings::load(None, env(&[("HERALD__SERVER__OPS_BIND", "0.0.0.0:9090")])).unwrap();
        assert_eq!(s.server.ops_bind, Some("0.0.0.0:9090".parse().unwrap()));
        for clash in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let e = with_file(&format!("[server]\nbind = \"127.0.0.1:8080\"\nops_bind = \"{clash}\"\n")).unwrap_err();
            assert!(e.to_string().contains("server.ops_bind"), "{e}");
        }
        let apart = with_file("[server]\nbind = \"127.0.0.1:8080\"\nops_bind = \"127.0.0.2:8080\"\n").unwrap();
        assert_eq!(apart.server.ops_bind, Some("127.0.0.2:8080".parse().unwrap()));
    }

    #[test]
    fn cors_origins_default_to_the_websocket_origins_and_can_be_set_apart() {
        let s = Settings::defaults();
        assert_eq!(s.server.cors_allowed_origins, None);
        assert_eq!(s.cors_origins(), &s.websocket.allowed_origins[..]);
        assert_eq!(s.server.cors_max_age_secs, 600);
        let s = Settings::load(
            None,
            env(&[("HERALD__SERVER__CORS_ALLOWED_ORIGINS", "https://app.example.com,http://127.0.0.1:3000")]),
        )
        .unwrap();
        assert_eq!(s.cors_origins(), ["https://app.example.com", "http://127.0.0.1:3000"]);
        let s = with_file("[server]\ncors_allowed_origins = []\n").unwrap();
        assert!(s.cors_origins().is_empty(), "[] allows none rather than falling back");
        let s = with_file("[server]\ncors_allowed_origins = [\"*\"]\n").unwrap();
        assert_eq!(s.cors_origins(), ["*"]);
    }

    #[test]
    fn an_origin_a_browser_would_never_send_is_refused_naming_the_key() {
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "app.example.com",
            "ftp://app.example.com",
            "https://user:pw@app.example.com",
            "https://app.example.com?x=1",
            "null",
            "",
        ] {
            let e = with_file(&format!("[server]\ncors_allowed_origins = [{bad:?}]\n")).unwrap_err().to_string();
            assert!(e.contains("server.cors_allowed_origins") && e.contains("origin"), "{bad:?}: {e}");
            let e = with_file(&format!("[websocket]\nallowed_origins = [{bad:?}]\n")).unwrap_err().to_string();
            assert!(e.contains("websocket.allowed_origins"), "{bad:?}: {e}");
        }
        for good in ["*", "http://localhost:5173", "https://app.example.com", "http://[::1]:8080", "http://10.0.0.2"] {
            assert!(with_file(&format!("[server]\ncors_allowed_origins = [{good:?}]\n")).is_ok(), "{good}");
        }
        let e = with_file("[server]\ncors_max_age_secs = 999999\n").unwrap_err().to_string();
        assert!(e.contains("server.cors_max_age_secs"), "{e}");
    }

    const BILLING: &str = r#"
        [[auth.service_keys]]
        id = "billing"
        key = "billing-key-0123456789"
        scopes = ["publish"]
        exchanges = ["billing.*"]
        routing_keys = ["invoice.#"]
    "#;

    #[test]
    fn scoped_service_keys_load_from_tables_and_bare_keys_from_lists() {
        let s = with_file(BILLING).unwrap();
        let expected = ScopedServiceKey {
            id: "billing".into(),
            key: Secret::new("billing-key-0123456789"),
            scopes: vec![Scope::Publish],
            exchanges: Some(vec!["billing.*".into()]),
            routing_keys: Some(vec!["invoice.#".into()]),
        };
        assert_eq!(s.auth.service_keys, vec![ServiceKeyConfig::Scoped(expected)], "the file replaces the default");
        assert_eq!(s.auth.plain_service_keys(), 0);
        assert_eq!(s.auth.service_keys[0].id(), "billing");
        // The shipped default is a table too: no warning out of the box.
        assert_eq!(Settings::defaults().auth.plain_service_keys(), 0);
        assert_eq!(Settings::defaults().auth.service_keys[0].id(), "dev");
        // The old list form, from a file, from the environment, and mixed with tables in one array.
        let s = with_file("[auth]\nservice_keys = [\"aaaaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbb\"]\n").unwrap();
        assert_eq!(s.auth.plain_service_keys(), 2);
        assert_eq!(s.auth.service_keys[0].id().len(), 16, "a fingerprint");
        let s = Settings::load(None, env(&[("HERALD__AUTH__SERVICE_KEYS", "aaaaaaaaaaaaaaaa")])).unwrap();
        assert_eq!(s.auth.service_keys, vec![ServiceKeyConfig::Plain(Secret::new("aaaaaaaaaaaaaaaa"))]);
        let s = with_file(
            r#"[auth]
            service_keys = ["aaaaaaaaaaaaaaaa", { id = "ops", key = "cccccccccccccccc", scopes = ["admin"] }]"#,
        )
        .unwrap();
        assert_eq!((s.auth.plain_service_keys(), s.auth.service_keys[1].id()), (1, "ops".to_owned()));
    }

    #[test]
    fn scoped_service_keys_load_from_the_environment_as_a_toml_array_and_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, BILLING).unwrap();
        let value = r#"[{ id = "ops", key = "ops-key-0123456789", scopes = ["admin", "inbox:read"] },
                        { id = "shop", key = "shop-key-0123456789", scopes = ["publish"], exchanges = ["shop.*"] }]"#;
        let s = Settings::load(Some(&file), env(&[("HERALD__AUTH__SERVICE_KEYS", value)])).unwrap();
        let ids: Vec<String> = s.auth.service_keys.iter().map(|k| k.id()).collect();
        assert_eq!(ids, ["ops", "shop"], "the variable replaces the file's keys");
        assert_eq!(s.auth.plain_service_keys(), 0);
        let ServiceKeyConfig::Scoped(shop) = &s.auth.service_keys[1] else { panic!("a table") };
        assert_eq!((shop.scopes.clone(), shop.exchanges.clone()), (vec![Scope::Publish], Some(vec!["shop.*".into()])));
        // The same checks as a file's tables, naming the entry.
        let short = r#"[{ id = "ops", key = "short", scopes = ["admin"] }]"#;
        let e = Settings::load(None, env(&[("HERALD__AUTH__SERVICE_KEYS", short)])).unwrap_err().to_string();
        assert!(e.contains("auth.service_keys[0].key"), "{e}");
        // A syntax error says where, and never echoes the value (it holds keys).
        let broken = r#"[{ id = "ops", key = "a-secret-that-must-not-print", scopes = ["admin"] "#;
        let e = Settings::load(None, env(&[("HERALD__AUTH__SERVICE_KEYS", broken)])).unwrap_err().to_string();
        assert!(e.contains("HERALD__AUTH__SERVICE_KEYS") && e.contains("TOML array"), "{e}");
        assert!(!e.contains("a-secret-that-must-not-print"), "{e}");
    }

    #[test]
    fn a_config_file_that_is_not_toml_is_refused_by_position_without_quoting_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, "[store]\nurl = \"postgres://herald:hunter2-secret@db/herald\n[server]\n").unwrap();
        let e = Settings::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(e.contains("--config") && e.contains("not valid TOML") && e.contains("line 2"), "{e}");
        assert!(!e.contains("hunter2"), "the line holding the password is not shown: {e}");
        // The platform's base file the same way.
        let e = Settings::load(None, env(&[(BASE_CONFIG_VAR, file.to_str().unwrap())])).unwrap_err().to_string();
        assert!(e.contains(BASE_CONFIG_VAR) && e.contains("line 2") && !e.contains("hunter2"), "{e}");
        // A valid file still loads.
        std::fs::write(&file, "[store]\nurl = \"postgres://herald:hunter2-secret@db/herald\"\n").unwrap();
        let s = Settings::load(Some(&file), env(&[])).unwrap();
        assert!(matches!(s.store_location(), StoreLocation::Postgres(_)));
    }

    #[test]
    fn a_postgres_url_the_driver_would_not_read_as_written_is_refused_without_its_password() {
        let bad = |url: &str| err(&[("HERALD__STORE__URL", url)]);
        // An unknown parameter: the driver would ignore it and log its value.
        let e = bad("postgres://herald:pw-secret@db/herald?sslpassword=key-secret");
        assert!(e.contains("store.url") && e.contains("`sslpassword`"), "{e}");
        assert!(!e.contains("key-secret") && !e.contains("pw-secret"), "{e}");
        for url in ["postgres://herald:pw-secret@db:notaport/herald", "postgres://herald:pw-secret@db/h?sslmode=bogus"]
        {
            let e = bad(url);
            assert!(e.contains("store.url") && !e.contains("pw-secret"), "{url}: {e}");
        }
        for url in [
            "postgres://herald:pw@db:5432/herald?sslmode=verify-full&sslrootcert=/ca.pem&application_name=h",
            "postgresql://db/herald?options[statement_timeout]=5s",
        ] {
            Settings::load(None, env(&[("HERALD__STORE__URL", url)])).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn bad_service_keys_refuse_to_start_naming_the_entry_and_never_the_key() {
        let table = |fields: &str| format!("[[auth.service_keys]]\n{fields}\n");
        let ok = "id = \"a\"\nkey = \"secret-key-number-1\"\nscopes = [\"publish\"]";
        for (toml, named, says) in [
            (table("id = \"a\"\nkey = \"short\"\nscopes = [\"publish\"]"), "auth.service_keys[0].key", "16"),
            (
                table("id = \"\"\nkey = \"secret-key-number-1\"\nscopes = [\"publish\"]"),
                "auth.service_keys[0].id",
                "1 to 64",
            ),
            (
                table("id = \"a b\"\nkey = \"secret-key-number-1\"\nscopes = [\"publish\"]"),
                "auth.service_keys[0].id",
                "letters",
            ),
            (
                table("id = \"a\"\nkey = \"secret-key-number-1\"\nscopes = []"),
                "auth.service_keys[0].scopes",
                "at least one",
            ),
            (
                table("id = \"a\"\nkey = \"secret-key-number-1\"\nscopes = [\"write\"]"),
                "auth.service_keys",
                "inbox:write",
            ),
            (table("id = \"a\"\nkey = \"secret-key-number-1\"\nscope = [\"publish\"]"), "auth.service_keys", "scope"),
            (table("id = \"a\"\nkey = \"secret-key-number-1\""), "auth.service_keys", "scopes"),
            (
                table("id = \"a\"\nkey = \"secret-key-number-1\"\nscopes = [\"inbox:read\"]\nexchanges = [\"x\"]"),
                "auth.service_keys[0].exchanges",
                "publish",
            ),
            (table(&format!("{ok}\nrouting_keys = []")), "auth.service_keys[0].routing_keys", "empty"),
            (
                table(&format!("{ok}\nrouting_keys = [\"invoice.#x\"]")),
                "auth.service_keys[0].routing_keys",
                "whole words",
            ),
            (
                format!("{}{}", table(ok), table("id = \"a\"\nkey = \"secret-key-number-2\"\nscopes = [\"admin\"]")),
                "auth.service_keys[1].id",
                "`a`",
            ),
            (
                format!("{}{}", table(ok), table("id = \"b\"\nkey = \"secret-key-number-1\"\nscopes = [\"admin\"]")),
                "auth.service_keys[1]",
                "auth.service_keys[0]",
            ),
            (
                "[auth]\nservice_keys = [\"secret-key-number-1\", \"secret-key-number-1\"]\n".into(),
                "auth.service_keys[1]",
                "same key",
            ),
            ("[auth]\nservice_keys = [\"short\"]\n".into(), "auth.service_keys[0]", "16"),
        ] {
            let e = with_file(&toml).unwrap_err().to_string();
            assert!(e.contains(named) && e.contains(says), "{toml}\n→ {e}");
            assert!(!e.contains("secret-key-number"), "a key reached the error: {e}");
        }
        let dev_in_prod =
            [("HERALD__PROFILE", "production"), ("HERALD__AUTH__JWT_SECRET", "a-production-secret-of-some-length")];
        let e = Settings::load(None, env(&dev_in_prod)).unwrap_err().to_string();
        assert!(e.contains("auth.service_keys") && e.contains("development key"), "the shipped table's key: {e}");
    }

    #[test]
    fn key_set_urls_need_https_in_production_except_on_loopback() {
        let prod = |var: &str, url: &str| {
            Settings::load(
                None,
                env(&[
                    ("HERALD_PROFILE", "production"),
                    ("HERALD__AUTH__SERVICE_KEYS", "a-production-service-key"),
                    (var, url),
                ]),
            )
        };
        for (var, key) in
            [("HERALD__AUTH__JWKS_URL", "auth.jwks_url"), ("HERALD__AUTH__OIDC_ISSUER", "auth.oidc_issuer")]
        {
            for url in [
                "https://id.example/.well-known/jwks.json",
                "http://127.0.0.1:8080/jwks",
                "http://[::1]/jwks",
                "http://localhost:9000",
            ] {
                let s = prod(var, url).unwrap_or_else(|e| panic!("{var}={url}: {e}"));
                assert!(s.auth.jwks_enabled());
            }
            for (url, why) in [
                ("http://id.example/jwks", "https"),
                ("ftp://id.example/jwks", "scheme"),
                ("id.example/jwks", "not a URL"),
                ("https://user:hunter2@id.example/jwks", "credentials"),
            ] {
                let e = prod(var, url).unwrap_err().to_string();
                assert!(e.contains(key) && e.contains(why), "{var}={url}: {e}");
                assert!(!e.contains("hunter2"), "{e}");
            }
            // Development takes http:// anywhere (a provider on the LAN while trying Herald out).
            assert!(Settings::load(None, env(&[(var, "http://keycloak.lan:8080/realms/x")])).is_ok());
        }
    }

    #[test]
    fn key_set_settings_are_validated_and_named() {
        let e = err(&[
            ("HERALD__AUTH__JWKS_URL", "https://a.example/jwks"),
            ("HERALD__AUTH__OIDC_ISSUER", "https://a.example"),
        ]);
        assert!(e.contains("auth.oidc_issuer") && e.contains("not both"), "{e}");
        let e = err(&[("HERALD__AUTH__JWKS_ALGORITHMS", "HS256")]);
        assert!(e.contains("auth.jwks_algorithms"), "{e}");
        let e =
            err(&[("HERALD__AUTH__JWKS_URL", "https://a.example/jwks"), ("HERALD__AUTH__DEV_TOKEN_ENDPOINT", "true")]);
        assert!(e.contains("auth.dev_token_endpoint"), "{e}");
        let e = err(&[("HERALD__AUTH__JWKS_MIN_REFRESH_SECS", "0")]);
        assert!(e.contains("auth.jwks_min_refresh_secs"), "{e}");
        let s = Settings::load(None, env(&[("HERALD__AUTH__JWKS_ALGORITHMS", "EdDSA,ES256")])).unwrap();
        assert_eq!(s.auth.jwks_algorithms, vec![JwksAlgorithm::EdDSA, JwksAlgorithm::ES256]);
        let d = Settings::defaults().auth;
        assert!(!d.jwks_enabled());
        assert_eq!(d.jwks_algorithms, vec![JwksAlgorithm::RS256, JwksAlgorithm::ES256, JwksAlgorithm::EdDSA]);
        assert_eq!(d.jwks_min_refresh_secs, 10);
        // With a key set the HS256 secret verifies nothing: production does not ask to change it.
        let s = Settings::load(
            None,
            env(&[
                ("HERALD_PROFILE", "production"),
                ("HERALD__AUTH__SERVICE_KEYS", "a-production-service-key"),
                ("HERALD__AUTH__OIDC_ISSUER", "https://id.example/realms/herald"),
            ]),
        )
        .unwrap();
        assert_eq!(s.profile, Profile::Production);
        // Nor a PEM for `algorithm = "RS256"`.
        let s = Settings::load(
            None,
            env(&[("HERALD__AUTH__ALGORITHM", "RS256"), ("HERALD__AUTH__JWKS_URL", "https://id.example/jwks")]),
        );
        assert!(s.is_ok(), "{:?}", s.err());
        assert!(err(&[("HERALD__AUTH__ALGORITHM", "RS256")]).contains("auth.jwt_public_key_path"));
    }

    #[test]
    fn the_automatic_connection_cap_keeps_descriptors_back() {
        assert_eq!(auto_connection_cap(1024), 1024 - 128);
        assert_eq!(auto_connection_cap(256), 128);
        assert_eq!(auto_connection_cap(100), 50);
        assert_eq!(auto_connection_cap(1), 1);
        let mut s = Settings::defaults().server;
        assert_eq!(s.max_connections, 0);
        assert!(s.connection_cap() >= 1);
        s.max_connections = 7;
        assert_eq!(s.connection_cap(), 7);
    }

    #[test]
    fn secrets_do_not_print() {
        let mut s = Settings::defaults();
        s.store.url = "postgres://herald:hunter2@db/herald".into();
        assert!(!format!("{s:?}").contains("hunter2"));
        let debug = format!("{s:?}");
        assert!(!debug.contains(DEV_JWT_SECRET));
        assert!(!debug.contains(DEV_SERVICE_KEY));
    }

    /// A client certificate and key (mutual TLS) are checked at start, for the connection they serve: one without
    /// the other, either set for a plain URL, a file that cannot be read or holds no certificate or key, and a key
    /// that is not the certificate's are refused with the setting's name, never at the first connect, and no error
    /// prints the key.
    #[test]
    fn a_client_certificate_without_its_key_or_unusable_is_refused_at_start_naming_the_setting() {
        let fixture = |name: &str| format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"));
        let (cert, key, other_key) = (fixture("client.pem"), fixture("client.key"), fixture("other.key"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not pem\n").unwrap();
        let text = text.to_str().unwrap().to_owned();
        let key_body = std::fs::read_to_string(&key).unwrap();
        let key_line = key_body.lines().nth(1).unwrap();
        // The key mangled as secret stores do: its line breaks turned into spaces, or gone after the BEGIN line.
        let spaced = dir.path().join("spaced.key");
        std::fs::write(&spaced, key_body.replace('\n', " ")).unwrap();
        let glued = dir.path().join("glued.key");
        std::fs::write(&glued, key_body.replacen("-----\n", "-----", 1)).unwrap();
        let (spaced, glued) = (spaced.to_str().unwrap().to_owned(), glued.to_str().unwrap().to_owned());
        let pg = ("HERALD__STORE__URL", "postgres://h@db/h");
        for (section, url) in [
            ("amqp.", ("HERALD__AMQP__URL", "amqps://mq.example.com/prod?auth_mechanism=external")),
            ("cluster.redis_", ("HERALD__CLUSTER__REDIS_URL", "rediss://r.example.com:6380")),
        ] {
            let (cert_var, key_var) = match section {
                "amqp." => ("HERALD__AMQP__CERT_FILE", "HERALD__AMQP__KEY_FILE"),
                _ => ("HERALD__CLUSTER__REDIS_CERT_FILE", "HERALD__CLUSTER__REDIS_KEY_FILE"),
            };
            let ok = Settings::load(None, env(&[pg, url, (cert_var, &cert), (key_var, &key)]));
            assert!(ok.is_ok(), "{section}: {:?}", ok.err());
            for (cert_file, key_file, named, says) in [
                (cert.as_str(), "", "key_file", "is needed too"),
                ("", key.as_str(), "cert_file", "is needed too"),
                (&missing, &key, "cert_file", "cannot read"),
                (&text, &key, "cert_file", "no PEM certificate"),
                (&key, &key, "cert_file", "no PEM certificate"),
                (&cert, &missing, "key_file", "cannot read"),
                (&cert, &cert, "key_file", "no unencrypted PEM private key"),
                (&cert, &other_key, "key_file", "is not the private key of the certificate"),
                (&cert, &spaced, "key_file", "no unencrypted PEM private key"),
                (&cert, &glued, "key_file", "no unencrypted PEM private key"),
            ] {
                let e = err(&[pg, url, (cert_var, cert_file), (key_var, key_file)]);
                assert!(e.contains(&format!("{section}{named}")) && e.contains(says), "{cert_file} {key_file}: {e}");
                // Not a line of the key, not a piece of one, not its bytes as numbers (the PEM parser's own form).
                let pieces = key_body.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| {
                    let bytes = l.as_bytes();
                    bytes.chunks(12).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>()
                });
                for piece in pieces.filter(|p| p.len() == 12) {
                    assert!(!e.contains(piece), "no key material in the error ({piece}): {e}");
                }
                let first = key_line.as_bytes().iter().take(4).map(u8::to_string).collect::<Vec<_>>().join(", ");
                assert!(!e.contains(&first), "no key bytes in the error: {e}");
            }
        }
        for (url, var, named) in [
            (("HERALD__AMQP__URL", "amqp://u:p@mq/prod"), "HERALD__AMQP__CERT_FILE", "amqp.cert_file"),
            (
                ("HERALD__CLUSTER__REDIS_URL", "redis://r:6379"),
                "HERALD__CLUSTER__REDIS_KEY_FILE",
                "cluster.redis_key_file",
            ),
        ] {
            let e = err(&[pg, url, (var, &cert)]);
            assert!(e.contains(named) && e.contains("is for") && e.contains("(TLS)"), "{e}");
        }
        // Logging in by the certificate (EXTERNAL) without one could never succeed.
        let e = err(&[("HERALD__AMQP__URL", "amqps://mq.example.com/prod?auth_mechanism=external")]);
        assert!(e.contains("amqp.cert_file") && e.contains("auth_mechanism=external"), "{e}");
        let id = read_client_identity(TlsFiles { ca_file: "", cert_file: &cert, key_file: &key }).unwrap().unwrap();
        assert!(!format!("{id:?}").contains(key_line), "the identity's Debug prints no key");
    }

    #[test]
    fn amqp_defaults_bind_the_shipped_topology_and_bad_values_name_their_key() {
        let a = Settings::defaults().amqp;
        assert!(!a.enabled, "the quick start needs no broker");
        assert_eq!(a.queue.kind, AmqpQueueKind::Quorum);
        assert!((100..=300).contains(&a.prefetch));
        let bound: Vec<(&str, AmqpExchangeKind, Vec<&str>)> = a
            .exchanges
            .iter()
            .map(|x| (x.name.as_str(), x.kind, x.bindings.iter().map(String::as_str).collect()))
            .collect();
        let medtrack = vec!["student.*", "encadrant.*", "stage.*", "evaluation.*", "auth.user.*", "user.*"];
        assert_eq!(
            bound,
            vec![
                ("events.topic", AmqpExchangeKind::Topic, medtrack.clone()),
                ("medtrack.events", AmqpExchangeKind::Topic, medtrack),
                ("sgad.availability", AmqpExchangeKind::Topic, vec!["availability.#"]),
                ("sgad.matches", AmqpExchangeKind::Topic, vec!["match.#"]),
                ("sgad.notifications", AmqpExchangeKind::Fanout, vec![]),
            ]
        );
        let s = Settings::load(
            None,
            env(&[("HERALD__AMQP__URL", "amqps://u:p@mq.example.com/prod"), ("HERALD__AMQP__QUEUE__TYPE", "classic")]),
        )
        .unwrap();
        assert_eq!(s.amqp.url.expose(), "amqps://u:p@mq.example.com/prod");
        assert_eq!(s.amqp.queue.kind, AmqpQueueKind::Classic);
        for (key, value, named) in [
            ("HERALD__AMQP__URL", "http://localhost", "amqp.url"),
            ("HERALD__AMQP__BATCH_MAX", "500", "amqp.batch_max"),
            ("HERALD__AMQP__PREFETCH", "0", "amqp.prefetch"),
            ("HERALD__AMQP__QUEUE__TYPE", "stream", "amqp.queue.type"),
            ("HERALD__AMQP__QUEUE__NAME", "amq.mine", "amqp.queue.name"),
            ("HERALD__AMQP__QUEUE__DEAD_LETTER_QUEUE", "herald.events", "amqp.queue.dead_letter_queue"),
            ("HERALD__AMQP__QUEUE__RETRY_QUEUE", "herald.dead-letters", "amqp.queue.retry_queue"),
            ("HERALD__AMQP__UNRESOLVED_RETRY_DELAY_SECS", "0", "amqp.unresolved_retry_delay_secs"),
            ("HERALD__AMQP__UNRESOLVED_RETRY_DELAY_SECS", "86401", "amqp.unresolved_retry_delay_secs"),
            ("HERALD__AMQP__UNMATCHED", "drop", "amqp.unmatched"),
        ] {
            let e = err(&[(key, value)]);
            assert!(e.contains(named), "{key}={value}: {e}");
        }
    }

    /// A self-signed CA certificate (`openssl req -x509 -newkey ec ... -days 36500`), for the CA-file checks.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkzCCATmgAwIBAgIUD6zUMak1VT9afOjL0zi6jq6XxXwwCgYIKoZIzj0EAwIw\nHjEcMBoGA1UEAwwTaGVyYWxkLXVuaXQtdGVzdC1jYTAgFw0yNjEyMDYxNzMyMDZa\nGA8yMTI2MTExMjE3MzIwNlowHjEcMBoGA1UEAwwTaGVyYWxkLXVuaXQtdGVzdC1j\nYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDLOGC5BmCzfmh0/gHfsBN78SsAh\njO7BaGY95yvMJBnKkhOCP79vQashbWE18D3r3/Yd9JlaTXIm9la5/hJoRKWjUzBR\nMB0GA1UdDgQWBBQHvS9dHJGtIRpge1D11jLc0Qg3eTAfBgNVHSMEGDAWgBQHvS9d\nHJGtIRpge1D11jLc0Qg3eTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA\nMEUCIFuf6JrtqdXo8iI/v3yXznO6iUpwzV6qlSP6P7TvUKlKAiEAhfht+00FZuYt\nK3AGAlvmYYT6Snb4Yb38jPU/BnL/gMs=\n-----END CERTIFICATE-----\n";

    /// A CA file is checked at start, for the connection it serves: one that cannot be read, holds no
    /// certificate, or is set for a plain (non-TLS) URL is refused with its key, never found at the first connect.
    #[test]
    fn a_tls_ca_file_that_is_missing_empty_or_for_a_plain_url_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("key.txt");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let bad_pem = dir.path().join("bad.pem");
        std::fs::write(&bad_pem, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let missing = dir.path().join("missing.pem");
        // Well-formed PEM whose DER is no certificate: the verifiers would refuse the store at every connect.
        let not_x509 = dir.path().join("not-x509.pem");
        std::fs::write(&not_x509, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        // A good certificate after a Latin-1 comment: fine for Redis (bytes), refused for lapin (text).
        let latin1 = dir.path().join("latin1.pem");
        std::fs::write(&latin1, [b"# Autorit\xe9 de test\n".as_slice(), TEST_CA_PEM.as_bytes()].concat()).unwrap();
        let binary = dir.path().join("ca.der");
        std::fs::write(&binary, [0x30, 0x82, 0xff, 0xfe, 0x00]).unwrap();
        let (not_pem, bad_pem, missing, not_x509, binary, latin1) = (
            not_pem.to_str().unwrap(),
            bad_pem.to_str().unwrap(),
            missing.to_str().unwrap(),
            not_x509.to_str().unwrap(),
            binary.to_str().unwrap(),
            latin1.to_str().unwrap(),
        );
        let amqps = ("HERALD__AMQP__URL", "amqps://u:p@mq.example.com/prod");
        for (url, file, says) in [
            (amqps, missing, "cannot read"),
            (amqps, not_pem, "no PEM certificate"),
            (amqps, bad_pem, "not a PEM file"),
            (amqps, not_x509, "certificate 1 is not a parseable X.509 certificate"),
            (amqps, binary, "no PEM certificate"),
            (amqps, latin1, "not UTF-8"),
            (("HERALD__AMQP__URL", "amqp://u:p@mq/prod"), not_pem, "amqps://"),
        ] {
            let e = err(&[url, ("HERALD__AMQP__CA_FILE", file)]);
            assert!(e.contains("amqp.ca_file") && e.contains(says), "{file}: {e}");
        }
        let pg = ("HERALD__STORE__URL", "postgres://h@db/h");
        for (url, file, says) in [
            ("rediss://r.example.com:6380", missing, "cannot read"),
            ("rediss://r.example.com:6380", not_pem, "no PEM certificate"),
            ("rediss://r.example.com:6380", not_x509, "not a parseable X.509 certificate"),
            ("redis://r.example.com:6379", not_pem, "rediss://"),
        ] {
            let e = err(&[pg, ("HERALD__CLUSTER__REDIS_URL", url), ("HERALD__CLUSTER__REDIS_CA_FILE", file)]);
            assert!(e.contains("cluster.redis_ca_file") && e.contains(says), "{file}: {e}");
        }
        let redis_ca = |file: &str| {
            Settings::load(
                None,
                env(&[
                    pg,
                    ("HERALD__CLUSTER__REDIS_URL", "rediss://r.example.com:6380"),
                    ("HERALD__CLUSTER__REDIS_CA_FILE", file),
                ]),
            )
        };
        assert!(redis_ca(latin1).is_ok(), "a good certificate is taken whatever the text around it");
    }

    #[test]
    fn redis_cluster_mode_takes_seed_urls_and_needs_sharded_pubsub() {
        let pg = ("HERALD__STORE__URL", "postgres://h@db/h");
        let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000";
        let s = Settings::load(
            None,
            env(&[
                pg,
                ("HERALD__CLUSTER__REDIS_URL", seeds),
                ("HERALD__CLUSTER__REDIS_MODE", "cluster"),
                ("HERALD__CLUSTER__PUBSUB", "sharded"),
            ]),
        )
        .unwrap();
        assert_eq!(s.cluster.redis_mode, RedisMode::Cluster);
        assert_eq!(s.cluster.redis_urls(), vec!["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        assert_eq!(Settings::defaults().cluster.redis_mode, RedisMode::Standalone);

        let e = err(&[pg, ("HERALD__CLUSTER__REDIS_URL", seeds), ("HERALD__CLUSTER__PUBSUB", "sharded")]);
        assert!(e.contains("cluster.redis_url") && e.contains("redis_mode"), "{e}");
        let e = err(&[pg, ("HERALD__CLUSTER__REDIS_URL", seeds), ("HERALD__CLUSTER__REDIS_MODE", "cluster")]);
        assert!(e.contains("cluster.pubsub"), "{e}");
        let e = err(&[
            pg,
            ("HERALD__CLUSTER__REDIS_URL", "redis://a:1,http://b:2"),
            ("HERALD__CLUSTER__REDIS_MODE", "cluster"),
            ("HERALD__CLUSTER__PUBSUB", "sharded"),
        ]);
        assert!(e.contains("cluster.redis_url"), "{e}");
        let e = err(&[pg, ("HERALD__CLUSTER__REDIS_URL", "redis://a:1"), ("HERALD__CLUSTER__REDIS_MODE", "sentinel")]);
        assert!(e.contains("cluster.redis_mode"), "{e}");
        // Read as the client reads it (`serve` refused what `check-config` passed), its password never shown.
        let e = err(&[pg, ("HERALD__CLUSTER__REDIS_URL", "redis://:S3cretPW@127.0.0.1:notaport")]);
        assert!(e.contains("cluster.redis_url") && !e.contains("S3cretPW"), "{e}");
    }

    #[test]
    fn preferences_muted_by_default_is_empty_by_default_takes_a_list_and_refuses_blank_or_repeated_types() {
        assert!(Settings::defaults().preferences.muted_by_default.is_empty());
        let s =
            Settings::load(None, env(&[("HERALD__PREFERENCES__MUTED_BY_DEFAULT", "digest,weekly_report")])).unwrap();
        assert_eq!(s.preferences.muted_by_default, ["digest", "weekly_report"]);
        for bad in ["digest, ", "digest,digest", &"x".repeat(MAX_TYPE_LEN + 1)] {
            let e = err(&[("HERALD__PREFERENCES__MUTED_BY_DEFAULT", bad)]);
            assert!(e.contains("preferences.muted_by_default"), "{bad}: {e}");
        }
        let e = err(&[("HERALD__PREFERENCES__MUTE", "x")]);
        assert!(e.contains("preferences") || e.contains("mute"), "unknown keys are refused: {e}");
    }

    #[test]
    fn secrets_and_keys_of_digits_from_the_environment_stay_as_written() {
        let s = Settings::load(
            None,
            env(&[
                ("HERALD__AUTH__JWT_SECRET", "00001234567890123456"),
                ("HERALD__AUTH__SERVICE_KEYS", "00000000000000001234,1234567890123456789012345678901234567890"),
            ]),
        )
        .unwrap();
        assert_eq!(s.auth.jwt_secret.expose(), "00001234567890123456");
        let keys: Vec<&str> = s
            .auth
            .service_keys
            .iter()
            .map(|k| match k {
                ServiceKeyConfig::Plain(k) => k.expose(),
                ServiceKeyConfig::Scoped(k) => k.key.expose(),
            })
            .collect();
        assert_eq!(keys, ["00000000000000001234", "1234567890123456789012345678901234567890"]);
        // Typed keys still read their values from the strings.
        let s = Settings::load(
            None,
            env(&[("HERALD__SERVER__MAX_BODY_BYTES", "4096"), ("HERALD__TRACE__ENABLED", "false")]),
        )
        .unwrap();
        assert_eq!((s.server.max_body_bytes, s.trace.enabled), (4096, false));
        let e = err(&[("HERALD__SERVER__MAX_BODY_BYTES", "lots")]);
        assert!(e.contains("server.max_body_bytes"), "{e}");
    }

    #[test]
    fn a_store_url_of_an_unknown_scheme_is_refused_without_printing_its_password() {
        let e = err(&[("HERALD__STORE__URL", "mysql://herald:S3cretPW@db/herald")]);
        assert!(e.contains("store.url") && !e.contains("S3cretPW"), "{e}");
    }

    #[test]
    fn the_base_config_file_is_under_the_config_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("image.toml");
        std::fs::write(&base, "[server]\nbind = \"0.0.0.0:8080\"\ndemo_dir = \"/usr/share/herald/demo\"\n").unwrap();
        let mine = dir.path().join("mine.toml");
        std::fs::write(&mine, "[server]\ndemo_dir = \"\"\n").unwrap();
        let var = (BASE_CONFIG_VAR, base.to_str().unwrap());
        let s = Settings::load(None, env(&[var])).unwrap();
        assert_eq!((s.server.bind.port(), s.server.demo_dir.to_str().unwrap()), (8080, "/usr/share/herald/demo"));
        // The operator's file wins over the base (an image's environment variables would have won over it).
        let s = Settings::load(Some(&mine), env(&[var])).unwrap();
        assert_eq!((s.server.bind.port(), s.server.demo_dir.to_str().unwrap()), (8080, ""));
        let s = Settings::load(Some(&mine), env(&[var, ("HERALD__SERVER__BIND", "0.0.0.0:9000")])).unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        let e = err(&[(BASE_CONFIG_VAR, "/nonexistent/image.toml")]);
        assert!(e.contains(BASE_CONFIG_VAR) && e.contains("does not exist"), "{e}");
    }
}
