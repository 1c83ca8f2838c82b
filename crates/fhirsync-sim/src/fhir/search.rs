//! Epic's search rules.
//!
//! - Patient-scoped types need `patient` or `subject` (403 OperationOutcome otherwise, as the
//!   sandbox answers); both naming different patients is 400/4112.
//! - `Patient` needs `_id`, `identifier` or a name: otherwise 400 with fatal 59159 (and 59100
//!   information for each ignored parameter); `birthdate`/`gender` alone match nothing.
//! - `Observation` needs `category` or `code` (400/59108); unknown categories are 400/59111.
//! - Unknown parameters are ignored with a 4122 warning entry.
//! - Datasets the client is not licensed for (`Type:category` in its registration) are dropped
//!   with a 59204 warning entry; a whole unlicensed type is a bare 403.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhirsync_core::FhirVersion;
use serde_json::Value;

use super::FhirState;
use super::catalog::{self, Dataset};
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

/// All results of a search plus the outcome issues of its first page.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Result segments.
    pub segs: Vec<Seg>,
    /// Warnings and information to report in an outcome entry.
    pub issues: Vec<Issue>,
}

impl Found {
    /// Number of results.
    pub(crate) fn len(&self) -> usize {
        self.segs.iter().map(Seg::len).sum()
    }
}

/// A token parameter value: `code` or `system|code`.
struct Token<'a> {
    system: Option<&'a str>,
    code: &'a str,
}

fn tokens(value: &str) -> Vec<Token<'_>> {
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

fn known_params(ty: &str) -> &'static [&'static str] {
    match ty {
        "Observation" | "Condition" | "Procedure" | "DiagnosticReport" => {
            &["patient", "subject", "category", "code"]
        }
        "MedicationRequest" | "DocumentReference" => &["patient", "subject", "category"],
        "Patient" => &["_id", "identifier", "family", "given", "name", "birthdate", "gender"],
        "List" => &["patient", "subject", "code", "identifier"],
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

impl FhirState {
    /// Runs a search (without paging).
    pub(crate) fn search(&self, req: &SearchRequest<'_>, unlicensed: &[String]) -> Result<Found, Rejection> {
        let known = known_params(req.ty);
        let unknown: Vec<&str> = req
            .params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "_id" && !known.contains(k))
            .collect();
        if req.ty == "Patient" {
            return self.search_patients(req, &unknown);
        }
        let mut found = Found::default();
        for name in &unknown {
            found.issues.push(Issue::unknown_param(name));
        }
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
        if req.ty == "Group" || !catalog::patient_scoped(req.ty) && req.ty != "List" {
            // `_id`-only types: nothing is searchable without `_id`.
            return Ok(found);
        }
        let patient = param(req.params, "patient").map(patient_id_of);
        let subject = param(req.params, "subject").map(patient_id_of);
        let patient = match (patient, subject) {
            (Some(p), Some(s)) if p != s => {
                return Err(bad_request(Issue::new(
                    "fatal",
                    "value",
                    "4112",
                    "The patient and subject parameters reference different patients.",
                )));
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => return Err(forbidden_without_patient()),
        };
        // Parameters this type does not know were reported (4122) and are ignored here.
        let supported = |name: &str| if known.contains(&name) { param(req.params, name) } else { None };
        let categories = supported("category").map(tokens).unwrap_or_default();
        let codes = supported("code").map(tokens).unwrap_or_default();
        if req.ty == "Observation" && categories.is_empty() && codes.is_empty() {
            return Err(bad_request(Issue::new(
                "fatal",
                "required",
                "59108",
                "Either the category or code parameter must be specified.",
            )));
        }
        let valid: &[&str] = match req.ty {
            "Observation" => OBSERVATION_CATEGORIES,
            "Condition" => CONDITION_CATEGORIES,
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
            if let Some(key) = dataset.license_key(req.version)
                && unlicensed.contains(&key)
            {
                found.issues.push(Issue::unlicensed(&key));
                continue;
            }
            if let Some(i) = index {
                self.dataset_segments(req.version, i, dataset, &mut found.segs);
            }
        }
        for added in self.overlay.added(req.ty, Some(patient)) {
            let cat_ok = categories.is_empty() || has_code(&added.value, "category", &categories);
            if cat_ok {
                found.segs.push(Seg::Owned(added.value));
            }
        }
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
        Ok(found)
    }

    fn search_patients(&self, req: &SearchRequest<'_>, unknown: &[&str]) -> Result<Found, Rejection> {
        let ignored: Vec<Issue> = unknown.iter().map(|name| Issue::ignored_param(name)).collect();
        let mut found = Found { segs: Vec::new(), issues: ignored.clone() };
        if let Some(ids) = param(req.params, "_id") {
            for id in ids.split(',') {
                if let Some(v) = self.read(req.version, "Patient", id) {
                    found.segs.push(Seg::Owned(v));
                }
            }
            return Ok(found);
        }
        let get = |n| param(req.params, n).map(str::to_lowercase);
        let (family, given, name) = (get("family"), get("given"), get("name"));
        let identifier = param(req.params, "identifier").map(|v| match v.split_once('|') {
            Some((_, value)) => value.to_string(),
            None => v.to_string(),
        });
        let (birthdate, gender) = (get("birthdate"), get("gender"));
        if family.is_none() && given.is_none() && name.is_none() && identifier.is_none() {
            if birthdate.is_some() || gender.is_some() {
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
        let birthdate = birthdate.map(|b| b.trim_start_matches("eq").to_string());
        let prefix = |hay: &str, needle: &Option<String>| {
            needle.as_ref().is_none_or(|n| hay.to_lowercase().starts_with(n))
        };
        // An identifier names at most one patient: resolve it directly instead of scanning.
        let candidates: Box<dyn Iterator<Item = usize>> = match &identifier {
            Some(v) => Box::new(self.generator.patient_by_identifier(v).into_iter()),
            None => Box::new(0..self.generator.patients()),
        };
        for i in candidates {
            let d = self.generator.demographics(i);
            let ok = prefix(d.family, &family)
                && given.as_ref().is_none_or(|g| d.given.iter().any(|x| x.to_lowercase().starts_with(g)))
                && name.as_ref().is_none_or(|n| {
                    d.family.to_lowercase().starts_with(n)
                        || d.given.iter().any(|x| x.to_lowercase().starts_with(n))
                })
                && birthdate.as_ref().is_none_or(|b| d.birth_date == *b)
                && gender.as_ref().is_none_or(|g| d.gender == g)
                && identifier.as_ref().is_none_or(|v| d.mrn == *v || self.generator.patient_id(i) == *v);
            if !ok {
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
        for added in self.overlay.added("Patient", None) {
            let fam = added.value.pointer("/name/0/family").and_then(Value::as_str).unwrap_or("");
            if family.is_some() && prefix(fam, &family) || name.is_some() && prefix(fam, &name) {
                found.segs.push(Seg::Owned(Arc::clone(&added.value)));
            }
        }
        if found.segs.len() > PATIENT_SEARCH_CAP {
            found.segs.truncate(PATIENT_SEARCH_CAP);
            found.issues.push(Issue::new("warning", "processing", "4127", "Additional data may exist."));
        }
        Ok(found)
    }
}

/// A bare 403 (client not licensed for the API).
pub(crate) fn bare_forbidden() -> Response {
    StatusCode::FORBIDDEN.into_response()
}
