//! Herald: a real-time notification gateway.
//!
//! # Layout
//!
//! Modules follow one event from broker to browser:
//!
//! - [`ingest`]: the pipeline every transport feeds: HTTP ingest and the RabbitMQ consumer ([`ingest::amqp`]).
//! - [`event`]: decode any envelope shape into one [`event::Event`].
//! - [`rules`]: declarative routing: who gets what notification.
//! - [`inbox`]: the durable store (SQLite embedded; PostgreSQL for several nodes).
//! - [`fanout`]: committed notifications to sessions, here and (through a transport) on other nodes.
//! - [`registry`]: this node's user → sessions map, with bounded outboxes.
//! - [`session`]: one task per WebSocket.
//! - [`protocol`]: the client wire format.
//!
//! Beside them: [`api`] (axum routes), [`accept`] (the accept loop and its connection bounds), [`auth`],
//! [`config`], [`telemetry`], [`trace`] (each event's path, recorded by every stage), [`background`] (threads for
//! deferred work, at a lower priority), [`sqlite_pcache`] (SQLite's page cache, as both SQLite databases use it),
//! [`shutdown`].
//! `ARCHITECTURE.md` maps it with its invariants.

pub mod accept;
pub mod api;
pub mod auth;
pub mod background;
pub mod backoff;
pub mod config;
pub mod event;
pub mod fanout;
pub mod huge_pages;
pub mod inbox;
pub mod ingest;
pub mod postgres_connections;
pub mod protocol;
pub mod registry;
pub mod rules;
pub mod session;
pub mod shutdown;
pub mod sqlite_files;
pub mod sqlite_pcache;
pub mod telemetry;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{AppState, Shared};
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::fanout::Fanout;
use crate::ingest::{Pipeline, Publisher};
use crate::registry::{CloseReason, Registry};
use crate::rules::{Rules, RulesHandle};
use crate::session::SessionDeps;
use crate::telemetry::Health;

/// Run the gateway on `listener` until `shutdown` is cancelled, then drain and return.
pub async fn run(settings: Settings, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(settings, listener, shutdown, Hooks::default()).await
}

/// Fault-injection points for tests (a store that answers slowly, ...). Production runs with none.
#[derive(Default)]
pub struct Hooks {
    /// Wraps the opened store (for example in [`inbox::instrumented::Instrumented`]).
    pub wrap_store: Option<StoreWrapper>,
}

/// Wraps the opened store, once (see [`Hooks::wrap_store`]).
pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn inbox::Store>) -> Arc<dyn inbox::Store> + Send>;

/// [`run`] with [`Hooks`].
pub async fn run_with(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> anyhow::Result<()> {
    start_with(settings, listener, shutdown, hooks).await?.serve().await
}

/// A gateway whose every dependency is open (rules, store, broker consumer, Redis), not serving yet. What
/// fails to open fails [`start`], before anything is served or announced.
pub struct Started {
    settings: Arc<Settings>,
    listener: TcpListener,
    /// The operators' listener (`server.ops_bind`) and what it serves.
    ops: Option<(TcpListener, axum::Router)>,
    shutdown: CancellationToken,
    app: axum::Router,
    registry: Registry,
    store: Arc<dyn inbox::Store>,
    amqp: Option<tokio::task::JoinHandle<()>>,
    tracker: TaskTracker,
    /// The cluster's link, stopped after the store: the drain's commits are published to the other nodes.
    redis: Option<fanout::redis::LinkTask>,
    /// Closed last: the drain records steps too.
    tracer: trace::Tracer,
}

/// Open everything the gateway needs; [`Started::serve`] then serves. `herald serve` prints
/// `herald listening on ...` between the two, so the line means "ready".
pub async fn start(settings: Settings, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<Started> {
    start_with(settings, listener, shutdown, Hooks::default()).await
}

/// [`start`] with [`Hooks`].
pub async fn start_with(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> anyhow::Result<Started> {
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    install_crypto_provider();
    let settings = Arc::new(settings);
    let metrics = telemetry::metrics_handle();
    let auth = Arc::new(Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?);
    let rules = RulesHandle::new(Rules::load_at_start(&settings.rules.path)?, &settings.rules.path);
    let registry = Registry::new();
    let health = Health::default();
    auth.start_key_refresh(&health, &shutdown);
    let pending_trace = trace::recorder(&settings, &settings.cluster.node_name());
    let recorder = pending_trace.recorder().clone();
    let mut redis = None;
    let fanout = if settings.cluster.enabled() {
        // Another node's admin reload: this node reloads its own file (a file that does not compile is refused
        // here as there, and the rules in force stay).
        // Off the Redis link's task: reading and compiling the file would hold up the messages behind it.
        let on_reload: fanout::redis::OnReload = {
            let (rules, runtime) = (rules.clone(), tokio::runtime::Handle::current());
            Arc::new(move || {
                let rules = rules.clone();
                runtime.spawn_blocking(move || {
                    if let Err(e) = rules.reload() {
                        tracing::error!(error = %e, "rules reload asked by another node refused; the rules in force stay");
                    }
                });
            })
        };
        let (transport, task) =
            fanout::redis::start(&settings.cluster, registry.clone(), health.clone(), recorder.clone(), on_reload)
                .map_err(anyhow::Error::msg)?;
        registry.set_presence_hook(transport.clone());
        redis = Some(task);
        Fanout::with_transport(registry.clone(), transport)
    } else {
        Fanout::local(registry.clone())
    }
    .traced(recorder.clone());
    let store = inbox::open(&settings, Some(Arc::new(Publisher::new(fanout.clone()))), health.clone())
        .await
        .context("opening the inbox")?;
    let tracer = trace::open(&settings, pending_trace, &shutdown).await.context("opening the trace")?;
    let store = match hooks.wrap_store {
        Some(wrap) => wrap(store),
        None => store,
    };
    let pipeline = Pipeline::new(rules.clone(), store.clone(), fanout.clone())
        .traced(recorder)
        .frames_up_to(settings.websocket.max_frame_bytes());
    let amqp = settings
        .amqp
        .enabled
        .then(|| ingest::amqp::spawn(settings.amqp.clone(), pipeline.clone(), health.clone(), shutdown.clone()));
    #[cfg(unix)]
    tokio::spawn(reload_rules_on_sighup(pipeline.clone(), shutdown.clone()));
    // Throttled log lines whose repeats no later line reported (the outage ended inside the window).
    tokio::spawn(telemetry::ratelimited::flush_every_window(shutdown.clone()));
    let tracker = TaskTracker::new();
    let user_reads = Arc::new(api::rate::UserRate::new(
        api::rate::Budget::Reads,
        settings.server.user_reads_per_second,
        settings.server.user_reads_burst,
    ));
    let sessions = SessionDeps {
        reads: user_reads.clone(),
        store: store.clone(),
        registry: registry.clone(),
        auth: auth.clone(),
        settings: Arc::new(settings.websocket.clone()),
        shutdown: shutdown.clone(),
    };
    let state = AppState::new(Shared {
        settings: settings.clone(),
        auth,
        store: store.clone(),
        pipeline,
        fanout,
        sessions,
        metrics,
        health,
        dead_letters: ingest::amqp::DeadLetters::new(&settings.amqp),
        trace: tracer.clone(),
        tracker: tracker.clone(),
        ingest_events: Default::default(),
        ingest_shares: api::IngestShares::new(settings.server.ingest_max_concurrency_per_key),
        user_writes: api::rate::UserRate::new(
            api::rate::Budget::Writes,
            settings.server.user_writes_per_second,
            settings.server.user_writes_burst,
        ),
        user_reads,
    });
    tracing::info!(
        addr = %listener.local_addr()?, rules = rules.current().len(), store = %redact_url(&settings.store.url),
        max_connections = settings.server.connection_cap(), "herald started"
    );
    let ops = match settings.server.ops_bind {
        Some(addr) => {
            let ops = TcpListener::bind(addr).await.with_context(|| format!("binding server.ops_bind = {addr}"))?;
            tracing::info!(addr = %ops.local_addr()?, "serving /healthz and /readyz (also on server.bind) and /metrics (only here) on server.ops_bind");
            Some((ops, api::ops_router(state.clone())))
        }
        None => None,
    };
    let app = api::router(state);
    Ok(Started { app, settings, listener, ops, shutdown, registry, store, amqp, tracker, redis, tracer })
}

/// How long the store may take to close after the grace period (its last group commit, its connections). The
/// process stops within `server.shutdown_grace_secs` and this after SIGTERM.
pub const STORE_CLOSE: Duration = Duration::from_secs(5);

impl Started {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until the shutdown token is cancelled, then drain and return.
    pub async fn serve(self) -> anyhow::Result<()> {
        let Started { settings, listener, ops, shutdown, app, registry, store, amqp, tracker, redis, tracer } = self;
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        // One grace period for the whole drain, from the signal: each phase waits only for what is left of it.
        let drain_deadline = async {
            shutdown.cancelled().await;
            tokio::time::Instant::now() + grace
        };
        // The operators' listener stops accepting with the clients' one: an orchestrator stops probing a node
        // it is stopping, and a probe in flight is answered within the grace.
        let ops_served = async {
            if let Some((ops_listener, ops_app)) = ops {
                accept::serve(ops_listener, ops_app, accept::Bounds::ops(&settings.server), shutdown.clone(), grace)
                    .await;
            }
        };
        let ((), (), deadline) = tokio::join!(
            accept::serve(listener, app, accept::Bounds::from_settings(&settings.server), shutdown.clone(), grace),
            ops_served,
            drain_deadline
        );

        // The consumer sees the same token: it finishes its batch (commit, fan-out, ack) and closes.
        if let Some(amqp) = amqp {
            if tokio::time::timeout_at(deadline, amqp).await.is_err() {
                tracing::warn!("the amqp consumer did not stop within the grace period; its batch will be redelivered");
            }
        }
        // Sessions watch the same token and close with 1001; this covers any that were mid-upgrade.
        registry.close_all(CloseReason::Shutdown);
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
            tracing::warn!(left = tracker.len(), "sessions still open after the grace period");
        }
        // The store's last commits and its connections, bounded too: a database that stopped answering must not
        // keep the process from exiting (what it did not commit was not acknowledged; brokers redeliver it).
        let closing = deadline.max(tokio::time::Instant::now()) + STORE_CLOSE;
        if tokio::time::timeout_at(closing, store.close()).await.is_err() {
            tracing::warn!(
                "the store did not close within the grace period and {}s more; exiting without it",
                STORE_CLOSE.as_secs()
            );
        }
        // The commits of the drain reach the other nodes: the link publishes what they queued, then leaves (until
        // now it ran, its presence view too, whatever the signal). Within what is left of the store's time.
        // What is left of the closing time for each of the last two, at least a second.
        let left = || closing.max(tokio::time::Instant::now() + Duration::from_secs(1));
        if let Some(redis) = redis {
            redis.stop(left()).await;
        }
        // The steps the drain recorded, written; the trace's file left whole (its WAL checkpointed into it).
        let _ = tokio::time::timeout_at(left(), tracer.close()).await;
        // Last: what the throttled log lines counted and no line reported yet (the stop's own failures too).
        telemetry::ratelimited::flush(true);
        tracing::info!("herald stopped");
        Ok(())
    }
}

/// SIGHUP reloads the rules file; a bad file is logged and the rules in force stay.
#[cfg(unix)]
async fn reload_rules_on_sighup(pipeline: Pipeline, shutdown: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("SIGHUP handler not installed: reload rules through the admin endpoint");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                if let Err(e) = pipeline.reload_rules() {
                    tracing::error!(error = %e, "rules reload refused; the rules in force stay");
                }
            }
        }
    }
}

/// rustls's process-wide crypto provider: ring, as sqlx and reqwest use. Two providers are compiled in (lapin's
/// TLS brings aws-lc-rs), and a client that takes rustls's default (redis's `rediss://`) panics unless one is
/// installed. Idempotent: the first install wins.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection URL fit for logs: the password replaced, in the user info and in query parameters whose name
/// says secret (`?password=`, `sslpassword=`, `token=`, `api_key=`, `code=`, `sig=`, …: sqlx and libpq take a
/// password there, and a JWKS address may carry a function key or a signature). Read as the clients read it (the
/// `url` crate); a URL it cannot parse, or one whose user info it reads as a path (`postgres:/u:pw@h`), has
/// everything between its scheme and the last `@` masked, and its query; a libpq `key=value` string (`host=db
/// password=…`) has everything from its first secret key's value on masked.
pub fn redact_url(raw: &str) -> String {
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        // `auth_mechanism` (an AMQP URL's SASL mechanism, e.g. `external`) names how to log in, not a secret.
        (["pass", "secret", "token", "key", "auth", "credential", "signature"].iter().any(|s| name.contains(s))
            && name != "auth_mechanism")
            || ["code", "sig"].contains(&name.as_str())
    };
    // `postgres:/u:pw@h` parses, with its user info read as a path: it is masked as text that did not parse.
    if let Some(mut url) = url::Url::parse(raw).ok().filter(|u| u.has_authority() || !raw.contains('@')) {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(name, _)| secret(&name)) {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(name, value)| {
                    let value = if secret(&name) { "***".to_owned() } else { value.into_owned() };
                    (name.into_owned(), value)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return url.to_string();
    }
    if !raw.contains("://") {
        // libpq's `key=value` form: from the first secret key on (a quoted value may hold spaces), nothing shown.
        let words: Vec<&str> = raw.split_whitespace().collect();
        let secret_key = |i: usize| {
            let w = words[i];
            let key = w.split_once('=').map_or(w, |(k, _)| k);
            let assigned = w.contains('=') || words.get(i + 1).is_some_and(|next| next.starts_with('='));
            (assigned && !key.is_empty() && secret(key)).then_some(key)
        };
        if let Some((i, key)) = (0..words.len()).find_map(|i| secret_key(i).map(|key| (i, key))) {
            let kept = words[..i].join(" ");
            return format!("{kept}{}{key}=***", if kept.is_empty() { "" } else { " " });
        }
    }
    let masked = match (raw.find("://"), raw.find(':'), raw.rfind('@')) {
        (Some(scheme), _, Some(at)) if at > scheme => format!("{}***{}", &raw[..scheme + 3], &raw[at..]),
        (None, Some(colon), Some(at)) if at > colon => format!("{}***{}", &raw[..=colon], &raw[at..]),
        (None, _, Some(at)) => format!("***{}", &raw[at..]),
        _ => raw.to_owned(),
    };
    // Then the query goes too: its parameters cannot be told apart reliably in what did not parse.
    match masked.find('?') {
        Some(q) => format!("{}?***", &masked[..q]),
        None => masked,
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn a_password_in_the_user_info_or_in_a_query_parameter_is_masked() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        let masked = redact_url("postgres://u@h/db?password=Pw1&sslmode=require&sslpassword=x");
        assert_eq!(masked, "postgres://u@h/db?password=***&sslmode=require&sslpassword=***");
        assert_eq!(redact_url("redis://:pw@h:6379/0?PASSWORD=x"), "redis://:***@h:6379/0?PASSWORD=***");
        assert_eq!(redact_url("postgres://u@h/db?application_name=a@b"), "postgres://u@h/db?application_name=a@b");
        assert_eq!(redact_url("sqlite:///var/lib/herald.db"), "sqlite:///var/lib/herald.db");
        let external = "amqps://mq:5671/%2f?auth_mechanism=external&heartbeat=30";
        assert_eq!(redact_url(external), external, "how to log in is not a secret");
        assert_eq!(
            redact_url("amqps://mq/%2f?auth_token=T&auth_mechanism=plain"),
            "amqps://mq/%2f?auth_token=***&auth_mechanism=plain"
        );
        // Unparsable: the query is masked whole.
        assert_eq!(redact_url("https://[bad/keys?code=K1"), "https://[bad/keys?***");
        // A JWKS address behind a function key or a signed URL.
        assert_eq!(redact_url("https://idp/keys?code=K1&v=2"), "https://idp/keys?code=***&v=2");
        assert_eq!(
            redact_url("https://idp/keys?sig=S&se=1&X-Amz-Signature=A"),
            "https://idp/keys?sig=***&se=1&X-Amz-Signature=***"
        );
        // Not in URL form: a libpq connection string, a scheme missing a slash or its slashes.
        assert_eq!(redact_url("host=db user=herald password=s3cret dbname=herald"), "host=db user=herald password=***");
        assert_eq!(redact_url("host=db password='s3 cret' dbname=x"), "host=db password=***");
        assert_eq!(redact_url("host=db password = s3cret"), "host=db password=***");
        assert_eq!(redact_url("postgres:/herald:s3cret@db/herald"), "postgres:***@db/herald");
        assert_eq!(redact_url("postgresql:herald:s3cret@db"), "postgresql:***@db");
        assert_eq!(redact_url("herald:s3cret@db"), "herald:***@db");
        // A password holding `?` or `/` (not percent-encoded): nothing of it is printed.
        for raw in ["postgres://u:pa?ss@h/db", "postgres://u:p/w?x@h/db"] {
            let masked = redact_url(raw);
            assert!(!masked.contains("pa?ss") && !masked.contains("p/w") && !masked.contains("?x"), "{raw}: {masked}");
        }
    }
}

/// The module boundaries ARCHITECTURE.md states, checked on the source itself: which files may use which crate,
/// and which modules the trace may depend on. Comments and string literals are not code (a log target written
/// `"lapin::returned_messages"` uses no lapin API), so they are blanked before looking.
#[cfg(test)]
mod boundaries {
    use std::path::Path;

    /// Every `.rs` file under `src/`, as (`src/...` path, its code with comments and literals blanked).
    fn sources() -> Vec<(String, String)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.push((name, code_of(&std::fs::read_to_string(&path).unwrap())));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        walk(root, &root.join("src"), &mut out);
        assert!(out.len() > 40, "read the sources: {}", out.len());
        out
    }

    /// `text` with comments and the insides of string and char literals replaced by spaces.
    fn code_of(text: &str) -> String {
        let b: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == '/' && b.get(i + 1).copied() == Some('/') {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            } else if b[i] == '/' && b.get(i + 1).copied() == Some('*') {
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1).copied() == Some('/')) {
                    i += 1;
                }
                i += 2;
            } else if b[i] == 'r'
                && (b.get(i + 1).copied() == Some('"') || b.get(i + 1).copied() == Some('#'))
                && !ident(b.get(i.wrapping_sub(1)))
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == '#').count();
                if b.get(i + 1 + hashes) != Some(&'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                i += 2 + hashes;
                while i < b.len()
                    && !(b[i] == '"' && b[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes)
                {
                    i += 1;
                }
                i += 1 + hashes;
                out.push_str("\"\"");
            } else if b[i] == '"' {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    i += if b[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            } else if b[i] == '\''
                && (b.get(i + 2).copied() == Some('\'')
                    || (b.get(i + 1).copied() == Some('\\') && b[i + 2..].contains(&'\'')))
            {
                // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote right after.
                i += 1;
                while i < b.len() && b[i] != '\'' {
                    i += if b[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn ident(c: Option<&char>) -> bool {
        c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
    }

    /// Whether `code` holds `path` at the start of a path (not the tail of a longer name or path: the crate
    /// `redis`, not `fanout::redis`) with `then` true of the code after it.
    fn names(code: &str, path: &str, then: impl Fn(&str) -> bool) -> bool {
        code.match_indices(path).any(|(at, _)| {
            let before = code[..at].chars().next_back();
            !ident(before.as_ref()) && before != Some(':') && then(&code[at + path.len()..])
        })
    }

    /// The files whose code uses the crate `krate` (`krate::...`).
    fn users_of(sources: &[(String, String)], krate: &str) -> Vec<String> {
        let crate_path = |code: &str| names(code, krate, |after| after.starts_with("::"));
        sources.iter().filter(|(_, code)| crate_path(code)).map(|(name, _)| name.clone()).collect()
    }

    #[test]
    fn only_the_amqp_module_uses_lapin() {
        let users = users_of(&sources(), "lapin");
        assert!(!users.is_empty(), "the AMQP module uses lapin");
        let outside: Vec<&String> = users.iter().filter(|f| !f.starts_with("src/ingest/amqp/")).collect();
        assert!(outside.is_empty(), "lapin used outside src/ingest/amqp/: {outside:?}");
    }

    #[test]
    fn only_the_store_and_trace_backends_use_the_database_crates() {
        let sources = sources();
        let allowed = |f: &str| {
            f.starts_with("src/inbox/")
                || f.starts_with("src/trace/")
                // SQLite's file helpers and page cache, and PostgreSQL's bounded connections, used by both; config
                // parses a PostgreSQL URL with sqlx.
                || ["src/sqlite_files.rs", "src/sqlite_pcache.rs", "src/postgres_connections.rs", "src/config.rs"]
                    .contains(&f)
        };
        for krate in ["sqlx", "rusqlite"] {
            let users = users_of(&sources, krate);
            assert!(users.iter().any(|f| f.starts_with("src/inbox/")), "the inbox uses {krate}");
            let outside: Vec<&String> = users.iter().filter(|f| !allowed(f)).collect();
            assert!(outside.is_empty(), "{krate} used outside the store and trace backends: {outside:?}");
        }
    }

    #[test]
    fn only_fanout_redis_uses_the_redis_crate_and_names_channels() {
        let sources = sources();
        let users = users_of(&sources, "redis");
        assert!(!users.is_empty(), "fanout::redis uses the redis crate");
        let outside: Vec<&String> = users.iter().filter(|f| !f.starts_with("src/fanout/redis")).collect();
        assert!(outside.is_empty(), "the redis crate used outside src/fanout/redis: {outside:?}");
        // Channel names are built from `cluster.channel_prefix`, which only config (its setting) and fanout::redis
        // read.
        let prefix: Vec<&String> = sources
            .iter()
            .filter(|(f, code)| {
                code.contains("channel_prefix") && f != "src/config.rs" && !f.starts_with("src/fanout/redis")
            })
            .map(|(f, _)| f)
            .collect();
        assert!(prefix.is_empty(), "channel names built outside src/fanout/redis: {prefix:?}");
    }

    #[test]
    fn the_trace_depends_on_no_pipeline_stage() {
        let stages = ["ingest", "event", "rules", "inbox", "fanout", "registry", "session", "protocol", "api"];
        for (file, code) in sources().iter().filter(|(f, _)| f.starts_with("src/trace/") || f == "src/trace.rs") {
            for stage in stages {
                // `crate::event` and what follows it, not `crate::events`.
                let uses = names(code, &format!("crate::{stage}"), |after| !ident(after.chars().next().as_ref()));
                assert!(!uses, "{file} depends on the pipeline stage `{stage}`");
            }
            assert!(!code.contains("crate::{"), "{file}: a grouped `crate::{{..}}` import hides what it depends on");
        }
    }

    #[test]
    fn comments_and_literals_are_not_code() {
        let code = code_of("let a = \"lapin::x\"; // lapin::y\nlet b = r#\"redis::z\"#; /* sqlx:: */ let c = '\"'; fn f<'a>() { lapin::go() }");
        assert!(!code.contains("lapin::x") && !code.contains("lapin::y") && !code.contains("redis::z"), "{code}");
        assert!(!code.contains("sqlx::") && code.contains("fn f<'a>() { lapin::go() }"), "{code}");
    }
}
