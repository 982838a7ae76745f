//! The chaos run: two Herald processes on RabbitMQ + PostgreSQL + Redis take a stream of targeted and broadcast
//! events over HTTP and AMQP while the harness kills -9 a node (and starts it again), restarts Redis, restarts
//! RabbitMQ and restarts PostgreSQL. Clients follow the delivery contract (docs/PROTOCOL.md, "Positions and
//! gaps") the way the SDK does: a cursor per chain, frames not above their chain's cursor dropped, reconnects
//! with backoff to the other node with both cursors, nothing refetched. Publishers retry until they get a 202 or
//! a broker confirm, with a stable event id, so Herald's idempotency is what makes each event one notification.
//!
//! At the end every client must hold exactly its user's inbox (REST, paged): nothing lost, nothing twice, each
//! chain in id order. The figures are printed whatever the outcome.
//!
//! It restarts the services it runs on, so it is `#[ignore]`d in the ordinary suite: `scripts/chaos.sh` starts
//! its own services (scripts/lib/services.sh, whose `restart_*` functions this harness calls) and runs it.
//! Node A reaches Redis through a proxy that adds `CHAOS_REDIS_LATENCY_MS` (default 30) each way: what A commits
//! reaches B's sessions that much later than what B commits, so frames overtake each other across nodes all the
//! time, as between machines, instead of almost never, as on one loopback.
//!
//! Besides the retries the faults cause, `CHAOS_RESEND_PERCENT` (default 5) of the events are sent twice at once
//! on purpose, as a publisher does that retries after an answer it never got: the two copies race each other
//! (over HTTP, often on both nodes; over AMQP, often in one consumer batch).
//!
//! Size: `CHAOS_EVENTS` (default 3,000), `CHAOS_USERS` (40), `CHAOS_BROADCAST_PERCENT` (10), `CHAOS_RATE` (events
//! a second, 100), `CHAOS_FAULT_ROUNDS` (1; a round is the five faults below, spread evenly over the stream).

#[path = "it/support.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::auth::Authenticator;
use herald::config::{AmqpExchangeKind, Settings};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use support::{repo_path, slow_link, spawn_herald_process_logged, SERVICE_KEY};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_num(name: &str, default: u64) -> u64 {
    env(name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))).unwrap_or(default)
}

/// How big a run is.
#[derive(Debug, Clone)]
struct Size {
    events: usize,
    users: usize,
    broadcast_percent: u64,
    resend_percent: u64,
    rate: u64,
    fault_rounds: usize,
    redis_latency: Duration,
}

impl Size {
    fn from_env() -> Size {
        Size {
            events: env_num("CHAOS_EVENTS", 3_000) as usize,
            users: env_num("CHAOS_USERS", 40) as usize,
            broadcast_percent: env_num("CHAOS_BROADCAST_PERCENT", 10),
            resend_percent: env_num("CHAOS_RESEND_PERCENT", 5),
            rate: env_num("CHAOS_RATE", 100).max(1),
            fault_rounds: env_num("CHAOS_FAULT_ROUNDS", 1) as usize,
            redis_latency: Duration::from_millis(env_num("CHAOS_REDIS_LATENCY_MS", 30)),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Services and nodes

/// Run one of scripts/lib/services.sh's `restart_*` functions; how long it took.
async fn restart_service(function: &'static str) -> Duration {
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(format!("source scripts/lib/services.sh && {function}"))
            .current_dir(repo_path(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
    })
    .await
    .unwrap()
    .expect("running bash");
    assert!(status.success(), "{function} failed");
    started.elapsed()
}

/// One Herald process: its config (a fixed port, so clients and publishers find it again after a restart).
struct Node {
    name: &'static str,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// What its processes counted, summed over its lifetimes.
    counters: ServerCounters,
}

/// A few of a node's own counters (`/metrics`), read just before each kill -9 and at the end: what the server
/// did to keep the promise (deduplicated retries and redeliveries, gaps it filled, notifications it replayed).
#[derive(Debug, Default, Clone, Copy)]
struct ServerCounters {
    duplicates_http: f64,
    duplicates_amqp: f64,
    redelivered: f64,
    gap_fills: f64,
    replayed: f64,
    /// Reads that failed (the node was not answering): the sums above are then lower bounds.
    unread: u32,
}

impl ServerCounters {
    fn add(&mut self, o: &ServerCounters) {
        self.duplicates_http += o.duplicates_http;
        self.duplicates_amqp += o.duplicates_amqp;
        self.redelivered += o.redelivered;
        self.gap_fills += o.gap_fills;
        self.replayed += o.replayed;
        self.unread += o.unread;
    }
}

/// The sum of the series of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Node {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        for attempt in 0.. {
            let (config, log) = (self.config.clone(), self.log.clone());
            // The helper panics when the process exits before listening (a port still held, say): try again.
            match tokio::task::spawn_blocking(move || spawn_herald_process_logged(&config, &log)).await {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if attempt < 20 => {
                    eprintln!("{} did not start ({e}); retrying", self.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("{} never started: {e} (log: {})", self.name, self.log.display()),
            }
        }
    }

    /// Read the node's counters, then SIGKILL it: nothing it holds in memory survives, by design.
    async fn kill_9(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let url = format!("{}/metrics", self.base());
        let read = async { reqwest::Client::new().get(url).send().await?.text().await };
        match tokio::time::timeout(Duration::from_secs(3), read).await {
            Ok(Ok(text)) => self.counters.add(&ServerCounters {
                duplicates_http: metric(&text, "herald_ingest_events_total", &["\"http\"", "\"duplicate\""]),
                duplicates_amqp: metric(&text, "herald_ingest_events_total", &["\"amqp\"", "\"duplicate\""]),
                redelivered: metric(&text, "herald_amqp_messages_redelivered_total", &[]),
                gap_fills: metric(&text, "herald_session_gap_fills_total", &[]),
                replayed: metric(&text, "herald_notifications_replayed_total", &[]),
                unread: 0,
            }),
            _ => self.counters.unread += 1,
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

/// A run that fails half-way must not leave Herald processes behind, reconnecting to services that are gone.
impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shipped rules with every exchange they name prefixed, as tests/it/amqp.rs does: this run's exchanges
/// and queue are its own on a broker other runs may share.
fn prefix_rule_exchanges(rules: &str, prefix: &str) -> String {
    rules
        .lines()
        .map(|line| match line.strip_prefix("exchanges = [\"") {
            Some(rest) => format!("exchanges = [\"{prefix}.{}", rest.replace("\", \"", &format!("\", \"{prefix}."))),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_config(dir: &Path, name: &str, port: u16, pg: &str, redis: &str, amqp: &str, prefix: &str) -> PathBuf {
    let rules = dir.join("rules.toml");
    let shipped = std::fs::read_to_string(repo_path("config/rules.toml")).unwrap();
    std::fs::write(&rules, prefix_rule_exchanges(&shipped, prefix)).unwrap();
    // Server pings every 2 s: a client notices a dead link within 4 s, as the SDK does (twice the interval).
    // AMQP batches linger 20 ms, so a kill -9 usually finds deliveries in flight (redelivered to the other node).
    let mut toml = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\ndemo_dir = \"\"\nshutdown_grace_secs = 2\n\
         [store]\nurl = \"{pg}\"\n[rules]\npath = \"{}\"\n[websocket]\nping_interval_secs = 2\n\
         [cluster]\nredis_url = \"{redis}\"\nnode_id = \"{name}\"\nchannel_prefix = \"{prefix}\"\n\
         presence_interval_secs = 1\n\
         [amqp]\nenabled = true\nurl = \"{amqp}\"\nconnection_name = \"herald-{name}\"\nreconnect_max_ms = 1000\n\
         batch_linger_ms = 20\nlag_interval_secs = 1\n\
         [amqp.queue]\nname = \"{prefix}.events\"\ndead_letter_exchange = \"{prefix}.dlx\"\n\
         dead_letter_queue = \"{prefix}.dead\"\n",
        rules.display()
    );
    for x in &Settings::defaults().amqp.exchanges {
        let kind = match x.kind {
            AmqpExchangeKind::Topic => "topic",
            AmqpExchangeKind::Fanout => "fanout",
            AmqpExchangeKind::Direct => "direct",
        };
        let _ = write!(
            toml,
            "[[amqp.exchanges]]\nname = \"{prefix}.{}\"\ntype = \"{kind}\"\ndurable = {}\nbindings = {:?}\n",
            x.name, x.durable, x.bindings
        );
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Until both nodes answer `/readyz` with 200 and nothing degraded (store, broker and Redis all reachable), at
/// most `limit`.
async fn until_ready(http: &reqwest::Client, bases: &[String], limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        for base in bases {
            match http.get(format!("{base}/readyz")).timeout(Duration::from_secs(2)).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status != 200 || !body.contains(r#""degraded":[]"#) {
                        pending.push(format!("{base}: {body}"));
                    }
                }
                Err(e) => pending.push(format!("{base}: {e}")),
            }
        }
        if pending.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(pending.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Events and publishers

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Via {
    Http,
    Amqp,
}

#[derive(Debug, Clone)]
struct Event {
    /// The stable id (Idempotency-Key / message_id) and the notification's title: how the end matches them up.
    key: String,
    /// `None`: a broadcast.
    user: Option<usize>,
    via: Via,
    /// Sent twice on purpose.
    twice: bool,
}

impl Event {
    fn body(&self, users: &[String]) -> Value {
        let to = self.user.map(|u| users[u].as_str()).unwrap_or("system");
        json!({"user_id": to, "title": self.key, "message": "chaos", "type": "info"})
    }
}

#[derive(Default)]
struct PublishStats {
    http_acked: AtomicU64,
    http_retries: AtomicU64,
    /// 202s saying "duplicate": a retry of an event a failed attempt had in fact stored.
    http_duplicates: AtomicU64,
    amqp_confirmed: AtomicU64,
    /// Messages published again because their chunk was not confirmed (the broker or connection went away).
    amqp_republished: AtomicU64,
    /// Which node answered the 202 of each HTTP event (for the report of a loss).
    http_node: Mutex<HashMap<String, &'static str>>,
}

impl PublishStats {
    /// Events acknowledged so far (a 202 or a broker confirm).
    fn acked(&self) -> u64 {
        self.http_acked.load(Ordering::Relaxed) + self.amqp_confirmed.load(Ordering::Relaxed)
    }
}

/// Full-jitter backoff as the SDK's `backoff()`: min + random × min(max, min · 2^attempt).
fn backoff(attempt: u32, min_ms: u64, max_ms: u64) -> Duration {
    let ceiling = max_ms.min(min_ms.saturating_mul(1 << attempt.min(20)));
    Duration::from_millis((min_ms + rand::random_range(0..=ceiling)).min(max_ms))
}

/// POST one event until a node answers 202, alternating nodes (the one that failed may be dead).
async fn post_until_stored(
    http: &reqwest::Client,
    nodes: &[(String, &'static str)],
    exchange: &str,
    users: &[String],
    e: &Event,
    stats: &PublishStats,
) {
    let start = rand::random_range(0..nodes.len());
    for attempt in 0u32.. {
        let (base, name) = &nodes[(start + attempt as usize) % nodes.len()];
        let sent = http
            .post(format!("{base}/api/v1/events"))
            .query(&[("exchange", exchange)])
            .bearer_auth(SERVICE_KEY)
            .header("Idempotency-Key", &e.key)
            .json(&e.body(users))
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status() == 202 {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if body["results"][0]["status"] == "duplicate" {
                    stats.http_duplicates.fetch_add(1, Ordering::Relaxed);
                }
                stats.http_acked.fetch_add(1, Ordering::Relaxed);
                stats.http_node.lock().unwrap().insert(e.key.clone(), name);
                return;
            }
        }
        stats.http_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff(attempt, 50, 1_000)).await;
    }
}

struct Broker {
    _conn: Connection,
    ch: Channel,
}

async fn broker(url: &str) -> lapin::Result<Broker> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Broker { _conn: conn, ch })
}

/// Publish a chunk and wait for every confirm; unroutable or refused messages are errors.
async fn publish_chunk(b: &Broker, exchange: &str, users: &[String], chunk: &[Event]) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(chunk.len());
    for e in chunk {
        let props = BasicProperties::default().with_delivery_mode(2).with_message_id(e.key.as_str().into());
        let body = serde_json::to_vec(&e.body(users)).unwrap();
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        confirms.push(b.ch.basic_publish(exchange.into(), "".into(), options, &body, props).await?);
    }
    for c in confirms {
        let c = c.await?;
        anyhow::ensure!(c.is_ack(), "the broker refused a message");
        anyhow::ensure!(c.take_message().is_none(), "a message was unroutable");
    }
    Ok(())
}

/// Publish whatever arrives, in chunks, until each chunk is confirmed: on any error (the broker restarting), a
/// new connection and the whole chunk again (the consumer deduplicates by message id).
async fn amqp_publisher(
    url: String,
    exchange: String,
    users: Arc<Vec<String>>,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<PublishStats>,
) {
    let mut b: Option<Broker> = None;
    let mut attempt = 0u32;
    while let Some(first) = rx.recv().await {
        let mut chunk = vec![first];
        while chunk.len() < 50 {
            match rx.try_recv() {
                Ok(e) => chunk.push(e),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        loop {
            if b.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), broker(&url)).await {
                    Ok(Ok(x)) => b = Some(x),
                    _ => {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt, 100, 1_000)).await;
                        continue;
                    }
                }
            }
            let sent = tokio::time::timeout(
                Duration::from_secs(15),
                publish_chunk(b.as_ref().unwrap(), &exchange, &users, &chunk),
            )
            .await;
            if let Ok(Ok(())) = sent {
                attempt = 0;
                stats.amqp_confirmed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                break;
            }
            b = None;
            tries += 1;
            stats.amqp_republished.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            tokio::time::sleep(backoff(tries, 100, 1_000)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients that follow the contract

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Chain {
    Targeted,
    Broadcast,
}

/// What one client took and saw. The harness reads it while the run goes on.
#[derive(Default)]
struct Tally {
    /// Ids taken, per chain, in the order taken.
    targeted: Vec<i64>,
    broadcast: Vec<i64>,
    taken: HashSet<i64>,
    cursor_targeted: i64,
    cursor_broadcast: i64,
    frames: u64,
    /// Frames dropped because their id was not above the chain's cursor and had been taken already (a replay
    /// overlapping live delivery: harmless, the contract says to drop them).
    redundant: u64,
    /// Frames dropped because their id was not above the chain's cursor although they had never been taken:
    /// the frame came too late, after a later one of its chain. Each is a notification this client lost.
    late: Vec<String>,
    /// Frames whose `prev_id` was above the chain's cursor: the server sent one without its predecessor.
    gaps: Vec<String>,
    sessions: u64,
    resyncs: u64,
    truncated: u64,
}

impl Tally {
    fn count(&self) -> usize {
        self.targeted.len() + self.broadcast.len()
    }

    /// The contract: take a notification when its id is above its chain's cursor, else drop it.
    fn on_notification(&mut self, n: &Value, node: &str) {
        self.frames += 1;
        let id = n["id"].as_i64().unwrap();
        let prev = n["prev_id"].as_i64().unwrap_or(0);
        let chain = if n["user_id"].is_null() { Chain::Broadcast } else { Chain::Targeted };
        let (cursor, list) = match chain {
            Chain::Targeted => (&mut self.cursor_targeted, &mut self.targeted),
            Chain::Broadcast => (&mut self.cursor_broadcast, &mut self.broadcast),
        };
        if id <= *cursor {
            if self.taken.contains(&id) {
                self.redundant += 1;
            } else {
                self.late.push(format!("{chain:?} {id} ({}) after {} on {node}", n["title"], *cursor));
            }
            return;
        }
        if prev > *cursor {
            self.gaps
                .push(format!("{chain:?} {id} ({}) prev_id {prev} above cursor {} on {node}", n["title"], *cursor));
        }
        *cursor = id;
        list.push(id);
        self.taken.insert(id);
    }
}

/// One user's client for the whole run: connect with both cursors, take frames by the contract, and on any
/// loss of the session reconnect with backoff, to the other node first.
async fn client(
    user: String,
    nodes: Vec<(u16, &'static str)>,
    first: usize,
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
) {
    let auth = Authenticator::new(&Settings::defaults().auth).unwrap();
    let mut at = first;
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let (port, name) = nodes[at % nodes.len()];
        let (t, b) = {
            let s = tally.lock().unwrap();
            (s.cursor_targeted, s.cursor_broadcast)
        };
        let token = auth.mint(&user, 3_600).unwrap();
        let url = format!("ws://127.0.0.1:{port}/ws/{user}?token={token}&since={t}&since_broadcast={b}");
        if let Ok(Ok((ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
        {
            if session(ws, name, &tally, &stop, &mut attempt).await {
                return;
            }
        }
        // As the SDK: a full-jitter backoff that a `ready` resets (100 ms to 3 s here), then the next node.
        at += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(attempt, 100, 3_000)) => {}
        }
        attempt += 1;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One session until it ends (false) or the run stops (true).
async fn session(mut ws: Ws, node: &str, tally: &Mutex<Tally>, stop: &CancellationToken, attempt: &mut u32) -> bool {
    let mut ping_every = Duration::from_secs(25);
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(ping_every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return true;
            }
            // No traffic for twice the ping interval: the link is dead (the SDK's dead timer).
            _ = tokio::time::sleep_until(heard + 2 * ping_every) => return false,
            _ = ping.tick() => {
                if ws.send(Message::text("ping")).await.is_err() {
                    return false;
                }
            }
            msg = ws.next() => {
                heard = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                    Some(Ok(_)) => continue,
                };
                let f: Value = match serde_json::from_str(text.as_str()) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                let mut s = tally.lock().unwrap();
                match f["type"].as_str().unwrap_or("") {
                    "ready" => {
                        *attempt = 0;
                        s.sessions += 1;
                        if let Some(ms) = f["ping_interval_ms"].as_u64().filter(|ms| *ms > 0) {
                            ping_every = Duration::from_millis(ms);
                            ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
                        }
                    }
                    "notification" => s.on_notification(&f["notification"], node),
                    "replayed" => {
                        // The session's position now; a v1 server sends `up_to` only, for both chains.
                        let t = f["up_to_targeted"].as_i64().or(f["up_to"].as_i64()).unwrap_or(0);
                        let b = f["up_to_broadcast"].as_i64().or(f["up_to"].as_i64()).unwrap_or(0);
                        s.cursor_targeted = s.cursor_targeted.max(t);
                        s.cursor_broadcast = s.cursor_broadcast.max(b);
                    }
                    "resync" => s.resyncs += 1,
                    "truncated" => s.truncated += 1,
                    _ => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill9(usize),
    RestartRedis,
    RestartRabbitmq,
    RestartPostgres,
}

/// The five faults of a round.
const ROUND: [Fault; 5] =
    [Fault::Kill9(0), Fault::RestartRedis, Fault::RestartRabbitmq, Fault::RestartPostgres, Fault::Kill9(1)];

struct Injected {
    what: String,
    at: Duration,
    took: Duration,
    ready_after: Result<Duration, String>,
    mid_stream: bool,
}

/// Inject `faults` one after another, the k-th at `started + every·k` (or when the previous one is over), and
/// after each wait for both nodes to be ready again. Hands the nodes back with what happened.
async fn inject(
    faults: Vec<Fault>,
    mut nodes: Vec<Node>,
    started: Instant,
    every: Duration,
    stats: Arc<PublishStats>,
    total: u64,
) -> (Vec<Node>, Vec<Injected>) {
    let http = reqwest::Client::new();
    let bases: Vec<String> = nodes.iter().map(Node::base).collect();
    let mut injected = Vec::new();
    for (k, fault) in faults.into_iter().enumerate() {
        tokio::time::sleep_until(started + every * (k as u32 + 1)).await;
        let mid_stream = stats.acked() < total;
        let at = started.elapsed();
        let t0 = Instant::now();
        let what = match fault {
            Fault::Kill9(i) => {
                nodes[i].kill_9().await;
                // Down long enough for its clients to move and its unacked deliveries to be requeued.
                tokio::time::sleep(Duration::from_secs(1)).await;
                nodes[i].start().await;
                format!("kill -9 {} + start", nodes[i].name)
            }
            Fault::RestartRedis => {
                restart_service("restart_redis").await;
                "restart redis".to_owned()
            }
            Fault::RestartRabbitmq => {
                restart_service("restart_rabbitmq").await;
                "restart rabbitmq".to_owned()
            }
            Fault::RestartPostgres => {
                restart_service("restart_postgres").await;
                "restart postgresql".to_owned()
            }
        };
        let took = t0.elapsed();
        let ready_after = until_ready(&http, &bases, Duration::from_secs(90)).await;
        eprintln!("chaos: fault {}: {what} at {:.1} s, took {:.1} s", k + 1, at.as_secs_f64(), took.as_secs_f64());
        injected.push(Injected { what, at, took, ready_after, mid_stream });
    }
    (nodes, injected)
}

// ---------------------------------------------------------------------------------------------------------------
// The run

/// A user's inbox, oldest first: (id, broadcast?, title).
async fn inbox(http: &reqwest::Client, base: &str, user: &str) -> Vec<(i64, bool, String)> {
    let mut out = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{base}/api/v1/users/{user}/notifications?limit=100");
        if let Some(b) = before {
            url += &format!("&before={b}");
        }
        let page: Value = http.get(url).bearer_auth(SERVICE_KEY).send().await.unwrap().json().await.unwrap();
        for n in page["items"].as_array().unwrap() {
            out.push((n["id"].as_i64().unwrap(), n["user_id"].is_null(), n["title"].as_str().unwrap_or("").to_owned()));
        }
        match page["next_before"].as_i64() {
            Some(b) if page["has_more"] != false => before = Some(b),
            _ => break,
        }
    }
    out.reverse();
    out
}

async fn unread(http: &reqwest::Client, base: &str, user: &str) -> Option<u64> {
    let url = format!("{base}/api/v1/users/{user}/notifications/unread_count");
    let r = http.get(url).bearer_auth(SERVICE_KEY).timeout(Duration::from_secs(5)).send().await.ok()?;
    r.json::<Value>().await.ok()?["unread_count"].as_u64()
}

/// A fresh database on the test PostgreSQL server, named `name`.
async fn fresh_database(admin_url: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0)
}

/// The stream: a stable key per event; HTTP or AMQP at random; `broadcast_percent` to everyone, the rest to
/// one user at random; `resend_percent` sent twice.
fn plan(size: &Size, prefix: &str) -> Vec<Event> {
    (0..size.events)
        .map(|i| Event {
            key: format!("{prefix}-e{i}"),
            user: (rand::random_range(0..100) >= size.broadcast_percent).then(|| rand::random_range(0..size.users)),
            via: if rand::random::<bool>() { Via::Http } else { Via::Amqp },
            twice: rand::random_range(0..100) < size.resend_percent,
        })
        .collect()
}

/// Send `events` at `rate` a second from `started`: HTTP ones to a pool of posters (each retrying its event
/// until a 202), AMQP ones to the publisher (retrying each chunk until confirmed). Ends when all are handed on.
fn publish(
    events: Vec<Event>,
    rate: u64,
    started: Instant,
    targets: (Vec<(String, &'static str)>, String, String),
    users: Arc<Vec<String>>,
    stats: Arc<PublishStats>,
) -> tokio::task::JoinHandle<()> {
    let (http_nodes, amqp_url, exchange) = targets;
    let (amqp_tx, amqp_rx) = mpsc::channel::<Event>(256);
    let amqp_task = tokio::spawn(amqp_publisher(amqp_url, exchange.clone(), users.clone(), amqp_rx, stats.clone()));
    let (http_tx, http_rx) = mpsc::channel::<Event>(64);
    let http_rx = Arc::new(tokio::sync::Mutex::new(http_rx));
    let mut posters = Vec::new();
    for _ in 0..8 {
        let (rx, nodes, exchange, users, stats) =
            (http_rx.clone(), http_nodes.clone(), exchange.clone(), users.clone(), stats.clone());
        posters.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let Some(e) = rx.lock().await.recv().await else { return };
                post_until_stored(&http, &nodes, &exchange, &users, &e, &stats).await;
            }
        }));
    }
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate as f64)).await;
            let to = if e.via == Via::Http { &http_tx } else { &amqp_tx };
            if e.twice {
                to.send(e.clone()).await.unwrap();
            }
            to.send(e).await.unwrap();
        }
        drop((http_tx, amqp_tx));
        for p in posters {
            p.await.unwrap();
        }
        amqp_task.await.unwrap();
    })
}

/// How many notifications each user's inbox must hold: their targeted events and every broadcast.
fn expected_inboxes(events: &[Event], users: usize) -> Vec<usize> {
    let broadcasts = events.iter().filter(|e| e.user.is_none()).count();
    let mut expected = vec![broadcasts; users];
    for u in events.iter().filter_map(|e| e.user) {
        expected[u] += 1;
    }
    expected
}

#[derive(Default)]
struct Figures {
    expected: usize,
    inbox_rows: usize,
    stored_twice: usize,
    not_stored: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    extra: usize,
    frames: u64,
    redundant: u64,
    gaps: usize,
    sessions: u64,
    resyncs: u64,
    truncated: u64,
    /// What went wrong, one line each, most telling first (losses before `prev_id` gaps).
    problems: Vec<String>,
    gap_notes: Vec<String>,
    server: ServerCounters,
}

/// Compare every client with its user's inbox, and every inbox with what was sent.
async fn compare(
    http: &reqwest::Client,
    bases: &[String],
    users: &[String],
    events: &[Event],
    expected: &[usize],
    tallies: &[Arc<Mutex<Tally>>],
    stats: &PublishStats,
) -> Figures {
    let by_key: HashMap<&str, &Event> = events.iter().map(|e| (e.key.as_str(), e)).collect();
    let http_node = stats.http_node.lock().unwrap().clone();
    let describe = |key: &str| match by_key.get(key) {
        Some(e) => match e.via {
            Via::Http => format!("{key} via http to {}", http_node.get(key).copied().unwrap_or("?")),
            Via::Amqp => format!("{key} via amqp"),
        },
        None => format!("{key} (not sent by this run)"),
    };
    let mut f = Figures::default();
    for (u, user) in users.iter().enumerate() {
        let rows = inbox(http, &bases[u % bases.len()], user).await;
        let tally = tallies[u].lock().unwrap();
        f.inbox_rows += rows.len();
        f.expected += expected[u];
        let mut titles: HashMap<&str, usize> = HashMap::new();
        for (_, _, title) in &rows {
            *titles.entry(title.as_str()).or_default() += 1;
        }
        for (title, n) in &titles {
            if *n > 1 {
                f.stored_twice += n - 1;
                f.problems.push(format!("{user}: {} stored {n} times", describe(title)));
            }
            if !by_key.contains_key(title) {
                f.problems.push(format!("{user}: {title:?} in the inbox but never sent"));
            }
        }
        for e in events.iter().filter(|e| e.user.is_none() || e.user == Some(u)) {
            if !titles.contains_key(e.key.as_str()) {
                f.not_stored += 1;
                f.problems.push(format!("{user}: {} acknowledged but not in the inbox", describe(&e.key)));
            }
        }
        for (chain, broadcast, got) in [("targeted", false, &tally.targeted), ("broadcast", true, &tally.broadcast)] {
            let want: Vec<&(i64, bool, String)> = rows.iter().filter(|r| r.1 == broadcast).collect();
            let want_ids: HashSet<i64> = want.iter().map(|r| r.0).collect();
            let got_ids: HashSet<i64> = got.iter().copied().collect();
            for r in want.iter().filter(|r| !got_ids.contains(&r.0)) {
                f.lost += 1;
                f.problems.push(format!("{user}: {chain} {} ({}) never taken by the client", r.0, describe(&r.2)));
            }
            f.duplicated += got.len() - got_ids.len();
            for id in got_ids.difference(&want_ids) {
                f.problems.push(format!("{user}: {chain} {id} taken but not in the inbox"));
                f.extra += 1;
            }
            f.out_of_order += got.windows(2).filter(|w| w[0] >= w[1]).count();
        }
        // A frame that came after a later one of its chain: the client had to drop it (and lost it).
        f.out_of_order += tally.late.len();
        f.problems.extend(tally.late.iter().map(|l| format!("{user}: late frame dropped: {l}")));
        f.delivered += tally.count();
        f.frames += tally.frames;
        f.redundant += tally.redundant;
        f.gaps += tally.gaps.len();
        f.gap_notes.extend(tally.gaps.iter().map(|g| format!("{user}: gap: {g}")));
        f.sessions += tally.sessions;
        f.resyncs += tally.resyncs;
        f.truncated += tally.truncated;
    }
    f
}

struct Timings {
    published: Duration,
    settled: Duration,
    total: Duration,
}

fn report(
    prefix: &str,
    size: &Size,
    events: &[Event],
    stats: &PublishStats,
    injected: &[Injected],
    f: &Figures,
    t: &Timings,
) -> String {
    let server = &f.server;
    let count = |p: &dyn Fn(&Event) -> bool| events.iter().filter(|e| p(e)).count();
    let broadcasts = count(&|e| e.user.is_none());
    let mut r = String::new();
    let _ = writeln!(
        r,
        "chaos run {prefix}: {} events ({} over HTTP, {} over AMQP; {} targeted to {} users, {broadcasts} \
         broadcasts) at {} events/s planned, 2 nodes (node A's Redis link +{} ms each way)",
        size.events,
        count(&|e| e.via == Via::Http),
        count(&|e| e.via == Via::Amqp),
        size.events - broadcasts,
        size.users,
        size.rate,
        size.redis_latency.as_millis()
    );
    let _ = writeln!(
        r,
        "publishing: {:.1} s; {} events sent twice on purpose; HTTP retries {} ({} answered duplicate); AMQP \
         messages republished {}",
        t.published.as_secs_f64(),
        count(&|e| e.twice),
        stats.http_retries.load(Ordering::Relaxed),
        stats.http_duplicates.load(Ordering::Relaxed),
        stats.amqp_republished.load(Ordering::Relaxed)
    );
    let mid = injected.iter().filter(|i| i.mid_stream).count();
    let _ = writeln!(r, "faults injected: {} ({mid} mid-stream)", injected.len());
    for i in injected {
        let ready = match &i.ready_after {
            Ok(d) => format!("both nodes ready {:.1} s later", d.as_secs_f64()),
            Err(e) => format!("NOT READY after 90 s: {e}"),
        };
        let _ = writeln!(r, "  at {:>6.1} s: {} ({:.1} s); {ready}", i.at.as_secs_f64(), i.what, i.took.as_secs_f64());
    }
    let _ = writeln!(
        r,
        "inboxes: {} notifications in {} inboxes (expected {}); stored twice {}; acknowledged but not stored {}",
        f.inbox_rows, size.users, f.expected, f.stored_twice, f.not_stored
    );
    let _ = writeln!(
        r,
        "clients: delivered {} of {}; lost {}; duplicated {}; out of order {}; taken but not in the inbox {}",
        f.delivered, f.inbox_rows, f.lost, f.duplicated, f.out_of_order, f.extra
    );
    let _ = writeln!(
        r,
        "  frames {}; redundant frames dropped {}; prev_id gaps {}; sessions {}; resyncs {}; truncated {}",
        f.frames, f.redundant, f.gaps, f.sessions, f.resyncs, f.truncated
    );
    let _ = writeln!(
        r,
        "servers: duplicates absorbed {} over HTTP and {} over AMQP ({} AMQP redeliveries); gaps filled {}; \
         notifications replayed {}{}",
        server.duplicates_http,
        server.duplicates_amqp,
        server.redelivered,
        server.gap_fills,
        server.replayed,
        if server.unread > 0 { format!(" (lower bounds: {} reads failed)", server.unread) } else { String::new() }
    );
    let _ = writeln!(
        r,
        "durations: total {:.1} s; after the last acknowledgement, inboxes and clients settled in {:.1} s",
        t.total.as_secs_f64(),
        t.settled.as_secs_f64()
    );
    let notes: Vec<&String> = f.problems.iter().chain(&f.gap_notes).collect();
    for d in notes.iter().take(40) {
        let _ = writeln!(r, "  ! {d}");
    }
    if notes.len() > 40 {
        let _ = writeln!(r, "  ! ... {} more", notes.len() - 40);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the services it runs on: scripts/chaos.sh starts them and runs it"]
async fn under_node_kills_and_service_restarts_every_client_holds_exactly_its_inbox() {
    let (Some(pg), Some(redis), Some(amqp), Some(_)) = (
        env("HERALD_TEST_POSTGRES_URL"),
        env("HERALD_TEST_REDIS_URL"),
        env("HERALD_TEST_AMQP_URL"),
        env("HERALD_TEST_RABBITMQ_NODE"),
    ) else {
        panic!("the chaos run needs the services of scripts/lib/services.sh: run scripts/chaos.sh");
    };
    let size = Size::from_env();
    let prefix = format!("chaos{:06x}", rand::random::<u32>() & 0xff_ffff);

    // Two nodes on a fresh database, this run's own exchanges and queue, the shared Redis.
    let db = fresh_database(&pg, &prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let logs = env("CHAOS_LOG_DIR").map(PathBuf::from).unwrap_or_else(|| dir.path().to_owned());
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("CHAOS_LOG_DIR {}: {e}", logs.display()));
    let mut nodes: Vec<Node> = Vec::new();
    let upstream = redis.trim_start_matches("redis://").parse().expect("HERALD_TEST_REDIS_URL is redis://IP:PORT");
    let a_redis = format!("redis://{}", slow_link(upstream, size.redis_latency).await);
    for (name, redis) in [("node-a", &a_redis), ("node-b", &redis)] {
        let port = free_port();
        let config = write_config(dir.path(), name, port, &db, redis, &amqp, &prefix);
        let log = logs.join(format!("{name}.log"));
        nodes.push(Node { name, port, config, log, child: None, counters: ServerCounters::default() });
    }
    for n in &mut nodes {
        n.start().await;
    }
    let http = reqwest::Client::new();
    let bases: Vec<String> = nodes.iter().map(Node::base).collect();
    until_ready(&http, &bases, Duration::from_secs(60)).await.expect("both nodes ready");

    // One client per user, each from the very start of its inbox (a fresh database: both cursors 0).
    let users: Arc<Vec<String>> = Arc::new((0..size.users).map(|u| format!("{prefix}-u{u}")).collect());
    let stop = CancellationToken::new();
    let ws_nodes: Vec<(u16, &'static str)> = nodes.iter().map(|n| (n.port, n.name)).collect();
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..size.users).map(|_| Arc::default()).collect();
    let clients: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(u, user)| tokio::spawn(client(user.clone(), ws_nodes.clone(), u, tallies[u].clone(), stop.clone())))
        .collect();
    let connecting = Instant::now();
    while tallies.iter().any(|t| t.lock().unwrap().sessions == 0) {
        assert!(connecting.elapsed() < Duration::from_secs(30), "clients could not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // every node subscribed to its users' channels

    // The stream, and the faults spread evenly over its planned length.
    let events = plan(&size, &prefix);
    let total = events.iter().map(|e| if e.twice { 2 } else { 1 }).sum::<u64>();
    let stats = Arc::new(PublishStats::default());
    let started = Instant::now();
    let targets =
        (nodes.iter().map(|n| (n.base(), n.name)).collect(), amqp.clone(), format!("{prefix}.sgad.notifications"));
    let publishing = publish(events.clone(), size.rate, started, targets, users.clone(), stats.clone());
    let faults: Vec<Fault> = ROUND.iter().copied().cycle().take(ROUND.len() * size.fault_rounds).collect();
    let every = Duration::from_secs_f64(size.events as f64 / size.rate as f64) / (faults.len() as u32 + 1);
    let faulting = tokio::spawn(inject(faults, nodes, started, every, stats.clone(), total));

    let mut last_note = Instant::now();
    while stats.acked() < total {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_note.elapsed() >= Duration::from_secs(10) {
            last_note = Instant::now();
            let taken: usize = tallies.iter().map(|t| t.lock().unwrap().count()).sum();
            let at = started.elapsed().as_secs_f64();
            eprintln!("chaos: {at:.0} s: {}/{total} events acknowledged, {taken} notifications taken", stats.acked());
        }
    }
    let published = started.elapsed();
    publishing.await.unwrap();
    let (mut nodes, injected) = faulting.await.unwrap();
    until_ready(&http, &bases, Duration::from_secs(90)).await.expect("both nodes ready after the faults");

    // Wait for the queue to drain into the inboxes, then for the clients to converge on them (a resync or a
    // reconnect may still be under way), then a little longer: a late frame must still be seen.
    let expected = expected_inboxes(&events, size.users);
    let settling = Instant::now();
    'drain: while settling.elapsed() < Duration::from_secs(180) {
        for (u, user) in users.iter().enumerate() {
            if unread(&http, &bases[u % 2], user).await.unwrap_or(0) < expected[u] as u64 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue 'drain;
            }
        }
        break;
    }
    let converging = Instant::now();
    while converging.elapsed() < Duration::from_secs(60)
        && tallies.iter().zip(&expected).any(|(t, want)| t.lock().unwrap().count() < *want)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = settling.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for c in clients {
        c.await.unwrap();
    }

    let mut f = compare(&http, &bases, &users, &events, &expected, &tallies, &stats).await;
    for n in &mut nodes {
        n.kill_9().await;
        f.server.add(&n.counters);
    }
    let timings = Timings { published, settled, total: started.elapsed() };
    let report = report(&prefix, &size, &events, &stats, &injected, &f, &timings);
    println!("{report}");
    if let Some(path) = env("CHAOS_REPORT") {
        std::fs::write(path, &report).unwrap();
    }

    assert!(injected.iter().all(|i| i.ready_after.is_ok()), "a node did not recover (logs in {})", logs.display());
    assert_eq!(
        (f.lost, f.duplicated, f.out_of_order, f.stored_twice, f.not_stored, f.extra, f.truncated),
        (0, 0, 0, 0, 0, 0, 0),
        "every client must hold exactly its inbox (lost, duplicated, out of order, stored twice, not stored, \
         taken but not in the inbox, truncated); node logs in {}",
        logs.display()
    );
    assert_eq!(f.inbox_rows, f.expected, "every acknowledged event is one notification per recipient");
}
