//! Schema versions of landing targets: the layout a target was written in, recorded in the
//! target, so that a newer fhirsync migrates it in order and an older one refuses it.
//!
//! - SQL targets (SQLite, PostgreSQL) record it in `_fhirsync_schema_version`: one row per
//!   version reached (`version`, `applied_at`, `fhirsync_version` of the binary that reached
//!   it); the highest is the target's version. See `destinations/sql/migrate.rs`.
//! - File targets (Parquet, NDJSON) and Delta state folders record it in
//!   `_fhirsync/schema.json`: `{"schema_version": 1, "fhirsync_version": "0.1.0"}`.
//!
//! A target with bookkeeping but no record was written before versions were recorded: it is
//! at version [`UNVERSIONED`]. Opening a target whose version is above the one this fhirsync
//! writes fails with [`Error::SchemaTooNew`] before anything is written; `status` refuses it
//! the same way. Opening an older one applies the migrations after its version in order, each
//! recorded as it completes; a new target records the current version.
//!
//! # SQL versions
//!
//! 1. Every layout before versions were recorded: it may hold the single staging table
//!    `_fhirsync_stage` of early versions, SQLite type tables that hold their rows and
//!    `last_seen_run` themselves (before the rows/last-seen split), or PostgreSQL new-rows tables named
//!    without their run or keyed instead of append-only.
//! 2. The current layout (see `destinations/sql/mod.rs`). Migration from 1: the unfinished run
//!    of an earlier staging layout is abandoned and its staging dropped (it cannot be resumed),
//!    SQLite type tables move to the split layout keeping their rows.
//!
//! # File and Delta versions
//!
//! 1. The current layout (see `destinations/files/layout.rs`, `destinations/delta/mod.rs`);
//!    targets written before versions were recorded are in it. Snapshot folders are never
//!    rewritten, so snapshots of earlier versions (without `files.json`, views beside the
//!    types) are still read as they are.

use std::fs;

use serde::{Deserialize, Serialize};

use crate::destinations::files::layout::{Layout, write_atomic};
use crate::{Error, Result};

/// The schema version of SQL targets (SQLite, PostgreSQL) this fhirsync writes.
pub const SQL_SCHEMA_VERSION: u32 = 2;

/// The schema version of file targets (Parquet, NDJSON) and Delta state folders this fhirsync
/// writes.
pub const FILES_SCHEMA_VERSION: u32 = 1;

/// The version of a target written before versions were recorded.
pub(crate) const UNVERSIONED: u32 = 1;

/// This fhirsync's version, recorded with the schema version it writes.
pub(crate) const FHIRSYNC_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Fails with [`Error::SchemaTooNew`] if `found` (written by fhirsync `written_by`) is above
/// `supported`.
pub(crate) fn refuse_newer(destination: &str, found: u32, written_by: &str, supported: u32) -> Result<()> {
    if found > supported {
        return Err(Error::SchemaTooNew {
            destination: destination.to_string(),
            found,
            written_by: written_by.to_string(),
            supported,
            running: FHIRSYNC_VERSION,
        });
    }
    Ok(())
}

/// `_fhirsync/schema.json` of a file or Delta target.
#[derive(Debug, Serialize, Deserialize)]
struct SchemaRecord {
    /// The layout's version.
    schema_version: u32,
    /// The fhirsync that recorded it.
    fhirsync_version: String,
}

/// The schema version recorded in the folder of `layout` (`None`: no record, a new folder or
/// one written before versions were recorded), without writing anything.
///
/// Fails with [`Error::SchemaTooNew`] for a version above [`FILES_SCHEMA_VERSION`], with
/// [`Error::CorruptState`] for a record that cannot be read.
pub(crate) fn files_version(layout: &Layout, destination: &str) -> Result<Option<u32>> {
    let path = layout.schema_file();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading the schema version", path)(e)),
    };
    let record: SchemaRecord =
        serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState { path, detail: e.to_string() })?;
    refuse_newer(destination, record.schema_version, &record.fhirsync_version, FILES_SCHEMA_VERSION)?;
    Ok(Some(record.schema_version))
}

/// Called under the writer lock: checks the folder's version again (a newer fhirsync may have
/// written it since the first check) and records [`FILES_SCHEMA_VERSION`] unless it is recorded.
/// There is no migration between file versions yet: version 1 is the first.
pub(crate) fn record_files_version(layout: &Layout, destination: &str) -> Result<()> {
    if files_version(layout, destination)? == Some(FILES_SCHEMA_VERSION) {
        return Ok(());
    }
    let record =
        SchemaRecord { schema_version: FILES_SCHEMA_VERSION, fhirsync_version: FHIRSYNC_VERSION.to_string() };
    let bytes = serde_json::to_vec_pretty(&record)
        .map_err(|source| Error::Json { action: "encoding the schema version", source })?;
    write_atomic(&layout.schema_file(), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newer version is refused naming both versions and the fix; the same or an older one
    /// passes.
    #[test]
    fn newer_versions_are_refused() {
        let err = refuse_newer("sqlite `t.db`", 3, "9.1.0", 2).unwrap_err().to_string();
        for part in ["sqlite `t.db`", "schema version 3", "fhirsync 9.1.0", "up to 2", "upgrade fhirsync"] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(refuse_newer("x", 2, "0.1.0", 2).is_ok());
        assert!(refuse_newer("x", 1, "0.1.0", 2).is_ok());
    }

    /// A folder records the current version once, and reads it back.
    #[test]
    fn files_version_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(files_version(&layout, "ndjson").unwrap(), None);
        fs::create_dir_all(layout.meta()).unwrap();
        record_files_version(&layout, "ndjson").unwrap();
        assert_eq!(files_version(&layout, "ndjson").unwrap(), Some(FILES_SCHEMA_VERSION));
        let text = fs::read_to_string(layout.schema_file()).unwrap();
        assert!(text.contains(&format!("\"fhirsync_version\": \"{FHIRSYNC_VERSION}\"")), "{text}");
    }
}
