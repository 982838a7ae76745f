//! `GET /ws/{user_id}`: the handshake. Origin and token are checked before upgrading, so a refused client
//! costs no session and gets an HTTP status with a JSON reason.
//!
//! The socket's message limit is `websocket.max_auth_message_bytes` (an in-session `auth` refresh carries a
//! token, which may be as large as the one that connected); the session applies `max_inbound_bytes` to every
//! other message. A token already past its `exp` (accepted by REST within `auth.leeway_secs`) is refused here
//! with `401 token_expired`, rather than opening a session that would close with 4001 at once.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde::Deserialize;

use super::error::ErrorBody;
use super::{ApiError, AppState, Path};
use crate::auth::{self, AuthError, Principal};
use crate::config::Settings;
use crate::protocol::{Format, Position};
use crate::session::{self, SessionParams};
use crate::telemetry::ratelimited::{ThrottledKinds, WINDOW};
use tracing::Level;

/// A parameter the handshake does not take is refused (`bad_query`): a misspelt `sinse=3` opened a session
/// without its replay, and the missed notifications were never sent.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// The user's JWT (or send it as `Authorization: Bearer` or `Sec-WebSocket-Protocol: bearer, <jwt>`).
    token: Option<String>,
    /// The targeted chain's cursor: replay this user's notifications after this id before going live.
    since: Option<i64>,
    /// The broadcast chain's cursor; without it (a v1 client) `since` stands for both chains.
    since_broadcast: Option<i64>,
    /// `herald` (default) or `event` (the seeds' frame shape).
    #[serde(default)]
    #[param(inline)]
    format: Format,
    /// jQuery's cache-buster (`cache: false` sends `_=<time>`): taken and ignored, like [`super::NoQuery`] does.
    #[serde(rename = "_")]
    #[param(ignore)]
    #[allow(dead_code)]
    cache_buster: Option<String>,
}

#[utoipa::path(
    get,
    path = "/ws/{user_id}",
    operation_id = "open_session",
    tag = "websocket",
    summary = "Open a live session (WebSocket)",
    description = "A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`). OpenAPI cannot describe the frames: `docs/PROTOCOL.md` is the contract (frames, resume, close codes). The token is checked before the upgrade, so a refused client gets an HTTP status and a JSON reason.",
    params(("user_id" = String, Path, description = "The user whose notifications to receive: the token's user claim."), WsQuery),
    responses(
        (status = 101, description = "Switching protocols: the session starts with a `ready` frame."),
        (status = 400, description = "A bad query or not a WebSocket request (`bad_query`, `not_a_websocket_request`).", body = ErrorBody),
        (status = 401, description = "No, an expired or an invalid token (`missing_credentials`, `token_expired`, `invalid_credentials`).", body = ErrorBody),
        (status = 403, description = "A foreign `Origin`, or a token for another user (`forbidden`).", body = ErrorBody)
    ),
    security(("user_jwt" = []))
)]
pub async fn upgrade(
    State(state): State<AppState>,
    Path(user): Path<String>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let result = handshake(&state, user, query, &headers, ws);
    if let Err(e) = &result {
        let reason = match e {
            ApiError::Auth(AuthError::Missing) => "missing_token",
            ApiError::Auth(AuthError::Expired) => "token_expired",
            ApiError::Auth(AuthError::Invalid(_)) => "invalid_token",
            ApiError::Auth(AuthError::WrongUser(_)) => "wrong_user",
            ApiError::Forbidden(_) => "origin",
            ApiError::RateLimited { .. } => "rate_limited",
            _ => "bad_request",
        };
        metrics::counter!("herald_ws_rejected_total", "reason" => reason).increment(1);
    }
    result
}

fn handshake(
    state: &AppState,
    user: String,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    if query.since.is_none() && query.since_broadcast.is_some() {
        // A broadcast cursor alone would be silently ignored (a session without `since` starts at the newest).
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: "since_broadcast needs since (the targeted cursor; 0 for all that is kept)".into(),
        });
    }
    if query.since.is_some_and(|s| s < 0) || query.since_broadcast.is_some_and(|s| s < 0) {
        return Err(ApiError::BadRequest { code: "bad_query", message: crate::protocol::NEGATIVE_CURSOR.into() });
    }
    let ws = ws.map_err(|e| ApiError::BadRequest { code: "not_a_websocket_request", message: e.body_text() })?;
    check_origin(state, headers)?;

    let token = query
        .token
        .as_deref()
        .or_else(|| auth::bearer(headers))
        .or_else(|| auth::protocol_token(headers))
        .ok_or(ApiError::Auth(AuthError::Missing))?;
    let Principal::User { id, expires_at } = state.auth.verify_user(token).map_err(ApiError::Auth)? else {
        unreachable!("verify_user yields users only")
    };
    if id != user {
        return Err(ApiError::Auth(AuthError::WrongUser(user)));
    }
    if expires_at <= chrono::Utc::now().timestamp() {
        return Err(ApiError::Auth(AuthError::Expired));
    }
    // As over REST: a session for an id no inbox can have (over 256 bytes, say) could never be sent a
    // notification nor read its inbox.
    crate::event::check_user_id(&user)
        .map_err(|bad| ApiError::BadRequest { code: "bad_path", message: format!("{{user_id}}: {bad}") })?;
    // A session opens with a read of the store (and a replay with `since`): one of the user's reads, as over REST
    // (`server.user_reads_per_second`), so a reconnect loop cannot hold the read connections every replay shares.
    state.user_reads.check(&user)?;

    let s = &state.settings.websocket;
    let deps = state.sessions.clone();
    let tracker = state.tracker.clone();
    let since = query.since.map(|t| Position { targeted: t, broadcast: query.since_broadcast.unwrap_or(t) });
    let params = SessionParams { user, since, expires_at, format: query.format };
    // A browser fails a connection whose answer selects none of the protocols it offered: `bearer` when offered
    // (`new WebSocket(url, ["bearer", jwt])`), else the token itself (`new WebSocket(url, [jwt])`).
    let offered = auth::protocol_token(headers).map(|t| std::borrow::Cow::Owned(t.to_owned()));
    Ok(ws
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(s.write_buffer_bytes)
        .max_write_buffer_size(s.max_write_buffer_bytes)
        .max_message_size(s.max_auth_message_bytes)
        .max_frame_size(s.max_auth_message_bytes)
        .protocols(std::iter::once(std::borrow::Cow::Borrowed("bearer")).chain(offered))
        .on_upgrade(move |socket| tracker.track_future(session::run(socket, deps, params))))
}

fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let s = &state.settings.websocket;
    match headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("")) {
        None if s.allow_missing_origin => Ok(()),
        None => Err(ApiError::Forbidden("an Origin header is required".into())),
        Some(origin) => {
            if Settings::origin_allowed(&s.allowed_origins, origin) {
                Ok(())
            } else {
                // A browser hides the 403 from the page (it sees 1006 and reconnects): the operator is told, once
                // per origin per window (`herald_ws_rejected_total{reason="origin"}` counts each).
                static REFUSED: ThrottledKinds<16> =
                    ThrottledKinds::new(Level::WARN, "websocket refused: origin not allowed", WINDOW);
                if let Some(repeats) = REFUSED.admit(origin) {
                    let origin: String = origin.chars().take(200).collect();
                    tracing::warn!(
                        origin,
                        suppressed = repeats.suppressed(),
                        "websocket refused: origin not allowed (add it to websocket.allowed_origins){repeats}"
                    );
                }
                Err(ApiError::Forbidden(format!("origin `{origin}` is not allowed")))
            }
        }
    }
}
