//! A scripted mini-Epic: CapabilityStatements, patient lists (STU3 and R4), searches with
//! sessionID paging, 4101 / 59204 outcome entries, 4113 session expiry, and failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fhirsync_auth::StaticToken;
use fhirsync_extract::{ConnectionConfig, ExtractConfig};
use fhirsync_fhir::FhirClient;

/// Shared stub state.
#[derive(Debug, Default)]
pub struct Stub {
    /// Requests per `Type` (searches and pages).
    pub hits: Mutex<HashMap<String, usize>>,
    /// Patients whose Observation searches fail with HTTP 500.
    pub failing_patients: Vec<String>,
    /// Encounter page-2 requests answered with 4113 so far, per patient.
    pub expired: Mutex<HashMap<String, usize>>,
    /// Answer everything with 401.
    pub reject_all: bool,
    /// Total requests.
    pub requests: AtomicUsize,
    /// `Bundle.total` answered to `Type?...&_summary=count` (no entry: no total).
    pub counts: HashMap<String, u64>,
}

type Q = Query<HashMap<String, String>>;

const EPIC: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369";

fn fhir(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], body).into_response()
}

fn oo(code: &str, text: &str) -> String {
    format!(
        r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"warning","code":"processing","details":{{"coding":[{{"system":"{EPIC}","code":"{code}","display":"{text}"}}],"text":"{text}"}}}}]}}"#
    )
}

/// A searchset with resources, outcome entries and an optional next link. `total` is set to
/// a wrong value on purpose (Epic: entries on the page).
fn bundle(resources: &[String], outcomes: &[String], next: Option<String>) -> String {
    let mut entries: Vec<String> =
        resources.iter().map(|r| format!(r#"{{"resource":{r},"search":{{"mode":"match"}}}}"#)).collect();
    entries.extend(
        outcomes
            .iter()
            .map(|o| format!(r#"{{"fullUrl":"urn:uuid:x","resource":{o},"search":{{"mode":"outcome"}}}}"#)),
    );
    let link = next.map(|n| format!(r#",{{"relation":"next","url":"{n}"}}"#)).unwrap_or_default();
    format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":{},"link":[{{"relation":"self","url":"s"}}{link}],"entry":[{}]}}"#,
        resources.len(),
        entries.join(",")
    )
}

fn capability() -> String {
    let r = |t: &str, ps: &[&str]| {
        let params: Vec<String> = ps.iter().map(|p| format!(r#"{{"name":"{p}","type":"token"}}"#)).collect();
        format!(
            r#"{{"type":"{t}","interaction":[{{"code":"read"}},{{"code":"search-type"}}],"searchParam":[{}]}}"#,
            params.join(",")
        )
    };
    let types = [
        r("Patient", &["_id", "identifier"]),
        r("Observation", &["patient", "subject", "category"]),
        r("Condition", &["patient", "category"]),
        r("Encounter", &["patient"]),
        r("List", &["code", "identifier"]),
        r("Medication", &["_id"]),
    ];
    format!(
        r#"{{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1","software":{{"name":"Epic"}},"rest":[{{"mode":"server","resource":[{}]}}]}}"#,
        types.join(",")
    )
}

fn list(id: &str, members: &[&str]) -> String {
    let entries: Vec<String> =
        members.iter().map(|m| format!(r#"{{"item":{{"reference":"Patient/{m}"}}}}"#)).collect();
    format!(
        r#"{{"resourceType":"List","id":"{id}","status":"current","mode":"working","entry":[{}]}}"#,
        entries.join(",")
    )
}

fn resource(ty: &str, id: &str, patient: &str) -> String {
    format!(r#"{{"resourceType":"{ty}","id":"{id}","subject":{{"reference":"Patient/{patient}"}}}}"#)
}

async fn handler(
    State(s): State<Arc<Stub>>,
    Path((ver, ty)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if s.reject_all {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    *s.hits.lock().unwrap().entry(ty.clone()).or_default() += 1;
    let session = q.get("sessionID").cloned();
    if q.get("_summary").map(String::as_str) == Some("count") {
        let body = match s.counts.get(&ty) {
            Some(n) => format!(r#"{{"resourceType":"Bundle","type":"searchset","total":{n}}}"#),
            None => r#"{"resourceType":"Bundle","type":"searchset"}"#.to_string(),
        };
        return fhir(StatusCode::OK, body);
    }
    match ty.as_str() {
        "metadata" => fhir(StatusCode::OK, capability()),
        "List" => list_page(&ver, &q, session),
        "Patient" => {
            let id = q.get("_id").cloned().unwrap_or_default();
            fhir(StatusCode::OK, bundle(&[format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#)], &[], None))
        }
        "Observation" => observation_page(&s, &q, session),
        "Condition" => condition_page(&q),
        "Encounter" => encounter_page(&s, &q, session),
        _ => {
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<html>404</html>").into_response()
        }
    }
}

/// Epic's patient list (STU3 `patientlist` or R4 `patients` code), two pages.
fn list_page(ver: &str, q: &HashMap<String, String>, session: Option<String>) -> Response {
    let ident = q.get("identifier").cloned().unwrap_or_default();
    let ok = match ver {
        "STU3" => q.get("code").map(String::as_str) == Some("patientlist") && ident == "systemlist|6442",
        _ => {
            q.get("code").map(String::as_str) == Some("patients")
                && ident == "urn:oid:1.2.840.114350.1.13.0.1.7.2.806567|6442"
        }
    };
    if !ok && session.is_none() {
        return fhir(StatusCode::OK, bundle(&[], &[oo("4101", "no results")], None));
    }
    // Two pages; members overlap to prove de-duplication.
    match session.as_deref() {
        None => fhir(
            StatusCode::OK,
            bundle(&[list("l1", &["p1", "p2", "p1"])], &[], Some("List?sessionID=L2".into())),
        ),
        _ => fhir(StatusCode::OK, bundle(&[list("l2", &["p3", "p2"])], &[], None)),
    }
}

/// Two pages of Observations per patient and category; `social-history` is empty, a failing
/// patient answers 500.
fn observation_page(s: &Stub, q: &HashMap<String, String>, session: Option<String>) -> Response {
    let patient = q.get("patient").or(session.as_ref()).cloned().unwrap_or_default();
    let patient = patient.split(':').next().unwrap_or_default().to_string();
    if s.failing_patients.contains(&patient) {
        return fhir(StatusCode::INTERNAL_SERVER_ERROR, oo("59999", "boom"));
    }
    match session {
        None => {
            let cat = q.get("category").cloned().unwrap_or_default();
            if cat == "social-history" {
                return fhir(
                    StatusCode::OK,
                    bundle(&[], &[oo("4101", "Resource request returns no results.")], None),
                );
            }
            let rs = vec![
                resource("Observation", &format!("{patient}-{cat}-1"), &patient),
                resource("Observation", &format!("{patient}-{cat}-2"), &patient),
            ];
            fhir(StatusCode::OK, bundle(&rs, &[], Some(format!("Observation?sessionID={patient}:{cat}"))))
        }
        Some(sess) => {
            let (patient, cat) = sess.split_once(':').unwrap_or_default();
            fhir(
                StatusCode::OK,
                bundle(&[resource("Observation", &format!("{patient}-{cat}-3"), patient)], &[], None),
            )
        }
    }
}

/// Conditions with a named and an unnamed suppression.
fn condition_page(q: &HashMap<String, String>) -> Response {
    let patient = q.get("patient").cloned().unwrap_or_default();
    match q.get("category").map(String::as_str) {
        // As production Epic: a named Outside-Record sub-type withheld next to the data.
        Some("problem-list-item") => fhir(
            StatusCode::OK,
            bundle(
                &[resource("Condition", &format!("{patient}-c"), &patient)],
                &[oo(
                    "59204",
                    "Client not authorized for Condition - Outside Record Problems. Search results of this type have not been included.",
                )],
                None,
            ),
        ),
        // A suppression that names no sub-type: what is missing is unknown.
        Some("encounter-diagnosis") => fhir(
            StatusCode::OK,
            bundle(&[], &[oo("59204", "Client not authorized for a sub-resource.")], None),
        ),
        _ => fhir(StatusCode::OK, bundle(&[], &[oo("4101", "none")], None)),
    }
}

/// Two pages of Encounters; the first follow-up of each session answers Epic's 4113.
fn encounter_page(s: &Stub, q: &HashMap<String, String>, session: Option<String>) -> Response {
    let patient = q.get("patient").cloned().or(session.clone()).unwrap_or_default();
    match session {
        None => fhir(
            StatusCode::OK,
            bundle(
                &[resource("Encounter", &format!("{patient}-e1"), &patient)],
                &[],
                Some(format!("Encounter?sessionID={patient}")),
            ),
        ),
        Some(p) => {
            let mut exp = s.expired.lock().unwrap();
            let n = exp.entry(p.clone()).or_default();
            *n += 1;
            if *n == 1 {
                // Epic: the cached search session expired → re-issue the search.
                fhir(StatusCode::BAD_REQUEST, oo("4113", "Session ID for cached search results has expired."))
            } else {
                fhir(StatusCode::OK, bundle(&[resource("Encounter", &format!("{p}-e2"), &p)], &[], None))
            }
        }
    }
}

/// Serves the stub; returns its root URL (`http://127.0.0.1:PORT`).
pub async fn serve(stub: Arc<Stub>) -> String {
    let app = Router::new().route("/api/FHIR/{ver}/{ty}", get(handler)).with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A connection with R4 + STU3 endpoints under `root` and the `systemlist|6442` list.
pub fn connection(root: &str) -> ConnectionConfig {
    ConnectionConfig {
        client_id: Some("test-client".into()),
        fhir_base_url: Some(url::Url::parse(root).expect("stub root is a URL")),
        patient_list_identifier: Some("systemlist|6442".into()),
        ..ConnectionConfig::default()
    }
}

/// Extract settings for tests: no rate limit, fast retries.
pub fn extract_config() -> ExtractConfig {
    let mut c = ExtractConfig { rate_limit: 0.0, concurrency: 4, ..ExtractConfig::default() };
    c.retry.max_retries = 2;
    c.retry.base_delay_ms = 1;
    c.retry.max_delay_ms = 5;
    c.datasets = vec!["Patient".into(), "Observation".into(), "Condition".into(), "Encounter".into()];
    c
}

/// A client with a static token.
pub fn client(conn: &ConnectionConfig, cfg: &ExtractConfig) -> FhirClient {
    fhirsync_extract::build_client(conn, cfg, Arc::new(StaticToken("t".to_string().into()))).unwrap()
}

/// Drains a channel into (resources, completed scopes) until the sender is dropped.
pub async fn drain(
    mut rx: tokio::sync::mpsc::Receiver<fhirsync_core::ExtractEvent>,
    slow: Option<Duration>,
) -> (Vec<fhirsync_core::RawResource>, Vec<fhirsync_core::ScopeKey>) {
    let mut res = Vec::new();
    let mut done = Vec::new();
    while let Some(e) = rx.recv().await {
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        match e {
            fhirsync_core::ExtractEvent::Resources(r) => res.extend(r),
            fhirsync_core::ExtractEvent::ScopeComplete(s) => {
                // Every resource of a scope arrives before its completion.
                done.push(s)
            }
        }
    }
    (res, done)
}
