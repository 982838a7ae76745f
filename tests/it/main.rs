//! Integration tests: one binary, real sockets, real processes.

mod support;

mod amqp;
mod bad_input;
mod cluster;
mod crash;
mod delivery;
mod healthcheck;
mod inbox;
mod ingest;
mod no_gaps;
mod routing;
mod seeds;
mod sessions;
mod store_failures;
