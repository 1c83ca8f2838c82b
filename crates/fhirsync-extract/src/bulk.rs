//! Bulk Data `Group/{id}/$export` (FHIR Bulk Data Access, as Epic implements it).
//!
//! Protocol:
//! 1. Kick-off `GET {R4}/Group/{id}/$export?_type=...[&_typeFilter=...]` with
//!    `Prefer: respond-async` → 202 and `Content-Location` (the status URL). Epic allows one
//!    kick-off per Group per client per window (24 h by default); a refusal ("requested this
//!    Group too recently") is [`Error::BulkCooldown`], never retried.
//! 2. The status URL is written to `{state_dir}/bulk-{group}.json` **before** polling, so a killed
//!    run resumes by polling the saved URL instead of burning the next kick-off window.
//! 3. Poll: 202 (`X-Progress`, `Retry-After`) until 200 with the manifest; waits honour
//!    `Retry-After`, clamped to `[poll_floor_secs, poll_ceiling_secs]`, else grow exponentially.
//! 4. Download every `output` file in parallel, streamed line by line (bounded line length),
//!    emitting resources in chunks; `error` files are OperationOutcomes, recorded.
//! 5. `DELETE` the status URL, then remove the state file.
//!
//! Completeness: Bulk files are per type, not per patient. The cohort is the Group's members
//! (`Group/{id}`, or the exported Patient resources when the Group cannot be read). Once every
//! file of a type has been downloaded without error, `ScopeComplete(R4, patient, Type)` is sent
//! for every cohort patient — the same unit as search mode, so landing treats both alike. A type
//! with a failed file, or named by an `error` file's OperationOutcome, gets no completion at all;
//! an error file that names no requested type makes every type incomplete (conservative: landing
//! then deletes nothing). The same holds for a type whose data file starts with an
//! OperationOutcome line (Epic: 59204, sub-types the client is not licensed for) and for a
//! requested type without any file (no data and "not licensed, dropped" look alike). Resources carry the patient of their `subject`/`patient` reference
//! (`Patient.id` for Patient).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fhirsync_core::{Dataset, ExtractEvent, FhirVersion, RawResource, ScopeKey};
use fhirsync_fhir::outcome::parse_outcome;
use fhirsync_fhir::retry::retry_after;
use fhirsync_fhir::{Effect, Exclusion, FhirClient, Outcome, Request, join, redact_url};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LOCATION, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use tracing::{info, warn};
use url::Url;

use crate::cohort::{group_members, patient_id_of_reference};
use crate::config::{BulkConfig, Endpoints};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::{ExclusionBaseline, ExtractReport, GapReason};

/// Resources per emitted chunk.
const CHUNK: usize = 500;
/// Attempts per NDJSON file when the stream breaks mid-way.
const FILE_ATTEMPTS: u32 = 3;

/// What is saved between kick-off and the end of the download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkState {
    /// Exported Group.
    pub group: String,
    /// Status URL (`Content-Location` of the kick-off).
    pub status_url: String,
    /// Requested types.
    pub types: Vec<String>,
    /// When the kick-off was accepted (RFC 3339).
    pub requested_at: String,
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

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir, &self.group);
        let io = |source| Error::BulkState { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    fn remove(dir: &Path, group: &str) {
        let _ = std::fs::remove_file(Self::path(dir, group));
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    output: Vec<ManifestFile>,
    #[serde(default)]
    error: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestFile {
    #[serde(rename = "type")]
    ty: String,
    url: String,
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

/// Inputs of a Bulk run.
pub(crate) struct Bulk<'a> {
    pub client: &'a FhirClient,
    pub endpoints: &'a Endpoints,
    pub plan: &'a Plan,
    pub group: &'a str,
    pub config: &'a BulkConfig,
    pub skip: &'a BTreeSet<ScopeKey>,
    pub baseline: Option<&'a ExclusionBaseline>,
    pub state_dir: &'a Path,
    pub progress: &'a Progress,
    pub tx: &'a Sender<ExtractEvent>,
}

/// Result of downloading one file.
struct FileResult {
    ty: String,
    resources: u64,
    patients: BTreeSet<String>,
    outcomes: Vec<Outcome>,
    error: Option<String>,
}

impl Bulk<'_> {
    pub(crate) async fn run(&self, report: &mut ExtractReport) -> Result<()> {
        let base = self
            .endpoints
            .get(FhirVersion::R4)
            .ok_or_else(|| Error::Bulk("Group $export needs the R4 endpoint (fhir_r4_endpoint)".into()))?;
        let types = self.types();
        if types.is_empty() {
            return Err(Error::EmptyPlan("no R4 type to export".into()));
        }
        let state = match BulkState::load(self.state_dir, self.group)? {
            Some(s) => {
                info!(group = %self.group, "Resuming the saved Bulk export.");
                s
            }
            None => self.kick_off(base, &types).await?,
        };
        let status_url =
            Url::parse(&state.status_url).map_err(|e| Error::Bulk(format!("saved status URL: {e}")))?;
        let manifest = self.poll(&status_url).await?;

        // Cohort: Group members; falls back to the exported Patient resources.
        let members = match group_members(self.client, self.endpoints, self.group).await {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(error = %e, "Group members unreadable; cohort taken from exported Patient resources.");
                None
            }
        };

        // Types whose every cohort scope an earlier attempt completed are not downloaded again.
        let done_types: BTreeSet<String> = match &members {
            Some(m) if !m.is_empty() => types
                .iter()
                .filter(|t| {
                    m.iter().all(|p| {
                        self.skip.contains(&ScopeKey {
                            fhir_version: FhirVersion::R4,
                            patient_id: Some(p.clone()),
                            dataset: Dataset::new(t.as_str()),
                        })
                    })
                })
                .cloned()
                .collect(),
            _ => BTreeSet::new(),
        };
        let wanted: Vec<ManifestFile> =
            manifest.output.iter().filter(|f| !done_types.contains(&f.ty)).cloned().collect();
        let mut pending = wanted.into_iter();
        let mut running = FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while running.len() < self.config.download_concurrency.max(1) {
                let Some(f) = pending.next() else { break };
                running.push(self.download(base, f));
            }
            let Some(r) = running.next().await else { break };
            results.push(r?);
        }

        let mut seen_patients = BTreeSet::new();
        let mut failed_types: BTreeMap<String, GapReason> = BTreeMap::new();
        let mut per_type: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut withheld: BTreeMap<String, BTreeSet<Exclusion>> = BTreeMap::new();
        for r in results {
            let e = per_type.entry(r.ty.clone()).or_default();
            e.0 += r.resources;
            e.1 += 1;
            for o in &r.outcomes {
                if let Some(code) = &o.epic_code {
                    report.count_outcome(&r.ty, code);
                }
                // An OperationOutcome line in a data file follows the search rule: a named
                // sub-type withheld (59204 "Outside Record ...") is an exclusion of the type, any
                // other suppression or error means the type's files are not the whole truth.
                match o.effect() {
                    Effect::Neutral => {}
                    Effect::Excluded(e) => {
                        withheld.entry(r.ty.clone()).or_default().insert(e);
                    }
                    Effect::Gap(detail) => {
                        failed_types
                            .entry(r.ty.clone())
                            .or_insert_with(|| GapReason::from_outcome(o, detail));
                    }
                }
            }
            if let Some(error) = r.error {
                failed_types.insert(r.ty.clone(), GapReason::Failed { error });
            }
            seen_patients.extend(r.patients);
        }
        // Error files: OperationOutcomes.
        let mut unattributed = None;
        for f in &manifest.error {
            for o in self.error_file(base, f).await {
                if let Some(code) = &o.epic_code {
                    report.count_outcome("bulk-error", code);
                }
                let text = format!(
                    "{} {}",
                    o.text.clone().unwrap_or_default(),
                    o.diagnostics.clone().unwrap_or_default()
                );
                let reason = GapReason::NotAuthorized {
                    code: o.epic_code.clone().unwrap_or_else(|| o.issue_code.clone()),
                    detail: Some(text.trim().to_string()),
                };
                match types.iter().find(|t| text.contains(t.as_str())) {
                    Some(t) => {
                        failed_types.entry(t.clone()).or_insert(reason);
                    }
                    None => unattributed = Some(reason),
                }
            }
        }
        let cohort: Vec<String> = members.unwrap_or_else(|| seen_patients.into_iter().collect());
        report.patients = cohort.len();
        report.scope.cohort = cohort.iter().cloned().collect();
        self.progress.scopes_total.store((types.len() * cohort.len()) as u64, Ordering::Relaxed);
        for ty in &types {
            let (resources, files) = per_type.get(ty).copied().unwrap_or_default();
            let key = format!("{ty}@{}", FhirVersion::R4);
            let none = BTreeSet::new();
            let type_withheld = withheld.get(ty).unwrap_or(&none);
            let gap = failed_types.get(ty).cloned().or_else(|| unattributed.clone()).or_else(|| {
                // No file at all: no data, or a type the server dropped silently (not licensed).
                // Indistinguishable, so no completion: landing must not delete on a guess.
                (files == 0).then(|| GapReason::Failed {
                    error: format!("the export has no {ty} file (no data, or {ty} not licensed)"),
                })
            });
            let gap = gap.or_else(|| GapReason::narrowed(self.baseline, &key, type_withheld));
            let read_to_end = matches!(gap, None | Some(GapReason::LicenceNarrowed { .. }));
            let mut first = true;
            for patient in &cohort {
                let scope = ScopeKey {
                    fhir_version: FhirVersion::R4,
                    patient_id: Some(patient.clone()),
                    dataset: Dataset::new(ty.clone()),
                };
                report.scopes_planned += 1;
                if done_types.contains(ty) {
                    report.scopes_skipped += 1;
                    report.scope.complete.insert(scope);
                    continue;
                }
                // Resource and file totals are booked once per type, on its first scope.
                let (res, pages) = if std::mem::take(&mut first) { (resources, files) } else { (0, 0) };
                if gap.is_none() {
                    self.tx
                        .send(ExtractEvent::ScopeComplete(scope.clone()))
                        .await
                        .map_err(|_| Error::ReceiverClosed)?;
                }
                let failed = matches!(gap, Some(GapReason::Failed { .. }));
                self.progress.scope_done(&self.progress.dataset(ty), failed);
                if read_to_end {
                    report.record_exclusions(&key, type_withheld, gap.is_none());
                }
                report.finish_scope(scope, res, pages, gap.clone());
            }
        }
        if self.config.delete_when_done
            && let Err(e) = self.client.execute(&Request::delete(status_url.clone())).await
        {
            warn!(error = %e, "DELETE of the Bulk status URL failed; Epic deletes the files after 14 days.");
        }
        BulkState::remove(self.state_dir, self.group);
        Ok(())
    }

    /// Resource types to export: the R4 types of the plan (categories collapse to their type).
    fn types(&self) -> Vec<String> {
        let mut types = BTreeSet::new();
        for item in &self.plan.items {
            if item.version == FhirVersion::R4 {
                types.insert(item.dataset.resource_type.clone());
            } else {
                warn!(dataset = %item.dataset, version = %item.version, "Not exportable by R4 Bulk; skipped.");
            }
        }
        types.into_iter().collect()
    }

    async fn kick_off(&self, base: &Url, types: &[String]) -> Result<BulkState> {
        let mut url = join(base, &format!("Group/{}/$export", self.group))?;
        url.query_pairs_mut().append_pair("_type", &types.join(","));
        if !self.config.type_filters.is_empty() {
            url.query_pairs_mut().append_pair("_typeFilter", &self.config.type_filters.join(","));
        }
        let req = Request::get(url)
            .header(HeaderName::from_static("prefer"), HeaderValue::from_static("respond-async"));
        let resp = match self.client.execute(&req).await {
            Ok(r) => r,
            Err(e) if e.outcomes().iter().any(|o| format!("{o}").contains("too recently")) => {
                return Err(Error::BulkCooldown { group: self.group.to_string() });
            }
            Err(e) => return Err(e.into()),
        };
        if resp.status.as_u16() != 202 {
            return Err(Error::Bulk(format!(
                "kick-off answered HTTP {} instead of 202",
                resp.status.as_u16()
            )));
        }
        let location = resp
            .headers
            .get(CONTENT_LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Bulk("kick-off answer has no Content-Location".into()))?;
        let status_url =
            resp.url.join(location).map_err(|e| Error::Bulk(format!("bad Content-Location: {e}")))?;
        let state = BulkState {
            group: self.group.to_string(),
            status_url: status_url.to_string(),
            types: types.to_vec(),
            requested_at: chrono::Utc::now().to_rfc3339(),
        };
        state.save(self.state_dir)?;
        info!(group = %self.group, types = types.len(), "Bulk export started; status URL saved.");
        Ok(state)
    }

    async fn poll(&self, status_url: &Url) -> Result<Manifest> {
        let floor = Duration::from_secs(self.config.poll_floor_secs);
        let ceiling = Duration::from_secs(self.config.poll_ceiling_secs).max(floor);
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout_secs);
        let mut wait = floor;
        loop {
            let resp = match self.client.execute(&Request::get(status_url.clone())).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(404) => {
                    BulkState::remove(self.state_dir, self.group);
                    return Err(Error::Bulk(format!(
                        "the export's status URL is gone ({e}); the saved state was removed, start a new export"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if resp.status.as_u16() == 200 {
                return serde_json::from_slice(&resp.body)
                    .map_err(|e| Error::Bulk(format!("invalid manifest: {e}")));
            }
            let progress = resp.headers.get("x-progress").and_then(|v| v.to_str().ok()).unwrap_or("");
            info!(progress, "Bulk export in progress.");
            let delay = match retry_after(&resp.headers, std::time::SystemTime::now()) {
                Some(d) => d.clamp(floor, ceiling),
                None => {
                    let d = wait;
                    wait = (wait * 2).min(ceiling);
                    d
                }
            };
            if Instant::now() + delay > deadline {
                return Err(Error::Bulk(format!(
                    "not ready after {} s; the status URL is saved, run again to resume",
                    self.config.timeout_secs
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn download(&self, base: &Url, file: ManifestFile) -> Result<FileResult> {
        let mut last_error = String::new();
        for attempt in 0..FILE_ATTEMPTS {
            match self.download_once(base, &file).await {
                Ok(r) => return Ok(r),
                Err(e @ (Error::ReceiverClosed | Error::LineTooLong { .. })) => return Err(e),
                Err(Error::Fhir(e)) if e.is_fatal_for_run() => return Err(e.into()),
                Err(e) => {
                    warn!(attempt, error = %e, "NDJSON download failed.");
                    last_error = e.to_string();
                }
            }
        }
        Ok(FileResult {
            ty: file.ty,
            resources: 0,
            patients: BTreeSet::new(),
            outcomes: Vec::new(),
            error: Some(last_error),
        })
    }

    async fn download_once(&self, base: &Url, file: &ManifestFile) -> Result<FileResult> {
        let url = Url::parse(&file.url).map_err(|e| Error::Bulk(format!("bad output URL: {e}")))?;
        let resp = self.client.execute_streaming(&Request::get(url.clone())).await?;
        let reader = StreamReader::new(resp.response.bytes_stream().map_err(std::io::Error::other));
        let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(self.config.max_line_bytes));
        let counters = self.progress.dataset(&file.ty);
        let source = base.as_str().trim_end_matches('/').to_string();
        let mut out = FileResult {
            ty: file.ty.clone(),
            resources: 0,
            patients: BTreeSet::new(),
            outcomes: Vec::new(),
            error: None,
        };
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
                Err(LinesCodecError::Io(e)) => return Err(Error::Bulk(format!("{}: {e}", redact_url(&url)))),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let head: Option<LineHead> = serde_json::from_str(line).ok();
            if head.as_ref().and_then(|h| h.resource_type.as_deref()) == Some("OperationOutcome") {
                out.outcomes.extend(parse_outcome(line));
                continue;
            }
            let patient = head.and_then(LineHead::patient);
            if let Some(p) = &patient
                && file.ty == "Patient"
            {
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
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        counters.pages.fetch_add(1, Ordering::Relaxed);
        Ok(out)
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

    /// Outcomes of an `error` file (unreadable files count as one failure outcome).
    async fn error_file(&self, _base: &Url, file: &ManifestFile) -> Vec<Outcome> {
        let parsed = Url::parse(&file.url);
        let resp = match parsed {
            Ok(u) => self.client.execute(&Request::get(u)).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match resp {
            Ok(r) => String::from_utf8_lossy(&r.body).lines().flat_map(parse_outcome).collect(),
            Err(e) => vec![Outcome {
                severity: "error".into(),
                issue_code: "exception".into(),
                epic_code: None,
                text: Some(format!("error file unreadable: {e}")),
                diagnostics: None,
            }],
        }
    }
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

    /// State files round-trip and group ids are made file-name safe.
    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = BulkState {
            group: "a/b c".into(),
            status_url: "http://x/BulkRequest/1".into(),
            types: vec!["Patient".into()],
            requested_at: "now".into(),
        };
        s.save(dir.path()).unwrap();
        assert!(BulkState::path(dir.path(), "a/b c").ends_with("bulk-a_b_c.json"));
        assert_eq!(BulkState::load(dir.path(), "a/b c").unwrap(), Some(s));
        BulkState::remove(dir.path(), "a/b c");
        assert_eq!(BulkState::load(dir.path(), "a/b c").unwrap(), None);
    }
}
