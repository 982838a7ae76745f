//! The embedded SQLite inbox.
//!
//! One writer thread owns the only write connection and commits whatever has queued up in one transaction
//! (group commit): throughput does not hinge on one fsync per event. Readers use a small pool of WAL read
//! connections on the blocking thread pool. WAL checkpoints run on a third kind of connection, the
//! checkpointer's ([`checkpointer`]), so the writer does not copy pages back between commits.
//!
//! Invariants: ids come from `AUTOINCREMENT` on the single writer, so they only grow in commit order and are
//! never reused; replies leave the writer only after `COMMIT` returned. Before each `COMMIT` the writer checks
//! that the database path still names the file it opened (device and inode): a deleted or replaced database
//! file fails the batch as `Unavailable` rather than acknowledging writes into an unlinked file. Retention
//! runs through the same writer, as small jobs queued behind the writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};
use rusqlite_migration::{Migrations, M};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::chains::{self, Chains};
use super::list;
use super::retention::{self, Floors, PruneStep, PruneSteps, Retention};
use super::{
    is_muted, setting_from, setting_name, Change, Changed, CommitListener, Counters, CountsChange, ListQuery,
    MutedDefaults, NewNotification, PageLimit, PreferencesChange, PruneReport, ReadAll, ReplayPage, Replayed, RowState,
    SeenAll, StateChange, Store, StoreError, Tally, Write, WriteOutcome, COMMIT_FAILED,
};
use crate::config::{SqliteSync, StoreSettings};
use crate::protocol::{Counts, Notification, Position, RelatedObject, TypeSetting};
use crate::rules::{AliasRecord, Recipients};

mod checkpointer;
mod sweep;
mod walbatch;

/// Wake the checkpointer once the WAL holds this many pages (64 MiB): pages that many commits rewrite are copied
/// back once per checkpoint, so fewer checkpoints write less (19 → 13 KiB of disk writes per targeted
/// notification in BENCHMARKS.md, when the writer still checkpointed itself at this size).
const WAL_CHECKPOINT_PAGES: i32 = 16_384;

/// Statements each read connection keeps prepared (rusqlite's default is 16).
const READER_STATEMENTS: usize = 64;

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        r#"
CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL,
    user_id      TEXT,              -- NULL: a broadcast, visible to every user
    kind         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    source       TEXT,
    related_type TEXT,
    related_id   TEXT,
    data         TEXT    NOT NULL,  -- JSON
    body         TEXT    NOT NULL,  -- the original event body, JSON
    created_at   INTEGER NOT NULL,  -- unix milliseconds
    read_at      INTEGER            -- targeted rows only; broadcasts keep read state per user below
);
CREATE INDEX notifications_by_user ON notifications(user_id, id);
CREATE INDEX notifications_unread ON notifications(user_id) WHERE read_at IS NULL;

-- Idempotency: one row per event id ever applied.
CREATE TABLE applied_events (
    event_id   TEXT    PRIMARY KEY,
    applied_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Per-user state of broadcasts: read and/or deleted.
CREATE TABLE broadcast_state (
    user_id         TEXT    NOT NULL,
    notification_id INTEGER NOT NULL,
    read_at         INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, notification_id)
) WITHOUT ROWID;

-- "Read all" watermark: broadcasts with id <= read_all_up_to are read for this user.
CREATE TABLE user_state (
    user_id        TEXT    PRIMARY KEY,
    read_all_up_to INTEGER NOT NULL,
    read_all_at    INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    ),
    // Gap detection: the id this user saw just before (for a broadcast, the previous broadcast).
    M::up("ALTER TABLE notifications ADD COLUMN prev_id INTEGER NOT NULL DEFAULT 0;"),
    // Scoped dedupe keys and retention. The old table held global ids; it is kept, renamed, so an event
    // applied before the upgrade and redelivered after it is still a duplicate (deduped globally, as it was
    // then) until `store.dedupe_window_days` expires its row. New keys are `DedupeKey`s (src/event.rs): 16
    // bytes of SHA-256 over the id in its scope.
    M::up(
        r#"
ALTER TABLE applied_events RENAME TO applied_events_legacy;
CREATE INDEX applied_events_legacy_by_age ON applied_events_legacy(applied_at);

CREATE TABLE dedupe_keys (
    key        BLOB    PRIMARY KEY,
    applied_at INTEGER NOT NULL     -- unix milliseconds
) WITHOUT ROWID;
CREATE INDEX dedupe_keys_by_age ON dedupe_keys(applied_at);

-- The greatest targeted id retention pruned, per user (a resume from below it is told it was truncated).
CREATE TABLE pruned_floors (
    user_id TEXT    PRIMARY KEY,
    up_to   INTEGER NOT NULL
) WITHOUT ROWID;

-- Small named values: 'broadcast_floor' (the greatest broadcast id pruned), 'probe' (the last probe write).
CREATE TABLE store_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Pruning a broadcast deletes every user's state of it.
CREATE INDEX broadcast_state_by_notification ON broadcast_state(notification_id);
"#,
    ),
    // Recipient aliases: "student 7d3c… is user 0f8b…", learned from events or set over the API; erased with
    // the user.
    M::up(
        r#"
CREATE TABLE aliases (
    kind       TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,   -- unix milliseconds
    PRIMARY KEY (kind, alias)
) WITHOUT ROWID;
CREATE INDEX aliases_by_user ON aliases(user_id);
"#,
    ),
    // Inbox states (seen, archived, unread again), counters read by key, and preferences (issue 17). Existing
    // rows are carried over: what was read counts as seen, and the counters start from the rows as they are.
    M::up(
        r#"
ALTER TABLE notifications ADD COLUMN seen_at INTEGER;
ALTER TABLE notifications ADD COLUMN archived_at INTEGER;
ALTER TABLE notifications ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
-- Broadcasts only: 1, 2, 3, ... in id order (see `Counters` in src/inbox/mod.rs).
ALTER TABLE notifications ADD COLUMN ord INTEGER;
UPDATE notifications SET seen_at = read_at WHERE read_at IS NOT NULL;
UPDATE notifications SET ord = o.rn
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM notifications WHERE user_id IS NULL) o
    WHERE notifications.id = o.id;

-- Per-user broadcast state: seen, archived, and `unread` = marked unread although under the read_all watermark.
ALTER TABLE broadcast_state ADD COLUMN seen_at INTEGER;
ALTER TABLE broadcast_state ADD COLUMN archived_at INTEGER;
ALTER TABLE broadcast_state ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;
UPDATE broadcast_state SET seen_at = read_at WHERE read_at IS NOT NULL;

-- "Seen all" watermark, as read_all's (a read_all sees everything too).
ALTER TABLE user_state ADD COLUMN seen_all_up_to INTEGER;
ALTER TABLE user_state ADD COLUMN seen_all_at INTEGER;
UPDATE user_state SET seen_all_up_to = read_all_up_to, seen_all_at = read_all_at;

-- The counters (see `Counters` in src/inbox/mod.rs): targeted unread/unseen, the broadcast watermarks as
-- ordinals, and the per-broadcast-state adjustments.
CREATE TABLE inbox_counts (
    user_id    TEXT    PRIMARY KEY,
    unread     INTEGER NOT NULL DEFAULT 0,
    unseen     INTEGER NOT NULL DEFAULT 0,
    read_ord   INTEGER NOT NULL DEFAULT 0,
    seen_ord   INTEGER NOT NULL DEFAULT 0,
    unread_adj INTEGER NOT NULL DEFAULT 0,
    unseen_adj INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO inbox_counts (user_id, unread, unseen)
    SELECT user_id, sum(read_at IS NULL), sum(read_at IS NULL) FROM notifications
    WHERE user_id IS NOT NULL GROUP BY user_id;
INSERT OR IGNORE INTO inbox_counts (user_id) SELECT user_id FROM user_state;
INSERT OR IGNORE INTO inbox_counts (user_id) SELECT DISTINCT user_id FROM broadcast_state;
UPDATE inbox_counts SET read_ord = COALESCE((SELECT max(n.ord) FROM notifications n, user_state w
    WHERE w.user_id = inbox_counts.user_id AND n.user_id IS NULL AND n.id <= w.read_all_up_to), 0);
UPDATE inbox_counts SET seen_ord = read_ord, unread_adj = (SELECT count(*) FROM broadcast_state s
    JOIN notifications n ON n.id = s.notification_id LEFT JOIN user_state w ON w.user_id = s.user_id
    WHERE s.user_id = inbox_counts.user_id AND n.id > COALESCE(w.read_all_up_to, 0)
      AND (s.read_at IS NOT NULL OR s.deleted = 1));
UPDATE inbox_counts SET unseen_adj = unread_adj;
INSERT INTO store_state (name, value)
    SELECT 'broadcast_ord', COALESCE(max(ord), 0) FROM notifications WHERE user_id IS NULL;
INSERT INTO store_state (name, value) VALUES ('broadcast_pruned_ord', 0);

-- Preferences: one setting ('on' or 'muted') per user and notification type.
CREATE TABLE preferences (
    user_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    setting TEXT NOT NULL,
    PRIMARY KEY (user_id, type)
) WITHOUT ROWID;
"#,
    ),
    // The write path (issue 16): counts come from `inbox_counts`, so nothing needs the partial unread index any
    // more; it cost a random B-tree insert (and a WAL page) per targeted notification. The `unread=true` list
    // and `read_all` walk the user's rows through `notifications_by_user` instead (at most `store.max_per_user`).
    M::up("DROP INDEX notifications_unread;"),
    // Dedupe keys are forgotten by a sweep in key order (`sweep.rs`), which needs no index by age: it cost a
    // page per insert, and expiring through it a page per key. The sweep's last stop, kept across restarts.
    M::up(
        r#"
DROP INDEX dedupe_keys_by_age;
CREATE TABLE dedupe_sweep (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    stopped  BLOB    NOT NULL,  -- the position the last run swept to (8 bytes, see sweep.rs)
    at       INTEGER NOT NULL   -- when, unix milliseconds
);
"#,
    ),
    // Filtered lists (`inbox::list`): broadcasts of one type or related object found through their own index
    // instead of a walk of every retained broadcast, and a user's archived rows instead of a walk of all their
    // rows. Partial: a targeted insert writes none of them (a row enters the last one when it is archived).
    M::up(
        r#"
CREATE INDEX notifications_broadcast_kinds ON notifications(kind, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related ON notifications(related_type, related_id, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related_types ON notifications(related_type, id) WHERE user_id IS NULL;
CREATE INDEX notifications_archived ON notifications(user_id, id) WHERE archived_at IS NOT NULL;
"#,
    ),
];

/// A targeted row in [`row_to_notification`]'s order.
const TARGETED: &str = "id, user_id, kind, title, content, event_type, source, related_type, related_id, data, \
     created_at, prev_id, read_at, seen_at, archived_at, muted";

/// One key read: the global broadcast ordinals and the user's counters (see `Counters`).
const COUNTERS: &str = "SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0),
        COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_pruned_ord'), 0),
        c.unread, c.unseen, c.read_ord, c.seen_ord, c.unread_adj, c.unseen_adj
    FROM (SELECT 1) LEFT JOIN inbox_counts c ON c.user_id = ?1";

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
    Upkeep(Upkeep, oneshot::Sender<Result<PruneStep, StoreError>>),
    Close(oneshot::Sender<()>),
}

/// Background writes: the probe and one batch of pruning each (times in unix milliseconds).
enum Upkeep {
    Probe,
    Expired {
        cutoff: i64,
        batch: usize,
    },
    Beyond {
        user: String,
        keep: u64,
        batch: usize,
    },
    Dedupe {
        cutoff: i64,
        now: i64,
        batch: usize,
    },
    Orphans {
        batch: usize,
    },
    /// A setting of the write connection (tests: `max_page_count` makes a real "database or disk is full").
    #[cfg(test)]
    Pragma(String),
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
}

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    muted_defaults: MutedDefaults,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<Semaphore>,
    file: DbFile,
    /// The writer's WAL as the checkpointer sees it.
    #[cfg_attr(not(test), allow(dead_code))]
    wal: Arc<checkpointer::WalWatch>,
    retention: Retention,
    /// The version of the last commit (see `Store::opening`): the writer raises it after each commit, before
    /// telling the listener; a snapshot reads it before it begins.
    committed: Arc<AtomicU64>,
}

/// A connection to `path` through the VFS named `vfs` (one of `walbatch`'s), or the default VFS.
fn open_through(path: &Path, vfs: Option<&std::ffi::CStr>) -> rusqlite::Result<Connection> {
    match vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs),
        None => Connection::open(path),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Worth retrying (busy, locked, and everything the disk or the file system refuses: full, read-only, I/O
/// error, cannot open, permission) or not (constraints, corruption, bugs).
fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::DiskFull
                    | C::ReadOnly
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::PermissionDenied
                    | C::FileLockingProtocolFailed
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        e => StoreError::Internal(e.to_string()),
    }
}

/// The database file as opened: device and inode. SQLite keeps writing to an open file descriptor after the
/// path was deleted or replaced, and those writes would be acknowledged and lost.
#[derive(Debug, Clone)]
struct DbFile {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl DbFile {
    fn opened(path: &Path) -> Result<DbFile, StoreError> {
        let m = std::fs::metadata(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let (dev, ino) = DbFile::identity(&m);
        Ok(DbFile { path: path.to_owned(), dev, ino })
    }

    #[cfg(unix)]
    fn identity(m: &std::fs::Metadata) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    }

    /// Elsewhere only a missing file is noticed.
    #[cfg(not(unix))]
    fn identity(_: &std::fs::Metadata) -> (u64, u64) {
        (0, 0)
    }

    /// `Unavailable` unless the path still names the file that is open.
    fn check(&self) -> Result<(), StoreError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if DbFile::identity(&m) == (self.dev, self.ino) => Ok(()),
            Ok(_) => Err(unavailable(format!(
                "the database file {} was replaced since it was opened; writes are refused (restart to use it)",
                self.path.display()
            ))),
            Err(e) => Err(unavailable(format!(
                "the database file {} is gone ({e}); writes are refused rather than lost",
                self.path.display()
            ))),
        }
    }
}

/// How long a store being opened waits for another process's hold on the inbox file to end (a restart whose
/// previous process is still closing) before it refuses to start.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// One process's hold on an inbox file: a lock on `<file>-herald.lock`, held by the writer thread while it runs.
/// The writer keeps each user's chain head, the commit version and the muted defaults in memory, so a second
/// process writing the same file would store notifications that neither process pushes to the other's sessions
/// and break the `prev_id` chain: it is refused at start instead. Readers (the `sqlite3` shell, a backup) take no
/// such lock and are never kept out.
struct InboxLock {
    _file: std::fs::File,
}

impl InboxLock {
    fn take(db: &Path) -> Result<InboxLock, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push("-herald.lock");
        let path = std::path::PathBuf::from(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Internal(format!("cannot open the lock file {}: {e}", path.display())))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
                    return Err(StoreError::Internal(format!(
                        "{} is in use by another Herald process{holder}, which holds {}: an SQLite inbox is served by                          one process. Stop the other one, give this one its own store.url, or use PostgreSQL for                          several nodes",
                        db.display(),
                        path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Internal(format!("cannot lock {}: {e}", path.display())));
                }
            }
        }
        // Who holds it, for the message above (the lock itself is what counts).
        use std::io::{Seek, Write};
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = writeln!(file, "{}", std::process::id());
        Ok(InboxLock { _file: file })
    }
}

impl SqliteStore {
    pub fn open(
        path: &Path,
        settings: &StoreSettings,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_checkpointing_at(path, settings, listener, WAL_CHECKPOINT_PAGES)
    }

    /// `open`, waking the checkpointer at `wal_pages` pages of WAL.
    fn open_checkpointing_at(
        path: &Path,
        settings: &StoreSettings,
        listener: Option<Arc<dyn CommitListener>>,
        wal_pages: i32,
    ) -> Result<SqliteStore, StoreError> {
        crate::sqlite_files::create_private(path)
            .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", path.display())))?;
        let lock = InboxLock::take(path)?;
        crate::sqlite_pcache::install();
        // With `synchronous = full` the writer gathers each commit's WAL frames into one write (`walbatch`), and the
        // checkpointer skips the WAL syncs its commits already made; with `normal` a commit publishes frames it did
        // not sync, so that setting writes and checkpoints them as SQLite does.
        let (sync, vfs, checkpointer_vfs) = match settings.synchronous {
            SqliteSync::Full => (
                "FULL",
                Some(walbatch::register().map_err(StoreError::Internal)?),
                Some(walbatch::register_checkpointer().map_err(StoreError::Internal)?),
            ),
            SqliteSync::Normal => ("NORMAL", None, None),
        };
        let mut conn = open_through(path, vfs).map_err(store_error)?;
        // No automatic checkpoint on the writer: the checkpointer thread does them (`checkpointer`), on its own
        // connection, woken by the writer's WAL hook (installed below, after the migrations). `secure_delete`:
        // what the writer deletes (an erase, retention) is overwritten with zeros, in its pages and in the pages
        // it frees, not left readable in the file (GDPR); it costs writes only where rows are deleted.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -{cache_kib}; PRAGMA wal_autocheckpoint = 0; PRAGMA secure_delete = ON;",
            cache_kib = settings.sqlite_cache_mib * 1024
        ))
        .map_err(store_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(store_error)?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn).map_err(|e| match e {
            rusqlite_migration::Error::MigrationDefinition(
                rusqlite_migration::MigrationDefinitionError::DatabaseTooFarAhead,
            ) => StoreError::Internal(format!(
                "{} was migrated by a newer release (schema past version {}, the newest this release knows): run \
                 that release, or restore the backup taken before the upgrade",
                path.display(),
                MIGRATIONS.len()
            )),
            e => StoreError::Internal(format!("migrations: {e}")),
        })?;
        let file = DbFile::opened(path)?;
        let wal = checkpointer::WalWatch::new(wal_pages);
        checkpointer::spawn(path, wal.clone(), checkpointer_vfs)
            .map_err(|e| StoreError::Internal(format!("checkpointer: {e}")))?;
        let conn = checkpointer::Hooked::new(conn, wal.clone());

        let mut readers = Vec::with_capacity(settings.read_connections);
        for _ in 0..settings.read_connections {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(store_error)?;
            r.busy_timeout(Duration::from_secs(5)).map_err(store_error)?;
            // The list query alone has 24 shapes (filters set × unread × archived): keep them all prepared.
            r.set_prepared_statement_cache_capacity(READER_STATEMENTS);
            readers.push(r);
        }

        let (tx, rx) = mpsc::channel(4096);
        let batch_max = settings.batch_max;
        let writer_file = file.clone();
        let muted_defaults = MutedDefaults::default();
        let writer_defaults = muted_defaults.clone();
        // 1, not 0: version 0 means "unordered, always taken" (`Store::opening`).
        let committed = Arc::new(AtomicU64::new(1));
        let writer_committed = committed.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || {
                crate::telemetry::essential("the SQLite writer thread stopped", move || {
                    let held = (writer_file, lock);
                    writer_loop(conn, rx, batch_max, listener, held, writer_defaults, writer_committed)
                })
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(SqliteStore {
            writer: tx,
            muted_defaults,
            reader_permits: Arc::new(Semaphore::new(readers.len())),
            readers: Arc::new(Mutex::new(readers)),
            file,
            wal,
            retention: Retention::from_settings(settings),
            committed,
        })
    }

    /// Mute these notification types for users who did not set them (`preferences.muted_by_default`).
    pub fn muting_by_default(self, types: &[String]) -> Self {
        self.muted_defaults.set(types);
        self
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).await.map_err(|_| unavailable("the store is closed"))?;
        rx.await.map_err(|_| unavailable("the store writer stopped"))?
    }

    /// Run `f` on a pooled read connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self.reader_permits.clone().acquire_owned().await.map_err(unavailable)?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool poisoned").pop().expect("a permit guarantees a connection");
            let result = f(&conn);
            pool.lock().expect("reader pool poisoned").push(conn);
            drop(permit);
            result.map_err(store_error)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| Job::Apply(writes, tx)).await
    }

    async fn list(&self, user: &str, q: ListQuery) -> Result<Vec<Notification>, StoreError> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&list::sql(&q, &LIST))?;
            let filters = q.filters();
            let fixed: [&dyn rusqlite::ToSql; 3] = [&user, &q.before.unwrap_or(i64::MAX), &q.limit];
            let args = fixed.into_iter().chain(filters.iter().map(|(_, v)| v as &dyn rusqlite::ToSql));
            let rows = stmt.query_map(rusqlite::params_from_iter(args), row_to_notification)?;
            rows.collect()
        })
        .await
    }

    async fn after(
        &self,
        user: &str,
        from: Position,
        limit: PageLimit,
        _: std::time::Instant,
    ) -> Result<ReplayPage, StoreError> {
        let user = user.to_owned();
        self.read(move |c| {
            // Muted rows are never pushed: not replayed either (the chain skips them, so no gap shows).
            static SQL: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "SELECT n.*, b.body FROM (
                         SELECT * FROM (SELECT {TARGETED} FROM notifications
                             WHERE user_id = ?1 AND id > ?2 AND muted = 0 ORDER BY id LIMIT ?3)
                         UNION ALL
                         SELECT * FROM ({} AND n.id > ?4 ORDER BY n.id LIMIT ?3)
                         ORDER BY id LIMIT ?3) n
                     JOIN notifications b ON b.id = n.id ORDER BY n.id",
                    LIST.broadcasts("")
                )
            });
            // One read transaction: the floor and the rows from one snapshot (taken at the first read), so the
            // page misses no id above the floor it reports.
            c.execute_batch("BEGIN")?;
            let read = (|| -> rusqlite::Result<_> {
                let (targeted, broadcast) = history_floor(c, &user)?;
                let mut stmt = c.prepare_cached(&SQL)?;
                let mut rows = stmt.query(params![user, from.targeted, limit.rows, from.broadcast])?;
                let mut page = limit.page();
                // Rows past a full page are never read.
                while let Some(r) = rows.next()? {
                    let body: String = r.get(16)?;
                    if !page.push(Replayed { notification: row_to_notification(r)?, body: raw(body) }) {
                        break;
                    }
                }
                Ok(page.finish(Position { targeted, broadcast }))
            })();
            let end = c.execute_batch("COMMIT");
            let page = read?;
            end?;
            Ok(page)
        })
        .await
    }

    async fn counts(&self, user: &str) -> Result<Counts, StoreError> {
        let user = user.to_owned();
        self.read(move |c| counts(c, &user)).await
    }

    async fn opening(&self, user: &str) -> Result<(Position, Counts, u64), StoreError> {
        let (user, committed) = (user.to_owned(), self.committed.clone());
        self.read(move |c| opening_snapshot(c, &user, &committed, || {})).await
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

    async fn seen_all(&self, user: &str) -> Result<SeenAll, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::SeenAll(user, tx)).await
    }

    async fn preferences(&self, user: &str) -> Result<BTreeMap<String, TypeSetting>, StoreError> {
        let user = user.to_owned();
        self.read(move |c| preferences_of(c, &user)).await
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

    async fn mark_all_read(&self, user: &str) -> Result<ReadAll, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::MarkAllRead(user, tx)).await
    }

    async fn delete_many(&self, user: &str, ids: Vec<i64>) -> Result<Vec<bool>, StoreError> {
        let user = user.to_owned();
        self.write(|tx| Job::Delete(user, ids, tx)).await
    }

    async fn alias(&self, kind: &str, alias: &str) -> Result<Option<String>, StoreError> {
        let (kind, alias) = (kind.to_owned(), alias.to_owned());
        self.read(move |c| {
            c.prepare_cached("SELECT user_id FROM aliases WHERE kind = ?1 AND alias = ?2")?
                .query_row([kind, alias], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn latest(&self, user: &str) -> Result<Position, StoreError> {
        let user = user.to_owned();
        self.read(move |c| latest(c, &user)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(unavailable("the store writer stopped"));
        }
        self.file.check()?;
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        self.write(|tx| Job::Upkeep(Upkeep::Probe, tx)).await.map(drop)
    }

    async fn history_floor(&self, user: &str) -> Result<(i64, i64), StoreError> {
        let user = user.to_owned();
        self.read(move |c| history_floor(c, &user)).await
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        retention::prune(self, &self.retention, now).await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Job::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[async_trait]
impl PruneSteps for SqliteStore {
    async fn prune_expired(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<PruneReport, StoreError> {
        Ok(self.write(|tx| Job::Upkeep(Upkeep::Expired { cutoff: millis(cutoff), batch }, tx)).await?.report)
    }

    async fn users_over(&self, max: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT user_id FROM notifications WHERE user_id IS NOT NULL
                 GROUP BY user_id HAVING count(*) > ?1 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![max as i64, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn prune_beyond(&self, user: &str, keep: u64, batch: usize) -> Result<PruneReport, StoreError> {
        let user = user.to_owned();
        Ok(self.write(|tx| Job::Upkeep(Upkeep::Beyond { user, keep, batch }, tx)).await?.report)
    }

    async fn forget_pruned_broadcast_states(&self, batch: usize) -> Result<u64, StoreError> {
        Ok(self.write(|tx| Job::Upkeep(Upkeep::Orphans { batch }, tx)).await?.report.broadcast_states)
    }

    async fn expire_dedupe(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<PruneStep, StoreError> {
        self.write(|tx| Job::Upkeep(Upkeep::Dedupe { cutoff: millis(cutoff), now: millis(now), batch }, tx)).await
    }
}

/// The columns of a broadcast row as one user sees it (user `?1`, `s` their state of it, `w` their watermarks):
/// read is their own mark, else the read_all watermark, unless they marked it unread since. Never muted.
macro_rules! broadcast_columns {
    () => {
        "SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted"
    };
}

/// SQLite's pieces of the list query (`inbox::list`).
const LIST: list::Dialect = list::Dialect {
    targeted_columns: TARGETED,
    broadcast_select: broadcast_columns!(),
    index_hints: true,
    placeholder: '?',
};

fn raw(s: String) -> Box<RawValue> {
    RawValue::from_string(s).unwrap_or_else(|_| crate::protocol::raw_null())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn row_to_notification(r: &Row<'_>) -> rusqlite::Result<Notification> {
    let related_type: Option<String> = r.get(7)?;
    let related_id: Option<String> = r.get(8)?;
    Ok(Notification {
        id: r.get(0)?,
        user_id: r.get(1)?,
        kind: r.get(2)?,
        title: r.get(3)?,
        content: r.get(4)?,
        event_type: r.get(5)?,
        source: r.get(6)?,
        related_object: related_type.zip(related_id).map(|(kind, id)| RelatedObject { kind, id }),
        data: raw(r.get(9)?),
        created_at: from_millis(r.get(10)?),
        prev_id: r.get(11)?,
        read_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
        seen_at: r.get::<_, Option<i64>>(13)?.map(from_millis),
        archived_at: r.get::<_, Option<i64>>(14)?.map(from_millis),
        muted: r.get(15)?,
    })
}

/// The newest id of each chain `user` sees.
/// The newest id of each chain: of the rows retained, or the greatest one retention pruned (a chain pruned whole
/// still has the ids it reached: a client's cursor there is not "above the server's history").
fn latest(c: &Connection, user: &str) -> rusqlite::Result<Position> {
    c.prepare_cached(
        "SELECT max(COALESCE((SELECT max(id) FROM notifications WHERE user_id = ?1), 0),
                    COALESCE((SELECT up_to FROM pruned_floors WHERE user_id = ?1), 0)),
                max(COALESCE((SELECT max(id) FROM notifications WHERE user_id IS NULL), 0),
                    COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0))",
    )?
    .query_row([user], |r| Ok(Position { targeted: r.get(0)?, broadcast: r.get(1)? }))
}

/// (total, pruned, the user's counters): one key read.
fn counters(c: &Connection, user: &str) -> rusqlite::Result<(i64, i64, Counters)> {
    c.prepare_cached(COUNTERS)?.query_row([user], |r| Ok((r.get(0)?, r.get(1)?, counters_at(r, 2)?)))
}

/// The six `inbox_counts` columns in [`COUNTERS`]'s order, from column `at` of `r` (NULL — no row yet — is 0).
fn counters_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Counters> {
    Counters::from_columns(|i| r.get::<_, Option<i64>>(at + i).map(Option::unwrap_or_default))
}

fn counts(c: &Connection, user: &str) -> rusqlite::Result<Counts> {
    let (total, pruned, counters) = counters(c, user)?;
    Ok(counters.counts(total, pruned))
}

impl Tally {
    /// Write `user`'s pending changes now (before a change that sets their counters outright).
    fn flush_user(&mut self, tx: &Transaction<'_>, user: &str) -> rusqlite::Result<()> {
        match self.deltas.remove(user) {
            Some(d) => upsert_delta(tx, user, &d).map(drop),
            None => Ok(()),
        }
    }

    /// Write every pending change (one upsert per user, returning the counters it leaves), and say what the
    /// counts of everyone whose counts changed are now.
    fn finish(mut self, tx: &Transaction<'_>, memory: &mut Memory) -> rusqlite::Result<Vec<CountsChange>> {
        if self.changed.is_empty() {
            return Ok(Vec::new());
        }
        let (total, pruned) = match memory.ordinals {
            Some(ordinals) => ordinals,
            None => {
                let ordinals: (i64, i64) = tx
                    .prepare_cached(
                        "SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0),
                                COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_pruned_ord'), 0)",
                    )?
                    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                memory.ordinals = Some(ordinals);
                ordinals
            }
        };
        // The newest broadcast is the broadcast chain's head (broadcasts are never muted).
        let broadcast_up_to = memory.chains.head(None, || chain_head(tx, None))?;
        let mut out = Vec::with_capacity(self.changed.len());
        for user in std::mem::take(&mut self.changed) {
            // A change that leaves the counters as they were (archiving a read notification) writes none: the
            // version its state frame is ordered by is the commit's own here (`Committed`), not the row's, as it is
            // on PostgreSQL (`Tally::change`).
            let counters = match self.deltas.remove(&user) {
                Some(d) if d != Counters::default() => upsert_delta(tx, &user, &d)?,
                _ => counters(tx, &user)?.2,
            };
            out.push(CountsChange { user, counts: counters.counts(total, pruned), broadcast_up_to, version: 0 });
        }
        Ok(out)
    }
}

/// Add `d` to `user`'s counters; returns them as they are now. Two statements, not one with `RETURNING`: SQLite
/// gathers a `RETURNING` statement's rows in a temporary table it opens and closes per execution, which cost
/// more than the upsert itself (callgrind: ~29k instructions per targeted event, a tenth of Herald's; the point
/// read of the row the upsert just wrote, whose pages are in the cache, costs a few thousand).
fn upsert_delta(tx: &Transaction<'_>, user: &str, d: &Counters) -> rusqlite::Result<Counters> {
    tx.prepare_cached(
        "INSERT INTO inbox_counts (user_id, unread, unseen, unread_adj, unseen_adj) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE SET unread = unread + excluded.unread, unseen = unseen + excluded.unseen,
             unread_adj = unread_adj + excluded.unread_adj, unseen_adj = unseen_adj + excluded.unseen_adj",
    )?
    .execute(params![user, d.unread, d.unseen, d.unread_adj, d.unseen_adj])?;
    tx.prepare_cached(
        "SELECT unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj FROM inbox_counts WHERE user_id = ?1",
    )?
    .query_row([user], |r| counters_at(r, 0))
}

/// What the single writer keeps between commits, so the hot path reads it from memory: each value is either
/// absent (read from the database when needed) or what the database holds as of the writer's open transaction.
/// Whatever changes the underlying rows forgets the value; a failed commit forgets everything.
struct Memory {
    /// Each chain's head, the next row's `prev_id`.
    chains: Chains,
    /// Whether `applied_events_legacy` may still hold ids (`None`: not known yet). Nothing adds to it, so once it
    /// is empty it stays empty and new events skip its lookup.
    legacy_ids: Option<bool>,
    /// Recipients' preferences.
    prefs: Prefs,
    /// The global broadcast ordinals (`broadcast_ord`, `broadcast_pruned_ord` in `store_state`, see `Counters`)
    /// every commit that changes counts needs; forgotten by a broadcast and by pruning.
    ordinals: Option<(i64, i64)>,
    /// What the current retention run has left to sweep of the dedupe keys (`None`: no run under way).
    sweep: Option<sweep::Run>,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            chains: Chains::new(chains::DEFAULT_CAPACITY),
            legacy_ids: None,
            prefs: Prefs::default(),
            ordinals: None,
            sweep: None,
        }
    }

    /// The commit failed: its reads and writes may not be what the database holds.
    fn forget(&mut self) {
        self.chains.clear();
        self.legacy_ids = None;
        self.ordinals = None;
        self.sweep = None;
        self.prefs.clear();
    }
}

/// Preferences of recipients, kept by the writer across commits (at most `chains::DEFAULT_CAPACITY` users and
/// [`PREFS_CACHE_BYTES`] of type names: a user may set 1,000 types of 200 bytes): a recipient's are read by its
/// first row ([`Prefs::muted`]), so the writer knows who muted what without a query per row, and usually without
/// any. A change of preferences and a purge go through the same writer, which forgets that user.
#[derive(Default)]
struct Prefs {
    defaults: Arc<HashSet<String>>,
    users: HashMap<String, HashMap<String, TypeSetting>>,
    /// What `users` holds, roughly: type names and a map entry's overhead.
    bytes: usize,
}

/// The most the preferences cache holds (bytes of type names and entries), whatever the users set.
const PREFS_CACHE_BYTES: usize = 16 << 20;

/// What caching `set` costs, roughly.
fn prefs_bytes(user: &str, set: &HashMap<String, TypeSetting>) -> usize {
    user.len() + 64 + set.keys().map(|k| k.len() + 48).sum::<usize>()
}

impl Prefs {
    /// Forget `user`'s (their preferences changed, or they were erased).
    fn forget(&mut self, user: &str) {
        if let Some(set) = self.users.remove(user) {
            self.bytes = self.bytes.saturating_sub(prefs_bytes(user, &set));
        }
    }

    fn clear(&mut self) {
        self.users.clear();
        self.bytes = 0;
    }

    /// Whether `user` mutes notifications of type `kind`. A user's preferences are read on first use, one
    /// primary-key lookup in the writer's own transaction (in process: no round trip to save by reading a
    /// commit's recipients together, and a commit is mostly one recipient).
    fn muted(&mut self, tx: &Transaction<'_>, user: &str, kind: &str) -> rusqlite::Result<bool> {
        if !self.users.contains_key(user) {
            let set: HashMap<String, TypeSetting> = preferences_of(tx, user)?;
            let bytes = prefs_bytes(user, &set);
            if self.users.len() >= chains::DEFAULT_CAPACITY || self.bytes + bytes > PREFS_CACHE_BYTES {
                self.clear();
            }
            self.bytes += bytes;
            self.users.insert(user.to_owned(), set);
        }
        let set = self.users[user].get(kind).copied();
        Ok(is_muted(set, &self.defaults, kind))
    }
}

fn writer_loop(
    mut conn: checkpointer::Hooked,
    mut rx: mpsc::Receiver<Job>,
    batch_max: usize,
    listener: Option<Arc<dyn CommitListener>>,
    (file, lock): (DbFile, InboxLock),
    muted_defaults: MutedDefaults,
    committed: Arc<AtomicU64>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(64);
    let mut memory = Memory::new();
    while let Some(first) = rx.blocking_recv() {
        let mut weight = first.weight();
        batch.push(first);
        while weight < batch_max {
            match rx.try_recv() {
                Ok(job) => {
                    weight += job.weight();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // Close is answered here, after the batch's commit and the last checkpoint, not by the commit (taken out
        // of the batch only when there is one: no allocation per commit).
        let closers: Vec<Job> = match batch.iter().any(|j| matches!(j, Job::Close(_))) {
            true => batch.extract_if(.., |j| matches!(j, Job::Close(_))).collect(),
            false => Vec::new(),
        };
        let closing = !closers.is_empty();
        if !batch.is_empty() {
            let at = Committed { listener: listener.as_deref(), version: &committed };
            commit_batch(&mut conn.conn, &mut batch, &mut memory, at, &file, &muted_defaults);
        }
        // The checkpointer cannot catch up while commits keep coming (see `checkpointer`): past the limit the
        // writer checkpoints what its pass left, here, between two commits, so the next one starts the WAL again.
        if conn.over_limit() {
            if let Err(e) = checkpointer::checkpoint(&conn.conn) {
                tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
            }
        }
        if closing {
            rx.close();
            // Anything that raced in after Close is answered by the dropped reply channels.
            while let Ok(job) = rx.try_recv() {
                drop(job);
            }
            // Everything into the database file and the WAL emptied: a copy of the file alone, after a clean stop,
            // is the whole inbox (the readers' and the checkpointer's connections stay open until the process
            // ends, so SQLite's own checkpoint on the last close never runs).
            match checkpointer::checkpoint_truncate(&conn.conn) {
                Ok(true) => {}
                Ok(false) => tracing::warn!("the last checkpoint was blocked by a reader: the WAL still holds commits"),
                Err(e) => tracing::warn!(error = %e, "the last checkpoint failed: the WAL still holds commits"),
            }
            // Released before the close is answered: a restart in this process reopens the file at once.
            drop(lock);
            for job in closers {
                if let Job::Close(r) = job {
                    let _ = r.send(());
                }
            }
            return;
        }
    }
}

/// Who hears of a commit, and the version it raises.
#[derive(Clone, Copy)]
struct Committed<'a> {
    listener: Option<&'a dyn CommitListener>,
    version: &'a AtomicU64,
}

/// Run every job of the batch in one transaction, then answer them all. A failed transaction fails them all.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    memory: &mut Memory,
    committed: Committed<'_>,
    file: &DbFile,
    muted_defaults: &MutedDefaults,
) {
    let now = Utc::now();
    /// The jobs' answers, the counts they changed, and the commit's number.
    type Done = ((Vec<Answer>, Vec<CountsChange>), u64);
    let full = std::cell::Cell::new(false);
    let store_error = |e: rusqlite::Error| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            full.set(true);
        }
        store_error(e)
    };
    let result = (|| -> Result<Done, StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(store_error)?;
        let answers = (|| -> rusqlite::Result<(Vec<Answer>, Vec<CountsChange>)> {
            let mut answers = Vec::with_capacity(batch.len());
            let mut tally = Tally::default();
            memory.prefs.defaults = muted_defaults.get();
            for job in batch.iter() {
                answers.push(match job {
                    Job::Apply(writes, _) => Answer::Apply(
                        writes
                            .iter()
                            .map(|w| apply_one(&tx, w, now, &mut tally, memory))
                            .collect::<rusqlite::Result<_>>()?,
                    ),
                    Job::Change(user, ids, change, _) => Answer::Change(
                        ids.iter()
                            .map(|&id| change_one(&tx, user, id, *change, now, &mut tally))
                            .collect::<rusqlite::Result<_>>()?,
                    ),
                    Job::MarkAllRead(user, _) => Answer::MarkAllRead(mark_all_read(&tx, user, now, &mut tally)?),
                    Job::SeenAll(user, _) => Answer::SeenAll(seen_all(&tx, user, now, &mut tally)?),
                    Job::Delete(user, ids, _) => Answer::Delete(
                        ids.iter()
                            .map(|&id| delete(&tx, user, id, now, &mut tally, &mut memory.chains))
                            .collect::<rusqlite::Result<_>>()?,
                    ),
                    Job::SetPreferences(user, change, max_types, _) => {
                        let after = change.clone().apply(preferences_of(&tx, user)?);
                        Answer::SetPreferences(if after.len() > *max_types {
                            None
                        } else {
                            set_preferences(&tx, user, change, &after)?;
                            memory.prefs.forget(user);
                            Some(after)
                        })
                    }
                    Job::Upkeep(job, _) => {
                        match job {
                            Upkeep::Dedupe { .. } => memory.legacy_ids = None,
                            Upkeep::Expired { .. } | Upkeep::Beyond { .. } => memory.ordinals = None,
                            _ => {}
                        }
                        Answer::Upkeep(upkeep(&tx, job, now, memory, &mut tally)?)
                    }
                    Job::Close(_) => unreachable!("the writer loop answers close"),
                });
            }
            let changes = tally.finish(&tx, memory)?;
            Ok((answers, changes))
        })()
        .map_err(store_error)?;
        // Dropping `tx` rolls back: nothing is acknowledged into a file the path no longer names.
        file.check()?;
        // The commit number is raised before the commit, so a snapshot that holds this commit loads it or a later
        // one (see `opening`); a failed commit leaves a gap, which orders nothing wrongly.
        let number = committed.version.fetch_add(1, Ordering::AcqRel) + 1;
        tx.commit().map_err(store_error)?;
        Ok((answers, number))
    })();
    match result {
        Ok(((answers, mut changes), number)) => {
            // Counts carry this commit's version, `2 × number`: a session drops those not newer than the snapshot
            // it opened with (`Store::opening`: `2n - 1`).
            for c in &mut changes {
                c.version = 2 * number;
            }
            if let Some(listener) = committed.listener {
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
                super::tell(listener, applied, state, &changes);
            }
            for (job, answer) in batch.drain(..).zip(answers) {
                match (job, answer) {
                    (Job::Apply(_, r), Answer::Apply(a)) => drop(r.send(Ok(a))),
                    (Job::Change(_, _, _, r), Answer::Change(a)) => {
                        drop(r.send(Ok(a.into_iter().map(|c| c.map(|(n, _)| n)).collect())))
                    }
                    (Job::MarkAllRead(_, r), Answer::MarkAllRead(a)) => drop(r.send(Ok(a))),
                    (Job::SeenAll(_, r), Answer::SeenAll(a)) => drop(r.send(Ok(a))),
                    (Job::Delete(_, _, r), Answer::Delete(a)) => drop(r.send(Ok(a))),
                    (Job::SetPreferences(.., r), Answer::SetPreferences(a)) => drop(r.send(Ok(a))),
                    (Job::Upkeep(_, r), Answer::Upkeep(a)) => drop(r.send(Ok(a))),
                    _ => unreachable!("answers are built in job order"),
                }
            }
        }
        Err(failure) => {
            // Rolled back: what the writer remembers of it is not in the database (and its ids are given again).
            memory.forget();
            // A full disk: the WAL keeps everything since the last checkpoint (up to WAL_CHECKPOINT_PAGES), and
            // space freed meanwhile would go to its growth first, so the node would not recover until that much
            // is free. Everything committed goes into the database file and the WAL restarts empty, giving its
            // space back — before the answers, so that a caller's retry finds it.
            if full.get() {
                match checkpointer::checkpoint_truncate(conn) {
                    Ok(true) => {
                        tracing::warn!("the disk is full: the WAL was checkpointed and emptied to give its space back")
                    }
                    Ok(false) => tracing::warn!("the disk is full, and a reader kept the WAL from being emptied"),
                    Err(e) => {
                        tracing::warn!(error = %e, "the disk is full, and the checkpoint that would empty the WAL failed too")
                    }
                }
            }
            if let Some(repeats) = COMMIT_FAILED.admit(matches!(failure, StoreError::Unavailable(_))) {
                tracing::error!(error = %failure, jobs = batch.len(), suppressed = repeats.suppressed(), "inbox commit failed{repeats}");
            }
            for job in batch.drain(..) {
                let err = failure.clone();
                match job {
                    Job::Apply(_, r) => drop(r.send(Err(err))),
                    Job::Change(_, _, _, r) => drop(r.send(Err(err))),
                    Job::MarkAllRead(_, r) => drop(r.send(Err(err))),
                    Job::SeenAll(_, r) => drop(r.send(Err(err))),
                    Job::Delete(_, _, r) => drop(r.send(Err(err))),
                    Job::SetPreferences(.., r) => drop(r.send(Err(err))),
                    Job::Upkeep(_, r) => drop(r.send(Err(err))),
                    Job::Close(_) => unreachable!("the writer loop answers close"),
                }
            }
        }
    }
}

// One answer per request over the writer's channel: the largest (`Upkeep`'s report) is rare and short-lived.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Apply(Vec<WriteOutcome>),
    Change(Vec<Changed>),
    MarkAllRead(ReadAll),
    SeenAll(SeenAll),
    Delete(Vec<bool>),
    SetPreferences(Option<BTreeMap<String, TypeSetting>>),
    Upkeep(PruneStep),
}

fn apply_one(
    tx: &Transaction<'_>,
    w: &Write,
    now: DateTime<Utc>,
    tally: &mut Tally,
    memory: &mut Memory,
) -> rusqlite::Result<WriteOutcome> {
    let Memory { chains, legacy_ids, prefs, ordinals, sweep: _ } = memory;
    let Some(dedupe_key) = w.dedupe_key() else {
        return match w {
            Write::Alias(a) => set_alias(tx, a, now).map(|()| WriteOutcome::AliasSet),
            Write::Purge { users, .. } => purge(tx, users, tally, prefs, chains),
            Write::Notify(_) => unreachable!("a notification has a dedupe key"),
        };
    };
    // Recipients behind aliases are resolved before anything is written: an unknown alias writes nothing, not
    // even the dedupe key, so the same event succeeds once the alias is known.
    let mut resolved = None;
    if let Write::Notify(NewNotification { recipients: Recipients::Alias { kind, aliases }, .. }) = w {
        let mut users = Vec::with_capacity(aliases.len());
        for alias in aliases {
            let user: Option<String> = tx
                .prepare_cached("SELECT user_id FROM aliases WHERE kind = ?1 AND alias = ?2")?
                .query_row([kind, alias], |r| r.get(0))
                .optional()?;
            match user {
                Some(u) if !users.contains(&u) => users.push(u),
                Some(_) => {}
                None => {
                    // Already applied (before the user and their aliases were erased, say): a duplicate, not a
                    // recipient to wait for.
                    let applied: bool = tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM dedupe_keys WHERE key = ?1)")?
                        .query_row([&dedupe_key.0[..]], |r| r.get(0))?;
                    if applied {
                        return Ok(WriteOutcome::Duplicate);
                    }
                    return Ok(WriteOutcome::Unresolved { kind: kind.clone(), alias: alias.clone() });
                }
            }
        }
        resolved = Some(users);
    }
    let fresh = tx
        .prepare_cached("INSERT INTO dedupe_keys (key, applied_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
        .execute(params![&dedupe_key.0[..], millis(now)])?;
    if fresh == 0 {
        return Ok(WriteOutcome::Duplicate);
    }
    // Applied before ids were scoped (see MIGRATIONS): a duplicate, as it was then, until its row expires.
    let any_legacy = match *legacy_ids {
        Some(any) => any,
        None => {
            let any = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM applied_events_legacy)")?
                .query_row([], |r| r.get(0))?;
            *legacy_ids = Some(any);
            any
        }
    };
    if any_legacy {
        let legacy: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM applied_events_legacy WHERE event_id = ?1)")?
            .query_row([w.event_id()], |r| r.get(0))?;
        if legacy {
            return Ok(WriteOutcome::Duplicate);
        }
    }
    match w {
        Write::Notify(n) => {
            for a in &n.aliases {
                set_alias(tx, a, now)?;
            }
            let stored = match (&n.recipients, &resolved) {
                (Recipients::Everyone, _) => {
                    // It took the next broadcast ordinal.
                    *ordinals = None;
                    vec![insert(tx, n, None, false, now, chains)?]
                }
                (Recipients::Users(users), _) | (Recipients::Alias { .. }, Some(users)) => {
                    let mut stored = Vec::with_capacity(users.len());
                    for u in users {
                        let muted = prefs.muted(tx, u, &n.kind)?;
                        if !muted {
                            tally.add(u, 1, 1, 0, 0);
                        }
                        stored.push(insert(tx, n, Some(u), muted, now, chains)?);
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
fn purge(
    tx: &Transaction<'_>,
    users: &[String],
    tally: &mut Tally,
    prefs: &mut Prefs,
    chains: &mut Chains,
) -> rusqlite::Result<WriteOutcome> {
    let mut rows = 0u64;
    for u in users {
        rows += tx.prepare_cached("DELETE FROM notifications WHERE user_id = ?1")?.execute([u])? as u64;
        tx.prepare_cached("DELETE FROM broadcast_state WHERE user_id = ?1")?.execute([u])?;
        tx.prepare_cached("DELETE FROM user_state WHERE user_id = ?1")?.execute([u])?;
        tx.prepare_cached("DELETE FROM pruned_floors WHERE user_id = ?1")?.execute([u])?;
        tx.prepare_cached("DELETE FROM aliases WHERE user_id = ?1")?.execute([u])?;
        tx.prepare_cached("DELETE FROM preferences WHERE user_id = ?1")?.execute([u])?;
        tx.prepare_cached("DELETE FROM inbox_counts WHERE user_id = ?1")?.execute([u])?;
        tally.deltas.remove(u.as_str());
        tally.touch(u);
        prefs.forget(u);
        chains.forget_user(u);
    }
    Ok(WriteOutcome::Purged { rows })
}

fn set_alias(tx: &Transaction<'_>, a: &AliasRecord, now: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO aliases (kind, alias, user_id, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, alias) DO UPDATE SET user_id = excluded.user_id, updated_at = excluded.updated_at",
    )?
    .execute(params![a.kind, a.alias, a.user, millis(now)])?;
    Ok(())
}

/// What `user` set, by type.
fn preferences_of<C: FromIterator<(String, TypeSetting)>>(c: &Connection, user: &str) -> rusqlite::Result<C> {
    let mut stmt = c.prepare_cached("SELECT type, setting FROM preferences WHERE user_id = ?1")?;
    let rows = stmt.query_map([user], |r| Ok((r.get::<_, String>(0)?, setting_from(&r.get::<_, String>(1)?))))?;
    rows.collect()
}

/// Write a change of `user`'s preferences: a replacement writes them all (`after`), a merge only the types it
/// names (a user with 1,000 types set changing one writes one row).
fn set_preferences(
    tx: &Transaction<'_>,
    user: &str,
    change: &PreferencesChange,
    after: &BTreeMap<String, TypeSetting>,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO preferences (user_id, type, setting) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, type) DO UPDATE SET setting = excluded.setting",
    )?;
    match change {
        PreferencesChange::Replace(_) => {
            tx.prepare_cached("DELETE FROM preferences WHERE user_id = ?1")?.execute([user])?;
            for (kind, setting) in after {
                upsert.execute(params![user, kind, setting_name(*setting)])?;
            }
        }
        PreferencesChange::Merge(changes) => {
            for (kind, setting) in changes {
                match setting {
                    Some(setting) => upsert.execute(params![user, kind, setting_name(*setting)])?,
                    None => tx
                        .prepare_cached("DELETE FROM preferences WHERE user_id = ?1 AND type = ?2")?
                        .execute(params![user, kind])?,
                };
            }
        }
    }
    Ok(())
}

fn insert(
    tx: &Transaction<'_>,
    n: &NewNotification,
    user: Option<&String>,
    muted: bool,
    now: DateTime<Utc>,
    chains: &mut Chains,
) -> rusqlite::Result<Notification> {
    // The previous row of this chain: the user's newest targeted row that was not muted (muted rows are never
    // pushed, so a client's cursor never reaches them), or (user NULL) the newest broadcast. The single writer
    // keeps each chain's head in memory (`Chains`), read from the database once.
    let prev_id = chains.head(user.map(String::as_str), || chain_head(tx, user.map(String::as_str)))?;
    // A broadcast takes the next ordinal (see `Counters`): every user's counts grow by one without a row each.
    let ord: Option<i64> = match user {
        Some(_) => None,
        None => Some(
            tx.prepare_cached(
                "INSERT INTO store_state (name, value) VALUES ('broadcast_ord', 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            )?
            .query_row([], |r| r.get(0))?,
        ),
    };
    let mut stmt = tx.prepare_cached(
        "INSERT INTO notifications
             (event_id, user_id, kind, title, content, event_type, source, related_type, related_id, data, body,
              created_at, prev_id, muted, ord)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    stmt.execute(params![
        n.event_id,
        user,
        n.kind,
        n.title,
        n.content,
        n.event_type,
        n.source,
        n.related_object.as_ref().map(|r| &r.kind),
        n.related_object.as_ref().map(|r| &r.id),
        n.data.get(),
        n.body.get(),
        millis(now),
        prev_id,
        muted,
        ord,
    ])?;
    let id = tx.last_insert_rowid();
    if !muted {
        chains.advance(user.map(String::as_str), id);
    }
    // Millisecond precision, as stored, so a live frame and a later REST read agree.
    Ok(n.stored(id, prev_id, user.cloned(), muted, from_millis(millis(now))))
}

/// The head of a chain as the database has it (see `Chains`): `user`'s newest targeted row that is not muted, or
/// (`None`) the newest broadcast; 0 when there is none. `IS` matches NULL too.
fn chain_head(tx: &Transaction<'_>, user: Option<&str>) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT id FROM notifications WHERE user_id IS ?1 AND muted = 0 ORDER BY id DESC LIMIT 1")?
        .query_row([user], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// One background write: the probe, or one batch of pruning (see `retention`).
fn upkeep(
    tx: &Transaction<'_>,
    job: &Upkeep,
    now: DateTime<Utc>,
    memory: &mut Memory,
    tally: &mut Tally,
) -> rusqlite::Result<PruneStep> {
    let step = |report: PruneReport| PruneStep { report, more: false };
    let deleted = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<Vec<Pruned>> {
        let mut stmt = tx.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(Pruned { id: r.get(0)?, user: r.get(1)?, ord: r.get(2)?, unread: r.get(3)?, unseen: r.get(4)? })
        })?;
        rows.collect()
    };
    match job {
        Upkeep::Probe => {
            tx.prepare_cached(
                "INSERT INTO store_state (name, value) VALUES ('probe', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute([millis(now)])?;
            Ok(step(PruneReport::default()))
        }
        Upkeep::Expired { cutoff, batch } => {
            let rows = deleted(
                &format!(
                    "{OLDEST} DELETE FROM notifications WHERE id IN (SELECT id FROM oldest WHERE created_at < ?1)
                     RETURNING {PRUNED}"
                ),
                params![cutoff, *batch as i64],
            )?;
            raise_floors(tx, &rows, &mut memory.chains, tally).map(step)
        }
        Upkeep::Beyond { user, keep, batch } => {
            let rows = deleted(
                &format!(
                    "DELETE FROM notifications WHERE id IN (
                         SELECT id FROM (SELECT id FROM notifications WHERE user_id = ?1
                                         ORDER BY id DESC LIMIT -1 OFFSET ?2)
                         ORDER BY id LIMIT ?3)
                     RETURNING {PRUNED}"
                ),
                params![user, *keep as i64, *batch as i64],
            )?;
            raise_floors(tx, &rows, &mut memory.chains, tally).map(step)
        }
        Upkeep::Dedupe { cutoff, now, batch } => sweep_dedupe(tx, *cutoff, *now, *batch, &mut memory.sweep),
        Upkeep::Orphans { batch } => {
            let states = tx.prepare_cached(ORPHANED_STATES)?.execute([*batch as i64])?;
            Ok(step(PruneReport { broadcast_states: states as u64, ..Default::default() }))
        }
        #[cfg(test)]
        Upkeep::Pragma(sql) => tx.execute_batch(sql).map(|()| step(PruneReport::default())),
    }
}

/// Reads made again when a commit lands between the commit number loaded before a snapshot and after it.
const OPENING_TRIES: usize = 3;

/// A session's opening read (`Store::opening`): its position and counts from one snapshot, and that snapshot's
/// version, `2n - 1`, between the counts of commits up to `n - 1` (`2(n - 1)`: in it, so older) and those of
/// commit `n` on (`2n`: taken as newer). The writer raises the commit number before each commit, one at a time,
/// so `n` loaded before the first read means every commit below `n` is in the snapshot; loaded again after the
/// last read and unchanged, nothing above `n` is. A commit between the two loads (`between_reads` makes one in
/// tests) reads again; if commits keep coming, the lower bound stands: counts of commits the snapshot already
/// holds are then applied again after it, in commit order, so the badge ends on the newest — the upper bound
/// would drop the counts of commits it does not hold, and with no later commit for the user the badge would
/// stay behind.
/// How far retention pruned `user`'s history: the newest pruned id of each chain (0: none).
fn history_floor(c: &Connection, user: &str) -> rusqlite::Result<(i64, i64)> {
    c.prepare_cached(
        "SELECT COALESCE((SELECT up_to FROM pruned_floors WHERE user_id = ?1), 0),
                COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0)",
    )?
    .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
}

fn opening_snapshot(
    c: &Connection,
    user: &str,
    committed: &AtomicU64,
    mut between_reads: impl FnMut(),
) -> rusqlite::Result<(Position, Counts, u64)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let before = committed.load(Ordering::Acquire);
        // One read transaction: one snapshot for both reads (taken at the first).
        c.execute_batch("BEGIN")?;
        let read = (|| -> rusqlite::Result<_> {
            let latest = latest(c, user)?;
            between_reads();
            Ok((latest, counts(c, user)?))
        })();
        let end = c.execute_batch("COMMIT");
        let (latest, counts) = read?;
        end?;
        if committed.load(Ordering::Acquire) == before || tries == OPENING_TRIES {
            return Ok((latest, counts, 2 * before - 1));
        }
    }
}

/// One step of the dedupe keys' sweep (`sweep.rs`): the next `batch` keys in key order of this run's ranges,
/// those applied before `cutoff` deleted; when the run's ranges are done, where it stopped is kept for the next
/// run. Ids from before scoping (`applied_events_legacy`, which only shrinks) still go oldest first, `batch` a
/// step, through their own index by age, until none is left.
fn sweep_dedupe(
    tx: &Transaction<'_>,
    cutoff: i64,
    now: i64,
    batch: usize,
    sweeping: &mut Option<sweep::Run>,
) -> rusqlite::Result<PruneStep> {
    let run = match sweeping {
        Some(run) => run,
        None => {
            let last = tx
                .prepare_cached("SELECT stopped, at FROM dedupe_sweep WHERE id = 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            sweeping.insert(sweep::Run::new(now, last))
        }
    };
    let mut keys = 0;
    if let Some((after, before)) = run.ranges.first_mut() {
        // This step's keys end at the last of the next `batch`; the expired ones up to it go.
        let (last, scanned): (Option<Vec<u8>>, usize) = tx
            .prepare_cached(
                "SELECT max(key), count(*) FROM (SELECT key FROM dedupe_keys
                     WHERE key > ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key LIMIT ?3)",
            )?
            .query_row(params![&after[..], before.as_deref(), batch as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some(last) = &last {
            keys = tx
                .prepare_cached("DELETE FROM dedupe_keys WHERE key > ?1 AND key <= ?2 AND applied_at < ?3")?
                .execute(params![&after[..], &last[..], cutoff])?;
        }
        match last {
            Some(last) if scanned >= batch => *after = last,
            _ => {
                run.ranges.remove(0);
            }
        }
    }
    let legacy = tx
        .prepare_cached(
            "DELETE FROM applied_events_legacy WHERE event_id IN
                 (SELECT event_id FROM applied_events_legacy WHERE applied_at < ?1 ORDER BY applied_at LIMIT ?2)",
        )?
        .execute(params![cutoff, batch as i64])?;
    let swept = run.ranges.is_empty();
    if swept {
        tx.prepare_cached(
            "INSERT INTO dedupe_sweep (id, stopped, at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET stopped = excluded.stopped, at = excluded.at",
        )?
        .execute(params![&run.to[..], run.at])?;
        *sweeping = None;
    }
    Ok(PruneStep {
        report: PruneReport { dedupe_keys: (keys + legacy) as u64, ..Default::default() },
        more: !swept || legacy > 0,
    })
}

/// The rows age pruning looks at (`oldest`): the `?2` oldest by id, broadcasts only those older than the first
/// one created at or after `?1` (see `retention.rs`). That first one is looked for among the `?2` oldest
/// broadcasts only: no younger one can be among the `?2` rows.
const OLDEST: &str = "WITH hold AS (SELECT COALESCE(min(id), 9223372036854775807) AS id FROM
        (SELECT id, created_at FROM notifications WHERE user_id IS NULL ORDER BY id LIMIT ?2) WHERE created_at >= ?1),
    oldest AS (SELECT id, user_id, created_at FROM notifications
        WHERE user_id IS NOT NULL OR id < (SELECT id FROM hold) ORDER BY id LIMIT ?2)";

/// What a pruning `DELETE` returns of each row: enough to raise the floors and correct the counters.
const PRUNED: &str = "id, user_id, ord, read_at IS NULL AND archived_at IS NULL AND muted = 0,
    seen_at IS NULL AND archived_at IS NULL AND muted = 0";

struct Pruned {
    id: i64,
    user: Option<String>,
    ord: Option<i64>,
    /// A targeted row that counted as unread / unseen.
    unread: bool,
    unseen: bool,
}

/// Take out of each user's counters the (unread, unseen) adjustment their state row of the pruned broadcast `?1`
/// holds (see `Counters`), in one statement: the rows never leave SQLite (a broadcast read by 300,000 users was
/// read and written back row by row in the writer's transaction). An upsert: a user whose counters row the same
/// commit's tally has not written yet (their change of the broadcast, just before) gets one, which the tally then
/// adds to. The state rows stay, orphaned, for
/// [`PruneSteps::forget_pruned_broadcast_states`] to delete a batch at a time.
const UNCOUNT_PRUNED_BROADCAST: &str = "INSERT INTO inbox_counts (user_id, unread_adj, unseen_adj)
    SELECT a.user_id, -a.unread, -a.unseen
    FROM (SELECT s.user_id,
            (s.notification_id > COALESCE(w.read_all_up_to, 0))
              - (s.deleted = 0 AND s.archived_at IS NULL
                 AND (s.unread = 1 OR (s.read_at IS NULL AND s.notification_id > COALESCE(w.read_all_up_to, 0))))
              AS unread,
            (s.notification_id > COALESCE(w.seen_all_up_to, 0))
              - (s.deleted = 0 AND s.archived_at IS NULL
                 AND s.seen_at IS NULL AND s.notification_id > COALESCE(w.seen_all_up_to, 0)) AS unseen
        FROM broadcast_state s LEFT JOIN user_state w ON w.user_id = s.user_id
        WHERE s.notification_id = ?1) AS a
    WHERE a.unread <> 0 OR a.unseen <> 0
    ON CONFLICT (user_id) DO UPDATE SET unread_adj = unread_adj + excluded.unread_adj,
        unseen_adj = unseen_adj + excluded.unseen_adj";

/// Delete up to `?1` state rows of pruned broadcasts: at or below the broadcast floor (through the index by
/// notification, oldest first) and without their notification (a broadcast an older release pruned out of order
/// may still be below the floor).
const ORPHANED_STATES: &str = "DELETE FROM broadcast_state WHERE (user_id, notification_id) IN (
    SELECT s.user_id, s.notification_id FROM broadcast_state s
    WHERE s.notification_id <= COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_floor'), 0)
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = s.notification_id)
    LIMIT ?1)";

/// Raise the floors over pruned `rows`, count what the targeted ones took from their users' counters into the
/// commit's `tally` (written, and told to the listener, with the commit's other changes), and take the pruned
/// broadcasts' state rows out of their users' counters ([`UNCOUNT_PRUNED_BROADCAST`]: those users are not told;
/// their counts do not move unless they had marked the broadcast unread, and the counts of everyone without a
/// state row of it move untold too).
fn raise_floors(
    tx: &Transaction<'_>,
    rows: &[Pruned],
    chains: &mut Chains,
    tally: &mut Tally,
) -> rusqlite::Result<PruneReport> {
    for r in rows {
        match &r.user {
            Some(user) => chains.forget_user(user),
            None => chains.forget_broadcast(),
        }
    }
    let pairs: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.id, r.user.clone())).collect();
    let floors = Floors::of(&pairs);
    for (user, up_to) in &floors.users {
        tx.prepare_cached(
            "INSERT INTO pruned_floors (user_id, up_to) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
        )?
        .execute(params![user, up_to])?;
    }
    for r in rows {
        if let (Some(user), true) = (&r.user, r.unread || r.unseen) {
            tally.add(user, -i64::from(r.unread), -i64::from(r.unseen), 0, 0);
        }
    }
    if let Some(up_to) = floors.broadcast {
        tx.prepare_cached(
            "INSERT INTO store_state (name, value) VALUES ('broadcast_floor', ?1)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute([up_to])?;
    }
    if let Some(ord) = rows.iter().filter_map(|r| r.ord).max() {
        tx.prepare_cached(
            "INSERT INTO store_state (name, value) VALUES ('broadcast_pruned_ord', ?1)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute([ord])?;
    }
    for id in &floors.broadcast_ids {
        tx.prepare_cached(UNCOUNT_PRUNED_BROADCAST)?.execute([id])?;
    }
    Ok(PruneReport { notifications: rows.len() as u64, ..Default::default() })
}

/// The notification `id` as `user` sees it, or `None` when it is not in their inbox.
fn visible(tx: &Transaction<'_>, user: &str, id: i64) -> rusqlite::Result<Option<Notification>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT * FROM (SELECT {TARGETED} FROM notifications WHERE user_id = ?1 AND id = ?2
             UNION ALL SELECT * FROM ({} AND n.id = ?2))",
            LIST.broadcasts("")
        )
    });
    tx.prepare_cached(&SQL)?.query_row(params![user, id], row_to_notification).optional()
}

/// `user`'s read_all and seen_all watermarks (ids).
fn watermarks(tx: &Transaction<'_>, user: &str) -> rusqlite::Result<(i64, i64)> {
    tx.prepare_cached(
        "SELECT COALESCE((SELECT read_all_up_to FROM user_state WHERE user_id = ?1), 0),
                COALESCE((SELECT seen_all_up_to FROM user_state WHERE user_id = ?1), 0)",
    )?
    .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Count the move from `before` to `after` of notification `n` as `user` sees it.
fn tally_change(
    tx: &Transaction<'_>,
    tally: &mut Tally,
    user: &str,
    n: &Notification,
    after: RowState,
) -> rusqlite::Result<()> {
    let watermarks = if n.user_id.is_none() { Some(watermarks(tx, user)?) } else { None };
    tally.change(user, n.id, watermarks, RowState::of(n), after);
    Ok(())
}

fn change_one(
    tx: &Transaction<'_>,
    user: &str,
    id: i64,
    change: Change,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> rusqlite::Result<Changed> {
    let Some(n) = visible(tx, user, id)? else {
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
    // `?3` (now) is in every statement, so one parameter list fits them all.
    let set = match change {
        Change::Read => "read_at = ?3, seen_at = COALESCE(seen_at, ?3)",
        Change::Unread => "read_at = NULLIF(?3, ?3)",
        Change::Archive => "archived_at = ?3",
        Change::Unarchive => "archived_at = NULLIF(?3, ?3)",
    };
    if n.user_id.is_some() {
        tx.prepare_cached(&format!("UPDATE notifications SET {set} WHERE user_id = ?1 AND id = ?2"))?
            .execute(params![user, id, millis(now)])?;
    } else {
        // A new state row starts empty: its read and seen state still come from the watermarks.
        tx.prepare_cached(
            "INSERT INTO broadcast_state (user_id, notification_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![user, id])?;
        let set = match change {
            Change::Read => "read_at = ?3, seen_at = COALESCE(seen_at, ?3), unread = 0",
            Change::Unread => "read_at = NULLIF(?3, ?3), unread = 1",
            _ => set,
        };
        tx.prepare_cached(&format!("UPDATE broadcast_state SET {set} WHERE user_id = ?1 AND notification_id = ?2"))?
            .execute(params![user, id, millis(now)])?;
    }
    let after = visible(tx, user, id)?.expect("still visible: only its state changed");
    tally_change(tx, tally, user, &n, RowState::of(&after))?;
    Ok(Some((after, true)))
}

fn mark_all_read(tx: &Transaction<'_>, user: &str, now: DateTime<Utc>, tally: &mut Tally) -> rusqlite::Result<ReadAll> {
    tally.flush_user(tx, user)?;
    tally.touch(user);
    let at = millis(now);
    tx.prepare_cached(
        "UPDATE notifications SET read_at = ?2, seen_at = COALESCE(seen_at, ?2) WHERE user_id = ?1 AND read_at IS NULL",
    )?
    .execute(params![user, at])?;
    let up_to = latest(tx, user)?.max();
    tx.prepare_cached(
        "INSERT INTO user_state (user_id, read_all_up_to, read_all_at, seen_all_up_to, seen_all_at)
         VALUES (?1, ?2, ?3, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET read_all_up_to = excluded.read_all_up_to,
             read_all_at = excluded.read_all_at, seen_all_up_to = excluded.seen_all_up_to,
             seen_all_at = excluded.seen_all_at",
    )?
    .execute(params![user, up_to, at])?;
    tx.prepare_cached("UPDATE broadcast_state SET unread = 0 WHERE user_id = ?1 AND unread = 1")?.execute([user])?;
    // Everything is read, so seen: every counter restarts from the watermarks (see `Counters`).
    tx.prepare_cached(
        "INSERT INTO inbox_counts (user_id, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj)
         VALUES (?1, 0, 0, (SELECT COALESCE(max(value), 0) FROM store_state WHERE name = 'broadcast_ord'),
                 (SELECT COALESCE(max(value), 0) FROM store_state WHERE name = 'broadcast_ord'), 0, 0)
         ON CONFLICT (user_id) DO UPDATE SET unread = 0, unseen = 0, read_ord = excluded.read_ord,
             seen_ord = excluded.seen_ord, unread_adj = 0, unseen_adj = 0",
    )?
    .execute([user])?;
    Ok(ReadAll { up_to, read_at: from_millis(at) })
}

fn seen_all(tx: &Transaction<'_>, user: &str, now: DateTime<Utc>, tally: &mut Tally) -> rusqlite::Result<SeenAll> {
    tally.flush_user(tx, user)?;
    tally.touch(user);
    let at = millis(now);
    tx.prepare_cached("UPDATE notifications SET seen_at = ?2 WHERE user_id = ?1 AND seen_at IS NULL")?
        .execute(params![user, at])?;
    let up_to = latest(tx, user)?.max();
    tx.prepare_cached(
        "INSERT INTO user_state (user_id, read_all_up_to, read_all_at, seen_all_up_to, seen_all_at)
         VALUES (?1, 0, 0, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET seen_all_up_to = excluded.seen_all_up_to,
             seen_all_at = excluded.seen_all_at",
    )?
    .execute(params![user, up_to, at])?;
    tx.prepare_cached(
        "INSERT INTO inbox_counts (user_id, unseen, seen_ord, unseen_adj)
         VALUES (?1, 0, (SELECT COALESCE(max(value), 0) FROM store_state WHERE name = 'broadcast_ord'), 0)
         ON CONFLICT (user_id) DO UPDATE SET unseen = 0, seen_ord = excluded.seen_ord, unseen_adj = 0",
    )?
    .execute([user])?;
    Ok(SeenAll { up_to, seen_at: from_millis(at) })
}

fn delete(
    tx: &Transaction<'_>,
    user: &str,
    id: i64,
    now: DateTime<Utc>,
    tally: &mut Tally,
    chains: &mut Chains,
) -> rusqlite::Result<bool> {
    let Some(n) = visible(tx, user, id)? else {
        return Ok(false);
    };
    if n.user_id.is_some() {
        tx.prepare_cached("DELETE FROM notifications WHERE user_id = ?1 AND id = ?2")?.execute(params![user, id])?;
        chains.forget_user(user);
    } else {
        tx.prepare_cached(
            "INSERT INTO broadcast_state (user_id, notification_id, read_at, deleted) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (user_id, notification_id) DO UPDATE SET deleted = 1",
        )?
        .execute(params![user, id, millis(now)])?;
    }
    // Gone counts like hidden: nothing of it counts any more.
    let gone = RowState { hidden: true, ..RowState::of(&n) };
    tally_change(tx, tally, user, &n, gone)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users who set 1,000 types of 200 bytes each (~250 KB cached apiece) cannot grow the writer's preferences
    /// cache past its byte bound: before, 65,536 such users could hold ~16 GB.
    #[test]
    fn the_writers_preferences_cache_stays_within_its_byte_bound() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE preferences (user_id TEXT, type TEXT, setting TEXT, PRIMARY KEY (user_id, type))",
        )
        .unwrap();
        let users = PREFS_CACHE_BYTES / 200_000 + 10;
        {
            let tx = conn.transaction().unwrap();
            let mut insert = tx.prepare("INSERT INTO preferences VALUES (?1, ?2, 'muted')").unwrap();
            for u in 0..users {
                for t in 0..1000 {
                    insert.execute(params![format!("u{u}"), format!("{t:0>200}")]).unwrap();
                }
            }
            drop(insert);
            tx.commit().unwrap();
        }
        let tx = conn.transaction().unwrap();
        let mut prefs = Prefs::default();
        let mut most = 0;
        for u in 0..users {
            assert!(
                prefs.muted(&tx, &format!("u{u}"), &format!("{:0>200}", 7)).unwrap(),
                "read right whatever is cached"
            );
            assert!(prefs.bytes <= PREFS_CACHE_BYTES, "{} bytes cached", prefs.bytes);
            most = most.max(prefs.users.len());
        }
        assert!(most < users, "the cache was cleared on the way ({most} of {users} users at most)");
        prefs.forget("u0");
        prefs.forget(&format!("u{}", users - 1));
        let expected: usize = prefs.users.iter().map(|(u, set)| prefs_bytes(u, set)).sum();
        assert_eq!(prefs.bytes, expected, "forgetting a user gives its bytes back");
    }
    use crate::config::Settings;

    /// Every list query with a filter walks broadcasts through their type or related-object index, from the
    /// read_all watermark, or from the user's own states, and archived targeted rows through their index: never
    /// through every retained broadcast, nor all the user's rows for the archived ones (the plain
    /// list, which stops at the page's end as every row matches, is the one that walks them in id order). The
    /// statistics an `ANALYZE` leaves behind change none of it.
    #[test]
    fn filtered_lists_walk_an_index_or_the_users_states_not_every_broadcast() {
        let mut c = Connection::open_in_memory().unwrap();
        Migrations::from_slice(MIGRATIONS).to_latest(&mut c).unwrap();
        let plans = |c: &Connection| {
            let mut all = Vec::new();
            for archived in [false, true] {
                for unread_only in [false, true] {
                    for (kind, related) in
                        [(None, None), (Some("a"), None), (None, Some(("t", None))), (None, Some(("t", Some("i"))))]
                    {
                        let q = ListQuery::filtered(10, unread_only, archived, kind, related);
                        let (sql, filters) = (list::sql(&q, &LIST), q.filters());
                        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                        let fixed: [&dyn rusqlite::ToSql; 3] = [&"u", &i64::MAX, &10];
                        let args = fixed.into_iter().chain(filters.iter().map(|(_, v)| v as &dyn rusqlite::ToSql));
                        let plan: Vec<String> = stmt
                            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                            .unwrap()
                            .map(Result::unwrap)
                            .collect();
                        all.push((q, plan));
                    }
                }
            }
            all
        };
        let check = |c: &Connection| {
            for (q, plan) in plans(c) {
                // A whole table (`SCAN n`), not the rows a part of the union returns (`SCAN b0`).
                let tables = ["notifications", "n", "broadcast_state", "s", "user_state", "w"];
                let table_scan = |step: &&String| {
                    step.strip_prefix("SCAN ")
                        .and_then(|rest| rest.split(' ').next())
                        .is_some_and(|t| tables.contains(&t))
                };
                assert!(!plan.iter().any(|step| table_scan(&step)), "{q:?}: {plan:#?}");
                let archived_rows = plan.iter().any(|step| step.contains("USING INDEX notifications_archived"));
                assert_eq!(archived_rows, q.archived, "archived targeted rows, through their index: {q:?}: {plan:#?}");
                // An index walk from the cursor down, in id order: never all the rows of a type, sorted.
                for step in plan.iter().filter(|step| step.starts_with("SEARCH n USING INDEX")) {
                    assert!(step.contains("id<?"), "{q:?} sorts what it walks: {plan:#?}");
                }
                let filtered = q.archived || q.unread_only || !q.filters().is_empty();
                let walks = plan.iter().filter(|step| step.starts_with("SEARCH n "));
                for walk in walks.filter(|_| filtered) {
                    assert!(
                        walk.contains("notifications_broadcast_")
                            || walk.contains("INTEGER PRIMARY KEY")
                            || walk.contains("id>? AND id<?"),
                        "{q:?} walks every broadcast: {plan:#?}"
                    );
                }
            }
        };
        check(&c);
        // Skewed statistics: many broadcasts of one type, few users.
        c.execute_batch(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 2000)
             INSERT INTO notifications (event_id, user_id, kind, title, content, event_type, related_type, related_id,
                                        data, body, created_at)
             SELECT x, CASE WHEN x % 10 = 0 THEN 'u' || (x % 3) END, 'a', '', '', 'e', 't', 'i', '{}', '{}', 0 FROM i;
             ANALYZE;",
        )
        .unwrap();
        check(&c);
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, None).unwrap()
    }

    /// The functions this executable imports from shared libraries: the undefined entries of its ELF64
    /// (little-endian) dynamic symbol table.
    fn dynamic_imports(elf: &[u8]) -> Vec<String> {
        let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
        assert!(elf.starts_with(b"\x7fELF\x02\x01"), "not a little-endian ELF64 executable");
        let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
        let section = |i: usize| shoff + i * shentsize;
        let dynsym = (0..shnum).map(section).find(|&h| u32_at(h + 4) == 11).expect("no .dynsym"); // SHT_DYNSYM
        let strtab = u64_at(section(u32_at(dynsym + 0x28)) + 0x18);
        let (symbols, size) = (u64_at(dynsym + 0x18), u64_at(dynsym + 0x20));
        (symbols..symbols + size)
            .step_by(24)
            .filter(|&sym| u16_at(sym + 6) == 0 && u32_at(sym) != 0) // SHN_UNDEF, named
            .map(|sym| {
                let name = &elf[strtab + u32_at(sym)..];
                String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap()]).into_owned()
            })
            .collect()
    }

    /// `.cargo/config.toml` compiles the bundled SQLite with `HAVE_FDATASYNC`, as its configure script does on
    /// Linux: without it the amalgamation calls `fsync`, which also writes the WAL's modification time back on
    /// every commit. Nothing else in the binary syncs files, so the import table shows which one SQLite calls.
    #[test]
    fn sqlite_syncs_with_fdatasync_not_fsync() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let imports = dynamic_imports(&exe);
        assert!(imports.iter().any(|f| f == "pread64"), "the import table was not read: {imports:?}");
        assert!(imports.iter().any(|f| f == "fdatasync"), "SQLite does not call fdatasync");
        assert!(!imports.iter().any(|f| f == "fsync"), "something calls fsync");
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        crate::inbox::contract::run_all(&store).await;
        store.close().await;
    }

    /// A second store on an inbox file another one serves is refused (after waiting `LOCK_WAIT` for a closing one),
    /// saying which process holds it; once the first is closed, the file opens at once. Before, two processes
    /// served one file side by side: neither pushed what the other stored, and their `prev_id` chains skipped
    /// each other's ids.
    #[tokio::test]
    async fn a_second_store_on_an_inbox_file_in_use_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&dir);
        let path = dir.path().join("inbox.db");
        let started = std::time::Instant::now();
        let refused = SqliteStore::open(&path, &Settings::defaults().store, None).err().expect("refused");
        assert!(started.elapsed() >= LOCK_WAIT, "it waited for the holder to close first");
        let text = refused.to_string();
        let pid = format!("(pid {})", std::process::id());
        assert!(text.contains("in use by another Herald process") && text.contains(&pid), "{text}");
        first.close().await;
        let started = std::time::Instant::now();
        let second = SqliteStore::open(&path, &Settings::defaults().store, None).expect("free once closed");
        assert!(started.elapsed() < LOCK_WAIT, "no wait once the holder closed");
        second.close().await;
    }

    /// A state change that leaves the counts as they were writes no counters row (it would add a page to the
    /// commit's WAL for nothing); one that moves them does. A trigger in the database counts the writes.
    #[tokio::test]
    async fn a_counts_neutral_state_change_writes_no_counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let w = Write::Notify(crate::inbox::contract::draft("neutral", Recipients::Users(vec!["u".into()])));
        let id = match &store.apply(vec![w]).await.unwrap()[0] {
            WriteOutcome::Stored(rows) => rows[0].id,
            other => panic!("{other:?}"),
        };
        store.mark_read("u", id).await.unwrap().unwrap();
        let c = Connection::open(dir.path().join("inbox.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE counter_writes (n INTEGER);
             CREATE TRIGGER counted AFTER UPDATE ON inbox_counts BEGIN INSERT INTO counter_writes VALUES (1); END;",
        )
        .unwrap();
        let writes = || c.query_row("SELECT count(*) FROM counter_writes", [], |r| r.get::<_, i64>(0)).unwrap();
        store.change("u", id, Change::Archive).await.unwrap().unwrap();
        assert_eq!(writes(), 0, "archiving a read notification moves no count");
        store.change("u", id, Change::Unarchive).await.unwrap().unwrap();
        store.change("u", id, Change::Unread).await.unwrap().unwrap();
        assert_eq!(writes(), 1, "marking it unread does");
        store.close().await;
    }

    /// A session opening while commits land never takes for its snapshot's a commit the snapshot does not hold: the
    /// counts of the user's commit that lands after the snapshot was taken are newer than its version, or read
    /// again. Before, the commit number was loaded after the reads: a commit for the user, then one for another
    /// user, landing in between gave a version above the user's commit, whose counts the badge then dropped; with no
    /// later change for the user, the badge stayed one behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_opening_snapshot_never_claims_a_commit_it_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let store = Arc::new(open(&dir));
        let (s, handle) = (store.clone(), tokio::runtime::Handle::current());
        let (counts, version, commit_for_a) = tokio::task::spawn_blocking(move || {
            let notify = |id: &str, user: &str| {
                let w = Write::Notify(crate::inbox::contract::draft(id, Recipients::Users(vec![user.into()])));
                handle.block_on(s.apply(vec![w])).unwrap();
            };
            let c = Connection::open(path).unwrap();
            let (mut reads, mut commit_for_a) = (0, 0);
            let (_, counts, version) = opening_snapshot(&c, "a", &s.committed, || {
                reads += 1;
                if reads == 1 {
                    notify("for-a", "a");
                    commit_for_a = s.committed.load(Ordering::Acquire);
                    notify("for-b", "b");
                }
            })
            .unwrap();
            (counts, version, commit_for_a)
        })
        .await
        .unwrap();
        assert!(
            counts.unread == 1 || version < 2 * commit_for_a,
            "the snapshot (unread {}) misses the user's commit {commit_for_a}, whose counts (version {}) are not \
             newer than the snapshot's version {version}",
            counts.unread,
            2 * commit_for_a
        );
        Arc::try_unwrap(store).ok().expect("one owner left").close().await;
    }

    /// After a clean close the database file alone holds every commit and the WAL is empty: a copy of the file
    /// (a cold backup) is the whole inbox. Before, the WAL kept them (all 2,400 events of a run, the file a bare
    /// header) and a copy of the file alone was empty or malformed.
    #[tokio::test]
    async fn after_a_clean_close_the_database_file_alone_holds_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..50 {
            let w = Write::Notify(crate::inbox::contract::draft(
                &format!("close-{i}"),
                Recipients::Users(vec!["u".into()]),
            ));
            store.apply(vec![w]).await.unwrap();
        }
        store.close().await;
        let path = dir.path().join("inbox.db");
        let wal = std::fs::metadata(dir.path().join("inbox.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the WAL is emptied at close");
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let c = Connection::open(&copy).unwrap();
        let rows: i64 = c.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0)).unwrap();
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!((rows, check.as_str()), (50, "ok"));
    }

    /// What an erase deletes is not left readable in the database file (before: titles, bodies and aliases of an
    /// erased user stayed in free pages and in pages' free space, and in every backup taken later).
    #[tokio::test]
    async fn an_erased_users_content_is_overwritten_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..40 {
            let mut n = crate::inbox::contract::draft(&format!("secret-{i}"), Recipients::Users(vec!["erased".into()]));
            n.content = format!("the-erased-users-secret-{i}");
            store.apply(vec![Write::Notify(n)]).await.unwrap();
        }
        let kept = crate::inbox::contract::draft("kept", Recipients::Users(vec!["kept".into()]));
        store.apply(vec![Write::Notify(kept)]).await.unwrap();
        let erase = Write::Purge { event_id: "erase".into(), users: vec!["erased".into()] };
        store.apply(vec![erase]).await.unwrap();
        store.close().await; // everything into the file, the WAL emptied
        let bytes = std::fs::read(dir.path().join("inbox.db")).unwrap();
        let found = bytes.windows(24).any(|w| w == b"the-erased-users-secret-");
        assert!(!found, "an erased user's content is still in the file");
    }

    /// An inbox a newer release migrated is refused in words (it was `MigrationDefinition(DatabaseTooFarAhead)`).
    #[tokio::test]
    async fn an_inbox_migrated_by_a_newer_release_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        open(&dir).close().await;
        let c = Connection::open(dir.path().join("inbox.db")).unwrap();
        c.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1).unwrap();
        drop(c);
        let e = SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, None).err().unwrap();
        let e = e.to_string();
        assert!(e.contains("newer release") && e.contains("restore the backup"), "{e}");
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_retention_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("inbox.db"), &crate::inbox::contract::retention_settings(), None)
                .unwrap();
        crate::inbox::contract::run_retention(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_prunes_broadcasts_oldest_first_whatever_their_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::inbox::contract::retention_settings();
        let store = SqliteStore::open(&dir.path().join("inbox.db"), &settings, None).unwrap();
        let stamp = async |id: i64, at: DateTime<Utc>| {
            let sql = format!("UPDATE notifications SET created_at = {} WHERE id = {id}", millis(at));
            store.write(|tx| Job::Upkeep(Upkeep::Pragma(sql), tx)).await.unwrap();
        };
        crate::inbox::contract::broadcasts_are_pruned_oldest_first_whatever_their_clocks(&store, stamp).await;
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_forgets_a_widely_read_broadcast_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, None).unwrap();
        crate::inbox::contract::a_widely_read_broadcast_is_forgotten_a_batch_at_a_time(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn ids_applied_before_scoping_still_dedupe_until_the_window_expires_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        {
            // A database as the release before scoped ids left it: global ids in `applied_events`.
            let mut old = Connection::open(&path).unwrap();
            Migrations::from_slice(&MIGRATIONS[..2]).to_latest(&mut old).unwrap();
            old.execute("INSERT INTO applied_events (event_id, applied_at) VALUES ('77', ?1)", [millis(Utc::now())])
                .unwrap();
        }
        let store = open(&dir);
        let mut redelivered = crate::inbox::contract::draft("77", Recipients::Users(vec!["u".into()]));
        redelivered.dedupe_key = crate::event::DedupeKey::body_id("orders", "order.paid", "77");
        let again = store.apply(vec![Write::Notify(redelivered.clone())]).await.unwrap();
        assert!(matches!(again[0], WriteOutcome::Duplicate), "applied before the upgrade: still a duplicate");
        let report = store.prune(Utc::now() + chrono::Duration::days(8)).await.unwrap();
        assert_eq!(report.dedupe_keys, 2, "the legacy id and the scoped key both expire");
        let later = store.apply(vec![Write::Notify(redelivered)]).await.unwrap();
        assert!(matches!(&later[0], WriteOutcome::Stored(v) if v.len() == 1), "{later:?}");
        store.close().await;
    }

    /// Expiring dedupe keys walks the table in key order (`sweep.rs`): a page holding expired keys is written once
    /// a pass, not once per key as deleting them oldest first did (every key of one age is on a page of its own:
    /// BENCHMARKS.md, "dedupe expiry", 1.01 WAL frames per expired key that way).
    #[tokio::test]
    async fn expiring_dedupe_keys_writes_each_page_once_not_once_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let now = Utc::now();
        let (old, fresh) = (millis(now - chrono::Duration::days(30)), millis(now));
        let pages = || store.read(|c| c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)));
        let before = pages().await.unwrap();
        // 20,000 keys spread over the key space as hashes are, every other one expired; the expired ones at
        // different times within a day, as a day's traffic applies them (the times say nothing of the keys).
        let fill = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO dedupe_keys (key, applied_at)
             SELECT randomblob(16), CASE WHEN i % 2 = 0 THEN {old} + abs(random() % 86400000) ELSE {fresh} END FROM n"
        );
        store.write(|tx| Job::Upkeep(Upkeep::Pragma(fill), tx)).await.unwrap();
        let table = pages().await.unwrap() - before;
        assert!(table > 100, "the keys take {table} pages");
        let frames = store.wal.pages();
        let report = store.prune(now).await.unwrap();
        let written = i64::from(store.wal.pages() - frames);
        assert_eq!(report.dedupe_keys, 10_000, "every expired key goes");
        // Oldest first, 1,000 keys a commit over ~150 pages, rewrote nearly every page ten times.
        assert!(written <= 2 * table + 40, "{written} pages written to expire 10,000 keys from {table} pages");
        let left = store.read(|c| c.query_row("SELECT count(*) FROM dedupe_keys", [], |r| r.get::<_, i64>(0)));
        assert_eq!(left.await.unwrap(), 10_000, "the young half stays");
        store.close().await;
    }

    /// A key is forgotten once the window is over *and* the sweep, which goes round the key space once a day with
    /// the clock, has passed it — within a day after the window, never before it; where the sweep stopped is
    /// kept across a restart, so a run after one sweeps on from there rather than from the start.
    #[tokio::test]
    async fn expired_dedupe_keys_go_as_the_sweep_passes_them_and_its_stop_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let applied = Utc::now();
        let window = chrono::Duration::days(7); // the default the contract tests count on
        let t0 = applied + window - chrono::Duration::hours(1);
        let t1 = t0 + chrono::Duration::hours(3);
        // Key A where the sweep passes between t0 and t1, key B half a day further round.
        let at = |t: DateTime<Utc>| {
            let mut key = [7u8; 16];
            key[..8].copy_from_slice(&sweep::position(millis(t)));
            crate::event::DedupeKey(key)
        };
        let event = |id: &str, key| {
            let mut n = crate::inbox::contract::draft(id, Recipients::Users(vec!["sweep".into()]));
            n.dedupe_key = key;
            Write::Notify(n)
        };
        let (a, b) =
            (event("a", at(t0 + chrono::Duration::hours(1))), event("b", at(t0 + chrono::Duration::hours(12))));
        store.apply(vec![a.clone(), b.clone()]).await.unwrap();

        let first = store.prune(t0).await.unwrap();
        assert_eq!(first.dedupe_keys, 0, "the first run sweeps every key, and none is past the window yet");
        store.close().await;
        let store = open(&dir);
        let second = store.prune(t1).await.unwrap();
        assert_eq!(second.dedupe_keys, 1, "only the key the sweep passed since t0 goes, not all (no new pass)");
        let again = store.apply(vec![a, b.clone()]).await.unwrap();
        assert!(matches!(&again[0], WriteOutcome::Stored(v) if v.len() == 1), "A is forgotten: {again:?}");
        assert!(matches!(again[1], WriteOutcome::Duplicate), "B is past the window but not yet swept");

        let third = store.prune(t1 + chrono::Duration::days(1)).await.unwrap();
        assert!(third.dedupe_keys >= 1, "a day after the last run, a whole pass: {third:?}");
        let last = store.apply(vec![b]).await.unwrap();
        assert!(matches!(&last[0], WriteOutcome::Stored(v) if v.len() == 1), "B is forgotten: {last:?}");
        store.close().await;
    }

    /// A database the release before inbox states wrote (four migrations): read and unread targeted rows, a read
    /// and a deleted broadcast, a read_all watermark. After the upgrade the counters equal a count over the rows,
    /// what was read is seen, and new writes keep them equal.
    #[tokio::test]
    async fn a_database_from_before_inbox_states_migrates_with_counters_that_match_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        {
            let mut old = Connection::open(&path).unwrap();
            Migrations::from_slice(&MIGRATIONS[..4]).to_latest(&mut old).unwrap();
            let row = |user: Option<&str>, read: Option<i64>| {
                old.execute(
                    "INSERT INTO notifications (event_id, user_id, kind, title, content, event_type, data, body,
                         created_at, read_at) VALUES ('e', ?1, 'k', 't', 'c', 'et', 'null', 'null', 1, ?2)",
                    params![user, read],
                )
                .unwrap();
                old.last_insert_rowid()
            };
            let b1 = row(None, None);
            row(Some("alice"), Some(5));
            row(Some("alice"), None);
            let b2 = row(None, None);
            row(Some("bob"), None);
            let b3 = row(None, None);
            row(None, None);
            // bob read everything up to b2, then read b3 and deleted the newest broadcast; alice read b1.
            old.execute("INSERT INTO user_state (user_id, read_all_up_to, read_all_at) VALUES ('bob', ?1, 9)", [b2])
                .unwrap();
            old.execute("INSERT INTO broadcast_state (user_id, notification_id, read_at) VALUES ('bob', ?1, 9)", [b3])
                .unwrap();
            old.execute(
                "INSERT INTO broadcast_state (user_id, notification_id, read_at, deleted)
                 VALUES ('bob', (SELECT max(id) FROM notifications), NULL, 1)",
                [],
            )
            .unwrap();
            old.execute(
                "INSERT INTO broadcast_state (user_id, notification_id, read_at) VALUES ('alice', ?1, 9)",
                [b1],
            )
            .unwrap();
        }
        let store = open(&dir);
        let expect = [("alice", 1 + 3, 1 + 3), ("bob", 1, 1), ("carol", 4, 4)];
        for (user, unread, unseen) in expect {
            assert_eq!(store.counts(user).await.unwrap(), Counts { unread, unseen }, "{user} after the upgrade");
        }
        let alice = store.list("alice", ListQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert!(alice.iter().all(|n| n.read_at.is_none() || n.seen_at == n.read_at), "what was read is seen");
        assert!(alice.iter().all(|n| !n.muted && n.archived_at.is_none()));
        store.apply(vec![Write::Notify(crate::inbox::contract::draft("after", Recipients::Everyone))]).await.unwrap();
        store.mark_all_read("alice").await.unwrap();
        assert_eq!(store.counts("alice").await.unwrap(), Counts::default());
        assert_eq!(store.counts("bob").await.unwrap(), Counts { unread: 2, unseen: 2 });
        assert_eq!(store.counts("carol").await.unwrap(), Counts { unread: 5, unseen: 5 });
        store.close().await;
    }

    /// A database the release before issue 16 wrote (five migrations, with the partial unread index): after the
    /// upgrade the index is gone, and the unread list, `read_all` and the counters still agree with the rows.
    #[tokio::test]
    async fn a_database_from_before_the_write_path_migrates_without_the_unread_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        {
            let mut old = Connection::open(&path).unwrap();
            Migrations::from_slice(&MIGRATIONS[..5]).to_latest(&mut old).unwrap();
            for (read, unread) in [(Some(5), 0), (None, 1), (Some(6), 0), (None, 1)] {
                old.execute(
                    "INSERT INTO notifications (event_id, user_id, kind, title, content, event_type, data, body,
                         created_at, read_at, seen_at) VALUES ('e', 'alice', 'k', 't', 'c', 'et', 'null', 'null', 1,
                         ?1, ?1)",
                    params![read],
                )
                .unwrap();
                old.execute(
                    "INSERT INTO inbox_counts (user_id, unread, unseen) VALUES ('alice', ?1, ?1)
                     ON CONFLICT (user_id) DO UPDATE SET unread = unread + ?1, unseen = unseen + ?1",
                    [unread],
                )
                .unwrap();
            }
        }
        let store = open(&dir);
        let index: i64 = store
            .read(|c| {
                c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'notifications_unread'", [], |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(index, 0, "the partial unread index is dropped");
        let unread_ids = || async {
            let q = ListQuery { limit: 10, unread_only: true, ..Default::default() };
            store.list("alice", q).await.unwrap().into_iter().map(|n| n.id).collect::<Vec<_>>()
        };
        assert_eq!(unread_ids().await, [4, 2], "the unread list, newest first");
        assert_eq!(store.counts("alice").await.unwrap(), Counts { unread: 2, unseen: 2 });
        store.mark_all_read("alice").await.unwrap();
        assert!(unread_ids().await.is_empty(), "read_all reaches every unread row");
        assert_eq!(store.counts("alice").await.unwrap(), Counts::default());
        store.close().await;
    }

    #[tokio::test]
    async fn a_replaced_or_deleted_database_file_refuses_writes_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let write = |id: &str| Write::Notify(crate::inbox::contract::draft(id, Recipients::Everyone));
        store.apply(vec![write("before")]).await.unwrap();
        let path = dir.path().join("inbox.db");
        let aside = dir.path().join("aside.db");
        std::fs::rename(&path, &aside).unwrap();
        let refused = store.apply(vec![write("while-gone")]).await;
        assert!(matches!(&refused, Err(StoreError::Unavailable(e)) if e.contains("gone")), "{refused:?}");
        assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
        assert!(store.probe_write().await.is_err());

        // Another file at the path (a restore, a mistaken copy) is not the one open: refused too.
        std::fs::copy(&aside, &path).unwrap();
        let refused = store.apply(vec![write("replaced")]).await;
        assert!(matches!(&refused, Err(StoreError::Unavailable(e)) if e.contains("replaced")), "{refused:?}");
        std::fs::remove_file(&path).unwrap();

        std::fs::rename(&aside, &path).unwrap();
        store.probe_write().await.unwrap();
        assert!(matches!(store.apply(vec![write("after")]).await.unwrap()[0], WriteOutcome::Stored(_)));
        let titles: Vec<String> = store
            .list("u", ListQuery { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.title)
            .collect();
        assert_eq!(titles, ["title after", "title before"], "nothing was acknowledged into the unlinked file");
        store.close().await;
    }

    /// The writer keeps each chain's head in memory (`Chains`): a commit that fails after its rows were inserted
    /// (here: the database file is gone at `COMMIT`) moves no head, so the next rows link to the last committed
    /// ones and not to rolled-back ids (which SQLite gives out again).
    #[tokio::test]
    async fn a_commit_that_fails_moves_no_chain_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let notify = |id: &str, to: Recipients| Write::Notify(crate::inbox::contract::draft(id, to));
        let u = || Recipients::Users(vec!["u".into()]);
        let stored = |out: Vec<WriteOutcome>| match out.into_iter().next() {
            Some(WriteOutcome::Stored(mut rows)) => rows.remove(0),
            other => panic!("expected Stored, got {other:?}"),
        };
        let first = stored(store.apply(vec![notify("first", u())]).await.unwrap());
        let (path, aside) = (dir.path().join("inbox.db"), dir.path().join("aside.db"));
        std::fs::rename(&path, &aside).unwrap();
        let lost = store.apply(vec![notify("lost", u()), notify("lost-b", Recipients::Everyone)]).await;
        assert!(matches!(lost, Err(StoreError::Unavailable(_))), "{lost:?}");
        std::fs::rename(&aside, &path).unwrap();
        let next = stored(store.apply(vec![notify("next", u())]).await.unwrap());
        assert_eq!(next.prev_id, first.id, "links to the last committed row, not the rolled-back one");
        let broadcast = stored(store.apply(vec![notify("next-b", Recipients::Everyone)]).await.unwrap());
        assert_eq!(broadcast.prev_id, 0, "no broadcast was committed");
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_disk_is_unavailable_and_not_ready_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(open(&dir));
        let health = crate::telemetry::Health::default();
        let store = crate::inbox::Monitored::new(sqlite.clone(), health.clone());
        let big = |id: &str| {
            let mut n = crate::inbox::contract::draft(id, Recipients::Everyone);
            n.body = Arc::from(RawValue::from_string(format!(r#""{}""#, "x".repeat(64 * 1024))).unwrap());
            Write::Notify(n)
        };
        store.apply(vec![big("fits")]).await.unwrap();
        let writes_ok = || health.snapshot().into_iter().find(|(name, _)| *name == "store_writes").unwrap().1.ok;
        assert!(writes_ok());

        // No room for another page: SQLite's own "database or disk is full".
        let pages: i64 = sqlite.read(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0))).await.unwrap();
        let cap = format!("PRAGMA max_page_count = {pages}");
        sqlite.write(|tx| Job::Upkeep(Upkeep::Pragma(cap), tx)).await.unwrap();
        let wal = dir.path().join("inbox.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the commits so far are in the WAL");
        let full = store.apply(vec![big("does-not-fit")]).await;
        assert!(matches!(&full, Err(StoreError::Unavailable(e)) if e.contains("full")), "{full:?}");
        assert!(!writes_ok(), "not ready after a refused write");
        // The WAL gave its space back (on a full disk, space freed would otherwise go to its growth first).
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "the WAL was checkpointed and truncated");

        sqlite.write(|tx| Job::Upkeep(Upkeep::Pragma("PRAGMA max_page_count = 1073741823".into()), tx)).await.unwrap();
        store.probe_write().await.unwrap();
        assert!(writes_ok(), "ready again once a write succeeds");
        assert!(matches!(store.apply(vec![big("fits-again")]).await.unwrap()[0], WriteOutcome::Stored(_)));
        store.close().await;
    }

    /// A writer thread that panicked leaves a store that refuses every write until the process restarts: the
    /// write answers `unavailable` and liveness fails (`/healthz` 503), so the orchestrator restarts it.
    #[tokio::test]
    async fn a_writer_that_panicked_fails_the_write_and_the_processs_liveness() {
        struct Panics;
        impl CommitListener for Panics {
            fn committed(&self, _: &NewNotification, _: &[Notification], _: &mut crate::inbox::CommitVersions<'_>) {
                panic!("a bug on the writer thread");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, Some(Arc::new(Panics)))
                .unwrap();
        assert_eq!(crate::telemetry::liveness_failure(), None);
        let draft = crate::inbox::contract::draft("p-1", Recipients::Users(vec!["u".into()]));
        let out = store.apply(vec![Write::Notify(draft)]).await;
        assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
        // The write's answer is dropped as the panic unwinds, a moment before the thread records it.
        for _ in 0..500 {
            if crate::telemetry::liveness_failure().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(crate::telemetry::liveness_failure(), Some("the SQLite writer thread stopped"));
        assert!(store.ping().await.is_err(), "not ready either");
    }

    /// The listener hears, after each commit, the counts of every user it changed, as of that commit; a
    /// broadcast tells it nothing (sessions derive theirs), a muted notification changes nothing.
    #[tokio::test]
    async fn the_commit_listener_hears_each_changed_users_counts_as_of_the_commit() {
        use crate::inbox::contract::{draft, CountsRecorder};
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(CountsRecorder::default());
        let store =
            SqliteStore::open(&dir.path().join("inbox.db"), &Settings::defaults().store, Some(recorder.clone()))
                .unwrap()
                .muting_by_default(&["digest".into()]);
        let heard = || recorder.0.lock().unwrap().len();
        let n = store.apply(vec![Write::Notify(draft("l-1", Recipients::Users(vec!["u".into(), "v".into()])))]);
        let WriteOutcome::Stored(rows) = n.await.unwrap().pop().unwrap() else { panic!() };
        assert_eq!(recorder.last("u"), Some(Counts { unread: 1, unseen: 1 }));
        assert_eq!(recorder.last("v"), Some(Counts { unread: 1, unseen: 1 }));
        let before = heard();
        store.apply(vec![Write::Notify(draft("l-b", Recipients::Everyone))]).await.unwrap();
        assert_eq!(heard(), before, "a broadcast tells no user's counts");
        let mut digest = draft("l-2", Recipients::Users(vec!["u".into()]));
        digest.kind = "digest".into();
        let WriteOutcome::Stored(muted) = store.apply(vec![Write::Notify(digest)]).await.unwrap().pop().unwrap() else {
            panic!()
        };
        assert!(muted[0].muted, "muted by default");
        assert_eq!(heard(), before, "a muted notification changes no counts");
        assert_eq!(
            store.counts("u").await.unwrap(),
            Counts { unread: 2, unseen: 2 },
            "the broadcast counts, the digest not"
        );
        store.change("u", rows[0].id, Change::Read).await.unwrap().unwrap();
        assert_eq!(recorder.last("u"), Some(Counts { unread: 1, unseen: 1 }));
        store.seen_all("u").await.unwrap();
        assert_eq!(recorder.last("u"), Some(Counts { unread: 1, unseen: 0 }));
        store.mark_all_read("u").await.unwrap();
        assert_eq!(recorder.last("u"), Some(Counts { unread: 0, unseen: 0 }));
        // A user who turned the default-muted type on gets it counted.
        store.set_preferences("v", [("digest".to_string(), TypeSetting::On)].into()).await.unwrap();
        let mut digest = draft("l-3", Recipients::Users(vec!["v".into()]));
        digest.kind = "digest".into();
        store.apply(vec![Write::Notify(digest)]).await.unwrap();
        assert_eq!(recorder.last("v"), Some(Counts { unread: 3, unseen: 3 }));
        store.close().await;
    }

    /// Checkpoints run on the checkpointer's own connection, woken by the writer's WAL hook: with the threshold
    /// at one page, a commit wakes it and its checkpoint copies the WAL back into the database file.
    #[tokio::test]
    async fn the_checkpointer_thread_checkpoints_the_wal_the_writer_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let store = SqliteStore::open_checkpointing_at(&path, &Settings::defaults().store, None, 1).unwrap();
        assert_eq!(store.wal.passes.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing committed yet");
        let n = crate::inbox::contract::draft("cp-1", Recipients::Users(vec!["u".into()]));
        store.apply(vec![Write::Notify(n)]).await.unwrap();
        let mut waited = 0;
        while store.wal.passes.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(waited < 600, "the checkpointer never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert!(store.wal.pages() > 0, "the hook saw the commit's pages");
        store.close().await;
        let reopened = open(&dir);
        assert_eq!(reopened.unread_count("u").await.unwrap(), 1);
        reopened.close().await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let n = crate::inbox::contract::draft("e-1", Recipients::Users(vec!["u".into()]));
        store.apply(vec![Write::Notify(n)]).await.unwrap();
        store.close().await;
        assert!(store.apply(vec![]).await.is_ok(), "empty batches need no writer");
        let reopened = open(&dir);
        assert_eq!(reopened.unread_count("u").await.unwrap(), 1);
        reopened.close().await;
    }
}
