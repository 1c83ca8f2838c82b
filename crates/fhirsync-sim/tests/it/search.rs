//! Epic's search rules, content negotiation, reads and errors.

use fhirsync_core::FhirVersion;
use fhirsync_sim::fhir::{EPIC_OUTCOME_SYSTEM, FhirConfig};
use fhirsync_sim::oauth::ClientRegistration;
use reqwest::StatusCode;

use crate::common::*;

/// Without an Accept header a search answers FHIR XML.
#[tokio::test]
async fn search_defaults_to_xml() {
    let env = Env::start().await;
    let resp = env.get(&format!("{}/Patient?_id={CAMILA}", env.r4()), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/fhir+xml; charset=utf-8");
    let body = resp.text().await.unwrap();
    assert!(body.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"), "{body}");
    assert!(body.contains(&format!("<id value=\"{CAMILA}\"/>")), "{body}");
    let wildcard = env.get(&format!("{}/Patient?_id={CAMILA}", env.r4()), Some("*/*")).await;
    assert_eq!(wildcard.headers()["content-type"], "application/fhir+xml; charset=utf-8");
}

/// `Accept: application/fhir+json`, `application/json` and `_format=json` answer JSON.
#[tokio::test]
async fn json_on_request() {
    let env = Env::start().await;
    let url = format!("{}/Patient?_id={CAMILA}", env.r4());
    for accept in ["application/fhir+json", "application/json"] {
        let resp = env.get(&url, Some(accept)).await;
        assert_eq!(resp.headers()["content-type"], "application/fhir+json; charset=utf-8", "{accept}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["resourceType"], "Bundle");
    }
    let resp = env.get(&format!("{url}&_format=json"), None).await;
    assert_eq!(resp.headers()["content-type"], "application/fhir+json; charset=utf-8");
}

/// Patient resources carry Epic extensions and OID identifiers and no meta.lastUpdated.
#[tokio::test]
async fn patient_is_epic_shaped() {
    let env = Env::start().await;
    let (status, p) = env.json(&format!("{}/Patient/{CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["name"][0]["family"], "Lopez");
    assert_eq!(p["birthDate"], "1987-09-12");
    let urls: Vec<&str> =
        p["extension"].as_array().unwrap().iter().filter_map(|e| e["url"].as_str()).collect();
    assert!(urls.contains(&"http://open.epic.com/FHIR/StructureDefinition/extension/legal-sex"));
    assert!(urls.contains(&"http://open.epic.com/FHIR/StructureDefinition/extension/sex-for-clinical-use"));
    let systems: Vec<&str> =
        p["identifier"].as_array().unwrap().iter().filter_map(|i| i["system"].as_str()).collect();
    assert!(systems.contains(&"urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0"));
    assert!(p.get("meta").is_none());
    let (_, o) =
        env.json(&format!("{}/Observation?patient={CAMILA}&category=vital-signs&_count=1", env.r4())).await;
    let obs = matches(&o)[0];
    assert_eq!(obs["subject"]["reference"], format!("Patient/{CAMILA}"));
    assert!(obs.get("meta").is_none());
}

/// Patient-scoped searches without patient/subject answer 403 with an OperationOutcome.
#[tokio::test]
async fn patient_required() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/AllergyIntolerance?clinical-status=active", env.r4())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["resourceType"], "OperationOutcome");
}

/// Patient and subject naming different patients is 400/4112.
#[tokio::test]
async fn patient_and_subject_must_agree() {
    let env = Env::start().await;
    let (status, body) =
        env.json(&format!("{}/Condition?patient={CAMILA}&subject=Patient/{DERRICK}", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["4112"]);
}

/// Observation without category or code is 400/59108; an unknown category is 400/59111.
#[tokio::test]
async fn observation_needs_category() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/Observation?patient={CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["59108"]);
    let (status, body) =
        env.json(&format!("{}/Observation?patient={CAMILA}&category=labresults", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["59111"]);
}

/// Patient search without demographics or _id is 400 with 59159 (and 59100 for ignored params).
#[tokio::test]
async fn patient_search_needs_demographics() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/Patient?foo=bar", env.r4())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["59100", "59159"], "sandbox order: ignored parameter, then fatal");
    let (status, body) = env.json(&format!("{}/Patient?family=lin&given=derr", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(matches(&body)[0]["id"], DERRICK);
    let (_, body) = env.json(&format!("{}/Patient?identifier=203713", env.r4())).await;
    assert_eq!(matches(&body)[0]["id"], CAMILA);
}

/// An empty result is a searchset with total 0 and one outcome entry (4101, Epic's OID system).
#[tokio::test]
async fn empty_result_is_outcome_only() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/Goal?patient={CAMILA}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["type"], "searchset");
    assert_eq!(body["total"], 0);
    let entries = body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["search"]["mode"], "outcome");
    assert!(entries[0]["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    let coding = &entries[0]["resource"]["issue"][0]["details"]["coding"][0];
    assert_eq!(coding["system"], EPIC_OUTCOME_SYSTEM);
    assert_eq!(coding["code"], "4101");
}

/// A patient with no data in one category gets the outcome-only bundle for that category.
#[tokio::test]
async fn empty_category_is_outcome_only() {
    let env = Env::with(FhirConfig { patients: 200, ..FhirConfig::default() }).await;
    let state = env.sim.state();
    let i =
        (10..200).find(|&i| state.fhir.generated_count(i, "Observation:social-history") == Some(0)).unwrap();
    let pid = state.fhir.patient_id(i);
    let (_, body) =
        env.json(&format!("{}/Observation?patient={pid}&category=social-history", env.r4())).await;
    assert_eq!(body["total"], 0);
    assert_eq!(outcome_codes(&body), ["59204", "4101"], "Outside-Record exclusion, then no results");
    assert_eq!(
        exclusions(&body),
        [("59204".to_string(), "Observation - Outside Record Social History".to_string())]
    );
}

/// Unknown parameters are ignored without any issue: real Epic never sent 4122 (changed from the
/// old simulator, which invented one); only the Outside-Record exclusion comes with the data.
#[tokio::test]
async fn unknown_parameter_is_ignored() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/Encounter?patient={CAMILA}&bogus=1", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!matches(&body).is_empty());
    assert_eq!(outcome_codes(&body), ["59204"]);
    assert!(!outcome_codes(&body).contains(&"4122".to_string()));
}

/// A dataset the client is not licensed for is suppressed with a 59204 warning entry.
#[tokio::test]
async fn unlicensed_category_warns() {
    let env = Env::start().await;
    env.sim.state().oauth.register_client(ClientRegistration {
        client_id: CLIENT.to_string(),
        unauthorized_datasets: vec![
            "Observation:social-history".to_string(),
            "Condition:health-concern".to_string(),
        ],
        ..ClientRegistration::default()
    });
    let (status, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=social-history", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 0);
    assert_eq!(outcome_codes(&body), ["59204", "59204", "4101"]);
    assert_eq!(
        exclusions(&body),
        [
            ("59204".to_string(), "Observation - Outside Record Social History".to_string()),
            ("59204".to_string(), "Observation - Social History".to_string()),
        ]
    );
    let (_, body) = env.json(&format!("{}/Condition?patient={DERRICK}", env.r4())).await;
    assert!(matches(&body).iter().all(|c| c["category"][0]["coding"][0]["code"] != "health-concern"));
    assert!(exclusions(&body).contains(&("59204".to_string(), "Condition - Health Concern".to_string())));
}

/// Entries carry a self link, an absolute fullUrl and search.mode match.
#[tokio::test]
async fn entries_are_epic_shaped() {
    let env = Env::start().await;
    let (_, body) = env.json(&format!("{}/Condition?patient={CAMILA}", env.r4())).await;
    let entry = &body["entry"][0];
    let full = entry["fullUrl"].as_str().unwrap();
    assert!(full.starts_with(&format!("{}/Condition/", env.r4())), "{full}");
    assert_eq!(entry["link"][0]["relation"], "self");
    assert_eq!(entry["link"][0]["url"], full);
    assert_eq!(entry["search"]["mode"], "match");
}

/// Unknown resource types (and system-level operations) answer IIS's HTML 404.
#[tokio::test]
async fn unknown_type_is_html_404() {
    let env = Env::start().await;
    for url in [
        format!("{}/Spaceship?patient={CAMILA}", env.r4()),
        format!("{}/MedicationOrder?patient={CAMILA}", env.r4()),
        format!("{}/MedicationRequest?patient={CAMILA}", env.base(FhirVersion::Dstu2)),
        format!("{}/$export", env.r4()),
    ] {
        let resp = env.get(&url, Some(JSON)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{url}");
        assert_eq!(resp.headers()["content-type"], "text/html", "{url}");
        assert!(resp.text().await.unwrap().contains("404 - File or directory not found."));
    }
}

/// Reading an unknown id answers 404 with OperationOutcome 59008.
#[tokio::test]
async fn unknown_id_is_59008() {
    let env = Env::start().await;
    let (status, body) = env.json(&format!("{}/Observation/eNotARealId0000000000003", env.r4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(issue_codes(&body), ["59008"]);
}

/// Every resource found by a search can be read back by id, identically.
#[tokio::test]
async fn search_results_are_readable() {
    let env = Env::start().await;
    for ty in
        ["Condition", "Encounter", "MedicationRequest", "Procedure", "DiagnosticReport", "DocumentReference"]
    {
        let (_, body) = env.json(&format!("{}/{ty}?patient={CAMILA}&_count=2", env.r4())).await;
        for r in matches(&body) {
            let (status, read) = env.json(&format!("{}/{ty}/{}", env.r4(), r["id"].as_str().unwrap())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&read, r);
        }
    }
}

/// Requests without a valid bearer token answer 401 with WWW-Authenticate; /metadata needs none.
#[tokio::test]
async fn token_required() {
    let env = Env::start().await;
    let resp = env.http.get(format!("{}/Patient?_id={CAMILA}", env.r4())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = env.http.get(format!("{}/metadata", env.r4())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// POST {Type}/_search with a form body searches like GET.
#[tokio::test]
async fn post_search_uses_form_body() {
    let env = Env::start().await;
    let resp = env
        .http
        .post(format!("{}/Observation/_search", env.r4()))
        .bearer_auth(&env.token)
        .header("accept", JSON)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("patient={CAMILA}&category=laboratory&_count=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    let found = matches(&body);
    assert!(!found.is_empty() && found.len() <= 3);
    assert!(found.iter().all(|o| o["category"][0]["coding"][0]["code"] == "laboratory"));
}

/// A code filter keeps only matching Observations.
#[tokio::test]
async fn code_filter() {
    let env = Env::start().await;
    let (_, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&code=http://loinc.org|8867-4", env.r4())).await;
    let found = matches(&body);
    assert!(!found.is_empty());
    let loinc = |o: &serde_json::Value| {
        o["code"]["coding"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["system"] == "http://loinc.org" && c["code"] == "8867-4")
    };
    assert!(found.iter().all(|o| loinc(o)));
}

/// DSTU2 serves MedicationOrder (DSTU2 shape), STU3 and R4 MedicationRequest.
#[tokio::test]
async fn versions_serve_their_types() {
    let env = Env::start().await;
    let (status, body) =
        env.json(&format!("{}/MedicationOrder?patient={CAMILA}", env.base(FhirVersion::Dstu2))).await;
    assert_eq!(status, StatusCode::OK);
    if let Some(m) = matches(&body).first() {
        assert_eq!(m["resourceType"], "MedicationOrder");
        assert!(m.get("patient").is_some());
    }
    let (status, body) = env
        .json(&format!("{}/Observation?patient={CAMILA}&category=vital-signs", env.base(FhirVersion::Stu3)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        matches(&body)[0]["category"][0]["coding"][0]["system"],
        "http://hl7.org/fhir/observation-category"
    );
    let (_, body) = env
        .json(&format!(
            "{}/Observation?patient={CAMILA}&category=vital-signs&_count=1",
            env.base(FhirVersion::Dstu2)
        ))
        .await;
    assert!(matches(&body)[0]["category"].is_object(), "DSTU2 category is a single CodeableConcept");
}

/// Same seed, same bytes; another seed, other data.
#[tokio::test]
async fn deterministic_by_seed() {
    let a = Env::start().await;
    let b = Env::start().await;
    let c = Env::with(FhirConfig { seed: 7, ..FhirConfig::default() }).await;
    let pid = a.sim.state().fhir.patient_id(20);
    assert_eq!(pid, b.sim.state().fhir.patient_id(20));
    let path = format!("/Observation?patient={pid}&category=laboratory");
    let mut bodies = Vec::new();
    for env in [&a, &b] {
        let text = env.get(&format!("{}{path}", env.r4()), Some(JSON)).await.text().await.unwrap();
        bodies.push(text.replace(env.sim.base_url(), "BASE"));
    }
    let (ba, bb) = (&bodies[0], &bodies[1]);
    assert_eq!(ba, bb);
    assert!(ba.len() > 100);
    assert_ne!(c.sim.state().fhir.patient_id(20), pid);
}

/// A 100,000-patient population is served on demand: the last patient reads and searches, and a
/// broad name search is capped at 100 results with a 4127 warning.
#[tokio::test]
async fn large_population() {
    let env = Env::with(FhirConfig { patients: 100_000, ..FhirConfig::default() }).await;
    let last = env.sim.state().fhir.patient_id(99_999);
    let (status, p) = env.json(&format!("{}/Patient/{last}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["id"], last.as_str());
    let (status, _) = env.json(&format!("{}/Encounter?patient={last}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    let (_, found) = env.json(&format!("{}/Patient?family=smith", env.r4())).await;
    assert_eq!(matches(&found).len(), 100);
    assert_eq!(outcome_codes(&found), ["4127"]);
    let beyond =
        fhirsync_sim::fhir::FhirState::new(FhirConfig { patients: 100_001, ..FhirConfig::default() })
            .patient_id(100_000);
    let (status, _) = env.json(&format!("{}/Patient/{beyond}", env.r4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "ids beyond the population do not exist");
}

/// Relative references (encounter, DiagnosticReport.result) point at resources that exist.
#[tokio::test]
async fn references_resolve() {
    let env = Env::start().await;
    let (_, reports) = env.json(&format!("{}/DiagnosticReport?patient={CAMILA}", env.r4())).await;
    let (_, labs) =
        env.json(&format!("{}/Observation?patient={CAMILA}&category=laboratory&_count=3", env.r4())).await;
    let mut refs: Vec<String> = Vec::new();
    for r in matches(&reports).into_iter().chain(matches(&labs)) {
        refs.extend(r["encounter"]["reference"].as_str().map(str::to_string));
        if let Some(results) = r["result"].as_array() {
            refs.extend(results.iter().filter_map(|x| x["reference"].as_str().map(str::to_string)));
        }
    }
    assert!(
        refs.iter().any(|r| r.starts_with("Encounter/"))
            && refs.iter().any(|r| r.starts_with("Observation/"))
    );
    for reference in refs {
        let (status, _) = env.json(&format!("{}/{reference}", env.r4())).await;
        assert_eq!(status, StatusCode::OK, "{reference}");
    }
}

/// DocumentReference attachments (`Binary/<id>`) can be read as Binary resources.
#[tokio::test]
async fn document_binaries_read() {
    let env = Env::start().await;
    let (_, docs) = env.json(&format!("{}/DocumentReference?patient={CAMILA}&_count=1", env.r4())).await;
    let url = matches(&docs)[0]["content"][0]["attachment"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("Binary/"));
    let (status, binary) = env.json(&format!("{}/{url}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(binary["resourceType"], "Binary");
    assert_eq!(binary["contentType"], "text/html");
    assert!(binary["data"].as_str().is_some_and(|d| !d.is_empty()));
}

/// Patient search by MRN or FHIR-id identifier finds exactly that patient.
#[tokio::test]
async fn patient_search_by_identifier() {
    let env = Env::with(FhirConfig { patients: 1000, ..FhirConfig::default() }).await;
    let (_, p) = env.json(&format!("{}/Patient/{}", env.r4(), env.sim.state().fhir.patient_id(500))).await;
    let mrn =
        p["identifier"].as_array().unwrap().iter().find(|i| i["type"]["text"] == "EPI").unwrap()["value"]
            .clone();
    let url = format!(
        "{}/Patient?identifier=urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14|{}",
        env.r4(),
        mrn.as_str().unwrap()
    );
    let (_, found) = env.json(&url).await;
    assert_eq!(matches(&found).len(), 1);
    assert_eq!(matches(&found)[0]["id"], p["id"]);
    let (_, found) = env.json(&format!("{}/Patient?identifier={DERRICK}", env.r4())).await;
    assert_eq!(matches(&found)[0]["id"], DERRICK);
    let (_, none) = env.json(&format!("{}/Patient?identifier=999999999", env.r4())).await;
    assert_eq!(outcome_codes(&none), ["4101"]);
}

/// A parameter the type does not support does not filter the results and is not reported
/// (no 4122: changed from the old simulator to what Epic sends).
#[tokio::test]
async fn unsupported_filter_is_ignored() {
    let env = Env::start().await;
    let (_, all) = env.json(&format!("{}/Encounter?patient={CAMILA}", env.r4())).await;
    let (_, with_code) = env.json(&format!("{}/Encounter?patient={CAMILA}&code=123", env.r4())).await;
    assert_eq!(matches(&with_code).len(), matches(&all).len());
    assert_eq!(outcome_codes(&with_code), outcome_codes(&all));
}
