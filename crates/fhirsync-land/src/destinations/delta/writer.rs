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
use crate::destinations::files::apply_committed;
use crate::destinations::files::layout::{Layout, mkdirs, remove_dir};
use crate::destinations::files::run_book::{ActiveRun, RunBook, RunSteps};
use crate::destinations::files::staging::Staging;
use crate::run::RunRecord;
use crate::{Error, Result};

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

impl DeltaDestination {
    /// Opens the destination: refuses a state folder written by a newer fhirsync before writing
    /// anything, then takes the writer lock, records the schema version and connects.
    pub(crate) fn new(config: &DeltaConfig) -> Result<Self> {
        let layout = state_layout(config)?;
        let describe = format!("delta `{}`", config.uri);
        crate::schema_version::files_version(&layout, &describe)?;
        mkdirs(&layout.meta())?;
        let lock = crate::lock::WriterLock::acquire(&layout.lock_file(), &describe)?;
        crate::schema_version::record_files_version(&layout, &describe)?;
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

    /// The state folder's run history.
    fn book(&self) -> RunBook {
        RunBook::new(&self.layout)
    }

    /// The folder of what each table committed by run `run_id` counted.
    fn commits_dir(&self, run_id: &str) -> std::path::PathBuf {
        self.layout.meta().join("commits").join(run_id)
    }
}

impl RunSteps for DeltaDestination {
    /// There is no `CURRENT` file here, so this only normalises; kept for a state folder shared
    /// with a file destination's tooling.
    fn recover(&mut self, runs: &mut [RunRecord]) -> Result<()> {
        apply_committed(&self.layout, runs).map(drop)
    }

    fn resume(&mut self, run_id: &str) -> Result<BTreeSet<ScopeKey>> {
        let (staging, completed_scopes) = Staging::resume(self.layout.staging(run_id), run_id)?;
        self.staging = Some(staging);
        Ok(completed_scopes)
    }

    fn discard(&mut self, run_id: &str) -> Result<()> {
        remove_dir(&self.layout.staging(run_id))?;
        remove_dir(&self.commits_dir(run_id))
    }

    fn holds_data(&mut self) -> Result<bool> {
        self.store.holds_data()
    }

    fn create(&mut self, run_id: &str, _method: Method) -> Result<()> {
        self.staging = Some(Staging::create(self.layout.staging(run_id), run_id, None)?);
        Ok(())
    }

    fn describe_target(&self) -> String {
        self.describe()
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
        self.stager = None;
        let begun = self.book().begin(self, method, options)?;
        let staging = self.staging.as_ref().ok_or(Error::NoActiveRun("begin without staging"))?;
        self.stager = Some(Stager::start(staging, begun.start.resumed, method != Method::FullLoad)?);
        self.lock.set_run(&begun.start.run_id);
        self.run = Some(begun.active(method, options));
        Ok(begun.start)
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
        self.book().commit(RunRecord::committed(
            run.method,
            run.started_at,
            scope,
            metrics.clone(),
            report.clone(),
        ))?;
        remove_dir(staging.dir())?;
        remove_dir(&self.commits_dir(&run.id))?;
        self.run = None;
        metrics.log_committed();
        Ok(metrics)
    }

    fn fail(&mut self, error: &str) -> Result<()> {
        let run = self.run.take().ok_or(Error::NoActiveRun("fail before begin"))?;
        if let Some(mut s) = self.staging.take() {
            s.checkpoint()?;
        }
        self.book().fail(&run.id, error)
    }
}
