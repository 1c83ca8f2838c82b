//! `fhirsync push --type T FILE.ndjson`: create resources on the FHIR server (write-back).
//! The protocol (validation, duplicate key, search before re-sending) is in [`crate::push`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fhirsync_core::FhirVersion;
use fhirsync_extract::plan::Capabilities;

use crate::Globals;
use crate::cmd::{EXIT_CONFIG, EXIT_DESTINATION, EXIT_SOURCE, Failure};
use crate::config::FileConfig;
use crate::push::send::{self, LineResult, Status, Target};
use crate::push::validate::{Rules, validate_all};

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
    /// Do not add a `urn:fhirsync:push` identifier to resources without one (the duplicate
    /// check after an unacknowledged create then compares content only).
    #[arg(long)]
    pub no_identifier: bool,
}

fn parse_version(s: &str) -> Result<FhirVersion, String> {
    s.parse::<FhirVersion>().map_err(|e| e.to_string())
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = FileConfig::load(&globals.config)?;
    let version = args.fhir_version;
    let endpoints = config.connection.endpoints().map_err(|e| Failure::config(e.to_string()))?;
    let base = endpoints.get(version).cloned().ok_or_else(|| {
        Failure::config(format!(
            "no {version} endpoint is configured: set fhir_{}_endpoint in [connection]",
            version.as_str().to_ascii_lowercase()
        ))
    })?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::config(format!("cannot read {}: {e}", args.file.display())))?;
    let results_path = args.results.clone().unwrap_or_else(|| default_results_path(&args.file));

    let settings = config.auth_settings()?;
    let http = fhirsync_auth::http_client()?;
    let tokens = settings.provider(&http).await?;
    let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)
        .map_err(|e| Failure::config(e.to_string()))?;
    let metadata = client.metadata(&base).await.map_err(|e| Failure::fhir(&e))?;
    let caps = Capabilities::parse(&metadata).map_err(|problem| Failure {
        code: EXIT_SOURCE,
        message: format!("the {version} CapabilityStatement cannot be read: {problem}"),
    })?;

    let ty = args.resource_type.trim().to_string();
    if !caps.create.contains(&ty) {
        let allowed: Vec<&str> = caps.create.iter().map(String::as_str).collect();
        return Err(Failure::config(format!(
            "{ty} cannot be created on the {version} endpoint: its CapabilityStatement has no create \
             interaction for {ty}; types it can create: {}",
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        )));
    }
    let rules = Rules {
        resource_type: ty.clone(),
        needs_patient: ty != "Patient" && caps.patient_param(&ty).is_some(),
        add_identifier: !args.no_identifier,
    };
    let (valid, invalid) = validate_all(&text, &rules);
    if valid.is_empty() && invalid.is_empty() {
        return Err(Failure::config(format!("{} holds no resources", args.file.display())));
    }
    let mut results: Vec<LineResult> = invalid
        .iter()
        .map(|b| LineResult {
            line: b.line,
            status: Status::Invalid,
            id: None,
            error: Some(b.problem.clone()),
            notes: Vec::new(),
        })
        .collect();
    for bad in invalid.iter().take(MAX_PRINTED_PROBLEMS) {
        println!("line {}: invalid: {}", bad.line, bad.problem);
    }
    if invalid.len() > MAX_PRINTED_PROBLEMS {
        println!(
            "... and {} more invalid lines (see {})",
            invalid.len() - MAX_PRINTED_PROBLEMS,
            results_path.display()
        );
    }
    if args.dry_run || (!invalid.is_empty() && !args.skip_invalid) {
        results.extend(valid.iter().map(|p| LineResult {
            line: p.line,
            status: Status::Skipped,
            id: None,
            error: None,
            notes: p.notes.clone(),
        }));
        write_results(&results_path, &mut results)?;
        if invalid.is_empty() {
            println!("{} lines valid for {ty} create on {version}; nothing sent (--dry-run)", valid.len());
            return Ok(());
        }
        return Err(Failure {
            code: EXIT_CONFIG,
            message: format!(
                "{} of {} lines of {} are invalid; nothing was sent. Fix them (problems in {}) or pass \
                 --skip-invalid to send the valid ones",
                invalid.len(),
                invalid.len() + valid.len(),
                args.file.display(),
                results_path.display()
            ),
        }
        .into());
    }

    let target = Target { client: &client, base: &base, resource_type: &ty, caps: &caps };
    for item in &valid {
        match send::create(target, item).await {
            Ok(r) => {
                print_line(&ty, &r);
                results.push(r);
            }
            Err(e) => {
                write_results(&results_path, &mut results)?;
                let failure = Failure::fhir(&e);
                return Err(failure.context(format!(
                    "push stopped at line {}; lines before it are in {}",
                    item.line,
                    results_path.display()
                )));
            }
        }
    }
    write_results(&results_path, &mut results)?;
    summarize(&ty, version, &results, &results_path)
}

/// `obs.ndjson` → `obs.results.ndjson` next to it.
fn default_results_path(file: &Path) -> PathBuf {
    file.with_extension("results.ndjson")
}

fn print_line(ty: &str, r: &LineResult) {
    match (r.status, &r.id, &r.error) {
        (Status::Created, Some(id), _) if is_recovered(r) => println!(
            "line {}: created {ty}/{id} (create not acknowledged; found on the server by search, not re-sent)",
            r.line
        ),
        (Status::Created, Some(id), _) => println!("line {}: created {ty}/{id}", r.line),
        (Status::Created, None, _) => println!("line {}: created (the server sent no Location)", r.line),
        (status, _, error) => {
            println!("line {}: {}: {}", r.line, status_name(status), error.as_deref().unwrap_or("-"))
        }
    }
}

/// Created after an unacknowledged create, confirmed by the duplicate-check search.
fn is_recovered(r: &LineResult) -> bool {
    r.notes.iter().any(|n| n.contains("found on the server"))
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Invalid => "invalid",
        Status::Failed => "failed",
        Status::Unconfirmed => "UNCONFIRMED",
        Status::Skipped => "skipped",
    }
}

fn write_results(path: &Path, results: &mut [LineResult]) -> anyhow::Result<()> {
    results.sort_by_key(|r| r.line);
    let mut out = String::new();
    for r in results.iter() {
        out.push_str(&serde_json::to_string(r).context("cannot serialise a result line")?);
        out.push('\n');
    }
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("cannot write the result file {}", path.display()))?;
    file.write_all(out.as_bytes()).with_context(|| format!("cannot write the result file {}", path.display()))
}

fn summarize(ty: &str, version: FhirVersion, results: &[LineResult], path: &Path) -> anyhow::Result<()> {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let recovered = results.iter().filter(|r| is_recovered(r)).count();
    let (created, failed, unconfirmed, invalid) =
        (count(Status::Created), count(Status::Failed), count(Status::Unconfirmed), count(Status::Invalid));
    println!(
        "push {ty} to {version}: {created} created ({recovered} confirmed by search after an unacknowledged \
         create), {failed} failed, {unconfirmed} unconfirmed, {invalid} invalid; results in {}",
        path.display()
    );
    if failed + unconfirmed + invalid == 0 {
        return Ok(());
    }
    Err(Failure {
        code: EXIT_DESTINATION,
        message: format!(
            "{} of {} lines were not created (see {}){}",
            failed + unconfirmed + invalid,
            results.len(),
            path.display(),
            if unconfirmed > 0 {
                "; UNCONFIRMED lines may exist on the server: check before pushing them again"
            } else {
                ""
            }
        ),
    }
    .into())
}
