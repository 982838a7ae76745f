//! Retention: what the store forgets, and how, the same way in every backend.
//!
//! Three rules, from `[store]`: notifications older than `retention_days` go (targeted and broadcast, with the
//! per-user state of pruned broadcasts: taken out of the counters in the step that prunes the broadcast, in one
//! statement however many users read it, and deleted by later steps, `prune_batch` rows each); a user's
//! targeted notifications beyond `max_per_user` go, oldest first (broadcasts are pruned by age only: they are
//! shared, so one user's count says nothing about them); dedupe keys older than `dedupe_window_days` go, after
//! which the same event would be stored again (PostgreSQL: at the next run; SQLite: within a day after, as its
//! sweep passes them — see `sqlite.rs`).
//!
//! [`prune`] drives the backend's [`PruneSteps`]: each step is one short transaction over at most
//! `prune_batch` rows, and the driver yields between steps, so writers queued meanwhile go first.
//!
//! Invariants: every pruned notification raises its chain's floor (per user for targeted rows, one for
//! broadcasts) in the same transaction that deletes it, so [`super::Store::history_floor`] never lags what is
//! gone. Age pruning walks from the oldest id (ids follow commit time) and stops at the first batch of oldest
//! rows with nothing expired, so it never scans the young part of the table; a row whose clock ran behind its
//! neighbours' may outlive them by a cycle or two. Broadcasts go strictly oldest id first: one not yet expired
//! (its node's clock ran ahead) holds back the younger ones until it expires, because the counts take the live
//! broadcasts to be exactly the ordinals above the newest pruned one (`Counters`); the rows looked at leave the
//! held broadcasts out, so targeted rows behind them still go.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::config::StoreSettings;

/// The retention rules, from `[store]`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// 0: keep notifications forever.
    pub retention_days: u32,
    /// 0: no cap.
    pub max_per_user: u64,
    pub dedupe_window_days: u32,
    /// Most rows one step touches.
    pub batch: usize,
}

impl Retention {
    pub fn from_settings(s: &StoreSettings) -> Retention {
        Retention {
            retention_days: s.retention_days,
            max_per_user: s.max_per_user,
            dedupe_window_days: s.dedupe_window_days,
            batch: s.prune_batch,
        }
    }
}

/// Rows removed, by kind (also the `kind` label of `herald_pruned_rows_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub notifications: u64,
    pub broadcast_states: u64,
    pub dedupe_keys: u64,
}

impl PruneReport {
    fn add(&mut self, other: PruneReport) {
        self.notifications += other.notifications;
        self.broadcast_states += other.broadcast_states;
        self.dedupe_keys += other.dedupe_keys;
        for (kind, n) in [
            ("notification", other.notifications),
            ("broadcast_state", other.broadcast_states),
            ("dedupe_key", other.dedupe_keys),
        ] {
            if n > 0 {
                metrics::counter!("herald_pruned_rows_total", "kind" => kind).increment(n);
            }
        }
    }
}

/// One backend's pruning, step by step. Each method is one short transaction.
#[async_trait]
pub(crate) trait PruneSteps: Send + Sync {
    /// Among the `batch` oldest notifications, delete those created before `cutoff`; raise the floors; delete
    /// the per-user state of the broadcasts deleted.
    async fn prune_expired(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<PruneReport, StoreError>;

    /// Up to `limit` users with more than `max` targeted notifications.
    async fn users_over(&self, max: u64, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Delete up to `batch` of `user`'s oldest targeted notifications beyond their newest `keep`; raise their
    /// floor. (Counted in the transaction, so a purge or new rows meanwhile never make it delete too many.)
    async fn prune_beyond(&self, user: &str, keep: u64, batch: usize) -> Result<PruneReport, StoreError>;

    /// Delete up to `batch` per-user state rows of broadcasts already pruned (their users' counters were
    /// corrected in the step that pruned the broadcast); how many went.
    async fn forget_pruned_broadcast_states(&self, batch: usize) -> Result<u64, StoreError>;

    /// One step of forgetting the dedupe keys applied before `cutoff` (`now` less the window), touching at most
    /// `batch` keys; `more` until this run has nothing left to do. A backend may forget a key later than
    /// `cutoff` says, never earlier (SQLite sweeps its keys in key order, within a day after: see there).
    async fn expire_dedupe(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<PruneStep, StoreError>;
}

/// One pruning step: what it removed, and (for [`PruneSteps::expire_dedupe`]) whether its run has more to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneStep {
    pub report: PruneReport,
    /// The run is not over: take another step.
    pub more: bool,
}

/// Apply every rule as of `now`.
pub(crate) async fn prune(
    steps: &dyn PruneSteps,
    r: &Retention,
    now: DateTime<Utc>,
) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let batch = r.batch.max(1);
    if r.retention_days > 0 {
        let cutoff = now - chrono::Duration::days(i64::from(r.retention_days));
        loop {
            let step = steps.prune_expired(cutoff, batch).await?;
            report.add(step);
            if step.notifications == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    // The state rows of the broadcasts pruned (by this run, or by one a restart interrupted), a batch a step.
    loop {
        let states = steps.forget_pruned_broadcast_states(batch).await?;
        report.add(PruneReport { broadcast_states: states, ..Default::default() });
        if states < batch as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    if r.max_per_user > 0 {
        for user in steps.users_over(r.max_per_user, batch).await? {
            loop {
                let step = steps.prune_beyond(&user, r.max_per_user, batch).await?;
                report.add(step);
                if step.notifications < batch as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    }
    let cutoff = now - chrono::Duration::days(i64::from(r.dedupe_window_days));
    loop {
        let step = steps.expire_dedupe(cutoff, now, batch).await?;
        report.add(step.report);
        if !step.more {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(report)
}

/// What deleting `rows` (id, user id; `None` for a broadcast) does to the floors: the greatest id per user,
/// and the greatest broadcast id with every broadcast id (whose per-user state goes too).
pub(crate) struct Floors<'a> {
    pub users: BTreeMap<&'a str, i64>,
    pub broadcast: Option<i64>,
    pub broadcast_ids: Vec<i64>,
}

impl<'a> Floors<'a> {
    pub fn of(rows: &'a [(i64, Option<String>)]) -> Floors<'a> {
        let mut floors = Floors { users: BTreeMap::new(), broadcast: None, broadcast_ids: Vec::new() };
        for (id, user) in rows {
            match user {
                Some(u) => {
                    let floor = floors.users.entry(u.as_str()).or_insert(*id);
                    *floor = (*floor).max(*id);
                }
                None => {
                    floors.broadcast = Some(floors.broadcast.unwrap_or(*id).max(*id));
                    floors.broadcast_ids.push(*id);
                }
            }
        }
        floors
    }
}
