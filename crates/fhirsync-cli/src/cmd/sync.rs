//! `fhirsync sync`: one run from the configured Epic connection into the configured destination.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fhirsync::fhir::Recorder;
use fhirsync::metrics::{self, MetricsFile, RunFigures};
use fhirsync::{Config, Method, Sync, SyncReport};
use tracing::{info, warn};

use crate::Globals;
use crate::cmd::{EXIT_CONFIG, EXIT_GAPS, Failure};

/// Arguments of `fhirsync sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Update method: full-load, reload or reload-and-compare (default: `[sync] method`).
    #[arg(long, short = 'm', value_parser = parse_method)]
    pub method: Option<Method>,
    /// full-load only: overwrite a destination that already holds data.
    #[arg(long)]
    pub replace: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// After the run (also a failed one), write its figures to this file in Prometheus text
    /// format, replaced atomically (for node_exporter's textfile collector: name it `*.prom`).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Also write every FHIR answer of the run into DIR, one JSON file per request, to serve
    /// them again with `fhirsync sandbox --replay DIR`. Tokens and secrets are never written;
    /// patient data is: the folder holds PHI.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
}

/// The labels of the metrics, filled in as far as the run got.
#[derive(Debug)]
struct Labels {
    destination: &'static str,
    method: String,
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let metrics_file = match &args.metrics_file {
        Some(path) => Some(MetricsFile::new(path).map_err(|e| Failure::config(e.to_string()))?),
        None => None,
    };
    let clock = Instant::now();
    let mut labels = Labels { destination: metrics::UNKNOWN, method: metrics::UNKNOWN.into() };
    let outcome = sync_once(&args, globals, &mut labels).await;
    let result = match &outcome {
        Ok(report) => {
            print!("{}", report.summary());
            gaps_failure(report).map_or(Ok(()), |failure| Err(failure.into()))
        }
        Err(_) => Ok(()),
    };
    let Some(file) = metrics_file else { return outcome.and(result) };
    let exit_code = match (&outcome, &result) {
        (Err(e), _) | (Ok(_), Err(e)) => crate::cmd::exit_code(e),
        (Ok(_), Ok(())) => 0,
    };
    let text = metrics::render(&RunFigures {
        destination: labels.destination,
        method: &labels.method,
        outcome: outcome.as_ref().ok(),
        exit_code,
        duration: clock.elapsed(),
        ended: SystemTime::now(),
        previous_success: file.previous_success(),
    });
    match file.write(&text) {
        Ok(()) => info!(path = %file.path().display(), "Metrics written."),
        Err(error) => {
            warn!(%error, "Could not write the metrics file.");
            // A failed run's own error is the one to report; a committed run fails on this one.
            if outcome.is_ok() {
                return Err(Failure {
                    code: EXIT_CONFIG,
                    message: format!("the run committed, but {error}"),
                }
                .into());
            }
        }
    }
    outcome.and(result)
}

/// The failure a run with gaps ends with ([`EXIT_GAPS`]); `None` when complete.
pub fn gaps_failure(report: &SyncReport) -> Option<Failure> {
    report.has_gaps().then(|| Failure {
        code: EXIT_GAPS,
        message: format!(
            "run {} completed with gaps: {} of {} scopes incomplete, their rows kept (not deleted); \
             see `fhirsync status`, fix the cause and rerun",
            report.metrics.run_id,
            report.report.gaps.len(),
            report.report.scopes_planned
        ),
    })
}

/// Loads the configuration, authenticates and runs one sync.
async fn sync_once(args: &Args, globals: &Globals, labels: &mut Labels) -> anyhow::Result<SyncReport> {
    let mut config = Config::load(&globals.config)?;
    if args.replace {
        config.land.replace = true;
    }
    let method = args.method.unwrap_or(config.sync.method);
    labels.destination = config.destination.kind();
    labels.method = method.to_string();
    let mut sync = Sync::new(config).method(method);
    if !args.no_progress {
        sync = sync.progress(crate::progress::sink());
    }
    let recorder = match &args.record {
        Some(dir) => {
            let recorder = Arc::new(Recorder::create(dir).map_err(|e| Failure::config(e.to_string()))?);
            warn_phi(dir);
            sync = sync.record_to(recorder.clone());
            Some(recorder)
        }
        None => None,
    };
    let outcome = sync.run().await;
    if let Some(recorder) = &recorder {
        report_recording(recorder);
    }
    Ok(outcome?)
}

/// The warning shown before a recording starts (stderr and the log).
fn warn_phi(dir: &Path) {
    eprintln!(
        "warning: --record writes every FHIR answer of this run into {}: the folder holds patient data (PHI).\n\
         It stays on this machine unless you copy it; protect it like the destination and delete it when done.\n\
         Access tokens, client secrets and assertions are never written.",
        dir.display()
    );
    tracing::warn!(
        dir = %dir.display(),
        "Recording FHIR answers: the folder holds patient data (PHI) and stays on this machine unless copied."
    );
}

/// What the recording holds at the end of the run (also after a failed run).
fn report_recording(recorder: &Recorder) {
    eprintln!(
        "recorded {} answers into {} (serve them with `fhirsync sandbox --replay {}`)",
        recorder.written(),
        recorder.dir().display(),
        recorder.dir().display()
    );
    if recorder.failed() > 0 {
        eprintln!(
            "warning: {} answers could not be written (see the log): the recording is incomplete",
            recorder.failed()
        );
    }
    tracing::info!(written = recorder.written(), failed = recorder.failed(), "Recording finished.");
}

/// `--method` values (clap prints the parser's error, which lists the valid names).
pub fn parse_method(s: &str) -> Result<Method, <Method as std::str::FromStr>::Err> {
    s.parse::<Method>()
}
