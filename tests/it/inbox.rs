//! The REST inbox and its live read-state sync.

use serde_json::{json, Value};

use crate::support::*;

async fn notify(gw: &Gateway, user: &str, title: &str) -> i64 {
    let resp = gw
        .post_event("sgad.notifications", "", &json!({"user_id": user, "title": title, "message": "m", "type": "info"}))
        .await;
    resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap()
}

#[tokio::test]
async fn list_is_newest_first_with_a_before_cursor_and_unread_filter() {
    let gw = spawn_gateway().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(notify(&gw, "pager", &format!("n{i}")).await);
    }
    let t = gw.token("pager");
    let page: Value =
        gw.get("/api/v1/users/pager/notifications?limit=2", &t).send().await.unwrap().json().await.unwrap();
    let got: Vec<i64> = page["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![ids[4], ids[3]]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_before"], ids[3]);
    let page: Value = gw
        .get(&format!("/api/v1/users/pager/notifications?limit=10&before={}", ids[3]), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<i64> = page["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![ids[2], ids[1], ids[0]]);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["next_before"], Value::Null);

    gw.post(&format!("/api/v1/users/pager/notifications/{}/read", ids[1]), &t).send().await.unwrap();
    let unread: Value =
        gw.get("/api/v1/users/pager/notifications?unread=true", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(unread["items"].as_array().unwrap().len(), 4);
    assert!(unread["items"].as_array().unwrap().iter().all(|n| n["id"] != ids[1]));
}

#[tokio::test]
async fn unread_count_read_read_all_and_delete_behave() {
    let gw = spawn_gateway().await;
    let a = notify(&gw, "u", "a").await;
    let b = notify(&gw, "u", "b").await;
    let resp =
        gw.post_event("sgad.notifications", "", &json!({"user_id": "system", "title": "all", "message": "m"})).await;
    let broadcast = resp.json::<Value>().await.unwrap()["results"][0]["notification_ids"][0].as_i64().unwrap();
    let t = gw.token("u");
    assert_eq!(gw.unread("u").await, 3);

    let read: Value =
        gw.post(&format!("/api/v1/users/u/notifications/{a}/read"), &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["id"], a);
    assert!(read["read_at"].is_string());
    assert_eq!(gw.unread("u").await, 2);

    let resp = gw.delete(&format!("/api/v1/users/u/notifications/{b}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(gw.unread("u").await, 1);
    let resp = gw.delete(&format!("/api/v1/users/u/notifications/{b}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 404, "deleting twice finds nothing");

    let all: Value = gw.post("/api/v1/users/u/notifications/read_all", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["up_to"], broadcast);
    assert_eq!(gw.unread("u").await, 0);
    assert_eq!(gw.unread("v").await, 1, "the broadcast is still unread for others");

    let resp = gw.post("/api/v1/users/u/notifications/999999/read", &t).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "not_found");
}

#[tokio::test]
async fn read_state_is_pushed_to_the_users_open_tabs() {
    let gw = spawn_gateway().await;
    let mut tab1 = gw.connect("u").await;
    let mut tab2 = gw.connect("u").await;
    let id = notify(&gw, "u", "x").await;
    tab1.notification().await;
    tab2.notification().await;
    let t = gw.token("u");

    gw.post(&format!("/api/v1/users/u/notifications/{id}/read"), &t).send().await.unwrap();
    for tab in [&mut tab1, &mut tab2] {
        let f = tab.frame().await;
        assert_eq!(f["type"], "read");
        assert_eq!(f["ids"], json!([id]));
    }
    gw.post("/api/v1/users/u/notifications/read_all", &t).send().await.unwrap();
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(tab.frame().await["type"], "read_all");
    }
    gw.delete(&format!("/api/v1/users/u/notifications/{id}"), &t).send().await.unwrap();
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(tab.frame().await, json!({"type": "deleted", "ids": [id]}));
    }
}

#[tokio::test]
async fn a_service_key_may_read_any_inbox() {
    let gw = spawn_gateway().await;
    notify(&gw, "u", "x").await;
    let resp = gw.get("/api/v1/users/u/notifications", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn dev_endpoints_exist_only_when_enabled() {
    let gw = spawn_gateway().await;
    let r = gw.raw().post(gw.url("/api/v1/dev/token")).json(&json!({"user_id": "demo"})).send().await.unwrap();
    assert_eq!(r.status(), 404, "off by default");
    let r = gw.post("/api/v1/dev/events?exchange=sgad.notifications", &gw.token("demo")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let gw = spawn_gateway_with(|s| s.auth.dev_token_endpoint = true).await;
    let r = gw.raw().post(gw.url("/api/v1/dev/token")).json(&json!({"user_id": "demo"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let mut tab = gw.connect("demo").await;
    // A signed-in user may publish through the dev route (the web demo's panel), never through the real one.
    let body = json!({"user_id": "demo", "title": "from the demo", "message": "m", "type": "info"});
    let r = gw.post("/api/v1/dev/events?exchange=sgad.notifications", &token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(tab.notification().await["notification"]["title"], "from the demo");
    let r = gw.post("/api/v1/events?exchange=sgad.notifications", &token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = gw.raw().post(gw.url("/api/v1/dev/events")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "not anonymous");
}

/// DNS rebinding: a page on any site can point its own name at 127.0.0.1 and call a gateway on loopback as its
/// own origin. The dev endpoints answer only a loopback name, an IP address or a host of the allowed origins.
#[tokio::test]
async fn the_dev_endpoints_refuse_a_host_a_rebound_page_would_send() {
    let gw = spawn_gateway_with(|s| {
        s.auth.dev_token_endpoint = true;
        s.websocket.allowed_origins = vec!["https://demo.example.org".into()];
    })
    .await;
    let port = gw.url("/").split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    let mint = |host: String| {
        gw.raw().post(gw.url("/api/v1/dev/token")).header("host", host).json(&json!({"user_id": "victim"})).send()
    };
    for host in [format!("attacker.example:{port}"), "rebind.attacker.example".into(), format!("localhost.evil:{port}")]
    {
        let r = mint(host.clone()).await.unwrap();
        assert_eq!(r.status(), 403, "{host}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{host}: {body}");
        assert!(body["message"].as_str().unwrap().contains("rebind"), "{host}: {body}");
    }
    let token = gw.token("victim");
    let event = json!({"user_id": "someone", "title": "t", "message": "m", "type": "info"});
    let r = gw
        .post("/api/v1/dev/events?exchange=sgad.notifications", &token)
        .header("host", "attacker.example")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "publishing too");
    for host in [
        format!("localhost:{port}"),
        format!("app.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "demo.example.org".into(),
    ] {
        assert_eq!(mint(host.clone()).await.unwrap().status(), 200, "{host}");
    }
}

/// The dev token endpoint reads its body as every other JSON endpoint does: JSON with or without a content type,
/// a form refused with 415, a number taken as the user id's text, and mints no token for a user id no inbox path
/// can name (422, as an event's or an alias's user id).
#[tokio::test]
async fn the_dev_token_endpoint_takes_json_bodies_and_numeric_user_ids() {
    let gw = spawn_gateway_with(|s| s.auth.dev_token_endpoint = true).await;
    let url = gw.url("/api/v1/dev/token");
    let r = gw.raw().post(&url).body(r#"{"user_id": "plain"}"#).send().await.unwrap();
    assert_eq!(r.status(), 200, "no content type: read as JSON");
    assert_eq!(r.json::<Value>().await.unwrap()["user_id"], "plain");
    let r = gw.raw().post(&url).json(&json!({"user_id": 42})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap();
    assert_eq!(token["user_id"], "42");
    let count = gw.get("/api/v1/users/42/notifications/unread_count", token["token"].as_str().unwrap());
    assert_eq!(count.send().await.unwrap().status(), 200, "the token is user 42's");
    let r = gw
        .raw()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user_id=42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_media_type");
    let r = gw.raw().post(&url).body("{\"user_id\":").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_json", "not JSON");
    let r = gw.raw().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["error"], "bad_request", "JSON of another shape");
    assert!(body["message"].as_str().unwrap().contains("user_id"), "{body}");
    // A misspelt field or a query parameter is refused, not ignored (`ttl` minted a token for an hour).
    let r = gw.raw().post(&url).json(&json!({"user_id": "42", "ttl": 60})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body = r.json::<Value>().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("ttl"), "{body}");
    let r = gw.raw().post(format!("{url}?ttl_secs=60")).json(&json!({"user_id": "42"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_query");
    // No token for a user no inbox path can name (the checks an event's user id passes).
    for (bad, code) in [
        (json!({"user_id": [1]}), "missing_user_id"),
        (json!({"user_id": "  "}), "missing_user_id"),
        (json!({"user_id": "a\u{0}b"}), "invalid_user_id"),
        (json!({"user_id": "y".repeat(300)}), "user_id_too_long"),
    ] {
        let r = gw.raw().post(&url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 422, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code, "{bad}");
    }
}

/// The demo is served at `/` with its files; every other path is a JSON 404 (before, any unknown path answered
/// 200 with the demo's page, so a health probe sent to `/health` by mistake always passed).
#[tokio::test]
async fn unknown_routes_are_a_json_404_even_with_the_demo_served() {
    let demo = tempfile::tempdir().unwrap();
    std::fs::write(demo.path().join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::create_dir(demo.path().join("assets")).unwrap();
    std::fs::write(demo.path().join("assets/app.js"), "console.log('demo')").unwrap();
    let dir = demo.path().to_owned();
    let gw = spawn_gateway_with(move |s| s.server.demo_dir = dir).await;
    let page = gw.raw().get(gw.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("demo"));
    let asset = gw.raw().get(gw.url("/assets/app.js")).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    for path in [
        "/health",
        "/some/page",
        "/favicon.ico",
        "/ws/",
        "/api/v1/nope",
        "/api/v2/users/u/notifications",
        "/api/v1/users/u/notifications/1/x",
    ] {
        let r = gw.raw().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found", "{path}");
    }
}

/// Issue 12: retention runs by itself in the background (here every second, with a cap of 2 per user).
#[tokio::test]
async fn the_retention_task_prunes_beyond_the_cap_in_the_background() {
    let gw = spawn_gateway_with(|s| {
        s.store.max_per_user = 2;
        s.store.prune_interval_secs = 1;
    })
    .await;
    let mut tab = gw.connect("capped").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(notify(&gw, "capped", &format!("n{i}")).await);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let kept: Vec<i64> =
            gw.inbox("capped").await["items"].as_array().unwrap().iter().map(|n| n["id"].as_i64().unwrap()).collect();
        if kept.len() == 2 {
            assert_eq!(kept, vec![ids[4], ids[3]], "the newest stay");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {} notifications", kept.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"herald_pruned_rows_total{kind="notification"}"#), "counted in metrics");
    // The open tab's badge follows: the last counts it gets are the pruned inbox's (it said 5 unread until the
    // user's next change).
    assert_eq!(tab.last_counts_when_quiet().await, Some((2, 2)));
}
