# The inbox writer's I/O pattern without Herald: a 20 KiB pwrite + fdatasync RATE times a second, N times.
# python3 synth.py N RATE overwrite   (into a zero-filled 64 MiB file, wrapping: the WAL once it has its size)
# python3 synth.py N RATE grow        (appending to a new file: a WAL growing into new blocks)
import os, time, sys
n = int(sys.argv[1]); rate = float(sys.argv[2]); grow = sys.argv[3] == 'grow'
path = 'grow.bin' if grow else 'wal.bin'; size = 64 << 20; chunk = 20 * 1024
if grow and os.path.exists(path): os.unlink(path)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
if not grow and os.fstat(fd).st_size < size:
    z = b'\0' * (1 << 20)
    for i in range(64): os.pwrite(fd, z, i << 20)
    os.fsync(fd)
buf = os.urandom(chunk)
lat = []; off = 0; t0 = time.perf_counter()
for i in range(n):
    if rate > 0:
        due = t0 + i / rate
        while time.perf_counter() < due: pass
    s = time.perf_counter()
    os.pwrite(fd, buf, off); os.fdatasync(fd)
    lat.append(time.perf_counter() - s)
    off = off + chunk if grow else (off + chunk) % (size - chunk)
lat.sort()
q = lambda p: lat[min(len(lat)-1, int(p*len(lat)))]*1e3
print(f"n={n} rate={rate} p50={q(.5):.3f} p90={q(.9):.3f} p99={q(.99):.3f} p999={q(.999):.3f} max={lat[-1]*1e3:.1f} ms; >3ms {sum(l>0.003 for l in lat)}, >10ms {sum(l>0.01 for l in lat)}")
if grow: os.unlink(path)
