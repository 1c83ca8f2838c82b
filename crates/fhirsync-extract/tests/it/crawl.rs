//! Search-mode extraction against the scripted stub.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fhirsync_core::{Dataset, ExtractEvent, FhirVersion, ScopeKey};
use fhirsync_extract::{CohortConfig, Error, Extraction, GapReason};

use crate::stub::{Stub, client, connection, drain, extract_config, serve};

fn scope(patient: &str, ds: &str) -> ScopeKey {
    let dataset = match ds.split_once(':') {
        Some((t, c)) => Dataset::with_category(t, c),
        None => Dataset::new(ds),
    };
    ScopeKey { fhir_version: FhirVersion::R4, patient_id: Some(patient.into()), dataset }
}

fn hits(stub: &Stub, ty: &str) -> usize {
    stub.hits.lock().unwrap().get(ty).copied().unwrap_or(0)
}

/// Full crawl over the STU3 patient list: de-duplicated cohort, paging by next links,
/// 4101 = complete, a named 59204 = exclusion of a complete scope, an unnamed 59204 = gap,
/// 4113 = restart (its repeats counted apart), and ScopeComplete after the scope's resources.
#[tokio::test]
async fn crawl_over_patient_list() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let progress = run.progress();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(run.run(tx));
    let mut completed: HashSet<ScopeKey> = HashSet::new();
    let mut resources = Vec::new();
    while let Some(e) = rx.recv().await {
        match e {
            ExtractEvent::Resources(rs) => {
                for r in rs {
                    assert!(!completed.contains(&r.scope()), "resource after its ScopeComplete");
                    resources.push(r);
                }
            }
            ExtractEvent::ScopeComplete(s) => assert!(completed.insert(s)),
        }
    }
    let report = handle.await.unwrap().unwrap();

    assert_eq!(report.patients, 3);
    assert_eq!(report.scope.cohort, BTreeSet::from(["p1".into(), "p2".into(), "p3".into()]));
    assert_eq!(report.scopes_planned, 24);
    // 3 patients × (Patient 1 + labs 3 + vitals 3 + problems 1 + encounters 1 + 2 after restart).
    assert_eq!(resources.len(), 33);
    let unique: HashSet<(String, String)> =
        resources.iter().map(|r| (r.resource_type.clone(), r.id.clone())).collect();
    assert_eq!(unique.len(), 30);
    assert!(resources.iter().all(|r| r.patient_id.is_some() && r.fhir_version == FhirVersion::R4));
    // Every scope but the unnamed 59204 ones is complete; the named Outside-Record 59204 next
    // to the problems is an exclusion of a complete scope.
    assert_eq!(completed.len(), 21);
    assert!(completed.contains(&scope("p1", "Condition:problem-list-item")), "exclusion next to data");
    assert_eq!(report.scopes_excluded, 3);
    assert_eq!(report.exclusions.len(), 1);
    assert_eq!(report.exclusions[0].dataset, "Condition:problem-list-item@R4");
    assert_eq!(report.exclusions[0].exclusion.subtype, "Outside Record Problems");
    assert_eq!(report.exclusions[0].scopes, 3);
    assert_eq!(
        report.exclusion_baseline.get("Condition:problem-list-item@R4").map(|b| b.len()),
        Some(1),
        "the next run's baseline"
    );
    assert!(completed.contains(&scope("p1", "Observation:social-history")), "4101 is complete and empty");
    assert!(completed.contains(&scope("p2", "Encounter")), "complete after a 4113 restart");
    assert!(!completed.contains(&scope("p1", "Condition:encounter-diagnosis")));
    assert_eq!(report.scope.complete.len(), 21);
    assert_eq!(report.gaps.len(), 3);
    assert!(
        report
            .gaps
            .iter()
            .all(|g| matches!(&g.reason, GapReason::NotAuthorized { code, .. } if code == "59204"))
    );
    assert_eq!(report.outcome_codes.get("4101"), Some(&6));
    assert_eq!(report.outcome_codes.get("59204"), Some(&6));
    assert_eq!(report.session_restarts, 3);
    assert_eq!((report.resources, report.resources_resent), (30, 3), "repeats after 4113 apart");
    // Paging: labs and vitals two pages each, social-history one, per patient.
    assert_eq!(hits(&stub, "Observation"), 15);
    let snap = progress.snapshot();
    assert_eq!(snap.scopes_done, 24);
    assert_eq!(snap.resources, 33);
    assert_eq!(snap.datasets["Observation:laboratory"], (3, 9));
}

/// The R4 patient list (code=patients, Epic's OID system) yields the same de-duplicated cohort.
#[tokio::test]
async fn cohort_from_r4_list() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let endpoints = conn.endpoints();
    let cohort = CohortConfig {
        patient_list: Some("systemlist|6442".into()),
        patient_ids: vec!["p0".into(), "p2".into()],
        list_version: Some(FhirVersion::R4),
        ..CohortConfig::default()
    };
    let ids = fhirsync_extract::cohort::resolve(&client(&conn, &cfg), &endpoints, &cohort).await.unwrap();
    assert_eq!(ids, vec!["p0", "p2", "p1", "p3"]);
}

/// Scopes in the skip set are neither fetched nor sent, and count as complete (resume).
#[tokio::test]
async fn skip_set_is_honoured() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let skip =
        BTreeSet::from([scope("p1", "Observation:laboratory"), scope("p2", "Observation:vital-signs")]);
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap().skip(skip.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    assert_eq!(hits(&stub, "Observation"), 11);
    assert_eq!(report.scopes_skipped, 2);
    assert!(skip.is_subset(&report.scope.complete));
    assert!(!done.iter().any(|s| skip.contains(s)));
    assert!(!resources.iter().any(|r| skip.contains(&r.scope())));
    assert_eq!(resources.len(), 33 - 6);
}

/// Without the completed-scope list (landing records the events), the report keeps its counts
/// and gaps and the same scopes complete as events, skipped ones included, but lists none: and
/// its JSON has no `scope.complete`.
#[tokio::test]
async fn completed_scopes_can_be_left_to_the_events() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let skip = BTreeSet::from([scope("p1", "Observation:laboratory")]);
    let run =
        Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap().skip(skip).list_complete_scopes(false);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(run.run(tx));
    let (_, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    assert!(report.scope.complete.is_empty());
    assert_eq!(report.scope.cohort.len(), 3);
    assert_eq!(done.len(), 20, "21 complete, one of them skipped");
    assert_eq!((report.scopes_complete, report.scopes_skipped, report.gaps.len()), (20, 1, 3));
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["scope"].get("complete").is_none(), "{}", json["scope"]);
    assert_eq!(json["scope"]["gaps"], 3);
}

/// A scope that keeps failing (HTTP 500) is a reported gap; the rest of the run completes.
#[tokio::test]
async fn failed_scope_is_reported_not_fatal() {
    let stub = Arc::new(Stub { failing_patients: vec!["p2".into()], ..Stub::default() });
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(run.run(tx));
    let (_, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    let failed: Vec<_> =
        report.gaps.iter().filter(|g| matches!(g.reason, GapReason::Failed { .. })).collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|g| g.scope.patient_id.as_deref() == Some("p2")));
    assert!(!done.contains(&scope("p2", "Observation:laboratory")));
    assert!(done.contains(&scope("p1", "Observation:laboratory")));
    assert!(report.http.retries >= 6, "{:?}", report.http);
}

/// Rejected credentials abort the run with a clear error.
#[tokio::test]
async fn rejected_credentials_abort_run() {
    let stub = Arc::new(Stub { reject_all: true, ..Stub::default() });
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::spawn(run.run(tx));
    let _ = drain(rx, None).await;
    let err = handle.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Fhir(fhirsync_fhir::Error::Unauthorized { .. })), "{err}");
}

/// With a baseline from the last committed run, a sub-type withheld now but not then is a
/// narrowed licence: those scopes are gaps (no ScopeComplete); with it in the baseline they are
/// complete; the new baseline records it either way and keeps the entries of datasets not read.
#[tokio::test]
async fn exclusion_missing_from_baseline_is_a_licence_change() {
    use fhirsync_extract::ExclusionBaseline;
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let problems = |baseline: ExclusionBaseline| {
        let conn = conn.clone();
        async move {
            let cfg = extract_config();
            let run =
                Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap().exclusion_baseline(Some(baseline));
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let handle = tokio::spawn(run.run(tx));
            let (_, done) = drain(rx, None).await;
            let report = handle.await.unwrap().unwrap();
            let complete =
                done.iter().filter(|s| s.dataset.category.as_deref() == Some("problem-list-item")).count();
            (complete, report)
        }
    };
    let (complete, narrowed) = problems(ExclusionBaseline::new()).await;
    assert_eq!(complete, 0, "no problem-list scope completes");
    let gaps: Vec<_> =
        narrowed.gaps.iter().filter(|g| matches!(g.reason, GapReason::LicenceNarrowed { .. })).collect();
    assert_eq!(gaps.len(), 3);
    assert!(gaps[0].reason.to_string().contains("Condition - Outside Record Problems"), "{}", gaps[0].reason);
    assert_eq!(narrowed.scopes_excluded, 0, "a narrowed scope is a gap, not an exclusion");
    // A dataset this run does not read keeps its baseline entry.
    let mut baseline = narrowed.exclusion_baseline.clone();
    baseline.insert("Slot@STU3".into(), Default::default());
    let (complete, accepted) = problems(baseline.clone()).await;
    assert_eq!(complete, 3);
    assert!(!accepted.gaps.iter().any(|g| matches!(g.reason, GapReason::LicenceNarrowed { .. })));
    assert_eq!(accepted.exclusion_baseline, baseline);
}

/// With `verify_counts` on a generic server, a scope whose `_summary=count` differs from what
/// was read is a gap; an agreeing count, or a server that gives no total, is not.
#[tokio::test]
async fn verify_counts_books_a_count_mismatch() {
    let stub = Arc::new(Stub {
        counts: std::collections::HashMap::from([("Condition".into(), 2), ("Encounter".into(), 2)]),
        ..Stub::default()
    });
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let mut cfg = extract_config();
    cfg.server = fhirsync_extract::ServerKind::Generic;
    cfg.verify_counts = true;
    cfg.datasets = vec!["Patient".into(), "Condition".into(), "Encounter".into(), "Observation".into()];
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (_, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    // Condition (no category on a generic server) answers 4101: 0 read, the server counts 2.
    let condition_gaps: Vec<_> =
        report.gaps.iter().filter(|g| g.scope.dataset == Dataset::new("Condition")).collect();
    assert_eq!(condition_gaps.len(), 3, "{:?}", report.gaps);
    assert!(
        condition_gaps[0].reason.to_string().contains("the server counts 2 (_summary=count), 0 were read")
    );
    // Encounter reads 2 a patient (after its 4113 restart): the count agrees.
    assert_eq!(done.iter().filter(|s| s.dataset == Dataset::new("Encounter")).count(), 3);
    // Observation: no total in the answer, so not verifiable, not a gap.
    assert!(!report.gaps.iter().any(|g| g.scope.dataset.resource_type == "Observation"), "{:?}", report.gaps);
}

/// A slow consumer on a one-slot channel slows extraction down but loses nothing.
#[tokio::test]
async fn back_pressure_loses_nothing() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, Some(Duration::from_millis(2))).await;
    handle.await.unwrap().unwrap();
    assert_eq!(resources.len(), 33);
    assert_eq!(done.len(), 21);
}

/// The receiver going away stops the run with ReceiverClosed.
#[tokio::test]
async fn dropped_receiver_stops_run() {
    let stub = Arc::new(Stub::default());
    let root = serve(stub.clone()).await;
    let conn = connection(&root);
    let cfg = extract_config();
    let run = Extraction::new(client(&conn, &cfg), &conn, cfg).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let err = run.run(tx).await.unwrap_err();
    assert!(matches!(err, Error::ReceiverClosed), "{err}");
}
