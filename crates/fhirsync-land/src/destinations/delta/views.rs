//! View tables: rebuilt from their type table when the view is new or redefined, or its type
//! was loaded or reloaded; updated in the buckets of the changed resources after a
//! reload-and-compare; else committed with nothing but the run's mark.
//!
//! A rebuild flattens every resource once, streaming the type table's files, into one Arrow
//! IPC spill file per bucket (decimals as their literal text), while it learns the decimal
//! columns' types from the widest values; then each bucket's spill is converted to the table's
//! types and written. So memory holds one batch per bucket, never the view.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::Decimal128Builder;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;
use deltalake::kernel::Action;
use fhirsync_views::{Decimal, View};
use serde::Deserialize;

use super::commit::{TableResult, already_committed, merge_op, overwrite_op, save_result};
use super::plan::Ctx;
use super::rows::strings;
use super::store::{BUCKET, DataFile, FileWriter, NewTable, SIGNATURE_PROPERTY, Table, Tables, bucket_of};
use super::writer::DeltaDestination;
use crate::destination::RunMetrics;
use crate::destinations::files::layout::{mkdirs, remove_dir};
use crate::destinations::files::staging::KeyHasher;
use crate::destinations::parquet::arrow::{arrow_type, cells_batch, view_schema};
use crate::destinations::sql::schema::{type_table, view_table};
use crate::views::{CellValue, ColumnKind, TableColumn, flatten, table_columns, table_row, view_signature};
use crate::{Error, Result};

/// View rows a bucket buffers before they go to its spill file as one batch.
const SPILL_ROWS: usize = 256;

fn arrow_err(action: &'static str) -> impl FnOnce(arrow_schema::ArrowError) -> Error {
    move |source| Error::Arrow { action, source }
}

impl DeltaDestination {
    /// Brings the table of `view` up to date: rebuilt when the view is new or changed, or its
    /// type changed in a run other than a reload-and-compare; updated with `changes` (the
    /// type's changed resources) after a reload-and-compare; else committed with nothing but
    /// the run's mark. Returns the rows written.
    pub(super) fn apply_view(
        &self,
        ctx: &Ctx<'_>,
        view: &View,
        source: Source<'_>,
        results_dir: &Path,
        work: &Path,
    ) -> Result<u64> {
        let tables = &self.store;
        let name = view_table(view.name())?;
        let signature = view_signature(view);
        let path = results_dir.join(format!("{name}.json"));
        let mut table = tables.block_on(tables.open(&name))?;
        if let Some(done) = already_committed(ctx, tables, &table, &path)? {
            return Ok(done.metrics.view_rows);
        }
        let same_view =
            table.property(SIGNATURE_PROPERTY)?.is_some_and(|p| p.starts_with(&format!("{signature}|")));
        let buckets = table.buckets(self.buckets)?;
        let dir = work.join(&name);
        let current = table.exists && same_view && ctx.compare();
        let updated = match source {
            Source::Changed(changes) if current => {
                update_view(tables, &table, view, &signature, buckets, changes, &dir)?
            }
            _ => None,
        };
        let rebuild = updated.is_none() && (!current || !matches!(source, Source::Unchanged));
        let built = if rebuild {
            Some(rebuild_view(tables, &mut table, view, &signature, buckets, &dir)?)
        } else {
            None
        };
        remove_dir(&dir)?;
        let (actions, rows) =
            built.as_ref().map(|b| (b.actions.clone(), b.rows)).or(updated).unwrap_or_default();
        let result = TableResult {
            metrics: RunMetrics { view_rows: rows, ..Default::default() },
            ..Default::default()
        };
        save_result(&path, &result)?;
        let op = if rebuild { overwrite_op() } else { merge_op() };
        let (schema, shape) =
            built.map(|b| (b.schema, b.shape)).unwrap_or_else(|| (Arc::new(Schema::empty()), String::new()));
        let table_schema = super::commit::with_bucket(&schema);
        let new = NewTable { source: view.name(), schema: &table_schema, buckets, signature: Some(&shape) };
        tables.block_on(table.commit(ctx.run_id, ctx.method.as_str(), actions, &new, op))?;
        Ok(rows)
    }
}

/// What the run did to a view's type table.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// Nothing changed.
    Unchanged,
    /// A reload-and-compare changed these resources.
    Changed(&'a Changes),
    /// It changed in another way (another method, or a commit restarted after the type's).
    Replaced,
}

/// A view table written anew.
struct Built {
    actions: Vec<Action>,
    rows: u64,
    schema: SchemaRef,
    /// The table's `fhirsync.viewSignature`: the view's signature and its Arrow fields.
    shape: String,
}

/// Flattens every resource of the view's type into a new table (the old one is dropped when
/// its columns differ).
fn rebuild_view(
    tables: &Tables,
    table: &mut Table,
    view: &View,
    signature: &str,
    buckets: u32,
    dir: &Path,
) -> Result<Built> {
    let source = tables.block_on(tables.open(&type_table(view.resource())?))?;
    let spilled = spill_view(tables, &source, view, buckets, dir)?;
    let shape = format!("{signature}|{:?}", spilled.schema.fields());
    if table.exists && table.property(SIGNATURE_PROPERTY)?.as_deref() != Some(shape.as_str()) {
        // Other columns or column types (a view changed, or a decimal scale grew): a new table.
        tracing::info!(view = view.name(), "View columns changed; its table is rebuilt.");
        let name = table.name.clone();
        tables.block_on(tables.drop_table(&name))?;
        *table = tables.block_on(tables.open(&name))?;
    }
    let mut actions: Vec<Action> = table.files()?.into_iter().map(|f| Action::Remove(f.remove)).collect();
    actions.extend(write_view(tables, table, &spilled)?);
    Ok(Built { actions, rows: spilled.rows, schema: spilled.schema, shape })
}

/// A view flattened into one spill file per bucket.
struct Spilled {
    /// The table's schema (decimal columns typed from all their values).
    schema: SchemaRef,
    /// The spill files' schema (decimal columns as text).
    spill_schema: SchemaRef,
    /// Spill file of each bucket, `None` for a bucket without rows.
    files: Vec<Option<PathBuf>>,
    rows: u64,
}

/// The spill schema: the table's types, decimals as their literal text.
fn spill_schema(columns: &[TableColumn]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let nullable = !matches!(c.name.as_str(), "_fhir_version" | "_id");
            let ty = if c.kind == ColumnKind::Decimal {
                DataType::Utf8
            } else {
                arrow_type(c.kind, std::iter::empty())
            };
            Field::new(&c.name, ty, nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The widest decimals of each column: rows whose cells give [`view_schema`] the type all the
/// values give it (largest scale, most integer digits, any literal it cannot read).
struct Widest {
    rows: [Vec<CellValue>; 3],
    scale: Vec<u32>,
    digits: Vec<u32>,
}

impl Widest {
    fn new(columns: usize) -> Self {
        Widest {
            rows: std::array::from_fn(|_| vec![CellValue::Null; columns]),
            scale: vec![0; columns],
            digits: vec![0; columns],
        }
    }

    fn see(&mut self, row: &[CellValue]) {
        for (i, cell) in row.iter().enumerate() {
            let CellValue::Decimal(text) = cell else { continue };
            match text.parse::<Decimal>() {
                Err(_) => self.rows[2][i] = cell.clone(),
                Ok(d) => {
                    if d.scale() > self.scale[i] {
                        self.scale[i] = d.scale();
                        self.rows[0][i] = cell.clone();
                    }
                    if d.integer_digits() > self.digits[i] {
                        self.digits[i] = d.integer_digits();
                        self.rows[1][i] = cell.clone();
                    }
                }
            }
        }
    }
}

/// Per-bucket IPC writers of a view's spill.
struct SpillWriters {
    dir: PathBuf,
    schema: SchemaRef,
    writers: Vec<Option<StreamWriter<BufWriter<File>>>>,
    pending: Vec<Vec<Vec<CellValue>>>,
}

impl SpillWriters {
    fn push(&mut self, bucket: usize, row: Vec<CellValue>) -> Result<()> {
        self.pending[bucket].push(row);
        if self.pending[bucket].len() >= SPILL_ROWS {
            self.flush(bucket)?;
        }
        Ok(())
    }

    fn flush(&mut self, bucket: usize) -> Result<()> {
        let rows = std::mem::take(&mut self.pending[bucket]);
        if rows.is_empty() {
            return Ok(());
        }
        let batch = cells_batch(&self.schema, &rows)?;
        if self.writers[bucket].is_none() {
            let path = self.dir.join(format!("bucket-{bucket}.arrows"));
            let file = File::create(&path).map_err(Error::io("creating a view spill", &path))?;
            let w = StreamWriter::try_new(BufWriter::new(file), &self.schema)
                .map_err(arrow_err("spilling a view"))?;
            self.writers[bucket] = Some(w);
        }
        let w = self.writers[bucket].as_mut().expect("opened above");
        w.write(&batch).map_err(arrow_err("spilling a view"))
    }

    fn finish(mut self) -> Result<Vec<Option<PathBuf>>> {
        let mut files = Vec::with_capacity(self.writers.len());
        for bucket in 0..self.writers.len() {
            self.flush(bucket)?;
            match self.writers[bucket].take() {
                Some(mut w) => {
                    w.finish().map_err(arrow_err("spilling a view"))?;
                    files.push(Some(self.dir.join(format!("bucket-{bucket}.arrows"))));
                }
                None => files.push(None),
            }
        }
        Ok(files)
    }
}

/// Flattens every resource of `source` through `view` into per-bucket spill files.
fn spill_view(tables: &Tables, source: &Table, view: &View, buckets: u32, dir: &Path) -> Result<Spilled> {
    let columns = table_columns(view)?;
    remove_dir(dir)?;
    mkdirs(dir)?;
    let spill_schema = spill_schema(&columns);
    let n = buckets.max(1) as usize;
    let mut out = SpillWriters {
        dir: dir.to_path_buf(),
        schema: spill_schema.clone(),
        writers: (0..n).map(|_| None).collect(),
        pending: vec![Vec::new(); n],
    };
    let mut widest = Widest::new(columns.len());
    let mut rows = 0u64;
    let name = &source.name;
    for file in source.files()? {
        let mut batches =
            tables.block_on(source.read(&file.path, Some(&["id", "fhir_version", "resource"])))?;
        while let Some(batch) = tables.block_on(batches.next())? {
            let (ids, versions, resources) = (
                strings(&batch, "id", name)?,
                strings(&batch, "fhir_version", name)?,
                strings(&batch, "resource", name)?,
            );
            for i in 0..batch.num_rows() {
                let id = ids.value(i);
                for values in flatten(view, id, resources.value(i))? {
                    let row = table_row(view, versions.value(i), id, values)?;
                    widest.see(&row);
                    out.push(bucket_of(id, buckets) as usize, row)?;
                    rows += 1;
                }
            }
        }
    }
    let schema = view_schema(&columns, &widest.rows);
    Ok(Spilled { schema, spill_schema, files: out.finish()?, rows })
}

/// Writes each bucket's spill into the view table's files; returns their actions.
fn write_view(tables: &Tables, table: &Table, spilled: &Spilled) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    for (bucket, path) in spilled.files.iter().enumerate() {
        let Some(path) = path else { continue };
        let file = File::open(path).map_err(Error::io("reading a view spill", path))?;
        let reader =
            StreamReader::try_new(BufReader::new(file), None).map_err(arrow_err("reading a view spill"))?;
        let mut writer = FileWriter::new(table, spilled.schema.clone(), bucket as i32, false);
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a view spill"))?;
            let typed = typed_batch(&spilled.schema, &spilled.spill_schema, &batch)?;
            tables.block_on(writer.write(&typed))?;
        }
        actions.extend(tables.block_on(writer.finish())?);
    }
    Ok(actions)
}

/// A spilled batch with its decimal columns converted to the table's types.
fn typed_batch(schema: &SchemaRef, spill_schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (i, field) in schema.fields().iter().enumerate() {
        let column = batch.column(i);
        columns.push(match (spill_schema.field(i).data_type(), field.data_type()) {
            (DataType::Utf8, DataType::Decimal128(_, scale)) => decimal_column(field, column, *scale)?,
            _ => column.clone(),
        });
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a view batch"))
}

/// The decimal literals of `column` as `Decimal128(38, scale)`, each rescaled exactly.
fn decimal_column(field: &Field, column: &ArrayRef, scale: i8) -> Result<ArrayRef> {
    use arrow_array::cast::AsArray;
    let texts = column.as_string::<i32>();
    let scale_u = u32::try_from(scale).unwrap_or(0);
    let mut b = Decimal128Builder::with_capacity(texts.len());
    for i in 0..texts.len() {
        if texts.is_null(i) {
            b.append_null();
            continue;
        }
        let value =
            texts.value(i).parse::<Decimal>().ok().and_then(|d| d.rescaled(scale_u)).ok_or_else(|| {
                Error::CellType {
                    column: field.name().clone(),
                    arrow_type: field.data_type().to_string(),
                    cell: "decimal",
                }
            })?;
        b.append_value(value.mantissa());
    }
    let array = b.finish().with_data_type(field.data_type().clone());
    Ok(Arc::new(array))
}

/// The resources a reload-and-compare inserted, updated or deleted in a type table, noted
/// while it writes the table, for its views.
pub(super) struct ChangeLog {
    changes: Changes,
    changed: BufWriter<File>,
    gone: BufWriter<File>,
    key: Vec<u8>,
}

/// The files of a [`ChangeLog`]: `changed` holds `["<fhir_version>","<id>"]\t<resource>`
/// lines (inserted and updated), `gone` `["<fhir_version>","<id>"]` lines (deleted).
pub(super) struct Changes {
    changed: PathBuf,
    gone: PathBuf,
}

impl ChangeLog {
    pub(super) fn create(dir: &Path) -> Result<Self> {
        remove_dir(dir)?;
        mkdirs(dir)?;
        let changes = Changes { changed: dir.join("changed"), gone: dir.join("gone") };
        let open =
            |p: &Path| File::create(p).map(BufWriter::new).map_err(Error::io("creating a change log", p));
        Ok(ChangeLog {
            changed: open(&changes.changed)?,
            gone: open(&changes.gone)?,
            changes,
            key: Vec::new(),
        })
    }

    fn encode_key(&mut self, version: &str, id: &str) -> Result<()> {
        self.key.clear();
        serde_json::to_writer(&mut self.key, &(version, id))
            .map_err(|source| Error::Json { action: "encoding a change log key", source })
    }

    /// Notes an inserted or updated resource.
    pub(super) fn changed(&mut self, version: &str, id: &str, resource: &str) -> Result<()> {
        self.encode_key(version, id)?;
        let path = &self.changes.changed;
        let w = &mut self.changed;
        for part in [&self.key[..], b"\t", resource.as_bytes(), b"\n"] {
            w.write_all(part).map_err(Error::io("writing a change log", path))?;
        }
        Ok(())
    }

    /// Notes a deleted resource.
    pub(super) fn gone(&mut self, version: &str, id: &str) -> Result<()> {
        self.encode_key(version, id)?;
        let path = &self.changes.gone;
        self.gone.write_all(&self.key).map_err(Error::io("writing a change log", path))?;
        self.gone.write_all(b"\n").map_err(Error::io("writing a change log", path))
    }

    pub(super) fn finish(mut self) -> Result<Changes> {
        self.changed.flush().map_err(Error::io("writing a change log", &self.changes.changed))?;
        self.gone.flush().map_err(Error::io("writing a change log", &self.changes.gone))?;
        Ok(self.changes)
    }
}

/// A change log line's key.
#[derive(Deserialize)]
struct LogKey<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);

/// Calls `f(fhir_version, id, resource)` for each line of change log file `path` (`resource`
/// empty in the `gone` file).
fn scan_log(path: &Path, f: &mut dyn FnMut(&str, &str, &str) -> Result<()>) -> Result<()> {
    super::staged::scan(path, &mut |_, line| {
        let corrupt = |detail: String| Error::CorruptState { path: path.to_path_buf(), detail };
        let (key, resource) = match line.iter().position(|&b| b == b'\t') {
            Some(tab) => (&line[..tab], &line[tab + 1..]),
            None => (line, &b""[..]),
        };
        let LogKey(version, id) = serde_json::from_slice(key).map_err(|e| corrupt(e.to_string()))?;
        let resource = std::str::from_utf8(resource).map_err(|e| corrupt(e.to_string()))?;
        f(&version, &id, resource)
    })
}

/// Updates a view table after a reload-and-compare changed `changes` of its type: in every
/// bucket holding a changed resource, the bucket's files are rewritten without the changed
/// resources' rows and with the new rows of the inserted and updated ones; the other buckets
/// keep their files. `None` when the new rows do not fit the table's columns (a decimal
/// scale grew) or the table's schema cannot be read back: the view is then rebuilt.
fn update_view(
    tables: &Tables,
    table: &Table,
    view: &View,
    signature: &str,
    buckets: u32,
    changes: &Changes,
    dir: &Path,
) -> Result<Option<(Vec<Action>, u64)>> {
    let Some(schema) = table_schema(table, signature)? else { return Ok(None) };
    remove_dir(dir)?;
    mkdirs(dir)?;
    let hasher = KeyHasher::default();
    let mut drop: HashSet<u128> = HashSet::new();
    let mut touched: BTreeSet<i32> = BTreeSet::new();
    scan_log(&changes.gone, &mut |version, id, _| {
        drop.insert(hasher.key(version, id));
        touched.insert(bucket_of(id, buckets));
        Ok(())
    })?;
    let n = buckets.max(1) as usize;
    let mut out = SpillWriters {
        dir: dir.to_path_buf(),
        schema: schema.clone(),
        writers: (0..n).map(|_| None).collect(),
        pending: vec![Vec::new(); n],
    };
    let flattened = scan_log(&changes.changed, &mut |version, id, resource| {
        drop.insert(hasher.key(version, id));
        touched.insert(bucket_of(id, buckets));
        for values in flatten(view, id, resource)? {
            out.push(bucket_of(id, buckets) as usize, table_row(view, version, id, values)?)?;
        }
        Ok(())
    })
    .and_then(|()| out.finish());
    let spills = match flattened {
        Ok(spills) => spills,
        Err(Error::CellType { .. }) => {
            tracing::info!(
                view = view.name(),
                "Changed rows do not fit the view's columns; its table is rebuilt."
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut actions = Vec::new();
    let mut rows = 0u64;
    let files = table.files()?;
    for bucket in touched {
        let old: Vec<_> = files.iter().filter(|f| f.bucket == Some(bucket)).collect();
        let mut writer = FileWriter::new(table, schema.clone(), bucket, false);
        for file in &old {
            rows += keep_rows(tables, table, file, &hasher, &drop, &mut writer)?;
            actions.push(Action::Remove(file.remove.clone()));
        }
        if let Some(path) = &spills[bucket as usize] {
            rows += copy_spill(tables, path, &mut writer)?;
        }
        actions.extend(tables.block_on(writer.finish())?);
    }
    Ok(Some((actions, rows)))
}

/// The view table's schema without `bucket`, if it is the one its signature property names.
fn table_schema(table: &Table, signature: &str) -> Result<Option<SchemaRef>> {
    let snapshot = table.delta.snapshot().map_err(|source| Error::Delta {
        action: "reading a view's schema",
        table: table.name.clone(),
        source: Box::new(source),
    })?;
    let arrow = snapshot.snapshot().arrow_schema();
    let fields: Vec<Field> =
        arrow.fields().iter().filter(|f| f.name() != BUCKET).map(|f| f.as_ref().clone()).collect();
    let schema = Arc::new(Schema::new(fields));
    let shape = format!("{signature}|{:?}", schema.fields());
    let same = table.property(SIGNATURE_PROPERTY)?.as_deref() == Some(shape.as_str());
    if !same {
        tracing::debug!(table = %table.name, "A view table's schema reads back unlike its signature; it is rebuilt.");
    }
    Ok(same.then_some(schema))
}

/// Writes the rows of view file `file` whose resource is not in `drop`; returns how many.
fn keep_rows(
    tables: &Tables,
    table: &Table,
    file: &DataFile,
    hasher: &KeyHasher,
    drop: &HashSet<u128>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let mut kept = 0u64;
    let mut batches = tables.block_on(table.read(&file.path, None))?;
    while let Some(batch) = tables.block_on(batches.next())? {
        let (versions, ids) =
            (strings(&batch, "_fhir_version", &table.name)?, strings(&batch, "_id", &table.name)?);
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(!drop.contains(&hasher.key(versions.value(i), ids.value(i)))))
            .collect();
        let kept_batch = filter_record_batch(&batch, &mask).map_err(arrow_err("filtering a view batch"))?;
        let columns = kept_batch.columns().to_vec();
        let typed = RecordBatch::try_new(writer.schema().clone(), columns)
            .map_err(arrow_err("filtering a view batch"))?;
        kept += typed.num_rows() as u64;
        tables.block_on(writer.write(&typed))?;
    }
    Ok(kept)
}

/// Writes the rows of a spill file of the table's schema; returns how many.
fn copy_spill(tables: &Tables, path: &Path, writer: &mut FileWriter) -> Result<u64> {
    let file = File::open(path).map_err(Error::io("reading a view spill", path))?;
    let reader =
        StreamReader::try_new(BufReader::new(file), None).map_err(arrow_err("reading a view spill"))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(arrow_err("reading a view spill"))?;
        rows += batch.num_rows() as u64;
        tables.block_on(writer.write(&batch))?;
    }
    Ok(rows)
}
