//! The [`Destination`] of the Delta Lake destination: runs, staging and the lock as the file
//! destinations keep them; the commit is in `commit.rs`.

use std::collections::BTreeSet;

use fhirsync_core::{RawResource, RunScope, ScopeKey};
use fhirsync_views::View;

use super::config::DeltaConfig;
use super::stager::Stager;
use super::{state_layout, store};
use crate::config::{LandOptions, Method};
use crate::destination::{Destination, RunMetrics, RunStart};
use crate::destinations::files::layout::{Layout, mkdirs, remove_dir, write_atomic};
use crate::destinations::files::staging::Staging;
use crate::destinations::files::{RunRecord, apply_committed};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub(super) struct ActiveRun {
    pub id: String,
    pub method: Method,
    pub options: LandOptions,
}

/// The Delta Lake destination.
pub(crate) struct DeltaDestination {
    pub(super) store: store::Tables,
    pub(super) layout: Layout,
    pub(super) buckets: u32,
    run: Option<ActiveRun>,
    staging: Option<Staging>,
    pending: usize,
    /// Stages into `staging` (Delta's layout, see `staged.rs`).
    stager: Option<Stager>,
    /// The writer lock `<state>/_fhirsync/lock`, held while the destination is open.
    lock: crate::lock::WriterLock,
}

/// Whether a run record is unfinished (resumable, or abandoned by a fresh start).
fn is_unfinished(status: &str) -> bool {
    matches!(status, "running" | "failed" | "interrupted")
}

impl DeltaDestination {
    pub(crate) fn new(config: &DeltaConfig) -> Result<Self> {
        let layout = state_layout(config)?;
        mkdirs(&layout.meta())?;
        let describe = format!("delta `{}`", config.uri);
        let lock = crate::lock::WriterLock::acquire(&layout.lock_file(), &describe)?;
        let store = store::Tables::connect(&config.uri)?;
        Ok(DeltaDestination {
            store,
            layout,
            buckets: config.buckets.max(1),
            run: None,
            staging: None,
            pending: 0,
            stager: None,
            lock,
        })
    }

    fn load_runs(&self) -> Result<Vec<RunRecord>> {
        let path = self.layout.runs_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::CorruptState { path, detail: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("reading runs", path)(e)),
        }
    }

    fn save_runs(&self, runs: &[RunRecord]) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(runs)
            .map_err(|source| Error::Json { action: "encoding runs.json", source })?;
        write_atomic(&self.layout.runs_file(), &bytes)
    }
}

impl Destination for DeltaDestination {
    fn describe(&self) -> String {
        format!("delta `{}`", self.store.describe())
    }

    fn begin(&mut self, method: Method, options: &LandOptions) -> Result<RunStart> {
        if options.history {
            return Err(Error::Unsupported {
                destination: "delta",
                option: "type-2 history",
                fix: "every commit is kept by Delta itself: read an older version with time travel (`VERSION AS OF`) \
                      and the changes with the change data feed",
            });
        }
        self.run = None;
        self.staging = None;
        let mut runs = self.load_runs()?;
        // No CURRENT file here, so this only normalises; kept for a state folder shared with
        // a file destination's tooling.
        apply_committed(&self.layout, &mut runs)?;
        let now = crate::destinations::sql::now();
        let mut interrupted = false;
        for r in runs.iter_mut().filter(|r| r.status == "running") {
            tracing::warn!(run_id = %r.run_id, "The run before this one died mid-way; it is marked interrupted.");
            r.status = "interrupted".into();
            r.ended_at = Some(now.clone());
            interrupted = true;
        }
        if interrupted {
            self.save_runs(&runs)?;
        }
        let unfinished = runs.iter().rposition(|r| is_unfinished(&r.status));
        if let Some(i) = unfinished
            && options.resume
            && runs[i].method == method.as_str()
        {
            let run_id = runs[i].run_id.clone();
            let (staging, completed_scopes) = Staging::resume(self.layout.staging(&run_id), &run_id)?;
            self.stager = Some(Stager::start(&staging, true, method != Method::FullLoad)?);
            runs[i].status = "running".into();
            runs[i].errors = None;
            runs[i].ended_at = None;
            self.save_runs(&runs)?;
            self.lock.set_run(&run_id);
            self.staging = Some(staging);
            self.run = Some(ActiveRun { id: run_id.clone(), method, options: options.clone() });
            tracing::info!(run_id = %run_id, method = %method, "Resuming unfinished run.");
            return Ok(RunStart { run_id, resumed: true, completed_scopes });
        }
        for r in runs.iter_mut().filter(|r| is_unfinished(&r.status)) {
            r.status = "abandoned".into();
            r.ended_at = Some(now.clone());
            remove_dir(&self.layout.staging(&r.run_id))?;
            remove_dir(&self.layout.meta().join("commits").join(&r.run_id))?;
        }
        if method == Method::FullLoad && !options.replace && self.store.holds_data()? {
            self.save_runs(&runs)?;
            return Err(Error::TargetNotEmpty { destination: self.describe() });
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        let staging = Staging::create(self.layout.staging(&run_id), &run_id, None)?;
        self.stager = Some(Stager::start(&staging, false, method != Method::FullLoad)?);
        self.staging = Some(staging);
        runs.push(RunRecord {
            run_id: run_id.clone(),
            method: method.as_str().into(),
            status: "running".into(),
            started_at: now,
            ended_at: None,
            metrics: None,
            errors: None,
            report: None,
        });
        self.save_runs(&runs)?;
        self.lock.set_run(&run_id);
        self.run = Some(ActiveRun { id: run_id.clone(), method, options: options.clone() });
        tracing::info!(run_id = %run_id, method = %method, "Run started.");
        Ok(RunStart { run_id, resumed: false, completed_scopes: BTreeSet::new() })
    }

    fn stage(&mut self, resources: &[RawResource]) -> Result<()> {
        let checkpoint_rows =
            self.run.as_ref().ok_or(Error::NoActiveRun("stage before begin"))?.options.checkpoint_rows;
        let staging = self.staging.as_mut().ok_or(Error::NoActiveRun("stage before begin"))?;
        let stager = self.stager.as_mut().ok_or(Error::NoActiveRun("stage before begin"))?;
        stager.stage(staging, &self.store, self.buckets, resources)?;
        self.pending += resources.len();
        if self.pending >= checkpoint_rows.max(1) {
            staging.checkpoint()?;
            self.pending = 0;
        }
        Ok(())
    }

    fn scope_complete(&mut self, scope: &ScopeKey) -> Result<()> {
        self.staging.as_mut().ok_or(Error::NoActiveRun("scope_complete before begin"))?.scope_complete(scope);
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
        let metrics = self.apply(&run, &staging, scope, views)?;
        let now = crate::destinations::sql::now();
        let record = RunRecord {
            run_id: run.id.clone(),
            method: run.method.as_str().into(),
            status: crate::destination::committed_status(scope).into(),
            started_at: String::new(),
            ended_at: Some(now),
            metrics: Some(metrics.clone()),
            errors: None,
            report: Some(report.clone()),
        };
        let mut runs = self.load_runs()?;
        if let Some(r) = runs.iter_mut().find(|r| r.run_id == run.id) {
            let started_at = std::mem::take(&mut r.started_at);
            *r = RunRecord { started_at, ..record };
        }
        self.save_runs(&runs)?;
        remove_dir(staging.dir())?;
        remove_dir(&self.layout.meta().join("commits").join(&run.id))?;
        self.run = None;
        metrics.log_committed();
        Ok(metrics)
    }

    fn fail(&mut self, error: &str) -> Result<()> {
        let run = self.run.take().ok_or(Error::NoActiveRun("fail before begin"))?;
        if let Some(mut s) = self.staging.take() {
            s.checkpoint()?;
        }
        let mut runs = self.load_runs()?;
        if let Some(r) = runs.iter_mut().find(|r| r.run_id == run.id) {
            r.status = "failed".into();
            r.ended_at = Some(crate::destinations::sql::now());
            r.errors = Some(error.to_string());
        }
        self.save_runs(&runs)?;
        tracing::warn!(run_id = %run.id, "Run marked failed; staged data is kept for resume.");
        Ok(())
    }
}
