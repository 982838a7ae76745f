//! `summary`: medians over the rounds in a results directory, next to Herald's goals and the peers' figures
//! (measured on this machine, N = 10,000, one server core, median of 3 rounds; issue 4).

use std::path::PathBuf;

use clap::Args;

use crate::report::{kilo, load_dir, medians};

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Directory of JSON reports (`--json-out` files).
    pub dir: PathBuf,
}

/// One row of the comparison: which label and headline key holds Herald's figure.
struct Row {
    what: &'static str,
    label: &'static str,
    key: &'static str,
    goal: &'static str,
    /// nchan, Sockudo, socket.io, FastAPI.
    peers: [&'static str; 4],
    fmt: fn(f64) -> String,
}

fn kib(x: f64) -> String {
    format!("{x:.2} KiB")
}
fn per_s(x: f64) -> String {
    format!("{}/s", kilo(x))
}
fn ms(x: f64) -> String {
    format!("{x:.2} ms")
}

const ROWS: &[Row] = &[
    Row {
        what: "RSS per idle authenticated session (19,000 sessions)",
        label: "connect-19000",
        key: "rss_per_conn_kib",
        goal: "≤ 6 KiB",
        peers: ["13.1 KiB", "148 KiB", "15.5 KiB", "31 KiB"],
        fmt: kib,
    },
    Row {
        what: "targeted deliveries/s, HTTP ingest, unbounded",
        label: "targeted-http-max",
        key: "delivered_per_s",
        goal: "≥ 45k/s",
        peers: ["31.0k/s", "8.3k/s", "10.7k/s", "4.3k/s"],
        fmt: per_s,
    },
    Row {
        what: "targeted p99, unbounded run",
        label: "targeted-http-max",
        key: "p99_ms",
        goal: "—",
        peers: ["1.9 ms", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "targeted p99 at a fixed rate (HTTP)",
        label: "targeted-http-rate",
        key: "p99_ms",
        goal: "—",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "broadcast deliveries/s (10,000 sessions)",
        label: "broadcast-10000",
        key: "deliveries_per_s",
        goal: "≥ 100k/s",
        peers: ["61k/s", "65k/s", "45k/s", "30k/s"],
        fmt: per_s,
    },
    Row {
        what: "resume of 100 missed, catch-up p99",
        label: "resume-100",
        key: "catch_up_p99_ms",
        goal: "≤ 20 ms",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "resume of 10,000 missed, catch-up p99",
        label: "resume-10000",
        key: "catch_up_p99_ms",
        goal: "—",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "publish → frame p99 at 5,000/s via RabbitMQ",
        label: "targeted-amqp-5000",
        key: "p99_ms",
        goal: "≤ 10 ms",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "two nodes (PostgreSQL + Redis), event posted to the session's node, p99",
        label: "cluster-same-node",
        key: "p99_ms",
        goal: "—",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "two nodes (PostgreSQL + Redis), event posted to the other node, p99",
        label: "cluster-cross-node",
        key: "p99_ms",
        goal: "—",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
];

/// What the Redis hop adds (goal: ≤ 2 ms at p99 on loopback). Both entries share the inbox and the rate, so the
/// hop is what a frame takes after the ingest's acknowledgement (the commit) on the cross-node entry, beyond
/// the same on the same-node entry. The plain difference of the frame latencies is shown too; on a shared core
/// it is mostly the two runs' noise.
fn redis_hop(m: &crate::report::Medians) -> Option<String> {
    let same = &m.get("cluster-same-node")?.1;
    let cross = &m.get("cluster-cross-node")?.1;
    let after_ack = |e: &std::collections::BTreeMap<String, f64>, p: &str| {
        Some(e.get(&format!("{p}_ms"))? - e.get(&format!("ack_{p}_ms"))?)
    };
    let hop = |p: &str| Some(after_ack(cross, p)? - after_ack(same, p)?);
    let plain = |k: &str| Some(cross.get(k)? - same.get(k)?);
    Some(format!(
        "Redis hop (frame after the commit's acknowledgement, cross-node minus same-node): p50 {:+.2} ms, \
         p99 {:+.2} ms (goal ≤ 2 ms at p99); plain difference of frame latency medians: p50 {:+.2} ms, p99 {:+.2} ms",
        hop("p50")?,
        hop("p99")?,
        plain("p50_ms")?,
        plain("p99_ms")?
    ))
}

pub fn run(a: SummaryArgs) -> anyhow::Result<()> {
    let reports = load_dir(&a.dir)?;
    let m = medians(&reports);
    println!("Medians per benchmark ({} reports in {}):\n", reports.len(), a.dir.display());
    for (label, (rounds, keys)) in &m {
        let fields: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={}", trim(*v))).collect();
        println!("- {label} ({rounds} rounds): {}", fields.join(", "));
    }
    println!();
    println!("| measure | goal | Herald (median) | nchan | Sockudo | socket.io | FastAPI |");
    println!("|---|---|---|---|---|---|---|");
    for r in ROWS {
        let herald = match m.get(r.label).and_then(|(n, k)| Some((n, k.get(r.key)?))) {
            Some((n, v)) => format!("{} ({n} rounds)", (r.fmt)(*v)),
            None => "TODO: not measured".into(),
        };
        println!(
            "| {} | {} | {herald} | {} | {} | {} | {} |",
            r.what, r.goal, r.peers[0], r.peers[1], r.peers[2], r.peers[3]
        );
    }
    if let Some(hop) = redis_hop(&m) {
        println!("\n{hop}");
    }
    Ok(())
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
