//! Identical concurrent replay reads share one store query.
//!
//! When a node restarts, every tab of a user reconnects at once with the same `since`; without this, each one
//! would run the same replay query. [`Coalescing`] wraps any [`Store`] and lets the first caller's query serve
//! every identical caller that arrives while it runs. Everything else passes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{ListQuery, ReadAll, Replayed, Store, StoreError, Write, WriteOutcome};
use crate::protocol::Notification;

type Key = (String, i64, u32);
type Flight = Shared<BoxFuture<'static, Result<Arc<Vec<Replayed>>, StoreError>>>;

pub struct Coalescing {
    inner: Arc<dyn Store>,
    in_flight: Mutex<HashMap<Key, Flight>>,
}

impl Coalescing {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Coalescing { inner, in_flight: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl Store for Coalescing {
    async fn after(&self, user: &str, after: i64, limit: u32) -> Result<Vec<Replayed>, StoreError> {
        let key: Key = (user.to_owned(), after, limit);
        let flight = {
            let mut map = self.in_flight.lock().expect("in-flight map poisoned");
            map.entry(key.clone())
                .or_insert_with(|| {
                    let inner = self.inner.clone();
                    let user = user.to_owned();
                    async move { inner.after(&user, after, limit).await.map(Arc::new) }.boxed().shared()
                })
                .clone()
        };
        let result = flight.clone().await;
        {
            let mut map = self.in_flight.lock().expect("in-flight map poisoned");
            if map.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
                map.remove(&key);
            }
        }
        result.map(|items| items.as_ref().clone())
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
    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
        self.inner.mark_all_read(user).await
    }
    async fn delete(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        self.inner.delete(user, id).await
    }
    async fn latest_id(&self, user: &str) -> Result<i64, StoreError> {
        self.inner.latest_id(user).await
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

    use super::*;
    use crate::config::Settings;
    use crate::inbox::contract::draft;
    use crate::inbox::SqliteStore;
    use crate::rules::Recipients;

    /// Counts the replay queries that reach the real store underneath.
    struct Counting(Arc<dyn Store>, AtomicUsize);

    #[async_trait]
    impl Store for Counting {
        async fn after(&self, user: &str, after: i64, limit: u32) -> Result<Vec<Replayed>, StoreError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.after(user, after, limit).await
        }
        async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
            self.0.apply(writes).await
        }
        async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
            self.0.list(user, q).await
        }
        async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
            self.0.unread_count(user).await
        }
        async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError> {
            self.0.mark_read(user, id).await
        }
        async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
            self.0.mark_all_read(user).await
        }
        async fn delete(&self, user: &str, id: i64) -> Result<bool, StoreError> {
            self.0.delete(user, id).await
        }
        async fn latest_id(&self, user: &str) -> Result<i64, StoreError> {
            self.0.latest_id(user).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.0.ping().await
        }
        async fn probe_write(&self) -> Result<(), StoreError> {
            self.0.probe_write().await
        }
        async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
            self.0.history_floor(user).await
        }
        async fn prune(&self, now: chrono::DateTime<chrono::Utc>) -> Result<crate::inbox::PruneReport, StoreError> {
            self.0.prune(now).await
        }
        async fn close(&self) {
            self.0.close().await
        }
    }

    #[tokio::test]
    async fn identical_concurrent_replays_run_one_query_and_all_get_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("db"), &Settings::defaults().store, None).unwrap());
        for i in 0..20 {
            sqlite
                .apply(vec![Write::Notify(draft(&format!("c{i}"), Recipients::Users(vec!["u".into()])))])
                .await
                .unwrap();
        }
        let counting = Arc::new(Counting(sqlite.clone(), AtomicUsize::new(0)));
        let store = Coalescing::new(counting.clone());
        let results = futures_util::future::join_all((0..50).map(|_| store.after("u", 0, 100))).await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().len() == 20));
        assert_eq!(counting.1.load(Ordering::SeqCst), 1, "50 identical replays, one query");

        // Different keys are not merged, and a finished flight is not reused.
        store.after("u", 5, 100).await.unwrap();
        store.after("u", 0, 100).await.unwrap();
        assert_eq!(counting.1.load(Ordering::SeqCst), 3);
        store.close().await;
    }
}
