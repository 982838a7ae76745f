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

use super::error::ErrorBody;
use super::{ApiError, AppState, Path};
use crate::auth::Scope;
use crate::fanout::Message;
use crate::inbox::ListQuery;
use crate::protocol::{format_ts, InboxPage, Notification, ServerFrame, UnreadCount};

const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// Only notifications with an id below this: the previous page's `next_before`.
    before: Option<i64>,
    /// `true`: only unread notifications.
    #[param(default = false)]
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

#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}/notifications",
    operation_id = "list_notifications",
    tag = "inbox",
    summary = "List a user's notifications, newest first",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token."), ListParams),
    responses(
        (status = 200, description = "A page; pass `next_before` as `before` for the next (older) one.", body = InboxPage),
        (status = 400, description = "A path or query parameter that does not parse (`bad_path`, `bad_query`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A user token for another user's inbox (`forbidden`); a service key without `inbox:read` (`insufficient_scope`).", body = ErrorBody),
        (status = 500, description = "The inbox failed (`internal_error`); the details are logged, not sent.", body = ErrorBody),
        (status = 503, description = "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
/// Cursor-paginated: `before` is the previous page's `next_before`. A broadcast appears in every user's inbox.
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

#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}/notifications/unread_count",
    operation_id = "unread_count",
    tag = "inbox",
    summary = "Count a user's unread notifications",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    responses(
        (status = 200, description = "Unread notifications, broadcasts included.", body = UnreadCount),
        (status = 400, description = "A path or query parameter that does not parse (`bad_path`, `bad_query`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A user token for another user's inbox (`forbidden`); a service key without `inbox:read` (`insufficient_scope`).", body = ErrorBody),
        (status = 500, description = "The inbox failed (`internal_error`); the details are logged, not sent.", body = ErrorBody),
        (status = 503, description = "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn unread_count(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<UnreadCount>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    Ok(Json(UnreadCount { unread_count: state.store.unread_count(&user).await? }))
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/notifications/{id}/read",
    operation_id = "mark_read",
    tag = "inbox",
    summary = "Mark one notification read",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token."), ("id" = i64, Path, description = "The notification's id.")),
    responses(
        (status = 200, description = "The notification, with its `read_at`. Marking it again keeps the first `read_at`. The user's open sessions get a `read` frame.", body = Notification),
        (status = 400, description = "A path or query parameter that does not parse (`bad_path`, `bad_query`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A user token for another user's inbox (`forbidden`); a service key without `inbox:write` (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No such notification in this inbox (`not_found`).", body = ErrorBody),
        (status = 500, description = "The inbox failed (`internal_error`); the details are logged, not sent.", body = ErrorBody),
        (status = 503, description = "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    Path((user, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Json<Notification>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    let n = state.store.mark_read(&user, id).await?.ok_or(ApiError::NotFound("no such notification in this inbox"))?;
    if let Some(read_at) = n.read_at {
        state.trace.recorder().read(id, &user, read_at);
        state.push_to_user(&user, ServerFrame::Read { ids: &[id], read_at });
    }
    Ok(Json(n))
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/notifications/read_all",
    operation_id = "mark_all_read",
    tag = "inbox",
    summary = "Mark every notification read",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    responses(
        (status = 200, description = "Every notification up to `up_to` is read (broadcasts included). The user's open sessions get a `read_all` frame.", body = super::openapi::ReadAllResult),
        (status = 400, description = "A path or query parameter that does not parse (`bad_path`, `bad_query`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A user token for another user's inbox (`forbidden`); a service key without `inbox:write` (`insufficient_scope`).", body = ErrorBody),
        (status = 500, description = "The inbox failed (`internal_error`); the details are logged, not sent.", body = ErrorBody),
        (status = 503, description = "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn read_all(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    let r = state.store.mark_all_read(&user).await?;
    state.trace.recorder().marked_all(crate::trace::Kind::ReadAll, &user, r.up_to, r.read_at);
    state.push_to_user(&user, ServerFrame::ReadAll { up_to: r.up_to, read_at: r.read_at });
    Ok(Json(serde_json::json!({ "up_to": r.up_to, "read_at": format_ts(&r.read_at) })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{user_id}/notifications/{id}",
    operation_id = "delete_notification",
    tag = "inbox",
    summary = "Delete one notification",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token."), ("id" = i64, Path, description = "The notification's id.")),
    responses(
        (status = 204, description = "Deleted (for a broadcast: hidden from this user). The user's open sessions get a `deleted` frame."),
        (status = 400, description = "A path or query parameter that does not parse (`bad_path`, `bad_query`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid credential (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A user token for another user's inbox (`forbidden`); a service key without `inbox:write` (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No such notification in this inbox (`not_found`).", body = ErrorBody),
        (status = 500, description = "The inbox failed (`internal_error`); the details are logged, not sent.", body = ErrorBody),
        (status = 503, description = "The inbox cannot take this now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
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
