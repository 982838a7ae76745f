//! The broker topology, from configuration only: dead-letter exchange and queue, the shared queue, the retry
//! queue, the exchanges and their bindings. Declared after every connect; every declaration is idempotent.
//!
//! Declaration only adds: a binding removed from the configuration stays on the broker until deleted there.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::{AmqpExchangeKind, AmqpQueueKind, AmqpSettings};

/// Declare everything. A failure here (e.g. a queue that exists with other arguments) closes the channel.
pub(super) async fn declare(ch: &Channel, s: &AmqpSettings) -> Result<(), lapin::Error> {
    let q = &s.queue;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    // Dead letters first, so that anything the queue dead-letters has somewhere to go.
    ch.exchange_declare(q.dead_letter_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .await?;
    ch.queue_declare(q.dead_letter_queue.as_str().into(), QueueDeclareOptions::durable(), queue_type(q.kind)).await?;
    ch.queue_bind(
        q.dead_letter_queue.as_str().into(),
        q.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(q.name.as_str().into(), QueueDeclareOptions::durable(), queue_arguments(s)).await?;
    if s.unresolved_retries > 0 {
        let retry = q.retry_queue_name();
        ch.queue_declare(retry.as_ref().into(), QueueDeclareOptions::durable(), retry_queue_arguments(s)).await?;
    }
    for x in &s.exchanges {
        let (kind, keys): (ExchangeKind, Vec<&str>) = match x.kind {
            AmqpExchangeKind::Topic => (ExchangeKind::Topic, x.bindings.iter().map(String::as_str).collect()),
            AmqpExchangeKind::Direct => (ExchangeKind::Direct, x.bindings.iter().map(String::as_str).collect()),
            AmqpExchangeKind::Fanout => (ExchangeKind::Fanout, vec![""]),
        };
        let options = ExchangeDeclareOptions { durable: x.durable, ..Default::default() };
        ch.exchange_declare(x.name.as_str().into(), kind, options, FieldTable::default()).await?;
        for key in keys {
            ch.queue_bind(
                q.name.as_str().into(),
                x.name.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    Ok(())
}

fn queue_type(kind: AmqpQueueKind) -> FieldTable {
    let mut args = FieldTable::default();
    let name = match kind {
        AmqpQueueKind::Quorum => "quorum",
        AmqpQueueKind::Classic => "classic",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(name.into()));
    args
}

/// The shared queue's arguments. They must not change for an existing queue (the broker refuses the declare).
fn queue_arguments(s: &AmqpSettings) -> FieldTable {
    let q = &s.queue;
    let mut args = queue_type(q.kind);
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(q.dead_letter_exchange.as_str().into()));
    if q.kind == AmqpQueueKind::Quorum && q.delivery_limit > 0 {
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(q.delivery_limit.into()));
    }
    args
}

/// The retry queue's: a message expires after its own `expiration` and the broker moves it, through the default
/// exchange, back to the shared queue. A quorum queue does so at least once (it keeps the message until the
/// shared queue confirmed it), which needs `reject-publish` overflow; a classic queue at most once.
fn retry_queue_arguments(s: &AmqpSettings) -> FieldTable {
    let q = &s.queue;
    let mut args = queue_type(q.kind);
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(q.name.as_str().into()));
    if q.kind == AmqpQueueKind::Quorum {
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn quorum_queues_carry_the_delivery_limit_and_classic_ones_do_not() {
        let mut s = Settings::defaults().amqp;
        let args = queue_arguments(&s);
        assert_eq!(args.inner()["x-queue-type"], AMQPValue::LongString("quorum".into()));
        assert_eq!(args.inner()["x-delivery-limit"], AMQPValue::LongLongInt(20));
        assert_eq!(args.inner()["x-dead-letter-exchange"], AMQPValue::LongString("herald.dlx".into()));
        s.queue.kind = AmqpQueueKind::Classic;
        let args = queue_arguments(&s);
        assert_eq!(args.inner()["x-queue-type"], AMQPValue::LongString("classic".into()));
        assert!(!args.contains_key("x-delivery-limit"));
    }

    #[test]
    fn the_retry_queue_expires_into_the_shared_queue_at_least_once_when_quorum() {
        let mut s = Settings::defaults().amqp;
        let args = retry_queue_arguments(&s);
        assert_eq!(args.inner()["x-dead-letter-exchange"], AMQPValue::LongString("".into()));
        assert_eq!(args.inner()["x-dead-letter-routing-key"], AMQPValue::LongString("herald.events".into()));
        assert_eq!(args.inner()["x-dead-letter-strategy"], AMQPValue::LongString("at-least-once".into()));
        assert_eq!(args.inner()["x-overflow"], AMQPValue::LongString("reject-publish".into()));
        s.queue.kind = AmqpQueueKind::Classic;
        let args = retry_queue_arguments(&s);
        assert!(!args.contains_key("x-dead-letter-strategy") && !args.contains_key("x-overflow"));
    }

    /// The retry queue's arguments name the queue and its type: a new queue name (how a new type or limit is
    /// taken) brings a retry queue of its own, not a declaration of the old one the broker would refuse.
    #[test]
    fn the_retry_queue_follows_the_queue_name_unless_named() {
        let mut q = Settings::defaults().amqp.queue;
        assert_eq!(q.retry_queue_name(), "herald.events.retry");
        q.name = "herald.events.v2".into();
        assert_eq!(q.retry_queue_name(), "herald.events.v2.retry");
        q.retry_queue = "waiting".into();
        assert_eq!(q.retry_queue_name(), "waiting");
    }
}
