//! CORS for the REST API (tower-http's `CorsLayer`): which browser origins' pages may call it.
//!
//! Invariants: only the REST routes carry it (the inbox, ingest, aliases), not `/ws` — a WebSocket handshake
//! is not subject to CORS and checks `websocket.allowed_origins` itself — nor the ops endpoints, nor the admin
//! endpoints (`/api/v1/admin/*`), which only the same-origin admin console reads: whatever the configured
//! origins (even `*`), no other origin's page can read an admin answer (`tests/it/console.rs`).
//! Origins come from `server.cors_allowed_origins`, by default `websocket.allowed_origins`, matched as the
//! handshake matches them (exactly, ASCII case aside); `*` answers `Access-Control-Allow-Origin: *`.
//! Credentials are never allowed (Herald reads bearer tokens, never cookies), so `*` stays safe. A refused
//! origin gets no `Access-Control-*` header at all ([`strip_when_refused`]), and the browser blocks the call.
//! Preflights answer `200` before any handler and are cached for `server.cors_max_age_secs`.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Settings;

/// The layer for the REST routes.
pub fn layer(settings: &Settings) -> CorsLayer {
    let origins = settings.cors_origins();
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let origins = origins.to_vec();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            Settings::origin_allowed(&origins, origin.to_str().unwrap_or(""))
        })
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
        // A 503 tells the page when to retry.
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(settings.server.cors_max_age_secs))
}

/// `CorsLayer` still sends its constant headers (`Access-Control-Allow-Methods`, `-Headers`, `-Max-Age`,
/// `-Expose-Headers`) when it refuses an origin; without `Access-Control-Allow-Origin` they allow nothing,
/// and a refused origin should learn nothing, so they go. `Vary` stays: caches must still key on `Origin`.
pub async fn strip_when_refused(mut resp: Response) -> Response {
    if !resp.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let cors: Vec<HeaderName> =
            resp.headers().keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
        for name in cors {
            resp.headers_mut().remove(name);
        }
    }
    resp
}
