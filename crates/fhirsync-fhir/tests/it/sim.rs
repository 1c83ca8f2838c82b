//! The client against the in-process Epic simulator.

use std::sync::Arc;

use fhirsync_core::FhirVersion;
use fhirsync_fhir::{Error, FhirClient};
use fhirsync_sim::Sim;
use fhirsync_sim::testing::{SimBuilder, SimTokens};
use url::Url;

use crate::stub::fast_config;

const CLIENT: &str = "client";

async fn start(patients: usize, page: usize) -> Sim {
    SimBuilder::new().patients(patients).page_size(page).client(CLIENT).start().await
}

fn client_for(sim: &Sim) -> (FhirClient, Arc<SimTokens>) {
    let tokens = SimTokens::new(sim, CLIENT);
    (FhirClient::new(fast_config(4), tokens.clone()).unwrap(), tokens)
}

/// Paging through the simulator's sessionID `next` links yields every generated resource once.
#[tokio::test]
async fn sim_paging_yields_everything_once() {
    let sim = start(2, 2).await;
    let (c, _) = client_for(&sim);
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    let patient = sim.state().fhir.patient_id(0);
    let expected = sim.state().fhir.generated_count(0, "Observation:laboratory").unwrap();
    assert!(expected > 2, "need several pages, got {expected}");
    let params = vec![("patient".to_string(), patient), ("category".to_string(), "laboratory".to_string())];
    let mut url = fhirsync_fhir::join(&base, "Observation").unwrap();
    url.query_pairs_mut().extend_pairs(&params);
    let mut ids = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut n = 0;
    loop {
        let page = c.page(&url).await.unwrap();
        pages += 1;
        for r in &page.resources {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            ids.insert(v["id"].as_str().unwrap().to_string());
            n += 1;
        }
        match page.next {
            Some(next) => url = url.join(&next).unwrap(),
            None => break,
        }
    }
    assert_eq!(n, expected);
    assert_eq!(ids.len(), expected);
    assert_eq!(pages, expected.div_ceil(2));
}

/// After the simulator expires every token, a 401 triggers exactly one refresh and succeeds.
#[tokio::test]
async fn sim_expired_token_is_refreshed_once() {
    let sim = start(1, 1000).await;
    let (c, tokens) = client_for(&sim);
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    c.metadata(&base).await.unwrap();
    sim.state().oauth.expire_all_tokens();
    let patient = sim.state().fhir.patient_id(0);
    c.search(&base, "Encounter", &[("patient".into(), patient)]).await.unwrap();
    assert_eq!(tokens.invalidations(), 1);
    assert_eq!(c.stats().token_refreshes, 1);
}

/// `Accept: application/fhir+json` makes the simulator (like Epic) answer JSON, not XML.
#[tokio::test]
async fn sim_metadata_is_json() {
    let sim = start(1, 1000).await;
    let (c, _) = client_for(&sim);
    let base = Url::parse(&sim.fhir_base(FhirVersion::Dstu2)).unwrap();
    let body = c.metadata(&base).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["resourceType"], "Conformance");
}

/// An unknown resource type gets the simulator's IIS-style HTML 404.
#[tokio::test]
async fn sim_unknown_type_is_reported() {
    let sim = start(1, 1000).await;
    let (c, _) = client_for(&sim);
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    let err = c.search(&base, "MedicationOrder", &[]).await.unwrap_err();
    assert!(matches!(err, Error::UnknownResourceType { .. }), "{err}");
}
