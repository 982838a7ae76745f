//! What one process saw arrive: per-event delivery counts, latency from the intended send instant, the last
//! arrival of each event (broadcasts) and a throughput timeline. Shared by all connection tasks of a pool.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::frame::Marker;
use crate::hist::Latency;
use crate::report::Timeline;

/// What to expect: events `0..events` of run `run`, timed from `origin_ns`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Arm {
    pub run: u64,
    pub events: u64,
    pub origin_ns: u64,
    pub bucket_ms: u64,
}

/// A recorder's findings, mergeable across processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deliveries {
    /// Frames carrying a marker of this run.
    pub delivered: u64,
    /// Notification frames of another run or with no marker.
    pub foreign: u64,
    /// Marker sequence numbers outside `0..events`.
    pub out_of_range: u64,
    /// Latency of every delivery, HDR V2 base64.
    pub latency: String,
    /// Deliveries per event.
    pub counts: Vec<u32>,
    /// Latest arrival per event (0: none), monotonic ns.
    pub last_at: Vec<u64>,
    pub timeline: Timeline,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Deliveries {
    pub fn merge(&mut self, o: &Deliveries) -> anyhow::Result<()> {
        self.delivered += o.delivered;
        self.foreign += o.foreign;
        self.out_of_range += o.out_of_range;
        let mut l = if self.latency.is_empty() { Latency::default() } else { Latency::decode(&self.latency)? };
        if !o.latency.is_empty() {
            l.merge(&Latency::decode(&o.latency)?);
        }
        self.latency = l.encode();
        if o.counts.len() > self.counts.len() {
            self.counts.resize(o.counts.len(), 0);
            self.last_at.resize(o.counts.len(), 0);
        }
        for (i, c) in o.counts.iter().enumerate() {
            self.counts[i] += c;
            self.last_at[i] = self.last_at[i].max(o.last_at.get(i).copied().unwrap_or(0));
        }
        if self.timeline.bucket_ms == 0 {
            self.timeline = o.timeline.clone();
        } else {
            self.timeline.merge(&o.timeline);
        }
        if o.first_ns != 0 && (self.first_ns == 0 || o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        Ok(())
    }

    pub fn latency(&self) -> Latency {
        Latency::decode(&self.latency).unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    arm: Option<Arm>,
    latency: Latency,
    counts: Vec<u32>,
    last_at: Vec<u64>,
    timeline: Timeline,
    delivered: u64,
    foreign: u64,
    out_of_range: u64,
    first_ns: u64,
    last_ns: u64,
}

#[derive(Default)]
pub struct Recorder {
    state: Mutex<State>,
}

impl Recorder {
    /// Start afresh for a new phase.
    pub fn arm(&self, arm: Arm) {
        let mut s = self.state.lock().expect("recorder poisoned");
        *s = State {
            arm: Some(arm),
            counts: vec![0; arm.events as usize],
            last_at: vec![0; arm.events as usize],
            timeline: Timeline::new(arm.origin_ns, arm.bucket_ms),
            ..State::default()
        };
    }

    pub fn on_notification(&self, marker: Option<Marker>, now_ns: u64) {
        let mut s = self.state.lock().expect("recorder poisoned");
        let Some(arm) = s.arm else { return };
        let Some(m) = marker.filter(|m| m.run == arm.run) else {
            s.foreign += 1;
            return;
        };
        let i = m.seq as usize;
        if i >= s.counts.len() {
            s.out_of_range += 1;
            return;
        }
        s.delivered += 1;
        s.counts[i] += 1;
        s.last_at[i] = s.last_at[i].max(now_ns);
        s.latency.record_ns(now_ns.saturating_sub(m.sent_ns));
        s.timeline.record(now_ns);
        if s.first_ns == 0 || now_ns < s.first_ns {
            s.first_ns = now_ns;
        }
        s.last_ns = s.last_ns.max(now_ns);
    }

    pub fn delivered(&self) -> u64 {
        self.state.lock().expect("recorder poisoned").delivered
    }

    pub fn snapshot(&self) -> Deliveries {
        let s = self.state.lock().expect("recorder poisoned");
        Deliveries {
            delivered: s.delivered,
            foreign: s.foreign,
            out_of_range: s.out_of_range,
            latency: s.latency.encode(),
            counts: s.counts.clone(),
            last_at: s.last_at.clone(),
            timeline: s.timeline.clone(),
            first_ns: s.first_ns,
            last_ns: s.last_ns,
        }
    }
}

/// Delivery accounting against what the publisher had acknowledged.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Accounting {
    /// Acknowledged events never delivered (as often as expected).
    pub lost: u64,
    /// Deliveries beyond the expected count.
    pub duplicated: u64,
    /// Events delivered although their publish was not acknowledged (e.g. a timed-out request).
    pub delivered_unacked: u64,
    /// Expected deliveries that arrived.
    pub delivered_expected: u64,
}

/// `expect` deliveries per acknowledged event (1 for targeted, N connected for a broadcast).
pub fn account(counts: &[u32], acked: &[bool], expect: u32) -> Accounting {
    let mut a = Accounting::default();
    for (i, &c) in counts.iter().enumerate() {
        if acked.get(i).copied().unwrap_or(false) {
            a.lost += expect.saturating_sub(c) as u64;
            a.duplicated += c.saturating_sub(expect) as u64;
            a.delivered_expected += c.min(expect) as u64;
        } else if c > 0 {
            a.delivered_unacked += 1;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm() -> Arm {
        Arm { run: 1, events: 4, origin_ns: 0, bucket_ms: 100 }
    }

    #[test]
    fn records_only_this_run_and_in_range() {
        let r = Recorder::default();
        r.arm(arm());
        let m = |run, seq| Some(Marker { run, seq, sent_ns: 1_000_000 });
        r.on_notification(m(1, 0), 3_000_000);
        r.on_notification(m(1, 0), 4_000_000);
        r.on_notification(m(2, 1), 4_000_000);
        r.on_notification(m(1, 9), 4_000_000);
        r.on_notification(None, 4_000_000);
        let d = r.snapshot();
        assert_eq!((d.delivered, d.foreign, d.out_of_range), (2, 2, 1));
        assert_eq!(d.counts, vec![2, 0, 0, 0]);
        assert_eq!(d.last_at[0], 4_000_000);
        let l = d.latency().summary();
        assert_eq!(l.count, 2);
        assert!((l.max_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn merging_two_processes_sums_counts_and_keeps_the_latest_arrival() {
        let (a, b) = (Recorder::default(), Recorder::default());
        a.arm(arm());
        b.arm(arm());
        let m = |seq| Some(Marker { run: 1, seq, sent_ns: 0 });
        a.on_notification(m(1), 5_000_000);
        b.on_notification(m(1), 9_000_000);
        b.on_notification(m(3), 2_000_000);
        let mut d = a.snapshot();
        d.merge(&b.snapshot()).unwrap();
        assert_eq!(d.counts, vec![0, 2, 0, 1]);
        assert_eq!(d.last_at[1], 9_000_000);
        assert_eq!(d.delivered, 3);
        assert_eq!(d.latency().len(), 3);
        assert_eq!((d.first_ns, d.last_ns), (2_000_000, 9_000_000));
        assert_eq!(d.timeline.total(), 3);
    }

    #[test]
    fn accounting_finds_lost_duplicated_and_unacked() {
        let counts = [1, 0, 2, 1, 3];
        let acked = [true, true, true, false, true];
        let a = account(&counts, &acked, 1);
        assert_eq!(a, Accounting { lost: 1, duplicated: 3, delivered_unacked: 1, delivered_expected: 3 });
        // A broadcast to 3 sessions: 2 of 3 arrived for event 0.
        let b = account(&[2, 3], &[true, true], 3);
        assert_eq!((b.lost, b.duplicated, b.delivered_expected), (1, 0, 5));
    }
}
