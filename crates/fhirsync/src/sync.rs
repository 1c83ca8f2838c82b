//! One sync run: auth → fhir client → extract → land → views.
//!
//! Extraction (async, network-bound) and landing (blocking, on tokio's blocking pool) run
//! concurrently, joined by a bounded channel, so memory stays bounded whatever the export size.
//! If extraction fails, the run is marked failed and its durable staging is kept: the next run
//! of the same method resumes it and skips the scopes already completed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirsync_auth::TokenProvider;
use fhirsync_extract::{ExclusionBaseline, ExtractReport, Extraction};
use fhirsync_fhir::Recorder;
use fhirsync_land::{Landing, Method, RunMetrics};
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::Config;
use crate::progress::{self, ProgressSink};
use crate::{Error, Result};

/// Capacity of the extract → land channel, in events (one event is one page).
pub const CHANNEL_CAPACITY: usize = 16;

/// What a committed sync did: the counts landed, the completeness ledger, how long it took.
#[derive(Debug)]
pub struct SyncReport {
    /// Landing metrics (run id, inserted/updated/deleted/unchanged, view rows).
    pub metrics: RunMetrics,
    /// Extraction report (cohort, datasets, pages, outcome codes, gaps, exclusions).
    pub report: ExtractReport,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// One sync run, built then [`Sync::run`]: auth → fhir client → extract → land → views.
///
/// ```no_run
/// # async fn demo() -> fhirsync::Result<()> {
/// use fhirsync::{Config, Method, Sync};
/// let config = Config::load(std::path::Path::new("fhirsync.toml"))?;
/// let report = Sync::new(config).method(Method::ReloadAndCompare).run().await?;
/// println!("{} inserted, {} gaps", report.metrics.inserted, report.report.gaps.len());
/// # Ok(()) }
/// ```
#[must_use = "a Sync does nothing until `run` is awaited"]
pub struct Sync {
    config: Config,
    method: Option<Method>,
    tokens: Option<Arc<dyn TokenProvider>>,
    progress: Option<Arc<dyn ProgressSink>>,
    recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sync").field("method", &self.chosen_method()).finish_non_exhaustive()
    }
}

impl Sync {
    /// A sync of `config` with its `[sync] method`, authenticating as `[connection]` says.
    pub fn new(config: Config) -> Sync {
        Sync { config, method: None, tokens: None, progress: None, recorder: None }
    }

    /// The update method (default: `[sync] method`).
    pub fn method(mut self, method: Method) -> Sync {
        self.method = Some(method);
        self
    }

    /// Use these tokens instead of authenticating from `[connection]` (a token provider built
    /// once and shared by several runs, or a test's).
    pub fn tokens(mut self, tokens: Arc<dyn TokenProvider>) -> Sync {
        self.tokens = Some(tokens);
        self
    }

    /// Report live progress to `sink` while the run extracts.
    pub fn progress(mut self, sink: Arc<dyn ProgressSink>) -> Sync {
        self.progress = Some(sink);
        self
    }

    /// Also write every FHIR answer of the run into `recorder`'s folder (for
    /// `sandbox --replay`). The folder holds patient data.
    pub fn record_to(mut self, recorder: Arc<Recorder>) -> Sync {
        self.recorder = Some(recorder);
        self
    }

    fn chosen_method(&self) -> Method {
        self.method.unwrap_or(self.config.sync.method)
    }

    /// Runs the sync. A committed run with gaps is `Ok`: see [`SyncReport::has_gaps`].
    ///
    /// If extraction fails, the run is marked failed and its durable staging is kept: the next
    /// run of the same method resumes it and skips the scopes already completed.
    pub async fn run(self) -> Result<SyncReport> {
        let tokens = match self.tokens.clone() {
            Some(tokens) => tokens,
            None => self.config.token_provider().await?,
        };
        sync(&self.config, self.chosen_method(), tokens, self.progress.clone(), self.recorder.clone()).await
    }
}

async fn sync(
    config: &Config,
    method: Method,
    tokens: Arc<dyn TokenProvider>,
    sink: Option<Arc<dyn ProgressSink>>,
    recorder: Option<Arc<Recorder>>,
) -> Result<SyncReport> {
    let started = Instant::now();
    let destination = describe_destination(config);
    // The views are compiled before anything is read: a bad FHIRPath in a user's view fails the
    // run at once, not after the extraction.
    let views = config.views.load()?;

    // Authenticate before the destination is opened: refused credentials create nothing there
    // (no database, no failed run to "resume").
    tokens.access_token().await.map_err(|source| Error::Authenticate { source })?;

    // The destination takes its writer lock where the data lives (a PostgreSQL advisory lock,
    // a lock file next to the SQLite database or inside the folder); a second writer fails
    // here, naming the holder.
    let destination_error = |source| Error::destination(destination.clone(), source);
    let mut landing = Landing::begin(config.destination.clone(), method, config.land.clone())
        .await
        .map_err(destination_error)?;
    let run = landing.run().clone();
    if run.resumed {
        info!(run_id = %run.run_id, skipped_scopes = run.completed_scopes.len(), "Resuming an interrupted run.");
    } else {
        info!(run_id = %run.run_id, method = %method, destination = %destination, "Run started.");
    }

    let baseline = if method == Method::FullLoad { None } else { exclusion_baseline(config).await? };
    let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)?;
    if let Some(recorder) = recorder
        && client.record_to(recorder).is_err()
    {
        warn!("The FHIR client already records into another folder; --record is ignored for this run.");
    }
    let extraction = Extraction::new(client, &config.connection, config.extract.clone())?
        .skip(run.completed_scopes.clone())
        // Landing records every completed scope from its event: no second list in memory.
        .list_complete_scopes(false)
        .exclusion_baseline(baseline)
        .state_dir(config.sync.state_dir.join("bulk"));
    let progress_task = sink.map(|sink| progress::spawn(extraction.progress(), sink));

    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
    let (staged, extracted) = tokio::join!(landing.stage_events(rx), extraction.run(tx));
    if let Some(task) = progress_task {
        task.finish().await;
    }

    let report = match (extracted, staged) {
        (Ok(report), Ok(_)) => report,
        (Err(source), staged) => {
            if let Err(le) = staged {
                warn!(error = %le, "Staging also failed.");
            }
            mark_failed(landing, source.to_string()).await;
            return Err(Error::Extract { source: Box::new(source) });
        }
        (Ok(_), Err(e)) => {
            mark_failed(landing, e.to_string()).await;
            return Err(destination_error(e));
        }
    };

    let report_json = serde_json::to_value(&report).map_err(|e| Error::Config {
        problem: "cannot serialise the run report".into(),
        fix: None,
        source: Some(Box::new(e)),
    })?;
    let metrics =
        landing.commit(report.scope.clone(), views, report_json).await.map_err(destination_error)?;
    Ok(SyncReport { metrics, report, resumed: run.resumed, elapsed: started.elapsed() })
}

/// What the last committed run saw withheld (59204/59205 sub-types), for the licence-change
/// rule: `None` when nothing was committed yet (no landed rows to protect); an empty baseline
/// when the last committed run predates the rule, so every exclusion counts as new once.
async fn exclusion_baseline(config: &Config) -> Result<Option<ExclusionBaseline>> {
    /// Runs read first (each carries its whole report), then at most this many.
    const WINDOWS: [usize; 2] = [4, 100];
    for window in WINDOWS {
        let dest = config.destination.clone();
        let runs = tokio::task::spawn_blocking(move || fhirsync_land::recent_runs(&dest, window))
            .await
            .map_err(|source| Error::Task { task: "run history reader", source })?
            .map_err(|source| Error::history(describe_destination(config), source))?;
        let read = runs.len();
        if let Some(last) = runs.into_iter().find(|r| r.status.is_committed()) {
            let Some(stored) = last.report.as_ref().and_then(|r| r.get("exclusion_baseline")) else {
                // Committed before the rule: every exclusion counts as new once.
                return Ok(Some(ExclusionBaseline::default()));
            };
            let baseline = ExclusionBaseline::deserialize(stored).map_err(|source| Error::StoredReport {
                destination: describe_destination(config),
                run_id: last.run_id.clone(),
                field: "exclusion_baseline",
                source,
            })?;
            return Ok(Some(baseline));
        }
        if read < window {
            break;
        }
    }
    Ok(None)
}

/// Records the run as failed; its staging stays for the next run to resume. A failure to record
/// it is logged, not raised: the error that stopped the run is the one to report.
async fn mark_failed(landing: Landing, message: String) {
    if let Err(error) = landing.fail(message).await {
        warn!(%error, "Could not mark the run as failed; the next run will still resume its staging.");
    }
}

/// Human name of the destination (path, folder or schema), never with credentials.
pub fn describe_destination(config: &Config) -> String {
    config.destination.describe()
}

impl SyncReport {
    /// True when the run has gaps: it committed, but "complete" cannot be claimed.
    pub fn has_gaps(&self) -> bool {
        !self.report.gaps.is_empty()
    }
}

impl SyncReport {
    /// The end-of-run summary: counts, then the gaps, then the exclusions. No patient ids.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.write_counts(&mut out);
        self.write_completeness(&mut out);
        out
    }

    /// The status line, what was extracted and what was landed.
    fn write_counts(&self, out: &mut String) {
        use std::fmt::Write as _;
        let outcome = self;
        let m = &outcome.metrics;
        let r = &outcome.report;
        let status = if outcome.has_gaps() { "completed with gaps" } else { "succeeded" };
        let _ = writeln!(
            out,
            "run {} ({}{}) {status} in {:.1}s",
            m.run_id,
            m.method,
            if outcome.resumed { ", resumed" } else { "" },
            outcome.elapsed.as_secs_f64()
        );
        let resent = if r.resources_resent > 0 {
            format!(", {} more re-sent after 4113 restarts", r.resources_resent)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  extracted: {} patients, {} datasets, {} resources ({} distinct){resent} in {} pages ({} requests, {} retries)",
            r.patients,
            r.datasets.len(),
            r.resources,
            m.staged,
            r.pages,
            r.http.requests,
            r.http.retries
        );
        let _ = match m.method == Method::ReloadAndCompare.as_str() {
            // Reload and full load do not compare: re-read rows are replaced, not classified.
            true => writeln!(
                out,
                "  landed:    {} inserted, {} updated, {} deleted, {} kept (scope not complete this run), {} unchanged; {} view rows",
                m.inserted, m.updated, m.deleted, m.kept, m.unchanged, m.view_rows
            ),
            false => writeln!(
                out,
                "  landed:    {} re-read and replaced ({} new), {} deleted, {} kept (scope not complete this run); {} view rows",
                m.staged, m.inserted, m.deleted, m.kept, m.view_rows
            ),
        };
    }

    /// Cohort exits, types not offered, the gaps, the exclusions and the OperationOutcome codes.
    fn write_completeness(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (m, r) = (&self.metrics, &self.report);
        if m.cohort_exits > 0 {
            let _ = writeln!(
                out,
                "  cohort:    {} patients left the cohort (flagged, not deleted)",
                m.cohort_exits
            );
        }
        if !r.datasets_not_offered.is_empty() {
            let _ = writeln!(
                out,
                "  not offered by the server's statement (not fetched; name them in [extract] datasets to try): {}",
                r.datasets_not_offered.join(", ")
            );
        }
        let gaps = r.gap_lines();
        if gaps.is_empty() {
            let _ = writeln!(
                out,
                "  complete:  every scope fetched completely ({} of {} with outside records withheld)",
                r.scopes_excluded, r.scopes_planned
            );
        } else {
            let _ =
                writeln!(out, "  GAPS:      {} scopes incomplete (no deletes applied there):", r.gaps.len());
            for line in gaps.iter().take(20) {
                let _ = writeln!(out, "    {line}");
            }
            if gaps.len() > 20 {
                let _ = writeln!(out, "    ... and {} more (see `fhirsync status`)", gaps.len() - 20);
            }
        }
        for line in r.exclusion_lines() {
            let _ = writeln!(out, "  excluded:  {line}");
        }
        if !r.outcome_codes.is_empty() {
            let codes: Vec<String> = r.outcome_codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            let _ = writeln!(out, "  outcomes:  {}", codes.join(", "));
        }
    }
}
