//! Patients with Epic's identifier set, the sandbox patients of `epic-facts.md` §8, and
//! `identifier=system|value` searches that honour the system.

use fhirsync_sim::fhir::FhirConfig;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const OID_MRN: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14";
const OID_SSN: &str = "urn:oid:2.16.840.1.113883.4.1";

fn type_texts(patient: &Value) -> Vec<Option<String>> {
    patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"]["text"].as_str().map(str::to_string))
        .collect()
}

fn identifier<'a>(patient: &'a Value, type_text: &str) -> Option<&'a Value> {
    patient["identifier"].as_array().unwrap().iter().find(|i| i["type"]["text"] == type_text)
}

/// Jason Argonaut carries Epic's identifier set in the sandbox's order: EPI 203675 under the MRN
/// OID, INTERNAL padded with spaces, his MyChart login, an untyped SSN, and nothing typed MRN.
#[tokio::test]
async fn patient_carries_epics_identifier_set() {
    let env = Env::start().await;
    let (status, jason) = env.json(&format!("{}/Patient/{JASON}", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    let owned = type_texts(&jason);
    let texts: Vec<Option<&str>> = owned.iter().map(|t| t.as_deref()).collect();
    let expected = [
        Some("CEID"),
        Some("EPIC"),
        Some("EXTERNAL"),
        Some("FHIR"),
        Some("FHIR STU3"),
        Some("INTERNAL"),
        Some("EPI"),
        Some("MYCHARTLOGIN"),
        Some("WPRINTERNAL"),
        None,
    ];
    assert_eq!(texts, expected);
    let epi = identifier(&jason, "EPI").unwrap();
    assert_eq!(epi["system"], OID_MRN);
    assert_eq!(epi["value"], "203675");
    let external = identifier(&jason, "EXTERNAL").unwrap()["value"].as_str().unwrap();
    let internal = identifier(&jason, "INTERNAL").unwrap()["value"].as_str().unwrap();
    assert_eq!(internal.len(), 10);
    assert!(internal.starts_with(' '));
    assert_eq!(internal.trim(), external);
    let ssn = jason["identifier"].as_array().unwrap().last().unwrap();
    assert_eq!(ssn["system"], OID_SSN);
    assert!(ssn.get("type").is_none());
    assert!(ssn["value"].as_str().unwrap().starts_with('9'), "a never-issued SSN area");
    assert!(type_texts(&jason).iter().all(|t| t.as_deref() != Some("MRN")));
    let (_, linda) = env.json(&format!("{}/Patient/{LINDA}", env.r4())).await;
    assert!(identifier(&linda, "MYCHARTLOGIN").is_none(), "no MyChart login, no MYCHARTLOGIN");
    let (_, camila) = env.json(&format!("{}/Patient/{CAMILA}", env.r4())).await;
    assert_eq!(identifier(&camila, "MYCHARTLOGIN").unwrap()["value"], "FHIRCAMILA");
}

/// The sandbox patients have the ids, names, birth dates and MRNs of the facts table (Jessica
/// Argonaut and Theodore Mychart get non-colliding placeholders).
#[tokio::test]
async fn sandbox_patients_match_the_facts_table() {
    let env = Env::start().await;
    let table = [
        ("erXuFYUfucBZaryVksYEcMg3", "Lopez", "Camila", Some("1987-09-12"), "203713"),
        ("eq081-VQEgP8drUUqCWzHfw3", "Lin", "Derrick", Some("1973-06-03"), "203711"),
        ("eAB3mDIBBcyUKviyzrxsnAw3", "Powell", "Desiree", Some("2014-11-14"), "203714"),
        ("egqBHVfQlt4Bw3XGXoxVxHg3", "Davis", "Elijah", None, "203709"),
        ("eIXesllypH3M9tAA5WdJftQ3", "Ross", "Linda", Some("1969-04-27"), "203712"),
        ("eh2xYHuzl9nkSFVvV3osUHg3", "Roberts", "Olivia", None, "203715"),
        ("e0w0LEDCYtfckT6N.CkJKCw3", "McGinnis", "Warren", Some("1952-05-24"), "203710"),
        ("eD.LxhDyX35TntF77l7etUA3", "Argonaut", "Jason", Some("1985-08-01"), "203675"),
        ("evYS76EX6LLeCX2PlRLhvwg3", "Argonaut", "Jessica", Some("1985-08-01"), "203717"),
        ("e63wRTbPfr1p8UW81d8Seiw3", "Mychart", "Theodore", None, "203718"),
    ];
    let mut mrns = Vec::new();
    for (i, (id, family, given, birth, mrn)) in table.iter().enumerate() {
        assert_eq!(env.sim.state().fhir.patient_id(i), *id);
        let (_, p) = env.json(&format!("{}/Patient/{id}", env.r4())).await;
        assert_eq!(p["name"][0]["family"], *family, "{id}");
        assert_eq!(p["name"][0]["given"][0], *given, "{id}");
        if let Some(b) = birth {
            assert_eq!(p["birthDate"], *b, "{id}");
        }
        assert_eq!(identifier(&p, "EPI").unwrap()["value"], *mrn, "{id}");
        mrns.push(mrn.to_string());
    }
    mrns.sort();
    mrns.dedup();
    assert_eq!(mrns.len(), table.len(), "MRNs do not collide");
}

/// `identifier=system|value` matches only under that system; a bare value matches any system;
/// every identifier of a generated patient finds that patient.
#[tokio::test]
async fn identifier_search_honours_the_system() {
    let env = Env::with(FhirConfig { patients: 500, ..FhirConfig::default() }).await;
    let env = &env;
    let search = |q: String| async move {
        let url = format!("{}/Patient?identifier={}", env.r4(), q.replace('|', "%7C").replace(' ', "%20"));
        ids(&env.json(&url).await.1)
    };
    assert_eq!(search(format!("{OID_MRN}|203675")).await, [JASON]);
    assert_eq!(search("203675".to_string()).await, [JASON]);
    assert!(search(format!("{OID_SSN}|203675")).await.is_empty(), "an MRN is not an SSN");
    assert!(search("urn:oid:1.2.3|203675".to_string()).await.is_empty());
    let other = env.sim.state().fhir.patient_id(321);
    let (_, p) = env.json(&format!("{}/Patient/{other}", env.r4())).await;
    for id in p["identifier"].as_array().unwrap() {
        let (system, value) = (id["system"].as_str().unwrap(), id["value"].as_str().unwrap());
        assert_eq!(search(format!("{system}|{value}")).await, [other.as_str()], "{system}|{value}");
        assert!(search(value.to_string()).await.contains(&other), "{value} alone");
    }
    let (_, none) = env.json(&format!("{}/Patient?identifier=999999999", env.r4())).await;
    assert_eq!(outcome_codes(&none), ["4101"]);
}
