//! Epic's search rules (profile [`ServerProfile::Epic`], the default; see `epic-facts.md` §3.2,
//! §3.3, §3.5).
//!
//! - Patient-scoped types need `patient` or `subject` (403 OperationOutcome otherwise, as the
//!   sandbox answers); both naming different patients is 400/4112.
//! - `_id`-only types (Account, Binary, Medication, Organization, …, and RelatedPerson, whose R4
//!   statement declares only `_id` and `_count`) answer a search without `_id` with 400 and a
//!   fatal 4110 "No parameters are provided in the search request": parameters they do not know
//!   (such as `patient`) are ignored, which leaves no usable parameter. Never data, and never a
//!   silent empty result that a client could take for "this patient has none".
//! - `Patient` needs `_id`, `identifier` or a name: otherwise 400 with fatal 59159 (and 59100
//!   information for each ignored parameter); `birthdate`/`gender` alone match nothing.
//!   `identifier=system|value` matches only an identifier of that system; `identifier=value`
//!   matches any system. Unknown Patient parameters get a 59100 information issue, as the
//!   sandbox sends.
//! - `Observation` needs `category` or `code` (400/59108); unknown categories are 400/59111.
//! - R4 `CarePlan` needs `category` ("This is a required search parameter", R4 statement): 400
//!   with fatal 4111 without it; accepted are `38717003` (longitudinal), `734163000`
//!   (encounter-level) and `assess-plan`, anything else is 400/59111.
//! - Unknown parameters of other types are ignored silently (no 4122: the sandbox never sent
//!   it; the simulator chose "nothing" over a 59100 information issue there).
//! - Outside-Record exclusions (module `outside`): 59204 (and 59205 on Procedure) on every
//!   search of the eight clinical types of §3.5, with or without data.
//! - Licence (module `licence`): datasets the client's registration leaves out (`Type:category`)
//!   are dropped with a 59204 naming the category; a whole unlicensed type is a bare 403;
//!   narrowed datasets lose part of their records and carry an extra 59204.
//!
//! The issues travel in one OperationOutcome entry on the last page (module `bundle`). Profile
//! [`ServerProfile::GenericSmart`] keeps the patient and 4112 rules but drops the Epic-only ones:
//! no required category, no 4110, no Outside-Record issues, no outcome entries at all.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhirsync_core::FhirVersion;
use serde_json::Value;

use super::FhirState;
use super::catalog::{self, Dataset};
use super::config::ServerProfile;
use super::data::Demographics;
use super::licence::Licence;
use super::outside;
use super::records::{Seg, patient_id_of};
use super::wire::{self, Format, Issue};

/// Maximum Patient search results (Epic: more gives 4127).
const PATIENT_SEARCH_CAP: usize = 100;

/// Valid Observation categories (Epic R4 statement).
const OBSERVATION_CATEGORIES: &[&str] = &[
    "laboratory",
    "vital-signs",
    "social-history",
    "core-characteristics",
    "LDA",
    "LDA-property",
    "LDA-assessment",
    "functional-mental-status",
    "periodontal",
    "labor-delivery",
    "newborn-delivery",
    "obstetrics-gynecology",
    "survey",
    "sdoh",
    "imaging",
    "exam",
    "therapy",
    "activity",
    "procedure",
    "384821006",
    "118228005",
    "252275004",
    "275711006",
    "68793005",
    "395124008",
    "314076009",
    "19851009",
    "405825005",
];
/// Valid Condition categories.
const CONDITION_CATEGORIES: &[&str] = &[
    "problem-list-item",
    "encounter-diagnosis",
    "health-concern",
    "medical-history",
    "reason-for-visit",
    "infection",
    "genomics",
    "dental-finding",
];

/// Valid CarePlan categories (Epic R4 CarePlan.Search).
const CAREPLAN_CATEGORIES: &[&str] = &["38717003", "734163000", "assess-plan"];

/// A parsed search.
#[derive(Debug)]
pub(crate) struct SearchRequest<'a> {
    /// Base version.
    pub version: FhirVersion,
    /// Resource type.
    pub ty: &'a str,
    /// Parameters (without `_format`, `_count`, `sessionID`).
    pub params: &'a [(String, String)],
}

/// All results of a search plus the outcome issues of its last page.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Result segments.
    pub segs: Vec<Seg>,
    /// Warnings and information to report in an outcome entry.
    pub issues: Vec<Issue>,
    /// The part of `issues` due to the client's licence (registration and narrowings).
    pub licence: Vec<Issue>,
}

impl Found {
    /// Number of results.
    pub(crate) fn len(&self) -> usize {
        self.segs.iter().map(Seg::len).sum()
    }
}

/// A token parameter value: `code` or `system|code`.
pub(crate) struct Token<'a> {
    pub system: Option<&'a str>,
    pub code: &'a str,
}

pub(crate) fn tokens(value: &str) -> Vec<Token<'_>> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|t| match t.split_once('|') {
            Some((s, c)) => Token { system: (!s.is_empty()).then_some(s), code: c },
            None => Token { system: None, code: t },
        })
        .collect()
}

/// True when any coding of the CodeableConcept(s) at `field` matches any token.
fn has_code(resource: &Value, field: &str, wanted: &[Token<'_>]) -> bool {
    let concepts: Vec<&Value> = match resource.get(field) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        Some(Value::String(s)) => return wanted.iter().any(|t| t.code == s),
        _ => return false,
    };
    concepts.iter().filter_map(|c| c.get("coding").and_then(Value::as_array)).flatten().any(|coding| {
        let code = coding.get("code").and_then(Value::as_str);
        let system = coding.get("system").and_then(Value::as_str);
        wanted.iter().any(|t| Some(t.code) == code && (t.system.is_none() || t.system == system))
    })
}

/// Field searched by `code` on `ty`.
fn code_field(ty: &str) -> Option<&'static str> {
    match ty {
        "Observation" | "Condition" | "Procedure" | "DiagnosticReport" => Some("code"),
        _ => None,
    }
}

/// Search parameters (besides `_id` and `_count`) the simulator honours on `ty`.
pub(crate) fn known_params(ty: &str) -> &'static [&'static str] {
    match ty {
        "Observation" | "Condition" | "Procedure" | "DiagnosticReport" => {
            &["patient", "subject", "category", "code"]
        }
        "MedicationRequest" | "DocumentReference" | "CarePlan" => &["patient", "subject", "category"],
        "Patient" => &["_id", "identifier", "family", "given", "name", "birthdate", "gender"],
        "List" => &["patient", "subject", "code", "identifier"],
        _ if !catalog::patient_scoped(ty) => &[],
        _ => &["patient", "subject"],
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A refused request: HTTP status plus the issues of its OperationOutcome.
#[derive(Debug)]
pub(crate) struct Rejection {
    /// HTTP status.
    pub status: StatusCode,
    /// Issues.
    pub issues: Vec<Issue>,
}

impl Rejection {
    /// A rejection with one issue.
    pub(crate) fn new(status: StatusCode, issue: Issue) -> Rejection {
        Rejection { status, issues: vec![issue] }
    }

    /// The OperationOutcome answer in `format`.
    pub(crate) fn respond(&self, format: Format) -> Response {
        wire::error(self.status, format, &self.issues)
    }
}

fn forbidden_without_patient() -> Rejection {
    Rejection::new(
        StatusCode::FORBIDDEN,
        Issue::new("fatal", "forbidden", "4111", "A required search parameter is missing.")
            .with_diagnostics("A patient or subject parameter is required for this search."),
    )
}

fn bad_request(issue: Issue) -> Rejection {
    Rejection::new(StatusCode::BAD_REQUEST, issue)
}

/// The licence key of a stored record of type `ty`: `Type:category` for each category code it
/// carries (categorised types), else `Type`.
fn record_keys(ty: &str, value: &Value) -> Vec<String> {
    let codes: Vec<String> = value
        .get("category")
        .map(|c| match c {
            Value::Array(a) => a.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.get("coding").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("code").and_then(Value::as_str).map(|code| format!("{ty}:{code}")))
        .collect();
    if codes.is_empty() { vec![ty.to_string()] } else { codes }
}

impl FhirState {
    fn epic(&self) -> bool {
        self.config.profile == ServerProfile::Epic
    }

    /// Runs a search (without paging) for a client with `licence`: by `_id`, a patient list,
    /// or a patient's records of the type (generated, then added ones), filtered by category
    /// and code, with the outcome issues Epic adds.
    pub(crate) fn search(&self, req: &SearchRequest<'_>, licence: &Licence) -> Result<Found, Rejection> {
        if req.ty == "Patient" {
            return self.search_patients(req);
        }
        let known = known_params(req.ty);
        let mut found = Found::default();
        if let Some(ids) = param(req.params, "_id") {
            for id in ids.split(',') {
                if let Some(v) = self.read(req.version, req.ty, id) {
                    found.segs.push(Seg::Owned(v));
                }
            }
            return Ok(found);
        }
        if req.ty == "List"
            && let Some(list) = self.search_patient_lists(req)
        {
            found.segs.extend(list);
            return Ok(found);
        }
        if !catalog::patient_scoped(req.ty) && req.ty != "List" {
            // `_id`-only types: what remains after ignoring unknown parameters is nothing usable.
            return if self.epic() { Err(bad_request(Issue::no_params(req.ty))) } else { Ok(found) };
        }
        let patient = searched_patient(req.params)?;
        // Parameters this type does not know are ignored.
        let supported = |name: &str| if known.contains(&name) { param(req.params, name) } else { None };
        let categories = supported("category").map(tokens).unwrap_or_default();
        let codes = supported("code").map(tokens).unwrap_or_default();
        let valid = self.check_categories(req, &categories, &codes)?;
        // Licence issues gather in `found.licence`, in the order they are met.
        self.generated_matches(req, patient, &categories, valid, licence, &mut found);
        self.added_matches(req, patient, &categories, licence, &mut found);
        let other_categories = !categories.is_empty() && valid.is_empty();
        if !codes.is_empty() || other_categories {
            let all = self.materialise(req.version, &found.segs, 0, usize::MAX);
            let field = code_field(req.ty);
            found.segs = all
                .into_iter()
                .filter(|v| codes.is_empty() || field.is_some_and(|f| has_code(v, f, &codes)))
                .filter(|v| !other_categories || has_code(v, "category", &categories))
                .map(Seg::Owned)
                .collect();
        }
        if self.epic() {
            let searched: Vec<&str> = categories.iter().map(|t| t.code).collect();
            found.issues = outside::withheld(req.ty, &searched);
        }
        found.issues.extend(found.licence.iter().cloned());
        Ok(found)
    }

    /// Epic's rules on categories and codes: Observation needs one of them, an R4 CarePlan a
    /// category, and a type with a fixed category list takes only those. Returns that list
    /// (empty for a type without one).
    fn check_categories(
        &self,
        req: &SearchRequest<'_>,
        categories: &[Token<'_>],
        codes: &[Token<'_>],
    ) -> Result<&'static [&'static str], Rejection> {
        if self.epic() && req.ty == "Observation" && categories.is_empty() && codes.is_empty() {
            return Err(bad_request(Issue::new(
                "fatal",
                "required",
                "59108",
                "Either the category or code parameter must be specified.",
            )));
        }
        let careplan = req.ty == "CarePlan" && req.version == FhirVersion::R4;
        if self.epic() && careplan && categories.is_empty() {
            return Err(bad_request(Issue::required_missing(
                "The category parameter is required for CarePlan searches: 38717003 (longitudinal), \
                 734163000 (encounter-level) or assess-plan.",
            )));
        }
        let valid: &[&str] = match req.ty {
            "Observation" => OBSERVATION_CATEGORIES,
            "Condition" => CONDITION_CATEGORIES,
            "CarePlan" if careplan => CAREPLAN_CATEGORIES,
            _ => &[],
        };
        if !valid.is_empty()
            && let Some(bad) = categories.iter().find(|t| !valid.contains(&t.code))
        {
            return Err(bad_request(
                Issue::new("fatal", "value", "59111", "The value of a required parameter is invalid.")
                    .with_diagnostics(format!("Unsupported category: {}", bad.code)),
            ));
        }
        Ok(valid)
    }

    /// The patient's generated records of the searched datasets, as the licence lets the
    /// client see them (an unlicensed dataset is an issue, a narrowed one withholds records).
    fn generated_matches(
        &self,
        req: &SearchRequest<'_>,
        patient: &str,
        categories: &[Token<'_>],
        valid: &[&str],
        licence: &Licence,
        found: &mut Found,
    ) {
        let index = self.patient_index(patient);
        for dataset in Dataset::of_type(req.version, req.ty) {
            let wanted = match dataset.category() {
                Some(c) if !valid.is_empty() => {
                    categories.is_empty() || categories.iter().any(|t| t.code == c)
                }
                _ => true,
            };
            if !wanted {
                continue;
            }
            let key = dataset.license_key(req.version).unwrap_or_else(|| req.ty.to_string());
            if licence.excludes(&key) {
                found.licence.push(Issue::unlicensed(&key));
                continue;
            }
            let Some(i) = index else { continue };
            match licence.narrowing(&key) {
                Some(n) => {
                    let mut segs = Vec::new();
                    self.dataset_segments(req.version, i, dataset, &mut segs);
                    found.segs.extend(self.withhold(segs));
                    found.licence.push(n.issue());
                }
                None => self.dataset_segments(req.version, i, dataset, &mut found.segs),
            }
        }
    }

    /// The patient's created records of the type, in the searched categories, as the licence
    /// lets the client see them.
    fn added_matches(
        &self,
        req: &SearchRequest<'_>,
        patient: &str,
        categories: &[Token<'_>],
        licence: &Licence,
        found: &mut Found,
    ) {
        for added in self.overlay.added(req.ty, Some(patient)) {
            if !categories.is_empty() && !has_code(&added.value, "category", categories) {
                continue;
            }
            let keys = record_keys(req.ty, &added.value);
            if keys.iter().any(|k| licence.excludes(k)) {
                continue;
            }
            let narrowed = keys.iter().filter_map(|k| licence.narrowing(k)).next();
            if let Some(n) = narrowed {
                let issue = n.issue();
                if !found.licence.contains(&issue) {
                    found.licence.push(issue);
                }
                if self.withholds(&added.value) {
                    continue;
                }
            }
            found.segs.push(Seg::Owned(added.value));
        }
    }

    /// A Patient search: by `_id`, else by demographics or identifier (59159 without them),
    /// over the generated and the created patients, capped at [`PATIENT_SEARCH_CAP`] (4127).
    fn search_patients(&self, req: &SearchRequest<'_>) -> Result<Found, Rejection> {
        let known = known_params("Patient");
        let ignored: Vec<Issue> = req
            .params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !known.contains(k))
            .map(Issue::ignored_param)
            .collect();
        let mut found = Found { segs: Vec::new(), issues: ignored.clone(), licence: Vec::new() };
        if let Some(ids) = param(req.params, "_id") {
            for id in ids.split(',') {
                if let Some(v) = self.read(req.version, "Patient", id) {
                    found.segs.push(Seg::Owned(v));
                }
            }
            return Ok(found);
        }
        let query = PatientQuery::of(req.params);
        if query.family.is_none()
            && query.given.is_none()
            && query.name.is_none()
            && query.identifiers.is_none()
        {
            if query.birthdate.is_some() || query.gender.is_some() {
                return Ok(found);
            }
            // As the sandbox: the ignored-parameter information first, then the fatal 59159.
            let mut issues = ignored;
            issues.push(
                Issue::new(
                    "fatal",
                    "business-rule",
                    "59159",
                    "The content/operation failed to pass a business rule, and so could not proceed.",
                )
                .with_diagnostics("This resource requires demographics or _id parameter for searching.")
                .at("/f:demographics/_id"),
            );
            return Err(Rejection { status: StatusCode::BAD_REQUEST, issues });
        }
        self.generated_patients(&query, &mut found);
        for added in self.overlay.added("Patient", None) {
            if query.matches_added(&added.value) {
                found.segs.push(Seg::Owned(Arc::clone(&added.value)));
            }
        }
        if found.segs.len() > PATIENT_SEARCH_CAP {
            found.segs.truncate(PATIENT_SEARCH_CAP);
            found.issues.push(Issue::new("warning", "processing", "4127", "Additional data may exist."));
        }
        Ok(found)
    }

    /// The generated patients that match `query` (one past the cap at most), as edited.
    fn generated_patients(&self, query: &PatientQuery<'_>, found: &mut Found) {
        // An identifier names few patients: resolve it directly instead of scanning.
        let candidates: Box<dyn Iterator<Item = usize>> = match &query.identifiers {
            Some(ts) => {
                let mut v: Vec<usize> =
                    ts.iter().flat_map(|t| self.generator.patients_by_identifier(t.system, t.code)).collect();
                v.sort_unstable();
                v.dedup();
                Box::new(v.into_iter())
            }
            None => Box::new(0..self.generator.patients()),
        };
        for i in candidates {
            if !query.matches(&self.generator.demographics(i)) {
                continue;
            }
            let id = self.generator.patient_id(i);
            match self.overlay.fate("Patient", &id) {
                super::overlay::Fate::Unchanged => found.segs.push(Seg::Patient(i)),
                super::overlay::Fate::Edited(v) => found.segs.push(Seg::Owned(v)),
                super::overlay::Fate::Deleted => {}
            }
            if found.segs.len() > PATIENT_SEARCH_CAP {
                break;
            }
        }
    }
}

/// The demographic parameters of a Patient search (lower-cased; prefixes match).
struct PatientQuery<'a> {
    family: Option<String>,
    given: Option<String>,
    name: Option<String>,
    identifiers: Option<Vec<Token<'a>>>,
    birthdate: Option<String>,
    gender: Option<String>,
}

impl<'a> PatientQuery<'a> {
    fn of(params: &'a [(String, String)]) -> Self {
        let get = |n| param(params, n).map(str::to_lowercase);
        PatientQuery {
            family: get("family"),
            given: get("given"),
            name: get("name"),
            identifiers: param(params, "identifier").map(tokens),
            birthdate: get("birthdate").map(|b| b.trim_start_matches("eq").to_string()),
            gender: get("gender"),
        }
    }

    /// A generated patient matches every given parameter.
    fn matches(&self, d: &Demographics) -> bool {
        prefix(d.family, &self.family)
            && self.given.as_ref().is_none_or(|g| d.given.iter().any(|x| x.to_lowercase().starts_with(g)))
            && self.name.as_ref().is_none_or(|n| {
                d.family.to_lowercase().starts_with(n)
                    || d.given.iter().any(|x| x.to_lowercase().starts_with(n))
            })
            && self.birthdate.as_ref().is_none_or(|b| d.birth_date == *b)
            && self.gender.as_ref().is_none_or(|g| d.gender == g)
    }

    /// A created patient matches by family name (`family`, `name`) and identifier, and only a
    /// search that names one of them finds it.
    fn matches_added(&self, value: &Value) -> bool {
        let fam = value.pointer("/name/0/family").and_then(Value::as_str).unwrap_or("");
        let id_ok = self.identifiers.as_ref().is_none_or(|ts| {
            value.get("identifier").and_then(Value::as_array).is_some_and(|ids| {
                ids.iter().any(|i| {
                    let system = i.get("system").and_then(Value::as_str);
                    let value = i.get("value").and_then(Value::as_str).unwrap_or("").trim();
                    ts.iter().any(|t| t.system.is_none_or(|s| Some(s) == system) && t.code.trim() == value)
                })
            })
        });
        let name_given = self.family.is_some() || self.name.is_some();
        id_ok
            && prefix(fam, &self.family)
            && prefix(fam, &self.name)
            && (name_given || self.identifiers.is_some())
    }
}

/// `hay` starts with `needle` (case-insensitive), or there is no needle.
fn prefix(hay: &str, needle: &Option<String>) -> bool {
    needle.as_ref().is_none_or(|n| hay.to_lowercase().starts_with(n))
}

/// The patient a search names by `patient` or `subject` (4112 when they differ, 403 when
/// neither is given).
fn searched_patient(params: &[(String, String)]) -> Result<&str, Rejection> {
    let patient = param(params, "patient").map(patient_id_of);
    let subject = param(params, "subject").map(patient_id_of);
    match (patient, subject) {
        (Some(p), Some(s)) if p != s => Err(bad_request(Issue::new(
            "fatal",
            "value",
            "4112",
            "The patient and subject parameters reference different patients.",
        ))),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Err(forbidden_without_patient()),
    }
}

/// A bare 403 (client not licensed for the API).
pub(crate) fn bare_forbidden() -> Response {
    StatusCode::FORBIDDEN.into_response()
}
