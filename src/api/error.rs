//! The HTTP error boundary: one enum, one status and JSON reason per case.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::AuthError;
use crate::inbox::StoreError;

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
                "the inbox is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(serde_json::json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
