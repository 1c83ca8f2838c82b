//! Destinations, one folder each (`config.rs` + `writer.rs`), behind [`crate::Destination`].
//!
//! - `sql/`: the engine shared by `sqlite/` and `postgres/` (staging tables, one commit
//!   transaction);
//! - `files/`: the engine shared by `parquet/` and `ndjson/` (staging files, snapshot folders
//!   switched atomically);
//! - `delta/`: Delta Lake tables (cargo feature `delta`), staging as `files/`.

pub mod delta;
pub(crate) mod files;
pub mod ndjson;
#[cfg(feature = "parquet")]
pub mod parquet;
#[cfg(feature = "postgres")]
pub mod postgres;
pub(crate) mod sql;
pub mod sqlite;

use crate::Result;
use crate::config::DestinationConfig;
use crate::destination::Destination;

/// Opens the configured destination, creating its bookkeeping tables or folders.
///
/// PostgreSQL connects with its own single-threaded runtime, so call this (and the returned
/// destination's methods) from a blocking thread, not from inside an async task; or use
/// [`crate::Landing`], which does that for you.
pub fn open(config: &DestinationConfig) -> Result<Box<dyn Destination>> {
    match config {
        DestinationConfig::Sqlite(c) => sqlite::open(c),
        #[cfg(feature = "postgres")]
        DestinationConfig::Postgres(c) => postgres::open(c),
        #[cfg(feature = "parquet")]
        DestinationConfig::Parquet(c) => parquet::open(c),
        DestinationConfig::Ndjson(c) => ndjson::open(c),
        DestinationConfig::Delta(c) => delta::open(c),
    }
}
