//! `/metadata` per version.

use fhirsync_core::FhirVersion;
use reqwest::StatusCode;

use crate::common::*;

/// /metadata answers XML by default and JSON on request, with the oauth-uris extension.
#[tokio::test]
async fn metadata_negotiates_and_points_at_oauth() {
    let env = Env::start().await;
    let resp = env.http.get(format!("{}/metadata", env.r4())).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/fhir+xml; charset=utf-8");
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("<CapabilityStatement xmlns=\"http://hl7.org/fhir\">"), "{xml}");
    let resp = env
        .http
        .get(format!("{}/metadata", env.r4()))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cs: serde_json::Value = resp.json().await.unwrap();
    let ext = &cs["rest"][0]["security"]["extension"][0];
    assert_eq!(ext["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    let uris: Vec<(&str, &str)> = ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["url"].as_str().unwrap(), e["valueUri"].as_str().unwrap()))
        .collect();
    let token = env.sim.token_url();
    assert!(uris.contains(&("token", token.as_str())));
    assert!(
        uris.iter()
            .any(|(k, v)| *k == "authorize" && v.ends_with("/interconnect-fhir-oauth/oauth2/authorize"))
    );
}

/// DSTU2 answers a Conformance resource, STU3 a 3.0.1 CapabilityStatement.
#[tokio::test]
async fn metadata_per_version() {
    let env = Env::start().await;
    let (_, dstu2) = env.json(&format!("{}/metadata", env.base(FhirVersion::Dstu2))).await;
    assert_eq!(dstu2["resourceType"], "Conformance");
    assert_eq!(dstu2["fhirVersion"], "1.0.2");
    let (_, stu3) = env.json(&format!("{}/metadata", env.base(FhirVersion::Stu3))).await;
    assert_eq!(stu3["fhirVersion"], "3.0.1");
}

/// The FHIR routes do not shadow the OAuth discovery route under each FHIR base.
#[tokio::test]
async fn smart_configuration_is_not_shadowed() {
    let env = Env::start().await;
    for version in FhirVersion::ALL {
        let resp = env
            .http
            .get(format!("{}/.well-known/smart-configuration", env.base(version)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{version}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["token_endpoint"], env.sim.token_url());
    }
}
