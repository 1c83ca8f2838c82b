//! `fhirsync push` (write-back) against the simulator's create support, with its ledger.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fhirsync_core::{ContentHash, FhirVersion};
use serde_json::{Value, json};

use crate::util::{Cli, Env, count, process, text};

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
fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("result file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("result line is JSON"))
        .collect()
}

fn posts(env: &Env) -> usize {
    env.sim.state().fhir.faults.request_log().iter().filter(|r| r.method == "POST").count()
}

/// Server-side copies of the Observation pushed with `value`.
fn copies(env: &Env, value: u32) -> usize {
    env.sim
        .state()
        .fhir
        .created("Observation")
        .iter()
        .filter(|o| o["valueQuantity"]["value"] == value)
        .count()
}

/// The only ledger file under the env's state folder.
fn ledger_file(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("state").join("push-ledger");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("ledger folder").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// The ledger's events (header line left out).
fn ledger_events(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(ledger_file(env))
        .expect("ledger")
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("ledger line is JSON"))
        .collect()
}

/// The last ledger event of `line_text`.
fn ledger_state(env: &Env, line_text: &str) -> Option<Value> {
    let hash = ContentHash::of(line_text.as_bytes()).to_hex();
    ledger_events(env).into_iter().rev().find(|e| e["hash"] == hash.as_str())
}

/// `push --type Observation EXTRA FILE` with `config`.
fn push(config: &Path, file: &Path, extra: &[&str]) -> Cli {
    Cli::config(config).args(["push", "--type", "Observation"]).args(extra).arg(file)
}

/// Valid lines are created (ids from Location in the result file and the ledger), then synced back;
/// the ledger holds hashes and ids only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_creates_resources_that_are_then_searchable() {
    let env = Env::start(2).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let lines = [observation(&patient, 71).to_string(), observation(&patient, 72).to_string()];
    let file = ndjson(&env, "obs.ndjson", &lines);
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert!(text(&out).contains("2 filed, 0 already filed, 0 pending"), "{}", text(&out));
    let result = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(result.len(), 2);
    let mut ids = Vec::new();
    for (i, line) in result.iter().enumerate() {
        assert_eq!(line["line"], i + 1);
        assert_eq!(line["status"], "created", "{line}");
        let id = line["id"].as_str().expect("created id").to_string();
        assert!(env.sim.state().fhir.resource(FhirVersion::R4, "Observation", &id).is_some());
        let event = ledger_state(&env, &lines[i]).expect("ledger entry");
        assert_eq!(event["state"], "done");
        assert_eq!(event["id"], id.as_str());
        ids.push(id);
    }
    let ledger = std::fs::read_to_string(ledger_file(&env)).unwrap();
    assert!(!ledger.contains(&patient) && !ledger.contains("Heart rate"), "no resource content: {ledger}");
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    for id in ids {
        assert_eq!(count(&env.db(), &format!("SELECT COUNT(*) FROM observation WHERE id = '{id}'")), 1);
    }
}

/// A rerun of a completed push sends nothing (counted as already filed); a line repeated in the file is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_of_completed_push_files_nothing() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let a = observation(&patient, 81).to_string();
    let file = ndjson(&env, "obs.ndjson", &[a.clone(), observation(&patient, 82).to_string(), a]);
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert!(text(&out).contains("2 filed") && text(&out).contains("1 repeated"), "{}", text(&out));
    assert_eq!(posts(&env), 2);
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert!(text(&out).contains("0 filed, 2 already filed, 0 pending"), "{}", text(&out));
    assert_eq!(posts(&env), 2, "nothing sent again");
    assert_eq!((copies(&env, 81), copies(&env, 82)), (1, 1));
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    let statuses: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["already-filed", "already-filed", "repeated"]);
    assert!(lines[0]["id"].is_string(), "the id is taken from the ledger: {}", lines[0]);
}

/// The process is killed (SIGKILL) after the server filed the create and before its answer arrived:
/// the rerun reports 1 pending with its line number and files nothing twice; `--retry-pending`
/// then re-sends it once, and a further rerun sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_post_and_ledger_write_is_reported_not_refiled() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let held = observation(&patient, 91).to_string();
    let file = ndjson(&env, "obs.ndjson", &[held.clone(), observation(&patient, 92).to_string()]);
    env.sim.state().fhir.faults.delay_next_creates(1, Duration::from_secs(60));
    let mut child = process()
        .arg("--config")
        .arg(&config)
        .args(["push", "--type", "Observation"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("push starts");
    let started = Instant::now();
    while copies(&env, 91) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the create never reached the server");
        assert!(
            child.try_wait().expect("child state").is_none(),
            "push ended before its create was answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ledger_state(&env, &held).expect("written before the POST")["state"], "pending");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert_eq!(ledger_state(&env, &held).unwrap()["state"], "pending", "the answer was never recorded");

    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    let all = text(&out);
    assert!(all.contains("1 filed, 0 already filed, 1 pending (not retried: line 1)"), "{all}");
    assert!(all.contains("--retry-pending"), "{all}");
    assert_eq!(posts(&env), 2, "the pending line is not re-sent; line 2 is sent once");
    assert_eq!((copies(&env, 91), copies(&env, 92)), (1, 1), "one copy of each on the server");
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "pending", "{}", lines[0]);

    let out = push(&config, &file, &[]).run().await;
    assert_eq!(out.status.code(), Some(5), "still pending: {}", text(&out));
    assert!(text(&out).contains("0 filed, 1 already filed, 1 pending"), "{}", text(&out));
    assert_eq!(posts(&env), 2);

    // The operator checks the chart and finds the create was not kept (here: removed), then retries.
    let id = env
        .sim
        .state()
        .fhir
        .created("Observation")
        .iter()
        .find(|o| o["valueQuantity"]["value"] == 91)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.sim.state().fhir.delete_resource("Observation", &id).unwrap();
    let out = push(&config, &file, &["--retry-pending"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("1 filed, 1 already filed, 0 pending"), "{}", text(&out));
    assert_eq!(posts(&env), 3, "re-sent exactly once");
    assert_eq!(copies(&env, 91), 1);
    assert_eq!(ledger_state(&env, &held).unwrap()["state"], "done");

    let out = push(&config, &file, &["--retry-pending"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("0 filed, 2 already filed"), "{}", text(&out));
    assert_eq!(posts(&env), 3);
}

/// With `--retry-pending`, a pending entry with a recorded id is read first: there → done
/// without a POST; gone (404) → POSTed again. Without the flag it is only reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_pending_reads_a_recorded_id_before_resending() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let seed = ndjson(&env, "seed.ndjson", &[observation(&patient, 10).to_string()]);
    push(&config, &seed, &[]).run().await.assert_success();
    // An earlier push was answered with a Location whose answer then broke off, and could not read it back.
    let (kept, lost) = (observation(&patient, 11), observation(&patient, 12));
    let kept_id = env.sim.state().fhir.add_resource(kept.clone()).unwrap();
    let lost_id = env.sim.state().fhir.add_resource(lost.clone()).unwrap();
    env.sim.state().fhir.delete_resource("Observation", &lost_id).unwrap();
    let mut ledger = std::fs::read_to_string(ledger_file(&env)).unwrap();
    for (resource, id) in [(&kept, &kept_id), (&lost, &lost_id)] {
        let hash = ContentHash::of(resource.to_string().as_bytes()).to_hex();
        ledger.push_str(&format!(
            "{{\"hash\":\"{hash}\",\"state\":\"pending\",\"id\":\"{id}\",\"at\":\"2026-05-01T10:00:00Z\"}}\n"
        ));
    }
    std::fs::write(ledger_file(&env), ledger).unwrap();
    let file = ndjson(&env, "obs.ndjson", &[kept.to_string(), lost.to_string()]);
    let before = posts(&env);

    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    assert!(text(&out).contains("2 pending (not retried: lines 1, 2)"), "{}", text(&out));
    assert!(text(&out).contains(&format!("Observation/{kept_id}")), "{}", text(&out));
    assert_eq!(posts(&env), before);

    let reads = |env: &Env, id: &str| {
        env.sim
            .state()
            .fhir
            .faults
            .request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.contains(id))
            .count()
    };
    let out = push(&config, &file, &["--retry-pending"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("1 filed, 1 already filed, 0 pending"), "{}", text(&out));
    assert_eq!((reads(&env, &kept_id), reads(&env, &lost_id)), (1, 1), "each recorded id is read once");
    assert_eq!(posts(&env), before + 1, "only the gone one is re-sent");
    assert_eq!((copies(&env, 11), copies(&env, 12)), (1, 1));
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "already-filed");
    assert_eq!(lines[0]["id"], kept_id.as_str());
    assert_eq!(lines[1]["status"], "created");
    assert_ne!(lines[1]["id"], lost_id.as_str());
}

/// Epic's 59141 duplicate refusal counts as done (no id), is reported as such, and is not re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_59141_counts_as_done() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let dup = observation(&patient, 31).to_string();
    let file = ndjson(&env, "obs.ndjson", &[dup.clone(), observation(&patient, 32).to_string()]);
    env.sim.state().fhir.faults.duplicate_next_creates(1);
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert!(
        text(&out)
            .contains("1 filed, 0 already filed, 0 pending (not retried), 1 duplicate (59141), 0 failed"),
        "{}",
        text(&out)
    );
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "duplicate", "{}", lines[0]);
    assert!(lines[0]["id"].is_null());
    assert!(lines[0]["error"].as_str().unwrap().contains("59141"), "{}", lines[0]);
    assert_eq!(ledger_state(&env, &dup).unwrap()["state"], "duplicate");
    assert_eq!((copies(&env, 31), copies(&env, 32)), (0, 1));
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert!(text(&out).contains("0 filed, 2 already filed"), "{}", text(&out));
    assert_eq!(posts(&env), 2);
}

/// A 5xx leaves the line pending and stops the push (the next line is not sent); the rerun sends the
/// rest, and only `--retry-pending` re-sends the pending line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_leaves_line_pending_and_stops() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(
        &env,
        "obs.ndjson",
        &[observation(&patient, 55).to_string(), observation(&patient, 56).to_string()],
    );
    env.sim.state().fhir.faults.fail_next_creates(1, 500);
    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    assert!(
        text(&out).contains("0 filed, 0 already filed, 1 pending (not retried: line 1)"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("1 not sent (push stopped)"), "{}", text(&out));
    assert_eq!(posts(&env), 1);
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "pending");
    assert!(lines[0]["error"].as_str().unwrap().contains("500"), "{}", lines[0]);
    assert_eq!(lines[1]["status"], "skipped");

    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    assert!(text(&out).contains("1 filed, 0 already filed, 1 pending"), "{}", text(&out));
    assert_eq!(posts(&env), 2);

    let out = push(&config, &file, &["--retry-pending"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("1 filed, 1 already filed, 0 pending"), "{}", text(&out));
    assert_eq!(posts(&env), 3);
    assert_eq!((copies(&env, 55), copies(&env, 56)), (1, 1));
}

/// A 2xx whose answer breaks off after the Location is confirmed by reading that id, not re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answer_after_location_is_confirmed_by_read() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let file = ndjson(&env, "obs.ndjson", &[observation(&patient, 99).to_string()]);
    env.sim.state().fhir.faults.drop_next_creates(1);
    let out = push(&config, &file, &[]).run().await;
    out.assert_success();
    assert_eq!(posts(&env), 1, "the create is never re-sent");
    let line = &results(&env.dir.path().join("obs.results.ndjson"))[0];
    assert_eq!(line["status"], "created", "{line}");
    let id = line["id"].as_str().expect("id from the Location");
    assert!(line["notes"].to_string().contains("confirmed by reading"), "{line}");
    assert_eq!(copies(&env, 99), 1);
    assert!(env.sim.state().fhir.resource(FhirVersion::R4, "Observation", id).is_some());
}

/// A server refusal (400 with an OperationOutcome) is reported per line with its text, exit code 5;
/// the ledger marks it failed, so a rerun sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_create_reports_outcome_and_fails() {
    let env = Env::start(1).await;
    let config = env.config("");
    let patient = env.sim.state().fhir.patient_id(0);
    let refused = observation("eUnknownPatient0", 61).to_string();
    let file = ndjson(&env, "obs.ndjson", &[observation(&patient, 60).to_string(), refused.clone()]);
    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    let lines = results(&env.dir.path().join("obs.results.ndjson"));
    assert_eq!(lines[0]["status"], "created");
    assert_eq!(lines[1]["status"], "failed");
    assert!(lines[1]["error"].as_str().unwrap().contains("HTTP 400"), "{}", lines[1]);
    assert!(text(&out).contains("1 filed") && text(&out).contains("1 failed"), "{}", text(&out));
    assert!(text(&out).contains("refused by the server (line 2;"), "{}", text(&out));
    assert_eq!(ledger_state(&env, &refused).unwrap()["state"], "failed");
    let out = push(&config, &file, &[]).run().await;
    out.assert_code(5);
    assert_eq!(posts(&env), 3, "the refused line is sent again, the filed one is not");
}

/// One invalid line stops the push before any POST (and before any ledger); every problem is in the result file.
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
    let out = push(&config, &file, &[]).run().await;
    out.assert_code(2);
    assert!(text(&out).contains("nothing was sent"), "{}", text(&out));
    assert_eq!(posts(&env), 0);
    assert!(!env.dir.path().join("state").join("push-ledger").exists());
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
    let out = Cli::config(&config).args(["push", "--type", "Encounter"]).arg(&file).run().await;
    out.assert_code(2);
    let all = text(&out);
    assert!(all.contains("Encounter cannot be created on the R4 endpoint"), "{all}");
    assert!(all.contains("Observation"), "allowed types are listed: {all}");
    assert_eq!(posts(&env), 0);
}
