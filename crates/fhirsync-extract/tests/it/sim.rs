//! End-to-end extraction against the in-process Epic simulator.

use std::collections::BTreeSet;
use std::time::Duration;

use fhirsync_core::{Dataset, FhirVersion, ScopeKey};
use fhirsync_extract::{CohortConfig, ConnectionConfig, Error, ExtractConfig, Extraction, Mode};
use fhirsync_fhir::FhirClient;
use fhirsync_sim::fhir::{BulkConfig, DEFAULT_GROUP_ID, FhirConfig, RetryAfter};
use fhirsync_sim::oauth::{ClientRegistration, OAuthConfig};
use fhirsync_sim::{Sim, SimConfig};

use crate::stub::drain;

const CLIENT: &str = "fhirsync-test";

/// Starts a simulator with `patients` patients, pages of `page` entries, `unlicensed` datasets.
pub async fn start(patients: usize, page: usize, unlicensed: &[&str], bulk: BulkConfig) -> Sim {
    let cfg = SimConfig {
        fhir: FhirConfig { patients, max_page_size: page, bulk, ..FhirConfig::default() },
        oauth: OAuthConfig {
            clients: vec![ClientRegistration {
                client_id: CLIENT.into(),
                unauthorized_datasets: unlicensed.iter().map(|s| s.to_string()).collect(),
                ..ClientRegistration::default()
            }],
            ..OAuthConfig::default()
        },
    };
    Sim::start(cfg).await.unwrap()
}

/// Connection to the simulator (list `systemlist|6442`, all three versions).
pub fn connection(sim: &Sim) -> ConnectionConfig {
    ConnectionConfig {
        client_id: Some(CLIENT.into()),
        fhir_base_url: Some(format!("{}/interconnect-fhir-oauth", sim.base_url())),
        patient_list_identifier: Some("systemlist|6442".into()),
        ..ConnectionConfig::default()
    }
}

/// Fast, unthrottled settings for `datasets`.
pub fn config(datasets: &[&str]) -> ExtractConfig {
    let mut c = ExtractConfig { rate_limit: 0.0, concurrency: 8, ..ExtractConfig::default() };
    c.datasets = datasets.iter().map(|s| s.to_string()).collect();
    c.retry.base_delay_ms = 1;
    c.retry.max_delay_ms = 10;
    c.retry.retry_after_floor_secs = 0;
    c.bulk.poll_floor_secs = 0;
    c
}

/// A client holding a token the simulator issued.
pub fn client(sim: &Sim, conn: &ConnectionConfig, cfg: &ExtractConfig) -> FhirClient {
    let tok = sim.state().oauth.issue_token(CLIENT, &["system/*.read"]);
    let tokens = std::sync::Arc::new(fhirsync_auth::StaticToken(tok.into()));
    fhirsync_extract::build_client(conn, cfg, tokens).unwrap()
}

fn expected(sim: &Sim, keys: &[&str]) -> u64 {
    let fhir = &sim.state().fhir;
    let n = fhir.patient_ids().len();
    (0..n).map(|i| keys.iter().map(|k| fhir.generated_count(i, k).unwrap_or(0) as u64).sum::<u64>()).sum()
}

/// Search mode against the simulator: every generated resource arrives (paged by next links with
/// tiny pages), MedicationOrder comes from DSTU2 when named, and an unlicensed category is a
/// 59204 exclusion naming its sub-type.
#[tokio::test]
async fn search_mode_fetches_everything() {
    let sim = start(6, 2, &["Condition:encounter-diagnosis"], BulkConfig::default()).await;
    let conn = connection(&sim);
    let cfg = config(&["Patient", "Observation", "Condition", "Encounter", "MedicationOrder"]);
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();

    assert_eq!(report.patients, 6);
    let keys = [
        "Observation:laboratory",
        "Observation:vital-signs",
        "Observation:social-history",
        "Condition:problem-list-item",
        "Condition:health-concern",
        "Encounter",
        "MedicationOrder",
    ];
    assert_eq!(resources.len() as u64, 6 + expected(&sim, &keys));
    assert!(
        resources
            .iter()
            .any(|r| r.resource_type == "MedicationOrder" && r.fhir_version == FhirVersion::Dstu2)
    );
    // 9 datasets × 6 patients; the unlicensed category answers a 59204 that names its
    // sub-type: an exclusion, so its scopes are complete (for what the client may see).
    assert_eq!(report.scopes_planned, 54);
    assert_eq!(done.len(), 54);
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    // Production Epic: every clinical search but Patient carries an Outside-Record exclusion.
    assert_eq!(report.scopes_excluded, 48);
    assert!(
        report.exclusions.iter().all(|e| e.exclusion.code == "59204" && e.scopes == 6),
        "{:?}",
        report.exclusions
    );
    let named = |sub: &str| report.exclusions.iter().any(|e| e.exclusion.subtype == sub);
    assert!(
        named("Encounter Diagnosis") || named("Outside Record Encounter Diagnosis"),
        "{:?}",
        report.exclusions
    );
    assert!(named("Outside Record Results"), "{:?}", report.exclusions);
    assert!(report.pages > report.scopes_complete, "tiny pages force paging: {} pages", report.pages);
    // Every resource's patient is in the cohort.
    assert!(resources.iter().all(|r| r.patient_id.as_ref().is_some_and(|p| report.scope.cohort.contains(p))));
}

/// Injected 429 (HTTP-date), 503 and dropped connections are retried; the run is still complete.
#[tokio::test]
async fn injected_faults_are_retried() {
    let sim = start(3, 1000, &[], BulkConfig::default()).await;
    let faults = &sim.state().fhir.faults;
    faults.throttle_next(1, RetryAfter::HttpDate(1));
    faults.fail_next(2, 503);
    faults.drop_next(2);
    let conn = connection(&sim);
    let cfg = config(&["Patient", "Encounter"]);
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 6);
    assert_eq!(resources.len() as u64, 3 + expected(&sim, &["Encounter"]));
    assert!(report.http.retries >= 5, "{:?}", report.http);
    assert!(report.http.throttled >= 1);
}

fn bulk_sim_config() -> BulkConfig {
    BulkConfig { polls_before_ready: 2, retry_after_secs: 0, max_lines_per_file: 5, ..BulkConfig::default() }
}

fn bulk_config() -> ExtractConfig {
    let mut c = config(&["Patient", "Observation", "Condition", "Encounter"]);
    c.mode = Mode::Bulk;
    c.cohort = CohortConfig { group: Some(DEFAULT_GROUP_ID.into()), ..CohortConfig::default() };
    c
}

/// Bulk cycle: kick-off, polling, parallel NDJSON download, per-patient completion for clean
/// types only (the unlicensed Condition sub-type makes Condition a gap), DELETE at the end.
#[tokio::test]
async fn bulk_export_cycle() {
    let sim = start(4, 1000, &["Condition:encounter-diagnosis"], bulk_sim_config()).await;
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap().state_dir(state.path());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();

    let keys = [
        "Observation:laboratory",
        "Observation:vital-signs",
        "Observation:social-history",
        "Condition:problem-list-item",
        "Condition:health-concern",
        "Encounter",
    ];
    assert_eq!(resources.len() as u64, 4 + expected(&sim, &keys));
    assert!(resources.iter().all(|r| r.patient_id.is_some()));
    assert_eq!(report.patients, 4);
    let done_types: BTreeSet<&str> = done.iter().map(|s| s.dataset.resource_type.as_str()).collect();
    // The Condition file's 59204 line names its sub-type: an exclusion of a complete type.
    assert_eq!(done_types, BTreeSet::from(["Condition", "Encounter", "Observation", "Patient"]));
    assert_eq!(done.len(), 16);
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert!(report.exclusions.iter().all(|e| e.dataset == "Condition@R4"), "{:?}", report.exclusions);
    assert_eq!(report.scopes_excluded, 4);
    assert_eq!(report.outcome_codes.get("59204"), Some(&1));
    let log = sim.state().fhir.faults.request_log();
    assert!(log.iter().any(|r| r.method == "DELETE" && r.uri.contains("BulkRequest")), "status URL deleted");
    assert!(std::fs::read_dir(state.path()).unwrap().next().is_none(), "state file removed");
    // Scopes use the same key as search mode.
    let p = report.scope.cohort.iter().next().unwrap().clone();
    assert!(report.scope.complete.contains(&ScopeKey {
        fhir_version: FhirVersion::R4,
        patient_id: Some(p),
        dataset: Dataset::new("Encounter"),
    }));
}

/// A second kick-off within Epic's window is a clear cooldown error, not a retry loop.
#[tokio::test]
async fn bulk_too_recently_is_cooldown() {
    let sim = start(2, 1000, &[], bulk_sim_config()).await;
    let conn = connection(&sim);
    for attempt in 0..2 {
        let cfg = bulk_config();
        let state = tempfile::tempdir().unwrap();
        let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap().state_dir(state.path());
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let handle = tokio::spawn(run.run(tx));
        let _ = drain(rx, None).await;
        let result = handle.await.unwrap();
        if attempt == 0 {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            assert!(matches!(err, Error::BulkCooldown { .. }), "{err}");
            assert!(err.to_string().contains("too recently"));
        }
    }
    assert_eq!(sim.state().fhir.faults.requests_to("$export"), 2);
}

/// A run killed while polling resumes from the saved status URL: no second kick-off (which
/// Epic would refuse), and the export completes.
#[tokio::test]
async fn bulk_resumes_from_saved_status_url() {
    let sim_bulk = BulkConfig { polls_before_ready: 3, retry_after_secs: 1, ..bulk_sim_config() };
    let sim = start(3, 1000, &[], sim_bulk).await;
    let conn = connection(&sim);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = bulk_config();
    cfg.bulk.poll_floor_secs = 1;
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg.clone()).unwrap().state_dir(state.path());
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let first = tokio::spawn(run.run(tx));
    // Kill the first run as soon as the status URL is on disk.
    let state_file = fhirsync_extract::bulk::BulkState::path(state.path(), DEFAULT_GROUP_ID);
    for _ in 0..200 {
        if state_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    assert!(state_file.exists(), "status URL saved before polling");

    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap().state_dir(state.path());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 12);
    assert!(!resources.is_empty());
    assert_eq!(sim.state().fhir.faults.requests_to("$export"), 1, "no second kick-off");
    assert!(!state_file.exists());
}

/// The default plan from the simulator's three CapabilityStatements: R4 first, version-only types
/// from STU3/DSTU2, Observation fanned out per category, id-only types left out.
#[tokio::test]
async fn plan_from_sim_capability_statements() {
    let sim = start(1, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let cfg = config(&[]);
    let plan = fhirsync_extract::plan::plan(&client(&sim, &conn, &cfg), &conn.endpoints().unwrap(), &cfg)
        .await
        .unwrap();
    let names = plan.dataset_names();
    for want in [
        "Observation:laboratory@R4",
        "Observation:vital-signs@R4",
        "Condition:problem-list-item@R4",
        "MedicationRequest@R4",
        "ServiceRequest@R4",
        "Patient@R4",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // One copy of each record: the DSTU2/STU3 forms of R4's MedicationRequest/ServiceRequest
    // are left out.
    // CarePlan per Epic's category (required by the statement); RelatedPerson is not
    // patient-searchable at Epic (only `_id`/`_count`), so it is not fanned out at all.
    for want in ["CarePlan:38717003@R4", "CarePlan:734163000@R4", "CarePlan:assess-plan@R4"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    for unwanted in [
        "Medication@",
        "Practitioner@",
        "List@",
        "Observation@",
        "MedicationOrder@",
        "ProcedureRequest@",
        "RelatedPerson@",
        "CarePlan@",
    ] {
        assert!(!names.iter().any(|n| n.starts_with(unwanted)), "{unwanted} planned: {names:?}");
    }
}

/// STU3 and R4 patient lists resolve to the same members; overlapping sources are de-duplicated
/// and keep first-seen order.
#[tokio::test]
async fn cohort_from_sim_lists_stu3_and_r4() {
    let sim = start(5, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let cfg = config(&[]);
    let c = client(&sim, &conn, &cfg);
    let endpoints = conn.endpoints().unwrap();
    let all = sim.state().fhir.patient_ids();
    for version in [FhirVersion::Stu3, FhirVersion::R4] {
        let cohort = CohortConfig {
            patient_ids: vec![all[3].clone()],
            patient_list: Some("systemlist|6442".into()),
            list_version: Some(version),
            ..CohortConfig::default()
        };
        let ids = fhirsync_extract::cohort::resolve(&c, &endpoints, &cohort).await.unwrap();
        assert_eq!(ids.len(), 5, "{version}");
        assert_eq!(ids[0], all[3]);
        let set: BTreeSet<_> = ids.iter().collect();
        assert_eq!(set, all.iter().collect(), "{version}");
    }
    let missing = CohortConfig { patient_list: Some("systemlist|1".into()), ..CohortConfig::default() };
    let err = fhirsync_extract::cohort::resolve(&c, &endpoints, &missing).await.unwrap_err();
    assert!(err.to_string().contains("systemlist|1"), "{err}");
}
