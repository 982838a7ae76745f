//! SQLite's page cache, wrapped so a commit does not walk all of it: used by both SQLite databases (the inbox
//! and the trace), installed once per process before SQLite starts ([`install`]).
//!
//! When a B-tree page splits, SQLite's `balance_nonroot` puts the new sibling pages in ascending page order by
//! swapping their numbers in the page cache, through a temporary number: the locking page's (the page holding
//! byte 2^30 of the file, 262,145 with 4 KiB pages), which no real page has. The default cache (`pcache1`)
//! remembers the largest number it has seen, and at the end of every transaction SQLite asks it to drop pages
//! past the database's end; with that number remembered, the cache cannot tell how few pages are past the end
//! and walks its whole hash table (`pcache1TruncateUnsafe`), every cached page of the connection, with a cache
//! miss for most. Random-keyed indexes (the inbox's dedupe keys, its user index, the trace's ids) split pages
//! all the time, so every few commits walked the writer's whole cache (up to `store.sqlite_cache_mib`, 16,384
//! pages by default) until the database grew past 1 GiB (BENCHMARKS.md, 2026-11-30).
//!
//! This wrapper forwards every call to the default cache and keeps its own bound on the numbers of the pages in
//! it, not counting the temporary one while a page holds it: an end-of-transaction truncate with nothing at or
//! past its limit is not forwarded (the default cache would drop nothing either). Any other truncate — a
//! rolled-back transaction that grew the file, a temporary number still held — is forwarded, and then the
//! default cache walks its table as it always did.
//!
//! Invariant: every page in a wrapped cache has a number at most [`Cache::max_key`], or the temporary number
//! while [`Cache::temp_held`] is set; a truncate is skipped only when its limit is above both (tested:
//! `commits_after_page_swaps_skip_the_cache_walk`, `a_rolled_back_growth_is_still_dropped_from_the_cache`;
//! and the SQLite store and trace tests, each in a process of its own under nextest, run through it, except
//! those that open a database themselves before the store does).

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's locking byte (`PENDING_BYTE`, 2^30): the page that holds it is the temporary number.
const PENDING_BYTE: c_uint = 0x4000_0000;

/// The default page cache's methods, whose calls the wrapper forwards.
struct DefaultCache(ffi::sqlite3_pcache_methods2);
// SAFETY: the methods are plain function pointers and a context pointer SQLite gives every call; they are read,
// never written, after `install` stored them.
unsafe impl Send for DefaultCache {}
unsafe impl Sync for DefaultCache {}

static DEFAULT: OnceLock<DefaultCache> = OnceLock::new();

#[cfg(test)]
pub(crate) mod count {
    //! What the wrapper did, process-wide, for the tests.
    use std::sync::atomic::AtomicU64;
    pub static SKIPPED: AtomicU64 = AtomicU64::new(0);
    pub static FORWARDED: AtomicU64 = AtomicU64::new(0);
    pub static TEMP_KEYS: AtomicU64 = AtomicU64::new(0);
}

/// Install the wrapper, once per process; whether it is installed. It must run before SQLite is initialized
/// (the first connection opened anywhere in the process) and while no other thread uses SQLite: `main` calls it
/// first, and the stores call it before their first connection, where it does nothing if SQLite has already
/// started (the default cache then stays, which is only slower).
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut default = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
        // SAFETY: GETPCACHE2 writes the current methods into the struct it is given; it fails (MISUSE) once
        // SQLite has been initialized, and so does PCACHE2, which copies the struct it is given.
        unsafe {
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) != ffi::SQLITE_OK {
                return false;
            }
            let default = default.assume_init();
            if default.xCreate.is_none() || DEFAULT.set(DefaultCache(default)).is_err() {
                return false;
            }
            let wrapped = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: std::ptr::null_mut(),
                xInit: Some(x_init),
                xShutdown: Some(x_shutdown),
                xCreate: Some(x_create),
                xCachesize: Some(x_cachesize),
                xPagecount: Some(x_pagecount),
                xFetch: Some(x_fetch),
                xUnpin: Some(x_unpin),
                xRekey: Some(x_rekey),
                xTruncate: Some(x_truncate),
                xDestroy: Some(x_destroy),
                xShrink: Some(x_shrink),
            };
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapped as *const ffi::sqlite3_pcache_methods2)
                == ffi::SQLITE_OK
        }
    })
}

/// One connection's cache: the default cache's, and what the wrapper knows of the page numbers in it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// At least the number of every page in the cache, except the temporary number's page while `temp_held`.
    max_key: c_uint,
    /// The temporary number for this page size (the locking page's).
    temp_key: c_uint,
    /// A page holds the temporary number (between the first and last renumbering of a swap).
    temp_held: bool,
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    // Set before SQLite can call any method below (they are installed after it).
    &DEFAULT.get().expect("the default page cache is stored before the wrapper is installed").0
}

/// SAFETY (all methods): SQLite calls them with a cache `x_create` returned and has not yet destroyed, one call
/// at a time per cache (a cache belongs to one connection, whose calls SQLite serialises).
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *(p as *mut Cache) }
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    let d = inner();
    match d.xInit {
        Some(f) => unsafe { f(d.pArg) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {
    let d = inner();
    if let Some(f) = d.xShutdown {
        unsafe { f(d.pArg) }
    }
}

unsafe extern "C" fn x_create(page: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let inner = unsafe { inner().xCreate.expect("checked in install")(page, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let temp_key = PENDING_BYTE / (page.max(1) as c_uint) + 1;
    Box::into_raw(Box::new(Cache { inner, max_key: 0, temp_key, temp_held: false })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn x_cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = inner().xCachesize {
        unsafe { f(cache(p).inner, n) }
    }
}

unsafe extern "C" fn x_pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    match inner().xPagecount {
        Some(f) => unsafe { f(cache(p).inner) },
        None => 0,
    }
}

unsafe extern "C" fn x_fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    let c = unsafe { cache(p) };
    let page = unsafe { inner().xFetch.expect("a page cache fetches")(c.inner, key, create) };
    // A page created (or found) under this number: the bound covers it. A lookup that found nothing adds none.
    if !page.is_null() && key > c.max_key {
        c.max_key = key;
    }
    page
}

unsafe extern "C" fn x_unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = inner().xUnpin {
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn x_rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = unsafe { cache(p) };
    if let Some(f) = inner().xRekey {
        unsafe { f(c.inner, page, old, new) }
    }
    if new == c.temp_key {
        c.temp_held = true;
        #[cfg(test)]
        count::TEMP_KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        if old == c.temp_key {
            c.temp_held = false;
        }
        c.max_key = c.max_key.max(new);
    }
}

unsafe extern "C" fn x_truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = unsafe { cache(p) };
    let temp_reached = c.temp_held && limit <= c.temp_key;
    if limit > c.max_key && !temp_reached {
        // No page is numbered `limit` or more: the default cache would drop nothing, after walking its table.
        #[cfg(test)]
        count::SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    #[cfg(test)]
    count::FORWARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(f) = inner().xTruncate {
        unsafe { f(c.inner, limit) }
    }
    c.max_key = c.max_key.min(limit.saturating_sub(1));
    if temp_reached {
        c.temp_held = false;
    }
}

unsafe extern "C" fn x_destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `x_create`, and SQLite destroys a cache once.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    if let Some(f) = inner().xDestroy {
        unsafe { f(c.inner) }
    }
}

unsafe extern "C" fn x_shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = inner().xShrink {
        unsafe { f(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use rusqlite::Connection;

    use super::*;

    /// Nextest runs each test in a process of its own, so SQLite starts here, after `install`.
    fn wrapped(dir: &tempfile::TempDir) -> Connection {
        assert!(install(), "the wrapper installs before SQLite starts in this test's process");
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
             CREATE TABLE k (key BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        c
    }

    fn random_key(i: u64) -> [u8; 16] {
        use sha2::Digest;
        sha2::Sha256::digest(i.to_le_bytes())[..16].try_into().unwrap()
    }

    /// Small random-keyed commits split pages all the time, and SQLite renumbers pages through the locking
    /// page's number; none of those commits' truncates reaches the default cache, whose walk of every cached
    /// page each of them would otherwise be.
    #[test]
    fn commits_after_page_swaps_skip_the_cache_walk() {
        let dir = tempfile::tempdir().unwrap();
        let c = wrapped(&dir);
        let forwarded = count::FORWARDED.load(Relaxed);
        for i in 0..5_000u64 {
            c.execute("INSERT INTO k (key, at) VALUES (?1, ?2)", rusqlite::params![random_key(i), i as i64]).unwrap();
        }
        assert!(count::TEMP_KEYS.load(Relaxed) > 10, "page swaps through the temporary number happened");
        assert!(count::SKIPPED.load(Relaxed) >= 5_000, "each commit's truncate was skipped");
        assert_eq!(count::FORWARDED.load(Relaxed), forwarded, "no commit's truncate walked the cache");
        let n: i64 = c.query_row("SELECT count(*) FROM k", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 5_000);
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }

    /// A transaction that grew the file and rolled back leaves pages past the database's end in the cache: that
    /// truncate is forwarded and drops them, and the database reads back as committed.
    #[test]
    fn a_rolled_back_growth_is_still_dropped_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = wrapped(&dir);
        for i in 0..500u64 {
            c.execute("INSERT INTO k (key, at) VALUES (?1, 1)", [random_key(i)]).unwrap();
        }
        let pages = |c: &Connection| c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).unwrap();
        let before = pages(&c);
        let forwarded = count::FORWARDED.load(Relaxed);
        {
            let tx = c.transaction().unwrap();
            for i in 1_000..6_000u64 {
                tx.execute("INSERT INTO k (key, at) VALUES (?1, 2)", [random_key(i)]).unwrap();
            }
            assert!(pages(&tx) > before + 10, "the transaction grew the file");
        } // dropped: rolled back
        assert!(count::FORWARDED.load(Relaxed) > forwarded, "the rollback's truncate reached the default cache");
        assert_eq!(pages(&c), before);
        for i in 6_000..7_000u64 {
            c.execute("INSERT INTO k (key, at) VALUES (?1, 3)", [random_key(i)]).unwrap();
        }
        let by_at: Vec<(i64, i64)> = c
            .prepare("SELECT at, count(*) FROM k GROUP BY at ORDER BY at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(by_at, [(1, 500), (3, 1_000)], "nothing of the rolled-back transaction remains");
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
    }
}
