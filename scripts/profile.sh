#!/usr/bin/env bash
# A profile of Herald's targeted path — one event per HTTP request, as services publish — taken only while the
# load tool's measured phase runs (its --on-measure-start/--on-measure-end hooks), not while sessions connect.
#
#   scripts/profile.sh                 # MODE=perf: where the CPU time goes (sampled call stacks)
#   MODE=callgrind scripts/profile.sh  # instructions per event, per function: a count that stays the same on a
#                                      # busy machine, for before/after comparisons of a change
#   MODE=threads scripts/profile.sh    # per thread: user and system CPU µs per event, and context switches
#                                      # per event (voluntary: it waited; involuntary: it was preempted)
#   MODE=none scripts/profile.sh       # no profiler: the load tool's report only (disk KiB per event, CPU)
#
# MODE=perf: Herald (release) on HERALD_CORE, herald-loadtest on LOAD_CORE, `perf record` (software clock
# sampling at FREQ Hz with DWARF call stacks; this VM exposes no hardware counters, so `perf stat -e
# instructions` reports "not supported") attached to Herald for the phase. Writes OUT/perf.data,
# OUT/perf-flat.txt (self time per function) and OUT/perf-tree.txt (call tree), plus the load tool's report.
#
# MODE=callgrind: Herald under valgrind's callgrind with instrumentation off until the phase starts
# (callgrind_control --instr=on) and dumped when it ends, so the counts are the measured phase's. Writes
# OUT/callgrind.out.measured, OUT/callgrind-self.txt and OUT/callgrind-inclusive.txt (instructions per function,
# without and with callees) and prints Ir (instructions) per event. valgrind
# runs Herald ~50× slower, so the defaults are a small run at a low rate; keep RATE, EVENTS and SESSIONS the
# same across the runs you compare (group commits hold more events at higher rates, which changes the count).
#
# MODE=threads: no profiler; /proc/PID/task/*/{stat,status} read when the phase starts and ends, the difference
# per thread name (threads of one name summed, e.g. tokio's workers) divided by the events acknowledged. Clock
# ticks are 10 ms, so keep EVENTS large enough (the default 20,000 at 2,000/s gives ~0.5 µs per event
# resolution). Writes OUT/threads.txt.
#
# Environment: MODE (perf), OUT (/tmp/herald-profile-DATE), SESSIONS, EVENTS, RATE (0 = unbounded), BATCH (1),
# CONCURRENCY (32), FREQ (perf: 999), HERALD_CORE (0), LOAD_CORE (1), CARGO_TARGET_DIR (/work/target-bench),
# EXTRA_HERALD_ENV (e.g. "HERALD__TRACE__ENABLED=false"), HERALD_BIN (a herald binary to profile instead of
# building this checkout's, e.g. a copy of the build before a change, for a before/after comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-perf}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${OUT:-/tmp/herald-profile-$(date +%Y%m%d-%H%M%S)}
HERALD_CORE=${HERALD_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
BATCH=${BATCH:-1}
CONCURRENCY=${CONCURRENCY:-32}
FREQ=${FREQ:-999}
EXTRA_HERALD_ENV=${EXTRA_HERALD_ENV:-}
case $MODE in
  perf) SESSIONS=${SESSIONS:-10000} EVENTS=${EVENTS:-20000} RATE=${RATE:-2000} ;;
  callgrind) SESSIONS=${SESSIONS:-200} EVENTS=${EVENTS:-1000} RATE=${RATE:-100} ;;
  none | threads) SESSIONS=${SESSIONS:-10000} EVENTS=${EVENTS:-20000} RATE=${RATE:-2000} ;;
  *) echo "MODE must be perf, callgrind, threads or none" >&2; exit 2 ;;
esac

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# shellcheck source=lib/services.sh
source scripts/lib/services.sh
case $MODE in
  perf) ensure_packages perf:linux-perf ;;
  callgrind) ensure_packages valgrind:valgrind callgrind_control:valgrind ;;
  none | threads) ensure_packages python3:python3 ;;
esac

log "building release binaries into $CARGO_TARGET_DIR"
if [ -n "${HERALD_BIN:-}" ]; then cargo build --release -q -p herald-loadtest
else cargo build --release -q -p herald -p herald-loadtest; fi
HERALD=${HERALD_BIN:-$CARGO_TARGET_DIR/release/herald}
LT=$CARGO_TARGET_DIR/release/herald-loadtest
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HERALD_PID=
cleanup() {
  [ -n "$HERALD_PID" ] && kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true
  stop_services
}
trap cleanup EXIT

wrap=()
start_hook= end_hook=
case $MODE in
  perf)
    start_hook="perf record -F $FREQ --call-graph dwarf -p \$SERVER_PID -o $OUT/perf.data >$OUT/perf.log 2>&1 &
      echo \$! >$OUT/perf.pid; sleep 1"
    end_hook="kill -INT \$(cat $OUT/perf.pid); while kill -0 \$(cat $OUT/perf.pid) 2>/dev/null; do sleep 0.2; done"
    ;;
  callgrind)
    wrap=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUT/callgrind.out.%p")
    start_hook="callgrind_control --instr=on \$SERVER_PID >/dev/null"
    end_hook="callgrind_control --dump=measured \$SERVER_PID >/dev/null && callgrind_control --instr=off \$SERVER_PID >/dev/null"
    ;;
  threads)
    # One line per thread: tid, name, utime and stime (clock ticks), voluntary and involuntary switches.
    snap='for t in /proc/$SERVER_PID/task/*; do
        s=$(cat $t/stat 2>/dev/null) || continue; s=${s##*) }; set -- $s
        printf "%s\t%s\t%s\t%s\t%s\t%s\n" "${t##*/}" "$(cat $t/comm)" "${12}" "${13}" \
          "$(sed -n "s/^voluntary_ctxt_switches:\t*//p" $t/status)" \
          "$(sed -n "s/^nonvoluntary_ctxt_switches:\t*//p" $t/status)"; done'
    start_hook="$snap >$OUT/threads-start.tsv"
    end_hook="$snap >$OUT/threads-end.tsv"
    ;;
  none) start_hook=true end_hook=true ;;
esac

# shellcheck disable=SC2206
envs=(HERALD__SERVER__BIND=127.0.0.1:0 HERALD__LOG__FILTER=warn HERALD__SERVER__DEMO_DIR=
      "HERALD__STORE__URL=sqlite://$OUT/herald.db" $EXTRA_HERALD_ENV)
env "${envs[@]}" taskset -c "$HERALD_CORE" "${wrap[@]}" "$HERALD" serve >"$OUT/herald.stdout" 2>"$OUT/herald.stderr" &
HERALD_PID=$!
deadline=$((SECONDS + 300))
until grep -q 'herald listening on' "$OUT/herald.stdout" 2>/dev/null; do
  if ! kill -0 "$HERALD_PID" 2>/dev/null || ((SECONDS > deadline)); then
    cat "$OUT/herald.stderr" >&2; echo "herald did not start" >&2; exit 1
  fi
  sleep 0.2
done
URL=$(sed -n 's/^herald listening on \(http:\/\/[^ ]*\).*/\1/p' "$OUT/herald.stdout" | head -1)
log "$MODE: herald pid $HERALD_PID at $URL; $EVENTS events to $SESSIONS sessions at ${RATE}/s (0: unbounded)"

taskset -c "$LOAD_CORE" "$LT" targeted -n "$SESSIONS" -m "$EVENTS" --rate "$RATE" --batch "$BATCH" \
  --concurrency "$CONCURRENCY" --url "$URL" --server-pid "$HERALD_PID" --label "profile-$MODE" \
  --json-out "$OUT/report.json" --connect-timeout 120 --drain-timeout 60 --deadline 1800 \
  --on-measure-start "$start_hook" --on-measure-end "$end_hook" | sed 's/^/    /'
acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["sent"]["acked"])' "$OUT/report.json")

case $MODE in
  perf)
    perf report -i "$OUT/perf.data" --no-children --percent-limit 0.5 --stdio -g none --sort dso,symbol 2>/dev/null \
      | sed -E 's/[[:space:]]+(-[[:space:]]+)*$//' >"$OUT/perf-flat.txt"
    perf report -i "$OUT/perf.data" --children --percent-limit 2 --stdio -g caller,0.5,callee \
      >"$OUT/perf-tree.txt" 2>/dev/null
    log "top of the flat profile ($acked events acknowledged):"
    grep -v '^#' "$OUT/perf-flat.txt" | sed '/^$/d' | head -25
    echo "perf data: $OUT/perf.data; flat: $OUT/perf-flat.txt; call tree: $OUT/perf-tree.txt"
    ;;
  callgrind)
    measured=$(grep -l '^desc: .*measured' "$OUT"/callgrind.out.* | head -1)
    [ -n "$measured" ] || { echo "no measured dump found in $OUT" >&2; exit 1; }
    mv "$measured" "$OUT/callgrind.out.measured"
    callgrind_annotate --auto=no --inclusive=no "$OUT/callgrind.out.measured" >"$OUT/callgrind-self.txt" 2>/dev/null || true
    callgrind_annotate --auto=no --inclusive=yes "$OUT/callgrind.out.measured" >"$OUT/callgrind-inclusive.txt" 2>/dev/null || true
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$OUT/callgrind.out.measured" | head -1)
    python3 - "$ir" "$acked" <<'PY'
import sys
ir, n = int(sys.argv[1]), int(sys.argv[2])
print(f"instructions in the measured phase: {ir:,}; events acknowledged: {n:,}; per event: {ir / max(n, 1):,.0f}")
PY
    log "top of the per-function counts (self):"
    grep -E '^ *[0-9,]+ \(' "$OUT/callgrind-self.txt" | sed -n '2,21p' | cut -c1-220
    echo "per function: $OUT/callgrind-self.txt, $OUT/callgrind-inclusive.txt (or kcachegrind $OUT/callgrind.out.measured)"
    ;;
  threads)
    python3 - "$OUT/threads-start.tsv" "$OUT/threads-end.tsv" "$acked" "$(getconf CLK_TCK)" <<'PY' | tee "$OUT/threads.txt"
import sys
def load(path):
    rows = {}
    for line in open(path):
        tid, name, ut, st, vcs, nvcs = line.rstrip("\n").split("\t")
        rows[tid] = (name, int(ut), int(st), int(vcs or 0), int(nvcs or 0))
    return rows
start, end, n, hz = load(sys.argv[1]), load(sys.argv[2]), max(int(sys.argv[3]), 1), int(sys.argv[4])
per = {}
for tid, (name, ut, st, vcs, nvcs) in end.items():
    _, ut0, st0, vcs0, nvcs0 = start.get(tid, (name, 0, 0, 0, 0))
    p = per.setdefault(name, [0, 0, 0, 0, 0])
    for i, d in enumerate((ut - ut0, st - st0, vcs - vcs0, nvcs - nvcs0, 1)):
        p[i] += d
us = 1e6 / hz / n
print(f"{n:,} events acknowledged; per event, by thread name (threads of one name summed):")
print(f"{'thread':20} {'threads':>7} {'user µs':>8} {'system µs':>9} {'waits':>6} {'preempted':>9}")
total = [0, 0, 0, 0]
for name, (ut, st, vcs, nvcs, k) in sorted(per.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
    print(f"{name:20} {k:>7} {ut * us:8.1f} {st * us:9.1f} {vcs / n:6.2f} {nvcs / n:9.2f}")
    total = [a + b for a, b in zip(total, (ut, st, vcs, nvcs))]
print(f"{'all':20} {'':>7} {total[0] * us:8.1f} {total[1] * us:9.1f} {total[2] / n:6.2f} {total[3] / n:9.2f}")
PY
    ;;
  none) echo "report: $OUT/report.json" ;;
esac
