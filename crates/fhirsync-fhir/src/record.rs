//! Recording of FHIR answers for offline replay (`fhirsync sync --record DIR`, served again by
//! `fhirsync sandbox --replay DIR`).
//!
//! Every answer the [`FhirClient`](crate::FhirClient) reads completely (success or error
//! status) is written to its own file in the recording folder:
//!
//! ```json
//! {
//!   "method": "GET",
//!   "url": "https://fhir.example.org/api/FHIR/R4/Condition?patient=e1&category=problem-list-item",
//!   "status": 200,
//!   "headers": { "content-type": "application/fhir+json; charset=utf-8" },
//!   "body": { "resourceType": "Bundle", "...": "..." }
//! }
//! ```
//!
//! `body` is the server's JSON text verbatim when the body is JSON (so replayed resources hash
//! exactly as recorded), else the body as a JSON string (`""` when empty). Files are named
//! `{sequence:06}-{METHOD}-{label}.json` (`000123-GET-Observation.json`), the sequence counting
//! answers in the order they were received, so the folder lists in request order. A recording
//! into a folder that already holds one continues its numbering: the replay server then serves
//! the answers of one request in that order (the first run's, then the second's).
//!
//! Never written, whatever the server sends:
//! - request headers (so neither `Authorization` nor `Epic-Client-ID`), and the response
//!   headers `Set-Cookie`, `Cookie`, `Authorization`, `Proxy-Authorization` and any header whose
//!   name mentions a token, secret, assertion, password, API key or session;
//! - the token endpoint's traffic: a request to a path ending in `/token`, and any body that is
//!   an OAuth token response (a JSON object with `access_token`, `refresh_token` or `id_token`),
//!   is skipped, not written;
//! - credentials in the URL: user-info is dropped; the values of `access_token`, `client_secret`,
//!   `client_assertion`, `refresh_token`, `id_token`, `code_verifier`, `password` query
//!   parameters are replaced by `REDACTED`;
//! - the bearer token of the request: any occurrence in the file is replaced by `REDACTED`.
//!
//! SMART discovery and token requests are made by `fhirsync_auth` with its own HTTP client, so
//! they never pass through the recorder at all; the checks above are a second line of defence.
//!
//! Streamed answers (Bulk NDJSON files read with
//! [`FhirClient::execute_streaming`](crate::FhirClient::execute_streaming)) are not recorded.
//! The folder (mode 0700) and files (0600) still hold patient data (PHI): they stay on this
//! machine unless someone copies them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::{debug, warn};
use url::Url;

use crate::error::{Error, Result};

/// Digits of the sequence number at the start of a recorded file's name.
pub const SEQUENCE_WIDTH: usize = 6;
/// What replaces a secret in a recorded file.
pub const REDACTED: &str = "REDACTED";

/// Shortest bearer token searched for and replaced in a file (real tokens are far longer;
/// replacing a one-letter test token would mangle the file).
const MIN_SCRUBBED_TOKEN: usize = 8;
/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "client_secret",
    "client_assertion",
    "refresh_token",
    "id_token",
    "code_verifier",
    "password",
];
/// Response headers never recorded (credentials).
const SECRET_HEADERS: &[&str] = &["set-cookie", "cookie", "authorization", "proxy-authorization"];
/// Header-name fragments that mark a credential header.
const SECRET_HEADER_WORDS: &[&str] = &["token", "secret", "assertion", "password", "api-key", "session"];
/// Response headers that describe the transfer, not the answer (the body is stored decoded).
const TRANSFER_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"];

/// Writes one file per answer into a folder; shared by every task of a run.
pub struct Recorder {
    dir: PathBuf,
    next: AtomicU64,
    written: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// Debug shows the folder and counters only.
impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .field("written", &self.written())
            .field("skipped", &self.skipped())
            .field("failed", &self.failed())
            .finish()
    }
}

/// One answer to record.
pub(crate) struct Exchange<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request URL.
    pub url: &'a Url,
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: &'a HeaderMap,
    /// Response body, decoded.
    pub body: &'a [u8],
}

#[derive(Serialize)]
struct FileWire<'a> {
    method: &'a str,
    url: &'a str,
    status: u16,
    headers: &'a BTreeMap<String, String>,
    body: &'a RawValue,
}

impl Recorder {
    /// Opens (creating it, mode 0700 on Unix) the folder `dir`. Numbering continues after the
    /// highest sequence already in the folder.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Recorder> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::RecordingNotAFolder { path: dir });
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|source| Error::RecordingFolder {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::RecordingFolder {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        let last = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| sequence_of(&e.file_name().to_string_lossy()))
            .max()
            .unwrap_or(0);
        Ok(Recorder {
            dir,
            next: AtomicU64::new(last + 1),
            written: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The recording folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answers written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Answers left out on purpose (token endpoint traffic).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Answers that could not be written (disk full, permissions); each is logged.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes one answer (see the module docs for what is left out). A write failure is
    /// logged and counted, never raised: the run goes on without that file.
    pub(crate) async fn record(&self, exchange: Exchange<'_>, token: &SecretString) {
        let Some((name, text)) = self.render(&exchange, token) else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            debug!("Token endpoint traffic not recorded.");
            return;
        };
        let dir = self.dir.clone();
        let written =
            tokio::task::spawn_blocking(move || write_new(&dir, &name, text.as_bytes()).map(|()| name))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok(name) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                debug!(file = %name, "Answer recorded.");
            }
            Err(error) => {
                let failures = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(dir = %self.dir.display(), %error, failures, "Cannot write a recorded answer; the recording is incomplete.");
            }
        }
    }

    /// The file name and text of `exchange`, or `None` when it must not be recorded.
    fn render(&self, exchange: &Exchange<'_>, token: &SecretString) -> Option<(String, String)> {
        if is_token_endpoint(exchange.url) || is_token_response(exchange.body) {
            return None;
        }
        let url = sanitize_url(exchange.url);
        let headers = recordable_headers(exchange.headers);
        let body = body_value(exchange.body);
        let wire = FileWire {
            method: exchange.method.as_str(),
            url: url.as_str(),
            status: exchange.status.as_u16(),
            headers: &headers,
            body: &body,
        };
        let mut text = serde_json::to_string_pretty(&wire).ok()?;
        text.push('\n');
        let secret = token.expose_secret();
        if secret.len() >= MIN_SCRUBBED_TOKEN && text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{seq:0width$}-{}-{}.json",
            sanitize_name(exchange.method.as_str()),
            label(exchange.url),
            width = SEQUENCE_WIDTH
        );
        Some((name, text))
    }
}

/// Writes `bytes` to a new file `dir/name` (mode 0600), through a hidden temporary file renamed
/// into place, so a reader never sees half a file.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.part"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The sequence number at the start of a recorded file's name (`000123-GET-…` → 123).
pub fn sequence_of(name: &str) -> Option<u64> {
    let digits: &str = &name[..name.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() || !name[digits.len()..].starts_with('-') || !name.ends_with(".json") {
        return None;
    }
    digits.parse().ok()
}

/// True for a path whose last segment is `token` (an OAuth token endpoint).
fn is_token_endpoint(url: &Url) -> bool {
    url.path_segments().and_then(|mut s| s.rfind(|p| !p.is_empty())).is_some_and(|p| p == "token")
}

/// True when `body` is an OAuth token response (a JSON object carrying a token).
fn is_token_response(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct TokenWire {
        access_token: Option<serde::de::IgnoredAny>,
        refresh_token: Option<serde::de::IgnoredAny>,
        id_token: Option<serde::de::IgnoredAny>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') || !body.windows(7).any(|w| w == b"_token\"") {
        return false;
    }
    serde_json::from_slice::<TokenWire>(body)
        .is_ok_and(|t| t.access_token.is_some() || t.refresh_token.is_some() || t.id_token.is_some())
}

/// `url` without user-info or fragment, with the values of credential parameters replaced.
fn sanitize_url(url: &Url) -> Url {
    let mut out = url.clone();
    let _ = out.set_username("");
    let _ = out.set_password(None);
    out.set_fragment(None);
    if url.query_pairs().any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref())) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v =
                    if SECRET_PARAMS.contains(&k.as_ref()) { REDACTED.to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        out.query_pairs_mut().clear().extend_pairs(pairs);
    }
    out
}

/// Response headers worth replaying: lower-case names, repeated values joined with `, `.
fn recordable_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let secret = SECRET_HEADERS.contains(&name) || SECRET_HEADER_WORDS.iter().any(|w| name.contains(w));
        if secret || TRANSFER_HEADERS.contains(&name) || value.is_sensitive() {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        out.entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    out
}

/// The body as recorded: its JSON text verbatim when it is JSON, else a JSON string.
fn body_value(body: &[u8]) -> Box<RawValue> {
    if let Ok(text) = std::str::from_utf8(body)
        && !text.trim().is_empty()
        && let Ok(raw) = serde_json::from_str::<&RawValue>(text)
    {
        return raw.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let quoted = serde_json::to_string(&text).unwrap_or_else(|_| "\"\"".to_string());
    RawValue::from_string(quoted)
        .unwrap_or_else(|_| RawValue::from_string("\"\"".into()).expect("valid JSON"))
}

/// The label of a file name: the resource type (or `$operation`, `metadata`) the URL is about.
fn label(url: &Url) -> String {
    let segments: Vec<&str> =
        url.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
    let found = segments.iter().rev().find_map(|s| {
        if is_type_name(s) || *s == "metadata" {
            Some(s.to_string())
        } else {
            s.strip_prefix('$').filter(|op| !op.is_empty()).map(str::to_string)
        }
    });
    sanitize_name(found.as_deref().unwrap_or("request"))
}

/// True for a CamelCase word such as `Observation` or `AllergyIntolerance` (not `FHIR`, `R4`).
pub fn is_type_name(segment: &str) -> bool {
    let mut chars = segment.chars().peekable();
    if !chars.peek().is_some_and(char::is_ascii_uppercase) {
        return false;
    }
    while let Some(c) = chars.next() {
        if !c.is_ascii_uppercase() {
            return false;
        }
        let mut lower = 0;
        while chars.peek().is_some_and(char::is_ascii_lowercase) {
            chars.next();
            lower += 1;
        }
        if lower == 0 {
            return false;
        }
    }
    true
}

/// Letters, digits, `-` and `_` only, at most 64 characters.
fn sanitize_name(s: &str) -> String {
    let out: String =
        s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(64).collect();
    if out.is_empty() { "request".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn exchange<'a>(url: &'a Url, headers: &'a HeaderMap, body: &'a [u8]) -> Exchange<'a> {
        Exchange { method: &Method::GET, url, status: StatusCode::OK, headers, body }
    }

    const TOKEN: &str = "unit-test-token-0123456789";

    fn token(s: &str) -> SecretString {
        s.to_string().into()
    }

    /// File names start with a zero-padded sequence, then the method and the resource type.
    #[test]
    fn names_sort_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let h = HeaderMap::new();
        let search = Url::parse("http://h/api/FHIR/R4/Observation?patient=e1").unwrap();
        let read = Url::parse("http://h/api/FHIR/R4/Patient/eAbc.1").unwrap();
        let meta = Url::parse("http://h/api/FHIR/R4/metadata").unwrap();
        let export = Url::parse("http://h/api/FHIR/R4/Group/g1/$export").unwrap();
        let names: Vec<String> = [&search, &read, &meta, &export]
            .iter()
            .map(|u| rec.render(&exchange(u, &h, b"{}"), &token(TOKEN)).unwrap().0)
            .collect();
        assert_eq!(
            names,
            [
                "000001-GET-Observation.json",
                "000002-GET-Patient.json",
                "000003-GET-metadata.json",
                "000004-GET-export.json"
            ]
        );
    }

    /// A folder that already holds a recording continues after its highest sequence number.
    #[test]
    fn numbering_continues_an_existing_recording() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000041-GET-Condition.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let url = Url::parse("http://h/R4/Condition").unwrap();
        let (name, _) = rec.render(&exchange(&url, &HeaderMap::new(), b"{}"), &token(TOKEN)).unwrap();
        assert_eq!(name, "000042-GET-Condition.json");
        assert_eq!(sequence_of("1234567-GET-X.json"), Some(1_234_567));
        assert_eq!(sequence_of("abc.json"), None);
    }

    /// A JSON body is kept byte for byte; other bodies become a JSON string.
    #[test]
    fn json_body_is_verbatim_other_body_is_a_string() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let url = Url::parse("http://h/R4/Patient/e1").unwrap();
        let json = br#"{"resourceType":"Patient","id":"e1","name":[{"text":"Zz"}]}"#;
        let (_, text) = rec.render(&exchange(&url, &HeaderMap::new(), json), &token(TOKEN)).unwrap();
        assert!(text.contains(std::str::from_utf8(json).unwrap()), "{text}");
        let (_, text) =
            rec.render(&exchange(&url, &HeaderMap::new(), b"<html>404</html>"), &token(TOKEN)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["body"], "<html>404</html>");
        let (_, text) = rec.render(&exchange(&url, &HeaderMap::new(), b""), &token(TOKEN)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["body"], "");
    }

    /// Credential headers, transfer headers and the bearer token never reach the file; other
    /// headers do.
    #[test]
    fn secrets_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let url = Url::parse("http://user:pw@h/R4/Observation?patient=e1&access_token=sekrit#frag").unwrap();
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("sid=abc"));
        h.insert("x-session-token", HeaderValue::from_static("abc"));
        h.insert("content-length", HeaderValue::from_static("10"));
        h.insert(HeaderName::from_static("content-type"), HeaderValue::from_static("application/fhir+json"));
        let body = br#"{"resourceType":"Bundle","note":"echo tok-123456"}"#;
        let (_, text) = rec.render(&exchange(&url, &h, body), &token("tok-123456")).unwrap();
        for secret in ["sid=abc", "x-session-token", "content-length", "tok-123456", "sekrit", "pw@", "frag"]
        {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("application/fhir+json"), "{text}");
        assert!(text.contains("access_token=REDACTED"), "{text}");
    }

    /// Token endpoint requests and token responses are skipped, not written.
    #[test]
    fn token_traffic_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let h = HeaderMap::new();
        let token_url = Url::parse("http://h/interconnect-fhir-oauth/oauth2/token").unwrap();
        assert!(rec.render(&exchange(&token_url, &h, b"{}"), &token(TOKEN)).is_none());
        let url = Url::parse("http://h/R4/Patient/e1").unwrap();
        let body = br#"{"access_token":"x","token_type":"bearer"}"#;
        assert!(rec.render(&exchange(&url, &h, body), &token(TOKEN)).is_none());
        let body = br#"{"resourceType":"Patient","id":"e1"}"#;
        assert!(rec.render(&exchange(&url, &h, body), &token(TOKEN)).is_some());
    }

    /// CamelCase words are resource types; version and path words are not.
    #[test]
    fn type_names() {
        for t in ["Observation", "AllergyIntolerance", "Patient", "DeviceUseStatement"] {
            assert!(is_type_name(t), "{t}");
        }
        for t in ["FHIR", "R4", "STU3", "api", "eAbc", "metadata", "", "Obs1"] {
            assert!(!is_type_name(t), "{t}");
        }
    }

    /// A path given to `--record` that is a file is refused, naming the fix.
    #[test]
    fn file_is_not_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = Recorder::create(&file).unwrap_err();
        assert!(err.to_string().contains("--record"), "{err}");
    }
}
