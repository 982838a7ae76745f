//! Settings: one typed, validated struct built from layered sources.
//!
//! Layers, later wins: `config/default.toml` (compiled in, so the binary runs anywhere) →
//! `config/{profile}.toml` when present → the `--config` file → `HERALD__SECTION__KEY` environment variables.
//!
//! Invariants: an unknown key or a bad value refuses to start with an error naming the key; secrets are
//! [`Secret`]s, which never print; the production profile refuses development secrets.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const DEV_JWT_SECRET: &str = "herald-dev-secret-change-me";
const DEV_SERVICE_KEY: &str = "herald-dev-service-key";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
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
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub demo_dir: PathBuf,
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
    pub service_keys: Vec<Secret>,
    pub dev_token_endpoint: bool,
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
    pub queue_full_policy: QueueFullPolicy,
    pub max_resyncs_per_minute: u32,
    pub write_timeout_secs: u64,
    pub token_refresh_window_secs: u64,
    pub max_inbound_bytes: usize,
    pub replay_page_size: u32,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub max_write_buffer_bytes: usize,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub url: String,
    pub synchronous: SqliteSync,
    pub batch_max: usize,
    pub read_connections: usize,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub enabled: bool,
    pub url: Secret,
}

/// Where the inbox lives, parsed from `store.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Settings {
    /// Load every layer. `file` is the `--config` path; `env` is the environment to read (tests pass their own).
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("HERALD")).collect();
        let profile = env.get("HERALD__PROFILE").or(env.get("HERALD_PROFILE")).cloned();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(profile) = profile {
            let path = format!("config/{profile}.toml");
            builder = builder.add_source(File::new(&path, FileFormat::Toml).required(false));
        }
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid("--config", format!("file {} does not exist", file.display())));
            }
            builder = builder.add_source(File::from(file).format(FileFormat::Toml));
        }
        let env_source = Environment::with_prefix("HERALD")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("auth.service_keys")
            .with_list_parse_key("websocket.allowed_origins")
            .try_parsing(true)
            .source(Some(env.into_iter().filter(|(k, _)| k.starts_with("HERALD__")).collect()));
        let merged = builder.add_source(env_source).build()?;
        let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Load from the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    /// The compiled-in defaults (tests start from these).
    pub fn defaults() -> Settings {
        Settings::load(None, std::iter::empty()).expect("the shipped defaults are valid")
    }

    pub fn store_location(&self) -> StoreLocation {
        parse_store_url(&self.store.url).expect("validated at load")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        parse_store_url(&self.store.url).map_err(|m| invalid("store.url", m))?;
        match self.auth.algorithm {
            JwtAlgorithm::HS256 if self.auth.jwt_secret.expose().len() < 16 => {
                return Err(invalid("auth.jwt_secret", "must be at least 16 bytes for HS256"));
            }
            JwtAlgorithm::RS256 if self.auth.jwt_public_key_path.as_os_str().is_empty() => {
                return Err(invalid("auth.jwt_public_key_path", "required when auth.algorithm = \"RS256\""));
            }
            _ => {}
        }
        if self.auth.service_keys.iter().any(|k| k.expose().len() < 16) {
            return Err(invalid("auth.service_keys", "every key must be at least 16 characters"));
        }
        let positive = [
            ("websocket.ping_interval_secs", self.websocket.ping_interval_secs as usize),
            ("websocket.idle_timeout_secs", self.websocket.idle_timeout_secs as usize),
            ("websocket.write_timeout_secs", self.websocket.write_timeout_secs as usize),
            ("websocket.outbound_queue", self.websocket.outbound_queue),
            ("websocket.max_inbound_bytes", self.websocket.max_inbound_bytes),
            ("websocket.replay_page_size", self.websocket.replay_page_size as usize),
            ("websocket.read_buffer_bytes", self.websocket.read_buffer_bytes),
            ("store.batch_max", self.store.batch_max),
            ("store.read_connections", self.store.read_connections),
            ("server.max_body_bytes", self.server.max_body_bytes),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.websocket.idle_timeout_secs <= self.websocket.ping_interval_secs {
            return Err(invalid(
                "websocket.idle_timeout_secs",
                "must be longer than websocket.ping_interval_secs, or every session times out between pings",
            ));
        }
        for origin in &self.websocket.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "websocket.allowed_origins",
                    format!("`{origin}` is not \"*\" or an http(s)://host[:port] origin"),
                ));
            }
        }
        if self.profile == Profile::Production {
            if self.auth.algorithm == JwtAlgorithm::HS256 && self.auth.jwt_secret.expose() == DEV_JWT_SECRET {
                return Err(invalid("auth.jwt_secret", "the development secret is refused in production"));
            }
            if self.auth.service_keys.iter().any(|k| k.expose() == DEV_SERVICE_KEY) {
                return Err(invalid("auth.service_keys", "the development key is refused in production"));
            }
            if self.auth.dev_token_endpoint {
                return Err(invalid("auth.dev_token_endpoint", "must be false in production"));
            }
        }
        Ok(())
    }
}

fn parse_store_url(url: &str) -> Result<StoreLocation, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://data/herald.db".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(StoreLocation::Postgres(url.to_owned()))
    } else {
        Err(format!("`{url}` is neither sqlite://PATH nor postgres://..."))
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
        assert!(e.contains("server") && e.contains("bindd"), "{e}");
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
    fn production_refuses_development_secrets() {
        let e = err(&[("HERALD__PROFILE", "production")]);
        assert!(e.contains("auth.jwt_secret"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::defaults();
        let debug = format!("{s:?}");
        assert!(!debug.contains(DEV_JWT_SECRET));
        assert!(!debug.contains(DEV_SERVICE_KEY));
    }
}
