//! The trace's steps in SQLite: their own database file beside the inbox (`<inbox stem>.trace.db`), so a trace
//! write never waits for the inbox's writer or holds its lock. WAL, `synchronous = NORMAL` (a trace step lost
//! to a power cut is acceptable; a slower inbox is not). One writer connection on its own background thread
//! ([`crate::background`]: a batch of steps yields the core to the request path) and one reader connection, used on
//! the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

use super::{Kind, Step, TraceError, TraceStore};

// Version 1 was replaced before any release carried it (the trace was added the same day): its indexes now skip
// the rows nobody looks up by them, so a step dirties as few random index pages as it can.
const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE trace_steps (
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
    CREATE INDEX trace_steps_user ON trace_steps (user_id, kind, id) WHERE kind > 'read';",
)];

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

fn connect(path: &Path) -> Result<Connection, TraceError> {
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    Ok(conn)
}

impl SqliteTrace {
    pub fn open(path: &Path) -> Result<SqliteTrace, TraceError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        let mut writer = connect(path)?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut writer).map_err(|e| err(format!("trace migrations: {e}")))?;
        let reader = connect(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
        crate::background::spawn("herald-trace-writer", move || {
            while let Ok(job) = rx.recv() {
                job(&mut writer);
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

const COLUMNS: &str = "at, trace_id, event_id, notification_id, user_id, kind, node, data";

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
    async fn append(&self, steps: Vec<Step>) -> Result<(), TraceError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO trace_steps (at, trace_id, event_id, notification_id, user_id, kind, node, data) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                for s in &steps {
                    stmt.execute(params![
                        s.at.timestamp_millis(),
                        s.trace_id,
                        s.event_id,
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
        self.any_of("event_id", &[event_id.to_owned()], "", limit).await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_index_condition_holds_exactly_the_kinds_looked_up_by_user() {
        let all =
            [Kind::Event, Kind::Stored, Kind::DeadLettered, Kind::Delivered, Kind::Read, Kind::ReadAll, Kind::SeenAll];
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
}
