//! Parquet destination: hive-style folders `<dir>/current/resource_type=<Type>/part-0.parquet`
//! (zstd), columns as in the SQL tables, readable by DuckDB
//! (`read_parquet('<dir>/current/*/*.parquet', hive_partitioning = true)`), Spark and Trino.
//! Views go to `<dir>/current/views/<view>/part-0.parquet` with typed columns (see `arrow.rs`).
//! Change records go to `<dir>/changes/run_id=<run>/part-0.parquet`.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`crate::destinations::files`] format),
//! `arrow.rs` (Arrow schema and batches of view tables, reusable by other Arrow writers).

pub(crate) mod arrow;
mod config;
pub(crate) mod writer;

pub use config::{DEFAULT_ROW_GROUP_ROWS, ParquetConfig};
pub(crate) use writer::open;
