//! Builders for resources and events, and the per-destination read-back interface.

use std::collections::BTreeSet;

use fhirsync_core::{Dataset, FhirVersion, RawResource, RunScope, ScopeKey};
use fhirsync_land::{Destination, LandOptions, Method, RunMetrics, RunStart};

/// The endpoint all test resources come from.
pub const SOURCE: &str = "https://fhir.example/api/FHIR/R4";

/// One landed row, as read back from a destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Landed {
    pub resource_type: String,
    pub fhir_version: String,
    pub id: String,
    pub patient_id: Option<String>,
    pub dataset: String,
    pub source: String,
    pub content_hash: String,
    pub resource: String,
    pub first_seen_run: String,
    pub last_seen_run: String,
}

impl Landed {
    /// The row of a type table read back as text, in the column order `fhir_version, id,
    /// patient_id, dataset, source, content_hash, resource, first_seen_run, last_seen_run`.
    pub fn from_cells(resource_type: &str, cells: &[Option<String>]) -> Landed {
        let s = |i: usize| cells[i].clone().unwrap();
        Landed {
            resource_type: resource_type.to_string(),
            fhir_version: s(0),
            id: s(1),
            patient_id: cells[2].clone(),
            dataset: s(3),
            source: s(4),
            content_hash: s(5),
            resource: s(6),
            first_seen_run: s(7),
            last_seen_run: s(8),
        }
    }
}

/// One change record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub operation: String,
    pub resource_type: String,
    pub id: String,
    pub before_hash: Option<String>,
    pub after_hash: Option<String>,
}

/// One run record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub run_id: String,
    pub method: String,
    pub status: String,
}

/// How a test reads a destination back.
pub trait Harness {
    /// Opens a new destination instance on the same storage (like a new process would).
    fn open(&self) -> Box<dyn Destination>;
    /// Every landed row, sorted.
    fn rows(&self) -> Vec<Landed>;
    /// Change records of one run, sorted.
    fn changes(&self, run_id: &str) -> Vec<Change>;
    /// Patients currently flagged as having left the cohort, sorted.
    fn exits(&self) -> Vec<String>;
    /// Runs in start order.
    fn runs(&self) -> Vec<RunRow>;
    /// `columns` of every row of view table `table` as text, sorted.
    fn view_rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>>;
}

/// `Observation` for `patient` with a decimal value.
pub fn obs(id: &str, patient: &str, value: &str) -> RawResource {
    let json = format!(
        r#"{{"resourceType":"Observation","id":"{id}","status":"final","subject":{{"reference":"Patient/{patient}"}},"valueQuantity":{{"value":{value},"unit":"mmol/L"}}}}"#
    );
    RawResource::from_json(json, Some(patient.into()), lab(), FhirVersion::R4, SOURCE).unwrap()
}

/// `Patient` resource.
pub fn patient(id: &str, family: &str) -> RawResource {
    let json = format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{family}"}}]}}"#);
    RawResource::from_json(json, Some(id.into()), Dataset::new("Patient"), FhirVersion::R4, SOURCE).unwrap()
}

/// The lab dataset.
pub fn lab() -> Dataset {
    Dataset::with_category("Observation", "laboratory")
}

/// A scope of R4 data for `patient`.
pub fn scope(patient: &str, dataset: Dataset) -> ScopeKey {
    ScopeKey { fhir_version: FhirVersion::R4, patient_id: Some(patient.into()), dataset }
}

/// The two scopes (Patient, lab) of each patient.
pub fn scopes_of(patients: &[&str]) -> BTreeSet<ScopeKey> {
    patients.iter().flat_map(|p| [scope(p, Dataset::new("Patient")), scope(p, lab())]).collect()
}

/// A run scope with `cohort` and complete scopes.
pub fn run_scope(cohort: &[&str], complete: BTreeSet<ScopeKey>) -> RunScope {
    RunScope { cohort: cohort.iter().map(|s| s.to_string()).collect(), complete, gaps: 0 }
}

/// Begins, stages `resources` then marks `complete` done, commits.
pub fn land(
    dest: &mut dyn Destination,
    method: Method,
    options: &LandOptions,
    resources: &[RawResource],
    scope: RunScope,
) -> fhirsync_land::Result<RunMetrics> {
    land_with_views(dest, method, options, resources, scope, &[])
}

/// [`land`] that also materialises `views`.
pub fn land_with_views(
    dest: &mut dyn Destination,
    method: Method,
    options: &LandOptions,
    resources: &[RawResource],
    scope: RunScope,
    views: &[fhirsync_views::View],
) -> fhirsync_land::Result<RunMetrics> {
    dest.begin(method, options)?;
    dest.stage(resources)?;
    for s in &scope.complete {
        dest.scope_complete(s)?;
    }
    dest.commit(&scope, views, &serde_json::json!({"test": true}))
}

/// Completes the scopes of the `done` patients and commits with `cohort` (no views, an empty
/// report): how a staged run ends.
pub fn complete_and_commit(dest: &mut dyn Destination, cohort: &[&str], done: &[&str]) -> RunMetrics {
    for s in scopes_of(done) {
        dest.scope_complete(&s).unwrap();
    }
    dest.commit(&run_scope(cohort, scopes_of(done)), &[], &serde_json::json!({})).unwrap()
}

/// A run killed while staging: begins `method`, stages `saved` with the `complete` scopes and
/// checkpoints, stages `unsaved`, then drops the destination without committing. Returns how
/// the run began.
pub fn kill_after_checkpoint(
    h: &dyn Harness,
    method: Method,
    options: &LandOptions,
    saved: &[RawResource],
    complete: &BTreeSet<ScopeKey>,
    unsaved: &[RawResource],
) -> RunStart {
    let mut dest = h.open();
    let start = dest.begin(method, options).unwrap();
    dest.stage(saved).unwrap();
    for s in complete {
        dest.scope_complete(s).unwrap();
    }
    dest.checkpoint().unwrap();
    dest.stage(unsaved).unwrap();
    start
}

/// The expected landed row of `r` first seen in `first` and last seen in `last`.
pub fn landed(r: &RawResource, first: &str, last: &str) -> Landed {
    Landed {
        resource_type: r.resource_type.clone(),
        fhir_version: r.fhir_version.to_string(),
        id: r.id.clone(),
        patient_id: r.patient_id.clone(),
        dataset: r.dataset.to_string(),
        source: r.source.clone(),
        content_hash: r.hash.to_hex(),
        resource: r.json.to_string(),
        first_seen_run: first.into(),
        last_seen_run: last.into(),
    }
}

/// A change record for `op` on `id` from hash `before` to `after`.
pub fn change(
    op: &str,
    t: &str,
    id: &str,
    before: Option<&RawResource>,
    after: Option<&RawResource>,
) -> Change {
    Change {
        operation: op.into(),
        resource_type: t.into(),
        id: id.into(),
        before_hash: before.map(|r| r.hash.to_hex()),
        after_hash: after.map(|r| r.hash.to_hex()),
    }
}

/// Sorted copy.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// `Practitioner` resource: no patient, dataset without a patient scope.
pub fn practitioner(id: &str) -> RawResource {
    let json = format!(r#"{{"resourceType":"Practitioner","id":"{id}"}}"#);
    RawResource::from_json(json, None, Dataset::new("Practitioner"), FhirVersion::R4, SOURCE).unwrap()
}

/// The patient-less scope of the Practitioner dataset.
pub fn practitioner_scope() -> ScopeKey {
    ScopeKey { fhir_version: FhirVersion::R4, patient_id: None, dataset: Dataset::new("Practitioner") }
}
