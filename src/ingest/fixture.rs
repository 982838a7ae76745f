//! Event fixture files (`tests/fixtures/events/*.json`): an event exactly as a service publishes it, with where it
//! goes. `herald publish` sends them to the broker; `herald rules test` dry-runs them through the rules.
//!
//! A fixture: `{transport?, exchange, routing_key, properties: {message_id, content_type, delivery_mode,
//! headers, ...}, body}` (or `body_text` for bytes that are not JSON). `transport: "http"` marks an event that
//! its service POSTs rather than publishes.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub transport: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    #[serde(default)]
    pub properties: Properties,
    /// The body's JSON text as the file holds it: sent as it is written (key order, numbers), never re-encoded.
    pub body: Option<Box<serde_json::value::RawValue>>,
    pub body_text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Properties {
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub app_id: Option<String>,
    pub priority: Option<u8>,
    #[serde(default)]
    pub headers: serde_json::Map<String, Value>,
}

impl Fixture {
    pub fn is_http(&self) -> bool {
        self.transport.as_deref().is_some_and(|t| t == "http")
    }
}

/// The fixture and the body bytes as its service sends them.
pub fn read(file: &Path) -> anyhow::Result<(Fixture, Vec<u8>)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let fixture: Fixture =
        serde_json::from_str(&text).with_context(|| format!("{}: not a fixture file", file.display()))?;
    let payload = match (&fixture.body_text, &fixture.body) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(body)) => body.get().as_bytes().to_vec(),
        (None, None) => anyhow::bail!(
            "{}: no `body`: a fixture holds the event as `body`, beside the `exchange` and `routing_key` it is \
             published with (see tests/fixtures/events/); for a bare event body, wrap it: \
             {{\"transport\": \"http\", \"exchange\": \"<its exchange>\", \"body\": <the event>}}",
            file.display()
        ),
    };
    Ok((fixture, payload))
}

#[cfg(test)]
mod tests {
    /// A publisher's body keeps its key order (a digest of the body is the idempotency key of an event that
    /// names none): `herald publish` sends the fixture's text, not a re-encoding that sorts the keys.
    #[test]
    fn a_fixture_body_is_sent_as_written_not_re_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.json");
        let text = r#"{"exchange": "x", "routing_key": "k", "body": {"payload": {"z": 1, "a": 1.50}, "_meta": {}}}"#;
        std::fs::write(&file, text).unwrap();
        let (_, payload) = super::read(&file).unwrap();
        assert_eq!(std::str::from_utf8(&payload).unwrap(), r#"{"payload": {"z": 1, "a": 1.50}, "_meta": {}}"#);
    }
}
