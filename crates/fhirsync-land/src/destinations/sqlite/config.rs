//! SQLite destination settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default database file.
pub const DEFAULT_SQLITE_PATH: &str = "fhirsync.db";
/// Default wait for a lock held by another connection, in milliseconds.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 30_000;

/// SQLite destination settings (`kind = "sqlite"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file; created if missing (default `fhirsync.db`).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// How long to wait for a lock held by another connection, in milliseconds (default 30000).
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
}

fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_SQLITE_PATH)
}

fn default_busy_timeout_ms() -> u64 {
    DEFAULT_BUSY_TIMEOUT_MS
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig { path: default_path(), busy_timeout_ms: DEFAULT_BUSY_TIMEOUT_MS }
    }
}
