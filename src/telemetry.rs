//! Telemetry: tracing (pretty on a terminal, JSON in production), the Prometheus recorder with a description
//! of every metric ([`METRICS`]), and the health board that `/readyz` reads (mirrored as `herald_ready`).
//!
//! Invariants: metric labels never carry user ids (unbounded cardinality, and personal data); the recorder is
//! installed once per process, so several gateways in one test binary share it; every metric the code emits is
//! in [`METRICS`], so `/metrics` has a `# HELP` line for each family (`tests/it/metrics.rs` greps `src/` for
//! metric names and fails on one missing here), and `deploy/` queries only names listed here
//! (`scripts/check-deploy.sh`). [`stats`] reads the same text back as JSON for the admin console.

pub mod ratelimited;
pub mod stats;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{filter::LevelFilter, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Start logging. Safe to call more than once (later calls do nothing).
pub fn init_tracing(s: &LogSettings) {
    // Checked at load (`config::Settings::load` refuses a RUST_LOG that `log.filter` would refuse); empty is unset.
    let raw =
        std::env::var(EnvFilter::DEFAULT_ENV).ok().filter(|v| !v.trim().is_empty() && EnvFilter::try_new(v).is_ok());
    let filter = EnvFilter::new(capped(raw.as_deref().unwrap_or(&s.filter)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json_logs(s) { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Whether the log is JSON lines on stdout (`log.format`; `auto`: when stdout is not a terminal).
pub fn json_logs(s: &LogSettings) -> bool {
    match s.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    }
}

/// The line that says a node serves, printed on stdout once whatever the log filter (tests and scripts read the
/// address from it, as "ready"): `herald listening on http://ADDR`, or with JSON logs that text as the `message`
/// of a JSON line shaped like the log's own, with the URL in `address`, so that every line on stdout parses.
pub fn listening_line(json: bool, addr: std::net::SocketAddr) -> String {
    let text = format!("herald listening on http://{addr}");
    if !json {
        return text;
    }
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "INFO",
        "message": text,
        "address": format!("http://{addr}"),
        "target": "herald",
    })
    .to_string()
}

/// Crates that log what passes through them at `trace`: WebSocket messages (a token sent in an `auth` frame,
/// every notification) and AMQP frames (bodies, the broker's credentials).
const PAYLOAD_LOGGERS: [&str; 4] = ["tungstenite", "tokio_tungstenite", "lapin", "amq_protocol"];

/// Targets that log message bodies at a level an ordinary filter lets through, and the level they are held at:
/// lapin writes every message the broker returns (unroutable, `mandatory`: a dead letter, a re-drive) at `warn`,
/// with its whole body and headers (events, personal data). Herald reports those failures itself, without the body.
const BODY_WARNERS: [(&str, &str); 1] = [("lapin::returned_messages", "error")];

/// `filter` with those crates held at the filter's own default level but never above `debug`, and
/// [`BODY_WARNERS`] at their level, unless it names them itself: `RUST_LOG=trace`, the way to debug Herald, and
/// `RUST_LOG=info` must not write tokens and users' notifications to the log, and the cap must not raise them
/// above what the rest logs (`info`: not their `debug` records, with a close reason a client chose).
fn capped(filter: &str) -> String {
    // The targets the filter's directives name (`target[span{field}]=level`; a bare level names none).
    let targets: Vec<&str> = filter
        .split(',')
        .filter_map(|d| d.split_once('=').map(|(target, _)| target.split('[').next().unwrap_or(target).trim()))
        .collect();
    let named = |krate: &str| targets.iter().any(|t| *t == krate || t.starts_with(&format!("{krate}::")));
    // The level of what no directive names: the last bare level. Without one, nothing unnamed logs, these crates
    // included, and they need no cap.
    let default =
        filter.split(',').map(str::trim).filter(|d| !d.is_empty()).rev().find_map(|d| d.parse::<LevelFilter>().ok());
    let cap = default.map(|level| level.min(LevelFilter::DEBUG).to_string().to_lowercase());
    let mut out = filter.to_owned();
    let caps = PAYLOAD_LOGGERS.iter().filter(|k| !named(k)).filter_map(|k| Some((*k, cap.as_deref()?)));
    let body_caps = BODY_WARNERS.iter().copied().filter(|(target, _)| !targets.contains(target));
    for (target, level) in caps.chain(body_caps) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(target);
        out.push('=');
        out.push_str(level);
    }
    out
}

/// The process-wide Prometheus handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding apps); then ours only renders empty.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

/// The recorder with Herald's histogram buckets.
fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    let latency = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    // HTTP requests may last up to server.ingest_timeout_secs (30 s; /readyz 2 s when the store is down): past
    // 2.5 s the latency buckets would say nothing of them. A full name is matched before a suffix.
    let http = [&latency[..], &[5.0, 10.0, 30.0]].concat();
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("herald_http_request_duration_seconds".into()), &http))
        .expect("buckets are non-empty")
        .build_recorder()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, kind, unit (where one applies) and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric { name, kind: Kind::Counter, unit: None, help }
}
const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric { name, kind: Kind::Gauge, unit: None, help }
}
const fn seconds(name: &'static str, help: &'static str) -> Metric {
    Metric { name, kind: Kind::Histogram, unit: Some(Unit::Seconds), help }
}

/// Every metric Herald emits, in pipeline order. Names are literal where they are emitted, so a test can find
/// them all.
pub const METRICS: &[Metric] = &[
    // Ingest (both transports).
    counter("herald_ingest_events_total", "Events ingested, by transport (http, amqp) and outcome (stored, duplicate, purged, ignored, unmatched, live, unresolved_recipient); over HTTP also by `key`, the service key's configured id (empty for a user)."),
    counter("herald_ingest_errors_total", "Events refused (HTTP 4xx) or dead-lettered (AMQP), by transport and reason; over HTTP also by `key`, the service key's id (empty when there is none)."),
    counter("herald_events_unmatched_total", "Events no rule matched (not stored)."),
    counter("herald_events_unresolved_total", "Events addressed through an alias no user is known for yet."),
    counter("herald_live_events_total", "Live-only events pushed without being stored."),
    counter("herald_rules_reloads_total", "Successful rules reloads (SIGHUP, the admin endpoint, or another node's admin reload)."),
    gauge("herald_rules_info", "1 for the rules in force, by `digest` (the first 12 hex digits of the file's SHA-256), 0 for those they replaced: nodes showing different digests run different rules."),
    counter("herald_notifications_stored_total", "Notifications committed to the inbox, by kind (targeted, broadcast)."),
    counter("herald_notifications_muted_total", "Targeted notifications stored muted (their type muted by the recipient's preferences): listed, not pushed, not counted."),
    // AMQP consumer.
    gauge("herald_amqp_connected", "1 while the AMQP consumer is connected and consuming, else 0."),
    counter("herald_amqp_consumer_panics_total", "AMQP consumer sessions ended by a panic (a bug): the broker requeued their deliveries and the consumer reconnected."),
    counter("herald_amqp_reconnects_total", "AMQP connections lost while consuming (once per loss, however many attempts reconnecting takes)."),
    counter("herald_amqp_messages_consumed_total", "AMQP messages received by the consumer."),
    counter("herald_amqp_messages_redelivered_total", "AMQP messages received with the redelivered flag."),
    counter("herald_amqp_messages_requeued_total", "AMQP messages requeued (a batch not committed)."),
    counter("herald_amqp_messages_acked_total", "AMQP messages acknowledged after their commit."),
    counter("herald_amqp_messages_dead_lettered_total", "AMQP messages dead-lettered, by reason."),
    counter(
        "herald_amqp_messages_retried_total",
        "AMQP messages held in the retry queue to be routed again (an alias nobody taught yet), by reason.",
    ),
    counter(
        "herald_amqp_dead_letters_redriven_total",
        "Dead letters an operator re-drove, by outcome (`redriven`: republished and removed; `failed`: kept).",
    ),
    counter("herald_amqp_store_retries_total", "Inbox commits of an AMQP batch that failed and were retried."),
    gauge("herald_amqp_queue_messages", "Messages ready in the consumed queue (consumer lag), by queue."),
    gauge(
        "herald_amqp_retry_queue_messages",
        "Events waiting in the retry queue for an alias nobody has taught yet (not consumer lag).",
    ),
    gauge("herald_amqp_queue_consumers", "Consumers attached to the consumed queue, by queue."),
    // Store.
    counter("herald_store_write_errors_total", "Inbox writes that failed, by kind (unavailable: the store refused; internal: one bad write)."),
    counter("herald_pruned_rows_total", "Rows deleted by retention, by kind."),
    counter("herald_retention_failures_total", "Retention runs that failed (retried at the next interval; readiness is not affected)."),
    // The per-event trace (src/trace/).
    counter("herald_trace_recorded_total", "Trace steps written by this node's trace writer."),
    counter("herald_trace_dropped_total", "Trace steps dropped because the trace buffer (trace.buffer) was full: recording never waits."),
    counter("herald_trace_sampled_out_total", "Trace steps not kept by trace.sample_rate."),
    counter("herald_trace_write_errors_total", "Trace steps lost because the trace store refused their batch."),
    counter("herald_trace_pruned_rows_total", "Trace steps deleted by trace retention (trace.retention_days)."),
    // Fan-out across nodes (Redis).
    counter("herald_redis_published_total", "Messages published to Redis for other nodes."),
    counter("herald_redis_received_total", "Messages received from other nodes over Redis and delivered locally."),
    counter("herald_redis_dropped_total", "Publishes dropped on a full Redis queue (sessions resync)."),
    counter("herald_redis_reconnects_total", "Redis reconnections (local sessions resync from the inbox)."),
    counter(
        "herald_redis_resubscribed_total",
        "Cluster mode: user channels subscribed again after their slot moved to another shard.",
    ),
    gauge("herald_cluster_nodes", "Nodes reporting presence, as of the last presence request."),
    gauge("herald_cluster_sessions", "Sessions across the cluster, as of the last presence request."),
    // Sessions.
    gauge("herald_connections", "Open WebSocket sessions on this node, from the upgrade to the close."),
    gauge("herald_users_online", "Users with at least one session on this node, as of the last scrape."),
    counter("herald_sessions_opened_total", "WebSocket sessions opened."),
    counter("herald_sessions_closed_total", "WebSocket sessions closed, by reason."),
    counter("herald_ws_rejected_total", "WebSocket handshakes refused before the upgrade, by reason."),
    counter("herald_session_overflows_total", "Frames refused by a full session outbox."),
    counter("herald_frames_too_large_total", "Stored notifications not pushed because their frame is over what a session can carry (rows stored before ingest refused such frames, or limits lowered since)."),
    counter("herald_session_resyncs_total", "Session resyncs from the inbox, by reason."),
    counter("herald_session_subscription_waits_expired_total", "Sessions that read the inbox before their user's channel from the other nodes went live (it took over 2 s: Redis slow or reconnecting)."),
    counter("herald_session_gap_fills_total", "Live frames held while a session replayed a gap from the inbox."),
    counter("herald_session_store_timeouts_total", "Session store reads that outlived websocket.store_timeout_secs."),
    counter("herald_session_truncated_replays_total", "Resumes from below the kept history (a truncated frame was sent)."),
    counter("herald_notifications_replayed_total", "Notifications sent to sessions from the inbox (replay, resync)."),
    counter("herald_notifications_delivered_total", "Live notifications written to sessions."),
    seconds("herald_delivery_latency_seconds", "Time from a notification's commit to its write on a session."),
    // Connections (the accept loop: caps and the header-read timeout).
    gauge("herald_connections_open", "TCP connections open now (HTTP and upgraded WebSockets)."),
    counter("herald_connections_refused_total", "Connections closed at accept, by reason: `total` or `per_ip` (the clients' caps), `ops` (the operators' listener's own)."),
    counter("herald_http_header_timeouts_total", "Connections closed because the request headers did not arrive within server.header_read_timeout_secs."),
    counter("herald_write_stalls_total", "Connections closed because the peer took nothing Herald wrote for server.write_stall_timeout_secs."),
    counter("herald_accept_errors_total", "Errors accepting a connection (e.g. out of file descriptors)."),
    // Auth (auth::jwks).
    counter("herald_jwks_refreshes_total", "Fetches of the identity provider's key set (JWKS), by outcome (ok, error: the last good set is kept)."),
    gauge("herald_jwks_keys", "Usable keys in the JWKS key set in force."),
    // HTTP (api::http_metrics), readiness.
    counter("herald_http_requests_total", "HTTP requests answered, by method, matched route template and status."),
    seconds("herald_http_request_duration_seconds", "HTTP request handling time until the response head, by method and matched route template."),
    gauge("herald_ready", "1 while every required readiness check is ok (what /readyz answers 200 for: the broker and Redis only degrade a node), else 0."),
    gauge("herald_component_ready", "1 while a readiness check (store_writes, amqp, redis, jwks) is ok, else 0, by component."),
];

/// Metric handles held per label combination, registered on first use: a labelled `counter!` or `histogram!`
/// builds its key and looks it up in the recorder's registry on every call (hashing and comparing each label;
/// 1.5k of a targeted event's 330k instructions in callgrind), where a held handle is one atomic add. Keyed by
/// one text label (a route template, a service key's id: a bounded set) and a pair of static labels, so a lookup
/// allocates nothing. A handle belongs to the recorder installed when it was registered: build one after
/// [`metrics_handle`], as the API's state does.
pub struct HeldHandles<H> {
    map: std::sync::RwLock<std::collections::HashMap<Box<str>, ByLabels<H>>>,
}

/// One text label's handles, by the static pair.
type ByLabels<H> = std::collections::HashMap<(&'static str, u16), H>;

impl<H> Default for HeldHandles<H> {
    fn default() -> Self {
        HeldHandles { map: Default::default() }
    }
}

impl<H: Clone> HeldHandles<H> {
    /// The handle for (`text`, `labels`), registered by `register` the first time.
    pub fn get(&self, text: &str, labels: (&'static str, u16), register: impl FnOnce() -> H) -> H {
        if let Some(h) = self.map.read().expect("metric handles poisoned").get(text).and_then(|m| m.get(&labels)) {
            return h.clone();
        }
        let mut map = self.map.write().expect("metric handles poisoned");
        map.entry(text.into()).or_default().entry(labels).or_insert_with(register).clone()
    }
}

/// Give every metric its `# HELP` (and unit) on the installed recorder. Called once, where it is installed.
fn describe_metrics() {
    for m in METRICS {
        let (name, help) = (m.name, m.help);
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// Why the process can no longer recover by itself, once an essential thread died ([`essential`]).
static LIVENESS_FAILURE: OnceLock<&'static str> = OnceLock::new();

/// `None` while the process is alive in the liveness probe's sense; otherwise what stopped (`/healthz` answers
/// `503` with it, so an orchestrator restarts the process instead of leaving a node that refuses every write).
pub fn liveness_failure() -> Option<&'static str> {
    LIVENESS_FAILURE.get().copied()
}

/// Run the body of an essential thread (the store's writer, which every write goes through). A panic in it is
/// logged and fails liveness for good ([`liveness_failure`]: `stopped` names what, never the panic's text, which
/// may quote data); the thread then ends as it would have.
pub fn essential<T>(stopped: &'static str, body: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(done) => Some(done),
        Err(panic) => {
            essential_failed(stopped, panic);
            None
        }
    }
}

/// What a caught panic said (its `&str` or `String` payload; empty for any other).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// An essential thread's body panicked with `panic` ([`essential`]; an async body catches its own).
pub fn essential_failed(stopped: &'static str, panic: Box<dyn std::any::Any + Send>) {
    tracing::error!(
        panic = panic_message(&*panic),
        "{stopped}: the process cannot recover by itself; /healthz now fails"
    );
    let _ = LIVENESS_FAILURE.set(stopped);
}

/// One dependency's state, as `/readyz` shows it.
#[derive(Debug, Clone)]
pub struct Component {
    pub ok: bool,
    pub detail: String,
    /// Whether the node is ready only while this is ok. One that is not (the broker, Redis) only degrades it:
    /// HTTP ingest, sessions and the REST inbox keep serving without it, and a load balancer routing around
    /// every node at once for a broker or Redis blip would take all of that down with it.
    pub required: bool,
}

/// Components (broker, Redis, the store's last write: `inbox::Monitored`) report here; `/readyz` reads. Each
/// change is mirrored in `herald_component_ready{component}` and `herald_ready` (every required one ok), so an
/// alert sees what `/readyz` answers without probing it (the store's ping is not there: its probe write fails on
/// the same faults). Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, Component>>>,
}

impl Health {
    /// Report a component the node needs to be ready (required unless [`Health::optional`] registered it).
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let mut components = self.components.lock().expect("health poisoned");
        let required = components.get(name).is_none_or(|c| c.required);
        components.insert(name, Component { ok, detail: detail.into(), required });
        Self::publish(&components, name, ok);
    }

    /// Register a component the node serves without (down, it is degraded, not unready), not ok yet.
    pub fn optional(&self, name: &'static str, detail: impl Into<String>) {
        let mut components = self.components.lock().expect("health poisoned");
        components.insert(name, Component { ok: false, detail: detail.into(), required: false });
        Self::publish(&components, name, false);
    }

    /// Under the board's lock, so concurrent changes reach the gauges in the order they reached the board.
    fn publish(components: &BTreeMap<&'static str, Component>, name: &'static str, ok: bool) {
        let ready = components.values().all(|c| c.ok || !c.required);
        metrics::gauge!("herald_component_ready", "component" => name).set(if ok { 1.0 } else { 0.0 });
        metrics::gauge!("herald_ready").set(if ready { 1.0 } else { 0.0 });
    }

    pub fn snapshot(&self) -> Vec<(&'static str, Component)> {
        self.components.lock().expect("health poisoned").iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ingest may take up to its 30 s timeout: the HTTP histogram tells 3 s from 25 s; the other latencies
    /// keep buckets up to 2.5 s.
    #[test]
    fn http_request_durations_are_bucketed_up_to_the_ingest_timeout() {
        let recorder = recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("herald_http_request_duration_seconds").record(25.0);
            metrics::histogram!("herald_delivery_latency_seconds").record(0.001);
        });
        let text = handle.render();
        for (line, present) in [
            (r#"herald_http_request_duration_seconds_bucket{le="10"} 0"#, true),
            (r#"herald_http_request_duration_seconds_bucket{le="30"} 1"#, true),
            (r#"herald_delivery_latency_seconds_bucket{le="2.5"} 1"#, true),
            (r#"herald_delivery_latency_seconds_bucket{le="30"} 1"#, false),
        ] {
            assert_eq!(text.lines().any(|l| l == line), present, "{line} in\n{text}");
        }
    }

    #[test]
    fn held_handles_register_each_label_combination_once_and_count_into_it() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut registered = 0;
        metrics::with_local_recorder(&recorder, || {
            let held = HeldHandles::default();
            for (route, status) in [("/a", 200), ("/a", 200), ("/a", 404), ("/b", 200), ("/a", 200)] {
                held.get(route, ("GET", status), || {
                    registered += 1;
                    metrics::counter!("herald_http_requests_total", "route" => route.to_owned(), "status" => status.to_string())
                })
                .increment(1);
            }
        });
        assert_eq!(registered, 3, "one registration per (route, method, status)");
        let text = handle.render();
        for line in [
            r#"herald_http_requests_total{route="/a",status="200"} 3"#,
            r#"herald_http_requests_total{route="/a",status="404"} 1"#,
            r#"herald_http_requests_total{route="/b",status="200"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    fn gauge_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
    }

    #[test]
    fn ready_gauge_is_zero_while_a_required_component_is_down_and_an_optional_one_only_degrades() {
        // A recorder of its own (thread-local), so other tests' health boards cannot move these gauges.
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let health = Health::default();
        let ready = |text: &str| gauge_line(text, "herald_ready").map(str::to_owned);
        metrics::with_local_recorder(&recorder, || {
            health.set("store_writes", true, "writable");
            health.optional("redis", "connecting");
        });
        let text = handle.render();
        assert_eq!(ready(&text).as_deref(), Some("herald_ready 1"), "Redis down only degrades: {text}");
        assert!(text.contains(r#"herald_component_ready{component="redis"} 0"#), "{text}");
        assert!(text.contains(r#"herald_component_ready{component="store_writes"} 1"#), "{text}");

        // Reported again later, an optional component stays optional.
        metrics::with_local_recorder(&recorder, || {
            health.set("redis", false, "reconnecting");
            health.set("store_writes", false, "last write failed");
        });
        let text = handle.render();
        assert_eq!(ready(&text).as_deref(), Some("herald_ready 0"), "{text}");
        assert!(health.snapshot().iter().any(|(n, c)| *n == "redis" && !c.required));

        metrics::with_local_recorder(&recorder, || health.set("store_writes", true, "writable"));
        let text = handle.render();
        assert_eq!(ready(&text).as_deref(), Some("herald_ready 1"), "{text}");
        assert!(text.contains(r#"herald_component_ready{component="redis"} 0"#), "{text}");
    }
}

#[cfg(test)]
mod filter_tests {
    use super::capped;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn the_listening_line_is_plain_text_or_one_json_line_with_the_address() {
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(super::listening_line(false, addr), "herald listening on http://127.0.0.1:8080");
        let line = super::listening_line(true, addr);
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "herald listening on http://127.0.0.1:8080");
        assert_eq!(v["address"], "http://127.0.0.1:8080");
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok(), "{line}");
    }

    #[test]
    fn trace_logging_holds_the_crates_that_log_payloads_at_debug_unless_named() {
        let f = capped("trace");
        assert!(f.starts_with("trace,") && f.contains("tungstenite=debug") && f.contains("lapin=debug"), "{f}");
        assert!(EnvFilter::try_new(&f).is_ok(), "{f}");
        let named = capped("info,tungstenite=trace");
        let directives: Vec<&str> = named.split(',').collect();
        assert!(directives.contains(&"tungstenite=trace") && !directives.contains(&"tungstenite=debug"), "{named}");
        assert!(!capped("").contains("tungstenite"), "an empty filter logs none of them: nothing to hold");
        let other = capped("trace,tokio_tungstenite=trace");
        assert!(other.split(',').any(|d| d == "tungstenite=debug"), "a crate whose name holds another's: {other}");
        assert!(capped("lapin::channel=trace").split(',').all(|d| d != "lapin=debug"), "a module names its crate");
    }

    /// The cap is a ceiling, not a level of its own: at `info` (the default filter) the WebSocket and AMQP crates
    /// write no `debug` records (tungstenite's carry the close reason a client chose).
    #[test]
    fn the_crates_that_log_payloads_are_never_more_verbose_than_the_filters_default() {
        for (filter, level) in [("info", "info"), ("warn,herald=debug", "warn"), ("debug", "debug"), ("off", "off")] {
            let f = capped(filter);
            for krate in ["tungstenite", "tokio_tungstenite", "lapin", "amq_protocol"] {
                assert!(f.split(',').any(|d| d == format!("{krate}={level}")), "{filter}: {f}");
            }
            assert!(EnvFilter::try_new(&f).is_ok(), "{f}");
        }
        let shipped = capped(&crate::config::Settings::defaults().log.filter);
        assert!(shipped.split(',').all(|d| !d.ends_with("=debug") && !d.ends_with("=trace")), "{shipped}");
    }

    #[test]
    fn lapins_returned_messages_with_their_bodies_are_held_at_error_unless_named() {
        for filter in ["info", "info,lapin=warn", "lapin=debug", "trace", ""] {
            let f = capped(filter);
            assert!(f.split(',').any(|d| d == "lapin::returned_messages=error"), "{f}");
            assert!(EnvFilter::try_new(&f).is_ok(), "{f}");
        }
        let named = capped("info,lapin::returned_messages=warn");
        assert!(named.split(',').all(|d| d != "lapin::returned_messages=error"), "named: kept as asked ({named})");
        // The shipped default holds it itself.
        let default = crate::config::Settings::defaults().log.filter;
        assert!(default.split(',').any(|d| d == "lapin::returned_messages=error"), "{default}");
    }
}
