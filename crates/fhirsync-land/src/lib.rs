//! Landing for fhirsync: writes extracted FHIR resources into SQLite (default), PostgreSQL,
//! Parquet or NDJSON with one of three update methods (Qlik's names):
//!
//! - **full-load**: initial copy into an empty target (refuses a non-empty one unless
//!   `replace` is set);
//! - **reload**: re-read everything and swap it in atomically;
//! - **reload-and-compare**: re-read everything, compare by (FHIR version, type, id) and content
//!   hash, apply only inserts/updates/deletes in one atomic step and record every change.
//!
//! Whatever the method, rows are deleted only inside scopes (FHIR version, patient, dataset)
//! whose fetch completed in the run: a failed page or a permission gap never deletes data, and
//! patients who left the cohort are flagged (deleted only with `on_cohort_exit = delete`).
//! Staging is durable and resumable: a killed run leaves the previous state readable and the
//! next run of the same method continues it.
//!
//! Entry points: [`Landing`] (async, for the CLI) or [`open`] + [`Destination`] (sync).

mod config;
mod destination;
pub mod destinations;
mod error;
mod landing;
mod views;

pub use config::{
    DEFAULT_CHECKPOINT_ROWS, DestinationConfig, LandOptions, Method, NdjsonConfig, OnCohortExit,
    ParquetConfig, PostgresConfig, SqliteConfig, UnknownMethod,
};
pub use destination::{Destination, RunMetrics, RunStart};
pub use destinations::open;
pub use error::{Error, Result};
pub use landing::{Landing, StageStats};
