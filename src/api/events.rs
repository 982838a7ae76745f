//! `POST /api/v1/events`: HTTP ingest. One event or a JSON array; all-or-nothing validation, then one commit.
//!
//! `202` only after the commit. A bad element rejects the whole request (`4xx` naming its index), so a
//! client never has to guess which half of a batch was stored.
//!
//! A service key needs `publish`, and each event's exchange and routing key (as decoded) must be within the
//! key's limits, else `403 insufficient_scope` naming the pattern. Metrics and logs name the key by its id
//! (label `key`: bounded by the configuration), never the key; `key=""` for a user or an unauthenticated call.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ErrorBody;
use super::{error, ApiError, AppState};
use crate::auth::{AuthError, Principal, Scope};
use crate::event::{decode, DecodeError, Envelope};
use crate::ingest::{Outcome, Status, MAX_STORED_BYTES_PER_EVENT};
use crate::telemetry::ratelimited::{ThrottledKinds, WINDOW};
use tracing::Level;

/// Most events accepted in one request.
const MAX_BATCH: usize = 1000;

/// An ingest body's array of events, borrowed from the body: at most [`MAX_BATCH`] are kept, and past that the
/// rest are only counted (syntax-checked, nothing built), so a body of a million tiny elements costs no more
/// memory than a full batch before its `422 batch_too_large`.
struct Batch<'a> {
    events: Vec<&'a RawValue>,
    /// Every element, kept or not.
    count: usize,
}

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array of events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
                let mut events = Vec::new();
                while events.len() < MAX_BATCH {
                    match seq.next_element::<&'de RawValue>()? {
                        Some(event) => events.push(event),
                        None => return Ok(Batch { count: events.len(), events }),
                    }
                }
                let mut count = events.len();
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Batch { events, count })
            }
        }
        deserializer.deserialize_seq(Elements)
    }
}

/// Unknown parameters are refused (`400 bad_query`): a misspelt `?exchang=` would otherwise route the event as if
/// posted to no exchange, and no exchange-scoped rule would match it, silently.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IngestQuery {
    /// The routing key the event would have on the broker (e.g. `availability.closed.7`); rules match on it.
    /// Default: the event's own `event_type`, `event_name` or `_meta.routing_key`.
    routing_key: Option<String>,
    /// The exchange the event would have been published to (e.g. `sgad.notifications`); rules may match on it.
    exchange: Option<String>,
    /// jQuery's cache-buster (`cache: false` sends `_=<time>`): taken and ignored, like [`super::NoQuery`] does.
    #[serde(rename = "_")]
    #[param(ignore)]
    #[allow(dead_code)]
    cache_buster: Option<String>,
}

/// Who may post events to a route.
#[derive(Clone, Copy)]
enum Allowed {
    /// `POST /api/v1/events`: services only.
    Services,
    /// `POST /api/v1/dev/events` (routed only with `auth.dev_token_endpoint`): any signed-in user, so the web
    /// demo can publish without holding a service key.
    SignedInUsers,
}

#[utoipa::path(
    post,
    path = "/api/v1/events",
    operation_id = "ingest_events",
    tag = "ingest",
    summary = "Post events (services)",
    params(
        IngestQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "The event id: the same key posted again is stored once (`duplicate`). In a batch each element gets `key:index`.")
    ),
    request_body(content = super::openapi::IngestBody, content_type = "application/json", description = "One event exactly as a service publishes it (any shape in `tests/fixtures/events/`), or a JSON array of up to 1000 of them: all or nothing, except `unresolved_recipient` and `unmatched` (see 422)."),
    responses(
        (status = 202, description = "Every event is stored (or a duplicate, ignored by its rule, or pushed live only): one result per event, in order.", body = super::openapi::IngestResults),
        (status = 400, description = "Not JSON or not UTF-8, a body the client cut short, a bad or unknown query parameter, or an `Idempotency-Key` that is not ASCII text: visible characters, spaces and tabs (`invalid_json`, `invalid_utf8`, `body_read_failed`, `bad_query`, `bad_idempotency_key`); in a batch the message names the element (`event [i]: ...`).", body = ErrorBody),
        (status = 401, description = "No or a bad credential, or a user token: ingest takes a service key (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A service key without `publish`, or an event outside the key's `exchanges` / `routing_keys` (`insufficient_scope`; nothing of the request is stored).", body = ErrorBody),
        (status = 413, description = "The body is over `server.max_body_bytes` (`body_too_large`).", body = ErrorBody),
        (status = 415, description = "A content type that is not `application/json` or `*+json` (`unsupported_media_type`); a request without one is read as JSON.", body = ErrorBody),
        (status = 422, description = "An event that decodes or routes to nothing valid (`missing_user_id`, `template_error`, `empty_batch`, `batch_too_large`, ...): nothing was stored. Or `unresolved_recipient`: an alias nobody taught yet, or `unmatched`: no rule takes the event; `results` says which events were stored, the others may be posted again once the alias is known or a rule takes them.", body = super::openapi::IngestRefused),
        error::InboxFailedBriefly,
        (status = 503, description = "Shed before any work (`overloaded`), past `server.ingest_timeout_secs` (`ingest_timeout`: it may have been stored, retry with the same `Idempotency-Key`), or the inbox cannot take it (`store_unavailable`). Retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
/// Answers only after the commit: `202` means stored.
pub async fn ingest(
    State(state): State<AppState>,
    query: Result<Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let principal = state.principal(&headers);
    let key = key_label(&principal);
    counted(&key, handle(&state, principal, &key, query, &headers, body, Allowed::Services).await)
}

#[utoipa::path(
    post,
    path = "/api/v1/dev/events",
    operation_id = "dev_ingest_events",
    tag = "ingest",
    summary = "Post events as a signed-in user (development only)",
    params(
        IngestQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "The event id: the same key posted again is stored once (`duplicate`). In a batch each element gets `key:index`.")
    ),
    request_body(content = super::openapi::IngestBody, content_type = "application/json", description = "One event exactly as a service publishes it (any shape in `tests/fixtures/events/`), or a JSON array of up to 1000 of them: all or nothing, except `unresolved_recipient` and `unmatched` (see 422)."),
    responses(
        (status = 202, description = "Every event is stored (or a duplicate, ignored by its rule, or pushed live only): one result per event, in order.", body = super::openapi::IngestResults),
        (status = 400, description = "Not JSON or not UTF-8, a body the client cut short, a bad or unknown query parameter, or an `Idempotency-Key` that is not ASCII text: visible characters, spaces and tabs (`invalid_json`, `invalid_utf8`, `body_read_failed`, `bad_query`, `bad_idempotency_key`); in a batch the message names the element (`event [i]: ...`).", body = ErrorBody),
        error::Unauthenticated,
        (status = 413, description = "The body is over `server.max_body_bytes` (`body_too_large`).", body = ErrorBody),
        (status = 415, description = "A content type that is not `application/json` or `*+json` (`unsupported_media_type`); a request without one is read as JSON.", body = ErrorBody),
        (status = 422, description = "An event that decodes or routes to nothing valid (`missing_user_id`, `template_error`, `empty_batch`, `batch_too_large`, ...): nothing was stored. Or `unresolved_recipient`: an alias nobody taught yet, or `unmatched`: no rule takes the event; `results` says which events were stored, the others may be posted again once the alias is known or a rule takes them.", body = super::openapi::IngestRefused),
        error::InboxFailedBriefly,
        (status = 503, description = "Shed before any work (`overloaded`), past `server.ingest_timeout_secs` (`ingest_timeout`: it may have been stored, retry with the same `Idempotency-Key`), or the inbox cannot take it (`store_unavailable`). Retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
/// Routed only with `auth.dev_token_endpoint = true` (refused in production), so the web demo can publish
/// without a service key. Otherwise as `POST /api/v1/events`.
pub async fn dev_ingest(
    State(state): State<AppState>,
    query: Result<Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let principal = state.principal(&headers);
    let key = key_label(&principal);
    counted(&key, handle(&state, principal, &key, query, &headers, body, Allowed::SignedInUsers).await)
}

/// The `key` of metrics and logs: the service key's id, empty for anyone else.
fn key_label(principal: &Result<Principal, ApiError>) -> String {
    match principal {
        Ok(Principal::Service { key_id, .. }) => key_id.clone(),
        _ => String::new(),
    }
}

/// What an ingest request answers: each event's result, after the error and its message for a `422`. Serialised
/// as it is (no `serde_json::Value` built first): the same object `IngestResults` and `IngestRefused` describe.
#[derive(serde::Serialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    results: Vec<Outcome>,
}

impl Answer {
    fn refused(error: &'static str, message: String, results: Vec<Outcome>) -> Json<Answer> {
        Json(Answer { error: Some(error), message: Some(message), results })
    }
}

fn counted(
    key: &str,
    result: Result<(StatusCode, Json<Answer>), ApiError>,
) -> Result<(StatusCode, Json<Answer>), ApiError> {
    if let Err(e) = &result {
        // The code the caller was answered (a shed is `overloaded`, not a store outage), but one `unauthorized`
        // for every refused credential.
        let reason = match e {
            ApiError::Auth(AuthError::MissingScope(_) | AuthError::OutOfScope(_)) => "insufficient_scope",
            ApiError::Auth(_) | ApiError::Forbidden(_) => "unauthorized",
            other => other.code(),
        };
        metrics::counter!(
            "herald_ingest_errors_total",
            "transport" => "http",
            "reason" => reason,
            "key" => key.to_owned()
        )
        .increment(1);
        // Per reason and key: a store outage refuses every request alike, and a flood of one refusal must not
        // hide the first of another (the counter above counts each).
        static REFUSED: ThrottledKinds<64> = ThrottledKinds::new(Level::INFO, "ingest request refused", WINDOW);
        if let Some(repeats) = REFUSED.admit((reason, key)) {
            tracing::info!(reason, key, error = %e, suppressed = repeats.suppressed(), "ingest request refused{repeats}");
        }
    }
    result
}

async fn handle(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    key: &str,
    query: Result<Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    body: Body,
    allowed: Allowed,
) -> Result<(StatusCode, Json<Answer>), ApiError> {
    let principal = principal?;
    let grant = match &principal {
        Principal::Service { grant, .. } => {
            grant.require(Scope::Publish).map_err(ApiError::Auth)?;
            Some(grant.clone())
        }
        Principal::User { .. } => None,
    };
    // The caller scopes its Idempotency-Keys: two services (or users) reusing a key do not collide.
    let caller = match (principal, allowed) {
        (Principal::Service { key_id, .. }, _) => format!("service:{key_id}"),
        (Principal::User { id, .. }, Allowed::SignedInUsers) => format!("user:{id}"),
        (Principal::User { .. }, Allowed::Services) => {
            return Err(ApiError::Auth(AuthError::Invalid("ingest needs a service key, not a user token".into())))
        }
    };
    let Query(query) = query.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    super::require_json(headers)?;
    // Held until the answer: the body's read and the commit are what a slow caller would hold slots with.
    let _share = state.ingest_shares.take(&caller)?;
    let limit = state.settings.server.max_body_bytes;
    let bytes = super::read_body(body, limit).await?;
    let text = std::str::from_utf8(&bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_utf8",
        message: DecodeError::InvalidUtf8(e.valid_up_to()).to_string(),
    })?;

    let items: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        let batch: Batch = serde_json::from_str(text).map_err(|e| bad_json(&e))?;
        if batch.count > MAX_BATCH {
            return Err(ApiError::Unprocessable {
                code: "batch_too_large",
                message: format!("{} events in one request; at most {MAX_BATCH}", batch.count),
            });
        }
        batch.events
    } else {
        vec![serde_json::from_str(text).map_err(|e| bad_json(&e))?]
    };
    if items.is_empty() {
        return Err(ApiError::Unprocessable { code: "empty_batch", message: "the array holds no events".into() });
    }

    let origin = crate::trace::Origin::http((!key.is_empty()).then(|| key.to_owned()));
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => Some(k).filter(|k| !k.is_empty()),
        // Ignoring it would store the event under its body's digest: a retry with a changed body stored twice.
        Some(Err(_)) => return Err(ApiError::BadRequest {
            code: "bad_idempotency_key",
            message:
                "Idempotency-Key must be ASCII text: visible characters, spaces and tabs (percent-encode anything else)"
                    .into(),
        }),
    };
    let single = items.len() == 1;
    let mut prepared = Vec::with_capacity(items.len());
    let mut stored_bytes = 0usize;
    // Where the first event no rule takes was routed, for the 422 that names it.
    let mut unmatched_route: Option<(String, String)> = None;
    for (i, raw) in items.into_iter().enumerate() {
        let where_ = if single { String::new() } else { format!("event [{i}]: ") };
        // One key for a batch: each element is `key:index` (its own namespace: a single event posted with the
        // key `key:index` is another event), so a retried batch dedupes element by element.
        let envelope = Envelope {
            exchange: query.exchange.as_deref().unwrap_or(""),
            routing_key: query.routing_key.as_deref(),
            message_id: idempotency_key,
            caller: Some(&caller),
            element: (!single).then_some(i),
        };
        let event = decode(envelope, raw.to_owned()).map_err(|e| {
            let message = format!("{where_}{e}");
            match e {
                DecodeError::InvalidJson(_) => ApiError::BadRequest { code: e.reason(), message },
                _ => ApiError::Unprocessable { code: e.reason(), message },
            }
        })?;
        // Where the event goes is known once it is decoded (the routing key may come from its body).
        if let Some(grant) = &grant {
            grant.may_publish(&event.exchange, &event.routing_key).map_err(|e| match e {
                AuthError::OutOfScope(m) => ApiError::Auth(AuthError::OutOfScope(format!("{where_}{m}"))),
                other => ApiError::Auth(other),
            })?;
        }
        let p = state
            .pipeline
            .prepare(event, &origin)
            .map_err(|e| ApiError::Unprocessable { code: e.reason(), message: format!("{where_}{e}") })?;
        // Each event is bounded, and so is the request: a batch of events each just under the bound would store
        // a thousand times as much.
        stored_bytes = stored_bytes.saturating_add(p.stored_bytes);
        if stored_bytes > MAX_STORED_BYTES_PER_EVENT {
            return Err(ApiError::Unprocessable {
                code: "too_much_to_store",
                message: format!(
                    "{where_}the request's events would store {stored_bytes} bytes of notifications; at most \
                     {MAX_STORED_BYTES_PER_EVENT} per request: send fewer events or recipients per request"
                ),
            });
        }
        if unmatched_route.is_none() && p.unmatched() {
            unmatched_route = Some((p.exchange.clone(), p.routing_key.clone()));
        }
        prepared.push(p);
    }

    let outcomes = state.pipeline.commit(prepared).await?;
    for o in &outcomes {
        let status = o.status.label();
        state
            .ingest_events
            .get(key, (status, 0), || {
                metrics::counter!("herald_ingest_events_total", "transport" => "http", "status" => status,
                    "key" => key.to_owned())
            })
            .increment(1);
    }
    tracing::debug!(key, events = outcomes.len(), "ingest request committed");
    // An event addressed through an alias nobody taught yet stored nothing (the others in the batch did): the
    // caller learns which, and may post it again once the alias is known.
    if let Some(unresolved) = outcomes.iter().find_map(|o| o.error.as_ref()) {
        let (error, message) = (unresolved.reason(), unresolved.to_string());
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Answer::refused(error, message, outcomes)));
    }
    // No rule takes it: stored nowhere, as AMQP dead-letters it — a publisher checking the status learns that its
    // events go nowhere (an `ignore` rule accepts the events a service posts but nobody needs).
    if let Some(i) = outcomes.iter().position(|o| o.status == Status::Unmatched) {
        let o = &outcomes[i];
        let where_ = if single { String::new() } else { format!("event [{i}]: ") };
        let (exchange, routing_key) = unmatched_route.unwrap_or_default();
        let message = format!(
            "{where_}no rule matches event `{}` on exchange `{exchange}` with routing key \
                `{routing_key}`: nothing stored for it (a rule's `exchanges` and `routing_keys` must both match: \
                pass `?exchange=` and `?routing_key=` as the event is published to the broker; \
                `POST /api/v1/admin/rules/dry-run` shows which rule takes what; or add a rule, or an `ignore` rule \
                for events nobody needs)",
            o.event_id
        );
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Answer::refused("unmatched", message, outcomes)));
    }
    Ok((StatusCode::ACCEPTED, Json(Answer { error: None, message: None, results: outcomes })))
}

/// Ingest requests in flight per caller (a service key, or a signed-in user on the dev route), bounded by
/// `server.ingest_max_concurrency_per_key`: a publisher sending bodies slowly holds its share of the ingest slots,
/// never all of them. Entries live while their caller has a request in flight (at most the slots' count).
pub struct IngestShares {
    cap: usize,
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One request's place in its caller's share, given back when dropped.
pub struct Share<'a> {
    shares: &'a IngestShares,
    caller: &'a str,
}

impl IngestShares {
    /// `cap` 0: no cap of its own.
    pub fn new(cap: usize) -> IngestShares {
        IngestShares { cap, in_flight: Default::default() }
    }

    /// A place for one more of `caller`'s requests, or `503 overloaded` when it holds its whole share.
    fn take<'a>(&'a self, caller: &'a str) -> Result<Share<'a>, ApiError> {
        if self.cap > 0 {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get_mut(caller) {
                Some(n) if *n >= self.cap => {
                    return Err(ApiError::Overloaded {
                        code: "overloaded",
                        message: format!(
                            "this caller has {} ingest requests in flight, its share \
                             (server.ingest_max_concurrency_per_key); retry after the Retry-After delay",
                            self.cap
                        ),
                    })
                }
                Some(n) => *n += 1,
                None => drop(in_flight.insert(caller.to_owned(), 1)),
            }
        }
        Ok(Share { shares: self, caller })
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        if self.shares.cap == 0 {
            return;
        }
        let mut in_flight = self.shares.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(self.caller) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(self.caller);
            }
        }
    }
}

/// What ingest's tower layers reject with ([`super::bounded_ingest`]): shed load and timeouts, as JSON 503s.
pub async fn shed(e: tower::BoxError, timeout: std::time::Duration) -> ApiError {
    let (reason, err) = if e.is::<tower::load_shed::error::Overloaded>() {
        let message = "too many ingest requests in flight; retry after the Retry-After delay".to_owned();
        ("overloaded", ApiError::Overloaded { code: "overloaded", message })
    } else if e.is::<tower::timeout::error::Elapsed>() {
        let message = format!(
            "the request took longer than {}s; it may have been stored: retry with the same Idempotency-Key",
            timeout.as_secs()
        );
        ("timeout", ApiError::Overloaded { code: "ingest_timeout", message })
    } else {
        let message = format!("ingest failed: {e}");
        ("shed", ApiError::Overloaded { code: "unavailable", message })
    };
    metrics::counter!("herald_ingest_errors_total", "transport" => "http", "reason" => reason).increment(1);
    // Shedding comes in storms (a store outage holds every slot): bounded per reason, counted above.
    static SHED: ThrottledKinds<4> = ThrottledKinds::new(Level::INFO, "ingest request shed", WINDOW);
    if let Some(repeats) = SHED.admit(reason) {
        tracing::info!(reason, suppressed = repeats.suppressed(), "ingest request shed{repeats}");
    }
    err
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    ApiError::BadRequest { code: "invalid_json", message: DecodeError::InvalidJson(e.to_string()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::{Batch, MAX_BATCH};

    #[test]
    fn a_batch_keeps_at_most_the_cap_and_counts_the_rest_without_building_them() {
        let text = format!("[{}]", (0..MAX_BATCH + 5).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>().join(","));
        let batch: Batch = serde_json::from_str(&text).unwrap();
        assert_eq!((batch.events.len(), batch.count), (MAX_BATCH, MAX_BATCH + 5));
        assert_eq!(batch.events[MAX_BATCH - 1].get(), format!("{{\"n\":{}}}", MAX_BATCH - 1));
        let small: Batch = serde_json::from_str("[1, {\"a\": [2]}]").unwrap();
        assert_eq!((small.events.len(), small.count), (2, 2));
        assert_eq!(small.events[1].get(), "{\"a\": [2]}");
        let broken = format!("[{}, {{]", vec!["0"; MAX_BATCH + 1].join(","));
        assert!(serde_json::from_str::<Batch>(&broken).is_err(), "syntax is checked past the cap too");
        assert!(serde_json::from_str::<Batch>("{}").is_err(), "an object is not a batch");
    }
}
