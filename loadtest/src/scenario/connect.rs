//! `connect`: open N authenticated sessions, measure connects/s and Herald's resident memory per idle session.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{connect_lines, Common, Ctx};
use crate::hist::Latency;
use crate::plot::Chart;
use crate::report::{line, per_second, Report};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions to open.
    #[arg(short = 'n', long, default_value_t = 1_000)]
    pub connections: u64,
    /// Seconds to let Herald settle before reading its RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Further seconds to keep the sessions open (idle) before closing; they must all survive.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

pub async fn run(a: ConnectArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(a.common).await?;
    let before = ctx.herald();
    let mut fleet = ctx.fleet(a.connections).await?;
    let origin = super::origin();
    let out = ctx.connect(&mut fleet, a.connections, false, 0.0, origin).await?;
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let after = ctx.herald();
    if a.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }
    let snap = fleet.snapshot().await?;

    let mut report = Report::new(
        "connect",
        ctx.common.label.clone(),
        &ctx.common.url,
        json!({
            "connections": a.connections, "settle_secs": a.settle, "hold_secs": a.hold,
            "workers": fleet.workers(), "sources": ctx.pool_config().sources.map(|s| s.count_for(a.connections)),
            "connect_concurrency": ctx.common.connect_concurrency,
            "target": format!("{:?}", ctx.common.target).to_lowercase(),
        }),
    );
    let mut lines = connect_lines(&out, origin, after.as_ref(), &mut report);
    lines.push(line(
        "processes",
        format!(
            "{} worker(s), {} source address(es), descriptor limit {} per process",
            fleet.workers(),
            ctx.pool_config().sources.map(|s| s.count_for(a.connections)).unwrap_or(1),
            ctx.fd_limit
        ),
    ));
    let connects_per_s = per_second(out.connected, origin, out.last_ns);
    let hs = Latency::decode(&out.handshake)?;
    report.headline("connections", out.connected as f64);
    report.headline("connects_per_s", connects_per_s.round());
    report.headline("handshake_p99_ms", hs.summary().p99_ms);
    let mut rss = serde_json::Value::Null;
    if let (Some(b), Some(af)) = (before, after) {
        if out.connected > 0 {
            let per = (af.rss_kib as f64 - b.rss_kib as f64) / out.connected as f64;
            let per_anon = (af.rss_anon_kib as f64 - b.rss_anon_kib as f64) / out.connected as f64;
            report.headline("rss_per_conn_kib", (per * 100.0).round() / 100.0);
            lines.push(line(
                "server RSS",
                format!(
                    "{} KiB → {} KiB: {per:.2} KiB per idle session ({per_anon:.2} KiB anonymous)",
                    b.rss_kib, af.rss_kib
                ),
            ));
            lines.push(line("server fds", format!("{} of {}", af.fds, af.fd_limit)));
            rss = json!({"before": b, "after": af, "per_conn_kib": per, "per_conn_anon_kib": per_anon});
        }
    } else {
        report.notes.push("no --server-pid: Herald's memory was not measured".into());
    }
    lines.push(line("still open", format!("{} (dropped by the server: {})", snap.open, snap.dropped)));
    if snap.dropped > 0 {
        report.notes.push(format!("{} sessions ended while idle", snap.dropped));
    }
    report.results = json!({
        "attempted": out.attempted, "connected": out.connected, "failures": out.failures,
        "connect_secs": (out.last_ns.saturating_sub(origin)) as f64 / 1e9,
        "connects_per_s": connects_per_s, "handshake": hs.summary(), "herald": rss,
        "open_at_end": snap.open, "dropped": snap.dropped,
    });
    let chart = Chart {
        title: format!("connect: {} sessions", out.connected),
        latency_label: "attempt → ready frame",
        spectrum: hs.spectrum(),
        rate_label: "sessions ready per second",
        series: vec![("ready/s", out.timeline.rates())],
    };
    ctx.finish(&report, &lines, Some(chart))
}
