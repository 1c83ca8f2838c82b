//! Search rules taken from Epic's R4 statement: CarePlan needs a category, RelatedPerson is not
//! patient-searchable, and `/metadata` says so.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// R4 CarePlan without category is 400/4111; an unknown category is 400/59111; each of Epic's
/// three categories answers CarePlans of that category (Derrick Lin has some of each kind).
#[tokio::test]
async fn careplan_requires_its_category() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/CarePlan?patient={DERRICK}", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["4111"]);
    assert_eq!(body["issue"][0]["details"]["text"], "A required search parameter is missing.");
    let (status, body) =
        env.json(&format!("{}/CarePlan?patient={DERRICK}&category=careteam", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["59111"]);
    let state = env.sim.state();
    for category in ["38717003", "734163000", "assess-plan"] {
        let key = format!("CarePlan:{category}");
        let i = (0..50).find(|&i| state.fhir.generated_count(i, &key).unwrap() > 0).expect("a patient");
        let pid = state.fhir.patient_id(i);
        let (status, body) =
            env.json(&format!("{}/CarePlan?patient={pid}&category={category}", env.r4())).await;
        assert_eq!(status, StatusCode::OK, "{category}");
        let found = matches(&body);
        assert_eq!(found.len(), state.fhir.generated_count(i, &key).unwrap(), "{category}");
        assert!(found.iter().all(|c| c["category"][0]["coding"][0]["code"] == category), "{category}");
        assert!(found.iter().all(|c| c["subject"]["reference"] == format!("Patient/{pid}").as_str()));
        assert!(exclusions(&body).is_empty(), "CarePlan carries no Outside-Record exclusion");
    }
    let (_, derrick) = env
        .json(&format!("{}/CarePlan?patient={DERRICK}&category=http://snomed.info/sct|38717003", env.r4()))
        .await;
    assert_eq!(matches(&derrick).len(), 1, "system|code tokens work too");
}

/// RelatedPerson answers a patient search with 400/4110 and no data (the patient parameter is
/// not in its statement, so nothing usable is left); `_id` still works.
#[tokio::test]
async fn related_person_is_not_patient_searchable() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/RelatedPerson?patient={CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(issue_codes(&body), ["4110"]);
    let (status, body) = env.json(&format!("{}/RelatedPerson?_id=eNoSuchRelatedPerson00003", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 0);
}

fn params(statement: &Value, ty: &str) -> Vec<(String, Option<String>)> {
    let resource =
        statement["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == ty).unwrap();
    resource["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["documentation"].as_str().map(str::to_string)))
        .collect()
}

/// The R4 statement documents CarePlan's category as required and lists only `_count` and `_id`
/// for RelatedPerson; patient-scoped types list patient and subject.
#[tokio::test]
async fn statement_says_the_same() {
    let env = Env::start().await;
    let (_, cs) = env.json(&format!("{}/metadata", env.r4())).await;
    let careplan = params(&cs, "CarePlan");
    let category = careplan.iter().find(|(n, _)| n == "category").expect("CarePlan category");
    assert!(category.1.as_deref().unwrap().contains("This is a required search parameter."));
    let related: Vec<String> = params(&cs, "RelatedPerson").into_iter().map(|(n, _)| n).collect();
    assert_eq!(related, ["_count", "_id"]);
    let condition: Vec<String> = params(&cs, "Condition").into_iter().map(|(n, _)| n).collect();
    for p in ["patient", "subject", "category", "code", "_count", "_id"] {
        assert!(condition.contains(&p.to_string()), "Condition {p}");
    }
    let observation = params(&cs, "Observation");
    let doc = observation.iter().find(|(n, _)| n == "category").and_then(|(_, d)| d.clone()).unwrap();
    assert!(doc.contains("Either category or code"), "{doc}");
    assert!(cs["rest"][0]["resource"].as_array().unwrap().iter().any(|r| r["type"] == "CareTeam"));
}
