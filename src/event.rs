//! Decode: every envelope shape our users publish becomes one [`Event`].
//!
//! Shapes (see `tests/fixtures/events/`): `{payload, _meta}`, `{event_type, payload, service, ...}`,
//! flat bodies whose user id lives in the routing key, fanout notifications `{user_id, title, message, type}`,
//! HTTP events `{event_type, source, user_id, data}` and domain events `{event_id, event_name, occurred_at}`.
//!
//! Invariants: decoding never looks at routing rules; the original body text is kept byte for byte
//! ([`Event::raw`]) and is what clients receive; the event id is stable across redeliveries (AMQP `message_id`,
//! else the body's `event_id`/`id`, else a digest of exchange + routing key + body).
//!
//! The store dedupes on [`Event::dedupe_key`], the event id *in its scope*, so one producer's id never drops
//! another producer's event: an AMQP `message_id` and the digest are global (the digest is content-scoped
//! already), an HTTP `Idempotency-Key` is scoped by the caller (the service key's id), and a body id by
//! exchange + routing key (the event type when there is no routing key). See [`DedupeKey`].

use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest event id or user id kept as it is (bytes). Longer event ids are replaced by their SHA-256; longer
/// user ids are refused by routing. Both backends index these columns.
pub const MAX_ID_LEN: usize = 256;

/// Longest routing key accepted (bytes), so at most 128 words: the AMQP limit (a short string), applied to keys
/// from HTTP and from bodies too, which bounds the work of matching a key against every rule's patterns.
pub const MAX_ROUTING_KEY_LEN: usize = 255;

/// Longest exchange name accepted (bytes): the AMQP limit (a short string), applied to `?exchange=` over HTTP and
/// to a re-driven letter's `x-herald-exchange` too. The name is stored (a notification's `source`, the trace):
/// unbounded, one small request would write it once per event.
pub const MAX_EXCHANGE_LEN: usize = 255;

/// One decoded event, whatever shape it arrived in.
#[derive(Debug, Clone)]
pub struct Event {
    /// The id as the producer gave it (or the digest): what callers and logs see.
    pub id: String,
    /// What the store dedupes on: `id` in its scope.
    pub dedupe_key: DedupeKey,
    /// The producer named the event (AMQP `message_id`, `Idempotency-Key`, the body's `event_id`/`id`): that id
    /// is its identity, which a rule's `dedupe_key` does not replace. `false` for a digest of the body.
    pub named: bool,
    /// Who published it over HTTP (`service:<key id>` or `user:<id>`); `None` over AMQP. Scopes a rule's key.
    pub caller: Option<String>,
    pub exchange: String,
    pub routing_key: String,
    pub event_type: String,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub shape: Shape,
    /// The body, parsed, for rules and templates.
    pub body: Map<String, Value>,
    /// The body exactly as published.
    pub raw: Box<RawValue>,
    pub received_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `{payload, _meta{timestamp, routing_key, source}}`
    Meta,
    /// `{event_type, payload, service, timestamp, version}`
    Typed,
    /// `{event_type, timestamp, source, user_id, data}`
    Http,
    /// `{event_id, event_name, occurred_at, ...}`
    Domain,
    /// `{user_id, title, message, type, timestamp}` on a fanout exchange
    Notification,
    /// Anything else with a routing key to route on.
    Flat,
}

/// Where an event came from, before its body is read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Envelope<'a> {
    pub exchange: &'a str,
    /// AMQP routing key or `?routing_key=`; empty/None means "take it from the body".
    pub routing_key: Option<&'a str>,
    /// AMQP `message_id` or the HTTP `Idempotency-Key`: wins over ids in the body.
    pub message_id: Option<&'a str>,
    /// Who chose `message_id`, which scopes it: `None` for an AMQP `message_id` (global), the caller for an HTTP
    /// `Idempotency-Key` (`service:<key id>` or `user:<id>`).
    pub caller: Option<&'a str>,
    /// Element `i` of an array posted with `message_id` as its `Idempotency-Key`: the event's id is
    /// `<key>:<i>`, deduplicated in a namespace of its own, so a single event whose key is `<key>:<i>` is
    /// another event.
    pub element: Option<usize>,
}

/// The store's idempotency key: the first 16 bytes of a SHA-256 over a namespace tag and the length-prefixed
/// parts of the scoped id. Fixed-size whatever the id's length, and two scopes can never produce the same
/// input (the tag and the length prefixes keep `("a:b", "c")` and `("a", "b:c")` apart). 128 bits: an
/// accidental collision is out of reach; a deliberate one would cost 2^64 hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupeKey(pub [u8; 16]);

impl DedupeKey {
    /// Ids that are global: an AMQP `message_id`, the content digest. Before ids were scoped, every id was
    /// deduped in this one namespace.
    pub fn global(id: &str) -> DedupeKey {
        DedupeKey::of("global", &[id])
    }

    /// An HTTP `Idempotency-Key`, scoped by the caller that sent it.
    pub fn idempotency_key(caller: &str, key: &str) -> DedupeKey {
        DedupeKey::of("idempotency-key", &[caller, key])
    }

    /// Element `index` of an array posted with the `Idempotency-Key` `key`, scoped by the caller that sent it.
    pub fn idempotency_key_element(caller: &str, key: &str, index: usize) -> DedupeKey {
        DedupeKey::of("idempotency-key-element", &[caller, key, &index.to_string()])
    }

    /// A body `event_id`/`id`, scoped by where the event was published.
    pub fn body_id(exchange: &str, scope: &str, id: &str) -> DedupeKey {
        DedupeKey::of("body-id", &[exchange, scope, id])
    }

    /// A rule's `dedupe_key` (already namespaced by the rule's name): the event's meaning, not its bytes, scoped
    /// by where it was published and who published it, as a body id is: an event posted by one caller or on
    /// another exchange never uses up the key of another producer's event.
    pub fn rule(exchange: &str, caller: Option<&str>, key: &str) -> DedupeKey {
        match caller {
            Some(caller) => DedupeKey::of("rule-by", &[exchange, caller, key]),
            None => DedupeKey::of("rule", &[exchange, key]),
        }
    }

    fn of(tag: &str, parts: &[&str]) -> DedupeKey {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let mut key = [0; 16];
        key.copy_from_slice(&h.finalize()[..16]);
        DedupeKey(key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is {size} bytes, over the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("body is not valid UTF-8 (at byte {0})")]
    InvalidUtf8(usize),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error(
        "unknown event shape: no _meta, no event_type or event_name (a non-empty string), no title and message, and \
         no routing key to route on"
    )]
    UnknownShape,
    #[error("routing key is {len} bytes, over the {max}-byte limit")]
    RoutingKeyTooLong { len: usize, max: usize },
    #[error("exchange name is {len} bytes, over the {max}-byte limit")]
    ExchangeTooLong { len: usize, max: usize },
}

impl DecodeError {
    /// Short stable label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::InvalidUtf8(_) => "invalid_utf8",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::UnknownShape => "unknown_shape",
            DecodeError::RoutingKeyTooLong { .. } => "routing_key_too_long",
            DecodeError::ExchangeTooLong { .. } => "exchange_too_long",
        }
    }
}

/// Decode raw bytes (AMQP delivery).
pub fn decode_bytes(env: Envelope<'_>, bytes: &[u8], limit: usize) -> Result<Event, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::Oversized { size: bytes.len(), limit });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8(e.valid_up_to()))?;
    let raw: Box<RawValue> = serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    decode(env, raw)
}

/// Decode one already-delimited JSON value (HTTP ingest, which may receive an array of them).
pub fn decode(env: Envelope<'_>, raw: Box<RawValue>) -> Result<Event, DecodeError> {
    if env.exchange.len() > MAX_EXCHANGE_LEN {
        return Err(DecodeError::ExchangeTooLong { len: env.exchange.len(), max: MAX_EXCHANGE_LEN });
    }
    let body = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(DecodeError::NotAnObject),
        Err(e) => return Err(DecodeError::InvalidJson(e.to_string())),
    };
    let meta = body.get("_meta").and_then(Value::as_object);
    let has = |k: &str| body.contains_key(k);
    let named = |k: &str| body.get(k).and_then(Value::as_str).is_some_and(|v| !v.trim().is_empty());
    let explicit_key = env.routing_key.filter(|k| !k.is_empty());

    let shape = if meta.is_some() {
        Shape::Meta
    } else if has("event_id") && has("event_name") {
        Shape::Domain
    } else if has("event_type") && has("payload") {
        Shape::Typed
    } else if has("event_type") && has("data") {
        Shape::Http
    } else if has("title") && has("message") {
        Shape::Notification
    } else if explicit_key.is_some() || named("event_type") || named("event_name") {
        // Routed on its routing key, else on its own `event_type` / `event_name` (below).
        Shape::Flat
    } else {
        return Err(DecodeError::UnknownShape);
    };

    let str_field = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let meta_str = |k: &str| meta.and_then(|m| str_field(m, k));

    let routing_key = explicit_key
        .map(str::to_owned)
        .or_else(|| meta_str("routing_key"))
        .or_else(|| str_field(&body, "event_type"))
        .or_else(|| str_field(&body, "event_name"))
        .unwrap_or_default();
    if routing_key.len() > MAX_ROUTING_KEY_LEN {
        return Err(DecodeError::RoutingKeyTooLong { len: routing_key.len(), max: MAX_ROUTING_KEY_LEN });
    }
    let event_type = str_field(&body, "event_type")
        .or_else(|| str_field(&body, "event_name"))
        .or_else(|| (!routing_key.is_empty()).then(|| routing_key.clone()))
        .unwrap_or_else(|| env.exchange.to_owned());
    let source = meta_str("source")
        .or_else(|| str_field(&body, "service"))
        .or_else(|| str_field(&body, "source"))
        .or_else(|| (!env.exchange.is_empty()).then(|| env.exchange.to_owned()));
    let occurred_at = meta_str("timestamp")
        .or_else(|| str_field(&body, "occurred_at"))
        .or_else(|| str_field(&body, "timestamp"))
        .and_then(|t| parse_timestamp(&t));

    // Still stable across redeliveries, and short enough to index.
    let shorten = |id: String| {
        if id.len() > MAX_ID_LEN {
            format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes())))
        } else {
            id
        }
    };
    let (id, dedupe_key, named) = if let Some(m) = env.message_id.filter(|m| !m.is_empty()) {
        let (id, key) = match (env.caller, env.element) {
            (Some(caller), Some(i)) => {
                (shorten(format!("{m}:{i}")), DedupeKey::idempotency_key_element(caller, &shorten(m.to_owned()), i))
            }
            (Some(caller), None) => {
                let id = shorten(m.to_owned());
                let key = DedupeKey::idempotency_key(caller, &id);
                (id, key)
            }
            (None, _) => {
                let id = shorten(m.to_owned());
                let key = DedupeKey::global(&id);
                (id, key)
            }
        };
        (id, key, true)
    } else if let Some(id) = body.get("event_id").and_then(id_string).or_else(|| body.get("id").and_then(id_string)) {
        let id = shorten(id);
        let scope = if routing_key.is_empty() { &event_type } else { &routing_key };
        let key = DedupeKey::body_id(env.exchange, scope, &id);
        (id, key, true)
    } else {
        let id = digest(env.exchange, &routing_key, raw.get());
        let key = DedupeKey::global(&id);
        (id, key, false)
    };

    Ok(Event {
        id,
        dedupe_key,
        named,
        caller: env.caller.map(str::to_owned),
        exchange: env.exchange.to_owned(),
        routing_key,
        event_type,
        source,
        occurred_at,
        shape,
        body,
        raw,
        received_at: Instant::now(),
    })
}

/// Whether a token can name this user (`auth`'s rule for the user claim): no control characters. Ids from events
/// are trimmed already ([`id_string`]), as a claim must be.
pub fn user_id_is_readable(id: &str) -> bool {
    !id.chars().any(char::is_control)
}

/// Why a user id named outside an event (an alias's user, a REST path) can hold no inbox: the bounds ingest
/// applies to recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUserId {
    #[error("the user id is empty")]
    Empty,
    #[error("the user id is {0} bytes, over the {MAX_ID_LEN}-byte limit")]
    TooLong(usize),
    #[error("the user id holds a control character, which no token can carry")]
    Control,
    /// Ids are trimmed wherever an event names them, and a token's user claim may not be padded: no event and no
    /// token ever names such an id.
    #[error("the user id has leading or trailing whitespace, which no event or token names")]
    Padded,
}

impl BadUserId {
    /// The error code ingest gives the same problem in an event.
    pub fn code(self) -> &'static str {
        match self {
            BadUserId::Empty => "missing_user_id",
            BadUserId::TooLong(_) => "user_id_too_long",
            BadUserId::Control | BadUserId::Padded => "invalid_user_id",
        }
    }
}

/// A user id as ingest would take it for a recipient: not empty, at most [`MAX_ID_LEN`] bytes, readable, not
/// padded with whitespace (ingest trims what it reads).
pub fn check_user_id(id: &str) -> Result<(), BadUserId> {
    if id.is_empty() {
        Err(BadUserId::Empty)
    } else if id.starts_with(char::is_whitespace) || id.ends_with(char::is_whitespace) {
        Err(BadUserId::Padded)
    } else if id.len() > MAX_ID_LEN {
        Err(BadUserId::TooLong(id.len()))
    } else if !user_id_is_readable(id) {
        Err(BadUserId::Control)
    } else {
        Ok(())
    }
}

/// A user id (or event id) from JSON: non-empty strings as they are, integers in decimal.
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn digest(exchange: &str, routing_key: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(exchange.as_bytes());
    h.update([0]);
    h.update(routing_key.as_bytes());
    h.update([0]);
    h.update(body.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// RFC 3339, or the naive ISO timestamps Python's `datetime.isoformat()` writes (taken as UTC).
fn parse_timestamp(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(exchange: &'a str, key: &'a str) -> Envelope<'a> {
        Envelope { exchange, routing_key: Some(key), message_id: None, caller: None, element: None }
    }

    #[test]
    fn malformed_inputs_have_distinct_reasons() {
        let e = env("x", "a.b");
        assert_eq!(decode_bytes(e, &[0xff, 0xfe], 100).unwrap_err().reason(), "invalid_utf8");
        assert_eq!(decode_bytes(e, b"{not json", 100).unwrap_err().reason(), "invalid_json");
        assert_eq!(decode_bytes(e, b"[1,2]", 100).unwrap_err().reason(), "not_an_object");
        assert_eq!(decode_bytes(e, b"\"s\"", 100).unwrap_err().reason(), "not_an_object");
        assert_eq!(decode_bytes(e, &[b' '; 101], 100).unwrap_err().reason(), "oversized");
        let no_key = Envelope { exchange: "", routing_key: None, message_id: None, caller: None, element: None };
        assert_eq!(decode_bytes(no_key, br#"{"foo":1}"#, 100).unwrap_err().reason(), "unknown_shape");
        // A flat body routes on its own event_type or event_name when nothing else names a routing key.
        for body in [&br#"{"event_type":"user.registered","user_id":501}"#[..], br#"{"event_name":"user.registered"}"#]
        {
            let e = decode_bytes(no_key, body, 100).unwrap();
            assert_eq!((e.shape, e.routing_key.as_str()), (Shape::Flat, "user.registered"));
        }
        let blank = decode_bytes(no_key, br#"{"event_type":" ","user_id":501}"#, 100).unwrap_err();
        assert_eq!(blank.reason(), "unknown_shape");
        let long_key = "a.".repeat(MAX_ROUTING_KEY_LEN / 2) + "zz";
        assert_eq!(decode_bytes(env("x", &long_key), b"{}", 100).unwrap_err().reason(), "routing_key_too_long");
        let long_exchange = "billing.".to_owned() + &"x".repeat(MAX_EXCHANGE_LEN);
        let body = br#"{"event_type":"invoice.paid","user_id":"u"}"#;
        assert_eq!(
            decode_bytes(env(&long_exchange, "invoice.paid"), body, 100).unwrap_err().reason(),
            "exchange_too_long"
        );
        let at_limit = "x".repeat(MAX_EXCHANGE_LEN);
        assert!(decode_bytes(env(&at_limit, "invoice.paid"), body, 100).is_ok(), "255 bytes is a name");
    }

    #[test]
    fn id_prefers_message_id_then_body_ids_then_a_stable_digest() {
        let body = br#"{"event_type":"a.b","data":{},"event_id":"E","id":7}"#;
        let mut e = env("x", "a.b");
        e.message_id = Some("M");
        assert_eq!(decode_bytes(e, body, 1000).unwrap().id, "M");
        assert_eq!(decode_bytes(env("x", "a.b"), body, 1000).unwrap().id, "E");
        let numeric = br#"{"event_type":"a.b","data":{},"id":7}"#;
        assert_eq!(decode_bytes(env("x", "a.b"), numeric, 1000).unwrap().id, "7");
        let anon = br#"{"k":1}"#;
        let a = decode_bytes(env("x", "a.b"), anon, 1000).unwrap().id;
        let b = decode_bytes(env("x", "a.b"), anon, 1000).unwrap().id;
        let c = decode_bytes(env("x", "a.c"), anon, 1000).unwrap().id;
        assert!(a.starts_with("sha256:"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn body_ids_are_scoped_by_exchange_and_routing_key_and_message_ids_are_global() {
        let body = br#"{"id":77,"k":1}"#;
        let key = |e: Envelope<'_>| decode_bytes(e, body, 1000).unwrap().dedupe_key;
        let a = key(env("x", "order.paid"));
        assert_eq!(a, key(env("x", "order.paid")), "a redelivery keeps its key");
        assert_ne!(a, key(env("x", "user.created")), "another routing key is another event");
        assert_ne!(a, key(env("y", "order.paid")), "another exchange is another event");
        // With no routing key, the event type scopes the id.
        let typed = |t: &str| {
            let body = format!(r#"{{"event_type":"{t}","data":{{}},"id":77}}"#);
            let e = Envelope { exchange: "", routing_key: None, message_id: None, caller: None, element: None };
            decode_bytes(e, body.as_bytes(), 1000).unwrap().dedupe_key
        };
        assert_eq!(typed("a.b"), typed("a.b"));
        assert_ne!(typed("a.b"), typed("a.c"));

        let amqp = |x: &'static str| Envelope {
            exchange: x,
            routing_key: Some("k"),
            message_id: Some("M"),
            caller: None,
            element: None,
        };
        assert_eq!(key(amqp("x")), key(amqp("y")), "an AMQP message_id is global");
        assert_eq!(key(amqp("x")), DedupeKey::global("M"));
        let http = |caller: &'static str| Envelope { caller: Some(caller), ..amqp("x") };
        assert_eq!(key(http("service:a")), key(http("service:a")));
        assert_ne!(key(http("service:a")), key(http("service:b")), "an Idempotency-Key is scoped by its caller");
        assert_ne!(key(http("service:a")), key(amqp("x")));
        assert_ne!(
            DedupeKey::body_id("a:b", "c", "d"),
            DedupeKey::body_id("a", "b:c", "d"),
            "parts cannot run together"
        );
    }

    #[test]
    fn a_rules_key_is_scoped_by_exchange_and_caller_and_only_unnamed_events_take_one() {
        let k = DedupeKey::rule("sgad.matches", None, "r:m-1");
        assert_eq!(k, DedupeKey::rule("sgad.matches", None, "r:m-1"));
        assert_ne!(k, DedupeKey::rule("billing.x", None, "r:m-1"), "another exchange is another producer");
        assert_ne!(k, DedupeKey::rule("sgad.matches", Some("service:b"), "r:m-1"), "an HTTP caller scopes it");
        assert_ne!(
            DedupeKey::rule("x", Some("service:a"), "k"),
            DedupeKey::rule("x", Some("service:b"), "k"),
            "one caller's events never use up another's keys"
        );
        let named = |e: Envelope<'_>, body: &[u8]| decode_bytes(e, body, 1000).unwrap().named;
        let amqp = |id: Option<&'static str>| Envelope {
            exchange: "x",
            routing_key: Some("k"),
            message_id: id,
            caller: None,
            element: None,
        };
        assert!(named(amqp(Some("M")), b"{}"), "an AMQP message_id names the event");
        assert!(named(amqp(None), br#"{"event_id":"e"}"#), "so does a body id");
        assert!(!named(amqp(None), br#"{"a":1}"#), "a digest does not");
    }

    #[test]
    fn overlong_event_ids_are_hashed_stably() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let mut e = env("x", "a.b");
        e.message_id = Some(&long);
        let a = decode_bytes(e, br#"{"k":1}"#, 1000).unwrap().id;
        let b = decode_bytes(e, br#"{"k":2}"#, 1000).unwrap().id;
        assert!(a.starts_with("sha256:") && a.len() <= MAX_ID_LEN);
        assert_eq!(a, b, "the same message id gives the same event id");
    }

    #[test]
    fn naive_python_timestamps_are_utc() {
        let t = parse_timestamp("2026-01-10T08:15:00.000000").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-10T08:15:00+00:00");
        assert!(parse_timestamp("2025-12-13T19:27:02.415000Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn user_ids_may_be_strings_or_integers() {
        assert_eq!(id_string(&serde_json::json!(123)), Some("123".into()));
        assert_eq!(id_string(&serde_json::json!(" abc ")), Some("abc".into()));
        assert_eq!(id_string(&serde_json::json!("")), None);
        assert_eq!(id_string(&serde_json::json!(1.5)), None);
        assert_eq!(id_string(&serde_json::json!(null)), None);
    }
}
