//! WebSocket sessions: handshake variants, ping/pong, replay, limits, timeouts, shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn notify(gw: &Gateway, user: &str, title: &str) -> i64 {
    let resp = gw
        .post_event("sgad.notifications", "", &json!({"user_id": user, "title": title, "message": "m", "type": "info"}))
        .await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

#[tokio::test]
async fn text_ping_gets_a_pong_frame() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    c.send_text("ping").await;
    assert_eq!(c.frame().await, json!({"type": "pong"}));
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.frame().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn a_bad_client_message_gets_an_error_frame_and_the_session_stays_open() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    c.send_text("subscribe everything").await;
    let f = c.frame().await;
    assert_eq!(f["type"], "error");
    assert_eq!(f["code"], "bad_message");
    // A negative resume cursor is refused the same way (it read as history pruned below the client: `truncated`).
    c.send_text(r#"{"type":"resume","since":-1}"#).await;
    let f = c.frame().await;
    assert_eq!((f["type"].as_str(), f["code"].as_str()), (Some("error"), Some("bad_message")), "{f}");
    assert!(f["message"].as_str().unwrap().contains("0 or more"), "{f}");
    let id = notify(&gw, "u1", "still here").await;
    assert_eq!(c.notification().await["notification"]["id"], id);
}

/// A client that floods bad messages is closed with 1008 and sees why: the error frames and the close frame
/// reach it, and the connection ends cleanly. Before, the server dropped the connection with the burst's tail
/// unread, the kernel answered with a reset, and a client that reads after it (Node's `ws`, a browser) saw 1006
/// and none of the frames.
#[tokio::test]
async fn a_burst_of_bad_messages_ends_in_a_1008_close_the_client_receives() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    // More than the server reads ahead of the close: some of it is still unread in its socket when it closes.
    let filler = "x".repeat(2000);
    for i in 0..500 {
        c.ws.feed(Message::Text(format!("not json {i} {filler}").into())).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    // Read only once the server is done with the session (a client busy elsewhere, or on a slow network).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut errors = 0;
    let code = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut c.ws)).await;
        match msg.expect("timed out waiting for close") {
            Some(Ok(Message::Text(t))) if t.contains("bad_message") => errors += 1,
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a close frame after {errors} error frames: {other:?}"),
        }
    };
    assert_eq!((code, errors), (1008, 10), "ten error frames, then the close");
    // The client's answering close frame (sent by the library) ends the handshake: then a clean end of stream,
    // not a connection reset.
    let end = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut c.ws)).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn token_is_accepted_from_authorization_header_and_subprotocol() {
    let gw = spawn_gateway().await;
    let mut req = gw.ws_request("/ws/u1");
    req.headers_mut().insert("authorization", format!("Bearer {}", gw.token("u1")).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client { ws };
    assert_eq!(c.frame().await["type"], "ready");

    let mut req = gw.ws_request("/ws/u1");
    req.headers_mut().insert("sec-websocket-protocol", format!("bearer, {}", gw.token("u1")).parse().unwrap());
    let (ws2, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "bearer", "the server picks the `bearer` sub-protocol");
    let mut c2 = Client { ws: ws2 };
    assert_eq!(c2.frame().await["type"], "ready");

    // The token alone as the sub-protocol (`new WebSocket(url, [jwt])`): the server selects it, as a browser
    // requires of an answer to offered protocols (it failed such connections: none was selected).
    let token = gw.token("u1");
    let mut req = gw.ws_request("/ws/u1");
    req.headers_mut().insert("sec-websocket-protocol", token.parse().unwrap());
    let (ws3, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], token.as_str(), "the offered protocol is selected");
    let mut c3 = Client { ws: ws3 };
    assert_eq!(c3.frame().await["type"], "ready");
}

#[tokio::test]
async fn since_replays_what_was_missed_in_order_then_goes_live() {
    let gw = spawn_gateway().await;
    let first = notify(&gw, "u1", "before").await;
    let missed: Vec<i64> =
        [notify(&gw, "u1", "m1").await, notify(&gw, "u1", "m2").await, notify(&gw, "u1", "m3").await].into();
    let mut c = gw.connect_with("u1", &format!("&since={first}")).await;
    for id in &missed {
        assert_eq!(c.frame().await["notification"]["id"], *id);
    }
    let replayed = c.frame().await;
    assert_eq!(
        replayed,
        json!({"type": "replayed", "up_to": missed[2], "up_to_targeted": missed[2], "up_to_broadcast": 0})
    );
    let live = notify(&gw, "u1", "live").await;
    assert_eq!(c.frame().await["notification"]["id"], live);

    // The same on an open socket.
    c.send_text(&format!(r#"{{"type":"resume","since":{first}}}"#)).await;
    // Everything up to `live` was sent on this socket already: only the acknowledgement, nothing twice.
    assert_eq!(
        c.frame().await,
        json!({"type": "replayed", "up_to": live, "up_to_targeted": live, "up_to_broadcast": 0})
    );
    c.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn several_sessions_per_user_each_receive_once() {
    let gw = spawn_gateway().await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(gw.connect("multi").await);
    }
    let mut other = gw.connect("someone-else").await;
    let id = notify(&gw, "multi", "hello").await;
    for t in &mut tabs {
        assert_eq!(t.notification().await["notification"]["id"], id);
        t.silent_for(Duration::from_millis(100)).await;
    }
    other.silent_for(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn oversized_inbound_message_closes_with_1009() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    c.send_text(&"x".repeat(gw.settings.websocket.max_inbound_bytes + 1)).await;
    assert_eq!(c.closed().await, 1009);
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.closed().await, 1003);
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4009_after_the_idle_timeout() {
    let gw = spawn_gateway_with(|s| {
        s.websocket.ping_interval_secs = 1;
        s.websocket.idle_timeout_secs = 2;
    })
    .await;
    let mut c = gw.connect("u1").await;
    // Not reading means not answering pings: after the idle timeout the server gives up on us.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.closed().await, 4009);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let gw = spawn_gateway_with(|s| {
        s.websocket.ping_interval_secs = 1;
        s.websocket.idle_timeout_secs = 2;
    })
    .await;
    let mut c = gw.connect("u1").await;
    // Reading answers the server's pings; stay for longer than the idle timeout.
    c.silent_for(Duration::from_secs(3)).await;
    c.send_text("ping").await;
    assert_eq!(c.frame().await["type"], "pong");
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001() {
    let gw = spawn_gateway().await;
    let mut c = gw.connect("u1").await;
    let shutdown = gw.shutdown.clone();
    let stopping = tokio::spawn(gw.stop());
    let _ = shutdown;
    assert_eq!(c.closed().await, 1001);
    stopping.await.unwrap().unwrap();
}

/// SIGTERM with a database that stopped answering: the drain is bounded (the grace period, then
/// [`herald::STORE_CLOSE`] for the store), so the process exits instead of hanging until the orchestrator kills it.
#[tokio::test]
async fn shutdown_with_a_store_that_never_closes_still_ends_after_the_grace_period() {
    use futures_util::future::BoxFuture;
    use herald::inbox::instrumented::{Instrumented, Read};
    let hook = Arc::new(|read: Read, _: &str| -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if read == Read::Close {
                std::future::pending::<()>().await;
            }
        })
    });
    let hooks = herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) };
    let gw = spawn_gateway_hooked(|s| s.server.shutdown_grace_secs = 1, hooks).await;
    let mut c = gw.connect("u1").await;
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(c.closed().await, 1001);
    // Generous: the bound is 1 s + STORE_CLOSE; before, this waited forever.
    let stopped = tokio::time::timeout(herald::STORE_CLOSE * 6, stopping).await;
    stopped.expect("the process stops although the store never closes").unwrap().unwrap();
}

/// A client that closes gets the closing handshake's answer, its own code echoed (RFC 6455 §5.5.1), and so a clean
/// close; before, the server dropped the connection on receiving the close (a browser saw 1006, `wasClean`
/// false).
#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let gw = spawn_gateway().await;
    let mut c = gw.connect("carol").await;
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    c.ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(bye))).await.unwrap();
    let answer = loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.expect("an answer") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue, // frames already on their way (counts)
            other => panic!("no close frame came back: {other:?}"),
        }
    };
    assert_eq!(answer.map(|f| f.code), Some(CloseCode::Normal));
}

/// A stored notification whose frame is over what a session can carry (stored before ingest refused such frames,
/// or before an operator lowered the limits) is skipped, with a warning, rather than failing the socket; the
/// session carries on with what follows. Before, every replay reaching it dropped the connection (1006), on
/// every reconnect, for as long as the inbox kept it.
#[tokio::test]
async fn a_stored_frame_too_large_for_the_session_is_skipped_and_the_session_carries_on() {
    let mut gw = spawn_gateway_with(|s| {
        s.server.max_body_bytes = 2 << 20;
        s.websocket.outbound_queue_bytes = 4 << 20;
        s.websocket.max_write_buffer_bytes = 4 << 20;
    })
    .await;
    let big = json!({"user_id": "dora", "title": "big", "message": "x".repeat(1_200_000), "type": "info"});
    assert_eq!(gw.post_event("sgad.notifications", "", &big).await.status(), 202);
    let small = notify(&gw, "dora", "after").await;
    // The limits back to the defaults (1 MiB): the first notification's frame no longer fits a session.
    gw.settings.websocket.outbound_queue_bytes = 1 << 20;
    gw.settings.websocket.max_write_buffer_bytes = 1 << 20;
    let gw = gw.restart().await;
    for _ in 0..2 {
        let mut c = gw.connect_with("dora", "&since=0").await;
        let n = c.notification().await;
        assert_eq!(n["notification"]["id"], small, "the oversized one is skipped: {}", n["notification"]["title"]);
        c.send_text("ping").await;
        loop {
            let f = c.frame().await;
            match f["type"].as_str() {
                Some("pong") => break, // the session is still open
                Some("replayed") => continue,
                _ => panic!("unexpected frame: {f}"),
            }
        }
    }
    assert_eq!(gw.inbox("dora").await["items"].as_array().map(Vec::len), Some(2), "the inbox still lists both");
    // Counted as skipped, not as replayed: each connection replayed the small one only.
    assert_eq!(metric(&gw, "herald_frames_too_large_total").await, 2.0);
    assert_eq!(metric(&gw, "herald_notifications_replayed_total").await, 2.0);
}

/// The largest notification ingest takes reaches a session in either format. The event shape adds `message` (the
/// content again) when the body has none, and ingest counted Herald's frame only: an event-format session skipped
/// a notification near the limit (a server warning; nothing the client could notice). The evaluation rule copies
/// the body's comment into the content.
#[tokio::test]
async fn the_largest_notification_ingest_takes_reaches_a_session_in_the_event_shape_too() {
    let gw = spawn_gateway_with(|s| s.websocket.outbound_queue_bytes = 16 << 10).await;
    let evaluation = |user: &str, n: usize| json!({"payload": {"student_user_id": user, "evaluation_id": format!("{user}-{n}"), "comment": "c".repeat(n)}});
    let post = async |user: &str, n: usize| {
        let event = evaluation(user, n);
        gw.post_event("medtrack.events", "evaluation.created", &event).await
    };
    // The longest comment ingest takes, found for a user nobody watches.
    let (mut taken, mut refused) = (0, 16 << 10);
    while refused - taken > 1 {
        let mid = (taken + refused) / 2;
        let resp = post("scale", mid).await;
        match resp.status().as_u16() {
            202 => taken = mid,
            status => {
                let body: Value = resp.json().await.unwrap();
                assert!(status == 422 && body.to_string().contains("notification_too_large"), "{status} {body}");
                refused = mid;
            }
        }
    }
    assert!(taken > 1_000, "{taken}");
    let mut herald = gw.connect("edge").await;
    let mut shaped = gw.connect_with("edge", "&format=event").await;
    let resp = post("edge", taken).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap();
    assert_eq!(herald.notification().await["notification"]["id"], id);
    loop {
        let m = shaped.frame().await; // times out if the session skipped it
        if m["type"] == "counts" {
            continue;
        }
        assert_eq!(m["id"], id, "{}", m["type"]);
        assert_eq!(m["message"].as_str().map(str::len), Some(taken), "the content, copied in as `message`");
        break;
    }
}
