//! How fast one user may change their inbox (`server.user_writes_per_second`, `server.user_writes_burst`) and read
//! it (`server.user_reads_per_second`, `server.user_reads_burst`). Every change goes through the store's one writer
//! (one per node, and one database for all), so a user token looping on batches or preferences would slow
//! everyone's notifications; every read takes one of the store's few read connections, which sessions share, so a
//! token looping on lists (a filtered one may walk many of the user's rows) would stall everyone's reads and replays.
//! Keyed by user, for user tokens only (a service key is the operator's own), per node; a request that costs more
//! (a batch, a body of preferences, a filtered list) counts more, up to the burst; over the rate,
//! `429 rate_limited` with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;
use crate::auth::Principal;

/// Checks between two sweeps of users idle long enough to be back at a full burst.
const SWEEP_EVERY: u64 = 4096;

/// What a [`UserRate`] limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Reads,
    Writes,
}

impl Budget {
    pub fn noun(self) -> &'static str {
        match self {
            Budget::Reads => "reads",
            Budget::Writes => "changes",
        }
    }
}

pub struct UserRate {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    burst: NonZeroU32,
    checks: AtomicU64,
    budget: Budget,
}

impl UserRate {
    /// `per_second` 0: no limit.
    pub fn new(budget: Budget, per_second: u32, burst: u32) -> UserRate {
        let rate = NonZeroU32::new(per_second);
        let burst = NonZeroU32::new(burst).or(rate).unwrap_or(NonZeroU32::MIN);
        let limiter = rate.map(|rate| DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)));
        UserRate { limiter, burst, checks: AtomicU64::new(0), budget }
    }

    /// One read or change of `user`'s inbox, now: allowed, or `429` saying when to retry.
    pub fn check(&self, user: &str) -> Result<(), ApiError> {
        self.charge(user, 1)
    }

    /// `n` reads' or changes' worth of `user`'s inbox by `principal`: a user token's count against the rate, a
    /// service key's nothing (the operator's own).
    pub fn charge_for(&self, principal: &Principal, user: &str, n: usize) -> Result<(), ApiError> {
        match principal {
            Principal::User { .. } => self.charge(user, u32::try_from(n).unwrap_or(u32::MAX)),
            Principal::Service { .. } => Ok(()),
        }
    }

    /// `n` reads' or changes' worth (a batch of ids, a body of preferences, a filtered list: what the store will
    /// do for the request), now; at most the burst is charged, so a request the burst allows is never refused for
    /// good.
    pub fn charge(&self, user: &str, n: u32) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let Some(n) = NonZeroU32::new(n) else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Users whose bucket is full again hold nothing worth keeping: memory follows the active users.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let n = n.min(self.burst);
        match limiter.check_key_n(&user.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                Err(ApiError::RateLimited { retry_after_secs, budget: self.budget })
            }
            Err(_) => Err(ApiError::RateLimited { retry_after_secs: 1, budget: self.budget }),
        }
    }
}

/// A `resume` on a session is one of its user's reads (the session module cannot see the API: it asks this).
impl crate::session::ReadBudget for UserRate {
    fn take(&self, user: &str) -> bool {
        self.charge(user, 1).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_burst_waits_and_others_do_not() {
        let writes = UserRate::new(Budget::Writes, 1, 3);
        for _ in 0..3 {
            writes.check("alice").unwrap();
        }
        match writes.check("alice") {
            Err(ApiError::RateLimited { retry_after_secs, budget: Budget::Writes }) => {
                assert!((1..=2).contains(&retry_after_secs))
            }
            other => panic!("the fourth change within a second: {other:?}"),
        }
        writes.check("bob").expect("another user has their own burst");
        assert!(writes.charge("carol", 2).is_ok() && writes.charge("carol", 2).is_err(), "a weight counts its changes");
        assert!(writes.charge("dave", 50).is_ok(), "charged at most the burst: allowed once it is full");
        let off = UserRate::new(Budget::Reads, 0, 0);
        for _ in 0..1000 {
            off.check("alice").expect("0: no limit");
        }
    }
}
