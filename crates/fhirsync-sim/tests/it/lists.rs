//! Patient lists (STU3 and R4 forms) and Group reads.

use fhirsync_core::FhirVersion;
use fhirsync_sim::fhir::{DEFAULT_GROUP_ID, FhirConfig, Members, PatientListConfig};
use reqwest::StatusCode;

use crate::common::*;

/// STU3 `List?code=patientlist&identifier=systemlist|6442` lists every default patient.
#[tokio::test]
async fn stu3_patient_list() {
    let env = Env::start().await;
    let url = format!("{}/List?code=patientlist&identifier=systemlist|6442", env.base(FhirVersion::Stu3));
    let (status, body) = env.json(&url).await;
    assert_eq!(status, StatusCode::OK);
    let lists = matches(&body);
    assert_eq!(lists.len(), 1);
    let refs: Vec<&str> = lists[0]["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["item"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 50);
    assert_eq!(refs[0], format!("Patient/{CAMILA}"));
    let (_, list) =
        env.json(&format!("{}/List/{}", env.base(FhirVersion::Stu3), lists[0]["id"].as_str().unwrap())).await;
    assert_eq!(list["entry"].as_array().unwrap().len(), 50);
}

/// R4 `List?code=patients&identifier=urn:oid:…806567|N` serves configured lists; unknown ids are empty.
#[tokio::test]
async fn r4_patient_list() {
    let config = FhirConfig {
        lists: vec![PatientListConfig {
            id: 5332,
            title: "Three".into(),
            members: Members::Indices(vec![2, 4, 6]),
        }],
        ..FhirConfig::default()
    };
    let env = Env::with(config).await;
    let oid = "urn:oid:1.2.840.114350.1.13.0.1.7.2.806567";
    let (_, body) = env.json(&format!("{}/List?code=patients&identifier={oid}|5332", env.r4())).await;
    let list = matches(&body)[0];
    let state = env.sim.state();
    let expected: Vec<String> =
        [2, 4, 6].iter().map(|&i| format!("Patient/{}", state.fhir.patient_id(i))).collect();
    let refs: Vec<String> = list["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["item"]["reference"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refs, expected);
    let (_, body) = env.json(&format!("{}/List?code=patients&identifier={oid}|1", env.r4())).await;
    assert_eq!(outcome_codes(&body), ["4101"]);
}

/// Group/{id} lists the group's patients as members.
#[tokio::test]
async fn group_read() {
    let env = Env::start().await;
    let (status, group) = env.json(&format!("{}/Group/{DEFAULT_GROUP_ID}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(group["member"].as_array().unwrap().len(), 50);
    assert_eq!(group["member"][1]["entity"]["reference"], format!("Patient/{DERRICK}"));
}
