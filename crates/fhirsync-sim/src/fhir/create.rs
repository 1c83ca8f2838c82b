//! `POST {base}/{Type}`: create, for the types Epic advertises it on (R4: AllergyIntolerance,
//! BodyStructure, Communication, ConceptMap, Condition, DocumentReference, Observation, Patient,
//! Procedure, QuestionnaireResponse, ServiceRequest; STU3: AllergyIntolerance, Condition,
//! DocumentReference, Goal, Observation, Patient; DSTU2: none). Answers 201 with `Location`
//! and an empty body (the sandbox returned none); the resource is stored in the overlay so later
//! searches and reads see it. Other types answer 405 with an OperationOutcome.
//!
//! Epic rewrites what it stores (`epic-facts.md` §6, the sandbox's write probe of 2026-04-28);
//! so does the simulator in its Epic profile, and a read-back shows it:
//! - **Patient**: the client's identifiers are dropped and Epic's own CEID, EPIC, EXTERNAL, FHIR,
//!   FHIR STU3 and INTERNAL take their place (no MRN, no SSN, as in the probe); `meta.security`
//!   gains PATRPT "patient reported" and UNCERTREL "uncertain reliability"; the names get a
//!   `text`, prefixes are upper-cased and an `official` name is repeated as `usual`; telecom is
//!   dropped; the legal-sex and sex-for-clinical-use extensions are added from `gender`.
//! - **Condition**: category `encounter-diagnosis` (or none) becomes `problem-list-item`;
//!   clinical/verification statuses get display and text; `code.text` is dropped when codings
//!   are present; `encounter` is dropped; `subject` gets Epic's display ("Lin, Derrick").
//! - **Observation**: the category is kept (display normalised, text added), but the code's
//!   display text becomes the flowsheet row's name (`BP` for a blood-pressure panel, `Pulse`,
//!   `Temp`, …; unknown codes: the submitted text upper-cased) and a flowsheet-row coding is
//!   prepended.
//!
//! Epic has no conditional create, and refuses duplicates: an AllergyIntolerance or Condition
//! with the same code (a shared `system|code` coding, or the same text when no coding is sent)
//! as one already on the patient's chart (generated, added, or created earlier; encounter
//! diagnoses are not "on the chart" for this check) answers **400** with a fatal 59141 "An
//! attempt was made to create a duplicate record." (400 as Epic answers its other business-rule
//! failures, 59159). The generic SMART profile stores creates as sent and checks no duplicates.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::FhirState;
use super::catalog::{self, Dataset, TAG_CREATED};
use super::config::ServerProfile;
use super::data::created_identifiers;
use super::ids::IdParts;
use super::overlay::Added;
use super::records::patient_id_of;
use super::routes::Call;
use super::wire::{self, Issue};
use crate::{Error, Result};

/// Epic's internal flowsheet-row code system.
const OID_FLOWSHEET: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679";
/// Code system of Epic's sex values.
const OID_SEX: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.10.698084.130.657370.19999000";
/// Code system of `meta.security` labels.
const V3_OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// Flowsheet rows by LOINC code: `(loinc, row id, row name)`.
const FLOWSHEET_ROWS: &[(&str, &str, &str)] = &[
    ("85354-9", "5", "BP"),
    ("55284-4", "5", "BP"),
    ("8480-6", "5", "BP"),
    ("8462-4", "5", "BP"),
    ("8867-4", "8", "Pulse"),
    ("8310-5", "6", "Temp"),
    ("9279-1", "9", "Resp"),
    ("29463-7", "14", "Weight"),
    ("8302-2", "11", "Height"),
    ("2708-6", "10", "SpO2"),
    ("59408-5", "10", "SpO2"),
    ("39156-5", "301070", "BMI"),
];

fn invalid(call: &Call, text: &str) -> Response {
    wire::error(
        StatusCode::BAD_REQUEST,
        call.format,
        &[Issue::new(
            "fatal",
            "structure",
            "4100",
            "The resource could not be parsed or failed basic FHIR validation rules.",
        )
        .with_diagnostics(text)],
    )
}

/// The patient a resource belongs to (`subject` or `patient` reference).
pub(crate) fn patient_of(resource: &Value) -> Option<String> {
    ["subject", "patient"]
        .iter()
        .filter_map(|k| resource.get(*k)?.get("reference")?.as_str())
        .find(|r| r.contains("Patient/") || !r.contains('/'))
        .map(|r| patient_id_of(r).to_string())
}

/// `(system, code)` of the codings of the CodeableConcept `cc`.
fn codings(cc: &Value) -> Vec<(Option<&str>, &str)> {
    cc.get("coding")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c.get("system").and_then(Value::as_str), c.get("code")?.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Texts a CodeableConcept can be recognised by: its text and its codings' displays.
fn texts(cc: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        cc.get("text").and_then(Value::as_str).map(str::to_lowercase).into_iter().collect();
    if let Some(a) = cc.get("coding").and_then(Value::as_array) {
        out.extend(a.iter().filter_map(|c| c.get("display")?.as_str().map(str::to_lowercase)));
    }
    out
}

/// True when the CodeableConcepts `new` and `old` name the same thing (module docs).
fn same_code(new: &Value, old: &Value) -> bool {
    let wanted = codings(new);
    if !wanted.is_empty() {
        let have = codings(old);
        return wanted.iter().any(|w| have.contains(w));
    }
    match new.get("text").and_then(Value::as_str) {
        Some(t) => texts(old).contains(&t.to_lowercase()),
        None => false,
    }
}

/// Category codes of a resource.
fn category_codes(v: &Value) -> Vec<&str> {
    match v.get("category") {
        Some(Value::Array(a)) => a.iter().flat_map(codings).map(|(_, c)| c).collect(),
        Some(cc @ Value::Object(_)) => codings(cc).into_iter().map(|(_, c)| c).collect(),
        _ => Vec::new(),
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

impl FhirState {
    /// Stores a new resource (assigning a fresh Epic-shaped id); returns the id.
    pub(crate) fn insert_new(&self, ty: &str, value: Value) -> Result<String> {
        self.insert_with(ty, value, |_, _, _| {})
    }

    /// Stores a new resource; `finish(value, id, n)` may rewrite it once its id and creation
    /// counter are known. Returns the id.
    fn insert_with(
        &self,
        ty: &str,
        mut value: Value,
        finish: impl FnOnce(&mut Value, &str, u32),
    ) -> Result<String> {
        let patient_id = patient_of(&value);
        if ty != "Patient" && catalog::patient_scoped(ty) {
            match &patient_id {
                Some(p) if self.patient_exists(p) => {}
                Some(p) => return Err(Error::UnknownPatient { id: p.clone() }),
                None => return Err(Error::MissingPatient { resource_type: ty.to_string() }),
            }
        }
        let n = self.overlay.next_counter();
        let id = self.generator.ids().encode(IdParts { tag: TAG_CREATED, patient: n, item: 0 });
        if let Some(obj) = value.as_object_mut() {
            obj.insert("id".into(), id.clone().into());
        }
        finish(&mut value, &id, n);
        self.overlay.add(Added { ty: ty.to_string(), id: id.clone(), patient_id, value: Arc::new(value) });
        Ok(id)
    }

    /// "Family, Given" of patient `id`, as Epic displays references.
    fn patient_display(&self, id: &str) -> Option<String> {
        if let Some(i) = self.patient_index(id) {
            return Some(self.generator.demographics(i).display());
        }
        let p = self.overlay.find_added("Patient", id)?.value;
        let family = p.pointer("/name/0/family").and_then(Value::as_str).unwrap_or("");
        let given: Vec<&str> = p
            .pointer("/name/0/given")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Some(format!("{family}, {}", given.join(" ")))
    }

    /// The record of the patient's chart that `value` would duplicate, if any (module docs).
    fn duplicate_of(&self, ty: &str, value: &Value) -> Option<String> {
        if !matches!(ty, "AllergyIntolerance" | "Condition") {
            return None;
        }
        let code = value.get("code")?;
        let patient = patient_of(value)?;
        let mut segs = Vec::new();
        if let Some(i) = self.patient_index(&patient) {
            for d in Dataset::of_type(FhirVersion::R4, ty).filter(|d| *d != Dataset::EncounterDiagnoses) {
                self.dataset_segments(FhirVersion::R4, i, d, &mut segs);
            }
        }
        let generated = self.materialise(FhirVersion::R4, &segs, 0, usize::MAX);
        let added = self.overlay.added(ty, Some(&patient)).into_iter().map(|a| a.value);
        generated
            .into_iter()
            .chain(added)
            .filter(|r| !category_codes(r).contains(&"encounter-diagnosis"))
            .find(|r| r.get("code").is_some_and(|c| same_code(code, c)))
            .and_then(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
    }

    /// Rewrites a created resource as Epic stores it (module docs).
    fn epic_alter(&self, ty: &str, value: &mut Value, id: &str, n: u32) {
        let display = patient_of(value).and_then(|p| self.patient_display(&p));
        let Some(obj) = value.as_object_mut() else { return };
        if let (Some(d), Some(Value::Object(subject))) = (display, obj.get_mut("subject")) {
            subject.insert("display".into(), d.into());
        }
        match ty {
            "Patient" => alter_patient(obj, self.generator.seed(), id, n),
            "Condition" => alter_condition(obj),
            "Observation" => alter_observation(obj, id),
            _ => {}
        }
    }
}

fn alter_patient(obj: &mut serde_json::Map<String, Value>, seed: u64, id: &str, n: u32) {
    obj.insert("identifier".into(), Value::Array(created_identifiers(seed, n, id)));
    obj.insert(
        "meta".into(),
        json!({"security": [
            {"system": V3_OBSERVATION_VALUE, "code": "PATRPT", "display": "patient reported"},
            {"system": V3_OBSERVATION_VALUE, "code": "UNCERTREL", "display": "uncertain reliability"},
        ]}),
    );
    obj.remove("telecom");
    if let Some(gender) = obj.get("gender").and_then(Value::as_str).map(str::to_string) {
        let sex = |url: &str, text: bool| {
            let mut cc = json!({"coding": [{"system": OID_SEX, "code": gender, "display": gender}]});
            if text {
                cc["text"] = upper_first(&gender).into();
            }
            json!({"valueCodeableConcept": cc, "url": url})
        };
        obj.insert(
            "extension".into(),
            json!([
                sex("http://open.epic.com/FHIR/StructureDefinition/extension/legal-sex", true),
                sex("http://open.epic.com/FHIR/StructureDefinition/extension/sex-for-clinical-use", false),
            ]),
        );
    }
    obj.entry("deceasedBoolean").or_insert(false.into());
    if let Some(Value::Array(names)) = obj.get_mut("name") {
        for name in names.iter_mut() {
            let Some(n) = name.as_object_mut() else { continue };
            if let Some(Value::Array(prefix)) = n.get_mut("prefix") {
                for p in prefix.iter_mut() {
                    if let Some(s) = p.as_str() {
                        *p = s.to_uppercase().into();
                    }
                }
            }
            let words = |k: &str| -> Vec<String> {
                n.get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default()
            };
            let mut text: Vec<String> =
                words("prefix").iter().map(|p| upper_first(&p.to_lowercase())).collect();
            text.extend(words("given"));
            text.extend(n.get("family").and_then(Value::as_str).map(str::to_string));
            n.insert("text".into(), text.join(" ").into());
        }
        let usual = names.iter().find(|n| n["use"] == "official").cloned();
        if let Some(mut usual) = usual
            && !names.iter().any(|n| n["use"] == "usual")
        {
            usual["use"] = "usual".into();
            names.push(usual);
        }
    }
}

fn alter_condition(obj: &mut serde_json::Map<String, Value>) {
    let problem = json!([{
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item", "display": "Problem List Item"}],
        "text": "Problem List Item",
    }]);
    let keep = obj.get("category").is_some_and(|c| {
        let v = Value::Object(serde_json::Map::from_iter([("category".to_string(), c.clone())]));
        let codes = category_codes(&v);
        !codes.is_empty() && !codes.contains(&"encounter-diagnosis")
    });
    if !keep {
        obj.insert("category".into(), problem);
    }
    for (key, system) in [
        ("clinicalStatus", "http://terminology.hl7.org/CodeSystem/condition-clinical"),
        ("verificationStatus", "http://terminology.hl7.org/CodeSystem/condition-ver-status"),
    ] {
        let Some(Value::Object(cc)) = obj.get_mut(key) else { continue };
        let Some(Value::Array(coding)) = cc.get_mut("coding") else { continue };
        let mut text = None;
        for c in coding.iter_mut().filter(|c| c["system"] == system) {
            let display = upper_first(c["code"].as_str().unwrap_or(""));
            c["version"] = "4.0.0".into();
            c["display"] = display.clone().into();
            text = Some(display);
        }
        if let Some(t) = text {
            cc.insert("text".into(), t.into());
        }
    }
    if let Some(Value::Object(code)) = obj.get_mut("code")
        && code.get("coding").and_then(Value::as_array).is_some_and(|c| !c.is_empty())
    {
        code.remove("text");
    }
    obj.remove("encounter");
}

fn alter_observation(obj: &mut serde_json::Map<String, Value>, id: &str) {
    if let Some(Value::Array(categories)) = obj.get_mut("category") {
        for cat in categories.iter_mut() {
            let mut text = None;
            if let Some(Value::Array(coding)) = cat.get_mut("coding") {
                for c in coding.iter_mut() {
                    let display = match c["code"].as_str() {
                        Some("vital-signs") => Some("Vital Signs"),
                        Some("laboratory") => Some("Laboratory"),
                        Some("social-history") => Some("Social History"),
                        _ => None,
                    };
                    if let Some(d) = display {
                        c["display"] = d.into();
                        text = Some(d);
                    }
                }
            }
            if let (Some(t), Some(cat)) = (text, cat.as_object_mut()) {
                cat.insert("text".into(), t.into());
            }
        }
    }
    let Some(Value::Object(code)) = obj.get_mut("code") else { return };
    let loinc = codings(&Value::Object(code.clone()))
        .into_iter()
        .find(|(s, _)| *s == Some("http://loinc.org"))
        .map(|(_, c)| c.to_string());
    let row = loinc.as_deref().and_then(|l| FLOWSHEET_ROWS.iter().find(|r| r.0 == l));
    let (row_id, name) = match row {
        Some(&(_, row_id, name)) => (row_id.to_string(), name.to_string()),
        None => {
            let text = code
                .get("text")
                .and_then(Value::as_str)
                .or_else(|| code.get("coding")?.get(0)?.get("display")?.as_str())
                .unwrap_or("flowsheet row");
            (format!("{}", 1_000 + super::rng::hash_str(id) % 9_000), text.to_uppercase())
        }
    };
    let flowsheet = json!({"system": OID_FLOWSHEET, "code": row_id, "display": name});
    match code.get_mut("coding") {
        Some(Value::Array(coding)) => coding.insert(0, flowsheet),
        _ => {
            code.insert("coding".into(), json!([flowsheet]));
        }
    }
    code.insert("text".into(), name.into());
}

/// Handles a create.
pub(crate) fn create(call: &Call, ty: &str, body: &[u8]) -> Response {
    if !catalog::creatable(call.version, ty) {
        return wire::error(
            StatusCode::METHOD_NOT_ALLOWED,
            call.format,
            &[Issue::new(
                "fatal",
                "not-supported",
                "4100",
                "The resource request contained an invalid interaction.",
            )
            .with_diagnostics(format!("{ty}.Create is not supported on {}", call.version))],
        );
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return invalid(call, "The body is not a JSON object."),
        Err(e) => return invalid(call, &format!("The body is not valid JSON: {e}")),
    };
    if value.get("resourceType").and_then(Value::as_str) != Some(ty) {
        return invalid(call, &format!("resourceType must be {ty}"));
    }
    let fhir = &call.st.fhir;
    let epic = fhir.config.profile == ServerProfile::Epic;
    if epic && let Some(existing) = fhir.duplicate_of(ty, &value) {
        return wire::error(
            StatusCode::BAD_REQUEST,
            call.format,
            &[Issue::duplicate(format!("The patient's chart already has this {ty}: {ty}/{existing}."))],
        );
    }
    let stored = fhir.insert_with(ty, value, |v, id, n| {
        if epic {
            fhir.epic_alter(ty, v, id, n);
        }
    });
    match stored {
        Ok(id) => {
            let location = format!("{}/{ty}/{id}", call.base);
            let mut resp = StatusCode::CREATED.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => invalid(call, &e.to_string()),
    }
}

impl FhirState {
    /// Every resource of type `ty` created so far (by `POST` or [`FhirState::add_resource`]),
    /// oldest first, as first stored (later edits not applied); deleted ones are left out.
    pub fn created(&self, ty: &str) -> Vec<Value> {
        self.overlay
            .added(ty, None)
            .into_iter()
            .filter(|a| !matches!(self.overlay.fate(ty, &a.id), super::overlay::Fate::Deleted))
            .map(|a| (*a.value).clone())
            .collect()
    }
}
