//! Patient lists (`List`) and Groups.
//!
//! STU3: `List?code=patientlist&identifier=systemlist|N`; R4:
//! `List?code=patients&identifier=urn:oid:1.2.840.114350.1.13.0.1.7.2.806567|N`. Both answer a
//! searchset of `List` resources whose `entry[].item.reference` is `Patient/<id>`. Groups (R4)
//! are read at `Group/{id}` (members in `member[].entity`) and exported with `$export`.

use std::sync::Arc;

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::FhirState;
use super::catalog::TAG_LIST;
use super::config::PatientListConfig;
use super::ids::IdParts;
use super::records::Seg;
use super::search::SearchRequest;

/// Identifier system of patient lists on STU3.
pub const STU3_LIST_SYSTEM: &str = "systemlist";
/// Identifier system of patient lists on R4.
pub const R4_LIST_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.806567";

impl FhirState {
    /// FHIR id of the patient list with Epic record id `list_id`.
    pub fn list_fhir_id(&self, list_id: u32) -> String {
        self.generator.ids().encode(IdParts { tag: TAG_LIST, patient: list_id, item: 0 })
    }

    /// Patient indices of group `id`.
    pub(crate) fn group_members(&self, id: &str) -> Option<Vec<usize>> {
        let g = self.config.groups.iter().find(|g| g.id == id)?;
        Some(g.members.resolve(self.generator.patients()))
    }

    fn list_resource(&self, version: FhirVersion, list: &PatientListConfig) -> Value {
        let entries: Vec<Value> = list
            .members
            .resolve(self.generator.patients())
            .into_iter()
            .map(|i| self.generator.patient_id(i))
            .filter(|id| self.patient_exists(id))
            .map(|id| json!({"item": {"reference": format!("Patient/{id}")}}))
            .collect();
        let (system, code) = match version {
            FhirVersion::R4 => (R4_LIST_SYSTEM, "patients"),
            _ => (STU3_LIST_SYSTEM, "patientlist"),
        };
        json!({
            "resourceType": "List",
            "id": self.list_fhir_id(list.id),
            "identifier": [{"use": "usual", "system": system, "value": list.id.to_string()}],
            "status": "current",
            "mode": "working",
            "title": list.title,
            "code": {"coding": [{"system": "http://open.epic.com/FHIR/StructureDefinition/list-type", "code": code}], "text": "Patient List"},
            "entry": entries,
        })
    }

    /// The List with FHIR id `id`.
    pub(crate) fn list_by_fhir_id(&self, id: &str) -> Option<Value> {
        let parts = self.generator.ids().decode(id)?;
        if parts.tag != TAG_LIST {
            return None;
        }
        let list = self.config.lists.iter().find(|l| l.id == parts.patient)?;
        Some(self.list_resource(FhirVersion::R4, list))
    }

    /// Patient-list search; `None` when the request is not a patient-list search.
    pub(crate) fn search_patient_lists(&self, req: &SearchRequest<'_>) -> Option<Vec<Seg>> {
        let code = req.params.iter().find(|(k, _)| k == "code").map(|(_, v)| v.as_str());
        if !matches!(code, Some("patientlist" | "patients")) {
            return None;
        }
        let Some(identifier) = req.params.iter().find(|(k, _)| k == "identifier").map(|(_, v)| v.as_str())
        else {
            return Some(Vec::new());
        };
        let number = identifier.rsplit_once('|').map(|(_, n)| n).unwrap_or(identifier);
        let segs = number
            .parse::<u32>()
            .ok()
            .and_then(|n| self.config.lists.iter().find(|l| l.id == n))
            .map(|l| vec![Seg::Owned(Arc::new(self.list_resource(req.version, l)))])
            .unwrap_or_default();
        Some(segs)
    }

    /// The Group resource `id`.
    pub(crate) fn group_resource(&self, id: &str) -> Option<Value> {
        let g = self.config.groups.iter().find(|g| g.id == id)?;
        let members: Vec<Value> = g
            .members
            .resolve(self.generator.patients())
            .into_iter()
            .map(|i| self.generator.patient_id(i))
            .filter(|pid| self.patient_exists(pid))
            .map(|pid| json!({"entity": {"reference": format!("Patient/{pid}")}, "inactive": false}))
            .collect();
        let group = json!({
            "resourceType": "Group",
            "id": g.id,
            "type": "person",
            "actual": true,
            "name": g.name,
            "quantity": members.len(),
            "member": members,
        });
        match self.config.bulk.urn_uuid_members {
            true => Some(self.urn_uuid_group(group)),
            false => Some(group),
        }
    }
}
