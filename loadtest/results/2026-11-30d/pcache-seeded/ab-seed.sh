#!/usr/bin/env bash
# The seeded A/B of 2026-11-30 (BENCHMARKS.md, "SQLite's page cache"): two builds alternating, each run from the
# same copy of a steady-state inbox. Made the seed with
#   MODE=none RATE=0 EVENTS=400000 OUT=$SEED scripts/profile.sh     (cut at 60 s: 297,223 events)
# and checkpointed it (PRAGMA wal_checkpoint(TRUNCATE)): herald.db 30,990 pages (127 MB), herald.trace.db 37,002.
# These runs copied the seed by hand, which scripts/profile.sh's SEED= now does.
#   BASE=<0c6d801 build> NEW=<sqlite_pcache build> SEED=<dir> [RATE=0 EVENTS=60000] ab-seed.sh
set -u
RATE=${RATE:-2000}; EVENTS=${EVENTS:-40000}; ROUNDS=${ROUNDS:-3}; TAG=${TAG:-ab}
for r in $(seq 1 "$ROUNDS"); do
  for b in "$BASE" "$NEW"; do
    out=/tmp/$TAG/$(basename "$b")-$r
    SEED=$SEED MODE=threads RATE=$RATE EVENTS=$EVENTS HERALD_BIN=$b OUT=$out scripts/profile.sh >"$out.log" 2>&1
  done
done
