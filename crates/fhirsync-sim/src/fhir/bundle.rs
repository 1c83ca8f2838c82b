//! Searchset Bundles and paging, Epic style.
//!
//! - entries carry `link[{relation: self}]`, an absolute `fullUrl` and `search.mode = match`;
//! - warnings/information travel in one OperationOutcome entry (`search.mode = outcome`,
//!   `fullUrl = urn:uuid:…`) on the **last** page only: the first page of a multi-page result
//!   (the one with a `next` link) carries none, as at Epic; an empty result is that entry alone,
//!   with its 59204/59205 issues followed by 4101, and `total: 0`;
//! - the generic SMART profile sends no outcome entry at all (an empty result has no entries);
//! - `_count` defaults to, and is capped at, the configured page size (1000);
//! - `next` is `{base}/{Type}?sessionID=<n>-<hex>` (original parameters dropped);
//! - `Bundle.total` is the number of `match` entries on the page, not the result count.

use std::fmt::Write;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use fhirsync_core::FhirVersion;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use super::FhirState;
use super::config::ServerProfile;
use super::rng::hash_str;
use super::search::{Found, SearchRequest};
use super::wire::{self, Format, Issue, Ordered};
use super::xml;

/// Where and how a page is answered.
#[derive(Debug)]
pub(crate) struct PageRequest<'a> {
    /// FHIR base URL.
    pub base: &'a str,
    /// Version of the base.
    pub version: FhirVersion,
    /// Resource type.
    pub ty: &'a str,
    /// Answer format.
    pub format: Format,
    /// `self` link.
    pub self_url: String,
    /// Client id.
    pub client_id: &'a str,
}

/// A deterministic `urn:uuid:` for an outcome entry of `self_url`.
fn outcome_urn(seed: u64, self_url: &str) -> String {
    let path = self_url.split_once("/api/FHIR/").map(|(_, p)| p).unwrap_or(self_url);
    let a = hash_str(path) ^ seed;
    let b = hash_str(&format!("{seed}:{path}"));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    format!("urn:uuid:{}", uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// One page of a searchset, serialised without copying the resources.
struct SearchSet {
    total: usize,
    links: Vec<(&'static str, String)>,
    matches: Vec<(String, Arc<Value>)>,
    outcome: Option<(String, Value)>,
}

struct Link<'a>(&'a str, &'a str);

impl Serialize for Link<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("relation", self.0)?;
        m.serialize_entry("url", self.1)?;
        m.end()
    }
}

/// A bundle entry: `(fullUrl, resource, mode, with self link)`.
struct Entry<'a>(&'a str, &'a Value, &'a str, bool);

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if self.3 {
            m.serialize_entry("link", &[Link("self", self.0)])?;
        }
        m.serialize_entry("fullUrl", self.0)?;
        m.serialize_entry("resource", &Ordered("resource", self.1))?;
        m.serialize_entry("search", &json!({"mode": self.2}))?;
        m.end()
    }
}

impl Serialize for SearchSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("resourceType", "Bundle")?;
        m.serialize_entry("type", "searchset")?;
        m.serialize_entry("total", &self.total)?;
        let links: Vec<Link<'_>> = self.links.iter().map(|(r, u)| Link(r, u)).collect();
        m.serialize_entry("link", &links)?;
        let mut entries: Vec<Entry<'_>> =
            self.matches.iter().map(|(u, r)| Entry(u, r, "match", true)).collect();
        if let Some((urn, outcome)) = &self.outcome {
            entries.push(Entry(urn, outcome, "outcome", false));
        }
        if !entries.is_empty() {
            m.serialize_entry("entry", &entries)?;
        }
        m.end()
    }
}

impl SearchSet {
    fn xml(&self) -> String {
        let mut out = String::with_capacity(2048 + self.matches.len() * 2048);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Bundle xmlns=\"http://hl7.org/fhir\">");
        let _ = write!(out, "<type value=\"searchset\"/><total value=\"{}\"/>", self.total);
        for (relation, url) in &self.links {
            let _ = write!(
                out,
                "<link><relation value=\"{relation}\"/><url value=\"{}\"/></link>",
                xml::attr(url)
            );
        }
        let entries = self.matches.iter().map(|(u, r)| (u, &**r, "match", true));
        let outcome = self.outcome.iter().map(|(u, o)| (u, o, "outcome", false));
        for (url, resource, mode, self_link) in entries.chain(outcome) {
            let url = xml::attr(url);
            out.push_str("<entry>");
            if self_link {
                let _ = write!(out, "<link><relation value=\"self\"/><url value=\"{url}\"/></link>");
            }
            let _ = write!(out, "<fullUrl value=\"{url}\"/><resource>");
            xml::write_value(&mut out, resource);
            let _ = write!(out, "</resource><search><mode value=\"{mode}\"/></search></entry>");
        }
        out.push_str("</Bundle>");
        out
    }
}

fn full_url(base: &str, resource: &Value) -> String {
    let ty = resource.get("resourceType").and_then(Value::as_str).unwrap_or("Resource");
    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
    format!("{base}/{ty}/{id}")
}

impl FhirState {
    /// Answers one page of `found`, starting at `offset`; opens a session for the next page.
    pub(crate) fn page(
        &self,
        page: &PageRequest<'_>,
        search: &SearchRequest<'_>,
        found: &Found,
        offset: usize,
        count: usize,
    ) -> Response {
        let total = found.len();
        let items = self.materialise(page.version, &found.segs, offset, count);
        let shown = items.len();
        let matches: Vec<(String, Arc<Value>)> =
            items.into_iter().map(|r| (full_url(page.base, &r), r)).collect();
        let last = offset + shown >= total;
        let epic = self.config.profile == ServerProfile::Epic;
        let mut issues: Vec<Issue> = if last && epic { found.issues.clone() } else { Vec::new() };
        if total == 0 && epic {
            issues.push(Issue::no_results());
        }
        let outcome = (!issues.is_empty())
            .then(|| (outcome_urn(self.config.seed, &page.self_url), wire::outcome(&issues)));
        // Epic lists `next` before `self`.
        let mut links = Vec::with_capacity(2);
        if offset + shown < total {
            let session = self.sessions.open(
                page.version,
                page.ty,
                search.params.to_vec(),
                page.client_id,
                offset + shown,
                count,
            );
            links.push(("next", format!("{}/{}?sessionID={session}", page.base, page.ty)));
        }
        links.push(("self", page.self_url.clone()));
        let set = SearchSet { total: shown, links, matches, outcome };
        match page.format {
            Format::Json => {
                wire::bytes(StatusCode::OK, wire::FHIR_JSON, serde_json::to_vec(&set).unwrap_or_default())
            }
            Format::Xml => wire::bytes(StatusCode::OK, wire::FHIR_XML, set.xml().into_bytes()),
        }
    }
}
