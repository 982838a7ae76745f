//! PostgreSQL connections that never wait without bound on a server gone silent, for both stores that use
//! PostgreSQL: the inbox (`inbox::postgres`) and the trace (`trace::postgres`).
//!
//! A server can stop answering without closing its connections: its host gone without a reset, a partition, a
//! failover to another address. sqlx sets no TCP keepalive, and the kernel gives up on such a socket only after
//! its retransmissions (about 15 minutes) or, when what was sent had been acknowledged, never. So:
//! - [`pool`]: every statement is bounded on the server (`store.statement_timeout_secs`), and so is a transaction
//!   left idle, which ends the session and its locks;
//! - [`Lent`]: a connection whose work was cut short (its caller's timeout) drains for a bound and is then given
//!   up, instead of going back through sqlx's unbounded ping, which on a silent server holds its pool slot for
//!   good;
//! - [`watched`] and [`while_working`]: work no caller cuts short (the inbox's commits and retention, the trace's
//!   writes) is waited for as long as PostgreSQL is seen working on it ([`still_working`]), then failed.
//!
//! The stores' tests hold the invariants: `a_server_gone_silent_fails_writes_as_unavailable_keeps_no_reader_slot_
//! and_both_reconnect`, `a_retention_run_on_a_server_gone_silent_fails_as_unavailable_and_the_next_run_prunes`
//! (`inbox::postgres`), `a_trace_write_on_a_server_gone_silent_fails_and_the_next_one_lands` (`trace::postgres`);
//! and work that answers while its server is being asked about it is taken, not given up
//! (`work_answering_while_its_server_is_asked_about_it_is_taken`).

use std::future::Future;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, Postgres};

/// How long a caller waits for a pooled connection (PostgreSQL down or saturated), watched work's first statement
/// ([`watched`]) or a look at the server ([`still_working`]) for its answer, and a goodbye for its write.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long watched work ([`while_working`]) goes without an answer before PostgreSQL is asked, through a
/// connection of its own, whether it is still working on it; then again after each such period.
pub(crate) const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// A pool whose connections bound every statement at `statement_timeout` on the server, lock waits included (a
/// hung node must not hang the others), and a transaction left idle as long: the server ends such a session and
/// its locks go with it. Herald never pauses inside a transaction (its statements follow one another with no wait
/// between), so an idle one is a node that stopped answering: partitioned, or whose writer gave the commit up. Its
/// ordering locks (the write lock exclusive, for a broadcast) would otherwise stop every other node's writes until
/// the server's TCP keepalive noticed, two hours by default. Set after connecting rather than as startup options,
/// which connection poolers such as PgBouncer refuse.
pub(crate) fn pool(max_connections: u32, statement_timeout: Duration) -> PgPoolOptions {
    let secs = format!("{}s", statement_timeout.as_secs());
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).after_connect(
        move |conn, _| {
            let secs = secs.clone();
            Box::pin(async move {
                sqlx::query(
                    "SELECT set_config('statement_timeout', $1, false),
                            set_config('idle_in_transaction_session_timeout', $1, false)",
                )
                .bind(secs)
                .execute(conn)
                .await
                .map(drop)
            })
        },
    )
}

/// The migrator's one connection, without the requests' statement timeout ([`pool`]): a migration rewriting a large inbox, or waiting
/// for a writer's lock, may take longer than any request may, and a node starting while another migrates waits
/// for the migration lock as long as it takes. Cut short, a migration rolls back and the node exits — at every
/// retry, for a table that size.
pub(crate) fn migration_pool() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).after_connect(|conn, _| {
        Box::pin(async move { sqlx::query("SET statement_timeout = 0").execute(conn).await.map(drop) })
    })
}

/// A connection taken from a pool for one piece of work. Finished ([`Lent::done`]), it goes back to the pool as
/// usual. Dropped before that (the caller's timeout cut the work: an HTTP request's, a session's, the readiness
/// probe's, or [`watched`] gave it up), it keeps its pool slot while the cut statement's answer drains, as sqlx's
/// own return would, but for no longer than the server's statement timeout (the pool's, [`pool`]) and a second:
/// then it is given up. sqlx hands a connection back through a ping with no bound; on a server gone silent that wait never
/// ends and holds the slot, so a few cut reads (the readiness probe cuts one every few seconds) would leave no
/// connection for any read, even after PostgreSQL is back at its address. Bounded rather than given up at once,
/// so that a slow server is not sent a new connection for every read cut short.
pub(crate) struct Lent {
    conn: Option<PoolConnection<Postgres>>,
    drain: Duration,
}

impl Lent {
    /// A connection from `pool`, whose statements the server ends at `statement_timeout`, within the pool's
    /// acquire timeout.
    pub(crate) async fn from(pool: &PgPool, statement_timeout: Duration) -> sqlx::Result<Lent> {
        Ok(Lent { conn: Some(pool.acquire().await?), drain: statement_timeout + Duration::from_secs(1) })
    }

    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lent connection is taken only by done or drop")
    }

    pub(crate) fn done(mut self) {
        drop(self.conn.take());
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return drop(conn.detach()) };
        let drain = self.drain;
        runtime.spawn(async move {
            match tokio::time::timeout(drain, conn.ping()).await {
                Ok(Ok(())) => drop(conn), // drained: back to the pool
                _ => drop(conn.detach()), // its socket closed, no goodbye: the pool opens another
            }
        });
    }
}

/// Why [`watched`] work did not run to its end.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// No connection from the pool, or it failed before the work began.
    Connection(sqlx::Error),
    /// PostgreSQL went silent on it: the message says what and for how long.
    Silent(String),
}

/// Run `work` on a connection from `pool`, for as long as its server process is seen working on it
/// ([`while_working`], looking through `watch`); the connection goes back to the pool once `work` ends, whatever
/// it returned. When PostgreSQL goes silent on it, `work` is dropped, its connection given up after a bounded
/// drain ([`Lent`]: `pool`'s `statement_timeout` and a second), and the answer says so, naming `what` the work was. Costs one round trip more than `work`: the
/// server process's id, asked first.
pub(crate) async fn watched<T, E>(
    pool: &PgPool,
    watch: &PgConnectOptions,
    statement_timeout: Duration,
    what: &str,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<Result<T, E>, Unanswered> {
    let mut lent = Lent::from(pool, statement_timeout).await.map_err(Unanswered::Connection)?;
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(lent.conn());
    let pid: i32 = match tokio::time::timeout(ACQUIRE_TIMEOUT, pid).await {
        Ok(pid) => pid.map_err(Unanswered::Connection)?,
        Err(_) => {
            return Err(Unanswered::Silent(format!(
                "PostgreSQL did not answer {what}'s first statement within {} s; its connection is given up",
                ACQUIRE_TIMEOUT.as_secs()
            )));
        }
    };
    let started = std::time::Instant::now();
    let Some(done) = while_working(watch, pid, work(lent.conn())).await else {
        return Err(Unanswered::Silent(format!(
            "PostgreSQL stopped answering {what} (nothing for {} s, and its server process was not seen working on \
             it); its connection is given up and the next one opens another",
            started.elapsed().as_secs()
        )));
    };
    lent.done();
    Ok(done)
}

/// `work`'s outcome, awaited for as long as PostgreSQL's server process `pid`, which runs it, is seen working on
/// it ([`still_working`], asked after each [`SILENCE_CHECK`] without an answer); `None` once it is not, and `work`
/// is then dropped, its connection to be given up by the caller.
pub(crate) async fn while_working<T>(options: &PgConnectOptions, pid: i32, work: impl Future<Output = T>) -> Option<T> {
    let mut work = std::pin::pin!(work);
    loop {
        if let Ok(result) = tokio::time::timeout(SILENCE_CHECK, &mut work).await {
            return Some(result);
        }
        // `work` is still polled while the server is asked: an answer arriving meanwhile is taken, not given up
        // because the process it came from is already idle.
        tokio::select! {
            biased;
            result = &mut work => return Some(result),
            working = still_working(options, pid) => if !working { return None },
        }
    }
}

/// Whether PostgreSQL is still working on a statement of server process `pid`, asked through a new connection:
/// the process exists and is running a statement, not waiting for its client (`wait_event_type` `Client`: a
/// message of the client's lost, or an answer it cannot send). Work may rightly take long (a lock held by another
/// node's broadcast or pruning, a large purge: each statement bounded by `store.statement_timeout_secs`, not the
/// whole), and is waited for as long as the server works on it. No answer within [`ACQUIRE_TIMEOUT`], no such
/// process (another server now, or it ended), or one idle: not working. The process is its connection's for the
/// connection's life: a pooler that would hand it to another client between transactions is refused at start
/// (`inbox::postgres::refuse_shared_connections`).
async fn still_working(options: &PgConnectOptions, pid: i32) -> bool {
    let look = async {
        let mut c = PgConnection::connect_with(options).await?;
        let seen: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = $1")
                .bind(pid)
                .fetch_optional(&mut c)
                .await?;
        drop(c); // no goodbye to wait for
        Ok::<_, sqlx::Error>(seen)
    };
    match tokio::time::timeout(ACQUIRE_TIMEOUT, look).await {
        Ok(Ok(Some((state, wait)))) => state.as_deref() == Some("active") && wait.as_deref() != Some("Client"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that answers while its server is being asked about it is taken: while the look waits (here on an
    /// address that accepts and never answers, up to its 5 s), `work` is still polled. Before, it was not, and
    /// work the server had just finished (its process then idle) was given up as unanswered: a commit failed
    /// though stored, a trace batch written twice. Work that never answers is still given up.
    #[tokio::test(start_paused = true)]
    async fn work_answering_while_its_server_is_asked_about_it_is_taken() {
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = PgConnectOptions::new().host("127.0.0.1").port(mute.local_addr().unwrap().port());
        let answers_during_the_look = async {
            tokio::time::sleep(SILENCE_CHECK + Duration::from_secs(1)).await;
            "answered"
        };
        assert_eq!(while_working(&options, 1, answers_during_the_look).await, Some("answered"));
        assert_eq!(while_working(&options, 1, std::future::pending::<()>()).await, None);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    /// A TCP link to PostgreSQL that can go silent as a vanished host does: from [`SilentLink::silence`] on, the
    /// connections open through it carry nothing more either way and none is closed (no reset, no FIN: only a
    /// timeout can tell). Connections opened after [`SilentLink::restore`] work; the silenced ones stay silent.
    pub(crate) struct SilentLink {
        pub(crate) addr: std::net::SocketAddr,
        /// Bumped by `silence`: a connection opened in an earlier generation is dead for good.
        generation: Arc<AtomicU64>,
        silent: Arc<AtomicBool>,
    }

    impl SilentLink {
        pub(crate) async fn to(upstream: (String, u16)) -> SilentLink {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let link = SilentLink {
                addr: listener.local_addr().unwrap(),
                generation: Arc::new(AtomicU64::new(0)),
                silent: Arc::new(AtomicBool::new(false)),
            };
            let (generation, silent) = (link.generation.clone(), link.silent.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream.clone()).await else { continue };
                    let born = generation.load(SeqCst);
                    let (generation, silent) = (generation.clone(), silent.clone());
                    let alive: Arc<dyn Fn() -> bool + Send + Sync> =
                        Arc::new(move || !silent.load(SeqCst) && generation.load(SeqCst) == born);
                    let (from_node, to_node) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::spawn(SilentLink::pipe(from_node, to_server, alive.clone()));
                    tokio::spawn(SilentLink::pipe(from_server, to_node, alive));
                }
            });
            link
        }

        async fn pipe(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            alive: Arc<dyn Fn() -> bool + Send + Sync>,
        ) {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf).await {
                // Read and dropped once dead: what the node sends is taken, and never answered.
                if alive() && to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            if alive() {
                let _ = to.shutdown().await;
            } else {
                std::future::pending::<()>().await; // a dead link never says it closed
            }
        }

        pub(crate) fn silence(&self) {
            self.silent.store(true, SeqCst);
            self.generation.fetch_add(1, SeqCst);
        }

        /// Run `work` until PostgreSQL shows a statement of the database `options` names waiting for a lock (one
        /// the caller holds), then silence the link, so the silence falls inside that statement. `work` is left
        /// to the caller: given up (its caller's timeout), or awaited for what it makes of the silence.
        pub(crate) async fn silence_once_waiting<F: std::future::Future<Output: std::fmt::Debug>>(
            &self,
            options: &sqlx::postgres::PgConnectOptions,
            mut work: std::pin::Pin<&mut F>,
        ) {
            use sqlx::Connection as _;
            let mut watch = sqlx::PgConnection::connect_with(options).await.unwrap();
            loop {
                tokio::select! {
                    r = &mut work => panic!("answered under the lock: {r:?}"),
                    () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                }
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut watch)
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
            }
            self.silence();
            watch.close().await.unwrap();
        }

        pub(crate) fn restore(&self) {
            self.silent.store(false, SeqCst);
        }
    }
}
