//! Production Epic's outcome entries (`epic-facts.md` §3.5): Outside-Record 59204 next to data,
//! 59205 + 59204 on Procedure, exclusions and 4101 together on empty results, outcome entries
//! only on the last page.

use fhirsync_core::FhirVersion;
use fhirsync_sim::fhir::{EPIC_OUTCOME_SYSTEM, FhirConfig};
use reqwest::StatusCode;

use crate::common::*;

/// `(search, dataset key for generated_count, expected "Type - Sub-type" of the 59204s)`.
const SEARCHES: &[(&str, &str, &[&str])] = &[
    ("AllergyIntolerance?", "AllergyIntolerance", &["AllergyIntolerance - Outside Record"]),
    (
        "Condition?category=problem-list-item&",
        "Condition:problem-list-item",
        &["Condition - Outside Record Problems"],
    ),
    (
        "Condition?category=encounter-diagnosis&",
        "Condition:encounter-diagnosis",
        &["Condition - Outside Record Encounter Diagnosis"],
    ),
    (
        "Condition?category=health-concern&",
        "Condition:health-concern",
        &["Condition - Outside Record Problems", "Condition - Outside Record Health Concern"],
    ),
    ("DiagnosticReport?", "DiagnosticReport", &["DiagnosticReport - Outside Record Results"]),
    ("Encounter?", "Encounter", &["Encounter - Outside Record"]),
    ("Immunization?", "Immunization", &["Immunization - Outside Record"]),
    ("MedicationRequest?", "MedicationRequest", &["MedicationRequest - Outside Record"]),
    ("Observation?category=laboratory&", "Observation:laboratory", &["Observation - Outside Record Results"]),
    (
        "Observation?category=vital-signs&",
        "Observation:vital-signs",
        &["Observation - Outside Record Vital Signs"],
    ),
    (
        "Observation?category=social-history&",
        "Observation:social-history",
        &["Observation - Outside Record Social History"],
    ),
    ("Procedure?", "Procedure", &["Procedure - Outside Record"]),
];

/// A patient index with 1..=1000 records of `key` (one page), and one with none, among 0..200.
fn patients_for(env: &Env, key: &str) -> (usize, Option<usize>) {
    let fhir = &env.sim.state().fhir;
    let count = |i| fhir.generated_count(i, key).unwrap();
    let with = (0..200).find(|&i| (1..=1000).contains(&count(i))).expect("a patient with data");
    (with, (0..200).find(|&i| count(i) == 0))
}

/// Every search of the eight clinical types carries the Outside-Record 59204 next to its data
/// (Procedure also 59205), worded so that fhirsync's own parser reads a named exclusion; empty
/// results carry the same issues followed by 4101 in one entry, with total 0.
#[tokio::test]
async fn outside_record_next_to_data_and_on_empty_results() {
    let env = Env::with(FhirConfig { patients: 200, ..FhirConfig::default() }).await;
    for (search, key, subtypes) in SEARCHES {
        let expected: Vec<(String, String)> = (*key == "Procedure")
            .then(|| ("59205".to_string(), "Procedure - External Radiotherapy Summary".to_string()))
            .into_iter()
            .chain(subtypes.iter().map(|s| ("59204".to_string(), s.to_string())))
            .collect();
        let (with, without) = patients_for(&env, key);
        let pid = env.sim.state().fhir.patient_id(with);
        let (status, body) = env.json(&format!("{}/{search}patient={pid}", env.r4())).await;
        assert_eq!(status, StatusCode::OK, "{search}");
        assert!(!matches(&body).is_empty(), "{search}: data");
        assert_eq!(outcome_entries(&body).len(), 1, "{search}: one outcome entry");
        assert_eq!(exclusions(&body), expected, "{search}: exclusions next to data");
        assert!(!outcome_codes(&body).contains(&"4101".to_string()), "{search}");
        let Some(without) = without else { continue };
        let pid = env.sim.state().fhir.patient_id(without);
        let (status, body) = env.json(&format!("{}/{search}patient={pid}", env.r4())).await;
        assert_eq!(status, StatusCode::OK, "{search}");
        assert_eq!(body["total"], 0, "{search}");
        assert_eq!(body["entry"].as_array().unwrap().len(), 1, "{search}: the outcome entry alone");
        assert_eq!(exclusions(&body), expected, "{search}: exclusions on an empty result");
        assert_eq!(outcome_codes(&body).last().map(String::as_str), Some("4101"), "{search}");
    }
}

/// The 59204 and 59205 issues have Epic's exact shape: warning, `suppressed`, Epic's code
/// system, the sandbox's details text and diagnostics; the entry is `search.mode = outcome` with
/// a `urn:uuid:` fullUrl.
#[tokio::test]
async fn exclusion_issues_have_epics_shape() {
    let env = Env::start().await;
    let (_, body) = env.json(&format!("{}/Procedure?patient={CAMILA}", env.r4())).await;
    let entry = body["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").unwrap();
    assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    assert!(entry.get("link").is_none());
    let issues = entry["resource"]["issue"].as_array().unwrap();
    assert_eq!(issues.len(), 2);
    for (issue, code) in issues.iter().zip(["59205", "59204"]) {
        assert_eq!(issue["severity"], "warning");
        assert_eq!(issue["code"], "suppressed");
        assert_eq!(issue["details"]["coding"][0]["system"], EPIC_OUTCOME_SYSTEM);
        assert_eq!(issue["details"]["coding"][0]["code"], code);
        assert_eq!(issue["details"]["coding"][0]["display"], issue["details"]["text"]);
    }
    assert_eq!(
        issues[0]["details"]["text"],
        "The authenticated user's search request applies to a sub-resource that the user is not authorized to view. Results of this sub-type will not be returned."
    );
    assert_eq!(
        issues[0]["diagnostics"],
        "User not authorized for Procedure - External Radiotherapy Summary. Search results of this type have not been included."
    );
    assert_eq!(
        issues[1]["details"]["text"],
        "The authenticated client's search request applies to a sub-resource that the client is not authorized for. Results of this sub-type will not be returned."
    );
    assert_eq!(
        issues[1]["diagnostics"],
        "Client not authorized for Procedure - Outside Record. Search results of this type have not been included."
    );
}

/// DocumentReference comes without any outcome entry, as in the sandbox.
#[tokio::test]
async fn document_reference_has_no_exclusion() {
    let env = Env::start().await;
    let (_, body) = env.json(&format!("{}/DocumentReference?patient={CAMILA}", env.r4())).await;
    assert!(!matches(&body).is_empty());
    assert!(outcome_entries(&body).is_empty());
}

/// A Condition search without category names the three Condition sub-types; a code-only
/// Observation search names Results, Vital Signs and Social History.
#[tokio::test]
async fn uncategorised_searches_name_every_category() {
    let env = Env::start().await;
    let (_, body) = env.json(&format!("{}/Condition?patient={JASON}", env.r4())).await;
    let named: Vec<String> = exclusions(&body).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        named,
        [
            "Condition - Outside Record Problems",
            "Condition - Outside Record Encounter Diagnosis",
            "Condition - Outside Record Health Concern"
        ]
    );
    let (_, body) = env.json(&format!("{}/Observation?patient={DERRICK}&code=8867-4", env.r4())).await;
    assert_eq!(exclusions(&body).len(), 3);
}

/// The exclusions are the same on every call and whatever the page size: a search read page by
/// page ends with the same outcome entry as the same search in one page.
#[tokio::test]
async fn exclusions_are_stable() {
    let env = Env::start().await;
    let url = format!("{}/Encounter?patient={CAMILA}", env.r4());
    let (_, once) = env.json(&url).await;
    let (_, again) = env.json(&url).await;
    assert_eq!(outcome_entries(&once), outcome_entries(&again), "same entry, same urn");
    let mut next = Some(format!("{url}&_count=3"));
    let mut last = None;
    let mut pages = 0;
    while let Some(u) = next {
        let (_, page) = env.json(&u).await;
        next = next_link(&page);
        pages += 1;
        last = Some(page);
    }
    assert!(pages > 1);
    assert_eq!(exclusions(&last.unwrap()), exclusions(&once));
}

/// A multi-page result has no outcome entry on its first page (nor on any page with `next`);
/// the last page carries it.
#[tokio::test]
async fn outcome_only_on_last_page() {
    let env = Env::start().await;
    let (_, first) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs", env.r4())).await;
    assert_eq!(matches(&first).len(), 1000);
    assert!(next_link(&first).is_some());
    assert!(outcome_entries(&first).is_empty(), "no outcome entry on a page with next");
    let (_, second) = env.json(&next_link(&first).unwrap()).await;
    assert!(next_link(&second).is_none());
    assert_eq!(
        exclusions(&second),
        [("59204".to_string(), "Observation - Outside Record Vital Signs".to_string())]
    );
    let (_, small) = env.json(&format!("{}/Procedure?patient={CAMILA}&_count=1", env.r4())).await;
    if next_link(&small).is_some() {
        assert!(outcome_entries(&small).is_empty());
    }
}

/// STU3 and DSTU2 searches carry the same exclusions (DSTU2 names MedicationOrder).
#[tokio::test]
async fn older_versions_carry_exclusions() {
    let env = Env::start().await;
    let (_, body) =
        env.json(&format!("{}/MedicationOrder?patient={JASON}", env.base(FhirVersion::Dstu2))).await;
    assert_eq!(exclusions(&body), [("59204".to_string(), "MedicationOrder - Outside Record".to_string())]);
    let (_, body) = env
        .json(&format!("{}/Observation?patient={CAMILA}&category=laboratory", env.base(FhirVersion::Stu3)))
        .await;
    assert_eq!(
        exclusions(&body),
        [("59204".to_string(), "Observation - Outside Record Results".to_string())]
    );
}

/// DSTU2 MedicationOrder and R4 MedicationRequest are the same orders: same ids, same
/// medication, same count (Jason Argonaut's 9).
#[tokio::test]
async fn medication_order_and_request_are_the_same_orders() {
    let env = Env::start().await;
    let (_, dstu2) =
        env.json(&format!("{}/MedicationOrder?patient={JASON}", env.base(FhirVersion::Dstu2))).await;
    let (_, r4) = env.json(&format!("{}/MedicationRequest?patient={JASON}", env.r4())).await;
    assert_eq!(ids(&dstu2).len(), 9);
    assert_eq!(ids(&dstu2), ids(&r4));
    for (order, request) in matches(&dstu2).iter().zip(matches(&r4)) {
        assert_eq!(order["resourceType"], "MedicationOrder");
        assert_eq!(request["resourceType"], "MedicationRequest");
        assert_eq!(order["medicationCodeableConcept"], request["medicationCodeableConcept"]);
        assert_eq!(order["status"], request["status"]);
        assert_eq!(order["dateWritten"], request["authoredOn"]);
    }
}
