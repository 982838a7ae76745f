//! Upkeep: the store's write health, and the background work that keeps it true and the inbox bounded.
//!
//! [`Monitored`] wraps the store and records the outcome of every write on the [`Health`] board as
//! `store_writes`, which `/readyz` reads: after a write fails for availability (full disk, read-only or deleted
//! database file, database down) the node reports not ready, so a load balancer stops sending producers here,
//! until a write succeeds again. [`spawn`] starts two tasks: a probe write ([`Store::probe_write`]) every few
//! seconds (every second while failing), so readiness recovers without traffic and a failure is noticed
//! before traffic; and retention ([`Store::prune`]) every `store.prune_interval_secs`.
//!
//! Invariants: both tasks hold only a weak reference and stop once the store is closed or dropped; a write
//! that fails for a reason retrying will not fix (`Internal`: one bad row) says nothing about the store and
//! leaves readiness alone, and so does a failed retention run (`herald_retention_failures_total` counts it); the
//! board is touched only when the state changes, never per write while healthy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ListQuery, PageLimit, PruneReport, ReadAll, ReplayPage, Store, StoreError, Write, WriteOutcome};
use crate::config::StoreSettings;
use crate::protocol::{Notification, Position};
use crate::telemetry::Health;

/// The `/readyz` check this module reports.
pub const COMPONENT: &str = "store_writes";
/// Probe period while writes succeed, and while they fail.
const PROBE_HEALTHY: Duration = Duration::from_secs(5);
const PROBE_FAILING: Duration = Duration::from_secs(1);

pub struct Monitored {
    inner: Arc<dyn Store>,
    health: Health,
    writable: AtomicBool,
    closed: AtomicBool,
    /// Wakes the probe at once when a write fails, so it starts probing at the failing pace.
    failed: tokio::sync::Notify,
}

impl Monitored {
    pub fn new(inner: Arc<dyn Store>, health: Health) -> Monitored {
        health.set(COMPONENT, true, "writable");
        // Shown at 0 from the start, so an alert on `increase()` sees the first error (a series that appears at 1
        // has no increase).
        for kind in ["unavailable", "internal"] {
            metrics::counter!("herald_store_write_errors_total", "kind" => kind).increment(0);
        }
        metrics::counter!("herald_retention_failures_total").increment(0);
        Monitored {
            inner,
            health,
            writable: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            failed: tokio::sync::Notify::new(),
        }
    }

    /// Whether the last write succeeded (or failed for a reason that says nothing about the store).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    fn record<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            if !self.closed.load(Ordering::Acquire) {
                let kind = if matches!(e, StoreError::Unavailable(_)) { "unavailable" } else { "internal" };
                metrics::counter!("herald_store_write_errors_total", "kind" => kind).increment(1);
            }
        }
        match &result {
            Ok(_) => {
                if !self.writable.swap(true, Ordering::AcqRel) {
                    tracing::info!("the store accepts writes again");
                    self.health.set(COMPONENT, true, "writable");
                }
            }
            Err(StoreError::Unavailable(e)) if !self.closed.load(Ordering::Acquire) => {
                if self.writable.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, "the store refused a write; reporting not ready until one succeeds");
                    self.failed.notify_one();
                }
                self.health.set(COMPONENT, false, format!("last write failed: {e}"));
            }
            Err(_) => {}
        }
        result
    }
}

#[async_trait]
impl Store for Monitored {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.record(self.inner.apply(writes).await)
    }
    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
        self.inner.list(user, q).await
    }
    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        needed: std::time::Instant,
    ) -> Result<ReplayPage, StoreError> {
        self.inner.after(user, from, limit, needed).await
    }
    async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.unread_count(user).await
    }
    async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError> {
        self.record(self.inner.mark_read(user, id).await)
    }
    async fn counts(&self, user: &str) -> Result<crate::protocol::Counts, StoreError> {
        self.inner.counts(user).await
    }
    async fn opening(&self, user: &str) -> Result<(Position, crate::protocol::Counts, u64), StoreError> {
        self.inner.opening(user).await
    }
    async fn change_many(
        &self,
        user: &str,
        ids: Vec<i64>,
        change: super::Change,
    ) -> Result<Vec<Option<Notification>>, StoreError> {
        self.record(self.inner.change_many(user, ids, change).await)
    }
    async fn seen_all(&self, user: &str) -> Result<super::SeenAll, StoreError> {
        self.record(self.inner.seen_all(user).await)
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
        self.record(self.inner.change_preferences(user, change, max_types).await)
    }
    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
        self.record(self.inner.mark_all_read(user).await)
    }
    async fn delete_many(&self, user: &str, ids: Vec<i64>) -> Result<Vec<bool>, StoreError> {
        self.record(self.inner.delete_many(user, ids).await)
    }
    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError> {
        self.inner.alias(kind, alias).await
    }
    async fn latest(&self, user: &str) -> Result<Position, StoreError> {
        self.inner.latest(user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.record(self.inner.probe_write().await)
    }
    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
        self.inner.history_floor(user).await
    }
    /// Retention's outcome leaves readiness alone: a pruning step that failed (a statement timeout behind a long
    /// lock, a conflict) says nothing about whether producers' writes commit, and reporting not ready for it took
    /// the node out of its load balancer until the next probe write. Counted instead, for the retention alert.
    async fn prune(&self, now: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        let pruned = self.inner.prune(now).await;
        if pruned.is_err() && !self.closed.load(Ordering::Acquire) {
            metrics::counter!("herald_retention_failures_total").increment(1);
        }
        pruned
    }
    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.inner.close().await
    }
}

/// Start the probe and retention tasks for `store`.
pub fn spawn(store: &Arc<Monitored>, settings: &StoreSettings) {
    let weak = Arc::downgrade(store);
    tokio::spawn(async move {
        loop {
            let Some(store) = live(&weak) else { return };
            let period = if store.writable() { PROBE_HEALTHY } else { PROBE_FAILING };
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = store.failed.notified() => tokio::time::sleep(PROBE_FAILING).await,
            }
            drop(store);
            let Some(store) = live(&weak) else { return };
            if let Err(e) = store.probe_write().await {
                tracing::debug!(error = %e, "store probe write failed");
            }
        }
    });
    let weak = Arc::downgrade(store);
    let interval = Duration::from_secs(settings.prune_interval_secs.max(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(store) = live(&weak) else { return };
            match store.prune(Utc::now()).await {
                Ok(report) if report != PruneReport::default() => tracing::info!(?report, "retention pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pruning failed; retrying next interval"),
            }
        }
    });
}

fn live(weak: &Weak<Monitored>) -> Option<Arc<Monitored>> {
    weak.upgrade().filter(|s| !s.closed.load(Ordering::Acquire))
}
