//! The engine shared by the file destinations (Parquet, NDJSON).
//!
//! Every committed run is a complete snapshot folder `versions/<run>/`; the commit writes the
//! new snapshot next to the old one and then switches `_fhirsync/CURRENT` (and the `current`
//! symlink) with one atomic rename, so readers never see a half-written snapshot and a run
//! killed before the switch leaves the previous one in place. See `layout.rs` for the folders
//! and `staging.rs` for the durable, resumable staging.
//!
//! The new snapshot of a resource type is built by streaming: the staged rows (deduplicated,
//! later copy wins) plus the previous snapshot's rows that were not re-read and may not be
//! deleted (their scope did not complete, or their patient left the cohort in flag mode).
//! Reload-and-compare compares content hashes while doing so and writes the change records to
//! `changes/run_id=<run>/`.
//!
//! Reload and reload-and-compare are incremental: staging compares each resource with the
//! current snapshot and stages an unchanged one as its key only (`staging.rs`). A resource type
//! with no insert, update or delete, whose rows are re-read as the current snapshot marks them,
//! keeps its file: the new snapshot hard-links it (a copy where the file system has no hard
//! links), and so are the files of the views over it (in the snapshot's view root `views/`),
//! unless a view was redefined or its column mapping changed. Rows of a
//! kept file keep their `last_seen_run`; the snapshot's `_fhirsync/files.json` says per type
//! which `last_seen_run` means "seen by this snapshot's run" (see `commit.rs`). A changed type
//! is rewritten whole (Parquet copies its unchanged rows as Arrow slices); the views over it are
//! carried: their previous rows of unchanged resources are copied, only the changed resources
//! are flattened (`views.rs`).
//!
//! Memory does not grow with the volume: view rows and change records go to their files as they
//! are made ([`ViewSink`], [`ChangeSink`]), and what a commit or staging looks up per row (the
//! staged keys, the base snapshot's rows, what replaced rows pass on) is held in memory up to a
//! budget and on disk beyond it (`sorted.rs`).

pub(crate) mod commit;
mod index;
pub(crate) mod layout;
pub(crate) mod row;
pub(crate) mod run_book;
mod sorted;
pub(crate) mod staging;
mod views;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use fhirsync_core::{RawResource, RunScope, ScopeKey};
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use crate::config::{LandOptions, Method};
use crate::destination::{Destination, RunMetrics, RunStart};
pub(crate) use crate::run::RunRecord;
use crate::run::{ChangeOp, stored_time};
use crate::views::{CellValue, TableColumn};
use crate::{Error, Result};
pub(crate) use layout::{Layout, views_dir};
use layout::{mkdirs, remove_dir};
pub(crate) use row::{Head, Row};
pub(crate) use run_book::without_scope;
use run_book::{ActiveRun, RunBook, RunSteps};
use staging::{Known, Staging};

/// One change record of reload-and-compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChangeRow {
    pub run_id: String,
    pub changed_at: String,
    pub operation: ChangeOp,
    pub resource_type: String,
    pub fhir_version: String,
    pub id: String,
    pub patient_id: Option<String>,
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
}

/// Receives the rows of one snapshot file.
pub(crate) trait RowSink {
    /// Writes one row.
    fn write(&mut self, row: Row) -> Result<()>;
    /// Completes and fsyncs the file.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A row of a type file being carried into a new one, borrowed from the reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowRef<'a> {
    pub id: &'a str,
    pub patient_id: Option<&'a str>,
    pub fhir_version: &'a str,
    pub dataset: &'a str,
    pub content_hash: &'a str,
    pub resource: &'a str,
    pub first_seen_run: &'a str,
    pub last_seen_run: &'a str,
}

impl<'a> RowRef<'a> {
    fn of(row: &'a Row) -> Self {
        RowRef {
            id: &row.id,
            patient_id: row.patient_id.as_deref(),
            fhir_version: &row.fhir_version,
            dataset: &row.dataset,
            content_hash: &row.content_hash,
            resource: &row.resource,
            first_seen_run: &row.first_seen_run,
            last_seen_run: &row.last_seen_run,
        }
    }
}

/// What becomes of a carried row.
pub(crate) enum Carry {
    /// Written as it is.
    Keep,
    /// Written with this `last_seen_run`.
    LastSeen(String),
    /// Left out.
    Drop,
}

/// How one file format stores snapshots.
pub(crate) trait SnapshotFormat: Send {
    /// `parquet` or `ndjson`.
    fn kind(&self) -> &'static str;
    /// Where a resource type's rows live inside a version folder.
    fn type_path(&self, version: &Path, resource_type: &str) -> PathBuf;
    /// Resource types present in a version folder.
    fn types_in(&self, version: &Path) -> Result<Vec<String>>;
    /// Starts writing a type file (parent folders are created).
    fn writer(&self, path: &Path) -> Result<Box<dyn RowSink>>;
    /// Streams the rows of a type file.
    fn read(&self, path: &Path, f: &mut dyn FnMut(Row) -> Result<()>) -> Result<()>;
    /// Streams the rows of a type file without their resources (formats that can skip reading
    /// the resource column override this).
    fn read_heads(&self, path: &Path, f: &mut dyn FnMut(Head<'_>) -> Result<()>) -> Result<()> {
        self.read(path, &mut |row| f(row.head()))
    }
    /// Starts writing a run's change records into the folder `dir` (created).
    fn changes_writer(&self, dir: &Path) -> Result<Box<dyn ChangeSink>>;
    /// Starts a new type file at `path` with the rows of the type file `old`, each as `decide`
    /// says; returns its writer (for more rows) and the number of rows written so far. Formats
    /// that can copy unchanged columns without decoding rows override this.
    fn carry_rows(
        &self,
        old: &Path,
        path: &Path,
        decide: &mut dyn FnMut(RowRef<'_>) -> Result<Carry>,
    ) -> Result<(Box<dyn RowSink>, u64)> {
        let mut sink = self.writer(path)?;
        let mut written = 0;
        self.read(old, &mut |mut row| {
            match decide(RowRef::of(&row))? {
                Carry::Keep => {}
                Carry::LastSeen(run) => row.last_seen_run = run,
                Carry::Drop => return Ok(()),
            }
            written += 1;
            sink.write(row)
        })?;
        Ok((sink, written))
    }
    /// How this format writes view columns `columns` (of [`crate::views::table_columns`]; for
    /// Parquet, the Arrow fields): part of the definition a view file is kept or carried by, so
    /// that a changed mapping rebuilds it.
    fn view_format(&self, columns: &[TableColumn]) -> String;
    /// The file or folder that [`SnapshotFormat::view_writer`] writes for view `name` in the
    /// version folder `version` (under its view root, [`views_dir`]).
    fn view_path(&self, version: &Path, name: &str) -> PathBuf;
    /// Starts a materialised view table `name` (columns of [`crate::views::table_columns`])
    /// in `dir`, the version's view root. A format that types its columns by their values
    /// (Parquet decimals) may keep the rows in the scratch file `spill` until the sink finishes.
    fn view_writer(
        &self,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        spill: &Path,
    ) -> Result<Box<dyn ViewSink>>;
    /// Starts view table `name` in the view root `dir` with the rows of `old` (a file this
    /// format wrote for the same view definition) whose `(_fhir_version, _id)` `keep` accepts,
    /// as they are; the sink takes the rows that follow them. `None`, having written nothing,
    /// if `old` is not a file of these columns (then the caller builds the view in full).
    fn carry_view(
        &self,
        old: &Path,
        dir: &Path,
        name: &str,
        columns: &[TableColumn],
        keep: &mut dyn FnMut(&str, &str) -> Result<bool>,
    ) -> Result<Option<Box<dyn ViewSink>>>;
}

/// Receives the rows of one view file, one at a time; it holds a bounded number of them.
pub(crate) trait ViewSink {
    /// Takes one row (cells in the view's column order).
    fn write(&mut self, row: Vec<CellValue>) -> Result<()>;
    /// Completes and fsyncs the file. `false` if the rows of a carried view did not fit the
    /// old file's column types (a Parquet decimal needing more digits): the file is then
    /// incomplete, and the caller builds the view in full.
    fn finish(self: Box<Self>) -> Result<bool>;
}

/// Receives a run's change records, one at a time; it holds a bounded number of them.
pub(crate) trait ChangeSink {
    /// Takes one record.
    fn write(&mut self, change: ChangeRow) -> Result<()>;
    /// Completes and fsyncs the file.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A file destination: the engine over one format.
pub(crate) struct FileDestination<F> {
    format: F,
    layout: Layout,
    run: Option<ActiveRun>,
    staging: Option<Staging>,
    /// The staging base's rows of the types staged so far (reload and reload-and-compare).
    known: Option<Known>,
    pending: usize,
    /// The writer lock `_fhirsync/lock`, held while the destination is open.
    lock: crate::lock::WriterLock,
}

impl<F: SnapshotFormat> FileDestination<F> {
    /// Opens (creating) the folder: refuses one written by a newer fhirsync before writing
    /// anything, then takes the writer lock and records the schema version.
    pub(crate) fn new(format: F, dir: &Path) -> Result<Self> {
        let layout = Layout::new(dir);
        let describe = format!("{} `{}`", format.kind(), layout.root().display());
        crate::schema_version::files_version(&layout, &describe)?;
        mkdirs(&layout.meta())?;
        let lock = crate::lock::WriterLock::acquire(&layout.lock_file(), &describe)?;
        crate::schema_version::record_files_version(&layout, &describe)?;
        Ok(FileDestination { format, layout, run: None, staging: None, known: None, pending: 0, lock })
    }

    /// The folder's run history.
    fn book(&self) -> RunBook {
        RunBook::new(&self.layout)
    }
}

/// Replaces, in `runs`, the record of the committed (current) run by the one stored in its
/// version folder if `runs.json` missed its end (killed between the switch and the update).
/// Keeps the start time from `runs.json`. Returns the id of the run it fixed. Read-only on disk.
pub(crate) fn apply_committed(layout: &Layout, runs: &mut [RunRecord]) -> Result<Option<String>> {
    let Some(current) = layout.current_version()? else { return Ok(None) };
    let Some(run) = runs.iter_mut().find(|r| r.run_id == current && !r.status.is_committed()) else {
        return Ok(None);
    };
    let path = layout.version(&current).join("_fhirsync").join("run.json");
    let bytes = fs::read(&path).map_err(Error::io("reading a version's run record", &path))?;
    let corrupt = |e: serde_json::Error| Error::CorruptState { path: path.clone(), detail: e.to_string() };
    let mut record: serde_json::Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
    // Earlier versions wrote the snapshot's record without a start time (an empty string);
    // runs.json has it.
    if let Some(fields) = record.as_object_mut() {
        fields.insert("started_at".into(), stored_time::text(&run.started_at).into());
    }
    let record: RunRecord = serde_json::from_value(record).map_err(corrupt)?;
    *run = RunRecord { started_at: run.started_at, ..record };
    Ok(Some(current))
}

impl<F: SnapshotFormat> RunSteps for FileDestination<F> {
    /// Finishes the bookkeeping of a run that was switched in but killed before `runs.json`
    /// was updated.
    fn recover(&mut self, runs: &mut [RunRecord]) -> Result<()> {
        if let Some(current) = apply_committed(&self.layout, runs)? {
            remove_dir(&self.layout.staging(&current))?;
            tracing::info!(run_id = %current, "Finished bookkeeping of a run committed before a crash.");
        }
        Ok(())
    }

    fn resume(&mut self, run_id: &str) -> Result<BTreeSet<ScopeKey>> {
        let (staging, completed_scopes) = Staging::resume(self.layout.staging(run_id), run_id)?;
        let current = self.layout.current_version()?;
        if let Some(base) = staging.base()
            && Some(base) != current.as_deref()
        {
            // Only a committed run switches the snapshot, and one that commits abandons any
            // unfinished run first: a mismatch is damage, never a normal sequence.
            return Err(Error::CorruptState {
                path: self.layout.staging(run_id),
                detail: format!(
                    "staged against snapshot {base}, but the current one is {}; run with resume = false",
                    current.as_deref().unwrap_or("none")
                ),
            });
        }
        self.known = staging.known()?;
        self.staging = Some(staging);
        Ok(completed_scopes)
    }

    fn discard(&mut self, run_id: &str) -> Result<()> {
        remove_dir(&self.layout.staging(run_id))
    }

    fn holds_data(&mut self) -> Result<bool> {
        Ok(self.layout.current_version()?.is_some())
    }

    fn create(&mut self, run_id: &str, method: Method) -> Result<()> {
        // Reload and reload-and-compare stage against the current snapshot.
        let base = if method == Method::FullLoad { None } else { self.layout.current_version()? };
        let staging = Staging::create(self.layout.staging(run_id), run_id, base.as_deref())?;
        self.known = staging.known()?;
        self.staging = Some(staging);
        Ok(())
    }

    fn describe_target(&self) -> String {
        self.describe()
    }
}

impl<F: SnapshotFormat> Destination for FileDestination<F> {
    fn describe(&self) -> String {
        format!("{} `{}`", self.format.kind(), self.layout.root().display())
    }

    fn begin(&mut self, method: Method, options: &LandOptions) -> Result<RunStart> {
        if options.history {
            return Err(Error::Unsupported {
                destination: self.format.kind(),
                option: "type-2 history",
                fix: "every committed run is kept as a snapshot in versions/ and changes/ instead; use sqlite or postgres for a history table",
            });
        }
        self.run = None;
        self.staging = None;
        self.known = None;
        let begun = self.book().begin(self, method, options)?;
        self.lock.set_run(&begun.start.run_id);
        self.run = Some(begun.active(method, options));
        Ok(begun.start)
    }

    fn stage(&mut self, resources: &[RawResource]) -> Result<()> {
        let checkpoint_rows =
            self.run.as_ref().ok_or(Error::NoActiveRun("stage before begin"))?.options.checkpoint_rows;
        let staging = self.staging.as_mut().ok_or(Error::NoActiveRun("stage before begin"))?;
        if let (Some(known), Some(base)) = (self.known.as_mut(), staging.base()) {
            let version = self.layout.version(base);
            for r in resources {
                if !known.has(&r.resource_type) {
                    let path = self.format.type_path(&version, &r.resource_type);
                    let format = &self.format;
                    let read = path
                        .exists()
                        .then_some(|f: &mut dyn FnMut(Head<'_>) -> Result<()>| format.read_heads(&path, f));
                    known.load(&r.resource_type, read)?;
                }
            }
        }
        staging.stage(resources, self.known.as_ref())?;
        self.pending += resources.len();
        if self.pending >= checkpoint_rows.max(1) {
            staging.checkpoint()?;
            self.pending = 0;
        }
        Ok(())
    }

    fn scope_complete(&mut self, scope: &ScopeKey) -> Result<()> {
        let checkpoint_rows = self
            .run
            .as_ref()
            .ok_or(Error::NoActiveRun("scope_complete before begin"))?
            .options
            .checkpoint_rows;
        let staging = self.staging.as_mut().ok_or(Error::NoActiveRun("scope_complete before begin"))?;
        staging.scope_complete(scope);
        // A scope counts as a row towards the checkpoint, so a run of empty scopes is not held
        // in memory either.
        self.pending += 1;
        if self.pending >= checkpoint_rows.max(1) {
            staging.checkpoint()?;
            self.pending = 0;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        if let Some(s) = self.staging.as_mut() {
            s.checkpoint()?;
            self.pending = 0;
        }
        Ok(())
    }

    fn commit(&mut self, scope: &RunScope, views: &[View], report: &serde_json::Value) -> Result<RunMetrics> {
        let run = self.run.clone().ok_or(Error::NoActiveRun("commit before begin"))?;
        let mut staging = self.staging.take().ok_or(Error::NoActiveRun("commit before begin"))?;
        staging.checkpoint()?;
        self.known = None;
        let metrics = self.apply(&run, &staging, scope, views, report)?;
        self.run = None;
        metrics.log_committed();
        Ok(metrics)
    }

    fn fail(&mut self, error: &str) -> Result<()> {
        let run = self.run.take().ok_or(Error::NoActiveRun("fail before begin"))?;
        self.known = None;
        if let Some(mut s) = self.staging.take() {
            s.checkpoint()?;
        }
        self.book().fail(&run.id, error)
    }
}
