//! No gaps: resume from the inbox, per-user order, slow clients resync, token lifetime.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// POST `n` events in arrays of `chunk`; every `broadcast_every`-th is a broadcast. Returns the stored ids.
async fn post_many(gw: &Gateway, user: &str, n: usize, chunk: usize, broadcast_every: usize, tag: &str) -> Vec<i64> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let to = if broadcast_every > 0 && i % broadcast_every == broadcast_every - 1 { "system" } else { user };
            json!({"user_id": to, "title": format!("{tag}-{i}"), "message": "m", "type": "info"})
        })
        .collect();
    post_chunks(gw, &events, chunk).await
}

/// ~8 MiB of notifications for `user` (64 of 128 KiB, 8 per request): far more than the socket buffers hold, so
/// the outbox of a session that reads nothing overflows however fast the session drains it into its socket.
async fn post_heavy(gw: &Gateway, user: &str) -> Vec<i64> {
    let pad = "x".repeat(128 * 1024);
    let events: Vec<Value> = (0..64)
        .map(|i| json!({"user_id": user, "title": format!("heavy-{i}"), "message": pad, "type": "info"}))
        .collect();
    post_chunks(gw, &events, 8).await
}

/// Post `events` `chunk` per request (each answered 202); the notification ids, in order.
async fn post_chunks(gw: &Gateway, events: &[Value], chunk: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(events.len());
    for part in events.chunks(chunk) {
        let resp = gw.post_event("sgad.notifications", "", &json!(part)).await;
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        for r in body["results"].as_array().unwrap() {
            ids.push(r["notification_ids"][0].as_i64().unwrap());
        }
    }
    ids
}

/// Read notification frames until `want` distinct ids arrived; check order, no duplicates, and the prev_id chain.
async fn collect(c: &mut Client, want: usize, mut last: i64) -> (Vec<i64>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut control = Vec::new();
    while ids.len() < want {
        let f = c.frame().await;
        if f["type"] != "notification" {
            control.push(f);
            continue;
        }
        let n = &f["notification"];
        let id = n["id"].as_i64().unwrap();
        assert!(id > last, "ids arrive in order, once: {id} after {last}");
        assert!(n["prev_id"].as_i64().unwrap() <= last, "no gap before {id}: prev_id {} > last {last}", n["prev_id"]);
        last = id;
        ids.push(id);
    }
    (ids, control)
}

#[tokio::test]
async fn reconnecting_with_since_while_more_arrive_live_receives_exactly_everything_in_order_once() {
    let gw = spawn_gateway().await;
    let user = "resumer";
    let mut c = gw.connect(user).await;
    let first = post_many(&gw, user, 1, 1, 0, "seen").await;
    assert_eq!(c.notification().await["notification"]["id"], first[0]);
    drop(c); // the client goes away…

    let missed = post_many(&gw, user, 1000, 100, 10, "missed").await; // …1,000 arrive meanwhile, 100 broadcasts
    let live = {
        let mut c = gw.connect_with(user, &format!("&since={}", first[0])).await;
        // 1,000 more arrive while the replay runs.
        let (live_ids, frames) =
            tokio::join!(post_many(&gw, user, 1000, 50, 10, "live"), collect(&mut c, 2000, first[0]));
        let (got, control) = frames;
        let mut expected: Vec<i64> = missed.iter().chain(live_ids.iter()).copied().collect();
        expected.sort_unstable();
        assert_eq!(got, expected, "exactly the 2,000, in position order, none twice");
        assert!(control.iter().any(|f| f["type"] == "replayed"));
        c.silent_for(Duration::from_millis(300)).await;
        live_ids
    };
    assert_eq!(live.len(), 1000);
}

#[tokio::test]
async fn a_stalled_client_does_not_delay_others_then_resyncs_and_holds_everything() {
    let gw = spawn_gateway_with(|s| {
        s.websocket.outbound_queue = 16;
        s.websocket.write_timeout_secs = 120;
        s.server.max_body_bytes = 4 << 20;
    })
    .await;
    // A client with a tiny receive window that does not read: the server's writes to it block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.addr).await.unwrap();
    let url = format!("ws://{}/ws/stalled?token={}", gw.addr, gw.token("stalled"));
    let (ws, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut stalled = Client { ws };

    let mut others = Vec::new();
    for i in 0..1000 {
        others.push(gw.connect(&format!("o{i}")).await);
    }

    let heavy = post_heavy(&gw, "stalled").await;

    // Everyone else still gets a broadcast promptly: all 1,000 receive it while the stalled one has read nothing.
    let resp =
        gw.post_event("sgad.notifications", "", &json!({"user_id": "system", "title": "all", "message": "m"})).await;
    let broadcast = resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap();
    for o in &mut others {
        assert_eq!(o.notification().await["notification"]["id"], broadcast);
    }

    // Now the stalled client reads: what was in flight, a resync marker, the replay, and in the end everything.
    let mut expected: HashSet<i64> = heavy.iter().copied().collect();
    expected.insert(broadcast);
    let mut got = Vec::new();
    let mut saw_resync = false;
    let mut last = 0;
    assert_eq!(stalled.frame().await["type"], "ready");
    while got.len() < expected.len() {
        let f = stalled.frame().await;
        match f["type"].as_str().unwrap() {
            "notification" => {
                let id = f["notification"]["id"].as_i64().unwrap();
                assert!(id > last, "in order, once");
                last = id;
                got.push(id);
            }
            "resync" => {
                saw_resync = true;
                assert_eq!(f["since"], last, "the resync starts right after the last frame delivered");
            }
            _ => {}
        }
    }
    assert!(saw_resync, "the overflow was announced, not silent");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected);
    // And the badge ends exact after the overflow (64 targeted + 1 broadcast, none read): counts frames dropped
    // with the queue are made good by a later commit's counts or by the counts read after `replayed`.
    let total = expected.len() as u64;
    while stalled.counts().await != (total, total) {}
    let metrics = gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("herald_session_resyncs_total"), "counted in metrics");
}

#[tokio::test]
async fn close_policy_closes_a_lagging_session_with_4008() {
    let gw = spawn_gateway_with(|s| {
        s.websocket.outbound_queue = 4;
        s.websocket.queue_full_policy = herald::config::QueueFullPolicy::Close;
        // The close is the overflow's, not a timed-out write's.
        s.websocket.write_timeout_secs = 120;
        s.server.max_body_bytes = 4 << 20;
    })
    .await;
    let mut c = gw.connect("lagger").await;
    // The client reads nothing until it waits for the close: once its socket is full, the session cannot drain
    // its queue of 4 and the next frames overflow it. (A burst of small frames raced the session's draining into
    // the socket and could end without an overflow on a loaded machine.)
    post_heavy(&gw, "lagger").await;
    assert_eq!(c.closed().await, 4008);
}

#[tokio::test]
async fn a_session_is_warned_before_its_token_expires_and_closed_at_expiry_with_4001() {
    let gw = spawn_gateway().await;
    let auth = herald::auth::Authenticator::new(&gw.settings.auth).unwrap();
    let url = format!("ws://{}/ws/u1?token={}", gw.addr, auth.mint("u1", 2).unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    assert_eq!(c.frame().await["type"], "token_expiring");
    assert_eq!(c.closed().await, 4001);

    // At reconnect, the expired token is refused before any session starts: the client must fetch a new one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let short = auth.mint("u1", 1).unwrap();
    tokio::time::sleep(Duration::from_secs(2 + gw.settings.auth.leeway_secs)).await;
    let (status, body) = gw.refused(gw.ws_request(&format!("/ws/u1?token={short}"))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")));
}

/// A client that keeps its socket ready at every pass (pings written faster than the session answers them) is
/// still closed with 4001 when its token expires: the loop took the socket before its timers, so the expiry never
/// won and the session carried on with an expired token. The client is raw TCP, writing prebuilt frames from one
/// task while another reads, so nothing on its side paces the flood (a WebSocket client's halves share a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_its_socket_is_still_closed_when_its_token_expires() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = spawn_gateway().await;
    let auth = herald::auth::Authenticator::new(&gw.settings.auth).unwrap();
    let token = auth.mint("flood", 2).unwrap();
    let expires = std::time::Instant::now() + Duration::from_secs(2);
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let handshake = format!(
        "GET /ws/flood?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let (mut read, mut write) = tcp.into_split();
    // A masked text frame "ping" (a zero mask leaves the payload as is), a thousand to a write.
    let frames: Vec<u8> = [0x81u8, 0x84, 0, 0, 0, 0, b'p', b'i', b'n', b'g'].repeat(1000);
    let flood = tokio::spawn(async move { while write.write_all(&frames).await.is_ok() {} });
    // Read the server's frames (unmasked) until its close frame; its code.
    let code = tokio::time::timeout(Duration::from_secs(15), async move {
        let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 << 10]);
        loop {
            let n = read.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while buf.len() >= at + 2 {
                let (op, len) = (buf[at] & 0x0f, usize::from(buf[at + 1] & 0x7f));
                let (start, len) = match len {
                    126 if buf.len() >= at + 4 => (at + 4, usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]))),
                    126 | 127 => break,
                    len => (at + 2, len),
                };
                if buf.len() < start + len {
                    break;
                }
                if op == 0x8 {
                    return Some(u16::from_be_bytes([buf[start], buf[start + 1]]));
                }
                at = start + len;
            }
            buf.drain(..at);
        }
    })
    .await
    .expect("the session outlived its token by over 13 s");
    flood.abort();
    assert_eq!(code, Some(4001));
    // Closed at its token's expiry, not once the flood happened to pause (the old loop closed it 4.5 s late here;
    // 3 s is slack for a loaded machine, not a speed requirement).
    let late = expires.elapsed();
    assert!(late < Duration::from_secs(3), "closed {late:?} after the token expired");
}

/// A refresh with a token that already ran out (within the clock-skew leeway, which the handshake refuses too) is
/// refused and the session stays on its current token; before, it answered `auth_ok`, warned and closed a healthy
/// session with 4001. Refused refreshes count as bad messages: the eleventh closes with 1008.
#[tokio::test]
async fn an_expired_refresh_is_refused_and_the_session_keeps_its_token() {
    let gw = spawn_gateway().await;
    let auth = herald::auth::Authenticator::new(&gw.settings.auth).unwrap();
    let expired = auth.mint("u1", 1).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c = gw.connect("u1").await;
    c.send_text(&json!({"type": "auth", "token": expired}).to_string()).await;
    let refused = c.frame().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("auth_rejected")),
        "{refused}"
    );
    c.send_text("ping").await;
    assert_eq!(c.frame().await["type"], "pong", "still open on its own token");
    for _ in 0..10 {
        c.send_text(&json!({"type": "auth", "token": "not-a-jwt"}).to_string()).await;
    }
    assert_eq!(c.closed().await, 1008);
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_session_open() {
    let gw = spawn_gateway().await;
    let auth = herald::auth::Authenticator::new(&gw.settings.auth).unwrap();
    let url = format!("ws://{}/ws/u1?token={}", gw.addr, auth.mint("u1", 2).unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");
    assert_eq!(c.frame().await["type"], "token_expiring");
    c.send_text(&json!({"type": "auth", "token": gw.token("u1")}).to_string()).await;
    let ok = c.frame().await;
    assert_eq!(ok["type"], "auth_ok");
    assert!(ok["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 60);
    tokio::time::sleep(Duration::from_secs(3)).await; // past the first token's exp
    c.send_text("ping").await;
    // Frames that were waiting (pings) are skipped by `frame()`; the session is alive and answers.
    assert_eq!(c.frame().await["type"], "pong");
}
