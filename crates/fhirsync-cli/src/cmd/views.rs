//! `fhirsync views ...`: run a SQL-on-FHIR ViewDefinition over an NDJSON file, list the views
//! shipped with fhirsync ([`fhirsync::flatten`]).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use fhirsync::flatten::{Format, flatten, resolve_view, views_with_origin, write_list};
use tracing::info;

use crate::Globals;
use crate::cmd::Failure;

/// Subcommands of `fhirsync views`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a ViewDefinition over an NDJSON file and print the rows.
    Run(RunArgs),
    /// List the default views (and, with --dir, the views in a folder).
    List(ListArgs),
}

/// Arguments of `fhirsync views run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// ViewDefinition JSON file, or the name of a default view (see `fhirsync views list`).
    pub view: String,
    /// NDJSON file with one FHIR resource per line (`-` reads standard input).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write the rows to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Arguments of `fhirsync views list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also list the ViewDefinitions (`*.json`) in this folder.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Show each view's columns and types.
    #[arg(long)]
    pub columns: bool,
}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => tokio::task::spawn_blocking(move || run_view(&args)).await?,
        Command::List(args) => {
            let views = views_with_origin(args.dir.as_deref())?;
            write_list(&mut std::io::stdout().lock(), &views, args.columns)?;
            Ok(())
        }
    }
}

fn run_view(args: &RunArgs) -> anyhow::Result<()> {
    let view = resolve_view(&args.view)?;
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(&args.input)
            .map_err(|e| Failure::config(format!("cannot open input {}: {e}", args.input.display())))?;
        Box::new(BufReader::new(file))
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create output file {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let stats = flatten(&view, input, &mut out, args.format)?;
    out.flush().context("cannot write the rows")?;
    info!(view = view.name(), resources = stats.resources, rows = stats.rows, "View evaluated.");
    Ok(())
}
