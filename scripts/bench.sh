#!/usr/bin/env bash
# The standard benchmark set behind BENCHMARKS.md, in one go: Herald (release, fresh SQLite inbox per run)
# pinned to one core, herald-loadtest pinned to the other, every entry ROUNDS times, JSON reports under
# RESULTS, then a table of medians beside the peers' figures.
#
#   scripts/bench.sh                      # everything, 3 rounds (a few minutes)
#   ROUNDS=1 ONLY="connect-19000" scripts/bench.sh
#   AMQP=1 scripts/bench.sh               # also publish → frame through RabbitMQ (starts a broker)
#   CLUSTER=1 ONLY="cluster-same-node cluster-cross-node" scripts/bench.sh
#                                         # the Redis hop: two nodes on PostgreSQL + Redis (starts both)
#
# Environment: ROUNDS (3), RESULTS ($CARGO_TARGET_DIR/bench-results/DATE), CARGO_TARGET_DIR (/work/target-bench, so a build
# here does not wait on the shared target dir's lock), HERALD_CORE (0), LOAD_CORE (1), ONLY (entry names),
# AMQP (0), CLUSTER (0), PIN_SERVICES (0), EXTRA_HERALD_ENV (e.g. "HERALD__STORE__SYNCHRONOUS=normal").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
RESULTS=${RESULTS:-$CARGO_TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)}
HERALD_CORE=${HERALD_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ONLY=${ONLY:-}
AMQP=${AMQP:-0}
CLUSTER=${CLUSTER:-0}
EXTRA_HERALD_ENV=${EXTRA_HERALD_ENV:-}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

log "building release binaries into $CARGO_TARGET_DIR"
cargo build --release -q -p herald -p herald-loadtest
HERALD=$CARGO_TARGET_DIR/release/herald
LT=$CARGO_TARGET_DIR/release/herald-loadtest

# Both processes may use every descriptor this machine allows one process (20,000 here).
ulimit -n "$(ulimit -Hn)"
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
HERALD_PID=
PEER_PID=
AMQP_URL=

cleanup() {
  [ -n "$HERALD_PID" ] && kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true
  [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null && wait "$PEER_PID" 2>/dev/null || true
  if declare -F stop_services >/dev/null; then stop_services; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$AMQP" = 1 ] || [ "$CLUSTER" = 1 ]; then
  # shellcheck source=lib/services.sh
  source "$ROOT/scripts/lib/services.sh"
fi
# PIN_SERVICES=1 puts the broker, the database and Redis on the load core, so Herald's core is Herald's alone.
# Off by default: on two cores the load tool then starves them (a quorum queue's confirms reach p99 250 ms), so
# by default the scheduler spreads them and the report shows how much of Herald's core they took.
pin_tree() { # pid: it, its threads and its descendants
  local child
  taskset -a -p -c "$LOAD_CORE" "$1" >/dev/null 2>&1 || true
  for child in $(pgrep -P "$1"); do pin_tree "$child"; done
}
pin_services() {
  local pid
  for pid in "${_HERALD_PIDS[@]}" $(pgrep -x epmd) $(pgrep -f "$HERALD_SERVICES_DIR/postgres/data"); do pin_tree "$pid"; done
}
if [ "$AMQP" = 1 ]; then
  start_rabbitmq
  AMQP_URL=$HERALD_TEST_AMQP_URL
fi
if [ "$CLUSTER" = 1 ]; then
  start_postgres
  start_redis
fi
if [ "${PIN_SERVICES:-0}" = 1 ]; then pin_services; fi

# spawn_herald NODE_ID: start one Herald; sets SPAWNED_PID and SPAWNED_URL. Single node: a fresh SQLite
# inbox. CLUSTER=1: the shared PostgreSQL inbox (emptied by the caller) and Redis between nodes.
spawn_herald() {
  local dir=$WORK/run-$RANDOM
  mkdir -p "$dir"
  local envs=(HERALD__SERVER__BIND=127.0.0.1:0 HERALD__LOG__FILTER=warn HERALD__SERVER__DEMO_DIR=)
  if [ "$CLUSTER" = 1 ]; then
    envs+=("HERALD__STORE__URL=$HERALD_TEST_POSTGRES_URL" "HERALD__CLUSTER__REDIS_URL=$HERALD_TEST_REDIS_URL"
           "HERALD__CLUSTER__NODE_ID=$1")
  else
    envs+=("HERALD__STORE__URL=sqlite://$dir/herald.db")
  fi
  if [ -n "$AMQP_URL" ]; then envs+=(HERALD__AMQP__ENABLED=true "HERALD__AMQP__URL=$AMQP_URL"); fi
  # shellcheck disable=SC2206
  envs+=($EXTRA_HERALD_ENV)
  env "${envs[@]}" taskset -c "$HERALD_CORE" "$HERALD" serve >"$dir/stdout.log" 2>"$dir/stderr.log" &
  SPAWNED_PID=$!
  local deadline=$((SECONDS + 30))
  until grep -q 'herald listening on' "$dir/stdout.log" 2>/dev/null; do
    if ! kill -0 "$SPAWNED_PID" 2>/dev/null || ((SECONDS > deadline)); then
      cat "$dir/stderr.log" >&2; echo "herald did not start" >&2; exit 1
    fi
    sleep 0.1
  done
  SPAWNED_URL=$(sed -n 's/^herald listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/stdout.log" | head -1)
}

start_herald() {
  if [ "$CLUSTER" = 1 ]; then
    # Every round starts from an empty shared inbox, as single-node rounds start from a fresh file.
    "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql" -q "$HERALD_TEST_POSTGRES_URL" -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null
    spawn_herald node-a
    HERALD_PID=$SPAWNED_PID HERALD_URL=$SPAWNED_URL
    spawn_herald node-b
    PEER_PID=$SPAWNED_PID PEER_URL=$SPAWNED_URL
  else
    spawn_herald node
    HERALD_PID=$SPAWNED_PID HERALD_URL=$SPAWNED_URL
  fi
}

stop_herald() {
  local pid
  for pid in $HERALD_PID $PEER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  HERALD_PID= PEER_PID=
}

# run NAME ARGS...: one entry, ROUNDS times, each against a fresh Herald.
run() {
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  # Cluster entries need CLUSTER=1; with it, only they run (the others are single-node figures).
  local is_cluster=0
  if [[ $name == cluster-* ]]; then is_cluster=1; fi
  if [ "$is_cluster" != "$CLUSTER" ]; then return 0; fi
  local r
  for r in $(seq 1 "$ROUNDS"); do
    start_herald
    log "$name, round $r/$ROUNDS (herald pid $HERALD_PID at $HERALD_URL${PEER_PID:+, peer $PEER_PID at $PEER_URL})"
    local args=() a
    for a in "$@"; do args+=("${a//'$PEER_URL'/${PEER_URL:-}}"); done
    taskset -c "$LOAD_CORE" "$LT" "${args[@]}" --url "$HERALD_URL" --server-pid "$HERALD_PID" \
      --label "$name" --json-out "$RESULTS/$name-r$r.json" --plot "$RESULTS/$name-r$r.svg" --deadline 300 \
      | sed 's/^/    /'
    stop_herald
  done
}

# connect: 19,000 idle authenticated sessions (two worker processes: one process may hold 20,000 fds).
run connect-19000      connect -n 19000 --settle 3
# targeted over HTTP ingest, unbounded: 100,000 events, 20 per request, 64 requests in flight (larger group commits).
run targeted-http-max  targeted -n 10000 -m 100000 --batch 20 --concurrency 64
# targeted over HTTP ingest at a fixed 5,000 events/s, one event per request (latency, not throughput).
run targeted-http-rate targeted -n 10000 -m 25000 --rate 5000 --batch 1 --concurrency 64
# broadcast: 40 broadcasts to 10,000 sessions.
run broadcast-10000    broadcast -n 10000 -b 40 --concurrency 4
# resume: 200 clients each miss 100 notifications, reconnect at 100/s with since.
run resume-100         resume -r 200 -k 100 --reconnect-rate 100
# resume: 10 clients each miss 10,000 notifications.
run resume-10000       resume -r 10 -k 10000 --reconnect-rate 5
if [ -n "$AMQP_URL" ]; then
  # publish → frame through RabbitMQ at 5,000 events/s (needs Herald's AMQP consumer).
  run targeted-amqp-5000 targeted -n 10000 -m 25000 --rate 5000 --via amqp --amqp-url "$AMQP_URL" --concurrency 64
fi
if [ "$CLUSTER" = 1 ]; then
  # The Redis hop: sessions on node A; events posted to node A (delivered locally) or to node B (delivered
  # through Redis). Same inbox, same rate: the difference is the hop. --settle: node A subscribes each new
  # user's channel after the session is ready (events in between come by inbox replay); let it finish first.
  run cluster-same-node  targeted -n 2000 -m 10000 --rate 1000 --batch 1 --concurrency 32 --settle 3
  run cluster-cross-node targeted -n 2000 -m 10000 --rate 1000 --batch 1 --concurrency 32 --settle 3 \
    --publish-url '$PEER_URL'
fi

echo
"$LT" summary "$RESULTS" | tee "$RESULTS/summary.md"
echo "results: $RESULTS"
