//! [`Push`]: the whole write-back of one file, from the capability check to the result file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fhirsync_auth::TokenProvider;
use fhirsync_core::FhirVersion;
use fhirsync_extract::plan::Capabilities;
use fhirsync_fhir::FhirClient;
use url::Url;

use super::guard::push_line;
use super::ledger::{Ledger, State};
use super::send::Target;
use super::validate::{Prepared, Rules, validate_all};
use super::{LineResult, Status};
use crate::config::Config;
use crate::{Error, Result};

/// Line numbers listed in a problem per status.
const MAX_LISTED_LINES: usize = 20;

/// Receives each line's result as soon as it is known (invalid lines first, then each line
/// sent), for live output; every result is also in [`PushReport::results`].
pub type LineSink = Arc<dyn Fn(&str, &LineResult) + Send + std::marker::Sync>;

/// Creates the resources of an NDJSON file on the FHIR server, never filing one twice:
/// `Push::new(config, "Observation", "obs.ndjson").run().await`. See [`crate::push`].
#[must_use = "a Push does nothing until `run` is awaited"]
pub struct Push {
    config: Config,
    resource_type: String,
    file: PathBuf,
    version: FhirVersion,
    results: Option<PathBuf>,
    skip_invalid: bool,
    dry_run: bool,
    retry_pending: bool,
    on_line: Option<LineSink>,
    tokens: Option<Arc<dyn TokenProvider>>,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("resource_type", &self.resource_type)
            .field("file", &self.file)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Debug)]
pub struct PushReport {
    /// Type of every line.
    pub resource_type: String,
    /// Endpoint created on.
    pub version: FhirVersion,
    /// Every line's result, in line order (also written to [`PushReport::results_path`]).
    pub results: Vec<LineResult>,
    /// The result file.
    pub results_path: PathBuf,
    /// The ledger (`None` for a dry run, which opens none).
    pub ledger_path: Option<PathBuf>,
    /// For a dry run: lines the ledger holds as filed, and as pending.
    pub dry_run: Option<(usize, usize)>,
}

impl Push {
    /// A push of `file`, every line of type `resource_type`, to the R4 endpoint.
    pub fn new(config: Config, resource_type: impl Into<String>, file: impl Into<PathBuf>) -> Push {
        Push {
            config,
            resource_type: resource_type.into().trim().to_string(),
            file: file.into(),
            version: FhirVersion::R4,
            results: None,
            skip_invalid: false,
            dry_run: false,
            retry_pending: false,
            on_line: None,
            tokens: None,
        }
    }

    /// The endpoint to create on.
    pub fn version(mut self, version: FhirVersion) -> Push {
        self.version = version;
        self
    }

    /// The result file (default `<file stem>.results.ndjson` next to the file).
    pub fn results(mut self, path: Option<PathBuf>) -> Push {
        self.results = path;
        self
    }

    /// Send the valid lines even if others are invalid (default: send nothing then).
    pub fn skip_invalid(mut self, yes: bool) -> Push {
        self.skip_invalid = yes;
        self
    }

    /// Validate only; send nothing.
    pub fn dry_run(mut self, yes: bool) -> Push {
        self.dry_run = yes;
        self
    }

    /// Also send the lines the ledger holds as pending (see [`crate::push`], step 3).
    pub fn retry_pending(mut self, yes: bool) -> Push {
        self.retry_pending = yes;
        self
    }

    /// Report each line's result as it is known.
    pub fn on_line(mut self, sink: LineSink) -> Push {
        self.on_line = Some(sink);
        self
    }

    /// Use these tokens instead of authenticating from `[connection]`.
    pub fn tokens(mut self, tokens: Arc<dyn TokenProvider>) -> Push {
        self.tokens = Some(tokens);
        self
    }

    fn emit(&self, r: &LineResult) {
        if let Some(sink) = &self.on_line {
            sink(&self.resource_type, r);
        }
    }

    /// Runs the push. Lines the server refused or left pending are in the report
    /// ([`PushReport::problems`]), not an error; a push that had to stop is
    /// [`Error::PushStopped`].
    pub async fn run(self) -> Result<PushReport> {
        let (config, version, ty) = (&self.config, self.version, self.resource_type.clone());
        let endpoints = config.connection.endpoints();
        let base = endpoints.get(version).cloned().ok_or_else(|| {
            Error::config(format!(
                "no {version} endpoint is configured: set fhir_{}_endpoint in [connection]",
                version.as_str().to_ascii_lowercase()
            ))
        })?;
        let text = std::fs::read_to_string(&self.file).map_err(|source| Error::File {
            action: "read",
            path: self.file.clone(),
            source,
        })?;
        let results_path = self.results.clone().unwrap_or_else(|| self.file.with_extension("results.ndjson"));

        let tokens = match self.tokens.clone() {
            Some(tokens) => tokens,
            None => config.token_provider().await?,
        };
        let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)?;
        let rules = self.rules(&client, &base).await?;
        let (valid, invalid) = validate_all(&text, &rules);
        if valid.is_empty() && invalid.is_empty() {
            return Err(Error::config(format!("{} holds no resources", self.file.display())));
        }
        let mut results: Vec<LineResult> = invalid
            .iter()
            .map(|b| LineResult::new(b.line, Status::Invalid, Vec::new()).with_error(b.problem.to_string()))
            .collect();
        results.iter().for_each(|r| self.emit(r));
        let report = |results, ledger_path, dry_run| PushReport {
            resource_type: ty.clone(),
            version,
            results,
            results_path: results_path.clone(),
            ledger_path,
            dry_run,
        };

        if self.dry_run || (!invalid.is_empty() && !self.skip_invalid) {
            results.extend(valid.iter().map(|p| LineResult::new(p.line, Status::Skipped, p.notes.clone())));
            write_results(&results_path, &mut results)?;
            if !invalid.is_empty() {
                return Err(Error::InvalidLines {
                    invalid: invalid.len(),
                    lines: invalid.len() + valid.len(),
                    file: self.file.clone(),
                    results: results_path,
                });
            }
            let known = Ledger::peek(&config.sync.state_dir, &base, &ty)?;
            let state =
                |s: State| valid.iter().filter(|p| known.get(&p.hash).is_some_and(|e| e.state == s)).count();
            let filed = state(State::Done) + state(State::Duplicate);
            return Ok(report(results, None, Some((filed, state(State::Pending)))));
        }

        let mut ledger = Ledger::open(&config.sync.state_dir, &base, &ty)?;
        let target = Target { client: &client, base: &base, resource_type: &ty };
        let sent = self.send_all(target, &mut ledger, &valid, &mut results).await;
        write_results(&results_path, &mut results)?;
        if let Err((line, source)) = sent {
            return Err(Error::PushStopped {
                line,
                results: results_path,
                ledger: ledger.path().to_path_buf(),
                source: Box::new(source),
            });
        }
        Ok(report(results, Some(ledger.path().to_path_buf()), None))
    }

    /// The checks every line must pass, from the endpoint's CapabilityStatement; fails when the
    /// endpoint cannot create the resource type.
    async fn rules(&self, client: &FhirClient, base: &Url) -> Result<Rules> {
        let (version, ty) = (self.version, &self.resource_type);
        let metadata = client.metadata(base).await?;
        let caps =
            Capabilities::parse(&metadata).map_err(|source| Error::Capabilities { version, source })?;
        if !caps.create.contains(ty) {
            let allowed: Vec<&str> = caps.create.iter().map(String::as_str).collect();
            return Err(Error::config(format!(
                "{ty} cannot be created on the {version} endpoint: its CapabilityStatement has no create \
                 interaction for {ty}; types it can create: {}",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )));
        }
        Ok(Rules {
            resource_type: ty.clone(),
            needs_patient: ty != "Patient" && caps.patient_param(ty).is_some(),
        })
    }

    /// Sends the valid lines in file order; a repeated line is sent once; after a line without a
    /// definitive answer the rest are left unsent.
    async fn send_all(
        &self,
        target: Target<'_>,
        ledger: &mut Ledger,
        valid: &[Prepared],
        results: &mut Vec<LineResult>,
    ) -> Result<(), (usize, super::guard::GuardError)> {
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let mut stopped_at = None;
        for item in valid {
            if let Some(first) = first_of.get(item.hash.as_str()) {
                let r = LineResult::new(item.line, Status::Repeated, item.notes.clone())
                    .with_note(format!("same text as line {first}: sent once, as that line"));
                self.emit(&r);
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
            let step =
                push_line(target, ledger, item, self.retry_pending).await.map_err(|e| (item.line, e))?;
            self.emit(&step.result);
            results.push(step.result);
            if step.stop {
                stopped_at = Some(item.line);
            }
        }
        Ok(())
    }
}

fn write_results(path: &Path, results: &mut [LineResult]) -> Result<()> {
    results.sort_by_key(|r| r.line);
    let mut out = String::new();
    for r in results.iter() {
        // A LineResult holds strings and numbers only: it always serialises.
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    let io = |source| Error::File { action: "write the result file", path: path.to_path_buf(), source };
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(out.as_bytes()).map_err(io)
}

impl PushReport {
    /// Lines with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// `line 3` / `lines 3, 7, 12` (at most 20, then `and N more`).
    pub fn line_list(&self, status: Status) -> String {
        let lines: Vec<String> =
            self.results.iter().filter(|r| r.status == status).map(|r| r.line.to_string()).collect();
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

    /// The one-line summary: filed, already filed, pending, duplicate, failed, and the rest.
    pub fn summary(&self) -> String {
        let (ty, version) = (&self.resource_type, self.version);
        if let Some((filed, pending)) = self.dry_run {
            return format!(
                "{} lines valid for {ty} create on {version}; per the ledger {filed} already filed, {pending} pending; \
                 nothing sent (--dry-run)",
                self.count(Status::Skipped)
            );
        }
        let pending = self.count(Status::Pending);
        let mut line = format!(
            "push {ty} to {version}: {} filed, {} already filed, {pending} pending (not retried{}), {} duplicate \
             (59141), {} failed",
            self.count(Status::Created),
            self.count(Status::AlreadyFiled),
            if pending > 0 { format!(": {}", self.line_list(Status::Pending)) } else { String::new() },
            self.count(Status::Duplicate),
            self.count(Status::Failed),
        );
        for (status, what) in [
            (Status::Invalid, "invalid"),
            (Status::Skipped, "not sent (push stopped)"),
            (Status::Repeated, "repeated"),
        ] {
            let n = self.count(status);
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        let ledger = self.ledger_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        format!("{line}; results in {}; ledger {ledger}", self.results_path.display())
    }

    /// What needs a hand: pending, refused, invalid and unsent lines, each with the fix; empty
    /// when every line is filed.
    pub fn problems(&self) -> Vec<String> {
        let path = self.results_path.display();
        let mut problems = Vec::new();
        if self.dry_run.is_some() {
            return problems;
        }
        let pending = self.count(Status::Pending);
        if pending > 0 {
            problems.push(format!(
                "{pending} pending ({}): sent without a definitive answer, so they may be on the server; \
                 check the server (Epic keeps no client identifier to find them by), then rerun with \
                 --retry-pending (a recorded id is read first and not re-sent if present)",
                self.line_list(Status::Pending)
            ));
        }
        let failed = self.count(Status::Failed);
        if failed > 0 {
            problems.push(format!(
                "{failed} refused by the server ({}; reasons in {path}): fix them and push again",
                self.line_list(Status::Failed)
            ));
        }
        let invalid = self.count(Status::Invalid);
        if invalid > 0 {
            problems.push(format!("{invalid} invalid (see {path})"));
        }
        let unsent = self.count(Status::Skipped);
        if unsent > 0 {
            problems.push(format!("{unsent} not sent because the push stopped: rerun to send them"));
        }
        problems
    }
}
