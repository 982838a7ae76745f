//! Forgetting dedupe keys in key order: the sweep.
//!
//! A dedupe key is 16 bytes of SHA-256 (`DedupeKey`), so the keys of any one age are spread evenly over the
//! whole `dedupe_keys` B-tree. Deleting the expired ones oldest first (through an index by age) rewrites a page
//! of their own for almost every key — as many pages as inserting them did, in steady state (BENCHMARKS.md,
//! "dedupe expiry": 1.01 WAL frames per expired key). The sweep walks the table in key order instead, a
//! stretch of the key space per retention run, deleting what has expired where it passes: each page is
//! rewritten once per pass (0.07 frames per expired key), and no by-age index is kept up on every insert.
//!
//! The sweep follows the clock: it is at position `(now mod PERIOD) / PERIOD` of the key space, so it passes
//! every key once per [`PERIOD`]; a run sweeps from where the last run stopped (kept in `dedupe_sweep`, across
//! restarts) to where the clock is now. A run a whole period or more after the last one (or the first ever, or
//! one whose clock is behind the last) sweeps the whole key space. So a key is forgotten after the window and
//! within one period (and one retention interval) more — never earlier: a step deletes only keys applied
//! before the cutoff.
//!
//! Positions are the first 8 bytes of a key, compared as SQLite compares blobs (bytewise, then the shorter
//! first), so `key > position` holds for every key that starts with it and `key < position` for none.

/// One pass over the whole key space per day.
pub(super) const PERIOD_MS: i64 = 86_400_000;

/// Where the sweep is at `now` (unix ms): the first 8 bytes of a key.
pub(super) fn position(now: i64) -> [u8; 8] {
    let into = now.rem_euclid(PERIOD_MS) as u128;
    (((into << 64) / PERIOD_MS as u128) as u64).to_be_bytes()
}

/// What one run has left to sweep: key ranges `(after, before)`, exclusive both ends; `before` `None` is the end
/// of the key space. An empty `after` starts before every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    pub ranges: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Where this run ends, and its clock (unix ms): kept for the next run.
    pub to: [u8; 8],
    pub at: i64,
}

impl Run {
    /// The run at `now`, given where and when the last one stopped (`None`: no run yet).
    pub fn new(now: i64, last: Option<(Vec<u8>, i64)>) -> Run {
        let to = position(now);
        let whole = |at: [u8; 8]| vec![(at.to_vec(), None), (Vec::new(), Some(at.to_vec()))];
        let ranges = match last {
            Some((from, at)) if (0..PERIOD_MS).contains(&(now - at)) => {
                if from.as_slice() <= to.as_slice() {
                    vec![(from, Some(to.to_vec()))]
                } else {
                    vec![(from, None), (Vec::new(), Some(to.to_vec()))]
                }
            }
            _ => whole(to),
        };
        Run { ranges, to, at: now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_goes_round_the_key_space_once_a_period() {
        assert_eq!(position(0), [0; 8]);
        assert_eq!(position(PERIOD_MS / 2), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(position(PERIOD_MS), [0; 8], "a new pass");
        assert!(position(PERIOD_MS - 1) > [0xff, 0xff, 0xff, 0, 0, 0, 0, 0], "the last millisecond is at the end");
        assert!(position(1_000) < position(2_000));
    }

    #[test]
    fn a_run_within_a_period_sweeps_from_the_last_stop_to_the_clock() {
        let day = 20_000 * PERIOD_MS;
        let at = day + PERIOD_MS / 4;
        let from = position(at).to_vec();
        let run = Run::new(at + 3_600_000, Some((from.clone(), at)));
        assert_eq!(run.ranges, vec![(from, Some(position(at + 3_600_000).to_vec()))]);
    }

    #[test]
    fn a_run_past_the_end_of_the_key_space_wraps_round() {
        let day = 20_000 * PERIOD_MS;
        let at = day + PERIOD_MS - 60_000;
        let from = position(at).to_vec();
        let now = day + PERIOD_MS + 60_000;
        let run = Run::new(now, Some((from.clone(), at)));
        assert_eq!(run.ranges, vec![(from, None), (Vec::new(), Some(position(now).to_vec()))]);
    }

    #[test]
    fn the_first_run_a_late_run_and_a_clock_gone_back_sweep_everything() {
        let now = 20_000 * PERIOD_MS + 5_000;
        let whole = vec![(position(now).to_vec(), None), (Vec::new(), Some(position(now).to_vec()))];
        assert_eq!(Run::new(now, None).ranges, whole, "the first run");
        assert_eq!(Run::new(now, Some((vec![1; 8], now - PERIOD_MS))).ranges, whole, "a period since the last");
        assert_eq!(Run::new(now, Some((vec![1; 8], now + 1))).ranges, whole, "the clock went back");
    }
}
