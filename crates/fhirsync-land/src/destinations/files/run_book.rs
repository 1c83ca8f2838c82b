//! The run history of the file and Delta destinations, `_fhirsync/runs.json`: one
//! [`RunRecord`] per run, oldest first, and the bookkeeping of a run's start, failure and commit
//! that both destinations share ([`RunBook`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use fhirsync_core::ScopeKey;

use super::layout::{Layout, write_atomic};
use crate::config::{LandOptions, Method};
use crate::destination::RunStart;
use crate::run::{RunRecord, RunStatus};
use crate::{Error, Result};

/// What a destination does at the steps of [`RunBook::begin`] where destinations differ.
pub(crate) trait RunSteps {
    /// Fixes `runs` for a run committed before a crash, before anything else looks at them.
    fn recover(&mut self, runs: &mut [RunRecord]) -> Result<()>;
    /// Reopens the staging of the unfinished run `run_id` to resume it; returns the scopes it
    /// completed.
    fn resume(&mut self, run_id: &str) -> Result<BTreeSet<ScopeKey>>;
    /// Removes what the abandoned run `run_id` left behind.
    fn discard(&mut self, run_id: &str) -> Result<()>;
    /// Whether the target holds landed data (a full load refuses it unless `replace` is set).
    fn holds_data(&mut self) -> Result<bool>;
    /// Creates the staging of the new run `run_id`.
    fn create(&mut self, run_id: &str, method: Method) -> Result<()>;
    /// Kind and location for messages, without credentials.
    fn describe_target(&self) -> String;
}

/// The run a file or Delta destination is in, from its begin to its commit or failure.
#[derive(Debug, Clone)]
pub(crate) struct ActiveRun {
    /// The run id.
    pub id: String,
    /// Its update method.
    pub method: Method,
    /// Its landing options.
    pub options: LandOptions,
    /// When the run first started (for a resumed run: the first attempt).
    pub started_at: DateTime<Utc>,
}

/// A run begun by [`RunBook::begin`].
#[derive(Debug)]
pub(crate) struct Begun {
    /// Its id, and for a resumed run the scopes already staged.
    pub start: RunStart,
    /// When it first started (for a resumed run: the first attempt).
    pub started_at: DateTime<Utc>,
}

impl Begun {
    /// The run as its destination keeps it while it lasts.
    pub(crate) fn active(&self, method: Method, options: &LandOptions) -> ActiveRun {
        ActiveRun {
            id: self.start.run_id.clone(),
            method,
            options: options.clone(),
            started_at: self.started_at,
        }
    }
}

/// `_fhirsync/runs.json` of one destination.
#[derive(Debug, Clone)]
pub(crate) struct RunBook {
    file: PathBuf,
}

impl RunBook {
    /// The run history of the folder of `layout`.
    pub(crate) fn new(layout: &Layout) -> Self {
        RunBook { file: layout.runs_file() }
    }

    /// Every run, oldest first (none if the file does not exist yet).
    pub(crate) fn load(&self) -> Result<Vec<RunRecord>> {
        match fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::CorruptState { path: self.file.clone(), detail: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("reading runs", &self.file)(e)),
        }
    }

    /// Writes the history. Reports are kept without their `scope`, whose cohort list grows with
    /// the cohort, once per run (a file destination's version folder has the whole report).
    pub(crate) fn save(&self, runs: &[RunRecord]) -> Result<()> {
        let runs: Vec<RunRecord> = runs
            .iter()
            .map(|r| RunRecord { report: r.report.as_ref().map(without_scope), ..r.clone() })
            .collect();
        let bytes = serde_json::to_vec_pretty(&runs)
            .map_err(|source| Error::Json { action: "encoding runs.json", source })?;
        write_atomic(&self.file, &bytes)
    }

    /// Starts a run, or resumes the latest unfinished one if it has `method` and
    /// `options.resume` is set; every other unfinished run is abandoned. Called by the holder
    /// of the writer lock.
    ///
    /// Fails with [`Error::TargetNotEmpty`] for a full load into a target that holds data unless
    /// `options.replace` is set (the abandoned runs are recorded first).
    pub(crate) fn begin(
        &self,
        steps: &mut impl RunSteps,
        method: Method,
        options: &LandOptions,
    ) -> Result<Begun> {
        let mut runs = self.load()?;
        steps.recover(&mut runs)?;
        let now = Utc::now();
        self.mark_interrupted(&mut runs, now)?;
        let latest = runs.iter().rposition(|r| r.status.is_unfinished());
        if let Some(i) = latest.filter(|&i| options.resume && runs[i].method == method) {
            let run_id = runs[i].run_id.clone();
            let completed_scopes = steps.resume(&run_id)?;
            let run = &mut runs[i];
            (run.status, run.errors, run.ended_at) = (RunStatus::Running, None, None);
            let started_at = run.started_at;
            self.save(&runs)?;
            tracing::info!(run_id = %run_id, method = %method, "Resuming unfinished run.");
            return Ok(Begun { start: RunStart { run_id, resumed: true, completed_scopes }, started_at });
        }
        for r in runs.iter_mut().filter(|r| r.status.is_unfinished()) {
            (r.status, r.ended_at) = (RunStatus::Abandoned, Some(now));
            steps.discard(&r.run_id)?;
        }
        if method == Method::FullLoad && !options.replace && steps.holds_data()? {
            self.save(&runs)?;
            return Err(Error::TargetNotEmpty { destination: steps.describe_target() });
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        steps.create(&run_id, method)?;
        runs.push(RunRecord::started(&run_id, method, now));
        self.save(&runs)?;
        tracing::info!(run_id = %run_id, method = %method, "Run started.");
        Ok(Begun {
            start: RunStart { run_id, resumed: false, completed_scopes: BTreeSet::new() },
            started_at: now,
        })
    }

    /// Marks every `running` run of `runs` interrupted (and saves them if there was one): the
    /// caller holds the writer lock, so such a run died with its process.
    fn mark_interrupted(&self, runs: &mut [RunRecord], now: DateTime<Utc>) -> Result<()> {
        let mut interrupted = false;
        for r in runs.iter_mut().filter(|r| r.status == RunStatus::Running) {
            tracing::warn!(run_id = %r.run_id, "The run before this one died mid-way; it is marked interrupted.");
            (r.status, r.ended_at) = (RunStatus::Interrupted, Some(now));
            interrupted = true;
        }
        if interrupted {
            self.save(runs)?;
        }
        Ok(())
    }

    /// Records the commit of `record`'s run (keeping the start time recorded at its begin).
    pub(crate) fn commit(&self, record: RunRecord) -> Result<()> {
        let mut runs = self.load()?;
        if let Some(r) = runs.iter_mut().find(|r| r.run_id == record.run_id) {
            *r = RunRecord { started_at: r.started_at, ..record };
        }
        self.save(&runs)
    }

    /// Marks run `run_id` failed with `error`.
    pub(crate) fn fail(&self, run_id: &str, error: &str) -> Result<()> {
        let mut runs = self.load()?;
        if let Some(r) = runs.iter_mut().find(|r| r.run_id == run_id) {
            (r.status, r.ended_at, r.errors) = (RunStatus::Failed, Some(Utc::now()), Some(error.to_string()));
        }
        self.save(&runs)?;
        tracing::warn!(run_id = %run_id, "Run marked failed; staged data is kept for resume.");
        Ok(())
    }
}

/// A stored report without its `scope` (the cohort and the completed scopes).
pub(crate) fn without_scope(report: &serde_json::Value) -> serde_json::Value {
    match report {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter().filter(|(k, _)| *k != "scope").map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        other => other.clone(),
    }
}
