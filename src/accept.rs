//! The accept loop: TCP connections in, HTTP/1 (and WebSocket upgrades) served by hyper, within bounds.
//!
//! Bounds, so that half-open, slow-header or one-byte-per-second sockets cannot exhaust descriptors:
//! - `server.max_connections` open connections at most (0: the descriptor limit less a reserve), and
//!   `server.max_connections_per_ip` from one source address (an IPv6 /64 counts as one; 0: no cap). One more
//!   is closed as soon as it is accepted, counted in `herald_connections_refused_total{reason}`. The count
//!   follows the socket, not the HTTP exchange: an upgraded WebSocket holds its slot until it closes.
//! - `server.header_read_timeout_secs`: a connection that has not sent a whole request head that long after
//!   connecting, or after its previous response when kept alive, is closed
//!   (`herald_http_header_timeouts_total`).
//! - `server.max_head_bytes`: what a connection buffers of a request head (hyper's read buffer); a longer head
//!   gets `431` (hyper checks only a head still unfinished; `api::error::json_errors` makes the bound exact for
//!   whole heads). Without it hyper buffers ~400 KiB per connection, and a client holding thousands of
//!   unfinished heads for the timeout held gigabytes.
//! - `server.write_stall_timeout_secs`: a connection whose peer takes no byte of what Herald writes for that long
//!   (a response, or a WebSocket session's frames) is closed (`herald_write_stalls_total`): a client that sends
//!   requests and never reads the answers cannot hold its descriptor and buffers.
//!
//! - `server.ops_bind` (optional): a second listener serving only `/healthz`, `/readyz` and `/metrics`, with a
//!   cap of its own ([`OPS_MAX_CONNECTIONS`]): a gateway at `max_connections` (a flood, or simply full) still
//!   answers its liveness probe and its scrape, so the orchestrator does not kill a healthy node.
//!
//! Invariants: TCP_NODELAY on every accepted socket; on shutdown, stop accepting, let each connection finish
//! its request (idle ones close at once), and after `grace` drop whatever is left.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The accept loop's bounds (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    /// 0: no per-address cap.
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub write_stall_timeout: Duration,
    /// What a connection may buffer of a request head (`server.max_head_bytes`).
    pub max_head_bytes: usize,
    /// Which listener these bound: the operators' one (`server.ops_bind`) is counted apart, so that its
    /// connections neither show in `herald_connections_open` nor take the clients' slots.
    pub listener: Listener,
}

/// The two listeners: the clients' (`server.bind`) and the operators' (`server.ops_bind`: probes and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    Ops,
}

/// The operators' listener takes this many connections at once (probes and scrapes, a few at a time).
pub const OPS_MAX_CONNECTIONS: usize = 64;

impl Bounds {
    pub fn from_settings(s: &crate::config::ServerSettings) -> Bounds {
        Bounds {
            max_connections: s.connection_cap(),
            max_connections_per_ip: s.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            write_stall_timeout: Duration::from_secs(s.write_stall_timeout_secs),
            max_head_bytes: s.max_head_bytes,
            listener: Listener::Main,
        }
    }

    /// The operators' listener: its own small cap, the clients' timeouts.
    pub fn ops(s: &crate::config::ServerSettings) -> Bounds {
        Bounds {
            max_connections: OPS_MAX_CONNECTIONS,
            max_connections_per_ip: 0,
            listener: Listener::Ops,
            ..Bounds::from_settings(s)
        }
    }
}

/// Why a connection was closed on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

impl Refusal {
    fn label(self, listener: Listener) -> &'static str {
        match (listener, self) {
            (Listener::Ops, _) => "ops",
            (Listener::Main, Refusal::Total) => "total",
            (Listener::Main, Refusal::PerIp) => "per_ip",
        }
    }
}

/// Open connections, in total and per source address. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionLimiter(Arc<LimiterInner>);

struct LimiterInner {
    max_total: usize,
    max_per_ip: usize,
    /// Whose connections these are: only the clients' listener's count is `herald_connections_open`.
    listener: Listener,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize, listener: Listener) -> Self {
        ConnectionLimiter(Arc::new(LimiterInner { max_total, max_per_ip, listener, counts: Mutex::default() }))
    }

    /// A slot for a connection from `peer`, held until the returned [`Admission`] drops.
    pub fn try_admit(&self, peer: IpAddr) -> Result<Admission, Refusal> {
        let key = source_key(peer);
        let mut c = self.0.counts.lock().expect("connection counts poisoned");
        if c.total >= self.0.max_total {
            return Err(Refusal::Total);
        }
        if self.0.max_per_ip > 0 {
            let n = c.per_ip.entry(key).or_insert(0);
            if *n >= self.0.max_per_ip {
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        c.total += 1;
        if self.0.listener == Listener::Main {
            metrics::gauge!("herald_connections_open").set(c.total as f64);
        }
        Ok(Admission { limiter: self.clone(), key })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.0.counts.lock().expect("connection counts poisoned").total
    }
}

/// One admitted connection's slot; dropping it frees the slot.
pub struct Admission {
    limiter: ConnectionLimiter,
    key: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let inner = &self.limiter.0;
        let mut c = inner.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if inner.max_per_ip > 0 {
            if let Some(n) = c.per_ip.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&self.key);
                }
            }
        }
        if inner.listener == Listener::Main {
            metrics::gauge!("herald_connections_open").set(c.total as f64);
        }
    }
}

/// The address a per-source cap counts: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4), IPv6 by its /64,
/// the block one host or customer usually holds whole.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// A socket that holds its connection slot: through hyper, and through a WebSocket upgrade, until it closes. A
/// write that makes no progress for `stall` fails with `TimedOut`, which ends the connection; the timer exists only
/// while a write is stalled.
struct Counted<T> {
    io: T,
    _slot: Admission,
    stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Counted<T> {
    /// What a write that returned `result` answers: progress clears the stall; a stall past its timeout is an
    /// error; otherwise it waits (the timer wakes this task if nothing else does).
    fn progress<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) => {
                metrics::counter!("herald_write_stalls_total").increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer took nothing for server.write_stall_timeout_secs",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, result)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, result)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Not progress: a socket's flush is done at once whatever the peer took (only writes clear a stall).
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serve `app` on `listener` within `bounds` until `shutdown` is cancelled; then stop accepting, let open
/// requests finish for up to `grace`, and return.
pub async fn serve(listener: TcpListener, app: Router, bounds: Bounds, shutdown: CancellationToken, grace: Duration) {
    let limiter = ConnectionLimiter::new(bounds.max_connections, bounds.max_connections_per_ip, bounds.listener);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(bounds.header_read_timeout).max_buf_size(bounds.max_head_bytes);
    let connections = TaskTracker::new();
    // Cancelled when the grace period is over: what is still open then is dropped.
    let hard_stop = CancellationToken::new();
    let mut last_warned: Option<Instant> = None;

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e, &mut last_warned).await;
                    continue;
                }
            },
        };
        let slot = match limiter.try_admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once: the socket costs a descriptor only for this instant.
                let reason = refusal.label(bounds.listener);
                metrics::counter!("herald_connections_refused_total", "reason" => reason).increment(1);
                tracing::debug!(%peer, reason, "connection refused: over the cap");
                drop(stream);
                continue;
            }
        };
        // Frames are small and latency matters more than packet count: no Nagle delay (which, with the peer's
        // delayed ACK, holds a frame up to 40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let io = TokioIo::new(Counted { io: stream, _slot: slot, stall: bounds.write_stall_timeout, stalled: None });
        let conn = http.serve_connection(io, TowerToHyperService::new(app.clone())).with_upgrades();
        let shutdown = shutdown.clone();
        let hard_stop = hard_stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = conn.as_mut() => result,
                        _ = hard_stop.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics::counter!("herald_http_header_timeouts_total").increment(1);
                    tracing::debug!(%peer, "closed: no request head within server.header_read_timeout_secs");
                } else {
                    tracing::trace!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }

    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(left = connections.len(), "HTTP connections still open after the grace period; closing them");
        hard_stop.cancel();
        connections.wait().await;
    }
}

/// `accept` failed. A connection that died in the backlog is nothing; anything else (EMFILE, ENFILE, ENOBUFS)
/// is waited out briefly, as a busy loop would only fail again, and logged at most once a second.
async fn accept_failed(e: io::Error, last_warned: &mut Option<Instant>) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    metrics::counter!("herald_accept_errors_total").increment(1);
    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last_warned = Some(Instant::now());
        tracing::warn!(error = %e, "accept failed (descriptor limit?); retrying");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_total_and_per_source_and_free_on_drop() {
        let l = ConnectionLimiter::new(3, 2, Listener::Main);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.try_admit(a).unwrap();
        let a2 = l.try_admit(a).unwrap();
        assert_eq!(l.try_admit(a).err(), Some(Refusal::PerIp));
        let b1 = l.try_admit(b).unwrap();
        assert_eq!(l.try_admit(b).err(), Some(Refusal::Total));
        assert_eq!(l.open(), 3);
        drop(a1);
        assert_eq!(l.open(), 2);
        let a3 = l.try_admit(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(l.open(), 0);
        assert!(l.0.counts.lock().unwrap().per_ip.is_empty(), "no entry left behind");
    }

    #[test]
    fn no_per_source_cap_when_zero() {
        let l = ConnectionLimiter::new(10, 0, Listener::Main);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..10).map(|_| l.try_admit(ip).unwrap()).collect();
        assert_eq!(l.try_admit(ip).err(), Some(Refusal::Total));
        drop(slots);
        assert!(l.0.counts.lock().unwrap().per_ip.is_empty());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    }
}
