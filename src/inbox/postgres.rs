//! The PostgreSQL inbox, one database shared by several Herald nodes.
//!
//! The same shape as the SQLite backend: each node has one writer (its own thread and current-thread runtime, so
//! the OS schedules it as soon as PostgreSQL answers, not after the request tasks a commit woke) that commits
//! whatever has queued up in one transaction (group commit) on a connection it keeps, and a pool of reader
//! connections. The schema, the queries and so the behaviour mirror `sqlite.rs`; both pass `contract.rs`.
//!
//! What changes is that several nodes write the same tables. Every write transaction first takes its ordering
//! locks ([`begin_and_lock`]): [`WRITE_LOCK`] shared plus one transaction-scoped advisory lock per user it writes
//! for, or [`WRITE_LOCK`] exclusive when it holds a broadcast or alias-addressed recipients. Writes for different users on
//! different nodes commit side by side; a user's writes, and broadcasts, commit one after the other.
//!
//! Invariants:
//! - Ids come from an identity column and are drawn only under those locks, which PostgreSQL releases after the
//!   commit became visible: a user's targeted ids, and broadcast ids, become visible in increasing order across
//!   nodes (a reader of user U that saw id N in a chain never later sees a new id < N there), and `prev_id`, read
//!   in the locked transaction, is exact.
//! - A user's chain head (their newest unmuted targeted id, the next row's `prev_id`) is either unknown (NULL) or
//!   exact in `inbox_counts.head` (migration 8): every write of an unmuted targeted row moves it in the same
//!   transaction (`herald_write_targeted`'s counters upsert, [`INSERT`] row by row), and triggers clear it
//!   when any `DELETE` removes the head row (every head on a `TRUNCATE`); unknown, the writer reads it from the
//!   notifications (tested: `chain_heads_follow_row_by_row_writes_and_any_delete`, the contract's chain tests).
//! - A commit of targeted notifications only (the shape of one event per request) is one round trip whatever its
//!   size: one call of `herald_write_targeted_versioned` (migrations 6, 8, 9 and 11) in autocommit ([`write_targeted`]), which
//!   takes the same locks first; anything else is written row by row in a transaction that `BEGIN` and the locks
//!   open.
//! - Replies leave the writer only after `COMMIT` returned; the commit listener runs first, in commit order.
//! - A batch that fails for any reason but availability is retried job by job, so one bad write fails alone.
//! - Retention runs as plain short transactions beside the writer, not through it (deleting draws no ids); each
//!   first tries a second advisory lock ([`PRUNE_LOCK`]), so with several nodes one prunes while the others
//!   skip that round, then takes the writers' ordering locks of the users whose rows it deletes (the exclusive
//!   one for a broadcast), so it never deletes a row under a writer changing it (tested:
//!   `pruning_waits_for_the_writers_of_the_users_it_prunes`).
//!
//! The schema is picked like any PostgreSQL setting, in the URL:
//! `postgres://user@host/db?options=-c%20search_path%3Dherald`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{FutureExt as _, TryStreamExt as _};
use serde_json::value::RawValue;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, Row, SqlSafeStr};
use tokio::sync::{mpsc, oneshot};

use super::list;
use super::retention::{self, Floors, PruneStep, PruneSteps, Retention};
use super::{
    is_muted, setting_from, setting_name, Change, Changed, CommitListener, Counters, CountsChange, ListQuery,
    MutedDefaults, NewNotification, PageLimit, PreferencesChange, PruneReport, ReadAll, ReplayPage, Replayed, RowState,
    SeenAll, StateChange, Store, StoreError, Tally, Write, WriteOutcome, COMMIT_FAILED,
};
use crate::config::StoreSettings;
use crate::postgres_connections::{migration_pool, pool, watched, while_working, Lent, Unanswered, ACQUIRE_TIMEOUT};
use crate::protocol::{Counts, Notification, Position, RelatedObject, TypeSetting};
use crate::rules::{AliasRecord, Recipients};

/// Key of the advisory lock that serialises write transactions across nodes ("HERALD" in ASCII).
const WRITE_LOCK: i64 = 0x4845_5241_4C44;
/// The first key of the per-user advisory locks (`pg_advisory_xact_lock(USER_LOCKS, user_lock_key(user))`,
/// "HERA").
const USER_LOCKS: i32 = 0x4845_5241;
/// Most users' locks one transaction takes; a commit (or pruning step) for more takes [`WRITE_LOCK`] exclusive
/// instead. Advisory locks share PostgreSQL's lock table, `max_locks_per_transaction` (64) × `max_connections`
/// entries by default (and some slack): a commit for 60,000 users (one request of 1,000 events, 60 recipients each)
/// failed with "out of shared memory" on every retry, and held the table full meanwhile.
const MAX_USER_LOCKS: usize = 512;
/// Key of the advisory lock a pruning transaction tries first ("HPRUNE").
const PRUNE_LOCK: i64 = 0x4850_5255_4E45;

/// The inbox's migrations. A node still starts when a newer node already applied migrations it does not know
/// (sqlx refuses that by default), so a rolling upgrade's older nodes can restart — unless the database says
/// they cannot write it correctly ([`compatible`]).
fn migrator() -> Migrator {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(version, name.to_owned().into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    let mut migrator = Migrator::with_migrations(vec![
        migration(1, "inbox", include_str!("../../migrations/postgres/0001_inbox.sql")),
        migration(
            2,
            "scoped dedupe and retention",
            include_str!("../../migrations/postgres/0002_scoped_dedupe_and_retention.sql"),
        ),
        migration(3, "aliases", include_str!("../../migrations/postgres/0003_aliases.sql")),
        migration(
            4,
            "inbox states, counts and preferences",
            include_str!("../../migrations/postgres/0004_inbox_states_counts_preferences.sql"),
        ),
        migration(5, "drop the unread index", include_str!("../../migrations/postgres/0005_drop_unread_index.sql")),
        migration(6, "write targeted", include_str!("../../migrations/postgres/0006_write_targeted.sql")),
        migration(7, "inline totals", include_str!("../../migrations/postgres/0007_inline_totals.sql")),
        migration(8, "chain heads", include_str!("../../migrations/postgres/0008_chain_heads.sql")),
        migration(9, "counts versions", include_str!("../../migrations/postgres/0009_counts_versions.sql")),
        migration(
            10,
            "broadcast list indexes",
            include_str!("../../migrations/postgres/0010_broadcast_list_indexes.sql"),
        ),
        migration(
            11,
            "counts versions set by the upsert",
            include_str!("../../migrations/postgres/0011_counts_versions_set_by_the_upsert.sql"),
        ),
    ]);
    migrator.set_ignore_missing(true);
    migrator
}

/// Refuse to run on a database a newer release migrated in a way this one would write wrongly. Each migration
/// that older releases cannot run beside raises `store_state.compatible_from` to the lowest migration version a
/// node must know (migration 6 sets 4: a node from before the counters of migration 4 would not keep them; nodes
/// from before migration 6 do not check, so the value guards the releases from this one on; migration 8 sets 8:
/// a node from before it would not move the chain heads kept in the counters).
async fn compatible(c: &PgPool, migrator: &Migrator) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let needed: Option<i64> = sqlx::query_scalar("SELECT value FROM store_state WHERE name = 'compatible_from'")
        .fetch_optional(c)
        .await
        .map_err(store_error)?;
    match needed {
        Some(needed) if needed > known => Err(StoreError::Internal(format!(
            "the database was migrated by a newer release that this one cannot run beside (it needs migration \
             {needed}, this release knows up to {known}): upgrade this node"
        ))),
        _ => Ok(()),
    }
}

/// The columns of a targeted row, in [`notification`]'s order.
macro_rules! columns {
    () => {
        "id, user_id, kind, title, content, event_type, source, related_type, related_id, data::text AS data,
         created_at, prev_id, read_at, seen_at, archived_at, muted"
    };
}

/// Broadcast rows as user `$1` sees them: their read/seen/archived state, minus the ones they deleted. Read:
/// their own mark, else the read_all watermark, unless they marked it unread since. Never muted.
macro_rules! broadcast_columns {
    () => {
        "SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source, n.related_type, n.related_id,
                n.data::text AS data, n.created_at, n.prev_id,
                CASE WHEN COALESCE(s.unread, FALSE) THEN NULL
                     ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
                COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
                s.archived_at AS archived_at, FALSE AS muted"
    };
}

/// PostgreSQL's pieces of the list query (`inbox::list`).
const LIST: list::Dialect = list::Dialect {
    targeted_columns: columns!(),
    broadcast_select: broadcast_columns!(),
    index_hints: false,
    placeholder: '$',
};

/// The previous row of a new row's chain: user `$1`'s newest targeted row that was not muted (muted rows are
/// never pushed, so a client's cursor never reaches them) or, for a broadcast (`$1` NULL), the newest broadcast.
/// One branch per chain, each on its index (`notifications_by_user`, `notifications_broadcasts`); only the one
/// taken runs. (`user_id IS NOT DISTINCT FROM $1` could use neither: a broadcast's head was a sequential scan, a
/// new user's a walk back over the whole primary key.)
macro_rules! chain_head {
    () => {
        "COALESCE(CASE WHEN $1::text IS NULL
                       THEN (SELECT id FROM notifications WHERE user_id IS NULL AND NOT muted ORDER BY id DESC LIMIT 1)
                       ELSE (SELECT id FROM notifications WHERE user_id = $1 AND NOT muted ORDER BY id DESC LIMIT 1)
                  END, 0)"
    };
}

/// Muted rows are never pushed: not replayed either (the chain skips them, so no gap shows). A page stops at `$3`
/// rows, and after the row whose body brings the page's bodies to `$5` bytes (`upto - size < $5`): the rows past
/// it are never sent. A body's size is what it takes on disk less the largest header (`pg_column_size`, which
/// reads no body: compressed, it is smaller than the text) — never more than the text [`Replayed::bytes`]
/// counts, with the other texts besides, so the server never cuts a page before the [`PageLimit::page`] the rows
/// are read into does, and the session's `reached` sees every cut. Bodies that compress well cross the wire in
/// larger pages, and are cut on arrival.
static AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT page.*, floor.targeted AS floor_targeted, floor.broadcast AS floor_broadcast
         FROM ({FLOOR}) floor LEFT JOIN (
             SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data,
                    created_at, prev_id, read_at, seen_at, archived_at, muted, raw::text AS body FROM (
                 SELECT s.*, sum(size) OVER (ORDER BY id) AS upto FROM (
                     SELECT u.*, b.body AS raw, greatest(pg_column_size(b.body) - 4, 0) AS size FROM ((SELECT {}
                         FROM notifications WHERE user_id = $1 AND id > $2 AND NOT muted ORDER BY id LIMIT $3)
                     UNION ALL ({} AND n.id > $4 ORDER BY n.id LIMIT $3) ORDER BY id LIMIT $3) u
                     JOIN notifications b ON b.id = u.id) s) rows
             WHERE upto - size < $5) page ON TRUE
         ORDER BY page.id",
        columns!(),
        LIST.broadcasts("")
    )
});

/// How far retention pruned user `$1`'s history: the newest pruned id of each chain (0: none).
const FLOOR: &str = "SELECT COALESCE((SELECT up_to FROM pruned_floors WHERE user_id = $1), 0) AS targeted,
                            COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0) AS broadcast";

static VISIBLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM notifications WHERE user_id = $1 AND id = $2 UNION ALL {} AND n.id = $2",
        columns!(),
        LIST.broadcasts("")
    )
});

/// One key read: the global broadcast ordinals and the user's counters (see `Counters`).
const COUNTERS: &str = "SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0),
        COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_pruned_ord'), 0),
        c.unread, c.unseen, c.read_ord, c.seen_ord, c.unread_adj, c.unseen_adj, c.version
    FROM (SELECT 1) one LEFT JOIN inbox_counts c ON c.user_id = $1";

/// The newest id of each chain: of the rows retained, or the greatest one retention pruned (a chain pruned whole
/// still has the ids it reached: a client's cursor there is not "above the server's history").
const LATEST: &str = "SELECT GREATEST(COALESCE((SELECT max(id) FROM notifications WHERE user_id = $1), 0),
                                       COALESCE((SELECT up_to FROM pruned_floors WHERE user_id = $1), 0)),
                              GREATEST(COALESCE((SELECT max(id) FROM notifications WHERE user_id IS NULL), 0),
                                       COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0))";

/// A session's opening: [`LATEST`]'s two ids, then [`COUNTERS`]' columns, read in one statement (one snapshot).
static OPENING: LazyLock<String> = LazyLock::new(|| format!("SELECT l.*, c.* FROM ({LATEST}) l, ({COUNTERS}) c"));

/// One row, which also moves its user's chain head (`inbox_counts.head`, migration 8) when it is targeted and
/// unmuted: `herald_write_targeted` links that user's next row to it without reading the notifications.
const INSERT: &str = concat!(
    "WITH added AS (
         INSERT INTO notifications
             (user_id, event_id, kind, title, content, event_type, source, related_type, related_id, data, body,
              created_at, muted, ord, prev_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::json, $11::json, $12, $13, $14, ",
    chain_head!(),
    ") RETURNING id, prev_id
     ), moved AS (
         UPDATE inbox_counts SET head = (SELECT id FROM added) WHERE user_id = $1 AND NOT $13
     )
     SELECT id, prev_id FROM added"
);

/// What a pruning `DELETE` returns of each row: enough to raise the floors and correct the counters.
macro_rules! pruned {
    () => {
        " RETURNING id, user_id, ord, (read_at IS NULL AND archived_at IS NULL AND NOT muted),
                   (seen_at IS NULL AND archived_at IS NULL AND NOT muted)"
    };
}

type PrunedRow = (i64, Option<String>, Option<i64>, bool, bool);

/// Take out of each user's counters the (unread, unseen) adjustment their state rows of the pruned broadcasts `$1`
/// hold (see `Counters`), in one statement: the rows never leave the database (a broadcast read by 300,000 users
/// was fetched and written back row by row under the exclusive lock). The version is taken here, not by the
/// trigger's function call per row. The state rows stay, orphaned, for
/// [`PruneSteps::forget_pruned_broadcast_states`] to delete a batch at a time.
const UNCOUNT_PRUNED_BROADCASTS: &str = "UPDATE inbox_counts c
    SET unread_adj = c.unread_adj - a.unread, unseen_adj = c.unseen_adj - a.unseen,
        version = GREATEST(nextval('herald_counts_versions'), c.version + 1)
    FROM (SELECT s.user_id,
            sum((s.notification_id > COALESCE(w.read_all_up_to, 0))::int
              - (NOT s.deleted AND s.archived_at IS NULL
                 AND (s.unread OR (s.read_at IS NULL AND s.notification_id > COALESCE(w.read_all_up_to, 0))))::int)
              AS unread,
            sum((s.notification_id > COALESCE(w.seen_all_up_to, 0))::int
              - (NOT s.deleted AND s.archived_at IS NULL
                 AND s.seen_at IS NULL AND s.notification_id > COALESCE(w.seen_all_up_to, 0))::int) AS unseen
        FROM broadcast_state s LEFT JOIN user_state w ON w.user_id = s.user_id
        WHERE s.notification_id = ANY($1) GROUP BY s.user_id) a
    WHERE c.user_id = a.user_id AND (a.unread <> 0 OR a.unseen <> 0)";

/// Delete up to `$1` state rows of pruned broadcasts: at or below the broadcast floor (through the index by
/// notification, oldest first) and without their notification (a broadcast an older release pruned out of order
/// may still be below the floor).
const ORPHANED_STATES: &str = "DELETE FROM broadcast_state WHERE (user_id, notification_id) IN (
    SELECT s.user_id, s.notification_id FROM broadcast_state s
    WHERE s.notification_id <= COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0)
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = s.notification_id)
    LIMIT $1)";

enum Job {
    Apply(Vec<Write>, oneshot::Sender<Result<Vec<WriteOutcome>, StoreError>>),
    Change(String, Vec<i64>, Change, oneshot::Sender<Result<Vec<Option<Notification>>, StoreError>>),
    MarkAllRead(String, oneshot::Sender<Result<ReadAll, StoreError>>),
    SeenAll(String, oneshot::Sender<Result<SeenAll, StoreError>>),
    Delete(String, Vec<i64>, oneshot::Sender<Result<Vec<bool>, StoreError>>),
    SetPreferences(
        String,
        PreferencesChange,
        usize,
        oneshot::Sender<Result<Option<BTreeMap<String, TypeSetting>>, StoreError>>,
    ),
    Probe(oneshot::Sender<Result<(), StoreError>>),
    Close(oneshot::Sender<()>),
}

// Short-lived, one per job of one commit: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Apply(Vec<WriteOutcome>),
    Change(Vec<Changed>),
    MarkAllRead(ReadAll),
    SeenAll(SeenAll),
    Delete(Vec<bool>),
    SetPreferences(Option<BTreeMap<String, TypeSetting>>),
    Probe,
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Apply(w, _) => w.len().max(1),
            Job::Change(_, ids, ..) | Job::Delete(_, ids, _) => ids.len().max(1),
            Job::SetPreferences(_, change, ..) => change.weight(),
            _ => 1,
        }
    }

    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Job::Apply(_, r), Answer::Apply(a)) => drop(r.send(Ok(a))),
            (Job::Change(_, _, _, r), Answer::Change(a)) => {
                drop(r.send(Ok(a.into_iter().map(|c| c.map(|(n, _)| n)).collect())))
            }
            (Job::MarkAllRead(_, r), Answer::MarkAllRead(a)) => drop(r.send(Ok(a))),
            (Job::SeenAll(_, r), Answer::SeenAll(a)) => drop(r.send(Ok(a))),
            (Job::Delete(_, _, r), Answer::Delete(a)) => drop(r.send(Ok(a))),
            (Job::SetPreferences(.., r), Answer::SetPreferences(a)) => drop(r.send(Ok(a))),
            (Job::Probe(r), Answer::Probe) => drop(r.send(Ok(()))),
            _ => unreachable!("answers are built in job order"),
        }
    }

    fn fail(self, err: StoreError) {
        match self {
            Job::Apply(_, r) => drop(r.send(Err(err))),
            Job::Change(_, _, _, r) => drop(r.send(Err(err))),
            Job::MarkAllRead(_, r) => drop(r.send(Err(err))),
            Job::SeenAll(_, r) => drop(r.send(Err(err))),
            Job::Delete(_, _, r) => drop(r.send(Err(err))),
            Job::SetPreferences(.., r) => drop(r.send(Err(err))),
            Job::Probe(r) => drop(r.send(Err(err))),
            Job::Close(r) => drop(r.send(())),
        }
    }
}

pub struct PostgresStore {
    writer: mpsc::Sender<Job>,
    readers: PgPool,
    /// `store.statement_timeout_secs`: the server's bound on any one statement.
    statement_timeout: Duration,
    retention: Retention,
    muted_defaults: MutedDefaults,
    /// Told the counts pruning changed (pruning commits outside the writer).
    listener: Option<Arc<dyn CommitListener>>,
    /// Where [`watched`] connects to look at a pruning step's server process.
    watch: PgConnectOptions,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Watched work that did not run to its end ([`watched`]): as its connection's error, or unavailable.
fn unanswered(e: Unanswered) -> StoreError {
    match e {
        Unanswered::Connection(e) => store_error(e),
        Unanswered::Silent(why) => StoreError::Unavailable(why),
    }
}

/// Worth retrying (PostgreSQL unreachable, restarting, overloaded, a timeout) or not (everything else).
fn store_error(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let retry = match &e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(db) => db.code().is_some_and(|code| {
            // 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, statement
            // timeout), 40 serialization failure / deadlock, 55P03 lock not available, 25006 read-only
            // transaction (a failover left us on a standby).
            ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) || code == "55P03" || code == "25006"
        }),
        _ => false,
    };
    if retry {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(e.to_string())
    }
}

fn migrate_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => store_error(e),
        e => StoreError::Internal(format!("migrations: {e}")),
    }
}

/// A fresh row as PostgreSQL stored it: its texts through [`text`].
fn as_stored(mut n: Notification) -> Notification {
    for t in [&mut n.kind, &mut n.title, &mut n.content, &mut n.event_type] {
        if let std::borrow::Cow::Owned(clean) = text(t) {
            *t = clean;
        }
    }
    if let Some(std::borrow::Cow::Owned(clean)) = n.source.as_deref().map(text) {
        n.source = Some(clean);
    }
    if let Some(r) = &mut n.related_object {
        r.kind = text(&r.kind).into_owned();
        r.id = text(&r.id).into_owned();
    }
    n
}

/// PostgreSQL text cannot hold U+0000 (SQLite's can): store U+FFFD rather than refuse the event.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// Why a node cannot reach PostgreSQL at start, said where and why: the pool says only that it waited ("pool
/// timed out while waiting for an open connection"), so one direct connection asks for the reason (refused, an
/// unknown host, a password refused). Neither names the password.
async fn unreachable(options: &PgConnectOptions) -> StoreError {
    let why = match tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(conn)) => {
            let _ = tokio::time::timeout(ACQUIRE_TIMEOUT, conn.close()).await;
            "no connection within the pool's wait, though one opened just after".to_owned()
        }
        Err(_) => format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
    };
    let (host, port, db) = (options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
    StoreError::Unavailable(format!("cannot connect to PostgreSQL at {host}:{port}/{db}: {why}"))
}

/// Refuse, at start, a server that hands its connections to other clients between transactions: a pooler in
/// transaction or statement mode (PgBouncer's `pool_mode = transaction`). Herald keeps state on each connection
/// for its whole life: prepared statements, the session's statement timeouts ([`pool`]), and the writer's server
/// process, whose activity it checks on a slow commit. Two connections are opened; a setting made on the first
/// for its session is looked for from the second, and read back on the first. A shared server connection shows
/// it on the second, or loses it on the first; a pooler that does not handle prepared statements also fails a
/// statement for a name another client prepared (SQLSTATE 42P05, 26000), which Herald's own connections never
/// do. Nothing is decided when the probe cannot run: the pools report an unreachable server themselves.
async fn refuse_shared_connections(options: &PgConnectOptions) -> Result<(), StoreError> {
    let probe = async {
        let (mut first, mut second) =
            (PgConnection::connect_with(options).await?, PgConnection::connect_with(options).await?);
        let marker = format!("herald-{:016x}", rand::random::<u64>());
        let setting = "SELECT set_config('herald.connection_probe', $1, false)";
        let look = "SELECT coalesce(current_setting('herald.connection_probe', true), '')";
        sqlx::query(setting).bind(&marker).execute(&mut first).await?;
        let on_second: String = sqlx::query_scalar(look).fetch_one(&mut second).await?;
        let on_first: String = sqlx::query_scalar(look).fetch_one(&mut first).await?;
        let _ = first.close().await;
        let _ = second.close().await;
        Ok::<bool, sqlx::Error>(on_second == marker || on_first != marker)
    };
    let shared = match tokio::time::timeout(ACQUIRE_TIMEOUT * 2, probe).await {
        Ok(Ok(shared)) => shared,
        Ok(Err(e)) => {
            e.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "42P05" || code == "26000")
        }
        Err(_) => false,
    };
    if !shared {
        return Ok(());
    }
    let (host, port, db) = (options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
    Err(StoreError::Unavailable(format!(
        "PostgreSQL at {host}:{port}/{db} shares its connections between clients per transaction (a pooler such as \
         PgBouncer in `pool_mode = transaction` or `statement`): Herald keeps prepared statements and settings on \
         its connections and needs session pooling (`pool_mode = session`) or a direct connection"
    )))
}

impl PostgresStore {
    /// Connect to `url`, apply the migrations, and start this node's writer.
    pub async fn open(
        url: &str,
        settings: &StoreSettings,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Result<PostgresStore, StoreError> {
        // The parse error never repeats the URL, which may hold a password.
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Internal(format!("store.url: {e}")))?;
        PostgresStore::connect(options, settings, listener).await
    }

    pub async fn connect(
        options: PgConnectOptions,
        settings: &StoreSettings,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Result<PostgresStore, StoreError> {
        // sqlx sends `extra_float_digits` at startup unless told not to, and PgBouncer refuses a connection with a
        // startup option it does not know. Herald reads no float as text, and PostgreSQL 12+ prints floats
        // exactly anyway.
        let options = options.application_name("herald").extra_float_digits(None);
        {
            // The migrator takes its own advisory lock: nodes starting together apply them once.
            let migrating = match migration_pool().connect_with(options.clone()).await {
                Ok(pool) => pool,
                Err(sqlx::Error::PoolTimedOut) => return Err(unreachable(&options).await),
                Err(e) => return Err(store_error(e)),
            };
            let migrator = migrator();
            let migrated = match migrator.run(&migrating).await.map_err(migrate_error) {
                Ok(()) => compatible(&migrating, &migrator).await,
                Err(e) => Err(e),
            };
            migrating.close().await;
            migrated?;
        }
        refuse_shared_connections(&options).await?;
        let statement_timeout = settings.statement_timeout();
        let readers =
            pool(settings.read_connections.max(1) as u32, statement_timeout).connect_lazy_with(options.clone());

        let (tx, rx) = mpsc::channel(4096);
        let muted_defaults = MutedDefaults::default();
        // The writer runs on its own thread and runtime, as SQLite's does: woken by PostgreSQL's answer, it gets
        // the core from the OS scheduler at once rather than after every request task its last commit woke.
        let (ready_tx, ready_rx) = oneshot::channel();
        let (batch_max, defaults) = (settings.batch_max.max(1), muted_defaults.clone());
        let (writer_listener, prune_listener) = (listener.clone(), listener);
        let watch = options.clone();
        std::thread::Builder::new()
            .name("herald-pg-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready_tx.send(Err(StoreError::Internal(format!("writer runtime: {e}"))))),
                };
                runtime.block_on(async move {
                    // The writer's one connection is not pinged before each commit (a round trip per group
                    // commit): a broken connection fails that commit as unavailable, and the pool replaces it.
                    let check_options = options.clone();
                    let connected = pool(1, statement_timeout).test_before_acquire(false).connect_with(options).await;
                    match connected {
                        Ok(writer_pool) => {
                            let _ = ready_tx.send(Ok(()));
                            let writer = Writer {
                                pool: writer_pool,
                                conn: None,
                                legacy_empty: false,
                                muted: defaults,
                                options: check_options,
                            };
                            let writing = writer_loop(writer, rx, batch_max, writer_listener);
                            // A panic in the writer fails liveness (as `telemetry::essential` does for SQLite's).
                            if let Err(panic) = std::panic::AssertUnwindSafe(writing).catch_unwind().await {
                                crate::telemetry::essential_failed("the PostgreSQL writer thread stopped", panic);
                            }
                        }
                        Err(e) => drop(ready_tx.send(Err(store_error(e)))),
                    }
                });
            })
            .map_err(|e| StoreError::Internal(format!("writer thread: {e}")))?;
        ready_rx.await.map_err(|_| StoreError::Internal("the writer thread stopped".into()))??;
        Ok(PostgresStore {
            writer: tx,
            readers,
            statement_timeout,
            retention: Retention::from_settings(settings),
            muted_defaults,
            listener: prune_listener,
            watch,
        })
    }

    /// Mute these notification types for users who did not set them (`preferences.muted_by_default`).
    pub fn muting_by_default(self, types: &[String]) -> Self {
        self.muted_defaults.set(types);
        self
    }

    /// One replay page read on `c` (see [`Store::after`]).
    async fn replay_page(
        c: &mut PgConnection,
        user: &str,
        from: Position,
        limit: PageLimit,
    ) -> sqlx::Result<ReplayPage> {
        let mut rows = sqlx::query(AFTER.as_str())
            .bind(text(user))
            .bind(from.targeted)
            .bind(i64::from(limit.rows))
            .bind(from.broadcast)
            .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
            .fetch(c);
        let mut page = limit.page();
        // Every row carries the floor, read in the statement's snapshot; without rows, one row carries it alone.
        let mut floor = Position::default();
        while let Some(r) = rows.try_next().await? {
            let read = |r: &PgRow| -> sqlx::Result<(Position, Option<Replayed>)> {
                let floor =
                    Position { targeted: r.try_get("floor_targeted")?, broadcast: r.try_get("floor_broadcast")? };
                let item = match r.try_get::<Option<i64>, _>(0)? {
                    Some(_) => Some(Replayed { notification: notification(r)?, body: raw(r.try_get("body")?) }),
                    None => None,
                };
                Ok((floor, item))
            };
            let (at, item) = read(&r)?;
            floor = at;
            if let Some(item) = item {
                if !page.push(item) {
                    break;
                }
            }
        }
        Ok(page.finish(floor))
    }

    /// Run `read` on a reader connection, through a [`Lent`]: back to the pool once `read` ends, whatever it
    /// returned; drained within a bound, or given up, when the caller drops this future first.
    async fn read<T>(&self, read: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>) -> Result<T, StoreError> {
        let mut lent = Lent::from(&self.readers, self.statement_timeout).await.map_err(store_error)?;
        let result = read(lent.conn()).await;
        lent.done();
        result.map_err(store_error)
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).await.map_err(|_| unavailable("the store is closed"))?;
        rx.await.map_err(|_| unavailable("the store writer stopped"))?
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| Job::Apply(writes, tx)).await
    }

    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
        // Unprepared, so planned with its values each time: a statement kept prepared goes over to a generic plan
        // after a few runs, which estimates a type as common as the average one and may walk every broadcast.
        let mut query = sqlx::query(AssertSqlSafe(list::sql(&q, &LIST)))
            .persistent(false)
            .bind(text(user))
            .bind(q.before.unwrap_or(i64::MAX))
            .bind(i64::from(q.limit));
        for (_, value) in q.filters() {
            query = query.bind(text(value).into_owned());
        }
        let rows = self.read(async |c| query.fetch_all(c).await).await?;
        rows.iter().map(notification).collect::<sqlx::Result<_>>().map_err(store_error)
    }

    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        _: std::time::Instant,
    ) -> Result<ReplayPage, StoreError> {
        self.read(async |c| Self::replay_page(c, user, from, limit).await).await
    }

    async fn counts(&self, user: &str) -> Result<Counts, StoreError> {
        let (total, pruned, counters, _) = self.read(async |c| counters(c, &text(user)).await).await?;
        Ok(counters.counts(total, pruned))
    }

    async fn opening(&self, user: &str) -> Result<(Position, Counts, u64), StoreError> {
        // One statement: one snapshot for both reads, one round trip, and nothing to end if the caller's timeout
        // cuts it (sqlx 0.9's `begin()` cut before `BEGIN`'s answer pooled its connection inside a transaction).
        let r = self.read(async |c| sqlx::query(OPENING.as_str()).bind(text(user)).fetch_one(c).await).await?;
        let read = || -> sqlx::Result<_> {
            let position = Position { targeted: r.try_get(0)?, broadcast: r.try_get(1)? };
            let (total, pruned, counters, version) = counters_row(&r, 2)?;
            Ok((position, counters.counts(total, pruned), version))
        };
        read().map_err(store_error)
    }

    async fn change_many(
        &self,
        user: &str,
        ids: Vec<i64>,
        change: Change,
    ) -> Result<Vec<Option<Notification>>, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::Change(user, ids, change, tx)).await
    }

    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::MarkAllRead(user, tx)).await
    }

    async fn seen_all(&self, user: &str) -> Result<SeenAll, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::SeenAll(user, tx)).await
    }

    async fn preferences(&self, user: &str) -> Result<BTreeMap<String, TypeSetting>, StoreError> {
        self.read(async |c| preferences_of(c, &text(user)).await).await
    }

    async fn change_preferences(
        &self,
        user: &str,
        change: PreferencesChange,
        max_types: usize,
    ) -> Result<Option<BTreeMap<String, TypeSetting>>, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::SetPreferences(user, change, max_types, tx)).await
    }

    async fn delete_many(&self, user: &str, ids: Vec<i64>) -> Result<Vec<bool>, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::Delete(user, ids, tx)).await
    }

    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError> {
        self.read(async |c| {
            sqlx::query_scalar("SELECT user_id FROM aliases WHERE kind = $1 AND alias = $2")
                .bind(text(kind))
                .bind(text(alias))
                .fetch_optional(c)
                .await
        })
        .await
    }

    async fn latest(&self, user: &str) -> Result<Position, StoreError> {
        let (targeted, broadcast): (i64, i64) =
            self.read(async |c| sqlx::query_as(LATEST).bind(text(user)).fetch_one(c).await).await?;
        Ok(Position { targeted, broadcast })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(unavailable("the store writer stopped"));
        }
        self.read(async |c| sqlx::query("SELECT 1").execute(c).await.map(drop)).await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        self.write(Job::Probe).await
    }

    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
        self.read(async |c| sqlx::query_as(FLOOR).bind(text(user)).fetch_one(c).await).await
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        retention::prune(self, &self.retention, now).await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Job::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.readers.close().await;
    }
}

impl PostgresStore {
    /// Run `step` in a transaction that holds [`PRUNE_LOCK`], and commit it; `None` when another node holds the
    /// lock (it prunes; this node skips the round). Watched as a commit is ([`watched`]): retention runs with no
    /// caller to cut it short, and a step waiting on a server gone silent (no reset: its host gone, a partition)
    /// would wait for good, and retention on the node with it. It fails as unavailable instead.
    async fn prune_step<T>(
        &self,
        step: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let work = async |c: &mut PgConnection| {
            let mut tx = c.begin().await.map_err(store_error)?;
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(PRUNE_LOCK)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            if !mine {
                tx.rollback().await.map_err(store_error)?;
                return Ok(None);
            }
            match step(&mut tx).await {
                Ok(done) => tx.commit().await.map_err(store_error).map(|()| Some(done)),
                // Rolled back here, while watched: a transaction dropped only queues its rollback, which sqlx's
                // return of the connection then sends with no bound, this step's locks held until it is answered.
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        };
        watched(&self.readers, &self.watch, self.statement_timeout, "a pruning step", work).await.map_err(unanswered)?
    }

    /// A pruning step that deletes the notifications `ids` (the rows' users' ordering locks taken,
    /// [`lock_for_pruning`]), raising the floors and correcting the counters with it; its users hear their new
    /// counts once it has committed. Rows deleted meanwhile by someone else are skipped.
    async fn prune_notifications(
        &self,
        step: impl AsyncFnOnce(&mut PgConnection) -> Result<Vec<i64>, StoreError>,
    ) -> Result<PruneReport, StoreError> {
        let pruned = self
            .prune_step(async |c| {
                let ids = step(c).await?;
                if ids.is_empty() {
                    return Ok((PruneReport::default(), Vec::new()));
                }
                let rows: Vec<PrunedRow> =
                    sqlx::query_as(concat!("DELETE FROM notifications WHERE id = ANY($1)", pruned!()))
                        .bind(&ids)
                        .fetch_all(&mut *c)
                        .await
                        .map_err(store_error)?;
                let mut tally = Tally::default();
                let report = raise_floors(c, &rows, &mut tally).await.map_err(store_error)?;
                let changes = finish_tally(c, tally).await.map_err(store_error)?;
                Ok((report, changes))
            })
            .await?;
        let Some((report, changes)) = pruned else { return Ok(PruneReport::default()) };
        // The users whose counts pruning changed hear them, as after any commit (their sessions' badges).
        if let Some(listener) = &self.listener {
            super::tell(listener.as_ref(), std::iter::empty(), std::iter::empty(), &changes);
        }
        Ok(report)
    }
}

#[async_trait]
impl PruneSteps for PostgresStore {
    async fn prune_expired(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<PruneReport, StoreError> {
        self.prune_notifications(async |c| {
            // The oldest rows by id, of which those older than the cutoff: read first, to know whose locks to
            // take. Broadcasts only those older than the first one not expired (see `retention.rs`), looked for
            // among the `$2` oldest broadcasts: no younger one can be among the `$2` oldest rows.
            let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
                "WITH hold AS (SELECT COALESCE(min(id), 9223372036854775807) AS id FROM
                     (SELECT id, created_at FROM notifications WHERE user_id IS NULL ORDER BY id LIMIT $2) b
                     WHERE created_at >= $1),
                 oldest AS (SELECT id, user_id, created_at FROM notifications
                     WHERE user_id IS NOT NULL OR id < (SELECT id FROM hold) ORDER BY id LIMIT $2)
                 SELECT id, user_id FROM oldest WHERE created_at < $1",
            )
            .bind(cutoff)
            .bind(batch as i64)
            .fetch_all(&mut *c)
            .await
            .map_err(store_error)?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            // A broadcast among them takes the exclusive lock: any user may be changing its state.
            let users = rows.iter().map(|(_, user)| user.as_deref().map(user_lock_key)).collect::<Option<Vec<_>>>();
            lock_for_pruning(c, users).await?;
            Ok(rows.into_iter().map(|(id, _)| id).collect())
        })
        .await
    }

    async fn users_over(&self, max: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        // A read: watched, without the prune lock (each `prune_beyond` step takes it).
        let query = sqlx::query_scalar(
            "SELECT user_id FROM notifications WHERE user_id IS NOT NULL GROUP BY user_id HAVING count(*) > $1 LIMIT $2",
        )
        .bind(max as i64)
        .bind(limit as i64);
        let read = async |c: &mut PgConnection| query.fetch_all(c).await;
        watched(&self.readers, &self.watch, self.statement_timeout, "a retention read", read)
            .await
            .map_err(unanswered)?
            .map_err(store_error)
    }

    async fn prune_beyond(&self, user: &str, keep: u64, batch: usize) -> Result<PruneReport, StoreError> {
        self.prune_notifications(async |c| {
            // Read under the user's lock: the rows beyond the newest `keep` cannot move while it is held.
            lock_for_pruning(c, Some(vec![user_lock_key(user)])).await?;
            sqlx::query_scalar(
                "SELECT id FROM (SELECT id FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT ALL OFFSET $2)
                 beyond ORDER BY id LIMIT $3",
            )
            .bind(text(user))
            .bind(keep as i64)
            .bind(batch as i64)
            .fetch_all(c)
            .await
            .map_err(store_error)
        })
        .await
    }

    async fn forget_pruned_broadcast_states(&self, batch: usize) -> Result<u64, StoreError> {
        // Only the prune lock: no writer changes a pruned broadcast's state (it is no longer visible to anyone).
        let deleted = self
            .prune_step(async |c| {
                let deleted = sqlx::query(ORPHANED_STATES).bind(batch as i64).execute(c).await.map_err(store_error)?;
                Ok(deleted.rows_affected())
            })
            .await?;
        Ok(deleted.unwrap_or(0))
    }

    async fn expire_dedupe(
        &self,
        cutoff: DateTime<Utc>,
        _now: DateTime<Utc>,
        batch: usize,
    ) -> Result<PruneStep, StoreError> {
        let deleted = self
            .prune_step(async |c| {
                let mut deleted = 0;
                for sql in [
                    "DELETE FROM dedupe_keys WHERE key IN
                         (SELECT key FROM dedupe_keys WHERE applied_at < $1 ORDER BY applied_at LIMIT $2)",
                    "DELETE FROM applied_events_legacy WHERE event_id IN
                         (SELECT event_id FROM applied_events_legacy WHERE applied_at < $1 ORDER BY applied_at LIMIT $2)",
                ] {
                    deleted += sqlx::query(sql)
                        .bind(cutoff)
                        .bind(batch as i64)
                        .execute(&mut *c)
                        .await
                        .map_err(store_error)?
                        .rows_affected();
                }
                Ok(deleted)
            })
            .await?
            .unwrap_or(0);
        // Oldest first through the by-age index: a step that deleted nothing found nothing older.
        Ok(PruneStep { report: PruneReport { dedupe_keys: deleted, ..Default::default() }, more: deleted > 0 })
    }
}

/// Take, in a pruning transaction, the ordering locks a writer takes for `users` ([`ordering_locks`]; `None`:
/// the exclusive one), so pruning never deletes a row under a writer changing it: the writer's change commits
/// first and the row is deleted as it left it, or the row is gone before the writer reads it — the counters stay
/// exact both ways, and a writer never finds a row it just changed gone. Taken after [`PRUNE_LOCK`], which
/// writers never take, so no cycle.
async fn lock_for_pruning(c: &mut PgConnection, users: Option<Vec<i32>>) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(ordering_locks(users))).execute(c).await.map_err(store_error)?;
    Ok(())
}

/// Raise the floors over pruned `rows`, count what the targeted ones took from their users' counters into
/// `tally`, and take the pruned broadcasts' state rows out of their users' counters ([`UNCOUNT_PRUNED_BROADCASTS`]:
/// those users are not told; their counts do not move unless they had marked the broadcast unread, and the
/// counts of everyone without a state row of it move untold too).
async fn raise_floors(c: &mut PgConnection, rows: &[PrunedRow], tally: &mut Tally) -> sqlx::Result<PruneReport> {
    let pairs: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.0, r.1.clone())).collect();
    let floors = Floors::of(&pairs);
    if !floors.users.is_empty() {
        let (users, up_to): (Vec<&str>, Vec<i64>) = floors.users.iter().map(|(u, id)| (*u, *id)).unzip();
        sqlx::query(
            "INSERT INTO pruned_floors (user_id, up_to) SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET up_to = GREATEST(pruned_floors.up_to, excluded.up_to)",
        )
        .bind(users)
        .bind(up_to)
        .execute(&mut *c)
        .await?;
    }
    for (_, user, _, unread, unseen) in rows {
        if let (Some(user), true) = (user, *unread || *unseen) {
            tally.add(user, -i64::from(*unread), -i64::from(*unseen), 0, 0);
        }
    }
    if let Some(up_to) = floors.broadcast {
        sqlx::query(
            "INSERT INTO store_state (name, value) VALUES ('broadcast_floor', $1)
             ON CONFLICT (name) DO UPDATE SET value = GREATEST(store_state.value, excluded.value)",
        )
        .bind(up_to)
        .execute(&mut *c)
        .await?;
        if let Some(ord) = rows.iter().filter_map(|r| r.2).max() {
            sqlx::query(
                "INSERT INTO store_state (name, value) VALUES ('broadcast_pruned_ord', $1)
                 ON CONFLICT (name) DO UPDATE SET value = GREATEST(store_state.value, excluded.value)",
            )
            .bind(ord)
            .execute(&mut *c)
            .await?;
        }
        sqlx::query(UNCOUNT_PRUNED_BROADCASTS).bind(&floors.broadcast_ids).execute(&mut *c).await?;
    }
    Ok(PruneReport { notifications: rows.len() as u64, ..Default::default() })
}

fn raw(s: String) -> Box<RawValue> {
    RawValue::from_string(s).unwrap_or_else(|_| crate::protocol::raw_null())
}

/// Now, at the millisecond precision SQLite stores, so a live frame and a later read agree on both backends.
fn now_millis() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

fn notification(r: &PgRow) -> sqlx::Result<Notification> {
    let related_type: Option<String> = r.try_get(7)?;
    let related_id: Option<String> = r.try_get(8)?;
    Ok(Notification {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        title: r.try_get(3)?,
        content: r.try_get(4)?,
        event_type: r.try_get(5)?,
        source: r.try_get(6)?,
        related_object: related_type.zip(related_id).map(|(kind, id)| RelatedObject { kind, id }),
        data: raw(r.try_get(9)?),
        created_at: r.try_get(10)?,
        prev_id: r.try_get(11)?,
        read_at: r.try_get(12)?,
        seen_at: r.try_get(13)?,
        archived_at: r.try_get(14)?,
        muted: r.try_get(15)?,
    })
}

fn counters_of(r: &PgRow, from: usize) -> sqlx::Result<Counters> {
    Counters::from_columns(|i| r.try_get::<Option<i64>, _>(from + i).map(Option::unwrap_or_default))
}

/// (total, pruned, the user's counters, their version: migration 9): one key read.
async fn counters(c: &mut PgConnection, user: &str) -> sqlx::Result<(i64, i64, Counters, u64)> {
    counters_row(&sqlx::query(COUNTERS).bind(user).fetch_one(&mut *c).await?, 0)
}

/// [`COUNTERS`]' columns, from column `from` of a row on: (total, pruned, the user's counters, their version).
fn counters_row(r: &PgRow, from: usize) -> sqlx::Result<(i64, i64, Counters, u64)> {
    Ok((r.try_get(from)?, r.try_get(from + 1)?, counters_of(r, from + 2)?, version_of(r, from + 8)?))
}

/// A counters row's version (migration 9; 0 for a user without one).
fn version_of(r: &PgRow, at: usize) -> sqlx::Result<u64> {
    Ok(r.try_get::<Option<i64>, _>(at)?.unwrap_or_default().max(0) as u64)
}

/// The global counters [`finish_tally`] reports with each user's: (broadcast ordinal, pruned broadcast ordinal,
/// newest broadcast id).
type Totals = (i64, i64, i64);

/// [`Totals`] as columns of any statement (`herald_totals()`, migrations 6 and 7, is their one definition, which
/// the planner inlines; each uncorrelated subquery runs once per statement).
macro_rules! totals {
    () => {
        "(SELECT total FROM herald_totals()), (SELECT pruned FROM herald_totals()),
         (SELECT broadcast_up_to FROM herald_totals())"
    };
}

const TOTALS: &str = "SELECT total, pruned, broadcast_up_to FROM herald_totals()";

/// The upsert of a tally's pending changes, binds `$1`…`$5` ([`DeltaColumns`]): returns the counters each changed
/// user has now and, on every row, the [`Totals`] (read by [`upserted`]).
macro_rules! upsert_counts {
    () => {
        concat!(
            "INSERT INTO inbox_counts AS c (user_id, unread, unseen, unread_adj, unseen_adj)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread,
                 unseen = c.unseen + excluded.unseen, unread_adj = c.unread_adj + excluded.unread_adj,
                 unseen_adj = c.unseen_adj + excluded.unseen_adj
             RETURNING user_id, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj, version, ",
            totals!()
        )
    };
}

/// A tally's pending changes as [`upsert_counts`]' arrays: user, unread, unseen, unread_adj, unseen_adj.
type DeltaColumns = (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

/// What the upsert wrote: the counters each changed user has now with their version, and the [`Totals`] (none
/// when nothing was pending).
type Upserted = (Vec<(String, (Counters, u64))>, Option<Totals>);

/// Take the tally's pending changes as bind arrays.
fn delta_columns(tally: &mut Tally) -> DeltaColumns {
    let deltas = std::mem::take(&mut tally.deltas);
    let users: Vec<String> = deltas.keys().cloned().collect();
    let column = |f: fn(&Counters) -> i64| -> Vec<i64> { users.iter().map(|u| f(&deltas[u])).collect() };
    let (unread, unseen, unread_adj, unseen_adj) =
        (column(|d| d.unread), column(|d| d.unseen), column(|d| d.unread_adj), column(|d| d.unseen_adj));
    (users, unread, unseen, unread_adj, unseen_adj)
}

/// Read [`upsert_counts`]' rows.
fn upserted(rows: &[PgRow]) -> sqlx::Result<Upserted> {
    let totals = match rows.first() {
        Some(r) => Some((r.try_get(8)?, r.try_get(9)?, r.try_get(10)?)),
        None => None,
    };
    let counters = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, (counters_of(r, 1)?, version_of(r, 7)?))))
        .collect::<sqlx::Result<_>>()?;
    Ok((counters, totals))
}

/// Write the tally's pending changes in one statement.
async fn upsert_deltas(c: &mut PgConnection, tally: &mut Tally) -> sqlx::Result<Upserted> {
    if tally.deltas.is_empty() {
        return Ok((Vec::new(), None));
    }
    let cols = delta_columns(tally);
    let rows = sqlx::query(upsert_counts!())
        .bind(&cols.0)
        .bind(&cols.1)
        .bind(&cols.2)
        .bind(&cols.3)
        .bind(&cols.4)
        .fetch_all(&mut *c)
        .await?;
    upserted(&rows)
}

/// Write `user`'s pending changes now (before a change that sets their counters outright).
async fn flush_user(c: &mut PgConnection, tally: &mut Tally, user: &str) -> sqlx::Result<()> {
    if let Some(d) = tally.deltas.remove(user) {
        let mut one = Tally::default();
        one.deltas.insert(user.to_owned(), d);
        upsert_deltas(c, &mut one).await?;
    }
    Ok(())
}

/// Write every pending change (one statement), and say what the counts of everyone whose counts changed are now.
async fn finish_tally(c: &mut PgConnection, mut tally: Tally) -> sqlx::Result<Vec<CountsChange>> {
    if tally.changed.is_empty() {
        return Ok(Vec::new());
    }
    let written = upsert_deltas(c, &mut tally).await?;
    report_tally(c, tally, written).await
}

/// What everyone whose counts changed has now, from what the upsert of the pending changes returned.
async fn report_tally(
    c: &mut PgConnection,
    mut tally: Tally,
    (written, totals): Upserted,
) -> sqlx::Result<Vec<CountsChange>> {
    if tally.changed.is_empty() {
        return Ok(Vec::new());
    }
    let mut written: std::collections::HashMap<String, (Counters, u64)> = written.into_iter().collect();
    let (total, pruned, broadcast_up_to) = match totals {
        Some(totals) => totals,
        None => sqlx::query_as(TOTALS).fetch_one(&mut *c).await?,
    };
    let mut out = Vec::with_capacity(tally.changed.len());
    for user in std::mem::take(&mut tally.changed) {
        let (counters, version) = match written.remove(&user) {
            Some(written) => written,
            None => {
                let (_, _, counters, version) = counters(c, &user).await?;
                (counters, version)
            }
        };
        out.push(CountsChange { user, counts: counters.counts(total, pruned), broadcast_up_to, version });
    }
    Ok(out)
}

/// Preferences of the recipients of one commit, loaded with one query for all the listed recipients (and one
/// per alias-resolved recipient not among them): the writer knows who muted what without a query per row.
struct Prefs {
    defaults: Arc<HashSet<String>>,
    users: HashMap<String, HashMap<String, TypeSetting>>,
}

impl Prefs {
    async fn load(c: &mut PgConnection, batch: &[Job], defaults: Arc<HashSet<String>>) -> sqlx::Result<Prefs> {
        let mut wanted: Vec<String> = Vec::new();
        for job in batch {
            if let Job::Apply(writes, _) = job {
                for w in writes {
                    if let Write::Notify(NewNotification { recipients: Recipients::Users(users), .. }) = w {
                        wanted.extend(users.iter().map(|u| text(u).into_owned()));
                    }
                }
            }
        }
        let mut prefs = Prefs { defaults, users: HashMap::new() };
        if wanted.is_empty() {
            return Ok(prefs);
        }
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT user_id, type, setting FROM preferences WHERE user_id = ANY($1)")
                .bind(&wanted)
                .fetch_all(&mut *c)
                .await?;
        for (user, kind, setting) in rows {
            prefs.users.entry(user).or_default().insert(kind, setting_from(&setting));
        }
        for u in wanted {
            prefs.users.entry(u).or_default();
        }
        Ok(prefs)
    }

    async fn muted(&mut self, c: &mut PgConnection, user: &str, kind: &str) -> sqlx::Result<bool> {
        if !self.users.contains_key(user) {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT type, setting FROM preferences WHERE user_id = $1")
                    .bind(user)
                    .fetch_all(&mut *c)
                    .await?;
            self.users.insert(user.to_owned(), rows.into_iter().map(|(k, s)| (k, setting_from(&s))).collect());
        }
        let set = self.users[user].get(kind).copied();
        Ok(is_muted(set, &self.defaults, kind))
    }
}

async fn writer_loop(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Job>,
    batch_max: usize,
    listener: Option<Arc<dyn CommitListener>>,
) {
    let mut closers = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64);
        let mut weight = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Close(reply) => closers.push(reply),
                job => {
                    weight += job.weight();
                    batch.push(job);
                }
            }
            if weight < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut writer, batch, listener.as_deref()).await;
        }
        if !closers.is_empty() {
            break;
        }
    }
    rx.close();
    // Anything that raced in after Close is answered by the dropped reply channels.
    while let Ok(job) = rx.try_recv() {
        drop(job);
    }
    let Writer { pool, conn, .. } = writer;
    // Closed, not handed back: sqlx hands a connection back through a ping it does not bound, which a server gone
    // silent since the last commit never answers, and the pool's close waits for it. A goodbye waits for no answer.
    if let Some((conn, _)) = conn {
        let _ = tokio::time::timeout(ACQUIRE_TIMEOUT, conn.close()).await;
    }
    pool.close().await;
    for reply in closers {
        let _ = reply.send(());
    }
}

/// The writer's state between commits.
struct Writer {
    pool: PgPool,
    /// The connection every commit runs on, kept rather than returned to the pool after each commit (sqlx returns
    /// a pooled connection from a spawned task, which the next commit then waits for: about a millisecond per
    /// commit on a busy core), with its server process's id. Closed when a commit finds PostgreSQL unavailable;
    /// dropped without a goodbye when PostgreSQL stopped answering on it.
    conn: Option<(PoolConnection<Postgres>, i32)>,
    /// Whether `applied_events_legacy` was seen empty (it only shrinks), so dedupe skips looking into it.
    legacy_empty: bool,
    muted: MutedDefaults,
    /// Where [`while_working`] connects to look at the commit's server process.
    options: PgConnectOptions,
}

impl Writer {
    async fn run(&mut self, batch: &[Job]) -> Result<(Vec<Answer>, Vec<CountsChange>), StoreError> {
        if self.conn.is_none() {
            let mut conn = self.pool.acquire().await.map_err(store_error)?;
            let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.map_err(store_error)?;
            self.conn = Some((conn, pid));
        }
        let started = std::time::Instant::now();
        let result = {
            let Writer { conn: Some((conn, pid)), muted, legacy_empty, options, .. } = self else { unreachable!() };
            while_working(options, *pid, run(conn, batch, muted, legacy_empty)).await
        };
        let Some(result) = result else {
            // The transaction's fate is unknown (its COMMIT may have landed): the jobs fail as unavailable, so
            // their senders retry, and the retries are deduplicated by their event ids. The connection is
            // dropped, not closed: a goodbye to a silent server could wait as long as the commit did, holding
            // the pool's one slot.
            if let Some((conn, _)) = self.conn.take() {
                drop(conn.detach());
            }
            return Err(StoreError::Unavailable(format!(
                "PostgreSQL stopped answering a commit (nothing for {} s, and its server process was not seen \
                 working on it); its connection is dropped and the next commit opens another",
                started.elapsed().as_secs()
            )));
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            if let Some((mut conn, _)) = self.conn.take() {
                conn.close_on_drop();
            }
        }
        result
    }
}

/// Run the batch in one transaction, then answer every job. When that fails for a reason retrying will not fix,
/// run each job on its own so the bad one fails alone.
async fn commit_batch(writer: &mut Writer, batch: Vec<Job>, listener: Option<&dyn CommitListener>) {
    match writer.run(&batch).await {
        Ok((answers, changes)) => finish(batch, answers, &changes, listener),
        Err(StoreError::Internal(e)) if batch.len() > 1 => {
            tracing::warn!(error = %e, jobs = batch.len(), "inbox batch failed; committing its jobs one by one");
            // Once PostgreSQL is unavailable the jobs left fail with that at once, not each after its own wait.
            let mut unavailable = None;
            for job in batch {
                if let Some(e) = &unavailable {
                    job.fail(StoreError::clone(e));
                    continue;
                }
                match writer.run(std::slice::from_ref(&job)).await {
                    Ok((answers, changes)) => finish(vec![job], answers, &changes, listener),
                    Err(e) => {
                        if let Some(repeats) = COMMIT_FAILED.admit(matches!(e, StoreError::Unavailable(_))) {
                            tracing::error!(error = %e, suppressed = repeats.suppressed(), "inbox commit failed{repeats}");
                        }
                        if matches!(e, StoreError::Unavailable(_)) {
                            unavailable = Some(e.clone());
                        }
                        job.fail(e);
                    }
                }
            }
        }
        Err(e) => {
            if let Some(repeats) = COMMIT_FAILED.admit(matches!(e, StoreError::Unavailable(_))) {
                tracing::error!(error = %e, jobs = batch.len(), suppressed = repeats.suppressed(), "inbox commit failed{repeats}");
            }
            for job in batch {
                job.fail(e.clone());
            }
        }
    }
}

/// After `COMMIT`: tell the listener, in commit order, then answer.
fn finish(batch: Vec<Job>, answers: Vec<Answer>, changes: &[CountsChange], listener: Option<&dyn CommitListener>) {
    if let Some(listener) = listener {
        let applied = batch.iter().zip(&answers).filter_map(|(job, answer)| match (job, answer) {
            (Job::Apply(writes, _), Answer::Apply(outcomes)) => Some((writes.as_slice(), outcomes.as_slice())),
            _ => None,
        });
        let state = batch.iter().zip(&answers).filter_map(|(job, answer)| match (job, answer) {
            (Job::Change(user, _, change, _), Answer::Change(r)) => {
                StateChange::of_change(*change, r).map(|c| (user.as_str(), c))
            }
            (Job::Delete(user, ids, _), Answer::Delete(d)) => {
                StateChange::of_delete(ids, d).map(|c| (user.as_str(), c))
            }
            (Job::MarkAllRead(user, _), Answer::MarkAllRead(r)) => {
                Some((user.as_str(), StateChange::ReadAll { up_to: r.up_to, read_at: r.read_at }))
            }
            (Job::SeenAll(user, _), Answer::SeenAll(r)) => {
                Some((user.as_str(), StateChange::SeenAll { up_to: r.up_to, seen_at: r.seen_at }))
            }
            _ => None,
        });
        super::tell(listener, applied, state, changes);
    }
    for (job, answer) in batch.into_iter().zip(answers) {
        job.answer(answer);
    }
}

/// `BEGIN`, then the locks that order this commit with the other nodes' writers, in one round trip (the simple
/// query protocol runs the statements in order; every value in them is an integer this function formats).
///
/// Per user, not globally: a commit that only touches listed users takes [`WRITE_LOCK`] shared and then one
/// exclusive lock per user (`pg_advisory_xact_lock(USER_LOCKS, user_lock_key(user))`, taken in key order so two
/// commits never wait on each other in a cycle), so nodes writing for different users commit side by side while
/// each user's rows are still written one commit after the other (their ids become visible in increasing order
/// and `prev_id`, read under the lock, is exact). A commit holding a broadcast or alias-addressed recipients
/// (whose users are only known once resolved) takes [`WRITE_LOCK`] exclusive: no other write transaction runs
/// beside it, so broadcast ids and ordinals are drawn in order and a user's `read_all` watermark, read under the
/// shared lock, never overtakes a broadcast still being written. The shared lock comes first: a user lock held
/// while queueing behind a broadcast's exclusive lock could close a cycle.
fn begin_and_lock(batch: &[Job]) -> String {
    format!("BEGIN; {}", ordering_locks(lock_keys(batch)))
}

/// The statement that takes the ordering locks of [`begin_and_lock`] in an open transaction: [`WRITE_LOCK`]
/// shared, then the users' locks `keys` in key order, or [`WRITE_LOCK`] exclusive for `None` or for more than
/// [`MAX_USER_LOCKS`] users. Pruning takes the
/// same locks for the users whose rows it deletes, so it never deletes a row a writer is changing.
fn ordering_locks(keys: Option<Vec<i32>>) -> String {
    use std::fmt::Write as _;
    let Some(keys) = keys.and_then(few_enough) else {
        return format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})");
    };
    // One statement: `Append` runs its inputs in order and `unnest` keeps the array's (sorted) order.
    let mut sql = format!(
        "SELECT count(*) FROM (SELECT pg_advisory_xact_lock_shared({WRITE_LOCK}) UNION ALL \
         SELECT pg_advisory_xact_lock({USER_LOCKS}, k) FROM unnest('{{"
    );
    for (i, k) in keys.iter().enumerate() {
        let _ = write!(sql, "{}{k}", if i == 0 { "" } else { "," });
    }
    sql.push_str("}'::int4[]) k) locks");
    sql
}

/// The second key of `user`'s advisory lock: FNV-1a over the id's UTF-8 bytes, folded to 32 bits. Every node of
/// a cluster must compute the same key for the same user, whatever its version: never change this function.
fn user_lock_key(user: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// `keys` sorted and without repeats, or `None` (take the exclusive lock) when they are over [`MAX_USER_LOCKS`].
fn few_enough(mut keys: Vec<i32>) -> Option<Vec<i32>> {
    keys.sort_unstable();
    keys.dedup();
    (keys.len() <= MAX_USER_LOCKS).then_some(keys)
}

/// The lock keys of the users a commit writes for (sorted, once each), or `None` when it needs the exclusive lock
/// (see [`begin_and_lock`]): a broadcast or an alias among its writes, or more than [`MAX_USER_LOCKS`] users.
fn lock_keys(batch: &[Job]) -> Option<Vec<i32>> {
    let mut keys = Vec::new();
    for job in batch {
        match job {
            Job::Apply(writes, _) => {
                for w in writes {
                    match w {
                        Write::Notify(NewNotification { recipients: Recipients::Users(to), .. })
                        | Write::Purge { users: to, .. } => keys.extend(to.iter().map(|u| user_lock_key(u))),
                        Write::Notify(_) => return None,
                        Write::Alias(_) => {}
                    }
                }
            }
            Job::Change(user, ..)
            | Job::MarkAllRead(user, _)
            | Job::SeenAll(user, _)
            | Job::Delete(user, ..)
            | Job::SetPreferences(user, ..) => keys.push(user_lock_key(user)),
            Job::Probe(_) | Job::Close(_) => {}
        }
    }
    few_enough(keys)
}

/// Whether every job of the batch is targeted notifications only (no broadcast, alias or purge), the shape one
/// event per request takes, which [`write_targeted`] commits in one round trip.
fn targeted_only(batch: &[Job]) -> bool {
    batch.iter().all(|job| match job {
        Job::Apply(writes, _) => writes.iter().all(
            |w| matches!(w, Write::Notify(n) if matches!(n.recipients, Recipients::Users(_)) && n.aliases.is_empty()),
        ),
        _ => false,
    })
}

/// The row `herald_write_targeted_versioned` returns (migrations 6, 8, 9 and 11): per write whether it was fresh; per row of a fresh
/// write its id, prev_id and muted; the changed users' counters as columns (in no particular order); the totals.
struct Targeted {
    fresh: Vec<bool>,
    ids: Option<Vec<i64>>,
    prev_ids: Option<Vec<i64>>,
    muted: Option<Vec<bool>>,
    count_users: Option<Vec<String>>,
    unread: Option<Vec<i64>>,
    unseen: Option<Vec<i64>>,
    read_ord: Option<Vec<i64>>,
    seen_ord: Option<Vec<i64>>,
    unread_adj: Option<Vec<i64>>,
    unseen_adj: Option<Vec<i64>>,
    versions: Option<Vec<i64>>,
    total: Option<i64>,
    pruned: Option<i64>,
    broadcast_up_to: Option<i64>,
}

impl Targeted {
    fn from_row(r: &PgRow) -> sqlx::Result<Targeted> {
        Ok(Targeted {
            fresh: r.try_get("fresh")?,
            ids: r.try_get("ids")?,
            prev_ids: r.try_get("prev_ids")?,
            muted: r.try_get("muted")?,
            count_users: r.try_get("count_users")?,
            unread: r.try_get("unread")?,
            unseen: r.try_get("unseen")?,
            read_ord: r.try_get("read_ord")?,
            seen_ord: r.try_get("seen_ord")?,
            unread_adj: r.try_get("unread_adj")?,
            unseen_adj: r.try_get("unseen_adj")?,
            versions: r.try_get("versions")?,
            total: r.try_get("total")?,
            pruned: r.try_get("pruned")?,
            broadcast_up_to: r.try_get("broadcast_up_to")?,
        })
    }
}

/// Commit a batch of targeted notifications in one round trip whatever its size: one call of
/// `herald_write_targeted_versioned` (migrations 6, 8, 9 and 11) in autocommit, which takes the locks [`begin_and_lock`] describes,
/// records the dedupe keys, draws the ids, reads the preferences, upserts the counters (moving the chain heads and
/// returning the ones they replace), inserts the rows, and answers once its transaction committed (sqlx reads up
/// to `ReadyForQuery`, which PostgreSQL sends after the implicit commit). The values go as one array per column:
/// the written columns once per write, the recipients once per row.
async fn write_targeted(
    c: &mut PgConnection,
    batch: &[Job],
    locks: Vec<i32>,
    now: DateTime<Utc>,
    muted_by_default: &HashSet<String>,
) -> sqlx::Result<(Vec<Answer>, Vec<CountsChange>)> {
    let writes: Vec<&NewNotification> = batch
        .iter()
        .flat_map(|job| match job {
            Job::Apply(writes, _) => writes.as_slice(),
            _ => &[],
        })
        .filter_map(|w| match w {
            Write::Notify(n) => Some(n),
            _ => None,
        })
        .collect();
    fn users(n: &NewNotification) -> &[String] {
        match &n.recipients {
            Recipients::Users(users) => users,
            _ => unreachable!("targeted_only"),
        }
    }
    // Each write's row as stored (texts through `text`, once per write); rows repeat it per recipient.
    let stored_as: Vec<Notification> = writes.iter().map(|n| as_stored(n.stored(0, 0, None, false, now))).collect();
    let column = |f: fn(&Notification) -> Option<&str>| -> Vec<Option<&str>> { stored_as.iter().map(f).collect() };
    let mut row_writes: Vec<i32> = Vec::new();
    let mut row_users: Vec<String> = Vec::new();
    for (i, n) in writes.iter().enumerate() {
        for u in users(n) {
            row_writes.push(i as i32 + 1);
            row_users.push(text(u).into_owned());
        }
    }
    let defaults: Vec<&str> = muted_by_default.iter().map(String::as_str).collect();
    let r = sqlx::query(
        "SELECT * FROM herald_write_targeted_versioned($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                                             $17, $18)",
    )
    .bind(WRITE_LOCK)
    .bind(USER_LOCKS)
    .bind(&locks)
    .bind(now)
    .bind(&defaults)
    .bind(writes.iter().map(|n| &n.dedupe_key.0[..]).collect::<Vec<_>>())
    .bind(writes.iter().map(|n| text(&n.event_id)).collect::<Vec<_>>())
    .bind(column(|n| Some(n.kind.as_str())))
    .bind(column(|n| Some(n.title.as_str())))
    .bind(column(|n| Some(n.content.as_str())))
    .bind(column(|n| Some(n.event_type.as_str())))
    .bind(column(|n| n.source.as_deref()))
    .bind(column(|n| n.related_object.as_ref().map(|r| r.kind.as_str())))
    .bind(column(|n| n.related_object.as_ref().map(|r| r.id.as_str())))
    .bind(writes.iter().map(|n| n.data.get()).collect::<Vec<_>>())
    .bind(writes.iter().map(|n| n.body.get()).collect::<Vec<_>>())
    .bind(&row_writes)
    .bind(&row_users)
    .fetch_one(&mut *c)
    .await?;
    let r = Targeted::from_row(&r)?;
    if r.fresh.len() != writes.len() {
        return Err(sqlx::Error::Protocol(format!("{} writes, {} fresh flags", writes.len(), r.fresh.len())));
    }
    // The fresh writes' rows, in order: users from `row_users`, the rest from the function.
    let (ids, prev_ids, muted) =
        (r.ids.unwrap_or_default(), r.prev_ids.unwrap_or_default(), r.muted.unwrap_or_default());
    let mut rows = ids.into_iter().zip(prev_ids).zip(muted);
    let mut recipients = row_users.into_iter();
    let mut outcomes = Vec::with_capacity(writes.len());
    for ((n, fresh), as_stored) in writes.iter().zip(&r.fresh).zip(stored_as) {
        let count = users(n).len();
        let to = recipients.by_ref().take(count);
        if !fresh {
            to.for_each(drop);
            outcomes.push(WriteOutcome::Duplicate);
            continue;
        }
        let mut stored = Vec::with_capacity(count);
        for user in to {
            let ((id, prev_id), muted) = rows
                .next()
                .ok_or_else(|| sqlx::Error::Protocol("herald_write_targeted_versioned returned fewer rows".into()))?;
            stored.push(Notification { id, prev_id, user_id: Some(user), muted, ..as_stored.clone() });
        }
        outcomes.push(WriteOutcome::Stored(stored));
    }
    let (total, pruned, broadcast_up_to) =
        (r.total.unwrap_or(0), r.pruned.unwrap_or(0), r.broadcast_up_to.unwrap_or(0));
    let counter = |v: Option<Vec<i64>>| v.unwrap_or_default().into_iter();
    let changes = r
        .count_users
        .unwrap_or_default()
        .into_iter()
        .zip(counter(r.unread))
        .zip(counter(r.unseen))
        .zip(counter(r.read_ord))
        .zip(counter(r.seen_ord))
        .zip(counter(r.unread_adj))
        .zip(counter(r.unseen_adj))
        .zip(counter(r.versions))
        .map(|(((((((user, unread), unseen), read_ord), seen_ord), unread_adj), unseen_adj), version)| {
            let counters = Counters { unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj };
            let version = version.max(0) as u64;
            CountsChange { user, counts: counters.counts(total, pruned), broadcast_up_to, version }
        })
        .collect();
    // Back to jobs: each job's writes are consecutive in `writes`, in job order.
    let mut outcomes = outcomes.into_iter();
    let answers = batch
        .iter()
        .map(|job| match job {
            Job::Apply(writes, _) => Answer::Apply(outcomes.by_ref().take(writes.len()).collect()),
            _ => unreachable!("targeted_only"),
        })
        .collect();
    Ok((answers, changes))
}

async fn run(
    conn: &mut PgConnection,
    batch: &[Job],
    muted: &MutedDefaults,
    legacy_empty: &mut bool,
) -> Result<(Vec<Answer>, Vec<CountsChange>), StoreError> {
    let now = now_millis();
    if !*legacy_empty {
        // Nothing adds to that table: once seen empty, it stays empty.
        *legacy_empty = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM applied_events_legacy)")
            .fetch_one(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    if *legacy_empty && targeted_only(batch) {
        let Some(locks) = lock_keys(batch) else {
            // Too many users for a lock each: the same one call, in a transaction that holds the exclusive lock
            // first (the function's own shared request is then granted at once) and names no user lock. Not row
            // by row: a backlog of single-recipient events to different users fills whole commits.
            let mut tx = conn
                .begin_with(AssertSqlSafe(format!("BEGIN; {}", ordering_locks(None))))
                .await
                .map_err(store_error)?;
            let written = write_targeted(&mut tx, batch, Vec::new(), now, &muted.get()).await.map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            return Ok(written);
        };
        return write_targeted(conn, batch, locks, now, &muted.get()).await.map_err(store_error);
    }
    // Ordered with every other node's writer (see `begin_and_lock`); the locks are released by COMMIT/ROLLBACK.
    let mut tx = conn.begin_with(AssertSqlSafe(begin_and_lock(batch))).await.map_err(store_error)?;
    let answers = async {
        let mut tally = Tally::default();
        let mut prefs = Prefs::load(&mut tx, batch, muted.get()).await?;
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            answers.push(match job {
                Job::Apply(writes, _) => {
                    let mut outcomes = Vec::with_capacity(writes.len());
                    for w in writes {
                        outcomes.push(apply_one(&mut tx, w, now, &mut tally, &mut prefs, *legacy_empty).await?);
                    }
                    Answer::Apply(outcomes)
                }
                Job::Change(user, ids, change, _) => {
                    let mut changed = Vec::with_capacity(ids.len());
                    for &id in ids {
                        changed.push(change_one(&mut tx, &text(user), id, *change, now, &mut tally).await?);
                    }
                    Answer::Change(changed)
                }
                Job::MarkAllRead(user, _) => {
                    Answer::MarkAllRead(mark_all_read(&mut tx, &text(user), now, &mut tally).await?)
                }
                Job::SeenAll(user, _) => Answer::SeenAll(seen_all(&mut tx, &text(user), now, &mut tally).await?),
                Job::Delete(user, ids, _) => {
                    let mut deleted = Vec::with_capacity(ids.len());
                    for &id in ids {
                        deleted.push(delete(&mut tx, &text(user), id, now, &mut tally).await?);
                    }
                    Answer::Delete(deleted)
                }
                Job::SetPreferences(user, change, max_types, _) => {
                    let user = text(user);
                    let after = change.clone().apply(preferences_of(&mut tx, &user).await?);
                    Answer::SetPreferences(if after.len() > *max_types {
                        None
                    } else {
                        set_preferences(&mut tx, &user, change, &after).await?;
                        prefs.users.remove(&*user);
                        Some(after)
                    })
                }
                Job::Probe(_) => {
                    sqlx::query(
                        "INSERT INTO store_state (name, value) VALUES ('probe', $1)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )
                    .bind(now.timestamp_millis())
                    .execute(&mut *tx)
                    .await?;
                    Answer::Probe
                }
                Job::Close(_) => unreachable!("the writer keeps Close out of batches"),
            });
        }
        let changes = finish_tally(&mut tx, tally).await?;
        sqlx::Result::Ok((answers, changes))
    }
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    Ok(answers)
}

async fn apply_one(
    c: &mut PgConnection,
    w: &Write,
    now: DateTime<Utc>,
    tally: &mut Tally,
    prefs: &mut Prefs,
    legacy_empty: bool,
) -> sqlx::Result<WriteOutcome> {
    let Some(dedupe_key) = w.dedupe_key() else {
        return match w {
            Write::Alias(a) => set_alias(c, a, now).await.map(|()| WriteOutcome::AliasSet),
            Write::Purge { users, .. } => purge(c, users, tally, prefs).await,
            Write::Notify(_) => unreachable!("a notification has a dedupe key"),
        };
    };
    // Recipients behind aliases are resolved before anything is written: an unknown alias writes nothing, not
    // even the dedupe key, so the same event succeeds once the alias is known.
    let mut resolved = None;
    if let Write::Notify(NewNotification { recipients: Recipients::Alias { kind, aliases }, .. }) = w {
        let mut users = Vec::with_capacity(aliases.len());
        for alias in aliases {
            let user: Option<String> = sqlx::query_scalar("SELECT user_id FROM aliases WHERE kind = $1 AND alias = $2")
                .bind(text(kind))
                .bind(text(alias))
                .fetch_optional(&mut *c)
                .await?;
            match user {
                Some(u) if !users.contains(&u) => users.push(u),
                Some(_) => {}
                None => {
                    // Already applied (before the user and their aliases were erased, say): a duplicate, not a
                    // recipient to wait for.
                    let applied: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dedupe_keys WHERE key = $1)")
                        .bind(&dedupe_key.0[..])
                        .fetch_one(&mut *c)
                        .await?;
                    if applied {
                        return Ok(WriteOutcome::Duplicate);
                    }
                    return Ok(WriteOutcome::Unresolved { kind: kind.clone(), alias: alias.clone() });
                }
            }
        }
        resolved = Some(users);
    }
    let fresh = sqlx::query("INSERT INTO dedupe_keys (key, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(&dedupe_key.0[..])
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected();
    if fresh == 0 {
        return Ok(WriteOutcome::Duplicate);
    }
    // Applied before ids were scoped (migration 2): a duplicate, as it was then, until its row expires. Nothing
    // adds to that table, so once it is empty the lookup is skipped.
    let legacy: bool = !legacy_empty
        && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM applied_events_legacy WHERE event_id = $1)")
            .bind(text(w.event_id()))
            .fetch_one(&mut *c)
            .await?;
    if legacy {
        return Ok(WriteOutcome::Duplicate);
    }
    match w {
        Write::Notify(n) => {
            for a in &n.aliases {
                set_alias(c, a, now).await?;
            }
            let stored = match (&n.recipients, &resolved) {
                (Recipients::Everyone, _) => vec![insert(c, n, None, false, now).await?],
                (Recipients::Users(users), _) | (Recipients::Alias { .. }, Some(users)) => {
                    let mut stored = Vec::with_capacity(users.len());
                    for u in users {
                        let u = text(u);
                        let muted = prefs.muted(c, &u, &n.kind).await?;
                        if !muted {
                            tally.add(&u, 1, 1, 0, 0);
                        }
                        stored.push(insert(c, n, Some(&u), muted, now).await?);
                    }
                    stored
                }
                (Recipients::Alias { .. }, None) => unreachable!("aliases are resolved above"),
            };
            Ok(WriteOutcome::Stored(stored))
        }
        Write::Alias(_) | Write::Purge { .. } => unreachable!("not deduped, handled above"),
    }
}

/// Erase `users`' inboxes: their rows, broadcast read state, floors, aliases, preferences and counters.
async fn purge(
    c: &mut PgConnection,
    users: &[String],
    tally: &mut Tally,
    prefs: &mut Prefs,
) -> sqlx::Result<WriteOutcome> {
    let mut rows = 0u64;
    for u in users {
        let u = text(u);
        rows += sqlx::query("DELETE FROM notifications WHERE user_id = $1")
            .bind(&*u)
            .execute(&mut *c)
            .await?
            .rows_affected();
        for sql in [
            "DELETE FROM broadcast_state WHERE user_id = $1",
            "DELETE FROM user_state WHERE user_id = $1",
            "DELETE FROM pruned_floors WHERE user_id = $1",
            "DELETE FROM aliases WHERE user_id = $1",
            "DELETE FROM preferences WHERE user_id = $1",
            "DELETE FROM inbox_counts WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(&*u).execute(&mut *c).await?;
        }
        tally.deltas.remove(&*u);
        tally.touch(&u);
        prefs.users.remove(&*u);
    }
    Ok(WriteOutcome::Purged { rows })
}

async fn set_alias(c: &mut PgConnection, a: &AliasRecord, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO aliases (kind, alias, user_id, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, alias) DO UPDATE SET user_id = excluded.user_id, updated_at = excluded.updated_at",
    )
    .bind(text(&a.kind))
    .bind(text(&a.alias))
    .bind(text(&a.user))
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// What `user` set, by type.
async fn preferences_of(c: &mut PgConnection, user: &str) -> sqlx::Result<BTreeMap<String, TypeSetting>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT type, setting FROM preferences WHERE user_id = $1")
        .bind(user)
        .fetch_all(&mut *c)
        .await?;
    Ok(rows.into_iter().map(|(kind, setting)| (kind, setting_from(&setting))).collect())
}

/// Write a change of `user`'s preferences: a replacement writes them all (`after`), a merge only the types it
/// names (one statement for the set ones, one for those back to the default).
async fn set_preferences(
    c: &mut PgConnection,
    user: &str,
    change: &PreferencesChange,
    after: &BTreeMap<String, TypeSetting>,
) -> sqlx::Result<()> {
    let (set, forgotten): (Vec<(&String, TypeSetting)>, Vec<String>) = match change {
        PreferencesChange::Replace(_) => {
            sqlx::query("DELETE FROM preferences WHERE user_id = $1").bind(user).execute(&mut *c).await?;
            (after.iter().map(|(k, v)| (k, *v)).collect(), Vec::new())
        }
        PreferencesChange::Merge(changes) => (
            changes.iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect(),
            changes.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| text(k).into_owned()).collect(),
        ),
    };
    if !forgotten.is_empty() {
        sqlx::query("DELETE FROM preferences WHERE user_id = $1 AND type = ANY($2)")
            .bind(user)
            .bind(forgotten)
            .execute(&mut *c)
            .await?;
    }
    if !set.is_empty() {
        let kinds: Vec<String> = set.iter().map(|(k, _)| text(k).into_owned()).collect();
        let settings: Vec<&str> = set.iter().map(|(_, s)| setting_name(*s)).collect();
        sqlx::query(
            "INSERT INTO preferences (user_id, type, setting) SELECT $1, * FROM UNNEST($2::text[], $3::text[])
             ON CONFLICT (user_id, type) DO UPDATE SET setting = excluded.setting",
        )
        .bind(user)
        .bind(kinds)
        .bind(settings)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

async fn insert(
    c: &mut PgConnection,
    n: &NewNotification,
    user: Option<&str>,
    muted: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<Notification> {
    // The row as stored (texts through `text` once), bound as it is and returned with the id and prev_id.
    let mut row = as_stored(n.stored(0, 0, user.map(|u| text(u).into_owned()), muted, now));
    // A broadcast takes the next ordinal (see `Counters`): every user's counts grow by one without a row each.
    let ord: Option<i64> = match row.user_id {
        Some(_) => None,
        None => Some(
            sqlx::query_scalar(
                "INSERT INTO store_state (name, value) VALUES ('broadcast_ord', 1)
                 ON CONFLICT (name) DO UPDATE SET value = store_state.value + 1 RETURNING value",
            )
            .fetch_one(&mut *c)
            .await?,
        ),
    };
    // prev_id is computed by the INSERT itself; the write lock makes that read-then-insert race-free.
    let ids = sqlx::query(INSERT)
        .bind(row.user_id.as_deref())
        .bind(text(&n.event_id))
        .bind(&row.kind)
        .bind(&row.title)
        .bind(&row.content)
        .bind(&row.event_type)
        .bind(row.source.as_deref())
        .bind(row.related_object.as_ref().map(|r| r.kind.as_str()))
        .bind(row.related_object.as_ref().map(|r| r.id.as_str()))
        .bind(n.data.get())
        .bind(n.body.get())
        .bind(now)
        .bind(muted)
        .bind(ord)
        .fetch_one(&mut *c)
        .await?;
    (row.id, row.prev_id) = (ids.try_get(0)?, ids.try_get(1)?);
    Ok(row)
}

/// The notification `id` as `user` sees it, or `None` when it is not in their inbox.
async fn visible(c: &mut PgConnection, user: &str, id: i64) -> sqlx::Result<Option<Notification>> {
    sqlx::query(VISIBLE.as_str())
        .bind(user)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(notification)
        .transpose()
}

/// Count the move of notification `n` (as `user` saw it) to `after`.
async fn tally_change(
    c: &mut PgConnection,
    tally: &mut Tally,
    user: &str,
    n: &Notification,
    after: RowState,
) -> sqlx::Result<()> {
    let watermarks = match n.user_id {
        Some(_) => None,
        None => Some(
            sqlx::query_as(
                "SELECT COALESCE((SELECT read_all_up_to FROM user_state WHERE user_id = $1), 0),
                        COALESCE((SELECT seen_all_up_to FROM user_state WHERE user_id = $1), 0)",
            )
            .bind(user)
            .fetch_one(&mut *c)
            .await?,
        ),
    };
    tally.change(user, n.id, watermarks, RowState::of(n), after);
    Ok(())
}

async fn change_one(
    c: &mut PgConnection,
    user: &str,
    id: i64,
    change: Change,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> sqlx::Result<Changed> {
    let Some(n) = visible(c, user, id).await? else {
        return Ok(None);
    };
    let noop = match change {
        Change::Read => n.read_at.is_some(),
        Change::Unread => n.read_at.is_none(),
        Change::Archive => n.archived_at.is_some(),
        Change::Unarchive => n.archived_at.is_none(),
    };
    if noop {
        return Ok(Some((n, false)));
    }
    let targeted = n.user_id.is_some();
    // `$3` (now) is typed in every statement, so one parameter list fits them all.
    let set = match (change, targeted) {
        (Change::Read, true) => "read_at = $3, seen_at = COALESCE(seen_at, $3)",
        (Change::Read, false) => "read_at = $3, seen_at = COALESCE(seen_at, $3), unread = FALSE",
        (Change::Unread, true) => "read_at = NULLIF($3::timestamptz, $3)",
        (Change::Unread, false) => "read_at = NULLIF($3::timestamptz, $3), unread = TRUE",
        (Change::Archive, _) => "archived_at = $3",
        (Change::Unarchive, _) => "archived_at = NULLIF($3::timestamptz, $3)",
    };
    if targeted {
        sqlx::query(AssertSqlSafe(format!("UPDATE notifications SET {set} WHERE user_id = $1 AND id = $2")))
            .bind(user)
            .bind(id)
            .bind(now)
            .execute(&mut *c)
            .await?;
    } else {
        // A new state row starts empty: its read and seen state still come from the watermarks.
        sqlx::query("INSERT INTO broadcast_state (user_id, notification_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(id)
            .execute(&mut *c)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE broadcast_state SET {set} WHERE user_id = $1 AND notification_id = $2"
        )))
        .bind(user)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    // Pruning takes this user's lock, so the row is still there; one an operator deleted by hand meanwhile is
    // not found, as it would have been a moment later — never a panic of the writer.
    let Some(after) = visible(c, user, id).await? else {
        return Ok(None);
    };
    tally_change(c, tally, user, &n, RowState::of(&after)).await?;
    Ok(Some((after, true)))
}

async fn mark_all_read(
    c: &mut PgConnection,
    user: &str,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> sqlx::Result<ReadAll> {
    flush_user(c, tally, user).await?;
    tally.touch(user);
    sqlx::query(
        "UPDATE notifications SET read_at = $2, seen_at = COALESCE(seen_at, $2) WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user)
    .bind(now)
    .execute(&mut *c)
    .await?;
    let (targeted, broadcast): (i64, i64) = sqlx::query_as(LATEST).bind(user).fetch_one(&mut *c).await?;
    let up_to = targeted.max(broadcast);
    sqlx::query(
        "INSERT INTO user_state (user_id, read_all_up_to, read_all_at, seen_all_up_to, seen_all_at)
         VALUES ($1, $2, $3, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET read_all_up_to = excluded.read_all_up_to,
             read_all_at = excluded.read_all_at, seen_all_up_to = excluded.seen_all_up_to,
             seen_all_at = excluded.seen_all_at",
    )
    .bind(user)
    .bind(up_to)
    .bind(now)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE broadcast_state SET unread = FALSE WHERE user_id = $1 AND unread")
        .bind(user)
        .execute(&mut *c)
        .await?;
    // Everything is read, so seen: every counter restarts from the watermarks (see `Counters`).
    sqlx::query(
        "INSERT INTO inbox_counts (user_id, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj)
         SELECT $1, 0, 0, o, o, 0, 0
         FROM (SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0) AS o) t
         ON CONFLICT (user_id) DO UPDATE SET unread = 0, unseen = 0, read_ord = excluded.read_ord,
             seen_ord = excluded.seen_ord, unread_adj = 0, unseen_adj = 0",
    )
    .bind(user)
    .execute(&mut *c)
    .await?;
    Ok(ReadAll { up_to, read_at: now })
}

async fn seen_all(c: &mut PgConnection, user: &str, now: DateTime<Utc>, tally: &mut Tally) -> sqlx::Result<SeenAll> {
    flush_user(c, tally, user).await?;
    tally.touch(user);
    sqlx::query("UPDATE notifications SET seen_at = $2 WHERE user_id = $1 AND seen_at IS NULL")
        .bind(user)
        .bind(now)
        .execute(&mut *c)
        .await?;
    let (targeted, broadcast): (i64, i64) = sqlx::query_as(LATEST).bind(user).fetch_one(&mut *c).await?;
    let up_to = targeted.max(broadcast);
    sqlx::query(
        "INSERT INTO user_state (user_id, read_all_up_to, read_all_at, seen_all_up_to, seen_all_at)
         VALUES ($1, 0, NULL, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET seen_all_up_to = excluded.seen_all_up_to,
             seen_all_at = excluded.seen_all_at",
    )
    .bind(user)
    .bind(up_to)
    .bind(now)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "INSERT INTO inbox_counts (user_id, unseen, seen_ord, unseen_adj)
         SELECT $1, 0, o, 0
         FROM (SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0) AS o) t
         ON CONFLICT (user_id) DO UPDATE SET unseen = 0, seen_ord = excluded.seen_ord, unseen_adj = 0",
    )
    .bind(user)
    .execute(&mut *c)
    .await?;
    Ok(SeenAll { up_to, seen_at: now })
}

async fn delete(
    c: &mut PgConnection,
    user: &str,
    id: i64,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> sqlx::Result<bool> {
    let Some(n) = visible(c, user, id).await? else {
        return Ok(false);
    };
    if n.user_id.is_some() {
        let deleted = sqlx::query("DELETE FROM notifications WHERE user_id = $1 AND id = $2")
            .bind(user)
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected();
        if deleted == 0 {
            // Deleted meanwhile by a transaction that does not take the user's lock (an operator's own
            // `DELETE`; pruning takes it): not found, and not taken out of the counters a second time.
            return Ok(false);
        }
    } else {
        sqlx::query(
            "INSERT INTO broadcast_state (user_id, notification_id, read_at, deleted) VALUES ($1, $2, $3, TRUE)
             ON CONFLICT (user_id, notification_id) DO UPDATE SET deleted = TRUE",
        )
        .bind(user)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    // Gone counts like hidden: nothing of it counts any more.
    let gone = RowState { hidden: true, ..RowState::of(&n) };
    tally_change(c, tally, user, &n, gone).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Settings;
    use crate::inbox::contract::draft;
    use crate::postgres_connections::testing::SilentLink;
    use sqlx::postgres::PgPoolOptions;

    /// A fresh database on the server `HERALD_TEST_POSTGRES_URL` names (advisory locks are per database: tests
    /// that hold the writers' locks must not meet another test's writers), with a fresh schema in it.
    struct TestDb {
        url: String,
        database: String,
        options: PgConnectOptions,
        admin: PgPool,
        schema: String,
    }

    impl TestDb {
        /// `None`, saying why, when no PostgreSQL is configured (`scripts/test.sh` starts one and sets the URL).
        async fn create(test: &str) -> Option<TestDb> {
            let Ok(url) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
                assert!(std::env::var_os("CI").is_none(), "{test}: CI must run it; set HERALD_TEST_POSTGRES_URL");
                eprintln!("SKIPPED {test}: HERALD_TEST_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL)");
                return None;
            };
            let database = format!("herald_test_{:016x}", rand::random::<u64>());
            let mut server = PgConnection::connect(&url).await.expect("connect to PostgreSQL");
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut server).await.unwrap();
            server.close().await.unwrap();
            let options = PgConnectOptions::from_str(&url).unwrap().database(&database);
            let admin =
                PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await.expect("connect to it");
            let schema = format!("herald_test_{:016x}", rand::random::<u64>());
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
            let options = options.options([("search_path", schema.as_str())]);
            Some(TestDb { url, database, options, admin, schema })
        }

        async fn open(&self, listener: Option<Arc<dyn CommitListener>>) -> PostgresStore {
            self.open_with(&Settings::defaults().store, listener).await
        }

        async fn open_with(
            &self,
            settings: &StoreSettings,
            listener: Option<Arc<dyn CommitListener>>,
        ) -> PostgresStore {
            PostgresStore::connect(self.options.clone(), settings, listener).await.unwrap()
        }

        /// A store that reaches this database through a link the test can silence ([`SilentLink`]).
        async fn open_through_link(&self, settings: &StoreSettings) -> (SilentLink, PostgresStore) {
            let link = SilentLink::to((self.options.get_host().to_owned(), self.options.get_port())).await;
            let options = self.options.clone().host("127.0.0.1").port(link.addr.port());
            (link, PostgresStore::connect(options, settings, None).await.unwrap())
        }

        /// An operator's lock on the notifications table, which every read and write of them waits behind
        /// until the transaction ends.
        async fn lock_notifications(&self) -> sqlx::Transaction<'_, Postgres> {
            let mut lock = self.admin.begin().await.unwrap();
            let table = format!("LOCK TABLE {}.notifications IN ACCESS EXCLUSIVE MODE", self.schema);
            sqlx::query(AssertSqlSafe(table)).execute(&mut *lock).await.unwrap();
            lock
        }

        /// Silence `link` inside `work`'s statement, once PostgreSQL shows it waiting behind
        /// [`TestDb::lock_notifications`]; the lock ends after, and what the server then answers goes into the
        /// silence. The caller gives `work` up (its caller's timeout) or awaits what it makes of it.
        async fn silence_inside<F: std::future::Future<Output: std::fmt::Debug>>(
            &self,
            link: &SilentLink,
            work: std::pin::Pin<&mut F>,
        ) {
            let lock = self.lock_notifications().await;
            link.silence_once_waiting(&self.options, work).await;
            lock.rollback().await.unwrap();
        }

        async fn drop_database(self) {
            self.admin.close().await;
            let mut server = PgConnection::connect(&self.url).await.expect("connect to PostgreSQL");
            sqlx::query(AssertSqlSafe(format!("DROP DATABASE {} WITH (FORCE)", self.database)))
                .execute(&mut server)
                .await
                .unwrap();
            server.close().await.unwrap();
        }
    }

    /// A node that cannot reach PostgreSQL at start says where and why, not the pool's "timed out"; never the
    /// password.
    #[tokio::test]
    async fn an_unreachable_database_at_start_is_named_with_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener); // nothing listens there now
        let url = format!("postgres://herald:hunter2@127.0.0.1:{port}/inbox");
        let e = match PostgresStore::open(&url, &Settings::defaults().store, None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("connected to a closed port"),
        };
        assert!(e.contains(&format!("127.0.0.1:{port}/inbox")) && e.to_lowercase().contains("refused"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("pool timed out"), "{e}");
    }

    /// A session's opening read cut short at any point (its timeout, the socket closing) leaves no pooled
    /// connection inside a transaction. sqlx 0.9's `begin()` cut between sending `BEGIN` and its answer hands
    /// the connection back to the pool in that transaction without knowing it: the next reads on it ran inside,
    /// holding back vacuum, and the next opening's `SET TRANSACTION` failed ("must be called before any query"),
    /// closing a session with 1011 (the fault review saw it once).
    #[tokio::test]
    async fn an_opening_cut_at_any_point_leaves_no_connection_inside_a_transaction() {
        use std::future::Future;
        use std::pin::pin;
        let Some(db) = TestDb::create("opening_cut").await else { return };
        let settings = StoreSettings { read_connections: 1, ..Settings::defaults().store };
        let store = db.open_with(&settings, None).await;
        store.apply(vec![Write::Notify(draft("cut-1", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let in_transaction = async || -> i64 {
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND state LIKE 'idle in transaction%'",
            )
            .fetch_one(&db.admin)
            .await
            .unwrap()
        };
        // Cut after 1, 2, … polls, each after the answer to the last wait had time to arrive: every point at
        // which the read waits on PostgreSQL, whatever their number.
        for polls in 1..=8 {
            {
                let mut opening = pin!(store.opening("u"));
                let mut finished = false;
                for _ in 0..polls {
                    if opening.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready() {
                        finished = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if finished {
                    break;
                }
            }
            // The pool takes a dropped connection back on a task of its own.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(in_transaction().await, 0, "cut after {polls} polls: a pooled connection is in a transaction");
            let (_, counts, _) = store.opening("u").await.unwrap_or_else(|e| panic!("after a cut at {polls}: {e}"));
            assert_eq!(counts.unread, 1);
            store.counts("u").await.unwrap();
        }
        store.close().await;
        db.drop_database().await;
    }

    /// The server stops a replay page at its bytes: the rows past the one whose body reaches them are never sent
    /// (before, a page of 500 rows with large bodies crossed the wire whole and was cut on arrival).
    #[tokio::test]
    async fn a_replay_page_is_cut_at_its_bytes_by_the_server() {
        let Some(db) = TestDb::create("page_bytes").await else { return };
        let store = db.open(None).await;
        // Bodies PostgreSQL cannot compress (stored at their size): pseudo-random hex.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..5 {
            let pad: String = (0..10_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from_digit((x % 16) as u32, 16).unwrap()
                })
                .collect();
            let mut d = draft(&format!("pb-{i}"), Recipients::Users(vec!["pb".into()]));
            d.body = Arc::from(RawValue::from_string(format!(r#"{{"pad":"{pad}"}}"#)).unwrap());
            store.apply(vec![Write::Notify(d)]).await.unwrap();
        }
        let sent = |bytes: i64| {
            sqlx::query(AFTER.as_str())
                .bind("pb")
                .bind(0i64)
                .bind(500i64)
                .bind(i64::MAX)
                .bind(bytes)
                .fetch_all(&store.readers)
        };
        // 10,010-byte bodies: the second reaches 15,000, so the server sends two rows.
        assert_eq!(sent(15_000).await.unwrap().len(), 2);
        assert_eq!(sent(1).await.unwrap().len(), 1, "one row always");
        assert_eq!(sent(i64::MAX).await.unwrap().len(), 5);
        // Through the store: the same cut, the page as the session reads it.
        let page = store
            .after("pb", Position::default(), PageLimit { rows: 500, bytes: 15_000 }, std::time::Instant::now())
            .await
            .unwrap()
            .items;
        assert_eq!(page.len(), 2);
        store.close().await;
        db.drop_database().await;
    }

    /// A row's chain head is found through an index for both chains, however large the table: the lookup's plan,
    /// with sequential scans priced out, names the user index for a targeted row and the broadcasts' index for a
    /// broadcast (it walked the primary key, or scanned the table, filtering on `IS NOT DISTINCT FROM`).
    #[tokio::test]
    async fn a_new_rows_chain_head_is_read_through_its_chains_index() {
        let Some(db) = TestDb::create("chain_head_plan").await else { return };
        let store = db.open(None).await;
        let mut c = store.readers.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off").execute(&mut *c).await.unwrap();
        for (user, index) in [(Some("ana"), "notifications_by_user"), (None, "notifications_broadcasts")] {
            let plan: Vec<String> = sqlx::query_scalar(concat!("EXPLAIN SELECT ", chain_head!()))
                .bind(user)
                .fetch_all(&mut *c)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(plan.contains(index) && !plan.contains("notifications_pkey"), "{user:?}: {plan}");
        }
        drop(c);
        store.close().await;
        db.drop_database().await;
    }

    /// Requests are bounded by `store.statement_timeout_secs`; migrations are not (a long one would roll back and
    /// stop the node at every start, and a node waiting for another's migration would give up).
    #[tokio::test]
    async fn migrations_run_without_the_requests_statement_timeout() {
        let Some(db) = TestDb::create("migration_timeout").await else { return };
        let timeout = async |pool: &PgPool| -> String {
            sqlx::query_scalar("SHOW statement_timeout").fetch_one(pool).await.unwrap()
        };
        let settings = StoreSettings { statement_timeout_secs: 7, ..Settings::defaults().store };
        let store = db.open_with(&settings, None).await;
        assert_eq!(timeout(&store.readers).await, "7s", "store.statement_timeout_secs");
        let idle: String =
            sqlx::query_scalar("SHOW idle_in_transaction_session_timeout").fetch_one(&store.readers).await.unwrap();
        assert_eq!(idle, "7s", "an idle transaction is ended as soon");
        let migrating = migration_pool().connect_with(db.options.clone()).await.unwrap();
        assert_eq!(timeout(&migrating).await, "0");
        store.close().await;
        migrating.close().await;
        db.drop_database().await;
    }

    /// Two nodes' commits of one user's counts reach a third node's sessions in any order (over Redis): each
    /// write of the counts carries a higher version than the one before, whichever node wrote it and whatever
    /// wrote it (a notification stored, a read, read all, seen all), and a snapshot carries the version of the
    /// counts it read — what lets a session keep the newest (migration 9).
    #[tokio::test]
    async fn every_write_of_a_users_counts_has_a_higher_version_whichever_node_wrote_it() {
        use crate::inbox::contract::CountsRecorder;
        let Some(db) = TestDb::create("counts_versions").await else { return };
        let (heard_a, heard_b) = (Arc::new(CountsRecorder::default()), Arc::new(CountsRecorder::default()));
        let a = db.open(Some(heard_a.clone())).await;
        let b = db.open(Some(heard_b.clone())).await;
        let last = |r: &CountsRecorder| r.1.lock().unwrap().iter().rev().find(|(u, _)| u == "u").map(|(_, v)| *v);
        let mut versions = Vec::new();
        let stored = a.apply(vec![Write::Notify(draft("v-1", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let WriteOutcome::Stored(rows) = &stored[0] else { panic!("{stored:?}") };
        versions.push(last(&heard_a).unwrap());
        b.change("u", rows[0].id, Change::Read).await.unwrap().unwrap();
        versions.push(last(&heard_b).unwrap());
        a.apply(vec![Write::Notify(draft("v-2", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        versions.push(last(&heard_a).unwrap());
        b.seen_all("u").await.unwrap();
        versions.push(last(&heard_b).unwrap());
        a.mark_all_read("u").await.unwrap();
        versions.push(last(&heard_a).unwrap());
        assert!(versions.windows(2).all(|w| w[0] < w[1]) && versions[0] > 0, "{versions:?}");
        let (_, counts, version) = b.opening("u").await.unwrap();
        assert_eq!((counts.unread, version), (0, *versions.last().unwrap()), "the snapshot's counts and their version");
        a.close().await;
        b.close().await;
        db.drop_database().await;
    }

    /// Every state change writes its user's counters, even one that leaves the counts as they were (archiving a
    /// read notification), so its frame carries a version of its own, above the one before whichever node made
    /// it: sessions on other nodes order state frames by it (a late, older one makes them resync).
    #[tokio::test]
    async fn each_state_change_has_its_own_higher_version_even_when_the_counts_do_not_move() {
        use crate::inbox::contract::CountsRecorder;
        let Some(db) = TestDb::create("state_versions").await else { return };
        let (heard_a, heard_b) = (Arc::new(CountsRecorder::default()), Arc::new(CountsRecorder::default()));
        let a = db.open(Some(heard_a.clone())).await;
        let b = db.open(Some(heard_b.clone())).await;
        let last = |r: &CountsRecorder| r.2.lock().unwrap().iter().rev().find(|(u, _)| u == "u").map(|(_, v)| *v);
        let stored = a.apply(vec![Write::Notify(draft("s-1", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let WriteOutcome::Stored(rows) = &stored[0] else { panic!("{stored:?}") };
        let id = rows[0].id;
        let mut versions = Vec::new();
        a.change("u", id, Change::Read).await.unwrap().unwrap();
        versions.push(last(&heard_a).unwrap());
        b.change("u", id, Change::Archive).await.unwrap().unwrap(); // read and archived: no count moves
        versions.push(last(&heard_b).unwrap());
        a.change("u", id, Change::Unarchive).await.unwrap().unwrap();
        versions.push(last(&heard_a).unwrap());
        b.delete("u", id).await.unwrap();
        versions.push(last(&heard_b).unwrap());
        assert!(versions.windows(2).all(|w| w[0] < w[1]) && versions[0] > 0, "{versions:?}");
        a.close().await;
        b.close().await;
        db.drop_database().await;
    }

    /// Since migration 11 the group commit's upsert takes the counters' version itself and the trigger runs only
    /// for a write that does not raise it: an operator's UPDATE or INSERT by hand is still versioned, above the
    /// row's version before it, even one that writes a lower version or a version above the sequence.
    #[tokio::test]
    async fn counters_written_by_hand_still_take_a_higher_version() {
        use crate::inbox::contract::CountsRecorder;
        let Some(db) = TestDb::create("versions_by_hand").await else { return };
        let heard = Arc::new(CountsRecorder::default());
        let store = db.open(Some(heard.clone())).await;
        store.apply(vec![Write::Notify(draft("h-1", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let mut c = PgConnection::connect_with(&db.options).await.unwrap();
        async fn version(c: &mut PgConnection, user: &str) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar("SELECT version FROM inbox_counts WHERE user_id = $1").bind(user).fetch_one(c).await
        }
        let mut versions = vec![version(&mut c, "u").await.unwrap()];
        for by_hand in [
            "UPDATE inbox_counts SET unread = 0 WHERE user_id = 'u'",
            "UPDATE inbox_counts SET unread = 1, version = 1 WHERE user_id = 'u'",
            "UPDATE inbox_counts SET version = version + 1000000 WHERE user_id = 'u'",
            "UPDATE inbox_counts SET unseen = 0 WHERE user_id = 'u'",
        ] {
            sqlx::query(by_hand).execute(&mut c).await.unwrap();
            versions.push(version(&mut c, "u").await.unwrap());
        }
        assert!(versions.windows(2).all(|w| w[0] < w[1]) && versions[0] > 0, "{versions:?}");
        // The group commit after a version written above the sequence goes above it too, and reports the version
        // the row holds (its upsert's own value was lifted by the trigger).
        store.apply(vec![Write::Notify(draft("h-2", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let stored = version(&mut c, "u").await.unwrap();
        assert!(stored > *versions.last().unwrap(), "{stored} after {versions:?}");
        let reported = heard.1.lock().unwrap().iter().rev().find(|(u, _)| u == "u").map(|(_, v)| *v);
        assert_eq!(reported, Some(stored as u64), "the version the commit reports is the row's");
        sqlx::query("INSERT INTO inbox_counts (user_id, unread, unseen) VALUES ('by-hand', 0, 0)")
            .execute(&mut c)
            .await
            .unwrap();
        assert!(version(&mut c, "by-hand").await.unwrap() > 0, "an INSERT without a version takes one");
        c.close().await.unwrap();
        store.close().await;
        db.drop_database().await;
    }

    /// A node of the release before migration 9 keeps writing beside this one: its function,
    /// `herald_write_targeted`, is still there with its result columns (its prepared statements stay valid), and
    /// what it writes is versioned by the trigger.
    #[tokio::test]
    async fn the_release_befores_group_commit_function_still_writes_after_migration_9() {
        let Some(db) = TestDb::create("old_function").await else { return };
        db.open(None).await.close().await;
        let mut old_node = PgConnection::connect_with(&db.options).await.unwrap();
        let row = sqlx::query(
            "SELECT fresh, ids FROM herald_write_targeted(1, 2, ARRAY[7], now(), ARRAY[]::text[],
                 ARRAY[decode('00ff', 'hex')], ARRAY['e-old'], ARRAY['info'], ARRAY['t'], ARRAY['c'], ARRAY['x'],
                 ARRAY['s'], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY['null'], ARRAY['{}'], ARRAY[1],
                 ARRAY['old-node-user'])",
        )
        .fetch_one(&mut old_node)
        .await
        .unwrap();
        let (fresh, ids): (Vec<bool>, Vec<i64>) = (row.get(0), row.get(1));
        assert_eq!((fresh, ids.len()), (vec![true], 1));
        let version: i64 = sqlx::query_scalar("SELECT version FROM inbox_counts WHERE user_id = 'old-node-user'")
            .fetch_one(&mut old_node)
            .await
            .unwrap();
        assert!(version > 0, "versioned by the trigger: {version}");
        old_node.close().await.unwrap();
        db.drop_database().await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_store_contract() {
        let Some(db) = TestDb::create("postgres_store_passes_the_store_contract").await else { return };
        let store = db.open(None).await;
        crate::inbox::contract::run_all(&store).await;
        store.close().await;
        assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))), "closed");
        let late = store.apply(vec![Write::Notify(draft("late", Recipients::Everyone))]).await;
        assert!(matches!(late, Err(StoreError::Unavailable(_))), "closed: {late:?}");

        // Data and migrations survive a restart (the second open finds the schema migrated).
        let reopened = db.open(None).await;
        let targeted = reopened.list("dup-a", ListQuery { limit: 50, ..Default::default() }).await.unwrap();
        assert_eq!(targeted.iter().filter(|n| n.user_id.is_some()).count(), 1);
        reopened.close().await;
        db.drop_database().await;
    }

    #[tokio::test]
    async fn postgres_store_passes_the_retention_contract() {
        let Some(db) = TestDb::create("postgres_store_passes_the_retention_contract").await else { return };
        let store = db.open_with(&crate::inbox::contract::retention_settings(), None).await;
        crate::inbox::contract::run_retention(&store).await;
        store.close().await;
        db.drop_database().await;
    }

    #[tokio::test]
    async fn postgres_prunes_broadcasts_oldest_first_whatever_their_clocks() {
        let Some(db) = TestDb::create("postgres_prunes_broadcasts_oldest_first").await else { return };
        let store = db.open_with(&crate::inbox::contract::retention_settings(), None).await;
        let stamp = async |id: i64, at: DateTime<Utc>| {
            let sql = "UPDATE notifications SET created_at = $1 WHERE id = $2";
            sqlx::query(sql).bind(at).bind(id).execute(&store.readers).await.unwrap();
        };
        crate::inbox::contract::broadcasts_are_pruned_oldest_first_whatever_their_clocks(&store, stamp).await;
        store.close().await;
        db.drop_database().await;
    }

    #[tokio::test]
    async fn postgres_forgets_a_widely_read_broadcast_a_batch_at_a_time() {
        let Some(db) = TestDb::create("postgres_forgets_a_widely_read_broadcast").await else { return };
        let store = db.open(None).await;
        crate::inbox::contract::a_widely_read_broadcast_is_forgotten_a_batch_at_a_time(&store).await;
        store.close().await;
        db.drop_database().await;
    }

    /// A pruning step that finds nothing ends its transaction before returning: left to the pool, its rollback
    /// came only once the pool took the connection back and the prune lock stayed held until then, so this node's
    /// next step, on another connection, could find it taken and skip (CI saw a dedupe expiry skipped this way).
    #[tokio::test]
    async fn a_pruning_step_that_finds_nothing_does_not_keep_the_prune_lock() {
        let Some(db) = TestDb::create("a_pruning_step_that_finds_nothing").await else { return };
        let store = db.open(None).await;
        let now = Utc::now();
        for round in 0..20 {
            let event = Write::Notify(draft(&format!("idle-{round}"), Recipients::Users(vec!["u".into()])));
            store.apply(vec![event]).await.unwrap();
            // Nothing expired, nobody over a cap: both steps end idle.
            assert_eq!(store.prune_expired(now - chrono::Duration::days(1), 10).await.unwrap(), PruneReport::default());
            assert_eq!(store.prune_beyond("u", 1000, 10).await.unwrap(), PruneReport::default());
            let step = store.expire_dedupe(now + chrono::Duration::days(8), now, 10).await.unwrap();
            assert_eq!(step.report.dedupe_keys, 1, "round {round}: the lock was free, the key expired");
        }
        store.close().await;
        db.drop_database().await;
    }

    /// A rolling upgrade: a newer node applied a migration this release does not know; this node (an older one,
    /// restarting) still opens the store and writes — unless the database says it needs a newer release.
    #[tokio::test]
    async fn a_node_starts_on_a_schema_a_newer_release_migrated_further() {
        let Some(db) = TestDb::create("a_node_starts_on_a_newer_schema").await else { return };
        db.open(None).await.close().await;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1000, 'from a newer release', true, '\\x00', 0)",
            db.schema
        )))
        .execute(&db.admin)
        .await
        .unwrap();
        let store = db.open(None).await;
        let out = store.apply(vec![Write::Notify(draft("after-upgrade", Recipients::Users(vec!["u".into()])))]).await;
        assert!(matches!(out.as_deref(), Ok([WriteOutcome::Stored(_)])), "{out:?}");
        store.close().await;

        // A newer release whose migration this one cannot run beside says so: this node refuses to start.
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.store_state SET value = 1000 WHERE name = 'compatible_from'",
            db.schema
        )))
        .execute(&db.admin)
        .await
        .unwrap();
        let refused = PostgresStore::connect(db.options.clone(), &Settings::defaults().store, None).await;
        match refused {
            Err(StoreError::Internal(e)) => assert!(e.contains("needs migration 1000") && e.contains("upgrade"), "{e}"),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
        db.drop_database().await;
    }

    #[tokio::test]
    async fn ids_applied_before_scoping_still_dedupe_until_the_window_expires_them() {
        let Some(db) = TestDb::create("ids_applied_before_scoping_still_dedupe").await else { return };
        {
            // A database as the release before scoped ids left it: global ids in `applied_events`.
            let old = PgPoolOptions::new().max_connections(1).connect_with(db.options.clone()).await.unwrap();
            let mut first = migrator();
            first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
            first.run(&old).await.unwrap();
            sqlx::query("INSERT INTO applied_events (event_id, applied_at) VALUES ('77', now())")
                .execute(&old)
                .await
                .unwrap();
            old.close().await;
        }
        let store = db.open(None).await;
        let mut redelivered = draft("77", Recipients::Users(vec!["u".into()]));
        redelivered.dedupe_key = crate::event::DedupeKey::body_id("orders", "order.paid", "77");
        let again = store.apply(vec![Write::Notify(redelivered.clone())]).await.unwrap();
        assert!(matches!(again[0], WriteOutcome::Duplicate), "applied before the upgrade: still a duplicate");
        let report = store.prune(Utc::now() + chrono::Duration::days(8)).await.unwrap();
        assert_eq!(report.dedupe_keys, 2, "the legacy id and the scoped key both expire");
        let later = store.apply(vec![Write::Notify(redelivered)]).await.unwrap();
        assert!(matches!(&later[0], WriteOutcome::Stored(v) if v.len() == 1), "{later:?}");
        store.close().await;
        db.drop_database().await;
    }

    /// A database the release before inbox states wrote (three migrations), as in the SQLite test: after the
    /// upgrade the counters equal a count over the rows, and new writes keep them equal.
    #[tokio::test]
    async fn a_database_from_before_inbox_states_migrates_with_counters_that_match_its_rows() {
        let Some(db) = TestDb::create("a_database_from_before_inbox_states_migrates").await else { return };
        {
            let old = PgPoolOptions::new().max_connections(1).connect_with(db.options.clone()).await.unwrap();
            let mut first = migrator();
            first.migrations = std::borrow::Cow::Owned(first.migrations[..3].to_vec());
            first.run(&old).await.unwrap();
            let mut ids = Vec::new();
            for (user, read) in
                [(None, false), (Some("alice"), true), (Some("alice"), false), (None, false), (Some("bob"), false)]
                    .into_iter()
                    .chain([(None, false), (None, false)])
            {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO notifications (event_id, user_id, kind, title, content, event_type, data, body,
                         created_at, read_at) VALUES ('e', $1, 'k', 't', 'c', 'et', 'null', 'null', now(),
                         CASE WHEN $2 THEN now() END) RETURNING id",
                )
                .bind(user)
                .bind(read)
                .fetch_one(&old)
                .await
                .unwrap();
                ids.push(id);
            }
            let (b1, b2, b3, b4) = (ids[0], ids[3], ids[5], ids[6]);
            for sql in [
                format!("INSERT INTO user_state (user_id, read_all_up_to, read_all_at) VALUES ('bob', {b2}, now())"),
                format!("INSERT INTO broadcast_state (user_id, notification_id, read_at) VALUES ('bob', {b3}, now())"),
                format!("INSERT INTO broadcast_state (user_id, notification_id, deleted) VALUES ('bob', {b4}, TRUE)"),
                format!(
                    "INSERT INTO broadcast_state (user_id, notification_id, read_at) VALUES ('alice', {b1}, now())"
                ),
            ] {
                sqlx::query(AssertSqlSafe(sql)).execute(&old).await.unwrap();
            }
            old.close().await;
        }
        let store = db.open(None).await;
        for (user, n) in [("alice", 4), ("bob", 1), ("carol", 4)] {
            assert_eq!(store.counts(user).await.unwrap(), Counts { unread: n, unseen: n }, "{user} after the upgrade");
        }
        store.apply(vec![Write::Notify(draft("after", Recipients::Everyone))]).await.unwrap();
        store.mark_all_read("alice").await.unwrap();
        assert_eq!(store.counts("alice").await.unwrap(), Counts::default());
        assert_eq!(store.counts("bob").await.unwrap(), Counts { unread: 2, unseen: 2 });
        assert_eq!(store.counts("carol").await.unwrap(), Counts { unread: 5, unseen: 5 });
        // Migration 5: counts come from the counters, so the partial unread index is gone.
        let unread_index: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = '{}' AND indexname = 'notifications_unread'",
            db.schema
        )))
        .fetch_one(&db.admin)
        .await
        .unwrap();
        assert_eq!(unread_index, 0, "the partial unread index is dropped");
        store.close().await;
        db.drop_database().await;
    }

    /// On an inbox with many broadcasts of a few types and statistics to plan by, a list filtered by type or related
    /// object finds broadcasts through their partial indexes (migration 10), archived targeted rows are found
    /// through theirs, and no filtered list walks every row.
    #[tokio::test]
    async fn filtered_lists_find_broadcasts_through_their_indexes() {
        let Some(db) = TestDb::create("filtered_lists_find_broadcasts").await else { return };
        let store = db.open(None).await;
        let mut c = PgConnection::connect_with(&db.options).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO notifications (event_id, user_id, kind, title, content, event_type, related_type, related_id,
                                        data, body, created_at)
             SELECT x::text, CASE WHEN x % 10 = 0 THEN 'u' || (x % 3) END, CASE WHEN x % 1000 = 1 THEN 'rare' ELSE 'a' END,
                    '', '', 'e', 't', CASE WHEN x % 1000 = 2 THEN 'rare' ELSE 'i' END, '{}', '{}', now()
             FROM generate_series(1, 20000) x;
             INSERT INTO user_state (user_id, read_all_up_to, read_all_at) VALUES ('u', 19990, now());
             ANALYZE;",
        )
        .execute(&mut c)
        .await
        .unwrap();
        for archived in [false, true] {
            for unread_only in [false, true] {
                for (kind, related) in
                    [(None, None), (Some("rare"), None), (None, Some(("t", Some("rare")))), (None, Some(("t", None)))]
                {
                    let q = ListQuery::filtered(10, unread_only, archived, kind, related);
                    let mut explain =
                        sqlx::query_scalar::<_, String>(AssertSqlSafe(format!("EXPLAIN {}", list::sql(&q, &LIST))))
                            .bind("u")
                            .bind(i64::MAX)
                            .bind(10i64);
                    for (_, value) in q.filters() {
                        explain = explain.bind(value);
                    }
                    let plan = explain.fetch_all(&mut c).await.unwrap().join("\n");
                    let filtered = archived || unread_only || !q.filters().is_empty();
                    assert!(!filtered || !plan.contains("Seq Scan on notifications"), "{q:?}:\n{plan}");
                    assert_eq!(plan.contains("notifications_archived"), archived, "{q:?}:\n{plan}");
                    // Archived broadcasts come from the user's states.
                    if kind.is_some() && !archived {
                        assert!(plan.contains("notifications_broadcast_kinds"), "{q:?}:\n{plan}");
                    }
                    if related.is_some_and(|(_, id)| id.is_some()) && !archived {
                        assert!(plan.contains("notifications_broadcast_related"), "{q:?}:\n{plan}");
                    }
                }
            }
        }
        c.close().await.unwrap();
        store.close().await;
        db.drop_database().await;
    }

    /// Records the ids the commit listener is told about, in the order it is told.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<i64>>);

    impl CommitListener for Recorder {
        fn committed(&self, _: &NewNotification, stored: &[Notification], _: &mut crate::inbox::CommitVersions<'_>) {
            self.0.lock().unwrap().extend(stored.iter().map(|n| n.id));
        }
    }

    /// Two nodes on one database, writing at once: one id order, one exact `prev_id` chain, and a reader paging
    /// with `after` meanwhile never has an id appear behind its cursor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_writing_at_once_keep_one_order_and_an_exact_prev_id_chain() {
        const USER: &str = "shared-user";
        const ROUNDS: usize = 50;
        const PER_ROUND: usize = 10;
        const TOTAL: usize = 2 * ROUNDS * PER_ROUND;
        let Some(db) = TestDb::create("two_nodes_writing_at_once").await else { return };
        let recorders = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
        let nodes =
            [Arc::new(db.open(Some(recorders[0].clone())).await), Arc::new(db.open(Some(recorders[1].clone())).await)];

        let reader = nodes[0].clone();
        let polling = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let (mut seen, mut cursor) = (Vec::new(), Position::default());
            while seen.len() < TOTAL && tokio::time::Instant::now() < deadline {
                let page =
                    reader.after(USER, cursor, PageLimit::rows(1000), std::time::Instant::now()).await.unwrap().items;
                for r in &page {
                    seen.push(r.notification.id);
                    cursor.advance(r.notification.chain(), r.notification.id);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        });

        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writers = (0..2).map(|node| {
            let (store, barrier) = (nodes[node].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut ids = Vec::new();
                for round in 0..ROUNDS {
                    // Concurrent writes on one node, so its writer batches them (group commit).
                    let writes = (0..PER_ROUND).map(|i| {
                        let recipients = match i {
                            3 | 7 => Recipients::Everyone,
                            5 => Recipients::Users(vec!["someone-else".into(), USER.into()]),
                            _ => Recipients::Users(vec![USER.into()]),
                        };
                        store.apply(vec![Write::Notify(draft(&format!("n{node}-{round}-{i}"), recipients))])
                    });
                    for out in futures_util::future::join_all(writes).await {
                        match out.unwrap().pop().unwrap() {
                            WriteOutcome::Stored(rows) => ids.extend(
                                rows.iter().filter(|n| n.user_id.as_deref() != Some("someone-else")).map(|n| n.id),
                            ),
                            other => panic!("expected Stored, got {other:?}"),
                        }
                    }
                }
                ids
            })
        });
        let written: Vec<Vec<i64>> =
            futures_util::future::join_all(writers).await.into_iter().map(Result::unwrap).collect();
        let polled = polling.await.unwrap();

        let all = nodes[1]
            .after(USER, Position::default(), PageLimit::rows(10_000), std::time::Instant::now())
            .await
            .unwrap()
            .items;
        let ids: Vec<i64> = all.iter().map(|r| r.notification.id).collect();
        assert_eq!(ids.len(), TOTAL);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing ids");
        assert_eq!(polled, ids, "a reader paging meanwhile saw every id, none behind its cursor");

        let (mut last, mut last_broadcast) = (0, 0);
        for r in &all {
            let n = &r.notification;
            if n.user_id.is_some() {
                assert_eq!(n.prev_id, last, "id {}: a targeted row links to this user's previous targeted row", n.id);
                last = n.id;
            } else {
                assert_eq!(n.prev_id, last_broadcast, "id {}: a broadcast links to the previous broadcast", n.id);
                last_broadcast = n.id;
            }
        }

        // Each node's listener heard its own commits in commit (= id) order.
        for (node, recorder) in recorders.iter().enumerate() {
            let heard = recorder.0.lock().unwrap().clone();
            assert!(heard.windows(2).all(|w| w[0] < w[1]), "node {node}: listener in commit order");
        }
        let mut mine: Vec<(i64, usize)> =
            written.iter().enumerate().flat_map(|(node, ids)| ids.iter().map(move |&id| (id, node))).collect();
        mine.sort();
        assert_eq!(mine.iter().map(|&(id, _)| id).collect::<Vec<_>>(), ids, "every write visible, once");
        let switches = mine.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(switches >= 2, "the two nodes' commits interleave ({switches} switches), so the test tested something");

        for node in nodes {
            node.close().await;
        }
        db.drop_database().await;
    }

    /// One commit for 60,000 users (60 writes of 1,000 recipients, what one HTTP request or AMQP batch can hold):
    /// one advisory lock each overflowed PostgreSQL's lock table (64 × `max_connections` entries, and some slack:
    /// 20,000 still fitted the harness's) with "out of shared memory", answered as unavailable on every retry.
    /// Over 512 users a commit takes the exclusive lock.
    #[tokio::test]
    async fn a_commit_for_more_users_than_the_lock_table_holds_is_stored() {
        let Some(db) = TestDb::create("a_commit_for_more_users_than_the_lock_table_holds").await else { return };
        let store = db.open(None).await;
        let writes: Vec<Write> = (0..60)
            .map(|w| {
                let users = (0..1000).map(|u| format!("many-{w}-{u}")).collect();
                Write::Notify(draft(&format!("many-{w}"), Recipients::Users(users)))
            })
            .collect();
        let outcomes = store.apply(writes).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, WriteOutcome::Stored(rows) if rows.len() == 1000)));
        assert_eq!(store.unread_count("many-59-999").await.unwrap(), 1);
        // A few users still take their own locks; many, the exclusive one.
        assert!(ordering_locks(Some(vec![3, 1, 3])).contains("pg_advisory_xact_lock_shared"));
        assert_eq!(ordering_locks(Some((0..600).collect())), format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"));
        store.close().await;
        db.drop_database().await;
    }

    /// Nodes of different versions must agree on each user's lock key: FNV-1a (32 bits) of the id's bytes.
    #[test]
    fn user_lock_keys_are_fnv1a_of_the_user_id() {
        assert_eq!(user_lock_key("") as u32, 0x811c_9dc5);
        assert_eq!(user_lock_key("a") as u32, 0xe40c_292c);
        assert_eq!(user_lock_key("foobar") as u32, 0xbf9c_f968);
    }

    /// Retention takes the writers' ordering locks of the users whose rows it deletes (the exclusive one when a
    /// broadcast is among them). Without them, a user marking read a row pruning was deleting found it gone after
    /// its `UPDATE` and panicked the writer thread (the node answered 503 to every write until restarted), and a
    /// delete racing pruning took the row out of the counters twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_waits_for_the_writers_of_the_users_it_prunes() {
        let Some(db) = TestDb::create("pruning_waits_for_the_writers_of_the_users_it_prunes").await else { return };
        let store = Arc::new(db.open(None).await);
        let to = |id: String, user: &str| Write::Notify(draft(&id, Recipients::Users(vec![user.into()])));
        for i in 0..5 {
            store.apply(vec![to(format!("carol-{i}"), "carol")]).await.unwrap();
        }
        // What another node's writer holds while it changes carol's rows.
        let mut other = db.admin.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(WRITE_LOCK).execute(&mut *other).await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(USER_LOCKS)
            .bind(user_lock_key("carol"))
            .execute(&mut *other)
            .await
            .unwrap();
        let beyond = {
            let store = store.clone();
            tokio::spawn(async move { store.prune_beyond("carol", 2, 100).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!beyond.is_finished(), "pruning carol's rows waits for the transaction holding carol");
        other.commit().await.unwrap();
        assert_eq!(beyond.await.unwrap().unwrap().notifications, 3);

        // Age pruning over a broadcast waits for every write transaction (the shared lock alone holds it up).
        store.apply(vec![Write::Notify(draft("everyone", Recipients::Everyone))]).await.unwrap();
        let mut other = db.admin.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(WRITE_LOCK).execute(&mut *other).await.unwrap();
        let expired = {
            let store = store.clone();
            tokio::spawn(async move { store.prune_expired(Utc::now() + chrono::Duration::days(1), 100).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!expired.is_finished(), "pruning a broadcast waits for the open write transaction");
        other.commit().await.unwrap();
        assert_eq!(expired.await.unwrap().unwrap().notifications, 3, "carol's two rows and the broadcast");

        // Changes and deletes racing pruning of the same rows: the writer keeps writing, the counters stay a count
        // over the rows.
        for round in 0..40 {
            let mut ids = Vec::new();
            for i in 0..3 {
                let out = store.apply(vec![to(format!("dave-{round}-{i}"), "dave")]).await.unwrap();
                let WriteOutcome::Stored(rows) = &out[0] else { panic!("{out:?}") };
                ids.push(rows[0].id);
            }
            let (a, b, c) = (store.clone(), store.clone(), store.clone());
            let prune = tokio::spawn(async move { a.prune_beyond("dave", 1, 100).await });
            let (first, second) = (ids[0], ids[1]);
            let read = tokio::spawn(async move { b.change("dave", first, Change::Read).await });
            let delete = tokio::spawn(async move { c.delete("dave", second).await });
            prune.await.unwrap().unwrap();
            read.await.unwrap().expect("a change racing pruning is answered");
            delete.await.unwrap().expect("a delete racing pruning is answered");
            crate::inbox::contract::counts_match_rows(store.as_ref(), "dave", &format!("round {round}")).await;
        }
        store.probe_write().await.expect("the writer is still writing");

        Arc::into_inner(store).unwrap().close().await;
        db.drop_database().await;
    }

    /// The ordering lock is per user: another node's open write transaction for alice holds up alice's writes
    /// and broadcasts, never bob's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_only_for_transactions_holding_its_users() {
        let Some(db) = TestDb::create("a_write_waits_only_for_transactions_holding_its_users").await else { return };
        let store = Arc::new(db.open(None).await);
        let write = |id: &str, to: Recipients| {
            let store = store.clone();
            let w = Write::Notify(draft(id, to));
            tokio::spawn(async move { store.apply(vec![w]).await })
        };
        // What another node's writer holds while it writes for alice.
        let mut other = db.admin.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(WRITE_LOCK).execute(&mut *other).await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(USER_LOCKS)
            .bind(user_lock_key("alice"))
            .execute(&mut *other)
            .await
            .unwrap();

        let bob =
            tokio::time::timeout(Duration::from_secs(20), write("lock-bob", Recipients::Users(vec!["bob".into()])))
                .await
                .expect("bob's write does not wait for a transaction holding only alice");
        assert!(matches!(bob.unwrap().as_deref(), Ok([WriteOutcome::Stored(_)])));

        let alice = write("lock-alice", Recipients::Users(vec!["bob".into(), "alice".into()]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!alice.is_finished(), "a write for alice waits for the transaction holding alice");
        other.commit().await.unwrap();
        assert!(matches!(alice.await.unwrap().as_deref(), Ok([WriteOutcome::Stored(v)]) if v.len() == 2));

        // A broadcast waits for every write transaction (the shared lock alone holds it up).
        let mut other = db.admin.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(WRITE_LOCK).execute(&mut *other).await.unwrap();
        let everyone = write("lock-everyone", Recipients::Everyone);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!everyone.is_finished(), "a broadcast waits for the open write transaction");
        other.commit().await.unwrap();
        assert!(matches!(everyone.await.unwrap().as_deref(), Ok([WriteOutcome::Stored(_)])));

        Arc::into_inner(store).unwrap().close().await;
        db.drop_database().await;
    }

    /// The chain heads kept in the counters (migration 8) stay exact whatever moves them: a row written row by
    /// row (a commit holding a broadcast) moves its user's head, and deleting the head row, even with a plain
    /// `DELETE` no Herald code runs, sends the next row to the newest row left (a `TRUNCATE`: to none).
    #[tokio::test]
    async fn chain_heads_follow_row_by_row_writes_and_any_delete() {
        let Some(db) = TestDb::create("chain_heads_follow_row_by_row_writes_and_any_delete").await else { return };
        let store = db.open(None).await;
        let to = |id: &str| Write::Notify(draft(id, Recipients::Users(vec!["heads".into()])));
        let one = |out: Vec<WriteOutcome>, i: usize| match &out[i] {
            WriteOutcome::Stored(rows) => rows[0].clone(),
            other => panic!("write {i}: expected Stored, got {other:?}"),
        };
        let a = one(store.apply(vec![to("heads-a")]).await.unwrap(), 0);
        let mixed = store.apply(vec![Write::Notify(draft("heads-all", Recipients::Everyone)), to("heads-b")]).await;
        let b = one(mixed.unwrap(), 1);
        assert_eq!(b.prev_id, a.id, "row by row, linked to the head the targeted commit left");
        let c = one(store.apply(vec![to("heads-c")]).await.unwrap(), 0);
        assert_eq!(c.prev_id, b.id, "the row written row by row moved the head");
        let delete = format!("DELETE FROM {}.notifications WHERE id = $1", db.schema);
        sqlx::query(AssertSqlSafe(delete)).bind(c.id).execute(&db.admin).await.unwrap();
        let d = one(store.apply(vec![to("heads-d")]).await.unwrap(), 0);
        assert_eq!(d.prev_id, b.id, "the deleted head was forgotten: the newest row left");
        let truncate = format!("TRUNCATE {}.notifications", db.schema);
        sqlx::query(AssertSqlSafe(truncate)).execute(&db.admin).await.unwrap();
        let e = one(store.apply(vec![to("heads-e")]).await.unwrap(), 0);
        assert_eq!(e.prev_id, 0, "a truncate forgets every head: the chain starts again");
        store.close().await;
        db.drop_database().await;
    }

    #[tokio::test]
    async fn one_bad_write_fails_alone_and_nul_characters_are_stored() {
        let Some(db) = TestDb::create("one_bad_write_fails_alone").await else { return };
        let store = db.open(None).await;
        // A user id too long for a btree index entry: PostgreSQL refuses the row (SQLite would not).
        let huge: String = (0..20_000).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
        let mut nul = draft("nul", Recipients::Users(vec!["nul-user".into()]));
        nul.title = "a\0b".into();
        let mut writes = vec![store.apply(vec![Write::Notify(draft("poison", Recipients::Users(vec![huge])))])];
        writes.push(store.apply(vec![Write::Notify(nul)]));
        writes
            .extend((0..20).map(|i| store.apply(vec![Write::Notify(draft(&format!("ok-{i}"), Recipients::Everyone))])));
        let mut results = futures_util::future::join_all(writes).await.into_iter();
        let poison = results.next().unwrap();
        assert!(matches!(poison, Err(StoreError::Internal(_))), "{poison:?}");
        assert!(results.all(|r| matches!(r.as_deref(), Ok([WriteOutcome::Stored(_)]))), "the others are stored");
        let stored = store.list("nul-user", ListQuery { limit: 50, ..Default::default() }).await.unwrap();
        let targeted: Vec<_> = stored.iter().filter(|n| n.user_id.is_some()).collect();
        assert_eq!(targeted[0].title, "a\u{FFFD}b");
        store.close().await;
        db.drop_database().await;
    }

    /// A commit PostgreSQL is still working on is waited for however long it takes (here it waits for another
    /// node's lock for longer than the writer waits before it checks): the writer's check sees its server process
    /// waiting for a lock, not for the writer, and keeps waiting. Only silence gives a commit up.
    #[tokio::test]
    async fn a_commit_waiting_on_a_lock_longer_than_the_writers_check_is_stored() {
        let Some(db) = TestDb::create("long_commit").await else { return };
        let store = db.open(None).await;
        let mut other = PgConnection::connect_with(&db.options).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)").bind(WRITE_LOCK).execute(&mut other).await.unwrap();
        let write = store.apply(vec![Write::Notify(draft("waits", Recipients::Users(vec!["u".into()])))]);
        let release = async {
            tokio::time::sleep(crate::postgres_connections::SILENCE_CHECK + Duration::from_secs(3)).await;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(WRITE_LOCK).execute(&mut other).await.unwrap();
        };
        let (written, ()) = tokio::join!(write, release);
        assert!(matches!(written.as_deref(), Ok([WriteOutcome::Stored(_)])), "{written:?}");
        other.close().await.unwrap();
        store.close().await;
        db.drop_database().await;
    }

    /// A node that falls silent inside a broadcast's commit, after PostgreSQL gave it the write lock exclusive,
    /// holds the other nodes' writes back for about the statement timeout, not until the server's TCP keepalive
    /// notices (two hours by default): its transaction, left idle, is ended with its locks.
    #[tokio::test]
    async fn a_node_gone_silent_inside_its_commit_holds_the_others_writes_only_about_the_statement_timeout() {
        let Some(db) = TestDb::create("silent_in_commit").await else { return };
        let settings = StoreSettings { statement_timeout_secs: 2, ..Settings::defaults().store };
        let (link, a) = db.open_through_link(&settings).await;
        let b = db.open_with(&settings, None).await;

        // A's broadcast takes the write lock, then waits behind an operator's table lock until A is silent; its
        // statement then completes on the server, into the silence. A's writer carries on alone.
        let broadcast = std::pin::pin!(a.apply(vec![Write::Notify(draft("a-broadcast", Recipients::Everyone))]));
        db.silence_inside(&link, broadcast).await; // given up
        let mut watch = PgConnection::connect_with(&db.options).await.unwrap();

        // B's writes wait for the write lock; each is cut by the statement timeout until A's session is ended.
        let started = std::time::Instant::now();
        let mut tries = 0;
        let stored = loop {
            tries += 1;
            let written =
                b.apply(vec![Write::Notify(draft(&format!("b-{tries}"), Recipients::Users(vec!["u".into()])))]);
            match written.await {
                Ok(outcomes) => break outcomes,
                Err(StoreError::Unavailable(e)) if started.elapsed() < Duration::from_secs(60) => {
                    assert!(e.contains("timeout") || e.contains("cancel"), "{e}");
                }
                Err(e) => panic!("B could not write for {:?}: {e:?}", started.elapsed()),
            }
        };
        assert!(matches!(stored.as_slice(), [WriteOutcome::Stored(_)]), "{stored:?}");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        assert_eq!(ended, 0, "no transaction is left idle");
        watch.close().await.unwrap();
        b.close().await;
        a.close().await;
        db.drop_database().await;
    }

    /// A retention run that fails (here its statement timed out behind an operator's table lock, which
    /// PostgreSQL reports as a cancellation, class 57, as it does a shutdown) leaves `store_writes` ready and
    /// is counted: producers' writes were never refused, and a node reported not ready for it left its load
    /// balancer until the next probe write.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_retention_run_is_counted_and_leaves_readiness_alone() {
        let Some(db) = TestDb::create("failed_retention").await else { return };
        let settings = StoreSettings { statement_timeout_secs: 1, ..Settings::defaults().store };
        let health = crate::telemetry::Health::default();
        let store = crate::inbox::Monitored::new(Arc::new(db.open_with(&settings, None).await), health.clone());
        store.apply(vec![Write::Notify(draft("kept", Recipients::Users(vec!["u".into()])))]).await.unwrap();
        let writes_ok = || health.snapshot().into_iter().find(|(name, _)| *name == "store_writes").unwrap().1.ok;

        let lock = db.lock_notifications().await;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let pruned = metrics::with_local_recorder(&recorder, || {
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(store.prune(Utc::now())))
        });
        lock.rollback().await.unwrap();
        assert!(matches!(&pruned, Err(StoreError::Unavailable(e)) if e.contains("statement timeout")), "{pruned:?}");
        assert!(writes_ok(), "a failed retention run took the node out of readiness");
        let text = handle.render();
        assert!(text.lines().any(|l| l == "herald_retention_failures_total 1"), "{text}");
        store.close().await;
        db.drop_database().await;
    }

    /// PostgreSQL going silent mid-stream (its host gone without a reset, a partition) fails the commit waiting
    /// on it as unavailable once the writer's check finds nothing working on it, rather than holding every later
    /// write until the kernel gives up on the socket, and a read its caller cut short (an HTTP request's timeout,
    /// the readiness probe's) does not keep its pool slot past its bounded drain. Once PostgreSQL answers at its
    /// address again, the next commit and the next read open new connections and succeed.
    #[tokio::test]
    async fn a_server_gone_silent_fails_writes_as_unavailable_keeps_no_reader_slot_and_both_reconnect() {
        let Some(db) = TestDb::create("silent_server").await else { return };
        // The cut read's connection drains for the statement timeout and a second (3 s), inside the pool's 5 s wait
        // of the read after the link is back; and the read held behind the lock is not cancelled before the link
        // goes silent (2 s to see it waiting).
        let settings = StoreSettings { statement_timeout_secs: 2, read_connections: 1, ..Settings::defaults().store };
        let (link, store) = db.open_through_link(&settings).await;
        let write = |id: &str| store.apply(vec![Write::Notify(draft(id, Recipients::Users(vec!["u".into()])))]);
        let list = || store.list("u", ListQuery { limit: 10, ..Default::default() });
        assert!(matches!(write("before").await.as_deref(), Ok([WriteOutcome::Stored(_)])));
        assert_eq!(list().await.unwrap().len(), 1);
        let pooled = async {
            while store.readers.num_idle() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), pooled).await.expect("the reader back in the pool first");

        link.silence();
        // Far longer than the writer's wait and its check (5 s each), far shorter than the kernel's retransmissions.
        let cut = tokio::time::timeout(Duration::from_secs(60), write("during")).await;
        let Ok(Err(StoreError::Unavailable(why))) = cut else { panic!("not failed as unavailable: {cut:?}") };
        assert!(why.contains("stopped answering"), "{why}");
        link.restore();
        // The reader left idle in the pool through the silence is dead: the pool's check before handing it out
        // waits for the acquire timeout, that read fails as unavailable, and the next opens a new connection.
        let mut failed = 0;
        while let Err(e) = list().await {
            assert!(matches!(e, StoreError::Unavailable(_)) && failed < settings.read_connections, "{e:?}");
            failed += 1;
        }

        // A read in flight when the server goes silent, then given up by its caller (an HTTP request's timeout).
        db.silence_inside(&link, std::pin::pin!(list())).await; // given up
        link.restore();
        assert!(matches!(write("after").await.as_deref(), Ok([WriteOutcome::Stored(_)])));
        let listed = tokio::time::timeout(Duration::from_secs(60), list()).await;
        let titles: Vec<String> = match listed {
            Ok(Ok(rows)) => rows.into_iter().map(|n| n.title).collect(),
            other => panic!("the read after the link came back failed: {other:?}"),
        };
        assert_eq!(titles, ["title after", "title before"], "what the silent server never heard is not stored");
        tokio::time::timeout(Duration::from_secs(60), store.close()).await.expect("closing waits for no silent slot");
        db.drop_database().await;
    }

    /// A retention run whose server falls silent inside a step (its host gone without a reset, a partition)
    /// fails as unavailable once PostgreSQL is not seen working on it, as a commit does, rather than waiting on
    /// a socket nothing will ever answer (sqlx sets no TCP keepalive): that wait stopped retention on the node
    /// for good, uncounted, and its inbox grew without bound. Once PostgreSQL answers again, the next run prunes;
    /// and the store then closes without waiting on the writer's connection, silent since its last commit.
    #[tokio::test]
    async fn a_retention_run_on_a_server_gone_silent_fails_as_unavailable_and_the_next_run_prunes() {
        let Some(db) = TestDb::create("silent_prune").await else { return };
        let settings = StoreSettings { statement_timeout_secs: 3, retention_days: 1, ..Settings::defaults().store };
        let (link, store) = db.open_through_link(&settings).await;
        let write = |id: &str| store.apply(vec![Write::Notify(draft(id, Recipients::Users(vec!["u".into()])))]);
        assert!(matches!(write("old").await.as_deref(), Ok([WriteOutcome::Stored(_)])));
        let expired = Utc::now() + chrono::Duration::days(2);

        // The step waits behind an operator's table lock when the link goes silent.
        let mut pruning = std::pin::pin!(store.prune(expired));
        db.silence_inside(&link, pruning.as_mut()).await;
        // Far longer than the check's wait and its look (5 s each), and than the server's statement timeout.
        let pruned = tokio::time::timeout(Duration::from_secs(60), pruning).await;
        let Ok(Err(StoreError::Unavailable(why))) = pruned else { panic!("not failed as unavailable: {pruned:?}") };
        assert!(why.contains("stopped answering"), "{why}");

        link.restore();
        // A reader left idle in the pool through the silence fails one step at the pool's check; then a new one.
        let started = std::time::Instant::now();
        let report = loop {
            match tokio::time::timeout(Duration::from_secs(60), store.prune(expired)).await {
                Ok(Ok(report)) => break report,
                Ok(Err(StoreError::Unavailable(_))) if started.elapsed() < Duration::from_secs(60) => {}
                other => panic!("retention did not recover: {other:?}"),
            }
        };
        assert_eq!(report.notifications, 1, "{report:?}");
        assert!(store.list("u", ListQuery { limit: 10, ..Default::default() }).await.unwrap().is_empty());
        tokio::time::timeout(Duration::from_secs(60), store.close()).await.expect("closing waits for no silent slot");
        db.drop_database().await;
    }

    #[tokio::test]
    async fn unreachable_database_is_unavailable_and_a_bad_url_is_not() {
        let settings = Settings::defaults();
        let bad = PostgresStore::open("postgres://nobody@127.0.0.1:not-a-port/x", &settings.store, None).await;
        assert!(matches!(bad, Err(StoreError::Internal(_))));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://nobody@127.0.0.1:{port}/x");
        let down = PostgresStore::open(&url, &settings.store, None).await;
        assert!(matches!(down, Err(StoreError::Unavailable(_))), "{:?}", down.err());
    }
}
