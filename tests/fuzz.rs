//! Fuzzing on the stable toolchain: property tests that feed decoding, routing and client-message parsing
//! arbitrary input, and check the topic matcher against a plain reference matcher.
//!
//! Every target runs `PROPTEST_CASES` inputs: proptest's default (256) in the test command, millions in
//! `scripts/fuzz.sh`, which runs this binary (a release build by default) and prints inputs/second per target. A failing
//! input is shrunk and named in the failure; keep it as a named regression test at the end of this file.
//! Properties are about panics, hangs and invariants, never about timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use herald::event::{decode, decode_bytes, Envelope, MAX_ID_LEN, MAX_ROUTING_KEY_LEN};
use herald::protocol::{ClientMessage, Position};
use herald::rules::{Pattern, Recipients, Route, RouteError, Rules, DEFAULT_RULES_TOML};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

/// Run `property` on `PROPTEST_CASES` inputs drawn from `strategy`. A failure or a panic is shrunk to a minimal
/// input and fails the test with it; success prints the count and the rate (shown by `--no-capture`).
fn fuzz<S>(target: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    // Regressions are kept as named tests below, not as seed files that go stale when a strategy changes.
    let config = Config { failure_persistence: None, ..Config::default() };
    let inputs = AtomicU64::new(0);
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |value| {
        inputs.fetch_add(1, Ordering::Relaxed);
        property(value)
    });
    if let Err(e) = result {
        panic!("fuzz target `{target}` failed: {e}");
    }
    let (n, secs) = (inputs.into_inner(), start.elapsed().as_secs_f64());
    println!("fuzz {target}: {n} inputs in {secs:.1} s ({:.0} inputs/s), no panic", n as f64 / secs.max(1e-9));
}

// --- Generators ---------------------------------------------------------------------------------------------

/// Names the decoder and the shipped rules look for, so generated bodies reach past the first `if`.
const NAMES: &[&str] = &[
    "_meta",
    "event_id",
    "event_name",
    "event_type",
    "payload",
    "data",
    "title",
    "message",
    "id",
    "service",
    "source",
    "timestamp",
    "occurred_at",
    "routing_key",
    "user_id",
    "student_user_id",
    "first_name",
    "last_name",
    "specialization",
    "service_name",
    "start_date",
    "comment",
    "evaluation_id",
    "stage_id",
    "student_id",
    "encadrant_id",
    "username",
    "ip_address",
    "login_timestamp",
    "week_number",
    "total_slots",
    "slots",
    "referee_id",
    "type",
];

/// Routing keys and exchanges the shipped rules match, mixed with arbitrary ones.
const KEYS: &[&str] = &[
    "student.created",
    "encadrant.created",
    "stage.accepted",
    "evaluation.graded",
    "auth.user.deleted",
    "user.registered",
    "UserRegistered",
    "user.login",
    "user.other",
    "availability.closed.r1",
    "availability.updated.r2",
    "",
];
const EXCHANGES: &[&str] = &["", "events.topic", "sgad.availability", "sgad.notifications"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9 ._#*~/-]{0,12}", 1 => any::<String>()]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(NAMES).prop_map(str::to_owned), 1 => text()]
}

fn routing_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        3 => "[a-z*#]{0,4}(\\.[a-z*#]{0,4}){0,6}",
        // Either side of the cap.
        1 => "(b\\.){120,135}z",
        1 => any::<String>(),
    ]
}

fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        any::<String>(),
    ]
}

/// Any JSON value; floats include NaN and infinities, which JSON cannot hold and become `null`.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
        timestamp().prop_map(Value::String),
        routing_key().prop_map(Value::String),
        "x{250,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// The keys each envelope shape is recognised by (the last: a flat body, routed on the transport's key).
const META_KEYS: &[&str] = &["routing_key", "source", "timestamp"];
const SHAPES: &[&[&str]] = &[
    &["_meta"],
    &["event_id", "event_name"],
    &["event_type", "payload"],
    &["event_type", "data"],
    &["title", "message"],
    &[],
];

/// A body of one of the shapes, its recognising fields holding arbitrary values, plus arbitrary other fields.
fn body() -> impl Strategy<Value = Map<String, Value>> {
    let meta = prop::collection::vec(
        (
            prop::sample::select(META_KEYS),
            prop_oneof![routing_key().prop_map(Value::String), timestamp().prop_map(Value::String), json_value()],
        ),
        0..4,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    (
        prop::sample::select(SHAPES),
        prop::collection::vec(prop_oneof![3 => json_value(), 1 => meta], 2),
        prop::collection::vec((name(), json_value()), 0..6),
    )
        .prop_map(|(shape, shape_values, extra)| {
            let mut body: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in shape.iter().zip(shape_values) {
                body.insert((*k).to_owned(), v);
            }
            body
        })
}

#[derive(Debug, Clone)]
struct Env {
    exchange: String,
    routing_key: Option<String>,
    message_id: Option<String>,
}

impl Env {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            exchange: &self.exchange,
            routing_key: self.routing_key.as_deref(),
            message_id: self.message_id.as_deref(),
            caller: None,
            element: None,
        }
    }
}

/// What a transport hands the decoder besides the body: AMQP exchange, routing key and `message_id` (or the
/// HTTP `?exchange=`, `?routing_key=` and `Idempotency-Key`).
fn env() -> impl Strategy<Value = Env> {
    (
        prop_oneof![3 => prop::sample::select(EXCHANGES).prop_map(str::to_owned), 1 => text()],
        prop::option::of(routing_key()),
        prop::option::of(prop_oneof![text(), "m{250,300}"]),
    )
        .prop_map(|(exchange, routing_key, message_id)| Env { exchange, routing_key, message_id })
}

/// Valid JSON bodies with a few bytes overwritten, inserted or removed: almost-JSON reaches deeper than noise.
fn mutated_json() -> impl Strategy<Value = Vec<u8>> {
    // Mostly JSON punctuation: random bytes are almost never UTF-8, and invalid UTF-8 stops at the first check.
    let byte = prop_oneof![1 => any::<u8>(), 3 => prop::sample::select(&b"{}[]\",:0123456789.-+eE \\tnul"[..])];
    (body(), prop::collection::vec((any::<prop::sample::Index>(), byte, 0..3u8), 0..4)).prop_map(|(body, edits)| {
        let mut bytes = serde_json::to_vec(&body).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

// --- Properties ---------------------------------------------------------------------------------------------

const LIMIT: usize = 1 << 20;

/// What every decode must give: an event with an indexable id, a bounded routing key and the body text kept
/// byte for byte, or a typed error with a reason.
fn check_decoded(
    input: &[u8],
    decoded: &Result<herald::event::Event, herald::event::DecodeError>,
) -> Result<(), TestCaseError> {
    match decoded {
        Ok(event) => {
            prop_assert!(!event.id.is_empty(), "empty event id");
            prop_assert!(event.id.len() <= MAX_ID_LEN, "event id of {} bytes", event.id.len());
            prop_assert!(event.routing_key.len() <= MAX_ROUTING_KEY_LEN);
            let text = std::str::from_utf8(input).unwrap();
            prop_assert_eq!(event.raw.get(), text.trim_matches([' ', '\t', '\n', '\r']));
        }
        Err(e) => prop_assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn decoding_arbitrary_bytes_gives_an_event_or_a_typed_error() {
    let input = prop_oneof![any::<Vec<u8>>(), mutated_json()];
    fuzz("decode: arbitrary bytes", (env(), input), |(env, bytes)| {
        check_decoded(&bytes, &decode_bytes(env.envelope(), &bytes, LIMIT))
    });
}

#[test]
fn every_envelope_shape_decodes_to_an_event_with_an_id_or_a_typed_error() {
    fuzz("decode: every envelope shape", (env(), body()), |(env, body)| {
        let text = serde_json::to_string(&body).unwrap();
        let from_bytes = decode_bytes(env.envelope(), text.as_bytes(), LIMIT);
        check_decoded(text.as_bytes(), &from_bytes)?;
        // HTTP ingest decodes already-split JSON values: the same event either way.
        let from_raw = decode(env.envelope(), serde_json::from_str(&text).unwrap());
        match (&from_bytes, &from_raw) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.id, &b.id);
                prop_assert_eq!(&a.routing_key, &b.routing_key);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            _ => prop_assert!(false, "decode and decode_bytes disagree: {from_bytes:?} / {from_raw:?}"),
        }
        Ok(())
    });
}

/// How long a rendered field may be: a template copies body values at most a few times, and a number may
/// render longer than it was written (`5e-324` prints as 326 characters), so linear in the input.
fn render_bound(event: &herald::event::Event) -> usize {
    4096 + 64 * (event.raw.get().len() + event.routing_key.len() + event.exchange.len() + event.id.len())
}

fn check_route(event: &herald::event::Event, route: Result<Route, RouteError>) -> Result<(), TestCaseError> {
    match route {
        Ok(Route::Notify(draft) | Route::Live(draft)) => {
            let bound = render_bound(event);
            for field in [&draft.kind, &draft.title, &draft.content] {
                prop_assert!(field.len() <= bound, "a {}-byte field from a {bound}-byte bound", field.len());
            }
            if let Recipients::Users(users) = &draft.recipients {
                prop_assert!(!users.is_empty());
                for u in users {
                    prop_assert!(!u.is_empty() && u.len() <= MAX_ID_LEN, "user id {u:?}");
                }
            }
            serde_json::from_str::<Value>(draft.data.get()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        Ok(Route::Purge(users)) => prop_assert!(!users.is_empty()),
        Ok(Route::Ignore | Route::Unmatched) => {}
        Err(e) => prop_assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn shipped_rules_route_arbitrary_events_without_panic_and_with_bounded_output() {
    let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
    // Mostly keys and exchanges a shipped rule matches, so most events reach recipients and templates.
    let env = (
        prop_oneof![3 => prop::sample::select(EXCHANGES).prop_map(str::to_owned), 1 => text()],
        prop_oneof![3 => prop::sample::select(KEYS).prop_map(|k| Some(k.to_owned())), 1 => prop::option::of(routing_key())],
        prop::option::of(text()),
    )
        .prop_map(|(exchange, routing_key, message_id)| Env { exchange, routing_key, message_id });
    fuzz("rules: shipped rules on arbitrary events", (env, body()), |(env, body)| {
        let text = serde_json::to_string(&body).unwrap();
        match decode_bytes(env.envelope(), text.as_bytes(), LIMIT) {
            Ok(event) => check_route(&event, rules.route(&event)),
            Err(_) => Ok(()),
        }
    });
}

/// One rule whose recipients and `data` are arbitrary JSON pointers and whose title interpolates arbitrary
/// paths into the body.
fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop_oneof![name(), "[0-9]{1,3}", "~[01]?[a-z]{0,2}"], 0..5)
            .prop_map(|parts| parts.iter().map(|p| format!("/{p}")).collect::<String>()),
        1 => any::<String>().prop_map(|s| format!("/{s}")),
        1 => Just(String::new()),
    ]
}

fn template_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![prop::sample::select(NAMES).prop_map(|n| format!(".{n}")), "\\[[0-9]\\]"], 0..4)
        .prop_map(|parts| format!("body{}", parts.concat()))
}

#[test]
fn rules_with_arbitrary_pointers_and_paths_route_as_serde_json_points() {
    let case = (pointer(), pointer(), template_path(), template_path(), body());
    fuzz("rules: arbitrary JSON pointers and template paths", case, |(to, data, path_a, path_b, body)| {
        let mut rule = json!({
            "name": "fuzz",
            "to": [to],
            "when_missing": "everyone",
            "title": format!("{{{{ {path_a} }}}} and {{{{ {path_b} | default('') }}}}"),
            "content": format!("{{% if {path_a} is defined and {path_a} is iterable %}}{{{{ {path_a} | length }}}}{{% endif %}}"),
        });
        if !data.is_empty() {
            rule["data"] = json!(data);
        }
        let toml = toml::to_string(&json!({ "rule": [rule] })).unwrap();
        let rules = match Rules::parse(&toml) {
            Ok(rules) => rules,
            // A pointer that does not start with '/' (only `to = [""]`) is refused at load, as it should be.
            Err(e) => {
                prop_assert!(to.is_empty(), "refused: {e}");
                return Ok(());
            }
        };
        let text = serde_json::to_string(&body).unwrap();
        let env = Envelope { exchange: "x", routing_key: Some("a.b"), message_id: None, caller: None, element: None };
        let event = decode_bytes(env, text.as_bytes(), LIMIT).unwrap();
        let route = rules.route(&event);
        if let Ok(Route::Notify(draft)) = &route {
            let body = Value::Object(body);
            let want = if data.is_empty() { None } else { body.pointer(&data) };
            let got: Value = serde_json::from_str(draft.data.get()).unwrap();
            prop_assert_eq!(&got, want.unwrap_or(&Value::Null));
        }
        check_route(&event, route)
    });
}

/// The AMQP topic semantics, written the obvious way: exponential in `#` words, fine for short inputs.
fn reference_matches(pattern: &str, key: &str) -> bool {
    fn go(pat: &[&str], words: &[&str]) -> bool {
        match pat.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => (0..=words.len()).any(|i| go(rest, &words[i..])),
            Some((&"*", rest)) => !words.is_empty() && go(rest, &words[1..]),
            Some((lit, rest)) => words.first() == Some(lit) && go(rest, &words[1..]),
        }
    }
    go(&pattern.split('.').collect::<Vec<_>>(), &key.split('.').collect::<Vec<_>>())
}

#[test]
fn topic_matching_agrees_with_the_reference_matcher() {
    const WORDS: &[&str] = &["a", "b", "", "ab"];
    let word = || prop::sample::select(WORDS);
    let pattern = prop::collection::vec(prop_oneof![word(), Just("*"), Just("#")], 1..8).prop_map(|w| w.join("."));
    let key = prop::collection::vec(word(), 1..14).prop_map(|w| w.join("."));
    fuzz("rules: topic matching vs reference", (pattern, key), |(pattern, key)| {
        let compiled = Pattern::parse(&pattern).unwrap();
        prop_assert_eq!(compiled.matches(&key), reference_matches(&pattern, &key), "`{}` on `{}`", pattern, key);
        Ok(())
    });
}

#[test]
fn arbitrary_patterns_compile_or_are_refused_and_match_arbitrary_keys() {
    let pattern = prop_oneof!["[ab*#.]{0,16}", any::<String>()];
    let key = prop_oneof!["[ab.]{0,24}", any::<String>(), "(b\\.){120,127}z"];
    fuzz("rules: arbitrary patterns and keys", (pattern, key), |(pattern, key)| {
        let partial_wildcard = pattern.split('.').any(|w| w.contains(['*', '#']) && w != "*" && w != "#");
        match Pattern::parse(&pattern) {
            Ok(compiled) => {
                prop_assert!(!partial_wildcard);
                let got = compiled.matches(&key);
                // The reference is exponential in `#` words: compare only where it stays cheap.
                if pattern.matches('#').count() <= 3 && key.split('.').count() <= 32 {
                    prop_assert_eq!(got, reference_matches(&pattern, &key));
                }
            }
            Err(_) => prop_assert!(partial_wildcard),
        }
        Ok(())
    });
}

fn client_text() -> impl Strategy<Value = String> {
    const TYPES: &[&str] = &["ping", "resume", "auth", "PING", "Resume", ""];
    const FIELDS: &[&str] = &["since", "token", "type", "extra"];
    let kind = prop_oneof![prop::sample::select(TYPES).prop_map(Value::from), json_value()];
    let field = prop::sample::select(FIELDS);
    let object = (kind, prop::collection::vec((field, json_value()), 0..3)).prop_map(|(kind, fields)| {
        let mut m: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        m.insert("type".into(), kind);
        Value::Object(m).to_string()
    });
    prop_oneof![any::<String>(), "[ \t\n]*[pP][iI][nN][gG][ \t\n]*", object]
}

#[test]
fn client_message_parsing_never_panics() {
    fuzz("protocol: arbitrary client text", client_text(), |text| {
        if let Err(e) = ClientMessage::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    });
}

#[test]
fn valid_client_messages_round_trip() {
    // `Option<i64>` / `Option<String>` stand for resume and auth; `None, None` for ping. A cursor is an id, 0 or
    // more (a negative one is refused: `negative_resume_cursors_are_refused`).
    let message = prop_oneof![
        Just((None, None)),
        (0..=i64::MAX).prop_map(|since| (Some(since), None)),
        any::<String>().prop_map(|token| (None, Some(token))),
    ];
    let padding = "[ \t\n\r]{0,3}";
    fuzz("protocol: valid client messages", (message, padding, padding), |((since, token), before, after)| {
        let (json, want) = match (since, token) {
            (Some(since), _) => {
                (json!({"type": "resume", "since": since}), ClientMessage::Resume { since: Position::both(since) })
            }
            (_, Some(token)) => (json!({"type": "auth", "token": token}), ClientMessage::Auth { token }),
            _ => (json!({"type": "ping"}), ClientMessage::Ping),
        };
        let text = format!("{before}{json}{after}");
        prop_assert_eq!(ClientMessage::parse(&text), Ok(want));
        Ok(())
    });
}

#[test]
fn negative_resume_cursors_are_refused() {
    fuzz("protocol: negative resume cursors", (i64::MIN..0, any::<bool>()), |(since, broadcast_only)| {
        let json = match broadcast_only {
            true => json!({"type": "resume", "since": 0, "since_broadcast": since}),
            false => json!({"type": "resume", "since": since}),
        };
        let refused = ClientMessage::parse(&json.to_string());
        prop_assert!(matches!(&refused, Err(e) if e.to_string().contains("0 or more")), "{:?}", refused);
        Ok(())
    });
}

// --- Regressions found by fuzzing -----------------------------------------------------------------------------

/// A float copied into `data` came out one unit off in the last digit: serde_json's default float parser is
/// not exact; the `float_roundtrip` feature is.
#[test]
fn a_float_copied_into_data_keeps_every_digit() {
    let rules = Rules::parse("[[rule]]\nname = \"r\"\nto = [\"/u\"]\ntitle = \"t\"\ndata = \"/\"\n").unwrap();
    let body = br#"{"u": "user-1", "": {"_meta": -1.1405202265087811e243}}"#;
    let env = Envelope { exchange: "x", routing_key: Some("a.b"), message_id: None, caller: None, element: None };
    let event = decode_bytes(env, body, LIMIT).unwrap();
    let Ok(Route::Notify(draft)) = rules.route(&event) else { panic!("routed") };
    assert_eq!(draft.data.get(), r#"{"_meta":-1.1405202265087811e+243}"#);
}
