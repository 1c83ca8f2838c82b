//! Landing for fhirsync: writes extracted FHIR resources into SQLite (default), PostgreSQL,
//! Parquet, NDJSON or Delta Lake (cargo feature `delta`, see `destinations::delta`) with one of three update methods (Qlik's names):
//!
//! - **full-load**: initial copy into an empty target (refuses a non-empty one unless
//!   `replace` is set);
//! - **reload**: re-read everything and apply it atomically;
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
//!
//! # Data model
//!
//! SQL destinations (SQLite, PostgreSQL schema `fhirsync` by default):
//!
//! - one table per resource type, named after the type lower-cased (`observation`):
//!   `id, patient_id, fhir_version, source, dataset, content_hash (SHA-256 hex), resource
//!   (exact JSON; PostgreSQL `json`), first_seen_run, last_seen_run`, primary key
//!   `(fhir_version, id)` (Epic ids are version-specific), index on `patient_id`;
//! - `_fhirsync_runs` ([`RunRecord`]): `run_id, method, status ([`RunStatus`]: running|succeeded|completed_with_gaps|failed|abandoned|interrupted;
//!   `interrupted`: the process died mid-run, seen by the next run or `status` once its writer lock was gone), started_at,
//!   ended_at, staged, inserted, updated, deleted, unchanged, kept, cohort_exits, view_rows,
//!   errors, report (JSON)`;
//! - `_fhirsync_changes`: `seq, run_id, changed_at, operation ([`ChangeOp`]: I|U|D), resource_type,
//!   fhir_version, id, patient_id, before_hash, after_hash` (reload-and-compare);
//! - `_fhirsync_history` (with `history = true`, reload-and-compare): `resource_type,
//!   fhir_version, id, patient_id, content_hash, resource, valid_from, valid_from_run, valid_to,
//!   valid_to_run` (open version: `valid_to IS NULL`);
//! - `_fhirsync_cohort_exits`: `patient_id, first_flagged_run, last_flagged_run, flagged_at,
//!   rows_deleted`;
//! - `_fhirsync_schema_version`: `version, applied_at, fhirsync_version`, one row per schema
//!   version the target reached (see [`SQL_SCHEMA_VERSION`] and `schema_version.rs`);
//! - `view_<name>`: `_fhir_version, _id`, then the view's columns typed by their FHIR type, each
//!   date/dateTime followed by a `<column>_text` companion (see `views.rs`); `_fhirsync_views`
//!   registers them;
//! - internal: `_fhirsync_new_<type>` (a run's new-rows table of a type), `_fhirsync_stage_types`,
//!   `_fhirsync_stage_scopes`, `_fhirsync_stage_changes`, `_fhirsync_types`, `_fhirsync_cohort`.
//!
//! File destinations keep the same columns: Parquet in
//! `<dir>/current/resource_type=<Type>/part-0.parquet`, NDJSON in `<dir>/current/<Type>.ndjson`,
//! changes in `<dir>/changes/run_id=<run>/`, runs in `<dir>/_fhirsync/runs.json` (one [`RunRecord`]
//! each), the schema version in `<dir>/_fhirsync/schema.json`, cohort exits in
//! `<dir>/current/_fhirsync/cohort_exits.json`, views in their own root
//! `<dir>/current/views/<name>/part-0.parquet` or `<dir>/current/views/<name>.ndjson`. Reload
//! and reload-and-compare keep the files of unchanged types and views (hard links);
//! `<dir>/current/_fhirsync/files.json` says which run wrote each file and, per type, which
//! `last_seen_run` stands for the snapshot's own run.
//!
//! Delta Lake (feature `delta`): a Delta table per type (`<uri>/observation`) and per view
//! (`<uri>/view_<name>`), partitioned by `bucket`; changes are the tables' change data feed;
//! runs, lock, staging and cohort exits in `<state>/_fhirsync/` (see `destinations::delta`).

#[macro_use]
mod names;

mod config;
mod destination;
pub mod destinations;
mod error;
mod landing;
mod lock;
mod run;
mod schema_version;
mod status;
mod views;

#[cfg(feature = "parquet")]
pub use config::ParquetConfig;
#[cfg(feature = "postgres")]
pub use config::PostgresConfig;
pub use config::{
    DEFAULT_CHECKPOINT_ROWS, DeltaConfig, DestinationConfig, LandOptions, Method, NdjsonConfig, OnCohortExit,
    SqliteConfig, UnknownMethod,
};
pub use destination::{Destination, RunMetrics, RunStart};
pub use destinations::open;
pub use error::{Error, Result};
pub use landing::{Landing, StageStats};
pub use run::{ChangeOp, RunRecord, RunStatus, UnknownChangeOp, UnknownRunStatus};
pub use schema_version::{FILES_SCHEMA_VERSION, SQL_SCHEMA_VERSION};
pub use status::recent_runs;
