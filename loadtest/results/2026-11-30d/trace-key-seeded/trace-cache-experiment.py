# Trace inserts in steady state: the seeded trace db, 500-row batches (a quarter second at 2,000/s), with the
# event-id index as it is vs keyed by an 8-byte hash. CPU per row and WAL pages per batch.
import os, sqlite3, shutil, sys, time, hashlib, random
seed = "/work/notes/seed0/herald.trace.db"
def run(variant, batches=80, per=500):
    d = f"/work/notes/tracex/{variant}"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    p = f"{d}/t.db"; shutil.copy(seed, p)
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
    if variant == "hash":
        t0 = time.time()
        c.execute("DROP INDEX trace_steps_event")
        c.execute("ALTER TABLE trace_steps ADD COLUMN event_key INTEGER")
        c.create_function("k", 1, lambda s: int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little", signed=True) if s else None, deterministic=True)
        c.execute("UPDATE trace_steps SET event_key = k(event_id) WHERE event_id IS NOT NULL")
        c.execute("CREATE INDEX trace_steps_event ON trace_steps (event_key) WHERE event_key IS NOT NULL")
        print(f"  migration {time.time()-t0:.1f} s")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    c = sqlite3.connect(p, isolation_level=None); c.execute("PRAGMA synchronous=OFF"); c.execute("PRAGMA wal_autocheckpoint=0")
    idx = dict(c.execute("select name, count(*) from dbstat group by name").fetchall())
    nid = c.execute("select max(notification_id) from trace_steps").fetchone()[0] or 0
    rnd = random.Random(7)
    rows = []
    for b in range(batches):
        batch = []
        for i in range(per):
            nid += 1
            eid = "sha256:" + hashlib.sha256(f"e{b}-{i}".encode()).hexdigest()
            key = int.from_bytes(hashlib.sha256(eid.encode()).digest()[:8], "little", signed=True)
            batch.append((int(time.time()*1000), "%016x" % (0x688aeae9f3000000 + b*per + i), eid, key, nid, f"lt-{rnd.randrange(10000)}", "stored", "n1", "x"*315))
        rows.append(batch)
    t0 = time.process_time()
    for batch in rows:
        c.execute("BEGIN")
        if variant == "hash":
            c.executemany("INSERT INTO trace_steps (at, trace_id, event_id, event_key, notification_id, user_id, kind, node, data) VALUES (?,?,?,?,?,?,?,?,?)", batch)
        else:
            c.executemany("INSERT INTO trace_steps (at, trace_id, event_id, notification_id, user_id, kind, node, data) VALUES (?,?,?,?,?,?,?,?)", [r[:3]+r[4:] for r in batch])
        c.execute("COMMIT")
    t = time.process_time() - t0
    wal = os.path.getsize(p + "-wal") // 4120
    print(f"{variant:6s}: event index {idx.get('trace_steps_event')} pages; {t/(batches*per)*1e6:6.1f} µs CPU per row; {wal/batches:6.0f} WAL pages per {per}-row batch")
for v in []:
    run(v)
import sqlite3 as _s
def run_cache(mib):
    v = "hash"
    global run
    src = run.__code__
run_orig = run
def run2(variant, cache_kib):
    import types
    d = f"/work/notes/tracex/c{cache_kib}"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    p = f"{d}/t.db"; shutil.copy(seed, p)
    c = sqlite3.connect(p, isolation_level=None); c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
    c.execute("DROP INDEX trace_steps_event"); c.execute("ALTER TABLE trace_steps ADD COLUMN event_key INTEGER")
    c.create_function("k", 1, lambda s: int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little", signed=True) if s else None, deterministic=True)
    c.execute("UPDATE trace_steps SET event_key = k(event_id) WHERE event_id IS NOT NULL")
    c.execute("CREATE INDEX trace_steps_event ON trace_steps (event_key) WHERE event_key IS NOT NULL")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()
    c = sqlite3.connect(p, isolation_level=None); c.execute("PRAGMA synchronous=OFF"); c.execute(f"PRAGMA cache_size=-{cache_kib}")
    nid = c.execute("select max(notification_id) from trace_steps").fetchone()[0] or 0
    rnd = random.Random(7); batches, per = 80, 500; rows = []
    for b in range(batches):
        batch = []
        for i in range(per):
            nid += 1; eid = "sha256:" + hashlib.sha256(f"e{b}-{i}".encode()).hexdigest()
            key = int.from_bytes(hashlib.sha256(eid.encode()).digest()[:8], "little", signed=True)
            batch.append((int(time.time()*1000), "%016x" % (0x688aeae9f3000000 + b*per + i), eid, key, nid, f"lt-{rnd.randrange(10000)}", "stored", "n1", "x"*315))
        rows.append(batch)
    t0 = time.process_time(); r0 = os.times()
    for batch in rows:
        c.execute("BEGIN"); c.executemany("INSERT INTO trace_steps (at, trace_id, event_id, event_key, notification_id, user_id, kind, node, data) VALUES (?,?,?,?,?,?,?,?,?)", batch); c.execute("COMMIT")
    r1 = os.times()
    print(f"cache {cache_kib//1024:3d} MiB: {(r1.user-r0.user)/(batches*per)*1e6:5.1f} user + {(r1.system-r0.system)/(batches*per)*1e6:5.1f} system µs per row")
    shutil.rmtree(d)
for kib in [2000, 16384, 2000, 16384]:
    run2("hash", kib)
