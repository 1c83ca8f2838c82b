//! searchset Bundle parsing that keeps each resource's exact bytes.
//!
//! Each `entry.resource` is captured as a [`RawValue`] slice of the response body, so the JSON
//! the landing layer stores (and hashes) is byte-for-byte what the server sent. Entries whose
//! `search.mode` is `outcome`, and any OperationOutcome entry, are not data: they are parsed into
//! [`Outcome`]s and returned separately. Paging uses only `link[relation=next]`; `Bundle.total`
//! is never used for paging or completeness (Epic sets it to the entries on the page, not the
//! result count); it is kept only for the opt-in `_summary=count` check.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::outcome::{Outcome, parse_outcome};

/// One page of a search.
#[derive(Clone, Default)]
pub struct SearchPage {
    /// Data resources of the page, each as the exact JSON text the server sent.
    pub resources: Vec<Box<str>>,
    /// Outcome issues found on the page (outcome entries and OperationOutcome resources).
    pub outcomes: Vec<Outcome>,
    /// The `next` link, verbatim, if there is another page.
    pub next: Option<String>,
    /// `Bundle.total`. Not a result count on Epic (it counts the page's entries): read only for
    /// `_summary=count` checks against servers that implement it.
    pub total: Option<u64>,
}

impl SearchPage {
    /// True when any outcome on the page has Epic code `code`.
    pub fn has_outcome(&self, code: &str) -> bool {
        self.outcomes.iter().any(|o| o.is(code))
    }
}

/// Debug shows counts only: resources are patient data.
impl std::fmt::Debug for SearchPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPage")
            .field("resources", &self.resources.len())
            .field("outcomes", &self.outcomes)
            .field("has_next", &self.next.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct BundleWire<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    link: Vec<LinkWire>,
    #[serde(default, borrow)]
    entry: Vec<EntryWire<'a>>,
    total: Option<u64>,
}

#[derive(Deserialize)]
struct LinkWire {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct EntryWire<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    search: Option<SearchWire>,
}

#[derive(Deserialize)]
struct SearchWire {
    mode: Option<String>,
}

#[derive(Deserialize)]
struct HeadWire {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// Why a body is not a searchset page.
#[derive(Debug)]
pub enum BundleError {
    /// Not JSON (or cut short; see [`serde_json::Error::is_eof`]).
    Json(serde_json::Error),
    /// JSON, but not a Bundle; carries the `resourceType` found.
    NotABundle(Option<String>),
}

/// Parses a searchset Bundle body.
pub fn parse_search_page(body: &str) -> Result<SearchPage, BundleError> {
    let wire: BundleWire<'_> = serde_json::from_str(body).map_err(BundleError::Json)?;
    if wire.resource_type.as_deref() != Some("Bundle") {
        return Err(BundleError::NotABundle(wire.resource_type));
    }
    let next = wire
        .link
        .into_iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url)
        .filter(|u| !u.is_empty());
    let mut page = SearchPage { next, total: wire.total, ..SearchPage::default() };
    for entry in wire.entry {
        let Some(raw) = entry.resource else { continue };
        let is_outcome_mode = entry.search.and_then(|s| s.mode).as_deref() == Some("outcome");
        let resource_type = serde_json::from_str::<HeadWire>(raw.get()).ok().and_then(|h| h.resource_type);
        if is_outcome_mode || resource_type.as_deref() == Some("OperationOutcome") {
            page.outcomes.extend(parse_outcome(raw.get()));
        } else {
            page.resources.push(raw.get().into());
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resources keep their exact bytes (spacing, key order) and outcome entries are split off.
    #[test]
    fn keeps_exact_bytes_and_splits_outcomes() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","total":1,
          "link":[{"relation":"self","url":"s"},{"relation":"next","url":"http://x/Observation?sessionID=1"}],
          "entry":[{"resource":{ "resourceType" : "Observation","id":"o1" ,"z":1,"a":2}},
          {"fullUrl":"urn:uuid:1","resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"processing",
          "details":{"coding":[{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.2.657369","code":"4101"}]}}]},
          "search":{"mode":"outcome"}}]}"#;
        let page = parse_search_page(body).unwrap();
        assert_eq!(&*page.resources[0], r#"{ "resourceType" : "Observation","id":"o1" ,"z":1,"a":2}"#);
        assert_eq!(page.resources.len(), 1);
        assert!(page.has_outcome("4101"));
        assert_eq!(page.next.as_deref(), Some("http://x/Observation?sessionID=1"));
    }

    /// A non-Bundle body is reported with its type.
    #[test]
    fn non_bundle_is_rejected() {
        match parse_search_page(r#"{"resourceType":"Patient","id":"p"}"#) {
            Err(BundleError::NotABundle(Some(t))) => assert_eq!(t, "Patient"),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A truncated body is a JSON EOF error (retryable upstream).
    #[test]
    fn truncated_body_is_eof() {
        match parse_search_page(r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"#) {
            Err(BundleError::Json(e)) => assert!(e.is_eof()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
