//! The NDJSON snapshot format.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::config::NdjsonConfig;
use crate::destination::Destination;
use crate::destinations::files::row::{read_line, with_head, write_line};
use crate::destinations::files::views_dir;
use crate::destinations::files::{
    ChangeRow, ChangeSink, FileDestination, Head, Row, RowSink, SnapshotFormat, ViewSink,
};
use crate::views::{CellValue, TableColumn};
use crate::{Error, Result};

const EXT: &str = "ndjson";

/// Opens the destination folder.
pub(crate) fn open(config: &NdjsonConfig) -> Result<Box<dyn Destination>> {
    Ok(Box::new(FileDestination::new(NdjsonFormat, &config.dir)?))
}

/// One `<Type>.ndjson` per resource type.
pub(crate) struct NdjsonFormat;

struct NdjsonSink {
    path: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
}

impl RowSink for NdjsonSink {
    fn write(&mut self, row: Row) -> Result<()> {
        self.buf.clear();
        write_line(&mut self.buf, &row)?;
        self.out.write_all(&self.buf).map_err(Error::io("writing NDJSON", &self.path))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let NdjsonSink { path, out, .. } = *self;
        let file = out.into_inner().map_err(|e| Error::io("flushing NDJSON", &path)(e.into_error()))?;
        file.sync_all().map_err(Error::io("syncing NDJSON", &path))
    }
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Error::io("creating a folder", dir))?;
    }
    let f = File::create(path).map_err(Error::io("creating NDJSON", path))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

/// A file of JSON lines being written: view rows or change records.
struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLines {
    fn create(path: &Path) -> Result<Self> {
        Ok(JsonLines { path: path.to_path_buf(), out: create(path)? })
    }

    fn append(&mut self, item: &impl serde::Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, item)
            .map_err(|source| Error::Json { action: "encoding NDJSON", source })?;
        self.out.write_all(b"\n").map_err(Error::io("writing NDJSON", &self.path))
    }

    fn finish(self) -> Result<()> {
        finish(self.out, &self.path)
    }
}

/// The rows of a view file, written as they come.
struct ViewLines {
    lines: JsonLines,
    columns: Vec<TableColumn>,
}

impl ViewSink for ViewLines {
    fn write(&mut self, row: Vec<CellValue>) -> Result<()> {
        self.lines.append(&view_object(&self.columns, &row))
    }

    fn finish(self: Box<Self>) -> Result<bool> {
        self.lines.finish()?;
        // JSON has no column types to outgrow: every row fits.
        Ok(true)
    }
}

impl ChangeSink for JsonLines {
    fn write(&mut self, change: ChangeRow) -> Result<()> {
        self.append(&change)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        JsonLines::finish(*self)
    }
}

fn finish(out: BufWriter<File>, path: &Path) -> Result<()> {
    let file = out.into_inner().map_err(|e| Error::io("flushing NDJSON", path)(e.into_error()))?;
    file.sync_all().map_err(Error::io("syncing NDJSON", path))
}

/// The key of a view line (its other columns are not read).
#[derive(serde::Deserialize)]
struct ViewKey {
    #[serde(rename = "_fhir_version")]
    fhir_version: String,
    #[serde(rename = "_id")]
    id: String,
}

/// A view row as a JSON object of its columns.
fn view_object(columns: &[TableColumn], row: &[CellValue]) -> Value {
    let mut obj = Map::new();
    for (column, cell) in columns.iter().zip(row) {
        obj.insert(column.name.clone(), cell_json(cell));
    }
    Value::Object(obj)
}

/// A view cell as JSON: decimals as the number literal (`1.50`), collections as arrays, dates
/// as `YYYY-MM-DD`, instants as RFC 3339 in UTC.
fn cell_json(cell: &CellValue) -> Value {
    match cell {
        CellValue::Null => Value::Null,
        CellValue::Text(s) => Value::String(s.clone()),
        CellValue::Json(v) => v.clone(),
        CellValue::Int(i) => Value::from(*i),
        CellValue::Bool(b) => Value::Bool(*b),
        // Validated as a number when the cell was made; a string if serde_json disagrees.
        CellValue::Decimal(s) => {
            s.parse::<serde_json::Number>().map_or_else(|_| Value::String(s.clone()), Value::Number)
        }
        CellValue::Date(d) => Value::String(d.format("%Y-%m-%d").to_string()),
        CellValue::Timestamp(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

/// The file of view `name` in the view root `dir`.
fn view_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{EXT}"))
}

impl SnapshotFormat for NdjsonFormat {
    fn kind(&self) -> &'static str {
        "ndjson"
    }

    fn type_path(&self, version: &Path, resource_type: &str) -> PathBuf {
        version.join(format!("{resource_type}.{EXT}"))
    }

    fn types_in(&self, version: &Path) -> Result<Vec<String>> {
        let mut types = Vec::new();
        for entry in fs::read_dir(version).map_err(Error::io("listing a snapshot", version))? {
            let path = entry.map_err(Error::io("listing a snapshot", version))?.path();
            if path.extension().is_some_and(|e| e == EXT)
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                // Snapshots of earlier versions kept their views beside the types.
                && !stem.starts_with("view_")
            {
                types.push(stem.to_string());
            }
        }
        Ok(types)
    }

    fn writer(&self, path: &Path) -> Result<Box<dyn RowSink>> {
        Ok(Box::new(NdjsonSink { path: path.to_path_buf(), out: create(path)?, buf: Vec::new() }))
    }

    fn read(&self, path: &Path, f: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
        let file = File::open(path).map_err(Error::io("reading NDJSON", path))?;
        for line in BufReader::with_capacity(1 << 20, file).lines() {
            let line = line.map_err(Error::io("reading NDJSON", path))?;
            let row = read_line(&line)
                .map_err(|e| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() })?;
            f(row)?;
        }
        Ok(())
    }

    fn read_heads(&self, path: &Path, f: &mut dyn FnMut(Head<'_>) -> Result<()>) -> Result<()> {
        let file = File::open(path).map_err(Error::io("reading NDJSON", path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(Error::io("reading NDJSON", path))? == 0 {
                return Ok(());
            }
            with_head(&line, &mut *f)
                .map_err(|e| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() })??;
        }
    }

    fn changes_writer(&self, dir: &Path) -> Result<Box<dyn ChangeSink>> {
        Ok(Box::new(JsonLines::create(&dir.join(format!("changes.{EXT}")))?))
    }

    fn view_writer(
        &self,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        _spill: &Path,
    ) -> Result<Box<dyn ViewSink>> {
        let lines = JsonLines::create(&view_file(dir, name))?;
        Ok(Box::new(ViewLines { lines, columns: columns.to_vec() }))
    }

    fn view_format(&self, columns: &[TableColumn]) -> String {
        // Cells map to JSON by their column's kind as in `cell_json`; bump the revision when
        // that mapping changes.
        format!("ndjson-2|{columns:?}")
    }

    fn view_path(&self, version: &Path, name: &str) -> PathBuf {
        view_file(&views_dir(version), name)
    }

    fn carry_view(
        &self,
        old: &Path,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        keep: &mut dyn FnMut(&str, &str) -> Result<bool>,
    ) -> Result<Option<Box<dyn ViewSink>>> {
        let mut lines = JsonLines::create(&view_file(dir, name))?;
        let file = File::open(old).map_err(Error::io("reading NDJSON", old))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(Error::io("reading NDJSON", old))? == 0 {
                break;
            }
            let key: ViewKey = serde_json::from_str(&line)
                .map_err(|e| Error::CorruptState { path: old.to_path_buf(), detail: e.to_string() })?;
            if keep(&key.fhir_version, &key.id)? {
                // The line as it is (it ends with its newline).
                lines.out.write_all(line.as_bytes()).map_err(Error::io("writing NDJSON", &lines.path))?;
            }
        }
        Ok(Some(Box::new(ViewLines { lines, columns: columns.to_vec() })))
    }
}
