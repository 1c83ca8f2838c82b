//! The SQLite backend of the SQL engine.

use std::path::PathBuf;
use std::time::Duration;

use fhirsync_core::RawResource;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};

use super::config::SqliteConfig;
use crate::destination::Destination;
use crate::destinations::sql::schema::Dialect;
use crate::destinations::sql::{Cell, SqlBackend, SqlDestination, SqlValue};
use crate::{Error, Result};

/// Prepared-statement cache size (staging, view inserts).
const STATEMENT_CACHE: usize = 64;

/// Opens (creating if needed) the database and returns the destination.
pub(crate) fn open(config: &SqliteConfig) -> Result<Box<dyn Destination>> {
    Ok(Box::new(SqlDestination::new(SqliteBackend::open(config)?)?))
}

/// A SQLite connection with the pragmas fhirsync relies on.
pub(crate) struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
    dialect: Dialect,
}

fn err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { action, source }
}

impl SqliteBackend {
    pub(crate) fn open(config: &SqliteConfig) -> Result<Self> {
        let conn = Connection::open(&config.path).map_err(err("opening the database"))?;
        conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))
            .map_err(err("setting the busy timeout"))?;
        // WAL: readers see the last committed state while a run writes. NORMAL sync is durable
        // across process kills (only an OS crash can lose the last transactions).
        conn.execute_batch(
            "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -65536; PRAGMA temp_store = FILE;",
        )
        .map_err(err("setting pragmas"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteBackend { conn, path: config.path.clone(), dialect: Dialect::Sqlite })
    }

    /// Opens an existing database read-only: never creates the file or changes pragmas
    /// (read-only callers such as [`crate::recent_runs`]).
    pub(crate) fn open_read_only(config: &SqliteConfig) -> Result<Self> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&config.path, flags)
            .map_err(err("opening the database read-only"))?;
        conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))
            .map_err(err("setting the busy timeout"))?;
        Ok(SqliteBackend { conn, path: config.path.clone(), dialect: Dialect::Sqlite })
    }
}

impl SqlBackend for SqliteBackend {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn describe(&self) -> String {
        format!("sqlite `{}`", self.path.display())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(err("running a statement"))
    }

    fn execute(&mut self, sql: &str) -> Result<u64> {
        Ok(self.conn.execute(sql, []).map_err(err("running a statement"))? as u64)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Cell>>> {
        let mut stmt = self.conn.prepare(sql).map_err(err("preparing a query"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query([]).map_err(err("running a query"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err("reading a query result"))? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                let cell = match row.get_ref(i).map_err(err("reading a column"))? {
                    ValueRef::Null => None,
                    ValueRef::Integer(v) => Some(v.to_string()),
                    ValueRef::Real(v) => Some(v.to_string()),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
                };
                cells.push(cell);
            }
            out.push(cells);
        }
        Ok(out)
    }

    fn stage_rows(&mut self, run_id: &str, rows: &[RawResource]) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO _fhirsync_stage (run_id, resource_type, fhir_version, id, patient_id, dataset, source, \
                 content_hash, resource) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (resource_type, fhir_version, id) DO UPDATE SET run_id = excluded.run_id, \
                 patient_id = excluded.patient_id, dataset = excluded.dataset, source = excluded.source, \
                 content_hash = excluded.content_hash, resource = excluded.resource",
            )
            .map_err(err("preparing the staging insert"))?;
        for r in rows {
            stmt.execute(params![
                run_id,
                r.resource_type,
                r.fhir_version.as_str(),
                r.id,
                r.patient_id,
                r.dataset.to_string(),
                r.source,
                r.hash.to_hex(),
                &*r.json,
            ])
            .map_err(err("staging a resource"))?;
        }
        Ok(())
    }

    fn insert_rows(&mut self, table: &str, columns: &[String], rows: &[Vec<SqlValue>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql =
            format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders.join(", "));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err("preparing a view insert"))?;
        for row in rows {
            let values = row.iter().map(|v| match v {
                SqlValue::Null => rusqlite::types::Value::Null,
                SqlValue::Text(s) => rusqlite::types::Value::Text(s.clone()),
                SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
                SqlValue::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
            });
            stmt.execute(rusqlite::params_from_iter(values)).map_err(err("inserting a view row"))?;
        }
        Ok(())
    }
}
