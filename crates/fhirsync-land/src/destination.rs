//! The [`Destination`] trait every backend implements, and what a run reports.
//!
//! # Protocol
//!
//! 1. [`Destination::begin`] starts a run, or resumes the unfinished run of the same method
//!    (its id and the scopes already staged completely come back in [`RunStart`], so the
//!    extractor can skip them).
//! 2. [`Destination::stage`] and [`Destination::scope_complete`] receive the extraction events in
//!    order. Staging is durable: every `checkpoint_rows` resources (and on
//!    [`Destination::checkpoint`]) the staged rows and the scopes completed so far are persisted
//!    together, so a killed process loses at most one checkpoint of work and never records a
//!    scope as complete without its rows. The landed tables are untouched while staging.
//! 3. [`Destination::commit`] applies the staged data with the run's method in one atomic step
//!    (one transaction, or a new snapshot folder switched by one rename) and returns
//!    [`RunMetrics`]. [`Destination::fail`] records the error; the staged data stays for the
//!    next run to resume.

use std::collections::BTreeSet;

use fhirsync_core::{RawResource, RunScope, ScopeKey};
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::config::{LandOptions, Method};

/// What [`Destination::begin`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// Id of the run (a UUIDv7, so ids sort by start time).
    pub run_id: String,
    /// `true` when an unfinished run was resumed.
    pub resumed: bool,
    /// Scopes already staged completely by the resumed run; the extractor may skip them.
    pub completed_scopes: BTreeSet<ScopeKey>,
}

/// Counts of one committed run, also stored in `_fhirsync_runs`.
///
/// `method` is the [`Method`]'s stored spelling ([`Method::as_str`]) rather than the enum: the
/// Delta destination also sums per-table counts in this type, with no method, and keeps them in
/// its state folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Run id.
    pub run_id: String,
    /// Method used ([`Method::as_str`]).
    pub method: String,
    /// Distinct resources staged (re-read) by the run.
    pub staged: u64,
    /// Rows that did not exist before.
    pub inserted: u64,
    /// Rows whose content hash changed (reload-and-compare only; 0 for the other methods).
    pub updated: u64,
    /// Rows removed: not re-read although their scope completed, or their patient left the
    /// cohort with `on_cohort_exit = delete`.
    pub deleted: u64,
    /// Rows re-read with the same content hash (reload-and-compare only; 0 for the others).
    pub unchanged: u64,
    /// Rows kept although not re-read, because their scope did not complete (failed page,
    /// permission gap) or their patient left the cohort (flag mode).
    pub kept: u64,
    /// Patients flagged as having left the cohort in this run.
    pub cohort_exits: u64,
    /// Rows written to view tables.
    pub view_rows: u64,
}

impl RunMetrics {
    /// The one structured log line of a committed run, whatever the destination.
    pub(crate) fn log_committed(&self) {
        tracing::info!(
            run_id = %self.run_id,
            method = %self.method,
            staged = self.staged,
            inserted = self.inserted,
            updated = self.updated,
            deleted = self.deleted,
            unchanged = self.unchanged,
            kept = self.kept,
            cohort_exits = self.cohort_exits,
            view_rows = self.view_rows,
            "Run committed."
        );
    }
}

/// A landing destination (SQLite, PostgreSQL, Parquet, NDJSON). Synchronous: async callers run
/// it on a blocking thread (see [`crate::Landing`]).
pub trait Destination: Send {
    /// Kind and location for messages, never with credentials (e.g. `sqlite fhirsync.db`).
    fn describe(&self) -> String;

    /// Starts a run or resumes the unfinished one (see the module docs).
    ///
    /// Fails with [`crate::Error::TargetNotEmpty`] for `full-load` into a target that holds
    /// data unless `options.replace` is set.
    fn begin(&mut self, method: Method, options: &LandOptions) -> Result<RunStart>;

    /// Stages resources (later copies of the same (version, type, id) win).
    fn stage(&mut self, resources: &[RawResource]) -> Result<()>;

    /// Records that every resource of `scope` has been staged.
    fn scope_complete(&mut self, scope: &ScopeKey) -> Result<()>;

    /// Makes everything staged so far durable.
    fn checkpoint(&mut self) -> Result<()>;

    /// Applies the staged data atomically and materialises `views`; ends the run.
    fn commit(&mut self, scope: &RunScope, views: &[View], report: &serde_json::Value) -> Result<RunMetrics>;

    /// Marks the run failed with `error`; staged data is kept for the next run to resume.
    fn fail(&mut self, error: &str) -> Result<()>;
}
