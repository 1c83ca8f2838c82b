//! The commit's on-disk index: a scratch SQLite file in the run's staging folder that holds
//! what the commit of a file destination looks up per row (the staged keys of the type being
//! written, with their last staging line and hash and the previous snapshot's hash, and the
//! completed scopes). Its page cache is fixed ([`CACHE_KIB`]), so the commit's memory does not
//! grow with the number of rows or scopes. It is rebuilt by every commit attempt and goes with
//! the staging folder.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Result};

/// Page cache of the index, KiB.
const CACHE_KIB: i64 = 8 * 1024;

fn err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { action, source }
}

/// What the index holds about one staged key of the current type.
pub(super) struct StagedKey {
    /// Staging line of its last copy.
    pub line: u64,
    /// Content hash of that copy.
    pub hash: String,
    /// Hash and first-seen run of the previous snapshot's row, if there was one.
    pub old: Option<(String, String)>,
}

/// The scratch index of one commit.
pub(super) struct Index {
    conn: Connection,
}

impl Index {
    /// Creates the index at `path`, replacing one a killed commit left.
    pub(super) fn create(path: &Path) -> Result<Self> {
        for suffix in ["", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("removing an old commit index", &p)(e));
                }
                _ => {}
            }
        }
        let conn = Connection::open(path).map_err(err("creating the commit index"))?;
        // Scratch data: no journal and no fsync (a killed commit rebuilds it).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -{CACHE_KIB}; \
             PRAGMA temp_store = FILE; \
             CREATE TABLE staged (fhir_version TEXT NOT NULL, id TEXT NOT NULL, line INTEGER NOT NULL, \
               hash TEXT NOT NULL, old_hash TEXT, old_first_seen TEXT, PRIMARY KEY (fhir_version, id)) WITHOUT ROWID; \
             CREATE TABLE complete (fhir_version TEXT NOT NULL, patient_id TEXT NOT NULL, dataset TEXT NOT NULL, \
               PRIMARY KEY (fhir_version, patient_id, dataset)) WITHOUT ROWID; \
             BEGIN;"
        ))
        .map_err(err("creating the commit index"))?;
        Ok(Index { conn })
    }

    /// Records a completed scope (`patient` `None`: a cohort-level scope).
    pub(super) fn add_complete(
        &self,
        fhir_version: &str,
        patient: Option<&str>,
        dataset: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO complete VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .and_then(|mut s| s.execute(params![fhir_version, patient.unwrap_or(""), dataset]))
            .map_err(err("indexing a completed scope"))?;
        Ok(())
    }

    /// Whether the scope completed.
    pub(super) fn is_complete(
        &self,
        fhir_version: &str,
        patient: Option<&str>,
        dataset: &str,
    ) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM complete WHERE fhir_version = ?1 AND patient_id = ?2 AND dataset = ?3",
            )
            .and_then(|mut s| s.exists(params![fhir_version, patient.unwrap_or(""), dataset]))
            .map_err(err("looking a scope up"))
    }

    /// Forgets the staged keys of the previous type.
    pub(super) fn next_type(&self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT; DELETE FROM staged; BEGIN;")
            .map_err(err("clearing the commit index"))
    }

    /// Records a staged copy of a key (a later line replaces an earlier one).
    pub(super) fn stage(&self, fhir_version: &str, id: &str, line: u64, hash: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO staged (fhir_version, id, line, hash) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (fhir_version, id) DO UPDATE SET line = excluded.line, hash = excluded.hash",
            )
            .and_then(|mut s| s.execute(params![fhir_version, id, line as i64, hash]))
            .map_err(err("indexing a staged row"))?;
        Ok(())
    }

    /// Notes the previous snapshot's hash and first-seen run of a key; `false` if it was not
    /// staged.
    pub(super) fn mark_old(
        &self,
        fhir_version: &str,
        id: &str,
        hash: &str,
        first_seen: &str,
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE staged SET old_hash = ?3, old_first_seen = ?4 WHERE fhir_version = ?1 AND id = ?2",
            )
            .and_then(|mut s| s.execute(params![fhir_version, id, hash, first_seen]))
            .map_err(err("indexing a previous row"))?;
        Ok(n > 0)
    }

    /// What the index holds about a staged key.
    pub(super) fn get(&self, fhir_version: &str, id: &str) -> Result<Option<StagedKey>> {
        self.conn
            .prepare_cached(
                "SELECT line, hash, old_hash, old_first_seen FROM staged WHERE fhir_version = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![fhir_version, id], |r| {
                    let old = match (r.get::<_, Option<String>>(2)?, r.get::<_, Option<String>>(3)?) {
                        (Some(h), Some(f)) => Some((h, f)),
                        _ => None,
                    };
                    Ok(StagedKey { line: r.get::<_, i64>(0)? as u64, hash: r.get(1)?, old })
                })
                .optional()
            })
            .map_err(err("looking a staged row up"))
    }
}
