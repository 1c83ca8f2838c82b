//! View tables: rebuilt from their type table when it changed (or the view is new or
//! redefined), else committed with nothing but the run's mark.
//!
//! A rebuild flattens every resource once, streaming the type table's files, into one Arrow
//! IPC spill file per bucket (decimals as their literal text), while it learns the decimal
//! columns' types from the widest values; then each bucket's spill is converted to the table's
//! types and written. So memory holds one batch per bucket, never the view.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::Decimal128Builder;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;
use deltalake::kernel::Action;
use fhirsync_views::{Decimal, View};

use super::commit::{TableResult, already_committed, merge_op, overwrite_op, save_result};
use super::plan::Ctx;
use super::rows::strings;
use super::store::{FileWriter, NewTable, SIGNATURE_PROPERTY, Table, Tables, bucket_of};
use super::writer::DeltaDestination;
use crate::destination::RunMetrics;
use crate::destinations::files::layout::{mkdirs, remove_dir};
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
    /// Rebuilds the table of `view` when its source type changed (or the view is new or
    /// changed); otherwise commits nothing but the run's mark. Returns the rows written.
    pub(super) fn apply_view(
        &self,
        ctx: &Ctx<'_>,
        view: &View,
        source_changed: bool,
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
            table.property(SIGNATURE_PROPERTY).is_some_and(|p| p.starts_with(&format!("{signature}|")));
        let buckets = table.buckets(self.buckets);
        let rebuild = !table.exists || !same_view || source_changed || !ctx.compare();
        let (mut shape, mut rows, mut actions) = (String::new(), 0u64, Vec::new());
        let mut schema = Arc::new(Schema::empty());
        if rebuild {
            let source = tables.block_on(tables.open(&type_table(view.resource())?))?;
            let dir = work.join(&name);
            let spilled = spill_view(tables, &source, view, buckets, &dir)?;
            schema = spilled.schema.clone();
            shape = format!("{signature}|{:?}", schema.fields());
            if table.exists && table.property(SIGNATURE_PROPERTY).as_deref() != Some(shape.as_str()) {
                // Other columns or column types (a view changed, or a decimal scale grew): a new table.
                tracing::info!(view = view.name(), "View columns changed; its table is rebuilt.");
                tables.block_on(tables.drop_table(&name))?;
                table = tables.block_on(tables.open(&name))?;
            }
            actions = table.files()?.into_iter().map(|f| Action::Remove(f.remove)).collect();
            actions.extend(write_view(tables, &table, &spilled)?);
            rows = spilled.rows;
            remove_dir(&dir)?;
        }
        let result = TableResult {
            metrics: RunMetrics { view_rows: rows, ..Default::default() },
            ..Default::default()
        };
        save_result(&path, &result)?;
        let op = if rebuild { overwrite_op() } else { merge_op() };
        let table_schema = super::commit::with_bucket(&schema);
        let new = NewTable { source: view.name(), schema: &table_schema, buckets, signature: Some(&shape) };
        tables.block_on(table.commit(ctx.run_id, ctx.method.as_str(), actions, &new, op))?;
        Ok(rows)
    }
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
