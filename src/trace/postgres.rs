//! The trace's steps in PostgreSQL: their own table (`trace_steps`) in the inbox's database, with their own
//! migrations (`migrations/postgres-trace/`, recorded in `_herald_trace_migrations`, so the inbox's migrator
//! never sees them), over a small pool of their own: a trace write never takes the inbox's advisory write
//! lock. Every node appends its own steps; retention is a plain batched delete any node may run.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Row, SqlSafeStr};

use super::{Kind, Step, TraceError, TraceStore};

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
}

impl PostgresTrace {
    pub async fn open(url: &str) -> Result<PostgresTrace, TraceError> {
        // The parse error never repeats the URL, which may hold a password.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| TraceError::Unavailable(format!("store.url: {e}")))?
            .application_name("herald-trace")
            // As the inbox's connections: no startup option a pooler refuses (`crate::inbox::postgres`).
            .extra_float_digits(None);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(err)?;
        migrator().run(&pool).await.map_err(|e| err(format!("trace migrations: {e}")))?;
        Ok(PostgresTrace { pool })
    }

    async fn rows(
        &self,
        sql: &'static str,
        bind: impl FnOnce(Query<'static>) -> Query<'static>,
    ) -> Result<Vec<Step>, TraceError> {
        let rows = bind(sqlx::query(sql)).fetch_all(&self.pool).await.map_err(err)?;
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
        sqlx::query(
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
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(err)?;
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
        let rows = sqlx::query(
            "SELECT trace_id FROM trace_steps WHERE user_id = $1 AND kind = 'stored' AND trace_id IS NOT NULL \
             GROUP BY trace_id ORDER BY max(id) DESC LIMIT $2",
        )
        .bind(text(user))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(err)).collect()
    }

    async fn prune(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<u64, TraceError> {
        // Among the oldest `batch` rows (ids follow time), those before the cutoff: never a scan of young rows.
        let done = sqlx::query(
            "DELETE FROM trace_steps WHERE id IN \
             (SELECT id FROM (SELECT id, at FROM trace_steps ORDER BY id LIMIT $1) oldest WHERE at < $2)",
        )
        .bind(batch as i64)
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected())
    }

    async fn erase(&self, users: &[String]) -> Result<u64, TraceError> {
        // Their own steps, and the `event` steps that list them among their recipients (a live event, one stored
        // for several users), but the erasure's own record. A scan of the event steps: erases are rare.
        let done = sqlx::query(
            "DELETE FROM trace_steps WHERE user_id = ANY($1) \
             OR (kind = 'event' AND user_id IS NULL AND (data::jsonb ->> 'outcome') IS DISTINCT FROM 'purged' \
                 AND (data::jsonb -> 'recipients') ?| $1)",
        )
        .bind(users)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected())
    }
}
