//! WAL checkpoints off the writer thread.
//!
//! The writer connection does not checkpoint on its own (its WAL hook replaces SQLite's automatic checkpoint):
//! after each commit the hook only notes how many pages the WAL holds and, past [`WalWatch::threshold`], wakes
//! the checkpointer, a thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` (which never
//! blocks the writer nor readers). Copying pages back into the database and its `fsync` thus happen beside the
//! commits instead of inside one. A checkpoint running beside the writer never catches up under sustained load
//! (the WAL restarts from its beginning only when a write transaction starts with everything in it copied back:
//! measured, 40,000 events unbounded grew it to 221 MiB), so past [`WalWatch::limit`] (a quarter more) the
//! writer checkpoints itself between two commits — copying only what came after the checkpointer's pass — and
//! its next commit starts the WAL again, which bounds it.
//!
//! Durability is unchanged: a commit is durable once its WAL frames are synced (`synchronous = full`), before
//! the writer answers; checkpoints only move committed pages into the database file. At `full` the checkpointer's
//! connection opens through `walbatch`'s checkpointer VFS, which skips the WAL sync each pass starts with (those
//! frames were synced by their commits) and writes the copied pages back as it goes.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{ffi, Connection};

/// What the writer's WAL hook saw, shared with the checkpointer thread.
pub(super) struct WalWatch {
    /// Pages in the WAL after the last commit.
    pages: AtomicI32,
    /// Wake the checkpointer at this many pages (`WAL_CHECKPOINT_PAGES` in the store).
    pub threshold: i32,
    /// The writer checkpoints itself past this many pages.
    pub limit: i32,
    wake: Mutex<bool>,
    woken: Condvar,
    stop: AtomicBool,
    /// Checkpoints the checkpointer ran.
    pub passes: AtomicU64,
}

impl WalWatch {
    pub fn new(threshold: i32) -> Arc<WalWatch> {
        let threshold = threshold.max(1);
        Arc::new(WalWatch {
            pages: AtomicI32::new(0),
            threshold,
            limit: threshold.saturating_add(threshold / 4),
            wake: Mutex::new(false),
            woken: Condvar::new(),
            stop: AtomicBool::new(false),
            passes: AtomicU64::new(0),
        })
    }

    /// Pages in the WAL after the last commit.
    pub fn pages(&self) -> i32 {
        self.pages.load(Ordering::Relaxed)
    }

    fn committed(&self, pages: i32) {
        self.pages.store(pages, Ordering::Relaxed);
        if pages >= self.threshold {
            self.notify();
        }
    }

    fn notify(&self) {
        *self.wake.lock().expect("wal watch poisoned") = true;
        self.woken.notify_one();
    }

    /// Tell the checkpointer to finish (the writer is closing).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.notify();
    }
}

/// The write connection with its WAL hook: dropping it unregisters the hook before the watch it points to can go.
pub(super) struct Hooked {
    pub conn: Connection,
    watch: Arc<WalWatch>,
}

impl Hooked {
    pub fn new(conn: Connection, watch: Arc<WalWatch>) -> Hooked {
        // SAFETY: the hook's argument is the `WalWatch` this value keeps alive (`watch`), and `Drop` unregisters
        // the hook before that reference is released; SQLite calls the hook only on this connection's thread,
        // inside a commit, and `on_commit` only touches atomics and a mutex.
        unsafe {
            ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), Arc::as_ptr(&watch) as *mut c_void);
        }
        Hooked { conn, watch }
    }

    /// The WAL outgrew what the checkpointer can be left to handle.
    pub fn over_limit(&self) -> bool {
        self.watch.pages() >= self.watch.limit
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        // SAFETY: removes the hook installed in `new`, on the same open connection.
        unsafe {
            ffi::sqlite3_wal_hook(self.conn.handle(), None, std::ptr::null_mut());
        }
        self.watch.stop();
    }
}

unsafe extern "C" fn on_commit(arg: *mut c_void, _db: *mut ffi::sqlite3, _name: *const c_char, pages: c_int) -> c_int {
    // SAFETY: `arg` is the `WalWatch` a live `Hooked` keeps (see `Hooked::new`).
    let watch = unsafe { &*(arg as *const WalWatch) };
    watch.committed(pages);
    ffi::SQLITE_OK
}

/// Start the checkpointer thread on its own connection to `path`, opened through `vfs` if given (the checkpointer's
/// VFS, only beside a writer at `synchronous = full`). It stops once the writer's `Hooked` is dropped.
pub(super) fn spawn(path: &Path, watch: Arc<WalWatch>, vfs: Option<&std::ffi::CStr>) -> Result<(), String> {
    let conn = super::open_through(path, vfs).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
    crate::background::spawn("herald-sqlite-checkpointer", move || run(conn, watch))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn run(conn: Connection, watch: Arc<WalWatch>) {
    loop {
        {
            let mut wake = watch.wake.lock().expect("wal watch poisoned");
            while !*wake {
                wake = watch.woken.wait(wake).expect("wal watch poisoned");
            }
            *wake = false;
        }
        if watch.stop.load(Ordering::Relaxed) {
            return;
        }
        match checkpoint(&conn) {
            Ok(()) => {
                watch.passes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next commit past the threshold retries"),
        }
    }
}

/// One `PASSIVE` checkpoint: copy what it can without waiting for the writer or readers.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Copy every commit into the database file and empty the WAL (at close); whether it completed (`false`: a reader
/// kept it from finishing within the busy timeout).
pub(super) fn checkpoint_truncate(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).map(|busy| busy == 0)
}
