//! Data mutation between runs: edit, delete, add.

use fhirsync_core::FhirVersion;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

async fn first_encounter(env: &Env) -> serde_json::Value {
    let (_, body) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    matches(&body)[0].clone()
}

/// An edited resource is served changed by reads and searches.
#[tokio::test]
async fn edit_is_visible() {
    let env = Env::start().await;
    let enc = first_encounter(&env).await;
    let id = enc["id"].as_str().unwrap();
    env.sim.state().fhir.edit_resource("Encounter", id, |v| v["status"] = json!("cancelled")).unwrap();
    let (_, read) = env.json(&format!("{}/Encounter/{id}", env.r4())).await;
    assert_eq!(read["status"], "cancelled");
    let again = first_encounter(&env).await;
    assert_eq!(again["id"], enc["id"]);
    assert_eq!(again["status"], "cancelled");
}

/// A deleted resource reads as 59008 and disappears from searches; deleted patients leave lists.
#[tokio::test]
async fn delete_is_visible() {
    let env = Env::start().await;
    let (_, before) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    let id = matches(&before)[0]["id"].as_str().unwrap().to_string();
    let fhir = &env.sim.state().fhir;
    fhir.delete_resource("Encounter", &id).unwrap();
    let (status, _) = env.json(&format!("{}/Encounter/{id}", env.r4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, after) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    assert_eq!(matches(&after).len(), matches(&before).len() - 1);
    assert!(matches(&after).iter().all(|e| e["id"] != id.as_str()));
    fhir.delete_resource("Patient", DERRICK).unwrap();
    let url = format!("{}/List?code=patientlist&identifier=systemlist|6442", env.base(FhirVersion::Stu3));
    let (_, lists) = env.json(&url).await;
    assert_eq!(matches(&lists)[0]["entry"].as_array().unwrap().len(), 49);
    assert!(fhir.delete_resource("Encounter", "eNotARealId0000000000003").is_err());
}

/// An added resource shows up in its patient's searches.
#[tokio::test]
async fn add_is_visible() {
    let env = Env::start().await;
    let fhir = &env.sim.state().fhir;
    let id = fhir
        .add_resource(json!({
            "resourceType": "Encounter",
            "status": "finished",
            "subject": {"reference": format!("Patient/{CAMILA}")},
        }))
        .unwrap();
    let (_, body) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    assert!(matches(&body).iter().any(|e| e["id"] == id.as_str()));
    assert!(fhir.add_resource(json!({"status": "x"})).is_err());
    fhir.reset_mutations();
    let (_, body) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    assert!(matches(&body).iter().all(|e| e["id"] != id.as_str()));
}
