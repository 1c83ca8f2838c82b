//! `GET {base}/metadata`: CapabilityStatement (R4, STU3) or Conformance (DSTU2) with the SMART
//! `oauth-uris` security extension pointing at the simulator's authorize and token endpoints.

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::catalog::{self, Dataset};
use crate::SimState;

/// The statement of `version`.
pub(crate) fn statement(st: &SimState, version: FhirVersion) -> Value {
    let (resource_type, fhir_version) = match version {
        FhirVersion::R4 => ("CapabilityStatement", "4.0.1"),
        FhirVersion::Stu3 => ("CapabilityStatement", "3.0.1"),
        FhirVersion::Dstu2 => ("Conformance", "1.0.2"),
    };
    let resources: Vec<Value> = catalog::types(version)
        .iter()
        .map(|&ty| {
            let mut interactions = vec![json!({"code": "read"}), json!({"code": "search-type"})];
            if catalog::creatable(version, ty) {
                interactions.push(json!({"code": "create"}));
            }
            let mut params = vec![json!({"name": "_id", "type": "token"})];
            if catalog::patient_scoped(ty) {
                params.push(json!({"name": "patient", "type": "reference"}));
                params.push(json!({"name": "subject", "type": "reference"}));
            }
            if Dataset::of_type(version, ty).any(|d| d.category().is_some()) {
                params.push(json!({"name": "category", "type": "token"}));
                params.push(json!({"name": "code", "type": "token"}));
            }
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
        "publisher": "Epic Systems Corporation (simulated)",
        "kind": "instance",
        "software": {"name": "Epic", "version": "May 2026"},
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
