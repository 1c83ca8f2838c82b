//! The recording folder: every `*.json` file validated at start-up, indexed by request key, and
//! read again from disk when its answer is served (memory stays small whatever the recording's
//! size).
//!
//! A request matches a recorded one when method, path and query are equal: scheme, host and
//! port are ignored, paths are compared as the `url` crate normalises them (without a trailing
//! `/`), and query parameters as a sorted multiset of decoded `(name, value)` pairs, so
//! `?b=2&a=1` matches `?a=1&b=2` and `%2E` matches `.`. Several answers recorded for one request
//! (a retry, or two runs recorded into one folder) are served in file order, then the last one
//! again for every further request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use url::Url;

use super::Error;

/// Response headers never replayed: they describe the recorded transfer, not the answer.
pub(crate) const TRANSFER_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"];

/// What identifies a request: method, path and the sorted multiset of query pairs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    /// Upper-case method.
    pub method: String,
    /// Normalised path without a trailing `/` (`/` for the root).
    pub path: String,
    /// Decoded query pairs, sorted.
    pub query: Vec<(String, String)>,
}

impl RequestKey {
    /// The key of `method url` (origin ignored).
    pub fn new(method: &str, url: &Url) -> RequestKey {
        let path = url.path();
        let path = match path.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        let mut query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        query.sort();
        RequestKey { method: method.to_ascii_uppercase(), path, query }
    }

    /// Non-empty path segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// A header value in a recorded file: one string, or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum HeaderWire {
    One(String),
    Many(Vec<String>),
}

/// One recorded file. `note` is free text for hand-written fixtures, ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWire<B> {
    pub method: String,
    pub url: String,
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderWire>,
    pub body: B,
    #[serde(default, rename = "note")]
    _note: Option<IgnoredAny>,
}

/// A recorded answer, ready to serve.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers, transfer headers removed.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: AnswerBody,
}

/// A recorded body: JSON text verbatim, or a text (the file's `body` was a JSON string).
#[derive(Debug)]
pub(crate) enum AnswerBody {
    /// JSON text as the server sent it.
    Json(String),
    /// Any other body.
    Text(String),
}

/// Recorded answers of one request.
#[derive(Debug)]
struct Slot {
    files: Vec<PathBuf>,
    served: AtomicUsize,
}

/// The indexed recording folder.
#[derive(Debug)]
pub(crate) struct Store {
    slots: HashMap<RequestKey, Slot>,
    origins: BTreeSet<String>,
    answers: usize,
}

impl Store {
    /// Reads and validates every `*.json` file of `dir` (names starting with `.` are skipped),
    /// in sequence order (the number a name starts with, then the name).
    pub(crate) fn load(dir: &Path) -> Result<Store, Error> {
        let folder_err = |source| Error::ReplayFolder { path: dir.to_path_buf(), source };
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(folder_err)? {
            let entry = entry.map_err(folder_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map_err(folder_err)?.is_file();
            if !is_file || name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            let seq = name[..digits].parse().unwrap_or(u64::MAX);
            files.push((seq, name, entry.path()));
        }
        if files.is_empty() {
            return Err(Error::ReplayEmpty { path: dir.to_path_buf() });
        }
        files.sort();
        let mut slots: HashMap<RequestKey, Slot> = HashMap::new();
        let mut origins = BTreeSet::new();
        for (_, _, path) in &files {
            let bytes =
                std::fs::read(path).map_err(|source| Error::ReplayRead { path: path.clone(), source })?;
            let wire: FileWire<IgnoredAny> = serde_json::from_slice(&bytes)
                .map_err(|source| Error::ReplayJson { path: path.clone(), source })?;
            let (method, url) = validate(path, &wire)?;
            origins.insert(url.origin().ascii_serialization());
            slots
                .entry(RequestKey::new(method.as_str(), &url))
                .or_insert_with(|| Slot { files: Vec::new(), served: AtomicUsize::new(0) })
                .files
                .push(path.clone());
        }
        Ok(Store { slots, origins, answers: files.len() })
    }

    /// The file of the next answer to `key`, if it was recorded.
    pub(crate) fn next(&self, key: &RequestKey) -> Option<&Path> {
        let slot = self.slots.get(key)?;
        let n = slot.served.fetch_add(1, Ordering::Relaxed);
        slot.files.get(n.min(slot.files.len() - 1)).map(PathBuf::as_path)
    }

    /// Origins (`scheme://host[:port]`) of the recorded URLs.
    pub(crate) fn origins(&self) -> &BTreeSet<String> {
        &self.origins
    }

    /// Number of recorded answers.
    pub(crate) fn answers(&self) -> usize {
        self.answers
    }

    /// Number of distinct recorded requests.
    pub(crate) fn requests(&self) -> usize {
        self.slots.len()
    }

    /// Recorded FHIR base paths: those of `/metadata` requests, else the parents of searches.
    pub(crate) fn base_paths(&self) -> Vec<String> {
        let mut bases: BTreeSet<String> =
            self.slots.keys().filter_map(|k| k.path.strip_suffix("/metadata").map(str::to_string)).collect();
        if bases.is_empty() {
            bases = self
                .slots
                .keys()
                .filter(|k| matches!(classify(&k.method, k), Unmatched::Search { .. }))
                .filter_map(|k| k.path.rsplit_once('/').map(|(parent, _)| parent.to_string()))
                .collect();
        }
        bases.into_iter().collect()
    }
}

/// Checks a parsed file; returns its method and URL.
fn validate<B>(path: &Path, wire: &FileWire<B>) -> Result<(Method, Url), Error> {
    let invalid = |problem: String| Error::ReplayInvalid { path: path.to_path_buf(), problem };
    let method = Method::from_bytes(wire.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| invalid(format!("`method` {:?} is not an HTTP method", wire.method)))?;
    let url = Url::parse(&wire.url)
        .map_err(|source| Error::ReplayUrl { path: path.to_path_buf(), source })
        .and_then(|u| match u.scheme() {
        "http" | "https" => Ok(u),
        other => Err(invalid(format!("`url` has scheme {other:?}; use http or https"))),
    })?;
    StatusCode::from_u16(wire.status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()))
        .ok_or_else(|| invalid(format!("`status` {} is not an HTTP status", wire.status)))?;
    for (name, value) in &wire.headers {
        header_pairs(name, value).map_err(invalid)?;
    }
    Ok((method, url))
}

/// The header pairs of one recorded header entry.
fn header_pairs(name: &str, value: &HeaderWire) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let header =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name {name:?} is invalid"))?;
    let values: Vec<&String> = match value {
        HeaderWire::One(v) => vec![v],
        HeaderWire::Many(vs) => vs.iter().collect(),
    };
    values
        .into_iter()
        .map(|v| {
            HeaderValue::from_str(v)
                .map(|v| (header.clone(), v))
                .map_err(|_| format!("the value of header {name:?} is invalid"))
        })
        .collect()
}

/// Reads a recorded answer again (it was validated at start-up; a file changed since is an
/// error naming it).
pub(crate) async fn read_answer(path: &Path) -> Result<Answer, Error> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| Error::ReplayRead { path: path.to_path_buf(), source })?;
    let invalid = |problem: String| Error::ReplayInvalid { path: path.to_path_buf(), problem };
    let json = |source| Error::ReplayJson { path: path.to_path_buf(), source };
    let wire: FileWire<Box<RawValue>> = serde_json::from_slice(&bytes).map_err(json)?;
    let status = StatusCode::from_u16(wire.status)
        .map_err(|_| invalid(format!("`status` {} is not an HTTP status", wire.status)))?;
    let mut headers = Vec::new();
    for (name, value) in &wire.headers {
        if TRANSFER_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        headers.extend(header_pairs(name, value).map_err(invalid)?);
    }
    let raw = wire.body.get();
    let body = if raw.starts_with('"') {
        AnswerBody::Text(serde_json::from_str(raw).map_err(json)?)
    } else {
        AnswerBody::Json(raw.to_string())
    };
    Ok(Answer { status, headers, body })
}

/// What an unrecorded request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unmatched {
    /// A search of a resource type (`GET /Type?…`, `POST /Type/_search`).
    Search {
        /// The type.
        ty: String,
    },
    /// A read (`GET /Type/id`).
    Read {
        /// The type.
        ty: String,
    },
    /// Anything else (`/metadata`, operations, unknown paths).
    Other,
}

/// Classifies a request by its path: the last segment a CamelCase type name is a search, a
/// type name followed by one more segment a read.
pub(crate) fn classify(method: &str, key: &RequestKey) -> Unmatched {
    let segs = key.segments();
    let is_type = |s: &&str| is_type_name(s);
    match (method, segs.as_slice()) {
        ("GET" | "POST", [.., ty, "_search"]) if is_type(ty) => Unmatched::Search { ty: ty.to_string() },
        ("GET", [.., ty, id]) if is_type(ty) && !id.starts_with('$') && !id.starts_with('_') => {
            Unmatched::Read { ty: ty.to_string() }
        }
        ("GET", [.., ty]) if is_type(ty) => Unmatched::Search { ty: ty.to_string() },
        _ => Unmatched::Other,
    }
}

/// True for a CamelCase word such as `Observation` or `AllergyIntolerance` (not `FHIR`, `R4`,
/// `api`, or an Epic id): each capital followed by at least one lower-case letter.
pub(crate) fn is_type_name(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_uppercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_uppercase() {
            return false;
        }
        i += 1;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_lowercase() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: &str, url: &str) -> RequestKey {
        RequestKey::new(method, &Url::parse(url).unwrap())
    }

    fn write(dir: &Path, name: &str, method: &str, url: &str, body: &str) {
        let text =
            format!(r#"{{"method":"{method}","url":"{url}","status":200,"headers":{{}},"body":{body}}}"#);
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// Query parameters match as a sorted multiset of decoded pairs; origin and trailing `/`
    /// are ignored; method and path must be equal.
    #[test]
    fn keys_match_as_documented() {
        let a = key("GET", "https://fhir.epic.com/api/FHIR/R4/Observation?patient=e1&category=vital-signs");
        assert_eq!(
            a,
            key("get", "http://127.0.0.1:9/api/FHIR/R4/Observation/?category=vital-signs&patient=e1")
        );
        assert_eq!(a, key("GET", "http://h/api/FHIR/R4/Observation?category=vital%2Dsigns&patient=%65%31"));
        assert_ne!(a, key("GET", "http://h/api/FHIR/R4/Observation?patient=e1"));
        assert_ne!(a, key("POST", "http://h/api/FHIR/R4/Observation?patient=e1&category=vital-signs"));
        assert_ne!(a, key("GET", "http://h/api/FHIR/STU3/Observation?patient=e1&category=vital-signs"));
        let twice = key("GET", "http://h/R4/Condition?category=a&category=b");
        assert_eq!(twice, key("GET", "http://h/R4/Condition?category=b&category=a"));
        assert_ne!(twice, key("GET", "http://h/R4/Condition?category=a"));
        assert_ne!(twice, key("GET", "http://h/R4/Condition?category=a&category=a&category=b"));
        assert_eq!(key("GET", "http://h/R4/X?q=a+b"), key("GET", "http://h/R4/X?q=a%20b"));
    }

    /// Unrecorded requests are told apart: searches, reads, and everything else.
    #[test]
    fn unmatched_requests_are_classified() {
        let c = |m: &str, u: &str| classify(m, &key(m, u));
        let search = |ty: &str| Unmatched::Search { ty: ty.into() };
        let read = |ty: &str| Unmatched::Read { ty: ty.into() };
        assert_eq!(
            c("GET", "http://h/interconnect-fhir-oauth/api/FHIR/R4/Condition?patient=e1"),
            search("Condition")
        );
        assert_eq!(c("GET", "http://h/FHIR/AllergyIntolerance?patient=e1"), search("AllergyIntolerance"));
        assert_eq!(c("POST", "http://h/api/FHIR/R4/Observation/_search"), search("Observation"));
        assert_eq!(c("GET", "http://h/api/FHIR/R4/Patient/eD.LxhDyX35TntF77l7etUA3"), read("Patient"));
        assert_eq!(c("GET", "http://h/api/FHIR/DSTU2/Patient/Tbt3KuCY0B5PSrJvCu2j-PlK"), read("Patient"));
        assert_eq!(c("GET", "http://h/api/FHIR/R4/metadata"), Unmatched::Other);
        assert_eq!(c("GET", "http://h/api/FHIR/R4/Group/g1/$export"), Unmatched::Other);
        assert_eq!(c("POST", "http://h/api/FHIR/R4/Observation"), Unmatched::Other);
        assert_eq!(c("GET", "http://h/api/FHIR/R4"), Unmatched::Other);
    }

    /// Answers of one request are served in file order, then the last repeats; files that are
    /// hidden or not `.json` are skipped; bases come from the metadata requests.
    #[test]
    fn answers_are_served_in_recorded_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = "https://ehr.example/api/FHIR/R4/Condition?patient=e1";
        write(dir.path(), "000010-GET-Condition.json", "GET", url, r#"{"n":2}"#);
        write(dir.path(), "000002-GET-Condition.json", "GET", url, r#"{"n":1}"#);
        write(
            dir.path(),
            "000003-GET-metadata.json",
            "GET",
            "https://ehr.example/api/FHIR/R4/metadata",
            "{}",
        );
        std::fs::write(dir.path().join(".000004-GET-X.json.part"), "{").unwrap();
        std::fs::write(dir.path().join("README.md"), "fixture").unwrap();
        let store = Store::load(dir.path()).unwrap();
        assert_eq!(store.answers(), 3);
        assert_eq!(store.requests(), 2);
        let k = key("GET", "http://127.0.0.1:1/api/FHIR/R4/Condition?patient=e1");
        let served: Vec<String> = (0..3)
            .map(|_| store.next(&k).unwrap().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            served,
            ["000002-GET-Condition.json", "000010-GET-Condition.json", "000010-GET-Condition.json"]
        );
        assert!(store.next(&key("GET", "http://h/api/FHIR/R4/Condition?patient=e2")).is_none());
        assert_eq!(store.base_paths(), ["/api/FHIR/R4"]);
        assert_eq!(store.origins().iter().collect::<Vec<_>>(), ["https://ehr.example"]);
    }

    /// A file that is not a recorded answer stops the start-up with its name and the problem.
    #[test]
    fn invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("--record"), "{err}");
        write(dir.path(), "000001-GET-X.json", "GET", "not a url", "{}");
        let err = Store::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("000001-GET-X.json") && err.to_string().contains("url"), "{err}");
        std::fs::write(dir.path().join("000001-GET-X.json"), r#"{"method":"GET","url":"http://h/"}"#)
            .unwrap();
        let err = Store::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("status"), "{err}");
        std::fs::write(
            dir.path().join("000001-GET-X.json"),
            r#"{"method":"GET","url":"http://h/","status":200,"body":{},"stauts":1}"#,
        )
        .unwrap();
        let err = Store::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("stauts"), "{err}");
    }

    /// A JSON-string body is served as text; a JSON body verbatim; transfer headers dropped.
    #[tokio::test]
    async fn answers_read_back_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001-GET-Patient.json");
        std::fs::write(
            &path,
            r#"{"method":"GET","url":"http://h/R4/Patient/e1","status":404,
               "headers":{"content-type":"text/html","content-length":"9","x-a":["1","2"]},"body":"<html/>"}"#,
        )
        .unwrap();
        let a = read_answer(&path).await.unwrap();
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert!(matches!(&a.body, AnswerBody::Text(t) if t == "<html/>"));
        let names: Vec<&str> = a.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-a", "x-a"]);
        std::fs::write(
            &path,
            r#"{"method":"GET","url":"http://h/R4/Patient/e1","status":200,"body":{"id" : "e1",  "a":[1, 2]}}"#,
        )
        .unwrap();
        let a = read_answer(&path).await.unwrap();
        assert!(matches!(&a.body, AnswerBody::Json(t) if t == r#"{"id" : "e1",  "a":[1, 2]}"#), "{a:?}");
    }
}
