//! The admin console's side of the server (issue 18): `GET /api/v1/admin/stats`, `POST
//! /api/v1/admin/rules/dry-run`, the admin API without CORS, and the page at `/admin` with its headers. (The
//! page itself, in chromium: admin-console/e2e/console.test.mjs.)

use herald::config::{Scope, Settings};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const READER: &str = "console-reader-key-0123456789";
const APP: &str = "https://app.example.com";

fn with_reader(s: &mut Settings) {
    s.auth.service_keys.push(scoped("reader", READER, &[Scope::InboxRead]));
}

async fn stats(gw: &Gateway) -> Value {
    let resp = gw.get("/api/v1/admin/stats", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("{path} in {v}"))
}

async fn dry_run(gw: &Gateway, body: Value) -> Value {
    let resp = gw.post("/api/v1/admin/rules/dry-run", SERVICE_KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{body}");
    resp.json().await.unwrap()
}

/// The counters move with real traffic: an event posted for a connected user is counted as received, stored
/// and delivered, its delivery latency observed, and the user's session counted on this node. (The recorder is
/// shared by every gateway of this test binary, so counters are compared before and after, at least.)
#[tokio::test]
async fn stats_count_an_ingested_event_its_notification_and_its_delivery() {
    let gw = spawn_gateway().await;
    let doc = crate::openapi::served(&gw).await;
    let mut alice = gw.connect("stats-alice").await;
    let before = stats(&gw).await;
    assert_eq!(n(&before, "/sessions_open"), 1, "this node's registry: {before}");
    assert_eq!(n(&before, "/users_online"), 1);

    let event = json!({"event_type": "user.login", "user_id": "stats-alice", "timestamp": "2026-11-29T04:00:00Z",
        "source": "accounts", "data": {}});
    let resp = gw.post_event("", "user.login", &event).await;
    assert_eq!(resp.status(), 202);
    alice.notification().await;

    let resp = gw.get("/api/v1/admin/stats", SERVICE_KEY).send().await.unwrap();
    let after = crate::openapi::conforms(&doc, "get", "/api/v1/admin/stats", resp).await;
    for counter in ["/events_received", "/notifications_stored", "/deliveries", "/delivery_latency/count"] {
        assert!(n(&after, counter) > n(&before, counter), "{counter}: {before} → {after}");
    }
    assert!(n(&after, "/events_by_outcome/stored") >= 1, "{after}");
    let latency = &after["delivery_latency"];
    assert!(latency["p50"].as_f64().is_some() && latency["p99"].as_f64().is_some(), "{latency}");
    let buckets = latency["buckets"].as_array().unwrap();
    assert!(buckets.windows(2).all(|w| w[0]["le"].as_f64() < w[1]["le"].as_f64()), "ordered bounds: {latency}");
    assert!(buckets.windows(2).all(|w| w[0]["count"].as_u64() <= w[1]["count"].as_u64()), "cumulative");
    assert!(buckets.last().unwrap()["count"].as_u64() <= latency["count"].as_u64());
    gw.stop().await.unwrap();
}

/// Stats and the dry run are operators' endpoints: no credential 401, a user token or a key without `admin` 403.
#[tokio::test]
async fn stats_and_dry_run_need_a_service_key_with_the_admin_scope() {
    let gw = spawn_gateway_with(with_reader).await;
    let user = gw.token("alice");
    let body = json!({"event": {"user_id": "alice", "event_type": "user.login"}});
    for (bearer, status, code) in
        [("", 401, "missing_credentials"), (user.as_str(), 403, "forbidden"), (READER, 403, "insufficient_scope")]
    {
        let get = gw.raw().get(gw.url("/api/v1/admin/stats"));
        let post = gw.raw().post(gw.url("/api/v1/admin/rules/dry-run")).json(&body);
        for req in [get, post] {
            let req = if bearer.is_empty() { req } else { req.bearer_auth(bearer) };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), status, "{bearer:.8}");
            assert_eq!(resp.json::<Value>().await.unwrap()["error"], code);
        }
    }
    gw.stop().await.unwrap();
}

/// A pasted event: the rule that matches and the notification it would make; nothing is stored.
#[tokio::test]
async fn a_dry_run_names_the_rule_and_the_notification_and_stores_nothing() {
    let gw = spawn_gateway().await;
    let doc = crate::openapi::served(&gw).await;
    let f = fixture("http-user-registered.json");
    let req = json!({"event": f["body"], "routing_key": f["routing_key"]});
    let resp = gw.post("/api/v1/admin/rules/dry-run", SERVICE_KEY).json(&req).send().await.unwrap();
    let r = crate::openapi::conforms(&doc, "post", "/api/v1/admin/rules/dry-run", resp).await;
    assert_eq!((r["transport"].as_str(), r["dead_letter"].as_bool()), (Some("http"), Some(false)), "{r}");
    let v = &r["verdict"];
    assert_eq!(v["outcome"], "stored", "{r}");
    assert_eq!(v["recipients"], json!(["123"]), "{r}");
    assert!(v["rule"].as_str().is_some_and(|s| !s.is_empty()) && v["title"].as_str().is_some(), "{r}");
    assert_eq!(r["event"]["routing_key"], "user.registered");
    assert!(r["report"].as_str().unwrap().starts_with(&format!("rule {}: notify 123", v["rule"].as_str().unwrap())));
    assert_eq!(gw.unread("123").await, 0, "a dry run stores nothing");

    // No rule: `422 unmatched` over HTTP, a dead letter over AMQP (an exchange given).
    let stray = json!({"user_id": "x", "note": "nobody routes this"});
    let r = dry_run(&gw, json!({"event": stray, "routing_key": "stray.thing"})).await;
    assert_eq!((r["verdict"]["outcome"].as_str(), r["dead_letter"].as_bool()), (Some("unmatched"), Some(true)));
    assert!(r["report"].as_str().unwrap().contains("422 `unmatched`"), "{r}");
    let r = dry_run(&gw, json!({"event": stray, "routing_key": "stray.thing", "exchange": "events.topic"})).await;
    assert_eq!((r["verdict"]["outcome"].as_str(), r["dead_letter"].as_bool()), (Some("unmatched"), Some(true)));
    assert_eq!(r["transport"], "amqp");
    // A matching rule but no user id: the dead letter and its reason.
    let r = dry_run(&gw, json!({"event": {"event_type": "user.registered", "data": {}}})).await;
    assert_eq!(r["verdict"]["outcome"], "dead_letter", "{r}");
    assert_eq!(r["verdict"]["reason"], "missing_user_id", "{r}");
    assert!(r["event"].is_object() && r["dead_letter"] == true);
    // Not an object at all: it does not even decode.
    let r = dry_run(&gw, json!({"event": [1, 2], "routing_key": "user.registered"})).await;
    assert_eq!((r["verdict"]["outcome"].as_str(), r["event"].is_null()), (Some("dead_letter"), true), "{r}");
    gw.stop().await.unwrap();
}

/// Alias recipients are resolved from the inbox's aliases, as the commit would: unknown → the dead letter it
/// would be; once the alias is taught → the user it stands for.
#[tokio::test]
async fn a_dry_run_resolves_alias_recipients_from_the_aliases_the_inbox_knows() {
    let gw = spawn_gateway().await;
    let f = fixture("medtrack-stage-created-core.json");
    let req = json!({"event": f["body"], "routing_key": f["routing_key"], "exchange": f["exchange"]});
    let r = dry_run(&gw, req.clone()).await;
    assert_eq!(r["verdict"]["reason"], "unresolved_recipient", "{r}");
    let student = f["body"]["payload"]["student_id"].as_str().unwrap();
    let resp = gw
        .raw()
        .put(gw.url(&format!("/api/v1/aliases/student/{student}")))
        .bearer_auth(SERVICE_KEY)
        .json(&json!({"user_id": "dry-ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = dry_run(&gw, req).await;
    assert_eq!(r["verdict"]["outcome"], "stored", "{r}");
    assert_eq!(r["verdict"]["recipients"], json!([format!("dry-ana (via student alias {student})")]), "{r}");
    gw.stop().await.unwrap();
}

/// A body that is not JSON of the request's shape is a 400 with the reason, not a verdict.
#[tokio::test]
async fn a_dry_run_of_a_body_that_is_not_json_of_its_shape_is_a_400_with_the_reason() {
    let gw = spawn_gateway().await;
    // Not JSON: `invalid_json`; JSON of another shape: `bad_request` (as on every JSON endpoint).
    for (body, why, code) in [
        ("{\"event\": ", "EOF", "invalid_json"),
        ("{}", "missing field `event`", "bad_request"),
        ("{\"event\": {}, \"routing_keys\": \"x\"}", "unknown field `routing_keys`", "bad_request"),
        ("{\"event\": {}, \"exchange\": 7}", "invalid type", "bad_request"),
    ] {
        let resp = gw
            .post("/api/v1/admin/rules/dry-run", SERVICE_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"], code, "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(why), "{body}: {e}");
    }
    gw.stop().await.unwrap();
}

fn cors_headers(h: &reqwest::header::HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_owned()).filter(|k| k.starts_with("access-control-")).collect()
}

/// Another origin's page cannot read the admin API, even one the REST API allows and even with `*`: no CORS
/// header on a preflight (a JSON 405) or on the request itself. The inbox keeps its CORS.
#[tokio::test]
async fn the_admin_api_answers_no_cors_to_any_origin() {
    for allowed in [vec![APP.to_owned()], vec!["*".to_owned()]] {
        let gw = spawn_gateway_with(|s| s.server.cors_allowed_origins = Some(allowed.clone())).await;
        for (path, method) in [
            ("/api/v1/admin/stats", "GET"),
            ("/api/v1/admin/presence", "GET"),
            ("/api/v1/admin/dead-letters", "GET"),
            ("/api/v1/admin/dead-letters/redrive", "POST"),
            ("/api/v1/admin/rules/dry-run", "POST"),
            ("/api/v1/admin/rules/reload", "POST"),
            ("/api/v1/admin/trace/stats", "GET"),
            ("/api/v1/admin/users/alice/trace", "GET"),
            ("/api/v1/admin/events/e1/trace", "GET"),
        ] {
            let resp = gw
                .raw()
                .request(Method::OPTIONS, gw.url(path))
                .header("origin", APP)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", "authorization,content-type")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 405, "{allowed:?} OPTIONS {path}");
            assert!(cors_headers(resp.headers()).is_empty(), "{allowed:?} {path}: {:?}", resp.headers());
        }
        let resp = gw.get("/api/v1/admin/stats", SERVICE_KEY).header("origin", APP).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(cors_headers(resp.headers()).is_empty(), "{allowed:?}: {:?}", resp.headers());
        // The inbox is still readable from the allowed origin.
        let resp = gw.get("/api/v1/users/alice/notifications", &gw.token("alice")).header("origin", APP).send();
        let resp = resp.await.unwrap();
        assert!(resp.headers().contains_key("access-control-allow-origin"), "{allowed:?}");
        gw.stop().await.unwrap();
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn assert_locked_down(resp: &reqwest::Response, what: &str) {
    let csp = header(resp, "content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.split(';').any(|d| d.trim() == directive), "{what}: {directive} in {csp:?}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains('*'), "{what}: {csp}");
    assert_eq!(header(resp, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(resp, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(resp, "x-frame-options"), "DENY", "{what}");
}

/// The built console at `/admin` (and `/admin/`), its assets below it; every answer, a 404 included, carries the
/// CSP (same origin only, never framed), no referrer and nosniff. An unknown asset is a 404, not the page.
#[tokio::test]
async fn the_console_is_served_at_admin_with_a_strict_content_security_policy() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<!doctype html><title>Herald admin</title>").unwrap();
    std::fs::create_dir(dist.path().join("assets")).unwrap();
    std::fs::write(dist.path().join("assets/index-abc.js"), "console.log(1)").unwrap();
    let dir = dist.path().to_owned();
    let gw = spawn_gateway_with(|s| s.server.admin_dir = dir).await;
    for path in ["/admin", "/admin/"] {
        let resp = gw.raw().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(header(&resp, "content-type").starts_with("text/html"), "{path}");
        assert_locked_down(&resp, path);
        assert!(resp.text().await.unwrap().contains("Herald admin"), "{path}");
    }
    let resp = gw.raw().get(gw.url("/admin/assets/index-abc.js")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").contains("javascript"));
    assert_locked_down(&resp, "an asset");
    let resp = gw.raw().get(gw.url("/admin/assets/nope.js")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_locked_down(&resp, "a missing asset");
    gw.stop().await.unwrap();
}

/// Not built (the directory does not exist yet): `/admin` is a JSON 404 that says so, with the same headers;
/// disabled (`""`): the same.
#[tokio::test]
async fn without_a_built_console_admin_is_a_404_that_says_so() {
    for dir in ["no-such-console-dist", ""] {
        let gw = spawn_gateway_with(|s| s.server.admin_dir = dir.into()).await;
        let resp = gw.raw().get(gw.url("/admin")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{dir:?}");
        assert_locked_down(&resp, dir);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].as_str().unwrap().contains("admin console is not built"), "{body}");
        gw.stop().await.unwrap();
    }
}
