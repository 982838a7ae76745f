//! Integration tests: one binary, real sockets, real processes.

mod support;

mod amqp;
mod bad_input;
mod cluster;
mod crash;
mod delivery;
mod inbox;
mod ingest;
mod metrics;
mod no_gaps;
mod openapi;
mod race;
mod routing;
mod security;
mod seeds;
mod sessions;
mod store_failures;
