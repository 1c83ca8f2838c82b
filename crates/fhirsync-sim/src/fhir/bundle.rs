//! Searchset Bundles and paging, Epic style.
//!
//! - entries carry `link[{relation: self}]`, an absolute `fullUrl` and `search.mode = match`;
//! - warnings/information travel in one OperationOutcome entry (`search.mode = outcome`,
//!   `fullUrl = urn:uuid:…`) on the first page; an empty result is that entry alone with 4101;
//! - `_count` defaults to, and is capped at, the configured page size (1000);
//! - `next` is `{base}/{Type}?sessionID=<n>-<hex>` (original parameters dropped);
//! - `Bundle.total` is the number of `match` entries on the page, not the result count.

use axum::http::StatusCode;
use axum::response::Response;
use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::FhirState;
use super::rng::hash_str;
use super::search::{Found, SearchRequest};
use super::wire::{self, Format, Issue};

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

fn entry(base: &str, resource: &Value) -> Value {
    let ty = resource.get("resourceType").and_then(Value::as_str).unwrap_or("Resource");
    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
    let full = format!("{base}/{ty}/{id}");
    json!({
        "link": [{"relation": "self", "url": full}],
        "fullUrl": full,
        "resource": resource,
        "search": {"mode": "match"},
    })
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
        first: bool,
    ) -> Response {
        let total = found.len();
        let items = self.materialise(page.version, &found.segs, offset, count);
        let mut entries: Vec<Value> = items.iter().map(|r| entry(page.base, r)).collect();
        let shown = entries.len();
        let mut issues: Vec<Issue> = if first { found.issues.clone() } else { Vec::new() };
        if total == 0 {
            issues.push(Issue::no_results());
        }
        if !issues.is_empty() {
            entries.push(json!({
                "fullUrl": outcome_urn(self.config.seed, &page.self_url),
                "resource": wire::outcome(&issues),
                "search": {"mode": "outcome"},
            }));
        }
        let mut links = vec![json!({"relation": "self", "url": page.self_url})];
        if offset + shown < total {
            let session = self.sessions.open(
                page.version,
                page.ty,
                search.params.to_vec(),
                page.client_id,
                offset + shown,
                count,
            );
            links.push(
                json!({"relation": "next", "url": format!("{}/{}?sessionID={session}", page.base, page.ty)}),
            );
        }
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": shown,
            "link": links,
            "entry": entries,
        });
        wire::fhir(StatusCode::OK, page.format, &bundle)
    }
}
