//! Reports: what a run prints for a person and writes for a machine (`--json-out`), throughput timelines,
//! and the median-of-rounds table `summary` builds from a results directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Events per fixed-width time bucket, from an origin every process of the run shares.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    pub origin_ns: u64,
    pub bucket_ms: u64,
    pub counts: Vec<u64>,
}

impl Timeline {
    pub fn new(origin_ns: u64, bucket_ms: u64) -> Self {
        Timeline { origin_ns, bucket_ms: bucket_ms.max(1), counts: Vec::new() }
    }

    pub fn record(&mut self, at_ns: u64) {
        self.record_n(at_ns, 1);
    }

    pub fn record_n(&mut self, at_ns: u64, n: u64) {
        let i = self.bucket(at_ns);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
    }

    /// The bucket an instant falls in (instants before the origin fall in the first).
    pub fn bucket(&self, at_ns: u64) -> usize {
        (at_ns.saturating_sub(self.origin_ns) / (self.bucket_ms * 1_000_000)) as usize
    }

    /// Add another timeline with the same origin and bucket width.
    pub fn merge(&mut self, other: &Timeline) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// (seconds since origin, events per second) per bucket.
    pub fn rates(&self) -> Vec<(f64, f64)> {
        let w = self.bucket_ms as f64 / 1_000.0;
        self.counts.iter().enumerate().map(|(i, c)| (i as f64 * w, *c as f64 / w)).collect()
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Events per second over an interval in nanoseconds (0 when the interval is empty).
pub fn per_second(count: u64, from_ns: u64, to_ns: u64) -> f64 {
    if to_ns <= from_ns {
        return 0.0;
    }
    count as f64 / ((to_ns - from_ns) as f64 / 1e9)
}

/// One run of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Groups the rounds of one standard-set entry (`--label`).
    pub label: Option<String>,
    pub herald: String,
    pub started_unix: u64,
    pub params: Value,
    /// The few numbers tables quote; the rest is in `results`.
    pub headline: BTreeMap<String, f64>,
    pub results: Value,
    /// Limits of this machine or of the tool (not Herald) that bounded the run, in plain words.
    pub limits: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, label: Option<String>, herald: &str, params: Value) -> Self {
        Report {
            scenario: scenario.into(),
            label,
            herald: herald.into(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            params,
            headline: BTreeMap::new(),
            results: Value::Null,
            limits: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn headline(&mut self, key: &str, value: f64) {
        self.headline.insert(key.into(), value);
    }

    pub fn print(&self, lines: &[(String, String)]) {
        let title = match &self.label {
            Some(l) => format!("{} ({l})", self.scenario),
            None => self.scenario.clone(),
        };
        println!("── {title} against {} ──", self.herald);
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in lines {
            println!("  {k:<width$}  {v}");
        }
        for l in &self.limits {
            println!("  LIMIT: {l}");
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }
}

/// Shorthand for report lines.
pub fn line(k: &str, v: impl std::fmt::Display) -> (String, String) {
    (k.to_owned(), v.to_string())
}

/// `12345.6` → `12.3k`.
pub fn kilo(x: f64) -> String {
    if x >= 1_000.0 {
        format!("{:.1}k", x / 1_000.0)
    } else {
        format!("{x:.0}")
    }
}

/// Per label: how many rounds, and the median of each headline number.
pub type Medians = BTreeMap<String, (usize, BTreeMap<String, f64>)>;

/// Medians of every headline number, per label, over all reports in a directory.
pub fn medians(reports: &[Report]) -> Medians {
    let mut by_label: BTreeMap<String, Vec<&Report>> = BTreeMap::new();
    for r in reports {
        let label = r.label.clone().unwrap_or_else(|| r.scenario.clone());
        by_label.entry(label).or_default().push(r);
    }
    by_label
        .into_iter()
        .map(|(label, rs)| {
            let mut keys: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
                for (k, v) in &r.headline {
                    keys.entry(k.clone()).or_default().push(*v);
                }
            }
            let meds = keys.into_iter().filter_map(|(k, vs)| median(&vs).map(|m| (k, m))).collect();
            (label, (rs.len(), meds))
        })
        .collect()
}

pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Report>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        match serde_json::from_str::<Report>(&text) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("skipping {}: {e}", path.display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn per_second_over_nanoseconds() {
        assert_eq!(per_second(500, 0, 250_000_000), 2_000.0);
        assert_eq!(per_second(5, 10, 10), 0.0);
    }

    #[test]
    fn timeline_buckets_merges_and_converts_to_rates() {
        let mut a = Timeline::new(1_000_000_000, 100);
        a.record(1_000_000_000); // bucket 0
        a.record(1_050_000_000); // bucket 0
        a.record(1_250_000_000); // bucket 2
        a.record(999); // before the origin: bucket 0
        assert_eq!(a.counts, vec![3, 0, 1]);
        let mut b = Timeline::new(1_000_000_000, 100);
        b.record_n(1_450_000_000, 5);
        a.merge(&b);
        assert_eq!(a.counts, vec![3, 0, 1, 0, 5]);
        assert_eq!(a.total(), 9);
        let r = a.rates();
        assert_eq!(r[0], (0.0, 30.0));
        assert!((r[4].0 - 0.4).abs() < 1e-9);
        assert_eq!(r[4].1, 50.0);
    }

    #[test]
    fn medians_group_rounds_by_label() {
        let mk = |label: &str, v: f64| {
            let mut r = Report::new("targeted", Some(label.into()), "h", Value::Null);
            r.headline("delivered_per_s", v);
            r
        };
        let rs = vec![mk("a", 1.0), mk("a", 9.0), mk("a", 5.0), mk("b", 7.0)];
        let m = medians(&rs);
        assert_eq!(m["a"].0, 3);
        assert_eq!(m["a"].1["delivered_per_s"], 5.0);
        assert_eq!(m["b"].1["delivered_per_s"], 7.0);
    }

    #[test]
    fn kilo_formatting() {
        assert_eq!(kilo(31_000.0), "31.0k");
        assert_eq!(kilo(950.4), "950");
    }
}
