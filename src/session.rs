//! Sessions: one task per WebSocket connection.
//!
//! The task registers with the [`Registry`], reads the user's position, sends `ready`, replays from the inbox
//! when asked (`since`, `resume`, a resync, a gap), and otherwise moves queued frames to the socket. It is one
//! `select!` loop over: the pending store read, queued frames, client messages, server pings / idle check, token
//! expiry and shutdown. A store read is a state of the loop, never an inline `.await`.
//!
//! Invariants:
//! - Per user and per chain (targeted, broadcast), frames leave in id order, once: the session registers *before*
//!   it reads its position or a replay, keeps one cursor per chain, drops a live frame whose id its cursor already
//!   covers, and fills a gap (a frame whose `prev_id` is above the cursor) from the inbox before sending it.
//! - With a cluster transport, the opening read waits (2 s at most) for the user's channel from the other nodes
//!   to go live, so what they publish for the user after the read (read state too) reaches the session.
//! - While a replay or gap fill runs, live frames stay queued (bounded by the outbox) and are sent after it.
//! - A slow store stalls nobody: every store read is bounded by `store_timeout_secs` (then 1013), and while one
//!   is pending the session still answers pings, refreshes tokens, expires and shuts down.
//! - The socket is never split: one task, one small future, small buffers (an idle session is a few KiB).
//! - A stalled client never delays anyone else: its outbox overflows into a resync or a 4008 close, and a write
//!   that takes longer than `write_timeout` ends the session.
//! - `counts`: read with the opening position in one snapshot and sent right after `ready`, read again after
//!   each replay (sent after `replayed`, or after a silent replay only when they changed); between those, absolute counts come from commits (a targeted notification, a REST change)
//!   and each broadcast this session delivers adds one unread and one unseen in memory, unless the last absolute
//!   counts already included it (their `broadcast_up_to`) — a broadcast costs no store read per session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::future::OptionFuture;
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::config::WebSocketSettings;
use crate::inbox::{PageLimit, ReplayPage, Store, StoreError};
use crate::protocol::{
    encode_notification_frame, event_format, Chain, ClientMessage, Counts, Format, Position, ServerFrame,
    EVENT_FORMAT_PONG,
};
use crate::registry::{Bounds, CloseReason, Next, Outgoing, Registry, ResyncReason};

/// What every session needs, shared.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub auth: Arc<Authenticator>,
    pub settings: Arc<WebSocketSettings>,
    pub shutdown: CancellationToken,
    /// The user's reads (`server.user_reads_per_second`), which a `resume` spends as a REST read does.
    pub reads: Arc<dyn ReadBudget>,
}

/// A user's read budget, shared with the REST inbox (the API's limiter implements it): a `resume` is a replay,
/// which takes one of the store's read connections every session shares, so a user's sockets together resume no
/// faster than the user may read, whichever number of them is open.
pub trait ReadBudget: Send + Sync {
    /// Spends one of `user`'s reads; false, spending nothing, when none is left now.
    fn take(&self, user: &str) -> bool;
}

/// The handles every delivery records into, registered once (at the process's first delivery, after the
/// recorder was installed) rather than looked up per frame. Process-wide, not a field of [`SessionDeps`]: every
/// session holds a copy of those, and idle sessions are counted in bytes.
struct SessionMetrics {
    delivery_latency: metrics::Histogram,
    delivered: metrics::Counter,
}

fn session_metrics() -> &'static SessionMetrics {
    static METRICS: std::sync::OnceLock<SessionMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| SessionMetrics {
        delivery_latency: metrics::histogram!("herald_delivery_latency_seconds"),
        delivered: metrics::counter!("herald_notifications_delivered_total"),
    })
}

/// Per connection: who, from where in the inbox, and until when the token is good.
pub struct SessionParams {
    pub user: String,
    pub since: Option<Position>,
    pub expires_at: i64,
    pub format: Format,
}

/// How a session ended, for metrics.
#[derive(Debug, Clone, Copy)]
enum Ended {
    Server(CloseReason),
    ClientClosed,
    WriteTimeout,
    Transport,
    BadMessages,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Server(r) => r.label(),
            Ended::ClientClosed => "client_closed",
            Ended::WriteTimeout => "write_timeout",
            Ended::Transport => "transport_error",
            Ended::BadMessages => "bad_messages",
        }
    }
}

/// More bad messages than this within a [`WINDOW`] close the session with 1008: a flood, not the odd refused
/// refresh or message type this server does not know yet over a session's lifetime.
const MAX_BAD_MESSAGES: u32 = 10;
/// More `resume` messages than this within a [`WINDOW`] are refused (`rate_limited`, a bad message): each is a
/// read of the store, whose read connections every session's replays share, and a client replays after a gap
/// or a reconnect, not in a loop (one socket sent 224,000 in 3 s, 0.7 of a core).
const MAX_RESUMES: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);
/// How long a session waits for its user's channel from the other nodes to go live before reading the inbox
/// anyway (Redis slow or going away: its reconnect, or the subscription's catch-up, covers what it missed).
const SUBSCRIPTION_WAIT: Duration = Duration::from_secs(2);

/// What a session received of one kind in its current fixed window (16 bytes: idle sessions are counted in
/// bytes).
#[derive(Debug)]
struct PerWindow {
    count: u32,
    since: Instant,
}

impl PerWindow {
    fn new(now: Instant) -> PerWindow {
        PerWindow { count: 0, since: now }
    }

    /// Count one received at `now`; whether that makes more than `max` in the window.
    fn too_many_with_one_more(&mut self, now: Instant, max: u32) -> bool {
        if now.duration_since(self.since) > WINDOW {
            *self = PerWindow::new(now);
        }
        self.count += 1;
        self.count > max
    }
}
/// After the server's close frame, how long the session keeps reading (and dropping) what the client still sends,
/// waiting for its answering close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub async fn run(socket: WebSocket, deps: SessionDeps, params: SessionParams) {
    metrics::counter!("herald_sessions_opened_total").increment(1);
    metrics::gauge!("herald_connections").increment(1.0);
    let ended = Session::new(socket, &deps, params).run().await;
    metrics::gauge!("herald_connections").decrement(1.0);
    metrics::counter!("herald_sessions_closed_total", "reason" => ended.label()).increment(1);
}

/// The one store read a session may be waiting for.
enum Loaded {
    /// The newest id of each chain, the user's counts in the same snapshot and, when a client asked for a
    /// replay, how far history was pruned.
    Latest(Position, Counts, u64, Option<Position>),
    /// The user's counts after a replay, with the newest ids they include and their version.
    Counts(Position, Counts, u64),
    /// One page of a replay, oldest first, with how far history was pruned in the same snapshot.
    Page(ReplayPage),
}

/// What a replay reads first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstRead {
    /// Its first page (a catch-up, a gap fill, a resync: from this socket's own position; each page says how far
    /// history was pruned, and what was pruned above the position is announced `truncated`).
    Page,
    /// The newest ids and the floor, then its pages (a client's `resume`: its position may be above the newest
    /// ids, or below the floor).
    Latest,
}

type PendingRead = Pin<Box<dyn Future<Output = Result<Loaded, ReadFailed>> + Send>>;

enum ReadFailed {
    TimedOut,
    Store(StoreError),
}

/// A replay in progress: where it started from, and what it owes the client when it ends.
struct Replay {
    /// Announced replays (`since`, `resume`, resync) end with `replayed`; a gap fill or a catch-up is silent.
    announced: bool,
    /// The requested position: clamped to the newest ids before the first page when it came from the client.
    requested: Position,
    /// A resync arrived meanwhile, at this instant (or before it): run one more pass from the cursor once this one
    /// ends, needed from then.
    again: Option<Instant>,
    /// A client's `resume` arrived meanwhile: its own replay once this one ends (with its own `truncated` when it
    /// reaches below the retained history, and its own `replayed`). Two of them: the lower cursor of each chain.
    resume: Option<Position>,
    /// When this pass became needed (the session registered, a gap showed, a resync or resume came): its pages hold
    /// every commit made before it (`Store::after`).
    needed: Instant,
    /// The history floor this replay already announced (`truncated`), or found below where it started: a page
    /// whose floor is above both it and the socket's position missed what retention pruned meanwhile.
    floor: Position,
}

struct Session<'a> {
    socket: WebSocket,
    deps: &'a SessionDeps,
    user: Arc<str>,
    expires_at: i64,
    format: Format,
    /// The last id delivered on this socket in each chain (set when the session opens).
    position: Position,
    /// Not set until the opening read answered and `ready` went out.
    opened: bool,
    since: Option<Position>,
    /// A `resume` that arrived before the opening read returned, on a socket opened without `since`.
    early_resume: Option<Position>,
    replay: Option<Replay>,
    pending: Option<PendingRead>,
    /// Live frames taken from the outbox that wait for a gap fill to finish.
    held: Vec<Outgoing>,
    /// A catch-up (`None`) or an announced resync (`Some(reason)`) asked for before the opening read answered:
    /// run once the session is open, since the opening read may predate what it is about.
    deferred: Option<Option<ResyncReason>>,
    last_heard: Instant,
    /// When whatever commits started reaching this session live (`run`: it registered, and its user's channel
    /// from the other nodes is live): a replay from the client's `since` must hold every commit made before.
    live_since: Instant,
    bad_messages: PerWindow,
    resumes: PerWindow,
    /// The counts this session last sent, and how it keeps them.
    badge: Badge,
    /// An announced replay ended: the next counts read is sent even when unchanged (right after `replayed`), also
    /// when a catch-up's replay started before that read answered and took its place.
    counts_owed: bool,
}

/// Broadcast ids a session remembers to correct absolute counts computed before them.
const RECENT_BROADCASTS: usize = 64;

/// How a session keeps its counts between absolute ones: the newest broadcast id the counts include, and the
/// broadcasts it delivered lately (to correct absolute counts that left out a broadcast already counted here,
/// which happens when a commit's counts and a broadcast cross on different Redis channels).
#[derive(Default)]
struct Badge {
    counts: Option<Counts>,
    broadcast_up_to: i64,
    /// The version of the counts taken last (see `inbox::Store::opening`).
    version: u64,
    recent: std::collections::VecDeque<i64>,
}

impl Badge {
    /// Counts as of a commit (or a snapshot) that included broadcasts up to `broadcast_up_to`: broadcasts
    /// delivered here above it are added back; later ones at or below it will not be added again. Counts not newer
    /// than those taken already (a version at or below: another node's commit that reached this one late, a
    /// snapshot read while a newer commit's counts arrived, or a commit the snapshot already holds — with
    /// broadcasts after it, which send no counts and whose frames the snapshot's position skips) are dropped:
    /// `None`. Version 0 is unordered (a node from before versions sent them): always taken.
    fn absolute(&mut self, counts: Counts, broadcast_up_to: i64, version: u64) -> Option<Counts> {
        if version != 0 && version <= self.version {
            return None;
        }
        self.version = self.version.max(version);
        let missing = self.recent.iter().filter(|&&id| id > broadcast_up_to).count() as u64;
        let counts = Counts { unread: counts.unread + missing, unseen: counts.unseen + missing };
        self.counts = Some(counts);
        self.broadcast_up_to = self.broadcast_up_to.max(broadcast_up_to);
        Some(counts)
    }

    /// A broadcast went out: one more unread and unseen, unless the counts include it already (or there are no
    /// counts yet). Returns whether they changed.
    fn broadcast(&mut self, id: i64) -> bool {
        if self.recent.len() == RECENT_BROADCASTS {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
        match &mut self.counts {
            Some(c) if id > self.broadcast_up_to => {
                c.unread += 1;
                c.unseen += 1;
                self.broadcast_up_to = id;
                true
            }
            _ => false,
        }
    }
}

impl<'a> Session<'a> {
    fn new(socket: WebSocket, deps: &'a SessionDeps, p: SessionParams) -> Self {
        Session {
            socket,
            deps,
            user: Arc::from(p.user),
            expires_at: p.expires_at,
            format: p.format,
            position: Position::default(),
            opened: false,
            since: p.since,
            early_resume: None,
            replay: None,
            pending: None,
            held: Vec::new(),
            deferred: None,
            last_heard: Instant::now(),
            bad_messages: PerWindow::new(Instant::now()),
            resumes: PerWindow::new(Instant::now()),
            badge: Badge::default(),
            counts_owed: false,
            live_since: Instant::now(),
        }
    }

    async fn run(mut self) -> Ended {
        let s = self.deps.settings.clone();
        // Register first: whatever commits from now on is queued, and the reads below see the rest.
        let bounds = Bounds { frames: s.outbound_queue, bytes: s.outbound_queue_bytes, policy: s.queue_full_policy };
        let registration = match self.deps.registry.register(&self.user, bounds, s.max_sessions_per_user) {
            Ok(r) => r,
            Err(reason) => return self.close(reason).await,
        };
        let outbox = &registration.handle.outbox;
        let session_id = format!("s-{:x}", registration.handle.id);
        // The user's channel from the other nodes is being subscribed to: read the inbox once it is live, so that
        // nothing they publish meanwhile falls between the read and the live frames (read state, which no replay
        // carries). A wait that outlasts SUBSCRIPTION_WAIT opens anyway; an announced resync follows the
        // subscription (`transport_lost`: the client refetches the read state it may have missed).
        let mut awaiting = registration.awaiting_subscription;
        // The wait ran out: what other nodes published between the opening read and the subscription (read state,
        // which no replay carries) went nowhere, so the subscription's catch-up is an announced resync.
        let mut waited_out = false;
        if !awaiting {
            self.start_opening();
        }
        let subscription_wait = tokio::time::sleep(SUBSCRIPTION_WAIT);
        tokio::pin!(subscription_wait);

        let ping_every = Duration::from_secs(s.ping_interval_secs);
        let idle_after = Duration::from_secs(s.idle_timeout_secs);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut resyncs = Resyncs::default();
        let window = Duration::from_secs(s.token_refresh_window_secs);
        let expiry = tokio::time::sleep_until(unix_to_instant(self.expires_at));
        let warning = tokio::time::sleep_until(
            unix_to_instant(self.expires_at).checked_sub(window).unwrap_or_else(tokio::time::Instant::now),
        );
        tokio::pin!(expiry, warning);
        let mut warned = false;

        loop {
            let expires_at = self.expires_at;
            // Live frames wait while the session opens, replays or fills a gap; while it waits for its user's
            // channel they are taken and dropped (the opening read, after, holds what they carry).
            let live = (self.opened && self.pending.is_none()) || awaiting;
            tokio::select! {
                biased;
                _ = self.deps.shutdown.cancelled() => return self.close(CloseReason::Shutdown).await,
                // The deadlines before the work: a client that keeps the socket (or a stream that keeps the
                // outbox) ready at every pass must not starve them (a session outlived its token that way).
                _ = &mut expiry => return self.close(CloseReason::TokenExpired).await,
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= idle_after {
                        return self.close(CloseReason::Idle).await;
                    }
                    if let Err(ended) = self.send_now_msg(WsMessage::Ping(Default::default())).await {
                        return ended;
                    }
                }
                _ = &mut warning, if !warned && self.opened => {
                    warned = true;
                    let frame = ServerFrame::TokenExpiring { expires_at: self.expires_at };
                    if let Err(ended) = self.send_now(frame.encode()).await {
                        return ended;
                    }
                }
                Some(loaded) = OptionFuture::from(self.pending.as_mut()), if self.pending.is_some() => {
                    self.pending = None;
                    let step = match loaded {
                        Ok(Loaded::Latest(latest, counts, version, floor)) => {
                            outbox.state_read_at(version);
                            self.on_latest(latest, counts, version, floor, &session_id).await
                        }
                        Ok(Loaded::Counts(at, counts, version)) => {
                            let before = self.badge.counts;
                            self.absolute_counts(counts, at.broadcast, version);
                            if std::mem::take(&mut self.counts_owed) || before != self.badge.counts {
                                self.send_counts().await
                            } else {
                                Ok(())
                            }
                        }
                        Ok(Loaded::Page(page)) => self.on_page(page).await,
                        Err(failed) => Err(self.store_failed(failed).await),
                    };
                    if let Err(ended) = step {
                        return ended;
                    }
                }
                _ = &mut subscription_wait, if awaiting => {
                    awaiting = false;
                    waited_out = true;
                    metrics::counter!("herald_session_subscription_waits_expired_total").increment(1);
                    self.start_opening();
                }
                next = outbox.next(&mut batch, live) => {
                    if awaiting && !matches!(next, Next::Close(_)) {
                        // Frames are dropped: the opening read, after, holds what they carry. A resync is the
                        // transport's word that the channel is live, or has another reason (a node's `lost`
                        // message, an overflow), which the opening read covers too. Read once it is live.
                        batch.clear();
                        if next != Next::Frames && !self.deps.registry.awaits_subscription(&self.user) {
                            awaiting = false;
                            self.start_opening();
                        }
                        continue;
                    }
                    let step = match next {
                        Next::Close(reason) => return self.close(reason).await,
                        Next::Frames => self.deliver(&mut batch, true).await,
                        Next::Resync(ResyncReason::Subscribed) if std::mem::take(&mut waited_out) => {
                            self.resync(ResyncReason::TransportLost).await
                        }
                        Next::Resync(ResyncReason::Subscribed) if !self.opened => {
                            self.deferred.get_or_insert(None);
                            Ok(())
                        }
                        Next::Resync(ResyncReason::Subscribed) => {
                            self.start_replay(self.position, false, FirstRead::Page);
                            Ok(())
                        }
                        // Not the client's doing, so not under the cap that closes slow clients.
                        Next::Resync(reason @ (ResyncReason::TransportLost | ResyncReason::OutOfOrder)) => {
                            self.resync(reason).await
                        }
                        Next::Resync(reason) if resyncs.allow(s.max_resyncs_per_minute) => self.resync(reason).await,
                        Next::Resync(_) => return self.close(CloseReason::Lagged).await,
                    };
                    if let Err(ended) = step {
                        return ended;
                    }
                }
                inbound = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    match inbound {
                        None => return Ended::ClientClosed,
                        Some(Ok(WsMessage::Close(_))) => {
                            // The protocol queued the closing handshake's answer (the client's code echoed):
                            // send it, so the client sees a clean close rather than a dropped connection.
                            let write = Duration::from_secs(self.deps.settings.write_timeout_secs);
                            let _ = tokio::time::timeout(write, self.socket.flush()).await;
                            return Ended::ClientClosed;
                        }
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Err(ended) = self.on_text(&text).await {
                                return ended;
                            }
                        }
                        Some(Ok(WsMessage::Binary(_))) => return self.close(CloseReason::Unsupported).await,
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                        Some(Err(e)) => {
                            if is_too_big(&e) {
                                return self.close(CloseReason::TooBig).await;
                            }
                            return Ended::Transport;
                        }
                    }
                }
            }
            if self.expires_at != expires_at {
                // A fresh token arrived: move both deadlines.
                let at = unix_to_instant(self.expires_at);
                expiry.as_mut().reset(at);
                warning.as_mut().reset(at.checked_sub(window).unwrap_or_else(tokio::time::Instant::now));
                warned = false;
            }
        }
    }

    /// A store read bounded by `store_timeout_secs`, owned by the loop (not borrowing the session).
    fn bounded<F>(&self, read: F) -> PendingRead
    where
        F: Future<Output = Result<Loaded, StoreError>> + Send + 'static,
    {
        let limit = Duration::from_secs(self.deps.settings.store_timeout_secs);
        Box::pin(async move {
            match tokio::time::timeout(limit, read).await {
                Ok(Ok(loaded)) => Ok(loaded),
                Ok(Err(e)) => Err(ReadFailed::Store(e)),
                Err(_) => Err(ReadFailed::TimedOut),
            }
        })
    }

    /// The opening read: from now on whatever commits reaches this session live.
    fn start_opening(&mut self) {
        self.live_since = Instant::now();
        self.pending = Some(self.read_latest(self.since.is_some()));
    }

    fn read_latest(&self, with_floor: bool) -> PendingRead {
        let (store, user) = (self.deps.store.clone(), self.user.clone());
        self.bounded(async move {
            let (latest, counts, version) = store.opening(&user).await?;
            let floor = match with_floor {
                true => store
                    .history_floor(&user)
                    .await
                    .map(|(targeted, broadcast)| Some(Position { targeted, broadcast }))?,
                false => None,
            };
            Ok(Loaded::Latest(latest, counts, version, floor))
        })
    }

    fn read_counts(&self) -> PendingRead {
        let (store, user) = (self.deps.store.clone(), self.user.clone());
        self.bounded(async move {
            let (at, counts, version) = store.opening(&user).await?;
            Ok(Loaded::Counts(at, counts, version))
        })
    }

    /// Take counts as of a commit (or a snapshot) that included broadcasts up to `broadcast_up_to`: broadcasts
    /// this session delivered above it are added back, later ones at or below it are not added again.
    fn absolute_counts(&mut self, counts: Counts, broadcast_up_to: i64, version: u64) -> Option<Counts> {
        self.badge.absolute(counts, broadcast_up_to, version)
    }

    /// A broadcast went out on this socket: one more unread and unseen, unless the counts include it already.
    /// Returns whether the counts changed.
    fn broadcast_delivered(&mut self, id: i64) -> bool {
        self.badge.broadcast(id)
    }

    fn counts_frame(&self) -> Option<Utf8Bytes> {
        self.badge.counts.map(|c| ServerFrame::Counts { unread: c.unread, unseen: c.unseen }.encode())
    }

    async fn send_counts(&mut self) -> Result<(), Ended> {
        match self.counts_frame() {
            Some(frame) => self.send_now(frame).await,
            None => Ok(()),
        }
    }

    fn read_page(&self, from: Position) -> PendingRead {
        let (store, user) = (self.deps.store.clone(), self.user.clone());
        let page = self.page_limit();
        let needed = self.replay.as_ref().map_or_else(Instant::now, |r| r.needed);
        self.bounded(async move { store.after(&user, from, page, needed).await.map(Loaded::Page) })
    }

    fn page_limit(&self) -> PageLimit {
        let s = &self.deps.settings;
        PageLimit { rows: s.replay_page_size, bytes: s.replay_page_bytes }
    }

    async fn store_failed(&mut self, failed: ReadFailed) -> Ended {
        let reason = match failed {
            ReadFailed::TimedOut => {
                metrics::counter!("herald_session_store_timeouts_total").increment(1);
                tracing::warn!(user = %self.user, "a store read outlived websocket.store_timeout_secs");
                CloseReason::StoreUnavailable
            }
            ReadFailed::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "store unavailable during a session read");
                CloseReason::StoreUnavailable
            }
            ReadFailed::Store(StoreError::Internal(e)) => {
                tracing::error!(error = %e, "store error during a session read");
                CloseReason::Internal
            }
        };
        self.close(reason).await
    }

    /// Start a replay from `from`; if one runs, extend it (one more pass) or, for a client's `resume`, queue its own
    /// replay after it.
    fn start_replay(&mut self, from: Position, announced: bool, first: FirstRead) {
        if let Some(r) = &mut self.replay {
            if first == FirstRead::Latest {
                r.resume = Some(r.resume.map_or(from, |p| p.earlier_each(from)));
            } else {
                // The running replay reads up to what is committed now; one more pass covers what comes after.
                r.again = Some(Instant::now());
                r.announced |= announced;
            }
            return;
        }
        let needed = Instant::now();
        self.replay =
            Some(Replay { announced, requested: from, again: None, resume: None, needed, floor: Position::default() });
        self.pending = Some(match first {
            FirstRead::Page => self.read_page(from),
            FirstRead::Latest => self.read_latest(true),
        });
    }

    async fn on_latest(
        &mut self,
        latest: Position,
        counts: Counts,
        version: u64,
        floor: Option<Position>,
        session_id: &str,
    ) -> Result<(), Ended> {
        if !self.opened {
            self.opened = true;
            let ready = ServerFrame::Ready {
                session_id,
                user_id: &self.user,
                latest_id: latest.max(),
                latest_targeted_id: latest.targeted,
                latest_broadcast_id: latest.broadcast,
                ping_interval_ms: self.deps.settings.ping_interval_secs * 1000,
            };
            self.send_now(ready.encode()).await?;
            self.absolute_counts(counts, latest.broadcast, version);
            self.send_counts().await?;
            let deferred = self.deferred.take();
            match self.since.take() {
                Some(since) => {
                    // A catch-up or resync that came before the opening: one more pass, needed from now (a
                    // commit made after the registration may have missed the live path then).
                    let again = deferred.map(|_| Instant::now());
                    // Everything committed before the session was live is in the replay; the rest came live.
                    let needed = self.live_since;
                    let floor = Position::default();
                    self.replay =
                        Some(Replay { announced: true, requested: since, again, resume: None, needed, floor });
                }
                // Without `since`, the session starts at the newest ids: older notifications are history (REST),
                // and a frame for one of them that raced the opening is not pushed twice.
                None => {
                    self.position = latest;
                    match deferred {
                        None => {}
                        Some(None) => self.start_replay(latest, false, FirstRead::Page),
                        Some(Some(reason)) => self.resync(reason).await?,
                    }
                    // A resume sent before the socket opened is one sent on the open socket: it cannot reach
                    // below where the socket started, and what was pruned below it is announced.
                    if let Some(since) = self.early_resume.take() {
                        self.start_replay(since, true, FirstRead::Latest);
                    }
                    return Ok(());
                }
            }
        }
        let Some(r) = &self.replay else { return Ok(()) };
        let requested = r.requested;
        if let Some(floor) = floor {
            self.announce_pruned(requested, floor).await?;
        }
        let Some(r) = &self.replay else { return Ok(()) };
        // Clamp the requested position to what exists, per chain: a cursor above the newest id would otherwise
        // make the session drop every later frame of that chain as "already sent".
        let from = Position {
            targeted: r.requested.targeted.min(latest.targeted),
            broadcast: r.requested.broadcast.min(latest.broadcast),
        };
        // Never re-send what this socket already delivered.
        self.position = Position {
            targeted: self.position.targeted.max(from.targeted),
            broadcast: self.position.broadcast.max(from.broadcast),
        };
        self.pending = Some(self.read_page(self.position));
        Ok(())
    }

    /// What the replay misses from `since` on up to the floors was pruned by retention: say so (`truncated`) rather
    /// than replay a part silently. Floors this replay announced already are not announced again.
    async fn announce_pruned(&mut self, since: Position, floor: Position) -> Result<(), Ended> {
        let Some(r) = &mut self.replay else { return Ok(()) };
        let told = r.floor;
        r.floor = told.later_each(floor);
        let cut = |since: i64, told: i64, floor: i64| (since.max(told) < floor).then_some(floor);
        let pruned = cut(since.targeted, told.targeted, floor.targeted).max(cut(
            since.broadcast,
            told.broadcast,
            floor.broadcast,
        ));
        if let Some(pruned_up_to) = pruned {
            metrics::counter!("herald_session_truncated_replays_total").increment(1);
            let frame = ServerFrame::Truncated {
                since: since.targeted,
                since_broadcast: since.broadcast,
                oldest_id: pruned_up_to + 1,
            };
            self.send_now(frame.encode()).await?;
        }
        Ok(())
    }

    async fn on_page(&mut self, page: ReplayPage) -> Result<(), Ended> {
        // Retention may have pruned what this replay had not reached yet (when it started, or between its pages):
        // the page's floor, read in its snapshot, says so.
        self.announce_pruned(self.position, page.floor).await?;
        let items = page.items;
        let full = self.page_limit().reached(&items);
        let mut sent = 0u64;
        let mut counts_changed = false;
        let timeout = Duration::from_secs(self.deps.settings.write_timeout_secs);
        let max_frame = self.deps.settings.max_frame_bytes();
        let write = async {
            for r in &items {
                let n = &r.notification;
                if n.id <= self.position.get(n.chain()) {
                    continue; // already sent live, between the pages of this replay
                }
                self.position.advance(n.chain(), n.id);
                if n.chain() == Chain::Broadcast {
                    counts_changed |= self.broadcast_delivered(n.id);
                }
                let frame = encode_notification_frame(n, &r.body);
                let frame = match self.format {
                    Format::Herald => frame,
                    Format::Event => event_format(frame.as_str()).unwrap_or(frame),
                };
                if too_large_to_send(&frame, max_frame, n.id, &self.user) {
                    continue;
                }
                self.socket.feed(WsMessage::Text(frame)).await?;
                sent += 1;
            }
            if let (true, Some(frame)) = (counts_changed, self.counts_frame()) {
                self.socket.feed(WsMessage::Text(frame)).await?;
            }
            // Flush each page: a client that was away for a week gets a stream, not one burst.
            self.socket.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Ended::Transport),
            Err(_) => return Err(Ended::WriteTimeout),
        }
        metrics::counter!("herald_notifications_replayed_total").increment(sent);
        if full {
            self.pending = Some(self.read_page(self.position));
            return Ok(());
        }
        let replay = self.replay.take().expect("a page belongs to a replay");
        if let Some(needed) = replay.again {
            self.replay = Some(Replay { again: None, needed, ..replay });
            self.pending = Some(self.read_page(self.position));
            return Ok(());
        }
        if replay.announced {
            let p = self.position;
            let frame =
                ServerFrame::Replayed { up_to: p.max(), up_to_targeted: p.targeted, up_to_broadcast: p.broadcast };
            self.send_now(frame.encode()).await?;
            self.counts_owed = true;
        }
        // Frames that waited for a gap fill: the fill sent what the inbox had; whatever is still missing below
        // them was deleted meanwhile, so they go out without another fill.
        let mut held = std::mem::take(&mut self.held);
        self.deliver(&mut held, false).await?;
        if let Some(since) = replay.resume {
            // Its counts come after its own `replayed`.
            self.start_replay(since, true, FirstRead::Latest);
        }
        if self.pending.is_none() {
            // The counts, read again: a replay may follow a loss (an overflow, Redis) that took counts frames
            // with it. Live frames wait for the read, as for a page. After a silent replay (a gap fill, a
            // catch-up) they are sent only when they changed.
            self.pending = Some(self.read_counts());
        }
        Ok(())
    }

    /// Announce a resync, then replay after the position this socket reached.
    async fn resync(&mut self, reason: ResyncReason) -> Result<(), Ended> {
        metrics::counter!("herald_session_resyncs_total", "reason" => reason.label()).increment(1);
        if !self.opened {
            self.deferred = Some(Some(reason));
            return Ok(());
        }
        let p = self.position;
        let frame = ServerFrame::Resync { reason: reason.label(), since: p.targeted, since_broadcast: p.broadcast };
        self.send_now(frame.encode()).await?;
        // What retention pruned while this socket missed it is announced (`truncated`) with the first page, not
        // skipped silently.
        self.start_replay(p, true, FirstRead::Page);
        Ok(())
    }

    /// Send queued frames in one write, skipping notifications already sent. A frame that overtook an earlier
    /// one of its chain (`prev_id` above the cursor) starts a gap fill; it and the frames after it wait for it.
    async fn deliver(&mut self, batch: &mut Vec<Outgoing>, fill_gaps: bool) -> Result<(), Ended> {
        let timeout = Duration::from_secs(self.deps.settings.write_timeout_secs);
        let result = tokio::time::timeout(timeout, self.write_batch(batch, fill_gaps)).await;
        batch.clear();
        if batch.capacity() > 64 {
            // After a burst, as the outbox does: an idle session keeps a few KiB, not a full queue's worth.
            batch.shrink_to_fit();
        }
        match result {
            Ok(Ok(Some(gap))) => {
                metrics::counter!("herald_session_gap_fills_total").increment(1);
                self.held = gap;
                self.start_replay(self.position, false, FirstRead::Page);
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Ended::WriteTimeout),
        }
    }

    /// Writes the batch up to the first gap; returns the frames from the gap on, if there is one.
    async fn write_batch(&mut self, batch: &mut [Outgoing], fill_gaps: bool) -> Result<Option<Vec<Outgoing>>, Ended> {
        let now = Instant::now();
        let mut delivered = 0u64;
        let mut gap = None;
        // A broadcast's counts go out after it (and after the frames queued with it), once.
        let mut counts_owed = false;
        let max_frame = self.deps.settings.max_frame_bytes();
        for (i, out) in batch.iter().enumerate() {
            if let Some(link) = out.link {
                if link.id <= self.position.get(link.chain) {
                    continue;
                }
                // A late one (see `Outgoing::late`) is filled like a gap: from the inbox, as it is now.
                if fill_gaps && (out.late || link.prev_id > self.position.get(link.chain)) {
                    gap = Some(batch[i..].to_vec());
                    break;
                }
                if out.late {
                    continue; // after its fill: the inbox no longer has it (deleted meanwhile)
                }
                self.position.advance(link.chain, link.id);
                if link.chain == Chain::Broadcast {
                    counts_owed |= self.broadcast_delivered(link.id);
                }
            }
            if let Some(at) = out.counts {
                if !self.opened {
                    continue; // the opening snapshot is newer
                }
                let Some(counts) = self.absolute_counts(at.counts, at.broadcast_up_to, at.version) else {
                    continue; // older than the counts this session has
                };
                counts_owed = false;
                let frame = ServerFrame::Counts { unread: counts.unread, unseen: counts.unseen }.encode();
                self.socket.feed(WsMessage::Text(frame)).await.map_err(|_| Ended::Transport)?;
                continue;
            }
            let frame = out.bytes(self.format);
            if too_large_to_send(&frame, max_frame, out.link.map_or(0, |l| l.id), &self.user) {
                continue;
            }
            self.socket.feed(WsMessage::Text(frame)).await.map_err(|_| Ended::Transport)?;
            // Delivered: a notification's frame written (a skipped one is not), its latency from ingest.
            if out.link.is_some() {
                delivered += 1;
                if let Some(t) = out.ingested_at {
                    session_metrics().delivery_latency.record(now.saturating_duration_since(t).as_secs_f64());
                }
            }
        }
        if let (true, Some(frame)) = (counts_owed, self.counts_frame()) {
            self.socket.feed(WsMessage::Text(frame)).await.map_err(|_| Ended::Transport)?;
        }
        session_metrics().delivered.increment(delivered);
        self.socket.flush().await.map_err(|_| Ended::Transport)?;
        Ok(gap)
    }

    async fn on_text(&mut self, text: &Utf8Bytes) -> Result<(), Ended> {
        let message = ClientMessage::parse(text.as_str());
        // The socket admits messages as large as a token refresh may be; everything else keeps the smaller
        // bound.
        if text.len() > self.deps.settings.max_inbound_bytes && !matches!(message, Ok(ClientMessage::Auth { .. })) {
            return Err(self.close(CloseReason::TooBig).await);
        }
        match message {
            // The seeds' gateway answered any text with this pong; their front-ends expect it.
            Ok(ClientMessage::Ping) | Err(_) if self.format == Format::Event => {
                self.send_now(Utf8Bytes::from_static(EVENT_FORMAT_PONG)).await
            }
            Ok(ClientMessage::Ping) => self.send_now(ServerFrame::Pong.encode()).await,
            Ok(ClientMessage::Resume { since }) => {
                if self.resumes.too_many_with_one_more(Instant::now(), MAX_RESUMES) {
                    let message = format!(
                        "more than {MAX_RESUMES} resumes a minute on one socket: not replayed (the session goes on \
                         from where it is)"
                    );
                    return self.bad_message("rate_limited", &message).await;
                }
                // Before the opening, a resume takes the place of the URL's `since`: the handshake paid that replay.
                let replaces_since = !self.opened && self.since.is_some();
                if !replaces_since && !self.deps.reads.take(&self.user) {
                    let message = "too many reads of this inbox from its user (server.user_reads_per_second, shared \
                                   by the user's sockets and REST reads): not replayed (the session goes on from \
                                   where it is)";
                    // Not a bad message: the user's other sockets and REST reads spent the budget, not this one.
                    return self.send_error("rate_limited", message).await;
                }
                match (self.opened, self.since.is_some()) {
                    (true, _) => self.start_replay(since, true, FirstRead::Latest),
                    // Before the opening read returns: in place of the URL's `since`, or after the opening.
                    (false, true) => self.since = Some(since),
                    (false, false) => self.early_resume = Some(since),
                }
                Ok(())
            }
            Ok(ClientMessage::Auth { token }) => {
                // A refresh must outlive now, as a handshake's token must (the leeway is for clock skew, not for
                // taking a token that already ran out); a refused one keeps the session on its current token.
                let refused = match self.deps.auth.verify_user(&token) {
                    Ok(Principal::User { id, expires_at }) if id.as_str() == &*self.user => {
                        if expires_at > chrono::Utc::now().timestamp() {
                            self.expires_at = expires_at;
                            return self.send_now(ServerFrame::AuthOk { expires_at }.encode()).await;
                        }
                        AuthError::Expired.to_string()
                    }
                    Ok(_) => "the token is for another user".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.bad_message("auth_rejected", &refused).await
            }
            Err(e) => self.bad_message("bad_message", &e.to_string()).await,
        }
    }

    /// Answer a message the session cannot take with an error frame; past `MAX_BAD_MESSAGES` of them in a window (refused
    /// token refreshes count too), close with 1008.
    async fn bad_message(&mut self, code: &str, message: &str) -> Result<(), Ended> {
        if self.bad_messages.too_many_with_one_more(Instant::now(), MAX_BAD_MESSAGES) {
            let _ = self.close_with(1008, "too many bad messages").await;
            self.linger().await;
            return Err(Ended::BadMessages);
        }
        self.send_error(code, message).await
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Result<(), Ended> {
        self.send_now(ServerFrame::Error { code, message }.encode()).await
    }

    async fn send_now(&mut self, frame: Utf8Bytes) -> Result<(), Ended> {
        self.send_now_msg(WsMessage::Text(frame)).await
    }

    async fn send_now_msg(&mut self, msg: WsMessage) -> Result<(), Ended> {
        match tokio::time::timeout(Duration::from_secs(self.deps.settings.write_timeout_secs), self.socket.send(msg))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Transport),
            Err(_) => Err(Ended::WriteTimeout),
        }
    }

    async fn close(&mut self, reason: CloseReason) -> Ended {
        if self.close_with(reason.code(), reason.label()).await.is_ok() {
            self.linger().await;
        }
        Ended::Server(reason)
    }

    /// The closing handshake's second half: read what the client sent before it saw our close frame, until its
    /// own close frame (or the end of the stream, or `CLOSE_LINGER`). Closing the connection with its messages
    /// unread makes the kernel answer them with a reset, and a client that reads after it (a browser, Node's
    /// `ws`) loses the frames still on their way, the close frame with its code included, and reports 1006.
    async fn linger(&mut self) {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn close_with(&mut self, code: u16, reason: &'static str) -> Result<(), Ended> {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        self.send_now_msg(WsMessage::Close(Some(frame))).await
    }
}

/// Whether a notification's frame is over what this session's socket can carry, so it is skipped (and said so)
/// rather than failing the socket: ingest refuses such notifications (`notification_too_large`), so only rows
/// stored before that check, or before the limits were lowered, can be. The REST inbox still lists it.
fn too_large_to_send(frame: &Utf8Bytes, max_frame: usize, id: i64, user: &str) -> bool {
    if frame.len() <= max_frame {
        return false;
    }
    metrics::counter!("herald_frames_too_large_total").increment(1);
    tracing::warn!(
        id,
        user,
        bytes = frame.len(),
        max = max_frame,
        "notification frame over what a session can carry (websocket.outbound_queue_bytes, \
         websocket.max_write_buffer_bytes): not pushed; the REST inbox lists it"
    );
    true
}

fn unix_to_instant(unix_secs: i64) -> tokio::time::Instant {
    let left = (unix_secs - chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_secs(left)
}

/// Resyncs in the last minute, to turn a client that can never keep up into a 4008 close.
#[derive(Default)]
struct Resyncs(Vec<Instant>);

impl Resyncs {
    fn allow(&mut self, per_minute: u32) -> bool {
        self.0.retain(|t| t.elapsed() < Duration::from_secs(60));
        if self.0.len() >= per_minute as usize {
            return false;
        }
        self.0.push(Instant::now());
        true
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten bad messages in a minute are answered; the eleventh closes. Spread over longer, a long-lived session's
    /// occasional refused message never adds up to a close.
    #[test]
    fn more_than_ten_bad_messages_in_a_minute_close_and_fewer_never_add_up() {
        let start = Instant::now();
        let mut bad = PerWindow::new(start);
        assert!((0..10).all(|_| !bad.too_many_with_one_more(start, MAX_BAD_MESSAGES)));
        assert!(bad.too_many_with_one_more(start + Duration::from_secs(59), MAX_BAD_MESSAGES), "the eleventh");
        let mut bad = PerWindow::new(start);
        for i in 0..100u64 {
            let at = start + Duration::from_secs(i * 7);
            assert!(!bad.too_many_with_one_more(at, MAX_BAD_MESSAGES), "one every 7 s: message {i}");
        }
    }

    const fn c(unread: u64, unseen: u64) -> Counts {
        Counts { unread, unseen }
    }

    #[test]
    fn a_broadcast_adds_one_to_the_counts_unless_they_include_it() {
        let mut b = Badge::default();
        assert!(!b.broadcast(3), "no counts yet: nothing to add to");
        assert_eq!(b.absolute(c(2, 1), 5, 0), Some(c(2, 1)), "the opening snapshot, taken after broadcast 3 and 5");
        assert!(!b.broadcast(5), "included in the snapshot");
        assert!(b.broadcast(7));
        assert_eq!(b.counts, Some(c(3, 2)));
        assert!(b.broadcast(9));
        assert_eq!(b.counts, Some(c(4, 3)));
    }

    #[test]
    fn absolute_counts_from_before_a_delivered_broadcast_add_it_back_and_later_ones_are_not_counted_twice() {
        let mut b = Badge::default();
        b.absolute(c(0, 0), 10, 0);
        assert!(b.broadcast(12), "+1 in memory");
        // A commit's counts that left broadcast 12 out (they crossed it on Redis): 12 is added back.
        assert_eq!(b.absolute(c(1, 1), 10, 0), Some(c(2, 2)));
        // Counts that include broadcast 14, which this session has not delivered yet: no +1 when it comes.
        assert_eq!(b.absolute(c(3, 3), 14, 0), Some(c(3, 3)));
        assert!(!b.broadcast(14));
        assert_eq!(b.counts, Some(c(3, 3)));
        assert!(b.broadcast(15));
        assert_eq!(b.counts, Some(c(4, 4)));
    }

    #[test]
    fn counts_older_than_those_taken_are_dropped_and_unversioned_ones_always_taken() {
        let mut b = Badge::default();
        assert_eq!(b.absolute(c(5, 5), 0, 10), Some(c(5, 5)), "node B's commit, version 10");
        // Node A's earlier commit (a read: version 9) arrives later over Redis: the badge keeps B's.
        assert_eq!(b.absolute(c(4, 4), 0, 9), None);
        assert_eq!(b.counts, Some(c(5, 5)));
        assert_eq!(b.absolute(c(5, 5), 0, 10), None, "the same version again: nothing newer");
        assert_eq!(b.absolute(c(6, 6), 0, 11), Some(c(6, 6)));
        assert_eq!(b.absolute(c(1, 1), 0, 0), Some(c(1, 1)), "version 0 (a node from before versions): taken");
        assert_eq!(b.absolute(c(2, 2), 0, 10), None, "still older than the newest version taken");
    }

    /// A snapshot holds a user's commit (version 10) and a broadcast after it (which sends no counts); that
    /// commit's own counts, queued before the snapshot was read, must not replace it: the broadcast's frame is at or
    /// below the session's position and is never added back.
    #[test]
    fn a_commits_counts_do_not_replace_a_snapshot_that_holds_that_commit_and_a_broadcast_after_it() {
        let mut b = Badge::default();
        assert_eq!(b.absolute(c(2, 2), 7, 10), Some(c(2, 2)), "the snapshot: the read, then broadcast 7");
        assert_eq!(b.absolute(c(1, 1), 5, 10), None, "the read's own counts, from before broadcast 7");
        assert_eq!(b.counts, Some(c(2, 2)));
    }

    #[test]
    fn the_session_remembers_a_bounded_number_of_broadcasts() {
        let mut b = Badge::default();
        b.absolute(c(0, 0), 0, 0);
        for id in 1..=1000 {
            b.broadcast(id);
        }
        assert_eq!(b.recent.len(), RECENT_BROADCASTS);
        assert_eq!(b.counts, Some(c(1000, 1000)));
    }
}
