//! `fhirsync push --type T FILE.ndjson`: create resources on the FHIR server (write-back),
//! never filing one twice ([`fhirsync::Push`]; the protocol is in [`fhirsync::push`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fhirsync::Config;
use fhirsync::core::FhirVersion;
use fhirsync::push::{LineResult, Status};

use crate::Globals;
use crate::cmd::{EXIT_DESTINATION, Failure};

/// Invalid lines printed on the terminal (all of them are in the result file).
const MAX_PRINTED_PROBLEMS: usize = 20;

/// Arguments of `fhirsync push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resource type of every line, e.g. Observation.
    #[arg(long = "type", short = 't')]
    pub resource_type: String,
    /// NDJSON file: one FHIR resource (JSON object) per line.
    pub file: PathBuf,
    /// Endpoint to create on: R4, STU3 or DSTU2.
    #[arg(long, default_value = "R4", value_parser = parse_version)]
    pub fhir_version: FhirVersion,
    /// Result file (NDJSON: line, status, id, error); default `<FILE stem>.results.ndjson`.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Send the valid lines even if others are invalid (default: send nothing then).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Validate the file against the endpoint's capabilities; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also send the lines the ledger holds as pending (sent by an interrupted push, answer
    /// unknown): one with a recorded id is read first and re-sent only if it is gone; one without
    /// is re-sent. Check the server first: Epic keeps no client key to find them by.
    #[arg(long)]
    pub retry_pending: bool,
}

/// `--fhir-version` values (clap prints the parser's error).
fn parse_version(s: &str) -> Result<FhirVersion, <FhirVersion as std::str::FromStr>::Err> {
    s.parse::<FhirVersion>()
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(&globals.config)?;
    let invalid_printed = Arc::new(AtomicUsize::new(0));
    let counter = invalid_printed.clone();
    let report = fhirsync::Push::new(config, args.resource_type, &args.file)
        .version(args.fhir_version)
        .results(args.results)
        .skip_invalid(args.skip_invalid)
        .dry_run(args.dry_run)
        .retry_pending(args.retry_pending)
        .on_line(Arc::new(move |ty, r| {
            if r.status != Status::Invalid || counter.fetch_add(1, Ordering::Relaxed) < MAX_PRINTED_PROBLEMS {
                print_line(ty, r);
            }
        }))
        .run()
        .await;
    let invalid = invalid_printed.load(Ordering::Relaxed);
    if invalid > MAX_PRINTED_PROBLEMS {
        println!("... and {} more invalid lines (see the result file)", invalid - MAX_PRINTED_PROBLEMS);
    }
    let report = report?;
    println!("{}", report.summary());
    let problems = report.problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure { code: EXIT_DESTINATION, message: problems.join("; ") }.into())
}

/// `line 3: created Observation/e1`, with the error or the notes after a colon.
fn print_line(ty: &str, r: &LineResult) {
    let id = r.id.as_deref().map(|id| format!(" {ty}/{id}")).unwrap_or_default();
    let detail = match &r.error {
        Some(e) => format!(": {e}"),
        None if r.notes.is_empty() => String::new(),
        None => format!(": {}", r.notes.join("; ")),
    };
    println!("line {}: {}{id}{detail}", r.line, r.status.name());
}
