//! `POST {base}/{Type}`: create, for the types Epic advertises it on (R4: AllergyIntolerance,
//! BodyStructure, Communication, ConceptMap, Condition, DocumentReference, Observation, Patient,
//! Procedure, QuestionnaireResponse, ServiceRequest; STU3: AllergyIntolerance, Condition,
//! DocumentReference, Goal, Observation, Patient; DSTU2: none). Answers 201 with `Location`
//! and an empty body; the resource is stored in the overlay so later searches and reads see it.
//! Other types answer 405 with an OperationOutcome.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::FhirState;
use super::catalog::{self, TAG_CREATED};
use super::ids::IdParts;
use super::overlay::Added;
use super::records::patient_id_of;
use super::routes::Call;
use super::wire::{self, Issue};
use crate::{Error, Result};

fn invalid(call: &Call, text: &str) -> Response {
    wire::error(
        StatusCode::BAD_REQUEST,
        call.format,
        &[Issue::new(
            "fatal",
            "structure",
            "4100",
            "The resource could not be parsed or failed basic FHIR validation rules.",
        )
        .with_diagnostics(text)],
    )
}

/// The patient a resource belongs to (`subject` or `patient` reference).
pub(crate) fn patient_of(resource: &Value) -> Option<String> {
    ["subject", "patient"]
        .iter()
        .filter_map(|k| resource.get(*k)?.get("reference")?.as_str())
        .find(|r| r.contains("Patient/") || !r.contains('/'))
        .map(|r| patient_id_of(r).to_string())
}

impl FhirState {
    /// Stores a new resource (assigning a fresh Epic-shaped id); returns the id.
    pub(crate) fn insert_new(&self, ty: &str, mut value: Value) -> Result<String> {
        let patient_id = patient_of(&value);
        if ty != "Patient" && catalog::patient_scoped(ty) {
            match &patient_id {
                Some(p) if self.patient_exists(p) => {}
                Some(p) => return Err(Error::UnknownPatient { id: p.clone() }),
                None => return Err(Error::MissingPatient { resource_type: ty.to_string() }),
            }
        }
        let n = self.overlay.next_counter();
        let id = self.generator.ids().encode(IdParts { tag: TAG_CREATED, patient: n, item: 0 });
        if let Some(obj) = value.as_object_mut() {
            obj.insert("id".into(), id.clone().into());
        }
        self.overlay.add(Added { ty: ty.to_string(), id: id.clone(), patient_id, value: Arc::new(value) });
        Ok(id)
    }
}

/// Handles a create.
pub(crate) fn create(call: &Call, ty: &str, body: &[u8]) -> Response {
    if !catalog::creatable(call.version, ty) {
        return wire::error(
            StatusCode::METHOD_NOT_ALLOWED,
            call.format,
            &[Issue::new(
                "fatal",
                "not-supported",
                "4100",
                "The resource request contained an invalid interaction.",
            )
            .with_diagnostics(format!("{ty}.Create is not supported on {}", call.version))],
        );
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return invalid(call, "The body is not a JSON object."),
        Err(e) => return invalid(call, &format!("The body is not valid JSON: {e}")),
    };
    if value.get("resourceType").and_then(Value::as_str) != Some(ty) {
        return invalid(call, &format!("resourceType must be {ty}"));
    }
    match call.st.fhir.insert_new(ty, value) {
        Ok(id) => {
            let location = format!("{}/{ty}/{id}", call.base);
            let mut resp = StatusCode::CREATED.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => invalid(call, &e.to_string()),
    }
}

impl FhirState {
    /// Every resource of type `ty` created so far (by `POST` or [`FhirState::add_resource`]),
    /// oldest first, as first stored (later edits not applied); deleted ones are left out.
    pub fn created(&self, ty: &str) -> Vec<Value> {
        self.overlay
            .added(ty, None)
            .into_iter()
            .filter(|a| !matches!(self.overlay.fate(ty, &a.id), super::overlay::Fate::Deleted))
            .map(|a| (*a.value).clone())
            .collect()
    }
}
