//! NDJSON destination settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// NDJSON destination settings (`kind = "ndjson"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonConfig {
    /// Root folder; readers use `<dir>/current/<ResourceType>.ndjson`.
    pub dir: PathBuf,
}

impl NdjsonConfig {
    /// Settings for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NdjsonConfig { dir: dir.into() }
    }
}
