//! Deterministic "the source changed" scenarios for standalone runs.
//!
//! Tests mutate data record by record ([`FhirState::edit_resource`] and friends); a standalone
//! sandbox cannot be driven that way between two syncs, so it can instead be restarted with a
//! churn seed: the same seed always edits, deletes and adds the same records, so a second sync
//! against the restarted sandbox sees a known set of changes.

use serde::Serialize;
use serde_json::json;

use super::FhirState;
use super::catalog::Dataset;
use super::rng::hash;
use crate::Result;

/// What [`FhirState::churn`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChurnSummary {
    /// `(type, id)` of edited records (Encounter status set to `entered-in-error`).
    pub edited: Vec<(String, String)>,
    /// `(type, id)` of deleted records (the patient's first problem-list Condition).
    pub deleted: Vec<(String, String)>,
    /// `(type, id)` of added records (a heart-rate Observation per patient).
    pub added: Vec<(String, String)>,
}

impl FhirState {
    /// Changes the records of `patients` patients picked from `seed`: edits each one's first
    /// Encounter, deletes its first problem-list Condition (when it has one) and adds a vital-sign
    /// Observation. Deterministic for a given seed and population.
    pub fn churn(&self, seed: u64, patients: usize) -> Result<ChurnSummary> {
        let n = self.generator.patients();
        let mut summary = ChurnSummary::default();
        if n == 0 {
            return Ok(summary);
        }
        let mut picked: Vec<usize> = Vec::new();
        let mut j = 0u64;
        while picked.len() < patients.min(n) {
            let i = (hash(&[seed, 0xC4_0A_11, j]) % n as u64) as usize;
            j += 1;
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        for i in picked {
            let pid = self.generator.patient_id(i);
            if !self.patient_exists(&pid) {
                continue;
            }
            if self.generator.count(i, Dataset::Encounters) > 0 {
                let id = self.generator.item_id(i, Dataset::Encounters, 0);
                if self.edit_resource("Encounter", &id, |e| e["status"] = json!("entered-in-error")).is_ok() {
                    summary.edited.push(("Encounter".into(), id));
                }
            }
            if self.generator.count(i, Dataset::Problems) > 0 {
                let id = self.generator.item_id(i, Dataset::Problems, 0);
                if self.delete_resource("Condition", &id).is_ok() {
                    summary.deleted.push(("Condition".into(), id));
                }
            }
            let added = self.add_resource(json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}], "text": "Vital Signs"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Pulse"},
                "subject": {"reference": format!("Patient/{pid}")},
                "effectiveDateTime": "2026-01-02T09:00:00Z",
                "valueQuantity": {"value": 60 + (hash(&[seed, i as u64]) % 40), "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            }))?;
            summary.added.push(("Observation".into(), added));
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::super::FhirConfig;
    use super::*;
    use fhirsync_core::FhirVersion;

    /// Churn is deterministic per seed and its changes are visible.
    #[test]
    fn churn_is_deterministic_and_visible() {
        let a = FhirState::new(FhirConfig::default());
        let b = FhirState::new(FhirConfig::default());
        let sa = a.churn(3, 5).unwrap();
        let sb = b.churn(3, 5).unwrap();
        assert_eq!(sa.edited, sb.edited);
        assert_eq!(sa.deleted, sb.deleted);
        assert_eq!(sa.added.len(), 5);
        let (ty, id) = &sa.edited[0];
        assert_eq!(a.resource(FhirVersion::R4, ty, id).unwrap()["status"], "entered-in-error");
        if let Some((ty, id)) = sa.deleted.first() {
            assert!(a.resource(FhirVersion::R4, ty, id).is_none());
        }
        let c = FhirState::new(FhirConfig::default());
        assert_ne!(c.churn(4, 5).unwrap().edited, sa.edited, "another seed changes other records");
    }
}
