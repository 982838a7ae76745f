//! Threads that do deferred work nobody waits for (trace writes, WAL checkpoints). They run at a lower CPU
//! priority than the request path, so on a busy core a session's write, an ingest request or the inbox writer
//! preempts them instead of queueing behind a batch of trace rows: that batch is the tail of the request path's
//! latency when both share one core. Under sustained saturation they get less of the core (the trace's bounded
//! buffer then drops steps, counted; checkpoints fall back to the inbox writer past their limit).
//!
//! Two settings do it. The nice value ([`NICE`]) gives them a smaller share of a busy core. The scheduler slice
//! ([`SLICE_NS`], Linux 6.12+) bounds how long one keeps the core once it has it: the EEVDF scheduler lets a
//! running thread finish its slice ("run to parity", 1.4 ms by default here) before a woken request handler
//! runs, so a trace batch that had just started held every request arriving in that window; with the kernel's
//! smallest slice the handler waits at most ~0.1 ms (p99 at 2,000 events/s 4.08 → 3.44 ms, BENCHMARKS.md).

/// The nice value background threads run at (0 is the default, 19 the lowest priority). Not 19: a background
/// thread must still keep up with a saturated node's trace, only later.
pub const NICE: i32 = 10;

/// The scheduler slice background threads ask for, in nanoseconds: the smallest the kernel accepts (it clamps
/// a fair thread's requested slice to 0.1–100 ms).
pub const SLICE_NS: u64 = 100_000;

/// Spawn a named background thread running `f` at [`NICE`].
pub fn spawn<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name.into()).spawn(move || {
        lower_priority();
        f()
    })
}

/// Lower the calling thread's CPU priority to [`NICE`] with a [`SLICE_NS`] slice. Neither needs a privilege;
/// failure (not Linux, a seccomp filter, a kernel before 6.12, which ignores the slice or refuses the call) leaves
/// the thread at the default, which is only slower, never wrong.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = set_sched_attr() {
            tracing::debug!(error = %e, "sched_setattr refused; lowering the nice value only");
            // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id changes that one
            // thread's nice value on Linux (threads have their own).
            let tid = unsafe { libc::gettid() };
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) } != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
            }
        }
    }
}

/// `sched_setattr(2)` on the calling thread: the normal policy at [`NICE`], asking for a [`SLICE_NS`] slice
/// (`sched_runtime`, read as the slice for the normal policy since Linux 6.12). libc has no wrapper for it.
#[cfg(target_os = "linux")]
fn set_sched_attr() -> std::io::Result<()> {
    /// `struct sched_attr`, version 0 (48 bytes): the fields the normal policy reads.
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: NICE,
        sched_priority: 0,
        sched_runtime: SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: pid 0 is the calling thread; `attr` is a valid `struct sched_attr` of the size it states, read by
    // the kernel during the call only; flags must be 0.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// This thread's nice value (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn current_nice() -> i32 {
    // SAFETY: as above; getpriority returns the nice value (errno tells an error from -1, which we never set).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn background_threads_run_at_a_lower_priority_than_the_caller() {
        let caller = current_nice();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("herald-test-background", move || tx.send(current_nice()).unwrap()).unwrap().join().unwrap();
        let inside = rx.recv().unwrap();
        assert_eq!(inside, NICE.max(caller), "background thread nice value");
        assert_eq!(current_nice(), caller, "the caller's priority is untouched");
    }

    /// The thread's slice as the scheduler reports it (`se.slice` in /proc, nanoseconds; absent before 6.6).
    fn current_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.trim_start().starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn background_threads_give_the_core_back_after_the_smallest_slice() {
        let Some(caller) = current_slice() else {
            eprintln!("this kernel does not report se.slice: nothing to check");
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("herald-test-slice", move || tx.send(current_slice()).unwrap()).unwrap().join().unwrap();
        assert_eq!(rx.recv().unwrap(), Some(SLICE_NS), "background thread slice (the caller's is {caller} ns)");
        assert_ne!(caller, SLICE_NS, "the caller's slice is untouched");
    }
}
