//! A [`Store`] wrapper that runs a hook before every read (and before closing), for fault injection and tests: delay reads to see
//! that a slow store stalls nobody, or count them to see that identical replays share one query.
//!
//! Writes pass straight through, but for the group commit ([`Read::Apply`], to fail a commit's caller): the hook is
//! about what sessions, REST readers and the ingest paths wait on.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use super::{ListQuery, PageLimit, PruneReport, ReadAll, ReplayPage, Store, StoreError, Write, WriteOutcome};
use crate::protocol::{Notification, Position};

/// Which read the hook is about to let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    List,
    After,
    UnreadCount,
    Counts,
    Latest,
    HistoryFloor,
    /// Not a read: a group commit, before it is handed to the store (the user is empty). A hook that panics here
    /// panics its caller (the AMQP consumer, an HTTP ingest request), as a bug on that path would.
    Apply,
    /// Not a read: the store is closing (the hook can hold it there, as a database that stopped answering would).
    Close,
}

pub type ReadHook = Arc<dyn Fn(Read, &str) -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Instrumented {
    inner: Arc<dyn Store>,
    hook: ReadHook,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>, hook: ReadHook) -> Self {
        Instrumented { inner, hook }
    }
}

#[async_trait]
impl Store for Instrumented {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        (self.hook)(Read::Apply, "").await;
        self.inner.apply(writes).await
    }
    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
        (self.hook)(Read::List, user).await;
        self.inner.list(user, q).await
    }
    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        needed: std::time::Instant,
    ) -> Result<ReplayPage, StoreError> {
        (self.hook)(Read::After, user).await;
        self.inner.after(user, from, limit, needed).await
    }
    async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        (self.hook)(Read::UnreadCount, user).await;
        self.inner.unread_count(user).await
    }
    async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError> {
        self.inner.mark_read(user, id).await
    }
    async fn counts(&self, user: &str) -> Result<crate::protocol::Counts, StoreError> {
        (self.hook)(Read::Counts, user).await;
        self.inner.counts(user).await
    }
    async fn opening(&self, user: &str) -> Result<(Position, crate::protocol::Counts, u64), StoreError> {
        (self.hook)(Read::Latest, user).await;
        self.inner.opening(user).await
    }
    async fn change_many(
        &self,
        user: &str,
        ids: Vec<i64>,
        change: super::Change,
    ) -> Result<Vec<Option<Notification>>, StoreError> {
        self.inner.change_many(user, ids, change).await
    }
    async fn seen_all(&self, user: &str) -> Result<super::SeenAll, StoreError> {
        self.inner.seen_all(user).await
    }
    async fn preferences(
        &self,
        user: &str,
    ) -> Result<std::collections::BTreeMap<String, crate::protocol::TypeSetting>, StoreError> {
        self.inner.preferences(user).await
    }
    async fn change_preferences(
        &self,
        user: &str,
        change: super::PreferencesChange,
        max_types: usize,
    ) -> Result<Option<std::collections::BTreeMap<String, crate::protocol::TypeSetting>>, StoreError> {
        self.inner.change_preferences(user, change, max_types).await
    }
    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
        self.inner.mark_all_read(user).await
    }
    async fn delete_many(&self, user: &str, ids: Vec<i64>) -> Result<Vec<bool>, StoreError> {
        self.inner.delete_many(user, ids).await
    }
    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError> {
        self.inner.alias(kind, alias).await
    }
    async fn latest(&self, user: &str) -> Result<Position, StoreError> {
        (self.hook)(Read::Latest, user).await;
        self.inner.latest(user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.inner.probe_write().await
    }
    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
        (self.hook)(Read::HistoryFloor, user).await;
        self.inner.history_floor(user).await
    }
    async fn prune(&self, now: chrono::DateTime<chrono::Utc>) -> Result<PruneReport, StoreError> {
        self.inner.prune(now).await
    }
    async fn close(&self) {
        (self.hook)(Read::Close, "").await;
        self.inner.close().await
    }
}
