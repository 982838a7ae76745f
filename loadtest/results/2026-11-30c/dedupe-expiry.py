#!/usr/bin/env python3
"""What expiring dedupe keys writes, in steady state (BENCHMARKS.md, 2026-11-30, 05:20-07:00).

    python3 loadtest/results/2026-11-30c/dedupe-expiry.py [KEYS_PER_DAY]   # default 1,000,000

The store's `dedupe_keys` table and its by-age index as migration 3 of src/inbox/sqlite.rs creates them, in a
temporary SQLite database with the writer's settings (WAL, 4 KiB pages, 64 MiB cache, no automatic checkpoint),
filled with eight days of random 16-byte keys in applied_at order (a dedupe window of 7 days, one day past it).
Then day 1 expires three ways, each on a copy of the same file, counting the WAL frames each writes (WAL bytes /
(24 + 4096)):

- as the store does it: `store.prune_batch` (1,000) keys at a time, oldest first, each batch its own commit;
- the same with one big batch (all of day 1 in one commit), the best that ordering can do;
- a sweep in key order (`DELETE ... WHERE key > cursor ORDER BY key LIMIT 1000 ... AND applied_at < cutoff`),
  1,000 keys scanned per commit, with the by-age index and without it (a sweep does not need it).

And for scale: what inserting one more day's keys at 10 per commit (the writer's group commits, unbounded)
writes, with and without the by-age index. Page counts, not time: the same on any machine.
"""

import os
import random
import shutil
import sqlite3
import sys
import tempfile

FRAME = 24 + 4096
DAY_MS = 86_400_000


def connect(path):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA page_size = 4096")
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = OFF")  # counting pages, not waiting for them
    c.execute("PRAGMA cache_size = -65536")
    c.execute("PRAGMA wal_autocheckpoint = 0")
    return c


def frames(path, c, work):
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    work(c)
    return os.path.getsize(path + "-wal") // FRAME


def main():
    per_day = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(16)
    d = tempfile.mkdtemp(prefix="herald-dedupe-")
    base = os.path.join(d, "base.db")
    c = connect(base)
    c.executescript(
        """CREATE TABLE dedupe_keys (key BLOB PRIMARY KEY, applied_at INTEGER NOT NULL) WITHOUT ROWID;
           CREATE INDEX dedupe_keys_by_age ON dedupe_keys(applied_at);"""
    )
    for day in range(8):
        c.execute("BEGIN")
        c.executemany(
            "INSERT INTO dedupe_keys VALUES (?, ?)",
            ((rng.randbytes(16), day * DAY_MS + i * DAY_MS // per_day) for i in range(per_day)),
        )
        c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = c.execute("SELECT count(*) FROM dbstat WHERE name = 'dedupe_keys' AND pagetype = 'leaf'").fetchone()[0]
    c.close()
    print(f"{8 * per_day:,} keys over 8 days, dedupe_keys {pages:,} leaf pages; expiring day 1 ({per_day:,} keys):")
    cutoff = DAY_MS

    def variant(name, work, by_age=True, expires=True):
        path = os.path.join(d, "variant.db")
        shutil.copy(base, path)
        c = connect(path)
        if not by_age:
            c.execute("DROP INDEX dedupe_keys_by_age")
        n = frames(path, c, work)
        left = c.execute("SELECT count(*) FROM dedupe_keys WHERE applied_at < ?", (cutoff,)).fetchone()[0]
        c.close()
        assert left == 0 or not expires, f"{name}: {left} expired keys left"
        per = "per expired key" if expires else "per inserted key"
        print(f"  {name:52} {n:>9,} WAL frames, {n / per_day:.3f} {per}")
        for f in (path, path + "-wal", path + "-shm"):
            if os.path.exists(f):
                os.remove(f)

    def oldest_first(batch):
        def work(c):
            while True:
                c.execute("BEGIN")
                cur = c.execute(
                    "DELETE FROM dedupe_keys WHERE key IN "
                    "(SELECT key FROM dedupe_keys WHERE applied_at < ? ORDER BY applied_at LIMIT ?)",
                    (cutoff, batch),
                )
                c.execute("COMMIT")
                if cur.rowcount == 0:
                    return
        return work

    def sweep(c):
        cursor = b""
        while True:
            c.execute("BEGIN")
            last = c.execute(
                "SELECT max(key), count(*) FROM (SELECT key FROM dedupe_keys WHERE key > ? ORDER BY key LIMIT 1000)",
                (cursor,),
            ).fetchone()
            c.execute(
                "DELETE FROM dedupe_keys WHERE key IN (SELECT key FROM dedupe_keys WHERE key > ? ORDER BY key "
                "LIMIT 1000) AND applied_at < ?",
                (cursor, cutoff),
            )
            c.execute("COMMIT")
            if last[1] < 1000:
                return
            cursor = last[0]

    def insert_day(c):
        for start in range(0, per_day, 10):
            c.execute("BEGIN")
            c.executemany(
                "INSERT INTO dedupe_keys VALUES (?, ?)",
                ((rng.randbytes(16), 8 * DAY_MS + start + i) for i in range(10)),
            )
            c.execute("COMMIT")

    variant("oldest first, 1,000 per commit (the store today)", oldest_first(1000))
    variant("oldest first, all in one commit", oldest_first(per_day))
    variant("key order sweep, 1,000 scanned per commit", sweep)
    variant("key order sweep, without the by-age index", sweep, by_age=False)
    variant("for scale: a day's inserts, 10 per commit", insert_day, expires=False)
    variant("... without the by-age index", insert_day, by_age=False, expires=False)
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
