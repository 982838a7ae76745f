//! Service-key endpoints that change how events are routed: recipient aliases and rules reload.
//!
//! Invariants: only a service key reaches them (a user token is 403), with the scope each needs: an alias
//! says whose inbox events land in, so reading one needs `inbox:read` and teaching one `inbox:write`; a rules
//! reload needs `admin`. A rules file that does not compile is refused with its error and the rules in force stay.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::inbox::Write;
use crate::rules::AliasRecord;

/// A service key with `scope`; a user token is refused whatever the scope.
pub(super) fn service_only(state: &AppState, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
    match state.principal(headers)? {
        Principal::Service { grant, .. } => grant.require(scope).map_err(ApiError::Auth),
        _ => Err(ApiError::Forbidden("a service key is required".into())),
    }
}

#[derive(Deserialize)]
pub struct AliasBody {
    user_id: serde_json::Value,
}

/// `GET /api/v1/aliases/{kind}/{alias}` → `{kind, alias, user_id}`, 404 when unknown.
pub async fn get_alias(
    State(state): State<AppState>,
    Path((kind, alias)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::InboxRead)?;
    match state.store.alias(&kind, &alias).await? {
        Some(user) => Ok(Json(serde_json::json!({ "kind": kind, "alias": alias, "user_id": user }))),
        None => Err(ApiError::NotFound("no such alias")),
    }
}

/// `PUT /api/v1/aliases/{kind}/{alias}` `{"user_id": ...}`: teach an alias without an event (a backfill).
pub async fn put_alias(
    State(state): State<AppState>,
    Path((kind, alias)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<AliasBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::InboxWrite)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest { code: "invalid_json", message: e.body_text() })?;
    let user = crate::event::id_string(&body.user_id).ok_or(ApiError::Unprocessable {
        code: "missing_user_id",
        message: "user_id must be a non-empty string or a number".into(),
    })?;
    if kind.len() > crate::event::MAX_ID_LEN || alias.len() > crate::event::MAX_ID_LEN {
        return Err(ApiError::Unprocessable { code: "alias_too_long", message: "kind and alias are ids".into() });
    }
    let record = AliasRecord { kind: kind.clone(), alias: alias.clone(), user: user.clone() };
    state.store.apply(vec![Write::Alias(record)]).await?;
    Ok(Json(serde_json::json!({ "kind": kind, "alias": alias, "user_id": user })))
}

/// `POST /api/v1/admin/rules/reload`: load the rules file again (as SIGHUP does) → `{rules: N}`, or 422 with
/// the reason the file was refused.
pub async fn reload_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    match state.pipeline.reload_rules() {
        Ok(n) => Ok(Json(serde_json::json!({ "rules": n }))),
        Err(e) => {
            tracing::error!(error = %e, "rules reload refused; the rules in force stay");
            Err(ApiError::Unprocessable { code: "invalid_rules", message: e.to_string() })
        }
    }
}
