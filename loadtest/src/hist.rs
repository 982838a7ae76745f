//! Latency histograms (HDR, microsecond resolution, 3 significant digits) and their summaries.
//!
//! Workers ship histograms to the coordinator in HdrHistogram's V2 encoding (base64), so percentiles are
//! computed on the merged distribution, never averaged across processes.

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked: one hour, in microseconds. Anything above is clamped (and counted).
const HIGHEST_US: u64 = 3_600_000_000;

#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { h: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid bounds") }
    }
}

/// Percentiles in milliseconds, as reports quote them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn record_ns(&mut self, ns: u64) {
        let us = (ns / 1_000).clamp(1, HIGHEST_US);
        self.h.record(us).expect("clamped into range");
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    pub fn merge(&mut self, other: &Latency) {
        self.h.add(&other.h).expect("same bounds");
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1_000.0
    }

    pub fn summary(&self) -> Summary {
        if self.h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.h.len(),
            mean_ms: round3(self.h.mean() / 1_000.0),
            p50_ms: round3(self.quantile_ms(0.50)),
            p90_ms: round3(self.quantile_ms(0.90)),
            p99_ms: round3(self.quantile_ms(0.99)),
            p999_ms: round3(self.quantile_ms(0.999)),
            max_ms: round3(self.h.max() as f64 / 1_000.0),
        }
    }

    /// (percentile, milliseconds) points of the percentile spectrum, for plots.
    pub fn spectrum(&self) -> Vec<(f64, f64)> {
        if self.h.is_empty() {
            return Vec::new();
        }
        // Evenly spaced in "nines": 0, 0.5 (68%), 1 (90%), ... up to 99.999%.
        (0..=50)
            .map(|k| {
                let nines = k as f64 / 10.0;
                let q = 1.0 - 10f64.powf(-nines);
                (q * 100.0, self.quantile_ms(q))
            })
            .collect()
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        V2Serializer::new().serialize(&self.h, &mut buf).expect("serialising into memory");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    pub fn decode(s: &str) -> anyhow::Result<Latency> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).context("histogram: bad base64")?;
        let h: Histogram<u64> =
            Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        let mut out = Latency::default();
        out.h.add(&h).context("histogram bounds")?;
        Ok(out)
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::default();
        for ms in 1..=1_000u64 {
            l.record_ns(ms * 1_000_000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1_000);
        // 3 significant digits: within 0.1 %.
        assert!((s.p50_ms - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p90_ms - 900.0).abs() <= 0.9, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_ms - 1_000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean_ms - 500.5).abs() <= 0.5, "{s:?}");
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Latency::default(), Latency::default(), Latency::default());
        for i in 0..500u64 {
            a.record_ns(i * 10_000);
            all.record_ns(i * 10_000);
            b.record_ns(5_000_000 + i * 70_000);
            all.record_ns(5_000_000 + i * 70_000);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn encoding_round_trips() {
        let mut l = Latency::default();
        for i in 1..10_000u64 {
            l.record_ns(i * i * 13);
        }
        let back = Latency::decode(&l.encode()).unwrap();
        assert_eq!(back.summary(), l.summary());
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_clamped_not_lost() {
        let mut l = Latency::default();
        l.record_ns(10);
        l.record_ns(u64::MAX / 2);
        assert_eq!(l.len(), 2);
        assert!(l.summary().max_ms >= 3_600_000.0 * 0.999);
    }

    #[test]
    fn empty_histogram_summarises_to_zeros() {
        assert_eq!(Latency::default().summary(), Summary::default());
        assert!(Latency::default().spectrum().is_empty());
    }
}
