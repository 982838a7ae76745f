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
fn us(x: f64) -> String {
    format!("{x:.0} µs")
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
        what: "targeted deliveries/s, one event per request, 32 in flight, unbounded",
        label: "targeted-1-max",
        key: "delivered_per_s",
        goal: "≥ 1.0× nchan",
        peers: ["see below", "—", "—", "—"],
        fmt: per_s,
    },
    Row {
        what: "targeted at 2,000/s, one event per request: p99",
        label: "targeted-1-2000",
        key: "p99_ms",
        goal: "≤ 3 ms",
        peers: ["see below", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "targeted at 2,000/s: server CPU per event",
        label: "targeted-1-2000",
        key: "cpu_us_per_event",
        goal: "≤ 100 µs",
        peers: ["see below", "—", "—", "—"],
        fmt: us,
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
        what: "publish → frame p99 at 5,000/s via RabbitMQ, broker pinned off Herald's core",
        label: "targeted-amqp-5000-pinned",
        key: "p99_ms",
        goal: "≤ 10 ms",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "one node on PostgreSQL (fsync on), targeted/s, one event per request, 32 in flight",
        label: "cluster-1node-max",
        key: "delivered_per_s",
        goal: "≥ 5× 2.0k/s",
        peers: ["—", "—", "—", "—"],
        fmt: per_s,
    },
    Row {
        what: "one node on PostgreSQL (fsync on), targeted at 2,000/s, p99",
        label: "cluster-1node-2000",
        key: "p99_ms",
        goal: "≤ 10 ms",
        peers: ["—", "—", "—", "—"],
        fmt: ms,
    },
    Row {
        what: "two nodes on one PostgreSQL (fsync on), ingest split across both, targeted/s",
        label: "cluster-2node-max",
        key: "delivered_per_s",
        goal: "≥ 1.6× one node",
        peers: ["—", "—", "—", "—"],
        fmt: per_s,
    },
    Row {
        what: "one node on PostgreSQL (fsync on), broadcast to 10,000: last delivery p50",
        label: "cluster-1node-broadcast-10000",
        key: "last_p50_ms",
        goal: "—",
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

/// Herald beside nchan, both measured in the same run (`nchan-*` entries): what each goal compares.
struct Pair {
    what: &'static str,
    herald: &'static str,
    nchan: &'static str,
    key: &'static str,
    goal: &'static str,
    fmt: fn(f64) -> String,
}

const PAIRS: &[Pair] = &[
    Pair {
        what: "targeted deliveries/s, 1 event per request, 32 in flight",
        herald: "targeted-1-max",
        nchan: "nchan-targeted-1-max",
        key: "delivered_per_s",
        goal: "≥ 1.0×",
        fmt: per_s,
    },
    Pair {
        what: "targeted at 2,000/s: p50",
        herald: "targeted-1-2000",
        nchan: "nchan-targeted-1-2000",
        key: "p50_ms",
        goal: "—",
        fmt: ms,
    },
    Pair {
        what: "targeted at 2,000/s: p99",
        herald: "targeted-1-2000",
        nchan: "nchan-targeted-1-2000",
        key: "p99_ms",
        goal: "≤ 3 ms",
        fmt: ms,
    },
    Pair {
        what: "targeted at 2,000/s: server CPU per event",
        herald: "targeted-1-2000",
        nchan: "nchan-targeted-1-2000",
        key: "cpu_us_per_event",
        goal: "≤ 100 µs",
        fmt: us,
    },
    Pair {
        what: "targeted at 2,000/s: server CPU",
        herald: "targeted-1-2000",
        nchan: "nchan-targeted-1-2000",
        key: "herald_cpu_percent",
        goal: "—",
        fmt: pct,
    },
    Pair {
        what: "broadcast deliveries/s, 10,000 sessions",
        herald: "broadcast-10000",
        nchan: "nchan-broadcast-10000",
        key: "deliveries_per_s",
        goal: "≥ 1.3×",
        fmt: per_s,
    },
    Pair {
        what: "RSS per idle session, 19,000 sessions",
        herald: "connect-19000",
        nchan: "nchan-connect-19000",
        key: "rss_per_conn_kib",
        goal: "≤ 6 KiB",
        fmt: kib,
    },
];

fn pct(x: f64) -> String {
    format!("{x:.0} %")
}

/// One figure of one entry: the median and how many rounds it came from.
fn figure(m: &crate::report::Medians, label: &str, key: &str) -> Option<(usize, f64)> {
    m.get(label).and_then(|(n, k)| Some((*n, *k.get(key)?)))
}

/// The side-by-side table (None when no nchan entry ran).
fn side_by_side(m: &crate::report::Medians) -> Option<Vec<String>> {
    if !PAIRS.iter().any(|p| m.contains_key(p.nchan)) {
        return None;
    }
    let mut out = vec![
        "| measure (same run) | goal | Herald | nchan | Herald / nchan |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for p in PAIRS {
        let h = figure(m, p.herald, p.key);
        let n = figure(m, p.nchan, p.key);
        let show = |f: Option<(usize, f64)>| match f {
            Some((rounds, v)) => format!("{} ({rounds} rounds)", (p.fmt)(v)),
            None => "—".into(),
        };
        let ratio = match (h, n) {
            (Some((_, h)), Some((_, n))) if n != 0.0 => format!("{:.2}×", h / n),
            _ => "—".into(),
        };
        out.push(format!("| {} | {} | {} | {} | {ratio} |", p.what, p.goal, show(h), show(n)));
    }
    Some(out)
}

/// Pairs of entries that differ in one setting: (what, A, B, key).
const CONTRASTS: &[(&str, &str, &str, &str)] = &[
    ("tracing off vs on, targeted/s, unbounded", "targeted-1-max-trace-off", "targeted-1-max", "delivered_per_s"),
    ("tracing off vs on, p99 at 2,000/s", "targeted-1-2000-trace-off", "targeted-1-2000", "p99_ms"),
    (
        "tracing off vs on, CPU µs per event at 2,000/s",
        "targeted-1-2000-trace-off",
        "targeted-1-2000",
        "cpu_us_per_event",
    ),
    ("RabbitMQ pinned off Herald's core vs unpinned, p99", "targeted-amqp-5000-pinned", "targeted-amqp-5000", "p99_ms"),
    ("two nodes vs one on PostgreSQL, targeted/s", "cluster-2node-max", "cluster-1node-max", "delivered_per_s"),
];

fn contrasts(m: &crate::report::Medians) -> Vec<String> {
    CONTRASTS
        .iter()
        .filter_map(|(what, a, b, key)| {
            let (_, x) = figure(m, a, key)?;
            let (_, y) = figure(m, b, key)?;
            let ratio = if y != 0.0 { format!("{:.2}×", x / y) } else { "—".into() };
            Some(format!("- {what}: {} vs {} ({ratio})", trim(x), trim(y)))
        })
        .collect()
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
        let herald = match figure(&m, r.label, r.key) {
            Some((n, v)) => format!("{} ({n} rounds)", (r.fmt)(v)),
            None => "TODO: not measured".into(),
        };
        println!(
            "| {} | {} | {herald} | {} | {} | {} | {} |",
            r.what, r.goal, r.peers[0], r.peers[1], r.peers[2], r.peers[3]
        );
    }
    if let Some(table) = side_by_side(&m) {
        println!("\nHerald beside nchan, measured in the same run (Herald on core 0, nginx's one worker on core 0):\n");
        for l in table {
            println!("{l}");
        }
    }
    let c = contrasts(&m);
    if !c.is_empty() {
        println!("\nOne setting changed:\n");
        for l in c {
            println!("{l}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{medians, Report};

    fn report(label: &str, key: &str, v: f64) -> Report {
        let mut r = Report::new("targeted", Some(label.into()), "h", serde_json::Value::Null);
        r.headline(key, v);
        r
    }

    #[test]
    fn the_side_by_side_table_divides_herald_by_nchan_from_the_same_run() {
        let m = medians(&[
            report("targeted-1-max", "delivered_per_s", 9_000.0),
            report("nchan-targeted-1-max", "delivered_per_s", 36_000.0),
        ]);
        let t = side_by_side(&m).unwrap();
        let row = t.iter().find(|l| l.contains("32 in flight")).unwrap();
        assert!(row.contains("9.0k/s (1 rounds)") && row.contains("36.0k/s") && row.ends_with("| 0.25× |"), "{row}");
        assert!(side_by_side(&medians(&[report("targeted-1-max", "delivered_per_s", 1.0)])).is_none());
    }

    #[test]
    fn contrasts_compare_entries_that_differ_in_one_setting() {
        let m =
            medians(&[report("targeted-1-2000-trace-off", "p99_ms", 2.0), report("targeted-1-2000", "p99_ms", 4.0)]);
        assert_eq!(contrasts(&m), vec!["- tracing off vs on, p99 at 2,000/s: 2 vs 4 (0.50×)".to_string()]);
    }
}
