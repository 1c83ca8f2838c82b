//! `fhirsync status`: the destination's recent runs and the latest run's gaps
//! ([`fhirsync::Status`]). A destination where nothing was landed yet exits 0.

use fhirsync::Config;
use fhirsync::status::DEFAULT_LIMIT;

use crate::Globals;

/// Arguments of `fhirsync status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many recent runs to list, newest first.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
    /// Show the gaps, outcome codes and errors of this run instead of the latest one.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Print JSON (`{destination, runs, detail}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    // Only `[destination]` matters: no connection or cohort settings are needed.
    let config = Config::read(&globals.config)?;
    let report = fhirsync::Status::new(&config.destination).limit(args.limit).run_id(args.run).run().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        // Patient ids only when asked for (`-v`): the default output goes to logs and tickets.
        print!("{}", report.text(globals.verbose > 0));
    }
    Ok(())
}
