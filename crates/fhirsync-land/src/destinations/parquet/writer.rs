//! The Parquet snapshot format (Arrow writer, zstd).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fhirsync_views::{ColumnType, View};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::ParquetConfig;
use crate::destination::Destination;
use crate::destinations::files::{CHANGE_COLUMNS, FileDestination, Row, RowSink, SnapshotFormat, TableSink};
use crate::views::CellValue;
use crate::{Error, Result};

/// Rows per Arrow batch handed to the writer (a batch of ~1.3 KB resources is ~1.3 MB; the
/// rows are held twice while it is built).
const BATCH_ROWS: usize = 1024;
/// zstd level (3 = zstd's default speed/ratio balance).
const ZSTD_LEVEL: i32 = 3;
/// A row group also closes once its encoded size reaches this: the writer holds the open row
/// group in memory, so this bounds a snapshot writer's memory whatever the row size.
const MAX_ROW_GROUP_BYTES: usize = 8 << 20;
/// Data and dictionary page size limit (the writer's buffers per column are about this size).
const PAGE_BYTES: usize = 256 << 10;
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
    fn write(&mut self, row: &Row) -> Result<()> {
        self.rows.push(row.clone());
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

/// A table of string/int/bool columns built from cells (one Vec per row), chunk by chunk.
struct TableFile {
    file: FileWriter,
    schema: SchemaRef,
}

impl TableFile {
    fn create(path: &Path, fields: Vec<Field>, row_group_rows: usize) -> Result<Box<dyn TableSink>> {
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let file = FileWriter::create(path, schema.clone(), row_group_rows)?;
        Ok(Box::new(TableFile { file, schema }))
    }
}

impl TableSink for TableFile {
    fn write(&mut self, rows: &[Vec<CellValue>]) -> Result<()> {
        let schema = self.schema.clone();
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
                        let size = chunk
                            .iter()
                            .map(|r| match r.get(i) {
                                Some(CellValue::Text(s)) => s.len(),
                                _ => 8,
                            })
                            .sum();
                        let mut b = StringBuilder::with_capacity(chunk.len(), size);
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
            let batch =
                RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a batch"))?;
            self.file.write(&batch)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.file.finish()
    }
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
            let mut cols = Vec::with_capacity(COLUMNS.len());
            for name in COLUMNS {
                let col = batch.column_by_name(name).ok_or_else(|| Error::CorruptState {
                    path: path.to_path_buf(),
                    detail: format!("column `{name}` is missing"),
                })?;
                let strings = col.as_string_opt::<i32>().ok_or_else(|| Error::CorruptState {
                    path: path.to_path_buf(),
                    detail: format!("column `{name}` is not a string column"),
                })?;
                cols.push(strings);
            }
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

    fn changes_sink(&self, dir: &Path) -> Result<Box<dyn TableSink>> {
        let fields = CHANGE_COLUMNS.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect();
        TableFile::create(&dir.join(PART), fields, self.row_group_rows)
    }

    fn view_sink(&self, version: &Path, table: &str, view: &View) -> Result<Box<dyn TableSink>> {
        let mut fields = vec![
            Field::new("_fhir_version", DataType::Utf8, false),
            Field::new("_id", DataType::Utf8, false),
        ];
        for c in view.columns() {
            let ty = match (c.ty, c.collection) {
                (_, true) => DataType::Utf8,
                (ColumnType::Integer, _) => DataType::Int64,
                (ColumnType::Boolean, _) => DataType::Boolean,
                _ => DataType::Utf8,
            };
            fields.push(Field::new(&c.name, ty, true));
        }
        TableFile::create(&version.join(table).join(PART), fields, self.row_group_rows)
    }
}
