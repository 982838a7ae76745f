#!/usr/bin/env python3
"""How fast this machine is right now, in two figures a benchmark's results depend on.

    python3 scripts/lib/machine.py DIR     # DIR: a directory on the filesystem Herald's database will use

The same kind of VM has measured Herald at twice the speed one day as the next (BENCHMARKS.md); absolute
figures from two runs compare only if the machine was the same. This prints, for the record beside a run's
results:

- CPU: milliseconds for a fixed pure-Python workload (branches, small allocations, dict lookups), the
  median of 7 — run it pinned to Herald's core (`taskset -c N`) so it measures that core;
- disk: a 4 KiB `pwrite` then `fdatasync` of one file in DIR, 400 times (as an SQLite commit syncs its WAL):
  p50 and p99 in microseconds;
- what else is running: the load average and whether DAMON's `kdamond` (which slowed one machine) is alive.

It measures; it asserts nothing (the figures vary with the neighbours). Python 3 standard library only.
"""

import os
import platform
import statistics
import sys
import tempfile
import time


def cpu_ms() -> float:
    def work() -> int:
        d: dict[int, int] = {}
        s = 0
        for i in range(200_000):
            d[i & 1023] = d.get(i & 1023, 0) + i
            if i % 3 == 0:
                s += len(str(i))
            else:
                s ^= i
        return s + len(d)

    runs = []
    for _ in range(7):
        start = time.perf_counter()
        work()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def sync_us(directory: str) -> tuple[float, float]:
    block = os.urandom(4096)
    fd, path = tempfile.mkstemp(prefix="herald-machine-", dir=directory)
    try:
        times = []
        for i in range(400):
            start = time.perf_counter()
            os.pwrite(fd, block, (i % 256) * 4096)
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1e6)
        times.sort()
        return times[len(times) // 2], times[int(len(times) * 0.99)]
    finally:
        os.close(fd)
        os.unlink(path)


def kdamond() -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("kdamond"):
                        return True
            except OSError:
                pass
    return False


def main() -> None:
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: machine.py DIR (a directory on the filesystem the database will use)")
    p50, p99 = sync_us(sys.argv[1])
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"cpu: fixed Python workload {cpu_ms():.1f} ms (median of 7; lower is faster)")
    print(f"disk: 4 KiB pwrite + fdatasync p50 {p50:.0f} µs, p99 {p99:.0f} µs (400 in {sys.argv[1]})")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; kdamond {'running' if kdamond() else 'not running'}")


if __name__ == "__main__":
    main()
