//! The served OpenAPI document: valid JSON, OpenAPI 3.1, the committed `docs/openapi.json` (less the dev routes
//! when they are not mounted), and true: real answers of every endpoint match the schema the document gives
//! for their status, key by key (a key the document does not list fails, so a handler cannot drift from it).

use serde_json::{json, Value};

use crate::support::*;

/// Whether `v` fits `schema` (resolving `$ref`s in `doc`): types, enums, required keys, no undocumented keys.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "{r} is not in components.schemas");
        return check(doc, target, v, at);
    }
    if let Some(alternatives) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let errors: Vec<String> = alternatives.iter().filter_map(|s| check(doc, s, v, at).err()).collect();
        return if errors.len() < alternatives.len() { Ok(()) } else { Err(errors.join(" / ")) };
    }
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(doc, s, v, at)?;
    }
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let fits = types.is_empty() || types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{at}: {v} is {kind}, the document says {types:?}"));
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    match v {
        Value::Object(map) => {
            for key in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    return Err(format!("{at}: required `{key}` is missing from {v}"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, value) in map {
                let at = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(s), _) => check(doc, s, value, &at)?,
                    (None, Some(s)) if s.is_object() => check(doc, s, value, &at)?,
                    (None, _) if properties.is_some() => return Err(format!("{at}: not in the document")),
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            let (min, max) = (schema["minItems"].as_u64(), schema["maxItems"].as_u64());
            if min.is_some_and(|m| (items.len() as u64) < m) || max.is_some_and(|m| items.len() as u64 > m) {
                return Err(format!("{at}: {} items, the document says {min:?} to {max:?}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                check(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Asserts that `resp` is documented for `method template`: its status, its content type and, for JSON, its body.
pub(crate) async fn conforms(doc: &Value, method: &str, template: &str, resp: reqwest::Response) -> Value {
    let status = resp.status().as_u16().to_string();
    let documented = &doc["paths"][template][method]["responses"][&status];
    assert!(documented.is_object(), "{method} {template} answered {status}, which the document does not list");
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let Some(content) = documented["content"].as_object() else {
        assert!(text.is_empty(), "{method} {template} {status}: a body the document does not describe: {text}");
        return Value::Null;
    };
    let content_type = content_type.expect("a body has a content type");
    let (media, described) = content.iter().next().unwrap();
    assert_eq!(content_type.split(';').next(), media.split(';').next(), "{method} {template} {status}");
    if !media.starts_with("application/json") {
        return Value::Null;
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    if let Err(e) = check(doc, &described["schema"], &body, "body") {
        panic!("{method} {template} {status} does not match the document: {e}");
    }
    body
}

pub(crate) async fn served(gw: &Gateway) -> Value {
    let resp = gw.raw().get(gw.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).expect("the served document is JSON")
}

#[tokio::test]
async fn the_served_openapi_document_is_openapi_3_1_and_the_committed_golden_less_unmounted_routes() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path("docs/openapi.json")).unwrap()).unwrap();
    let with_dev = spawn_gateway_with(|s| s.auth.dev_token_endpoint = true).await;
    let doc = served(&with_dev).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, golden, "with the dev routes mounted, the served document is docs/openapi.json");

    let prod = spawn_gateway().await;
    let doc = served(&prod).await;
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().all(|p| !p.starts_with("/api/v1/dev/")), "{paths:?}");
    assert_eq!(paths.len() + 2, golden["paths"].as_object().unwrap().len(), "only the two dev routes are left out");
    // Every documented operation is routed: none falls through to the JSON 404 or answers 405.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = prod.url(
                &path.replace("{user_id}", "42").replace("{id}", "1").replace("{kind}", "k").replace("{alias}", "a"),
            );
            let req = prod.raw().request(method.to_uppercase().parse().unwrap(), url);
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert!(status != 405 && !body.contains("no such route"), "{method} {path}: {status} {body}");
        }
    }
}

#[tokio::test]
async fn every_endpoint_answers_what_the_openapi_document_says() {
    let gw = spawn_gateway_with(|s| s.auth.dev_token_endpoint = true).await;
    let doc = served(&gw).await;
    let user = gw.token("42");
    let inbox = "/api/v1/users/{user_id}/notifications";

    // Ops.
    conforms(&doc, "get", "/healthz", gw.raw().get(gw.url("/healthz")).send().await.unwrap()).await;
    conforms(&doc, "get", "/readyz", gw.raw().get(gw.url("/readyz")).send().await.unwrap()).await;
    conforms(&doc, "get", "/metrics", gw.raw().get(gw.url("/metrics")).send().await.unwrap()).await;
    let docs = gw.raw().get(gw.url("/api/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui"), "the docs page is served by the gateway");

    // Ingest: stored, then refused in the ways the document lists.
    let event = json!({"event_type": "user.registered", "timestamp": "2025-01-20T10:30:00Z", "source": "django-backend",
        "user_id": 42, "data": {"user_id": 42, "username": "ana"}});
    let resp = gw.post("/api/v1/events", SERVICE_KEY).json(&event).send().await.unwrap();
    let body = conforms(&doc, "post", "/api/v1/events", resp).await;
    let id = body["results"][0]["notification_ids"][0].as_i64().expect("stored");
    let event_id = body["results"][0]["event_id"].as_str().unwrap().to_owned();
    let resp = gw.post("/api/v1/events", SERVICE_KEY).json(&json!([])).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", "/api/v1/events", resp).await["error"], "empty_batch");
    let resp =
        gw.post("/api/v1/events", SERVICE_KEY).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(conforms(&doc, "post", "/api/v1/events", resp).await["error"], "unsupported_media_type");
    let resp = gw.post("/api/v1/events", &user).json(&event).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", "/api/v1/events", resp).await["error"], "invalid_credentials");
    let resp = gw.post_fixture_raw("medtrack-stage-created-core.json").await;
    let body = conforms(&doc, "post", "/api/v1/events", resp).await;
    assert_eq!(
        (body["error"].as_str(), body["results"][0]["status"].as_str()),
        (Some("unresolved_recipient"), Some("unresolved_recipient"))
    );
    let resp = gw.post("/api/v1/dev/events", &user).json(&event).send().await.unwrap();
    conforms(&doc, "post", "/api/v1/dev/events", resp).await;

    // The inbox.
    let resp = gw.get("/api/v1/users/42/notifications?limit=5", &user).send().await.unwrap();
    assert!(!conforms(&doc, "get", inbox, resp).await["items"].as_array().unwrap().is_empty());
    let resp = gw.get("/api/v1/users/42/notifications?limit=500", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", inbox, resp).await["error"], "bad_query");
    let resp = gw.get("/api/v1/users/7/notifications", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", inbox, resp).await["error"], "forbidden");
    let resp = gw.raw().get(gw.url("/api/v1/users/42/notifications")).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", inbox, resp).await["error"], "missing_credentials");
    let resp = gw.get("/api/v1/users/42/notifications/unread_count", &user).send().await.unwrap();
    conforms(&doc, "get", &format!("{inbox}/unread_count"), resp).await;
    let resp = gw.post(&format!("/api/v1/users/42/notifications/{id}/read"), &user).send().await.unwrap();
    assert!(conforms(&doc, "post", &format!("{inbox}/{{id}}/read"), resp).await["read_at"].is_string());
    let resp = gw.post("/api/v1/users/42/notifications/abc/read", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", &format!("{inbox}/{{id}}/read"), resp).await["error"], "bad_path");
    let resp = gw.post("/api/v1/users/42/notifications/read_all", &user).send().await.unwrap();
    conforms(&doc, "post", &format!("{inbox}/read_all"), resp).await;
    // Inbox states, counts and preferences.
    let resp = gw.get("/api/v1/users/42/notifications/counts", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", &format!("{inbox}/counts"), resp).await, json!({"unread": 0, "unseen": 0}));
    let resp = gw.post("/api/v1/users/42/notifications/seen_all", &user).send().await.unwrap();
    assert!(conforms(&doc, "post", &format!("{inbox}/seen_all"), resp).await["seen_at"].is_string());
    // A batch naming one id twice as often as the cap: the server takes it (one named twice counts once), and so
    // does the document's request schema.
    let body = json!({"action": "read", "ids": vec![id; 200]});
    let schema =
        &doc["paths"][format!("{inbox}/batch")]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(check(&doc, schema, &body, "request"), Ok(()));
    let resp = gw.post("/api/v1/users/42/notifications/batch", &user).json(&body).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", &format!("{inbox}/batch"), resp).await["ids"], json!([id]));
    assert!(check(&doc, schema, &json!({"action": "read", "ids": []}), "request").is_err(), "minItems is checked");
    for action in ["unread", "archive", "unarchive"] {
        let path = format!("{inbox}/{{id}}/{action}");
        let resp = gw.post(&format!("/api/v1/users/42/notifications/{id}/{action}"), &user).send().await.unwrap();
        assert_eq!(conforms(&doc, "post", &path, resp).await["id"], id, "{action}");
        let resp = gw.post(&format!("/api/v1/users/42/notifications/999999/{action}"), &user).send().await.unwrap();
        assert_eq!(conforms(&doc, "post", &path, resp).await["error"], "not_found", "{action}");
    }
    let resp = gw.get("/api/v1/users/42/notifications?archived=true&type=x&related_type=y&related_id=z", &user);
    conforms(&doc, "get", inbox, resp.send().await.unwrap()).await;
    let prefs = "/api/v1/users/{user_id}/preferences";
    let put = |body: Value| gw.raw().put(gw.url("/api/v1/users/42/preferences")).bearer_auth(&user).json(&body);
    let resp = put(json!({"types": {"digest": "muted"}})).send().await.unwrap();
    assert_eq!(conforms(&doc, "put", prefs, resp).await["types"]["digest"], "muted");
    let resp = put(json!({"types": {"digest": "loud"}})).send().await.unwrap();
    assert_eq!(conforms(&doc, "put", prefs, resp).await["error"], "bad_request");
    let resp = gw.get("/api/v1/users/42/preferences", &user).send().await.unwrap();
    conforms(&doc, "get", prefs, resp).await;
    let resp = gw.delete(&format!("/api/v1/users/42/notifications/{id}"), &user).send().await.unwrap();
    conforms(&doc, "delete", &format!("{inbox}/{{id}}"), resp).await;
    let resp = gw.delete(&format!("/api/v1/users/42/notifications/{id}"), &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "delete", &format!("{inbox}/{{id}}"), resp).await["error"], "not_found");

    // Aliases and admin.
    let alias = "/api/v1/aliases/{kind}/{alias}";
    let resp =
        gw.raw().put(gw.url("/api/v1/aliases/student/s1")).bearer_auth(SERVICE_KEY).json(&json!({"user_id": 42}));
    conforms(&doc, "put", alias, resp.send().await.unwrap()).await;
    let resp =
        gw.raw().put(gw.url("/api/v1/aliases/student/s1")).bearer_auth(SERVICE_KEY).json(&json!({"user_id": ""}));
    assert_eq!(conforms(&doc, "put", alias, resp.send().await.unwrap()).await["error"], "missing_user_id");
    // A user no token can name: their events would land in an inbox nobody can read.
    let resp = gw
        .raw()
        .put(gw.url("/api/v1/aliases/student/s1"))
        .bearer_auth(SERVICE_KEY)
        .json(&json!({"user_id": "a\u{7}b"}));
    assert_eq!(conforms(&doc, "put", alias, resp.send().await.unwrap()).await["error"], "invalid_user_id");
    let resp = gw.get("/api/v1/aliases/student/s1", SERVICE_KEY).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", alias, resp).await["user_id"], "42");
    let resp = gw.get("/api/v1/aliases/student/nobody", SERVICE_KEY).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", alias, resp).await["error"], "not_found");
    let resp = gw.get("/api/v1/aliases/student/s1", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", alias, resp).await["error"], "forbidden");
    let resp = gw.post("/api/v1/admin/rules/reload", SERVICE_KEY).send().await.unwrap();
    conforms(&doc, "post", "/api/v1/admin/rules/reload", resp).await;
    let resp = gw.get("/api/v1/admin/presence", SERVICE_KEY).send().await.unwrap();
    conforms(&doc, "get", "/api/v1/admin/presence", resp).await;
    // Dead letters without AMQP ingest (their 200s are checked in `amqp.rs`, against a broker).
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", "/api/v1/admin/dead-letters", resp).await["error"], "amqp_disabled");
    let redrive = "/api/v1/admin/dead-letters/redrive";
    let resp = gw.post(redrive, SERVICE_KEY).json(&json!({"ids": []})).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", redrive, resp).await["error"], "bad_selection");

    // The trace of the event stored above (read and deleted since), a user's traces, the counters.
    let trace = "/api/v1/admin/events/{event_id}/trace";
    let resp = gw.get(&format!("/api/v1/admin/events/{event_id}/trace"), SERVICE_KEY).send().await.unwrap();
    let traces = conforms(&doc, "get", trace, resp).await["traces"].clone();
    // Newest first: the dev route posted the same body again (a duplicate), after the stored original.
    let outcomes: Vec<&str> = traces.as_array().unwrap().iter().map(|t| t["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["duplicate", "stored"]);
    let resp = gw.get("/api/v1/admin/events/never-posted/trace", SERVICE_KEY).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", trace, resp).await["error"], "not_found");
    let resp = gw.get("/api/v1/admin/events/x/trace", &user).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", trace, resp).await["error"], "forbidden");
    let user_trace = "/api/v1/admin/users/{user_id}/trace";
    let resp = gw.get("/api/v1/admin/users/42/trace?limit=5", SERVICE_KEY).send().await.unwrap();
    assert!(!conforms(&doc, "get", user_trace, resp).await["traces"].as_array().unwrap().is_empty());
    let resp = gw.get("/api/v1/admin/users/42/trace?limit=0", SERVICE_KEY).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", user_trace, resp).await["error"], "bad_query");
    let resp = gw.get("/api/v1/admin/trace/stats", SERVICE_KEY).send().await.unwrap();
    conforms(&doc, "get", "/api/v1/admin/trace/stats", resp).await;

    // Development and the WebSocket handshake's refusals.
    let resp = gw.raw().post(gw.url("/api/v1/dev/token")).json(&json!({"user_id": "42"})).send().await.unwrap();
    conforms(&doc, "post", "/api/v1/dev/token", resp).await;
    let resp = gw.raw().post(gw.url("/api/v1/dev/token")).json(&json!({"user_id": " "})).send().await.unwrap();
    assert_eq!(conforms(&doc, "post", "/api/v1/dev/token", resp).await["error"], "missing_user_id");
    let resp = gw.raw().get(gw.url("/ws/42")).send().await.unwrap();
    assert_eq!(conforms(&doc, "get", "/ws/{user_id}", resp).await["error"], "not_a_websocket_request");
}

/// Every read a user token makes of its own inbox is rate limited, and says so in the document: each answers its
/// 429 as the document describes it (the preferences read answered an undocumented 429).
#[tokio::test]
async fn every_user_read_documents_the_429_it_answers_past_the_read_limit() {
    let gw = spawn_gateway_with(|s| {
        s.server.user_reads_per_second = 1;
        s.server.user_reads_burst = 1;
    })
    .await;
    let doc = served(&gw).await;
    let user = gw.token("42");
    for (path, template) in [
        ("/api/v1/users/42/notifications", "/api/v1/users/{user_id}/notifications"),
        ("/api/v1/users/42/notifications/unread_count", "/api/v1/users/{user_id}/notifications/unread_count"),
        ("/api/v1/users/42/notifications/counts", "/api/v1/users/{user_id}/notifications/counts"),
        ("/api/v1/users/42/preferences", "/api/v1/users/{user_id}/preferences"),
    ] {
        let mut limited = false;
        for _ in 0..5 {
            let resp = gw.get(path, &user).send().await.unwrap();
            if resp.status() == 429 {
                assert_eq!(conforms(&doc, "get", template, resp).await["error"], "rate_limited", "{path}");
                limited = true;
                break;
            }
        }
        assert!(limited, "{path}: five reads at once within a limit of one a second");
    }
}

#[test]
fn the_openapi_conformance_check_refuses_an_undocumented_key_a_missing_one_and_a_wrong_type() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(repo_path("docs/openapi.json")).unwrap()).unwrap();
    let count = json!({"$ref": "#/components/schemas/UnreadCount"});
    assert!(check(&doc, &count, &json!({"unread_count": 3}), "body").is_ok());
    assert!(check(&doc, &count, &json!({"unread_count": 3, "total": 4}), "body").unwrap_err().contains("total"));
    assert!(check(&doc, &count, &json!({}), "body").unwrap_err().contains("unread_count"));
    assert!(check(&doc, &count, &json!({"unread_count": "3"}), "body").is_err());
    let page = json!({"$ref": "#/components/schemas/InboxPage"});
    let item = json!({"id": 1, "prev_id": 0, "user_id": null, "type": "t", "title": "", "content": "", "event_type": "e",
        "source": null, "related_object": {"type": "stage", "id": "9"}, "data": {"any": [1]}, "created_at": "x", "read_at": null,
        "seen_at": null, "archived_at": null, "muted": false});
    assert!(check(&doc, &page, &json!({"items": [item], "next_before": null, "has_more": false}), "body").is_ok());
    let mut stray = item.clone();
    stray["related_object"]["extra"] = json!(1);
    let err =
        check(&doc, &page, &json!({"items": [stray], "next_before": null, "has_more": false}), "body").unwrap_err();
    assert!(err.contains("body.items[0].related_object.extra"), "{err}");
}
