//! The commit's on-disk index: a scratch SQLite file in the run's staging folder that holds
//! the completed scopes a file destination's commit looks up per previous row (one per patient
//! and dataset, the largest set a commit would otherwise hold). Its page cache is fixed
//! ([`CACHE_KIB`]), so the commit's memory does not grow with the number of scopes. It is
//! rebuilt by every commit attempt and goes with the staging folder.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::{Error, Result};

/// Page cache of the index, KiB.
const CACHE_KIB: i64 = 8 * 1024;

fn err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { action, source }
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
}
