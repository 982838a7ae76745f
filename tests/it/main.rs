//! Integration tests: one binary, real sockets, real processes.

mod support;

mod bad_input;
mod crash;
mod inbox;
mod ingest;
mod no_gaps;
mod routing;
mod sessions;
