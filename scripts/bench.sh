#!/usr/bin/env bash
# The standard benchmark set behind BENCHMARKS.md, in one go: Herald (release, fresh SQLite inbox per run)
# pinned to one core, herald-loadtest pinned to the other, every entry ROUNDS times, JSON reports under
# RESULTS, then a table of medians, with the nchan reference (nginx + libnginx-mod-nchan, one worker, pinned to
# Herald's core) measured in the same run beside Herald.
#
#   scripts/bench.sh                      # everything single-node, 3 rounds, nchan beside Herald
#   ROUNDS=1 ONLY="connect-19000" scripts/bench.sh
#   AMQP=1 scripts/bench.sh               # also publish → frame through RabbitMQ, broker unpinned and pinned
#   CLUSTER=1 scripts/bench.sh            # PostgreSQL at production durability (+ Redis): one node, two nodes
#   SHORT=1 ROUNDS=1 scripts/bench.sh     # every entry with small counts: does it run end to end? (no figures)
#   BASE_BIN=/path/to/older/herald scripts/bench.sh   # before/after: every Herald entry also as base-NAME
#                                         # with that binary, the two alternating round by round
#
# RESULTS/machine.txt (and the summary's end) records how fast the machine was (scripts/lib/machine.py).
#
# Environment: ROUNDS (3), RESULTS ($CARGO_TARGET_DIR/bench-results/DATE), CARGO_TARGET_DIR (/work/target-bench,
# so a build here does not wait on the shared target dir's lock), HERALD_CORE (0), LOAD_CORE (1), ONLY (entry
# names), AMQP (0), CLUSTER (0), NCHAN (1: the nchan-* reference entries), PIN_SERVICES (0), PG_DURABLE (1:
# PostgreSQL with fsync and synchronous_commit on; 0: as the tests start it, fsync off), PG_WARM (1: PostgreSQL's
# WAL segments written once and recycled before the first round and after each, as a server that has run a while
# has them; 0: a fresh initdb's, each new segment zero-filled on first use), PEER_CORE (CLUSTER=1:
# node B's core, default HERALD_CORE), SHORT (0),
# EXTRA_HERALD_ENV (e.g. "HERALD__STORE__SYNCHRONOUS=normal"), EXTRA_LT_ARGS (appended to every entry's
# herald-loadtest arguments, split on spaces; a later option overrides an earlier one, e.g. "--drain-timeout 30"),
# BASE_BIN (an older release build of `herald`, e.g. from `git worktree add`: each round of a Herald entry runs
# it as base-NAME right before this tree's build, so before/after are measured side by side), HERALD_BIN (a
# `herald` binary, or a script that execs one, to run instead of building this checkout's: two variants of an
# experiment side by side, e.g. HERALD_BIN and BASE_BIN wrapping one build with different settings).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
RESULTS=${RESULTS:-$CARGO_TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)}
HERALD_CORE=${HERALD_CORE:-0}
# CLUSTER=1: the core of the second node (node B); by default Herald's, so both nodes share one core.
PEER_CORE=${PEER_CORE:-$HERALD_CORE}
LOAD_CORE=${LOAD_CORE:-1}
ONLY=${ONLY:-}
AMQP=${AMQP:-0}
CLUSTER=${CLUSTER:-0}
NCHAN=${NCHAN:-1}
PG_DURABLE=${PG_DURABLE:-1}
PG_WARM=${PG_WARM:-1}
SHORT=${SHORT:-0}
EXTRA_HERALD_ENV=${EXTRA_HERALD_ENV:-}
EXTRA_LT_ARGS=${EXTRA_LT_ARGS:-}
BASE_BIN=${BASE_BIN:-}
# Per entry (set around one `run`): extra environment for Herald, e.g. tracing off.
ENTRY_ENV=

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

log "building release binaries into $CARGO_TARGET_DIR"
if [ -n "${HERALD_BIN:-}" ]; then cargo build --release -q -p herald-loadtest
else cargo build --release -q -p herald -p herald-loadtest; fi
HERALD=${HERALD_BIN:-$CARGO_TARGET_DIR/release/herald}
# The Herald binary the next spawn starts (BASE_BIN for base-* runs).
RUN_BIN=$HERALD
if [ -n "$BASE_BIN" ] && [ ! -x "$BASE_BIN" ]; then echo "BASE_BIN=$BASE_BIN is not an executable" >&2; exit 2; fi
if [ ! -x "$HERALD" ]; then echo "HERALD_BIN=$HERALD is not an executable" >&2; exit 2; fi
LT=$CARGO_TARGET_DIR/release/herald-loadtest

# Both processes may use every descriptor this machine allows one process (20,000 here).
ulimit -n "$(ulimit -Hn)"
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
# How fast this machine is now (CPU on Herald's core, the sync of the disk Herald's database uses): absolute
# figures from two runs compare only when these agree.
log "the machine now"
taskset -c "$HERALD_CORE" python3 scripts/lib/machine.py "$WORK" | tee "$RESULTS/machine.txt" >&2
HERALD_PID=
PEER_PID=
NGINX_PID=
RUN_DIRS=()
AMQP_URL=

cleanup() {
  [ -n "$HERALD_PID" ] && [ -z "$NGINX_PID" ] && kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true
  [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null && wait "$PEER_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  if declare -F stop_services >/dev/null; then stop_services; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# PIN_SERVICES=1 puts the broker, the database and Redis on the load core, so Herald's core is Herald's alone.
# Off by default: on two cores the load tool then starves them (a quorum queue's confirms reach p99 250 ms), so
# by default the scheduler spreads them and the report shows how much of Herald's core they took.
pin_tree() { # pid [cores]: it, its threads and its descendants (default: the load core)
  local child
  taskset -a -p -c "${2:-$LOAD_CORE}" "$1" >/dev/null 2>&1 || true
  for child in $(pgrep -P "$1"); do pin_tree "$child" "${2:-}"; done
}
ALL_CORES=0-$(($(nproc) - 1))
# pin_broker CORES: RabbitMQ's processes (the broker and epmd) on CORES, for the entries that follow.
pin_broker() {
  local pid
  for pid in $RABBIT_PID $(pgrep -x epmd); do pin_tree "$pid" "$1"; done
  log "RabbitMQ on cores $1: $(taskset -p "$(pgrep -f beam.smp | head -1)" 2>/dev/null | sed "s/.*: //") (affinity mask of beam.smp)"
}
pin_services() {
  local pid
  for pid in "${_HERALD_PIDS[@]}" $(pgrep -x epmd) $(pgrep -f "$HERALD_SERVICES_DIR/postgres/data"); do pin_tree "$pid"; done
}
# pg_sql SQL: one statement on the benchmark's PostgreSQL.
pg_sql() {
  "$HERALD_TEST_POSTGRES_BIN/psql" -q -v ON_ERROR_STOP=1 "$HERALD_TEST_POSTGRES_URL" -c "$1" >/dev/null
}
# pg_warm: a fresh initdb has no WAL segment to reuse, so it creates and zero-fills each 16 MiB segment as its
# writes reach it and syncs it (tens of ms in which no commit finishes: at 2,000 events/s one every few seconds).
# A server that has run a while reuses the segments its checkpoints finished with (min_wal_size). Write ~1 GiB of
# WAL and checkpoint, so the rounds measure Herald's commits on a PostgreSQL in that state, not its first hour.
pg_warm() {
  log "warming PostgreSQL's WAL (1 GiB written and recycled; PG_WARM=0 skips it)"
  pg_sql "CREATE TABLE herald_bench_warm AS SELECT g AS x, repeat('x', 200) AS pad FROM generate_series(1, 3500000) g"
  pg_sql 'DROP TABLE herald_bench_warm'
  pg_sql 'CHECKPOINT'
}
RABBIT_PID=
if [ "$AMQP" = 1 ]; then
  start_rabbitmq
  RABBIT_PID=${_HERALD_PIDS[-1]}
  AMQP_URL=$HERALD_TEST_AMQP_URL
fi
if [ "$CLUSTER" = 1 ]; then
  if [ "$PG_DURABLE" = 1 ]; then export HERALD_POSTGRES_DURABLE=1; fi
  if [ "$PG_WARM" = 1 ]; then
    # Keep up to 1 GiB of finished WAL segments for reuse, as a server that has run a while has them.
    export HERALD_POSTGRES_OPTIONS="${HERALD_POSTGRES_OPTIONS:-} -c min_wal_size=1GB -c max_wal_size=4GB"
  fi
  # Without TLS, as every PostgreSQL figure in BENCHMARKS.md was measured.
  HERALD_POSTGRES_TLS=0 start_postgres
  start_redis
  if [ "$PG_WARM" = 1 ]; then pg_warm; fi
fi
if [ "$NCHAN" = 1 ] && [ "$CLUSTER" != 1 ]; then
  # Installs nginx and the nchan module if missing. The Debian package enables nginx's system service; this
  # script never starts it: each nchan round runs its own nginx from a temporary directory.
  ensure_packages nginx:nginx-light /usr/lib/nginx/modules/ngx_nchan_module.so:libnginx-mod-nchan
fi
if [ "${PIN_SERVICES:-0}" = 1 ]; then pin_services; fi

# spawn_herald NODE_ID: start one Herald; sets SPAWNED_PID and SPAWNED_URL. Single node: a fresh SQLite
# inbox. CLUSTER=1: the shared PostgreSQL inbox (emptied by the caller) and Redis between nodes.
spawn_herald() {
  local dir=$WORK/run-$RANDOM
  mkdir -p "$dir"
  RUN_DIRS+=("$dir")
  local envs=(HERALD__SERVER__BIND=127.0.0.1:0 HERALD__LOG__FILTER=warn HERALD__SERVER__DEMO_DIR=)
  if [ "$CLUSTER" = 1 ]; then
    envs+=("HERALD__STORE__URL=$HERALD_TEST_POSTGRES_URL" "HERALD__CLUSTER__REDIS_URL=$HERALD_TEST_REDIS_URL"
           "HERALD__CLUSTER__NODE_ID=$1")
  else
    envs+=("HERALD__STORE__URL=sqlite://$dir/herald.db")
  fi
  if [ -n "$AMQP_URL" ]; then envs+=(HERALD__AMQP__ENABLED=true "HERALD__AMQP__URL=$AMQP_URL"); fi
  # shellcheck disable=SC2206
  envs+=($EXTRA_HERALD_ENV $ENTRY_ENV)
  local core=$HERALD_CORE
  if [ "$1" = node-b ]; then core=$PEER_CORE; fi
  env "${envs[@]}" taskset -c "$core" "$RUN_BIN" serve >"$dir/stdout.log" 2>"$dir/stderr.log" &
  SPAWNED_PID=$!
  local deadline=$((SECONDS + 30))
  until grep -q 'herald listening on' "$dir/stdout.log" 2>/dev/null; do
    if ! kill -0 "$SPAWNED_PID" 2>/dev/null || ((SECONDS > deadline)); then
      tail -n 20 "$dir/stderr.log" >&2; echo "herald did not start" >&2
      kill "$SPAWNED_PID" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  SPAWNED_URL=$(sed -n 's/.*herald listening on \(http:\/\/[^ "]*\).*/\1/p' "$dir/stdout.log" | head -1)
}

# start_herald NODES: a fresh Herald (single node) or, with CLUSTER=1, NODES (1 or 2) Heralds on an emptied
# PostgreSQL inbox.
start_herald() {
  if [ "$CLUSTER" = 1 ]; then
    # Every round starts from an empty shared inbox, as single-node rounds start from a fresh file.
    pg_sql 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'
    # The WAL the last round wrote is recycled into segments the next one reuses (PG_WARM=1).
    if [ "$PG_WARM" = 1 ]; then pg_sql 'CHECKPOINT'; fi
    spawn_herald node-a || return 1
    HERALD_PID=$SPAWNED_PID HERALD_URL=$SPAWNED_URL
    if [ "${1:-2}" = 2 ]; then
      spawn_herald node-b || return 1
      PEER_PID=$SPAWNED_PID PEER_URL=$SPAWNED_URL
    fi
  else
    spawn_herald node || return 1
    HERALD_PID=$SPAWNED_PID HERALD_URL=$SPAWNED_URL
  fi
}

# start_nchan: a fresh nginx (no stored messages) from its own directory, config and free loopback port, one
# worker pinned to Herald's core; HERALD_PID is the worker (what the load tool measures), NGINX_PID the master.
# Each subscriber's WebSocket (/sub/USER) is a multiplexed subscriber of the channels USER and broadcast;
# /pub/CHANNEL publishes. New subscribers get only messages published after they subscribed, as Herald's
# sessions without `since`.
start_nchan() {
  local dir=$WORK/nchan-$RANDOM port
  port=$(free_port)
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $(ulimit -Hn);
# More connections than descriptors: a multiplexed subscriber holds more than one nginx connection (with as
# many as descriptors, ~350 of 19,000 subscribers were refused), and only real sockets need a descriptor.
events { worker_connections 65536; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  nchan_shared_memory_size 256m;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location ~ ^/sub/([A-Za-z0-9_-]+)\$ {
      nchan_subscriber websocket;
      nchan_channel_id \$1 broadcast;
      nchan_subscriber_first_message newest;
    }
    location ~ ^/pub/([A-Za-z0-9_-]+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
    }
  }
}
CONF
  taskset -c "$HERALD_CORE" nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  NGINX_PID=$!
  wait_for_port 127.0.0.1 "$port" 20 || { cat "$dir/error.log" "$dir/stdout.log" >&2; echo "nginx did not start" >&2; return 1; }
  HERALD_PID=$(pgrep -P "$NGINX_PID" | head -1)
  HERALD_URL=http://127.0.0.1:$port
}

stop_herald() {
  local pid
  if [ -n "$NGINX_PID" ]; then
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID= HERALD_PID=
    return 0
  fi
  for pid in $HERALD_PID $PEER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  HERALD_PID= PEER_PID=
  # The round's databases go with it (its logs stay until the end): deleted, their dirty pages are dropped, where
  # kept, the kernel's flusher would write them back 30 s later — in the middle of a later round's measurement
  # (tens of MiB of the trace's unsynced pages, measured with /proc/meminfo's Dirty).
  local d
  for d in "${RUN_DIRS[@]}"; do rm -f "$d"/herald*.db "$d"/herald*.db-wal "$d"/herald*.db-shm; done
  RUN_DIRS=()
}

# SHORT=1: small counts, to check that an entry runs end to end (a later option overrides an earlier one).
short_args() {
  case $1 in
    connect) echo "-n 2000 --settle 1" ;;
    targeted) echo "-n 1000 -m 3000 --drain-timeout 10" ;;
    broadcast) echo "-n 1000 -b 5" ;;
    resume) echo "-r 20 -k 50" ;;
  esac
}

# run NAME ARGS...: one entry, ROUNDS times, each against a fresh server. Entries named nchan-* run against
# nginx + nchan instead of Herald; cluster-* entries only (and only they) with CLUSTER=1, cluster-1node-* on one
# node, the other cluster-* on two. ARGS may name '$HERALD_URL' and '$PEER_URL'.
run() {
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  # The long entries run only when named (minutes each).
  if [[ $name == *-long ]] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local is_cluster=0
  if [[ $name == cluster-* ]]; then is_cluster=1; fi
  if [ "$is_cluster" != "$CLUSTER" ]; then return 0; fi
  if [[ $name == nchan-* ]] && [ "$NCHAN" != 1 ]; then return 0; fi
  local nodes=2
  if [[ $name == cluster-1node-* ]]; then nodes=1; fi
  # Each round: base-NAME with BASE_BIN first (when set), then NAME with this tree's build.
  local variants=("$name")
  if [ -n "$BASE_BIN" ] && [[ $name != nchan-* ]]; then variants=("base-$name" "$name"); fi
  local r label
  for r in $(seq 1 "$ROUNDS"); do
    for label in "${variants[@]}"; do
      RUN_BIN=$HERALD
      if [[ $label == base-* ]]; then RUN_BIN=$BASE_BIN; fi
      local started=0
      if [[ $name == nchan-* ]]; then start_nchan && started=1; else start_herald "$nodes" && started=1; fi
      if [ "$started" != 1 ]; then
        # e.g. a Herald that does not know a setting the entry passes (ENTRY_ENV): the rest of the set still runs.
        log "$label: the server did not start${ENTRY_ENV:+ with $ENTRY_ENV}; round skipped"
        stop_herald
        continue
      fi
      log "$label, round $r/$ROUNDS (server pid $HERALD_PID at $HERALD_URL${PEER_PID:+, peer $PEER_PID at $PEER_URL})${ENTRY_ENV:+ with $ENTRY_ENV}"
      local args=() a
      for a in "$@"; do
        a=${a//'$PEER_URL'/${PEER_URL:-}}
        args+=("${a//'$HERALD_URL'/$HERALD_URL}")
      done
      # shellcheck disable=SC2207
      if [ "$SHORT" = 1 ]; then args+=($(short_args "$1")); fi
      # shellcheck disable=SC2206
      args+=($EXTRA_LT_ARGS)
      taskset -c "$LOAD_CORE" "$LT" "${args[@]}" --url "$HERALD_URL" --server-pid "$HERALD_PID" \
        --label "$label" --json-out "$RESULTS/$label-r$r.json" --plot "$RESULTS/$label-r$r.svg" --deadline 300 \
        | sed 's/^/    /'
      stop_herald
    done
  done
}

# connect: 19,000 idle authenticated sessions (two worker processes: one process may hold 20,000 fds).
run connect-19000      connect -n 19000 --settle 3
# targeted over HTTP ingest, unbounded: 100,000 events, 20 per request, 64 requests in flight (larger group commits).
run targeted-http-max  targeted -n 10000 -m 100000 --batch 20 --concurrency 64
# targeted over HTTP ingest at a fixed 5,000 events/s, one event per request (latency, not throughput).
run targeted-http-rate targeted -n 10000 -m 25000 --rate 5000 --batch 1 --concurrency 64
# One event per request, as services publish (issue 16): unbounded with 32 requests in flight, and a fixed
# 2,000/s (p50/p99 and Herald's CPU per event: its CPU seconds over the measured phase / events).
run targeted-1-max     targeted -n 10000 -m 100000 --batch 1 --concurrency 32
run targeted-1-2000    targeted -n 10000 -m 20000 --rate 2000 --batch 1 --concurrency 32
# The same rate for 120 s (only when named in ONLY): longer than the kernel keeps a written page dirty (30 s), so
# the writeback of what the node wrote earlier falls inside the measured phase, as on a node that keeps running.
run targeted-1-2000-long targeted -n 10000 -m 240000 --rate 2000 --batch 1 --concurrency 32 --duration 130
# The same two with event tracing off (what tracing costs).
ENTRY_ENV="HERALD__TRACE__ENABLED=false" run targeted-1-max-trace-off  targeted -n 10000 -m 100000 --batch 1 --concurrency 32
ENTRY_ENV="HERALD__TRACE__ENABLED=false" run targeted-1-2000-trace-off targeted -n 10000 -m 20000 --rate 2000 --batch 1 --concurrency 32
# broadcast: 40 broadcasts to 10,000 sessions.
run broadcast-10000    broadcast -n 10000 -b 40 --concurrency 4
# resume: 200 clients each miss 100 notifications, reconnect at 100/s with since.
run resume-100         resume -r 200 -k 100 --reconnect-rate 100
# resume: 10 clients each miss 10,000 notifications.
run resume-10000       resume -r 10 -k 10000 --reconnect-rate 5
# The reference peer in the same run: nginx + nchan, one worker on Herald's core, the same sessions, payloads,
# schedules and accounting (lost, duplicated, order by nchan's per-channel message ids).
run nchan-connect-19000   connect -n 19000 --settle 3 --target nchan
run nchan-targeted-1-max  targeted -n 10000 -m 100000 --batch 1 --concurrency 32 --target nchan
run nchan-targeted-1-2000 targeted -n 10000 -m 20000 --rate 2000 --batch 1 --concurrency 32 --target nchan
run nchan-broadcast-10000 broadcast -n 10000 -b 40 --concurrency 4 --target nchan
if [ -n "$AMQP_URL" ]; then
  # publish → frame through RabbitMQ at 5,000 events/s (needs Herald's AMQP consumer): the broker left to the
  # scheduler, then pinned off Herald's core (to the load core: this machine has two).
  run targeted-amqp-5000 targeted -n 10000 -m 25000 --rate 5000 --via amqp --amqp-url "$AMQP_URL" --concurrency 64
  pin_broker "$LOAD_CORE"
  run targeted-amqp-5000-pinned targeted -n 10000 -m 25000 --rate 5000 --via amqp --amqp-url "$AMQP_URL" --concurrency 64
  pin_broker "$ALL_CORES"
fi
if [ "$CLUSTER" = 1 ]; then
  # PostgreSQL at production durability (PG_DURABLE=1, the default here), one event per request, 32 in flight:
  # one node, then two nodes on the same database with the requests alternating between them (sessions on
  # node A; node B's events reach them through Redis). --settle: node A subscribes each new user's Redis
  # channel after the session is ready (events in between come by inbox replay); let it finish first.
  run cluster-1node-max  targeted -n 10000 -m 30000 --batch 1 --concurrency 32 --settle 3
  run cluster-1node-2000 targeted -n 10000 -m 20000 --rate 2000 --batch 1 --concurrency 32 --settle 3
  run cluster-2node-max  targeted -n 10000 -m 30000 --batch 1 --concurrency 32 --settle 3 \
    --publish-url '$HERALD_URL,$PEER_URL'
  run cluster-1node-broadcast-10000 broadcast -n 10000 -b 20 --concurrency 4
  # The Redis hop: sessions on node A; events posted to node A (delivered locally) or to node B (delivered
  # through Redis). Same inbox, same rate: the difference is the hop.
  run cluster-same-node  targeted -n 2000 -m 10000 --rate 1000 --batch 1 --concurrency 32 --settle 3
  run cluster-cross-node targeted -n 2000 -m 10000 --rate 1000 --batch 1 --concurrency 32 --settle 3 \
    --publish-url '$PEER_URL'
fi

echo
{ "$LT" summary "$RESULTS"; echo; sed 's/^/    /' "$RESULTS/machine.txt"; } | tee "$RESULTS/summary.md"
echo "results: $RESULTS"
