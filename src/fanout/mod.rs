//! Fan-out: hand committed notifications and read-state changes to every session that should see them.
//!
//! "Cluster = local + transport": [`Fanout`] always delivers to this node's [`Registry`]; a [`Transport`]
//! (Redis pub/sub, when configured) carries the same message to the other nodes, which deliver it locally.
//!
//! Invariants: a message is serialised once before it gets here and every recipient shares the bytes;
//! fan-out never awaits and never blocks on a slow session (see the registry's queue-full policy).

pub mod redis;

pub use crate::registry::Wakes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;

use crate::protocol::{Chain, CountsAt, ServerFrame};
use crate::registry::{Link, Outgoing, Registry, ResyncReason, Sent};
use crate::trace::{Delivered, Recorder};

/// What travels to sessions (and, with a transport, between nodes).
#[derive(Debug, Clone)]
pub enum Message {
    /// A new notification. `user: None` is a broadcast. `version`: a targeted one's place among its user's commits
    /// (as for `UserFrame`; 0: unordered), so a session that already sent a newer state change replays it from
    /// the inbox, with its state as of now, instead of sending it as it was committed (see [`Outgoing::late`]).
    Notification { user: Option<Arc<str>>, id: i64, prev_id: i64, frame: Utf8Bytes, ingested_at: Instant, version: u64 },
    /// A read/read_all/deleted frame for one user's other sessions. `version`: its commit's place among the
    /// user's commits (the counts version that commit wrote; 0: unordered), see [`Outgoing::state_version`].
    /// `up_to`: a `read_all`'s or `seen_all`'s, which covers every notification up to it (0: none), see
    /// [`Outgoing::covers`].
    UserFrame { user: Arc<str>, frame: Utf8Bytes, skip_session: Option<u64>, version: u64, up_to: i64 },
    /// One user's counts as of a commit, with the newest broadcast id they include and their version. Each
    /// session sends it as a `counts` frame unless it has newer ones, and derives later broadcasts' counts from it
    /// in memory.
    Counts { user: Arc<str>, at: CountsAt },
    /// A live-only event (never stored): to one user's sessions, or (`user: None`) to everyone's.
    Live { user: Option<Arc<str>>, frame: Utf8Bytes },
    /// Messages between nodes were dropped (a full transport queue): every session replays from the inbox.
    Lost,
    /// The rules were reloaded on one node (the admin endpoint): every other node reloads its rules file. Nothing
    /// to deliver; the transport hands it to the hook it was started with.
    ReloadRules,
}

/// Carries messages to other nodes. Implementations must not block.
pub trait Transport: Send + Sync + 'static {
    fn publish(&self, message: &Message);
}

#[derive(Clone)]
pub struct Fanout {
    registry: Registry,
    transport: Option<Arc<dyn Transport>>,
    /// Records each notification's delivery on this node (the trace's `delivered` steps).
    trace: Recorder,
}

impl Fanout {
    /// Single node: deliver to local sessions only.
    pub fn local(registry: Registry) -> Self {
        Fanout { registry, transport: None, trace: Recorder::default() }
    }

    pub fn with_transport(registry: Registry, transport: Arc<dyn Transport>) -> Self {
        Fanout { registry, transport: Some(transport), trace: Recorder::default() }
    }

    /// Record each notification's delivery on this node with `trace`.
    pub fn traced(mut self, trace: Recorder) -> Self {
        self.trace = trace;
        self
    }

    /// Deliver everywhere: this node's sessions and, through the transport, every other node's; each local
    /// session is woken now.
    pub fn publish(&self, message: Message) {
        self.publish_with(message, &mut Wakes::now());
    }

    /// [`Fanout::publish`], waking this node's sessions through `wakes`.
    pub fn publish_with(&self, message: Message, wakes: &mut Wakes) {
        if let Some(t) = &self.transport {
            t.publish(&message);
        }
        self.deliver_local(&message, wakes);
    }

    /// Deliver to this node's sessions only (also what a transport calls for messages from other nodes).
    pub fn deliver_local(&self, message: &Message, wakes: &mut Wakes) -> usize {
        match message {
            Message::Notification { user, id, prev_id, frame, ingested_at, version } => {
                let chain = if user.is_some() { Chain::Targeted } else { Chain::Broadcast };
                let link = Link { chain, id: *id, prev_id: *prev_id };
                let mut out = Outgoing::new(Some(link), frame.clone(), Some(*ingested_at));
                out.state_version = *version;
                let sent = match user {
                    Some(u) => self.registry.deliver_to_user(u, &out, None, wakes),
                    None => self.registry.deliver_to_all(&out, wakes),
                };
                let Sent { sessions, written, overflowed, closed } = sent;
                self.trace.delivered(*id, user.as_deref(), Delivered { sessions, written, overflowed, closed });
                written
            }
            Message::UserFrame { user, frame, skip_session, version, up_to } => {
                let mut out = Outgoing::new(None, frame.clone(), None);
                out.state_version = *version;
                out.covers = *up_to;
                self.registry.deliver_to_user(user, &out, *skip_session, wakes).written
            }
            Message::Counts { user, at } => {
                if !self.registry.is_online(user) {
                    return 0;
                }
                let frame = ServerFrame::Counts { unread: at.counts.unread, unseen: at.counts.unseen }.encode();
                let mut out = Outgoing::new(None, frame, None);
                out.counts = Some(*at);
                self.registry.deliver_to_user(user, &out, None, wakes).written
            }
            Message::Live { user, frame } => {
                let out = Outgoing::new(None, frame.clone(), None);
                match user {
                    Some(u) => self.registry.deliver_to_user(u, &out, None, wakes).written,
                    None => self.registry.deliver_to_all(&out, wakes).written,
                }
            }
            Message::Lost => {
                self.registry.resync_all(ResyncReason::TransportLost);
                0
            }
            Message::ReloadRules => 0,
        }
    }

    /// Whether messages also go to other nodes (where frames of two nodes' commits can cross).
    pub fn has_transport(&self) -> bool {
        self.transport.is_some()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The trace recorder (the commit listener records a muted notification, which never reaches fan-out).
    pub fn trace(&self) -> &Recorder {
        &self.trace
    }
}
