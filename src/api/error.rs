//! The HTTP error boundary: one enum, one status and JSON reason per case.
//!
//! Everything that leaves as an error is `{"error": code, "message": text}`, including what axum would answer
//! in plain text or with an empty body: path and query rejections ([`Path`]), 405 (the router's
//! method-not-allowed fallback) and 404. A 503 always carries `Retry-After`.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::AuthError;
use crate::inbox::StoreError;
use crate::telemetry::ratelimited::{ThrottledKinds, WINDOW};
use tracing::Level;

/// The body of every error answer: a stable machine-readable code and a human-readable reason.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(examples(json!({"error": "token_expired", "message": "token expired"})))]
pub struct ErrorBody<'a> {
    /// A stable code (`missing_credentials`, `bad_query`, `store_unavailable`, ...): branch on this.
    pub error: &'a str,
    /// What went wrong, for people: never parse it.
    pub message: &'a str,
}

/// The error answers several endpoints share, each described once for the OpenAPI document: an endpoint names
/// them in its `responses(...)` beside its own. Documentation only: never built.
macro_rules! shared_error_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {$(
        #[derive(utoipa::IntoResponses)]
        #[response(status = $status, description = $description)]
        #[allow(dead_code)]
        pub struct $name(ErrorBody<'static>);
    )*};
}

shared_error_responses! {
    BadPath = 400,
        "A path or query parameter that does not parse, or a query parameter the endpoint does not take (`bad_path`, `bad_query`).";
    InvalidJson = 400,
        "The body is not JSON (`invalid_json`), or JSON not of this shape (`bad_request`).";
    Unauthenticated = 401,
        "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).";
    BadCredential = 401,
        "No or a bad credential (`missing_credentials`, `token_expired`, `invalid_credentials`).";
    NotYourInboxToWrite = 403,
        "A user token for another user's inbox (`forbidden`); a service key without `inbox:write` (`insufficient_scope`).";
    NotYourInboxToRead = 403,
        "A user token for another user's inbox (`forbidden`); a service key without `inbox:read` (`insufficient_scope`).";
    AdminOnly = 403,
        "A user token: this takes a service key (`forbidden`); a service key without `admin` (`insufficient_scope`).";
    NoSuchNotification = 404,
        "No such notification in this inbox (`not_found`).";
    InboxFailed = 500,
        "The inbox failed (`internal_error`); the details are logged, not sent.";
    InboxFailedBriefly = 500,
        "The inbox failed (`internal_error`).";
    RateLimited = 429,
        "Too many changes to this inbox from its user's token (`server.user_writes_per_second`, `rate_limited`): retry after `Retry-After`.";
    ReadRateLimited = 429,
        "Too many reads of this inbox from its user's token (`server.user_reads_per_second`; a filtered list counts as several; `rate_limited`): retry after `Retry-After`.";
    InboxUnavailable = 503,
        "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.";
    BodyTimeout = 408,
        "The body did not arrive whole within `server.body_read_timeout_secs` (`body_timeout`).";
    BodyTooLarge = 413,
        "The body is over this endpoint's limit (`body_too_large`).";
    NotJson = 415,
        "A content type that is not `application/json` or `*+json` (`unsupported_media_type`); a request without one is read as JSON.";
}

/// The sets of those answers several endpoints share, named in their `responses(...)` as one: each is the union
/// of its parts (their statuses differ), in status order as the parts list them.
macro_rules! shared_error_sets {
    ($($(#[$doc:meta])* $name:ident = $($part:ident),+;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses(
            ) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
                let mut all = std::collections::BTreeMap::new();
                $(all.extend(<$part as utoipa::IntoResponses>::responses());)+
                all
            }
        }
    )*};
}

shared_error_sets! {
    /// A change to one notification of a user's inbox.
    OneNotificationWriteErrors = BadPath, Unauthenticated, NotYourInboxToWrite, NoSuchNotification, RateLimited,
        InboxFailed, InboxUnavailable;
    /// A change to a user's whole inbox.
    InboxWriteErrors = BadPath, Unauthenticated, NotYourInboxToWrite, RateLimited, InboxFailed, InboxUnavailable;
    /// A read of a user's inbox.
    InboxReadErrors = BadPath, Unauthenticated, NotYourInboxToRead, ReadRateLimited, InboxFailed, InboxUnavailable;
    /// An admin endpoint's credential.
    AdminErrors = BadCredential, AdminOnly;
    /// A JSON body, read once the caller is authorized (`api::json_body`).
    JsonBodyErrors = BodyTimeout, BodyTooLarge, NotJson;
    /// A change to a user's inbox or preferences with a JSON body (its `400` is the endpoint's own).
    InboxBodyWriteErrors = Unauthenticated, NotYourInboxToWrite, BodyTimeout, BodyTooLarge, NotJson, RateLimited,
        InboxFailed, InboxUnavailable;
}

/// Seconds a client is told to wait after a 503 (store unavailable, ingest overloaded or timed out).
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Auth(AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("body is over the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {secs} s (server.body_read_timeout_secs)")]
    BodyTimeout { secs: u64 },
    #[error("content type must be application/json, got `{0}`")]
    UnsupportedMediaType(String),
    #[error("this route does not answer {0}")]
    MethodNotAllowed(String),
    /// Shed before any work: a concurrency limit is full, or the request ran past its timeout.
    #[error("{message}")]
    Overloaded { code: &'static str, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The request needs something this gateway's configuration does not enable (`409`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A dependency (the broker) cannot be reached now: `503` with `Retry-After`. The detail is logged here.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// A user read or changed their inbox faster than `server.user_reads_per_second` or
    /// `server.user_writes_per_second`: `429` with `Retry-After`.
    #[error("too many {noun} of this inbox: retry in {retry_after_secs} s", noun = budget.noun())]
    RateLimited { retry_after_secs: u64, budget: super::rate::Budget },
    #[error("the request head is {len} bytes, over the {max} allowed (server.max_head_bytes)")]
    HeadTooLarge { len: usize, max: usize },
}

impl ApiError {
    /// The `error` code of the answer.
    pub(crate) fn code(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(AuthError::WrongUser(_)) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Auth(AuthError::Missing) => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            ApiError::Auth(AuthError::Expired) => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApiError::Auth(AuthError::Invalid(_)) => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            // RFC 6750's name for a valid credential that lacks what the request needs.
            ApiError::Auth(AuthError::MissingScope(_) | AuthError::OutOfScope(_)) => {
                (StatusCode::FORBIDDEN, "insufficient_scope")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Overloaded { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Store(StoreError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Store(StoreError::Internal(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::HeadTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request_head_too_large"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            // Internals are logged here, once, and not leaked.
            ApiError::Store(e) => {
                // An outage fails every request alike: its first failure of each kind in full, then a count
                // (`telemetry::ratelimited`; `herald_store_write_errors_total` counts each).
                static FAILED: ThrottledKinds<2> =
                    ThrottledKinds::new(Level::ERROR, "request failed in the store", WINDOW);
                let kind = matches!(e, StoreError::Unavailable(_));
                if let Some(repeats) = FAILED.admit(kind) {
                    tracing::error!(error = %e, suppressed = repeats.suppressed(), "request failed in the store{repeats}");
                }
                match e {
                    StoreError::Unavailable(_) => "the inbox cannot take this now; retry later".to_owned(),
                    StoreError::Internal(_) => "the inbox is unavailable; retry later".to_owned(),
                }
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(ErrorBody { error: code, message: &message })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let ApiError::RateLimited { retry_after_secs, .. } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest { code: "bad_path", message: e.body_text() }
    }
}

/// `axum::extract::Path` whose rejection is an [`ApiError`] (`400 bad_path`, JSON) instead of plain text.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The safety net under every route: an error response that is not JSON (an extractor's plain-text rejection
/// in a handler that does not map it, a layer's bare status) is rewritten as `{"error", "message"}`, its
/// status and headers kept. Handlers still answer their own precise codes; this keeps the invariant for routes
/// added later. A head over `max_head` bytes is answered here, before any route: `431 request_head_too_large`.
pub async fn json_errors(
    axum::extract::State(max_head): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // hyper bounds what it buffers of a head (`server.max_head_bytes`), but a head that arrives whole in one read
    // can pass that bound by a read's size; the bound is exact here, and answered in JSON.
    let len = head_len(&req);
    if len > max_head {
        return ApiError::HeadTooLarge { len, max: max_head }.into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Rejections are a line of text; anything longer is cut, not buffered without bound.
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        t => t.to_owned(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "error",
    };
    let body = serde_json::to_vec(&ErrorBody { error: code, message: &message }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER) {
        parts.headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The bytes of a request's head as HTTP/1.1 sent it: the request line, each header line, the blank line.
fn head_len(req: &axum::extract::Request) -> usize {
    let line = req.method().as_str().len() + 1 + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 11;
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + 2 + value.len() + 2).sum();
    line + headers + 2
}

/// A 405 for a route that exists under another method. The router keeps its `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(e: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let resp = e.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_unavailable_store_answers_503_with_retry_after_and_a_json_reason() {
        let (status, headers, body) = parts(ApiError::Store(StoreError::Unavailable("disk full".into()))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(body["error"], "store_unavailable");
        assert!(!body["message"].as_str().unwrap().contains("disk full"), "internals are not leaked: {body}");
        let (status, headers, body) = parts(ApiError::Store(StoreError::Internal("bug".into()))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert_eq!(body["error"], "internal_error");
    }

    #[tokio::test]
    async fn plain_text_errors_from_any_route_leave_as_json_and_the_rest_is_untouched() {
        use axum::routing::get;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/n/{id}", get(|axum::extract::Path(id): axum::extract::Path<i64>| async move { id.to_string() }))
            .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }))
            .route("/bare", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/json", get(|| async { ApiError::NotFound("gone") }))
            .layer(axum::middleware::from_fn_with_state(32 * 1024, json_errors));
        let call = |uri: &'static str| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap()).await;
                let (parts, body) = resp.unwrap().into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
                (parts.status, parts.headers, bytes)
            }
        };
        let (status, headers, body) = call("/n/abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("abc"), "{body}");
        let (status, _, body) = call("/teapot").await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status.as_u16(), body["error"].as_str(), body["message"].as_str()),
            (418, Some("error"), Some("short and stout"))
        );
        let (status, headers, body) = call("/bare").await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status.as_u16(), body["error"].as_str()), (503, Some("unavailable")));
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
        let (_, _, body) = call("/json").await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "not_found", "JSON errors pass as they are");
        let (status, _, body) = call("/n/7").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"7"[..]), "successes pass as they are");
    }

    #[tokio::test]
    async fn overload_answers_503_with_retry_after() {
        let e = ApiError::Overloaded { code: "overloaded", message: "busy".into() };
        let (status, headers, body) = parts(e).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
    }
}
