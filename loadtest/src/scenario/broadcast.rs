//! `broadcast`: B broadcasts (`user_id: "system"`) to all N sessions; deliveries/s and the latency of the
//! last delivery of each broadcast (when the slowest session got it).

use clap::Args;
use serde_json::json;

use super::targeted::{delivery_lines, publish_and_collect, publisher, SendArgs};
use super::{connect_lines, Common, Ctx};
use crate::hist::Latency;
use crate::plot::Chart;
use crate::publish::Plan;
use crate::report::{kilo, line, per_second, Report};

#[derive(Args, Debug)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions (one per user).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub connections: u64,
    /// Broadcasts to send.
    #[arg(short = 'b', long, default_value_t = 50)]
    pub broadcasts: u64,
    #[command(flatten)]
    pub send: SendArgs,
}

pub async fn run(a: BroadcastArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(a.common).await?;
    let mut fleet = ctx.fleet(a.connections).await?;
    let origin = super::origin();
    let out = ctx.connect(&mut fleet, a.connections, false, 0.0, origin).await?;
    let mut report = Report::new(
        "broadcast",
        ctx.common.label.clone(),
        &ctx.common.url,
        json!({
            "connections": a.connections, "broadcasts": a.broadcasts, "rate": a.send.rate,
            "concurrency": a.send.concurrency, "via": format!("{:?}", a.send.via).to_lowercase(),
            "workers": fleet.workers(), "target": format!("{:?}", ctx.common.target).to_lowercase(),
        }),
    );
    let mut lines = connect_lines(&out, origin, ctx.herald().as_ref(), &mut report);
    anyhow::ensure!(out.connected > 0, "no session could be opened");
    let plan = Plan {
        total: a.broadcasts,
        batch: a.send.batch,
        rate: a.send.rate,
        concurrency: a.send.concurrency,
        max_secs: a.send.duration,
    };
    let publisher = publisher(&ctx, &a.send).await?;
    let c = publish_and_collect(
        &ctx,
        &mut fleet,
        publisher,
        plan,
        super::origin(),
        |_| None,
        out.connected as u32,
        a.send.drain_timeout,
        &mut report,
    )
    .await?;

    let d = &c.snap.deliveries;
    let mut last = Latency::default();
    for (i, &acked) in c.sent.acked_seqs.iter().enumerate() {
        if acked && d.counts[i] > 0 {
            last.record_ns(d.last_at[i].saturating_sub(c.sent.intended[i]));
        }
    }
    let every = d.latency().summary();
    let ls = last.summary();
    let deliveries_per_s = per_second(c.acct.delivered_expected, c.sent.first_ns, d.last_ns);
    lines.push(line(
        "delivered",
        format!(
            "{} of {} expected ({} broadcasts × {} sessions): {}/s (first send → last frame)",
            c.acct.delivered_expected,
            c.sent.acked * out.connected,
            c.sent.acked,
            out.connected,
            kilo(deliveries_per_s)
        ),
    ));
    lines.push(line(
        "last delivery",
        format!(
            "per broadcast, send → slowest session: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ls.p50_ms, ls.p99_ms, ls.max_ms
        ),
    ));
    lines.push(line(
        "every delivery",
        format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", every.p50_ms, every.p99_ms, every.max_ms),
    ));
    lines.extend(delivery_lines(&c, &plan, &mut report));
    lines.extend(c.cpu.per("delivery", c.acct.delivered_expected, &mut report));
    report.headline("deliveries_per_s", deliveries_per_s.round());
    report.headline("last_p50_ms", ls.p50_ms);
    report.headline("last_p99_ms", ls.p99_ms);
    report.headline("every_p99_ms", every.p99_ms);
    report.results = json!({
        "connect": {"connected": out.connected, "failures": out.failures},
        "sent": {"attempted": c.sent.attempted, "acked": c.sent.acked, "failed": c.sent.failed,
                 "errors": c.sent.errors, "ack_latency": c.sent.ack_latency.summary()},
        "delivered": c.acct, "out_of_order": c.snap.out_of_order, "dropped_sessions": c.snap.dropped,
        "deliveries_per_s": deliveries_per_s, "last_delivery": ls, "every_delivery": every,
        "cpu": c.cpu,
        "throughput": {"bucket_ms": d.timeline.bucket_ms, "delivered": d.timeline.counts},
    });
    let chart = Chart {
        title: format!("broadcast: {} broadcasts to {} sessions", c.sent.acked, out.connected),
        latency_label: "send → last delivery of each broadcast",
        spectrum: last.spectrum(),
        rate_label: "deliveries per second",
        series: vec![("delivered", d.timeline.rates())],
    };
    ctx.finish(&report, &lines, Some(chart))
}
