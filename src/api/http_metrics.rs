//! HTTP request metrics from one middleware over every route: `herald_http_requests_total{method,route,status}`
//! and `herald_http_request_duration_seconds{method,route}`.
//!
//! Invariant: `route` is the matched route template (`/api/v1/users/{user_id}/notifications`), never the raw
//! path, which carries user ids (cardinality, and personal data); a request no route matched (the demo's files,
//! a 404) is `fallback`, and a method outside the standard ones is `other`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};

use crate::telemetry::HeldHandles;

/// The two families' handles, held per route, method and status (see [`HeldHandles`]).
#[derive(Default)]
pub struct HttpMetrics {
    requests: HeldHandles<Counter>,
    durations: HeldHandles<Histogram>,
}

/// Axum middleware (`axum::middleware::from_fn_with_state`), layered with `Router::layer` so `MatchedPath` is set.
pub async fn record(State(held): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("fallback", MatchedPath::as_str);
    let status = response.status().as_u16();
    held.durations
        .get(route, (method, 0), || {
            metrics::histogram!("herald_http_request_duration_seconds", "method" => method, "route" => route.to_owned())
        })
        .record(started.elapsed().as_secs_f64());
    held.requests
        .get(route, (method, status), || {
            metrics::counter!("herald_http_requests_total", "method" => method, "route" => route.to_owned(),
                "status" => status.to_string())
        })
        .increment(1);
    response
}

/// The standard methods by name; anything else (a client may send any token) as `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
