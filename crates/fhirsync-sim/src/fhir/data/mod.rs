//! Deterministic synthetic clinical data, generated on demand.
//!
//! Nothing is materialised up front: patient `i` and item `k` of one of its datasets are pure
//! functions of `(seed, i, dataset, k)`. A search only computes the per-dataset counts and then
//! generates the items of the requested page, so 100,000 patients cost no memory.

mod clinical;
mod codes;
mod patient;

use std::ops::Range;

use chrono::{Duration as Days, NaiveDate};
use fhirsync_core::FhirVersion;
use serde_json::Value;

use super::catalog::{Dataset, TAG_PATIENT};
use super::ids::{IdCodec, IdParts};
use super::rng::Rng;
pub(crate) use patient::{Demographics, created_identifiers};

/// What a generated id points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// A Patient.
    Patient(usize),
    /// Item `k` of `dataset` of patient `i`.
    Item(usize, Dataset, usize),
}

/// The generator for one seed and population.
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    seed: u64,
    patients: usize,
    sandbox_identities: bool,
    care_teams: bool,
    ids: IdCodec,
}

/// Reference date of all synthetic clinical dates (keeps output independent of the clock).
fn anchor() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default()
}

/// `anchor - days` as `YYYY-MM-DD`.
pub(crate) fn date_before(days: u64) -> String {
    (anchor() - Days::days(days as i64)).format("%Y-%m-%d").to_string()
}

impl Generator {
    /// Generator for `patients` patients.
    pub(crate) fn new(seed: u64, patients: usize, sandbox_identities: bool) -> Generator {
        Generator { seed, patients, sandbox_identities, care_teams: false, ids: IdCodec::new(seed) }
    }

    /// The same generator, with CareTeam data (generic SMART profile) or without (Epic).
    pub(crate) fn with_care_teams(mut self, care_teams: bool) -> Generator {
        self.care_teams = care_teams;
        self
    }

    /// Number of patients.
    pub(crate) fn patients(&self) -> usize {
        self.patients
    }

    /// The id codec.
    pub(crate) fn ids(&self) -> &IdCodec {
        &self.ids
    }

    fn rng(&self, parts: &[u64]) -> Rng {
        Rng::seeded(self.seed, parts)
    }

    /// FHIR id of patient `i`.
    pub(crate) fn patient_id(&self, i: usize) -> String {
        match self.sandbox(i) {
            Some(p) => p.id.to_string(),
            None => self.ids.encode(IdParts { tag: TAG_PATIENT, patient: i as u32, item: 0 }),
        }
    }

    /// FHIR id of item `k` of `dataset` of patient `i`.
    pub(crate) fn item_id(&self, i: usize, dataset: Dataset, k: usize) -> String {
        self.ids.encode(IdParts { tag: dataset.tag(), patient: i as u32, item: k as u32 })
    }

    /// What `id` points at, if it is a generated id of this population.
    pub(crate) fn decode(&self, id: &str) -> Option<Record> {
        if self.sandbox_identities
            && let Some(pos) = patient::SANDBOX.iter().position(|p| p.id == id)
        {
            return (pos < self.patients).then_some(Record::Patient(pos));
        }
        let parts = self.ids.decode(id)?;
        let i = parts.patient as usize;
        if i >= self.patients {
            return None;
        }
        if parts.tag == TAG_PATIENT {
            return (self.sandbox(i).is_none() && parts.item == 0).then_some(Record::Patient(i));
        }
        let dataset = Dataset::from_tag(parts.tag)?;
        let k = parts.item as usize;
        (k < self.count(i, dataset)).then_some(Record::Item(i, dataset, k))
    }

    /// Patients with an identifier `[system|]value` (any system when `system` is `None`).
    pub(crate) fn patients_by_identifier(&self, system: Option<&str>, value: &str) -> Vec<usize> {
        patient::by_identifier(self, system, value)
    }

    /// The Epic identifiers of patient `i`.
    #[cfg(test)]
    pub(crate) fn identifiers(&self, i: usize) -> Vec<patient::Ident> {
        patient::identifiers(self, i)
    }

    /// The seed.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    fn sandbox(&self, i: usize) -> Option<&'static patient::SandboxPatient> {
        if self.sandbox_identities { patient::SANDBOX.get(i) } else { None }
    }

    /// Demographics of patient `i` (cheap: used to scan for Patient searches).
    pub(crate) fn demographics(&self, i: usize) -> Demographics {
        patient::demographics(self, i)
    }

    /// The Patient resource of patient `i`.
    pub(crate) fn patient(&self, i: usize, version: FhirVersion) -> Value {
        patient::resource(self, i, version)
    }

    /// Number of items of `dataset` patient `i` has.
    pub(crate) fn count(&self, i: usize, dataset: Dataset) -> usize {
        if dataset == Dataset::CareTeams && !self.care_teams {
            return 0;
        }
        if let Some(n) = self.sandbox(i).and_then(|p| p.counts.iter().find(|(d, _)| *d == dataset)) {
            return n.1;
        }
        let mut r = self.rng(&[i as u64, u64::from(dataset.tag()), 0xC0]);
        let heavy = r.chance(6);
        let n = match dataset {
            Dataset::Vitals if heavy => r.range(1001, 1600),
            Dataset::Vitals => r.range(0, 300),
            Dataset::Labs => r.range(0, 120),
            Dataset::SocialHistory => {
                if r.chance(40) {
                    0
                } else {
                    r.range(1, 4)
                }
            }
            Dataset::Problems => r.range(0, 8),
            Dataset::EncounterDiagnoses => r.range(0, 12),
            Dataset::HealthConcerns => {
                if r.chance(80) {
                    0
                } else {
                    r.range(1, 2)
                }
            }
            Dataset::Encounters => r.range(1, 40),
            Dataset::Medications => r.range(0, 15),
            Dataset::Allergies => {
                if r.chance(35) {
                    0
                } else {
                    r.range(1, 4)
                }
            }
            Dataset::Procedures => r.range(0, 10),
            Dataset::Immunizations => r.range(0, 12),
            Dataset::Reports => r.range(0, 20),
            Dataset::Documents => r.range(0, 30),
            Dataset::CarePlansLongitudinal => u64::from(r.chance(50)),
            Dataset::CarePlansEncounter => r.range(0, 3),
            Dataset::CarePlansAssessPlan => r.range(0, 4),
            Dataset::CareTeams => r.range(1, 2),
        };
        n as usize
    }

    /// Item `k` of `dataset` of patient `i`, shaped for `version`.
    pub(crate) fn item(&self, i: usize, dataset: Dataset, k: usize, version: FhirVersion) -> Value {
        self.items(i, dataset, k..k + 1, version).pop().unwrap_or_default()
    }

    /// The Binary behind DocumentReference item `k` of patient `i` (its note as HTML).
    pub(crate) fn binary(&self, i: usize, k: usize, version: FhirVersion) -> Value {
        use base64::Engine;
        let doc = self.item(i, Dataset::Documents, k, version);
        let title = doc.pointer("/type/text").and_then(Value::as_str).unwrap_or("Note");
        let html = format!(
            "<html><body><h1>{title}</h1><p>Synthetic note for {}.</p></body></html>",
            self.demographics(i).display()
        );
        serde_json::json!({
            "resourceType": "Binary",
            "id": self.item_id(i, Dataset::Documents, k),
            "contentType": "text/html",
            "data": base64::engine::general_purpose::STANDARD.encode(html),
        })
    }

    /// Items `range` of `dataset` of patient `i` (patient context computed once).
    pub(crate) fn items(
        &self,
        i: usize,
        dataset: Dataset,
        range: Range<usize>,
        version: FhirVersion,
    ) -> Vec<Value> {
        let patient_id = self.patient_id(i);
        let patient_name = self.demographics(i).display();
        let encounters = if version == FhirVersion::Dstu2 || dataset == Dataset::Encounters {
            0
        } else {
            self.count(i, Dataset::Encounters)
        };
        let labs = if dataset == Dataset::Reports { self.count(i, Dataset::Labs) } else { 0 };
        range
            .map(|k| {
                let mut r = self.rng(&[i as u64, u64::from(dataset.tag()), k as u64]);
                let ctx = clinical::Ctx {
                    id: self.item_id(i, dataset, k),
                    patient_id: &patient_id,
                    patient_name: &patient_name,
                    version,
                    // Spread items over ten years, newest first.
                    days_ago: (k as u64) * 3 + r.below(3),
                    encounter_id: (encounters > 0)
                        .then(|| self.item_id(i, Dataset::Encounters, k % encounters)),
                    results: (0..labs.min(3))
                        .map(|j| self.item_id(i, Dataset::Labs, (k * 3 + j) % labs))
                        .collect(),
                };
                clinical::generate(dataset, &ctx, &mut r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated id decodes back to the record it was made for.
    #[test]
    fn generated_ids_decode() {
        let g = Generator::new(7, 30, true);
        for i in 0..30 {
            assert_eq!(g.decode(&g.patient_id(i)), Some(Record::Patient(i)));
            for d in Dataset::ALL {
                if g.count(i, d) > 0 {
                    assert_eq!(g.decode(&g.item_id(i, d, 0)), Some(Record::Item(i, d, 0)));
                }
                assert_eq!(g.decode(&g.item_id(i, d, g.count(i, d))), None);
            }
        }
        assert_eq!(g.decode(&g.patient_id(0)), Some(Record::Patient(0)));
        assert_eq!(g.patient_id(0), "erXuFYUfucBZaryVksYEcMg3");
    }

    /// Every identifier of every patient (sandbox and generated) resolves back to that patient,
    /// under its own system and without one; under another system it does not.
    #[test]
    fn identifiers_resolve() {
        let g = Generator::new(42, 2000, true);
        for i in (0..20).chain([999, 1999]) {
            for id in g.identifiers(i) {
                assert_eq!(g.patients_by_identifier(Some(id.system), &id.value), [i], "{id:?}");
                assert!(g.patients_by_identifier(None, &id.value).contains(&i), "{id:?}");
                assert!(
                    !g.patients_by_identifier(Some("urn:oid:9.9.9"), &id.value).contains(&i),
                    "{id:?} under another system"
                );
            }
        }
        let jason = g.identifiers(7);
        let epi: Vec<_> = jason.iter().filter(|i| i.type_text == Some("EPI")).collect();
        assert_eq!(epi.len(), 1);
        assert_eq!(epi[0].value, "203675");
        assert!(jason.iter().all(|i| i.type_text != Some("MRN")));
    }

    /// Some patients have more than 1000 vital signs (so searches page) and some have none in a
    /// category (so searches return an outcome-only bundle).
    #[test]
    fn counts_vary() {
        let g = Generator::new(42, 200, false);
        assert!((0..200).any(|i| g.count(i, Dataset::Vitals) > 1000));
        assert!((0..200).any(|i| g.count(i, Dataset::SocialHistory) == 0));
        assert!((0..200).any(|i| g.count(i, Dataset::HealthConcerns) > 0));
    }
}
