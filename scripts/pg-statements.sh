#!/usr/bin/env bash
# Where PostgreSQL's time goes in one group commit of targeted notifications: `herald_write_targeted_versioned` (the
# one-round-trip commit, migrations/postgres/) called by pgbench on one connection, with pg_stat_statements
# tracking the statements inside the function. Prints the time per call of the function and of each statement.
#
#   scripts/pg-statements.sh                 # 12 notifications per call (a group commit at ~9k events/s)
#   ROWS=1 DURATION=10 scripts/pg-statements.sh
#   UPTO=7 scripts/pg-statements.sh          # only migrations 1..7: the function as an older release had it
#   CLIENTS="1 2 1 2" scripts/pg-statements.sh
#                                            # instead: rows/s with that many connections calling it at once,
#                                            # at production durability (fsync on), pgbench on core 1
#
# PostgreSQL is started by scripts/lib/services.sh (fsync off, as the tests run it, with pg_stat_statements
# loaded through HERALD_POSTGRES_OPTIONS: this measures the CPU the
# statements take, not the WAL's sync), with the migrations applied in order by psql. The function is called
# with ROWS writes, each for one of 10,000 users, with a fresh dedupe key; pgbench's own expressions that build
# the arguments count in the function's line, not in the statements'.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
trap stop_services EXIT
ROWS=${ROWS:-12}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-}
if [ -n "$CLIENTS" ]; then
  HERALD_POSTGRES_TLS=0 HERALD_POSTGRES_DURABLE=1 HERALD_POSTGRES_OPTIONS="-c min_wal_size=1GB -c max_wal_size=4GB" \
    start_postgres
else
  HERALD_POSTGRES_TLS=0 HERALD_POSTGRES_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
    start_postgres
fi
BIN=$HERALD_TEST_POSTGRES_BIN
URL=$HERALD_TEST_POSTGRES_URL
psql() { "$BIN/psql" -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
if [ -z "$CLIENTS" ]; then psql -c "CREATE EXTENSION pg_stat_statements"; fi
UPTO=${UPTO:-9999}
for f in migrations/postgres/*.sql; do
  n=$(basename "$f"); n=$((10#${n%%_*}))
  if [ "$n" -le "$UPTO" ]; then psql -f "$f" >/dev/null; fi
done

# The function this release calls (migration 9 gave it a name of its own); an older release's with UPTO < 9.
fn=herald_write_targeted_versioned
if [ "$UPTO" -lt 9 ]; then fn=herald_write_targeted; fi
script=$(mktemp)
fill() { echo "array_fill('$1'::text, ARRAY[$ROWS])"; }
cat >"$script" <<SQL
\\set base random(1, 100000000)
SELECT * FROM $fn(79473407904836, 1212502625,
  ARRAY(SELECT (:base * $ROWS + g)::int FROM generate_series(1, $ROWS) g), now(), ARRAY[]::text[],
  ARRAY(SELECT decode(md5(:base || '-' || g), 'hex') FROM generate_series(1, $ROWS) g),
  ARRAY(SELECT 'evt-' || :base || '-' || g FROM generate_series(1, $ROWS) g),
  $(fill order.shipped), $(fill 'Your order shipped'), $(fill 'Order 123 is on its way, arriving Tuesday'),
  $(fill order.shipped), $(fill shop), $(fill order), $(fill 123), $(fill '{"order":"123"}'),
  $(fill '{"order":"123","items":[1,2,3],"total":42.5,"currency":"EUR"}'),
  ARRAY(SELECT g FROM generate_series(1, $ROWS) g),
  ARRAY(SELECT 'user-' || ((:base + g * 7919) % 10000) FROM generate_series(1, $ROWS) g));
SQL
if [ -n "$CLIENTS" ]; then
  log "warming up (4 s), then $DURATION s per count of connections in ($CLIENTS), $ROWS notifications per call"
  taskset -c 1 "$BIN/pgbench" -n -c 1 -T 4 -f "$script" "$URL" >/dev/null
  psql -c CHECKPOINT
  for c in $CLIENTS; do
    tps=$(taskset -c 1 "$BIN/pgbench" -n -c "$c" -j "$c" -T "$DURATION" -f "$script" "$URL" |
      sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "connections=$c calls/s=$tps rows/s=$(python3 -c "print(round($tps * $ROWS))")"
  done
  rm -f "$script"
  exit 0
fi
log "warming up (3 s), then measuring ($DURATION s) with $ROWS notifications per call"
"$BIN/pgbench" -n -c 1 -T 3 -f "$script" "$URL" >/dev/null
psql -c "SELECT pg_stat_statements_reset()" >/dev/null
"$BIN/pgbench" -n -c 1 -T "$DURATION" -f "$script" "$URL" | grep -E "latency average|tps"
"$BIN/psql" "$URL" -c "SELECT round((total_exec_time / calls * 1000)::numeric, 1) AS us_per_call,
    round((total_exec_time / calls * 1000 / $ROWS)::numeric, 1) AS us_per_row, calls,
    left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
  FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 12"
rm -f "$script"
