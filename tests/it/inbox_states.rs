//! Inbox states (seen, archived, unread again), the `counts` frame on one node and across two, and
//! preferences (issue 17).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use herald::inbox::instrumented::{Instrumented, Read};
use serde_json::{json, Value};

use crate::cluster::{fresh_database, two_ready_nodes, unique};
use crate::support::*;

async fn notify_as(gw: &Gateway, user: &str, title: &str, kind: &str) -> i64 {
    let resp = gw
        .post_event("sgad.notifications", "", &json!({"user_id": user, "title": title, "message": "m", "type": kind}))
        .await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

async fn notify(gw: &Gateway, user: &str, title: &str) -> i64 {
    notify_as(gw, user, title, "info").await
}

async fn broadcast(gw: &Gateway, title: &str) -> i64 {
    let body = json!({"user_id": "system", "title": title, "message": "m"});
    let resp = gw.post_event("sgad.notifications", "", &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

async fn rest_counts(gw: &Gateway, user: &str) -> (u64, u64) {
    let resp = gw.get(&format!("/api/v1/users/{user}/notifications/counts"), &gw.token(user)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let c: Value = resp.json().await.unwrap();
    assert_eq!(c.as_object().unwrap().len(), 2, "{c}");
    (c["unread"].as_u64().unwrap(), c["unseen"].as_u64().unwrap())
}

async fn post(gw: &Gateway, user: &str, path: &str) -> reqwest::Response {
    gw.post(&format!("/api/v1/users/{user}/notifications/{path}"), &gw.token(user)).send().await.unwrap()
}

/// The next two frames: a REST change brings its own frame and the user's new counts (both from the commit, the
/// frame first; either order is accepted here). Returns (the frame, the counts).
async fn change_frames(tab: &mut Client) -> (Value, (u64, u64)) {
    let (a, b) = (tab.raw_frame().await, tab.raw_frame().await);
    let (frame, counts) = if a["type"] == "counts" { (b, a) } else { (a, b) };
    assert_eq!(counts["type"], "counts", "{counts}");
    (frame, (counts["unread"].as_u64().unwrap(), counts["unseen"].as_u64().unwrap()))
}

#[tokio::test]
async fn every_tab_gets_counts_after_ready_after_each_new_notification_and_after_each_rest_change() {
    let gw = spawn_gateway().await;
    let user = "counted";
    let early = notify(&gw, user, "before the tabs").await;
    let mut tabs = [gw.connect(user).await, gw.connect(user).await];
    for tab in &mut tabs {
        assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 1, "unseen": 1}), "right after ready");
    }

    let id = notify(&gw, user, "x").await;
    for tab in &mut tabs {
        let f = tab.raw_frame().await;
        assert_eq!((f["type"].as_str(), f["notification"]["id"].as_i64()), (Some("notification"), Some(id)));
        assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 2, "unseen": 2}), "after its frame");
    }
    let b = broadcast(&gw, "to everyone").await;
    for tab in &mut tabs {
        assert_eq!(tab.raw_frame().await["notification"]["id"], b);
        assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 3, "unseen": 3}), "derived in memory");
    }
    assert_eq!(rest_counts(&gw, user).await, (3, 3), "REST reads the same counters");

    // Each REST change: its frame and the absolute counts of the commit, in every tab.
    let steps: [(String, &str, (u64, u64)); 8] = [
        (format!("{id}/read"), "read", (2, 2)),
        ("seen_all".into(), "seen_all", (2, 0)),
        (format!("{id}/unread"), "unread", (3, 0)),
        (format!("{id}/archive"), "archived", (2, 0)),
        (format!("{id}/unarchive"), "unarchived", (3, 0)),
        (format!("{b}/read"), "read", (2, 0)),
        (format!("{b}/unread"), "unread", (3, 0)),
        ("read_all".into(), "read_all", (0, 0)),
    ];
    for (path, frame_type, counts) in steps {
        let resp = post(&gw, user, &path).await;
        assert_eq!(resp.status(), 200, "{path}");
        for tab in &mut tabs {
            let (frame, got) = change_frames(tab).await;
            assert_eq!(frame["type"], frame_type, "{path}: {frame}");
            assert_eq!(got, counts, "{path}: the counts frame");
        }
        assert_eq!(rest_counts(&gw, user).await, counts, "{path}: GET …/counts");
    }
    post(&gw, user, &format!("{early}/unread")).await;
    for tab in &mut tabs {
        assert_eq!(change_frames(tab).await.1, (1, 0));
    }
    let r = gw.delete(&format!("/api/v1/users/{user}/notifications/{early}"), &gw.token(user)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    for tab in &mut tabs {
        let (frame, counts) = change_frames(tab).await;
        assert_eq!((frame["type"].as_str(), counts), (Some("deleted"), (0, 0)));
    }
    assert_eq!(gw.unread(user).await, 0, "unread_count stays, the same counter");
    for tab in &mut tabs {
        tab.quiet_for(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_broadcast_raises_every_sessions_counts_without_a_store_read_per_session() {
    let reads = Arc::new(AtomicUsize::new(0));
    let counter = reads.clone();
    let hook = Arc::new(move |read: Read, _: &str| -> BoxFuture<'static, ()> {
        if matches!(read, Read::Counts | Read::Latest) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async {})
    });
    let hooks = herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) };
    let gw = spawn_gateway_hooked(|_| {}, hooks).await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        let user = format!("bc-{}", i % 3);
        let mut c = gw.connect(&user).await;
        assert_eq!(c.counts().await, (0, 0));
        sessions.push(c);
    }
    let opened = reads.load(Ordering::SeqCst);
    assert_eq!(opened, 6, "one counts read per session, when it opens");
    for round in 1..=3u64 {
        broadcast(&gw, &format!("round {round}")).await;
        for s in &mut sessions {
            assert_eq!(s.notification().await["notification"]["user_id"], Value::Null);
            assert_eq!(s.raw_frame().await, json!({"type": "counts", "unread": round, "unseen": round}));
        }
    }
    assert_eq!(reads.load(Ordering::SeqCst), opened, "three broadcasts to six sessions read no counts");
    assert_eq!(rest_counts(&gw, "bc-1").await, (3, 3), "and the counters agree");
}

/// A change committed while a session opens (after it registered, before its opening snapshot) queues counts
/// older than the snapshot: they must not replace it. Before: SQLite's counts carried no version, the older counts
/// went out after `ready` and stayed (a broadcast in between was in the snapshot, so never added back).
#[tokio::test]
async fn counts_committed_while_a_session_opens_do_not_replace_its_newer_opening_counts() {
    let user = "slow-opening";
    let (entered, gate) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Semaphore::new(0)));
    let (hook_entered, hook_gate) = (entered.clone(), gate.clone());
    let hook = Arc::new(move |read: Read, who: &str| -> BoxFuture<'static, ()> {
        let (entered, gate) = (hook_entered.clone(), hook_gate.clone());
        let held = matches!(read, Read::Latest) && who == user;
        Box::pin(async move {
            if held {
                entered.notify_one();
                gate.acquire().await.unwrap().forget();
            }
        })
    });
    let hooks = herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) };
    let gw = Arc::new(spawn_gateway_hooked(|_| {}, hooks).await);
    let a = notify(&gw, user, "a").await;
    notify(&gw, user, "b").await;

    let opening = tokio::spawn({
        let gw = gw.clone();
        async move { gw.connect(user).await }
    });
    entered.notified().await; // registered, its opening read held
    assert_eq!(post(&gw, user, &format!("{a}/read")).await.status(), 200); // counts (1, 1) queued for it
    broadcast(&gw, "while it opened").await; // in the snapshot: counted there, never added again
    gate.add_permits(1);
    let mut tab = opening.await.unwrap();

    let truth = rest_counts(&gw, user).await;
    assert_eq!(truth, (2, 2), "b and the broadcast");
    let mut last = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), tab.ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "counts" {
                last = Some((f["unread"].as_u64().unwrap(), f["unseen"].as_u64().unwrap()));
            }
        }
    }
    assert_eq!(last, Some(truth), "the session's badge ends where the inbox is");
}

#[tokio::test]
async fn a_resumed_session_gets_counts_after_replayed() {
    let gw = spawn_gateway().await;
    let first = notify(&gw, "resumer", "one").await;
    notify(&gw, "resumer", "two").await;
    let mut c = gw.connect_with("resumer", &format!("&since={first}")).await;
    assert_eq!(c.raw_frame().await["type"], "counts", "after ready");
    let mut kinds = Vec::new();
    loop {
        let f = c.raw_frame().await;
        kinds.push(f["type"].as_str().unwrap().to_owned());
        if f["type"] == "replayed" {
            break;
        }
    }
    assert_eq!(kinds, ["notification", "replayed"]);
    assert_eq!(c.raw_frame().await, json!({"type": "counts", "unread": 2, "unseen": 2}), "right after replayed");
}

#[tokio::test]
async fn archived_notifications_leave_the_list_and_come_back_and_lists_filter_by_type_and_related_object() {
    let gw = spawn_gateway().await;
    let user = "archivist";
    let t = gw.token(user);
    let info = notify(&gw, user, "an info").await;
    let alert = notify_as(&gw, user, "an alert", "alert").await;
    let list = |q: &'static str| {
        let (gw, t) = (&gw, t.clone());
        async move {
            let resp = gw.get(&format!("/api/v1/users/{user}/notifications{q}"), &t).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{q}");
            let page: Value = resp.json().await.unwrap();
            page["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect::<Vec<_>>()
        }
    };
    let page: Value =
        gw.get(&format!("/api/v1/users/{user}/notifications"), &t).send().await.unwrap().json().await.unwrap();
    for item in page["items"].as_array().unwrap() {
        for field in ["read_at", "seen_at", "archived_at", "muted"] {
            assert!(item.as_object().unwrap().contains_key(field), "{field} in {item}");
        }
        assert_eq!(item["muted"], false);
    }
    assert_eq!(list("?type=alert").await, [alert]);
    assert_eq!(list("?type=info").await, [info]);
    assert_eq!(list("?type=nothing").await, Vec::<i64>::new());

    let archived: Value = post(&gw, user, &format!("{info}/archive")).await.json().await.unwrap();
    assert!(archived["archived_at"].is_string(), "{archived}");
    assert_eq!(list("").await, [alert], "archived ones are left out by default");
    assert_eq!(list("?archived=true").await, [info], "archived=true lists only them");
    assert_eq!(rest_counts(&gw, user).await, (1, 1), "archived counts in neither");
    let back: Value = post(&gw, user, &format!("{info}/unarchive")).await.json().await.unwrap();
    assert_eq!(back["archived_at"], Value::Null);
    assert_eq!(list("").await, [alert, info]);

    let read: Value = post(&gw, user, &format!("{alert}/read")).await.json().await.unwrap();
    assert!(read["seen_at"].is_string(), "reading implies seeing: {read}");
    let unread: Value = post(&gw, user, &format!("{alert}/unread")).await.json().await.unwrap();
    assert_eq!((unread["read_at"].clone(), unread["seen_at"].is_string()), (Value::Null, true));
    let seen: Value = post(&gw, user, "seen_all").await.json().await.unwrap();
    assert_eq!(seen["up_to"], alert.max(info));
    assert!(seen["seen_at"].is_string());
    assert_eq!(rest_counts(&gw, user).await, (2, 0));
}

#[tokio::test]
async fn related_object_filters_match_the_type_and_the_id() {
    let gw = spawn_gateway().await;
    let referee = "referee-9";
    let mut ids = Vec::new();
    for m in ["m-1", "m-2"] {
        let body = json!({"event_type": "match.assigned", "match_id": m, "referee_id": referee, "home_team": "A",
            "away_team": "B"});
        let resp = gw.post_event("sgad.matches", &format!("match.assigned.{referee}"), &body).await;
        assert_eq!(resp.status(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap());
    }
    notify(&gw, referee, "unrelated").await;
    let t = gw.token(referee);
    let list = |q: &'static str| {
        let (gw, t) = (&gw, t.clone());
        async move {
            let page: Value = gw
                .get(&format!("/api/v1/users/{referee}/notifications{q}"), &t)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect::<Vec<_>>()
        }
    };
    assert_eq!(list("?related_type=match").await, [ids[1], ids[0]]);
    assert_eq!(list("?related_type=match&related_id=m-1").await, [ids[0]]);
    assert_eq!(list("?related_type=match&related_id=m-3").await, Vec::<i64>::new());
    assert_eq!(list("?related_type=stage&related_id=m-1").await, Vec::<i64>::new(), "the id within its type");
    assert_eq!(list("?type=match&limit=1").await, [ids[1]], "filters apply before the page limit");
}

#[tokio::test]
async fn unknown_ids_are_404_and_bad_parameters_are_400_with_a_reason() {
    let gw = spawn_gateway().await;
    let user = "strict";
    let theirs = notify(&gw, "someone-else", "not yours").await;
    for action in ["read", "unread", "archive", "unarchive"] {
        for id in [theirs, 999_999] {
            let resp = post(&gw, user, &format!("{id}/{action}")).await;
            assert_eq!(resp.status(), 404, "{action} {id}");
            assert_eq!(resp.json::<Value>().await.unwrap()["error"], "not_found");
        }
        let resp = post(&gw, user, &format!("abc/{action}")).await;
        assert_eq!(resp.status(), 400, "{action} abc");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "bad_path");
    }
    let t = gw.token(user);
    for q in ["?archived=maybe", "?related_id=7", "?limit=0&type=info", "?unread_only=true", "?page=2"] {
        let resp = gw.get(&format!("/api/v1/users/{user}/notifications{q}"), &t).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_query", "{q}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{q}: a reason");
    }
    let other = gw.get("/api/v1/users/someone-else/notifications/counts", &t).send().await.unwrap();
    assert_eq!(other.status(), 403, "another user's counts");

    // A service key reaches any inbox, but only one an event could fill: not an empty, over-long or unreadable id,
    // nor one padded with whitespace (events' ids are trimmed, tokens' may not be padded: `gina ` was a second,
    // unreachable inbox).
    let long = "u".repeat(257);
    for (user, why) in [
        ("", "empty"),
        (long.as_str(), "over 256 bytes"),
        ("a%01b", "a control character"),
        ("gina%20", "trailing whitespace"),
        ("%20gina", "leading whitespace"),
    ] {
        for (method, path) in [
            (reqwest::Method::GET, "notifications"),
            (reqwest::Method::POST, "notifications/read_all"),
            (reqwest::Method::PUT, "preferences"),
        ] {
            let url = gw.url(&format!("/api/v1/users/{user}/{path}"));
            let resp = gw.raw().request(method.clone(), url).bearer_auth(SERVICE_KEY).json(&json!({"types": {}}));
            let resp = resp.send().await.unwrap();
            assert_eq!(resp.status(), 400, "{method} {path} for a user id {why}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "bad_path", "{method} {path}, {why}: {body}");
        }
    }
}

async fn batch(gw: &Gateway, user: &str, bearer: &str, body: Value) -> reqwest::Response {
    gw.post(&format!("/api/v1/users/{user}/notifications/batch"), bearer).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn a_batch_changes_several_notifications_in_one_request_and_each_tab_gets_one_frame_for_them() {
    let gw = spawn_gateway().await;
    let user = "batched";
    let t = gw.token(user);
    let (a, b) = (notify(&gw, user, "a").await, notify(&gw, user, "b").await);
    let kept = notify(&gw, user, "left alone").await;
    let theirs = notify(&gw, "someone-else", "not yours").await;
    let mut tab = gw.connect(user).await;
    assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 3, "unseen": 3}));

    let resp = batch(&gw, user, &t, json!({"action": "read", "ids": [a, theirs, b, a]})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!((&body["action"], &body["ids"], &body["not_found"]), (&json!("read"), &json!([a, b]), &json!([theirs])));
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|n| n["id"].as_i64().unwrap()).collect::<Vec<_>>(), [a, b]);
    assert!(items.iter().all(|n| n["read_at"].is_string() && n["read_at"] == items[0]["read_at"]), "{body}");
    let (frame, counts) = change_frames(&mut tab).await;
    assert_eq!(
        (&frame["type"], &frame["ids"], &frame["read_at"]),
        (&json!("read"), &json!([a, b]), &items[0]["read_at"])
    );
    assert_eq!(counts, (1, 1), "one frame and one counts for the lot: only `kept` is unread");

    for (action, frame_type, counts) in
        [("unread", "unread", (3, 1)), ("archive", "archived", (1, 1)), ("unarchive", "unarchived", (3, 1))]
    {
        let resp = batch(&gw, user, &t, json!({"action": action, "ids": [a, b]})).await;
        assert_eq!(resp.status(), 200, "{action}");
        let (frame, now) = change_frames(&mut tab).await;
        assert_eq!((&frame["type"], &frame["ids"]), (&json!(frame_type), &json!([a, b])), "{action}");
        assert_eq!(now, counts, "{action}");
    }
    let resp = batch(&gw, user, &t, json!({"action": "delete", "ids": [b, 999_999, a]})).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!((&body["ids"], &body["not_found"], &body["items"]), (&json!([b, a]), &json!([999_999]), &json!([])));
    let (frame, counts) = change_frames(&mut tab).await;
    assert_eq!((&frame["type"], &frame["ids"]), (&json!("deleted"), &json!([b, a])));
    assert_eq!(counts, (1, 1));
    let left = gw.get(&format!("/api/v1/users/{user}/notifications"), &t).send().await.unwrap();
    let left: Value = left.json().await.unwrap();
    assert_eq!(left["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect::<Vec<_>>(), [kept]);
    let theirs_now = gw.get("/api/v1/users/someone-else/notifications", &gw.token("someone-else")).send().await;
    assert_eq!(theirs_now.unwrap().json::<Value>().await.unwrap()["items"][0]["read_at"], Value::Null, "untouched");

    // Bad batches: a 400 with a reason, nothing changed; another user's inbox: 403.
    let too_many: Vec<i64> = (1..=101).collect();
    for bad in [
        json!({"action": "explode", "ids": [kept]}),
        json!({"action": "read", "ids": []}),
        json!({"action": "read", "ids": too_many}),
        json!({"action": "read"}),
        json!({"action": "read", "ids": [kept], "extra": 1}),
        json!({"action": "read", "ids": ["one"]}),
        json!(["read", [kept]]),
    ] {
        let resp = batch(&gw, user, &t, bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{bad}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{bad}: a reason");
    }
    assert_eq!(rest_counts(&gw, user).await, (1, 1), "no bad batch changed anything");
    // One id named twice counts once, against the cap of 100 too.
    let resp = batch(&gw, user, &t, json!({"action": "archive", "ids": vec![kept; 200]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["ids"], json!([kept]));
    let resp = batch(&gw, user, &t, json!({"action": "unarchive", "ids": [kept]})).await;
    assert_eq!(resp.status(), 200);
    let resp = batch(&gw, "someone-else", &t, json!({"action": "read", "ids": [theirs]})).await;
    assert_eq!(resp.status(), 403);
}

/// A tab that applies every frame ends with the server's list: frames go out in commit order, one per change made,
/// none for a change that changed nothing. Before: each REST handler pushed its frame after its commit, so two
/// changes racing (two tabs, a batch and a single change) could arrive in the other order (18 of 300 pairs), and
/// every no-op pushed a frame too.
#[tokio::test]
async fn racing_changes_reach_a_tab_in_commit_order_and_changes_that_change_nothing_send_nothing() {
    // 80 changes at once from one user token: over its rate (`server.user_writes_per_second`), off here.
    let gw = Arc::new(spawn_gateway_with(|s| s.server.user_writes_per_second = 0).await);
    let user = "racing";
    let id = notify(&gw, user, "x").await;
    let mut tab = gw.connect(user).await;
    assert_eq!(tab.raw_frame().await["type"], "counts");
    for _ in 0..40 {
        let (a, b) = (gw.clone(), gw.clone());
        let archive = tokio::spawn(async move { post(&a, user, &format!("{id}/archive")).await.status().as_u16() });
        let unarchive = tokio::spawn(async move { post(&b, user, &format!("{id}/unarchive")).await.status().as_u16() });
        assert_eq!((archive.await.unwrap(), unarchive.await.unwrap()), (200, 200));
    }
    // Changes that change nothing: no frame (and no counts).
    let archived_now = |gw: Arc<Gateway>| async move {
        let page = gw.get(&format!("/api/v1/users/{user}/notifications?archived=true"), &gw.token(user));
        let page: Value = page.send().await.unwrap().json().await.unwrap();
        page["items"].as_array().unwrap().iter().any(|n| n["id"] == id)
    };
    let archived = archived_now(gw.clone()).await;
    post(&gw, user, &format!("{id}/{}", if archived { "archive" } else { "unarchive" })).await;
    post(&gw, user, &format!("{id}/unread")).await;
    let body = json!({"action": "unread", "ids": [id]});
    gw.post(&format!("/api/v1/users/{user}/notifications/batch"), &gw.token(user)).json(&body).send().await.unwrap();

    let mut states = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), tab.ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            match f["type"].as_str().unwrap() {
                "archived" | "unarchived" => {
                    assert_eq!(f["ids"], json!([id]), "{f}");
                    states.push(f["type"] == "archived");
                }
                "counts" => {}
                other => panic!("a frame for a change that changed nothing: {other}: {f}"),
            }
        }
    }
    assert_eq!(archived_now(gw.clone()).await, archived, "the no-ops changed nothing");
    let archived_now = archived;
    assert!(!states.is_empty());
    assert!(states.windows(2).all(|w| w[0] != w[1]), "each frame is a change from the one before: {states:?}");
    assert_eq!(states.last(), Some(&archived_now), "the last frame is the server's state");
}

/// A user token reading its inbox faster than `server.user_reads_per_second` (after its burst) is answered
/// `429 rate_limited` with `Retry-After`; a filtered list counts as `FILTERED_LIST_READS` reads (it may scan every
/// retained broadcast); other users and service keys are not held back. Before, reads had no limit, and one
/// token looping on filtered lists took every read connection: other users' lists and sessions stalled.
#[tokio::test]
async fn a_user_reading_their_inbox_too_fast_is_told_when_to_retry_and_others_are_not_held_back() {
    let gw = spawn_gateway_with(|s| {
        s.server.user_reads_per_second = 1;
        s.server.user_reads_burst = 10;
    })
    .await;
    let gw = &gw;
    let list = |user: &str, query: &str| {
        let token = gw.token(user);
        let path = format!("/api/v1/users/{user}/notifications{query}");
        async move { gw.get(&path, &token).send().await.unwrap() }
    };
    // Two filtered lists are the burst (5 each); the plain list after them is refused.
    assert_eq!(list("reader", "?type=zzz").await.status(), 200);
    assert_eq!(list("reader", "?unread=true").await.status(), 200);
    let refused = list("reader", "").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("too many reads"), "{body}");
    // Another user, and a service key reading this user's inbox, are not held back.
    assert_eq!(list("other-reader", "").await.status(), 200);
    let by_service = gw.get("/api/v1/users/reader/notifications", SERVICE_KEY).send().await.unwrap();
    assert_eq!(by_service.status(), 200);
    // Plain reads cost one each: ten within another user's burst.
    let token = gw.token("steady");
    for i in 0..10 {
        let r = gw.get("/api/v1/users/steady/notifications/unread_count", &token).send().await.unwrap();
        assert_eq!(r.status(), 200, "read {i}: within the burst");
    }
}

/// A user token changing its inbox faster than `server.user_writes_per_second` (after its burst) is answered
/// `429 rate_limited` with `Retry-After`, and the refused change is not made; other users and service keys are
/// not held back by it.
#[tokio::test]
async fn a_user_changing_their_inbox_too_fast_is_told_when_to_retry_and_nothing_else_is_held_back() {
    let gw = spawn_gateway_with(|s| {
        s.server.user_writes_per_second = 1;
        s.server.user_writes_burst = 5;
    })
    .await;
    let user = "hasty";
    let id = notify(&gw, user, "x").await;
    for i in 0..5 {
        let change = if i % 2 == 0 { "archive" } else { "unarchive" };
        assert_eq!(post(&gw, user, &format!("{id}/{change}")).await.status(), 200, "change {i}: within the burst");
    }
    let refused = post(&gw, user, &format!("{id}/unarchive")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry after {retry} s");
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "rate_limited");
    let archived = gw.get(&format!("/api/v1/users/{user}/notifications?archived=true"), &gw.token(user));
    let archived: Value = archived.send().await.unwrap().json().await.unwrap();
    assert_eq!(archived["items"][0]["id"], id, "the refused unarchive was not made");
    // Reads are not changes; another user and a service key are not held back by this user's rate.
    let list = gw.get(&format!("/api/v1/users/{user}/notifications"), &gw.token(user)).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let other = notify(&gw, "patient", "y").await;
    assert_eq!(post(&gw, "patient", &format!("{other}/read")).await.status(), 200);
    let by_service = gw.post(&format!("/api/v1/users/{user}/notifications/{id}/unarchive"), SERVICE_KEY);
    assert_eq!(by_service.send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(post(&gw, user, &format!("{id}/read")).await.status(), 200, "after Retry-After");

    // A batch weighs its ids: 41 of them are 5 changes, the whole burst.
    let weighty = "weighty";
    let batch = json!({"action": "read", "ids": (1..=41).collect::<Vec<i64>>()});
    let url = format!("/api/v1/users/{weighty}/notifications/batch");
    assert_eq!(gw.post(&url, &gw.token(weighty)).json(&batch).send().await.unwrap().status(), 200);
    assert_eq!(post(&gw, weighty, "read_all").await.status(), 429, "the batch took the burst");
}

#[tokio::test]
async fn a_muted_type_is_stored_and_listed_but_neither_pushed_nor_counted_nor_listed_as_unread() {
    let gw = spawn_gateway().await;
    let user = "quiet";
    let t = gw.token(user);
    let mut tab = gw.connect(user).await;
    assert_eq!(tab.counts().await, (0, 0));
    let put = gw
        .raw()
        .put(gw.url(&format!("/api/v1/users/{user}/preferences")))
        .bearer_auth(&t)
        .json(&json!({"types": {"digest": "muted", "info": "on"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(put.json::<Value>().await.unwrap()["types"], json!({"digest": "muted", "info": "on"}));
    let got: Value =
        gw.get(&format!("/api/v1/users/{user}/preferences"), &t).send().await.unwrap().json().await.unwrap();
    assert_eq!((&got["types"], &got["defaults"]), (&json!({"digest": "muted", "info": "on"}), &json!({})));

    let muted = notify_as(&gw, user, "weekly digest", "digest").await;
    let pushed = notify(&gw, user, "an info").await;
    let f = tab.raw_frame().await;
    assert_eq!(f["notification"]["id"], pushed, "the muted one is not pushed: {f}");
    assert_eq!(f["notification"]["prev_id"], 0, "the chain skips the muted row: no gap to fill");
    assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 1, "unseen": 1}), "nor counted");
    tab.quiet_for(Duration::from_millis(200)).await;
    let page: Value =
        gw.get(&format!("/api/v1/users/{user}/notifications"), &t).send().await.unwrap().json().await.unwrap();
    let stored = page["items"].as_array().unwrap().iter().find(|n| n["id"] == muted).expect("listed");
    assert_eq!(stored["muted"], true);
    assert_eq!(rest_counts(&gw, user).await, (1, 1));
    // The unread list is what the unread count counts: the muted one is listed, but not as unread (an Unread tab
    // showed it under a badge saying all was read).
    let unread: Value = gw
        .get(&format!("/api/v1/users/{user}/notifications?unread=true"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = unread["items"].as_array().unwrap().iter().map(|n| &n["id"]).collect();
    assert_eq!(ids, [&json!(pushed)], "{unread}");
    // Reconnecting from before it does not replay it either.
    let mut again = gw.connect_with(user, "&since=0").await;
    let replayed = again.notification().await;
    assert_eq!(replayed["notification"]["id"], pushed);
}

#[tokio::test]
async fn preferences_refuse_bad_bodies_and_other_users() {
    let gw = spawn_gateway().await;
    let t = gw.token("prefs");
    let put = |body: Value, token: String, user: &'static str| {
        let gw = &gw;
        async move {
            gw.raw()
                .put(gw.url(&format!("/api/v1/users/{user}/preferences")))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for body in [
        json!({"types": {"digest": "off"}}),
        json!({"types": {"digest": true}}),
        json!({"types": {"": "muted"}}),
        json!({"mute": ["digest"]}),
        json!(["digest"]),
    ] {
        let resp = put(body.clone(), t.clone(), "prefs").await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "bad_request", "{body}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let resp = put(json!({"types": {}}), t.clone(), "not-prefs").await;
    assert_eq!(resp.status(), 403);
    let resp = gw.get("/api/v1/users/not-prefs/preferences", &t).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = gw.get("/api/v1/users/prefs/preferences", "").send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_preferences_patch_changes_only_the_types_it_names_and_default_forgets_a_setting() {
    let gw = spawn_gateway_with(|s| s.preferences.muted_by_default = vec!["digest".into()]).await;
    let user = "patched";
    let t = gw.token(user);
    let patch = |body: Value, user: &'static str| {
        let (gw, t) = (&gw, t.clone());
        async move {
            let url = gw.url(&format!("/api/v1/users/{user}/preferences"));
            gw.raw().patch(url).bearer_auth(t).json(&body).send().await.unwrap()
        }
    };
    let put = gw.raw().put(gw.url(&format!("/api/v1/users/{user}/preferences"))).bearer_auth(&t);
    let put = put.json(&json!({"types": {"promo": "muted", "digest": "on"}})).send().await.unwrap();
    assert_eq!(put.status(), 200);

    let resp = patch(json!({"types": {"info": "muted", "digest": "default"}}), user).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["types"], json!({"promo": "muted", "info": "muted"}), "promo kept, info added, digest forgotten");
    assert_eq!(got["defaults"], json!({"digest": "muted"}));
    let read: Value =
        gw.get(&format!("/api/v1/users/{user}/preferences"), &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, got, "what GET reads is what PATCH answered");

    // The patch applies from the next commit: info and digest (its default again) are muted, stage is not.
    notify_as(&gw, user, "muted now", "info").await;
    notify_as(&gw, user, "muted by default again", "digest").await;
    notify_as(&gw, user, "counted", "stage").await;
    assert_eq!(rest_counts(&gw, user).await, (1, 1));

    for bad in [
        json!({"types": {"info": null}}),
        json!({"types": {"info": "off"}}),
        json!({"types": {" ": "on"}}),
        json!({"types": ["info"]}),
        json!({"info": "on"}),
    ] {
        let resp = patch(bad.clone(), user).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "bad_request", "{bad}: {err}");
    }
    // A patch is bounded by what it leaves set, not only by what it names.
    let many = |from: usize| Value::Object((from..from + 600).map(|i| (format!("t{i}"), json!("on"))).collect());
    assert_eq!(patch(json!({"types": many(0)}), user).await.status(), 200);
    let resp = patch(json!({"types": many(600)}), user).await;
    assert_eq!(resp.status(), 400, "602 + 600 types");
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("nothing was changed"), "{err}");
    let read: Value =
        gw.get(&format!("/api/v1/users/{user}/preferences"), &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["types"].as_object().unwrap().len(), 602, "the refused patch wrote nothing");
    // Naming more than 1,000 types is fine when fewer are left: every t… back to its default at once.
    let forget = Value::Object((0..1200).map(|i| (format!("t{i}"), json!("default"))).collect());
    let resp = patch(json!({"types": forget}), user).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["types"], json!({"promo": "muted", "info": "muted"}));
    // The longest names fit: 1,000 types of 200 bytes, set and then sent back whole.
    let longest = Value::Object((0..1000).map(|i| (format!("{i:0>200}"), json!("on"))).collect());
    let put = gw.raw().put(gw.url(&format!("/api/v1/users/{user}/preferences"))).bearer_auth(&t);
    assert_eq!(put.json(&json!({"types": longest})).send().await.unwrap().status(), 200);
    assert_eq!(patch(json!({"types": {}}), "someone-else").await.status(), 403);
}

#[tokio::test]
async fn a_type_muted_by_default_is_muted_until_the_user_turns_it_on() {
    let gw = spawn_gateway_with(|s| s.preferences.muted_by_default = vec!["digest".into()]).await;
    let user = "defaults";
    let t = gw.token(user);
    let got: Value =
        gw.get(&format!("/api/v1/users/{user}/preferences"), &t).send().await.unwrap().json().await.unwrap();
    assert_eq!((&got["types"], &got["defaults"]), (&json!({}), &json!({"digest": "muted"})));
    let known: Vec<&str> = got["known"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(known.is_sorted() && known.len() > 3, "{known:?}");
    for kind in ["stage", "evaluation", "availability", "security"] {
        assert!(known.contains(&kind), "the shipped rules store `{kind}`: {known:?}");
    }
    notify_as(&gw, user, "muted by default", "digest").await;
    assert_eq!(rest_counts(&gw, user).await, (0, 0));
    let put = gw
        .raw()
        .put(gw.url(&format!("/api/v1/users/{user}/preferences")))
        .bearer_auth(&t)
        .json(&json!({"types": {"digest": "on"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    notify_as(&gw, user, "turned on", "digest").await;
    assert_eq!(rest_counts(&gw, user).await, (1, 1));
}

#[tokio::test]
async fn counts_frames_reach_the_users_sessions_on_every_node() {
    let Some((pg, redis)) = fresh_database("counts_across_nodes").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["node-a", "node-b"]).await;
    let user = unique("cn-");
    let mut on_a = a.connect(&user).await;
    let mut on_b = b.connect(&user).await;
    assert_eq!(on_a.counts().await, (0, 0));
    assert_eq!(on_b.counts().await, (0, 0));
    tokio::time::sleep(Duration::from_millis(200)).await; // B's subscription to the user's channel

    let id = notify(&a, &user, "from a").await;
    for tab in [&mut on_a, &mut on_b] {
        assert_eq!(tab.raw_frame().await["notification"]["id"], id);
        assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 1, "unseen": 1}));
    }
    // A REST change on node B: node A's session gets the commit's counts.
    assert_eq!(post(&b, &user, "seen_all").await.status(), 200);
    for tab in [&mut on_a, &mut on_b] {
        let (frame, counts) = change_frames(tab).await;
        assert_eq!((frame["type"].as_str(), counts), (Some("seen_all"), (1, 0)));
    }
    // A broadcast committed on node B: each session on each node derives its counts.
    let body = json!({"user_id": "system", "title": "all", "message": "m"});
    let bid = b.post_event("sgad.notifications", "", &body).await.json::<Value>().await.unwrap()["results"][0]
        ["notification_ids"][0]
        .as_i64()
        .unwrap();
    for tab in [&mut on_a, &mut on_b] {
        assert_eq!(tab.raw_frame().await["notification"]["id"], bid);
        assert_eq!(tab.raw_frame().await, json!({"type": "counts", "unread": 2, "unseen": 1}));
    }
    assert_eq!(post(&a, &user, &format!("{bid}/read")).await.status(), 200);
    for tab in [&mut on_a, &mut on_b] {
        assert_eq!(change_frames(tab).await.1, (1, 0));
    }
    assert_eq!(rest_counts(&b, &user).await, (1, 0));
}
