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
//!   database file should be, a damaged `runs.json`) is an error.
//!
//! PostgreSQL drives its own single-threaded runtime, so call [`recent_runs`] from a blocking
//! thread (e.g. `tokio::task::spawn_blocking`), never from inside an async task.

use std::fs;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::config::DestinationConfig;
use crate::destination::RunMetrics;
use crate::destinations::files::RunRecord as FileRun;
use crate::destinations::files::{Layout, apply_committed};
#[cfg(feature = "postgres")]
use crate::destinations::postgres::PostgresBackend;
use crate::destinations::sql::schema::{Dialect, RUNS, lit};
use crate::destinations::sql::{Cell, SqlBackend};
use crate::destinations::sqlite::SqliteBackend;
use crate::{Error, Result};

/// One run of a destination, as recorded by the destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Run id, method and counts (zero until the run commits); serialised inline.
    #[serde(flatten)]
    pub metrics: RunMetrics,
    /// `running`, `succeeded`, `completed_with_gaps`, `failed`, `abandoned` or `interrupted`
    /// (its process died mid-run).
    pub status: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended (`None` while running, or for a run killed before it ended).
    pub ended_at: Option<DateTime<Utc>>,
    /// Error of a failed run.
    pub errors: Option<String>,
    /// The extraction report stored at commit (a serialised `fhirsync_extract::ExtractReport`:
    /// `patients`, `resources`, `outcome_codes`, `gaps`, ...) without its `scope`; `None` until
    /// the run commits.
    pub report: Option<serde_json::Value>,
}

impl RunRecord {
    /// Wall-clock time from start to end, if the run ended.
    pub fn duration(&self) -> Option<TimeDelta> {
        self.ended_at.map(|end| end - self.started_at)
    }
}

/// The `limit` most recent runs of the destination, newest first (by start time, then run id).
///
/// Read-only: never creates a database, schema or folder. A destination where nothing was
/// landed yet gives an empty list. Fails if the destination exists but cannot be read
/// ([`Error::Sqlite`], [`Error::Postgres`], [`Error::Io`], [`Error::CorruptState`]) or holds a
/// value that is not a run record ([`Error::RunHistory`]).
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
        for run in runs.iter_mut().filter(|r| r.status == "running") {
            run.status = "interrupted".to_string();
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
    let d = backend.dialect().clone();
    let exists = match &d {
        Dialect::Sqlite => {
            format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = {}", lit(RUNS))
        }
        Dialect::Postgres { schema } => format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
            lit(schema),
            lit(RUNS)
        ),
    };
    let found = backend.query(&exists)?;
    if found.first().and_then(|r| r.first()).and_then(|c| c.as_deref()) == Some("0") {
        return Ok(Vec::new());
    }
    let columns: Vec<String> = COLUMNS.iter().map(|c| text_column(&d, c)).collect();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = backend.query(&format!(
        "SELECT {} FROM {} ORDER BY started_at DESC, run_id DESC LIMIT {limit}",
        columns.join(", "),
        d.t(RUNS)
    ))?;
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
    let mut next = || cells.next().flatten();
    let mut required = |column: &str| next().ok_or_else(|| bad(column, "missing value".into()));
    let run_id = required("run_id")?;
    let method = required("method")?;
    let status = required("status")?;
    let started_at = required("started_at")?;
    let ended_at = next();
    let mut counts = [0u64; 8];
    for (value, column) in counts.iter_mut().zip(&COLUMNS[5..13]) {
        if let Some(text) = next() {
            *value = text.parse().map_err(|_| bad(column, format!("`{text}` is not a count")))?;
        }
    }
    let errors = next();
    let report = next()
        .map(|text| serde_json::from_str(&text).map_err(|e| bad("report", format!("invalid JSON: {e}"))))
        .transpose()?;
    let [staged, inserted, updated, deleted, unchanged, kept, cohort_exits, view_rows] = counts;
    Ok(RunRecord {
        started_at: parse_time(&started_at).map_err(|d| bad("started_at", d))?,
        ended_at: ended_at.as_deref().map(parse_time).transpose().map_err(|d| bad("ended_at", d))?,
        metrics: RunMetrics {
            run_id,
            method,
            staged,
            inserted,
            updated,
            deleted,
            unchanged,
            kept,
            cohort_exits,
            view_rows,
        },
        status,
        errors,
        report,
    })
}

fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}

fn file_runs(layout: &Layout, kind: &str, limit: usize) -> Result<Vec<RunRecord>> {
    let path = layout.runs_file();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading the run history", path)(e)),
    };
    let mut runs: Vec<FileRun> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::CorruptState { path: path.clone(), detail: e.to_string() })?;
    // A run killed between its snapshot switch and the `runs.json` update is committed.
    apply_committed(layout, &mut runs)?;
    let destination = format!("{kind} `{}`", layout.root().display());
    let mut records =
        runs.into_iter().map(|run| file_record(run, &destination)).collect::<Result<Vec<_>>>()?;
    records.sort_by(|a, b| (b.started_at, &b.metrics.run_id).cmp(&(a.started_at, &a.metrics.run_id)));
    records.truncate(limit);
    Ok(records)
}

fn file_record(run: FileRun, destination: &str) -> Result<RunRecord> {
    let bad = |field: &str, detail: String| Error::RunHistory {
        destination: destination.to_string(),
        detail: format!("run {} `{field}`: {detail}", run.run_id),
    };
    let started_at = parse_time(&run.started_at).map_err(|d| bad("started_at", d))?;
    let ended_at = run.ended_at.as_deref().map(parse_time).transpose().map_err(|d| bad("ended_at", d))?;
    let metrics = RunMetrics { run_id: run.run_id, method: run.method, ..run.metrics.unwrap_or_default() };
    Ok(RunRecord {
        metrics,
        status: run.status,
        started_at,
        ended_at,
        errors: run.errors,
        report: run.report.as_ref().map(crate::destinations::files::without_scope),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((r.metrics.staged, r.metrics.view_rows), (1, 8));
        assert_eq!(r.duration(), Some(TimeDelta::milliseconds(2500)));
        assert_eq!(r.report, Some(serde_json::json!({"patients": 3})));
    }
}
