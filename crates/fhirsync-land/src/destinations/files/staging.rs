//! Durable staging of a file destination's unfinished run.
//!
//! Resources are appended to `<ResourceType>.ndjson` (one [`Row`] line each); completed scopes
//! are buffered and appended to `scopes.ndjson` only at a checkpoint, after the data files were
//! flushed and fsynced, so a recorded scope always has its rows on disk. On resume, a torn last
//! line (process killed mid-write) is cut off; rows re-sent by the resumed extraction simply
//! appear twice and the later copy wins.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fhirsync_core::{RawResource, ScopeKey};

use super::layout::{mkdirs, sync_dir};
use super::row::{Row, read_head, read_line, write_line};
use crate::destinations::sql::schema::type_table;
use crate::{Error, Result};

const SCOPES: &str = "scopes.ndjson";
const DATA_EXT: &str = "ndjson";

/// The staging folder of one run.
pub(crate) struct Staging {
    dir: PathBuf,
    run_id: String,
    writers: BTreeMap<String, BufWriter<File>>,
    pending_scopes: Vec<ScopeKey>,
    completed: BTreeSet<ScopeKey>,
    buf: Vec<u8>,
}

impl Staging {
    /// Starts an empty staging folder.
    pub(crate) fn create(dir: PathBuf, run_id: &str) -> Result<Self> {
        super::layout::remove_dir(&dir)?;
        mkdirs(&dir)?;
        Ok(Staging {
            dir,
            run_id: run_id.to_string(),
            writers: BTreeMap::new(),
            pending_scopes: Vec::new(),
            completed: BTreeSet::new(),
            buf: Vec::new(),
        })
    }

    /// Reopens a killed run's folder; returns it and the scopes it completed.
    pub(crate) fn resume(dir: PathBuf, run_id: &str) -> Result<(Self, BTreeSet<ScopeKey>)> {
        mkdirs(&dir)?;
        let mut scopes = BTreeSet::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("listing staging", &dir))? {
            let path = entry.map_err(Error::io("listing staging", &dir))?.path();
            truncate_torn_line(&path)?;
        }
        let scopes_path = dir.join(SCOPES);
        if scopes_path.exists() {
            let f = File::open(&scopes_path).map_err(Error::io("reading staged scopes", &scopes_path))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(Error::io("reading staged scopes", &scopes_path))?;
                let scope: ScopeKey = serde_json::from_str(&line)
                    .map_err(|e| Error::CorruptState { path: scopes_path.clone(), detail: e.to_string() })?;
                scopes.insert(scope);
            }
        }
        let staging = Staging {
            dir,
            run_id: run_id.to_string(),
            writers: BTreeMap::new(),
            pending_scopes: Vec::new(),
            completed: scopes.clone(),
            buf: Vec::new(),
        };
        Ok((staging, scopes))
    }

    /// Appends resources (buffered until [`Staging::checkpoint`]).
    pub(crate) fn stage(&mut self, resources: &[RawResource]) -> Result<()> {
        for r in resources {
            type_table(&r.resource_type)?;
            self.buf.clear();
            write_line(&mut self.buf, &Row::staged(r, &self.run_id))?;
            let w = match self.writers.get_mut(&r.resource_type) {
                Some(w) => w,
                None => {
                    let path = self.data_path(&r.resource_type);
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(Error::io("opening a staging file", &path))?;
                    self.writers
                        .entry(r.resource_type.clone())
                        .or_insert(BufWriter::with_capacity(1 << 20, f))
                }
            };
            w.write_all(&self.buf).map_err(Error::io("writing a staging file", &self.dir))?;
        }
        Ok(())
    }

    /// Records a completed scope (persisted at the next checkpoint).
    pub(crate) fn scope_complete(&mut self, scope: &ScopeKey) {
        self.pending_scopes.push(scope.clone());
        self.completed.insert(scope.clone());
    }

    /// Every scope completed so far (resumed and new).
    pub(crate) fn completed(&self) -> &BTreeSet<ScopeKey> {
        &self.completed
    }

    /// The staging folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes and fsyncs the data, then durably appends the completed scopes.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        for w in self.writers.values_mut() {
            w.flush().map_err(Error::io("flushing a staging file", &self.dir))?;
            w.get_ref().sync_data().map_err(Error::io("syncing a staging file", &self.dir))?;
        }
        if !self.pending_scopes.is_empty() {
            let path = self.dir.join(SCOPES);
            let mut out = Vec::new();
            for s in self.pending_scopes.drain(..) {
                serde_json::to_writer(&mut out, &s)
                    .map_err(|source| Error::Json { action: "encoding a scope", source })?;
                out.push(b'\n');
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(Error::io("opening staged scopes", &path))?;
            f.write_all(&out).map_err(Error::io("writing staged scopes", &path))?;
            f.sync_data().map_err(Error::io("syncing staged scopes", &path))?;
        }
        sync_dir(&self.dir);
        Ok(())
    }

    /// Resource types with a staging file.
    pub(crate) fn types(&self) -> Result<Vec<String>> {
        let mut types = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(Error::io("listing staging", &self.dir))? {
            let path = entry.map_err(Error::io("listing staging", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == DATA_EXT)
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                && path.file_name().is_some_and(|n| n != SCOPES)
            {
                types.push(stem.to_string());
            }
        }
        types.sort();
        Ok(types)
    }

    /// Calls `f(line_number, row)` for every staged row of `resource_type`, in staging order.
    pub(crate) fn scan(&self, resource_type: &str, f: &mut dyn FnMut(u64, Row) -> Result<()>) -> Result<()> {
        let path = self.data_path(resource_type);
        if !path.exists() {
            return Ok(());
        }
        let file = File::open(&path).map_err(Error::io("reading a staging file", &path))?;
        for (n, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
            let line = line.map_err(Error::io("reading a staging file", &path))?;
            let row = read_line(&line)
                .map_err(|e| Error::CorruptState { path: path.clone(), detail: e.to_string() })?;
            f(n as u64, row)?;
        }
        Ok(())
    }

    /// Calls `f(line_number, fhir_version, id, content_hash)` for every staged row of
    /// `resource_type`, in staging order, without parsing the resources (the Delta
    /// destination's index pass).
    #[cfg_attr(not(feature = "delta"), allow(dead_code))]
    pub(crate) fn scan_keys(
        &self,
        resource_type: &str,
        f: &mut dyn FnMut(u64, &str, &str, &str) -> Result<()>,
    ) -> Result<()> {
        let path = self.data_path(resource_type);
        if !path.exists() {
            return Ok(());
        }
        let file = File::open(&path).map_err(Error::io("reading a staging file", &path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (mut line, mut head) = (String::new(), String::new());
        let mut n = 0u64;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(Error::io("reading a staging file", &path))? == 0 {
                return Ok(());
            }
            let h = read_head(line.trim_end_matches('\n'), &mut head)
                .map_err(|e| Error::CorruptState { path: path.clone(), detail: e.to_string() })?;
            f(n, &h.fhir_version, &h.id, &h.content_hash)?;
            n += 1;
        }
    }

    fn data_path(&self, resource_type: &str) -> PathBuf {
        self.dir.join(format!("{resource_type}.{DATA_EXT}"))
    }
}

/// Cuts a file after its last newline (drops a line torn by a kill).
fn truncate_torn_line(path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(Error::io("checking a staging file", path))?;
    let (mut pos, mut keep) = (0u64, 0u64);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut chunk).map_err(Error::io("checking a staging file", path))?;
        if n == 0 {
            break;
        }
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            keep = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
    if keep < pos {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(Error::io("truncating a staging file", path))?;
        f.set_len(keep).map_err(Error::io("truncating a staging file", path))?;
        tracing::warn!(path = %path.display(), dropped_bytes = pos - keep, "Dropped a torn staging line.");
    }
    Ok(())
}
