//! The REST inbox: list (with filters), counts, read / unread, seen all, archive / unarchive, read all, delete,
//! one of those on up to 100 notifications at once (`batch`), and the user's preferences. A user sees only their
//! own inbox; a service key reads any with `inbox:read` and changes any with `inbox:write`.
//!
//! State changes reach the user's open sessions from the store's commit listener, not from these handlers
//! (`CommitListener::changed`, then `counts`): in commit order, only for what a commit changed, so every tab's
//! list ends in the server's state however requests race.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::{error, ApiError, AppState, NoQuery, Path};
use crate::auth::{Principal, Scope};
use crate::inbox::{Change, ListQuery, PreferencesChange};
use crate::protocol::{
    format_ts, BatchAction, BatchRequest, BatchResult, Counts, InboxPage, Notification, Preferences, PreferencesPatch,
    PreferencesUpdate, TypeSetting, UnreadCount,
};
use crate::rules::MAX_TYPE_LEN;

const MAX_LIMIT: u32 = 100;
/// The most notifications one `batch` request names (a page at the largest `limit`).
const MAX_BATCH: usize = 100;
const DEFAULT_LIMIT: u32 = 20;

/// An unknown parameter is refused (`bad_query`): a misspelt `?unread_only=true` would list everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    /// Only notifications with an id below this: the previous page's `next_before`.
    before: Option<i64>,
    /// `true`: only unread notifications that the unread count counts (muted ones are left out, as there).
    #[param(default = false)]
    #[serde(default, deserialize_with = "query_bool")]
    unread: Option<bool>,
    /// `false`: archived notifications are left out; `true`: only archived ones.
    #[param(default = false)]
    #[serde(default, deserialize_with = "query_bool")]
    archived: Option<bool>,
    /// Only notifications of this `type`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Only notifications whose `related_object.type` is this.
    related_type: Option<String>,
    /// With `related_type`: only notifications about this object (`related_object.id`).
    related_id: Option<String>,
    /// jQuery's cache-buster (`cache: false` sends `_=<time>`): taken and ignored, like [`super::NoQuery`] does.
    #[serde(rename = "_")]
    #[param(ignore)]
    #[allow(dead_code)]
    cache_buster: Option<String>,
}

/// A boolean query parameter as clients spell it: `true`/`false`, any case (Python's `requests` sends `True`
/// for `params={"unread": True}`), or `1`/`0`. Anything else is refused, naming what is accepted.
fn query_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let raw = String::deserialize(d)?;
    match raw.as_str() {
        "1" => Ok(Some(true)),
        "0" => Ok(Some(false)),
        t if t.eq_ignore_ascii_case("true") => Ok(Some(true)),
        f if f.eq_ignore_ascii_case("false") => Ok(Some(false)),
        _ => {
            let shown: String = raw.chars().take(40).collect();
            Err(serde::de::Error::custom(format!("`{shown}` is not a boolean (true, false, 1 or 0)")))
        }
    }
}

/// What a filtered list (by type, related object, unread or archived) counts against a user's read rate: it may
/// walk many of the user's own rows to fill a page (their targeted rows of other types or already read, their
/// broadcast states), where a plain page reads a page's worth of rows. Broadcasts are found through their own
/// indexes, never by a walk of every retained one (`inbox::list`).
pub const FILTERED_LIST_READS: usize = 5;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

impl AppState {
    /// The caller may use `user`'s inbox with `scope`, and `user` is an id an inbox can have (a service key could
    /// otherwise write state for an empty, over-long or unreadable id that no event could ever reach).
    /// A read (`Scope::InboxRead`) or a change (`Scope::InboxWrite`) by a user token also counts against its
    /// rate (`api::rate`).
    fn authorize(&self, headers: &HeaderMap, user: &str, scope: Scope) -> Result<Principal, ApiError> {
        let principal = self.principal(headers)?;
        principal.may_access(user, scope).map_err(ApiError::Auth)?;
        crate::event::check_user_id(user)
            .map_err(|bad| ApiError::BadRequest { code: "bad_path", message: format!("{{user_id}}: {bad}") })?;
        match scope {
            Scope::InboxWrite => self.user_writes.charge_for(&principal, user, 1)?,
            Scope::InboxRead => self.user_reads.charge_for(&principal, user, 1)?,
            _ => {}
        }
        Ok(principal)
    }
}

/// What a change answers: the changed notification or preferences to a caller that may read the inbox, and
/// `204` to a service key with `inbox:write` but not `inbox:read`, which may change an inbox without reading it
/// (an unarchive of a notification that is not archived changes nothing and would show it whole).
pub enum Shown<T> {
    Shown(T),
    Hidden,
}

impl<T> Shown<T> {
    fn to(principal: &Principal, user: &str, value: T) -> Self {
        if may_read(principal, user) {
            Shown::Shown(value)
        } else {
            Shown::Hidden
        }
    }
}

/// Whether `principal` may read `user`'s inbox (its owner, or a key with `inbox:read`).
fn may_read(principal: &Principal, user: &str) -> bool {
    principal.may_access(user, Scope::InboxRead).is_ok()
}

impl<T: Serialize> IntoResponse for Shown<T> {
    fn into_response(self) -> Response {
        match self {
            Shown::Shown(value) => Json(value).into_response(),
            Shown::Hidden => StatusCode::NO_CONTENT.into_response(),
        }
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
        error::InboxReadErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
/// Cursor-paginated: `before` is the previous page's `next_before`. A broadcast appears in every user's inbox.
/// Archived notifications are left out unless `archived=true` (which lists only them).
pub async fn list(
    State(state): State<AppState>,
    Path(user): Path<String>,
    params: QueryResult<ListParams>,
    headers: HeaderMap,
) -> Result<Json<InboxPage>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxRead)?;
    let Query(p) = params.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    let filtered = p.kind.is_some() || p.related_type.is_some() || p.unread == Some(true) || p.archived == Some(true);
    if filtered {
        state.user_reads.charge_for(&principal, &user, FILTERED_LIST_READS - 1)?;
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    if p.related_id.is_some() && p.related_type.is_none() {
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: "related_id needs related_type (an id is unique within its type only)".into(),
        });
    }
    // One extra row tells whether there is a next page.
    let q = ListQuery {
        limit: limit + 1,
        before: p.before,
        unread_only: p.unread.unwrap_or(false),
        archived: p.archived.unwrap_or(false),
        kind: p.kind,
        related_type: p.related_type,
        related_id: p.related_id,
    };
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
        error::InboxReadErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn unread_count(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Json<UnreadCount>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    no_query.check()?;
    Ok(Json(UnreadCount { unread_count: state.store.unread_count(&user).await? }))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}/notifications/counts",
    operation_id = "counts",
    tag = "inbox",
    summary = "A user's unread and unseen counts",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    responses(
        (status = 200, description = "Kept as counters and read by key. Archived and muted notifications are in neither; broadcasts are in both until read / seen. Open sessions get the same values in `counts` frames whenever they change.", body = Counts),
        error::InboxReadErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn counts(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Json<Counts>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    no_query.check()?;
    Ok(Json(state.store.counts(&user).await?))
}

/// One handler per single-notification change (`read`, `unread`, `archive`, `unarchive`): the same checks and
/// answer, each its own route and OpenAPI operation.
macro_rules! one_change {
    ($name:ident, $change:ident, $path:literal, $operation:literal, $summary:literal, $shown:literal) => {
        #[utoipa::path(
            post,
            path = $path,
            operation_id = $operation,
            tag = "inbox",
            summary = $summary,
            params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token."), ("id" = i64, Path, description = "The notification's id.")),
            responses(
                (status = 200, description = $shown, body = Notification),
                (status = 204, description = "Changed, shown only to a caller that may read the inbox: a service key with `inbox:write` but not `inbox:read` gets no body."),
                error::OneNotificationWriteErrors
            ),
            security(("user_jwt" = []), ("service_key" = []))
        )]
        pub async fn $name(
            State(state): State<AppState>,
            Path((user, id)): Path<(String, i64)>,
            headers: HeaderMap,
            no_query: NoQuery,
        ) -> Result<Shown<Notification>, ApiError> {
            let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
            no_query.check()?;
            let changed = state.store.change(&user, id, Change::$change).await?;
            let changed = changed.ok_or(ApiError::NotFound("no such notification in this inbox"))?;
            Ok(Shown::to(&principal, &user, changed))
        }
    };
}

one_change!(
    read,
    Read,
    "/api/v1/users/{user_id}/notifications/{id}/read",
    "mark_read",
    "Mark one notification read",
    "The notification, with its `read_at`. Marking it again keeps the first `read_at`. When it was unread, the user's open sessions get a `read` frame and their new `counts` (marking it again sends nothing)."
);

one_change!(
    unread,
    Unread,
    "/api/v1/users/{user_id}/notifications/{id}/unread",
    "mark_unread",
    "Mark one notification unread again",
    "The notification, `read_at` null again (it stays seen). When it was read, the user's open sessions get an `unread` frame and their new `counts` (otherwise nothing)."
);

one_change!(
    archive,
    Archive,
    "/api/v1/users/{user_id}/notifications/{id}/archive",
    "archive",
    "Archive one notification",
    "The notification, with its `archived_at` (archiving it again keeps the first). It leaves the default list and the counts; `archived=true` lists it. When it was not archived, the user's open sessions get an `archived` frame and their new `counts` (otherwise nothing)."
);

one_change!(
    unarchive,
    Unarchive,
    "/api/v1/users/{user_id}/notifications/{id}/unarchive",
    "unarchive",
    "Restore one archived notification",
    "The notification, `archived_at` null again: back in the default list and the counts. When it was archived, the user's open sessions get an `unarchived` frame and their new `counts` (otherwise nothing)."
);

#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/notifications/batch",
    operation_id = "batch",
    tag = "inbox",
    summary = "One action on several notifications at once",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    request_body(content = BatchRequest, description = "`read`, `unread`, `archive`, `unarchive` or `delete`, and 1 to 100 ids: a selection, or the loaded items of a filtered list (what `read_all` cannot narrow)."),
    responses(
        (status = 200, description = "Done in one commit: every id in this inbox is changed (or already was), the others are listed in `not_found`. The user's open sessions get one frame for the lot (`read`, `unread`, `archived`, `unarchived` or `deleted`) naming the ids it changed, then their new `counts` (none changed: nothing).", body = BatchResult),
        (status = 400, description = "A body that is not JSON (`invalid_json`); a body that is not `{\"action\": …, \"ids\": […]}`, an unknown action, or no ids or more than 100 (`bad_request`); a bad path (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::InboxBodyWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn batch(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Json<BatchResult>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    let BatchRequest { action, mut ids } = super::json_body(&state, &headers, body, super::SMALL_BODY_BYTES).await?;
    // One named twice counts once, against the cap too (the body's limit bounds the list before this).
    let mut named = std::collections::HashSet::with_capacity(ids.len());
    ids.retain(|id| named.insert(*id));
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest {
            code: "bad_request",
            message: format!("`ids` names 1 to {MAX_BATCH} notifications ({} different given)", ids.len()),
        });
    }
    // A change of ten notifications weighs one more change against the user's rate (one was charged already).
    state.user_writes.charge_for(&principal, &user, ids.len().div_ceil(10) - 1)?;
    let change = match action {
        BatchAction::Read => Change::Read,
        BatchAction::Unread => Change::Unread,
        BatchAction::Archive => Change::Archive,
        BatchAction::Unarchive => Change::Unarchive,
        BatchAction::Delete => {
            let deleted = state.store.delete_many(&user, ids.clone()).await?;
            let (found, not_found) = split(&ids, &deleted, |d| *d);
            return Ok(Json(BatchResult { action, ids: found, not_found, items: Vec::new() }));
        }
    };
    let changed = state.store.change_many(&user, ids.clone(), change).await?;
    let (found, not_found) = split(&ids, &changed, Option::is_some);
    // A key that may change the inbox but not read it learns which ids exist in it, not what they hold.
    let items: Vec<Notification> =
        if may_read(&principal, &user) { changed.into_iter().flatten().collect() } else { Vec::new() };
    Ok(Json(BatchResult { action, ids: found, not_found, items }))
}

/// `ids` split by the store's answer for each: (those in the inbox, those not).
fn split<T>(ids: &[i64], answers: &[T], found: impl Fn(&T) -> bool) -> (Vec<i64>, Vec<i64>) {
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for (id, answer) in ids.iter().zip(answers) {
        if found(answer) {
            yes.push(*id)
        } else {
            no.push(*id)
        }
    }
    (yes, no)
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/notifications/seen_all",
    operation_id = "seen_all",
    tag = "inbox",
    summary = "Mark every notification seen (the bell was opened)",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    responses(
        (status = 200, description = "Every notification up to `up_to` is seen (broadcasts included); `unseen` is 0. The user's open sessions get a `seen_all` frame and their new `counts`.", body = super::openapi::SeenAllResult),
        (status = 204, description = "Changed, shown only to a caller that may read the inbox: a service key with `inbox:write` but not `inbox:read` gets no body (`up_to` would tell it when the user last received a notification)."),
        error::InboxWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn seen_all(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Shown<serde_json::Value>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    let r = state.store.seen_all(&user).await?;
    Ok(Shown::to(&principal, &user, serde_json::json!({ "up_to": r.up_to, "seen_at": format_ts(&r.seen_at) })))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}/preferences",
    operation_id = "get_preferences",
    tag = "inbox",
    summary = "A user's notification preferences",
    params(("user_id" = String, Path, description = "The user: the user claim of their token.")),
    responses(
        (status = 200, description = "`types`: what the user set, by notification type; `defaults`: the configured defaults (`preferences.muted_by_default`) for types they did not set; `known`: the types the rules in force store as written.", body = Preferences),
        error::InboxReadErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn get_preferences(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Json<Preferences>, ApiError> {
    state.authorize(&headers, &user, Scope::InboxRead)?;
    no_query.check()?;
    let types = state.store.preferences(&user).await?;
    Ok(Json(state.preferences(types)))
}

/// The most types one user's preferences name.
const MAX_TYPES: usize = 1000;
/// A preferences body: room for [`MAX_TYPES`] types of the longest name, as `GET` may show them.
const PREFERENCES_BODY_BYTES: usize = MAX_TYPES * (MAX_TYPE_LEN + 16) + 1024;

#[utoipa::path(
    put,
    path = "/api/v1/users/{user_id}/preferences",
    operation_id = "put_preferences",
    tag = "inbox",
    summary = "Replace a user's notification preferences",
    params(("user_id" = String, Path, description = "The user: the user claim of their token.")),
    request_body(content = PreferencesUpdate, description = "Every type the user sets, `on` or `muted`; types left out fall back to the defaults."),
    responses(
        (status = 200, description = "The preferences now. A muted type's notifications are stored and listed (`\"muted\": true`) but not pushed live and not counted, from the next commit on.", body = Preferences),
        (status = 204, description = "Changed, shown only to a caller that may read the inbox: a service key with `inbox:write` but not `inbox:read` gets no body."),
        (status = 400, description = "A body that is not JSON (`invalid_json`); a body that is not `{\"types\": {type: \"on\" | \"muted\"}}`, a blank or over-long type, or more than 1,000 types (`bad_request`); a bad path (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::InboxBodyWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn put_preferences(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Shown<Preferences>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    let body: PreferencesUpdate = super::json_body(&state, &headers, body, PREFERENCES_BODY_BYTES).await?;
    if body.types.len() > MAX_TYPES {
        return Err(ApiError::BadRequest { code: "bad_request", message: format!("at most {MAX_TYPES} types") });
    }
    check_type_names(body.types.keys())?;
    state.user_writes.charge_for(&principal, &user, body.types.len() / 100)?;
    let preferences = state.change_preferences(&user, PreferencesChange::Replace(body.types)).await?;
    Ok(Shown::to(&principal, &user, preferences))
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/{user_id}/preferences",
    operation_id = "patch_preferences",
    tag = "inbox",
    summary = "Change some of a user's notification preferences",
    params(("user_id" = String, Path, description = "The user: the user claim of their token.")),
    request_body(content = PreferencesPatch, description = "The types to change: `on`, `muted`, or `default` (forget the user's setting: the configured default applies). Types left out keep their setting."),
    responses(
        (status = 200, description = "The preferences now (every type the user set, not only those changed), from the next commit on.", body = Preferences),
        (status = 204, description = "Changed, shown only to a caller that may read the inbox: a service key with `inbox:write` but not `inbox:read` gets no body."),
        (status = 400, description = "A body that is not JSON (`invalid_json`); a body that is not `{\"types\": {type: \"on\" | \"muted\" | \"default\"}}`, a blank or over-long type, more than 2,000 types named, or a change leaving more than 1,000 types set (`bad_request`; nothing changed); a bad path (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::InboxBodyWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn patch_preferences(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Shown<Preferences>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    let body: PreferencesPatch = super::json_body(&state, &headers, body, PREFERENCES_BODY_BYTES).await?;
    // Bounded by what it leaves set (the store checks), so naming more than that is fine (`default` for every
    // type set, and some more), but not without bound: each named type is a row the writer writes.
    if body.types.len() > 2 * MAX_TYPES {
        let message = format!("at most {} types in one change", 2 * MAX_TYPES);
        return Err(ApiError::BadRequest { code: "bad_request", message });
    }
    check_type_names(body.types.keys())?;
    state.user_writes.charge_for(&principal, &user, body.types.len() / 100)?;
    let changes = body.types.into_iter().map(|(kind, change)| (kind, change.setting())).collect();
    let preferences = state.change_preferences(&user, PreferencesChange::Merge(changes)).await?;
    Ok(Shown::to(&principal, &user, preferences))
}

/// Each type a preferences body names is a non-blank string of at most [`MAX_TYPE_LEN`] bytes.
fn check_type_names<'a>(types: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    for kind in types {
        if kind.trim().is_empty() || kind.len() > MAX_TYPE_LEN || kind.chars().any(char::is_control) {
            return Err(ApiError::BadRequest {
                code: "bad_request",
                message: format!(
                    "type {:?}: a notification type is a non-blank string of at most {MAX_TYPE_LEN} bytes, without \
                     control characters",
                    kind.chars().take(40).collect::<String>()
                ),
            });
        }
    }
    Ok(())
}

impl AppState {
    /// What `GET …/preferences` shows: the user's `types`, the configured defaults and the rules' known types.
    fn preferences(&self, types: std::collections::BTreeMap<String, TypeSetting>) -> Preferences {
        let defaults =
            self.settings.preferences.muted_by_default.iter().map(|t| (t.clone(), TypeSetting::Muted)).collect();
        Preferences { types, defaults, known: self.pipeline.rules().known_types() }
    }

    async fn change_preferences(&self, user: &str, change: PreferencesChange) -> Result<Preferences, ApiError> {
        match self.store.change_preferences(user, change, MAX_TYPES).await? {
            Some(types) => Ok(self.preferences(types)),
            None => Err(ApiError::BadRequest {
                code: "bad_request",
                message: format!("at most {MAX_TYPES} types: this change would leave more set (nothing was changed)"),
            }),
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/notifications/read_all",
    operation_id = "mark_all_read",
    tag = "inbox",
    summary = "Mark every notification read",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token.")),
    responses(
        (status = 200, description = "Every notification up to `up_to` is read (broadcasts included). The user's open sessions get a `read_all` frame and their new `counts`.", body = super::openapi::ReadAllResult),
        (status = 204, description = "Changed, shown only to a caller that may read the inbox: a service key with `inbox:write` but not `inbox:read` gets no body (`up_to` would tell it when the user last received a notification)."),
        error::InboxWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn read_all(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Shown<serde_json::Value>, ApiError> {
    let principal = state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    let r = state.store.mark_all_read(&user).await?;
    Ok(Shown::to(&principal, &user, serde_json::json!({ "up_to": r.up_to, "read_at": format_ts(&r.read_at) })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{user_id}/notifications/{id}",
    operation_id = "delete_notification",
    tag = "inbox",
    summary = "Delete one notification",
    params(("user_id" = String, Path, description = "The inbox's owner: the user claim of their token."), ("id" = i64, Path, description = "The notification's id.")),
    responses(
        (status = 204, description = "Deleted (for a broadcast: hidden from this user). The user's open sessions get a `deleted` frame and their new `counts`."),
        error::OneNotificationWriteErrors
    ),
    security(("user_jwt" = []), ("service_key" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    Path((user, id)): Path<(String, i64)>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<StatusCode, ApiError> {
    state.authorize(&headers, &user, Scope::InboxWrite)?;
    no_query.check()?;
    if !state.store.delete(&user, id).await? {
        return Err(ApiError::NotFound("no such notification in this inbox"));
    }
    Ok(StatusCode::NO_CONTENT)
}
