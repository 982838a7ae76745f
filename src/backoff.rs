//! The one retry backoff: exponential growth from a floor to a cap, with jitter so that many clients retrying
//! the same dead service spread out. Used by the AMQP consumer (reconnects, held commits), the trace writer
//! (refused writes) and the Redis link (reconnects).
//!
//! `delay(n)` for the n-th consecutive failure (1-based; 0 is treated as 1): the step is
//! `min · 2^(n-1)`, capped at `max`, and the wait is drawn uniformly from `[step/2, step]` ("equal jitter": never
//! a tight loop, never more than the cap).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// `max` below `min` is raised to `min`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < min.as_nanos() { min } else { max };
        Backoff { min, max }
    }

    /// The step before jitter for the `attempt`-th consecutive failure.
    pub fn step(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.min.saturating_mul(1 << exp).min(self.max)
    }

    /// The wait for `attempt`, with `unit` in `[0, 1]` choosing where in `[step/2, step]` it falls.
    pub fn delay_at(&self, attempt: u32, unit: f64) -> Duration {
        let step = self.step(attempt);
        step / 2 + (step / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait for `attempt`, jittered at random.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_at(attempt, rand::random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_from_the_floor_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(b.step(0), Duration::from_millis(100));
        assert_eq!(b.step(1), Duration::from_millis(100));
        assert_eq!(b.step(2), Duration::from_millis(200));
        assert_eq!(b.step(5), Duration::from_millis(1600));
        assert_eq!(b.step(20), Duration::from_secs(30));
        assert_eq!(b.step(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_between_half_the_step_and_the_step() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(b.delay_at(5, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay_at(5, 1.0), Duration::from_millis(1600));
        assert_eq!(b.delay_at(5, 0.5), Duration::from_millis(1200));
        assert_eq!(b.delay_at(5, 7.0), Duration::from_millis(1600));
        for attempt in 0..64 {
            let d = b.delay(attempt);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_secs(10), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn a_cap_below_the_floor_is_the_floor() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.step(9), Duration::from_secs(2));
    }
}
