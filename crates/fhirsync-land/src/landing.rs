//! [`Landing`]: the async face of a [`Destination`] for the CLI.
//!
//! The destination API is synchronous (SQLite and file I/O block), so `Landing` runs every call
//! on tokio's blocking pool and consumes the extractor's bounded channel there with
//! `blocking_recv`, which gives back-pressure for free.
//!
//! ```no_run
//! # async fn demo(extract: impl std::future::Future<Output = Result<fhirsync_core::RunScope, String>>,
//! #               rx: tokio::sync::mpsc::Receiver<fhirsync_core::ExtractEvent>) -> fhirsync_land::Result<()> {
//! use fhirsync_land::{DestinationConfig, LandOptions, Landing, Method};
//! let mut landing = Landing::begin(DestinationConfig::default(), Method::ReloadAndCompare, LandOptions::default()).await?;
//! let _skip = landing.run().completed_scopes.clone(); // hand to the extractor when resuming
//! let (staged, scope) = tokio::join!(landing.stage_events(rx), extract);
//! staged?;
//! match scope {
//!     Ok(scope) => { landing.commit(scope, Vec::new(), serde_json::json!({})).await?; }
//!     Err(error) => landing.fail(error).await?,
//! }
//! # Ok(()) }
//! ```

use fhirsync_core::{ExtractEvent, RunScope};
use fhirsync_views::View;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::spawn_blocking;

use crate::config::{DestinationConfig, LandOptions, Method};
use crate::destination::{Destination, RunMetrics, RunStart};
use crate::{Error, Result};

/// Counts of one [`Landing::stage_events`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageStats {
    /// Resources received.
    pub resources: u64,
    /// `ScopeComplete` events received.
    pub scopes: u64,
}

/// One run against one destination.
pub struct Landing {
    dest: Option<Box<dyn Destination>>,
    start: RunStart,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landing")
            .field("destination", &self.dest.as_ref().map(|d| d.describe()))
            .field("run_id", &self.start.run_id)
            .finish()
    }
}

impl Landing {
    /// Opens the destination and begins (or resumes) a run.
    pub async fn begin(config: DestinationConfig, method: Method, options: LandOptions) -> Result<Landing> {
        spawn_blocking(move || {
            let dest = crate::open(&config)?;
            Landing::begin_blocking(dest, method, &options)
        })
        .await?
    }

    /// Begins a run on an already opened destination (blocking; call from a blocking thread).
    pub fn begin_blocking(
        mut dest: Box<dyn Destination>,
        method: Method,
        options: &LandOptions,
    ) -> Result<Landing> {
        let start = dest.begin(method, options)?;
        Ok(Landing { dest: Some(dest), start })
    }

    /// The run id, whether it resumed, and the scopes the extractor may skip.
    pub fn run(&self) -> &RunStart {
        &self.start
    }

    /// Stages every event until the channel closes, then makes the staged data durable.
    pub async fn stage_events(&mut self, mut rx: mpsc::Receiver<ExtractEvent>) -> Result<StageStats> {
        let mut dest = self.dest.take().ok_or(Error::NoActiveRun("stage_events after a failed call"))?;
        let (dest, result) = spawn_blocking(move || {
            let mut stats = StageStats::default();
            let result = (|| {
                while let Some(event) = rx.blocking_recv() {
                    match event {
                        ExtractEvent::Resources(rs) => {
                            stats.resources += rs.len() as u64;
                            dest.stage(&rs)?;
                        }
                        ExtractEvent::ScopeComplete(scope) => {
                            stats.scopes += 1;
                            dest.scope_complete(&scope)?;
                        }
                    }
                }
                dest.checkpoint()?;
                Ok(stats)
            })();
            (dest, result)
        })
        .await?;
        self.dest = Some(dest);
        result
    }

    /// Applies the staged data with the run's method, materialises `views`, ends the run.
    pub async fn commit(
        mut self,
        scope: RunScope,
        views: Vec<View>,
        report: serde_json::Value,
    ) -> Result<RunMetrics> {
        let mut dest = self.dest.take().ok_or(Error::NoActiveRun("commit after a failed call"))?;
        spawn_blocking(move || dest.commit(&scope, &views, &report)).await?
    }

    /// Marks the run failed; its staged data stays for the next run to resume.
    pub async fn fail(mut self, error: String) -> Result<()> {
        let mut dest = self.dest.take().ok_or(Error::NoActiveRun("fail after a failed call"))?;
        spawn_blocking(move || dest.fail(&error)).await?
    }
}
