#!/usr/bin/env bash
# pgbench of herald_write_targeted_versioned, fsync on, 1 vs 2 clients. EXTRA=file.sql applied after migrations.
set -euo pipefail
cd /work/main
source scripts/lib/services.sh
trap stop_services EXIT
ROWS=${ROWS:-12}; DURATION=${DURATION:-8}
HERALD_POSTGRES_DURABLE=1 HERALD_POSTGRES_OPTIONS="-c min_wal_size=1GB -c max_wal_size=4GB" start_postgres
BIN=$HERALD_TEST_POSTGRES_BIN; URL=$HERALD_TEST_POSTGRES_URL
psql() { "$BIN/psql" -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
for f in migrations/postgres/*.sql; do psql -f "$f" >/dev/null; done
if [ -n "${EXTRA:-}" ]; then psql -f "$EXTRA"; fi
script=$(mktemp)
fill() { echo "array_fill('$1'::text, ARRAY[$ROWS])"; }
cat >"$script" <<SQL
\\set base random(1, 100000000)
SELECT * FROM herald_write_targeted_versioned(79473407904836, 1212502625,
  ARRAY(SELECT (:base * $ROWS + g)::int FROM generate_series(1, $ROWS) g), now(), ARRAY[]::text[],
  ARRAY(SELECT decode(md5(:base || '-' || g), 'hex') FROM generate_series(1, $ROWS) g),
  ARRAY(SELECT 'evt-' || :base || '-' || g FROM generate_series(1, $ROWS) g),
  $(fill order.shipped), $(fill 'Your order shipped'), $(fill 'Order 123 is on its way, arriving Tuesday'),
  $(fill order.shipped), $(fill shop), $(fill order), $(fill 123), $(fill '{"order":"123"}'),
  $(fill '{"order":"123","items":[1,2,3],"total":42.5,"currency":"EUR"}'),
  ARRAY(SELECT g FROM generate_series(1, $ROWS) g),
  ARRAY(SELECT 'user-' || ((:base + g * 7919) % 10000) FROM generate_series(1, $ROWS) g));
SQL
taskset -c 1 "$BIN/pgbench" -n -c 1 -T 4 -f "$script" "$URL" >/dev/null
psql -c CHECKPOINT
for c in ${CLIENTS:-1 2 1 2}; do
  tps=$(taskset -c 1 "$BIN/pgbench" -n -c $c -j $c -T "$DURATION" -f "$script" "$URL" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  echo "clients=$c tps=$tps rows/s=$(python3 -c "print(round($tps*$ROWS))")"
done
