//! Clinical resources of one patient, shaped per FHIR version.
//!
//! Version differences reproduced: DSTU2 uses `MedicationOrder`, a single `category`, `patient`
//! instead of `subject` on Condition and plain-string statuses; STU3 uses the old
//! `hl7.org/fhir/*-category` code systems and string statuses; R4 uses CodeableConcept statuses.

use fhirsync_core::FhirVersion;
use serde_json::{Map, Value, json};

use super::codes::{self, Measure};
use super::date_before;
use crate::fhir::catalog::Dataset;
use crate::fhir::rng::Rng;

/// Epic's internal flowsheet-row code system (appears next to LOINC on vitals).
const OID_FLOWSHEET: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679";
/// Epic's document-type code system.
const OID_DOC_TYPE: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.10.726418.8";

/// What every item of one patient shares.
pub(super) struct Ctx<'a> {
    pub id: String,
    pub patient_id: &'a str,
    pub patient_name: &'a str,
    pub version: FhirVersion,
    pub days_ago: u64,
    /// Encounter this item belongs to (absent on DSTU2, which has no Encounter).
    pub encounter_id: Option<String>,
    /// Lab Observations a DiagnosticReport summarises.
    pub results: Vec<String>,
}

impl Ctx<'_> {
    /// Adds `encounter` (or `key`) referencing the item's Encounter, when there is one.
    fn put_encounter(&self, m: &mut Map<String, Value>) {
        if let Some(e) = &self.encounter_id {
            m.insert("encounter".into(), json!({"reference": format!("Encounter/{e}")}));
        }
    }
    fn patient_ref(&self) -> Value {
        json!({"reference": format!("Patient/{}", self.patient_id), "display": self.patient_name})
    }
    fn date(&self) -> String {
        date_before(self.days_ago)
    }
    fn date_time(&self, r: &mut Rng) -> String {
        format!("{}T{:02}:{:02}:00Z", self.date(), r.range(7, 20), r.below(60))
    }
    fn r4(&self) -> bool {
        self.version == FhirVersion::R4
    }
    /// Category element: an array from STU3 on, a single CodeableConcept on DSTU2.
    fn category(&self, r4_system: &str, old_system: &str, code: &str, display: &str) -> Value {
        let system = if self.r4() { r4_system } else { old_system };
        let cc = json!({"coding": [{"system": system, "code": code, "display": display}], "text": display});
        if self.version == FhirVersion::Dstu2 { cc } else { json!([cc]) }
    }
}

fn base(resource_type: &str, ctx: &Ctx<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("resourceType".into(), resource_type.into());
    m.insert("id".into(), ctx.id.clone().into());
    m
}

fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.insert(key.to_string(), value);
}

/// Item of `dataset` for `ctx`.
pub(super) fn generate(dataset: Dataset, ctx: &Ctx<'_>, r: &mut Rng) -> Value {
    let m = match dataset {
        Dataset::Vitals => measurement(ctx, r, codes::VITALS, "vital-signs", "Vital Signs", true),
        Dataset::Labs => measurement(ctx, r, codes::LABS, "laboratory", "Laboratory", false),
        Dataset::SocialHistory => social(ctx, r),
        Dataset::Problems => condition(ctx, r, "problem-list-item", "Problem List Item"),
        Dataset::EncounterDiagnoses => condition(ctx, r, "encounter-diagnosis", "Encounter Diagnosis"),
        Dataset::HealthConcerns => condition(ctx, r, "health-concern", "Health Concern"),
        Dataset::Encounters => encounter(ctx, r),
        Dataset::Medications => medication(ctx, r),
        Dataset::Allergies => allergy(ctx, r),
        Dataset::Procedures => procedure(ctx, r),
        Dataset::Immunizations => immunization(ctx, r),
        Dataset::Reports => report(ctx, r),
        Dataset::Documents => document(ctx, r),
        Dataset::CarePlansLongitudinal => care_plan(ctx, r, CarePlanKind::Longitudinal),
        Dataset::CarePlansEncounter => care_plan(ctx, r, CarePlanKind::Encounter),
        Dataset::CarePlansAssessPlan => care_plan(ctx, r, CarePlanKind::AssessPlan),
        Dataset::CareTeams => care_team(ctx, r),
    };
    Value::Object(m)
}

fn observation(
    ctx: &Ctx<'_>,
    code: &str,
    display: &str,
    category: &str,
    cat_display: &str,
) -> Map<String, Value> {
    let mut m = base("Observation", ctx);
    put(&mut m, "status", "final".into());
    put(
        &mut m,
        "category",
        ctx.category(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "http://hl7.org/fhir/observation-category",
            category,
            cat_display,
        ),
    );
    put(
        &mut m,
        "code",
        json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display}),
    );
    put(&mut m, "subject", ctx.patient_ref());
    ctx.put_encounter(&mut m);
    m
}

fn measurement(
    ctx: &Ctx<'_>,
    r: &mut Rng,
    table: &[Measure],
    cat: &str,
    cat_display: &str,
    vital: bool,
) -> Map<String, Value> {
    let &(code, display, unit, lo, hi, decimals) = r.pick(table);
    let mut m = observation(ctx, code, display, cat, cat_display);
    if vital
        && let Some(c) = m.get_mut("code").and_then(|c| c.get_mut("coding")).and_then(Value::as_array_mut)
    {
        c.insert(
            0,
            json!({"system": OID_FLOWSHEET, "code": format!("{}", 5 + r.below(30)), "display": display}),
        );
    }
    let when = ctx.date_time(r);
    let value = r.decimal(lo, hi, decimals);
    let number = if decimals == 0 { json!(value as i64) } else { json!(value) };
    put(&mut m, "effectiveDateTime", when.clone().into());
    put(&mut m, "issued", when.into());
    put(
        &mut m,
        "valueQuantity",
        json!({"value": number, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}),
    );
    if !vital {
        let flag = if value > hi - (hi - lo) * 0.1 { "H" } else { "N" };
        put(
            &mut m,
            "interpretation",
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]}]),
        );
    }
    m
}

fn social(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(code, display, answer, answer_display) = r.pick(codes::SOCIAL);
    let mut m = observation(ctx, code, display, "social-history", "Social History");
    put(&mut m, "effectiveDateTime", ctx.date().into());
    put(
        &mut m,
        "valueCodeableConcept",
        json!({"coding": [{"system": "http://snomed.info/sct", "code": answer, "display": answer_display}], "text": answer_display}),
    );
    m
}

fn condition(ctx: &Ctx<'_>, r: &mut Rng, category: &str, display: &str) -> Map<String, Value> {
    let &(icd, snomed, text) = r.pick(codes::CONDITIONS);
    let active = r.chance(70);
    let mut m = base("Condition", ctx);
    let status = if active { "active" } else { "resolved" };
    if ctx.r4() {
        put(
            &mut m,
            "clinicalStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}], "text": status}),
        );
        put(
            &mut m,
            "verificationStatus",
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}], "text": "Confirmed"}),
        );
    } else {
        put(&mut m, "clinicalStatus", status.into());
        put(&mut m, "verificationStatus", "confirmed".into());
    }
    put(
        &mut m,
        "category",
        ctx.category(
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "http://hl7.org/fhir/condition-category",
            category,
            display,
        ),
    );
    put(
        &mut m,
        "code",
        json!({"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd, "display": text},
            {"system": "http://snomed.info/sct", "code": snomed, "display": text},
        ], "text": text}),
    );
    let subject_key = if ctx.version == FhirVersion::Dstu2 { "patient" } else { "subject" };
    put(&mut m, subject_key, ctx.patient_ref());
    if category == "encounter-diagnosis" {
        ctx.put_encounter(&mut m);
    }
    put(&mut m, "onsetDateTime", ctx.date().into());
    let recorded_key = match ctx.version {
        FhirVersion::R4 => "recordedDate",
        FhirVersion::Stu3 => "assertedDate",
        FhirVersion::Dstu2 => "dateRecorded",
    };
    put(&mut m, recorded_key, ctx.date().into());
    if !active && ctx.version != FhirVersion::Dstu2 {
        put(&mut m, "abatementDateTime", date_before(ctx.days_ago.saturating_sub(30)).into());
    }
    m
}

fn encounter(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(class, class_display, ty) = r.pick(codes::ENCOUNTER_CLASSES);
    let mut m = base("Encounter", ctx);
    let start = ctx.date_time(r);
    put(
        &mut m,
        "identifier",
        json!([{"use": "usual", "system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8", "value": format!("{}", 27_000_000 + r.below(1_000_000))}]),
    );
    put(&mut m, "status", "finished".into());
    put(
        &mut m,
        "class",
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class, "display": class_display}),
    );
    put(
        &mut m,
        "type",
        json!([{"coding": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.10.698084.30", "code": format!("{}", 100 + r.below(200)), "display": ty}], "text": ty}]),
    );
    put(&mut m, "subject", ctx.patient_ref());
    put(&mut m, "period", json!({"start": start, "end": start}));
    m
}

fn medication(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(rxnorm, text) = r.pick(codes::MEDICATIONS);
    let dstu2 = ctx.version == FhirVersion::Dstu2;
    let mut m = base(if dstu2 { "MedicationOrder" } else { "MedicationRequest" }, ctx);
    put(&mut m, "status", if r.chance(60) { "active" } else { "completed" }.into());
    if !dstu2 {
        put(&mut m, "intent", "order".into());
        put(
            &mut m,
            "category",
            json!([{"coding": [{"system": if ctx.r4() { "http://terminology.hl7.org/CodeSystem/medicationrequest-category" } else { "http://hl7.org/fhir/medication-request-category" }, "code": "outpatient", "display": "Outpatient"}], "text": "Outpatient"}]),
        );
    }
    put(
        &mut m,
        "medicationCodeableConcept",
        json!({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm, "display": text}], "text": text}),
    );
    put(&mut m, if dstu2 { "patient" } else { "subject" }, ctx.patient_ref());
    ctx.put_encounter(&mut m);
    put(&mut m, if dstu2 { "dateWritten" } else { "authoredOn" }, ctx.date().into());
    let dose = format!("Take 1 tablet by mouth {} daily.", r.range(1, 3));
    put(&mut m, "dosageInstruction", json!([{"text": dose}]));
    m
}

fn allergy(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(snomed, text, category) = r.pick(codes::ALLERGIES);
    let mut m = base("AllergyIntolerance", ctx);
    let code = json!({"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": text}], "text": text});
    match ctx.version {
        FhirVersion::R4 => {
            put(
                &mut m,
                "clinicalStatus",
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}),
            );
            put(&mut m, "category", json!([category]));
            put(&mut m, "code", code);
            put(&mut m, "recordedDate", ctx.date().into());
        }
        FhirVersion::Stu3 => {
            put(&mut m, "clinicalStatus", "active".into());
            put(&mut m, "category", json!([category]));
            put(&mut m, "code", code);
            put(&mut m, "assertedDate", ctx.date().into());
        }
        FhirVersion::Dstu2 => {
            put(&mut m, "status", "active".into());
            put(&mut m, "category", category.into());
            put(&mut m, "substance", code);
            put(&mut m, "recordedDate", ctx.date().into());
        }
    }
    put(&mut m, "patient", ctx.patient_ref());
    put(
        &mut m,
        "reaction",
        json!([{"manifestation": [{"text": *r.pick(&["Hives", "Rash", "Anaphylaxis", "Nausea"])}]}]),
    );
    m
}

fn procedure(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(snomed, text) = r.pick(codes::PROCEDURES);
    let mut m = base("Procedure", ctx);
    put(&mut m, "status", "completed".into());
    put(
        &mut m,
        "code",
        json!({"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": text}], "text": text}),
    );
    put(&mut m, "subject", ctx.patient_ref());
    ctx.put_encounter(&mut m);
    put(&mut m, "performedDateTime", ctx.date_time(r).into());
    m
}

fn immunization(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(cvx, text) = r.pick(codes::VACCINES);
    let mut m = base("Immunization", ctx);
    put(&mut m, "status", "completed".into());
    put(
        &mut m,
        "vaccineCode",
        json!({"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx, "display": text}], "text": text}),
    );
    put(&mut m, "patient", ctx.patient_ref());
    match ctx.version {
        FhirVersion::R4 => {
            put(&mut m, "occurrenceDateTime", ctx.date().into());
            put(&mut m, "primarySource", true.into());
        }
        FhirVersion::Stu3 => {
            put(&mut m, "notGiven", false.into());
            put(&mut m, "date", ctx.date().into());
            put(&mut m, "primarySource", true.into());
        }
        FhirVersion::Dstu2 => {
            put(&mut m, "wasNotGiven", false.into());
            put(&mut m, "reported", false.into());
            put(&mut m, "date", ctx.date().into());
        }
    }
    put(&mut m, "lotNumber", format!("L{}", r.range(10_000, 99_999)).into());
    m
}

fn report(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(loinc, text) = r.pick(codes::REPORTS);
    let mut m = base("DiagnosticReport", ctx);
    put(&mut m, "status", "final".into());
    let system = if ctx.r4() {
        "http://terminology.hl7.org/CodeSystem/v2-0074"
    } else {
        "http://hl7.org/fhir/v2/0074"
    };
    let cat = json!({"coding": [{"system": system, "code": "LAB", "display": "Laboratory"}], "text": "Lab"});
    put(&mut m, "category", if ctx.r4() { json!([cat]) } else { cat });
    put(
        &mut m,
        "code",
        json!({"coding": [{"system": "http://loinc.org", "code": loinc, "display": text}], "text": text}),
    );
    put(&mut m, "subject", ctx.patient_ref());
    ctx.put_encounter(&mut m);
    let when = ctx.date_time(r);
    put(&mut m, "effectiveDateTime", when.clone().into());
    put(&mut m, "issued", when.into());
    if !ctx.results.is_empty() {
        let refs: Vec<Value> =
            ctx.results.iter().map(|id| json!({"reference": format!("Observation/{id}")})).collect();
        put(&mut m, "result", Value::Array(refs));
    }
    m
}

fn document(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let &(loinc, text) = r.pick(codes::DOCUMENTS);
    let mut m = base("DocumentReference", ctx);
    put(&mut m, "status", "current".into());
    if ctx.version != FhirVersion::Dstu2 {
        put(&mut m, "docStatus", "final".into());
    }
    put(
        &mut m,
        "type",
        json!({"coding": [
            {"system": OID_DOC_TYPE, "code": format!("{}", r.range(1, 20)), "display": text},
            {"system": "http://loinc.org", "code": loinc, "display": text},
        ], "text": text}),
    );
    if ctx.r4() {
        put(
            &mut m,
            "category",
            json!([{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}], "text": "Clinical Note"}]),
        );
    }
    put(&mut m, "subject", ctx.patient_ref());
    let when = ctx.date_time(r);
    put(&mut m, if ctx.r4() { "date" } else { "indexed" }, when.clone().into());
    let binary = format!("Binary/{}", ctx.id);
    put(
        &mut m,
        "content",
        json!([{"attachment": {"contentType": "text/html", "url": binary}, "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "mimeType Sufficient"}}]),
    );
    put(&mut m, "context", json!({"period": {"start": when}}));
    m
}

/// The three CarePlan categories Epic's R4 CarePlan.Search accepts.
#[derive(Debug, Clone, Copy)]
enum CarePlanKind {
    /// SNOMED 38717003, longitudinal care plan.
    Longitudinal,
    /// SNOMED 734163000, encounter-level care plan.
    Encounter,
    /// US Core assess-plan, assessment and plan of treatment.
    AssessPlan,
}

fn care_plan(ctx: &Ctx<'_>, r: &mut Rng, kind: CarePlanKind) -> Map<String, Value> {
    let (system, code, display, text) = match kind {
        CarePlanKind::Longitudinal => {
            ("http://snomed.info/sct", "38717003", "Longitudinal care plan", "Longitudinal Care Plan")
        }
        CarePlanKind::Encounter => {
            ("http://snomed.info/sct", "734163000", "Care plan", "Encounter-Level Care Plan")
        }
        CarePlanKind::AssessPlan => (
            "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
            "assess-plan",
            "Assessment and Plan of Treatment",
            "Assessment and Plan of Treatment",
        ),
    };
    let &(_, _, problem) = r.pick(codes::CONDITIONS);
    let mut m = base("CarePlan", ctx);
    put(
        &mut m,
        "text",
        json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{text}: {problem}</div>")}),
    );
    put(&mut m, "status", if r.chance(70) { "active" } else { "completed" }.into());
    put(&mut m, "intent", "plan".into());
    put(
        &mut m,
        "category",
        json!([{"coding": [{"system": system, "code": code, "display": display}], "text": text}]),
    );
    put(&mut m, "title", format!("{text}: {problem}").into());
    put(&mut m, "subject", ctx.patient_ref());
    if matches!(kind, CarePlanKind::Encounter) {
        ctx.put_encounter(&mut m);
    }
    put(&mut m, "period", json!({"start": ctx.date()}));
    m
}

fn care_team(ctx: &Ctx<'_>, r: &mut Rng) -> Map<String, Value> {
    let mut m = base("CareTeam", ctx);
    put(&mut m, "status", "active".into());
    put(&mut m, "name", format!("Care team {}", r.range(1, 9)).into());
    put(&mut m, "subject", ctx.patient_ref());
    put(
        &mut m,
        "participant",
        json!([{
            "role": [{"coding": [{"system": "http://snomed.info/sct", "code": "446050000", "display": "Primary care physician"}], "text": "PCP - General"}],
            "member": {"reference": "Practitioner/eM5CWtq15N0WJeuCet5bJlQ3", "display": "Physician Family Medicine, MD"},
        }]),
    );
    m
}
