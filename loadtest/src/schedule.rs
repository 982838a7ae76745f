//! Time: one monotonic clock shared by every process of a run, and the open-loop send schedule.
//!
//! Latency is measured from the *intended* send instant, never from when a busy sender got round to it: a
//! fixed-rate run computes event `i`'s instant as `start + i / rate` up front, so a stalled server shows up as
//! latency instead of silently slowing the sender down (no coordinated omission).
//!
//! `CLOCK_MONOTONIC` is system-wide on Linux, so a stamp taken by the coordinator can be compared with a
//! receive time taken in a worker process.

use std::time::Duration;

/// Nanoseconds on the system-wide monotonic clock.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until the monotonic clock reads `at_ns` (returns at once if that is past).
pub async fn sleep_until_ns(at_ns: u64) {
    let now = mono_ns();
    if at_ns > now {
        tokio::time::sleep(Duration::from_nanos(at_ns - now)).await;
    }
}

/// When each event is meant to leave.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    /// `None`: unbounded (each event is due as soon as the sender can take it).
    interval_ns: Option<f64>,
}

impl Schedule {
    /// `rate` events per second; 0 or less means unbounded.
    pub fn new(start_ns: u64, rate: f64) -> Self {
        Schedule { start_ns, interval_ns: (rate > 0.0).then(|| 1e9 / rate) }
    }

    pub fn is_unbounded(&self) -> bool {
        self.interval_ns.is_none()
    }

    /// The intended send instant of event `i`; for an unbounded run, `now` (the moment it is taken).
    pub fn intended(&self, i: u64, now: u64) -> u64 {
        match self.interval_ns {
            Some(iv) => self.start_ns + (i as f64 * iv).round() as u64,
            None => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_spaces_events_evenly_from_the_start() {
        let s = Schedule::new(1_000, 1_000.0); // one per millisecond
        assert_eq!(s.intended(0, 999_999), 1_000);
        assert_eq!(s.intended(1, 0), 1_001_000);
        assert_eq!(s.intended(5_000, 0), 5_000_001_000);
        assert!(!s.is_unbounded());
    }

    #[test]
    fn a_late_sender_keeps_the_intended_instant() {
        // The sender wakes up 10 ms late: event 3 is still stamped at its slot, not at "now".
        let s = Schedule::new(0, 1_000.0);
        assert_eq!(s.intended(3, 13_000_000), 3_000_000);
    }

    #[test]
    fn unbounded_stamps_now() {
        let s = Schedule::new(0, 0.0);
        assert!(s.is_unbounded());
        assert_eq!(s.intended(42, 777), 777);
    }

    #[test]
    fn fractional_intervals_do_not_drift() {
        // 3 per second: event 3 is exactly one second in, not 3 × 333,333,333 ns.
        let s = Schedule::new(0, 3.0);
        assert_eq!(s.intended(3, 0), 1_000_000_000);
        assert_eq!(s.intended(300, 0), 100_000_000_000);
    }

    #[test]
    fn the_clock_is_monotonic() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a && a > 0);
    }
}
