//! The inbox's VFS shims: one write per commit to the WAL for the writer's connection, and for the
//! checkpointer's, no WAL syncs and the database's pages written out as they are copied.
//!
//! **The writer's** (`NAME`). SQLite writes each WAL frame with two `pwrite`s, its 24-byte header and its page, so
//! a commit of ten pages is twenty system calls before its `fsync` (measured at 2,000 events/s: 20.4 per commit,
//! the largest share of the writer thread's kernel time). This shim wraps the default VFS and, for WAL files
//! only, gathers writes that continue each other in memory, then writes them with one call when SQLite syncs the
//! file — or before anything that must see them: a read, a size, a truncate, a file control, closing, a write
//! elsewhere in the file, or [`MAX_PENDING`] bytes gathered. Every other file and call goes straight to the
//! default VFS.
//!
//! Durability is unchanged **only with `synchronous = full`**, the only setting the store uses it with: there
//! SQLite syncs a commit's frames before it publishes them in the WAL index (so no reader, checkpointer or
//! recovery can look for a frame still in this buffer), and the sync writes the buffer first; a failed write
//! fails that sync, so the commit fails and is not acknowledged. With `normal`, a commit publishes frames
//! without a sync, so the store opens that setting on the default VFS.
//!
//! **The checkpointer's** (`CHECKPOINTER`, also only beside a writer at `synchronous = full`). Every checkpoint
//! starts by syncing the WAL, so that no page reaches the database file before the frame it comes from is
//! durable. Here every frame a checkpoint can copy was synced by the commit that published it, so that sync only
//! costs a device flush — one per pass, and the checkpointer runs a pass after every commit once the WAL is past
//! its threshold (112–537 flushes per 20,000 events beside the writer's ~9,000, measured with `perf trace`); this
//! VFS returns at once from syncs of WAL files. The database file's sync at the end of a checkpoint is kept, and
//! so that it does not flush everything the checkpoint copied at once (tens of MiB on a large inbox, queueing the
//! writer's commit syncs behind it), the pages are sent to the disk as they are copied: every
//! [`WRITEBACK_AFTER`] bytes written, `sync_file_range(SYNC_FILE_RANGE_WRITE)` on a descriptor of its own starts
//! their writeback without waiting for it (what PostgreSQL's `checkpoint_flush_after` does).
//!
//! Invariants: a byte SQLite wrote to a writer's WAL file reaches the file, in the order written, before the sync,
//! read, size, truncate, file control or close that follows it returns (tested:
//! `wal_writes_are_gathered_into_one_per_commit_and_read_back`,
//! `frames_a_transaction_spills_are_read_back_before_its_commit`, and every store test, which runs on this VFS);
//! the checkpointer's VFS skips only WAL syncs, never a database file's
//! (`the_checkpointers_vfs_skips_wal_syncs_keeps_the_database_sync_and_writes_back_as_it_copies`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The writer's VFS's name, for `Connection::open_with_flags_and_vfs`.
pub(super) const NAME: &CStr = c"herald-wal-batch";

/// The checkpointer's VFS's name.
pub(super) const CHECKPOINTER: &CStr = c"herald-wal-checkpointer";

/// Bytes gathered before they are written without waiting for the sync (a big transaction, a migration).
const MAX_PENDING: usize = 1 << 20;

/// The checkpointer starts the writeback of the database file's dirty pages every this many bytes it writes
/// (PostgreSQL's `checkpoint_flush_after` default on Linux).
const WRITEBACK_AFTER: usize = 256 * 1024;

/// Most bytes one write hands the default VFS: its `unixWrite` writes at most 128 KiB − 1 bytes per call (it
/// masks the length), so more would be a short write, which it reports as a full disk.
const MAX_WRITE: usize = 124 * 1024;

#[cfg(test)]
thread_local! {
    /// Writes this shim made to WAL files on this thread (each one or more of SQLite's).
    static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Writebacks the checkpointer's VFS started on this thread.
    static WRITEBACKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// WAL syncs the checkpointer's VFS skipped on this thread.
    static SKIPPED_SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Syncs either VFS passed on to the default VFS on this thread.
    static FORWARDED_SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Register the writer's VFS once (not as the default); its name, or why it could not be.
pub(super) fn register() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(|| register_as(NAME, Role::Writer)).clone().map(|()| NAME)
}

/// Register the checkpointer's VFS once (not as the default); its name, or why it could not be.
pub(super) fn register_checkpointer() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(|| register_as(CHECKPOINTER, Role::Checkpointer)).clone().map(|()| CHECKPOINTER)
}

fn register_as(name: &'static CStr, role: Role) -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which lives as long as the process. The copy is
    // leaked (registered VFSes must outlive every connection using them) and registered once per name.
    unsafe {
        let real = ffi::sqlite3_vfs_find(std::ptr::null());
        if real.is_null() {
            return Err("no default SQLite VFS".into());
        }
        let mut vfs: ffi::sqlite3_vfs = std::ptr::read(real);
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = name.as_ptr();
        vfs.szOsFile = HEADER as c_int + (*real).szOsFile;
        vfs.xOpen = Some(x_open);
        // Every other method is the default VFS's, called with this copy, whose fields it reads (`pAppData`,
        // `mxPathname`) are the default's.
        let vfs = Box::leak(Box::new(Shim { vfs, real, role }));
        match ffi::sqlite3_vfs_register(&mut vfs.vfs, 0) {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(format!("registering the {} VFS failed ({rc})", name.to_string_lossy())),
        }
    }
}

/// Which connection a VFS is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The writer's: WAL writes gathered into one per commit.
    Writer,
    /// The checkpointer's: WAL syncs skipped.
    Checkpointer,
}

/// The registered VFS: SQLite's struct first (SQLite sees only it), then the VFS it wraps.
#[repr(C)]
struct Shim {
    vfs: ffi::sqlite3_vfs,
    real: *mut ffi::sqlite3_vfs,
    role: Role,
}

/// An open file as SQLite allocates it (`szOsFile` bytes): this header, then the default VFS's file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The default VFS's file, right after this header in the same allocation.
    real: *mut ffi::sqlite3_file,
    /// For a WAL file of the writer's: the writes gathered so far; null for every other file.
    pending: *mut Pending,
    /// A WAL file of the checkpointer's: its syncs return at once.
    skip_sync: bool,
    /// The database file of the checkpointer's: a descriptor of its own on the file, to start the writeback of
    /// what the checkpoints copy (`sync_file_range`); -1 for every other file.
    writeback_fd: c_int,
    /// Bytes written through this file since its writeback was last started.
    unflushed: usize,
}

/// The header's size, rounded so the real file after it is aligned as SQLite aligns `szOsFile`.
const HEADER: usize = std::mem::size_of::<File>().next_multiple_of(16);

struct Pending {
    /// Where `buf` goes in the file.
    start: i64,
    buf: Vec<u8>,
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes the VFS registered above (a `Shim`) and `szOsFile` bytes at `file`.
    unsafe {
        let shim = vfs as *mut Shim;
        let f = file as *mut File;
        let real = (file as *mut u8).add(HEADER) as *mut ffi::sqlite3_file;
        (*f).base.pMethods = std::ptr::null();
        (*f).real = real;
        (*f).pending = std::ptr::null_mut();
        (*f).skip_sync = false;
        (*f).writeback_fd = -1;
        (*f).unflushed = 0;
        let Some(open) = (*(*shim).real).xOpen else { return ffi::SQLITE_CANTOPEN };
        let rc = open((*shim).real, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            match (*shim).role {
                Role::Writer => (*f).pending = Box::into_raw(Box::new(Pending { start: 0, buf: Vec::new() })),
                Role::Checkpointer => (*f).skip_sync = true,
            }
        }
        // `sync_file_range` is Linux's; elsewhere, and if this open fails, the pages wait for the sync as before.
        #[cfg(target_os = "linux")]
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && (*shim).role == Role::Checkpointer && !name.is_null() {
            (*f).writeback_fd = libc::open(name, libc::O_RDONLY | libc::O_CLOEXEC);
        }
        (*f).base.pMethods = &METHODS;
        rc
    }
}

/// The default VFS's method `$m` of the file under `file`, called with `$args`; `$missing` if it has none.
macro_rules! forward {
    ($file:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let real = (*($file as *mut File)).real;
        match (*(*real).pMethods).$m {
            Some(m) => m(real $(, $arg)*),
            None => $missing,
        }
    }};
}

/// Write what is gathered, if anything; SQLite's result code.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is one of ours (SQLite calls our methods only on files `x_open` set them on).
    unsafe {
        match (*(file as *mut File)).pending.as_mut() {
            Some(p) => write_out(file, p),
            None => ffi::SQLITE_OK,
        }
    }
}

/// Write `p` (the pending writes of `file`) and empty it; SQLite's result code. Takes the one live reference to
/// the buffer, so a caller holding it ([`x_write`]) flushes through it instead of making a second one.
unsafe fn write_out(file: *mut ffi::sqlite3_file, p: &mut Pending) -> c_int {
    // SAFETY: as in `flush`.
    unsafe {
        let mut rc = ffi::SQLITE_OK;
        let mut at = p.start;
        for chunk in p.buf.chunks(MAX_WRITE) {
            let len = chunk.len() as c_int;
            rc = forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, chunk.as_ptr() as *const c_void, len, at);
            #[cfg(test)]
            WAL_WRITES.with(|n| n.set(n.get() + 1));
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        p.buf.clear();
        rc
    }
}

/// Flush, then the default VFS's method; a failed flush is the call's result.
macro_rules! after_flush {
    ($file:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let rc = flush($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        forward!($file, $m, $missing $(, $arg)*)
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `flush`; the pending buffer is freed once, here, and the pointer cleared.
    unsafe {
        let flushed = flush(file);
        let rc = forward!(file, xClose, ffi::SQLITE_OK);
        let f = file as *mut File;
        if (*f).writeback_fd >= 0 {
            libc::close((*f).writeback_fd);
            (*f).writeback_fd = -1;
        }
        if !(*f).pending.is_null() {
            drop(Box::from_raw((*f).pending));
            (*f).pending = std::ptr::null_mut();
        }
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            rc
        }
    }
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amt: c_int, off: i64) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { after_flush!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amt, off) }
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, buf: *const c_void, amt: c_int, off: i64) -> c_int {
    // SAFETY: as in `flush`; SQLite passes `amt` readable bytes at `buf`.
    unsafe {
        let f = file as *mut File;
        let Some(p) = (*f).pending.as_mut() else {
            let rc = forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off);
            if rc == ffi::SQLITE_OK && (*f).writeback_fd >= 0 {
                (*f).unflushed += amt.max(0) as usize;
                if (*f).unflushed >= WRITEBACK_AFTER {
                    (*f).unflushed = 0;
                    // Starts writing the file's dirty pages out and returns: no wait, no device flush. A failure
                    // only leaves them to the sync, as without this call.
                    #[cfg(target_os = "linux")]
                    libc::sync_file_range((*f).writeback_fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                    #[cfg(test)]
                    WRITEBACKS.with(|n| n.set(n.get() + 1));
                }
            }
            return rc;
        };
        if !p.buf.is_empty() && off != p.start + p.buf.len() as i64 {
            let rc = write_out(file, p);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if p.buf.is_empty() {
            p.start = off;
        }
        p.buf.extend_from_slice(std::slice::from_raw_parts(buf as *const u8, amt.max(0) as usize));
        if p.buf.len() >= MAX_PENDING {
            return write_out(file, p);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { after_flush!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size) }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe {
        if (*(file as *mut File)).skip_sync {
            #[cfg(test)]
            SKIPPED_SYNCS.with(|n| n.set(n.get() + 1));
            return ffi::SQLITE_OK;
        }
        #[cfg(test)]
        FORWARDED_SYNCS.with(|n| n.set(n.get() + 1));
        after_flush!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
    }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { after_flush!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size) }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xLock, ffi::SQLITE_OK, level) }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xUnlock, ffi::SQLITE_OK, level) }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xCheckReservedLock, ffi::SQLITE_OK, out) }
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: as in `flush`. Flushed first: some controls stand for a sync (`SQLITE_FCNTL_SYNC`), others ask
    // about the file's contents.
    unsafe { after_flush!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg) }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xSectorSize, 4096) }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xDeviceCharacteristics, 0) }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xShmMap, ffi::SQLITE_IOERR_SHMMAP, region, size, extend, out) }
}

unsafe extern "C" fn x_shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags) }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xShmBarrier, ()) }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xShmUnmap, ffi::SQLITE_OK, delete) }
}

unsafe extern "C" fn x_fetch(file: *mut ffi::sqlite3_file, off: i64, amt: c_int, out: *mut *mut c_void) -> c_int {
    // SAFETY: as in `flush`. Without the method, no mapping: SQLite reads instead.
    unsafe {
        after_flush!(
            file,
            xFetch,
            {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            },
            off,
            amt,
            out
        )
    }
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    // SAFETY: as in `flush`.
    unsafe { forward!(file, xUnfetch, ffi::SQLITE_OK, off, p) }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// A connection through the writer's VFS, as the store opens it (WAL, `synchronous = full`), then `setup`.
    fn writer(path: &std::path::Path, setup: &str) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(path, flags, register().unwrap()).unwrap();
        conn.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; {setup}")).unwrap();
        conn
    }

    #[test]
    fn wal_writes_are_gathered_into_one_per_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = writer(&path, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v);");
        // A commit of many pages (rows and index entries across pages) is one write of the WAL, then its sync.
        let before = WAL_WRITES.with(|n| n.get());
        conn.execute_batch("BEGIN").unwrap();
        for k in 0..100 {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>300}")]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let writes = WAL_WRITES.with(|n| n.get()) - before;
        assert_eq!(writes, 1, "the commit's frames, gathered into one write");
        // A commit larger than one write is written in chunks, in order.
        let before = WAL_WRITES.with(|n| n.get());
        conn.execute("INSERT INTO t SELECT k + 1000, printf('%.2000c', 'x') || k FROM t", []).unwrap();
        let writes = WAL_WRITES.with(|n| n.get()) - before;
        assert!(writes > 1, "~200 KiB of frames in writes of at most {MAX_WRITE} bytes, got {writes}");
        // Another connection on the default VFS reads every row from the WAL, and so does a reopened one.
        let reader = Connection::open(&path).unwrap();
        let n: i64 = reader.query_row("SELECT count(*) FROM t WHERE v LIKE '%9'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 20, "ten rows and their ten copies end in 9");
        drop(reader);
        drop(conn);
        let again = Connection::open(&path).unwrap();
        let n: i64 = again.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 200);
        let ok: String = again.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn frames_a_transaction_spills_are_read_back_before_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A cache of a few pages: the transaction below spills its dirty pages to the WAL as uncommitted frames
        // (gathered here, unsynced) and must read them back from the WAL before it commits.
        let conn = writer(
            &path,
            "PRAGMA cache_size = 10; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v);",
        );
        conn.execute_batch("BEGIN").unwrap();
        for k in 0..2000 {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>200}")]).unwrap();
        }
        let sum: i64 = conn.query_row("SELECT sum(k) FROM t WHERE v >= ''", [], |r| r.get(0)).unwrap();
        assert_eq!(sum, 1999 * 2000 / 2, "every row read back inside the transaction");
        conn.execute_batch("COMMIT").unwrap();
        drop(conn);
        let again = Connection::open(&path).unwrap();
        let ok: String = again.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let n: i64 = again.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2000);
    }

    #[test]
    fn the_checkpointers_vfs_skips_wal_syncs_keeps_the_database_sync_and_writes_back_as_it_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = writer(&path, "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);");
        // ~2 MiB of rows over 20 commits, all in the WAL: the checkpoint below copies them into the database.
        for c in 0..20 {
            writer.execute_batch("BEGIN").unwrap();
            for k in 0..100 {
                let k = c * 100 + k;
                writer.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>1000}")]).unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
        }
        let checkpointer =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), register_checkpointer().unwrap()).unwrap();
        let (skipped, forwarded, writebacks) =
            (SKIPPED_SYNCS.with(|n| n.get()), FORWARDED_SYNCS.with(|n| n.get()), WRITEBACKS.with(|n| n.get()));
        let (busy, log, copied): (i64, i64, i64) = checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!((busy, copied), (0, log), "the whole WAL copied");
        assert!(log > 500, "{log} frames");
        assert_eq!(SKIPPED_SYNCS.with(|n| n.get()) - skipped, 1, "the WAL's sync before the copy, skipped");
        assert_eq!(FORWARDED_SYNCS.with(|n| n.get()) - forwarded, 1, "the database file's sync after it, kept");
        if cfg!(target_os = "linux") {
            assert!(WRITEBACKS.with(|n| n.get()) - writebacks >= 4, "~2 MiB copied, written back every 256 KiB");
        }
        // The pages are in the database file itself: a copy of it alone, without the WAL, holds every row.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let alone = Connection::open(&copy).unwrap();
        let n: i64 = alone.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2000);
        let ok: String = alone.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        // The writer goes on, and its commits still sync.
        let before = FORWARDED_SYNCS.with(|n| n.get());
        writer.execute("INSERT INTO t VALUES (5000, 'after')", []).unwrap();
        assert!(FORWARDED_SYNCS.with(|n| n.get()) > before, "a commit's sync is the writer's own");
    }
}
