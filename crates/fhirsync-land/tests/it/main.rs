//! Integration tests of fhirsync-land: one scenario (`scenario.rs`) run against every
//! destination (`sqlite.rs`, `postgres.rs`, ...), each module providing a [`support::Harness`]
//! that reads the landed data back with the destination's own tools.

mod bound_values;
#[cfg(feature = "delta")]
mod delta;
mod files;
mod memory;
mod pg_errors;
mod postgres;
mod scenario;
mod schema_version;
mod sqlite;
mod status;
mod support;
mod typed;

/// Counts each thread's heap, for `memory.rs`.
#[global_allocator]
static ALLOCATOR: memory::Tracking = memory::Tracking;
