//! Bulk Data `Group/{id}/$export` (FHIR Bulk Data Access, as Epic implements it).
//!
//! Protocol:
//! 1. Kick-off `GET {R4}/Group/{id}/$export?_type=...[&_typeFilter=...]` with
//!    `Prefer: respond-async` → 202 and `Content-Location` (the status URL). Epic allows one
//!    kick-off per Group per client per window (24 h by default); a refusal ("requested this
//!    Group too recently") is [`Error::BulkCooldown`], never retried. A refusal that names
//!    requested types (unsupported, e.g. Epic's 59136) drops them, books them as gaps, and kicks
//!    off again without them.
//! 2. The status URL is written to `{state_dir}/bulk-{group}.json` **before** polling, so a killed
//!    run resumes by polling the saved URL instead of burning the next kick-off window.
//! 3. Poll: 202 (`X-Progress`, `Retry-After`) until 200 with the manifest; waits honour
//!    `Retry-After`, clamped to `[poll_floor_secs, poll_ceiling_secs]`, else grow exponentially.
//!    The manifest (and its `Expires`) is saved in the state file.
//! 4. Download every `output` file in parallel, streamed line by line (bounded line length),
//!    emitting resources in chunks. A failed download (410, 5xx, reset, truncated body or gzip,
//!    fewer lines than the manifest's `count`) is retried with exponential backoff and jitter
//!    until the files expire (`Expires`, else `transactionTime` + 14 days) or a bounded window
//!    ends. `error` files hold OperationOutcomes.
//! 5. When every file landed: `DELETE` the status URL, then remove the state file. Otherwise the
//!    export is **kept** (no DELETE) and the state file records the manifest and what landed;
//!    the next run downloads the types that did not land from the saved manifest, without a new
//!    kick-off. Only when that cannot help (the files expired or are gone, or what is left failed
//!    on the server: `error[]` entries, OperationOutcome lines) does a run start a new export
//!    (and then delete the old one).
//!
//! Plan: the types are the export's own: `[extract] datasets` as configured (categories collapse
//! to their type, sent as `_type`), or, with no datasets, whatever the server exports (no
//! `_type`; the types of the manifest). The CapabilityStatement's search interactions play no
//! part (a bulk server that declares only `read` works); a type the statement marks with the Bulk
//! IG's `operation-not-supported` extension is not requested and is booked as a gap.
//!
//! Completeness: Bulk files are per type, not per patient, so each export × type is one
//! cohort-level scope `ScopeKey { R4, patient_id: None, Type }`. Landing reads a complete
//! patient-less scope as covering every row of the type whose patient is in the run's cohort (or
//! that has no patient). A type is complete when every one of its files was downloaded, no
//! `error` file or OperationOutcome line makes it a gap, and the cohort is known; a requested type
//! without any file is complete and empty. OperationOutcome lines follow the search rule
//! ([`fhirsync_fhir::Outcome::effect`]): a named withheld sub-type is an exclusion (a gap if the
//! last committed run did not withhold it too: [`GapReason::LicenceNarrowed`]), anything else
//! that may hide data is a gap. An `error` outcome names the types it is about (by their names
//! in its text); one that names none makes every type a gap.
//!
//! Cohort: the Group's members whatever the reference form ([`cohort::parse_group`]), plus the
//! ids of the exported Patient file (members by definition; identifiers in it resolve members
//! given as `urn:uuid:` or identifiers), plus the patients the exported resources reference. It
//! is known when the Patient file landed (in this or an earlier run of the export) or every
//! member resolved; otherwise every type is a gap (deletes need the cohort) and the report's
//! cohort is left empty (no cohort exits). Resources carry the patient of their
//! `subject`/`patient` reference (`Patient.id` for Patient).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use fhirsync_core::{Dataset, ExtractEvent, FhirVersion, RawResource, ScopeKey};
use fhirsync_fhir::outcome::{parse_outcome, summarize};
use fhirsync_fhir::retry::{RetryPolicy, RetryReason, retry_after};
use fhirsync_fhir::{Effect, Exclusion, FhirClient, Outcome, Request, join, redact_url};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LOCATION, EXPIRES, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use tracing::{info, warn};
use url::Url;

use crate::cohort::{self, GroupMembers, IdentifierKey, patient_id_of_reference};
use crate::config::{BulkConfig, Endpoints, RetryConfig};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::{ExclusionBaseline, ExtractReport, GapReason, dataset_key};

/// Resources per emitted chunk.
const CHUNK: usize = 500;
/// Longest time one run keeps retrying a failed file (the next run retries it again).
const FILE_RETRY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Attempts per file: this many times the client's `max_retries`, plus one.
const FILE_ATTEMPTS_PER_RETRY: u32 = 2;
/// How long files stay available when the manifest has no `Expires` (Epic: 14 days after the
/// export completes), counted from `transactionTime`.
const DEFAULT_FILES_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(14);
/// The Bulk IG extension that marks a type as not exportable.
const NOT_SUPPORTED_EXTENSION: &str = "operation-not-supported";

/// One file of a manifest (`output[]` or `error[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Resource type of the file (`OperationOutcome` for error files).
    #[serde(rename = "type")]
    pub ty: String,
    /// Absolute URL of the file.
    pub url: String,
    /// Resources in the file, when the server says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl ManifestFile {
    /// The file's name (last path segment), for messages.
    fn name(&self) -> String {
        Url::parse(&self.url)
            .ok()
            .and_then(|u| u.path_segments().and_then(|mut s| s.next_back().map(str::to_string)))
            .unwrap_or_else(|| "(unnamed file)".to_string())
    }
}

/// The completed export's manifest, as saved between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedManifest {
    /// `transactionTime` of the export.
    #[serde(default)]
    pub transaction_time: Option<String>,
    /// When the files stop being available (the status answer's `Expires`), RFC 3339.
    #[serde(default)]
    pub expires: Option<String>,
    /// Data files.
    #[serde(default)]
    pub output: Vec<ManifestFile>,
    /// OperationOutcome files.
    #[serde(default)]
    pub error: Vec<ManifestFile>,
}

impl SavedManifest {
    /// When the files expire: `Expires`, else `transactionTime` + 14 days, else unknown.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc));
        self.expires
            .as_deref()
            .and_then(parse)
            .or_else(|| self.transaction_time.as_deref().and_then(parse).map(|t| t + DEFAULT_FILES_LIFETIME))
    }
}

/// What is saved between kick-off and the end of the export (`{state_dir}/bulk-{group}.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkState {
    /// Exported Group.
    pub group: String,
    /// Status URL (`Content-Location` of the kick-off).
    pub status_url: String,
    /// Requested types (`_type`); empty when none was sent (the server's choice).
    pub types: Vec<String>,
    /// When the kick-off was accepted (RFC 3339).
    pub requested_at: String,
    /// Types not requested because the server refused them, with why (booked as gaps).
    #[serde(default)]
    pub refused: BTreeMap<String, String>,
    /// The manifest, once the export completed.
    #[serde(default)]
    pub manifest: Option<SavedManifest>,
    /// The export's types (the requested ones, or those of the manifest), once known.
    #[serde(default)]
    pub expected: BTreeSet<String>,
    /// Types whose every file was downloaded and handed to landing.
    #[serde(default)]
    pub landed_types: BTreeSet<String>,
    /// Output files downloaded in full (URLs).
    #[serde(default)]
    pub landed_files: BTreeSet<String>,
    /// Types that failed on the server (`error[]` entries, OperationOutcome lines): retrying
    /// this export's files cannot bring them, a new export can.
    #[serde(default)]
    pub server_failed: BTreeSet<String>,
    /// Patient ids of the exported Patient file, once it landed.
    #[serde(default)]
    pub patients: Option<BTreeSet<String>>,
    /// Runs that retried this export's files after the one that received the manifest.
    #[serde(default)]
    pub retry_runs: u32,
    /// A retried file answered 404/410: the files are gone, the next run starts a new export.
    #[serde(default)]
    pub files_gone: bool,
}

impl BulkState {
    /// Path of the state file of `group` in `dir`.
    pub fn path(dir: &Path, group: &str) -> PathBuf {
        let safe: String = group
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
            .collect();
        dir.join(format!("bulk-{safe}.json"))
    }

    /// Reads a saved state, if any.
    pub fn load(dir: &Path, group: &str) -> Result<Option<BulkState>> {
        let path = Self::path(dir, group);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::BulkState {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::BulkState { path, source }),
        }
    }

    /// Writes the state atomically (temp file + rename), readable by the owner only: the
    /// status and file URLs grant access to the export while the bearer token is valid.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir, &self.group);
        let io = |source| Error::BulkState { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&tmp).map_err(io)?, &bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    fn remove(dir: &Path, group: &str) {
        let _ = std::fs::remove_file(Self::path(dir, group));
    }

    /// Types of the export that did not land yet.
    pub fn pending(&self) -> BTreeSet<String> {
        self.expected.difference(&self.landed_types).cloned().collect()
    }

    /// Why the saved, completed export cannot be finished from its files (`None`: it can).
    fn unusable(&self, now: DateTime<Utc>) -> Option<String> {
        let manifest = self.manifest.as_ref()?;
        if let Some(at) = manifest.expires_at()
            && now >= at
        {
            return Some(format!("its files expired at {}", at.to_rfc3339()));
        }
        if self.files_gone {
            return Some("its files are gone from the server (404/410 on a retry)".into());
        }
        let pending = self.pending();
        if !pending.is_empty() && pending.iter().all(|t| self.server_failed.contains(t)) {
            let names: Vec<&str> = pending.iter().map(String::as_str).collect();
            return Some(format!("what is left failed on the server ({})", names.join(", ")));
        }
        None
    }
}

#[derive(Debug, Deserialize)]
struct ManifestWire {
    #[serde(default, rename = "transactionTime")]
    transaction_time: Option<String>,
    #[serde(default)]
    output: Vec<ManifestFile>,
    #[serde(default)]
    error: Vec<ManifestFile>,
}

#[derive(Deserialize)]
struct LineHead {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
    subject: Option<RefWire>,
    patient: Option<RefWire>,
}

#[derive(Deserialize)]
struct RefWire {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct PatientIdentifiers {
    #[serde(default)]
    identifier: Vec<IdentifierWire>,
}

#[derive(Deserialize)]
struct IdentifierWire {
    system: Option<String>,
    value: Option<String>,
}

/// The patient a Bulk resource belongs to.
#[cfg(test)]
fn patient_of(line: &str) -> Option<String> {
    serde_json::from_str::<LineHead>(line).ok().and_then(LineHead::patient)
}

impl LineHead {
    fn patient(self) -> Option<String> {
        let head = self;
        if head.resource_type.as_deref() == Some("Patient") {
            return head.id;
        }
        [head.subject, head.patient]
            .into_iter()
            .flatten()
            .filter_map(|r| r.reference)
            .find_map(|r| patient_id_of_reference(&r).map(str::to_string))
    }
}

/// What the R4 CapabilityStatement says about Bulk export.
#[derive(Debug, Default)]
struct Documented {
    /// The Group resource declares the `export` operation.
    group_export: bool,
    /// Types marked with the Bulk IG's `operation-not-supported` extension for export.
    not_exportable: BTreeSet<String>,
}

#[derive(Deserialize)]
struct StatementWire {
    #[serde(default)]
    rest: Vec<RestWire>,
}

#[derive(Deserialize)]
struct RestWire {
    #[serde(default)]
    resource: Vec<StatementResourceWire>,
}

#[derive(Deserialize)]
struct StatementResourceWire {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    operation: Vec<OperationWire>,
    #[serde(default)]
    extension: Vec<ExtensionWire>,
}

#[derive(Deserialize)]
struct OperationWire {
    name: Option<String>,
    definition: Option<String>,
}

#[derive(Deserialize)]
struct ExtensionWire {
    #[serde(default)]
    url: String,
    #[serde(rename = "valueCanonical")]
    value_canonical: Option<String>,
}

impl Documented {
    fn parse(json: &[u8]) -> Option<Documented> {
        let wire: StatementWire = serde_json::from_slice(json).ok()?;
        let mut doc = Documented::default();
        for r in wire.rest.into_iter().flat_map(|r| r.resource) {
            if r.ty == "Group"
                && r.operation.iter().any(|o| {
                    o.name.as_deref().is_some_and(|n| n.ends_with("export"))
                        || o.definition.as_deref().is_some_and(|d| d.ends_with("group-export"))
                })
            {
                doc.group_export = true;
            }
            let refused = r.extension.iter().any(|e| {
                e.url.ends_with(NOT_SUPPORTED_EXTENSION)
                    && e.value_canonical.as_deref().is_some_and(|c| c.contains("export"))
            });
            if refused {
                doc.not_exportable.insert(r.ty);
            }
        }
        Some(doc)
    }
}

/// The resource types of `types` that `outcomes` name (as whole words in their text).
fn types_named<'a>(outcomes: &[Outcome], types: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for o in outcomes {
        for text in [&o.text, &o.diagnostics].into_iter().flatten() {
            words.extend(text.split(|c: char| !c.is_ascii_alphanumeric()).map(str::to_string));
        }
    }
    types.into_iter().filter(|t| words.contains(*t)).cloned().collect()
}

/// The cohort-level scope of one exported type.
fn cohort_scope(ty: &str) -> ScopeKey {
    ScopeKey { fhir_version: FhirVersion::R4, patient_id: None, dataset: Dataset::new(ty) }
}

/// Inputs of a Bulk run.
pub(crate) struct Bulk<'a> {
    pub client: &'a FhirClient,
    pub endpoints: &'a Endpoints,
    /// `[extract] datasets`, as configured.
    pub datasets: &'a [String],
    pub group: &'a str,
    pub config: &'a BulkConfig,
    pub retry: &'a RetryConfig,
    pub skip: &'a BTreeSet<ScopeKey>,
    pub baseline: Option<&'a ExclusionBaseline>,
    pub state_dir: &'a Path,
    pub progress: &'a Progress,
    pub tx: &'a Sender<ExtractEvent>,
}

/// Result of downloading one file.
#[derive(Default)]
struct FileResult {
    resources: u64,
    /// Patients the file's resources belong to (the ids, for the Patient file).
    patients: BTreeSet<String>,
    /// Group members matched by an identifier of an exported Patient: (member, patient id).
    matched: Vec<(usize, String)>,
    outcomes: Vec<Outcome>,
    /// Why the file could not be downloaded, and whether it was gone (404/410).
    failed: Option<(String, bool)>,
}

/// What one type's files gave.
#[derive(Default)]
struct TypeResult {
    resources: u64,
    files: u64,
    withheld: BTreeSet<Exclusion>,
    /// A gap from the files' content (OperationOutcome lines).
    content_gap: Option<GapReason>,
    /// A file that could not be downloaded.
    failed: Option<GapReason>,
    gone: bool,
    landed_files: Vec<String>,
}

/// How long, and how often, a failed file is retried within a run.
struct Window {
    policy: RetryPolicy,
    attempts: u32,
    deadline: Instant,
}

impl Window {
    fn new(retry: &RetryConfig, expires: Option<DateTime<Utc>>) -> Window {
        let mut deadline = Instant::now() + FILE_RETRY_WINDOW;
        if let Some(at) = expires {
            let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            deadline = deadline.min(Instant::now() + left);
        }
        Window {
            policy: RetryPolicy {
                max_retries: retry.max_retries,
                base_delay: Duration::from_millis(retry.base_delay_ms),
                max_delay: Duration::from_millis(retry.max_delay_ms),
                retry_after_floor: Duration::from_secs(retry.retry_after_floor_secs),
                retry_after_ceiling: Duration::from_secs(retry.retry_after_ceiling_secs),
            },
            attempts: retry.max_retries.saturating_mul(FILE_ATTEMPTS_PER_RETRY).saturating_add(1),
            deadline,
        }
    }

    /// Wait before retry number `retry` (0-based): exponential, with "equal" jitter (half fixed,
    /// half random), so retries never bunch up within milliseconds.
    fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.policy.max_delay);
        cap / 2 + self.policy.backoff(retry) / 2
    }
}

/// What the export's error files say, by type.
#[derive(Default)]
struct ErrorFindings {
    /// Types the server could not export.
    gaps: BTreeMap<String, GapReason>,
    /// Sub-types withheld, by type.
    withheld: BTreeMap<String, BTreeSet<Exclusion>>,
    /// A failure that names no requested type: a gap of every type.
    unattributed: Option<GapReason>,
    /// An error file could not be read: a (retryable) gap of every type.
    unreadable: Option<GapReason>,
}

/// What the downloads brought, over all files.
#[derive(Default)]
struct Downloads {
    per_type: BTreeMap<String, TypeResult>,
    /// Patients the downloaded resources belong to.
    referenced: BTreeSet<String>,
    /// Ids of the exported Patient file(s), once one was downloaded.
    exported: Option<BTreeSet<String>>,
    /// Group members matched by an identifier of an exported Patient: member → patient id.
    matched: BTreeMap<usize, String>,
}

impl Downloads {
    /// Books one downloaded (or failed) file: counts, outcome lines, patients.
    fn book(&mut self, file: ManifestFile, r: FileResult, report: &mut ExtractReport) {
        let t = self.per_type.entry(file.ty.clone()).or_default();
        t.resources += r.resources;
        t.files += 1;
        for o in &r.outcomes {
            if let Some(code) = &o.epic_code {
                report.count_outcome(&file.ty, code);
            }
            match o.effect() {
                Effect::Neutral => {}
                Effect::Excluded(e) => {
                    t.withheld.insert(e);
                }
                Effect::Gap(detail) => {
                    t.content_gap.get_or_insert_with(|| GapReason::from_outcome(o, detail));
                }
            }
        }
        match r.failed {
            Some((error, gone)) => {
                t.gone |= gone;
                t.failed.get_or_insert(GapReason::Failed { error });
            }
            None => t.landed_files.push(file.url.clone()),
        }
        if file.ty == "Patient" {
            self.exported.get_or_insert_with(BTreeSet::new).extend(r.patients.iter().cloned());
        }
        self.referenced.extend(r.patients);
        self.matched.extend(r.matched);
    }
}

/// The cohort as the export shows it.
struct CohortFindings {
    /// The exported Patient ids, to save once the Patient type landed.
    exported: Option<BTreeSet<String>>,
    /// The cohort is unknown: a gap of every type (deletes are held back).
    gap: Option<GapReason>,
    /// The Patient file failed and can be retried: the other types wait for it.
    wait_for_patient: bool,
}

/// What booking a type needs besides its own files.
struct Booking<'a> {
    errors: &'a ErrorFindings,
    cohort: &'a CohortFindings,
    /// This run retries a finished export's files.
    retrying: bool,
}

impl Bulk<'_> {
    /// Runs the export: the saved one is finished (resumed, or retried from its manifest) or a
    /// new one kicked off; its files are downloaded, the cohort is settled, and every type is
    /// booked as one cohort-level scope; the export is deleted once nothing is left to retry.
    pub(crate) async fn run(&self, report: &mut ExtractReport) -> Result<()> {
        let base = self.endpoints.get(FhirVersion::R4).ok_or(Error::BulkNeedsR4)?;
        let documented = self.statement(base).await?;
        let (requested, refused) = self.requested(&documented)?;

        let saved = BulkState::load(self.state_dir, self.group)?;
        if saved.is_none()
            && !requested.is_empty()
            && requested.iter().all(|t| self.skip.contains(&cohort_scope(t)))
        {
            // A resumed landing run already staged every type: nothing to export again.
            return self.all_skipped(&requested, report).await;
        }
        let (mut state, retrying) = self.export_to_finish(base, saved, &requested, refused).await?;
        if !requested.is_empty() && state.types.iter().any(|t| !requested.contains(t)) {
            warn!(group = %self.group, "The saved export's types differ from [extract] datasets; it is finished first, the next export uses the new datasets.");
        }
        let manifest = self.manifest(&mut state).await?;
        if state.expected.is_empty() {
            // The requested types, and any other type the server chose to add (the IG allows
            // referenced resources, e.g. Practitioner): what came is landed, not dropped.
            state.expected =
                state.types.iter().chain(manifest.output.iter().map(|f| &f.ty)).cloned().collect();
        }
        let errors = self.error_findings(&manifest, &state.expected, report).await;

        let planned: Vec<String> =
            state.expected.iter().filter(|t| !state.landed_types.contains(*t)).cloned().collect();
        let skipped: BTreeSet<String> =
            planned.iter().filter(|t| self.skip.contains(&cohort_scope(t))).cloned().collect();
        report.datasets = planned.iter().chain(state.refused.keys()).map(|t| format!("{t}@R4")).collect();
        self.progress.scopes_total.store((planned.len() + state.refused.len()) as u64, Ordering::Relaxed);

        let members = self.group().await?;
        let wanted: Vec<Vec<IdentifierKey>> =
            members.as_ref().map(|m| m.unresolved.clone()).unwrap_or_default();
        let files: Vec<ManifestFile> = manifest
            .output
            .iter()
            .filter(|f| planned.contains(&f.ty) && !skipped.contains(&f.ty))
            .cloned()
            .collect();
        let window = Window::new(self.retry, manifest.expires_at());
        let mut downloads = self.download_all(base, files, &window, &wanted, report).await?;
        let patient_landed = planned.iter().any(|t| t == "Patient")
            && !skipped.contains("Patient")
            && downloads.per_type.get("Patient").is_none_or(|t| t.failed.is_none());
        let cohort = self.cohort(patient_landed, &state, members.as_ref(), &mut downloads, report);

        let booking = Booking { errors: &errors, cohort: &cohort, retrying };
        let landed_now =
            self.book_types(&planned, &skipped, downloads.per_type, &booking, &mut state, report).await?;
        for (ty, why) in &state.refused {
            report.scopes_planned += 1;
            self.progress.scope_done(&self.progress.dataset(ty), true);
            report.finish_scope(cohort_scope(ty), 0, 0, Some(GapReason::Failed { error: why.clone() }));
        }
        if landed_now.contains("Patient") {
            state.patients = cohort.exported;
        }
        state.landed_types.extend(landed_now);
        if retrying {
            state.retry_runs += 1;
        }
        self.keep_or_delete(&state).await
    }

    /// The export this run finishes: the saved one (resumed while it runs; retried from its
    /// manifest while its files can help, then `true`), or a new kick-off.
    async fn export_to_finish(
        &self,
        base: &Url,
        saved: Option<BulkState>,
        requested: &[String],
        refused: BTreeMap<String, String>,
    ) -> Result<(BulkState, bool)> {
        match saved {
            Some(s) if s.manifest.is_some() => match s.unusable(Utc::now()) {
                None => {
                    let pending: Vec<String> = s.pending().into_iter().collect();
                    info!(group = %self.group, pending = ?pending, "Retrying what the last run could not land, from the saved manifest (no new kick-off).");
                    Ok((s, true))
                }
                Some(why) => {
                    info!(group = %self.group, reason = %why, "The saved export cannot be finished from its files; starting a new export.");
                    let new = self.kick_off(base, requested, refused).await?;
                    self.delete_export(&s.status_url).await;
                    Ok((new, false))
                }
            },
            Some(s) => {
                info!(group = %self.group, "Resuming the saved Bulk export.");
                Ok((s, false))
            }
            None => Ok((self.kick_off(base, requested, refused).await?, false)),
        }
    }

    /// The export's manifest: the saved one, or polled for until the export completes (and
    /// saved, so that a killed run does not poll again).
    async fn manifest(&self, state: &mut BulkState) -> Result<SavedManifest> {
        let status_url = Url::parse(&state.status_url)
            .map_err(|source| Error::BulkUrl { what: "saved status URL", source })?;
        if let Some(manifest) = &state.manifest {
            return Ok(manifest.clone());
        }
        let manifest = self.poll(&status_url).await?;
        state.manifest = Some(manifest.clone());
        state.save(self.state_dir)?;
        Ok(manifest)
    }

    /// What the export's error files say about the `expected` types: gaps and exclusions. One
    /// that cannot be read hides what it says: every type is a gap, a retryable one (the next
    /// run reads it again).
    async fn error_findings(
        &self,
        manifest: &SavedManifest,
        expected: &BTreeSet<String>,
        report: &mut ExtractReport,
    ) -> ErrorFindings {
        let (errors, unreadable) = self.error_outcomes(manifest).await;
        let mut found = ErrorFindings { unreadable, ..ErrorFindings::default() };
        for o in &errors {
            if let Some(code) = &o.epic_code {
                report.count_outcome("bulk-error", code);
            }
            match o.effect() {
                Effect::Neutral => {}
                Effect::Excluded(e) => {
                    found.withheld.entry(e.resource_type.clone()).or_default().insert(e);
                }
                Effect::Gap(_) => {
                    let said =
                        o.diagnostics.clone().or_else(|| o.text.clone()).unwrap_or_else(|| o.to_string());
                    let named = types_named(std::slice::from_ref(o), expected);
                    if named.is_empty() {
                        found.unattributed.get_or_insert_with(|| GapReason::Failed {
                            error: format!(
                                "the export's error file reports a failure naming no requested type: {said}"
                            ),
                        });
                    }
                    for ty in named {
                        found.gaps.entry(ty.clone()).or_insert_with(|| GapReason::Failed {
                            error: format!("the server could not export {ty} (error file: {said})"),
                        });
                    }
                }
            }
        }
        found
    }

    /// The Group, for the cohort; best effort (`None`): the exported Patient file is the
    /// fallback.
    async fn group(&self) -> Result<Option<GroupMembers>> {
        match cohort::read_group(self.client, self.endpoints, self.group).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::Fhir(e)) if e.is_fatal_for_run() => Err(e.into()),
            Err(e) => {
                warn!(error = %e, "Group unreadable; the cohort is taken from the exported Patient file.");
                Ok(None)
            }
        }
    }

    /// Downloads `files`, `download_concurrency` at a time, and books what each brought.
    async fn download_all(
        &self,
        base: &Url,
        files: Vec<ManifestFile>,
        window: &Window,
        wanted: &[Vec<IdentifierKey>],
        report: &mut ExtractReport,
    ) -> Result<Downloads> {
        let mut pending = files.into_iter();
        let mut running = FuturesUnordered::new();
        let mut downloads = Downloads::default();
        loop {
            while running.len() < self.config.download_concurrency.max(1) {
                let Some(f) = pending.next() else { break };
                running.push(self.download(base, f, window, wanted));
            }
            let Some(r) = running.next().await else { break };
            let (file, r) = r?;
            downloads.book(file, r, report);
        }
        Ok(downloads)
    }

    /// The cohort: the Group's members (matched to exported Patients where they name no id),
    /// the exported Patients and every patient referenced. Unknown, and a gap of every type,
    /// when neither a Patient file landed nor the Group named every member by id.
    fn cohort(
        &self,
        patient_landed: bool,
        state: &BulkState,
        members: Option<&GroupMembers>,
        downloads: &mut Downloads,
        report: &mut ExtractReport,
    ) -> CohortFindings {
        let exported = match patient_landed {
            true => downloads.exported.take().or_else(|| Some(BTreeSet::new())),
            false => state.patients.clone(),
        };
        let mut cohort: BTreeSet<String> = std::mem::take(&mut downloads.referenced);
        let mut unresolved = 0;
        let mut total = 0;
        if let Some(m) = members {
            cohort.extend(m.ids.iter().cloned());
            cohort.extend(downloads.matched.values().cloned());
            unresolved = unresolved_count(m, &downloads.matched);
            total = m.total();
        }
        if let Some(ids) = &exported {
            cohort.extend(ids.iter().cloned());
        }
        let known = exported.is_some() || (members.is_some() && unresolved == 0);
        if unresolved > 0 {
            warn!(group = %self.group, unresolved, members = total, "Group members that match no exported Patient.");
        }
        let gap = (!known).then(|| GapReason::Incomplete {
            code: None,
            detail: match members {
                Some(_) => format!(
                    "the cohort is unknown: {unresolved} of {total} Group members name no Patient id and no Patient file landed to match them (add Patient to datasets)"
                ),
                None => "the cohort is unknown: the Group is unreadable and no Patient file landed (add Patient to datasets, or allow Group.Read)".to_string(),
            },
        });
        report.patients = cohort.len();
        report.scope.cohort = match known {
            true => cohort,
            false => BTreeSet::new(),
        };
        // An unknown cohort holds back deletes. When the Patient file failed and can be
        // retried, the other types wait for it (they are downloaded again with it); otherwise
        // they are done with this export.
        let wait_for_patient =
            !known && downloads.per_type.get("Patient").is_some_and(|t| t.failed.is_some());
        CohortFindings { exported, gap, wait_for_patient }
    }

    /// The ledger: one cohort-level scope per planned type, complete or a gap; returns the
    /// types done with this export.
    async fn book_types(
        &self,
        planned: &[String],
        skipped: &BTreeSet<String>,
        mut per_type: BTreeMap<String, TypeResult>,
        booking: &Booking<'_>,
        state: &mut BulkState,
        report: &mut ExtractReport,
    ) -> Result<BTreeSet<String>> {
        let mut landed_now = BTreeSet::new();
        for ty in planned {
            report.scopes_planned += 1;
            if skipped.contains(ty) {
                report.scopes_skipped += 1;
                report.scope.complete.insert(cohort_scope(ty));
                landed_now.insert(ty.clone());
                self.progress.scope_done(&self.progress.dataset(ty), false);
                continue;
            }
            let t = per_type.remove(ty).unwrap_or_default();
            if self.book_type(ty, t, booking, state, report).await? {
                landed_now.insert(ty.clone());
            }
        }
        Ok(landed_now)
    }

    /// Books one downloaded type: its gap (a failed file, an unreadable error file, a failure
    /// on the server, a narrowed licence, an unknown cohort), or its completion. True when the
    /// type is done with this export.
    async fn book_type(
        &self,
        ty: &str,
        t: TypeResult,
        booking: &Booking<'_>,
        state: &mut BulkState,
        report: &mut ExtractReport,
    ) -> Result<bool> {
        let scope = cohort_scope(ty);
        let counters = self.progress.dataset(ty);
        let key = dataset_key(&scope);
        let errors = booking.errors;
        let mut withheld = t.withheld.clone();
        withheld.extend(errors.withheld.get(ty).cloned().unwrap_or_default());
        let server_gap = t
            .content_gap
            .clone()
            .or_else(|| errors.gaps.get(ty).cloned())
            .or_else(|| errors.unattributed.clone());
        if server_gap.is_some() {
            state.server_failed.insert(ty.to_string());
        } else {
            state.server_failed.remove(ty);
        }
        if t.gone && booking.retrying {
            state.files_gone = true;
        }
        let gap = t
            .failed
            .clone()
            .or_else(|| errors.unreadable.clone())
            .or(server_gap)
            .or_else(|| GapReason::narrowed(self.baseline, &key, &withheld));
        // Every file landed, nothing failed on the server: the type is done with this export.
        let done = gap.is_none() && !booking.cohort.wait_for_patient;
        let read_to_end = matches!(gap, None | Some(GapReason::LicenceNarrowed { .. }));
        let gap = gap.or_else(|| booking.cohort.gap.clone());
        if read_to_end {
            report.record_exclusions(&key, &withheld, gap.is_none());
        }
        if gap.is_none() {
            self.tx
                .send(ExtractEvent::ScopeComplete(scope.clone()))
                .await
                .map_err(|_| Error::ReceiverClosed)?;
        }
        self.progress.scope_done(&counters, matches!(gap, Some(GapReason::Failed { .. })));
        state.landed_files.extend(t.landed_files);
        report.finish_scope(scope, t.resources, t.files, gap);
        Ok(done)
    }

    /// Nothing left to retry: the export is deleted (when configured) with its saved state.
    /// Otherwise the state is saved for the next run.
    async fn keep_or_delete(&self, state: &BulkState) -> Result<()> {
        let left = state.pending();
        if left.is_empty() {
            if self.config.delete_when_done {
                self.delete_export(&state.status_url).await;
            }
            BulkState::remove(self.state_dir, self.group);
        } else {
            state.save(self.state_dir)?;
            let left: Vec<&str> = left.iter().map(String::as_str).collect();
            warn!(group = %self.group, types = ?left, "Export kept (no DELETE): the next run retries these types from the saved manifest, or starts a new export if its files cannot help.");
        }
        Ok(())
    }

    /// Every requested type was staged by an earlier attempt of this landing run: books them
    /// complete without exporting (no kick-off).
    async fn all_skipped(&self, types: &[String], report: &mut ExtractReport) -> Result<()> {
        info!(group = %self.group, "Every type was staged by the interrupted attempt; nothing to export.");
        let members = cohort::group_members(self.client, self.endpoints, self.group).await?;
        report.patients = members.len();
        report.scope.cohort = members.into_iter().collect();
        report.datasets = types.iter().map(|t| format!("{t}@R4")).collect();
        for ty in types {
            report.scopes_planned += 1;
            report.scopes_skipped += 1;
            report.scope.complete.insert(cohort_scope(ty));
        }
        Ok(())
    }

    /// What the R4 statement documents (best effort: a missing statement is not fatal).
    async fn statement(&self, base: &Url) -> Result<Documented> {
        match self.client.metadata(base).await {
            Ok(body) => match Documented::parse(&body) {
                Some(doc) => {
                    if !doc.group_export {
                        warn!("The R4 CapabilityStatement declares no Group $export; trying it anyway.");
                    }
                    Ok(doc)
                }
                None => {
                    warn!("The R4 CapabilityStatement is unreadable; exporting without it.");
                    Ok(Documented::default())
                }
            },
            Err(e) if e.is_fatal_for_run() => Err(e.into()),
            Err(e) => {
                warn!(error = %e, "The R4 CapabilityStatement is unavailable; exporting without it.");
                Ok(Documented::default())
            }
        }
    }

    /// The types to request (`_type`; empty = the server's choice) and those not requested
    /// because the statement says they cannot be exported.
    fn requested(&self, documented: &Documented) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let mut types = BTreeSet::new();
        let mut refused = BTreeMap::new();
        for d in self.datasets.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            let ty = match d.split_once(':') {
                Some((ty, _)) => {
                    warn!(
                        dataset = d,
                        "Bulk exports whole types: every {} resource is exported (narrow it with [extract.bulk] type_filters).",
                        ty.trim()
                    );
                    ty.trim()
                }
                None => d,
            };
            if documented.not_exportable.contains(ty) {
                warn!(
                    resource_type = ty,
                    "The CapabilityStatement marks this type as not exportable; not requested."
                );
                refused.insert(
                    ty.to_string(),
                    format!("the server's CapabilityStatement marks {ty} as not supported for Bulk export"),
                );
            } else {
                types.insert(ty.to_string());
            }
        }
        if types.is_empty() && !refused.is_empty() {
            let refused = refused.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(Error::NothingExportable { refused });
        }
        if self.datasets.is_empty() {
            info!(
                "No [extract] datasets: exporting every type the server offers (no _type); a type the server stops exporting keeps its rows, name datasets to have an empty type emptied."
            );
        }
        Ok((types.into_iter().collect(), refused))
    }

    async fn kick_off(
        &self,
        base: &Url,
        types: &[String],
        mut refused: BTreeMap<String, String>,
    ) -> Result<BulkState> {
        let mut types: Vec<String> = types.to_vec();
        let resp = loop {
            let mut url = join(base, &format!("Group/{}/$export", self.group))?;
            if !types.is_empty() {
                url.query_pairs_mut().append_pair("_type", &types.join(","));
            }
            if !self.config.type_filters.is_empty() {
                url.query_pairs_mut().append_pair("_typeFilter", &self.config.type_filters.join(","));
            }
            let req = Request::get(url)
                .header(HeaderName::from_static("prefer"), HeaderValue::from_static("respond-async"));
            match self.client.execute(&req).await {
                Ok(r) => break r,
                Err(e) if e.outcomes().iter().any(|o| format!("{o}").contains("too recently")) => {
                    return Err(Error::BulkCooldown { group: self.group.to_string() });
                }
                Err(e) if matches!(e.status(), Some(400 | 422)) => {
                    // Types the refusal names are not exportable here: drop them, try again.
                    let named = types_named(e.outcomes(), &types);
                    if named.is_empty() || named.len() == types.len() {
                        return Err(Error::BulkKickOffRefused { source: e });
                    }
                    let said = summarize(e.outcomes());
                    warn!(types = ?named, "The server refuses to export these types; kicking off without them.");
                    for ty in named {
                        types.retain(|t| *t != ty);
                        refused.insert(ty.clone(), format!("the server refused to export {ty}: {said}"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        if resp.status.as_u16() != 202 {
            return Err(Error::BulkKickOffStatus { status: resp.status.as_u16() });
        }
        let location =
            resp.headers.get(CONTENT_LOCATION).and_then(|v| v.to_str().ok()).ok_or(Error::BulkNoStatusUrl)?;
        let status_url =
            resp.url.join(location).map_err(|source| Error::BulkUrl { what: "Content-Location", source })?;
        let state = BulkState {
            group: self.group.to_string(),
            status_url: status_url.to_string(),
            types,
            requested_at: Utc::now().to_rfc3339(),
            refused,
            manifest: None,
            expected: BTreeSet::new(),
            landed_types: BTreeSet::new(),
            landed_files: BTreeSet::new(),
            server_failed: BTreeSet::new(),
            patients: None,
            retry_runs: 0,
            files_gone: false,
        };
        state.save(self.state_dir)?;
        info!(group = %self.group, types = state.types.len(), "Bulk export started; status URL saved.");
        Ok(state)
    }

    /// `DELETE` of a status URL (best effort: Epic deletes the files after 14 days anyway).
    async fn delete_export(&self, status_url: &str) {
        let Ok(url) = Url::parse(status_url) else { return };
        if let Err(e) = self.client.execute(&Request::delete(url)).await {
            warn!(error = %e, "DELETE of the Bulk status URL failed; Epic deletes the files after 14 days.");
        }
    }

    async fn poll(&self, status_url: &Url) -> Result<SavedManifest> {
        let floor = Duration::from_secs(self.config.poll_floor_secs);
        let ceiling = Duration::from_secs(self.config.poll_ceiling_secs).max(floor);
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout_secs);
        let mut wait = floor;
        loop {
            let resp = match self.client.execute(&Request::get(status_url.clone())).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(404) => {
                    BulkState::remove(self.state_dir, self.group);
                    return Err(Error::BulkStatusGone { source: e });
                }
                Err(e) => return Err(e.into()),
            };
            if resp.status.as_u16() == 200 {
                let wire: ManifestWire =
                    serde_json::from_slice(&resp.body).map_err(|source| Error::BulkManifest { source })?;
                // An HTTP-date is an RFC 2822 date in GMT.
                let expires = resp
                    .headers
                    .get(EXPIRES)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| DateTime::parse_from_rfc2822(v.trim()).ok())
                    .map(|t| t.with_timezone(&Utc).to_rfc3339());
                return Ok(SavedManifest {
                    transaction_time: wire.transaction_time,
                    expires,
                    output: wire.output,
                    error: wire.error,
                });
            }
            let progress = resp.headers.get("x-progress").and_then(|v| v.to_str().ok()).unwrap_or("");
            info!(progress, "Bulk export in progress.");
            let delay = match retry_after(&resp.headers, SystemTime::now()) {
                Some(d) => d.clamp(floor, ceiling),
                None => {
                    let d = wait;
                    wait = (wait * 2).min(ceiling);
                    d
                }
            };
            if Instant::now() + delay > deadline {
                return Err(Error::BulkNotReady { timeout_secs: self.config.timeout_secs });
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Downloads one file, retrying within `window`; `Err` only for run-fatal failures.
    async fn download(
        &self,
        base: &Url,
        file: ManifestFile,
        window: &Window,
        wanted: &[Vec<IdentifierKey>],
    ) -> Result<(ManifestFile, FileResult)> {
        let mut retry = 0;
        loop {
            let error = match self.download_once(base, &file, wanted).await {
                Ok(r) => return Ok((file, r)),
                Err(e @ (Error::ReceiverClosed | Error::LineTooLong { .. })) => return Err(e),
                Err(Error::Fhir(e)) if e.is_fatal_for_run() => return Err(e.into()),
                Err(e) => e,
            };
            let gone = matches!(&error, Error::Fhir(f) if matches!(f.status(), Some(404 | 410)));
            let delay = window.delay(retry);
            retry += 1;
            if retry >= window.attempts || Instant::now() + delay > window.deadline {
                warn!(resource_type = %file.ty, file = %file.name(), attempts = retry, error = %error, "NDJSON file not downloaded; its type is a gap.");
                let message = format!(
                    "{} file {} not downloaded after {retry} attempts: {error}",
                    file.ty,
                    file.name()
                );
                let failed = FileResult { failed: Some((message, gone)), ..FileResult::default() };
                return Ok((file, failed));
            }
            warn!(resource_type = %file.ty, file = %file.name(), attempt = retry, delay_ms = delay.as_millis() as u64, error = %error, "NDJSON download failed; retrying.");
            // Counted with the client's own retries, so a cut stream is never "0 retries".
            if let Ok(url) = Url::parse(&file.url) {
                let reason = match &error {
                    Error::Fhir(f) => f.status().map_or(RetryReason::Connection, RetryReason::ServerError),
                    _ => RetryReason::TruncatedBody,
                };
                self.client.count_retry(&url, reason, delay);
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn download_once(
        &self,
        base: &Url,
        file: &ManifestFile,
        wanted: &[Vec<IdentifierKey>],
    ) -> Result<FileResult> {
        let url = Url::parse(&file.url).map_err(|source| Error::BulkUrl { what: "output URL", source })?;
        let resp = self.client.execute_streaming(&Request::get(url.clone())).await?;
        let reader = StreamReader::new(resp.response.bytes_stream().map_err(std::io::Error::other));
        let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(self.config.max_line_bytes));
        let counters = self.progress.dataset(&file.ty);
        let source = base.as_str().trim_end_matches('/').to_string();
        let is_patient = file.ty == "Patient";
        let mut out = FileResult::default();
        let mut outcome_lines = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(line) = lines.next().await {
            let line = match line {
                Ok(l) => l,
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    return Err(Error::LineTooLong {
                        max: self.config.max_line_bytes,
                        url: redact_url(&url),
                    });
                }
                Err(LinesCodecError::Io(e)) => {
                    return Err(Error::BulkBodyCut { url: redact_url(&url), source: e });
                }
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let head: Option<LineHead> = serde_json::from_str(line).ok();
            if head.as_ref().and_then(|h| h.resource_type.as_deref()) == Some("OperationOutcome") {
                out.outcomes.extend(parse_outcome(line));
                outcome_lines += 1;
                continue;
            }
            let patient = head.and_then(LineHead::patient);
            if let Some(p) = &patient {
                if is_patient && !wanted.is_empty() {
                    self.match_members(line, p, wanted, &mut out.matched);
                }
                out.patients.insert(p.clone());
            }
            let res = RawResource::from_json(
                line,
                patient,
                Dataset::new(file.ty.clone()),
                FhirVersion::R4,
                source.clone(),
            )
            .map_err(|source| Error::Resource { source_url: redact_url(&url), source })?;
            chunk.push(res);
            if chunk.len() == CHUNK {
                self.emit(&mut chunk, &mut out, &counters).await?;
            }
        }
        self.emit(&mut chunk, &mut out, &counters).await?;
        if let Some(count) = file.count
            && out.resources + outcome_lines < count
        {
            let received = out.resources + outcome_lines;
            return Err(Error::BulkTruncated { url: redact_url(&url), received, expected: count });
        }
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        counters.pages.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Notes which unresolved Group members the exported Patient `id` (JSON `line`) matches.
    fn match_members(
        &self,
        line: &str,
        id: &str,
        wanted: &[Vec<IdentifierKey>],
        matched: &mut Vec<(usize, String)>,
    ) {
        let Ok(p) = serde_json::from_str::<PatientIdentifiers>(line) else { return };
        for (member, keys) in wanted.iter().enumerate() {
            let hit = p.identifier.iter().any(|i| {
                i.value.as_deref().is_some_and(|v| keys.iter().any(|k| k.matches(i.system.as_deref(), v)))
            });
            if hit {
                matched.push((member, id.to_string()));
            }
        }
    }

    async fn emit(
        &self,
        chunk: &mut Vec<RawResource>,
        out: &mut FileResult,
        counters: &crate::progress::DatasetCounters,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        out.resources += n;
        self.progress.resources.fetch_add(n, Ordering::Relaxed);
        counters.resources.fetch_add(n, Ordering::Relaxed);
        let batch = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
        self.tx.send(ExtractEvent::Resources(batch)).await.map_err(|_| Error::ReceiverClosed)
    }

    /// Outcomes of the `error` files, and the gap an unreadable one makes.
    async fn error_outcomes(&self, manifest: &SavedManifest) -> (Vec<Outcome>, Option<GapReason>) {
        let mut out = Vec::new();
        let mut unreadable = None;
        for file in &manifest.error {
            let resp = match Url::parse(&file.url) {
                Ok(u) => self.client.execute(&Request::get(u)).await.map_err(Error::from),
                Err(source) => Err(Error::BulkUrl { what: "error file URL", source }),
            };
            match resp {
                Ok(r) => out.extend(String::from_utf8_lossy(&r.body).lines().flat_map(parse_outcome)),
                Err(e) => {
                    warn!(file = %file.name(), error = %e, "Bulk error file unreadable; every type is a gap.");
                    unreadable.get_or_insert_with(|| GapReason::Failed {
                        error: format!("the export's error file {} is unreadable: {e}", file.name()),
                    });
                }
            }
        }
        (out, unreadable)
    }
}

/// Members of a Group that neither name a Patient id nor were matched (`matched`, by index
/// into `unresolved`) by an exported Patient's identifier.
fn unresolved_count(members: &GroupMembers, matched: &BTreeMap<usize, String>) -> usize {
    members.unmatchable + (0..members.unresolved.len()).filter(|i| !matched.contains_key(i)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patient of a Bulk line comes from Patient.id or the subject/patient reference.
    #[test]
    fn patient_of_lines() {
        assert_eq!(patient_of(r#"{"resourceType":"Patient","id":"p1"}"#).as_deref(), Some("p1"));
        assert_eq!(
            patient_of(r#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p2"}}"#)
                .as_deref(),
            Some("p2")
        );
        assert_eq!(
            patient_of(
                r#"{"resourceType":"AllergyIntolerance","id":"a","patient":{"reference":"Patient/p3"}}"#
            )
            .as_deref(),
            Some("p3")
        );
        assert_eq!(patient_of(r#"{"resourceType":"Medication","id":"m"}"#), None);
    }

    fn state() -> BulkState {
        BulkState {
            group: "a/b c".into(),
            status_url: "http://x/BulkRequest/1".into(),
            types: vec!["Patient".into(), "Condition".into()],
            requested_at: "now".into(),
            refused: BTreeMap::new(),
            manifest: None,
            expected: BTreeSet::from(["Patient".to_string(), "Condition".to_string()]),
            landed_types: BTreeSet::new(),
            landed_files: BTreeSet::new(),
            server_failed: BTreeSet::new(),
            patients: None,
            retry_runs: 0,
            files_gone: false,
        }
    }

    /// State files round-trip (manifest and landed files included), group ids are made
    /// file-name safe, and a state written before manifests were saved still reads.
    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state();
        s.manifest = Some(SavedManifest {
            transaction_time: Some("2026-05-01T00:00:00Z".into()),
            expires: None,
            output: vec![ManifestFile {
                ty: "Patient".into(),
                url: "http://x/f/Patient-1.ndjson".into(),
                count: Some(3),
            }],
            error: Vec::new(),
        });
        s.landed_files.insert("http://x/f/Patient-1.ndjson".into());
        s.save(dir.path()).unwrap();
        assert!(BulkState::path(dir.path(), "a/b c").ends_with("bulk-a_b_c.json"));
        assert_eq!(BulkState::load(dir.path(), "a/b c").unwrap(), Some(s));
        BulkState::remove(dir.path(), "a/b c");
        assert_eq!(BulkState::load(dir.path(), "a/b c").unwrap(), None);
        let old = r#"{"group":"g","status_url":"http://x/1","types":["Patient"],"requested_at":"t"}"#;
        std::fs::write(BulkState::path(dir.path(), "g"), old).unwrap();
        let s = BulkState::load(dir.path(), "g").unwrap().unwrap();
        assert!(s.manifest.is_none() && s.landed_types.is_empty());
    }

    /// A saved export is finished from its files unless they expired (`Expires`, else
    /// transactionTime + 14 days), are gone, or only server-side failures are left.
    #[test]
    fn saved_export_usability() {
        let now: DateTime<Utc> = "2026-05-10T00:00:00Z".parse().unwrap();
        let mut s = state();
        assert_eq!(s.unusable(now), None, "no manifest: nothing to judge");
        s.manifest = Some(SavedManifest {
            transaction_time: Some("2026-05-01T00:00:00Z".into()),
            expires: None,
            output: Vec::new(),
            error: Vec::new(),
        });
        s.landed_types.insert("Patient".into());
        assert_eq!(s.unusable(now), None);
        assert!(s.unusable("2026-05-16T00:00:00Z".parse().unwrap()).unwrap().contains("expired"));
        if let Some(m) = s.manifest.as_mut() {
            m.expires = Some("2026-05-09T00:00:00Z".into());
        }
        assert!(s.unusable(now).unwrap().contains("expired"));
        if let Some(m) = s.manifest.as_mut() {
            m.expires = None;
        }
        s.server_failed.insert("Condition".into());
        assert!(s.unusable(now).unwrap().contains("failed on the server (Condition)"));
        s.server_failed.clear();
        s.files_gone = true;
        assert!(s.unusable(now).unwrap().contains("gone"));
    }

    /// Retry waits grow exponentially with jitter of at most half, never below half the
    /// exponential step, and stop at the cap.
    #[test]
    fn retry_window_backs_off() {
        let retry =
            RetryConfig { base_delay_ms: 100, max_delay_ms: 1000, max_retries: 5, ..RetryConfig::default() };
        let w = Window::new(&retry, None);
        assert_eq!(w.attempts, 11);
        for _ in 0..50 {
            let d0 = w.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100), "{d0:?}");
            let d3 = w.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800), "{d3:?}");
            let d9 = w.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000), "{d9:?}");
        }
        let soon = Utc::now() + chrono::TimeDelta::seconds(5);
        assert!(Window::new(&retry, Some(soon)).deadline <= Instant::now() + Duration::from_secs(5));
    }

    /// Error outcomes name types as whole words ("2.Condition.ndjson" names Condition, not
    /// Medication inside MedicationRequest).
    #[test]
    fn outcome_names_types_as_words() {
        let o = |text: &str| Outcome {
            severity: "error".into(),
            issue_code: "exception".into(),
            epic_code: None,
            text: None,
            diagnostics: Some(text.into()),
        };
        let types: Vec<String> = ["Condition", "Medication", "MedicationRequest"].map(String::from).to_vec();
        assert_eq!(
            types_named(&[o("Failed to export 2.Condition.ndjson")], &types),
            BTreeSet::from(["Condition".to_string()])
        );
        assert_eq!(
            types_named(&[o("Unsupported _type: MedicationRequest")], &types),
            BTreeSet::from(["MedicationRequest".to_string()])
        );
        assert!(types_named(&[o("internal timeout")], &types).is_empty());
    }

    /// The statement's Group export and the Bulk IG's operation-not-supported marks are read.
    #[test]
    fn statement_documents_bulk() {
        let json = br#"{"resourceType":"CapabilityStatement","rest":[{"resource":[
            {"type":"Group","interaction":[{"code":"read"}],"operation":[{"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]},
            {"type":"Binary","extension":[{"url":"http://hl7.org/fhir/uv/bulkdata/StructureDefinition/operation-not-supported","valueCanonical":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]},
            {"type":"Patient","interaction":[{"code":"read"}]}]}]}"#;
        let doc = Documented::parse(json).unwrap();
        assert!(doc.group_export);
        assert_eq!(doc.not_exportable, BTreeSet::from(["Binary".to_string()]));
    }

    /// Members unmatched by the Patient file are counted (unmatchable ones included).
    #[test]
    fn unresolved_members_are_counted() {
        let key = IdentifierKey { system: None, value: "M".into() };
        let m = GroupMembers {
            ids: vec!["p".into()],
            unresolved: vec![vec![key.clone()], vec![key]],
            unmatchable: 1,
            inactive: 0,
        };
        assert_eq!(unresolved_count(&m, &BTreeMap::from([(1, "p2".to_string())])), 2);
    }
}
