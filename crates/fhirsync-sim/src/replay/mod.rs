//! Replay server: serves a folder of recorded answers (`fhirsync sync --record DIR`, or
//! fixtures written by hand) as if it were the recorded Epic instance.
//!
//! Each `*.json` file of the folder is one answer:
//! `{"method","url","status","headers":{name: value},"body": JSON or string}` (see
//! `fhirsync_fhir::record` for how they are written). A request is answered by the recorded
//! answer with the same method, path and query (module `store`): scheme, host and port of the
//! recorded URL are replaced by the replay server's, and its path is kept, so a recorded base
//! `https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4` is served at
//! `http://127.0.0.1:PORT/interconnect-fhir-oauth/api/FHIR/R4`. Status, headers and body are
//! replayed as recorded, with the Bundle's `next`/`self` links and `fullUrl`s on the recorded
//! origin rewritten to the replay server (module `rewrite`), so paging works.
//!
//! Requests nothing was recorded for get Epic's answers (fact sheet §3.5, §3.7):
//! - a search: HTTP 200, a searchset with `total: 0` and one `search.mode = outcome` entry
//!   (`fullUrl = urn:uuid:…`) holding an OperationOutcome warning, code `processing`, Epic
//!   code 4101 "Resource request returns no results.";
//! - a read: HTTP 404 OperationOutcome 59008 "The FHIR ID provided was not found.";
//! - anything else: HTTP 404 OperationOutcome `not-found` naming the request.
//!
//! Authentication (module `auth`): `{any base}/.well-known/smart-configuration` points at the
//! replay server's token and authorize endpoints, which accept any well-formed credential.
//! Every FHIR request except `/metadata` needs a bearer token issued by this server.

mod auth;
mod rewrite;
mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use url::Url;

pub use store::RequestKey;
use store::{AnswerBody, Store, Unmatched};

use crate::oauth::{OAuthConfig, OAuthState};

/// Epic's OperationOutcome code system.
pub const EPIC_OUTCOME_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369";
/// Media type of replayed and generated FHIR JSON without a recorded `Content-Type`.
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Errors of the replay server: the simulator's [`crate::Error`] (its `Replay*` variants and
/// `Bind`).
pub use crate::Error;

/// Shared state of a running replay server.
#[derive(Debug)]
pub(crate) struct ReplayState {
    base_url: String,
    store: Store,
    rewriter: rewrite::Rewriter,
    oauth: OAuthState,
    served: AtomicU64,
    unmatched: AtomicU64,
}

/// A running replay server; stops when dropped.
#[derive(Debug)]
pub struct ReplayServer {
    state: Arc<ReplayState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    /// Serves `dir` on `127.0.0.1` with an ephemeral port.
    pub async fn start(dir: impl AsRef<Path>) -> Result<ReplayServer, Error> {
        ReplayServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), dir).await
    }

    /// Serves `dir` on `addr`. Every file is validated first: a bad one stops the start-up with
    /// its name and the problem.
    pub async fn start_on(addr: SocketAddr, dir: impl AsRef<Path>) -> Result<ReplayServer, Error> {
        let dir = dir.as_ref().to_path_buf();
        let folder = dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::load(&folder))
            .await
            .map_err(|e| Error::ReplayFolder { path: dir.clone(), source: std::io::Error::other(e) })??;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let base_url = format!("http://{addr}");
        let state = Arc::new(ReplayState {
            rewriter: rewrite::Rewriter::new(store.origins().clone(), &base_url),
            store,
            oauth: OAuthState::new(OAuthConfig::default()),
            base_url,
            served: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ReplayServer { state, addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// Socket address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The recorded FHIR bases on this server (from the recorded `/metadata` requests, else
    /// the parents of recorded searches).
    pub fn fhir_bases(&self) -> Vec<String> {
        self.state.store.base_paths().into_iter().map(|p| format!("{}{p}", self.state.base_url)).collect()
    }

    /// Token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.state.base_url, auth::token_path())
    }

    /// Recorded answers loaded.
    pub fn answers(&self) -> usize {
        self.state.store.answers()
    }

    /// Distinct recorded requests.
    pub fn requests(&self) -> usize {
        self.state.store.requests()
    }

    /// FHIR requests answered from the recording so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// FHIR requests nothing was recorded for so far.
    pub fn unmatched(&self) -> u64 {
        self.state.unmatched.load(Ordering::Relaxed)
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.state.oauth.tokens_issued()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every request: discovery, OAuth, then recorded FHIR answers.
async fn handle(
    State(st): State<Arc<ReplayState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path.ends_with("/.well-known/smart-configuration") && method == Method::GET {
        return axum::Json(auth::smart_configuration(&st.base_url)).into_response();
    }
    if path == auth::token_path() {
        return match method {
            Method::POST => auth::token(&st, &uri, &headers, &body),
            _ => crate::oauth::token::oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
        };
    }
    if path == auth::authorize_path() && method == Method::GET {
        return auth::authorize(&uri);
    }
    fhir(&st, &method, &uri, &headers).await
}

/// A FHIR request: the recorded answer, or Epic's answer to an unrecorded request.
async fn fhir(st: &ReplayState, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(url) = Url::parse(&format!("{}{path_and_query}", st.base_url)) else {
        return outcome_response(StatusCode::BAD_REQUEST, &not_recorded(method, uri.path()));
    };
    let key = RequestKey::new(method.as_str(), &url);
    if !key.path.ends_with("/metadata")
        && let Err(refused) = st.oauth.validate_bearer(headers)
    {
        return refused;
    }
    match st.store.next(&key) {
        Some(file) => {
            st.served.fetch_add(1, Ordering::Relaxed);
            debug!(method = %method, path = %key.path, file = %file.display(), "Recorded answer replayed.");
            match store::read_answer(file).await {
                Ok(answer) => replayed(st, answer),
                Err(error) => {
                    warn!(%error, "Recorded answer unreadable.");
                    let issue =
                        json!({"severity": "fatal", "code": "exception", "diagnostics": error.to_string()});
                    outcome_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &json!({"resourceType": "OperationOutcome", "issue": [issue]}),
                    )
                }
            }
        }
        None => {
            st.unmatched.fetch_add(1, Ordering::Relaxed);
            let kind = store::classify(method.as_str(), &key);
            debug!(method = %method, path = %key.path, ?kind, "No recorded answer.");
            match kind {
                Unmatched::Search { .. } => {
                    outcome_response(StatusCode::OK, &empty_searchset(url.as_str(), &key))
                }
                Unmatched::Read { .. } => outcome_response(StatusCode::NOT_FOUND, &unknown_id()),
                Unmatched::Other => outcome_response(StatusCode::NOT_FOUND, &not_recorded(method, &key.path)),
            }
        }
    }
}

/// The HTTP response of a recorded answer, URLs moved to the replay server.
fn replayed(st: &ReplayState, answer: store::Answer) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = answer.status;
    let out = response.headers_mut();
    for (name, value) in answer.headers {
        let value = if name == header::LOCATION || name == header::CONTENT_LOCATION {
            value
                .to_str()
                .ok()
                .and_then(|v| st.rewriter.url(v))
                .and_then(|v| HeaderValue::from_str(&v).ok())
                .unwrap_or(value)
        } else {
            value
        };
        out.append(name, value);
    }
    let body = match answer.body {
        AnswerBody::Json(text) => {
            if !out.contains_key(header::CONTENT_TYPE) {
                out.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            }
            st.rewriter.body(&text).into_owned()
        }
        AnswerBody::Text(text) => {
            if !out.contains_key(header::CONTENT_TYPE) && !text.is_empty() {
                out.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            }
            text
        }
    };
    *response.body_mut() = Body::from(body);
    response
}

fn outcome_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response()
}

/// One OperationOutcome issue with an Epic code.
fn epic_issue(severity: &str, code: &str, epic_code: &str, text: &str) -> Value {
    json!({
        "severity": severity,
        "code": code,
        "details": {
            "coding": [{"system": EPIC_OUTCOME_SYSTEM, "code": epic_code, "display": text}],
            "text": text,
        },
    })
}

/// Epic's empty searchset: `total: 0` and one outcome entry with 4101.
fn empty_searchset(self_url: &str, key: &RequestKey) -> Value {
    // A stable urn per request (same request, same urn), whatever the port.
    let digest = Sha256::digest(format!("{key:?}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let urn = format!("urn:uuid:{}", uuid::Builder::from_random_bytes(bytes).into_uuid());
    let issue = epic_issue("warning", "processing", "4101", "Resource request returns no results.");
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "link": [{"relation": "self", "url": self_url}],
        "entry": [{
            "fullUrl": urn,
            "resource": {"resourceType": "OperationOutcome", "issue": [issue]},
            "search": {"mode": "outcome"},
        }],
    })
}

/// Epic's 59008 for an unknown id.
fn unknown_id() -> Value {
    let mut issue = epic_issue("fatal", "not-found", "59008", "The FHIR ID provided was not found.");
    issue["diagnostics"] = json!("Invalid FHIR ID provided");
    issue["location"] = json!(["/f:id"]);
    issue["expression"] = json!(["id"]);
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

/// A request that is neither a search nor a read and was not recorded.
fn not_recorded(method: &Method, path: &str) -> Value {
    let issue = json!({
        "severity": "error",
        "code": "not-found",
        "diagnostics": format!("The replay folder has no recorded answer for {method} {path}."),
    });
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const R4: &str = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn assertion() -> String {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        let claims = json!({"iss": "c1", "sub": "c1", "aud": "x", "exp": 4_000_000_000u64, "jti": "j1"});
        format!("{}.{}.c2ln", enc(json!({"alg": "RS384", "typ": "JWT"})), enc(claims))
    }

    /// A server over a folder with two pages of a search and a metadata answer.
    async fn server() -> (ReplayServer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "000001-GET-metadata.json",
            &format!(
                r#"{{"method":"GET","url":"{R4}/metadata","status":200,"body":{{"resourceType":"CapabilityStatement"}}}}"#
            ),
        );
        write(
            dir.path(),
            "000002-GET-Observation.json",
            &format!(
                r#"{{"method":"GET","url":"{R4}/Observation?patient=e1&category=vital-signs","status":200,
                   "headers":{{"content-type":"application/fhir+json; charset=utf-8","content-length":"999"}},
                   "body":{{"resourceType":"Bundle","type":"searchset","total":1,
                     "link":[{{"relation":"next","url":"{R4}/Observation?sessionID=17-A"}}],
                     "entry":[{{"fullUrl":"{R4}/Observation/o1","resource":{{"resourceType":"Observation","id":"o1"}},"search":{{"mode":"match"}}}}]}}}}"#
            ),
        );
        write(
            dir.path(),
            "000003-GET-Observation.json",
            &format!(
                r#"{{"method":"GET","url":"{R4}/Observation?sessionID=17-A","status":200,
                   "body":{{"resourceType":"Bundle","type":"searchset","total":1,
                     "entry":[{{"fullUrl":"{R4}/Observation/o2","resource":{{"resourceType":"Observation","id":"o2"}},"search":{{"mode":"match"}}}}]}}}}"#
            ),
        );
        (ReplayServer::start(dir.path()).await.unwrap(), dir)
    }

    async fn token(http: &reqwest::Client, server: &ReplayServer) -> String {
        let resp = http
            .post(server.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", crate::oauth::token::JWT_BEARER),
                ("client_assertion", &assertion()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
    }

    /// Discovery names the replay token endpoint, which accepts a well-formed assertion and
    /// refuses a malformed one; FHIR requests need its token, `/metadata` does not.
    #[tokio::test]
    async fn authenticates_with_any_well_formed_assertion() {
        let (server, _dir) = server().await;
        let http = reqwest::Client::new();
        let base = &server.fhir_bases()[0];
        assert_eq!(base, &format!("{}/interconnect-fhir-oauth/api/FHIR/R4", server.base_url()));
        let doc: Value = http
            .get(format!("{base}/.well-known/smart-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["token_endpoint"], server.token_url());
        let refused = http
            .post(server.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", crate::oauth::token::JWT_BEARER),
                ("client_assertion", "not-a-jwt"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let unauthenticated =
            http.get(format!("{base}/Observation?patient=e1&category=vital-signs")).send().await;
        assert_eq!(unauthenticated.unwrap().status(), 401);
        assert_eq!(http.get(format!("{base}/metadata")).send().await.unwrap().status(), 200);
        let t = token(&http, &server).await;
        let ok =
            http.get(format!("{base}/Observation?category=vital-signs&patient=e1")).bearer_auth(&t).send();
        assert_eq!(ok.await.unwrap().status(), 200);
        assert_eq!(server.tokens_issued(), 1);
    }

    /// A recorded search is replayed with its status and headers, its next link and fullUrls
    /// moved to the replay server, and the next page served from its own file.
    #[tokio::test]
    async fn pages_are_replayed_on_the_replay_server() {
        let (server, _dir) = server().await;
        let http = reqwest::Client::new();
        let t = token(&http, &server).await;
        let base = &server.fhir_bases()[0];
        let resp =
            http.get(format!("{base}/Observation?patient=e1&category=vital-signs")).bearer_auth(&t).send();
        let resp = resp.await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/fhir+json; charset=utf-8");
        let page: Value = resp.json().await.unwrap();
        let next = page["link"][0]["url"].as_str().unwrap().to_string();
        assert_eq!(next, format!("{base}/Observation?sessionID=17-A"));
        assert_eq!(page["entry"][0]["fullUrl"], format!("{base}/Observation/o1"));
        let page: Value = http.get(&next).bearer_auth(&t).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["entry"][0]["resource"]["id"], "o2");
        assert_eq!(server.served(), 2);
        assert_eq!(server.unmatched(), 0);
    }

    /// An unrecorded search answers Epic's empty searchset (200, total 0, one outcome entry
    /// with a urn fullUrl and a 4101 warning); an unrecorded read answers 404 59008.
    #[tokio::test]
    async fn unmatched_requests_answer_like_epic() {
        let (server, _dir) = server().await;
        let http = reqwest::Client::new();
        let t = token(&http, &server).await;
        let base = &server.fhir_bases()[0];
        let resp =
            http.get(format!("{base}/AllergyIntolerance?patient=e1")).bearer_auth(&t).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let bundle: Value = resp.json().await.unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(bundle["total"], 0);
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["search"]["mode"], "outcome");
        assert!(entries[0]["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
        let issue = &entries[0]["resource"]["issue"][0];
        assert_eq!(entries[0]["resource"]["resourceType"], "OperationOutcome");
        assert_eq!(issue["severity"], "warning");
        assert_eq!(issue["code"], "processing");
        assert_eq!(issue["details"]["coding"][0]["system"], EPIC_OUTCOME_SYSTEM);
        assert_eq!(issue["details"]["coding"][0]["code"], "4101");
        assert_eq!(issue["details"]["coding"][0]["display"], "Resource request returns no results.");

        let resp = http.get(format!("{base}/Patient/eNoSuchPatient3")).bearer_auth(&t).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let outcome: Value = resp.json().await.unwrap();
        assert_eq!(outcome["issue"][0]["details"]["coding"][0]["code"], "59008");
        assert_eq!(outcome["issue"][0]["details"]["text"], "The FHIR ID provided was not found.");
        let resp = http.get(format!("{base}/Group/g1/$export")).bearer_auth(&t).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(server.unmatched(), 3);
    }

    /// The code and refresh grants accept any client in HTTP Basic; authorize redirects at
    /// once with a code and the state.
    #[tokio::test]
    async fn standalone_launch_grants_are_accepted() {
        let (server, _dir) = server().await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let authorize = format!(
            "{}{}?response_type=code&client_id=c1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=s1",
            server.base_url(),
            auth::authorize_path()
        );
        let resp = http.get(authorize).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let location = Url::parse(resp.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "s1");
        let answer: Value = http
            .post(server.token_url())
            .basic_auth("c1", Some("any secret"))
            .form(&[("grant_type", "authorization_code"), ("code", &q["code"]), ("redirect_uri", "x")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh = answer["refresh_token"].as_str().unwrap();
        let resp = http
            .post(server.token_url())
            .basic_auth("c1", Some("any secret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp =
            http.post(server.token_url()).form(&[("grant_type", "refresh_token"), ("refresh_token", "r")]);
        assert_eq!(resp.send().await.unwrap().status(), 401, "no client named");
    }
}
