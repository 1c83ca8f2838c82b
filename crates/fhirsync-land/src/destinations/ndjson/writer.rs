//! The NDJSON snapshot format.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use fhirsync_views::View;

use super::config::NdjsonConfig;
use crate::destination::Destination;
use crate::destinations::files::row::{read_line, write_line};
use crate::destinations::files::{CHANGE_COLUMNS, FileDestination, Row, RowSink, SnapshotFormat, TableSink};
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
    fn write(&mut self, row: &Row) -> Result<()> {
        self.buf.clear();
        write_line(&mut self.buf, row)?;
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

    fn changes_sink(&self, dir: &Path) -> Result<Box<dyn TableSink>> {
        // Keys in the record's field order.
        let names = CHANGE_COLUMNS.iter().map(|c| c.to_string()).collect();
        ObjectLines::create(&dir.join(format!("changes.{EXT}")), names, false)
    }

    fn view_sink(&self, version: &Path, table: &str, view: &View) -> Result<Box<dyn TableSink>> {
        let mut names = vec!["_fhir_version".to_string(), "_id".to_string()];
        names.extend(view.columns().iter().map(|c| c.name.clone()));
        // Keys sorted, as a JSON object map writes them.
        ObjectLines::create(&version.join(format!("{table}.{EXT}")), names, true)
    }
}

/// A table as NDJSON: one object per row.
struct ObjectLines {
    path: PathBuf,
    out: BufWriter<File>,
    /// Each key as a JSON string, with the index of its cell, in output order.
    keys: Vec<(String, usize)>,
    buf: Vec<u8>,
}

impl ObjectLines {
    /// Keys in column order, or sorted with `sorted`.
    fn create(path: &Path, names: Vec<String>, sorted: bool) -> Result<Box<dyn TableSink>> {
        let mut keys: Vec<(String, usize)> = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        if sorted {
            keys.sort();
        }
        let keys = keys
            .into_iter()
            .map(|(n, i)| {
                let mut key = Vec::new();
                put_json(&mut key, &n)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), i))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(ObjectLines { path: path.to_path_buf(), out: create(path)?, keys, buf: Vec::new() }))
    }
}

impl TableSink for ObjectLines {
    fn write(&mut self, rows: &[Vec<CellValue>]) -> Result<()> {
        for row in rows {
            self.buf.clear();
            self.buf.push(b'{');
            for (n, (key, i)) in self.keys.iter().enumerate() {
                if n > 0 {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(key.as_bytes());
                self.buf.push(b':');
                match row.get(*i).unwrap_or(&CellValue::Null) {
                    CellValue::Null => self.buf.extend_from_slice(b"null"),
                    CellValue::Text(s) => put_json(&mut self.buf, s)?,
                    CellValue::Int(v) => put_json(&mut self.buf, v)?,
                    CellValue::Bool(v) => put_json(&mut self.buf, v)?,
                }
            }
            self.buf.extend_from_slice(b"}\n");
            self.out.write_all(&self.buf).map_err(Error::io("writing NDJSON", &self.path))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let ObjectLines { path, out, .. } = *self;
        let file = out.into_inner().map_err(|e| Error::io("flushing NDJSON", &path)(e.into_error()))?;
        file.sync_all().map_err(Error::io("syncing NDJSON", &path))
    }
}

/// Appends `value` as JSON.
fn put_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<()> {
    serde_json::to_writer(buf, value).map_err(|source| Error::Json { action: "encoding NDJSON", source })
}
