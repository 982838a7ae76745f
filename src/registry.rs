//! The local session registry: user id → open sessions, each with a bounded outbox.
//!
//! Invariants:
//! - Callers get methods, never locks; nothing awaits while holding a registry entry (pushes are synchronous).
//! - A full outbox never blocks the publisher and never drops silently: the named queue-full policy either
//!   asks the session to resync from the inbox (`resync`) or closes it with [`CloseReason::Lagged`] (4008).
//! - An idle session costs a few hundred bytes here: an empty `VecDeque` does not allocate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::{DashMap, DashSet};
use tokio::sync::Notify;

use crate::config::QueueFullPolicy;
use crate::protocol::{event_format, Chain, CountsAt, Format};

/// Why the server closes a session. Each maps to one documented close code (see `docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1001: the server is shutting down.
    Shutdown,
    /// 4008: the outbound queue overflowed (queue-full policy `close`).
    Lagged,
    /// 4009: nothing heard from the client for `idle_timeout`.
    Idle,
    /// 4001: the token expired.
    TokenExpired,
    /// 1009: an inbound message was over the limit.
    TooBig,
    /// 1003: a binary frame (the protocol is text only).
    Unsupported,
    /// 1011: the store failed during a replay.
    Internal,
    /// 1013: a store read took longer than `store_timeout_secs` or the store is unavailable: try again later.
    StoreUnavailable,
    /// 4029: the user already has `max_sessions_per_user` sessions open on this node.
    TooManySessions,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => 1001,
            CloseReason::Unsupported => 1003,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::StoreUnavailable => 1013,
            CloseReason::TooManySessions => 4029,
            CloseReason::TokenExpired => 4001,
            CloseReason::Lagged => 4008,
            CloseReason::Idle => 4009,
        }
    }

    /// Short label for the close frame's reason and for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::Unsupported => "binary_unsupported",
            CloseReason::TooBig => "message_too_big",
            CloseReason::Internal => "internal_error",
            CloseReason::StoreUnavailable => "store_unavailable",
            CloseReason::TooManySessions => "too_many_sessions",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Lagged => "slow_consumer",
            CloseReason::Idle => "idle_timeout",
        }
    }
}

impl Outgoing {
    pub fn new(link: Option<Link>, frame: Utf8Bytes, ingested_at: Option<Instant>) -> Self {
        Outgoing {
            link,
            frame,
            shaped: Arc::default(),
            ingested_at,
            counts: None,
            state_version: 0,
            covers: 0,
            late: false,
        }
    }

    /// The bytes a session in `format` sends.
    pub fn bytes(&self, format: Format) -> Utf8Bytes {
        match format {
            Format::Herald => self.frame.clone(),
            Format::Event => self
                .shaped
                .get_or_init(|| event_format(self.frame.as_str()))
                .clone()
                .unwrap_or_else(|| self.frame.clone()),
        }
    }
}

/// Where a notification frame sits in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub chain: Chain,
    pub id: i64,
    /// The previous id of the chain: a session whose cursor for the chain is below it knows this frame
    /// overtook an earlier one (possible across nodes) and fills the gap from the inbox first.
    pub prev_id: i64,
}

/// One queued frame. Notifications carry their [`Link`], so a session can drop one it already sent during a
/// replay and see a gap; control frames (read state, purged) have none.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub link: Option<Link>,
    pub frame: Utf8Bytes,
    /// The frame reshaped for `?format=event` sessions: computed by the first such session on this node, shared
    /// by the rest (`None` inside: the frame is sent as it is).
    pub shaped: Arc<OnceLock<Option<Utf8Bytes>>>,
    /// When the event entered Herald, for the delivery-latency histogram.
    pub ingested_at: Option<Instant>,
    /// A `counts` frame's values, the newest broadcast id they include and their version: the session
    /// remembers them to derive later broadcasts' counts in memory, and drops counts older than its own.
    pub counts: Option<CountsAt>,
    /// A state frame's (`read`, `unread`, `archived`, ...) or a targeted notification's place among its user's
    /// commits: the version of the counts its commit wrote (0: unordered, never compared). Two nodes' changes can
    /// cross in Redis; a session that gets a state frame older than one it already queued resyncs (`out_of_order`)
    /// after sending it, and a notification older than one marks it [`Outgoing::late`].
    pub state_version: u64,
    /// A `read_all`'s or `seen_all`'s `up_to` (0 for other frames): a notification up to it (a broadcast too,
    /// which has no version) queued after it is [`Outgoing::late`].
    pub covers: i64,
    /// A notification committed before a state change (or the snapshot) this session already queued, or covered
    /// by a `read_all` / `seen_all` queued before it: the change may be about it, so the frame as committed would
    /// undo it on the client. The session sends it from the inbox instead, with its state as of now (a gap fill).
    pub late: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full: the policy applied (queued frames dropped; a resync or a 4008 close follows).
    Overflow,
    /// The session is already closing.
    Closed,
}

/// What the session task should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Frames were moved into the caller's buffer.
    Frames,
    /// Frames were dropped or may have been missed: replay from the inbox after the last id sent, then continue.
    Resync(ResyncReason),
    Close(CloseReason),
}

/// Why a session replays from the inbox on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// Its outbound queue overflowed. Announced to the client (`resync` frame).
    SlowConsumer,
    /// The cross-node transport reconnected: messages may have been missed. Announced.
    TransportLost,
    /// The node just subscribed to this user's channel: catch up on what committed meanwhile. Silent.
    Subscribed,
    /// A state frame arrived after a newer one (two nodes' changes crossed in Redis): the client applied them in
    /// the wrong order and must refetch. Announced, after the frames queued before it.
    OutOfOrder,
}

impl ResyncReason {
    pub fn label(self) -> &'static str {
        match self {
            ResyncReason::SlowConsumer => "slow_consumer",
            ResyncReason::TransportLost => "transport_lost",
            ResyncReason::Subscribed => "subscribed",
            ResyncReason::OutOfOrder => "out_of_order",
        }
    }
}

struct OutboxState {
    frames: VecDeque<Outgoing>,
    /// The queued frames' payload bytes.
    bytes: usize,
    resync: Option<ResyncReason>,
    closing: Option<CloseReason>,
    /// A [`Wakes`] holds this session's wake-up (it wakes the session when released, once however many frames
    /// it queued meanwhile).
    wake_held: bool,
    /// The newest [`Outgoing::state_version`] queued.
    state_version: u64,
    /// A state frame older than `state_version` was queued: once the frames before it are out, resync
    /// ([`ResyncReason::OutOfOrder`]).
    out_of_order: bool,
    /// The highest [`Outgoing::covers`] queued.
    covered: i64,
}

/// How much one session may queue: frames and bytes, whichever is reached first.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames: usize,
    pub bytes: usize,
    pub policy: QueueFullPolicy,
}

/// A session's bounded outbound queue. One consumer (the session task), many producers.
pub struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    bounds: Bounds,
}

impl Outbox {
    fn new(bounds: Bounds) -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                bytes: 0,
                resync: None,
                closing: None,
                wake_held: false,
                state_version: 0,
                out_of_order: false,
                covered: 0,
            }),
            notify: Notify::new(),
            bounds,
        }
    }

    /// Queue a frame and wake the session.
    pub fn push(&self, out: Outgoing) -> Push {
        let (push, _) = self.enqueue(out, false);
        if push != Push::Closed {
            self.notify.notify_one();
        }
        push
    }

    /// Queue a frame without waking the session; the caller wakes it (a `Closed` session needs no wake). With
    /// `hold`, the session's wake-up is marked held, and the answer says whether it already was (then another
    /// holder wakes it).
    fn enqueue(&self, mut out: Outgoing, hold: bool) -> (Push, bool) {
        let mut s = self.state.lock().expect("outbox poisoned");
        if s.closing.is_some() {
            return (Push::Closed, false);
        }
        let already_held = s.wake_held;
        match out.state_version {
            0 => {}
            // A notification orders only against state changes: two notifications are ordered by their chain.
            v if out.link.is_some() => out.late = v < s.state_version,
            v if v < s.state_version => s.out_of_order = true,
            v => s.state_version = v,
        }
        s.covered = s.covered.max(out.covers);
        if let Some(link) = out.link {
            out.late |= link.id <= s.covered;
        }
        if let Some(new) = out.counts {
            // Counts are absolute: a newer one replaces a queued older one (and goes to the end, after the
            // frames it counts), so a session never queues more than one; an older one than that queued (a lower
            // version: another node's commit that arrived late) is dropped.
            if let Some(i) = s.frames.iter().position(|f| f.counts.is_some()) {
                let queued = s.frames[i].counts.map_or(0, |c| c.version);
                if new.version != 0 && new.version < queued {
                    return (Push::Queued, already_held);
                }
                let old = s.frames.remove(i).expect("found above");
                s.bytes -= old.frame.len();
            }
        }
        s.wake_held |= hold;
        if s.frames.len() >= self.bounds.frames || s.bytes + out.frame.len() > self.bounds.bytes {
            // Notifications dropped here are in the inbox: the resync replay (or the client's resume) brings them
            // back. Read-state frames are not replayed; the announced resync (or the reconnect) tells the client
            // to refetch its counts, so none is lost silently.
            s.frames.clear();
            s.frames.shrink_to_fit();
            s.bytes = 0;
            // The announced resync makes the client refetch anyway: one is enough.
            s.out_of_order = false;
            match self.bounds.policy {
                QueueFullPolicy::Resync => s.resync = Some(ResyncReason::SlowConsumer),
                QueueFullPolicy::Close => s.closing = Some(CloseReason::Lagged),
            }
            return (Push::Overflow, already_held);
        }
        s.bytes += out.frame.len();
        s.frames.push_back(out);
        (Push::Queued, already_held)
    }

    /// Release a held wake-up.
    fn release(&self) {
        self.state.lock().expect("outbox poisoned").wake_held = false;
        self.notify.notify_one();
    }

    /// The session read a snapshot of its user's inbox at counts `version` (its opening, a resume): the state
    /// frames of commits up to it are in what the client fetches next, so one of an older commit queued later is
    /// late (see [`Outgoing::state_version`]).
    pub fn state_read_at(&self, version: u64) {
        let mut s = self.state.lock().expect("outbox poisoned");
        s.state_version = s.state_version.max(version);
    }

    /// Ask the session to replay from the inbox after what it sent (an announced reason wins over a silent one).
    pub fn resync(&self, reason: ResyncReason) {
        let mut s = self.state.lock().expect("outbox poisoned");
        if s.resync.is_none() || reason != ResyncReason::Subscribed {
            s.resync = Some(reason);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Ask the session to close. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.state.lock().expect("outbox poisoned");
        s.closing.get_or_insert(reason);
        drop(s);
        self.notify.notify_one();
    }

    /// Wait until there is something to do; with `frames` false (the session is replaying), only a close or a
    /// resync request, and queued frames stay queued. Cancel-safe: nothing leaves the queue until the future
    /// completes.
    pub async fn next(&self, buf: &mut Vec<Outgoing>, frames: bool) -> Next {
        loop {
            {
                let mut s = self.state.lock().expect("outbox poisoned");
                if let Some(reason) = s.closing {
                    return Next::Close(reason);
                }
                if let Some(reason) = s.resync.take() {
                    // Frames queued after the overflow stay queued: the replay's id check drops the ones it covers.
                    return Next::Resync(reason);
                }
                if frames && !s.frames.is_empty() {
                    s.bytes = 0;
                    buf.extend(s.frames.drain(..));
                    if s.frames.capacity() > 64 {
                        s.frames.shrink_to_fit();
                    }
                    return Next::Frames;
                }
                if frames && s.out_of_order {
                    // After the frames queued before (the late one among them): the client's refetch follows them.
                    s.out_of_order = false;
                    return Next::Resync(ResyncReason::OutOfOrder);
                }
            }
            self.notify.notified().await;
        }
    }
}

/// One open session, as the registry sees it.
pub struct SessionHandle {
    pub id: u64,
    pub outbox: Outbox,
}

/// Cheap-to-clone handle to the registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Told when a user's first session on this node opens and their last one closes (the cross-node transport
/// subscribes to that user's channel in between). Called under the user's registry entry, so calls for one
/// user arrive in order; implementations must not block.
pub trait PresenceHook: Send + Sync + 'static {
    /// True when the user's channel is not live yet and will be: the transport then calls
    /// [`Registry::subscription_live`] (its next reconcile, or a reconnect's subscription of every user), and the
    /// user's sessions wait for it before their opening read.
    fn first_session(&self, user: &Arc<str>) -> bool;
    fn last_session(&self, user: &Arc<str>);
}

#[derive(Default)]
struct Inner {
    users: DashMap<Arc<str>, Vec<Arc<SessionHandle>>>,
    /// Users whose channel the transport is subscribing to: their sessions wait for it before reading the inbox.
    /// Taken under the user's entry in `users` (never the other way round).
    subscribing: DashSet<Arc<str>>,
    next_id: AtomicU64,
    hook: std::sync::OnceLock<Arc<dyn PresenceHook>>,
}

/// Removes the session from the registry when dropped (however the session task ends).
pub struct Registration {
    registry: Registry,
    user: Arc<str>,
    pub handle: Arc<SessionHandle>,
    /// The user's channel is being subscribed to: whatever other nodes publish for the user reaches this session
    /// only once it is live, which [`Registry::subscription_live`] says (with a resync;
    /// [`Registry::awaits_subscription`] tells it from a resync for another reason). A session reads the inbox
    /// after that, so that nothing published meanwhile (read state, which no replay carries) is missed.
    pub awaiting_subscription: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.handle.id;
        let hook = self.registry.inner.hook.get();
        let subscribing = &self.registry.inner.subscribing;
        self.registry.inner.users.remove_if_mut(&self.user, |user, sessions| {
            sessions.retain(|s| s.id != id);
            let last = sessions.is_empty();
            if last {
                subscribing.remove(user);
                if let Some(h) = hook {
                    h.last_session(user);
                }
            }
            last
        });
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a session for `user`, unless the user already has `max_per_user` here (checked under the user's
    /// entry, so concurrent handshakes cannot overshoot).
    pub fn register(&self, user: &str, bounds: Bounds, max_per_user: usize) -> Result<Registration, CloseReason> {
        let user: Arc<str> = Arc::from(user);
        let mut sessions = self.inner.users.entry(user.clone()).or_default();
        if sessions.len() >= max_per_user {
            return Err(CloseReason::TooManySessions);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(SessionHandle { id, outbox: Outbox::new(bounds) });
        if let (true, Some(h)) = (sessions.is_empty(), self.inner.hook.get()) {
            if h.first_session(&user) {
                self.inner.subscribing.insert(user.clone());
            }
        }
        let awaiting_subscription = self.inner.subscribing.contains(&user);
        sessions.push(handle.clone());
        drop(sessions);
        Ok(Registration { registry: self.clone(), user, handle, awaiting_subscription })
    }

    /// The transport's channel for `user` is live: sessions waiting for it ([`Registration::awaiting_subscription`])
    /// may read the inbox. `reason`: the resync the user's sessions get (a new subscription's catch-up, which also
    /// wakes those waiting); `None` (the channel was already subscribed: nothing to catch up on), a
    /// [`ResyncReason::Subscribed`] one only if a session waits.
    pub fn subscription_live(&self, user: &str, reason: Option<ResyncReason>) {
        let awaited = self.inner.subscribing.remove(user).is_some();
        match reason {
            Some(reason) => self.resync_user(user, reason),
            None if awaited => self.resync_user(user, ResyncReason::Subscribed),
            None => {}
        }
    }

    /// Whether `user`'s sessions still wait for their channel ([`Registration::awaiting_subscription`]): a resync
    /// for another reason (a `lost` message, an overflow) does not end the wait.
    pub fn awaits_subscription(&self, user: &str) -> bool {
        self.inner.subscribing.contains(user)
    }

    /// Install the presence hook (once, at start, before sessions open).
    pub fn set_presence_hook(&self, hook: Arc<dyn PresenceHook>) {
        let _ = self.inner.hook.set(hook);
    }

    /// Ask every session of `user` to replay from the inbox after what it sent.
    pub fn resync_user(&self, user: &str, reason: ResyncReason) {
        if let Some(sessions) = self.inner.users.get(user) {
            sessions.iter().for_each(|s| s.outbox.resync(reason));
        }
    }

    /// Ask every session on this node to replay from the inbox after what it sent.
    pub fn resync_all(&self, reason: ResyncReason) {
        for entry in self.inner.users.iter() {
            entry.value().iter().for_each(|s| s.outbox.resync(reason));
        }
    }

    /// The users with a session on this node.
    pub fn users(&self) -> Vec<Arc<str>> {
        self.inner.users.iter().map(|e| e.key().clone()).collect()
    }

    /// Queue a frame for every session of `user`, except `skip` (the session that caused it, if any), waking
    /// each now. Returns how many sessions accepted it.
    pub fn send_to_user(&self, user: &str, out: &Outgoing, skip: Option<u64>) -> usize {
        self.deliver_to_user(user, out, skip, &mut Wakes::now()).written
    }

    /// [`Registry::send_to_user`], waking through `wakes` and saying what became of each session (for the trace).
    pub fn deliver_to_user(&self, user: &str, out: &Outgoing, skip: Option<u64>, wakes: &mut Wakes) -> Sent {
        let mut sent = Sent::default();
        let Some(sessions) = self.inner.users.get(user) else {
            return sent;
        };
        for s in sessions.iter().filter(|s| Some(s.id) != skip) {
            sent.push(s, out.clone(), wakes);
        }
        sent
    }

    /// Queue a frame for every session of every user, waking each now.
    pub fn send_to_all(&self, out: &Outgoing) -> usize {
        self.deliver_to_all(out, &mut Wakes::now()).written
    }

    /// [`Registry::send_to_all`], waking through `wakes` and saying what became of each session (for the trace).
    pub fn deliver_to_all(&self, out: &Outgoing, wakes: &mut Wakes) -> Sent {
        let mut sent = Sent::default();
        for entry in self.inner.users.iter() {
            for s in entry.value() {
                sent.push(s, out.clone(), wakes);
            }
        }
        sent
    }

    /// Ask every session to close (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for entry in self.inner.users.iter() {
            for s in entry.value() {
                s.outbox.close(reason);
            }
        }
    }

    /// (users online, sessions open) on this node.
    pub fn counts(&self) -> (usize, usize) {
        let mut sessions = 0;
        let users = self.inner.users.iter().map(|e| sessions += e.value().len()).count();
        (users, sessions)
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.inner.users.contains_key(user)
    }
}

/// What one push to a user's (or everyone's) sessions came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Sessions found.
    pub sessions: usize,
    /// Sessions whose outbox took the frame.
    pub written: usize,
    /// Sessions whose outbox was full (the queue-full policy applied).
    pub overflowed: usize,
    /// Sessions already closing.
    pub closed: usize,
}

impl Sent {
    fn push(&mut self, s: &Arc<SessionHandle>, out: Outgoing, wakes: &mut Wakes) {
        self.sessions += 1;
        let (push, already_held) = s.outbox.enqueue(out, wakes.held.is_some());
        match push {
            Push::Queued => self.written += 1,
            Push::Overflow => {
                metrics::counter!("herald_session_overflows_total").increment(1);
                self.overflowed += 1;
            }
            Push::Closed => {
                self.closed += 1;
                return;
            }
        }
        match &mut wakes.held {
            None => s.outbox.notify.notify_one(),
            Some(held) if !already_held => held.push(s.clone()),
            Some(_) => {}
        }
    }
}

/// How the sessions that take a frame are woken. [`Wakes::now`] wakes each at its push. [`Wakes::held`] wakes
/// them when released (or dropped), each once however many frames it was given meanwhile: the commit listener
/// holds them for a whole commit, so a session given a notification and then its user's counts wakes once and
/// writes both in one flush, instead of waking (and writing to its socket) between the two.
pub struct Wakes {
    held: Option<Vec<Arc<SessionHandle>>>,
}

impl Wakes {
    pub fn now() -> Wakes {
        Wakes { held: None }
    }

    pub fn held() -> Wakes {
        Wakes { held: Some(Vec::new()) }
    }

    /// Wake every session held so far (the holding goes on).
    pub fn release(&mut self) {
        if let Some(held) = &mut self.held {
            for s in held.drain(..) {
                s.outbox.release();
            }
            if held.capacity() > 1024 {
                held.shrink_to(64); // a broadcast's sessions: not kept between commits
            }
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn out(id: i64) -> Outgoing {
        let link = Link { chain: Chain::Targeted, id, prev_id: 0 };
        Outgoing::new(Some(link), Utf8Bytes::from_static("{}"), None)
    }

    fn bounds(frames: usize, policy: QueueFullPolicy) -> Bounds {
        Bounds { frames, bytes: 1 << 20, policy }
    }

    fn reg_user(reg: &Registry, user: &str, frames: usize, policy: QueueFullPolicy) -> Registration {
        reg.register(user, bounds(frames, policy), 32).unwrap()
    }

    /// A transport that is connected and subscribes on the first session (as `fanout::redis` does).
    struct Subscribing;

    impl PresenceHook for Subscribing {
        fn first_session(&self, _: &Arc<str>) -> bool {
            true
        }
        fn last_session(&self, _: &Arc<str>) {}
    }

    /// Every session of a user whose channel is being subscribed to waits for it (the first one and any opened
    /// meanwhile); only the transport's word that it is live ends the wait (not a resync of everyone for a `lost`
    /// message), and later sessions do not wait; a channel found still subscribed ends it too, and a user who left
    /// is forgotten.
    #[tokio::test]
    async fn sessions_wait_for_their_users_subscription_until_the_transport_says_it_is_live() {
        let reg = Registry::new();
        reg.set_presence_hook(Arc::new(Subscribing));
        let first = reg_user(&reg, "u", 8, QueueFullPolicy::Close);
        let second = reg_user(&reg, "u", 8, QueueFullPolicy::Close);
        assert!(first.awaiting_subscription && second.awaiting_subscription);
        reg.resync_all(ResyncReason::TransportLost); // another node's `lost`: the channel is no more live for it
        assert!(reg.awaits_subscription("u"));
        for r in [&first, &second] {
            assert_eq!(r.handle.outbox.next(&mut Vec::new(), false).await, Next::Resync(ResyncReason::TransportLost));
        }
        reg.subscription_live("u", Some(ResyncReason::Subscribed));
        assert!(!reg.awaits_subscription("u"));
        for r in [&first, &second] {
            assert_eq!(r.handle.outbox.next(&mut Vec::new(), false).await, Next::Resync(ResyncReason::Subscribed));
        }
        assert!(!reg_user(&reg, "u", 8, QueueFullPolicy::Close).awaiting_subscription, "live: nothing to wait for");

        // The last session goes and a new one comes before the transport unsubscribed: it waits, and the
        // transport, finding the channel still subscribed, says so.
        drop((first, second));
        let back = reg_user(&reg, "u", 8, QueueFullPolicy::Close);
        assert!(back.awaiting_subscription);
        reg.subscription_live("u", None);
        assert_eq!(back.handle.outbox.next(&mut Vec::new(), false).await, Next::Resync(ResyncReason::Subscribed));
        assert!(!reg_user(&reg, "u", 8, QueueFullPolicy::Close).awaiting_subscription);
        reg.subscription_live("u", None); // not awaited, nothing to catch up on: nothing sent
        assert!(back.handle.outbox.state.lock().unwrap().resync.is_none());

        // A user whose sessions all went while waiting is forgotten.
        let gone = reg_user(&reg, "w", 8, QueueFullPolicy::Close);
        drop(gone);
        assert!(!reg.awaits_subscription("w"));
    }

    #[tokio::test]
    async fn full_outbox_under_close_policy_closes_with_lagged_instead_of_blocking() {
        let reg = Registry::new();
        let slow = reg_user(&reg, "u", 2, QueueFullPolicy::Close);
        let fast = reg_user(&reg, "u", 2, QueueFullPolicy::Close);
        assert_eq!(reg.send_to_user("u", &out(1), None), 2);
        assert_eq!(reg.send_to_user("u", &out(2), None), 2);
        let mut buf = Vec::new();
        assert_eq!(fast.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert_eq!(buf.len(), 2);
        // Third frame: the slow session overflows, the fast one still receives.
        assert_eq!(reg.send_to_user("u", &out(3), None), 1);
        assert_eq!(slow.handle.outbox.next(&mut Vec::new(), true).await, Next::Close(CloseReason::Lagged));
        assert_eq!(slow.handle.outbox.push(out(4)), Push::Closed);
    }

    #[tokio::test]
    async fn full_outbox_under_resync_policy_asks_for_a_replay_then_keeps_queueing() {
        let reg = Registry::new();
        let slow = reg_user(&reg, "u", 2, QueueFullPolicy::Resync);
        for id in 1..=3 {
            reg.send_to_user("u", &out(id), None);
        }
        assert_eq!(slow.handle.outbox.push(out(4)), Push::Queued, "the session stays open");
        let mut buf = Vec::new();
        assert_eq!(
            slow.handle.outbox.next(&mut buf, true).await,
            Next::Resync(ResyncReason::SlowConsumer),
            "the resync comes before later frames"
        );
        assert!(buf.is_empty());
        assert_eq!(slow.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert_eq!(buf.iter().map(|o| o.link.unwrap().id).collect::<Vec<_>>(), vec![4]);
    }

    /// A targeted notification committed before a state change queued ahead of it (or the snapshot) is marked
    /// late; one committed after is not, and notifications never make a later state frame late (two
    /// notifications are ordered by their chain, and a change is always committed after what it changes).
    #[tokio::test]
    async fn a_notification_older_than_a_state_change_queued_before_it_is_marked_late() {
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 16, QueueFullPolicy::Resync);
        let version = |mut o: Outgoing, v: u64| {
            o.state_version = v;
            o
        };
        let note = |id: i64, v: u64| {
            let link = Link { chain: Chain::Targeted, id, prev_id: id - 1 };
            version(Outgoing::new(Some(link), Utf8Bytes::from(format!("n{id}")), None), v)
        };
        let state = |v: u64| version(Outgoing::new(None, Utf8Bytes::from(format!("s{v}")), None), v);
        for o in [note(1, 2), state(4), note(2, 3), note(3, 5), note(4, 0), state(4)] {
            r.handle.outbox.push(o);
        }
        let mut buf = Vec::new();
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        let late: Vec<_> = buf.iter().map(|o| (o.frame.as_str(), o.late)).collect();
        let expected = [("n1", false), ("s4", false), ("n2", true), ("n3", false), ("n4", false), ("s4", false)];
        assert_eq!(late, expected, "only n2, committed (3) before the change sent ahead of it (4)");
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), r.handle.outbox.next(&mut buf, true));
        assert!(idle.await.is_err(), "n3 (5) did not make the later s4 out of order");
        buf.clear();
        r.handle.outbox.state_read_at(9);
        r.handle.outbox.push(note(5, 8));
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert!(buf[0].late, "older than the snapshot: its fill (or the replay's id check) decides");
        // A read_all up to 20 covers the notifications up to it queued after it, broadcasts (no version) included.
        buf.clear();
        let broadcast = |id: i64| {
            let link = Link { chain: Chain::Broadcast, id, prev_id: id - 1 };
            Outgoing::new(Some(link), Utf8Bytes::from(format!("b{id}")), None)
        };
        let mut read_all = state(10);
        read_all.covers = 20;
        for o in [broadcast(19), read_all, broadcast(20), note(21, 11), broadcast(22)] {
            r.handle.outbox.push(o);
        }
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        let late: Vec<_> = buf.iter().map(|o| (o.frame.as_str(), o.late)).collect();
        let expected = [("b19", false), ("s10", false), ("b20", true), ("n21", false), ("b22", false)];
        assert_eq!(late, expected, "only b20: queued after the read_all over it");
    }

    /// Two nodes' state changes crossed in Redis: the late (older) frame is still sent, then the session resyncs
    /// so the client refetches; frames in order, or unordered ones (version 0), never resync.
    #[tokio::test]
    async fn a_state_frame_older_than_one_queued_before_it_is_followed_by_an_out_of_order_resync() {
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 16, QueueFullPolicy::Resync);
        let state = |version: u64| {
            let mut o = Outgoing::new(None, Utf8Bytes::from(format!("v{version}")), None);
            o.state_version = version;
            o
        };
        let mut buf = Vec::new();
        for v in [3, 5, 5, 0, 8] {
            r.handle.outbox.push(state(v));
        }
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), r.handle.outbox.next(&mut buf, true));
        assert!(idle.await.is_err(), "in order (and unordered 0): no resync");
        buf.clear();
        r.handle.outbox.push(state(6)); // committed before 8, arrived after it
        r.handle.outbox.push(state(9));
        let replaying =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.handle.outbox.next(&mut buf, false));
        assert!(replaying.await.is_err(), "while the session replays, neither the frames nor the resync");
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert_eq!(buf.iter().map(|o| o.frame.as_str()).collect::<Vec<_>>(), ["v6", "v9"], "the late frame is sent");
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Resync(ResyncReason::OutOfOrder), "then resync");
        assert_eq!(ResyncReason::OutOfOrder.label(), "out_of_order");
        // A snapshot read at version 20 (a resume): a state frame of an older commit arriving after it is late too.
        buf.clear();
        r.handle.outbox.state_read_at(20);
        r.handle.outbox.push(state(12));
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Resync(ResyncReason::OutOfOrder));
        // An overflow's announced resync covers a late frame: one resync, not two.
        let small = reg_user(&reg, "u", 2, QueueFullPolicy::Resync);
        for v in [30, 25, 31] {
            small.handle.outbox.push(state(v));
        }
        assert_eq!(small.handle.outbox.next(&mut buf, true).await, Next::Resync(ResyncReason::SlowConsumer));
        let after =
            tokio::time::timeout(std::time::Duration::from_millis(50), small.handle.outbox.next(&mut buf, true));
        assert!(after.await.is_err(), "no second resync");
    }

    #[tokio::test]
    async fn an_outbox_over_its_byte_bound_applies_the_policy() {
        let reg = Registry::new();
        let r = reg.register("u", Bounds { frames: 100, bytes: 10, policy: QueueFullPolicy::Close }, 32).unwrap();
        let big = Outgoing::new(None, Utf8Bytes::from_static("0123456"), None);
        assert_eq!(r.handle.outbox.push(big.clone()), Push::Queued);
        assert_eq!(r.handle.outbox.push(big.clone()), Push::Overflow, "7 + 7 bytes > 10: far below 100 frames");
        assert_eq!(r.handle.outbox.next(&mut Vec::new(), true).await, Next::Close(CloseReason::Lagged));
    }

    #[tokio::test]
    async fn draining_the_outbox_frees_its_byte_budget() {
        let reg = Registry::new();
        let r = reg.register("u", Bounds { frames: 100, bytes: 10, policy: QueueFullPolicy::Close }, 32).unwrap();
        let big = Outgoing::new(None, Utf8Bytes::from_static("0123456"), None);
        for _ in 0..5 {
            assert_eq!(r.handle.outbox.push(big.clone()), Push::Queued);
            assert_eq!(r.handle.outbox.next(&mut Vec::new(), true).await, Next::Frames);
        }
    }

    #[tokio::test]
    async fn a_replaying_session_gets_closes_and_resyncs_but_no_frames() {
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 4, QueueFullPolicy::Resync);
        reg.send_to_user("u", &out(1), None);
        let mut buf = Vec::new();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), r.handle.outbox.next(&mut buf, false));
        assert!(waiting.await.is_err(), "frames stay queued while replaying");
        r.handle.outbox.resync(ResyncReason::TransportLost);
        assert_eq!(r.handle.outbox.next(&mut buf, false).await, Next::Resync(ResyncReason::TransportLost));
        assert!(buf.is_empty());
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        assert_eq!(buf.len(), 1);
    }

    #[tokio::test]
    async fn a_user_over_the_session_cap_is_refused_and_may_open_again_after_one_closes() {
        let reg = Registry::new();
        let b = bounds(4, QueueFullPolicy::Close);
        let first = reg.register("u", b, 2).unwrap();
        let _second = reg.register("u", b, 2).unwrap();
        assert_eq!(reg.register("u", b, 2).err(), Some(CloseReason::TooManySessions));
        assert!(reg.register("v", b, 2).is_ok(), "the cap is per user");
        drop(first);
        assert!(reg.register("u", b, 2).is_ok());
    }

    #[tokio::test]
    async fn sessions_leave_the_registry_when_dropped() {
        let reg = Registry::new();
        let a = reg_user(&reg, "u", 4, QueueFullPolicy::Close);
        let b = reg_user(&reg, "u", 4, QueueFullPolicy::Close);
        let c = reg_user(&reg, "v", 4, QueueFullPolicy::Close);
        assert_eq!(reg.counts(), (2, 3));
        assert_eq!(reg.send_to_user("u", &out(1), Some(a.handle.id)), 1, "skip the originating session");
        drop(a);
        assert_eq!(reg.counts(), (2, 2));
        drop(b);
        assert!(!reg.is_online("u"));
        assert_eq!(reg.send_to_all(&out(2)), 1);
        drop(c);
        assert_eq!(reg.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_queued_counts_frame_is_replaced_by_a_newer_one_at_the_end_of_the_queue() {
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 8, QueueFullPolicy::Close);
        let counts = |n: u64| {
            let mut o = Outgoing::new(None, Utf8Bytes::from(format!("counts {n}")), None);
            let counts = crate::protocol::Counts { unread: n, unseen: n };
            o.counts = Some(CountsAt { counts, broadcast_up_to: 0, version: n });
            o
        };
        reg.send_to_user("u", &out(1), None);
        reg.send_to_user("u", &counts(1), None);
        reg.send_to_user("u", &out(2), None);
        reg.send_to_user("u", &counts(3), None);
        // Counts of a lower version (another node's earlier commit, arriving late) do not replace newer ones.
        reg.send_to_user("u", &counts(2), None);
        let mut buf = Vec::new();
        assert_eq!(r.handle.outbox.next(&mut buf, true).await, Next::Frames);
        let frames: Vec<&str> = buf.iter().map(|o| o.frame.as_str()).collect();
        assert_eq!(frames, ["{}", "{}", "counts 3"], "one counts frame, the newest, after the frames it counts");
    }

    /// A waker that records, at each wake-up, how many frames the session's outbox held.
    pub(crate) struct Wakeups {
        session: Arc<SessionHandle>,
        seen: Mutex<Vec<usize>>,
    }

    impl std::task::Wake for Wakeups {
        fn wake(self: Arc<Self>) {
            let queued = self.session.outbox.state.lock().unwrap().frames.len();
            self.seen.lock().unwrap().push(queued);
        }
    }

    impl Wakeups {
        pub(crate) fn of(session: &Arc<SessionHandle>) -> Arc<Wakeups> {
            Arc::new(Wakeups { session: session.clone(), seen: Mutex::default() })
        }

        /// The frames queued at each wake-up so far.
        pub(crate) fn seen(&self) -> Vec<usize> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// A waiting session given frames through held wake-ups is woken once, at the release, with every frame
    /// queued meanwhile there to take; through immediate ones, at the first push, with the first frame only.
    #[test]
    fn held_wake_ups_wake_a_waiting_session_once_when_released() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        for held in [true, false] {
            let reg = Registry::new();
            let r = reg_user(&reg, "u", 8, QueueFullPolicy::Close);
            let woken = Wakeups::of(&r.handle);
            let waker = Waker::from(woken.clone());
            let mut cx = Context::from_waker(&waker);
            let mut buf = Vec::new();
            {
                let mut next = std::pin::pin!(r.handle.outbox.next(&mut buf, true));
                assert!(next.as_mut().poll(&mut cx).is_pending(), "nothing queued yet");
                let mut wakes = if held { Wakes::held() } else { Wakes::now() };
                reg.deliver_to_user("u", &out(1), None, &mut wakes);
                reg.deliver_to_user("u", &out(2), None, &mut wakes);
                assert_eq!(woken.seen(), if held { vec![] } else { vec![1] }, "held: not woken at the pushes");
                wakes.release();
                assert_eq!(woken.seen(), if held { vec![2] } else { vec![1] }, "one wake-up (held: with both)");
                assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(Next::Frames));
            }
            assert_eq!(buf.iter().map(|o| o.link.unwrap().id).collect::<Vec<_>>(), [1, 2]);
        }
    }

    /// Dropping held wake-ups wakes what they held (no path forgets a session's wake-up), and an outbox that
    /// overflows under held wake-ups is woken too, to apply its policy.
    #[test]
    fn dropped_held_wake_ups_still_wake_their_sessions() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 1, QueueFullPolicy::Close);
        let woken = Wakeups::of(&r.handle);
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = Vec::new();
        let mut next = std::pin::pin!(r.handle.outbox.next(&mut buf, false));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        let mut wakes = Wakes::held();
        assert_eq!(reg.deliver_to_user("u", &out(1), None, &mut wakes).written, 1);
        assert_eq!(reg.deliver_to_user("u", &out(2), None, &mut wakes).overflowed, 1);
        assert!(woken.seen().is_empty());
        drop(wakes);
        assert_eq!(woken.seen().len(), 1);
        assert_eq!(next.as_mut().poll(&mut cx), std::task::Poll::Ready(Next::Close(CloseReason::Lagged)));
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_session() {
        let reg = Registry::new();
        let r = reg_user(&reg, "u", 4, QueueFullPolicy::Close);
        let h = r.handle.clone();
        let waiter = tokio::spawn(async move { h.outbox.next(&mut Vec::new(), true).await });
        tokio::task::yield_now().await;
        reg.close_all(CloseReason::Shutdown);
        assert_eq!(waiter.await.unwrap(), Next::Close(CloseReason::Shutdown));
    }
}
