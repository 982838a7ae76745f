import os, time, sys
path = 'wal.bin'; size = 64 << 20; chunk = 20 * 1024
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
if os.fstat(fd).st_size < size:
    z = b'\0' * (1 << 20)
    for i in range(64): os.pwrite(fd, z, i << 20)
    os.fsync(fd)
buf = os.urandom(chunk)
n = int(sys.argv[1]); rate = float(sys.argv[2])
lat = []; off = 0; t0 = time.perf_counter()
for i in range(n):
    if rate > 0:
        due = t0 + i / rate
        while time.perf_counter() < due: pass
    s = time.perf_counter()
    os.pwrite(fd, buf, off); os.fdatasync(fd)
    lat.append(time.perf_counter() - s)
    off = (off + chunk) % (size - chunk)
lat.sort()
q = lambda p: lat[min(len(lat)-1, int(p*len(lat)))]*1e3
print(f"n={n} rate={rate} p50={q(.5):.3f} p90={q(.9):.3f} p99={q(.99):.3f} p999={q(.999):.3f} max={lat[-1]*1e3:.1f} ms; >3ms {sum(l>0.003 for l in lat)}, >10ms {sum(l>0.01 for l in lat)}")
