//! User-facing configuration: where to land ([`DestinationConfig`]), how ([`Method`]) and the
//! knobs of a run ([`LandOptions`]).

use serde::{Deserialize, Serialize};

pub use crate::destinations::delta::DeltaConfig;
pub use crate::destinations::ndjson::NdjsonConfig;
#[cfg(feature = "parquet")]
pub use crate::destinations::parquet::ParquetConfig;
#[cfg(feature = "postgres")]
pub use crate::destinations::postgres::PostgresConfig;
pub use crate::destinations::sqlite::SqliteConfig;

/// Where landed data goes. In TOML: a table with `kind = "sqlite" | "postgres" | "parquet" | "ndjson" | "delta"`
/// plus that kind's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DestinationConfig {
    /// One SQLite file (the default destination).
    Sqlite(SqliteConfig),
    /// A PostgreSQL schema.
    #[cfg(feature = "postgres")]
    Postgres(PostgresConfig),
    /// Hive-style Parquet folders (`resource_type=Observation/`), readable by DuckDB, Spark, Trino.
    #[cfg(feature = "parquet")]
    Parquet(ParquetConfig),
    /// One NDJSON file per resource type.
    Ndjson(NdjsonConfig),
    /// One Delta Lake table per resource type and view (needs the cargo feature `delta`).
    Delta(DeltaConfig),
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig::Sqlite(SqliteConfig::default())
    }
}

impl DestinationConfig {
    /// Kind name as written in config (`sqlite`, `postgres`, `parquet`, `ndjson`, `delta`).
    pub fn kind(&self) -> &'static str {
        match self {
            DestinationConfig::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            DestinationConfig::Postgres(_) => "postgres",
            #[cfg(feature = "parquet")]
            DestinationConfig::Parquet(_) => "parquet",
            DestinationConfig::Ndjson(_) => "ndjson",
            DestinationConfig::Delta(_) => "delta",
        }
    }

    /// Human name of the destination (`sqlite:path`, `postgres:schema`, `parquet:dir`), never
    /// with credentials.
    pub fn describe(&self) -> String {
        match self {
            DestinationConfig::Sqlite(c) => format!("sqlite:{}", c.path.display()),
            #[cfg(feature = "postgres")]
            DestinationConfig::Postgres(c) => format!("postgres:{}", c.schema),
            #[cfg(feature = "parquet")]
            DestinationConfig::Parquet(c) => format!("parquet:{}", c.dir.display()),
            DestinationConfig::Ndjson(c) => format!("ndjson:{}", c.dir.display()),
            DestinationConfig::Delta(c) => format!("delta:{}", c.uri),
        }
    }
}

stored_names! {
    /// The update method of a run (Qlik's names), stored in the run history as spelled in the
    /// CLI and config.
    pub enum Method (unknown: UnknownMethod) {
        /// Initial copy into an empty target; refuses a non-empty target unless `replace` is set.
        FullLoad => "full-load",
        /// Re-read everything and apply it atomically; no change records.
        Reload => "reload",
        /// Re-read everything, compare by (FHIR version, type, id) and content hash, apply only
        /// the differences and record each one in the change table.
        ReloadAndCompare => "reload-and-compare",
    }
}

/// A method name that is not one of the three.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown update method `{0}`: use full-load, reload or reload-and-compare")]
pub struct UnknownMethod(pub String);

/// What to do with rows of patients who are in the target but not in this run's cohort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCohortExit {
    /// Keep their rows and record them in `_fhirsync_cohort_exits` (default).
    #[default]
    Flag,
    /// Delete their rows (recorded as `D` changes by reload-and-compare) and flag them.
    Delete,
}

/// Default number of staged resources per durable staging transaction.
pub const DEFAULT_CHECKPOINT_ROWS: usize = 20_000;

/// Knobs of one landing run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandOptions {
    /// `full-load` only: overwrite a target that already holds data (otherwise full-load refuses).
    #[serde(default)]
    pub replace: bool,
    /// Rows of patients who left the cohort: `flag` (default) or `delete`.
    #[serde(default)]
    pub on_cohort_exit: OnCohortExit,
    /// Keep a type-2 history table (`_fhirsync_history`, valid_from/valid_to); SQL destinations only.
    #[serde(default)]
    pub history: bool,
    /// Resume an unfinished run of the same method instead of starting over (default true).
    #[serde(default = "default_true")]
    pub resume: bool,
    /// Resources per durable staging transaction; a killed run loses at most this much work.
    #[serde(default = "default_checkpoint_rows")]
    pub checkpoint_rows: usize,
}

fn default_true() -> bool {
    true
}

fn default_checkpoint_rows() -> usize {
    DEFAULT_CHECKPOINT_ROWS
}

impl Default for LandOptions {
    fn default() -> Self {
        LandOptions {
            replace: false,
            on_cohort_exit: OnCohortExit::Flag,
            history: false,
            resume: true,
            checkpoint_rows: DEFAULT_CHECKPOINT_ROWS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TOML with `kind` picks the destination and fills defaults; unknown keys are rejected.
    #[test]
    fn destination_config_from_toml() {
        let c: DestinationConfig = toml::from_str("kind = \"sqlite\"").unwrap();
        assert_eq!(c, DestinationConfig::Sqlite(SqliteConfig::default()));
        let c: DestinationConfig = toml::from_str("kind = \"parquet\"\ndir = \"lake\"").unwrap();
        assert_eq!(c.kind(), "parquet");
        let c: DestinationConfig =
            toml::from_str("kind = \"delta\"\nuri = \"s3://b/p\"\nstate_dir = \"st\"").unwrap();
        assert_eq!(c.kind(), "delta");
        let err = toml::from_str::<DestinationConfig>("kind = \"sqlite\"\npaht = \"x.db\"").unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
        let err = toml::from_str::<DestinationConfig>("kind = \"oracle\"").unwrap_err();
        assert!(err.to_string().contains("oracle"), "{err}");
    }

    /// Method names round-trip through their CLI spelling.
    #[test]
    fn method_names() {
        for m in [Method::FullLoad, Method::Reload, Method::ReloadAndCompare] {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
        }
        assert!("merge".parse::<Method>().unwrap_err().to_string().contains("reload-and-compare"));
    }
}
