//! HTTP ingest end to end: fixtures in, frames and inbox rows out.

use std::time::Duration;

use serde_json::{json, Value};

use crate::routing::cases;
use crate::support::*;

#[tokio::test]
async fn every_fixture_posted_over_http_reaches_its_users_two_tabs_and_inbox() {
    let gw = spawn_gateway().await;
    for (name, case) in cases() {
        let Some(fixture_name) = case.get("fixture").and_then(Value::as_str) else {
            continue;
        };
        let expect = &case["expect"];
        let Some(users) = expect["to"].as_array().filter(|_| expect["action"] == "notify") else {
            continue;
        };
        let user = users[0].as_str().unwrap();
        let mut tab1 = gw.connect(user).await;
        let mut tab2 = gw.connect(user).await;

        let resp = gw.post_fixture(fixture_name).await;
        assert_eq!(resp["results"][0]["status"], "stored", "{name}: {resp}");
        let id = resp["results"][0]["notification_ids"][0].as_i64().unwrap();
        let body = fixture(fixture_name)["body"].clone();
        for tab in [&mut tab1, &mut tab2] {
            let f = tab.notification().await;
            assert_eq!(f["notification"]["id"], id, "{name}");
            assert_eq!(f["notification"]["user_id"], user, "{name}");
            assert_eq!(f["notification"]["title"], expect["title"], "{name}");
            // The rule's event_type when it sets one (what front-ends switch on), else the event's own.
            let event_type = expect.get("notification_event_type").unwrap_or(&expect["event_type"]);
            assert_eq!(&f["event_type"], event_type, "{name}");
            assert_eq!(f["body"], body, "{name}: the original body travels with the frame");
        }
        let inbox = gw.inbox(user).await;
        assert!(inbox["items"].as_array().unwrap().iter().any(|n| n["id"] == id), "{name}: in the inbox");
    }
}

#[tokio::test]
async fn broadcast_reaches_every_connected_user_and_every_inbox() {
    let gw = spawn_gateway().await;
    let mut clients = Vec::new();
    for u in ["alice", "bob", "carol"] {
        clients.push((u, gw.connect(u).await));
    }
    let resp = gw.post_fixture("sgad-notification-system.json").await;
    let id = resp["results"][0]["notification_ids"][0].as_i64().unwrap();
    assert_eq!(resp["results"][0]["notification_ids"].as_array().unwrap().len(), 1, "one row for everyone");
    for (u, c) in &mut clients {
        let f = c.notification().await;
        assert_eq!(f["notification"]["id"], id);
        assert_eq!(f["notification"]["user_id"], Value::Null);
        assert_eq!(gw.unread(u).await, 1);
    }
    // A user who was never connected sees it too.
    let inbox = gw.inbox("dave").await;
    assert_eq!(inbox["items"][0]["id"], id);
}

#[tokio::test]
async fn the_same_event_twice_yields_one_notification() {
    let gw = spawn_gateway().await;
    let user = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
    let mut tab = gw.connect(user).await;
    let first = gw.post_fixture("medtrack-stage-accepted.json").await;
    let second = gw.post_fixture("medtrack-stage-accepted.json").await;
    assert_eq!(first["results"][0]["status"], "stored");
    assert_eq!(second["results"][0]["status"], "duplicate");
    assert_eq!(first["results"][0]["event_id"], second["results"][0]["event_id"]);
    tab.notification().await;
    tab.silent_for(Duration::from_millis(300)).await;
    assert_eq!(gw.inbox(user).await["items"].as_array().unwrap().len(), 1);

    // Without any id in the body, the Idempotency-Key header dedupes a retried POST.
    let body = json!({"user_id": "u9", "title": "t", "message": "m", "type": "info"});
    for expected in ["stored", "duplicate"] {
        let resp = gw
            .raw()
            .post(gw.url("/api/v1/events?exchange=sgad.notifications"))
            .bearer_auth(SERVICE_KEY)
            .header("Idempotency-Key", "retry-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.json::<Value>().await.unwrap()["results"][0]["status"], expected);
    }
}

/// The titles in `user`'s inbox, newest first.
async fn titles(gw: &Gateway, user: &str) -> Vec<String> {
    gw.inbox(user).await["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_array_of_events_is_stored_in_one_request_in_order() {
    let gw = spawn_gateway().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"user_id": "batch-user", "title": format!("n{i}"), "message": "m", "type": "info"}))
        .collect();
    let resp = gw.post_event("sgad.notifications", "", &json!(events)).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let ids: Vec<i64> =
        body["results"].as_array().unwrap().iter().map(|r| r["notification_ids"][0].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(titles(&gw, "batch-user").await, vec!["n4", "n3", "n2", "n1", "n0"]);
}

/// An array posted with an `Idempotency-Key` dedupes element by element (`key:i`) when retried, and a single
/// event whose own key happens to be `key:i` is another event, stored, not answered `duplicate`.
#[tokio::test]
async fn a_batchs_idempotency_key_never_swallows_a_single_event_whose_key_names_an_element() {
    let gw = spawn_gateway().await;
    let post = |key: &'static str, body: Value| {
        gw.raw()
            .post(gw.url("/api/v1/events?exchange=sgad.notifications"))
            .bearer_auth(SERVICE_KEY)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let event = |title: &str| json!({"user_id": "keyed-user", "title": title, "message": "m", "type": "info"});
    let statuses = |body: Value| -> Vec<String> {
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_owned()).collect()
    };
    let batch = json!([event("a0"), event("a1")]);
    let first = post("order-7", batch.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(statuses(first.clone()), ["stored", "stored"]);
    assert_eq!(first["results"][1]["event_id"], "order-7:1", "an element's id is the key and its index");
    let retried: Value = post("order-7", batch).await.unwrap().json().await.unwrap();
    assert_eq!(statuses(retried), ["duplicate", "duplicate"], "a retried batch is stored once");

    let single: Value = post("order-7:1", event("b")).await.unwrap().json().await.unwrap();
    assert_eq!(statuses(single.clone()), ["stored"], "{single}");
    let again: Value = post("order-7:1", event("b")).await.unwrap().json().await.unwrap();
    assert_eq!(statuses(again), ["duplicate"], "the single event dedupes under its own key");
    assert_eq!(titles(&gw, "keyed-user").await, vec!["b", "a1", "a0"]);
}

#[tokio::test]
async fn user_deleted_event_purges_the_inbox() {
    let gw = spawn_gateway().await;
    let user = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
    gw.post_fixture("medtrack-student-created.json").await;
    gw.post_fixture("medtrack-stage-accepted.json").await;
    gw.post_fixture("medtrack-encadrant-created.json").await; // someone else's
    assert_eq!(gw.inbox(user).await["items"].as_array().unwrap().len(), 2);
    let mut tab = gw.connect(user).await;
    let resp = gw.post_fixture("medtrack-user-deleted.json").await;
    assert_eq!(resp["results"][0]["status"], "purged");
    assert_eq!(tab.frame().await, json!({"type": "purged"}), "open tabs drop what they show");
    assert_eq!(gw.inbox(user).await["items"].as_array().unwrap().len(), 0);
    assert_eq!(gw.unread(user).await, 0);
    assert_eq!(gw.inbox("5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f").await["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_no_rule_takes_is_refused_with_422_and_an_ignored_one_accepted_neither_stored() {
    let gw = spawn_gateway().await;
    let resp =
        gw.post_event("events.topic", "invoice.paid", &json!({"event_type": "invoice.paid", "payload": {}})).await;
    assert_eq!(resp.status(), 422, "as AMQP dead-letters it");
    let body = resp.json::<Value>().await.unwrap();
    assert_eq!((body["error"].as_str(), body["results"][0]["status"].as_str()), (Some("unmatched"), Some("unmatched")));
    // It says where the event was routed, what a rule matches on.
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("on exchange `events.topic` with routing key `invoice.paid`"), "{message}");
    // In a batch, the element is named and the others are stored, as `results` says.
    let batch = json!([
        {"event_type": "invoice.paid", "payload": {}},
        {"event_type": "user.registered", "user_id": "batch-u"}
    ]);
    let resp = gw.post_event("", "", &batch).await;
    assert_eq!(resp.status(), 422);
    let body = resp.json::<Value>().await.unwrap();
    assert!(body["message"].as_str().unwrap().starts_with("event [0]: no rule matches"), "{body}");
    assert_eq!(body["results"][1]["status"], "stored", "{body}");
    assert_eq!(gw.inbox("batch-u").await["items"].as_array().unwrap().len(), 1);
    let resp = gw.post_event("", "user.logout", &json!({"event_type": "user.logout", "data": {}, "user_id": 1})).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["results"][0]["status"], "ignored");
    assert_eq!(gw.inbox("1").await["items"].as_array().unwrap().len(), 0);
}

/// Issue 13 (6): a body id is scoped by exchange and routing key, so two producers that both number their
/// events from 1 do not drop each other's; the same event twice is still stored once.
#[tokio::test]
async fn the_same_body_id_from_two_producers_is_two_events() {
    let gw = spawn_gateway().await;
    let mut sgad = fixture("sgad-notification-user.json");
    sgad["body"]["id"] = json!(77);
    let mut django = fixture("http-user-registered.json");
    django["body"]["id"] = json!(77);
    let post = |f: &Value| {
        let (exchange, key) =
            (f["exchange"].as_str().unwrap_or("").to_owned(), f["routing_key"].as_str().unwrap().to_owned());
        let body = f["body"].clone();
        let gw = &gw;
        async move {
            let resp = gw.post_event(&exchange, &key, &body).await;
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["results"][0].clone()
        }
    };
    let first = post(&sgad).await;
    let second = post(&django).await;
    assert_eq!(first["status"], "stored");
    assert_eq!(second["status"], "stored", "another producer's id 77 is another event: {second}");
    assert_eq!(first["event_id"], "77");
    assert_eq!(second["event_id"], "77", "callers see their own id, unscoped");
    assert_eq!(post(&sgad).await["status"], "duplicate", "a redelivery is still a duplicate");

    // The same id under another routing key of the same exchange is another event too.
    let mut other_key = django.clone();
    other_key["routing_key"] = json!("user.login");
    other_key["body"]["event_type"] = json!("user.login");
    assert_eq!(post(&other_key).await["status"], "stored");
    assert_eq!(gw.inbox("123").await["items"].as_array().unwrap().len(), 2);
}

/// Issue 13 (6): an `Idempotency-Key` is scoped by the service key that sent it.
#[tokio::test]
async fn the_same_idempotency_key_from_two_service_keys_is_two_events() {
    const OTHER_KEY: &str = "another-service-key-0123456789";
    let gw = spawn_gateway_with(|s| {
        s.auth.service_keys.push(herald::config::ServiceKeyConfig::Plain(herald::config::Secret::new(OTHER_KEY)))
    })
    .await;
    let post = |key: &'static str, user: &'static str| {
        let gw = &gw;
        async move {
            let resp = gw
                .raw()
                .post(gw.url("/api/v1/events?exchange=sgad.notifications"))
                .bearer_auth(key)
                .header("Idempotency-Key", "order-1")
                .json(&json!({"user_id": user, "title": "t", "message": "m", "type": "info"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["results"][0]["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(post(SERVICE_KEY, "idem-a").await, "stored");
    assert_eq!(post(OTHER_KEY, "idem-b").await, "stored", "another service's key is another event");
    assert_eq!(post(SERVICE_KEY, "idem-a").await, "duplicate", "a retry by the same service is a duplicate");
    assert_eq!(post(OTHER_KEY, "idem-b").await, "duplicate");
    assert_eq!(gw.inbox("idem-a").await["items"].as_array().unwrap().len(), 1);
    assert_eq!(gw.inbox("idem-b").await["items"].as_array().unwrap().len(), 1);
}

/// What a publisher gets wrong is said, not silently worked around: a misspelt query parameter (before: ignored,
/// so `?exchang=billing` routed the event as posted to no exchange), an `Idempotency-Key` that is not visible
/// ASCII (before: ignored, the event deduped on its body's digest instead), and a key the gateway does not know
/// (before: "not a JWT", which points a service at the wrong thing).
#[tokio::test]
async fn a_misspelt_parameter_an_unusable_idempotency_key_and_an_unknown_key_are_said() {
    let gw = spawn_gateway().await;
    let body = json!({"user_id": "u-said", "title": "t", "message": "m", "type": "info"});
    let post = |query: &'static str, key: &'static str| {
        gw.raw().post(gw.url(&format!("/api/v1/events{query}"))).bearer_auth(key).json(&body)
    };
    let r = post("?exchang=sgad.notifications", SERVICE_KEY).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"] == "bad_query" && e["message"].as_str().unwrap().contains("exchang"), "{e}");

    let key = reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap();
    let r = post("?exchange=sgad.notifications", SERVICE_KEY).header("idempotency-key", key).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_idempotency_key");

    let r = post("?exchange=sgad.notifications", "a-key-from-another-environment").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("not a service key this gateway knows"), "{e}");
    assert!(gw.inbox("u-said").await["items"].as_array().unwrap().is_empty(), "nothing was stored");
}
