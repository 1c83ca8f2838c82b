//! Materialising SQL-on-FHIR views into `view_<name>` tables.
//!
//! Every view table starts with `_fhir_version` and `_id` (the resource the row came from), then
//! the view's columns typed by [`ColumnType`] (decimals as text, so `1.50` stays `1.50` where
//! the flattener kept it; collections as JSON text). After reload-and-compare only the resources
//! changed in the run are re-flattened: rows of updated/deleted ids are deleted, rows of
//! inserted/updated ids are inserted. A new or redefined view, or any other method, rebuilds
//! the table from all rows.

use fhirsync_views::{ColumnType, View};

use super::schema::{CHANGES, Dialect, VIEWS, lit, quote_ident, type_table, view_table};
use super::{ActiveRun, SqlBackend, SqlDestination, SqlValue};
use crate::Result;
use crate::config::Method;
use crate::views::{cell_value, view_signature};

/// Resources read per page while flattening.
const PAGE_ROWS: usize = 2_000;

fn column_type(d: &Dialect, ty: ColumnType, collection: bool) -> &'static str {
    match (d, ty, collection) {
        (Dialect::Postgres { .. }, _, true) => "json",
        (_, ColumnType::Integer, _) => d.int(),
        (Dialect::Sqlite, ColumnType::Boolean, _) => "INTEGER",
        (Dialect::Postgres { .. }, ColumnType::Boolean, _) => "boolean",
        _ => "TEXT",
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

    fn materialise_view(&mut self, run: &ActiveRun, view: &View) -> Result<u64> {
        let d = self.d().clone();
        let table = view_table(view.name())?;
        let source = type_table(view.resource())?;
        let signature = view_signature(view);
        let registry = d.t(VIEWS);
        let known = self
            .backend
            .query(&format!("SELECT signature FROM {registry} WHERE view_name = {}", lit(view.name())))?;
        let unchanged_definition =
            known.first().is_some_and(|r| r.first().and_then(|c| c.as_deref()) == Some(&signature[..]));
        let incremental = unchanged_definition && run.method == Method::ReloadAndCompare;
        if !incremental {
            let mut ddl = format!(
                "DROP TABLE IF EXISTS {t};\nCREATE TABLE {t} (_fhir_version TEXT NOT NULL, _id TEXT NOT NULL",
                t = d.t(&table)
            );
            for c in view.columns() {
                ddl.push_str(&format!(", {} {}", quote_ident(&c.name), column_type(&d, c.ty, c.collection)));
            }
            ddl.push_str(&format!(
                ");\nCREATE INDEX {} ON {} (_fhir_version, _id);\n\
                 DELETE FROM {registry} WHERE view_name = {name};\n\
                 INSERT INTO {registry} (view_name, resource_type, table_name, signature) VALUES ({name}, {rt}, {tn}, {sig});\n",
                quote_ident(&format!("{table}_resource")),
                d.t(&table),
                name = lit(view.name()),
                sig = lit(&signature),
                tn = lit(&table),
                rt = lit(view.resource()),
            ));
            self.backend.batch(&ddl)?;
        }
        let source_exists = self.registered_types()?.iter().any(|(t, _)| t == view.resource());
        if !source_exists {
            return Ok(0);
        }
        let changed = |ops: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {changes} c WHERE c.run_id = {run} AND c.resource_type = {rt} \
                 AND c.operation IN ({ops}) AND c.fhir_version = {{v}} AND c.id = {{i}})",
                changes = d.t(CHANGES),
                run = lit(&run.id),
                rt = lit(view.resource()),
            )
        };
        let filter = if incremental {
            self.backend.execute(&format!(
                "DELETE FROM {} AS v WHERE {}",
                d.t(&table),
                changed("'U', 'D'").replace("{v}", "v._fhir_version").replace("{i}", "v._id")
            ))?;
            changed("'I', 'U'").replace("{v}", "t.fhir_version").replace("{i}", "t.id")
        } else {
            "1 = 1".to_string()
        };
        let mut columns = vec!["_fhir_version".to_string(), "_id".to_string()];
        columns.extend(view.columns().iter().map(|c| quote_ident(&c.name)));
        let target = d.t(&table);
        let mut written = 0u64;
        let mut after: Option<(String, String)> = None;
        loop {
            // A row-value comparison: both databases seek the primary key to it (PostgreSQL
            // scans the key from its start for the equivalent `OR`, every page).
            let key = match &after {
                Some((v, i)) => format!("AND (t.fhir_version, t.id) > ({}, {})", lit(v), lit(i)),
                None => String::new(),
            };
            let page = self.backend.query(&format!(
                "SELECT t.fhir_version, t.id, {} FROM {} t WHERE {filter} {key} ORDER BY t.fhir_version, t.id LIMIT {PAGE_ROWS}",
                d.text("t.resource"),
                d.t(&source),
            ))?;
            let Some(last) = page.last() else { break };
            after = Some((
                last.first().cloned().flatten().unwrap_or_default(),
                last.get(1).cloned().flatten().unwrap_or_default(),
            ));
            let full = page.len() == PAGE_ROWS;
            let mut rows = Vec::new();
            for r in page {
                let mut it = r.into_iter();
                let (Some(Some(version)), Some(Some(id)), Some(Some(json))) =
                    (it.next(), it.next(), it.next())
                else {
                    continue;
                };
                for row in crate::views::flatten(view, &id, &json)? {
                    let mut out = vec![SqlValue::Text(version.clone()), SqlValue::Text(id.clone())];
                    for (c, value) in view.columns().iter().zip(row) {
                        out.push(cell_value(view, c, value)?);
                    }
                    rows.push(out);
                }
            }
            written += rows.len() as u64;
            self.backend.insert_rows(&target, &columns, &rows)?;
            if !full {
                break;
            }
        }
        Ok(written)
    }
}
