//! A pool: the connections one process holds, driven by [`Command`]s.
//!
//! The same commands drive a pool in this process or in a worker process (see `fleet`), so every scenario
//! is written once whether the connections fit in one process or not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Target, Ws};
use crate::frame::{self, Frame, Marker};
use crate::hist::Latency;
use crate::limits::{Failure, Failures, Sources};
use crate::recorder::{Arm, Deliveries, Recorder};
use crate::report::Timeline;
use crate::schedule::{mono_ns, sleep_until_ns, Schedule};
use crate::token::Minter;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolConfig {
    pub server: SocketAddr,
    /// `host:port` as written in the WebSocket URL.
    pub host: String,
    pub jwt_secret: String,
    pub user_claim: String,
    pub token_ttl_secs: u64,
    pub user_prefix: String,
    /// Bind each connection to a 127.0.0.x source address (loopback targets only).
    pub sources: Option<Sources>,
    pub connect_timeout_ms: u64,
    /// Handshakes in flight at once, per process.
    pub concurrency: usize,
    pub read_buffer: usize,
    #[serde(default)]
    pub target: Target,
}

impl PoolConfig {
    pub fn user(&self, i: u64) -> String {
        format!("{}{i}", self.user_prefix)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// Open connections for users `from..to`; with `resume`, reconnect them with `since` = the last id each saw.
    /// `rate` paces the attempts per second (0: as fast as `concurrency` allows).
    Connect {
        from: u64,
        to: u64,
        resume: bool,
        rate: f64,
        origin_ns: u64,
    },
    Arm(Arm),
    /// Deliveries recorded since `Arm`.
    Count,
    Snapshot,
    /// Close every connection (the last id each saw is kept for a later `resume`).
    Disconnect,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Connected(ConnectOutcome),
    Done,
    Count(u64),
    Snapshot(Snapshot),
    /// Attempts finished so far in the current `Connect` (sent by workers while it runs).
    Progress(u64),
    Error(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectOutcome {
    pub attempted: u64,
    pub connected: u64,
    pub failures: Failures,
    pub failed: Vec<u64>,
    /// Start of the attempt → `ready` frame.
    pub handshake: String,
    /// Start of the attempt → `replayed` frame (resume only).
    pub catch_up: String,
    /// Notification frames received before `replayed`.
    pub replayed: u64,
    /// Sessions ready, over time.
    pub timeline: Timeline,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl ConnectOutcome {
    pub fn merge(&mut self, o: &ConnectOutcome) -> anyhow::Result<()> {
        self.attempted += o.attempted;
        self.connected += o.connected;
        for (k, v) in &o.failures {
            *self.failures.entry(*k).or_default() += v;
        }
        self.failed.extend(&o.failed);
        self.handshake = merge_hist(&self.handshake, &o.handshake)?;
        self.catch_up = merge_hist(&self.catch_up, &o.catch_up)?;
        self.replayed += o.replayed;
        if self.timeline.bucket_ms == 0 {
            self.timeline = o.timeline.clone();
        } else {
            self.timeline.merge(&o.timeline);
        }
        if o.first_ns != 0 && (self.first_ns == 0 || o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        Ok(())
    }
}

fn merge_hist(a: &str, b: &str) -> anyhow::Result<String> {
    let mut l = if a.is_empty() { Latency::default() } else { Latency::decode(a)? };
    if !b.is_empty() {
        l.merge(&Latency::decode(b)?);
    }
    Ok(l.encode())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub deliveries: Deliveries,
    /// Notifications that arrived with an id not above the previous one on the same socket.
    pub out_of_order: u64,
    /// Sessions that ended without the tool closing them.
    pub dropped: u64,
    pub open: u64,
}

impl Snapshot {
    pub fn merge(&mut self, o: &Snapshot) -> anyhow::Result<()> {
        self.deliveries.merge(&o.deliveries)?;
        self.out_of_order += o.out_of_order;
        self.dropped += o.dropped;
        self.open += o.open;
        Ok(())
    }
}

/// State every connection task of this process shares.
#[derive(Default)]
pub struct Shared {
    pub recorder: Recorder,
    pub progress: Arc<AtomicU64>,
    pub dropped: AtomicU64,
    pub out_of_order: AtomicU64,
    pub open: AtomicU64,
}

struct Slot {
    last_id: Arc<AtomicI64>,
    task: Option<JoinHandle<()>>,
}

pub struct Pool {
    cfg: Arc<PoolConfig>,
    minter: Arc<Minter>,
    shared: Arc<Shared>,
    slots: HashMap<u64, Slot>,
}

/// What a connection reports once it is ready (or failed).
struct Opened {
    ready_ns: u64,
    done_ns: u64,
    replayed: u64,
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Self {
        let minter = Minter::new(&cfg.jwt_secret, &cfg.user_claim, cfg.token_ttl_secs);
        Pool {
            cfg: Arc::new(cfg),
            minter: Arc::new(minter),
            shared: Arc::new(Shared::default()),
            slots: HashMap::new(),
        }
    }

    pub fn progress(&self) -> Arc<AtomicU64> {
        self.shared.progress.clone()
    }

    pub async fn handle(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Connect { from, to, resume, rate, origin_ns } => {
                Reply::Connected(self.connect(from, to, resume, rate, origin_ns).await)
            }
            Command::Arm(arm) => {
                self.shared.recorder.arm(arm);
                self.shared.out_of_order.store(0, Ordering::Relaxed);
                Reply::Done
            }
            Command::Count => Reply::Count(self.shared.recorder.delivered()),
            Command::Snapshot => Reply::Snapshot(Snapshot {
                deliveries: self.shared.recorder.snapshot(),
                out_of_order: self.shared.out_of_order.load(Ordering::Relaxed),
                dropped: self.shared.dropped.load(Ordering::Relaxed),
                open: self.shared.open.load(Ordering::Relaxed),
            }),
            Command::Disconnect => {
                self.disconnect().await;
                Reply::Done
            }
        }
    }

    async fn connect(&mut self, from: u64, to: u64, resume: bool, rate: f64, origin_ns: u64) -> ConnectOutcome {
        self.shared.progress.store(0, Ordering::Relaxed);
        let sem = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let schedule = Schedule::new(mono_ns(), rate);
        let mut waits = Vec::with_capacity((to - from) as usize);
        for (k, i) in (from..to).enumerate() {
            if !schedule.is_unbounded() {
                sleep_until_ns(schedule.intended(k as u64, 0)).await;
            }
            let permit = sem.clone().acquire_owned().await.expect("never closed");
            let since = match self.slots.get(&i) {
                Some(s) if resume => Some(s.last_id.load(Ordering::Relaxed)),
                _ => None,
            };
            if let Some(old) = self.slots.remove(&i).and_then(|s| s.task) {
                old.abort();
            }
            let last_id = Arc::new(AtomicI64::new(since.unwrap_or(0)));
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(conn_task(
                self.cfg.clone(),
                self.minter.clone(),
                self.shared.clone(),
                i,
                since,
                last_id.clone(),
                tx,
                permit,
            ));
            self.slots.insert(i, Slot { last_id, task: Some(task) });
            waits.push((i, rx));
        }
        let mut out =
            ConnectOutcome { attempted: to - from, timeline: Timeline::new(origin_ns, 100), ..Default::default() };
        let (mut handshake, mut catch_up) = (Latency::default(), Latency::default());
        for (i, rx) in waits {
            match rx.await.unwrap_or(Err(Failure::Reset)) {
                Ok(o) => {
                    out.connected += 1;
                    handshake.record_ns(o.ready_ns);
                    if resume {
                        catch_up.record_ns(o.done_ns);
                        out.replayed += o.replayed;
                    }
                    let at = mono_ns();
                    out.timeline.record(at);
                    if out.first_ns == 0 {
                        out.first_ns = at;
                    }
                    out.last_ns = at;
                }
                Err(f) => {
                    *out.failures.entry(f).or_default() += 1;
                    out.failed.push(i);
                }
            }
        }
        out.handshake = handshake.encode();
        out.catch_up = catch_up.encode();
        out
    }

    async fn disconnect(&mut self) {
        let mut tasks = Vec::new();
        for slot in self.slots.values_mut() {
            if let Some(t) = slot.task.take() {
                t.abort();
                tasks.push(t);
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        self.shared.open.store(0, Ordering::Relaxed);
        // Let the kernel finish the closes before anyone counts on them.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn conn_task(
    cfg: Arc<PoolConfig>,
    minter: Arc<Minter>,
    shared: Arc<Shared>,
    i: u64,
    since: Option<i64>,
    last_id: Arc<AtomicI64>,
    done: oneshot::Sender<Result<Opened, Failure>>,
    permit: OwnedSemaphorePermit,
) {
    let t0 = mono_ns();
    let user = cfg.user(i);
    let token = minter.mint(&user);
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let mut conn = Conn { shared: &shared, last_id: &last_id, prev_id: since.unwrap_or(0), nchan_prev: [(0, 0); 2] };
    let opened = async {
        let dial = client::Dial {
            server: cfg.server,
            host: &cfg.host,
            source: cfg.sources.map(|s| s.for_index(i)),
            read_buffer: cfg.read_buffer,
            timeout,
            target: cfg.target,
        };
        let mut ws = client::open(&dial, &user, &token, since).await?;
        if cfg.target == Target::Nchan {
            // nchan sends nothing on subscribing: the session is live once the handshake completes.
            let ready_ns = mono_ns() - t0;
            return Ok::<_, Failure>((ws, Opened { ready_ns, done_ns: ready_ns, replayed: 0 }));
        }
        let left = timeout.saturating_sub(Duration::from_nanos(mono_ns() - t0));
        let o = tokio::time::timeout(left, conn.until_ready(&mut ws, t0, since.is_some()))
            .await
            .unwrap_or(Err(Failure::Timeout))?;
        Ok::<_, Failure>((ws, o))
    }
    .await;
    shared.progress.fetch_add(1, Ordering::Relaxed);
    let mut ws = match opened {
        Ok((ws, o)) => {
            let _ = done.send(Ok(o));
            ws
        }
        Err(f) => {
            let _ = done.send(Err(f));
            return;
        }
    };
    drop(permit);
    shared.open.fetch_add(1, Ordering::Relaxed);
    // Live: read until the server or the tool ends the session (tungstenite answers pings as it reads).
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => conn.on_frame(match cfg.target {
                Target::Herald => frame::parse(t.as_str()),
                Target::Nchan => frame::parse_nchan(t.as_str()),
            }),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
    shared.dropped.fetch_add(1, Ordering::Relaxed);
}

struct Conn<'a> {
    shared: &'a Shared,
    last_id: &'a AtomicI64,
    prev_id: i64,
    /// nchan: the last message id seen per subscribed channel (the user's, broadcast).
    nchan_prev: [(u64, u64); 2],
}

impl Conn<'_> {
    /// Read until `ready` (and, when resuming, until `replayed`).
    async fn until_ready(&mut self, ws: &mut Ws, t0: u64, resume: bool) -> Result<Opened, Failure> {
        let mut ready_ns = 0;
        let mut replayed = 0;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => match frame::parse(t.as_str()) {
                    Frame::Ready { latest_id } => {
                        ready_ns = mono_ns() - t0;
                        self.last_id.fetch_max(latest_id, Ordering::Relaxed);
                        if !resume {
                            return Ok(Opened { ready_ns, done_ns: ready_ns, replayed });
                        }
                    }
                    Frame::Replayed { up_to } => {
                        self.last_id.fetch_max(up_to, Ordering::Relaxed);
                        return Ok(Opened { ready_ns, done_ns: mono_ns() - t0, replayed });
                    }
                    f @ Frame::Notification { .. } => {
                        replayed += 1;
                        self.on_frame(f);
                    }
                    Frame::Nchan { .. } | Frame::Other => {}
                },
                Ok(Message::Close(_)) => return Err(Failure::Reset),
                Err(_) => return Err(Failure::Reset),
                Ok(_) => {}
            }
        }
        Err(Failure::Reset)
    }

    fn on_frame(&mut self, f: Frame) {
        match f {
            Frame::Notification { id, marker } => self.on_notification(id, marker),
            Frame::Nchan { channel, id, marker } => {
                // nchan's order: each channel's message ids increase on the socket, as Herald's ids do.
                match self.nchan_prev.get_mut(channel) {
                    Some(prev) => {
                        if id <= *prev {
                            self.shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        *prev = (*prev).max(id);
                    }
                    None => {
                        self.shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.shared.recorder.on_notification(marker, mono_ns());
            }
            _ => {}
        }
    }

    fn on_notification(&mut self, id: i64, marker: Option<Marker>) {
        if id <= self.prev_id {
            self.shared.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.prev_id = self.prev_id.max(id);
        self.last_id.fetch_max(id, Ordering::Relaxed);
        self.shared.recorder.on_notification(marker, mono_ns());
    }
}
