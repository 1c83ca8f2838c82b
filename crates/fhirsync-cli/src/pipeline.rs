//! One sync run: auth → fhir client → extract → land → views.
//!
//! Extraction (async, network-bound) and landing (blocking, on tokio's blocking pool) run
//! concurrently, joined by a bounded channel, so memory stays bounded whatever the export size.
//! If extraction fails, the run is marked failed and its durable staging is kept: the next run
//! of the same method resumes it and skips the scopes already completed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fhirsync_auth::TokenProvider;
use fhirsync_extract::{ExclusionBaseline, ExtractReport, Extraction};
use fhirsync_land::{Landing, Method, RunMetrics};
use tracing::{info, warn};

use crate::cmd::{EXIT_DESTINATION, EXIT_SOURCE, Failure};
use crate::config::FileConfig;

/// Capacity of the extract → land channel, in events (one event is one page).
pub const CHANNEL_CAPACITY: usize = 16;

/// What a finished sync did.
#[derive(Debug)]
pub struct SyncOutcome {
    /// Landing metrics (run id, inserted/updated/deleted/unchanged, view rows).
    pub metrics: RunMetrics,
    /// Extraction report (cohort, datasets, pages, outcome codes, gaps).
    pub report: ExtractReport,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Runs one sync with `method`: a progress bar when `show_progress` and stderr is a terminal,
/// plain progress log lines otherwise.
pub async fn sync(
    config: &FileConfig,
    method: Method,
    tokens: Arc<dyn TokenProvider>,
    show_progress: bool,
) -> anyhow::Result<SyncOutcome> {
    let started = Instant::now();
    let destination = describe_destination(config);

    // Authenticate before the destination is opened: refused credentials create nothing there
    // (no database, no failed run to "resume").
    tokens.access_token().await.context("cannot authenticate; nothing was changed at the destination")?;

    // The destination takes its writer lock where the data lives (a PostgreSQL advisory lock,
    // a lock file next to the SQLite database or inside the folder); a second writer fails
    // here, naming the holder.
    let mut landing =
        Landing::begin(config.destination.clone(), method, config.land.clone()).await.map_err(|e| {
            Failure { code: EXIT_DESTINATION, message: format!("destination {destination}: {e}") }
        })?;
    let run = landing.run().clone();
    if run.resumed {
        info!(run_id = %run.run_id, skipped_scopes = run.completed_scopes.len(), "Resuming an interrupted run.");
    } else {
        info!(run_id = %run.run_id, method = %method, destination = %destination, "Run started.");
    }

    let baseline = if method == Method::FullLoad { None } else { exclusion_baseline(config).await? };
    let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)
        .map_err(|e| Failure::config(e.to_string()))?;
    if let Some(recorder) = &config.sync.recorder
        && client.record_to(recorder.clone()).is_err()
    {
        warn!("The FHIR client already records into another folder; --record is ignored for this run.");
    }
    let extraction = Extraction::new(client, &config.connection, config.extract.clone())
        .map_err(|e| Failure::config(e.to_string()))?
        .skip(run.completed_scopes.clone())
        .exclusion_baseline(baseline)
        .state_dir(config.sync.state_dir.join("bulk"));
    let progress_task = crate::progress::spawn(extraction.progress(), show_progress);

    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
    let (staged, extracted) = tokio::join!(landing.stage_events(rx), extraction.run(tx));
    progress_task.abort();

    let report = match (extracted, staged) {
        (Ok(report), Ok(_)) => report,
        (Err(e), staged) => {
            let message = format!("{e}");
            if let Err(le) = staged {
                warn!(error = %le, "Staging also failed.");
            }
            mark_failed(landing, message.clone()).await;
            return Err(Failure {
                code: extract_exit_code(&e),
                message: format!(
                    "extraction failed: {message}\nwhat was landed before is intact; rerun to resume"
                ),
            }
            .into());
        }
        (Ok(_), Err(e)) => {
            mark_failed(landing, e.to_string()).await;
            return Err(Failure {
                code: EXIT_DESTINATION,
                message: format!("destination {destination}: {e}"),
            }
            .into());
        }
    };

    let views = config.views.load()?;
    let report_json = serde_json::to_value(&report).context("cannot serialise the run report")?;
    let metrics = landing.commit(report.scope.clone(), views, report_json).await.map_err(|e| Failure {
        code: EXIT_DESTINATION,
        message: format!("destination {destination}: {e}"),
    })?;
    Ok(SyncOutcome { metrics, report, resumed: run.resumed, elapsed: started.elapsed() })
}

/// What the last committed run saw withheld (59204/59205 sub-types), for the licence-change
/// rule: `None` when nothing was committed yet (no landed rows to protect); an empty baseline
/// when the last committed run predates the rule, so every exclusion counts as new once.
async fn exclusion_baseline(config: &FileConfig) -> anyhow::Result<Option<ExclusionBaseline>> {
    /// Runs looked at to find the last committed one.
    const HISTORY: usize = 100;
    let dest = config.destination.clone();
    let runs = tokio::task::spawn_blocking(move || fhirsync_land::recent_runs(&dest, HISTORY))
        .await
        .context("the run history reader stopped")?
        .map_err(|e| Failure {
            code: EXIT_DESTINATION,
            message: format!("cannot read the run history of {}: {e}", describe_destination(config)),
        })?;
    let Some(last) = runs.into_iter().find(|r| fhirsync_land::is_committed(&r.status)) else {
        return Ok(None);
    };
    let baseline = last
        .report
        .as_ref()
        .and_then(|r| r.get("exclusion_baseline"))
        .and_then(|b| serde_json::from_value::<ExclusionBaseline>(b.clone()).ok())
        .unwrap_or_default();
    Ok(Some(baseline))
}

/// Records the run as failed; its staging stays for the next run to resume. A failure to record
/// it is logged, not raised: the error that stopped the run is the one to report.
async fn mark_failed(landing: Landing, message: String) {
    if let Err(error) = landing.fail(message).await {
        warn!(%error, "Could not mark the run as failed; the next run will still resume its staging.");
    }
}

fn extract_exit_code(e: &fhirsync_extract::Error) -> u8 {
    use fhirsync_extract::Error as E;
    match e {
        E::Fhir(f) => crate::cmd::fhir_exit_code(f),
        E::InvalidConfig { .. }
        | E::ConfigSyntax { .. }
        | E::InlineSecret { .. }
        | E::SecretUnavailable { .. } => crate::cmd::EXIT_CONFIG,
        _ => EXIT_SOURCE,
    }
}

/// Human name of the destination (path, folder or database), never with credentials.
pub fn describe_destination(config: &FileConfig) -> String {
    use fhirsync_land::DestinationConfig as D;
    match &config.destination {
        D::Sqlite(c) => format!("sqlite:{}", c.path.display()),
        D::Postgres(c) => format!("postgres:{}", c.schema),
        D::Parquet(c) => format!("parquet:{}", c.dir.display()),
        D::Ndjson(c) => format!("ndjson:{}", c.dir.display()),
        D::Delta(c) => format!("delta:{}", c.uri),
    }
}

impl SyncOutcome {
    /// True when the run has gaps: it committed, but "complete" cannot be claimed.
    pub fn has_gaps(&self) -> bool {
        !self.report.gaps.is_empty()
    }

    /// The failure a run with gaps ends with ([`crate::cmd::EXIT_GAPS`]); `None` when complete.
    pub fn gaps_failure(&self) -> Option<Failure> {
        self.has_gaps().then(|| Failure {
            code: crate::cmd::EXIT_GAPS,
            message: format!(
                "run {} completed with gaps: {} of {} scopes incomplete, their rows kept (not deleted); \
                 see `fhirsync status`, fix the cause and rerun",
                self.metrics.run_id,
                self.report.gaps.len(),
                self.report.scopes_planned
            ),
        })
    }
}

/// Prints the end-of-run summary to stdout: counts, then the gaps, then the exclusions. No
/// patient ids.
pub fn print_summary(outcome: &SyncOutcome) {
    let m = &outcome.metrics;
    let r = &outcome.report;
    let status = if outcome.has_gaps() { "completed with gaps" } else { "succeeded" };
    println!(
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
    println!(
        "  extracted: {} patients, {} datasets, {} resources ({} distinct){resent} in {} pages ({} requests, {} retries)",
        r.patients,
        r.datasets.len(),
        r.resources,
        m.staged,
        r.pages,
        r.http.requests,
        r.http.retries
    );
    match m.method.as_str() {
        // Reload and full load do not compare: re-read rows are replaced, not classified.
        "reload-and-compare" => println!(
            "  landed:    {} inserted, {} updated, {} deleted, {} kept (scope not complete this run), {} unchanged; {} view rows",
            m.inserted, m.updated, m.deleted, m.kept, m.unchanged, m.view_rows
        ),
        _ => println!(
            "  landed:    {} re-read and replaced ({} new), {} deleted, {} kept (scope not complete this run); {} view rows",
            m.staged, m.inserted, m.deleted, m.kept, m.view_rows
        ),
    }
    if m.cohort_exits > 0 {
        println!("  cohort:    {} patients left the cohort (flagged, not deleted)", m.cohort_exits);
    }
    if !r.datasets_not_offered.is_empty() {
        println!(
            "  not offered by the server's statement (not fetched; name them in [extract] datasets to try): {}",
            r.datasets_not_offered.join(", ")
        );
    }
    let gaps = r.gap_lines();
    if gaps.is_empty() {
        println!(
            "  complete:  every scope fetched completely ({} of {} with outside records withheld)",
            r.scopes_excluded, r.scopes_planned
        );
    } else {
        println!("  GAPS:      {} scopes incomplete (no deletes applied there):", r.gaps.len());
        for line in gaps.iter().take(20) {
            println!("    {line}");
        }
        if gaps.len() > 20 {
            println!("    ... and {} more (see `fhirsync status`)", gaps.len() - 20);
        }
    }
    for line in r.exclusion_lines() {
        println!("  excluded:  {line}");
    }
    if !r.outcome_codes.is_empty() {
        let codes: Vec<String> = r.outcome_codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        println!("  outcomes:  {}", codes.join(", "));
    }
}
