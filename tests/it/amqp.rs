//! RabbitMQ ingest against a real broker: fixtures in, frames and inbox rows out; poison to the dead-letter
//! queue with its reason; each event stored exactly once across a kill -9, a broker restart and a graceful stop.
//!
//! The broker is the one `scripts/test.sh` starts (`HERALD_TEST_AMQP_URL`). Tests share it: each declares its
//! own exchanges and queues under a unique prefix (and routes with the shipped rules, their exchange names
//! prefixed the same way), so they run in parallel. The broker-restart test holds an exclusive lock that the
//! others share, so that no other test sees the broker go away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use herald::config::{AmqpExchangeKind, Secret, Settings};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

use crate::routing::cases;
use crate::support::*;

const SLOW_WAIT: Duration = Duration::from_secs(60);

/// One test's slice of the shared broker: a name prefix, the rules rewritten for it, and the broker lock.
pub(crate) struct Amqp {
    pub(crate) url: String,
    prefix: String,
    rules: PathBuf,
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl Amqp {
    /// `None` (after saying why) when no broker is configured.
    pub(crate) async fn new(test: &str) -> Option<Amqp> {
        Amqp::with_lock(test, false).await
    }

    /// Like [`Amqp::new`], alone on the broker (no other AMQP test runs meanwhile).
    async fn exclusive(test: &str) -> Option<Amqp> {
        Amqp::with_lock(test, true).await
    }

    async fn with_lock(test: &str, exclusive: bool) -> Option<Amqp> {
        let Some(url) = std::env::var("HERALD_TEST_AMQP_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!(
                "SKIPPED {test}: HERALD_TEST_AMQP_URL is not set. scripts/test.sh starts RabbitMQ and sets it; by \
                 hand: source scripts/lib/services.sh; trap stop_services EXIT; start_rabbitmq"
            );
            return None;
        };
        let _lock = broker_lock(&url, exclusive).await;
        let prefix = format!("t.{test}.{:08x}", rand::random::<u32>());
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        let shipped = std::fs::read_to_string(repo_path("config/rules.toml")).unwrap();
        std::fs::write(&rules, prefix_rule_exchanges(&shipped, &prefix)).unwrap();
        Some(Amqp { url, prefix, rules, dir, _lock })
    }

    pub(crate) fn exchange(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn queue(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub(crate) fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Left to its default: the queue's name and `.retry`.
    fn retry_queue(&self) -> String {
        format!("{}.retry", self.queue())
    }

    fn configure(&self, s: &mut Settings) {
        s.rules.path = self.rules.clone();
        let a = &mut s.amqp;
        a.enabled = true;
        a.url = Secret::new(self.url.clone());
        a.reconnect_max_ms = 1000;
        a.lag_interval_secs = 1;
        a.queue.name = self.queue();
        a.queue.dead_letter_exchange = format!("{}.dlx", self.prefix);
        a.queue.dead_letter_queue = self.dead_letter_queue();
        for x in &mut a.exchanges {
            x.name = self.exchange(&x.name);
        }
    }

    /// The same configuration as a file, for the real binary.
    fn config_file(&self, db: &Path) -> PathBuf {
        let mut s = Settings::defaults();
        self.configure(&mut s);
        let a = &s.amqp;
        let mut toml = format!(
            "[server]\nbind = \"127.0.0.1:0\"\ndemo_dir = \"\"\n[store]\nurl = \"sqlite://{}\"\nsynchronous = \"full\"\n\
             [rules]\npath = \"{}\"\n[amqp]\nenabled = true\nurl = \"{}\"\nreconnect_max_ms = 1000\n\
             lag_interval_secs = 1\n[amqp.queue]\nname = \"{}\"\ndead_letter_exchange = \"{}\"\n\
             dead_letter_queue = \"{}\"\n",
            db.display(),
            self.rules.display(),
            self.url,
            a.queue.name,
            a.queue.dead_letter_exchange,
            a.queue.dead_letter_queue,
        );
        for x in &a.exchanges {
            let kind = match x.kind {
                AmqpExchangeKind::Topic => "topic",
                AmqpExchangeKind::Fanout => "fanout",
                AmqpExchangeKind::Direct => "direct",
            };
            toml += &format!(
                "[[amqp.exchanges]]\nname = \"{}\"\ntype = \"{kind}\"\ndurable = {}\nbindings = {:?}\n",
                x.name, x.durable, x.bindings
            );
        }
        let path = self.dir.path().join("herald.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Bind `key` on this test's copy of `exchange` too (with `configure` in [`Amqp::gateway`]): a key the shipped
    /// bindings bring in always has a rule (a notify or an ignore), so an unmatched event needs one of its own.
    pub(crate) fn also_bind(&self, s: &mut Settings, exchange: &str, key: &str) {
        let name = self.exchange(exchange);
        let x = s.amqp.exchanges.iter_mut().find(|x| x.name == name).expect("a shipped exchange");
        x.bindings.push(key.to_owned());
    }

    /// A gateway consuming this test's queue, once it is consuming.
    pub(crate) async fn gateway(&self, configure: impl FnOnce(&mut Settings)) -> Gateway {
        let gw = spawn_gateway_with(|s| {
            self.configure(s);
            configure(s);
        })
        .await;
        wait_consuming(&gw.url("")).await;
        gw
    }

    /// Publish a fixture file as its service does, to this test's copy of its exchange.
    async fn publish_fixture(&self, broker: &Broker, name: &str) -> Value {
        let f = fixture(name);
        let mut props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(id) = f["properties"]["message_id"].as_str() {
            props = props.with_message_id(id.into());
        }
        if let Some(headers) = f["properties"]["headers"].as_object() {
            let mut t = FieldTable::default();
            for (k, v) in headers {
                t.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().unwrap_or_default().into()));
            }
            props = props.with_headers(t);
        }
        let exchange = self.exchange(f["exchange"].as_str().unwrap());
        let body = serde_json::to_vec(&f["body"]).unwrap();
        broker.publish(&exchange, f["routing_key"].as_str().unwrap_or(""), &body, props).await;
        f
    }
}

/// Publish a fixture and wait until the consumer acknowledged it (so the next step sees its effect).
async fn publish_and_settle(amqp: &Amqp, broker: &Broker, gw: &Gateway, name: &str, acked_before: &mut f64) {
    amqp.publish_fixture(broker, name).await;
    let base = gw.url("");
    let want = *acked_before + 1.0;
    *acked_before = eventually(&format!("{name} acknowledged"), WAIT, async || {
        let acked = metric(&base, "herald_amqp_messages_acked_total").await;
        (acked >= want).then_some(acked)
    })
    .await;
}

#[tokio::test]
async fn a_day_of_the_seeds_events_over_amqp_reaches_the_right_users_and_dead_letters_nothing() {
    use crate::seeds::{check, day};
    let Some(amqp) = Amqp::new("seeds").await else { return };
    // Unresolved recipients dead-lettered at once (their retries have tests of their own).
    let gw = amqp.gateway(|s| s.amqp.unresolved_retries = 0).await;
    let broker = Broker::connect(&amqp.url).await;
    let mut tabs = std::collections::HashMap::new();
    let mut acked = 0.0;
    for step in day() {
        if !tabs.contains_key(step.user) {
            tabs.insert(step.user, gw.connect(step.user).await);
        }
        publish_and_settle(&amqp, &broker, &gw, step.fixture, &mut acked).await;
        check(&gw, tabs.get_mut(step.user).unwrap(), &step).await;
    }
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "nothing dead-lettered");

    // A stage event for a student nobody introduced: dead-lettered with its reason, nothing stored.
    let fresh = amqp.exchange("medtrack.events");
    let body = br#"{"event_type":"stage.created","payload":{"stage_id":"s-9","student_id":"unknown-student"},"service":"core-service"}"#;
    let props = BasicProperties::default().with_message_id("stage-for-a-stranger".into());
    broker.publish(&fresh, "stage.created", body, props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the unresolved event in the dead-letter queue", WAIT, async || {
        (broker.depth(&dlq).await == 1).then_some(())
    })
    .await;
    let dead = broker.take_all(&dlq).await;
    let headers = dead[0].properties.headers().as_ref().unwrap().inner();
    assert!(
        matches!(headers.get("x-herald-reason"), Some(AMQPValue::LongString(s)) if s.as_bytes() == b"unresolved_recipient"),
        "{headers:?}"
    );
    gw.stop().await.unwrap();
}

/// A `stage.*` published before the `student.created` that teaches its student's alias (two services, no order
/// between them) waits in the retry queue and is routed again: once the alias is known, the student gets it, and
/// nothing is dead-lettered. Before, it went to the dead letters for an operator to re-drive. (Classic queues
/// here; the test below runs the default quorum ones.)
#[tokio::test]
async fn an_event_that_overtook_the_alias_it_needs_is_delivered_once_the_alias_is_taught() {
    let Some(amqp) = Amqp::new("overtaken").await else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.unresolved_retries = 5;
            s.amqp.unresolved_retry_delay_secs = 1;
            s.amqp.queue.kind = herald::config::AmqpQueueKind::Classic;
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    let student_user = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
    let mut tab = gw.connect(student_user).await;
    let stage = fixture("medtrack-stage-created-core.json");
    let props = BasicProperties::default().with_message_id("stage-before-its-student".into());
    let exchange = amqp.exchange(stage["exchange"].as_str().unwrap());
    broker.publish(&exchange, "stage.created", &serde_json::to_vec(&stage["body"]).unwrap(), props).await;
    eventually("the stage event held for a retry", WAIT, async || {
        (metric(&gw.url(""), "herald_amqp_messages_retried_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(gw.inbox(student_user).await["items"], json!([]), "nothing stored while the alias is unknown");

    amqp.publish_fixture(&broker, "medtrack-student-created.json").await;
    let mut seen = Vec::new();
    while !seen.contains(&"stage.created".to_owned()) {
        let f = tab.frame().await;
        if f["type"] == "notification" {
            seen.push(f["event_type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["student.created", "stage.created"], "the welcome, then the stage the retry delivered");
    let items = gw.inbox(student_user).await["items"].as_array().unwrap().len();
    assert_eq!(items, 2, "each stored once");
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "nothing dead-lettered");
    assert_eq!(broker.depth(&amqp.retry_queue()).await, 0, "nothing left waiting");
    gw.stop().await.unwrap();
}

/// An alias nobody ever teaches: the event is tried `unresolved_retries` times, then dead-lettered
/// `unresolved_recipient` with the count of its tries and the exchange and routing key it was first published
/// with (so a re-drive routes it as before).
#[tokio::test]
async fn an_alias_never_taught_is_dead_lettered_after_its_retries_with_the_count() {
    let Some(amqp) = Amqp::new("never-taught").await else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.unresolved_retries = 2;
            s.amqp.unresolved_retry_delay_secs = 1;
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("medtrack.events");
    let body = br#"{"event_type":"stage.created","payload":{"stage_id":"s-1","student_id":"nobody-knows"}}"#;
    let props = BasicProperties::default().with_message_id("stage-for-nobody".into());
    broker.publish(&exchange, "stage.created", body, props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the event dead-lettered after its retries", Duration::from_secs(30), async || {
        (broker.depth(&dlq).await == 1).then_some(())
    })
    .await;
    // As an operator lists it: one death, Herald's reason, its origin.
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    let listed: Value = resp.json().await.unwrap();
    let letter = &listed["letters"][0];
    assert_eq!((letter["reason"].as_str(), letter["deaths"].as_u64()), (Some("unresolved_recipient"), Some(1)));
    assert_eq!(letter["retries"], 2, "{letter}");
    assert_eq!(
        (letter["exchange"].as_str(), letter["id"].as_str()),
        (Some(exchange.as_str()), Some("stage-for-nobody"))
    );
    // The listing hands letters back; the queue shows it again a moment later.
    eventually("the letter back in its queue", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    let dead = broker.take_all(&dlq).await;
    let headers = dead[0].properties.headers().as_ref().unwrap().inner();
    let text = |k: &str| match headers.get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("x-herald-reason"), "unresolved_recipient");
    assert_eq!((text("x-herald-exchange"), text("x-herald-routing-key")), (exchange, "stage.created".to_owned()));
    assert_eq!(headers.get("x-herald-retries"), Some(&AMQPValue::LongLongInt(2)), "{headers:?}");
    assert!(!headers.contains_key("x-death"), "the retry queue's expiries are not deaths: {headers:?}");
    assert_eq!(headers.get("x-herald-deaths"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(metric(&gw.url(""), "herald_amqp_messages_retried_total").await, 2.0);
    assert_eq!(dead[0].data, body.to_vec(), "the body as published");
    assert_eq!(broker.depth(&amqp.retry_queue()).await, 0);
    gw.stop().await.unwrap();
}

/// A message waiting out its retries that the broker dead-letters itself (here: returned past the quorum queue's
/// delivery limit while no node consumed it, as a consumer crashing on it would) is listed with the broker's
/// reason, one death, the tries it had and its first exchange and routing key, from the headers Herald's retry
/// wrote and the broker's `x-death`. Re-driven, it gets fresh tries, and when those run out its letter counts
/// both deaths and keeps the first one's time.
#[tokio::test]
async fn a_retried_event_the_broker_dead_letters_at_its_delivery_limit_is_listed_as_such_and_counts_both_deaths() {
    let Some(amqp) = Amqp::new("retry-delivery-limit").await else { return };
    let settings = |retries: u32| {
        move |s: &mut Settings| {
            s.amqp.unresolved_retries = retries;
            s.amqp.unresolved_retry_delay_secs = 1;
            s.amqp.queue.delivery_limit = 1;
        }
    };
    let gw = amqp.gateway(settings(5)).await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("medtrack.events");
    let body = br#"{"event_type":"stage.created","payload":{"stage_id":"s-2","student_id":"still-nobody"}}"#;
    let props = BasicProperties::default().with_message_id("stage-past-its-limit".into());
    broker.publish(&exchange, "stage.created", body, props).await;
    eventually("the event held for a retry", WAIT, async || {
        (metric(&gw.url(""), "herald_amqp_messages_retried_total").await >= 1.0).then_some(())
    })
    .await;
    gw.stop().await.unwrap();

    // No node consumes now: back from the retry queue, the message is returned until the broker gives up on it.
    let queue = amqp.queue();
    eventually("the event back from the retry queue", WAIT, async || (broker.depth(&queue).await == 1).then_some(()))
        .await;
    let dlq = amqp.dead_letter_queue();
    let mut returns = 0;
    while broker.depth(&dlq).await == 0 {
        assert!(returns < 10, "the broker never dead-lettered a message returned {returns} times");
        if broker.return_one(&queue).await {
            returns += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gw = amqp.gateway(settings(1)).await;
    let listed = dead_letters(&gw).await;
    let l = &listed["letters"][0];
    assert_eq!((l["reason"].as_str(), l["deaths"].as_u64()), (Some("delivery_limit"), Some(1)), "{l}");
    assert!(l["retries"].as_u64().is_some_and(|r| r >= 1), "the tries it had: {l}");
    assert_eq!((l["exchange"].as_str(), l["routing_key"].as_str()), (Some(exchange.as_str()), Some("stage.created")));
    assert_eq!(l["id"], "stage-past-its-limit", "{l}");
    let first_death = l["first_dead_lettered_at"].clone();
    assert!(first_death.is_string(), "{l}");

    // Re-driven while the alias is still unknown: one fresh try, then Herald dead-letters it itself.
    eventually("the letter back in its queue", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    let (status, answer) = redrive(&gw, json!({"ids": ["stage-past-its-limit"]})).await;
    assert_eq!((status, answer["results"][0]["outcome"].as_str()), (200, Some("redriven")), "{answer}");
    let l = eventually("dead-lettered a second time", Duration::from_secs(30), async || {
        let list = dead_letters(&gw).await;
        let l = list["letters"].as_array().unwrap().first().cloned()?;
        (l["deaths"] == 2).then_some(l)
    })
    .await;
    assert_eq!((l["reason"].as_str(), l["retries"].as_u64()), (Some("unresolved_recipient"), Some(1)), "{l}");
    assert_eq!(l["first_dead_lettered_at"], first_death, "the first death's time is kept: {l}");
    assert_eq!((l["exchange"].as_str(), l["routing_key"].as_str()), (Some(exchange.as_str()), Some("stage.created")));
    eventually("the letter back in its queue", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    let dead = broker.take_all(&dlq).await;
    let headers = dead[0].properties.headers().as_ref().unwrap().inner();
    assert!(!headers.contains_key("x-death"), "the broker's record is folded into Herald's count: {headers:?}");
    assert_eq!(headers.get("x-herald-deaths"), Some(&AMQPValue::LongLongInt(2)), "{headers:?}");
    assert_eq!(dead[0].data, body.to_vec(), "the body as published");
    assert_eq!((broker.depth(&queue).await, broker.depth(&amqp.retry_queue()).await), (0, 0));
    gw.stop().await.unwrap();
}

/// The shipped rules, with every exchange they name prefixed (`exchanges = ["a", "b"]` lines).
fn prefix_rule_exchanges(rules: &str, prefix: &str) -> String {
    rules
        .lines()
        .map(|line| match line.strip_prefix("exchanges = [\"") {
            Some(rest) => format!("exchanges = [\"{prefix}.{}", rest.replace("\", \"", &format!("\", \"{prefix}."))),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A shared (or exclusive) lock on the broker, across threads and test processes (nextest runs one per test).
async fn broker_lock(url: &str, exclusive: bool) -> std::fs::File {
    let name: String = url.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = std::env::temp_dir().join(format!("herald-test-broker-{name}.lock"));
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
        if exclusive {
            f.lock().unwrap();
        } else {
            f.lock_shared().unwrap();
        }
        f
    })
    .await
    .unwrap()
}

/// A publisher (with confirms) and inspector of queues, as the services and an operator would use them.
pub(crate) struct Broker {
    _conn: Connection,
    ch: Channel,
}

impl Broker {
    pub(crate) async fn connect(url: &str) -> Broker {
        Broker::try_connect(url).await.expect("connecting to the test broker")
    }

    async fn try_connect(url: &str) -> lapin::Result<Broker> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Broker { _conn: conn, ch })
    }

    pub(crate) async fn publish(&self, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
        self.publish_all(&[(exchange.to_owned(), key.to_owned(), body.to_vec(), props)]).await.unwrap();
    }

    /// Publish in a pipeline, then wait for every confirm. Unroutable or refused messages are errors.
    async fn publish_all(&self, messages: &[(String, String, Vec<u8>, BasicProperties)]) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(messages.len());
        for (exchange, key, body, props) in messages {
            let options = BasicPublishOptions { mandatory: true, immediate: false };
            confirms.push(
                self.ch
                    .basic_publish(exchange.as_str().into(), key.as_str().into(), options, body, props.clone())
                    .await?,
            );
        }
        for c in confirms {
            let c = c.await?;
            anyhow::ensure!(c.is_ack(), "the broker refused a message");
            anyhow::ensure!(c.take_message().is_none(), "a message was unroutable");
        }
        Ok(())
    }

    /// Messages ready in `queue` (not delivered to a consumer).
    pub(crate) async fn depth(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        self.ch.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap().message_count()
    }

    /// Take one message of `queue` and hand it back unacknowledged (`basic.nack`, requeued), as a consumer that
    /// fails on it does: the broker counts a delivery. `false` when the queue had none ready.
    async fn return_one(&self, queue: &str) -> bool {
        let Some(m) = self.ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.unwrap() else {
            return false;
        };
        m.delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await.unwrap();
        true
    }

    /// Take every message of `queue` (dead letters, for inspection).
    async fn take_all(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(m) = self.ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            out.push(m.delivery);
        }
        out
    }
}

/// A simple notification for the fanout exchange: `{user_id, title, message, type}`, with a message id.
fn notification(exchange: &str, user: &str, title: &str) -> (String, String, Vec<u8>, BasicProperties) {
    let body = json!({"user_id": user, "title": title, "message": "m", "type": "info"});
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id(format!("{exchange}/{title}").into());
    (exchange.to_owned(), String::new(), serde_json::to_vec(&body).unwrap(), props)
}

/// `GET /readyz` as (status, body).
async fn readyz(base: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn wait_consuming(base: &str) {
    eventually("the amqp consumer to be ready", SLOW_WAIT, async || {
        let (_, body) = readyz(base).await;
        (body["checks"]["amqp"]["ok"] == true).then_some(())
    })
    .await;
}

/// The sum of one metric's series in `/metrics` (0 when absent).
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every notification title in `user`'s inbox (all pages), read with the service key.
async fn titles(base: &str, user: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut before = None::<i64>;
    loop {
        let mut url = format!("{base}/api/v1/users/{user}/notifications?limit=100");
        if let Some(b) = before {
            url += &format!("&before={b}");
        }
        let page: Value = http.get(url).bearer_auth(SERVICE_KEY).send().await.unwrap().json().await.unwrap();
        out.extend(page["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap().to_owned()));
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

async fn unread(base: &str, user: &str) -> u64 {
    let url = format!("{base}/api/v1/users/{user}/notifications/unread_count");
    let body: Value =
        reqwest::Client::new().get(url).bearer_auth(SERVICE_KEY).send().await.unwrap().json().await.unwrap();
    body["unread_count"].as_u64().unwrap()
}

/// Wait until `users` hold `per_user` notifications each, then check that they are exactly the expected titles:
/// none missing, none twice.
async fn assert_exactly_once(base: &str, users: &[String], per_user: usize, title: impl Fn(usize, usize) -> String) {
    eventually("every event to be stored", SLOW_WAIT, async || {
        let mut total = 0;
        for u in users {
            total += unread(base, u).await as usize;
        }
        (total >= users.len() * per_user).then_some(())
    })
    .await;
    for (ui, u) in users.iter().enumerate() {
        let got = titles(base, u).await;
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "{u}: a notification was stored twice");
        let want: HashSet<String> = (0..per_user).map(|i| title(ui, i)).collect();
        assert_eq!(distinct, want.iter().collect(), "{u}: the stored notifications are not the published ones");
    }
}

#[tokio::test]
async fn every_amqp_fixture_reaches_its_users_sessions_and_inbox() {
    let Some(amqp) = Amqp::new("fixtures").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    let mut published = 0;
    for (name, case) in cases() {
        let Some(fixture_name) = case.get("fixture").and_then(Value::as_str) else { continue };
        let expect = &case["expect"];
        let Some(users) = expect["to"].as_array().filter(|_| expect["action"] == "notify") else { continue };
        let Some(exchange) = fixture(fixture_name)["exchange"].as_str().map(str::to_owned) else {
            continue; // an HTTP fixture
        };
        let user = users[0].as_str().unwrap();
        let mut tab1 = gw.connect(user).await;
        let mut tab2 = gw.connect(user).await;

        let f = amqp.publish_fixture(&broker, fixture_name).await;
        published += 1;
        // The rule's event_type when it sets one; else the event's own. Notifications without a type of their own
        // are typed by their exchange, which this test prefixes.
        let wanted = expect.get("notification_event_type").unwrap_or(&expect["event_type"]);
        let event_type = match wanted.as_str() {
            Some(t) if t == exchange => json!(amqp.exchange(t)),
            _ => wanted.clone(),
        };
        let mut id = Value::Null;
        for tab in [&mut tab1, &mut tab2] {
            let frame = tab.notification().await;
            id = frame["notification"]["id"].clone();
            assert_eq!(frame["notification"]["user_id"], user, "{name}");
            assert_eq!(frame["notification"]["title"], expect["title"], "{name}");
            assert_eq!(frame["event_type"], event_type, "{name}");
            assert_eq!(frame["body"], f["body"], "{name}: the original body travels with the frame");
        }
        let inbox = gw.inbox(user).await;
        assert!(inbox["items"].as_array().unwrap().iter().any(|n| n["id"] == id), "{name}: in the inbox");
    }
    assert!(published >= 5, "only {published} AMQP fixtures were exercised");
    let base = gw.url("");
    eventually("every delivery to be acknowledged", WAIT, async || {
        (metric(&base, "herald_amqp_messages_acked_total").await >= published as f64).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn fanout_system_notification_reaches_everyone() {
    let Some(amqp) = Amqp::new("broadcast").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    let mut clients = Vec::new();
    for u in ["alice", "bob", "carol"] {
        clients.push((u, gw.connect(u).await));
    }
    amqp.publish_fixture(&broker, "sgad-notification-system.json").await;
    let mut ids = HashSet::new();
    for (u, c) in &mut clients {
        let f = c.notification().await;
        assert_eq!(f["notification"]["user_id"], Value::Null, "{u}: a broadcast");
        assert_eq!(f["notification"]["title"], "Mantenimiento programado");
        ids.insert(f["notification"]["id"].as_i64().unwrap());
        assert_eq!(gw.unread(u).await, 1);
    }
    assert_eq!(ids.len(), 1, "one row for everyone");
    // A user who was never connected sees it too.
    assert_eq!(gw.inbox("dave").await["items"][0]["id"], *ids.iter().next().unwrap());
}

#[tokio::test]
async fn user_deleted_event_purges_the_inbox() {
    let Some(amqp) = Amqp::new("purge").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    let user = "0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40";
    let other = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f";
    let mut tab = gw.connect(user).await;
    amqp.publish_fixture(&broker, "medtrack-student-created.json").await;
    amqp.publish_fixture(&broker, "medtrack-stage-accepted.json").await;
    amqp.publish_fixture(&broker, "medtrack-encadrant-created.json").await; // someone else's
    tab.notification().await;
    tab.notification().await;
    eventually("the other user's notification", WAIT, async || {
        (gw.inbox(other).await["items"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(gw.unread(user).await, 2);

    amqp.publish_fixture(&broker, "medtrack-user-deleted.json").await;
    eventually("the inbox to be erased", WAIT, async || {
        (gw.inbox(user).await["items"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    assert_eq!(gw.unread(user).await, 0);
    assert_eq!(gw.inbox(other).await["items"].as_array().unwrap().len(), 1, "only that user's inbox");
}

/// What [`tampering_link`] does to the bytes a client sends the broker.
#[derive(Clone, Copy)]
enum Tamper {
    /// Replace `marker` with `replacement` (the same length): a publisher that sets properties no AMQP client
    /// library lets it write (bytes that are not UTF-8 in a short string; RabbitMQ takes them).
    Rewrite { marker: &'static [u8], replacement: &'static [u8] },
    /// Forward nothing more, either way, once the client has sent `trigger`: a link that went silent without
    /// closing.
    FreezeOn(&'static [u8]),
}

/// A TCP proxy to the broker at `upstream` (`host:port`) that tampers with what clients send. A pattern split
/// between two reads is still found: the last `len - 1` bytes wait for the next read, or for 5 ms of quiet.
async fn tampering_link(upstream: String, tamper: Tamper) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pattern = match tamper {
        Tamper::Rewrite { marker, replacement } => {
            assert_eq!(marker.len(), replacement.len());
            marker
        }
        Tamper::FreezeOn(trigger) => trigger,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let (mut from_client, mut to_client) = inbound.into_split();
            let (mut from_broker, mut to_broker) = outbound.into_split();
            let frozen = Arc::new(AtomicBool::new(false));
            let frozen_too = frozen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = from_broker.read(&mut buf).await {
                    if !frozen_too.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let (mut held, mut buf) = (Vec::new(), vec![0u8; 16 * 1024]);
                loop {
                    let read = tokio::time::timeout(Duration::from_millis(5), from_client.read(&mut buf)).await;
                    let keep = match read {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(n)) => {
                            held.extend_from_slice(&buf[..n]);
                            pattern.len() - 1
                        }
                        Err(_) => 0, // quiet: send everything
                    };
                    while let Some(at) = held.windows(pattern.len()).position(|w| w == pattern) {
                        match tamper {
                            Tamper::Rewrite { replacement, .. } => {
                                held[at..at + pattern.len()].copy_from_slice(replacement)
                            }
                            Tamper::FreezeOn(_) => {
                                frozen.store(true, Ordering::SeqCst);
                                held.clear();
                            }
                        }
                    }
                    if frozen.load(Ordering::SeqCst) {
                        held.clear(); // read and drop: the client sees a link that takes its bytes, never answering
                        continue;
                    }
                    let send = held.len().saturating_sub(keep);
                    if to_broker.write_all(&held[..send]).await.is_err() {
                        break;
                    }
                    held.drain(..send);
                }
                if !frozen.load(Ordering::SeqCst) {
                    let _ = to_broker.write_all(&held).await;
                }
            });
        }
    });
    addr
}

/// `url` (amqp://user:password@host:port/vhost) as (what comes before the host, `host:port`, what comes after),
/// for a URL to the same broker through a proxy.
fn split_amqp_url(url: &str) -> (&str, &str, &str) {
    let (head, rest) = url.split_once('@').unwrap();
    let (host, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    (head, host, vhost)
}

/// A `message_id`, `type` and header key that are not UTF-8 (RabbitMQ passes such short strings through) are read
/// lossily (the AMQP types patched in vendor/): the message is stored like any other, and the messages around it
/// are neither redelivered nor dead-lettered. Before, the frame failed to parse and closed the connection, every
/// reconnect got it again with the whole prefetch window beside it, and the quorum queue's delivery limit
/// dead-lettered them all (`x-death` `delivery_limit`) after minutes of a stalled queue.
#[tokio::test]
async fn a_message_whose_properties_are_not_utf8_is_handled_and_the_messages_beside_it_are_not_lost() {
    const MARKER: &[u8] = b"herald-test-not-utf8-marker";
    const REPLACEMENT: &[u8] = b"herald-test-\xff\xfe\x80\xc3\x28\xa0\xa1\xe2-marker";
    let Some(amqp) = Amqp::new("not-utf8").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    // The publisher goes through the proxy.
    let (head, upstream, vhost) = split_amqp_url(&amqp.url);
    let proxy = tampering_link(upstream.to_owned(), Tamper::Rewrite { marker: MARKER, replacement: REPLACEMENT }).await;
    let broker = Broker::connect(&format!("{head}@{proxy}/{vhost}")).await;
    let fanout = amqp.exchange("sgad.notifications");
    let user = "not-utf8-user".to_owned();
    let title = |_: usize, i: usize| match i {
        0..50 => format!("before {i}"),
        50 => "properties not UTF-8".to_owned(),
        _ => format!("after {i}"),
    };
    let mut messages: Vec<_> = (0..50).map(|i| notification(&fanout, &user, &title(0, i))).collect();
    let marker = std::str::from_utf8(MARKER).unwrap();
    let mut headers = FieldTable::default();
    headers.insert(marker.into(), AMQPValue::LongString("a header whose key is not UTF-8".into()));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(marker.into())
        .with_type(marker.into())
        .with_headers(headers);
    let body = json!({"user_id": user, "title": title(0, 50), "message": "m", "type": "info"});
    messages.push((fanout.clone(), String::new(), serde_json::to_vec(&body).unwrap(), props));
    messages.extend((51..101).map(|i| notification(&fanout, &user, &title(0, i))));
    broker.publish_all(&messages).await.unwrap();
    assert_exactly_once(&gw.url(""), std::slice::from_ref(&user), 101, title).await;
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "nothing dead-lettered");
    assert_eq!(metric(&gw.url(""), "herald_amqp_reconnects_total").await, 0.0, "the connection never dropped");
}

#[tokio::test]
async fn bad_messages_are_dead_lettered_with_their_reason_and_do_not_stall_the_queue() {
    let Some(amqp) = Amqp::new("poison").await else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.max_message_bytes = 8192;
            amqp.also_bind(s, "events.topic", "invoice.*");
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    let user = "poison-user";
    let mut tab = gw.connect(user).await;
    let fanout = amqp.exchange("sgad.notifications");
    let topic = amqp.exchange("events.topic");
    let good = |n: u32| notification(&fanout, user, &format!("good {n}"));
    let bad = |reason: &str, exchange: &str, key: &str, body: Vec<u8>| {
        let props = BasicProperties::default()
            .with_message_id(format!("bad-{reason}").into())
            .with_correlation_id("corr".into())
            .with_reply_to("replies".into())
            .with_priority(7)
            .with_type("kind".into())
            .with_app_id("app".into())
            .with_timestamp(1_700_000_000)
            .with_headers({
                let mut t = FieldTable::default();
                t.insert("origin".into(), AMQPValue::LongString("test".into()));
                // Not Herald's (a string, not a timestamp): replaced, or the letter would list no first death.
                t.insert("x-herald-first-dead-lettered-at".into(), AMQPValue::LongString("yesterday".into()));
                t
            });
        (reason.to_owned(), (exchange.to_owned(), key.to_owned(), body, props))
    };
    let oversized = serde_json::to_vec(&json!({"user_id": user, "title": "big", "message": "x".repeat(9000)})).unwrap();
    let everybody: Vec<u32> = (0..=1000).collect();
    let too_many = serde_json::to_vec(&json!({"event_type": "user.registered", "data": {"user_id": everybody}}));
    // AMQP keys are at most 255 bytes; a longer one can come only from the body.
    let long_key_body = serde_json::to_vec(&json!({"_meta": {"routing_key": "b.".repeat(130) + "z"}, "payload": {}}));
    let long_key_body = long_key_body.unwrap();
    let bads = [
        bad("invalid_json", &fanout, "", br#"{"user_id": "poison-user", "title": "#.to_vec()),
        bad("non_json", &fanout, "", b"hello, this is not JSON".to_vec()),
        bad("invalid_utf8", &fanout, "", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']),
        bad(
            "missing_user_id",
            &topic,
            "stage.accepted",
            br#"{"event_type":"stage.accepted","payload":{"stage_id":"s1"},"service":"core"}"#.to_vec(),
        ),
        bad("oversized", &fanout, "", oversized),
        bad("unmatched", &topic, "invoice.paid", br#"{"event_type":"invoice.paid","payload":{}}"#.to_vec()),
        bad("routing_key_too_long", &fanout, "", long_key_body),
        bad("too_many_recipients", &topic, "user.registered", too_many.unwrap()),
        {
            // A body that would route as it is, but says it is compressed: not decoded as if plain.
            let body = serde_json::to_vec(&json!({"user_id": user, "title": "gzipped", "message": "m"})).unwrap();
            let (label, (x, k, b, props)) = bad("unsupported_content_encoding", &fanout, "", body);
            (label, (x, k, b, props.with_content_encoding("gzip".into())))
        },
    ];
    let expected_reason = |label: &str| if label == "non_json" { "invalid_json".to_owned() } else { label.to_owned() };
    // Good and bad interleaved: the good ones behind each bad one must not wait.
    let mut messages = vec![good(0)];
    for (i, (_, m)) in bads.iter().enumerate() {
        messages.push(m.clone());
        messages.push(good(i as u32 + 1));
    }
    broker.publish_all(&messages).await.unwrap();

    for n in 0..=bads.len() {
        let f = tab.notification().await;
        assert_eq!(f["notification"]["title"], format!("good {n}"), "in publish order, none stalled");
    }
    let dlq = amqp.dead_letter_queue();
    eventually("every bad message in the dead-letter queue", WAIT, async || {
        (broker.depth(&dlq).await as usize == bads.len()).then_some(())
    })
    .await;
    let dead = broker.take_all(&dlq).await;
    for (label, (exchange, key, body, _)) in &bads {
        let d = dead
            .iter()
            .find(|d| d.properties.message_id().as_ref().map(|m| m.as_str()) == Some(&format!("bad-{label}")))
            .unwrap_or_else(|| panic!("{label} is not in the dead-letter queue"));
        let headers = d.properties.headers().as_ref().unwrap().inner();
        let header = |k: &str| match headers.get(k) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("{label}: header {k} is {other:?}"),
        };
        assert_eq!(header("x-herald-reason"), expected_reason(label), "{label}");
        assert!(!header("x-herald-error").is_empty(), "{label}");
        assert_eq!(header("x-herald-exchange"), *exchange, "{label}");
        assert_eq!(header("x-herald-routing-key"), *key, "{label}");
        assert_eq!(header("origin"), "test", "{label}: the publisher's headers are kept");
        assert!(matches!(headers.get("x-herald-first-dead-lettered-at"), Some(AMQPValue::Timestamp(_))), "{label}");
        let p = &d.properties;
        let kept = (p.correlation_id(), p.reply_to(), p.priority(), p.kind(), p.app_id(), p.timestamp());
        let want = (&Some("corr".into()), &Some("replies".into()), &Some(7), &Some("kind".into()), &Some("app".into()));
        assert_eq!((kept.0, kept.1, kept.2, kept.3, kept.4), want, "{label}: the publisher's properties are kept");
        assert_eq!(kept.5, &Some(1_700_000_000), "{label}");
        assert_eq!(&d.data, body, "{label}: the body is kept byte for byte");
    }
    assert_eq!(broker.depth(&amqp.queue()).await, 0, "nothing left behind");
    let base = gw.url("");
    for reason in
        ["invalid_json", "invalid_utf8", "missing_user_id", "oversized", "unmatched", "unsupported_content_encoding"]
    {
        let name = format!("herald_amqp_messages_dead_lettered_total{{reason=\"{reason}\"}}");
        assert!(metric(&base, &name).await >= 1.0, "{name} counted");
    }
    tab.silent_for(Duration::from_millis(200)).await;
}

fn kill_9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn kill_9_mid_stream_stores_each_of_10000_events_exactly_once() {
    const USERS: usize = 10;
    const EVENTS: usize = 10_000;
    let Some(amqp) = Amqp::new("kill9").await else { return };
    let config = amqp.config_file(&amqp.dir.path().join("herald.db"));
    let broker = Broker::connect(&amqp.url).await;

    // A first start declares the topology; then the events wait in the queue.
    let (child, base) = spawn_herald_process(&config);
    wait_consuming(&base).await;
    kill_9(child);
    let exchange = amqp.exchange("sgad.notifications");
    let users: Vec<String> = (0..USERS).map(|u| format!("k9-user-{u}")).collect();
    let messages: Vec<_> =
        (0..EVENTS).map(|i| notification(&exchange, &users[i % USERS], &format!("event {i}"))).collect();
    broker.publish_all(&messages).await.unwrap();
    assert_eq!(broker.depth(&amqp.queue()).await as usize, EVENTS);

    // Consume, and SIGKILL in the middle of the stream.
    let (child, base) = spawn_herald_process(&config);
    eventually("a fifth of the events to be acknowledged", SLOW_WAIT, async || {
        (metric(&base, "herald_amqp_messages_acked_total").await >= (EVENTS / 5) as f64).then_some(())
    })
    .await;
    kill_9(child);
    let left = broker.depth(&amqp.queue()).await as usize;
    assert!(left > 0 && left < EVENTS, "killed mid-stream ({left} left)");

    // Start again: the unacknowledged deliveries come back, the committed ones among them are deduplicated.
    let (child, base) = spawn_herald_process(&config);
    assert_exactly_once(&base, &users, EVENTS / USERS, |u, i| format!("event {}", i * USERS + u)).await;
    assert!(metric(&base, "herald_amqp_messages_redelivered_total").await > 0.0, "the kill left deliveries in flight");
    eventually("the queue to be empty", WAIT, async || (broker.depth(&amqp.queue()).await == 0).then_some(())).await;
    let duplicates = metric(&base, "herald_ingest_events_total{transport=\"amqp\",status=\"duplicate\"}").await;
    eprintln!("kill -9 with {left} events left: {duplicates} redelivered events were already committed");
    kill_9(child);
}

/// Publish `messages` in chunks, reconnecting and republishing a chunk until the broker confirms all of it
/// (the consumer deduplicates what a retry republishes).
async fn publish_through_outages(url: String, messages: Vec<(String, String, Vec<u8>, BasicProperties)>) {
    let mut broker = None;
    let mut at = 0;
    while at < messages.len() {
        let b = match &broker {
            Some(b) => b,
            None => match Broker::try_connect(&url).await {
                Ok(b) => broker.insert(b),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let end = (at + 50).min(messages.len());
        match b.publish_all(&messages[at..end]).await {
            Ok(()) => {
                at = end;
                tokio::time::sleep(Duration::from_millis(40)).await; // about 1,000 events a second
            }
            Err(_) => broker = None,
        }
    }
}

async fn rabbitmqctl(node: &str, command: &'static str) {
    let node = node.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("rabbitmqctl").args(["-n", &node, "-q", command]).stdout(Stdio::null()).status()
    })
    .await
    .unwrap()
    .expect("running rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {command} failed");
}

#[tokio::test]
async fn broker_restart_mid_stream_herald_resumes_by_itself_and_loses_nothing() {
    const USERS: usize = 4;
    const EVENTS: usize = 3_000;
    let Some(node) = std::env::var("HERALD_TEST_RABBITMQ_NODE").ok().filter(|n| !n.is_empty()) else {
        eprintln!("SKIPPED: HERALD_TEST_RABBITMQ_NODE is not set (start_rabbitmq in scripts/lib/services.sh sets it)");
        return;
    };
    let Some(amqp) = Amqp::exclusive("restart").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let base = gw.url("");
    let exchange = amqp.exchange("sgad.notifications");
    let users: Vec<String> = (0..USERS).map(|u| format!("restart-user-{u}")).collect();
    let messages: Vec<_> =
        (0..EVENTS).map(|i| notification(&exchange, &users[i % USERS], &format!("event {i}"))).collect();
    let publisher = tokio::spawn(publish_through_outages(amqp.url.clone(), messages));
    eventually("the stream to be flowing", SLOW_WAIT, async || (unread(&base, &users[0]).await >= 100).then_some(()))
        .await;

    rabbitmqctl(&node, "stop_app").await;
    assert!(!publisher.is_finished(), "the broker went away in the middle of the stream");
    // Readiness says the broker is gone, degraded, not unready: everything else keeps serving (and a load balancer
    // routing around every node for a broker outage would stop it).
    let (status, body) = eventually("/readyz to report the broker down", WAIT, async || {
        let (status, body) = readyz(&base).await;
        (body["checks"]["amqp"]["ok"] == false).then_some((status, body))
    })
    .await;
    assert_eq!((status, &body["degraded"]), (200, &json!(["amqp"])), "{body}");
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
    assert!(unread(&base, &users[0]).await > 0, "the inbox answers");
    rabbitmqctl(&node, "start_app").await;

    tokio::time::timeout(SLOW_WAIT, publisher).await.expect("publishing after the restart").unwrap();
    assert_exactly_once(&base, &users, EVENTS / USERS, |u, i| format!("event {}", i * USERS + u)).await;
    wait_consuming(&base).await;
    assert_eq!(readyz(&base).await.0, 200);
    assert_eq!(metric(&base, "herald_amqp_reconnects_total").await, 1.0, "one outage, however many attempts");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_acks_what_it_committed_and_requeues_the_rest() {
    const EVENTS: usize = 5_000;
    let Some(amqp) = Amqp::new("graceful").await else { return };
    let store_url = format!("sqlite://{}", amqp.dir.path().join("kept.db").display());
    let broker = Broker::connect(&amqp.url).await;
    // The first gateway declares the topology; then the events wait in the queue.
    amqp.gateway(|s| s.store.url = store_url.clone()).await.stop().await.unwrap();
    let exchange = amqp.exchange("sgad.notifications");
    let user = "graceful-user";
    let messages: Vec<_> = (0..EVENTS).map(|i| notification(&exchange, user, &format!("event {i}"))).collect();
    broker.publish_all(&messages).await.unwrap();

    let gw = amqp.gateway(|s| s.store.url = store_url.clone()).await;
    let base = gw.url("");
    let lag = format!("herald_amqp_queue_messages{{queue=\"{}\"}}", amqp.queue());
    eventually("the consumer lag to be reported", WAIT, async || (metric(&base, &lag).await > 0.0).then_some(())).await;
    eventually("some events to be stored", SLOW_WAIT, async || (unread(&base, user).await >= 500).then_some(())).await;
    gw.stop().await.unwrap();

    // Read what was stored with a gateway that does not consume.
    let reader = spawn_gateway_with(|s| s.store.url = store_url.clone()).await;
    let stored = unread(&reader.url(""), user).await as usize;
    assert!(stored < EVENTS, "stopped mid-stream");
    // Whatever was committed was acknowledged, and nothing else: the queue holds exactly the rest.
    let depth = eventually("the queue to hold what was not stored", WAIT, async || {
        let depth = broker.depth(&amqp.queue()).await as usize;
        (stored + depth == EVENTS).then_some(depth)
    })
    .await;
    let titles = titles(&reader.url(""), user).await;
    assert_eq!(titles.iter().collect::<HashSet<_>>().len(), stored, "none twice");
    eprintln!("graceful stop: {stored} stored and acknowledged, {depth} left queued");
}

#[tokio::test]
async fn herald_publish_sends_a_fixture_with_publisher_confirms() {
    let Some(amqp) = Amqp::new("cli").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let mut tab = gw.connect("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40").await;
    let publish = |exchange: String| {
        let url = amqp.url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["publish", "--url", &url, "--exchange", &exchange])
                .arg(repo_path("tests/fixtures/events/medtrack-student-created.json"))
                .output()
                .unwrap()
        })
    };
    let out = publish(amqp.exchange("events.topic")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("confirmed"));
    let f = tab.notification().await;
    assert_eq!(f["notification"]["title"], "Welcome to MedTrack, John!");

    let out = publish(amqp.exchange("no-such-exchange")).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fixture that fails does not stop the ones after it (the channel its error closed is reopened); the exit
    // status and the last line say how many failed.
    let mut good = fixture("medtrack-student-created.json");
    good["exchange"] = json!(amqp.exchange("events.topic"));
    good["body"]["payload"]["first_name"] = json!("Jane");
    // Another student (the rule's dedupe key), taught to the same user.
    good["body"]["payload"]["student_id"] = json!("5e1a9c3b-7d2f-4a8e-b6c0-1f3d5a7b9c2e");
    let mut gone = good.clone();
    gone["exchange"] = json!(amqp.exchange("no-such-exchange"));
    let files: Vec<PathBuf> = [("gone.json", &gone), ("good.json", &good)]
        .iter()
        .map(|(name, f)| {
            let path = amqp.dir.path().join(name);
            std::fs::write(&path, f.to_string()).unwrap();
            path
        })
        .collect();
    let missing = amqp.dir.path().join("missing.json");
    let url = amqp.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["publish", "--url", &url])
            .args([&files[0], &missing, &files[1]])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stderr}");
    assert!(stdout.contains("good.json") && stdout.contains("confirmed"), "the last one was published: {stdout}");
    assert!(stderr.contains("gone.json") && stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("missing.json"), "{stderr}");
    assert!(stderr.contains("2 of 3 fixtures failed"), "{stderr}");
    let f = tab.notification().await;
    assert_eq!(f["notification"]["title"], "Welcome to MedTrack, Jane!");
}

/// The connection to the broker is cut after the first file was confirmed: the report still says the first was
/// published, and each later one that it was not, because the connection was lost (before, the whole run ended
/// in one error and the confirmed file's line was lost with it, so a user could not tell what to publish again).
/// The second file is a FIFO, so the publisher is known to wait between the two while the link is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_publish_reports_what_was_confirmed_when_the_connection_drops_midway() {
    let Some(amqp) = Amqp::new("cli_cut").await else { return };
    let _gw = amqp.gateway(|_| {}).await; // declares the exchange
    let mut fixture = fixture("medtrack-student-created.json");
    fixture["exchange"] = json!(amqp.exchange("events.topic"));
    let dir = amqp.dir.path();
    let first = dir.join("first.json");
    std::fs::write(&first, fixture.to_string()).unwrap();
    let blocked = dir.join("blocked.json");
    assert!(Command::new("mkfifo").arg(&blocked).status().unwrap().success());
    let rest = [dir.join("third.json"), dir.join("fourth.json")];
    for f in &rest {
        std::fs::write(f, fixture.to_string()).unwrap();
    }

    // A link to the broker that the test cuts.
    let (head, tail) = amqp.url.split_once('@').unwrap();
    let (broker, path) = tail.split_once('/').unwrap();
    let broker = broker.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{head}@{}/{path}", listener.local_addr().unwrap());
    let link = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(&broker).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });

    let files = [vec![first, blocked.clone()], rest.to_vec()].concat();
    let run = tokio::spawn(async move {
        herald::ingest::amqp::publish_fixtures(&url, Default::default(), &files, None, None).await
    });
    // Opening the FIFO for writing returns once the publisher opened it: the first file is confirmed by then.
    let writer = tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(blocked).unwrap());
    let mut writer = writer.await.unwrap();
    link.abort();
    tokio::time::sleep(Duration::from_millis(300)).await; // the client sees the link closed
    std::io::Write::write_all(&mut writer, fixture.to_string().as_bytes()).unwrap();
    drop(writer);

    let report = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let report = report.expect("the connection was made: a report, not one error");
    let lines: Vec<String> =
        report.iter().map(|r| r.as_ref().map_or_else(|e| format!("{e:#}"), Clone::clone)).collect();
    assert_eq!(report.len(), 4, "{lines:#?}");
    assert!(report[0].is_ok() && lines[0].contains("first.json") && lines[0].contains("confirmed"), "{lines:#?}");
    assert!(report[1].is_err() && lines[1].contains("blocked.json"), "{lines:#?}");
    for (outcome, name) in report[2..].iter().zip(["third.json", "fourth.json"]) {
        let e = format!("{:#}", outcome.as_ref().unwrap_err());
        assert!(e.contains(name) && e.contains("not published: the connection to the broker was lost"), "{e}");
    }
}

#[tokio::test]
async fn a_failing_store_holds_the_batch_and_retries_instead_of_dead_lettering() {
    let Some(amqp) = Amqp::new("store-down").await else { return };
    let db = amqp.dir.path().join("herald.db");
    let store_url = format!("sqlite://{}", db.display());
    let gw = amqp.gateway(|s| s.store.url = store_url.clone()).await;
    let base = gw.url("");
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("sgad.notifications");
    let user = "store-down-user";
    broker.publish_all(&[notification(&exchange, user, "event 0")]).await.unwrap();
    eventually("the first event", WAIT, async || (unread(&base, user).await == 1).then_some(())).await;

    // Another process takes the database's write lock: every commit fails (after SQLite's busy timeout).
    let (release, released) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        // Herald's own writes (its health probe among them) may hold the lock for a moment: wait for it.
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        released.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    let messages: Vec<_> = (1..20).map(|i| notification(&exchange, user, &format!("event {i}"))).collect();
    broker.publish_all(&messages).await.unwrap();
    let body = eventually("the consumer to report the failing inbox", SLOW_WAIT, async || {
        let (_, body) = readyz(&base).await;
        (body["checks"]["amqp"]["ok"] == false).then_some(body)
    })
    .await;
    assert!(body["checks"]["amqp"]["detail"].as_str().unwrap().contains("inbox unavailable"), "{body}");
    assert!(metric(&base, "herald_amqp_store_retries_total").await >= 1.0);
    release.send(()).unwrap();
    locker.join().unwrap();

    assert_exactly_once(&base, &[user.to_owned()], 20, |_, i| format!("event {i}")).await;
    wait_consuming(&base).await;
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "a store error never dead-letters");
    eventually("the queue to be empty", WAIT, async || (broker.depth(&amqp.queue()).await == 0).then_some(())).await;
}

/// A shutdown while the inbox is down returns each held message to the queue once: the consumer is cancelled
/// before anything goes back. Before, the interrupted batch was returned while the consumer was still active, the
/// broker delivered it again at once, and the graceful stop returned it a second time (a quorum queue counted two
/// deliveries against its delivery limit for one shutdown, and the stop waited out a failing commit for them).
#[tokio::test]
async fn a_shutdown_during_an_inbox_outage_returns_each_held_message_to_the_queue_once() {
    const EVENTS: usize = 20;
    let Some(amqp) = Amqp::new("stop-held").await else { return };
    let db = amqp.dir.path().join("herald.db");
    let store_url = format!("sqlite://{}", db.display());
    let gw = amqp
        .gateway(|s| {
            s.store.url = store_url.clone();
            s.amqp.batch_max = 5;
        })
        .await;
    let base = gw.url("");
    wait_consuming(&base).await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("sgad.notifications");
    let user = "stop-held-user";

    // Another process takes the database's write lock: every commit fails.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked.send(()).unwrap();
        released.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    let mut messages: Vec<_> = (0..EVENTS).map(|i| notification(&exchange, user, &format!("event {i}"))).collect();
    // A poison message in the first batch: it goes back with its batch, not dead-lettered before the commit.
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("stop-held-poison".into());
    messages.insert(1, (exchange.clone(), String::new(), b"not json".to_vec(), props));
    broker.publish_all(&messages).await.unwrap();
    eventually("a held batch's commit to be retried", SLOW_WAIT, async || {
        (metric(&base, "herald_amqp_store_retries_total").await >= 1.0).then_some(())
    })
    .await;
    gw.stop().await.unwrap();
    release.send(()).unwrap();
    locker.join().unwrap();

    eventually("every message back in the queue", WAIT, async || {
        (broker.depth(&amqp.queue()).await as usize == EVENTS + 1).then_some(())
    })
    .await;
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "nothing dead-lettered before its batch settled");
    let deliveries: Vec<(String, i64)> = broker
        .take_all(&amqp.queue())
        .await
        .iter()
        .map(|m| {
            let id = m.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default();
            let count = match m.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned()) {
                Some(AMQPValue::LongLongInt(n)) => n,
                Some(AMQPValue::LongInt(n)) => i64::from(n),
                Some(AMQPValue::LongUInt(n)) => i64::from(n),
                _ => 0,
            };
            (id, count)
        })
        .collect();
    assert_eq!(deliveries.len(), EVENTS + 1, "every message is back, none stored or lost");
    let twice: Vec<_> = deliveries.iter().filter(|(_, count)| *count > 1).collect();
    assert!(twice.is_empty(), "returned to the queue more than once by one shutdown: {twice:?}");
    assert!(deliveries.iter().any(|(_, count)| *count == 1), "the held batch was delivered once: {deliveries:?}");
}

/// A poison message whose publisher's headers nearly fill a frame: the dead letter's own headers would take it
/// over `frame_max`, which closes the connection, and its redelivery would do so again with every message beside
/// it. It is dead-lettered with Herald's headers only (`x-herald-headers-dropped` says how much was dropped), and
/// the good messages published with it are stored once.
#[tokio::test]
async fn a_poison_message_with_headers_near_the_frame_size_is_dead_lettered_and_stalls_nothing() {
    let Some(amqp) = Amqp::new("frame-full").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let base = gw.url("");
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("sgad.notifications");
    let user = "frame-full-user";
    // 130,800 bytes of headers: the header frame is ~130.9 KB of RabbitMQ's 131,072 as published. Most of it in a
    // header whose name only looks like Herald's (kept, it overflowed the frame again on every redelivery).
    let mut headers = FieldTable::default();
    headers.insert("big".into(), AMQPValue::LongString(vec![b'x'; 800].into()));
    headers.insert("x-herald-pad".into(), AMQPValue::LongString(vec![b'x'; 130_000].into()));
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("frame-full-poison".into());
    let poison = (exchange.clone(), String::new(), b"not json".to_vec(), props.with_headers(headers));
    let mut messages = vec![notification(&exchange, user, "event 0"), poison];
    messages.extend((1..4).map(|i| notification(&exchange, user, &format!("event {i}"))));
    broker.publish_all(&messages).await.unwrap();

    assert_exactly_once(&base, &[user.to_owned()], 4, |_, i| format!("event {i}")).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the letter", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    let letter = broker.take_all(&dlq).await.pop().unwrap();
    let headers = letter.properties.headers().as_ref().unwrap().inner();
    assert_eq!(headers.get("x-herald-reason"), Some(&AMQPValue::LongString("invalid_json".into())), "{headers:?}");
    assert!(matches!(headers.get("x-herald-headers-dropped"), Some(AMQPValue::LongLongInt(n)) if *n > 130_800));
    assert!(
        !headers.contains_key("big") && !headers.contains_key("x-herald-pad"),
        "the publisher's headers were dropped"
    );
    assert_eq!(letter.data, b"not json", "the body is kept");
    assert_eq!(metric(&base, "herald_amqp_reconnects_total").await, 0.0, "the connection never dropped");
}

/// A panic in the consumer (a bug on its path; here the group commit's caller) ends its session, not the consumer:
/// the broker requeues what it held, the consumer reconnects and stores every event once. Before, the task ended,
/// nothing was consumed again until a restart, and `/readyz` still said "consuming".
#[tokio::test]
async fn a_panic_in_the_consumer_requeues_its_batch_and_the_consumer_carries_on() {
    use herald::inbox::instrumented::{Instrumented, Read};
    let Some(amqp) = Amqp::new("consumer-panic").await else { return };
    let panics = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook: herald::inbox::instrumented::ReadHook = {
        let (panics, armed) = (panics.clone(), armed.clone());
        Arc::new(move |read, _user| {
            if read == Read::Apply && armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panics.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("a bug on the commit path");
            }
            Box::pin(async {})
        })
    };
    let hooks = herald::Hooks { wrap_store: Some(Box::new(move |store| Arc::new(Instrumented::new(store, hook)))) };
    let gw = spawn_gateway_hooked(|s| amqp.configure(s), hooks).await;
    let base = gw.url("");
    wait_consuming(&base).await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("sgad.notifications");
    let user = "consumer-panic-user";
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let messages: Vec<_> = (0..5).map(|i| notification(&exchange, user, &format!("event {i}"))).collect();
    broker.publish_all(&messages).await.unwrap();
    assert_exactly_once(&base, &[user.to_owned()], 5, |_, i| format!("event {i}")).await;
    assert_eq!(panics.load(std::sync::atomic::Ordering::SeqCst), 1, "the commit panicked once");
    assert_eq!(metric(&base, "herald_amqp_consumer_panics_total").await, 1.0);
    wait_consuming(&base).await;
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "a panic dead-letters nothing");
    eventually("the queue to be empty", WAIT, async || (broker.depth(&amqp.queue()).await == 0).then_some(())).await;
}

/// Rules that know `user.registered` only: everything else on the test's exchanges is unmatched.
const NARROW_RULES: &str = r#"
[[rule]]
name = "user-registered"
routing_keys = ["user.registered"]
to = ["/user_id"]
type = "welcome"
title = "Welcome"
content = "Your account is ready."
"#;

/// The rule fix: `student.promoted` now becomes a notification (`student.graduated` still matches nothing).
const FIXED_RULES: &str = r#"
[[rule]]
name = "student-promoted"
routing_keys = ["student.promoted"]
to = ["/user_id"]
type = "info"
title = "Promoted"
content = "{{ level }}"
"#;

const READER_KEY: &str = "dead-letters-reader-key-0123456789";

async fn dead_letters(gw: &Gateway) -> Value {
    let resp = gw.get("/api/v1/admin/dead-letters?limit=100", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn redrive(gw: &Gateway, body: Value) -> (u16, Value) {
    let resp = gw.post("/api/v1/admin/dead-letters/redrive", SERVICE_KEY).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn letter<'a>(list: &'a Value, routing_key: &str) -> &'a Value {
    list["letters"].as_array().unwrap().iter().find(|l| l["routing_key"] == routing_key).unwrap_or_else(|| {
        panic!("no letter with routing key {routing_key}: {list}");
    })
}

/// An unmatched message is listed with its reason, origin and body (twice: listing removes nothing), a re-drive
/// before the fix dead-letters it again (counted, no loop), and after the rule fix a re-drive delivers it
/// exactly once and removes it; an unknown id is `not_found`; the endpoints need the `admin` scope.
#[tokio::test]
async fn dead_letters_are_listed_without_loss_and_redriven_once_after_a_rule_fix() {
    use herald::config::Scope;
    let Some(amqp) = Amqp::new("deadletters").await else { return };
    std::fs::write(&amqp.rules, NARROW_RULES).unwrap();
    let gw = amqp.gateway(|s| s.auth.service_keys.push(scoped("reader", READER_KEY, &[Scope::InboxRead]))).await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("events.topic");
    let promoted = br#"{"user_id": "dl-ana", "level": "second year"}"#;
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("promo-1".into());
    broker.publish(&exchange, "student.promoted", promoted, props).await;
    let graduated = br#"{"user_id": "dl-ana", "note": "no message id"}"#;
    broker.publish(&exchange, "student.graduated", graduated, BasicProperties::default()).await;
    let dlq = amqp.dead_letter_queue();
    eventually("both messages dead-lettered", WAIT, async || (broker.depth(&dlq).await == 2).then_some(())).await;

    // Listed with the reason Herald recorded, the original exchange and routing key, and the body, in the
    // documented shape.
    let doc = crate::openapi::served(&gw).await;
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    crate::openapi::conforms(&doc, "get", "/api/v1/admin/dead-letters", resp).await;
    let list = dead_letters(&gw).await;
    assert_eq!((list["queue"].as_str(), list["total"].as_u64()), (Some(dlq.as_str()), Some(2)), "{list}");
    let l = letter(&list, "student.promoted");
    assert_eq!((l["id"].as_str(), l["reason"].as_str()), (Some("promo-1"), Some("unmatched")), "{l}");
    assert_eq!((l["exchange"].as_str(), l["deaths"].as_u64()), (Some(exchange.as_str()), Some(1)), "{l}");
    assert_eq!(l["body"].as_str().unwrap().as_bytes(), promoted, "{l}");
    assert_eq!((l["body_encoding"].as_str(), l["size"].as_u64()), (Some("utf8"), Some(promoted.len() as u64)));
    assert_eq!(l["body_truncated"], false, "{l}");
    assert!(l["first_dead_lettered_at"].is_string(), "{l}");
    let g = letter(&list, "student.graduated");
    let graduated_id = g["id"].as_str().unwrap().to_owned();
    assert!(graduated_id.starts_with("sha256:"), "no message id: a digest ({g})");

    // Listing removes nothing: both are back in the queue (once the broker applied the requeue), and listed the
    // same again.
    let both_queued =
        async || eventually("both letters queued", WAIT, async || (broker.depth(&dlq).await == 2).then_some(())).await;
    both_queued().await;
    let again = dead_letters(&gw).await;
    let sorted = |v: &Value| {
        let mut ls = v["letters"].as_array().unwrap().clone();
        ls.sort_by_key(|l| l["id"].as_str().unwrap().to_owned());
        ls
    };
    assert_eq!(sorted(&again), sorted(&list), "a second listing shows the same letters");
    both_queued().await;

    // The admin scope is needed, and a selection is required.
    for resp in [
        gw.get("/api/v1/admin/dead-letters", READER_KEY).send().await.unwrap(),
        gw.post("/api/v1/admin/dead-letters/redrive", READER_KEY).json(&json!({"all": true})).send().await.unwrap(),
    ] {
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "insufficient_scope");
    }
    let (status, body) = redrive(&gw, json!({})).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_selection")), "{body}");
    let (status, body) = redrive(&gw, json!({"ids": ["no-such-letter"]})).await;
    assert_eq!((status, body), (200, json!({"results": [{"id": "no-such-letter", "outcome": "not_found"}]})));
    both_queued().await;

    // Re-driven before the fix: both fail again and are dead-lettered again by the consumer, counted.
    let resp = gw.post("/api/v1/admin/dead-letters/redrive", SERVICE_KEY).json(&json!({"all": true})).send();
    let body = crate::openapi::conforms(&doc, "post", "/api/v1/admin/dead-letters/redrive", resp.await.unwrap()).await;
    let mut outcomes: Vec<_> = body["results"].as_array().unwrap().iter().map(|r| r["outcome"].clone()).collect();
    outcomes.dedup();
    assert_eq!((body["results"].as_array().unwrap().len(), outcomes), (2, vec![json!("redriven")]), "{body}");
    let list = eventually("both letters dead-lettered a second time", WAIT, async || {
        let list = dead_letters(&gw).await;
        let twice = list["letters"].as_array().unwrap().iter().filter(|l| l["deaths"] == 2).count();
        (twice == 2).then_some(list)
    })
    .await;
    assert_eq!(letter(&list, "student.graduated")["id"], graduated_id.as_str(), "the digest id is stable");
    assert_eq!(letter(&list, "student.promoted")["first_dead_lettered_at"], l["first_dead_lettered_at"]);
    assert!(titles(&gw.url(""), "dl-ana").await.is_empty(), "nothing stored while no rule matches");

    // The rule fix, then a re-drive of that letter: delivered exactly once, and gone from the queue.
    std::fs::write(&amqp.rules, FIXED_RULES).unwrap();
    let resp = gw.post("/api/v1/admin/rules/reload", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body) = redrive(&gw, json!({"ids": ["promo-1"]})).await;
    assert_eq!((status, body), (200, json!({"results": [{"id": "promo-1", "outcome": "redriven"}]})));
    eventually("the re-driven event stored", WAIT, async || (unread(&gw.url(""), "dl-ana").await >= 1).then_some(()))
        .await;
    // The still-unmatched letter, held by that call, is handed back; the re-driven one is gone.
    eventually("only the still-unmatched letter queued", WAIT, async || (broker.depth(&dlq).await == 1).then_some(()))
        .await;
    let list = dead_letters(&gw).await;
    assert_eq!(list["letters"].as_array().unwrap().len(), 1, "only the still-unmatched letter is left: {list}");
    assert_eq!(list["letters"][0]["id"], graduated_id.as_str());
    let (_, body) = redrive(&gw, json!({"ids": ["promo-1"]})).await;
    assert_eq!(body, json!({"results": [{"id": "promo-1", "outcome": "not_found"}]}), "removed after its re-drive");
    // Settled: the consumer acknowledged everything it was given, and the notification is there once.
    eventually("the main queue drained", WAIT, async || (broker.depth(&amqp.queue()).await == 0).then_some(())).await;
    assert_eq!(titles(&gw.url(""), "dl-ana").await, vec!["Promoted".to_owned()], "delivered exactly once");
    let inbox = gw.inbox("dl-ana").await;
    assert_eq!(inbox["items"][0]["content"], "second year", "the original body was re-driven: {inbox}");
    gw.stop().await.unwrap();
}

/// A large letter is listed with at most the first 64 KiB of its body (cut on a character boundary) and
/// `body_truncated`, `size` the whole body's; its re-drive still republishes the whole body.
/// A broker that stops answering in the middle of a listing or a re-drive (here: a link that goes silent, without
/// closing, once the call's first `basic.get` is sent) gets the call a `503 amqp_unavailable` after the
/// operation's timeout (10 s), not an answer never: a call that never returned also held a graceful shutdown
/// for its whole grace period.
#[tokio::test]
async fn dead_letter_calls_answer_503_when_the_broker_stops_answering_midway() {
    let Some(amqp) = Amqp::new("silent-broker").await else { return };
    let (head, upstream, vhost) = split_amqp_url(&amqp.url);
    // basic.get: class 60, method 70, at the start of a method frame's payload.
    let proxy = tampering_link(upstream.to_owned(), Tamper::FreezeOn(&[0, 60, 0, 70])).await;
    let through_proxy = format!("{head}@{proxy}/{vhost}");
    let gw = amqp.gateway(|s| s.amqp.url = Secret::new(through_proxy)).await;
    for (what, request) in [
        ("a listing", gw.get("/api/v1/admin/dead-letters", SERVICE_KEY)),
        ("a re-drive", gw.post("/api/v1/admin/dead-letters/redrive", SERVICE_KEY).json(&json!({"all": true}))),
    ] {
        let started = std::time::Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(60), request.send()).await.expect(what).unwrap();
        assert_eq!(resp.status(), 503, "{what}");
        assert!(resp.headers().contains_key("retry-after"), "{what}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "amqp_unavailable", "{what}");
        assert!(started.elapsed() >= Duration::from_secs(9), "{what}: answered after the operation's timeout");
    }
}

#[tokio::test]
async fn a_large_dead_letter_is_listed_with_the_beginning_of_its_body_only() {
    let Some(amqp) = Amqp::new("deadlarge").await else { return };
    std::fs::write(&amqp.rules, NARROW_RULES).unwrap();
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    // 200 KiB of two-byte characters after an odd-length prefix: 64 KiB falls in the middle of one.
    let body = format!(r#"{{"user_id": "dl-big", "pad": "{}"}}"#, "é".repeat(100 * 1024));
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("big-1".into());
    broker.publish(&amqp.exchange("events.topic"), "student.promoted", body.as_bytes(), props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the message dead-lettered", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;

    let doc = crate::openapi::served(&gw).await;
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    let list = crate::openapi::conforms(&doc, "get", "/api/v1/admin/dead-letters", resp).await;
    let l = &list["letters"][0];
    let shown = l["body"].as_str().unwrap();
    assert!(shown.len() <= 64 * 1024 && shown.len() > 64 * 1024 - 4, "{}", shown.len());
    assert!(body.starts_with(shown), "the beginning of the body");
    assert_eq!((l["body_truncated"].as_bool(), l["size"].as_u64()), (Some(true), Some(body.len() as u64)));
    assert_eq!(l["body_encoding"], "utf8");
    gw.stop().await.unwrap();
}

/// Without RabbitMQ ingest there is no dead-letter queue: a clear 409; with a broker that cannot be reached,
/// a 503 with `Retry-After`. Neither needs a broker.
#[tokio::test]
async fn dead_letters_answer_409_without_amqp_and_503_when_the_broker_is_unreachable() {
    let gw = spawn_gateway().await;
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "amqp_disabled");
    let resp = gw.post("/api/v1/admin/dead-letters/redrive", SERVICE_KEY).json(&json!({"all": true})).send();
    assert_eq!(resp.await.unwrap().status(), 409);
    let resp = gw.get("/api/v1/admin/dead-letters?limit=0", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 400, "limit is checked");
    // jQuery's cache-buster names nothing, as on every endpoint (it was refused as an unknown parameter).
    let resp = gw.get("/api/v1/admin/dead-letters?limit=5&_=1733450000000", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    gw.stop().await.unwrap();

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = spawn_gateway_with(|s| {
        s.amqp.enabled = true;
        s.amqp.url = Secret::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    })
    .await;
    let resp = gw.get("/api/v1/admin/dead-letters", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "amqp_unavailable", "{body}");
    assert!(!body["message"].as_str().unwrap().contains("guest"), "no URL in the answer: {body}");
    gw.stop().await.unwrap();
}

/// A letter cannot be re-driven while Herald's queue does not exist (deleted under a consumer that waits a minute
/// before it reconnects and declares it again): its re-drive answers `failed`, saying why, and the letter is still
/// there afterwards.
#[tokio::test]
async fn a_letter_that_cannot_be_republished_is_kept_and_reported_failed() {
    let Some(amqp) = Amqp::new("deadfail").await else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.reconnect_min_ms = 120_000;
            s.amqp.reconnect_max_ms = 120_000;
        })
        .await;
    let broker = Broker::connect(&amqp.url).await;
    broker.ch.queue_delete(amqp.queue().as_str().into(), Default::default()).await.unwrap();
    let mut h = FieldTable::default();
    h.insert("x-herald-reason".into(), AMQPValue::LongString("unmatched".into()));
    h.insert("x-herald-exchange".into(), AMQPValue::LongString(amqp.exchange("events.topic").as_str().into()));
    h.insert("x-herald-routing-key".into(), AMQPValue::LongString("student.created".into()));
    let props = BasicProperties::default().with_message_id("orphan".into()).with_headers(h);
    let dlx = format!("{}.dlx", amqp.prefix);
    broker.publish(&dlx, "student.created", b"{}", props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the letter queued", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;

    let (status, body) = redrive(&gw, json!({"all": true})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one outcome per letter: {body}");
    assert_eq!((results[0]["id"].as_str(), results[0]["outcome"].as_str()), (Some("orphan"), Some("failed")));
    let message = results[0]["message"].as_str().unwrap();
    assert!(message.contains("does not exist") && message.contains(&amqp.queue()), "{body}");

    eventually("the letter back in the queue", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    let list = dead_letters(&gw).await;
    let ids: Vec<_> = list["letters"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["orphan"]);
    gw.stop().await.unwrap();
}

/// A letter whose publisher set `user_id` (the broker keeps it on what it dead-letters) is re-driven: the re-drive
/// publishes it without that property, which the broker refuses from another user (406 closed the channel and the
/// letter came back `failed` on every call).
#[tokio::test]
async fn a_letter_carrying_its_publishers_user_id_is_redriven() {
    let Some(node) = std::env::var("HERALD_TEST_RABBITMQ_NODE").ok().filter(|n| !n.is_empty()) else {
        eprintln!("SKIPPED: HERALD_TEST_RABBITMQ_NODE is not set (start_rabbitmq in scripts/lib/services.sh sets it)");
        return;
    };
    let Some(amqp) = Amqp::new("redrive-user-id").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let user = format!("svc-{}", std::process::id());
    for args in [vec!["add_user", &user, "svc-pw"], vec!["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]] {
        let status = Command::new("rabbitmqctl").args(["-n", &node, "-q"]).args(&args).stdout(Stdio::null()).status();
        assert!(status.unwrap().success(), "rabbitmqctl {args:?}");
    }
    let (_, host, vhost) = split_amqp_url(&amqp.url);
    let service = Broker::connect(&format!("amqp://{user}:svc-pw@{host}/{vhost}")).await;
    let mut h = FieldTable::default();
    h.insert("x-herald-reason".into(), AMQPValue::LongString("unmatched".into()));
    h.insert("x-herald-exchange".into(), AMQPValue::LongString(amqp.exchange("events.topic").as_str().into()));
    h.insert("x-herald-routing-key".into(), AMQPValue::LongString("student.created".into()));
    let props = BasicProperties::default()
        .with_message_id("with-user-id".into())
        .with_user_id(user.as_str().into())
        .with_headers(h);
    service.publish(&format!("{}.dlx", amqp.prefix), "student.created", b"{}", props).await;
    let dlq = amqp.dead_letter_queue();
    let broker = Broker::connect(&amqp.url).await;
    eventually("the letter queued", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;

    let (status, body) = redrive(&gw, json!({"ids": ["with-user-id"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "redriven", "{body}");
    let _ = Command::new("rabbitmqctl").args(["-n", &node, "-q", "delete_user", &user]).status();
    gw.stop().await.unwrap();
}

/// A re-drive goes to Herald's queue only: another service's queue bound to the same exchange got the original
/// message once and gets no copy of the re-driven letter, while Herald routes it as first published (exchange and
/// routing key from its headers) and stores it for the right user.
#[tokio::test]
async fn a_redriven_letter_reaches_herald_only_and_no_other_queue_of_its_exchange() {
    use lapin::options::QueueBindOptions;
    let Some(amqp) = Amqp::new("redriveonly").await else { return };
    std::fs::write(&amqp.rules, NARROW_RULES).unwrap();
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    let exchange = amqp.exchange("events.topic");
    // Another service's queue on the same exchange, for the same routing keys.
    let other = format!("{}.other-service", amqp.prefix);
    let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
    broker.ch.queue_declare(other.as_str().into(), exclusive, FieldTable::default()).await.unwrap();
    let bind = QueueBindOptions::default();
    broker
        .ch
        .queue_bind(other.as_str().into(), exchange.as_str().into(), "student.*".into(), bind, FieldTable::default())
        .await
        .unwrap();

    let promoted = br#"{"user_id": "redrive-ana", "level": "third year"}"#;
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("promo-only".into());
    broker.publish(&exchange, "student.promoted", promoted, props).await;
    let dlq = amqp.dead_letter_queue();
    eventually("the message dead-lettered", WAIT, async || (broker.depth(&dlq).await == 1).then_some(())).await;
    assert_eq!(broker.depth(&other).await, 1, "the other service got the original");

    std::fs::write(&amqp.rules, FIXED_RULES).unwrap();
    let resp = gw.post("/api/v1/admin/rules/reload", SERVICE_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body) = redrive(&gw, json!({"ids": ["promo-only"]})).await;
    assert_eq!((status, body), (200, json!({"results": [{"id": "promo-only", "outcome": "redriven"}]})));
    eventually("the re-driven event stored", WAIT, async || {
        (unread(&gw.url(""), "redrive-ana").await >= 1).then_some(())
    })
    .await;
    let inbox = gw.inbox("redrive-ana").await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox["items"][0]["title"], "Promoted", "routed as from its exchange and routing key: {inbox}");
    assert_eq!(inbox["items"][0]["content"], "third year", "{inbox}");
    eventually("the letter removed", WAIT, async || (broker.depth(&dlq).await == 0).then_some(())).await;
    eventually("the main queue drained", WAIT, async || (broker.depth(&amqp.queue()).await == 0).then_some(())).await;

    let got = broker.take_all(&other).await;
    assert_eq!(got.len(), 1, "the other service's queue has the original only, no re-driven copy");
    assert_eq!(got[0].data, promoted);
    assert!(
        got[0].properties.headers().as_ref().is_none_or(|h| !h.contains_key("x-herald-deaths")),
        "that one is the original, not the re-drive"
    );
    gw.stop().await.unwrap();
}

/// A dead letter moved back to Herald's queue by hand, as a queue-to-queue shovel or the management UI's "move
/// messages" does (the default exchange, the queue's name as routing key, the headers kept), is routed as it was
/// first published, from the `x-herald-*` headers: MIGRATING's re-drive dead-lettered it again as `unmatched`.
#[tokio::test]
async fn a_dead_letter_moved_back_by_hand_is_routed_as_first_published() {
    let Some(amqp) = Amqp::new("movedback").await else { return };
    let gw = amqp.gateway(|_| {}).await;
    let broker = Broker::connect(&amqp.url).await;
    let f = fixture("medtrack-student-created.json");
    let mut h = FieldTable::default();
    h.insert("x-herald-reason".into(), AMQPValue::LongString("unresolved_recipient".into()));
    h.insert("x-herald-exchange".into(), AMQPValue::LongString(amqp.exchange("events.topic").as_str().into()));
    h.insert("x-herald-routing-key".into(), AMQPValue::LongString("student.created".into()));
    let props = BasicProperties::default().with_delivery_mode(2).with_headers(h);
    broker.publish("", &amqp.queue(), f["body"].to_string().as_bytes(), props).await;
    let user = f["body"]["payload"]["user_id"].as_str().unwrap();
    let stored = eventually("the moved letter stored", WAIT, async || {
        let items = gw.inbox(user).await["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(stored[0]["event_type"], "student.created", "{stored:?}");
    assert_eq!(broker.depth(&amqp.dead_letter_queue()).await, 0, "not dead-lettered again");
    gw.stop().await.unwrap();
}

/// `HERALD_TEST_AMQPS_URL` and `HERALD_TEST_TLS_CA` (services.sh's `start_rabbitmq`): the test broker's TLS port
/// and the private CA that signed its certificate.
fn amqps(test: &str) -> Option<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(url), Some(ca)) = (var("HERALD_TEST_AMQPS_URL"), var("HERALD_TEST_TLS_CA")) else {
        eprintln!("SKIPPED {test}: HERALD_TEST_AMQPS_URL / HERALD_TEST_TLS_CA are not set (start_rabbitmq sets them)");
        return None;
    };
    Some((url, ca))
}

/// Over a TLS gateway `gw` just started: an event published to the broker reaches its user's session; then a
/// second fixture, written to a file for `herald publish`, and a session of its recipient waiting for it.
async fn consumed_and_ready_to_publish(amqp: &Amqp, gw: &Gateway) -> (PathBuf, Client) {
    let broker = Broker::connect(&amqp.url).await;
    let user = "3e7a1b2c-4d5e-4f6a-8b7c-9d0e1f2a3b4c"; // the fixture's
    let mut tab = gw.connect(user).await;
    amqp.publish_fixture(&broker, "sgad-notification-user.json").await;
    let f = tab.notification().await;
    assert_eq!(f["notification"]["title"], "Disponibilidad Cerrada", "{f}");
    let mut second = fixture("medtrack-student-created.json");
    second["exchange"] = json!(amqp.exchange("events.topic"));
    let file = amqp.dir.path().join("over-tls.json");
    std::fs::write(&file, second.to_string()).unwrap();
    let welcomed = gw.connect("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40").await; // the fixture's recipient
    (file, welcomed)
}

/// `herald publish` of [`consumed_and_ready_to_publish`]'s file succeeded and its notification arrived.
async fn published_and_delivered(out: std::process::Output, welcomed: &mut Client) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("confirmed"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let f = welcomed.notification().await;
    assert_eq!(f["notification"]["title"], "Welcome to MedTrack, John!", "{f}");
}

/// A broker reached over TLS (`amqps://`) whose certificate a private CA signed: with that CA as `amqp.ca_file`
/// Herald consumes, and the event reaches the user's session; without it the certificate is refused and
/// `/readyz` says why. (The redis crate and lapin bring two rustls crypto providers: before one was installed,
/// a TLS client that takes rustls's default panicked.)
#[tokio::test]
async fn a_broker_behind_tls_signed_by_a_private_ca_is_consumed_with_that_ca() {
    let Some(amqp) = Amqp::new("tls").await else { return };
    let Some((url, ca)) = amqps("tls") else { return };
    let gw = amqp
        .gateway(|s| {
            s.amqp.url = Secret::new(url.clone());
            s.amqp.ca_file = ca.clone();
        })
        .await;
    let (file, mut welcomed) = consumed_and_ready_to_publish(&amqp, &gw).await;
    // `herald publish` reaches the same broker over TLS with `--ca-file`, and says why it cannot without it.
    let publish = |with_ca: bool| {
        let (url, ca, file) = (url.clone(), ca.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
            cmd.args(["publish", "--url", &url]).env_remove("HERALD__AMQP__CA_FILE");
            if with_ca {
                cmd.args(["--ca-file", &ca]);
            }
            cmd.arg(&file).output().unwrap()
        })
    };
    let out = publish(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("UnknownIssuer"), "{stderr}");
    let plain = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["publish", "--url", &amqp.url, "--ca-file", &ca])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && stderr.contains("--ca-file is for an amqps:// URL"), "{stderr}");
    published_and_delivered(publish(true).await.unwrap(), &mut welcomed).await;
    gw.stop().await.unwrap();

    // The system's trust store does not know the private CA: no connection, and readiness says so.
    let untrusted = spawn_gateway_with(|s| {
        amqp.configure(s);
        s.amqp.url = Secret::new(url.clone());
    })
    .await;
    // (AMQP is an optional check: the node stays ready for HTTP ingest, with `amqp` degraded.)
    let detail = eventually("the refused certificate in /readyz", SLOW_WAIT, async || {
        let (_, body) = readyz(&untrusted.url("")).await;
        let detail = body["checks"]["amqp"]["detail"].as_str().unwrap_or_default().to_owned();
        (body["checks"]["amqp"]["ok"] == false && detail.contains("disconnected")).then_some(detail)
    })
    .await;
    assert!(detail.contains("UnknownIssuer"), "{detail}");
    assert!(!detail.contains("guest:guest"), "no password in /readyz: {detail}");
}

/// A broker that logs clients in by their TLS certificate (`?auth_mechanism=external`, RabbitMQ's
/// rabbitmq_auth_mechanism_ssl: the user named by the certificate's common name; no password in the URL) and
/// verifies the certificates it is shown. A node whose `amqp.cert_file` holds a certificate no trusted CA signed is
/// refused and says so on `/readyz`; once the files hold a signed certificate and its key it connects without a
/// restart (they are read again at each reconnect), consumes, and the event reaches the user's session.
/// `herald publish` does the same with `--cert-file` and `--key-file`, and says the login was refused without
/// them. (A node configured to log in so without a certificate does not start: `config`'s unit tests.)
#[tokio::test]
async fn a_broker_that_logs_in_by_client_certificate_is_consumed_with_the_configured_one() {
    let Some(amqp) = Amqp::new("mtls").await else { return };
    let Some((url, TestTls { ca, cert, key })) = test_tls("mtls", "HERALD_TEST_AMQPS_EXTERNAL_URL") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed_client(dir.path());
    let gw = spawn_gateway_with(|s| {
        amqp.configure(s);
        s.amqp.url = Secret::new(url.clone());
        s.amqp.ca_file = ca.clone();
        (s.amqp.cert_file, s.amqp.key_file) = (cert_file.clone(), key_file.clone());
    })
    .await;
    let detail = amqp_refused(&gw.url("")).await;
    // (RabbitMQ ends the handshake by closing the connection: the reason shows as a reset. That the certificate
    // was it is shown by what follows: the same node, its files renewed, connects.)
    let own_key = std::fs::read_to_string(&key_file).unwrap();
    assert!(own_key.lines().all(|line| !detail.contains(line)), "no key material in /readyz: {detail}");
    std::fs::copy(&key, &key_file).unwrap();
    std::fs::copy(&cert, &cert_file).unwrap();
    wait_consuming(&gw.url("")).await;

    let (file, mut welcomed) = consumed_and_ready_to_publish(&amqp, &gw).await;
    let publish = |identity: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["publish", "--url", &url, "--ca-file", &ca]).args(identity).arg(&file);
        cmd.env_remove("HERALD__AMQP__CERT_FILE").env_remove("HERALD__AMQP__KEY_FILE");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = publish(&[]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("EXTERNAL"), "refused without a certificate: {stderr}");
    let out = publish(&["--cert-file", &cert]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--key-file: is needed too"), "{stderr}");
    published_and_delivered(publish(&["--cert-file", &cert, "--key-file", &key]).await.unwrap(), &mut welcomed).await;
}

/// Wait until the node reports its AMQP link down, and return what `/readyz` says of it.
async fn amqp_refused(base: &str) -> String {
    eventually("the refused connection in /readyz", SLOW_WAIT, async || {
        let (_, body) = readyz(base).await;
        let detail = body["checks"]["amqp"]["detail"].as_str().unwrap_or_default().to_owned();
        (body["checks"]["amqp"]["ok"] == false && detail.contains("disconnected")).then_some(detail)
    })
    .await
}
