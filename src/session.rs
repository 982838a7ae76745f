//! Sessions: one task per WebSocket connection.
//!
//! The task registers with the [`Registry`], sends `ready`, replays from the inbox when asked (`since`), then
//! loops over: queued frames → socket, client messages, server pings / idle check, token expiry, shutdown.
//!
//! Invariants:
//! - Per user, frames leave in id order, once: the session registers *before* it reads the replay, and drops
//!   live frames whose id it already sent, so there is no gap and no duplicate at the replay/live seam.
//! - The socket is never split: one task, one small future, small buffers (an idle session is a few KiB).
//! - A stalled client never delays anyone else: its outbox overflows into a 4008 close, and a write that takes
//!   longer than `write_timeout` ends the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Principal};
use crate::config::WebSocketSettings;
use crate::inbox::Store;
use crate::protocol::{encode_notification_frame, ClientMessage, ServerFrame};
use crate::registry::{CloseReason, Next, Outgoing, Registry, ResyncReason};

/// What every session needs, shared.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub auth: Arc<Authenticator>,
    pub settings: Arc<WebSocketSettings>,
    pub shutdown: CancellationToken,
}

/// Per connection: who, from where in the inbox, and until when the token is good.
pub struct SessionParams {
    pub user: String,
    pub since: Option<i64>,
    pub expires_at: i64,
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

const MAX_BAD_MESSAGES: u32 = 10;

pub async fn run(socket: WebSocket, deps: SessionDeps, params: SessionParams) {
    metrics::counter!("herald_sessions_opened_total").increment(1);
    metrics::gauge!("herald_connections").increment(1.0);
    let ended = Session::new(socket, &deps, params).run().await;
    metrics::gauge!("herald_connections").decrement(1.0);
    metrics::counter!("herald_sessions_closed_total", "reason" => ended.label()).increment(1);
}

struct Session<'a> {
    socket: WebSocket,
    deps: &'a SessionDeps,
    user: String,
    since: Option<i64>,
    expires_at: i64,
    /// Highest notification id sent on this socket (0 until a replay sets it).
    last_sent: i64,
    last_heard: Instant,
    bad_messages: u32,
}

impl<'a> Session<'a> {
    fn new(socket: WebSocket, deps: &'a SessionDeps, p: SessionParams) -> Self {
        Session {
            socket,
            deps,
            user: p.user,
            since: p.since,
            expires_at: p.expires_at,
            last_sent: 0,
            last_heard: Instant::now(),
            bad_messages: 0,
        }
    }

    async fn run(mut self) -> Ended {
        let s = self.deps.settings.clone();
        // Register first: whatever commits from now on is queued, and the replay below sees the rest.
        let registration = self.deps.registry.register(&self.user, s.outbound_queue, s.queue_full_policy);
        let outbox = &registration.handle.outbox;
        let session_id = format!("s-{:x}", registration.handle.id);

        let latest_id = match self.deps.store.latest_id(&self.user).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable while opening a session");
                return self.close(CloseReason::Internal).await;
            }
        };
        let ready = ServerFrame::Ready {
            session_id: &session_id,
            user_id: &self.user,
            latest_id,
            ping_interval_ms: s.ping_interval_secs * 1000,
        };
        if let Err(ended) = self.send_now(ready.encode()).await {
            return ended;
        }
        match self.since {
            Some(since) => {
                if let Err(ended) = self.replay(since).await {
                    return ended;
                }
            }
            // Without `since`, the session starts at `latest_id`: older notifications are history (REST), and a
            // frame for one of them that raced the opening is not pushed twice.
            None => self.last_sent = latest_id,
        }

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
            tokio::select! {
                biased;
                _ = self.deps.shutdown.cancelled() => return self.close(CloseReason::Shutdown).await,
                next = outbox.next(&mut batch) => {
                    let step = match next {
                        Next::Close(reason) => return self.close(reason).await,
                        Next::Frames => self.flush(&mut batch).await,
                        Next::Resync(ResyncReason::Subscribed) => self.catch_up().await,
                        Next::Resync(reason @ ResyncReason::TransportLost) => self.resync(reason).await,
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
                        None | Some(Ok(WsMessage::Close(_))) => return Ended::ClientClosed,
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
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= idle_after {
                        return self.close(CloseReason::Idle).await;
                    }
                    if let Err(ended) = self.send_now_msg(WsMessage::Ping(Default::default())).await {
                        return ended;
                    }
                }
                _ = &mut warning, if !warned => {
                    warned = true;
                    let frame = ServerFrame::TokenExpiring { expires_at: self.expires_at };
                    if let Err(ended) = self.send_now(frame.encode()).await {
                        return ended;
                    }
                }
                _ = &mut expiry => return self.close(CloseReason::TokenExpired).await,
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

    /// Announce a resync, then replay after the last id this socket delivered.
    async fn resync(&mut self, reason: ResyncReason) -> Result<(), Ended> {
        metrics::counter!("herald_session_resyncs_total", "reason" => reason.label()).increment(1);
        let since = self.last_sent;
        self.send_now(ServerFrame::Resync { reason: reason.label(), since }.encode()).await?;
        self.replay(since).await
    }

    /// Silently send whatever committed after the last id this socket delivered (usually nothing).
    async fn catch_up(&mut self) -> Result<(), Ended> {
        let page = self.deps.settings.replay_page_size;
        let items = match self.deps.store.after(&self.user, self.last_sent, page).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable during a catch-up");
                return Err(self.close(CloseReason::Internal).await);
            }
        };
        if items.len() == page as usize {
            // More than a page behind: do it properly, announced.
            return self.resync(ResyncReason::Subscribed).await;
        }
        for r in items {
            self.last_sent = r.notification.id;
            self.send_now(encode_notification_frame(&r.notification, &r.body)).await?;
        }
        Ok(())
    }

    /// Send queued frames in one write, skipping notifications already sent by a replay.
    async fn flush(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Ended> {
        let timeout = Duration::from_secs(self.deps.settings.write_timeout_secs);
        let result = tokio::time::timeout(timeout, self.write_batch(batch)).await;
        batch.clear();
        result.unwrap_or(Err(Ended::WriteTimeout))
    }

    async fn write_batch(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), Ended> {
        let now = Instant::now();
        let mut delivered = 0u64;
        for out in batch.drain(..) {
            if out.id != 0 {
                if out.id <= self.last_sent {
                    continue;
                }
                if out.prev_id > self.last_sent {
                    // This frame overtook an earlier one (another node's, still on its way over Redis): send
                    // what the inbox has after our last id first, in order; the late frame is then skipped.
                    self.socket.flush().await.map_err(|_| Ended::Transport)?;
                    metrics::counter!("herald_session_gap_fills_total").increment(1);
                    self.catch_up().await?;
                    if out.id <= self.last_sent {
                        continue;
                    }
                }
                self.last_sent = out.id;
                delivered += 1;
                if let Some(t) = out.ingested_at {
                    metrics::histogram!("herald_delivery_latency_seconds")
                        .record(now.saturating_duration_since(t).as_secs_f64());
                }
            }
            self.socket.feed(WsMessage::Text(out.frame)).await.map_err(|_| Ended::Transport)?;
        }
        metrics::counter!("herald_notifications_delivered_total").increment(delivered);
        self.socket.flush().await.map_err(|_| Ended::Transport)
    }

    async fn on_text(&mut self, text: &Utf8Bytes) -> Result<(), Ended> {
        match ClientMessage::parse(text.as_str()) {
            Ok(ClientMessage::Ping) => self.send_now(ServerFrame::Pong.encode()).await,
            Ok(ClientMessage::Resume { since }) => self.replay(since).await,
            Ok(ClientMessage::Auth { token }) => match self.deps.auth.verify_user(&token) {
                Ok(Principal::User { id, expires_at }) if id == self.user => {
                    self.expires_at = expires_at;
                    self.send_now(ServerFrame::AuthOk { expires_at }.encode()).await
                }
                Ok(_) => self.send_error("auth_rejected", "the token is for another user").await,
                Err(e) => self.send_error("auth_rejected", &e.to_string()).await,
            },
            Err(e) => {
                self.bad_messages += 1;
                if self.bad_messages > MAX_BAD_MESSAGES {
                    let _ = self.close_with(1008, "too many bad messages").await;
                    return Err(Ended::BadMessages);
                }
                self.send_error("bad_message", &e.to_string()).await
            }
        }
    }

    /// Replay every notification after `since` from the inbox, page by page, then `replayed`.
    async fn replay(&mut self, since: i64) -> Result<(), Ended> {
        let page = self.deps.settings.replay_page_size;
        let mut cursor = since.max(self.last_sent);
        loop {
            let items = match self.deps.store.after(&self.user, cursor, page).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, "store unavailable during a replay");
                    return Err(self.close(CloseReason::Internal).await);
                }
            };
            let n = items.len();
            for r in items {
                cursor = r.notification.id;
                self.socket
                    .feed(WsMessage::Text(encode_notification_frame(&r.notification, &r.body)))
                    .await
                    .map_err(|_| Ended::Transport)?;
            }
            metrics::counter!("herald_notifications_replayed_total").increment(n as u64);
            if n < page as usize {
                break;
            }
            // Flush between pages: a client that was away for a week gets a stream, not one burst.
            self.socket.flush().await.map_err(|_| Ended::Transport)?;
        }
        self.last_sent = self.last_sent.max(cursor);
        self.send_now(ServerFrame::Replayed { up_to: cursor }.encode()).await
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
        let _ = self.close_with(reason.code(), reason.label()).await;
        Ended::Server(reason)
    }

    async fn close_with(&mut self, code: u16, reason: &'static str) -> Result<(), Ended> {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        self.send_now_msg(WsMessage::Close(Some(frame))).await
    }
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
