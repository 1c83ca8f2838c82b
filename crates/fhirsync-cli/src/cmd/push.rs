//! `fhirsync push --type T FILE.ndjson`: create resources on the FHIR server (write-back).
//! The protocol (validation, the ledger that keeps a resource from being filed twice) is in
//! [`crate::push`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fhirsync_core::FhirVersion;
use fhirsync_extract::plan::Capabilities;

use crate::Globals;
use crate::cmd::{EXIT_CONFIG, EXIT_DESTINATION, EXIT_SOURCE, Failure};
use crate::config::FileConfig;
use crate::push::guard::{GuardError, push_line};
use crate::push::ledger::{Ledger, LedgerError, State};
use crate::push::send::Target;
use crate::push::validate::{Prepared, Rules, validate_all};
use crate::push::{LineResult, Status};

/// Invalid lines printed on the terminal (all of them are in the result file).
const MAX_PRINTED_PROBLEMS: usize = 20;
/// Line numbers listed in the summary per status.
const MAX_LISTED_LINES: usize = 20;

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
    };
    let (valid, invalid) = validate_all(&text, &rules);
    if valid.is_empty() && invalid.is_empty() {
        return Err(Failure::config(format!("{} holds no resources", args.file.display())));
    }
    let mut results: Vec<LineResult> = invalid
        .iter()
        .map(|b| LineResult::new(b.line, Status::Invalid, Vec::new()).with_error(b.problem.clone()))
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
        results.extend(valid.iter().map(|p| LineResult::new(p.line, Status::Skipped, p.notes.clone())));
        write_results(&results_path, &mut results)?;
        if invalid.is_empty() {
            let known = Ledger::peek(&config.sync.state_dir, &base, &ty).map_err(ledger_failure)?;
            let state =
                |s: State| valid.iter().filter(|p| known.get(&p.hash).is_some_and(|e| e.state == s)).count();
            println!(
                "{} lines valid for {ty} create on {version}; per the ledger {} already filed, {} pending; \
                 nothing sent (--dry-run)",
                valid.len(),
                state(State::Done) + state(State::Duplicate),
                state(State::Pending)
            );
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

    let mut ledger = Ledger::open(&config.sync.state_dir, &base, &ty).map_err(ledger_failure)?;
    let target = Target { client: &client, base: &base, resource_type: &ty };
    let sent = send_all(target, &mut ledger, &valid, args.retry_pending, &mut results).await;
    write_results(&results_path, &mut results)?;
    if let Err(e) = sent {
        let code = match &e.error {
            GuardError::Ledger(_) => EXIT_DESTINATION,
            GuardError::Fhir(f) => crate::cmd::fhir_exit_code(f),
        };
        return Err(Failure {
            code,
            message: format!(
                "push stopped at line {}: {}; lines before it are in {} and in the ledger {}",
                e.line,
                e.error,
                results_path.display(),
                ledger.path().display()
            ),
        }
        .into());
    }
    summarize(&ty, version, &results, &results_path, ledger.path())
}

/// Ledger problems are destination failures (exit 5), like a held run lock.
fn ledger_failure(e: LedgerError) -> anyhow::Error {
    Failure { code: EXIT_DESTINATION, message: e.to_string() }.into()
}

/// A failure that stopped the push at `line`.
struct Stopped {
    line: usize,
    error: GuardError,
}

/// Sends the valid lines in file order; a repeated line is sent once; after a line without a
/// definitive answer the rest are left unsent.
async fn send_all(
    target: Target<'_>,
    ledger: &mut Ledger,
    valid: &[Prepared],
    retry_pending: bool,
    results: &mut Vec<LineResult>,
) -> Result<(), Stopped> {
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut stopped_at = None;
    for item in valid {
        if let Some(first) = first_of.get(item.hash.as_str()) {
            let r = LineResult::new(item.line, Status::Repeated, item.notes.clone())
                .with_note(format!("same text as line {first}: sent once, as that line"));
            print_line(target.resource_type, &r);
            results.push(r);
            continue;
        }
        first_of.insert(&item.hash, item.line);
        if let Some(at) = stopped_at {
            results.push(
                LineResult::new(item.line, Status::Skipped, item.notes.clone())
                    .with_note(format!("not sent: the push stopped at line {at}; rerun to send it")),
            );
            continue;
        }
        match push_line(target, ledger, item, retry_pending).await {
            Ok(step) => {
                print_line(target.resource_type, &step.result);
                results.push(step.result);
                if step.stop {
                    stopped_at = Some(item.line);
                }
            }
            Err(error) => return Err(Stopped { line: item.line, error }),
        }
    }
    Ok(())
}

/// `obs.ndjson` → `obs.results.ndjson` next to it.
fn default_results_path(file: &Path) -> PathBuf {
    file.with_extension("results.ndjson")
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

/// `line 3` / `lines 3, 7, 12` (at most [`MAX_LISTED_LINES`], then `and N more`).
fn line_list(results: &[LineResult], status: Status) -> String {
    let lines: Vec<String> =
        results.iter().filter(|r| r.status == status).map(|r| r.line.to_string()).collect();
    let mut text = format!(
        "line{} {}",
        if lines.len() == 1 { "" } else { "s" },
        lines.iter().take(MAX_LISTED_LINES).cloned().collect::<Vec<_>>().join(", ")
    );
    if lines.len() > MAX_LISTED_LINES {
        text.push_str(&format!(" and {} more", lines.len() - MAX_LISTED_LINES));
    }
    text
}

fn summarize(
    ty: &str,
    version: FhirVersion,
    results: &[LineResult],
    path: &Path,
    ledger: &Path,
) -> anyhow::Result<()> {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let pending = count(Status::Pending);
    let failed = count(Status::Failed);
    let invalid = count(Status::Invalid);
    let unsent = count(Status::Skipped);
    let mut line = format!(
        "push {ty} to {version}: {} filed, {} already filed, {pending} pending (not retried{}), {} duplicate \
         (59141), {failed} failed",
        count(Status::Created),
        count(Status::AlreadyFiled),
        if pending > 0 { format!(": {}", line_list(results, Status::Pending)) } else { String::new() },
        count(Status::Duplicate),
    );
    for (n, what) in
        [(invalid, "invalid"), (unsent, "not sent (push stopped)"), (count(Status::Repeated), "repeated")]
    {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    println!("{line}; results in {}; ledger {}", path.display(), ledger.display());
    if pending + failed + invalid + unsent == 0 {
        return Ok(());
    }
    let mut problems = Vec::new();
    if pending > 0 {
        problems.push(format!(
            "{pending} pending ({}): sent without a definitive answer, so they may be on the server; \
             check the server (Epic keeps no client identifier to find them by), then rerun with \
             --retry-pending (a recorded id is read first and not re-sent if present)",
            line_list(results, Status::Pending)
        ));
    }
    if failed > 0 {
        problems.push(format!(
            "{failed} refused by the server ({}; reasons in {}): fix them and push again",
            line_list(results, Status::Failed),
            path.display()
        ));
    }
    if invalid > 0 {
        problems.push(format!("{invalid} invalid (see {})", path.display()));
    }
    if unsent > 0 {
        problems.push(format!("{unsent} not sent because the push stopped: rerun to send them"));
    }
    Err(Failure { code: EXIT_DESTINATION, message: problems.join("; ") }.into())
}
