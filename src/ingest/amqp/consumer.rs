//! The consumer: connect, declare, consume in batches, settle each batch, and start over when the broker goes.
//!
//! One batch at a time: deliveries are decoded and routed, the routable ones committed in one inbox commit,
//! the poison ones republished to the dead-letter exchange (with publisher confirms), and only then is the whole
//! batch acknowledged with one `basic.ack multiple` up to its last delivery tag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use super::{bounded, dead_letters, topology, BrokerError, HEALTH};
use crate::backoff::Backoff;
use crate::config::{AmqpQueueKind, AmqpSettings, UnmatchedPolicy};
use crate::event::{decode_bytes, Envelope};
use crate::ingest::{Outcome, Pipeline, Prepared, MAX_STORED_BYTES_PER_EVENT};
use crate::telemetry::Health;
use crate::trace::Origin;

/// How long a connection attempt (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A session that consumed for this long was healthy: the next reconnect starts the backoff over.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// Longest error text carried in the `x-herald-error` header.
const MAX_ERROR_HEADER: usize = 1024;

/// The dead-letter reason of a message whose `content_encoding` property names an encoding Herald cannot
/// decode (`gzip`, `deflate`, ...): decoded as if plain it would be `invalid_utf8` at best, or worse, wrong.
const UNSUPPORTED_CONTENT_ENCODING: &str = "unsupported_content_encoding";

/// Whether a `content_encoding` property leaves the body as it is: none said, `identity`, a charset that is
/// UTF-8 (what kombu and Celery set for JSON), or a MIME transfer encoding that transforms nothing.
fn decodable_encoding(encoding: &str) -> bool {
    let e = encoding.trim();
    e.is_empty() || ["identity", "utf-8", "utf8", "binary", "7bit", "8bit"].iter().any(|ok| e.eq_ignore_ascii_case(ok))
}

/// The delivery's `message_id`, unless it was not UTF-8. The frame parser reads such an id lossily (every invalid
/// byte becomes U+FFFD, then cut to 255 bytes), so two different ids could read the same and the second event be
/// acknowledged as the first's duplicate: lost. Without it the event is named as one without a `message_id`
/// would be (its body's id, else the digest of its content), which redeliveries repeat.
fn usable_message_id(d: &Delivery) -> Option<&str> {
    let id = d.properties.message_id().as_ref()?.as_str();
    if id.contains(char::REPLACEMENT_CHARACTER) {
        tracing::warn!(
            exchange = %d.exchange,
            routing_key = %d.routing_key,
            "a message_id that is not UTF-8 was ignored: the event is named by its body's id or its content instead"
        );
        return None;
    }
    Some(id)
}

/// The reconnect log of one outage: its first failure at `warn`, the following ones at `info`, until a session
/// gets as far as consuming again.
#[derive(Debug, Default)]
struct Outage {
    warned: bool,
}

impl Outage {
    /// A session ended in an error (`connected`: it had got as far as consuming, so this starts a new outage).
    /// `true`: log it at `warn`.
    fn failed(&mut self, connected: bool) -> bool {
        if connected {
            self.warned = false;
        }
        !std::mem::replace(&mut self.warned, true)
    }
}

/// Why a delivery goes to the dead-letter queue instead of the inbox.
#[derive(Debug)]
struct Poison {
    /// Stable label: a [`crate::event::DecodeError`] or [`crate::rules::RouteError`] reason, `unmatched`, or
    /// `unsupported_content_encoding`.
    reason: &'static str,
    error: String,
    event_id: Option<String>,
    /// The trace of an event that was committed (an unresolved alias); `None`: refused before its commit, the
    /// dead letter is its whole trace.
    trace_id: Option<String>,
    /// The rule that matched an event refused before its commit (one that could not route it).
    rule: Option<String>,
}

pub(super) struct Consumer {
    settings: Arc<AmqpSettings>,
    pipeline: Pipeline,
    health: Health,
    shutdown: CancellationToken,
}

impl Consumer {
    pub(super) fn new(settings: AmqpSettings, pipeline: Pipeline, health: Health, shutdown: CancellationToken) -> Self {
        Consumer { settings: Arc::new(settings), pipeline, health, shutdown }
    }

    /// Sessions until shutdown, with backoff between them.
    pub(super) async fn run(self) {
        let url = crate::redact_url(self.settings.url.expose());
        // Jittered, so that a fleet does not stampede a restarted broker.
        let backoff = Backoff::new(
            Duration::from_millis(self.settings.reconnect_min_ms),
            Duration::from_millis(self.settings.reconnect_max_ms),
        );
        if self.settings.unresolved_retries > 0 && self.settings.queue.kind == AmqpQueueKind::Classic {
            tracing::warn!(
                retry_queue = %self.settings.queue.retry_queue_name(),
                "amqp.queue.type = \"classic\": the retry queue moves an expired event back to Herald's queue at most \
                 once (one expiring while the broker cannot take it is lost); quorum queues do it at least once, and \
                 amqp.unresolved_retries = 0 dead-letters at once"
            );
        }
        let mut attempt = 0u32;
        let mut outage = Outage::default();
        loop {
            let mut consuming_since = None;
            // A panic (a bug) ends the session as an error would, never the consumer: its connection drops with
            // it, so the broker requeues what it held, and the next session takes them again after the backoff.
            // Uncaught, the task ended and nothing consumed until a restart, with `/readyz` still reporting
            // the last session's "consuming".
            let result = match std::panic::AssertUnwindSafe(self.session(&mut consuming_since)).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let what = crate::telemetry::panic_message(&*panic);
                    tracing::error!(panic = %what, "the amqp consumer panicked; its deliveries are requeued and it reconnects");
                    metrics::counter!("herald_amqp_consumer_panics_total").increment(1);
                    Err(anyhow::anyhow!("the consumer panicked: {what}"))
                }
            };
            metrics::gauge!("herald_amqp_connected").set(0.0);
            let error = match result {
                Ok(()) => break,
                Err(_) if self.shutdown.is_cancelled() => break,
                Err(e) => e,
            };
            if consuming_since.is_some_and(|t: Instant| t.elapsed() >= HEALTHY_AFTER) {
                attempt = 0;
            }
            attempt = attempt.saturating_add(1);
            let delay = backoff.delay(attempt);
            // Once per connection lost while consuming, as herald_redis_reconnects_total counts, not per attempt.
            if consuming_since.is_some() {
                metrics::counter!("herald_amqp_reconnects_total").increment(1);
            }
            let retry_in_ms = delay.as_millis() as u64;
            if outage.failed(consuming_since.is_some()) {
                tracing::warn!(url = %url, error = format!("{error:#}"), attempt, retry_in_ms, "rabbitmq unavailable; reconnecting");
            } else {
                tracing::info!(
                    url = %url, error = format!("{error:#}"), attempt, retry_in_ms,
                    "rabbitmq still unavailable; reconnecting"
                );
            }
            self.health.set(HEALTH, false, format!("disconnected ({error:#}); reconnecting"));
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.health.set(HEALTH, false, "stopped");
        tracing::info!("amqp consumer stopped");
    }

    /// One connection: declare, then consume until the connection fails (an error) or shutdown (`Ok`, after a
    /// graceful stop).
    async fn session(&self, consuming_since: &mut Option<Instant>) -> anyhow::Result<()> {
        let s = &self.settings;
        let setup = async {
            let conn = super::connect(s, &s.connection_name, CONNECT_TIMEOUT).await?;
            let topo = bounded("opening a channel", conn.create_channel()).await?;
            bounded("the topology's declarations", topology::declare(&topo, s)).await.map_err(|e| {
                if let BrokerError::Failed(e) = &e {
                    tracing::error!(
                        error = %e, queue = %s.queue.name, retry_queue = %s.queue.retry_queue_name(),
                        "declaring the amqp topology failed; an existing queue or exchange with other arguments must \
                         be deleted or renamed in the configuration (the error names it)"
                    );
                }
                anyhow::Error::new(e).context("declaring the topology")
            })?;
            let dead = bounded("opening a channel", conn.create_channel()).await?;
            bounded("a confirm.select", dead.confirm_select(ConfirmSelectOptions::default())).await?;
            let ch = bounded("opening a channel", conn.create_channel()).await?;
            bounded("a basic.qos", ch.basic_qos(s.prefetch, BasicQosOptions::default())).await?;
            let consume = ch.basic_consume(
                s.queue.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            let consumer = bounded("a basic.consume", consume).await?;
            anyhow::Ok((conn, topo, dead, ch, consumer))
        };
        let (conn, topo, dead, ch, mut consumer) = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            r = setup => r?,
        };
        // What one frame may carry on this connection: a republish's headers are fitted to it.
        let frame_max = conn.configuration().frame_max();
        *consuming_since = Some(Instant::now());
        metrics::gauge!("herald_amqp_connected").set(1.0);
        self.health.set(HEALTH, true, format!("consuming {}", s.queue.name));
        tracing::info!(queue = %s.queue.name, exchanges = s.exchanges.len(), prefetch = s.prefetch, "amqp consumer started");

        let lag = self.shutdown.child_token();
        if s.lag_interval_secs > 0 {
            let every = Duration::from_secs(s.lag_interval_secs);
            let retry = (s.unresolved_retries > 0).then(|| s.queue.retry_queue_name().into_owned());
            tokio::spawn(poll_lag(topo, s.queue.name.clone(), retry, every, lag.clone()));
        }
        let _stop_lag = lag.drop_guard();

        let linger = Duration::from_millis(s.batch_linger_ms);
        // A batch whose commit shutdown interrupted: the highest delivery tag held (returned once the consumer is
        // cancelled, with whatever else was delivered).
        let mut interrupted = None;
        loop {
            let first = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                d = consumer.next() => d,
            };
            let mut batch = vec![delivered(first)?];
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < s.batch_max {
                let next = if linger.is_zero() {
                    match consumer.next().now_or_never() {
                        Some(next) => next,
                        None => break,
                    }
                } else {
                    match tokio::time::timeout_at(deadline, consumer.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                };
                batch.push(delivered(next)?);
            }
            if let Settled::Interrupted { last_tag, held } = self.settle(batch, &ch, &dead, frame_max).await? {
                interrupted = Some((last_tag, held));
                break;
            }
        }

        // Graceful stop: no new deliveries, settle those already here, then close (the broker requeues anything
        // left unacknowledged). The consumer is cancelled before anything goes back: a message returned to a
        // consumer still active is delivered to it again at once, and returned a second time, which counts two
        // deliveries against the queue's delivery limit for one shutdown.
        self.health.set(HEALTH, false, "stopping");
        let cancel = ch.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        bounded("a basic.cancel", cancel).await.context("cancelling the consumer")?;
        let mut rest = Vec::new();
        loop {
            let next = consumer.next().now_or_never();
            let drained = !matches!(next, Some(Some(Ok(_))));
            if let Some(Some(Ok(d))) = next {
                rest.push(d);
            }
            // Settled in batches while the store answers; after an interruption, only gathered (returned below).
            if interrupted.is_none() && (rest.len() == s.batch_max || (drained && !rest.is_empty())) {
                let settled = self.settle(std::mem::take(&mut rest), &ch, &dead, frame_max).await?;
                if let Settled::Interrupted { last_tag, held } = settled {
                    interrupted = Some((last_tag, held));
                }
            }
            if drained {
                break;
            }
        }
        if let Some((held_tag, held)) = interrupted {
            // What was held, and everything delivered after it, back to the queue at once: in order, and once.
            let last_tag = rest.last().map_or(held_tag, |d| d.delivery_tag.max(held_tag));
            let nack = ch.basic_nack(last_tag, BasicNackOptions { multiple: true, requeue: true });
            bounded("a basic.nack", nack).await.context("requeueing")?;
            metrics::counter!("herald_amqp_messages_requeued_total").increment((held + rest.len()) as u64);
        }
        bounded("a connection.close", conn.close(200, "herald shutting down".into())).await?;
        Ok(())
    }

    /// Settle one batch: commit what routes, dead-letter the poison, then acknowledge everything at once.
    /// `Interrupted` when shutdown interrupted a store retry: the batch is left unacknowledged, for the caller to
    /// return once the consumer is cancelled.
    async fn settle(
        &self,
        batch: Vec<Delivery>,
        ch: &Channel,
        dead: &Channel,
        frame_max: u32,
    ) -> anyhow::Result<Settled> {
        let last_tag = batch.last().expect("a batch is never empty").delivery_tag;
        let redelivered = batch.iter().filter(|d| d.redelivered).count();
        metrics::counter!("herald_amqp_messages_consumed_total").increment(batch.len() as u64);
        metrics::counter!("herald_amqp_messages_redelivered_total").increment(redelivered as u64);

        let (prepared, poison) = self.prepare(&batch);
        let routed: Vec<&Delivery> =
            batch.iter().filter(|d| !poison.iter().any(|(p, _)| std::ptr::eq(*p, *d))).collect();
        let Some(outcomes) = self.commit(prepared, &batch).await else {
            return Ok(Settled::Interrupted { last_tag, held: batch.len() });
        };
        // The poison is dead-lettered once its batch is committed: a batch that shutdown returns to the queue
        // takes its poison back with it, to be dead-lettered once, when it is settled (it was dead-lettered
        // before the commit, then again on its redelivery).
        if !poison.is_empty() {
            self.dead_letter(dead, &poison, frame_max).await.context("dead-lettering")?;
        }
        // Addressed through an alias nobody taught yet: nothing was stored for these. Each is republished before the
        // batch is acknowledged: to the retry queue while it has tries left, then to the dead letters (a re-drive
        // after the alias is known delivers it).
        let unresolved: Vec<(&Delivery, Poison)> = routed
            .iter()
            .zip(&outcomes)
            .filter_map(|(d, o)| {
                let e = o.error.as_ref()?;
                Some((
                    *d,
                    Poison {
                        reason: e.reason(),
                        error: e.to_string(),
                        event_id: Some(o.event_id.clone()),
                        trace_id: o.trace_id.clone(),
                        rule: None,
                    },
                ))
            })
            .collect();
        // Those with tries left wait in the retry queue (another service may teach the alias meanwhile).
        let tries = self.settings.unresolved_retries;
        let (retry, unresolved): (Vec<_>, Vec<_>) = unresolved.into_iter().partition(|(d, _)| retries(d) < tries);
        if !retry.is_empty() {
            self.hold_for_retry(dead, &retry, frame_max).await.context("holding unresolved recipients for a retry")?;
        }
        if !unresolved.is_empty() {
            self.dead_letter(dead, &unresolved, frame_max).await.context("dead-lettering unresolved recipients")?;
        }
        bounded("a basic.ack", ch.basic_ack(last_tag, BasicAckOptions { multiple: true }))
            .await
            .context("acknowledging")?;
        metrics::counter!("herald_amqp_messages_acked_total").increment(batch.len() as u64);
        for o in &outcomes {
            metrics::counter!("herald_ingest_events_total", "transport" => "amqp", "status" => o.status.label())
                .increment(1);
        }
        Ok(Settled::Acked)
    }

    /// Decode and route every delivery: the routable ones in order, and the poison ones with their reason.
    fn prepare<'a>(&self, batch: &'a [Delivery]) -> (Vec<Prepared>, Vec<(&'a Delivery, Poison)>) {
        let mut prepared = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for d in batch {
            match self.classify(d) {
                Ok(p) => prepared.push(p),
                Err(p) => poison.push((d, p)),
            }
        }
        (prepared, poison)
    }

    fn classify(&self, d: &Delivery) -> Result<Prepared, Poison> {
        let message_id = usable_message_id(d);
        let moved = dead_letters::moved_back(d, &self.settings.queue.name);
        let (exchange, routing_key) = match &moved {
            Some((exchange, routing_key)) => (exchange.as_str(), routing_key.as_str()),
            None => (d.exchange.as_str(), d.routing_key.as_str()),
        };
        if let Some(encoding) = d.properties.content_encoding().as_ref().map(|e| e.as_str()) {
            if !decodable_encoding(encoding) {
                return Err(Poison {
                    reason: UNSUPPORTED_CONTENT_ENCODING,
                    error: format!(
                        "content_encoding `{}` is not one Herald decodes (the body must be plain UTF-8 JSON)",
                        truncate(encoding, 64)
                    ),
                    event_id: message_id.map(str::to_owned),
                    trace_id: None,
                    rule: None,
                });
            }
        }
        // An AMQP message_id is global: no caller scopes it.
        let envelope = Envelope { exchange, routing_key: Some(routing_key), message_id, caller: None, element: None };
        let event = decode_bytes(envelope, &d.data, self.settings.max_message_bytes).map_err(|e| Poison {
            reason: e.reason(),
            error: e.to_string(),
            event_id: message_id.map(str::to_owned),
            trace_id: None,
            rule: None,
        })?;
        // Routed once, against one snapshot of the rules: a reload landing between a match and the routing could
        // otherwise turn an event the policy dead-letters into one acked as unmatched.
        let event_id = event.id.clone();
        let prepared = self.pipeline.prepare(event, &Origin::amqp()).map_err(|e| Poison {
            reason: e.reason(),
            error: e.to_string(),
            event_id: Some(event_id.clone()),
            trace_id: None,
            rule: e.rule().map(str::to_owned),
        })?;
        if self.settings.unmatched == UnmatchedPolicy::DeadLetter && prepared.unmatched() {
            return Err(Poison {
                reason: "unmatched",
                error: "no rule matches this exchange and routing key".into(),
                event_id: Some(event_id),
                trace_id: None,
                rule: None,
            });
        }
        Ok(prepared)
    }

    /// Commit, retrying with backoff while the store fails; the batch stays unacknowledged meanwhile.
    /// `None` when shutdown came first.
    /// Commit a batch's events, in commits that each store at most what one event may
    /// ([`MAX_STORED_BYTES_PER_EVENT`], as an HTTP request): 200 messages of 1,000 recipients each would otherwise
    /// write gigabytes in one transaction. In order; `None` on shutdown (nothing acknowledged: what was committed
    /// is a duplicate when redelivered).
    async fn commit(&self, prepared: Vec<Prepared>, batch: &[Delivery]) -> Option<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(prepared.len());
        for chunk in bounded_chunks(prepared, MAX_STORED_BYTES_PER_EVENT) {
            outcomes.extend(self.commit_chunk(chunk, batch).await?);
        }
        Some(outcomes)
    }

    async fn commit_chunk(&self, prepared: Vec<Prepared>, batch: &[Delivery]) -> Option<Vec<Outcome>> {
        let backoff = Backoff::new(Duration::from_millis(self.settings.reconnect_min_ms), Duration::from_millis(5_000));
        let mut attempt = 0u32;
        loop {
            // A retry commits the same writes (not routed again: the rules may have been reloaded meanwhile).
            match self.pipeline.commit(prepared.clone()).await {
                Ok(outcomes) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, "inbox commit succeeded after retrying");
                        self.health.set(HEALTH, true, format!("consuming {}", self.settings.queue.name));
                    }
                    return Some(outcomes);
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let delay = backoff.delay(attempt);
                    metrics::counter!("herald_amqp_store_retries_total").increment(1);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        held = batch.len(),
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        "inbox commit failed; holding the batch unacknowledged and retrying"
                    );
                    self.health.set(
                        HEALTH,
                        false,
                        format!("inbox unavailable, holding {} messages: {e:#}", batch.len()),
                    );
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Republish events whose recipient alias is unknown to the retry queue, to expire back into the shared queue
    /// after `unresolved_retry_delay_secs`, counting the try in `x-herald-retries`; wait for the broker's confirms.
    /// An error leaves them unacknowledged (redelivered after the reconnect).
    async fn hold_for_retry(&self, ch: &Channel, held: &[(&Delivery, Poison)], frame_max: u32) -> anyhow::Result<()> {
        let q = &self.settings.queue;
        let retry_queue = q.retry_queue_name();
        let origins: Vec<(String, String)> = held.iter().map(|(d, _)| dead_letters::origin(d, &q.name)).collect();
        let expiration = (self.settings.unresolved_retry_delay_secs * 1000).to_string();
        let tries: Vec<u32> = held.iter().map(|(d, _)| retries(d).saturating_add(1)).collect();
        let messages = held.iter().zip(&origins).zip(&tries).map(|(((d, p), origin), &try_)| {
            let props = retry_properties(d, &retry_queue, origin, p.event_id.as_deref(), try_);
            ("", retry_queue.as_ref(), &d.data[..], props.with_expiration(expiration.as_str().into()))
        });
        let unroutable = || format!("queue `{retry_queue}` does not exist");
        publish_confirmed(ch, "a retry", messages, frame_max, unroutable).await?;
        for (((_, p), (exchange, routing_key)), try_) in held.iter().zip(&origins).zip(tries) {
            metrics::counter!("herald_amqp_messages_retried_total", "reason" => p.reason).increment(1);
            tracing::info!(
                exchange = %exchange, routing_key = %routing_key, event_id = p.event_id.as_deref().unwrap_or(""),
                reason = p.reason, error = %p.error, retry = try_, of = self.settings.unresolved_retries,
                in_secs = self.settings.unresolved_retry_delay_secs,
                "message held for a retry"
            );
            if let Some(t) = &p.trace_id {
                let (event_id, of) = (p.event_id.as_deref().unwrap_or_default(), self.settings.unresolved_retries);
                let in_secs = self.settings.unresolved_retry_delay_secs;
                self.pipeline.trace().held_for_retry(t, event_id, (p.reason, &p.error), (try_, of, in_secs));
            }
        }
        Ok(())
    }

    /// Republish poison messages to the dead-letter exchange with the reason in headers, and wait for the
    /// broker's confirms. An error leaves them unacknowledged (redelivered after the reconnect).
    async fn dead_letter(&self, dead: &Channel, poison: &[(&Delivery, Poison)], frame_max: u32) -> anyhow::Result<()> {
        let q = &self.settings.queue;
        // Where each was first published: what the log, the trace and the dead letter's headers name.
        let origins: Vec<(String, String)> = poison.iter().map(|(d, _)| dead_letters::origin(d, &q.name)).collect();
        let retry_queue = q.retry_queue_name();
        let messages = poison.iter().zip(&origins).map(|((d, p), origin)| {
            let props = dead_letter_properties(d, p, (&q.name, &retry_queue), origin);
            (q.dead_letter_exchange.as_str(), d.routing_key.as_str(), &d.data[..], props)
        });
        let unroutable =
            || format!("queue `{}` is not bound to exchange `{}`", q.dead_letter_queue, q.dead_letter_exchange);
        publish_confirmed(dead, "a dead letter", messages, frame_max, unroutable).await?;
        for ((d, p), (exchange, routing_key)) in poison.iter().zip(&origins) {
            metrics::counter!("herald_amqp_messages_dead_lettered_total", "reason" => p.reason).increment(1);
            metrics::counter!("herald_ingest_errors_total", "transport" => "amqp", "reason" => p.reason).increment(1);
            tracing::warn!(
                exchange = %exchange, routing_key = %routing_key, event_id = p.event_id.as_deref().unwrap_or(""),
                reason = p.reason, error = %p.error, redelivered = d.redelivered,
                "message dead-lettered"
            );
            let trace = self.pipeline.trace();
            match &p.trace_id {
                Some(t) => trace.dead_lettered(t, p.event_id.as_deref().unwrap_or_default(), p.reason, &p.error),
                None => trace.dead_lettered_unrouted(
                    p.event_id.as_deref(),
                    exchange,
                    routing_key,
                    p.rule.as_deref(),
                    p.reason,
                    &p.error,
                ),
            }
        }
        Ok(())
    }
}

enum Settled {
    Acked,
    /// Shutdown came during a store retry: nothing acknowledged; `held` deliveries, up to `last_tag`, to return.
    Interrupted {
        last_tag: u64,
        held: usize,
    },
}

/// Publish each message (confirm mode, `mandatory`), then wait for every confirm: an error names `what` when the
/// broker refused one (nack) or could not route it (`unroutable` says why).
async fn publish_confirmed<'a>(
    ch: &Channel,
    what: &str,
    messages: impl Iterator<Item = (&'a str, &'a str, &'a [u8], BasicProperties)>,
    frame_max: u32,
    unroutable: impl Fn() -> String,
) -> anyhow::Result<()> {
    let mut confirms = Vec::new();
    for (exchange, routing_key, body, props) in messages {
        let props = fit_to_frame(props, frame_max);
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let publish = ch.basic_publish(exchange.into(), routing_key.into(), options, body, props);
        confirms.push(bounded("a republish", publish).await?);
    }
    for confirm in confirms {
        let confirmation = bounded("a republish's confirm", confirm).await?;
        if confirmation.is_nack() {
            anyhow::bail!("the broker refused {what} (nack)");
        }
        if confirmation.take_message().is_some() {
            anyhow::bail!("{what} was unroutable: {}", unroutable());
        }
    }
    Ok(())
}

/// What a content header frame spends besides the headers: the frame's own 8 bytes, the class, weight, body size
/// and flags (14), and room for every other property a republish carries (short strings of 255 bytes at most).
const HEADER_FRAME_RESERVE: usize = 8 + 14 + 10 * 256;

/// The size of `headers` as a frame carries them.
fn encoded_len(headers: &FieldTable) -> usize {
    cookie_factory::gen_simple(lapin::types::generation::gen_field_table(headers), Vec::new())
        .map_or(usize::MAX, |bytes| bytes.len())
}

/// `props` whose headers fit one content header frame of `frame_max` bytes. A message republished with more
/// closes the connection (a frame error), and its redelivery would do so again, each time with every delivery in
/// flight beside it: a publisher's headers near the limit, plus the `x-herald-*` headers a dead letter or a retry
/// adds, stalled the queue. Over it, the publisher's own headers are dropped and Herald's kept, with
/// `x-herald-headers-dropped` = the size of the headers that did not fit.
/// Over the longest value Herald writes in one of its headers: the error (cut at [`MAX_ERROR_HEADER`], with room
/// for the mark of the cut); an exchange, a routing key (255 bytes at most) or an event id (over 256 bytes, its
/// digest) is shorter.
const MAX_OWN_HEADER: usize = MAX_ERROR_HEADER + 64;

fn fit_to_frame(props: BasicProperties, frame_max: u32) -> BasicProperties {
    let Some(headers) = props.headers() else { return props };
    let size = encoded_len(headers);
    if size <= (frame_max as usize).saturating_sub(HEADER_FRAME_RESERVE) {
        return props;
    }
    // Herald's own headers, by name: a publisher's `x-herald-*` header of any other name is the publisher's (kept,
    // one of 130 KB overflowed the frame again); and none over what Herald ever writes in one (a re-driven letter
    // names its origin from headers a publisher could have set).
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        let own = dead_letters::HERALD_HEADERS.contains(&k.as_str());
        if own && !matches!(v, AMQPValue::LongString(s) if s.as_bytes().len() > MAX_OWN_HEADER) {
            kept.insert(k.clone(), v.clone());
        }
    }
    kept.insert(dead_letters::HEADERS_DROPPED.into(), AMQPValue::LongLongInt(i64::try_from(size).unwrap_or(i64::MAX)));
    tracing::warn!(
        headers_bytes = size,
        frame_max,
        "a republished message's headers would not fit one frame: the publisher's headers were dropped"
    );
    props.with_headers(kept)
}

/// The tries a delivery has had in the retry queue ([`dead_letters::retries`]; 0 when first published).
fn retries(d: &Delivery) -> u32 {
    d.properties.headers().as_ref().map_or(0, |h| dead_letters::retries(h.inner()))
}

/// `prepared` in order, cut where the next event would take a chunk's stored bytes over `max` (each event is
/// under it: one chunk at least per event). Most batches are one chunk, taken as they are.
fn bounded_chunks(prepared: Vec<Prepared>, max: usize) -> Vec<Vec<Prepared>> {
    if prepared.iter().map(|p| p.stored_bytes).sum::<usize>() <= max {
        return vec![prepared];
    }
    let mut chunks: Vec<Vec<Prepared>> = Vec::new();
    let mut size = 0usize;
    for p in prepared {
        match chunks.last_mut() {
            Some(chunk) if size.saturating_add(p.stored_bytes) <= max => {
                size += p.stored_bytes;
                chunk.push(p);
            }
            _ => {
                size = p.stored_bytes;
                chunks.push(vec![p]);
            }
        }
    }
    chunks
}

/// One stream item as a delivery, or the reason the stream cannot go on.
fn delivered(item: Option<lapin::Result<Delivery>>) -> anyhow::Result<Delivery> {
    match item {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("consuming")),
        None => Err(anyhow::anyhow!("the broker cancelled the consumer (queue deleted?)")),
    }
}

/// A dead letter's properties ([`republished_properties`]): its headers with the broker's record of the retry
/// queue's expiries taken out (waits, not deaths), and the `x-herald-*` headers that say why, where it came from
/// (`origin`: [`dead_letters::origin`]), and how many times and since when Herald dead-lettered it.
fn dead_letter_properties(
    d: &Delivery,
    p: &Poison,
    (queue, retry_queue): (&str, &str),
    origin: &(String, String),
) -> BasicProperties {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    dead_letters::forget_retry_deaths(&mut headers, retry_queue);
    let mut put = |k: &str, v: &str| {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    };
    put(dead_letters::REASON, p.reason);
    put(dead_letters::ERROR, truncate(&p.error, MAX_ERROR_HEADER));
    put(dead_letters::QUEUE, queue);
    put_origin(&mut headers, origin, p.event_id.as_deref());
    // A re-driven message carries its earlier deaths (`dead_letters::redriven_headers`): continue the count.
    let now = AMQPValue::Timestamp(chrono::Utc::now().timestamp().max(0) as u64);
    let deaths =
        headers.inner().get(dead_letters::DEATHS).and_then(dead_letters::integer).map_or(1, |n| n.saturating_add(1));
    headers.insert(dead_letters::DEATHS.into(), AMQPValue::LongLongInt(i64::try_from(deaths).unwrap_or(i64::MAX)));
    // Kept from an earlier death only as Herald writes it (a timestamp): a publisher's own value of another type
    // would leave the letter without one.
    if !matches!(headers.inner().get(dead_letters::FIRST_DEATH_AT), Some(AMQPValue::Timestamp(_))) {
        headers.insert(dead_letters::FIRST_DEATH_AT.into(), now.clone());
    }
    headers.insert(dead_letters::DEATH_AT.into(), now);
    republished_properties(&d.properties, headers)
}

/// A retry's properties: its headers without any death record (the broker's `x-death` family, which a later
/// expiry would read as a dead-letter cycle if it named Herald's queue, and Herald's reason for an earlier dead
/// letter, which the listing would show if the broker dead-lettered the retry itself), its origin, and this try's
/// number in `x-herald-retries`. A letter moved back by hand keeps its deaths, the broker's folded into Herald's
/// count (`x-herald-deaths`) and first time.
fn retry_properties(
    d: &Delivery,
    retry_queue: &str,
    origin: &(String, String),
    event_id: Option<&str>,
    try_: u32,
) -> BasicProperties {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    // Its deaths so far (a letter moved back by hand: the broker's delivery limit, Herald's own) become Herald's
    // count and first time, which outlive the records taken off below; the retry queue's expiries are not deaths.
    dead_letters::forget_retry_deaths(&mut headers, retry_queue);
    let (deaths, first) = dead_letters::deaths_so_far(headers.inner());
    dead_letters::forget_deaths(&mut headers);
    if deaths > 0 {
        headers.insert(dead_letters::DEATHS.into(), AMQPValue::LongLongInt(i64::try_from(deaths).unwrap_or(i64::MAX)));
    }
    if let Some(first) = first {
        headers.insert(dead_letters::FIRST_DEATH_AT.into(), AMQPValue::Timestamp(first));
    }
    put_origin(&mut headers, origin, event_id);
    headers.insert(dead_letters::RETRIES.into(), AMQPValue::LongLongInt(i64::from(try_)));
    republished_properties(&d.properties, headers)
}

/// Where a republished message was first published (a re-driven letter, a retry or one moved back by hand keeps
/// naming it), and its event id.
fn put_origin(headers: &mut FieldTable, (exchange, routing_key): &(String, String), event_id: Option<&str>) {
    let mut put = |k: &str, v: &str| {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    };
    put(dead_letters::EXCHANGE, exchange);
    put(dead_letters::ROUTING_KEY, routing_key);
    if let Some(id) = event_id {
        put(dead_letters::EVENT_ID, id);
    }
}

/// The original message's properties with `headers`, minus those that would be refused or would expire it
/// (`user-id` must match the publishing connection's user; `expiration`) and the deprecated `cluster-id`.
pub(super) fn republished_properties(src: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    if let Some(v) = src.content_type() {
        props = props.with_content_type(v.clone());
    }
    if let Some(v) = src.content_encoding() {
        props = props.with_content_encoding(v.clone());
    }
    if let Some(v) = src.message_id() {
        props = props.with_message_id(v.clone());
    }
    if let Some(v) = src.correlation_id() {
        props = props.with_correlation_id(v.clone());
    }
    if let Some(v) = src.reply_to() {
        props = props.with_reply_to(v.clone());
    }
    if let Some(v) = src.priority() {
        props = props.with_priority(*v);
    }
    if let Some(v) = src.timestamp() {
        props = props.with_timestamp(*v);
    }
    if let Some(v) = src.kind() {
        props = props.with_type(v.clone());
    }
    if let Some(v) = src.app_id() {
        props = props.with_app_id(v.clone());
    }
    props
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Read the queue depth (messages ready, not yet delivered: the consumer lag) every `every`.
/// Every `every`, the shared queue's depth and consumers (`herald_amqp_queue_messages{queue}`: consumer lag), and
/// the retry queue's depth (`herald_amqp_retry_queue_messages`: events waiting for an alias, not lag). Ends with
/// the session: a failed read closes the channel.
async fn poll_lag(ch: Channel, queue: String, retry: Option<String>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let depth = async |name: &str| {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        bounded("a passive queue.declare", ch.queue_declare(name.into(), passive, FieldTable::default())).await
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match depth(&queue).await {
            Ok(q) => {
                metrics::gauge!("herald_amqp_queue_messages", "queue" => queue.clone()).set(q.message_count() as f64);
                metrics::gauge!("herald_amqp_queue_consumers", "queue" => queue.clone()).set(q.consumer_count() as f64);
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the queue depth failed; the session is ending");
                return;
            }
        }
        if let Some(retry) = &retry {
            match depth(retry).await {
                Ok(q) => metrics::gauge!("herald_amqp_retry_queue_messages").set(q.message_count() as f64),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the retry queue's depth failed; the session is ending");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared queue and the retry queue, at their defaults.
    const QUEUES: (&str, &str) = ("herald.events", "herald.events.retry");

    #[test]
    fn a_batch_is_committed_in_chunks_that_each_store_at_most_the_bound() {
        let event = |i: usize, stored_bytes: usize| Prepared {
            event_id: format!("e-{i}"),
            exchange: String::new(),
            routing_key: String::new(),
            action: crate::ingest::Action::Skip(crate::ingest::Status::Ignored),
            trace: None,
            stored_bytes,
        };
        let sizes = |chunks: &[Vec<Prepared>]| -> Vec<Vec<usize>> {
            chunks.iter().map(|c| c.iter().map(|p| p.stored_bytes).collect()).collect()
        };
        let small = bounded_chunks((0..3).map(|i| event(i, 10)).collect(), 100);
        assert_eq!(sizes(&small), [vec![10, 10, 10]], "under the bound: one commit");
        let big = bounded_chunks([60, 30, 20, 90, 100, 5].iter().enumerate().map(|(i, b)| event(i, *b)).collect(), 100);
        assert_eq!(sizes(&big), [vec![60, 30], vec![20], vec![90], vec![100], vec![5]]);
        let order: Vec<String> = big.into_iter().flatten().map(|p| p.event_id).collect();
        assert_eq!(order, ["e-0", "e-1", "e-2", "e-3", "e-4", "e-5"], "in order");
    }

    #[test]
    fn a_republish_whose_headers_would_not_fit_one_frame_keeps_only_heralds() {
        let mut headers = FieldTable::default();
        headers.insert("origin".into(), AMQPValue::LongString("test".into()));
        headers.insert(dead_letters::REASON.into(), AMQPValue::LongString("invalid_json".into()));
        let small = BasicProperties::default().with_headers(headers.clone());
        assert_eq!(fit_to_frame(small.clone(), 131_072), small, "headers that fit are kept as they are");

        headers.insert("big".into(), AMQPValue::LongString(vec![b'x'; 130_000].into()));
        let big = BasicProperties::default().with_headers(headers).with_message_id("m-1".into());
        let fitted = fit_to_frame(big, 131_072);
        let kept = fitted.headers().as_ref().unwrap();
        let mut names: Vec<&str> = kept.inner().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, [dead_letters::HEADERS_DROPPED, dead_letters::REASON]);
        assert!(matches!(kept.inner()[dead_letters::HEADERS_DROPPED], AMQPValue::LongLongInt(n) if n > 130_000));
        assert!(encoded_len(kept) <= 131_072 - HEADER_FRAME_RESERVE);
        assert_eq!(fitted.message_id().as_ref().map(|m| m.as_str()), Some("m-1"), "the other properties stay");
    }

    #[test]
    fn a_message_id_that_was_not_utf8_names_nothing_so_two_such_ids_cannot_collide() {
        // What the frame parser makes of `message_id`s `\xff1` and `\xfe1`: the same string.
        let lossy = |raw: &[u8]| {
            let mut frame = vec![raw.len() as u8];
            frame.extend_from_slice(raw);
            lapin::types::parsing::parse_short_string(frame.as_slice()).unwrap().1
        };
        assert_eq!(lossy(b"\xff1"), lossy(b"\xfe1"));
        let with_id = |id: lapin::types::ShortString| {
            let mut d = Delivery::mock(1, "events.topic".into(), "a.b".into(), false, b"{}".to_vec());
            d.properties = BasicProperties::default().with_message_id(id);
            d
        };
        assert_eq!(usable_message_id(&with_id(lossy(b"\xff1"))), None);
        assert_eq!(usable_message_id(&with_id("order-42".into())), Some("order-42"));
        assert_eq!(usable_message_id(&Delivery::mock(1, "x".into(), "k".into(), false, vec![])), None);
    }

    #[test]
    fn a_dead_letter_continues_the_death_count_a_redriven_message_carries() {
        let poison = Poison {
            reason: "unmatched",
            error: "no rule".into(),
            event_id: Some("e-1".into()),
            trace_id: None,
            rule: None,
        };
        let header = |props: &BasicProperties, k: &str| props.headers().as_ref().unwrap().inner().get(k).cloned();
        let fresh = Delivery::mock(1, "events.topic".into(), "a.b".into(), false, b"{}".to_vec());
        let first = dead_letter_properties(&fresh, &poison, QUEUES, &dead_letters::origin(&fresh, "herald.events"));
        assert_eq!(header(&first, dead_letters::DEATHS), Some(AMQPValue::LongLongInt(1)));
        assert_eq!(header(&first, dead_letters::REASON), Some(AMQPValue::LongString("unmatched".into())));
        assert!(header(&first, dead_letters::FIRST_DEATH_AT).is_some());

        let mut carried = FieldTable::default();
        carried.insert(dead_letters::DEATHS.into(), AMQPValue::LongLongInt(2));
        carried.insert(dead_letters::FIRST_DEATH_AT.into(), AMQPValue::Timestamp(100));
        let mut redriven = Delivery::mock(2, "events.topic".into(), "a.b".into(), false, b"{}".to_vec());
        redriven.properties = BasicProperties::default().with_headers(carried);
        let again =
            dead_letter_properties(&redriven, &poison, QUEUES, &dead_letters::origin(&redriven, "herald.events"));
        assert_eq!(header(&again, dead_letters::DEATHS), Some(AMQPValue::LongLongInt(3)));
        assert_eq!(
            header(&again, dead_letters::FIRST_DEATH_AT),
            Some(AMQPValue::Timestamp(100)),
            "the first time stays"
        );
    }

    #[test]
    fn a_retry_folds_the_deaths_of_a_letter_moved_back_by_hand_into_heralds_count_and_drops_their_records() {
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        let death = |queue: &str, reason: &str, count: i64, time: u64| {
            let mut t = FieldTable::default();
            t.insert("queue".into(), s(queue));
            t.insert("reason".into(), s(reason));
            t.insert("count".into(), AMQPValue::LongLongInt(count));
            t.insert("time".into(), AMQPValue::Timestamp(time));
            t.insert("exchange".into(), s("events.topic"));
            AMQPValue::FieldTable(t)
        };
        let mut h = FieldTable::default();
        // The broker dead-lettered it at the delivery limit once, after it had waited twice in the retry queue.
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![death(QUEUES.0, "delivery_limit", 1, 300), death(QUEUES.1, "expired", 2, 200)].into(),
            ),
        );
        h.insert("x-first-death-queue".into(), s(QUEUES.1));
        h.insert("x-first-death-reason".into(), s("expired"));
        h.insert("x-last-death-queue".into(), s(QUEUES.0));
        h.insert(dead_letters::RETRIES.into(), AMQPValue::LongLongInt(2));
        let mut d = Delivery::mock(1, "".into(), QUEUES.0.into(), false, b"{}".to_vec());
        d.properties = BasicProperties::default().with_headers(h);
        let origin = dead_letters::origin(&d, QUEUES.0);
        let retry = retry_properties(&d, QUEUES.1, &origin, Some("e-1"), 3);
        let headers = retry.headers().clone().unwrap();
        let names: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        assert!(
            names.iter().all(|n| !n.starts_with("x-death") && !n.starts_with("x-first-") && !n.starts_with("x-last-")),
            "no death record: {names:?}"
        );
        let get = |k: &str| headers.inner().get(k).cloned();
        assert_eq!(get(dead_letters::DEATHS), Some(AMQPValue::LongLongInt(1)), "the delivery limit, not the waits");
        assert_eq!(get(dead_letters::FIRST_DEATH_AT), Some(AMQPValue::Timestamp(300)));
        assert_eq!(get(dead_letters::RETRIES), Some(AMQPValue::LongLongInt(3)));

        // Dead-lettered after its last try: that death is counted after the one it came back with.
        let mut back = Delivery::mock(2, "".into(), QUEUES.0.into(), false, b"{}".to_vec());
        back.properties = retry;
        let poison = Poison {
            reason: "unresolved_recipient",
            error: "no user".into(),
            event_id: Some("e-1".into()),
            trace_id: None,
            rule: None,
        };
        let letter = dead_letter_properties(&back, &poison, QUEUES, &origin);
        let h = letter.headers().clone().unwrap();
        assert_eq!(h.inner().get(dead_letters::DEATHS), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(h.inner().get(dead_letters::FIRST_DEATH_AT), Some(&AMQPValue::Timestamp(300)));

        // A first try of a message that never died carries no count.
        let fresh = Delivery::mock(3, "events.topic".into(), "a.b".into(), false, b"{}".to_vec());
        let first = retry_properties(&fresh, QUEUES.1, &dead_letters::origin(&fresh, QUEUES.0), None, 1);
        let h = first.headers().clone().unwrap();
        assert_eq!((h.inner().get(dead_letters::DEATHS), h.inner().get(dead_letters::FIRST_DEATH_AT)), (None, None));
    }

    /// The origin recorded when the consumer dead-letters: a named exchange's own; through the default exchange
    /// (a re-drive, a letter moved back), the origin headers it was routed by, else the broker's `x-death` record;
    /// never "" over a known origin.
    #[test]
    fn a_dead_letter_records_the_origin_it_was_routed_by_or_the_brokers() {
        let poison =
            Poison { reason: "unmatched", error: "no rule".into(), event_id: None, trace_id: None, rule: None };
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        let recorded = |d: &Delivery| {
            let props = dead_letter_properties(d, &poison, QUEUES, &dead_letters::origin(d, "herald.events"));
            let h = props.headers().clone().unwrap();
            let get = |k: &str| h.inner().get(k).cloned();
            (get(dead_letters::EXCHANGE), get(dead_letters::ROUTING_KEY))
        };
        let with = |exchange: &str, key: &str, pairs: &[(&str, AMQPValue)]| {
            let mut t = FieldTable::default();
            for (k, v) in pairs {
                t.insert((*k).into(), v.clone());
            }
            let mut d = Delivery::mock(1, exchange.into(), key.into(), false, b"{}".to_vec());
            d.properties = BasicProperties::default().with_headers(t);
            d
        };
        let herald = [(dead_letters::EXCHANGE, s("events.topic")), (dead_letters::ROUTING_KEY, s("student.created"))];
        let x_death = AMQPValue::FieldArray(
            vec![AMQPValue::FieldTable({
                let mut t = FieldTable::default();
                t.insert("exchange".into(), s("sgad.matches"));
                t.insert("routing-keys".into(), AMQPValue::FieldArray(vec![s("match.created")].into()));
                t.insert("reason".into(), s("delivery_limit"));
                t
            })]
            .into(),
        );

        // A re-drive: the default exchange, Herald's headers.
        let redriven = with("", "herald.events", &herald);
        assert_eq!(recorded(&redriven), (Some(s("events.topic")), Some(s("student.created"))));
        // A named exchange is its own origin, whatever the headers say.
        let named = with("sgad.notifications", "", &herald);
        assert_eq!(recorded(&named), (Some(s("sgad.notifications")), Some(s(""))));
        // Moved back after the broker dead-lettered it: no Herald headers, the broker's record.
        let brokers = with("", "herald.events", &[("x-death", x_death.clone())]);
        assert_eq!(recorded(&brokers), (Some(s("sgad.matches")), Some(s("match.created"))));
        let first = with("", "herald.events", &[("x-death", x_death.clone()), ("x-first-death-exchange", s("sgad.x"))]);
        assert_eq!(recorded(&first).0, Some(s("sgad.x")), "x-first-death-exchange first");
        // An origin recorded as "" (by an earlier version) does not hide the broker's.
        let blank = with(
            "",
            "herald.events",
            &[(dead_letters::EXCHANGE, s("")), (dead_letters::ROUTING_KEY, s("herald.events")), ("x-death", x_death)],
        );
        assert_eq!(recorded(&blank), (Some(s("sgad.matches")), Some(s("match.created"))));
        // Nothing known: the delivery's own.
        let bare = with("", "herald.events", &[]);
        assert_eq!(recorded(&bare), (Some(s("")), Some(s("herald.events"))));
    }

    #[test]
    fn only_encodings_that_leave_the_body_as_it_is_are_decoded() {
        for ok in ["", " ", "identity", "utf-8", "UTF-8", "utf8", "binary", "7bit", "8bit"] {
            assert!(decodable_encoding(ok), "{ok:?}");
        }
        for refused in ["gzip", "deflate", "br", "x-gzip", "zstd", "base64", "latin-1"] {
            assert!(!decodable_encoding(refused), "{refused:?}");
        }
    }

    #[test]
    fn reconnect_failures_warn_once_per_outage() {
        let mut outage = Outage::default();
        assert!(outage.failed(false), "the first failure warns");
        assert!(!outage.failed(false), "the next ones are info");
        assert!(!outage.failed(false));
        assert!(outage.failed(true), "a session that consumed, then failed: a new outage");
        assert!(!outage.failed(false));
    }

    #[test]
    fn error_headers_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }
}
