//! `herald publish`: fixture files (the format of `tests/fixtures/events/*.json`) to the broker, each one
//! confirmed by the broker before the next, so users can try the AMQP path by hand. A file that fails does not
//! stop the others.
//!
//! A fixture: `{exchange, routing_key, properties: {message_id, content_type, delivery_mode, headers, ...},
//! body}`. The body is published as JSON (or, with `body_text`, as that exact text).

use std::path::{Path, PathBuf};

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;

use crate::ingest::fixture::{self, Fixture, Properties};

/// Publish every file in order, each with a publisher confirm: one outcome per file, its line of report or why
/// it failed. A file that fails does not stop the others (the channel an error closed is reopened); a broker that
/// cannot be reached at the start is an error for all, and a connection lost midway fails the files not yet
/// confirmed, each saying so, while the report keeps those that were. `exchange` / `routing_key` replace the
/// fixture's own. `tls` is [`super::tls`]'s: the CA certificates trusted for an `amqps://` broker.
pub async fn publish_fixtures(
    url: &str,
    tls: lapin::tcp::OwnedTLSConfig,
    files: &[PathBuf],
    exchange: Option<&str>,
    routing_key: Option<&str>,
) -> anyhow::Result<Vec<anyhow::Result<String>>> {
    let props = ConnectionProperties::default().with_connection_name("herald publish".into());
    let conn = Connection::connect_with_config(url, props, tls, lapin::runtime::default_runtime()?)
        .await
        .with_context(|| format!("connecting to {}", crate::redact_url(url)))?;
    let mut ch = confirm_channel(&conn).await?;
    let mut report = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        if !ch.status().connected() {
            // A failed publish (an exchange that does not exist) closes the channel; a lost connection, too.
            match confirm_channel(&conn).await {
                Ok(reopened) => ch = reopened,
                Err(e) => {
                    let why = format!("{e:#}");
                    report.extend(files[i..].iter().map(|f| {
                        Err(anyhow::anyhow!(
                            "{}: not published: the connection to the broker was lost ({why})",
                            f.display()
                        ))
                    }));
                    return Ok(report);
                }
            }
        }
        report.push(publish_one(&ch, file, exchange, routing_key).await);
    }
    // Every file was confirmed or reported failed: a close that fails loses nothing.
    if let Err(e) = conn.close(200, "done".into()).await {
        tracing::debug!(error = %e, "closing the connection to the broker");
    }
    Ok(report)
}

async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Publish one file and wait for the broker's confirm: its line of report.
async fn publish_one(
    ch: &Channel,
    file: &Path,
    exchange: Option<&str>,
    routing_key: Option<&str>,
) -> anyhow::Result<String> {
    let (fixture, payload) = read(file)?;
    let exchange = exchange.or(fixture.exchange.as_deref()).with_context(|| {
        format!("{}: no `exchange` (an HTTP fixture? POST it to /api/v1/events, or pass --exchange)", file.display())
    })?;
    let key = routing_key.or(fixture.routing_key.as_deref()).unwrap_or("");
    let confirmation = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, immediate: false },
            &payload,
            properties(&fixture.properties),
        )
        .await
        .with_context(|| format!("publishing {}", file.display()))?
        .await
        .map_err(|e| match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404 => anyhow::anyhow!(
                "exchange `{exchange}` does not exist: start Herald with amqp.enabled = true once (it declares \
                 its topology), or check the name"
            ),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("publishing {}", file.display()))?;
    anyhow::ensure!(confirmation.is_ack(), "{}: the broker refused the message (nack)", file.display());
    anyhow::ensure!(
        confirmation.take_message().is_none(),
        "{}: no queue is bound to exchange `{exchange}` for routing key `{key}`: the message went nowhere",
        file.display()
    );
    Ok(format!(
        "{}: published to exchange `{exchange}` with routing key `{key}` ({} bytes, confirmed)",
        file.display(),
        payload.len()
    ))
}

fn read(file: &Path) -> anyhow::Result<(Fixture, Vec<u8>)> {
    let (fixture, payload) = fixture::read(file)?;
    if fixture.transport.as_deref().is_some_and(|t| t != "amqp") {
        anyhow::bail!("{}: an HTTP fixture; POST its body to /api/v1/events instead", file.display());
    }
    Ok((fixture, payload))
}

fn properties(p: &Properties) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_delivery_mode(p.delivery_mode.unwrap_or(2))
        .with_content_type(ShortString::from(p.content_type.as_deref().unwrap_or("application/json")));
    if let Some(v) = &p.message_id {
        props = props.with_message_id(v.as_str().into());
    }
    if let Some(v) = &p.correlation_id {
        props = props.with_correlation_id(v.as_str().into());
    }
    if let Some(v) = &p.kind {
        props = props.with_type(v.as_str().into());
    }
    if let Some(v) = &p.app_id {
        props = props.with_app_id(v.as_str().into());
    }
    if let Some(v) = p.priority {
        props = props.with_priority(v);
    }
    if !p.headers.is_empty() {
        props = props.with_headers(table(&p.headers));
    }
    props
}

fn table(map: &serde_json::Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        t.insert(k.as_str().into(), value(v));
    }
    t
}

fn value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(items.iter().map(value).collect::<Vec<_>>())),
        Value::Object(m) => AMQPValue::FieldTable(table(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_amqp_fixture_reads_and_http_ones_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match read(&path) {
                Ok((f, payload)) => {
                    assert!(f.exchange.is_some(), "{}", path.display());
                    serde_json::from_slice::<Value>(&payload).unwrap();
                }
                Err(e) => assert!(e.to_string().contains("HTTP fixture"), "{}: {e}", path.display()),
            }
        }
    }

    #[test]
    fn fixture_properties_become_amqp_properties() {
        let p: Properties = serde_json::from_value(serde_json::json!({
            "delivery_mode": 2, "message_id": "m-1", "headers": {"priority": "high", "n": 3, "ok": true}
        }))
        .unwrap();
        let props = properties(&p);
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "m-1");
        assert_eq!(props.delivery_mode(), &Some(2));
        let headers = props.headers().as_ref().unwrap().inner();
        assert_eq!(headers["priority"], AMQPValue::LongString("high".into()));
        assert_eq!(headers["n"], AMQPValue::LongLongInt(3));
        assert_eq!(headers["ok"], AMQPValue::Boolean(true));
    }
}
