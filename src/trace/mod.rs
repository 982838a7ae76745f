//! Trace: the path of each event through Herald, for the operator's question "why didn't user X get N?".
//!
//! # Design
//!
//! A trace is not one row updated as the event moves on: it is an append-only log of *steps*, each written by
//! the node that took it, and assembled when someone reads it ([`Tracer::event`], [`Tracer::user`]). The node
//! that commits an event writes its `event` step (transport, exchange, routing key, producer, rule, dedupe,
//! outcome) and one `stored` step per notification (an event stored as one notification is one row holding
//! both, and this node's `delivered` step joins it when they meet in a batch: see [`Batch`]); every node that
//! hands a notification's frame to sessions —
//! the committing node, and every node the transport (Redis) carried it to — writes a `delivered` step naming
//! itself, keyed by the notification id (which travels between nodes already), so a delivery is recorded by
//! the node that wrote the frame; a muted notification, which is never published, gets its `delivered` step
//! (reason `muted`) from the commit listener; reads are `read` / `read_all` / `seen_all` steps. Steps link by trace id (one per
//! reception: a re-posted event gets a second trace), event id and notification id.
//!
//! Recording never stalls the hot path and never calls the store there: every stage calls the [`Recorder`],
//! which `try_send`s a small typed record (no JSON, no node name: an event's `event` and `stored` steps are one
//! record) into a bounded buffer (`trace.buffer`); one background task per node turns records into steps and
//! writes them in batches by time and size: [`LINGER`] after a batch's first step, at [`WRITE_BATCH`] steps, or
//! at once when a read endpoint flushes, so one transaction holds hundreds of events' steps and each of the
//! table's and indexes' pages is rewritten once per batch, not once per event. To the same end trace ids begin
//! with their millisecond (the trace id index grows at its end), a `stored` step names its trace but not the
//! event id (the `event` step does), and only the rows looked up by user are in the user index.
//! A full buffer drops the record and counts its steps (`herald_trace_dropped_total`);
//! `trace.sample_rate` keeps a share of steps, decided from a hash of the step's key (the trace id for an
//! event's own steps, the notification id for its stored, delivery and read steps) so every node decides alike,
//! and counts the rest (`herald_trace_sampled_out_total`).
//!
//! Storage ([`TraceStore`]): SQLite keeps steps in their own database file beside the inbox (`sqlite.rs`), so
//! trace writes never take the inbox's write lock; PostgreSQL keeps them in their own table of the inbox's
//! database, with their own migrations (`postgres.rs`). Retention deletes steps older than
//! `trace.retention_days`, off the hot path, `store.prune_batch` at a time (`herald_trace_pruned_rows_total`).
//!
//! Invariants: the hot path only ever `try_send`s (a disabled or sampled-out recorder does not even build the
//! step); only `trace::sqlite` and `trace::postgres` know the trace's SQL; this module depends on no pipeline
//! stage (the stages call it), so it adds no import cycle. Live-only events record their `event` step, not
//! per-session deliveries (they have no id a remote node could name).

mod postgres;
mod sqlite;
pub mod terminal;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, StoreLocation};

/// Most steps one write takes: a batch is written once it holds this many, or [`LINGER`] after its first step,
/// or at once when a read endpoint asks ([`Recorder::flush`]). Bounds the writer's memory to this many steps
/// beyond the buffer.
const WRITE_BATCH: usize = 4096;
/// How long the writer collects steps before it writes them: one transaction per quarter second rather than
/// one per wake-up, so each commit rewrites the table's and indexes' pages once for hundreds of events.
const LINGER: Duration = Duration::from_millis(250);
/// Most rows one assembled trace reads per query (a broadcast to many nodes, a big fan-out).
const MAX_ROWS: usize = 10_000;
/// Most recipients and notification ids kept in one `event` step.
const MAX_LISTED: usize = 256;
/// `dedupe` of an event refused before its commit: it was never deduplicated.
pub const UNCHECKED: &str = "unchecked";

#[derive(Debug, Clone, thiserror::Error)]
pub enum TraceError {
    #[error("tracing is disabled (trace.enabled = false)")]
    Disabled,
    #[error("trace store unavailable: {0}")]
    Unavailable(String),
}

/// What a step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The event as received and what became of it (one per trace, written after the commit).
    Event,
    /// A notification stored for the event (`notification_id`, `user_id`; none for a broadcast).
    Stored,
    /// The event was dead-lettered after its commit (an unresolved alias over AMQP).
    DeadLettered,
    /// The event was held for a retry after its commit (an unresolved alias over AMQP, with tries left): it comes
    /// back as a trace of its own.
    HeldForRetry,
    /// A node handed a notification to its sessions (or found none, or could not).
    Delivered,
    /// A user marked a notification read.
    Read,
    /// A user marked everything up to `up_to` read.
    ReadAll,
    /// A user saw everything up to `up_to` (opened the bell).
    SeenAll,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Stored => "stored",
            Kind::DeadLettered => "dead_lettered",
            Kind::HeldForRetry => "held_for_retry",
            Kind::Delivered => "delivered",
            Kind::Read => "read",
            Kind::ReadAll => "read_all",
            Kind::SeenAll => "seen_all",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "event" => Kind::Event,
            "stored" => Kind::Stored,
            "dead_lettered" => Kind::DeadLettered,
            "held_for_retry" => Kind::HeldForRetry,
            "delivered" => Kind::Delivered,
            "read" => Kind::Read,
            "read_all" => Kind::ReadAll,
            "seen_all" => Kind::SeenAll,
            _ => return None,
        })
    }
}

/// One step, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub trace_id: Option<String>,
    pub event_id: Option<String>,
    pub notification_id: Option<i64>,
    pub user_id: Option<String>,
    pub kind: Kind,
    pub node: String,
    /// Small: what the columns do not say.
    pub data: Data,
}

/// A step's `data` column. Recorded steps keep their fields typed until the writer serialises them, once, into
/// the column's JSON text (no JSON tree built and dropped per step); steps read back hold the parsed JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Json(Value),
    /// An `event` step, or the one row of an event stored as one notification (see [`Batch`]), with this
    /// node's delivery of it once that joins the row.
    Event {
        event: Box<EventData>,
        delivery: Option<Delivery>,
    },
    /// A `delivered` step of its own.
    Delivery(Delivery),
}

impl Data {
    /// The column's text.
    pub fn to_json_string(&self) -> String {
        match self {
            Data::Json(v) => Ok(v.to_string()),
            Data::Event { event, delivery } => serde_json::to_string(&EventJson::new(event, delivery.as_ref())),
            Data::Delivery(d) => serde_json::to_string(&DeliveryJson::new(d, false)),
        }
        .expect("trace data serialises")
    }

    /// The JSON the column holds (read back: as parsed; recorded: as it will be written).
    pub fn json(&self) -> Cow<'_, Value> {
        match self {
            Data::Json(v) => Cow::Borrowed(v),
            typed => Cow::Owned(serde_json::from_str(&typed.to_json_string()).expect("valid JSON")),
        }
    }
}

/// Where the steps are kept: one per backend.
#[async_trait]
pub trait TraceStore: Send + Sync + 'static {
    /// Write `steps` in one transaction (shared: a write that failed is retried with the same steps).
    async fn append(&self, steps: Arc<Vec<Step>>) -> Result<(), TraceError>;
    /// Steps naming this event id (`event`, `stored`, `dead_lettered`, `held_for_retry`), at most `limit`.
    async fn by_event(&self, event_id: &str, limit: usize) -> Result<Vec<Step>, TraceError>;
    /// Steps of these traces.
    async fn by_traces(&self, trace_ids: &[String], limit: usize) -> Result<Vec<Step>, TraceError>;
    /// Steps naming these notifications (`stored`, `delivered`, `read`).
    async fn by_notifications(&self, ids: &[i64], limit: usize) -> Result<Vec<Step>, TraceError>;
    /// These users' `read_all` and `seen_all` steps.
    async fn marks(&self, users: &[String], limit: usize) -> Result<Vec<Step>, TraceError>;
    /// The newest traces that stored something for `user`, newest first.
    async fn user_traces(&self, user: &str, limit: usize) -> Result<Vec<String>, TraceError>;
    /// Among the `batch` oldest steps, delete those before `cutoff`; how many went.
    async fn prune(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<u64, TraceError>;
    /// Delete every step of these users (an erase: their `stored`, `delivered`, `read` and mark steps, the `event`
    /// steps listing them among the recipients but the purge's own, and so an
    /// event stored for them alone, whose row is theirs); how many went. A rare call: it may scan the steps.
    async fn erase(&self, users: &[String]) -> Result<u64, TraceError>;
    /// The node is stopping and everything recorded is written: leave the store complete in itself (SQLite: the
    /// WAL checkpointed into the database file and truncated, so a copy of that file alone holds every step).
    async fn close(&self) -> Result<(), TraceError> {
        Ok(())
    }
}

/// How an event reached Herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Amqp,
}

/// Who sent an event and how: what the pipeline cannot see in the event itself.
#[derive(Debug, Clone)]
pub struct Origin {
    pub transport: Transport,
    /// The service key's id (HTTP), if any.
    pub producer: Option<String>,
}

impl Origin {
    pub fn http(producer: Option<String>) -> Origin {
        Origin { transport: Transport::Http, producer }
    }
    pub fn amqp() -> Origin {
        Origin { transport: Transport::Amqp, producer: None }
    }
}

/// An event's reception, carried with it from routing to the commit (`None` when tracing is off).
#[derive(Debug, Clone)]
pub struct Received {
    pub trace_id: String,
    pub transport: Transport,
    pub producer: Option<String>,
    pub event_type: String,
    /// The rule that matched, if one did.
    pub rule: Option<String>,
    pub received_at: Instant,
}

/// What became of an event, for its `event` step.
#[derive(Debug, Clone, Default)]
pub struct Fate {
    /// One of [`Trace::outcome`]'s values.
    pub outcome: &'static str,
    pub duplicate: bool,
    pub reason: Option<String>,
    /// Recipients the commit does not name in `stored` steps (a purge's users, a live event's users).
    pub recipients: Vec<String>,
}

/// What one node's delivery of a notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Sessions of the recipient open on this node.
    pub sessions: usize,
    /// Sessions whose outbox took the frame.
    pub written: usize,
    pub overflowed: usize,
    pub closed: usize,
}

impl Delivered {
    fn reason(&self) -> Option<&'static str> {
        if self.sessions == 0 {
            Some("offline")
        } else if self.overflowed > 0 {
            Some("outbox_overflow")
        } else if self.closed > 0 {
            Some("closed")
        } else {
            None
        }
    }
}

/// Steps recorded on this node since it started: written, dropped (the buffer full), not sampled, lost (the
/// store refused them through every retry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub recorded: u64,
    pub dropped: u64,
    pub sampled_out: u64,
    pub lost: u64,
}

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    sampled_out: AtomicU64,
    lost: AtomicU64,
}

/// What the hot path hands the writer: typed and small, so recording costs a few moves and one `try_send`; the
/// writer task builds the [`Step`]s (JSON and all) off the request path.
enum Command {
    /// A rare step (dead letters, reads, marks), built by the caller.
    Step(Box<Step>),
    /// An event's `event` step (if sampled in) and its `stored` steps.
    Committed(Box<Committed>),
    /// A `delivered` step.
    Delivery(Delivery),
    /// Answered once every step queued before it is written.
    Flush(oneshot::Sender<()>),
    /// Delete these users' steps, once every step queued before it is written (and none queued after it).
    Erase(Vec<String>),
}

struct Committed {
    at: DateTime<Utc>,
    trace_id: String,
    event_id: String,
    /// `None`: the `event` step was sampled out.
    event: Option<EventData>,
    /// `(notification id, user)` of the `stored` steps kept.
    stored: Vec<(i64, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    transport: Transport,
    exchange: String,
    routing_key: String,
    producer: Option<String>,
    event_type: String,
    rule: Option<String>,
    duplicate: bool,
    outcome: &'static str,
    reason: Option<String>,
    recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    at: DateTime<Utc>,
    id: i64,
    user: Option<String>,
    online: bool,
    written: usize,
    reason: Option<&'static str>,
}

impl Command {
    /// How many steps it carries.
    fn steps(&self) -> usize {
        match self {
            Command::Step(_) | Command::Delivery(_) => 1,
            Command::Committed(c) => usize::from(c.event.is_some()) + c.stored.len(),
            Command::Flush(_) | Command::Erase(_) => 0,
        }
    }
}

/// A batch's rows, as the writer task builds them from commands (off the request path; their data stays typed
/// until the store serialises it, [`Data`]).
///
/// An event stored as one notification — the common case: one user, or a broadcast — is one row, not three: its
/// `stored` step carries the `event` step's fields and its event id, and this node's `delivered` step for that
/// notification joins the same row (`delivery` in its data) when both reach the writer in one batch. That row
/// costs one table insert and four index entries instead of three rows and six entries; [`assemble`] reads it
/// as the three steps it holds. Any other step is a row of its own, as is a delivery whose commit is not in the
/// batch (another node committed it, or the batch ended between the two).
#[derive(Default)]
struct Batch {
    rows: Vec<Step>,
    /// Steps the rows hold (a merged row holds up to three): what the batch bound and the counters count.
    steps: usize,
    /// Notification id → the row of its one-notification event, until this node's delivery joins it.
    awaiting: HashMap<i64, usize>,
    /// Deliveries that reached the writer before their event's commit record (the commit listener publishes
    /// before the ingest records the commit), until it comes or the batch ends.
    early: HashMap<i64, Delivery>,
}

impl Batch {
    fn add(&mut self, command: Command, node: &str) {
        match command {
            Command::Step(s) => self.push(*s, 1),
            Command::Committed(c) => self.committed(*c, node),
            Command::Delivery(d) => self.delivery(d, node),
            Command::Flush(_) | Command::Erase(_) => {}
        }
    }

    fn push(&mut self, step: Step, steps: usize) {
        self.rows.push(step);
        self.steps += steps;
    }

    fn committed(&mut self, c: Committed, node: &str) {
        let Committed { at, trace_id, event_id, event, mut stored } = c;
        let last = stored.pop();
        let event = match (event, last) {
            (Some(e), Some((id, user))) if stored.is_empty() => {
                // An early delivery was counted when it came.
                let delivery = self.early.remove(&id);
                if delivery.is_none() {
                    self.awaiting.insert(id, self.rows.len());
                }
                let step = Step {
                    at,
                    trace_id: Some(trace_id),
                    event_id: Some(event_id),
                    notification_id: Some(id),
                    user_id: user,
                    kind: Kind::Stored,
                    node: node.to_owned(),
                    data: Data::Event { event: Box::new(e), delivery },
                };
                self.push(step, 2);
                return;
            }
            (event, last) => {
                stored.extend(last);
                event
            }
        };
        if let Some(e) = event {
            let step = Step {
                at,
                trace_id: Some(trace_id.clone()),
                event_id: Some(event_id),
                notification_id: None,
                user_id: None,
                kind: Kind::Event,
                node: node.to_owned(),
                data: Data::Event { event: Box::new(e), delivery: None },
            };
            self.push(step, 1);
        }
        // The `event` step names the event id; a `stored` step only links to its trace.
        for (id, user) in stored {
            let step = Step {
                at,
                trace_id: Some(trace_id.clone()),
                event_id: None,
                notification_id: Some(id),
                user_id: user,
                kind: Kind::Stored,
                node: node.to_owned(),
                data: Data::Json(json!({})),
            };
            self.push(step, 1);
        }
    }

    fn delivery(&mut self, d: Delivery, node: &str) {
        if let Some(row) = self.awaiting.remove(&d.id) {
            if let Data::Event { delivery, .. } = &mut self.rows[row].data {
                *delivery = Some(d);
            }
            self.steps += 1;
        } else if let std::collections::hash_map::Entry::Vacant(v) = self.early.entry(d.id) {
            v.insert(d);
            self.steps += 1;
        } else {
            self.push(delivered_step(d, node), 1);
        }
    }

    /// The rows to write: the early deliveries no commit joined become rows of their own.
    fn into_rows(mut self, node: &str) -> (Vec<Step>, usize) {
        let mut early: Vec<Delivery> = self.early.into_values().collect();
        early.sort_by_key(|d| d.at);
        self.rows.extend(early.into_iter().map(|d| delivered_step(d, node)));
        (self.rows, self.steps)
    }
}

/// An `event` step's data (and that of the row an event stored as one notification shares with it).
#[derive(Serialize)]
struct EventJson<'a> {
    transport: Transport,
    exchange: Option<&'a str>,
    routing_key: Option<&'a str>,
    producer: Option<&'a str>,
    event_type: &'a str,
    rule: Option<&'a str>,
    dedupe: &'static str,
    outcome: &'static str,
    reason: Option<&'a str>,
    recipients: &'a [String],
    recipients_total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryJson>,
}

impl<'a> EventJson<'a> {
    fn new(e: &'a EventData, delivery: Option<&Delivery>) -> Self {
        EventJson {
            transport: e.transport,
            exchange: (!e.exchange.is_empty()).then_some(e.exchange.as_str()),
            routing_key: (!e.routing_key.is_empty()).then_some(e.routing_key.as_str()),
            producer: e.producer.as_deref(),
            event_type: &e.event_type,
            rule: e.rule.as_deref(),
            dedupe: if e.duplicate { "duplicate" } else { "new" },
            outcome: e.outcome,
            reason: e.reason.as_deref(),
            recipients: &e.recipients[..e.recipients.len().min(MAX_LISTED)],
            recipients_total: e.recipients.len(),
            delivery: delivery.map(|d| DeliveryJson::new(d, true)),
        }
    }
}

/// A delivery's fields; `at` (unix milliseconds) when it joins another step's row.
#[derive(Serialize)]
struct DeliveryJson {
    online: bool,
    sessions_written: usize,
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
}

impl DeliveryJson {
    fn new(d: &Delivery, joined: bool) -> Self {
        DeliveryJson {
            online: d.online,
            sessions_written: d.written,
            reason: d.reason,
            at: joined.then(|| d.at.timestamp_millis()),
        }
    }
}

fn delivered_step(mut d: Delivery, node: &str) -> Step {
    Step {
        at: d.at,
        trace_id: None,
        event_id: None,
        notification_id: Some(d.id),
        user_id: d.user.take(),
        kind: Kind::Delivered,
        node: node.to_owned(),
        data: Data::Delivery(d),
    }
}

struct Inner {
    tx: mpsc::Sender<Command>,
    node: Arc<str>,
    /// A step is kept when its key's hash is at most this (`u64::MAX`: all).
    keep_below: u64,
    counters: Counters,
    /// Wakes the writer before its linger ends (see [`batch_loop`]).
    wake: Arc<Wake>,
}

/// How the hot path wakes the writer while it lingers over a batch: only for a flush or once a batch's worth of
/// commands has queued, not for every step (each wake of a parked thread is a syscall for the sender and a
/// context switch on a shared core: thousands a second at 2,000 events/s).
#[derive(Default)]
struct Wake {
    notify: tokio::sync::Notify,
    /// Queued commands at which a send wakes the writer: the room left in the batch it lingers over (a command
    /// carries at least one step).
    at: AtomicUsize,
}

/// The hot path's handle: every stage calls it, and it never waits. Cheap to clone; `Default` records nothing.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Option<Arc<Inner>>,
}

impl Recorder {
    /// A recorder feeding a buffer of `buffer` steps, and its receiving end (for [`spawn_writer`]).
    fn new(node: Arc<str>, buffer: usize, sample_rate: f64) -> (Recorder, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(buffer);
        let keep_below = if sample_rate >= 1.0 { u64::MAX } else { (sample_rate * u64::MAX as f64) as u64 };
        let inner = Inner { tx, node, keep_below, counters: Counters::default(), wake: Arc::default() };
        (Recorder { inner: Some(Arc::new(inner)) }, rx)
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A fresh trace id for an event being received, `None` when tracing is off.
    pub fn begin(
        &self,
        origin: &Origin,
        event_type: &str,
        rule: Option<&str>,
        received_at: Instant,
    ) -> Option<Box<Received>> {
        self.inner.as_ref()?;
        Some(Box::new(Received {
            trace_id: new_trace_id(),
            transport: origin.transport,
            producer: origin.producer.clone(),
            event_type: event_type.to_owned(),
            rule: rule.map(str::to_owned),
            received_at,
        }))
    }

    /// The `event` step of a committed (or skipped) event, and a `stored` step per notification
    /// (`(id, user)`, user `None` for a broadcast). Takes the reception by value (its strings move into the
    /// record, uncopied) and gives back its trace id.
    pub fn committed(
        &self,
        r: Received,
        event_id: &str,
        exchange: String,
        routing_key: String,
        fate: Fate,
        stored: &[(i64, Option<&str>)],
    ) -> String {
        let Some(inner) = &self.inner else { return r.trace_id };
        let Received { trace_id, transport, producer, event_type, rule, received_at: at } = r;
        let event = inner.keep(hash_str(&trace_id)).then_some(EventData {
            transport,
            exchange,
            routing_key,
            producer,
            event_type,
            rule,
            duplicate: fate.duplicate,
            outcome: fate.outcome,
            reason: fate.reason,
            recipients: fate.recipients,
        });
        let stored: Vec<(i64, Option<String>)> = stored
            .iter()
            .filter(|(id, _)| inner.keep(hash_i64(*id)))
            .map(|(id, user)| (*id, user.map(str::to_owned)))
            .collect();
        if event.is_some() || !stored.is_empty() {
            inner.send(Command::Committed(Box::new(Committed {
                at: received_at(at),
                trace_id: trace_id.clone(),
                event_id: event_id.to_owned(),
                event,
                stored,
            })));
        }
        trace_id
    }

    /// An event refused before its commit (undecodable, unmatched under `unmatched = "dead_letter"`, a rule
    /// that could not route it) and dead-lettered (AMQP): its whole trace is this one step, with the `rule` that
    /// matched, if one did, and `dedupe` `unchecked` (it never reached the store).
    pub fn dead_lettered_unrouted(
        &self,
        event_id: Option<&str>,
        exchange: &str,
        routing_key: &str,
        rule: Option<&str>,
        reason: &str,
        error: &str,
    ) {
        let Some(inner) = &self.inner else { return };
        let trace_id = new_trace_id();
        if !inner.keep(hash_str(&trace_id)) {
            return;
        }
        let data = Data::Json(json!({
            "transport": Transport::Amqp,
            "exchange": (!exchange.is_empty()).then_some(exchange),
            "routing_key": (!routing_key.is_empty()).then_some(routing_key),
            "producer": null,
            "event_type": null,
            "rule": rule,
            "dedupe": UNCHECKED,
            "outcome": "dead_lettered",
            "reason": format!("{reason}: {error}"),
            "recipients": [],
            "recipients_total": 0,
        }));
        inner.send_step(Step {
            at: Utc::now(),
            trace_id: Some(trace_id),
            event_id: Some(event_id.unwrap_or_default().to_owned()),
            notification_id: None,
            user_id: None,
            kind: Kind::Event,
            node: inner.node.to_string(),
            data,
        });
    }

    /// A committed event then dead-lettered (an alias nobody taught yet, over AMQP).
    pub fn dead_lettered(&self, trace_id: &str, event_id: &str, reason: &str, error: &str) {
        self.after_commit(trace_id, event_id, Kind::DeadLettered, format!("{reason}: {error}"));
    }

    /// A committed event then held for a retry (an alias nobody taught yet, over AMQP): try `retry` of `of`, back
    /// in `in_secs`. The try that follows is a trace of its own, under the same event id.
    pub fn held_for_retry(
        &self,
        trace_id: &str,
        event_id: &str,
        (reason, error): (&str, &str),
        (retry, of, in_secs): (u32, u32, u64),
    ) {
        self.after_commit(
            trace_id,
            event_id,
            Kind::HeldForRetry,
            format!("{reason}: {error}; retry {retry} of {of}, back in {in_secs} s"),
        );
    }

    /// A step that settles a committed event's trace after its commit, with why.
    fn after_commit(&self, trace_id: &str, event_id: &str, kind: Kind, reason: String) {
        let Some(inner) = &self.inner else { return };
        if inner.keep(hash_str(trace_id)) {
            inner.send_step(Step {
                at: Utc::now(),
                trace_id: Some(trace_id.to_owned()),
                event_id: Some(event_id.to_owned()),
                notification_id: None,
                user_id: None,
                kind,
                node: inner.node.to_string(),
                data: Data::Json(json!({ "reason": reason })),
            });
        }
    }

    /// This node handed notification `id` to `user`'s sessions (`None`: a broadcast, to everyone's).
    pub fn delivered(&self, id: i64, user: Option<&str>, d: Delivered) {
        self.delivery(id, user, d.sessions > 0, d.written, d.reason());
    }

    /// Notification `id` was stored muted for `user` (their preferences, or `preferences.muted_by_default`): the
    /// commit listener records it on this node instead of delivering it; `online`: whether `user` had a
    /// session here all the same.
    pub fn muted(&self, id: i64, user: &str, online: bool) {
        self.delivery(id, Some(user), online, 0, Some("muted"));
    }

    fn delivery(&self, id: i64, user: Option<&str>, online: bool, written: usize, reason: Option<&'static str>) {
        let Some(inner) = &self.inner else { return };
        if inner.keep(hash_i64(id)) {
            inner.send(Command::Delivery(Delivery {
                at: Utc::now(),
                id,
                user: user.map(str::to_owned),
                online,
                written,
                reason,
            }));
        }
    }

    /// `user` marked notification `id` read.
    pub fn read(&self, id: i64, user: &str, at: DateTime<Utc>) {
        let Some(inner) = &self.inner else { return };
        if inner.keep(hash_i64(id)) {
            inner.send_step(Step {
                at,
                trace_id: None,
                event_id: None,
                notification_id: Some(id),
                user_id: Some(user.to_owned()),
                kind: Kind::Read,
                node: inner.node.to_string(),
                data: Data::Json(json!({})),
            });
        }
    }

    /// `user` marked everything up to `up_to` read (`Kind::ReadAll`) or seen (`Kind::SeenAll`).
    pub fn marked_all(&self, kind: Kind, user: &str, up_to: i64, at: DateTime<Utc>) {
        let Some(inner) = &self.inner else { return };
        debug_assert!(matches!(kind, Kind::ReadAll | Kind::SeenAll));
        inner.send_step(Step {
            at,
            trace_id: None,
            event_id: None,
            notification_id: None,
            user_id: Some(user.to_owned()),
            kind,
            node: inner.node.to_string(),
            data: Data::Json(json!({ "up_to": up_to })),
        });
    }

    /// Wait until every step recorded before this call is written (the read endpoints call it, so a trace
    /// read on this node shows this node's steps). Not for the hot path.
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout(Duration::from_secs(2), inner.tx.send(Command::Flush(tx))).await;
        if matches!(sent, Ok(Ok(()))) {
            inner.wake.notify.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }

    /// Delete `users`' steps (an erase), once every step recorded before this call is written. Unlike a step it
    /// waits for room in the buffer (up to 5 s) rather than being dropped; not for the hot path (erases are rare).
    pub async fn erase(&self, users: &[String]) {
        let Some(inner) = &self.inner else { return };
        let sent = tokio::time::timeout(Duration::from_secs(5), inner.tx.send(Command::Erase(users.to_vec()))).await;
        if matches!(sent, Ok(Ok(()))) {
            inner.wake.notify.notify_one();
        } else {
            tracing::warn!(
                users = users.len(),
                "the trace's buffer stayed full: erased users' steps stay until retention"
            );
        }
    }

    /// What became of the steps recorded on this node since it started.
    pub fn counts(&self) -> Counts {
        match &self.inner {
            Some(i) => Counts {
                recorded: i.counters.recorded.load(Ordering::Relaxed),
                dropped: i.counters.dropped.load(Ordering::Relaxed),
                sampled_out: i.counters.sampled_out.load(Ordering::Relaxed),
                lost: i.counters.lost.load(Ordering::Relaxed),
            },
            None => Counts::default(),
        }
    }
}

impl Inner {
    fn keep(&self, key: u64) -> bool {
        if self.keep_below == u64::MAX || key <= self.keep_below {
            return true;
        }
        self.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_trace_sampled_out_total").increment(1);
        false
    }

    fn send_step(&self, step: Step) {
        self.send(Command::Step(Box::new(step)));
    }

    fn send(&self, command: Command) {
        match self.tx.try_send(command) {
            Ok(()) => {
                let queued = self.tx.max_capacity() - self.tx.capacity();
                if queued >= self.wake.at.load(Ordering::Relaxed).max(1) {
                    self.wake.notify.notify_one();
                }
            }
            Err(e) => {
                let n = match e {
                    mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c.steps() as u64,
                };
                self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("herald_trace_dropped_total").increment(n);
            }
        }
    }
}

/// A new trace id: 16 hex digits, the milliseconds since 1970 then 22 random bits, so ids sort by time and
/// each insert lands at the end of the trace id index (a random id dirtied a random index page per event).
fn new_trace_id() -> String {
    let ms = Utc::now().timestamp_millis().max(0) as u64;
    format!("{:016x}", (ms << 22) | (rand::random::<u64>() >> 42))
}

/// The wall-clock time of an `Instant` in the past.
fn received_at(at: Instant) -> DateTime<Utc> {
    let now = Utc::now();
    chrono::Duration::from_std(at.elapsed()).map(|d| now - d).unwrap_or(now)
}

/// SplitMix64: spreads sequential ids over the whole range, so a share of them is a share of the range.
fn hash_i64(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a, then SplitMix64's finaliser.
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash_i64(h as i64)
}

/// Write what has queued, in batches, until every recorder is gone: a batch is written [`LINGER`] after its
/// first step, once it holds [`WRITE_BATCH`] steps, or at once when a flush asks.
/// Holds the recorders' counters weakly: the loop ends once every recorder (every sender) is dropped.
///
/// On a background thread ([`crate::background`]) with its own runtime, not on the request path's: turning a
/// batch into rows and writing them yields the core to requests and sessions (measured at 2,000 events/s on one
/// core: p99 6.0 → 5.1 ms with the trace store's writer alone moved off).
fn spawn_write_loop(store: Arc<dyn TraceStore>, rx: mpsc::Receiver<Command>, counters: std::sync::Weak<Inner>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let spawned = runtime.map_err(|e| e.to_string()).and_then(|runtime| {
        crate::background::spawn("herald-trace", move || {
            runtime.block_on(batch_loop(store, rx, counters, LINGER, WRITE_BATCH))
        })
        .map_err(|e| e.to_string())
    });
    if let Err(e) = spawned {
        // Without its writer the recorder's buffer fills and every step is counted as dropped.
        tracing::error!(error = %e, "the trace writer could not start; steps will be dropped");
    }
}

async fn batch_loop(
    store: Arc<dyn TraceStore>,
    mut rx: mpsc::Receiver<Command>,
    counters: std::sync::Weak<Inner>,
    linger: Duration,
    max_steps: usize,
) {
    let Some((node, wake)) = counters.upgrade().map(|c| (c.node.clone(), c.wake.clone())) else { return };
    let mut buf = Vec::with_capacity(256);
    let mut open = true;
    while open {
        // Parked until a batch begins (one wake per batch), unless commands after an erase are waiting...
        if buf.is_empty() && rx.recv_many(&mut buf, 256).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + linger;
        let mut lingered = false;
        let mut batch = Batch::default();
        let mut flushes = Vec::new();
        let mut erase = None;
        loop {
            let mut queued = std::mem::take(&mut buf).into_iter();
            for c in queued.by_ref() {
                match c {
                    Command::Flush(tx) => flushes.push(tx),
                    // The batch ends here: the erase runs after what came before it, and what came after it
                    // (a user's new notification, say) waits for the next batch.
                    Command::Erase(users) => {
                        erase = Some(users);
                        break;
                    }
                    c => batch.add(c, &node),
                }
            }
            buf.extend(queued);
            if erase.is_some() || !flushes.is_empty() || batch.steps >= max_steps {
                break;
            }
            // ...then it takes what has queued without waiting, and otherwise sleeps until the linger ends or a
            // flush or a full batch wakes it: steps queued meanwhile wake nothing. Once the linger ended it takes
            // the last of what queued, then the batch is written.
            match rx.try_recv() {
                Ok(c) => {
                    buf.push(c);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) if lingered => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            wake.at.store(max_steps.saturating_sub(batch.steps).max(1), Ordering::Relaxed);
            lingered = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => true,
                _ = wake.notify.notified() => false,
            };
        }
        let (rows, steps) = batch.into_rows(&node);
        if !rows.is_empty() {
            let n = steps as u64;
            match append_retrying(&*store, Arc::new(rows)).await {
                Ok(()) => {
                    metrics::counter!("herald_trace_recorded_total").increment(n);
                    if let Some(c) = counters.upgrade() {
                        c.counters.recorded.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    metrics::counter!("herald_trace_write_errors_total").increment(n);
                    if let Some(c) = counters.upgrade() {
                        c.counters.lost.fetch_add(n, Ordering::Relaxed);
                    }
                    tracing::warn!(error = %e, steps = n, "trace steps could not be written; they are lost");
                }
            }
        }
        if let Some(users) = erase {
            match store.erase(&users).await {
                Ok(n) => tracing::info!(users = users.len(), steps = n, "erased the trace steps of erased users"),
                Err(e) => {
                    tracing::warn!(error = %e, "the trace steps of erased users could not be deleted; retention removes them")
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// How a trace write that failed is retried: a store that is back within a few seconds (a restart, a failover)
/// loses no step; meanwhile new steps wait in the recorder's buffer (or are dropped, counted, once it is full).
const WRITE_RETRY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
const WRITE_ATTEMPTS: u32 = 5;

/// `store.append(steps)`, retried with [`WRITE_RETRY`] up to [`WRITE_ATTEMPTS`] times; the last error.
async fn append_retrying(store: &dyn TraceStore, steps: Arc<Vec<Step>>) -> Result<(), TraceError> {
    let mut attempt = 1;
    loop {
        match store.append(steps.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= WRITE_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "a trace write failed; retrying");
                tokio::time::sleep(WRITE_RETRY.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// Prune steps older than `retention` every `every`, `batch` at a time, until `shutdown`.
async fn prune_loop(
    store: Arc<dyn TraceStore>,
    retention: chrono::Duration,
    every: Duration,
    batch: usize,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = prune(store.as_ref(), Utc::now() - retention, batch).await {
            tracing::warn!(error = %e, "trace retention failed; it runs again later");
        }
    }
}

/// Delete the steps before `cutoff`, `batch` at a time, yielding between batches; how many went.
pub async fn prune(store: &dyn TraceStore, cutoff: DateTime<Utc>, batch: usize) -> Result<u64, TraceError> {
    let mut total = 0;
    loop {
        let n = store.prune(cutoff, batch).await?;
        if n > 0 {
            metrics::counter!("herald_trace_pruned_rows_total").increment(n);
        }
        total += n;
        if n == 0 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// The trace, as the API and the CLI show it (contract D).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trace {
    pub trace_id: String,
    pub event_id: String,
    pub received_at: DateTime<Utc>,
    pub transport: Transport,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    /// The service key's id that posted it (HTTP), else `null`.
    pub producer: Option<String>,
    pub event_type: Option<String>,
    /// `new` or `duplicate` (the scoped event id was applied before); `unchecked` for an event refused before
    /// its commit (dead-lettered undecodable, unmatched or unroutable), which was never deduplicated.
    pub dedupe: String,
    /// The rule that matched, `null` when none did.
    pub rule: Option<String>,
    /// `stored`, `duplicate`, `unmatched`, `ignored`, `dead_lettered`, `held_for_retry` (an unknown alias over
    /// AMQP: its next try is a trace of its own under the same event id), `purged`, `live_only` or `unresolved`.
    pub outcome: String,
    /// Why it was not stored, or why it was dead-lettered or held for a retry.
    pub reason: Option<String>,
    /// After aliases: the users it was stored for (`*` for a broadcast), a purge's users, a live event's users.
    pub recipients: Vec<String>,
    pub notification_ids: Vec<i64>,
    /// The nodes that handled its frames: the committing node and every node the transport carried them to.
    pub published_to: Vec<String>,
    pub deliveries: Vec<TraceDelivery>,
    pub read: Vec<ReadMark>,
    pub seen: Vec<SeenMark>,
}

/// One node's delivery of one of the trace's notifications to one user (`*`: a broadcast, to everyone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceDelivery {
    pub user_id: String,
    pub node: String,
    /// Whether the user had a session on that node.
    pub online: bool,
    /// Sessions whose outbox took the frame (queued): each writes it to its socket in order. A session closed
    /// before it got there (`4008`, too slow to keep up) drops what it still held, and its client resumes from
    /// the inbox on reconnecting.
    pub sessions_written: u64,
    /// Why not every session got it: `offline`, `outbox_overflow`, `muted` or `closed`; `null` when all did.
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadMark {
    pub user_id: String,
    pub read_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeenMark {
    pub user_id: String,
    pub seen_at: DateTime<Utc>,
}

/// `GET /api/v1/admin/events/{event_id}/trace`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventTraces {
    pub event_id: String,
    /// Newest first: an event id posted twice has two traces (the second a `duplicate`).
    pub traces: Vec<Trace>,
}

/// `GET /api/v1/admin/users/{user_id}/trace`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserTraces {
    pub user_id: String,
    /// Newest first.
    pub traces: Vec<Trace>,
}

/// `GET /api/v1/admin/trace/stats`: this node's recorder since it started.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceStats {
    /// Steps written.
    pub recorded: u64,
    /// Steps dropped because the buffer was full.
    pub dropped: u64,
    /// Steps not kept by `trace.sample_rate`.
    pub sampled_out: u64,
    /// Steps the trace's store refused through every retry (an outage of more than a few seconds): lost. A trace
    /// read back may then miss steps, or the whole event (`404`), though the event itself was stored.
    pub lost: u64,
    pub retention_days: u32,
}

/// The trace: the recorder for the stages, the store for the read endpoints.
#[derive(Clone)]
pub struct Tracer {
    recorder: Recorder,
    store: Option<Arc<dyn TraceStore>>,
    retention_days: u32,
}

impl Tracer {
    /// At a stop, after the drain: write every step recorded so far (the drain's own commits and deliveries), then
    /// close the store ([`TraceStore::close`]). Bounded by [`Recorder::flush`]'s waits.
    pub async fn close(&self) {
        let Some(store) = &self.store else { return };
        self.recorder.flush().await;
        if let Err(e) = store.close().await {
            tracing::warn!(error = %e, "the trace did not close cleanly; its WAL stays beside its file until the next checkpoint");
        }
    }

    /// Nothing recorded, nothing to read (`trace.enabled = false`).
    pub fn disabled(retention_days: u32) -> Tracer {
        Tracer { recorder: Recorder::default(), store: None, retention_days }
    }

    /// Over any store: a recorder with a buffer of `buffer` steps and its writer task.
    pub fn with_store(
        store: Arc<dyn TraceStore>,
        node: &str,
        buffer: usize,
        sample_rate: f64,
        retention_days: u32,
    ) -> Tracer {
        let (recorder, rx) = Recorder::new(Arc::from(node), buffer, sample_rate);
        let counters = Arc::downgrade(recorder.inner.as_ref().expect("enabled"));
        spawn_write_loop(store.clone(), rx, counters);
        Tracer { recorder, store: Some(store), retention_days }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn stats(&self) -> TraceStats {
        let Counts { recorded, dropped, sampled_out, lost } = self.recorder.counts();
        TraceStats { recorded, dropped, sampled_out, lost, retention_days: self.retention_days }
    }

    fn store(&self) -> Result<&Arc<dyn TraceStore>, TraceError> {
        self.store.as_ref().ok_or(TraceError::Disabled)
    }

    /// Every retained trace of `event_id`, newest first (empty: none).
    pub async fn event(&self, event_id: &str) -> Result<Vec<Trace>, TraceError> {
        let store = self.store()?;
        self.recorder.flush().await;
        let steps = store.by_event(event_id, MAX_ROWS).await?;
        let ids: BTreeSet<String> = steps.iter().filter_map(|s| s.trace_id.clone()).collect();
        let ids: Vec<String> = ids.into_iter().collect();
        let steps = store.by_traces(&ids, MAX_ROWS).await?;
        self.assemble(store, steps).await
    }

    /// The newest `limit` traces that stored something for `user`, newest first.
    pub async fn user(&self, user: &str, limit: usize) -> Result<Vec<Trace>, TraceError> {
        let store = self.store()?;
        self.recorder.flush().await;
        let ids = store.user_traces(user, limit).await?;
        let steps = store.by_traces(&ids, MAX_ROWS).await?;
        self.assemble(store, steps).await
    }

    /// Group steps by trace and fetch what other nodes and later requests recorded about their notifications.
    async fn assemble(&self, store: &Arc<dyn TraceStore>, steps: Vec<Step>) -> Result<Vec<Trace>, TraceError> {
        let ids: BTreeSet<i64> = steps.iter().filter_map(|s| s.notification_id).collect();
        let ids: Vec<i64> = ids.into_iter().collect();
        let later = if ids.is_empty() { Vec::new() } else { store.by_notifications(&ids, MAX_ROWS).await? };
        let users: BTreeSet<String> =
            steps.iter().filter(|s| s.kind == Kind::Stored).filter_map(|s| s.user_id.clone()).collect();
        let users: Vec<String> = users.into_iter().collect();
        let marks = if users.is_empty() { Vec::new() } else { store.marks(&users, MAX_ROWS).await? };
        Ok(assemble(steps, &later, &marks))
    }
}

/// Build traces from their own steps (`event`, `stored`, `dead_lettered`, `held_for_retry`, in the order they
/// were written), the steps naming their notifications (`delivered`, `read`, from any node) and their users'
/// `read_all` / `seen_all` marks. Newest first: by reception time, then (times are kept to the millisecond) by write order.
pub fn assemble(own: Vec<Step>, later: &[Step], marks: &[Step]) -> Vec<Trace> {
    let mut by_trace: BTreeMap<String, (usize, Vec<Step>)> = BTreeMap::new();
    for (i, s) in own.into_iter().enumerate() {
        if let Some(t) = s.trace_id.clone() {
            let entry = by_trace.entry(t).or_insert((0, Vec::new()));
            if carries_event(&s) {
                entry.0 = i;
            }
            entry.1.push(s);
        }
    }
    let mut traces: Vec<(usize, Trace)> = by_trace
        .into_iter()
        .filter_map(|(id, (written, steps))| one(id, steps, later, marks).map(|t| (written, t)))
        .collect();
    traces.sort_by(|(wa, a), (wb, b)| b.received_at.cmp(&a.received_at).then(wb.cmp(wa)));
    traces.into_iter().map(|(_, t)| t).collect()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Whether a step holds its trace's `event` step: the `event` step itself, or the one row of an event stored as
/// one notification (see [`Batch`]; a `stored` step of its own names no event id).
fn carries_event(s: &Step) -> bool {
    s.kind == Kind::Event || (s.kind == Kind::Stored && s.event_id.is_some())
}

fn one(trace_id: String, steps: Vec<Step>, later: &[Step], marks: &[Step]) -> Option<Trace> {
    let event = steps.iter().find(|s| s.kind == Kind::Event).or_else(|| steps.iter().find(|s| carries_event(s)))?;
    let d = event.data.json();
    let d = &*d;
    let mut t = Trace {
        trace_id,
        event_id: event.event_id.clone().unwrap_or_default(),
        received_at: event.at,
        transport: serde_json::from_value(d["transport"].clone()).unwrap_or(Transport::Http),
        exchange: text(d, "exchange"),
        routing_key: text(d, "routing_key"),
        producer: text(d, "producer"),
        event_type: text(d, "event_type"),
        dedupe: text(d, "dedupe").unwrap_or_else(|| "new".into()),
        rule: text(d, "rule"),
        outcome: text(d, "outcome").unwrap_or_default(),
        reason: text(d, "reason"),
        recipients: d["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        notification_ids: Vec::new(),
        published_to: Vec::new(),
        deliveries: Vec::new(),
        read: Vec::new(),
        seen: Vec::new(),
    };
    // What became of it after its commit: dead-lettered, or held for a retry (whose next try is another trace).
    let settled = [Kind::DeadLettered, Kind::HeldForRetry].into_iter().find_map(|k| steps.iter().find(|s| s.kind == k));
    if let Some(step) = settled {
        t.outcome = step.kind.as_str().into();
        t.reason = text(&step.data.json(), "reason").or(t.reason);
    }
    // notification id → its user (None: a broadcast).
    let mut stored: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.kind == Kind::Stored) {
        if let Some(id) = s.notification_id {
            stored.insert(id, s.user_id.clone());
        }
    }
    t.notification_ids = stored.keys().copied().collect();
    if !stored.is_empty() {
        let users: BTreeSet<String> = stored.values().map(|u| u.clone().unwrap_or_else(|| "*".into())).collect();
        t.recipients = users.into_iter().collect();
    }
    let mut nodes = BTreeSet::new();
    let mut read: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let earliest = |map: &mut BTreeMap<String, DateTime<Utc>>, user: &str, at: DateTime<Utc>| {
        let e = map.entry(user.to_owned()).or_insert(at);
        if at < *e {
            *e = at;
        }
    };
    // This node's deliveries that joined their event's row (see `Batch`), then every node's own `delivered` rows.
    let joined = steps.iter().filter(|s| s.kind == Kind::Stored).filter_map(|s| {
        let d = s.data.json().get("delivery")?.clone();
        let at = d["at"].as_i64().and_then(DateTime::from_timestamp_millis).unwrap_or(s.at);
        Some((s, Cow::Owned(d), at))
    });
    let mut later: Vec<(&Step, Cow<'_, Value>, DateTime<Utc>)> = later
        .iter()
        .filter(|s| s.notification_id.is_some_and(|id| stored.contains_key(&id)))
        .map(|s| (s, s.data.json(), s.at))
        .chain(joined)
        .collect();
    later.sort_by_key(|(_, _, at)| *at);
    for (s, data, at) in later {
        match s.kind {
            Kind::Delivered | Kind::Stored => {
                nodes.insert(s.node.clone());
                t.deliveries.push(TraceDelivery {
                    user_id: s.user_id.clone().unwrap_or_else(|| "*".into()),
                    node: s.node.clone(),
                    online: data["online"].as_bool().unwrap_or(false),
                    sessions_written: data["sessions_written"].as_u64().unwrap_or(0),
                    reason: text(&data, "reason"),
                    at,
                });
            }
            Kind::Read => {
                if let Some(u) = &s.user_id {
                    earliest(&mut read, u, at);
                    earliest(&mut seen, u, at); // reading implies seeing
                }
            }
            _ => {}
        }
    }
    for m in marks {
        let (Some(user), Some(up_to)) = (&m.user_id, m.data.json()["up_to"].as_i64()) else { continue };
        let covers = stored.iter().any(|(id, u)| *id <= up_to && u.as_deref().is_none_or(|u| u == user))
            && m.at >= t.received_at;
        if !covers {
            continue;
        }
        match m.kind {
            Kind::ReadAll => {
                earliest(&mut read, user, m.at);
                earliest(&mut seen, user, m.at);
            }
            Kind::SeenAll => earliest(&mut seen, user, m.at),
            _ => {}
        }
    }
    t.published_to = nodes.into_iter().collect();
    t.read = read.into_iter().map(|(user_id, read_at)| ReadMark { user_id, read_at }).collect();
    t.seen = seen.into_iter().map(|(user_id, seen_at)| SeenMark { user_id, seen_at }).collect();
    Some(t)
}

/// A recorder whose store is not open yet: the stages get it first (the inbox's commit listener needs it before
/// the inbox opens); [`open`] then opens the store and starts writing what queued meanwhile.
pub struct Pending {
    recorder: Recorder,
    rx: Option<mpsc::Receiver<Command>>,
}

impl Pending {
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

/// This node's recorder as `[trace]` says (one that records nothing when `trace.enabled = false`).
pub fn recorder(settings: &Settings, node: &str) -> Pending {
    let t = &settings.trace;
    if !t.enabled {
        return Pending { recorder: Recorder::default(), rx: None };
    }
    let (recorder, rx) = Recorder::new(Arc::from(node), t.buffer, t.sample_rate);
    Pending { recorder, rx: Some(rx) }
}

/// Open the trace's store as `[trace]` and `store.url` say, start its writer and its retention; a disabled
/// tracer when `trace.enabled = false`.
pub async fn open(settings: &Settings, pending: Pending, shutdown: &CancellationToken) -> Result<Tracer, TraceError> {
    let t = &settings.trace;
    let retain = |store: Arc<dyn TraceStore>| {
        tokio::spawn(prune_loop(
            store,
            chrono::Duration::days(i64::from(t.retention_days)),
            Duration::from_secs(settings.store.prune_interval_secs),
            settings.store.prune_batch,
            shutdown.clone(),
        ))
    };
    let Pending { recorder, rx: Some(rx) } = pending else {
        // Off: nothing is recorded, but what was recorded while it was on still goes after `retention_days`.
        match recorded_before(settings).await {
            Ok(Some(store)) => drop(retain(store)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the trace recorded before tracing was turned off cannot be pruned"),
        }
        return Ok(Tracer::disabled(t.retention_days));
    };
    let store = open_store(settings).await?;
    let counters = Arc::downgrade(recorder.inner.as_ref().expect("enabled"));
    spawn_write_loop(store.clone(), rx, counters);
    retain(store.clone());
    Ok(Tracer { recorder, store: Some(store), retention_days: t.retention_days })
}

/// With tracing off, the store a node recorded into while it was on, if there is one: SQLite's file where it
/// exists; PostgreSQL's table (opening it creates it, empty, if it never was).
async fn recorded_before(settings: &Settings) -> Result<Option<Arc<dyn TraceStore>>, TraceError> {
    if let StoreLocation::Sqlite(inbox) = settings.store_location() {
        let t = &settings.trace;
        let path = if t.sqlite_path.as_os_str().is_empty() { sqlite::beside(&inbox) } else { t.sqlite_path.clone() };
        if !path.exists() {
            return Ok(None);
        }
    }
    open_store(settings).await.map(Some)
}

/// Open only the store (tests: retention with a given `now`, or a backend's queries).
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn TraceStore>, TraceError> {
    Ok(match settings.store_location() {
        StoreLocation::Sqlite(inbox) => {
            let t = &settings.trace;
            let path =
                if t.sqlite_path.as_os_str().is_empty() { sqlite::beside(&inbox) } else { t.sqlite_path.clone() };
            Arc::new(sqlite::SqliteTrace::open(&path)?)
        }
        StoreLocation::Postgres(url) => {
            Arc::new(postgres::PostgresTrace::open(&url, settings.store.statement_timeout()).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that keeps the size of every batch it is given and says when one arrives; a `stuck` one never
    /// finishes a write (the buffer behind it fills).
    #[derive(Default)]
    struct Batches {
        stuck: bool,
        /// Writes refused before the store answers again (an outage).
        failing: std::sync::atomic::AtomicU32,
        sizes: std::sync::Mutex<Vec<usize>>,
        rows: std::sync::Mutex<Vec<Step>>,
        wrote: tokio::sync::Notify,
    }

    #[async_trait]
    impl TraceStore for Batches {
        async fn append(&self, steps: Arc<Vec<Step>>) -> Result<(), TraceError> {
            if self.stuck {
                std::future::pending::<()>().await;
            }
            if self.failing.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                return Err(TraceError::Unavailable("the test store is down".into()));
            }
            self.sizes.lock().unwrap().push(steps.len());
            self.rows.lock().unwrap().extend(steps.iter().cloned());
            self.wrote.notify_one();
            Ok(())
        }
        async fn by_event(&self, _: &str, _: usize) -> Result<Vec<Step>, TraceError> {
            Ok(Vec::new())
        }
        async fn by_traces(&self, _: &[String], _: usize) -> Result<Vec<Step>, TraceError> {
            Ok(Vec::new())
        }
        async fn by_notifications(&self, _: &[i64], _: usize) -> Result<Vec<Step>, TraceError> {
            Ok(Vec::new())
        }
        async fn marks(&self, _: &[String], _: usize) -> Result<Vec<Step>, TraceError> {
            Ok(Vec::new())
        }
        async fn user_traces(&self, _: &str, _: usize) -> Result<Vec<String>, TraceError> {
            Ok(Vec::new())
        }
        async fn prune(&self, _: DateTime<Utc>, _: usize) -> Result<u64, TraceError> {
            Ok(0)
        }
        async fn erase(&self, users: &[String]) -> Result<u64, TraceError> {
            let mut rows = self.rows.lock().unwrap();
            let before = rows.len();
            let listed = |s: &Step| match &s.data {
                Data::Event { event, .. } => {
                    s.kind == Kind::Event
                        && event.outcome != "purged"
                        && event.recipients.iter().any(|r| users.contains(r))
                }
                _ => false,
            };
            rows.retain(|s| {
                !(s.user_id.as_ref().is_some_and(|u| users.contains(u)) || (s.user_id.is_none() && listed(s)))
            });
            Ok((before - rows.len()) as u64)
        }
    }

    /// A writer over `store` that waits `linger` for at most `max` steps.
    fn batching(store: &Arc<Batches>, linger: Duration, max: usize) -> Recorder {
        let (r, rx) = Recorder::new(Arc::from("n1"), 1000, 1.0);
        let counters = Arc::downgrade(r.inner.as_ref().unwrap());
        tokio::spawn(batch_loop(store.clone(), rx, counters, linger, max));
        r
    }

    /// Until the store is given a batch (a writer that never writes fails here rather than hanging).
    async fn written(store: &Batches) {
        tokio::time::timeout(Duration::from_secs(60), store.wrote.notified()).await.expect("no batch was written");
    }

    async fn let_the_writer_run() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_writer_collects_steps_into_one_batch_until_it_is_full() {
        let store = Arc::new(Batches::default());
        // A linger no test run reaches: only the size bound (and a flush) can end a batch here.
        let r = batching(&store, Duration::from_secs(3600), 3);
        r.delivered(1, Some("u"), delivered());
        let_the_writer_run().await;
        r.delivered(2, Some("u"), delivered());
        let_the_writer_run().await;
        assert!(store.sizes.lock().unwrap().is_empty(), "two steps are not written before the batch fills");
        r.delivered(3, Some("u"), delivered());
        written(&store).await;
        assert_eq!(*store.sizes.lock().unwrap(), [3], "the third step fills the batch, written at once");
        // A flush writes what has queued without waiting for the batch to fill, then answers.
        r.delivered(4, Some("u"), delivered());
        r.flush().await;
        assert_eq!(*store.sizes.lock().unwrap(), [3, 1]);
        assert_eq!(r.counts().recorded, 4);
    }

    /// A store that is back within the retries loses nothing; one that stays down past them loses the batch, and
    /// the stats say so (they said nothing: `dropped` counts only a full buffer).
    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_and_steps_lost_past_the_retries_are_counted() {
        let store = Arc::new(Batches::default());
        store.failing.store(WRITE_ATTEMPTS - 1, Ordering::Relaxed);
        let r = batching(&store, Duration::from_secs(3600), 1000);
        r.delivered(1, Some("u"), delivered());
        r.flush().await;
        assert_eq!(*store.sizes.lock().unwrap(), [1], "written at the last attempt");
        assert_eq!(r.counts(), Counts { recorded: 1, ..Counts::default() });

        store.failing.store(WRITE_ATTEMPTS, Ordering::Relaxed);
        r.delivered(2, Some("u"), delivered());
        r.delivered(3, Some("u"), delivered());
        r.flush().await;
        assert_eq!(*store.sizes.lock().unwrap(), [1], "nothing more written");
        assert_eq!(r.counts(), Counts { recorded: 1, lost: 2, ..Counts::default() });
        // The store back: the next steps are written.
        r.delivered(4, Some("u"), delivered());
        r.flush().await;
        assert_eq!(r.counts(), Counts { recorded: 2, lost: 2, ..Counts::default() });
    }

    #[tokio::test]
    async fn the_writer_writes_a_partial_batch_once_it_has_waited() {
        let store = Arc::new(Batches::default());
        let r = batching(&store, Duration::from_millis(20), 1000);
        r.delivered(1, Some("u"), delivered());
        r.delivered(2, Some("u"), delivered());
        // No flush and far from full: only the linger can write these.
        written(&store).await;
        assert_eq!(*store.sizes.lock().unwrap(), [2]);
    }

    #[tokio::test]
    async fn an_erase_runs_after_the_steps_queued_before_it_and_spares_those_queued_after() {
        let store = Arc::new(Batches::default());
        let r = batching(&store, Duration::from_secs(3600), 1000);
        r.delivered(1, Some("gone"), delivered());
        r.delivered(2, Some("kept"), delivered());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let erasing = r.clone();
        tokio::spawn(async move {
            erasing.erase(&["gone".to_owned()]).await;
            let _ = tx.send(());
        });
        rx.await.unwrap();
        r.delivered(3, Some("gone"), delivered()); // a notification stored after the erase
        r.flush().await;
        let left: Vec<_> = store.rows.lock().unwrap().iter().map(|s| (s.notification_id, s.user_id.clone())).collect();
        assert_eq!(left, [(Some(2), Some("kept".to_owned())), (Some(3), Some("gone".to_owned()))]);
    }

    fn delivered() -> Delivered {
        Delivered { sessions: 1, written: 1, overflowed: 0, closed: 0 }
    }

    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_steps_instead_of_blocking() {
        let tracer = Tracer::with_store(Arc::new(Batches { stuck: true, ..Default::default() }), "n1", 2, 1.0, 7);
        let r = tracer.recorder();
        // A current-thread runtime: the writer task cannot run during this loop, so the buffer holds exactly 2.
        for id in 0..100 {
            r.delivered(id, Some("u"), delivered()); // returns at once: a blocking send would hang this test
        }
        let Counts { recorded, dropped, sampled_out, .. } = r.counts();
        assert_eq!((recorded, dropped, sampled_out), (0, 98, 0));
        // The writer now takes the two queued steps and hangs on the store; recording still never waits.
        tokio::task::yield_now().await;
        for id in 100..110 {
            r.delivered(id, Some("u"), delivered());
        }
        let dropped = r.counts().dropped;
        assert!(dropped >= 98 + 8, "at most the buffer's 2 more were queued: dropped {dropped}");
        assert_eq!(tracer.stats().dropped, dropped);
    }

    #[tokio::test]
    async fn sampling_keeps_a_share_and_counts_the_rest() {
        let (r, _rx) = Recorder::new(Arc::from("n1"), 100_000, 0.25);
        for id in 0..10_000 {
            r.delivered(id, Some("u"), delivered());
        }
        let Counts { dropped, sampled_out, .. } = r.counts();
        assert_eq!(dropped, 0);
        assert!((7_000..8_000).contains(&sampled_out), "about 75 % sampled out, got {sampled_out}");
        let (none, _rx) = Recorder::new(Arc::from("n1"), 10, 0.0);
        none.delivered(1, None, delivered());
        assert_eq!(none.counts().sampled_out, 1, "rate 0 keeps nothing");
    }

    #[tokio::test]
    async fn a_disabled_recorder_records_and_counts_nothing() {
        let r = Recorder::default();
        assert!(r.begin(&Origin::amqp(), "t", None, Instant::now()).is_none());
        r.delivered(1, Some("u"), delivered());
        assert_eq!(r.counts(), Counts::default());
    }

    fn step(
        kind: Kind,
        trace: Option<&str>,
        id: Option<i64>,
        user: Option<&str>,
        node: &str,
        secs: i64,
        data: Value,
    ) -> Step {
        Step {
            at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            trace_id: trace.map(str::to_owned),
            event_id: (kind == Kind::Event).then(|| "e1".into()),
            notification_id: id,
            user_id: user.map(str::to_owned),
            kind,
            node: node.into(),
            data: Data::Json(data),
        }
    }

    #[test]
    fn assembly_joins_the_deliveries_other_nodes_recorded_and_the_reads() {
        let event = json!({"transport": "http", "exchange": null, "routing_key": "a.b", "producer": "billing",
            "event_type": "t", "rule": "r1", "dedupe": "new", "outcome": "stored", "reason": null, "recipients": []});
        let own = vec![
            step(Kind::Event, Some("t1"), None, None, "n1", 0, event),
            step(Kind::Stored, Some("t1"), Some(7), Some("alice"), "n1", 0, json!({})),
            step(Kind::Stored, Some("t1"), Some(8), Some("bob"), "n1", 0, json!({})),
        ];
        let later = vec![
            step(
                Kind::Delivered,
                None,
                Some(7),
                Some("alice"),
                "n2",
                1,
                json!({"online": true, "sessions_written": 2, "reason": null}),
            ),
            step(
                Kind::Delivered,
                None,
                Some(8),
                Some("bob"),
                "n1",
                1,
                json!({"online": false, "sessions_written": 0, "reason": "offline"}),
            ),
            step(
                Kind::Delivered,
                None,
                Some(99),
                Some("carol"),
                "n3",
                1,
                json!({"online": true, "sessions_written": 1, "reason": null}),
            ),
            step(Kind::Read, None, Some(7), Some("alice"), "n2", 5, json!({})),
        ];
        let marks = vec![step(Kind::SeenAll, None, None, Some("bob"), "n1", 9, json!({"up_to": 8}))];
        let t = assemble(own, &later, &marks);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(
            (t.rule.as_deref(), t.producer.as_deref(), t.outcome.as_str()),
            (Some("r1"), Some("billing"), "stored")
        );
        assert_eq!(t.recipients, ["alice", "bob"]);
        assert_eq!(t.notification_ids, [7, 8]);
        assert_eq!(t.published_to, ["n1", "n2"], "n3's step names another notification");
        assert_eq!(t.deliveries.len(), 2);
        assert_eq!((t.deliveries[0].node.as_str(), t.deliveries[0].sessions_written), ("n2", 2));
        assert_eq!(t.deliveries[1].reason.as_deref(), Some("offline"));
        assert_eq!(t.read.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["alice"]);
        assert_eq!(t.seen.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
    }

    /// Record a committed event stored as `stored` (notification id, user), as the ingest does.
    fn commit(r: &Recorder, event_id: &str, stored: &[(i64, Option<&str>)]) -> String {
        let received = r.begin(&Origin::http(Some("billing".into())), "t", Some("r1"), Instant::now()).unwrap();
        let users = stored.iter().map(|(_, u)| u.unwrap_or("*").to_owned()).collect();
        let fate = Fate { outcome: "stored", recipients: users, ..Fate::default() };
        r.committed(*received, event_id, String::new(), "a.b".into(), fate, stored)
    }

    #[tokio::test]
    async fn an_event_stored_as_one_notification_and_delivered_here_is_one_row() {
        let store = Arc::new(Batches::default());
        let r = batching(&store, Duration::from_secs(3600), 1000);
        // The commit listener delivers before the ingest records the commit, and the other way round.
        r.delivered(7, Some("alice"), delivered());
        let first = commit(&r, "e1", &[(7, Some("alice"))]);
        let second = commit(&r, "e2", &[(8, Some("bob"))]);
        r.muted(8, "bob", false);
        r.flush().await;
        let rows = store.rows.lock().unwrap().clone();
        assert_eq!(rows.len(), 2, "one row per event: {rows:?}");
        assert!(rows
            .iter()
            .all(|s| s.kind == Kind::Stored && s.event_id.is_some() && s.data.json().get("delivery").is_some()));
        assert_eq!(r.counts().recorded, 6, "each row holds the event, stored and delivered steps");

        let traces = assemble(rows, &[], &[]);
        let t = traces.iter().find(|t| t.trace_id == first).unwrap();
        assert_eq!((t.event_id.as_str(), t.outcome.as_str(), t.rule.as_deref()), ("e1", "stored", Some("r1")));
        assert_eq!((t.recipients.clone(), t.notification_ids.clone()), (vec!["alice".to_owned()], vec![7]));
        assert_eq!(t.published_to, ["n1"]);
        assert_eq!(t.deliveries.len(), 1);
        assert_eq!((t.deliveries[0].user_id.as_str(), t.deliveries[0].sessions_written), ("alice", 1));
        let t = traces.iter().find(|t| t.trace_id == second).unwrap();
        assert_eq!(t.deliveries[0].reason.as_deref(), Some("muted"));
    }

    #[tokio::test]
    async fn steps_that_do_not_join_are_rows_of_their_own() {
        let store = Arc::new(Batches::default());
        let r = batching(&store, Duration::from_secs(3600), 1000);
        // Two recipients: an event row and a stored row each; deliveries keyed by notification id.
        commit(&r, "e1", &[(1, Some("alice")), (2, Some("bob"))]);
        r.delivered(1, Some("alice"), delivered());
        r.delivered(2, Some("bob"), delivered());
        // A delivery of a notification another node committed.
        r.delivered(99, Some("carol"), delivered());
        r.flush().await;
        // A commit whose delivery came in the batch before: it is already a row, so the commit is one row alone.
        r.delivered(5, Some("dave"), delivered());
        r.flush().await;
        let trace = commit(&r, "e5", &[(5, Some("dave"))]);
        r.flush().await;
        let rows = store.rows.lock().unwrap().clone();
        let kinds: Vec<&str> = rows.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["event", "stored", "stored", "delivered", "delivered", "delivered", "delivered", "stored"]);
        assert_eq!(r.counts().recorded, 9, "eight rows; the last holds the event and stored steps");

        let (own, later): (Vec<Step>, Vec<Step>) = rows.into_iter().partition(|s| s.trace_id.is_some());
        let traces = assemble(own, &later, &[]);
        assert_eq!(traces.len(), 2);
        let t = traces.iter().find(|t| t.trace_id != trace).unwrap();
        assert_eq!(t.notification_ids, [1, 2]);
        assert_eq!(t.deliveries.iter().map(|d| d.user_id.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        let t = traces.iter().find(|t| t.trace_id == trace).unwrap();
        assert_eq!(
            (t.event_id.as_str(), t.deliveries.len()),
            ("e5", 1),
            "the earlier delivery row is joined when read"
        );
    }

    #[test]
    fn each_try_of_an_event_held_for_a_retry_is_a_trace_saying_so_and_the_last_one_says_how_it_ended() {
        let unresolved = |at: i64| {
            json!({"transport": "amqp", "exchange": "x", "routing_key": "stage.created", "producer": null,
                "event_type": "stage.created", "rule": "r1", "dedupe": "new", "outcome": "unresolved",
                "reason": "unresolved_recipient: no user for student s1", "recipients": [], "at": at})
        };
        let own = vec![
            step(Kind::Event, Some("t1"), None, None, "n1", 0, unresolved(0)),
            step(Kind::HeldForRetry, Some("t1"), None, None, "n1", 0, json!({"reason": "first; retry 1 of 2"})),
            step(Kind::Event, Some("t2"), None, None, "n1", 10, unresolved(10)),
            step(Kind::HeldForRetry, Some("t2"), None, None, "n1", 10, json!({"reason": "second; retry 2 of 2"})),
            step(Kind::Event, Some("t3"), None, None, "n1", 20, unresolved(20)),
            step(Kind::DeadLettered, Some("t3"), None, None, "n1", 20, json!({"reason": "unresolved_recipient: …"})),
        ];
        let t = assemble(own, &[], &[]);
        let seen: Vec<(&str, &str, Option<&str>)> =
            t.iter().map(|t| (t.trace_id.as_str(), t.outcome.as_str(), t.reason.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("t3", "dead_lettered", Some("unresolved_recipient: …")),
                ("t2", "held_for_retry", Some("second; retry 2 of 2")),
                ("t1", "held_for_retry", Some("first; retry 1 of 2")),
            ]
        );
    }

    #[test]
    fn a_joined_delivery_and_other_nodes_deliveries_are_listed_in_time_order() {
        let event = json!({"transport": "http", "event_type": "t", "rule": "r1", "dedupe": "new", "outcome": "stored",
            "recipients": ["alice"],
            "delivery": {"online": true, "sessions_written": 1, "reason": null, "at": 1_800_000_002_000i64}});
        let mut row = step(Kind::Stored, Some("t1"), Some(7), Some("alice"), "n1", 0, event);
        row.event_id = Some("e1".into());
        let n2 = json!({"online": true, "sessions_written": 3});
        let later = vec![
            step(Kind::Delivered, None, Some(7), Some("alice"), "n2", 1, n2),
            step(Kind::Read, None, Some(7), Some("alice"), "n2", 5, json!({})),
        ];
        let t = assemble(vec![row], &later, &[]);
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!((t.event_id.as_str(), t.notification_ids.as_slice()), ("e1", &[7][..]));
        assert_eq!(t.published_to, ["n1", "n2"]);
        let order: Vec<(&str, u64)> = t.deliveries.iter().map(|d| (d.node.as_str(), d.sessions_written)).collect();
        assert_eq!(order, [("n2", 3), ("n1", 1)], "n2 delivered at +1 s, n1's joined delivery at +2 s");
        assert_eq!(t.deliveries[1].at, DateTime::from_timestamp(1_800_000_002, 0).unwrap());
        assert_eq!(t.read.len(), 1);
    }

    /// Recorded steps keep their fields typed and serialise them once, when written: the text is the JSON the
    /// reads parse (every field, nulls for what is absent, at most `MAX_LISTED` recipients and their total, a
    /// joined delivery with its time, a delivery of its own without).
    #[test]
    fn typed_step_data_writes_the_json_the_reads_expect() {
        let at = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        let event = EventData {
            transport: Transport::Amqp,
            exchange: "orders".into(),
            routing_key: String::new(),
            producer: Some("billing".into()),
            event_type: "order.paid".into(),
            rule: None,
            duplicate: false,
            outcome: "stored",
            reason: None,
            recipients: (0..MAX_LISTED + 3).map(|i| format!("u{i}")).collect(),
        };
        let delivery = Delivery { at, id: 7, user: Some("u0".into()), online: true, written: 2, reason: None };
        let listed: Vec<String> = (0..MAX_LISTED).map(|i| format!("u{i}")).collect();
        let expected = |delivery: Option<Value>| {
            let mut v = json!({
                "transport": "amqp", "exchange": "orders", "routing_key": null, "producer": "billing",
                "event_type": "order.paid", "rule": null, "dedupe": "new", "outcome": "stored", "reason": null,
                "recipients": listed, "recipients_total": MAX_LISTED + 3,
            });
            if let Some(d) = delivery {
                v["delivery"] = d;
            }
            v
        };
        let parsed = |d: &Data| serde_json::from_str::<Value>(&d.to_json_string()).unwrap();
        let alone = Data::Event { event: Box::new(event.clone()), delivery: None };
        assert_eq!(parsed(&alone), expected(None));
        let joined = Data::Event { event: Box::new(event), delivery: Some(delivery.clone()) };
        let joined_delivery =
            json!({"online": true, "sessions_written": 2, "reason": null, "at": 1_800_000_000_123_i64});
        assert_eq!(parsed(&joined), expected(Some(joined_delivery)));
        assert_eq!(*joined.json(), parsed(&joined), "json() is what is written");
        let own = Data::Delivery(Delivery { reason: Some("offline"), online: false, written: 0, ..delivery });
        assert_eq!(parsed(&own), json!({"online": false, "sessions_written": 0, "reason": "offline"}));
    }
}
