//! `fhirsync sync`: one run from the configured Epic connection into the configured destination.

use fhirsync_land::Method;

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
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let mut config = FileConfig::load(&globals.config)?;
    if args.replace {
        config.land.replace = true;
    }
    let method = args.method.unwrap_or(config.sync.method);
    let settings = config.auth_settings()?;
    let http = fhirsync_auth::http_client()?;
    let tokens = settings.provider(&http).await?;
    let show = !args.no_progress;
    let outcome = pipeline::sync(&config, method, tokens, show).await?;
    pipeline::print_summary(&outcome);
    match outcome.gaps_failure() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

/// `--method` values.
pub fn parse_method(s: &str) -> Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}
