//! Parquet destination (in progress).

mod config;

pub use config::{DEFAULT_ROW_GROUP_ROWS, ParquetConfig};
