//! Ingest: the one pipeline every transport feeds — decode → route → store → fan-out.
//!
//! HTTP ingest (`api::events`) and the AMQP consumer both call [`Pipeline::prepare`] per event and
//! [`Pipeline::commit`] per batch; only the decision of what to do with a bad event (4xx, dead letter) is theirs.
//!
//! Invariants: nothing is pushed to a session before it is committed; a duplicate (same scoped event id,
//! [`crate::event::DedupeKey`]) is neither stored nor pushed again; the commit answer is the durability signal callers ack/answer on.

pub mod amqp;
pub mod dry_run;
pub mod fixture;

use serde::Serialize;
use std::sync::Arc;

use crate::event::{DedupeKey, Event};
use crate::fanout::{Fanout, Message, Wakes};
use crate::inbox::{
    CommitListener, CommitVersions, NewNotification, StateChange, Store, StoreError, Write, WriteOutcome,
};
use axum::extract::ws::Utf8Bytes;

use crate::protocol::{encode_notification_frame, FrameTexts, Notification, ServerFrame};
use crate::rules::{Draft, Recipients, Route, RouteError, Rules, RulesHandle};
use crate::trace::{Fate, Origin, Received, Recorder};

/// An event that has been routed and is ready to commit.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub event_id: String,
    pub exchange: String,
    pub routing_key: String,
    action: Action,
    /// Its reception, for the trace (`None` when tracing is off).
    trace: Option<Box<Received>>,
    /// What its notifications' rows hold, in bytes ([`check_sizes`]): a request's events are bounded together.
    pub stored_bytes: usize,
}

impl Prepared {
    /// No rule takes it: committing it stores nothing.
    pub fn unmatched(&self) -> bool {
        matches!(self.action, Action::Skip(Status::Unmatched))
    }
}

// `Write` is nearly every action: boxing it to shrink `Live`/`Skip` would allocate once per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Action {
    Write {
        write: Write,
    },
    /// Pushed to open sessions after the batch commits; never stored.
    Live {
        recipients: Recipients,
        frame: Utf8Bytes,
    },
    Skip(Status),
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Stored,
    Duplicate,
    Purged,
    Ignored,
    Unmatched,
    /// Pushed live to open sessions, not stored (`action = "live"`).
    Live,
    /// Its recipients are aliases no user is known for yet: nothing stored (a dead letter, or HTTP 422).
    #[serde(rename = "unresolved_recipient")]
    Unresolved,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Stored => "stored",
            Status::Duplicate => "duplicate",
            Status::Purged => "purged",
            Status::Ignored => "ignored",
            Status::Unmatched => "unmatched",
            Status::Live => "live",
            Status::Unresolved => "unresolved_recipient",
        }
    }
}

/// One event's result, in the order the events were posted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub event_id: String,
    pub status: Status,
    pub notification_ids: Vec<i64>,
    /// Why nothing was stored (`unresolved_recipient`): the transport dead-letters it or answers 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub error: Option<RouteError>,
    /// Its trace (`None` when tracing is off): the AMQP consumer adds the dead letter to it.
    #[serde(skip)]
    pub trace_id: Option<String>,
}

#[derive(Clone)]
pub struct Pipeline {
    rules: RulesHandle,
    store: Arc<dyn Store>,
    /// Where live-only events go (stored notifications reach it through the store's commit listener).
    fanout: Fanout,
    trace: Recorder,
    /// The largest frame a session can carry (`WebSocketSettings::max_frame_bytes`).
    max_frame: usize,
}

/// Bytes one event — and one HTTP request, whatever events it holds — may store in all (its notifications' rows:
/// the body, data and texts once per recipient), so a list of recipients cannot turn one request into gigabytes
/// of rows.
pub const MAX_STORED_BYTES_PER_EVENT: usize = 16 << 20;

/// An event no rule matches, on any transport and under any `unmatched` policy: counted
/// (`herald_events_unmatched_total`) and logged, once per event.
pub fn unmatched(event: &Event) {
    metrics::counter!("herald_events_unmatched_total").increment(1);
    tracing::info!(
        event_id = %event.id, exchange = %event.exchange, routing_key = %event.routing_key,
        "no rule matches this event; it is not stored"
    );
}

impl Pipeline {
    pub fn new(rules: RulesHandle, store: Arc<dyn Store>, fanout: Fanout) -> Self {
        Pipeline { rules, store, fanout, trace: Recorder::default(), max_frame: usize::MAX }
    }

    /// Refuse notifications whose frame could be over `max_frame` bytes, which no session could carry.
    pub fn frames_up_to(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// Record each event's trace with `trace`.
    pub fn traced(mut self, trace: Recorder) -> Self {
        self.trace = trace;
        self
    }

    /// The trace recorder (the transports record what they decide: dead letters).
    pub fn trace(&self) -> &Recorder {
        &self.trace
    }

    /// The rules in force now (they can be reloaded while running).
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.current()
    }

    /// Load the rules file again; on error the rules in force stay.
    pub fn reload_rules(&self) -> Result<Arc<Rules>, crate::rules::RulesError> {
        self.rules.reload()
    }

    /// Reload the rules here and, once they compile, ask every other node to reload its file too (over the
    /// cluster's transport; nothing more on one node). Each node reads its own file: one that has not received
    /// the new file yet reloads the old one, which `herald_rules_info` shows.
    pub fn reload_rules_everywhere(&self) -> Result<Arc<Rules>, crate::rules::RulesError> {
        let rules = self.reload_rules()?;
        self.fanout.publish(Message::ReloadRules);
        Ok(rules)
    }

    /// Route one decoded event with the rules in force: no I/O, no store, and no clock but the trace id's (an
    /// unmatched event is counted and logged). Alias recipients stay unresolved here: the store resolves them in
    /// the commit. `origin` is what the trace records about its reception (written with the commit, so a refused
    /// event leaves none).
    /// Route `event` and build what its commit needs (the store's write, or what to skip). An event no rule
    /// matches is counted and logged here ([`unmatched`]).
    pub fn prepare(&self, event: Event, origin: &Origin) -> Result<Prepared, RouteError> {
        let rules = self.rules.current();
        let (rule, route) = rules.route_named(&event);
        let trace = self.trace.begin(origin, &event.event_type, rule, event.received_at);
        let route = route?;
        let stored_bytes = check_sizes(rule, &route, &event, self.max_frame)?;
        let action = match route {
            Route::Live(d) => {
                let frame = live_frame(rule, &d, &event, self.max_frame)?;
                Action::Live { recipients: d.recipients, frame }
            }
            Route::Notify(d) => Action::Write {
                write: Write::Notify(NewNotification {
                    event_id: event.id.clone(),
                    // A rule's semantic key replaces the digest of an event its producer did not name (a
                    // re-publish with a fresh timestamp), never an id the producer gave.
                    dedupe_key: match d.dedupe_key.as_deref() {
                        Some(key) if !event.named => DedupeKey::rule(&event.exchange, event.caller.as_deref(), key),
                        _ => event.dedupe_key,
                    },
                    recipients: d.recipients,
                    kind: d.kind,
                    title: d.title,
                    content: d.content,
                    event_type: d.event_type.unwrap_or_else(|| event.event_type.clone()),
                    source: event.source.clone(),
                    related_object: d.related_object,
                    data: d.data,
                    body: Arc::from(event.raw),
                    ingested_at: event.received_at,
                    aliases: d.aliases,
                }),
            },
            Route::Purge(users) => Action::Write { write: Write::Purge { event_id: event.id.clone(), users } },
            Route::Ignore => Action::Skip(Status::Ignored),
            Route::Unmatched => {
                unmatched(&event);
                Action::Skip(Status::Unmatched)
            }
        };
        Ok(Prepared {
            event_id: event.id,
            exchange: event.exchange,
            routing_key: event.routing_key,
            action,
            trace,
            stored_bytes,
        })
    }

    /// Commit in one durable batch. Outcomes are in input order. Fan-out happens in the store's commit
    /// listener ([`Publisher`]), in commit order, before this returns.
    pub async fn commit(&self, prepared: Vec<Prepared>) -> Result<Vec<Outcome>, StoreError> {
        let mut writes = Vec::with_capacity(prepared.len());
        let mut slots = Vec::with_capacity(prepared.len());
        let mut live = Vec::new();
        let mut erased = Vec::new();
        for p in prepared {
            let traced =
                p.trace.map(|r| Traced { r, exchange: p.exchange, routing_key: p.routing_key, recipients: Vec::new() });
            match p.action {
                Action::Write { write } => {
                    let mut traced = traced;
                    if let Write::Purge { users, .. } = &write {
                        erased.extend(users.iter().cloned());
                        if let Some(t) = traced.as_mut() {
                            t.recipients = users.clone();
                        }
                    }
                    writes.push(write);
                    slots.push((p.event_id, None, traced));
                }
                Action::Live { recipients, frame } => {
                    let traced = traced.map(|mut t| {
                        t.recipients = match &recipients {
                            Recipients::Users(users) => users.clone(),
                            _ => vec!["*".to_owned()],
                        };
                        t
                    });
                    live.push((recipients, frame));
                    slots.push((p.event_id, Some(Status::Live), traced));
                }
                Action::Skip(status) => slots.push((p.event_id, Some(status), traced)),
            }
        }
        let mut results = if writes.is_empty() { Vec::new() } else { self.store.apply(writes).await? }.into_iter();
        // After the commit, so a live event never overtakes a stored notification that preceded it in the batch.
        for (recipients, frame) in live {
            metrics::counter!("herald_live_events_total").increment(1);
            match recipients {
                Recipients::Everyone => self.fanout.publish(Message::Live { user: None, frame }),
                Recipients::Users(users) => {
                    for u in users {
                        self.fanout.publish(Message::Live { user: Some(Arc::from(u)), frame: frame.clone() });
                    }
                }
                Recipients::Alias { .. } => unreachable!("rules refuse alias recipients on live rules"),
            }
        }
        let outcomes = slots
            .into_iter()
            .map(|(event_id, skipped, traced)| {
                let mut error = None;
                let result = match skipped {
                    None => Some(results.next().expect("one result per write")),
                    Some(_) => None,
                };
                let mut stored: Vec<(i64, Option<&str>)> = Vec::new();
                let (status, notification_ids) = match (skipped, &result) {
                    (Some(status), _) => (status, Vec::new()),
                    (None, None) => unreachable!("a write has a result"),
                    (None, Some(result)) => match result {
                        WriteOutcome::Stored(ns) => {
                            if traced.is_some() {
                                stored = ns.iter().map(|n| (n.id, n.user_id.as_deref())).collect();
                            }
                            (Status::Stored, ns.iter().map(|n| n.id).collect())
                        }
                        WriteOutcome::Duplicate => (Status::Duplicate, Vec::new()),
                        WriteOutcome::Purged { rows } => {
                            let rows = *rows;
                            tracing::info!(event_id = %event_id, rows, "inbox purged");
                            (Status::Purged, Vec::new())
                        }
                        WriteOutcome::Unresolved { kind, alias } => {
                            metrics::counter!("herald_events_unresolved_total").increment(1);
                            // At info, as an unmatched event is: the transport logs its refusal at warn (the
                            // dead letter, the 422), so an operator's log says it once.
                            tracing::info!(event_id = %event_id, %kind, %alias, "no user known for this alias yet");
                            error = Some(RouteError::UnresolvedRecipient { kind: kind.clone(), alias: alias.clone() });
                            (Status::Unresolved, Vec::new())
                        }
                        WriteOutcome::AliasSet => unreachable!("events never set aliases on their own"),
                    },
                };
                let trace_id = traced.map(|t| {
                    let fate = t.fate(status, error.as_ref());
                    let Traced { r, exchange, routing_key, .. } = t;
                    self.trace.committed(*r, &event_id, exchange, routing_key, fate, &stored)
                });
                Outcome { event_id, status, notification_ids, error, trace_id }
            })
            .collect();
        // Erased users' trace steps go too (after the purge's own step, which records the erasure).
        if !erased.is_empty() {
            self.trace.erase(&erased).await;
        }
        Ok(outcomes)
    }
}

/// An event's reception and what the trace needs of it once committed.
struct Traced {
    r: Box<Received>,
    exchange: String,
    routing_key: String,
    /// A purge's users, a live event's users (`*`: everyone): a stored event's come from its rows.
    recipients: Vec<String>,
}

impl Traced {
    fn fate(&self, status: Status, error: Option<&RouteError>) -> Fate {
        let (outcome, reason) = match status {
            Status::Stored => ("stored", None),
            Status::Duplicate => {
                ("duplicate", Some("this event id was applied before, within the dedupe window".to_owned()))
            }
            Status::Purged => ("purged", None),
            Status::Ignored => {
                ("ignored", Some(format!("rule `{}` ignores it", self.r.rule.as_deref().unwrap_or("?"))))
            }
            Status::Unmatched => {
                let exchange =
                    if self.exchange.is_empty() { String::new() } else { format!("exchange `{}` and ", self.exchange) };
                ("unmatched", Some(format!("no rule matches {exchange}routing key `{}`", self.routing_key)))
            }
            Status::Live => ("live_only", None),
            Status::Unresolved => ("unresolved", error.map(ToString::to_string)),
        };
        Fate { outcome, duplicate: status == Status::Duplicate, reason, recipients: self.recipients.clone() }
    }
}

/// Refuse, before anything is stored, a notification whose frame could be over `max_frame` bytes (no session could
/// carry it: stored, it would be replayed into every session of its recipients and fail each) and an event whose
/// rows would store over [`MAX_STORED_BYTES_PER_EVENT`]. A live event's frame is checked once encoded.
pub fn check_sizes(rule: Option<&str>, route: &Route, event: &Event, max_frame: usize) -> Result<usize, RouteError> {
    let Route::Notify(d) = route else { return Ok(0) };
    let rule = || rule.unwrap_or_default().to_owned();
    let (rows, recipient, unresolved) = match &d.recipients {
        Recipients::Everyone => (1, None, 0),
        Recipients::Users(users) => (users.len(), users.iter().max_by_key(|u| u.len()).map(String::as_str), 0),
        // Resolved in the commit: the user's id is at most MAX_ID_LEN bytes, each escaped to six at worst.
        Recipients::Alias { aliases, .. } => (aliases.len(), None, 6 * crate::event::MAX_ID_LEN),
    };
    let texts = FrameTexts {
        kind: &d.kind,
        title: &d.title,
        content: &d.content,
        event_type: d.event_type.as_deref().unwrap_or(&event.event_type),
        source: event.source.as_deref(),
        related: d.related_object.as_ref(),
        recipient,
    };
    let row = event.raw.get().len() + d.data.get().len() + d.title.len() + d.content.len() + d.kind.len();
    let total = rows.saturating_mul(row);
    if total > MAX_STORED_BYTES_PER_EVENT {
        return Err(RouteError::TooMuchToStore { rule: rule(), rows, row, total, max: MAX_STORED_BYTES_PER_EVENT });
    }
    // Either format's frame: a session that asked for the event shape must be able to carry it too.
    let frame = texts.bound(&[d.data.get(), event.raw.get()])
        + crate::protocol::event_shape_extra(texts.title, texts.content, texts.event_type)
        + unresolved;
    if frame > max_frame {
        return Err(RouteError::NotificationTooLarge { rule: rule(), bytes: frame, max: max_frame });
    }
    Ok(total)
}

/// A live event's one frame, refused (`notification_too_large`) when it is over `max_frame` bytes.
pub fn live_frame(rule: Option<&str>, d: &Draft, event: &Event, max_frame: usize) -> Result<Utf8Bytes, RouteError> {
    let event_type = d.event_type.as_deref().unwrap_or(&event.event_type);
    let frame = ServerFrame::Event { event_type, title: &d.title, content: &d.content, body: &event.raw }.encode();
    // Carried in either format (the event shape adds to it).
    let bytes = frame.len() + crate::protocol::event_shape_extra(&d.title, &d.content, event_type);
    if bytes > max_frame {
        let rule = rule.unwrap_or_default().to_owned();
        return Err(RouteError::NotificationTooLarge { rule, bytes, max: max_frame });
    }
    Ok(frame)
}

/// The commit listener that turns stored notifications into frames: one serialisation per notification,
/// shared by every recipient session. It runs on the store's writer, per stored row: its metric handles are
/// looked up once, here, not per row. It holds the sessions' wake-ups until the commit's calls are over, so a
/// session given a notification and its user's counts wakes once and writes both together.
pub struct Publisher {
    fanout: Fanout,
    wakes: std::sync::Mutex<Wakes>,
    stored_targeted: metrics::Counter,
    stored_broadcast: metrics::Counter,
    muted: metrics::Counter,
}

impl Publisher {
    /// Call after the metrics recorder is installed (handles taken before it count nothing).
    pub fn new(fanout: Fanout) -> Publisher {
        Publisher {
            fanout,
            wakes: std::sync::Mutex::new(Wakes::held()),
            stored_targeted: metrics::counter!("herald_notifications_stored_total", "kind" => "targeted"),
            stored_broadcast: metrics::counter!("herald_notifications_stored_total", "kind" => "broadcast"),
            muted: metrics::counter!("herald_notifications_muted_total"),
        }
    }
}

impl CommitListener for Publisher {
    fn purged(&self, users: &[String]) {
        let frame = crate::protocol::ServerFrame::Purged.encode();
        let mut wakes = self.wakes();
        for user in users {
            let user = Arc::from(user.as_str());
            let message = Message::UserFrame { user, frame: frame.clone(), skip_session: None, version: 0, up_to: 0 };
            self.fanout.publish_with(message, &mut wakes);
        }
    }

    /// The change's frame to the user's sessions on every node, and the trace's read steps, in commit order.
    fn changed(&self, user: &str, change: &StateChange, version: u64) {
        let trace = self.fanout.trace();
        let frame = match change {
            StateChange::Read { ids, read_at } => {
                for id in ids {
                    trace.read(*id, user, *read_at);
                }
                ServerFrame::Read { ids, read_at: *read_at }
            }
            StateChange::Unread { ids } => ServerFrame::Unread { ids },
            StateChange::Archived { ids } => ServerFrame::Archived { ids },
            StateChange::Unarchived { ids } => ServerFrame::Unarchived { ids },
            StateChange::Deleted { ids } => ServerFrame::Deleted { ids },
            StateChange::ReadAll { up_to, read_at } => {
                trace.marked_all(crate::trace::Kind::ReadAll, user, *up_to, *read_at);
                ServerFrame::ReadAll { up_to: *up_to, read_at: *read_at }
            }
            StateChange::SeenAll { up_to, seen_at } => {
                trace.marked_all(crate::trace::Kind::SeenAll, user, *up_to, *seen_at);
                ServerFrame::SeenAll { up_to: *up_to, seen_at: *seen_at }
            }
        };
        let up_to = match change {
            StateChange::ReadAll { up_to, .. } | StateChange::SeenAll { up_to, .. } => *up_to,
            _ => 0,
        };
        let (user, frame) = (Arc::from(user), frame.encode());
        let message = Message::UserFrame { user, frame, skip_session: None, version, up_to };
        self.fanout.publish_with(message, &mut self.wakes());
    }

    fn counts(&self, user: &str, counts: crate::protocol::Counts, broadcast_up_to: i64, version: u64) {
        let at = crate::protocol::CountsAt { counts, broadcast_up_to, version };
        self.fanout.publish_with(Message::Counts { user: Arc::from(user), at }, &mut self.wakes());
    }

    fn committed(&self, written: &NewNotification, stored: &[Notification], versions: &mut CommitVersions<'_>) {
        // Only frames from two nodes can cross; a single node's go out in commit order.
        let ordered = self.fanout.has_transport();
        let mut wakes = self.wakes();
        for n in stored {
            if n.muted {
                // Stored and listed, never pushed; the chain skips it (`prev_id`), so no session sees a gap.
                self.muted.increment(1);
                if let Some(user) = n.user_id.as_deref() {
                    self.fanout.trace().muted(n.id, user, self.fanout.registry().is_online(user));
                }
                continue;
            }
            let stored = if n.user_id.is_some() { &self.stored_targeted } else { &self.stored_broadcast };
            stored.increment(1);
            let message = Message::Notification {
                user: n.user_id.as_deref().map(Arc::from),
                id: n.id,
                prev_id: n.prev_id,
                frame: encode_notification_frame(n, &written.body),
                ingested_at: written.ingested_at,
                version: match n.user_id.as_deref() {
                    Some(user) if ordered => versions.of(user),
                    _ => 0,
                },
            };
            self.fanout.publish_with(message, &mut wakes);
        }
    }

    fn commit_told(&self) {
        self.wakes().release();
    }
}

impl Publisher {
    /// The wake-ups held for the commit being told: taken by the store's writer, and by PostgreSQL's pruning when it
    /// tells the counts it changed (rarely: whichever tells `commit_told` first wakes what both held, early and
    /// harmlessly).
    fn wakes(&self) -> std::sync::MutexGuard<'_, Wakes> {
        self.wakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueueFullPolicy, Settings};
    use crate::inbox::contract::draft;
    use crate::inbox::SqliteStore;
    use crate::registry::tests::Wakeups;
    use crate::registry::{Bounds, Next, Registry};
    use crate::rules::Recipients;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    /// A waiting session is woken once per commit, with the notification and its user's counts both queued, so
    /// it writes them in one flush (not once for the notification and again for the counts).
    #[tokio::test]
    async fn a_commit_wakes_a_waiting_session_once_with_its_notification_and_counts() {
        let registry = Registry::new();
        let bounds = Bounds { frames: 16, bytes: 1 << 20, policy: QueueFullPolicy::Close };
        let session = registry.register("u", bounds, 4).unwrap();
        let publisher = Arc::new(Publisher::new(Fanout::local(registry.clone())));
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, Some(publisher)).unwrap();
        let woken = Wakeups::of(&session.handle);
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = Vec::new();
        {
            let mut next = std::pin::pin!(session.handle.outbox.next(&mut buf, true));
            assert!(next.as_mut().poll(&mut cx).is_pending());
            let write = Write::Notify(draft("e-1", Recipients::Users(vec!["u".into()])));
            assert!(matches!(store.apply(vec![write]).await.unwrap()[..], [WriteOutcome::Stored(_)]));
            assert_eq!(woken.seen(), [2], "one wake-up, with the notification and the counts queued");
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(Next::Frames));
        }
        let types: Vec<_> = buf.iter().map(|o| (o.link.is_some(), o.counts.map(|c| c.counts.unread))).collect();
        assert_eq!(types, [(true, None), (false, Some(1))], "the notification, then its user's counts");
        store.close().await;
    }
}
