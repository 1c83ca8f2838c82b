//! `fhirsync push` (write-back) against the simulator's create support.

use std::path::PathBuf;

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use crate::util::{Env, count, fhirsync, output, text};

/// A vital-signs Observation for `patient`, unique by `value`.
fn observation(patient: &str, value: u32) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-01T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "/min"}
    })
}

/// Writes NDJSON lines into the env's folder.
fn ndjson(env: &Env, name: &str, lines: &[String]) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write ndjson");
    path
}

/// The result file's lines.
fn results(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("result file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("result line is JSON"))
        .collect()
}

fn posts(env: &Env) -> usize {
    env.sim.state().fhir.faults.request_log().iter().filter(|r| r.method == "POST").count()
}

/// Valid lines are created (ids from Location in the result file), then read and synced back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_creates_resources_that_are_then_searchable() {
    let env = Env::start(2).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(
        &env,
        "obs.ndjson",
        &[observation(&patient, 71).to_string(), observation(&patient, 72).to_string()],
    );
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Observation"]).arg(&file);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 created"), "{}", text(&out));
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines.len(), 2);
    let mut ids = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["line"], i + 1);
        assert_eq!(line["status"], "created", "{line}");
        let id = line["id"].as_str().expect("created id").to_string();
        let stored = env.sim.state().fhir.resource(FhirVersion::R4, "Observation", &id).expect("stored");
        assert_eq!(stored["identifier"][0]["system"], "urn:fhirsync:push");
        ids.push(id);
    }
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["sync", "--no-progress"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    for id in ids {
        assert_eq!(count(&env.db(), &format!("SELECT COUNT(*) FROM observation WHERE id = '{id}'")), 1);
    }
}

/// One invalid line stops the push before any POST; every problem is in the result file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rejects_invalid_lines_before_any_post() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let mut no_subject = observation(&patient, 70);
    no_subject.as_object_mut().unwrap().remove("subject");
    let file = ndjson(
        &env,
        "bad.ndjson",
        &[
            observation(&patient, 70).to_string(),
            "{not json".into(),
            json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{patient}")}})
                .to_string(),
            no_subject.to_string(),
        ],
    );
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Observation"]).arg(&file);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nothing was sent"), "{}", text(&out));
    assert_eq!(posts(&env), 0);
    let lines = results(&env.dir.path().join("bad.results.ndjson"));
    let statuses: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["skipped", "invalid", "invalid", "invalid"]);
    assert!(lines[2]["error"].as_str().unwrap().contains("resourceType is Condition"));
    assert!(lines[3]["error"].as_str().unwrap().contains("no patient reference"));
}

/// A type without the create interaction in the CapabilityStatement is refused up front, naming the allowed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_type_without_create_interaction() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let enc = json!({"resourceType": "Encounter", "status": "finished", "subject": {"reference": format!("Patient/{patient}")}});
    let file = ndjson(&env, "enc.ndjson", &[enc.to_string()]);
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Encounter"]).arg(&file);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("Encounter cannot be created on the R4 endpoint"), "{all}");
    assert!(all.contains("Observation"), "allowed types are listed: {all}");
    assert_eq!(posts(&env), 0);
}

/// A create the server stored but never acknowledged (dropped connection) is found by search, not re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_after_store_does_not_duplicate() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(&env, "obs.ndjson", &[observation(&patient, 99).to_string()]);
    env.sim.state().fhir.faults.drop_next_creates(1);
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Observation"]).arg(&file);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(posts(&env), 1, "the create is never re-sent");
    let line = &results(&env.dir.path().join("obs.results.ndjson"))[0];
    assert_eq!(line["status"], "created", "{line}");
    let id = line["id"].as_str().expect("id found by search");
    assert!(env.sim.state().fhir.resource(FhirVersion::R4, "Observation", id).is_some());
    assert!(line["notes"].to_string().contains("found on the server"), "{line}");
    // Exactly one copy on the server.
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["sync", "--no-progress"]);
    assert!(output(cmd).await.status.success());
    let key = line["notes"].to_string();
    let key =
        key.split("urn:fhirsync:push|").nth(1).and_then(|k| k.get(..64)).expect("key in notes").to_string();
    assert_eq!(
        count(&env.db(), &format!("SELECT COUNT(*) FROM observation WHERE resource LIKE '%{key}%'")),
        1
    );
}

/// A 5xx answered before the server stored the create: the search finds nothing, so it is re-sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_before_store_is_resent_after_search() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(&env, "obs.ndjson", &[observation(&patient, 55).to_string()]);
    env.sim.state().fhir.faults.fail_next_creates(1, 500);
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Observation"]).arg(&file);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(posts(&env), 2);
    let line = &results(&env.dir.path().join("obs.results.ndjson"))[0];
    assert_eq!(line["status"], "created", "{line}");
    assert!(
        env.sim.state().fhir.resource(FhirVersion::R4, "Observation", line["id"].as_str().unwrap()).is_some()
    );
}

/// A server refusal (400 with an OperationOutcome) is reported per line with its text, exit code 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_create_reports_outcome_and_fails() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(
        &env,
        "obs.ndjson",
        &[observation(&patient, 60).to_string(), observation("eUnknownPatient0", 61).to_string()],
    );
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "Observation"]).arg(&file);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "created");
    assert_eq!(lines[1]["status"], "failed");
    assert!(lines[1]["error"].as_str().unwrap().contains("HTTP 400"), "{}", lines[1]);
    assert!(text(&out).contains("1 created"), "{}", text(&out));
}

/// An unacknowledged create that cannot be checked by search (ConceptMap: no patient search) is
/// reported UNCONFIRMED and never re-sent blindly; exit code 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_unacknowledged_create_is_unconfirmed_not_resent() {
    let env = Env::start(1).await;
    let config = env.config("");
    let map = json!({"resourceType": "ConceptMap", "status": "draft", "name": "LocalLabCodes"});
    let file = ndjson(&env, "maps.ndjson", &[map.to_string()]);
    env.sim.state().fhir.faults.drop_next_creates(1);
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["push", "--type", "ConceptMap"]).arg(&file);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(posts(&env), 1, "never re-sent without a check");
    let line = &results(&env.dir.path().join("maps.results.ndjson"))[0];
    assert_eq!(line["status"], "unconfirmed", "{line}");
    assert!(line["error"].as_str().unwrap().contains("duplicate check could not run"), "{line}");
    assert!(text(&out).contains("UNCONFIRMED"), "{}", text(&out));
}
