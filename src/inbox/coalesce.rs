//! Identical concurrent replay reads share one store query.
//!
//! When a node restarts, every tab of a user reconnects at once with the same `since`; without this, each one
//! would run the same replay query. [`Coalescing`] wraps any [`Store`] and lets the first caller's query serve
//! every identical caller that arrives while it runs and needed the read no earlier than it started: a query
//! started before a session registered may miss a notification committed in between, which that session did not
//! hear live either, so such a caller runs its own. Everything else passes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{ListQuery, PageLimit, ReadAll, ReplayPage, Store, StoreError, Write, WriteOutcome};
use crate::protocol::{Notification, Position};

type Key = (String, Position, PageLimit);
type Flight = Shared<BoxFuture<'static, Result<Arc<ReplayPage>, StoreError>>>;

pub struct Coalescing {
    inner: Arc<dyn Store>,
    /// Each key's latest flight, with when it was created (its query's snapshot is later).
    in_flight: Arc<Mutex<HashMap<Key, (Flight, Instant)>>>,
}

impl Coalescing {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Coalescing { inner, in_flight: Arc::default() }
    }
}

/// Takes a finished flight out of the map, also when the waiting caller is cancelled (a session that closed
/// mid-replay): otherwise its entry would stay behind and later identical calls would share a stale result.
struct Landing<'a> {
    map: &'a Mutex<HashMap<Key, (Flight, Instant)>>,
    key: Key,
    flight: Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().expect("in-flight map poisoned");
        if map.get(&self.key).is_some_and(|(f, _)| f.ptr_eq(&self.flight)) {
            map.remove(&self.key);
        }
    }
}

#[async_trait]
impl Store for Coalescing {
    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        needed: Instant,
    ) -> Result<ReplayPage, StoreError> {
        let key: Key = (user.to_owned(), from, limit);
        let flight = {
            let mut map = self.in_flight.lock().expect("in-flight map poisoned");
            match map.get(&key) {
                // Started after the caller needed the read: its page holds what the caller's must. (Strictly after:
                // a coarse clock gives one instant to both sides of a short interval.)
                Some((flight, started)) if *started > needed => flight.clone(),
                // None, or one started too early: a flight of its own, which later callers join (the older one
                // lands for those already waiting on it).
                _ => {
                    let inner = self.inner.clone();
                    let user = user.to_owned();
                    let started = Instant::now();
                    let flight =
                        async move { inner.after(&user, from, limit, started).await.map(Arc::new) }.boxed().shared();
                    map.insert(key.clone(), (flight.clone(), started));
                    flight
                }
            }
        };
        let landing = Landing { map: &self.in_flight, key, flight: flight.clone() };
        let result = flight.await;
        // The last one out owns the page: once the landing (the flight's last other handle) is gone, the shared
        // output went with it, and a lone caller (the usual replay) takes the rows without copying up to
        // `replay_page_bytes` of them; callers that shared the flight copy theirs.
        drop(landing);
        result.map(|items| Arc::try_unwrap(items).unwrap_or_else(|shared| shared.as_ref().clone()))
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.inner.apply(writes).await
    }
    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
        self.inner.list(user, q).await
    }
    async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.unread_count(user).await
    }
    async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError> {
        self.inner.mark_read(user, id).await
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
        self.inner.latest(user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.inner.probe_write().await
    }
    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
        self.inner.history_floor(user).await
    }
    async fn prune(&self, now: chrono::DateTime<chrono::Utc>) -> Result<super::PruneReport, StoreError> {
        self.inner.prune(now).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::config::Settings;
    use crate::inbox::contract::draft;
    use crate::inbox::instrumented::{Instrumented, Read};
    use crate::inbox::SqliteStore;
    use crate::rules::Recipients;

    /// A SQLite store under a wrapper that counts the replay queries reaching it, each held for `hold`.
    async fn counted(dir: &std::path::Path, hold: Duration) -> (Coalescing, Arc<AtomicUsize>) {
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("db"), &Settings::defaults().store, None).unwrap());
        for i in 0..20 {
            sqlite
                .apply(vec![Write::Notify(draft(&format!("c{i}"), Recipients::Users(vec!["u".into()])))])
                .await
                .unwrap();
        }
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let hook = Arc::new(move |read: Read, _: &str| -> BoxFuture<'static, ()> {
            if read == Read::After {
                c.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(tokio::time::sleep(hold))
        });
        (Coalescing::new(Arc::new(Instrumented::new(sqlite, hook))), count)
    }

    #[tokio::test]
    async fn identical_concurrent_replays_run_one_query_and_all_get_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, count) = counted(dir.path(), Duration::ZERO).await;
        let needed = Instant::now();
        let results = futures_util::future::join_all(
            (0..50).map(|_| store.after("u", Position::default(), PageLimit::rows(100), needed)),
        )
        .await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().items.len() == 20));
        assert_eq!(count.load(Ordering::SeqCst), 1, "50 identical replays, one query");

        // Different keys are not merged, and a finished flight is not reused.
        store.after("u", Position::both(5), PageLimit::rows(100), Instant::now()).await.unwrap();
        store.after("u", Position::default(), PageLimit::rows(100), Instant::now()).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
        store.close().await;
    }

    #[tokio::test]
    async fn a_cancelled_replay_leaves_no_entry_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (store, count) = counted(dir.path(), Duration::from_millis(200)).await;
        // The only waiter goes away (its session closed) while the query runs.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            store.after("u", Position::default(), PageLimit::rows(100), Instant::now()),
        );
        assert!(cancelled.await.is_err(), "the read is still held");
        assert!(store.in_flight.lock().unwrap().is_empty(), "the cancelled flight was taken out of the map");
        // A later identical replay runs its own query and gets fresh rows.
        assert_eq!(
            store.after("u", Position::default(), PageLimit::rows(100), Instant::now()).await.unwrap().items.len(),
            20
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
        store.close().await;
    }

    /// A session that registered after an identical replay query started cannot take that query's page: it may
    /// miss a notification committed in between, which the session did not hear live either (it was not
    /// registered yet). It runs its own query; one that needed the read before the query started shares it.
    #[tokio::test]
    async fn a_replay_needed_after_an_identical_query_started_runs_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (store, count) = counted(dir.path(), Duration::from_millis(300)).await;
        let early = Instant::now();
        let read = |needed| store.after("u", Position::default(), PageLimit::rows(100), needed);
        let first = read(early);
        tokio::pin!(first);
        // The first query starts (and is held).
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut first).await.is_err());
        let late = Instant::now();
        let (a, b, c) = tokio::join!(first, read(early), read(late));
        assert!([a, b, c].iter().all(|r| r.as_ref().unwrap().items.len() == 20));
        assert_eq!(count.load(Ordering::SeqCst), 2, "the early caller shared the first query, the late one did not");
        store.close().await;
    }
}
