//! The search plan: which datasets to fetch, from which endpoint, with which parameters.
//!
//! Built from each endpoint's CapabilityStatement (`GET {base}/metadata`, JSON):
//! - a type is planned when it has the `search-type` interaction and a patient parameter
//!   (`patient`, else `subject`); `Patient` itself is searched by `_id`;
//! - each type is taken from the newest endpoint that serves it, so version-only types come from
//!   their version (MedicationOrder from DSTU2, ProcedureRequest from STU3, ...);
//! - one copy of each record: a version-only type whose newer equivalent is planned from a newer
//!   endpoint is left out by default (Epic serves the same orders as DSTU2 MedicationOrder and
//!   R4 MedicationRequest, and STU3 ProcedureRequest is R4 ServiceRequest); naming it in
//!   `datasets` brings it back;
//! - on Epic (the statement's `software.name`/`publisher`, or `[extract] server = "epic"`), types
//!   with a `category` search parameter and a configured category list are fanned out into one
//!   dataset per category (Epic licenses Observation categories separately and requires a
//!   category or code; CarePlan's category is required). On any other server a type is searched
//!   once without category (so nothing it holds is left out), unless its statement documents the
//!   category as required;
//! - the user's `datasets` selection filters the result (`Type` = all its categories,
//!   `Type:category` = one). A named type that no statement lists is still tried (from the newest
//!   endpoint, by `patient`), and its outcome booked like any other;
//! - common clinical types that no statement offers are listed in [`Plan::not_offered`], so a
//!   server that leaves one out is not silent about it.

use std::collections::{BTreeMap, BTreeSet};

use fhirsync_core::{Dataset, FhirVersion};
use fhirsync_fhir::FhirClient;
use serde::Deserialize;
use tracing::{info, warn};
use url::Url;

use crate::config::{Endpoints, ExtractConfig, ServerKind};
use crate::error::{Error, Result, StatementError};

/// Types never planned by default: `List` is the cohort tool (and needs a `code`).
const NOT_BY_DEFAULT: &[&str] = &["List"];

/// Older types and the newer type that carries the same records.
const SUPERSEDED_BY: &[(&str, &str)] = &[
    ("MedicationOrder", "MedicationRequest"),
    ("ProcedureRequest", "ServiceRequest"),
    ("DiagnosticOrder", "ServiceRequest"),
];

/// True when `ty`, served from `version`, has a newer equivalent served from a newer version.
fn superseded(source: &BTreeMap<&str, FhirVersion>, ty: &str, version: FhirVersion) -> bool {
    SUPERSEDED_BY
        .iter()
        .filter(|(old, _)| *old == ty)
        .any(|(_, new)| source.get(new).is_some_and(|v| *v > version))
}

/// Patient-compartment types a clinical data warehouse expects (US Core's clinical set); a
/// default plan names those the server's statement does not offer.
const EXPECTED_CLINICAL: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Goal",
    "Immunization",
    "MedicationDispense",
    "MedicationRequest",
    "Observation",
    "Procedure",
    "QuestionnaireResponse",
    "ServiceRequest",
];

/// What one endpoint can search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Per resource type: its search parameter names (`None` when `search-type` is absent).
    pub types: BTreeMap<String, Option<BTreeSet<String>>>,
    /// Resource types with the `create` interaction (write-back targets).
    pub create: BTreeSet<String>,
    /// Types whose statement documents `category` as a required search parameter.
    pub category_required: BTreeSet<String>,
    /// The statement says the server is Epic (`software.name` or `publisher`).
    pub epic: bool,
}

#[derive(Deserialize)]
struct StatementWire {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    rest: Vec<RestWire>,
    publisher: Option<String>,
    software: Option<SoftwareWire>,
}

#[derive(Deserialize)]
struct SoftwareWire {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RestWire {
    #[serde(default)]
    resource: Vec<ResourceWire>,
}

#[derive(Deserialize)]
struct ResourceWire {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    interaction: Vec<InteractionWire>,
    #[serde(default, rename = "searchParam")]
    search_param: Vec<SearchParamWire>,
}

#[derive(Deserialize)]
struct InteractionWire {
    code: String,
}

#[derive(Deserialize)]
struct SearchParamWire {
    name: String,
    documentation: Option<String>,
}

impl Capabilities {
    /// Parses a CapabilityStatement (R4/STU3) or Conformance (DSTU2).
    pub fn parse(json: &[u8]) -> std::result::Result<Self, StatementError> {
        let wire: StatementWire = serde_json::from_slice(json)?;
        match wire.resource_type.as_deref() {
            Some("CapabilityStatement" | "Conformance") => {}
            other => {
                let found = other.unwrap_or("no resourceType").to_string();
                return Err(StatementError::NotAStatement { found });
            }
        }
        let says_epic =
            |t: &Option<String>| t.as_deref().is_some_and(|t| t.to_ascii_lowercase().contains("epic"));
        let epic = says_epic(&wire.publisher) || says_epic(&wire.software.and_then(|s| s.name));
        let mut types = BTreeMap::new();
        let mut create = BTreeSet::new();
        let mut category_required = BTreeSet::new();
        for r in wire.rest.into_iter().flat_map(|r| r.resource) {
            if r.interaction.iter().any(|i| i.code == "create") {
                create.insert(r.ty.clone());
            }
            let required = r.search_param.iter().any(|p| {
                p.name == "category"
                    && p.documentation.as_deref().is_some_and(|d| d.to_ascii_lowercase().contains("required"))
            });
            if required {
                category_required.insert(r.ty.clone());
            }
            let searchable = r.interaction.iter().any(|i| i.code == "search-type");
            let params = searchable.then(|| r.search_param.into_iter().map(|p| p.name).collect());
            types.insert(r.ty, params);
        }
        Ok(Capabilities { types, create, category_required, epic })
    }

    /// The parameter that scopes a search of `ty` to one patient, if any.
    pub fn patient_param(&self, ty: &str) -> Option<&'static str> {
        let params = self.types.get(ty)?.as_ref()?;
        if ty == "Patient" {
            return Some("_id");
        }
        if params.contains("patient") {
            Some("patient")
        } else if params.contains("subject") {
            Some("subject")
        } else {
            None
        }
    }

    fn has_param(&self, ty: &str, name: &str) -> bool {
        self.types.get(ty).and_then(Option::as_ref).is_some_and(|p| p.contains(name))
    }
}

/// One dataset to fetch for every patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDataset {
    /// What is fetched.
    pub dataset: Dataset,
    /// Version of the endpoint searched.
    pub version: FhirVersion,
    /// Endpoint base URL.
    pub base: Url,
    /// Parameter carrying the patient id (`patient`, `subject`, or `_id` for Patient).
    pub patient_param: &'static str,
    /// Other parameters (`category`, `_count`).
    pub params: Vec<(String, String)>,
    /// Check each complete scope against the server's `_summary=count` (`verify_counts`, not on
    /// Epic, not for Patient).
    pub verify_count: bool,
}

/// The datasets of a run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Planned datasets, sorted by dataset.
    pub items: Vec<PlannedDataset>,
    /// Common clinical types no endpoint's statement offers for patient search (default plans
    /// only): reported, and tried when named in `datasets`.
    pub not_offered: Vec<String>,
}

impl Plan {
    /// Dataset names, for reports.
    pub fn dataset_names(&self) -> Vec<String> {
        self.items.iter().map(|i| format!("{}@{}", i.dataset, i.version)).collect()
    }
}

/// Fetches every endpoint's CapabilityStatement and builds the plan. An endpoint whose
/// metadata fails is skipped with a warning, unless every endpoint fails.
pub async fn plan(client: &FhirClient, endpoints: &Endpoints, config: &ExtractConfig) -> Result<Plan> {
    let mut caps = BTreeMap::new();
    let mut last_err = None;
    let versions: Vec<(FhirVersion, &Url)> =
        endpoints.versions().into_iter().filter_map(|v| endpoints.get(v).map(|b| (v, b))).collect();
    // The statements are independent: fetch them concurrently.
    let bodies = futures::future::join_all(versions.iter().map(|(_, base)| client.metadata(base))).await;
    for ((version, base), body) in versions.into_iter().zip(bodies) {
        match body {
            Ok(body) => {
                let c = Capabilities::parse(&body).map_err(|source| Error::Capabilities {
                    version,
                    url: fhirsync_fhir::redact_url(base),
                    source,
                })?;
                caps.insert(version, (base.clone(), c));
            }
            Err(e) if e.is_fatal_for_run() => return Err(e.into()),
            Err(e) => {
                warn!(%version, error = %e, "CapabilityStatement unavailable; endpoint skipped.");
                last_err = Some(e);
            }
        }
    }
    if caps.is_empty() {
        return Err(match last_err {
            Some(e) => e.into(),
            None => Error::NoEndpoint,
        });
    }
    let plan = build(&caps, config)?;
    if !plan.not_offered.is_empty() {
        warn!(types = %plan.not_offered.join(", "), "Not offered for patient search by the server's statement; name them in [extract] datasets to try them.");
    }
    info!(datasets = plan.items.len(), "Plan built.");
    Ok(plan)
}

/// Parses `Type` / `Type:category`.
fn dataset_of(text: &str) -> Dataset {
    match text.split_once(':') {
        Some((t, c)) => Dataset::with_category(t.trim(), c.trim()),
        None => Dataset::new(text),
    }
}

/// Builds the plan from parsed capabilities (pure; see module docs for the rules).
pub fn build(caps: &BTreeMap<FhirVersion, (Url, Capabilities)>, config: &ExtractConfig) -> Result<Plan> {
    // Newest version that can search each type by patient.
    let mut source: BTreeMap<&str, FhirVersion> = BTreeMap::new();
    for version in FhirVersion::ALL {
        let Some((_, c)) = caps.get(&version) else { continue };
        for ty in c.types.keys() {
            if c.patient_param(ty).is_some() {
                source.entry(ty.as_str()).or_insert(version);
            }
        }
    }
    let selection: Vec<Dataset> = if config.datasets.is_empty() {
        source
            .iter()
            .filter(|(t, v)| !NOT_BY_DEFAULT.contains(t) && !superseded(&source, t, **v))
            .map(|(t, _)| Dataset::new(*t))
            .collect()
    } else {
        config.datasets.iter().map(|d| dataset_of(d.trim())).collect()
    };
    let described = caps.keys().map(|v| v.as_str()).collect::<Vec<_>>().join(", ");
    let not_offered: Vec<String> = if config.datasets.is_empty() {
        EXPECTED_CLINICAL.iter().filter(|t| !source.contains_key(*t)).map(|t| t.to_string()).collect()
    } else {
        Vec::new()
    };
    // A named type no statement lists is tried from the newest endpoint.
    let Some(&newest) = caps.keys().max() else {
        return Err(Error::NoEndpoint);
    };
    let mut items = BTreeMap::new();
    for wanted in selection {
        let ty = wanted.resource_type.as_str();
        let version = match source.get(ty) {
            Some(v) => *v,
            None if caps.values().any(|(_, c)| c.types.contains_key(ty)) => {
                // Listed, but not searchable by patient anywhere (e.g. Epic's RelatedPerson).
                return Err(Error::UnknownDataset { dataset: wanted.to_string(), endpoints: described });
            }
            None => {
                warn!(dataset = %wanted, version = %newest, "Not in any CapabilityStatement; trying it anyway.");
                newest
            }
        };
        let (base, c) = &caps[&version];
        plan_dataset(&wanted, version, base, c, config, &mut items);
    }
    if items.is_empty() {
        return Err(Error::NothingSearchable { endpoints: described });
    }
    Ok(Plan { items: items.into_values().collect(), not_offered })
}

/// The planned datasets of one wanted dataset, searched on `version` (`base`, statement `c`):
/// one per category when the server wants categories, else one.
fn plan_dataset(
    wanted: &Dataset,
    version: FhirVersion,
    base: &Url,
    c: &Capabilities,
    config: &ExtractConfig,
    items: &mut BTreeMap<Dataset, PlannedDataset>,
) {
    let ty = wanted.resource_type.as_str();
    let patient_param = match (ty, c.patient_param(ty)) {
        (_, Some(p)) => p,
        ("Patient", None) => "_id",
        (_, None) => "patient",
    };
    let epic = match config.server {
        ServerKind::Epic => true,
        ServerKind::Generic => false,
        ServerKind::Auto => c.epic,
    };
    let by_category = epic || c.category_required.contains(ty);
    let mut base_params = Vec::new();
    if config.page_size > 0 && ty != "Patient" {
        base_params.push(("_count".to_string(), config.page_size.to_string()));
    }
    let categories: Vec<String> = match (&wanted.category, config.categories.get(ty)) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(list)) if by_category && c.has_param(ty, "category") => list.clone(),
        _ => Vec::new(),
    };
    let verify_count = config.verify_counts && !epic && ty != "Patient";
    let mut push = |dataset: Dataset, params: Vec<(String, String)>| {
        items.insert(
            dataset.clone(),
            PlannedDataset { dataset, version, base: base.clone(), patient_param, params, verify_count },
        );
    };
    if categories.is_empty() {
        push(Dataset::new(ty), base_params.clone());
    } else {
        for cat in categories {
            let mut params = vec![("category".to_string(), cat.clone())];
            params.extend(base_params.iter().cloned());
            push(Dataset::with_category(ty, cat), params);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(types: &[(&str, &[&str])]) -> Capabilities {
        let resources: Vec<String> = types
            .iter()
            .map(|(t, ps)| {
                let params: Vec<String> = ps.iter().map(|p| format!(r#"{{"name":"{p}","type":"token"}}"#)).collect();
                format!(
                    r#"{{"type":"{t}","interaction":[{{"code":"read"}},{{"code":"search-type"}}],"searchParam":[{}]}}"#,
                    params.join(",")
                )
            })
            .collect();
        let json = format!(
            r#"{{"resourceType":"CapabilityStatement","rest":[{{"resource":[{}]}}]}}"#,
            resources.join(",")
        );
        Capabilities::parse(json.as_bytes()).unwrap()
    }

    fn all() -> BTreeMap<FhirVersion, (Url, Capabilities)> {
        let u = |v: &str| Url::parse(&format!("http://x/{v}")).unwrap();
        BTreeMap::from([
            (
                FhirVersion::R4,
                (
                    u("R4"),
                    caps(&[
                        ("Patient", &["_id", "identifier"]),
                        ("Observation", &["patient", "subject", "category"]),
                        ("Condition", &["patient", "category"]),
                        ("Encounter", &["subject"]),
                        ("Medication", &["_id"]),
                        ("List", &["patient", "code"]),
                    ]),
                ),
            ),
            (
                FhirVersion::Dstu2,
                (u("DSTU2"), caps(&[("MedicationOrder", &["patient"]), ("Observation", &["patient"])])),
            ),
        ])
    }

    /// All but `generic_server_searches_without_category` read `all()` as Epic's statements.
    fn epic() -> ExtractConfig {
        ExtractConfig { server: ServerKind::Epic, ..ExtractConfig::default() }
    }

    /// Default plan: patient-scoped types from the newest version, Observation fanned out per
    /// category, DSTU2-only MedicationOrder from DSTU2 (no R4 MedicationRequest here), id-only
    /// types and List left out.
    #[test]
    fn default_plan_from_capabilities() {
        let cfg = epic();
        let plan = build(&all(), &cfg).unwrap();
        let names = plan.dataset_names();
        assert!(names.contains(&"Observation:laboratory@R4".to_string()), "{names:?}");
        assert!(names.contains(&"Observation:vital-signs@R4".to_string()));
        assert!(names.contains(&"MedicationOrder@DSTU2".to_string()));
        assert!(names.contains(&"Condition:problem-list-item@R4".to_string()));
        assert!(names.contains(&"Patient@R4".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("Medication@") || n.starts_with("List")));
        let enc = plan.items.iter().find(|i| i.dataset.resource_type == "Encounter").unwrap();
        assert_eq!(enc.patient_param, "subject");
        let lab = plan.items.iter().find(|i| i.dataset.category.as_deref() == Some("laboratory")).unwrap();
        assert!(lab.params.contains(&("category".into(), "laboratory".into())));
    }

    /// MedicationOrder (DSTU2) is left out when R4 serves MedicationRequest, the same orders;
    /// named explicitly it comes back.
    #[test]
    fn superseded_version_only_type_is_left_out_unless_named() {
        let mut caps = all();
        let (_, r4) = caps.get_mut(&FhirVersion::R4).unwrap();
        r4.types.insert("MedicationRequest".into(), Some(BTreeSet::from(["patient".to_string()])));
        let names = build(&caps, &ExtractConfig::default()).unwrap().dataset_names();
        assert!(names.contains(&"MedicationRequest@R4".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("MedicationOrder")), "{names:?}");
        let cfg = ExtractConfig { datasets: vec!["MedicationOrder".into()], ..ExtractConfig::default() };
        assert_eq!(build(&caps, &cfg).unwrap().dataset_names(), vec!["MedicationOrder@DSTU2"]);
    }

    /// CarePlan, whose category Epic requires, is fanned out over its default categories.
    #[test]
    fn careplan_is_searched_per_category() {
        let mut caps = all();
        let (_, r4) = caps.get_mut(&FhirVersion::R4).unwrap();
        r4.types
            .insert("CarePlan".into(), Some(BTreeSet::from(["patient".to_string(), "category".to_string()])));
        let names = build(&caps, &epic()).unwrap().dataset_names();
        for cat in crate::config::DEFAULT_CAREPLAN_CATEGORIES {
            assert!(names.contains(&format!("CarePlan:{cat}@R4")), "{names:?}");
        }
        assert!(!names.contains(&"CarePlan@R4".to_string()));
    }

    /// On a server that is not Epic, category fan-out is off: Observation and Condition are
    /// searched once, without category, unless the statement documents the category as required;
    /// `server = "epic"` forces it back on.
    #[test]
    fn generic_server_searches_without_category() {
        let caps = all();
        let names = build(&caps, &ExtractConfig::default()).unwrap().dataset_names();
        assert!(names.contains(&"Observation@R4".to_string()), "{names:?}");
        assert!(names.contains(&"Condition@R4".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("Observation:")), "{names:?}");
        let cfg = ExtractConfig { server: ServerKind::Epic, ..ExtractConfig::default() };
        let names = build(&caps, &cfg).unwrap().dataset_names();
        assert!(names.contains(&"Observation:laboratory@R4".to_string()), "{names:?}");
        let json = br#"{"resourceType":"CapabilityStatement","rest":[{"resource":[{"type":"CarePlan",
            "interaction":[{"code":"search-type"}],"searchParam":[{"name":"patient"},
            {"name":"category","documentation":"This is a required search parameter."}]}]}]}"#;
        let caps = BTreeMap::from([(
            FhirVersion::R4,
            (Url::parse("http://x/R4").unwrap(), Capabilities::parse(json).unwrap()),
        )]);
        let names = build(&caps, &ExtractConfig::default()).unwrap().dataset_names();
        assert!(
            names.contains(&"CarePlan:38717003@R4".to_string()),
            "required category is honoured: {names:?}"
        );
    }

    /// A named type that no statement lists is tried (not fatal); common clinical types missing
    /// from the statements are listed in a default plan; a type listed without a patient search
    /// is a clear error.
    #[test]
    fn absent_types_are_tried_or_named() {
        let cfg = ExtractConfig { datasets: vec!["CareTeam".into()], ..ExtractConfig::default() };
        let plan = build(&all(), &cfg).unwrap();
        assert_eq!(plan.dataset_names(), vec!["CareTeam@R4"]);
        assert_eq!(plan.items[0].patient_param, "patient");
        let plan = build(&all(), &ExtractConfig::default()).unwrap();
        assert!(plan.not_offered.contains(&"CareTeam".to_string()), "{:?}", plan.not_offered);
        assert!(!plan.not_offered.contains(&"Observation".to_string()));
        let cfg = ExtractConfig { datasets: vec!["Medication".into()], ..ExtractConfig::default() };
        let err = build(&all(), &cfg).unwrap_err().to_string();
        assert!(err.contains("Medication") && err.contains("remove it"), "{err}");
    }

    /// A selection filters the plan; a listed type without a patient search is an error naming it.
    #[test]
    fn selection_filters_and_unknown_is_named() {
        let cfg = ExtractConfig {
            datasets: vec!["Observation:laboratory".into(), "Encounter".into()],
            ..ExtractConfig::default()
        };
        let plan = build(&all(), &cfg).unwrap();
        assert_eq!(plan.dataset_names(), vec!["Encounter@R4", "Observation:laboratory@R4"]);
        let cfg =
            ExtractConfig { datasets: vec!["List".into(), "Medication".into()], ..ExtractConfig::default() };
        let err = build(&all(), &cfg).unwrap_err();
        assert!(err.to_string().contains("Medication"), "{err}");
    }

    /// A non-CapabilityStatement body is rejected naming what came; a non-JSON body keeps the
    /// parse error.
    #[test]
    fn rejects_non_capability_statement() {
        let err = Capabilities::parse(br#"{"resourceType":"Bundle"}"#).unwrap_err();
        assert!(matches!(&err, StatementError::NotAStatement { found } if found == "Bundle"), "{err}");
        assert_eq!(err.to_string(), "expected a CapabilityStatement, got Bundle");
        let err = Capabilities::parse(b"<CapabilityStatement/>").unwrap_err();
        assert!(matches!(err, StatementError::Json(_)), "{err}");
    }
}
