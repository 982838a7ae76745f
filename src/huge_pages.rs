//! Transparent huge pages, off for this process by default (`server.transparent_huge_pages = false`), as Redis
//! does (`disable-thp`) and for the same reason: latency.
//!
//! Herald's allocator (mimalloc) advises its arenas as huge-page memory (`MADV_HUGEPAGE`), so with the kernel's
//! THP mode at `madvise` (Debian's default) or `always`, the first touch of each 2 MiB of a growing heap takes a
//! page fault that zeroes 2 MiB at once, in whichever thread touched it: a session task, the request path, or the
//! inbox writer between two commits. On the virtual machine these numbers come from, the thread ran up to 4.7 ms
//! inside one such fault (`perf sched timehist`: `folio_zero_user <- vma_alloc_anon_folio_pmd`), 53 faults in one
//! profiling run (10,000 sessions connecting, then 20,000 events at 2,000/s), and every request arriving
//! meanwhile waited behind it. Turning them off took the p99 at 2,000 events/s from 10.4 to 8.0 ms (medians of 5
//! rounds; BENCHMARKS.md, 2026-11-30). With 4 KiB pages the same memory is zeroed 4 KiB per fault, spread out.
//!
//! `prctl(PR_SET_THP_DISABLE)` is the process's own switch (inherited by children, no privilege needed); the
//! kernel checks it at every fault, so it covers memory mapped before it was set, and huge pages already faulted
//! in stay. `server.transparent_huge_pages = true` leaves the system's policy as it is.

/// Apply the setting: with `allow` false, ask the kernel for no transparent huge pages in this process. Returns
/// whether the process now runs without them. Failure (not Linux, a seccomp filter) leaves them on, which is only
/// slower at the tail, never wrong, and is logged at `debug`.
pub fn apply(allow: bool) -> bool {
    if allow {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes one integer argument and the rest zero; it only sets a flag on this
        // process's memory map.
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if r == 0 {
            return true;
        }
        tracing::debug!(error = %std::io::Error::last_os_error(), "prctl(PR_SET_THP_DISABLE) refused; huge pages stay on");
    }
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// `THP_enabled` in `/proc/self/status`: 0 once the process disabled huge pages for itself.
    fn thp_enabled() -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_owned()).unwrap()
    }

    // The flag is the process's. Under nextest each test has a process of its own; under `cargo test` they share
    // one, and neither depends on whether the other ran first.
    #[test]
    fn by_default_the_process_runs_without_transparent_huge_pages() {
        assert!(super::apply(false));
        assert_eq!(thp_enabled(), "0");
    }

    #[test]
    fn allowing_them_leaves_the_process_flag_untouched() {
        let before = thp_enabled();
        assert!(!super::apply(true));
        assert_eq!(thp_enabled(), before);
    }
}
