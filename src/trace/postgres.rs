//! The trace's steps in PostgreSQL: their own table (`trace_steps`) in the inbox's database, with their own
//! migrations (`migrations/postgres-trace/`, recorded in `_herald_trace_migrations`, so the inbox's migrator
//! never sees them), over a small pool of their own: a trace write never takes the inbox's advisory write
//! lock. Every node appends its own steps; retention is a plain batched delete any node may run.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow};
use sqlx::{Connection as _, PgConnection, Row, SqlSafeStr};

use super::{Kind, Step, TraceError, TraceStore};
use crate::postgres_connections::{migration_pool, pool, watched, Unanswered};

fn migrator() -> Migrator {
    let mut m = Migrator::with_migrations(vec![Migration::new(
        1,
        "trace steps".into(),
        MigrationType::Simple,
        include_str!("../../migrations/postgres-trace/0001_trace_steps.sql").into_sql_str(),
        false,
    )]);
    m.dangerous_set_table_name("_herald_trace_migrations");
    // As the inbox's (`inbox::postgres::migrator`): an older node restarting during a rolling upgrade still starts.
    m.set_ignore_missing(true);
    m
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn err(e: impl std::fmt::Display) -> TraceError {
    TraceError::Unavailable(e.to_string())
}

/// PostgreSQL text cannot hold U+0000.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

pub struct PostgresTrace {
    pool: PgPool,
    /// Where a statement's server process is looked at when it goes without an answer (`postgres_connections`).
    watch: PgConnectOptions,
    /// The server's bound on each statement (`store.statement_timeout_secs`), set on every pooled connection.
    statement_timeout: Duration,
}

impl PostgresTrace {
    /// Open the trace's table at `url` (migrating it), over a pool whose statements PostgreSQL ends after
    /// `statement_timeout` (`store.statement_timeout_secs`, as the inbox's).
    pub async fn open(url: &str, statement_timeout: Duration) -> Result<PostgresTrace, TraceError> {
        // The parse error never repeats the URL, which may hold a password.
        let options =
            PgConnectOptions::from_str(url).map_err(|e| TraceError::Unavailable(format!("store.url: {e}")))?;
        PostgresTrace::connect(options, statement_timeout).await
    }

    pub async fn connect(options: PgConnectOptions, statement_timeout: Duration) -> Result<PostgresTrace, TraceError> {
        let options = options
            .application_name("herald-trace")
            // As the inbox's connections: no startup option a pooler refuses (`crate::inbox::postgres`).
            .extra_float_digits(None);
        let migrating = migration_pool().connect_with(options.clone()).await.map_err(err)?;
        let migrated = migrator().run(&migrating).await.map_err(|e| err(format!("trace migrations: {e}")));
        migrating.close().await;
        migrated?;
        let pool = pool(2, statement_timeout).connect_with(options.clone()).await.map_err(err)?;
        Ok(PostgresTrace { pool, watch: options, statement_timeout })
    }

    /// Run `work` on a pooled connection, watched (`crate::postgres_connections::watched`): no trace write or
    /// read waits for good on a server gone silent, which stopped the trace's writer on the node for good.
    async fn run<T>(
        &self,
        what: &str,
        work: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>,
    ) -> Result<T, TraceError> {
        match watched(&self.pool, &self.watch, self.statement_timeout, what, work).await {
            Ok(done) => done.map_err(err),
            Err(Unanswered::Connection(e)) => Err(err(e)),
            Err(Unanswered::Silent(why)) => Err(TraceError::Unavailable(why)),
        }
    }

    async fn rows(
        &self,
        sql: &'static str,
        bind: impl FnOnce(Query<'static>) -> Query<'static>,
    ) -> Result<Vec<Step>, TraceError> {
        let query = bind(sqlx::query(sql));
        let rows = self.run("a trace read", async |c| query.fetch_all(c).await).await?;
        rows.iter().map(step).filter_map(Result::transpose).collect()
    }
}

/// A row as a step; `None` for a kind this version does not know (written by a newer node).
fn step(row: &PgRow) -> Result<Option<Step>, TraceError> {
    let kind: String = row.try_get("kind").map_err(err)?;
    let Some(kind) = Kind::parse(&kind) else { return Ok(None) };
    let data: String = row.try_get("data").map_err(err)?;
    Ok(Some(Step {
        at: row.try_get("at").map_err(err)?,
        trace_id: row.try_get("trace_id").map_err(err)?,
        event_id: row.try_get("event_id").map_err(err)?,
        notification_id: row.try_get("notification_id").map_err(err)?,
        user_id: row.try_get("user_id").map_err(err)?,
        kind,
        node: row.try_get("node").map_err(err)?,
        data: super::Data::Json(serde_json::from_str(&data).unwrap_or_default()),
    }))
}

macro_rules! select {
    ($tail:literal) => {
        concat!("SELECT at, trace_id, event_id, notification_id, user_id, kind, node, data FROM trace_steps", $tail)
    };
}

#[async_trait]
impl TraceStore for PostgresTrace {
    async fn append(&self, steps: std::sync::Arc<Vec<Step>>) -> Result<(), TraceError> {
        let mut at = Vec::with_capacity(steps.len());
        let mut trace = Vec::with_capacity(steps.len());
        let mut event = Vec::with_capacity(steps.len());
        let mut notification = Vec::with_capacity(steps.len());
        let mut user = Vec::with_capacity(steps.len());
        let mut kind = Vec::with_capacity(steps.len());
        let mut node = Vec::with_capacity(steps.len());
        let mut data = Vec::with_capacity(steps.len());
        for s in steps.iter() {
            at.push(s.at);
            trace.push(s.trace_id.as_deref().map(text));
            event.push(s.event_id.as_deref().map(text));
            notification.push(s.notification_id);
            user.push(s.user_id.as_deref().map(text));
            kind.push(s.kind.as_str());
            node.push(text(&s.node));
            data.push(text(&s.data.to_json_string()));
        }
        let query = sqlx::query(
            "INSERT INTO trace_steps (at, trace_id, event_id, notification_id, user_id, kind, node, data) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
             $7::text[], $8::text[])",
        )
        .bind(at)
        .bind(trace)
        .bind(event)
        .bind(notification)
        .bind(user)
        .bind(kind)
        .bind(node)
        .bind(data);
        self.run("a trace write", async |c| query.execute(c).await).await?;
        Ok(())
    }

    async fn by_event(&self, event_id: &str, limit: usize) -> Result<Vec<Step>, TraceError> {
        let id = text(event_id);
        self.rows(select!(" WHERE event_id = $1 ORDER BY id LIMIT $2"), |q| q.bind(id).bind(limit as i64)).await
    }

    async fn by_traces(&self, trace_ids: &[String], limit: usize) -> Result<Vec<Step>, TraceError> {
        let ids = trace_ids.to_vec();
        self.rows(select!(" WHERE trace_id = ANY($1) ORDER BY id LIMIT $2"), |q| q.bind(ids).bind(limit as i64)).await
    }

    async fn by_notifications(&self, ids: &[i64], limit: usize) -> Result<Vec<Step>, TraceError> {
        let ids = ids.to_vec();
        self.rows(
            select!(" WHERE notification_id = ANY($1) AND kind IN ('delivered', 'read') ORDER BY id LIMIT $2"),
            |q| q.bind(ids).bind(limit as i64),
        )
        .await
    }

    async fn marks(&self, users: &[String], limit: usize) -> Result<Vec<Step>, TraceError> {
        let users = users.to_vec();
        self.rows(select!(" WHERE user_id = ANY($1) AND kind IN ('read_all', 'seen_all') ORDER BY id LIMIT $2"), |q| {
            q.bind(users).bind(limit as i64)
        })
        .await
    }

    async fn user_traces(&self, user: &str, limit: usize) -> Result<Vec<String>, TraceError> {
        let query = sqlx::query(
            "SELECT trace_id FROM trace_steps WHERE user_id = $1 AND kind = 'stored' AND trace_id IS NOT NULL \
             GROUP BY trace_id ORDER BY max(id) DESC LIMIT $2",
        )
        .bind(text(user))
        .bind(limit as i64);
        let rows = self.run("a trace read", async |c| query.fetch_all(c).await).await?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(err)).collect()
    }

    async fn prune(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<u64, TraceError> {
        // Among the oldest `batch` rows (ids follow time), those before the cutoff: never a scan of young rows.
        let query = sqlx::query(
            "DELETE FROM trace_steps WHERE id IN \
             (SELECT id FROM (SELECT id, at FROM trace_steps ORDER BY id LIMIT $1) oldest WHERE at < $2)",
        )
        .bind(batch as i64)
        .bind(cutoff);
        let done = self.run("a trace pruning step", async |c| query.execute(c).await).await?;
        Ok(done.rows_affected())
    }

    async fn erase(&self, users: &[String]) -> Result<u64, TraceError> {
        // Their own steps, and the `event` steps that list them among their recipients (a live event, one stored
        // for several users), but the erasure's own record. A scan of the event steps: erases are rare.
        // Without the statement timeout: the scan grows with the trace, and an erase cut short would leave the
        // steps to retention. Still watched: a server gone silent fails it.
        let query = sqlx::query(
            "DELETE FROM trace_steps WHERE user_id = ANY($1) \
             OR (kind = 'event' AND user_id IS NULL AND (data::jsonb ->> 'outcome') IS DISTINCT FROM 'purged' \
                 AND (data::jsonb -> 'recipients') ?| $1)",
        )
        .bind(users);
        let done = self
            .run("a trace erase", async |c| {
                let mut tx = c.begin().await?;
                sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
                let done = query.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done)
            })
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{AssertSqlSafe, Connection as _};

    use super::*;
    use crate::postgres_connections::testing::SilentLink;

    fn step(event: &str) -> Step {
        Step {
            at: Utc::now(),
            trace_id: Some(format!("trace-{event}")),
            event_id: Some(event.to_owned()),
            notification_id: None,
            user_id: Some("u".into()),
            kind: Kind::Event,
            node: "node-a".into(),
            data: super::super::Data::Json(serde_json::json!({"outcome": "stored"})),
        }
    }

    /// The trace's statements are bounded as the inbox's: one waiting behind a lock ends at
    /// `store.statement_timeout_secs`, and one in flight when PostgreSQL goes silent (its host gone without a
    /// reset, a partition) fails as unavailable once the server is not seen working on it. Before, that write
    /// waited for good (sqlx sets no TCP keepalive), and the trace's one writer with it: the node recorded
    /// nothing more, every step counted as dropped. Once the server answers again, the next write lands.
    #[tokio::test]
    async fn a_trace_write_on_a_server_gone_silent_fails_and_the_next_one_lands() {
        let Ok(url) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI must run it; set HERALD_TEST_POSTGRES_URL");
            return eprintln!("SKIPPED: HERALD_TEST_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL)");
        };
        let database = format!("herald_trace_test_{:016x}", rand::random::<u64>());
        let mut server = PgConnection::connect(&url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut server).await.unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap().database(&database);
        let link = SilentLink::to((options.get_host().to_owned(), options.get_port())).await;
        let through = options.clone().host("127.0.0.1").port(link.addr.port());
        let trace = PostgresTrace::connect(through, Duration::from_secs(3)).await.unwrap();
        trace.append(std::sync::Arc::new(vec![step("before")])).await.unwrap();

        let mut admin = PgConnection::connect_with(&options).await.unwrap();
        let mut lock = admin.begin().await.unwrap();
        sqlx::query("LOCK TABLE trace_steps IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(30), trace.by_event("before", 10)).await;
        let Ok(Err(TraceError::Unavailable(why))) = waited else { panic!("not ended by the server: {waited:?}") };
        assert!(why.contains("statement timeout"), "{why}");

        // A write waiting behind the lock when the link goes silent; the lock ends after.
        let mut writing = std::pin::pin!(trace.append(std::sync::Arc::new(vec![step("during")])));
        link.silence_once_waiting(&options, writing.as_mut()).await;
        lock.rollback().await.unwrap();
        // Far longer than the check's wait and its look (5 s each), and than the server's statement timeout.
        let written = tokio::time::timeout(Duration::from_secs(60), writing).await;
        let Ok(Err(TraceError::Unavailable(why))) = written else { panic!("not failed as unavailable: {written:?}") };
        assert!(why.contains("stopped answering a trace write"), "{why}");

        link.restore();
        let started = std::time::Instant::now();
        while let Err(e) = trace.append(std::sync::Arc::new(vec![step("after")])).await {
            assert!(started.elapsed() < Duration::from_secs(60), "the trace did not recover: {e}");
        }
        assert_eq!(trace.by_event("after", 10).await.unwrap().len(), 1);
        trace.pool.close().await;
        admin.close().await.unwrap();
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE {database} WITH (FORCE)")))
            .execute(&mut server)
            .await
            .unwrap();
    }
}
