//! Create (write-back).

use fhirsync_core::FhirVersion;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

/// POST of an allowed type answers 201 + Location, and later reads and searches return it.
#[tokio::test]
async fn create_is_visible() {
    let env = Env::start().await;
    let body = json!({
        "resourceType": "Condition",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"text": "Written back"},
        "subject": {"reference": format!("Patient/{CAMILA}")},
    });
    let resp = env
        .http
        .post(format!("{}/Condition", env.r4()))
        .bearer_auth(&env.token)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/Condition/e", env.r4())));
    let (status, read) = env.json(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["code"]["text"], "Written back");
    let (_, found) =
        env.json(&format!("{}/Condition?patient={CAMILA}&category=problem-list-item", env.r4())).await;
    assert!(matches(&found).iter().any(|c| c["code"]["text"] == "Written back"));
}

/// Types without create (and DSTU2 entirely) answer 405; a missing patient reference is 400.
#[tokio::test]
async fn create_rules() {
    let env = Env::start().await;
    let post = |url: String, body: serde_json::Value| {
        let req = env.http.post(url).bearer_auth(&env.token).header("accept", JSON).body(body.to_string());
        async move { req.send().await.unwrap().status() }
    };
    let enc = json!({"resourceType": "Encounter", "subject": {"reference": format!("Patient/{CAMILA}")}});
    assert_eq!(post(format!("{}/Encounter", env.r4()), enc).await, StatusCode::METHOD_NOT_ALLOWED);
    let obs = json!({"resourceType": "Observation", "subject": {"reference": format!("Patient/{CAMILA}")}});
    assert_eq!(
        post(format!("{}/Observation", env.base(FhirVersion::Dstu2)), obs).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let orphan = json!({"resourceType": "Observation", "status": "final"});
    assert_eq!(post(format!("{}/Observation", env.r4()), orphan).await, StatusCode::BAD_REQUEST);
}

/// POSTs `body` to `{R4}/{ty}`: status, Location, body text.
async fn post(env: &Env, ty: &str, body: &serde_json::Value) -> (StatusCode, Option<String>, String) {
    let resp = env
        .http
        .post(format!("{}/{ty}", env.r4()))
        .bearer_auth(&env.token)
        .header("accept", JSON)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_string());
    (status, location, resp.text().await.unwrap())
}

/// A created Patient loses the client's identifiers (the SSN it was sent with), gets Epic's own
/// CEID/EPIC/EXTERNAL/FHIR/FHIR STU3/INTERNAL set and meta.security PATRPT; the create answer
/// has no body, as at Epic.
#[tokio::test]
async fn created_patient_is_rewritten_like_epic() {
    let env = Env::start().await;
    let sent = json!({
        "resourceType": "Patient",
        "identifier": [{"use": "official", "system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-80-3287"}],
        "name": [{"use": "official", "family": "Kanter", "given": ["Adalberto"], "prefix": ["Mr."]}],
        "telecom": [{"system": "phone", "value": "555-513-1682", "use": "home"}],
        "gender": "male",
        "birthDate": "1942-07-04",
    });
    let (status, location, body) = post(&env, "Patient", &sent).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body.is_empty(), "Epic answers a create without a body");
    let (_, read) = env.json(&location.unwrap()).await;
    let texts: Vec<&str> =
        read["identifier"].as_array().unwrap().iter().filter_map(|i| i["type"]["text"].as_str()).collect();
    assert_eq!(texts, ["CEID", "EPIC", "EXTERNAL", "FHIR", "FHIR STU3", "INTERNAL"]);
    assert!(!read.to_string().contains("999-80-3287"), "the client's identifier is gone");
    let security: Vec<&str> =
        read["meta"]["security"].as_array().unwrap().iter().filter_map(|s| s["code"].as_str()).collect();
    assert!(security.contains(&"PATRPT"));
    assert_eq!(read["name"][0]["prefix"][0], "MR.");
    assert_eq!(read["name"][0]["text"], "Mr. Adalberto Kanter");
    let id = read["id"].as_str().unwrap();
    assert_eq!(read["identifier"][4]["value"], id);
    let (_, found) = env.json(&format!("{}/Patient?family=kanter", env.r4())).await;
    assert!(ids(&found).contains(&id.to_string()));
    let epic = read["identifier"][1]["value"].as_str().unwrap();
    let (_, found) = env
        .json(&format!(
            "{}/Patient?identifier=urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0%7C{epic}",
            env.r4()
        ))
        .await;
    assert_eq!(ids(&found), [id]);
}

/// A Condition sent as encounter-diagnosis reads back as problem-list-item (and is found by that
/// category, not by the one sent).
#[tokio::test]
async fn created_condition_becomes_a_problem() {
    let env = Env::start().await;
    let sent = json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "41652007", "display": "Eye pain"}], "text": "Eye pain"},
        "subject": {"reference": format!("Patient/{DERRICK}")},
    });
    let (status, location, _) = post(&env, "Condition", &sent).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, read) = env.json(&location.unwrap()).await;
    assert_eq!(read["category"][0]["coding"][0]["code"], "problem-list-item");
    assert_eq!(read["clinicalStatus"]["text"], "Active");
    assert_eq!(read["subject"]["display"], "Lin, Derrick");
    let id = read["id"].as_str().unwrap().to_string();
    let (_, problems) =
        env.json(&format!("{}/Condition?patient={DERRICK}&category=problem-list-item", env.r4())).await;
    assert!(ids(&problems).contains(&id));
    let (_, diagnoses) =
        env.json(&format!("{}/Condition?patient={DERRICK}&category=encounter-diagnosis", env.r4())).await;
    assert!(!ids(&diagnoses).contains(&id));
}

/// A created Observation keeps its category, but its code's display text becomes the flowsheet
/// row's name.
#[tokio::test]
async fn created_observation_changes_its_display() {
    let env = Env::start().await;
    let sent = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure panel with all children optional"},
        "subject": {"reference": format!("Patient/{DERRICK}")},
        "effectiveDateTime": "2026-04-28T17:00:27Z",
    });
    let (status, location, _) = post(&env, "Observation", &sent).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, read) = env.json(&location.unwrap()).await;
    assert_eq!(read["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(read["code"]["text"], "BP");
    assert_ne!(read["code"]["text"], sent["code"]["text"]);
    assert!(read["code"]["coding"].as_array().unwrap().iter().any(|c| c["code"] == "85354-9"));
}

/// A create duplicating a record already on the chart (generated, or created earlier) is
/// refused with 400 and OperationOutcome 59141, for Conditions and AllergyIntolerances.
#[tokio::test]
async fn duplicate_create_is_59141() {
    let env = Env::start().await;
    let (_, problems) =
        env.json(&format!("{}/Condition?patient={JASON}&category=problem-list-item", env.r4())).await;
    let existing = matches(&problems)[0]["code"].clone();
    let dup = json!({"resourceType": "Condition", "code": existing, "subject": {"reference": format!("Patient/{JASON}")}});
    let (status, location, body) = post(&env, "Condition", &dup).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(location.is_none());
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issue_codes(&outcome), ["59141"]);
    assert_eq!(outcome["issue"][0]["details"]["text"], "An attempt was made to create a duplicate record.");
    let fresh = json!({
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "288328004", "display": "Bee venom"}]},
        "patient": {"reference": format!("Patient/{ELIJAH}")},
    });
    assert_eq!(post(&env, "AllergyIntolerance", &fresh).await.0, StatusCode::CREATED);
    let (status, _, body) = post(&env, "AllergyIntolerance", &fresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&serde_json::from_str(&body).unwrap()), ["59141"]);
    let (_, allergies) = env.json(&format!("{}/AllergyIntolerance?patient={ELIJAH}", env.r4())).await;
    let existing = matches(&allergies)[0]["code"].clone();
    let again = json!({"resourceType": "AllergyIntolerance", "code": existing, "patient": {"reference": format!("Patient/{ELIJAH}")}});
    assert_eq!(post(&env, "AllergyIntolerance", &again).await.0, StatusCode::BAD_REQUEST);
    let other_patient = json!({"resourceType": "AllergyIntolerance", "code": fresh["code"], "patient": {"reference": format!("Patient/{CAMILA}")}});
    assert_eq!(post(&env, "AllergyIntolerance", &other_patient).await.0, StatusCode::CREATED, "per patient");
}
