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
    #[error("content type must be application/json, got `{0}`")]
    UnsupportedMediaType(String),
    #[error("this route does not answer {0}")]
    MethodNotAllowed(String),
    /// Shed before any work: a concurrency limit is full, or the request ran past its timeout.
    #[error("{message}")]
    Overloaded { code: &'static str, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(AuthError::WrongUser(_)) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Auth(AuthError::Missing) => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            ApiError::Auth(AuthError::Expired) => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApiError::Auth(AuthError::Invalid(_)) => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Overloaded { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Store(StoreError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Store(StoreError::Internal(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            // Internals are logged here, once, and not leaked.
            ApiError::Store(e) => {
                tracing::error!(error = %e, "request failed in the store");
                match e {
                    StoreError::Unavailable(_) => "the inbox cannot take this now; retry later".to_owned(),
                    StoreError::Internal(_) => "the inbox is unavailable; retry later".to_owned(),
                }
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(serde_json::json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
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
    async fn overload_answers_503_with_retry_after() {
        let e = ApiError::Overloaded { code: "overloaded", message: "busy".into() };
        let (status, headers, body) = parts(e).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")));
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
    }
}
