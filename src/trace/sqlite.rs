//! The trace's steps in SQLite: their own database file beside the inbox (`<inbox stem>.trace.db`), so a trace
//! write never waits for the inbox's writer or holds its lock. WAL, `synchronous = OFF`: the trace never syncs,
//! not even in its checkpoints, whose flush of the trace's pages (megabytes at once) otherwise queued the inbox's
//! commit syncs behind it on the same disk — a trace step lost to a power cut is acceptable, a slower inbox is
//! not. An operating-system crash or power cut can then leave the file damaged; [`SqliteTrace::open`] moves a
//! file SQLite finds damaged aside and starts a new one, so the gateway always starts. One writer connection on
//! its own background thread ([`crate::background`]: a batch of steps yields the core to the request path) and
//! one reader connection, used on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

use super::{Kind, Step, TraceError, TraceStore};

// Version 1 was replaced before any release carried it (the trace was added the same day): its indexes now skip
// the rows nobody looks up by them, so a step dirties as few random index pages as it can.
const V1: &str = "CREATE TABLE trace_steps (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        trace_id TEXT,
        event_id TEXT,
        notification_id INTEGER,
        user_id TEXT,
        kind TEXT NOT NULL,
        node TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX trace_steps_event ON trace_steps (event_id) WHERE event_id IS NOT NULL;
    CREATE INDEX trace_steps_trace ON trace_steps (trace_id) WHERE trace_id IS NOT NULL;
    CREATE INDEX trace_steps_notification ON trace_steps (notification_id) WHERE notification_id IS NOT NULL;
    CREATE INDEX trace_steps_user ON trace_steps (user_id, kind, id) WHERE kind > 'read';";

/// Version 2: steps are found by event through an 8-byte key of the event id ([`event_key`]) instead of the id's
/// text (ids are often 36–71 characters: an index five times larger, which in steady state no longer fits the
/// cache, so each step read and wrote an index page of its own; BENCHMARKS.md, 2026-11-30). The rows keep the
/// id, which a lookup compares too, so two ids with one key never mix. Existing rows get their key here.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up_with_hook(
            "DROP INDEX trace_steps_event; ALTER TABLE trace_steps ADD COLUMN event_key INTEGER;",
            |tx: &rusqlite::Transaction<'_>| -> Result<(), rusqlite_migration::HookError> {
                // In id order, a chunk read whole before it is updated (a query's view of rows its own
                // connection changes while it steps is undefined).
                let mut after = 0i64;
                loop {
                    let chunk = tx
                        .prepare_cached(
                            "SELECT id, event_id FROM trace_steps WHERE id > ?1 AND event_id IS NOT NULL
                             ORDER BY id LIMIT 10000",
                        )?
                        .query_map([after], |r| Ok((r.get::<_, i64>(0)?, event_key(&r.get::<_, String>(1)?))))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let Some(&(last, _)) = chunk.last() else { break };
                    let mut set = tx.prepare_cached("UPDATE trace_steps SET event_key = ?1 WHERE id = ?2")?;
                    for (id, key) in &chunk {
                        set.execute(params![key, id])?;
                    }
                    after = last;
                }
                tx.execute_batch(
                    "CREATE INDEX trace_steps_event ON trace_steps (event_key) WHERE event_key IS NOT NULL;",
                )?;
                Ok(())
            },
        ),
    ])
}

/// The key steps are indexed by for their event id: the first 8 bytes of its SHA-256 (stable across releases and
/// nodes, as the stored keys must be).
fn event_key(event_id: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// The user index's condition: `kind > 'read'` is exactly `read_all`, `seen_all` and `stored` (the rows looked
/// up by user; `delivered` and `read` rows, the many, stay out). A query by user repeats it word for word, for
/// SQLite uses a partial index only when the query's WHERE names its terms. Not an `IN (...)` list: SQLite
/// evaluates one through a temporary b-tree on every insert.
macro_rules! user_kinds {
    () => {
        "kind > 'read'"
    };
}

/// Most values bound in one `IN (...)`.
const CHUNK: usize = 500;

/// `data/herald.db` → `data/herald.trace.db`.
pub fn beside(inbox: &Path) -> PathBuf {
    let stem = inbox.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "herald".into());
    inbox.with_file_name(format!("{stem}.trace.db"))
}

/// Work for the writer thread: a closure over its connection (it sends its own result back).
type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct SqliteTrace {
    /// To the writer thread, which ends (closing its connection) when this is dropped.
    writer: std::sync::mpsc::Sender<WriteJob>,
    reader: Arc<Mutex<Connection>>,
}

fn err(e: impl std::fmt::Display) -> TraceError {
    TraceError::Unavailable(e.to_string())
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    crate::sqlite_pcache::install();
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    Ok(conn)
}

/// Starts the kernel's writeback of the trace's files after a write job, at most once a second, without waiting
/// for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: no sync, no device flush). The trace never syncs, so its
/// pages otherwise stay dirty until the kernel's flusher writes those older than 30 s, every 5 s, tens of
/// megabytes at once on a node that keeps running — and the inbox's commit syncs queue behind each burst
/// (BENCHMARKS.md, "a node that keeps running": at 2,000/s for 120 s, the slowest delivery 46–143 ms without,
/// 36–46 ms with). A second's pages go in one piece; the price is the bytes the kernel would have merged over
/// 30 s (+14 % disk bytes per event; after every batch instead of once a second it was +41 %, for no better tail).
struct Writeback {
    paths: [PathBuf; 2],
    /// The database's and the WAL's descriptors, opened on first use (-1 until then, or where `open` failed).
    fds: [libc::c_int; 2],
    /// When the last writeback started: at most one per [`WRITEBACK_EVERY`].
    last: Option<std::time::Instant>,
}

/// How often the trace's writeback starts at most: a second's pages in one go, the kernel free to merge a page
/// written twice within it.
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Writeback {
    fn new(path: &Path) -> Writeback {
        Writeback {
            paths: [path.to_owned(), PathBuf::from(format!("{}-wal", path.display()))],
            fds: [-1, -1],
            last: None,
        }
    }

    /// Start writing back both files' dirty pages, if the last start is a [`WRITEBACK_EVERY`] ago; returns at
    /// once. A failure only leaves them to the kernel.
    fn start(&mut self) {
        if self.last.is_some_and(|at| at.elapsed() < WRITEBACK_EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        #[cfg(target_os = "linux")]
        for (fd, path) in self.fds.iter_mut().zip(&self.paths) {
            if *fd < 0 {
                use std::os::unix::ffi::OsStrExt;
                let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { continue };
                // SAFETY: a NUL-terminated path; the descriptor is ours, closed in `drop`.
                *fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            }
            if *fd >= 0 {
                // SAFETY: an open descriptor; starts the writeback of the file's dirty pages and returns.
                unsafe { libc::sync_file_range(*fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
            }
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        for fd in self.fds {
            if fd >= 0 {
                // SAFETY: opened in `start`, closed once.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Why the trace's database did not open.
enum Opening {
    /// SQLite says the file is not a database or is corrupt.
    Damaged(rusqlite::Error),
    Failed(TraceError),
}

impl Opening {
    fn into_error(self) -> TraceError {
        match self {
            Opening::Damaged(e) => err(format!("the trace's database is damaged: {e}")),
            Opening::Failed(e) => e,
        }
    }
}

/// The writer's connection, with the schema migrated and the newest step read (which reaches the table's pages,
/// where damage after a cut most likely is).
fn migrated(path: &Path) -> Result<Connection, Opening> {
    let damaged = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => Opening::Damaged(e),
        _ => Opening::Failed(err(e)),
    };
    let mut conn = connect(path).map_err(damaged)?;
    migrations().to_latest(&mut conn).map_err(|e| match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => damaged(err),
        e => Opening::Failed(err(format!("trace migrations: {e}"))),
    })?;
    conn.query_row("SELECT max(id) FROM trace_steps", [], |_| Ok(())).map_err(damaged)?;
    Ok(conn)
}

/// Rename a damaged trace database, and its WAL and shared-memory files, out of the way; returns the new name.
fn set_aside(path: &Path) -> Result<PathBuf, TraceError> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = path.with_file_name(format!(
        "{}.damaged-{secs}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    std::fs::rename(path, &aside).map_err(|e| err(format!("moving {} aside: {e}", path.display())))?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).map_err(|e| err(format!("moving {} aside: {e}", from.display())))?;
        }
    }
    Ok(aside)
}

impl SqliteTrace {
    /// Open (or create) the trace at `path`. A file SQLite finds damaged (see the module's note) is renamed to
    /// `<name>.damaged-<unix seconds>`, with its WAL, and a new trace starts in its place.
    pub fn open(path: &Path) -> Result<SqliteTrace, TraceError> {
        crate::sqlite_files::create_private(path).map_err(|e| err(format!("creating {}: {e}", path.display())))?;
        let mut writer = match migrated(path) {
            Err(Opening::Damaged(e)) => {
                let aside = set_aside(path)?;
                crate::sqlite_files::create_private(path)
                    .map_err(|e| err(format!("creating {}: {e}", path.display())))?;
                tracing::warn!(error = %e, damaged = %aside.display(), "the trace's database was damaged; moved it aside and started a new one");
                migrated(path).map_err(Opening::into_error)?
            }
            opened => opened.map_err(Opening::into_error)?,
        };
        let reader = connect(path).map_err(err)?;
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        let mut writeback = Writeback::new(path);
        crate::background::spawn("herald-trace-writer", move || {
            while let Ok(job) = rx.recv() {
                job(&mut writer);
                writeback.start();
            }
        })
        .map_err(err)?;
        Ok(SqliteTrace { writer: tx, reader: Arc::new(Mutex::new(reader)) })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TraceError> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().expect("trace reader poisoned")))
            .await
            .map_err(err)?
            .map_err(err)
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TraceError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.writer.send(job).map_err(|_| err("the trace writer stopped"))?;
        rx.await.map_err(|_| err("the trace writer stopped"))?.map_err(err)
    }

    /// Rows where `column` is one of `values`, in chunks.
    async fn any_of<V: rusqlite::ToSql + Clone + Send + 'static>(
        &self,
        column: &'static str,
        values: &[V],
        extra: &'static str,
        limit: usize,
    ) -> Result<Vec<Step>, TraceError> {
        let mut out = Vec::new();
        for chunk in values.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            let room = limit.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let rows = self
                .read(move |c| {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let sql = format!("SELECT {COLUMNS} FROM trace_steps WHERE {column} IN ({marks}) {extra} ORDER BY id LIMIT {room}");
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map(params_from_iter(chunk.iter()), step)?.collect::<rusqlite::Result<Vec<_>>>();
                    rows
                })
                .await?;
            out.extend(rows.into_iter().flatten());
        }
        Ok(out)
    }
}

/// The columns [`step`] reads, in its order (a macro, so a statement's text can be built at compile time).
macro_rules! columns {
    () => {
        "at, trace_id, event_id, notification_id, user_id, kind, node, data"
    };
}
const COLUMNS: &str = columns!();

/// An event's steps, through the index of their key; the id compared too.
const BY_EVENT: &str =
    concat!("SELECT ", columns!(), " FROM trace_steps WHERE event_key = ?1 AND event_id = ?2 ORDER BY id LIMIT ?3");

/// A row as a step; `None` for a kind this version does not know (written by a newer node).
fn step(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Step>> {
    let kind: String = row.get(5)?;
    let Some(kind) = Kind::parse(&kind) else { return Ok(None) };
    let data: String = row.get(7)?;
    Ok(Some(Step {
        at: DateTime::from_timestamp_millis(row.get(0)?).unwrap_or_default(),
        trace_id: row.get(1)?,
        event_id: row.get(2)?,
        notification_id: row.get(3)?,
        user_id: row.get(4)?,
        kind,
        node: row.get(6)?,
        data: super::Data::Json(serde_json::from_str(&data).unwrap_or_default()),
    }))
}

#[async_trait]
impl TraceStore for SqliteTrace {
    async fn append(&self, steps: Arc<Vec<Step>>) -> Result<(), TraceError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO trace_steps (at, trace_id, event_id, event_key, notification_id, user_id, kind, node, \
                     data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                for s in steps.iter() {
                    stmt.execute(params![
                        s.at.timestamp_millis(),
                        s.trace_id,
                        s.event_id,
                        s.event_id.as_deref().map(event_key),
                        s.notification_id,
                        s.user_id,
                        s.kind.as_str(),
                        s.node,
                        s.data.to_json_string()
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn by_event(&self, event_id: &str, limit: usize) -> Result<Vec<Step>, TraceError> {
        let event_id = event_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(BY_EVENT)?;
            let rows = stmt
                .query_map(params![event_key(&event_id), event_id, limit as i64], step)?
                .collect::<rusqlite::Result<Vec<_>>>();
            rows
        })
        .await
        .map(|rows| rows.into_iter().flatten().collect())
    }

    async fn by_traces(&self, trace_ids: &[String], limit: usize) -> Result<Vec<Step>, TraceError> {
        self.any_of("trace_id", trace_ids, "", limit).await
    }

    async fn by_notifications(&self, ids: &[i64], limit: usize) -> Result<Vec<Step>, TraceError> {
        self.any_of("notification_id", ids, "AND kind IN ('delivered', 'read')", limit).await
    }

    async fn marks(&self, users: &[String], limit: usize) -> Result<Vec<Step>, TraceError> {
        self.any_of("user_id", users, concat!("AND kind IN ('read_all', 'seen_all') AND ", user_kinds!()), limit).await
    }

    async fn user_traces(&self, user: &str, limit: usize) -> Result<Vec<String>, TraceError> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT trace_id FROM trace_steps WHERE user_id = ? AND kind = 'stored' AND trace_id IS NOT NULL AND ",
                user_kinds!(),
                " GROUP BY trace_id ORDER BY max(id) DESC LIMIT ?"
            ))?;
            let rows =
                stmt.query_map(params![user, limit as i64], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>();
            rows
        })
        .await
    }

    async fn prune(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<u64, TraceError> {
        let cutoff = cutoff.timestamp_millis();
        self.write(move |c| {
            // Among the oldest `batch` rows (ids follow time), those before the cutoff: never a scan of young rows.
            let last: Option<i64> = c
                .query_row(
                    "SELECT max(id) FROM (SELECT id FROM trace_steps ORDER BY id LIMIT ?)",
                    params![batch as i64],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let Some(last) = last else { return Ok(0) };
            let n = c.execute("DELETE FROM trace_steps WHERE id <= ? AND at < ?", params![last, cutoff])?;
            Ok(n as u64)
        })
        .await
    }

    async fn erase(&self, users: &[String]) -> Result<u64, TraceError> {
        let users = users.to_vec();
        self.write(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for chunk in users.chunks(CHUNK) {
                let marks = vec!["?"; chunk.len()].join(",");
                n += tx
                    .execute(&format!("DELETE FROM trace_steps WHERE user_id IN ({marks})"), params_from_iter(chunk))?;
                // The `event` steps that list them among their recipients (a live event, one stored for several
                // users), but the erasure's own record. A scan of the event steps: erases are rare.
                n += tx.execute(
                    &format!(
                        "DELETE FROM trace_steps WHERE kind = 'event' AND user_id IS NULL \
                         AND json_extract(data, '$.outcome') IS NOT 'purged' \
                         AND EXISTS (SELECT 1 FROM json_each(data, '$.recipients') WHERE value IN ({marks}))"
                    ),
                    params_from_iter(chunk),
                )?;
            }
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn close(&self) -> Result<(), TraceError> {
        self.write(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writeback covers the database and its WAL, and a WAL that appears later (SQLite creates it on the first
    /// write) is picked up then.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writeback_covers_the_database_and_its_wal_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace.db");
        std::fs::write(&path, vec![1u8; 64 * 1024]).unwrap();
        let mut w = Writeback::new(&path);
        w.start();
        assert!(w.fds[0] >= 0 && w.fds[1] < 0, "the database now, no WAL yet: {:?}", w.fds);
        std::fs::write(dir.path().join("t.trace.db-wal"), vec![2u8; 64 * 1024]).unwrap();
        w.last = None; // a second later
        w.start();
        assert!(w.fds.iter().all(|fd| *fd >= 0), "both once the WAL exists: {:?}", w.fds);
    }

    #[test]
    fn the_user_index_condition_holds_exactly_the_kinds_looked_up_by_user() {
        let all = [
            Kind::Event,
            Kind::Stored,
            Kind::DeadLettered,
            Kind::HeldForRetry,
            Kind::Delivered,
            Kind::Read,
            Kind::ReadAll,
            Kind::SeenAll,
        ];
        // `kind > 'read'`, as SQLite compares text (bytewise, as Rust does).
        let indexed: Vec<&str> = all.iter().map(|k| k.as_str()).filter(|k| *k > "read").collect();
        assert_eq!(indexed, ["stored", "read_all", "seen_all"]);
    }

    #[tokio::test]
    async fn a_users_traces_and_marks_are_found_through_the_user_index() {
        let dir = std::env::temp_dir().join(format!("herald-trace-idx-{}", rand::random::<u64>()));
        let store = SqliteTrace::open(&dir.join("t.trace.db")).unwrap();
        let plan = |sql: String| {
            let c = store.reader.lock().unwrap();
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params!["u"], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let by_user = plan(
            concat!(
                "SELECT trace_id FROM trace_steps WHERE user_id = ? AND kind = 'stored' AND trace_id IS NOT NULL AND ",
                user_kinds!()
            )
            .to_owned(),
        );
        assert!(by_user.contains("trace_steps_user"), "{by_user}");
        let marks = plan(format!(
            "SELECT {COLUMNS} FROM trace_steps WHERE user_id IN (?) {}",
            concat!("AND kind IN ('read_all', 'seen_all') AND ", user_kinds!())
        ));
        assert!(marks.contains("trace_steps_user"), "{marks}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn step(event: &str) -> Step {
        Step {
            at: Utc::now(),
            trace_id: None,
            event_id: Some(event.into()),
            notification_id: None,
            user_id: None,
            kind: Kind::Event,
            node: "n".into(),
            data: crate::trace::Data::Json(serde_json::json!({})),
        }
    }

    /// An event's steps are looked up through the index of their 8-byte key, and the id is compared too: a row
    /// whose key is the same but whose id is not (a collision, forged here) is not part of the event.
    #[tokio::test]
    async fn steps_are_found_by_event_through_the_key_index_and_never_mixed_on_a_shared_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTrace::open(&dir.path().join("t.trace.db")).unwrap();
        store.append(std::sync::Arc::new(vec![step("alpha"), step("beta"), step("alpha")])).await.unwrap();
        store
            .write(|c| {
                c.execute(
                    "INSERT INTO trace_steps (at, event_id, event_key, kind, node, data)
                     VALUES (1, 'not-alpha', ?1, 'event', 'n', '{}')",
                    [event_key("alpha")],
                )
            })
            .await
            .unwrap();
        let alpha = store.by_event("alpha", 10).await.unwrap();
        assert_eq!(alpha.len(), 2);
        assert!(alpha.iter().all(|s| s.event_id.as_deref() == Some("alpha")), "{alpha:?}");
        assert_eq!(store.by_event("beta", 10).await.unwrap().len(), 1);
        assert_eq!(store.by_event("alpha", 1).await.unwrap().len(), 1, "the limit holds");
        let plan: String = {
            let c = store.reader.lock().unwrap();
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {BY_EVENT}")).unwrap();
            let rows = stmt.query_map(params![0i64, "x", 1i64], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        assert!(plan.contains("USING INDEX trace_steps_event"), "{plan}");
    }

    /// A trace written before the key (version 1, the event index over the ids' text): its steps get their keys
    /// when it opens, and are found by event as before; the old index is gone.
    #[tokio::test]
    async fn a_trace_from_before_the_event_key_migrates_and_finds_its_steps_by_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace.db");
        {
            let mut old = Connection::open(&path).unwrap();
            Migrations::from_slice(&[M::up(V1)]).to_latest(&mut old).unwrap();
            for (i, event) in ["e1", "e2", "e1"].iter().enumerate() {
                old.execute(
                    "INSERT INTO trace_steps (at, event_id, kind, node, data) VALUES (?1, ?2, 'event', 'n', '{}')",
                    params![i as i64, event],
                )
                .unwrap();
            }
            old.execute("INSERT INTO trace_steps (at, kind, node, data) VALUES (9, 'read', 'n', '{}')", []).unwrap();
            // More than two of the backfill's chunks.
            let tx = old.transaction().unwrap();
            for i in 0..20_500 {
                tx.execute(
                    "INSERT INTO trace_steps (at, event_id, kind, node, data) VALUES (10, ?1, 'event', 'n', '{}')",
                    [format!("filler-{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = SqliteTrace::open(&path).unwrap();
        assert_eq!(store.by_event("e1", 10).await.unwrap().len(), 2);
        assert_eq!(store.by_event("e2", 10).await.unwrap().len(), 1);
        let (keyed, unkeyed, old_index): (i64, i64, String) = store
            .read(|c| {
                c.query_row(
                    "SELECT sum(event_key IS NOT NULL), sum(event_key IS NULL),
                            (SELECT sql FROM sqlite_schema WHERE name = 'trace_steps_event') FROM trace_steps",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!((keyed, unkeyed), (20_503, 1), "every step with an event has its key, the others none");
        assert_eq!(store.by_event("filler-20499", 10).await.unwrap().len(), 1, "the last chunk's too");
        assert!(old_index.contains("(event_key)"), "the event index is over the key now: {old_index}");
    }

    /// The trace never syncs (its connections run `synchronous = OFF`), so its checkpoints' flushes never queue
    /// the inbox's commit syncs behind them.
    #[tokio::test]
    async fn the_trace_database_never_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTrace::open(&dir.path().join("t.trace.db")).unwrap();
        let reader: i64 = store.reader.lock().unwrap().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        let writer: i64 = store.write(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0))).await.unwrap();
        assert_eq!((reader, writer), (0, 0), "0 is OFF");
    }

    /// What a cut can leave of a file that is never synced: SQLite refuses it, and the gateway must still start.
    #[tokio::test]
    async fn a_damaged_trace_database_is_moved_aside_and_a_new_one_records_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace.db");
        // What a torn write can leave where SQLite's header was.
        let bytes: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();

        let store = SqliteTrace::open(&path).expect("a damaged trace does not stop the gateway");
        store.append(std::sync::Arc::new(vec![step("after")])).await.unwrap();
        assert_eq!(store.by_event("after", 10).await.unwrap().len(), 1, "the new trace records steps");
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("t.trace.db.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "the damaged file is kept beside it for a look: {aside:?}");
        assert!(std::fs::read(dir.path().join(&aside[0])).unwrap() == bytes, "moved as it was");
    }
}
