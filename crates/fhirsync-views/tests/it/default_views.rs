//! The shipped default views flatten realistic Epic R4 resources (`tests/fixtures/epic/`).

use std::path::PathBuf;

use fhirsync_views::{ColumnType, DefaultViewSettings, View, default_views, default_views_with};
use serde_json::{Map, Value, json};

const PATIENT_ID: &str = "erXuFYUfucBZaryVksYEcMg3";
const ENCOUNTER_ID: &str = "elMz2mwjOYFGGbOGWYz3Ang3";
const PRACTITIONER_ID: &str = "eM5CWtq15N0WJeuCet5bJlQ3";

fn view(name: &str) -> View {
    default_views().into_iter().find(|v| v.name() == name).unwrap_or_else(|| panic!("no default view {name}"))
}

/// The resources of `tests/fixtures/epic/<fixture>.json` (an array).
fn fixture(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/epic/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// Runs the default view `name` over `tests/fixtures/epic/<fixture>.json` (an array of resources).
fn rows(name: &str, fixture_name: &str) -> Vec<Map<String, Value>> {
    rows_of(&view(name), &fixture(fixture_name))
}

/// Runs `view` over `resources`, one map of column → value per row.
fn rows_of(view: &View, resources: &[Value]) -> Vec<Map<String, Value>> {
    let name = view.name();
    let names: Vec<String> = view.columns().iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::new();
    for r in resources {
        for row in view.evaluate(r).unwrap_or_else(|e| panic!("{name} on {r}: {e}")) {
            assert_eq!(row.len(), names.len(), "row width");
            out.push(names.iter().cloned().zip(row).collect());
        }
    }
    out
}

/// Asserts that `row` has the given cells (other cells are not checked).
fn assert_cells(row: &Map<String, Value>, expected: Value) {
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(row.get(k), Some(v), "column {k}");
    }
}

/// The expected set of default views exists, one per common Epic resource, each keyed by `id`.
#[test]
fn default_view_catalogue() {
    let mut names: Vec<(String, String)> =
        default_views().iter().map(|v| (v.name().to_string(), v.resource().to_string())).collect();
    names.sort();
    let expected = [
        ("allergy_intolerance", "AllergyIntolerance"),
        ("condition", "Condition"),
        ("diagnostic_report", "DiagnosticReport"),
        ("document_reference", "DocumentReference"),
        ("encounter", "Encounter"),
        ("immunization", "Immunization"),
        ("medication_request", "MedicationRequest"),
        ("observation", "Observation"),
        ("observation_component", "Observation"),
        ("patient", "Patient"),
        ("procedure", "Procedure"),
    ];
    assert_eq!(names, expected.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());
    for v in default_views() {
        assert_eq!(v.columns()[0].name, "id");
        if v.resource() != "Patient" {
            assert!(v.columns().iter().any(|c| c.name == "patient_id"), "{} lacks patient_id", v.name());
        }
    }
}

/// Patient: MRN from the Epic identifier list, official name preferred, home address, extensions.
#[test]
fn patient_view() {
    let rows = rows("patient", "patient");
    assert_eq!(rows.len(), 2);
    assert_cells(
        &rows[0],
        json!({"id": PATIENT_ID, "mrn": "203713", "active": true, "family": "Lopez", "given": "Camila Maria",
            "gender": "female", "birth_date": "1987-09-12", "deceased": false, "deceased_date_time": null,
            "marital_status": "Married", "language": "en", "address_city": "GARLAND", "address_state": "TX",
            "address_line": "3268 West Johnson St., Apt 117", "phone": "469-555-5555",
            "email": "knixontestemail@epic.com", "legal_sex": "female", "birth_sex": "F", "race": "2131-1",
            "race_text": "Other", "ethnicity": "2135-2", "general_practitioner_id": PRACTITIONER_ID,
            "managing_organization_id": "enRyWnSP963FYDpoks4NHOA3"}),
    );
}

/// The MRN is the identifier Epic types "EPI" (there is no "MRN" type text at Epic): Jason
/// Argonaut's is 203675, among CEID, EPIC, EXTERNAL, FHIR, FHIR STU3, INTERNAL, MYCHARTLOGIN,
/// WPRINTERNAL and an untyped SSN.
#[test]
fn patient_mrn_is_epics_epi_identifier() {
    let rows = rows("patient", "patient");
    assert_cells(&rows[1], json!({"id": "eD.LxhDyX35TntF77l7etUA3", "mrn": "203675", "family": "Argonaut"}));
    let no_epi: Vec<Value> = fixture("patient")
        .into_iter()
        .map(|mut p| {
            let ids = p["identifier"].as_array_mut().unwrap();
            ids.retain(|i| i["type"]["text"] != "EPI");
            p
        })
        .collect();
    let rows = rows_of(&view("patient"), &no_epi);
    assert!(rows.iter().all(|r| r["mrn"] == Value::Null), "no other Epic identifier is taken for the MRN");
}

/// Other servers: an identifier typed "MRN" by text, or "MR" by HL7 v2-0203 code, is the MRN;
/// EPI wins over both.
#[test]
fn patient_mrn_of_other_servers() {
    let patient =
        |identifiers: Value| json!({"resourceType": "Patient", "id": "p", "identifier": identifiers});
    let resources = [
        patient(json!([{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "000-00-0000"},
            {"type": {"text": "MRN"}, "system": "urn:x:mrn", "value": "M1"}])),
        patient(
            json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:x:mrn", "value": "M2"}]),
        ),
        patient(json!([{"type": {"text": "MRN"}, "value": "M3"}, {"type": {"text": "EPI"}, "value": "E3"}])),
        patient(json!([{"type": {"coding": [{"system": "urn:other", "code": "MR"}]}, "value": "M4"}])),
    ];
    let mrns: Vec<Value> =
        rows_of(&view("patient"), &resources).into_iter().map(|r| r["mrn"].clone()).collect();
    assert_eq!(mrns, vec![json!("M1"), json!("M2"), json!("E3"), Value::Null]);
}

/// `[views] mrn_identifier`: the identifier of the configured system wins over EPI and MRN.
#[test]
fn patient_mrn_configured_system_wins() {
    let settings =
        DefaultViewSettings { mrn_identifier: Some("urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0".into()) };
    let views = default_views_with(&settings).expect("valid setting");
    let patient = views.into_iter().find(|v| v.name() == "patient").unwrap();
    let rows = rows_of(&patient, &fixture("patient"));
    assert_eq!(rows[0]["mrn"], "E4007");
    assert_eq!(rows[1]["mrn"], "E1000");
    // A configured system that a patient lacks falls back to EPI.
    let settings = DefaultViewSettings {
        mrn_identifier: Some("urn:oid:1.2.840.114350.1.13.999.2.7.5.737384.14".into()),
    };
    let patient = default_views_with(&settings).unwrap().into_iter().find(|v| v.name() == "patient").unwrap();
    let rows = rows_of(&patient, &fixture("patient"));
    assert_eq!((rows[0]["mrn"].clone(), rows[1]["mrn"].clone()), (json!("203713"), json!("203675")));
}

/// Observation: HL7 category chosen over Epic's, LOINC picked out, valueQuantity/valueCodeableConcept split.
#[test]
fn observation_view() {
    let rows = rows("observation", "observation");
    assert_eq!(rows.len(), 3);
    assert_cells(
        &rows[0],
        json!({"id": "eVgG2pOtqJ6PeMqkgmXnfoA3", "patient_id": PATIENT_ID, "encounter_id": ENCOUNTER_ID,
            "status": "final", "category": "laboratory", "category_text": "Lab", "code_text": "Glucose",
            "code_code": "1554-5", "loinc_code": "2345-7", "effective_date_time": "2019-05-28T14:01:00Z",
            "value_quantity": 95.5, "value_unit": "mg/dL", "value_ucum_code": "mg/dL", "value_string": null,
            "interpretation": "N", "reference_range_low": 70, "reference_range_high": 99,
            "specimen_id": "ecV2ALDYW7ROb7H1vFz93cg3", "performer_id": PRACTITIONER_ID, "component_count": 0,
            "has_member_ids": []}),
    );
    assert_cells(
        &rows[1],
        json!({"category": "vital-signs", "loinc_code": "85354-9", "value_quantity": null, "component_count": 2}),
    );
    assert_cells(
        &rows[2],
        json!({"category": "social-history", "effective_date_time": "2019-05-28", "value_code": "266919005",
            "value_code_text": "Never Smoker", "encounter_id": null}),
    );
}

/// Observation components: one row per blood-pressure component with its index.
#[test]
fn observation_component_view() {
    let rows = rows("observation_component", "observation");
    assert_eq!(rows.len(), 2, "only the BP panel has components");
    assert_cells(
        &rows[0],
        json!({"id": "eb6NjUBfSbeAxDjrjGmTj5g3", "component_index": 0, "loinc_code": "8480-6", "value_quantity": 118, "value_unit": "mm[Hg]"}),
    );
    assert_cells(&rows[1], json!({"component_index": 1, "loinc_code": "8462-4", "value_quantity": 76}));
}

/// Condition: statuses, problem-list category, ICD-10 and SNOMED codes picked by system.
#[test]
fn condition_view() {
    let rows = rows("condition", "condition");
    assert_cells(
        &rows[0],
        json!({"id": "eOCME3Vq9Y3F5a9bYlt3TEg3", "patient_id": PATIENT_ID, "clinical_status": "active",
            "verification_status": "confirmed", "category": "problem-list-item", "icd10_code": "I10",
            "snomed_code": "38341003", "code_text": "Essential hypertension", "onset_date_time": "2019-05-28",
            "recorder_id": PRACTITIONER_ID, "note": "Follow up in 3 months."}),
    );
}

/// Encounter: CSN identifier, class, period, location and provider keys.
#[test]
fn encounter_view() {
    let rows = rows("encounter", "encounter");
    assert_cells(
        &rows[0],
        json!({"id": ENCOUNTER_ID, "patient_id": PATIENT_ID, "identifier": "27558", "status": "finished",
            "class_code": "5", "type_text": "Appointment", "period_start": "2019-05-28T14:00:00Z",
            "period_end": "2019-05-28T14:30:00Z", "reason_text": "Hypertension", "participant_id": PRACTITIONER_ID,
            "location_id": "e4W4rmGe9QzuGm2Dy4NBqVc0KDe6yGld6HW95UuN-Qd03", "service_provider_id": "enRyWnSP963FYDpoks4NHOA3"}),
    );
}

/// MedicationRequest: Epic's medicationReference display, sig, first dose, dispense and refills.
#[test]
fn medication_request_view() {
    let rows = rows("medication_request", "medication_request");
    assert_cells(
        &rows[0],
        json!({"id": "eVp5P8ydx3Eb7cN.pWc0gVw3", "patient_id": PATIENT_ID, "status": "active", "intent": "order",
            "category": "community", "medication_id": "eY0wLfTZHQgUvHIAIs0m3yQ3",
            "medication_display": "lisinopril (PRINIVIL,ZESTRIL) 10 MG tablet", "medication_text": null,
            "authored_on": "2019-05-28", "requester_id": PRACTITIONER_ID,
            "dosage_text": "Take 1 tablet (10 mg total) by mouth daily.", "dose_value": 10, "dose_unit": "mg",
            "route": "Oral", "timing": "daily", "as_needed": false, "dispense_quantity": 90, "refills": 3}),
    );
}

/// AllergyIntolerance: category array, criticality, first reaction.
#[test]
fn allergy_intolerance_view() {
    let rows = rows("allergy_intolerance", "allergy_intolerance");
    assert_cells(
        &rows[0],
        json!({"patient_id": "e0w0LEDCYtfckT6N.CkJKCw3", "clinical_status": "active", "type": "allergy",
            "category": "medication", "criticality": "high", "code_code": "7980", "code_text": "Penicillins",
            "reaction_manifestation": "Rash", "reaction_severity": "moderate", "reaction_count": 2}),
    );
}

/// Procedure: CPT picked by system, performedPeriod split into start/end.
#[test]
fn procedure_view() {
    let rows = rows("procedure", "procedure");
    assert_cells(
        &rows[0],
        json!({"id": "eoVyb0T9Gn0qY1vT.iLpFxg3", "status": "completed", "category_text": "Ordered Procedures",
            "cpt_code": "93000", "snomed_code": null, "performed_date_time": null,
            "performed_start": "2019-05-28T14:05:00Z", "performed_end": "2019-05-28T14:15:00Z",
            "performer_id": PRACTITIONER_ID}),
    );
}

/// Immunization: CVX code, occurrence, lot, dose.
#[test]
fn immunization_view() {
    let rows = rows("immunization", "immunization");
    assert_cells(
        &rows[0],
        json!({"patient_id": "eAB3mDIBBcyUKviyzrxsnAw3", "status": "completed", "cvx_code": "141",
            "occurrence_date_time": "2019-10-15T10:30:00Z", "primary_source": true, "lot_number": "UJ123AA",
            "expiration_date": "2020-06-30", "site": "Left deltoid", "dose_value": 0.5, "dose_unit": "mL",
            "manufacturer": "Sanofi Pasteur", "performer_id": PRACTITIONER_ID}),
    );
}

/// DiagnosticReport: result observation keys as a collection column.
#[test]
fn diagnostic_report_view() {
    let rows = rows("diagnostic_report", "diagnostic_report");
    assert_cells(
        &rows[0],
        json!({"id": "eBmXmHSbWqzFWpZDXCnnq1w3", "category": "LAB", "loinc_code": "51990-0",
            "issued": "2019-05-28T19:17:41Z", "performer_id": "enRyWnSP963FYDpoks4NHOA3",
            "result_ids": ["eVgG2pOtqJ6PeMqkgmXnfoA3", "e0DRbbMC3V.dOZ5ZobDiBLw3"]}),
    );
}

/// DocumentReference: encounter from context, first attachment, attachment count.
#[test]
fn document_reference_view() {
    let rows = rows("document_reference", "document_reference");
    assert_cells(
        &rows[0],
        json!({"id": "eN2e6bY4sR1mJFVAOcNUcXg3", "patient_id": PATIENT_ID, "encounter_id": ENCOUNTER_ID,
            "status": "current", "doc_status": "final", "type_text": "Progress Notes", "loinc_type_code": "11506-3",
            "category": "clinical-note", "author_id": PRACTITIONER_ID, "content_type": "text/html",
            "attachment_url": "Binary/eX2WHGKjJZp9F7Zbd.JdvvA3", "attachment_count": 2}),
    );
}

/// Declared column types reach the API (landing creates typed columns from them).
#[test]
fn column_types() {
    let obs = view("observation");
    let ty = |n: &str| obs.columns().iter().find(|c| c.name == n).map(|c| (c.ty, c.collection));
    assert_eq!(ty("value_quantity"), Some((ColumnType::Decimal, false)));
    assert_eq!(ty("effective_date_time"), Some((ColumnType::DateTime, false)));
    assert_eq!(ty("component_count"), Some((ColumnType::Integer, false)));
    assert_eq!(ty("has_member_ids"), Some((ColumnType::String, true)));
}

/// A default view ignores resources of other types (no rows, no error).
#[test]
fn other_resource_types_yield_nothing() {
    assert!(view("observation").evaluate(&json!({"resourceType": "Patient", "id": "x"})).unwrap().is_empty());
}
