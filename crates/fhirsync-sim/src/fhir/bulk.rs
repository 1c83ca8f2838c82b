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
//!    streamed) need the bearer token of the client that kicked off. Datasets the client is not
//!    licensed for, and datasets whose licence was narrowed (`FhirState::narrow_licence`: the
//!    same records are withheld as in searches), appear as 59204 issues of one OperationOutcome
//!    line at the start of the type's first file. Outside-Record issues are not written to
//!    NDJSON (nothing is known about Epic doing so).
//! 4. `DELETE` the status URL → 202; deleting before completion does not count against the window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::catalog::{self, Dataset};
use super::overlay::Fate;
use super::records::Seg;
use super::routes::Call;
use super::search::{Rejection, SearchRequest};
use super::wire::{self, Format, Issue};

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

/// One export job.
#[derive(Debug)]
struct Job {
    client_id: String,
    group_id: String,
    request: String,
    transaction_time: String,
    polls_left: AtomicU32,
    files: Vec<FileSpec>,
}

/// Jobs and the kick-off window.
#[derive(Debug, Default)]
pub(crate) struct BulkJobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// `(client, group)` → (time of kick-off, job id).
    kickoffs: Mutex<HashMap<(String, String), (Instant, String)>>,
}

fn outcome_response(status: StatusCode, issue: Issue) -> Response {
    wire::error(status, Format::Json, &[issue])
}

/// Handles a kick-off.
pub(crate) fn kickoff(
    call: &Call,
    group_id: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let fhir = &call.st.fhir;
    let prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !prefer.contains("respond-async") {
        return outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new("fatal", "required", "4111", "A required header is missing.")
                .with_diagnostics("Bulk Data kick-off requires the header Prefer: respond-async"),
        );
    }
    let Some(members) = fhir.group_members(group_id) else { return wire::not_found(Format::Json) };
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("_since").is_some() {
        return outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new("fatal", "not-supported", "59136", "The _since parameter is not supported."),
        );
    }
    let default_types: Vec<String> = std::iter::once("Patient".to_string())
        .chain(Dataset::ALL.iter().filter_map(|d| d.resource_type(FhirVersion::R4)).map(str::to_string))
        .fold(Vec::new(), |mut acc, t| {
            if !acc.contains(&t) {
                acc.push(t);
            }
            acc
        });
    let types: Vec<String> = match get("_type") {
        Some(t) => t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        None => default_types,
    };
    if let Some(bad) = types.iter().find(|t| !catalog::serves(FhirVersion::R4, t)) {
        return outcome_response(
            StatusCode::BAD_REQUEST,
            Issue::new(
                "fatal",
                "not-supported",
                "59136",
                "The requested resource type is not supported for bulk export.",
            )
            .with_diagnostics(format!("Unsupported _type: {bad}")),
        );
    }
    let mut filters: HashMap<String, Vec<(String, String)>> = HashMap::new();
    if let Some(tf) = get("_typeFilter") {
        for f in tf.split(',') {
            if let Some((ty, query)) = f.split_once('?') {
                let parsed = url::form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()));
                filters.entry(ty.to_string()).or_default().extend(parsed);
            }
        }
    }

    let key = (call.grant.client_id.clone(), group_id.to_string());
    let window = Duration::from_secs(fhir.config.bulk.kickoff_window_secs);
    {
        let kickoffs = fhir.bulk.kickoffs.lock().unwrap();
        if let Some((at, _)) = kickoffs.get(&key)
            && at.elapsed() < window
        {
            return outcome_response(
                StatusCode::TOO_MANY_REQUESTS,
                Issue::new("fatal", "throttled", "59130", "Request not allowed.").with_diagnostics(
                    "Error processing Bulk Data Kickoff request: Request not allowed: The Client requested this Group too recently.",
                ),
            );
        }
    }

    let licence = call.licence();
    let max_lines = fhir.config.bulk.max_lines_per_file.max(1);
    let mut files = Vec::new();
    for ty in &types {
        if licence.excludes(ty) {
            continue;
        }
        let mut segs = Vec::new();
        let mut denied: Vec<Issue> = Vec::new();
        for &i in &members {
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
            if let Some(filter) = filters.get(ty) {
                let mut p = filter.clone();
                p.push(("patient".to_string(), pid.clone()));
                let req = SearchRequest { version: FhirVersion::R4, ty, params: &p };
                if let Ok(found) = fhir.search(&req, &licence) {
                    segs.extend(found.segs);
                    for issue in found.licence {
                        if !denied.contains(&issue) {
                            denied.push(issue);
                        }
                    }
                }
                continue;
            }
            for d in Dataset::of_type(FhirVersion::R4, ty) {
                let key = d.license_key(FhirVersion::R4).unwrap_or_else(|| ty.clone());
                let issue = if licence.excludes(&key) {
                    Some(Issue::unlicensed(&key))
                } else if let Some(n) = licence.narrowing(&key) {
                    let mut own = Vec::new();
                    fhir.dataset_segments(FhirVersion::R4, i, d, &mut own);
                    segs.extend(fhir.withhold(own));
                    Some(n.issue())
                } else {
                    fhir.dataset_segments(FhirVersion::R4, i, d, &mut segs);
                    None
                };
                if let Some(issue) = issue
                    && !denied.contains(&issue)
                {
                    denied.push(issue);
                }
            }
            segs.extend(fhir.overlay.added(ty, Some(&pid)).into_iter().map(|a| Seg::Owned(a.value)));
        }
        let total: usize = segs.iter().map(Seg::len).sum();
        let segs = Arc::new(segs);
        let outcome = (!denied.is_empty()).then(|| wire::outcome(&denied));
        let chunks = total.div_ceil(max_lines).max(usize::from(outcome.is_some()));
        for n in 0..chunks {
            let offset = n * max_lines;
            files.push(FileSpec {
                ty: ty.clone(),
                name: format!("{ty}-{}.ndjson", n + 1),
                segs: segs.clone(),
                offset,
                len: max_lines.min(total - offset.min(total)),
                outcome: if n == 0 { outcome.clone() } else { None },
            });
        }
    }

    let job_id = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
    let request = if query.is_empty() {
        format!("{}/Group/{group_id}/$export", call.base)
    } else {
        format!("{}/Group/{group_id}/$export?{query}", call.base)
    };
    let job = Job {
        client_id: call.grant.client_id.clone(),
        group_id: group_id.to_string(),
        request,
        transaction_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        polls_left: AtomicU32::new(fhir.config.bulk.polls_before_ready),
        files,
    };
    fhir.bulk.jobs.lock().unwrap().insert(job_id.clone(), Arc::new(job));
    fhir.bulk.kickoffs.lock().unwrap().insert(key, (Instant::now(), job_id.clone()));
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/BulkRequest/{job_id}", call.base)) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    resp
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
    let manifest = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], wire::json_bytes(&manifest))
        .into_response()
}

/// Handles a file download (streamed).
pub(crate) fn file(call: &Call, job_id: &str, name: &str) -> Response {
    let job = match job(call, job_id) {
        Ok(j) => j,
        Err(rejection) => return rejection.respond(Format::Json),
    };
    if job.polls_left.load(Ordering::SeqCst) > 0 {
        return wire::not_found(Format::Json);
    }
    let Some(index) = job.files.iter().position(|f| f.name == name) else {
        return wire::not_found(Format::Json);
    };
    let st = call.st.clone();
    let head: Option<Bytes> = job.files[index].outcome.as_ref().map(|o| {
        let mut line = wire::json_bytes(o);
        line.push(b'\n');
        Bytes::from(line)
    });
    let stream = futures::stream::unfold((0usize, head), move |(done, head)| {
        let st = st.clone();
        let job = job.clone();
        async move {
            if let Some(h) = head {
                return Some((Ok::<Bytes, std::io::Error>(h), (done, None)));
            }
            let f = &job.files[index];
            if done >= f.len {
                return None;
            }
            let n = LINES_PER_CHUNK.min(f.len - done);
            let items = st.fhir.materialise(FhirVersion::R4, &f.segs, f.offset + done, n);
            let mut buf = Vec::with_capacity(n * 1024);
            for item in &items {
                buf.extend_from_slice(&wire::json_bytes(item));
                buf.push(b'\n');
            }
            Some((Ok(Bytes::from(buf)), (done + n, None)))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    resp
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
