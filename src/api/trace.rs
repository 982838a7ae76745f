//! The trace endpoints (`admin` scope): one event's traces, a user's newest traces, the recorder's counters.
//!
//! Invariants: only a service key with `admin` reaches them (a trace names users and producers); a read first
//! waits for this node's queued steps to be written, so what this node recorded before the call is in the
//! answer (other nodes' steps follow their own writers: a delivery elsewhere may show a moment later).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

use super::admin::service_only;
use super::error::{ErrorBody, Path};
use super::{error, ApiError, AppState};
use crate::auth::Scope;
use crate::trace::{EventTraces, TraceError, TraceStats, UserTraces};

/// A user's traces when no `limit` is given, and the most one call returns.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Disabled => ApiError::Conflict { code: "trace_disabled", message: e.to_string() },
            TraceError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "the trace store could not be read");
                ApiError::Unavailable {
                    code: "trace_unavailable",
                    message: "the trace store cannot be read now".into(),
                }
            }
        }
    }
}

/// `GET /api/v1/admin/events/{event_id}/trace`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/events/{event_id}/trace",
    operation_id = "event_trace",
    tag = "admin",
    summary = "Trace an event: its path from reception to each recipient's sessions",
    description = "Every retained trace of this event id, newest first (an event posted twice has two: the \
        second a `duplicate`): how it was received, the rule that matched (or why none did, or why it was \
        dead-lettered), the notifications stored and their recipients, every node that handled their frames and \
        how many sessions each wrote (or why not: `offline`, `outbox_overflow`, `muted`, `closed`), and when each \
        recipient read or saw it. Steps are kept `trace.retention_days`.",
    params(("event_id" = String, Path, description = "The event id as its producer gave it (AMQP `message_id`, `Idempotency-Key`, or the body's id).")),
    responses(
        (status = 200, description = "The event's traces, newest first.", body = EventTraces),
        (status = 400, description = "A path segment that does not parse (`bad_path`).", body = ErrorBody),
        error::AdminErrors,
        (status = 404, description = "No trace of this event id is retained (`not_found`).", body = ErrorBody),
        (status = 409, description = "Tracing is off (`trace.enabled = false`: `trace_disabled`).", body = ErrorBody),
        (status = 503, description = "The trace store cannot be read now (`trace_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    no_query: super::NoQuery,
    headers: HeaderMap,
) -> Result<Json<EventTraces>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    no_query.check()?;
    let traces = state.trace.event(&event_id).await?;
    if traces.is_empty() {
        return Err(ApiError::NotFound("no trace of this event id is retained"));
    }
    Ok(Json(EventTraces { event_id, traces }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserTraceParams {
    /// How many traces, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<usize>,
    /// jQuery's cache-buster (`cache: false` sends `_=<time>`): taken and ignored, like [`super::NoQuery`] does.
    #[serde(rename = "_")]
    #[param(ignore)]
    #[allow(dead_code)]
    cache_buster: Option<String>,
}

/// `GET /api/v1/admin/users/{user_id}/trace?limit=N`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/users/{user_id}/trace",
    operation_id = "user_trace",
    tag = "admin",
    summary = "A user's newest traces: the events that stored something for them",
    description = "The newest `limit` traces of events that stored a notification for this user (targeted, \
        not broadcasts) or purged their inbox, newest first, each as `GET /api/v1/admin/events/{event_id}/trace` \
        shows it. Empty when none is retained.",
    params(("user_id" = String, Path, description = "The user id (after aliases)."), UserTraceParams),
    responses(
        (status = 200, description = "The user's newest traces, newest first.", body = UserTraces),
        (status = 400, description = "`limit` does not parse or is out of range (`bad_query`); a path segment that does not parse (`bad_path`).", body = ErrorBody),
        error::AdminErrors,
        (status = 409, description = "Tracing is off (`trace.enabled = false`: `trace_disabled`).", body = ErrorBody),
        (status = 503, description = "The trace store cannot be read now (`trace_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    params: Result<Query<UserTraceParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<UserTraces>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    let Query(p) = params.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    let traces = state.trace.user(&user_id, limit).await?;
    Ok(Json(UserTraces { user_id, traces }))
}

/// `GET /api/v1/admin/trace/stats`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/trace/stats",
    operation_id = "trace_stats",
    tag = "admin",
    summary = "The trace recorder's counters on this node",
    description = "Since this node started: steps written, dropped because the buffer was full \
        (`trace.buffer`), and not kept by `trace.sample_rate`; and how long steps are kept. All zero when \
        tracing is off.",
    responses(
        (status = 200, description = "This node's counters.", body = TraceStats),
        error::AdminErrors
    ),
    security(("service_key" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    no_query: super::NoQuery,
    headers: HeaderMap,
) -> Result<Json<TraceStats>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    no_query.check()?;
    Ok(Json(state.trace.stats()))
}
