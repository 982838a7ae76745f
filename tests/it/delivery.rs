//! Delivery positions and session robustness on one node: a cursor per chain, a clamped `since`, a slow store
//! that stalls nobody, the per-user session cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use herald::inbox::instrumented::{Instrumented, Read};
use serde_json::{json, Value};

use crate::support::*;

/// Store one notification for `user` (or a broadcast when `user` is "system"); returns its id.
async fn notify(gw: &Gateway, user: &str, title: &str) -> i64 {
    let body = json!({"user_id": user, "title": title, "message": "m", "type": "info"});
    let resp = gw.post_event("sgad.notifications", "", &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

/// Notification ids up to the `replayed` frame, and that frame.
async fn replay_of(c: &mut Client) -> (Vec<i64>, Value) {
    let mut ids = Vec::new();
    loop {
        let f = c.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => ids.push(f["notification"]["id"].as_i64().unwrap()),
            "replayed" => return (ids, f),
            other => panic!("unexpected {other} frame during a replay: {f}"),
        }
    }
}

#[tokio::test]
async fn a_client_resumes_each_chain_from_its_own_cursor() {
    let gw = spawn_gateway().await;
    let user = "chains";
    let t = notify(&gw, user, "targeted").await;
    let x = notify(&gw, "system", "broadcast").await;
    assert!(t < x);

    // Got the (newer) broadcast but not the targeted one: exactly the targeted one comes back.
    let mut c = gw.connect_with(user, &format!("&since={}&since_broadcast={x}", t - 1)).await;
    let (ids, replayed) = replay_of(&mut c).await;
    assert_eq!(ids, vec![t]);
    assert_eq!((replayed["up_to_targeted"].as_i64(), replayed["up_to_broadcast"].as_i64()), (Some(t), Some(x)));
    drop(c);

    // And the other way round.
    let mut c = gw.connect_with(user, &format!("&since={t}&since_broadcast={}", x - 1)).await;
    assert_eq!(replay_of(&mut c).await.0, vec![x]);
    drop(c);

    // A v1 client's single `since` stands for both chains.
    let mut c = gw.connect_with(user, &format!("&since={}", t - 1)).await;
    assert_eq!(replay_of(&mut c).await.0, vec![t, x]);
}

#[tokio::test]
async fn ready_reports_the_newest_id_of_each_chain() {
    let gw = spawn_gateway().await;
    let t = notify(&gw, "heads", "targeted").await;
    let x = notify(&gw, "system", "broadcast").await;
    let url = format!("ws://{}/ws/heads?token={}", gw.addr, gw.token("heads"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let ready = Client { ws }.frame().await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["latest_targeted_id"], t);
    assert_eq!(ready["latest_broadcast_id"], x);
    assert_eq!(ready["latest_id"], x);
}

#[tokio::test]
async fn a_since_above_the_newest_id_is_clamped_so_later_frames_still_arrive() {
    let gw = spawn_gateway().await;
    let user = "from-the-future";
    let t = notify(&gw, user, "before").await;
    let mut c = gw.connect_with(user, "&since=999999999&since_broadcast=999999999").await;
    let (ids, replayed) = replay_of(&mut c).await;
    assert!(ids.is_empty());
    assert_eq!(replayed["up_to_targeted"], t, "the cursor is clamped to the newest id that exists");
    let later = notify(&gw, user, "after").await;
    let live = c.notification().await;
    assert_eq!(live["notification"]["id"], later, "a live frame after a too-high since is delivered");

    // The same over `resume` on an open socket.
    c.send_text(r#"{"type":"resume","since":999999999}"#).await;
    let (ids, replayed) = replay_of(&mut c).await;
    assert!(ids.is_empty());
    assert_eq!(replayed["up_to_targeted"], later);
    let again = notify(&gw, user, "after resume").await;
    assert_eq!(c.notification().await["notification"]["id"], again);
}

/// A store whose replay reads for `slow_user` take `delay`; everything else is untouched.
fn slow_replays_for(slow_user: &'static str, delay: Duration) -> herald::Hooks {
    let hook = Arc::new(move |read: Read, user: &str| -> BoxFuture<'static, ()> {
        let slow = read == Read::After && user == slow_user;
        Box::pin(async move {
            if slow {
                tokio::time::sleep(delay).await;
            }
        })
    });
    herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) }
}

/// Retention that prunes what a replay had not reached yet, between two of its pages, is announced: `truncated`
/// before the rest, rather than the pruned ids skipped silently (each page reads the floor in its own snapshot;
/// without that, the replay read the floor once, before its first page, and went on from below it).
#[tokio::test]
async fn retention_pruning_between_the_pages_of_a_replay_is_announced_truncated() {
    use herald::inbox::Store;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    let user = "pruned-mid-replay";
    let inner: Arc<OnceLock<Arc<dyn Store>>> = Arc::default();
    let reads = Arc::new(AtomicUsize::new(0));
    let hook = {
        let inner = inner.clone();
        Arc::new(move |read: Read, who: &str| -> BoxFuture<'static, ()> {
            // The replay's second page read: retention runs first (keeping the newest 5).
            let prune = read == Read::After && who == user && reads.fetch_add(1, Ordering::SeqCst) == 1;
            let store = inner.get().cloned();
            Box::pin(async move {
                if let (true, Some(store)) = (prune, store) {
                    let report = store.prune(chrono::Utc::now()).await.unwrap();
                    assert!(report.notifications > 0, "retention pruned: {report:?}");
                }
            })
        })
    };
    let hooks = herald::Hooks {
        wrap_store: Some(Box::new(move |store| {
            let _ = inner.set(store.clone());
            Arc::new(Instrumented::new(store, hook))
        })),
    };
    let gw = spawn_gateway_hooked(
        |s| {
            s.store.max_per_user = 5;
            s.store.prune_interval_secs = 3600;
            s.websocket.replay_page_size = 2;
        },
        hooks,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(notify(&gw, user, &format!("n{i}")).await);
    }

    let mut c = gw.connect_with(user, &format!("&since={}", ids[0] - 1)).await;
    let mut got = Vec::new();
    let truncated = loop {
        let f = c.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => got.push(f["notification"]["id"].as_i64().unwrap()),
            "truncated" => break f,
            other => panic!("unexpected {other} frame before `truncated` (got {got:?}): {f}"),
        }
    };
    assert_eq!(got, ids[..2], "the first page went out before retention ran");
    assert_eq!(
        (truncated["since"].as_i64(), truncated["oldest_id"].as_i64()),
        (Some(ids[1]), Some(ids[7])),
        "{truncated}"
    );
    let (rest, replayed) = replay_of(&mut c).await;
    assert_eq!(rest, ids[7..], "what retention kept follows");
    assert_eq!(replayed["up_to_targeted"], ids[11]);
}

#[tokio::test]
async fn a_slow_store_read_stalls_neither_this_sessions_pings_nor_other_sessions() {
    let gw = spawn_gateway_hooked(|_| {}, slow_replays_for("slow", Duration::from_secs(3))).await;
    let first = notify(&gw, "slow", "missed").await;
    let mut fast = gw.connect("fast").await;

    let mut slow = gw.connect_with("slow", &format!("&since={}", first - 1)).await;
    let asked = Instant::now();
    // The replay read hangs for 3 s; meanwhile this session answers a ping at once…
    slow.send_text("ping").await;
    assert_eq!(slow.frame().await["type"], "pong", "a pong, not the replay, comes first");
    assert!(asked.elapsed() < Duration::from_secs(2), "the pong did not wait for the store");
    // …and another user's live notification is delivered at once.
    let id = notify(&gw, "fast", "live").await;
    assert_eq!(fast.notification().await["notification"]["id"], id);
    assert!(asked.elapsed() < Duration::from_secs(2), "other sessions did not wait for the store");
    // Then the replay completes on the same socket: no false close.
    let (ids, _) = replay_of(&mut slow).await;
    assert_eq!(ids, vec![first]);
    slow.send_text("ping").await;
    assert_eq!(slow.frame().await["type"], "pong");
}

#[tokio::test]
async fn a_store_read_past_the_session_timeout_closes_with_1013() {
    let gw =
        spawn_gateway_hooked(|s| s.websocket.store_timeout_secs = 1, slow_replays_for("stuck", Duration::from_secs(5)))
            .await;
    let mut c = gw.connect_with("stuck", "&since=0").await;
    assert_eq!(c.closed().await, 1013);
}

#[tokio::test]
async fn a_user_over_the_session_cap_is_closed_with_4029() {
    let gw = spawn_gateway_with(|s| s.websocket.max_sessions_per_user = 2).await;
    let _a = gw.connect("capped").await;
    let _b = gw.connect("capped").await;
    let url = format!("ws://{}/ws/capped?token={}", gw.addr, gw.token("capped"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(Client { ws }.closed().await, 4029);
    // Other users are not affected by this user's cap.
    let _c = gw.connect("someone-else").await;
}

/// A gateway keeping `kept` notifications per user (and `configure`d further), and the ids of `stored` stored for
/// `user`, once retention has pruned the oldest.
async fn stored_then_pruned(
    user: &str,
    stored: usize,
    kept: u64,
    configure: impl FnOnce(&mut herald::config::Settings),
) -> (Gateway, Vec<i64>) {
    let gw = spawn_gateway_with(|s| {
        s.store.max_per_user = kept;
        s.store.prune_interval_secs = 1;
        configure(s);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..stored {
        ids.push(notify(&gw, user, &format!("n{i}")).await);
    }
    eventually("the retention task pruning", Duration::from_secs(20), async || {
        (gw.inbox(user).await["items"].as_array().unwrap().len() <= kept as usize).then_some(())
    })
    .await;
    (gw, ids)
}

/// Five stored, the first three pruned.
async fn five_with_three_pruned(user: &str) -> (Gateway, Vec<i64>) {
    stored_then_pruned(user, 5, 2, |_| {}).await
}

#[tokio::test]
async fn a_resume_from_below_the_retained_history_is_told_it_was_truncated() {
    let (gw, ids) = five_with_three_pruned("pruned").await;
    let user = "pruned";
    // The client last saw the first one; the next two were pruned before it came back.
    let mut c = gw.connect_with(user, &format!("&since={}&since_broadcast=0", ids[0])).await;
    let truncated = c.frame().await;
    assert_eq!(truncated["type"], "truncated", "{truncated}");
    assert_eq!(truncated["since"], ids[0]);
    assert_eq!(truncated["oldest_id"], ids[2] + 1, "ids up to the third were pruned");
    let (replayed, _) = replay_of(&mut c).await;
    assert_eq!(replayed, vec![ids[3], ids[4]], "then what is kept, in order");

    // A client that missed nothing pruned gets no such frame.
    let mut c = gw.connect_with(user, &format!("&since={}&since_broadcast=0", ids[3])).await;
    assert_eq!(replay_of(&mut c).await.0, vec![ids[4]]);
}

/// A replay page ends at `websocket.replay_page_bytes` as well as at its rows: here every page holds one
/// notification, and the session reads on from each until the inbox has no more, so the client gets all of
/// them, in order, then `replayed`. (Read as "fewer rows than replay_page_size: the last page", it would stop
/// after the first.)
#[tokio::test]
async fn a_replay_cut_by_its_bytes_reads_on_and_delivers_everything_in_order() {
    let user = "paged-by-bytes";
    let gw = spawn_gateway_with(|s| s.websocket.replay_page_bytes = 1).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(notify(&gw, user, &format!("n{i}")).await);
    }
    let mut c = gw.connect_with(user, "&since=0&since_broadcast=0").await;
    let (replayed, end) = replay_of(&mut c).await;
    assert_eq!(replayed, ids, "every notification once, oldest first");
    assert_eq!(end["up_to_targeted"], ids[5]);
}

/// A `resume` that arrives while a replay is still running gets a replay of its own once that one ends: its own
/// `truncated` (it reaches below the retained history) and its own `replayed`. Before, it was folded into the
/// running replay, which announced neither for it.
#[tokio::test]
async fn a_resume_sent_during_a_replay_is_answered_with_its_own_truncated_and_replayed() {
    let user = "resumed-twice";
    // One notification per page: the replay below lasts thirty store reads.
    let (gw, ids) = stored_then_pruned(user, 40, 30, |s| s.websocket.replay_page_size = 1).await;
    let mut c = gw.connect_with(user, &format!("&since={}&since_broadcast=0", ids[0])).await;
    let truncated = c.frame().await;
    assert_eq!(truncated["type"], "truncated", "{truncated}");
    // Sent as the replay of the thirty kept starts.
    c.send_text(&json!({"type": "resume", "since": ids[0], "since_broadcast": 0}).to_string()).await;
    let (replayed, _) = replay_of(&mut c).await;
    assert_eq!(replayed, ids[10..].to_vec(), "the URL's replay: what is kept, in order");
    let truncated = c.frame().await;
    assert_eq!(truncated["type"], "truncated", "the resume's own: {truncated}");
    assert_eq!((truncated["since"].as_i64(), truncated["oldest_id"].as_i64()), (Some(ids[0]), Some(ids[9] + 1)));
    let (replayed, end) = replay_of(&mut c).await;
    assert_eq!(replayed, Vec::<i64>::new(), "nothing this socket already delivered");
    assert_eq!(end["up_to_targeted"], ids[39]);
}

/// A `resume` a client sends the moment its socket opens (here in the same TCP write as the handshake, so it
/// arrives while the session's opening read, started without `since`, is running) is one on the open socket: told
/// what was pruned, and not reaching below where the socket started. Before, it took the URL's `since`'s place
/// (8 runs in 10 this way): the opening read had not looked up the floor, and the replay began there silently.
#[tokio::test]
async fn a_resume_sent_with_the_handshake_from_below_the_retained_history_is_told_it_was_truncated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::{tungstenite::protocol::Role, MaybeTlsStream, WebSocketStream};
    let (gw, ids) = five_with_three_pruned("pruned-early").await;
    let user = "pruned-early";
    for _ in 0..5 {
        let resume = json!({"type": "resume", "since": ids[0], "since_broadcast": 0}).to_string();
        // A masked text frame with a zero mask: the payload as it is.
        let mut frame = vec![0x81, 0x80 | resume.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(resume.as_bytes());
        let mut request = format!(
            "GET /ws/{user}?token={} HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            gw.token(user)
        )
        .into_bytes();
        request.extend_from_slice(&frame);
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(&request).await.unwrap();
        // The handshake's answer, byte by byte so no frame after it is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let ws = WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(tcp), Role::Client, None).await;
        let mut c = Client { ws };
        assert_eq!(c.frame().await["type"], "ready");
        let truncated = c.frame().await;
        assert_eq!(truncated["type"], "truncated", "{truncated}");
        assert_eq!(truncated["oldest_id"], ids[2] + 1);
        let (replayed, _) = replay_of(&mut c).await;
        assert_eq!(replayed, Vec::<i64>::new(), "a socket opened without `since` starts at the newest");
    }
}

/// Each `resume` is a read of the store, whose read connections every session's replays share: a socket
/// sending them in a loop (an attacker's 224,000 in 3 s) is refused past 30 a minute (`rate_limited`, and the
/// session goes on), then closed with 1008 as any flood of bad messages is.
#[tokio::test]
async fn a_socket_resuming_in_a_loop_is_refused_past_thirty_a_minute_and_then_closed() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("resumer").await;
    let resume = json!({"type": "resume", "since": 0, "since_broadcast": 0}).to_string();
    for i in 0..30 {
        c.send_text(&resume).await;
        let (_, end) = replay_of(&mut c).await;
        assert_eq!(end["type"], "replayed", "resume {i}");
    }
    c.send_text(&resume).await;
    let refused = c.frame().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{refused}"
    );
    // Still open: a ping is answered.
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.frame().await["type"], "pong");
    for _ in 0..10 {
        c.send_text(&resume).await;
    }
    assert_eq!(c.closed().await, 1008, "the eleventh refusal in the minute closes");
}

/// A `resume` is one of the user's reads too, shared by all the user's sockets and the REST inbox: a user whose
/// many sockets each stay under the per-socket limit still replays no faster than the user may read. Past the
/// budget a resume is an `error` frame (`rate_limited`), not replayed, and the session goes on (however many: the
/// budget is the user's, not this socket's bad messages).
#[tokio::test]
async fn resumes_spend_the_users_reads_across_all_their_sockets() {
    let gw = spawn_gateway_with(|s| {
        s.server.user_reads_per_second = 1;
        s.server.user_reads_burst = 3;
    })
    .await;
    // Two sessions open: two reads of the burst's three.
    let (mut a, mut b) = (gw.connect("reader").await, gw.connect("reader").await);
    let resume = json!({"type": "resume", "since": 0, "since_broadcast": 0}).to_string();
    a.send_text(&resume).await;
    assert_eq!(replay_of(&mut a).await.1["type"], "replayed", "the third read");
    // B's own socket has resumed nothing: its refusal is the user's budget. (One read a second comes back: a
    // slow machine may replay a few more before the refusal, never eight.)
    let mut refused = None;
    for _ in 0..8 {
        b.send_text(&resume).await;
        let first = b.frame().await;
        if first["type"] == "error" {
            refused = Some(first);
            break;
        }
        if first["type"] != "replayed" {
            replay_of(&mut b).await;
        }
    }
    let refused = refused.expect("a resume past the user's reads is refused");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("user_reads_per_second"), "{refused}");
    // Refusals of the user's budget are not this socket's bad messages: more than ten do not close it.
    for _ in 0..12 {
        b.send_text(&resume).await;
        let first = b.frame().await;
        if first["type"] != "error" && first["type"] != "replayed" {
            replay_of(&mut b).await;
        }
    }
    b.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(b.frame().await["type"], "pong", "the session goes on");
    // Another user's budget is their own.
    let mut other = gw.connect("someone-else").await;
    other.send_text(&resume).await;
    assert_eq!(replay_of(&mut other).await.1["type"], "replayed");
}

/// A session opens with a read of the store: one of the user's reads (`server.user_reads_per_second`), so a
/// reconnect loop is refused with `429 rate_limited` and `Retry-After` as a REST reader would be.
#[tokio::test]
async fn opening_sessions_in_a_loop_is_refused_with_429_like_any_other_read_of_the_inbox() {
    let gw = spawn_gateway_with(|s| {
        s.server.user_reads_per_second = 1;
        s.server.user_reads_burst = 3;
    })
    .await;
    for _ in 0..3 {
        drop(gw.connect("looper").await);
    }
    let (status, body) = gw.refused(gw.ws_request(&format!("/ws/looper?token={}", gw.token("looper")))).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{body}");
    // Another user is not held back.
    drop(gw.connect("someone-else").await);
}
