//! The scenario every destination must pass. Each function takes a fresh, empty destination's
//! [`Harness`]; `scenario_tests!` turns them into `#[test]`s in each destination module.

use fhirsync_core::Dataset;
use fhirsync_land::{Error, LandOptions, Method, OnCohortExit};

use crate::support::*;

/// Generates the scenario tests for a harness constructor returning `Option<impl Harness>`
/// (`None` skips, e.g. PostgreSQL without a server).
macro_rules! scenario_tests {
    ($make:expr) => {
        /// Full load, then edit/delete/add under reload-and-compare: exact rows and I/U/D records.
        #[test]
        fn load_edit_delete_add() {
            if let Some(h) = $make {
                crate::scenario::load_edit_delete_add(&h);
            }
        }
        /// A scope that did not complete (failed page) never loses rows; a complete one does.
        #[test]
        fn partial_failure_never_deletes() {
            if let Some(h) = $make {
                crate::scenario::partial_failure_never_deletes(&h);
            }
        }
        /// Patients who left the cohort are flagged, kept, deleted only with `delete`, unflagged on return.
        #[test]
        fn cohort_exit_flagged_then_deleted() {
            if let Some(h) = $make {
                crate::scenario::cohort_exit_flagged_then_deleted(&h);
            }
        }
        /// A killed run leaves the old state readable; the rerun resumes it and skips completed scopes.
        #[test]
        fn resume_after_killed_run() {
            if let Some(h) = $make {
                crate::scenario::resume_after_killed_run(&h);
            }
        }
        /// Full load refuses a non-empty target naming the fix, and `replace` overwrites it.
        #[test]
        fn full_load_refuses_non_empty() {
            if let Some(h) = $make {
                crate::scenario::full_load_refuses_non_empty(&h);
            }
        }
        /// Reload shows the old state until commit, then exactly the new one (incomplete scopes kept).
        #[test]
        fn reload_swaps_atomically() {
            if let Some(h) = $make {
                crate::scenario::reload_swaps_atomically(&h);
            }
        }
        /// Views are materialised after landing and follow inserts, updates and deletes.
        #[test]
        fn views_follow_changes() {
            if let Some(h) = $make {
                crate::scenario::views_follow_changes(&h);
            }
        }
        /// An unfinished run of another method is abandoned, its staged rows never land.
        #[test]
        fn other_method_abandons_unfinished_run() {
            if let Some(h) = $make {
                crate::scenario::other_method_abandons_unfinished_run(&h);
            }
        }
        /// Datasets without a patient delete by their patient-less scope and are never cohort exits.
        #[test]
        fn unscoped_dataset_deletes_when_complete() {
            if let Some(h) = $make {
                crate::scenario::unscoped_dataset_deletes_when_complete(&h);
            }
        }
        /// A complete patient-less (cohort-level, bulk) scope deletes vanished rows of cohort
        /// patients and patient-less rows, keeps a cohort exit's rows unless `delete`, and an
        /// incomplete one deletes nothing.
        #[test]
        fn cohort_scope_deletes_within_cohort_only() {
            if let Some(h) = $make {
                crate::scenario::cohort_scope_deletes_within_cohort_only(&h);
            }
        }
    };
}
pub(crate) use scenario_tests;

/// A small hand-made ViewDefinition over Observation.
pub fn obs_view() -> fhirsync_views::View {
    fhirsync_views::View::from_json(&serde_json::json!({
        "resourceType": "ViewDefinition",
        "name": "obs_values",
        "resource": "Observation",
        "select": [{"column": [
            {"name": "obs_id", "path": "id"},
            {"name": "value", "path": "valueQuantity.value", "type": "decimal"},
            {"name": "status", "path": "status"}
        ]}]
    }))
    .unwrap()
}

/// Columns read back from the view table.
pub const VIEW_COLUMNS: [&str; 5] = ["_fhir_version", "_id", "obs_id", "value", "status"];

fn view_row(id: &str, value: &str) -> Vec<Option<String>> {
    ["R4", id, id, value, "final"].iter().map(|s| Some(s.to_string())).collect()
}

pub fn views_follow_changes(h: &dyn Harness) {
    let views = [obs_view()];
    let p1 = patient("p1", "Alpha");
    // Values of one scale: Parquet types a decimal column by its largest scale.
    let (o1, o2) = (obs("o1", "p1", "1.25"), obs("o2", "p1", "2.50"));
    let mut dest = h.open();
    let all = run_scope(&["p1"], scopes_of(&["p1"]));
    let m1 =
        land_with_views(&mut *dest, Method::FullLoad, &compare(), &[p1.clone(), o1, o2], all.clone(), &views)
            .unwrap();
    assert_eq!(m1.view_rows, 2);
    assert_eq!(
        h.view_rows("view_obs_values", &VIEW_COLUMNS),
        vec![view_row("o1", "1.25"), view_row("o2", "2.50")]
    );

    let (o1b, o4) = (obs("o1", "p1", "1.75"), obs("o4", "p1", "4.00"));
    let m2 = land_with_views(&mut *dest, Method::ReloadAndCompare, &compare(), &[p1, o1b, o4], all, &views)
        .unwrap();
    assert!(m2.view_rows >= 2, "{m2:?}");
    assert_eq!(
        h.view_rows("view_obs_values", &VIEW_COLUMNS),
        vec![view_row("o1", "1.75"), view_row("o4", "4.00")]
    );
}

fn compare() -> LandOptions {
    LandOptions::default()
}

pub fn load_edit_delete_add(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2, o3) = (obs("o1", "p1", "1.50"), obs("o2", "p1", "2.0"), obs("o3", "p2", "3.0"));
    let mut dest = h.open();
    let all = [p1.clone(), p2.clone(), o1.clone(), o2.clone(), o3.clone()];
    let m1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        &all,
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap();
    let r1 = m1.run_id.clone();
    assert_eq!((m1.staged, m1.inserted, m1.deleted), (5, 5, 0));
    assert_eq!(h.rows(), sorted(all.iter().map(|r| landed(r, &r1, &r1)).collect()));

    let o1b = obs("o1", "p1", "1.55");
    let o4 = obs("o4", "p2", "4.0");
    let second = [p1.clone(), p2.clone(), o1b.clone(), o3.clone(), o4.clone()];
    let m2 = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &second,
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap();
    let r2 = m2.run_id.clone();
    assert_eq!((m2.staged, m2.inserted, m2.updated, m2.deleted, m2.unchanged, m2.kept), (5, 1, 1, 1, 3, 0));
    assert_eq!(
        h.changes(&r2),
        sorted(vec![
            change("U", "Observation", "o1", Some(&o1), Some(&o1b)),
            change("D", "Observation", "o2", Some(&o2), None),
            change("I", "Observation", "o4", None, Some(&o4)),
        ])
    );
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r2),
            landed(&o1b, &r1, &r2),
            landed(&o3, &r1, &r2),
            landed(&o4, &r2, &r2),
        ])
    );
    // The landed JSON is byte-exact: the decimal keeps its trailing zero.
    assert!(h.rows().iter().any(|r| r.resource.contains("\"value\":2.0") || r.id != "o2"));
    let runs = h.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].method.as_str(), runs[0].status.as_str()), ("full-load", "succeeded"));
    assert_eq!((runs[1].method.as_str(), runs[1].status.as_str()), ("reload-and-compare", "succeeded"));
}

pub fn partial_failure_never_deletes(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2, o3) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"), obs("o3", "p2", "3"));
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        &[p1.clone(), p2.clone(), o1.clone(), o2.clone(), o3.clone()],
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap()
    .run_id;
    // p1's lab search failed after its first page (o2 missing, scope incomplete);
    // p2's lab search completed without o3 (deleted at the source).
    let mut complete = scopes_of(&["p1", "p2"]);
    complete.remove(&scope("p1", lab()));
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &[p1.clone(), p2.clone(), o1.clone()],
        run_scope(&["p1", "p2"], complete),
    )
    .unwrap();
    let r2 = m.run_id.clone();
    assert_eq!((m.deleted, m.kept, m.unchanged), (1, 1, 3));
    assert_eq!(h.changes(&r2), vec![change("D", "Observation", "o3", Some(&o3), None)]);
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r2),
            landed(&o1, &r1, &r2),
            landed(&o2, &r1, &r1)
        ])
    );
}

pub fn cohort_exit_flagged_then_deleted(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o3) = (obs("o1", "p1", "1"), obs("o3", "p2", "3"));
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        &[p1.clone(), p2.clone(), o1.clone(), o3.clone()],
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap()
    .run_id;
    // p2 left the patient list: only p1 is fetched.
    let only_p1 = [p1.clone(), o1.clone()];
    let m2 = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &only_p1,
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    let r2 = m2.run_id.clone();
    assert_eq!((m2.cohort_exits, m2.deleted, m2.kept), (1, 0, 2));
    assert_eq!(h.exits(), vec!["p2".to_string()]);
    assert!(h.changes(&r2).is_empty());
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r1),
            landed(&o1, &r1, &r2),
            landed(&o3, &r1, &r1)
        ])
    );
    // Opt in to deleting them.
    let delete = LandOptions { on_cohort_exit: OnCohortExit::Delete, ..LandOptions::default() };
    let m3 =
        land(&mut *dest, Method::ReloadAndCompare, &delete, &only_p1, run_scope(&["p1"], scopes_of(&["p1"])))
            .unwrap();
    let r3 = m3.run_id.clone();
    assert_eq!((m3.cohort_exits, m3.deleted), (1, 2));
    assert_eq!(
        h.changes(&r3),
        sorted(vec![
            change("D", "Patient", "p2", Some(&p2), None),
            change("D", "Observation", "o3", Some(&o3), None)
        ])
    );
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r3), landed(&o1, &r1, &r3)]));
    assert_eq!(h.exits(), vec!["p2".to_string()]);
    // p2 comes back: unflagged and re-inserted.
    let m4 = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &[p1, p2, o1, o3],
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap();
    assert_eq!((m4.cohort_exits, m4.inserted), (0, 2));
    assert!(h.exits().is_empty());
}

pub fn resume_after_killed_run(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o3) = (obs("o1", "p1", "1"), obs("o3", "p2", "3"));
    let r1 = land(
        &mut *h.open(),
        Method::FullLoad,
        &compare(),
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap()
    .run_id;
    let before = h.rows();

    // Second run: p1 (with an edit) is staged completely, then the process dies while
    // staging p2, before its scopes complete.
    let o1b = obs("o1", "p1", "1.0");
    let start = kill_after_checkpoint(
        h,
        Method::ReloadAndCompare,
        &compare(),
        &[p1.clone(), o1b.clone()],
        &scopes_of(&["p1"]),
        std::slice::from_ref(&p2),
    );
    assert!(!start.resumed);
    let killed_run = start.run_id;
    assert_eq!(h.rows(), before, "a killed run must leave the previous state readable");
    assert_eq!(h.runs().last().map(|r| r.status.clone()), Some("running".to_string()));

    let mut dest = h.open();
    let start = dest.begin(Method::ReloadAndCompare, &compare()).unwrap();
    assert!(start.resumed);
    assert_eq!(start.run_id, killed_run);
    assert_eq!(start.completed_scopes, scopes_of(&["p1"]));
    // The extractor skips p1 and fetches p2 again.
    dest.stage(&[p2.clone(), o3.clone()]).unwrap();
    let m = complete_and_commit(&mut *dest, &["p1", "p2"], &["p2"]);
    assert_eq!(m.run_id, killed_run);
    assert_eq!((m.staged, m.inserted, m.updated, m.deleted), (4, 2, 1, 0));
    let r2 = killed_run;
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&o1b, &r1, &r2),
            landed(&p2, &r2, &r2),
            landed(&o3, &r2, &r2)
        ])
    );
    assert_eq!(
        h.changes(&r2),
        sorted(vec![
            change("U", "Observation", "o1", Some(&o1), Some(&o1b)),
            change("I", "Patient", "p2", None, Some(&p2)),
            change("I", "Observation", "o3", None, Some(&o3)),
        ])
    );
    let statuses: Vec<String> = h.runs().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["succeeded", "succeeded"]);

    // An explicitly failed run is resumed too (one writer at a time: the first one goes).
    drop(dest);
    let mut dest = h.open();
    let failed = dest.begin(Method::ReloadAndCompare, &compare()).unwrap().run_id;
    dest.fail("token expired").unwrap();
    assert_eq!(h.runs().last().map(|r| r.status.clone()), Some("failed".to_string()));
    drop(dest);
    let again = h.open().begin(Method::ReloadAndCompare, &compare()).unwrap();
    assert!(again.resumed);
    assert_eq!(again.run_id, failed);
}

pub fn full_load_refuses_non_empty(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let o3 = obs("o3", "p2", "3");
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        std::slice::from_ref(&p1),
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap()
    .run_id;
    let err = dest.begin(Method::FullLoad, &compare()).unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("replace = true"), "{err}");
    assert_eq!(h.rows(), vec![landed(&p1, &r1, &r1)]);

    let replace = LandOptions { replace: true, ..LandOptions::default() };
    let m = land(
        &mut *dest,
        Method::FullLoad,
        &replace,
        &[p2.clone(), o3.clone()],
        run_scope(&["p2"], scopes_of(&["p2"])),
    )
    .unwrap();
    let r2 = m.run_id.clone();
    assert_eq!((m.staged, m.inserted), (2, 2));
    assert_eq!(h.rows(), sorted(vec![landed(&p2, &r2, &r2), landed(&o3, &r2, &r2)]));
}

pub fn reload_swaps_atomically(h: &dyn Harness) {
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2, o3) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"), obs("o3", "p2", "3"));
    let mut dest = h.open();
    let all = [p1.clone(), p2.clone(), o1.clone(), o2.clone(), o3.clone()];
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        &all,
        run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"])),
    )
    .unwrap()
    .run_id;
    let before = h.rows();

    let o1b = obs("o1", "p1", "1.25");
    let o4 = obs("o4", "p1", "4");
    let start = dest.begin(Method::Reload, &compare()).unwrap();
    dest.stage(&[p1.clone(), p2.clone(), o1b.clone(), o4.clone()]).unwrap();
    // p2's lab search failed: o3 must survive the reload.
    let mut complete = scopes_of(&["p1", "p2"]);
    complete.remove(&scope("p2", lab()));
    for s in &complete {
        dest.scope_complete(s).unwrap();
    }
    dest.checkpoint().unwrap();
    assert_eq!(h.rows(), before, "readers must not see staged data before the swap");
    let m = dest.commit(&run_scope(&["p1", "p2"], complete), &[], &serde_json::json!({})).unwrap();
    let r2 = start.run_id;
    assert_eq!((m.staged, m.inserted, m.deleted, m.kept), (4, 1, 1, 1));
    assert!(h.changes(&r2).is_empty(), "reload writes no change records");
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r2),
            landed(&o1b, &r1, &r2),
            landed(&o3, &r1, &r1),
            landed(&o4, &r2, &r2),
        ])
    );
    let _ = Dataset::new("Patient");
}

pub fn other_method_abandons_unfinished_run(h: &dyn Harness) {
    let p1 = patient("p1", "Alpha");
    let first = {
        let mut dest = h.open();
        let start = dest.begin(Method::ReloadAndCompare, &compare()).unwrap();
        dest.stage(&[obs("o9", "p1", "9")]).unwrap();
        dest.checkpoint().unwrap();
        start.run_id
    };
    let mut dest = h.open();
    let m = land(
        &mut *dest,
        Method::Reload,
        &compare(),
        std::slice::from_ref(&p1),
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    assert_ne!(m.run_id, first);
    assert_eq!(m.staged, 1);
    assert_eq!(h.rows(), vec![landed(&p1, &m.run_id, &m.run_id)]);
    let statuses: Vec<(String, String)> = h.runs().into_iter().map(|r| (r.run_id, r.status)).collect();
    assert_eq!(statuses, vec![(first, "abandoned".to_string()), (m.run_id, "succeeded".to_string())]);
}

fn practitioner(id: &str) -> fhirsync_core::RawResource {
    let json = format!(r#"{{"resourceType":"Practitioner","id":"{id}"}}"#);
    fhirsync_core::RawResource::from_json(
        json,
        None,
        Dataset::new("Practitioner"),
        fhirsync_core::FhirVersion::R4,
        SOURCE,
    )
    .unwrap()
}

pub fn unscoped_dataset_deletes_when_complete(h: &dyn Harness) {
    let (pr1, pr2) = (practitioner("pr1"), practitioner("pr2"));
    let unscoped = fhirsync_core::ScopeKey {
        fhir_version: fhirsync_core::FhirVersion::R4,
        patient_id: None,
        dataset: Dataset::new("Practitioner"),
    };
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &compare(),
        &[pr1.clone(), pr2.clone()],
        run_scope(&["p1"], [unscoped.clone()].into()),
    )
    .unwrap()
    .run_id;
    // The practitioner search failed: nothing is deleted, nobody is flagged.
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        std::slice::from_ref(&pr1),
        run_scope(&["p1"], Default::default()),
    )
    .unwrap();
    assert_eq!((m.deleted, m.kept, m.cohort_exits), (0, 1, 0));
    // It completed without pr2: pr2 is deleted.
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        std::slice::from_ref(&pr1),
        run_scope(&["p1"], [unscoped].into()),
    )
    .unwrap();
    assert_eq!(h.changes(&m.run_id), vec![change("D", "Practitioner", "pr2", Some(&pr2), None)]);
    assert_eq!(h.rows(), vec![landed(&pr1, &r1, &m.run_id)]);
    assert!(h.exits().is_empty());
}

/// An Observation as a Bulk export lands it: dataset `Observation` (no category), patient from
/// its subject, or none.
fn bulk_obs(id: &str, patient: Option<&str>) -> fhirsync_core::RawResource {
    let subject = patient.map(|p| format!(r#","subject":{{"reference":"Patient/{p}"}}"#)).unwrap_or_default();
    let json = format!(r#"{{"resourceType":"Observation","id":"{id}","status":"final"{subject}}}"#);
    fhirsync_core::RawResource::from_json(
        json,
        patient.map(str::to_string),
        Dataset::new("Observation"),
        fhirsync_core::FhirVersion::R4,
        SOURCE,
    )
    .unwrap()
}

/// Cohort-level (patient-less) R4 scopes of `types`, as a Bulk export books them.
fn bulk_scopes(types: &[&str]) -> std::collections::BTreeSet<fhirsync_core::ScopeKey> {
    types
        .iter()
        .map(|t| fhirsync_core::ScopeKey {
            fhir_version: fhirsync_core::FhirVersion::R4,
            patient_id: None,
            dataset: Dataset::new(*t),
        })
        .collect()
}

pub fn cohort_scope_deletes_within_cohort_only(h: &dyn Harness) {
    let (p1, p2, p3) = (patient("p1", "Alpha"), patient("p2", "Beta"), patient("p3", "Gamma"));
    let (o1, o2, o3) = (bulk_obs("o1", Some("p1")), bulk_obs("o2", Some("p1")), bulk_obs("o3", Some("p2")));
    let (o4, o5) = (bulk_obs("o4", Some("p3")), bulk_obs("o5", None));
    let both = bulk_scopes(&["Patient", "Observation"]);
    let mut dest = h.open();
    let all =
        [p1.clone(), p2.clone(), p3.clone(), o1.clone(), o2.clone(), o3.clone(), o4.clone(), o5.clone()];
    let r1 =
        land(&mut *dest, Method::FullLoad, &compare(), &all, run_scope(&["p1", "p2", "p3"], both.clone()))
            .unwrap()
            .run_id;
    // The Observation file failed: its cohort scope is a gap, nothing of it is deleted.
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &[p1.clone(), p2.clone(), p3.clone(), o1.clone()],
        run_scope(&["p1", "p2", "p3"], bulk_scopes(&["Patient"])),
    )
    .unwrap();
    assert_eq!((m.deleted, m.kept, m.cohort_exits), (0, 4, 0));
    // p3 left the Group; o2, o3 and the patient-less o5 vanished at the source.
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &compare(),
        &[p1.clone(), p2.clone(), o1.clone()],
        run_scope(&["p1", "p2"], both.clone()),
    )
    .unwrap();
    let r3 = m.run_id.clone();
    assert_eq!((m.deleted, m.kept, m.cohort_exits), (3, 2, 1));
    assert_eq!(
        h.changes(&r3),
        sorted(vec![
            change("D", "Observation", "o2", Some(&o2), None),
            change("D", "Observation", "o3", Some(&o3), None),
            change("D", "Observation", "o5", Some(&o5), None),
        ])
    );
    assert_eq!(h.exits(), vec!["p3".to_string()]);
    let r2 = h.runs()[1].run_id.clone();
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r3),
            landed(&p2, &r1, &r3),
            landed(&p3, &r1, &r2),
            landed(&o1, &r1, &r3),
            landed(&o4, &r1, &r1),
        ])
    );
    // With `on_cohort_exit = delete` the exit's rows go too.
    let delete = LandOptions { on_cohort_exit: OnCohortExit::Delete, ..compare() };
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &delete,
        &[p1.clone(), p2.clone(), o1.clone()],
        run_scope(&["p1", "p2"], both),
    )
    .unwrap();
    assert_eq!((m.deleted, m.kept, m.cohort_exits), (2, 0, 1));
    assert_eq!(
        h.changes(&m.run_id),
        sorted(vec![
            change("D", "Observation", "o4", Some(&o4), None),
            change("D", "Patient", "p3", Some(&p3), None)
        ])
    );
}
