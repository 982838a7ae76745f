//! Store: the inbox, behind one interface that every backend implements.
//!
//! Invariants:
//! - Idempotent on the scoped event id ([`DedupeKey`], kept for `store.dedupe_window_days`): applying the same
//!   event twice within the window stores it once ([`WriteOutcome::Duplicate`]). Ids applied before ids were
//!   scoped stay in a legacy table and still dedupe (globally, as they did then) until the window expires them.
//! - A broadcast is one row, visible in every user's list and unread count, with per-user read/deleted state.
//! - Notification ids only grow in commit order: a reader that saw id N never later sees a new id ≤ N.
//! - Each stored notification links to the previous one of its chain (`prev_id`): a targeted row to that user's
//!   previous targeted row, a broadcast to the previous broadcast. Chains never link to each other.
//! - [`Store::apply`] returns only after the batch is durably committed; callers ack/answer after that.
//! - A write the store cannot make (full disk, read-only or deleted database file, database down) fails with
//!   [`StoreError::Unavailable`], never with an acknowledgement; [`Monitored`] then reports the store not ready
//!   until a write (or the periodic probe write) succeeds again.
//! - Retention prunes off the hot path, in short batches ([`retention`]); what was pruned is remembered as a
//!   floor per chain ([`Store::history_floor`]) so a resume from below it can be told.
//! - Only the backend modules know SQL.

mod coalesce;
pub mod instrumented;
mod postgres;
pub mod retention;
mod sqlite;
mod upkeep;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

pub use coalesce::Coalescing;
pub use postgres::PostgresStore;
pub use retention::PruneReport;
pub use sqlite::SqliteStore;
pub use upkeep::Monitored;

use crate::config::{Settings, StoreLocation};
use crate::event::DedupeKey;
use crate::protocol::{Notification, Position, RelatedObject};
use crate::rules::{AliasRecord, Recipients};
use crate::telemetry::Health;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying: the database is busy, unreachable or shutting down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption: retrying will not help.
    #[error("store error: {0}")]
    Internal(String),
}

/// One notification to store, as routed from one event.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The event's id as its producer gave it (stored with the rows, shown to callers).
    pub event_id: String,
    /// What the store dedupes on: the event id in its scope.
    pub dedupe_key: DedupeKey,
    pub recipients: Recipients,
    pub kind: String,
    pub title: String,
    pub content: String,
    pub event_type: String,
    pub source: Option<String>,
    pub related_object: Option<RelatedObject>,
    pub data: Box<RawValue>,
    /// The original event body, replayed to clients in `notification` frames.
    pub body: Arc<RawValue>,
    /// When the event entered Herald (delivery-latency metric).
    pub ingested_at: Instant,
    /// Aliases the event teaches, recorded in the same commit (before later writes resolve them).
    pub aliases: Vec<AliasRecord>,
}

/// Told about every stored notification right after its commit, in commit (= id) order, before the writer
/// answers. This is how fan-out keeps per-user order without the store knowing about sessions.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, written: &NewNotification, stored: &[Notification]);
    /// These users' inboxes were erased.
    fn purged(&self, _users: &[String]) {}
}

/// Tell `listener` what one committed group of writes did. Every backend calls this after `COMMIT`, in commit
/// order, before answering the writers.
pub(crate) fn tell(listener: &dyn CommitListener, writes: &[Write], outcomes: &[WriteOutcome]) {
    for (w, o) in writes.iter().zip(outcomes) {
        match (w, o) {
            (Write::Notify(n), WriteOutcome::Stored(stored)) => listener.committed(n, stored),
            (Write::Purge { users, .. }, WriteOutcome::Purged { .. }) => listener.purged(users),
            _ => {}
        }
    }
}

// `Notify` is nearly every write: boxing it to shrink the rare variants would allocate once per notification.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Write {
    Notify(NewNotification),
    /// Erase these users' inboxes (their rows, their broadcast read state and their aliases).
    Purge {
        event_id: String,
        dedupe_key: DedupeKey,
        users: Vec<String>,
    },
    /// Set an alias (the service API): not an event, so not deduped.
    Alias(AliasRecord),
}

impl Write {
    /// The unscoped id: the only key of the dedupe rows written before ids were scoped (the legacy table).
    pub fn event_id(&self) -> &str {
        match self {
            Write::Notify(n) => &n.event_id,
            Write::Purge { event_id, .. } => event_id,
            Write::Alias(_) => "",
        }
    }

    /// `None` for writes that are not events (never deduped).
    pub fn dedupe_key(&self) -> Option<DedupeKey> {
        match self {
            Write::Notify(n) => Some(n.dedupe_key),
            Write::Purge { dedupe_key, .. } => Some(*dedupe_key),
            Write::Alias(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// New rows: one per user, or one broadcast row.
    Stored(Vec<Notification>),
    /// This event id was applied before; nothing changed.
    Duplicate,
    Purged {
        rows: u64,
    },
    /// The recipients were aliases no user is known for yet: nothing was written (not even the dedupe key, so
    /// the same event succeeds once the alias is known).
    Unresolved {
        kind: String,
        alias: String,
    },
    /// An alias was set.
    AliasSet,
}

/// A stored notification with its original event body, for replays.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub notification: Notification,
    pub body: Box<RawValue>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ListQuery {
    pub limit: u32,
    pub before: Option<i64>,
    pub unread_only: bool,
}

#[derive(Debug, Clone)]
pub struct ReadAll {
    pub up_to: i64,
    pub read_at: DateTime<Utc>,
}

/// The inbox interface: SQLite embedded in one node, PostgreSQL shared by several.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply writes in one durable commit (callers may be batched further inside: group commit).
    /// Outcomes are in the order of `writes`.
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Newest first.
    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError>;

    /// What `user` has after position `from` (targeted ids above `from.targeted`, broadcasts above
    /// `from.broadcast`), oldest first, at most `limit`, with bodies (resume).
    async fn after(&self, user: &str, from: Position, limit: u32) -> Result<Vec<Replayed>, StoreError>;

    async fn unread_count(&self, user: &str) -> Result<u64, StoreError>;

    /// `None` when `id` is not in this user's inbox.
    async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError>;

    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError>;

    /// `false` when `id` is not in this user's inbox.
    async fn delete(&self, user: &str, id: i64) -> Result<bool, StoreError>;

    /// The user an alias stands for, if known.
    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError>;

    /// The newest id of each of `user`'s chains (0 where none).
    async fn latest(&self, user: &str) -> Result<Position, StoreError>;

    /// Reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Write one tiny row through the writer, as any write would: proves the store accepts writes (the
    /// periodic probe that lets `/readyz` recover after a failed write without waiting for traffic).
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// (targeted floor, broadcast floor): the greatest id retention pruned from `user`'s targeted notifications
    /// and from broadcasts, 0 when nothing was. A resume from below a floor cannot be replayed whole.
    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError>;

    /// Apply `store.retention_days`, `store.max_per_user` and `store.dedupe_window_days` as of `now`, in short
    /// batches, each its own transaction. The upkeep task calls it every `store.prune_interval_secs`.
    async fn prune(&self, now: DateTime<Utc>) -> Result<PruneReport, StoreError>;

    /// Finish queued writes and stop. Later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Open the backend `store.url` names, report its write health on `health`, and start its upkeep (the probe
/// write and retention), which stops when the store is closed.
pub async fn open(
    settings: &Settings,
    listener: Option<Arc<dyn CommitListener>>,
    health: Health,
) -> Result<Arc<dyn Store>, StoreError> {
    let backend: Arc<dyn Store> = match settings.store_location() {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(&path, &settings.store, listener)?),
        StoreLocation::Postgres(url) => Arc::new(PostgresStore::open(&url, &settings.store, listener).await?),
    };
    let store = Arc::new(Monitored::new(Arc::new(Coalescing::new(backend)), health));
    upkeep::spawn(&store, &settings.store);
    Ok(store)
}

#[cfg(test)]
pub(crate) mod contract;
