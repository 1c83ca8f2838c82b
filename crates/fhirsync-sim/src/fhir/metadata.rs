//! `GET {base}/metadata`: CapabilityStatement (R4, STU3) or Conformance (DSTU2) with the SMART
//! `oauth-uris` security extension pointing at the simulator's authorize and token endpoints.
//!
//! Each resource lists the search parameters the simulator honours, with Epic's documentation
//! texts where the rules depend on them: R4 CarePlan `category` says "This is a required search
//! parameter." (as Epic's R4 statement); RelatedPerson and the other `_id`-only types list only
//! `_id` and `_count`. The generic SMART profile leaves CareTeam out of the statement although it
//! serves CareTeam data.

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::catalog;
use super::config::ServerProfile;
use super::search::known_params;
use crate::SimState;

/// Documentation of search parameter `name` of `ty`.
fn documentation(version: FhirVersion, ty: &str, name: &str) -> Option<String> {
    Some(match (ty, name) {
        (_, "_count") => "Number of results per page.".to_string(),
        (_, "_id") => "FHIR resource IDs for the desired resources. Can be used in combination with _count, \
                       _include, and _revInclude. All others will be ignored."
            .to_string(),
        ("CarePlan", "category") if version == FhirVersion::R4 => {
            "Search for CarePlans of the given type. This is a required search parameter.".to_string()
        }
        ("Observation", "category") => {
            "Search for Observations by category. Either category or code must be specified.".to_string()
        }
        (_, "patient" | "subject") => format!(
            "Search for {ty} resources for a specified patient ID. You can use \"patient\" or \"subject\" \
             equivalently, but they cannot be used at the same time for different references."
        ),
        (_, "identifier") if ty == "Patient" => {
            "Search by identifier, as [system]|[value] or [value] (any system).".to_string()
        }
        _ => return None,
    })
}

/// The `searchParam` list of `ty`.
fn search_params(version: FhirVersion, ty: &str) -> Vec<Value> {
    let kind = |name: &str| match name {
        "patient" | "subject" => "reference",
        "family" | "given" | "name" => "string",
        "birthdate" => "date",
        _ => "token",
    };
    known_params(ty)
        .iter()
        .filter(|n| **n != "_id")
        .map(|n| (*n, kind(n)))
        .chain([("_count", "number"), ("_id", "token")])
        .map(|(name, kind)| {
            let mut p = json!({"name": name, "type": kind});
            if let Some(d) = documentation(version, ty, name) {
                p["documentation"] = d.into();
            }
            p
        })
        .collect()
}

/// The statement of `version`.
pub(crate) fn statement(st: &SimState, version: FhirVersion) -> Value {
    let (resource_type, fhir_version) = match version {
        FhirVersion::R4 => ("CapabilityStatement", "4.0.1"),
        FhirVersion::Stu3 => ("CapabilityStatement", "3.0.1"),
        FhirVersion::Dstu2 => ("Conformance", "1.0.2"),
    };
    let generic = st.fhir.config.profile == ServerProfile::GenericSmart;
    let resources: Vec<Value> = catalog::types(version)
        .iter()
        .filter(|ty| !(generic && **ty == "CareTeam"))
        .map(|&ty| {
            let mut interactions = vec![json!({"code": "read"}), json!({"code": "search-type"})];
            if catalog::creatable(version, ty) {
                interactions.push(json!({"code": "create"}));
            }
            let params = search_params(version, ty);
            let mut r = json!({
                "type": ty,
                "interaction": interactions,
                "readHistory": false,
                "updateCreate": false,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchInclude": ["*"],
                "searchParam": params,
            });
            if ty == "Group"
                && version == FhirVersion::R4
                && let Some(obj) = r.as_object_mut()
            {
                obj.insert(
                    "operation".into(),
                    json!([{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]),
                );
            }
            r
        })
        .collect();
    let mut s = json!({
        "resourceType": resource_type,
        "status": "active",
        "date": "2026-05-01T00:00:00Z",
        "publisher": if generic { "Generic SMART on FHIR server (simulated)" } else { "Epic Systems Corporation (simulated)" },
        "kind": "instance",
        "software": if generic { json!({"name": "Generic FHIR server", "version": "1.0"}) } else { json!({"name": "Epic", "version": "May 2026"}) },
        "implementation": {"description": "fhirsync Epic simulator", "url": st.fhir_base(version)},
        "fhirVersion": fhir_version,
        "format": ["xml", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": st.authorize_url()},
                        {"url": "token", "valueUri": st.token_url()},
                    ],
                }],
                "service": [{
                    "coding": [{"system": "http://hl7.org/fhir/restful-security-service", "code": "SMART-on-FHIR"}],
                    "text": "OAuth",
                }],
            },
            "resource": resources,
        }],
    });
    if version == FhirVersion::R4
        && let Some(obj) = s.as_object_mut()
    {
        obj.insert(
            "instantiates".into(),
            json!(["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]),
        );
    }
    s
}
