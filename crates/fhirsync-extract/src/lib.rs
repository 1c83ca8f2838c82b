//! Epic-aware extraction for fhirsync.
//!
//! Data flow of one run ([`Extraction::run`]):
//! 1. search mode: [`plan`] reads each endpoint's CapabilityStatement and decides which datasets
//!    to fetch where; [`cohort`] resolves the patients (patient list, Group, ids, identifiers);
//! 2. [`crawl`] (search mode): one scope per (patient, dataset), paged by `next` links, or
//!    [`bulk`] (bulk mode): Group `$export` of the configured types (or the server's), one
//!    cohort-level scope per export × type;
//! 3. emit [`ExtractEvent`]s into a bounded channel (back-pressure keeps memory bounded) and
//!    return an [`ExtractReport`].
//!
//! ```no_run
//! # async fn demo(tokens: std::sync::Arc<dyn fhirsync_auth::TokenProvider>) -> fhirsync_extract::Result<()> {
//! use fhirsync_extract::{ConnectionConfig, ExtractConfig, Extraction};
//! let connection: ConnectionConfig = toml::from_str(r#"
//!     client_id = "abc"
//!     fhir_r4_endpoint = "https://ehr.example/api/FHIR/R4"
//!     patient_list_identifier = "systemlist|6442""#).expect("a valid [connection] table");
//! let config = ExtractConfig::default();
//! let client = fhirsync_extract::build_client(&connection, &config, tokens)?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! let run = Extraction::new(client, &connection, config)?;
//! let progress = run.progress();
//! let handle = tokio::spawn(run.run(tx));
//! while let Some(event) = rx.recv().await { /* land it */ }
//! let report = handle.await.expect("extraction task")?;
//! # Ok(()) }
//! ```

pub mod bulk;
pub mod cohort;
pub mod config;
mod crawl;
mod error;
pub mod plan;
pub mod progress;
pub mod report;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fhirsync_auth::TokenProvider;
use fhirsync_core::{ExtractEvent, ScopeKey};
use fhirsync_fhir::FhirClient;
use tokio::sync::mpsc::Sender;
use tracing::info;

pub use config::{
    BulkConfig, CohortConfig, ConnectionConfig, Endpoints, ExtractConfig, Mode, RetryConfig, ScheduleConfig,
    ServerKind,
};
pub use error::{Error, Result, StatementError};
pub use plan::{Plan, PlannedDataset};
pub use progress::{Progress, ProgressSnapshot};
pub use report::{DatasetReport, ExclusionBaseline, ExclusionCount, ExtractReport, Gap, GapReason};

/// Builds the FHIR client the configuration describes (politeness, retries, proxy, CA bundle).
pub fn build_client(
    connection: &ConnectionConfig,
    config: &ExtractConfig,
    tokens: Arc<dyn TokenProvider>,
) -> Result<FhirClient> {
    Ok(FhirClient::with_connection(config.client_config(), connection, tokens)?)
}

/// One extraction run, configured builder-style, consumed by [`Extraction::run`].
#[derive(Debug)]
pub struct Extraction {
    client: FhirClient,
    endpoints: Endpoints,
    config: ExtractConfig,
    cohort: CohortConfig,
    skip: BTreeSet<ScopeKey>,
    baseline: Option<ExclusionBaseline>,
    state_dir: Option<PathBuf>,
    list_complete: bool,
    progress: Arc<Progress>,
}

impl Extraction {
    /// Validates both configurations and prepares a run.
    pub fn new(client: FhirClient, connection: &ConnectionConfig, config: ExtractConfig) -> Result<Self> {
        connection.validate().map_err(Error::Connection)?;
        config.validate(connection)?;
        Ok(Extraction {
            client,
            endpoints: connection.endpoints(),
            cohort: config.effective_cohort(connection),
            config,
            skip: BTreeSet::new(),
            baseline: None,
            state_dir: None,
            list_complete: true,
            progress: Progress::new(),
        })
    }

    /// Scopes already completed by an earlier, interrupted attempt: not fetched again, and
    /// reported as complete.
    pub fn skip(mut self, skip: BTreeSet<ScopeKey>) -> Self {
        self.skip = skip;
        self
    }

    /// What the last committed run saw withheld (its report's `exclusion_baseline`). With a
    /// baseline, a sub-type withheld now but not then is a licence change: its scopes become
    /// [`GapReason::LicenceNarrowed`] gaps, so nothing is deleted there. Without one (a first
    /// load: nothing landed to protect), every exclusion is accepted.
    pub fn exclusion_baseline(mut self, baseline: Option<ExclusionBaseline>) -> Self {
        self.baseline = baseline;
        self
    }

    /// Directory for resumable state (the Bulk status URL). Required in bulk mode.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Whether the report lists every completed scope in `scope.complete` (default: yes). A
    /// consumer that records the [`ExtractEvent::ScopeComplete`] events, as landing does, can
    /// turn the list off: it holds one key per patient and dataset, which is most of an
    /// extraction's memory on a large cohort. Scopes skipped on resume are then not listed
    /// either (landing has them already). The counts are kept.
    pub fn list_complete_scopes(mut self, list: bool) -> Self {
        self.list_complete = list;
        self
    }

    /// Live counters for a progress bar.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs the extraction, sending events into `tx`. Returns when every scope is finished.
    ///
    /// Fails if: the plan or cohort cannot be resolved, credentials are rejected, every scope
    /// fails, the receiver is dropped, or (bulk) the export is refused or fails. Individual
    /// failed scopes are not errors: they are [`Gap`]s in the report.
    pub async fn run(self, tx: Sender<ExtractEvent>) -> Result<ExtractReport> {
        // A stop on a limit (outage, budget) before any scope was read says so; the crawl and
        // the Bulk downloads name the scopes left themselves.
        self.run_inner(tx).await.map_err(|e| e.with_work_left(fhirsync_fhir::WorkLeft::Everything))
    }

    async fn run_inner(self, tx: Sender<ExtractEvent>) -> Result<ExtractReport> {
        let started = Instant::now();
        let before = self.client.stats();
        let mut report = ExtractReport::new(self.config.mode);
        report.list_complete = self.list_complete;
        match self.config.mode {
            Mode::Search => {
                let plan = plan::plan(&self.client, &self.endpoints, &self.config).await?;
                report.datasets = plan.dataset_names();
                report.datasets_not_offered = plan.not_offered.clone();
                let patients = cohort::resolve(&self.client, &self.endpoints, &self.cohort).await?;
                report.patients = patients.len();
                report.scope.cohort = patients.iter().cloned().collect();
                crawl::Crawl {
                    client: &self.client,
                    plan: &plan,
                    patients: &patients,
                    skip: &self.skip,
                    max_restarts: self.config.max_session_restarts,
                    baseline: self.baseline.as_ref(),
                    progress: &self.progress,
                    tx: &tx,
                    completed: Default::default(),
                }
                .run(&mut report)
                .await?;
            }
            Mode::Bulk => {
                let state_dir = self.state_dir.as_deref().ok_or_else(|| Error::InvalidConfig {
                    key: "state_dir".into(),
                    problem: "bulk mode needs a state directory to save the export's status URL".into(),
                })?;
                let group = self.cohort.group.clone().unwrap_or_default();
                // The types come from the export itself, not from the search plan.
                bulk::Bulk {
                    client: &self.client,
                    endpoints: &self.endpoints,
                    datasets: &self.config.datasets,
                    group: &group,
                    config: &self.config.bulk,
                    retry: &self.config.retry,
                    skip: &self.skip,
                    baseline: self.baseline.as_ref(),
                    state_dir,
                    progress: &self.progress,
                    tx: &tx,
                }
                .run(&mut report)
                .await?;
            }
        }
        let after = self.client.stats();
        report.http = after.since(&before);
        report.duration_ms = started.elapsed().as_millis() as u64;
        // Datasets not read to their end in this run keep what the last committed run saw.
        if let Some(previous) = &self.baseline {
            for (dataset, withheld) in previous {
                report.exclusion_baseline.entry(dataset.clone()).or_insert_with(|| withheld.clone());
            }
        }
        // Scopes finish in any order: a stable order for reports and summaries.
        report.exclusions.sort_by(|a, b| (&a.dataset, &a.exclusion).cmp(&(&b.dataset, &b.exclusion)));
        info!(
            resources = report.resources,
            complete = report.scopes_complete,
            excluded = report.scopes_excluded,
            gaps = report.gaps.len(),
            "Extraction finished."
        );
        Ok(report)
    }
}
