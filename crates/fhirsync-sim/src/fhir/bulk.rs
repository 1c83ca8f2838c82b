//! Bulk Data `$export` at Group level (the only level Epic supports).
//!
//! 1. `GET {R4}/Group/{id}/$export?_type=…&_typeFilter=…` with `Prefer: respond-async` → 202 and
//!    `Content-Location: {R4}/BulkRequest/{job}`. A second kick-off for the same Group by the
//!    same client within the window (Epic: 24 h) → **429** with an OperationOutcome whose
//!    diagnostics read "Error processing Bulk Data Kickoff request: Request not allowed: The
//!    Client requested this Group too recently." (Epic's status code is not documented; 429 keeps
//!    it recognisable as "try later").
//! 2. Status polls → 202 with `X-Progress` and `Retry-After` for the configured number of polls,
//!    then 200 with the manifest `{transactionTime, request, requiresAccessToken: true,
//!    output: [{type, url, count}], error: []}`.
//! 3. Files `{R4}/BulkRequest/{job}/{Type}-{n}.ndjson` (at most `max_lines_per_file` lines,
//!    streamed) need the bearer token of the client that kicked off. A whole type the client is
//!    not licensed for is an `error[]` OperationOutcome (59130), never a silently missing file.
//!    Sub-type datasets the client is not licensed for, and datasets whose licence was narrowed (`FhirState::narrow_licence`: the
//!    same records are withheld as in searches), appear as 59204 issues of one OperationOutcome
//!    line at the start of the type's first file. Outside-Record issues are not written to
//!    NDJSON (nothing is known about Epic doing so).
//! 4. `DELETE` the status URL → 202; deleting before completion does not count against the window.
//!
//! The manifest carries `Expires` (transaction time + `files_expire_secs`); later downloads answer
//! 410. Switches ([`BulkConfig`](super::BulkConfig)): gzip-encoded files, Group members as
//! `urn:uuid:` references to contained Patients, a read-only CapabilityStatement, and
//! [`BulkFault`]s: a type whose export fails (no file, an `error[]` OperationOutcome "Failed to
//! export N.Type.ndjson"), files answering 410, files cut off half-way, each for the next N times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fhirsync_core::FhirVersion;
use futures::StreamExt;
use serde_json::{Value, json};

use super::FhirState;
use super::catalog::{self, Dataset};
use super::config::{BulkFault, BulkFaultKind};
use super::licence::Licence;
use super::overlay::Fate;
use super::records::Seg;
use super::routes::Call;
use super::search::{Rejection, SearchRequest};
use super::wire::{self, Format, Issue};
use crate::SimState;

/// Lines generated per streamed chunk of an NDJSON file.
const LINES_PER_CHUNK: usize = 200;

/// One NDJSON file of a job.
#[derive(Debug)]
struct FileSpec {
    ty: String,
    name: String,
    segs: Arc<Vec<Seg>>,
    offset: usize,
    len: usize,
    outcome: Option<Value>,
}

/// One `error[]` file of a job: OperationOutcome lines.
#[derive(Debug)]
struct ErrorFile {
    name: String,
    lines: Vec<Value>,
}

/// One export job.
#[derive(Debug)]
struct Job {
    client_id: String,
    group_id: String,
    request: String,
    transaction_time: String,
    /// When the files stop being available (the manifest's `Expires`).
    expires: SystemTime,
    polls_left: AtomicU32,
    files: Vec<FileSpec>,
    errors: Vec<ErrorFile>,
}

/// Jobs, the kick-off window and the remaining fault counts.
#[derive(Debug, Default)]
pub(crate) struct BulkJobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// `(client, group)` → (time of kick-off, job id).
    kickoffs: Mutex<HashMap<(String, String), (Instant, String)>>,
    /// `(kind, target)` → times left; seeded from the configuration on first use.
    faults: Mutex<Option<HashMap<(BulkFaultKind, String), u32>>>,
}

impl BulkJobs {
    /// True (and one use fewer) when a fault of `kind` is armed for `target`.
    fn take_fault(&self, configured: &[BulkFault], kind: BulkFaultKind, target: &str) -> bool {
        let mut faults = self.faults.lock().unwrap();
        let faults = faults.get_or_insert_with(|| seed(configured));
        match faults.get_mut(&(kind, target.to_string())) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

fn seed(configured: &[BulkFault]) -> HashMap<(BulkFaultKind, String), u32> {
    configured.iter().map(|f| ((f.kind, f.target.clone()), f.times)).collect()
}

impl FhirState {
    /// Fault injection: arms a Bulk fault for the next `times` times (0 disarms it); replaces the
    /// remaining count of the same `(kind, target)`.
    pub fn bulk_fault(&self, kind: BulkFaultKind, target: &str, times: u32) {
        let mut faults = self.bulk.faults.lock().unwrap();
        faults
            .get_or_insert_with(|| seed(&self.config.bulk.faults))
            .insert((kind, target.to_string()), times);
    }

    /// The Group `id` with `urn:uuid:` member references to contained Patients carrying only
    /// the MRN identifier (config switch `urn_uuid_members`).
    pub(crate) fn urn_uuid_group(&self, mut group: Value) -> Value {
        let mut members = Vec::new();
        let mut contained = Vec::new();
        let refs: Vec<String> = group["member"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["entity"]["reference"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for r in refs {
            let Some(pid) = r.strip_prefix("Patient/") else { continue };
            let uuid = urn_uuid_of(pid);
            let mrn: Vec<Value> = self
                .read(FhirVersion::R4, "Patient", pid)
                .and_then(|p| p["identifier"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|i| i["type"]["text"] == "EPI")
                .collect();
            contained.push(json!({"resourceType": "Patient", "id": uuid, "identifier": mrn}));
            members.push(json!({"entity": {"reference": format!("urn:uuid:{uuid}")}, "inactive": false}));
        }
        if let Some(obj) = group.as_object_mut() {
            obj.insert("contained".into(), Value::Array(contained));
            obj.insert("member".into(), Value::Array(members));
        }
        group
    }
}

/// A stable UUID for a patient id (the first 16 bytes of its SHA-256, as a version 4 UUID).
fn urn_uuid_of(pid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(pid.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string()
}

/// A statement that declares only `read` for every type (config switch `read_only_statement`),
/// keeping declared operations (Group `$export`).
pub(crate) fn read_only(statement: &mut Value) {
    let Some(rest) = statement["rest"].as_array_mut() else { return };
    for r in rest {
        let Some(resources) = r["resource"].as_array_mut() else { continue };
        for res in resources {
            if let Some(obj) = res.as_object_mut() {
                obj.insert("interaction".into(), json!([{"code": "read"}]));
                obj.remove("searchParam");
                obj.remove("searchInclude");
            }
        }
    }
}

fn outcome_response(status: StatusCode, issue: Issue) -> Response {
    wire::error(status, Format::Json, &[issue])
}

/// What a valid kick-off asks for.
struct ExportRequest {
    /// The Group's members (generator indexes).
    members: Vec<usize>,
    /// `_type`, or every type the simulator exports.
    types: Vec<String>,
    /// `_typeFilter` queries, by type.
    filters: HashMap<String, Vec<(String, String)>>,
}

/// What one type's export came to: its NDJSON files, or an `error[]` line.
enum TypeExport {
    Files(Vec<FileSpec>),
    Failed(Value),
}

/// Handles a kick-off: checked as Epic checks it (`Prefer`, `_since`, `_type`, the per-Group
/// window), then every type is exported at once into an in-memory job.
pub(crate) fn kickoff(
    call: &Call,
    group_id: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let fhir = &call.st.fhir;
    let request = match export_request(call, group_id, params, headers) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let key = (call.grant.client_id.clone(), group_id.to_string());
    if let Some(refusal) = too_recent(fhir, &key) {
        return refusal;
    }
    let licence = call.licence();
    let mut files = Vec::new();
    let mut failed = Vec::new();
    for (n, ty) in request.types.iter().enumerate() {
        match export_type(fhir, &licence, &request, n, ty) {
            TypeExport::Files(f) => files.extend(f),
            TypeExport::Failed(line) => failed.push(line),
        }
    }
    let job_id = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    let job = new_job(call, group_id, params, files, failed);
    fhir.bulk.jobs.lock().unwrap().insert(job_id.clone(), Arc::new(job));
    fhir.bulk.kickoffs.lock().unwrap().insert(key, (Instant::now(), job_id.clone()));
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/BulkRequest/{job_id}", call.base)) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    resp
}

/// The kick-off's members, types and filters; the refusal Epic sends for a missing
/// `Prefer: respond-async`, an unknown Group, `_since`, or a type it does not export.
#[allow(clippy::result_large_err)]
fn export_request(
    call: &Call,
    group_id: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<ExportRequest, Response> {
    let prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !prefer.contains("respond-async") {
        return Err(outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new("fatal", "required", "4111", "A required header is missing.")
                .with_diagnostics("Bulk Data kick-off requires the header Prefer: respond-async"),
        ));
    }
    let Some(members) = call.st.fhir.group_members(group_id) else {
        return Err(wire::not_found(Format::Json));
    };
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("_since").is_some() {
        return Err(outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new("fatal", "not-supported", "59136", "The _since parameter is not supported."),
        ));
    }
    let types: Vec<String> = match get("_type") {
        Some(t) => t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        None => default_export_types(),
    };
    if let Some(bad) = types.iter().find(|t| !catalog::serves(FhirVersion::R4, t)) {
        return Err(outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new(
                "fatal",
                "not-supported",
                "59136",
                "The requested resource type is not supported for bulk export.",
            )
            .with_diagnostics(format!("Unsupported _type: {bad}")),
        ));
    }
    let mut filters: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for f in get("_typeFilter").into_iter().flat_map(|tf| tf.split(',')) {
        if let Some((ty, query)) = f.split_once('?') {
            let parsed =
                url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()));
            filters.entry(ty.to_string()).or_default().extend(parsed);
        }
    }
    Ok(ExportRequest { members, types, filters })
}

/// Patient, then every R4 type of the catalogue, once each.
fn default_export_types() -> Vec<String> {
    std::iter::once("Patient".to_string())
        .chain(Dataset::ALL.iter().filter_map(|d| d.resource_type(FhirVersion::R4)).map(str::to_string))
        .fold(Vec::new(), |mut acc, t| {
            if !acc.contains(&t) {
                acc.push(t);
            }
            acc
        })
}

/// Epic's 429 for a Group this client kicked off within the window.
fn too_recent(fhir: &FhirState, key: &(String, String)) -> Option<Response> {
    let window = Duration::from_secs(fhir.config.bulk.kickoff_window_secs);
    let kickoffs = fhir.bulk.kickoffs.lock().unwrap();
    let (at, _) = kickoffs.get(key)?;
    (at.elapsed() < window).then(|| {
        outcome_response(
            StatusCode::TOO_MANY_REQUESTS,
            Issue::new("fatal", "throttled", "59130", "Request not allowed.").with_diagnostics(
                "Error processing Bulk Data Kickoff request: Request not allowed: The Client requested this Group too recently.",
            ),
        )
    })
}

/// Exports type number `n` (0-based) of the request: an `error[]` line when the client is not
/// licensed for it or an export-error fault is armed, else its files of at most
/// `max_lines_per_file` lines, the first carrying the licence outcome lines.
fn export_type(
    fhir: &FhirState,
    licence: &Licence,
    request: &ExportRequest,
    n: usize,
    ty: &String,
) -> TypeExport {
    if licence.excludes(ty) {
        // Not silently dropped: a type missing from the output would read as "now empty".
        // Epic's bulk code for an unauthorized client is 59130.
        let text = format!("Client not authorized for {ty}. This type was not exported.");
        return TypeExport::Failed(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "forbidden",
                "details": {"coding": [{"system": wire::EPIC_OUTCOME_SYSTEM, "code": "59130", "display": "Client not authorized"}], "text": "Client not authorized"},
                "diagnostics": text}],
        }));
    }
    if fhir.bulk.take_fault(&fhir.config.bulk.faults, BulkFaultKind::ExportError, ty) {
        // As the SMART reference server words it: the type's file failed to be written.
        let text = format!("Failed to export {}.{ty}.ndjson", n + 1);
        return TypeExport::Failed(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception", "details": {"text": text}, "diagnostics": text}],
        }));
    }
    let (segs, denied) = type_segments(fhir, licence, request, ty);
    let max_lines = fhir.config.bulk.max_lines_per_file.max(1);
    let total: usize = segs.iter().map(Seg::len).sum();
    let segs = Arc::new(segs);
    let outcome = (!denied.is_empty()).then(|| wire::outcome(&denied));
    let chunks = total.div_ceil(max_lines).max(usize::from(outcome.is_some()));
    let files = (0..chunks)
        .map(|n| {
            let offset = n * max_lines;
            FileSpec {
                ty: ty.clone(),
                name: format!("{ty}-{}.ndjson", n + 1),
                segs: segs.clone(),
                offset,
                len: max_lines.min(total - offset.min(total)),
                outcome: if n == 0 { outcome.clone() } else { None },
            }
        })
        .collect();
    TypeExport::Files(files)
}

/// The lines of type `ty` over the request's members, and the licence issues met (each once).
fn type_segments(
    fhir: &FhirState,
    licence: &Licence,
    request: &ExportRequest,
    ty: &String,
) -> (Vec<Seg>, Vec<Issue>) {
    let mut segs = Vec::new();
    let mut denied: Vec<Issue> = Vec::new();
    let mut deny = |issue: Issue| {
        if !denied.contains(&issue) {
            denied.push(issue);
        }
    };
    for &i in &request.members {
        let pid = fhir.generator.patient_id(i);
        if !fhir.patient_exists(&pid) {
            continue;
        }
        if ty == "Patient" {
            // Generated lazily when the file is read; only edited patients are stored.
            match fhir.overlay.fate("Patient", &pid) {
                Fate::Edited(v) => segs.push(Seg::Owned(v)),
                Fate::Unchanged => segs.push(Seg::Patient(i)),
                Fate::Deleted => {}
            }
            continue;
        }
        if let Some(filter) = request.filters.get(ty) {
            let mut p = filter.clone();
            p.push(("patient".to_string(), pid.clone()));
            let req = SearchRequest { version: FhirVersion::R4, ty, params: &p };
            if let Ok(found) = fhir.search(&req, licence) {
                segs.extend(found.segs);
                found.licence.into_iter().for_each(&mut deny);
            }
            continue;
        }
        for d in Dataset::of_type(FhirVersion::R4, ty) {
            let key = d.license_key(FhirVersion::R4).unwrap_or_else(|| ty.clone());
            if licence.excludes(&key) {
                deny(Issue::unlicensed(&key));
            } else if let Some(n) = licence.narrowing(&key) {
                let mut own = Vec::new();
                fhir.dataset_segments(FhirVersion::R4, i, d, &mut own);
                segs.extend(fhir.withhold(own));
                deny(n.issue());
            } else {
                fhir.dataset_segments(FhirVersion::R4, i, d, &mut segs);
            }
        }
        segs.extend(fhir.overlay.added(ty, Some(&pid)).into_iter().map(|a| Seg::Owned(a.value)));
    }
    (segs, denied)
}

/// The job of an accepted kick-off, with its files and `error[]` lines.
fn new_job(
    call: &Call,
    group_id: &str,
    params: &[(String, String)],
    files: Vec<FileSpec>,
    failed: Vec<Value>,
) -> Job {
    let fhir = &call.st.fhir;
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
    let request = if query.is_empty() {
        format!("{}/Group/{group_id}/$export", call.base)
    } else {
        format!("{}/Group/{group_id}/$export?{query}", call.base)
    };
    let errors = match failed.is_empty() {
        true => Vec::new(),
        false => vec![ErrorFile { name: "error-1.ndjson".to_string(), lines: failed }],
    };
    Job {
        client_id: call.grant.client_id.clone(),
        group_id: group_id.to_string(),
        request,
        transaction_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires: SystemTime::now() + Duration::from_secs(fhir.config.bulk.files_expire_secs),
        polls_left: AtomicU32::new(fhir.config.bulk.polls_before_ready),
        files,
        errors,
    }
}

fn job(call: &Call, job_id: &str) -> Result<Arc<Job>, Rejection> {
    let job = call.st.fhir.bulk.jobs.lock().unwrap().get(job_id).cloned();
    match job {
        Some(j) if j.client_id == call.grant.client_id => Ok(j),
        Some(_) => Err(Rejection::new(
            StatusCode::FORBIDDEN,
            Issue::new(
                "fatal",
                "forbidden",
                "59007",
                "The client is not authorized to access this bulk request.",
            ),
        )),
        None => Err(Rejection::new(StatusCode::NOT_FOUND, Issue::unknown_id())),
    }
}

/// Handles a status poll.
pub(crate) fn status(call: &Call, job_id: &str) -> Response {
    let job = match job(call, job_id) {
        Ok(j) => j,
        Err(rejection) => return rejection.respond(Format::Json),
    };
    let total = call.st.fhir.config.bulk.polls_before_ready.max(1);
    let left = job.polls_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if let Ok(before) = left {
        let done = total.saturating_sub(before);
        let mut resp = StatusCode::ACCEPTED.into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("Searching resources ({done} of {total} steps done)")) {
            h.insert("x-progress", v);
        }
        h.insert(header::RETRY_AFTER, HeaderValue::from(call.st.fhir.config.bulk.retry_after_secs));
        return resp;
    }
    let output: Vec<Value> = job
        .files
        .iter()
        .map(|f| {
            json!({
                "type": f.ty,
                "url": format!("{}/BulkRequest/{job_id}/{}", call.base, f.name),
                "count": f.len,
            })
        })
        .collect();
    let errors: Vec<Value> = job
        .errors
        .iter()
        .map(|e| {
            json!({
                "type": "OperationOutcome",
                "url": format!("{}/BulkRequest/{job_id}/{}", call.base, e.name),
            })
        })
        .collect();
    let manifest = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": errors,
    });
    let mut resp =
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], wire::json_bytes(&manifest))
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(job.expires)) {
        resp.headers_mut().insert(header::EXPIRES, v);
    }
    resp
}

fn gone(text: &str) -> Response {
    outcome_response(
        StatusCode::GONE,
        Issue::new("fatal", "not-found", "59008", "The requested file is no longer available.")
            .with_diagnostics(text.to_string()),
    )
}

/// Handles a file download (streamed; gzip-encoded when switched on and accepted).
pub(crate) fn file(call: &Call, job_id: &str, name: &str, headers: &HeaderMap) -> Response {
    let job = match job(call, job_id) {
        Ok(j) => j,
        Err(rejection) => return rejection.respond(Format::Json),
    };
    if job.polls_left.load(Ordering::SeqCst) > 0 {
        return wire::not_found(Format::Json);
    }
    if SystemTime::now() > job.expires {
        return gone("The export's files have expired; start a new export.");
    }
    let config = &call.st.fhir.config.bulk;
    let faults = &call.st.fhir.bulk;
    if faults.take_fault(&config.faults, BulkFaultKind::Gone, name) {
        return gone("The requested file is no longer available.");
    }
    if let Some(e) = job.errors.iter().find(|e| e.name == name) {
        let mut body = Vec::new();
        for line in &e.lines {
            body.extend_from_slice(&wire::json_bytes(line));
            body.push(b'\n');
        }
        return wire::bytes(StatusCode::OK, "application/fhir+ndjson", body);
    }
    let Some(index) = job.files.iter().position(|f| f.name == name) else {
        return wire::not_found(Format::Json);
    };
    let truncate = faults.take_fault(&config.faults, BulkFaultKind::Truncated, name);
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("gzip"));
    let gzip = config.gzip && accepts_gzip;

    let lines = file_lines(call.st.clone(), job, index, truncate, gzip);
    let body = match gzip {
        false => Body::from_stream(lines.map(Ok::<Bytes, std::io::Error>)),
        true => Body::from_stream(gzip_stream(lines, !truncate).map(Ok::<Bytes, std::io::Error>)),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    if gzip {
        resp.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// The lines of file `index` of `job` as a stream of chunks: its outcome line first, then
/// [`LINES_PER_CHUNK`] lines at a time, generated as they are read. Truncated: half the lines,
/// then (plain, not `gzip`) half of the next line.
fn file_lines(
    st: Arc<SimState>,
    job: Arc<Job>,
    index: usize,
    truncate: bool,
    gzip: bool,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let head: Option<Bytes> = job.files[index].outcome.as_ref().map(|o| {
        let mut line = wire::json_bytes(o);
        line.push(b'\n');
        Bytes::from(line)
    });
    let len = job.files[index].len;
    // Truncated: half the lines, then (plain) half of the next line; gzip stops before its trailer.
    let limit = if truncate { len / 2 } else { len };
    let cut_line = truncate && !gzip;
    futures::stream::unfold((0usize, head, false), move |(done, head, finished)| {
        let st = st.clone();
        let job = job.clone();
        async move {
            if finished {
                return None;
            }
            if let Some(h) = head {
                return Some((h, (done, None, false)));
            }
            let f = &job.files[index];
            if done >= limit {
                if cut_line && done < f.len {
                    let item = st.fhir.materialise(FhirVersion::R4, &f.segs, f.offset + done, 1);
                    let bytes = item.first().map(|v| wire::json_bytes(v)).unwrap_or_default();
                    return Some((Bytes::from(bytes[..bytes.len() / 2].to_vec()), (done, None, true)));
                }
                return None;
            }
            let n = LINES_PER_CHUNK.min(limit - done);
            let items = st.fhir.materialise(FhirVersion::R4, &f.segs, f.offset + done, n);
            let mut buf = Vec::with_capacity(n * 1024);
            for item in &items {
                buf.extend_from_slice(&wire::json_bytes(item));
                buf.push(b'\n');
            }
            Some((Bytes::from(buf), (done + n, None, false)))
        }
    })
}

/// gzip (RFC 1952) of a byte stream, as stored (uncompressed) deflate blocks: a gzip header,
/// one block per chunk, then the final block and the CRC-32/size trailer unless `finish` is false
/// (a truncated gzip body, which decoders reject).
fn gzip_stream(
    chunks: impl futures::Stream<Item = Bytes> + Send + 'static,
    finish: bool,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let sums = Arc::new(Mutex::new((0u32, 0u64)));
    let tally = sums.clone();
    let blocks = chunks.map(move |chunk| {
        let mut out = Vec::with_capacity(chunk.len() + 5 * (chunk.len() / 65_535 + 1));
        for block in chunk.chunks(65_535) {
            let n = block.len() as u16;
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(block);
        }
        let mut t = tally.lock().unwrap();
        t.0 = crc32(t.0, &chunk);
        t.1 += chunk.len() as u64;
        Bytes::from(out)
    });
    let trailer = futures::stream::once(async move {
        let (crc, size) = *sums.lock().unwrap();
        let mut out = vec![1, 0, 0, 0xff, 0xff];
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(size as u32).to_le_bytes());
        Bytes::from(out)
    })
    .filter(move |_| futures::future::ready(finish));
    futures::stream::once(futures::future::ready(Bytes::from_static(&HEADER))).chain(blocks).chain(trailer)
}

/// CRC-32 (IEEE 802.3, as gzip uses) of `bytes`, continuing from `crc`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// Handles `DELETE` of a status URL.
pub(crate) fn delete(call: &Call, job_id: &str) -> Response {
    let job = match job(call, job_id) {
        Ok(j) => j,
        Err(rejection) => return rejection.respond(Format::Json),
    };
    let fhir = &call.st.fhir;
    fhir.bulk.jobs.lock().unwrap().remove(job_id);
    if job.polls_left.load(Ordering::SeqCst) > 0 {
        let key = (job.client_id.clone(), job.group_id.clone());
        let mut kickoffs = fhir.bulk.kickoffs.lock().unwrap();
        if kickoffs.get(&key).is_some_and(|(_, id)| id == job_id) {
            kickoffs.remove(&key);
        }
    }
    StatusCode::ACCEPTED.into_response()
}

impl BulkJobs {
    /// Forgets every kick-off (fault/test hook: reopens the window).
    pub(crate) fn reset_window(&self) {
        self.kickoffs.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 matches the standard check value ("123456789" → CBF43926), also when fed in parts.
    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
    }
}
