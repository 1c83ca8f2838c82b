//! Read-only run history of a destination, for `fhirsync status`.
//!
//! Every destination records its runs: SQL destinations in the `_fhirsync_runs` table, file
//! destinations in `<dir>/_fhirsync/runs.json`. [`recent_runs`] reads them back newest first
//! without creating or changing anything:
//!
//! - SQLite is opened read-only; PostgreSQL is connected to without `CREATE SCHEMA`;
//! - a destination where nothing was landed yet (missing SQLite file, PostgreSQL schema or
//!   runs table, missing folder or `runs.json`) gives an **empty list**, not an error, so the
//!   caller can say "nothing landed yet" in its own words;
//! - a file destination's run that was committed (snapshot switched) but killed before
//!   `runs.json` was updated is shown as committed, from the record in its snapshot folder;
//! - a run recorded as `running` whose writer lock is free (its process died) is shown as
//!   `interrupted`, as the next run will record it;
//! - a destination that exists but cannot be read (unreachable server, a folder where the
//!   database file should be, a damaged `runs.json`) is an error, and so is one written by a
//!   newer fhirsync (its schema version, see [`crate::schema_version`], is above this one's).
//!
//! PostgreSQL drives its own single-threaded runtime, so call [`recent_runs`] from a blocking
//! thread (e.g. `tokio::task::spawn_blocking`), never from inside an async task.

use crate::config::{DestinationConfig, Method};
use crate::destination::RunMetrics;
use crate::destinations::files::run_book::RunBook;
use crate::destinations::files::{Layout, apply_committed};
#[cfg(feature = "postgres")]
use crate::destinations::postgres::PostgresBackend;
use crate::destinations::sql::migrate::stored_version;
use crate::destinations::sql::schema::{Dialect, RUNS};
use crate::destinations::sql::{Cell, Params, SqlBackend};
use crate::destinations::sqlite::SqliteBackend;
use crate::run::{RunRecord, RunStatus, stored_time};
use crate::{Error, Result};

/// The `limit` most recent runs of the destination, newest first (by start time, then run id).
///
/// Read-only: never creates a database, schema or folder. A destination where nothing was
/// landed yet gives an empty list. Fails if the destination exists but cannot be read
/// ([`Error::Sqlite`], [`Error::Postgres`], [`Error::Io`], [`Error::CorruptState`]), holds a
/// value that is not a run record ([`Error::RunHistory`]), or was written by a newer fhirsync
/// ([`Error::SchemaTooNew`]).
pub fn recent_runs(config: &DestinationConfig, limit: usize) -> Result<Vec<RunRecord>> {
    let (mut runs, locked) = match config {
        DestinationConfig::Sqlite(c) => {
            if !c.path.try_exists().map_err(Error::io("looking for the database", &c.path))? {
                return Ok(Vec::new());
            }
            let runs = sql_runs(SqliteBackend::open_read_only(c)?, limit)?;
            (runs, crate::lock::is_held(&crate::destinations::sqlite::lock_path(&c.path)))
        }
        #[cfg(feature = "postgres")]
        DestinationConfig::Postgres(c) => {
            let mut backend = PostgresBackend::connect_existing(c)?;
            let locked = backend.schema_locked(&c.schema)?;
            (sql_runs(backend, limit)?, locked)
        }
        #[cfg(feature = "parquet")]
        DestinationConfig::Parquet(c) => {
            let layout = Layout::new(&c.dir);
            (file_runs(&layout, config.kind(), limit)?, crate::lock::is_held(&layout.lock_file()))
        }
        DestinationConfig::Ndjson(c) => {
            let layout = Layout::new(&c.dir);
            (file_runs(&layout, config.kind(), limit)?, crate::lock::is_held(&layout.lock_file()))
        }
        DestinationConfig::Delta(c) => {
            let layout = crate::destinations::delta::state_layout(c)?;
            (file_runs(&layout, config.kind(), limit)?, crate::lock::is_held(&layout.lock_file()))
        }
    };
    if !locked {
        for run in runs.iter_mut().filter(|r| r.status == RunStatus::Running) {
            run.status = RunStatus::Interrupted;
        }
    }
    Ok(runs)
}

/// Columns read from `_fhirsync_runs`, in order.
const COLUMNS: [&str; 15] = [
    "run_id",
    "method",
    "status",
    "started_at",
    "ended_at",
    "staged",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "kept",
    "cohort_exits",
    "view_rows",
    "errors",
    "report",
];

fn sql_runs<B: SqlBackend>(mut backend: B, limit: usize) -> Result<Vec<RunRecord>> {
    // Refuses a newer layout; `None`: fhirsync never wrote here.
    if stored_version(&mut backend)?.is_none() {
        return Ok(Vec::new());
    }
    let d = backend.dialect().clone();
    let columns: Vec<String> = COLUMNS.iter().map(|c| text_column(&d, c)).collect();
    let mut p = Params::new(&d);
    let sql = format!(
        "SELECT {} FROM {} ORDER BY started_at DESC, run_id DESC LIMIT {}",
        columns.join(", "),
        d.t(RUNS),
        p.bind(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    let rows = backend.query(&sql, p.values())?;
    let destination = backend.describe();
    rows.into_iter().map(|row| parse_row(row, &destination)).collect()
}

/// `column` as text; PostgreSQL timestamps as RFC 3339 UTC, like SQLite stores them. The
/// report comes without its `scope` (landing input whose lists grow with the cohort), so
/// reading many runs holds no list in memory.
fn text_column(d: &Dialect, column: &str) -> String {
    match (d, column) {
        (Dialect::Postgres { .. }, "started_at" | "ended_at") => {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
        }
        (Dialect::Postgres { .. }, "report") => "CAST(report::jsonb - 'scope' AS TEXT)".to_string(),
        // Text that is not JSON is left as it is, for the parser to name.
        (Dialect::Sqlite, "report") => {
            "CASE WHEN json_valid(report) THEN json_remove(report, '$.scope') ELSE report END".to_string()
        }
        _ => d.text(column),
    }
}

fn parse_row(row: Vec<Cell>, destination: &str) -> Result<RunRecord> {
    let bad = |column: &str, detail: String| Error::RunHistory {
        destination: destination.to_string(),
        detail: format!("column `{column}`: {detail}"),
    };
    let mut cells = row.into_iter();
    let mut next_cell = || cells.next().flatten();
    let mut required = |column: &str| next_cell().ok_or_else(|| bad(column, "missing value".into()));
    let run_id = required("run_id")?;
    let method: Method = required("method")?.parse().map_err(|e| bad("method", format!("{e}")))?;
    let status: RunStatus = required("status")?.parse().map_err(|e| bad("status", format!("{e}")))?;
    let started_at = stored_time::parse(&required("started_at")?).map_err(|d| bad("started_at", d))?;
    let ended_at =
        next_cell().as_deref().map(stored_time::parse).transpose().map_err(|d| bad("ended_at", d))?;
    let mut counts = [0u64; 8];
    for (value, column) in counts.iter_mut().zip(&COLUMNS[5..13]) {
        if let Some(text) = next_cell() {
            *value = text.parse().map_err(|_| bad(column, format!("`{text}` is not a count")))?;
        }
    }
    let errors = next_cell();
    let report = next_cell()
        .map(|text| serde_json::from_str(&text).map_err(|e| bad("report", format!("invalid JSON: {e}"))))
        .transpose()?;
    let [staged, inserted, updated, deleted, unchanged, kept, cohort_exits, view_rows] = counts;
    // A run has counts once it committed (uncommitted runs keep the columns' zero defaults).
    let metrics = status.is_committed().then(|| RunMetrics {
        run_id: run_id.clone(),
        method: method.as_str().to_string(),
        staged,
        inserted,
        updated,
        deleted,
        unchanged,
        kept,
        cohort_exits,
        view_rows,
    });
    Ok(RunRecord { run_id, method, status, started_at, ended_at, metrics, errors, report })
}

fn file_runs(layout: &Layout, kind: &str, limit: usize) -> Result<Vec<RunRecord>> {
    let destination = format!("{kind} `{}`", layout.root().display());
    // Refuses a newer layout before reading what it may have changed.
    crate::schema_version::files_version(layout, &destination)?;
    let mut runs = RunBook::new(layout).load()?;
    // A run killed between its snapshot switch and the `runs.json` update is committed.
    apply_committed(layout, &mut runs)?;
    for run in &mut runs {
        run.report = run.report.as_ref().map(crate::destinations::files::without_scope);
    }
    runs.sort_by(|a, b| (b.started_at, &b.run_id).cmp(&(a.started_at, &a.run_id)));
    runs.truncate(limit);
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    /// A run row with a non-numeric count is reported with the column, not silently zeroed.
    #[test]
    fn bad_count_is_named() {
        let row: Vec<Cell> =
            ["r1", "reload", "succeeded", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:02.500Z"]
                .into_iter()
                .map(|s| Some(s.to_string()))
                .chain([Some("x".to_string())])
                .collect();
        let err = parse_row(row, "sqlite `t.db`").unwrap_err().to_string();
        assert!(err.contains("staged") && err.contains("`x`"), "{err}");
    }

    /// A stored status this fhirsync does not write is an error naming it, not a default.
    #[test]
    fn unknown_status_is_named() {
        let row: Vec<Cell> = ["r1", "reload", "paused", "2026-01-01T00:00:00.000Z"]
            .into_iter()
            .map(|s| Some(s.to_string()))
            .collect();
        let err = parse_row(row, "sqlite `t.db`").unwrap_err().to_string();
        assert!(err.contains("status") && err.contains("`paused`"), "{err}");
    }

    /// A complete row parses, with its duration and its report as JSON.
    #[test]
    fn row_parses() {
        let mut row: Vec<Cell> =
            ["r1", "reload", "succeeded", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:02.500Z"]
                .into_iter()
                .map(|s| Some(s.to_string()))
                .collect();
        row.extend((1..=8).map(|n| Some(n.to_string())));
        row.push(None);
        row.push(Some(r#"{"patients":3}"#.into()));
        let r = parse_row(row, "sqlite `t.db`").unwrap();
        assert_eq!((r.method, r.status), (Method::Reload, RunStatus::Succeeded));
        let metrics = r.metrics.as_ref().expect("a committed run has counts");
        assert_eq!((metrics.staged, metrics.view_rows), (1, 8));
        assert_eq!(r.duration(), Some(TimeDelta::milliseconds(2500)));
        assert_eq!(r.report, Some(serde_json::json!({"patients": 3})));
    }
}
