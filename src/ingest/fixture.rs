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
    pub body: Option<Value>,
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
        (None, Some(body)) => serde_json::to_vec(body)?,
        (None, None) => anyhow::bail!(
            "{}: no `body`: a fixture holds the event as `body`, beside the `exchange` and `routing_key` it is \
             published with (see tests/fixtures/events/); for a bare event body, wrap it: \
             {{\"transport\": \"http\", \"exchange\": \"<its exchange>\", \"body\": <the event>}}",
            file.display()
        ),
    };
    Ok((fixture, payload))
}
