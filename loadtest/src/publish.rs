//! Publishing events into Herald (HTTP ingest or RabbitMQ) on an open-loop schedule.
//!
//! Each event is a `sgad.notifications` fanout notification, `{user_id, title, message, type}`, plus the
//! marker field the receivers read (see `frame`). Its intended send instant is fixed by the [`Schedule`]
//! before it is sent; a sender held up by a slow server still stamps the instant it *should* have sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Semaphore;

use crate::frame::{marker_field, Marker};
use crate::hist::Latency;
use crate::report::Timeline;
use crate::schedule::{mono_ns, sleep_until_ns, Schedule};

/// One event to publish.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub intended_ns: u64,
    /// `None`: a broadcast (`"user_id": "system"`).
    pub user: Option<String>,
}

/// The event body as a service would publish it.
pub fn body(run: u64, e: &Event) -> String {
    let user = e.user.as_deref().unwrap_or("system");
    format!(
        r#"{{"user_id":"{user}","title":"load {seq}","message":"herald-loadtest event {seq} of run {run}","type":"info",{marker}}}"#,
        seq = e.seq,
        marker = marker_field(Marker { run, seq: e.seq, sent_ns: e.intended_ns })
    )
}

/// One RabbitMQ connection and its confirming channel.
pub struct AmqpLink {
    channel: Channel,
    _conn: Connection,
    exchange: String,
    run: u64,
}

pub enum Publisher {
    /// Herald's ingest; with several URLs (nodes of one cluster), requests take them in turn.
    Http {
        client: reqwest::Client,
        urls: Vec<String>,
        next: AtomicUsize,
        auth: String,
        run: u64,
    },
    Amqp(Box<AmqpLink>),
    /// nchan's publisher location: `POST {base}/pub/{user}` (or `/pub/broadcast`), one event per request.
    Nchan {
        client: reqwest::Client,
        base: String,
        run: u64,
    },
}

fn http_client(conns: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "http_timeout".to_string()
    } else if e.is_connect() {
        "http_connect".to_string()
    } else {
        "http_error".to_string()
    }
}

impl Publisher {
    pub fn http(bases: &[&str], exchange: &str, service_key: &str, run: u64, conns: usize) -> Self {
        Publisher::Http {
            client: http_client(conns),
            urls: bases
                .iter()
                .map(|b| format!("{}/api/v1/events?exchange={exchange}", b.trim_end_matches('/')))
                .collect(),
            next: AtomicUsize::new(0),
            auth: format!("Bearer {service_key}"),
            run,
        }
    }

    pub fn nchan(base: &str, run: u64, conns: usize) -> Self {
        Publisher::Nchan { client: http_client(conns), base: base.trim_end_matches('/').to_owned(), run }
    }

    /// One channel with publisher confirms; the fanout exchange is declared durable, as Herald's consumer
    /// expects it.
    pub async fn amqp(url: &str, exchange: &str, declare: bool, run: u64) -> anyhow::Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
        let channel = conn.create_channel().await?;
        if declare {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions { durable: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("declaring the fanout exchange {exchange}"))?;
        }
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher::Amqp(Box::new(AmqpLink { channel, _conn: conn, exchange: exchange.into(), run })))
    }

    /// Publish a batch; `Ok` once Herald (HTTP: 202 after commit) or the broker (confirm) has it.
    pub async fn publish(&self, batch: &[Event]) -> Result<(), String> {
        match self {
            Publisher::Http { client, urls, next, auth, run } => {
                let url = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let payload = if batch.len() == 1 {
                    body(*run, &batch[0])
                } else {
                    let parts: Vec<String> = batch.iter().map(|e| body(*run, e)).collect();
                    format!("[{}]", parts.join(","))
                };
                let resp = client
                    .post(url)
                    .header("authorization", auth)
                    .header("content-type", "application/json")
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                let status = resp.status();
                // Read the body so the connection goes back to the pool.
                let _ = resp.bytes().await;
                if status.as_u16() == 202 {
                    Ok(())
                } else {
                    Err(format!("http_{}", status.as_u16()))
                }
            }
            Publisher::Nchan { client, base, run } => {
                // nchan has no batch publish: one request per event, in order.
                for e in batch {
                    let channel = e.user.as_deref().unwrap_or("broadcast");
                    let resp = client
                        .post(format!("{base}/pub/{channel}"))
                        .header("content-type", "application/json")
                        .body(body(*run, e))
                        .send()
                        .await
                        .map_err(|e| classify(&e))?;
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    // 201: delivered to subscribers; 202: queued, none were subscribed.
                    if status != 201 && status != 202 {
                        return Err(format!("http_{status}"));
                    }
                }
                Ok(())
            }
            Publisher::Amqp(link) => {
                let AmqpLink { channel, exchange, run, .. } = link.as_ref();
                let mut confirms = Vec::with_capacity(batch.len());
                for e in batch {
                    let props = BasicProperties::default()
                        .with_message_id(format!("lt-{run}-{}", e.seq).into())
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2);
                    let c = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            "".into(),
                            BasicPublishOptions::default(),
                            body(*run, e).as_bytes(),
                            props,
                        )
                        .await
                        .map_err(|_| "amqp_publish".to_string())?;
                    confirms.push(c);
                }
                for c in confirms {
                    match c.await {
                        Ok(conf) if conf.is_ack() => {}
                        Ok(_) => return Err("amqp_nack".into()),
                        Err(_) => return Err("amqp_confirm".into()),
                    }
                }
                Ok(())
            }
        }
    }
}

/// How to send: `total` events, `batch` per request, `rate` per second (0 = unbounded), at most
/// `concurrency` requests in flight, for at most `max_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub total: u64,
    pub batch: u64,
    pub rate: f64,
    pub concurrency: usize,
    pub max_secs: f64,
}

#[derive(Debug, Default)]
pub struct Sent {
    pub attempted: u64,
    pub acked: u64,
    pub failed: u64,
    /// Per event: acknowledged.
    pub acked_seqs: Vec<bool>,
    /// Per event: intended send instant (0: not sent).
    pub intended: Vec<u64>,
    /// Intended send instant → acknowledgement, per event.
    pub ack_latency: Latency,
    /// Events sent, over time.
    pub timeline: Timeline,
    pub errors: BTreeMap<String, u64>,
    pub first_ns: u64,
    pub last_ack_ns: u64,
    /// The `max_secs` bound stopped sending before `total`.
    pub cut_short: bool,
    /// How far the sender fell behind the schedule at worst (fixed rate only), ms.
    pub max_lag_ms: f64,
}

/// Send on the schedule. `target(seq)` names the recipient of event `seq`.
pub async fn drive(
    publisher: Arc<Publisher>,
    plan: Plan,
    origin_ns: u64,
    target: impl Fn(u64) -> Option<String>,
    bar: &ProgressBar,
) -> Sent {
    let state = Arc::new(Mutex::new(Sent {
        acked_seqs: vec![false; plan.total as usize],
        intended: vec![0; plan.total as usize],
        timeline: Timeline::new(origin_ns, 100),
        ..Default::default()
    }));
    let start = mono_ns();
    let schedule = Schedule::new(start, plan.rate);
    let deadline = start + (plan.max_secs * 1e9) as u64;
    let sem = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut i = 0;
    while i < plan.total {
        let n = plan.batch.max(1).min(plan.total - i);
        if !schedule.is_unbounded() {
            // A batch leaves when its last event is due; each event keeps its own intended instant.
            sleep_until_ns(schedule.intended(i + n - 1, 0)).await;
        }
        let permit = sem.clone().acquire_owned().await.expect("never closed");
        let now = mono_ns();
        if now >= deadline {
            state.lock().unwrap().cut_short = true;
            break;
        }
        let batch: Vec<Event> =
            (i..i + n).map(|seq| Event { seq, intended_ns: schedule.intended(seq, now), user: target(seq) }).collect();
        {
            let mut s = state.lock().unwrap();
            s.attempted += n;
            for e in &batch {
                s.intended[e.seq as usize] = e.intended_ns;
            }
            s.timeline.record_n(now, n);
            if s.first_ns == 0 {
                s.first_ns = batch[0].intended_ns.min(now);
            }
            if !schedule.is_unbounded() {
                let lag = now.saturating_sub(batch[n as usize - 1].intended_ns) as f64 / 1e6;
                s.max_lag_ms = s.max_lag_ms.max(lag);
            }
        }
        let (p, st, bar) = (publisher.clone(), state.clone(), bar.clone());
        tokio::spawn(async move {
            let r = p.publish(&batch).await;
            let at = mono_ns();
            let mut s = st.lock().unwrap();
            match r {
                Ok(()) => {
                    s.acked += batch.len() as u64;
                    s.last_ack_ns = s.last_ack_ns.max(at);
                    for e in &batch {
                        s.acked_seqs[e.seq as usize] = true;
                        s.ack_latency.record_ns(at.saturating_sub(e.intended_ns));
                    }
                }
                Err(kind) => {
                    s.failed += batch.len() as u64;
                    *s.errors.entry(kind).or_default() += 1;
                }
            }
            bar.inc(batch.len() as u64);
            drop(permit);
        });
        i += n;
    }
    // Wait for the requests still in flight (bounded: the HTTP client times out at 30 s).
    let all = plan.concurrency.max(1) as u32;
    let _ = tokio::time::timeout(Duration::from_secs(40), sem.acquire_many(all)).await;
    let mut s = state.lock().unwrap();
    std::mem::take(&mut *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_fanout_notification_with_the_marker() {
        let e = Event { seq: 5, intended_ns: 123, user: Some("lt-9".into()) };
        let v: serde_json::Value = serde_json::from_str(&body(77, &e)).unwrap();
        assert_eq!(v["user_id"], "lt-9");
        assert_eq!(v["type"], "info");
        assert_eq!(v["herald_lt"], "77:5:123");
        let b = Event { user: None, ..e };
        let v: serde_json::Value = serde_json::from_str(&body(77, &b)).unwrap();
        assert_eq!(v["user_id"], "system");
    }
}
