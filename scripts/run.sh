#!/usr/bin/env bash
# The one run command: build what is missing (the web demo, the release binary) and start Herald with the
# embedded defaults: SQLite under data/, HTTP ingest, no broker. Extra arguments go to `herald serve`.
#   ./scripts/run.sh [--config FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f web-demo/package.json ] && [ ! -f web-demo/dist/index.html ] && command -v npm >/dev/null; then
  echo "==> building the web demo (first run only)" >&2
  (cd client-sdk && npm ci --no-audit --no-fund && npm run build) >&2
  (cd web-demo && npm ci --no-audit --no-fund && npm run build) >&2
fi
exec cargo run --release --bin herald -- serve "$@"
