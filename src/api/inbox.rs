//! The REST inbox: list, unread count, mark read, read all, delete. A user sees only their own inbox; a
//! service key reads any with `inbox:read` and changes any with `inbox:write`.
//!
//! Read-state changes are pushed to the user's open sessions (`read`, `read_all`, `deleted` frames) so every
//! tab's badge stays in sync.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState, Path};
use crate::auth::Scope;
use crate::fanout::Message;
use crate::inbox::ListQuery;
use crate::protocol::{format_ts, InboxPage, Notification, ServerFrame, UnreadCount};

const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 20;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<u32>,
    before: Option<i64>,
    unread: Option<bool>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

impl AppState {
    fn authorize(&self, headers: &HeaderMap, user: &str, scope: Scope) -> Result<(), ApiError> {
        self.principal(headers)?.may_access(user, scope).map_err(ApiError::Auth)
    }

    fn push_to_user(&self, user: &str, frame: ServerFrame<'_>) {
        self.fanout.publish(Message::UserFrame { user: Arc::from(user), frame: frame.encode(), skip_session: None });
    }
}

pub async fn list(
    State(state): State<AppState>,
    Path(user): Path<String>,
    params: QueryResult<ListParams>,
    headers: HeaderMap,
) -> Result<Json<InboxPage>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    let Query(p) = params.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    // One extra row tells whether there is a next page.
    let q = ListQuery { limit: limit + 1, before: p.before, unread_only: p.unread.unwrap_or(false) };
    let mut items = state.store.list(&user, q).await?;
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_before = if has_more { items.last().map(|n| n.id) } else { None };
    Ok(Json(InboxPage { items, next_before, has_more }))
}

pub async fn unread_count(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<UnreadCount>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    Ok(Json(UnreadCount { unread_count: state.store.unread_count(&user).await? }))
}

pub async fn read(
    State(state): State<AppState>,
    Path((user, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Json<Notification>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    let n = state.store.mark_read(&user, id).await?.ok_or(ApiError::NotFound("no such notification in this inbox"))?;
    if let Some(read_at) = n.read_at {
        state.push_to_user(&user, ServerFrame::Read { ids: &[id], read_at });
    }
    Ok(Json(n))
}

pub async fn read_all(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    let r = state.store.mark_all_read(&user).await?;
    state.push_to_user(&user, ServerFrame::ReadAll { up_to: r.up_to, read_at: r.read_at });
    Ok(Json(serde_json::json!({ "up_to": r.up_to, "read_at": format_ts(&r.read_at) })))
}

pub async fn remove(
    State(state): State<AppState>,
    Path((user, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    if !state.store.delete(&user, id).await? {
        return Err(ApiError::NotFound("no such notification in this inbox"));
    }
    state.push_to_user(&user, ServerFrame::Deleted { ids: &[id] });
    Ok(StatusCode::NO_CONTENT)
}
