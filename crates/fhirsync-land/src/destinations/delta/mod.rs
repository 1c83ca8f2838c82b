//! Delta Lake destination (`kind = "delta"`, cargo feature `delta`): one Delta table per
//! resource type and one per view, written with delta-rs (`deltalake`, without DataFusion),
//! readable by Spark, Databricks, Trino, DuckDB (`delta_scan`) and the `deltalake` Python
//! package.
//!
//! ```text
//! <uri>/<type>/                      e.g. landing/observation: one table per resource type
//! <uri>/<type>/bucket=<n>/*.parquet  partitioned by a hash bucket of the patient id
//! <uri>/<type>/_change_data/...      change data feed files of reload-and-compare runs
//! <uri>/view_<name>/                 one table per view (bucket of the resource id)
//! <state>/_fhirsync/runs.json        every run (as the file destinations), read by `status`
//! <state>/_fhirsync/schema.json      the state folder's schema version (as the file destinations)
//! <state>/_fhirsync/lock             the writer lock
//! <state>/_fhirsync/staging/<run>/   durable staging of the unfinished run, one file per type and bucket
//! <state>/_fhirsync/commits/<run>/   counts of each table committed by the unfinished run
//! <state>/_fhirsync/work/            scratch files of a commit (key groups, decisions, view spills)
//! <state>/_fhirsync/cohort_exits.json patients flagged as having left the cohort
//! ```
//!
//! `<state>` is the `uri` folder itself, or `state_dir` (a local folder; required for an
//! object-store URL, where an OS lock cannot live).
//!
//! Type tables have the columns of the other destinations (`id, patient_id, fhir_version,
//! source, dataset, content_hash, resource, first_seen_run, last_seen_run`) plus the partition
//! column `bucket`, with one difference: `last_seen_run` is **null for every row the table's
//! latest run saw** (that run's id is the `fhirsync.runId` and `userMetadata` of the table's
//! latest commit) and holds the last run that saw the row only for rows kept unread (their
//! scope did not complete, or their patient left the cohort). So a run that re-reads unchanged
//! data rewrites no file; `WHERE last_seen_run IS NOT NULL` lists the stale rows.
//!
//! Every run makes exactly one commit per table (readers never see half a run of a table), with
//! the run id in its commit info and an application transaction (`txn`, app id `fhirsync`,
//! version = the run's start time in ms) that makes a commit restarted after a crash skip the
//! tables it already committed:
//!
//! - **full-load** overwrites the table (remove every file, add the new ones);
//! - **reload** replaces it the same way, carrying over the rows it must keep;
//! - **reload-and-compare** rewrites only the files holding a changed row (copy-on-write) and
//!   adds the inserted and updated rows in new files; the table has the change data feed on
//!   (`delta.enableChangeDataFeed = true`) and the commit writes `_change_data/` files, so the
//!   table's CDF shows each change with `_change_type` `insert`, `update_preimage`,
//!   `update_postimage` or `delete`. Time travel (`VERSION AS OF`) replaces the `_fhirsync_changes`
//!   tables of the SQL destinations. An update of only `last_seen_run` (a row becoming stale or
//!   fresh again) is an update in the CDF with an equal `content_hash`.
//!
//! Rows match by `(fhir_version, id)` across buckets: a resource whose patient changed is an
//! update that moves it to its new patient's bucket, and one staged twice keeps its last copy.
//!
//! Memory does not grow with the data: a commit reads the staged resources once (its plan reads
//! only their heads), holds one key group of keys and one bucket's decisions at a time, and
//! writes one file at a time, each holding one row group in memory.
//!
//! Crash safety: staging is the file destinations' (`files/staging.rs`, in Delta's own line
//! format); a run killed while staging leaves every table at its previous version and resumes;
//! a run killed during its commit leaves each table at its previous or its new version (each
//! commit is atomic), and the rerun of the same method converges: committed tables are skipped,
//! the others committed.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`Destination`]: runs and staging),
//! `staged.rs` (the staging format), `stager.rs` (staging), `store.rs` (tables, Parquet files, commits),
//! `commit.rs` (what a run writes into each table), `plan.rs` (the key join of reload and
//! reload-and-compare), `load.rs` (full load), `rows.rs` (one bucket's rows), `spill.rs`
//! (records spilled to disk), `views.rs` (view tables).

#[cfg(feature = "delta")]
mod commit;
pub(crate) mod config;
#[cfg(feature = "delta")]
mod load;
#[cfg(feature = "delta")]
mod plan;
#[cfg(feature = "delta")]
mod remote;
#[cfg(feature = "delta")]
mod rows;
#[cfg(feature = "delta")]
mod spill;
#[cfg(feature = "delta")]
mod staged;
#[cfg(feature = "delta")]
mod stager;
#[cfg(feature = "delta")]
mod store;
#[cfg(feature = "delta")]
mod views;
#[cfg(feature = "delta")]
mod writer;

pub use config::{DEFAULT_BUCKETS, DeltaConfig};

use crate::destination::Destination;
use crate::destinations::files::layout::Layout;
use crate::{Error, Result};

/// Opens the destination: takes the writer lock and connects to the table root.
#[cfg(feature = "delta")]
pub(crate) fn open(config: &DeltaConfig) -> Result<Box<dyn Destination>> {
    Ok(Box::new(writer::DeltaDestination::new(config)?))
}

/// Without the `delta` feature, says how to get a binary with it.
#[cfg(not(feature = "delta"))]
pub(crate) fn open(_config: &DeltaConfig) -> Result<Box<dyn Destination>> {
    Err(Error::FeatureMissing { destination: "delta", feature: "delta" })
}

/// The state folder's layout of `config` (lock, runs, staging), for `status`.
pub(crate) fn state_layout(config: &DeltaConfig) -> Result<Layout> {
    let root = config.state_root().ok_or_else(|| Error::InvalidDeltaUri {
        uri: config.uri.clone(),
        detail: "an object-store URL needs `state_dir`, a local folder for the writer lock, the staging and \
                 the run history"
            .into(),
    })?;
    Ok(Layout::new(&root))
}
