//! Ops: liveness, readiness, Prometheus metrics, and the development token endpoint.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::error::ErrorBody;
use super::{error, ApiError, AppState};

/// Alive: the process answers and can recover by itself. It checks no dependency, on purpose (a database or
/// broker outage is `/readyz`'s, and restarting would not cure it); it fails only once an essential thread died
/// (the store's writer panicked: every write would fail until a restart).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "ops",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process answers.", body = super::openapi::Alive),
        (status = 503, description = "An essential thread stopped (`reason`): restart the process.", body = super::openapi::Alive)
    ),
    security(())
)]
pub async fn healthz() -> axum::response::Response {
    match crate::telemetry::liveness_failure() {
        None => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Some(reason) => {
            let failed = serde_json::json!({ "status": "failed", "reason": reason });
            (StatusCode::SERVICE_UNAVAILABLE, Json(failed)).into_response()
        }
    }
}

/// How long `/readyz` waits for the store's ping: under a probe's usual timeout (Kubernetes' `timeoutSeconds`
/// in `deploy/k8s` is 3), so a store that does not answer is reported, not a probe timing out without a reason.
const STORE_PING_SECS: u64 = 2;

/// Ready: the store answers (for SQLite: its database file is still the one open, within [`STORE_PING_SECS`])
/// and every required component reports up (`store_writes`, false from a write the store refused until one
/// succeeds; `jwks`). The broker and Redis are reported but only degrade the node (`degraded`): without them it
/// still takes HTTP ingest, serves its sessions and the REST inbox.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "ops",
    summary = "Readiness",
    responses(
        (status = 200, description = "Every required check is ok; `degraded` names the optional ones that are not (`amqp`, `redis`).", body = super::openapi::Readiness),
        (status = 503, description = "A required check failed: `checks` says which (`store`, `store_writes`, `jwks`).", body = super::openapi::Readiness)
    ),
    security(())
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(STORE_PING_SECS), state.store.ping()).await;
    let store = match ping {
        Ok(Ok(())) => serde_json::json!({ "ok": true, "required": true }),
        Ok(Err(e)) => serde_json::json!({ "ok": false, "required": true, "detail": e.to_string() }),
        Err(_) => serde_json::json!({
            "ok": false, "required": true, "detail": format!("no answer within {STORE_PING_SECS} s"),
        }),
    };
    let mut ok = store["ok"] == true;
    let mut checks = serde_json::Map::new();
    let mut degraded = Vec::new();
    checks.insert("store".into(), store);
    for (name, c) in state.health.snapshot() {
        match (c.ok, c.required) {
            (false, true) => ok = false,
            (false, false) => degraded.push(name),
            (true, _) => {}
        }
        checks.insert(name.into(), serde_json::json!({ "ok": c.ok, "required": c.required, "detail": c.detail }));
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ready": ok, "degraded": degraded, "checks": checks })))
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    description = "On `server.bind` only while `server.ops_bind` is unset; with it set, on `server.ops_bind` only (the clients' address answers 404 `not_found`).",
    responses(
        (status = 200, description = "Every metric in the Prometheus text format; each has a HELP text.", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "Asked on the clients' address while `server.ops_bind` is set.", body = ErrorBody),
    ),
    security(())
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Sessions are counted by `herald_connections`, which each session keeps itself; the registry counts users.
    let (users, _sessions) = state.fanout.registry().counts();
    metrics::gauge!("herald_users_online").set(users as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// The user the token is for: a non-empty string (trimmed) or an integer (the ids the seeds' events carry),
    /// taken as its text; what an inbox path can name (at most 256 bytes, no control characters).
    #[schema(value_type = super::openapi::UserId)]
    user_id: serde_json::Value,
    /// Lifetime in seconds; values outside 10..=86400 are brought to the nearer bound.
    #[schema(default = 3600)]
    ttl_secs: Option<u64>,
}

/// Mint a user token. Routed only when `auth.dev_token_endpoint = true`, which production refuses.
#[utoipa::path(
    post,
    path = "/api/v1/dev/token",
    operation_id = "dev_token",
    tag = "development",
    summary = "Mint a user token (development only)",
    request_body(content = DevTokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A token for the user, signed with the configured HS256 secret.", body = super::openapi::DevToken),
        error::InvalidJson,
        error::JsonBodyErrors,
        (status = 422, description = "`user_id` is empty or not a string or integer (`missing_user_id`), is over 256 bytes (`user_id_too_long`), holds a control character no token can carry (`invalid_user_id`); or `auth.algorithm` is not HS256 (`unsupported`).", body = ErrorBody)
    ),
    security(())
)]
pub async fn dev_token(
    State(state): State<AppState>,
    no_query: super::NoQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    no_query.check()?;
    let req: DevTokenRequest = super::json_body(&state, &headers, body, super::SMALL_BODY_BYTES).await?;
    // No token for a user no inbox path can name.
    let user_id = super::user_id_in_body(&req.user_id)?;
    let ttl = req.ttl_secs.unwrap_or(3600).clamp(10, 86_400);
    let token = state.auth.mint(&user_id, ttl).ok_or(ApiError::Unprocessable {
        code: "unsupported",
        message: "tokens can be minted only with auth.algorithm = \"HS256\"".into(),
    })?;
    Ok(Json(serde_json::json!({ "token": token, "user_id": user_id, "expires_in": ttl })))
}

/// `GET /api/v1/admin/presence` (a service key with `admin`): users and sessions online, per node and in
/// total. With Redis, every node that reported recently; without, this node alone. A user with sessions on two
/// nodes counts on each (`users` totals are an upper bound).
#[utoipa::path(
    get,
    path = "/api/v1/admin/presence",
    operation_id = "presence",
    tag = "admin",
    summary = "Users and sessions online, per node",
    responses(
        (status = 200, description = "Per node and in total.", body = super::openapi::Presence),
        error::BadCredential,
        (status = 403, description = "A user token (`forbidden`), or a service key without `admin` (`insufficient_scope`).", body = ErrorBody),
        (status = 503, description = "Redis cannot be read (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn presence(
    State(state): State<AppState>,
    no_query: super::NoQuery,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::admin::service_only(&state, &headers, crate::auth::Scope::Admin)?;
    no_query.check()?;
    let cluster = &state.settings.cluster;
    let nodes = if cluster.enabled() {
        crate::fanout::redis::presence(cluster)
            .await
            .map_err(|e| ApiError::Store(crate::inbox::StoreError::Unavailable(format!("redis: {e}"))))?
    } else {
        let (users, sessions) = state.fanout.registry().counts();
        vec![crate::fanout::redis::NodePresence {
            node: "local".into(),
            users: users as u64,
            sessions: sessions as u64,
            reported_at: chrono::Utc::now().timestamp(),
        }]
    };
    let users: u64 = nodes.iter().map(|n| n.users).sum();
    let sessions: u64 = nodes.iter().map(|n| n.sessions).sum();
    metrics::gauge!("herald_cluster_sessions").set(sessions as f64);
    metrics::gauge!("herald_cluster_nodes").set(nodes.len() as f64);
    Ok(Json(serde_json::json!({ "nodes": nodes, "users_online": users, "sessions_online": sessions })))
}

/// `GET /api/v1/admin/stats` (a service key with `admin`): this node's counters, sessions and delivery latency
/// as JSON, read from the same registry as `/metrics` (the admin console polls it).
#[utoipa::path(
    get,
    path = "/api/v1/admin/stats",
    operation_id = "stats",
    tag = "admin",
    summary = "This node's counters and delivery latency (JSON)",
    description = "A snapshot of this node's Prometheus registry, the numbers `/metrics` shows: counters are totals \
        since the process started (rates come from two snapshots), sessions and users are this node's now, and \
        the delivery latency is the histogram's cumulative buckets with quantiles estimated from them.",
    responses(
        (status = 200, description = "The snapshot.", body = crate::telemetry::stats::Stats),
        error::AdminErrors
    ),
    security(("service_key" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    no_query: super::NoQuery,
    headers: axum::http::HeaderMap,
) -> Result<Json<crate::telemetry::stats::Stats>, ApiError> {
    super::admin::service_only(&state, &headers, crate::auth::Scope::Admin)?;
    no_query.check()?;
    let (users, sessions) = state.fanout.registry().counts();
    let online = crate::telemetry::stats::Online { sessions: sessions as u64, users: users as u64 };
    Ok(Json(crate::telemetry::stats::snapshot(&state.metrics.render(), online)))
}

/// `/metrics` on the clients' address when `server.ops_bind` is set: the scrape lives on the operators'
/// listener only, so the public port does not publish the node's internals (users, sessions, errors, queues).
pub async fn metrics_on_ops_bind() -> ApiError {
    ApiError::NotFound("metrics are served on server.ops_bind only")
}
