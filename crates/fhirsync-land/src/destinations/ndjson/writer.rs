//! The NDJSON snapshot format.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use fhirsync_views::View;
use serde_json::{Map, Value};

use super::config::NdjsonConfig;
use crate::destination::Destination;
use crate::destinations::files::row::{read_line, with_head, write_line};
use crate::destinations::files::{ChangeRow, FileDestination, Head, Row, RowSink, SnapshotFormat};
use crate::views::CellValue;
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

fn write_json_lines<T: serde::Serialize>(path: &Path, items: impl Iterator<Item = T>) -> Result<()> {
    let mut out = create(path)?;
    append_json_lines(&mut out, path, items)?;
    finish(out, path)
}

fn append_json_lines<T: serde::Serialize>(
    out: &mut BufWriter<File>,
    path: &Path,
    items: impl Iterator<Item = T>,
) -> Result<()> {
    for item in items {
        serde_json::to_writer(&mut *out, &item)
            .map_err(|source| Error::Json { action: "encoding NDJSON", source })?;
        out.write_all(b"\n").map_err(Error::io("writing NDJSON", path))?;
    }
    Ok(())
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
fn view_object(names: &[String], row: &[CellValue]) -> Value {
    let mut obj = Map::new();
    for (name, cell) in names.iter().zip(row) {
        let v = match cell {
            CellValue::Null => Value::Null,
            CellValue::Text(s) => Value::String(s.clone()),
            CellValue::Int(i) => Value::from(*i),
            CellValue::Bool(b) => Value::Bool(*b),
        };
        obj.insert(name.clone(), v);
    }
    Value::Object(obj)
}

fn view_names(view: &View) -> Vec<String> {
    let mut names = vec!["_fhir_version".to_string(), "_id".to_string()];
    names.extend(view.columns().iter().map(|c| c.name.clone()));
    names
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

    fn write_changes(&self, dir: &Path, changes: &[ChangeRow]) -> Result<()> {
        write_json_lines(&dir.join(format!("changes.{EXT}")), changes.iter())
    }

    fn write_view(&self, version: &Path, table: &str, view: &View, rows: &[Vec<CellValue>]) -> Result<()> {
        let names = view_names(view);
        let objects = rows.iter().map(|row| view_object(&names, row));
        write_json_lines(&self.view_path(version, table), objects)
    }

    fn view_format(&self, _view: &View) -> String {
        // Cells map to JSON as in `view_object`; change this when that mapping changes.
        "ndjson-1".to_string()
    }

    fn view_path(&self, version: &Path, table: &str) -> PathBuf {
        version.join(format!("{table}.{EXT}"))
    }

    fn carry_view(
        &self,
        old: &Path,
        version: &Path,
        table: &str,
        view: &View,
        keep: &mut dyn FnMut(&str, &str) -> bool,
        rows: &[Vec<CellValue>],
    ) -> Result<()> {
        let path = self.view_path(version, table);
        let mut out = create(&path)?;
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
            if keep(&key.fhir_version, &key.id) {
                // The line as it is (it ends with its newline).
                out.write_all(line.as_bytes()).map_err(Error::io("writing NDJSON", &path))?;
            }
        }
        let names = view_names(view);
        append_json_lines(&mut out, &path, rows.iter().map(|row| view_object(&names, row)))?;
        finish(out, &path)
    }
}
