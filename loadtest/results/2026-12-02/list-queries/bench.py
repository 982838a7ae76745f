import sqlite3, time, statistics, random, os, sys
random.seed(1)
import tempfile
path=os.path.join(tempfile.mkdtemp(), 'inbox.db')
if os.path.exists(path): os.remove(path)
c=sqlite3.connect(path)
# The schema: Herald's SQLite migrations at the commit measured, in order.
import re, subprocess
rev = os.environ.get('REV', '30fa397')
src = subprocess.run(['git', 'show', f'{rev}:src/inbox/sqlite.rs'], capture_output=True, text=True, check=True).stdout
block = src[src.index('const MIGRATIONS'):]
block = block[:block.index('];\n')]
migrations = [m.group(1) if m.group(1) is not None else m.group(2)
              for m in re.finditer(r'M::up\(\s*(?:r#"(.*?)"#|"([^"]*)")', block, re.S)]
c.executescript(';\n'.join(migrations))
NB=int(sys.argv[1]) if len(sys.argv)>1 else 100000
NT=int(sys.argv[2]) if len(sys.argv)>2 else 20000
rows=[]
# broadcasts and user u1's targeted rows interleaved in id order
for i in range(NB+NT):
    b = random.random() >= NT / (NB + NT)
    kind = 'rare' if (b and i % 20000 == 7) else ('k%d' % (i % 10))
    rel = 'rare' if (b and i % 20000 == 11) else str(i % 500)
    rows.append((str(i), None if b else 'u1', kind, 't', 'c', 'e', 's', 'order', rel, '{}', '{}', 0, None if b else 1))
c.executemany("INSERT INTO notifications (event_id,user_id,kind,title,content,event_type,source,related_type,related_id,data,body,created_at,read_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
top=c.execute("SELECT max(id) FROM notifications").fetchone()[0]
c.execute("INSERT INTO user_state (user_id, read_all_up_to, read_all_at) VALUES ('u1', ?, 0)", (top,))
c.execute("INSERT INTO inbox_counts (user_id, unread) VALUES ('u1', 0)")
# a few archived broadcasts and one marked unread below the watermark
for nid in random.sample(range(1, top), 30):
    c.execute("INSERT OR IGNORE INTO broadcast_state (user_id, notification_id, archived_at) VALUES ('u1', ?, 1)", (nid,))
c.commit()
COLS_T="id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted"
BSEL="""SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted
    FROM notifications n
    LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
    LEFT JOIN user_state w ON w.user_id = ?1
    WHERE n.user_id IS NULL AND COALESCE(s.deleted, 0) = 0"""
def old(unread, archived):
    u = "AND read_at IS NULL AND muted = 0" if unread else ""
    a = "archived_at IS NOT NULL" if archived else "archived_at IS NULL"
    f = "AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR related_type = ?5) AND (?6 IS NULL OR related_id = ?6)"
    bu = "AND s.read_at IS NULL AND (COALESCE(s.unread, 0) = 1 OR w.read_all_up_to IS NULL OR n.id > w.read_all_up_to)" if unread else ""
    bf = "AND (?4 IS NULL OR n.kind = ?4) AND (?5 IS NULL OR n.related_type = ?5) AND (?6 IS NULL OR n.related_id = ?6)"
    return f"""SELECT * FROM (SELECT {COLS_T} FROM notifications
                     WHERE user_id = ?1 AND id < ?2 {u} AND {a} {f} ORDER BY id DESC LIMIT ?3)
                 UNION ALL
                 SELECT * FROM ({BSEL} AND n.id < ?2 {bu} AND s.{a} {bf}
                                ORDER BY n.id DESC LIMIT ?3)
                 ORDER BY id DESC LIMIT ?3"""
new = {}
for part in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'new.sql')).read().split(';;\n'):
    part = part.strip()
    if not part: continue
    name, sql = part.split('\n', 1)
    new[name[3:]] = sql
cases = {
 'plain': (old(False, False), (None, None, None), ()),
 'unread': (old(True, False), (None, None, None), ()),
 'archived': (old(False, True), (None, None, None), ()),
 'kind': (old(False, False), ('rare', None, None), ('rare',)),
 'related': (old(False, False), (None, 'order', 'rare'), ('order', 'rare')),
 'related_type': (old(False, False), (None, 'order', None), ('order',)),
}
def timeit(sql, args, n=15):
    ts=[]; res=None
    for _ in range(n):
        t=time.perf_counter(); res=c.execute(sql, args).fetchall(); ts.append(time.perf_counter()-t)
    return statistics.median(ts)*1000, [r[0] for r in res]
print(f"sqlite {sqlite3.sqlite_version}; {NB} broadcasts, {NT} targeted rows of u1 (all read, read_all at the top), 30 archived broadcasts")
print(f"{'list':10} {'before ms':>10} {'after ms':>10} {'ratio':>8}  same rows")
for name,(osql, ofilters, nfilters) in cases.items():
    base = ('u1', 2**62, 20)
    to, ro = timeit(osql, base + ofilters)
    tn, rn = timeit(new[name], base + nfilters)
    print(f"{name:10} {to:10.3f} {tn:10.3f} {to/tn:8.1f}x  {ro == rn} ({len(rn)} rows)")
