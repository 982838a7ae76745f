#!/bin/sh
# experiment: the inbox's WAL zero-filled (64 MiB + header room) before Herald starts
db=${HERALD__STORE__URL#sqlite://}
if [ -n "$db" ] && [ "$db" != "$HERALD__STORE__URL" ]; then
  mkdir -p "$(dirname "$db")"
  head -c 68157440 /dev/zero > "$db-wal" && sync "$db-wal"
fi
exec /work/notes/herald-ckexp2 "$@"
