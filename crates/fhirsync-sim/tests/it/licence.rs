//! Licence narrowing between syncs: records vanish and a new 59204 exclusion appears.

use fhirsync_sim::fhir::{DEFAULT_GROUP_ID, FhirConfig};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// Narrowing a client's licence for Jason's problem list withholds part of his problems (at least
/// one, a subset of those returned before) and adds a 59204 naming the sub-type next to the rest;
/// another client is not affected; widening restores everything.
#[tokio::test]
async fn narrowed_licence_withholds_records_and_says_so() {
    let env = Env::start().await;
    let url = format!("{}/Condition?patient={JASON}&category=problem-list-item", env.r4());
    let (_, before) = env.json(&url).await;
    let all = ids(&before);
    assert_eq!(all.len(), 7);
    assert_eq!(
        exclusions(&before),
        [("59204".to_string(), "Condition - Outside Record Problems".to_string())]
    );
    let state = env.sim.state();
    state.narrow_licence(CLIENT, "Condition:problem-list-item", "Historical Problems").unwrap();
    let (status, after) = env.json(&url).await;
    assert_eq!(status, StatusCode::OK);
    let left = ids(&after);
    assert!(!left.is_empty() && left.len() < all.len(), "{} of {} left", left.len(), all.len());
    assert!(left.iter().all(|id| all.contains(id)));
    assert_eq!(
        exclusions(&after),
        [
            ("59204".to_string(), "Condition - Outside Record Problems".to_string()),
            ("59204".to_string(), "Condition - Historical Problems".to_string()),
        ]
    );
    let (_, again) = env.json(&url).await;
    assert_eq!(ids(&again), left, "deterministic");
    let other = env.sim.read_token("other-client");
    let resp = env.http.get(&url).bearer_auth(other).header("accept", JSON).send().await.unwrap();
    assert_eq!(ids(&resp.json::<Value>().await.unwrap()), all, "other clients keep their licence");
    let (_, encounters) =
        env.json(&format!("{}/Condition?patient={JASON}&category=encounter-diagnosis", env.r4())).await;
    assert_eq!(exclusions(&encounters).len(), 1, "other datasets untouched");
    state.widen_licence(CLIENT, "Condition:problem-list-item");
    let (_, widened) = env.json(&url).await;
    assert_eq!(ids(&widened), all);
    assert_eq!(exclusions(&widened).len(), 1);
}

/// Any patient with two or more records of a narrowed dataset loses at least one; an empty
/// result still carries the new exclusion (before 4101); reset undoes every narrowing.
#[tokio::test]
async fn narrowed_procedures_for_every_patient() {
    let env = Env::with(FhirConfig { patients: 60, ..FhirConfig::default() }).await;
    let state = env.sim.state();
    state.narrow_licence(CLIENT, "Procedure", "Historical Procedures").unwrap();
    let mut checked = 0;
    for i in 0..60 {
        let n = state.fhir.generated_count(i, "Procedure").unwrap();
        let pid = state.fhir.patient_id(i);
        let (_, body) = env.json(&format!("{}/Procedure?patient={pid}", env.r4())).await;
        let left = matches(&body).len();
        if n >= 2 {
            assert!(left < n && left >= n / 2, "patient {i}: {left} of {n}");
            checked += 1;
        }
        let named = exclusions(&body);
        assert!(
            named.contains(&("59204".to_string(), "Procedure - Historical Procedures".to_string())),
            "{i}"
        );
        if left == 0 {
            assert_eq!(outcome_codes(&body).last().map(String::as_str), Some("4101"));
        }
    }
    assert!(checked > 10);
    state.reset_licences();
    let (_, body) = env.json(&format!("{}/Procedure?patient={CAMILA}", env.r4())).await;
    assert_eq!(matches(&body).len(), state.fhir.generated_count(0, "Procedure").unwrap());
    assert!(state.narrow_licence(CLIENT, "Spaceship", "x").is_err(), "unknown datasets are refused");
}

/// All NDJSON lines of a Bulk export kicked off with `query`, in manifest order.
async fn export_lines(env: &Env, query: &str) -> Vec<Value> {
    let resp = env
        .http
        .get(format!("{}/Group/{DEFAULT_GROUP_ID}/$export{query}", env.r4()))
        .bearer_auth(&env.token)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let status_url = resp.headers()["content-location"].to_str().unwrap().to_string();
    let mut manifest: Value = Value::Null;
    for _ in 0..10 {
        let poll = env.get(&status_url, Some(JSON)).await;
        if poll.status() == StatusCode::OK {
            manifest = poll.json().await.unwrap();
            break;
        }
    }
    let mut lines: Vec<Value> = Vec::new();
    for file in manifest["output"].as_array().expect("manifest") {
        let text = env.get(file["url"].as_str().unwrap(), None).await.text().await.unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    lines
}

/// A narrowed licence also shapes Bulk exports, with or without `_typeFilter`: the same records
/// are withheld as in searches and the type's first NDJSON file starts with an OperationOutcome
/// line carrying the exclusion.
#[tokio::test]
async fn narrowed_licence_in_bulk_export() {
    let env = Env::with(FhirConfig { patients: 12, ..FhirConfig::default() }).await;
    let state = env.sim.state();
    state.narrow_licence(CLIENT, "Condition:problem-list-item", "Historical Problems").unwrap();
    let (_, jason) =
        env.json(&format!("{}/Condition?patient={JASON}&category=problem-list-item", env.r4())).await;
    let other = env.sim.read_token("other-client");
    let url = format!("{}/Condition?patient={JASON}&category=problem-list-item", env.r4());
    let resp = env.http.get(&url).bearer_auth(other).header("accept", JSON).send().await.unwrap();
    let withheld: Vec<String> = ids(&resp.json::<Value>().await.unwrap())
        .into_iter()
        .filter(|id| !ids(&jason).contains(id))
        .collect();
    assert!(!withheld.is_empty());
    let generated: usize =
        (0..12).map(|i| state.fhir.generated_count(i, "Condition:problem-list-item").unwrap()).sum();
    for query in ["?_type=Condition", "?_type=Condition&_typeFilter=Condition%3Fcategory%3Dproblem-list-item"]
    {
        state.fhir.reset_bulk_window();
        let lines = export_lines(&env, query).await;
        assert_eq!(lines[0]["resourceType"], "OperationOutcome", "{query}");
        assert!(
            lines[0]["issue"][0]["diagnostics"].as_str().unwrap().contains("Condition - Historical Problems"),
            "{query}"
        );
        let problems: Vec<&str> = lines[1..]
            .iter()
            .filter(|c| c["category"][0]["coding"][0]["code"] == "problem-list-item")
            .filter_map(|c| c["id"].as_str())
            .collect();
        assert!(problems.len() < generated, "{query}: {} of {generated}", problems.len());
        assert!(ids(&jason).iter().all(|id| problems.contains(&id.as_str())), "{query}: as in search");
        assert!(withheld.iter().all(|id| !problems.contains(&id.as_str())), "{query}: withheld alike");
    }
}
