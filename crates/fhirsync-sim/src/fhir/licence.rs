//! What one client may see: the datasets its registration leaves out, and licence narrowings
//! switched on at run time.
//!
//! - `ClientRegistration::unauthorized_datasets` (`Type` or `Type:category`): a whole type is a
//!   bare 403; a category is dropped from searches with a 59204 naming the category
//!   ("Client not authorized for Observation - Social History").
//! - [`FhirState::narrow_licence`]: from then on, searches (and Bulk exports) of that dataset by
//!   that client withhold a deterministic part of the records they returned before and carry an
//!   extra 59204 "Client not authorized for `Type - subtype`." next to the remaining data. This
//!   is how a customer narrowing an app's licence between two syncs looks to the client: the
//!   records vanish and a new exclusion appears. Withheld are the odd-numbered generated records
//!   of each patient (item 1, 3, 5, … in generation order: a patient with two or more records of
//!   the dataset always loses at least one, about half are gone) and, among records added by
//!   tests or creates, those whose id hashes odd. Reads by id are not affected.
//!   [`FhirState::widen_licence`] undoes one narrowing, [`FhirState::reset_licences`] all.

use std::collections::HashMap;
use std::sync::RwLock;

use fhirsync_core::FhirVersion;
use serde_json::Value;

use super::FhirState;
use super::catalog::Dataset;
use super::data::Record;
use super::records::Seg;
use super::rng::hash_str;
use super::wire::Issue;
use crate::{Error, Result};

/// One narrowed dataset of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Narrowing {
    /// Licence key: `Type` or `Type:category`.
    pub dataset: String,
    /// Sub-type named in the 59204.
    pub subtype: String,
}

/// Narrowings per client id.
#[derive(Debug, Default)]
pub(crate) struct Licences {
    by_client: RwLock<HashMap<String, Vec<Narrowing>>>,
}

/// The licence of one client for one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Licence {
    /// Datasets left out of the registration.
    pub unlicensed: Vec<String>,
    /// Datasets narrowed at run time.
    pub narrowed: Vec<Narrowing>,
}

impl Licence {
    /// True when the registration leaves `key` out.
    pub(crate) fn excludes(&self, key: &str) -> bool {
        self.unlicensed.iter().any(|u| u == key)
    }

    /// The narrowing of `key`, if any.
    pub(crate) fn narrowing(&self, key: &str) -> Option<&Narrowing> {
        self.narrowed.iter().find(|n| n.dataset == key)
    }
}

impl Narrowing {
    /// The 59204 reported next to the remaining data.
    pub(crate) fn issue(&self) -> Issue {
        let ty = self.dataset.split_once(':').map(|(t, _)| t).unwrap_or(&self.dataset);
        Issue::client_suppressed(ty, &self.subtype)
    }
}

/// True when a narrowed licence withholds generated item `k`.
fn withholds_item(k: usize) -> bool {
    k % 2 == 1
}

/// True when a narrowed licence withholds the stored record `value`.
fn withholds_value(state: &FhirState, value: &Value) -> bool {
    let id = value.get("id").and_then(Value::as_str).unwrap_or("");
    match state.generator.decode(id) {
        Some(Record::Item(_, _, k)) => withholds_item(k),
        _ => hash_str(id) % 2 == 1,
    }
}

/// Licence key of dataset `d` in any version.
fn known_key(key: &str) -> bool {
    Dataset::ALL
        .into_iter()
        .any(|d| FhirVersion::ALL.iter().any(|v| d.license_key(*v).as_deref() == Some(key)))
}

impl FhirState {
    /// Narrows `client_id`'s licence for `dataset` (`"Condition:problem-list-item"`,
    /// `"Procedure"`, …, as in `ClientRegistration::unauthorized_datasets`): its searches of that
    /// dataset then withhold about half of the records (module docs) and carry a 59204 "Client
    /// not authorized for `Type - subtype`. …". Narrowing the same dataset again replaces the
    /// sub-type. Errors when no synthetic dataset has that key.
    pub fn narrow_licence(&self, client_id: &str, dataset: &str, subtype: &str) -> Result<()> {
        if !known_key(dataset) {
            return Err(Error::UnknownDataset { dataset: dataset.to_string() });
        }
        let mut map = self.licences.by_client.write().unwrap();
        let list = map.entry(client_id.to_string()).or_default();
        list.retain(|n| n.dataset != dataset);
        list.push(Narrowing { dataset: dataset.to_string(), subtype: subtype.to_string() });
        Ok(())
    }

    /// Undoes [`FhirState::narrow_licence`] for one client and dataset (no-op when not narrowed).
    pub fn widen_licence(&self, client_id: &str, dataset: &str) {
        if let Some(list) = self.licences.by_client.write().unwrap().get_mut(client_id) {
            list.retain(|n| n.dataset != dataset);
        }
    }

    /// Undoes every licence narrowing of every client.
    pub fn reset_licences(&self) {
        self.licences.by_client.write().unwrap().clear();
    }

    /// The licence of `client_id`, given the datasets its registration leaves out.
    pub(crate) fn licence(&self, client_id: &str, unlicensed: Vec<String>) -> Licence {
        let narrowed = self.licences.by_client.read().unwrap().get(client_id).cloned().unwrap_or_default();
        Licence { unlicensed, narrowed }
    }

    /// Drops the records a narrowed licence withholds from `segs`.
    pub(crate) fn withhold(&self, segs: Vec<Seg>) -> Vec<Seg> {
        let mut out = Vec::with_capacity(segs.len());
        for seg in segs {
            match seg {
                Seg::Range { patient, dataset, start, end } => {
                    out.extend((start..end).filter(|k| !withholds_item(*k)).map(|k| Seg::Range {
                        patient,
                        dataset,
                        start: k,
                        end: k + 1,
                    }))
                }
                Seg::Owned(v) if withholds_value(self, &v) => {}
                other => out.push(other),
            }
        }
        out
    }

    /// True when a narrowed licence withholds the stored record `value`.
    pub(crate) fn withholds(&self, value: &Value) -> bool {
        withholds_value(self, value)
    }
}
