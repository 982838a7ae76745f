#!/usr/bin/env bash
# The chaos run (tests/chaos.rs): two Herald processes on RabbitMQ + PostgreSQL + Redis, a stream of targeted and
# broadcast events over HTTP and AMQP, kill -9 of each node, restarts of Redis, RabbitMQ and PostgreSQL; every
# client must end holding exactly its inbox. Starts its own services on loopback and prints the figures.
#   ./scripts/chaos.sh                                           # short form (~3,000 events, 5 faults)
#   CHAOS_EVENTS=50000 CHAOS_RATE=200 CHAOS_FAULT_ROUNDS=4 ./scripts/chaos.sh   # long form (RELIABILITY.md)
# Other knobs: CHAOS_USERS (40), CHAOS_BROADCAST_PERCENT (10), CHAOS_RESEND_PERCENT (5), CHAOS_REDIS_LATENCY_MS
# (30, on node A's Redis link), CHAOS_REPORT (write the figures to this file), CHAOS_LOG_DIR (keep the nodes' logs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Our own services, even when called from scripts/test.sh (which exports the location of its own).
unset HERALD_SERVICES_DIR
source scripts/lib/services.sh
trap stop_services EXIT

ensure_packages python3:python3
start_rabbitmq
start_postgres
start_redis
cargo nextest run --cargo-profile dev --test chaos --run-ignored only --no-capture
