# Trace inserts in steady state, replayed offline on a copy of the seeded trace (SEED below): 80 batches of 500
# steps (a quarter second at 2,000/s), SQLite from Python.
#   python3 trace-index-experiment.py        the event index over the ids' text vs over an 8-byte key of them:
#                                            index pages, CPU per step, WAL pages per batch
#   python3 trace-index-experiment.py cache  the keyed layout with the connection's cache at SQLite's default
#                                            (2,000 KiB) vs 16 MiB: user and system CPU per step
import hashlib, os, random, shutil, sqlite3, sys, time

SEED = os.environ.get("SEED", "/work/notes/seed0") + "/herald.trace.db"
WORK = os.environ.get("WORK", "/tmp/trace-index-experiment")
BATCHES, PER = 80, 500


def key(event_id):
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "little", signed=True) if event_id else None


def copy_of_seed(name, keyed):
    d = f"{WORK}/{name}"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    p = f"{d}/t.db"
    shutil.copy(SEED, p)
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=OFF")
    if keyed:  # what the trace's migration 2 does
        t0 = time.time()
        c.execute("DROP INDEX trace_steps_event")
        c.execute("ALTER TABLE trace_steps ADD COLUMN event_key INTEGER")
        c.create_function("k", 1, key, deterministic=True)
        c.execute("UPDATE trace_steps SET event_key = k(event_id) WHERE event_id IS NOT NULL")
        c.execute("CREATE INDEX trace_steps_event ON trace_steps (event_key) WHERE event_key IS NOT NULL")
        print(f"  migration {time.time() - t0:.1f} s")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA synchronous=OFF")
    c.execute("PRAGMA wal_autocheckpoint=0")
    return d, p, c


def batches(c):
    nid = c.execute("SELECT max(notification_id) FROM trace_steps").fetchone()[0] or 0
    rnd = random.Random(7)
    out = []
    for b in range(BATCHES):
        batch = []
        for i in range(PER):
            nid += 1
            eid = "sha256:" + hashlib.sha256(f"e{b}-{i}".encode()).hexdigest()
            trace = "%016x" % (0x688AEAE9F3000000 + b * PER + i)
            batch.append((int(time.time() * 1000), trace, eid, key(eid), nid, f"lt-{rnd.randrange(10000)}", "stored", "n1", "x" * 315))
        out.append(batch)
    return out


def insert(c, rows, keyed):
    for batch in rows:
        c.execute("BEGIN")
        if keyed:
            c.executemany("INSERT INTO trace_steps (at, trace_id, event_id, event_key, notification_id, user_id, kind, node, data)"
                          " VALUES (?,?,?,?,?,?,?,?,?)", batch)
        else:
            c.executemany("INSERT INTO trace_steps (at, trace_id, event_id, notification_id, user_id, kind, node, data)"
                          " VALUES (?,?,?,?,?,?,?,?)", [r[:3] + r[4:] for r in batch])
        c.execute("COMMIT")


def layouts():
    for variant in ["text", "hash", "text", "hash"]:
        keyed = variant == "hash"
        d, p, c = copy_of_seed(variant, keyed)
        index = dict(c.execute("SELECT name, count(*) FROM dbstat GROUP BY name").fetchall())["trace_steps_event"]
        rows = batches(c)
        t0 = time.process_time()
        insert(c, rows, keyed)
        t = time.process_time() - t0
        wal = os.path.getsize(p + "-wal") // 4120
        print(f"{variant:6s}: event index {index} pages; {t / (BATCHES * PER) * 1e6:6.1f} µs CPU per row; "
              f"{wal / BATCHES:6.0f} WAL pages per {PER}-row batch")
        c.close()
        shutil.rmtree(d)


def caches():
    for kib in [2000, 16384, 2000, 16384]:
        d, _, c = copy_of_seed(f"cache-{kib}", True)
        c.execute(f"PRAGMA cache_size=-{kib}")
        rows = batches(c)
        t0 = os.times()
        insert(c, rows, True)
        t1 = os.times()
        n = BATCHES * PER
        print(f"cache {kib:5d} KiB: {(t1.user - t0.user) / n * 1e6:5.1f} user + {(t1.system - t0.system) / n * 1e6:5.1f} system µs per row")
        c.close()
        shutil.rmtree(d)


if __name__ == "__main__":
    caches() if sys.argv[1:] == ["cache"] else layouts()
