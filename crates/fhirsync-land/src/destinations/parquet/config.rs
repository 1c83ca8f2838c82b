//! Parquet destination settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default rows per Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Parquet destination settings (`kind = "parquet"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Root folder; readers use `<dir>/current/resource_type=*/*.parquet` (hive partitioning).
    pub dir: PathBuf,
    /// Rows per row group (default 65536); a row group also closes at 8 MiB encoded, which
    /// bounds the writer's memory.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
}

fn default_row_group_rows() -> usize {
    DEFAULT_ROW_GROUP_ROWS
}

impl ParquetConfig {
    /// Settings for `dir` with defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ParquetConfig { dir: dir.into(), row_group_rows: DEFAULT_ROW_GROUP_ROWS }
    }
}
