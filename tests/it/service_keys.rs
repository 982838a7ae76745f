//! Scoped service keys: each scope is needed and enough, `publish` stays within its exchanges and routing keys,
//! the old list form keeps every scope (with a warning), and logs and metrics name the key's id, never the key.

use std::time::Instant;

use herald::config::{Scope, ScopedServiceKey, Secret, ServiceKeyConfig, Settings};
use serde_json::{json, Value};

use crate::support::*;

const PUBLISHER: &str = "publisher-key-0123456789";
const READER: &str = "reader-key-0123456789";
const WRITER: &str = "writer-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";
const STUDENTS: &str = "students-key-0123456789";

fn one_scope_each(s: &mut Settings) {
    s.auth.service_keys = vec![
        scoped("publisher", PUBLISHER, &[Scope::Publish]),
        scoped("reader", READER, &[Scope::InboxRead]),
        scoped("writer", WRITER, &[Scope::InboxWrite]),
        scoped("admin", ADMIN, &[Scope::Admin]),
    ];
}

/// A 403 for a missing scope: `insufficient_scope`, naming the scope and neither the key nor its id's secret.
async fn assert_insufficient_scope(resp: reqwest::Response, what: &str, naming: &str) {
    assert_eq!(resp.status(), 403, "{what}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope", "{what}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(naming), "{what}: the refusal names `{naming}`: {body}");
    assert!(!message.contains("-key-0123456789"), "{what}: a key reached the answer: {body}");
}

/// Every REST route a service key can call, with the one scope it needs: each key is refused (403
/// `insufficient_scope` naming the scope) everywhere but where its scope is the one needed, and accepted there.
#[tokio::test]
async fn each_route_needs_its_scope_and_a_key_with_it_is_accepted() {
    let gw = spawn_gateway_with(one_scope_each).await;
    let event = fixture("medtrack-student-created.json");
    let http = gw.raw();
    type Request = Box<dyn Fn(&str) -> reqwest::RequestBuilder>;
    let url = |p: &str| gw.url(p);
    let routes: Vec<(&str, Scope, Request, u16)> = vec![
        (
            "POST /api/v1/events",
            Scope::Publish,
            Box::new({
                let (u, e) =
                    (url("/api/v1/events?exchange=events.topic&routing_key=student.created"), event["body"].clone());
                let http = http.clone();
                move |key| http.post(&u).bearer_auth(key).json(&e)
            }),
            202,
        ),
        ("GET notifications", Scope::InboxRead, get(http, url("/api/v1/users/alice/notifications")), 200),
        ("GET unread_count", Scope::InboxRead, get(http, url("/api/v1/users/alice/notifications/unread_count")), 200),
        ("GET alias", Scope::InboxRead, get(http, url("/api/v1/aliases/student/s-1")), 404),
        ("GET counts", Scope::InboxRead, get(http, url("/api/v1/users/alice/notifications/counts")), 200),
        ("GET preferences", Scope::InboxRead, get(http, url("/api/v1/users/alice/preferences")), 200),
        ("POST seen_all", Scope::InboxWrite, post(http, url("/api/v1/users/alice/notifications/seen_all")), 204),
        ("POST unread", Scope::InboxWrite, post(http, url("/api/v1/users/alice/notifications/999999/unread")), 404),
        ("POST archive", Scope::InboxWrite, post(http, url("/api/v1/users/alice/notifications/999999/archive")), 404),
        (
            "POST unarchive",
            Scope::InboxWrite,
            post(http, url("/api/v1/users/alice/notifications/999999/unarchive")),
            404,
        ),
        (
            "PUT preferences",
            Scope::InboxWrite,
            Box::new({
                let (u, http) = (url("/api/v1/users/alice/preferences"), http.clone());
                move |key| http.put(&u).bearer_auth(key).json(&json!({"types": {"digest": "muted"}}))
            }),
            204,
        ),
        ("POST read_all", Scope::InboxWrite, post(http, url("/api/v1/users/alice/notifications/read_all")), 204),
        ("POST read", Scope::InboxWrite, post(http, url("/api/v1/users/alice/notifications/999999/read")), 404),
        (
            "DELETE notification",
            Scope::InboxWrite,
            Box::new({
                let (u, http) = (url("/api/v1/users/alice/notifications/999999"), http.clone());
                move |key| http.delete(&u).bearer_auth(key)
            }),
            404,
        ),
        (
            "PUT alias",
            Scope::InboxWrite,
            Box::new({
                let (u, http) = (url("/api/v1/aliases/student/s-1"), http.clone());
                move |key| http.put(&u).bearer_auth(key).json(&json!({"user_id": "alice"}))
            }),
            200,
        ),
        ("GET admin/presence", Scope::Admin, get(http, url("/api/v1/admin/presence")), 200),
        ("POST admin/rules/reload", Scope::Admin, post(http, url("/api/v1/admin/rules/reload")), 200),
        // Past the scope check, AMQP ingest is off here: `409 amqp_disabled`; the bodiless re-drive is a 400 (an
        // empty body is not JSON), as ingest answers.
        ("GET admin/dead-letters", Scope::Admin, get(http, url("/api/v1/admin/dead-letters")), 409),
        ("POST admin/dead-letters/redrive", Scope::Admin, post(http, url("/api/v1/admin/dead-letters/redrive")), 400),
    ];
    let keys =
        [(PUBLISHER, Scope::Publish), (READER, Scope::InboxRead), (WRITER, Scope::InboxWrite), (ADMIN, Scope::Admin)];
    for (what, needed, request, ok) in &routes {
        for (key, has) in keys {
            let resp = request(key).send().await.unwrap();
            let what = format!("{what} with the {} key", has.name());
            if has == *needed {
                assert_eq!(resp.status().as_u16(), *ok, "{what}: {}", resp.text().await.unwrap());
            } else {
                assert_insufficient_scope(resp, &what, &format!("`{}`", needed.name())).await;
            }
        }
    }
    // The publisher's event and the writer's alias took effect.
    assert_eq!(gw.unread("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40").await, 1);
    let alias = gw.get("/api/v1/aliases/student/s-1", READER).send().await.unwrap();
    assert_eq!(alias.json::<Value>().await.unwrap()["user_id"], "alice");
}

fn get(http: &reqwest::Client, url: String) -> Box<dyn Fn(&str) -> reqwest::RequestBuilder> {
    let http = http.clone();
    Box::new(move |key| http.get(&url).bearer_auth(key))
}

fn post(http: &reqwest::Client, url: String) -> Box<dyn Fn(&str) -> reqwest::RequestBuilder> {
    let http = http.clone();
    Box::new(move |key| http.post(&url).bearer_auth(key))
}

/// Users keep their rights whatever the keys: their own inbox, read and write; not another's, not ingest,
/// not admin.
#[tokio::test]
async fn users_keep_their_own_inbox_and_nothing_more() {
    let gw = spawn_gateway_with(one_scope_each).await;
    let alice = gw.token("alice");
    assert_eq!(gw.get("/api/v1/users/alice/notifications", &alice).send().await.unwrap().status(), 200);
    assert_eq!(gw.post("/api/v1/users/alice/notifications/read_all", &alice).send().await.unwrap().status(), 200);
    let resp = gw.get("/api/v1/users/bob/notifications", &alice).send().await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap()["error"].clone()),
        (403, json!("forbidden"))
    );
    let resp = gw.post("/api/v1/events", &alice).json(&json!({"user_id": "alice"})).send().await.unwrap();
    assert_eq!(resp.status(), 401, "ingest needs a service key");
    for (path, post) in [
        ("/api/v1/admin/presence", false),
        ("/api/v1/admin/rules/reload", true),
        ("/api/v1/admin/dead-letters", false),
        ("/api/v1/admin/dead-letters/redrive", true),
    ] {
        let req = if post { gw.post(path, &alice) } else { gw.get(path, &alice) };
        let resp = req.send().await.unwrap();
        assert_eq!(
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap()["error"].clone()),
            (403, json!("forbidden"))
        );
    }
}

/// A key that may change inboxes but not read them gets no notification or preferences back from a change: an
/// unarchive of a notification that is not archived changes nothing and would otherwise show it whole, and a
/// batch would walk the ids 100 at a time; nor the newest id a `read_all` or `seen_all` reached, which polled
/// told it when the user received something. Users, and keys with `inbox:read` too, still get what they changed.
#[tokio::test]
async fn a_key_that_may_change_an_inbox_but_not_read_it_changes_it_without_seeing_what_it_holds() {
    let gw = spawn_gateway_with(|s| {
        one_scope_each(s);
        s.auth.service_keys.push(scoped("both", "both-key-0123456789", &[Scope::InboxRead, Scope::InboxWrite]));
    })
    .await;
    let event = json!({"user_id": "bob", "title": "secret", "message": "m", "type": "t"});
    let resp = gw.post("/api/v1/events?exchange=sgad.notifications", PUBLISHER).json(&event).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let listed = gw.get("/api/v1/users/bob/notifications", READER).send().await.unwrap();
    let id = listed.json::<Value>().await.unwrap()["items"][0]["id"].as_i64().unwrap();
    let http = gw.raw();
    let url = |p: &str| gw.url(&format!("/api/v1/users/bob{p}"));
    for action in ["unarchive", "read", "unread", "archive"] {
        let resp = http.post(url(&format!("/notifications/{id}/{action}"))).bearer_auth(WRITER).send().await.unwrap();
        assert_eq!(resp.status(), 204, "{action}");
        assert_eq!(resp.text().await.unwrap(), "", "{action}: nothing of the notification");
    }
    let archived = gw.get("/api/v1/users/bob/notifications?archived=true", READER).send().await.unwrap();
    assert_eq!(archived.json::<Value>().await.unwrap()["items"][0]["id"], id, "the changes took effect");
    let batch = json!({"action": "unarchive", "ids": [id, id + 1000]});
    let resp = http.post(url("/notifications/batch")).bearer_auth(WRITER).json(&batch).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!((&body["ids"], &body["not_found"], &body["items"]), (&json!([id]), &json!([id + 1000]), &json!([])));
    let prefs = json!({"types": {}});
    let resp = http.patch(url("/preferences")).bearer_auth(WRITER).json(&prefs).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (204, String::new()));
    let resp = http.put(url("/preferences")).bearer_auth(WRITER).json(&prefs).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (204, String::new()));
    for all in ["read_all", "seen_all"] {
        let resp = http.post(url(&format!("/notifications/{all}"))).bearer_auth(WRITER).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (204, String::new()), "{all}");
    }
    let listed = gw.get("/api/v1/users/bob/notifications", READER).send().await.unwrap();
    let item = listed.json::<Value>().await.unwrap()["items"][0].clone();
    assert!(item["read_at"].is_string() && item["seen_at"].is_string(), "read_all and seen_all took effect: {item}");

    // With `inbox:read` as well, and as the user, the change answers with what it changed.
    for who in ["both-key-0123456789".to_owned(), gw.token("bob")] {
        let resp = http.post(url(&format!("/notifications/{id}/read"))).bearer_auth(&who).send().await.unwrap();
        assert_eq!(resp.json::<Value>().await.unwrap()["title"], "secret");
        let resp = http.post(url("/notifications/batch")).bearer_auth(&who).json(&batch).send().await.unwrap();
        assert_eq!(resp.json::<Value>().await.unwrap()["items"][0]["title"], "secret");
        let resp = http.patch(url("/preferences")).bearer_auth(&who).json(&prefs).send().await.unwrap();
        assert!(resp.json::<Value>().await.unwrap()["types"].is_object());
        for all in ["read_all", "seen_all"] {
            let resp = http.post(url(&format!("/notifications/{all}"))).bearer_auth(&who).send().await.unwrap();
            assert_eq!(resp.json::<Value>().await.unwrap()["up_to"], id, "{all}");
        }
    }
}

fn students_only(s: &mut Settings) {
    s.auth.service_keys = vec![ServiceKeyConfig::Scoped(ScopedServiceKey {
        id: "profiles".into(),
        key: Secret::new(STUDENTS),
        scopes: vec![Scope::Publish],
        exchanges: Some(vec!["events.*".into(), "medtrack.events".into()]),
        routing_keys: Some(vec!["student.#".into(), "encadrant.*".into()]),
    })];
}

/// `publish` limited to exchanges and routing keys (topic patterns, as rules and bindings use them): within
/// them the event is stored; outside either, 403 naming the pattern that refused it, and a batch holding one
/// such event stores nothing.
#[tokio::test]
async fn publish_stays_within_the_keys_exchanges_and_routing_keys() {
    let gw = spawn_gateway_with(students_only).await;
    let student = fixture("medtrack-student-created.json");
    let user = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
    // One Idempotency-Key: the two posts in scope are one event.
    let post = |query: &str, body: &Value| {
        gw.post(&format!("/api/v1/events?{query}"), STUDENTS).header("idempotency-key", "welcome").json(body).send()
    };

    let resp = post("exchange=events.topic&routing_key=student.created", &student["body"]).await.unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    // The routing key from the body (`_meta.routing_key`) counts as well as one in the query.
    let resp = post("exchange=medtrack.events", &student["body"]).await.unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());

    let resp = post("exchange=sgad.notifications&routing_key=student.created", &student["body"]).await.unwrap();
    assert_insufficient_scope(resp, "another exchange", "`events.*`, `medtrack.events`").await;
    let resp = post("routing_key=student.created", &student["body"]).await.unwrap();
    assert_insufficient_scope(resp, "no exchange", "exchanges matching").await;
    let resp = post("exchange=events.topic&routing_key=stage.accepted", &student["body"]).await.unwrap();
    assert_insufficient_scope(resp, "another routing key", "`student.#`, `encadrant.*`").await;

    // All or nothing: the second event is out of scope, so the first (another user's welcome) is not stored.
    let mut other = student["body"].clone();
    other["payload"]["user_id"] = json!("batch-user");
    other["payload"]["student_id"] = json!("batch-student");
    let stage = fixture("medtrack-stage-accepted.json");
    let resp = post("exchange=events.topic", &json!([other, stage["body"]])).await.unwrap();
    assert_insufficient_scope(resp, "a batch with one event out of scope", "event [1]").await;
    assert_eq!(gw.unread("batch-user").await, 0);
    assert_eq!(gw.unread(user).await, 1, "the two posts in scope were one event (the same id)");
    // Nor may this key read inboxes: it has `publish` only.
    let resp = gw.get(&format!("/api/v1/users/{user}/notifications"), STUDENTS).send().await.unwrap();
    assert_insufficient_scope(resp, "reading an inbox", "`inbox:read`").await;
}

/// A key scoped to other exchanges cannot erase an inbox through the shipped `gdpr-erase` rule, which matches
/// the auth services' exchange (and HTTP's default) only; before, the rule took `auth.user.deleted` from any
/// exchange, and a key scoped to `billing.*` erased any user's inbox.
#[tokio::test]
async fn a_key_scoped_to_other_exchanges_cannot_erase_an_inbox() {
    let gw = spawn_gateway_with(|s| {
        s.auth.service_keys = vec![
            ServiceKeyConfig::Scoped(ScopedServiceKey {
                id: "billing".into(),
                key: Secret::new(PUBLISHER),
                scopes: vec![Scope::Publish],
                exchanges: Some(vec!["billing.*".into()]),
                routing_keys: None,
            }),
            scoped("dev", SERVICE_KEY, &[Scope::Publish, Scope::InboxRead]),
        ]
    })
    .await;
    let welcome = json!({"event_type": "user.registered", "user_id": "alice"});
    let resp = gw.post_event("events.topic", "", &welcome).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let erase = json!({"payload": {"user_id": "alice"}});
    let resp = gw
        .post("/api/v1/events?exchange=billing.events&routing_key=auth.user.deleted", PUBLISHER)
        .json(&erase)
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_ne!(answer["results"][0]["status"], "purged", "{answer}");
    assert_eq!(gw.unread("alice").await, 1, "alice's inbox is untouched");
    // The auth service's exchange still erases.
    let resp = gw.post_event("events.topic", "auth.user.deleted", &erase).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["results"][0]["status"], "purged");
    assert_eq!(gw.unread("alice").await, 0);
}

/// The old list form: bare keys (from the file, or `HERALD__AUTH__SERVICE_KEYS=a,b`) keep every scope.
#[tokio::test]
async fn bare_keys_of_the_old_list_form_keep_every_scope() {
    let env = [("HERALD__AUTH__SERVICE_KEYS".to_owned(), "old-key-one-0123456789,old-key-two-0123456789".to_owned())];
    let from_env = Settings::load(None, env).unwrap().auth.service_keys;
    assert_eq!(from_env.len(), 2);
    let gw = spawn_gateway_with(move |s| s.auth.service_keys = from_env).await;
    for key in ["old-key-one-0123456789", "old-key-two-0123456789"] {
        let resp = gw
            .post("/api/v1/events?exchange=sgad.notifications", key)
            .json(&json!({"user_id": "carol", "title": "t", "message": "m", "type": "info"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        assert_eq!(gw.get("/api/v1/users/carol/notifications", key).send().await.unwrap().status(), 200);
        assert_eq!(gw.post("/api/v1/users/carol/notifications/read_all", key).send().await.unwrap().status(), 200);
        assert_eq!(gw.get("/api/v1/admin/presence", key).send().await.unwrap().status(), 200);
    }
    assert_eq!(gw.get("/api/v1/users/carol/notifications", SERVICE_KEY).send().await.unwrap().status(), 401);
}

/// The real binary with a bare key and a scoped one, logging everything at debug: it warns about the bare key
/// (without naming it); ingest logs and metrics name the scoped key by its id; no log line and no metric holds
/// either key.
#[tokio::test]
async fn logs_and_metrics_name_the_key_id_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bare = "bare-key-secret-0123456789";
    let scoped = "billing-key-secret-0123456789";
    let config = process_config(
        dir.path(),
        "",
        &format!(
            "[auth]\nservice_keys = [{bare:?}, {{ id = \"billing\", key = {scoped:?}, scopes = [\"publish\"], \
             routing_keys = [\"student.#\"] }}]\n"
        ),
    );
    let herald = spawn_herald_process_with(
        &config,
        &[("RUST_LOG", "debug,tower_http=trace,hyper=info,h2=info"), ("HERALD__LOG__FORMAT", "json")],
        None,
    );
    let http = reqwest::Client::new();
    let student = fixture("medtrack-student-created.json");
    let post = |key: &str, routing_key: &str| {
        http.post(format!("{}/api/v1/events?exchange=events.topic&routing_key={routing_key}", herald.url))
            .bearer_auth(key)
            .header("idempotency-key", "log-test")
            .json(&student["body"])
            .send()
    };
    assert_eq!(post(scoped, "student.created").await.unwrap().status(), 202);
    assert_eq!(post(scoped, "stage.accepted").await.unwrap().status(), 403);
    assert_eq!(post(bare, "student.created").await.unwrap().status(), 202);
    let metrics = http.get(format!("{}/metrics", herald.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("herald_ingest_events_total") && l.contains("key=\"billing\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("herald_ingest_errors_total")
            && l.contains("reason=\"insufficient_scope\"")
            && l.contains("key=\"billing\"")),
        "{metrics}"
    );
    assert!(!metrics.contains(bare) && !metrics.contains(scoped), "a key reached /metrics");

    let deadline = Instant::now() + WAIT;
    loop {
        let lines = herald.output();
        let refused = lines.iter().any(|l| l.contains("ingest request refused") && l.contains("\"billing\""));
        let committed = lines.iter().filter(|l| l.contains("ingest request committed")).count() >= 2;
        if refused && committed {
            let warning = lines.iter().find(|l| l.contains("bare keys")).expect("a warning about the bare key");
            assert!(warning.contains("WARN"), "{warning}");
            let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(bare) || l.contains(scoped)).collect();
            assert!(leaked.is_empty(), "a key reached the log: {leaked:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "the ingest lines were not logged; log: {lines:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
