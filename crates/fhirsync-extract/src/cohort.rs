//! Cohort resolution: which patients a search-mode run covers.
//!
//! Epic has no "all patients" search; the patient universe comes from:
//! - a patient list: STU3 `List?code=patientlist&identifier=systemlist|N`, or R4
//!   `List?code=patients&identifier=urn:oid:1.2.840.114350.1.13.0.1.7.2.806567|N` (the
//!   `systemlist` system is translated to Epic's R4 OID). Members are the
//!   `List.entry[].item.reference` values `Patient/<id>`; a List found without `entry` is read by id;
//! - a Group: `Group/{id}` `member[].entity` ([`parse_group`]): `Patient/<id>` or an absolute
//!   `…/Patient/<id>` URL; `#local`, `urn:uuid:…` and `urn:oid:…` resolved against the Group's
//!   `contained` resources (or, when the server answers a Bundle, the entries' `fullUrl`s); a
//!   member that still names no server id is matched by its identifiers (`Patient?identifier=`
//!   in search mode, the exported Patient file in bulk mode);
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
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    member: Vec<GroupMemberWire>,
    #[serde(default)]
    contained: Vec<ContainedWire>,
    /// Bundle answers only.
    #[serde(default)]
    entry: Vec<EntryWire>,
}

#[derive(Deserialize)]
struct GroupMemberWire {
    entity: Option<MemberRefWire>,
    #[serde(default)]
    inactive: bool,
}

#[derive(Deserialize)]
struct MemberRefWire {
    reference: Option<String>,
    identifier: Option<IdentifierWire>,
}

#[derive(Deserialize, Clone)]
struct IdentifierWire {
    system: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
struct ContainedWire {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
    #[serde(default)]
    identifier: Vec<IdentifierWire>,
}

#[derive(Deserialize)]
struct EntryWire {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    resource: Option<serde_json::Value>,
}

/// Identifier system of a URI used as an identifier (`urn:uuid:…`, RFC 3986).
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

/// An identifier that can name a patient: `system` (any system when `None`) and `value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifierKey {
    /// Identifier system.
    pub system: Option<String>,
    /// Identifier value.
    pub value: String,
}

impl IdentifierKey {
    /// True when a resource identifier `system|value` is this one.
    pub fn matches(&self, system: Option<&str>, value: &str) -> bool {
        self.value == value && self.system.as_deref().is_none_or(|s| Some(s) == system)
    }

    /// The `identifier` search token: `system|value`, or `value` for any system.
    pub fn token(&self) -> String {
        match &self.system {
            Some(s) => format!("{s}|{}", self.value),
            None => self.value.clone(),
        }
    }
}

/// The members of a Group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMembers {
    /// Server ids of the members that name one (de-duplicated, first-seen order).
    pub ids: Vec<String>,
    /// Members that name no server id: for each, the identifiers that can match it to a
    /// Patient (never empty; a member with nothing to match on is in `unmatchable`).
    pub unresolved: Vec<Vec<IdentifierKey>>,
    /// Members without a reference or identifier that could ever be matched.
    pub unmatchable: usize,
    /// Members flagged `inactive` (left out).
    pub inactive: usize,
}

impl GroupMembers {
    /// Members counted (active ones).
    pub fn total(&self) -> usize {
        self.ids.len() + self.unresolved.len() + self.unmatchable
    }
}

fn identifier_key(i: &IdentifierWire) -> Option<IdentifierKey> {
    let value = i.value.clone().filter(|v| !v.is_empty())?;
    Some(IdentifierKey { system: i.system.clone().filter(|s| !s.is_empty()), value })
}

/// Reads the members of a Group resource (or of the Group inside a Bundle answer) whatever the
/// reference form (module docs). Pure: the caller fetched `body`.
pub fn parse_group(body: &[u8], group: &str) -> Result<GroupMembers> {
    let (g, bundle) = group_of_answer(body, group)?;
    let mut out = GroupMembers::default();
    let mut ids = Ids::default();
    for m in g.member {
        if m.inactive {
            out.inactive += 1;
            continue;
        }
        let Some(entity) = m.entity else {
            out.unmatchable += 1;
            continue;
        };
        let mut keys: Vec<IdentifierKey> =
            entity.identifier.as_ref().and_then(identifier_key).into_iter().collect();
        if let Some(r) = entity.reference.as_deref() {
            if let Some(id) = patient_id_of_reference(r) {
                ids.push(id);
                continue;
            }
            // A bundle entry with this fullUrl carries the server's resource.
            if let Some((_, res)) = bundle.iter().find(|(url, _)| url == r) {
                let is_patient = res.get("resourceType").and_then(|t| t.as_str()) == Some("Patient");
                if let (true, Some(id)) = (is_patient, res.get("id").and_then(|t| t.as_str())) {
                    ids.push(id);
                    continue;
                }
            }
            // A contained resource: `#id`, or a URN whose id part (or whole) is its id.
            let local = r
                .strip_prefix('#')
                .or_else(|| r.strip_prefix("urn:uuid:"))
                .or_else(|| r.strip_prefix("urn:oid:"))
                .unwrap_or(r);
            let contained =
                g.contained.iter().find(|c| c.id.as_deref().is_some_and(|id| id == local || id == r));
            if let Some(c) = contained
                && c.resource_type.as_deref().is_none_or(|t| t == "Patient")
            {
                keys.extend(c.identifier.iter().filter_map(identifier_key));
            }
            if r.starts_with("urn:") {
                keys.push(IdentifierKey { system: Some(URI_SYSTEM.to_string()), value: r.to_string() });
            }
        }
        keys.dedup();
        match keys.is_empty() {
            true => out.unmatchable += 1,
            false => out.unresolved.push(keys),
        }
    }
    out.ids = ids.order;
    Ok(out)
}

/// The Group of an answer: the Group itself, or the one inside a Bundle (the one with id
/// `group`, else the first), with the Bundle's other entries by `fullUrl`.
fn group_of_answer(body: &[u8], group: &str) -> Result<(GroupWire, Vec<(String, serde_json::Value)>)> {
    let wire: GroupWire = serde_json::from_slice(body).map_err(|source| Error::CohortJson {
        resource: format!("Group/{group}"),
        expected: "Group",
        source,
    })?;
    match wire.resource_type.as_deref() {
        Some("Group") => Ok((wire, Vec::new())),
        Some("Bundle") => {
            let mut group_wire = None;
            let mut others = Vec::new();
            for e in wire.entry {
                let Some(resource) = e.resource else { continue };
                let is_group = resource.get("resourceType").and_then(|t| t.as_str()) == Some("Group");
                let id_matches = resource.get("id").and_then(|t| t.as_str()) == Some(group);
                if is_group && (id_matches || group_wire.is_none()) {
                    group_wire = Some(resource);
                } else if let Some(url) = e.full_url {
                    others.push((url, resource));
                }
            }
            let g = group_wire.ok_or_else(|| Error::NotAGroup {
                group: group.to_string(),
                found: "a Bundle without a Group".into(),
            })?;
            let g: GroupWire = serde_json::from_value(g).map_err(|source| Error::CohortJson {
                resource: format!("Group/{group} in the Bundle"),
                expected: "Group",
                source,
            })?;
            Ok((g, others))
        }
        other => {
            let found = other.unwrap_or("no resourceType").to_string();
            Err(Error::NotAGroup { group: group.to_string(), found })
        }
    }
}

#[derive(Deserialize)]
struct IdWire {
    id: Option<String>,
}

/// The patient id of a `Patient/<id>` reference (relative or absolute URL, with or without
/// `/_history/<version>`).
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let reference = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
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
                    current = current.join(&next).map_err(|source| Error::CohortNextLink { source })?;
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
    let base = endpoints.get(version).ok_or(Error::CohortEndpoint { what: "patient lists", version })?;
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
        return Err(Error::NoPatientList { identifier: format!("{system}|{value}"), version });
    }
    let mut ids = Ids::default();
    for raw in lists {
        let list: ListWire = serde_json::from_str(&raw).map_err(|source| Error::CohortJson {
            resource: "a List of the search".into(),
            expected: "List",
            source,
        })?;
        let entries = match list.entry {
            Some(e) => e,
            None => match &list.id {
                // A search may return the List without its entries: read it by id.
                Some(id) => {
                    let url = join(base, &format!("List/{id}"))?;
                    let resp = client.execute(&fhirsync_fhir::Request::get(url)).await?;
                    let full: ListWire = serde_json::from_slice(&resp.body).map_err(|source| {
                        Error::CohortJson { resource: format!("List/{id}"), expected: "List", source }
                    })?;
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

/// The Group `Group/{id}` (R4) as the server answers it, parsed ([`parse_group`]).
pub async fn read_group(client: &FhirClient, endpoints: &Endpoints, group: &str) -> Result<GroupMembers> {
    let base = endpoints
        .get(FhirVersion::R4)
        .ok_or(Error::CohortEndpoint { what: "Groups", version: FhirVersion::R4 })?;
    let url = join(base, &format!("Group/{group}"))?;
    let resp = client.execute(&fhirsync_fhir::Request::get(url)).await?;
    parse_group(&resp.body, group)
}

/// Members of `Group/{id}` (R4) as patient ids; members that name no server id are looked up
/// by their identifiers (`Patient?identifier=`); the ones still unknown are warned about (a
/// count, no identifiers).
pub async fn group_members(client: &FhirClient, endpoints: &Endpoints, group: &str) -> Result<Vec<String>> {
    let members = read_group(client, endpoints, group).await?;
    let mut ids = Ids::default();
    for id in &members.ids {
        ids.push(id);
    }
    let mut unknown = members.unmatchable;
    for keys in &members.unresolved {
        let mut found = false;
        for key in keys {
            let hits = by_identifier_quiet(client, endpoints, &key.token()).await?;
            if let [id] = hits.as_slice() {
                ids.push(id);
                found = true;
                break;
            }
        }
        unknown += usize::from(!found);
    }
    if unknown > 0 {
        warn!(group, unknown, members = members.total(), "Group members that match no Patient are left out.");
    }
    Ok(ids.order)
}

/// Patient ids matching an identifier `system|value` (newest endpoint).
pub async fn by_identifier(
    client: &FhirClient,
    endpoints: &Endpoints,
    identifier: &str,
) -> Result<Vec<String>> {
    let ids = by_identifier_quiet(client, endpoints, identifier).await?;
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

async fn by_identifier_quiet(
    client: &FhirClient,
    endpoints: &Endpoints,
    identifier: &str,
) -> Result<Vec<String>> {
    let version = *endpoints.versions().first().ok_or(Error::NoEndpoint)?;
    let base = endpoints.get(version).ok_or(Error::NoEndpoint)?;
    let params = vec![("identifier".to_string(), identifier.to_string())];
    let found = search_all(client, base, "Patient", &params).await?;
    Ok(found.iter().filter_map(|r| serde_json::from_str::<IdWire>(r).ok().and_then(|p| p.id)).collect())
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
        assert_eq!(patient_id_of_reference("https://x/R4/Patient/T3/_history/2"), Some("T3"));
    }

    /// Group members resolve whatever the reference form: relative and absolute Patient
    /// references give ids; `#local` and `urn:uuid:` references to contained Patients give their
    /// identifiers (plus the URN itself); a Bundle answer resolves `fullUrl`s; inactive members
    /// are left out and members with nothing to match on are counted.
    #[test]
    fn group_members_every_reference_form() {
        let group = br##"{"resourceType":"Group","id":"g","contained":[
            {"resourceType":"Patient","id":"c1","identifier":[{"system":"urn:mrn","value":"M1"}]},
            {"resourceType":"Patient","id":"0a1b","identifier":[{"system":"urn:mrn","value":"M2"}]}],
          "member":[
            {"entity":{"reference":"Patient/p1"}},
            {"entity":{"reference":"https://ehr.example/fhir/Patient/p2"}},
            {"entity":{"reference":"#c1"}},
            {"entity":{"reference":"urn:uuid:0a1b"}},
            {"entity":{"reference":"urn:uuid:ffff"}},
            {"entity":{"identifier":{"system":"urn:mrn","value":"M3"}}},
            {"entity":{"reference":"Patient/p9"},"inactive":true},
            {"entity":{"display":"nobody"}},
            {"entity":{"reference":"Patient/p1"}}]}"##;
        let m = parse_group(group, "g").unwrap();
        assert_eq!(m.ids, ["p1", "p2"]);
        let key = |s: &str, v: &str| IdentifierKey { system: Some(s.into()), value: v.into() };
        assert_eq!(
            m.unresolved,
            vec![
                vec![key("urn:mrn", "M1")],
                vec![key("urn:mrn", "M2"), key(URI_SYSTEM, "urn:uuid:0a1b")],
                vec![key(URI_SYSTEM, "urn:uuid:ffff")],
                vec![key("urn:mrn", "M3")],
            ]
        );
        assert_eq!((m.unmatchable, m.inactive, m.total()), (1, 1, 7));

        let bundle = br#"{"resourceType":"Bundle","entry":[
            {"fullUrl":"urn:uuid:aa","resource":{"resourceType":"Patient","id":"p7"}},
            {"fullUrl":"https://x/Group/g","resource":{"resourceType":"Group","id":"g",
              "member":[{"entity":{"reference":"urn:uuid:aa"}}]}}]}"#;
        assert_eq!(parse_group(bundle, "g").unwrap().ids, ["p7"]);
        assert!(parse_group(br#"{"resourceType":"Patient"}"#, "g").is_err());
    }
}
