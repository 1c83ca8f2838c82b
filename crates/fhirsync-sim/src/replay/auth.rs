//! What a client needs to authenticate to the replay server, without the recorded client's
//! registration: SMART discovery, a token endpoint that accepts any well-formed credential, and
//! an authorize endpoint that approves at once.
//!
//! - `client_credentials`: `client_assertion_type` must be the JWT bearer type and
//!   `client_assertion` a well-formed JWT (three base64url parts; a header with `alg`; claims
//!   `iss` = `sub`, `aud`, numeric `exp`, string `jti`). The signature is not checked: no key
//!   was recorded.
//! - `authorization_code` and `refresh_token`: any non-empty `code` / `refresh_token`, with the
//!   client in HTTP Basic (`id:secret`, any secret) or, for public clients, in `client_id`.
//!
//! Tokens are issued and checked by the simulator's [`OAuthState`](crate::oauth::OAuthState),
//! so FHIR requests with an unknown or expired bearer get Epic's 401.

use std::collections::HashMap;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tracing::debug;
use url::Url;

use super::ReplayState;
use crate::PREFIX;
use crate::oauth::DEFAULT_BACKEND_SCOPES;
use crate::oauth::token::{JWT_BEARER, form_decode, oauth_error};

/// Token endpoint path on the replay server (as on Epic's sandbox).
pub(crate) fn token_path() -> String {
    format!("{PREFIX}/oauth2/token")
}

/// Authorize endpoint path on the replay server.
pub(crate) fn authorize_path() -> String {
    format!("{PREFIX}/oauth2/authorize")
}

/// The SMART configuration document (same for every base), pointing at the replay server.
pub(crate) fn smart_configuration(base_url: &str) -> Value {
    json!({
        "issuer": format!("{base_url}{PREFIX}/oauth2"),
        "authorization_endpoint": format!("{base_url}{}", authorize_path()),
        "token_endpoint": format!("{base_url}{}", token_path()),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": ["fhirUser", "launch", "openid", "profile"],
        "response_types_supported": ["code"],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "permission-offline",
            "permission-v1",
            "permission-v2"
        ],
        "code_challenge_methods_supported": ["S256"]
    })
}

/// `POST {PREFIX}/oauth2/token`.
pub(crate) fn token(state: &ReplayState, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
    });
    if uri.query().is_some() || !form {
        debug!("Replay token request refused: not a form body, or parameters in the query string.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let params: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let scope = params.get("scope").filter(|s| !s.trim().is_empty()).cloned();
    let (client_id, refresh) = match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            if params.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_client");
            }
            match params.get("client_assertion").map(|a| assertion_client(a)) {
                Some(Ok(id)) => (id, false),
                Some(Err(reason)) => {
                    debug!(reason, "Replay token request refused: malformed client assertion.");
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_client");
                }
                None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
            }
        }
        Some(grant @ ("authorization_code" | "refresh_token")) => {
            let field = if grant == "authorization_code" { "code" } else { "refresh_token" };
            if params.get(field).is_none_or(|v| v.is_empty()) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            }
            match basic_client(headers).or_else(|| params.get("client_id").filter(|c| !c.is_empty()).cloned())
            {
                Some(id) => (id, grant == "authorization_code"),
                None => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"),
            }
        }
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let scopes: Vec<String> = match &scope {
        Some(s) => s.split_whitespace().map(str::to_string).collect(),
        None => DEFAULT_BACKEND_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    let (access, lifetime) = state.oauth.mint(&client_id, scopes.clone());
    state.oauth.count_token_request();
    let mut answer = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "scope": scopes.join(" "),
    });
    if refresh {
        answer["refresh_token"] = json!(format!("replayrt-{}", uuid::Uuid::new_v4().simple()));
    }
    debug!("Replay access token issued.");
    Json(answer).into_response()
}

/// `GET {PREFIX}/oauth2/authorize`: redirects at once to `redirect_uri` with a code and `state`.
pub(crate) fn authorize(uri: &Uri) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let redirect = params.get("redirect_uri").and_then(|r| Url::parse(r).ok());
    let (Some(mut redirect), Some("code"), Some(_)) =
        (redirect, params.get("response_type").map(String::as_str), params.get("client_id"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "authorize needs response_type=code, client_id and an absolute redirect_uri",
        )
            .into_response();
    };
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("code", &format!("replaycode-{}", uuid::Uuid::new_v4().simple()));
        if let Some(state) = params.get("state") {
            q.append_pair("state", state);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, redirect.to_string())]).into_response()
}

/// The client id (`iss`) of a well-formed backend-services client assertion.
fn assertion_client(jwt: &str) -> Result<String, &'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, signature] = parts.as_slice() else { return Err("not three dot-separated parts") };
    if signature.is_empty() {
        return Err("no signature");
    }
    let decode = |part: &str| -> Result<Value, &'static str> {
        let bytes =
            URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|_| "a part is not base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "a part is not JSON")
    };
    let head = decode(head)?;
    let claims = decode(claims)?;
    if !head.get("alg").is_some_and(Value::is_string) {
        return Err("header has no alg");
    }
    let iss = claims.get("iss").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or("no iss")?;
    if claims.get("sub").and_then(Value::as_str) != Some(iss) {
        return Err("sub differs from iss");
    }
    if !claims.get("aud").is_some_and(|a| a.is_string() || a.is_array()) {
        return Err("no aud");
    }
    if !claims.get("exp").is_some_and(Value::is_number) {
        return Err("exp is not a number");
    }
    if !claims.get("jti").is_some_and(Value::is_string) {
        return Err("jti is not a string");
    }
    Ok(iss.to_string())
}

/// The client id of an HTTP Basic `Authorization` header (`urlencode(id):urlencode(secret)`).
fn basic_client(headers: &HeaderMap) -> Option<String> {
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))?;
    let raw = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, _secret) = raw.split_once(':')?;
    form_decode(id).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(head: &Value, claims: &Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!("{}.{}.c2ln", enc(head), enc(claims))
    }

    /// A well-formed assertion names its client; malformed ones are refused with the reason.
    #[test]
    fn assertions_are_checked_for_shape() {
        let head = json!({"alg": "RS384", "typ": "JWT"});
        let good = json!({"iss": "c1", "sub": "c1", "aud": "http://x/token", "exp": 1, "jti": "j"});
        assert_eq!(assertion_client(&jwt(&head, &good)).unwrap(), "c1");
        let mut bad = good.clone();
        bad["sub"] = json!("c2");
        assert!(assertion_client(&jwt(&head, &bad)).is_err());
        let mut bad = good.clone();
        bad["jti"] = json!(5);
        assert!(assertion_client(&jwt(&head, &bad)).is_err());
        assert!(assertion_client(&jwt(&json!({"typ": "JWT"}), &good)).is_err());
        assert!(assertion_client("a.b").is_err());
        assert!(assertion_client(&format!("{}.", jwt(&head, &good).rsplit_once('.').unwrap().0)).is_err());
    }
}
