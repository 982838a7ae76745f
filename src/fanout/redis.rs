//! The cross-node transport: Redis pub/sub.
//!
//! Channels (under `cluster.channel_prefix`, default `herald`): `herald:u:{user}` per user, `herald:all` for
//! broadcasts. A node subscribes to a user's channel while
//! that user has a session on it (the registry's [`PresenceHook`]), so its inbound Redis traffic grows with the
//! users connected to it, not with all users. The node that committed a notification publishes it once; every
//! other subscribed node delivers it to its own sessions. `cluster.pubsub = "sharded"` switches to
//! SPUBLISH/SSUBSCRIBE, which Redis Cluster shards by channel; `cluster.redis_mode = "cluster"` reaches a Redis
//! Cluster through a cluster-aware client ([`link`]), which sends each channel's commands to the shard owning
//! its slot. Both modes share this worker.
//!
//! One RESP3 link both publishes and receives (pushes are delivered from the link's push callback,
//! synchronously, into the registry's non-blocking outboxes); on a cluster it is one connection per shard.
//!
//! Invariants: Redis is lossy and treated so — after any reconnect every local session is asked to resync from
//! the inbox (announced with a `resync` frame), after each new subscription that user's sessions silently
//! catch up, so a message published while a subscription was not yet active is never lost, only delayed; and a
//! message dropped because the publish queue was full is followed by a `lost` message that makes every node
//! resync its sessions. Both queues are bounded: publishes by `cluster.publish_queue`, subscription changes by
//! the number of users (a set of users to reconcile, not a log of subscribe/unsubscribe requests).
//! On a cluster, a lost connection to any shard counts as losing the transport (reconnect everything, then
//! resync), and a subscription the server drops because its slot moved (a `sunsubscribe` push we did not ask
//! for) is re-established on the slot's new owner, after which that user's sessions catch up; a publish that
//! failed is treated like a dropped one (a `lost` message follows once publishing works again).
//! A node never falls back silently to single-node: `/readyz` reports `redis` down while it reconnects.
//! Only this module knows the Redis channel names and the wire format between nodes.

mod link;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use self::link::{Connector, Link};
use super::{Fanout, Message, Transport};
use crate::backoff::Backoff;
use crate::config::{ClusterSettings, PubSubMode};
use crate::registry::{PresenceHook, Registry, ResyncReason, Wakes};
use crate::telemetry::Health;
use crate::trace::Recorder;

/// Check `cluster.redis_url` and the TLS files the way the link will read them, without connecting (config
/// validation: `serve` would otherwise refuse what `check-config` passed). An error starts with the key it is
/// about (`cluster.redis_url: `, `cluster.redis_ca_file: `, ...).
pub fn check_urls(settings: &ClusterSettings) -> Result<(), String> {
    Connector::new(settings).map(drop)
}

/// Reconnects: 100 ms doubling to at most 10 s (the n-th consecutive failure, 1-based), jittered.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// Channel and key names, under `cluster.channel_prefix` (so deployments can share one Redis).
#[derive(Debug, Clone)]
struct Names {
    all: String,
    user_prefix: String,
    presence: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Names {
            all: format!("{prefix}:all"),
            user_prefix: format!("{prefix}:u:"),
            presence: format!("{prefix}:presence"),
        }
    }

    fn user(&self, user: &str) -> String {
        format!("{}{user}", self.user_prefix)
    }
}

/// Users whose subscription may need to change: the worker compares each with the registry. A set, so churn
/// (tabs opening and closing while Redis is away) costs at most one entry per user. `revoked` holds users whose
/// channel the server unsubscribed us from (its slot moved to another shard): also one entry per user.
#[derive(Default)]
struct Dirty {
    users: std::sync::Mutex<HashSet<Arc<str>>>,
    revoked: std::sync::Mutex<HashSet<Arc<str>>>,
    changed: Notify,
}

impl Dirty {
    fn mark(&self, user: &Arc<str>) {
        self.users.lock().expect("dirty set poisoned").insert(user.clone());
        self.changed.notify_one();
    }

    fn revoke(&self, user: Arc<str>) {
        self.revoked.lock().expect("dirty set poisoned").insert(user);
        self.changed.notify_one();
    }

    fn take(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *self.users.lock().expect("dirty set poisoned"))
    }

    fn take_revoked(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *self.revoked.lock().expect("dirty set poisoned"))
    }
}

/// Cheap to share: the publishing half lives in the fan-out, the presence half in the registry.
pub struct RedisTransport {
    node: Arc<str>,
    /// What this process signs its messages with (`node#<random>`), to recognise its own: never the node's name
    /// alone, which two nodes configured alike share (each would drop the other's messages as its own).
    origin: Arc<str>,
    names: Names,
    publish: mpsc::Sender<(String, Bytes)>,
    /// A publish was dropped (queue full): the next batch tells every node to resync.
    dropped: AtomicBool,
    dirty: Dirty,
    connected: AtomicBool,
}

impl Transport for RedisTransport {
    fn publish(&self, message: &Message) {
        let (channel, payload) = encode(&self.names, &self.origin, message);
        if self.publish.try_send((channel, payload)).is_err() {
            // Full (Redis slow or down): the other nodes' sessions may miss this, and nothing later need reveal
            // the gap, so the worker follows up with a `lost` message (every node resyncs from the inbox).
            self.dropped.store(true, Ordering::Relaxed);
            metrics::counter!("herald_redis_dropped_total").increment(1);
        }
    }
}

impl PresenceHook for RedisTransport {
    fn first_session(&self, user: &Arc<str>) -> bool {
        self.dirty.mark(user);
        // Connected: the worker's next reconcile subscribes (or finds the channel still subscribed) and says so.
        // Not: the reconnect subscribes every user and resyncs every session; nothing to wait for before then.
        self.is_connected()
    }
    fn last_session(&self, user: &Arc<str>) {
        self.dirty.mark(user);
    }
}

impl RedisTransport {
    pub fn node_id(&self) -> &str {
        &self.node
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Wire format between nodes: `v1|origin|kind|id|prev|skip|frame`, kind `n` (notification; its version where
/// `skip` goes), `u` (user frame; its version where `id` goes),
/// `c` (counts: `id` unread, `prev` unseen, `skip` the newest broadcast id they include, their version where the
/// frame goes), `e` (a live-only event), `l` (lost: resync everything) or `r` (reload the rules; both on the broadcast
/// channel). `origin` is the
/// sending process (`node#<random>`).
fn encode(names: &Names, origin: &str, m: &Message) -> (String, Bytes) {
    let (channel, head, frame) = match m {
        // The version goes in the skip slot, which nodes from before versions do not read for `n`.
        Message::Notification { user, id, prev_id, frame, version, .. } => {
            let channel = user.as_deref().map(|u| names.user(u)).unwrap_or_else(|| names.all.clone());
            (channel, format!("v1|{origin}|n|{id}|{prev_id}|{version}|"), frame.as_str())
        }
        // The version goes in the id slot and `up_to` in the prev slot, which nodes from before them do not read
        // for `u`.
        Message::UserFrame { user, frame, skip_session, version, up_to } => {
            let head = format!("v1|{origin}|u|{version}|{up_to}|{}|", skip_session.unwrap_or(0));
            (names.user(user), head, frame.as_str())
        }
        Message::Live { user, frame } => {
            let channel = user.as_deref().map(|u| names.user(u)).unwrap_or_else(|| names.all.clone());
            (channel, format!("v1|{origin}|e|0|0|0|"), frame.as_str())
        }
        // The version goes where a frame would (nodes from before versions ignore it: there is no frame).
        Message::Counts { user, at } => {
            let head = format!(
                "v1|{origin}|c|{}|{}|{}|{}",
                at.counts.unread, at.counts.unseen, at.broadcast_up_to, at.version
            );
            (names.user(user), head, "")
        }
        Message::Lost => (names.all.clone(), format!("v1|{origin}|l|0|0|0|"), ""),
        Message::ReloadRules => (names.all.clone(), format!("v1|{origin}|r|0|0|0|"), ""),
    };
    let mut payload = Vec::with_capacity(head.len() + frame.len());
    payload.extend_from_slice(head.as_bytes());
    payload.extend_from_slice(frame.as_bytes());
    (channel, Bytes::from(payload))
}

/// `None` for our own messages (`origin`: this process's) and for anything malformed.
fn decode(names: &Names, origin_here: &str, channel: &str, payload: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(7, '|');
    let mut next = || parts.next();
    let (version, origin, kind, id, prev, skip, frame) =
        (next()?, next()?, next()?, next()?, next()?, next()?, next()?);
    if version != "v1" || origin == origin_here {
        return None;
    }
    let user: Option<Arc<str>> = channel.strip_prefix(names.user_prefix.as_str()).map(Arc::from);
    let frame = Utf8Bytes::from(frame.to_owned());
    match kind {
        "n" => Some(Message::Notification {
            user,
            id: id.parse().ok()?,
            prev_id: prev.parse().ok()?,
            frame,
            ingested_at: Instant::now(),
            // `0` from a node from before versions: unordered, as then.
            version: skip.parse().ok()?,
        }),
        "u" => {
            let skip: u64 = skip.parse().ok()?;
            // `0` from a node from before versions: unordered, as then.
            let version = id.parse().ok()?;
            let up_to = prev.parse().ok()?;
            Some(Message::UserFrame { user: user?, frame, skip_session: (skip != 0).then_some(skip), version, up_to })
        }
        "e" => Some(Message::Live { user, frame }),
        "c" => Some(Message::Counts {
            user: user?,
            at: crate::protocol::CountsAt {
                counts: crate::protocol::Counts { unread: id.parse().ok()?, unseen: prev.parse().ok()? },
                broadcast_up_to: skip.parse().ok()?,
                // Empty from a node from before versions: unordered, as then.
                version: if frame.is_empty() { 0 } else { frame.as_str().parse().ok()? },
            },
        }),
        "l" => Some(Message::Lost),
        "r" => Some(Message::ReloadRules),
        _ => None,
    }
}

/// What a node does when another asks every node to reload its rules ([`Message::ReloadRules`]).
pub type OnReload = Arc<dyn Fn() + Send + Sync>;

/// The link's task, stopped by [`LinkTask::stop`] once the node made its last commit — not at the shutdown signal:
/// what the drain commits (requests in flight, the consumer's last batch) reaches the other nodes' sessions.
/// Dropped without [`LinkTask::stop`] (a start that failed after the link began), it stops the link too.
pub struct LinkTask {
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<()>,
}

impl LinkTask {
    /// Publish what is queued, leave the presence view and return, by `deadline` at the latest.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let LinkTask { stop, task } = self;
        drop(stop); // cancels
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("the redis link did not publish its last messages in time; other nodes' sessions resync");
        }
    }
}

/// Connect (in the background, with retries) and return the transport to install in the fan-out and registry,
/// with the task to stop once the node's last commit is made.
pub fn start(
    settings: &ClusterSettings,
    registry: Registry,
    health: Health,
    trace: Recorder,
    on_reload: OnReload,
) -> Result<(Arc<RedisTransport>, LinkTask), String> {
    let connector = Connector::new(settings)?;
    let node: Arc<str> = Arc::from(settings.node_name());
    let origin: Arc<str> = Arc::from(format!("{node}#{:016x}", rand::random::<u64>()));
    let (publish, publish_rx) = mpsc::channel(settings.publish_queue);
    let names = Names::new(&settings.channel_prefix);
    let transport = Arc::new(RedisTransport {
        node: node.clone(),
        origin,
        names: names.clone(),
        publish,
        dropped: AtomicBool::new(false),
        dirty: Dirty::default(),
        connected: AtomicBool::new(false),
    });
    health.optional("redis", "connecting");
    metrics::counter!("herald_redis_dropped_total").increment(0); // at 0 from the start: alerts see the first drop
    let worker = Worker {
        names,
        connector,
        ca_reread: settings.tls_files().first_set().map(|_| settings.clone()),
        mode: settings.pubsub,
        node,
        registry,
        health,
        trace,
        transport: transport.clone(),
        presence_every: Duration::from_secs(settings.presence_interval_secs),
        on_reload,
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(publish_rx, stop.clone()));
    Ok((transport, LinkTask { stop: stop.drop_guard(), task }))
}

struct Worker {
    names: Names,
    connector: Connector,
    /// With a TLS file set (`cluster.redis_ca_file`, `redis_cert_file`, `redis_key_file`), the settings to rebuild
    /// the connector from before each reconnect, so a renewed CA or client certificate is taken without a restart
    /// (as `amqp.ca_file` is).
    ca_reread: Option<ClusterSettings>,
    mode: PubSubMode,
    node: Arc<str>,
    registry: Registry,
    health: Health,
    /// Records the deliveries of messages from other nodes (this node wrote their frames).
    trace: Recorder,
    transport: Arc<RedisTransport>,
    presence_every: Duration,
    on_reload: OnReload,
}

impl Worker {
    async fn run(mut self, mut publish: mpsc::Receiver<(String, Bytes)>, stop: CancellationToken) {
        let mut attempt = 0u32;
        let mut connected_before = false;
        // This process has written its presence line: a line under its name by another process since is not its
        // own (at start, the line may be the previous process's).
        let mut reported = false;
        loop {
            // Not before the first attempt: `start` has just built the connector from the file.
            if let Some(settings) = self.ca_reread.as_ref().filter(|_| connected_before || attempt > 0) {
                match Connector::new(settings) {
                    Ok(connector) => self.connector = connector,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the Redis TLS files again; keeping the ones read before")
                    }
                }
            }
            let lost = Arc::new(Notify::new());
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.connect(lost.clone()) => r,
            };
            let (mut con, mut subscribed) = match result {
                Ok(connected) => connected,
                Err(e) => {
                    self.transport.connected.store(false, Ordering::Relaxed);
                    self.health.set("redis", false, format!("reconnecting: {e}"));
                    attempt = attempt.saturating_add(1);
                    let delay = RECONNECT.delay(attempt);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unavailable");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let up_since = Instant::now();
            self.health.set("redis", true, format!("node {}", self.node));
            if connected_before {
                // Whatever was published while we were away may be lost: every session replays from the inbox.
                metrics::counter!("herald_redis_reconnects_total").increment(1);
                tracing::info!("redis reconnected; resyncing local sessions from the inbox");
            }
            // The first connection too: sessions opened before it (Redis unreachable when the node started, or
            // slower than the first handshake) heard nothing the other nodes published for their users, notifications
            // and read state alike. On an empty registry this does nothing.
            self.registry.resync_all(ResyncReason::TransportLost);
            connected_before = true;
            // A batch that failed before the reconnect may not have reached the other nodes: tell them now, not
            // with this node's next publish, which may be minutes away.
            let announced = match self.transport.dropped.swap(false, Ordering::Relaxed) {
                true => con.publish(self.mode, &[encode(&self.names, &self.transport.origin, &Message::Lost)]).await,
                false => Ok(()),
            };

            let mut presence = tokio::time::interval(self.presence_every);
            let mut peers = PeerCheck::default();
            let error = if let Err(e) = announced {
                self.transport.dropped.store(true, Ordering::Relaxed);
                e.to_string()
            } else {
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => {
                            self.publish_last(&mut con, &mut publish).await;
                            let _: Result<(), _> = redis::cmd("HDEL").arg(&self.names.presence).arg(&*self.node).exec_async(&mut con).await;
                            return;
                        }
                        _ = lost.notified() => break "connection lost".to_owned(),
                        _ = self.transport.dirty.changed.notified() => {
                            if let Err(e) = self.reconcile(&mut con, &mut subscribed).await {
                                break e.to_string();
                            }
                        }
                        Some(first) = publish.recv() => {
                            if let Err(e) = self.publish_batch(&mut con, first, &mut publish).await {
                                break e.to_string();
                            }
                        }
                        _ = presence.tick() => {
                            if let Err(e) = self.report_presence(&mut con, &mut peers, &mut reported).await {
                                break e.to_string();
                            }
                        }
                    }
                }
            };
            self.transport.connected.store(false, Ordering::Relaxed);
            self.health.set("redis", false, format!("reconnecting: {error}"));
            tracing::warn!(error = %error, "redis connection lost");
            // A link that connects and then fails at once (a cluster with a shard still away) backs off like a
            // failed connect, rather than reconnecting and resyncing every session in a tight loop.
            if up_since.elapsed() >= Duration::from_secs(10) {
                attempt = 0;
            } else {
                attempt = attempt.saturating_add(1);
                let delay = RECONNECT.delay(attempt);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Connect, then subscribe to the broadcast channel and every local user's channel. Returns the link and
    /// the users subscribed.
    async fn connect(&self, lost: Arc<Notify>) -> redis::RedisResult<(Link, HashSet<Arc<str>>)> {
        let fanout = Fanout::local(self.registry.clone()).traced(self.trace.clone());
        let origin = self.transport.origin.clone();
        let on_reload = self.on_reload.clone();
        let names = self.names.clone();
        let transport = self.transport.clone();
        let on_push = move |info: PushInfo| -> Result<(), ()> {
            match info.kind {
                PushKind::Message | PushKind::SMessage => {
                    if let [Value::BulkString(channel), Value::BulkString(payload), ..] = info.data.as_slice() {
                        let channel = String::from_utf8_lossy(channel);
                        match decode(&names, &origin, &channel, payload) {
                            Some(Message::ReloadRules) => on_reload(),
                            Some(m) => {
                                metrics::counter!("herald_redis_received_total").increment(1);
                                fanout.deliver_local(&m, &mut Wakes::now());
                            }
                            None => {}
                        }
                    }
                }
                // Also the confirmation of our own SUNSUBSCRIBE: the worker tells them apart (a user it still
                // counts as subscribed was revoked by the server).
                PushKind::SUnsubscribe => {
                    if let Some(Value::BulkString(channel)) = info.data.first() {
                        let channel = String::from_utf8_lossy(channel);
                        if channel == names.all {
                            lost.notify_one(); // never unsubscribed on purpose: resubscribe everything
                        } else if let Some(user) = channel.strip_prefix(names.user_prefix.as_str()) {
                            transport.dirty.revoke(Arc::from(user));
                        }
                    }
                }
                PushKind::Disconnection => lost.notify_one(),
                _ => {}
            }
            Ok(())
        };
        let mut con = self.connector.connect(Some(on_push)).await?;
        // From here a user's first session waits for their channel: the snapshot below subscribes it, or the
        // change marked after it is reconciled once connected (`run` clears the flag if this attempt fails).
        self.transport.connected.store(true, Ordering::Relaxed);
        // Changes marked from here on are reconciled after this snapshot.
        self.transport.dirty.take();
        self.transport.dirty.take_revoked();
        let users = self.registry.users();
        let mut channels = vec![self.names.all.clone()];
        channels.extend(users.iter().map(|u| self.names.user(u)));
        con.subscribe(self.mode, &channels).await?;
        // Live: sessions that waited for these users' channels may read the inbox (the reconnect's resync of
        // every session follows; those that waited read after it anyway).
        for user in &users {
            self.registry.subscription_live(user, None);
        }
        Ok((con, users.into_iter().collect()))
    }

    /// Bring each changed user's subscription in line with the registry: subscribed while they have a session
    /// here, not otherwise.
    async fn reconcile(&self, con: &mut Link, subscribed: &mut HashSet<Arc<str>>) -> redis::RedisResult<()> {
        let mut changed = self.transport.dirty.take();
        let mut revoked = HashSet::new();
        for user in self.transport.dirty.take_revoked() {
            // Not subscribed any more (the server moved the slot): subscribe again below if still online.
            if subscribed.remove(&user) {
                metrics::counter!("herald_redis_resubscribed_total").increment(1);
                changed.insert(user.clone());
                revoked.insert(user);
            }
        }
        // The users to subscribe go in one command: a burst of new users (a node taking over another's
        // clients) costs one round trip, not one each, while their sessions wait for it. Those who left go in one
        // command too, after: their sessions wait for nothing.
        let mut joining = Vec::new();
        let mut leaving = Vec::new();
        for user in changed {
            let online = self.registry.is_online(&user);
            if online && !subscribed.contains(&user) {
                joining.push(user);
            } else if online {
                // Still subscribed (the user's last session closed and a new one opened before this ran).
                self.registry.subscription_live(&user, None);
            } else if subscribed.remove(&user) {
                leaving.push(self.names.user(&user));
            }
        }
        if !joining.is_empty() {
            let channels: Vec<String> = joining.iter().map(|u| self.names.user(u)).collect();
            if let Err(e) = con.subscribe(self.mode, &channels).await {
                joining.iter().for_each(|u| self.transport.dirty.mark(u)); // and the reconnect subscribes them all
                return Err(e);
            }
        }
        for user in joining {
            // Anything published before the subscription took effect is in the inbox: catch up on it. After a
            // revoked subscription, announced: the state frames (`read`, `deleted`, ...) published while the
            // channel was away are not in a replay, and the client refetches them.
            let reason = match revoked.contains(&user) {
                true => ResyncReason::TransportLost,
                false => ResyncReason::Subscribed,
            };
            self.registry.subscription_live(&user, Some(reason));
            subscribed.insert(user);
        }
        if !leaving.is_empty() {
            // A failure reconnects, and the reconnect subscribes only who is online then.
            con.unsubscribe(self.mode, &leaving).await?;
        }
        Ok(())
    }

    /// The node's last messages (the store is closed: nothing more comes), and a `lost` message if one of the
    /// earlier publishes was dropped, which no later batch would carry now.
    async fn publish_last(&self, con: &mut Link, publish: &mut mpsc::Receiver<(String, Bytes)>) {
        while let Ok(first) = publish.try_recv() {
            if self.publish_batch(con, first, publish).await.is_err() {
                return;
            }
        }
        if self.transport.dropped.swap(false, Ordering::Relaxed) {
            let lost = encode(&self.names, &self.transport.origin, &Message::Lost);
            let _ = con.publish(self.mode, &[lost]).await;
        }
    }

    /// Publish what is queued, as one batch.
    async fn publish_batch(
        &self,
        con: &mut Link,
        first: (String, Bytes),
        rest: &mut mpsc::Receiver<(String, Bytes)>,
    ) -> redis::RedisResult<()> {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rest.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        // Checked after taking the batch: a drop after this point leaves the queue non-empty, so the next batch
        // carries the `lost` message.
        if self.transport.dropped.swap(false, Ordering::Relaxed) {
            batch.push(encode(&self.names, &self.transport.origin, &Message::Lost));
        }
        if let Err(e) = con.publish(self.mode, &batch).await {
            // Some of the batch may not have reached the other nodes, and nothing later need reveal it.
            self.transport.dropped.store(true, Ordering::Relaxed);
            metrics::counter!("herald_redis_dropped_total").increment(n);
            return Err(e);
        }
        metrics::counter!("herald_redis_published_total").increment(n);
        Ok(())
    }

    /// `HSET herald:presence <node> "<users> <sessions> <unix secs> <origin> <pubsub>"`: the cluster-wide
    /// presence view. First, what the view says of the others: another process reporting under this node's name
    /// since this one last did (`reported`), or a node on the other pub/sub mode (neither hears the other's
    /// messages) — either makes `redis` degraded, saying which, until it is gone.
    async fn report_presence(
        &self,
        con: &mut Link,
        peers: &mut PeerCheck,
        reported: &mut bool,
    ) -> redis::RedisResult<()> {
        let (users, sessions) = self.registry.counts();
        let now = chrono::Utc::now().timestamp();
        let entries: Vec<(String, String)> = redis::cmd("HGETALL").arg(&self.names.presence).query_async(con).await?;
        let mode = pubsub_name(self.mode);
        let mut problems = Vec::new();
        for (node, line) in &entries {
            let Some(line) = PresenceLine::parse(line).filter(|l| l.fresh(self.presence_every.as_secs(), now)) else {
                continue;
            };
            if node == &*self.node && *reported && line.origin.is_some_and(|o| o != &*self.transport.origin) {
                problems
                    .push(format!("another process reports as node `{node}`: give every node its own cluster.node_id"));
            }
            if let Some(theirs) = line.mode.filter(|m| *m != mode) {
                problems.push(format!(
                    "node `{node}` runs cluster.pubsub = \"{theirs}\" and this one \"{mode}\": neither hears the other"
                ));
            }
        }
        peers.report(&self.health, &self.node, problems);
        let line = PresenceLine {
            users: users as u64,
            sessions: sessions as u64,
            at: now,
            origin: Some(&self.transport.origin),
            mode: Some(mode),
        };
        redis::cmd("HSET").arg(&self.names.presence).arg(&*self.node).arg(line.to_string()).exec_async(con).await?;
        *reported = true; // written: a line under this name by another process from now on is not this one's
        Ok(())
    }
}

fn pubsub_name(mode: PubSubMode) -> &'static str {
    match mode {
        PubSubMode::Classic => "classic",
        PubSubMode::Sharded => "sharded",
    }
}

/// What the presence view last said was wrong with the other nodes: told once when it changes, not every report.
#[derive(Default)]
struct PeerCheck {
    problems: Vec<String>,
}

impl PeerCheck {
    fn report(&mut self, health: &Health, node: &str, problems: Vec<String>) {
        if problems == self.problems {
            return;
        }
        if problems.is_empty() {
            tracing::info!("the other nodes' presence agrees with this node's again");
            health.set("redis", true, format!("node {node}"));
        } else {
            let detail = problems.join("; ");
            tracing::error!(problems = %detail, "nodes cannot hear each other as configured");
            health.set("redis", false, detail);
        }
        self.problems = problems;
    }
}

/// One node's value in `herald:presence`: `<users> <sessions> <unix secs> <origin> <pubsub>` (nodes from before
/// processes signed their messages wrote the first three only).
struct PresenceLine<'a> {
    users: u64,
    sessions: u64,
    at: i64,
    origin: Option<&'a str>,
    mode: Option<&'a str>,
}

impl<'a> PresenceLine<'a> {
    fn parse(line: &'a str) -> Option<PresenceLine<'a>> {
        let mut fields = line.split(' ');
        let (users, sessions, at) =
            (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
        Some(PresenceLine { users, sessions, at, origin: fields.next(), mode: fields.next() })
    }

    /// Reported within three intervals of `now`: the node is still there.
    fn fresh(&self, interval_secs: u64, now: i64) -> bool {
        self.at >= now - 3 * interval_secs as i64
    }
}

impl std::fmt::Display for PresenceLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.users, self.sessions, self.at)?;
        match (self.origin, self.mode) {
            (Some(origin), Some(mode)) => write!(f, " {origin} {mode}"),
            _ => Ok(()),
        }
    }
}

/// One node's line in the presence view.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodePresence {
    pub node: String,
    pub users: u64,
    pub sessions: u64,
    pub reported_at: i64,
}

/// Read the presence view (nodes that reported within three intervals).
pub async fn presence(settings: &ClusterSettings) -> Result<Vec<NodePresence>, String> {
    let mut con =
        Connector::new(settings)?.connect(None::<fn(PushInfo) -> Result<(), ()>>).await.map_err(|e| e.to_string())?;
    let entries: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(Names::new(&settings.channel_prefix).presence)
        .query_async(&mut con)
        .await
        .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let mut nodes: Vec<NodePresence> = entries
        .iter()
        .filter_map(|(node, v)| {
            let line = PresenceLine::parse(v).filter(|l| l.fresh(settings.presence_interval_secs, now))?;
            Some(NodePresence { node: node.clone(), users: line.users, sessions: line.sessions, reported_at: line.at })
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_between_nodes_and_skip_their_origin() {
        let m = Message::Notification {
            user: Some(Arc::from("u|1")),
            id: 42,
            prev_id: 40,
            frame: Utf8Bytes::from_static(r#"{"type":"notification","x":"a|b"}"#),
            ingested_at: Instant::now(),
            version: 9,
        };
        let names = Names::new("herald");
        let (channel, payload) = encode(&names, "node-a", &m);
        assert_eq!(channel, "herald:u:u|1");
        assert!(decode(&names, "node-a", &channel, &payload).is_none(), "a node ignores its own messages");
        match decode(&names, "node-b", &channel, &payload).unwrap() {
            Message::Notification { user, id, prev_id, frame, version, .. } => {
                assert_eq!(user.as_deref(), Some("u|1"));
                assert_eq!((id, prev_id, version), (42, 40, 9));
                assert_eq!(frame.as_str(), r#"{"type":"notification","x":"a|b"}"#);
            }
            other => panic!("{other:?}"),
        }
        let b = Message::Notification {
            user: None,
            id: 7,
            prev_id: 3,
            frame: Utf8Bytes::from_static("{}"),
            ingested_at: Instant::now(),
            version: 0,
        };
        let (channel, payload) = encode(&names, "node-a", &b);
        assert_eq!(channel, "herald:all");
        assert!(matches!(
            decode(&names, "node-b", &channel, &payload),
            Some(Message::Notification { user: None, id: 7, .. })
        ));
        let (channel, payload) = encode(&names, "node-a", &Message::Lost);
        assert_eq!(channel, "herald:all");
        assert!(matches!(decode(&names, "node-b", &channel, &payload), Some(Message::Lost)));
        let frame = Utf8Bytes::from_static("{}");
        let r = Message::UserFrame { user: Arc::from("u"), frame, skip_session: None, version: 4711, up_to: 99 };
        let (channel, payload) = encode(&names, "node-a", &r);
        assert!(matches!(
            decode(&names, "node-b", &channel, &payload),
            Some(Message::UserFrame { skip_session: None, version: 4711, up_to: 99, .. })
        ));
        // A state frame from a node from before versions (0 in the id slot): unordered.
        assert!(matches!(
            decode(&names, "node-b", "herald:u:u", b"v1|old|u|0|0|0|{}"),
            Some(Message::UserFrame { version: 0, up_to: 0, .. })
        ));
        assert!(decode(&names, "node-b", "herald:u:x", b"garbage").is_none());
    }

    #[test]
    fn a_presence_line_reads_back_as_written_and_a_line_of_an_older_node_without_process_and_mode() {
        let line = PresenceLine { users: 3, sessions: 5, at: 100, origin: Some("a#01"), mode: Some("classic") };
        let text = line.to_string();
        assert_eq!(text, "3 5 100 a#01 classic");
        let back = PresenceLine::parse(&text).unwrap();
        assert_eq!(
            (back.users, back.sessions, back.at, back.origin, back.mode),
            (3, 5, 100, Some("a#01"), Some("classic"))
        );
        let old = PresenceLine::parse("3 5 100").unwrap();
        assert_eq!((old.origin, old.mode), (None, None));
        assert!(old.fresh(5, 115) && !old.fresh(5, 116), "within three intervals");
        assert!(PresenceLine::parse("x 5 100").is_none());
    }

    #[test]
    fn counts_cross_nodes_on_the_users_channel() {
        let names = Names::new("herald");
        let counts = crate::protocol::Counts { unread: 12, unseen: 3 };
        let at = crate::protocol::CountsAt { counts, broadcast_up_to: 99, version: 4711 };
        let m = Message::Counts { user: Arc::from("u|1"), at };
        let (channel, payload) = encode(&names, "node-a", &m);
        assert_eq!(channel, "herald:u:u|1");
        assert!(decode(&names, "node-a", &channel, &payload).is_none(), "a node ignores its own messages");
        match decode(&names, "node-b", &channel, &payload).unwrap() {
            Message::Counts { user, at: got } => assert_eq!((&*user, got), ("u|1", at)),
            other => panic!("{other:?}"),
        }
        // From a node from before versions (no version where the frame goes): unordered, version 0.
        match decode(&names, "node-b", &channel, b"v1|old|c|12|3|99|").unwrap() {
            Message::Counts { at: got, .. } => assert_eq!(got, crate::protocol::CountsAt { version: 0, ..at }),
            other => panic!("{other:?}"),
        }
        assert!(decode(&names, "node-b", "herald:all", &payload).is_none(), "counts are always for one user");
    }
}
