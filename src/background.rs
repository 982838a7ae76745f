//! Threads that do deferred work nobody waits for (trace writes, WAL checkpoints). They run at a lower CPU
//! priority than the request path, so on a busy core a session's write, an ingest request or the inbox writer
//! preempts them instead of queueing behind a batch of trace rows: that batch is the tail of the request path's
//! latency when both share one core. Under sustained saturation they get less of the core (the trace's bounded
//! buffer then drops steps, counted; checkpoints fall back to the inbox writer past their limit).

/// The nice value background threads run at (0 is the default, 19 the lowest priority). Not 19: a background
/// thread must still keep up with a saturated node's trace, only later.
pub const NICE: i32 = 10;

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

/// Lower the calling thread's CPU priority to [`NICE`]. Raising a nice value needs no privilege; failure (not
/// Linux, a seccomp filter) leaves the thread at the default priority, which is only slower, never wrong.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id changes that one
        // thread's nice value on Linux (threads have their own).
        let tid = unsafe { libc::gettid() };
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
        }
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
}
