//! HTTP routes of the FHIR bases `{base}/interconnect-fhir-oauth/api/FHIR/{R4|STU3|DSTU2}`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metadata` | CapabilityStatement (Conformance on DSTU2), no token needed |
//! | `GET /{Type}?…`, `POST /{Type}/_search` | searchset (paging via `sessionID`) |
//! | `GET /{Type}/{id}` | read (59008 when unknown) |
//! | `POST /{Type}` | create (201 + `Location`), 405 where Epic has no create |
//! | `GET /Group/{id}/$export` | Bulk kick-off (R4) |
//! | `GET`/`DELETE /BulkRequest/{job}`, `GET /BulkRequest/{job}/{file}` | Bulk status, delete, files |
//!
//! Unknown versions, types and operations get IIS's HTML 404. Every request except `/metadata`
//! needs a bearer token (`OAuthState::validate_bearer`). All requests pass fault injection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use fhirsync_core::FhirVersion;

use super::bundle::PageRequest;
use super::faults::{self, Decision};
use super::licence::Licence;
use super::search::{self, SearchRequest};
use super::wire::{self, Format, Issue};
use super::{catalog, metadata};
use crate::oauth::Grant;
use crate::{PREFIX, SimState};

/// Parsed query or form parameters.
pub(crate) type Params = Vec<(String, String)>;

fn parse_params(raw: &[u8]) -> Params {
    url::form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Removes `name` from `params`, returning its (first) value.
fn take(params: &mut Params, name: &str) -> Option<String> {
    let pos = params.iter().position(|(k, _)| k == name)?;
    let value = params.remove(pos).1;
    params.retain(|(k, _)| k != name);
    Some(value)
}

fn version_of(segment: &str) -> Option<FhirVersion> {
    FhirVersion::ALL.into_iter().find(|v| v.as_str() == segment)
}

/// Logs the request, applies latency and injected faults, then runs `handler`.
async fn guarded<F: Future<Output = Response>>(
    st: &SimState,
    method: &Method,
    uri: &Uri,
    handler: F,
) -> Response {
    let uri_text = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let decision = st.fhir.faults.admit(method.as_str(), uri.path(), uri_text);
    let latency = st.fhir.faults.latency();
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    match decision {
        Decision::Pass => handler.await,
        Decision::Throttle(r) => faults::throttled(r),
        Decision::Fail(status) => faults::failed(status),
        Decision::Drop => faults::truncate(handler.await).await,
        Decision::Hold(delay) => {
            let resp = handler.await;
            tokio::time::sleep(delay).await;
            resp
        }
        Decision::Duplicate => faults::duplicate(),
    }
}

/// A validated request against one FHIR base.
pub(crate) struct Call {
    /// Shared state.
    pub st: Arc<SimState>,
    /// Version of the base.
    pub version: FhirVersion,
    /// Answer format.
    pub format: Format,
    /// The bearer token's grant.
    pub grant: Grant,
    /// FHIR base URL.
    pub base: String,
}

/// Authenticates; the 401 response on failure.
#[allow(clippy::result_large_err)]
fn authenticate(
    st: &Arc<SimState>,
    version: FhirVersion,
    headers: &HeaderMap,
    format: Format,
) -> Result<Call, Response> {
    let grant = st.oauth.validate_bearer(headers)?;
    Ok(Call { st: st.clone(), version, format, grant, base: st.fhir_base(version) })
}

impl Call {
    /// Datasets the client's registration leaves out.
    pub(crate) fn unlicensed(&self) -> Vec<String> {
        self.st.oauth.client(&self.grant.client_id).map(|c| c.unauthorized_datasets).unwrap_or_default()
    }

    /// The client's licence: registration plus run-time narrowings.
    pub(crate) fn licence(&self) -> Licence {
        self.st.fhir.licence(&self.grant.client_id, self.unlicensed())
    }
}

async fn metadata_handler(
    State(st): State<Arc<SimState>>,
    Path(version): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&st.clone(), &method, &uri, async move {
        let Some(version) = version_of(&version) else { return wire::html_404() };
        let mut params = parse_params(query.as_deref().unwrap_or("").as_bytes());
        let format = Format::negotiate(&headers, take(&mut params, "_format").as_deref());
        let mut statement = metadata::statement(&st, version);
        if st.fhir.config.bulk.read_only_statement {
            super::bulk::read_only(&mut statement);
        }
        wire::fhir(StatusCode::OK, format, &statement)
    })
    .await
}

async fn type_get(
    State(st): State<Arc<SimState>>,
    Path((version, ty)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = parse_params(query.as_deref().unwrap_or("").as_bytes());
    guarded(&st.clone(), &method, &uri, search_handler(st, version, ty, params, headers)).await
}

async fn search_post(
    State(st): State<Arc<SimState>>,
    Path((version, ty)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // From Feb 2026 Epic ignores query parameters other than `_format` on `_search`.
    let mut params = parse_params(&body);
    let query = parse_params(query.as_deref().unwrap_or("").as_bytes());
    if let Some((_, f)) = query.into_iter().find(|(k, _)| k == "_format") {
        params.push(("_format".to_string(), f));
    }
    guarded(&st.clone(), &method, &uri, search_handler(st, version, ty, params, headers)).await
}

async fn search_handler(
    st: Arc<SimState>,
    version: String,
    ty: String,
    mut params: Params,
    headers: HeaderMap,
) -> Response {
    let Some(version) = version_of(&version) else { return wire::html_404() };
    if !catalog::serves(version, &ty) {
        return wire::html_404();
    }
    let format = Format::negotiate(&headers, take(&mut params, "_format").as_deref());
    let call = match authenticate(&st, version, &headers, format) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let licence = call.licence();
    if licence.excludes(&ty) {
        return search::bare_forbidden();
    }
    let fhir = &st.fhir;
    let max = fhir.config.max_page_size.max(1);
    if let Some(session_id) = take(&mut params, "sessionID") {
        return next_page(&call, version, &ty, &session_id, &licence);
    }
    let count_param = take(&mut params, "_count");
    let count = count_param.as_deref().and_then(|c| c.parse::<usize>().ok()).unwrap_or(max).clamp(1, max);
    // Epic's self link lists the parameters sorted by name, `_` parameters (like `_count`) last.
    let mut echoed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Some(c) = &count_param {
        echoed.push(("_count", c));
    }
    echoed.sort_by_key(|(k, _)| (k.starts_with('_'), *k));
    let self_query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(echoed).finish();
    let req = SearchRequest { version, ty: &ty, params: &params };
    let found = match fhir.search(&req, &licence) {
        Ok(f) => f,
        Err(rejection) => return rejection.respond(format),
    };
    let self_url = if self_query.is_empty() {
        format!("{}/{ty}", call.base)
    } else {
        format!("{}/{ty}?{self_query}", call.base)
    };
    let page = PageRequest {
        base: &call.base,
        version,
        ty: &ty,
        format,
        self_url,
        client_id: &call.grant.client_id,
    };
    fhir.page(&page, &req, &found, 0, count)
}

/// A `next` page: the search saved under `session_id` (by this client, for this type and
/// version) read again at the session's offset; Epic's 4113 when the session is gone.
fn next_page(call: &Call, version: FhirVersion, ty: &str, session_id: &str, licence: &Licence) -> Response {
    let fhir = &call.st.fhir;
    let format = call.format;
    let session = fhir.sessions.get(session_id, fhir.session_ttl());
    let same = |s: &super::session::Session| {
        s.version == version && s.ty == ty && s.client_id == call.grant.client_id
    };
    let Some(session) = session.filter(same) else {
        return wire::error(
            StatusCode::BAD_REQUEST,
            format,
            &[Issue::new("fatal", "processing", "4113", "Session ID for cached search results has expired.")],
        );
    };
    let req = SearchRequest { version, ty, params: &session.params };
    let found = match fhir.search(&req, licence) {
        Ok(f) => f,
        Err(rejection) => return rejection.respond(format),
    };
    let page = PageRequest {
        base: &call.base,
        version,
        ty,
        format,
        self_url: format!("{}/{ty}?sessionID={session_id}", call.base),
        client_id: &call.grant.client_id,
    };
    fhir.page(&page, &req, &found, session.offset, session.count)
}

async fn instance_get(
    State(st): State<Arc<SimState>>,
    Path((version, ty, id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&st.clone(), &method, &uri, async move {
        let Some(version) = version_of(&version) else { return wire::html_404() };
        let mut params = parse_params(query.as_deref().unwrap_or("").as_bytes());
        let format = Format::negotiate(&headers, take(&mut params, "_format").as_deref());
        if ty == "BulkRequest" && version == FhirVersion::R4 {
            return match authenticate(&st, version, &headers, Format::Json) {
                Ok(call) => super::bulk::status(&call, &id),
                Err(resp) => resp,
            };
        }
        if !catalog::serves(version, &ty) || id.starts_with('$') {
            return wire::html_404();
        }
        let call = match authenticate(&st, version, &headers, format) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        if call.unlicensed().contains(&ty) {
            return search::bare_forbidden();
        }
        match st.fhir.read(version, &ty, &id) {
            Some(resource) => wire::fhir(StatusCode::OK, format, &resource),
            None => wire::not_found(format),
        }
    })
    .await
}

async fn instance_delete(
    State(st): State<Arc<SimState>>,
    Path((version, ty, id)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&st.clone(), &method, &uri, async move {
        match (version_of(&version), ty.as_str()) {
            (Some(FhirVersion::R4), "BulkRequest") => {
                match authenticate(&st, FhirVersion::R4, &headers, Format::Json) {
                    Ok(call) => super::bulk::delete(&call, &id),
                    Err(resp) => resp,
                }
            }
            (Some(version), ty) if catalog::serves(version, ty) => {
                let format = Format::negotiate(&headers, None);
                wire::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format,
                    &[Issue::new(
                        "fatal",
                        "not-supported",
                        "4100",
                        "The resource request contained an invalid interaction.",
                    )],
                )
            }
            _ => wire::html_404(),
        }
    })
    .await
}

async fn operation_get(
    State(st): State<Arc<SimState>>,
    Path((version, ty, id, op)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    guarded(&st.clone(), &method, &uri, async move {
        if version_of(&version) != Some(FhirVersion::R4) {
            return wire::html_404();
        }
        let call = match authenticate(&st, FhirVersion::R4, &headers, Format::Json) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        match (ty.as_str(), op.as_str()) {
            ("Group", "$export") => {
                let params = parse_params(query.as_deref().unwrap_or("").as_bytes());
                super::bulk::kickoff(&call, &id, &params, &headers)
            }
            ("BulkRequest", file) => super::bulk::file(&call, &id, file, &headers),
            _ => wire::html_404(),
        }
    })
    .await
}

async fn type_post(
    State(st): State<Arc<SimState>>,
    Path((version, ty)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guarded(&st.clone(), &method, &uri, async move {
        let Some(version) = version_of(&version) else { return wire::html_404() };
        if !catalog::serves(version, &ty) {
            return wire::html_404();
        }
        let format = Format::negotiate(&headers, None);
        match authenticate(&st, version, &headers, format) {
            Ok(call) => super::create::create(&call, &ty, &body),
            Err(resp) => resp,
        }
    })
    .await
}

/// The FHIR routes.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    let base = format!("{PREFIX}/api/FHIR/{{version}}");
    Router::new()
        .route(&format!("{base}/metadata"), get(metadata_handler))
        .route(&format!("{base}/{{ty}}"), get(type_get).post(type_post))
        .route(&format!("{base}/{{ty}}/_search"), axum::routing::post(search_post))
        .route(&format!("{base}/{{ty}}/{{id}}"), get(instance_get).delete(instance_delete))
        .route(&format!("{base}/{{ty}}/{{id}}/{{op}}"), get(operation_get))
}
