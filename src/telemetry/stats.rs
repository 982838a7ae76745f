//! A JSON snapshot of this node's own metrics (`GET /api/v1/admin/stats`, the admin console's counters and
//! latency chart), read from the Prometheus text the recorder renders for `/metrics`.
//!
//! Invariants: the numbers are exactly what `/metrics` shows at that instant (one render, read here), so the
//! console and Prometheus never disagree; counters are totals since the process started (a reader computes
//! rates from two snapshots); the recorder is process-wide, so in a test binary several gateways share it.
//! metrics-exporter-prometheus has no structured read API, only its text; this reads the subset of the text
//! format it writes (`name{label="v",...} value`, `# ` comments), nothing else.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line of the text format: the family's sample name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text exposition. Lines that do not parse are skipped (the exporter writes none).
fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') { parse_labels(body)? } else { (Vec::new(), rest) };
    // The value, then an optional timestamp (the exporter writes none).
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `k="v",k2="v\"2"}` → the labels and what follows the `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &rest[end?..];
    }
}

/// The node's counters and delivery latency, as the admin console shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// When the snapshot was taken (RFC 3339).
    pub at: chrono::DateTime<chrono::Utc>,
    /// Events this node took in over HTTP and AMQP, whatever became of them (`events_by_outcome` plus
    /// `events_refused`).
    pub events_received: u64,
    /// Events ingested, by outcome (the counter's `status` label: `stored`, `duplicate`, `unmatched`, `ignored`, `purged`, `live`,
    /// `unresolved_recipient`).
    pub events_by_outcome: BTreeMap<String, u64>,
    /// Events refused with a 4xx (HTTP) or dead-lettered (AMQP) for what they contained.
    pub events_refused: u64,
    /// Notifications committed to the inbox (targeted and broadcast).
    pub notifications_stored: u64,
    /// Live notifications written to this node's sessions.
    pub deliveries: u64,
    /// Notifications sent to sessions from the inbox (replay after a reconnect, resync).
    pub replayed: u64,
    /// AMQP messages this node dead-lettered, all reasons.
    pub dead_lettered: u64,
    /// Sessions open on this node now.
    pub sessions_open: u64,
    /// Users with at least one session on this node now.
    pub users_online: u64,
    /// Time from a notification's commit to its write on a session.
    pub delivery_latency: Latency,
}

/// A latency histogram: Prometheus's cumulative buckets and the quantiles estimated from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    /// Observations in all.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
    /// Cumulative: `count` observations took at most `le` seconds. The last bucket (`+Inf`) is `count` itself
    /// and is not listed.
    pub buckets: Vec<Bucket>,
    /// Median, 90th and 99th percentile in seconds, interpolated within a bucket as PromQL's
    /// `histogram_quantile` does; null with no observation.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Upper bound, in seconds.
    pub le: f64,
    /// Observations at most `le` (cumulative).
    pub count: u64,
}

/// Sessions and users online, which the registry knows (not the scrape-time gauges).
pub struct Online {
    pub sessions: u64,
    pub users: u64,
}

/// The snapshot of a rendered exposition.
pub fn snapshot(text: &str, online: Online) -> Stats {
    let samples = parse(text);
    let total = |name: &str| -> u64 {
        samples.iter().filter(|s| s.name == name).map(|s| s.value).sum::<f64>().max(0.0).round() as u64
    };
    let mut events_by_outcome = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "herald_ingest_events_total") {
        let outcome = s.label("status").unwrap_or("unknown").to_owned();
        *events_by_outcome.entry(outcome).or_insert(0) += s.value.max(0.0).round() as u64;
    }
    let events_refused = total("herald_ingest_errors_total");
    Stats {
        at: chrono::Utc::now(),
        events_received: events_by_outcome.values().sum::<u64>() + events_refused,
        events_by_outcome,
        events_refused,
        notifications_stored: total("herald_notifications_stored_total"),
        deliveries: total("herald_notifications_delivered_total"),
        replayed: total("herald_notifications_replayed_total"),
        dead_lettered: total("herald_amqp_messages_dead_lettered_total"),
        sessions_open: online.sessions,
        users_online: online.users,
        delivery_latency: histogram(&samples, "herald_delivery_latency_seconds"),
    }
}

/// A histogram family, its label sets added up (buckets share bounds: the recorder sets them per name).
fn histogram(samples: &[Sample], name: &str) -> Latency {
    let bucket_name = format!("{name}_bucket");
    let mut bounds: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // f64 bits of `le` (positive: ordered) → (le, count)
    for s in samples.iter().filter(|s| s.name == bucket_name) {
        let Some(le) = s.label("le").and_then(|l| if l == "+Inf" { Some(f64::INFINITY) } else { l.parse().ok() })
        else {
            continue;
        };
        if le.is_finite() && le >= 0.0 {
            bounds.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
    }
    let sum =
        |suffix: &str| samples.iter().filter(|s| s.name == format!("{name}{suffix}")).map(|s| s.value).sum::<f64>();
    let count = sum("_count").max(0.0).round() as u64;
    let buckets: Vec<Bucket> =
        bounds.into_values().map(|(le, c)| Bucket { le, count: c.max(0.0).round() as u64 }).collect();
    Latency {
        count,
        sum_seconds: sum("_sum"),
        p50: quantile(0.5, &buckets, count),
        p90: quantile(0.9, &buckets, count),
        p99: quantile(0.99, &buckets, count),
        buckets,
    }
}

/// PromQL's `histogram_quantile`: linear within the bucket the rank falls in, the first bucket starting at 0;
/// a rank past the last finite bound answers that bound (the `+Inf` bucket has no upper end to interpolate to).
pub fn quantile(q: f64, buckets: &[Bucket], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut prev = (0.0, 0u64);
    for b in buckets {
        if b.count as f64 >= rank {
            let in_bucket = (b.count - prev.1) as f64;
            let frac = if in_bucket > 0.0 { (rank - prev.1 as f64) / in_bucket } else { 1.0 };
            return Some(prev.0 + (b.le - prev.0) * frac);
        }
        prev = (b.le, b.count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP herald_ingest_events_total Events ingested.
# TYPE herald_ingest_events_total counter
herald_ingest_events_total{transport="http",status="stored",key="svc"} 7
herald_ingest_events_total{transport="amqp",status="stored",key=""} 3
herald_ingest_events_total{transport="http",status="unmatched",key="a \"quoted\", key"} 2
herald_ingest_errors_total{transport="amqp",reason="invalid_json"} 1
herald_notifications_stored_total{kind="targeted"} 9
herald_notifications_stored_total{kind="broadcast"} 1
herald_notifications_delivered_total 12
herald_amqp_messages_dead_lettered_total{reason="unmatched"} 4
# TYPE herald_delivery_latency_seconds histogram
herald_delivery_latency_seconds_bucket{le="0.001"} 2
herald_delivery_latency_seconds_bucket{le="0.005"} 6
herald_delivery_latency_seconds_bucket{le="0.01"} 10
herald_delivery_latency_seconds_bucket{le="+Inf"} 10
herald_delivery_latency_seconds_sum 0.035
herald_delivery_latency_seconds_count 10
"#;

    #[test]
    fn counters_are_added_up_across_their_labels() {
        let s = snapshot(TEXT, Online { sessions: 2, users: 1 });
        assert_eq!(s.events_by_outcome, BTreeMap::from([("stored".into(), 10), ("unmatched".into(), 2)]));
        assert_eq!((s.events_received, s.events_refused), (13, 1));
        assert_eq!((s.notifications_stored, s.deliveries, s.dead_lettered), (10, 12, 4));
        assert_eq!((s.sessions_open, s.users_online, s.replayed), (2, 1, 0));
    }

    #[test]
    fn a_label_value_may_hold_escaped_quotes_and_commas() {
        let s = parse_line(r#"m{a="x \"y\", z",b="2"} 5"#).unwrap();
        assert_eq!(s.labels, vec![("a".into(), "x \"y\", z".into()), ("b".into(), "2".into())]);
        assert_eq!(s.value, 5.0);
    }

    #[test]
    fn latency_quantiles_interpolate_within_the_bucket_as_promql_does() {
        let l = snapshot(TEXT, Online { sessions: 0, users: 0 }).delivery_latency;
        assert_eq!((l.count, l.buckets.len()), (10, 3));
        assert_eq!(l.buckets[1], Bucket { le: 0.005, count: 6 });
        // Rank 5 of 10 falls in (0.001, 0.005], which holds observations 3 to 6: three quarters of the way.
        assert!((l.p50.unwrap() - 0.004).abs() < 1e-12, "{:?}", l.p50);
        assert!((l.p99.unwrap() - 0.009875).abs() < 1e-12, "{:?}", l.p99);
    }

    #[test]
    fn no_observation_has_no_quantile() {
        let l = snapshot("", Online { sessions: 0, users: 0 }).delivery_latency;
        assert_eq!((l.count, l.p50, l.p99), (0, None, None));
        assert!(l.buckets.is_empty());
    }

    #[test]
    fn a_rank_past_the_last_bound_answers_that_bound() {
        let b = [Bucket { le: 0.1, count: 1 }];
        assert_eq!(quantile(0.99, &b, 4), Some(0.1));
    }
}
