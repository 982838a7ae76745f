//! Service-key endpoints that change how events are routed: recipient aliases, rules reload and dry run, and
//! the AMQP dead letters (list, re-drive).
//!
//! Invariants: only a service key reaches them (a user token is 403), with the scope each needs: an alias
//! says whose inbox events land in, so reading one needs `inbox:read` and teaching one `inbox:write`; a rules
//! reload, a dry run and the dead letters (whose bodies are events as published) need `admin`. A rules file
//! that does not compile is refused with its error and the rules in force stay. A dry run stores, publishes and
//! counts nothing. Listing dead letters never removes one; a letter is removed only after its republish is
//! confirmed ([`crate::ingest::amqp::dead_letters`]). None of these routes carries CORS ([`super::cors`]).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

use super::error::ErrorBody;
use super::{error, ApiError, AppState, NoQuery, Path};
use crate::auth::{Principal, Scope};
use crate::inbox::Write;
use crate::ingest::amqp::dead_letters::{self, DeadLetterError, DeadLetterList, RedriveOutcome, Selection};
use crate::rules::AliasRecord;

/// A service key with `scope`; a user token is refused whatever the scope.
pub(super) fn service_only(state: &AppState, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
    match state.principal(headers)? {
        Principal::Service { grant, .. } => grant.require(scope).map_err(ApiError::Auth),
        _ => Err(ApiError::Forbidden("a service key is required".into())),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// The user this alias stands for: a non-empty string or a number.
    #[schema(value_type = super::openapi::UserId)]
    user_id: serde_json::Value,
}

/// `GET /api/v1/aliases/{kind}/{alias}` → `{kind, alias, user_id}`, 404 when unknown.
#[utoipa::path(
    get,
    path = "/api/v1/aliases/{kind}/{alias}",
    operation_id = "get_alias",
    tag = "aliases",
    summary = "Look up the user an alias stands for",
    params(("kind" = String, Path, description = "The alias's kind, e.g. `student`."), ("alias" = String, Path, description = "The id in that kind, e.g. a student profile id.")),
    responses(
        (status = 200, description = "The alias and its user.", body = super::openapi::Alias),
        (status = 400, description = "A path segment that does not parse (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::BadCredential,
        (status = 403, description = "A user token: this takes a service key (`forbidden`); a service key without `inbox:read` (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No such alias (`not_found`).", body = ErrorBody),
        error::InboxFailedBriefly,
        error::InboxUnavailable
    ),
    security(("service_key" = []))
)]
pub async fn get_alias(
    State(state): State<AppState>,
    Path((kind, alias)): Path<(String, String)>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::InboxRead)?;
    no_query.check()?;
    match state.store.alias(&kind, &alias).await? {
        Some(user) => Ok(Json(serde_json::json!({ "kind": kind, "alias": alias, "user_id": user }))),
        None => Err(ApiError::NotFound("no such alias")),
    }
}

/// `PUT /api/v1/aliases/{kind}/{alias}` `{"user_id": ...}`: teach an alias without an event (a backfill).
#[utoipa::path(
    put,
    path = "/api/v1/aliases/{kind}/{alias}",
    operation_id = "put_alias",
    tag = "aliases",
    summary = "Teach an alias (a backfill, without an event)",
    params(("kind" = String, Path, description = "The alias's kind, e.g. `student`."), ("alias" = String, Path, description = "The id in that kind, e.g. a student profile id.")),
    request_body(content = AliasBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The alias as stored; events addressed to it now reach the user.", body = super::openapi::Alias),
        (status = 400, description = "The body is not JSON (`invalid_json`) or not JSON of this shape (`bad_request`); a path segment that does not parse (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::BadCredential,
        (status = 403, description = "A user token: this takes a service key (`forbidden`); a service key without `inbox:write` (`insufficient_scope`).", body = ErrorBody),
        (status = 422, description = "`user_id` is empty or not a string or number (`missing_user_id`), is over 256 bytes (`user_id_too_long`), holds a control character no token can carry (`invalid_user_id`), or `kind`/`alias` is too long (`alias_too_long`).", body = ErrorBody),
        error::JsonBodyErrors,
        error::InboxFailedBriefly,
        error::InboxUnavailable
    ),
    security(("service_key" = []))
)]
pub async fn put_alias(
    State(state): State<AppState>,
    Path((kind, alias)): Path<(String, String)>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::InboxWrite)?;
    no_query.check()?;
    let body: AliasBody = super::json_body(&state, &headers, body, super::SMALL_BODY_BYTES).await?;
    let user = super::user_id_in_body(&body.user_id)?;
    if kind.len() > crate::event::MAX_ID_LEN || alias.len() > crate::event::MAX_ID_LEN {
        return Err(ApiError::Unprocessable { code: "alias_too_long", message: "kind and alias are ids".into() });
    }
    // An event's alias is read trimmed: a padded or blank one could be taught but never found.
    for (name, id) in [("kind", &kind), ("alias", &alias)] {
        if id.trim().is_empty() || id.trim().len() != id.len() {
            let message = format!("{{{name}}} is blank or has leading or trailing whitespace, which no event names");
            return Err(ApiError::BadRequest { code: "bad_path", message });
        }
    }
    let record = AliasRecord { kind: kind.clone(), alias: alias.clone(), user: user.clone() };
    state.store.apply(vec![Write::Alias(record)]).await?;
    Ok(Json(serde_json::json!({ "kind": kind, "alias": alias, "user_id": user })))
}

/// `POST /api/v1/admin/rules/reload`: load the rules file again (as SIGHUP does) → `{rules: N}`, or 422 with
/// the reason the file was refused.
#[utoipa::path(
    post,
    path = "/api/v1/admin/rules/reload",
    operation_id = "reload_rules",
    tag = "admin",
    summary = "Reload the rules file, on every node",
    description = "Reloads this node's rules file and, once it compiles, asks every other node of the cluster (over Redis) to reload its own; SIGHUP reloads one node. `herald_rules_info{digest}` shows which rules each node runs.",
    responses(
        (status = 200, description = "The new rules are in force here; the other nodes were asked to reload.", body = super::openapi::RulesReloaded),
        (status = 400, description = "A query parameter, which it does not take (`bad_query`): nothing is reloaded.", body = ErrorBody),
        error::AdminErrors,
        (status = 422, description = "The file does not compile (`invalid_rules`, the message says why): the rules in force stay.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn reload_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    no_query: NoQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    no_query.check()?;
    match state.pipeline.reload_rules_everywhere() {
        Ok(rules) => Ok(Json(serde_json::json!({ "rules": rules.len(), "digest": rules.digest() }))),
        Err(e) => {
            tracing::error!(error = %e, "rules reload refused; the rules in force stay");
            Err(ApiError::Unprocessable { code: "invalid_rules", message: e.to_string() })
        }
    }
}

/// Dead letters' page size when none is given.
const DEFAULT_DEAD_LETTERS: usize = 20;
/// Most ids one re-drive names.
const MAX_REDRIVE_IDS: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterParams {
    /// How many letters to show, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<usize>,
    /// jQuery's cache-buster (`_=<time>`), ignored.
    #[serde(rename = "_")]
    #[param(ignore)]
    #[allow(dead_code)]
    cache_buster: Option<String>,
}

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::Disabled => ApiError::Conflict { code: "amqp_disabled", message: e.to_string() },
            DeadLetterError::Unavailable(detail) => {
                // The detail may name hosts; it is logged, not sent.
                tracing::warn!(error = %detail, "the dead-letter queue could not be reached");
                ApiError::Unavailable {
                    code: "amqp_unavailable",
                    message: "the broker cannot be reached now; retry later".into(),
                }
            }
        }
    }
}

/// `GET /api/v1/admin/dead-letters?limit=N`: up to N letters of the AMQP dead-letter queue, none removed.
#[utoipa::path(
    get,
    path = "/api/v1/admin/dead-letters",
    operation_id = "list_dead_letters",
    tag = "admin",
    summary = "List the AMQP dead-letter queue (nothing is removed)",
    description = "Peeks: the letters are taken without acknowledgement and all handed back at once. Nothing is \
        removed, but they come back marked redelivered, a quorum queue may put them behind letters that arrived \
        meanwhile, and a concurrent call does not see letters another call holds.",
    params(DeadLetterParams),
    responses(
        (status = 200, description = "Up to `limit` letters, with their reason, origin and body.", body = DeadLetterList),
        (status = 400, description = "`limit` does not parse or is out of range, or another query parameter (`bad_query`).", body = ErrorBody),
        error::AdminErrors,
        (status = 409, description = "RabbitMQ ingest is not enabled (`amqp_disabled`): there is no dead-letter queue.", body = ErrorBody),
        (status = 503, description = "The broker cannot be reached now, or stopped answering (10 s for each of its operations; `amqp_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    params: Result<Query<DeadLetterParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<DeadLetterList>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    let Query(p) = params.map_err(|e| ApiError::BadRequest { code: "bad_query", message: e.body_text() })?;
    let limit = p.limit.unwrap_or(DEFAULT_DEAD_LETTERS);
    if !(1..=dead_letters::MAX_LIST).contains(&limit) {
        let message = format!("limit must be between 1 and {}", dead_letters::MAX_LIST);
        return Err(ApiError::BadRequest { code: "bad_query", message });
    }
    Ok(Json(state.dead_letters.list(limit).await?))
}

/// Which letters to re-drive: `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The ids of the letters (as listed), 1 to 1000. One call re-drives at most one letter per id (a duplicate
    /// waits for the next call).
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// `true`: every letter in the queue, one per id.
    #[serde(default)]
    all: Option<bool>,
}

/// `POST /api/v1/admin/dead-letters/redrive`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RedriveResults {
    /// One per letter taken, then one `not_found` per id no letter had.
    pub results: Vec<RedriveOutcome>,
}

/// `POST /api/v1/admin/dead-letters/redrive`: republish letters to Herald's own queue, then remove them.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/redrive",
    operation_id = "redrive_dead_letters",
    tag = "admin",
    summary = "Re-drive dead letters to Herald's queue",
    description = "Each selected letter is republished to Herald's own queue (`amqp.queue.name`, through the \
        default exchange; never to its original exchange, whose other queues processed the event already), with \
        its properties minus the death headers and its original exchange and routing key in the \
        `x-herald-exchange` / `x-herald-routing-key` headers, by which the consumer routes it as first published. \
        It is removed from the dead-letter queue only once the broker confirmed the republish. A letter that fails \
        again is dead-lettered again by the consumer.",
    request_body(content = RedriveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What became of each letter: `redriven`, `not_found` or `failed` (it stays; `message` says why).", body = RedriveResults),
        (status = 400, description = "The body is not JSON (`invalid_json`) or not JSON of this shape (`bad_request`); a path segment that does not parse (`bad_path`); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::BadCredential,
        error::AdminOnly,
        (status = 409, description = "RabbitMQ ingest is not enabled (`amqp_disabled`): there is no dead-letter queue.", body = ErrorBody),
        (status = 422, description = "Neither 1 to 1000 `ids` nor `all: true`, or both (`bad_selection`).", body = ErrorBody),
        error::JsonBodyErrors,
        (status = 503, description = "The broker cannot be reached now, or stopped answering (10 s for each of its operations; `amqp_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn redrive_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Json<RedriveResults>, ApiError> {
    service_only(&state, &headers, Scope::Admin)?;
    no_query.check()?;
    let body: RedriveRequest = super::json_body(&state, &headers, body, super::SMALL_BODY_BYTES).await?;
    let selection = match (body.ids, body.all) {
        (Some(ids), None | Some(false)) if (1..=MAX_REDRIVE_IDS).contains(&ids.len()) => Selection::Ids(ids),
        (None, Some(true)) => Selection::All,
        _ => {
            return Err(ApiError::Unprocessable {
                code: "bad_selection",
                message: format!("send either `ids` (1 to {MAX_REDRIVE_IDS} letter ids) or `all: true`"),
            })
        }
    };
    Ok(Json(RedriveResults { results: state.dead_letters.redrive(&selection).await? }))
}

/// `POST /api/v1/admin/rules/dry-run`: an event as a service would publish it, and where it would come from.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// The event exactly as published (any shape in `tests/fixtures/events/`).
    #[schema(value_type = Object)]
    event: Box<serde_json::value::RawValue>,
    /// The routing key it would carry; default: the event's own `event_type`, `event_name` or `_meta.routing_key`.
    #[serde(default)]
    routing_key: Option<String>,
    /// The exchange it would be published to. Given: judged as the AMQP consumer would (an unmatched event is a
    /// dead letter); absent: as HTTP ingest would (`422 unmatched`).
    #[serde(default)]
    exchange: Option<String>,
}

/// What `herald rules test` reports for the event, as JSON.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DryRunResult {
    /// `http` or `amqp`: the transport the event was judged as coming through.
    transport: &'static str,
    /// The event as decoded (null when it does not decode).
    #[schema(value_type = Option<Object>)]
    event: Option<serde_json::Value>,
    /// What would become of it: `outcome` is `stored` (with `rule`, `recipients`, the notification's `type`,
    /// `title`, `content`, `event_type`), `live`, `purged`, `ignored`, `unmatched`, or `dead_letter` (`reason`,
    /// `message`).
    #[schema(value_type = Object)]
    verdict: crate::ingest::dry_run::Verdict,
    /// Whether it would end in the dead-letter queue (over HTTP: a 4xx).
    dead_letter: bool,
    /// The same as `herald rules test` prints it.
    report: String,
}

/// `POST /api/v1/admin/rules/dry-run`: which rule the rules in force match for an event and the notification(s)
/// they would make, without storing or delivering anything. Alias recipients are resolved from the inbox's
/// aliases (and those the event itself teaches), as the commit would.
#[utoipa::path(
    post,
    path = "/api/v1/admin/rules/dry-run",
    operation_id = "dry_run_rules",
    tag = "admin",
    summary = "Dry-run an event through the rules in force",
    description = "Decodes the event as its transport would and routes it with the rules in force: the rule that \
        matched (or why none did, or why it would be dead-lettered), the recipients after aliases, and the \
        notification it would make. Nothing is stored, published or counted.",
    request_body(content = DryRunRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What the gateway would do with the event.", body = DryRunResult),
        (status = 400, description = "The body is not JSON (`invalid_json`) or not JSON of this shape (`bad_request`; the message says where); a query parameter, which it does not take (`bad_query`).", body = ErrorBody),
        error::AdminErrors,
        error::JsonBodyErrors,
        (status = 500, description = "The inbox failed reading an alias (`internal_error`).", body = ErrorBody),
        (status = 503, description = "The inbox cannot be read now (`store_unavailable`): retry after `Retry-After`.", body = ErrorBody)
    ),
    security(("service_key" = []))
)]
pub async fn dry_run_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    no_query: NoQuery,
    body: axum::body::Body,
) -> Result<Json<DryRunResult>, ApiError> {
    use crate::ingest::dry_run;
    service_only(&state, &headers, Scope::Admin)?;
    // The event's exchange and routing key are the body's fields: `?exchange=`, as ingest takes them, would be
    // ignored and the verdict given for another transport.
    no_query.check()?;
    // The event it wraps may be as large as ingest takes, plus the request's own fields.
    let limit = state.settings.server.max_body_bytes.saturating_add(super::SMALL_BODY_BYTES);
    let req: DryRunRequest = super::json_body(&state, &headers, body, limit).await?;
    let http = req.exchange.is_none();
    let transport = if http { "http" } else { "amqp" };
    let rules = state.pipeline.rules();
    let (event, verdict) = match dry_run::decode_one(req.exchange.as_deref(), req.routing_key.as_deref(), req.event) {
        Err(verdict) => (None, verdict),
        Ok(event) => {
            let (needed, taught) = dry_run::aliases(&rules, &event);
            let mut aliases: std::collections::HashMap<(String, String), String> = taught.into_iter().collect();
            for (kind, alias) in needed {
                if aliases.contains_key(&(kind.clone(), alias.clone())) {
                    continue;
                }
                if let Some(user) = state.store.alias(&kind, &alias).await? {
                    aliases.insert((kind, alias), user);
                }
            }
            let settings = &state.settings;
            let (max_frame, unmatched) = (settings.websocket.max_frame_bytes(), settings.amqp.unmatched);
            let verdict = dry_run::verdict(&rules, &event, http, &aliases, max_frame, unmatched);
            let decoded = serde_json::json!({
                "id": event.id,
                "exchange": event.exchange,
                "routing_key": event.routing_key,
                "event_type": event.event_type,
                "shape": event.shape,
            });
            (Some(decoded), verdict)
        }
    };
    let report = dry_run::render_verdict(&verdict).lines().map(str::trim_start).collect::<Vec<_>>().join("\n");
    Ok(Json(DryRunResult { transport, event, dead_letter: verdict.is_dead_letter(), verdict, report }))
}
