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
