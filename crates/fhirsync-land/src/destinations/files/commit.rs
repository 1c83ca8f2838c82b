//! The commit of a file destination: build the new snapshot, then switch to it.
//!
//! Each resource type's file is either kept from the previous snapshot (hard-linked) or written
//! anew:
//!
//! - **kept** when staging holds no new or changed row of the type (only seen lines), no row is
//!   deleted, and the rows re-read are exactly those the previous snapshot marks as seen by its
//!   run. The file then holds what a rewrite would write, except for `last_seen_run`: a rewrite
//!   would set this run on the re-read rows, the kept file keeps the value that marked them.
//!   `_fhirsync/files.json` names that value per type (`seen_as`): a row was seen by the
//!   snapshot's run iff its `last_seen_run` equals its type's `seen_as`; any other value is the
//!   run that last saw it.
//! - **rewritten** otherwise: the previous rows that were not re-read and may not be deleted
//!   (with the previous snapshot's run where they carried its `seen_as`), the rows re-read
//!   unchanged (from the previous file, `last_seen_run` set to this run), then the new and
//!   changed rows from staging.
//!
//! `_fhirsync/files.json` also records the layout revision and fhirsync version (files written
//! under another one are never kept), and per view the definition and column mapping its file
//! was built with.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use fhirsync_core::{ContentHash, RunScope};
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use super::index::Index;
use super::layout::{mkdirs, remove_dir, sync_dir, views_dir, write_atomic};
use super::sorted::{
    KeyIndex, Keyed, Record, Sorted, SpillSort, key_of, read_record_bytes, read_string, sort_dir,
};
use super::staging::{KeyHasher, Line, LineHead, Staging};
use super::views::{ViewBuild, ViewMode, flatten, flatten_row, view_name};
use super::{
    ActiveRun, Carry, ChangeRow, ChangeSink, FileDestination, Row, RowRef, RowSink, RunRecord, SnapshotFormat,
};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::destinations::sql::now;
use crate::run::ChangeOp;
use crate::views::{table_columns, view_signature};
use crate::{Error, Result};

/// File (inside a version's `_fhirsync/`) with the patients flagged as having left the cohort.
const EXITS_FILE: &str = "cohort_exits.json";
/// File (inside a version's `_fhirsync/`) saying which run wrote each type and view file.
pub(crate) const FILES_MANIFEST: &str = "files.json";
/// Revision of the files this code writes; bump it when their layout or columns change, so
/// that the next run rewrites the files of the previous snapshot instead of keeping them.
const FILES_REVISION: u32 = 1;

/// One flagged patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub first_flagged_run: String,
    pub last_flagged_run: String,
    pub flagged_at: String,
    pub rows_deleted: bool,
}

/// `_fhirsync/files.json`: where each file of a snapshot comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// [`FILES_REVISION`] of the code that wrote the snapshot.
    pub revision: u32,
    /// fhirsync version that wrote the snapshot.
    pub fhirsync_version: String,
    /// `parquet` or `ndjson`.
    pub format: String,
    /// Per resource type with rows.
    pub types: BTreeMap<String, TypeFile>,
    /// Per view, by its file name in the view root.
    pub views: BTreeMap<String, ViewFile>,
}

/// The file of one resource type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TypeFile {
    /// The run that wrote the file.
    pub written_by: String,
    /// The `last_seen_run` of the rows the snapshot's run saw (re-read or wrote); other rows
    /// were kept unread (their scope did not complete, or their patient left the cohort).
    pub seen_as: String,
}

/// The file of one view table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ViewFile {
    /// The view's resource type.
    pub resource_type: String,
    /// SHA-256 of the compiled view definition and column mapping the file was built with.
    pub definition: String,
    /// The run that wrote the file.
    pub written_by: String,
}

impl Manifest {
    fn new(format: &str) -> Self {
        Manifest {
            revision: FILES_REVISION,
            fhirsync_version: env!("CARGO_PKG_VERSION").to_string(),
            format: format.to_string(),
            types: BTreeMap::new(),
            views: BTreeMap::new(),
        }
    }

    /// Whether files of this manifest may be kept by this code writing `format`.
    fn reusable(&self, format: &str) -> bool {
        self.revision == FILES_REVISION
            && self.fhirsync_version == env!("CARGO_PKG_VERSION")
            && self.format == format
    }

    /// The previous file of view `name` if it was built with `definition` over `resource_type`.
    fn view(&self, name: &str, resource_type: &str, definition: &str) -> Option<&ViewFile> {
        self.views.get(name).filter(|v| v.resource_type == resource_type && v.definition == definition)
    }
}

/// Reads a snapshot's manifest; `None` if it has none (written by an earlier version).
pub(crate) fn read_manifest(version: &Path) -> Result<Option<Manifest>> {
    let path = version.join("_fhirsync").join(FILES_MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::CorruptState { path, detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading a snapshot manifest", path)(e)),
    }
}

/// SHA-256 of a compiled view (its expressions, columns, constants), of its typed table layout
/// ([`view_signature`], whose revision tag the SQL destinations rebuild by too) and of how
/// `format` writes its columns ([`SnapshotFormat::view_format`] of [`table_columns`]): a changed
/// definition or mapping rebuilds the view's file.
fn definition(format: &impl SnapshotFormat, view: &View) -> Result<String> {
    let mapping = format.view_format(&table_columns(view)?);
    let text = format!("{view:?}\u{1}{}\u{1}{mapping}", view_signature(view));
    Ok(ContentHash::of(text.as_bytes()).to_hex())
}

/// What the commit remembers about a staged line (the last one of its key wins).
#[derive(Debug, Clone, Copy)]
struct Staged {
    line: u64,
    /// A row line (new or changed resource); else a seen line.
    full: bool,
}

/// One staged line's key, in the sort that builds a [`StagedIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StagedKey {
    key: [u64; 2],
    /// The line, with [`FULL_BIT`] set for a row line.
    line: u64,
}

/// Marks a row line in [`StagedKey::line`].
const FULL_BIT: u64 = 1 << 63;

impl Ord for StagedKey {
    /// By key, the last line first (the one a [`KeyIndex`] keeps).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let line = |k: &StagedKey| std::cmp::Reverse(k.line & !FULL_BIT);
        (self.key, line(self)).cmp(&(other.key, line(other)))
    }
}

impl PartialOrd for StagedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Record for StagedKey {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; 24];
        self.put(&mut b);
        out.extend_from_slice(&b);
    }

    fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>> {
        let mut b = [0u8; 24];
        Ok(read_record_bytes(input, &mut b)?.then(|| StagedKey::get(&b)))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl Keyed for StagedKey {
    const SIZE: usize = 24;

    fn key(&self) -> [u64; 2] {
        self.key
    }

    fn put(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.key[0].to_be_bytes());
        out[8..16].copy_from_slice(&self.key[1].to_be_bytes());
        out[16..24].copy_from_slice(&self.line.to_le_bytes());
    }

    fn get(bytes: &[u8]) -> Self {
        let line = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
        StagedKey { key: key_of(bytes), line }
    }
}

fn split_key(key: u128) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

/// Memory budget of a type's staged keys (24 bytes each): beyond it they are looked up in a
/// file, one read per previous row.
const STAGED_BUDGET: usize = 8 << 20;

/// The staged lines of one resource type, by key: the last line of each key wins. The keys are
/// a [`KeyIndex`] (in memory up to [`STAGED_BUDGET`]), the winning lines a bitmap.
struct StagedIndex {
    keys: KeyIndex<StagedKey>,
    /// Bit `n`: line `n` is the last of its key.
    winners: Vec<u64>,
    /// Keys whose last line is a row line.
    full: u64,
    /// Keys whose last line is a seen line.
    seen: u64,
}

impl StagedIndex {
    /// Reads the heads of `t`'s staged lines.
    fn of(b: &Build<'_>, staging: &Staging, t: &str) -> Result<Self> {
        let mut sort = SpillSort::new(sort_dir(&b.scratch, "staged"), STAGED_BUDGET);
        let mut lines = 0u64;
        staging.scan_heads(t, &mut |line, head| {
            let (key, full) = match &head {
                LineHead::Row(h) => (b.hasher.key(h.fhir_version, h.id), FULL_BIT),
                LineHead::Seen { fhir_version, id } => (b.hasher.key(fhir_version, id), 0),
            };
            lines = line + 1;
            sort.push(StagedKey { key: split_key(key), line: line | full })
        })?;
        let mut winners = vec![0u64; lines.div_ceil(64) as usize];
        let (mut full, mut seen) = (0, 0);
        let path = b.scratch.join(format!("staged-{t}.keys"));
        let keys = KeyIndex::build(&mut sort, &path, STAGED_BUDGET, &mut |k| {
            let line = k.line & !FULL_BIT;
            winners[(line / 64) as usize] |= 1 << (line % 64);
            if k.line & FULL_BIT != 0 { full += 1 } else { seen += 1 }
        })?;
        Ok(StagedIndex { keys, winners, full, seen })
    }

    /// The winning line of `key`, if it was staged.
    fn get(&self, key: u128) -> Result<Option<Staged>> {
        let found = self.keys.find(split_key(key))?;
        Ok(found.map(|k| Staged { line: k.line & !FULL_BIT, full: k.line & FULL_BIT != 0 }))
    }

    /// Whether `line` is the last line of its key.
    fn wins(&self, line: u64) -> bool {
        self.winners.get((line / 64) as usize).is_some_and(|w| w & (1 << (line % 64)) != 0)
    }
}

/// What a staged row takes from the previous row it replaces, found in the pass over the
/// previous file and used, by staged line, in the pass over staging.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Replaced {
    /// The staged line.
    line: u64,
    /// The previous row's place in its file (of two previous rows of a key, the last wins).
    seq: u64,
    content_hash: String,
    first_seen_run: String,
}

impl Record for Replaced {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        for s in [&self.content_hash, &self.first_seen_run] {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }

    fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>> {
        let mut head = [0u8; 24];
        if !read_record_bytes(input, &mut head)? {
            return Ok(None);
        }
        let word = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (line, seq) = (word(0), word(1));
        let content_hash = read_string(input, word(2) as usize)?;
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let first_seen_run = read_string(input, u64::from_le_bytes(len) as usize)?;
        Ok(Some(Replaced { line, seq, content_hash, first_seen_run }))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.content_hash.len() + self.first_seen_run.len()
    }
}

/// Memory budget of a commit's [`SpillSort`] of replaced rows.
const REPLACED_BUDGET: usize = 8 << 20;

/// The scratch index's file (the completed scopes) inside the staging folder.
const INDEX_FILE: &str = "commit-index.sqlite";
/// The commit's scratch folder inside the staging folder: the change records until the
/// snapshot is complete, and the scratch files of view tables.
const SCRATCH_DIR: &str = "commit";
/// The change records' folder inside [`SCRATCH_DIR`].
const CHANGES_DIR: &str = "changes";

/// What becomes of a previous row that was not re-read.
struct Fate {
    /// Its patient left the cohort (flagged).
    exited: bool,
    /// It is deleted (else kept as it is).
    deletable: bool,
}

/// The run-wide inputs of building each type.
struct Build<'a> {
    run_id: &'a str,
    now: &'a str,
    compare: bool,
    scope: &'a RunScope,
    /// The completed scopes, on disk (one per patient and dataset: the memory stays flat).
    complete: Index,
    evaluate_exits: bool,
    delete_exits: bool,
    /// The previous snapshot's run and folder.
    prev_run: Option<String>,
    prev_dir: Option<PathBuf>,
    /// The previous snapshot's manifest, if its files may be kept.
    prev_manifest: Option<Manifest>,
    tmp: PathBuf,
    /// The commit's scratch folder ([`SCRATCH_DIR`]).
    scratch: PathBuf,
    hasher: KeyHasher,
}

impl Build<'_> {
    fn fate(&self, fhir_version: &str, patient_id: Option<&str>, dataset: &str) -> Result<Fate> {
        let exited = self.evaluate_exits && patient_id.is_some_and(|p| !self.scope.cohort.contains(p));
        // Its own scope completed, or a cohort-level (patient-less) scope of its dataset did
        // and the row has no patient or one in the cohort.
        let in_cohort = patient_id.is_none_or(|p| self.scope.cohort.contains(p));
        let deletable = self.complete.is_complete(fhir_version, patient_id, dataset)?
            || (in_cohort && self.complete.is_complete(fhir_version, None, dataset)?)
            || (exited && self.delete_exits);
        Ok(Fate { exited, deletable })
    }

    fn change(
        &self,
        op: ChangeOp,
        resource_type: &str,
        row: &RowRef<'_>,
        before: Option<String>,
        after: Option<String>,
    ) -> ChangeRow {
        ChangeRow {
            run_id: self.run_id.to_string(),
            changed_at: self.now.to_string(),
            operation: op,
            resource_type: resource_type.to_string(),
            fhir_version: row.fhir_version.to_string(),
            id: row.id.to_string(),
            patient_id: row.patient_id.map(str::to_string),
            before_hash: before,
            after_hash: after,
        }
    }
}

/// What the types built so far add up to.
struct Built {
    m: RunMetrics,
    /// The change records (reload-and-compare), written as they are found.
    changes: Option<Box<dyn ChangeSink>>,
    flagged: BTreeSet<String>,
    manifest: Manifest,
    kept_files: u64,
    written_files: u64,
}

/// What the heads of the previous file say about keeping it.
#[derive(Default)]
struct Plan {
    kept: u64,
    deletes: bool,
    /// Every re-read row carries the file's `seen_as` and no other row does.
    marks_match: bool,
    seen_matched: u64,
    /// The patients of kept rows who left the cohort (each once, not per row).
    flagged: BTreeSet<String>,
}

/// One resource type being rewritten: what the pass over its previous rows found, and the
/// views built with it.
struct Rewrite<'a, 'v> {
    b: &'a Build<'a>,
    t: &'a str,
    staged: &'a StagedIndex,
    /// The previous file's manifest entry.
    prev_entry: Option<&'a TypeFile>,
    builds: Vec<ViewBuild<'v>>,
    /// What the staged rows take from the previous rows they replace, by staged line.
    replaced: SpillSort<Replaced>,
    /// The keys of the previous rows deleted (sorted once they are all known).
    deleted: Vec<[u64; 2]>,
    seen_matched: u64,
    /// Previous rows read.
    read: u64,
    /// Rows written to the new file.
    rows: u64,
}

impl Rewrite<'_, '_> {
    /// Decides a row of the previous file.
    fn previous_row(&mut self, r: RowRef<'_>, out: &mut Built) -> Result<Carry> {
        self.read += 1;
        let key = self.b.hasher.key(r.fhir_version, r.id);
        match self.staged.get(key)? {
            Some(s) if !s.full => {
                self.seen_matched += 1;
                out.m.staged += 1;
                if self.b.compare {
                    out.m.unchanged += 1;
                }
                flatten(&mut self.builds, r.fhir_version, r.id, r.resource, false)?;
                Ok(Carry::LastSeen(self.b.run_id.to_string()))
            }
            Some(s) => {
                self.replaced.push(Replaced {
                    line: s.line,
                    seq: self.read,
                    content_hash: r.content_hash.to_string(),
                    first_seen_run: r.first_seen_run.to_string(),
                })?;
                Ok(Carry::Drop)
            }
            None => self.unread_row(key, r, out),
        }
    }

    /// Decides a previous row that was not re-read: kept as it is, or deleted.
    fn unread_row(&mut self, key: u128, r: RowRef<'_>, out: &mut Built) -> Result<Carry> {
        let fate = self.b.fate(r.fhir_version, r.patient_id, r.dataset)?;
        if fate.exited
            && let Some(p) = r.patient_id
        {
            out.flagged.insert(p.to_string());
        }
        if fate.deletable {
            out.m.deleted += 1;
            self.deleted.push(split_key(key));
            if let Some(changes) = &mut out.changes {
                changes.write(self.b.change(
                    ChangeOp::Delete,
                    self.t,
                    &r,
                    Some(r.content_hash.to_string()),
                    None,
                ))?;
            }
            return Ok(Carry::Drop);
        }
        out.m.kept += 1;
        flatten(&mut self.builds, r.fhir_version, r.id, r.resource, false)?;
        // Marked as seen by the previous snapshot's run: name that run.
        Ok(match (self.prev_entry, &self.b.prev_run) {
            (Some(entry), Some(prev)) if r.last_seen_run == entry.seen_as => Carry::LastSeen(prev.clone()),
            _ => Carry::Keep,
        })
    }

    /// Whether the previous view rows of the resource `(fhir_version, id)` are carried: its
    /// previous row was neither replaced (its staged line is a row line) nor deleted.
    fn keeps(&self, fhir_version: &str, id: &str) -> Result<bool> {
        let key = self.b.hasher.key(fhir_version, id);
        let replaced = self.staged.get(key)?.is_some_and(|s| s.full);
        Ok(!replaced && self.deleted.binary_search(&split_key(key)).is_err())
    }

    /// The row a staged line adds to the new file: `None` for a seen line or a superseded copy.
    /// `replaced` holds what the rows replaced by lines from `line` on left.
    fn staged_row(
        &mut self,
        line: u64,
        staged: Line,
        replaced: &mut Sorted<Replaced>,
        out: &mut Built,
    ) -> Result<Option<Row>> {
        let Line::Row(mut row) = staged else { return Ok(None) };
        if !self.staged.wins(line) {
            return Ok(None);
        }
        out.m.staged += 1;
        let mut prev = None;
        while replaced.peek().is_some_and(|r| r.line <= line) {
            prev = replaced.pop()?.filter(|r| r.line == line);
        }
        let op = match prev {
            None => {
                out.m.inserted += 1;
                Some((ChangeOp::Insert, None))
            }
            Some(Replaced { content_hash: old_hash, first_seen_run, .. }) => {
                row.first_seen_run = first_seen_run;
                if !self.b.compare {
                    None
                } else if old_hash != row.content_hash {
                    out.m.updated += 1;
                    Some((ChangeOp::Update, Some(old_hash)))
                } else {
                    out.m.unchanged += 1;
                    None
                }
            }
        };
        if let (Some(changes), Some((op, before))) = (&mut out.changes, op) {
            let after = Some(row.content_hash.clone());
            changes.write(self.b.change(op, self.t, &RowRef::of(&row), before, after))?;
        }
        flatten_row(&mut self.builds, &row, true)?;
        self.rows += 1;
        Ok(Some(row))
    }
}

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes the new snapshot and switches readers to it.
    ///
    /// Memory stays flat whatever the volume: rows stream from the staging files and the
    /// previous snapshot into the new one, the completed scopes looked up per row are in an
    /// on-disk [`Index`], and change records and view rows go to their files as they are made
    /// (a Parquet view with decimal columns through a scratch file, typed once every value is
    /// seen).
    pub(super) fn apply(
        &mut self,
        run: &ActiveRun,
        staging: &Staging,
        scope: &RunScope,
        views: &[View],
        report: &serde_json::Value,
    ) -> Result<RunMetrics> {
        let now = now();
        let old_current = self.layout.current_version()?;
        let prev = if run.method != Method::FullLoad { old_current.clone() } else { None };
        check_base(staging, prev.as_deref())?;
        let b = self.prepare(run, staging, scope, prev, &now)?;
        let mut out = self.start_built(run, &b)?;
        let mut types: BTreeSet<String> = staging.types()?.into_iter().collect();
        if let Some(dir) = &b.prev_dir {
            types.extend(self.format.types_in(dir)?);
        }
        for t in &types {
            self.build_type(&b, t, staging, views, &mut out)?;
        }
        self.build_views_without_rows(&b, views, &types, &mut out)?;
        let (m, record) = self.finish_snapshot(&b, run, scope, report, out)?;
        self.publish(run, &b.tmp, record, staging, old_current.as_deref())?;
        Ok(m)
    }

    /// The run-wide inputs of the commit: the completed scopes indexed, the previous snapshot
    /// (`prev`, when carried) and its manifest, and empty temporary and scratch folders.
    fn prepare<'a>(
        &self,
        run: &'a ActiveRun,
        staging: &Staging,
        scope: &'a RunScope,
        prev: Option<String>,
        now: &'a str,
    ) -> Result<Build<'a>> {
        let carry = run.method != Method::FullLoad;
        let prev_dir = prev.as_ref().map(|v| self.layout.version(v));
        let prev_manifest = match &prev_dir {
            Some(dir) => read_manifest(dir)?.filter(|m| m.reusable(self.format.kind())),
            None => None,
        };
        let complete = Index::create(&staging.dir().join(INDEX_FILE))?;
        let add = |s: &fhirsync_core::ScopeKey| {
            complete.add_complete(s.fhir_version.as_str(), s.patient_id.as_deref(), &s.dataset.to_string())
        };
        staging.for_each_completed(&mut |s| add(&s))?;
        for s in &scope.complete {
            add(s)?;
        }
        if carry && scope.cohort.is_empty() {
            tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
        }
        let tmp = self.layout.versions().join(format!(".{}.tmp", run.id));
        remove_dir(&tmp)?;
        mkdirs(&tmp.join("_fhirsync"))?;
        let scratch = staging.dir().join(SCRATCH_DIR);
        remove_dir(&scratch)?;
        mkdirs(&scratch)?;
        Ok(Build {
            run_id: &run.id,
            now,
            compare: run.method == Method::ReloadAndCompare,
            scope,
            complete,
            evaluate_exits: carry && !scope.cohort.is_empty(),
            delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
            prev_run: prev,
            prev_dir,
            prev_manifest,
            tmp,
            scratch,
            hasher: KeyHasher::default(),
        })
    }

    /// Nothing built yet; reload-and-compare starts its change records.
    fn start_built(&self, run: &ActiveRun, b: &Build<'_>) -> Result<Built> {
        let changes = if b.compare {
            let dir = b.scratch.join(CHANGES_DIR);
            mkdirs(&dir)?;
            Some(self.format.changes_writer(&dir)?)
        } else {
            None
        };
        Ok(Built {
            m: RunMetrics {
                run_id: run.id.clone(),
                method: run.method.as_str().into(),
                ..Default::default()
            },
            changes,
            flagged: BTreeSet::new(),
            manifest: Manifest::new(self.format.kind()),
            kept_files: 0,
            written_files: 0,
        })
    }

    /// Keeps or builds the views over types without rows, here or before.
    fn build_views_without_rows(
        &self,
        b: &Build<'_>,
        views: &[View],
        types: &BTreeSet<String>,
        out: &mut Built,
    ) -> Result<()> {
        for view in views.iter().filter(|v| !types.contains(v.resource())) {
            let name = view_name(view)?;
            let def = definition(&self.format, view)?;
            match self.kept_view(b, &name, view, &def)? {
                Some(entry) => {
                    out.manifest.views.insert(name, entry);
                    out.kept_files += 1;
                }
                None => {
                    let build = self.view_build(view, ViewMode::Full, &b.tmp, &b.scratch)?;
                    self.complete_views(b, vec![build], out)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the snapshot's metadata (cohort exits, manifest, run record) and puts the change
    /// records in place; returns the run's metrics and record.
    fn finish_snapshot(
        &self,
        b: &Build<'_>,
        run: &ActiveRun,
        scope: &RunScope,
        report: &serde_json::Value,
        out: Built,
    ) -> Result<(RunMetrics, RunRecord)> {
        let Built { mut m, changes, flagged, manifest, kept_files, written_files } = out;
        let tmp = &b.tmp;
        m.cohort_exits = flagged.len() as u64;
        let exits = self.next_exits(
            b.prev_dir.as_deref(),
            scope,
            b.evaluate_exits,
            &flagged,
            &run.id,
            b.now,
            b.delete_exits,
        )?;
        let exits_json = serde_json::to_vec_pretty(&exits)
            .map_err(|source| Error::Json { action: "encoding cohort exits", source })?;
        write_atomic(&tmp.join("_fhirsync").join(EXITS_FILE), &exits_json)?;
        let manifest_json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| Error::Json { action: "encoding the snapshot manifest", source })?;
        write_atomic(&tmp.join("_fhirsync").join(FILES_MANIFEST), &manifest_json)?;
        if let Some(changes) = changes {
            changes.finish()?;
            self.place_changes(b, &run.id)?;
        }
        tracing::info!(
            run_id = %run.id,
            kept_files,
            written_files,
            "Snapshot built: files of unchanged types and views kept, the others written."
        );
        let record = RunRecord::committed(run.method, run.started_at, scope, m.clone(), report.clone());
        let record_json = serde_json::to_vec_pretty(&record)
            .map_err(|source| Error::Json { action: "encoding the run record", source })?;
        write_atomic(&tmp.join("_fhirsync").join("run.json"), &record_json)?;
        sync_dir(tmp);
        Ok((m, record))
    }

    /// Moves the finished change records from the scratch folder to `changes/run_id=<run>/`.
    fn place_changes(&self, b: &Build<'_>, run_id: &str) -> Result<()> {
        let dir = self.layout.changes(run_id);
        remove_dir(&dir)?;
        let parent = dir.parent().unwrap_or(self.layout.root());
        mkdirs(parent)?;
        fs::rename(b.scratch.join(CHANGES_DIR), &dir).map_err(Error::io("placing change records", &dir))?;
        sync_dir(parent);
        Ok(())
    }

    /// Renames the finished folder `tmp` into place and switches readers to it (the commit
    /// point), then records the run and removes its staging and the old versions.
    fn publish(
        &self,
        run: &ActiveRun,
        tmp: &Path,
        record: RunRecord,
        staging: &Staging,
        old_current: Option<&str>,
    ) -> Result<()> {
        let final_dir = self.layout.version(&run.id);
        remove_dir(&final_dir)?;
        fs::rename(tmp, &final_dir).map_err(Error::io("publishing a snapshot", &final_dir))?;
        sync_dir(&self.layout.versions());
        self.layout.switch_to(&run.id)?;

        self.book().commit(record)?;
        remove_dir(staging.dir())?;
        self.prune_versions(&run.id, old_current)
    }

    /// Builds one resource type's file (kept or rewritten) and the files of its views.
    fn build_type(
        &self,
        b: &Build<'_>,
        t: &str,
        staging: &Staging,
        views: &[View],
        out: &mut Built,
    ) -> Result<()> {
        let staged = StagedIndex::of(b, staging, t)?;
        let old_path = b.prev_dir.as_ref().map(|d| self.format.type_path(d, t)).filter(|p| p.exists());
        let prev_entry = b.prev_manifest.as_ref().and_then(|m| m.types.get(t));
        let type_views: Vec<&View> = views.iter().filter(|v| v.resource() == t).collect();
        if staged.full == 0
            && let (Some(old), Some(entry)) = (&old_path, prev_entry)
            && self.keep_type(b, t, staging, old, entry, &staged, &type_views, out)?
        {
            return Ok(());
        }
        let rw = Rewrite {
            b,
            t,
            staged: &staged,
            prev_entry,
            builds: self.rewrite_builds(b, t, &type_views, old_path.is_some())?,
            replaced: SpillSort::new(sort_dir(&b.scratch, "replaced"), REPLACED_BUDGET),
            deleted: Vec::new(),
            seen_matched: 0,
            read: 0,
            rows: 0,
        };
        self.rewrite_type(rw, staging, old_path.as_deref(), out)
    }

    /// Keeps the previous file `old` of `t` (hard-linked) if no row of it goes and its rows
    /// were re-read as it marks them; keeps or builds the views over it. `false`: not kept.
    #[allow(clippy::too_many_arguments)]
    fn keep_type(
        &self,
        b: &Build<'_>,
        t: &str,
        staging: &Staging,
        old: &Path,
        entry: &TypeFile,
        staged: &StagedIndex,
        type_views: &[&View],
        out: &mut Built,
    ) -> Result<bool> {
        let plan = self.plan_keep(b, old, entry, staged)?;
        check_seen(staging, t, plan.seen_matched, staged.seen)?;
        if plan.deletes || !plan.marks_match {
            return Ok(false);
        }
        let path = self.format.type_path(&b.tmp, t);
        link_tree(old, &path)?;
        out.kept_files += 1;
        out.m.staged += staged.seen;
        if b.compare {
            out.m.unchanged += staged.seen;
        }
        out.m.kept += plan.kept;
        out.flagged.extend(plan.flagged);
        out.manifest.types.insert(t.to_string(), entry.clone());
        let mut fresh = Vec::new();
        for view in type_views {
            let name = view_name(view)?;
            match self.kept_view(b, &name, view, &definition(&self.format, view)?)? {
                Some(entry) => {
                    out.manifest.views.insert(name, entry);
                    out.kept_files += 1;
                }
                None => fresh.push(self.view_build(view, ViewMode::Full, &b.tmp, &b.scratch)?),
            }
        }
        if !fresh.is_empty() {
            self.flatten_file(Some(&path), &mut fresh)?;
            self.complete_views(b, fresh, out)?;
        }
        Ok(true)
    }

    /// The builds of the views over a rewritten type: carried where the previous file matches
    /// their definition (and the type had a file), else in full.
    fn rewrite_builds<'v>(
        &self,
        b: &Build<'_>,
        t: &str,
        type_views: &[&'v View],
        had_file: bool,
    ) -> Result<Vec<ViewBuild<'v>>> {
        let mut builds = Vec::with_capacity(type_views.len());
        for view in type_views {
            let name = view_name(view)?;
            let def = definition(&self.format, view)?;
            let old_view = b.prev_manifest.as_ref().zip(b.prev_dir.as_ref()).and_then(|(m, dir)| {
                m.view(&name, t, &def).map(|_| self.format.view_path(dir, &name)).filter(|p| p.exists())
            });
            let mode = match old_view {
                Some(old) if had_file => ViewMode::Carry { old },
                _ => ViewMode::Full,
            };
            builds.push(self.view_build(view, mode, &b.tmp, &b.scratch)?);
        }
        Ok(builds)
    }

    /// Rewrites the file of a type: the previous rows (from `old`) as [`Rewrite::previous_row`]
    /// decides, then the new and changed rows in staging order, skipping superseded copies.
    fn rewrite_type(
        &self,
        mut rw: Rewrite<'_, '_>,
        staging: &Staging,
        old: Option<&Path>,
        out: &mut Built,
    ) -> Result<()> {
        let (b, t) = (rw.b, rw.t);
        let path = self.format.type_path(&b.tmp, t);
        remove_path(&path)?;
        let mut sink: Option<Box<dyn RowSink>> = None;
        if let Some(old) = old {
            let (carried, n) = self.format.carry_rows(old, &path, &mut |r| rw.previous_row(r, out))?;
            sink = Some(carried);
            rw.rows = n;
        }
        check_seen(staging, t, rw.seen_matched, rw.staged.seen)?;
        // The previous rows are decided: the carried views take theirs.
        rw.deleted.sort_unstable();
        let mut builds = std::mem::take(&mut rw.builds);
        self.open_carried(&mut builds, &b.tmp, &mut |fhir_version, id| rw.keeps(fhir_version, id))?;
        rw.builds = builds;
        let mut replaced = rw.replaced.sorted()?;
        staging.scan(t, &mut |line, staged| {
            let Some(row) = rw.staged_row(line, staged, &mut replaced, out)? else { return Ok(()) };
            let sink = match &mut sink {
                Some(sink) => sink,
                None => sink.insert(self.format.writer(&path)?),
            };
            sink.write(row)
        })?;
        if let Some(sink) = sink {
            sink.finish()?;
        }
        if rw.rows == 0 {
            // Every row went: the type has no file, as if it never had rows.
            remove_path(&path)?;
        } else {
            sync_parent(&path);
            out.written_files += 1;
            out.manifest.types.insert(
                t.to_string(),
                TypeFile { written_by: b.run_id.to_string(), seen_as: b.run_id.to_string() },
            );
        }
        self.complete_views(b, rw.builds, out)
    }

    /// Reads the heads of the previous file of `t` to decide whether it can be kept.
    fn plan_keep(&self, b: &Build<'_>, old: &Path, entry: &TypeFile, staged: &StagedIndex) -> Result<Plan> {
        let mut plan = Plan { marks_match: true, ..Plan::default() };
        self.format.read_heads(old, &mut |h| {
            let marked = h.last_seen_run == entry.seen_as;
            if staged.get(b.hasher.key(h.fhir_version, h.id))?.is_some() {
                plan.seen_matched += 1;
                plan.marks_match &= marked;
                return Ok(());
            }
            plan.marks_match &= !marked;
            let fate = b.fate(h.fhir_version, h.patient_id, h.dataset)?;
            if fate.exited
                && let Some(p) = h.patient_id
            {
                plan.flagged.insert(p.to_string());
            }
            if fate.deletable {
                plan.deletes = true;
            } else {
                plan.kept += 1;
            }
            Ok(())
        })?;
        Ok(plan)
    }

    /// Keeps the previous file of view `name` if it was built with `def` over a type whose
    /// file is kept (or that has no rows, then and now); returns its manifest entry.
    fn kept_view(&self, b: &Build<'_>, name: &str, view: &View, def: &str) -> Result<Option<ViewFile>> {
        let (Some(manifest), Some(dir)) = (&b.prev_manifest, &b.prev_dir) else { return Ok(None) };
        let Some(entry) = manifest.view(name, view.resource(), def) else { return Ok(None) };
        let old = self.format.view_path(dir, name);
        if !old.exists() {
            return Ok(None);
        }
        link_tree(&old, &self.format.view_path(&b.tmp, name))?;
        Ok(Some(entry.clone()))
    }

    /// Completes the built views in the new snapshot and registers them.
    fn complete_views(&self, b: &Build<'_>, builds: Vec<ViewBuild<'_>>, out: &mut Built) -> Result<()> {
        for build in &builds {
            out.written_files += 1;
            out.manifest.views.insert(
                build.name.clone(),
                ViewFile {
                    resource_type: build.view.resource().to_string(),
                    definition: definition(&self.format, build.view)?,
                    written_by: b.run_id.to_string(),
                },
            );
        }
        let paths: Vec<PathBuf> = builds.iter().map(|v| self.format.view_path(&b.tmp, &v.name)).collect();
        out.m.view_rows += self.finish_views(&b.tmp, builds, &b.scratch)?;
        for p in &paths {
            sync_parent(p);
        }
        sync_dir(&views_dir(&b.tmp));
        Ok(())
    }

    /// The cohort-exit list of the new snapshot: patients found outside the cohort in this run,
    /// plus earlier flags of patients still outside it.
    #[allow(clippy::too_many_arguments)]
    fn next_exits(
        &self,
        prev_dir: Option<&std::path::Path>,
        scope: &RunScope,
        evaluate: bool,
        flagged: &BTreeSet<String>,
        run_id: &str,
        now: &str,
        rows_deleted: bool,
    ) -> Result<BTreeMap<String, ExitRecord>> {
        let mut exits: BTreeMap<String, ExitRecord> = match prev_dir {
            Some(dir) => read_exits(&dir.join("_fhirsync").join(EXITS_FILE))?,
            None => BTreeMap::new(),
        };
        if !evaluate {
            return Ok(exits);
        }
        exits.retain(|p, _| !scope.cohort.contains(p));
        for p in flagged {
            let first = exits.get(p).map_or_else(|| run_id.to_string(), |e| e.first_flagged_run.clone());
            exits.insert(
                p.clone(),
                ExitRecord {
                    first_flagged_run: first,
                    last_flagged_run: run_id.into(),
                    flagged_at: now.into(),
                    rows_deleted,
                },
            );
        }
        Ok(exits)
    }

    /// Keeps the new version and the one before it (a reader may still be reading it), and
    /// removes the half-built folders of runs killed while committing.
    fn prune_versions(&self, current: &str, prev: Option<&str>) -> Result<()> {
        let dir = self.layout.versions();
        for entry in fs::read_dir(&dir).map_err(Error::io("listing versions", &dir))? {
            let entry = entry.map_err(Error::io("listing versions", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let half_built = name.starts_with('.') && name.ends_with(".tmp");
            if half_built || (name != current && Some(name.as_str()) != prev && !name.starts_with('.')) {
                remove_dir(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Fails if staging was staged against another snapshot than `prev`, the one carried.
fn check_base(staging: &Staging, prev: Option<&str>) -> Result<()> {
    match staging.base() {
        Some(base) if Some(base) != prev => Err(Error::CorruptState {
            path: staging.dir().to_path_buf(),
            detail: format!(
                "staged against snapshot {base}, but the current one is {}; run with resume = false",
                prev.unwrap_or("none")
            ),
        }),
        _ => Ok(()),
    }
}

/// Fails if some seen lines of `t` found no row in the base snapshot (they would be lost).
fn check_seen(staging: &Staging, t: &str, matched: u64, seen_lines: u64) -> Result<()> {
    if matched == seen_lines {
        return Ok(());
    }
    Err(Error::CorruptState {
        path: staging.dir().to_path_buf(),
        detail: format!(
            "{} staged {t} resources are marked unchanged but the base snapshot lacks them; run with resume = false",
            seen_lines - matched
        ),
    })
}

/// Puts `from` (a file, or a folder of files) at `to` as hard links, or copies where the file
/// system has none. The files are never written again: every run writes new files.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    remove_path(to)?;
    if from.is_dir() {
        mkdirs(to)?;
        for entry in fs::read_dir(from).map_err(Error::io("listing a kept folder", from))? {
            let entry = entry.map_err(Error::io("listing a kept folder", from))?;
            link_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        sync_dir(to);
    } else {
        if let Some(dir) = to.parent() {
            mkdirs(dir)?;
        }
        if fs::hard_link(from, to).is_err() {
            fs::copy(from, to).map_err(Error::io("copying a kept file", to))?;
            fs::File::open(to).and_then(|f| f.sync_all()).map_err(Error::io("syncing a kept file", to))?;
        }
        sync_parent(to);
    }
    Ok(())
}

/// Removes a file or folder if present, so that a new file never writes through a hard link.
pub(super) fn remove_path(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => remove_dir(path),
        Ok(_) => fs::remove_file(path).map_err(Error::io("removing a file", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("checking a file", path)(e)),
    }
}

/// fsyncs the folder holding `path`.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
}

/// Reads a cohort-exit file (empty if missing).
pub(crate) fn read_exits(path: &std::path::Path) -> Result<BTreeMap<String, ExitRecord>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io("reading cohort exits", path)(e)),
    }
}
