//! The Parquet snapshot format (Arrow writer, zstd).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::arrow::{DecimalFit, arrow_type, cells_batch, typed_decimals};
use super::config::ParquetConfig;
use crate::destination::Destination;
use crate::destinations::files::{
    Carry, ChangeRow, ChangeSink, FileDestination, Head, Row, RowRef, RowSink, SnapshotFormat, ViewSink,
    views_dir,
};
use crate::views::{CellValue, ColumnKind, TableColumn};
use crate::{Error, Result};

/// Rows per Arrow batch handed to the writer (a batch of ~1.3 KB resources is ~1.3 MB; the
/// rows are held twice while it is built).
const BATCH_ROWS: usize = 1024;
/// A row group also closes once its encoded size reaches this: the writer holds the open row
/// group in memory, so this bounds a snapshot writer's memory whatever the row size.
const MAX_ROW_GROUP_BYTES: usize = 8 << 20;
/// Data and dictionary page size limit (the writer's buffers per column are about this size).
const PAGE_BYTES: usize = 256 << 10;
/// zstd level (3 = zstd's default speed/ratio balance).
const ZSTD_LEVEL: i32 = 3;
/// File name inside each partition folder.
const PART: &str = "part-0.parquet";
/// Landing columns of a type file, in order; only `patient_id` may be null (Delta type tables
/// use them too, with `last_seen_run` nullable and a partition column added).
pub(crate) const COLUMNS: [&str; 9] = [
    "id",
    "patient_id",
    "fhir_version",
    "source",
    "dataset",
    "content_hash",
    "resource",
    "first_seen_run",
    "last_seen_run",
];

/// Opens the destination folder.
pub(crate) fn open(config: &ParquetConfig) -> Result<Box<dyn Destination>> {
    let format = ParquetFormat { row_group_rows: config.row_group_rows.max(1) };
    Ok(Box::new(FileDestination::new(format, &config.dir)?))
}

/// Hive-style Parquet snapshots.
pub(crate) struct ParquetFormat {
    row_group_rows: usize,
}

fn row_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS.iter().map(|c| Field::new(*c, DataType::Utf8, *c == "patient_id")).collect::<Vec<_>>(),
    ))
}

fn arrow_err(action: &'static str) -> impl FnOnce(arrow_schema::ArrowError) -> Error {
    move |source| Error::Arrow { action, source }
}

/// An Arrow writer on a new file.
struct FileWriter {
    path: PathBuf,
    writer: ArrowWriter<File>,
}

impl FileWriter {
    fn create(path: &Path, schema: SchemaRef, row_group_rows: usize) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io("creating a folder", dir))?;
        }
        let file = File::create(path).map_err(Error::io("creating Parquet", path))?;
        let level =
            ZstdLevel::try_new(ZSTD_LEVEL).map_err(|source| Error::Parquet { path: path.into(), source })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
            .set_data_page_size_limit(PAGE_BYTES)
            .set_dictionary_page_size_limit(PAGE_BYTES)
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|source| Error::Parquet { path: path.into(), source })?;
        Ok(FileWriter { path: path.to_path_buf(), writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|source| Error::Parquet { path: self.path.clone(), source })
    }

    fn finish(self) -> Result<()> {
        let FileWriter { path, writer } = self;
        let file = writer.into_inner().map_err(|source| Error::Parquet { path: path.clone(), source })?;
        file.sync_all().map_err(Error::io("syncing Parquet", &path))
    }
}

/// Buffers rows into Arrow batches.
struct ParquetSink {
    file: FileWriter,
    schema: SchemaRef,
    rows: Vec<Row>,
}

impl ParquetSink {
    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        // Sized up front: one allocation per column, not a doubling series (freed blocks the
        // allocator would hold on to for a while).
        let n = self.rows.len();
        let bytes = |f: fn(&Row) -> usize| self.rows.iter().map(f).sum::<usize>();
        let sizes: [usize; 9] = [
            bytes(|r| r.id.len()),
            bytes(|r| r.patient_id.as_ref().map_or(0, String::len)),
            bytes(|r| r.fhir_version.len()),
            bytes(|r| r.source.len()),
            bytes(|r| r.dataset.len()),
            bytes(|r| r.content_hash.len()),
            bytes(|r| r.resource.len()),
            bytes(|r| r.first_seen_run.len()),
            bytes(|r| r.last_seen_run.len()),
        ];
        let mut builders: Vec<StringBuilder> =
            sizes.iter().map(|&size| StringBuilder::with_capacity(n, size)).collect();
        for r in self.rows.drain(..) {
            builders[0].append_value(&r.id);
            builders[1].append_option(r.patient_id.as_deref());
            builders[2].append_value(&r.fhir_version);
            builders[3].append_value(&r.source);
            builders[4].append_value(&r.dataset);
            builders[5].append_value(&r.content_hash);
            builders[6].append_value(&r.resource);
            builders[7].append_value(&r.first_seen_run);
            builders[8].append_value(&r.last_seen_run);
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_err("building a batch"))?;
        self.file.write(&batch)
    }
}

impl RowSink for ParquetSink {
    fn write(&mut self, row: Row) -> Result<()> {
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.file.finish()
    }
}

/// A view file (or change records) being written, [`BATCH_ROWS`] rows per batch: the writer
/// holds one batch and the open row group (closed at [`MAX_ROW_GROUP_BYTES`]).
struct TableSink {
    /// The schema of the batches built.
    schema: SchemaRef,
    rows: Vec<Vec<CellValue>>,
    out: TableOut,
    /// Carried view only: whether a row did not fit the old file's schema (then the rows are
    /// dropped and [`ViewSink::finish`] says so).
    misfit: Option<bool>,
}

/// Where a [`TableSink`]'s batches go.
enum TableOut {
    /// Into the file (its schema is known).
    File(Box<FileWriter>),
    /// Into a scratch Arrow IPC stream with every decimal column as its literals, until all
    /// values are seen; then typed by `fits` and written to `target`.
    Spill(Box<Spill>),
}

/// The scratch stream of a view with decimal columns (see [`TableOut::Spill`]).
struct Spill {
    path: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
    /// Per column: its fit if it is a decimal column.
    fits: Vec<Option<DecimalFit>>,
    target: PathBuf,
    /// The final fields, decimal types not yet decided.
    fields: Vec<Field>,
    row_group_rows: usize,
}

impl TableSink {
    fn new(schema: SchemaRef, out: TableOut) -> Self {
        TableSink { schema, rows: Vec::with_capacity(BATCH_ROWS), out, misfit: None }
    }

    fn push(&mut self, row: Vec<CellValue>) -> Result<()> {
        if self.misfit == Some(true) {
            return Ok(());
        }
        if let TableOut::Spill(spill) = &mut self.out {
            for (fit, cell) in spill.fits.iter_mut().zip(&row) {
                if let Some(fit) = fit {
                    fit.add(cell);
                }
            }
        }
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = cells_batch(&self.schema, &self.rows);
        self.rows.clear();
        let batch = match (batch, &mut self.misfit) {
            (Err(Error::CellType { .. }), Some(misfit)) => {
                *misfit = true;
                return Ok(());
            }
            (batch, _) => batch?,
        };
        match &mut self.out {
            TableOut::File(file) => file.write(&batch),
            TableOut::Spill(spill) => spill.writer.write(&batch).map_err(arrow_err("spilling view rows")),
        }
    }

    /// Writes the last rows and completes the file; `false` if a carried view's rows did not fit.
    fn complete(mut self) -> Result<bool> {
        self.flush()?;
        if self.misfit == Some(true) {
            return Ok(false);
        }
        match self.out {
            TableOut::File(file) => file.finish()?,
            TableOut::Spill(spill) => spill.write_typed()?,
        }
        Ok(true)
    }
}

impl Spill {
    /// Types the decimal columns by their values and writes the spilled batches, as they were
    /// built, to the view file.
    fn write_typed(self) -> Result<()> {
        let Spill { path, writer, fits, target, mut fields, row_group_rows } = self;
        let stream = writer.into_inner().map_err(arrow_err("spilling view rows"))?;
        stream.into_inner().map_err(|e| Error::io("spilling view rows", &path)(e.into_error()))?;
        for (field, fit) in fields.iter_mut().zip(&fits) {
            if let Some(fit) = fit {
                if let Some(cell) = fit.misfit() {
                    let arrow_type = fit.data_type().to_string();
                    return Err(Error::CellType { column: field.name().clone(), arrow_type, cell });
                }
                *field = field.clone().with_data_type(fit.data_type());
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let mut file = FileWriter::create(&target, schema.clone(), row_group_rows)?;
        let input = File::open(&path).map_err(Error::io("reading spilled view rows", &path))?;
        let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, input), None)
            .map_err(arrow_err("reading spilled view rows"))?;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading spilled view rows"))?;
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(column, field)| typed_decimals(column, field))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let typed =
                RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a batch"))?;
            file.write(&typed)?;
        }
        file.finish()?;
        fs::remove_file(&path).map_err(Error::io("removing spilled view rows", &path))
    }
}

impl ViewSink for TableSink {
    fn write(&mut self, row: Vec<CellValue>) -> Result<()> {
        self.push(row)
    }

    fn finish(self: Box<Self>) -> Result<bool> {
        self.complete()
    }
}

/// The columns of the change records, all text.
const CHANGE_COLUMNS: [&str; 9] = [
    "run_id",
    "changed_at",
    "operation",
    "resource_type",
    "fhir_version",
    "id",
    "patient_id",
    "before_hash",
    "after_hash",
];

impl ChangeSink for TableSink {
    fn write(&mut self, c: ChangeRow) -> Result<()> {
        let text = CellValue::Text;
        let opt_text = |s: Option<String>| s.map_or(CellValue::Null, CellValue::Text);
        self.push(vec![
            text(c.run_id),
            text(c.changed_at),
            text(c.operation.as_str().to_string()),
            text(c.resource_type),
            text(c.fhir_version),
            text(c.id),
            opt_text(c.patient_id),
            opt_text(c.before_hash),
            opt_text(c.after_hash),
        ])
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.complete().map(drop)
    }
}

/// The string columns `names` of a batch, or why the file is not one this format wrote.
fn string_columns<'b>(
    batch: &'b RecordBatch,
    names: &[&str],
    path: &Path,
) -> Result<Vec<&'b arrow_array::StringArray>> {
    names
        .iter()
        .map(|name| {
            let col = batch.column_by_name(name).ok_or_else(|| Error::CorruptState {
                path: path.to_path_buf(),
                detail: format!("column `{name}` is missing"),
            })?;
            col.as_string_opt::<i32>().ok_or_else(|| Error::CorruptState {
                path: path.to_path_buf(),
                detail: format!("column `{name}` is not a string column"),
            })
        })
        .collect()
}

/// The Arrow fields of a view table with `columns`, as `arrow.rs` maps their kinds (a decimal
/// column shown at scale 0: its scale follows the values of each file).
fn view_fields(columns: &[TableColumn]) -> Vec<Field> {
    columns
        .iter()
        .map(|c| {
            let nullable = !matches!(c.name.as_str(), "_fhir_version" | "_id");
            Field::new(&c.name, arrow_type(c.kind, std::iter::empty()), nullable)
        })
        .collect()
}

/// The file of view `name` in the view root `dir`.
fn view_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join(PART)
}

impl SnapshotFormat for ParquetFormat {
    fn kind(&self) -> &'static str {
        "parquet"
    }

    fn type_path(&self, version: &Path, resource_type: &str) -> PathBuf {
        version.join(format!("resource_type={resource_type}")).join(PART)
    }

    fn types_in(&self, version: &Path) -> Result<Vec<String>> {
        let mut types = Vec::new();
        for entry in fs::read_dir(version).map_err(Error::io("listing a snapshot", version))? {
            let name = entry.map_err(Error::io("listing a snapshot", version))?.file_name();
            if let Some(t) = name.to_str().and_then(|n| n.strip_prefix("resource_type=")) {
                types.push(t.to_string());
            }
        }
        Ok(types)
    }

    fn writer(&self, path: &Path) -> Result<Box<dyn RowSink>> {
        let schema = row_schema();
        let file = FileWriter::create(path, schema.clone(), self.row_group_rows)?;
        Ok(Box::new(ParquetSink { file, schema, rows: Vec::with_capacity(BATCH_ROWS) }))
    }

    fn read(&self, path: &Path, f: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
        let perr = |source| Error::Parquet { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(Error::io("reading Parquet", path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(perr)?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(perr)?;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a batch"))?;
            let cols = string_columns(&batch, &COLUMNS, path)?;
            for i in 0..batch.num_rows() {
                let s = |c: usize| cols[c].value(i).to_string();
                f(Row {
                    id: s(0),
                    patient_id: (!cols[1].is_null(i)).then(|| s(1)),
                    fhir_version: s(2),
                    source: s(3),
                    dataset: s(4),
                    content_hash: s(5),
                    resource: s(6),
                    first_seen_run: s(7),
                    last_seen_run: s(8),
                })?;
            }
        }
        Ok(())
    }

    /// Copies the kept rows as Arrow slices of the old file's batches: only `last_seen_run` is
    /// built anew, no row is decoded into strings.
    fn carry_rows(
        &self,
        old: &Path,
        path: &Path,
        decide: &mut dyn FnMut(RowRef<'_>) -> Result<Carry>,
    ) -> Result<(Box<dyn RowSink>, u64)> {
        let perr = |source| Error::Parquet { path: old.to_path_buf(), source };
        let file = File::open(old).map_err(Error::io("reading Parquet", old))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(perr)?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(perr)?;
        let schema = row_schema();
        let mut out = FileWriter::create(path, schema.clone(), self.row_group_rows)?;
        let mut written = 0u64;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a batch"))?;
            let cols = string_columns(&batch, &COLUMNS, old)?;
            let n = batch.num_rows();
            let mut last_seen = StringBuilder::with_capacity(n, n * 36);
            let mut kept = Vec::with_capacity(n);
            for i in 0..n {
                let row = RowRef {
                    id: cols[0].value(i),
                    patient_id: (!cols[1].is_null(i)).then(|| cols[1].value(i)),
                    fhir_version: cols[2].value(i),
                    dataset: cols[4].value(i),
                    content_hash: cols[5].value(i),
                    resource: cols[6].value(i),
                    first_seen_run: cols[7].value(i),
                    last_seen_run: cols[8].value(i),
                };
                let keep = match decide(row)? {
                    Carry::Keep => {
                        last_seen.append_value(cols[8].value(i));
                        true
                    }
                    Carry::LastSeen(run) => {
                        last_seen.append_value(run);
                        true
                    }
                    // A placeholder: the row is sliced out below.
                    Carry::Drop => {
                        last_seen.append_value("");
                        false
                    }
                };
                kept.push(keep);
            }
            let mut columns: Vec<ArrayRef> =
                cols[..8].iter().map(|c| Arc::new((*c).clone()) as ArrayRef).collect();
            columns.push(Arc::new(last_seen.finish()));
            let carried =
                RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a batch"))?;
            // Write the runs of kept rows as slices (a dropped row, or the end, closes a run).
            let mut start = 0;
            for (i, keep) in kept.iter().chain([&false]).enumerate() {
                if !keep {
                    if i > start {
                        out.write(&carried.slice(start, i - start))?;
                        written += (i - start) as u64;
                    }
                    start = i + 1;
                }
            }
        }
        Ok((Box::new(ParquetSink { file: out, schema, rows: Vec::with_capacity(BATCH_ROWS) }), written))
    }

    fn read_heads(&self, path: &Path, f: &mut dyn FnMut(Head<'_>) -> Result<()>) -> Result<()> {
        let perr = |source| Error::Parquet { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(Error::io("reading Parquet", path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
        // Every landing column but `resource`, the bulk of the file.
        let heads = [0, 1, 2, 3, 4, 5, 7, 8].map(|i| COLUMNS[i]);
        let mask = ProjectionMask::columns(builder.parquet_schema(), heads);
        let reader = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(perr)?;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a batch"))?;
            let cols = string_columns(&batch, &heads, path)?;
            for i in 0..batch.num_rows() {
                f(Head {
                    id: cols[0].value(i),
                    patient_id: (!cols[1].is_null(i)).then(|| cols[1].value(i)),
                    fhir_version: cols[2].value(i),
                    source: cols[3].value(i),
                    dataset: cols[4].value(i),
                    content_hash: cols[5].value(i),
                    first_seen_run: cols[6].value(i),
                    last_seen_run: cols[7].value(i),
                })?;
            }
        }
        Ok(())
    }

    fn changes_writer(&self, dir: &Path) -> Result<Box<dyn ChangeSink>> {
        let fields: Vec<Field> =
            CHANGE_COLUMNS.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let file = FileWriter::create(&dir.join(PART), schema.clone(), self.row_group_rows)?;
        Ok(Box::new(TableSink::new(schema, TableOut::File(Box::new(file)))))
    }

    /// A view without decimal columns is written as its rows come; one with them goes through
    /// a scratch Arrow IPC stream at `spill` (decimals as their literals) until every value is
    /// seen, then each decimal column is typed as `view_schema` types it.
    fn view_writer(
        &self,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        spill: &Path,
    ) -> Result<Box<dyn ViewSink>> {
        let target = view_file(dir, name);
        let fields = view_fields(columns);
        if !columns.iter().any(|c| c.kind == ColumnKind::Decimal) {
            let schema = Arc::new(Schema::new(fields));
            let file = FileWriter::create(&target, schema.clone(), self.row_group_rows)?;
            return Ok(Box::new(TableSink::new(schema, TableOut::File(Box::new(file)))));
        }
        // Decimal columns spill as text (the literal, exactly as a Utf8 decimal column holds it).
        let spill_fields: Vec<Field> = fields
            .iter()
            .zip(columns)
            .map(|(f, c)| match c.kind {
                ColumnKind::Decimal => f.clone().with_data_type(DataType::Utf8),
                _ => f.clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new(spill_fields));
        if let Some(dir) = spill.parent() {
            fs::create_dir_all(dir).map_err(Error::io("creating a folder", dir))?;
        }
        let file = File::create(spill).map_err(Error::io("spilling view rows", spill))?;
        let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)
            .map_err(arrow_err("spilling view rows"))?;
        let fits =
            columns.iter().map(|c| (c.kind == ColumnKind::Decimal).then(DecimalFit::default)).collect();
        let spill = Spill {
            path: spill.to_path_buf(),
            writer,
            fits,
            target,
            fields,
            row_group_rows: self.row_group_rows,
        };
        Ok(Box::new(TableSink::new(schema, TableOut::Spill(Box::new(spill)))))
    }

    fn view_format(&self, columns: &[TableColumn]) -> String {
        // The kinds too: text and JSON columns are both Utf8 but their cells are written apart.
        format!("{columns:?}|{:?}", view_fields(columns))
    }

    fn view_path(&self, version: &Path, name: &str) -> PathBuf {
        view_file(&views_dir(version), name)
    }

    /// Copies the kept rows as slices of the old file's batches, in the old file's schema, and
    /// builds the new rows to it. A decimal column's scale is that of the old file: if a new
    /// value needs more fraction (or integer) digits than it holds, the sink's `finish` says so
    /// and the caller rebuilds the view.
    fn carry_view(
        &self,
        old: &Path,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        keep: &mut dyn FnMut(&str, &str) -> Result<bool>,
    ) -> Result<Option<Box<dyn ViewSink>>> {
        let perr = |source| Error::Parquet { path: old.to_path_buf(), source };
        let file = File::open(old).map_err(Error::io("reading Parquet", old))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
        // The old file's own schema: its rows are copied as they are, the new ones built to it.
        let schema = builder.schema().clone();
        let names = schema.fields().iter().map(|f| f.name());
        if !names.eq(columns.iter().map(|c| &c.name)) {
            return Ok(None);
        }
        let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(perr)?;
        let mut out = FileWriter::create(&view_file(dir, name), schema.clone(), self.row_group_rows)?;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a batch"))?;
            let keys = string_columns(&batch, &["_fhir_version", "_id"], old)?;
            // Copy the runs of kept rows as slices of the batch.
            let mut start = 0;
            for i in 0..=batch.num_rows() {
                let kept = i < batch.num_rows() && keep(keys[0].value(i), keys[1].value(i))?;
                if !kept {
                    if i > start {
                        out.write(&batch.slice(start, i - start))?;
                    }
                    start = i + 1;
                }
            }
        }
        let mut sink = TableSink::new(schema, TableOut::File(Box::new(out)));
        sink.misfit = Some(false);
        Ok(Some(Box::new(sink)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::parquet::arrow::view_schema;

    fn columns(kinds: &[ColumnKind]) -> Vec<TableColumn> {
        kinds.iter().map(|&kind| TableColumn { name: "c".into(), kind }).collect()
    }

    /// The key a view file is kept by names each column's Arrow type, and tells apart kinds
    /// that share one (text and JSON are both Utf8), so a changed typed mapping rebuilds.
    #[test]
    fn view_format_follows_the_typed_mapping() {
        let f = ParquetFormat { row_group_rows: 1 };
        let date = f.view_format(&columns(&[ColumnKind::Date]));
        assert!(date.contains("Date32"), "{date}");
        assert!(f.view_format(&columns(&[ColumnKind::Timestamp])).contains("Timestamp(Microsecond"));
        let text = f.view_format(&columns(&[ColumnKind::Text]));
        assert_ne!(text, f.view_format(&columns(&[ColumnKind::Json])));
        assert_ne!(text, date);
        assert_eq!(text, f.view_format(&columns(&[ColumnKind::Text])));
    }

    /// The columns of a view table with text keys and one column of each typed kind.
    fn typed_columns() -> Vec<TableColumn> {
        let kinds = [
            ("_fhir_version", ColumnKind::Text),
            ("_id", ColumnKind::Text),
            ("value", ColumnKind::Decimal),
            ("count", ColumnKind::Integer),
            ("day", ColumnKind::Date),
            ("at", ColumnKind::Timestamp),
            ("flag", ColumnKind::Boolean),
        ];
        kinds.iter().map(|(name, kind)| TableColumn { name: name.to_string(), kind: *kind }).collect()
    }

    /// Row `i`; every 7th value is null, and the last row's decimal has the most fraction digits.
    fn typed_row(i: usize, last: usize, decimal: &str) -> Vec<CellValue> {
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(i as u64 % 400);
        let value = match i {
            _ if i == last => CellValue::Decimal(decimal.to_string()),
            _ if i.is_multiple_of(7) => CellValue::Null,
            _ => CellValue::Decimal(format!("{}.{}", i, i % 10)),
        };
        vec![
            CellValue::Text("R4".into()),
            CellValue::Text(format!("obs-{i}")),
            value,
            CellValue::Int(i as i64),
            CellValue::Date(day),
            CellValue::Timestamp(day.and_hms_opt(10, 0, 0).unwrap().and_utc()),
            CellValue::Bool(i.is_multiple_of(2)),
        ]
    }

    /// The file the writer made before views streamed: every row in memory, typed at once,
    /// written [`BATCH_ROWS`] rows per batch.
    fn in_memory_file(path: &Path, rows: &[Vec<CellValue>], columns: &[TableColumn], row_group_rows: usize) {
        let schema = view_schema(columns, rows);
        let mut file = FileWriter::create(path, schema.clone(), row_group_rows).unwrap();
        for chunk in rows.chunks(BATCH_ROWS) {
            file.write(&cells_batch(&schema, chunk).unwrap()).unwrap();
        }
        file.finish().unwrap();
    }

    /// A view streamed row by row (decimals typed after the last value, through the scratch
    /// stream) is byte for byte the file written from all rows in memory, with several row
    /// groups; a decimal that fits no Decimal128 keeps the column as text; a view without
    /// decimals is written directly. The scratch file is gone afterwards.
    #[test]
    fn streamed_view_is_the_in_memory_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = ParquetFormat { row_group_rows: 1000 };
        let n = 3 * BATCH_ROWS + 17;
        let no_decimal: Vec<TableColumn> =
            typed_columns().into_iter().filter(|c| c.kind != ColumnKind::Decimal).collect();
        let cases = [
            ("scaled", typed_columns(), "0.125"),
            ("wide", typed_columns(), "12345678901234567890123456789012345678"),
            ("plain", no_decimal, ""),
        ];
        for (name, columns, decimal) in cases {
            let has_decimal = !decimal.is_empty();
            let rows: Vec<Vec<CellValue>> = (0..n)
                .map(|i| {
                    let mut row = typed_row(i, n - 1, decimal);
                    if !has_decimal {
                        row.remove(2);
                    }
                    row
                })
                .collect();
            let spill = dir.path().join(format!("{name}.arrows"));
            let mut sink = f.view_writer(dir.path(), name, &columns, &spill).unwrap();
            for row in rows.iter().cloned() {
                sink.write(row).unwrap();
            }
            assert!(sink.finish().unwrap());
            assert!(!spill.exists(), "{name}");
            let reference = dir.path().join(format!("{name}-reference.parquet"));
            in_memory_file(&reference, &rows, &columns, 1000);
            let streamed = fs::read(view_file(dir.path(), name)).unwrap();
            assert_eq!(streamed, fs::read(&reference).unwrap(), "{name}");
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&reference).unwrap()).unwrap();
            assert_eq!(reader.metadata().num_row_groups(), n.div_ceil(1000), "{name}");
            if has_decimal {
                let want = if name == "wide" { DataType::Utf8 } else { DataType::Decimal128(38, 3) };
                assert_eq!(reader.schema().field(2).data_type(), &want, "{name}");
            }
        }
    }

    /// A carried view whose new rows need more fraction digits than the old file's decimal
    /// column holds reports so at the end instead of rounding.
    #[test]
    fn carried_view_reports_a_misfit() {
        let dir = tempfile::tempdir().unwrap();
        let f = ParquetFormat { row_group_rows: 1000 };
        let columns = typed_columns();
        let old_rows: Vec<Vec<CellValue>> = (0..10).map(|i| typed_row(i, 100, "")).collect();
        let old = dir.path().join("old.parquet");
        in_memory_file(&old, &old_rows, &columns, 1000);
        let out = dir.path().join("new");
        for (decimal, fits) in [("1.5", true), ("1.55", false)] {
            let mut sink =
                f.carry_view(&old, &out, "v", &columns, &mut |_, id| Ok(id != "obs-3")).unwrap().unwrap();
            sink.write(typed_row(20, 20, decimal)).unwrap();
            assert_eq!(sink.finish().unwrap(), fits, "{decimal}");
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(view_file(&out, "v")).unwrap());
        // The last (misfit) attempt left no complete file.
        assert!(reader.is_err());
    }
}
