//! Cohort resolution: which patients a search-mode run covers.
//!
//! Epic has no "all patients" search; the patient universe comes from:
//! - a patient list: STU3 `List?code=patientlist&identifier=systemlist|N`, or R4
//!   `List?code=patients&identifier=urn:oid:1.2.840.114350.1.13.0.1.7.2.806567|N` (the
//!   `systemlist` system is translated to Epic's R4 OID). Members are the
//!   `List.entry[].item.reference` values `Patient/<id>`; a List found without `entry` is read by id;
//! - a Group: `Group/{id}` `member[].entity.reference`;
//! - explicit patient ids, and identifiers resolved with `Patient?identifier=system|value`.
//!
//! All sources are combined, de-duplicated, and kept in first-seen order.

use std::collections::HashSet;

use fhirsync_core::FhirVersion;
use fhirsync_fhir::{FhirClient, codes, join};
use serde::Deserialize;
use tracing::{info, warn};
use url::Url;

use crate::config::{CohortConfig, Endpoints, R4_PATIENT_LIST_SYSTEM, parse_list_identifier};
use crate::error::{Error, Result};

/// Restarts of a cohort search after 4113 before giving up.
const MAX_RESTARTS: u32 = 3;

#[derive(Deserialize)]
struct ListWire {
    id: Option<String>,
    #[serde(default)]
    entry: Option<Vec<ListEntryWire>>,
}

#[derive(Deserialize)]
struct ListEntryWire {
    item: Option<ReferenceWire>,
}

#[derive(Deserialize)]
struct ReferenceWire {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct GroupWire {
    #[serde(default)]
    member: Vec<GroupMemberWire>,
}

#[derive(Deserialize)]
struct GroupMemberWire {
    entity: Option<ReferenceWire>,
}

#[derive(Deserialize)]
struct IdWire {
    id: Option<String>,
}

/// The patient id of a `Patient/<id>` reference (relative or absolute URL).
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let mut parts = reference.trim_end_matches('/').rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (ty == "Patient" && !id.is_empty()).then_some(id)
}

/// An ordered, de-duplicated patient id collection.
#[derive(Debug, Default)]
struct Ids {
    seen: HashSet<String>,
    order: Vec<String>,
}

impl Ids {
    fn push(&mut self, id: &str) {
        if self.seen.insert(id.to_string()) {
            self.order.push(id.to_string());
        }
    }
}

/// Every resource of a search, all pages, restarting on 4113.
pub(crate) async fn search_all(
    client: &FhirClient,
    base: &Url,
    resource_type: &str,
    params: &[(String, String)],
) -> Result<Vec<Box<str>>> {
    let mut restarts = 0;
    'restart: loop {
        let mut url = join(base, resource_type)?;
        url.query_pairs_mut().extend_pairs(params);
        let mut out = Vec::new();
        let mut current = url;
        loop {
            let page = match client.page(&current).await {
                Err(e) if e.has_outcome(codes::SESSION_EXPIRED) && restarts < MAX_RESTARTS => {
                    restarts += 1;
                    continue 'restart;
                }
                r => r?,
            };
            if page.has_outcome(codes::SESSION_EXPIRED) && restarts < MAX_RESTARTS {
                restarts += 1;
                continue 'restart;
            }
            out.extend(page.resources);
            match page.next {
                Some(next) => {
                    current =
                        current.join(&next).map_err(|e| Error::Cohort(format!("bad next link: {e}")))?;
                }
                None => return Ok(out),
            }
        }
    }
}

/// Resolves the cohort to ordered, de-duplicated patient ids.
pub async fn resolve(
    client: &FhirClient,
    endpoints: &Endpoints,
    cohort: &CohortConfig,
) -> Result<Vec<String>> {
    let mut ids = Ids::default();
    for id in &cohort.patient_ids {
        ids.push(id.trim());
    }
    if let Some(list) = &cohort.patient_list {
        for id in patient_list(client, endpoints, list, cohort.list_version).await? {
            ids.push(&id);
        }
    }
    if let Some(group) = &cohort.group {
        for id in group_members(client, endpoints, group).await? {
            ids.push(&id);
        }
    }
    for identifier in &cohort.identifiers {
        for id in by_identifier(client, endpoints, identifier).await? {
            ids.push(&id);
        }
    }
    info!(patients = ids.order.len(), "Cohort resolved.");
    Ok(ids.order)
}

/// Members of a patient list `system|value`.
pub async fn patient_list(
    client: &FhirClient,
    endpoints: &Endpoints,
    identifier: &str,
    version: Option<FhirVersion>,
) -> Result<Vec<String>> {
    let (system, value) = parse_list_identifier(identifier)?;
    let version = match version {
        Some(v) => v,
        None if endpoints.get(FhirVersion::Stu3).is_some() => FhirVersion::Stu3,
        None => FhirVersion::R4,
    };
    let base = endpoints.get(version).ok_or_else(|| {
        Error::Cohort(format!(
            "patient lists are read from {version}, but no {version} endpoint is configured"
        ))
    })?;
    let (code, identifier) = match version {
        FhirVersion::R4 => {
            let system = if system == "systemlist" { R4_PATIENT_LIST_SYSTEM } else { &system };
            ("patients", format!("{system}|{value}"))
        }
        _ => ("patientlist", format!("{system}|{value}")),
    };
    let params = vec![("code".to_string(), code.to_string()), ("identifier".to_string(), identifier)];
    let lists = search_all(client, base, "List", &params).await?;
    if lists.is_empty() {
        return Err(Error::Cohort(format!("no patient list `{system}|{value}` found on {version}")));
    }
    let mut ids = Ids::default();
    for raw in lists {
        let list: ListWire =
            serde_json::from_str(&raw).map_err(|e| Error::Cohort(format!("invalid List: {e}")))?;
        let entries = match list.entry {
            Some(e) => e,
            None => match &list.id {
                // A search may return the List without its entries: read it by id.
                Some(id) => {
                    let url = join(base, &format!("List/{id}"))?;
                    let resp = client.execute(&fhirsync_fhir::Request::get(url)).await?;
                    let full: ListWire = serde_json::from_slice(&resp.body)
                        .map_err(|e| Error::Cohort(format!("invalid List/{id}: {e}")))?;
                    full.entry.unwrap_or_default()
                }
                None => Vec::new(),
            },
        };
        for e in entries {
            match e.item.and_then(|i| i.reference) {
                Some(r) => match patient_id_of_reference(&r) {
                    Some(id) => ids.push(id),
                    None => warn!("Patient list entry is not a Patient reference; skipped."),
                },
                None => warn!("Patient list entry without item.reference; skipped."),
            }
        }
    }
    Ok(ids.order)
}

/// Members of `Group/{id}` (R4).
pub async fn group_members(client: &FhirClient, endpoints: &Endpoints, group: &str) -> Result<Vec<String>> {
    let base = endpoints
        .get(FhirVersion::R4)
        .ok_or_else(|| Error::Cohort("Groups are read from R4, but no R4 endpoint is configured".into()))?;
    let url = join(base, &format!("Group/{group}"))?;
    let resp = client.execute(&fhirsync_fhir::Request::get(url)).await?;
    let g: GroupWire = serde_json::from_slice(&resp.body)
        .map_err(|e| Error::Cohort(format!("invalid Group/{group}: {e}")))?;
    let mut ids = Ids::default();
    for m in g.member {
        if let Some(id) = m.entity.and_then(|e| e.reference).as_deref().and_then(patient_id_of_reference) {
            ids.push(id);
        }
    }
    Ok(ids.order)
}

/// Patient ids matching an identifier `system|value` (newest endpoint).
pub async fn by_identifier(
    client: &FhirClient,
    endpoints: &Endpoints,
    identifier: &str,
) -> Result<Vec<String>> {
    let version = *endpoints.versions().first().ok_or_else(|| Error::Cohort("no FHIR endpoint".into()))?;
    let base = endpoints.get(version).ok_or_else(|| Error::Cohort("no FHIR endpoint".into()))?;
    let params = vec![("identifier".to_string(), identifier.to_string())];
    let found = search_all(client, base, "Patient", &params).await?;
    let ids: Vec<String> =
        found.iter().filter_map(|r| serde_json::from_str::<IdWire>(r).ok().and_then(|p| p.id)).collect();
    if ids.is_empty() {
        // The value identifies a patient (an MRN): name the system only.
        let system = identifier.split_once('|').map_or("(no system)", |(s, _)| s);
        warn!(
            %system,
            "No patient matches the configured identifier of this system (its value is not logged: it identifies a patient); check [extract.cohort] identifiers."
        );
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative and absolute Patient references yield the id; other types do not.
    #[test]
    fn reference_parsing() {
        assert_eq!(patient_id_of_reference("Patient/e1"), Some("e1"));
        assert_eq!(patient_id_of_reference("https://x/api/FHIR/DSTU2/Patient/T2"), Some("T2"));
        assert_eq!(patient_id_of_reference("Practitioner/p"), None);
        assert_eq!(patient_id_of_reference("e1"), None);
    }
}
