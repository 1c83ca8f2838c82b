//! `POST /oauth2/token`: `client_credentials` (JWT client assertion), `authorization_code`
//! (PKCE S256, client secret via HTTP Basic) and `refresh_token` grants.
//!
//! Request rules (Epic): form-encoded body only, no query string, else 400 `invalid_request`.
//! HTTP Basic carries `urlencode(client_id):urlencode(client_secret)`, so the server
//! percent-decodes both halves: a secret with `/ + = %` matches only when the client encoded it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::debug;

use super::assertion::{self, Rejection};
use super::{ClientRegistration, DEFAULT_BACKEND_SCOPES, RefreshGrant, unix_now};
use crate::SimState;

/// The only accepted `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth error response (`{"error": ..., "error_description": null}` as Epic).
pub fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": null }))).into_response()
}

/// Wrong verb, or `/token/`: 400 `invalid_request`.
pub async fn wrong_verb() -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request")
}

/// The token endpoint.
pub async fn token(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if query.is_some() {
        debug!("Token request refused: parameters in the query string.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
    });
    if !form_type {
        debug!("Token request refused: body is not application/x-www-form-urlencoded.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let params: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => client_credentials(&state, &params),
        Some("authorization_code") => authorization_code(&state, &headers, &params),
        Some("refresh_token") => refresh_token(&state, &headers, &params),
        Some(_) => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
}

fn client_credentials(state: &SimState, params: &HashMap<String, String>) -> Response {
    let (Some(kind), Some(assertion)) = (params.get("client_assertion_type"), params.get("client_assertion"))
    else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if kind != JWT_BEARER {
        debug!("Token request refused: unsupported client_assertion_type.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client");
    }
    match assertion::verify(&state.oauth, assertion, &state.token_url(), unix_now()) {
        Ok(client) => {
            let scopes = if client.scopes.is_empty() {
                DEFAULT_BACKEND_SCOPES.iter().map(|s| s.to_string()).collect()
            } else {
                client.scopes.clone()
            };
            let (token, lifetime) = state.oauth.mint(&client.client_id, scopes.clone());
            state.oauth.count_token_request();
            debug!(client_id = %client.client_id, "Backend access token issued.");
            // Epic's scope strings may end with a space.
            Json(json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime.as_secs(),
                "scope": format!("{} ", scopes.join(" ")),
            }))
            .into_response()
        }
        Err(Rejection::InvalidClient(reason)) => {
            debug!(reason, "Client assertion refused.");
            oauth_error(StatusCode::BAD_REQUEST, "invalid_client")
        }
        Err(Rejection::UnauthorizedClient) => {
            debug!("Client not mapped to a background user.");
            oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client")
        }
    }
}

/// Authenticates the client of a code/refresh request: HTTP Basic with URL-encoded id and
/// secret for confidential clients, `client_id` in the body for public ones.
fn authenticate(
    state: &SimState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<ClientRegistration> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")));
    match basic {
        Some(encoded) => {
            let raw = STANDARD.decode(encoded.trim()).ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (id, secret) = raw.split_once(':')?;
            let (id, secret) = (form_decode(id)?, form_decode(secret)?);
            let client = state.oauth.client(&id)?;
            let expected = client.client_secret.as_deref()?;
            (constant_time_eq(expected.as_bytes(), secret.as_bytes())).then_some(client)
        }
        None => {
            let client = state.oauth.client(params.get("client_id")?)?;
            client.client_secret.is_none().then_some(client)
        }
    }
}

fn authorization_code(state: &SimState, headers: &HeaderMap, params: &HashMap<String, String>) -> Response {
    let Some(client) = authenticate(state, headers, params) else {
        debug!("Code exchange refused: client authentication failed.");
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let (Some(code), Some(redirect_uri)) = (params.get("code"), params.get("redirect_uri")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let Some(pending) = state.oauth.take_code(code) else {
        debug!("Code exchange refused: unknown or already used code.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if pending.client_id != client.client_id
        || &pending.redirect_uri != redirect_uri
        || pending.expires_at < std::time::SystemTime::now()
    {
        debug!("Code exchange refused: code issued to another client/redirect, or expired.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let Some(verifier) = params.get("code_verifier") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != pending.code_challenge {
        debug!("Code exchange refused: PKCE verifier does not match.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let (token, lifetime) = state.oauth.mint(&client.client_id, pending.scopes.clone());
    state.oauth.count_token_request();
    let mut body = json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "scope": pending.scopes.join(" "),
    });
    if client.refresh_tokens {
        let refresh = format!("simrt-{}", uuid::Uuid::new_v4().simple());
        state.oauth.store_refresh(
            refresh.clone(),
            RefreshGrant { client_id: client.client_id.clone(), scopes: pending.scopes.clone() },
        );
        body["refresh_token"] = json!(refresh);
    }
    debug!(client_id = %client.client_id, "Authorization code exchanged.");
    Json(body).into_response()
}

fn refresh_token(state: &SimState, headers: &HeaderMap, params: &HashMap<String, String>) -> Response {
    let Some(client) = authenticate(state, headers, params) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let Some(refresh) = params.get("refresh_token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let grant = match state.oauth.refresh_grant(refresh) {
        Some(g) if g.client_id == client.client_id => g,
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"),
    };
    let (token, lifetime) = state.oauth.mint(&client.client_id, grant.scopes.clone());
    state.oauth.count_token_request();
    debug!(client_id = %client.client_id, "Access token refreshed.");
    // Epic's documented refresh response has no new refresh token.
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "scope": grant.scopes.join(" "),
    }))
    .into_response()
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space, `%XX` a byte).
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    /// Percent-decoding turns Epic's encoded example secret back into the original.
    #[test]
    fn form_decode_epic_example() {
        assert_eq!(form_decode("this-is-the-secret-2%2F7").as_deref(), Some("this-is-the-secret-2/7"));
        assert_eq!(form_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(form_decode("bad%zz"), None);
    }
}
