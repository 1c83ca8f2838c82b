//! Absolute URLs of the recorded server, rewritten to the replay server so that paging works.
//!
//! Only the URLs a client follows are touched: a Bundle's `link[].url`, each entry's `fullUrl`
//! and `link[].url`, and the `Location` / `Content-Location` headers. Resources inside entries
//! are left byte for byte as recorded (their content hash is what the landing layer compares),
//! and so is any URL on another origin. The body is not re-serialised: the string literals are
//! located in the original text and replaced in place.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::value::RawValue;
use url::{Position, Url};

/// Rewrites URLs on the recorded origins to the replay server's origin.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    origins: BTreeSet<String>,
    to: String,
}

#[derive(Deserialize)]
struct BundleWire<'a> {
    #[serde(default, borrow)]
    link: Vec<LinkWire<'a>>,
    #[serde(default, borrow)]
    entry: Vec<EntryWire<'a>>,
}

#[derive(Deserialize)]
struct LinkWire<'a> {
    #[serde(default, borrow)]
    url: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EntryWire<'a> {
    #[serde(default, borrow, rename = "fullUrl")]
    full_url: Option<&'a RawValue>,
    #[serde(default, borrow)]
    link: Vec<LinkWire<'a>>,
}

impl Rewriter {
    /// Rewrites URLs whose origin is one of `origins` (`scheme://host[:port]`) to `to`.
    pub(crate) fn new(origins: BTreeSet<String>, to: &str) -> Rewriter {
        Rewriter { origins, to: to.trim_end_matches('/').to_string() }
    }

    /// `url` on the replay server, when it is an absolute URL on a recorded origin.
    pub(crate) fn url(&self, url: &str) -> Option<String> {
        let parsed = Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https")
            || !self.origins.contains(&parsed.origin().ascii_serialization())
        {
            return None;
        }
        Some(format!("{}{}", self.to, &parsed[Position::BeforePath..]))
    }

    /// `body` with its Bundle link and `fullUrl` URLs rewritten; unchanged when it is not a
    /// Bundle-shaped object or holds no such URL.
    pub(crate) fn body<'a>(&self, body: &'a str) -> Cow<'a, str> {
        let Ok(bundle) = serde_json::from_str::<BundleWire<'_>>(body) else {
            return Cow::Borrowed(body);
        };
        let spans = bundle.link.iter().filter_map(|l| l.url).chain(
            bundle
                .entry
                .iter()
                .flat_map(|e| e.full_url.into_iter().chain(e.link.iter().filter_map(|l| l.url))),
        );
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for raw in spans {
            let literal = raw.get();
            let Ok(text) = serde_json::from_str::<String>(literal) else { continue };
            let Some(new) = self.url(&text) else { continue };
            let Ok(quoted) = serde_json::to_string(&new) else { continue };
            // `raw` borrows from `body`: its offset is the distance between the two pointers.
            let start = literal.as_ptr() as usize - body.as_ptr() as usize;
            edits.push((start, start + literal.len(), quoted));
        }
        if edits.is_empty() {
            return Cow::Borrowed(body);
        }
        edits.sort_by_key(|e| e.0);
        let mut out = String::with_capacity(body.len() + edits.len() * 16);
        let mut at = 0;
        for (start, end, text) in edits {
            out.push_str(&body[at..start]);
            out.push_str(&text);
            at = end;
        }
        out.push_str(&body[at..]);
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter() -> Rewriter {
        Rewriter::new(BTreeSet::from(["https://fhir.epic.com".to_string()]), "http://127.0.0.1:8080")
    }

    /// Next/self links and fullUrls move to the replay server; resources, including URLs inside
    /// them, stay byte for byte; other origins are left alone.
    #[test]
    fn links_and_full_urls_are_rewritten_resources_are_not() {
        let resource = r#"{"resourceType":"Observation","id":"o1","derivedFrom":[{"reference":"https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/Observation/o0"}]}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","total":1,
              "link":[{{"relation":"next","url":"https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/Observation?sessionID=17-AB"}},
                      {{"relation":"self","url":"https://other.example/R4/Observation?patient=e1"}}],
              "entry":[{{"link":[{{"relation":"self","url":"https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/Observation/o1"}}],
                        "fullUrl":"https:\/\/fhir.epic.com\/interconnect-fhir-oauth\/api\/FHIR\/R4\/Observation\/o1",
                        "resource":{resource},"search":{{"mode":"match"}}}},
                       {{"fullUrl":"urn:uuid:0f1e","resource":{{"resourceType":"OperationOutcome"}},"search":{{"mode":"outcome"}}}}]}}"#
        );
        let out = rewriter().body(&body).into_owned();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["link"][0]["url"],
            "http://127.0.0.1:8080/interconnect-fhir-oauth/api/FHIR/R4/Observation?sessionID=17-AB"
        );
        assert_eq!(v["link"][1]["url"], "https://other.example/R4/Observation?patient=e1");
        assert_eq!(
            v["entry"][0]["fullUrl"],
            "http://127.0.0.1:8080/interconnect-fhir-oauth/api/FHIR/R4/Observation/o1"
        );
        assert_eq!(
            v["entry"][0]["link"][0]["url"],
            "http://127.0.0.1:8080/interconnect-fhir-oauth/api/FHIR/R4/Observation/o1"
        );
        assert_eq!(v["entry"][1]["fullUrl"], "urn:uuid:0f1e");
        assert!(out.contains(resource), "the resource text is untouched: {out}");
    }

    /// A body that is not a Bundle, or has no recorded-origin URL, is returned as is.
    #[test]
    fn other_bodies_are_untouched() {
        let r = rewriter();
        for body in [r#"{"resourceType":"Patient","id":"e1"}"#, "[1,2]", r#"{"link":"x"}"#, "not json"] {
            assert!(matches!(r.body(body), Cow::Borrowed(b) if b == body), "{body}");
        }
        assert_eq!(
            r.url("https://fhir.epic.com/a/b?c=d#e").as_deref(),
            Some("http://127.0.0.1:8080/a/b?c=d#e")
        );
        assert_eq!(r.url("https://fhir.epic.com:8443/a"), None);
        assert_eq!(r.url("Observation?sessionID=1"), None);
    }
}
