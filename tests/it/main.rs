//! Integration tests: one binary, real sockets, real processes.

mod support;

mod amqp;
mod bad_input;
mod cluster;
mod cors;
mod crash;
mod delivery;
mod healthcheck;
mod inbox;
mod inbox_states;
mod ingest;
mod jwks;
mod metrics;
mod no_gaps;
mod openapi;
mod race;
mod redis_cluster;
mod routing;
mod security;
mod seeds;
mod service_keys;
mod sessions;
mod store_failures;
