//! Store: the inbox, behind one interface that every backend implements.
//!
//! Invariants:
//! - Idempotent on the scoped event id ([`DedupeKey`], kept for `store.dedupe_window_days`): applying the same
//!   event twice within the window stores it once ([`WriteOutcome::Duplicate`]). Ids applied before ids were
//!   scoped stay in a legacy table and still dedupe (globally, as they did then) until the window expires them.
//! - A broadcast is one row, visible in every user's list and counts, with per-user state rows (read, unread,
//!   seen, archived, deleted) written only when that user changes it.
//! - Counts are counters, changed in the same transaction as every change that moves them, and read by key
//!   ([`Store::counts`]): never a `COUNT` over a user's rows. A user's targeted part is two counters; their
//!   broadcast part is derived from a global broadcast ordinal (see [`counts`] for the design), so a broadcast
//!   writes one row, not one per user. Archived and muted notifications count in neither `unread` nor `unseen`.
//! - A notification whose type the recipient muted ([`crate::protocol::Preferences`]) is stored with
//!   `muted = true`, never pushed live nor replayed, and not counted; the chain of a user's targeted rows
//!   (`prev_id`) skips muted rows, so not pushing them leaves no gap.
//! - Notification ids only grow in commit order: a reader that saw id N never later sees a new id ≤ N.
//! - Each stored notification links to the previous one of its chain (`prev_id`): a targeted row to that user's
//!   previous targeted row that is not muted, a broadcast to the previous broadcast. Chains never link to each
//!   other.
//! - [`Store::apply`] returns only after the batch is durably committed; callers ack/answer after that.
//! - A write the store cannot make (full disk, read-only or deleted database file, database down) fails with
//!   [`StoreError::Unavailable`], never with an acknowledgement; [`Monitored`] then reports the store not ready
//!   until a write (or the periodic probe write) succeeds again.
//! - Retention prunes off the hot path, in short batches ([`retention`]); what was pruned is remembered as a
//!   floor per chain ([`Store::history_floor`]) so a resume from below it can be told.
//! - Only the backend modules know SQL.

mod chains;
mod coalesce;
pub mod instrumented;
mod list;
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
use crate::protocol::{Counts, Notification, Position, RelatedObject, TypeSetting};
use crate::rules::{AliasRecord, Recipients};
use crate::telemetry::ratelimited::{ThrottledKinds, WINDOW};
use crate::telemetry::Health;
use tracing::Level;

/// The writers' `inbox commit failed` line, one throttle for both backends keyed by whether the store was
/// unavailable: an outage fails every group commit alike, logged in full once per kind per window, then with
/// how many more were not (`herald_store_write_errors_total` counts each).
static COMMIT_FAILED: ThrottledKinds<2> = ThrottledKinds::new(Level::ERROR, "inbox commit failed", WINDOW);

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

impl NewNotification {
    /// The row a store wrote for this notification: its content, with the id, chain link, recipient, `muted` and
    /// creation time the store gave it, and no read/seen/archived state yet.
    pub fn stored(
        &self,
        id: i64,
        prev_id: i64,
        user_id: Option<String>,
        muted: bool,
        created_at: DateTime<Utc>,
    ) -> Notification {
        Notification {
            id,
            prev_id,
            user_id,
            kind: self.kind.clone(),
            title: self.title.clone(),
            content: self.content.clone(),
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            related_object: self.related_object.clone(),
            data: self.data.clone(),
            created_at,
            read_at: None,
            seen_at: None,
            archived_at: None,
            muted,
        }
    }
}

/// Told about every stored notification right after its commit, in commit (= id) order, before the writer
/// answers. This is how fan-out keeps per-user order without the store knowing about sessions.
pub trait CommitListener: Send + Sync + 'static {
    /// `written` was stored as `stored` (one row per recipient, or one broadcast row). `versions` gives each
    /// user's counts version as of this commit (see `changed`), for a listener that orders frames by it.
    fn committed(&self, written: &NewNotification, stored: &[Notification], versions: &mut CommitVersions<'_>);
    /// These users' inboxes were erased.
    fn purged(&self, _users: &[String]) {}
    /// `user`'s inbox state changed in the commit just made (read, unread, archived, unarchived, deleted, read
    /// all, seen all): only notifications the commit changed, never one already in that state. Called after the
    /// commit's `committed` and `purged` calls and before its `counts`, in commit order, so sessions apply
    /// changes in the order they were made whichever request made them. `version`: the version of the counts
    /// this commit wrote for `user` (every state change writes them, so two commits' changes of one user never
    /// share one), 0 when it wrote none; sessions on other nodes order state frames by it.
    fn changed(&self, _user: &str, _change: &StateChange, _version: u64) {}
    /// `user`'s counts changed in the commit just made: these are their values as of that commit, when the
    /// newest broadcast id was `broadcast_up_to`, and `version` their place among the user's counts (see
    /// [`Store::opening`]). Called after the commit's `committed` calls, in commit order, once per user and
    /// commit. Broadcasts do not call it (every session derives those in memory).
    fn counts(&self, _user: &str, _counts: Counts, _broadcast_up_to: i64, _version: u64) {}
    /// The commit's calls are over: what the listener held back for it goes now. Always called, last.
    fn commit_told(&self) {}
}

/// A per-user counts change made in one commit (for the listener).
#[derive(Debug, Clone)]
pub(crate) struct CountsChange {
    pub user: String,
    pub counts: Counts,
    pub broadcast_up_to: i64,
    /// See [`Store::opening`].
    pub version: u64,
}

/// Tell `listener` what one committed group of writes did: its stored notifications and purges (`applied`, in
/// commit order), then the counts it changed, then that it is over. Every backend calls this after `COMMIT`,
/// before answering the writers.
pub(crate) fn tell<'a>(
    listener: &dyn CommitListener,
    applied: impl IntoIterator<Item = (&'a [Write], &'a [WriteOutcome])>,
    state: impl IntoIterator<Item = (&'a str, StateChange)>,
    changes: &[CountsChange],
) {
    let mut versions = CommitVersions { changes, by_user: None };
    for (writes, outcomes) in applied {
        for (w, o) in writes.iter().zip(outcomes) {
            match (w, o) {
                (Write::Notify(n), WriteOutcome::Stored(stored)) => listener.committed(n, stored, &mut versions),
                (Write::Purge { users, .. }, WriteOutcome::Purged { .. }) => listener.purged(users),
                _ => {}
            }
        }
    }
    for (user, change) in state {
        listener.changed(user, &change, versions.of(user));
    }
    for c in changes {
        listener.counts(&c.user, c.counts, c.broadcast_up_to, c.version);
    }
    listener.commit_told();
}

/// Each user's counts version as of one commit (see [`CommitListener::changed`]), looked up by user: a scan of a
/// small commit's changes, an index built on first use for a larger one.
pub struct CommitVersions<'a> {
    changes: &'a [CountsChange],
    by_user: Option<std::collections::HashMap<&'a str, u64>>,
}

impl CommitVersions<'_> {
    /// Beyond this many users a commit's versions are indexed.
    const SCAN: usize = 8;

    /// `user`'s counts version as of this commit; 0 (unordered) when the commit wrote no counts for them.
    pub fn of(&mut self, user: &str) -> u64 {
        if self.changes.len() <= Self::SCAN {
            return self.changes.iter().find(|c| c.user == user).map_or(0, |c| c.version);
        }
        let changes = self.changes;
        let by_user =
            self.by_user.get_or_insert_with(|| changes.iter().map(|c| (c.user.as_str(), c.version)).collect());
        by_user.get(user).copied().unwrap_or(0)
    }
}

// `Notify` is nearly every write: boxing it to shrink the rare variants would allocate once per notification.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Write {
    Notify(NewNotification),
    /// Erase these users' inboxes (their rows, their broadcast read state and their aliases). Never deduped: an
    /// erase asked again erases again, what was stored since included.
    Purge {
        event_id: String,
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

    /// `None` for writes never deduped: an alias (not an event) and a purge (repeating an erase is harmless, and
    /// a repeated erasure request must not be answered `duplicate` while data stored since stays).
    pub fn dedupe_key(&self) -> Option<DedupeKey> {
        match self {
            Write::Notify(n) => Some(n.dedupe_key),
            Write::Purge { .. } | Write::Alias(_) => None,
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

impl Replayed {
    /// What it holds in memory, near enough: its body and its texts (a page is bounded by their sum).
    pub fn bytes(&self) -> usize {
        let n = &self.notification;
        self.body.get().len() + n.data.get().len() + n.title.len() + n.content.len() + n.kind.len() + n.event_type.len()
    }
}

/// How much one replay read returns: at most `rows` notifications, and none past the one that brings them to
/// `bytes` (always one, however large). A session holds a page until its socket took it: the page's bytes, not
/// its rows, are what a reconnecting crowd of sessions holds in memory at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageLimit {
    pub rows: u32,
    pub bytes: usize,
}

impl PageLimit {
    /// Bounded in rows only.
    pub fn rows(rows: u32) -> PageLimit {
        PageLimit { rows, bytes: usize::MAX }
    }

    /// Whether a page this full may have been cut by the limit: the next read may find more.
    pub fn reached(&self, page: &[Replayed]) -> bool {
        page.len() >= self.rows as usize || page.iter().map(Replayed::bytes).sum::<usize>() >= self.bytes
    }

    /// A page filled row by row, oldest first, as a backend reads them.
    pub fn page(self) -> Page {
        Page { limit: self, bytes: 0, items: Vec::new() }
    }
}

/// A replay page being read ([`PageLimit::page`]): both backends stop reading rows where it says.
pub struct Page {
    limit: PageLimit,
    bytes: usize,
    items: Vec<Replayed>,
}

impl Page {
    /// Take one more row; `false` once the page is full (read no more).
    pub fn push(&mut self, r: Replayed) -> bool {
        self.bytes = self.bytes.saturating_add(r.bytes());
        self.items.push(r);
        self.items.len() < self.limit.rows as usize && self.bytes < self.limit.bytes
    }

    /// The page read, with the history floor read in the same snapshot.
    pub fn finish(self, floor: Position) -> ReplayPage {
        ReplayPage { items: self.items, floor }
    }
}

/// One replay read ([`Store::after`]): its rows, oldest first, and how far retention had pruned history in the
/// same snapshot ([`Store::history_floor`]'s two ids). A page read from below the floor of a chain misses that
/// chain's ids up to it, also when retention pruned them after the replay began: the reader can tell, and say so.
#[derive(Debug, Clone, Default)]
pub struct ReplayPage {
    pub items: Vec<Replayed>,
    pub floor: Position,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: u32,
    pub before: Option<i64>,
    /// Only unread notifications the unread count counts (muted ones are left out, as there).
    pub unread_only: bool,
    /// `false`: archived notifications are left out; `true`: only archived ones.
    pub archived: bool,
    /// Only notifications of this `type`.
    pub kind: Option<String>,
    /// Only notifications whose related object has this type (and, with `related_id`, this id).
    pub related_type: Option<String>,
    pub related_id: Option<String>,
}

impl ListQuery {
    /// The column filters set, in the order both backends' list queries number their parameters after the
    /// user, the cursor and the limit: only the filters set appear in the query, so each one can use an index.
    pub fn filters(&self) -> Vec<(&'static str, &str)> {
        [("kind", &self.kind), ("related_type", &self.related_type), ("related_id", &self.related_id)]
            .into_iter()
            .filter_map(|(column, value)| value.as_deref().map(|v| (column, v)))
            .collect()
    }

    /// A first page of `limit` with these filters (`related`: a type, and perhaps an id).
    #[cfg(test)]
    pub fn filtered(
        limit: u32,
        unread_only: bool,
        archived: bool,
        kind: Option<&str>,
        related: Option<(&str, Option<&str>)>,
    ) -> ListQuery {
        ListQuery {
            limit,
            before: None,
            unread_only,
            archived,
            kind: kind.map(Into::into),
            related_type: related.map(|(t, _)| t.into()),
            related_id: related.and_then(|(_, id)| id.map(Into::into)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadAll {
    pub up_to: i64,
    pub read_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SeenAll {
    pub up_to: i64,
    pub seen_at: DateTime<Utc>,
}

/// Counter changes of one commit: added up per user and written with one upsert per user before `COMMIT`.
/// Also remembers, in order, whose counts changed, for the commit listener.
#[derive(Default)]
pub(crate) struct Tally {
    pub deltas: std::collections::HashMap<String, Counters>,
    pub changed: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Tally {
    /// `user`'s counts changed (or may have): tell the listener after the commit.
    pub fn touch(&mut self, user: &str) {
        if self.seen.insert(user.to_owned()) {
            self.changed.push(user.to_owned());
        }
    }

    /// Add to `user`'s targeted counters (`unread`, `unseen`) and broadcast adjustments.
    pub fn add(&mut self, user: &str, unread: i64, unseen: i64, unread_adj: i64, unseen_adj: i64) {
        self.touch(user);
        if (unread, unseen, unread_adj, unseen_adj) == (0, 0, 0, 0) {
            return;
        }
        let d = self.deltas.entry(user.to_owned()).or_default();
        d.unread += unread;
        d.unseen += unseen;
        d.unread_adj += unread_adj;
        d.unseen_adj += unseen_adj;
    }

    /// Count the move of one notification `user` sees from `before` to `after`. `watermarks`: the user's
    /// (read_all, seen_all) ids, needed for a broadcast only. The user gets a delta even when the move leaves
    /// the counters as they were (archiving a read notification): on PostgreSQL its write gives the commit its own
    /// counts version, by which other nodes' sessions order its state frame ([`CommitListener::changed`]); SQLite,
    /// whose versions are its commits', skips a zero delta's write.
    pub fn change(&mut self, user: &str, id: i64, watermarks: Option<(i64, i64)>, before: RowState, after: RowState) {
        if !self.deltas.contains_key(user) {
            self.deltas.insert(user.to_owned(), Counters::default());
        }
        match watermarks {
            Some((read_wm, seen_wm)) => {
                let (above_read, above_seen) = (id > read_wm, id > seen_wm);
                let (b_unread, b_unseen) = before.broadcast_adj(above_read, above_seen);
                let (a_unread, a_unseen) = after.broadcast_adj(above_read, above_seen);
                self.add(user, 0, 0, a_unread - b_unread, a_unseen - b_unseen);
            }
            None => {
                let (b_unread, b_unseen) = before.counted();
                let (a_unread, a_unseen) = after.counted();
                self.add(user, a_unread - b_unread, a_unseen - b_unseen, 0, 0);
            }
        }
    }
}

impl RowState {
    pub fn of(n: &Notification) -> RowState {
        RowState {
            read: n.read_at.is_some(),
            seen: n.seen_at.is_some(),
            hidden: n.archived_at.is_some(),
            muted: n.muted,
        }
    }
}

/// A change of one user's inbox state made by a commit, as the listener is told it ([`CommitListener::changed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Read (and seen) in this commit, at `read_at`.
    Read {
        ids: Vec<i64>,
        read_at: DateTime<Utc>,
    },
    Unread {
        ids: Vec<i64>,
    },
    Archived {
        ids: Vec<i64>,
    },
    Unarchived {
        ids: Vec<i64>,
    },
    Deleted {
        ids: Vec<i64>,
    },
    ReadAll {
        up_to: i64,
        read_at: DateTime<Utc>,
    },
    SeenAll {
        up_to: i64,
        seen_at: DateTime<Utc>,
    },
}

/// One notification after a [`Change`], and whether the change changed it (`false`: it was in that state).
pub(crate) type Changed = Option<(Notification, bool)>;

impl StateChange {
    /// What a change job told: the notifications it changed (none: nothing to tell).
    pub(crate) fn of_change(change: Change, results: &[Changed]) -> Option<StateChange> {
        let changed: Vec<&Notification> = results.iter().flatten().filter(|(_, c)| *c).map(|(n, _)| n).collect();
        let ids: Vec<i64> = changed.iter().map(|n| n.id).collect();
        Some(match change {
            // Newly read in one commit: one time for all.
            Change::Read => StateChange::Read { read_at: changed.first()?.read_at?, ids },
            _ if ids.is_empty() => return None,
            Change::Unread => StateChange::Unread { ids },
            Change::Archive => StateChange::Archived { ids },
            Change::Unarchive => StateChange::Unarchived { ids },
        })
    }

    /// What a delete job told: the ids it deleted (none: nothing to tell).
    pub(crate) fn of_delete(ids: &[i64], deleted: &[bool]) -> Option<StateChange> {
        let ids: Vec<i64> = ids.iter().zip(deleted).filter(|(_, d)| **d).map(|(id, _)| *id).collect();
        (!ids.is_empty()).then_some(StateChange::Deleted { ids })
    }
}

/// A change of one notification's state, for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Read (and seen, if it was not). Marking a read notification read keeps its first `read_at`.
    Read,
    /// Unread again (stays seen).
    Unread,
    Archive,
    Unarchive,
}

/// A change of a user's preferences: `PUT` replaces them, `PATCH` merges into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreferencesChange {
    Replace(std::collections::BTreeMap<String, TypeSetting>),
    /// Each type set to its setting, or (`None`) back to the default.
    Merge(std::collections::BTreeMap<String, Option<TypeSetting>>),
}

impl PreferencesChange {
    /// The rows it writes, at most: what it weighs in a group commit.
    pub(crate) fn weight(&self) -> usize {
        match self {
            PreferencesChange::Replace(types) => types.len() + 1,
            PreferencesChange::Merge(changes) => changes.len().max(1),
        }
    }

    /// The settings after this change of `current`: what each backend's writer writes, under the user's lock.
    pub(crate) fn apply(
        self,
        mut current: std::collections::BTreeMap<String, TypeSetting>,
    ) -> std::collections::BTreeMap<String, TypeSetting> {
        match self {
            PreferencesChange::Replace(types) => types,
            PreferencesChange::Merge(changes) => {
                for (kind, setting) in changes {
                    match setting {
                        Some(s) => current.insert(kind, s),
                        None => current.remove(&kind),
                    };
                }
                current
            }
        }
    }
}

/// The counters behind a user's [`Counts`], as one key read returns them, and how they make the counts.
///
/// Targeted notifications are counted directly: `unread` and `unseen` move by ±1 with every state change
/// of a countable row (neither archived nor muted), in the transaction that makes it, with one upsert per user
/// per commit.
///
/// Broadcasts are counted without a row per user. Each broadcast gets an ordinal (`ord`: 1, 2, 3, … in id
/// order) and the store keeps two global values: `total`, the last ordinal given, and `pruned`, the ordinal
/// of the newest broadcast retention deleted (broadcasts are pruned oldest first, so the live ones are exactly
/// `pruned+1 ..= total`). A user has a watermark per state: `read_ord` (`read_all` marked every broadcast up
/// to it read) and `seen_ord` (`seen_all`/`read_all`). Without any per-broadcast state the user's broadcast
/// unread count is `total - max(read_ord, pruned)`. Each per-user broadcast state row then contributes an
/// adjustment (`unread_adj`, `unseen_adj`): +1 when the row is above the watermark and does not count
/// (read / seen, archived or deleted), -1 when it is at or below the watermark and counts anyway (marked unread
/// after `read_all`), 0 otherwise. The stored adjustment is the sum over the user's rows, changed by
/// `new - old` contribution on every state change; a watermark move (`read_all`, `seen_all`) resets it to 0
/// (every row is then below it, and explicit unread marks are cleared); pruning a broadcast subtracts its
/// rows' contributions. So `unread = unread_targeted + total - max(read_ord, pruned) - unread_adj`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub unread: i64,
    pub unseen: i64,
    pub read_ord: i64,
    pub seen_ord: i64,
    pub unread_adj: i64,
    pub unseen_adj: i64,
}

impl Counters {
    /// The counters from their six columns, `unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj` in that
    /// order (each backend's `COUNTERS` query and its `inbox_counts` reads): `get(i)` reads the `i`-th.
    pub(crate) fn from_columns<E>(get: impl Fn(usize) -> Result<i64, E>) -> Result<Counters, E> {
        Ok(Counters {
            unread: get(0)?,
            unseen: get(1)?,
            read_ord: get(2)?,
            seen_ord: get(3)?,
            unread_adj: get(4)?,
            unseen_adj: get(5)?,
        })
    }

    /// The user's counts, given the global broadcast ordinal `total` and the pruned ordinal `pruned`.
    pub fn counts(&self, total: i64, pruned: i64) -> Counts {
        let b_unread = total - self.read_ord.max(pruned) - self.unread_adj;
        let b_unseen = total - self.seen_ord.max(pruned) - self.unseen_adj;
        Counts { unread: (self.unread + b_unread).max(0) as u64, unseen: (self.unseen + b_unseen).max(0) as u64 }
    }
}

/// The state of one notification for one user that the counters depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RowState {
    pub read: bool,
    pub seen: bool,
    /// Archived, or (a broadcast) deleted by this user.
    pub hidden: bool,
    pub muted: bool,
}

impl RowState {
    /// (unread, unseen) contribution of a targeted row to the counters.
    pub fn counted(&self) -> (i64, i64) {
        let countable = !self.hidden && !self.muted;
        (i64::from(countable && !self.read), i64::from(countable && !self.seen))
    }

    /// (unread, unseen) adjustment of a broadcast state row (see [`Counters`]): what the watermark formula
    /// counts for it minus what it really counts. `above_read`/`above_seen`: the broadcast is newer than the
    /// user's read/seen watermark.
    pub fn broadcast_adj(&self, above_read: bool, above_seen: bool) -> (i64, i64) {
        let (unread, unseen) = self.counted();
        (i64::from(above_read) - unread, i64::from(above_seen) - unseen)
    }
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
    /// `from.broadcast`), oldest first, with bodies (resume): one page, as `limit` bounds it
    /// ([`PageLimit::reached`] says whether there may be more), with the history floor of the same snapshot. `needed`: when the caller learned it needs the read
    /// (a session registered, a gap showed, a resync came): the page holds every commit made before it. Identical
    /// reads share one query only if that query started after it (`coalesce.rs`).
    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        needed: std::time::Instant,
    ) -> Result<ReplayPage, StoreError>;

    /// The user's counts, read by key from the counters.
    async fn counts(&self, user: &str) -> Result<Counts, StoreError>;

    /// `counts(user).unread`, for the old endpoint.
    async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.counts(user).await?.unread)
    }

    /// The newest id of each chain and the user's counts, from one snapshot (a session's opening read): a
    /// broadcast is either counted and at or below the position, or neither. With the counts, their version:
    /// every write of a user's counts gives them a higher one, so that of two counts (a snapshot, or a commit's:
    /// [`CommitListener::counts`]) the higher version is the newer, whichever node wrote them and whichever way
    /// they travelled, and a commit's counts are not newer than a snapshot that holds that commit (PostgreSQL: the
    /// sequence value of the counters row's last write; SQLite: its one writer's commit number `n`, raised before
    /// each commit and loaded after the snapshot's reads: commits' counts carry `2n`, a snapshot `2n - 1`). 0:
    /// unordered (a node of the release before).
    async fn opening(&self, user: &str) -> Result<(Position, Counts, u64), StoreError>;

    /// Change the state of each of `ids`, in one commit: the notification after the change, in the order of
    /// `ids`, `None` for an id not in this user's inbox.
    async fn change_many(
        &self,
        user: &str,
        ids: Vec<i64>,
        change: Change,
    ) -> Result<Vec<Option<Notification>>, StoreError>;

    /// Change one notification's state. `None` when `id` is not in this user's inbox.
    async fn change(&self, user: &str, id: i64, change: Change) -> Result<Option<Notification>, StoreError> {
        Ok(self.change_many(user, vec![id], change).await?.pop().flatten())
    }

    /// `None` when `id` is not in this user's inbox.
    async fn mark_read(&self, user: &str, id: i64) -> Result<Option<Notification>, StoreError> {
        self.change(user, id, Change::Read).await
    }

    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError>;

    /// Everything up to the newest id is seen.
    async fn seen_all(&self, user: &str) -> Result<SeenAll, StoreError>;

    /// What the user set, by type (the API adds the configured defaults).
    async fn preferences(&self, user: &str) -> Result<std::collections::BTreeMap<String, TypeSetting>, StoreError>;

    /// Change the user's settings (replace them, or merge into them), in one commit: the settings after it, or
    /// `None`, and nothing written, when they would name more than `max_types` types. Applies to notifications
    /// stored from the next commit on.
    async fn change_preferences(
        &self,
        user: &str,
        change: PreferencesChange,
        max_types: usize,
    ) -> Result<Option<std::collections::BTreeMap<String, TypeSetting>>, StoreError>;

    /// Replace the user's settings.
    async fn set_preferences(
        &self,
        user: &str,
        types: std::collections::BTreeMap<String, TypeSetting>,
    ) -> Result<(), StoreError> {
        self.change_preferences(user, PreferencesChange::Replace(types), usize::MAX).await.map(drop)
    }

    /// Delete each of `ids` (a broadcast: hide it from this user), in one commit: in the order of `ids`, `false`
    /// for an id not in this user's inbox.
    async fn delete_many(&self, user: &str, ids: Vec<i64>) -> Result<Vec<bool>, StoreError>;

    /// `false` when `id` is not in this user's inbox.
    async fn delete(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        Ok(self.delete_many(user, vec![id]).await?.pop().unwrap_or(false))
    }

    /// The user an alias stands for, if known.
    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError>;

    /// The newest id of each of `user`'s chains: the greatest retained, or pruned by retention if greater (0
    /// where none ever was, or after the user's inbox was erased).
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
        StoreLocation::Sqlite(path) => Arc::new(
            SqliteStore::open(&path, &settings.store, listener)?
                .muting_by_default(&settings.preferences.muted_by_default),
        ),
        StoreLocation::Postgres(url) => Arc::new(
            PostgresStore::open(&url, &settings.store, listener)
                .await?
                .muting_by_default(&settings.preferences.muted_by_default),
        ),
    };
    let store = Arc::new(Monitored::new(Arc::new(Coalescing::new(backend)), health));
    upkeep::spawn(&store, &settings.store);
    Ok(store)
}

/// Types muted unless a user set them: shared by the store's writer (which mutes at commit time) and whoever
/// configures it.
#[derive(Debug, Clone, Default)]
pub struct MutedDefaults(Arc<std::sync::RwLock<Arc<std::collections::HashSet<String>>>>);

impl MutedDefaults {
    pub fn set(&self, types: &[String]) {
        *self.0.write().expect("muted defaults poisoned") = Arc::new(types.iter().cloned().collect());
    }

    pub fn get(&self) -> Arc<std::collections::HashSet<String>> {
        self.0.read().expect("muted defaults poisoned").clone()
    }
}

/// Whether `kind` is muted for a user with `set` (their settings, if any) under `defaults`.
pub(crate) fn is_muted(set: Option<TypeSetting>, defaults: &std::collections::HashSet<String>, kind: &str) -> bool {
    match set {
        Some(TypeSetting::Muted) => true,
        Some(TypeSetting::On) => false,
        None => defaults.contains(kind),
    }
}

pub(crate) fn setting_name(s: TypeSetting) -> &'static str {
    match s {
        TypeSetting::On => "on",
        TypeSetting::Muted => "muted",
    }
}

pub(crate) fn setting_from(s: &str) -> TypeSetting {
    if s == "muted" {
        TypeSetting::Muted
    } else {
        TypeSetting::On
    }
}

#[cfg(test)]
pub(crate) mod contract;

#[cfg(test)]
mod tests {
    use super::*;

    /// A small commit's versions are found by a scan, a large one's through an index: the same answers, 0 for a
    /// user the commit wrote no counts for.
    #[test]
    fn a_commits_versions_are_found_by_user_whatever_its_size() {
        for users in [1, CommitVersions::SCAN, CommitVersions::SCAN + 1, 100] {
            let changes: Vec<CountsChange> = (0..users)
                .map(|i| CountsChange {
                    user: format!("u{i}"),
                    counts: Counts::default(),
                    broadcast_up_to: 0,
                    version: 10 + i as u64,
                })
                .collect();
            let mut versions = CommitVersions { changes: &changes, by_user: None };
            for i in (0..users).rev() {
                assert_eq!(versions.of(&format!("u{i}")), 10 + i as u64, "{users} users");
            }
            assert_eq!(versions.of("someone else"), 0, "{users} users");
        }
    }
}
