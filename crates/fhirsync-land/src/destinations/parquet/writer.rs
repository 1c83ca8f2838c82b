//! The Parquet snapshot format (Arrow writer, zstd).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fhirsync_views::{ColumnType, View};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::ParquetConfig;
use crate::destination::Destination;
use crate::destinations::files::{
    Carry, ChangeRow, FileDestination, Head, Row, RowRef, RowSink, SnapshotFormat,
};
use crate::views::CellValue;
use crate::{Error, Result};

/// Rows per Arrow batch handed to the writer.
const BATCH_ROWS: usize = 4096;
/// zstd level (3 = zstd's default speed/ratio balance).
const ZSTD_LEVEL: i32 = 3;
/// File name inside each partition folder.
const PART: &str = "part-0.parquet";
/// Landing columns, in order; only `patient_id` may be null.
const COLUMNS: [&str; 9] = [
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
        let mut builders: Vec<StringBuilder> = (0..COLUMNS.len()).map(|_| StringBuilder::new()).collect();
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

/// Writes string/int/bool columns built from `cells` (one Vec per row).
fn write_table(
    path: &Path,
    fields: Vec<Field>,
    rows: &[Vec<CellValue>],
    row_group_rows: usize,
) -> Result<()> {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut file = FileWriter::create(path, schema.clone(), row_group_rows)?;
    append_rows(&mut file, &schema, rows)?;
    file.finish()
}

/// Appends string/int/bool columns of `schema` built from `cells` (one Vec per row).
fn append_rows(file: &mut FileWriter, schema: &SchemaRef, rows: &[Vec<CellValue>]) -> Result<()> {
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let cells = chunk.iter().map(|r| r.get(i).unwrap_or(&CellValue::Null));
            let array: ArrayRef = match field.data_type() {
                DataType::Int64 => {
                    let mut b = Int64Builder::new();
                    for c in cells {
                        b.append_option(match c {
                            CellValue::Int(v) => Some(*v),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
                DataType::Boolean => {
                    let mut b = BooleanBuilder::new();
                    for c in cells {
                        b.append_option(match c {
                            CellValue::Bool(v) => Some(*v),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
                _ => {
                    let mut b = StringBuilder::new();
                    for c in cells {
                        match c {
                            CellValue::Null => b.append_null(),
                            CellValue::Text(s) => b.append_value(s),
                            CellValue::Int(v) => b.append_value(v.to_string()),
                            CellValue::Bool(v) => b.append_value(v.to_string()),
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            columns.push(array);
        }
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a batch"))?;
        file.write(&batch)?;
    }
    Ok(())
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

/// The Arrow fields of a view table.
fn view_fields(view: &View) -> Vec<Field> {
    let mut fields =
        vec![Field::new("_fhir_version", DataType::Utf8, false), Field::new("_id", DataType::Utf8, false)];
    for c in view.columns() {
        let ty = match (c.ty, c.collection) {
            (_, true) => DataType::Utf8,
            (ColumnType::Integer, _) => DataType::Int64,
            (ColumnType::Boolean, _) => DataType::Boolean,
            _ => DataType::Utf8,
        };
        fields.push(Field::new(&c.name, ty, true));
    }
    fields
}

fn text(s: &str) -> CellValue {
    CellValue::Text(s.to_string())
}

fn opt_text(s: &Option<String>) -> CellValue {
    s.as_deref().map_or(CellValue::Null, text)
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

    fn write_changes(&self, dir: &Path, changes: &[ChangeRow]) -> Result<()> {
        let names = [
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
        let fields = names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect();
        let rows: Vec<Vec<CellValue>> = changes
            .iter()
            .map(|c| {
                vec![
                    text(&c.run_id),
                    text(&c.changed_at),
                    text(&c.operation),
                    text(&c.resource_type),
                    text(&c.fhir_version),
                    text(&c.id),
                    opt_text(&c.patient_id),
                    opt_text(&c.before_hash),
                    opt_text(&c.after_hash),
                ]
            })
            .collect();
        write_table(&dir.join(PART), fields, &rows, self.row_group_rows)
    }

    fn write_view(&self, version: &Path, table: &str, view: &View, rows: &[Vec<CellValue>]) -> Result<()> {
        write_table(&self.view_path(version, table), view_fields(view), rows, self.row_group_rows)
    }

    fn view_format(&self, view: &View) -> String {
        format!("{:?}", view_fields(view))
    }

    fn view_path(&self, version: &Path, table: &str) -> PathBuf {
        version.join(table).join(PART)
    }

    fn carry_view(
        &self,
        old: &Path,
        version: &Path,
        table: &str,
        _view: &View,
        keep: &mut dyn FnMut(&str, &str) -> bool,
        rows: &[Vec<CellValue>],
    ) -> Result<()> {
        let perr = |source| Error::Parquet { path: old.to_path_buf(), source };
        let file = File::open(old).map_err(Error::io("reading Parquet", old))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
        // The old file's own schema: its rows are copied as they are, the new ones built to it.
        let schema = builder.schema().clone();
        let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(perr)?;
        let mut out =
            FileWriter::create(&self.view_path(version, table), schema.clone(), self.row_group_rows)?;
        for batch in reader {
            let batch = batch.map_err(arrow_err("reading a batch"))?;
            let keys = string_columns(&batch, &["_fhir_version", "_id"], old)?;
            // Copy the runs of kept rows as slices of the batch.
            let mut start = 0;
            for i in 0..=batch.num_rows() {
                let kept = i < batch.num_rows() && keep(keys[0].value(i), keys[1].value(i));
                if !kept {
                    if i > start {
                        out.write(&batch.slice(start, i - start))?;
                    }
                    start = i + 1;
                }
            }
        }
        append_rows(&mut out, &schema, rows)?;
        out.finish()
    }
}
