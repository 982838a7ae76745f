//! The per-event trace (issue 18): one trace per outcome, across two nodes, retention, the bounded buffer's
//! counters, and `herald trace` against a running gateway.
//!
//! The AMQP test needs HERALD_TEST_AMQP_URL; the two-node and PostgreSQL tests HERALD_TEST_POSTGRES_URL and
//! HERALD_TEST_REDIS_URL (`source scripts/lib/services.sh; start_rabbitmq; start_redis; start_postgres`).
//! Without them those tests say so and pass.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde_json::{json, Value};

use crate::amqp::{Amqp, Broker};
use crate::cluster::{fresh_database, two_ready_nodes, unique};
use crate::support::*;
use herald::config::Scope;

/// POST one event with an `Idempotency-Key` (its event id); the 2xx body.
async fn post(gw: &Gateway, exchange: &str, routing_key: &str, body: &Value, event_id: &str) -> Value {
    let resp = gw
        .raw()
        .post(gw.url("/api/v1/events"))
        .query(&[("exchange", exchange), ("routing_key", routing_key)])
        .bearer_auth(SERVICE_KEY)
        .header("Idempotency-Key", event_id)
        .json(body)
        .send()
        .await
        .unwrap();
    // An event no rule takes is answered 422 `unmatched`, and traced like the others.
    assert!(resp.status().is_success() || resp.status() == 422, "posting {event_id}: {}", resp.status());
    resp.json().await.unwrap()
}

fn note(user: &str, title: &str) -> Value {
    json!({"user_id": user, "title": title, "message": "m", "type": "info"})
}

/// `GET /api/v1/admin/events/{id}/trace` as (status, body).
async fn event_trace(gw: &Gateway, event_id: &str) -> (u16, Value) {
    let resp = gw.get(&format!("/api/v1/admin/events/{event_id}/trace"), SERVICE_KEY).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The event's only trace.
async fn only_trace(gw: &Gateway, event_id: &str) -> Value {
    let (status, body) = event_trace(gw, event_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], event_id);
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{body}");
    traces[0].clone()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_stored_event_is_traced_from_its_reception_to_the_session_that_got_it_and_the_read() {
    let gw = spawn_gateway_with(|s| s.cluster.node_id = "solo".into()).await;
    let user = unique("alice-");
    let mut tab = gw.connect(&user).await;
    let results = post(&gw, "sgad.notifications", "", &note(&user, "hello"), "ev-stored").await;
    let id = results["results"][0]["notification_ids"][0].as_i64().unwrap();
    assert_eq!(tab.notification().await["notification"]["id"], id);
    let r = gw.post(&format!("/api/v1/users/{user}/notifications/{id}/read"), &gw.token(&user)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let t = only_trace(&gw, "ev-stored").await;
    assert_eq!(t["transport"], "http");
    assert_eq!(t["exchange"], "sgad.notifications");
    assert_eq!(t["producer"], "dev", "the service key's id, never the key");
    assert_eq!(t["rule"], "sgad-notification");
    assert_eq!((t["dedupe"].as_str(), t["outcome"].as_str()), (Some("new"), Some("stored")));
    assert_eq!(t["reason"], Value::Null);
    assert_eq!(strings(&t["recipients"]), [user.as_str()]);
    assert_eq!(t["notification_ids"], json!([id]));
    assert_eq!(strings(&t["published_to"]), ["solo"]);
    let d = &t["deliveries"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{t}");
    assert_eq!(d[0]["user_id"], user.as_str());
    assert_eq!(d[0]["node"], "solo");
    assert_eq!((d[0]["online"].as_bool(), d[0]["sessions_written"].as_u64()), (Some(true), Some(1)));
    assert_eq!(d[0]["reason"], Value::Null);
    assert_eq!(t["read"][0]["user_id"], user.as_str());
    assert_eq!(t["seen"][0]["user_id"], user.as_str(), "reading implies seeing");
    let received: DateTime<Utc> = t["received_at"].as_str().unwrap().parse().unwrap();
    let read: DateTime<Utc> = t["read"][0]["read_at"].as_str().unwrap().parse().unwrap();
    assert!(received <= read);
    assert!(!t.to_string().contains(SERVICE_KEY));
}

#[tokio::test]
async fn an_event_for_an_offline_user_is_stored_and_its_delivery_says_offline() {
    let gw = spawn_gateway().await;
    let user = unique("offline-");
    post(&gw, "sgad.notifications", "", &note(&user, "while away"), "ev-offline").await;
    let t = only_trace(&gw, "ev-offline").await;
    assert_eq!(t["outcome"], "stored");
    let d = &t["deliveries"][0];
    assert_eq!((d["online"].as_bool(), d["sessions_written"].as_u64()), (Some(false), Some(0)));
    assert_eq!(d["reason"], "offline");
    assert_eq!(t["read"], json!([]));
}

#[tokio::test]
async fn an_event_posted_twice_has_a_second_trace_marked_duplicate() {
    let gw = spawn_gateway().await;
    let user = unique("dup-");
    post(&gw, "sgad.notifications", "", &note(&user, "once"), "ev-dup").await;
    post(&gw, "sgad.notifications", "", &note(&user, "once"), "ev-dup").await;
    let (status, body) = event_trace(&gw, "ev-dup").await;
    assert_eq!(status, 200);
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2, "{body}");
    assert_ne!(traces[0]["trace_id"], traces[1]["trace_id"]);
    // Newest first: the re-post, then the original.
    assert_eq!((traces[0]["dedupe"].as_str(), traces[0]["outcome"].as_str()), (Some("duplicate"), Some("duplicate")));
    assert_eq!(traces[0]["notification_ids"], json!([]));
    assert_eq!((traces[1]["dedupe"].as_str(), traces[1]["outcome"].as_str()), (Some("new"), Some("stored")));
}

#[tokio::test]
async fn an_event_no_rule_matches_is_traced_as_unmatched_with_the_reason() {
    let gw = spawn_gateway().await;
    post(&gw, "nowhere", "zzz.no.rule", &json!({"user_id": "u", "title": "t"}), "ev-unmatched").await;
    let t = only_trace(&gw, "ev-unmatched").await;
    assert_eq!(t["outcome"], "unmatched");
    assert_eq!(t["rule"], Value::Null);
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("zzz.no.rule") && reason.contains("nowhere"), "{reason}");
    assert_eq!((t["recipients"].clone(), t["deliveries"].clone()), (json!([]), json!([])));
}

#[tokio::test]
async fn a_purge_is_traced_with_the_users_it_erased() {
    let gw = spawn_gateway().await;
    let user = unique("gone-");
    post(&gw, "sgad.notifications", "", &note(&user, "before"), "ev-before-purge").await;
    post(&gw, "events.topic", "user.deleted", &json!({"user_id": user}), "ev-purge").await;
    let t = only_trace(&gw, "ev-purge").await;
    assert_eq!((t["outcome"].as_str(), t["rule"].as_str()), (Some("purged"), Some("gdpr-erase")));
    assert_eq!(strings(&t["recipients"]), [user.as_str()]);
}

/// An erase takes the user's trace with their inbox: their events, deliveries and reads are no longer readable by
/// user or by event (before, `GET /admin/users/{user}/trace` served their whole history for the trace's retention);
/// the purge's own step, the record of the erasure, stays; other users' steps stay.
#[tokio::test]
async fn an_erase_deletes_the_users_trace_steps_and_keeps_the_record_of_the_erasure() {
    let gw = spawn_gateway().await;
    let (user, other) = (unique("erased-"), unique("kept-"));
    let stored = post(&gw, "sgad.notifications", "", &note(&user, "before"), "ev-erased-1").await;
    post(&gw, "sgad.notifications", "", &note(&other, "theirs"), "ev-kept-1").await;
    let id = stored["results"][0]["notification_ids"][0].as_i64().unwrap();
    let read = gw.raw().post(gw.url(&format!("/api/v1/users/{user}/notifications/{id}/read"))).bearer_auth(SERVICE_KEY);
    assert_eq!(read.send().await.unwrap().status(), 200);
    assert_eq!(user_traces(&gw, &user).await, 1);
    // Events whose one `event` step (no user of its own) lists the user among its recipients: a live one, and one
    // stored for them and another user.
    let live = json!({"referee_id": user, "week_number": 3, "slots": []});
    post(&gw, "sgad.availability", &format!("availability.updated.{user}"), &live, "ev-erased-live").await;
    post(
        &gw,
        "sgad.notifications",
        "",
        &json!({"user_id": [user, other], "title": "both", "message": "m"}),
        "ev-erased-both",
    )
    .await;
    for id in ["ev-erased-live", "ev-erased-both"] {
        assert!(strings(&only_trace(&gw, id).await["recipients"]).contains(&user.as_str()), "{id} names the user");
    }
    post(&gw, "events.topic", "user.deleted", &json!({"user_id": user}), "ev-erase").await;
    assert_eq!(user_traces(&gw, &user).await, 0, "the erased user's history is gone");
    assert_eq!(event_trace(&gw, "ev-erased-1").await.0, 404, "and so is their event's");
    for id in ["ev-erased-live", "ev-erased-both"] {
        let (_, body) = event_trace(&gw, id).await;
        assert!(!body.to_string().contains(&user), "{id}'s trace still names the erased user: {body}");
    }
    let t = only_trace(&gw, "ev-erase").await;
    assert_eq!((t["outcome"].as_str(), strings(&t["recipients"])), (Some("purged"), vec![user.as_str()]));
    assert_eq!(user_traces(&gw, &other).await, 2, "another user's traces stay");
}

/// How many traces `GET /api/v1/admin/users/{user}/trace` lists.
async fn user_traces(gw: &Gateway, user: &str) -> usize {
    let resp = gw.get(&format!("/api/v1/admin/users/{user}/trace"), SERVICE_KEY).send().await.unwrap();
    resp.json::<Value>().await.unwrap()["traces"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_users_trace_lists_the_events_stored_for_them_newest_first() {
    let gw = spawn_gateway().await;
    let user = unique("bob-");
    for i in 0..3 {
        post(&gw, "sgad.notifications", "", &note(&user, &format!("n{i}")), &format!("ev-user-{i}")).await;
    }
    post(&gw, "sgad.notifications", "", &note("someone-else", "x"), "ev-other").await;
    let resp = gw.get(&format!("/api/v1/admin/users/{user}/trace?limit=2"), SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user_id"], user.as_str());
    let ids: Vec<&str> = body["traces"].as_array().unwrap().iter().map(|t| t["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ev-user-2", "ev-user-1"]);
    let none = gw.get("/api/v1/admin/users/nobody-at-all/trace", SERVICE_KEY).send().await.unwrap();
    assert_eq!(none.status(), 200);
    assert_eq!(none.json::<Value>().await.unwrap()["traces"], json!([]));
}

#[tokio::test]
async fn trace_endpoints_refuse_users_bad_limits_and_answer_404_for_an_unknown_event() {
    let gw = spawn_gateway().await;
    let (status, body) = event_trace(&gw, "never-posted").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let bad = gw.get("/api/v1/admin/users/u/trace?limit=0", SERVICE_KEY).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "bad_query");
    let bad = gw.get("/api/v1/admin/users/u/trace?limit=lots", SERVICE_KEY).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let user = gw.get("/api/v1/admin/events/e/trace", &gw.token("u")).send().await.unwrap();
    assert_eq!(user.status(), 403, "a user token never reads traces");
    let anon = gw.raw().get(gw.url("/api/v1/admin/trace/stats")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
}

#[tokio::test]
async fn trace_stats_count_what_this_node_recorded() {
    let gw = spawn_gateway().await;
    post(&gw, "sgad.notifications", "", &note(&unique("s-"), "t"), "ev-stats").await;
    only_trace(&gw, "ev-stats").await; // waits for this node's steps to be written
    let stats: Value = gw.get("/api/v1/admin/trace/stats", SERVICE_KEY).send().await.unwrap().json().await.unwrap();
    assert!(stats["recorded"].as_u64().unwrap() >= 3, "event, stored, delivered: {stats}");
    assert_eq!((stats["dropped"].as_u64(), stats["sampled_out"].as_u64()), (Some(0), Some(0)));
    assert_eq!(stats["retention_days"], 7);
}

#[tokio::test]
async fn with_tracing_off_nothing_is_recorded_and_reads_answer_409() {
    let gw = spawn_gateway_with(|s| s.trace.enabled = false).await;
    post(&gw, "sgad.notifications", "", &note("u", "t"), "ev-off").await;
    let (status, body) = event_trace(&gw, "ev-off").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("trace_disabled")));
    let stats: Value = gw.get("/api/v1/admin/trace/stats", SERVICE_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!((stats["recorded"].as_u64(), stats["dropped"].as_u64()), (Some(0), Some(0)));
    assert!(!gw.dir.path().join("herald.trace.db").exists(), "no trace database when tracing is off");
}

#[tokio::test]
async fn amqp_events_a_rule_cannot_route_or_whose_alias_is_unknown_are_traced_as_dead_lettered_with_the_reason() {
    let Some(amqp) = Amqp::new("trace_dead").await else { return };
    let gw = amqp
        .gateway(|s| {
            amqp.also_bind(s, "events.topic", "invoice.*");
            // The unresolved recipient below dead-lettered at once, not after its retries.
            s.amqp.unresolved_retries = 0;
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    let topic = amqp.exchange("events.topic");
    let props = BasicProperties::default().with_message_id("trace-dead-1".into());
    let body = br#"{"event_type":"stage.accepted","payload":{"stage_id":"s1"},"service":"core"}"#;
    broker.publish(&topic, "stage.accepted", body, props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the letter in the dead-letter queue", WAIT, async || (broker.depth(&dlq).await == 1).then_some(()))
        .await;
    let t = eventually("its trace", WAIT, async || {
        let (status, body) = event_trace(&gw, "trace-dead-1").await;
        (status == 200).then(|| body["traces"][0].clone())
    })
    .await;
    assert_eq!((t["transport"].as_str(), t["outcome"].as_str()), (Some("amqp"), Some("dead_lettered")));
    assert_eq!(t["exchange"], topic.as_str());
    assert_eq!(t["routing_key"], "stage.accepted");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.starts_with("missing_user_id") && reason.contains("stage-lifecycle"), "{reason}");
    // The rule matched and could not route it; it never reached the store's dedupe (it said "no rule; new").
    assert_eq!((t["rule"].as_str(), t["dedupe"].as_str()), (Some("stage-lifecycle"), Some("unchecked")), "{t}");

    // No rule at all (dead-lettered under the default `unmatched` policy): no rule in its trace, and counted as
    // unmatched as an HTTP event is (it was counted only as a dead letter).
    let before = metric(&gw, "herald_events_unmatched_total").await;
    let props = BasicProperties::default().with_message_id("trace-dead-3".into());
    broker.publish(&topic, "invoice.paid", br#"{"event_type":"invoice.paid","payload":{}}"#, props).await;
    let t = eventually("the unmatched event's trace", WAIT, async || {
        let (status, body) = event_trace(&gw, "trace-dead-3").await;
        (status == 200).then(|| body["traces"][0].clone())
    })
    .await;
    assert_eq!(t["outcome"], "dead_lettered");
    assert_eq!((t["rule"].as_str(), t["dedupe"].as_str()), (None, Some("unchecked")), "{t}");
    assert!(t["reason"].as_str().unwrap().starts_with("unmatched"), "{t}");
    assert_eq!(metric(&gw, "herald_events_unmatched_total").await, before + 1.0);

    // Routed and committed, then dead-lettered: addressed to a student alias nobody taught yet.
    let f = fixture("medtrack-stage-created-core.json");
    let props = BasicProperties::default().with_message_id("trace-dead-2".into());
    let exchange = amqp.exchange(f["exchange"].as_str().unwrap());
    broker.publish(&exchange, "stage.created", &serde_json::to_vec(&f["body"]).unwrap(), props).await;
    let t = eventually("the unresolved event's trace", WAIT, async || {
        let (status, body) = event_trace(&gw, "trace-dead-2").await;
        (status == 200 && body["traces"][0]["outcome"] == "dead_lettered").then(|| body["traces"][0].clone())
    })
    .await;
    assert_eq!(t["rule"], "stage-lifecycle", "the rule matched; the store could not resolve its recipient");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.starts_with("unresolved_recipient") && reason.contains("student"), "{reason}");
    assert_eq!(t["notification_ids"], json!([]));
}

#[tokio::test]
async fn an_amqp_event_held_for_a_retry_has_a_trace_per_try_saying_so_before_the_last_says_dead_lettered() {
    let Some(amqp) = Amqp::new("trace_retry").await else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.unresolved_retries = 1;
            s.amqp.unresolved_retry_delay_secs = 1;
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    let f = fixture("medtrack-stage-created-core.json");
    let props = BasicProperties::default().with_message_id("trace-retry-1".into());
    let exchange = amqp.exchange(f["exchange"].as_str().unwrap());
    broker.publish(&exchange, "stage.created", &serde_json::to_vec(&f["body"]).unwrap(), props).await;
    let traces = eventually("both tries' traces, the last dead-lettered", WAIT, async || {
        let (status, body) = event_trace(&gw, "trace-retry-1").await;
        let traces = body["traces"].as_array().cloned().unwrap_or_default();
        (status == 200 && traces.len() == 2 && traces[0]["outcome"] == "dead_lettered").then_some(traces)
    })
    .await;
    let (last, first) = (&traces[0], &traces[1]);
    assert_eq!(first["outcome"], "held_for_retry", "{first}");
    let reason = first["reason"].as_str().unwrap();
    assert!(reason.starts_with("unresolved_recipient") && reason.ends_with("retry 1 of 1, back in 1 s"), "{reason}");
    assert_ne!(first["trace_id"], last["trace_id"], "each try is a trace of its own");
    assert_eq!((first["rule"].as_str(), last["rule"].as_str()), (Some("stage-lifecycle"), Some("stage-lifecycle")));
    assert!(last["reason"].as_str().unwrap().starts_with("unresolved_recipient"), "{last}");
}

#[tokio::test]
async fn a_delivery_is_recorded_by_the_node_that_wrote_the_frame() {
    let Some((pg, redis)) = fresh_database("trace_two_nodes").await else { return };
    let (a, b) = two_ready_nodes(&pg, &redis, ["trace-a", "trace-b"]).await;
    let user = unique("t2-");
    let mut on_a = a.connect(&user).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // A's subscription to the user's channel
                                                          // Posted to B: B commits and finds no session; A's session gets it through Redis.
    let results = post(&b, "sgad.notifications", "", &note(&user, "across"), "ev-two-nodes").await;
    let id = results["results"][0]["notification_ids"][0].as_i64().unwrap();
    assert_eq!(on_a.notification().await["notification"]["id"], id);

    // A writes its own step (its writer, not B's): read through B until it is there.
    let t = eventually("node A's delivery in the trace read on node B", WAIT, async || {
        let t = only_trace(&b, "ev-two-nodes").await;
        (t["deliveries"].as_array().unwrap().len() == 2).then_some(t)
    })
    .await;
    assert_eq!(strings(&t["published_to"]), ["trace-a", "trace-b"]);
    let on = |n: &str| t["deliveries"].as_array().unwrap().iter().find(|d| d["node"] == n).unwrap().clone();
    let (da, db) = (on("trace-a"), on("trace-b"));
    assert_eq!(
        (da["online"].as_bool(), da["sessions_written"].as_u64(), &da["reason"]),
        (Some(true), Some(1), &Value::Null)
    );
    assert_eq!((db["online"].as_bool(), db["reason"].as_str()), (Some(false), Some("offline")));
    // The same trace, read on node A.
    assert_eq!(only_trace(&a, "ev-two-nodes").await["deliveries"].as_array().unwrap().len(), 2);
}

/// Steps before the cutoff go, younger ones stay; `now` is passed in, as the inbox's retention tests do.
async fn check_retention(store: std::sync::Arc<dyn herald::trace::TraceStore>) {
    use herald::trace::{Data, Kind, Step};
    let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    let trace_id = unique("t-");
    let step = |days_ago: i64, id: i64| Step {
        at: now - chrono::Duration::days(days_ago),
        trace_id: Some(trace_id.clone()),
        event_id: Some(format!("{trace_id}-ev")),
        notification_id: Some(id),
        user_id: Some("u".into()),
        kind: Kind::Stored,
        node: "n".into(),
        data: Data::Json(json!({})),
    };
    let steps: Vec<Step> = (0..5).map(|i| step(10, i)).chain((5..8).map(|i| step(1, i))).collect();
    store.append(std::sync::Arc::new(steps)).await.unwrap();
    let cutoff = now - chrono::Duration::days(7);
    let pruned = herald::trace::prune(store.as_ref(), cutoff, 2).await.unwrap();
    assert!(pruned >= 5, "the 5 old steps went, 2 at a time (other tests' rows may go too): {pruned}");
    let left = store.by_traces(std::slice::from_ref(&trace_id), 100).await.unwrap();
    let ids: Vec<i64> = left.iter().filter_map(|s| s.notification_id).collect();
    assert_eq!(ids, [5, 6, 7], "young steps stay");
    assert_eq!(herald::trace::prune(store.as_ref(), cutoff, 2).await.unwrap(), 0, "nothing more to prune");
}

/// A clean stop leaves the trace's database file whole: every step recorded up to the stop is in
/// `herald.trace.db` itself (written, the WAL checkpointed into it and truncated), so a copy of that file alone —
/// a backup taken after a stop — holds them. Before, the steps still buffered at the stop were lost and the rest
/// stayed in a `-wal` file of megabytes beside it.
#[tokio::test]
async fn a_clean_stop_leaves_every_recorded_step_in_the_trace_database_file_itself() {
    let gw = spawn_gateway().await;
    let user = unique("stop-");
    let mut tab = gw.connect(&user).await;
    let results = post(&gw, "sgad.notifications", "", &note(&user, "before the stop"), "ev-at-stop").await;
    let id = results["results"][0]["notification_ids"][0].as_i64().unwrap();
    assert_eq!(tab.notification().await["notification"]["id"], id);
    // Stopped at once: the steps wait in the trace's buffer for its next write (up to its linger).
    let dir = gw.stop_keeping_files().await;
    let wal = std::fs::metadata(dir.path().join("herald.trace.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the trace's WAL is checkpointed into its database at the stop");
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("herald.trace.db"), copy.path().join("backup.trace.db")).unwrap();
    let db = rusqlite::Connection::open(copy.path().join("backup.trace.db")).unwrap();
    // Stored as one notification, its event, stored and delivered steps share one row (`delivery` in its data)
    // when they reach the writer together, else the delivery is a row of its own.
    let rows: Vec<(String, bool)> = db
        .prepare(
            "SELECT kind, json_extract(data, '$.delivery') IS NOT NULL FROM trace_steps WHERE notification_id = ?1",
        )
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.iter().any(|(k, _)| k == "stored"), "{rows:?}");
    assert!(rows.iter().any(|(k, joined)| k == "delivered" || *joined), "the delivery: {rows:?}");
}

#[tokio::test]
async fn trace_retention_prunes_old_steps_in_batches_and_keeps_young_ones() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    check_retention(herald::trace::open_store(&settings).await.unwrap()).await;
    assert!(dir.path().join("herald.trace.db").exists(), "the trace's own file, beside the inbox");
}

#[tokio::test]
async fn trace_retention_prunes_old_steps_on_postgres() {
    let Some((pg, _)) = fresh_database("trace_retention").await else { return };
    let mut settings = test_settings(tempfile::tempdir().unwrap().path());
    settings.store.url = pg;
    check_retention(herald::trace::open_store(&settings).await.unwrap()).await;
}

/// `TraceStore::erase` deletes every step naming the users, of every kind, and no one else's.
async fn check_erase(store: std::sync::Arc<dyn herald::trace::TraceStore>) {
    use herald::trace::{Data, Kind, Step};
    let trace_id = unique("t-");
    let step = |user: &str, kind: Kind, id: i64| Step {
        at: Utc::now(),
        trace_id: Some(trace_id.clone()),
        event_id: None,
        notification_id: Some(id),
        user_id: Some(user.into()),
        kind,
        node: "n".into(),
        data: Data::Json(json!({})),
    };
    let (gone, kept) = (unique("gone-"), unique("kept-"));
    let kinds = [Kind::Stored, Kind::Delivered, Kind::Read, Kind::ReadAll, Kind::SeenAll];
    let steps =
        kinds.iter().enumerate().flat_map(|(i, k)| [step(&gone, *k, i as i64), step(&kept, *k, 100 + i as i64)]);
    // `event` steps have no user of their own: one listing the erased user goes, the erasure's own record and one
    // listing someone else stay.
    let event = |outcome: &str, recipients: &[&str]| Step {
        kind: Kind::Event,
        user_id: None,
        notification_id: None,
        data: Data::Json(json!({"outcome": outcome, "recipients": recipients, "recipients_total": recipients.len()})),
        ..step("", Kind::Event, 0)
    };
    let events = [event("live", &[&kept, &gone]), event("purged", &[&gone]), event("stored", &[&kept])];
    store.append(std::sync::Arc::new(steps.chain(events).collect())).await.unwrap();
    assert_eq!(store.erase(&[gone.clone(), unique("nobody-")]).await.unwrap(), 6);
    let left = store.by_traces(std::slice::from_ref(&trace_id), 100).await.unwrap();
    let users: Vec<_> = left.iter().filter_map(|s| s.user_id.as_deref()).collect();
    assert!(users.iter().all(|u| *u == kept) && users.len() == 5, "{left:?}");
    let outcomes: Vec<_> =
        left.iter().filter(|s| s.kind == Kind::Event).map(|s| s.data.json()["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("purged"), json!("stored")], "{left:?}");
}

#[tokio::test]
async fn an_erase_deletes_every_step_of_those_users_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    check_erase(herald::trace::open_store(&test_settings(dir.path())).await.unwrap()).await;
}

#[tokio::test]
async fn an_erase_deletes_every_step_of_those_users_and_no_other_on_postgres() {
    let Some((pg, _)) = fresh_database("trace_erase").await else { return };
    let mut settings = test_settings(tempfile::tempdir().unwrap().path());
    settings.store.url = pg;
    check_erase(herald::trace::open_store(&settings).await.unwrap()).await;
}

/// Turning tracing off stops recording, not retention: steps recorded while it was on still go after
/// `trace.retention_days` (before, they stayed for good, an erased user's included).
#[tokio::test]
async fn steps_recorded_before_tracing_was_turned_off_are_still_pruned() {
    use herald::trace::{Data, Kind, Step};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.trace.db");
    let mut settings = test_settings(dir.path());
    settings.trace.sqlite_path = path.clone();
    let store = herald::trace::open_store(&settings).await.unwrap();
    let trace_id = unique("t-");
    let old = Step {
        at: Utc::now() - chrono::Duration::days(30),
        trace_id: Some(trace_id.clone()),
        event_id: None,
        notification_id: Some(1),
        user_id: Some("u".into()),
        kind: Kind::Stored,
        node: "n".into(),
        data: Data::Json(json!({})),
    };
    store.append(std::sync::Arc::new(vec![old])).await.unwrap();
    let _gw = spawn_gateway_with(|s| {
        s.trace.enabled = false;
        s.trace.sqlite_path = path.clone();
        s.store.prune_interval_secs = 1;
    })
    .await;
    let ids = std::slice::from_ref(&trace_id);
    for _ in 0..100 {
        if store.by_traces(ids, 10).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a 30-day-old step is still there with tracing off");
}

#[tokio::test]
async fn herald_trace_prints_a_timeline_from_a_running_gateway_and_never_the_key() {
    let gw = spawn_gateway_with(|s| s.cluster.node_id = "cli-node".into()).await;
    let user = unique("cli-");
    post(&gw, "sgad.notifications", "", &note(&user, "for the cli"), "ev-cli").await;
    let base = gw.url("");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .env("HERALD_ADMIN_KEY", SERVICE_KEY)
                .output()
                .unwrap()
        })
    };
    let out = run(vec!["trace".into(), "ev-cli".into(), "--url".into(), base.clone()]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("event ev-cli"), "{text}");
    assert!(text.contains("received over HTTP, exchange sgad.notifications, from key dev"), "{text}");
    assert!(text.contains("rule `sgad-notification` matched; dedupe: new"), "{text}");
    assert!(text.contains(&format!("delivery to {user} on node cli-node: not online there")), "{text}");
    assert!(!text.contains(SERVICE_KEY) && !text.contains('{'), "{text}");

    let out = run(vec!["trace".into(), "--user".into(), user.clone(), "--json".into(), "--url".into(), base.clone()])
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["traces"][0]["event_id"], "ev-cli");

    let out = run(vec!["trace".into(), "no-such-event".into(), "--url".into(), base]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no trace of event `no-such-event` is retained"), "{err}");
}

#[tokio::test]
async fn a_notification_the_user_muted_is_traced_as_stored_and_not_pushed_because_muted() {
    let gw = spawn_gateway_with(|s| s.cluster.node_id = "mute-node".into()).await;
    let user = unique("muted-");
    let token = gw.token(&user);
    let resp = gw
        .raw()
        .put(gw.url(&format!("/api/v1/users/{user}/preferences")))
        .bearer_auth(&token)
        .json(&json!({"types": {"digest": "muted"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _tab = gw.connect(&user).await;
    let body = json!({"user_id": user, "title": "weekly", "message": "m", "type": "digest"});
    post(&gw, "sgad.notifications", "", &body, "ev-muted").await;
    let t = only_trace(&gw, "ev-muted").await;
    assert_eq!(t["outcome"], "stored", "a muted notification is stored (and listed)");
    let d = &t["deliveries"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{t}");
    assert_eq!((d[0]["reason"].as_str(), d[0]["sessions_written"].as_u64()), (Some("muted"), Some(0)));
    assert_eq!((d[0]["online"].as_bool(), d[0]["node"].as_str()), (Some(true), Some("mute-node")));
}

/// `herald trace` says why it cannot show a trace, in words an operator can act on: an unreachable gateway with
/// the cause (before: only "error sending request"), a key the gateway does not know (before: told it needed the
/// `admin` scope), and a key without that scope.
#[tokio::test]
async fn the_trace_command_says_why_it_cannot_read_a_trace() {
    use herald::trace::terminal::{fetch, Query};
    let publisher = "publisher-key-0123456789";
    let gw = spawn_gateway_with(|s| s.auth.service_keys.push(scoped("publisher", publisher, &[Scope::Publish]))).await;
    let base = gw.url("");
    let query = Query::Event("e-1".into());
    let e = fetch(&base, "not-a-key-of-this-gateway", &query, false).await.unwrap_err().to_string();
    assert!(e.contains("refused the key") && e.contains("401") && !e.contains("scope"), "{e}");
    let e = fetch(&base, publisher, &query, false).await.unwrap_err().to_string();
    assert!(e.contains("lacks the `admin` scope") && e.contains("403"), "{e}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // and closed again
    let e = fetch(&format!("http://{closed}"), SERVICE_KEY, &query, false).await.unwrap_err().to_string();
    assert!(e.contains("cannot reach") && e.to_lowercase().contains("refused"), "the cause is said: {e}");
}
