//! One write per commit to the WAL: a VFS shim for the inbox's writer connection.
//!
//! SQLite writes each WAL frame with two `pwrite`s, its 24-byte header and its page, so a commit of ten pages is
//! twenty system calls before its `fsync` (measured at 2,000 events/s: 20.4 per commit, the largest share of
//! the writer thread's kernel time). This shim wraps the default VFS and, for WAL files only, gathers writes
//! that continue each other in memory, then writes them with one call when SQLite syncs the file — or before
//! anything that must see them: a read, a size, a truncate, a file control, closing, a write elsewhere in the
//! file, or [`MAX_PENDING`] bytes gathered. Every other file and call goes straight to the default VFS.
//!
//! Durability is unchanged **only with `synchronous = full`**, the only setting the store uses it with: there
//! SQLite syncs a commit's frames before it publishes them in the WAL index (so no reader, checkpointer or
//! recovery can look for a frame still in this buffer), and the sync writes the buffer first; a failed write
//! fails that sync, so the commit fails and is not acknowledged. With `normal`, a commit publishes frames
//! without a sync, so the store opens that setting on the default VFS.
//!
//! Invariant: a byte SQLite wrote to a WAL file reaches the file, in the order written, before the sync,
//! read, size, truncate, file control or close that follows it returns (tested:
//! `wal_writes_are_gathered_into_one_per_commit_and_read_back`,
//! `frames_a_transaction_spills_are_read_back_before_its_commit`, and every store test, which runs on this VFS).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub(super) const NAME: &CStr = c"herald-wal-batch";

/// Bytes gathered before they are written without waiting for the sync (a big transaction, a migration).
const MAX_PENDING: usize = 1 << 20;

/// Most bytes one write hands the default VFS: its `unixWrite` writes at most 128 KiB − 1 bytes per call (it
/// masks the length), so more would be a short write, which it reports as a full disk.
const MAX_WRITE: usize = 124 * 1024;

#[cfg(test)]
thread_local! {
    /// Writes this shim made to WAL files on this thread (each one or more of SQLite's).
    static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Register the VFS once (not as the default); its name, or why it could not be.
pub(super) fn register() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which lives as long as the process. The
            // copy is leaked (registered VFSes must outlive every connection using them) and registered once.
            unsafe {
                let real = ffi::sqlite3_vfs_find(std::ptr::null());
                if real.is_null() {
                    return Err("no default SQLite VFS".into());
                }
                let mut vfs: ffi::sqlite3_vfs = std::ptr::read(real);
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.szOsFile = HEADER as c_int + (*real).szOsFile;
                vfs.xOpen = Some(x_open);
                // Every other method is the default VFS's, called with this copy, whose fields it reads
                // (`pAppData`, `mxPathname`) are the default's.
                let vfs = Box::leak(Box::new(Shim { vfs, real }));
                match ffi::sqlite3_vfs_register(&mut vfs.vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("registering the WAL-batching VFS failed ({rc})")),
                }
            }
        })
        .clone()
        .map(|()| NAME)
}

/// The registered VFS: SQLite's struct first (SQLite sees only it), then the VFS it wraps.
#[repr(C)]
struct Shim {
    vfs: ffi::sqlite3_vfs,
    real: *mut ffi::sqlite3_vfs,
}

/// An open file as SQLite allocates it (`szOsFile` bytes): this header, then the default VFS's file.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The default VFS's file, right after this header in the same allocation.
    real: *mut ffi::sqlite3_file,
    /// For a WAL file: the writes gathered so far; null for every other file.
    pending: *mut Pending,
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
        let Some(open) = (*(*shim).real).xOpen else { return ffi::SQLITE_CANTOPEN };
        let rc = open((*shim).real, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*f).pending = Box::into_raw(Box::new(Pending { start: 0, buf: Vec::new() }));
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
            return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off);
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
    unsafe { after_flush!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags) }
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

    #[test]
    fn wal_writes_are_gathered_into_one_per_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let name = register().unwrap().to_str().unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, name).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX t_v ON t (v);",
        )
        .unwrap();
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
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, register().unwrap()).unwrap();
        // A cache of a few pages: the transaction below spills its dirty pages to the WAL as uncommitted frames
        // (gathered here, unsynced) and must read them back from the WAL before it commits.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = 10;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v);",
        )
        .unwrap();
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
}
