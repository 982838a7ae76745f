//! Dead letters for operators: list the dead-letter queue without removing anything, and re-drive letters to
//! Herald's own queue, to be routed as they were first published (after a rule fix, an alias backfill).
//!
//! Each call opens its own short-lived connection: an operator's occasional request does not share the
//! consumer's channels, and a broker that cannot be reached is a `503`, not a stalled consumer.
//!
//! - **Listing peeks**: up to `limit` letters are taken with `basic.get` without auto-ack on one channel, then all
//!   handed back at once with `basic.nack multiple requeue`. Nothing is removed, but a peek is a delivery: the
//!   letters come back marked redelivered, a quorum queue may put them behind letters that arrived meanwhile,
//!   and while one call holds them another call does not see them (a concurrent re-drive answers `not_found`).
//!   Each body is shown up to its first [`MAX_BODY_SHOWN`] bytes (`body_truncated`; `size` is the whole body's):
//!   100 letters of several MiB each would otherwise make a response of hundreds of MiB.
//! - **Re-drive** takes the letters the same way, holding each until the call ends, republishes each selected
//!   one (confirm mode, `mandatory`) to **Herald's queue only** (`amqp.queue.name`, through the default exchange),
//!   never to its original exchange: every other queue bound there (other services' consumers) processed the
//!   event already and must not get a second copy. The republished message keeps its properties, the death
//!   headers removed, and carries its original exchange and routing key in `x-herald-exchange` /
//!   `x-herald-routing-key`; the consumer routes a delivery that came through the default exchange with those
//!   headers as if it came from that exchange with that routing key ([`moved_back`]). The letter is
//!   acknowledged only once the broker confirmed the republish. Everything else (not selected, or its
//!   republish failed, e.g. Herald's queue does not exist yet) is requeued at the end. A re-driven letter that
//!   fails again is dead-lettered by the consumer as any message is, with the same origin; it keeps its id, and
//!   one call re-drives at most one letter per id, so the re-drive itself never loops.
//! - A letter's id is its `message_id`, or a digest of its body, original exchange, routing key and first
//!   dead-lettering time (all carried across re-drives). A duplicate (the same message dead-lettered twice, e.g.
//!   around a crash) waits for the next call; the inbox deduplicates it by event id.
//! - Letters handed back reappear as soon as the broker applies the requeue (for a quorum queue, a moment
//!   after the call answers): a call made at once may not see them yet.
//! - Death counts survive a re-drive: the republished message carries `x-herald-deaths` and
//!   `x-herald-first-dead-lettered-at`, which the consumer continues when it dead-letters the message again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bounded;
use crate::config::{AmqpQueueSettings, AmqpSettings};

/// How long opening the connection may take before the call answers `503`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each broker operation of a listing or a re-drive is [`bounded`]: past it the call answers `503`. Closing the
/// connection, which hands back what it held, waits `CLOSE_TIMEOUT`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most letters one listing returns.
pub const MAX_LIST: usize = 100;
/// Most bytes of a letter's body a listing shows (cut on a character boundary for text, before base64 for
/// binary); the rest is left out and the letter says `body_truncated`.
pub const MAX_BODY_SHOWN: usize = 64 * 1024;
/// Most letters one re-drive takes from the queue (the rest wait for the next call).
pub const MAX_REDRIVE: usize = 10_000;

/// Headers Herald sets when it dead-letters (see `consumer::dead_letter_properties`), and the broker's.
pub(super) const REASON: &str = "x-herald-reason";
pub(super) const ERROR: &str = "x-herald-error";
pub(super) const EXCHANGE: &str = "x-herald-exchange";
pub(super) const ROUTING_KEY: &str = "x-herald-routing-key";
pub(super) const QUEUE: &str = "x-herald-queue";
pub(super) const EVENT_ID: &str = "x-herald-event-id";
/// How many times the message was dead-lettered by Herald (carried across re-drives).
pub(super) const DEATHS: &str = "x-herald-deaths";
/// When Herald dead-lettered it first (AMQP timestamp, seconds; carried across re-drives).
pub(super) const FIRST_DEATH_AT: &str = "x-herald-first-dead-lettered-at";
/// When Herald dead-lettered it this time.
pub(super) const DEATH_AT: &str = "x-herald-dead-lettered-at";
/// How many times an event with an unresolved recipient was held in the retry queue and routed again.
pub(super) const RETRIES: &str = "x-herald-retries";
/// Set on a republish whose publisher's headers did not fit one frame and were dropped: their size in bytes.
pub(super) const HEADERS_DROPPED: &str = "x-herald-headers-dropped";
/// What every header Herald sets begins with (a re-drive drops them all: it writes its own).
const HERALD_PREFIX: &str = "x-herald-";
/// Every header Herald sets: what a republish whose headers do not fit one frame keeps (a publisher's own
/// `x-herald-*` header is the publisher's, dropped with the rest).
pub(super) const HERALD_HEADERS: [&str; 11] =
    [REASON, ERROR, EXCHANGE, ROUTING_KEY, QUEUE, EVENT_ID, DEATHS, FIRST_DEATH_AT, DEATH_AT, RETRIES, HEADERS_DROPPED];

/// The dead-letter queue as operators see it. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    settings: Option<Arc<AmqpSettings>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("RabbitMQ ingest is not enabled (amqp.enabled = false): there is no dead-letter queue")]
    Disabled,
    /// The broker could not be reached or refused the operation; the detail is for the log only.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
}

impl From<lapin::Error> for DeadLetterError {
    fn from(e: lapin::Error) -> Self {
        DeadLetterError::Unavailable(e.to_string())
    }
}

impl From<super::BrokerError> for DeadLetterError {
    fn from(e: super::BrokerError) -> Self {
        DeadLetterError::Unavailable(e.to_string())
    }
}

/// How a letter's body is shown.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// The body is valid UTF-8 and shown as it is.
    Utf8,
    /// The body is not UTF-8: standard base64.
    Base64,
}

/// One letter of the dead-letter queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The message's `message_id`, or `sha256:` and a digest of its body, original exchange, routing key and
    /// first dead-lettering time. Stable while the letter waits.
    pub id: String,
    /// Why: Herald's reason (`unmatched`, `unresolved_recipient`, `invalid_json`, `oversized`, ...) or the
    /// broker's (`delivery_limit`, `rejected`, `expired`), `unknown` when neither says.
    pub reason: String,
    /// Herald's error text, when Herald dead-lettered it.
    pub error: Option<String>,
    /// The event id, when Herald could read one.
    pub event_id: Option<String>,
    /// The exchange the message was first published to.
    pub exchange: String,
    /// Its original routing key.
    pub routing_key: String,
    /// How many times it was dead-lettered (re-drives included).
    pub deaths: u64,
    /// How many times it waited in the retry queue for an alias nobody had taught yet (`x-herald-retries`; 0
    /// when it never did). A letter with another reason may have waited too (the rules changed between tries).
    pub retries: u32,
    /// When it was first dead-lettered (second precision), when known.
    pub first_dead_lettered_at: Option<DateTime<Utc>>,
    /// The whole body's size in bytes (also when `body` shows only its beginning).
    pub size: usize,
    /// The body as published, at most its first 64 KiB (65,536 bytes; `body_truncated`): text when it is
    /// UTF-8 (cut on a character boundary), otherwise base64 of those bytes (`body_encoding`).
    pub body: String,
    pub body_encoding: BodyEncoding,
    /// `true` when `body` shows only the beginning of a body over 64 KiB; `size` is the whole body's.
    pub body_truncated: bool,
}

/// `GET /api/v1/admin/dead-letters`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// The dead-letter queue (`amqp.queue.dead_letter_queue`).
    pub queue: String,
    /// Letters ready in the queue when the call started (those held by another call are not counted).
    pub total: u64,
    /// Up to `limit` letters, oldest first as far as the queue keeps its order.
    pub letters: Vec<DeadLetter>,
}

/// What to re-drive.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<String>),
    All,
}

/// What became of one letter.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedriveStatus {
    /// Republished (confirmed by the broker) and removed from the dead-letter queue.
    Redriven,
    /// No letter with this id was in the queue (or another call held it).
    NotFound,
    /// Its republish failed: the letter stays in the dead-letter queue; `message` says why.
    Failed,
}

/// One letter's re-drive outcome.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedriveOutcome {
    /// The letter's id, as listed (or as asked, for `not_found`).
    pub id: String,
    pub outcome: RedriveStatus,
    /// Why the republish failed (only with `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DeadLetters {
    /// The dead-letter queue of `settings`, or none when AMQP ingest is not enabled.
    pub fn new(settings: &AmqpSettings) -> Self {
        DeadLetters { settings: settings.enabled.then(|| Arc::new(settings.clone())) }
    }

    /// Up to `limit` letters, without removing any.
    pub async fn list(&self, limit: usize) -> Result<DeadLetterList, DeadLetterError> {
        let s = self.settings()?;
        let (conn, ch) = connect(s).await?;
        let result = peek(&ch, &s.queue, limit.min(MAX_LIST)).await;
        close(conn).await;
        result
    }

    /// Re-drive the selected letters; one outcome per letter taken, and `not_found` per id none had.
    pub async fn redrive(&self, selection: &Selection) -> Result<Vec<RedriveOutcome>, DeadLetterError> {
        let s = self.settings()?;
        let (conn, ch) = connect(s).await?;
        let result = redrive(&conn, &ch, &s.queue, selection).await;
        close(conn).await;
        result
    }

    fn settings(&self) -> Result<&AmqpSettings, DeadLetterError> {
        self.settings.as_deref().ok_or(DeadLetterError::Disabled)
    }
}

/// Take up to `limit` letters unacknowledged, then hand them all back at once.
async fn peek(ch: &Channel, q: &AmqpQueueSettings, limit: usize) -> Result<DeadLetterList, DeadLetterError> {
    let (queue, retry_queue) = (q.dead_letter_queue.as_str(), q.retry_queue_name());
    let total = depth(ch, queue).await?;
    let mut letters = Vec::new();
    let mut last_tag = None;
    while letters.len() < limit {
        let get = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false });
        let Some(m) = bounded("a basic.get", get).await? else { break };
        last_tag = Some(m.delivery.delivery_tag);
        letters.push(describe(&m.delivery, &retry_queue));
    }
    if let Some(tag) = last_tag {
        bounded("a basic.nack", ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true })).await?;
    }
    Ok(DeadLetterList { queue: queue.to_owned(), total: total.into(), letters })
}

/// Every letter taken is held unacknowledged until the end: acknowledged once its republish is confirmed,
/// otherwise (not selected, a second letter with an id already taken, or its republish failed) requeued with the
/// rest at the end, so that this call never takes the same letter twice.
async fn redrive(
    conn: &Connection,
    ch: &Channel,
    q: &AmqpQueueSettings,
    selection: &Selection,
) -> Result<Vec<RedriveOutcome>, DeadLetterError> {
    let (queue, herald_queue, retry_queue) = (q.dead_letter_queue.as_str(), q.name.as_str(), q.retry_queue_name());
    let wanted: HashSet<&str> = match selection {
        Selection::Ids(ids) => ids.iter().map(String::as_str).collect(),
        Selection::All => HashSet::new(),
    };
    let mut publisher = bounded("opening a publishing channel", Publisher::open(conn, herald_queue)).await?;
    let mut outcomes = Vec::new();
    let mut found = HashSet::new();
    let mut last_held = None;
    // Until the queue has nothing more to give: every letter taken is held, so none is taken twice.
    for _ in 0..MAX_REDRIVE {
        if !wanted.is_empty() && found.len() == wanted.len() {
            break; // every letter asked for was taken: the rest of the queue stays untouched
        }
        let get = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false });
        let Some(m) = bounded("a basic.get", get).await? else { break };
        let d = m.delivery;
        let letter = describe(&d, &retry_queue);
        let selected = matches!(selection, Selection::All) || wanted.contains(letter.id.as_str());
        // One letter per id per call: a second one is a duplicate, or the same message dead-lettered again
        // since this call re-drove it (re-driving that would loop).
        if !selected || !found.insert(letter.id.clone()) {
            last_held = Some(d.delivery_tag);
            continue;
        }
        let outcome = match publisher.republish(conn, &d, &letter).await {
            Ok(()) => {
                bounded("a basic.ack", ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: false })).await?;
                metrics::counter!("herald_amqp_dead_letters_redriven_total", "outcome" => "redriven").increment(1);
                tracing::info!(
                    id = %letter.id, exchange = %letter.exchange, routing_key = %letter.routing_key,
                    reason = %letter.reason, queue = herald_queue, "dead letter re-driven"
                );
                RedriveOutcome { id: letter.id, outcome: RedriveStatus::Redriven, message: None }
            }
            Err(why) => {
                last_held = Some(d.delivery_tag);
                metrics::counter!("herald_amqp_dead_letters_redriven_total", "outcome" => "failed").increment(1);
                tracing::warn!(
                    id = %letter.id, exchange = %letter.exchange, queue = herald_queue, error = %why,
                    "re-driving a dead letter failed; it stays in the dead-letter queue"
                );
                RedriveOutcome { id: letter.id, outcome: RedriveStatus::Failed, message: Some(why) }
            }
        };
        outcomes.push(outcome);
    }
    if let Some(tag) = last_held {
        // Every letter still held up to the last one held (those acknowledged are no longer outstanding).
        bounded("a basic.nack", ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true })).await?;
    }
    if let Selection::Ids(ids) = selection {
        let mut reported = HashSet::new();
        for id in ids {
            if !found.contains(id) && reported.insert(id.as_str()) {
                outcomes.push(RedriveOutcome { id: id.clone(), outcome: RedriveStatus::NotFound, message: None });
            }
        }
    }
    Ok(outcomes)
}

async fn connect(s: &AmqpSettings) -> Result<(Connection, Channel), DeadLetterError> {
    let name = format!("{} (dead letters)", s.connection_name);
    let conn =
        super::connect(s, &name, CONNECT_TIMEOUT).await.map_err(|e| DeadLetterError::Unavailable(format!("{e:#}")))?;
    let ch = bounded("opening a channel", conn.create_channel()).await?;
    Ok((conn, ch))
}

/// Letters ready in `queue`. A queue that does not exist yet (the consumer declares it) is an error.
async fn depth(ch: &Channel, queue: &str) -> Result<u32, DeadLetterError> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = bounded("a passive queue.declare", ch.queue_declare(queue.into(), passive, FieldTable::default()));
    Ok(declared.await?.message_count())
}

/// Closing returns whatever this connection still holds unacknowledged to the queue.
async fn close(conn: Connection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "done".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing the dead-letter connection failed; the broker requeues what it held")
        }
        Err(_) => tracing::debug!("the broker did not answer the close; it requeues what it held when the link ends"),
    }
}

/// A confirm-mode channel to Herald's queue, reopened after an error closed it.
struct Publisher {
    ch: Channel,
    /// Herald's queue (`amqp.queue.name`): re-drives go there only, through the default exchange.
    queue: String,
}

impl Publisher {
    async fn open(conn: &Connection, queue: &str) -> Result<Publisher, lapin::Error> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { ch, queue: queue.to_owned() })
    }

    /// Republish to Herald's queue (never to the original exchange, whose other queues processed the event
    /// already) and wait for the confirm. `Err` says why in words an operator can act on.
    async fn republish(&mut self, conn: &Connection, d: &Delivery, letter: &DeadLetter) -> Result<(), String> {
        if !self.ch.status().connected() {
            *self = bounded("opening a publishing channel", Publisher::open(conn, &self.queue))
                .await
                .map_err(|e| format!("reopening the publishing channel: {e}"))?;
        }
        // Its properties as the consumer's own republishes carry them: without the publisher's `user_id`, which the
        // broker refuses from Herald's own user (406, the channel closed: the letter could never be re-driven).
        let props = super::consumer::republished_properties(&d.properties, redriven_headers(d, letter));
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let publish = self.ch.basic_publish("".into(), self.queue.as_str().into(), options, &d.data, props);
        let confirm = bounded("a publish with its confirm", async { publish.await?.await })
            .await
            .map_err(|e| format!("publishing to queue `{}` failed: {e}", self.queue))?;
        if confirm.is_nack() {
            return Err(format!("the broker refused the message (nack) for queue `{}`", self.queue));
        }
        if confirm.take_message().is_some() {
            return Err(format!(
                "unroutable: queue `{}` does not exist (Herald's consumer declares it when it connects)",
                self.queue
            ));
        }
        Ok(())
    }
}

/// The letter's headers minus the death headers (the broker's `x-death`, `x-first-death-*`, `x-last-death-*`,
/// `x-delivery-count` and Herald's `x-herald-*`), with the death count and first time carried on, and the
/// letter's original exchange and routing key in `x-herald-exchange` / `x-herald-routing-key`: the re-drive goes
/// through the default exchange, and the consumer routes it by these ([`moved_back`]).
fn redriven_headers(d: &Delivery, letter: &DeadLetter) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(headers) = d.properties.headers() {
        for (k, v) in headers.inner() {
            let name = k.as_str();
            if !broker_death_header(name) && !name.starts_with(HERALD_PREFIX) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert(EXCHANGE.into(), AMQPValue::LongString(letter.exchange.as_str().into()));
    out.insert(ROUTING_KEY.into(), AMQPValue::LongString(letter.routing_key.as_str().into()));
    out.insert(DEATHS.into(), AMQPValue::LongLongInt(letter.deaths.try_into().unwrap_or(i64::MAX)));
    if let Some(t) = letter.first_dead_lettered_at {
        out.insert(FIRST_DEATH_AT.into(), AMQPValue::Timestamp(t.timestamp().max(0) as u64));
    }
    out
}

/// What the letter's headers say, in the shape the API shows.
fn describe(d: &Delivery, retry_queue: &str) -> DeadLetter {
    // The retry queue's expiries are waits, not deaths (a retried message the broker itself dead-lettered, at a
    // delivery limit, still carries them).
    let mut table = d.properties.headers().clone().unwrap_or_default();
    forget_retry_deaths(&mut table, retry_queue);
    let headers = table.inner();
    let text = |k: &str| headers.get(k).and_then(string);
    // The broker's own dead-lettering (a delivery limit): `x-death`, most recent first.
    let oldest = x_deaths(headers).last().map(|t| t.inner());
    let (deaths, first) = deaths_so_far(headers);
    let (broker_exchange, broker_routing_key) = broker_origin(headers);
    let (exchange, routing_key) = match (text(EXCHANGE), broker_exchange) {
        (Some(exchange), _) if !exchange.is_empty() => (exchange, text(ROUTING_KEY).or(broker_routing_key)),
        // An earlier version recorded "" for a letter that came through the default exchange (a re-drive): the
        // broker's record instead, exchange and key together, so a re-drive restores the real origin.
        (_, Some(exchange)) => (exchange, broker_routing_key.or_else(|| text(ROUTING_KEY))),
        (exchange, None) => {
            (exchange.unwrap_or_else(|| d.exchange.to_string()), text(ROUTING_KEY).or(broker_routing_key))
        }
    };
    let routing_key = routing_key.unwrap_or_else(|| d.routing_key.to_string());
    let reason = text(REASON)
        .or_else(|| text("x-first-death-reason"))
        .or_else(|| oldest.and_then(|t| t.get("reason")).and_then(string))
        .unwrap_or_else(|| "unknown".into());
    let first_dead_lettered_at = first.and_then(|s| DateTime::from_timestamp(i64::try_from(s).ok()?, 0));
    // A `message_id` that was not UTF-8 reads lossily (U+FFFD), so two such ids could read the same: it names
    // nothing here either, as in the consumer, and the letter is named by its digest.
    let id = match d.properties.message_id() {
        Some(id) if !id.as_str().is_empty() && !id.as_str().contains(char::REPLACEMENT_CHARACTER) => id.to_string(),
        _ => {
            let mut h = Sha256::new();
            for part in [exchange.as_bytes(), routing_key.as_bytes(), &first.unwrap_or(0).to_be_bytes(), &d.data] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            format!("sha256:{}", hex::encode(&h.finalize()[..16]))
        }
    };
    let (body, body_encoding, body_truncated) = shown_body(&d.data, MAX_BODY_SHOWN);
    DeadLetter {
        id,
        reason,
        error: text(ERROR),
        event_id: text(EVENT_ID),
        exchange,
        routing_key,
        deaths,
        retries: retries(headers),
        first_dead_lettered_at,
        size: d.data.len(),
        body,
        body_encoding,
        body_truncated,
    }
}

/// At most the first `max` bytes of `data`, as text when the whole body is UTF-8 (cut on a character
/// boundary), otherwise as base64 of those bytes; and whether anything was left out.
fn shown_body(data: &[u8], max: usize) -> (String, BodyEncoding, bool) {
    let truncated = data.len() > max;
    match std::str::from_utf8(data) {
        Ok(text) => {
            let mut end = max.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), BodyEncoding::Utf8, truncated)
        }
        Err(_) => {
            let shown = &data[..max.min(data.len())];
            (base64::engine::general_purpose::STANDARD.encode(shown), BodyEncoding::Base64, truncated)
        }
    }
}

/// A dead letter re-driven to Herald's queue, or moved back by hand (a queue-to-queue shovel, the management UI's
/// "move messages"), arrives through the default exchange under the queue's name: the exchange and routing key it
/// was first published with, from the `x-herald-exchange` / `x-herald-routing-key` headers, to route it as then.
/// Only then: a delivery from a named exchange is routed by its real exchange and routing key, whatever its
/// headers say (a publisher cannot pose as another exchange).
pub(super) fn moved_back(d: &Delivery, queue: &str) -> Option<(String, String)> {
    if !d.exchange.as_str().is_empty() || d.routing_key.as_str() != queue {
        return None;
    }
    let headers = d.properties.headers().as_ref()?.inner();
    let exchange = headers.get(EXCHANGE).and_then(string).filter(|x| !x.is_empty())?;
    Some((exchange, headers.get(ROUTING_KEY).and_then(string)?))
}

/// Where a delivery was first published, as the consumer records it when it dead-letters it
/// (`x-herald-exchange` / `x-herald-routing-key`): a named exchange's delivery, its exchange and routing key; one
/// through the default exchange (a re-drive, a letter moved back by hand), the origin its headers carry — the
/// one the consumer routed it by ([`moved_back`]) — else the broker's own dead-lettering record (`x-death`), so
/// that a known origin is never replaced by the default exchange's "". `("", key)` only when nothing says more.
pub(super) fn origin(d: &Delivery, queue: &str) -> (String, String) {
    if !d.exchange.as_str().is_empty() {
        return (d.exchange.to_string(), d.routing_key.to_string());
    }
    if let Some(recorded) = moved_back(d, queue) {
        return recorded;
    }
    // Herald's headers say nothing (absent, or "" as an earlier version recorded a re-drive): the broker's.
    let empty = FieldTable::default();
    let headers = d.properties.headers().as_ref().unwrap_or(&empty).inner();
    match broker_origin(headers) {
        (Some(exchange), routing_key) => (exchange, routing_key.unwrap_or_default()),
        (None, _) => (String::new(), d.routing_key.to_string()),
    }
}

/// The tries an event with an unresolved recipient has had in the retry queue (`x-herald-retries`; 0 when none).
pub(super) fn retries(headers: &BTreeMap<ShortString, AMQPValue>) -> u32 {
    headers.get(RETRIES).and_then(integer).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// How many times a message was dead-lettered, and when first (seconds since the epoch): Herald's count and time
/// (`x-herald-deaths`, or 1 for a letter of a version that wrote only its reason; `x-herald-first-dead-lettered-at`)
/// plus the broker's (`x-death`: a delivery limit). Take the retry queue's expiries out first
/// ([`forget_retry_deaths`]): they are waits.
pub(super) fn deaths_so_far(headers: &BTreeMap<ShortString, AMQPValue>) -> (u64, Option<u64>) {
    let x_death = x_deaths(headers);
    let broker: u64 = x_death.iter().filter_map(|t| t.inner().get("count").and_then(integer)).sum();
    let herald = headers.get(DEATHS).and_then(integer).unwrap_or(u64::from(headers.get(REASON).is_some()));
    let first = headers
        .get(FIRST_DEATH_AT)
        .and_then(integer)
        .into_iter()
        .chain(x_death.iter().filter_map(|t| t.inner().get("time").and_then(integer)))
        .min();
    (herald.saturating_add(broker), first)
}

/// Whether a header is the broker's record of a message's deaths (`x-death`, `x-first-death-*`,
/// `x-last-death-*`) or of a quorum queue's deliveries (`x-delivery-count`, the dead-letter queue's count of peeks
/// for a letter).
fn broker_death_header(name: &str) -> bool {
    name == "x-death"
        || name == "x-delivery-count"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// Take every record of a death out of `headers`: the broker's ([`broker_death_header`]) and Herald's reason for
/// its last dead letter (`x-herald-reason`, `-error`, `-queue`, `-dead-lettered-at`). Herald's count of deaths and
/// the first one's time stay.
pub(super) fn forget_deaths(headers: &mut FieldTable) {
    let mut out = FieldTable::default();
    for (k, v) in headers.inner() {
        let name = k.as_str();
        if !broker_death_header(name) && ![REASON, ERROR, QUEUE, DEATH_AT].contains(&name) {
            out.insert(k.clone(), v.clone());
        }
    }
    *headers = out;
}

/// Take out of `headers` what the broker recorded when `retry_queue` expired the message back to Herald's queue
/// (its `x-death` entry, and the `x-first-death-*` / `x-last-death-*` headers naming that queue): a wait for an
/// alias is not a death, and a letter that counted one per retry would show them as its deaths and its first
/// dead-lettering. Entries of other queues (a delivery limit) stay.
pub(super) fn forget_retry_deaths(headers: &mut FieldTable, retry_queue: &str) {
    let of_retry = |t: &FieldTable| t.inner().get("queue").and_then(string).is_some_and(|q| q == retry_queue);
    let kept: Option<Vec<AMQPValue>> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => Some(
            a.as_slice().iter().filter(|v| !matches!(v, AMQPValue::FieldTable(t) if of_retry(t))).cloned().collect(),
        ),
        _ => None,
    };
    let mut out = FieldTable::default();
    for (k, v) in headers.inner() {
        let name = k.as_str();
        let by_retry = ["x-first-death-", "x-last-death-"].iter().any(|prefix| {
            name.starts_with(prefix)
                && headers.inner().get(format!("{prefix}queue").as_str()).and_then(string).as_deref()
                    == Some(retry_queue)
        });
        match (name, &kept) {
            _ if by_retry => {}
            ("x-death", Some(kept)) if kept.is_empty() => {}
            ("x-death", Some(kept)) => {
                out.insert(k.clone(), AMQPValue::FieldArray(kept.clone().into()));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    *headers = out;
}

/// The broker's `x-death` entries (its own dead-lettering: a delivery limit), most recent first.
fn x_deaths(headers: &BTreeMap<ShortString, AMQPValue>) -> Vec<&FieldTable> {
    match headers.get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The exchange and routing key the broker's own dead-lettering recorded: `x-first-death-exchange`, else the
/// oldest `x-death` entry's exchange, and that entry's first routing key. Empty values say nothing.
fn broker_origin(headers: &BTreeMap<ShortString, AMQPValue>) -> (Option<String>, Option<String>) {
    let oldest = x_deaths(headers).last().map(|t| t.inner());
    let exchange = headers
        .get("x-first-death-exchange")
        .and_then(string)
        .filter(|x| !x.is_empty())
        .or_else(|| oldest.and_then(|t| t.get("exchange")).and_then(string).filter(|x| !x.is_empty()));
    let routing_key = match oldest.and_then(|t| t.get("routing-keys")) {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(string).filter(|k| !k.is_empty()),
        _ => None,
    };
    (exchange, routing_key)
}

fn string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// An integer header of any AMQP integer type (or a timestamp), as the consumer and the listing read them.
pub(super) fn integer(v: &AMQPValue) -> Option<u64> {
    match *v {
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::Timestamp(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};
    use lapin::BasicProperties;

    /// The retry queue at its default, beside `herald.events`.
    const RETRY: &str = "herald.events.retry";

    fn delivery(props: BasicProperties, body: &[u8], exchange: &str, key: &str) -> Delivery {
        let mut d = Delivery::mock(1, exchange.into(), key.into(), false, body.to_vec());
        d.properties = props;
        d
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn a_letter_herald_dead_lettered_shows_its_reason_origin_and_body() {
        let headers = table(&[
            (REASON, s("unmatched")),
            (ERROR, s("no rule matches")),
            (EXCHANGE, s("events.topic")),
            (ROUTING_KEY, s("student.promoted")),
            (EVENT_ID, s("e-1")),
            (DEATHS, AMQPValue::LongLongInt(2)),
            (FIRST_DEATH_AT, AMQPValue::Timestamp(1_700_000_000)),
            ("x-trace", s("keep me")),
        ]);
        let props = BasicProperties::default().with_message_id("m-1".into()).with_headers(headers);
        let d = delivery(props, br#"{"a":1}"#, "herald.dlx", "student.promoted");
        let l = describe(&d, RETRY);
        assert_eq!((l.id.as_str(), l.reason.as_str(), l.exchange.as_str()), ("m-1", "unmatched", "events.topic"));
        // Two ids that were not UTF-8 read the same (`\u{fffd}1`): each letter is named by its own digest instead.
        let lossy = |body: &[u8]| {
            let props = BasicProperties::default().with_message_id("\u{fffd}1".into());
            describe(&delivery(props, body, "herald.dlx", "student.promoted"), RETRY).id
        };
        let (one, two) = (lossy(b"one"), lossy(b"two"));
        assert!(one.starts_with("sha256:") && two.starts_with("sha256:") && one != two, "{one} {two}");
        assert_eq!((l.routing_key.as_str(), l.deaths, l.size), ("student.promoted", 2, 7));
        assert_eq!((l.body.as_str(), l.body_encoding, l.body_truncated), (r#"{"a":1}"#, BodyEncoding::Utf8, false));
        assert_eq!(l.first_dead_lettered_at.unwrap().timestamp(), 1_700_000_000);
        assert_eq!((l.error.as_deref(), l.event_id.as_deref()), (Some("no rule matches"), Some("e-1")));

        let out = redriven_headers(&d, &l);
        let out = out.inner();
        assert_eq!(out.get("x-trace"), Some(&s("keep me")));
        assert_eq!(out.get(DEATHS), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(out.get(FIRST_DEATH_AT), Some(&AMQPValue::Timestamp(1_700_000_000)));
        for gone in [REASON, ERROR, EVENT_ID] {
            assert!(!out.contains_key(gone), "{gone} is a death header: {out:?}");
        }
        // The origin travels in headers: the re-drive goes through the default exchange to Herald's queue.
        assert_eq!(out.get(EXCHANGE), Some(&s("events.topic")));
        assert_eq!(out.get(ROUTING_KEY), Some(&s("student.promoted")));
    }

    #[test]
    fn a_body_over_the_bound_is_shown_cut_on_a_char_boundary_or_before_base64() {
        assert_eq!(shown_body(b"hello", 5), ("hello".into(), BodyEncoding::Utf8, false));
        assert_eq!(shown_body(b"hello!", 5), ("hello".into(), BodyEncoding::Utf8, true));
        // "é" is two bytes: a cut in its middle falls back before it.
        assert_eq!(shown_body("abcdé".as_bytes(), 5), ("abcd".into(), BodyEncoding::Utf8, true));
        assert_eq!(shown_body("abcdé".as_bytes(), 6), ("abcdé".into(), BodyEncoding::Utf8, false));
        // Binary: the bytes are cut, then encoded.
        assert_eq!(shown_body(&[0xff, 0, 1, 2], 2), ("/wA=".into(), BodyEncoding::Base64, true));
        assert_eq!(shown_body(&[0xff, 0], 2), ("/wA=".into(), BodyEncoding::Base64, false));

        let big = vec![b'x'; MAX_BODY_SHOWN + 10];
        let l = describe(&delivery(BasicProperties::default(), &big, "herald.dlx", "k"), RETRY);
        assert_eq!((l.body.len(), l.size, l.body_truncated), (MAX_BODY_SHOWN, MAX_BODY_SHOWN + 10, true));
    }

    #[test]
    fn only_a_delivery_through_the_default_exchange_is_routed_by_its_origin_headers() {
        let origin = table(&[(EXCHANGE, s("events.topic")), (ROUTING_KEY, s("student.created"))]);
        let props = BasicProperties::default().with_headers(origin);
        let redriven = delivery(props.clone(), b"{}", "", "herald.events");
        assert_eq!(
            moved_back(&redriven, "herald.events"),
            Some(("events.topic".to_owned(), "student.created".to_owned()))
        );
        let named = delivery(props, b"{}", "sgad.notifications", "");
        assert_eq!(moved_back(&named, "herald.events"), None, "a named exchange is its own origin");
        let bare = delivery(BasicProperties::default(), b"{}", "", "herald.events");
        assert_eq!(moved_back(&bare, "herald.events"), None, "no headers: nothing to route by");
    }

    #[test]
    fn a_letter_the_broker_dead_lettered_reads_x_death_and_binary_bodies_are_base64() {
        let death = |reason: &str, count: i64, time: u64| {
            AMQPValue::FieldTable(table(&[
                ("reason", s(reason)),
                ("count", AMQPValue::LongLongInt(count)),
                ("exchange", s("sgad.matches")),
                ("routing-keys", AMQPValue::FieldArray(FieldArray::from(vec![s("match.created")]))),
                ("time", AMQPValue::Timestamp(time)),
                ("queue", s("herald.events")),
            ]))
        };
        let headers = table(&[
            ("x-death", AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit", 1, 200)]))),
            ("x-first-death-reason", s("delivery_limit")),
            ("x-first-death-exchange", s("sgad.matches")),
            ("x-first-death-queue", s("herald.events")),
            ("x-delivery-count", AMQPValue::LongLongInt(3)),
        ]);
        let d =
            delivery(BasicProperties::default().with_headers(headers), &[0xff, 0x00], "herald.dlx", "match.created");
        let l = describe(&d, RETRY);
        assert!(l.id.starts_with("sha256:"), "{}", l.id);
        assert_eq!(describe(&d, RETRY).id, l.id, "the digest is stable");
        assert_eq!(
            (l.reason.as_str(), l.exchange.as_str(), l.routing_key.as_str()),
            ("delivery_limit", "sgad.matches", "match.created")
        );
        assert_eq!((l.deaths, l.first_dead_lettered_at.unwrap().timestamp()), (1, 200));
        assert_eq!((l.body.as_str(), l.body_encoding), ("/wA=", BodyEncoding::Base64));
        let out = redriven_headers(&d, &l);
        assert!(
            out.inner().keys().all(|k| !k.as_str().starts_with("x-")
                || [DEATHS, FIRST_DEATH_AT, EXCHANGE, ROUTING_KEY].contains(&k.as_str())),
            "{out:?}"
        );
        assert_eq!(out.inner().get(EXCHANGE), Some(&s("sgad.matches")), "the broker's origin, carried on");
        assert_eq!(out.inner().get(ROUTING_KEY), Some(&s("match.created")));
    }

    #[test]
    fn what_the_retry_queue_recorded_is_not_a_death_and_a_delivery_limit_still_is() {
        let death = |queue: &str, reason: &str, count: i64| {
            AMQPValue::FieldTable(table(&[
                ("reason", s(reason)),
                ("count", AMQPValue::LongLongInt(count)),
                ("queue", s(queue)),
                ("time", AMQPValue::Timestamp(100)),
            ]))
        };
        let mut retried_only = table(&[
            ("x-death", AMQPValue::FieldArray(FieldArray::from(vec![death(RETRY, "expired", 3)]))),
            ("x-first-death-reason", s("expired")),
            ("x-first-death-queue", s(RETRY)),
            ("x-first-death-exchange", s("")),
            ("x-trace", s("keep me")),
        ]);
        forget_retry_deaths(&mut retried_only, RETRY);
        assert_eq!(retried_only.inner().keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-trace"]);

        // A retried message the broker dead-lettered itself at the delivery limit: its first death on record is
        // the retry queue's expiry, which the listing passes over.
        let both = vec![death("herald.events", "delivery_limit", 1), death(RETRY, "expired", 2)];
        let headers = table(&[
            ("x-death", AMQPValue::FieldArray(FieldArray::from(both))),
            ("x-first-death-reason", s("expired")),
            ("x-first-death-queue", s(RETRY)),
            ("x-last-death-reason", s("delivery_limit")),
            ("x-last-death-queue", s("herald.events")),
        ]);
        let d = delivery(BasicProperties::default().with_headers(headers), b"{}", "herald.dlx", "k");
        let l = describe(&d, RETRY);
        assert_eq!((l.deaths, l.reason.as_str()), (1, "delivery_limit"), "the delivery limit's death, alone");
    }

    /// A retry carries no record of a death: neither the broker's (a later expiry into Herald's queue would read
    /// an `x-death` naming that queue as a dead-letter cycle) nor Herald's reason for an earlier dead letter (the
    /// listing would show it if the broker dead-lettered the retry). Herald's count of deaths stays.
    #[test]
    fn a_retry_forgets_every_death_record_but_herald_s_count() {
        let mut headers = table(&[
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(table(&[(
                    "queue",
                    s("herald.events"),
                )]))])),
            ),
            ("x-first-death-queue", s("herald.events")),
            ("x-last-death-reason", s("delivery_limit")),
            ("x-delivery-count", AMQPValue::LongLongInt(3)),
            (REASON, s("unresolved_recipient")),
            (ERROR, s("no user known")),
            (QUEUE, s("herald.events")),
            (DEATH_AT, AMQPValue::Timestamp(200)),
            (DEATHS, AMQPValue::LongLongInt(1)),
            (FIRST_DEATH_AT, AMQPValue::Timestamp(100)),
            ("x-trace", s("keep me")),
        ]);
        forget_deaths(&mut headers);
        let mut kept: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(kept, [DEATHS, FIRST_DEATH_AT, "x-trace"]);
    }

    /// An earlier version recorded `""` as the origin of a letter that came through the default exchange (a
    /// re-drive); the broker's `x-death` still has the real one. The listing shows it, and a re-drive carries it,
    /// so the consumer routes the letter as first published instead of dead-lettering it again, origin lost.
    #[test]
    fn a_letter_recorded_with_an_empty_origin_shows_and_carries_the_brokers() {
        let death = AMQPValue::FieldTable(table(&[
            ("exchange", s("sgad.matches")),
            ("routing-keys", AMQPValue::FieldArray(FieldArray::from(vec![s("match.created")]))),
        ]));
        let headers = table(&[
            (REASON, s("unmatched")),
            (EXCHANGE, s("")),
            (ROUTING_KEY, s("herald.events")),
            ("x-death", AMQPValue::FieldArray(FieldArray::from(vec![death]))),
        ]);
        let d = delivery(BasicProperties::default().with_headers(headers), b"{}", "herald.dlx", "herald.events");
        let l = describe(&d, RETRY);
        assert_eq!((l.exchange.as_str(), l.routing_key.as_str()), ("sgad.matches", "match.created"));
        let out = redriven_headers(&d, &l);
        assert_eq!(out.inner().get(EXCHANGE), Some(&s("sgad.matches")));
        // A delivery whose origin header is "" is not routed by it.
        let props = BasicProperties::default().with_headers(table(&[(EXCHANGE, s("")), (ROUTING_KEY, s("k"))]));
        assert_eq!(moved_back(&delivery(props, b"{}", "", "herald.events"), "herald.events"), None);
    }
}
