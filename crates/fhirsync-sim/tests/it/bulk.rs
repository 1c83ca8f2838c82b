//! Bulk $export: kick-off, polling, manifest, NDJSON files, delete, the too-recently window.

use fhirsync_sim::fhir::{BulkConfig, DEFAULT_GROUP_ID, FhirConfig};
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
    let other = env.sim.state().oauth.issue_token("other", &["system/*.read"]);
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
