//! Materialising SQL-on-FHIR views into `view_<name>` tables.
//!
//! Every view table has the columns of [`table_columns`]: `_fhir_version` and `_id` (the
//! resource the row came from), then the view's columns typed by their FHIR type, each
//! date/dateTime followed by its `_text` companion. Column types per [`ColumnKind`]:
//!
//! | kind | SQLite (declared) | PostgreSQL |
//! |---|---|---|
//! | text, companion | `TEXT` | `text` |
//! | collection | `TEXT` (JSON) | `json` |
//! | integer | `INTEGER` | `bigint` |
//! | decimal | `DECIMAL_TEXT`: text affinity, the exact literal | `numeric` |
//! | boolean | `BOOLEAN` (0/1) | `boolean` |
//! | date | `DATE` (`YYYY-MM-DD`) | `date` |
//! | dateTime, instant | `TIMESTAMP` (UTC, `YYYY-MM-DD HH:MM:SS.SSS`) | `timestamptz` |
//!
//! SQLite's declared types are what tools read (`PRAGMA table_info`): DuckDB's SQLite scanner
//! maps `DATE` to DATE, `TIMESTAMP` to TIMESTAMP, `DECIMAL_TEXT` (it contains `TEXT`) to VARCHAR,
//! so a decimal is never turned into a binary float. `DATE` and `TIMESTAMP` have NUMERIC
//! affinity, which keeps these texts as text. After reload-and-compare only the resources
//! changed in the run are re-flattened: rows of updated/deleted ids are deleted, rows of
//! inserted/updated ids are inserted. A new or redefined view, or any other method, rebuilds
//! the table from all rows.

use chrono::{DateTime, Utc};
use fhirsync_views::View;

use super::commit::Condition;
use super::schema::{CHANGES, Dialect, VIEWS, quote_ident, type_table, view_table};
use super::{ActiveRun, Params, SqlBackend, SqlDestination, SqlValue};
use crate::Result;
use crate::config::Method;
use crate::run::ChangeOp;
use crate::views::{CellValue, ColumnKind, table_columns, table_row, view_signature};

/// Resources read per page while flattening.
const PAGE_ROWS: usize = 2_000;

/// The column type of a view-table column (see the module table).
fn column_type(d: &Dialect, kind: ColumnKind) -> &'static str {
    let sqlite = matches!(d, Dialect::Sqlite);
    match kind {
        ColumnKind::Text => "TEXT",
        ColumnKind::Json if sqlite => "TEXT",
        ColumnKind::Json => "json",
        ColumnKind::Integer => d.int(),
        ColumnKind::Decimal if sqlite => "DECIMAL_TEXT",
        ColumnKind::Decimal => "numeric",
        ColumnKind::Boolean if sqlite => "BOOLEAN",
        ColumnKind::Boolean => "boolean",
        ColumnKind::Date if sqlite => "DATE",
        ColumnKind::Date => "date",
        ColumnKind::Timestamp if sqlite => "TIMESTAMP",
        ColumnKind::Timestamp => "timestamptz",
    }
}

/// A typed cell as the value the backend binds: text in the form its column type reads.
fn sql_value(d: &Dialect, cell: CellValue) -> SqlValue {
    match cell {
        CellValue::Null => SqlValue::Null,
        CellValue::Text(s) | CellValue::Decimal(s) => SqlValue::Text(s),
        CellValue::Json(v) => SqlValue::Text(v.to_string()),
        CellValue::Int(i) => SqlValue::Int(i),
        CellValue::Bool(b) => SqlValue::Bool(b),
        CellValue::Date(day) => SqlValue::Text(day.format("%Y-%m-%d").to_string()),
        CellValue::Timestamp(t) => SqlValue::Text(timestamp_text(d, t)),
    }
}

/// An instant as text: SQLite's own UTC form `YYYY-MM-DD HH:MM:SS.SSS` (six fraction digits when
/// the value has microseconds), which its date functions, DuckDB and JDBC drivers read;
/// RFC 3339 in UTC for PostgreSQL's `timestamptz`.
pub(crate) fn timestamp_text(d: &Dialect, t: DateTime<Utc>) -> String {
    match d {
        Dialect::Sqlite if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) => {
            t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
        }
        Dialect::Sqlite => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        Dialect::Postgres { .. } => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }
}

impl<B: SqlBackend> SqlDestination<B> {
    /// Materialises every view; returns the number of rows written.
    pub(super) fn materialise_views(&mut self, run: &ActiveRun, views: &[View]) -> Result<u64> {
        let mut written = 0;
        for view in views {
            written += self.materialise_view(run, view)?;
        }
        Ok(written)
    }

    /// Materialises one view into its table: rebuilt from every row of its resource type, or
    /// after reload-and-compare with an unchanged definition, re-flattened for the resources
    /// the run changed only. Returns the number of rows written.
    fn materialise_view(&mut self, run: &ActiveRun, view: &View) -> Result<u64> {
        let d = self.d().clone();
        let table = view_table(view.name())?;
        let source = d.t(&type_table(view.resource())?);
        let signature = view_signature(view);
        let incremental = run.method == Method::ReloadAndCompare && self.view_defined_as(view, &signature)?;
        let layout = table_columns(view)?;
        if !incremental {
            self.create_view_table(view, &table, &layout, &signature)?;
        }
        let source_exists = self.registered_types()?.iter().any(|(t, _)| t == view.resource());
        if !source_exists {
            return Ok(0);
        }
        let filter = match incremental {
            true => {
                let goes = changed(
                    &d,
                    run,
                    view,
                    &[ChangeOp::Update, ChangeOp::Delete],
                    ("v._fhir_version", "v._id"),
                );
                let sql = format!("DELETE FROM {} AS v WHERE {}", d.t(&table), goes.sql);
                self.backend.execute(&sql, goes.params.values())?;
                changed(&d, run, view, &[ChangeOp::Insert, ChangeOp::Update], ("t.fhir_version", "t.id"))
            }
            false => Condition { sql: "1 = 1".to_string(), params: Params::new(&d) },
        };
        let columns: Vec<String> = layout.iter().map(|c| quote_ident(&c.name)).collect();
        self.flatten_into(view, &source, &filter, (&d.t(&table), &columns))
    }

    /// Whether view `view` is registered with definition `signature`.
    fn view_defined_as(&mut self, view: &View, signature: &str) -> Result<bool> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!("SELECT signature FROM {} WHERE view_name = {}", d.t(VIEWS), p.bind(view.name()));
        let known = self.backend.query(&sql, p.values())?;
        Ok(known.first().is_some_and(|r| r.first().and_then(|c| c.as_deref()) == Some(signature)))
    }

    /// Creates the (empty) table `table` of view `view` with its columns `layout`, replacing
    /// any earlier one, and registers the view with its definition `signature`.
    fn create_view_table(
        &mut self,
        view: &View,
        table: &str,
        layout: &[crate::views::TableColumn],
        signature: &str,
    ) -> Result<()> {
        let d = self.d().clone();
        let mut ddl = format!(
            "DROP TABLE IF EXISTS {t};\nCREATE TABLE {t} (_fhir_version TEXT NOT NULL, _id TEXT NOT NULL",
            t = d.t(table)
        );
        for c in &layout[2..] {
            ddl.push_str(&format!(", {} {}", quote_ident(&c.name), column_type(&d, c.kind)));
        }
        ddl.push_str(&format!(
            ");\nCREATE INDEX {} ON {} (_fhir_version, _id);\n",
            quote_ident(&format!("{table}_resource")),
            d.t(table),
        ));
        self.backend.batch(&ddl)?;
        let registry = d.t(VIEWS);
        let mut p = Params::new(&d);
        let sql = format!("DELETE FROM {registry} WHERE view_name = {}", p.bind(view.name()));
        self.backend.execute(&sql, p.values())?;
        let mut p = Params::new(&d);
        let sql = format!(
            "INSERT INTO {registry} (view_name, resource_type, table_name, signature) VALUES ({}, {}, {}, {})",
            p.bind(view.name()),
            p.bind(view.resource()),
            p.bind(table),
            p.bind(signature),
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// Flattens the rows `t` of type table `source` (view `view`'s resource type) that match
    /// `filter` into view table `target` with `columns` (all quoted), [`PAGE_ROWS`] resources
    /// at a time in key order; returns the number of rows written.
    fn flatten_into(
        &mut self,
        view: &View,
        source: &str,
        filter: &Condition,
        (target, columns): (&str, &[String]),
    ) -> Result<u64> {
        let d = self.d().clone();
        let mut written = 0u64;
        let mut after: Option<(String, String)> = None;
        loop {
            let mut p = filter.params.clone();
            // A row-value comparison: both databases seek the primary key to it (PostgreSQL
            // scans the key from its start for the equivalent `OR`, every page).
            let key = match &after {
                Some((v, i)) => format!("AND (t.fhir_version, t.id) > ({}, {})", p.bind(v), p.bind(i)),
                None => String::new(),
            };
            let sql = format!(
                "SELECT t.fhir_version, t.id, {} FROM {source} t WHERE {} {key} ORDER BY t.fhir_version, t.id LIMIT {}",
                d.text("t.resource"),
                filter.sql,
                p.bind(PAGE_ROWS as u64),
            );
            let page = self.backend.query(&sql, p.values())?;
            let Some(last) = page.last() else { break };
            after = Some((
                last.first().cloned().flatten().unwrap_or_default(),
                last.get(1).cloned().flatten().unwrap_or_default(),
            ));
            let full = page.len() == PAGE_ROWS;
            let rows = flatten_page(&d, view, page)?;
            written += rows.len() as u64;
            self.backend.insert_rows(target, columns, &rows)?;
            if !full {
                break;
            }
        }
        Ok(written)
    }
}

/// The view rows of one page of resources (version, id, JSON), as bound cells.
fn flatten_page(d: &Dialect, view: &View, page: Vec<Vec<super::Cell>>) -> Result<Vec<Vec<SqlValue>>> {
    let mut rows = Vec::new();
    for r in page {
        let mut it = r.into_iter();
        let (Some(Some(version)), Some(Some(id)), Some(Some(json))) = (it.next(), it.next(), it.next())
        else {
            continue;
        };
        for row in crate::views::flatten(view, &id, &json)? {
            let cells = table_row(view, &version, &id, row)?;
            rows.push(cells.into_iter().map(|c| sql_value(d, c)).collect());
        }
    }
    Ok(rows)
}

/// The condition that run `run` wrote a change record with one of `ops` for the resource
/// whose version and id are the columns `key` of a row of view `view`'s resource type.
fn changed(d: &Dialect, run: &ActiveRun, view: &View, ops: &[ChangeOp], key: (&str, &str)) -> Condition {
    let mut params = Params::new(d);
    let sql = format!(
        "EXISTS (SELECT 1 FROM {changes} c WHERE c.run_id = {run} AND c.resource_type = {rt} \
         AND c.operation IN ({ops}) AND c.fhir_version = {version} AND c.id = {id})",
        changes = d.t(CHANGES),
        run = params.bind(&run.id),
        rt = params.bind(view.resource()),
        ops = params.bind_list(ops.iter().map(|op| op.as_str())),
        version = key.0,
        id = key.1,
    );
    Condition { sql, params }
}
