#!/usr/bin/env bash
# The one run command: build what is missing or stale (the SDK, the web demo, the admin console, the release
# binary) and start Herald. Without arguments it uses config/demo.toml: SQLite under data/, HTTP ingest, no
# broker, the web demo with its development sign-in at http://127.0.0.1:8080/ and the admin console at /admin.
# Arguments go to `herald serve` instead.
#   ./scripts/run.sh                  # the demo
#   ./scripts/run.sh --config FILE    # your configuration (no dev endpoints unless it enables them)
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci only when node_modules is missing or older than the lock file.
npm_install() {
  [ "$1/node_modules/.package-lock.json" -nt "$1/package-lock.json" ] || (cd "$1" && npm ci --no-audit --no-fund)
}
# The demo is stale when dist/ is missing or anything it is built from changed since.
demo_stale() {
  [ -f web-demo/dist/index.html ] || return 0
  [ -n "$(find web-demo/src web-demo/public web-demo/index.html web-demo/vite.config.ts web-demo/package-lock.json \
    client-sdk/src client-sdk/package-lock.json tests/fixtures/events -newer web-demo/dist/index.html -print -quit \
    2>/dev/null)" ]
}
if [ -f web-demo/package.json ] && demo_stale; then
  if command -v npm >/dev/null; then
    echo "==> building the SDK and the web demo" >&2
    if ! { (npm_install client-sdk && cd client-sdk && npm run build) && (npm_install web-demo && cd web-demo && npm run build); } >&2; then
      echo "==> the web demo did not build (see above): starting Herald without a fresh one" >&2
    fi
  elif [ ! -f web-demo/dist/index.html ]; then
    echo "==> npm not found: starting without the web demo (install Node.js 20+ to get it)" >&2
  fi
fi

# The admin console (/admin), built the same way when stale; it needs no SDK.
console_stale() {
  [ -f admin-console/dist/index.html ] || return 0
  [ -n "$(find admin-console/src admin-console/public admin-console/index.html admin-console/vite.config.ts \
    admin-console/package-lock.json -newer admin-console/dist/index.html -print -quit 2>/dev/null)" ]
}
if [ -f admin-console/package.json ] && console_stale; then
  if command -v npm >/dev/null; then
    echo "==> building the admin console" >&2
    if ! (npm_install admin-console && cd admin-console && npm run build) >&2; then
      echo "==> the admin console did not build (see above): /admin will answer 404" >&2
    fi
  elif [ ! -f admin-console/dist/index.html ]; then
    echo "==> npm not found: starting without the admin console (install Node.js 20+ to get it)" >&2
  fi
fi

if [ $# -eq 0 ]; then
  set -- --config config/demo.toml
  echo "==> the web demo will be at http://127.0.0.1:8080/ (development sign-in: config/demo.toml)" >&2
  echo "==> the admin console at http://127.0.0.1:8080/admin (sign in with a service key that has \`admin\`)" >&2
fi
exec cargo run --release --bin herald -- serve "$@"
