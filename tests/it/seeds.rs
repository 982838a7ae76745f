//! The seeds' services, drop-in: MedTrack's and SGAD's events exactly as their code publishes them
//! (`tests/fixtures/events/`), in the order a day of theirs would, over HTTP here and over AMQP in `amqp.rs`.
//! Each step names what the right user must see: a stored notification, a live-only frame, nothing, or an
//! erased inbox. Nothing may be refused or dead-lettered.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const STUDENT: &str = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
const ENCADRANT: &str = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f";
const REFEREE: &str = "3e7a1b2c-4d5e-4f6a-8b7c-9d0e1f2a3b4c";

/// What a step must produce for `user`.
pub enum Expect {
    /// A stored notification with this title and event_type, live on the user's session and in the inbox.
    Stored { title: &'static str, event_type: &'static str },
    /// A live-only `event` frame with this event_type: not in the inbox.
    Live { event_type: &'static str },
    /// Acknowledged and nothing for anyone.
    Nothing,
    /// The user's inbox is erased (a `purged` frame).
    Purged,
}

pub struct Step {
    pub fixture: &'static str,
    pub user: &'static str,
    pub expect: Expect,
}

/// A day of the seeds' events, in the order they happen.
pub fn day() -> Vec<Step> {
    use Expect::*;
    let step = |fixture, user, expect| Step { fixture, user, expect };
    vec![
        step("medtrack-auth-user-created.json", STUDENT, Nothing),
        step(
            "medtrack-student-created.json",
            STUDENT,
            Stored { title: "Welcome to MedTrack, John!", event_type: "student.created" },
        ),
        step(
            "medtrack-encadrant-created.json",
            ENCADRANT,
            Stored { title: "Welcome to MedTrack, Dr. Smith Johnson!", event_type: "encadrant.created" },
        ),
        step("medtrack-student-updated.json", STUDENT, Nothing),
        // The core-service names the student profile only: the alias the welcome taught finds the user.
        step(
            "medtrack-stage-created-core.json",
            STUDENT,
            Stored { title: "Your stage was created", event_type: "stage.created" },
        ),
        step(
            "medtrack-stage-accepted.json",
            STUDENT,
            Stored { title: "Your stage at Cardiology was accepted", event_type: "stage.accepted" },
        ),
        step(
            "medtrack-stage-completed-core.json",
            STUDENT,
            Stored { title: "Your stage was completed", event_type: "stage.completed" },
        ),
        step("medtrack-encadrant-deleted.json", ENCADRANT, Nothing),
        step("medtrack-auth-user-deleted-plain.json", ENCADRANT, Purged),
        step(
            "sgad-availability-closed-no-type.json",
            REFEREE,
            Stored { title: "Your availability for week 44 is closed", event_type: "availability.closed" },
        ),
        step("sgad-availability-updated-no-type.json", REFEREE, Live { event_type: "availability.updated" }),
        step(
            "sgad-match-assigned.json",
            REFEREE,
            Stored { title: "Partido asignado: 2025-11-02T11:00:00", event_type: "match.assigned" },
        ),
        step(
            "sgad-notification-user.json",
            REFEREE,
            Stored { title: "Disponibilidad Cerrada", event_type: "notification" },
        ),
        step("medtrack-user-deleted.json", STUDENT, Purged),
    ]
}

/// Check what `user`'s session received after a step, and their inbox.
pub async fn check(gw: &Gateway, tab: &mut Client, step: &Step) {
    let name = step.fixture;
    match step.expect {
        Expect::Stored { title, event_type } => {
            let f = tab.notification().await;
            assert_eq!(f["notification"]["title"], title, "{name}");
            assert_eq!(f["notification"]["user_id"], step.user, "{name}");
            assert_eq!(f["event_type"], event_type, "{name}");
            let id = &f["notification"]["id"];
            let inbox = gw.inbox(step.user).await;
            assert!(inbox["items"].as_array().unwrap().iter().any(|n| &n["id"] == id), "{name}: in the inbox");
        }
        Expect::Live { event_type } => {
            let before = gw.inbox(step.user).await["items"].as_array().unwrap().len();
            let f = tab.frame().await;
            assert_eq!(f["type"], "event", "{name}: {f}");
            assert_eq!(f["event_type"], event_type, "{name}");
            assert_eq!(gw.inbox(step.user).await["items"].as_array().unwrap().len(), before, "{name}: not stored");
        }
        Expect::Nothing => tab.silent_for(Duration::from_millis(300)).await,
        Expect::Purged => {
            assert_eq!(tab.frame().await["type"], "purged", "{name}");
            let left: Vec<Value> = gw.inbox(step.user).await["items"].as_array().unwrap().clone();
            assert!(left.iter().all(|n| n["user_id"].is_null()), "{name}: only broadcasts remain");
        }
    }
}

#[tokio::test]
async fn a_day_of_the_seeds_events_posted_over_http_reaches_the_right_users() {
    let gw = spawn_gateway().await;
    let mut tabs = std::collections::HashMap::new();
    for user in [STUDENT, ENCADRANT, REFEREE] {
        tabs.insert(user, gw.connect(user).await);
    }
    for step in day() {
        let resp = gw.post_fixture(step.fixture).await;
        let status = resp["results"][0]["status"].as_str().unwrap().to_owned();
        let expected = match step.expect {
            Expect::Stored { .. } => "stored",
            Expect::Live { .. } => "live",
            Expect::Nothing => "ignored",
            Expect::Purged => "purged",
        };
        assert_eq!(status, expected, "{}: {resp}", step.fixture);
        check(&gw, tabs.get_mut(step.user).unwrap(), &step).await;
    }
}

#[tokio::test]
async fn a_re_published_medtrack_event_with_a_fresh_timestamp_notifies_once() {
    let gw = spawn_gateway().await;
    let mut tab = gw.connect(STUDENT).await;
    let mut f = fixture("medtrack-student-created.json");
    let first = gw.post_event("events.topic", "student.created", &f["body"]).await;
    assert_eq!(first.status(), 202);
    tab.notification().await;
    // MedTrack publishes without message_id; a retry carries a new _meta.timestamp, so a new digest.
    f["body"]["_meta"]["timestamp"] = "2025-12-13T19:27:09.000000Z".into();
    let again: Value = gw.post_event("events.topic", "student.created", &f["body"]).await.json().await.unwrap();
    assert_eq!(again["results"][0]["status"], "duplicate", "the rule's dedupe_key recognises it: {again}");
    tab.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_rules_dedupe_key_never_overrides_an_id_the_producer_gave() {
    let gw = spawn_gateway().await;
    let f = fixture("sgad-availability-closed.json");
    let (exchange, key) = (f["exchange"].as_str().unwrap(), f["routing_key"].as_str().unwrap());
    let post = |id: &'static str| {
        gw.post(&format!("/api/v1/events?exchange={exchange}&routing_key={key}"), SERVICE_KEY)
            .header("Idempotency-Key", id)
            .json(&f["body"])
            .send()
    };
    // The same week closed twice, each close named by its producer: two events, not one.
    let first: Value = post("close-1").await.unwrap().json().await.unwrap();
    let second: Value = post("close-2").await.unwrap().json().await.unwrap();
    assert_eq!(first["results"][0]["status"], "stored", "{first}");
    assert_eq!(second["results"][0]["status"], "stored", "another id is another event: {second}");
    let again: Value = post("close-2").await.unwrap().json().await.unwrap();
    assert_eq!(again["results"][0]["status"], "duplicate", "the same id is the same event: {again}");
    // Unnamed, the week closed again later is a new event; the same close re-serialised is not.
    let mut reclosed = f["body"].clone();
    reclosed["closed_at"] = "2025-10-24T09:00:00.000000".into();
    let third: Value = gw.post_event(exchange, key, &reclosed).await.json().await.unwrap();
    assert_eq!(third["results"][0]["status"], "stored", "{third}");
    let text = serde_json::to_string_pretty(&reclosed).unwrap();
    let reserialised: Value = gw
        .post(&format!("/api/v1/events?exchange={exchange}&routing_key={key}"), SERVICE_KEY)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reserialised["results"][0]["status"], "duplicate", "{reserialised}");
}

#[tokio::test]
async fn a_stage_event_for_a_student_nobody_introduced_yet_is_422_and_stored_once_the_alias_is_known() {
    let gw = spawn_gateway().await;
    let resp = gw.post_fixture_raw("medtrack-stage-created-core.json").await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unresolved_recipient", "{body}");
    assert!(body["message"].as_str().unwrap().contains("7d3c1f2a"), "{body}");
    assert_eq!(body["results"][0]["status"], "unresolved_recipient");

    // An operator backfills the alias over the service API; the same event is then stored (not a duplicate).
    let put = gw
        .raw()
        .put(gw.url("/api/v1/aliases/student/7d3c1f2a-5b8e-4c1d-9a6f-2e4b8c0d1a3f"))
        .bearer_auth(SERVICE_KEY)
        .json(&serde_json::json!({"user_id": STUDENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got: Value = gw
        .get("/api/v1/aliases/student/7d3c1f2a-5b8e-4c1d-9a6f-2e4b8c0d1a3f", SERVICE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["user_id"], STUDENT);
    let mut tab = gw.connect(STUDENT).await;
    let resp = gw.post_fixture("medtrack-stage-created-core.json").await;
    assert_eq!(resp["results"][0]["status"], "stored");
    assert_eq!(tab.notification().await["notification"]["user_id"], STUDENT);

    // Users cannot touch aliases.
    let as_user = gw.get("/api/v1/aliases/student/x", &gw.token(STUDENT)).send().await.unwrap();
    assert_eq!(as_user.status(), 403);
    let unknown = gw.get("/api/v1/aliases/student/nobody", SERVICE_KEY).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_seeds_frontend_format_has_the_event_fields_at_the_top_level_and_answers_any_text_with_their_pong() {
    let gw = spawn_gateway().await;
    let mut sgad = gw.connect_with(REFEREE, "&format=event").await;
    gw.post_fixture("sgad-availability-closed.json").await;
    let m = sgad.frame().await;
    // What SGAD's front-end reads: switch (message.event_type), message.week_number, message.title.
    assert_eq!(m["event_type"], "availability.closed", "{m}");
    assert_eq!(m["week_number"], 42);
    assert_eq!(m["title"], "Your availability for week 42 is closed");
    assert!(m["id"].as_i64().unwrap() > 0, "Herald's id, to resume with");
    gw.post_fixture("sgad-availability-updated-no-type.json").await;
    let m = sgad.frame().await;
    assert_eq!(m["event_type"], "availability.updated");
    assert_eq!(m["week_number"], 43);
    gw.post_fixture("sgad-notification-user.json").await;
    let m = sgad.frame().await;
    assert_eq!(m["event_type"], "notification");
    assert_eq!(m["message"], "Tu disponibilidad ha sido cerrada");
    for text in ["ping", "hello", r#"{"anything":1}"#] {
        sgad.send_text(text).await;
        assert_eq!(sgad.frame().await, serde_json::json!({"type": "pong", "message": "Connection alive"}));
    }
    // The token stays mandatory.
    let req = gw.ws_request(&format!("/ws/{REFEREE}?format=event"));
    assert_eq!(gw.refused(req).await.0, 401);
}
