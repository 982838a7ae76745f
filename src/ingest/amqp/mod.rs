//! AMQP ingest: a RabbitMQ consumer that feeds the same pipeline as HTTP ingest.
//!
//! - [`topology`] declares, from configuration only, the exchanges, their bindings, the one durable queue every
//!   Herald node shares (competing consumers) and the dead-letter exchange and queue. It runs after every
//!   (re)connect; declaring what exists is a no-op.
//! - [`consumer`] takes deliveries in batches (whatever has arrived, up to `amqp.batch_max`), decodes and routes
//!   them ([`Pipeline::prepare`]), commits the batch once ([`Pipeline::commit`]) and acknowledges it with one
//!   `basic.ack multiple`. It reconnects by itself, with capped exponential backoff and jitter ([`crate::backoff`]), and reports
//!   its state to the [`Health`] board `/readyz` reads.
//! - [`dead_letters`] lists the dead-letter queue for operators without removing anything, and re-drives
//!   letters to Herald's own queue (never their original exchange, whose other queues had them already), to be
//!   routed by the origin they carry in headers; **a letter is removed only after its republish is confirmed**.
//! - [`publish`] is the `herald publish` subcommand: fixture files to the broker, with publisher confirms.
//!
//! Invariants:
//! - **Only this module knows lapin** (and AMQP headers, properties and delivery tags).
//! - **A delivery is acknowledged only after its event is committed to the inbox**, or after the broker has
//!   confirmed its dead letter. A crash in between redelivers it, and the inbox deduplicates it by event id.
//! - **Poison never stalls the queue**: a message that cannot become a notification (undecodable, oversized, no
//!   recipient, no rule) is republished to the dead-letter exchange with the reason in `x-herald-reason` and
//!   acknowledged with the rest of its batch.
//! - **A store error never dead-letters**: the batch is held (unacknowledged, so not redelivered and not counted
//!   against the delivery limit) and its commit retried with backoff; on shutdown it is requeued once, after the
//!   consumer is cancelled (returned to a consumer still active, the broker would deliver it again at once).
//!
//! Dead letters are published by Herald rather than rejected to the queue's dead-letter exchange, because a
//! rejection can carry no reason (`x-death` only says `rejected`) and quorum queues dead-letter at most once.
//! The queue's own `x-dead-letter-exchange` still catches what the broker dead-letters itself: messages over the
//! delivery limit (a message that crashes every consumer).

mod consumer;
pub mod dead_letters;
mod publish;
mod topology;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use dead_letters::DeadLetters;
pub use publish::publish_fixtures;

use crate::config::{AmqpSettings, TlsFile, TlsFiles};
use crate::ingest::Pipeline;
use crate::telemetry::Health;

/// The name the consumer reports under in the [`Health`] board (`/readyz`).
pub const HEALTH: &str = "amqp";

/// Start the consumer. It runs until `shutdown` is cancelled, then finishes its batch, acknowledges it and
/// closes the connection; await the handle before closing the store.
pub fn spawn(
    settings: AmqpSettings,
    pipeline: Pipeline,
    health: Health,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    health.optional(HEALTH, "connecting");
    tokio::spawn(consumer::Consumer::new(settings, pipeline, health, shutdown).run())
}

/// Connect to `s.url`, named `name` in the broker's connection list, within `timeout` (TCP, TLS, handshake).
async fn connect(s: &AmqpSettings, name: &str, timeout: std::time::Duration) -> anyhow::Result<lapin::Connection> {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    // The TLS files (amqps:// only, validated at start) are read again here: a renewed CA or client certificate
    // is taken at the reconnect.
    let tls = tls(s.tls_files()).map_err(|(file, e)| anyhow::anyhow!("amqp.{}: {e}", file.setting()))?;
    let connecting =
        lapin::Connection::connect_with_config(s.url.expose(), props, tls, lapin::runtime::default_runtime()?);
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out after {timeout:?}"))??;
    Ok(conn)
}

/// The TLS settings of a connection, its files read now: `ca_file` (a PEM file of CA certificates, trusted
/// besides the system's store) and the client certificate and key (`cert_file`, `key_file`, for a broker that
/// asks for one); empty for none. The error says which file, not under which setting, which the caller does.
/// lapin takes the CA chain as text, so that file must be UTF-8. The consumer (`amqp.*`, also checked so at
/// start) and `herald publish` (`--ca-file`, `--cert-file`, `--key-file`) use it.
pub fn tls(files: TlsFiles<'_>) -> Result<lapin::tcp::OwnedTLSConfig, (TlsFile, String)> {
    let cert_chain = match files.ca_file {
        "" => None,
        path => Some(
            String::from_utf8(crate::config::read_ca_file(path).map_err(|e| (TlsFile::Ca, e))?)
                .map_err(|_| (TlsFile::Ca, format!("{path} is not a PEM text file (it is not UTF-8)")))?,
        ),
    };
    let identity = crate::config::read_client_identity(files)?
        .map(|id| lapin::tcp::OwnedIdentity::PKCS8 { pem: id.cert_pem, key: id.key_pem });
    Ok(lapin::tcp::OwnedTLSConfig { identity, cert_chain })
}

/// How long one broker operation (opening a channel, a `basic.ack`, a publish's confirm, ...) may take: a broker,
/// or a link to it, that stopped answering without closing, or a connection lost with an operation still pending
/// (which lapin may never fail), must not hold the consumer or an API call forever.
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A broker operation that failed, or did not answer within [`OPERATION_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error(transparent)]
    Failed(#[from] lapin::Error),
    #[error("the broker did not answer {what} within {secs} s")]
    Silent { what: String, secs: u64 },
}

/// `op`, bounded by [`OPERATION_TIMEOUT`].
async fn bounded<T>(what: &str, op: impl std::future::Future<Output = lapin::Result<T>>) -> Result<T, BrokerError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BrokerError::Silent { what: what.to_owned(), secs: OPERATION_TIMEOUT.as_secs() }),
    }
}

/// Check an `amqp://` / `amqps://` URL the way the client will read it (config validation).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err("must start with amqp:// or amqps://".into());
    }
    url.parse::<lapin::uri::AMQPUri>().map(drop).map_err(|e| format!("not a valid AMQP URL: {e}"))
}

/// Whether `url` (already checked) asks the broker to log in by the client certificate (`auth_mechanism=external`).
pub fn logs_in_by_certificate(url: &str) -> bool {
    url.parse::<lapin::uri::AMQPUri>()
        .is_ok_and(|uri| uri.query.auth_mechanism == Some(lapin::uri::SASLMechanism::External))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_the_client_reads_them() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("amqps://user:pw@broker.example.com/prod?heartbeat=30").is_ok());
        assert!(check_url("http://localhost").is_err());
        assert!(check_url("amqp://host:notaport/").is_err());
    }

    /// The patched AMQP types (vendor/README.md): a short string that is not UTF-8 (a publisher's `message_id`,
    /// `type`, header key) parses, lossily and within a short string's 255 bytes, instead of failing the frame,
    /// which closed the connection and redelivered every message in flight beside it.
    #[test]
    fn a_short_string_that_is_not_utf8_parses_lossily_within_255_bytes() {
        use lapin::types::parsing::parse_short_string;
        let (rest, s) = parse_short_string(&[4, b'i', 0xff, b'd', 0x80][..]).expect("parses");
        assert_eq!((rest, s.as_str()), (&[][..], "i\u{fffd}d\u{fffd}"));
        let mut all_bad = vec![255u8];
        all_bad.extend([0xffu8; 255]);
        let (_, s) = parse_short_string(&all_bad[..]).expect("parses");
        assert!(s.as_str().len() <= 255 && s.as_str().chars().all(|c| c == '\u{fffd}'), "{}", s.as_str().len());
        let (_, s) = parse_short_string(&[5, b'v', b'a', b'l', b'i', b'd'][..]).unwrap();
        assert_eq!(s.as_str(), "valid", "UTF-8 as it was");
    }
}
