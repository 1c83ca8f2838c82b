//! Talking to the token endpoint: form POST, optional HTTP Basic client authentication with
//! URL-encoded id and secret (Epic's rule), response parsing and error classification.
//!
//! Response handling: `token_type` must be `bearer` in any case; `scope` is split on whitespace
//! (Epic may add a trailing space); `expires_in` may be a number or a numeric string. An error
//! body is echoed only when it is an OAuth error JSON; anything else is summarised by status.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// How the client authenticates; selects the hint of [`Error::ClientRejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthKind {
    /// JWT client assertion signed with a private key (backend services).
    PrivateKeyJwt,
    /// Client secret in HTTP Basic.
    ClientSecret,
    /// Public client (`client_id` in the body).
    Public,
}

/// A successful token response. Debug never shows the tokens.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: SecretString,
    /// Lifetime in seconds, when the server said.
    pub expires_in: Option<u64>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Refresh token, if one was issued.
    pub refresh_token: Option<SecretString>,
    /// OpenID Connect id token, if issued.
    pub id_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Value>,
    scope: Option<String>,
    refresh_token: Option<String>,
    id_token: Option<String>,
}

/// `application/x-www-form-urlencoded` encoding of one value (Epic's HTTP Basic rule).
pub fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub fn basic_authorization(client_id: &str, secret: &SecretString) -> SecretString {
    let pair = Zeroizing::new(format!("{}:{}", form_encode(client_id), form_encode(secret.expose_secret())));
    SecretString::from(format!("Basic {}", STANDARD.encode(pair.as_bytes())))
}

/// POSTs `form` to the token endpoint and parses the answer.
pub(crate) async fn request(
    http: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    kind: ClientAuthKind,
    basic: Option<&SecretString>,
    form: &[(&str, &str)],
) -> Result<TokenResponse> {
    let body = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter().copied()).finish(),
    );
    let mut builder = http
        .post(token_url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body.as_str().to_owned());
    if let Some(auth) = basic {
        builder = builder.header(reqwest::header::AUTHORIZATION, auth.expose_secret());
    }
    let response = builder.send().await.map_err(|e| Error::unreachable(token_url.as_str(), e))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| Error::unreachable(token_url.as_str(), e))?;
    if !status.is_success() {
        return Err(classify_error(token_url, client_id, kind, status.as_u16(), &bytes));
    }
    let unexpected = |problem: &str| Error::UnexpectedResponse {
        url: token_url.to_string(),
        status: status.as_u16(),
        problem: problem.to_string(),
    };
    let raw: RawToken =
        serde_json::from_slice(&bytes).map_err(|_| unexpected("the body is not a token JSON object"))?;
    let access = raw.access_token.filter(|t| !t.is_empty()).ok_or_else(|| unexpected("no `access_token`"))?;
    match raw.token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(unexpected("`token_type` is not `bearer`")),
        None => return Err(unexpected("no `token_type`")),
    }
    let expires_in = match raw.expires_in {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token: SecretString::from(access),
        expires_in,
        scopes: split_scope(raw.scope.as_deref()),
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(SecretString::from),
        id_token: raw.id_token.map(SecretString::from),
    })
}

/// Splits a scope string on any whitespace.
pub fn split_scope(scope: Option<&str>) -> Vec<String> {
    scope.map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

fn classify_error(token_url: &Url, client_id: &str, kind: ClientAuthKind, status: u16, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<OAuthError>(body) else {
        return Error::UnexpectedResponse {
            url: token_url.to_string(),
            status,
            problem: "the error body is not an OAuth error JSON".into(),
        };
    };
    let hint = match (parsed.error.as_str(), kind) {
        ("invalid_client", ClientAuthKind::PrivateKeyJwt) => {
            "check that the client id is right, that the public key (JWK Set URL or uploaded JWKS) matching this \
             private key and `kid` is registered for this client and synced to the environment (Epic syncs can \
             take hours), and that this machine's clock is correct"
        }
        ("invalid_client", ClientAuthKind::ClientSecret) => {
            "check the client id and client secret (one secret per customer and environment), and that the \
             secret was provisioned for this environment"
        }
        ("invalid_client", ClientAuthKind::Public) => {
            "check the client id and that the app is a public client"
        }
        ("unauthorized_client", _) => {
            "the client is not allowed to get tokens here: for a backend app the customer's ECSA must map \
             the client id to a background user (community member setup); ask the health system to finish \
             that build, then retry"
        }
        _ => "",
    };
    if hint.is_empty() {
        Error::TokenEndpoint {
            token_url: token_url.to_string(),
            status,
            error: parsed.error,
            description: parsed.error_description,
        }
    } else {
        Error::ClientRejected {
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            error: parsed.error,
            hint,
        }
    }
}

/// Renew point of a token lasting `lifetime`: 60 s before expiry, but never before half-life.
pub(crate) fn renew_after(lifetime: Duration) -> Duration {
    let early = lifetime.saturating_sub(Duration::from_secs(60));
    early.max(lifetime / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epic's example secret is URL-encoded before base64 (`/` becomes `%2F`).
    #[test]
    fn basic_header_url_encodes_epic_example() {
        let header = basic_authorization("my-client", &SecretString::from("this-is-the-secret-2/7"));
        let expected = format!("Basic {}", STANDARD.encode("my-client:this-is-the-secret-2%2F7"));
        assert_eq!(header.expose_secret(), expected);
    }

    /// Trailing and repeated spaces in a scope string do not produce empty scopes.
    #[test]
    fn scope_split_on_whitespace() {
        assert_eq!(
            split_scope(Some("Patient.read  Patient.search ")),
            vec!["Patient.read", "Patient.search"]
        );
    }

    /// Long tokens renew 60 s early; short ones at half-life.
    #[test]
    fn renew_points() {
        assert_eq!(renew_after(Duration::from_secs(3600)), Duration::from_secs(3540));
        assert_eq!(renew_after(Duration::from_secs(4)), Duration::from_secs(2));
    }
}
