//! Decode + route, data-driven: every file in `tests/cases/route/` is one case, checked by [`check`].

use herald::event::{decode_bytes, Envelope, Shape};
use herald::rules::{Recipients, Route, Rules, DEFAULT_RULES_TOML};
use serde_json::{json, Value};

use crate::support::{fixture, repo_path};

/// Run one case: decode the input as its transport would, route it with the shipped rules, compare.
fn check(name: &str, case: &Value, rules: &Rules) {
    let (exchange, routing_key, message_id, body_text) = match case.get("fixture") {
        Some(f) => {
            let f = fixture(f.as_str().unwrap());
            let props = &f["properties"];
            (
                f["exchange"].as_str().unwrap_or("").to_owned(),
                f["routing_key"].as_str().unwrap_or("").to_owned(),
                props["message_id"].as_str().map(str::to_owned),
                f["body"].to_string(),
            )
        }
        None => {
            let i = &case["input"];
            let body =
                i.get("body_text").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| i["body"].to_string());
            (
                i["exchange"].as_str().unwrap_or("").to_owned(),
                i["routing_key"].as_str().unwrap_or("").to_owned(),
                None,
                body,
            )
        }
    };
    let expect = &case["expect"];
    let env = Envelope {
        exchange: &exchange,
        routing_key: Some(&routing_key),
        message_id: message_id.as_deref(),
        caller: None,
        element: None,
    };
    let event = match decode_bytes(env, body_text.as_bytes(), 1 << 20) {
        Ok(e) => e,
        Err(e) => {
            assert_eq!(expect["error"], e.reason(), "{name}: decode failed: {e}");
            return;
        }
    };
    let shape = serde_json::to_value(event.shape).unwrap();
    let field = |k: &str, actual: Value| {
        if let Some(want) = expect.get(k) {
            assert_eq!(&actual, want, "{name}: {k}");
        }
    };
    field("event_id", json!(event.id));
    field("event_type", json!(event.event_type));
    field("source", json!(event.source));
    field("shape", shape);
    if let Some(prefix) = expect.get("event_id_prefix").and_then(Value::as_str) {
        assert!(event.id.starts_with(prefix), "{name}: id {}", event.id);
    }
    let to = |r: &Recipients| match r {
        Recipients::Everyone => json!("everyone"),
        Recipients::Users(u) => json!(u),
        Recipients::Alias { kind, aliases } => json!({"alias": kind, "ids": aliases}),
    };
    let routed = rules.route(&event);
    let live = matches!(routed, Ok(Route::Live(_)));
    match routed {
        Err(e) => assert_eq!(expect["error"], e.reason(), "{name}: route failed: {e}"),
        Ok(route) => {
            assert!(expect.get("error").is_none(), "{name}: expected an error, got {route:?}");
            match route {
                Route::Notify(d) | Route::Live(d) => {
                    field("action", json!(if live { "live" } else { "notify" }));
                    field("to", to(&d.recipients));
                    field("notification_event_type", json!(d.event_type.as_deref().unwrap_or(&event.event_type)));
                    field("type", json!(d.kind));
                    field("title", json!(d.title));
                    field("content", json!(d.content));
                    field("related_object", serde_json::to_value(&d.related_object).unwrap());
                    let aliases: Vec<Value> =
                        d.aliases.iter().map(|a| json!({"kind": a.kind, "alias": a.alias, "user": a.user})).collect();
                    field("aliases", json!(aliases));
                    field("data", serde_json::from_str(d.data.get()).unwrap());
                    field("dedupe_key", json!(d.dedupe_key));
                }
                Route::Purge(users) => {
                    field("action", json!("purge"));
                    field("to", json!(users));
                }
                Route::Ignore => field("action", json!("ignore")),
                Route::Unmatched => field("action", json!("unmatched")),
            }
        }
    }
}

pub fn cases() -> Vec<(String, Value)> {
    let mut cases: Vec<_> = std::fs::read_dir(repo_path("tests/cases/route"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

#[test]
fn every_route_case_decodes_and_routes_as_expected() {
    let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
    let cases = cases();
    assert!(cases.len() >= 15);
    for (name, case) in &cases {
        check(name, case, &rules);
    }
}

#[test]
fn every_fixture_has_a_route_case() {
    let covered: Vec<String> =
        cases().iter().filter_map(|(_, c)| c.get("fixture").and_then(Value::as_str).map(str::to_owned)).collect();
    for f in std::fs::read_dir(repo_path("tests/fixtures/events")).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(covered.contains(&name), "no case in tests/cases/route for fixture {name}");
    }
}

#[test]
fn fixture_shapes_cover_every_decoder_branch() {
    let shapes: std::collections::HashSet<String> =
        cases().iter().filter_map(|(_, c)| c["expect"]["shape"].as_str().map(str::to_owned)).collect();
    for s in [Shape::Meta, Shape::Typed, Shape::Http, Shape::Domain, Shape::Notification, Shape::Flat] {
        let s = serde_json::to_value(s).unwrap();
        assert!(shapes.contains(s.as_str().unwrap()), "no case for shape {s}");
    }
}
