//! Store: the inbox, behind one interface that every backend implements.
//!
//! Invariants:
//! - Idempotent on the event id: applying the same event twice stores it once ([`WriteOutcome::Duplicate`]).
//! - A broadcast is one row, visible in every user's list and unread count, with per-user read/deleted state.
//! - Notification ids only grow in commit order: a reader that saw id N never later sees a new id ≤ N.
//! - Each stored notification links to the previous one of its chain (`prev_id`): a targeted row to that user's
//!   previous targeted row, a broadcast to the previous broadcast. Chains never link to each other.
//! - [`Store::apply`] returns only after the batch is durably committed; callers ack/answer after that.
//! - Only the backend modules know SQL.

mod coalesce;
pub mod instrumented;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

pub use coalesce::Coalescing;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::{Settings, StoreLocation};
use crate::protocol::{Notification, Position, RelatedObject};
use crate::rules::Recipients;

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
    pub event_id: String,
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

#[derive(Debug, Clone)]
pub enum Write {
    Notify(NewNotification),
    /// Erase these users' inboxes (their rows and their broadcast read state).
    Purge {
        event_id: String,
        users: Vec<String>,
    },
}

impl Write {
    pub fn event_id(&self) -> &str {
        match self {
            Write::Notify(n) => &n.event_id,
            Write::Purge { event_id, .. } => event_id,
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

    /// The newest id of each of `user`'s chains (0 where none).
    async fn latest(&self, user: &str) -> Result<Position, StoreError>;

    /// Reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finish queued writes and stop. Later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Open the backend `store.url` names.
pub async fn open(
    settings: &Settings,
    listener: Option<Arc<dyn CommitListener>>,
) -> Result<Arc<dyn Store>, StoreError> {
    match settings.store_location() {
        StoreLocation::Sqlite(path) => {
            Ok(Arc::new(Coalescing::new(Arc::new(SqliteStore::open(&path, &settings.store, listener)?))))
        }
        StoreLocation::Postgres(url) => {
            Ok(Arc::new(Coalescing::new(Arc::new(PostgresStore::open(&url, &settings.store, listener).await?))))
        }
    }
}

#[cfg(test)]
pub(crate) mod contract;
