//! `GET /oauth2/authorize` (standalone launch) and the sandbox sign-in form.
//!
//! Checks, in Epic's order: known `client_id` and an exactly registered `redirect_uri` (else a
//! 400 page: never redirect to an unverified URI), then `response_type=code`, a non-empty
//! `scope` (the sandbox requires one), `aud` = a FHIR base of this server, and PKCE with
//! `code_challenge_method=S256` (`plain` is refused); those errors redirect with `error=...`.
//! With `auto_approve` the user agent is sent straight to `redirect_uri?code=...&state=...`;
//! otherwise a sign-in form (user `FHIR`, password `EpicFhir11!`) posts to `/oauth2/signin`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use fhirsync_core::FhirVersion;
use serde::Deserialize;

use super::{CODE_LIFETIME, PendingCode, SANDBOX_PASSWORD, SANDBOX_USER};
use crate::{PREFIX, SimState};

/// A checked authorize request, waiting for approval.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    code_challenge: String,
}

/// The authorize endpoint.
pub async fn authorize(
    State(sim): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(client) = q.get("client_id").and_then(|id| sim.oauth.client(id)) else {
        return (StatusCode::BAD_REQUEST, "OAuth2 error: unknown client_id.").into_response();
    };
    let Some(redirect_uri) = q.get("redirect_uri").filter(|r| client.redirect_uris.contains(r)) else {
        return (StatusCode::BAD_REQUEST, "OAuth2 error: redirect_uri is not registered for this client.")
            .into_response();
    };
    let state = q.get("state").cloned();
    let fail = |error: &str| redirect(redirect_uri, &[("error", error)], state.as_deref());
    if q.get("response_type").map(String::as_str) != Some("code") {
        return fail("unsupported_response_type");
    }
    let scopes: Vec<String> =
        q.get("scope").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
    if scopes.is_empty() {
        return fail("invalid_scope");
    }
    let aud_ok = q.get("aud").is_some_and(|aud| {
        let aud = aud.trim_end_matches('/');
        FhirVersion::ALL.iter().any(|v| sim.fhir_base(*v) == aud)
    });
    if !aud_ok {
        return fail("invalid_request");
    }
    let Some(code_challenge) = q.get("code_challenge").filter(|c| !c.is_empty()) else {
        return fail("invalid_request");
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return fail("invalid_request");
    }
    let request = AuthorizeRequest {
        client_id: client.client_id,
        redirect_uri: redirect_uri.clone(),
        scopes,
        state,
        code_challenge: code_challenge.clone(),
    };
    if sim.oauth.auto_approve() {
        return approve(&sim, request);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    sim.oauth.store_login(id.clone(), request);
    sign_in_page(&id, None)
}

/// Fields of the sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    request_id: String,
    username: String,
    password: String,
}

/// `POST /oauth2/signin`: checks the sandbox credentials and redirects with a code.
pub async fn sign_in(State(sim): State<Arc<SimState>>, Form(form): Form<SignIn>) -> Response {
    if sim.oauth.login(&form.request_id).is_none() {
        return (StatusCode::BAD_REQUEST, "OAuth2 error: sign-in request expired.").into_response();
    }
    if form.username != SANDBOX_USER || form.password != SANDBOX_PASSWORD {
        return sign_in_page(&form.request_id, Some("Incorrect username or password."));
    }
    match sim.oauth.finish_login(&form.request_id) {
        Some(request) => approve(&sim, request),
        None => (StatusCode::BAD_REQUEST, "OAuth2 error: sign-in request expired.").into_response(),
    }
}

fn approve(sim: &SimState, request: AuthorizeRequest) -> Response {
    let code = format!("simcode-{}", uuid::Uuid::new_v4().simple());
    sim.oauth.store_code(
        code.clone(),
        PendingCode {
            client_id: request.client_id,
            redirect_uri: request.redirect_uri.clone(),
            scopes: request.scopes,
            code_challenge: request.code_challenge,
            expires_at: SystemTime::now() + CODE_LIFETIME,
        },
    );
    redirect(&request.redirect_uri, &[("code", &code)], request.state.as_deref())
}

/// 302 to `target` with `params` and `state` appended to its query.
fn redirect(target: &str, params: &[(&str, &str)], state: Option<&str>) -> Response {
    let Ok(mut url) = url::Url::parse(target) else {
        return (StatusCode::BAD_REQUEST, "OAuth2 error: redirect_uri is not a URL.").into_response();
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn sign_in_page(request_id: &str, error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"error\">{e}</p>")).unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><title>Sign in - fhirsync Epic simulator</title></head><body>\
         <h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"{PREFIX}/oauth2/signin\">\
         <input type=\"hidden\" name=\"request_id\" value=\"{request_id}\">\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\"></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p>Sandbox user: FHIR / EpicFhir11!</p></body></html>"
    ))
    .into_response()
}
