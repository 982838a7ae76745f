#!/usr/bin/env bash
# The one test command: installs what the tests need, starts real services on loopback, runs every suite.
#   ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
trap stop_services EXIT

suites_passed=0
suite() { log "$1"; shift; "$@"; suites_passed=$((suites_passed + 1)); }

ensure_packages python3:python3

# Rust: unit and integration tests against a real RabbitMQ, PostgreSQL (also behind PgBouncer) and Redis started
# here.
start_rabbitmq
start_postgres
start_pgbouncer session
start_pgbouncer transaction
start_redis
start_redis_cluster
start_redis_cluster --tls
suite "rust: unit + integration tests" cargo nextest run --workspace --no-fail-fast --cargo-profile dev
suite "rust: clippy, warnings as errors" cargo clippy --workspace --all-targets --profile dev -- -D warnings
suite "chaos (short form): node kills and service restarts, every client holds its inbox" scripts/chaos.sh
cargo build --bin herald
suite "rules: dry-run every event fixture through the shipped rules" \
  ./target/debug/herald rules test tests/fixtures/events/*.json
suite "deploy: promtool rules/tests/config, k8s manifests, dashboard, queried metrics exist" scripts/check-deploy.sh

# OpenAPI: the Rust tests above prove docs/openapi.json is the document the gateway serves; Redocly CLI lints it
# (tools/openapi/redocly.yaml: the recommended rules, waivers justified in .redocly.lint-ignore.yaml).
suite "openapi: install Redocly CLI" bash -c 'cd tools/openapi && npm ci --no-audit --no-fund'
suite "openapi: redocly lint docs/openapi.json" bash -c 'cd tools/openapi && npm run lint'

# TypeScript SDK: unit tests, then integration tests against the real gateway binary built above.
if [ -f client-sdk/package.json ]; then
  cargo build --bin herald
  export HERALD_BIN="$PWD/target/debug/herald"
  suite "client-sdk: install" bash -c 'cd client-sdk && npm ci --no-audit --no-fund'
  suite "client-sdk: build + package lint (publint, attw: ., ./react, ./ui)" bash -c 'cd client-sdk && npm run build && npm run lint:package'
  suite "client-sdk: UI component tests (vitest + testing-library, jsdom)" bash -c 'cd client-sdk && npm run test:ui'
  suite "client-sdk: tests" bash -c 'cd client-sdk && npm test -- --exclude test/unit/ui.test.tsx'
fi

# Web demo: unit tests, then the end-to-end test: Debian's chromium (playwright-core, no browser download)
# against the real gateway built above, serving the freshly built demo. Screenshots in web-demo/e2e/artifacts/.
if [ -f web-demo/package.json ]; then
  ensure_packages chromium:chromium
  if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --bin herald
    export HERALD_BIN="$PWD/target/debug/herald"
  fi
  suite "web-demo: install" bash -c 'cd web-demo && npm ci --no-audit --no-fund'
  suite "web-demo: typecheck + unit tests" bash -c 'cd web-demo && npm run typecheck && npm test'
  suite "web-demo: build + end-to-end test in chromium" bash -c 'cd web-demo && npm run test:e2e'
  suite "web-demo: axe accessibility check of the components in chromium" bash -c 'cd web-demo && npm run test:a11y'
fi

# Admin console: typecheck and unit tests, then its end-to-end test in chromium against the real gateway (the
# re-drive part uses the RabbitMQ started above). Screenshots in admin-console/e2e/artifacts/.
if [ -f admin-console/package.json ]; then
  ensure_packages chromium:chromium
  if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --bin herald
    export HERALD_BIN="$PWD/target/debug/herald"
  fi
  suite "admin-console: install" bash -c 'cd admin-console && npm ci --no-audit --no-fund'
  suite "admin-console: typecheck + unit tests" bash -c 'cd admin-console && npm run typecheck && npm test'
  suite "admin-console: build + end-to-end test in chromium" bash -c 'cd admin-console && npm run test:e2e'
fi

suite "docker: every Dockerfile stage rebuilt from its COPY lines, offline (quick form; full: scripts/check-dockerfile.sh)" \
  ./scripts/check-dockerfile.sh --quick

echo "suites: ${suites_passed} passed, 0 failed"
