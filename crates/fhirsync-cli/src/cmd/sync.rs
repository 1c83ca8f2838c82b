//! `fhirsync sync`: one run from the configured Epic connection into the configured destination.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhirsync_fhir::Recorder;
use fhirsync_land::Method;

use super::Failure;
use crate::Globals;
use crate::config::FileConfig;
use crate::pipeline;

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
    /// Also write every FHIR answer of the run into DIR, one JSON file per request, to serve
    /// them again with `fhirsync sandbox --replay DIR`. Tokens and secrets are never written;
    /// patient data is: the folder holds PHI.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let mut config = FileConfig::load(&globals.config)?;
    if args.replace {
        config.land.replace = true;
    }
    if let Some(dir) = &args.record {
        let recorder = Recorder::create(dir).map_err(|e| Failure::config(e.to_string()))?;
        warn_phi(dir);
        config.sync.recorder = Some(Arc::new(recorder));
    }
    let method = args.method.unwrap_or(config.sync.method);
    let settings = config.auth_settings()?;
    let http = fhirsync_auth::http_client()?;
    let tokens = settings.provider(&http).await?;
    let show = !args.no_progress;
    let outcome = pipeline::sync(&config, method, tokens, show).await;
    if let Some(recorder) = &config.sync.recorder {
        report_recording(recorder);
    }
    let outcome = outcome?;
    pipeline::print_summary(&outcome);
    match outcome.gaps_failure() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
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

/// `--method` values.
pub fn parse_method(s: &str) -> Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}
