//! API: the axum routes — sessions (`/ws`), the REST inbox, HTTP ingest, ops endpoints, and the OpenAPI
//! document that describes them all (`openapi`).
//!
//! Invariants: every error leaves as a status and a JSON `{error, message}` ([`ApiError`], and under every
//! route [`error::json_errors`] for whatever a handler or layer answers in plain text); internals are
//! logged, not leaked; request logs carry the path and a redacted query, never a token; every route is mounted
//! through [`routes`], which records its path, and documented in [`openapi`] (a test compares the two).
//! The REST routes carry CORS ([`cors`]); `/ws`, the ops endpoints and the admin endpoints (`/api/v1/admin/*`,
//! read by the same-origin admin console, [`console`]) do not.

mod admin;
mod console;
mod cors;
mod error;
mod events;
mod http_metrics;
mod inbox;
pub mod openapi;
mod ops;
pub mod rate;
mod trace;
mod ws;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::routing::{any, delete, get, post, MethodRouter};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
use error::Path;
pub use events::IngestShares;

use crate::auth::{self, Authenticator, Principal};
use crate::config::Settings;
use crate::fanout::Fanout;
use crate::inbox::Store;
use crate::ingest::amqp::DeadLetters;
use crate::ingest::Pipeline;
use crate::session::SessionDeps;
use crate::telemetry::ratelimited::{ThrottledKinds, WINDOW};
use crate::telemetry::Health;
use tracing::Level;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub settings: Arc<Settings>,
    pub auth: Arc<Authenticator>,
    pub store: Arc<dyn Store>,
    pub pipeline: Pipeline,
    pub fanout: Fanout,
    pub sessions: SessionDeps,
    pub metrics: PrometheusHandle,
    pub health: Health,
    /// The AMQP dead-letter queue, for the admin endpoints (none when AMQP ingest is off).
    pub dead_letters: DeadLetters,
    /// The per-event trace: its recorder (read state changes) and its store (the trace endpoints).
    pub trace: crate::trace::Tracer,
    /// Session tasks, so shutdown can wait for them (upgraded sockets are detached from the HTTP server).
    pub tracker: TaskTracker,
    /// `herald_ingest_events_total{transport="http"}` by service key and status, held (counted per event).
    pub ingest_events: crate::telemetry::HeldHandles<metrics::Counter>,
    /// Ingest requests in flight per caller (`server.ingest_max_concurrency_per_key`).
    pub ingest_shares: events::IngestShares,
    /// How fast a user token may change its inbox.
    pub user_writes: rate::UserRate,
    pub user_reads: Arc<rate::UserRate>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    /// The caller behind `Authorization: Bearer`: a service key or a user token.
    fn principal(&self, headers: &axum::http::HeaderMap) -> Result<Principal, ApiError> {
        let token = auth::bearer(headers).ok_or(ApiError::Auth(auth::AuthError::Missing))?;
        self.auth.verify_bearer(token).map_err(ApiError::Auth)
    }
}

/// The largest JSON body of a request that carries no event (preferences, an alias, a redrive selection).
const SMALL_BODY_BYTES: usize = 64 * 1024;

/// A request's `Content-Type` names JSON (`application/json` or `*+json`), or there is none (services POST
/// `data=json.dumps(event)` without one; the body must still parse), or `415 unsupported_media_type`: a form or
/// text body — what a browser sends cross-site without a preflight — is never read as JSON.
fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(content_type) = headers.get(axum::http::header::CONTENT_TYPE) else { return Ok(()) };
    let content_type = content_type.to_str().unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !mime.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(content_type.to_owned()));
    }
    Ok(())
}

/// A user id a request body names (`"42"` or `42`), checked as an event's user id is: one no inbox path could
/// name (empty, over 256 bytes, a control character) is `422`.
fn user_id_in_body(value: &serde_json::Value) -> Result<String, ApiError> {
    let user = crate::event::id_string(value).ok_or(ApiError::Unprocessable {
        code: "missing_user_id",
        message: "user_id must be a non-empty string or an integer".into(),
    })?;
    crate::event::check_user_id(&user)
        .map_err(|bad| ApiError::Unprocessable { code: bad.code(), message: bad.to_string() })?;
    Ok(user)
}

/// The JSON body of a request other than ingest, read by its handler once the caller is authorized (so no
/// unauthenticated client makes Herald wait for or buffer a body): JSON by its content type, at most `limit`
/// bytes, whole within `server.body_read_timeout_secs`, an object. A body that is not JSON answers
/// `400 invalid_json`; JSON of another shape, `400 bad_request`.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ApiError> {
    require_json(headers)?;
    let secs = state.settings.server.body_read_timeout_secs;
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(secs), read_body(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout { secs })??;
    // One pair of codes on every endpoint: `invalid_json` for a body that is not JSON, `bad_request` for JSON
    // that is not what the endpoint takes. A body the endpoint takes is parsed once; a refused one is told apart
    // by a second pass that only checks the syntax (serde_json reports some wrong types, a `null` for an enum, as
    // syntax errors).
    let value =
        serde_json::from_slice(&bytes).map_err(|e| match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Err(syntax) => ApiError::BadRequest { code: "invalid_json", message: syntax.to_string() },
            Ok(_) => ApiError::BadRequest { code: "bad_request", message: e.to_string() },
        })?;
    // Every such body is an object: serde's derive would also take its fields as an array, in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest { code: "bad_request", message: "the body must be a JSON object".into() });
    }
    Ok(value)
}

/// The query of an endpoint that takes no parameter, checked after the caller's credentials: one naming a
/// parameter is refused (`bad_query`), so that `read_all?type=welcome` is not taken for a filtered change and
/// marks nothing, rather than every notification.
pub struct NoQuery(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        // jQuery's cache-buster (`_=<time>`, sent by `cache: false`) names nothing: ignored.
        let named =
            parts.uri.query().and_then(|q| q.split('&').find(|p| !p.is_empty() && *p != "_" && !p.starts_with("_=")));
        Ok(NoQuery(named.map(|p| p.split('=').next().unwrap_or_default().chars().take(64).collect())))
    }
}

impl NoQuery {
    pub(crate) fn check(self) -> Result<(), ApiError> {
        match self.0 {
            None => Ok(()),
            Some(name) => Err(ApiError::BadRequest {
                code: "bad_query",
                message: format!("unknown query parameter `{name}`: this endpoint takes none"),
            }),
        }
    }
}

/// A request's whole body, at most `limit` bytes: over it `413 body_too_large`, cut short by the client (or
/// otherwise unreadable) `400 body_read_failed`. The caller bounds the time it may take.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| match is_length_limit(&e) {
        true => ApiError::TooLarge { limit },
        false => ApiError::BadRequest { code: "body_read_failed", message: e.to_string() },
    })
}

/// Whether reading a body failed on its length limit (rather than the client going away).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

pub fn router(state: AppState) -> Router {
    let mut app = routes(&state.settings).router.merge(console::router(&state.settings.server));
    // Unknown API paths answer a JSON 404 even when the demo's catch-all serves everything else.
    let not_found = || async { ApiError::NotFound("no such route") };
    app = app.route("/api/{*rest}", any(not_found));
    // A route that exists under another method: a JSON 405 (the router still adds `Allow`). Set after every
    // route, since it applies to the routes registered so far.
    app = app.method_not_allowed_fallback(error::method_not_allowed);
    let demo = &state.settings.server.demo_dir;
    if !demo.as_os_str().is_empty() && demo.join("index.html").is_file() {
        // The demo's files, `/` its page; any other path is a JSON 404 (the demo has no routes of its own, and a
        // probe sent to a wrong path such as `/health` must fail, not get the page).
        use axum::handler::HandlerWithoutStateExt;
        app = app.fallback_service(ServeDir::new(demo).not_found_service(not_found.into_service()));
    } else {
        app = app.fallback(not_found);
    }
    served(app, state)
}

/// The operators' listener (`server.ops_bind`): the probes and the metrics, nothing else (a JSON 404).
pub fn ops_router(state: AppState) -> Router {
    let not_found =
        || async { ApiError::NotFound("no such route: this address serves /healthz, /readyz and /metrics") };
    let app = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(not_found);
    served(app, state)
}

/// Every answer's layers, around a listener's routes.
fn served(app: Router<AppState>, state: AppState) -> Router {
    // Outermost first: the request span, JSON error bodies, and request metrics by matched route template (a
    // `Router::layer`, so it runs after routing: `MatchedPath`). One `Router::layer` call: each call boxes every
    // route once more, and a request clones its route's boxes (BENCHMARKS.md, "one box per layer call").
    app.layer(
        tower::ServiceBuilder::new()
            // Outermost, so that every answer the router makes has them, the JSON errors' own too: no answer is
            // sniffed into another type, or framed by another site (the Swagger UI, the demo; the console sets
            // its own stricter headers).
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
            // An inbox page, a token, a trace: no JSON answer is kept by a browser's or a proxy's cache (a shared
            // machine's next user, a proxy answering one user with another's page). Files (the demo, the Swagger
            // UI, the console's, which say `no-cache`) are left to their own headers.
            .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, no_store_json))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request| {
                        // Field values are evaluated only when the span is enabled: no redaction for a disabled
                        // span.
                        tracing::info_span!("http", method = %req.method(), path = %req.uri().path(),
                            query = %req.uri().query().map(auth::redact_query).unwrap_or_default())
                    })
                    // A 5xx is mostly a state answered on purpose (503 with Retry-After, an unready /readyz, each
                    // probe of an outage): a warning. What failed inside is logged once, at error, where it is
                    // turned into the answer (`error::ApiError`).
                    .on_failure(response_failed),
            )
            .layer(axum::middleware::from_fn_with_state(state.settings.server.max_head_bytes, error::json_errors))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(http_metrics::HttpMetrics::default()),
                http_metrics::record,
            )),
    )
    .with_state(state)
}

/// `Cache-Control: no-store` for a JSON answer (see [`router`]'s layers).
fn no_store_json<B>(response: &axum::http::Response<B>) -> Option<HeaderValue> {
    let json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    json.then(|| HeaderValue::from_static("no-store"))
}

/// A response classified as a failure (a 5xx), logged at warn once per status per window: an outage answers
/// every request and every readiness probe with a 503, and its log would be one line per request
/// (`telemetry::ratelimited`; `herald_http_requests_total` counts each). Logged under tower-http's target, as
/// its `DefaultOnFailure` did, so a filter naming it still applies.
fn response_failed(class: ServerErrorsFailureClass, latency: std::time::Duration, _span: &tracing::Span) {
    static FAILED: ThrottledKinds<16> = ThrottledKinds::new(Level::WARN, "response failed", WINDOW);
    let kind = match &class {
        ServerErrorsFailureClass::StatusCode(status) => status.as_u16(),
        ServerErrorsFailureClass::Error(_) => 0,
    };
    if let Some(repeats) = FAILED.admit(kind) {
        tracing::warn!(target: "tower_http::trace::on_failure", classification = %class,
            latency_ms = latency.as_millis() as u64, suppressed = repeats.suppressed(), "response failed{repeats}");
    }
}

/// Every endpoint and its handler (the fallbacks are [`router`]'s). Each is documented in [`openapi`], whose
/// test compares the document with the paths recorded here.
fn routes(settings: &Settings) -> Routes {
    let users = "/api/v1/users/{user_id}/notifications";
    // One budget for both ingest routes.
    let ingest_slots = Arc::new(tokio::sync::Semaphore::new(settings.server.ingest_max_concurrency));
    // The REST API, under CORS. Its JSON 405 is set before the CORS layer: set later, it would replace the
    // layered fallback and a preflight (OPTIONS) would miss CORS.
    let rest = Routes::new()
        .route(users, get(inbox::list))
        .route(&format!("{users}/unread_count"), get(inbox::unread_count))
        .route(&format!("{users}/counts"), get(inbox::counts))
        .route(&format!("{users}/read_all"), post(inbox::read_all))
        .route(&format!("{users}/seen_all"), post(inbox::seen_all))
        .route(&format!("{users}/batch"), post(inbox::batch))
        .route(&format!("{users}/{{id}}/read"), post(inbox::read))
        .route(&format!("{users}/{{id}}/unread"), post(inbox::unread))
        .route(&format!("{users}/{{id}}/archive"), post(inbox::archive))
        .route(&format!("{users}/{{id}}/unarchive"), post(inbox::unarchive))
        .route(
            "/api/v1/users/{user_id}/preferences",
            get(inbox::get_preferences).put(inbox::put_preferences).patch(inbox::patch_preferences),
        )
        .route(&format!("{users}/{{id}}"), delete(inbox::remove))
        .route("/api/v1/events", bounded_ingest(post(events::ingest), &ingest_slots, settings))
        .route("/api/v1/aliases/{kind}/{alias}", get(admin::get_alias).put(admin::put_alias))
        .map(|r| {
            r.method_not_allowed_fallback(error::method_not_allowed).layer(
                tower::ServiceBuilder::new()
                    .layer(axum::middleware::map_response(cors::strip_when_refused))
                    .layer(cors::layer(settings)),
            )
        });
    // The operators' API: no CORS, so no page of another origin can read an answer (the admin console is served
    // by Herald itself, same origin). A preflight gets the JSON 405.
    let admin = Routes::new()
        .route("/api/v1/admin/presence", get(ops::presence))
        .route("/api/v1/admin/stats", get(ops::stats))
        .route("/api/v1/admin/rules/reload", post(admin::reload_rules))
        .route("/api/v1/admin/rules/dry-run", post(admin::dry_run_rules))
        .route("/api/v1/admin/dead-letters", get(admin::list_dead_letters))
        .route("/api/v1/admin/dead-letters/redrive", post(admin::redrive_dead_letters))
        .route("/api/v1/admin/events/{event_id}/trace", get(trace::event))
        .route("/api/v1/admin/users/{user_id}/trace", get(trace::user))
        .route("/api/v1/admin/trace/stats", get(trace::stats))
        .map(|r| r.method_not_allowed_fallback(error::method_not_allowed));
    let mut app = Routes::new()
        .route("/ws/{user_id}", get(ws::upgrade))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route(
            "/metrics",
            if settings.server.ops_bind.is_some() { get(ops::metrics_on_ops_bind) } else { get(ops::metrics) },
        )
        .absorb(rest)
        .absorb(admin);
    if settings.auth.dev_token_endpoint {
        let local = axum::middleware::from_fn_with_state(Arc::new(DevHosts::new(settings)), DevHosts::only);
        app = app.route("/api/v1/dev/token", post(ops::dev_token).layer(local.clone())).route(
            "/api/v1/dev/events",
            bounded_ingest(post(events::dev_ingest), &ingest_slots, settings).layer(local),
        );
    }
    let served = openapi::Served::new(settings.auth.dev_token_endpoint);
    app.route(openapi::JSON_PATH, get(openapi::openapi_json).layer(axum::Extension(served)))
        .merge(openapi::DOCS_PATH, openapi::docs_page())
}

/// The hosts the dev endpoints answer: a page on any site can rebind its name to 127.0.0.1 (DNS rebinding) and
/// then call a gateway on loopback as its own origin, minting tokens for any user. A request whose `Host` is not
/// a loopback name (`localhost`, `*.localhost`), an IP address (a rebound page keeps its own name), or the host
/// of an origin in `websocket.allowed_origins` is refused with `403` before the handler runs.
struct DevHosts {
    allowed: Vec<String>,
}

impl DevHosts {
    fn new(settings: &Settings) -> DevHosts {
        let allowed = settings
            .websocket
            .allowed_origins
            .iter()
            .filter_map(|o| {
                url::Url::parse(o).ok()?.host_str().map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
            })
            .collect();
        DevHosts { allowed }
    }

    /// The middleware: the request goes on only to an allowed host.
    async fn only(
        axum::extract::State(hosts): axum::extract::State<Arc<DevHosts>>,
        req: Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        match hosts.check(&req) {
            Ok(()) => next.run(req).await,
            Err(e) => axum::response::IntoResponse::into_response(e),
        }
    }

    fn check(&self, req: &Request) -> Result<(), error::ApiError> {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or_default();
        // `name[:port]` or `[v6][:port]`.
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        }
        .trim_end_matches('.')
        .to_ascii_lowercase();
        let local = name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok();
        if local || self.allowed.contains(&name) {
            return Ok(());
        }
        Err(error::ApiError::Forbidden(format!(
            "the dev endpoints answer only a loopback host, an IP address or a host of websocket.allowed_origins, \
             not `{}` (a page could rebind its name to this gateway)",
            name.chars().take(100).collect::<String>()
        )))
    }
}

/// The router under construction and the path of every route mounted on it, recorded as it is mounted, so
/// that the OpenAPI test sees what the router serves (a route added undocumented fails it).
struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    fn new() -> Routes {
        Routes { router: Router::new(), paths: Vec::new() }
    }

    /// Layers (or any change) over every route mounted so far; the recorded paths stay.
    fn map(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    /// Another set of routes, with its own layers, mounted here with its paths.
    fn absorb(mut self, other: Routes) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }

    fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.paths.push(path.to_owned());
        self.router = self.router.route(path, method_router);
        self
    }

    /// A router a crate builds (the docs page and its assets, all under `path`), recorded as `path`.
    fn merge(mut self, path: &str, router: Router<AppState>) -> Self {
        self.paths.push(path.to_owned());
        self.router = self.router.merge(router);
        self
    }
}

/// HTTP ingest's bounds, with tower's layers: at most `server.ingest_max_concurrency` requests at once (shared
/// by every ingest route through `slots`; one more is shed at once, not queued) and `server.ingest_timeout_secs`
/// per request. Both answer `503` with `Retry-After` and a JSON reason ([`events::shed`]).
fn bounded_ingest(
    route: MethodRouter<AppState>,
    slots: &Arc<tokio::sync::Semaphore>,
    settings: &Settings,
) -> MethodRouter<AppState> {
    let timeout = std::time::Duration::from_secs(settings.server.ingest_timeout_secs);
    route.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |e| events::shed(e, timeout)))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(slots.clone()))
            .timeout(timeout),
    )
}
