//! What a run writes into each table (see the module docs of `delta` for the model).
//!
//! Per type table, in three passes:
//! 1. index the staged rows (later copies win);
//! 2. scan the key columns of the table's files: every old row is unchanged, updated, deleted
//!    or kept, and a file holding a row that must change is *touched* (every file, for
//!    full-load and reload);
//! 3. rewrite the touched files without the rows that go (reload-and-compare keeps the
//!    unchanged and kept ones, reload only the kept ones), then add the staged rows that are
//!    new or changed (all of them, for full-load and reload), with the change data feed rows of
//!    a reload-and-compare that touched files.
//!
//! The counts and flagged patients of a table are saved in the staging folder before its
//! commit, so a commit restarted after a crash reuses them for the tables already committed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::protocol::{DeltaOperation, SaveMode};
use fhirsync_core::{RunScope, ScopeKey};
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use super::store::{
    BATCH_ROWS, BUCKET, NewTable, PartWriter, SIGNATURE_PROPERTY, SOURCE_PROPERTY, Table, Tables, bucket_of,
    run_version,
};
use super::writer::{ActiveRun, DeltaDestination};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::destinations::files::Row;
use crate::destinations::files::commit::{ExitRecord, read_exits};
use crate::destinations::files::layout::write_atomic;
use crate::destinations::files::staging::{Line, LineHead, Staging};
use crate::destinations::parquet::arrow::{cells_batch, view_schema};
// The landing columns of a type table's files are those of the Parquet type files (here only
// `patient_id` and `last_seen_run` may be null); the table adds the partition column `bucket`.
use crate::destinations::parquet::writer::COLUMNS;
use crate::destinations::sql::schema::{type_table, view_table};
use crate::views::{CellValue, flatten, table_columns, table_row, view_signature};
use crate::{Error, Result};
use deltalake::kernel::Action;

/// Columns the key scan reads.
const KEY_COLUMNS: [&str; 7] =
    ["id", "patient_id", "fhir_version", "dataset", "content_hash", "first_seen_run", "last_seen_run"];
/// Bytes of rows a bucket buffers before they become a batch (bounds memory over all buckets).
const BUCKET_BUFFER_BYTES: usize = 1 << 20;
/// The change data feed column.
const CHANGE_TYPE: &str = "_change_type";
/// File (inside a state's `_fhirsync/`) with the patients flagged as having left the cohort.
const EXITS_FILE: &str = "cohort_exits.json";

fn file_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, matches!(*c, "patient_id" | "last_seen_run")))
            .collect::<Vec<_>>(),
    ))
}

fn with_bucket(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(BUCKET, DataType::Int32, false));
    Arc::new(Schema::new(fields))
}

fn with_change_type(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn arrow_err(action: &'static str) -> impl FnOnce(arrow_schema::ArrowError) -> Error {
    move |source| Error::Arrow { action, source }
}

fn key(version: &str, id: &str) -> String {
    format!("{version}\u{1}{id}")
}

fn scope_key(version: &str, patient: Option<&str>, dataset: &str) -> String {
    format!("{version}\u{1}{}\u{1}{dataset}", patient.unwrap_or(""))
}

/// The bucket of a landed row: its patient, or its id when it has none.
fn row_bucket(patient: Option<&str>, id: &str, buckets: u32) -> i32 {
    bucket_of(patient.unwrap_or(id), buckets)
}

/// What the key scan learnt about a staged row's previous version.
#[derive(Debug, Clone)]
struct Old {
    hash: String,
    first_seen: String,
}

/// A staged row: its staging line (the last copy wins), hash and previous version.
struct Staged {
    line: u64,
    hash: String,
    old: Option<Old>,
}

/// What happens to a row of the table's previous version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Re-read with the same content.
    Unchanged,
    /// Re-read with new content.
    Updated,
    /// Not re-read, and deletable.
    Deleted,
    /// Not re-read, kept (incomplete scope, or cohort exit in flag mode).
    Kept,
}

/// The run-wide inputs of a table's apply.
struct Ctx<'a> {
    run_id: &'a str,
    method: Method,
    scope: &'a RunScope,
    complete: HashSet<String>,
    evaluate_exits: bool,
    delete_exits: bool,
}

impl Ctx<'_> {
    fn compare(&self) -> bool {
        self.method == Method::ReloadAndCompare
    }

    /// Fate of a row not re-read, and whether its patient left the cohort.
    fn unread(&self, version: &str, patient: Option<&str>, dataset: &str) -> (Fate, bool) {
        let exited = self.evaluate_exits && patient.is_some_and(|p| !self.scope.cohort.contains(p));
        let in_cohort = patient.is_none_or(|p| self.scope.cohort.contains(p));
        let deletable = self.complete.contains(&scope_key(version, patient, dataset))
            || (in_cohort && self.complete.contains(&scope_key(version, None, dataset)))
            || (exited && self.delete_exits);
        (if deletable { Fate::Deleted } else { Fate::Kept }, exited)
    }

    fn fate(
        &self,
        idx: &HashMap<String, Staged>,
        version: &str,
        id: &str,
        hash: &str,
        patient: Option<&str>,
        dataset: &str,
    ) -> (Fate, bool) {
        match idx.get(&key(version, id)) {
            Some(s) if s.hash == hash => (Fate::Unchanged, false),
            Some(_) => (Fate::Updated, false),
            None => self.unread(version, patient, dataset),
        }
    }
}

/// The saved outcome of one table's apply (written before its commit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TableResult {
    /// Staging lines of the type when it was applied: a resumed run that staged more re-applies.
    staged_lines: u64,
    metrics: RunMetrics,
    flagged: BTreeSet<String>,
    /// Whether any row was inserted, updated or deleted (views over it are rebuilt).
    changed: bool,
}

/// Column `name` of `batch` as strings.
fn strings<'a>(batch: &'a RecordBatch, name: &str, table: &str) -> Result<&'a arrow_array::StringArray> {
    let corrupt = |detail: String| Error::CorruptState { path: table.into(), detail };
    batch
        .column_by_name(name)
        .ok_or_else(|| corrupt(format!("column `{name}` is missing")))?
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(format!("column `{name}` is not a string column")))
}

fn opt(a: &arrow_array::StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// The rows of a full batch of a type table.
fn batch_rows(batch: &RecordBatch, table: &str) -> Result<Vec<Row>> {
    let cols: Vec<&arrow_array::StringArray> =
        COLUMNS.iter().map(|c| strings(batch, c, table)).collect::<Result<_>>()?;
    Ok((0..batch.num_rows())
        .map(|i| Row {
            id: cols[0].value(i).to_string(),
            patient_id: opt(cols[1], i),
            fhir_version: cols[2].value(i).to_string(),
            source: cols[3].value(i).to_string(),
            dataset: cols[4].value(i).to_string(),
            content_hash: cols[5].value(i).to_string(),
            resource: cols[6].value(i).to_string(),
            first_seen_run: cols[7].value(i).to_string(),
            last_seen_run: opt(cols[8], i).unwrap_or_default(),
        })
        .collect())
}

/// A buffered row and its change type (change data feed files).
type Pending = (Row, Option<&'static str>);

/// Rows buffered per bucket and written in batches (`last_seen_run` "" is written as null).
/// Synchronous, so it can be fed from a staging scan; it drives its writes on `tables`.
struct RowWriter<'a> {
    tables: &'a Tables,
    writer: PartWriter,
    /// Rows and their approximate bytes, per bucket.
    buffers: HashMap<i32, (Vec<Pending>, usize)>,
}

impl<'a> RowWriter<'a> {
    fn new(tables: &'a Tables, table: &Table, cdc: bool) -> Result<Self> {
        let schema = if cdc { with_change_type(&file_schema()) } else { file_schema() };
        Ok(RowWriter {
            tables,
            writer: PartWriter::new(table.store(), schema, cdc)?,
            buffers: HashMap::new(),
        })
    }

    fn push(&mut self, bucket: i32, row: Row, change: Option<&'static str>) -> Result<()> {
        let (buf, bytes) = self.buffers.entry(bucket).or_default();
        *bytes += row.resource.len() + 256;
        buf.push((row, change));
        if buf.len() >= BATCH_ROWS || *bytes >= BUCKET_BUFFER_BYTES {
            let rows = std::mem::take(buf);
            *bytes = 0;
            self.flush(bucket, &rows)?;
        }
        Ok(())
    }

    fn flush(&mut self, bucket: i32, rows: &[(Row, Option<&'static str>)]) -> Result<()> {
        let mut b: Vec<StringBuilder> = (0..COLUMNS.len() + 1).map(|_| StringBuilder::new()).collect();
        for (r, change) in rows {
            b[0].append_value(&r.id);
            b[1].append_option(r.patient_id.as_deref());
            b[2].append_value(&r.fhir_version);
            b[3].append_value(&r.source);
            b[4].append_value(&r.dataset);
            b[5].append_value(&r.content_hash);
            b[6].append_value(&r.resource);
            b[7].append_value(&r.first_seen_run);
            b[8].append_option((!r.last_seen_run.is_empty()).then_some(r.last_seen_run.as_str()));
            b[9].append_option(*change);
        }
        let n = self.writer.schema().fields().len();
        let columns: Vec<ArrayRef> = b.iter_mut().take(n).map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let batch = RecordBatch::try_new(self.writer.schema().clone(), columns)
            .map_err(arrow_err("building a batch"))?;
        let (tables, writer) = (self.tables, &mut self.writer);
        tables.block_on(writer.write(bucket, &batch))
    }

    fn finish(mut self) -> Result<Vec<Action>> {
        let mut buffers: Vec<_> = std::mem::take(&mut self.buffers).into_iter().collect();
        buffers.sort_by_key(|(b, _)| *b);
        for (bucket, (rows, _)) in buffers {
            if !rows.is_empty() {
                self.flush(bucket, &rows)?;
            }
        }
        self.tables.block_on(self.writer.finish())
    }
}

fn overwrite_op() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![BUCKET.to_string()]),
        predicate: None,
    }
}

fn merge_op() -> DeltaOperation {
    DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some("target.fhir_version = source.fhir_version AND target.id = source.id".into()),
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    }
}

impl DeltaDestination {
    /// Commits every type table and view of the run; returns its counts.
    pub(super) fn apply(
        &mut self,
        run: &ActiveRun,
        staging: &Staging,
        scope: &RunScope,
        views: &[View],
    ) -> Result<RunMetrics> {
        let carry = run.method != Method::FullLoad;
        let evaluate_exits = carry && !scope.cohort.is_empty();
        if carry && scope.cohort.is_empty() {
            tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
        }
        let key = |s: &ScopeKey| {
            scope_key(s.fhir_version.as_str(), s.patient_id.as_deref(), &s.dataset.to_string())
        };
        let mut complete: HashSet<_> = scope.complete.iter().map(key).collect();
        staging.for_each_completed(&mut |s| {
            complete.insert(key(&s));
            Ok(())
        })?;
        let ctx = Ctx {
            run_id: &run.id,
            method: run.method,
            scope,
            complete,
            evaluate_exits,
            delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
        };
        let tables = &self.store;
        let buckets = self.buckets;
        let results_dir = self.layout.meta().join("commits").join(&run.id);
        // Every type staged or already landed.
        let mut types: BTreeSet<String> = staging.types()?.into_iter().collect();
        for name in tables.block_on(tables.table_names())? {
            if name.starts_with("view_") {
                continue;
            }
            let t = tables.block_on(tables.open(&name))?;
            if let Some(source) = t.property(SOURCE_PROPERTY) {
                types.insert(source);
            }
        }
        let mut m =
            RunMetrics { run_id: run.id.clone(), method: run.method.as_str().into(), ..Default::default() };
        let mut flagged = BTreeSet::new();
        let mut changed = HashSet::new();
        for t in &types {
            let name = type_table(t)?;
            let mut table = tables.block_on(tables.open(&name))?;
            let path = results_dir.join(format!("{name}.json"));
            let r = apply_type(&ctx, tables, staging, t, &mut table, buckets, &path)?;
            add_counts(&mut m, &r.metrics);
            flagged.extend(r.flagged);
            if r.changed {
                changed.insert(t.clone());
            }
        }
        m.cohort_exits = flagged.len() as u64;
        for view in views {
            m.view_rows += self.apply_view(&ctx, view, changed.contains(view.resource()), &results_dir)?;
        }
        self.save_exits(&ctx, &flagged, &run.id)?;
        Ok(m)
    }

    /// Updates `_fhirsync/cohort_exits.json` as the file destinations do.
    fn save_exits(&self, ctx: &Ctx<'_>, flagged: &BTreeSet<String>, run_id: &str) -> Result<()> {
        let path = self.layout.meta().join(EXITS_FILE);
        let mut exits = read_exits(&path)?;
        if !ctx.evaluate_exits {
            return Ok(());
        }
        let now = crate::destinations::sql::now();
        exits.retain(|p, _| !ctx.scope.cohort.contains(p));
        for p in flagged {
            let first = exits.get(p).map_or_else(|| run_id.to_string(), |e| e.first_flagged_run.clone());
            exits.insert(
                p.clone(),
                ExitRecord {
                    first_flagged_run: first,
                    last_flagged_run: run_id.into(),
                    flagged_at: now.clone(),
                    rows_deleted: ctx.delete_exits,
                },
            );
        }
        let json = serde_json::to_vec_pretty(&exits)
            .map_err(|source| Error::Json { action: "encoding cohort exits", source })?;
        write_atomic(&path, &json)
    }

    /// Rebuilds the table of `view` when its source type changed (or the view is new or
    /// changed); otherwise commits nothing but the run's mark. Returns the rows written.
    fn apply_view(
        &self,
        ctx: &Ctx<'_>,
        view: &View,
        source_changed: bool,
        results_dir: &std::path::Path,
    ) -> Result<u64> {
        let tables = &self.store;
        let name = view_table(view.name())?;
        let type_name = type_table(view.resource())?;
        let signature = view_signature(view);
        let path = results_dir.join(format!("{name}.json"));
        let mut table = tables.block_on(tables.open(&name))?;
        if let Some(done) = already_committed(ctx, tables, &table, &path)? {
            return Ok(done.metrics.view_rows);
        }
        // The table's shape: the view's signature, then its Arrow fields.
        let same_view =
            table.property(SIGNATURE_PROPERTY).is_some_and(|p| p.starts_with(&format!("{signature}|")));
        let columns = table_columns(view)?;
        let buckets = table.buckets(self.buckets);
        let rebuild = !table.exists || !same_view || source_changed || !ctx.compare();
        let mut shape = String::new();
        let mut rows_written = 0u64;
        let mut actions = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        if rebuild {
            // Flatten everything first: the decimal columns' scale depends on all the values.
            let source = tables.block_on(tables.open(&type_name))?;
            let mut rows: Vec<(i32, Vec<CellValue>)> = Vec::new();
            for file in source.files()? {
                for batch in
                    tables.block_on(source.read(&file.path, Some(&["id", "fhir_version", "resource"])))?
                {
                    let (ids, versions, resources) = (
                        strings(&batch, "id", &type_name)?,
                        strings(&batch, "fhir_version", &type_name)?,
                        strings(&batch, "resource", &type_name)?,
                    );
                    for i in 0..batch.num_rows() {
                        let id = ids.value(i);
                        for values in flatten(view, id, resources.value(i))? {
                            rows.push((
                                bucket_of(id, buckets),
                                table_row(view, versions.value(i), id, values)?,
                            ));
                        }
                    }
                }
            }
            rows_written = rows.len() as u64;
            let cells: Vec<Vec<CellValue>> = rows.iter().map(|(_, r)| r.clone()).collect();
            let file_schema = view_schema(&columns, &cells);
            drop(cells);
            shape = format!("{signature}|{:?}", file_schema.fields());
            if table.exists && table.property(SIGNATURE_PROPERTY).as_deref() != Some(shape.as_str()) {
                // Other columns or column types (a view changed, or a decimal scale grew): a new table.
                tracing::info!(view = view.name(), "View columns changed; its table is rebuilt.");
                tables.block_on(tables.drop_table(&name))?;
                table = tables.block_on(tables.open(&name))?;
            }
            let mut writer = PartWriter::new(table.store(), file_schema.clone(), false)?;
            let mut by_bucket: HashMap<i32, Vec<Vec<CellValue>>> = HashMap::new();
            for (b, row) in rows {
                by_bucket.entry(b).or_default().push(row);
            }
            let mut buckets_sorted: Vec<_> = by_bucket.into_iter().collect();
            buckets_sorted.sort_by_key(|(b, _)| *b);
            for (b, rows) in buckets_sorted {
                for chunk in rows.chunks(BATCH_ROWS) {
                    tables.block_on(writer.write(b, &cells_batch(&file_schema, chunk)?))?;
                }
            }
            actions = table.files()?.into_iter().map(|f| Action::Remove(f.remove)).collect();
            actions.extend(tables.block_on(writer.finish())?);
            schema = Some(file_schema);
        }
        let result = TableResult {
            metrics: RunMetrics { view_rows: rows_written, ..Default::default() },
            ..Default::default()
        };
        save_result(&path, &result)?;
        let op = if rebuild { overwrite_op() } else { merge_op() };
        let table_schema = with_bucket(&schema.unwrap_or_else(|| Arc::new(Schema::empty())));
        let new = NewTable { source: view.name(), schema: &table_schema, buckets, signature: Some(&shape) };
        tables.block_on(table.commit(ctx.run_id, ctx.method.as_str(), actions, &new, op))?;
        Ok(rows_written)
    }
}

fn add_counts(m: &mut RunMetrics, t: &RunMetrics) {
    m.staged += t.staged;
    m.inserted += t.inserted;
    m.updated += t.updated;
    m.deleted += t.deleted;
    m.unchanged += t.unchanged;
    m.kept += t.kept;
    m.view_rows += t.view_rows;
}

fn save_result(path: &std::path::Path, r: &TableResult) -> Result<()> {
    let json =
        serde_json::to_vec(r).map_err(|source| Error::Json { action: "encoding a table result", source })?;
    write_atomic(path, &json)
}

/// The saved result of a table this run already committed (a commit restarted after a crash).
fn already_committed(
    ctx: &Ctx<'_>,
    tables: &Tables,
    table: &Table,
    path: &std::path::Path,
) -> Result<Option<TableResult>> {
    let version = run_version(ctx.run_id);
    if tables.block_on(table.txn_version())?.is_none_or(|v| v < version) {
        return Ok(None);
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(_) => Ok(None),
    }
}

/// Applies the staged rows of `resource_type` to its table; see the module docs.
fn apply_type(
    ctx: &Ctx<'_>,
    tables: &Tables,
    staging: &Staging,
    resource_type: &str,
    table: &mut Table,
    default_buckets: u32,
    result_path: &std::path::Path,
) -> Result<TableResult> {
    let compare = ctx.compare();
    let carry = ctx.method != Method::FullLoad;
    let buckets = table.buckets(default_buckets);
    // Pass 1: index the staged rows.
    let mut idx: HashMap<String, Staged> = HashMap::new();
    let mut staged_lines = 0u64;
    staging.scan_heads(resource_type, &mut |line, head| {
        let LineHead::Row(h) = head else { return Err(seen_line(resource_type)) };
        let (version, id, hash) = (h.fhir_version, h.id, h.content_hash);
        staged_lines += 1;
        match idx.entry(key(version, id)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let s = e.get_mut();
                s.line = line;
                if s.hash != hash {
                    s.hash = hash.to_string();
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Staged { line, hash: hash.to_string(), old: None });
            }
        }
        Ok(())
    })?;
    if let Some(done) = already_committed(ctx, tables, table, result_path)?
        && done.staged_lines == staged_lines
    {
        tracing::info!(table = %table.name, "Table already committed by this run before a restart; skipped.");
        return Ok(done);
    }
    let prev_run = tables.block_on(table.latest_run())?;
    let files = table.files()?;
    let mut m = RunMetrics::default();
    let mut flagged = BTreeSet::new();
    // Pass 2: the key scan of the previous version.
    let mut touched: Vec<usize> = Vec::new();
    if carry {
        for (i, file) in files.iter().enumerate() {
            let mut touch = !compare;
            for batch in tables.block_on(table.read(&file.path, Some(&KEY_COLUMNS)))? {
                let name = &table.name;
                let (id, patient, version, dataset, hash, first, last) = (
                    strings(&batch, "id", name)?,
                    strings(&batch, "patient_id", name)?,
                    strings(&batch, "fhir_version", name)?,
                    strings(&batch, "dataset", name)?,
                    strings(&batch, "content_hash", name)?,
                    strings(&batch, "first_seen_run", name)?,
                    strings(&batch, "last_seen_run", name)?,
                );
                for r in 0..batch.num_rows() {
                    let p = (!patient.is_null(r)).then(|| patient.value(r));
                    let stale = !last.is_null(r);
                    let (fate, exited) =
                        ctx.fate(&idx, version.value(r), id.value(r), hash.value(r), p, dataset.value(r));
                    if exited && let Some(p) = p {
                        flagged.insert(p.to_string());
                    }
                    match fate {
                        Fate::Unchanged | Fate::Updated => {
                            if let Some(s) = idx.get_mut(&key(version.value(r), id.value(r))) {
                                s.old = Some(Old {
                                    hash: hash.value(r).to_string(),
                                    first_seen: first.value(r).to_string(),
                                });
                            }
                            touch |= fate == Fate::Updated || stale;
                        }
                        Fate::Deleted => {
                            m.deleted += 1;
                            touch = true;
                        }
                        Fate::Kept => {
                            m.kept += 1;
                            touch |= !stale && prev_run.is_some();
                        }
                    }
                }
            }
            if touch {
                touched.push(i);
            }
        }
    } else {
        touched = (0..files.len()).collect();
    }
    let cdc = compare && !touched.is_empty();
    let mut data = RowWriter::new(tables, table, false)?;
    let mut changes = if cdc { Some(RowWriter::new(tables, table, true)?) } else { None };
    // Pass 3a: rewrite the touched files (full-load drops them whole).
    if carry {
        for &i in &touched {
            for batch in tables.block_on(table.read(&files[i].path, None))? {
                for old in batch_rows(&batch, &table.name)? {
                    rewrite_old(ctx, &idx, old, prev_run.as_deref(), buckets, &mut data, changes.as_mut())?;
                }
            }
        }
    }
    // Pass 3b: the staged rows, in staging order, skipping superseded copies. A compare that
    // found every staged row unchanged only counts them.
    let writes = !compare || idx.values().any(|s| s.old.as_ref().is_none_or(|o| o.hash != s.hash));
    if !writes {
        m.staged = idx.len() as u64;
        m.unchanged = m.staged;
    }
    let scan = |f: &mut dyn FnMut(u64, Line) -> Result<()>| {
        if writes { staging.scan(resource_type, f) } else { Ok(()) }
    };
    scan(&mut |line, staged| {
        let Line::Row(mut row) = staged else { return Err(seen_line(resource_type)) };
        let Some(s) = idx.get(&key(&row.fhir_version, &row.id)) else { return Ok(()) };
        if s.line != line {
            return Ok(());
        }
        m.staged += 1;
        row.last_seen_run = String::new();
        let bucket = row_bucket(row.patient_id.as_deref(), &row.id, buckets);
        match &s.old {
            None => {
                m.inserted += 1;
                if let Some(c) = changes.as_mut() {
                    c.push(bucket, row.clone(), Some("insert"))?;
                }
                data.push(bucket, row, None)
            }
            Some(old) => {
                row.first_seen_run = old.first_seen.clone();
                if !compare {
                    data.push(bucket, row, None)
                } else if old.hash != s.hash {
                    m.updated += 1;
                    if let Some(c) = changes.as_mut() {
                        c.push(bucket, row.clone(), Some("update_postimage"))?;
                    }
                    data.push(bucket, row, None)
                } else {
                    m.unchanged += 1;
                    Ok(())
                }
            }
        }
    })?;
    let mut actions: Vec<Action> = touched.iter().map(|&i| Action::Remove(files[i].remove.clone())).collect();
    actions.extend(data.finish()?);
    if let Some(c) = changes {
        actions.extend(c.finish()?);
    }
    let changed = m.inserted + m.updated + m.deleted > 0 || (!compare && (!files.is_empty() || m.staged > 0));
    let result = TableResult { staged_lines, metrics: m, flagged, changed };
    save_result(result_path, &result)?;
    let schema = with_bucket(&file_schema());
    let new = NewTable { source: resource_type, schema: &schema, buckets, signature: None };
    let op = if compare { merge_op() } else { overwrite_op() };
    tables.block_on(table.commit(ctx.run_id, ctx.method.as_str(), actions, &new, op))?;
    Ok(result)
}

/// A key-only "seen" staging line, which this destination never writes (it stages no base).
fn seen_line(resource_type: &str) -> Error {
    Error::CorruptState {
        path: resource_type.into(),
        detail: "a key-only staging line in a Delta run (written by a file destination?)".into(),
    }
}

/// Writes one row of a touched file back (or not), with its change data feed rows.
fn rewrite_old(
    ctx: &Ctx<'_>,
    idx: &HashMap<String, Staged>,
    old: Row,
    prev_run: Option<&str>,
    buckets: u32,
    data: &mut RowWriter<'_>,
    changes: Option<&mut RowWriter<'_>>,
) -> Result<()> {
    let (fate, _) =
        ctx.fate(idx, &old.fhir_version, &old.id, &old.content_hash, old.patient_id.as_deref(), &old.dataset);
    let bucket = row_bucket(old.patient_id.as_deref(), &old.id, buckets);
    let new_last = match fate {
        // Seen by this run: null.
        Fate::Unchanged if ctx.compare() => Some(String::new()),
        // Not seen: the last run that saw it.
        Fate::Kept if old.last_seen_run.is_empty() => Some(prev_run.unwrap_or_default().to_string()),
        Fate::Kept => Some(old.last_seen_run.clone()),
        _ => None,
    };
    match (fate, new_last) {
        (_, Some(last)) => {
            if last != old.last_seen_run
                && let Some(c) = changes
            {
                let mut post = old.clone();
                post.last_seen_run = last.clone();
                c.push(bucket, old.clone(), Some("update_preimage"))?;
                c.push(bucket, post, Some("update_postimage"))?;
            }
            let mut row = old;
            row.last_seen_run = last;
            data.push(bucket, row, None)
        }
        (Fate::Updated, None) => changes.map_or(Ok(()), |c| c.push(bucket, old, Some("update_preimage"))),
        (Fate::Deleted, None) => changes.map_or(Ok(()), |c| c.push(bucket, old, Some("delete"))),
        // Reload: the re-read rows come from staging.
        _ => Ok(()),
    }
}
