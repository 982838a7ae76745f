//! `resume`: R sessions disconnect, K notifications each arrive meanwhile, the sessions reconnect with
//! `?since=<last id>`; time from reconnect to the `replayed` frame, and anything missing or duplicated.

use clap::{Args, ValueEnum};
use serde_json::json;

use super::targeted::{publisher, Via};
use super::{bar, connect_lines, Common, Ctx, Meter};
use crate::hist::Latency;
use crate::limits;
use crate::plot::Chart;
use crate::publish::{drive, Plan};
use crate::recorder::{account, Arm};
use crate::report::{kilo, line, per_second, Report};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Kind {
    /// K notifications addressed to each client (R × K rows).
    Targeted,
    /// K broadcasts, missed by every client (K rows).
    Broadcast,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients that disconnect and resume.
    #[arg(short = 'r', long, default_value_t = 1_000)]
    pub clients: u64,
    /// Notifications each client misses.
    #[arg(short = 'k', long, default_value_t = 100)]
    pub missed: u64,
    #[arg(long, value_enum, default_value_t = Kind::Targeted)]
    pub kind: Kind,
    /// Reconnects per second (0: all at once, `--connect-concurrency` at a time).
    #[arg(long, default_value_t = 200.0)]
    pub reconnect_rate: f64,
    /// Events per ingest request while the clients are away.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

pub async fn run(a: ResumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.common.target == crate::client::Target::Herald,
        "resume needs Herald's `since` replay; nchan has no counterpart here"
    );
    let ctx = Ctx::new(a.common).await?;
    let mut fleet = ctx.fleet(a.clients).await?;
    let origin = super::origin();
    let out = ctx.connect(&mut fleet, a.clients, false, 0.0, origin).await?;
    let mut report = Report::new(
        "resume",
        ctx.common.label.clone(),
        &ctx.common.url,
        json!({
            "clients": a.clients, "missed": a.missed, "kind": format!("{:?}", a.kind).to_lowercase(),
            "reconnect_rate": a.reconnect_rate, "workers": fleet.workers(),
        }),
    );
    let mut lines = connect_lines(&out, origin, ctx.herald().as_ref(), &mut report);
    anyhow::ensure!(out.failed.is_empty(), "every client must connect before the resume test");
    fleet.disconnect().await?;

    let events = match a.kind {
        Kind::Targeted => a.clients * a.missed,
        Kind::Broadcast => a.missed,
    };
    let send_origin = super::origin();
    fleet.arm(Arm { run: ctx.run, events, origin_ns: send_origin, bucket_ms: 100 }).await?;
    let send = super::targeted::SendArgs {
        rate: 0.0,
        batch: a.batch,
        concurrency: a.concurrency,
        via: Via::Http,
        amqp_url: String::new(),
        publish_url: Vec::new(),
        amqp_no_declare: true,
        duration: 600.0,
        drain_timeout: 0.0,
    };
    let publisher = publisher(&ctx, &send).await?;
    let plan = Plan { total: events, batch: a.batch, rate: 0.0, concurrency: a.concurrency, max_secs: 600.0 };
    let cfg = ctx.pool_config();
    let clients = a.clients;
    let b = bar(events, "while away");
    let sent = drive(
        publisher,
        plan,
        send_origin,
        |seq| match a.kind {
            // Interleaved, so each inbox's rows are spread over the whole table as in real life.
            Kind::Targeted => Some(cfg.user(seq % clients)),
            Kind::Broadcast => None,
        },
        &b,
    )
    .await;
    b.finish_and_clear();
    anyhow::ensure!(
        sent.failed == 0,
        "{} events were not accepted while the clients were away: {:?}",
        sent.failed,
        sent.errors
    );
    lines.push(line(
        "while away",
        format!(
            "{} {} notifications stored ({}/s)",
            sent.acked,
            format!("{:?}", a.kind).to_lowercase(),
            kilo(per_second(sent.acked, sent.first_ns, sent.last_ack_ns))
        ),
    ));

    let meter = Meter::start(&ctx, &fleet);
    let re_origin = super::origin();
    let back = ctx.connect(&mut fleet, a.clients, true, a.reconnect_rate, re_origin).await?;
    let cpu = meter.finish(&mut report);
    let snap = fleet.snapshot().await?;
    let expect = match a.kind {
        Kind::Targeted => 1,
        Kind::Broadcast => back.connected as u32,
    };
    let acct = account(&snap.deliveries.counts, &sent.acked_seqs, expect);
    let catch_up = Latency::decode(&back.catch_up)?;
    let cs = catch_up.summary();
    let secs = (back.last_ns.saturating_sub(re_origin)) as f64 / 1e9;
    lines.push(line(
        "resumed",
        format!(
            "{} of {} clients reached `replayed` in {secs:.1} s ({} failed)",
            back.connected,
            back.attempted,
            back.failures.values().sum::<u64>()
        ),
    ));
    lines.push(line(
        "catch-up",
        format!(
            "reconnect → replayed: p50 {:.2} ms, p90 {:.2}, p99 {:.2}, max {:.2}",
            cs.p50_ms, cs.p90_ms, cs.p99_ms, cs.max_ms
        ),
    ));
    lines.push(line(
        "replayed",
        format!(
            "{} notifications ({}/s over the reconnect phase)",
            back.replayed,
            kilo(per_second(back.replayed, re_origin, back.last_ns))
        ),
    ));
    lines.push(line(
        "accounting",
        format!("missing {}, duplicated {}, out of order {}", acct.lost, acct.duplicated, snap.out_of_order),
    ));
    lines.extend(cpu.line());
    report.limits.extend(limits::explain_failures(&back.failures, ctx.herald().as_ref()));
    report.headline("catch_up_p50_ms", cs.p50_ms);
    report.headline("catch_up_p99_ms", cs.p99_ms);
    report.headline("catch_up_max_ms", cs.max_ms);
    report.headline("missing", acct.lost as f64);
    report.headline("duplicated", acct.duplicated as f64);
    report.headline("out_of_order", snap.out_of_order as f64);
    report.results = json!({
        "connect": {"connected": out.connected},
        "stored_while_away": sent.acked,
        "resumed": {"attempted": back.attempted, "connected": back.connected, "failures": back.failures},
        "catch_up": cs, "replayed": back.replayed, "delivered": acct, "out_of_order": snap.out_of_order,
        "cpu": cpu,
    });
    let chart = Chart {
        title: format!("resume: {} clients × {} missed ({:?})", a.clients, a.missed, a.kind),
        latency_label: "reconnect → replayed",
        spectrum: catch_up.spectrum(),
        rate_label: "clients caught up per second",
        series: vec![("caught up/s", back.timeline.rates())],
    };
    ctx.finish(&report, &lines, Some(chart))
}
