//! Record access across the generator, the mutation overlay and the configured lists/groups:
//! read by id, and the per-patient result segments searches are built from.

use std::sync::Arc;

use fhirsync_core::FhirVersion;
use serde_json::Value;

use super::FhirState;
use super::catalog::Dataset;
use super::data::Record;
use super::overlay::Fate;

/// A run of search results, materialised only when a page needs it.
#[derive(Debug, Clone)]
pub(crate) enum Seg {
    /// Items `start..end` of one generated dataset of one patient.
    Range { patient: usize, dataset: Dataset, start: usize, end: usize },
    /// A generated Patient.
    Patient(usize),
    /// A stored body (edited, added, or a list/group).
    Owned(Arc<Value>),
}

impl Seg {
    /// Number of results in the segment.
    pub(crate) fn len(&self) -> usize {
        match self {
            Seg::Range { start, end, .. } => end - start,
            _ => 1,
        }
    }
}

/// Extracts the patient id from `id`, `Patient/id` or `{base}/Patient/id`.
pub(crate) fn patient_id_of(reference: &str) -> &str {
    reference.rsplit_once("Patient/").map(|(_, id)| id).unwrap_or(reference).trim_end_matches('/')
}

impl FhirState {
    /// Index of the live generated patient `id`.
    pub(crate) fn patient_index(&self, id: &str) -> Option<usize> {
        match self.generator.decode(id) {
            Some(Record::Patient(i)) if !matches!(self.overlay.fate("Patient", id), Fate::Deleted) => Some(i),
            _ => None,
        }
    }

    /// True when `id` names a live patient (generated or added).
    pub(crate) fn patient_exists(&self, id: &str) -> bool {
        self.patient_index(id).is_some() || self.overlay.find_added("Patient", id).is_some()
    }

    /// Reads `(ty, id)` as served by `version`.
    pub(crate) fn read(&self, version: FhirVersion, ty: &str, id: &str) -> Option<Arc<Value>> {
        match self.overlay.fate(ty, id) {
            Fate::Deleted => return None,
            Fate::Edited(v) => return Some(v),
            Fate::Unchanged => {}
        }
        if let Some(a) = self.overlay.find_added(ty, id) {
            return Some(a.value);
        }
        match (ty, self.generator.decode(id)) {
            ("Patient", Some(Record::Patient(i))) => Some(Arc::new(self.generator.patient(i, version))),
            (_, Some(Record::Item(i, d, k))) if d.resource_type(version) == Some(ty) => {
                Some(Arc::new(self.generator.item(i, d, k, version)))
            }
            ("Binary", Some(Record::Item(i, Dataset::Documents, k))) => {
                Some(Arc::new(self.generator.binary(i, k, version)))
            }
            ("List", _) => self.list_by_fhir_id(id).map(Arc::new),
            ("Group", _) if version == FhirVersion::R4 => self.group_resource(id).map(Arc::new),
            _ => None,
        }
    }

    /// Result segments of `dataset` for patient `i`, with edits and deletions applied.
    pub(crate) fn dataset_segments(
        &self,
        version: FhirVersion,
        i: usize,
        dataset: Dataset,
        out: &mut Vec<Seg>,
    ) {
        let n = self.generator.count(i, dataset);
        if n == 0 {
            return;
        }
        if !self.overlay.touches(i) {
            out.push(Seg::Range { patient: i, dataset, start: 0, end: n });
            return;
        }
        let Some(ty) = dataset.resource_type(version) else { return };
        for k in 0..n {
            match self.overlay.fate(ty, &self.generator.item_id(i, dataset, k)) {
                Fate::Unchanged => match out.last_mut() {
                    Some(Seg::Range { patient, dataset: d, end, .. })
                        if *patient == i && *d == dataset && *end == k =>
                    {
                        *end += 1
                    }
                    _ => out.push(Seg::Range { patient: i, dataset, start: k, end: k + 1 }),
                },
                Fate::Edited(v) => out.push(Seg::Owned(v)),
                Fate::Deleted => {}
            }
        }
    }

    /// Materialises results `offset..offset + count` of `segs`.
    pub(crate) fn materialise(
        &self,
        version: FhirVersion,
        segs: &[Seg],
        offset: usize,
        count: usize,
    ) -> Vec<Arc<Value>> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut skip = offset;
        for seg in segs {
            if out.len() == count {
                break;
            }
            let len = seg.len();
            if skip >= len {
                skip -= len;
                continue;
            }
            match seg {
                Seg::Range { patient, dataset, start, end } => {
                    let from = start + skip;
                    let to = (*end).min(from + (count - out.len()));
                    out.extend(
                        self.generator.items(*patient, *dataset, from..to, version).into_iter().map(Arc::new),
                    );
                }
                Seg::Patient(i) => out.push(Arc::new(self.generator.patient(*i, version))),
                Seg::Owned(v) => out.push(v.clone()),
            }
            skip = 0;
        }
        out
    }
}
