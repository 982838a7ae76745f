//! Bad input of every kind gets a clear 4xx or close code, and nothing already stored changes.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;

async fn stored_snapshot(gw: &Gateway) -> Value {
    json!([
        gw.inbox("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40").await,
        gw.unread("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40").await
    ])
}

async fn post_raw(gw: &Gateway, query: &str, content_type: &str, key: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = gw.raw().post(gw.url(&format!("/api/v1/events{query}"))).body(body);
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_ingest_requests_get_a_4xx_with_a_reason_and_change_nothing() {
    let gw = spawn_gateway().await;
    gw.post_fixture("medtrack-student-created.json").await;
    let before = stored_snapshot(&gw).await;
    let ok_body = serde_json::to_vec(&fixture("medtrack-stage-accepted.json")["body"]).unwrap();
    let ok = std::str::from_utf8(&ok_body).unwrap();
    let tiny = format!("[{}]", vec!["0"; 400_000].join(",")).into_bytes();
    let broken_tail = format!("[{},{{]", vec!["0"; 1_500].join(",")).into_bytes();
    let json_ct = "application/json";
    let key = Some(SERVICE_KEY);
    let big = {
        let mut v = br#"{"event_type":"stage.accepted","payload":{"pad":""#.to_vec();
        v.extend(std::iter::repeat_n(b'x', gw.settings.server.max_body_bytes));
        v.extend(br#""}}"#);
        v
    };
    let user_token = gw.token("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40");
    let long_key = format!("?routing_key={}z", "b.".repeat(herald::event::MAX_ROUTING_KEY_LEN / 2 + 1));
    // An exchange name is an AMQP short string: a longer one would be stored once per event (the trace, `source`).
    let long_exchange = format!("?exchange=billing.{}", "x".repeat(herald::event::MAX_EXCHANGE_LEN));
    // (what, query, content type, bearer, body, status, error code)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "?routing_key=stage.accepted",
            json_ct,
            key,
            b"{\"payload\": ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "invalid UTF-8",
            "?routing_key=stage.accepted",
            json_ct,
            key,
            vec![b'"', 0xff, 0xfe, b'"'],
            400,
            "invalid_utf8",
        ),
        ("unknown shape", "", json_ct, key, br#"{"hello":"world"}"#.to_vec(), 422, "unknown_shape"),
        ("not an object", "?routing_key=a.b", json_ct, key, b"42".to_vec(), 422, "not_an_object"),
        (
            "missing user id",
            "",
            json_ct,
            key,
            br#"{"event_type":"stage.accepted","payload":{"stage_id":"s"}}"#.to_vec(),
            422,
            "missing_user_id",
        ),
        ("empty array", "", json_ct, key, b"[]".to_vec(), 422, "empty_batch"),
        (
            "1,001 events",
            "",
            json_ct,
            key,
            format!("[{}]", vec![ok; 1001].join(",")).into_bytes(),
            422,
            "batch_too_large",
        ),
        // Past the cap elements are only counted, not built; still syntax-checked to the end.
        ("400,000 tiny elements", "", json_ct, key, tiny.clone(), 422, "batch_too_large"),
        ("past the cap, broken", "", json_ct, key, broken_tail, 400, "invalid_json"),
        ("routing key too long", &long_key, json_ct, key, ok_body.clone(), 422, "routing_key_too_long"),
        ("exchange name too long", &long_exchange, json_ct, key, ok_body.clone(), 422, "exchange_too_long"),
        ("oversized body", "", json_ct, key, big, 413, "body_too_large"),
        ("wrong content type", "", "text/plain", key, ok_body.clone(), 415, "unsupported_media_type"),
        ("a form", "", "application/x-www-form-urlencoded", key, ok_body.clone(), 415, "unsupported_media_type"),
        ("no content type, not JSON", "", "", key, b"a=1".to_vec(), 400, "invalid_json"),
        ("no key", "", json_ct, None, ok_body.clone(), 401, "missing_credentials"),
        ("wrong key", "", json_ct, Some("not-the-service-key-at-all"), ok_body.clone(), 401, "invalid_credentials"),
        (
            "a user token is not a service key",
            "",
            json_ct,
            Some(&user_token),
            ok_body.clone(),
            401,
            "invalid_credentials",
        ),
    ];
    for (name, query, ct, key, body, status, code) in cases {
        let (got, reason) = post_raw(&gw, query, ct, key, body).await;
        assert_eq!(got, status, "{name}: {reason}");
        assert_eq!(reason["error"], code, "{name}: {reason}");
        assert!(reason["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: a human reason");
    }

    // One bad element rejects the whole array, naming it; the good ones are not stored either.
    let batch =
        json!([fixture("medtrack-stage-accepted.json")["body"], {"event_type": "stage.accepted", "payload": {}}]);
    let (got, reason) = post_raw(&gw, "", json_ct, key, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(got, 422);
    assert!(reason["message"].as_str().unwrap().contains("[1]"), "{reason}");

    assert_eq!(stored_snapshot(&gw).await, before, "nothing already stored was lost or altered");
}

/// A refresh token as Django SimpleJWT issues it (the access token's claims but `token_type`).
fn simplejwt_refresh(user: &str, now: i64) -> Value {
    json!({"token_type": "refresh", "exp": now + 86_400, "iat": now, "jti": "9f0c", "sub": user})
}

/// A refresh token signed with the access tokens' key reads no inbox: the REST side of the handshake's case.
#[tokio::test]
async fn a_refresh_token_reads_no_inbox() {
    let gw = spawn_gateway().await;
    let secret = gw.settings.auth.jwt_secret.expose().as_bytes().to_vec();
    let refresh = token(simplejwt_refresh("u1", chrono::Utc::now().timestamp()), Algorithm::HS256, &secret);
    let resp = gw.get("/api/v1/users/u1/notifications", &refresh).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("refresh token"), "{body}");
}

fn token(claims: Value, alg: Algorithm, secret: &[u8]) -> String {
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn bad_session_handshakes_are_refused_with_a_status_and_reason() {
    let gw = spawn_gateway().await;
    let secret = gw.settings.auth.jwt_secret.expose().as_bytes().to_vec();
    let now = chrono::Utc::now().timestamp();
    let none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6NDEwMjQ0NDgwMH0.";
    let long = "u".repeat(300);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("missing token", "/ws/u1".into(), 401, "missing_credentials"),
        // A broadcast cursor alone was ignored (no replay, no error).
        (
            "since_broadcast without since",
            format!("/ws/u1?token={}&since_broadcast=0", gw.token("u1")),
            400,
            "bad_query",
        ),
        // A negative cursor read as "history was pruned below you" (a false `truncated`).
        ("negative since", format!("/ws/u1?token={}&since=-1", gw.token("u1")), 400, "bad_query"),
        // A misspelt cursor opened the session live, without the replay it asked for.
        ("misspelt since", format!("/ws/u1?token={}&sinse=3", gw.token("u1")), 400, "bad_query"),
        (
            "negative since_broadcast",
            format!("/ws/u1?token={}&since=0&since_broadcast=-3", gw.token("u1")),
            400,
            "bad_query",
        ),
        ("garbage token", "/ws/u1?token=garbage".into(), 401, "invalid_credentials"),
        ("alg none", format!("/ws/u1?token={none_alg}"), 401, "invalid_credentials"),
        (
            "expired",
            format!("/ws/u1?token={}", token(json!({"sub": "u1", "exp": now - 600}), Algorithm::HS256, &secret)),
            401,
            "token_expired",
        ),
        (
            "no exp",
            format!("/ws/u1?token={}", token(json!({"sub": "u1"}), Algorithm::HS256, &secret)),
            401,
            "invalid_credentials",
        ),
        (
            "wrong key",
            format!(
                "/ws/u1?token={}",
                token(json!({"sub": "u1", "exp": now + 600}), Algorithm::HS256, b"some-other-secret-key")
            ),
            401,
            "invalid_credentials",
        ),
        (
            "other algorithm",
            format!("/ws/u1?token={}", token(json!({"sub": "u1", "exp": now + 600}), Algorithm::HS512, &secret)),
            401,
            "invalid_credentials",
        ),
        ("token for another user", format!("/ws/u1?token={}", gw.token("u2")), 403, "forbidden"),
        // A valid token for an id no inbox can have: REST refuses that path, and so does the handshake (a session
        // for it could never be sent a notification).
        ("an id over 256 bytes", format!("/ws/{long}?token={}", gw.token(&long)), 400, "bad_path"),
        // Django SimpleJWT signs its day-long refresh tokens with the access tokens' key.
        (
            "refresh token",
            format!("/ws/u1?token={}", token(simplejwt_refresh("u1", now), Algorithm::HS256, &secret)),
            401,
            "invalid_credentials",
        ),
    ];
    for (name, path, status, code) in cases {
        let (got, body) = gw.refused(gw.ws_request(&path)).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"], code, "{name}: {body}");
    }

    let mut req = gw.ws_request(&format!("/ws/u1?token={}", gw.token("u1")));
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let (got, body) = gw.refused(req).await;
    assert_eq!(got, 403, "foreign origin: {body}");
    assert!(body["message"].as_str().unwrap().contains("evil.example"));

    let mut req = gw.ws_request(&format!("/ws/u1?token={}", gw.token("u1")));
    req.headers_mut().insert("origin", "http://localhost:8080".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("an allowed origin connects");
}

/// A browser hides a refused handshake's status from the page, which sees 1006 and reconnects: the operator
/// learns of it from the log, once per origin per window (then how many more), not from a counter alone.
#[tokio::test]
async fn a_refused_origin_is_logged_once_per_origin_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "", "");
    let herald = spawn_herald_process_with(&config, &[("HERALD__LOG__FORMAT", "json")], None);
    let ws = herald.url.replacen("http", "ws", 1);
    for origin in ["http://localhost:3000", "http://localhost:3000", "http://localhost:3000", "https://other.example"] {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("{ws}/ws/u1"))
                .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let err = tokio_tungstenite::connect_async(req).await.expect_err("refused");
        assert!(err.to_string().contains("403"), "{origin}: {err}");
    }
    let lines: Vec<Value> = eventually("the refusals logged", WAIT, async || {
        let lines: Vec<Value> = herald
            .output()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("websocket refused: origin not allowed")))
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let origins: Vec<&str> = lines.iter().map(|l| l["origin"].as_str().unwrap()).collect();
    assert_eq!(origins, ["http://localhost:3000", "https://other.example"], "{lines:#?}");
    assert!(lines[0]["message"].as_str().unwrap().contains("websocket.allowed_origins"), "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN");
}

#[tokio::test]
async fn a_missing_origin_is_refused_when_configured() {
    let gw = spawn_gateway_with(|s| s.websocket.allow_missing_origin = false).await;
    let (status, _) = gw.refused(gw.ws_request(&format!("/ws/u1?token={}", gw.token("u1")))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn nobody_reads_or_changes_another_users_inbox() {
    let gw = spawn_gateway().await;
    gw.post_fixture("sgad-notification-user.json").await;
    let owner = "3e7a1b2c-4d5e-4f6a-8b7c-9d0e1f2a3b4c";
    let before = gw.inbox(owner).await;
    let id = before["items"][0]["id"].as_i64().unwrap();
    let mallory = gw.token("mallory");
    let base = format!("/api/v1/users/{owner}/notifications");
    let responses = vec![
        gw.get(&base, &mallory).send().await.unwrap(),
        gw.get(&format!("{base}/unread_count"), &mallory).send().await.unwrap(),
        gw.post(&format!("{base}/{id}/read"), &mallory).send().await.unwrap(),
        gw.post(&format!("{base}/read_all"), &mallory).send().await.unwrap(),
        gw.delete(&format!("{base}/{id}"), &mallory).send().await.unwrap(),
    ];
    for r in responses {
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");
    }
    // Mallory acting on her own inbox cannot touch the owner's notification either.
    let r = gw.post(&format!("/api/v1/users/mallory/notifications/{id}/read"), &mallory).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = gw.raw().get(gw.url(&base)).send().await.unwrap();
    assert_eq!(r.status(), 401, "no credentials at all");
    assert_eq!(gw.inbox(owner).await, before);
}

#[tokio::test]
async fn bad_inbox_queries_get_400_with_a_reason() {
    let gw = spawn_gateway().await;
    let t = gw.token("u");
    for q in ["limit=0", "limit=101", "limit=abc", "before=xyz", "unread=maybe"] {
        let r = gw.get(&format!("/api/v1/users/u/notifications?{q}"), &t).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_query", "{q}");
    }
}

/// An endpoint that takes no query parameter refuses one (`bad_query`, naming it) after the caller's
/// credentials, instead of ignoring it: `read_all?type=welcome` marked every notification read, which no one can
/// undo.
#[tokio::test]
async fn a_parameter_an_endpoint_does_not_take_is_refused_and_changes_nothing() {
    let gw = spawn_gateway().await;
    for kind in ["welcome", "digest"] {
        let event = json!({"user_id": "q", "title": kind, "message": "m", "type": kind});
        assert_eq!(gw.post_event("sgad.notifications", "", &event).await.status(), 202);
    }
    let t = gw.token("q");
    let id = gw.inbox("q").await["items"][0]["id"].as_i64().unwrap();
    let http = gw.raw();
    let at = |p: &str| gw.url(&format!("/api/v1/users/q{p}"));
    let requests = [
        http.post(at("/notifications/read_all?type=welcome")),
        http.post(at("/notifications/seen_all?before=5")),
        http.get(at("/notifications/counts?type=welcome")),
        http.get(at("/notifications/unread_count?unread=true")),
        http.post(at(&format!("/notifications/{id}/read?all=true"))),
        http.post(at(&format!("/notifications/{id}/archive?x"))),
        http.delete(at(&format!("/notifications/{id}?soft=1"))),
        http.post(at("/notifications/batch?dry_run=true")).json(&json!({"action": "read", "ids": [id]})),
        http.get(at("/preferences?type=welcome")),
        http.patch(at("/preferences?type=welcome")).json(&json!({"types": {"welcome": "muted"}})),
    ];
    for request in requests {
        let resp = request.bearer_auth(&t).send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(resp.status(), 400, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_query", "{url}: {body}");
        assert!(body["message"].as_str().unwrap().contains("unknown query parameter `"), "{url}: {body}");
    }
    assert_eq!(gw.unread("q").await, 2, "nothing was marked read");
    assert_eq!(gw.inbox("q").await["items"].as_array().unwrap().len(), 2, "nothing archived or deleted");
    // The service keys' endpoints too: `?dry_run=true` reloaded the rules on every node, and a dry run's
    // `?exchange=` (ingest's form) was ignored for a verdict on another transport.
    let metrics = || async { gw.raw().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let reloads =
        |m: &str| m.lines().filter(|l| l.starts_with("herald_rules_reloads_total")).collect::<Vec<_>>().join("");
    let before = reloads(&metrics().await);
    let event = json!({"event": {"user_id": "q", "title": "t", "message": "m"}});
    let requests = [
        http.post(gw.url("/api/v1/admin/rules/reload?dry_run=true")),
        http.post(gw.url("/api/v1/admin/rules/dry-run?exchange=sgad.notifications")).json(&event),
        http.get(gw.url("/api/v1/admin/dead-letters?limt=5")),
        http.post(gw.url("/api/v1/admin/dead-letters/redrive?all=true")).json(&json!({"all": true})),
        http.get(gw.url("/api/v1/aliases/student/1?x=1")),
        http.put(gw.url("/api/v1/aliases/student/1?user_id=zed")).json(&json!({"user_id": "q"})),
    ];
    for request in requests {
        let resp = request.bearer_auth(SERVICE_KEY).send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(resp.status(), 400, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_query", "{url}: {body}");
    }
    assert_eq!(reloads(&metrics().await), before, "no reload ran");
    let resp = gw.get("/api/v1/aliases/student/1", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 404, "no alias was taught");
    // A field an alias body does not take is refused as every other body's is.
    let resp = http.put(gw.url("/api/v1/aliases/student/1")).bearer_auth(SERVICE_KEY);
    let resp = resp.json(&json!({"user_id": "q", "alias": "2"})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "bad_request");
    // Credentials first: without them, a 401 whatever the query.
    let resp = http.post(at("/notifications/read_all?type=welcome")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

/// A notification type is what a preference can name: one that prints blank is the default's (`info`), one over
/// 200 bytes is refused before anything is stored (`type_too_long`). Before, both were stored and could be listed
/// and filtered on, but never muted.
#[tokio::test]
async fn a_blank_type_is_the_default_and_one_no_preference_can_name_is_refused() {
    let gw = spawn_gateway().await;
    let notify = |kind: String| {
        serde_json::to_vec(&json!({"user_id": "typed", "title": "t", "message": "m", "type": kind})).unwrap()
    };
    let query = "?exchange=sgad.notifications";
    let (status, answer) = post_raw(&gw, query, "application/json", Some(SERVICE_KEY), notify("  ".into())).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(gw.inbox("typed").await["items"][0]["type"], "info");
    let (status, answer) = post_raw(&gw, query, "application/json", Some(SERVICE_KEY), notify("t".repeat(201))).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("type_too_long")), "{answer}");
    let (status, answer) = post_raw(&gw, query, "application/json", Some(SERVICE_KEY), notify("t".repeat(200))).await;
    assert_eq!(status, 202, "{answer}");
    let items = gw.inbox("typed").await["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "the one refused was not stored");
    let muted = json!({"types": {"t".repeat(200): "muted"}});
    let put = gw.raw().put(gw.url("/api/v1/users/typed/preferences")).bearer_auth(gw.token("typed"));
    let r = put.json(&muted).send().await.unwrap();
    assert_eq!(r.status(), 200, "the longest type stored can be muted");
    // A control character: no preference can name it (PostgreSQL stored `a\u{fffd}b` for `a\0b`, and answered
    // a muted type the next read did not show).
    let (status, answer) = post_raw(&gw, query, "application/json", Some(SERVICE_KEY), notify("a\u{0}b".into())).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_type")), "{answer}");
    let put = gw.raw().put(gw.url("/api/v1/users/typed/preferences")).bearer_auth(gw.token("typed"));
    let r = put.json(&json!({"types": {"a\u{0}b": "muted"}})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    assert_eq!(gw.inbox("typed").await["items"].as_array().unwrap().len(), 2, "nothing more was stored");
}

/// What an event teaches is bounded as what it addresses: an alias over 256 bytes is refused before anything is
/// stored (`alias_too_long`; on PostgreSQL its index entry failed the commit: a 500, and an AMQP consumer retried
/// the batch for ever), and so is a related object's id (`related_object_too_long`).
#[tokio::test]
async fn an_alias_or_related_object_over_its_bound_is_refused_and_nothing_is_stored() {
    let gw = spawn_gateway().await;
    let student = |id: String| json!({"payload": {"user_id": "taught", "student_id": id, "first_name": "Ann"}});
    let resp = gw.post_event("medtrack.events", "student.created", &student("s".repeat(300))).await;
    let (status, answer) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    assert_eq!((status, answer["error"].as_str()), (422, Some("alias_too_long")), "{answer}");
    let assigned = json!({"match_id": "m".repeat(300), "referee_id": "taught"});
    let resp = gw.post_event("sgad.matches", "match.assigned.taught", &assigned).await;
    let (status, answer) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    assert_eq!((status, answer["error"].as_str()), (422, Some("related_object_too_long")), "{answer}");
    assert_eq!(gw.inbox("taught").await["items"].as_array().unwrap().len(), 0, "nothing was stored");
    let resp = gw.post_event("medtrack.events", "student.created", &student("s".repeat(256))).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(gw.inbox("taught").await["items"].as_array().unwrap().len(), 1);
}

/// What one event may store and push is bounded before anything is stored: more than 1,000 recipients
/// (`too_many_recipients`), rows that would store over 16 MiB in all (`too_much_to_store`), a notification whose
/// frame no session could carry (`notification_too_large`; sessions here carry 256 KiB). Before, a 799 KB
/// request naming 130,000 users grew the WAL by gigabytes, and an accepted 600 KB message made a frame over the
/// sessions' 1 MiB that broke every session it was pushed or replayed to, on every reconnect.
#[tokio::test]
async fn what_one_event_may_store_and_push_is_bounded_before_anything_is_stored() {
    let gw = spawn_gateway_with(|s| s.websocket.outbound_queue_bytes = 256 * 1024).await;
    let mut alice = gw.connect("alice").await;
    let registered = |users: Value, pad: usize| {
        serde_json::to_vec(
            &json!({"event_type": "user.registered", "data": {"user_id": users, "pad": "x".repeat(pad)}}),
        )
        .unwrap()
    };
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let two_hundred: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    for (body, code) in [
        (registered(json!(many), 0), "too_many_recipients"),
        (registered(json!(two_hundred), 100_000), "too_much_to_store"),
        (registered(json!("alice"), 300_000), "notification_too_large"),
    ] {
        let (status, answer) = post_raw(&gw, "", "application/json", Some(SERVICE_KEY), body).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some(code)), "{answer}");
    }
    for user in ["u0", "u199", "u1000", "alice"] {
        assert_eq!(gw.inbox(user).await["items"].as_array().map(Vec::len), Some(0), "{user}: nothing stored");
    }

    // Under the bounds, as large as a session carries: stored, pushed, and replayed on a reconnect.
    let (status, answer) =
        post_raw(&gw, "", "application/json", Some(SERVICE_KEY), registered(json!("alice"), 200_000)).await;
    assert_eq!(status, 202, "{answer}");
    let live = alice.notification().await;
    assert_eq!(live["notification"]["user_id"], "alice");
    let mut again = gw.connect_with("alice", "&since=0").await;
    assert_eq!(again.notification().await["notification"]["id"], live["notification"]["id"]);
    let (status, answer) =
        post_raw(&gw, "", "application/json", Some(SERVICE_KEY), registered(json!(["alice", "bob"]), 0)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(alice.notification().await["notification"]["user_id"], "alice", "alice's session is still live");
}

/// The bound on what one event stores holds for a request as a whole: a batch of events, each under it, that
/// would store more in all is refused whole (before, 80 events of 1,000 recipients in one 0.5 MB request stored
/// 2 GB and took 600 MB of memory).
#[tokio::test]
async fn a_batch_whose_events_together_would_store_too_much_is_refused_and_stores_nothing() {
    let gw = spawn_gateway().await;
    let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    // 200 rows of ~60 KB: 12 MB each, under the per-event bound; two of them are over it together.
    let event = json!({"event_type": "user.registered", "data": {"user_id": users, "pad": "x".repeat(60_000)}});
    let one = serde_json::to_vec(&json!([event])).unwrap();
    let (status, answer) = post_raw(&gw, "", "application/json", Some(SERVICE_KEY), one).await;
    assert_eq!(status, 202, "one such event is under the bound: {answer}");
    let two = serde_json::to_vec(&json!([event, event])).unwrap();
    let (status, answer) = post_raw(&gw, "", "application/json", Some(SERVICE_KEY), two).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("too_much_to_store")), "{answer}");
    assert!(answer["message"].as_str().unwrap().starts_with("event [1]: "), "it names the element: {answer}");
    assert_eq!(gw.inbox("u0").await["items"].as_array().map(Vec::len), Some(1), "the refused batch stored nothing");
}

/// A service that POSTs `data=json.dumps(event)` sends no `Content-Type`: its events are read as JSON, as the
/// seeds' Django service expects (only a type that is not JSON is refused).
#[tokio::test]
async fn an_event_posted_without_a_content_type_is_read_as_json() {
    let gw = spawn_gateway().await;
    let body = serde_json::to_vec(&fixture("http-user-registered.json")["body"]).unwrap();
    let (status, answer) = post_raw(&gw, "", "", Some(SERVICE_KEY), body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["results"][0]["status"], "stored", "{answer}");
}

/// jQuery's `cache: false` adds `_=<time>` to every GET: the inbox reads take it and ignore it (another unknown
/// parameter is still refused), and no JSON answer may be kept by a browser's or a proxy's cache.
#[tokio::test]
async fn inbox_reads_ignore_jquery_cache_busters_and_no_json_answer_is_cached() {
    let gw = spawn_gateway().await;
    let event = json!({"user_id": "jq", "title": "t", "message": "m", "type": "welcome"});
    assert_eq!(gw.post_event("sgad.notifications", "", &event).await.status(), 202);
    let t = gw.token("jq");
    for path in [
        "/api/v1/users/jq/notifications?_=1733222222222",
        "/api/v1/users/jq/notifications?limit=5&_=1733222222222",
        "/api/v1/users/jq/notifications/unread_count?_=1733222222222",
        "/api/v1/users/jq/notifications/counts?_",
        "/api/v1/users/jq/preferences?_=1",
    ] {
        let resp = gw.get(path, &t).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
        let body: Value = resp.json().await.unwrap();
        if path.contains("notifications?") {
            assert_eq!(body["items"].as_array().unwrap().len(), 1, "{path}: {body}");
        }
    }
    let resp = gw.get("/api/v1/users/jq/notifications?_x=1", &t).send().await.unwrap();
    assert_eq!(resp.status(), 400, "only `_` itself is ignored");
    assert_eq!(resp.headers()["cache-control"], "no-store", "errors too");
    // Files keep their own: the Swagger UI's are not JSON.
    let resp = gw.raw().get(gw.url("/api/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("cache-control").is_none_or(|v| v != "no-store"));
}

/// The admin reads and the ingest endpoint refuse a parameter they do not take (`limt=5` returned the default 20
/// traces, `presence?x=1` answered as if it were not there), and take jQuery's `_` as every endpoint does (the
/// ingest endpoint refused it).
#[tokio::test]
async fn admin_reads_refuse_unknown_query_parameters_and_every_endpoint_takes_the_cache_buster() {
    let gw = spawn_gateway_with(|s| s.trace.enabled = true).await;
    for path in [
        "/api/v1/admin/users/u1/trace?limt=5",
        "/api/v1/admin/events/e1/trace?x=1",
        "/api/v1/admin/trace/stats?x=1",
        "/api/v1/admin/presence?x=1",
        "/api/v1/admin/stats?x=1",
    ] {
        let resp = gw.get(path, SERVICE_KEY).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "bad_query", "{path}");
    }
    for path in ["/api/v1/admin/users/u1/trace?limit=5&_=1", "/api/v1/admin/presence?_=1", "/api/v1/admin/stats?_=1"] {
        assert_eq!(gw.get(path, SERVICE_KEY).send().await.unwrap().status(), 200, "{path}");
    }
    let event = json!({"user_id": "jq", "title": "t", "message": "m", "type": "welcome"});
    let resp = gw
        .post("/api/v1/events?exchange=sgad.notifications&_=1733222222222", SERVICE_KEY)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// Python's `requests` sends `params={"unread": True}` as `unread=True`, and many clients send `1`: the list's
/// boolean filters take any case of `true`/`false` and `1`/`0`, and refuse anything else naming what they take.
#[tokio::test]
async fn list_filters_take_booleans_as_python_and_form_clients_spell_them() {
    let gw = spawn_gateway().await;
    for kind in ["a", "b"] {
        let event = json!({"user_id": "py", "title": kind, "message": "m", "type": kind});
        assert_eq!(gw.post_event("sgad.notifications", "", &event).await.status(), 202);
    }
    let t = gw.token("py");
    let first = gw.inbox("py").await["items"][0]["id"].as_i64().unwrap();
    let r = gw.post(&format!("/api/v1/users/py/notifications/{first}/read"), &t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let count = async |q: &str| {
        let resp = gw.get(&format!("/api/v1/users/py/notifications?{q}"), &t).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{q}");
        resp.json::<Value>().await.unwrap()["items"].as_array().unwrap().len()
    };
    for q in ["unread=true", "unread=True", "unread=TRUE", "unread=1"] {
        assert_eq!(count(q).await, 1, "{q}");
    }
    for q in ["unread=false", "unread=False", "unread=0", "archived=False", "archived=0"] {
        assert_eq!(count(q).await, 2, "{q}");
    }
    assert_eq!(count("archived=True").await, 0);
    for q in ["unread=yes", "unread=", "archived=2"] {
        let resp = gw.get(&format!("/api/v1/users/py/notifications?{q}"), &t).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_query", "{q}");
        assert!(body["message"].as_str().unwrap().contains("true, false, 1 or 0"), "{q}: {body}");
    }
}
