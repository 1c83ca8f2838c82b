//! The SQLite backend of the SQL engine.

use std::path::PathBuf;
use std::time::Duration;

use fhirsync_core::{FhirVersion, RawResource};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{CachedStatement, Connection, params};

use super::config::SqliteConfig;
use crate::destination::Destination;
use crate::destinations::sql::schema::{Dialect, ROW_COLUMNS, STAGE_CHANGES, UPSERT};
use crate::destinations::sql::{Cell, Lookup, SqlBackend, SqlDestination, SqlValue, StageTarget, Staged};
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
    busy_timeout: Duration,
    /// The writer lock next to the database (writers only; `None` for read-only opens).
    lock: Option<crate::lock::WriterLock>,
}

/// The writer lock file of a database: `<database>-fhirsync-lock`, next to it.
pub(crate) fn lock_path(db: &std::path::Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-fhirsync-lock");
    PathBuf::from(name)
}

fn err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { action, source }
}

impl SqliteBackend {
    pub(crate) fn open(config: &SqliteConfig) -> Result<Self> {
        let lock = crate::lock::WriterLock::acquire(
            &lock_path(&config.path),
            &format!("sqlite `{}`", config.path.display()),
        )?;
        let conn = Connection::open(&config.path).map_err(err("opening the database"))?;
        let busy_timeout = Duration::from_millis(config.busy_timeout_ms);
        conn.busy_timeout(busy_timeout).map_err(err("setting the busy timeout"))?;
        // WAL: readers see the last committed state while a run writes. NORMAL sync is durable
        // across process kills (only an OS crash can lose the last transactions). 64 KiB pages
        // (new files only): resources of up to ~64 KB stay inline, and inserting ~1.3 KB rows
        // measured 10-18 % less CPU than with 16 KiB pages. A 16 MiB page cache (which also
        // caps the sorter's memory): the `land` bench measured the same CPU as with 64 MiB for
        // 0.3 M and 1 M resources, and half the peak RSS (55 MiB instead of 105).
        conn.execute_batch(
            "PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -16384; PRAGMA temp_store = FILE;",
        )
        .map_err(err("setting pragmas"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteBackend {
            conn,
            path: config.path.clone(),
            dialect: Dialect::Sqlite,
            busy_timeout,
            lock: Some(lock),
        })
    }

    /// The database's journal mode after `PRAGMA journal_mode = {mode}`.
    fn set_journal_mode(&self, mode: &str) -> rusqlite::Result<String> {
        self.conn.query_row(&format!("PRAGMA journal_mode = {mode}"), [], |row| row.get(0))
    }

    /// Opens an existing database read-only: never creates the file or changes pragmas
    /// (read-only callers such as [`crate::recent_runs`]).
    ///
    /// A process killed in the middle of a transaction in rollback-journal mode (a full load
    /// into an empty target) leaves a hot journal, which a read-only connection cannot roll
    /// back ("attempt to write a readonly database"). The file is then opened read-write, with
    /// no pragma changed, and the first read rolls the journal back, as any SQLite client does.
    pub(crate) fn open_read_only(config: &SqliteConfig) -> Result<Self> {
        use rusqlite::OpenFlags;
        let open = |flags: OpenFlags, action: &'static str| -> Result<Connection> {
            let conn = Connection::open_with_flags(&config.path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(err(action))?;
            conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))
                .map_err(err("setting the busy timeout"))?;
            Ok(conn)
        };
        let mut conn = open(OpenFlags::SQLITE_OPEN_READ_ONLY, "opening the database read-only")?;
        let probe = |conn: &Connection| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = probe(&conn)
            && e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK
        {
            tracing::info!("Rolling back the journal an interrupted run left in the database.");
            conn = open(
                OpenFlags::SQLITE_OPEN_READ_WRITE,
                "opening the database to roll back an interrupted run's journal (needs write access)",
            )?;
            probe(&conn).map_err(err("rolling back an interrupted run's journal"))?;
        }
        Ok(SqliteBackend {
            conn,
            path: config.path.clone(),
            dialect: Dialect::Sqlite,
            busy_timeout: Duration::from_millis(config.busy_timeout_ms),
            lock: None,
        })
    }
}

impl SqlBackend for SqliteBackend {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn describe(&self) -> String {
        format!("sqlite `{}`", self.path.display())
    }

    fn run_started(&mut self, run_id: &str) {
        if let Some(lock) = &self.lock {
            lock.set_run(run_id);
        }
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(err("running a statement"))
    }

    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(err("preparing a statement"))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params)).map_err(err("running a statement"))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<Cell>>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(err("preparing a query"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(err("running a query"))?;
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

    /// An empty target has nothing for a reader to see, so the load uses the rollback journal,
    /// which writes each new page once (WAL writes it to the log and again at the checkpoint):
    /// measured 0.6-1.3 CPU-s less per 1 M resources. `synchronous = FULL` keeps each staging
    /// transaction durable. Leaving WAL needs the only connection to the file, so another open
    /// connection (a reader) keeps the load in WAL; nobody waits for it.
    fn begin_bulk_load(&mut self) -> Result<bool> {
        self.conn.busy_timeout(Duration::ZERO).map_err(err("setting the busy timeout"))?;
        let mode = self.set_journal_mode("DELETE");
        self.conn.busy_timeout(self.busy_timeout).map_err(err("setting the busy timeout"))?;
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("delete") => {
                self.conn
                    .execute_batch("PRAGMA synchronous = FULL")
                    .map_err(err("setting the bulk-load pragmas"))?;
                tracing::debug!("Empty target: loading with the rollback journal.");
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                tracing::debug!("Another connection has the database open: loading in WAL mode.");
                Ok(false)
            }
            Err(e) => Err(err("leaving WAL mode for the load")(e)),
        }
    }

    /// Back to WAL (waits for readers up to the busy timeout).
    fn end_bulk_load(&mut self) -> Result<()> {
        let mode = self.set_journal_mode("WAL").map_err(err("returning to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "The database stayed out of WAL mode; the next run restores it.");
        }
        self.conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(err("setting pragmas"))
    }

    fn stage_rows(&mut self, run_id: &str, target: &StageTarget, rows: &[&RawResource]) -> Result<Staged> {
        let mut st = Staging::prepare(&self.conn, &self.dialect, target)?;
        // Parameters that rows of a page share (FHIR version, source, dataset, run) stay bound
        // from row to row and are bound again only when they change; the rest are bound per row.
        let mut shared: Option<(FhirVersion, &str, &fhirsync_core::Dataset)> = None;
        let mut new_rows_empty = target.new_rows_empty;
        let mut staged = Staged::default();
        for r in rows {
            if shared != Some((r.fhir_version, r.source.as_str(), &r.dataset)) {
                shared = Some((r.fhir_version, r.source.as_str(), &r.dataset));
                st.bind_shared(r, run_id)?;
            }
            let hash = r.hash.hex();
            // The landed row's hash where it differs; a row landed unchanged is only noted.
            let before_hash = match st.lookup.as_mut() {
                Some(lookup) => match lookup.find(&r.id, hash.as_str())? {
                    Some(Landed::Unchanged(landed_row)) => {
                        staged.found += 1;
                        lookup.note_unchanged(landed_row, &r.id, !new_rows_empty)?;
                        continue;
                    }
                    Some(Landed::Changed(before_hash)) => {
                        staged.found += 1;
                        Some(before_hash)
                    }
                    None => None,
                },
                None => None,
            };
            st.insert(r, hash.as_str())?;
            new_rows_empty = false;
            staged.written += 1;
            if let Some(stmt) = st.note_change.as_mut() {
                stmt.execute(params![r.resource_type, r.fhir_version.as_str(), r.id, before_hash])
                    .map_err(err("noting a staged change"))?;
            }
        }
        Ok(staged)
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
            stmt.execute(rusqlite::params_from_iter(row)).map_err(err("inserting a view row"))?;
        }
        Ok(())
    }
}

/// The prepared statements of one [`SqliteBackend::stage_rows`] call.
struct Staging<'c> {
    /// The insert into the new-rows table (later copies win).
    insert: CachedStatement<'c>,
    /// The look-ups of [`StageTarget::lookup`].
    lookup: Option<LookupStatements<'c>>,
    /// Reload-and-compare: the note of a new or changed key in `_fhirsync_stage_changes`.
    note_change: Option<CachedStatement<'c>>,
}

/// The statements of [`StageTarget::lookup`]: the landed row of a key, the note that it was
/// staged unchanged, and the removal of a copy staged earlier in the run.
struct LookupStatements<'c> {
    find: CachedStatement<'c>,
    restaged: CachedStatement<'c>,
    unstage: CachedStatement<'c>,
}

/// A staged key's landed row.
enum Landed {
    /// With the staged content: its `_row`.
    Unchanged(i64),
    /// With other content: its hash.
    Changed(String),
}

/// Binds text parameter `i` of `stmt`.
fn bind_text(stmt: &mut rusqlite::Statement<'_>, i: usize, value: &str) -> Result<()> {
    stmt.raw_bind_parameter(i, value).map_err(err("binding a staged value"))
}

impl<'c> Staging<'c> {
    /// Prepares (or takes from the cache) the statements staging into `target`.
    fn prepare(conn: &'c Connection, d: &Dialect, target: &StageTarget) -> Result<Self> {
        let prepare = |sql: String, action: &'static str| conn.prepare_cached(&sql).map_err(err(action));
        let new_rows = &target.new_rows;
        let insert = prepare(
            format!(
                "INSERT INTO {new_rows} ({ROW_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) {UPSERT}"
            ),
            "preparing the staging insert",
        )?;
        let lookup = match &target.lookup {
            Some(Lookup { rows, restaged }) => Some(LookupStatements {
                find: prepare(
                    format!("SELECT _row, content_hash FROM {rows} WHERE fhir_version = ?1 AND id = ?2"),
                    "preparing the staging lookup",
                )?,
                restaged: prepare(
                    format!("INSERT INTO {restaged} (_row) VALUES (?1) ON CONFLICT DO NOTHING"),
                    "preparing the note of a row staged unchanged",
                )?,
                unstage: prepare(
                    format!("DELETE FROM {new_rows} WHERE fhir_version = ?1 AND id = ?2"),
                    "preparing the staging removal",
                )?,
            }),
            None => None,
        };
        let note_change = match target.changes {
            true => Some(prepare(
                format!(
                    "INSERT INTO {} (resource_type, fhir_version, id, before_hash) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    d.t(STAGE_CHANGES)
                ),
                "preparing the staging change note",
            )?),
            false => None,
        };
        Ok(Staging { insert, lookup, note_change })
    }

    /// Binds the parameters `r` shares with the rows around it (FHIR version, source, dataset,
    /// run).
    fn bind_shared(&mut self, r: &RawResource, run_id: &str) -> Result<()> {
        let version = r.fhir_version.as_str();
        bind_text(&mut self.insert, 3, version)?;
        bind_text(&mut self.insert, 4, &r.source)?;
        bind_text(&mut self.insert, 5, &r.dataset.to_string())?;
        bind_text(&mut self.insert, 8, run_id)?;
        if let Some(lookup) = self.lookup.as_mut() {
            bind_text(&mut lookup.find, 1, version)?;
            bind_text(&mut lookup.unstage, 1, version)?;
        }
        Ok(())
    }

    /// Writes `r` (content hash `hash`) to the new-rows table.
    fn insert(&mut self, r: &RawResource, hash: &str) -> Result<()> {
        bind_text(&mut self.insert, 1, &r.id)?;
        self.insert.raw_bind_parameter(2, r.patient_id.as_deref()).map_err(err("binding a staged value"))?;
        bind_text(&mut self.insert, 6, hash)?;
        bind_text(&mut self.insert, 7, &r.json)?;
        self.insert.raw_execute().map_err(err("staging a resource"))?;
        Ok(())
    }
}

impl LookupStatements<'_> {
    /// The landed row of key `id` (version bound by [`Staging::bind_shared`]), compared with
    /// the staged content's `hash`.
    fn find(&mut self, id: &str, hash: &str) -> Result<Option<Landed>> {
        bind_text(&mut self.find, 2, id)?;
        let mut hits = self.find.raw_query();
        let Some(row) = hits.next().map_err(err("looking a staged resource up"))? else { return Ok(None) };
        let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Landed> {
            let landed_hash = row.get_ref(1)?.as_str()?;
            Ok(match landed_hash == hash {
                true => Landed::Unchanged(row.get(0)?),
                false => Landed::Changed(landed_hash.to_string()),
            })
        };
        read(row).map(Some).map_err(err("reading a landed row"))
    }

    /// Notes landed row `landed_row` (key `id`) as staged unchanged; with `unstage`, removes a
    /// copy of the key staged earlier in the run.
    fn note_unchanged(&mut self, landed_row: i64, id: &str, unstage: bool) -> Result<()> {
        self.restaged.raw_bind_parameter(1, landed_row).map_err(err("binding a staged value"))?;
        self.restaged.raw_execute().map_err(err("noting a row staged unchanged"))?;
        if unstage {
            bind_text(&mut self.unstage, 2, id)?;
            self.unstage.raw_execute().map_err(err("removing an earlier staged copy"))?;
        }
        Ok(())
    }
}

/// Text is bound borrowed (no copy), a boolean as 0/1.
impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Owned(Value::Null),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            SqlValue::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
        })
    }
}
