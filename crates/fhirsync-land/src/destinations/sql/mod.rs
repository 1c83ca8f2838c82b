//! The engine shared by the SQL destinations (SQLite, PostgreSQL).
//!
//! Staging writes each new or changed resource once, into a *new-rows table* per resource type
//! (`_fhirsync_new_observation`, registered in `_fhirsync_stage_types`; one row per (FHIR version,
//! id), later copies win). Completed scopes are noted in memory until the next checkpoint and go to
//! `_fhirsync_stage_scopes` in its transaction, with the rows staged before them, so a killed run
//! resumes exactly where its last checkpoint ended.
//!
//! SQLite keeps a type's rows and their `last_seen_run` in two tables under a view
//! ([`schema::Dialect::splits_rows`]) and looks each staged key up while staging: a row with the
//! landed hash is only noted in the restaged table (`_fhirsync_reread_observation`), and
//! reload-and-compare notes new and changed keys in `_fhirsync_stage_changes`. PostgreSQL streams
//! every row into an append-only new-rows table (pipelined binary `COPY`, see its backend), keeps
//! the last copy of each key at commit and compares set-based. The commit is one transaction:
//!
//! 1. completed scopes of [`RunScope::complete`] are added to the staged ones; the cohort is
//!    written to `_fhirsync_cohort`; patients in the target but not in the cohort are flagged in
//!    `_fhirsync_cohort_exits`;
//! 2. per resource type: reload-and-compare writes `I`/`U` change records (new and changed keys)
//!    and `D` records; rows that were not staged again although their scope completed (or whose
//!    patient left the cohort, with `on_cohort_exit = delete`) go. Rows of incomplete scopes are
//!    kept, so a failed page never deletes anything. The new-rows table is merged into the table
//!    (SQLite: see `split`; PostgreSQL: delete and upsert);
//! 3. views are re-materialised, the run row is finished and staging is emptied.
//!
//! Readers see either the previous state or the new one: SQLite in WAL mode and PostgreSQL MVCC
//! both hide the open transaction.
//!
//! Two shortcuts, each taken only when it cannot change the result:
//! - a full load into an empty target lets the backend use a write mode that is only safe without
//!   readers ([`SqlBackend::begin_bulk_load`]: SQLite's rollback journal, which writes each new
//!   page once instead of to the WAL and again at its checkpoint);
//! - when this process staged every row of a type table again (SQLite counts the keys it finds
//!   while staging), the commit does not search the table for rows that were not staged again.

mod commit;
pub(crate) mod migrate;
mod params;
pub(crate) mod schema;
mod split;
mod views;

use std::collections::BTreeSet;

use fhirsync_core::{Dataset, FhirVersion, RawResource, RunScope, ScopeKey};
use fhirsync_views::View;

use crate::config::{LandOptions, Method};
use crate::destination::{Destination, RunMetrics, RunStart};
use crate::run::RunStatus;
use crate::{Error, Result};
pub(crate) use params::{Params, SqlValue};
use schema::{Dialect, RUNS, STAGE_CHANGES, STAGE_SCOPES, STAGE_TYPES, TYPES, restaged_table};

/// One text cell of a query result.
pub(crate) type Cell = Option<String>;

/// What a SQL backend provides to the engine.
pub(crate) trait SqlBackend: Send {
    /// The SQL flavour.
    fn dialect(&self) -> &Dialect;
    /// Kind and location for messages, without credentials.
    fn describe(&self) -> String;
    /// Called once the run id is known, to name it in the writer lock.
    fn run_started(&mut self, _run_id: &str) {}
    /// Runs statements that take no values, such as DDL (may be several, `;`-separated).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Runs one statement with the values of its placeholders ([`Params`]) and returns the
    /// number of rows it changed. A statement that repeats is prepared once.
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64>;
    /// Runs one query with the values of its placeholders ([`Params`]); its columns must all
    /// be text (cast them in SQL).
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<Cell>>>;
    /// Stages resources of one type inside the open transaction (later copies win): into its
    /// new-rows table, with `first_seen_run` (and `last_seen_run`) set to `run_id`, except that a
    /// row found unchanged in [`StageTarget::lookup`] is only noted in the restaged table.
    fn stage_rows(&mut self, run_id: &str, target: &StageTarget, rows: &[&RawResource]) -> Result<Staged>;
    /// Drops rows staged but not yet sent (the transaction is being rolled back).
    fn discard_pending(&mut self) {}
    /// Inserts rows into `table` (quoted, qualified) inside the open transaction.
    fn insert_rows(&mut self, table: &str, columns: &[String], rows: &[Vec<SqlValue>]) -> Result<()>;
    /// Called outside a transaction when a full load starts (or resumes) into an empty target:
    /// the backend may switch to a write mode only safe without readers. Returns whether it did.
    fn begin_bulk_load(&mut self) -> Result<bool> {
        Ok(false)
    }
    /// Undoes [`SqlBackend::begin_bulk_load`], outside a transaction.
    fn end_bulk_load(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Where one resource type's rows are staged, and what to look up while staging.
pub(crate) struct StageTarget {
    /// The new-rows table, quoted and qualified.
    pub new_rows: String,
    /// Set when the backend splits rows ([`Dialect::splits_rows`]), the type has a table and
    /// the method keeps rows.
    pub lookup: Option<Lookup>,
    /// The new-rows table holds no row of this run (known when this process staged all of it): an
    /// unchanged row then needs no removal from it.
    pub new_rows_empty: bool,
    /// Reload-and-compare: record keys missing from the rows table, or with another hash, in
    /// `_fhirsync_stage_changes`.
    pub changes: bool,
}

/// The landed rows each staged key is looked up in (SQLite's split layout).
pub(crate) struct Lookup {
    /// The rows table, quoted.
    pub rows: String,
    /// The restaged table (quoted) that takes the `_row` of a row staged with its landed
    /// content; such a row is not written to the new-rows table, and a copy staged there earlier is
    /// removed.
    pub restaged: String,
}

/// What [`SqlBackend::stage_rows`] did with a slice of rows.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Staged {
    /// Rows whose key was found in [`Lookup::rows`].
    pub found: u64,
    /// Rows written to the new-rows table.
    pub written: u64,
}

/// The resources of one type in a staged batch, in order.
struct TypeRows<'a> {
    resource_type: &'a str,
    /// Type table name (validated).
    table: String,
    rows: Vec<&'a RawResource>,
}

impl<'a> TypeRows<'a> {
    /// Groups a batch by resource type, validating each type once.
    fn group(resources: &'a [RawResource]) -> Result<Vec<TypeRows<'a>>> {
        let mut groups: Vec<TypeRows<'a>> = Vec::new();
        for r in resources {
            match groups.iter_mut().find(|g| g.resource_type == r.resource_type) {
                Some(g) => g.rows.push(r),
                None => groups.push(TypeRows {
                    resource_type: &r.resource_type,
                    table: schema::type_table(&r.resource_type)?,
                    rows: vec![r],
                }),
            }
        }
        Ok(groups)
    }
}

/// What this process staged of one type in the current run: tells staging whether the new-rows
/// table is still empty, and (with [`StageTarget::lookup`]) lets the commit skip its search for
/// rows that were not staged again.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// Rows staged (a key staged twice counts twice).
    rows: u64,
    /// Rows whose key was found in the type table.
    found: u64,
    /// Rows written to the new-rows table.
    written: u64,
    /// The type table's [`Dialect::last_row_sql`] when staging of the type began.
    last_row: Option<String>,
}

/// The run being staged.
#[derive(Debug, Clone)]
struct ActiveRun {
    id: String,
    method: Method,
    options: LandOptions,
}

/// A SQL destination: the engine over one backend.
pub(crate) struct SqlDestination<B> {
    backend: B,
    run: Option<ActiveRun>,
    in_txn: bool,
    /// Resources and scopes recorded since the last durable checkpoint.
    pending: usize,
    /// Scopes completed since the last checkpoint: written with it, in the transaction that
    /// makes their rows durable (one multi-row insert instead of a statement per scope).
    pending_scopes: Vec<ScopeKey>,
    /// Resource types with a new-rows table in the current run.
    new_rows_tables: BTreeSet<String>,
    /// Resource types with a type table (registered in `_fhirsync_types`) when the run began.
    tables: BTreeSet<String>,
    /// The backend is in its bulk-load mode ([`SqlBackend::begin_bulk_load`]).
    bulk_load: bool,
    /// Per resource type, what this process staged; `None` once it cannot be trusted (a resumed
    /// run staged rows before, or a staging transaction rolled back).
    tallies: Option<std::collections::BTreeMap<String, Tally>>,
    /// Per resource type whose rows table was rebuilt ahead of the commit ([`split`]), that
    /// table's state when the copy began.
    rebuilt: std::collections::BTreeMap<String, split::RebuildStart>,
}

impl<B: SqlBackend> SqlDestination<B> {
    /// Wraps a connected backend: refuses a target written by a newer fhirsync before writing
    /// anything, then creates the bookkeeping tables and migrates an older target (see
    /// `migrate.rs`).
    pub(crate) fn new(mut backend: B) -> Result<Self> {
        let found = migrate::stored_version(&mut backend)?;
        let ddl = backend.dialect().bookkeeping_ddl();
        backend.batch(&ddl)?;
        let mut this = SqlDestination {
            backend,
            run: None,
            in_txn: false,
            pending: 0,
            pending_scopes: Vec::new(),
            new_rows_tables: BTreeSet::new(),
            tables: BTreeSet::new(),
            bulk_load: false,
            tallies: None,
            rebuilt: Default::default(),
        };
        this.migrate(found)?;
        Ok(this)
    }

    fn d(&self) -> &Dialect {
        self.backend.dialect()
    }

    fn open_txn(&mut self) -> Result<()> {
        if !self.in_txn {
            let begin = self.d().begin();
            self.backend.batch(begin)?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn commit_txn(&mut self) -> Result<()> {
        if !self.pending_scopes.is_empty() {
            let run_id = self.active("scope_complete before begin")?.id.clone();
            self.open_txn()?;
            let scopes = std::mem::take(&mut self.pending_scopes);
            if let Err(e) = self.insert_scopes(&run_id, &scopes) {
                self.rollback_txn();
                return Err(e);
            }
        }
        if self.in_txn {
            // A failed COMMIT (PostgreSQL: a staged copy failed) leaves nothing open.
            if let Err(e) = self.backend.batch("COMMIT") {
                self.rollback_txn();
                return Err(e);
            }
            self.in_txn = false;
            self.pending = 0;
        }
        Ok(())
    }

    fn rollback_txn(&mut self) {
        // Scopes noted since the last checkpoint go with the rows staged since then.
        self.pending_scopes.clear();
        if self.in_txn {
            // New-rows tables created in this transaction are gone; re-check on next use.
            self.new_rows_tables.clear();
            self.tallies = None;
            self.backend.discard_pending();
            // Best effort: the connection is reset by the driver if this fails.
            let _ = self.backend.batch("ROLLBACK");
            self.in_txn = false;
            self.pending = 0;
        }
    }

    fn active(&self, what: &'static str) -> Result<&ActiveRun> {
        self.run.as_ref().ok_or(Error::NoActiveRun(what))
    }

    /// Leaves the backend's bulk-load mode if it is in it. The data is committed either way: a
    /// failure is logged, and the next open of the destination restores the normal mode.
    fn end_bulk_load(&mut self) {
        if std::mem::take(&mut self.bulk_load)
            && let Err(e) = self.backend.end_bulk_load()
        {
            tracing::warn!(error = %e, "Could not leave the bulk-load mode; the next run restores it.");
        }
    }

    /// Runs `f` inside a transaction, rolling back on error.
    fn in_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.commit_txn()?;
        self.open_txn()?;
        match f(self) {
            Ok(v) => {
                self.commit_txn()?;
                Ok(v)
            }
            Err(e) => {
                self.rollback_txn();
                Err(e)
            }
        }
    }

    fn registered_types(&mut self) -> Result<Vec<(String, String)>> {
        let sql =
            format!("SELECT resource_type, table_name FROM {} ORDER BY resource_type", self.d().t(TYPES));
        Ok(self
            .backend
            .query(&sql, &[])?
            .into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                Some((it.next()??, it.next()??))
            })
            .collect())
    }

    /// Whether the target holds landed data: a committed run, or a row in a type table (the
    /// full-load guard). A query that fails or returns no count is an error, never "empty".
    fn target_has_data(&mut self) -> Result<bool> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT {} FROM {} WHERE status IN ({})",
            d.text("count(*)"),
            d.t(RUNS),
            p.bind_list(RunStatus::COMMITTED.map(RunStatus::as_str))
        );
        if self.count("counting committed runs", &sql, &p)? > 0 {
            return Ok(true);
        }
        for (_, table) in self.registered_types()? {
            let rows = format!("SELECT {} FROM {}", d.text("count(*)"), d.t(&table));
            if self.count("counting landed rows", &rows, &Params::new(&d))? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs a one-cell integer query with its values ([`count`]).
    fn count(&mut self, what: &'static str, sql: &str, params: &Params) -> Result<u64> {
        count(&mut self.backend, what, sql, params.values())
    }

    /// Marks every unfinished run abandoned, in the open transaction.
    fn abandon_unfinished(&mut self) -> Result<()> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "UPDATE {} SET status = {}, ended_at = {} WHERE status IN ({})",
            d.t(RUNS),
            p.bind(RunStatus::Abandoned.as_str()),
            p.bind_time(Some(&now())),
            p.bind_list(RunStatus::UNFINISHED.map(RunStatus::as_str))
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// The latest unfinished run: its id and method.
    fn latest_unfinished(&mut self) -> Result<Option<(String, Method)>> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT run_id, method FROM {} WHERE status IN ({}) ORDER BY started_at DESC, run_id DESC LIMIT 1",
            d.t(RUNS),
            p.bind_list(RunStatus::UNFINISHED.map(RunStatus::as_str))
        );
        let rows = self.backend.query(&sql, p.values())?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let mut cells = row.into_iter();
        let (Some(run_id), Some(method)) = (cells.next().flatten(), cells.next().flatten()) else {
            return Err(Error::RunHistory {
                destination: self.backend.describe(),
                detail: "an unfinished run without its id or method".into(),
            });
        };
        let method = method.parse().map_err(|e: crate::config::UnknownMethod| Error::RunHistory {
            destination: self.backend.describe(),
            detail: format!("run {run_id}: {e}"),
        })?;
        Ok(Some((run_id, method)))
    }

    /// Empties staging: drops every new-rows table, forgets staged changes and scopes.
    fn clear_staging(&mut self) -> Result<()> {
        let d = self.d().clone();
        let staged = self
            .backend
            .query(&format!("SELECT resource_type, table_name FROM {}", d.t(STAGE_TYPES)), &[])?;
        let mut sql = String::new();
        for row in staged {
            let mut cells = row.into_iter().flatten();
            let (Some(resource_type), Some(new_rows)) = (cells.next(), cells.next()) else { continue };
            sql.push_str(&format!("DROP TABLE IF EXISTS {};\n", d.t(&new_rows)));
            if d.splits_rows() {
                let table = schema::type_table(&resource_type)?;
                for staging in [restaged_table(&table), schema::rebuilt_rows_table(&table)] {
                    sql.push_str(&format!("DROP TABLE IF EXISTS {};\n", d.t(&staging)));
                }
            }
        }
        sql.push_str(&format!(
            "DELETE FROM {}; DELETE FROM {}; DELETE FROM {};",
            d.t(STAGE_TYPES),
            d.t(STAGE_CHANGES),
            d.t(STAGE_SCOPES)
        ));
        self.backend.batch(&sql)?;
        self.new_rows_tables.clear();
        Ok(())
    }

    /// Creates the new-rows table of type table `table` in the open transaction unless it exists.
    fn ensure_new_rows_table(&mut self, run_id: &str, resource_type: &str, table: &str) -> Result<()> {
        if self.new_rows_tables.contains(resource_type) {
            return Ok(());
        }
        let d = self.d().clone();
        let new_rows = d.new_rows_name(table, run_id);
        self.backend.batch(&d.new_rows_ddl(table, run_id)?)?;
        let mut p = Params::new(&d);
        let sql = format!(
            "INSERT INTO {} (resource_type, table_name) VALUES ({}, {}) ON CONFLICT DO NOTHING",
            d.t(STAGE_TYPES),
            p.bind(resource_type),
            p.bind(&new_rows)
        );
        self.backend.execute(&sql, p.values())?;
        self.new_rows_tables.insert(resource_type.to_string());
        Ok(())
    }

    /// Stages one batch, grouped by type, inside the open transaction.
    fn stage_batch(&mut self, run: &ActiveRun, by_type: Vec<TypeRows<'_>>) -> Result<()> {
        let d = self.d().clone();
        for TypeRows { resource_type, table, rows } in by_type {
            self.ensure_new_rows_table(&run.id, resource_type, &table)?;
            let lookup = (d.splits_rows()
                && run.method != Method::FullLoad
                && self.tables.contains(resource_type))
            .then(|| Lookup { rows: d.t(&d.rows_table(&table)), restaged: d.t(&restaged_table(&table)) });
            if self.tallies.as_ref().is_some_and(|t| !t.contains_key(resource_type)) {
                let last_row = match lookup.is_some() {
                    true => self.last_row(&table)?,
                    false => None,
                };
                if let Some(tallies) = self.tallies.as_mut() {
                    tallies.insert(resource_type.to_string(), Tally { last_row, ..Tally::default() });
                }
            }
            let tally = self.tallies.as_ref().and_then(|t| t.get(resource_type));
            let target = StageTarget {
                new_rows: d.t(&d.new_rows_name(&table, &run.id)),
                lookup,
                new_rows_empty: tally.is_some_and(|t| t.written == 0),
                changes: run.method == Method::ReloadAndCompare,
            };
            let staged = self.backend.stage_rows(&run.id, &target, &rows)?;
            if let Some(tally) = self.tallies.as_mut().and_then(|t| t.get_mut(resource_type)) {
                tally.rows += rows.len() as u64;
                tally.found += staged.found;
                tally.written += staged.written;
            }
        }
        Ok(())
    }

    /// Whether every row of type table `table` was staged again in this run, so no row needs
    /// looking for among the ones not staged again: this process staged all of the `staged` keys
    /// (no key twice) with lookups, found as many keys in the table as it holds (`before`
    /// rows), and no row was added to the table since.
    fn all_restaged(&mut self, resource_type: &str, table: &str, staged: u64, before: u64) -> Result<bool> {
        let Some(tally) = self.tallies.as_ref().and_then(|t| t.get(resource_type)).cloned() else {
            return Ok(false);
        };
        if tally.rows != staged || tally.found != before {
            return Ok(false);
        }
        Ok(tally.last_row.is_some() && self.last_row(table)? == tally.last_row)
    }

    /// Type table `table`'s [`Dialect::last_row_sql`] (`None` for an empty table or a backend
    /// without row ids).
    fn last_row(&mut self, table: &str) -> Result<Option<String>> {
        let Some(sql) = self.d().last_row_sql(table) else {
            return Ok(None);
        };
        Ok(self.backend.query(&sql, &[])?.into_iter().next().and_then(|r| r.into_iter().next()?))
    }

    fn start_or_resume(&mut self, method: Method, options: &LandOptions) -> Result<RunStart> {
        self.interrupt_dead_runs()?;
        if let Some((run_id, m)) = self.latest_unfinished()?
            && options.resume
            && m == method
        {
            return self.resume(run_id, method);
        }
        self.abandon_unfinished()?;
        self.clear_staging()?;
        if method == Method::FullLoad && !options.replace && self.target_has_data()? {
            return Err(Error::TargetNotEmpty { destination: self.backend.describe() });
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "INSERT INTO {} (run_id, method, status, started_at) VALUES ({}, {}, {}, {})",
            d.t(RUNS),
            p.bind(&run_id),
            p.bind(method.as_str()),
            p.bind(RunStatus::Running.as_str()),
            p.bind_time(Some(&now()))
        );
        self.backend.execute(&sql, p.values())?;
        tracing::info!(run_id = %run_id, method = %method, "Run started.");
        Ok(RunStart { run_id, resumed: false, completed_scopes: BTreeSet::new() })
    }

    /// Marks every run still `running` interrupted: this process holds the writer lock, so such
    /// a run died with its process.
    fn interrupt_dead_runs(&mut self) -> Result<()> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT run_id FROM {} WHERE status = {}",
            d.t(RUNS),
            p.bind(RunStatus::Running.as_str())
        );
        let dead = self.backend.query(&sql, p.values())?;
        for run_id in dead.into_iter().filter_map(|r| r.into_iter().next()?) {
            tracing::warn!(run_id = %run_id, "The run before this one died mid-way; it is marked interrupted.");
            self.set_status(&run_id, RunStatus::Interrupted, Some(&now()), None)?;
        }
        Ok(())
    }

    /// Resumes unfinished run `run_id`: running again, with its completed scopes and the
    /// types it staged.
    fn resume(&mut self, run_id: String, method: Method) -> Result<RunStart> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "UPDATE {} SET status = {}, errors = NULL, ended_at = NULL WHERE run_id = {}",
            d.t(RUNS),
            p.bind(RunStatus::Running.as_str()),
            p.bind(&run_id)
        );
        self.backend.execute(&sql, p.values())?;
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT fhir_version, patient_id, dataset FROM {} WHERE run_id = {}",
            d.t(STAGE_SCOPES),
            p.bind(&run_id)
        );
        let scopes = self.backend.query(&sql, p.values())?;
        let completed_scopes = scopes.into_iter().filter_map(parse_scope).collect();
        let new_rows_tables =
            self.backend.query(&format!("SELECT resource_type FROM {}", d.t(STAGE_TYPES)), &[])?;
        self.new_rows_tables = new_rows_tables.into_iter().filter_map(|r| r.into_iter().next()?).collect();
        tracing::info!(run_id = %run_id, method = %method, "Resuming unfinished run.");
        Ok(RunStart { run_id, resumed: true, completed_scopes })
    }

    /// Sets run `run_id`'s status, end time and error (`NULL` where `None`).
    fn set_status(
        &mut self,
        run_id: &str,
        status: RunStatus,
        ended_at: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "UPDATE {} SET status = {}, ended_at = {}, errors = {} WHERE run_id = {}",
            d.t(RUNS),
            p.bind(status.as_str()),
            p.bind_time(ended_at),
            p.bind(error),
            p.bind(run_id)
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// Records completed scopes of run `run_id` (ignoring ones already recorded), in the open
    /// transaction: multi-row inserts of [`SCOPES_PER_INSERT`] scopes.
    fn insert_scopes(&mut self, run_id: &str, scopes: &[ScopeKey]) -> Result<()> {
        let d = self.d().clone();
        for chunk in scopes.chunks(SCOPES_PER_INSERT) {
            let mut p = Params::new(&d);
            let run = p.bind(run_id);
            let values: Vec<String> = chunk
                .iter()
                .map(|s| {
                    format!(
                        "({run}, {}, {}, {})",
                        p.bind(s.fhir_version.as_str()),
                        p.bind(s.patient_id.as_deref().unwrap_or("")),
                        p.bind(s.dataset.to_string())
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO {} (run_id, fhir_version, patient_id, dataset) VALUES {} ON CONFLICT DO NOTHING",
                d.t(STAGE_SCOPES),
                values.join(", ")
            );
            self.backend.execute(&sql, p.values())?;
        }
        Ok(())
    }
}

/// Scopes per multi-row insert (3 values each, plus the run id).
const SCOPES_PER_INSERT: usize = 500;

impl<B: SqlBackend> Destination for SqlDestination<B> {
    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn begin(&mut self, method: Method, options: &LandOptions) -> Result<RunStart> {
        self.rollback_txn();
        self.run = None;
        self.end_bulk_load();
        let start = self.in_transaction(|this| this.start_or_resume(method, options))?;
        self.backend.run_started(&start.run_id);
        self.tables = self.registered_types()?.into_iter().map(|(t, _)| t).collect();
        self.tallies = (!start.resumed).then(Default::default);
        if method == Method::FullLoad && !self.target_has_data()? {
            self.bulk_load = self.backend.begin_bulk_load()?;
        }
        self.run = Some(ActiveRun { id: start.run_id.clone(), method, options: options.clone() });
        Ok(start)
    }

    fn stage(&mut self, resources: &[RawResource]) -> Result<()> {
        let run = self.active("stage before begin")?.clone();
        let checkpoint_rows = run.options.checkpoint_rows.max(1);
        // Grouped (and type names validated) before the transaction, so a bad resource type
        // never rolls back rows staged since the last checkpoint.
        let by_type = TypeRows::group(resources)?;
        self.open_txn()?;
        if let Err(e) = self.stage_batch(&run, by_type) {
            self.rollback_txn();
            return Err(e);
        }
        self.pending += resources.len();
        if self.pending >= checkpoint_rows {
            self.commit_txn()?;
        }
        Ok(())
    }

    fn scope_complete(&mut self, scope: &ScopeKey) -> Result<()> {
        let checkpoint_rows = self.active("scope_complete before begin")?.options.checkpoint_rows.max(1);
        // Noted now, written at the next checkpoint with the rows staged before it (so a scope is
        // never durable without its rows). A scope counts as a row towards the checkpoint, so
        // a run of empty scopes is made durable too.
        self.pending_scopes.push(scope.clone());
        self.pending += 1;
        if self.pending >= checkpoint_rows {
            self.commit_txn()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.commit_txn()
    }

    fn commit(&mut self, scope: &RunScope, views: &[View], report: &serde_json::Value) -> Result<RunMetrics> {
        let run = self.active("commit before begin")?.clone();
        if self.d().splits_rows() && run.method != Method::FullLoad {
            self.rebuild_rows_ahead(&run.id, run.options.checkpoint_rows.max(1))?;
        }
        let metrics = self.in_transaction(|this| this.apply(&run, scope, views, report))?;
        self.run = None;
        self.end_bulk_load();
        metrics.log_committed();
        Ok(metrics)
    }

    fn fail(&mut self, error: &str) -> Result<()> {
        let run_id = self.active("fail before begin")?.id.clone();
        self.commit_txn()?;
        self.set_status(&run_id, RunStatus::Failed, Some(&now()), Some(error))?;
        self.run = None;
        tracing::warn!(run_id = %run_id, "Run marked failed; staged data is kept for resume.");
        Ok(())
    }
}

/// A completed scope of the resumed run. A row this version cannot read is left out on
/// purpose: its scope is then fetched again, which costs requests but never data.
fn parse_scope(row: Vec<Cell>) -> Option<ScopeKey> {
    let mut it = row.into_iter();
    let fhir_version: FhirVersion = it.next()??.parse().ok()?;
    let patient = it.next()??;
    let dataset: Dataset = it.next()??.parse().ok()?;
    Some(ScopeKey { fhir_version, patient_id: (!patient.is_empty()).then_some(patient), dataset })
}

/// Runs a query (with the values of its placeholders) whose first row's first cell is a number
/// (a count) and returns it; `what` says
/// what is counted. A missing row, NULL or a cell that is not a number is
/// [`Error::NotANumber`], never 0.
pub(crate) fn count<B: SqlBackend>(
    backend: &mut B,
    what: &'static str,
    sql: &str,
    params: &[SqlValue],
) -> Result<u64> {
    let rows = backend.query(sql, params)?;
    let cell = rows.into_iter().next().and_then(|r| r.into_iter().next()).flatten();
    number(cell.as_deref(), what, || backend.describe())
}

/// `cell` as a number, else [`Error::NotANumber`] naming `what` and the destination.
pub(crate) fn number(
    cell: Option<&str>,
    what: &'static str,
    destination: impl FnOnce() -> String,
) -> Result<u64> {
    match cell.map(str::parse) {
        Some(Ok(n)) => Ok(n),
        _ => Err(Error::NotANumber { destination: destination(), what, found: cell.map(str::to_string) }),
    }
}

/// Current time, RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::sqlite::{SqliteBackend, SqliteConfig};

    /// A count query that returns no row, NULL or text is an error naming what was counted,
    /// never 0; a number is the count.
    #[test]
    fn count_never_defaults_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig { path: dir.path().join("t.db"), ..SqliteConfig::default() };
        let mut backend = SqliteBackend::open(&config).unwrap();
        assert_eq!(
            count(&mut backend, "counting", "SELECT CAST(?1 AS TEXT)", &[SqlValue::Int(3)]).unwrap(),
            3
        );
        for sql in ["SELECT 1 WHERE 0", "SELECT NULL", "SELECT 'x'"] {
            let err = count(&mut backend, "counting landed rows", sql, &[]).unwrap_err();
            assert!(matches!(err, Error::NotANumber { what: "counting landed rows", .. }), "{sql}: {err}");
        }
        let err = count(&mut backend, "counting", "SELECT 'x'", &[]).unwrap_err().to_string();
        assert!(err.contains("`x` instead of a number") && err.contains("t.db"), "{err}");
    }
}
