//! Parquet destination: hive-style folders `<dir>/current/resource_type=<Type>/part-0.parquet`
//! (zstd), columns as in the SQL tables, readable by DuckDB
//! (`read_parquet('<dir>/current/resource_type=*/*.parquet', hive_partitioning = true)`),
//! Spark and Trino. Change records go to `<dir>/changes/run_id=<run>/part-0.parquet`.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`crate::destinations::files`] format).

mod config;
pub(crate) mod writer;

pub use config::{DEFAULT_ROW_GROUP_ROWS, ParquetConfig};
pub(crate) use writer::open;
