#!/usr/bin/env bash
# A profile of Herald's targeted path — one event per HTTP request, as services publish — taken only while the
# load tool's measured phase runs (its --on-measure-start/--on-measure-end hooks), not while sessions connect.
#
#   scripts/profile.sh                 # MODE=perf: where the CPU time goes (sampled call stacks)
#   MODE=callgrind scripts/profile.sh  # instructions per event, per function: a count that stays the same on a
#                                      # busy machine, for before/after comparisons of a change
#   MODE=threads scripts/profile.sh    # per thread: user and system CPU µs per event, and context switches
#                                      # per event (voluntary: it waited; involuntary: it was preempted)
#   MODE=syscalls scripts/profile.sh   # system calls per thread and per event (perf trace), for 5 s of the phase
#   MODE=pages scripts/profile.sh      # which B-trees each group commit writes: WAL frames per commit, by table
#                                      # and index (what the storage layout costs in pages, before any CPU)
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
# MODE=pages: when the phase ends, a copy of the inbox's WAL (its frames since it last started again, i.e. since
# the last complete checkpoint: a few thousand commits) and then of its database file; the frames are grouped into
# commits (a frame with a commit size ends one) and each page is named by the copy's `dbstat` (SQLite opens the
# copy with its WAL, so pages the WAL added are named too). Writes OUT/pages.txt: notifications per commit (the
# growth of their AUTOINCREMENT counter, which every commit writing one rewrites), and frames per commit in all
# and per table or index. A page named `?` was freed since (rare).
#
# MODE=syscalls: `perf trace -s` attached to Herald for the first TRACE_SECS (5) seconds of the phase: system
# calls per thread, their count and time. Writes OUT/syscalls-raw.txt (perf's summary) and OUT/syscalls.txt (the
# calls per event, taking RATE × TRACE_SECS events in the window; RATE=0 prints counts only). perf trace slows
# every call, so commits then hold more events than untraced: read the calls per request or per commit
# (fdatasync counts the writer's commits), not the run's latency or batching.
#
# MODE=threads: no profiler; /proc/PID/task/*/{stat,status} read when the phase starts and ends, the difference
# per thread name (threads of one name summed, e.g. tokio's workers) divided by the events acknowledged. Clock
# ticks are 10 ms, so keep EVENTS large enough (the default 20,000 at 2,000/s gives ~0.5 µs per event
# resolution). Writes OUT/threads.txt.
#
# Every mode writes OUT/machine.txt: how fast the machine was (scripts/lib/machine.py).
#
# VIA=amqp profiles the AMQP path instead: RabbitMQ started (scripts/lib/services.sh) and pinned to LOAD_CORE,
# off Herald's core, Herald consuming its queue, the load tool publishing one event per message with confirms
# (CONCURRENCY in flight) at RATE (give one: unbounded publishing outruns the consumer and measures the queue).
# The CPU per event is then the consumer's: AMQP decoding, the batch's commit, ack and frames.
#
# Environment: MODE (perf), VIA (http or amqp), TRACE_SECS (syscalls: 5), OUT (/tmp/herald-profile-DATE), SESSIONS, EVENTS, RATE (0 = unbounded), BATCH (1),
# CONCURRENCY (32), FREQ (perf: 999), HERALD_CORE (0), LOAD_CORE (1), CARGO_TARGET_DIR (/work/target-bench),
# EXTRA_HERALD_ENV (e.g. "HERALD__TRACE__ENABLED=false"), HERALD_BIN (a herald binary to profile instead of
# building this checkout's, e.g. a copy of the build before a change, for a before/after comparison), SEED (a
# folder whose herald.db and herald.trace.db, with their -wal files, are copied into OUT before Herald starts:
# an inbox in steady state instead of an empty one, e.g. the OUT of an earlier `MODE=none RATE=0 EVENTS=300000`
# run; every run starts from the same copy).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-perf}
VIA=${VIA:-http}
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
  none | threads | pages | syscalls) SESSIONS=${SESSIONS:-10000} EVENTS=${EVENTS:-20000} RATE=${RATE:-2000} ;;
  *) echo "MODE must be perf, callgrind, threads, pages, syscalls or none" >&2; exit 2 ;;
esac
case $VIA in
  http | amqp) ;;
  *) echo "VIA must be http or amqp" >&2; exit 2 ;;
esac

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# shellcheck source=lib/services.sh
source scripts/lib/services.sh
case $MODE in
  perf | syscalls) ensure_packages perf:linux-perf ;;
  callgrind) ensure_packages valgrind:valgrind callgrind_control:valgrind ;;
  none | threads | pages) ensure_packages python3:python3 ;;
esac

log "building release binaries into $CARGO_TARGET_DIR"
if [ -n "${HERALD_BIN:-}" ]; then cargo build --release -q -p herald-loadtest
else cargo build --release -q -p herald -p herald-loadtest; fi
HERALD=${HERALD_BIN:-$CARGO_TARGET_DIR/release/herald}
LT=$CARGO_TARGET_DIR/release/herald-loadtest
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -n "${SEED:-}" ]; then
  rm -f "$OUT"/herald.db* "$OUT"/herald.trace.db*
  for f in herald.db herald.db-wal herald.trace.db herald.trace.db-wal; do
    if [ -f "$SEED/$f" ]; then cp "$SEED/$f" "$OUT/$f"; fi
  done
  [ -f "$OUT/herald.db" ] || { echo "SEED=$SEED has no herald.db" >&2; exit 2; }
fi
taskset -c "$HERALD_CORE" python3 scripts/lib/machine.py "$OUT" >"$OUT/machine.txt"
log "the machine now: $(sed -n 's/^cpu: //p; s/^disk: //p' "$OUT/machine.txt" | paste -sd ';')"
HERALD_PID=
cleanup() {
  [ -n "$HERALD_PID" ] && kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true
  stop_services
}
trap cleanup EXIT
via=()
if [ "$VIA" = amqp ]; then
  start_rabbitmq
  # The broker, its threads and epmd on the load core: Herald's core is Herald's.
  pin_tree() { taskset -a -p -c "$LOAD_CORE" "$1" >/dev/null 2>&1 || true; for c in $(pgrep -P "$1"); do pin_tree "$c"; done; }
  for pid in "${_HERALD_PIDS[-1]}" $(pgrep -x epmd); do pin_tree "$pid"; done
  EXTRA_HERALD_ENV="HERALD__AMQP__ENABLED=true HERALD__AMQP__URL=$HERALD_TEST_AMQP_URL $EXTRA_HERALD_ENV"
  via=(--via amqp --amqp-url "$HERALD_TEST_AMQP_URL")
fi

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
  pages)
    # The WAL first: a checkpoint between the two copies then only moves pages the WAL copy still names.
    start_hook=true
    end_hook="mkdir -p $OUT/pages && cp $OUT/herald.db-wal $OUT/pages/herald.db-wal && cp $OUT/herald.db $OUT/pages/herald.db"
    ;;
  syscalls)
    TRACE_SECS=${TRACE_SECS:-5}
    start_hook="timeout -s INT $TRACE_SECS perf trace -s -p \$SERVER_PID -o $OUT/syscalls-raw.txt >$OUT/perf.log 2>&1 &
      echo \$! >$OUT/perf.pid"
    end_hook="while kill -0 \$(cat $OUT/perf.pid) 2>/dev/null; do sleep 0.2; done"
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
URL=$(sed -n 's/.*herald listening on \(http:\/\/[^ "]*\).*/\1/p' "$OUT/herald.stdout" | head -1)
log "$MODE: herald pid $HERALD_PID at $URL; via $VIA; $EVENTS events to $SESSIONS sessions at ${RATE}/s (0: unbounded)"

taskset -c "$LOAD_CORE" "$LT" targeted -n "$SESSIONS" -m "$EVENTS" --rate "$RATE" --batch "$BATCH" \
  --concurrency "$CONCURRENCY" --url "$URL" --server-pid "$HERALD_PID" --label "profile-$MODE" "${via[@]}" \
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
  syscalls)
    python3 - "$OUT/syscalls-raw.txt" "$RATE" "$TRACE_SECS" <<'PY' | tee "$OUT/syscalls.txt"
import re, sys
path, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
events = rate * secs
print(f"system calls by thread in the first {secs} s of the phase" +
      (f" (~{events:,} events at {rate}/s): calls per event, and their total time" if events else ": calls"))
thread = None
for line in open(path):
    head = re.match(r"\s*(\S+) \((\d+)\), \d+ events", line)
    row = re.match(r"\s*([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+([\d.]+)", line)
    if head:
        thread = head.group(1)
        print(f"{thread} (tid {head.group(2)})")
    elif row and thread and row.group(1) != "syscall":
        name, calls, ms = row.group(1), int(row.group(2)), float(row.group(4))
        per = f"{calls / events:8.2f} per event" if events else f"{calls:8d} calls"
        print(f"    {name:18} {per}  {ms:9.1f} ms")
PY
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
  pages)
    python3 - "$OUT/pages" <<'PY' | tee "$OUT/pages.txt"
import collections, sqlite3, struct, sys
d = sys.argv[1]
wal = open(f"{d}/herald.db-wal", "rb").read()
salts = wal[16:24]
size = struct.unpack(">I", wal[8:12])[0]
def varint(b, i):
    v = 0
    for k in range(9):
        c = b[i + k]
        if k == 8:
            return (v << 8) | c, i + 9
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1

def sequence(page):
    # `notifications`' AUTOINCREMENT counter in an image of sqlite_sequence's one leaf page (a table leaf: its
    # cells are (name TEXT, seq INTEGER) records). One id per notification, so its growth counts notifications.
    if page[0] != 0x0D:
        return None
    for c in range(struct.unpack(">H", page[3:5])[0]):
        i = struct.unpack(">H", page[8 + 2 * c:10 + 2 * c])[0]
        _, i = varint(page, i)  # payload size
        _, i = varint(page, i)  # rowid
        start = i
        hsize, i = varint(page, i)
        types = []
        while i < start + hsize:
            t, i = varint(page, i)
            types.append(t)
        at = start + hsize
        name_len = (types[0] - 13) // 2
        name = page[at:at + name_len].decode()
        at += name_len
        width = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}.get(types[1])
        if name == "notifications" and width:
            return int.from_bytes(page[at:at + width], "big", signed=True)
    return None

frames, commits, pending, images = collections.Counter(), 0, [], []
off = 32
while off + 24 + size <= len(wal) and wal[off + 8:off + 16] == salts:
    page, commit = struct.unpack(">II", wal[off:off + 8])
    pending.append((page, off + 24))
    if commit:
        commits += 1
        frames.update(p for p, _ in pending)
        images.append(dict(pending))
        pending = []
    off += 24 + size
# Opening the copy runs SQLite's WAL recovery on it (the copy, not Herald's files).
names = dict(sqlite3.connect(f"{d}/herald.db").execute("SELECT pageno, name FROM dbstat"))
by = collections.Counter()
for page, n in frames.items():
    by[names.get(page, "?")] += n
if commits < 2:
    sys.exit("the WAL copy holds fewer than two complete commits (it had just started again): run again")
seq_page = next((p for p, n in names.items() if n == "sqlite_sequence"), None)
seqs = [sequence(wal[img[seq_page]:img[seq_page] + size]) for img in images if seq_page in img]
seqs = [s for s in seqs if s is not None]
per = f"{(seqs[-1] - seqs[0]) / (commits - 1):.2f}" if len(seqs) == commits else "unknown"
print(f"{commits:,} commits in the WAL copy ({size}-byte pages); notifications per commit: {per}; "
      f"WAL frames per commit: {sum(by.values()) / commits:.2f}")
for name, n in by.most_common():
    print(f"  {name:32} {n / commits:6.2f}")
PY
    ;;
  none) echo "report: $OUT/report.json" ;;
esac
