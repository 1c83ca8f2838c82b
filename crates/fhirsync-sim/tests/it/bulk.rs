//! Bulk $export: kick-off, polling, manifest, NDJSON files, delete, the too-recently window, and
//! the fault switches (error[] entries, 410, truncated plain and gzip files, urn:uuid members,
//! a read-only statement).

use fhirsync_sim::fhir::{BulkConfig, BulkFault, BulkFaultKind, DEFAULT_GROUP_ID, FhirConfig};
use fhirsync_sim::oauth::ClientRegistration;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

fn config(polls: u32, lines: usize) -> FhirConfig {
    FhirConfig {
        patients: 12,
        bulk: BulkConfig {
            polls_before_ready: polls,
            retry_after_secs: 1,
            max_lines_per_file: lines,
            ..BulkConfig::default()
        },
        ..FhirConfig::default()
    }
}

async fn kickoff(env: &Env, query: &str) -> reqwest::Response {
    env.http
        .get(format!("{}/Group/{DEFAULT_GROUP_ID}/$export{query}", env.r4()))
        .bearer_auth(&env.token)
        .header("accept", JSON)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap()
}

/// Kick-off → 202 + Content-Location; polls → 202 with X-Progress/Retry-After; then the manifest;
/// files are NDJSON of at most max_lines_per_file lines; DELETE → 202 and the job is gone.
#[tokio::test]
async fn full_cycle() {
    let env = Env::with(config(2, 100)).await;
    let resp = kickoff(&env, "?_type=Patient,Observation,Condition").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let status_url = resp.headers()["content-location"].to_str().unwrap().to_string();
    assert!(status_url.starts_with(&format!("{}/BulkRequest/", env.r4())));
    for _ in 0..2 {
        let poll = env.get(&status_url, Some(JSON)).await;
        assert_eq!(poll.status(), StatusCode::ACCEPTED);
        assert!(poll.headers().contains_key("x-progress"));
        assert_eq!(poll.headers()["retry-after"], "1");
    }
    let done = env.get(&status_url, Some(JSON)).await;
    assert_eq!(done.status(), StatusCode::OK);
    let manifest: Value = done.json().await.unwrap();
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"].is_string());
    assert!(manifest["request"].as_str().unwrap().contains("$export"));
    assert_eq!(manifest["error"], serde_json::json!([]));
    let output = manifest["output"].as_array().unwrap();
    let mut per_type = std::collections::BTreeMap::<String, usize>::new();
    for file in output {
        let resp = env.get(file["url"].as_str().unwrap(), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/fhir+ndjson");
        let text = resp.text().await.unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.len() <= 100);
        assert_eq!(lines.len(), file["count"].as_u64().unwrap() as usize);
        assert!(lines.iter().all(|r| r["resourceType"] == file["type"]));
        *per_type.entry(file["type"].as_str().unwrap().to_string()).or_default() += lines.len();
    }
    assert_eq!(per_type["Patient"], 12);
    let state = env.sim.state();
    let obs: usize = (0..12)
        .map(|i| {
            ["laboratory", "vital-signs", "social-history"]
                .iter()
                .map(|c| state.fhir.generated_count(i, &format!("Observation:{c}")).unwrap())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(per_type["Observation"], obs);
    assert!(output.iter().filter(|f| f["type"] == "Observation").count() > 1, "split into several files");
    let resp = env.http.delete(&status_url).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(env.get(&status_url, Some(JSON)).await.status(), StatusCode::NOT_FOUND);
}

/// A second kick-off for the same Group by the same client is refused (429, Epic's message);
/// another client may; deleting before completion frees the window.
#[tokio::test]
async fn too_recently() {
    let env = Env::with(config(5, 3000)).await;
    let first = kickoff(&env, "?_type=Patient").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = kickoff(&env, "?_type=Patient").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = second.json().await.unwrap();
    assert!(body["issue"][0]["diagnostics"].as_str().unwrap().contains(
        "Error processing Bulk Data Kickoff request: Request not allowed: The Client requested this Group too recently."
    ));
    let status_url = first.headers()["content-location"].to_str().unwrap().to_string();
    env.http.delete(&status_url).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(kickoff(&env, "?_type=Patient").await.status(), StatusCode::ACCEPTED);
}

/// Files need the token of the client that kicked off.
#[tokio::test]
async fn files_need_same_client() {
    let env = Env::with(config(0, 3000)).await;
    let status_url =
        kickoff(&env, "?_type=Patient").await.headers()["content-location"].to_str().unwrap().to_string();
    let manifest: Value = env.get(&status_url, Some(JSON)).await.json().await.unwrap();
    let url = manifest["output"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(env.http.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let other = env.sim.read_token("other");
    assert_eq!(env.http.get(&url).bearer_auth(other).send().await.unwrap().status(), StatusCode::FORBIDDEN);
}

/// _typeFilter narrows a type; unlicensed sub-types appear as OperationOutcome lines.
#[tokio::test]
async fn type_filter_and_unlicensed_outcome_lines() {
    let env = Env::with(config(0, 3000)).await;
    env.sim.state().oauth.register_client(ClientRegistration {
        client_id: CLIENT.to_string(),
        unauthorized_datasets: vec!["Condition:health-concern".to_string()],
        ..ClientRegistration::default()
    });
    let q = "?_type=Observation,Condition&_typeFilter=Observation%3Fcategory%3Dlaboratory";
    let status_url = kickoff(&env, q).await.headers()["content-location"].to_str().unwrap().to_string();
    let manifest: Value = env.get(&status_url, Some(JSON)).await.json().await.unwrap();
    for file in manifest["output"].as_array().unwrap() {
        let text = env.get(file["url"].as_str().unwrap(), None).await.text().await.unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        match file["type"].as_str().unwrap() {
            "Observation" => {
                assert!(lines.iter().all(|o| o["category"][0]["coding"][0]["code"] == "laboratory"))
            }
            "Condition" => {
                assert_eq!(lines[0]["resourceType"], "OperationOutcome");
                assert_eq!(issue_codes(&lines[0]), ["59204"]);
                assert!(lines[1..].iter().all(|c| c["category"][0]["coding"][0]["code"] != "health-concern"));
            }
            other => panic!("unexpected type {other}"),
        }
    }
}

/// Kick-off without Prefer: respond-async is 400; unknown Groups are 404.
#[tokio::test]
async fn kickoff_validation() {
    let env = Env::with(config(0, 3000)).await;
    let resp = env.get(&format!("{}/Group/{DEFAULT_GROUP_ID}/$export", env.r4()), Some(JSON)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = env
        .http
        .get(format!("{}/Group/eNoSuchGroup/$export", env.r4()))
        .bearer_auth(&env.token)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// Kicks off `query` and returns the manifest (the config must need no polls).
async fn manifest(env: &Env, query: &str) -> (Value, reqwest::header::HeaderMap) {
    let resp = kickoff(env, query).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let status_url = resp.headers()["content-location"].to_str().unwrap().to_string();
    let done = env.get(&status_url, Some(JSON)).await;
    assert_eq!(done.status(), StatusCode::OK);
    let headers = done.headers().clone();
    (done.json().await.unwrap(), headers)
}

fn url_of<'a>(manifest: &'a Value, ty: &str) -> &'a str {
    manifest["output"].as_array().unwrap().iter().find(|f| f["type"] == ty).unwrap()["url"].as_str().unwrap()
}

/// An ExportError fault drops the type's file and names it in an `error[]` OperationOutcome
/// ("Failed to export 2.Condition.ndjson"), for the armed number of kick-offs only; the manifest
/// carries a future `Expires`.
#[tokio::test]
async fn export_error_fault_fills_error_array_once() {
    let mut cfg = config(0, 3000);
    cfg.bulk.faults =
        vec![BulkFault { kind: BulkFaultKind::ExportError, target: "Condition".into(), times: 1 }];
    let env = Env::with(cfg).await;
    let (m, headers) = manifest(&env, "?_type=Patient,Condition").await;
    let expires = httpdate::parse_http_date(headers["expires"].to_str().unwrap()).unwrap();
    assert!(expires > std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600));
    assert!(m["output"].as_array().unwrap().iter().all(|f| f["type"] == "Patient"), "{m}");
    let errors = m["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["type"], "OperationOutcome");
    let text = env.get(errors[0]["url"].as_str().unwrap(), None).await.text().await.unwrap();
    let oo: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["severity"], "error");
    assert_eq!(oo["issue"][0]["diagnostics"], "Failed to export 2.Condition.ndjson");
    env.sim.state().fhir.reset_bulk_window();
    let (m, _) = manifest(&env, "?_type=Patient,Condition").await;
    assert_eq!(m["error"], serde_json::json!([]));
    assert!(m["output"].as_array().unwrap().iter().any(|f| f["type"] == "Condition"));
}

/// A Gone fault answers 410 with an OperationOutcome, then the file is served; a Truncated
/// fault ends the (plain) body in the middle of a line, fewer lines than the manifest's count.
#[tokio::test]
async fn gone_and_truncated_files() {
    let env = Env::with(config(0, 3000)).await;
    let fhir = &env.sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::Gone, "Patient-1.ndjson", 1);
    fhir.bulk_fault(BulkFaultKind::Truncated, "Encounter-1.ndjson", 1);
    let (m, _) = manifest(&env, "?_type=Patient,Encounter").await;
    let patient_url = url_of(&m, "Patient");
    let gone = env.get(patient_url, None).await;
    assert_eq!(gone.status(), StatusCode::GONE);
    assert_eq!(gone.json::<Value>().await.unwrap()["resourceType"], "OperationOutcome");
    let text = env.get(patient_url, None).await.text().await.unwrap();
    assert_eq!(text.lines().count(), 12);

    let enc = m["output"].as_array().unwrap().iter().find(|f| f["type"] == "Encounter").unwrap();
    let count = enc["count"].as_u64().unwrap() as usize;
    assert!(count >= 2, "{count} encounters");
    let cut = env.get(enc["url"].as_str().unwrap(), None).await.text().await.unwrap();
    let lines: Vec<&str> = cut.lines().collect();
    assert!(lines.len() < count, "{} of {count} lines", lines.len());
    assert!(serde_json::from_str::<Value>(lines.last().unwrap()).is_err(), "ends mid-line");
    let whole = env.get(enc["url"].as_str().unwrap(), None).await.text().await.unwrap();
    assert_eq!(whole.lines().count(), count);
}

/// With `gzip`, files are sent `Content-Encoding: gzip` (decoded transparently to the same
/// lines); a truncated gzip file fails to decode.
#[tokio::test]
async fn gzip_files_and_truncated_gzip() {
    let mut cfg = config(0, 3000);
    cfg.bulk.gzip = true;
    let env = Env::with(cfg).await;
    let (m, _) = manifest(&env, "?_type=Patient").await;
    let url = url_of(&m, "Patient").to_string();
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw.get(&url).bearer_auth(&env.token).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let text = env.get(&url, None).await.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    assert!(lines.iter().all(|p| p["resourceType"] == "Patient"));
    env.sim.state().fhir.bulk_fault(BulkFaultKind::Truncated, "Patient-1.ndjson", 1);
    assert!(env.get(&url, None).await.text().await.is_err(), "truncated gzip must not decode");
}

/// With `urn_uuid_members`, Group members are `urn:uuid:` references to contained Patients that
/// carry the MRN identifier of the exported Patient (and no server id).
#[tokio::test]
async fn urn_uuid_group_members() {
    let mut cfg = config(0, 3000);
    cfg.patients = 3;
    cfg.bulk.urn_uuid_members = true;
    let env = Env::with(cfg).await;
    let (status, group) = env.json(&format!("{}/Group/{DEFAULT_GROUP_ID}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    let members = group["member"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let (m, _) = manifest(&env, "?_type=Patient").await;
    let text = env.get(url_of(&m, "Patient"), None).await.text().await.unwrap();
    let patients: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for member in members {
        let r = member["entity"]["reference"].as_str().unwrap();
        let uuid = r.strip_prefix("urn:uuid:").unwrap_or_else(|| panic!("{r}"));
        let c = group["contained"].as_array().unwrap().iter().find(|c| c["id"] == uuid).unwrap();
        assert_eq!(c["resourceType"], "Patient");
        let mrn = &c["identifier"][0];
        assert!(patients.iter().any(|p| p["identifier"].as_array().unwrap().contains(mrn)), "{mrn}");
        assert!(!patients.iter().any(|p| p["id"] == uuid));
    }
}

/// With `read_only_statement`, every type declares only `read` and no search parameters; Group
/// keeps its `$export` operation.
#[tokio::test]
async fn read_only_statement() {
    let mut cfg = config(0, 3000);
    cfg.bulk.read_only_statement = true;
    let env = Env::with(cfg).await;
    let (_, s) = env.json(&format!("{}/metadata", env.r4())).await;
    let resources = s["rest"][0]["resource"].as_array().unwrap();
    assert!(resources.len() > 10);
    for r in resources {
        assert_eq!(r["interaction"], serde_json::json!([{"code": "read"}]), "{}", r["type"]);
        assert!(r.get("searchParam").is_none());
    }
    let group = resources.iter().find(|r| r["type"] == "Group").unwrap();
    assert!(group["operation"][0]["definition"].as_str().unwrap().ends_with("group-export"));
}
