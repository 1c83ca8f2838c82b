//! Data mutation between runs: edits, deletions and additions layered over the generated data.
//!
//! The overlay is keyed by `(resourceType, id)` and applies to every FHIR version (an edit stores
//! one JSON body that all versions serve). Created resources (`POST`) live here too. A patient
//! that has no overlay entries is still served straight from the generator.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// A resource that exists only in the overlay.
#[derive(Debug, Clone)]
pub(crate) struct Added {
    /// Resource type.
    pub ty: String,
    /// FHIR id.
    pub id: String,
    /// FHIR id of the patient it belongs to (`None` for a Patient or an unlinked resource).
    pub patient_id: Option<String>,
    /// Body.
    pub value: Arc<Value>,
}

#[derive(Debug, Default)]
struct Inner {
    edits: HashMap<(String, String), Arc<Value>>,
    deleted: HashSet<(String, String)>,
    added: Vec<Added>,
    /// Patients with at least one edit or deletion of a generated record.
    touched: HashSet<usize>,
    next_created: u32,
}

/// The mutation overlay.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    inner: RwLock<Inner>,
}

/// How the overlay changes one generated record.
#[derive(Debug, Clone)]
pub(crate) enum Fate {
    /// Served as generated.
    Unchanged,
    /// Replaced by this body.
    Edited(Arc<Value>),
    /// Gone.
    Deleted,
}

impl Overlay {
    /// True when patient `i` has edits or deletions of generated records.
    pub(crate) fn touches(&self, i: usize) -> bool {
        let inner = self.inner.read().unwrap();
        !inner.touched.is_empty() && inner.touched.contains(&i)
    }

    /// What happened to `(ty, id)`.
    pub(crate) fn fate(&self, ty: &str, id: &str) -> Fate {
        let inner = self.inner.read().unwrap();
        if inner.deleted.is_empty() && inner.edits.is_empty() {
            return Fate::Unchanged;
        }
        let key = (ty.to_string(), id.to_string());
        if inner.deleted.contains(&key) {
            Fate::Deleted
        } else if let Some(v) = inner.edits.get(&key) {
            Fate::Edited(v.clone())
        } else {
            Fate::Unchanged
        }
    }

    /// Stores a replacement body for a generated record of patient `patient`.
    pub(crate) fn edit(&self, ty: &str, id: &str, patient: Option<usize>, value: Value) {
        let mut inner = self.inner.write().unwrap();
        let key = (ty.to_string(), id.to_string());
        if let Some(a) = inner.added.iter_mut().find(|a| a.ty == ty && a.id == id) {
            a.value = Arc::new(value);
            return;
        }
        inner.deleted.remove(&key);
        inner.edits.insert(key, Arc::new(value));
        if let Some(p) = patient {
            inner.touched.insert(p);
        }
    }

    /// Deletes a record (generated or added).
    pub(crate) fn delete(&self, ty: &str, id: &str, patient: Option<usize>) {
        let mut inner = self.inner.write().unwrap();
        let before = inner.added.len();
        inner.added.retain(|a| !(a.ty == ty && a.id == id));
        if inner.added.len() != before {
            return;
        }
        let key = (ty.to_string(), id.to_string());
        inner.edits.remove(&key);
        inner.deleted.insert(key);
        if let Some(p) = patient {
            inner.touched.insert(p);
        }
    }

    /// Adds a record; returns its position counter (used to mint its id).
    pub(crate) fn next_counter(&self) -> u32 {
        let mut inner = self.inner.write().unwrap();
        inner.next_created += 1;
        inner.next_created
    }

    /// Adds a record.
    pub(crate) fn add(&self, added: Added) {
        self.inner.write().unwrap().added.push(added);
    }

    /// Added records of type `ty` for patient `patient_id` (all of that type when `None`).
    pub(crate) fn added(&self, ty: &str, patient_id: Option<&str>) -> Vec<Added> {
        let inner = self.inner.read().unwrap();
        if inner.added.is_empty() {
            return Vec::new();
        }
        inner
            .added
            .iter()
            .filter(|a| a.ty == ty && (patient_id.is_none() || a.patient_id.as_deref() == patient_id))
            .cloned()
            .collect()
    }

    /// The added record `(ty, id)`.
    pub(crate) fn find_added(&self, ty: &str, id: &str) -> Option<Added> {
        let inner = self.inner.read().unwrap();
        inner.added.iter().find(|a| a.ty == ty && a.id == id).cloned()
    }

    /// Removes every mutation.
    pub(crate) fn clear(&self) {
        *self.inner.write().unwrap() = Inner::default();
    }
}
