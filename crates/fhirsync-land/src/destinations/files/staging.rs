//! Durable staging of a file destination's unfinished run.
//!
//! Resources are appended to `<ResourceType>.ndjson` (one [`Row`] line each); completed scopes
//! are buffered and appended to `scopes.ndjson` only at a checkpoint, after the data files were
//! flushed and fsynced, so a recorded scope always has its rows on disk. On resume, a torn last
//! line (process killed mid-write) is cut off; rows re-sent by the resumed extraction simply
//! appear twice and the later copy wins.
//!
//! Reload and reload-and-compare stage against the current snapshot (the run's base, named in
//! `base`): a resource whose landed row has the same content hash, source, dataset and patient
//! is staged as a key-only "seen" line, `["<fhir_version>","<id>"]` (row lines are objects),
//! and the commit takes its row from the base snapshot. An unchanged run so stages some 30
//! bytes per resource, not the resource. Rows are matched by a 128-bit hash of their key and
//! the first 128 bits of their content hash.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fhirsync_core::{RawResource, ScopeKey};

use super::layout::{mkdirs, sync_dir, write_atomic};
use super::row::{Head, Row, read_line, with_head, write_line};
use super::sorted::{KeyIndex, Keyed, Record, SpillSort, key_of, read_record_bytes};
use crate::destinations::sql::schema::type_table;
use crate::{Error, Result};

const SCOPES: &str = "scopes.ndjson";
/// Write buffer of each open staging file (one per staged type, or per `Staging::append` stem).
const STAGING_BUFFER: usize = 64 << 10;
/// Staging files open for writing at once (see `Staging::append`).
const MAX_OPEN_WRITERS: usize = 128;
const DATA_EXT: &str = "ndjson";
/// The snapshot the seen lines refer to (its run id, or empty), one line.
const BASE: &str = "base";
/// The folder of the [`Known`] files inside the staging folder.
const KNOWN_DIR: &str = "known";
/// How a seen line starts (a row line is an object).
const SEEN_PREFIX: &str = "[";

/// A 128-bit key of `(fhir_version, id)` (two independent SipHash keys of this process; a
/// collision among a million keys has a chance near 10^-27).
#[derive(Clone, Default)]
pub(crate) struct KeyHasher(RandomState, RandomState);

impl KeyHasher {
    pub(crate) fn key(&self, fhir_version: &str, id: &str) -> u128 {
        let k = (fhir_version, id);
        (u128::from(self.0.hash_one(k)) << 64) | u128::from(self.1.hash_one(k))
    }

    /// Fingerprint of the columns besides the content that a rewrite would take from staging.
    fn meta(&self, source: &str, dataset: &str, patient_id: Option<&str>) -> u64 {
        self.0.hash_one((source, dataset, patient_id))
    }
}

/// What staging knows of a landed row of the base snapshot: one record of a [`Known`] index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KnownRow {
    key: [u64; 2],
    /// The row's place in the base file (of two rows of a key, the last wins; not stored).
    seq: u64,
    /// First 16 bytes of the content hash.
    hash: [u8; 16],
    meta: u64,
}

/// Memory budget of the sort that indexes one type's known rows.
const KNOWN_SORT_BUDGET: usize = 8 << 20;
/// Memory of the known rows of all types together; the types loaded beyond it are looked up
/// in files.
const KNOWN_MEMORY: usize = 8 << 20;

impl Ord for KnownRow {
    /// By key, the last row first (the one a [`KeyIndex`] keeps).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, std::cmp::Reverse(self.seq)).cmp(&(other.key, std::cmp::Reverse(other.seq)))
    }
}

impl PartialOrd for KnownRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Record for KnownRow {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; Self::SIZE];
        self.put(&mut b);
        out.extend_from_slice(&b);
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>> {
        let mut b = [0u8; Self::SIZE + 8];
        if !read_record_bytes(input, &mut b)? {
            return Ok(None);
        }
        let seq = u64::from_le_bytes(b[Self::SIZE..].try_into().unwrap_or_default());
        Ok(Some(KnownRow { seq, ..KnownRow::get(&b) }))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl Keyed for KnownRow {
    const SIZE: usize = 40;

    fn key(&self) -> [u64; 2] {
        self.key
    }

    fn put(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.key[0].to_be_bytes());
        out[8..16].copy_from_slice(&self.key[1].to_be_bytes());
        out[16..32].copy_from_slice(&self.hash);
        out[32..40].copy_from_slice(&self.meta.to_le_bytes());
    }

    fn get(bytes: &[u8]) -> Self {
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&bytes[16..32]);
        let meta = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default());
        KnownRow { key: key_of(bytes), seq: 0, hash, meta }
    }
}

/// The rows of the base snapshot, per resource type, loaded when the type is first staged.
///
/// Each type's rows are a [`KeyIndex`]: in memory while all types together take at most
/// [`KNOWN_MEMORY`], else a file in the staging folder's `known/`, sorted by key, of which
/// memory holds one key per block (a lookup reads one). The files are rebuilt by every process
/// that stages the run.
pub(crate) struct Known {
    dir: PathBuf,
    hasher: KeyHasher,
    types: HashMap<String, KeyIndex<KnownRow>>,
    /// Of [`KNOWN_MEMORY`], what the types in memory leave.
    memory_left: usize,
}

impl Known {
    /// Nothing loaded; the files go to the folder `dir` (emptied first).
    fn new(dir: PathBuf) -> Result<Self> {
        super::layout::remove_dir(&dir)?;
        mkdirs(&dir)?;
        Ok(Known { dir, hasher: KeyHasher::default(), types: HashMap::new(), memory_left: KNOWN_MEMORY })
    }

    /// Whether `resource_type` is loaded.
    pub(crate) fn has(&self, resource_type: &str) -> bool {
        self.types.contains_key(resource_type)
    }

    /// Loads a type from `read`, which streams the heads of its rows (`None`: the base has no
    /// rows of the type).
    pub(crate) fn load<R>(&mut self, resource_type: &str, read: Option<R>) -> Result<()>
    where
        R: FnOnce(&mut dyn FnMut(Head<'_>) -> Result<()>) -> Result<()>,
    {
        let mut sort = SpillSort::new(self.dir.join(format!("{resource_type}.sort")), KNOWN_SORT_BUDGET);
        if let Some(read) = read {
            let (hasher, mut seq) = (&self.hasher, 0u64);
            read(&mut |h: Head<'_>| {
                seq += 1;
                let Some(hash) = hash_prefix(h.content_hash) else { return Ok(()) };
                let meta = hasher.meta(h.source, h.dataset, h.patient_id);
                let key = hasher.key(h.fhir_version, h.id);
                sort.push(KnownRow { key: [(key >> 64) as u64, key as u64], seq, hash, meta })
            })?;
        }
        let path = self.dir.join(format!("{resource_type}.known"));
        let rows = KeyIndex::build(&mut sort, &path, self.memory_left, &mut |_| {})?;
        if let KeyIndex::Memory(records) = &rows {
            self.memory_left -= records.len() * std::mem::size_of::<KnownRow>();
        }
        self.types.insert(resource_type.to_string(), rows);
        Ok(())
    }

    /// Whether the base holds `r` exactly (content, source, dataset, patient).
    fn unchanged(&self, r: &RawResource) -> Result<bool> {
        let Some(rows) = self.types.get(&r.resource_type) else { return Ok(false) };
        let key = self.hasher.key(r.fhir_version.as_str(), &r.id);
        let Some(known) = rows.find([(key >> 64) as u64, key as u64])? else { return Ok(false) };
        Ok(known.hash[..] == r.hash.0[..16]
            && known.meta == self.hasher.meta(&r.source, &r.dataset.to_string(), r.patient_id.as_deref()))
    }
}

/// The first 16 bytes of a hex content hash.
pub(crate) fn hash_prefix(hex: &str) -> Option<[u8; 16]> {
    let digits = hex.as_bytes().get(..32)?;
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let nibble = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(nibble(pair[0])? * 16 + nibble(pair[1])?).ok()?;
    }
    Some(out)
}

/// One staged line (built and consumed one at a time, so the size gap between variants costs
/// nothing).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Line {
    /// A new or changed resource.
    Row(Row),
    /// A resource the base snapshot holds unchanged (its row comes from there).
    Seen,
}

/// One staged line without the resource.
pub(crate) enum LineHead<'a> {
    Row(Head<'a>),
    Seen { fhir_version: &'a str, id: &'a str },
}

/// The staging folder of one run.
pub(crate) struct Staging {
    dir: PathBuf,
    run_id: String,
    /// The snapshot seen lines refer to.
    base: Option<String>,
    writers: BTreeMap<String, BufWriter<File>>,
    /// Files whose writer was closed since the last checkpoint (synced by it).
    unsynced: BTreeSet<String>,
    /// Completed scopes not yet in `scopes.ndjson` (held until the next checkpoint only).
    pending_scopes: Vec<ScopeKey>,
    buf: Vec<u8>,
}

impl Staging {
    /// Starts an empty staging folder that stages against snapshot `base`.
    pub(crate) fn create(dir: PathBuf, run_id: &str, base: Option<&str>) -> Result<Self> {
        super::layout::remove_dir(&dir)?;
        mkdirs(&dir)?;
        write_atomic(&dir.join(BASE), format!("{}\n", base.unwrap_or("")).as_bytes())?;
        Ok(Staging {
            dir,
            run_id: run_id.to_string(),
            base: base.map(str::to_string),
            writers: BTreeMap::new(),
            unsynced: BTreeSet::new(),
            pending_scopes: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Reopens a killed run's folder; returns it and the scopes it completed.
    pub(crate) fn resume(dir: PathBuf, run_id: &str) -> Result<(Self, BTreeSet<ScopeKey>)> {
        mkdirs(&dir)?;
        for entry in fs::read_dir(&dir).map_err(Error::io("listing staging", &dir))? {
            let path = entry.map_err(Error::io("listing staging", &dir))?.path();
            // The commit's scratch folder is rebuilt by every commit attempt.
            if path.is_file() {
                truncate_torn_line(&path)?;
            }
        }
        let base_path = dir.join(BASE);
        let base = match fs::read_to_string(&base_path) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            // Staged by an earlier version: no seen lines.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("reading the staging base", base_path)(e)),
        };
        let staging = Staging {
            dir,
            run_id: run_id.to_string(),
            base,
            writers: BTreeMap::new(),
            unsynced: BTreeSet::new(),
            pending_scopes: Vec::new(),
            buf: Vec::new(),
        };
        let mut scopes = BTreeSet::new();
        staging.for_each_completed(&mut |scope| {
            scopes.insert(scope);
            Ok(())
        })?;
        Ok((staging, scopes))
    }

    /// The snapshot the seen lines refer to.
    pub(crate) fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// An empty [`Known`] of the base snapshot's rows, if staging stages against one.
    pub(crate) fn known(&self) -> Result<Option<Known>> {
        self.base.as_ref().map(|_| Known::new(self.dir.join(KNOWN_DIR))).transpose()
    }

    /// Appends resources (buffered until [`Staging::checkpoint`]); those `known` holds
    /// unchanged as seen lines.
    pub(crate) fn stage(&mut self, resources: &[RawResource], known: Option<&Known>) -> Result<()> {
        for r in resources {
            type_table(&r.resource_type)?;
            self.buf.clear();
            if let Some(k) = known
                && k.unchanged(r)?
            {
                serde_json::to_writer(&mut self.buf, &(r.fhir_version.as_str(), &r.id))
                    .map_err(|source| Error::Json { action: "encoding a seen line", source })?;
                self.buf.push(b'\n');
            } else {
                write_line(&mut self.buf, &Row::staged(r, &self.run_id))?;
            }
            let w = open_writer(&mut self.writers, &mut self.unsynced, &self.dir, &r.resource_type)?;
            w.write_all(&self.buf).map_err(Error::io("writing a staging file", &self.dir))?;
        }
        Ok(())
    }

    /// Appends one line, the concatenation of `parts` (the last ending in a newline), to the
    /// staging file `stem`, for a destination that encodes its own lines and splits a type
    /// over several files (Delta: one per type and bucket). Buffered until
    /// [`Staging::checkpoint`], as [`Staging::stage`].
    #[cfg(feature = "delta")]
    pub(crate) fn append(&mut self, stem: &str, parts: &[&[u8]]) -> Result<()> {
        let w = open_writer(&mut self.writers, &mut self.unsynced, &self.dir, stem)?;
        for part in parts {
            w.write_all(part).map_err(Error::io("writing a staging file", &self.dir))?;
        }
        Ok(())
    }

    /// Records a completed scope (persisted at the next checkpoint).
    pub(crate) fn scope_complete(&mut self, scope: &ScopeKey) {
        self.pending_scopes.push(scope.clone());
    }

    /// Calls `f` for every scope completed as of the last checkpoint (resumed and new), read
    /// from `scopes.ndjson`.
    pub(crate) fn for_each_completed(&self, f: &mut dyn FnMut(ScopeKey) -> Result<()>) -> Result<()> {
        let path = self.dir.join(SCOPES);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading staged scopes", &path)(e)),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(Error::io("reading staged scopes", &path))?;
            let scope: ScopeKey = serde_json::from_str(&line)
                .map_err(|e| Error::CorruptState { path: path.clone(), detail: e.to_string() })?;
            f(scope)?;
        }
        Ok(())
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
        for stem in std::mem::take(&mut self.unsynced) {
            if !self.writers.contains_key(&stem) {
                let path = self.data_path(&stem);
                let f = File::open(&path).map_err(Error::io("syncing a staging file", &path))?;
                f.sync_data().map_err(Error::io("syncing a staging file", &path))?;
            }
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

    /// Resource types with a staging file (the stems of `Staging::append`'s files).
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

    /// Calls `f(line_number, line)` for every staged line of `resource_type`, in staging order.
    pub(crate) fn scan(&self, resource_type: &str, f: &mut dyn FnMut(u64, Line) -> Result<()>) -> Result<()> {
        self.lines(resource_type, &mut |n, line, path| {
            let parsed =
                if line.starts_with(SEEN_PREFIX) { Ok(Line::Seen) } else { read_line(line).map(Line::Row) };
            f(
                n,
                parsed
                    .map_err(|e| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() })?,
            )
        })
    }

    /// As [`Staging::scan`], without reading the resources.
    pub(crate) fn scan_heads(
        &self,
        resource_type: &str,
        f: &mut dyn FnMut(u64, LineHead<'_>) -> Result<()>,
    ) -> Result<()> {
        self.lines(resource_type, &mut |n, line, path| {
            let corrupt = |e: serde_json::Error| Error::CorruptState {
                path: path.to_path_buf(),
                detail: e.to_string(),
            };
            match parse_seen(line) {
                Some(seen) => {
                    let SeenKey(fhir_version, id) = seen.map_err(corrupt)?;
                    f(n, LineHead::Seen { fhir_version: &fhir_version, id: &id })
                }
                None => with_head(line, |h| f(n, LineHead::Row(h))).map_err(corrupt)?,
            }
        })
    }

    /// The staging file of `stem` (a destination that reads its own `Staging::append`
    /// lines); it holds every line up to the last flush.
    #[cfg(feature = "delta")]
    pub(crate) fn file(&self, stem: &str) -> PathBuf {
        self.data_path(stem)
    }

    fn lines(&self, resource_type: &str, f: &mut dyn FnMut(u64, &str, &Path) -> Result<()>) -> Result<()> {
        let path = self.data_path(resource_type);
        if !path.exists() {
            return Ok(());
        }
        let file = File::open(&path).map_err(Error::io("reading a staging file", &path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(Error::io("reading a staging file", &path))?;
            if read == 0 {
                return Ok(());
            }
            f(n, line.trim_end_matches('\n'), &path)?;
            n += 1;
        }
    }

    fn data_path(&self, resource_type: &str) -> PathBuf {
        self.dir.join(format!("{resource_type}.{DATA_EXT}"))
    }
}

/// The open writer of staging file `stem` in `dir`, opened on first use. Past
/// [`MAX_OPEN_WRITERS`] every writer is flushed and closed first (`unsynced` lists them for
/// the next checkpoint), so many types times buckets never exhaust file descriptors.
fn open_writer<'w>(
    writers: &'w mut BTreeMap<String, BufWriter<File>>,
    unsynced: &mut BTreeSet<String>,
    dir: &Path,
    stem: &str,
) -> Result<&'w mut BufWriter<File>> {
    if !writers.contains_key(stem) {
        if writers.len() >= MAX_OPEN_WRITERS {
            for (stem, mut w) in std::mem::take(writers) {
                w.flush().map_err(Error::io("flushing a staging file", dir))?;
                unsynced.insert(stem);
            }
        }
        let path = dir.join(format!("{stem}.{DATA_EXT}"));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("opening a staging file", &path))?;
        writers.insert(stem.to_string(), BufWriter::with_capacity(STAGING_BUFFER, f));
    }
    Ok(writers.get_mut(stem).expect("inserted above"))
}

/// Parses a seen line; `None` if `line` is a row line.
fn parse_seen(line: &str) -> Option<std::result::Result<SeenKey<'_>, serde_json::Error>> {
    line.starts_with(SEEN_PREFIX).then(|| serde_json::from_str::<SeenKey<'_>>(line))
}

/// The key of a seen line, `[fhir_version, id]` (borrowed unless escaped).
#[derive(serde::Deserialize)]
struct SeenKey<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A seen line parses back to its key and is never taken for a row line (and the reverse).
    #[test]
    fn seen_lines_and_row_lines_are_told_apart() {
        let mut out = Vec::new();
        serde_json::to_writer(&mut out, &("R4", "a\"b")).unwrap();
        let line = String::from_utf8(out).unwrap();
        let SeenKey(version, id) = parse_seen(&line).unwrap().unwrap();
        assert_eq!((&*version, &*id), ("R4", "a\"b"));
        let mut row = Vec::new();
        let r = Row {
            id: "x".into(),
            patient_id: None,
            fhir_version: "R4".into(),
            source: "s".into(),
            dataset: "Patient".into(),
            content_hash: "00".into(),
            resource: "[1]".into(),
            first_seen_run: "r".into(),
            last_seen_run: "r".into(),
        };
        write_line(&mut row, &r).unwrap();
        assert!(parse_seen(std::str::from_utf8(&row).unwrap().trim_end()).is_none());
    }

    /// The hash prefix reads the first 16 bytes of a hex digest and refuses non-hex or short text.
    #[test]
    fn hash_prefix_reads_hex() {
        let hex = "00ff10a0".repeat(8);
        let p = hash_prefix(&hex).unwrap();
        assert_eq!(&p[..4], &[0x00, 0xff, 0x10, 0xa0]);
        assert!(hash_prefix("zz").is_none());
        assert!(hash_prefix(&"g".repeat(64)).is_none());
    }
}
