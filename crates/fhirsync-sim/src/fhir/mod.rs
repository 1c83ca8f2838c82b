//! FHIR side of the simulator: synthetic data, Epic search rules, paging, patient lists, Bulk
//! `$export`, create, fault injection. Owned by the simulator work (issue #2).
//!
//! By default the simulator answers as production Epic does, following `epic-facts.md`
//! (§3.2, §3.3, §3.5, §6, §8): Outside-Record 59204 exclusions next to the data of the eight
//! clinical types (59205 + 59204 on Procedure), exclusions and 4101 together on empty results,
//! outcome entries only on the last page, no 4122, the sandbox patients with Epic's identifier
//! set (Jason Argonaut: EPI 203675), CarePlan searched by its required category, RelatedPerson
//! only by `_id`, creates rewritten as Epic rewrites them and duplicates refused with 59141.
//! [`ServerProfile::GenericSmart`] plays a generic SMART server instead.
//!
//! Module map:
//! - [`config`]: [`FhirConfig`] (population, seed, lists, groups, paging, Bulk, profile);
//! - `data`, `ids`, `rng`, `catalog`: deterministic on-demand generation with Epic-shaped ids;
//! - `search`, `bundle`, `session`, `records`, `lists`: Epic's search rules, outcome entries and
//!   `sessionID` paging;
//! - `outside`: the Outside-Record sub-types Epic withholds from every search;
//! - `licence`: per-client licence (registration, run-time narrowing);
//! - `bulk`, `create`, `metadata`: `$export`, `POST` (Epic's rewrites, 59141), `/metadata`;
//! - `wire`, `xml`: content negotiation (XML by default) and FHIR XML;
//! - [`faults`]: run-time fault switches and the request log;
//! - `overlay`: data mutation between runs.
//!
//! Test hooks live on [`FhirState`] (reach it with `sim.state().fhir`): ids of the synthetic
//! patients, expected counts, data mutation, session expiry, licence narrowing
//! ([`FhirState::narrow_licence`], also on `SimState`), and [`Faults`]. Tokens come from
//! `sim.state().oauth.issue_token(..)`; token expiry is `sim.state().oauth.expire_all_tokens()`.
//!
//! ```
//! use fhirsync_core::FhirVersion;
//! use fhirsync_sim::fhir::{FhirConfig, FhirState, RetryAfter};
//! use serde_json::json;
//!
//! let fhir = FhirState::new(FhirConfig { patients: 100_000, seed: 7, ..FhirConfig::default() });
//! let camila = fhir.patient_id(0); // the first patients carry Epic's sandbox identities
//! assert_eq!(camila, "erXuFYUfucBZaryVksYEcMg3");
//! let vitals = fhir.generated_count(1, "Observation:vital-signs").unwrap();
//! assert!(vitals > 1000); // Derrick Lin: searches page
//!
//! // Data mutation between runs: add, edit, delete.
//! let id = fhir
//!     .add_resource(json!({"resourceType": "Encounter", "status": "finished",
//!                          "subject": {"reference": format!("Patient/{camila}")}}))
//!     .unwrap();
//! fhir.edit_resource("Encounter", &id, |e| e["status"] = json!("cancelled")).unwrap();
//! assert_eq!(fhir.resource(FhirVersion::R4, "Encounter", &id).unwrap()["status"], "cancelled");
//! fhir.delete_resource("Encounter", &id).unwrap();
//! assert!(fhir.resource(FhirVersion::R4, "Encounter", &id).is_none());
//!
//! // The customer narrows a client's licence between two syncs: part of the problem list
//! // vanishes for that client and a 59204 names the withheld sub-type.
//! fhir.narrow_licence("my-client", "Condition:problem-list-item", "Historical Problems").unwrap();
//! fhir.widen_licence("my-client", "Condition:problem-list-item");
//!
//! // Faults for the next requests.
//! fhir.faults.throttle_next(1, RetryAfter::HttpDate(5));
//! fhir.faults.delay_next_creates(1, std::time::Duration::from_secs(2));
//! fhir.faults.fail_next(2, 503);
//! fhir.expire_sessions();
//! ```

mod bulk;
mod bundle;
mod catalog;
mod churn;
pub mod config;
mod create;
mod data;
pub mod faults;
mod ids;
mod licence;
mod lists;
mod metadata;
mod order;
mod outside;
mod overlay;
mod records;
mod rng;
mod routes;
mod search;
mod session;
mod wire;
mod xml;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fhirsync_core::FhirVersion;
use serde_json::Value;

pub use churn::ChurnSummary;
pub use config::{
    BulkConfig, BulkFault, BulkFaultKind, DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_PAGE_SIZE,
    DEFAULT_PATIENTS, DEFAULT_SEED, FhirConfig, GroupConfig, Members, PatientListConfig, ServerProfile,
};
pub use faults::{Faults, RequestRecord, RetryAfter};
pub use lists::{R4_LIST_SYSTEM, STU3_LIST_SYSTEM};
pub use wire::{EPIC_OUTCOME_SYSTEM, FHIR_JSON, FHIR_XML};

use crate::{Error, Result, SimState};
use data::{Generator, Record};
use overlay::{Fate, Overlay};

/// Runtime FHIR state.
#[derive(Debug)]
pub struct FhirState {
    /// Configuration in force.
    pub config: FhirConfig,
    /// Fault switches and the request log.
    pub faults: Faults,
    generator: Generator,
    overlay: Overlay,
    sessions: session::Sessions,
    bulk: bulk::BulkJobs,
    licences: licence::Licences,
}

impl FhirState {
    /// New state from configuration.
    pub fn new(config: FhirConfig) -> Self {
        FhirState {
            generator: Generator::new(config.seed, config.patients, config.sandbox_identities)
                .with_care_teams(config.profile == ServerProfile::GenericSmart),
            config,
            faults: Faults::default(),
            overlay: Overlay::default(),
            sessions: session::Sessions::default(),
            bulk: bulk::BulkJobs::default(),
            licences: licence::Licences::default(),
        }
    }

    /// FHIR id of synthetic patient `index` (`0..config.patients`).
    pub fn patient_id(&self, index: usize) -> String {
        self.generator.patient_id(index)
    }

    /// FHIR ids of all synthetic patients, in index order.
    pub fn patient_ids(&self) -> Vec<String> {
        (0..self.generator.patients()).map(|i| self.generator.patient_id(i)).collect()
    }

    /// Number of generated records of `dataset` (`"Observation:vital-signs"`, `"Encounter"`, …,
    /// as in `ClientRegistration::unauthorized_datasets`) for patient `index`, before mutations.
    pub fn generated_count(&self, index: usize, dataset: &str) -> Option<usize> {
        let d = catalog::Dataset::ALL
            .into_iter()
            .find(|d| FhirVersion::ALL.iter().any(|v| d.license_key(*v).as_deref() == Some(dataset)))?;
        (index < self.generator.patients()).then(|| self.generator.count(index, d))
    }

    /// Lifetime of paging sessions.
    pub fn session_ttl(&self) -> Duration {
        self.config.session_ttl()
    }

    /// Fault injection: every paging session opened so far expires (next page → 400/4113).
    pub fn expire_sessions(&self) {
        self.sessions.expire_all();
    }

    /// Forgets Bulk kick-offs, so the "too recently" window starts afresh.
    pub fn reset_bulk_window(&self) {
        self.bulk.reset_window();
    }

    /// The resource `(resource_type, id)` as `version` serves it now (mutations applied).
    pub fn resource(&self, version: FhirVersion, resource_type: &str, id: &str) -> Option<Value> {
        self.read(version, resource_type, id).map(|v| (*v).clone())
    }

    fn patient_of_record(&self, resource_type: &str, id: &str) -> Result<Option<usize>> {
        if self.overlay.find_added(resource_type, id).is_some() {
            return Ok(None);
        }
        match self.generator.decode(id) {
            Some(Record::Patient(i)) if resource_type == "Patient" => Ok(Some(i)),
            Some(Record::Item(i, d, _))
                if FhirVersion::ALL.iter().any(|v| d.resource_type(*v) == Some(resource_type)) =>
            {
                Ok(Some(i))
            }
            _ => Err(Error::UnknownResource { resource_type: resource_type.to_string(), id: id.to_string() }),
        }
    }

    /// Data mutation: edits `(resource_type, id)` in place (R4 shape is passed to `edit`; the
    /// edited body is then served by every version). Later reads and searches see the change.
    pub fn edit_resource(&self, resource_type: &str, id: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
        let patient = self.patient_of_record(resource_type, id)?;
        if matches!(self.overlay.fate(resource_type, id), Fate::Deleted) {
            return Err(Error::UnknownResource {
                resource_type: resource_type.to_string(),
                id: id.to_string(),
            });
        }
        let mut value = self
            .read(FhirVersion::R4, resource_type, id)
            .or_else(|| self.read(FhirVersion::Dstu2, resource_type, id))
            .map(|v| (*v).clone())
            .ok_or_else(|| Error::UnknownResource {
                resource_type: resource_type.to_string(),
                id: id.to_string(),
            })?;
        edit(&mut value);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("id".into(), id.into());
            obj.insert("resourceType".into(), resource_type.into());
        }
        self.overlay.edit(resource_type, id, patient, value);
        Ok(())
    }

    /// Data mutation: deletes `(resource_type, id)`; reads answer 59008 and searches omit it.
    /// Deleting a Patient also hides it from lists and groups.
    pub fn delete_resource(&self, resource_type: &str, id: &str) -> Result<()> {
        let patient = self.patient_of_record(resource_type, id)?;
        if self.read(FhirVersion::R4, resource_type, id).is_none()
            && self.read(FhirVersion::Dstu2, resource_type, id).is_none()
        {
            return Err(Error::UnknownResource {
                resource_type: resource_type.to_string(),
                id: id.to_string(),
            });
        }
        self.overlay.delete(resource_type, id, patient);
        Ok(())
    }

    /// Data mutation: adds a resource (its `id` is replaced by a fresh Epic-shaped one, which is
    /// returned). Patient-scoped types must reference an existing patient in `subject`/`patient`.
    pub fn add_resource(&self, resource: Value) -> Result<String> {
        let ty = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or(Error::MissingResourceType)?
            .to_string();
        self.insert_new(&ty, resource)
    }

    /// Removes every mutation and created resource.
    pub fn reset_mutations(&self) {
        self.overlay.clear();
    }
}

/// FHIR routes.
pub fn routes() -> Router<Arc<SimState>> {
    routes::routes()
}
