//! `targeted`: M notifications to random connected users, through HTTP ingest or RabbitMQ, at a fixed rate
//! or unbounded. Delivered/s, lost, duplicated, and latency from the intended send instant to the frame.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{bar, connect_lines, Common, CpuUse, Ctx, Meter};
use crate::client::Target;
use crate::fleet::Fleet;
use crate::plot::Chart;
use crate::pool::Snapshot;
use crate::publish::{drive, Plan, Publisher, Sent};
use crate::recorder::{account, Accounting, Arm};
use crate::report::Timeline;
use crate::report::{kilo, line, per_second, Report};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Via {
    /// POST /api/v1/events (202 after commit).
    Http,
    /// Publish to the fanout exchange with publisher confirms (Herald must run with amqp.enabled=true).
    Amqp,
}

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// Events per second (0: unbounded, as fast as `--concurrency` requests allow).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Events per HTTP request (a JSON array when > 1).
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Requests (or AMQP batches) in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Via::Http)]
    pub via: Via,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Publish over HTTP to this Herald instead of `--url` (sessions stay on `--url`): with two nodes sharing
    /// Redis, what this adds over publishing to `--url` itself is the cross-node hop. Several, comma-separated:
    /// requests take the URLs in turn (ingest split across the nodes of a cluster).
    #[arg(long, value_delimiter = ',')]
    pub publish_url: Vec<String>,
    /// Do not declare the exchange (it must exist).
    #[arg(long)]
    pub amqp_no_declare: bool,
    /// Stop sending after this many seconds even if not all events went out.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
}

#[derive(Args, Debug)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions (one per user).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub connections: u64,
    /// Notifications to send.
    #[arg(short = 'm', long, default_value_t = 100_000)]
    pub events: u64,
    #[command(flatten)]
    pub send: SendArgs,
    /// Seed for picking recipients.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds to wait between the last session ready and the first send (e.g. for a cluster node to finish
    /// subscribing its new users on Redis; until then their events arrive by inbox replay, later).
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
}

pub(super) async fn publisher(ctx: &Ctx, s: &SendArgs) -> anyhow::Result<Arc<Publisher>> {
    let mut urls: Vec<&str> = s.publish_url.iter().map(String::as_str).collect();
    if urls.is_empty() {
        urls.push(&ctx.common.url);
    }
    Ok(Arc::new(match (ctx.common.target, s.via) {
        (Target::Herald, Via::Http) => {
            Publisher::http(&urls, &ctx.common.exchange, &ctx.common.service_key, ctx.run, s.concurrency)
        }
        (Target::Herald, Via::Amqp) => {
            Publisher::amqp(&s.amqp_url, &ctx.common.exchange, !s.amqp_no_declare, ctx.run).await?
        }
        (Target::Nchan, Via::Http) => {
            anyhow::ensure!(urls.len() == 1, "--target nchan publishes to one server");
            Publisher::nchan(urls[0], ctx.run, s.concurrency)
        }
        (Target::Nchan, Via::Amqp) => anyhow::bail!("--target nchan has no AMQP ingest"),
    }))
}

pub(super) struct Collected {
    pub sent: Sent,
    pub snap: Snapshot,
    pub acct: Accounting,
    pub cpu: CpuUse,
}

/// Publish on the plan, wait for the deliveries, account for every event.
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish_and_collect(
    ctx: &Ctx,
    fleet: &mut Fleet,
    publisher: Arc<Publisher>,
    plan: Plan,
    origin: u64,
    target: impl Fn(u64) -> Option<String>,
    expect: u32,
    drain_timeout: f64,
    report: &mut Report,
) -> anyhow::Result<Collected> {
    fleet.arm(Arm { run: ctx.run, events: plan.total, origin_ns: origin, bucket_ms: 100 }).await?;
    ctx.hook(ctx.common.on_measure_start.as_deref());
    let meter = Meter::start(ctx, fleet);
    let b = bar(plan.total, "publishing");
    let sent = drive(publisher, plan, origin, target, &b).await;
    b.finish_and_clear();
    fleet.drain(sent.acked * expect as u64, Duration::from_secs(3), Duration::from_secs_f64(drain_timeout)).await?;
    let cpu = meter.finish(report);
    ctx.hook(ctx.common.on_measure_end.as_deref());
    let snap = fleet.snapshot().await?;
    let acct = account(&snap.deliveries.counts, &sent.acked_seqs, expect);
    Ok(Collected { sent, snap, acct, cpu })
}

/// Report lines about publishing and delivery accounting.
pub(super) fn delivery_lines(c: &Collected, plan: &Plan, report: &mut Report) -> Vec<(String, String)> {
    let s = &c.sent;
    let mut lines = vec![line(
        "published",
        format!(
            "{} acknowledged of {} sent ({} failed){}",
            s.acked,
            s.attempted,
            s.failed,
            if s.cut_short { ", cut short by --duration" } else { "" }
        ),
    )];
    if !s.errors.is_empty() {
        lines.push(line("publish errors", format!("{:?}", s.errors)));
    }
    let publish_rate = per_second(s.acked, s.first_ns, s.last_ack_ns);
    lines.push(line(
        "publish rate",
        format!(
            "{}/s achieved{}",
            kilo(publish_rate),
            if plan.rate > 0.0 {
                format!(" (asked {}/s, worst lag behind schedule {:.1} ms)", kilo(plan.rate), s.max_lag_ms)
            } else {
                String::new()
            }
        ),
    ));
    if plan.rate > 0.0 && publish_rate < plan.rate * 0.95 && !s.cut_short {
        report.notes.push(format!(
            "the publisher reached {publish_rate:.0}/s of the {:.0}/s asked: requests queued behind slow acknowledgements \
             (their latency is counted from the intended instant)",
            plan.rate
        ));
    }
    let a = &c.acct;
    lines.push(line(
        "accounting",
        format!(
            "lost {}, duplicated {}, delivered without an ack {}, foreign frames {}, out of order {}",
            a.lost, a.duplicated, a.delivered_unacked, c.snap.deliveries.foreign, c.snap.out_of_order
        ),
    ));
    if c.snap.dropped > 0 {
        lines.push(line("sessions dropped", c.snap.dropped));
    }
    let ack = s.ack_latency.summary();
    lines.push(line(
        "ack latency",
        format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ack.p50_ms, ack.p99_ms, ack.max_ms),
    ));
    lines.extend(c.cpu.line());
    if let (Some(b), true) = (c.cpu.herald_disk_bytes, s.acked > 0) {
        let per_event = b as f64 / s.acked as f64 / 1024.0;
        lines.push(line(
            "server disk writes",
            format!("{:.1} MiB, {per_event:.1} KiB per acknowledged event", b as f64 / 1048576.0),
        ));
        report.headline("disk_kib_per_event", (per_event * 10.0).round() / 10.0);
    }
    report.headline("publish_per_s", publish_rate.round());
    report.headline("ack_p50_ms", ack.p50_ms);
    report.headline("ack_p99_ms", ack.p99_ms);
    report.headline("lost", a.lost as f64);
    report.headline("duplicated", a.duplicated as f64);
    report.headline("out_of_order", c.snap.out_of_order as f64);
    lines
}

pub async fn run(a: TargetedArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(a.common).await?;
    let mut fleet = ctx.fleet(a.connections).await?;
    let origin = super::origin();
    let out = ctx.connect(&mut fleet, a.connections, false, 0.0, origin).await?;
    let mut report = Report::new(
        "targeted",
        ctx.common.label.clone(),
        &ctx.common.url,
        json!({
            "connections": a.connections, "events": a.events, "rate": a.send.rate, "batch": a.send.batch,
            "concurrency": a.send.concurrency, "via": format!("{:?}", a.send.via).to_lowercase(),
            "workers": fleet.workers(), "target": format!("{:?}", ctx.common.target).to_lowercase(),
            "publish_urls": a.send.publish_url,
        }),
    );
    let mut lines = connect_lines(&out, origin, ctx.herald().as_ref(), &mut report);
    let failed: std::collections::HashSet<u64> = out.failed.iter().copied().collect();
    let users: Vec<u64> = (0..a.connections).filter(|i| !failed.contains(i)).collect();
    anyhow::ensure!(!users.is_empty(), "no session could be opened");
    // Recipients are drawn up front so the choice costs nothing while sending.
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let recipients: Vec<u64> = (0..a.events).map(|_| users[rng.random_range(0..users.len())]).collect();
    let cfg = ctx.pool_config();
    let plan = Plan {
        total: a.events,
        batch: a.send.batch,
        rate: a.send.rate,
        concurrency: a.send.concurrency,
        max_secs: a.send.duration,
    };
    let publisher = publisher(&ctx, &a.send).await?;
    if a.settle > 0.0 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(a.settle)).await;
    }
    let send_origin = super::origin();
    let c = publish_and_collect(
        &ctx,
        &mut fleet,
        publisher,
        plan,
        send_origin,
        |seq| Some(cfg.user(recipients[seq as usize])),
        1,
        a.send.drain_timeout,
        &mut report,
    )
    .await?;

    let d = &c.snap.deliveries;
    let lat = d.latency();
    let ls = lat.summary();
    let delivered_per_s = per_second(c.acct.delivered_expected, c.sent.first_ns, d.last_ns);
    lines.push(line(
        "delivered",
        format!(
            "{} of {} acknowledged: {}/s (first send → last frame)",
            c.acct.delivered_expected,
            c.sent.acked,
            kilo(delivered_per_s)
        ),
    ));
    lines.push(line(
        "latency",
        format!(
            "intended send → frame: p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            ls.p50_ms, ls.p90_ms, ls.p99_ms, ls.p999_ms, ls.max_ms
        ),
    ));
    let slowest = slowest_by_send_time(&c.sent.intended, &d.last_at, send_origin, TAIL_BUCKET_MS);
    lines.push(line("tail by send time", tail_line(&slowest, TAIL_BUCKET_MS, TAIL_SLOW_MS)));
    lines.extend(delivery_lines(&c, &plan, &mut report));
    lines.extend(c.cpu.per("event", c.sent.acked, &mut report));
    report.headline("delivered_per_s", delivered_per_s.round());
    report.headline("p50_ms", ls.p50_ms);
    report.headline("p90_ms", ls.p90_ms);
    report.headline("p99_ms", ls.p99_ms);
    report.headline("p999_ms", ls.p999_ms);
    report.headline("max_ms", ls.max_ms);
    report.results = json!({
        "connect": {"connected": out.connected, "failures": out.failures},
        "sent": {"attempted": c.sent.attempted, "acked": c.sent.acked, "failed": c.sent.failed,
                 "errors": c.sent.errors, "cut_short": c.sent.cut_short, "max_lag_ms": c.sent.max_lag_ms,
                 "ack_latency": c.sent.ack_latency.summary()},
        "delivered": c.acct, "foreign": d.foreign, "out_of_order": c.snap.out_of_order,
        "dropped_sessions": c.snap.dropped,
        "delivered_per_s": delivered_per_s, "latency": ls,
        "cpu": c.cpu,
        "throughput": {"bucket_ms": d.timeline.bucket_ms, "delivered": d.timeline.counts, "sent": c.sent.timeline.counts},
        "slowest_by_send_time": {"bucket_ms": TAIL_BUCKET_MS, "max_ms": slowest},
    });
    let chart = Chart {
        title: format!(
            "targeted via {:?}: {} events to {} sessions{}",
            a.send.via,
            c.sent.acked,
            out.connected,
            if a.send.rate > 0.0 { format!(" at {}/s", kilo(a.send.rate)) } else { " (unbounded)".into() }
        ),
        latency_label: "intended send → frame",
        spectrum: lat.spectrum(),
        rate_label: "events per second",
        series: vec![("sent", c.sent.timeline.rates()), ("delivered", d.timeline.rates())],
    };
    ctx.finish(&report, &lines, Some(chart))
}

/// Width of the windows of send time the tail is reported in, and what counts as a slow delivery there.
const TAIL_BUCKET_MS: u64 = 100;
const TAIL_SLOW_MS: f64 = 10.0;

/// When the tail happened: per `bucket_ms` of intended send instants from `origin_ns`, the slowest delivery (ms)
/// of the events intended then (0: none delivered). A tail made of a few stalls shows as a few tall windows; one
/// spread over the run, as many short ones.
fn slowest_by_send_time(intended: &[u64], last_at: &[u64], origin_ns: u64, bucket_ms: u64) -> Vec<f64> {
    let windows = Timeline::new(origin_ns, bucket_ms);
    let mut slowest: Vec<f64> = Vec::new();
    for (&sent, &at) in intended.iter().zip(last_at) {
        if sent == 0 || at == 0 {
            continue;
        }
        let i = windows.bucket(sent);
        if i >= slowest.len() {
            slowest.resize(i + 1, 0.0);
        }
        let ms = (at.saturating_sub(sent) as f64 / 1e4).round() / 100.0;
        slowest[i] = slowest[i].max(ms);
    }
    slowest
}

/// "3 of 101 windows of 100 ms had a delivery over 10 ms; the slowest, 47.2 ms, sent at 6.2 s".
fn tail_line(slowest: &[f64], bucket_ms: u64, slow_ms: f64) -> String {
    let slow = slowest.iter().filter(|&&ms| ms > slow_ms).count();
    let worst = slowest.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1));
    match worst {
        Some((i, ms)) => format!(
            "{slow} of {} windows of {bucket_ms} ms had a delivery over {slow_ms} ms; the slowest, {ms:.1} ms, sent at {:.1} s",
            slowest.len(),
            (i as u64 * bucket_ms) as f64 / 1000.0
        ),
        None => "nothing delivered".into(),
    }
}

#[cfg(test)]
mod slowest_tests {
    use super::{slowest_by_send_time, tail_line};

    #[test]
    fn the_slowest_delivery_is_kept_per_window_of_send_time_and_unsent_events_are_skipped() {
        let ms = 1_000_000;
        // Sent at 10, 50, 150 and 420 ms (and one never sent); delivered 2, 30, 1 and 5 ms later.
        let intended = [10 * ms, 50 * ms, 150 * ms, 0, 420 * ms];
        let last_at = [12 * ms, 80 * ms, 151 * ms, 7 * ms, 425 * ms];
        let slowest = slowest_by_send_time(&intended, &last_at, 0, 100);
        assert_eq!(slowest, vec![30.0, 1.0, 0.0, 0.0, 5.0]);
        assert_eq!(
            tail_line(&slowest, 100, 10.0),
            "1 of 5 windows of 100 ms had a delivery over 10 ms; the slowest, 30.0 ms, sent at 0.0 s"
        );
        assert_eq!(tail_line(&[], 100, 10.0), "nothing delivered");
    }
}
