//! Log lines that repeat on every request during an outage, bounded: a 503 storm must not become a logging
//! incident (a store outage made every refused request write two or three lines, thousands a second).
//!
//! One [`ThrottledKinds`] per call site, a throttle per kind there (a reason, a status; `()` for a line of one
//! kind): the first occurrence is logged in full at once; the repeats within [`WINDOW`] of it are counted,
//! not logged; the first occurrence after the window is logged in full again and says how many were not
//! (`... (and N more like it in the last 12 s, not logged)`, and `suppressed = N` as a field). Repeats that no
//! later occurrence reports (the outage ended inside the window) are reported by [`flush`], which `serve` runs
//! every [`WINDOW`] (and, as it returns, for every window): one line per call site,
//! `<its line>: N more like it in the last S s, not logged`, at the site's level. Metrics are not throttled:
//! their counters count every occurrence.
//!
//! ```ignore
//! static FAILED: ThrottledKinds<4> = ThrottledKinds::new(Level::WARN, "it failed", WINDOW);
//! if let Some(repeats) = FAILED.admit(reason) {
//!     tracing::warn!(reason, suppressed = repeats.suppressed(), "it failed{repeats}");
//! }
//! ```
//!
//! Lock-free and allocation-free: a window's start and its count are two atomics, and a suppressed occurrence
//! is a load and an add (a hash and a probe of a fixed table for [`ThrottledKinds`]). Counts are exact under
//! contention: an occurrence racing the one that opens a new window is counted in the next summary instead.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::Level;

/// How long the repeats of a logged line are counted instead of logged.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What a logged occurrence says about the ones before it that were not logged. Displays as nothing when
/// there were none, else as ` (and N more like it in the last S s, not logged)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    suppressed: u64,
    /// From the previous logged occurrence to this one.
    over: Duration,
}

impl Repeats {
    /// How many occurrences were not logged since the previous logged one, if any (a field's value: `None`
    /// records nothing).
    pub fn suppressed(&self) -> Option<u64> {
        (self.suppressed > 0).then_some(self.suppressed)
    }
}

impl fmt::Display for Repeats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.suppressed {
            0 => Ok(()),
            n => write!(f, " (and {n} more like it in the last {} s, not logged)", self.over.as_secs()),
        }
    }
}

/// Milliseconds since the process's first throttled occurrence, plus one (0 stands for "never").
fn ticks(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// One window: when it opened and what it suppressed since. Its length is its owner's.
struct Window {
    /// [`ticks`] of the last logged occurrence; 0 before the first.
    opened: AtomicU64,
    /// Occurrences not logged since.
    suppressed: AtomicU64,
}

impl Window {
    const fn new() -> Self {
        Window { opened: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    fn admit(&self, window_ms: u64, now: Instant) -> Option<Repeats> {
        let now = ticks(now);
        let opened = self.opened.load(Ordering::Acquire);
        // `now` may be before `opened` (read before another thread opened the window): within it.
        if opened != 0 && now.saturating_sub(opened) < window_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // The window is over (or none was open): one caller opens the next and logs; the others are its repeats.
        // The count is taken before the window opens, so what callers add once it is open is the new window's:
        // taken after, a repeat counted between the two was reported by the line it followed (and missing from
        // the next report). A caller that does not open the window gives back what it took.
        let suppressed = self.suppressed.swap(0, Ordering::AcqRel);
        if self.opened.compare_exchange(opened, now, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.suppressed.fetch_add(suppressed + 1, Ordering::AcqRel);
            return None;
        }
        let over = if opened == 0 { Duration::ZERO } else { Duration::from_millis(now.saturating_sub(opened)) };
        Some(Repeats { suppressed, over })
    }

    /// The repeats of a window open for at least `min_age_ms` that no occurrence has reported yet, taken (the
    /// next logged occurrence does not count them again), with how long ago the window opened.
    fn take_unreported(&self, min_age_ms: u64, now: Instant) -> Option<(u64, u64)> {
        let now = ticks(now);
        let opened = self.opened.load(Ordering::Acquire);
        let age = now.saturating_sub(opened);
        if opened == 0 || age < min_age_ms || self.suppressed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let taken = self.suppressed.swap(0, Ordering::AcqRel);
        (taken > 0).then_some((taken, age))
    }
}

/// A call site's log line throttled per kind (a reason, a status, a reason and a service key's id: a bounded
/// set): a flood of one kind does not hide the first of another. Up to `N` kinds each get a window of their own,
/// claimed on first use; any more share one.
pub struct ThrottledKinds<const N: usize> {
    level: Level,
    /// The line's message, which its [`flush`] summary repeats.
    line: &'static str,
    window_ms: u64,
    /// Whether [`flush`] knows this call site (it is told on the site's first logged occurrence).
    registered: AtomicBool,
    /// A kind's hash (never 0) and its window; 0 while unclaimed.
    slots: [(AtomicU64, Window); N],
    overflow: Window,
}

impl<const N: usize> ThrottledKinds<N> {
    /// A throttle for the line `line`, logged at `level` (which its summaries use too).
    pub const fn new(level: Level, line: &'static str, window: Duration) -> Self {
        ThrottledKinds {
            level,
            line,
            window_ms: window.as_millis() as u64,
            registered: AtomicBool::new(false),
            slots: [const { (AtomicU64::new(0), Window::new()) }; N],
            overflow: Window::new(),
        }
    }

    /// `Some` when this occurrence of `kind` is to be logged (with what the ones before it that were not add up
    /// to); `None` when it is counted instead, and reported by the next logged occurrence or by [`flush`].
    pub fn admit(&'static self, kind: impl Hash) -> Option<Repeats> {
        let admitted = self.admit_at(kind, Instant::now());
        if admitted.is_some()
            && !self.registered.load(Ordering::Relaxed)
            && !self.registered.swap(true, Ordering::AcqRel)
        {
            sites().lock().unwrap_or_else(|e| e.into_inner()).push(self);
        }
        admitted
    }

    /// [`ThrottledKinds::admit`] at `now`.
    pub fn admit_at(&self, kind: impl Hash, now: Instant) -> Option<Repeats> {
        self.window(kind).admit(self.window_ms, now)
    }

    /// `kind`'s window: its slot, claimed if it has none yet, or the shared one once every slot is taken.
    fn window(&self, kind: impl Hash) -> &Window {
        // Fixed keys: the same kind finds the same slot in every call, without allocating.
        let mut hasher = std::hash::DefaultHasher::new();
        kind.hash(&mut hasher);
        let hash = hasher.finish().max(1);
        let start = (hash % N.max(1) as u64) as usize;
        for i in 0..N {
            let (claimed, window) = &self.slots[(start + i) % N];
            match claimed.load(Ordering::Acquire) {
                h if h == hash => return window,
                0 => match claimed.compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return window,
                    Err(h) if h == hash => return window,
                    Err(_) => {}
                },
                _ => {}
            }
        }
        &self.overflow
    }

    /// What this site's windows suppressed and no occurrence reported, taken: the sum over its kinds and the
    /// oldest window's age; only windows that are over unless `all` (the process is stopping). `None` when there
    /// is nothing to report.
    fn take_unreported_at(&self, now: Instant, all: bool) -> Option<(u64, Duration)> {
        let min_age_ms = if all { 0 } else { self.window_ms };
        let windows = self.slots.iter().map(|(_, w)| w).chain(std::iter::once(&self.overflow));
        let (total, oldest) = windows
            .filter_map(|w| w.take_unreported(min_age_ms, now))
            .fold((0, 0), |(total, oldest), (n, age)| (total + n, oldest.max(age)));
        (total > 0).then(|| (total, Duration::from_millis(oldest)))
    }
}

/// A call site [`flush`] reports for.
trait Site: Sync {
    fn level(&self) -> Level;
    fn line(&self) -> &'static str;
    fn take_unreported_at(&self, now: Instant, all: bool) -> Option<(u64, Duration)>;
}

impl<const N: usize> Site for ThrottledKinds<N> {
    fn level(&self) -> Level {
        self.level
    }
    fn line(&self) -> &'static str {
        self.line
    }
    fn take_unreported_at(&self, now: Instant, all: bool) -> Option<(u64, Duration)> {
        ThrottledKinds::take_unreported_at(self, now, all)
    }
}

/// Every call site that has logged a line: a handful of statics, each registered once.
fn sites() -> &'static Mutex<Vec<&'static dyn Site>> {
    static SITES: OnceLock<Mutex<Vec<&'static dyn Site>>> = OnceLock::new();
    SITES.get_or_init(Default::default)
}

/// Log, for each call site, the repeats that its windows now over (every window, when `all`: the process is
/// stopping) suppressed and that no later occurrence reported (an outage that ended inside the window):
/// `<line>: N more like it in the last S s, not logged`, at the site's level, with `suppressed = N`. Returns
/// how many lines it logged.
pub fn flush(all: bool) -> usize {
    let now = Instant::now();
    // Collected before logging: no lock held while a subscriber writes.
    let pending: Vec<_> = {
        let sites = sites().lock().unwrap_or_else(|e| e.into_inner());
        sites
            .iter()
            .filter_map(|s| s.take_unreported_at(now, all).map(|(n, over)| (s.level(), s.line(), n, over)))
            .collect()
    };
    for &(level, line, n, over) in &pending {
        let s = over.as_secs();
        match level {
            Level::ERROR => tracing::error!(suppressed = n, "{line}: {n} more like it in the last {s} s, not logged"),
            Level::WARN => tracing::warn!(suppressed = n, "{line}: {n} more like it in the last {s} s, not logged"),
            Level::INFO => tracing::info!(suppressed = n, "{line}: {n} more like it in the last {s} s, not logged"),
            Level::DEBUG => tracing::debug!(suppressed = n, "{line}: {n} more like it in the last {s} s, not logged"),
            _ => tracing::trace!(suppressed = n, "{line}: {n} more like it in the last {s} s, not logged"),
        }
    }
    pending.len()
}

/// Run [`flush`] every [`WINDOW`] until `shutdown` (`serve` flushes every window once more as it returns).
pub async fn flush_every_window(shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(WINDOW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => { flush(false); }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    /// Now, once the throttles' clock has started (an instant before its start would read as its start).
    fn start() -> Instant {
        ticks(Instant::now());
        Instant::now()
    }

    #[test]
    fn the_first_occurrence_is_logged_its_repeats_in_the_window_counted_and_the_next_after_it_says_how_many() {
        let throttle = ThrottledKinds::<1>::new(Level::INFO, "a line", TEN_S);
        let t0 = start();
        let first = throttle.admit_at((), t0).expect("the first occurrence is logged");
        assert_eq!((first.suppressed(), first.to_string()), (None, String::new()), "nothing to summarise yet");
        for ms in [0, 1, 500, 5_000, 9_000] {
            assert_eq!(throttle.admit_at((), t0 + Duration::from_millis(ms)), None, "a repeat {ms} ms in is counted");
        }
        let next = throttle.admit_at((), t0 + Duration::from_secs(12)).expect("the first after the window is logged");
        assert_eq!(next.suppressed(), Some(5));
        assert_eq!(next.to_string(), " (and 5 more like it in the last 12 s, not logged)");
        // A new window opened at 12 s: its repeats are counted from zero.
        assert_eq!(throttle.admit_at((), t0 + Duration::from_secs(13)), None);
        let after = throttle.admit_at((), t0 + Duration::from_secs(30)).unwrap();
        assert_eq!((after.suppressed(), after.to_string().contains("and 1 more")), (Some(1), true));
        // A quiet line logs each occurrence, with nothing to summarise.
        assert_eq!(throttle.admit_at((), t0 + Duration::from_secs(45)).unwrap().suppressed(), None);
    }

    #[test]
    fn each_kind_has_its_own_window_so_a_flood_of_one_does_not_hide_the_first_of_another() {
        let throttle = ThrottledKinds::<4>::new(Level::INFO, "a line", TEN_S);
        let t0 = start();
        assert!(throttle.admit_at(("store_unavailable", "dev"), t0).is_some());
        for _ in 0..100 {
            assert!(throttle.admit_at(("store_unavailable", "dev"), t0).is_none());
        }
        assert!(throttle.admit_at(("store_unavailable", "billing"), t0).is_some(), "another key's first");
        assert!(throttle.admit_at(("invalid_json", "dev"), t0).is_some(), "another reason's first");
        let later = throttle.admit_at(("store_unavailable", "dev"), t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(later.suppressed(), Some(100));
        // More kinds than slots share one window: still bounded, still counted.
        assert!(throttle.admit_at(("d", ""), t0).is_some());
        assert!(throttle.admit_at(("e", ""), t0).is_some(), "the shared window's first");
        assert!(throttle.admit_at(("f", ""), t0).is_none(), "a repeat of the shared window");
        assert_eq!(throttle.admit_at(("e", ""), t0 + Duration::from_secs(11)).unwrap().suppressed(), Some(1));
    }

    #[test]
    fn repeats_no_later_occurrence_reports_are_taken_once_the_window_is_over_and_not_counted_again() {
        let throttle = ThrottledKinds::<2>::new(Level::INFO, "a line", TEN_S);
        let t0 = start();
        assert!(throttle.admit_at("a", t0).is_some());
        assert!(throttle.admit_at("b", t0 + Duration::from_secs(2)).is_some());
        for _ in 0..3 {
            assert!(throttle.admit_at("a", t0 + Duration::from_secs(1)).is_none());
        }
        assert!(throttle.admit_at("b", t0 + Duration::from_secs(3)).is_none());
        assert_eq!(throttle.take_unreported_at(t0 + Duration::from_secs(5), false), None, "no window is over yet");
        assert_eq!(
            throttle.take_unreported_at(t0 + Duration::from_secs(11), false),
            Some((3, Duration::from_secs(11))),
            "a's window is over: its 3 repeats; b's window still runs"
        );
        assert_eq!(throttle.take_unreported_at(t0 + Duration::from_secs(11), false), None, "taken once");
        assert_eq!(
            throttle.take_unreported_at(t0 + Duration::from_secs(11), true),
            Some((1, Duration::from_secs(9))),
            "stopping: every window's repeats, b's too"
        );
        // The next logged occurrence does not count what the flush reported.
        let next = throttle.admit_at("a", t0 + Duration::from_secs(12)).unwrap();
        assert_eq!(next.suppressed(), None);
    }

    #[test]
    fn a_registered_site_s_unreported_repeats_are_logged_by_flush_when_stopping() {
        static SITE: ThrottledKinds<1> = ThrottledKinds::new(Level::WARN, "a flushed line", TEN_S);
        assert!(SITE.admit(()).is_some());
        for _ in 0..4 {
            assert!(SITE.admit(()).is_none());
        }
        assert!(flush(true) >= 1, "this site had 4 repeats to report");
        assert_eq!(SITE.take_unreported_at(Instant::now(), true), None, "flush took them");
        assert!(
            sites().lock().unwrap().iter().filter(|s| s.line() == "a flushed line").count() == 1,
            "registered once"
        );
    }

    #[test]
    fn concurrent_occurrences_log_once_per_window_and_every_other_one_is_counted() {
        let throttle = ThrottledKinds::<2>::new(Level::INFO, "a line", TEN_S);
        let t0 = start();
        let logged = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for i in 0..10_000u64 {
                        if throttle.admit_at(503u16, t0 + Duration::from_micros(i)).is_some() {
                            logged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(logged.load(Ordering::Relaxed), 1, "one line for 80,000 occurrences in one window");
        let summary = throttle.admit_at(503u16, t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(summary.suppressed(), Some(79_999), "every occurrence not logged is in the summary");
    }
}
