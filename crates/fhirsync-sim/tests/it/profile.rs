//! The generic, non-Epic SMART server profile (issue 15); Epic stays the default.

use fhirsync_sim::fhir::{FhirConfig, ServerProfile};
use reqwest::StatusCode;

use crate::common::*;

fn generic() -> FhirConfig {
    FhirConfig { profile: ServerProfile::GenericSmart, ..FhirConfig::default() }
}

/// The default profile is Epic.
#[test]
fn epic_is_the_default() {
    assert_eq!(FhirConfig::default().profile, ServerProfile::Epic);
}

/// A generic server needs no category on Observation, Condition or CarePlan, sends no Epic
/// outcome entries, and answers an empty result with a searchset of total 0 and no entries.
#[tokio::test]
async fn generic_server_has_no_epic_rules() {
    let env = Env::with(generic()).await;
    let (status, body) = env.json(&format!("{}/Observation?patient={DERRICK}&_count=50", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(matches(&body).len(), 50);
    let (status, body) = env.json(&format!("{}/Condition?patient={JASON}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!matches(&body).is_empty());
    assert!(outcome_entries(&body).is_empty(), "no Outside-Record exclusions");
    let (status, _) = env.json(&format!("{}/CarePlan?patient={DERRICK}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, empty) = env.json(&format!("{}/Goal?patient={CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["type"], "searchset");
    assert_eq!(empty["total"], 0);
    assert!(empty.get("entry").is_none(), "no entries at all: {empty}");
}

/// A generic server serves CareTeam data although its statement does not list CareTeam; the
/// Epic profile lists CareTeam and has none.
#[tokio::test]
async fn generic_server_hides_careteam_from_its_statement() {
    let env = Env::with(generic()).await;
    let (status, body) = env.json(&format!("{}/CareTeam?patient={CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!matches(&body).is_empty());
    assert_eq!(matches(&body)[0]["resourceType"], "CareTeam");
    let (_, cs) = env.json(&format!("{}/metadata", env.r4())).await;
    let types: Vec<&str> =
        cs["rest"][0]["resource"].as_array().unwrap().iter().filter_map(|r| r["type"].as_str()).collect();
    assert!(!types.contains(&"CareTeam"));
    assert!(types.contains(&"Observation"));
    let epic = Env::start().await;
    let (_, body) = epic.json(&format!("{}/CareTeam?patient={CAMILA}", epic.r4())).await;
    assert!(matches(&body).is_empty());
}

/// A generic server stores a create as sent (no Epic rewrite) and does not refuse duplicates.
#[tokio::test]
async fn generic_server_stores_creates_as_sent() {
    let env = Env::with(generic()).await;
    let sent = serde_json::json!({
        "resourceType": "Condition",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "41652007"}], "text": "Eye pain"},
        "subject": {"reference": format!("Patient/{DERRICK}")},
    });
    for _ in 0..2 {
        let resp = env
            .http
            .post(format!("{}/Condition", env.r4()))
            .bearer_auth(&env.token)
            .body(sent.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let (_, read) = env.json(resp.headers()["location"].to_str().unwrap()).await;
        assert_eq!(read["category"], sent["category"]);
        assert_eq!(read["code"], sent["code"]);
    }
}
