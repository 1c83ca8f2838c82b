//! End-to-end extraction against the in-process Epic simulator.

use std::collections::BTreeSet;
use std::time::Duration;

use fhirsync_core::{Dataset, FhirVersion, ScopeKey};
use fhirsync_extract::{CohortConfig, ConnectionConfig, Error, ExtractConfig, Extraction, GapReason, Mode};
use fhirsync_fhir::FhirClient;
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::{BulkConfig, BulkFaultKind, DEFAULT_GROUP_ID, RetryAfter};
use fhirsync_sim::testing::SimBuilder;

use crate::stub::drain;

const CLIENT: &str = "fhirsync-test";

/// Starts a simulator with `patients` patients, pages of `page` entries, `unlicensed` datasets.
pub async fn start(patients: usize, page: usize, unlicensed: &[&str], bulk: BulkConfig) -> Sim {
    SimBuilder::new()
        .patients(patients)
        .page_size(page)
        .bulk(bulk)
        .unlicensed_client(CLIENT, unlicensed)
        .start()
        .await
}

/// Connection to the simulator (list `systemlist|6442`, all three versions).
pub fn connection(sim: &Sim) -> ConnectionConfig {
    ConnectionConfig {
        client_id: Some(CLIENT.into()),
        fhir_base_url: Some(url::Url::parse(&sim.epic_root()).expect("simulator root is a URL")),
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
    fhirsync_extract::build_client(conn, cfg, sim.static_token(CLIENT)).unwrap()
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

/// The cohort-level scope of a bulk-exported type.
fn cohort_scope(ty: &str) -> ScopeKey {
    ScopeKey { fhir_version: FhirVersion::R4, patient_id: None, dataset: Dataset::new(ty) }
}

/// One bulk extraction with `state_dir`: resources, completed scopes and the report.
async fn bulk_run(
    sim: &Sim,
    conn: &ConnectionConfig,
    cfg: &ExtractConfig,
    state_dir: &std::path::Path,
) -> Result<(Vec<fhirsync_core::RawResource>, Vec<ScopeKey>, fhirsync_extract::ExtractReport), Error> {
    let run = Extraction::new(client(sim, conn, cfg), conn, cfg.clone()).unwrap().state_dir(state_dir);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    handle.await.unwrap().map(|report| (resources, done, report))
}

/// Requests to Bulk status URLs with `method` (`DELETE`, `GET`).
fn bulk_requests(sim: &Sim, method: &str, fragment: &str) -> usize {
    sim.state()
        .fhir
        .faults
        .request_log()
        .iter()
        .filter(|r| r.method == method && r.uri.contains("BulkRequest") && r.uri.contains(fragment))
        .count()
}

/// The failure message of the gap of `ty` (panics when it has none).
fn gap_of(report: &fhirsync_extract::ExtractReport, ty: &str) -> String {
    let gap = report.gaps.iter().find(|g| g.scope == cohort_scope(ty));
    gap.unwrap_or_else(|| panic!("no gap for {ty}: {:?}", report.gaps)).reason.to_string()
}

/// A whole type the client may not export is answered in `error[]` (59130), not dropped
/// silently: it is a gap, so its landed rows are never read as "now empty" and deleted.
#[tokio::test]
async fn bulk_unlicensed_type_is_a_gap_not_empty() {
    let sim = start(3, 1000, &["Encounter"], bulk_sim_config()).await;
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(!done.iter().any(|s| s.dataset.resource_type == "Encounter"), "{done:?}");
    let gap =
        report.gaps.iter().find(|g| g.scope.dataset.resource_type == "Encounter").expect("Encounter gap");
    assert!(
        gap.reason.to_string().contains("59130") || gap.reason.to_string().contains("not authorized"),
        "{}",
        gap.reason
    );
    assert!(done.iter().any(|s| s.dataset.resource_type == "Observation"), "other types complete: {done:?}");
}

/// Bulk cycle: kick-off, polling, parallel NDJSON download, one cohort-level completion per type
/// (the unlicensed Condition sub-type is a named exclusion, not a gap), real patient and
/// resource counts, DELETE at the end.
#[tokio::test]
async fn bulk_export_cycle() {
    let sim = start(4, 1000, &["Condition:encounter-diagnosis"], bulk_sim_config()).await;
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (resources, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();

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
    assert_eq!(report.resources, resources.len() as u64, "real resource count");
    assert_eq!(report.scope.cohort.len(), 4);
    // One patient-less scope per exported type.
    let mut done_types: Vec<&str> = done.iter().map(|s| s.dataset.resource_type.as_str()).collect();
    done_types.sort();
    assert_eq!(done_types, ["Condition", "Encounter", "Observation", "Patient"]);
    assert!(done.iter().all(|s| s.patient_id.is_none() && s.fhir_version == FhirVersion::R4));
    assert_eq!(report.scopes_planned, 4);
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert!(report.exclusions.iter().all(|e| e.dataset == "Condition@R4"), "{:?}", report.exclusions);
    assert_eq!(report.scopes_excluded, 1);
    assert_eq!(report.outcome_codes.get("59204"), Some(&1));
    let log = sim.state().fhir.faults.request_log();
    assert!(log.iter().any(|r| r.method == "DELETE" && r.uri.contains("BulkRequest")), "status URL deleted");
    assert!(std::fs::read_dir(state.path()).unwrap().next().is_none(), "state file removed");
    assert!(report.scope.complete.contains(&cohort_scope("Encounter")));
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
    assert_eq!(done.len(), 4, "one scope per type");
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
    let plan =
        fhirsync_extract::plan::plan(&client(&sim, &conn, &cfg), &conn.endpoints(), &cfg).await.unwrap();
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
    let endpoints = conn.endpoints();
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

/// A file answering 410 beyond the run's retries is a gap of its type naming the file; the run
/// keeps the export (no DELETE) and saves the manifest and what landed; the next run downloads
/// only that type again from the saved manifest (no new kick-off), completes it, then DELETEs.
#[tokio::test]
async fn bulk_failed_file_keeps_export_and_next_run_retries_saved_manifest() {
    let sim = start(4, 1000, &[], bulk_sim_config()).await;
    let fhir = &sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::Gone, "Condition-1.ndjson", 1000);
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    let gap = gap_of(&report, "Condition");
    assert!(gap.contains("Condition file Condition-1.ndjson not downloaded after 11 attempts"), "{gap}");
    assert!(gap.contains("HTTP 410"), "{gap}");
    assert_eq!(report.gaps.len(), 1);
    assert!(!done.contains(&cohort_scope("Condition")));
    assert_eq!(done.len(), 3);
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 0, "an export with a failed file is kept");
    assert!(bulk_requests(&sim, "GET", "Condition-1.ndjson") >= 11);
    assert!(started.elapsed() >= std::time::Duration::from_millis(25), "retries back off");
    let saved = fhirsync_extract::bulk::BulkState::load(state.path(), DEFAULT_GROUP_ID).unwrap().unwrap();
    assert!(saved.manifest.is_some());
    assert_eq!(saved.pending(), BTreeSet::from(["Condition".to_string()]));
    assert!(saved.landed_files.iter().any(|u| u.ends_with("Patient-1.ndjson")));

    fhir.bulk_fault(BulkFaultKind::Gone, "Condition-1.ndjson", 0);
    fhir.faults.reset_log();
    let (resources, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done, vec![cohort_scope("Condition")]);
    assert_eq!(report.datasets, ["Condition@R4"]);
    assert!(resources.iter().all(|r| r.resource_type == "Condition"));
    let conditions = expected(
        &sim,
        &["Condition:problem-list-item", "Condition:encounter-diagnosis", "Condition:health-concern"],
    );
    assert_eq!(resources.len() as u64, conditions);
    assert_eq!(report.patients, 4, "the cohort from the saved Patient ids");
    assert_eq!(fhir.faults.requests_to("$export"), 0, "no new kick-off");
    assert_eq!(bulk_requests(&sim, "GET", "Patient-1.ndjson"), 0, "landed files are not fetched again");
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 1, "DELETE once every file landed");
    assert!(fhirsync_extract::bulk::BulkState::load(state.path(), DEFAULT_GROUP_ID).unwrap().is_none());
}

/// Transient file failures (410 twice, a body cut mid-line, a reset connection, a truncated gzip
/// body) are retried within the run: the export completes with every resource.
#[tokio::test]
async fn bulk_transient_file_failures_are_retried() {
    let mut sim_bulk = bulk_sim_config();
    sim_bulk.gzip = true;
    let sim = start(3, 1000, &[], sim_bulk).await;
    let fhir = &sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::Gone, "Patient-1.ndjson", 2);
    fhir.bulk_fault(BulkFaultKind::Truncated, "Encounter-1.ndjson", 2);
    fhir.bulk_fault(BulkFaultKind::Truncated, "Observation-2.ndjson", 1);
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (resources, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 4);
    let keys = [
        "Observation:laboratory",
        "Observation:vital-signs",
        "Observation:social-history",
        "Condition:problem-list-item",
        "Condition:encounter-diagnosis",
        "Condition:health-concern",
        "Encounter",
    ];
    let distinct: BTreeSet<(String, String)> =
        resources.iter().map(|r| (r.resource_type.clone(), r.id.clone())).collect();
    assert_eq!(distinct.len() as u64, 3 + expected(&sim, &keys));
    assert_eq!(report.resources, 3 + expected(&sim, &keys), "only complete downloads count");
    assert_eq!(bulk_requests(&sim, "GET", "Patient-1.ndjson"), 3);
    assert_eq!(bulk_requests(&sim, "GET", "Encounter-1.ndjson"), 3);
    assert_eq!(bulk_requests(&sim, "GET", "Observation-2.ndjson"), 2);
    assert!(report.http.retries >= 5, "every file retry is counted: {:?}", report.http);
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 1);
}

/// A manifest `error[]` entry ("Failed to export N.Condition.ndjson") is a gap of Condition naming
/// it; the export is kept. Its files cannot bring Condition, so the next run starts a new export
/// (here refused as a cooldown, the saved export kept); after the window, the new export
/// completes Condition and both exports are deleted.
#[tokio::test]
async fn bulk_error_entry_is_gap_until_a_new_export() {
    let sim = start(3, 1000, &[], bulk_sim_config()).await;
    let fhir = &sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::ExportError, "Condition", 1);
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    let gap = gap_of(&report, "Condition");
    assert!(gap.contains("the server could not export Condition"), "{gap}");
    assert!(gap.contains(".Condition.ndjson"), "{gap}");
    assert_eq!(report.gaps.len(), 1, "{:?}", report.gaps);
    assert_eq!(done.len(), 3);
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 0);

    let err = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap_err();
    assert!(matches!(err, Error::BulkCooldown { .. }), "{err}");
    let saved = fhirsync_extract::bulk::BulkState::load(state.path(), DEFAULT_GROUP_ID).unwrap().unwrap();
    assert!(saved.manifest.is_some(), "the old export is kept while the new one is refused");

    fhir.reset_bulk_window();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 4);
    assert_eq!(fhir.faults.requests_to("$export"), 3);
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 2, "the superseded and the finished export");
    assert!(fhirsync_extract::bulk::BulkState::load(state.path(), DEFAULT_GROUP_ID).unwrap().is_none());
}

/// Group members given as `urn:uuid:` references to contained Patients resolve through the
/// exported Patient file's identifiers: the real patient count, complete types. Without a
/// Patient file the cohort is unknown: every type is a gap saying so, and the cohort is empty.
#[tokio::test]
async fn bulk_urn_uuid_members_resolve_through_the_patient_file() {
    let mut sim_bulk = bulk_sim_config();
    sim_bulk.urn_uuid_members = true;
    let sim = start(5, 1000, &[], sim_bulk).await;
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 4);
    assert_eq!(report.patients, 5);
    let all: BTreeSet<String> = sim.state().fhir.patient_ids().into_iter().collect();
    assert_eq!(report.scope.cohort, all);

    sim.state().fhir.reset_bulk_window();
    let mut cfg = bulk_config();
    cfg.datasets = vec!["Encounter".into()];
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(done.is_empty());
    assert!(
        gap_of(&report, "Encounter").contains("the cohort is unknown: 5 of 5 Group members"),
        "{:?}",
        report.gaps
    );
    assert!(report.scope.cohort.is_empty(), "no cohort exits on an unknown cohort");
}

/// A bulk server whose statement declares only `read`: the export still runs. Types come from
/// the configuration (Immunization, ImagingStudy, Claim can be requested; a type without any
/// file is complete and empty); a type the server refuses at kick-off is a gap naming it, and
/// the export goes on without it. A plain body cut mid-line is retried.
#[tokio::test]
async fn bulk_read_only_statement_and_refused_types() {
    let mut sim_bulk = bulk_sim_config();
    sim_bulk.read_only_statement = true;
    let sim = start(3, 1000, &[], sim_bulk).await;
    sim.state().fhir.bulk_fault(BulkFaultKind::Truncated, "Encounter-1.ndjson", 1);
    let conn = connection(&sim);
    let mut cfg = bulk_config();
    cfg.datasets = ["Patient", "Encounter", "Immunization", "ImagingStudy", "Claim", "NoSuchType"]
        .map(String::from)
        .to_vec();
    let state = tempfile::tempdir().unwrap();
    let (resources, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    let gap = gap_of(&report, "NoSuchType");
    assert!(gap.contains("the server refused to export NoSuchType") && gap.contains("59136"), "{gap}");
    assert_eq!(report.gaps.len(), 1, "{:?}", report.gaps);
    let mut done_types: Vec<&str> = done.iter().map(|s| s.dataset.resource_type.as_str()).collect();
    done_types.sort();
    assert_eq!(done_types, ["Claim", "Encounter", "ImagingStudy", "Immunization", "Patient"]);
    assert_eq!(report.patients, 3);
    assert!(resources.iter().any(|r| r.resource_type == "Encounter"));
    assert_eq!(sim.state().fhir.faults.requests_to("$export"), 2, "refused once, then accepted");
    assert!(matches!(report.gaps[0].reason, GapReason::Failed { .. }));
    assert_eq!(bulk_requests(&sim, "GET", "Encounter-1.ndjson"), 2, "the cut body was retried");
    let encounters = expected(&sim, &["Encounter"]);
    assert_eq!(report.by_dataset["Encounter"].resources, encounters);
}

/// With `urn:uuid:` members, a failed Patient file leaves the cohort unknown: every type is a
/// gap and waits for it (kept pending in the saved export); the next run downloads Patient and
/// the other types again from the saved manifest and completes them all.
#[tokio::test]
async fn bulk_unknown_cohort_waits_for_the_patient_file() {
    let mut sim_bulk = bulk_sim_config();
    sim_bulk.urn_uuid_members = true;
    let sim = start(3, 1000, &[], sim_bulk).await;
    let fhir = &sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::Gone, "Patient-1.ndjson", 1000);
    let conn = connection(&sim);
    let mut cfg = bulk_config();
    cfg.datasets = vec!["Patient".into(), "Encounter".into()];
    let state = tempfile::tempdir().unwrap();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(done.is_empty(), "{done:?}");
    assert!(gap_of(&report, "Patient").contains("Patient-1.ndjson"));
    assert!(gap_of(&report, "Encounter").contains("the cohort is unknown: 3 of 3 Group members"));
    assert!(report.scope.cohort.is_empty());
    let saved = fhirsync_extract::bulk::BulkState::load(state.path(), DEFAULT_GROUP_ID).unwrap().unwrap();
    assert_eq!(saved.pending(), BTreeSet::from(["Encounter".to_string(), "Patient".to_string()]));

    fhir.bulk_fault(BulkFaultKind::Gone, "Patient-1.ndjson", 0);
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 2);
    assert_eq!(report.patients, 3);
    assert_eq!(fhir.faults.requests_to("$export"), 1, "no new kick-off");
}

/// An unreadable error file hides what failed: every type is a gap, but a retryable one; the
/// next run reads it from the saved manifest, completes the other types, and leaves only the
/// type the error file names.
#[tokio::test]
async fn bulk_unreadable_error_file_is_retried() {
    let sim = start(3, 1000, &[], bulk_sim_config()).await;
    let fhir = &sim.state().fhir;
    fhir.bulk_fault(BulkFaultKind::ExportError, "Condition", 1);
    fhir.bulk_fault(BulkFaultKind::Gone, "error-1.ndjson", 1000);
    let conn = connection(&sim);
    let cfg = bulk_config();
    let state = tempfile::tempdir().unwrap();
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert!(done.is_empty());
    assert_eq!(report.gaps.len(), 4);
    assert!(
        gap_of(&report, "Patient").contains("error file error-1.ndjson is unreadable"),
        "{:?}",
        report.gaps
    );

    fhir.bulk_fault(BulkFaultKind::Gone, "error-1.ndjson", 0);
    let (_, done, report) = bulk_run(&sim, &conn, &cfg, state.path()).await.unwrap();
    assert_eq!(done.len(), 3);
    assert!(gap_of(&report, "Condition").contains("the server could not export Condition"));
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(fhir.faults.requests_to("$export"), 1, "retried from the saved manifest");
    assert_eq!(bulk_requests(&sim, "DELETE", ""), 0);
}

/// Search mode: a Group whose members are `urn:uuid:` references to contained Patients resolves
/// them by identifier (`Patient?identifier=`), every member found.
#[tokio::test]
async fn search_cohort_from_urn_uuid_group() {
    let sim_bulk = BulkConfig { urn_uuid_members: true, ..BulkConfig::default() };
    let sim = start(4, 1000, &[], sim_bulk).await;
    let conn = connection(&sim);
    let cfg = config(&[]);
    let cohort = CohortConfig { group: Some(DEFAULT_GROUP_ID.into()), ..CohortConfig::default() };
    let ids = fhirsync_extract::cohort::resolve(&client(&sim, &conn, &cfg), &conn.endpoints(), &cohort)
        .await
        .unwrap();
    assert_eq!(ids, sim.state().fhir.patient_ids());
}
