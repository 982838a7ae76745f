#!/usr/bin/env bash
# The checkpointer A/B of BENCHMARKS.md (2026-11-30, 11:40–12:40), as run. One experimental build of 44be868's
# change that read HERALD_EXP_CKPT_NOSYNC=0 to open the checkpointer on the default VFS (the build before it);
# `herald-ck-off` / `herald-ck-on` were two-line wrappers setting it or not. Each run: `perf trace` of every
# fdatasync/fsync on the machine, summarised per thread by syncdist.py (syncs.txt), and the load tool's report.
#   checkpointer-fresh/:   empty inbox (as bench.sh), 20,000 events at 2,000/s
#   checkpointer-seeded/:  SEED=seed1, a 127 MB inbox and 157 MB trace (an unbounded run's, checkpointed)
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED_ARG=${SEED:+SEED=$SEED}
for i in 1 2 3; do for v in ck-off ck-on; do
  (perf trace -a -e 'fdatasync,fsync' -o "/tmp/pt-$v-$i.txt" &); sleep 1
  env $SEED_ARG MODE=none HERALD_BIN="/work/notes/herald-$v" OUT="/tmp/ab-$v-$i" scripts/profile.sh
  pkill -INT -f 'perf trace'; sleep 2
done; done
python3 loadtest/results/2026-11-30e/syncdist.py /tmp/pt-ck-*.txt
